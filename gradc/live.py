"""Outside arrays read live by NumPy's code too, in the trace after they changed.

A batch norm's `self.rm = 0.9 * self.rm + 0.1 * mu`, ML-From-Scratch's optimizers'
`self.w_updt = momentum * self.w_updt + (1 - momentum) * g`, a hand-written backward's
`1 - self.caches["A1"] ** 2` of caches the forward writes: NumPy alone computes `0.9 *
self.rm`, so when traced that product was compiled in (the probe, capture.read_by_numpy, found
it), and every call, finding the array written anew or changed, traced again.

When a signature is traced again after a call, the arrays the previous compile wrote back,
those whose contents changed since, and those read live before are, while the trace runs,
`Live` views of themselves: NumPy's ufuncs, functions and reductions on one, while a trace
runs, take it as the graph value that reads the array on every call (capture.captured), so
`0.9 * self.rm` is traced. The arrays are put back when the trace ends; nothing the user keeps
is a Live. Code that asks whether an object is NumPy's array by its type would see a Live:
such a trace is made again with fewer (asked_types, function.py).
"""
from __future__ import annotations

import contextlib
import copy
import gc
import threading
import types

import numpy as np


# what a Live answers as itself; any other attribute (a method: .copy(), .reshape(), .T) is its
# plain view's, as before: NumPy's own result, no Live leaking into what the code keeps
_OWN = frozenset({"base", "shape", "dtype", "ndim", "size", "strides", "itemsize", "nbytes",
                  "flags"})
# methods that are NumPy's functions of the array, with the same arguments (`self.rm.mean()`
# is np.mean(self.rm)): traced as those are (as NumPy's, they were compiled in, and every call
# traced again)
_FUNCTIONS = frozenset({"sum", "mean", "std", "var", "max", "min", "prod", "cumsum", "cumprod",
                        "dot", "clip", "round", "any", "all", "argmax", "argmin"})


class Live(np.ndarray):
    """A view of an outside array a trace reads live through NumPy's ufuncs and functions."""

    def __getattribute__(self, name):
        if name in _OWN or name.startswith("__"):
            return np.ndarray.__getattribute__(self, name)
        if name in _FUNCTIONS:
            return _Method(self, name)
        if name in _COPIES:  # (`self.prev = self.W.copy()`, `self.snap = self.W.astype(
            return _Copy(self, name)  # np.float32)`: a traced copy, written back)
        value = getattr(np.ndarray.view(self, np.ndarray), name)
        if callable(value):  # (a method: `.tolist()`, `.item()`, `.astype()`)
            return lambda *args, **kwargs: _noted(self, value(*args, **kwargs))
        return _noted(self, value)

    def __getitem__(self, index):
        return _noted(self, np.ndarray.view(self, np.ndarray)[index])

    def __float__(self):
        return float(_noted(self, np.ndarray.view(self, np.ndarray), True))

    def __int__(self):
        return int(_noted(self, np.ndarray.view(self, np.ndarray), True))

    def __index__(self):
        return _noted(self, np.ndarray.view(self, np.ndarray), True).__index__()

    def __bool__(self):
        return bool(_noted(self, np.ndarray.view(self, np.ndarray), True))

    def __iter__(self):
        return iter(_noted(self, np.ndarray.view(self, np.ndarray), True))

    def __copy__(self):  # (copy.copy(self.rm), copy.deepcopy: a traced copy, as .copy())
        return self.copy()

    def __deepcopy__(self, memo):
        return self.__copy__()

    def __reduce_ex__(self, protocol):  # (pickled, a checkpoint: NumPy's array)
        return np.ndarray.view(self, np.ndarray).__reduce_ex__(protocol)

    def __reduce__(self):
        return np.ndarray.view(self, np.ndarray).__reduce__()

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        inputs = tuple(read(x) for x in inputs)
        if "out" in kwargs:  # (`self.W -= lr * dW`: into the array itself, which the trace
            kwargs["out"] = tuple(array_of(x) for x in kwargs["out"])  # writes into after)
        return getattr(ufunc, method)(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        if func in _ITSELF_IF_FIT and len(args) == 1 and args[0] is self and not kwargs:
            plain = np.ndarray.view(self, np.ndarray)  # (np.atleast_2d(self.W) of a 2-d W:
            if func(plain) is plain:  # W itself, as NumPy's; a traced read would be a copy
                return self  # written back on every call)
        if func in _ABOUT_THE_ARRAY:  # (its dtype or shape: NumPy's answer, of its plain view;
            read_item = array_of  # a traced value has no np.result_type)
        else:
            read_item = read
        return func(*_read_all(args, read_item),
                    **dict(zip(kwargs, _read_all(kwargs.values(), read_item))))


# functions that give back the array itself where it fits already
_ITSELF_IF_FIT = frozenset({np.atleast_1d, np.atleast_2d, np.atleast_3d})


def _noted(live, result, values=False):
    """`result`, what the code got from a Live past NumPy's functions: where it is values or a
    copy (`b[0]`, `float(b)`, `.tolist()`, `.astype()`, `.flatten()`; not a view of it, `b.T`,
    `b[:, :2]`, which a traced operation reads live), Python may decide on it or NumPy compute
    from it, and the trace compile that in: the array is noted (read_plainly: its contents
    stay checked)."""
    read_plainly = getattr(_local, "read_plainly", None)
    if read_plainly is not None and (
            values or not isinstance(result, np.ndarray) or result.ndim == 0
            or not np.shares_memory(result, np.ndarray.view(live, np.ndarray))):
        read_plainly.add(id(array_of(live)))
    return result


# methods that copy the array (NumPy's array, compiled in, where the code keeps it: stale
# once the program updated the array in place; traced, the copy is made on every call)
_COPIES = frozenset({"copy", "astype", "flatten"})


class _Copy:
    """`live.copy`, `live.astype`, `live.flatten`, copy.copy(live): the traced value's method,
    where the array reads as one (read); else NumPy's, its values noted."""
    __slots__ = ("array", "name")

    def __init__(self, array, name):
        self.array, self.name = array, name

    def __call__(self, *args, **kwargs):
        from .ir import Value
        dtype = args[0] if args else kwargs.get("dtype")
        if (self.name == "astype" and kwargs.get("copy", True) is False and dtype is not None
                and np.dtype(dtype) == self.array.dtype):  # (`W.astype(np.float64,
            return self.array  # copy=False)`: W itself, as NumPy's)
        value = read(self.array)
        if isinstance(value, Value):
            return getattr(value, self.name)(*args, **kwargs)
        plain = np.ndarray.view(self.array, np.ndarray)
        return getattr(_noted(self.array, plain, True), self.name)(*args, **kwargs)

    @property
    def __self__(self):  # (as a bound method's)
        return self.array


class _Method:
    """`live.mean`: np.mean of the array (traced); one the code keeps (`self.total = W.sum`)
    is given the array itself back with the others (live_outside)."""
    __slots__ = ("array", "name")

    def __init__(self, array, name):
        self.array, self.name = array, name

    def __call__(self, *args, **kwargs):
        return getattr(np, self.name)(self.array, *args, **kwargs)

    @property
    def __self__(self):  # (as a bound method's)
        return self.array


def read(x):
    """x as the trace reads it: a Live as the graph value of the array it stands for (read on
    every call), or as NumPy's plain array outside a trace and for a view taken of a Live
    (`self.rm[0]`: its values, as before)."""
    if not isinstance(x, Live):
        return x
    from .capture import captured  # (they build on this module's users)
    from .trace import current_graph
    real, graph = x.base, current_graph()
    if (graph is not None and type(real) is np.ndarray and real.shape == x.shape
            and real.strides == x.strides):
        value = captured(graph, real)
        if value is not None:
            return value
    return np.ndarray.view(x, np.ndarray)


def array_of(x):
    """A Live as the array it stands for (a plain view of a view taken of one)."""
    if not isinstance(x, Live):
        return x
    return x.base if type(x.base) is np.ndarray else np.ndarray.view(x, np.ndarray)


def without_views(tree):
    """A dict, list or tuple (nested) with each Live in it replaced by the array it stands for
    (what the trace assigned outside: `self.cache = (x, self.rm)`)."""
    if isinstance(tree, (dict, list)):
        copied = copy.copy(tree)  # (of its class: an OrderedDict, a defaultdict's default)
        for key in (list(tree) if isinstance(tree, dict) else range(len(tree))):
            copied[key] = without_views(tree[key])
        return copied
    if type(tree) is tuple or is_namedtuple(tree):
        items = [without_views(v) for v in tree]
        return type(tree)(*items) if is_namedtuple(tree) else tuple(items)
    return array_of(tree)


def is_namedtuple(x):
    """A namedtuple of the user's (not one of gradc's own records: outside.Outside...)."""
    return (isinstance(x, tuple) and hasattr(x, "_fields")
            and not (type(x).__module__ or "").startswith("gradc"))


def is_container(x):
    """A dict or list (of any class), a tuple or a user's namedtuple: what a write-back
    rebuilds (function.Made)."""
    return isinstance(x, (dict, list)) or type(x) is tuple or is_namedtuple(x)


def _read_all(items, read_item=read):
    return [type(x)(read_item(v) for v in x) if type(x) in (list, tuple) else read_item(x)
            for x in items]


# NumPy's functions of an array's dtype, shape or memory, not its values
_ABOUT_THE_ARRAY = frozenset({np.result_type, np.shape, np.ndim, np.size, np.iscomplexobj,
                              np.isrealobj, np.can_cast, np.min_scalar_type, np.may_share_memory,
                              np.shares_memory})


@contextlib.contextmanager
def live_outside(stale, changed, changed_too=True):
    """While a trace runs: the float arrays `stale` (the Compiled traced before, or None) wrote
    back after its calls, those whose contents `changed` since it was traced (paths, as
    capture.changed_contents gives them: a cache another function writes, `self.caches["A1"]`
    read by a hand-written backward; a `nonlocal` running mean), and those stale's own trace
    read live, where they are still there, as Live views (put back after). Yields a LiveTrace
    (the Paths of the last two kinds, kept as the new compile's `live_paths`, for the trace
    after it). `changed_too` False: those stale wrote back alone."""
    swapped, seen, paths, views_of = [], set(), [], {}
    _local.codes = set()  # (the user code the trace runs: note_codes)
    _local.read_plainly = set()  # (ids of the arrays read past NumPy's functions: _plain)
    places = _written_back(stale) + (_changed(stale, changed) if changed_too else [])
    for holder, key, path in places:
        now = _get(holder, key)
        if (id(holder), key) in seen or not (
                type(now) is np.ndarray and now.dtype.kind == "f" and now.size):
            continue
        seen.add((id(holder), key))
        view = views_of.setdefault(id(now), now.view(Live))  # (one view of one array: `if
        _set(holder, key, view)  # self.W_out is self.W_in`, tied weights, stays True)
        swapped.append((holder, key, now))
        if path is not None:
            paths.append((path, now))
    swapped += _other_holders(views_of, {id(h) for h, _, _ in swapped})
    try:
        yield LiveTrace(paths, bool(swapped))
    finally:
        _local.codes = _local.read_plainly = None
        for holder, _, _ in swapped:
            if isinstance(holder, _Tuple):  # (the tuple itself back: `self.cache`)
                _set(holder.holder, holder.key, holder.original)
        _put_back({id(views_of[id(array)]): (views_of[id(array)], array)
                   for _, _, array in swapped}, [(h, k) for h, k, _ in swapped])


class LiveTrace:
    """What live_outside made Live: `paths` [(Path, array)] (the changed and earlier live
    ones), `swapped` whether any array (those written back too)."""

    def __init__(self, paths, swapped):
        self.paths, self.swapped = paths, swapped

    def live_paths(self):
        return [path for path, _ in self.paths]

    def read_by_functions_alone(self):
        """The Paths of those the trace read through NumPy's functions alone (so far): their
        contents made no constant."""
        plainly = getattr(_local, "read_plainly", None) or set()
        return [path for path, array in self.paths if id(array) not in plainly]


def _other_holders(views_of, done):
    """The other dicts and lists holding the arrays made Live (`self.params[i]`, the same
    array as `self.W`: an optimizer's loop over the parameters read it there), given the same
    view: [(holder, key, array)] for the put-back."""
    arrays = {id(a): a for a in (view.base for view in views_of.values())}
    swapped = []
    for holder in gc.get_referrers(*arrays.values()) if arrays else ():
        if id(holder) in done or type(holder) not in (dict, list):
            continue
        for key in (list(holder) if type(holder) is dict else range(len(holder))):
            array = arrays.get(id(holder[key]))
            if array is not None and holder[key] is array:
                holder[key] = views_of[id(array)]
                swapped.append((holder, key, array))
    return swapped


_SLOT = object()  # (a place in an object's __slots__: (_SLOT, name))


def _put_back(views, places):
    """The arrays themselves where their Live views are (`views`: id -> (view, array)): at the
    places swapped, and wherever the code put a view meanwhile (`self.prev = self.rm`,
    `log["rm"] = self.rm`, a __slots__ attribute, a kept method `self.rm.sum`), as NumPy's
    code holds it."""
    for r in gc.get_referrers(*[view for view, _ in views.values()]) if views else ():
        if type(r) is dict:  # (one scan of the heap for all the views)
            places += [(r, k) for k in list(r)]
        elif type(r) is list:
            places += [(r, i) for i in range(len(r))]
        else:
            places += [(r, (_SLOT, name)) for name in slots_of(type(r))]
    for holder, key in places:
        if type(key) is tuple and key[:1] == (_SLOT,):
            now = getattr(holder, key[1], None)
            if id(now) in views and now is views[id(now)][0]:  # (object's: a frozen
                object.__setattr__(holder, key[1], views[id(now)][1])  # dataclass's too)
        elif id(_get(holder, key)) in views:
            _set(holder, key, views[id(_get(holder, key))][1])


def slots_of(cls):
    """The __slots__ names of a class and its bases."""
    names = []
    for c in getattr(cls, "__mro__", ()):
        slots = c.__dict__.get("__slots__", ())
        names += [slots] if isinstance(slots, str) else list(slots)
    return [n for n in names if n not in ("__dict__", "__weakref__")]


_local = threading.local()


def read_plainly():
    """The ids of the arrays whose Live views the running trace read past NumPy's functions
    (`b[0] > 1`, `float(b)`): what it compiled in of them must stay checked (trace.py)."""
    return getattr(_local, "read_plainly", None) or set()


def note_codes(codes):
    """The user code a trace ran (trace.py, at its end), while live_outside has Live views in
    place."""
    if getattr(_local, "codes", None) is not None:
        _local.codes.update(codes)


def asked_types():
    """Whether the user code the trace ran while Live views were in place asks whether an
    object is NumPy's array by its type (`type(x) is np.ndarray`, `x.__class__`): a Live
    answers otherwise, and the branch it took would be compiled in for good. That trace is
    made again without (function.py). (`type(layer) is Dropout` names no ndarray.)"""
    from .outside import code_names  # (it imports this module)
    for code in getattr(_local, "codes", None) or ():
        names = code_names(code)
        if "__class__" in names.attrs or "type" in names.globals and (
                "ndarray" in names.attrs | names.globals | {a for _, a in names.global_attrs}
                or "ndarray" in code.co_consts or names.attrs & _TYPE_NAMES):
            return True
    return False


_TYPE_NAMES = frozenset({"__name__", "__qualname__", "__module__"})  # (`type(x).__name__`)


def _written_back(stale):
    """(holder, key, None) of the arrays `stale` writes back (assigns; not into the caller's
    dict)."""
    return [(stored.container, stored.key, None)
            for stored in getattr(stale, "write_backs", ()) or ()
            if type(stored.value) is int and getattr(stored, "given", None) is None]


def _changed(stale, changed):
    """(holder, key, path) of the arrays `stale` checks by contents whose contents changed,
    and of those its trace read live (its `live_paths`): a dict's or list's entry, an
    attribute in an object's __dict__, a closure cell's (key None)."""
    if stale is None:
        return []
    paths = [g.path for g in stale.captures.guards
             if changed and (id(g.path.root), g.path.steps) in changed]
    places, tuples = [], {}
    for path in paths + list(getattr(stale, "live_paths", ())):
        place = _place(path, tuples)
        if place is not None:
            places.append(place + (path,))
    return places


def _place(path, tuples):
    """(holder, key) of the place `path` ends at, or None: a dict's or list's entry, an
    attribute in an object's __dict__, a closure cell's (key None), a tuple's entry (holder a
    _Tuple of the tuple's own place, one per place in `tuples`: `x, w, b = self.cache`)."""
    if not path.steps:
        return None
    kind, key = path.steps[-1]
    up = type(path)(path.root, path.steps[:-1])
    try:
        parent = up.follow()
    except Exception:  # noqa: BLE001 - (gone since)
        return None
    if kind == "cell":
        return parent, None
    if kind == "attr" and key in (getattr(parent, "__dict__", None) or ()):
        return vars(parent), key
    if kind in ("item", "global") and type(parent) in (dict, list):
        return parent, key
    if kind == "item" and (type(parent) is tuple or is_namedtuple(parent)):
        outer = _place(up, tuples)
        if outer is not None:
            holder = tuples.setdefault((id(outer[0]), outer[1]), _Tuple(*outer))
            return holder, key
    return None


class _Tuple:
    """The tuple at a place (holder, key), as the holder of its entries: setting one puts a
    copy with that entry there; the tuple itself is put back when the trace ends."""
    __slots__ = ("holder", "key", "original")

    def __init__(self, holder, key):
        self.holder, self.key = holder, key
        self.original = _get(holder, key)


def _get(holder, key):
    if isinstance(holder, _Tuple):
        items = _get(holder.holder, holder.key)
        return items[key] if isinstance(items, tuple) and 0 <= key < len(items) else None
    if isinstance(holder, types.CellType):
        try:
            return holder.cell_contents
        except ValueError:  # (empty)
            return None
    return entry_of(holder, key)


def _set(holder, key, value):
    if isinstance(holder, _Tuple):
        items = list(_get(holder.holder, holder.key))
        items[key] = value
        original = holder.original
        _set(holder.holder, holder.key, type(original)(*items) if is_namedtuple(original)
             else tuple(items))
    elif isinstance(holder, types.CellType):
        holder.cell_contents = value
    else:
        holder[key] = value


def entry_of(container, key):
    """What a dict, list or 1-d object array holds at key, or None."""
    if isinstance(container, dict):
        return container.get(key)
    sequence = type(container) is list or (type(container) is np.ndarray
                                           and container.dtype == object and container.ndim == 1)
    return container[key] if sequence and 0 <= key < len(container) else None
