"""NumPy's advanced indexing of traced values, and `gradc.at`, its out-of-place updates.

An index becomes the flat positions in x of the result's elements (`positions`), and the result
a gather of the flattened x (np.take), whose gradient is a scatter-add (repeated indices
accumulate):
- a static index (integers, slices, None, ..., NumPy integer and boolean arrays) is applied by
  NumPy itself to x's positions (np.arange(x.size).reshape(x.shape)[index]): NumPy's rules, its
  errors, and out-of-range indices found while tracing;
- an index with traced integer arrays builds the positions in the graph: the sum over x's axes of
  (index along the axis) * stride, each term placed on the result's axes by NumPy's rules (the
  index arrays broadcast together; their axes go where they are when they are adjacent in the
  index, first otherwise). A traced index is wrapped and checked by a gather from
  np.arange(n), which raises IndexOutOfRangeError when the compiled function runs.
A traced boolean mask would give a data-dependent shape: UnsupportedOpError.
"""
from __future__ import annotations

import operator

import numpy as np

from .errors import IndexOutOfRangeError, ShapeError, UnsupportedOpError
from .ir import Value
from .ops import fn
from .ops.movement import contiguous_strides
from .selection import Selection, same_value
from .selection import store as selection_store
from .trace import copy, traced

_MASK_ERROR = ("indexing with a traced boolean mask gives a data-dependent shape, which a "
               "compiled function cannot have; use np.where(mask, x, 0), or a mask the function "
               "does not compute or take as an argument (a NumPy array of a global, a closure "
               "or an object it reads: a constant of the compiled function, as np.nonzero's "
               "positions are). An array argument is always traced, a bool one too")


def _static_positions(shape, index):
    try:
        return np.arange(int(np.prod(shape, dtype=np.int64)), dtype=np.int64).reshape(
            shape)[index]
    except IndexError as e:
        if "out of bounds" in str(e):
            raise IndexOutOfRangeError(str(e)) from None
        raise ShapeError(str(e)) from None


def _entries(x, index):
    """The index as one entry per axis of x (the ellipsis expanded, slices appended), plus the
    None entries; a static boolean array becomes its np.nonzero arrays (one per axis it covers)."""
    entries = []
    for i in index:
        if isinstance(i, Value):
            if i.dtype == np.bool_:
                raise UnsupportedOpError(_MASK_ERROR)
            if not np.issubdtype(i.dtype, np.integer):
                raise ShapeError("arrays used as indices must be of integer (or boolean) type, "
                                 f"got {i.dtype}")
            entries.append(i)
        elif isinstance(i, np.ndarray) and i.dtype == np.bool_:
            entries.extend(np.nonzero(i))
        elif isinstance(i, (bool, np.bool_)):
            raise UnsupportedOpError("a boolean scalar in an index with traced index arrays is "
                                     "not supported; use None to add an axis")
        elif isinstance(i, np.ndarray) and not np.issubdtype(i.dtype, np.integer):
            raise ShapeError("arrays used as indices must be of integer (or boolean) type, "
                             f"got {i.dtype}")
        elif i is None or i is Ellipsis or isinstance(i, (slice, int, np.integer, np.ndarray)):
            entries.append(i)
        else:
            raise UnsupportedOpError(f"cannot index with a {type(i).__name__}: NumPy's indices "
                                     "are integers, slices, None, Ellipsis and integer or "
                                     "boolean arrays")
    real = sum(1 for e in entries if e is not None and e is not Ellipsis)
    if real > x.ndim:
        raise IndexOutOfRangeError(f"too many indices for array: array is {x.ndim}-dimensional, "
                                   f"but {real} were indexed")
    ellipses = [k for k, e in enumerate(entries) if e is Ellipsis]
    if len(ellipses) > 1:
        raise ShapeError("an index can only have a single ellipsis ('...')")
    fill = [slice(None)] * (x.ndim - real)
    if ellipses:
        k = ellipses[0]
        return entries[:k] + fill + entries[k + 1:]
    return entries + fill


def _checked(i, n, like):
    """Index array `i` for an axis of length n, negative ones wrapped: a traced one through a
    gather from np.arange(n), which checks it when the compiled function runs."""
    if isinstance(i, Value):
        return fn.take(fn.as_value(np.arange(n, dtype=np.int64), like), i, axis=0)
    i = np.asarray(i, np.int64)
    if i.size and (i.min() < -n or i.max() >= n):
        bad = i[(i < -n) | (i >= n)].ravel()[0]
        raise IndexOutOfRangeError(f"index {bad} is out of bounds for an axis of size {n}")
    return np.where(i < 0, i + n, i)


def _traced_positions(x, index):
    entries = _entries(x, index)
    advanced = [k for k, e in enumerate(entries)
                if e is not None and not isinstance(e, slice)]
    block = fn.broadcast_shapes(*[np.shape(e) if not isinstance(e, Value) else e.shape
                                  for k, e in enumerate(entries) if k in advanced])
    # (NumPy's rule on the index as written: an ellipsis between advanced indices separates
    # them even where it stands for no axis, `x[:, i, ..., j]` on 3 axes; expanded, it left
    # nothing between them, and the block stayed in place: another shape, silently)
    written = [k for k, i in enumerate(index)
               if i is not None and i is not Ellipsis and not isinstance(i, slice)]
    adjacent = (advanced == list(range(advanced[0], advanced[-1] + 1))
                and written == list(range(written[0], written[-1] + 1)))
    # the result's axes: (entry, length) of the slices and Nones before the block of the
    # advanced indices' axes (when adjacent), the block, then the others
    basic = [(k, e) for k, e in enumerate(entries) if k not in advanced]
    lead = [(k, e) for k, e in basic if adjacent and k < advanced[0]]
    trail = [(k, e) for k, e in basic if not (adjacent and k < advanced[0])]
    rank = len(lead) + len(block) + len(trail)
    at = len(lead)  # where the block starts
    strides = contiguous_strides(x.shape)
    dims = {}  # entry -> the axis of x it indexes
    for k, e in enumerate(entries):
        if e is not None:
            dims[k] = len(dims)
    static = np.zeros((1,) * rank, np.int64)
    traced = []
    out_shape = []
    for q, (k, e) in enumerate(lead + trail):
        q = q if q < len(lead) else q + len(block)
        if e is None:
            out_shape.append((q, 1))
            continue
        d = dims[k]
        start, stop, step = e.indices(x.shape[d])
        along = np.arange(start, stop, step, dtype=np.int64) * strides[d]
        out_shape.append((q, along.size))
        static = static + along.reshape((1,) * q + (-1,) + (1,) * (rank - q - 1))
    for k in advanced:
        d = dims[k]
        i = _checked(entries[k], x.shape[d], x)
        shape = (1,) * at + (1,) * (len(block) - np.ndim(i)) + np.shape(i) + (1,) * (
            rank - at - len(block))
        if isinstance(i, Value):
            traced.append(fn.multiply(fn.reshape(i, shape), strides[d]))
        else:
            static = static + (i * strides[d]).reshape(shape)
    full = [1] * rank
    for q, n in out_shape:
        full[q] = n
    full[at:at + len(block)] = block
    positions = fn.as_value(static, x)
    for t in traced:
        positions = fn.add(positions, t)
    return fn.broadcast_to(positions, full)


def basic_slices(shape, index):
    """A basic index (integers, slices, None, one ...) of an array of `shape` as one slice per
    axis, (starts, stops, steps), and the shape NumPy's x[index] has (an integer's axis gone,
    None's added)."""
    n_real = sum(1 for i in index if i is not None and i is not Ellipsis)
    if n_real > len(shape):
        raise ShapeError(f"too many indices ({n_real}) for an array of {len(shape)} dimensions")
    if sum(1 for i in index if i is Ellipsis) > 1:  # (`is`: == on arrays is elementwise)
        raise ShapeError("an index can only have a single ellipsis")
    if any(i is Ellipsis for i in index):
        k = next(j for j, i in enumerate(index) if i is Ellipsis)
        index = index[:k] + (slice(None),) * (len(shape) - n_real) + index[k + 1:]
        n_real = len(shape)
    index = index + (slice(None),) * (len(shape) - n_real)
    starts, stops, steps, out_shape = [], [], [], []
    dim = 0
    for i in index:
        if i is None:
            out_shape.append(1)
            continue
        size = shape[dim]
        if isinstance(i, slice):
            a, b, c = i.indices(size)
            starts.append(a), stops.append(b), steps.append(c)
            out_shape.append(len(range(a, b, c)))
        elif isinstance(i, (int, np.integer)):
            j = int(i) + size if int(i) < 0 else int(i)
            if not 0 <= j < size:  # (NumPy's IndexError, as for an index array's)
                raise IndexOutOfRangeError(
                    f"index {int(i)} is out of bounds for axis {dim} with size {size}")
            starts.append(j), stops.append(j + 1), steps.append(1)
        else:
            raise UnsupportedOpError(f"cannot index with a {type(i).__name__}")
        dim += 1
    return starts, stops, steps, out_shape


def _is_basic(index):
    return all(i is None or i is Ellipsis or isinstance(i, slice)
               or isinstance(i, (int, np.integer)) and not isinstance(i, (bool, np.bool_))
               for i in index)


def sequence_index(i):
    """An index entry that is a list, a tuple (inside the index: x[:, (0, 1)]) or a range as
    NumPy reads it: an integer array (a list of traced values, one traced array); others as
    they are."""
    if isinstance(i, (list, tuple, range)):
        return np.asarray(i) if len(i) else np.zeros(0, np.intp)  # (empty: no index)
    if not isinstance(i, (Value, np.ndarray, np.generic, int, slice)) and i is not None and (
            i is not Ellipsis and hasattr(type(i), "__index__")):
        return operator.index(i)  # (an object that is an integer to NumPy)
    return i


def positions(x, index):
    """The flat positions in x of the elements of x[index]: a NumPy array when the index is
    static, else a traced int64 value."""
    if not isinstance(index, tuple):
        index = (index,)
    index = tuple(map(sequence_index, index))
    if any(isinstance(i, Value) for i in index):
        return _traced_positions(x, index)
    return _static_positions(x.shape, index)


def gather(x, index):
    """x[index] for any index: a gather of the flattened x."""
    pos = positions(x, index)
    flat = fn.reshape(x, (x.size,))
    if not isinstance(pos, Value) and pos.size == x.size and np.array_equal(
            pos.ravel(), np.arange(x.size)):
        return fn.reshape(flat, pos.shape)
    return fn.take(flat, pos, axis=0)


# ---------------------------------------------------------------------------------------------
# gradc.at

_NUMPY_AT = {"add": np.add, "multiply": np.multiply, "min": np.minimum, "max": np.maximum}
_TRACED_SET_LIMIT = 4096  # indices: a traced .set compares every pair of them


def at(x):
    """Out-of-place updates of x at an index, as in JAX: `gradc.at(x)[idx].set(v)` is x with
    x[idx] = v, without changing x; also .add, .multiply, .min, .max. Any index that x[idx]
    takes works; the result is differentiable with respect to x and v. Repeated indices: .set
    keeps the last value (as NumPy's x[idx] = v), .add/.multiply/.min/.max accumulate every one
    (as np.add.at). Outside a traced function, on NumPy arrays, it computes with NumPy."""
    return _At(x)


class _At:
    __slots__ = ("_x",)

    def __init__(self, x):
        self._x = x

    def __getitem__(self, index):
        return _Update(self._x, index)


class _Update:
    __slots__ = ("_x", "_index")

    def __init__(self, x, index):
        self._x, self._index = x, index

    def set(self, values):
        return self._apply("set", values)

    def add(self, values):
        return self._apply("add", values)

    def multiply(self, values):
        return self._apply("multiply", values)

    def min(self, values):  # noqa: A003
        return self._apply("min", values)

    def max(self, values):  # noqa: A003
        return self._apply("max", values)

    def _apply(self, kind, values):
        return _traced_update_of(self._x, self._index, kind, values)

    def __getattr__(self, name):  # (.sub, .divide, .get...: say what there is)
        if name.startswith("__"):  # (Python's and NumPy's probes: not there)
            raise AttributeError(name)
        from .trace import user_source
        raise UnsupportedOpError(f"gradc.at(x)[index].{name} is not an update: there are .set, "
                                 ".add, .multiply, .min and .max (subtract with .add(-v))",
                                 source=user_source())


def _not_an_array(self, *args, **kwargs):
    from .trace import user_source
    raise UnsupportedOpError("gradc.at(x)[index] is an update still to make, not an array: end "
                             "it with .set(v), .add(v), .multiply(v), .min(v) or .max(v) (the "
                             "new array), or read the elements with x[index]",
                             source=user_source())


# (gradc.at(x)[i] * 2, np.sum(gradc.at(x)[i]): the update was not finished)
for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or",
              "xor", "radd", "rsub", "rmul", "rtruediv", "rfloordiv", "rmod", "rpow", "rmatmul",
              "rand", "ror", "rxor", "neg", "pos", "abs", "lt", "le", "gt", "ge", "bool",
              "float", "int", "index", "len", "iter", "array", "array_ufunc", "array_function"):
    setattr(_Update, f"__{_name}__", _not_an_array)


def _graph_of(x, index, kind, values):
    index = index if isinstance(index, tuple) else (index,)
    return next((v.graph for v in (x, values, *index) if isinstance(v, Value)), None)


def _update(x, index, kind, values):
    like = _graph_of(x, index, kind, values)
    if like is None:  # NumPy arrays, outside a trace
        out = np.array(x, copy=True)
        if kind == "set":
            out[index] = values
        else:  # (values broadcast first: NumPy 2.4's ufunc.at, given a float64 array to
            # broadcast over a 2-D index, wrote garbage: np.add.at(z, [[0, 0], [1, 0]], v);
            # the values in x's dtype first, as JAX and the compiled form take them: the
            # maximum of a boolean x and -3 is True)
            shape = out[index].shape
            values = np.asarray(values).astype(out.dtype, copy=False)
            while values.ndim > len(shape) and values.shape[0] == 1:
                values = values[0]
            _NUMPY_AT[kind].at(out, index, np.broadcast_to(values, shape))
        return out
    x = x if isinstance(x, Value) else fn.as_value(np.asarray(x), graph=like)
    mask = index[0] if isinstance(index, tuple) and len(index) == 1 else index
    if isinstance(values, Selection):  # (z[m] = f(x[m]): by the mask it was taken by)
        if not (isinstance(mask, Value) and same_value(mask, values.mask)
                and values.full.shape == x.shape):
            raise UnsupportedOpError(
                "a masked selection (x[mask], traced mask) stored by another index: its "
                "elements line up only with the same mask's, z[mask] = f(x[mask]) (or use "
                "np.where(mask, values, z))")
        return selection_store(x, values, kind, _combine)
    fn.check_scalars_into(values, x.dtype, "a store")
    vals = fn.astype(values if isinstance(values, Value) else fn.as_value(values, x), x.dtype)
    if isinstance(mask, Value) and mask.dtype == np.bool_:
        return _masked_update(x, mask, kind, vals)
    basic = index if isinstance(index, tuple) else (index,)
    if _is_basic(basic):
        return _slice_update(x, basic, kind, vals)
    pos = positions(x, index)
    shape = np.shape(pos) if not isinstance(pos, Value) else pos.shape
    vals = fn.reshape(_fitted(vals, shape), (-1,))
    flat = fn.reshape(x, (x.size,))
    if vals.size == 0:
        return copy(x)  # (out of place: a new array, never x itself)
    if isinstance(pos, Value):
        out = _traced_update(flat, fn.reshape(pos, (-1,)), kind, vals,
                             distinct=_told_apart(x.shape, index, shape))
    else:
        out = _static_update(flat, np.asarray(pos).ravel(), kind, vals)
    return fn.reshape(out, x.shape)


_traced_update_of = traced(_update, graph_of=_graph_of)  # (errors name the user's line)


def _fitted(vals, shape):
    """The values broadcast to `shape`, the indexed elements' (NumPy's assignment first drops
    leading axes of one that the shape has not)."""
    while vals.ndim > len(shape) and vals.shape[0] == 1:
        vals = fn.reshape(vals, vals.shape[1:])
    return fn.broadcast_to(vals, tuple(shape))


def _slice_update(x, index, kind, vals):
    """A basic index (a slice per axis: `h[:, t] = v` in a loop): the slice's new values
    written into a copy of x (set_slice), which the memory plan writes in place where x is not
    read after it. (Through positions, each update held a gather index and a mask of x's size
    as constants: an RNN's T updates of its (N, T, H) states kept T of each, 359 MiB at
    T = 64; a where of x and the values written into zeros held T zero-padded buffers, 70.)"""
    starts, stops, steps, shape = basic_slices(x.shape, index)
    sliced = [len(range(a, b, c)) for a, b, c in zip(starts, stops, steps)]
    vals = fn.reshape(_fitted(vals, shape), sliced)
    if vals.size == 0:
        return copy(x)  # (out of place: a new array, never x itself)
    if kind != "set":
        vals = _combine(kind, fn.slice_(x, starts, stops, steps), vals)
    return x.graph.apply("set_slice", (x, vals), starts=tuple(starts), stops=tuple(stops),
                         steps=tuple(steps))


def _combine(kind, old, new):
    if kind == "set":
        return new
    if kind == "add":
        return fn.add(old, new) if old.dtype != np.bool_ else fn.maximum(old, new)
    if kind == "multiply":
        return fn.multiply(old, new) if old.dtype != np.bool_ else fn.minimum(old, new)
    return (fn.minimum if kind == "min" else fn.maximum)(old, new)


def _masked_update(x, mask, kind, vals):
    """A traced mask: a scalar value is written where the mask is true (np.where); an array of
    values would fill the true elements in order, a data-dependent placement."""
    if vals.size == 1:  # (z[m] = x[:1]: one value broadcast, as a number's)
        vals = fn.reshape(vals, ())
    if vals.ndim != 0:
        raise UnsupportedOpError(
            "gradc.at(x)[mask] with a traced boolean mask takes a scalar value only (an array "
            "of values fills the true elements in order, which depends on the data); use "
            "np.where(mask, values, x)")
    if mask.shape != x.shape[:mask.ndim]:
        raise ShapeError(f"boolean index of shape {mask.shape} does not match the array's "
                         f"shape {x.shape}")
    mask = fn.broadcast_to(fn.reshape(mask, mask.shape + (1,) * (x.ndim - mask.ndim)), x.shape)
    return fn.where(mask, _combine(kind, x, fn.broadcast_to(vals, x.shape)), x)


def _static_update(flat, pos, kind, vals):
    """Known positions: for each occurrence r of a repeated position (the r-th write to it),
    one gather of the values written r-th, combined where there is one; .set needs only the
    last."""
    m = pos.size
    order = np.argsort(pos, kind="stable")
    sorted_pos = pos[order]
    first = np.searchsorted(sorted_pos, sorted_pos)  # each run's start
    rank = np.empty(m, np.int64)
    rank[order] = np.arange(m) - first
    if kind == "set":  # the last write of each position
        last = np.full(m, False)
        last[order[np.r_[sorted_pos[1:] != sorted_pos[:-1], True]]] = True
        ranks = [np.where(last)[0]]
    else:
        ranks = [np.where(rank == r)[0] for r in range(int(rank.max()) + 1)]
    out = flat
    for writes in ranks:
        src = np.zeros(flat.size, np.int64)
        src[pos[writes]] = writes
        mask = np.zeros(flat.size, bool)
        mask[pos[writes]] = True
        out = fn.where(mask, _combine(kind, out, fn.take(vals, src, axis=0)), out)
    return out


def _scatter_add(vals, pos, size):
    return vals.graph.apply("take_grad", (vals, pos), axis=0, size=size)


def _told_apart(shape, index, written):
    """Whether no two writes of a store at `index` (into an array of `shape`, `written` the
    shape written) share a position, whatever the traced indices: they are scalars beside
    slices (`dC[ix] += row`), or a static index array of the tuple, broadcast to `written`,
    names another position of its axis at every element written (DLFS's pooling backward:
    `dmax[np.arange(n), arg_max.flatten()] = dout.flatten()`)."""
    items = index if isinstance(index, tuple) else (index,)
    if all(x.ndim == 0 for x in items if isinstance(x, Value)) and not any(
            isinstance(x, (list, np.ndarray)) and np.ndim(x) > 0 for x in items):
        return True  # (traced scalars and slices, `dC[ix] += row`: one position per element)
    if not isinstance(index, tuple):
        return False
    axis = 0
    for item in index:
        if item is None:
            continue
        array = item if isinstance(item, Value) else np.asarray(item)
        if item is Ellipsis or array.ndim > 0 and array.dtype == np.bool_:
            return False  # (their axes: not counted here)
        if not isinstance(item, Value) and array.ndim > 0 and array.dtype.kind in "iu":
            try:
                told = np.broadcast_to(array % shape[axis], written)
            except (ValueError, IndexError, ZeroDivisionError):
                return False
            if np.unique(told).size == told.size:
                return True
        axis += 1
    return False


def _traced_update(flat, pos, kind, vals, distinct=False):
    """Traced positions: .add is a scatter-add; .set gathers each written position's value
    from the last index that names it (found by comparing every pair of indices, unless the
    positions are `distinct`). Positions no index names keep their elements as they are (a
    -0.0 too: 0.0 added would make it +0.0)."""
    if kind == "add" and flat.dtype == np.bool_:  # (x or any value added there: every
        # written position was True, whatever the values, a False added too)
        added = _scatter_add(fn.astype(vals, np.int64), pos, flat.size)
        return fn.maximum(flat, fn.compare("greater", added, 0))
    if kind == "set" and distinct:  # (each position written once: its writer's number, from
        # 1, is the sum there, 0 where none writes)
        number = fn.as_value(np.arange(1, pos.size + 1, dtype=np.int64), flat)
        last = _scatter_add(number, pos, flat.size)
        values = fn.take(fn.astype(vals, flat.dtype), last - 1, axis=0, mode="clip")
        return fn.where(fn.compare("greater", last, 0), values, flat)
    writes = _scatter_add(fn.full(flat.graph, (pos.size,), 1, np.int64), pos, flat.size)
    written = fn.compare("greater", writes, 0)
    if kind == "add":
        return fn.where(written, fn.add(flat, _scatter_add(vals, pos, flat.size)), flat)
    if kind != "set":
        raise UnsupportedOpError(f"gradc.at(x)[idx].{kind} with traced index arrays is not "
                                 "supported; use static (NumPy) indices, or .set/.add")
    m = pos.size
    number = fn.as_value(np.arange(1, m + 1, dtype=np.int64), flat)
    if m > _TRACED_SET_LIMIT:
        raise UnsupportedOpError(
            f"a store at {m} traced indices (`x[idx] = v`, gradc.at(x)[idx].set): finding "
            f"repeated ones compares every pair, supported up to {_TRACED_SET_LIMIT}; use static "
            "(NumPy) indices, a static index array that tells the writes apart (x[np.arange(n), "
            "idx] = v), or .add into zeros where the indices are known to be distinct")
    same = fn.compare("equal", fn.reshape(pos, (m, 1)), fn.reshape(pos, (1, m)))
    later = fn.as_value(np.triu(np.ones((m, m), bool), 1), flat)
    repeated_later = fn.any(fn.where(later, same, False), axis=1)
    # each position's last writer, as its number + 1 (a sum over the one writer kept)
    last = _scatter_add(fn.where(repeated_later, 0, number), pos, flat.size)
    values = fn.take(fn.astype(vals, flat.dtype), last - 1, axis=0, mode="clip")
    return fn.where(written, values, flat)
