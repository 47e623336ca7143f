"""Reductions, statistics, scans and sorting: np.var, np.std, np.average, np.ptp, np.prod,
np.linalg.norm, np.trace, np.diff, np.cumsum, np.cumprod, np.argmax, np.argmin, np.sort,
np.argsort, np.lexsort, np.median, np.quantile, np.percentile, np.count_nonzero, np.nansum, np.nanmean.

All are composites of gradc.ops.fn and two ops of gradc/ops/scan.py: `scan` (the cumulative sums
and products, and np.prod: the last element of a cumulative product, so its gradient at a zero
is the product of the other factors, not 0/0) and `argsort` (np.sort is a gather by it, whose
gradient is a scatter; the quantiles read the sorted values).
"""
import numbers
import operator

import numpy as np

from ..errors import ArgumentError, IndexOutOfRangeError, ShapeError, UnsupportedOpError
from ..ir import Value
from ..ops import fn
from ..ops.scan import scan
from ._args import ABSENT, array_arg, no_out, no_where
from .arrays import _diagonal


def _keep(keepdims):
    return keepdims is not ABSENT and bool(keepdims)


def _floating(x, dtype=None, name=None):
    """x in `dtype` if given, else as NumPy's statistics take it: integers and booleans as
    float64. An integer or boolean dtype= is refused: NumPy then computes the mean and the
    squares in that type, truncating (np.var(x, dtype=np.int64) of floats is a whole number),
    or refuses (booleans cannot subtract)."""
    if dtype is not None:
        if not np.issubdtype(np.dtype(dtype), np.inexact):
            raise UnsupportedOpError(
                f"np.{name}(dtype={np.dtype(dtype).name}): NumPy computes it in that integer "
                "type, truncating at every step; gradc computes statistics in floats: leave "
                "dtype= out (or give a float dtype) and round the result")
        return fn.astype(x, dtype)
    return x if np.issubdtype(x.dtype, np.floating) else fn.astype(x, np.float64)


def _count(x, axes):
    return int(np.prod([x.shape[a] for a in axes], dtype=np.int64))


def _iota(x, axis):
    """The index along `axis` of each element of x (int64, a broadcast constant)."""
    n = x.shape[axis]
    ramp = fn.as_value(np.arange(n, dtype=np.int64).reshape((n,) + (1,) * (x.ndim - axis - 1)), x)
    return fn.broadcast_to(ramp, x.shape)


def _flat_or_axis(x, axis):
    """(x, axis) for a function over one axis; axis=None: the flattened array's."""
    if axis is None:
        return fn.reshape(x, (x.size,)), 0
    return x, fn.normalize_axis(axis, x.ndim)


def _axes_last(x, axes):
    """x with `axes` moved to the end and merged into one: (array, the other axes' shape)."""
    kept = [i for i in range(x.ndim) if i not in axes]
    y = fn.transpose(x, kept + list(axes))
    rest = tuple(x.shape[i] for i in kept)
    return fn.reshape(y, rest + (_count(x, axes),)), rest


def _keepdims_shape(x, axes):
    return tuple(1 if i in axes else d for i, d in enumerate(x.shape))


def _isnan(x):
    return fn.compare("not_equal", x, x)


# ---------------------------------------------------------------------------------------------
# moments

def _ddof(name, ddof, correction):
    """The degrees of freedom removed (NumPy 2's correction= is ddof= by another name)."""
    if correction is not ABSENT:
        if ddof != 0:
            raise ArgumentError(f"np.{name}: ddof and correction can't be provided "
                                "simultaneously")
        ddof = correction
    if isinstance(ddof, Value):
        raise UnsupportedOpError(f"np.{name}(ddof=...) must be a Python number, not a traced "
                                 "value")
    return ddof


def _var(name):
    def impl(a, axis=None, dtype=None, out=None, ddof=0, keepdims=ABSENT, *, where=ABSENT,
             mean=ABSENT, correction=ABSENT):
        no_out(out, name)
        ddof = _ddof(name, ddof, correction)
        x = _floating(array_arg(a, mean, where), dtype, name)
        axes = fn.normalize_axes(axis, x.ndim)
        mask = None if where is ABSENT or where is True else fn.broadcast_to(
            fn.astype(array_arg(where, x), np.bool_), x.shape)
        if mask is None:
            count = float(_count(x, axes))
        else:  # (the elements in: NumPy's where=)
            count = fn.sum(fn.astype(mask, x.dtype), axes, True)
            x = fn.where(mask, x, 0)
        if mean is ABSENT:
            mu = fn.sum(x, axes, True) / count
        else:  # NumPy 2: the mean given, in the keepdims shape
            mu = fn.astype(array_arg(mean, x), x.dtype)
            if mu.shape != _keepdims_shape(x, axes):
                raise ShapeError(f"np.{name}(mean=...) needs the shape {_keepdims_shape(x, axes)} "
                                 f"(keepdims=True over the axes), got {mu.shape}")
        d = x - fn.broadcast_to(mu, x.shape)
        if mask is None:
            dof = max(count - ddof, 0.0)
        else:  # (per lane: the count of those in, in the result's shape)
            d = fn.where(mask, d, 0)
            lanes = count if _keep(keepdims) else fn.reshape(
                count, tuple(n for i, n in enumerate(x.shape) if i not in axes))
            dof = fn.maximum(lanes - ddof, 0.0)
        # as NumPy: count - ddof <= 0 divides by zero (inf, or NaN for 0 / 0)
        var = fn.divide(fn.sum(d * d, axes, _keep(keepdims)), dof)
        return _safe_sqrt(var) if name == "std" else var  # (a constant slice: gradient 0)
    return impl


def _cov(m, y=None, rowvar=True, bias=False, ddof=None, fweights=None, aweights=None, *,
         dtype=None):
    """np.cov: the covariance of the variables (rows, or columns with rowvar=False), divided
    by N - 1 (N with bias=True, N - ddof given ddof); a single variable's is 0-d. With
    fweights (counts) and aweights (weights), NumPy's weighted mean and normalization."""
    x = array_arg(m, y)
    if x.ndim > 2:
        raise ValueError("np.cov: m has more than 2 dimensions")
    dtype = np.result_type(x.dtype, np.float64) if dtype is None else dtype  # (NumPy's: float64)
    x = _floating(x, dtype, "cov")
    vector = x.ndim == 1
    if x.ndim < 2:
        x = fn.reshape(x, (1, -1))
    if not rowvar and not vector:  # (NumPy 2's rule: a one-row matrix is one observation of
        x = fn.transpose(x)  # its columns; y keeps the older one, below)
    if y is not None:
        other = fn.astype(array_arg(y, x), dtype)
        other = fn.reshape(other, (1, -1)) if other.ndim < 2 else other
        if not rowvar and other.shape[0] != 1:
            other = fn.transpose(other)
        x, other = fn.promote(x, other)
        x = fn.concatenate([x, other], 0)
    n = x.shape[1]
    if ddof is not None and ddof != int(ddof):
        raise ArgumentError(f"np.cov: ddof must be integer, got {ddof} (NumPy's refusal)")
    ddof = (0 if bias else 1) if ddof is None else ddof
    weights = [_cov_weights(w, n, x, name) for w, name in ((fweights, "fweights"),
                                                            (aweights, "aweights"))]
    if weights[0] is None and weights[1] is None:
        d = x - fn.broadcast_to(fn.mean(x, 1, keepdims=True), x.shape)
        c = fn.divide(fn.matmul(d, fn.transpose(d)), float(max(n - ddof, 0)))
    else:
        w = weights[0] if weights[1] is None else weights[1] if weights[0] is None else (
            weights[0] * weights[1])
        w_sum = fn.sum(w, (0,))
        d = x - fn.sum(x * w, (1,), keepdims=True) / w_sum
        fact = (w_sum if ddof == 0 else w_sum - ddof if weights[1] is None else
                w_sum - ddof * fn.sum(w * weights[1], (0,)) / w_sum)
        c = fn.matmul(d, fn.transpose(d * w)) / fn.where(fact > 0, fact, 0.0)  # (NumPy: 0)
    return fn.reshape(c, ()) if c.shape == (1, 1) else c


def _cov_weights(weights, n, x, name):
    """np.cov's fweights or aweights as a 1-D value of x's dtype, with NumPy's checks of a
    static one (integers for fweights, none negative)."""
    if weights is None:
        return None
    if not isinstance(weights, Value):
        weights = np.asarray(weights)
        if name == "fweights" and not np.all(weights == np.around(weights)):
            raise TypeError("fweights must be integer")
        if np.any(weights < 0):
            raise ValueError(f"{name} cannot be negative")
    w = fn.astype(array_arg(weights, x), x.dtype)
    if w.ndim != 1:
        raise RuntimeError(f"cannot handle multidimensional {name}")
    if w.shape[0] != n:
        raise RuntimeError(f"incompatible numbers of samples and {name}")
    return w


def _corrcoef(x, y=None, rowvar=True, *, dtype=None):
    """np.corrcoef: the covariance over the outer product of the standard deviations, clipped
    to [-1, 1] as NumPy does."""
    c = _cov(x, y, rowvar, dtype=dtype)
    if c.ndim == 0:
        return fn.divide(c, c)
    d = fn.unary("sqrt", _diagonal(c))
    r = fn.divide(fn.divide(c, fn.reshape(d, (-1, 1))), fn.reshape(d, (1, -1)))
    return fn.elementwise("maximum", fn.elementwise("minimum", r, 1.0), -1.0)


def _trapezoid(y, x=None, dx=1.0, axis=-1):
    """np.trapezoid (np.trapz before NumPy 2): the trapezoidal rule along `axis`, with spacing
    dx or sample points x (1-D along the axis, or y's shape)."""
    y = array_arg(y, x)
    axis = fn.normalize_axis(axis, y.ndim)
    if x is None:
        spacing = dx
    else:
        x = array_arg(x, y)
        if x.ndim == 1:
            shape = [1] * y.ndim
            shape[axis] = x.shape[0]
            x = fn.reshape(x, tuple(shape))
        spacing = _diff(x, axis=axis)
    later, earlier = _neighbours(y, axis)
    middle = later + earlier  # (NumPy's: in y's dtype, so booleans or, int32 wraps)
    return fn.sum(fn.divide(fn.elementwise("multiply", spacing, middle), 2.0), axis)


def _average(a, axis=None, weights=None, returned=False, *, keepdims=ABSENT):
    x = array_arg(a, weights)
    keep = _keep(keepdims)
    axes = fn.normalize_axes(axis, x.ndim, sequence=True)
    if weights is None:
        avg = fn.mean(x, axes, keep)
        scale = fn.full(x.graph, avg.shape, x.size // max(avg.size, 1), avg.dtype)
    else:
        w = weights if isinstance(weights, Value) else np.asarray(weights)
        if w.shape != x.shape:
            if axis is None:
                raise ArgumentError("np.average: axis must be specified when the shapes of a and "
                                    "weights differ")
            given = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
            given = tuple(fn.normalize_axis(i, x.ndim) for i in given)
            if w.shape != tuple(x.shape[i] for i in given):
                raise ShapeError("np.average: the shape of weights must be that of a along the "
                                 f"axes {given}, got {w.shape}")
            # (NumPy's order: the weights' axes are those of `axis`, as given)
            perm = tuple(int(i) for i in np.argsort(given))
            shape = tuple(d if i in axes else 1 for i, d in enumerate(x.shape))
            w = fn.reshape(fn.transpose(w, perm), shape) if isinstance(w, Value) else \
                np.transpose(w, perm).reshape(shape)
        if not isinstance(w, Value):  # constant weights: NumPy's check, now
            if np.any(np.sum(np.broadcast_to(w, x.shape), axis=axes) == 0):
                raise ArgumentError("np.average: weights sum to zero, can't be normalized")
            w = fn.as_value(w, x)
        floats = np.result_type(x.dtype, w.dtype, *(["f8"] if not np.issubdtype(
            x.dtype, np.floating) else []))
        x, w = fn.astype(x, floats), fn.astype(w, floats)
        scale = fn.sum(w, axes, keep)
        avg = fn.sum(x * fn.broadcast_to(w, x.shape), axes, keep) / scale
    if returned:
        return avg, fn.broadcast_to(scale, avg.shape)
    return avg


def _ptp(a, axis=None, out=None, keepdims=ABSENT):
    no_out(out, "ptp")
    x = array_arg(a)
    if x.dtype == np.bool_:
        raise ArgumentError("np.ptp of booleans: NumPy's subtract does not take booleans; use "
                            "np.any(x) != np.all(x) or cast to int")
    return fn.max(x, axis, _keep(keepdims)) - fn.min(x, axis, _keep(keepdims))


def _count_nonzero(a, axis=None, *, keepdims=False):
    x = array_arg(a)
    return fn.sum(fn.astype(fn.astype(x, np.bool_), np.int64), axis, bool(keepdims))


def _nansum(a, axis=None, dtype=None, out=None, keepdims=ABSENT, initial=ABSENT, where=ABSENT):
    no_out(out, "nansum")
    no_where(where, "nansum")
    x = array_arg(a)
    if np.issubdtype(x.dtype, np.floating):
        x = fn.where(_isnan(x), 0, x)
    if dtype is not None:
        x = fn.astype(x, dtype)
    y = fn.sum(x, axis, _keep(keepdims))
    y = y if dtype is None else fn.astype(y, dtype)
    return y if initial is ABSENT else y + _in_dtype(initial, y)


def _nanmean(a, axis=None, dtype=None, out=None, keepdims=ABSENT, *, where=ABSENT):
    no_out(out, "nanmean")
    no_where(where, "nanmean")
    x = _floating(array_arg(a), dtype, "nanmean")
    keep = _keep(keepdims)
    present = fn.compare("equal", x, x)
    # (a slice of NaNs only: 0 / 0, NaN, as NumPy gives with its warning)
    return fn.sum(fn.where(present, x, 0), axis, keep) / fn.sum(fn.astype(present, x.dtype),
                                                                  axis, keep)


def _in_dtype(initial, y):
    """A reduction's `initial` as NumPy takes it: in the result's dtype (1.5 into an int64
    product is 1)."""
    if isinstance(initial, Value):
        return fn.astype(initial, y.dtype)
    fn.check_scalars_into(initial, y.dtype, "initial=")
    return fn.as_value(np.asarray(initial).astype(y.dtype), y)


def _nan_filled(x, value):
    """x with its NaNs replaced by `value` (integers and booleans have none)."""
    return fn.where(_isnan(x), value, x) if np.issubdtype(x.dtype, np.floating) else x


def _nan_extremum(name):
    """np.nanmax / np.nanmin: the extremum of the numbers, NaN for a slice of NaNs only (NumPy's
    warning aside); the gradient goes to the extremum's elements, as np.max's."""
    def impl(a, axis=None, out=None, keepdims=ABSENT, initial=ABSENT, where=ABSENT):
        no_out(out, name)
        no_where(where, name)
        x = array_arg(a)
        reduce = np.max if name == "nanmax" else np.min
        keep = _keep(keepdims)
        kwargs = {} if initial is ABSENT else {"initial": initial}
        if not np.issubdtype(x.dtype, np.floating):
            return reduce(x, axis=axis, keepdims=keep, **kwargs)
        nan = _isnan(x)
        y = reduce(fn.where(nan, -np.inf if name == "nanmax" else np.inf, x), axis=axis,
                   keepdims=keep, **kwargs)
        if initial is not ABSENT:  # (a slice of NaNs only gives the initial value)
            return y
        return fn.where(fn.all(nan, fn.normalize_axes(axis, x.ndim), keep), np.nan, y)
    return impl


def _nanprod(a, axis=None, dtype=None, out=None, keepdims=ABSENT, initial=ABSENT, where=ABSENT):
    return _prod(_nan_filled(array_arg(a), 1), axis, dtype, out, keepdims, initial, where)


def _nan_cum(name):
    def impl(a, axis=None, dtype=None, out=None):
        return _cum(name[3:])(_nan_filled(array_arg(a), 1 if name == "nancumprod" else 0),
                              axis, dtype, out)
    return impl


def _nan_var(name):
    """np.nanvar / np.nanstd: the moments of the numbers of each slice; NaN where the count
    less ddof is not positive (NumPy's, with its warning)."""
    def impl(a, axis=None, dtype=None, out=None, ddof=0, keepdims=ABSENT, *, where=ABSENT,
             mean=ABSENT, correction=ABSENT):
        no_out(out, name)
        no_where(where, name)
        if mean is not ABSENT:
            raise UnsupportedOpError(f"np.{name}(mean=...) is not supported: leave it out")
        ddof = _ddof(name, ddof, correction)
        x = array_arg(a)
        if not np.issubdtype(x.dtype, np.inexact):  # (no NaNs: NumPy calls np.var)
            return _var(name[3:])(x, axis, dtype, None, ddof, keepdims)
        x = _floating(x, dtype, name)
        axes = fn.normalize_axes(axis, x.ndim)
        keep = _keep(keepdims)
        present = fn.compare("equal", x, x)
        count = fn.sum(fn.astype(present, x.dtype), axes, True)
        mu = fn.sum(fn.where(present, x, 0), axes, True) / count
        d = fn.where(present, x - fn.broadcast_to(mu, x.shape), 0)
        dof = fn.sum(fn.astype(present, x.dtype), axes, keep) - ddof
        positive = fn.compare("greater", dof, 0)
        var = fn.where(positive, fn.sum(d * d, axes, keep) / fn.where(positive, dof, 1), np.nan)
        return _safe_sqrt(var) if name == "nanstd" else var
    return impl


# ---------------------------------------------------------------------------------------------
# products and scans

def _integer_accumulator(x):
    """NumPy accumulates booleans and small integers in int64 (np.prod, np.cumsum...)."""
    if x.dtype == np.bool_ or np.issubdtype(x.dtype, np.signedinteger):
        return fn.astype(x, np.int64)
    return x


def _cumulative(x, axis, product):
    if not product:
        return scan(x, None, axis)
    # y[i] = x[i] * y[i-1], y[0] = x[0]: b is x at the first index and 0 after
    return scan(fn.where(fn.compare("equal", _iota(x, axis), 0), x, 0), x, axis)


def _cum(name):
    def impl(a, axis=None, dtype=None, out=None):
        no_out(out, name)
        x = array_arg(a)
        x = _integer_accumulator(x) if dtype is None else fn.astype(x, dtype)
        x, axis = _flat_or_axis(_at_least_1d(x), axis)
        return _cumulative(x, axis, name == "cumprod")
    return impl


def _at_least_1d(x):
    """NumPy's scans take a 0-d array as one of shape (1,), axis 0 or -1 included."""
    return fn.reshape(x, (1,)) if x.ndim == 0 else x


def _cumulative_numpy2(name):
    """np.cumulative_sum / np.cumulative_prod (NumPy 2): cumsum/cumprod whose axis may be
    omitted only for 1-D input, and whose include_initial prepends the identity."""
    def impl(x, axis=None, dtype=None, out=None, include_initial=False):
        no_out(out, name)
        x = _at_least_1d(array_arg(x))
        if axis is None and x.ndim != 1:
            raise ValueError(f"np.{name}: axis is required for arrays of more than 1 dimension")
        axis = fn.normalize_axis(0 if axis is None else axis, x.ndim)
        x = _integer_accumulator(x) if dtype is None else fn.astype(x, dtype)
        y = _cumulative(x, axis, name == "cumulative_prod")
        if include_initial:
            shape = x.shape[:axis] + (1,) + x.shape[axis + 1:]
            start = fn.full(x.graph, shape, 1 if name == "cumulative_prod" else 0, y.dtype)
            y = fn.concatenate([start, y], axis)
        return y
    return impl


def _prod(a, axis=None, dtype=None, out=None, keepdims=ABSENT, initial=ABSENT, where=ABSENT):
    no_out(out, "prod")
    x = array_arg(a, where)
    x = _integer_accumulator(x) if dtype is None else fn.astype(x, dtype)
    if where is not ABSENT and where is not True:  # (the elements out count as 1)
        x = fn.where(fn.broadcast_to(fn.astype(array_arg(where, x), np.bool_), x.shape), x, 1)
    axes = fn.normalize_axes(axis, x.ndim)
    if not axes:
        y = x
    elif _count(x, axes) == 0:
        y = fn.full(x.graph, tuple(d for i, d in enumerate(x.shape) if i not in axes), 1, x.dtype)
    else:  # the last of the cumulative products over the axes (merged into one, last)
        flat, rest = _axes_last(x, axes)
        n = flat.shape[-1]
        y = fn.reshape(fn.slice_(_cumulative(flat, len(rest), True), (0,) * len(rest) + (n - 1,),
                                 rest + (n,), (1,) * (len(rest) + 1)), rest)
    if _keep(keepdims):
        y = fn.reshape(y, _keepdims_shape(x, axes))
    return y if initial is ABSENT else y * _in_dtype(initial, y)


def _diff(a, n=1, axis=-1, prepend=ABSENT, append=ABSENT):
    n = operator.index(n)
    if n < 0:
        raise ArgumentError(f"np.diff: order must be non-negative but got {n}")
    x = array_arg(a, prepend, append)
    if n == 0:
        return x
    if x.ndim == 0:
        raise ShapeError("np.diff requires input that is at least one dimensional")
    axis = fn.normalize_axis(axis, x.ndim)
    parts = []
    for extra in (prepend, x, append):
        if extra is ABSENT:
            continue
        if extra is not x:
            extra = extra if isinstance(extra, Value) else fn.as_value(np.asarray(extra), x)
            if extra.ndim == 0:
                shape = list(x.shape)
                shape[axis] = 1
                extra = fn.broadcast_to(extra, shape)
        parts.append(extra)
    x = fn.concatenate(parts, axis) if len(parts) > 1 else x
    for _ in range(n):
        later, earlier = _neighbours(x, axis)
        x = (fn.compare("not_equal", later, earlier) if x.dtype == np.bool_ else
             fn.subtract(later, earlier))
    return x


def _ediff1d(ary, to_end=None, to_begin=None):
    """np.ediff1d: the differences of the flattened array, between to_begin's and to_end's
    values (flattened, cast to its dtype by NumPy's same_kind rule)."""
    x = fn.reshape(array_arg(ary), (-1,))

    def flat(extra, name):
        extra = fn.reshape(extra if isinstance(extra, Value) else fn.as_value(
            np.asarray(extra), x), (-1,))
        if not np.can_cast(extra.dtype, x.dtype, casting="same_kind"):
            raise ArgumentError(f"dtype of `{name}` must be compatible with input `ary` under "
                                "the `same_kind` rule (NumPy's TypeError)")
        return fn.astype(extra, x.dtype)

    parts = ([flat(to_begin, "to_begin")] if to_begin is not None else []) + [
        fn.subtract(*_neighbours(x, 0))] + ([flat(to_end, "to_end")] if to_end is not None else [])
    return fn.concatenate(parts, 0) if len(parts) > 1 else parts[0]


def _neighbours(x, axis):
    """(x[1:], x[:-1]) along `axis` (np.diff's and np.trapezoid's pairs)."""
    m = x.shape[axis]
    starts, stops = [0] * x.ndim, list(x.shape)
    starts[axis], stops[axis] = min(1, m), m
    later = fn.slice_(x, starts, stops, (1,) * x.ndim)
    starts[axis], stops[axis] = 0, max(m - 1, 0)
    return later, fn.slice_(x, starts, stops, (1,) * x.ndim)


def _trace(a, offset=0, axis1=0, axis2=1, dtype=None, out=None):
    no_out(out, "trace")
    x = array_arg(a)
    if x.ndim < 2:
        raise ShapeError(f"np.trace needs an array of at least two dimensions, got {x.ndim}")
    axis1, axis2 = fn.normalize_axis(axis1, x.ndim), fn.normalize_axis(axis2, x.ndim)
    if axis1 == axis2:
        raise ArgumentError("np.trace: axis1 and axis2 cannot be the same")
    if dtype is not None:
        x = fn.astype(x, dtype)
    x = fn.moveaxis(x, (axis1, axis2), (-2, -1))
    rest, (n1, n2) = x.shape[:-2], x.shape[-2:]
    offset = operator.index(offset)
    # the diagonal of a row-major (n1, n2) matrix is a strided slice of its n1 * n2 elements
    start, count = (offset, min(n1, n2 - offset)) if offset >= 0 else \
        (-offset * n2, min(n1 + offset, n2))
    flat = fn.reshape(x, rest + (n1 * n2,))
    if count <= 0:
        diagonal = fn.slice_(flat, (0,) * flat.ndim, rest + (0,), (1,) * flat.ndim)
    else:
        diagonal = fn.slice_(flat, (0,) * len(rest) + (start,),
                             rest + (start + (count - 1) * (n2 + 1) + 1,),
                             (1,) * len(rest) + (n2 + 1,))
    y = fn.sum(diagonal, -1)
    return y if dtype is None else fn.astype(y, dtype)


# ---------------------------------------------------------------------------------------------
# norms

def _safe_sqrt(s):
    """sqrt(s) of a sum of squares s, whose gradient at s = 0 is 0, not inf * 0 = NaN (as JAX's
    norms); squared again, it is s (fn.square_of: the Hessian of norm(x) ** 2 at 0 is 2I)."""
    zero = fn.compare("equal", s, 0)
    root = fn.where(zero, 0, fn.unary("sqrt", fn.where(zero, 1, s)))
    root.graph.square_roots[root.id] = (root, s)
    return root


def _norm(x, ord=None, axis=None, keepdims=False):  # noqa: A002 - NumPy's name
    x = _floating(array_arg(x))
    keep = bool(keepdims)
    if axis is None:
        if ord is None or (ord in ("f", "fro") and x.ndim == 2) or (ord == 2 and x.ndim == 1):
            y = _safe_sqrt(fn.sum(x * x))
            return fn.reshape(y, (1,) * x.ndim) if keep else y
        axis = tuple(range(x.ndim))
    elif not isinstance(axis, tuple):
        axis = (operator.index(axis),)
    if len(axis) == 1:
        return _vector_norm(x, ord, fn.normalize_axis(axis[0], x.ndim), keep)
    if len(axis) == 2:
        return _matrix_norm(x, ord, axis, keep)
    raise ShapeError("np.linalg.norm: improper number of dimensions to norm (give axis as one "
                     "axis or two)")


def _vector_norm(x, ord, axis, keep):  # noqa: A002
    if isinstance(ord, str):
        raise ArgumentError(f"np.linalg.norm: invalid norm order {ord!r} for vectors")
    if ord is not None and not isinstance(ord, numbers.Real):
        raise UnsupportedOpError("np.linalg.norm(ord=...) must be a Python number, None or a "
                                 "string")
    absx = fn.unary("abs", x, float_only=False)
    if ord == np.inf:
        return _largest_or_zero(absx, axis, keep)
    if ord == -np.inf:
        return fn.min(absx, axis, keep)
    if ord == 0:
        return fn.sum(fn.astype(fn.compare("not_equal", x, 0), x.dtype), axis, keep)
    if ord == 1:
        return fn.sum(absx, axis, keep)
    if ord is None or ord == 2:
        return _safe_sqrt(fn.sum(x * x, axis, keep))
    if ord < 1:  # (|x|^p has an infinite slope at 0: the gradient there is 0, as abs's; a
        # negative p's |0|^p is inf, the norm 0: 0 * inf was NaN in every element's gradient)
        nonzero = fn.compare("not_equal", absx, 0)
        at_zero = 0 if ord > 0 else np.inf
        powers = fn.where(nonzero, fn.power(fn.where(nonzero, absx, 1), float(ord)), at_zero)
    else:
        powers = fn.power(absx, float(ord))
    s = fn.sum(powers, axis, keep)
    if ord > 0:  # (0 ** (1/p) has no finite derivative; the norm of 0 gets 0, as the 2-norm)
        zero = fn.compare("equal", s, 0)
        return fn.where(zero, 0, fn.power(fn.where(zero, 1, s), 1.0 / ord))
    return fn.power(s, 1.0 / ord)


def _largest_or_zero(x, axis, keep=False):
    """The max of a nonnegative x over `axis`, 0 over none (NumPy's norms take max(...,
    initial=0): the inf-norm of an empty vector is 0, not an error)."""
    a = fn.normalize_axis(axis, x.ndim)
    if x.shape[a] == 0:
        shape = x.shape[:a] + ((1,) if keep else ()) + x.shape[a + 1:]
        return fn.full(x.graph, shape, 0, x.dtype)
    return fn.max(x, axis, keep)


def _matrix_norm(x, ord, axis, keep):  # noqa: A002
    row, col = (fn.normalize_axis(a, x.ndim) for a in axis)
    if row == col:
        raise ArgumentError("np.linalg.norm: duplicate axes given")
    absx = fn.unary("abs", x, float_only=False)
    if ord in (2, -2, "nuc"):  # the largest, smallest or summed singular values
        from .lapack import svd
        s = svd(fn.moveaxis(x, (row, col), (-2, -1)), compute_uv=False)
        y = {2: _largest_or_zero, -2: fn.min, "nuc": fn.sum}[ord](s, -1)
    elif ord in (None, "fro", "f"):
        y = _safe_sqrt(fn.sum(x * x, (row, col)))
    elif ord in (1, -1):  # the largest (smallest) column sum
        sums = fn.sum(absx, row)
        y = (_largest_or_zero if ord == 1 else fn.min)(sums, col - (col > row))
    elif ord in (np.inf, -np.inf):  # the largest (smallest) row sum
        sums = fn.sum(absx, col)
        y = (_largest_or_zero if ord == np.inf else fn.min)(sums, row - (row > col))
    else:
        raise ArgumentError(f"np.linalg.norm: invalid norm order {ord!r} for matrices")
    return fn.reshape(y, _keepdims_shape(x, (row, col))) if keep else y


# ---------------------------------------------------------------------------------------------
# arg-extrema and sorting

def _arg_extremum(name):
    extremum = fn.max if name == "argmax" else fn.min

    def impl(a, axis=None, out=None, *, keepdims=ABSENT):
        no_out(out, name)
        x = array_arg(a)
        shape = x.shape
        x, ax = _flat_or_axis(x, axis)
        if x.shape[ax] == 0:
            raise ShapeError(f"np.{name} of an empty sequence (axis of length 0)")
        hit = fn.compare("equal", x, fn.broadcast_to(extremum(x, ax, True), x.shape))
        if np.issubdtype(x.dtype, np.floating):  # as NumPy: the first NaN, if there is one
            nan = _isnan(x)
            hit = fn.where(fn.broadcast_to(fn.any(nan, ax, True), x.shape), nan, hit)
        # the first index that holds the extremum: the least of the indices that hit
        first = fn.min(fn.where(hit, _iota(x, ax), x.shape[ax]), ax, _keep(keepdims))
        if _keep(keepdims) and axis is None:
            first = fn.reshape(first, (1,) * len(shape))
        first.graph.in_range.add(first.id)  # (an index by it raises no IndexError)
        return first
    return impl


def _sort_keys(x):
    return fn.astype(x, np.int64) if x.dtype == np.bool_ else x


def _check_sort_args(name, kind, order, stable):
    if order is not None:
        raise UnsupportedOpError(f"np.{name}(order=...) sorts structured arrays, which gradc does "
                                 "not trace")
    if kind not in (None, "quicksort", "mergesort", "heapsort", "stable"):
        raise ArgumentError(f"np.{name}: sort kind must be one of 'quicksort', 'heapsort', "
                            f"'stable' (got {kind!r})")


def argsort(x, axis):
    """The stable argsort of x along `axis` (normalized)."""
    order = x.graph.apply("argsort", (_sort_keys(x),), axis=axis)
    x.graph.in_range.add(order.id)  # (an index by it raises no IndexError)
    return order


def _argsort(a, axis=-1, kind=None, order=None, *, stable=None):
    """np.argsort, always stable (equal keys keep their order: NumPy's kind='stable')."""
    _check_sort_args("argsort", kind, order, stable)
    x = array_arg(a)
    x, axis = _flat_or_axis(fn.reshape(x, (1,)) if x.ndim == 0 else x, axis)  # (NumPy's: 0-d
    # sorts as one element)
    return argsort(x, axis)


def _lexsort(keys, axis=-1):
    """np.lexsort: the order that sorts by the last key, then by the one before it among its
    equals...: a stable argsort by each key in turn, first to last, each of the keys as the
    order so far leaves them (NaNs last, as NumPy's)."""
    keys = (list(keys) if isinstance(keys, (list, tuple)) else
            [keys[i] for i in range(keys.shape[0])] if np.ndim(keys) > 0 else [])
    if not keys:  # (a 0-d array is no sequence of keys, to NumPy either)
        raise ArgumentError("np.lexsort: need sequence of keys with len > 0 (NumPy's TypeError)")
    keys = [array_arg(k, *keys) for k in keys]
    if len({k.shape for k in keys}) > 1:
        raise ArgumentError("np.lexsort: all keys need to be the same shape (NumPy's ValueError)")
    if keys[0].ndim == 0:  # (NumPy's: the one position, 0)
        return fn.as_value(np.int64(0), keys[0])
    axis = fn.normalize_axis(axis, keys[0].ndim)
    order = argsort(keys[0], axis)
    for key in keys[1:]:
        order = fn.take_along_axis(order, argsort(fn.take_along_axis(key, order, axis), axis),
                                   axis)
    return order


def sort(x, axis):
    return fn.take_along_axis(x, argsort(x, axis), axis)


def _sort(a, axis=-1, kind=None, order=None, *, stable=None):
    _check_sort_args("sort", kind, order, stable)
    x, axis = _flat_or_axis(array_arg(a), axis)
    return sort(x, axis)


# ---------------------------------------------------------------------------------------------
# medians and quantiles: read from the sorted values (NaNs sort last: a lane with one is NaN)

def _static_q(q, name, scale):
    if isinstance(q, Value):
        raise UnsupportedOpError(f"np.{name} needs q as Python numbers or a NumPy array (static), "
                                 "not a traced value")
    q = np.true_divide(np.asarray(q, np.float64), scale)
    if not np.all((q >= 0) & (q <= 1)):
        raise ArgumentError(f"np.{name}: " + ("Percentiles must be in the range [0, 100]"
                                              if scale == 100 else
                                              "Quantiles must be in the range [0, 1]"))
    return q


def _result_dtype(name, a, *q, method="linear"):
    """NumPy's result dtype (q weakly typed when a Python number; the method's: a discrete one
    keeps an integer dtype), from NumPy on one element."""
    options = {} if method == "linear" else {"method": method}
    try:
        return getattr(np, name)(np.zeros(1, array_arg(a).dtype), *q, **options).dtype
    except TypeError as e:
        raise ArgumentError(f"np.{name}: {e}") from None


def _lanes(a, axis, dtype):
    """x in `dtype` with the reduced axes merged last and sorted, its NaN flag per lane, and the
    axes."""
    x = fn.astype(array_arg(a), dtype)
    axes = fn.normalize_axes(axis, x.ndim, sequence=True)
    if _count(x, axes) == 0:  # (np.median's, the nan-functions', are NaN: _of_nothing)
        raise IndexOutOfRangeError("index -1 is out of bounds for axis 0 with size 0 (NumPy's "
                                   "error for a quantile of an empty slice)")
    flat, rest = _axes_last(x, axes)
    ordered = sort(flat, len(rest))
    n = flat.shape[-1]
    last = fn.take(ordered, [n - 1], axis=-1)
    return x, axes, ordered, _isnan(last)


def _of_nothing(a, axis, dtype, keepdims):
    """NumPy's median (nanmedian, nanquantile) of lanes with no element: NaN, with its
    RuntimeWarning; None where the lanes have elements."""
    x = array_arg(a)
    axes = fn.normalize_axes(axis, x.ndim, sequence=True)
    if _count(x, axes):
        return None
    from ..trace import warn_at_user_line
    warn_at_user_line(RuntimeWarning("Mean of empty slice"))
    shape = (_keepdims_shape(x, axes) if keepdims else
             tuple(d for i, d in enumerate(x.shape) if i not in axes))
    return fn.full(x.graph, shape, np.nan, dtype)


def _quantiles(a, q, axis, keepdims, name, scale, method="linear", weights=None,
               overwrite_input=False, out=None):
    no_out(out, name)
    if weights is not None:
        raise UnsupportedOpError(f"np.{name}(weights=...) is not supported")
    if method not in _QUANTILE_METHODS:
        raise ArgumentError(f"np.{name}: method={method!r} is not one of NumPy's: "
                            + ", ".join(_QUANTILE_METHODS))
    qs = _static_q(q, name, scale)
    dtype = np.dtype(_result_dtype(name, a, q, method=method))
    given = np.dtype(a.dtype if isinstance(a, Value) else np.asarray(a).dtype)
    # (float32 data with float64 q: NumPy's lerp takes the elements' difference in float32,
    # then goes on in float64; in float64 throughout it was 3e-8 off. Integers: exact either way)
    x, axes, ordered, nan = _lanes(a, axis, given if given.kind == "f" else dtype)
    lo, hi, t = _QUANTILE_METHODS[method](ordered.shape[-1], qs.reshape(-1))
    below = fn.take(ordered, lo, axis=-1)
    if t is None:  # (a discrete method: an element itself)
        y = fn.astype(below, dtype)
    else:  # NumPy's lerp: from the nearer end, so t = 0 and t = 1 give the values exactly
        above = fn.take(ordered, hi, axis=-1)
        diff = fn.astype(above - below, dtype)
        below, above = fn.astype(below, dtype), fn.astype(above, dtype)
        tw = fn.as_value(t.astype(dtype), below)
        y = fn.where(fn.as_value(t >= 0.5, below), above - diff * (1 - tw), below + diff * tw)
    if y.dtype.kind == "f":
        y = fn.where(fn.broadcast_to(nan, y.shape), np.nan, y)
    y = fn.moveaxis(y, -1, 0)  # (the quantiles first, as NumPy)
    shape = (_keepdims_shape(x, axes) if keepdims else
             tuple(d for i, d in enumerate(x.shape) if i not in axes))
    return fn.reshape(y, qs.shape + shape)


def _positions(n, q, alpha, beta):
    """(lo, hi, t) of the continuous methods (Hyndman and Fan's, as NumPy computes them): the
    virtual index n q + alpha + q (1 - alpha - beta) - 1 between the elements lo and hi,
    clipped to the ends."""
    index = n * q + (alpha + q * (1 - alpha - beta)) - 1
    return _between(index, n)


def _between(index, n, t_of=None):
    lo = np.floor(index)
    t = index - lo if t_of is None else t_of(index - lo, index)
    lo = lo.astype(np.int64)
    hi = lo + 1
    low, high = index < 0, index >= n - 1  # (NumPy's bounds: the end element, whole)
    lo = np.where(low, 0, np.where(high, n - 1, lo))
    hi = np.where(low, 0, np.where(high, n - 1, hi))
    return lo, hi, np.where(low | high, 0.0, t)


def _discrete(index, n, previous_when):
    """(index, None, None): the element before the virtual index where previous_when(gamma,
    index), else the one after (NumPy's inverted_cdf and closest_observation)."""
    lo = np.floor(index)
    at = np.where(previous_when(index - lo, index), lo, lo + 1).astype(np.int64)
    return np.clip(at, 0, n - 1), None, None


# NumPy's 13 methods of np.quantile / np.percentile: (lo, hi, t) per q for n sorted elements
# (t None: the element lo itself)
_QUANTILE_METHODS = {
    "inverted_cdf": lambda n, q: _discrete(n * q - 1, n, lambda g, i: g == 0),
    "averaged_inverted_cdf": lambda n, q: _between(n * q - 1, n,
                                                   lambda g, i: np.where(g == 0, 0.5, 1.0)),
    "closest_observation": lambda n, q: _discrete(
        n * q - 1.5, n, lambda g, i: (g == 0) & (np.floor(i) % 2 == 1)),
    "interpolated_inverted_cdf": lambda n, q: _positions(n, q, 0, 1),
    "hazen": lambda n, q: _positions(n, q, 0.5, 0.5),
    "weibull": lambda n, q: _positions(n, q, 0, 0),
    "linear": lambda n, q: _between((n - 1) * q, n),
    "median_unbiased": lambda n, q: _positions(n, q, 1 / 3, 1 / 3),
    "normal_unbiased": lambda n, q: _positions(n, q, 3 / 8, 3 / 8),
    "lower": lambda n, q: (np.floor((n - 1) * q).astype(np.int64), None, None),
    "higher": lambda n, q: (np.ceil((n - 1) * q).astype(np.int64), None, None),
    "midpoint": lambda n, q: _between((np.floor((n - 1) * q) + np.ceil((n - 1) * q)) / 2, n,
                                      lambda g, i: np.where(i % 1 == 0, 0.0, 0.5)),
    "nearest": lambda n, q: (np.around((n - 1) * q).astype(np.int64), None, None),
}


def _quantile(a, q, axis=None, out=None, overwrite_input=False, method="linear", keepdims=False,
              *, weights=None):
    return _quantiles(a, q, axis, keepdims, "quantile", 1, method, weights, overwrite_input, out)


def _percentile(a, q, axis=None, out=None, overwrite_input=False, method="linear",
                keepdims=False, *, weights=None):
    return _quantiles(a, q, axis, keepdims, "percentile", 100, method, weights, overwrite_input,
                      out)


def _median(a, axis=None, out=None, overwrite_input=False, keepdims=False):
    no_out(out, "median")
    nothing = _of_nothing(a, axis, _result_dtype("median", a), keepdims)
    if nothing is not None:
        return nothing
    x, axes, ordered, nan = _lanes(a, axis, _result_dtype("median", a))
    n = ordered.shape[-1]
    middle = fn.take(ordered, [(n - 1) // 2, n // 2], axis=-1)
    y = fn.mean(middle, -1, keepdims=True)  # (NumPy's: the mean of the middle one or two)
    y = fn.where(nan, np.nan, y)
    shape = (_keepdims_shape(x, axes) if keepdims else
             tuple(d for i, d in enumerate(x.shape) if i not in axes))
    return fn.reshape(y, shape)


# np.nanmedian and friends: the same sorted lanes, read at positions of each lane's count of
# numbers (NaNs sort last, so its first `count` elements are its numbers): traced positions

def _nan_positions(a, axis, dtype):
    """(x, axes, ordered lanes, each lane's count of numbers (float64, keepdims)) of a
    nan-ignoring median or quantile."""
    x, axes, ordered, _ = _lanes(a, axis, dtype)
    if not np.issubdtype(ordered.dtype, np.floating):  # (no NaN: every element counts)
        count = fn.full(x.graph, ordered.shape[:-1] + (1,), ordered.shape[-1], np.float64)
    else:
        count = fn.sum(fn.astype(fn.compare("equal", ordered, ordered), np.float64), -1,
                       keepdims=True)
    return x, axes, ordered, count


def _at(ordered, position):
    """ordered[..., position] at float positions (whole numbers; clipped into the lane)."""
    n = ordered.shape[-1]
    index = fn.astype(fn.clip(position, 0, n - 1), np.int64)
    return fn.take_along_axis(ordered, index, -1)


def _nanmedian(a, axis=None, out=None, overwrite_input=False, keepdims=False):
    """np.nanmedian: the median of each lane's numbers (the mean of the middle one or two);
    NaN where a lane has none (NumPy warns "All-NaN slice")."""
    no_out(out, "nanmedian")
    nothing = _of_nothing(a, axis, _result_dtype("nanmedian", a), keepdims)
    if nothing is not None:
        return nothing
    x, axes, ordered, count = _nan_positions(a, axis, _result_dtype("nanmedian", a))
    half = (count - 1.0) * 0.5
    middle = fn.concatenate([_at(ordered, np.floor(half)), _at(ordered, np.ceil(half))], -1)
    y = fn.where(fn.compare("equal", count, 0.0), np.nan, fn.mean(middle, -1, keepdims=True))
    shape = (_keepdims_shape(x, axes) if keepdims else
             tuple(d for i, d in enumerate(x.shape) if i not in axes))
    return fn.reshape(y, shape)


def _nan_quantiles(name, scale):
    def impl(a, q, axis=None, out=None, overwrite_input=False, method="linear",
             keepdims=False, *, weights=None):
        """np.nanquantile / np.nanpercentile with the linear method (NumPy's default): each
        lane's quantile of its numbers alone."""
        no_out(out, name)
        if weights is not None:
            raise UnsupportedOpError(f"np.{name}(weights=...) is not supported")
        if method != "linear":
            raise UnsupportedOpError(f"np.{name}(method={method!r}): gradc traces the linear "
                                     f"method (the default) of np.{name}; np.{name[3:]} takes "
                                     "every method where there is no NaN")
        qs = _static_q(q, name, scale)
        dtype = np.dtype(_result_dtype(name, a, q))
        nothing = _of_nothing(a, axis, dtype, keepdims)  # (NumPy's: np.nanmean's, of no q
        # shape)
        if nothing is not None:
            return nothing
        given = np.dtype(a.dtype if isinstance(a, Value) else np.asarray(a).dtype)
        x, axes, ordered, count = _nan_positions(a, axis, given if given.kind == "f" else dtype)
        index = (count - 1.0) * fn.as_value(qs.reshape(-1), count)  # (a lane per q, last)
        lo = np.floor(index)
        t = fn.astype(index - lo, dtype)
        below = _at(ordered, lo)
        above = _at(ordered, fn.minimum(lo + 1.0, count - 1.0))  # (not a NaN past the numbers)
        diff = fn.astype(above - below, dtype)  # (NumPy's lerp, as np.quantile's)
        below, above = fn.astype(below, dtype), fn.astype(above, dtype)
        y = fn.where(t >= 0.5, above - diff * (1 - t), below + diff * t)
        y = fn.where(fn.broadcast_to(fn.compare("equal", count, 0.0), y.shape), np.nan, y)
        y = fn.moveaxis(y, -1, 0)
        shape = (_keepdims_shape(x, axes) if keepdims else
                 tuple(d for i, d in enumerate(x.shape) if i not in axes))
        return fn.reshape(y, qs.shape + shape)
    impl.__name__ = f"_{name}"
    return impl


# ---------------------------------------------------------------------------------------------
# searching sorted values, interpolating, differences

def _before(a, v, side):
    """a[j] sorts before v (side 'left': a[j] < v; 'right': a[j] <= v) in NumPy's order,
    which puts NaN after every number."""
    if side not in ("left", "right"):
        raise ArgumentError(f"np.searchsorted: side must be 'left' or 'right', got {side!r}")
    before = fn.compare("less" if side == "left" else "less_equal", a, v)
    if not np.issubdtype(v.dtype, np.floating):
        return before
    v_nan = _isnan(v)
    if side == "right":
        return fn.where(v_nan, True, before)
    return fn.where(v_nan, fn.compare("equal", a, a), before)  # (a number, not a NaN)


def _searchsorted(a, v, side="left", sorter=None):
    """np.searchsorted as a count: the elements of sorted `a` that sort before each v (a 1-D,
    a few thousand elements: each v compares with all of them)."""
    a = array_arg(a, v)
    v = array_arg(v if isinstance(v, Value) else np.asarray(v), a)  # (np.asarray: float64 for
    if a.ndim != 1:  # a Python float, as NumPy compares it, not weakly in a's float32)
        raise ShapeError(f"np.searchsorted needs a 1-D sorted array, got shape {a.shape}")
    if sorter is not None:
        a = fn.take(a, sorter, axis=0)
    a, v = fn.promote(a, v)
    flat = fn.reshape(v, (v.size, 1))
    before = _before(fn.broadcast_to(fn.reshape(a, (1, a.size)), (v.size, a.size)),
                     fn.broadcast_to(flat, (v.size, a.size)), side)
    return fn.reshape(fn.sum(fn.astype(before, np.int64), 1), v.shape)


def _digitize(x, bins, right=False):
    """np.digitize: the bin of each x (bins fixed: a NumPy array or list, checked monotonic as
    NumPy checks it)."""
    if isinstance(bins, Value):
        raise UnsupportedOpError("np.digitize: bins must be a NumPy array or list, not a traced "
                                 "value (use np.searchsorted with traced sorted bins)")
    bins = np.asarray(bins)
    if bins.ndim != 1:
        raise ValueError("object too deep for desired array")
    steps = np.diff(bins)
    rising, falling = bool(np.all(steps >= 0)), bool(np.all(steps <= 0))
    if not (rising or falling):
        raise ValueError("bins must be monotonically increasing or decreasing")
    side = "left" if right else "right"
    if rising:
        return _searchsorted(bins, x, side)
    return bins.size - _searchsorted(bins[::-1].copy(), x, side)


def _interp(x, xp, fp, left=None, right=None, period=None):
    """np.interp: piecewise-linear through (xp, fp), xp increasing; float64 as NumPy's. Each x
    finds its segment by a count over xp (a few thousand points)."""
    graph = next(v for v in (x, xp, fp) if isinstance(v, Value)).graph
    if period is not None:  # (NumPy's: x and xp brought into [0, period), xp sorted, a knot
        # repeated a period below and above; left and right not used)
        if isinstance(period, Value):
            raise UnsupportedOpError("np.interp(period=...) takes a Python number, not a traced "
                                     "value")
        if period == 0:
            raise ValueError("period must be a non-zero value")
        period = abs(float(period))
        x, xp, fp = (fn.as_value(v, graph=graph) for v in (x, xp, fp))
        if xp.ndim != 1 or fp.ndim != 1:
            raise ValueError("Data points must be 1-D sequences")
        if xp.shape[0] != fp.shape[0]:
            raise ValueError("fp and xp are not of the same length")
        x = fn.remainder(fn.astype(x, np.float64), period)
        xp = fn.remainder(fn.astype(xp, np.float64), period)
        order = argsort(xp, 0)
        xp, fp = fn.take_along_axis(xp, order, 0), fn.take_along_axis(fp, order, 0)
        n = xp.shape[0]
        xp = fn.concatenate([fn.slice_(xp, (n - 1,), (n,), (1,)) - period, xp,
                             fn.slice_(xp, (0,), (1,), (1,)) + period], 0)
        fp = fn.concatenate([fn.slice_(fp, (n - 1,), (n,), (1,)), fp,
                             fn.slice_(fp, (0,), (1,), (1,))], 0)
        return _interp(x, xp, fp)
    # (each converted to float64 itself, as NumPy's: a Python number beside float32 arrays
    # was a float32 first, 0.3 off by 1e-8)
    x, xp, fp = (fn.astype(fn.as_value(v, graph=graph), np.float64) for v in (x, xp, fp))
    if xp.ndim != 1 or fp.ndim != 1:
        raise ValueError("object too deep for desired array")
    if xp.size != fp.size:
        raise ValueError("fp and xp are not of the same length.")
    if xp.size == 0:
        raise ValueError("array of sample points is empty")
    def end(v, i):  # (v[i], 0-d)
        return fn.reshape(fn.slice_(v, (i,), (i + 1,), (1,)), ())

    first, last = end(fp, 0), end(fp, fp.size - 1)
    x_first, x_last = end(xp, 0), end(xp, xp.size - 1)
    below = first if left is None else fn.astype(array_arg(left, x), np.float64)
    above = last if right is None else fn.astype(array_arg(right, x), np.float64)
    if xp.size == 1:
        y = fn.broadcast_to(first, x.shape)
    else:  # segment j: xp[j] <= x < xp[j + 1], j in [0, n - 2]
        j = fn.clip(_searchsorted(xp, x, "right") - 1, 0, xp.size - 2)
        x0, x1 = fn.take(xp, j, mode="clip"), fn.take(xp, j + 1, mode="clip")
        y0, y1 = fn.take(fp, j, mode="clip"), fn.take(fp, j + 1, mode="clip")
        slope = (y1 - y0) / (x1 - x0)
        y = slope * (x - x0) + y0  # (y0 itself at x0 where the slope is finite; the slope
        # the gradient's at a knot: the segment's to its right)
        # NumPy's fallbacks where that is NaN (an infinite slope or fp): from the other end,
        # then fp[j] where both ends are equal; and fp[j] at an exact hit of an unending slope
        nan = _isnan(y)
        y = fn.where(nan, slope * (x - x1) + y1, y)
        y = fn.where(fn.compare("equal", y0, y1) & _isnan(y), y0, y)
        y = fn.where(fn.compare("equal", x, x0) & fn.compare("not_equal", slope - slope, 0),
                     y0, y)
        y = fn.where(fn.compare("equal", x, x_last), fn.broadcast_to(last, x.shape), y)
    y = fn.where(fn.compare("less", x, x_first), fn.broadcast_to(below, x.shape), y)
    return fn.where(fn.compare("greater", x, x_last), fn.broadcast_to(above, x.shape), y)


def _spacing(d, n, name):
    """One axis's spacing for np.gradient: a Python number or 0-d array, or the n coordinates
    (a NumPy array: uniform ones become their step)."""
    if isinstance(d, Value):
        raise UnsupportedOpError(f"np.{name}: spacings and coordinates must be numbers or NumPy "
                                 "arrays, not traced values")
    if np.ndim(d) == 0:
        return d
    d = np.asarray(d)
    if d.ndim != 1:
        raise ValueError("distances must be either scalars or 1d")
    if d.size != n:
        raise ValueError("when 1d, distances must match the length of the corresponding "
                         "dimension")
    if np.issubdtype(d.dtype, np.integer):
        d = d.astype(np.float64)
    step = np.diff(d)
    return step[0] if np.all(step == step[0]) else step


def _gradient(*varargs, f, axis=None, edge_order=1):
    """np.gradient: central differences inside, one-sided (first or second order) at the ends,
    with NumPy's formulas and order of operations; a tuple for several axes. (f by name: the
    call is bound to NumPy's signature, whose *varargs come positionally, trace._bind.)"""
    f = array_arg(f)
    if f.dtype == np.bool_:
        raise ArgumentError("np.gradient of a boolean array: NumPy refuses boolean subtraction "
                            "(TypeError); cast it first, f.astype(np.int8)")
    axes = (tuple(range(f.ndim)) if axis is None else  # (in the order given, as NumPy's)
            tuple(fn.normalize_axis(a, f.ndim) for a in (axis if isinstance(axis, (tuple, list))
                                                         else (axis,))))
    if len(set(axes)) != len(axes):
        raise ValueError("repeated axis")
    if len(varargs) == 0:
        spacings = [1.0] * len(axes)
    elif len(varargs) == 1 and np.ndim(varargs[0]) == 0:
        spacings = [varargs[0]] * len(axes)
    elif len(varargs) == len(axes):
        spacings = list(varargs)
    else:
        raise TypeError("invalid number of arguments")
    if edge_order > 2:
        raise ValueError("'edge_order' greater than 2 not supported")
    otype = f.dtype if np.issubdtype(f.dtype, np.inexact) else np.dtype(np.float64)
    if not np.issubdtype(f.dtype, np.inexact):
        f = fn.astype(f, np.float64)
    out = []
    for ax, d in zip(axes, spacings):
        n = f.shape[ax]
        if n < edge_order + 1:
            raise ValueError("Shape of array too small to calculate a numerical gradient, at "
                             "least (edge_order + 1) elements are required.")
        d = _spacing(d, n, "gradient")

        def part(lo, hi, ax=ax):  # f[lo:hi] along the axis
            starts, stops = [0] * f.ndim, list(f.shape)
            starts[ax], stops[ax] = lo, hi
            return fn.slice_(f, tuple(starts), tuple(stops), (1,) * f.ndim)

        def along(c, ax=ax):  # coefficients along the axis, broadcastable to f
            shape = [1] * f.ndim
            shape[ax] = -1
            return np.asarray(c).reshape(shape)

        uniform = np.ndim(d) == 0
        if uniform:
            interior = (part(2, n) - part(0, n - 2)) / (2.0 * d)
        else:
            dx1, dx2 = d[:-1], d[1:]
            a, b, c = (along(-dx2 / (dx1 * (dx1 + dx2))), along((dx2 - dx1) / (dx1 * dx2)),
                       along(dx1 / (dx2 * (dx1 + dx2))))
            interior = a * part(0, n - 2) + b * part(1, n - 1) + c * part(2, n)
        d0, d1 = (d, d) if uniform else (d[0], d[-1])
        if edge_order == 1:
            start = (part(1, 2) - part(0, 1)) / d0
            end = (part(n - 1, n) - part(n - 2, n - 1)) / d1
        elif uniform:
            start = (-1.5 / d) * part(0, 1) + (2.0 / d) * part(1, 2) + (-0.5 / d) * part(2, 3)
            end = (0.5 / d) * part(n - 3, n - 2) + (-2.0 / d) * part(n - 2, n - 1) + \
                (1.5 / d) * part(n - 1, n)
        else:
            x1, x2 = d[0], d[1]
            start = (-(2.0 * x1 + x2) / (x1 * (x1 + x2))) * part(0, 1) + \
                ((x1 + x2) / (x1 * x2)) * part(1, 2) + (-x1 / (x2 * (x1 + x2))) * part(2, 3)
            x1, x2 = d[-2], d[-1]
            end = (x2 / (x1 * (x1 + x2))) * part(n - 3, n - 2) + \
                (-(x2 + x1) / (x1 * x2)) * part(n - 2, n - 1) + \
                ((2.0 * x2 + x1) / (x2 * (x1 + x2))) * part(n - 1, n)
        grad = fn.concatenate([fn.astype(start, otype), fn.astype(interior, otype),
                               fn.astype(end, otype)], ax)
        out.append(grad)
    return out[0] if len(out) == 1 else tuple(out)


FUNCTIONS = {
    np.var: _var("var"), np.std: _var("std"), np.average: _average, np.ptp: _ptp,
    np.cov: _cov, np.corrcoef: _corrcoef, np.trapezoid: _trapezoid,
    np.prod: _prod, np.cumsum: _cum("cumsum"), np.cumprod: _cum("cumprod"),
    np.cumulative_sum: _cumulative_numpy2("cumulative_sum"),
    np.cumulative_prod: _cumulative_numpy2("cumulative_prod"),
    np.diff: _diff, np.ediff1d: _ediff1d, np.trace: _trace, np.linalg.norm: _norm,
    np.argmax: _arg_extremum("argmax"), np.argmin: _arg_extremum("argmin"),
    np.sort: _sort, np.argsort: _argsort, np.lexsort: _lexsort,
    np.median: _median, np.quantile: _quantile, np.percentile: _percentile,
    np.count_nonzero: _count_nonzero, np.nansum: _nansum, np.nanmean: _nanmean,
    np.nanmax: _nan_extremum("nanmax"), np.nanmin: _nan_extremum("nanmin"), np.nanprod: _nanprod,
    np.nancumsum: _nan_cum("nancumsum"), np.nancumprod: _nan_cum("nancumprod"),
    np.nanvar: _nan_var("nanvar"), np.nanstd: _nan_var("nanstd"), np.nanmedian: _nanmedian,
    np.nanquantile: _nan_quantiles("nanquantile", 1),
    np.nanpercentile: _nan_quantiles("nanpercentile", 100),
    np.searchsorted: _searchsorted, np.digitize: _digitize, np.interp: _interp,
    np.gradient: _gradient,
}
