"""Elementwise NumPy functions that are not ufuncs: np.sinc, np.nan_to_num, np.round, np.fix,
np.isclose, np.allclose, np.select, np.polyval, and np.real, np.imag, np.angle of real arrays
(gradc has no complex numbers)."""
import math
import operator

import numpy as np

from ..errors import UnsupportedOpError
from ..ir import Value
from ..ops import fn
from ._args import array_arg


def _sinc(x):
    """np.sinc: sin(pi x) / (pi x), 1 at 0 (the op "sinc", gradc/ops/math.py)."""
    return fn.unary("sinc", array_arg(x))


def _nan_to_num(x, copy=True, nan=0.0, posinf=None, neginf=None):
    """np.nan_to_num: NaN -> `nan`, +inf -> `posinf` (default the dtype's largest float), -inf
    -> `neginf` (its most negative). Integers and booleans come back as they are. The gradient
    passes where x is finite and is 0 elsewhere. copy=False (NumPy: x itself, changed in
    place) is refused for a traced x: traced arrays are never written in place."""
    if copy is False and isinstance(x, Value):
        raise UnsupportedOpError("np.nan_to_num(x, copy=False) changes x in place, and traced "
                                 "arrays are never written in place: write x = np.nan_to_num(x)")
    x = array_arg(x, nan, posinf, neginf)
    if not np.issubdtype(x.dtype, np.floating):
        return x
    info = np.finfo(x.dtype)

    def fill(value, default):
        if value is None:
            value = default
        if isinstance(value, Value):
            return fn.astype(value, x.dtype)
        if np.ndim(value) or isinstance(value, complex):
            raise UnsupportedOpError("np.nan_to_num in traced code takes real numbers for nan, "
                                     "posinf and neginf; for arrays use np.where")
        return fn.as_value(np.asarray(value, x.dtype), x)  # NumPy casts them to x's dtype

    x = fn.where(np.isnan(x), fill(nan, 0.0), x)
    x = fn.where(x == np.inf, fill(posinf, info.max), x)
    return fn.where(x == -np.inf, fill(neginf, info.min), x)


def _round(a, decimals=0, out=None):
    """np.round (np.around, x.round(), Python's round()): NumPy's own arithmetic, rint(x * 10**d)
    / 10**d (for d < 0, rint(x / 10**-d) * 10**-d), halves to even, in x's dtype, gradient 0
    (NumPy's bits: the kernels divide exactly, fast-math's arcp is off). Integers with d >= 0
    come back as they are, with d < 0 are rounded in float64 as NumPy's; booleans (NumPy:
    float16) are refused."""
    if out is not None:
        raise UnsupportedOpError("np.round(out=...) is not supported: traced arrays are never "
                                 "written in place; use the result")
    x = array_arg(a)
    decimals = operator.index(decimals)
    if x.dtype == np.bool_:
        raise UnsupportedOpError("np.round of a boolean array is float16 in NumPy, a dtype gradc "
                                 "does not have: round x.astype(np.float32)")
    if not np.issubdtype(x.dtype, np.floating):
        if decimals < 0:  # (NumPy's: in float64, back to x's integer dtype: 15 -> 20, 25 -> 20)
            return fn.astype(_round(fn.astype(x, np.float64), decimals), x.dtype)
        return x
    if decimals == 0:
        return fn.unary("rint", x)
    # (a Python float: weak, so float32 stays float32; past float64's range inf, as NumPy's
    # power gives: np.round(x, 400) is NaN there)
    scale = 10.0 ** abs(decimals) if abs(decimals) <= 308 else math.inf
    if decimals > 0:
        return fn.elementwise("divide", fn.unary("rint", fn.elementwise("multiply", x, scale)),
                              scale)
    return fn.elementwise("multiply", fn.unary("rint", fn.elementwise("divide", x, scale)), scale)


def _fix(x, out=None):
    """np.fix: rounded toward zero (np.trunc; integers as they are), gradient 0."""
    if out is not None:
        raise UnsupportedOpError("np.fix(out=...) is not supported: use the result")
    x = array_arg(x)
    return fn.unary("trunc", x) if np.issubdtype(x.dtype, np.floating) else x


def _isclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    """np.isclose, NumPy's formula: |a - b| <= atol + rtol * |b| where b is finite, or a == b
    (equal infinities); NaN close to NaN only with equal_nan. Computed in a float dtype."""
    a, b = fn.promote(array_arg(a, b), array_arg(b, a), float_only=True)
    both = fn.elementwise  # (of booleans: logical_and, logical_or)
    tolerance = fn.elementwise("add", fn.as_value(np.asarray(atol, a.dtype), a), fn.elementwise(
        "multiply", fn.as_value(np.asarray(rtol, a.dtype), a), fn.unary("abs", b)))
    near = fn.compare("less_equal", fn.unary("abs", fn.elementwise("subtract", a, b)), tolerance)
    close = both("logical_or", both("logical_and", near, fn.unary("isfinite", b)),
                 fn.compare("equal", a, b))
    if equal_nan:
        close = both("logical_or", close,
                     both("logical_and", fn.unary("isnan", a), fn.unary("isnan", b)))
    return close


def _allclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    """np.allclose: np.all of np.isclose (a traced 0-d bool: branch on it outside the trace)."""
    return fn.all(_isclose(a, b, rtol, atol, equal_nan), None)


def _select(condlist, choicelist, default=0):
    """np.select: the first choice whose condition holds, else `default`; the choices and the
    default promoted to one dtype as NumPy does."""
    condlist, choicelist = list(condlist), list(choicelist)
    if len(condlist) != len(choicelist):
        raise ValueError("np.select: list of cases must be same length as list of conditions")
    if not condlist:
        raise ValueError("np.select: select with an empty condition list is not possible")
    like = next(v for v in (*condlist, *choicelist, default) if isinstance(v, Value))
    conds = [fn.as_value(np.asarray(c), like) if not isinstance(c, Value) else c
             for c in condlist]
    for c in conds:
        if c.dtype != np.bool_:
            raise TypeError(f"np.select: invalid entry in condlist: should be boolean ndarray")
    # (Python numbers stay weak beside arrays, as NumPy types them: a default of 0.5 keeps
    # float32 choices float32)
    items = [c if isinstance(c, Value) or isinstance(c, (bool, int, float))
             and not isinstance(c, np.ndarray)
             else fn.as_value(np.asarray(c), like) for c in (*choicelist, default)]
    if not any(isinstance(c, Value) for c in items):
        items = [fn.as_value(np.asarray(c), like) for c in items]
    *choices, result = fn.promote(*items)
    for cond, choice in reversed(list(zip(conds, choices))):
        result = fn.where(cond, choice, result)
    return result


def _polyval(p, x):
    """np.polyval by Horner's rule, as NumPy evaluates it: y = y * x + p[i] from y = 0 in x's
    type (so a float64 coefficient array gives float64)."""
    if not isinstance(p, Value):
        p = np.asarray(p)
    if p.ndim == 0:
        raise TypeError("iteration over a 0-d array")
    x = array_arg(x if isinstance(x, Value) else np.asarray(x), p)  # (NumPy's asanyarray:
    # a Python number is an int64/float64 array here, not weakly typed)
    y = fn.zeros_like(x)
    for i in range(p.shape[0] if p.ndim else 0):
        coefficient = p[i] if isinstance(p, Value) else fn.as_value(np.asarray(p[i]), x)
        y = fn.add(fn.multiply(y, x), coefficient)
    return y


def imaginary_part(x):
    """np.imag / x.imag of a real array: its zeros, read-only as NumPy's (`y = x.imag; y += 1`
    is NumPy's ValueError)."""
    zeros = fn.zeros_like(x)
    zeros.graph.read_only.add(zeros.id)
    return zeros


def _angle(z, deg=False):
    """np.angle of a real array: arctan2(0, x) (pi for negative numbers and -0.0)."""
    a = np.arctan2(0, array_arg(z))
    return a * (180 / np.pi) if deg else a


def _real_only(name):
    """np.iscomplexobj and kin, of a real array (gradc has no complex numbers)."""
    def impl(*args, **kwargs):  # (NumPy's names: x, or real_if_close's a)
        x = array_arg(args[0] if args else kwargs.get("x", kwargs.get("a")))
        if name == "isreal":
            return fn.full(x.graph, x.shape, True, np.bool_)
        if name == "real_if_close":
            return x
        return name == "isrealobj"
    return impl


FUNCTIONS = {np.polyval: _polyval, np.real: lambda val: array_arg(val),
             np.imag: lambda val: imaginary_part(array_arg(val)), np.angle: _angle,
             np.iscomplexobj: _real_only("iscomplexobj"), np.isrealobj: _real_only("isrealobj"),
             np.isreal: _real_only("isreal"), np.real_if_close: _real_only("real_if_close"),
             np.sinc: _sinc, np.nan_to_num: _nan_to_num, np.round: _round, np.around: _round,
             np.fix: _fix, np.isclose: _isclose, np.allclose: _allclose, np.select: _select}
