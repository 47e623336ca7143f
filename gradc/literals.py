"""`np.array([a, b])` of traced values: array literals, as autograd users write them.

np.array, np.asarray, np.asanyarray and np.ascontiguousarray are not dispatched through
`__array_function__` (they are what makes an array of an object), and np.full fills an array it
made itself. So while any thread traces, these attributes of the `numpy` module are wrappers
(`numpy_constructors`, entered by gradc/trace.py's `trace`, restored when the last trace ends,
even on an error). A wrapper called in a thread that is not tracing, or with no traced value in
its argument, calls NumPy's function at once; otherwise:
- a (nested) list or tuple holding traced values becomes np.stack of its elements, with NumPy's
  shape and dtype rules (Python numbers as NumPy reads them in a list: float64, int64, bool;
  elements of different shapes are NumPy's ValueError);
- np.asarray(value) is the value (cast to `dtype=`);
- np.full(shape, traced scalar) broadcasts it;
- np.stack / np.concatenate / np.hstack... of lists holding traced values stack those lists
  first (NumPy dispatches on the elements of the sequence, not deeper);
- np.sum / np.mean / np.max... and np.linalg.norm / det / solve... of a list holding traced
  values (`np.mean([loss(x) for x in batch])`) take it as np.array of it (NumPy dispatches on
  the list itself, which holds no array);
- np.r_[...] and np.c_[...] holding traced values concatenate them by NumPy's rules (its own
  code converts each item with the np.array no wrapper reaches).
`from numpy import array` binds NumPy's own function, which no wrapper can reach: it raises
gradc's error for a traced value converted to an array, which says to call np.array.
"""
from __future__ import annotations

import contextlib
import functools
import sys
import threading

import numpy as np

from . import fresh, subscript
from .errors import ShapeError, UnsupportedOpError
from .ir import Value
from .live import Live, read as read_live
from .ops import fn
from .trace import (_call_numpy, _frame_kind, _user_frame, copy, current_graph, is_zero_d_array,
                    mark_view, note_layout_view, note_zero_d_arrays, traced)

_NAMES = ("array", "asarray", "asanyarray", "ascontiguousarray", "asfortranarray", "full")
# the memory order the function asks for: a reshape of a strided view may be a copy in NumPy
_ORDER_OF = {"ascontiguousarray": "C", "asfortranarray": "F"}
_ORIGINAL = {name: getattr(np, name) for name in _NAMES}
_lock = threading.Lock()
_tracing = 0  # traces in progress, in all threads


def _holds_value(obj):
    if isinstance(obj, Value):
        return True
    return type(obj) in (list, tuple) and any(_holds_value(o) for o in obj)


def first_value(obj):
    if isinstance(obj, Value):
        return obj
    if type(obj) in (list, tuple):
        return next((v for v in map(first_value, obj) if v is not None), None)
    return None


def _build(obj, like):
    """A nested list/tuple holding traced values as one value; anything without a traced value
    is NumPy's array of it (NumPy's dtype for Python numbers in a list)."""
    if isinstance(obj, Value):
        return obj
    if not _holds_value(obj):
        return fn.as_value(_ORIGINAL["array"](obj), like)
    parts = [_build(o, like) for o in obj]
    shapes = [p.shape for p in parts]
    if len(set(shapes)) > 1:
        raise ValueError(
            "setting an array element with a sequence: the elements of the list have the "
            f"inhomogeneous shapes {shapes}; NumPy refuses ragged lists. Give every element the "
            "same shape (np.broadcast_to, np.concatenate)")
    dtype = np.result_type(*[p.dtype for p in parts])
    return fn.stack([fn.astype(p, dtype) for p in parts], 0)


def _literal(obj, dtype=None, ndmin=0):
    if dtype is not None and np.dtype(dtype) == object:  # (a ValueError of NumPy's for ragged
        raise UnsupportedOpError(fn._OBJECT_ARRAYS)  # parts, which a handler may catch)
    out = _build(obj, first_value(obj))
    if dtype is not None:
        out = fn.astype(out, dtype)
    if ndmin > out.ndim:
        out = fn.reshape(out, (1,) * (ndmin - out.ndim) + out.shape)
    return out


def _applies(obj):
    """Is this call one to build a traced array: made while this thread traces, holding a traced
    value, and by the user's code (another library's call, as SciPy's np.asarray of its
    argument, keeps NumPy's function, whose error names that library)?"""
    return current_graph() is not None and _holds_value(obj) and _user_frame()[1] is None


def _graph_of(*args, **kwargs):
    value = first_value(list(args) + list(kwargs.values()))
    return value.graph if value is not None else None


def _wrapper(name):
    original = _ORIGINAL[name]
    first = "object" if name == "array" else "a"

    def literal(*args, **kwargs):
        obj = args[0] if args else kwargs.pop(first)
        dtype = args[1] if len(args) > 1 else kwargs.get("dtype")
        ndmin = 1 if name in _ORDER_OF else kwargs.get("ndmin", 0)  # (NumPy's are >= 1-d)
        out = _literal(obj, dtype, ndmin)
        copies = kwargs.get("copy", name == "array")  # (np.asarray(y, copy=True) too)
        if kwargs.get("copy") is False and isinstance(obj, Value) and out.dtype != obj.dtype:
            raise ShapeError("Unable to avoid copy while creating an array as requested "
                             f"(copy=False of a {obj.dtype} array as {out.dtype}: NumPy 2's "
                             "ValueError); use copy=None to copy only where needed")
        order = _ORDER_OF.get(name, kwargs.get("order"))
        if out is obj and (copies or out.ndim == 0 and not is_zero_d_array(out)):
            # (np.array copies: `a = np.array(h); a += 1` leaves h alone; np.asarray of a
            # NumPy scalar is a new 0-d array)
            out = note_zero_d_arrays(copy(out))
        elif not copies and isinstance(obj, Value) and out.dtype == obj.dtype and (
                out is not obj or order in ("C", "F")):
            # (ndmin's dimensions added to a view of h, as NumPy's; or h itself in the order
            # asked for, a copy in NumPy where h is not laid out so)
            same, out = out is obj, mark_view(obj, out)
            if same:
                note_layout_view(obj, out, order)
        return note_zero_d_arrays(out)  # (an array, whatever it holds)

    literal = traced(literal, graph_of=_graph_of)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        obj = args[0] if args else kwargs.get(first)
        if isinstance(obj, Live) and _copies(name, obj, args, kwargs):  # (np.array(self.W):
            value = read_live(obj)  # a traced copy, made on every call; NumPy's, compiled
            if isinstance(value, Value) and _user_frame()[1] is None:  # in, went stale
                args, kwargs = _replace_first(args, kwargs, first, value)  # once the program
        obj = args[0] if args else kwargs.get(first)  # updated the array in place)
        if _applies(obj):
            return literal(*args, **kwargs)
        return original(*args, **kwargs)
    return wrapper


def _copies(name, array, args, kwargs):
    """Whether np.<name>(array, ...) makes a copy: np.array (unless copy=False or None), or
    another dtype asked for."""
    dtype = args[1] if len(args) > 1 else kwargs.get("dtype")
    if name == "array" and kwargs.get("copy", True):
        return True
    return dtype is not None and np.dtype(dtype) != array.dtype


def _replace_first(args, kwargs, first, value):
    if args:
        return (value,) + tuple(args[1:]), kwargs
    return args, {**kwargs, first: value}


def _full_impl(shape, fill_value, dtype=None, order="C", *, device=None, like=None):
    value = _literal(fill_value, dtype)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    out = fn.broadcast_to(value, shape)
    return note_zero_d_arrays(copy(out)) if out is value else out  # (a new array)


_full = traced(_full_impl, graph_of=_graph_of)


def _fresh(out, caller):
    """A new NumPy array the user's own code made while this thread traces, as a Fresh array
    (gradc/fresh.py: stores of traced values into it are NumPy's); anything else as it is."""
    if (type(out) is not np.ndarray or current_graph() is None
            or _frame_kind(caller.f_code.co_filename) != "user"):
        return out
    order = "F" if out.flags.f_contiguous and not out.flags.c_contiguous else "C"
    return fresh.make(out.shape, out.dtype, order, out)


@functools.wraps(_ORIGINAL["full"])
def _full_wrapper(*args, **kwargs):
    fill = args[1] if len(args) > 1 else kwargs.get("fill_value")
    if _applies(fill):
        return _full(*args, **kwargs)
    return _fresh(_ORIGINAL["full"](*args, **kwargs), sys._getframe(1))


def _maker(name):
    """np.zeros, np.zeros_like...: NumPy's array, Fresh where the user's code asked for it."""
    original = _ORIGINAL[name] = getattr(np, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        return _fresh(original(*args, **kwargs), sys._getframe(1))
    return wrapper


def _dtype_stand_in(obj):
    """A traced value as NumPy's dtype functions read it: a 0-d array of its dtype, or a Python
    number for a weakly typed one (a Python float traced as an input, NEP 50)."""
    if not isinstance(obj, Value):
        return obj
    if obj.id in obj.graph.weak:
        return obj.dtype.type(0).item()
    return _ORIGINAL["empty"]((), obj.dtype)


def _of_dtypes(name):
    """np.result_type(x, w), np.can_cast(x, np.float32), np.common_type(x): they read dtypes
    alone, which a traced value has while tracing."""
    original = _ORIGINAL[name] = getattr(np, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        return original(*map(_dtype_stand_in, args),
                        **{k: _dtype_stand_in(v) for k, v in kwargs.items()})
    return wrapper


_WRAPPERS = {name: _wrapper(name) for name in _NAMES if name != "full"}
_WRAPPERS["full"] = _full_wrapper
_WRAPPERS.update({name: _of_dtypes(name) for name in ("result_type", "can_cast", "common_type",
                                                       "min_scalar_type")})
_WRAPPERS.update({name: _maker(name) for name in (
    "zeros", "ones", "empty", "zeros_like", "ones_like", "empty_like", "full_like", "eye",
    "identity")})


def _joining(name):
    """np.stack([[a, b], [c, d]]): NumPy dispatches on the sequence's elements only, so an
    element that is itself a list of traced values becomes a value first."""
    original = _ORIGINAL[name] = getattr(np, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        arrays = args[0] if args else None  # (NumPy's own call refuses the other spellings)
        if type(arrays) in (list, tuple) and any(type(a) in (list, tuple) and _applies(a)
                                                 for a in arrays):
            args = ([_WRAPPERS["asarray"](a) for a in arrays],) + args[1:]
        return original(*args, **kwargs)
    return wrapper


_WRAPPERS.update({name: _joining(name) for name in (
    "stack", "concatenate", "hstack", "vstack", "dstack", "column_stack")})


def _of_a_list(name, module=np):
    """np.mean([loss(x) for x in batch]): NumPy dispatches on the list, not on the traced
    values in it, and converts it with its own np.asarray; the list becomes a value first."""
    original = getattr(module, name)
    if module is np:
        _ORIGINAL[name] = original

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        if args and type(args[0]) in (list, tuple) and _applies(args[0]):
            args = (_WRAPPERS["asarray"](args[0]),) + args[1:]
        return original(*args, **kwargs)
    return wrapper


# (the reductions autograd's users call on lists of traced values; only functions gradc's own
# code never names at trace time: a wrapper is not NumPy's function, `func is np.reshape`)
_WRAPPERS.update({name: _of_a_list(name) for name in (
    "sum", "mean", "average", "max", "min", "amax", "amin", "prod", "std", "var", "median")})


def _take_wrapper():
    """np.take(table, i) with a traced i and a NumPy table: NumPy dispatches on the table alone
    (its indices are no dispatch argument), so it would convert i; gradc's take reads the table
    as a constant (or live, where it is an outside array a traced value reads)."""
    original = _ORIGINAL["take"] = np.take
    take = traced(lambda *args, **kwargs: _call_numpy(original, args, kwargs), graph_of=_graph_of)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        a = args[0] if args else kwargs.get("a")
        indices = args[1] if len(args) > 1 else kwargs.get("indices")
        if not isinstance(a, Value) and _applies(indices):
            return take(*args, **kwargs)
        return original(*args, **kwargs)
    return wrapper


_WRAPPERS["take"] = _take_wrapper()
def _of_lists(name):
    """np.dot(v, v) of a list of traced values: NumPy dispatches on neither list; each becomes
    a value first."""
    original = _ORIGINAL[name] = getattr(np, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        if any(type(a) in (list, tuple) for a in args) and _applies(list(args)):
            args = tuple(_WRAPPERS["asarray"](a) if type(a) in (list, tuple) and _applies(a)
                         else a for a in args)
        return original(*args, **kwargs)
    return wrapper


_WRAPPERS.update({name: _of_lists(name) for name in ("dot", "vdot", "inner", "outer")})
_LINALG = {name: getattr(np.linalg, name) for name in (
    "norm", "det", "slogdet", "inv", "solve", "cholesky", "eigh", "eigvalsh")}
_LINALG_WRAPPERS = {name: _of_a_list(name, np.linalg) for name in _LINALG}


@contextlib.contextmanager
def numpy_constructors():
    """The wrappers installed in the numpy module while this (and any other) trace runs."""
    global _tracing
    with _lock:
        if _tracing == 0:
            for name, wrapper in _WRAPPERS.items():
                setattr(np, name, wrapper)
            for name, wrapper in _LINALG_WRAPPERS.items():
                setattr(np.linalg, name, wrapper)
            subscript.install()  # (ndarray's indexing takes traced indices: self.C[X])
        _tracing += 1
    try:
        yield
    finally:
        with _lock:
            _tracing -= 1
            if _tracing == 0:
                for name, original in _ORIGINAL.items():
                    setattr(np, name, original)
                for name, original in _LINALG.items():
                    setattr(np.linalg, name, original)
                subscript.remove()


def _axis_concatenate(concatenator, items):
    """np.r_[items] / np.c_[items] (`concatenator`, an AxisConcatenator) holding traced values,
    as NumPy builds it: a slice is NumPy's range, each other item an array of at least `ndmin`
    dimensions (1-d ones turned by `trans1d`: np.c_ makes them columns), Python numbers kept
    from promoting, then one concatenate along `axis`."""
    axis, ndmin, trans1d = concatenator.axis, concatenator.ndmin, concatenator.trans1d
    parts, dtypes = [], []
    for item in items:
        if isinstance(item, str):
            raise UnsupportedOpError(
                f"np.r_/np.c_ with the directive {item!r} among traced values is not "
                "supported: write it with np.concatenate, np.stack or np.reshape")
        if isinstance(item, slice):  # (a range: NumPy's own, already shaped)
            part = concatenator[item]
            parts.append(part)
            dtypes.append(part.dtype)
            continue
        if type(item) in np.ScalarType:  # (a Python number does not promote the arrays)
            parts.append(item)
            dtypes.append(item)
            continue
        part = _literal(item) if _holds_value(item) else _ORIGINAL["asarray"](item)
        dims = part.ndim
        if dims < ndmin:
            part = (fn.reshape if isinstance(part, Value) else np.reshape)(
                part, (1,) * (ndmin - dims) + part.shape)
            if trans1d != -1:
                k1, k2 = trans1d + (ndmin - dims + 1 if trans1d < 0 else 0), ndmin - dims
                axes = list(range(ndmin))
                part = (fn.transpose if isinstance(part, Value) else np.transpose)(
                    part, axes[:k1] + axes[k2:] + axes[k1:k2])
        parts.append(part)
        dtypes.append(part.dtype)
    dtype = np.result_type(*dtypes)
    like = first_value(list(items))
    values = []
    for part in parts:
        if type(part) in np.ScalarType:  # (NumPy's: a Python number must fit the result)
            fn.check_scalars_into(part, dtype, "np.r_/np.c_")
        value = fn.astype(fn.as_value(np.asarray(part) if not isinstance(part, Value) else part,
                                      like), dtype)
        if value.ndim < ndmin:
            value = fn.reshape(value, (1,) * (ndmin - value.ndim) + value.shape)
        values.append(value)
    return fn.concatenate(values, axis)


_concatenate_traced = traced(_axis_concatenate, graph_of=_graph_of)


class _Concatenator:
    """np.r_ or np.c_ while a trace runs: NumPy's own for items without a traced value."""

    def __init__(self, original):
        self.original = original

    def __getitem__(self, key):
        items = key if isinstance(key, tuple) else (key,)
        if _applies(list(items)):
            return _concatenate_traced(self.original, items)
        return self.original[key]

    def __len__(self):
        return len(self.original)

    def __getattr__(self, name):
        return getattr(self.original, name)


for _name in ("r_", "c_"):
    _ORIGINAL[_name] = getattr(np, _name)
    _WRAPPERS[_name] = _Concatenator(_ORIGINAL[_name])
