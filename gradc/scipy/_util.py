"""What gradc.scipy's functions share: finding the traced argument, arguments as float values."""
import numpy as np

from ..ir import Value
from ..ops import fn
from ..trace import traced


def first_value(*args, **kwargs):
    """The first traced value among the arguments, or None (then SciPy itself answers)."""
    return next((a for a in (*args, *kwargs.values()) if isinstance(a, Value)), None)


def _graph_of(*args, **kwargs):
    value = first_value(*args, **kwargs)
    return value.graph if value is not None else None


def scipy_function(method):
    """A gradc.scipy function: stamped with the user's line, whichever argument is traced."""
    return traced(method, graph_of=_graph_of)


def as_float(x, like, dtype=None):
    """`x` (traced, an array or a number) as a floating graph value in the graph of `like`:
    of `dtype`, or of x's own float dtype (float64 for integers)."""
    x = fn.as_value(x, like) if not isinstance(x, Value) else x
    if dtype is None:
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    return x if x.dtype == dtype else fn.astype(x, dtype)

