"""SciPy's functions for traced code, by SciPy's names and semantics (as jax.scipy does):
`gradc.scipy.special` (the special-function ufuncs, logsumexp, softmax, log_softmax, polygamma),
`gradc.scipy.stats` (norm, t, beta, gamma, poisson, multivariate_normal) and
`gradc.scipy.linalg` (solve_triangular, cho_factor, cho_solve). On arrays that are not traced
they call SciPy itself.

SciPy's own Python functions (scipy.special.logsumexp, scipy.stats.norm.logpdf...) cannot be
traced: they convert their arguments with np.asarray first. Its ufuncs (scipy.special.erf...)
can, and are the same objects here.
"""

_SUBMODULES = ("linalg", "special", "stats")


def __getattr__(name):
    """Each submodule on first use: gradc.scipy.linalg alone leaves scipy.stats out (its import
    took 1.4-1.8 s of a Gaussian process's first call on a loaded machine)."""
    if name in _SUBMODULES:
        from .. import _import_untraced
        return _import_untraced(f"{__name__}.{name}")
    raise AttributeError(f"module 'gradc.scipy' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))
