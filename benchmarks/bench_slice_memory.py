"""Planned memory of slice gradients: an RNN over `xw[:, t]`, and the six workloads.

The gradient of `xw[:, t]` over T steps is a sum of T slice cotangents. The arena of the value
and gradient of an RNN over a (32, T, 512) projection should grow linearly in T (PyTorch, from
issue 15: 3.9 / 7.9 / 15.9 MiB at T = 16 / 32 / 64). Nothing is Numba-compiled: the plan is
known before any code runs.

    python3 benchmarks/bench_slice_memory.py [--steps 16,32,64] [--batch 32] [--width 512]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import gradc  # noqa: E402
from workloads import WORKLOADS  # noqa: E402

TORCH_MIB = {16: 3.9, 32: 7.9, 64: 15.9}  # issue 15, for the (32, T, 512) projection


def rnn_loss(p, x):
    """A tanh RNN whose input projection is computed once for all steps, then sliced."""
    xw = x @ p["Wx"]
    h = np.tanh(xw[:, 0])
    for t in range(1, x.shape[1]):
        h = np.tanh(xw[:, t] + h @ p["Wh"])
    return np.sum(h * h)


def rnn_args(steps, batch, width):
    rng = np.random.default_rng(0)
    p = {"Wx": (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32),
         "Wh": (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)}
    return p, rng.standard_normal((batch, steps, width)).astype(np.float32)


def arena_bytes(fun, *args):
    """The planned arena of value_and_grad(fun) at these arguments (no Numba compile)."""
    return gradc.value_and_grad(fun).lower(*args).plan.arena_bytes


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", default="16,32,64")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--width", type=int, default=512)
    args = ap.parse_args()
    mib = 1 << 20
    print(f"RNN over xw[:, t], xw of shape ({args.batch}, T, {args.width}), float32")
    print(f"{'T':>4} {'gradc arena MiB':>16} {'PyTorch MiB (issue 15)':>24}")
    for steps in (int(s) for s in args.steps.split(",")):
        arena = arena_bytes(rnn_loss, *rnn_args(steps, args.batch, args.width))
        torch = TORCH_MIB.get(steps) if (args.batch, args.width) == (32, 512) else None
        print(f"{steps:>4} {arena / mib:>16.2f} {torch if torch is not None else '-':>24}")
    print("\nworkloads: arena of value_and_grad(loss)")
    for name, w in WORKLOADS.items():
        params, batch = w.init(0)
        print(f"{name:>4} {arena_bytes(w.loss, params, *batch) / mib:>10.3f} MiB")


if __name__ == "__main__":
    main()
