"""SciPy's special functions (scipy.special ufuncs) as elementwise ops.

Each op: SciPy's ufunc as its reference (SciPy imported on first use, not with gradc), its VJP,
and scalar code: the functions of gradc/codegen/special_math.py, named through the target's math
table (`m.erfinv` is `sp_erfinv` in a CPU kernel, `cu_erfinv` in a CUDA one). They compute in
float64; a float32 op rounds the result (SciPy's float32 loops mostly do the same).
`scipy_ufuncs` names the scipy.special ufuncs that trace to the op (gradc/trace.py binds them by
name, so importing gradc does not import SciPy). expit and log_expit are the ops `sigmoid` and
`log_sigmoid` of ops/elementwise.py.
"""
import math

import numpy as np

from . import fn
from .elementwise import CODE_DTYPE, _x, _y, elementwise, lit

TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)
SQRT_2PI = math.sqrt(2 * math.pi)


def _scipy(name):
    """SciPy's ufunc `name` as a reference, its result in the input's dtype."""
    def ref(*arrays, **attrs):
        import scipy.special
        with np.errstate(all="ignore"):
            out = getattr(scipy.special, name)(*attrs.values(), *arrays)
        return np.asarray(out).astype(arrays[0].dtype)
    return ref


def _in_float64(call, dt, args):
    """`call(args)` of float64 code, in the op's dtype."""
    if np.dtype(dt) == np.float64:
        return f"{call}({', '.join(args)})"
    return f"{CODE_DTYPE[np.dtype(dt).name]}({call}({', '.join(f'f64({a})' for a in args)}))"


def special(name, vjp, scipy_ufuncs=None, function=None):
    """An op of one argument computed by special_math's `function` (default: `name`)."""
    function = function or name
    return elementwise(name, _scipy(scipy_ufuncs[0] if scipy_ufuncs else name),
                       lambda m, dt, a: _in_float64(getattr(m, function), dt, [a]),
                       vjp=vjp, scipy_ufuncs=scipy_ufuncs or (name,), float_only=True)


def _polygamma(n, x):
    return x.graph.apply("polygamma", (x,), n=n)


special("erf", lambda n, g: [g * TWO_OVER_SQRT_PI * np.exp(-_x(n) * _x(n))])
special("erfc", lambda n, g: [-g * TWO_OVER_SQRT_PI * np.exp(-_x(n) * _x(n))])
def _erfcx_vjp(node, g):
    """erfcx'(x) = 2 x erfcx(x) - 2/sqrt(pi), in float64, and from its asymptotic series
    -2/sqrt(pi) (z - 3 z^2 + 15 z^3 - ...), z = 1/(2 x^2), above x = 25, where the two terms
    cancel (at x = 1e8 the difference had the wrong sign; float32 lost 1e-4 at x = 30)."""
    x, y = _x(node), _y(node)
    if x.dtype != np.float64:
        x = fn.astype(x, np.float64)
        y = fn.unary("erfcx", x)
    far = x > 25.0
    x_far = fn.where(far, x, 25.0)
    z = 0.5 / (x_far * x_far)
    series = 0.0
    for c in (2027025.0, 135135.0, 10395.0, 945.0, 105.0, 15.0, 3.0, 1.0):  # (Horner, inside out)
        series = c - z * series
    slope = fn.where(far, -TWO_OVER_SQRT_PI * z * series, 2 * x * y - TWO_OVER_SQRT_PI)
    return [g * fn.astype(slope, g.dtype)]


special("erfcx", _erfcx_vjp)
special("erfinv", lambda n, g: [g * (math.sqrt(math.pi) / 2) * np.exp(_y(n) * _y(n))])
special("ndtr", lambda n, g: [g * np.exp(-0.5 * _x(n) * _x(n)) / SQRT_2PI])
special("ndtri", lambda n, g: [g * SQRT_2PI * np.exp(0.5 * _y(n) * _y(n))])
# d/dx log ndtr(x) = pdf(x)/ndtr(x) = sqrt(2/pi) / erfcx(-x/sqrt 2): no 0/0 where both underflow
def _log_ndtr_vjp(node, g):
    """d/dx log Phi(x) = phi(x) / Phi(x) = sqrt(2 / pi) / erfcx(-x / sqrt 2); past x = 10,
    where Phi(x) is 1 to 1e-23, phi(x) itself: erfcx overflows there (x > 13 in float32, 38 in
    float64), and its derivative times the 0 it gave was NaN (the second derivative). The
    other branch reads a safe x, so that no NaN comes back through the masked side."""
    x = _x(node)
    far = x > 10
    near = fn.where(far, 0.0, x)
    return [g * fn.where(far, fn.unary("exp", x * x * -0.5) * (1 / math.sqrt(2 * math.pi)),
                         math.sqrt(2 / math.pi) / fn.unary("erfcx", near * -math.sqrt(0.5)))]


special("log_ndtr", _log_ndtr_vjp)
special("gammaln", lambda n, g: [g * fn.unary("digamma", _x(n))])
special("digamma", lambda n, g: [g * _polygamma(1, _x(n))], scipy_ufuncs=("psi", "digamma"))
elementwise("polygamma", _scipy("polygamma"),
            lambda m, dt, a, n: _in_float64(m.polygamma, dt, [str(int(n)), a]),
            vjp=lambda node, g: [g * _polygamma(node.attr["n"] + 1, _x(node))], float_only=True)
special("logit", lambda n, g: [g / (_x(n) * (1 - _x(n)))])


def _x_times(log):
    """x * log(y) (or log1p), 0 where x == 0 unless y is NaN, as SciPy's xlogy/xlog1py."""
    def scalar(m, dt, a, b):
        zero = lit(0, dt)
        return f"({zero} if {a} == {zero} and {b} == {b} else {a} * {getattr(m, log)}({b}))"
    return scalar


def _x_times_vjp(log, dlog, pole):
    """The gradients JAX gives xlogy: log(y) for x (at x = 0 too), x * log'(y) for y, taken as 0
    where x == 0 and log'(y) is not finite (y at the pole, or NaN: 0, not 0 * inf). Only there:
    where x == 0 alone, the y-gradient's own x-derivative, log'(y), was lost (the Hessian of
    xlogy at x = 0 had 0 for 1/y, so gamma.logpdf's at a = 1, poisson.logpmf's at k = 0)."""
    def vjp(node, g):
        x, y = node.inputs
        singular = (x == 0) & ((y == pole) | (y != y))
        return [g * getattr(np, log)(y),
                fn.where(singular, 0, g * x * dlog(fn.where(singular, pole + 1, y)))]
    return vjp


elementwise("xlogy", _scipy("xlogy"), _x_times("log"),
            vjp=_x_times_vjp("log", lambda y: 1 / y, 0), scipy_ufuncs=("xlogy",), float_only=True)
elementwise("xlog1py", _scipy("xlog1py"), _x_times("log1p"),
            vjp=_x_times_vjp("log1p", lambda y: 1 / (1 + y), -1), scipy_ufuncs=("xlog1py",),
            float_only=True)
