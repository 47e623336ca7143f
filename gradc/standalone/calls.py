"""Calling a standalone module's program: the arguments checked against the compiled pytree
structure and flattened, the results rebuilt, and the memory checks of a call.

Copied verbatim (from the first definition on) into every module `gradc compile` writes, after
the tables they read: NAME, N_ARGS, ARG_NAMES, DEFAULTS (the parameters the example left to
their defaults, compiled with them), ARGS_TREE (the arguments' structure: a pytree description
whose static values are literals), INPUTS ((name, shape, dtype) per input). NumPy only. gradc
itself uses `byte_span` and `first_overlap`.
"""
import math
import os
import threading
import weakref

import numpy as np


def _flatten(tree, x, path, leaves):
    """Check `x` against the compiled pytree structure and collect its array leaves."""
    kind = tree[0]
    if kind == "*":
        if not isinstance(x, (np.ndarray, np.generic)):
            raise TypeError(f"{path} must be a NumPy array, got {type(x).__name__}")
        if (isinstance(x, np.ndarray) and type(x) is not np.ndarray
                and not isinstance(x, np.memmap)):  # (its operators differ; a memmap's do not)
            raise TypeError(f"{path} is a {type(x).__name__}, a subclass of np.ndarray whose "
                            "arithmetic is not NumPy's (a masked array's mask, np.matrix's *): "
                            "pass a plain array (np.asarray(x), or x.filled() for a masked one)")
        leaves.append((path, x))
    elif kind == "float":  # a Python float in a differentiated argument
        if type(x) is not float:
            raise TypeError(f"{path} must be a Python float, got {type(x).__name__}")
        leaves.append((path, np.float64(x)))
    elif kind == "dict":
        if not isinstance(x, dict) or tuple(x) != tuple(tree[1]) or not all(
                _same_static(a, b) for a, b in zip(x, tree[1])):  # (in order: `for W in
            got = list(x) if isinstance(x, dict) else type(x).__name__  # p.values()` ran it;
            # and of the keys' types: {1.0: w} is another signature than {1: w})
            raise TypeError(f"{path} must be a dict with keys {list(tree[1])}, in that order "
                            f"(the function may walk them in order), got {got}")
        for k, t in zip(tree[1], tree[2]):
            _flatten(t, x[k], f"{path}[{k!r}]", leaves)
    elif kind in ("list", "tuple"):
        if not isinstance(x, (list, tuple)) or type(x).__name__ != kind or len(x) != len(tree[1]):
            got = type(x).__name__
            if isinstance(x, (list, tuple)):
                got += f" of length {len(x)}"
            raise TypeError(f"{path} must be a {kind} of length {len(tree[1])}, got {got}")
        for i, (t, v) in enumerate(zip(tree[1], x)):
            _flatten(t, v, f"{path}[{i}]", leaves)
    elif not _same_static(x, tree[1]):  # a static value: compiled in
        raise TypeError(f"{path} was compiled as the static value {tree[1]!r}; got {x!r}")


def _same_static(x, value):
    """x is the static `value`: of its type and equal, with the sign of a float zero (1/x
    tells 0.0 from -0.0); a NaN is a NaN."""
    if type(x) is not type(value):
        return False
    if type(x) is float:
        return x == value and math.copysign(1.0, x) == math.copysign(1.0, value) or (
            x != x and value != value)
    return x == value


def _unflatten(tree, it):
    kind = tree[0]
    if kind == "*":
        return next(it)
    if kind == "float":  # the gradient of a Python float
        return float(next(it))
    if kind == "dict":
        return {k: _unflatten(t, it) for k, t in zip(tree[1], tree[2])}
    if kind in ("list", "tuple"):
        items = [_unflatten(t, it) for t in tree[1]]
        return items if kind == "list" else tuple(items)
    return tree[1]


def _positional(name, args, kwargs):
    """The arguments in order, keywords placed by the Python function's names (ARG_NAMES), as
    gradc's API takes them."""
    if not kwargs:
        return args
    filled = list(args) + [_MISSING] * (N_ARGS - len(args))
    for key, value in kwargs.items():
        if key in DEFAULTS and key not in ARG_NAMES:  # (compiled with its default)
            if not _same_static(value, DEFAULTS[key]):
                raise TypeError(f"{name}() was compiled with {key}={DEFAULTS[key]!r}, its "
                                f"default; got {value!r} (compile with an example that passes it)")
            continue
        if key not in ARG_NAMES:
            raise TypeError(f"{name}() has no argument {key!r}; it takes {', '.join(ARG_NAMES)}")
        at = ARG_NAMES.index(key)
        if at < len(args):
            raise TypeError(f"{name}() got {key!r} twice: by position and by name")
        filled[at] = value
    missing = [n for n, v in zip(ARG_NAMES, filled) if v is _MISSING]
    if missing:
        raise TypeError(f"{name}() is missing {', '.join(missing)}")
    return tuple(filled)


_MISSING = object()


def _leaves(name, args):
    """The flat input arrays of a call, checked against `INPUTS` (shape and dtype must match)."""
    if len(args) != N_ARGS:
        raise TypeError(f"{name}() takes {N_ARGS} arguments ({', '.join(ARG_NAMES)}), "
                        f"got {len(args)}")
    leaves = []
    for arg_name, tree, x in zip(ARG_NAMES, ARGS_TREE[1], args):
        _flatten(tree, x, arg_name, leaves)
    arrays = []
    for (path, x), (_, shape, dtype) in zip(leaves, INPUTS):
        if not x.dtype.isnative:
            raise ValueError(f"{path} is {x.dtype.name} in non-native byte order "
                             f"({x.dtype.str!r}); convert it with .astype(np.{x.dtype.name})")
        if x.shape != shape or x.dtype.str != dtype:
            raise ValueError(f"{path} must be {np.dtype(dtype).name}{list(shape)}, got "
                             f"{x.dtype.name}{list(x.shape)} (this module was compiled for one "
                             "signature)")
        if not isinstance(x, np.ndarray) or not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)  # kept alive in `arrays` until the kernels return
        arrays.append(x)
    return arrays


def byte_span(x):
    """[start, end) of a C-contiguous array's memory (a NumPy or a CUDA device array)."""
    if isinstance(x, np.ndarray):
        start = x.__array_interface__["data"][0]
        return start, start + x.nbytes
    interface = getattr(x, "__cuda_array_interface__", None)
    if interface is None:  # Numba's CUDA simulator: a device array wraps a host array
        return byte_span(x._ary)
    start = interface["data"][0]
    return start, start + x.size * x.dtype.itemsize


def first_overlap(arrays):
    """The positions (i, j) of two C-contiguous `arrays` whose memory overlaps, or None."""
    spans = sorted(byte_span(x) + (i,) for i, x in enumerate(arrays) if x.size)
    for (_, end, i), (start, _, j) in zip(spans, spans[1:]):
        if start < end:
            return min(i, j), max(i, j)
    return None


def _address(x):
    return x.__array_interface__["data"][0]


def _overlaps(x, spans):
    """Whether the memory of array `x` overlaps one of the byte ranges `spans`."""
    start, end = byte_span(x)
    return any(s < end and start < e for s, e in spans)


def _result(view, fresh):
    if view.shape == ():
        return view.dtype.type(view[()])
    return view.copy() if fresh else view


def leaf_count(tree):
    """How many array leaves a pytree description has (gradc's, or a module's ARGS_TREE)."""
    if tree[0] in ("*", "float"):
        return 1
    if tree[0] == "static":
        return 0
    return sum(leaf_count(child) for child in tree[-1])


_LOCKED = weakref.WeakSet()  # the objects whose locks a fork makes anew


def _new_lock(owner):
    """A lock for `owner` (a Compiled), made anew in a forked child: a fork copies a lock that
    another thread holds, locked, and the child's first call would wait for it forever."""
    _LOCKED.add(owner)
    return threading.Lock()


def _locks_after_fork():
    for owner in list(_LOCKED):
        owner.lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_locks_after_fork)
