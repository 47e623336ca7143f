"""Argument handling shared by the implementations of NumPy functions (gradc/trace.py and the
family modules of this package)."""
import numpy as np

from ..errors import UnsupportedOpError
from ..ir import Value
from ..ops import fn

ABSENT = np._NoValue  # NumPy's default for arguments it passes on only when given


def no_out(out, name, where=False, ufunc=False):
    if out is None and not where:
        return
    targets = out if isinstance(out, tuple) else (out,)
    name = name if "." in name else f"np.{name}"  # (a ufunc's may be scipy.special.name)
    if any(type(t) is np.ndarray for t in targets):  # (`self.mean *= m`: NumPy's array in place)
        raise UnsupportedOpError(
            f"{name}(out=...) into a NumPy array (`a += traced` where `a` is a NumPy array): "
            "a NumPy array cannot hold traced values. An accumulator the function makes "
            "(`acc = np.zeros(n); acc += x`) takes them while the name it updates holds it "
            "alone (not also a list, a view, another name: there write acc = acc + x, or start "
            "it traced, np.zeros_like(x)). State kept outside the function (`self.mean *= m`): a compiled "
            "function cannot change it on every call; return the new value (with has_aux=True "
            "for a gradient) and assign it after the call")
    if out is None:  # (where= alone: NumPy leaves the other elements as np.empty's)
        raise UnsupportedOpError(
            f"{name}(where=...) without out= leaves the elements where the mask is False "
            "uninitialized in NumPy; give out= a traced array of the old values "
            "(out=np.zeros_like(x)), or write np.where(mask, result, 0)")
    if isinstance(out, tuple) and len(out) > 1:
        raise UnsupportedOpError(f"{name}(out=...) of {len(out)} arrays is not supported (a "
                                 "ufunc's out= takes one traced array): use the returned arrays")
    if ufunc and any(isinstance(t, np.ndarray) for t in targets):  # (np.zeros(shape), made
        # in the trace: a ufunc's out= takes a traced array, as np.sum's and others' do)
        raise UnsupportedOpError(
            f"{name}(out=...) into an array the function made with NumPy (np.zeros(shape)): "
            "it holds no traced values; make it from a traced one, out=np.zeros_like(a) (then "
            "out= takes the result, as NumPy's: np.divide(a, b, out=np.zeros_like(a), where=b "
            "!= 0)), or use the returned value")
    raise UnsupportedOpError(f"{name}(out=...) cannot be traced: arrays are immutable in a "
                             "traced function (a ufunc's out= takes a traced array, and "
                             "np.sum's, np.mean's, np.cumsum's, np.dot's...); use "
                             "the returned value")


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
