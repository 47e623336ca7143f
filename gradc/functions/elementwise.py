"""Elementwise NumPy functions that are not ufuncs: np.sinc, np.nan_to_num."""
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
    passes where x is finite and is 0 elsewhere. (`copy` changes nothing: traced arrays are
    never written in place.)"""
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


FUNCTIONS = {np.sinc: _sinc, np.nan_to_num: _nan_to_num}
