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
import gc

import numpy as np


# what a Live answers as itself; any other attribute (a method: .copy(), .max(), .T) is its
# plain view's, as before: NumPy's own result, no Live leaking into what the code keeps
_OWN = frozenset({"base", "shape", "dtype", "ndim", "size", "strides", "itemsize", "nbytes",
                  "flags"})


class Live(np.ndarray):
    """A view of an outside array a trace reads live through NumPy's ufuncs and functions."""

    def __getattribute__(self, name):
        if name in _OWN or name.startswith("__"):
            return np.ndarray.__getattribute__(self, name)
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


def _read_all(items):
    return [type(x)(read(v) for v in x) if type(x) in (list, tuple) else read(x)
            for x in items]


@contextlib.contextmanager
def written_back_live(stale):
    """While a trace runs: the arrays `stale` (the Compiled traced before, or None) wrote back
    after its calls, where they are still there, as Live views (put back after)."""
    swapped = []
    for stored in getattr(stale, "write_backs", ()) or ():
        if (type(stored.value) is not int or getattr(stored, "key", None) is None
                or getattr(stored, "given", None) is not None):
            continue  # (a value, assigned or written into: not into the caller's dict)
        container = stored.container
        now = entry_of(container, stored.key)
        if type(now) is np.ndarray and now.dtype.kind == "f" and now.size:
            container[stored.key] = now.view(Live)
            swapped.append((container, stored.key, now))
    try:
        yield bool(swapped)
    finally:
        views = {id(view): (view, array) for container, key, array in swapped
                 for view in (entry_of(container, key),) if isinstance(view, Live)}
        holders = [c for c, _, _ in swapped] + [  # (the view, and every name of it the code
            r for view, _ in views.values() for r in gc.get_referrers(view)  # bound, `self.
            if type(r) in (dict, list)]  # prev = self.rm`, `log["rm"] = self.rm`: the array
        for container in holders:  # itself, as NumPy's code holds it)
            keys = container.keys() if isinstance(container, dict) else range(len(container))
            for key in list(keys):
                if id(container[key]) in views:
                    container[key] = views[id(container[key])][1]


def entry_of(container, key):
    """What a dict or list holds at key, or None."""
    if isinstance(container, dict):
        return container.get(key)
    return container[key] if type(container) is list and 0 <= key < len(container) else None
