"""Building and cutting arrays: repeat, tile, the stacks, block, the splits, pad, flip, roll,
rot90, tril/triu, diag/diagonal, atleast_Nd, rollaxis, append, insert, delete.

Two ways to build them, both from gradc.ops.fn, so autodiff, fusion and CUDA come for free:
- views and joins (slices with any step, transposes, concatenate) where the result is one:
  flip, roll, rot90, the splits, the stacks, constant padding;
- otherwise a gather by constant indices (`_rearranged`): NumPy's own function applied to the
  array of x's flat positions says where each element of the result comes from, so its argument
  rules and errors are NumPy's exactly; the gradient is the gather's scatter-add.
"""
import itertools
import numbers
import operator

import numpy as np

from ..errors import ArgumentError, UnsupportedOpError
from ..ir import Value
from ..ops import fn
from ._args import array_arg


def _positions(shape):
    """x's flat positions, in x's shape: what NumPy's rearranging functions are applied to."""
    return np.arange(int(np.prod(shape, dtype=np.int64)), dtype=np.int64).reshape(shape)


def _gather(flat, idx):
    """The elements `idx` (a constant int array of any shape) of the 1-D value `flat`; a plain
    reshape when idx is every position in order."""
    idx = np.asarray(idx, np.int64)
    if idx.size == flat.size and np.array_equal(idx.ravel(), np.arange(flat.size)):
        return fn.reshape(flat, idx.shape)
    return fn.take(flat, idx, axis=0)


def _rearranged(x, np_func, *args, **kwargs):
    """np_func(x, ...) for a function that only moves elements (repeat, tile, diagonal, delete):
    a gather of x by np_func applied to x's positions."""
    return _gather(fn.reshape(x, (x.size,)), np_func(_positions(x.shape), *args, **kwargs))


def _static(value, name, what, why="would give a data-dependent shape"):
    """A static (non-traced) argument, as NumPy takes it."""
    if _is_traced(value):
        raise UnsupportedOpError(f"np.{name}: a traced {what} {why}; pass {what} as a Python "
                                 "number or NumPy array")
    return value


def _is_traced(value):
    return isinstance(value, Value) or isinstance(value, (list, tuple)) and any(
        isinstance(v, Value) for v in value)


# ---------------------------------------------------------------------------------------------
# repeating

def _repeat(a, repeats, axis=None):
    return _rearranged(array_arg(a), np.repeat, _static(repeats, "repeat", "repeats"), axis)


def _tile(A, reps):
    return _rearranged(array_arg(A), np.tile, _static(reps, "tile", "reps"))


# ---------------------------------------------------------------------------------------------
# joining

def _values(arrays):
    """The arrays of a sequence argument as values (of the graph of the traced ones). A Python
    number is an array of its own dtype here (np.hstack((x32, 1.5)) is float64), not weakly
    typed as beside an array in an operator."""
    arrays = list(arrays)
    like = next(a for a in arrays if isinstance(a, Value))
    return [a if isinstance(a, Value) else fn.as_value(np.asarray(a), like) for a in arrays]


def _atleast(ndim):
    """np.atleast_1d/2d/3d: NumPy's own rule for where the new axes go (a 1-D (n,) becomes
    (1, n) in 2-D, (1, n, 1) in 3-D; a 2-D (m, n) becomes (m, n, 1) in 3-D)."""
    def one(x):
        shape = np.atleast_1d if ndim == 1 else np.atleast_2d if ndim == 2 else np.atleast_3d
        return fn.reshape(x, shape(np.broadcast_to(False, x.shape)).shape)

    def impl(*arys):
        out = [one(x) for x in _values(arys)]
        return out[0] if len(out) == 1 else tuple(out)
    return impl


_atleast_1d, _atleast_2d, _atleast_3d = _atleast(1), _atleast(2), _atleast(3)


def _joined(name, ndim, axis):
    """np.hstack / vstack / dstack: the arrays made at least `ndim`-D, then concatenated."""
    def impl(tup, dtype=None, casting="same_kind"):
        arrays = [_atleast(ndim)(x) for x in _values(tup)]
        if not arrays:
            raise ValueError("need at least one array to concatenate")
        if dtype is not None:
            arrays = [fn.astype(x, dtype) for x in arrays]
        # hstack joins 1-D arrays along their only axis
        return fn.concatenate(arrays, 0 if name == "hstack" and arrays[0].ndim == 1 else axis)
    return impl


def _column_stack(tup):
    arrays = [fn.reshape(x, (x.size, 1)) if x.ndim < 2 else x for x in _values(tup)]
    return fn.concatenate(arrays, 1)


def _append(arr, values, axis=None):
    arr, values = _values([arr, values])
    if axis is None:
        arr, values, axis = fn.reshape(arr, (arr.size,)), fn.reshape(values, (values.size,)), 0
    return fn.concatenate([arr, values], axis)


def _block(arrays):
    """np.block: the innermost lists join along the last axis, the lists around them along the
    one before, ...; every array is first given ndim = max(list depth, largest ndim) axes, new
    ones in front."""
    def depth(obj, where):
        if type(obj) is tuple:
            raise TypeError(f"{where} is a tuple. Only lists can be used to arrange blocks, and "
                            "np.block does not allow implicit conversion from tuple to ndarray.")
        if type(obj) is not list:
            return 0
        if not obj:
            raise ValueError(f"List at {where} cannot be empty")
        depths = {depth(o, f"{where}[{k}]") for k, o in enumerate(obj)}
        if len(depths) > 1:
            raise ValueError(f"List depths are mismatched in {where}")
        return 1 + depths.pop()

    levels = depth(arrays, "arrays")
    flat = []

    def collect(obj):
        if type(obj) is list:
            for o in obj:
                collect(o)
        else:
            flat.append(obj)
    collect(arrays)
    values = iter(_values(flat))
    ndim = max([levels] + [np.ndim(a) if not isinstance(a, Value) else a.ndim for a in flat])

    def build(obj, level):
        if type(obj) is not list:
            x = next(values)
            return fn.reshape(x, (1,) * (ndim - x.ndim) + x.shape)
        return fn.concatenate([build(o, level + 1) for o in obj], ndim - levels + level)
    return build(arrays, 0)


# ---------------------------------------------------------------------------------------------
# splitting

def _split(np_split, axis_of=None):
    """np.split / array_split / hsplit / vsplit / dsplit: NumPy splits a probe whose elements
    are their index along the axis (a broadcast view, no memory), which gives each piece's start
    and length (and NumPy's errors); each piece is a slice of x."""
    def impl(ary, indices_or_sections, axis=0):
        x = array_arg(ary)
        _static(indices_or_sections, np_split.__name__, "indices_or_sections")
        if axis_of is not None:
            axis = axis_of(x)
        axis = fn.normalize_axis(axis, x.ndim)
        along = np.arange(x.shape[axis]).reshape((-1,) + (1,) * (x.ndim - axis - 1))
        probe = np.broadcast_to(along, x.shape)
        if axis_of is None:
            pieces = np_split(probe, indices_or_sections, axis)
        else:
            pieces = np_split(probe, indices_or_sections)
        out = []
        for piece in pieces:
            n = piece.shape[axis]
            start = int(piece.reshape(-1)[0]) if piece.size else 0
            starts, stops = [0] * x.ndim, list(x.shape)
            starts[axis], stops[axis] = start, start + n
            out.append(fn.slice_(x, starts, stops, (1,) * x.ndim))
        return out
    return impl


def _needs(ndim, name, axis):
    def axis_of(x):
        if x.ndim < ndim:
            raise ValueError(f"{name} only works on arrays of {ndim} or more dimensions")
        return axis if axis is not None else (1 if x.ndim > 1 else 0)
    return axis_of


# ---------------------------------------------------------------------------------------------
# padding

def _pad_pairs(pad_width, ndim):
    """pad_width in any of NumPy's forms as ndim (before, after) pairs, with NumPy's checks."""
    if isinstance(pad_width, dict):
        pairs = [(0, 0)] * ndim
        for axis, width in pad_width.items():
            pairs[axis] = (width, width) if isinstance(width, numbers.Integral) else tuple(width)
        pad_width = pairs
    widths = np.asarray(_static(pad_width, "pad", "pad_width"))
    if widths.dtype.kind not in "iu":
        raise TypeError("`pad_width` must be of integral type.")
    if widths.size == 1 or widths.size == 2 and widths.shape != (2, 1):
        widths = widths.ravel()
    if widths.size and widths.min() < 0:
        raise ValueError("index can't contain negative values")
    return np.broadcast_to(widths, (ndim, 2)).tolist()


_GATHERED_MODES = ("edge", "reflect", "symmetric", "wrap")


def _pad(array, pad_width, mode="constant", **kwargs):
    """np.pad: constant (and empty, as zeros) by concatenating constant blocks axis by axis, as
    NumPy fills them (a corner takes the later axis's value); edge/reflect/symmetric/wrap by a
    gather along each axis of np.pad applied to that axis's positions."""
    x = array_arg(array)
    pairs = _pad_pairs(pad_width, x.ndim)
    if mode in ("constant", "empty"):
        allowed = {"constant_values"} if mode == "constant" else set()
        if kwargs.keys() - allowed:
            raise ValueError(f"unsupported keyword arguments for mode '{mode}': "
                             f"{set(kwargs) - allowed}")
        values = np.asarray(_static(kwargs.get("constant_values", 0), "pad",
                                    "constant_values", "is not supported"))
        # (NumPy stores them as Python numbers, an array's too: out of range, inf, NaN raise)
        fn.check_scalars_into(values.tolist(), x.dtype, "np.pad")
        if values.size == 1 or values.size == 2 and values.shape != (2, 1):
            values = values.ravel()
        values = np.broadcast_to(values, (x.ndim, 2)).astype(x.dtype)
        for axis, ((before, after), fills) in enumerate(zip(pairs, values)):
            parts = []
            for width, fill in ((before, fills[0]), (after, fills[1])):
                shape = list(x.shape)
                shape[axis] = width
                parts.append(fn.full(x.graph, shape, fill, x.dtype) if width else None)
            if parts[0] is not None or parts[1] is not None:
                x = fn.concatenate([p for p in (parts[0], x, parts[1]) if p is not None], axis)
        return x
    if mode in _STATISTICS or mode == "linear_ramp":
        allowed = {"stat_length"} if mode in _STATISTICS else {"end_values"}
        if kwargs.keys() - allowed:
            raise ValueError(f"unsupported keyword arguments for mode '{mode}': "
                             f"{set(kwargs) - allowed}")
        return _pad_from_edges(x, pairs, mode, kwargs)
    if mode not in _GATHERED_MODES:
        raise UnsupportedOpError(f"np.pad(mode={mode!r}) is not supported; supported modes: "
                                 "constant, empty, linear_ramp, " + ", ".join(
                                     _GATHERED_MODES + tuple(_STATISTICS)))
    if kwargs.get("reflect_type", "even") != "even":
        raise UnsupportedOpError("np.pad(reflect_type='odd') is not supported; use the default "
                                 "reflect_type='even'")
    for axis, (before, after) in enumerate(pairs):
        if before or after:
            idx = np.pad(np.arange(x.shape[axis]), (before, after), mode, **kwargs)
            x = fn.take(x, idx, axis)
    return x


_STATISTICS = {"maximum": np.max, "minimum": np.min, "mean": np.mean, "median": np.median}


def _pad_from_edges(x, pairs, mode, kwargs):
    """np.pad's statistic modes (each side filled with the max/min/mean/median of its
    `stat_length` nearest elements; integers' mean and median rounded, booleans' cast) and
    linear_ramp (from `end_values` to the edge, as np.linspace(end, edge, width,
    endpoint=False) in float64, floored to integers), axis by axis as NumPy pads: an axis
    sees the pads of those before."""
    if mode in _STATISTICS:
        lengths = kwargs.get("stat_length")
        lengths = None if lengths is None else _pad_pairs(
            _static(lengths, "pad", "stat_length"), x.ndim)
    else:
        ends = np.broadcast_to(np.asarray(_static(kwargs.get("end_values", 0), "pad",
                                                  "end_values", "is not supported")), (x.ndim, 2))
    for axis, (before, after) in enumerate(pairs):
        n = x.shape[axis]
        if not (before or after):
            continue
        if n == 0:
            raise ValueError(f"can't extend empty axis {axis} using modes other than 'constant' "
                             "or 'empty'")
        parts = {}
        for side, width in enumerate((before, after)):
            if not width:
                continue
            length = 1 if mode == "linear_ramp" else n if lengths is None else min(
                lengths[axis][side], n)
            if length == 0:
                raise ValueError("stat_length of 0 yields no value for padding")
            starts, stops = [0] * x.ndim, list(x.shape)
            if side:
                starts[axis] = n - length
            else:
                stops[axis] = length
            edge = fn.slice_(x, starts, stops, (1,) * x.ndim)  # (the elements it is made from)
            shape = list(x.shape)
            shape[axis] = width
            if mode in _STATISTICS:
                fill = _STATISTICS[mode](edge, axis=axis, keepdims=True)
                if x.dtype.kind in "iu" and mode in ("mean", "median"):
                    fill = np.round(fill)  # (NumPy's for integers; a bool's is its cast)
                parts[side] = fn.broadcast_to(fn.astype(fill, x.dtype), shape)
                continue
            end = float(ends[axis][side])
            steps = np.arange(width, dtype=np.float64)[::-1 if side else 1].reshape(
                [width if d == axis else 1 for d in range(x.ndim)])  # (after: toward the end)
            ramp = steps * ((fn.astype(edge, np.float64) - end) / width) + end
            ramp = np.floor(ramp) if x.dtype.kind in "iu" else ramp
            parts[side] = fn.broadcast_to(fn.astype(ramp, x.dtype), shape)
        x = fn.concatenate([parts[s] if s in parts else x for s in (0, "x", 1)
                            if s in parts or s == "x"], axis)
    return x


# ---------------------------------------------------------------------------------------------
# flipping, rolling, rotating

def _reversed_axes(x, axes):
    starts, stops, steps = [0] * x.ndim, list(x.shape), [1] * x.ndim
    for a in axes:
        starts[a], stops[a], steps[a] = x.shape[a] - 1, -1, -1
    return fn.slice_(x, starts, stops, steps)


def _flip(m, axis=None):
    x = array_arg(m)
    return _reversed_axes(x, fn.normalize_axes(axis, x.ndim, sequence=True))


def _fliplr(m):
    x = array_arg(m)
    if x.ndim < 2:
        raise ValueError("Input must be >= 2-d.")
    return _reversed_axes(x, (1,))


def _flipud(m):
    x = array_arg(m)
    if x.ndim < 1:
        raise ValueError("Input must be >= 1-d.")
    return _reversed_axes(x, (0,))


def _roll(a, shift, axis=None):
    """np.roll: along each axis, the last `shift` elements then the others (two slices); by a
    traced shift, a gather of the positions (i - shift) mod n."""
    x = array_arg(a)
    if isinstance(shift, Value) and shift.ndim == 0 and shift.dtype.kind in "iu" and (
            axis is None or isinstance(axis, numbers.Integral)):
        flat = x if axis is not None else fn.reshape(x, (x.size,))
        ax = fn.normalize_axis(axis if axis is not None else 0, flat.ndim)
        n = flat.shape[ax]
        if n == 0:
            return x
        at = np.remainder(fn.as_value(np.arange(n, dtype=np.int64), shift)
                          - fn.astype(shift, np.int64), n)
        return fn.reshape(fn.take(flat, at, axis=ax), x.shape)
    _static(shift, "roll", "shift", "is supported as one integer (0-d) with one axis or none")
    if axis is None:
        return fn.reshape(_roll(fn.reshape(x, (x.size,)), shift, 0), x.shape)
    shifts = {}
    for s, ax in np.broadcast(shift, axis):  # (NumPy's rule: shift and axis broadcast together)
        ax = fn.normalize_axis(ax, x.ndim)
        shifts[ax] = shifts.get(ax, 0) + int(s)
    for ax, s in shifts.items():
        n = x.shape[ax]
        s = s % n if n else 0
        if s:
            starts, stops, ones = [0] * x.ndim, list(x.shape), (1,) * x.ndim
            stops[ax] = n - s
            head = fn.slice_(x, starts, stops, ones)
            starts[ax], stops[ax] = n - s, n
            x = fn.concatenate([fn.slice_(x, starts, stops, ones), head], ax)
    return x


def _rot90(m, k=1, axes=(0, 1)):
    x = array_arg(m)
    np.rot90(np.empty((1,) * x.ndim), k, axes)  # NumPy's checks of `axes`
    a0, a1 = (fn.normalize_axis(a, x.ndim) for a in axes)
    k %= 4
    perm = list(range(x.ndim))
    perm[a0], perm[a1] = perm[a1], perm[a0]
    if k == 0:
        return x
    if k == 2:
        return _reversed_axes(x, (a0, a1))
    if k == 1:
        return fn.transpose(_reversed_axes(x, (a1,)), perm)
    return _reversed_axes(fn.transpose(x, perm), (a1,))


def _rollaxis(a, axis, start=0):
    x = array_arg(a)
    n = x.ndim
    axis = fn.normalize_axis(axis, n)
    start = operator.index(start)
    if start < 0:
        start += n
    if not 0 <= start < n + 1:
        raise ValueError(f"start={start} is out of bounds for an array of {n} dimensions")
    if axis < start:
        start -= 1
    perm = [i for i in range(n) if i != axis]
    perm.insert(start, axis)
    return fn.transpose(x, perm)


# ---------------------------------------------------------------------------------------------
# triangles and diagonals

def _triangle(lower):
    def impl(m, k=0):
        """np.tril / np.triu: a constant mask of the last two axes (a 1-D input is the rows of a
        square matrix, as in NumPy); batched over the leading axes."""
        x = array_arg(m)
        if x.ndim == 0:  # (NumPy's error, as an ArgumentError naming the line)
            raise ValueError(f"np.{'tril' if lower else 'triu'} of a 0-d array: it takes a "
                             "matrix, or the rows of one (1-d)")
        rows, cols = x.shape[-2:] if x.ndim >= 2 else (x.shape[-1],) * 2
        k = operator.index(k)
        mask = np.tri(rows, cols, k if lower else k - 1, dtype=bool)
        if not lower:
            mask = ~mask
        return fn.where(mask, x, fn.zeros_like(x))
    return impl


def _diagonal(a, offset=0, axis1=0, axis2=1):
    return _rearranged(array_arg(a), np.diagonal, offset, axis1, axis2)


def _diag(v, k=0):
    x = array_arg(v)
    if x.ndim == 2:
        return _diagonal(x, k)
    if x.ndim != 1:
        raise ValueError("Input must be 1- or 2-d.")
    # a gather from x followed by one zero: the off-diagonal positions read the zero
    idx = np.diag(np.arange(1, x.size + 1), k) - 1
    idx[idx < 0] = x.size
    return _gather(fn.concatenate([x, fn.full(x.graph, (1,), 0, x.dtype)]), idx)


def _diagflat(v, k=0):
    x = array_arg(v)
    return _diag(fn.reshape(x, (x.size,)), k)


def _vander(x, N=None, increasing=False):
    """Columns x**(N-1) .. x**0 (increasing: the other way), as NumPy builds them: repeated
    products in x's type promoted with int (float32 gives float64, as NumPy's)."""
    x = array_arg(x)
    if x.ndim != 1:
        raise ValueError("x must be a one-dimensional array or sequence.")
    n = x.size if N is None else operator.index(N)
    if n < 0:
        raise ValueError("negative dimensions are not allowed")
    x = fn.astype(x, np.promote_types(x.dtype, int))
    powers, power = [], None
    for i in range(n):
        power = fn.ones_like(x) if i == 0 else x if i == 1 else power * x
        powers.append(power)
    if not powers:
        return fn.full(x.graph, (x.size, 0), 0, x.dtype)
    return fn.stack(powers if increasing else powers[::-1], axis=1)


def _resize(a, new_shape):
    x = array_arg(a)
    new_shape = _static(new_shape, "resize", "new_shape")
    if x.size == 0:  # (NumPy: zeros)
        return fn.full(x.graph, tuple(np.atleast_1d(new_shape)), 0, x.dtype)
    return _rearranged(x, np.resize, new_shape)


def _compress(condition, a, axis=None, out=None):
    if out is not None:
        raise UnsupportedOpError("np.compress(out=...) cannot be traced: use the returned value")
    condition = _static(condition, "compress", "condition")
    return _rearranged(array_arg(a), lambda at: np.compress(condition, at, axis))


def _extract(condition, arr):
    condition = _static(condition, "extract", "condition")
    return _rearranged(array_arg(arr), lambda at: np.extract(condition, at))


def _isin(element, test_elements, assume_unique=False, invert=False, *, kind=None):
    """np.isin: whether each element is among test_elements (any shape, flattened), compared
    as `==` compares (NumPy's result for every `kind`)."""
    x = array_arg(element, test_elements)
    tests = array_arg(test_elements, x)
    tests = fn.reshape(tests, (1,) * x.ndim + (tests.size,))
    hit = fn.any(fn.compare("equal", fn.reshape(x, x.shape + (1,)), tests), -1)
    return fn.unary("logical_not", hit, float_only=False) if invert else hit


def _broadcast_arrays(*args, subok=False):
    # (a Python number is an array of its own dtype here, as NumPy's np.array makes it)
    values = [array_arg(a if isinstance(a, Value) else np.asarray(a), *args) for a in args]
    shape = fn.broadcast_shapes(*[v.shape for v in values])
    return tuple(fn.broadcast_to(v, shape) for v in values)


# ---------------------------------------------------------------------------------------------
# inserting and deleting

def _delete(arr, obj, axis=None):
    return _rearranged(array_arg(arr), np.delete, _static(obj, "delete", "obj"), axis)


def _insert(arr, obj, values, axis=None):
    """np.insert: NumPy inserts codes (-1 - the values' flat position) into x's positions, which
    says, with NumPy's broadcasting of `values`, where each element comes from."""
    x = array_arg(arr, values)
    obj = _static(obj, "insert", "obj")
    fn.check_scalars_into(values, x.dtype, "np.insert")
    vals = fn.astype(fn.as_value(values, x), x.dtype)
    codes = -1 - np.arange(vals.size).reshape(vals.shape)
    idx = np.insert(_positions(x.shape), obj, codes, axis)
    idx = np.where(idx < 0, x.size - 1 - idx, idx)
    return _gather(fn.concatenate([fn.reshape(x, (x.size,)), fn.reshape(vals, (vals.size,))]),
                   idx)


def _matrix_transpose(x):
    """np.matrix_transpose (NumPy 2): the last two axes swapped."""
    x = array_arg(x)
    if x.ndim < 2:
        raise ValueError(f"np.matrix_transpose: input array must be at least 2-dimensional, "
                         f"got {x.ndim}-d")
    return fn.swapaxes(x, -1, -2)


def _meshgrid(*xi, copy=True, sparse=False, indexing="xy"):
    """np.meshgrid: coordinate arrays (views broadcast to the grid, or with sparse=True the
    inputs reshaped along their own axis); 'xy' swaps the first two axes, as NumPy does."""
    if indexing not in ("xy", "ij"):
        raise ValueError("np.meshgrid: valid values for `indexing` are 'xy' and 'ij'")
    like = next((x for x in xi if isinstance(x, Value)), None)
    xs = [fn.reshape(array_arg(x, like), (-1,)) for x in xi]
    ndim = len(xs)
    shapes = []
    for i in range(ndim):
        shape = [1] * ndim
        shape[i] = xs[i].shape[0]
        shapes.append(shape)
    if indexing == "xy" and ndim > 1:
        for shape in shapes:
            shape[0], shape[1] = shape[1], shape[0]
    out = [fn.reshape(x, tuple(shape)) for x, shape in zip(xs, shapes)]
    if not sparse:
        out = fn.broadcast_all(*out)
    return tuple(out)


def _sliding_window_view(x, window_shape, axis=None, *, subok=False, writeable=False):
    """np.lib.stride_tricks.sliding_window_view: every window of `window_shape` along `axis`
    (all axes by default), the window's axes after x's, in the order of `axis`. NumPy's is a
    view that repeats elements; here each offset in the window is a slice of x (a view), and
    the windows are those slices stacked (one copy): its gradient sums the slices' back."""
    if writeable:
        raise UnsupportedOpError("sliding_window_view(writeable=True): traced arrays are never "
                                 "written in place")
    x = array_arg(x)
    window = (window_shape,) if isinstance(window_shape, numbers.Integral) else tuple(window_shape)
    axes = tuple(range(x.ndim)) if axis is None else (
        (axis,) if isinstance(axis, numbers.Integral) else tuple(axis))
    if len(window) != len(axes):
        raise ValueError("sliding_window_view: window_shape must have one entry per axis in "
                         "axis (or per axis of x, without axis)")
    axes = tuple(fn.normalize_axis(a, x.ndim) for a in axes)
    if len(set(axes)) != len(axes):
        raise UnsupportedOpError("sliding_window_view over one axis twice is not supported")
    if any(w < 0 for w in window) or any(x.shape[a] < w for a, w in zip(axes, window)):
        raise ValueError("sliding_window_view: window shape cannot be larger than input array "
                         "shape (or negative)")
    counts = list(x.shape)
    for a, w in zip(axes, window):
        counts[a] = x.shape[a] - w + 1
    slices = []
    for offset in itertools.product(*(range(w) for w in window)):
        starts = [0] * x.ndim
        for a, o in zip(axes, offset):
            starts[a] = o
        slices.append(fn.slice_(x, tuple(starts), tuple(s + n for s, n in zip(starts, counts)),
                                (1,) * x.ndim))
    stacked = fn.stack(slices, -1) if slices else fn.full(x.graph, tuple(counts) + (0,), 0,
                                                           x.dtype)
    return fn.reshape(stacked, tuple(counts) + window)


FUNCTIONS = {
    np.lib.stride_tricks.sliding_window_view: _sliding_window_view,
    np.matrix_transpose: _matrix_transpose, np.meshgrid: _meshgrid,
    np.repeat: _repeat, np.tile: _tile,
    np.atleast_1d: _atleast_1d, np.atleast_2d: _atleast_2d, np.atleast_3d: _atleast_3d,
    np.hstack: _joined("hstack", 1, 1), np.vstack: _joined("vstack", 2, 0),
    np.row_stack: _joined("vstack", 2, 0),
    np.dstack: lambda tup: _joined("dstack", 3, 2)(tup), np.column_stack: _column_stack,
    np.append: _append, np.block: _block,
    np.split: _split(np.split), np.array_split: _split(np.array_split),
    np.hsplit: lambda ary, indices_or_sections: _split(np.hsplit, _needs(1, "hsplit", None))(
        ary, indices_or_sections),
    np.vsplit: lambda ary, indices_or_sections: _split(np.vsplit, _needs(2, "vsplit", 0))(
        ary, indices_or_sections),
    np.dsplit: lambda ary, indices_or_sections: _split(np.dsplit, _needs(3, "dsplit", 2))(
        ary, indices_or_sections),
    np.pad: _pad,
    np.flip: _flip, np.fliplr: _fliplr, np.flipud: _flipud, np.roll: _roll, np.rot90: _rot90,
    np.rollaxis: _rollaxis,
    np.tril: _triangle(True), np.triu: _triangle(False),
    np.diag: _diag, np.diagonal: _diagonal, np.diagflat: _diagflat, np.vander: _vander,
    np.delete: _delete, np.insert: _insert, np.resize: _resize, np.compress: _compress,
    np.extract: _extract, np.broadcast_arrays: _broadcast_arrays, np.isin: _isin,
}
