"""SciPy's functions for traced code, by SciPy's names and semantics (as jax.scipy does):
`gradc.scipy.special` (the special-function ufuncs, logsumexp, softmax, log_softmax, polygamma),
`gradc.scipy.stats` (norm, t, beta, gamma, poisson, multivariate_normal) and
`gradc.scipy.linalg` (solve_triangular, cho_factor, cho_solve). On arrays that are not traced
they call SciPy itself.

SciPy's own Python functions (scipy.special.logsumexp, scipy.stats.norm.logpdf...) cannot be
traced: they convert their arguments with np.asarray first. Its ufuncs (scipy.special.erf...)
can, and are the same objects here.
"""
from . import linalg, special, stats  # noqa: F401
