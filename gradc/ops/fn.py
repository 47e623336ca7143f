"""NumPy-like functions on IR values.

These do what NumPy does implicitly — dtype promotion, broadcasting, axis normalization,
`keepdims` — as explicit nodes, and then call `Graph.apply` on primitive ops. Tracing, VJP rules,
rewrites and `gradc.nn` all build graphs through these functions.
"""
from __future__ import annotations

import math
import numbers
import operator
import warnings

import numpy as np

from ..capture import captured
from .. import pytree
from ..fresh import Fresh, plain_copy, views_fresh
from ..errors import ArgumentError, IndexOutOfRangeError, ShapeError, UnsupportedOpError
from ..ir import SUPPORTED_DTYPES, Value
from ..live import Live
from ..live import read as read_live


class ConstArray:
    """An array constant in the graph, hashable by content (so equal constants merge)."""

    __slots__ = ("array", "_key")

    def __init__(self, array):
        self.array = np.array(array, order="C")  # (a copy; ascontiguousarray makes 0-d 1-d)
        self.array.setflags(write=False)
        self._key = (self.array.shape, self.array.dtype.str, hash(self.array.tobytes()))

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, ConstArray) and self._key == other._key and np.array_equal(
            self.array, other.array)

    def __repr__(self):
        if self.array.size <= 6:
            return f"array({self.array.tolist()})"
        return f"<{self.array.dtype.name}{list(self.array.shape)} constant>"


# ---------------------------------------------------------------------------------------------
# constants and dtypes

def const_value(v):
    """The scalar a value is filled with, if it is a (broadcast or reshaped) scalar constant."""
    node = v.node
    while node is not None and node.op in ("broadcast_to", "reshape"):
        node = node.inputs[0].node
    if node is not None and node.op == "const":
        return node.attr["value"]
    return None


def const(graph, value, dtype):
    """A scalar constant of `dtype` (shape ())."""
    dtype = np.dtype(dtype)
    value = np.array(value, dtype=dtype).item()
    return graph.apply("const", (), value=value, dtype=dtype)


def full(graph, shape, value, dtype):
    _check_supported(np.dtype(dtype))  # (np.zeros_like(x, dtype=np.float16))
    return broadcast_to(const(graph, value, dtype), shape)


def _check_supported(dtype):
    if dtype not in SUPPORTED_DTYPES:
        supported = ", ".join(d.name for d in SUPPORTED_DTYPES)
        if dtype.kind in "SUVO":  # (x == "a": NumPy makes the str an array of strings)
            raise UnsupportedOpError(f"an operand of dtype {dtype} ({dtype.name}: strings or "
                                     "objects) beside traced numbers: gradc's arrays hold "
                                     f"numbers only ({supported})")
        if dtype.newbyteorder("=") in SUPPORTED_DTYPES:  # ('>f8': another byte order)
            raise UnsupportedOpError(f"dtype {dtype.str} is {dtype.name} in non-native byte "
                                     f"order: use the native one (np.{dtype.name}, "
                                     f"'{dtype.newbyteorder('=').str}')")
        raise UnsupportedOpError(f"dtype {dtype.name} is not supported; use one of {supported}")


def zeros_like(x):
    return full(x.graph, x.shape, 0, x.dtype)


def ones_like(x):
    return full(x.graph, x.shape, 1, x.dtype)


def array_const(graph, array):
    array = np.asarray(array)
    if not array.dtype.isnative and array.dtype.newbyteorder("=") in SUPPORTED_DTYPES:
        array = array.astype(array.dtype.newbyteorder("="))  # (a big-endian float64: its values)
    if array.dtype not in SUPPORTED_DTYPES and array.dtype.kind in "fiub":  # (float16, int8...)
        raise UnsupportedOpError(
            f"a{'n' if array.dtype.name.startswith('int') else ''} {array.dtype.name} array "
            "meets a traced value: gradc computes in "
            f"{', '.join(d.name for d in SUPPORTED_DTYPES)}; convert it first "
            f"(.astype(np.float32) or np.int64)")
    if array.dtype not in SUPPORTED_DTYPES:  # (complex, text, dates, records)
        raise UnsupportedOpError(
            f"a {array.dtype.name} array meets a traced value: gradc computes in "
            f"{', '.join(d.name for d in SUPPORTED_DTYPES)}"
            + (", with no complex numbers; compute with its real and imaginary parts apart "
               "(W.real, W.imag) or with np.abs(W)" if array.dtype.kind == "c" else
               "; convert it to numbers first"))
    if array.ndim == 0:
        return const(graph, array.item(), array.dtype)
    if array.size > 1 and _uniform(array):  # (np.zeros((N, T, H)) filled by a loop of steps:
        # a scalar, broadcast, takes no arena for the life of the program)
        return full(graph, array.shape, array.flat[0], array.dtype)
    return graph.apply("constant", (), data=ConstArray(array))


def _uniform(array):
    """Every element of `array` has the same bits (-0.0 and 0.0 differ; NaNs of one payload)."""
    bits = np.ascontiguousarray(array).reshape(-1).view(f"u{array.dtype.itemsize}")
    return bool((bits == bits[0]).all())


def _scalar_dtype(value, other_dtype):
    """NumPy 2's rule for a Python scalar next to an array: the scalar is 'weak'."""
    if isinstance(value, (bool, np.bool_)):
        return other_dtype if other_dtype is not None else np.dtype(bool)
    if other_dtype is None:
        return np.result_type(value)
    return np.result_type(other_dtype, value)


def check_scalars_into(values, dtype, what):
    """Raise NumPy's error where Python or NumPy scalars (or a list of them) that `what` stores
    into an integer array do not fit it: an inf or NaN, an integer out of its range (NumPy's
    OverflowError and ValueError; they were cast, wrapped: y[0] = np.inf stored INT_MIN). An
    array is cast as NumPy casts it."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "iu" or isinstance(values, (Value, np.ndarray)):
        return
    try:
        found = np.asarray(values)
    except Exception:  # noqa: BLE001 - (a list holding traced values: theirs are cast)
        return
    if isinstance(found, Value) or found.dtype.kind not in "fiuO":
        return
    flat = found.ravel().tolist()
    bad = next((v for v in flat if isinstance(v, float) and not math.isfinite(v)), None)
    if bad is not None:
        raise ArgumentError(f"{what}: cannot convert float {'NaN' if bad != bad else 'infinity'}"
                            f" to integer (NumPy's error, storing into a {dtype.name} array)")
    info = np.iinfo(dtype)  # (a float by its integer part: y[0] = 1e20 raises too)
    bad = next((v for v in flat if isinstance(v, (int, float)) and not isinstance(v, bool)
                and not info.min <= int(v) <= info.max), None)
    if bad is not None:
        raise ArgumentError(f"{what}: {'Python integer' if isinstance(bad, int) else 'float'} "
                            f"{bad} out of bounds for {dtype.name} (NumPy's OverflowError)")


_OBJECT_ARRAYS = ("object arrays (np.empty(n, dtype=object), np.array(parts, dtype=object) of "
                  "ragged parts) cannot hold traced values: keep the parts in a Python list")


def as_value(x, like: Value | None = None, graph=None):
    """Turn a Python number or NumPy array into a constant value in the graph of `like`."""
    if isinstance(x, Value):
        return x
    if isinstance(x, Live):  # (an array written back, while a trace runs: gradc/live.py)
        x = read_live(x)
        if isinstance(x, Value):
            return x
    if pytree.is_device_array(x):  # (a traced function reads outside arrays from the host)
        raise UnsupportedOpError(
            f"a device array ({type(x).__name__}) read from outside the function's arguments: "
            "gradc reads such arrays on every call from host memory; pass it as an argument")
    graph = graph if graph is not None else like.graph
    if isinstance(x, (numbers.Number, np.bool_)) and not isinstance(x, np.generic):
        dt = _scalar_dtype(x, like.dtype if like is not None else None)
        return const(graph, x, dt)
    if isinstance(x, Fresh):  # (an array a trace made: read on every call where an object
        # outside keeps it, `self.buf = np.zeros(n)` on a first call; else its values now, a copy
        # no constant holds it by, for a store's count of its holders: gradc/fresh.py)
        live = captured(graph, x)
        if live is not None:
            return live
        x = plain_copy(x)
    elif type(x) is np.ndarray and views_fresh(x):  # (`o[t] = o[t - 1] + v`: the view read now,
        x = x.copy()  # by a copy, so no constant holds o for a store's count of its holders)
    if isinstance(x, (np.ndarray, np.generic, list, tuple)):
        pytree.subclass_meaning(x, "an array the traced code reads", UnsupportedOpError)
        arr = np.asarray(x)
        if isinstance(arr, Value):  # a list holding traced values (gradc/literals.py)
            return arr
        if arr.dtype == object:
            from ..trace import user_source  # (it builds on this module)
            raise UnsupportedOpError(_OBJECT_ARRAYS, source=user_source())
        if type(x) is np.ndarray:
            live = captured(graph, x)  # (read from outside the arguments: read on every call)
            if live is not None:
                return live
            graph.constant_arrays[id(x)] = x
        return array_const(graph, arr)
    raise UnsupportedOpError(
        f"cannot use a {type(x).__name__} as an array in a traced function")


def is_weak(x):
    """A weakly typed traced value: a Python float traced as an input (gradc.grad of a Python
    number), or Python arithmetic on one."""
    return isinstance(x, Value) and x.id in x.graph.weak


def _operands(*xs):
    like = next((x for x in xs if isinstance(x, Value)), None)
    if like is None:
        raise TypeError("expected at least one traced value")
    # Arrays (and lists, read as NumPy reads them) keep their dtype; Python scalars and weak
    # values take the dtype of the arrays beside them (NumPy 2's weak typing).
    xs = [as_value(x, like) if isinstance(x, (np.ndarray, np.generic, list, tuple))
          or pytree.is_device_array(x) else x for x in xs]
    strong = [x.dtype for x in xs if isinstance(x, Value) and not is_weak(x)]
    base = np.result_type(*strong) if strong else like.dtype
    out = []
    for x in xs:
        if not isinstance(x, Value):
            out.append(const(like.graph, x, _scalar_dtype(x, base)))
        elif strong and is_weak(x):  # (a float64 that stands for a Python float)
            out.append(astype(x, _scalar_dtype(0.0, base)))
        else:
            out.append(x)
    return out


def _as_arrays(*xs):
    """Operands as NumPy's array functions (dot, outer) take them: a Python number is an array of
    its own dtype here, not weakly typed as it is next to an array in an operator."""
    return promote(*[x if isinstance(x, Value) else np.asarray(x) for x in xs])


def astype(x, dtype):
    dtype = np.dtype(dtype)
    if x.dtype == dtype:
        return x
    _check_supported(dtype)
    if x.dtype.kind == "f" and dtype.kind in "iu" and dtype.itemsize < 4:
        # (NumPy's on x86: through an int32, then its low bits: 300.0 as uint8 is 44, -1.0 is
        # 255, a NaN 0)
        x = x.graph.apply("astype", (x,), dtype=np.dtype(np.int32))
    return x.graph.apply("astype", (x,), dtype=dtype)


def _integer_arrays(xs):
    """Whether the arrays among `xs` (not Python numbers, not weak values) are of integer
    dtypes: a float-only ufunc computes them in float64."""
    strong = [x.dtype if isinstance(x, Value) else np.asarray(x).dtype for x in xs
              if isinstance(x, Value) and not is_weak(x) or isinstance(x, (np.ndarray, np.generic))]
    return bool(strong) and np.result_type(*strong).kind in "iu"


def promote(*xs, float_only=False):
    """The operands as values of one dtype, NumPy's. `float_only`: True makes an integer or
    boolean result float64, as NumPy's math ufuncs do; "float64" makes every result float64
    (np.float_power)."""
    if float_only == "float64":  # (NumPy's one loop: every operand, a Python float too,
        xs = [astype(x, np.float64) if isinstance(x, Value)  # is float64 from the start)
              else np.asarray(x, np.float64) for x in xs]
    elif float_only and _integer_arrays(xs):  # (NumPy's float64 loop for integer arrays:
        xs = [astype(x, np.float64) if isinstance(x, Value)  # a Python int of any size fits)
              else float(x) if type(x) is int else x for x in xs]
    vals = _operands(*xs)
    dtype = np.result_type(*[v.dtype for v in vals])
    if float_only == "float64" or (float_only and not np.issubdtype(dtype, np.floating)):
        dtype = np.dtype(np.float64)
    return [astype(v, dtype) for v in vals]


# ---------------------------------------------------------------------------------------------
# broadcasting

def broadcast_shapes(*shapes):
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise ShapeError(
            "shapes " + ", ".join(str(tuple(s)) for s in shapes) + " cannot be broadcast together"
        ) from None


def broadcast_to(x, shape):
    shape = tuple(int(d) for d in shape)
    if x.shape == shape:
        return x
    if len(shape) < x.ndim or broadcast_shapes(x.shape, shape) != shape:
        raise ShapeError(f"cannot broadcast shape {x.shape} to {shape}")
    if x.ndim < len(shape):
        x = reshape(x, (1,) * (len(shape) - x.ndim) + x.shape)
    if x.shape == shape:
        return x
    return x.graph.apply("broadcast_to", (x,), shape=shape)


def broadcast_all(*xs):
    shape = broadcast_shapes(*[x.shape for x in xs])
    return [broadcast_to(x, shape) for x in xs]


def elementwise(op, *xs, float_only=False, **attrs):
    if op in ("square", "multiply", "power"):
        squared = _squared(op, xs)
        if squared is not None:
            return squared
    if op in ("log", "log1p") and isinstance(xs[0], Value):
        stable = stable_form(op, xs[0])
        if stable is not None:
            return stable
    vals = promote(*xs, float_only=float_only)
    vals = broadcast_all(*vals)
    return vals[0].graph.apply(op, vals, **attrs)


# ---------------------------------------------------------------------------------------------
# elementwise arithmetic

def _binary(op, float_only=False):
    def apply(a, b):
        return elementwise(op, a, b, float_only=float_only)
    apply.__name__ = apply.__qualname__ = op
    return apply


add, subtract, multiply, power, floor_divide, remainder, maximum, minimum = map(_binary, (
    "add", "subtract", "multiply", "power", "floor_divide", "remainder", "maximum", "minimum"))
divide = _binary("divide", float_only=True)


def _squared(op, xs):
    """x * x, x ** 2 (a Python 2) or np.square(x) of a root `square_of` knows, else None."""
    x = xs[0]
    if not isinstance(x, Value) or not (
            op == "square" and len(xs) == 1
            or op == "multiply" and len(xs) == 2 and (xs[1] is x or _root_like(x)
                                                      and _same_expression(xs[1], x))
            or op == "power" and len(xs) == 2 and type(xs[1]) in (int, float) and xs[1] == 2):
        return None
    return square_of(x)


def _root_like(x):
    """Whether square_of may know x (so that comparing x * y's operands is worth it)."""
    return x.id in x.graph.square_roots or x.node is not None and x.node.op in ("abs", "hypot")


def _same_expression(a, b, budget=256):
    """Whether values a and b are the same computation of the same inputs (np.std(x) *
    np.std(x): two chains of nodes while the user's code is traced, merged only by CSE later,
    after the gradient of a gradient was taken). Compares at most `budget` pairs of nodes."""
    seen, todo = set(), [(a, b)]
    while todo:
        u, v = todo.pop()
        if u is v or (id(u), id(v)) in seen:
            continue
        seen.add((id(u), id(v)))
        if len(seen) > budget or not isinstance(u, Value) or not isinstance(v, Value):
            return False
        nu, nv = u.node, v.node
        if not (nu is not None and nv is not None and nu.op == nv.op
                and nu.attr_key == nv.attr_key and len(nu.inputs) == len(nv.inputs)
                and u.shape == v.shape and u.dtype == v.dtype):
            return False
        todo.extend(zip(nu.inputs, nv.inputs))
    return True


def square_of(x):
    """x * x where x is a square root gradc took of a sum of squares (np.linalg.norm, np.std),
    |a| of a float a, or np.hypot(a, b): that sum, a * a, or a * a + b * b, the same numbers,
    whose derivatives hold at 0 where the root's cannot (the root's gradient there is 0 by
    convention, so the Hessian of norm(x) ** 2 at x = 0 came out 0, not 2I); else None."""
    root = x.graph.square_roots.get(x.id)
    if root is not None and root[0] is x:
        return root[1]
    if x.node is not None and x.node.op == "abs" and x.dtype.kind == "f":
        a = x.node.inputs[0]
        return x.graph.apply("square", (a,)) if a.dtype == x.dtype else None
    if x.node is not None and x.node.op == "hypot":  # (a ** 2 + b ** 2)
        a, b = (x.graph.apply("square", (v,)) for v in x.node.inputs)
        return x.graph.apply("add", (a, b))
    return None


# x op n for a Python int n above (below) every value of x's integer dtype
_HOLDS_ABOVE = {"less": True, "less_equal": True, "not_equal": True, "greater": False,
                "greater_equal": False, "equal": False}
_HOLDS_BELOW = {"less": False, "less_equal": False, "not_equal": True, "greater": True,
                "greater_equal": True, "equal": False}
_MIRROR = {"less": "greater", "less_equal": "greater_equal", "greater": "less",
           "greater_equal": "less_equal", "equal": "equal", "not_equal": "not_equal"}


def compare(op, a, b):
    if type(a) is int and isinstance(b, Value):  # (n < x: as x > n)
        return compare(_MIRROR[op], b, a)
    if type(b) is int and isinstance(a, Value) and a.dtype.kind in "iu" and not is_weak(a):
        info = np.iinfo(a.dtype)
        if not info.min <= b <= info.max:  # (NumPy 2 compares such a Python int exactly)
            holds = (_HOLDS_ABOVE if b > info.max else _HOLDS_BELOW)[op]
            return full(a.graph, a.shape, holds, np.bool_)
    return elementwise(op, a, b)


def unary(op, x, float_only=True):
    (x,) = promote(x, float_only=float_only)
    if op == "square":
        squared = _squared(op, (x,))
        if squared is not None:
            return squared
    if op in ("log", "log1p"):
        stable = stable_form(op, x)
        if stable is not None:
            return stable
    return x.graph.apply(op, (x,))


def stable_form(op, x):
    """log(sigmoid(x)) -> log_sigmoid(x), log(softmax) -> log_softmax, log(exp(x)) -> x,
    log(1 + exp(x)) and log1p(exp(x)) -> softplus(x); else None. passes/simplify.py's stability
    rules, applied as the graph is built too: a gradient taken inside another trace (a
    Hessian's inner one) differentiates what was built, before any pass runs, and the Hessian
    of log(exp(x)) at x = 1000 was NaN (exp(x) / exp(x))."""
    inner = x.node
    if inner is None:
        return None
    if op == "log1p":
        return unary("softplus", inner.inputs[0]) if inner.op == "exp" else None
    if inner.op == "sigmoid":
        return unary("log_sigmoid", inner.inputs[0])
    if inner.op == "softmax":
        return x.graph.apply("log_softmax", inner.inputs, **inner.attr)
    if inner.op == "exp":
        return inner.inputs[0]
    if (inner.op == "add" and const_value(inner.inputs[0]) == 1
            and inner.inputs[1].node is not None and inner.inputs[1].node.op == "exp"):
        return unary("softplus", inner.inputs[1].node.inputs[0])
    return None


def negative(x):
    return unary("negative", x, float_only=False)


def where(cond, a, b):
    like = next(v for v in (cond, a, b) if isinstance(v, Value))
    cond = as_value(cond, like)
    if cond.dtype != np.bool_:
        cond = not_equal(cond, 0)
    if not isinstance(a, Value) and not isinstance(b, Value):  # both Python numbers or arrays
        # (NumPy 2's rule: a Python number is weak beside a NumPy scalar or array,
        # np.where(m, np.float32(1.5), 0) is float32; one past the dtype wraps, as there)
        a, b = (v if isinstance(v, (int, float, bool, np.generic, np.ndarray)) else np.asarray(v)
                for v in (a, b))  # (a list: an array of its own dtype, as NumPy takes it)
        dtype = np.result_type(a, b)
        a, b = (as_value(np.asarray(v).astype(dtype), cond) for v in (a, b))
    a, b = promote(a, b)
    cond, a, b = broadcast_all(cond, a, b)
    return a.graph.apply("where", (cond, a, b))


def not_equal(a, b):
    return compare("not_equal", a, b)


def clip(x, lo, hi):
    # (NumPy's clip is one ufunc of three operands, promoted at once: np.clip(mask, 0,
    # np.int32(3)) is int32, where bool with 0 (int64), then with int32, was int64)
    operands = [x] + [b for b in (lo, hi) if b is not None]
    dtype = np.result_type(*[(v.dtype.type(0).item() if is_weak(v) else np.empty((), v.dtype))
                             if isinstance(v, Value) else np.asarray(v)
                             if isinstance(v, (list, tuple)) else v for v in operands])
    if dtype != x.dtype:
        x = astype(x, dtype)
    if lo is not None:
        x = maximum(x, lo)
    if hi is not None:
        x = minimum(x, hi)
    return x


# ---------------------------------------------------------------------------------------------
# reductions

def normalize_axis(axis, ndim):
    """One axis in range(ndim) (negative counts from the end), as NumPy checks it."""
    a = operator.index(axis)
    if not -ndim <= a < ndim:
        raise ShapeError(f"axis {a} is out of bounds for an array of {ndim} dimensions")
    return a % ndim


def normalize_axes(axis, ndim, sequence=False):
    """Sorted axes in range(ndim) from None (every axis), an int or a tuple of ints. A list
    only where `sequence` (np.flip, np.median...): NumPy's reductions refuse one."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (int, np.integer)):
        axis = (axis,)
    elif isinstance(axis, list) and not sequence:
        raise ArgumentError(f"axis={axis!r}: 'list' object cannot be interpreted as an integer "
                            f"(NumPy's TypeError); give several axes as a tuple, "
                            f"axis={tuple(axis)!r}")
    out = [normalize_axis(a, ndim) for a in axis]
    if len(set(out)) != len(out):
        raise ShapeError(f"repeated axis in {axis}")
    return tuple(sorted(out))


def _drop_axes(shape, axes):
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def reduce(op, x, axis=None, keepdims=False):
    axes = normalize_axes(axis, x.ndim)
    if op == "sum" and (x.dtype == np.bool_ or np.issubdtype(x.dtype, np.signedinteger)):
        x = astype(x, np.int64)  # NumPy sums booleans and small integers as int64
    y = x.graph.apply(op, (x,), axes=axes) if axes else x
    return y if keepdims else reshape(y, _drop_axes(x.shape, axes))


def sum(x, axis=None, keepdims=False):  # noqa: A001 - mirrors np.sum
    return reduce("sum", x, axis, keepdims)


def max(x, axis=None, keepdims=False):  # noqa: A001
    _check_identity("max", x, axis)
    return reduce("max", x, axis, keepdims)


def min(x, axis=None, keepdims=False):  # noqa: A001
    _check_identity("min", x, axis)
    return reduce("min", x, axis, keepdims)


def _check_identity(name, x, axis):
    """max and min have no value for an empty set (NumPy raises, rather than give -inf)."""
    if 0 in [x.shape[a] for a in normalize_axes(axis, x.ndim)]:
        raise ShapeError(f"np.{name} over an axis of length 0 of shape {x.shape}: a reduction "
                         "with no identity has no value there; pass non-empty arrays")


def any(x, axis=None, keepdims=False):  # noqa: A001
    """np.any: the max of the values as booleans."""
    return reduce("max", astype(x, np.bool_), axis, keepdims)


def all(x, axis=None, keepdims=False):  # noqa: A001
    """np.all: the min of the values as booleans."""
    return reduce("min", astype(x, np.bool_), axis, keepdims)


def mean(x, axis=None, keepdims=False):
    axes = normalize_axes(axis, x.ndim)
    count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    if not np.issubdtype(x.dtype, np.floating):
        x = astype(x, np.float64)
    if count == 0:  # as NumPy: NaN (0 / 0) with its warning, which names the user's line
        file, _, line = x.graph.source.rpartition(":")
        warnings.warn_explicit("Mean of empty slice", RuntimeWarning, file,
                               int(line) if line.isdigit() else 0)
        return multiply(sum(x, axes, keepdims), np.nan)
    return multiply(sum(x, axes, keepdims), 1.0 / count)


# ---------------------------------------------------------------------------------------------
# shapes and movement

def reshape(x, shape):
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    shape = list(int(d) for d in shape)
    if shape.count(-1) > 1:
        raise ShapeError(f"can only specify one unknown dimension in reshape {tuple(shape)}")
    if -1 in shape:
        known = int(np.prod([d for d in shape if d != -1], dtype=np.int64))
        if known == 0 or x.size % known:
            raise ShapeError(f"cannot reshape {x.shape} into {tuple(shape)}")
        shape[shape.index(-1)] = x.size // known
    shape = tuple(shape)
    if int(np.prod(shape, dtype=np.int64)) != x.size:
        raise ShapeError(f"cannot reshape array of shape {x.shape} into shape {shape}")
    if shape == x.shape:
        return x
    return x.graph.apply("reshape", (x,), shape=shape)


def transpose(x, axes=None):
    if axes is None:
        perm = tuple(reversed(range(x.ndim)))
    elif len(axes) != x.ndim:
        raise ShapeError(f"axes {tuple(axes)} do not match an array of {x.ndim} dimensions")
    else:
        perm = tuple(normalize_axis(a, x.ndim) for a in axes)
    if sorted(perm) != list(range(x.ndim)):
        raise ShapeError(f"axes {tuple(axes)} are not a permutation of {x.ndim} dimensions")
    if perm == tuple(range(x.ndim)):
        return x
    return x.graph.apply("transpose", (x,), perm=perm)


def swapaxes(x, a, b):
    perm = list(range(x.ndim))
    a, b = normalize_axis(a, x.ndim), normalize_axis(b, x.ndim)
    perm[a], perm[b] = perm[b], perm[a]
    return transpose(x, perm)


def moveaxis(x, source, destination):
    """np.moveaxis: `source` (an axis or a sequence of axes) moves to `destination`."""
    many = not isinstance(source, (int, np.integer))
    source = [normalize_axis(a, x.ndim) for a in (source if many else [source])]
    if isinstance(destination, (int, np.integer)) == many:
        raise ShapeError("moveaxis: `source` and `destination` must both be axes or both be "
                         "sequences of axes")
    destination = [normalize_axis(a, x.ndim) for a in (destination if many else [destination])]
    if len(source) != len(destination):
        raise ShapeError("moveaxis: `source` and `destination` must have the same number of "
                         "elements")
    if len(set(source)) != len(source) or len(set(destination)) != len(destination):
        raise ShapeError("moveaxis: repeated axis")
    perm = [i for i in range(x.ndim) if i not in source]
    for dest, src in sorted(zip(destination, source)):
        perm.insert(dest, src)
    return transpose(x, perm)


def expand_dims(x, axis):
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    axes = normalize_axes(axes, x.ndim + len(axes))
    shape = list(x.shape)
    for a in axes:
        shape.insert(a, 1)
    return reshape(x, shape)


def squeeze(x, axis=None):
    if axis is None:
        axes = [i for i, d in enumerate(x.shape) if d == 1]
    else:
        axes = normalize_axes(axis, x.ndim)
        for a in axes:
            if x.shape[a] != 1:
                raise ShapeError(f"cannot squeeze axis {a} of size {x.shape[a]}")
    return reshape(x, _drop_axes(x.shape, axes))


def slice_(x, starts, stops, steps):
    """Basic slicing with normalized, in-range starts/stops and nonzero steps."""
    starts, stops, steps = tuple(starts), tuple(stops), tuple(steps)
    if starts == (0,) * x.ndim and stops == x.shape and steps == (1,) * x.ndim:
        return x
    return x.graph.apply("slice", (x,), starts=starts, stops=stops, steps=steps)


def concatenate(xs, axis=0):
    xs = promote(*xs)
    nd = xs[0].ndim
    if nd == 0:
        raise ShapeError("zero-dimensional arrays cannot be concatenated")
    axis = normalize_axes(axis, nd)[0]
    for x in xs[1:]:
        if x.ndim != nd or _drop_axes(x.shape, (axis,)) != _drop_axes(xs[0].shape, (axis,)):
            raise ShapeError("all the input array dimensions except for the concatenation axis "
                             f"must match exactly, got {[v.shape for v in xs]}")
    if len(xs) == 1:
        return xs[0]
    if len(xs) > MAX_CONCATENATED:  # (in groups, each one concatenate, then the groups')
        xs = [concatenate(xs[i:i + CONCATENATED_GROUP], axis)
              for i in range(0, len(xs), CONCATENATED_GROUP)]
        return concatenate(xs, axis)
    return xs[0].graph.apply("concatenate", tuple(xs), axis=axis)


# arrays one concatenate joins: its kernel copies each in a loop of its own, and LLVM's time on
# a kernel grows faster than its arrays (np.concatenate of 200 pieces: one kernel of 800
# arguments, most of a 6.5 s compile; in groups of 32, 1.6 s). (W8's 48 steps stay one: in
# groups, their step was 4% slower)
MAX_CONCATENATED, CONCATENATED_GROUP = 64, 32


def stack(xs, axis=0):
    like = next(x for x in xs if isinstance(x, Value))
    xs = [as_value(x, like) for x in xs]
    shapes = {x.shape for x in xs}
    if len(shapes) != 1:
        raise ShapeError(f"all input arrays must have the same shape, got {[x.shape for x in xs]}")
    axis = normalize_axis(axis, xs[0].ndim + 1)  # (the result's axes: NumPy's AxisError)
    return concatenate([expand_dims(x, axis) for x in xs], axis)


def _static_indices_in_range(indices, n, mode, name):
    """NumPy's IndexError for a static index out of [-n, n), while tracing (where the user's
    `except IndexError` sees it), not when the compiled function runs."""
    if isinstance(indices, Value) or mode != "raise":
        return
    bad = np.asarray(indices)
    if bad.size and np.issubdtype(bad.dtype, np.integer):
        bad = bad[(bad < -n) | (bad >= n)]
        if bad.size:
            raise IndexOutOfRangeError(f"{name}: index {bad.flat[0]} is out of bounds for axis "
                                       f"with size {n} (NumPy's IndexError)")


def take(x, indices, axis=None, mode="raise"):
    """np.take; mode "raise" checks the indices when the compiled function runs, "wrap" and "clip"
    bring them into range first."""
    if axis is None:
        x, axis = reshape(x, (x.size,)), 0
    axis = normalize_axis(axis, x.ndim)
    if type(indices) in (list, tuple) and np.size(indices) == 0:  # (an empty list: integers
        indices = np.zeros(np.shape(indices), np.int64)  # to NumPy's take, as x[[]] reads it)
    _static_indices_in_range(indices, x.shape[axis], mode, "take")
    idx = indices if isinstance(indices, Value) else as_value(np.asarray(indices), x)
    if not np.issubdtype(idx.dtype, np.integer):
        raise UnsupportedOpError(f"take needs integer indices, got {idx.dtype}")
    idx = astype(idx, np.int64)
    n = x.shape[axis]
    if mode == "wrap":
        idx = remainder(idx, n)
    elif mode == "clip":
        idx = clip(idx, 0, n - 1)
    elif mode != "raise":
        raise ValueError(f"take: mode must be 'raise', 'wrap' or 'clip', got {mode!r}")
    return x.graph.apply("take", (x, idx), axis=axis)


def take_along_axis(x, indices, axis):
    if axis is None:  # as NumPy: along the flattened array
        x, axis = reshape(x, (x.size,)), 0
    axis = normalize_axis(axis, x.ndim)
    _static_indices_in_range(indices, x.shape[axis], "raise", "take_along_axis")
    idx = as_value(indices, x)
    if not np.issubdtype(idx.dtype, np.integer):
        raise UnsupportedOpError(f"take_along_axis needs integer indices, got {idx.dtype}")
    if idx.ndim != x.ndim:
        raise ShapeError(f"indices of {idx.ndim} dimensions for an array of {x.ndim}")
    shape = list(x.shape)
    shape[axis] = idx.shape[axis]
    return x.graph.apply("take_along_axis", (x, broadcast_to(astype(idx, np.int64), shape)),
                         axis=axis)


# ---------------------------------------------------------------------------------------------
# linear algebra

def matmul(a, b):
    a, b = promote(a, b)
    if a.dtype == np.bool_:  # NumPy's boolean product is an "or" of "and"s: a count > 0
        return astype(matmul(astype(a, np.int64), astype(b, np.int64)), np.bool_)
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError("matmul: input operand does not have enough dimensions (use * for scalars)")
    if a.ndim == 1 and b.ndim == 1:
        return reshape(matmul(reshape(a, (1, -1)), reshape(b, (-1, 1))), ())
    if a.ndim == 1:
        out = matmul(reshape(a, (1, -1)), b)
        return reshape(out, out.shape[:-2] + out.shape[-1:])
    if b.ndim == 1:
        out = matmul(a, reshape(b, (-1, 1)))
        return reshape(out, out.shape[:-1])
    if a.shape[-1] != b.shape[-2]:
        raise ShapeError(f"matmul: shapes {a.shape} and {b.shape} do not align "
                         f"({a.shape[-1]} != {b.shape[-2]})")
    if a.ndim == 2 and b.ndim == 2:
        return a.graph.apply("matmul", (a, b), ta=False, tb=False)
    if b.ndim == 2:  # (..., m, k) @ (k, n): fold the batch into rows
        rows = math.prod(a.shape[:-1])  # (not -1: unknowable where k = 0)
        out = a.graph.apply("matmul", (reshape(a, (rows, a.shape[-1])), b), ta=False, tb=False)
        return reshape(out, a.shape[:-1] + (b.shape[-1],))
    batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a = broadcast_to(a, batch + a.shape[-2:])
    b = broadcast_to(b, batch + b.shape[-2:])
    nb = int(np.prod(batch, dtype=np.int64))
    out = a.graph.apply("bmm", (reshape(a, (nb,) + a.shape[-2:]), reshape(b, (nb,) + b.shape[-2:])),
                        ta=False, tb=False)
    return reshape(out, batch + out.shape[-2:])


def dot(a, b):
    """np.dot: for a 0-d operand, multiplication; otherwise the sum over the last axis of a and
    the second-to-last axis of b (its only axis if b is 1-D), giving the shape
    a.shape[:-1] + b.shape[:-2] + b.shape[-1:]. Unlike matmul, the leading axes of b do not
    broadcast against a's: each pairs with every row of a."""
    a, b = _as_arrays(a, b)
    if a.ndim == 0 or b.ndim == 0:
        return multiply(a, b)
    k_axis = b.ndim - 2 if b.ndim >= 2 else 0
    if a.shape[-1] != b.shape[k_axis]:
        raise ShapeError(f"dot: shapes {a.shape} and {b.shape} are not aligned: "
                         f"{a.shape[-1]} (dim {a.ndim - 1}) != {b.shape[k_axis]} (dim {k_axis})")
    if b.ndim <= 2:  # matmul's rule is dot's here (a's leading axes fold into rows)
        return matmul(a, b)
    # b's contracted axis first and its other axes folded into columns: one 2-D product
    k, n = b.shape[-2], b.shape[-1]
    rows = int(np.prod(a.shape[:-1], dtype=np.int64))
    cols = int(np.prod(b.shape[:-2], dtype=np.int64)) * n
    out = matmul(reshape(a, (rows, k)), reshape(moveaxis(b, -2, 0), (k, cols)))
    return reshape(out, a.shape[:-1] + b.shape[:-2] + (n,))


def outer(a, b):
    """np.outer: every element of a (flattened) times every element of b (flattened)."""
    a, b = _as_arrays(a, b)
    return multiply(reshape(a, (a.size, 1)), reshape(b, (1, b.size)))
