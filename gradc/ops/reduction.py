"""Reductions over axes. The IR form keeps the reduced axes (size 1), so the VJP is a plain
`broadcast_to`; `fn.reduce` adds the reshape that drops them when the user asked keepdims=False.
"""
import numpy as np

from . import fn
from .registry import REDUCE, OpDef, register


def _infer(inputs, axes):
    (x,) = inputs
    return tuple(1 if i in axes else d for i, d in enumerate(x.shape)), x.dtype


def _sum_vjp(node, g):
    return [fn.broadcast_to(g, node.inputs[0].shape)]


def _extremum_vjp(node, g):
    # The gradient goes to the elements equal to the extremum, shared evenly between ties; a
    # NaN extremum's to the NaNs (as PyTorch's: it was 0 everywhere, hiding the NaN loss)
    x, y = node.inputs[0], node.output
    hit = x == fn.broadcast_to(y, x.shape)
    if x.dtype.kind == "f":
        hit = x.graph.apply("logical_or", (hit, x.graph.apply("isnan", (x,))))
    count = fn.sum(fn.astype(hit, x.dtype), node.attr["axes"], keepdims=True)
    return [fn.where(hit, fn.broadcast_to(g / count, x.shape), 0)]


# name, reference, VJP, identity (the accumulator's start), how two partial results combine
REDUCTIONS = {
    "sum": (np.sum, _sum_vjp, 0, "{acc} + {x}"),
    "max": (np.max, _extremum_vjp, -np.inf, "max2({acc}, {x})"),
    "min": (np.min, _extremum_vjp, np.inf, "min2({acc}, {x})"),
}

for _name, (_ref, _vjp, _identity, _combine) in REDUCTIONS.items():
    register(OpDef(
        _name, REDUCE, _infer,
        ref=(lambda r: lambda x, axes: r(x, axis=axes, keepdims=True).astype(x.dtype))(_ref),
        vjp=_vjp,
    ))


def identity(op, dtype):
    """The start value of an accumulator for reduction `op` in `dtype`."""
    value = REDUCTIONS[op][2]
    dtype = np.dtype(dtype)
    if np.isinf(value) and not np.issubdtype(dtype, np.floating):
        info = np.iinfo(dtype) if dtype != np.bool_ else None
        return (info.min if value < 0 else info.max) if info else (value > 0)
    return value


def combine(op, acc, x):
    return REDUCTIONS[op][3].format(acc=acc, x=x)
