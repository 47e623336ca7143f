"""Data parallel with target="cuda" under Numba's CUDA simulator (run by
tests/test_distributed.py with NUMBA_ENABLE_CUDASIM=1 on 2 ranks): each rank trains on its half
of the batch; rank 0 compares with one process on the whole batch on the CPU target and writes
JSON to argv[1]."""
import json
import sys

import numpy as np

import gradc
from gradc.distributed import shard, world
from _model import batch, flat, init, loss

comm = world()
rank = comm.Get_rank()
x, y = batch()
x, y = x[:8], y[:8]  # the simulator runs each GPU thread as a Python thread: a small batch
params = init(0, hidden=6)
step = gradc.train_step(loss, gradc.optim.Adam(lr=0.05), distributed=True, target="cuda")
reference = init(0, hidden=6)
single = gradc.train_step(loss, gradc.optim.Adam(lr=0.05))
losses, diffs = [], []
for _ in range(3):
    losses.append(step(params, *shard((x, y), rank, comm.Get_size())))
    want = single(reference, x, y)
    diffs.append(max(abs(losses[-1] - want), float(np.abs(flat(params) - flat(reference)).max())))
if rank == 0:
    with open(sys.argv[1], "w") as f:
        json.dump({"losses": losses, "max_diff": max(diffs),
                   "target": next(iter(step.cache.values())).__class__.__name__}, f)
