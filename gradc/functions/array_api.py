"""np.linspace of traced endpoints, and NumPy 2's array-API names for functions gradc traces
(np.linalg.vector_norm, matrix_norm, matmul, vecdot, outer, trace, diagonal, tensordot;
np.astype, np.unstack): each by the NumPy function it is, on the array-API's axes."""
import numpy as np

from ..errors import ArgumentError
from ..ops import fn
from ._args import array_arg


def _linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0, *,
              device=None):
    """NumPy's: start + arange(num) * step along a new axis, the last sample `stop` itself where
    the endpoint is kept; a step of NaN for one sample of the endpoint (NumPy's division by
    zero), integer dtypes floored."""
    start = array_arg(start, stop)
    stop = array_arg(stop, start)
    num = int(num)
    if num < 0:
        raise ArgumentError(f"np.linspace: Number of samples, {num}, must be non-negative.")
    compute = np.result_type(start.dtype, stop.dtype, float)
    start, stop = fn.astype(start, compute), fn.astype(stop, compute)
    shape = fn.broadcast_shapes(start.shape, stop.shape)
    start, stop = fn.broadcast_to(start, shape), fn.broadcast_to(stop, shape)
    div = num - 1 if endpoint else num
    delta = stop - start
    step = delta / div if div > 0 else delta * np.nan
    along = (num,) + (1,) * len(shape)
    ramp = fn.as_value(np.arange(num, dtype=compute).reshape(along), start)
    samples = fn.broadcast_to(start, (1,) + shape) + ramp * (step if div > 0 else 0.0)
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
    if axis is None:  # (the array-API's: every element, one vector)
        norm = np.linalg.norm(fn.reshape(x, (-1,)), ord)
        return fn.reshape(norm, (1,) * x.ndim) if keepdims else norm
    return np.linalg.norm(x, ord, axis if isinstance(axis, int) else tuple(axis), keepdims)


FUNCTIONS = {np.linspace: _linspace}
_linalg = np.linalg
if hasattr(_linalg, "vector_norm"):  # (NumPy 2)
    FUNCTIONS.update({
        _linalg.vector_norm: _vector_norm,
        _linalg.matrix_norm: lambda x, keepdims=False, ord="fro": np.linalg.norm(  # noqa
            x, ord, (-2, -1), keepdims),
        _linalg.matmul: lambda x1, x2: np.matmul(x1, x2),
        _linalg.vecdot: lambda x1, x2, axis=-1: np.vecdot(x1, x2, axis=axis),
        _linalg.outer: lambda x1, x2: np.outer(x1, x2),
        _linalg.trace: lambda x, offset=0, dtype=None: np.trace(x, offset, -2, -1, dtype),
        _linalg.diagonal: lambda x, offset=0: np.diagonal(x, offset, -2, -1),
        _linalg.tensordot: lambda x1, x2, axes=2: np.tensordot(x1, x2, axes),
    })
if hasattr(np, "astype"):
    FUNCTIONS[np.astype] = lambda x, dtype, copy=True, device=None: x.astype(dtype,
                                                                                  copy=copy)
if hasattr(np, "unstack"):
    FUNCTIONS[np.unstack] = lambda x, axis=0: tuple(np.moveaxis(x, axis, 0))
