"""Per-step time of data-parallel training on W2 (MLP 784-256-256-10, relu, softmax
cross-entropy with int labels, batch 128 per rank, float32, SGD), and the share of it spent in
the gradient allreduce. Not run by the tests (it times things); run it by hand:

    OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 mpiexec -n 2 python tests/mpi_scripts/bench_w2.py
    OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python tests/mpi_scripts/bench_w2.py   # one rank

Rank 0 prints: the median step of `gradc.distributed.train_step`, split into the local
forward+backward, the allreduce (`step.allreduce_s`, which includes waiting for the slowest rank)
and the rest (the update and Python); a bare `Allreduce` of a buffer of the same size right after
a barrier (the communication alone); and, for reference, a plain single-process
`gradc.train_step` on one rank's batch.
"""
import math
import sys
import time

import numpy as np

import gradc
import gradc.distributed as dist

SIZES, BATCH, STEPS = (784, 256, 256, 10), 128, int(sys.argv[1]) if len(sys.argv) > 1 else 300


def init(seed=0):
    rng = np.random.default_rng(seed)
    params = {}
    for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:]), start=1):
        params[f"W{i}"] = np.ascontiguousarray(rng.standard_normal((a, b)) * math.sqrt(2 / a),
                                               np.float32)
        params[f"b{i}"] = np.zeros(b, np.float32)
    return params


def loss(params, x, y):
    h = gradc.nn.relu(x @ params["W1"] + params["b1"])
    h = gradc.nn.relu(h @ params["W2"] + params["b2"])
    return gradc.nn.cross_entropy(h @ params["W3"] + params["b3"], y)


def median_ms(times):
    return 1e3 * float(np.median(times))


comm = dist.world()
rank, size = comm.Get_rank(), comm.Get_size()
from mpi4py import MPI  # noqa: E402

rng = np.random.default_rng(100 + rank)
x = rng.random((BATCH, SIZES[0])).astype(np.float32)
y = rng.integers(0, SIZES[-1], BATCH).astype(np.int64)

params = init()
step = dist.train_step(loss, gradc.optim.SGD(lr=0.01))
for _ in range(20):  # compile and warm up
    step(params, x, y)
comm.Barrier()
total, reduce, local = [], [], []
compiled = step.grad_fn.compiled_for(params, x, y)
leaves = gradc.pytree.flatten(((params, x, y), {}))[0]
for _ in range(STEPS):
    t0 = time.perf_counter()
    compiled.run(leaves)  # the local forward+backward alone (not part of the step below)
    local.append(time.perf_counter() - t0)
    before = step.allreduce_s
    t0 = time.perf_counter()
    step(params, x, y)
    total.append(time.perf_counter() - t0)
    reduce.append(step.allreduce_s - before)

region = np.zeros(step._failed.size, step._failed.dtype)
bare = []
for _ in range(STEPS):
    comm.Barrier()
    t0 = time.perf_counter()
    comm.Allreduce(MPI.IN_PLACE, region, op=MPI.SUM)
    bare.append(time.perf_counter() - t0)

plain_params = init()
plain = gradc.train_step(loss, gradc.optim.SGD(lr=0.01))
for _ in range(20):
    plain(plain_params, x, y)
single = []
for _ in range(STEPS):
    t0 = time.perf_counter()
    plain(plain_params, x, y)
    single.append(time.perf_counter() - t0)

stats = comm.gather((median_ms(total), median_ms(local), median_ms(reduce), median_ms(bare),
                     median_ms(single)))
if rank == 0:
    print(f"W2 {SIZES} batch {BATCH}/rank float32 SGD, {size} rank(s), {STEPS} steps, "
          f"gradient region {region.nbytes / 2**20:.2f} MiB")
    for r, (t, fb, red, b, s) in enumerate(stats):
        print(f"rank {r}: step {t:.3f} ms = forward+backward ~{fb:.3f} + allreduce {red:.3f} "
              f"({100 * red / t:.1f}%) + update/other {t - fb - red:.3f}; bare allreduce "
              f"{b:.3f} ms; plain gradc.train_step {s:.3f} ms")
