"""`x[mask]` with a traced boolean mask: the elements a mask selects, kept in place.

NumPy's `x[mask]` has as many elements as the mask has True ones, a shape the compiled function
cannot have. What code does with the selection mostly needs no shape: elementwise math among
selections by the same mask and numbers, then a store back by that mask or a sum,
`z[m] = np.exp(-x[m])` (a stable sigmoid), `z[z < 0] = z[z < 0] * alpha` (a leaky ReLU),
`np.sum(err[m] ** 2)`, `x[m].mean()`. A `Selection` is x at full size with the mask beside it:
elementwise ufuncs compute on every element (the others' values are never read), a store is
np.where(mask, values, z), a sum adds the selected elements. The gradient reaches only the
selected elements (the op masked_gradient, as a ufunc's where= has it), so a value computed at
an element not selected, exp(1000) = inf, gives no NaN to the gradient through 0 * inf.
Whatever needs the shape (len(), .shape, another array, a reduction but sum and mean) is refused
by name."""
from __future__ import annotations

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

from .errors import UnsupportedOpError
from .ir import Value
from .ops import fn


class Selection(NDArrayOperatorsMixin):
    """x[mask] (see the module's docstring): `values` is x (of x's shape), `mask` the traced
    boolean mask of x's leading axes, `full` the mask broadcast to x's shape."""

    __slots__ = ("values", "mask", "full")

    def __init__(self, values, mask, full):
        self.values, self.mask, self.full = values, mask, full

    @classmethod
    def of(cls, x, mask):
        full = fn.broadcast_to(fn.reshape(mask, mask.shape + (1,) * (x.ndim - mask.ndim)),
                               x.shape)
        # (the mask as it is now: a store into the user's mask later (Graph.take_over) gives
        # their object another value, which must not look like this one)
        now = Value(mask.graph, mask.id, mask.shape, mask.dtype, mask.node)
        return cls(x.graph.apply("masked_gradient", (full, x)), now, full)

    def _like(self, values):
        return Selection(values, self.mask, self.full)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        out = kwargs.pop("out", None)  # (`s += 1`: NumPy's s is a copy; bound anew here)
        if ufunc.signature is not None:  # (x[m] @ x[m]: a product over the selected elements)
            _refuse(f"np.{ufunc.__name__} of a masked selection (not elementwise)")
        if method != "__call__" or kwargs or not (out is None or len(out) == 1 and
                                                  out[0] is self):
            _refuse(f"np.{ufunc.__name__}.{method} or keywords of a masked selection")
        result = ufunc(*(self._operand(x) for x in inputs))
        return tuple(map(self._like, result)) if isinstance(result, tuple) else self._like(result)

    def _operand(self, x):
        if isinstance(x, Selection):
            if not same_value(x.mask, self.mask):
                _refuse("two selections by different masks combined")
            return x.values
        shape = x.shape if isinstance(x, Value) else np.shape(x)  # (lists too: [1, 2])
        rest = self.values.ndim - self.mask.ndim  # (NumPy's x[m] is (count,) + those axes)
        if len(shape) > rest + 1 or len(shape) == rest + 1 and shape[0] != 1:
            _refuse("a masked selection combined with an array along its selected elements "
                    "(they line up only by their count)")
        if len(shape) == rest + 1:  # (one along the selected elements: np.array([c]))
            x = fn.reshape(x if isinstance(x, Value) else fn.as_value(np.asarray(x),
                                                                      self.values),
                           (1,) * self.mask.ndim + tuple(shape[1:]))
        return x  # (the other axes broadcast as NumPy's: x[m] * row of a first-axis mask)

    def __array_function__(self, func, types, args, kwargs):
        if func.__name__ in ("sum", "mean") and args and args[0] is self:  # (np.sum is
            # gradc's wrapper while tracing, `func` NumPy's own)
            return getattr(self, func.__name__)(*args[1:], **kwargs)
        _refuse(f"np.{func.__name__} of a masked selection")

    def sum(self, axis=None, dtype=None, keepdims=False, **others):  # noqa: A003
        if others or keepdims or axis not in (None, 0) or axis == 0 and self.mask.ndim > 1:
            _refuse("a sum of a masked selection but over all of it (axis=None, or axis=0 of a "
                    "mask of the first axis)")
        axes = None if axis is None else tuple(range(self.mask.ndim))
        return np.sum(fn.where(self.full, self.values, 0), axis=axes, dtype=dtype)

    def mean(self, axis=None, dtype=None, keepdims=False, **others):
        total = self.sum(axis, dtype, keepdims, **others)
        count = np.sum(self.full.astype(np.int64), axis=None if axis is None else
                       tuple(range(self.mask.ndim)))
        return total / count.astype(total.dtype if total.dtype.kind == "f" else np.float64)

    def astype(self, dtype, *args, **kwargs):
        return self._like(self.values.astype(dtype, *args, **kwargs))

    def __len__(self):
        _refuse("len()")

    def __iter__(self):
        _refuse("iteration (or a result of the function)")

    def __getitem__(self, index):
        _refuse("indexing")

    def __setitem__(self, index, value):
        _refuse("a store into it")

    def __getattr__(self, name):
        if name.startswith("__") or name not in _ARRAY_ATTRIBUTES:  # (what other code probes
            raise AttributeError(name)  # for, `copy_to_host`: not there)
        _refuse(f".{name}")

    def __array__(self, *args, **kwargs):
        _refuse("a NumPy array")


_ARRAY_ATTRIBUTES = frozenset(dir(np.ndarray))


def _refuse(what):
    raise refusal(what)


def refusal(what):
    """The UnsupportedOpError for `what` a selection cannot be, at the user's line."""
    from .trace import user_source
    return UnsupportedOpError(
        f"{what}: `x[mask]` with a traced boolean mask has a data-dependent shape, which a "
        "compiled function cannot have. gradc takes it in elementwise math with numbers and "
        "selections by the same mask, stored back by that mask (z[m] = f(x[m])), or summed "
        "(np.sum, .mean()); otherwise use np.where(mask, x, 0)", source=user_source())


def same_value(a, b, depth=4):
    """Whether the traced values a and b are one computation (two `z < 0` while tracing are two
    values: nothing is merged until the passes run), looked at `depth` nodes deep; constants
    compared by their values."""
    if a.id == b.id:  # (not `a is b`: a store gives the user's object another value)
        return True
    if depth == 0 or a.node is None or b.node is None or a.shape != b.shape:
        return False
    na, nb = a.node, b.node
    if na.op != nb.op or na.attr_key != nb.attr_key or len(na.inputs) != len(nb.inputs):
        return False
    if not na.inputs:  # (a constant: its value is an attribute)
        return True
    return all(same_value(p, q, depth - 1) for p, q in zip(na.inputs, nb.inputs))


def store(x, selection, kind, combine):
    """x[mask] = selection (or .add...: `kind`, `combine(kind, old, new)`) where the selection
    was taken by that mask."""
    return fn.where(selection.full, combine(kind, x, fn.astype(selection.values, x.dtype)), x)
