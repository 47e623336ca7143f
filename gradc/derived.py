"""What NumPy computes from an array outside the arguments while tracing: replayed as traced
operations where it meets a traced value.

capture.py reads an outside array (`self.W`) on every call where it meets a traced value. What the
code computes from one with NumPy alone first (`np.exp(self.log_std)`, a weight normalisation
`self.W / np.sqrt((self.W ** 2).sum())`) no trace sees: compiled in, it went stale when the
array changed, while a plain `self.W` beside it was read live. So while a compiled function traces,
each outside float array the walk finds where another value can be put (an object's attribute, a
list or dict entry, a global, a closure cell) is swapped for an `Outside` view of it (`Swaps`): an
ndarray of the same memory whose NumPy operations (ufuncs, functions, methods) compute as NumPy
does and note how (`Node`). Where such an array meets a traced value, fn.as_value `replay`s its
steps on the traced values of the arrays it came from: it is computed on every call. The arrays
are put back when the trace ends.

What cannot be replayed (a function gradc does not implement, an array changed in place after a
view of it was taken) and a Python decision on such an array (`if self.W.max() > 1:`,
`float(self.scale)`) are taken as NumPy takes them when traced; the arrays they came from are then
checked by contents on every call (`Swaps.specialized`): a change traces again. A change in place
of an outside array itself (`self.n += 1`, `self.W[0] = 0`) would happen once, when traced, not on
every call: refused.
"""
from __future__ import annotations

import threading
import types

import numpy as np

from .errors import GradcError, UnsupportedOpError
from .ir import Value

_local = threading.local()


def active():
    """The Swaps of the trace running on this thread, or None."""
    return getattr(_local, "swaps", None)


class Node:
    """How an Outside array was made: it is an outside array the walk found (`source`), or
    `apply(*args, **kwargs)` made it (the Nodes of the Outside arrays among the arguments in
    their place), or code that cannot be replayed did (`apply` None). `sources`: the outside
    arrays it came from, by id; `epoch`: how many in-place changes came before it."""

    __slots__ = ("source", "apply", "args", "kwargs", "sources", "array", "swaps", "epoch")

    def __init__(self, swaps, array, sources, source=None, apply=None, args=(), kwargs=None):
        self.swaps, self.array, self.sources, self.source = swaps, array, sources, source
        self.apply, self.args, self.kwargs = apply, args, kwargs or {}
        self.epoch = len(swaps.changed)


class Outside(np.ndarray):
    """An outside array, or what NumPy computed from one, while a trace runs (see the module's
    docstring). Once the trace ended it is a plain array."""

    node: Node

    def __array_finalize__(self, parent):  # (made by NumPy's own code: nothing to replay)
        node = getattr(parent, "node", None)
        if node is not None:
            self.node = Node(node.swaps, self, node.sources)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if _holds_traced((inputs, kwargs)):
            return NotImplemented  # (the traced value's __array_ufunc__ replays this one)
        outs = kwargs.pop("out", None)
        outs = outs if isinstance(outs, tuple) else () if outs is None else (outs,)
        changed = outs + (inputs[:1] if method == "at" else ())
        for x in changed:
            _refuse_outside_change(x, f"np.{ufunc.__name__} into it")
        result = getattr(ufunc, method)(*_plain(inputs), **_plain(kwargs),
                                        **({"out": _plain(outs)} if outs else {}))
        node_of = _recorder(lambda *a, **k: getattr(ufunc, method)(*a, **k), inputs, kwargs)
        if not outs:
            return _wrap(result, node_of)
        for i, x in enumerate(changed):  # (an array computed here, changed: its new steps)
            if isinstance(x, Outside):
                x.node.swaps.changed.append(x.view(np.ndarray))
                x.node = node_of(x, i if len(outs) > 1 else None) if any(
                    x is o for o in outs) and method != "at" else Node(
                    x.node.swaps, x, _sources((inputs, kwargs)))
        return outs[0] if len(outs) == 1 else outs

    def __array_function__(self, func, types_, args, kwargs):
        traced = next((x for x in _leaves((args, kwargs)) if isinstance(x, Value)), None)
        if traced is not None:  # (np.take(self.table, ids) dispatches on the table alone)
            return func(*_traced(args, traced.graph), **_traced(kwargs, traced.graph))
        for x in ([args[0]] if func in _WRITES_FIRST else []) + [kwargs.get("out")]:
            _refuse_outside_change(x, f"np.{func.__name__}")
        result = func(*_plain(args), **_plain(kwargs))
        return _wrap(result, _recorder(func, args, kwargs))

    def __setitem__(self, index, value):
        _refuse_outside_change(self, "item assignment")
        np.ndarray.__setitem__(self.view(np.ndarray), _plain(index), _plain(value))
        if _open(self):  # (the views taken before now see other values: not replayed)
            self.node.swaps.changed.append(self.view(np.ndarray))
            self.node = Node(self.node.swaps, self, _sources((self, index, value)))

    def __iter__(self):  # (rows, as NumPy's, each replayed as self[i])
        for i in range(len(self)):
            yield self[i]

    def __reduce__(self):  # (pickled or copied: the plain array)
        return self.view(np.ndarray).__reduce__()

    def __repr__(self):  # (printed in traced code: as NumPy prints the array)
        return repr(self.view(np.ndarray))

    def __str__(self):
        return str(self.view(np.ndarray))


def constructed(name, args, kwargs):
    """np.asarray(x), np.array(x) and their kin (gradc/literals.py's wrappers, installed while
    tracing) of an Outside array x: NumPy's own make a plain array of it, which would drop what
    it was computed from. `x` itself where NumPy's makes no copy, else a noted step."""
    original = _ORIGINALS[name]
    obj = args[0] if args else next(iter(kwargs.values()))
    result = original(*_plain(args), **_plain(kwargs))
    if (isinstance(result, np.ndarray) and result.shape == obj.shape
            and result.dtype == obj.dtype and result.strides == obj.strides
            and result.__array_interface__["data"][0] == obj.__array_interface__["data"][0]):
        return obj  # (the same memory: NumPy made no copy)
    return _wrap(result, _recorder(lambda *a, **k: getattr(np, name)(*a, **k), args, kwargs))


_ORIGINALS = {name: getattr(np, name) for name in ("array", "asarray", "asanyarray",
                                                    "ascontiguousarray", "asfortranarray")}


def _method(name):
    """An ndarray method on an Outside array, noted to be replayed as the same method of the
    traced value."""
    plain = getattr(np.ndarray, name)

    def method(self, *args, **kwargs):
        result = plain(self.view(np.ndarray), *_plain(args), **_plain(kwargs))
        return _wrap(result, _recorder(lambda x, *a, **k: getattr(x, name)(*a, **k),
                                       (self,) + args, kwargs))
    method.__name__ = name
    return method


def _attribute(name):
    """A computed ndarray attribute (x.T, x.mT), replayed as the traced value's."""
    def get(self):
        return _wrap(getattr(self.view(np.ndarray), name),
                     _recorder(lambda x: getattr(x, name), (self,), {}))
    return property(get)


def _decision(name):
    """What turns an array into a Python value (bool(), float(), .item(), an index): taken as
    NumPy takes it, and the arrays it came from are checked by contents on every call."""
    plain = getattr(np.ndarray, name)

    def decide(self, *args, **kwargs):
        swaps = active()
        if swaps is not None and hasattr(self, "node"):
            swaps.specialized.update(self.node.sources)
        return plain(self.view(np.ndarray), *args, **kwargs)
    decide.__name__ = name
    return decide


# the ndarray methods a traced value has (gradc/surface.py) that NumPy does not run through
# __array_ufunc__ or __array_function__ on a subclass, and the in-place ones
_METHODS = ("__getitem__", "reshape", "transpose", "swapaxes", "squeeze", "flatten", "ravel",
            "astype", "copy", "__copy__", "__deepcopy__", "dot", "repeat", "diagonal", "take",
            "round", "clip", "conj", "conjugate", "sum", "mean", "max", "min",
            "any", "all", "var", "std", "prod", "cumsum", "cumprod", "argmax", "argmin",
            "argsort", "trace")
_IN_PLACE = ("fill", "sort", "put", "partition", "itemset", "resize")
_DECISIONS = ("__bool__", "__float__", "__int__", "__index__", "__complex__", "item", "tolist")
for _name in _METHODS:
    setattr(Outside, _name, _method(_name))
for _name in ("T", "mT", "real", "imag"):
    setattr(Outside, _name, _attribute(_name))
for _name in _DECISIONS:
    setattr(Outside, _name, _decision(_name))
for _name in _IN_PLACE:
    if hasattr(np.ndarray, _name):
        def _in_place(self, *args, _plain_method=getattr(np.ndarray, _name), **kwargs):
            _refuse_outside_change(self, f".{_plain_method.__name__}()")
            if _open(self):
                self.node.swaps.changed.append(self.view(np.ndarray))
                self.node = Node(self.node.swaps, self, self.node.sources)
            return _plain_method(self.view(np.ndarray), *_plain(args), **_plain(kwargs))
        setattr(Outside, _name, _in_place)
# (functions that write into their first argument)
_WRITES_FIRST = frozenset({np.copyto, np.put, np.place, np.putmask, np.fill_diagonal,
                           np.put_along_axis})


def _open(x):
    return isinstance(x, Outside) and hasattr(x, "node") and x.node.swaps.open


def _holds_traced(tree):
    return any(isinstance(x, Value) for x in _leaves(tree))


def _leaves(tree):
    if isinstance(tree, (tuple, list)):
        for t in tree:
            yield from _leaves(t)
    elif isinstance(tree, dict):
        for t in tree.values():
            yield from _leaves(t)
    elif isinstance(tree, slice):
        yield from _leaves((tree.start, tree.stop, tree.step))
    else:
        yield tree


def _plain(tree):
    """`tree` with its Outside arrays as plain ndarrays of the same memory."""
    if isinstance(tree, Outside):
        return tree.view(np.ndarray)
    if type(tree) in (tuple, list):
        return type(tree)(_plain(t) for t in tree)
    if type(tree) is dict:
        return {k: _plain(t) for k, t in tree.items()}
    return tree


def _traced(tree, graph):
    """`tree` with its Outside arrays as the traced values they replay to in `graph`."""
    from .ops import fn
    if isinstance(tree, Outside):
        return fn.as_value(tree, graph=graph)
    if type(tree) in (tuple, list):
        return type(tree)(_traced(t, graph) for t in tree)
    if type(tree) is dict:
        return {k: _traced(t, graph) for k, t in tree.items()}
    return tree


def _nodes(tree):
    """`tree` with its Outside arrays replaced by their Nodes (what they are now)."""
    if isinstance(tree, Outside):
        return tree.node
    if type(tree) in (tuple, list):
        return type(tree)(_nodes(t) for t in tree)
    if type(tree) is dict:
        return {k: _nodes(t) for k, t in tree.items()}
    if type(tree) is slice:
        return slice(*_nodes((tree.start, tree.stop, tree.step)))
    return tree


def _sources(tree):
    sources = {}
    for x in _leaves(tree):
        if isinstance(x, Outside) and hasattr(x, "node"):
            sources.update(x.node.sources)
    return sources


def _recorder(apply, args, kwargs):
    """Makes the Node of each result of `apply(*args, **kwargs)`, or None once the trace of
    the Outside arrays among them ended."""
    swaps = next((x.node.swaps for x in _leaves((args, kwargs)) if _open(x)), None)
    if swaps is None:
        return None
    step = Node(swaps, None, _sources((args, kwargs)), apply=apply, args=_nodes(args),
                kwargs=_nodes(kwargs))

    def node_of(array, index=None):
        if index is None:
            node = Node(swaps, array, step.sources, apply=step.apply, args=step.args,
                        kwargs=step.kwargs)
        else:  # (one result of several: np.modf, np.linalg.svd, np.split)
            node = Node(swaps, array, step.sources, apply=lambda results: results[index],
                        args=(step,))
        return node
    return node_of


def _wrap(result, node_of):
    """Results as Outside arrays noting their steps (a number NumPy returned as a 0-d array),
    or as they are once the trace ended."""
    if node_of is None:
        return result
    if isinstance(result, (tuple, list)) and any(isinstance(r, (np.ndarray, np.generic))
                                                 for r in result):
        wrapped = [_wrap_one(r, lambda a, i=i: node_of(a, i)) for i, r in enumerate(result)]
        return (type(result)(*wrapped) if hasattr(result, "_fields")  # (a namedtuple)
                else type(result)(wrapped))
    return _wrap_one(result, node_of)


def _wrap_one(result, node_of):
    if isinstance(result, np.generic) and result.dtype.kind in "biufc":
        result = _ORIGINALS["asarray"](result)
    if type(result) is not np.ndarray or result.dtype.kind not in "biufc":
        return result
    out = result.view(Outside)
    out.node = node_of(out)
    return out


def _refuse_outside_change(x, how):
    """An outside array (or a view of its memory) changed in place by the traced code would
    change once, when traced: NumPy code changes it on every call."""
    if not _open(x):
        return
    swaps, memory = x.node.swaps, _owner(x)
    name = swaps.names.get(id(memory))
    if name is not None:
        from .trace import user_source
        raise UnsupportedOpError(
            f"the traced code changes `{name}`, an array outside its arguments, in place "
            f"({how}): the function's Python runs once, when traced, so the compiled function "
            "would not change it again. Compute the new value and return it (store it after "
            "the call), or pass the array as an argument and return its update",
            source=user_source())


def _owner(x):
    while isinstance(x.base, np.ndarray):
        x = x.base
    return x


class Swaps:
    """The outside arrays swapped for Outside views while one compiled function traces
    (frozen.Watch does it as its walk finds them; a context manager that puts them back)."""

    def __init__(self):
        self.open = True
        self.views = {}  # id(original) -> its Outside view
        self.names = {}  # id(original) -> its name in messages
        self.slots = []  # (put, read, view, original): where a view was put
        self.specialized = {}  # id -> outside array whose contents the trace decided on
        self.changed = []  # arrays computed while tracing and changed in place since
        self.replayed = {}  # id(Node) -> (Node, the traced value it replayed to)

    def __enter__(self):
        self.outer = active()
        _local.swaps = self
        return self

    def __exit__(self, *exc):
        self.open = False
        for put, read, view, original in reversed(self.slots):
            try:
                if read() is view:
                    put(original)
            except Exception:  # noqa: BLE001 - (gone meanwhile: nothing to put back)
                pass
        self.slots = []
        _local.swaps = self.outer
        return False

    def swap(self, original, name, path):
        """Put an Outside view of `original` where `path` (outside.Path) found it, if that place
        can hold another value."""
        place = _place(path)
        if place is None:
            return
        put, read = place
        view = self.views.get(id(original))
        if view is None:
            view = original.view(Outside)
            view.node = Node(self, view, {id(original): original}, source=original)
            self.views[id(original)] = view
            self.names[id(original)] = name
        try:
            if read() is not original:
                return
            put(view)
        except Exception:  # noqa: BLE001 - (a place that refuses: read as before)
            return
        self.slots.append((put, read, view, original))


def _place(path):
    """(put, read) of the place `path`'s last step reads, where another value can be put
    there without running the user's code (an object's own __dict__ entry, a list's or dict's
    entry, a global, a closure cell), else None."""
    if not path.steps:
        return None
    kind, key = path.steps[-1]
    try:
        holder = path.root
        for k, s in path.steps[:-1]:
            holder = (getattr(holder, s) if k == "attr" else holder[s] if k in ("item", "global")
                      else None)
            if holder is None:
                return None
    except Exception:  # noqa: BLE001 - (gone: nothing to swap)
        return None
    if kind == "global" and type(holder) is dict:
        kind = "item"
    if kind == "attr" and isinstance(holder, types.CellType) and key == "cell_contents":
        return (lambda v: setattr(holder, "cell_contents", v),
                lambda: holder.cell_contents)
    if kind == "attr" and type(getattr(holder, "__dict__", None)) is dict and key in (
            holder.__dict__) and not isinstance(holder, (type, types.FunctionType)):
        entries = holder.__dict__  # (its own entry: no __setattr__ of the user's runs)
        return (lambda v: dict.__setitem__(entries, key, v), lambda: entries[key])
    if kind == "item" and type(holder) in (list, dict):
        setter = list.__setitem__ if type(holder) is list else dict.__setitem__
        return (lambda v: setter(holder, key, v), lambda: holder[key])
    return None


def replay(graph, x, swaps):
    """The traced value of the Outside array `x` in `graph`: its steps on the traced values of
    the outside arrays it came from (captured: read on every call). None where they cannot be
    replayed: `x` is then compiled in, and the arrays it came from are checked by contents."""
    try:
        return _replay(graph, x.node, swaps)
    except (GradcError, _NotReplayed, TypeError, ValueError, IndexError, NotImplementedError):
        swaps.specialized.update(x.node.sources)
        return None


class _NotReplayed(Exception):
    pass


def _replay(graph, node, swaps):
    done = swaps.replayed.get(id(node))
    if done is not None:
        return done[1]
    if node.array is not None and any(np.may_share_memory(node.array, c)
                                      for c in swaps.changed[node.epoch:]):
        raise _NotReplayed  # (changed in place after it was made)
    from .capture import captured
    if node.source is not None:
        value = captured(graph, node.source)
    elif node.apply is not None:
        args = _replayed(graph, node.args, swaps)
        kwargs = _replayed(graph, node.kwargs, swaps)
        value = node.apply(*args, **kwargs)
    else:  # (a view NumPy's own code made of an outside array: found by its memory)
        value = captured(graph, node.array.view(np.ndarray))
    if value is None:
        raise _NotReplayed
    swaps.replayed[id(node)] = (node, value)
    return value


def _replayed(graph, tree, swaps):
    if isinstance(tree, Node):
        return _replay(graph, tree, swaps)
    if type(tree) in (tuple, list):
        return type(tree)(_replayed(graph, t, swaps) for t in tree)
    if type(tree) is dict:
        return {k: _replayed(graph, t, swaps) for k, t in tree.items()}
    if type(tree) is slice:
        return slice(*_replayed(graph, (tree.start, tree.stop, tree.step), swaps))
    return tree
