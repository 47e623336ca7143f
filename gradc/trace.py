"""Tracing plain NumPy code.

IR values act as tracers: they implement the NumPy operators, `__array_ufunc__`,
`__array_function__`, the common ndarray methods and basic/integer-array indexing (installed by
gradc/surface.py), all of which build graph nodes through `gradc.ops.fn`. Each node is stamped with the user's `file:line`.
Anything else (an unsupported NumPy function, branching on a traced value) raises a GradcError
naming that line.
"""
from __future__ import annotations

import bisect
import collections
import contextlib
import dis
import functools
import inspect
import math
import operator
import os
import re
import site
import sys
import sysconfig
import threading
import time
import types
import warnings

import numpy as np

from . import errors, frozen, functions, pytree
from .capture import (AFTER_UPDATES, CONTENT_GUARD_SIZE, captured, content_guards,
                      named_tables, numpy_writes, owner_of, read_after_update, read_by_numpy,
                      scale_contents, tie_stored_places, uncaptured)
from .errors import (ArgumentError, ConstantArrayWarning, GradcError, IndexOutOfRangeError,
                     ShapeError, SignatureError, TraceEffectWarning, UnsupportedOpError)
from .functions._args import ABSENT as _ABSENT
from .functions._args import array_arg as _array_arg
from .functions._args import no_out as _no_out
from .functions._args import no_where as _no_where
from .handlers import refuse_caught_index_error
from .ir import SUPPORTED_DTYPES, Graph, Value
from .ops import all_ops, fn
from .live import array_of, is_container, note_codes, read_plainly, without_views
from .outside import Outside, objects_in, written_into

_GRADC_DIR = os.path.dirname(os.path.abspath(__file__))
_NUMPY_DIR = os.path.dirname(os.path.abspath(np.__file__))
_USER_FACING = (os.path.join(_GRADC_DIR, "nn.py"),)  # gradc code that users call from traced code
# The standard library and installed packages: code there (SciPy, ...) is a library the user's
# code called, not the user's own line.
_LIBRARY_DIRS = tuple(sorted({os.path.abspath(p) + os.sep for p in (
    *(sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")),
    *site.getsitepackages(), site.getusersitepackages())}))


_GRADC_STRINGS = ("<gradc", "<__array_function__ internals>")  # (NumPy's, before 1.25)


@functools.lru_cache(maxsize=4096)
def _frame_kind(filename):
    """"gradc" for gradc's and NumPy's own code, "library" for another installed library's or the
    standard library's, "user" for the rest."""
    if filename.startswith("<"):  # (code compiled from a string: gradc's own is "<gradc ...>",
        # the standard library's frozen modules "<frozen runpy>"; the rest is the user's:
        # exec'd, `python -c`, stdin, doctests, notebooks and REPLs, a code generator's
        # "<generated>": one with its own `try: cholesky ... except LinAlgError` gave NaN)
        return ("gradc" if filename.startswith(_GRADC_STRINGS) else
                "library" if filename.startswith("<frozen ") else "user")
    path = os.path.abspath(filename)
    if path in _USER_FACING:
        return "gradc"
    if path.startswith((_GRADC_DIR + os.sep, _NUMPY_DIR + os.sep)):
        return "gradc"
    parts = path.split(os.sep)
    if path.startswith(_LIBRARY_DIRS) or "site-packages" in parts or "dist-packages" in parts:
        return "library"
    return "user"


def _user_frame(frame=None):
    """The innermost frame of the user's own code (at or above `frame`, default the caller's),
    and the outermost library frame inside it (the library call that led here, or None). Falls
    back to the innermost library frame when no frame is the user's (their code installed as a
    package)."""
    frame, called, fallback = frame or sys._getframe(1), None, None
    while frame is not None:
        kind = _frame_kind(frame.f_code.co_filename)
        if kind == "user":
            return frame, called
        if kind == "library":
            called = frame
            fallback = fallback or frame
        frame = frame.f_back
    return fallback, None


def _describe(frame):
    return f"{frame.f_globals.get('__name__', '?')}.{frame.f_code.co_name}"


def library_call(library):
    """Why a traced value cannot go through `library`, the frame of another library's Python
    function the user's code called (`scipy.special.logsumexp(x)`), and what to do."""
    module, name = library.f_globals.get("__name__", "?"), library.f_code.co_name
    wrapped = [v for v in library.f_locals.values() if isinstance(v, types.FunctionType)
               and getattr(v, "__module__", "").split(".")[0] == module.split(".")[0]]
    if name in ("wrapper", "inner", "wrapped", "decorated") and wrapped:  # (a decorator's frame:
        module, name = wrapped[0].__module__, wrapped[0].__name__  # the function it wraps)
    parts = [p for p in module.split(".") if not p.startswith("_")]
    owner = library.f_locals.get("self")
    if parts[:2] == ["scipy", "stats"] and owner is not None:  # (a distribution's method:
        dist = getattr(owner, "name", None)  # scipy.stats.norm.logpdf; a multivariate one's
        if not isinstance(dist, str):  # class is multivariate_normal_gen, or _frozen)
            kind = type(owner).__name__
            dist = next((kind[:-len(s)] for s in ("_gen", "_frozen") if kind.endswith(s)), None)
        if dist:
            parts = parts[:2] + [dist]
    public = ".".join(parts + [name])  # (the public path)
    mirror = None
    if parts[0] == "scipy" and len(parts) > 1:
        from . import scipy as mirrors  # (gradc.scipy: special, stats, linalg)
        found = mirrors
        for part in parts[1:] + [name]:
            found = getattr(found, part, None)
        if found is not None:
            mirror = "gradc." + public
    return (f"{public} is {parts[0]}'s Python code, which turns its arguments into NumPy "
            "arrays: gradc traces NumPy's functions and operators, not other libraries' code. "
            + (f"Use {mirror}, which mirrors it and traces" if mirror else
               "Write it with the NumPy functions gradc traces (README: Supported NumPy), or call "
               "it outside the traced function, on plain arrays"))


def _instructions_from(frame):
    """The bytecode instructions of `frame`'s code from the one it runs on."""
    if frame is None:
        return []
    found, at = _decoded(frame.f_code)
    if frame.f_lasti in at:
        return found[at[frame.f_lasti]:]
    # (inside a call of Python code, 3.11's f_lasti is the CALL's last inline cache entry: the
    # instruction is the one those entries follow)
    i = bisect.bisect_right([ins.offset for ins in found], frame.f_lasti) - 1
    return found[i:] if i >= 0 and found[i].opname.startswith("CALL") else []


@functools.lru_cache(maxsize=256)
def _decoded(code):
    """(instructions, {offset: index}) of a code object, decoded once: every `x += y` of a
    traced loop asks (ran through the whole function's bytecode each time)."""
    found = list(dis.get_instructions(code))
    return found, {ins.offset: i for i, ins in enumerate(found)}


def instruction_now(frame):
    """The name of the bytecode instruction `frame` runs, or None."""
    now = _instructions_from(frame)[:1]
    return now[0].opname if now else None


def in_place_operator(frame):
    """Whether `frame` runs an in-place operator (`x += y`: its result bound to x next)."""
    now = _instructions_from(frame)[:1]
    return bool(now) and (now[0].opname.startswith("INPLACE_") or now[0].opname == "BINARY_OP"
                          and now[0].argrepr.endswith("=") and now[0].argrepr != "==")


def stores_back(frame):
    """Whether `frame` runs the in-place operator of an `x[i] op= y` (its result stored into
    x[i] next, by STORE_SUBSCR: `x.__setitem__(i, x[i].__iop__(y))`)."""
    if not in_place_operator(frame):
        return False
    later = (ins.opname for ins in _instructions_from(frame)[1:])
    return next((op for op in later if not op.startswith(("SWAP", "ROT_", "CACHE"))),
                None) == "STORE_SUBSCR"


def augmented_store(frame):
    """Whether `frame` runs the store of an `x[i] op= y` (STORE_SUBSCR of the in-place
    operator's result, which only the stack held: the view x[i] it was computed on is gone
    after, where `r = x[i]; r += y; x[i] = r` keeps r)."""
    if frame is None:
        return False
    found, at = _decoded(frame.f_code)
    i = at.get(frame.f_lasti)
    if i is None or found[i].opname != "STORE_SUBSCR":
        return False
    before = next((ins for ins in reversed(found[:i])
                   if not ins.opname.startswith(("SWAP", "ROT_", "CACHE"))), None)
    return before is not None and (before.opname.startswith("INPLACE_") or (
        before.opname == "BINARY_OP" and before.argrepr.endswith("=")
        and before.argrepr != "=="))


# what pushes onto the stack without reading what is there (a key's names and numbers)
_LOADS = frozenset({"LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_FAST_BORROW", "LOAD_FAST_LOAD_FAST",
                    "LOAD_FAST_BORROW_LOAD_FAST_BORROW", "LOAD_CONST", "LOAD_SMALL_INT",
                    "LOAD_DEREF", "LOAD_GLOBAL", "LOAD_NAME"})
# (name -> how many items it takes off the stack; the number it pushes is dis's)
_KEY_MATH = {"BINARY_OP": 2, "UNARY_NEGATIVE": 1, "UNARY_INVERT": 1, "LOAD_ATTR": 1,
             "LOAD_METHOD": 1, "PUSH_NULL": 0}


def subscript_stored_into(frame):
    """Whether what the subscript `frame` runs gives (`out[i]` of `out[i][j] = v`, of
    `out[i][j] += v`, of `out[i][j][k] = v`) is the array a store of the same statement writes
    into: the stack is followed, instruction by instruction, while the key is computed (names,
    numbers, arithmetic, tuples, slices), until a STORE_SUBSCR. Anything else: False."""
    found = _instructions_from(frame)
    if not found or not _subscript(found[0]):
        return False
    stack = [True]  # (from the subscript's result up: whether each item is it, or made from it)
    for ins in found[1:32]:
        op, arg = ins.opname, ins.arg
        if op in ("CACHE", "NOP", "EXTENDED_ARG", "PRECALL", "KW_NAMES"):
            continue  # (3.11's PRECALL: CALL below takes the call's whole stack)
        if op in ("STORE_SUBSCR", "STORE_SLICE"):
            under = 2 if op == "STORE_SUBSCR" else 3  # (the array under its key or bounds)
            return len(stack) >= under and stack[-under]
        if op in ("COPY", "SWAP"):
            if arg > len(stack):
                return False
            if op == "COPY":
                stack.append(stack[-arg])
            else:
                stack[-1], stack[-arg] = stack[-arg], stack[-1]
            continue
        gives = None
        if _subscript(ins):
            takes, array = (3, -3) if op == "BINARY_SLICE" else (2, -2)
        elif op in _LOADS or op in _KEY_MATH or op in ("BUILD_TUPLE", "BUILD_SLICE", "BUILD_LIST"):
            takes, array = (arg if op.startswith("BUILD") else _KEY_MATH.get(op, 0)), None
        elif op == "CALL":  # (the callable, its self or NULL, its arguments: `+= np.sin(w)`)
            takes, gives, array = arg + 2, 1, None
        else:
            return False
        if takes > len(stack):
            return False  # (it reads what lay under the subscript's result)
        made = array is not None and stack[array]  # (a subscript of it: out[i][j][k] = v)
        if gives is None:
            gives = takes + dis.stack_effect(ins.opcode, arg, jump=False)
        del stack[len(stack) - takes:]
        stack += [made] + [False] * (gives - 1) if gives else []
        if not any(stack):
            return False
    return False


def _subscript(ins):
    return ins.opname in ("BINARY_SUBSCR", "BINARY_SLICE") or (
        ins.opname == "BINARY_OP" and ins.argrepr == "[]")


def user_source(frame=None):
    """The `file:line` of the innermost frame of the user's own code (from `frame`, default the
    caller's): outside gradc, NumPy and other libraries (an error inside SciPy called on a traced
    value names the user's call)."""
    frame, _ = _user_frame(frame or sys._getframe(1))
    if frame is None:
        return "<unknown>"
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"


def _graph_of_values(*args, **kwargs):
    """The graph of the first traced value among the arguments, keywords too (nn.conv2d(x=x,
    w=w) lost the user's line from its errors)."""
    return next((a.graph for a in (*args, *kwargs.values()) if isinstance(a, Value)), None)


def traced(method, graph_of=_graph_of_values):
    """Stamp the nodes a NumPy-surface entry point builds with the user's source line, and turn
    gradc's own errors into errors that name that line. `graph_of(*args, **kwargs)` is the graph
    being traced, if any (by default, that of the first Value among the positional arguments)."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        # The random-draw watch's profile hook off first (it costs every Python call, the ones
        # deciding too), on again unless the call can run no user code (frozen.inert)
        watch = frozen.active()
        hook = watch.pause() if watch is not None else None
        if hook is not None and not (frozen.inert(args) and frozen.inert(kwargs.values())):
            watch.resume(hook)
            hook = None
        hints = getattr(method, "keyword_hints", None)
        if hints and not hints.keys().isdisjoint(kwargs):  # (another library's keyword)
            key = next(k for k in kwargs if k in hints)
            raise ArgumentError(f"{method.__name__}() takes no {key}=: {hints[key]}",
                                source=user_source())
        try:
            graph = graph_of(*args, **kwargs)
            if graph is not None and not graph.stamp_user_source:  # (an outer call stamps)
                graph.nested += 1  # (gradc's own code calling NumPy's functions)
                try:
                    return method(*args, **kwargs)
                finally:
                    graph.nested -= 1
            if graph is None:  # (gradc.nn on plain arrays: its refusals name the line too)
                try:
                    return method(*args, **kwargs)
                except GradcError as e:
                    if e.source is None:
                        raise type(e)(str(e), source=user_source()) from None
                    raise
            src = user_source()
            if watch is not None:  # numbers drawn from NumPy's generators since the trace began?
                watch.check(src)
            # nested surface calls keep this line
            with graph.at_source(src), graph.stamping_user_source(False):
                try:
                    return method(*args, **kwargs)
                except GradcError as e:
                    if e.source is None:
                        raise type(e)(str(e), source=src) from None
                    raise
                except (ValueError, TypeError, OverflowError) as e:  # NumPy's errors for
                    raise ArgumentError(str(e), source=src) from None  # arguments it refuses
                except IndexError as e:  # (NumPy's, for a static index out of range)
                    raise IndexOutOfRangeError(str(e), source=src) from None
        finally:
            if hook is not None:
                watch.resume(hook)

    return wrapper


# ---------------------------------------------------------------------------------------------
# ufuncs and functions

def _vecdot(x1, x2, axis=-1, dtype=None):
    """np.vecdot (NumPy 2's gufunc): the sum over `axis` of x1 * x2, broadcast (real numbers:
    no conjugate to take), in the operands' dtype (a gufunc's loop keeps it: integers wrap,
    booleans give the or of the ands)."""
    x1, x2 = fn.promote(x1, x2)
    if dtype is not None:
        x1, x2 = fn.astype(x1, dtype), fn.astype(x2, dtype)
    # (the core axis moved last in each; its lengths must match: it does not broadcast)
    x1, x2 = (fn.moveaxis(x, fn.normalize_axis(axis, x.ndim), -1) for x in (x1, x2))
    if x1.shape[-1] != x2.shape[-1]:
        raise ValueError(f"np.vecdot: the vectors' lengths differ ({x1.shape[-1]} and "
                         f"{x2.shape[-1]} along axis {axis})")
    if x1.dtype.kind == "f":
        return fn.sum(fn.elementwise("multiply", x1, x2), -1)
    wide1, wide2 = fn.astype(x1, np.int64), fn.astype(x2, np.int64)  # (sums mod 2**64, cast)
    return fn.astype(fn.sum(fn.elementwise("multiply", wide1, wide2), -1), x1.dtype)


def _matvec(x1, x2, dtype=None):
    """np.matvec (NumPy 2.2's gufunc): the matrices x1 (..., m, n) times the vectors x2
    (..., n), their batch dimensions broadcast: np.matmul of x2 as a column."""
    x1, x2 = _gufunc_operands("matvec", x1, x2, dtype, (2, 1))
    out = fn.matmul(x1, fn.reshape(x2, x2.shape + (1,)))
    return fn.reshape(out, out.shape[:-1])


def _vecmat(x1, x2, dtype=None):
    """np.vecmat: the vectors x1 (..., n) times the matrices x2 (..., n, m) (real numbers: no
    conjugate to take): np.matmul of x1 as a row."""
    x1, x2 = _gufunc_operands("vecmat", x1, x2, dtype, (1, 2))
    out = fn.matmul(fn.reshape(x1, x1.shape[:-1] + (1, x1.shape[-1])), x2)
    return fn.reshape(out, out.shape[:-2] + out.shape[-1:])


def _gufunc_operands(name, x1, x2, dtype, core_dims):
    if np.ndim(x1) < core_dims[0] or np.ndim(x2) < core_dims[1]:
        raise ValueError(f"np.{name}: the operands' shapes {np.shape(x1)} and {np.shape(x2)} "
                         f"have too few dimensions: it takes {' and '.join(map(str, core_dims))} "
                         "at least")
    x1, x2 = fn.promote(x1, x2)
    if dtype is not None:
        x1, x2 = fn.astype(x1, dtype), fn.astype(x2, dtype)
    return x1, x2


def _logical(op, a, b):
    a, b = (bool(x) if type(x) in (int, float) else x for x in (a, b))  # (np.logical_and(x, 300)
    # of an int8 x: 300 is True, no int8)
    a, b = fn._operands(a, b)
    a, b = fn.broadcast_all(fn.astype(a, bool), fn.astype(b, bool))
    return a.graph.apply(op, (a, b))


def _ufunc_bindings():
    """The ufuncs the ops name (OpDef.ufuncs: promote, broadcast, apply), then the few that are
    an op with another promotion rule, or not one op."""
    table = {u: _numpy_dtype_checked(u, functools.partial(
        fn.elementwise, op.name, float_only=op.float_only))
             for op in all_ops().values() for u in op.ufuncs}
    table.update({
        # |x| as a float (integers and booleans become float64)
        np.fabs: _numpy_dtype_checked(np.fabs, functools.partial(
            fn.elementwise, "abs", float_only=True)),
        # x ** y computed in float64 whatever the inputs (or complex, which gradc has not)
        np.float_power: _numpy_dtype_checked(np.float_power, functools.partial(
            fn.elementwise, "power", float_only="float64")),
        np.power: _integer_powers_checked(_numpy_dtype_checked(
            np.power, functools.partial(fn.elementwise, "power"))),
        np.conjugate: _numpy_dtype_checked(np.conjugate, lambda x: copy(x)),  # (real: a copy)
        np.positive: _numpy_dtype_checked(np.positive, lambda x: copy(x)),  # (a new array)
        np.matmul: fn.matmul,
        np.logical_and: lambda a, b: _logical("logical_and", a, b),
        np.logical_or: lambda a, b: _logical("logical_or", a, b),
        np.logical_not: lambda x: x.graph.apply("logical_not", (fn.astype(x, bool),)),
        np.logical_xor: lambda a, b: _logical("not_equal", a, b),
        np.vecdot: _vecdot,
        # (booleans shift as int8: NumPy's loop for them)
        np.left_shift: _numpy_dtype_checked(np.left_shift,
                                            lambda a, b: _shifted("left_shift", a, b)),
        np.right_shift: _numpy_dtype_checked(np.right_shift,
                                             lambda a, b: _shifted("right_shift", a, b)),
    })
    for name in ("less", "less_equal", "greater", "greater_equal", "equal", "not_equal"):
        ufunc = getattr(np, name)  # (as the operators: np.less(x, 300) of an int8 x is NumPy's
        table[ufunc] = _numpy_dtype_checked(ufunc, functools.partial(fn.compare, name))  # exact
        # comparison, not an int8 300)
    if hasattr(np, "matvec"):  # (NumPy 2.2)
        table.update({np.matvec: _matvec, np.vecmat: _vecmat})
    table[np.divmod] = lambda a, b: (table[np.floor_divide](a, b), table[np.remainder](a, b))
    return table


def _numpy_dtype_checked(ufunc, impl, name=None):
    """`impl` of `ufunc` (a NumPy ufunc, or a Python operator named `name`: NumPy computes
    `mask ** 2` as np.square, in int8, and np.power(mask, 2) in int64), refusing the inputs
    whose result NumPy gives in a dtype gradc has not (a math ufunc computes booleans in
    float16: np.sin(mask)), or in another dtype than gradc's (np.reciprocal of integers), and
    those NumPy refuses, rather than answering in another dtype. NumPy's dtype is that of the
    same call on one element of each operand's dtype, Python numbers as they are: its
    promotion rules, weak scalars included, are NumPy's own."""
    def checked(*xs):
        key = _dtypes_key(ufunc, xs)
        out = _RESULT_DTYPES.get(key) if key is not None else None
        if out is None:
            with np.errstate(all="ignore"):
                out = ufunc(*map(_sample, xs))  # (NumPy's errors: ArgumentErrors, traced)
            out = np.asarray(out[-1] if isinstance(out, tuple) else out).dtype
            if key is not None:
                _RESULT_DTYPES[key] = out
        if out not in SUPPORTED_DTYPES:
            raise UnsupportedOpError(
                f"{name or _ufunc_name(ufunc)} of {_dtype_names(xs)} gives {out.name} in NumPy, "
                "which gradc does not support: cast the input first (x.astype(np.float32))")
        result = impl(*xs)
        if isinstance(result, Value) and result.dtype != out:
            result = _in_numpys_loop(impl, xs, out, result)
        if isinstance(result, Value) and result.dtype != out:  # (np.reciprocal of integers)
            raise UnsupportedOpError(
                f"{name or _ufunc_name(ufunc)} of {_dtype_names(xs)} gives {out.name} in NumPy, "
                f"and gradc computes it in {result.dtype.name} only: cast the input first "
                "(x.astype(np.float64))")
        return result
    checked.__name__ = checked.__qualname__ = getattr(ufunc, "__name__", str(name))
    return checked


def _in_numpys_loop(impl, xs, out, result):
    """`impl` of the array operands cast to `out` (Python numbers as they are), where NumPy's
    loop for them is out's: a math ufunc of int16 or uint16 runs NumPy's float32 loop
    (gradc's op of an integer computes in float64), a boolean's `** 2` the int8 one. The
    `result` of the operands as they are where another cast would be needed."""
    arrays = [x for x in xs if isinstance(x, (Value, np.ndarray))]
    if not arrays or not all(np.can_cast(x.dtype, out) for x in arrays):
        return result
    cast = [fn.astype(x, out) if isinstance(x, Value) and x.dtype != out else
            x.astype(out) if isinstance(x, np.ndarray) else x for x in xs]
    again = impl(*cast)
    return again if isinstance(again, Value) and again.dtype == out else result


# (ufunc, each operand's (dtype, weak)) -> NumPy's result dtype: asking NumPy on samples for
# every traced op was ~15 us of each (a Hessian's thousands of rows, 2.5 s). Python numbers
# are typed by value in NumPy 2 (int8 + 300 refuses): calls with one are not kept.
_RESULT_DTYPES = {}


def _dtypes_key(ufunc, xs):
    key = [ufunc]
    for x in xs:
        if isinstance(x, Value):
            key.append((x.dtype, fn.is_weak(x)))
        elif type(x) is np.ndarray:
            key.append((x.dtype, False))
        else:
            return None
    return tuple(key)


def _sample(x):
    """What stands in for an operand when asking NumPy for a ufunc's result dtype: one element
    of its dtype, or the Python number itself (NumPy types those weakly, by value)."""
    if isinstance(x, Value):
        return 1.0 if fn.is_weak(x) else np.ones(1, x.dtype)
    if isinstance(x, (bool, int, float, np.generic)):
        return x
    return np.ones(1, np.asarray(x).dtype)


def _dtype_names(xs):
    def name(x):
        if isinstance(x, Value):
            return "a Python float" if fn.is_weak(x) else x.dtype.name
        if isinstance(x, (bool, int, float)) and not isinstance(x, np.generic):
            return f"a Python {type(x).__name__}"
        return np.asarray(x).dtype.name
    return ", ".join(map(name, xs))


def _shifted(op, a, b):
    a, b = fn.promote(a, b)
    if a.dtype == np.bool_:
        a, b = fn.astype(a, np.int8), fn.astype(b, np.int8)
    return fn.elementwise(op, a, b)


def _integer_powers_checked(power):
    """`power`, refusing as NumPy does an integer raised to a negative integer it can see: a
    Python number, a NumPy scalar or array, a constant. (An exponent known only when the
    kernel runs is computed as the machine computes it: 0 for |base| > 1.)"""
    def checked(a, b):
        out = power(a, b)
        if isinstance(out, Value) and out.dtype.kind in "iu":
            exponent = _known(b) if isinstance(b, Value) else np.asarray(b)
            if exponent is not None and np.any(exponent < 0):
                raise ArgumentError("Integers to negative integer powers are not allowed (as in "
                                    "NumPy): make the base a float (x.astype(np.float64))")
        return out
    return checked


def _known(v):
    """The values of a traced value known when tracing (a scalar or array constant, broadcast
    or reshaped), else None."""
    node = v.node
    while node is not None and node.op in ("broadcast_to", "reshape", "astype"):
        node = node.inputs[0].node
    if node is not None and node.op == "const":
        return np.asarray(node.attr["value"])
    if node is not None and node.op == "constant":
        return node.attr["data"].array
    return None


UFUNCS = _ufunc_bindings()


def _scipy_ufunc(op):
    """SciPy's ufuncs have float32 and float64 loops only, and take Python numbers as float64
    (not weakly, as NumPy's do): float32 if every argument is float32, else float64."""
    def impl(*xs):
        like = next(x for x in xs if isinstance(x, Value))
        xs = [x if isinstance(x, Value) else fn.as_value(np.asarray(x), like) for x in xs]
        dtype = np.float32 if all(x.dtype == np.float32 for x in xs) else np.float64
        return fn.elementwise(op, *(fn.astype(x, dtype) for x in xs))
    return impl


# scipy.special's ufuncs, by name: SciPy is imported by the user's code, not by gradc
SCIPY_UFUNCS = {name: _scipy_ufunc(op.name) for op in all_ops().values()
                for name in op.scipy_ufuncs}
_SCIPY_SPECIAL = "scipy.special."


# NumPy functions. Each implementation takes NumPy's own parameter names: a call is bound against
# the NumPy function's signature first (`_bind`), and the implementation receives by name the
# arguments the user gave, so every spelling NumPy accepts works. Omitted ones take the
# implementation's defaults.

def _reduction(f, name):
    """np.sum, np.mean, np.max/min, np.any/all, with NumPy's `where` (the elements left out
    count as the reduction's identity; a max or min needs `initial` for them, as in NumPy; a
    mean divides by the count of those in) and `initial` (one more element of every
    reduction)."""
    kind = name.lstrip("a") if name in ("amax", "amin") else name

    def impl(a, axis=None, dtype=None, out=None, keepdims=False, initial=_ABSENT, where=_ABSENT):
        _no_out(out, name)
        x = _array_arg(a, where)
        if x.ndim == 0 and kind != "mean" and type(axis) is int and axis in (0, -1):
            axis = None  # (NumPy's ufunc reductions take axis 0 or -1 of a 0-d array)
        if dtype is not None:
            x = fn.astype(x, dtype)
        keep = bool(keepdims) and keepdims is not _ABSENT
        masked = where is not _ABSENT and where is not True
        if masked:
            mask = fn.broadcast_to(fn.astype(_array_arg(where, x), np.bool_), x.shape)
            if kind in ("max", "min") and initial is _ABSENT:
                raise ValueError(f"np.{name}: reduction operation '{kind}imum' does not have "
                                 "an identity, so to use a where mask one has to specify "
                                 "'initial'")
            x = fn.where(mask, x, _identity(kind, x.dtype))
        if kind in ("max", "min") and initial is not _ABSENT and x.size == 0:
            axes = fn.normalize_axes(axis, x.ndim)  # (no element: the initial value, NumPy's)
            shape = tuple(1 if a in axes else d for a, d in enumerate(x.shape)
                          if keep or a not in axes)
            y = fn.full(x.graph, shape, np.asarray(initial, x.dtype)[()], x.dtype)
            return y if dtype is None else fn.astype(y, dtype)
        if kind == "mean" and dtype is not None and np.dtype(dtype).kind in "iu":
            # NumPy sums in that integer dtype (wrapping, as int64 sums cast to it do), then
            # divides in float64; the cast back after truncates
            total = fn.astype(fn.sum(x, axis, keepdims=keep), dtype)
            count = (fn.sum(fn.astype(mask, np.int64), axis, keepdims=keep) if masked else
                     fn.as_value(np.asarray(float(np.prod(
                         [x.shape[a] for a in fn.normalize_axes(axis, x.ndim)]))), x))
            y = fn.elementwise("divide", fn.astype(total, np.float64),
                               fn.astype(count, np.float64))
        elif masked and kind == "mean":  # (the sum of the elements in, over their count)
            dt = x.dtype if x.dtype.kind == "f" else np.dtype(np.float64)  # (np.mean's)
            total = fn.sum(fn.astype(x, dt), axis, keepdims=keep)
            y = fn.divide(total, fn.sum(fn.astype(mask, dt), axis, keepdims=keep))
        else:
            y = f(x, axis, keepdims=keep)
        if initial is not _ABSENT:
            combine = {"sum": "add", "max": "maximum", "min": "minimum"}.get(kind)
            if combine is None:
                raise UnsupportedOpError(f"np.{name}(initial=...) is not supported")
            y = fn.elementwise(combine, y, fn.as_value(np.asarray(initial, y.dtype), y))
        return y if dtype is None else fn.astype(y, dtype)  # sums of small integers are int64
    return impl


def _identity(kind, dtype):
    """What an element left out by `where` counts as in a reduction of `kind`."""
    if kind in ("sum", "mean", "any"):
        return np.zeros((), dtype)[()]
    if kind == "all":
        return np.ones((), dtype)[()]
    low = -np.inf if dtype.kind == "f" else np.iinfo(dtype).min if dtype.kind in "iu" else False
    high = np.inf if dtype.kind == "f" else np.iinfo(dtype).max if dtype.kind in "iu" else True
    return low if kind == "max" else high


def _order(order, name, a, allowed="CFA"):
    """The order ('C' or 'F') in which a reshape of `a` reads and writes. 'A' and 'K' follow
    the array's memory layout in NumPy (x.T, 2 * x.T and a Fortran-ordered argument are read
    as 'F'), which a traced value does not have: refused where the orders differ (more than
    one axis longer than 1), where taking 'C' gave x.T.ravel('K') in the wrong order."""
    if order is None:
        return "C"
    if not (isinstance(order, str) and order.upper() in allowed):
        raise ValueError(f"{name}: order must be one of {', '.join(map(repr, allowed))}, "
                         f"got {order!r}")
    order = order.upper()
    if order in "AK" and sum(d > 1 for d in a.shape) > 1:
        raise UnsupportedOpError(
            f"{name}(order={order!r}) follows the array's memory layout, which gradc's traced "
            "values do not have (NumPy reads x.T, 2 * x.T or a Fortran-ordered argument in "
            "'F' order); write order='C' or order='F' for the order you mean")
    return "F" if order == "F" else "C"


def _reshape_in_order(a, shape, order):
    if isinstance(shape, (int, np.integer)) or isinstance(shape, np.ndarray) and shape.ndim == 0:
        shape = (operator.index(shape),)  # (NumPy takes a 0-d integer array as a size)
    shape = tuple(operator.index(d) for d in shape)  # (x.reshape(3.0, 2): NumPy's TypeError)
    if order == "C":
        return note_layout_view(a, fn.reshape(a, shape))
    # Fortran order: the first index varies fastest, i.e. C order on the reversed axes
    return note_layout_view(a, fn.transpose(fn.reshape(fn.transpose(a), tuple(shape)[::-1])), "F")


def _np_reshape(a, shape=None, order="C", newshape=None, copy=None):
    if shape is None and newshape is None:
        raise TypeError("np.reshape() missing the required argument 'shape'")
    if shape is not None and newshape is not None:
        raise TypeError("np.reshape(): give `shape` or `newshape`, not both")
    return _reshape_in_order(a, shape if shape is not None else newshape,
                             _order(order, "np.reshape", _array_arg(a)))


def copy(x):
    """A new array of x's values (NumPy's copy: writing into it leaves x alone); the passes
    remove the copy node (passes/simplify.py)."""
    return x.graph.apply("copy", (x,))


def _np_ravel(a, order="C"):
    a = _array_arg(a)
    return _reshape_in_order(a, (-1,), _order(order, "np.ravel", a, "CFAK"))


def _np_clip(a, a_min=_ABSENT, a_max=_ABSENT, out=None, min=_ABSENT, max=_ABSENT,  # noqa: A002
             **ufunc_kwargs):
    """np.clip: the bounds as a_min and a_max (both, positionally or not) or as min/max; out= a
    traced array takes the result, as a ufunc's out= does (`np.clip(g, -1, 1, out=g)`)."""
    if out is not None and isinstance(out, Value):
        from .surface import written_out  # (it builds on this module)
        value = _np_clip(a, a_min, a_max, None, min, max, **ufunc_kwargs)
        return written_out(out, value, True, "np.clip")
    _no_out(out, "clip")
    if ufunc_kwargs:
        raise UnsupportedOpError(f"np.clip with {', '.join(ufunc_kwargs)}= is not supported")
    if a_min is _ABSENT and a_max is _ABSENT:
        a_min, a_max = min, max
    elif a_min is _ABSENT or a_max is _ABSENT:
        missing = "a_min" if a_min is _ABSENT else "a_max"
        raise TypeError(f"np.clip() missing 1 required positional argument: '{missing}'")
    elif min is not _ABSENT or max is not _ABSENT:
        raise ValueError("np.clip: give the bounds as a_min/a_max or as min/max, not both")
    lo, hi = (None if bound is _ABSENT else bound for bound in (a_min, a_max))
    if isinstance(a, (int, float)):  # (NumPy's np.clip makes a Python number an array: strong)
        a = np.asarray(a)
    a = _array_arg(a, lo, hi)
    if a.dtype.kind in "iu":  # (as NumPy: a Python int bound beyond the dtype's range bounds
        info = np.iinfo(a.dtype)  # nothing; others beyond it raise, as in any comparison)
        lo = None if type(lo) is int and lo <= info.min else lo
        hi = None if type(hi) is int and hi >= info.max else hi
    return fn.clip(a, lo, hi)


def _clip_method(self, min=None, max=None, out=None, **kwargs):  # noqa: A002
    return _np_clip(self, min=min, max=max, out=out, **kwargs)


def _like(value):
    def impl(a, fill_value=value, dtype=None, order="K", subok=True, shape=None, device=None):
        a = _array_arg(a, fill_value)
        shape = a.shape if shape is None else (shape,) if isinstance(shape, (int, np.integer)) \
            else tuple(shape)
        dtype = np.dtype(dtype or a.dtype)
        if isinstance(fill_value, Value):  # a traced fill value
            return fn.broadcast_to(fn.astype(fill_value, dtype), shape)
        if np.ndim(fill_value):  # an array-like fill broadcasts, as in NumPy
            return fn.broadcast_to(fn.as_value(np.asarray(fill_value, dtype), a), shape)
        return fn.full(a.graph, shape, fill_value, dtype)
    return impl


def _where(condition, x=_ABSENT, y=_ABSENT):
    if x is _ABSENT or y is _ABSENT:
        raise UnsupportedOpError("np.where(cond) with one argument gives data-dependent shapes; "
                                 "use np.where(cond, x, y)")
    return fn.where(condition, x, y)


def _joined(join, name):
    """np.concatenate / np.stack; axis=None (concatenate) joins the flattened arrays."""
    def impl(arrays, axis=0, out=None, dtype=None, casting="same_kind"):
        _no_out(out, name)
        arrays = list(arrays)
        like = next((a for a in arrays if isinstance(a, Value)), None)
        if like is None:  # (a generator NumPy's dispatch has read to its end: NumPy's error)
            raise TypeError(f"np.{name}: the first input argument needs to be a sequence "
                            "(a list or tuple of arrays, not a generator or iterator)")
        # (a Python number is an array of its own dtype here, as in NumPy: not weakly typed)
        arrays = [a if isinstance(a, Value) else fn.as_value(np.asarray(a), like) for a in arrays]
        if dtype is not None:
            arrays = [fn.astype(a, dtype) for a in arrays]
        if axis is None:
            arrays, axis = [fn.reshape(a, (a.size,)) for a in arrays], 0
        return join(arrays, axis)
    return impl


def _np_take(a, indices, axis=None, out=None, mode="raise"):
    _no_out(out, "take")
    if mode == "raise":
        refuse_caught_index_error(indices)
    return fn.take(_array_arg(a, indices), indices, axis, mode)


def _np_take_along_axis(arr, indices, axis=-1):
    refuse_caught_index_error(indices)
    return fn.take_along_axis(_array_arg(arr, indices), indices, axis)


def _np_size(a, axis=None):
    if axis is None:
        return a.size
    axes = (axis,) if isinstance(axis, (int, np.integer)) else axis
    return int(np.prod([a.shape[fn.normalize_axis(i, a.ndim)] for i in axes], dtype=np.int64))


def _without_out(f, name):
    def impl(a, b, out=None):
        _no_out(out, name)
        return f(a, b)
    return impl


FUNCTIONS = {
    np.sum: _reduction(fn.sum, "sum"), np.mean: _reduction(fn.mean, "mean"),
    np.max: _reduction(fn.max, "max"), np.amax: _reduction(fn.max, "amax"),
    np.min: _reduction(fn.min, "min"), np.amin: _reduction(fn.min, "amin"),
    np.any: _reduction(fn.any, "any"), np.all: _reduction(fn.all, "all"),
    np.reshape: _np_reshape,
    np.transpose: lambda a, axes=None: fn.transpose(_array_arg(a), axes),
    np.swapaxes: lambda a, axis1, axis2: fn.swapaxes(_array_arg(a), axis1, axis2),
    np.moveaxis: lambda a, source, destination: fn.moveaxis(_array_arg(a), source, destination),
    np.expand_dims: lambda a, axis: fn.expand_dims(_array_arg(a), axis),
    np.squeeze: lambda a, axis=None: fn.squeeze(_array_arg(a), axis),
    np.broadcast_to: lambda array, shape, subok=False: fn.broadcast_to(
        _array_arg(array), (shape,) if isinstance(shape, (int, np.integer)) else shape),
    np.ravel: _np_ravel,
    np.concatenate: _joined(fn.concatenate, "concatenate"), np.stack: _joined(fn.stack, "stack"),
    np.where: _where, np.clip: _np_clip,
    np.dot: _without_out(fn.dot, "dot"), np.outer: _without_out(fn.outer, "outer"),
    np.take: _np_take,
    np.take_along_axis: _np_take_along_axis,
    np.zeros_like: _like(0), np.ones_like: _like(1), np.full_like: _like(None),
    # (NumPy leaves its values unset: zeros are as good; its array is named `prototype`)
    np.empty_like: lambda prototype, dtype=None, order="K", subok=True, shape=None, device=None:
        _like(0)(prototype, dtype=dtype, shape=shape),
    np.shape: lambda a: a.shape, np.ndim: lambda a: a.ndim, np.size: _np_size,
    np.copy: lambda a, order="K", subok=False: copy(_array_arg(a)),
}
FUNCTIONS.update(functions.tables())  # the families of gradc/functions/
frozen.bind_functions(FUNCTIONS)  # (calls given them run gradc's code, not NumPy's)


@functools.lru_cache(maxsize=None)
def _signature(func):
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):  # a C function without one: arguments go through as given
        return None


def _bind(func, args, kwargs, name):
    """The arguments of a call of NumPy's `func`, by NumPy's parameter names (extra keywords of
    a `**kwargs` parameter flattened in; those of a `*args` parameter passed positionally); a
    call NumPy would refuse raises its TypeError."""
    sig = _signature(func)
    if sig is None:
        return args, kwargs
    try:
        bound = sig.bind(*args, **kwargs)
    except TypeError as e:
        raise ArgumentError(f"{name}(): {e}") from None
    positional, named = (), {}
    for param, value in bound.arguments.items():
        kind = sig.parameters[param].kind
        if kind == inspect.Parameter.VAR_KEYWORD:
            named.update(value)
        elif kind == inspect.Parameter.VAR_POSITIONAL:  # (np.atleast_1d(*arys))
            positional = tuple(value)
        else:
            named[param] = value
    return positional, named


_DATA_DEPENDENT = ("its result's shape depends on the values, and a compiled function has "
                   "fixed shapes: keep every element and mask the ones you drop (np.where(cond, "
                   "x, 0), a weight of 0 in a sum)")
_FIRST_NUMBER = ("NumPy raises for a slice of NaNs only, which a compiled function cannot: "
                 "np.{} of np.where(np.isnan(x), {}, x)")
# NumPy functions refused for a reason worth more than the list of supported ones
REFUSED = {
    np.nonzero: _DATA_DEPENDENT, np.flatnonzero: _DATA_DEPENDENT, np.argwhere: _DATA_DEPENDENT,
    np.unique: _DATA_DEPENDENT, np.unique_values: _DATA_DEPENDENT,
    np.unique_counts: _DATA_DEPENDENT, np.trim_zeros: _DATA_DEPENDENT,
    np.histogram: "gradc has no histogram: np.digitize or np.searchsorted give each value's bin",
    np.partition: "the order NumPy leaves the other elements in is its own: np.sort, then slice",
    np.argpartition: "the order NumPy leaves the other elements in is its own: np.argsort, "
                     "then slice",
    np.nanargmax: _FIRST_NUMBER.format("argmax", "-np.inf"),
    np.nanargmin: _FIRST_NUMBER.format("argmin", "np.inf"),
    np.apply_along_axis: "it calls Python once per slice: write the function over whole arrays, "
                         "with an axis argument (most NumPy functions take one)",
    np.piecewise: "write it with np.where or np.select (each piece computed on the whole array)",
}
_IN_PLACE = ("it writes into an array in place, and traced arrays are immutable: compute the new "
             "array instead, with {} (differentiable in both)")
REFUSED.update({
    np.copyto: _IN_PLACE.format("np.where(mask, src, dst), or src itself"),
    np.put: _IN_PLACE.format("gradc.at(a.ravel())[ind].set(v).reshape(a.shape)"),
    np.place: _IN_PLACE.format("np.where(mask, values, a)"),
    np.putmask: _IN_PLACE.format("np.where(mask, values, a)"),
    np.put_along_axis: _IN_PLACE.format(
        "np.where(np.arange(a.shape[axis]) == indices, values, a) for one index per row, or "
        "gradc.at(a)[index arrays].set(values)"),
    np.fill_diagonal: _IN_PLACE.format("np.where(np.eye(n, dtype=bool), value, a)"),
    np.bincount: "its length depends on the data (the largest value): with a known length n, "
                 "(x[:, None] == np.arange(n)).sum(0), or gradc.at(np.zeros(n))[x].add(w)",
})


# NumPy functions whose `out=` of a traced array gradc takes as a store of the result into it
# (`np.sum(x, axis=0, out=buf)` is `buf[...] = np.sum(x, axis=0)`, NumPy's unsafe cast
# included; into a NumPy array, refused by the functions as before: _no_out)
_STORED_OUT = frozenset({np.sum, np.mean, np.prod, np.max, np.min, np.amax, np.amin, np.cumsum,
                         np.cumprod, np.round, np.around, np.var, np.std, np.dot, np.nansum,
                         np.nanmean, np.nanmax, np.nanmin, np.any, np.all, np.ptp, np.trace,
                         np.take, np.matmul, np.argmax, np.argmin})


def _call_numpy(func, args, kwargs, name=None):
    out = kwargs.get("out") if func in _STORED_OUT else None
    if isinstance(out, np.ndarray) and not isinstance(out, Value):  # (np.zeros(n): refused
        _no_out(out, name or _qualified(func), ufunc=True)  # as a ufunc's out= of it is)
    if isinstance(out, Value):
        kwargs = {k: v for k, v in kwargs.items() if k != "out"}
        result = _call_numpy(func, args, kwargs, name)
        if np.shape(out) != np.shape(result):  # (NumPy's ValueError)
            raise ShapeError(f"{name or _qualified(func)}(out=...): the output has shape "
                             f"{np.shape(out)}, the result {np.shape(result)}; NumPy needs "
                             "the result's shape")
        try:
            out[...] = result
        except UnsupportedOpError as e:  # (into an argument: named as the call the user wrote)
            message = str(e).removeprefix(f"{e.source}: ")
            raise type(e)(f"{name or _qualified(func)}(out=...) stores its result into out, "
                          f"and {message}", source=e.source) from None
        return out
    impl = FUNCTIONS.get(func)
    if impl is None:
        if func in REFUSED:
            raise UnsupportedOpError(f"{_qualified(func)}{_called_by_numpy()} is not supported "
                                     f"in traced code: {REFUSED[func]}")
        if getattr(func, "__module__", "").startswith("numpy.fft"):
            raise UnsupportedOpError(f"{_qualified(func)} is not supported in traced code: gradc "
                                     "has no Fourier transforms (they need complex numbers)")
        _, library = _user_frame()
        if library is not None:  # (called inside scipy.special.logsumexp: say that)
            raise UnsupportedOpError(library_call(library) + f" (it calls {_qualified(func)})")
        raise UnsupportedOpError(_not_supported(_qualified(func)))
    called = args, kwargs  # (as the code called it: _check_narrow_dtypes calls NumPy so)
    args, kwargs = _bind(func, args, kwargs, name or _qualified(func))
    a = kwargs.get("a")
    if func in _AXIS_OF_A_NUMBER and isinstance(a, Value) and a.ndim == 0 and (
            kwargs.get("axis") in (0, -1) and type(kwargs.get("axis")) is not bool):
        kwargs["a"] = fn.reshape(a, (1,))  # (NumPy takes axis 0 or -1 of a 0-d array: its one
        # element's, np.argmax 0, np.argsort [0])
    graph = current_graph()
    first = graph._next_id if graph is not None else None  # (values made by this call: >= first)
    out = impl(*args, **kwargs)
    _check_narrow_dtypes(func, *called, out, name)
    read_only = func in READ_ONLY_VIEWS
    if (func is np.broadcast_arrays or func is np.meshgrid and kwargs.get("copy") is False
            or func in (np.atleast_1d, np.atleast_2d, np.atleast_3d) and len(args) > 1):
        out = type(out)(mark_view(a, v, read_only)  # (each of its own array)
                        for a, v in zip(args, out))
    elif func is np.einsum and (operand := _einsum_view(args)) is not None:
        out = mark_view(operand, out)
    elif func is np.reshape and kwargs.get("copy"):
        out = copy(out)  # (a new array, written in place or not)
    elif func is np.flip and isinstance(out, Value) and out.ndim == 0:
        # (NumPy's flip of a 0-d array is a scalar: m[()])
        out = _new_array(out, list(args) + list(kwargs.values()), first)
    elif func in VIEW_FUNCTIONS or func is np.diag and isinstance(out, Value) and out.ndim == 1:
        # (the array: the first argument, by position or by name)
        viewed = args[0] if args else next(iter(kwargs.values()), None)
        out = mark_view(viewed, out, read_only)
        if (isinstance(viewed, Value) and viewed.ndim == 0 and not is_zero_d_array(viewed)
                and isinstance(out, Value) and out.ndim == 0 and not read_only):
            return out  # (np.squeeze(s), np.reshape(s, ()) of a NumPy scalar: a scalar)
    elif func not in SAME_ARRAY_FUNCTIONS:
        out = _new_array(out, list(args) + list(kwargs.values()), first)
    if func not in SCALAR_FUNCTIONS and func not in SAME_ARRAY_FUNCTIONS:
        note_zero_d_arrays(out)
    elif func in SCALAR_FUNCTIONS and graph is not None:  # (its 0-d results are NumPy scalars,
        for v in out if isinstance(out, tuple) else (out,):  # whatever the NumPy functions
            if isinstance(v, Value) and v.ndim == 0 and v.id >= first:  # gradc's code called
                graph.zero_d_arrays.discard(v.id)  # made of them: slogdet's logabsdet)
    return out


NARROW_INTS = frozenset(np.dtype(d) for d in ("int8", "uint8", "int16", "uint16"))


def _values_in(x, depth=0):
    """The traced values in x, a value or a (nested) list or tuple of them."""
    if isinstance(x, Value):
        return [x]
    if depth < 3 and type(x) in (list, tuple):
        return [v for item in x for v in _values_in(item, depth + 1)]
    return []


def _check_narrow_dtypes(func, args, kwargs, out, name=None):
    """Refuse a NumPy function of int8, uint8, int16 or uint16 arrays whose results gradc gives
    in another dtype than NumPy's (np.sum and np.cumsum of uint8 are uint64 in NumPy, which
    gradc has not; gradc's own ops were written for the wider dtypes). NumPy's dtypes are
    those of the same call on arrays of zeros of the same shapes (broadcast, no memory), or
    where zeros give no answer (np.linalg.inv: a singular matrix), on identity matrices."""
    given = _values_in(list(args) + list(kwargs.values()))
    if not any(v.dtype in NARROW_INTS for v in given):
        return

    def sample(x, fill, depth=0):
        if isinstance(x, Value):
            return np.broadcast_to(fill(x), x.shape)
        if depth < 3 and type(x) in (list, tuple):
            return type(x)(sample(item, fill, depth + 1) for item in x)
        return x

    def zeros(x):
        return np.zeros((), x.dtype)

    def identities(x):
        return np.eye(*x.shape[-2:], dtype=x.dtype) if x.ndim >= 2 else np.ones((), x.dtype)

    narrow = next(v.dtype for v in given if v.dtype in NARROW_INTS)
    what = f"{name or _qualified(func)} of {narrow.name} arrays"
    expected = None
    for fill in (zeros, identities):
        try:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                expected = func(*sample(list(args), fill),
                                **{k: sample(v, fill) for k, v in kwargs.items()})
            break
        except Exception:  # noqa: BLE001 - (no answer on this sample: try the next)
            continue
    got = _values_in(out)
    if not got:  # (np.ndim, np.shape: numbers)
        return
    theirs = [np.asarray(e) for e in (expected if isinstance(expected, (tuple, list)) else
                                      (expected,))] if expected is not None else []
    if len(theirs) != len(got) or any(e.dtype != v.dtype for e, v in zip(theirs, got)):
        wanted = ", ".join(e.dtype.name for e in theirs) or "no answer on zeros"
        raise UnsupportedOpError(
            f"{what} gives {wanted} in NumPy, which gradc does not compute from them: cast the "
            "input first (x.astype(np.int64), or x.astype(np.float32) for values)")


def _einsum_view(args):
    """The one operand of which NumPy's einsum gives a view, or None: subscripts that sum over
    no index ('ij->ji', 'ii->i', 'ij'; as sublists, `np.einsum(a, [0, 1], [1, 0])`), which only
    permute axes or take a diagonal."""
    if len(args) == 2 and isinstance(args[0], str) and isinstance(args[1], Value):
        inputs, arrow, output = args[0].replace(" ", "").partition("->")
        letters, operand = [c for c in inputs if c.isalpha()], args[1]
        output = list(output) if arrow else None
    elif (len(args) in (2, 3) and isinstance(args[0], Value)
          and all(isinstance(a, (list, tuple)) for a in args[1:])):
        letters, operand = [c for c in args[1] if c is not Ellipsis], args[0]
        output = [c for c in args[2] if c is not Ellipsis] if len(args) == 3 else None
    else:
        return None
    if output is None:  # (implicit: the labels that appear once)
        output = [c for c in set(letters) if letters.count(c) == 1]
    return operand if set(letters) <= set(output) else None


# NumPy functions that may return their argument itself (the same array object, not a copy)
# functions NumPy gives an axis 0 or -1 of a 0-d array (the others gradc refuses, as NumPy; the
# ufunc reductions are _reduction's)
_AXIS_OF_A_NUMBER = frozenset({np.prod, np.nansum, np.nanprod, np.argmax, np.argmin, np.argsort,
                               np.ptp, np.count_nonzero, np.nanmax, np.nanmin, np.nanmean,
                               np.nanstd, np.nanvar})
SAME_ARRAY_FUNCTIONS = frozenset({np.real_if_close, np.linalg.matrix_power, np.diff}  # (n=0)
                                 | ({np.astype} if hasattr(np, "astype") else set()))  # (copy=False)


# NumPy functions whose result is a view of their first argument (for a contiguous one: a
# reshape or ravel of another may copy), so that `y += 1` on it writes into that argument
VIEW_FUNCTIONS = frozenset({np.reshape, np.ravel, np.transpose, np.swapaxes, np.moveaxis,
                            np.expand_dims, np.squeeze, np.broadcast_to, np.diagonal,
                            np.atleast_1d, np.atleast_2d, np.atleast_3d, np.flip, np.fliplr,
                            np.flipud, np.rot90, np.matrix_transpose, np.rollaxis, np.split,
                            np.array_split, np.hsplit, np.vsplit, np.dsplit, np.real,
                            np.lib.stride_tricks.sliding_window_view})
# ...of which NumPy's are read-only (an update in place raises "output array is read-only")
READ_ONLY_VIEWS = frozenset({np.broadcast_to, np.broadcast_arrays, np.diagonal, np.diag,
                             np.lib.stride_tricks.sliding_window_view})


def note_zero_d_arrays(out):
    """Note the 0-d values of `out` (a value, or a list or tuple of them) as NumPy 0-d arrays,
    not NumPy scalars (Graph.zero_d_arrays); returns out."""
    for v in (out if isinstance(out, (list, tuple)) else (out,)):
        if isinstance(v, Value) and v.ndim == 0:
            v.graph.zero_d_arrays.add(v.id)
    return out


def is_zero_d_array(x):
    """Whether the 0-d value x is a NumPy 0-d array (Graph.zero_d_arrays), not a scalar."""
    return x.id in x.graph.zero_d_arrays


# NumPy functions whose 0-d results are NumPy scalars (reductions, products of vectors...);
# the other functions' 0-d results are 0-d arrays (np.where's, np.copy's, a view's)
SCALAR_FUNCTIONS = frozenset({
    np.sum, np.mean, np.prod, np.max, np.min, np.amax, np.amin, np.std, np.var, np.any, np.all,
    np.argmax, np.argmin, np.ptp, np.average, np.median, np.quantile, np.percentile,
    np.nansum, np.nanmean, np.nanprod, np.nanmax, np.nanmin, np.nanstd, np.nanvar,
    np.count_nonzero, np.dot, np.vdot, np.inner, np.einsum, np.kron, np.trace, np.take,
    np.clip, np.round, np.around, np.fix, np.sinc, np.angle, np.nan_to_num, np.interp,
    np.polyval, np.flip, np.searchsorted, np.isclose, np.allclose, np.corrcoef, np.trapezoid,
    np.linalg.norm, np.linalg.det, np.linalg.slogdet, np.linalg.cond, np.linalg.multi_dot,
    np.linalg.matrix_rank}
    | {getattr(np, name) for name in ("nanmedian", "nanquantile", "nanpercentile")
       if hasattr(np, name)}
    | {getattr(np.linalg, name) for name in ("trace", "vector_norm", "matrix_norm")
       if hasattr(np.linalg, name)})


def mark_view(base, out, read_only=False):
    """Note that `out` (a value, or a list or tuple of them: np.split's) is a NumPy view of the
    traced value `base` (Graph.views, Graph.views_of); returns it. A view that is the whole
    array unchanged (`x[:]`, a reshape to its own shape) is a value of its own, an alias, as
    NumPy's is an array object of its own: `y = x[:]; y += 1` is then refused as an update
    of a view, not applied to y alone."""
    if isinstance(out, (list, tuple)):
        return type(out)(mark_view(base, v, read_only) for v in out)
    if not isinstance(out, Value):
        return out
    if isinstance(base, Value) and base.ndim == 0 and not is_zero_d_array(base):
        # (a NumPy scalar's `np.atleast_1d(s)`, `s.reshape(-1)`, `s[None]`: a new array;
        # `s.reshape(())`, `s.T`, `np.squeeze(s)`: a new scalar; np.broadcast_to(s, ()): a
        # read-only 0-d array)
        out = copy(out) if out is base else out
        if out.ndim == 0 and not read_only:
            return out
        if read_only:
            out.graph.read_only.add(out.id)
        return note_zero_d_arrays(out)
    if out is base:
        out = base.graph.apply("alias", (base,), tag="view")
    graph = out.graph
    graph.views.add(out.id)
    note_zero_d_arrays(out)  # (a view is an array)
    if read_only or isinstance(base, Value) and base.id in graph.read_only:  # (a view of a
        graph.read_only.add(out.id)  # read-only one is read-only too: broadcast_to(...)[0])
    if isinstance(base, Value):  # (a view of a NumPy array: refused in place all the same)
        graph.views_of.setdefault(base.id, []).append(out)
        graph.view_base[out.id] = base
    return out


def note_layout_view(a, out, order="C"):
    """Note `out`, a reshape (ravel, np.ascontiguousarray) in `order` of `a`, where `a` is not
    contiguous in that order within the array it views (a transpose, a strided slice): NumPy
    copies or views it by that array's memory layout, which gradc does not know (an
    argument's, or a transposed result's), so it is taken as a view (an update through it
    refused, never lost); Graph.layout_views lets the refusal say to write .copy(). Returns
    out."""
    if not isinstance(out, Value) or out is a:
        return out
    from .ops.movement import contiguous_strides
    from .passes.fuse import base_layout
    layout = base_layout(a)
    if layout is None:  # (not expressible as strides: certainly not contiguous)
        a.graph.layout_views.add(out.id)
        return out
    shape, strides = a.shape, layout[2]
    if order == "F":
        shape, strides = shape[::-1], strides[::-1]
    if any(s != c for s, c, d in zip(strides, contiguous_strides(shape), shape) if d != 1):
        a.graph.layout_views.add(out.id)
    return out


def _not_supported(name):
    """The refusal of a NumPy function or ufunc gradc does not trace: the names it has that are
    close (it listed all ~400, 3,000 characters that hid the line)."""
    import difflib
    names = supported_numpy_names()
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.8) or difflib.get_close_matches(
        name.rsplit(".", 1)[-1], [n.rsplit(".", 1)[-1] for n in names], n=3, cutoff=0.8)
    hint = f"; close: {', '.join(close)}" if close else ""
    return (f"{name} is not supported in traced code{hint}. README's 'Supported NumPy' lists "
            "what is (gradc.trace.supported_numpy_names()); compute it outside the function "
            "and pass the result in, or write it with those functions")


def supported_numpy_names():
    """The NumPy (and SciPy) ufuncs and functions a traced function may call, by their qualified
    names (`np.exp`, `np.linalg.norm`): for the README and errors."""
    return sorted({_ufunc_name(u) for u in UFUNCS} | _scipy_ufunc_names()
                  | {_qualified(f) for f in FUNCTIONS})


def _scipy_ufunc_names():
    return {_SCIPY_SPECIAL + name for name in SCIPY_UFUNCS}


README_BEGIN, README_END = "<!-- SUPPORTED-OPS -->", "<!-- /SUPPORTED-OPS -->"


def supported_markdown():
    """The README's generated lines: the ufuncs and functions traced code may call."""
    def names(qualified):
        return ", ".join(f"`{n}`" for n in sorted(set(qualified)))
    return (f"- **Ufuncs**: {names(_ufunc_name(u) for u in UFUNCS)}.\n"
            f"- **SciPy ufuncs**: {names(_scipy_ufunc_names())}.\n"
            f"- **Functions**: {names(_qualified(f) for f in FUNCTIONS)}.\n")


def update_readme(path):
    """Rewrite the lines between README_BEGIN and README_END of the README at `path`
    (`make readme`)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    head, rest = text.split(README_BEGIN + "\n", 1)
    _, tail = rest.split(README_END, 1)
    with open(path, "w", encoding="utf-8") as f:
        f.write(head + README_BEGIN + "\n" + supported_markdown() + README_END + tail)


def _called_by_numpy():
    """" (called by NumPy's np.poly1d, which your code called)" where NumPy's own Python code
    between the user's line and here made the call (np.poly1d(c) calls np.trim_zeros), else
    ""."""
    frame, outermost = sys._getframe(2), None
    while frame is not None and _frame_kind(frame.f_code.co_filename) != "user":
        if os.path.abspath(frame.f_code.co_filename).startswith(_NUMPY_DIR + os.sep):
            outermost = frame
        frame = frame.f_back
    if frame is None or outermost is None:
        return ""
    owner = outermost.f_locals.get("self")
    name = (type(owner).__name__ if owner is not None and outermost.f_code.co_name.startswith("__")
            else outermost.f_code.co_name)
    return f" (called by NumPy's np.{name}, which your code called)"


def _qualified(func):
    module = getattr(func, "__module__", "numpy") or "numpy"
    prefix = "np." + module[len("numpy."):] + "." if module.startswith("numpy.") else "np."
    return prefix + func.__name__


def _ufunc_name(ufunc):
    """NumPy's ufunc `np.name`, SciPy's `scipy.special.name`: ufuncs do not know their module,
    so look for them where they are exported (SciPy only if the user imported it)."""
    name = getattr(ufunc, "__name__", str(ufunc))
    if getattr(np, name, None) is ufunc:
        return f"np.{name}"
    special = sys.modules.get("scipy.special")
    if special is not None and getattr(special, name, None) is ufunc:
        return f"scipy.special.{name}"
    return f"the ufunc {name}"


@traced
def _array_ufunc(self, ufunc, method, *inputs, **kwargs):
    given = dict(kwargs)
    out = _ufunc_call(ufunc, method, *inputs, **kwargs)
    if method != "__call__":  # (a call's dtypes are checked as it is computed:
        # _numpy_dtype_checked; np.add.reduce and .accumulate of uint8 are uint64 in NumPy)
        _check_narrow_dtypes(getattr(ufunc, method), inputs, given, out,
                             f"{_ufunc_name(ufunc)}.{method}")
    return out


def _ufunc_call(ufunc, method, *inputs, **kwargs):
    name = _ufunc_name(ufunc)
    if method == "reduce" and ufunc in _REDUCTIONS:  # (np.add.reduce(x, axis=0, ...))
        (array,) = inputs
        kwargs.setdefault("axis", 0)
        return FUNCTIONS[_REDUCTIONS[ufunc]](array, **kwargs)
    if method == "reduce" and ufunc in (np.logaddexp, np.logaddexp2) and set(kwargs) <= {
            "axis", "keepdims"}:  # (log(sum(exp(x))), as gradc.nn.logsumexp: one stable op)
        from .nn import logsumexp
        (array,) = inputs
        dtype = ufunc.reduce(np.zeros(1, np.asarray(_sample(array)).dtype)).dtype
        if dtype not in SUPPORTED_DTYPES:  # (booleans: float16)
            raise UnsupportedOpError(f"{name}.reduce of {_dtype_names((array,))} gives "
                                     f"{dtype.name} in NumPy, which gradc does not support: cast "
                                     "the input first (x.astype(np.float32))")
        array = fn.as_value(array, like=next(v for v in inputs if isinstance(v, Value)))
        if array.ndim == 0:  # (NumPy's: the value itself)
            return fn.astype(array, dtype)
        axes = fn.normalize_axes(kwargs.get("axis", 0), array.ndim)
        if any(array.shape[a] == 0 for a in axes):  # (an empty reduction: the identity, -inf)
            shape = tuple(1 if d in axes else n for d, n in enumerate(array.shape)) if (
                kwargs.get("keepdims", False)) else fn._drop_axes(array.shape, axes)
            return fn.full(array.graph, shape, -np.inf, dtype)
        log2 = math.log(2.0) if ufunc is np.logaddexp2 else None
        x = array if log2 is None else array * log2
        out = logsumexp(x, axis=kwargs.get("axis", 0), keepdims=kwargs.get("keepdims", False))
        return out if log2 is None else out / log2
    if method == "accumulate" and np.ndim(inputs[0]) == 0:
        raise ArgumentError(f"{name}.accumulate of a 0-d array: NumPy cannot accumulate on "
                            "a scalar; give it an array of at least one dimension")
    if method == "accumulate" and "axis" in kwargs and kwargs["axis"] is None:
        if np.ndim(inputs[0]) != 1:  # (NumPy's refusal; of a 1-d array, its one axis)
            raise ArgumentError(f"{name}.accumulate does not allow multiple axes (axis=None "
                                f"of a {np.ndim(inputs[0])}-d array)")
        kwargs["axis"] = 0
    if method == "accumulate" and ufunc in (np.add, np.multiply):  # (np.add.accumulate(x))
        (array,) = inputs
        kwargs.setdefault("axis", 0)
        return FUNCTIONS[np.cumsum if ufunc is np.add else np.cumprod](array, **kwargs)
    if method == "accumulate" and ufunc in _RUNNING and set(kwargs) <= {"axis"}:
        (array,) = inputs
        return _running(UFUNCS[ufunc], array, kwargs.get("axis", 0))
    if method == "reduceat" and ufunc in _REDUCTIONS:  # (NumPy passes indices= in both)
        indices = kwargs.pop("indices", inputs[1] if len(inputs) > 1 else None)
        return _reduceat(ufunc, name, inputs[0], indices, **kwargs)
    if method == "outer" and ufunc in UFUNCS and len(inputs) == 2 and not kwargs:
        like = next(x for x in inputs if isinstance(x, Value))
        a, b = (fn.as_value(np.asarray(x) if not isinstance(x, Value) else x, like)
                for x in inputs)
        return UFUNCS[ufunc](fn.reshape(a, a.shape + (1,) * b.ndim), b)
    if method == "at":  # (an update in place: the traced array object takes it, as a store)
        kind = {"add": "add", "multiply": "multiply", "maximum": "max", "minimum": "min"}.get(
            ufunc.__name__)
        hint = (f"z = gradc.at(z)[indices].{kind}(values) gives the updated array (repeated "
                "indices accumulate, as np.add.at's)" if kind else
                "gradc.at(z)[indices].add/.multiply/.max/.min/.set(values) give updated arrays")
        if kind and len(inputs) == 3 and not kwargs and isinstance(inputs[0], Value):
            from .indexing import at
            from .surface import _setitem, _writes_into
            target, index, values = inputs
            _writes_into(target, f"{name}.at", hint)
            refuse_caught_index_error(*(index if isinstance(index, tuple) else (index,)))
            try:
                updated = getattr(at(target)[index], kind)(values)
            except UnsupportedOpError:  # (named as the user called it)
                raise UnsupportedOpError(
                    f"{name}.at by traced positions is not supported (np.add.at is): give "
                    "the positions as a NumPy array, known when traced, or compute it "
                    "another way (a segment maximum: the maximum over a one-hot mask, "
                    "np.where(seg[:, None] == np.arange(n), vals[:, None], -np.inf).max(0))",
                    source=user_source()) from None
            _setitem(target, (Ellipsis,), updated)
            return None
        raise UnsupportedOpError(f"{name}.at updates its array in place, which gradc does for "
                                 "a traced array the function made (np.zeros_like(x), not "
                                 f"np.zeros(n)) with add, multiply, maximum or minimum: {hint}")
    if method != "__call__":
        raise UnsupportedOpError(f"{name}.{method} is not supported in traced code; "
                                 "see the supported list in the README")
    out, where = kwargs.pop("out", None), kwargs.pop("where", True)
    out = out[0] if isinstance(out, tuple) and len(out) == 1 else out
    into = None  # (the NumPy element of an `acc[i] += x`, which the store after takes)
    live = None  # (the value of an outside array updated in place: `self.W -= lr * g`)
    outside = type(out) is np.ndarray and _walked_array(current_graph(), out)
    if type(out) is np.ndarray and where is True and (outside or _stores_back_here()):
        into, out = out, None
        if outside and not into.flags.writeable:
            raise ValueError("output array is read-only")  # (NumPy's)
        live = captured(current_graph(), into)  # (an outside array's: read on every call)
        element = live if live is not None else np.ndarray.copy(into)  # (read, never
        inputs = [element if x is into else x for x in inputs]  # written; a constant must
        # not hold acc)
    if out is not None and not isinstance(out, Value) or where is not True and out is None:
        _no_out(out, _ufunc_name(ufunc), where is not True, ufunc=True)
    impl = UFUNCS.get(ufunc)
    if impl is None and name.startswith(_SCIPY_SPECIAL):
        impl = SCIPY_UFUNCS.get(name[len(_SCIPY_SPECIAL):])
    if impl is None:
        raise UnsupportedOpError(_not_supported(name))
    casting = kwargs.pop("casting", "same_kind")
    keywords = {k: kwargs.pop(k) for k in _UFUNC_KEYWORDS.get(ufunc, ()) if k in kwargs}
    loop = kwargs.pop("dtype", None)
    if kwargs:
        raise UnsupportedOpError(f"{name} with {', '.join(kwargs)}= is not supported")
    like = next(x for x in (*inputs, out, where) if isinstance(x, Value))  # (out= alone too)
    args = [x if isinstance(x, Value) or not isinstance(x, (np.ndarray, list)) else fn.as_value(x, like)
            for x in inputs]
    if not any(isinstance(x, Value) for x in args):  # (numbers, out= the traced array)
        args[0] = fn.as_value(np.asarray(args[0]), like)
    if out is not None and where is not True:  # (gradients kept where the mask holds)
        from .surface import masked_inputs
        args = masked_inputs(args, where, out, _ufunc_name(ufunc))
    if loop is not None:  # (the loop's dtype: the arrays cast to it first, as NumPy's)
        value = _in_loop_dtype(impl, args, keywords, np.dtype(loop), name, ufunc)
    else:
        first = like.graph._next_id  # (log(exp(y)) is y: a new array all the same)
        value = _new_array(impl(*args, **keywords), args, first)
    if out is not None:  # (written into out: NumPy's answer, out's old value retired)
        from .surface import written_out
        return written_out(out, value, where, _ufunc_name(ufunc), casting)
    if into is not None:
        from .surface import SYMBOL_OF, fitted_into
        value = fitted_into(into.shape, into.dtype, value, SYMBOL_OF.get(ufunc, ufunc.__name__))
        if outside:  # (NumPy's writes into it: what reads it next, by any way, sees the
            like.graph.in_place_results[id(value)] = id(into)
            like.graph.in_place[id(into)] = (into, value)  # value, written into it after
            # each call: outside.WrittenInto)
            if getattr(AFTER_UPDATES, "on", False) and like.graph.changed_after is not None:
                like.graph.changed_after.append((into, into.copy()))  # (what NumPy reads of
                scale_contents(into)  # it from here on differs: capture.read_after_update)
    return value


def _walked_array(graph, x):
    """Whether x is an array the trace's walk found outside the arguments (not a view of one)."""
    watch = graph.outside if graph is not None else None
    found = watch.arrays.get(id(x)) if watch is not None else None
    return found is not None and found[1] is x


def _stores_back_here():
    """Whether the user's line runs the in-place operator of an `acc[i] op= x`, called straight
    from their code."""
    frame, called = _user_frame()
    return called is None and stores_back(frame)


def _in_loop_dtype(impl, args, keywords, dtype, name, ufunc):
    """`ufunc(*args, dtype=dtype)`: each array cast to dtype by the same_kind rule (NumPy's
    UFuncTypeError otherwise), the ufunc computed in it; a ufunc with no loop giving dtype (a
    comparison's bool) refused, as NumPy refuses it."""
    cast = []
    for i, x in enumerate(args):
        if isinstance(x, Value):
            if not np.can_cast(x.dtype, dtype, casting="same_kind"):
                raise ArgumentError(f"Cannot cast ufunc '{ufunc.__name__}' input {i} from "
                                    f"dtype('{x.dtype}') to dtype('{dtype}') with casting rule "
                                    "'same_kind' (NumPy's refusal)")
            x = fn.astype(x, dtype)
        cast.append(x)
    out = impl(*cast, **keywords)
    if not isinstance(out, Value) or out.dtype != dtype:
        raise ArgumentError(f"No loop matching the specified signature and casting was found "
                            f"for ufunc {ufunc.__name__} (NumPy's refusal of {name} with "
                            f"dtype={dtype.name})")
    return _new_array(out, args)


def _new_array(out, args, first=None):
    """A NumPy function's result as a value of its own where it came back as one of its traced
    arguments (np.conj of a real array, np.round of integers, a sum over no axis), or as any
    value made before the call (ids below `first`: log(exp(y)) is y by a stability rule):
    NumPy's is a new array, and an in-place update or a store into either must not reach the
    other (Graph.retire, Graph.take_over). A sequence's elements count too: np.concatenate([x])
    is a new array, np.meshgrid(y)'s are. (The copy node costs nothing: the passes remove it.)"""
    if isinstance(out, (list, tuple)):
        items = [_new_array(v, args, first) for v in out]
        return type(out)(*items) if hasattr(out, "_fields") else type(out)(items)  # (eigh's)
    if isinstance(out, Value) and (first is not None and out.id < first or any(
            out is a or isinstance(a, (list, tuple)) and any(out is b for b in a) for a in args)):
        return copy(out)
    return out


_UFUNC_KEYWORDS = {np.vecdot: ("axis", "dtype")}  # (a gufunc's own keywords)
if hasattr(np, "matvec"):
    _UFUNC_KEYWORDS.update({np.matvec: ("dtype",), np.vecmat: ("dtype",)})
_RUNNING = (np.maximum, np.minimum, np.fmax, np.fmin)


def _along(v, axis, start, stop):
    """v[start:stop] along `axis`."""
    return fn.slice_(v, [start if a == axis else 0 for a in range(v.ndim)],
                     [stop if a == axis else d for a, d in enumerate(v.shape)], (1,) * v.ndim)


def _running(combine, x, axis):
    """np.maximum.accumulate(x, axis) and the like: y[i] = combine(y[i-1], x[i]), as log2(n)
    rounds of combine(y, y shifted 2**k along the axis), each element with the one 2**k before
    it (Hillis and Steele's scan): elementwise ops only, whose gradients route each output's
    cotangent to the element it came from."""
    axis = fn.normalize_axis(axis, x.ndim)
    n, y, k = x.shape[axis], x, 1
    while k < n:
        y = fn.concatenate([_along(y, axis, 0, k), combine(_along(y, axis, 0, n - k),
                                                             _along(y, axis, k, n))], axis)
        k *= 2
    return y


def _reduceat(ufunc, name, array, indices, axis=0, dtype=None, out=None):
    """np.add.reduceat(x, indices, axis) (and the other reductions'): for each i, the reduction
    of x[indices[i]:indices[i + 1]] along the axis (to its end after the last index), or
    x[indices[i]] where indices[i + 1] is not past it; as a concatenation of those slices'
    reductions, so the gradient is theirs. The indices must be known when traced."""
    what = f"{name}.reduceat"
    _no_out(out, what)
    if isinstance(indices, Value) or isinstance(indices, (list, tuple)) and any(
            isinstance(i, Value) for i in indices):
        raise UnsupportedOpError(
            f"{what} by traced indices is not supported: give the indices as a NumPy array "
            "known when traced (a sum by traced segment ids: np.add.at(np.zeros(k), ids, x))",
            source=user_source())
    x = _array_arg(array, indices)
    if x.ndim == 0:
        raise ArgumentError(f"{what}: cannot reduceat on a scalar (NumPy's TypeError)")
    if axis is None or isinstance(axis, (tuple, list)):
        raise ArgumentError(f"{what} does not allow multiple axes (axis={axis!r})")
    axis = fn.normalize_axis(axis, x.ndim)
    if isinstance(indices, (np.ndarray, np.generic)) and not np.can_cast(
            indices.dtype, np.intp, "safe"):  # (an array's as NumPy casts it; a list's: any)
        raise ArgumentError(f"{what}: Cannot cast array data from dtype('{indices.dtype}') to "
                            "dtype('int64') according to the rule 'safe' (NumPy's TypeError)")
    found = np.asarray(indices, dtype=np.intp)
    if found.ndim != 1:
        raise ArgumentError(f"{what}: the indices must be one-dimensional, got shape "
                            f"{found.shape}")
    starts, n = found.tolist(), x.shape[axis]
    bad = next((i for i in starts if not 0 <= i < n), None)
    if bad is not None:
        raise IndexOutOfRangeError(f"{what}: index {bad} out-of-bounds [0, {n}) (NumPy's "
                                   "IndexError)", source=user_source())
    result = ufunc.reduceat(np.zeros(1, x.dtype), [0], dtype=dtype).dtype  # (NumPy's rule)
    if result not in SUPPORTED_DTYPES:
        raise UnsupportedOpError(f"{what} of {x.dtype.name} gives {result.name} in NumPy, "
                                 "which gradc does not support: cast the input first",
                                 source=user_source())
    reduce = FUNCTIONS[_REDUCTIONS[ufunc]]
    x = fn.astype(x, result)  # (NumPy reduces in the result's dtype: each element cast first)
    pieces = []
    for i, start in enumerate(starts):
        stop = starts[i + 1] if i + 1 < len(starts) else n
        piece = (reduce(_along(x, axis, start, stop), axis=axis, keepdims=True) if start < stop
                 else _along(x, axis, start, start + 1))
        pieces.append(fn.astype(piece, result))  # (np.sum of int8: int64)
    if not pieces:  # (no indices: NumPy's empty result)
        return fn.full(x.graph, tuple(0 if a == axis else d for a, d in enumerate(x.shape)),
                       0, result)
    return fn.concatenate(pieces, axis)


# ufunc.reduce as the NumPy function that is that reduction (np.sum(a, where=traced_mask) of a
# NumPy array `a` reaches np.add.reduce)
_REDUCTIONS = {np.add: np.sum, np.multiply: np.prod, np.maximum: np.max, np.minimum: np.min,
               np.logical_and: np.all, np.logical_or: np.any,
               np.fmax: np.nanmax, np.fmin: np.nanmin}  # (NaNs left out, as fmax leaves them)


@traced
def _array_function(self, func, types, args, kwargs):
    return _call_numpy(func, args, kwargs)


# ---------------------------------------------------------------------------------------------
# tracing a function

# held while a function is traced, by one thread at a time: the traced code's assignments
# outside (`self.rm = ...`) hold placeholders until the trace undoes them, so a compiled call
# of another thread that finds one waits for the trace (capture.py Captures.read), and two
# traces never see each other's (another thread's trace read one: "belongs to another graph",
# a bare KeyError; fuzz41d)
TRACING = threading.RLock()


def trace(fun, args, kwargs=None, capture=False, write_back=False):
    """`_trace` one thread at a time (TRACING). A trace refused (a GradcError) puts back what
    the user code stored outside with NumPy too (`self.hist.append(self.W.copy())` before the
    refused line): the call leaves the state as it found it, not half of one NumPy step."""
    with TRACING:
        watches = []
        try:
            return _trace(fun, args, kwargs, capture, write_back, watches=watches)
        except GradcError:
            if capture and watches:
                watches[0].restore()
            raise


def _trace(fun, args, kwargs=None, capture=False, write_back=False, probing=None, watches=None):
    """Trace `fun(*args, **kwargs)` into a new graph.

    Array leaves of the argument pytrees become graph inputs (named by their path); other leaves
    are static. Random numbers drawn while `fun` runs would be frozen into the graph: a
    gradc.frozen.Watch turns them into FrozenRandomError. Float arrays read from outside the
    arguments are constants named in a ConstantArrayWarning, or with capture=True (what a
    compiled function does) inputs after the arguments', read on every call (`graph.captures`,
    and the values compiled in checked on every call, `graph.guards`: gradc/capture.py). A
    traced value stored outside the arguments is undone and refused; with write_back=True one
    assigned there (`self.cache = x`, a dict entry, a global) is `graph.write_backs`
    (outside.Stored), which the compiled function writes there after each call. Returns
    (graph, out_tree, flat output values). `probing`: this trace is capture.read_by_numpy's,
    on other contents, following the first trace's steps (the calls its user code made, in
    order: frozen.following; Diverged where it leaves them); what it changes outside is put
    back.
    """
    started = time.perf_counter()
    kwargs = kwargs or {}
    leaves, treedef = pytree.flatten((args, kwargs))
    graph = Graph()
    names = leaf_names((args, kwargs), argument_names(fun))
    values = [graph.add_input(*pytree.leaf_type(x), name=name) for x, name in zip(leaves, names)]
    for x, v in zip(leaves, values):
        if type(x) is pytree.TracedFloat:  # a Python float: weakly typed, as NumPy's are
            graph.weak.add(v.id)
        if isinstance(x, (np.generic, float)):  # (a number: `x += 1` binds x to a new one)
            graph.scalar_inputs.add(v.id)
        elif v.ndim == 0:  # (a 0-d array: its .copy() is one too)
            graph.zero_d_arrays.add(v.id)
    targs, tkwargs = pytree.unflatten(treedef, values)
    given = pytree.flatten((targs, tkwargs))
    graph.given_paths = _given_paths((targs, tkwargs))  # (before the function changes them)
    given_containers = _containers((targs, tkwargs))
    from .literals import numpy_constructors  # (it builds on this module)
    _active.graphs.append(graph)
    steps = [] if probing is None else probing  # (the calls of user code, in order)
    try:
        with graph.stamping_user_source(True), numpy_constructors(), \
                frozen.following(steps, follow=probing is not None) if capture else \
                contextlib.nullcontext(), frozen.Watch(fun, _static_values(treedef)) as watch:
            if watches is not None:  # (trace: put back where the trace is refused)
                watches.append(watch)
            graph.outside = watch if capture else None
            _check_call(fun, targs, tkwargs)
            graph.tracing, graph.refusals = True, []
            try:
                out = fun(*targs, **tkwargs)
                _raise_caught_refusal(graph.refusals)
            except ValueError as e:
                refusal = _traced_value_into_numpy_array(e)
                if refusal is None:
                    raise
                raise refusal from e
            except TypeError as e:
                if isinstance(e, GradcError) or not _about_a_traced_value(e):
                    raise
                raise UnsupportedOpError(
                    "a traced value reached code that needs its values or memory ("
                    f"{str(e).replace(repr('Value'), 'a traced value')}): it "
                    "has none until the compiled function runs; return it and use it after the "
                    "call", source=_innermost_user_line(e)) from e
            finally:
                graph.tracing, graph.refusals = False, []
                stored, assigned = watch.undo_stored_values(graph.given_paths, graph.in_place,
                                                            graph.in_place_results)
                graph.stored_text = watch.stored_text(assigned) if capture else ""
                for array, contents in graph.changed_after or ():  # (put back, as found)
                    np.copyto(array, contents)
                if probing is not None:  # (what NumPy alone wrote into: capture.numpy_writes)
                    graph.written = {id(array): name for name, array, _, data in
                                     watch.snapshots.values() if array.tobytes() != data}
                    watch.restore()
                    if watch.diverged:  # (and the user's code took Diverged and went on)
                        raise frozen.Diverged
            watch.check(_definition(fun), final=True)
            changed = watch.changed_in_place()
            renumbered = watch.changed_numbers()
            drawn = watch.drawn()
            rebound = watch.rebound(graph) if capture else []
    finally:
        _active.graphs.pop()
    if rebound:
        raise UnsupportedOpError(
            f"{getattr(fun, '__name__', 'the function')} (defined at {_definition(fun)}) bound "
            f"{', '.join(rebound[:4])}, outside its arguments, to a new array "
            "after reading it (as `self.W = self.W * 0.5` does): its Python runs once, when "
            "traced, so the compiled function would read the new array on every call and never "
            "compute another. Compute the new value and return it (store it after the call), "
            "or pass the array as an argument", source=user_source())
    if changed:
        raise UnsupportedOpError(
            f"{getattr(fun, '__name__', 'the function')} (defined at {_definition(fun)}) changed "
            f"{', '.join(f'`{c}`' for c in changed[:4])}, outside its arguments, in place (as "
            "`a += 1`, `a[i] = v` or np.copyto(a, v) do): its Python runs once, when traced, so "
            "that happened once (it keeps that change) and the compiled function would never do "
            "it again. Compute the new value and return it (store it after the call), pass "
            "the array as an argument, or (a table made on first use) fill it before the first "
            "call", source=user_source())
    assigned = written_into(graph.in_place, assigned, watch) + assigned  # (written into
    # first, each at its place as the call found it: `self.W -= g; self.W = self.W * c` wrote
    # the update into the new array, never into the old one)
    for a in assigned:  # (`params[k] -= lr * g` of a dict given: NumPy writes into the array)
        if id(a.container) in given_containers and id(a.value) in graph.argument_updates:
            message, source = graph.argument_updates[id(a.value)]
            raise UnsupportedOpError(message, source=source)
    if any(id(a.container) in given_containers for a in assigned):  # (the copies the trace
        if not write_back:  # ran on: a traced value stored there, cs231n's `bn_param[
            raise _changed_given(fun)  # "running_mean"] = ...`, is written into the caller's)
        assigned = [a._replace(given=graph.given_paths[id(a.container)])
                    if id(a.container) in given_containers else a for a in assigned]
    assigned = _containers_written_back(fun, [  # (dicts and lists from outside, or given, in
        a._replace(value=watch.marked(a.value, graph.given_paths))  # them written back as
        if is_container(a.value) else a  # themselves: marked before the views are taken out)
        for a in assigned])
    graph.write_backs = assigned if write_back is True else []  # ("discard": a pullback's,
    stored_arrays = [(x, x) for a in graph.write_backs if is_container(a.value)  # (the
                     for x in [*pytree.flatten(a.value)[0], *objects_in(a.value)]]  # outside
    # arrays in a container, and objects made holding them)
    stored_arrays += [(value, array) for array, value in graph.in_place.values()]  # assigned
    graph.outside_leaves = {  # outside, `self.cache = (x, self.W)`: each call's self.W,
        id(key): outside for key, x in stored_arrays  # function.Made; and one updated in
        for outside in (watch.outside_array(x) or watch.rebuilt(x),)  # place, as its new
        if outside is not None}  # value: `self.W -= g; self.tW = self.W`: W itself; an
    # object made holding it, `self.log = [Record(w=self.W)]`, made again)
    graph.moved = frozenset(  # (their contents were not read for it: capture.content_guards)
        [id(array_of(x)) for x, _ in stored_arrays if watch.outside_array(x) is not None]
        + [id(w.value.path.follow()) for w in graph.write_backs if isinstance(w.value, Outside)])
    if not write_back:  # whose forward wrote them back already)
        stored = stored + [a.message() for a in assigned]
    if stored:
        raise UnsupportedOpError(
            f"{getattr(fun, '__name__', 'the function')} (defined at {_definition(fun)}) stored "
            f"traced values outside its arguments ({', '.join(stored[:4])}): "
            "its Python runs once, when traced, so they would hold placeholders, not numbers "
            "(undone: they hold what they held before). Return them instead (with "
            "has_aux=True for a gradient) and store them after the call", source=user_source())
    _check_containers_unchanged(fun, (targs, tkwargs), given)
    if renumbered:
        warn_at_user_line(TraceEffectWarning(
            f"{getattr(fun, '__name__', 'the function')} (defined at {_definition(fun)}) "
            f"changed {', '.join(f'`{c}`' for c in renumbered[:4])}, a Python number or list "
            "outside its arguments (a counter such as `self.t += 1`, `history.append(n)`): its "
            "Python runs once, when traced, so this happened once, and NumPy's code would do "
            "it on every call; a result computed from it keeps the traced value. Pass the "
            "number as an argument (an array, or in argnums), or count and record outside the "
            "call; a count of traces is what it is (warnings.filterwarnings('ignore', "
            "category=gradc.TraceEffectWarning))"))
    if drawn:
        warn_at_user_line(TraceEffectWarning(
            f"{getattr(fun, '__name__', 'the function')} (defined at {_definition(fun)}) drew "
            f"from {', '.join(f'`{c}`' for c in drawn[:4])}, an iterator or generator outside "
            "its arguments (`next(counter)`): its Python runs once, when traced, so the values "
            "drawn then are compiled in, the same on every call, where NumPy's code would draw "
            "new ones each call. Draw them outside the call and pass them as arguments"))
    if hasattr(type(out), "__next__"):  # (a generator, a map: its items would be values
        # of the trace; asked of the class: an attribute dict answers any name)
        raise SignatureError(f"{getattr(fun, '__name__', 'the function')} returned a "
                             f"{type(out).__name__}, whose items are made when it is read: "
                             "return a list or tuple of them (list(...))", source=user_source())
    try:
        out_leaves, out_tree = pytree.flatten(out)
    except SignatureError as e:
        raise SignatureError(f"{getattr(fun, '__name__', 'the function')} returned something a "
                             "compiled function cannot return (arrays and numbers in dicts, "
                             f"lists and tuples): {e}", source=user_source()) from None
    holder = _static_holding_a_value(out_tree)
    if isinstance(holder, str):
        raise UnsupportedOpError(
            f"{getattr(fun, '__name__', 'the function')} returned text made from a traced value "
            f"({holder[:80]!r}: str(), repr() or an f-string of it): a traced value has no "
            "numbers while the function is traced, so the text holds a placeholder. Return the "
            "value and format it after the call", source=user_source())
    from .selection import Selection, refusal
    if isinstance(holder, Selection):  # (x[mask]: its shape depends on the data)
        raise refusal(f"{getattr(fun, '__name__', 'the function')} returned x[mask] with a "
                      "traced mask; return np.where(mask, x, 0) or the mask and x")
    if holder is not None:
        raise UnsupportedOpError(
            f"{getattr(fun, '__name__', 'the function')} returned an object of type "
            f"`{type(holder).__name__}` holding traced values: a compiled function returns "
            "arrays and numbers in dicts, lists, tuples and namedtuples, and anything else "
            "comes back as it was when traced (holding placeholders, not numbers). Return its "
            "arrays in a dict or a namedtuple and build the object after the call",
            source=user_source())
    outs = []
    for v in out_leaves:
        if not isinstance(v, Value):
            try:
                v = fn.as_value(np.asarray(v), graph=graph)
            except GradcError as e:
                raise type(e)(f"{getattr(fun, '__name__', 'the function')} returned an array "
                              f"gradc cannot return: {e}", source=user_source()) from None
        elif v.graph is not graph:
            raise UnsupportedOpError("the function returned a value traced by another function")
        elif v.id in graph.stale:  # (read by the return: the caller's line, and the function's)
            with graph.at_source(user_source()):
                graph.refuse_stale(v, f"{getattr(fun, '__name__', 'the function')} (defined at "
                                      f"{_definition(fun)}) returns")
        outs.append(v)
    # (the backward may read what the forward read)
    graph.stale, graph.views_of, graph.view_base, graph.view_keys = {}, {}, {}, {}
    graph.outputs = outs
    read = []  # outside arrays whose contents the program depends on: NumPy read them alone
    given_arrays = frozenset(id(x) for x in leaves if isinstance(x, np.ndarray))
    if capture and probing is None and not drawn:
        from .program_cache import graph_text  # (it imports the passes, which import this)
        read = read_by_numpy(
            graph, watch, lambda: _trace(fun, args, kwargs, capture, write_back, steps)[0],
            lambda g: graph_text(g) + g.stored_text,  # (what it stores outside counts too)
            max(2.0, 20 * (time.perf_counter() - started)),
            follows=watch.hooked, given=given_arrays)  # (under another profiler, cProfile's,
        # the calls are not seen: no trace on other contents, which could not follow them)
    if capture and probing is None and not drawn and graph.in_place:
        _check_in_place_updates(fun, graph, watch, given_arrays,
                                lambda: _trace(fun, args, kwargs, capture, write_back, steps)[0],
                                max(2.0, 20 * (time.perf_counter() - started)))
    _warn_constant_arrays(fun, graph, watch, {id(a) for _, a, _ in read})
    if capture:
        tie_stored_places(graph, watch)
        graph.guards = (watch.guards([c.path for c in graph.captures])
                        + watch.ties([w.value for w in graph.write_backs]
                                     + list(graph.outside_leaves.values()))
                        + content_guards(graph, watch, given_arrays)
                        + [(name, a.copy(), path) for name, a, path in read])
        plainly = read_plainly()  # (a Live's values read by Python, `if self.t[0] > 1`,
        # though its NumPy functions were traced: still checked by contents)
        plain = [(name, a, path) for name, a, path in watch.arrays.values() if id(a) in plainly]
        have = {(id(path.root), path.steps) for _, _, path in graph.guards}
        graph.guards += [(name, a.copy(), path) for name, a, path in plain
                         if (id(path.root), path.steps) not in have]
        graph.numpy_read = frozenset((id(path.root), path.steps) for _, _, path in read + plain)
        graph.updated = frozenset(graph.in_place)  # (capture.Captures.apart)
        # (read plainly, `self.snap = self.W.astype(np.float32)` beside `self.W -= lr * g`:
        # NumPy's, compiled in, though W is read live too; unchanged_by keeps its check)
        graph.names_run = watch.names_run()
    note_codes(watch.codes)  # (gradc/live.py: asked_types)
    graph.outside = None  # (what it holds need not live as long as the graph)
    return graph, out_tree, outs


def _containers_written_back(fun, assigned):
    """The Stored assignments with the Live views in their containers replaced by the arrays
    (gradc/live.py: `self.cache = (x, self.rm)`); a container gradc cannot rebuild (a deque, a
    defaultdict, a tuple subclass) is refused at the user's line: the trace's own would stay,
    placeholders in it."""
    assigned = [a._replace(value=without_views(a.value)) if is_container(a.value) else a
                for a in assigned]
    for a in assigned:
        if isinstance(a.value, (dict, list, tuple, collections.deque)) and not (
                type(a.value).__module__ or "").startswith("gradc"):  # (not outside.Outside)
            try:
                pytree.flatten(a.value)
            except errors.SignatureError:
                raise UnsupportedOpError(
                    f"{getattr(fun, '__name__', 'the function')} stored a "
                    f"{type(a.value).__name__} holding traced values or arrays from outside its "
                    f"arguments (`{a.where}`): gradc writes such values there after each call "
                    "in dicts, lists, tuples and namedtuples only; store one of those (a plain "
                    "dict for a defaultdict, a list for a deque)", source=user_source()) from None
    return assigned


def _check_in_place_updates(fun, graph, watch, given, retrace, seconds):
    """Refuse what the write-backs of outside arrays updated in place with traced values
    (Graph.in_place, outside.WrittenInto) cannot make NumPy's: NumPy alone writing into outside
    arrays too (`v *= 0.9; v += g`: capture.numpy_writes), such an array also an argument
    (`given`: the ids of the argument arrays; the argument's traced value is the one before),
    or read with NumPy alone after its update (`W.sum()`: capture.read_after_update)."""
    name = getattr(fun, '__name__', 'the function')
    written = numpy_writes([a for a, _ in graph.in_place.values()], watch, retrace, seconds)
    if written:
        raise UnsupportedOpError(
            f"{name} (defined at {_definition(fun)}) changes "
            f"{', '.join(written[:4])} in place with NumPy alone (`v *= 0.9`, "
            "`buf[...] = 0`, `W -= 0.1 * v` of a NumPy v) beside updates in place with traced "
            "values (`v += g`): the compiled function makes only the traced ones, after each "
            "call. Write the whole update with traced values (v = 0.9 * v + g, out of place), "
            "or pass the arrays as arguments", source=user_source())
    updated = [a for a, _ in graph.in_place.values() if id(a) in watch.paths]
    misread = [watch.way_to(a)[0] for a in updated if id(a) in given]
    if not misread and updated:
        from .program_cache import graph_text  # (it imports the passes, which import this)
        if read_after_update(graph, watch, retrace, lambda g: graph_text(g) + g.stored_text,
                             seconds):
            misread = [watch.way_to(a)[0] for a in updated]
    if misread:  # (NumPy's read after the update sees it; the compiled one, the values before)
        raise UnsupportedOpError(
            f"{name} (defined at {_definition(fun)}) updates "
            f"{', '.join(f'`{n}`' for n in list(dict.fromkeys(misread))[:4])} in place with a "
            "traced value and then reads it with NumPy alone (W.sum(), np.sum(W * W) of the "
            "NumPy array), or it is an argument too: the compiled function would compute that "
            "read from the values before the update, where NumPy's code sees it. Read it with "
            "the traced values it meets (np.sum(W * W) after W = W - lr * g, out of place), or "
            "pass the array as an argument", source=user_source())


def _check_call(fun, args, kwargs):
    """A call the function cannot take (an argument missing or extra, an unknown keyword) is
    a SignatureError naming the caller's line, not Python's TypeError from inside gradc."""
    try:
        signature = inspect.signature(fun)
    except (TypeError, ValueError):  # (no signature to check against)
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as e:
        raise SignatureError(f"{getattr(fun, '__name__', 'the function')}() cannot take these "
                             f"arguments: {e}", source=user_source()) from None


def _check_containers_unchanged(fun, tree, given):
    """Refuse a trace whose function changed the dicts and lists it was given (`p["b"] =
    np.zeros(2)`, `del p["tmp"]`, `hist.pop()`, `p["step"] += 1`): NumPy code would change the
    caller's; the traced function ran on copies of them, once, so the caller's would never
    change and the compiled function would keep what the trace saw."""
    try:
        leaves, treedef = pytree.flatten(tree)
        same = treedef == given[1] and all(a is b for a, b in zip(leaves, given[0]))
    except (GradcError, TypeError, ValueError, RecursionError):
        same = False
    if not same:
        raise _changed_given(fun)


def _changed_given(fun):
    return UnsupportedOpError(
        f"{getattr(fun, '__name__', 'the function')} (defined at {_definition(fun)}) changed "
        "the dicts or lists it was given (an entry stored, deleted or popped, a number "
        "updated): NumPy code would change the caller's, and a compiled function cannot, "
        "for its Python runs once, when traced. Build new ones (q = dict(p); q['b'] = ...) "
        "and return what the caller should keep", source=user_source())


def _containers(tree):
    """The ids of the dicts and lists in a pytree of arguments (the trace's own copies)."""
    ids, stack = set(), [tree]
    while stack:
        x = stack.pop()
        if isinstance(x, (dict, list, tuple)):
            if not isinstance(x, tuple):
                ids.add(id(x))
            stack.extend(x.values() if isinstance(x, dict) else x)
    return ids


def _given_paths(tree):
    """{id: steps} of the containers and traced values in the pytree (args, kwargs) the traced
    function was given (the trace's copies), each with its steps (keys, indices) from there:
    one the function assigns outside (`net.params = params`, `layer.weight = W`) is the
    caller's own object in NumPy's code (outside.Given)."""
    paths, stack = {}, [(tree, ())]
    while stack:
        x, steps = stack.pop()
        if steps and (isinstance(x, (dict, list, tuple, Value))):
            paths[id(x)] = steps
        if isinstance(x, dict):
            stack.extend((v, steps + (k,)) for k, v in x.items())
        elif isinstance(x, (list, tuple)):
            stack.extend((v, steps + (i,)) for i, v in enumerate(x))
    return paths


def _traced_value_into_numpy_array(error):
    """NumPy's "setting an array element with a sequence" raised at a line of the user's own
    code (none of gradc's, NumPy's or a library's frames between): `acc[i] = v` with `acc` a
    NumPy array and `v` traced, which NumPy takes for a sequence it cannot store. A refusal
    that names the line and says what to do, or None for another error."""
    if not str(error).startswith(("setting an array element with a sequence",
                                  "Error setting single item of array")):  # (a.flat[0] = v)
        return None
    tb = error.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    user, library = _user_frame(tb.tb_frame)
    if user is None:
        return None
    where = f"{os.path.basename(user.f_code.co_filename)}:{user.f_lineno}"
    if user is tb.tb_frame:
        from .surface import _STORE_INTO_NUMPY
        return UnsupportedOpError(_STORE_INTO_NUMPY, source=where)
    # (a library's Python code stores it, or NumPy's own: P.polyder(c)'s `der[j] = ...`)
    return UnsupportedOpError(library_call(library or tb.tb_frame), source=where)


def _about_a_traced_value(error):
    """Whether Python's TypeError names gradc's traced value (memoryview(x): "not 'Value'") or
    the array it stands for where a NumPy scalar would have worked (json.dumps(x.sum()))."""
    text = str(error)
    return "'Value'" in text or "ndarray is not JSON serializable" in text


def _innermost_user_line(error):
    """`file:line` of the innermost frame of the user's code in error's traceback."""
    tb, where = error.__traceback__, None
    while tb is not None:
        if _frame_kind(tb.tb_frame.f_code.co_filename) == "user":
            where = f"{os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where


def _static_values(treedef):
    """The static (non-array) leaves of a flattened tree."""
    if treedef in (pytree.LEAF, pytree.FLOAT):
        return []
    if treedef[0] == "static":
        return [treedef[1]]
    return [v for child in treedef[-1] for v in _static_values(child)]


def _warn_constant_arrays(fun, graph, watch, guarded=frozenset()):
    """ConstantArrayWarning for the arrays the traced function read from outside its arguments
    and compiled in (frozen.Watch's arrays of the globals, closures and objects it could
    reach): where capturing is off (gradc compile), and views capture.py cannot make.
    `guarded`: ids of arrays whose contents are checked on every call (capture.read_by_numpy)."""
    reachable = watch.arrays
    read = []
    for a in graph.constant_arrays.values():
        found = reachable.get(id(a))
        if found is None and type(a.base) is np.ndarray:  # (a view of one)
            owner = owner_of(a)
            found = next((r for r in reachable.values() if owner_of(r[1]) is owner), None)
        if found is not None and a.size > 1:
            read.append((found[0] if found[1] is a else f"a view of {found[0]}", a))
    if graph.outside is not None:
        _warn_derived_constants(fun, graph, watch, {id(a) for _, a in read}, guarded)
        _warn_large_tables(fun, watch, graph)
    if not read:
        return
    names = ", ".join(f"`{name}` {a.dtype.name}{list(a.shape)}" for name, a in read[:4])
    more = f" and {len(read) - 4} more" if len(read) > 4 else ""
    warn_at_user_line(ConstantArrayWarning(
        f"{getattr(fun, '__name__', 'the function')} (defined at {_definition(fun)}) reads "
        f"{names}{more} from outside its arguments: compiled in as constants, so a later change "
        "to them (in place, or a new array assigned) is not seen by this compiled function. "
        "Pass arrays that change as arguments (a dict of them is a pytree); for arrays that "
        "never change, warnings.filterwarnings('ignore', category=gradc.ConstantArrayWarning)"))


def _warn_derived_constants(fun, graph, watch, named, guarded):
    """ConstantArrayWarning for a float array or mask compiled in that has the size of an outside
    array the trace found but never read as a traced operand (not captured), too large for its
    contents to be guarded (capture.CONTENT_GUARD_SIZE): it was likely computed from it with
    NumPy alone (`np.sqrt(self.running_var + eps)`), which no trace sees, so a later change to
    that array is not seen in it."""
    unread = [(name, r) for name, r, _ in uncaptured(graph, watch)
              if r.size > CONTENT_GUARD_SIZE and id(r) not in guarded]
    if not unread:
        return
    for a in graph.constant_arrays.values():
        if id(a) in named or a.size < 2 or a.dtype.kind not in "fb":  # (x[self.W > 0]: a mask)
            continue
        sources = [f"`{name}`" for name, r in unread if r.size == a.size]
        if sources:
            source = " or ".join(sources[:3]) + (f" (or {len(sources) - 3} more)"
                                                 if len(sources) > 3 else "")
            warn_at_user_line(ConstantArrayWarning(
                f"{getattr(fun, '__name__', 'the function')} (defined at {_definition(fun)}) "
                f"compiled in a {a.dtype.name}{list(a.shape)} array that NumPy computed alone, "
                f"it seems from {source} (read from outside its arguments, of that size): a "
                f"later change to {'them' if len(sources) > 1 else 'it'} is not seen in it. "
                "gradc reads such arrays on every call where they meet a traced value: compute "
                "from them inside traced operations, or pass them as arguments"))
            return


def _warn_large_tables(fun, watch, graph):
    """ConstantArrayWarning for the integer and boolean arrays outside the arguments that the
    code names (index tables, masks: compiled in, since they may decide shapes) too large for
    their contents to be checked on every call (capture.CONTENT_GUARD_SIZE). Not for one the
    code assigns anew and no traced operation read (DLFS's Relu: `self.mask = (x <= 0);
    out[self.mask] = 0` reads the mask it made)."""
    constants = {id(a) for a in graph.constant_arrays.values()}
    large = [(name, a) for name, a, path in named_tables(watch) if a.size > CONTENT_GUARD_SIZE
             and (id(a) in constants or not path.assigned_by(graph.write_backs))]
    if not large:
        return
    names = ", ".join(f"`{name}` {a.dtype.name}{list(a.shape)}" for name, a in large[:4])
    warn_at_user_line(ConstantArrayWarning(
        f"{getattr(fun, '__name__', 'the function')} (defined at {_definition(fun)}) reads "
        f"{names} from outside its arguments: integer and boolean arrays are compiled in, and "
        f"ones of more than {CONTENT_GUARD_SIZE} elements are not checked on every call, so a "
        "later change to them is not seen. Pass them as arguments (or, for a mask, a float "
        "array of 0s and 1s, read on every call)"))


def warn_at_user_line(warning):
    """Issue `warning` (a Warning) at the innermost line of the user's own code."""
    frame, _ = _user_frame(sys._getframe(1))
    where = (frame.f_code.co_filename, frame.f_lineno) if frame else ("<unknown>", 0)
    warnings.warn_explicit(warning, type(warning), *where)


def _definition(fun):
    """`file:line` where `fun` is defined (or the calling line, for a callable object)."""
    code = getattr(inspect.unwrap(fun), "__code__", None)
    if code is None:
        return user_source()
    return f"{os.path.basename(code.co_filename)}:{code.co_firstlineno}"



class _Active(threading.local):
    def __init__(self):  # (runs once in each thread that uses it)
        self.graphs = []  # the graphs this thread is tracing, innermost last


_active = _Active()


def _static_holding_a_value(tree):
    """The first object among the static values of an output tree (a dataclass, a
    SimpleNamespace, a closure) that holds a traced value, a few levels deep; else None."""
    if not isinstance(tree, tuple):
        return None
    if tree and tree[0] == "static":
        return tree[1] if _holds_a_value(tree[1], 3) else None
    for child in tree:
        found = _static_holding_a_value(child) if isinstance(child, tuple) else None
        if found is not None:
            return found
    return None


_PLACEHOLDER = re.compile(r"%\d+:[a-z]+\d*\[|<traced [a-z]+\d*\[")  # (Value's repr, str)


def _holds_a_value(obj, depth):
    if isinstance(obj, Value) or isinstance(obj, str) and _PLACEHOLDER.search(obj):
        return True
    if depth == 0 or isinstance(obj, (str, bytes, type, types.ModuleType, np.ndarray)):
        return False
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = obj
    elif isinstance(obj, dict):
        items = obj.values()
    elif isinstance(obj, types.FunctionType):
        items = [getattr(c, "cell_contents", None) for c in obj.__closure__ or ()]
    else:
        items = list(getattr(obj, "__dict__", {}).values()) + [
            getattr(obj, name, None) for name in getattr(type(obj), "__slots__", ())
            if isinstance(name, str)]
    return any(_holds_a_value(item, depth - 1) for item in items)


def _note_refusal(error):
    graph = current_graph()
    if graph is not None and graph.tracing:
        graph.refusals.append(error)


errors.on_refusal = _note_refusal


def _raise_caught_refusal(refusals):
    """A refusal that the traced code caught itself (`except Exception:` around `if x > 0:`,
    or `.item()`) and went on from, raised again: NumPy would not have raised there, so what
    the code did instead is not NumPy's answer (it compiled the fallback, silently). The frame
    where a raised error stopped is the first of its traceback: gradc's own handlers are not
    the user's."""
    for error in refusals:
        tb = error.__traceback__
        if tb is None or _frame_kind(tb.tb_frame.f_code.co_filename) == "gradc" \
                and not tb.tb_frame.f_code.co_filename.startswith("<"):
            continue
        if getattr(error, "about_the_handler", False):  # (handlers.py's: says it already)
            raise error
        where = f"{os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}"
        raise type(error)(
            f"{error} [An `except` in the traced code caught this refusal (in "
            f"`{tb.tb_frame.f_code.co_name}`, around {where}) and the code went on: NumPy would "
            "not have raised there, so what it does instead is not NumPy's answer. Let gradc's "
            "errors through: catch NumPy's own exception types, not Exception.]") from error


def current_graph():
    """The graph this thread is tracing into, or None outside a trace."""
    graphs = _active.graphs
    return graphs[-1] if graphs else None


def argument_names(fun):
    """The names of `fun`'s positional parameters (for messages), or [] if it has no signature."""
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
            for k in x:  # (pytree.flatten's order)
                walk(x[k], f"{path}[{k!r}]")
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                walk(v, f"{path}[{i}]")

    args, kwargs = tree
    for i, a in enumerate(args):
        walk(a, argnames[i] if i < len(argnames) else f"arg{i}")
    for k in kwargs:
        walk(kwargs[k], k)
    return names


