"""Tracing plain NumPy code.

IR values act as tracers: they implement the NumPy operators, `__array_ufunc__`,
`__array_function__`, the common ndarray methods and basic/integer-array indexing, all of which
build graph nodes through `gradc.ops.fn`. Each node is stamped with the user's `file:line`.
Anything else (an unsupported NumPy function, branching on a traced value) raises a GradcError
naming that line.
"""
from __future__ import annotations

import functools
import inspect
import os
import sys

import numpy as np

from . import frozen, pytree
from .errors import GradcError, ShapeError, TracedBranchError, UnsupportedOpError
from .ir import Graph, Value
from .ops import fn

_GRADC_DIR = os.path.dirname(os.path.abspath(__file__))
_NUMPY_DIR = os.path.dirname(os.path.abspath(np.__file__))
_USER_FACING = (os.path.join(_GRADC_DIR, "nn.py"),)  # gradc code that users call from traced code


def _internal(filename):
    filename = os.path.abspath(filename)
    if filename in _USER_FACING:
        return True
    return filename.startswith(_GRADC_DIR) or filename.startswith(_NUMPY_DIR) or filename.startswith("<")


def user_source():
    """The `file:line` of the innermost frame outside gradc and NumPy."""
    frame = sys._getframe(1)
    while frame is not None and _internal(frame.f_code.co_filename):
        frame = frame.f_back
    if frame is None:
        return "<unknown>"
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"


def _graph_of_values(*args, **kwargs):
    return next((a.graph for a in args if isinstance(a, Value)), None)


def traced(method, graph_of=_graph_of_values):
    """Stamp the nodes a NumPy-surface entry point builds with the user's source line, and turn
    gradc's own errors into errors that name that line. `graph_of(*args, **kwargs)` is the graph
    being traced, if any (by default, that of the first Value among the positional arguments)."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        graph = graph_of(*args, **kwargs)
        if graph is None or not graph.stamp_user_source:
            return method(*args, **kwargs)
        src = user_source()
        watch = frozen.active()
        if watch is not None:  # numbers drawn from NumPy's generators since the trace began?
            watch.check(src)
        with graph.at_source(src):
            graph.stamp_user_source = False  # nested surface calls keep this line
            try:
                return method(*args, **kwargs)
            except GradcError as e:
                if e.source is None:
                    raise type(e)(str(e), source=src) from None
                raise
            except (ValueError, TypeError) as e:
                raise ShapeError(str(e), source=src) from None
            finally:
                graph.stamp_user_source = True

    return wrapper


# ---------------------------------------------------------------------------------------------
# ufuncs and functions

def _logical(op, a, b):
    a, b = fn._operands(a, b)
    a, b = fn.broadcast_all(fn.astype(a, bool), fn.astype(b, bool))
    return a.graph.apply(op, (a, b))


UFUNCS = {
    np.add: fn.add, np.subtract: fn.subtract, np.multiply: fn.multiply,
    np.divide: fn.divide, np.true_divide: fn.divide, np.power: fn.power,
    np.maximum: fn.maximum, np.minimum: fn.minimum, np.fmax: fn.maximum, np.fmin: fn.minimum,
    np.negative: fn.negative, np.positive: lambda x: x,
    np.matmul: fn.matmul,
    np.floor_divide: fn.floor_divide, np.remainder: fn.remainder, np.mod: fn.remainder,
    np.floor: lambda x: fn.unary("floor", x, float_only=False),
    np.ceil: lambda x: fn.unary("ceil", x, float_only=False),
    np.less: functools.partial(fn.compare, "less"),
    np.less_equal: functools.partial(fn.compare, "less_equal"),
    np.greater: functools.partial(fn.compare, "greater"),
    np.greater_equal: functools.partial(fn.compare, "greater_equal"),
    np.equal: functools.partial(fn.compare, "equal"),
    np.not_equal: functools.partial(fn.compare, "not_equal"),
    np.logical_and: lambda a, b: _logical("logical_and", a, b),
    np.logical_or: lambda a, b: _logical("logical_or", a, b),
    np.logical_not: lambda x: x.graph.apply("logical_not", (fn.astype(x, bool),)),
    np.abs: lambda x: fn.unary("abs", x, float_only=False),
    np.absolute: lambda x: fn.unary("abs", x, float_only=False),
    np.sign: lambda x: fn.unary("sign", x, float_only=False),
    np.square: lambda x: fn.unary("square", x, float_only=False),
    np.reciprocal: lambda x: fn.unary("reciprocal", x),
}
for _name in ["exp", "log", "tanh", "sin", "cos", "sqrt", "log1p", "expm1"]:
    UFUNCS[getattr(np, _name)] = functools.partial(fn.unary, _name)


def _np_clip(a, a_min=None, a_max=None, out=None, **kw):
    a_min = kw.pop("min", a_min)
    a_max = kw.pop("max", a_max)
    _no_out(out, "clip")
    return fn.clip(a, a_min, a_max)


def _no_out(out, name):
    if out is not None:
        raise UnsupportedOpError(f"np.{name}(out=...) cannot be traced: arrays are immutable "
                                 "in a traced function; use the returned value")


def _reduction(f):
    def impl(a, axis=None, dtype=None, out=None, keepdims=False, **kw):
        _no_out(out, f.__name__)
        if kw.get("where") is not None or kw.get("initial") is not None:
            raise UnsupportedOpError(f"np.{f.__name__}(where=/initial=) is not supported")
        x = fn.as_value(a) if not isinstance(a, Value) else a
        if dtype is not None:
            x = fn.astype(x, dtype)
        return f(x, axis, keepdims=keepdims)
    return impl


def _logical_reduction(f):
    def impl(a, axis=None, out=None, keepdims=False, **kw):
        _no_out(out, f.__name__)
        if kw.get("where") is not None:
            raise UnsupportedOpError(f"np.{f.__name__}(where=) is not supported")
        return f(fn.as_value(a) if not isinstance(a, Value) else a, axis, keepdims=keepdims)
    return impl


def _ones_zeros_like(value):
    def impl(a, dtype=None, **kw):
        return fn.full(a.graph, a.shape, value, dtype or a.dtype)
    return impl


def _full_like(a, fill_value, dtype=None, **kw):
    return fn.full(a.graph, a.shape, fill_value, dtype or a.dtype)


def _where(cond, x=None, y=None):
    if x is None or y is None:
        raise UnsupportedOpError("np.where(cond) with one argument gives data-dependent shapes; "
                                 "use np.where(cond, x, y)")
    return fn.where(cond, x, y)


def _concat_args(arrays, axis=0, out=None, **kw):
    _no_out(out, "concatenate")
    like = next(a for a in arrays if isinstance(a, Value))
    return [fn.as_value(a, like) for a in arrays], axis


FUNCTIONS = {
    np.sum: _reduction(fn.sum), np.mean: _reduction(fn.mean),
    np.max: _reduction(fn.max), np.amax: _reduction(fn.max),
    np.min: _reduction(fn.min), np.amin: _reduction(fn.min),
    np.any: _logical_reduction(fn.any), np.all: _logical_reduction(fn.all),
    np.reshape: lambda a, shape=None, *args, **kw: fn.reshape(a, kw.get("newshape", shape)),
    np.transpose: lambda a, axes=None: fn.transpose(a, axes),
    np.swapaxes: fn.swapaxes, np.moveaxis: fn.moveaxis,
    np.expand_dims: fn.expand_dims, np.squeeze: lambda a, axis=None: fn.squeeze(a, axis),
    np.broadcast_to: lambda a, shape, **kw: fn.broadcast_to(a, shape),
    np.ravel: lambda a, order="C": fn.reshape(a, (-1,)),
    np.concatenate: lambda arrays, axis=0, out=None, **kw: fn.concatenate(*_concat_args(arrays, axis, out)),
    np.stack: lambda arrays, axis=0, out=None, **kw: fn.stack(*_concat_args(arrays, axis, out)),
    np.where: _where, np.clip: _np_clip,
    np.dot: lambda a, b, out=None: (_no_out(out, "dot"), fn.dot(a, b))[1],
    np.matmul: lambda a, b, out=None, **kw: (_no_out(out, "matmul"), fn.matmul(a, b))[1],
    np.take: lambda a, indices, axis=None, out=None, mode="raise": fn.take(a, indices, axis),
    np.take_along_axis: lambda arr, indices, axis: fn.take_along_axis(arr, indices, axis),
    np.zeros_like: _ones_zeros_like(0), np.ones_like: _ones_zeros_like(1),
    np.full_like: _full_like,
    np.shape: lambda a: a.shape, np.ndim: lambda a: a.ndim, np.size: lambda a, axis=None: (
        a.size if axis is None else a.shape[axis]),
    np.square: lambda x: fn.unary("square", x, float_only=False),
    np.outer: lambda a, b, out=None: fn.multiply(fn.reshape(a, (-1, 1)), fn.reshape(b, (1, -1))),
}


def supported_numpy_names():
    """The NumPy ufuncs and functions a traced function may call (for the README and errors)."""
    names = {u.__name__ for u in UFUNCS} | {f.__name__ for f in FUNCTIONS}
    return sorted(names)


def _qualified(func):
    module = getattr(func, "__module__", "numpy") or "numpy"
    prefix = "np." + module[len("numpy."):] + "." if module.startswith("numpy.") else "np."
    return prefix + func.__name__


@traced
def _array_ufunc(self, ufunc, method, *inputs, **kwargs):
    name = getattr(ufunc, "__name__", str(ufunc))
    if method != "__call__":
        raise UnsupportedOpError(f"np.{name}.{method} is not supported in traced code; "
                                 "see the supported list in the README")
    _no_out(kwargs.pop("out", None), name)
    impl = UFUNCS.get(ufunc)
    if impl is None:
        raise UnsupportedOpError(f"np.{name} is not supported in traced code; supported: "
                                 + ", ".join(supported_numpy_names()))
    kwargs.pop("casting", None)
    if kwargs:
        raise UnsupportedOpError(f"np.{name} with {', '.join(kwargs)}= is not supported")
    like = next(x for x in inputs if isinstance(x, Value))
    args = [x if isinstance(x, Value) or not isinstance(x, (np.ndarray, list)) else fn.as_value(x, like)
            for x in inputs]
    return impl(*args)


@traced
def _array_function(self, func, types, args, kwargs):
    impl = FUNCTIONS.get(func)
    if impl is None:
        raise UnsupportedOpError(f"{_qualified(func)} is not supported in traced code; supported: "
                                 + ", ".join(supported_numpy_names()))
    return impl(*args, **kwargs)


# ---------------------------------------------------------------------------------------------
# indexing

def _is_int_array(x):
    if isinstance(x, Value):
        return np.issubdtype(x.dtype, np.integer)
    if isinstance(x, (list, np.ndarray)):
        arr = np.asarray(x)
        return arr.ndim > 0 and np.issubdtype(arr.dtype, np.integer)
    return False


def _getitem(x, index):
    if not isinstance(index, tuple):
        index = (index,)
    if any(isinstance(i, Value) and i.dtype == np.bool_ or
           isinstance(i, np.ndarray) and i.dtype == np.bool_ for i in index):
        raise UnsupportedOpError("boolean mask indexing gives data-dependent shapes; use "
                                 "np.where(mask, x, 0) instead")
    if any(_is_int_array(i) for i in index):
        return _advanced_index(x, index)
    return _basic_index(x, index)


def _basic_index(x, index):
    n_real = sum(1 for i in index if i is not None and i is not Ellipsis)
    if n_real > x.ndim:
        raise ShapeError(f"too many indices ({n_real}) for an array of {x.ndim} dimensions")
    if sum(1 for i in index if i is Ellipsis) > 1:  # (`is`: == on arrays is elementwise)
        raise ShapeError("an index can only have a single ellipsis")
    if any(i is Ellipsis for i in index):
        k = next(j for j, i in enumerate(index) if i is Ellipsis)
        index = index[:k] + (slice(None),) * (x.ndim - n_real) + index[k + 1:]
        n_real = x.ndim
    index = index + (slice(None),) * (x.ndim - n_real)
    starts, stops, steps, out_shape = [], [], [], []
    dim = 0
    for i in index:
        if i is None:
            out_shape.append(1)
            continue
        size = x.shape[dim]
        if isinstance(i, slice):
            a, b, c = i.indices(size)
            starts.append(a), stops.append(b), steps.append(c)
            out_shape.append(len(range(a, b, c)))
        elif isinstance(i, (int, np.integer)):
            j = int(i) + size if int(i) < 0 else int(i)
            if not 0 <= j < size:
                raise ShapeError(f"index {int(i)} is out of bounds for axis {dim} with size {size}")
            starts.append(j), stops.append(j + 1), steps.append(1)
        else:
            raise UnsupportedOpError(f"cannot index with a {type(i).__name__}")
        dim += 1
    return fn.reshape(fn.slice_(x, starts, stops, steps), out_shape)


def _advanced_index(x, index):
    """Integer-array indexing: one integer array on one axis (np.take), or the
    `x[np.arange(n), labels]` pattern (take_along_axis)."""
    arrays = [k for k, i in enumerate(index) if _is_int_array(i)]
    if (len(index) == 2 and arrays == [0, 1] and x.ndim == 2 and isinstance(index[0], (np.ndarray, list))
            and np.array_equal(np.asarray(index[0]), np.arange(x.shape[0]))):
        labels = fn.as_value(index[1], x)
        if labels.shape != (x.shape[0],):
            raise ShapeError(f"x[np.arange({x.shape[0]}), labels] needs labels of shape "
                             f"({x.shape[0]},), got {labels.shape}")
        return fn.reshape(fn.take_along_axis(x, fn.reshape(labels, (-1, 1)), 1), (x.shape[0],))
    if len(arrays) == 1 and all(isinstance(i, slice) and i == slice(None)
                                for k, i in enumerate(index) if k != arrays[0]):
        return fn.take(x, index[arrays[0]], axis=arrays[0])
    raise UnsupportedOpError("this integer-array indexing pattern is not supported: use one "
                             "integer array on one axis (x[:, idx]) or x[np.arange(n), labels]")


# ---------------------------------------------------------------------------------------------
# the Value surface

def _branch_error(what):
    def raise_(self, *args):
        raise TracedBranchError(
            f"{what} on a traced value: its value is not known while tracing. Use np.where for "
            "data-dependent choices, or pass the value as a static Python number",
            source=user_source())
    return raise_


def _binary(f, reflected=False):
    if reflected:
        return traced(lambda self, other: f(other, self))
    return traced(lambda self, other: f(self, other))


def _method_reduction(f):
    @traced
    def method(self, axis=None, dtype=None, out=None, keepdims=False, **kw):
        return _reduction(f)(self, axis=axis, dtype=dtype, out=out, keepdims=keepdims, **kw)
    return method


def _reshape_method(self, *shape, order="C"):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    return fn.reshape(self, shape)


def _transpose_method(self, *axes):
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = axes[0]
    return fn.transpose(self, axes or None)


def _iter(self):
    if not self.shape:
        raise TypeError("iteration over a 0-d traced value")
    return (self[i] for i in range(self.shape[0]))


def _array(self, *args, **kwargs):
    raise TracedBranchError(
        "a traced value was converted to a NumPy array (np.asarray, np.array, or a NumPy "
        "function gradc does not trace); keep traced values symbolic", source=user_source())


def _setitem(self, index, value):
    raise UnsupportedOpError(
        "item assignment (x[i] = v) on a traced value: arrays are immutable in a traced function; "
        "build the result with np.where, np.concatenate or arithmetic instead", source=user_source())


def _getattr(self, name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise UnsupportedOpError(
        f"the ndarray attribute or method .{name} is not supported in traced code; supported: "
        "T, shape, ndim, dtype, size, sum, mean, max, min, reshape, transpose, swapaxes, squeeze, "
        "flatten, ravel, astype, dot, clip", source=user_source())


_SURFACE = {
    "__add__": _binary(fn.add), "__radd__": _binary(fn.add, True),
    "__sub__": _binary(fn.subtract), "__rsub__": _binary(fn.subtract, True),
    "__mul__": _binary(fn.multiply), "__rmul__": _binary(fn.multiply, True),
    "__truediv__": _binary(fn.divide), "__rtruediv__": _binary(fn.divide, True),
    "__pow__": _binary(fn.power), "__rpow__": _binary(fn.power, True),
    "__floordiv__": _binary(fn.floor_divide), "__rfloordiv__": _binary(fn.floor_divide, True),
    "__mod__": _binary(fn.remainder), "__rmod__": _binary(fn.remainder, True),
    "__matmul__": _binary(fn.matmul), "__rmatmul__": _binary(fn.matmul, True),
    "__lt__": _binary(functools.partial(fn.compare, "less")),
    "__le__": _binary(functools.partial(fn.compare, "less_equal")),
    "__gt__": _binary(functools.partial(fn.compare, "greater")),
    "__ge__": _binary(functools.partial(fn.compare, "greater_equal")),
    "__eq__": _binary(functools.partial(fn.compare, "equal")),
    "__ne__": _binary(functools.partial(fn.compare, "not_equal")),
    "__and__": _binary(UFUNCS[np.logical_and]), "__or__": _binary(UFUNCS[np.logical_or]),
    "__invert__": traced(lambda self: UFUNCS[np.logical_not](self)),
    "__neg__": traced(fn.negative), "__pos__": lambda self: self,
    "__abs__": traced(lambda self: fn.unary("abs", self, float_only=False)),
    "__getitem__": traced(_getitem),
    "__iter__": _iter,
    "__hash__": object.__hash__,
    "__bool__": _branch_error("bool() (an `if`, `while`, `and`/`or` or assert)"),
    "__float__": _branch_error("float()"), "__int__": _branch_error("int()"),
    "__index__": _branch_error("using a traced value as an index or size"),
    "__complex__": _branch_error("complex()"),
    "item": _branch_error(".item()"), "tolist": _branch_error(".tolist()"),
    "__array__": _array,
    "__setitem__": _setitem,
    "__getattr__": _getattr,
    "__array_ufunc__": _array_ufunc,
    "__array_function__": _array_function,
    "T": property(traced(lambda self: fn.transpose(self))),
    "mT": property(traced(lambda self: fn.swapaxes(self, -1, -2))),
    "sum": _method_reduction(fn.sum), "mean": _method_reduction(fn.mean),
    "max": _method_reduction(fn.max), "min": _method_reduction(fn.min),
    "any": traced(lambda self, axis=None, out=None, keepdims=False, **kw:
                  _logical_reduction(fn.any)(self, axis, out, keepdims, **kw)),
    "all": traced(lambda self, axis=None, out=None, keepdims=False, **kw:
                  _logical_reduction(fn.all)(self, axis, out, keepdims, **kw)),
    "reshape": traced(_reshape_method),
    "transpose": traced(_transpose_method),
    "swapaxes": traced(fn.swapaxes),
    "squeeze": traced(lambda self, axis=None: fn.squeeze(self, axis)),
    "flatten": traced(lambda self, order="C": fn.reshape(self, (-1,))),
    "ravel": traced(lambda self, order="C": fn.reshape(self, (-1,))),
    "astype": traced(lambda self, dtype, **kw: fn.astype(self, dtype)),
    "dot": traced(lambda self, other: fn.dot(self, other)),
    "clip": traced(lambda self, min=None, max=None: fn.clip(self, min, max)),
    "copy": lambda self, order="C": self,
}
for _name, _impl in _SURFACE.items():
    setattr(Value, _name, _impl)


# ---------------------------------------------------------------------------------------------
# tracing a function

def trace(fun, args, kwargs=None):
    """Trace `fun(*args, **kwargs)` into a new graph.

    Array leaves of the argument pytrees become graph inputs (named by their path); other leaves
    are static. Random numbers drawn while `fun` runs would be frozen into the graph: a
    gradc.frozen.Watch turns them into FrozenRandomError. Returns (graph, out_tree, flat output
    values).
    """
    kwargs = kwargs or {}
    leaves, treedef = pytree.flatten((args, kwargs))
    graph = Graph()
    names = leaf_names((args, kwargs), _param_names(fun))
    values = [graph.add_input(*pytree.leaf_type(x), name=name) for x, name in zip(leaves, names)]
    targs, tkwargs = pytree.unflatten(treedef, values)
    graph.stamp_user_source = True
    try:
        with frozen.Watch(fun, _static_values(treedef)) as watch:
            out = fun(*targs, **tkwargs)
            watch.check(_definition(fun), final=True)
    finally:
        graph.stamp_user_source = False
    out_leaves, out_tree = pytree.flatten(out)
    outs = []
    for v in out_leaves:
        if not isinstance(v, Value):
            v = fn.as_value(np.asarray(v), graph=graph)
        elif v.graph is not graph:
            raise UnsupportedOpError("the function returned a value traced by another function")
        outs.append(v)
    graph.outputs = outs
    return graph, out_tree, outs


def _static_values(treedef):
    """The static (non-array) leaves of a flattened tree."""
    if treedef == pytree.LEAF:
        return []
    if treedef[0] == "static":
        return [treedef[1]]
    return [v for child in treedef[-1] for v in _static_values(child)]


def _definition(fun):
    """`file:line` where `fun` is defined (or the calling line, for a callable object)."""
    code = getattr(inspect.unwrap(fun), "__code__", None)
    if code is None:
        return user_source()
    return f"{os.path.basename(code.co_filename)}:{code.co_firstlineno}"


def _param_names(fun):
    try:
        params = list(inspect.signature(fun).parameters.values())
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def leaf_names(tree, argnames=()):
    """Readable names for the array leaves of ((args...), {kwargs}): `params['W1']`, `x`."""
    names = []

    def walk(x, path):
        if pytree.is_array_leaf(x):
            names.append(path)
        elif type(x) in pytree.NODE_TYPES:
            for field in pytree.NODE_TYPES[type(x)]:
                walk(getattr(x, field), f"{path}.{field}")
        elif isinstance(x, dict):
            for k in sorted(x, key=repr):
                walk(x[k], f"{path}[{k!r}]")
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                walk(v, f"{path}[{i}]")

    args, kwargs = tree
    for i, a in enumerate(args):
        walk(a, argnames[i] if i < len(argnames) else f"arg{i}")
    for k in sorted(kwargs, key=repr):
        walk(kwargs[k], k)
    return names
