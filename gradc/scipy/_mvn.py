"""multivariate_normal.logpdf(x, mean, cov) through a Cholesky factor (to be exposed as
gradc.scipy.stats.multivariate_normal.logpdf)."""
import numpy as np

from ..errors import UnsupportedOpError
from ..functions._args import array_arg
from ..ir import Value
from ..functions.lapack import cholesky
from ..ops import fn
from ..ops import lapack as la
from ..trace import traced
from .linalg import solve_triangular


@traced
def logpdf(x, mean=None, cov=1, allow_singular=False):
    """log N(x; mean, cov) for x (..., d) (the last axis is the variable, as SciPy's); a
    scalar for one x. cov is a (d, d) positive definite matrix, a vector (its diagonal) or a
    scalar; mean (d,) or None (zero). float64, as SciPy's (float32 inputs too). On NumPy arrays
    outside a trace: SciPy's own."""
    if not any(isinstance(v, Value) for v in (x, mean, cov)):
        import scipy.stats
        return scipy.stats.multivariate_normal.logpdf(x, mean, cov, allow_singular=allow_singular)
    if allow_singular:
        raise UnsupportedOpError("multivariate_normal.logpdf(allow_singular=True) is not "
                                 "supported in traced code: it takes a positive definite cov")
    x = fn.astype(array_arg(x, mean, cov), np.float64)
    # the variable's dimension as SciPy finds it: mean's size, else cov's side, else 1; a 1-D
    # x is then n points of a 1-D normal, or one point
    dim = (int(np.size(mean)) if mean is not None else
           int(np.shape(cov)[0]) if np.ndim(cov) else 1)
    if x.ndim == 0 or x.ndim == 1 and dim == 1:
        x = fn.reshape(x, x.shape + (1,))
    d = x.shape[-1]
    if mean is not None:
        x = fn.subtract(x, mean)
    cov = array_arg(cov, x)
    cov = fn.astype(cov, x.dtype)
    if cov.ndim < 2:  # a scalar or the diagonal
        cov = fn.multiply(fn.broadcast_to(cov, (d,)), la.eye(x, d))
    chol = cholesky(cov)
    rows = fn.reshape(x, (-1, d))  # one column per point
    z = solve_triangular(chol, la.mT(rows), lower=True)
    maha = fn.sum(fn.multiply(z, z), axis=0)
    half_logdet = fn.sum(fn.unary("log", la.diagonal(fn.expand_dims(chol, 0))))
    out = fn.multiply(maha, -0.5) - half_logdet - float(0.5 * d * np.log(2 * np.pi))
    # (SciPy squeezes its result: every axis of length 1 goes, one point is a scalar)
    return fn.reshape(out, tuple(n for n in x.shape[:-1] if n != 1))
