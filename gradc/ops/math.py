"""NumPy's elementwise math ufuncs beyond the core ones of ops/elementwise.py (issue 13).

Same form as there: each op is one `elementwise(...)` with its NumPy reference, the scalar
expression the fused loops emit (math through the target's table `m`), its VJP and the ufuncs
that trace to it. Derivatives are the standard ones; where a function has a kink or a
singularity, the comment at the op says which value gradc takes (JAX's convention unless said).
A few ufuncs are existing ops with another promotion rule (np.fabs, np.float_power): see
gradc/trace.py `_ufunc_bindings`. np.sinc and np.nan_to_num are functions, not ufuncs:
gradc/functions/elementwise.py binds them.
"""
import numpy as np

from . import fn
from .elementwise import _infer_bool, _x, _y, elementwise, lit

LN2, LN10 = float(np.log(2.0)), float(np.log(10.0))


def _zero(node, g):
    """Piecewise-constant functions (trunc, rint): derivative 0 everywhere, as JAX."""
    return [fn.zeros_like(x) for x in node.inputs]


def _no_gradient(node, g):
    """Boolean results (isnan, signbit): nothing to differentiate."""
    return [None] * len(node.inputs)


def _is_integer(dtype):
    return not np.issubdtype(np.dtype(dtype), np.floating)


# --- trigonometric and hyperbolic ------------------------------------------------------------
elementwise("tan", np.tan, lambda m, dt, a: f"{m.tan}({a})",
            vjp=lambda n, g: [g * (1 + _y(n) * _y(n))],
            ufuncs=(np.tan,), float_only=True)
elementwise("sinh", np.sinh, lambda m, dt, a: f"{m.sinh}({a})",
            vjp=lambda n, g: [g * np.cosh(_x(n))],
            ufuncs=(np.sinh,), float_only=True)
elementwise("cosh", np.cosh, lambda m, dt, a: f"{m.cosh}({a})",
            vjp=lambda n, g: [g * np.sinh(_x(n))],
            ufuncs=(np.cosh,), float_only=True)
# arcsin, arccos: infinite derivative at +-1, NaN outside [-1, 1] (as the value)
elementwise("arcsin", np.arcsin, lambda m, dt, a: f"{m.arcsin}({a})",
            vjp=lambda n, g: [g / np.sqrt((1 - _x(n)) * (1 + _x(n)))],
            ufuncs=(np.arcsin,), float_only=True)
elementwise("arccos", np.arccos, lambda m, dt, a: f"{m.arccos}({a})",
            vjp=lambda n, g: [-g / np.sqrt((1 - _x(n)) * (1 + _x(n)))],
            ufuncs=(np.arccos,), float_only=True)
# 1 / sqrt(x^2 + 1) as 1 / hypot(x, 1): no overflow to a zero gradient for |x| > 1e19 (float32)
elementwise("arcsinh", np.arcsinh, lambda m, dt, a: f"{m.arcsinh}({a})",
            vjp=lambda n, g: [g / np.hypot(_x(n), 1.0)],
            ufuncs=(np.arcsinh,), float_only=True)
elementwise("arccosh", np.arccosh, lambda m, dt, a: f"{m.arccosh}({a})",
            vjp=lambda n, g: [g / (np.sqrt(_x(n) - 1) * np.sqrt(_x(n) + 1))],
            ufuncs=(np.arccosh,), float_only=True)
elementwise("arctanh", np.arctanh, lambda m, dt, a: f"{m.arctanh}({a})",
            vjp=lambda n, g: [g / ((1 - _x(n)) * (1 + _x(n)))],
            ufuncs=(np.arctanh,), float_only=True)


def _arctan2_vjp(node, g):
    """d atan2(y, x) = (x dy - y dx) / (x^2 + y^2); NaN at the origin, as JAX."""
    y, x = node.inputs
    r2 = x * x + y * y
    return [g * x / r2, -g * y / r2]


elementwise("arctan2", np.arctan2, lambda m, dt, a, b: f"{m.arctan2}({a}, {b})",
            vjp=_arctan2_vjp, ufuncs=(np.arctan2,), float_only=True)


def _hypot_vjp(node, g):
    """d hypot(a, b) = (a da + b db) / hypot; 0 at the origin, as jax.numpy.hypot (whose
    max/min form gives 0 there) rather than 0/0."""
    a, b = node.inputs
    h = fn.where(node.output == 0, 1, node.output)
    return [g * a / h, g * b / h]


# libm's hypot scales: no overflow for components near the largest float
elementwise("hypot", np.hypot, lambda m, dt, a, b: f"{m.hypot}({a}, {b})",
            vjp=_hypot_vjp, ufuncs=(np.hypot,), float_only=True)
elementwise("deg2rad", np.deg2rad, lambda m, dt, a: f"{a} * {lit(np.pi / 180, dt)}",
            vjp=lambda n, g: [g * (np.pi / 180)],
            ufuncs=(np.deg2rad, np.radians), float_only=True)
elementwise("rad2deg", np.rad2deg, lambda m, dt, a: f"{a} * {lit(180 / np.pi, dt)}",
            vjp=lambda n, g: [g * (180 / np.pi)],
            ufuncs=(np.rad2deg, np.degrees), float_only=True)


# sinc(x) = sin(pi x) / (pi x), 1 at 0 (NumPy's np.sinc, a function: functions/elementwise.py)
def _sinc_vjp(node, g):
    """sinc'(x) = (cos(pi x) - sinc(x)) / x, which cancels catastrophically near 0: there its
    Maclaurin series (odd, so 0 at 0, and its own derivative there is -pi^2/3: grad of grad is
    right at 0 too). Series through x^11 for |x| < 1/4: truncation below 1e-14 relative."""
    x = _x(node)
    small = np.abs(x) < 0.25
    x2 = x * x
    # sum_k (-1)^k 2k pi^2k x^(2k-1) / (2k+1)!, k = 1..6, in Horner form
    coefs = [(-1) ** k * 2 * k * np.pi ** (2 * k) / float(np.prod(np.arange(1.0, 2 * k + 2)))
             for k in range(1, 7)]
    series = coefs[-1]
    for c in reversed(coefs[:-1]):
        series = series * x2 + c
    safe = fn.where(small, 1, x)
    direct = (np.cos(np.pi * safe) - _y(node)) / safe
    return [g * fn.where(small, series * x, direct)]


elementwise("sinc", np.sinc,
            lambda m, dt, a: f"{lit(1, dt)} if {a} == {lit(0, dt)} else "
                             f"{m.sin}({lit(np.pi, dt)} * {a}) / ({lit(np.pi, dt)} * {a})",
            vjp=_sinc_vjp, float_only=True)

# --- exponents and logarithms ----------------------------------------------------------------
elementwise("log2", np.log2, lambda m, dt, a: f"{m.log2}({a})",
            vjp=lambda n, g: [g / _x(n) * (1 / LN2)],
            ufuncs=(np.log2,), float_only=True)
elementwise("log10", np.log10, lambda m, dt, a: f"{m.log10}({a})",
            vjp=lambda n, g: [g / _x(n) * (1 / LN10)],
            ufuncs=(np.log10,), float_only=True)
elementwise("exp2", np.exp2, lambda m, dt, a: f"{m.exp2}({a})",
            vjp=lambda n, g: [g * _y(n) * LN2],
            ufuncs=(np.exp2,), float_only=True)
# infinite derivative at 0, as JAX (1/3 * cbrt(x)^-2)
elementwise("cbrt", np.cbrt, lambda m, dt, a: f"{m.cbrt}({a})",
            vjp=lambda n, g: [g / (3 * _y(n) * _y(n))],
            ufuncs=(np.cbrt,), float_only=True)


def _logaddexp_vjp(node, g, scale=1.0):
    """d/da log(e^a + e^b) = sigmoid(a - b) (with a scale of ln 2 for base 2): stable at +-1000
    and at infinities; where a and b are one infinity (a - b is NaN) 1/2 each (JAX gives NaN
    at -inf, -inf). A finite tie takes sigmoid(0) = 1/2 too, whose derivative (the Hessian,
    1/4) a constant 1/2 there made 0."""
    a, b = node.inputs
    gap = a - b
    tie = (a == b) & (gap != gap)
    return [g * fn.where(tie, 0.5, fn.unary("sigmoid", gap * scale)),
            g * fn.where(tie, 0.5, fn.unary("sigmoid", -gap * scale))]


# max + log1p(exp(-|a - b|)): no overflow at +-1000; a == b first, as NumPy, so that -inf, -inf
# (where a - b is NaN) gives -inf and inf, inf gives inf
elementwise("logaddexp", np.logaddexp,
            lambda m, dt, a, b: f"{a} + {lit(LN2, dt)} if {a} == {b} else "
                                f"max2({a}, {b}) + {m.log1p}({m.exp}(-abs({a} - {b})))",
            vjp=_logaddexp_vjp, ufuncs=(np.logaddexp,), float_only=True)
elementwise("logaddexp2", np.logaddexp2,
            lambda m, dt, a, b: f"{a} + {lit(1, dt)} if {a} == {b} else max2({a}, {b}) + "
                                f"{m.log1p}({m.exp2}(-abs({a} - {b}))) * {lit(1 / LN2, dt)}",
            vjp=lambda n, g: _logaddexp_vjp(n, g, LN2),
            ufuncs=(np.logaddexp2,), float_only=True)

# --- rounding, signs, remainders -------------------------------------------------------------
# integers (and booleans) are their own truncation, keeping their dtype as NumPy does
elementwise("trunc", np.trunc,
            lambda m, dt, a: a if _is_integer(dt) else f"{m.trunc}({a})",
            vjp=_zero, ufuncs=(np.trunc,))
elementwise("rint", np.rint, lambda m, dt, a: f"{m.rint}({a})",  # halves to even
            vjp=_zero, ufuncs=(np.rint,), float_only=True)


def _copysign_vjp(node, g):
    """copysign(a, b) = |a| with b's sign bit: d/da = +-1 (sign(a) taken as +1 at a = 0, as
    JAX's |a|), d/db = 0."""
    a, b = node.inputs
    flip = (a >= 0) != np.signbit(b)
    return [fn.where(flip, g, -g), fn.zeros_like(b)]


elementwise("copysign", np.copysign, lambda m, dt, a, b: f"{m.copysign}({a}, {b})",
            vjp=_copysign_vjp, ufuncs=(np.copysign,), float_only=True)


def _fmod_scalar(m, dt, a, b):
    """C's remainder (sign of the dividend). Integers: Python's remainder (the divisor's sign)
    moved to the dividend's where the signs differ (no abs(): |INT_MIN| overflows), and 0 for
    a zero divisor as NumPy (which warns)."""
    if not _is_integer(dt):
        return f"{m.fmod}({a}, {b})"
    zero = lit(0, dt)
    r = f"({a} % {b})"
    return f"{zero} if {b} == {zero} else ({r} - {b} if {r} != {zero} and " \
           f"({a} < {zero}) != ({b} < {zero}) else {r})"


# d/db fmod(a, b) = -trunc(a / b), as JAX
elementwise("fmod", np.fmod, _fmod_scalar,
            vjp=lambda n, g: [g, -g * np.trunc(_x(n, 0) / _x(n, 1))],
            ufuncs=(np.fmod,))


def _heaviside_scalar(m, dt, x, h):
    """0 below 0, 1 above, h at 0, NaN for NaN (as NumPy)."""
    return (f"{h} if {x} == {lit(0, dt)} else ({lit(1, dt)} if {x} > {lit(0, dt)} else "
            f"({lit(0, dt)} if {x} < {lit(0, dt)} else {x}))")


# d/dx 0 (the jump at 0 included, as JAX), d/dh 1 where x == 0
elementwise("heaviside", np.heaviside, _heaviside_scalar,
            vjp=lambda n, g: [fn.zeros_like(_x(n, 0)), fn.where(_x(n, 0) == 0, g, 0)],
            ufuncs=(np.heaviside,), float_only=True)

# --- classification (booleans): integer inputs are made float first (all finite, no NaN) ----
for _ufunc in (np.signbit, np.isnan, np.isinf, np.isfinite):
    elementwise(_ufunc.__name__, _ufunc,
                (lambda name: lambda m, dt, a: f"{getattr(m, name)}({a})")(_ufunc.__name__),
                vjp=_no_gradient, infer=_infer_bool, nondiff=(0,), ufuncs=(_ufunc,),
                float_only=True)
