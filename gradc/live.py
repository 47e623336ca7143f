"""Outside arrays the compiled function itself writes back, read live by NumPy's code too.

A batch norm's `self.rm = 0.9 * self.rm + 0.1 * mu`, ML-From-Scratch's optimizers'
`self.w_updt = momentum * self.w_updt + (1 - momentum) * g`: the compiled function writes the
new value there after each call (function.py's write-backs), and NumPy alone computes
`0.9 * self.rm` when traced, so that product was compiled in: the probe (capture.read_by_numpy)
found it, and every call, finding the array written anew, traced again.

When a signature is traced again after such a call, the arrays at the places the previous
compile wrote back are, while the trace runs, `Live` views of themselves: NumPy's ufuncs and
functions on one, while a trace runs, take it as the graph value that reads the array on every
call (capture.captured), so `0.9 * self.rm` is traced. The arrays are put back when the trace
ends; nothing the user keeps is a Live.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import types

import numpy as np


# what a Live answers as itself; any other attribute (a method: .copy(), .reshape(), .T) is its
# plain view's, as before: NumPy's own result, no Live leaking into what the code keeps
_OWN = frozenset({"base", "shape", "dtype", "ndim", "size", "strides", "itemsize", "nbytes",
                  "flags"})
# methods that are NumPy's functions of the array, with the same arguments (`self.rm.mean()`
# is np.mean(self.rm)): traced as those are (as NumPy's, they were compiled in, and every call
# traced again)
SCALARS = (np.float64, np.float32)  # NumPy's float scalars, read live as 0-d arrays
_FUNCTIONS = frozenset({"sum", "mean", "std", "var", "max", "min", "prod", "cumsum", "cumprod",
                        "dot", "clip", "round", "any", "all", "argmax", "argmin"})


class Live(np.ndarray):
    """A view of an outside array a trace reads live through NumPy's ufuncs and functions."""

    def __getattribute__(self, name):
        if name in _OWN or name.startswith("__"):
            return np.ndarray.__getattribute__(self, name)
        if name in _FUNCTIONS:
            return functools.partial(getattr(np, name), self)
        return getattr(np.ndarray.view(self, np.ndarray), name)

    def __getitem__(self, index):
        return np.ndarray.view(self, np.ndarray)[index]

    def __copy__(self):  # (copy.copy(self.rm), copy.deepcopy: NumPy's array, as .copy() is)
        return np.ndarray.view(self, np.ndarray).copy()

    def __deepcopy__(self, memo):
        return self.__copy__()

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        inputs = tuple(read(x) for x in inputs)
        if "out" in kwargs:  # (`self.W -= lr * dW`: into the array itself, which the trace
            kwargs["out"] = tuple(array_of(x) for x in kwargs["out"])  # writes into after)
        return getattr(ufunc, method)(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return func(*_read_all(args), **dict(zip(kwargs, _read_all(kwargs.values()))))


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
    if type(tree) in (dict, list, tuple):
        items = [without_views(v) for v in (tree.values() if type(tree) is dict else tree)]
        return dict(zip(tree, items)) if type(tree) is dict else type(tree)(items)
    return array_of(tree)


def _read_all(items):
    return [type(x)(read(v) for v in x) if type(x) in (list, tuple) else read(x)
            for x in items]


@contextlib.contextmanager
def live_outside(stale, changed):
    """While a trace runs: the float arrays `stale` (the Compiled traced before, or None) wrote
    back after its calls, those whose contents `changed` since it was traced (paths, as
    capture.changed_contents gives them: a cache another function writes, `self.caches["A1"]`
    read by a hand-written backward; a `nonlocal` running mean), and those stale's own trace
    read live, where they are still there, as Live views (put back after). Yields the Paths
    of the last two kinds made Live (kept as the new compile's `live_paths`, for the trace
    after it) and whether any array was made Live."""
    swapped, seen, paths = [], set(), []
    for holder, key, path in _written_back(stale) + _changed(stale, changed):
        if (id(holder), key) in seen:
            continue
        seen.add((id(holder), key))
        now = _get(holder, key)
        if type(now) in SCALARS:  # (`self.smooth = 0.9 * self.smooth + 0.1 * loss`: NumPy's
            view = np.asarray(now).view(Live)  # code makes a NumPy scalar, read as a 0-d
        elif type(now) is np.ndarray and now.dtype.kind == "f" and now.size:  # array:
            view = now.view(Live)  # capture.Captures._read)
        else:
            continue
        _set(holder, key, view)
        swapped.append((holder, key, now))
        if path is not None:
            paths.append(path)
    try:
        yield paths, bool(swapped)
    finally:
        views = {id(view): (view, array) for holder, key, array in swapped
                 for view in (_get(holder, key),) if isinstance(view, Live)}
        holders = [(h, k) for h, k, _ in swapped] + [  # (the view, and every name of it the
            (r, k) for view, _ in views.values() for r in gc.get_referrers(view)  # code bound,
            if type(r) in (dict, list)  # `self.prev = self.rm`, `log["rm"] = self.rm`: the
            for k in (r.keys() if type(r) is dict else range(len(r)))]  # array itself, as
        for holder, key in holders:  # NumPy's code holds it)
            if id(_get(holder, key)) in views:
                _set(holder, key, views[id(_get(holder, key))][1])


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
    places = []
    for path in paths + list(getattr(stale, "live_paths", ())):
        if not path.steps:
            continue
        kind, key = path.steps[-1]
        try:
            parent = type(path)(path.root, path.steps[:-1]).follow()
        except Exception:  # noqa: BLE001 - (gone since)
            continue
        if kind == "cell":
            places.append((parent, None, path))
        elif kind == "attr" and key in (getattr(parent, "__dict__", None) or ()):
            places.append((vars(parent), key, path))
        elif kind in ("item", "global") and type(parent) in (dict, list):
            places.append((parent, key, path))
    return places


def _get(holder, key):
    if isinstance(holder, types.CellType):
        try:
            return holder.cell_contents
        except ValueError:  # (empty)
            return None
    return entry_of(holder, key)


def _set(holder, key, value):
    if isinstance(holder, types.CellType):
        holder.cell_contents = value
    else:
        holder[key] = value


def entry_of(container, key):
    """What a dict or list holds at key, or None."""
    if isinstance(container, dict):
        return container.get(key)
    return container[key] if type(container) is list and 0 <= key < len(container) else None
