"""scipy.special for traced code.

The ufuncs are SciPy's own (a traced argument reaches gradc through `__array_ufunc__`; see
gradc/ops/special.py); logsumexp, softmax, log_softmax and polygamma, which SciPy writes in
Python, are gradc's: max-shifted, with SciPy's arguments and results. Untraced arguments go to
SciPy.
"""
import math
import operator

import numpy as np
import scipy.special as _sp
from scipy.special import (digamma, erf, erfc, erfcx, erfinv, expit, gammaln,  # noqa: F401
                           log_expit, log_ndtr, logit, ndtr, ndtri, psi, xlog1py, xlogy)

from .. import nn
from ..errors import ArgumentError
from ..ops import fn
from ..ops.nn import finite_max
from ._util import as_float, first_value, scipy_function

__all__ = ["digamma", "erf", "erfc", "erfcx", "erfinv", "expit", "gammaln", "log_expit",
           "log_ndtr", "log_softmax", "logit", "logsumexp", "ndtr", "ndtri", "polygamma", "psi",
           "softmax", "xlog1py", "xlogy"]


@scipy_function
def logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False):
    """log(sum(b * exp(a), axis)), as scipy.special.logsumexp; with return_sign, (log|sum|,
    sign of the sum). Entries of -inf (and b == 0) drop out; all of them give -inf."""
    like = first_value(a, b)
    if like is None:
        return _sp.logsumexp(a, axis=axis, b=b, keepdims=keepdims, return_sign=return_sign)
    if b is None and not return_sign:
        return nn.logsumexp(a, axis=axis, keepdims=keepdims)  # one op, with its own VJP
    a = as_float(a, like)
    terms = a
    if b is not None:
        b = as_float(b, like)
        a, b = fn.promote(a, b)
        a, b = fn.broadcast_all(a, b)
        # (SciPy's: an entry with b == 0 drops out, its a too: it must not set the max shift.
        # Its term b * exp(a - m) is 0 all the same, and kept with a finite a, so that its
        # weight's gradient is exp(a - m) / sum: masked to -inf, it was 0, and a weight at 0
        # never moved again; the exponent capped where it would overflow: 0 * inf is NaN)
        dropped = fn.compare("equal", b, 0)
        terms = fn.where(dropped & ~np.isfinite(a), -np.inf, a)
        a = fn.where(dropped, -np.inf, a)
    axes = fn.normalize_axes(axis, a.ndim)
    m = finite_max(a, axes)
    shifted = terms - fn.broadcast_to(m, a.shape)
    if b is not None:
        cap = math.log(np.finfo(a.dtype).max) / 2
        shifted = fn.where(dropped, fn.minimum(shifted, cap), shifted)
    e = np.exp(shifted)
    s = fn.sum(e if b is None else b * e, axes, keepdims=True)
    if return_sign:
        sign = np.sign(s)
        out = np.log(np.abs(s)) + m
    else:
        out = np.log(s) + m  # NaN for a negative sum, as SciPy (which warns)
    if not keepdims:
        out = fn.squeeze(out, axes)
        if return_sign:
            sign = fn.squeeze(sign, axes)
    return (out, sign) if return_sign else out


def _over(name, f):
    @scipy_function
    def function(x, axis=None):
        if first_value(x) is None:
            return getattr(_sp, name)(x, axis=axis)
        return f(x, axis=axis)
    function.__name__ = function.__qualname__ = name
    function.__doc__ = f"scipy.special.{name}(x, axis=None): over all elements by default."
    return function


softmax = _over("softmax", nn.softmax)
log_softmax = _over("log_softmax", nn.log_softmax)


@scipy_function
def polygamma(n, x):
    """The n-th derivative of digamma, n a static integer >= 0 (SciPy's may be an array)."""
    try:
        n = operator.index(n)
    except TypeError:
        raise ArgumentError("gradc.scipy.special.polygamma: n must be a Python integer (the order "
                            f"of the derivative is static), got {type(n).__name__}") from None
    if n < 0:
        raise ArgumentError(f"gradc.scipy.special.polygamma: n must be >= 0, got {n}")
    if first_value(x) is None:
        return _sp.polygamma(n, x)
    x = as_float(x, x, np.float64)  # SciPy's result is float64 for any input
    return digamma(x) if n == 0 else x.graph.apply("polygamma", (x,), n=n)
