"""np.linspace of traced endpoints, and NumPy 2's array-API names for functions gradc traces
(np.linalg.vector_norm, matrix_norm, matmul, vecdot, outer, trace, diagonal, tensordot,
cross, matrix_transpose, svdvals; np.astype, np.unstack): each by the NumPy function it is,
on the array-API's axes."""
import operator

import numpy as np

from ..errors import ArgumentError
from ..ops import fn
from ._args import array_arg


def _linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0, *,
              device=None):
    """NumPy's: start + arange(num) * step along a new axis, in the dtype of start, stop and
    the float num (float32 endpoints stay float32), the last sample `stop` itself where the
    endpoint is kept; one sample of the endpoint is start + 0 * (stop - start) with a step of
    NaN (NumPy's division by zero); integer dtypes floored. (NumPy divides before multiplying
    where the step rounds to 0, a span near the smallest subnormal: not followed.)"""
    num = operator.index(num)  # (NumPy's TypeError for 2.5)
    if num < 0:
        raise ArgumentError(f"np.linspace: Number of samples, {num}, must be non-negative.")
    start = array_arg(start, stop)
    stop = array_arg(stop, start)
    compute = np.result_type(start.dtype, stop.dtype, float(num))
    start, stop = fn.astype(start, compute), fn.astype(stop, compute)
    shape = fn.broadcast_shapes(start.shape, stop.shape)
    start, stop = fn.broadcast_to(start, shape), fn.broadcast_to(stop, shape)
    div = num - 1 if endpoint else num
    delta = stop - start
    step = delta / div if div > 0 else np.nan
    ramp = fn.as_value(np.arange(num, dtype=compute).reshape((num,) + (1,) * len(shape)), start)
    samples = fn.broadcast_to(start, (1,) + shape) + ramp * (step if div > 0 else delta)
    if endpoint and num > 1:
        samples = fn.concatenate([fn.slice_(samples, (0,) * samples.ndim,
                                            (num - 1,) + shape, (1,) * samples.ndim),
                                  fn.reshape(stop, (1,) + shape)], 0)
    samples = fn.moveaxis(samples, 0, axis)
    if dtype is not None and np.issubdtype(np.dtype(dtype), np.integer):
        samples = fn.unary("floor", samples)
    out = fn.astype(samples, np.dtype(dtype) if dtype is not None else compute)
    return (out, step) if retstep else out


def _vector_norm(x, axis=None, keepdims=False, ord=2):  # noqa: A002  (trace._bind: keywords)
    """A vector norm over `axis` (None: every element; a tuple: those axes as one vector, not
    the matrix norm np.linalg.norm takes of two)."""
    axes = fn.normalize_axes(axis, x.ndim)
    kept = [d for d in range(x.ndim) if d not in axes]
    flat = fn.reshape(fn.transpose(x, kept + list(axes)),
                      tuple(x.shape[d] for d in kept) + (-1,))
    norm = np.linalg.norm(flat, ord, -1)
    if keepdims:
        norm = fn.reshape(norm, tuple(1 if d in axes else n for d, n in enumerate(x.shape)))
    return norm


def _outer(x1, x2):
    if x1.ndim != 1 or x2.ndim != 1:
        raise ArgumentError("np.linalg.outer: Input arrays must be one-dimensional (NumPy's "
                            "refusal; np.outer flattens them)")
    return np.outer(x1, x2)


def _cross(x1, x2, axis=-1):
    if np.shape(x1)[axis] != 3 or np.shape(x2)[axis] != 3:
        raise ArgumentError("np.linalg.cross: both input arrays must be (arrays of) "
                            "3-dimensional vectors (NumPy's refusal; np.cross takes 2 too)")
    return np.cross(x1, x2, axis=axis)


FUNCTIONS = {np.linspace: _linspace}
_linalg = np.linalg
if hasattr(_linalg, "vector_norm"):  # (NumPy 2)
    FUNCTIONS.update({
        _linalg.vector_norm: _vector_norm,
        _linalg.matrix_norm: lambda x, keepdims=False, ord="fro": np.linalg.norm(  # noqa
            x, ord, (-2, -1), keepdims),
        _linalg.matmul: lambda x1, x2: np.matmul(x1, x2),
        _linalg.vecdot: lambda x1, x2, axis=-1: np.vecdot(x1, x2, axis=axis),
        _linalg.outer: _outer,
        _linalg.trace: lambda x, offset=0, dtype=None: np.trace(x, offset, -2, -1, dtype),
        _linalg.diagonal: lambda x, offset=0: np.diagonal(x, offset, -2, -1),
        _linalg.tensordot: lambda x1, x2, axes=2: np.tensordot(x1, x2, axes),
        _linalg.cross: _cross,
        _linalg.matrix_transpose: lambda x: np.matrix_transpose(x),
        _linalg.svdvals: lambda x: np.linalg.svd(x, compute_uv=False),
    })
if hasattr(np, "astype"):
    FUNCTIONS[np.astype] = lambda x, dtype, copy=True, device=None: x.astype(dtype,
                                                                                  copy=copy)
if hasattr(np, "unstack"):
    FUNCTIONS[np.unstack] = lambda x, axis=0: tuple(np.moveaxis(x, axis, 0))
