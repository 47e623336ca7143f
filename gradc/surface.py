"""The NumPy surface of a traced value: the operators, indexing, the ndarray methods and
attributes, and the errors for what cannot be traced (branching on a value, converting it to a
NumPy array, item assignment). Importing this module installs them onto `ir.Value`; the ufunc and
function tables they reach are in gradc/trace.py.
"""
from __future__ import annotations

import dis
import functools
import operator
import os
import sys

import numpy as np

from . import indexing
from .functions.elementwise import imaginary_part
from .errors import ArgumentError, GradcError, ShapeError, TracedBranchError, UnsupportedOpError
from .handlers import refuse_caught_index_error
from .ir import LAYOUT_HINT, Value
from .ops import fn
from .selection import Selection
from .trace import (_NUMPY_DIR, UFUNCS, _array_function, _array_ufunc, _call_numpy, _clip_method, _describe,
                    _integer_powers_checked, _numpy_dtype_checked, _order, _reshape_in_order,
                    _user_frame, augmented_store, copy, is_zero_d_array, library_call,
                    mark_view, note_zero_d_arrays, stores_back, traced, user_source)


# ---------------------------------------------------------------------------------------------
# indexing

def _getitem(x, index):
    """Basic indexing (integers, slices, None, ...) as views; index arrays as one gather along an
    axis where they are one array on one axis (or x[np.arange(n), labels]), else as a gather of
    the flattened x (gradc/indexing.py: NumPy's full rules, static boolean masks too)."""
    if not isinstance(index, tuple):
        index = (index,)
    # a list or range is an index array (as in NumPy; a list holding traced integers becomes a
    # traced array)
    index = tuple(map(indexing.sequence_index, index))
    arrays = [k for k, i in enumerate(index) if isinstance(i, (Value, np.ndarray, bool, np.bool_))]
    if not arrays:
        out = _basic_index(x, index)
        # (NumPy's result is a view, unless every axis takes an integer: a scalar, a copy;
        # a 0-d array's a[()] too)
        if x.ndim == 0 and not is_zero_d_array(x) and out.ndim == 0 and Ellipsis in index:
            return note_zero_d_arrays(copy(x))  # (a NumPy scalar's s[...]: a new 0-d array)
        if not (len(index) == x.ndim and all(isinstance(i, (int, np.integer)) for i in index)):
            out = mark_view(x, out)
            x.graph.view_keys[out.id] = index
        elif out is x:
            out = copy(x)
        return out
    if any(isinstance(index[k], Value) and index[k].dtype == np.bool_ for k in arrays):
        mask = index[0]
        if len(index) == 1 and mask.ndim and mask.shape == x.shape[:mask.ndim]:
            return Selection.of(x, mask)  # (x[mask]: kept in place, gradc/selection.py)
        raise UnsupportedOpError(indexing._MASK_ERROR)
    for k in arrays:  # (masks and index tables compiled in: trace._warn_derived_constants)
        if type(index[k]) is np.ndarray:
            x.graph.constant_arrays[id(index[k])] = index[k]
    refuse_caught_index_error(*(index[k] for k in arrays))
    first = x.graph._next_id
    fast = _one_axis_index(x, index, arrays)
    out = fast if fast is not None else indexing.gather(x, index)
    out = copy(out) if out.id < first else out  # (NumPy's is a copy: an all-True mask's too)
    if all(_scalar_integer(index[k]) for k in arrays) and not (
            len(index) == x.ndim and all(isinstance(i, (int, np.integer, Value)) for i in index)):
        # (NumPy indexes by a NumPy integer scalar, np.argmax's, as by an int: a view, which a
        # store through it or into x shows, as a view by a static int does)
        out = mark_view(x, out)
        x.graph.view_keys[out.id] = index
    return out


def _scalar_integer(i):
    """Whether the index entry i is a traced NumPy integer scalar (not a 0-d array)."""
    return (isinstance(i, Value) and i.ndim == 0 and np.issubdtype(i.dtype, np.integer)
            and not is_zero_d_array(i))


def _one_axis_index(x, index, arrays):
    """The common patterns, each one gather along an axis: `x[np.arange(n), labels]`
    (take_along_axis) and one integer array on one axis, every other axis whole (np.take)."""
    if (len(index) == 2 and arrays == [0, 1] and x.ndim == 2 and _concrete(index[0])
            and np.array_equal(index[0], np.arange(x.shape[0]))
            and _integer(index[1]) and np.ndim(index[1]) == 1
            and (index[1].shape[0] == x.shape[0])):
        labels = fn.as_value(index[1], x)
        return fn.reshape(fn.take_along_axis(x, fn.reshape(labels, (-1, 1)), 1), (x.shape[0],))
    if len(arrays) == 1 and _integer(index[arrays[0]]) and np.ndim(index[arrays[0]]) > 0 and all(
            isinstance(i, slice) and i == slice(None) for k, i in enumerate(index)
            if k != arrays[0]):
        axis, idx = arrays[0], index[arrays[0]]
        if not isinstance(idx, Value):  # (static indices are checked now, not when it runs)
            idx = indexing._checked(idx, x.shape[axis], x)
        return fn.take(x, idx, axis=axis)
    return None


def _concrete(a):
    """A NumPy array known while tracing (a traced value passes isinstance(a, np.ndarray):
    its __class__ says so, for the user's code)."""
    return isinstance(a, np.ndarray) and not isinstance(a, Value)


def _integer(i):
    return not isinstance(i, (bool, np.bool_)) and np.issubdtype(i.dtype, np.integer)


def _basic_index(x, index):
    starts, stops, steps, out_shape = indexing.basic_slices(x.shape, index)
    return fn.reshape(fn.slice_(x, starts, stops, steps), out_shape)


# ---------------------------------------------------------------------------------------------
# the Value surface

def _branch_error(what, hint=""):
    def raise_(self, *args):
        if self.size != 1 and what in _OF_ONE_ELEMENT and not (what == ".item()" and args):
            # (NumPy's refusal, by the shape alone; x.item(1) takes an element of any array)
            error, message = _OF_ONE_ELEMENT[what]
            raise error(f"{what} of a traced array of shape {self.shape}: {message} (NumPy's "
                        "refusal, whatever the values)", source=user_source())
        builtin = _builtin_called()
        if what.startswith("bool()") and _asserting(_user_frame()[0]):
            raise TracedBranchError(
                "an assert on traced values (`assert np.allclose(p.sum(1), 1)`): NumPy checks it "
                "on every call, and a compiled function cannot stop on its values. Check the "
                "inputs before the call (outside the compiled function), or drop the assert "
                "from the traced code", source=user_source())
        raise TracedBranchError(
            (f"{builtin}() of traced values compares them with bool(), whose value is not known "
             f"while tracing: use {_NUMPY_FOR[builtin]}" if builtin else
             f"{what} on a traced value: its value is not known while tracing. Use np.where for "
             f"data-dependent choices, or pass the value as a static Python number{hint}"),
            source=user_source())
    return raise_


# what NumPy refuses of an array that has not one element, whatever its values
_OF_ONE_ELEMENT = {
    "bool() (an `if`, `while`, `and`/`or` or assert)": (
        ShapeError, "the truth value of an array with more than one element (or none) is "
        "ambiguous; use a.any() or a.all()"),
    "float()": (ArgumentError, "only length-1 arrays can be converted to Python scalars"),
    "int()": (ArgumentError, "only length-1 arrays can be converted to Python scalars"),
    "complex()": (ArgumentError, "only length-1 arrays can be converted to Python scalars"),
    ".item()": (ShapeError, "can only convert an array of size 1 to a Python scalar")}


# (Python's builtins that compare their arguments, and NumPy's way to write each)
_NUMPY_FOR = {"max": "np.maximum(a, b) (or np.max of an array)",
              "min": "np.minimum(a, b) (or np.min of an array)",
              "sorted": "np.sort of an array", "any": "np.any", "all": "np.all"}


def _builtin_called():
    """The name of the builtin (max, min, sorted, any, all) the user's line calls where a bool()
    of a traced value came from inside it, or None."""
    frame, library = _user_frame()
    if frame is None or library is not None:
        return None
    names = {ins.argval for ins in dis.get_instructions(frame.f_code)
             if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME")
             and getattr(ins.positions, "lineno", None) == frame.f_lineno}  # (3.11 on)
    step = _current_step(frame)
    return next((n for n in _NUMPY_FOR if n in names), None) if step and step.startswith(
        ("CALL", "PRECALL")) else None


# (the math module's functions take float() of their argument)
_MATH_HINT = "; math.exp, math.log, math.sqrt... call float(): use np.exp, np.log, np.sqrt"
_FLOAT_HINT = ("; where float() only makes a number of a 0-d array (`cost = float(np.squeeze("
               "cost))`), drop it: a 0-d array works wherever NumPy takes a number")


def _round(x, ndigits=None):
    """Python's round() of a traced value, as of a NumPy one: of an array, NumPy's TypeError;
    without ndigits, a Python int (its value unknown while tracing, as int()'s); with ndigits,
    a number of the value's dtype."""
    if x.ndim != 0:  # (an ArgumentError: a TypeError, as NumPy's)
        raise ArgumentError(
            f"round() of a {x.ndim}-d array: NumPy arrays have no round() (a TypeError); use "
            "np.round(x, decimals)", source=user_source())
    if ndigits is None:
        _branch_error("round() (a Python int)", "; np.round(x) rounds to a float of x's dtype, "
                      "np.round(x).astype(np.int64) to an integer array")(x)
    return _python_result(np.round(x, ndigits), x)


def _format_error(value, spec):
    """f"{loss:.4f}" in traced code: the number is not known while tracing."""
    raise TracedBranchError(
        f"formatting a traced value (f\"{{x:{spec}}}\") while tracing: its number is not known "
        "until the compiled function runs, and a print in traced code runs once, when traced. "
        "Return the value (has_aux=True for a gradient) and print it after the call",
        source=user_source())


_SYMBOL = {operator.add: "+", operator.sub: "-", operator.mul: "*", operator.truediv: "/",
           operator.pow: "**", operator.floordiv: "//", operator.mod: "%"}


def _binary(f, reflected=False, op=None):
    """A Python operator; with `op` (its function in the operator module), after NumPy's own
    check of the operands' dtypes (NumPy refuses `mask - mask`) and of the result's."""
    if op is not None:
        f = _numpy_dtype_checked(op, f, f"the {_SYMBOL[op]} operator")
    if reflected:
        return traced(lambda self, other, *mod: _python_result(
            f(other, self) if not mod else _three_argument_pow(self), self, other))
    return traced(lambda self, other, *mod: _python_result(
        f(self, other) if not mod else _three_argument_pow(self), self, other))


def _compared_with_objects(compare, answer):
    """`x == None`, `x != "auto"` (`scale in (None, "auto")`), `x == {}`: NumPy's answer is
    known while tracing, a Python bool for a number and that bool everywhere for an array; else
    `compare`."""
    def impl(self, other):
        if _no_number(other) or type(other) is object:  # (x == {}: NumPy's elementwise False)
            if self.ndim == 0:  # (a NumPy scalar's is a bool, a 0-d array's np.bool_)
                return np.bool_(answer) if is_zero_d_array(self) else answer
            return fn.as_value(np.full(self.shape, answer), self)
        return compare(self, other)
    return impl


def _no_number(other):
    """Whether `other` is None, text or a dict or set: nothing NumPy compares elementwise."""
    return other is None or isinstance(other, (str, bytes, dict, set, frozenset))


def _ordered(compare, symbol):
    """`x < None`, `x >= "a"`: NumPy's TypeError (no order between them); else `compare`."""
    def impl(self, other):
        if _no_number(other):
            raise ArgumentError(f"'{symbol}' not supported between instances of "
                                f"'numpy.ndarray' and '{type(other).__name__}' (NumPy's "
                                "TypeError)", source=user_source())
        return compare(self, other)
    return impl


def _three_argument_pow(x):
    """pow(x, y, m) of an array: NumPy's TypeError (its operators take no modulus)."""
    raise ArgumentError("pow(x, y, mod) of arrays: unsupported operand type(s) for ** or pow() "
                        "(NumPy's TypeError); write np.mod(x ** y, mod)", source=user_source())


def _python_result(out, *operands):
    """A Python operator's result: weak when its operands are weak values and Python numbers,
    as Python arithmetic on Python floats gives a Python float (NumPy functions do not: their
    results are NumPy values)."""
    if not (isinstance(out, Value) and np.issubdtype(out.dtype, np.floating)) or not all(
            fn.is_weak(x) or isinstance(x, (int, float)) and not isinstance(x, np.generic)
            for x in operands):
        return out
    # (an alias of its own: `out` may also be the result of a NumPy call, which stays strong)
    weak = out.graph.apply("alias", (out,), tag="weak")
    out.graph.weak.add(weak.id)
    return weak


def _method(func):
    """`x.name(...)` as `np.name(x, ...)`: these methods take the function's arguments after the
    array."""
    name = "." + func.__name__
    return traced(lambda self, *args, **kwargs: _call_numpy(func, (self,) + args, kwargs, name))


def _reshape_method(self, *shape, order="C", copy=None):
    if not shape:
        raise TypeError(".reshape() needs the new shape")
    if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
        shape = shape[0]
    out = _reshape_in_order(self, shape, _order(order, ".reshape", self))
    return _new_array(out) if copy else _viewed(self, out)  # (copy=True: a new array)


def _transpose_method(self, *axes):
    if len(axes) == 1 and (axes[0] is None or not isinstance(axes[0], (int, np.integer))):
        axes = axes[0]
    return _viewed(self, fn.transpose(self, axes or None))


def _viewed(base, out):
    return mark_view(base, out)


def _in_place(symbol, binary):
    """`x op= y`. NumPy writes the result into x's memory: the array object x takes the new
    value (Graph.take_over), so every name, list, dict entry and view by basic indexing that
    holds x sees it (`d["k"] *= 3`, `hs.append(h); h *= 0.9`), and what read x before keeps the
    old value; x a view by basic indexing writes into its array (`_indexed_base`). Other views
    of x (transposes, reshapes) and the array another view x is were retired: refused when
    read. A number (a NumPy scalar, a Python float) is bound anew, as NumPy's. Refused at once:
    x an argument of the traced function or a view of one (NumPy would write into the
    caller's array), a view of a NumPy array from outside, and NumPy's read-only views."""
    def impl(self, other):
        why = _unwritable(self)
        if why is not None and not stores_back(sys._getframe(1)):  # (x[i] += y: the store
            # into x that follows is what is refused, or not)
            name = self.name or f"a {self.type_str} array"
            raise UnsupportedOpError(
                f"{symbol}= on {name}: {why}. Write a new array, x = x {symbol} y (return it for "
                "the caller), or update the array a view was taken of with "
                "gradc.at(x)[index].add(y) (.set, .multiply...)"
                + (LAYOUT_HINT if _through_layout_view(self) else ""), source=user_source())
        new = _written_back(self, binary(self, other), symbol)
        graph = self.graph
        if why is not None and _of_an_argument(self) and new is not self:
            graph.argument_updates[id(new)] = (  # (`p["W"] -= g`: trace.py refuses its store
                f"{symbol}= on {self.name or 'an entry'}: {why}. Write a new array into the "
                f"entry, p[k] = p[k] {symbol} g (the caller's array then stays as it is: NumPy's "
                "would change, and every other holder of it with it), or update the arrays "
                "outside the compiled function", user_source())
        if (why is not None or new is self or self.ndim == 0 and not is_zero_d_array(self)
                or self.id in graph.weak):
            return new  # (a number: bound anew)
        if self.id in graph.stale:
            graph.refuse_stale(self, f"{symbol}= writes into")
        _takes(self, new)
        return self
    return impl


def _of_an_argument(x):
    """Whether x is an argument of the traced function or a view of one."""
    root = _viewed_array(x)
    return root is not None and root.node is None and root.id not in x.graph.scalar_inputs


def _unwritable(x):
    """Why NumPy's write into the traced array x in place cannot be followed, or None."""
    root = _viewed_array(x)
    if root is None or _of_an_argument(x):
        return ("it is an argument of the traced function, or a view of one: NumPy would "
                "write into the caller's array, and gradc never changes its inputs"
                if root is not None else
                "it is a view of a NumPy array from outside the function, which a compiled "
                "function cannot change")
    if x.id in x.graph.unfollowed:
        return ("it is NumPy's view of an array the function made with NumPy, taken by a traced "
                "integer (`row = buf[np.argmax(x)]`), whose stores would reach that array: "
                "store by its name instead (buf[i] += v), or make it traced from the start "
                "(np.zeros_like(x))")
    if x.id in x.graph.read_only:
        return ("NumPy's view is read-only (output array is read-only; np.broadcast_arrays' "
                "results still take a write with a DeprecationWarning, and a broadcast "
                "element is written through every place it appears)")
    return None


def _retire_viewed(x):
    """The array the view x was taken of retired too (x itself is, by _written_back)."""
    root = _viewed_array(x)
    if root is not x and x.size:  # (an empty view changes nothing)
        _retire(root, user_source(), _through_layout_view(x))


def where_mask(where, like, name):
    """A ufunc's `where=` as a traced boolean value."""
    mask = where if isinstance(where, Value) else fn.as_value(np.asarray(where), like)
    if not np.can_cast(mask.dtype, np.bool_, casting="safe"):
        raise ArgumentError(f"{name}(where=...): Cannot cast array data from "
                            f"dtype('{mask.dtype}') to dtype('bool') according to the rule "
                            "'safe' (NumPy's refusal)", source=user_source())
    return mask


def masked_inputs(args, where, like, name):
    """A ufunc's traced float operands under `where=`, broadcast with the mask: their gradient
    kept where the mask holds (ops/elementwise.py masked_gradient), since NumPy computes
    nothing elsewhere."""
    mask = where_mask(where, like, name)
    shape = fn.broadcast_shapes(mask.shape, *[np.shape(a) for a in args])
    mask = fn.broadcast_to(mask, shape)
    return [mask.graph.apply("masked_gradient", (mask, fn.broadcast_to(a, shape)))
            if isinstance(a, Value) and a.dtype.kind == "f" else a for a in args]


def written_out(out, value, where, name, casting="same_kind"):
    """`name(..., out=out, where=where)`: the ufunc's `value` written into the traced array
    `out` as NumPy writes it (broadcast to out's shape, cast by the same_kind rule, where
    `where` holds; out's old elements elsewhere) and returned: out itself, which takes the new
    value as a store `out[...] = value` does (`_setitem`: every name holding out sees it)."""
    if not isinstance(out, Value) or out.ndim == 0 and not is_zero_d_array(out):
        raise ArgumentError(f"{name}(out=...) takes an array (NumPy: return arrays must be of "
                            "ArrayType)", source=user_source())
    if out.id in out.graph.stale:  # (out= an array an earlier out= or x += y replaced)
        out.graph.refuse_stale(out, f"{name}(out=...) writes into")
    why = _unwritable(out)
    if why is not None:
        raise UnsupportedOpError(
            f"{name}(out=...) into {out.name or f'a {out.type_str} array'}: {why}. Use the "
            f"result as a new array (r = {name}(...) without out=, np.where(mask, r, old) for "
            "where=)", source=user_source())
    if fn.broadcast_shapes(value.shape, out.shape) != out.shape:
        raise ArgumentError(f"{name}: non-broadcastable output operand with shape {out.shape} "
                            f"doesn't match the broadcast shape {value.shape} (NumPy's refusal)",
                            source=user_source())
    if value.dtype != out.dtype:
        if not np.can_cast(value.dtype, out.dtype, casting=casting):
            raise ArgumentError(
                f"{name}: Cannot cast ufunc output from dtype('{value.dtype}') to "
                f"dtype('{out.dtype}') with casting rule '{casting}' (NumPy's refusal)",
                source=user_source())
        value = fn.astype(value, out.dtype)
    value = fn.broadcast_to(value, out.shape)
    if where is not True:
        value = fn.where(fn.broadcast_to(where_mask(where, out, name), out.shape), value, out)
    _setitem(out, (Ellipsis,), value)  # (out takes it: every name of out sees it, as NumPy's)
    return out


_UFUNC_OF = {"+": "add", "-": "subtract", "*": "multiply", "/": "divide", "//": "floor_divide",
             "%": "remainder", "**": "power", "@": "matmul", "&": "bitwise_and",
             "|": "bitwise_or", "^": "bitwise_xor", "<<": "left_shift", ">>": "right_shift"}


SYMBOL_OF = {getattr(np, name): symbol for symbol, name in _UFUNC_OF.items()}


def fitted_into(shape, dtype, out, symbol):
    """The result `out` of `x op= y` as NumPy writes it into an x of `shape` and `dtype`: of x's
    shape (NumPy refuses a result that broadcasts x to more), cast by the same_kind rule."""
    ufunc = _UFUNC_OF.get(symbol, symbol)
    if out.shape != shape:
        raise ArgumentError(
            f"{symbol}= : non-broadcastable output operand with shape {shape} doesn't match "
            f"the broadcast shape {out.shape} (NumPy's refusal: the result must fit in x). "
            f"Write x = x {symbol} y for a new array", source=user_source())
    if out.dtype != dtype:
        if not np.can_cast(out.dtype, dtype, casting="same_kind"):
            raise ArgumentError(
                f"{symbol}= : Cannot cast ufunc '{ufunc}' output from dtype('{out.dtype}') to "
                f"dtype('{dtype}') with casting rule 'same_kind' (NumPy's refusal: the result "
                f"is written into x). Write x = x {symbol} y for a new {out.dtype} array",
                source=user_source())
        out = fn.astype(out, dtype)
    return out


def _written_back(x, out, symbol):
    """`x op= y`'s result as NumPy writes it into x: of x's shape (NumPy refuses a result that
    broadcasts x to more), cast to x's dtype where NumPy's same_kind rule allows (float32 +=
    float64 stays float32, int32 += int64 wraps; int64 *= 0.5 is refused). A number (0-d: a
    NumPy scalar, a Python float) is immutable: `x += 1` binds x anew in NumPy too, with its
    result's dtype and shape, returned as it is."""
    graph = x.graph
    if x.ndim == 0 and not is_zero_d_array(x) or x.id in graph.weak:
        return out  # (a number: bound anew, as NumPy's scalars are; a 0-d array is written)
    out = fitted_into(x.shape, x.dtype, out, symbol)
    return note_zero_d_arrays(out) if x.ndim == 0 else out  # (still the 0-d array it was)


def _retire(x, source, through_layout=False):
    """x and every view taken of it (of them...) retired: changed in place at `source`, through
    a reshape NumPy may have copied (Graph.layout_views) if `through_layout`."""
    graph, pending = x.graph, [(x, through_layout)]
    while pending:
        v, through = pending.pop()
        if v.id not in graph.stale:
            graph.retire(v, source)
            through = through or v.id in graph.layout_views
            if through:
                graph.stale_through_layout.add(v.id)
            pending += [(w, through) for w in graph.views_of.get(v.id, [])]


def _through_layout_view(x):
    """Whether the view x is, or views, a reshape NumPy may have copied (Graph.layout_views)."""
    graph = x.graph
    while x is not None and x.id in graph.views:
        if x.id in graph.layout_views:
            return True
        x = graph.view_base.get(x.id)
    return False


def _viewed_array(x):
    """The array x views (through views of views), x itself if it is no view, or None for a
    view of an array from outside the function (a NumPy constant)."""
    graph = x.graph
    while x.id in graph.views:
        x = graph.view_base.get(x.id)
        if x is None:
            return None
    return x


def _set_real(self, value):
    raise UnsupportedOpError("x.real = ... writes into x in place, and traced arrays are never "
                             "written in place: make a new array (x = np.broadcast_to(value, "
                             "x.shape).astype(x.dtype) for a real x)", source=user_source())


def _astype_method(self, dtype, order="K", casting="unsafe", subok=True, copy=True):
    out = fn.astype(self, dtype)
    out = _new_array(out) if out is self and copy else out  # (NumPy's astype copies)
    return _like_array(self, out)


def _copy_method(self, order="C"):
    return _like_array(self, copy(self))


def _like_array(x, out):
    """`out`, made by a method of x that keeps what x is: a 0-d array's .copy() and .astype()
    are 0-d arrays, a NumPy scalar's are scalars."""
    return note_zero_d_arrays(out) if x.ndim == 0 and is_zero_d_array(x) else out


_new_array = copy


def _iter(self):
    if not self.shape:  # (NumPy's TypeError, named)
        raise ArgumentError("iteration over a 0-d traced value (an array of no dimensions: a "
                            "sum, a mean, a scalar argument); NumPy refuses it too",
                            source=user_source())
    return (self[i] for i in range(self.shape[0]))


def _in_numpy_call(qualname_prefix, user):
    """Whether a NumPy function or method whose qualified name starts so is running between
    here and the user's frame `user` (np.vectorize's __call__: "vectorize.")."""
    frame = sys._getframe(2)
    while frame is not None and frame is not user:
        code = frame.f_code
        if (getattr(code, "co_qualname", code.co_name).startswith(qualname_prefix)
                and os.path.abspath(code.co_filename).startswith(_NUMPY_DIR + os.sep)):
            return True
        frame = frame.f_back
    return False


def _array(self, *args, **kwargs):
    user, library = _user_frame()
    if library is not None:  # (scipy.special.logsumexp(x): its np.asarray)
        raise TracedBranchError(library_call(library), source=user_source())
    step = _current_step(user)
    if step == "BINARY_SUBSCR":  # (table[i]: NumPy's indexing reads i as an array)
        why = ("a traced index into a NumPy array whose own indexing cannot take it (`table[i]` "
               "of an np.memmap or another ndarray subclass; gradc takes over a plain ndarray's, "
               "subscript.py). Write np.take(table, i, axis=0) (rows; index its result further: "
               "np.take(P, i, axis=0)[np.arange(len(i)), j] for P[i, j]) or "
               "gradc.nn.embedding(table, i), or pass the table as an argument")
    elif step == "STORE_SUBSCR":  # (buf[t] = x.dot(W): the store, not the product)
        raise UnsupportedOpError(_STORE_INTO_NUMPY, source=user_source())
    elif _line_reads_attribute(user, "dot"):  # (A.dot(x): NumPy's method converts x)
        why = ("a traced value given to a NumPy array's .dot method (`A.dot(x)`, with A a NumPy "
               "array), which converts it to an array: write A @ x or np.dot(A, x) (x.dot(A) "
               "traces too)")
    elif _in_numpy_call("vectorize.", user):  # (its __call__ converts its inputs)
        why = ("np.vectorize calls its Python function once per element, on NumPy scalars, "
               "which gradc cannot trace: write the function over whole arrays (NumPy's "
               "operators and functions broadcast; np.where(cond, a, b) for an `if`)")
    elif scalar_type := next((t for t in _SCALAR_TYPES if _line_reads_attribute(user, t)), None):
        why = (f"np.{scalar_type}(x) makes a NumPy scalar of a traced value, which has no "
               f"number until the compiled function runs: write x.astype(np.{scalar_type}) "
               "(a 0-d array of that dtype, which stays traced)")
    else:
        why = (
            "a traced value was converted to a NumPy array (np.asarray, np.array, or a NumPy "
            "function gradc does not trace); keep traced values symbolic: use the NumPy "
            "functions, operators and gradc.nn functions listed in the README. A traced index "
            "into an array NumPy indexes itself (`table[i]` of an np.memmap) is such a "
            "conversion: write np.take(table, i, axis=0) or gradc.nn.embedding(table, i), or "
            "pass the table as an argument. A list of traced values: call np.array([...]) or np.stack as attributes "
            "of the numpy module (a function imported by name, `from numpy import array`, is "
            "NumPy's own and cannot take traced values)")
    raise TracedBranchError(why, source=user_source())


# (one message and class for `a[i] = v` into a NumPy array however NumPy met the traced value:
# as the value, as an index, through float() of a scalar: trace.py's _traced_value_into_...)
_STORE_INTO_NUMPY = (
    "a store of a traced value, or at a traced index, into a NumPy array (`a[i] = v`) that is not "
    "one the function made and holds by its local names alone (an array from outside the "
    "function, a view, one a list, an attribute or another function holds): a NumPy array "
    "cannot hold traced values, since the function's Python runs once, when traced. Make the "
    "array traced from the start (a = np.zeros_like(x), a = x.copy(); stores into it are "
    "NumPy's), build it from the values (np.stack([...]) or np.array([...]) of them), or "
    "update it out of place: a = gradc.at(a)[i].set(v)")


_SCALAR_TYPES = ("float64", "float32", "int64", "int32", "bool_", "double", "single", "intp")


def _line_reads_attribute(frame, name):
    """Whether the line `frame` runs reads an attribute `name` (`A.dot(x)`)."""
    if frame is None:
        return False
    return any(ins.opname in ("LOAD_ATTR", "LOAD_METHOD") and ins.argval == name
               and ins.positions.lineno == frame.f_lineno
               for ins in dis.get_instructions(frame.f_code))


def _asserting(frame):
    """Whether `frame` runs an assert's test: the jump over its raise (LOAD_ASSERTION_ERROR)."""
    from .trace import _instructions_from
    steps = [ins.opname for ins in _instructions_from(frame)[:3] if ins.opname != "CACHE"]
    return len(steps) > 1 and "JUMP" in steps[0] and steps[1] == "LOAD_ASSERTION_ERROR"


def _current_step(frame):
    """The name of the bytecode instruction `frame` is running (BINARY_SUBSCR for `a[i]`), or
    None."""
    if frame is None:
        return None
    for instruction in dis.get_instructions(frame.f_code):
        if instruction.offset == frame.f_lasti:
            return instruction.opname
    return None


def _setitem(self, index, value):
    """`x[index] = value`. NumPy writes into x's memory; gradc's values are immutable, so the
    array object x (what every name, list and attribute holding it sees, as they see NumPy's
    one array) takes the updated array, gradc.at(x)[index].set(value), and the value it held
    goes on for what read it before (Graph.take_over). Views taken of x before, and the array
    x views, are retired (Graph.retire): NumPy's show the store, gradc's cannot. Refused as
    `x += y` is: x an argument or a view of one, a view of an outside array, a read-only
    view; and a number (NumPy's scalars take no stores)."""
    graph = self.graph
    if self.ndim == 0 and not is_zero_d_array(self) or self.id in graph.weak:
        raise ArgumentError(f"x[...] = v on a number ({self.type_str}: a NumPy scalar, which "
                            "NumPy refuses too: 'numpy.float64' object does not support item "
                            "assignment); bind the name anew, x = v", source=user_source())
    if self.id in graph.stale:
        graph.refuse_stale(self, "this store writes into")
    why = _unwritable(self)
    if why is not None:
        name = self.name or f"a {self.type_str} array"
        raise UnsupportedOpError(
            f"x[...] = v on {name}: {why}. Write into a copy (x = x.copy(), then x[...] = v, "
            "and return it for the caller), or make the updated array, x = "
            "gradc.at(x)[index].set(v)" + (LAYOUT_HINT if _through_layout_view(self) else ""),
            source=user_source())
    if isinstance(value, Value) and graph.view_base.get(value.id) is self and _same_key(
            graph.view_keys.get(value.id), index):
        if augmented_store(_user_frame()[0]):  # (the view x[i] was the statement's own: no
            _forget_view(value)  # name holds it, so later stores need not update it)
        return  # (x[i] op= y: x[i], a view of x, already wrote its update into x)
    new = indexing._traced_update_of(self, index, "set", value)
    if new is not self:
        _takes(self, new)


def _forget_view(view):
    """Drop a view no Python name holds (the temporary x[i] of `x[i] += y`) from its base's
    views: every later store into x updated each such view by a new gather (a loop of `dC[ix]
    += v` traced in time growing as the square of its stores)."""
    graph = view.graph
    base = graph.view_base.pop(view.id, None)
    graph.view_keys.pop(view.id, None)
    if base is not None and base.id in graph.views_of:
        graph.views_of[base.id] = [v for v in graph.views_of[base.id] if v is not view]


def _takes(x, new):
    """The array object x (what every name, list and attribute holding it sees, as they see
    NumPy's one array) takes `new`, its updated value (Graph.take_over); x a view by basic
    indexing writes it into its array instead, and follows it. Views of x by basic indexing
    follow (_follow); other views of x, and the array another kind of view x is, are retired."""
    through = _indexed_base(x)
    if through is not None:  # (x = base[key]: base takes the update; x follows it)
        _setitem(*through, new)
        return
    old = x.graph.take_over(x, new)
    _follow(x, old)
    _retire(old, user_source())
    _retire_viewed(old)


def set_shape(x, shape):
    """`x.shape = (...)`: NumPy reshapes the array object in place (cs231n's `res.shape = (F, N,
    H, W)`), which it can for an array it made, contiguous. Here the object x takes the
    reshaped value; views taken of it before stay views of the same elements, retired by a
    later store into x (their indices are of the old shape). Refused on an argument (the
    caller's array object), a view (NumPy's may not be contiguous) and a number."""
    graph = x.graph
    if x.ndim == 0 and not is_zero_d_array(x) or x.id in graph.weak:
        raise ArgumentError("x.shape = ... on a number (a NumPy scalar: attribute 'shape' of "
                            "'numpy.generic' objects is not writable, NumPy's refusal); write "
                            "x = np.reshape(x, shape)", source=user_source())
    if x.id in graph.stale:
        graph.refuse_stale(x, "x.shape = ... reshapes")
    if x.node is None or x.id in graph.views:
        raise UnsupportedOpError(
            "x.shape = ... reshapes the array object in place: " + (
                "x is an argument of the traced function (the caller's array)"
                if x.node is None else "x is a view of another array, which NumPy reshapes "
                "only where its memory is contiguous") + "; write x = x.reshape(...)",
            source=user_source())
    try:
        reshaped = fn.reshape(x, shape)
    except GradcError as e:  # (NumPy's refusal, at the user's line)
        raise type(e)(str(e), source=user_source()) from None
    old = graph.take_over(x, reshaped)
    views = graph.views_of.pop(old.id, [])
    for view in views:
        graph.view_keys.pop(view.id, None)
        graph.view_base[view.id] = x
    graph.views_of.setdefault(x.id, []).extend(views)


def _sort_method(self, axis=-1, kind=None, order=None, stable=None):
    """x.sort(): x takes its sorted values, as a store x[...] = np.sort(x) does."""
    if order is not None:
        raise UnsupportedOpError("x.sort(order=...) sorts structured arrays, which gradc has "
                                 "none of", source=user_source())
    _writes_into(self, "x.sort()", "np.sort(x, axis)")
    _setitem(self, (Ellipsis,), _call_numpy(np.sort, (self,), {"axis": axis, "kind": kind,
                                                               "stable": stable}))


def _fill_method(self, value):
    """x.fill(v): every element takes v, as a store x[...] = v does."""
    if (value.size if isinstance(value, Value) else np.size(value)) != 1:
        raise ArgumentError("x.fill(value) takes one value (NumPy: setting an array element "
                            "with a sequence)", source=user_source())
    _writes_into(self, "x.fill(v)", "np.full_like(x, v)")
    _setitem(self, (Ellipsis,), value)


def _writes_into(x, what, instead):
    """UnsupportedOpError where the method `what` cannot write into x (an argument...)."""
    why = _unwritable(x)
    if why is not None:
        raise UnsupportedOpError(f"{what} writes into {x.name or f'a {x.type_str} array'} in "
                                 f"place: {why}; use {instead}, a new array", source=user_source())


def _same_key(key, index):
    """Whether `index` is the basic index `key` a view was taken with (Graph.view_keys)."""
    index = index if isinstance(index, tuple) else (index,)
    return key is not None and len(key) == len(index) and all(
        type(a) is type(b) and (a is b or isinstance(a, (int, slice)) and a == b)
        for a, b in zip(key, index))


def _indexed_base(view):
    """(base, key) where `view` is base[key] by basic indexing (`r = x[0]`, the temporary
    x[0] of `x[0][1] = v`) of a base no store has retired: NumPy's store into the view writes
    into base's memory, so gradc's base takes the update and the view follows (_follow); else
    None (a transpose or reshape: the store retires base instead)."""
    graph = view.graph
    base, key = graph.view_base.get(view.id), graph.view_keys.get(view.id)
    if key is None or base is None or base.id in graph.stale:
        return None
    return base, key


def _follow(x, old):
    """The views taken of x by basic indexing before x was updated (`old`: x's value before),
    as NumPy's, show the update: each view object takes its view of the updated x, and the
    views taken of it follow in turn. (Other views, transposes and reshapes, are retired.)"""
    graph = x.graph
    for view in list(graph.views_of.get(old.id, ())):
        key = graph.view_keys.get(view.id)
        if key is not None and view.id not in graph.stale:
            _follow(view, graph.take_over(view, _getitem(x, key)))


def _index_refused(self):
    raise TracedBranchError(
        "a traced integer used as a Python index or size (a list's `table[y[0]]`, range(n), "
        "a shape, a repeat count): its value is not known while tracing. Index an array "
        "instead (np.asarray(table)[y], or gradc.nn.embedding(table, y) for rows of a "
        "table), or pass the number as a static Python int", source=user_source())


_GRADC_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_hash_refused = _branch_error(
    "hash() (a dict key or a set element: `d[y[i]]`, `y[i] in {0, 1}`, set(y), "
    "collections.Counter(y))", "; for a table of numbers indexed by a traced integer, make it "
    "an array: np.asarray(table)[y], or gradc.nn.embedding(table, y)")


def _hash(self):
    """gradc's own sets and dicts of values hash them by identity. User code is refused: NumPy's
    arrays are unhashable, and its scalars hash by value, which tracing does not know
    (`weights[y[i]]`, `len(set(y))` looked the traced value up, never equal to a key: silently
    the default, or a bare KeyError)."""
    if sys._getframe(1).f_code.co_filename.startswith(_GRADC_DIR):
        return object.__hash__(self)
    return _hash_refused(self)


def _not_writable(name):
    return _refused(f"x.{name} = ...: attribute '{name}' of arrays is not writable (NumPy's "
                    "AttributeError); bind the name to a new array instead")


def _refused(message):
    def refused(self, *args, **kwargs):  # (by this name, left out of the supported list)
        raise UnsupportedOpError(message, source=user_source())
    return refused


_MEMORY_INTERFACES = ("__array_interface__", "__array_struct__")
# (as_strided(x, shape, x.strides * 2) reads them before as_strided runs)
_MEMORY_ATTRIBUTES = ("strides", "data", "ctypes")


@functools.lru_cache(maxsize=256)
def _attribute_reads(code):
    """{offset: attribute name} of the attribute loads in `code`."""
    return {ins.offset: ins.argval for ins in dis.get_instructions(code)
            if ins.opname in ("LOAD_ATTR", "LOAD_METHOD")}


def _read_by_name(frame, name):
    """Whether `frame` is reading attribute `name` itself (not calling C code that probes it)."""
    return _attribute_reads(frame.f_code).get(frame.f_lasti) == name


def _getattr(self, name):
    if name in _MEMORY_ATTRIBUTES or (name in _MEMORY_INTERFACES
                                      and _read_by_name(sys._getframe(1), name)):
        raise UnsupportedOpError(
            f"code that reads an array's memory (`x.{name}`: np.lib.stride_tricks.as_strided, "
            "np.byte_bounds, np.ctypeslib) cannot take a traced value, which has no memory "
            "until the compiled function runs: for windows use "
            "np.lib.stride_tricks.sliding_window_view, slicing, reshape or np.stack of slices",
            source=user_source())
    if name.startswith("__"):  # (NumPy's C code probes these: not there, it goes on)
        raise AttributeError(name)
    _, library = _user_frame()
    if library is not None and hasattr(np.ndarray, name):  # (a numba.njit helper's .flags, a
        # fitted scikit-learn scaler's .device: say whose code it is)
        raise UnsupportedOpError(f"{library_call(library)} (it reads x.{name})",
                                 source=user_source())
    if name == "flags":  # (np.isfortran reads it)
        raise UnsupportedOpError(
            "x.flags (np.isfortran(x), x.flags.c_contiguous...): a traced value's memory layout "
            "is not known while tracing (an argument's is the caller's array's, which may "
            "differ from call to call); decide it outside the compiled function, or drop it",
            source=user_source())
    if not hasattr(np.ndarray, name):  # (NumPy's own error: getattr(x, "scale", 2.0) and
        raise AttributeError(  # hasattr(x, "mask") answer as for an array)
            f"'numpy.ndarray' object has no attribute '{name}'")
    raise UnsupportedOpError(
        f"the ndarray attribute or method .{name} is not supported in traced code; supported: "
        + ", ".join(sorted(k for k, v in _SURFACE.items() if not k.startswith("_")
                           and getattr(v, "__name__", "") not in ("refused", "raise_"))),
        source=user_source())


_SURFACE = {
    "__add__": _binary(fn.add, op=operator.add), "__radd__": _binary(fn.add, True, op=operator.add),
    "__sub__": _binary(fn.subtract, op=operator.sub),
    "__rsub__": _binary(fn.subtract, True, op=operator.sub),
    "__mul__": _binary(fn.multiply, op=operator.mul),
    "__rmul__": _binary(fn.multiply, True, op=operator.mul),
    "__truediv__": _binary(fn.divide, op=operator.truediv),
    "__rtruediv__": _binary(fn.divide, True, op=operator.truediv),
    "__pow__": _binary(_integer_powers_checked(fn.power), op=operator.pow),
    "__rpow__": _binary(_integer_powers_checked(fn.power), True, op=operator.pow),
    "__floordiv__": _binary(fn.floor_divide, op=operator.floordiv),
    "__rfloordiv__": _binary(fn.floor_divide, True, op=operator.floordiv),
    "__mod__": _binary(fn.remainder, op=operator.mod),
    "__rmod__": _binary(fn.remainder, True, op=operator.mod),
    "__divmod__": lambda self, other: (self // other, self % other),
    "__rdivmod__": lambda self, other: (other // self, other % self),
    "__matmul__": _binary(fn.matmul), "__rmatmul__": _binary(fn.matmul, True),
    "__lt__": _ordered(_binary(functools.partial(fn.compare, "less")), "<"),
    "__le__": _ordered(_binary(functools.partial(fn.compare, "less_equal")), "<="),
    "__gt__": _ordered(_binary(functools.partial(fn.compare, "greater")), ">"),
    "__ge__": _ordered(_binary(functools.partial(fn.compare, "greater_equal")), ">="),
    "__eq__": _compared_with_objects(_binary(functools.partial(fn.compare, "equal")), False),
    "__ne__": _compared_with_objects(_binary(functools.partial(fn.compare, "not_equal")), True),
    # (NumPy's: bitwise of integers, logical of booleans, refused for floats)
    "__and__": _binary(UFUNCS[np.bitwise_and]), "__rand__": _binary(UFUNCS[np.bitwise_and], True),
    "__or__": _binary(UFUNCS[np.bitwise_or]), "__ror__": _binary(UFUNCS[np.bitwise_or], True),
    "__xor__": _binary(UFUNCS[np.bitwise_xor]), "__rxor__": _binary(UFUNCS[np.bitwise_xor], True),
    "__invert__": traced(lambda self: UFUNCS[np.invert](self)),
    "__lshift__": _binary(UFUNCS[np.left_shift]),
    "__rlshift__": _binary(UFUNCS[np.left_shift], True),
    "__rshift__": _binary(UFUNCS[np.right_shift]),
    "__rrshift__": _binary(UFUNCS[np.right_shift], True),
    "__neg__": traced(lambda self: _python_result(
        _numpy_dtype_checked(operator.neg, fn.negative, "the unary - operator")(self), self)),
    "__pos__": traced(lambda self: _python_result(_numpy_dtype_checked(  # (NumPy's +x is a
        operator.pos, copy, "the unary + operator")(self), self)),  # new array; +mask refused)
    "__abs__": traced(lambda self: _python_result(fn.unary("abs", self, float_only=False), self)),
    "__getitem__": traced(_getitem),
    "__iter__": _iter,
    "__hash__": _hash,
    "__bool__": _branch_error("bool() (an `if`, `while`, `and`/`or` or assert)"),
    "__float__": _branch_error("float()", _FLOAT_HINT + _MATH_HINT),
    "__contains__": _branch_error("`v in x` (NumPy's (x == v).any(), a Python bool)",
                                  "; np.any(x == v) (or (x == row).all(axis=1).any() for a "
                                  "row) stays an array"),
    "__int__": _branch_error("int()"),
    # (static facts, as .shape and .size)
    "itemsize": property(lambda self: self.dtype.itemsize),
    "nbytes": property(lambda self: self.size * self.dtype.itemsize),
    # (print(x) in traced code runs once, while gradc traces: it shows what x is, not values)
    "__str__": lambda self: f"<traced {self.type_str}: values exist when the compiled function "
                            "runs; return it to print it>",
    "__format__": lambda self, spec: str(self) if not spec else _format_error(self, spec),
    "__index__": _index_refused,
    "__complex__": _branch_error("complex()"),
    "item": _branch_error(".item()", "; keep it an array instead: x.reshape(()), x[0, 0] or "
                          "x.reshape(-1)[i] (of x.item(i)) for the element, which NumPy "
                          "functions take as a number"),
    "tolist": _branch_error(".tolist()"),
    "__array__": _array,
    "__setitem__": _setitem,
    "__getattr__": _getattr,
    "__array_ufunc__": _array_ufunc,
    "__array_function__": _array_function,
    "T": property(traced(lambda self: _viewed(self, fn.transpose(self))), _not_writable("T")),
    # (gradc's arrays are real: .real is the array, .imag its zeros, as NumPy's of a real array)
    # (of a Python float argument, weak: Python floats' .real, .imag, +s, round(s, 2) are)
    "real": property(traced(lambda self: _python_result(_viewed(self, self), self)),
                     traced(_set_real)),
    "imag": property(traced(lambda self: _python_result(imaginary_part(self), self)), _refused(
        "x.imag = ...: a real array has no imaginary part to set (NumPy's TypeError)")),
    "mT": property(traced(lambda self: _viewed(self, fn.swapaxes(self, -1, -2))),
                   _not_writable("mT")),
    "sum": _method(np.sum), "mean": _method(np.mean), "max": _method(np.max),
    "min": _method(np.min), "any": _method(np.any), "all": _method(np.all),
    "var": _method(np.var), "std": _method(np.std), "prod": _method(np.prod),
    "cumsum": _method(np.cumsum), "cumprod": _method(np.cumprod),
    "argmax": _method(np.argmax), "argmin": _method(np.argmin), "argsort": _method(np.argsort),
    "trace": _method(np.trace),
    "sort": traced(_sort_method),
    "ptp": _refused(".ptp() is not an ndarray method in NumPy 2; use np.ptp(x, axis)"),
    "fill": traced(_fill_method),
    "put": _method(np.put),
    "reshape": traced(_reshape_method),
    "transpose": traced(_transpose_method),
    "swapaxes": _method(np.swapaxes),
    "squeeze": _method(np.squeeze),
    "flatten": traced(lambda self, order="C": copy(np.ravel(self, order))),
    "ravel": _method(np.ravel),
    "astype": traced(_astype_method),
    "dot": _method(np.dot),
    "repeat": _method(np.repeat), "diagonal": _method(np.diagonal), "take": _method(np.take),
    "searchsorted": _method(np.searchsorted),
    "compress": traced(lambda self, condition, axis=None: np.compress(condition, self, axis)),
    "clip": traced(_clip_method), "round": _method(np.round),
    # (of a real array NumPy's methods return the array itself, np.conj a new one)
    "conj": traced(lambda self: _python_result(_viewed(self, self), self)),
    "conjugate": traced(lambda self: _python_result(_viewed(self, self), self)),
    "__round__": traced(_round),
    "__trunc__": _branch_error("math.trunc()", "; np.trunc(x) stays an array"),
    "is_integer": _branch_error("x.is_integer() (a Python bool)",
                                "; np.equal(x, np.round(x)) stays an array"),
    "copy": traced(_copy_method),
    # (copy.copy and copy.deepcopy of a params dict in traced code: new arrays, as NumPy's)
    "__reduce_ex__": _refused(
        "pickling a traced value (pickle.dumps(x), a deepcopy through __reduce__, "
        "multiprocessing): it has no values until the compiled function runs; return it and "
        "pickle the result after the call"),
    "__copy__": traced(lambda self: copy(self)),
    "__deepcopy__": traced(lambda self, memo: copy(self)),
}
for _symbol, _op in (("+", "add"), ("-", "sub"), ("*", "mul"), ("/", "truediv"),
                     ("//", "floordiv"), ("%", "mod"), ("**", "pow"), ("@", "matmul"),
                     ("&", "and"), ("|", "or"), ("^", "xor"), ("<<", "lshift"),
                     (">>", "rshift")):
    _SURFACE[f"__i{_op}__"] = _in_place(_symbol, _SURFACE[f"__{_op}__"])


def install():
    """Give ir.Value its NumPy surface (idempotent: the same functions each time)."""
    for name, impl in _SURFACE.items():
        setattr(Value, name, impl)


install()
