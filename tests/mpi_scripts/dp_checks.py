"""Run by tests/test_distributed.py under `mpiexec -n 2`: several checks of
gradc.distributed in one MPI job (each job pays the imports and the compiles).

    mpiexec -n 2 python dp_checks.py RESULTS.json

In order, rank 0 writing what it saw to RESULTS.json after each part:
0. on rank 0 alone: the update step's gradient is exactly scale * g (checked bitwise against
   NumPy with SGD(lr=1)), and a one-rank data-parallel step (MPI.COMM_SELF) against
   `gradc.train_step` on the same batch.
1. equivalence: 20 data-parallel steps (each rank one half of a fixed batch; rank 1 starts from
   other parameters, which the first step replaces by rank 0's) against 20 single-process
   `gradc.train_step` steps on the whole batch, for SGD with momentum and for AdamW with
   clip_norm; the ranks' parameters are compared bit for bit after every step.
2. mismatch: rank 1 builds a wider hidden layer; every rank must raise ModelMismatchError.
3. failing step: at step 3 rank 1 passes a batch with the wrong number of features (a ShapeError
   while tracing); rank 1 must raise that ShapeError, rank 0 RankFailedError naming rank 1, and
   nobody may have updated anything; then training goes on.
4. failure outside the step: rank 1 raises RuntimeError inside `abort_on_error()` while rank 0
   waits in the next step's allreduce; the job must end (MPI_Abort) with the rank and the error
   on stderr. The job's exit status is therefore non-zero: the test checks the results file.
"""
import json
import os
import sys
import time

import numpy as np

t_start = time.perf_counter()
import gradc  # noqa: E402
from gradc.train import update_step  # noqa: E402
import gradc.distributed as dist  # noqa: E402
from _model import HIDDEN, N_IN, batch, flat, init, loss  # noqa: E402

comm = dist.world()
rank, size = comm.Get_rank(), comm.Get_size()
assert size == 2, size
OUT = sys.argv[1]
results = {"import_s": time.perf_counter() - t_start}

STEPS = 20


def save():
    if rank == 0:
        with open(OUT + ".tmp", "w") as f:
            json.dump(results, f, indent=1)
        os.replace(OUT + ".tmp", OUT)


X, Y = batch()
x_mine, y_mine = dist.shard((X, Y))

# --- 0. the update-only step applies exactly scale * g; one rank is plain train_step --------
if rank == 0:
    from mpi4py import MPI

    rng = np.random.default_rng(7)
    exact = {}
    for scale in (1.0, 0.5, 1 / 3):
        p = {"small": rng.standard_normal((7, 5)).astype(np.float32),
             "large": rng.standard_normal(200_000).astype(np.float32)}  # a big loop
        g = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in p.items()}
        expected = {k: v - g[k] * np.float32(scale) for k, v in p.items()}
        update_step(gradc.optim.SGD(lr=1.0), grad_scale=scale)(p, g)
        # gradc's fused update may round p - scale*g once (fast-math contraction) where NumPy
        # rounds twice: the difference, in units of one rounding of the result and of scale*g
        unit = {k: np.spacing(np.abs(expected[k])) + np.spacing(np.abs(g[k] * np.float32(scale)))
                for k in p}
        exact[str(scale)] = max(float(np.max(np.abs(p[k] - expected[k]) / unit[k])) for k in p)
    results["update_gradient_exact"] = exact
    one_rank = {}
    for name, make_opt in (("sgd_momentum", lambda: gradc.optim.SGD(lr=0.1, momentum=0.9)),
                           ("adam", lambda: gradc.optim.Adam(lr=0.01))):
        p1, p2 = init(0), init(0)
        s1 = dist.train_step(loss, make_opt(), comm=MPI.COMM_SELF)
        s2 = gradc.train_step(loss, make_opt())
        l1 = [s1(p1, X, Y) for _ in range(STEPS)]
        l2 = [s2(p2, X, Y) for _ in range(STEPS)]
        one_rank[name] = {"max_abs_param_diff": float(np.max(np.abs(flat(p1) - flat(p2)))),
                          "max_loss_diff": float(np.max(np.abs(np.subtract(l1, l2)))),
                          "bitwise": bool(np.array_equal(flat(p1), flat(p2))) and l1 == l2}
    results["one_rank"] = one_rank
    save()
comm.Barrier()

# --- 1. equivalence with single-process training -------------------------------------------
OPTIMIZERS = {
    "sgd_momentum": (lambda: gradc.optim.SGD(lr=0.1, momentum=0.9), {}),
    "adamw_clip": (lambda: gradc.optim.AdamW(lr=0.01), {"clip_norm": 0.5}),
}
for name, (make_opt, options) in OPTIMIZERS.items():
    t0 = time.perf_counter()
    params = init(seed=rank)  # rank 1's start differs: the first step broadcasts rank 0's
    step = dist.train_step(loss, make_opt(), **options)
    losses, identical = [], []
    for _ in range(STEPS):
        losses.append(step(params, x_mine, y_mine))
        mine = flat(params)
        both = comm.allgather(mine.tobytes())
        identical.append(both[0] == both[1])
        losses_both = comm.allgather(losses[-1])
        identical[-1] &= losses_both[0] == losses_both[1]
    entry = {"identical_every_step": all(identical), "steps": len(losses),
             "distributed_s": time.perf_counter() - t0,
             "allreduce_s": step.allreduce_s, "compiles": len(step.cache)}
    if rank == 0:
        ref_params = init(seed=0)
        ref = gradc.train_step(loss, make_opt(), **options)
        ref_losses = [ref(ref_params, X, Y) for _ in range(STEPS)]
        a, b = flat(params), flat(ref_params)
        entry.update({
            "max_abs_param_diff": float(np.max(np.abs(a - b))),
            "max_rel_param_diff": float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-3))),
            "allclose": bool(np.allclose(a, b, rtol=1e-4, atol=1e-5)),
            "bitwise_equal_to_single_process": bool(np.array_equal(a, b)),
            "max_loss_diff": float(np.max(np.abs(np.subtract(losses, ref_losses)))),
            "first_loss": losses[0], "last_loss": losses[-1], "ref_last_loss": ref_losses[-1],
            "state_allclose": all(np.allclose(flat(step.state_dict()["state"][slot]),
                                              flat(ref.state_dict()["state"][slot]),
                                              rtol=1e-4, atol=1e-6)
                                  for slot in ref.state_dict()["state"]),
        })
    results[name] = entry
    save()

# --- 2. mismatched models -------------------------------------------------------------------
t0 = time.perf_counter()
params = init(seed=0, hidden=HIDDEN if rank == 0 else HIDDEN + 1)
step = dist.train_step(loss, gradc.optim.SGD(lr=0.1))
try:
    step(params, x_mine, y_mine)
    mismatch = {"raised": None}
except Exception as e:
    mismatch = {"raised": type(e).__name__, "message": str(e),
                "is_gradc_error": isinstance(e, gradc.GradcError)}
mismatch["s"] = time.perf_counter() - t0
got = comm.gather(mismatch)
if rank == 0:
    results["mismatch"] = got
save()

# --- 3. a step that fails on rank 1 ---------------------------------------------------------
t0 = time.perf_counter()
params = init(seed=0)
step = dist.train_step(loss, gradc.optim.SGD(lr=0.1))
report = {"raised": None}
for i in range(1, 6):
    x = x_mine
    if i == 3 and rank == 1:
        x = np.ones((len(x_mine), N_IN + 3), np.float32)  # wrong width: fails while tracing
    before = flat(params).copy()
    try:
        step(params, x, y_mine)
    except Exception as e:
        report = {"raised": type(e).__name__, "message": str(e), "at": i,
                  "notes": getattr(e, "__notes__", []),
                  "failures": {str(k): v for k, v in getattr(e, "failures", {}).items()},
                  "unchanged": bool(np.array_equal(before, flat(params))),
                  "step_count": step.step_count}
report["steps_done"] = step.step_count
both = comm.allgather(flat(params).tobytes())
report["identical_after"] = both[0] == both[1]
report["s"] = time.perf_counter() - t0
got = comm.gather(report)
if rank == 0:
    results["failing_step"] = got
save()

# --- 3b. what a fuzzing round found ----------------------------------------------------------
found = {}
# rank 1's W1 reshaped after the first step (the region keeps its bytes): every rank raises
params = init(seed=0)
step = dist.train_step(loss, gradc.optim.SGD(lr=0.1))
step(params, x_mine, y_mine)
before = flat(params).copy()
if rank == 1:
    params["W1"] = params["W1"].reshape(HIDDEN, N_IN).copy()
try:
    step(params, x_mine, y_mine)
    found["reshaped"] = {"raised": None}
except gradc.GradcError as e:
    found["reshaped"] = {"raised": type(e).__name__, "message": str(e)}
found["reshaped"]["unchanged"] = bool(np.array_equal(np.sort(before), np.sort(flat(params))))
found["reshaped"]["step_count"] = step.step_count
# an optimizer option given as a function (its repr holds an address that differs by process)
params = init(seed=0)
masked = dist.train_step(loss, gradc.optim.AdamW(lr=0.01, mask=lambda p: {
    k: k.startswith("W") for k in p}))
try:
    masked(params, x_mine, y_mine)
    found["function_option"] = {"raised": None}
except gradc.GradcError as e:
    found["function_option"] = {"raised": type(e).__name__, "message": str(e)[:300]}
# a mask function that answers differently on each rank (compared by name alone, it passed
# and the ranks' parameters drifted apart)
params = init(seed=0)
by_rank = dist.train_step(loss, gradc.optim.AdamW(lr=0.01, mask=lambda p: {
    k: rank == 0 or k.startswith("W") for k in p}))
try:
    by_rank(params, x_mine, y_mine)
    found["rank_dependent_option"] = {"raised": None}
except gradc.GradcError as e:
    found["rank_dependent_option"] = {"raised": type(e).__name__, "message": str(e)[:600]}
# a Python float among the parameters: named (it crashed the process)
try:
    dist.train_step(lambda p, x, y: loss(p, x, y) * p["s"], gradc.optim.SGD(lr=0.1))(
        {**init(seed=0), "s": 1.0}, x_mine, y_mine)
    found["python_float"] = {"raised": None}
except gradc.GradcError as e:
    found["python_float"] = {"raised": type(e).__name__, "message": str(e)}
# a step refused on every rank (a NaN loss on rank 1; a KeyboardInterrupt, a BaseException,
# raised on rank 1 while its loss traces for a new batch shape) leaves the gradc.random
# Generators among its arguments where they were (the forward had advanced them), and the
# interrupted rank still joins the allreduce (the other waited there for good)
INTERRUPT = [False]


def dropped(p, x, y, g):
    if INTERRUPT[0] and rank == 1:
        raise KeyboardInterrupt
    return loss(p, x * (g.random(x.shape) >= 0.1), y)


params = init(seed=0)
drop = dist.train_step(dropped, gradc.optim.SGD(lr=0.1), check_finite=True)
g = gradc.random.default_rng(100 + rank)
drop(params, x_mine, y_mine, g)
counters = [int(g.state[1])]
x_bad = x_mine.copy()
if rank == 1:
    x_bad[0, 0] = np.nan
INTERRUPT[0] = False
for x_step in (x_bad, x_mine[:-1]):  # (a NaN loss; then a new shape, traced: interrupted)
    INTERRUPT[0] = x_step is not x_bad
    try:
        drop(params, x_step, y_mine[:len(x_step)], g)
        counters.append(("no error", int(g.state[1])))
    except BaseException as e:  # noqa: BLE001
        counters.append((type(e).__name__, int(g.state[1])))
INTERRUPT[0] = False
drop(params, x_mine, y_mine, g)
counters.append(int(g.state[1]))
found["generators_kept"] = counters
# a timeout given on one rank only: the collectives still match (it hung every rank)
params = init(seed=0)
timed = dist.train_step(loss, gradc.optim.SGD(lr=0.1), timeout=30.0 if rank == 0 else None)
timed(params, x_mine, y_mine)
timed(params, x_mine, y_mine)
found["timeout_on_one_rank"] = timed.step_count
got = comm.gather(found)
if rank == 0:
    # a global the loss reads that changes at every step: each step traces again, the old
    # programs are freed, and their gradient views (kept by id, whose numbers a new program
    # could take) went with them: the same parameters as gradc.train_step
    from mpi4py import MPI
    SCALE = [1.0]
    scaled = lambda p, x, y: loss(p, x, y) * SCALE[0]  # noqa: E731
    p1, p2 = init(0), init(0)
    s1 = dist.train_step(scaled, gradc.optim.SGD(lr=0.1), comm=MPI.COMM_SELF)
    s2 = gradc.train_step(scaled, gradc.optim.SGD(lr=0.1))
    for i in range(12):
        SCALE[0] = 1.0 + 0.1 * i
        s1(p1, X, Y)
        s2(p2, X, Y)
    got.append({"changing_global": {"max_abs_diff": float(np.max(np.abs(flat(p1) - flat(p2)))),
                                    "views_kept": len(s1._views)}})
    # an empty parameter (no bytes, so no place in the gradient region) was a CompileError
    # about the region's layout
    with_empty = lambda p, x, y: loss(p, x, y) + np.sum(p["empty"])  # noqa: E731
    p1, p2 = {**init(0), "empty": np.zeros((0, 3), np.float32)}, init(0)
    p2["empty"] = np.zeros((0, 3), np.float32)
    s1 = dist.train_step(with_empty, gradc.optim.SGD(lr=0.1), comm=MPI.COMM_SELF)
    s2 = gradc.train_step(with_empty, gradc.optim.SGD(lr=0.1))
    try:
        for i in range(3):
            s1(p1, X, Y)
            s2(p2, X, Y)
        got[-1]["empty_param"] = float(np.max(np.abs(flat(p1) - flat(p2))))
    except gradc.GradcError as e:
        got[-1]["empty_param"] = f"{type(e).__name__}: {e}"
    results["found"] = got
save()

# --- 4. an exception outside the step -------------------------------------------------------
results["outside"] = {"started": True}
save()
comm.Barrier()
with dist.abort_on_error(comm):
    if rank == 1:
        time.sleep(0.2)
        raise RuntimeError("rank one's data loader broke")
    step(params, x_mine, y_mine)  # waits for rank 1 in the allreduce until MPI_Abort ends it
results["outside"]["not_aborted"] = True  # never reached
save()
