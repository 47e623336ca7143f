"""Elementwise NumPy functions that are not ufuncs: np.sinc, np.nan_to_num, np.round."""
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


def _round(a, decimals=0, out=None):
    """np.round (np.around, x.round(), Python's round()) to whole numbers: np.rint (halves to
    even), gradient 0; integers and booleans come back as they are. Other decimals are
    refused: NumPy divides rint(x * 10**d) by 10**d, and the kernels' fast-math multiplies
    by 0.1 instead (0.30000000000000004 for 0.3), so no float result would be NumPy's."""
    if out is not None:
        raise UnsupportedOpError("np.round(out=...) is not supported: traced arrays are never "
                                 "written in place; use the result")
    x = array_arg(a)
    decimals = operator.index(decimals)
    if not np.issubdtype(x.dtype, np.floating) and decimals >= 0:
        return x
    if decimals != 0:
        raise UnsupportedOpError(
            f"np.round to decimals={decimals} is not supported (its result would differ from "
            "NumPy's in the last bit): round to whole numbers, np.round(x * 10**d), and scale "
            "where you use the result")
    return fn.unary("rint", x)


FUNCTIONS = {np.sinc: _sinc, np.nan_to_num: _nan_to_num, np.round: _round, np.around: _round}
