"""What gradc's own compiler costs per IR node, from ~1,000 to ~50,000 nodes.

An LSTM unrolled over T steps (the models where graphs get long) is traced, differentiated,
run through the passes, fused, planned and turned into source, without Numba: the phases that
are gradc's. Each phase is printed per node of the traced joint graph; the pipeline should cost
the same per node at every size (a phase whose per-node cost grows with T is quadratic
somewhere). Numba's share of a compile is timed elsewhere (`make bench`'s compile table).

    python3 benchmarks/bench_passes.py [--steps 16,160,800] [--profile]
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import gradc  # noqa: E402
from gradc.codegen.program import Program  # noqa: E402
from gradc.ir import gc_paused  # noqa: E402
from gradc.passes import AFTER_AUTODIFF  # noqa: E402
from gradc.passes.fuse import fuse  # noqa: E402
from gradc.passes.memory import plan_buffers  # noqa: E402
from gradc.signature import Call  # noqa: E402


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def lstm_loss(p, xs, y):
    """An LSTM over xs[:, t], written as a NumPy user writes one; MSE of a projection."""
    batch, steps, _ = xs.shape
    hidden = p["Wh"].shape[0]
    h = np.zeros((batch, hidden), np.float32)
    c = np.zeros((batch, hidden), np.float32)
    for t in range(steps):
        z = xs[:, t] @ p["Wx"] + h @ p["Wh"] + p["b"]
        i, f = sigmoid(z[:, :hidden]), sigmoid(z[:, hidden:2 * hidden])
        o, g = sigmoid(z[:, 2 * hidden:3 * hidden]), np.tanh(z[:, 3 * hidden:])
        c = f * c + i * g
        h = o * np.tanh(c)
    return np.mean((h @ p["Wo"] - y) ** 2)


def lstm_args(steps, batch=8, features=16, hidden=32):
    rng = np.random.default_rng(0)
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    params = {"Wx": f32(features, 4 * hidden), "Wh": f32(hidden, 4 * hidden) * 0.1,
              "b": np.zeros(4 * hidden, np.float32), "Wo": f32(hidden, 4)}
    return params, f32(batch, steps, features), f32(batch, 4)


def phases(steps):
    """(traced nodes, kernels, {phase: seconds}) for one compile without Numba, with Python's
    cyclic GC paused as a compile pauses it (gradc.ir.gc_paused), then the collection put off."""
    vg = gradc.value_and_grad(lstm_loss)
    vg._call_source = "bench_passes.py"
    args = lstm_args(steps)
    times = {}
    with gc_paused():
        t0 = time.perf_counter()
        graph, _ = vg.trace_joint(Call(vg.traced_args(args), {}), "bench_passes.py")
        times["trace+vjp"] = time.perf_counter() - t0
        nodes = len(graph.nodes)
        for p in AFTER_AUTODIFF:
            t0 = time.perf_counter()
            graph = p(graph)
            times[p.__name__] = times.get(p.__name__, 0.0) + time.perf_counter() - t0
        t0 = time.perf_counter()
        fusion = fuse(graph)
        times["fuse"] = time.perf_counter() - t0
        kernels = len(fusion.kernels)
        t0 = time.perf_counter()
        plan = plan_buffers(fusion)
        times["plan"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        Program(fusion, plan, "bench")
        times["codegen"] = time.perf_counter() - t0
    # what the pause put off: a collection over the objects made meanwhile (here a full one,
    # which also frees the graphs the passes dropped)
    del graph, fusion, plan
    t0 = time.perf_counter()
    gc.collect()
    times["gc"] = time.perf_counter() - t0
    return nodes, kernels, times


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", default="16,160,800",
                    help="unrolled lengths (16/160/800 give about 1k/10k/50k nodes)")
    ap.add_argument("--profile", action="store_true", help="cProfile the largest size")
    args = ap.parse_args()
    sizes = [int(s) for s in args.steps.split(",")]
    rows = []
    for steps in sizes:
        if args.profile and steps == sizes[-1]:
            prof = cProfile.Profile()
            prof.enable()
        nodes, kernels, times = phases(steps)
        if args.profile and steps == sizes[-1]:
            prof.disable()
            pstats.Stats(prof).sort_stats("cumulative").print_stats(20)
        rows.append((steps, nodes, kernels, times))
    names = list(rows[0][3])
    print("\nmicroseconds per traced node (trace+vjp: per node of the joint graph it builds)\n")
    print(f"{'steps':>6} {'nodes':>7} {'kernels':>7} {'total s':>8} {'us/node':>8}  "
          + " ".join(f"{n:>9}" for n in names))
    for steps, nodes, kernels, times in rows:
        total = sum(times.values())
        print(f"{steps:>6} {nodes:>7} {kernels:>7} {total:>8.2f} {total / nodes * 1e6:>8.0f}  "
              + " ".join(f"{times[n] / nodes * 1e6:>9.1f}" for n in names))
    first, last = rows[0], rows[-1]
    growth = (sum(last[3].values()) / last[1]) / (sum(first[3].values()) / first[1])
    print(f"\nper-node cost at {last[1]} nodes / at {first[1]} nodes: {growth:.2f}x "
          "(1.0 = linear)")


if __name__ == "__main__":
    main()
