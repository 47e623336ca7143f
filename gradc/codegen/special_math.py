"""Scalar code of the special functions (the ops of gradc/ops/special.py): erfinv, ndtri,
log_ndtr, erfcx, digamma and polygamma, which neither libm nor libdevice has, next to the ones
they do have (erf, erfc, lgamma), so that the kernels name them all one way.

The functions below are plain Python on float64 scalars (a float32 op calls them on its input
made float64 and rounds the result: float32 results are then correctly rounded but for one
rounding). `compiled(decorator)` makes them one target's functions, calling each other as
compiled code: the CPU's here (`sp_<name>`, which generated kernels import), CUDA's in
gradc/codegen/cuda_math.py. No fast-math: the error-free transformations in `_exp_square` and
the recurrences must be evaluated as written.

Imports only the standard library and Numba: `gradc compile` copies it into standalone modules.
"""
import math
import types as _types

from numba import njit

SQRT1_2 = 0.7071067811865476
PI = 3.141592653589793


def _poly(coefficients, x):
    """Horner's rule; coefficients from the highest power down."""
    acc = 0.0
    for c in coefficients:
        acc = acc * x + c
    return acc


# --- the normal quantile: Wichura, "Algorithm AS 241: The percentage points of the normal
# distribution", Applied Statistics 37 (1988), PPND16: rational approximations in three ranges,
# relative accuracy about 1e-16 -------------------------------------------------------------------
_AS241_A = (2.5090809287301226727e+3, 3.3430575583588128105e+4, 6.7265770927008700853e+4,
            4.5921953931549871457e+4, 1.3731693765509461125e+4, 1.9715909503065514427e+3,
            1.3314166789178437745e+2, 3.3871328727963666080e+0)
_AS241_B = (5.2264952788528545610e+3, 2.8729085735721942674e+4, 3.9307895800092710610e+4,
            2.1213794301586595867e+4, 5.3941960214247511077e+3, 6.8718700749205790830e+2,
            4.2313330701600911252e+1, 1.0)
_AS241_C = (7.74545014278341407640e-4, 2.27238449892691845833e-2, 2.41780725177450611770e-1,
            1.27045825245236838258e+0, 3.64784832476320460504e+0, 5.76949722146069140550e+0,
            4.63033784615654529590e+0, 1.42343711074968357734e+0)
_AS241_D = (1.05075007164441684324e-9, 5.47593808499534494600e-4, 1.51986665636164571966e-2,
            1.48103976427480074590e-1, 6.89767334985100004550e-1, 1.67638483018380384940e+0,
            2.05319162663775882187e+0, 1.0)
_AS241_E = (2.01033439929228813265e-7, 2.71155556874348757815e-5, 1.24266094738807843860e-3,
            2.65321895265761230930e-2, 2.96560571828504891230e-1, 1.78482653991729133580e+0,
            5.46378491116411436990e+0, 6.65790464350110377720e+0)
_AS241_F = (2.04426310338993978564e-15, 1.42151175831644588870e-7, 1.84631831751005468180e-5,
            7.86869131145613259100e-4, 1.48753612908506148525e-2, 1.36929880922735805310e-1,
            5.99832206555887937690e-1, 1.0)


def _ppnd16(q, tail):
    """The normal quantile of p given as q = p - 1/2 and tail = min(p, 1 - p) > 0 (passed
    apart, so that callers keep the digits of both: erfinv near 0, ndtri near 0 and 1)."""
    if abs(q) <= 0.425:
        r = 0.180625 - q * q
        return q * _poly(_AS241_A, r) / _poly(_AS241_B, r)
    r = math.sqrt(-math.log(tail))
    if r <= 5.0:
        r -= 1.6
        v = _poly(_AS241_C, r) / _poly(_AS241_D, r)
    else:
        r -= 5.0
        v = _poly(_AS241_E, r) / _poly(_AS241_F, r)
    return -v if q < 0 else v


def ndtri(p):
    if p != p or p < 0.0 or p > 1.0:
        return math.nan
    if p == 0.0:
        return -math.inf
    if p == 1.0:
        return math.inf
    return _ppnd16(p - 0.5, p if p < 0.5 else 1.0 - p)


def erfinv(x):
    """erf(y) = x  <=>  ndtr(y sqrt 2) = (1 + x) / 2: q = x / 2 exactly, tail = (1 - |x|) / 2."""
    if x != x or abs(x) > 1.0:
        return math.nan
    if abs(x) == 1.0:
        return math.copysign(math.inf, x)
    return _ppnd16(0.5 * x, 0.5 - 0.5 * abs(x)) * SQRT1_2


# --- erf and its relatives --------------------------------------------------------------------
def erf(x):
    return math.erf(x)


def erfc(x):
    return math.erfc(x)


def _exp_square(x):
    """exp(x * x) without the error of rounding x * x (which exp multiplies by x * x): x split
    into halves of 26 bits (Dekker), so hi * hi is exact."""
    c = 134217729.0 * x
    hi = c - (c - x)
    lo = x - hi
    return math.exp(hi * hi) * math.exp((2.0 * hi + lo) * lo)


def _erfcx_positive(x):
    if x < 10.0:
        return _exp_square(x) * math.erfc(x)
    # erfc(x) = exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...)))) (Laplace's
    # continued fraction), evaluated from the 40th term back: enough from x = 10 on
    t = x
    for k in range(40, 0, -1):
        t = x + 0.5 * k / t
    return 0.5641895835477563 / t  # 1/sqrt(pi) / t


def erfcx(x):
    """exp(x^2) erfc(x); for x < 0 from erfc(x) = 2 - erfc(-x)."""
    if x != x:
        return x
    if x >= 0.0:
        return _erfcx_positive(x)
    if x < -26.7:
        return math.inf
    return 2.0 * _exp_square(x) - _erfcx_positive(-x)


def ndtr(x):
    """The standard normal CDF, from erf near 0 and erfc in the tails (where it keeps its
    relative accuracy)."""
    t = x * SQRT1_2
    if abs(t) < SQRT1_2:
        return 0.5 + 0.5 * math.erf(t)
    if t > 0.0:
        return 1.0 - 0.5 * math.erfc(t)
    return 0.5 * math.erfc(-t)


def log_ndtr(x):
    """log ndtr(x): log1p(-ndtr(-x)) above 0 (ndtr(x) near 1); for x < -1 through erfcx,
    log(erfcx(-x/sqrt 2) / 2) - x^2/2, which neither underflows nor loses digits."""
    if x > 0.0:
        return math.log1p(-ndtr(-x))
    if x > -1.0:
        return math.log(ndtr(x))
    if x == -math.inf:
        return x
    return math.log(0.5 * erfcx(-x * SQRT1_2)) - 0.5 * x * x


def logit(p):
    """log(p / (1 - p)), from log1p around p = 1/2, where the quotient's rounding would be
    most of the result (the split SciPy uses)."""
    if p < 0.3 or p > 0.65:
        return math.log(p / (1.0 - p)) if 0.0 < p < 1.0 else _logit_edge(p)
    s = 2.0 * (p - 0.5)
    return math.log1p(s) - math.log1p(-s)


def _logit_edge(p):
    if p == 0.0:
        return -math.inf
    if p == 1.0:
        return math.inf
    return math.nan


# --- the gamma function's logarithm and derivatives --------------------------------------------
def gammaln(x):
    if x == -math.inf:  # (as SciPy: |Gamma| goes to 0 between the poles)
        return x
    if x <= 0.0 and x == math.floor(x):  # a pole: inf (Python's math.lgamma would raise)
        return math.inf
    return math.lgamma(x)


# B_2k / (2k), k = 1..8: the asymptotic series of digamma
_DIGAMMA_ASYMPTOTIC = (-3617.0 / 8160.0, 1.0 / 12.0, -691.0 / 32760.0, 1.0 / 132.0,
                       -1.0 / 240.0, 1.0 / 252.0, -1.0 / 120.0, 1.0 / 12.0)
# B_2k, k = 1..8: the asymptotic series of polygamma
_BERNOULLI = (1.0 / 6.0, -1.0 / 30.0, 1.0 / 42.0, -1.0 / 30.0, 5.0 / 66.0, -691.0 / 2730.0,
              7.0 / 6.0, -3617.0 / 510.0)
# digamma's positive root (hi + lo), and its Taylor coefficients psi^(n)(root) / n! there (filled
# in below from polygamma): near the root the recurrence would lose the result's digits
DIGAMMA_ROOT_HI, DIGAMMA_ROOT_LO = 1.4616321449683622, 9.549995429965697e-17
_DIGAMMA_ROOT_TAYLOR = ()


def digamma(x):
    """psi(x) = d/dx log Gamma(x): the reflection formula below 0, psi(x) = psi(1 - x) -
    pi / tan(pi x); the recurrence psi(x) = psi(x + 1) - 1/x up to x >= 10; then the asymptotic
    series log x - 1/(2x) - sum B_2k / (2k x^2k). A Taylor series around the positive root."""
    if x != x or x == -math.inf:
        return math.nan
    if x == math.inf:
        return x
    if abs(x - DIGAMMA_ROOT_HI) < 0.1:
        d = (x - DIGAMMA_ROOT_HI) - DIGAMMA_ROOT_LO
        return d * _poly(_DIGAMMA_ROOT_TAYLOR, d)
    result = 0.0
    if x <= 0.0:
        if x == math.floor(x):  # a pole: -inf at +0, +inf at -0 (as SciPy), NaN below
            if x == 0.0:
                return -math.inf if math.copysign(1.0, x) > 0 else math.inf
            return math.nan
        # tan(pi x) = tan(pi r), r = x less its nearest integer, in [-0.5, 0.5] and exact
        # (x - floor(x) lost a tiny x's digits: psi(-1e-310) came out -inf, not +inf)
        r = x - math.floor(x + 0.5)
        result = -PI / math.tan(PI * r)
        x = 1.0 - x
    while x < 10.0:
        result -= 1.0 / x
        x += 1.0
    z = 1.0 / (x * x)
    return result + math.log(x) - 0.5 / x - z * _poly(_DIGAMMA_ASYMPTOTIC, z)


def polygamma(n, x):
    """psi^(n)(x), n >= 1: for x > 0, `_polygamma_positive`; for x < 0, psi'(x) reflects
    (psi'(x) = pi^2 / sin^2(pi x) - psi'(1 - x)), and for n >= 2, with x = r - N (0 < r < 1),
    psi^(n)(x) = psi^(n)(r) + (-1)^(n+1) (psi^(n)(1 - r) - psi^(n)(N + 1 - r)): the recurrence
    psi^(n)(x) = psi^(n)(x + 1) + (-1)^(n+1) n! / x^(n+1) summed in closed form (stepping up
    one at a time took |x| steps: 28 s at -1e9)."""
    if x != x or x == -math.inf:
        return math.nan
    if x == math.inf:
        return 0.0
    if x <= 0.0 and x == math.floor(x):  # a pole: (-1)^(n+1) inf, as SciPy
        return math.inf if n % 2 == 1 else -math.inf
    if x > 0.0:
        return _polygamma_positive(n, x)
    if n == 1:
        r = x - math.floor(x + 0.5)  # (sin(pi r) = +-sin(pi x), r exact)
        return (PI / math.sin(PI * r)) ** 2 - _polygamma_positive(1, 1.0 - x)
    steps = math.ceil(-x)
    r = x + steps  # (0 < r < 1; it rounds for -0.5 < x < 0, where 1 - r is -x exactly:
    near = -x - (steps - 1.0)  # 1 - r from x, whose pole term n!/(1 - r)^(n+1) dominates)
    sign = 1.0 if n % 2 == 1 else -1.0  # (-1)^(n+1)
    far = _polygamma_positive(n, 1.0 - x)  # (N + 1 - r)
    return _polygamma_positive(n, r) + sign * (_polygamma_positive(n, near) - far)


def _polygamma_positive(n, x):
    """psi^(n)(x) for x > 0, n >= 1: the recurrence up to x >= 12 + 2n, then the asymptotic
    series (-1)^(n+1) [(n-1)!/x^n + n!/(2 x^(n+1)) + sum B_2k (2k+n-1)! / ((2k)! x^(2k+n))]."""
    fact = 1.0  # (n-1)!
    for k in range(1, n):
        fact *= k
    near = 0.0
    while x < 12.0 + 2.0 * n:
        near += 1.0 / x ** (n + 1)
        x += 1.0
    xn = x ** n
    z = 1.0 / (x * x)
    ratio = fact * n * (n + 1) * 0.5  # (2k+n-1)! / (2k)! at k = 1
    series, zk = 0.0, z
    for k in range(1, 9):
        series += _BERNOULLI[k - 1] * ratio * zk
        ratio *= (2.0 * k + n) * (2.0 * k + n + 1) / ((2.0 * k + 1) * (2.0 * k + 2))
        zk *= z
    value = fact * n * near + (fact + fact * n * 0.5 / x + series) / xn
    return value if n % 2 == 1 else -value


_DIGAMMA_ROOT_TAYLOR = tuple(  # psi^(n)(root)/n!, from n = 16 down to 1
    polygamma(n, DIGAMMA_ROOT_HI) / math.factorial(n) for n in range(16, 0, -1))

FUNCTIONS = ("ndtri", "erfinv", "erf", "erfc", "erfcx", "ndtr", "log_ndtr", "logit", "gammaln",
             "digamma", "polygamma")


def compiled(decorator):
    """{name: the function of FUNCTIONS compiled by `decorator`} (numba.njit(...),
    cuda.jit(device=True)): copies of the functions whose globals name the compiled versions,
    so that they call each other as compiled code."""
    namespace = dict(globals())
    for name in FUNCTIONS + ("_polygamma_positive", "_poly", "_ppnd16", "_exp_square",
                             "_erfcx_positive", "_logit_edge"):
        f = globals()[name]
        namespace[name] = decorator(_types.FunctionType(f.__code__, namespace, name,
                                                        f.__defaults__))
    return {name: namespace[name] for name in FUNCTIONS}


# the CPU's: compiled into each kernel that calls them (not cached on their own)
globals().update({"sp_" + name: f for name, f in compiled(
    njit(nogil=True, error_model="numpy")).items()})
