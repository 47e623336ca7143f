"""NumPy functions that write into an array they are given: np.copyto, np.fill_diagonal,
np.put_along_axis, np.put. On a traced array the array object takes the update, as item
assignment does (surface.py's `_setitem`: every name holding it sees it, views by basic
indexing follow it, what read it before keeps the old values), and the same refusals apply
(an argument of the traced function, a view NumPy may not write through). Each is the store
NumPy's own definition makes: `a.flat[positions] = values`, with NumPy's argument rules.
"""
import numpy as np

from ..errors import ArgumentError, UnsupportedOpError
from ..ir import Value
from ..ops import fn


def _target(a, name):
    """The traced array `name` writes into; a NumPy array given a traced value is refused."""
    if not isinstance(a, Value):
        from ..surface import _STORE_INTO_NUMPY
        raise UnsupportedOpError(f"{name}: " + _STORE_INTO_NUMPY)
    return a


def _store_at(a, positions, values):
    """a.flat[positions] = values (positions: a static int array; values cycled over them, as
    np.put and np.fill_diagonal repeat a short value array)."""
    from ..surface import _setitem  # (it builds on the function tables)
    positions = np.asarray(positions, np.int64).ravel()
    fn.check_scalars_into(values, a.dtype, "a store")
    values = values if isinstance(values, Value) else np.asarray(values)
    if values.ndim != 1 or values.size != positions.size:
        flat = fn.reshape(values, (values.size,)) if isinstance(values, Value) else values.ravel()
        if values.size == 0:
            return
        cycle = np.arange(positions.size) % values.size
        values = fn.take(flat, cycle, axis=0) if isinstance(flat, Value) else flat[cycle]
    if a.ndim == 0:  # (np.put into a 0-d array: every position is its element; the last wins)
        _setitem(a, (), values[-1])
    else:
        _setitem(a, np.unravel_index(positions, a.shape), values)


def _copyto(dst, src, casting="same_kind", where=True):
    from ..surface import _setitem, where_mask
    dst = _target(dst, "np.copyto")
    src = src if isinstance(src, Value) else fn.as_value(np.asarray(src), dst)
    if fn.broadcast_shapes(src.shape, dst.shape) != dst.shape:
        raise ArgumentError(f"np.copyto: could not broadcast input array from shape {src.shape} "
                            f"into shape {dst.shape} (NumPy's refusal)")
    if not np.can_cast(src.dtype, dst.dtype, casting=casting):
        raise ArgumentError(f"np.copyto: Cannot cast array data from dtype('{src.dtype}') to "
                            f"dtype('{dst.dtype}') according to the rule '{casting}' (NumPy's "
                            "refusal)")
    value = fn.broadcast_to(fn.astype(src, dst.dtype), dst.shape)
    if where is not True:
        value = fn.where(fn.broadcast_to(where_mask(where, dst, "np.copyto"), dst.shape), value,
                         dst)
    _setitem(dst, (Ellipsis,), value)


def _fill_diagonal(a, val, wrap=False):
    """NumPy's definition: a.flat[:end:step] = val, step the distance between a[i, i, ...] and
    a[i + 1, i + 1, ...]; a tall 2-D array's rows below the square, with wrap=True, go on
    after a skipped row."""
    a = _target(a, "np.fill_diagonal")
    if a.ndim < 2:
        raise ArgumentError("np.fill_diagonal: array must be at least 2-d (NumPy's refusal)")
    if a.ndim == 2:
        step, end = a.shape[1] + 1, None if wrap else a.shape[1] * a.shape[1]
    else:
        if len(set(a.shape)) != 1:
            raise ArgumentError("np.fill_diagonal: All dimensions of input must be of equal "
                                "length (NumPy's refusal)")
        step, end = 1 + int(np.sum(np.cumprod(a.shape[:-1]))), None
    _store_at(a, np.arange(a.size)[:end:step], val)


def _put_along_axis(arr, indices, values, axis):
    from ..surface import _setitem
    arr = _target(arr, "np.put_along_axis")
    if axis is None:
        raise UnsupportedOpError("np.put_along_axis with axis=None (a store into the flattened "
                                 "array): reshape it first, a.reshape(-1), and store along axis 0")
    axis = fn.normalize_axis(axis, arr.ndim)
    if np.ndim(indices) != arr.ndim:
        raise ArgumentError("np.put_along_axis: `indices` and `arr` must have the same number of "
                            "dimensions (NumPy's refusal)")
    index = tuple(indices if d == axis else np.arange(n).reshape(
        [-1 if k == d else 1 for k in range(arr.ndim)]) for d, n in enumerate(arr.shape))
    _setitem(arr, index, values)


def _put(a, ind, v, mode="raise"):
    a = _target(a, "np.put")
    if isinstance(ind, Value) or isinstance(ind, (list, tuple)) and any(
            isinstance(i, Value) for i in ind):
        raise UnsupportedOpError("np.put at traced positions: use gradc.at(a.ravel())[ind]"
                                 ".set(v).reshape(a.shape)")
    ind = np.asarray(ind, np.int64).ravel()
    if mode == "raise":
        if ind.size and (ind.max() >= a.size or ind.min() < -a.size):
            raise IndexError(f"index {ind[np.argmax((ind >= a.size) | (ind < -a.size))]} is out "
                             f"of bounds for axis 0 with size {a.size}")
        ind = ind % max(a.size, 1)
    elif mode == "wrap":
        ind = ind % a.size
    elif mode == "clip":
        ind = np.clip(ind, 0, a.size - 1)
    else:
        raise ArgumentError(f"np.put: clipmode must be one of 'clip', 'raise', or 'wrap', got "
                            f"{mode!r}")
    _store_at(a, ind, v)


FUNCTIONS = {np.copyto: _copyto, np.fill_diagonal: _fill_diagonal,
             np.put_along_axis: _put_along_axis, np.put: _put}
