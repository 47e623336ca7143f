"""NumPy arrays the traced function makes and then stores traced values into.

`out = np.zeros((n, t)); out[:, 0] = np.tanh(x[:, 0])`, `acc = np.zeros(d); acc += x`: the
array is NumPy's, and a NumPy array cannot hold a traced value. While a trace runs, np.zeros,
np.ones, np.empty, np.full and their *_like of NumPy arrays, called from the user's own code,
make a `Fresh` array: NumPy's array in every way until a traced value is stored into it. Then,
if nothing but the user's local names holds it (no list, attribute, view or other frame: the
array's reference count, measured against a probe of the same statement, says so), those names
are bound to a traced copy of it with the store made (surface.py's item assignment), which is
NumPy's answer, for nothing else can see the old array. Otherwise the store is refused as
before. `acc += x` needs no names bound (Python binds the result): the count alone.

Reference counts of the same statement differ between Python versions, so each kind of store is
measured once by running it on a probe (`_baseline`); Pythons from 3.14 on read some locals
without a reference (LOAD_FAST_BORROW), which a probe's statement may not share, so there
nothing is accepted."""
from __future__ import annotations

import ctypes
import inspect
import sys
import types
import warnings

import numpy as np

from .ir import Value

# (3.14's LOAD_FAST_BORROW takes no reference; a free-threaded build's counts are per thread)
_SUPPORTED = sys.version_info < (3, 14) and getattr(sys, "_is_gil_enabled", lambda: True)()
_PROBE = object()  # the value the probes store: a baseline is taken, nothing written
_BASELINES = {}  # "store" / "in_place" -> the reference count of a Fresh only one name holds


class Fresh(np.ndarray):
    """A NumPy array the traced function made (see the module's docstring)."""

    def __setitem__(self, index, value):
        refs = sys.getrefcount(self)  # (first: as the probe measures it)
        if value is _PROBE:
            _BASELINES["store"] = (refs - _held_here(self)
                                   - _local_names(self, sys._getframe(1))[1])
            return
        if _holds_traced(value) or _holds_traced(index):
            return _store(self, index, value, refs - _held_here(self), sys._getframe(1))
        np.ndarray.__setitem__(self, index, value)

    def __getitem__(self, index):
        refs = sys.getrefcount(self)
        if index is _PROBE:
            _BASELINES["subscript"] = (refs - _held_here(self)
                                       - _local_names(self, sys._getframe(1))[1])
            return np.zeros(1)  # (takes the probe's store)
        if _holds_traced(index):  # (np.eye(n)[y]: a gather from the array's values now)
            from .literals import first_value
            if _by_numpy_scalars(index):  # (buf[np.argmax(x)]: NumPy's view, as buf[2] is)
                traced = _stored_through_view(self, refs - _held_here(self), sys._getframe(1))
                if traced is not None:
                    return traced[index]
                out = _traced_copy(self, first_value(index))[index]
                out.graph.unfollowed.add(out.id)  # (a store through it would not reach self)
                return out
            return _traced_copy(self, first_value(index))[index]
        if _basic(index):  # (`out[i][j] = v`: a store into this view writes into the array)
            traced = _stored_through_view(self, refs - _held_here(self), sys._getframe(1))
            if traced is not None:
                return traced[index]
        out = np.ndarray.__getitem__(self, index)
        return out.view(np.ndarray) if isinstance(out, Fresh) else out

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        refs = sys.getrefcount(self)
        if any(x is _PROBE for x in inputs):
            _BASELINES["at" if method == "at" else "in_place"] = (
                refs - _held_here(self) - _local_names(self, sys._getframe(1))[1])
            return None if method == "at" else self
        traced = any(map(_holds_traced, inputs))
        if traced and method == "at" and inputs[0] is self:  # (np.add.at(dW, x, dout): a
            # store, into the traced copy the names are bound to)
            return _written_by(self, getattr(ufunc, "at"), inputs, kwargs,
                               refs - _held_here(self), sys._getframe(1), "at")
        given = kwargs.get("out")
        if traced and given is not None and len(given) == 1 and given[0] is self and (
                method == "__call__"):  # (not `== (self,)`: tuples compare arrays elementwise)
            return _in_place(self, ufunc, inputs, kwargs, refs - _held_here(self),
                             sys._getframe(1))
        kwargs = {k: _plain(v, traced) for k, v in kwargs.items()}
        with warnings.catch_warnings(record=True) as caught:  # (NumPy's RuntimeWarnings, a
            warnings.simplefilter("always")  # log of 0, at the user's line, not this one)
            out = getattr(ufunc, method)(*(_plain(x, traced) for x in inputs), **kwargs)
        if caught:
            from .trace import warn_at_user_line
            for found in caught:
                warn_at_user_line(found.message)
        if given is not None and not traced:  # (NumPy returns out= itself: `k += 1` keeps k)
            return given[0] if len(given) == 1 else given
        return out

    def fill(self, value):
        refs = sys.getrefcount(self)
        if value is _PROBE:
            _BASELINES["method"] = (refs - _held_here(self)
                                    - _local_names(self, sys._getframe(1))[1])
            return None
        if _holds_traced(value):  # (x.fill(v) with v traced: a store into every element)
            return _written_by(self, lambda a, v: a.fill(v), (self, value), {},
                               refs - _held_here(self), sys._getframe(1), "method")
        return np.ndarray.fill(self, value)

    def put(self, ind, v, mode="raise"):
        refs = sys.getrefcount(self)
        if _holds_traced(v) or _holds_traced(ind):
            return _written_by(self, lambda a, i, w: a.put(i, w, mode), (self, ind, v), {},
                               refs - _held_here(self), sys._getframe(1), "method")
        return np.ndarray.put(self, ind, v, mode)

    def __array_function__(self, func, types, args, kwargs):
        refs = sys.getrefcount(self)
        if args and args[0] is self and func in _WRITERS:  # (np.copyto(buf, v): a store)
            if any(a is _PROBE for a in args[1:]):
                _BASELINES["call"] = (refs - _held_here(self)
                                      - _local_names(self, sys._getframe(1))[1])
                return None
            if _holds_traced(args[1:]) or _holds_traced(kwargs):
                return _written_by(self, func, args, kwargs, refs - _held_here(self),
                                   sys._getframe(1))
        traced = _holds_traced(args) or _holds_traced(kwargs)
        return func(*_plain(args, traced), **_plain(kwargs, traced))


def _holds_traced(obj):
    from .selection import Selection  # (selection.py imports ops/fn.py, which imports this)
    if isinstance(obj, (Value, Selection)):
        return True
    if type(obj) in (list, tuple):
        return any(map(_holds_traced, obj))
    if type(obj) is dict:
        return any(map(_holds_traced, obj.values()))
    return False


def _plain(obj, copy):
    """obj with its Fresh arrays as plain ones: copies where a traced value will read them (its
    constant must not hold the Fresh array, whose count a later store reads), views otherwise."""
    if isinstance(obj, Fresh):
        return plain_copy(obj) if copy else obj.view(np.ndarray)
    if type(obj) in (list, tuple):
        return type(obj)(_plain(o, copy) for o in obj)
    if type(obj) is dict:
        return {k: _plain(v, copy) for k, v in obj.items()}
    return obj


def views_fresh(x):
    """Whether the NumPy array x is a view of a Fresh array (`out[t - 1]`)."""
    while isinstance(x, np.ndarray) and x.base is not None:
        if isinstance(x.base, Fresh):
            return True
        x = x.base
    return False


def plain_copy(fresh):
    """A NumPy array (no Fresh, no view of one) of fresh's values."""
    return np.ndarray.copy(fresh).view(np.ndarray)


def make(shape, dtype, order, fill):
    """A Fresh array of `shape`, `dtype` and memory `order` ("C" or "F") filled with `fill`
    (an array or a number: NumPy's values)."""
    out = np.ndarray.__new__(Fresh, shape, dtype, order=order)
    out.view(np.ndarray)[...] = fill
    return out


def _baseline(kind):
    if kind not in _BASELINES:
        _probe_store()
        _probe_in_place()
        _probe_subscript()
        _probe_call()
        _probe_method()
        _probe_at()
    return _BASELINES[kind]


def _probe_store():
    a = make((1,), np.float64, "C", 0.0)
    a[0] = _PROBE  # (the statement a user's `out[i] = v` is)


def _probe_subscript():
    a = make((1, 1), np.float64, "C", 0.0)
    a[_PROBE][0] = 0.0  # (the statement a user's `out[i][j] = v` is)


def _probe_call():
    a = make((2, 2), np.float64, "C", 0.0)
    np.copyto(a, _PROBE)  # (the statement a user's `np.copyto(buf, v)` is)


# NumPy's functions that write into their first argument (gradc/functions/writes.py)
_WRITERS = frozenset({np.copyto, np.fill_diagonal, np.put, np.put_along_axis})


def _written_by(fresh, func, args, kwargs, refs, frame, kind="call"):
    """`func(fresh, *args[1:], **kwargs)` that writes traced values into fresh: np.copyto
    (np.fill_diagonal, np.put, np.put_along_axis), `fresh.fill(v)` and `fresh.put(i, v)` (kind
    "method"), `fresh[i] = v` (kind "store"). Where only the function's local names (and what
    they hold, _held_in_locals) hold fresh, they are bound to a traced copy it writes into."""
    from .literals import first_value
    names = _user_names(fresh, refs, kind, frame)
    if names is None:
        raise _refused(frame, _HELD_ELSEWHERE)
    traced = _traced_copy(fresh, first_value(list(args[1:]) + list(kwargs.values())))
    _bind(frame, names, traced)
    return func(traced, *args[1:], **kwargs)


def _probe_at():
    a = make((1,), np.float64, "C", 0.0)
    np.add.at(a, 0, _PROBE)  # (the statement a user's `np.add.at(dW, x, dout)` is)


def _probe_method():
    a = make((2,), np.float64, "C", 0.0)
    a.fill(_PROBE)  # (the statement a user's `buf.fill(v)` is)


def _probe_in_place():
    a = make((1,), np.float64, "C", 0.0)
    a += _PROBE  # (the statement a user's `acc += x` is)


def _refused(frame, why):
    from .errors import UnsupportedOpError
    from .surface import _STORE_INTO_NUMPY
    from .trace import user_source
    return UnsupportedOpError(_STORE_INTO_NUMPY + why, source=user_source(frame))


_HELD_ELSEWHERE = (
    ". (This array was made by the function, but something besides its local names holds it, "
    "which a store must reach too: a list, an attribute, a view of it, another function's "
    "variable; store before sharing it)")


def _user_names(fresh, refs, kind, frame):
    """The names of `frame`'s function bound to `fresh` where nothing else holds it, or None.
    `refs`: fresh's reference count at the statement, taken as the probe of that statement took
    it; and the statement must be that one (`out.__setitem__(i, v)` holds one reference fewer:
    a list holding `out` went unseen)."""
    from .trace import _frame_kind, instruction_now, in_place_operator, subscript_stored_into
    statement = (in_place_operator(frame) if kind == "in_place"
                 else subscript_stored_into(frame) if kind == "subscript"
                 else (instruction_now(frame) or "").startswith("CALL")
                 if kind in ("call", "method", "at")
                 else instruction_now(frame) == "STORE_SUBSCR")
    if (not _SUPPORTED or fresh.base is not None or not statement
            or not frame.f_code.co_flags & inspect.CO_OPTIMIZED  # (a function's frame)
            or _frame_kind(frame.f_code.co_filename) != "user"):
        return None
    names, stale = _local_names(fresh, frame)
    held = refs - stale
    if kind in ("store", "subscript", "call", "method", "at"):
        names += _held_in_locals(fresh, frame)
        return names if names and held == _baseline(kind) + len(names) - 1 else None
    return names if held == _baseline(kind) else None  # (the one name Python binds anew)


def _held_in_locals(fresh, frame):
    """(container, key) of each entry of a dict or list, or attribute of an object, that the
    frame's local names hold and that holds fresh (`self.states = np.zeros(...)`, `xs[t] =
    np.zeros(...)`): one level down, each one reference. Bound to the traced copy with the
    names; an object or dict from outside the function that takes a traced value so is refused
    when the trace ends, as any traced value stored outside."""
    found, seen, local = [], set(), frame.f_locals
    for value in list(local.values()):
        if value is local:  # (`names = locals()`: the frame's own dict, counted apart)
            continue
        if type(value) is dict:
            entries = value
        elif type(value) is list:
            entries = dict(enumerate(value))
        elif isinstance(value, (types.ModuleType, type, types.FunctionType, np.ndarray)):
            continue
        else:
            try:
                entries = object.__getattribute__(value, "__dict__")
            except Exception:  # noqa: BLE001 - (__slots__, or a proxy that refuses)
                continue
            if type(entries) is not dict:
                continue
            value = entries
        if id(value) in seen:
            continue
        seen.add(id(value))
        found += [(value, key) for key, item in list(entries.items()) if item is fresh]
    return found


def _held_here(fresh):
    """References to fresh in the dict of locals a tracer (a debugger's) made of the calling
    method's own frame: they count for no holder either (see _local_names). Taken only where a
    count is used: NumPy's own stores into the array pay nothing for it."""
    return _local_names(fresh, sys._getframe(1))[1]


def _local_names(fresh, frame):
    """(names of `frame`'s function bound to fresh, how many references to fresh the frame's
    dict of locals held before this read refreshed it). Before 3.13 a frame keeps the dict
    f_locals made, and a trace's profile hook (or a debugger's) makes one at every call or
    line: what it held counts for no holder, in the probes as in the user's code."""
    before = sys.getrefcount(fresh)
    names = [name for name, v in frame.f_locals.items() if v is fresh]
    stale = before + len(names) - sys.getrefcount(fresh) if sys.version_info < (3, 13) else 0
    return names, stale


def _bind(frame, names, value):
    """Bind `names` of `frame`'s function to `value` (before 3.13 through the dict of locals,
    which stays the frame's: the user's own locals() is that dict); (container, key) entries of
    `names` (_held_in_locals) take it too."""
    for container, key in [n for n in names if type(n) is tuple]:
        container[key] = value
    names = [n for n in names if type(n) is str]
    if not names:
        return
    if sys.version_info >= (3, 13):  # (f_locals writes through, PEP 667)
        for name in names:
            frame.f_locals[name] = value
        return
    local = frame.f_locals
    for name in names:
        local[name] = value
    ctypes.pythonapi.PyFrame_LocalsToFast(ctypes.py_object(frame), ctypes.c_int(0))


def _traced_copy(fresh, like=None, graph=None):
    from .ops import fn
    from .trace import copy, note_zero_d_arrays
    return note_zero_d_arrays(copy(fn.as_value(plain_copy(fresh), like, graph)))  # (0-d: an
    # array)


def _basic(index):
    """Whether `index` is basic indexing (integers, slices, None, ...): a view in NumPy."""
    parts = index if type(index) is tuple else (index,)
    return all(k is None or k is Ellipsis or type(k) in (int, slice) or isinstance(k, np.integer)
               for k in parts)


def _by_numpy_scalars(index):
    """Whether `index` is basic but for traced NumPy integer scalars (np.argmax's): NumPy
    indexes by those as by ints, a view (surface.py _getitem)."""
    from .surface import _scalar_integer  # (it imports this module)
    parts = index if type(index) is tuple else (index,)
    return all(_scalar_integer(k) if isinstance(k, Value) else _basic(k) for k in parts)


def _stored_through_view(fresh, refs, frame):
    """`out[i][j] = v` (`out[i][j] += v`...): the view out[i] is written into by the same
    statement, which writes into out. Where only the function's local names hold out, they are
    bound to a traced copy of it, which this returns: the store is then made through the
    traced view (surface.py follows views by basic indexing). Else None: NumPy's view."""
    from .trace import current_graph
    graph = current_graph()
    names = None if graph is None else _user_names(fresh, refs, "subscript", frame)
    if names is None:
        return None
    traced = _traced_copy(fresh, graph=graph)
    _bind(frame, names, traced)
    return traced


def _store(fresh, index, value, refs, frame):
    """`fresh[index] = value` with a traced value or index (surface.py's item assignment)."""
    _written_by(fresh, lambda a, i, v: a.__setitem__(i, v), (fresh, index, value), {}, refs,
                frame, "store")


def _in_place(fresh, ufunc, inputs, kwargs, refs, frame):
    """`acc += x` (an in-place operator: acc is bound to what this returns) with x traced."""
    from .literals import first_value
    if set(kwargs) != {"out"} or _user_names(fresh, refs, "in_place", frame) is None:
        from .errors import UnsupportedOpError
        from .functions._args import no_out
        from .trace import user_source
        try:
            no_out(fresh.view(np.ndarray), ufunc.__name__)  # (its refusal, for a NumPy array)
        except UnsupportedOpError as e:
            raise UnsupportedOpError(e.args[0], source=user_source(frame)) from None
    traced = _traced_copy(fresh, first_value(list(inputs)))
    return ufunc(*(traced if x is fresh else x for x in inputs), out=traced)
