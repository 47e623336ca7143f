"""Planned memory of slice gradients: an RNN over `xw[:, t]`, W4 in plain NumPy, the workloads.

The gradient of `xw[:, t]` over T steps is a sum of T slice cotangents. The arena of the value
and gradient of an RNN over a (32, T, 512) projection should grow linearly in T (PyTorch, from
issue 15: 3.9 / 7.9 / 15.9 MiB at T = 16 / 32 / 64). Each arena is shown with the pipeline as it
is and without its merge_slice_sums pass (a zero-padded buffer per slice: what gradc did
before). Nothing is Numba-compiled: the plan is known before any code runs.

    python3 benchmarks/bench_slice_memory.py [--steps 16,32,64] [--batch 32] [--width 512]
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import gradc  # noqa: E402
import gradc.compile  # noqa: E402
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


def cnn_loss(p, x, y):
    """W4 written in plain NumPy: a 3x3 convolution as nine shifted slices (NHWC result),
    relu, a 2x2 max-pool as np.maximum of four strided slices, a dense layer."""
    oh, ow = x.shape[2] - 2, x.shape[3] - 2
    h = sum(x[:, :, i:i + oh, j:j + ow].transpose(0, 2, 3, 1) @ p["conv_w"][:, :, i, j].T
            for i in range(3) for j in range(3)) + p["conv_b"]
    h = np.maximum(h, 0)
    h = np.maximum(np.maximum(h[:, 0::2, 0::2], h[:, 0::2, 1::2]),
                   np.maximum(h[:, 1::2, 0::2], h[:, 1::2, 1::2]))
    return gradc.nn.cross_entropy(h.reshape(h.shape[0], -1) @ p["W"] + p["b"], y)


@contextlib.contextmanager
def without_slice_sums():
    """The pipeline without merge_slice_sums (what gradc compiled before it)."""
    saved = gradc.compile.AFTER_AUTODIFF
    gradc.compile.AFTER_AUTODIFF = tuple(p for p in saved if p.__name__ != "merge_slice_sums")
    try:
        yield
    finally:
        gradc.compile.AFTER_AUTODIFF = saved


def arena_bytes(fun, *args):
    """The planned arena of value_and_grad(fun) at these arguments (no Numba compile)."""
    return gradc.value_and_grad(fun).lower(*args).plan.arena_bytes


def arenas(fun, *args):
    """(arena without merge_slice_sums, arena with it) in MiB."""
    with without_slice_sums():
        before = arena_bytes(fun, *args)
    return before / 2 ** 20, arena_bytes(fun, *args) / 2 ** 20


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", default="16,32,64")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--width", type=int, default=512)
    args = ap.parse_args()
    print(f"RNN over xw[:, t], xw of shape ({args.batch}, T, {args.width}), float32: arena MiB")
    print(f"{'T':>4} {'before':>9} {'now':>9} {'PyTorch (issue 15)':>20}")
    for steps in (int(s) for s in args.steps.split(",")):
        before, now = arenas(rnn_loss, *rnn_args(steps, args.batch, args.width))
        torch = TORCH_MIB.get(steps) if (args.batch, args.width) == (32, 512) else None
        print(f"{steps:>4} {before:>9.2f} {now:>9.2f} {torch if torch is not None else '-':>20}")
    print("\nvalue_and_grad(loss): arena MiB")
    print(f"{'':>28} {'before':>9} {'now':>9}")
    params, (x, y) = WORKLOADS["W4"].init(0)
    before, now = arenas(cnn_loss, params, x, y)
    print(f"{'W4 in plain NumPy':>28} {before:>9.3f} {now:>9.3f}")
    for name, w in WORKLOADS.items():
        params, batch = w.init(0)
        before, now = arenas(w.loss, params, *batch)
        print(f"{name:>28} {before:>9.3f} {now:>9.3f}")


if __name__ == "__main__":
    main()
