"""scipy.stats distributions for traced code: norm, t, beta, gamma and poisson, their log-densities
(and what follows from them) by SciPy's names, with SciPy's loc/scale arguments and defaults.

As in SciPy, results are float64 whatever the inputs' dtype, parameters outside their domain
(scale <= 0, df <= 0, a <= 0...) give NaN, points outside the support give -inf (log) or 0,
and a NaN point gives NaN.
Untraced arguments go to scipy.stats itself. (multivariate_normal: through a Cholesky factor, gradc/scipy/_mvn.py; not
here.)
"""
import functools
import inspect
import math

import numpy as np
import scipy.stats as _st
from scipy.special import gammaln, log_ndtr, ndtr, ndtri, xlog1py, xlogy

from ..ops import fn
from ._util import as_float, first_value, scipy_function

__all__ = ["beta", "gamma", "multivariate_normal", "norm", "poisson", "t"]

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _distribution(cls):
    """Make each function of `cls` a method of SciPy's distribution of that name: SciPy's own
    for untraced arguments; else the function, given every argument (defaults too) as a float64
    graph value."""
    scipy_dist = getattr(_st, cls.__name__)
    for name, f in list(vars(cls).items()):
        if name.startswith("_") or not callable(f):
            continue
        setattr(cls, name, staticmethod(_method(scipy_dist, f)))
    return cls


def _method(scipy_dist, f):
    signature = inspect.signature(f)

    @scipy_function
    @functools.wraps(f)
    def method(*args, **kwargs):
        like = first_value(*args, **kwargs)
        if like is None:
            return getattr(scipy_dist, f.__name__)(*args, **kwargs)
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return f(**{k: as_float(v, like, np.float64) for k, v in bound.arguments.items()})
    return method


def _in_domain(condition, out):
    """`out` where the parameters are in their domain, NaN elsewhere (as SciPy)."""
    return fn.where(condition, out, np.nan)


def _on_support(inside, out, point, outside=-np.inf):
    """`out` on the support, `outside` off it, NaN at a NaN point (SciPy's: not off it)."""
    return fn.where(np.isnan(point), np.nan, fn.where(inside, out, outside))


def _clamped(inside, y, safe):
    """y where it is on the support, `safe` elsewhere: the formula is then finite everywhere, so
    the gradient of the unused branch of the final where is 0, not NaN."""
    return fn.where(inside, y, safe)


@_distribution
class norm:
    """The normal distribution: loc is the mean, scale the standard deviation."""

    def logpdf(x, loc=0.0, scale=1.0):
        z = (x - loc) / scale
        return _in_domain(scale > 0, -0.5 * z * z - np.log(scale) - _LOG_SQRT_2PI)

    def pdf(x, loc=0.0, scale=1.0):
        return np.exp(norm.logpdf(x, loc, scale))

    def cdf(x, loc=0.0, scale=1.0):
        return _in_domain(scale > 0, ndtr((x - loc) / scale))

    def logcdf(x, loc=0.0, scale=1.0):
        return _in_domain(scale > 0, log_ndtr((x - loc) / scale))

    def sf(x, loc=0.0, scale=1.0):
        return _in_domain(scale > 0, ndtr((loc - x) / scale))

    def logsf(x, loc=0.0, scale=1.0):
        return _in_domain(scale > 0, log_ndtr((loc - x) / scale))

    def ppf(q, loc=0.0, scale=1.0):
        return _in_domain(scale > 0, loc + scale * ndtri(q))


@_distribution
class t:
    """Student's t distribution with df degrees of freedom."""

    def logpdf(x, df, loc=0.0, scale=1.0):
        z = (x - loc) / scale
        # log Γ((df+1)/2) - log Γ(df/2) - log(df π)/2: for df >= 100 its series in a = df/2
        # (the two log-gammas cancel: -19 for -1.04 at df = 1e16), -log(2π)/2 at df = inf
        large = df >= 100
        small = fn.where(large, 1.0, df)
        a = fn.where(large, df, 100.0) / 2
        c = fn.where(large, -_LOG_SQRT_2PI - 1 / (8 * a) + 1 / (192 * a ** 3)
                     - 1 / (640 * a ** 5) + 17 / (14336 * a ** 7),
                     gammaln((small + 1) / 2) - gammaln(small / 2) - 0.5 * np.log(small * np.pi))
        infinite = np.isinf(df)
        finite = fn.where(infinite, 1.0, df)  # (the normal's kernel at df = inf, as SciPy's)
        kernel = fn.where(infinite, -0.5 * z * z, -(finite + 1) / 2 * np.log1p(z * z / finite))
        return _in_domain((df > 0) & (scale > 0), c + kernel - np.log(scale))

    def pdf(x, df, loc=0.0, scale=1.0):
        return np.exp(t.logpdf(x, df, loc, scale))


@_distribution
class beta:
    """The beta distribution on [loc, loc + scale], shape parameters a and b."""

    def logpdf(x, a, b, loc=0.0, scale=1.0):
        point = (x - loc) / scale
        inside = (point >= 0) & (point <= 1)
        y = _clamped(inside, point, 0.5)
        out = (xlogy(a - 1, y) + xlog1py(b - 1, -y)
               - (gammaln(a) + gammaln(b) - gammaln(a + b)) - np.log(scale))
        return _in_domain((a > 0) & (b > 0) & (scale > 0), _on_support(inside, out, point))

    def pdf(x, a, b, loc=0.0, scale=1.0):
        return np.exp(beta.logpdf(x, a, b, loc, scale))


@_distribution
class gamma:
    """The gamma distribution with shape a; scale is 1 / rate."""

    def logpdf(x, a, loc=0.0, scale=1.0):
        point = (x - loc) / scale
        inside = point >= 0
        y = _clamped(inside, point, 1.0)
        out = xlogy(a - 1, y) - y - gammaln(a) - np.log(scale)
        return _in_domain((a > 0) & (scale > 0), _on_support(inside, out, point))

    def pdf(x, a, loc=0.0, scale=1.0):
        return np.exp(gamma.logpdf(x, a, loc, scale))


@_distribution
class poisson:
    """The Poisson distribution with mean mu, on the integers k >= loc."""

    def logpmf(k, mu, loc=0.0):
        point = k - loc
        inside = (point >= 0) & (point == np.floor(point))
        k = _clamped(inside, point, 0.0)
        out = xlogy(k, mu) - gammaln(k + 1) - mu
        return _in_domain(mu >= 0, _on_support(inside, out, point))

    def pmf(k, mu, loc=0.0):
        return np.exp(poisson.logpmf(k, mu, loc))




class multivariate_normal:
    """scipy.stats.multivariate_normal's logpdf and pdf, through a Cholesky factor of `cov`
    (gradc/scipy/_mvn.py): x (..., d), mean (d,) or None, cov (d, d), its diagonal or a scalar."""

    @staticmethod
    def logpdf(x, mean=None, cov=1, allow_singular=False):
        from ._mvn import logpdf
        return logpdf(x, mean, cov, allow_singular)

    @staticmethod
    def pdf(x, mean=None, cov=1, allow_singular=False):
        return np.exp(multivariate_normal.logpdf(x, mean, cov, allow_singular))
