"""Contractions: np.einsum, np.tensordot, np.inner, np.vdot, np.kron, np.cross and
np.linalg.multi_dot. The contractions are labelled einsums lowered by ._einsum (BLAS products in
np.einsum_path's order); kron and cross are broadcast arithmetic. (np.dot, np.matmul and np.outer
are gradc/ops/fn.py's, traced by gradc/trace.py.)
"""
import operator
import warnings

import numpy as np

from ..errors import ArgumentError, ShapeError, UnsupportedOpError
from ..ir import Value
from ..ops import fn
from ._args import array_arg, no_out
from .arrays import _sliding_window_view
from ._einsum import LETTERS, as_operand, contract, label_sizes, parse, split_operands


def _values(*xs):
    like = next((x for x in xs if isinstance(x, Value)), None)
    if like is None:
        raise UnsupportedOpError("expected a traced array among the operands")
    return [as_operand(x, like) for x in xs]


def _einsum(*operands, out=None, optimize=False, dtype=None, order="K", casting="safe"):
    """np.einsum: either calling form, any subscripts NumPy takes. `optimize` picks the order of
    the pairwise products (an np.einsum_path strategy or path; False means 'greedy' here, since
    every order gives NumPy's values); `order` is the output's memory layout, which a traced
    value does not have."""
    no_out(out, "einsum")
    subscripts, arrays = split_operands(operands)
    values = _values(*arrays)
    labels, out_labels, sizes = parse(subscripts, [v.shape for v in values])
    result = np.dtype(dtype) if dtype is not None else np.result_type(*[v.dtype for v in values])
    for i, v in enumerate(values):
        if not np.can_cast(v.dtype, result, casting):
            raise ArgumentError(f"np.einsum: operand {i} ({v.dtype}) cannot be cast to {result} "
                                f"under casting={casting!r}; pass casting='same_kind' or 'unsafe' "
                                "to allow it")
    if order not in ("K", "A", "C", "F"):
        raise ArgumentError(f"np.einsum: order must be one of 'K', 'A', 'C', 'F', got {order!r}")
    return contract(values, labels, out_labels, sizes, optimize, result)


def _labelled(a, b, a_summed, b_summed):
    """Labels for a contraction of a's axes `a_summed` with b's `b_summed` (normalized, pairwise
    equal in size): the output is a's other axes, then b's."""
    if a.ndim + b.ndim > len(LETTERS):
        raise UnsupportedOpError("a contraction with more than 52 axes")
    ta = list(LETTERS[:a.ndim])
    tb = list(LETTERS[a.ndim:a.ndim + b.ndim])
    for i, j in zip(a_summed, b_summed):
        tb[j] = ta[i]
    out = [c for i, c in enumerate(ta) if i not in a_summed] + \
        [c for j, c in enumerate(tb) if j not in b_summed]
    return [ta, tb], out


def _contract_axes(name, a, b, a_summed, b_summed):
    for i, j in zip(a_summed, b_summed):
        if a.shape[i] != b.shape[j]:
            raise ShapeError(f"{name}: shape-mismatch for sum: axis {i} of {a.shape} and axis "
                             f"{j} of {b.shape} differ in size")
    labels, out = _labelled(a, b, a_summed, b_summed)
    return contract([a, b], labels, out, label_sizes(labels, [a.shape, b.shape]))


def _as_list(axes):
    try:
        return list(axes)
    except TypeError:
        return [axes]


def _tensordot(a, b, axes=2):
    """np.tensordot: `axes` an int N (a's last N axes with b's first N), or a pair (a's axes,
    b's axes), each an int or a sequence."""
    a, b = _values(a, b)
    try:
        iter(axes)
    except TypeError:
        n = operator.index(axes)
        axes_a, axes_b = list(range(-n, 0)), list(range(n))
    else:
        try:
            axes_a, axes_b = axes
        except ValueError:
            raise ArgumentError("np.tensordot: axes must be an int or a pair of axis lists, got "
                                f"{axes!r}") from None
        axes_a, axes_b = _as_list(axes_a), _as_list(axes_b)
    if len(axes_a) != len(axes_b):
        raise ShapeError(f"np.tensordot: shape-mismatch for sum: {len(axes_a)} axes of a and "
                         f"{len(axes_b)} of b")
    axes_a = [fn.normalize_axis(i, a.ndim) for i in axes_a]
    axes_b = [fn.normalize_axis(i, b.ndim) for i in axes_b]
    if len(set(axes_a)) != len(axes_a) or len(set(axes_b)) != len(axes_b):
        raise ShapeError("np.tensordot: duplicate axes are not allowed")
    return _contract_axes("np.tensordot", a, b, axes_a, axes_b)


def _inner(a, b):
    """np.inner: the sum over the last axes; a 0-d operand multiplies."""
    a, b = _values(a, b)
    if a.ndim == 0 or b.ndim == 0:
        return fn.multiply(a, b)
    return _contract_axes("np.inner", a, b, [a.ndim - 1], [b.ndim - 1])


def _vdot(a, b):
    """np.vdot: the dot product of the flattened arrays (real ones: no conjugate)."""
    a, b = (fn.reshape(v, (v.size,)) for v in _values(a, b))
    if a.size != b.size:
        raise ShapeError(f"np.vdot: vectors of {a.size} and {b.size} elements have no dot product")
    return _contract_axes("np.vdot", a, b, [0], [0])


def _kron(a, b):
    """np.kron: block (i, j...) of the result is a[i, j...] * b; the operand of fewer dimensions
    gets leading 1s first."""
    a, b = _values(a, b)
    nd = max(a.ndim, b.ndim)
    if a.ndim < b.ndim:
        a = fn.reshape(a, (1,) * (b.ndim - a.ndim) + a.shape)
    if a.ndim == 0 or b.ndim == 0:
        return fn.multiply(a, b)
    b = fn.reshape(b, (1,) * (nd - b.ndim) + b.shape)
    # a's axes interleaved with b's: (a0, 1, a1, 1...) * (1, b0, 1, b1...), then merged pairwise
    spread_a = fn.reshape(a, [d for n in a.shape for d in (n, 1)])
    spread_b = fn.reshape(b, [d for n in b.shape for d in (1, n)])
    return fn.reshape(fn.multiply(spread_a, spread_b),
                      tuple(m * n for m, n in zip(a.shape, b.shape)))


def _component(x, i):
    """x[..., i]."""
    starts = (0,) * (x.ndim - 1) + (i,)
    return fn.reshape(fn.slice_(x, starts, x.shape[:-1] + (i + 1,), (1,) * x.ndim), x.shape[:-1])


def _cross(a, b, axisa=-1, axisb=-1, axisc=-1, axis=None):
    """np.cross of 2- and 3-vectors along axisa of a and axisb of b (broadcasting the other
    axes), the vectors along axisc of the result; 2-vectors with 2-vectors give the z-component
    alone."""
    if axis is not None:
        axisa = axisb = axisc = axis
    a, b = fn.promote(*_values(a, b))
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError("np.cross: at least one array has zero dimension; give vectors")
    if a.dtype == np.bool_:
        raise ArgumentError("np.cross of boolean arrays: NumPy does not subtract booleans; "
                            "cast them to a number type first")
    a = fn.moveaxis(a, axisa, -1)
    b = fn.moveaxis(b, axisb, -1)
    if a.shape[-1] not in (2, 3) or b.shape[-1] not in (2, 3):
        raise ShapeError("np.cross: incompatible dimensions for cross product (dimension must "
                         f"be 2 or 3; got {a.shape[-1]} and {b.shape[-1]})")
    if a.shape[-1] == 2 or b.shape[-1] == 2:  # as NumPy 2 warns, at the user's line
        file, _, line = a.graph.source.rpartition(":")
        warnings.warn_explicit("Arrays of 2-dimensional vectors are deprecated. Use arrays of "
                               "3-dimensional vectors instead. (deprecated in NumPy 2.0)",
                               DeprecationWarning, file, int(line) if line.isdigit() else 0)
    ac, bc = ([_component(x, i) for i in range(x.shape[-1])] for x in (a, b))
    z = fn.subtract(fn.multiply(ac[0], bc[1]), fn.multiply(ac[1], bc[0]))
    if len(ac) == 2 and len(bc) == 2:
        return z
    if len(ac) == 3 and len(bc) == 3:
        x = fn.subtract(fn.multiply(ac[1], bc[2]), fn.multiply(ac[2], bc[1]))
        y = fn.subtract(fn.multiply(ac[2], bc[0]), fn.multiply(ac[0], bc[2]))
    elif len(ac) == 2:  # a's third component is 0
        x, y = fn.multiply(ac[1], bc[2]), fn.negative(fn.multiply(ac[0], bc[2]))
    else:  # b's
        x, y = fn.negative(fn.multiply(ac[2], bc[1])), fn.multiply(ac[2], bc[0])
    cp = fn.stack(fn.broadcast_all(x, y, z), axis=-1)
    return fn.moveaxis(cp, -1, fn.normalize_axis(axisc, cp.ndim))


def _multi_dot(arrays, *, out=None):
    """np.linalg.multi_dot: a chain of 2-D products (the first may be a row vector, the last a
    column vector) in the order of fewest multiplications."""
    no_out(out, "linalg.multi_dot")
    arrays = list(arrays)
    if len(arrays) < 2:
        raise ArgumentError("np.linalg.multi_dot: expecting at least two arrays")
    arrays = fn.promote(*_values(*arrays))  # (every product in the chain has the final dtype)
    if len(arrays) == 2:
        return fn.dot(*arrays)
    first, last = arrays[0].ndim, arrays[-1].ndim
    if first == 1:
        arrays[0] = fn.reshape(arrays[0], (1, -1))
    if last == 1:
        arrays[-1] = fn.reshape(arrays[-1], (-1, 1))
    for i, x in enumerate(arrays):
        if x.ndim != 2:
            raise ShapeError(f"np.linalg.multi_dot: array {i} has {x.ndim} dimensions; only the "
                             "first and last may be 1-D, the others must be 2-D")
    result = _chain(arrays, _chain_order(arrays), 0, len(arrays) - 1)
    return fn.reshape(result, (() if first == 1 and last == 1 else
                               (result.size,) if first == 1 or last == 1 else result.shape))


def _chain_order(arrays):
    """split[i][j]: where the product of arrays i..j splits, for the fewest multiplications
    (the textbook dynamic programme over chain lengths)."""
    dims = [x.shape[0] for x in arrays] + [arrays[-1].shape[1]]
    n = len(arrays)
    cost = [[0] * n for _ in range(n)]
    split = [[0] * n for _ in range(n)]
    for length in range(1, n):
        for i in range(n - length):
            j = i + length
            cost[i][j], split[i][j] = min(
                (cost[i][k] + cost[k + 1][j] + dims[i] * dims[k + 1] * dims[j + 1], k)
                for k in range(i, j))
    return split


def _chain(arrays, split, i, j):
    if i == j:
        return arrays[i]
    k = split[i][j]
    return fn.matmul(_chain(arrays, split, i, k), _chain(arrays, split, k + 1, j))


# filters up to this many taps convolve as a sum of shifted slices (a 33-tap filter over 4096
# samples: 0.48 ms forward and backward as a product of the windows, which it materialized, 4x
# the signal's memory; 0.017 ms as shifted slices); longer ones as that product
SHIFTED_TAPS = 64


def _convolve(a, v, mode="full", name="convolve"):
    """np.convolve of 1-D sequences: the windows of `a` (zero-padded for 'full' and 'same')
    against `v` reversed; as NumPy, the longer one slides."""
    a, v = fn.promote(array_arg(a, v), array_arg(v, a))
    a, v = (fn.reshape(x, (1,)) if x.ndim == 0 else x for x in (a, v))  # (NumPy's ndmin=1)
    if a.ndim != 1 or v.ndim != 1:
        raise ValueError(f"np.{name}: object too deep for desired array (1-D sequences only)")
    if a.shape[0] == 0 or v.shape[0] == 0:
        raise ValueError(f"np.{name}: inputs cannot be empty")
    if v.shape[0] > a.shape[0]:
        a, v = v, a
    n, m = a.shape[0], v.shape[0]
    if mode not in ("full", "same", "valid"):
        raise ValueError(f"np.{name}: mode must be 'valid', 'same', or 'full', got {mode!r}")
    if mode != "valid" and m > 1:
        zeros = fn.full(a.graph, (m - 1,), 0, a.dtype)
        a = fn.concatenate([zeros, a, zeros], 0)
    taps = fn.slice_(v, (m - 1,), (-1,), (-1,)) if m > 1 else v
    if m <= SHIFTED_TAPS:  # (a sum of shifted slices: one loop kernel, forward and backward)
        length = a.shape[0] - m + 1
        full = None
        for j in range(m):
            term = fn.slice_(a, (j,), (j + length,), (1,)) * fn.reshape(
                fn.slice_(taps, (j,), (j + 1,), (1,)), ())
            full = term if full is None else full + term
    else:
        full = fn.matmul(_sliding_window_view(a, m), taps)
    if mode == "same":
        start = (m - 1) // 2
        return fn.slice_(full, (start,), (start + n,), (1,))
    return full


def _correlate(a, v, mode="valid"):
    """np.correlate of 1-D real sequences: convolve with v reversed (NumPy's own relation),
    the result reversed where v is the longer, as NumPy's is."""
    a, v = fn.promote(array_arg(a, v), array_arg(v, a))
    if a.ndim == 0 or v.ndim == 0:  # (np.convolve takes them as 1-D; np.correlate does not)
        raise ShapeError("np.correlate: object of too small depth for desired array (NumPy's "
                         "refusal of a 0-d argument); pass 1-D sequences")
    if v.ndim == 1 and a.ndim == 1 and v.shape[0] > a.shape[0]:
        out = _convolve(v, fn.slice_(a, (a.shape[0] - 1,), (-1,), (-1,)), mode, "correlate")
        return fn.slice_(out, (out.shape[0] - 1,), (-1,), (-1,))
    return _convolve(a, fn.slice_(v, (v.shape[0] - 1,), (-1,), (-1,)) if v.ndim == 1 else v, mode,
                     "correlate")


FUNCTIONS = {
    np.convolve: _convolve, np.correlate: _correlate,
    np.einsum: _einsum,
    np.tensordot: _tensordot,
    np.inner: _inner,
    np.vdot: _vdot,
    np.kron: _kron,
    np.cross: _cross,
    np.linalg.multi_dot: _multi_dot,
}
