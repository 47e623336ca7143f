"""Run by tests/test_distributed.py under `mpiexec -n 2`: the step's `timeout`.

Rank 1 stops after two steps (as if it had failed outside the step without `abort_on_error`);
rank 0 goes on to a third step, whose allreduce nobody joins: after `timeout` seconds it must
print the rank and the step and abort the job, instead of waiting forever.

    mpiexec -n 2 python dp_timeout.py TIMEOUT_SECONDS
"""
import sys
import time

import gradc
import gradc.distributed as dist
from _model import batch, init, loss

comm = dist.world()
rank = comm.Get_rank()
x, y = dist.shard(batch())
params = init(seed=0)
step = dist.train_step(loss, gradc.optim.SGD(lr=0.1), timeout=float(sys.argv[1]))
for i in range(1, 4):
    if rank == 1 and i == 3:
        print(f"rank 1 leaves after {step.step_count} steps", flush=True)
        time.sleep(60)  # alive but gone: the test's own bound would end this
        sys.exit(0)
    step(params, x, y)
    print(f"rank {rank} finished step {i}", flush=True)
print("rank 0 was not stopped", flush=True)
