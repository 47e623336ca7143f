"""Argument handling shared by the implementations of NumPy functions (gradc/trace.py and the
family modules of this package)."""
import numpy as np

from ..errors import UnsupportedOpError
from ..ir import Value
from ..ops import fn

ABSENT = np._NoValue  # NumPy's default for arguments it passes on only when given


def no_out(out, name):
    if out is not None:
        raise UnsupportedOpError(f"np.{name}(out=...) cannot be traced: arrays are immutable "
                                 "in a traced function; use the returned value")


def no_where(where, name):
    if where is not ABSENT and where is not True:
        raise UnsupportedOpError(f"np.{name}(where=...) is not supported; use np.where on the "
                                 "input instead")


def array_arg(a, *others):
    """`a` as a graph value: a NumPy array becomes a constant of the graph of the traced value
    among `others` that brought the call here."""
    if isinstance(a, Value):
        return a
    return fn.as_value(a, next((x for x in others if isinstance(x, Value)), None))
