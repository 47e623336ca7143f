"""Every NumPy function and ndarray method gradc traces takes its arguments as NumPy does
(positionally or by keyword, by each name NumPy accepts), and gives NumPy's result; a call NumPy
would refuse is a gradc.ArgumentError (a TypeError) naming the user's line, never a ShapeError.

The spellings share one compiled function; the reference is the same function run by NumPy.
"""
import inspect
import os
import re
import warnings

import numpy as np
import pytest

import gradc
from gradc.trace import FUNCTIONS

THIS_FILE = os.path.basename(__file__)
IDX = np.array([[2, 0, 1, 2], [1, 1, 0, 2], [0, 2, 2, 0]])


def spellings(x, y3, z, v):
    """x: (3, 4); y3: (2, 3, 4); z: (1, 3, 1); v: (4,)."""
    return [
        # reductions
        np.sum(x, axis=0, dtype=np.float32, keepdims=True), np.sum(a=x), x.sum(axis=1),
        x.sum(0, None, None, True), np.sum(x > 0, axis=1), np.sum(x > 0, dtype=np.int32),
        np.mean(x, axis=(0, 1), keepdims=True), x.mean(1), np.mean(a=x, dtype=np.float32),
        np.max(x, axis=1, keepdims=True), np.amax(x, 0), x.max(axis=0), x.max(0, None, True),
        np.min(a=x, axis=-1), np.amin(x, axis=(0, 1)), x.min(keepdims=True),
        np.any(x > 0.5, axis=0), (x > 0).all(axis=1, keepdims=True), np.all(a=x > -5.0),
        # shapes and movement
        np.reshape(x, shape=(4, 3)), np.reshape(x, (4, 3), order="F"), np.reshape(x, -1),
        x.reshape(4, 3), x.reshape((2, 6), order="F"), x.reshape([6, 2]), v.reshape(-1, order="A"),
        np.transpose(x, axes=(1, 0)), np.transpose(a=y3, axes=[2, 0, 1]), x.transpose(1, 0),
        y3.transpose((1, 2, 0)), x.transpose(None), np.transpose(y3, (-1, 0, 1)),
        np.swapaxes(x, axis1=0, axis2=1), np.swapaxes(y3, -1, 0), x.swapaxes(0, 1),
        np.moveaxis(y3, source=0, destination=-1), np.moveaxis(y3, [0, 1], [2, 0]),
        np.expand_dims(x, axis=(0, 2)), np.expand_dims(a=v, axis=-1),
        np.squeeze(z, axis=(0,)), np.squeeze(a=z), z.squeeze(axis=0), z.squeeze(-1),
        np.broadcast_to(v, shape=(3, 4)), np.broadcast_to(array=v, shape=(2, 3, 4)),
        np.ravel(x, order="F"), np.ravel(a=x), z.ravel(order="K"), x.flatten("F"),
        np.reshape(z, (3,), order="A"), v.flatten("K"),
        np.concatenate([x, x], axis=None), np.concatenate((x, x), axis=1, dtype=np.float32),
        np.concatenate([x, 2.0 * x], 0), np.stack([x, x], axis=-1), np.stack(arrays=[x, x]),
        np.stack((x, x), 1, dtype=np.float32),
        # selection and clipping
        np.clip(x, a_min=-0.5, a_max=0.5), np.clip(x, min=-0.5), np.clip(x, max=0.5),
        np.clip(x, -0.2, None), x.clip(min=-0.1, max=0.2), x.clip(-0.1), x.clip(None, 0.3),
        np.where(x > 0, x, 0.0), np.where(x > 0, 1.0, v),
        # indexing
        np.take(x, indices=[2, 0], axis=1), np.take(x, [5, -1]), np.take(x, [13, -14], mode="wrap"),
        np.take(x, [7, -1], axis=1, mode="clip"), np.take(a=v, indices=1),
        np.take(x, [], axis=0), np.take(x, [[]], axis=1), x.take(()),  # (empty: integers)
        np.take_along_axis(x, IDX, axis=0), np.take_along_axis(arr=x, indices=IDX[:1, :3], axis=1),
        np.take_along_axis(x, np.array([11, 0, 5]), axis=None),
        # products
        np.dot(a=x, b=v), x.dot(b=v), x.dot(v), np.outer(a=v, b=v), np.outer(x, v),
        # constructors and dtypes
        np.zeros_like(x, dtype=np.float32), np.ones_like(a=x, shape=(2,)),
        np.full_like(x, fill_value=2.5, shape=(2, 2)), np.full_like(x, 7, np.int64),
        x.astype(dtype=np.float32, copy=False), x.astype(np.int64, casting="unsafe"),
        x.copy(order="F"),
        np.size(x, axis=1) * v, np.size(a=x) * v, np.ndim(a=x) * v, np.shape(a=x)[0] * v,
    ]


def _inputs():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((3, 4)), rng.standard_normal((2, 3, 4)),
            rng.standard_normal((1, 3, 1)), rng.standard_normal(4))


def test_every_spelling_numpy_accepts_gives_numpys_result():
    args = _inputs()
    got = gradc.jit(spellings)(*args)
    expected = spellings(*args)
    assert len(got) == len(expected)
    for k, (g, e) in enumerate(zip(got, expected)):
        g, e = np.asarray(g), np.asarray(e)
        assert g.shape == e.shape and g.dtype == e.dtype, (k, g.shape, e.shape, g.dtype, e.dtype)
        np.testing.assert_allclose(g, e, rtol=1e-6, err_msg=f"spelling {k}")


A = np.arange(12.0).reshape(3, 4)


def constants_first(i, lo, v):
    """NumPy constants in the first position, traced values after them."""
    return (np.clip(A, lo, None), np.clip(A, max=v), np.take_along_axis(A, i[None, :], 1),
            np.where(A > 3, v, A), np.concatenate([A, A * v]), np.stack([A, v + A]),
            np.dot(A.T, v * A[:, 0]), np.outer(A[0], v))


def test_numpy_constants_next_to_traced_arguments():
    args = (np.array([3, 0]), np.float64(2.5), np.float64(-1.0))
    got = gradc.jit(constants_first)(*args)
    for k, (g, e) in enumerate(zip(got, constants_first(*args))):
        assert g.shape == e.shape and g.dtype == e.dtype, k
        np.testing.assert_allclose(g, e, rtol=1e-12, err_msg=f"result {k}")


def test_every_numpy_parameter_reaches_the_implementation():
    """Each implementation takes every parameter of the installed NumPy's signature by name, so
    no argument NumPy accepts can fail inside gradc."""
    for func, impl in FUNCTIONS.items():
        numpy_params = inspect.signature(func).parameters.values()
        ours = inspect.signature(impl).parameters
        takes_any = any(p.kind == p.VAR_KEYWORD for p in ours.values())
        for p in numpy_params:
            if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            assert p.name in ours or takes_any, f"np.{func.__name__}: {p.name}"


def line_of(marker):
    with open(__file__, encoding="utf-8") as f:
        hits = [i for i, line in enumerate(f, start=1) if line.rstrip().endswith(f"# {marker}")]
    assert len(hits) == 1, marker
    return hits[0]


def missing_axis(x):
    return np.swapaxes(x, 0)  # MISSING


def unknown_keyword(x):
    return np.squeeze(x, axes=0)  # UNKNOWN


def method_keyword(x):
    return x.sum(axes=0)  # METHOD-UNKNOWN


def repeated_argument(x):
    return np.transpose(x, (1, 0), axes=(1, 0))  # REPEATED


def both_bound_spellings(x):
    return np.clip(x, 0.0, 1.0, min=0.0)  # BOTH-BOUNDS


def one_positional_bound(x):
    return np.clip(x, 0.5)  # ONE-BOUND


def bad_order(x):
    return x.reshape((2, 6), order="Q")  # BAD-ORDER


def bad_take_mode(x):
    return np.take(x, [0], mode="bounce")  # BAD-MODE


def reshape_without_shape(x):
    return x.reshape()  # NO-SHAPE


def reshape_by_floats(x):
    return x.reshape(6.0, 2)  # FLOAT-SHAPE


def concatenate_by_keyword(x):
    return np.concatenate(arrays=[x, x])  # POSITIONAL-ONLY


def where_by_keywords(x):
    return np.where(x > 0, x=x, y=-x)  # WHERE-KEYWORDS


@pytest.mark.parametrize("fun, marker, words", [
    (method_keyword, "METHOD-UNKNOWN", [".sum", "axes"]),
    (both_bound_spellings, "BOTH-BOUNDS", ["clip", "min"]),
    (one_positional_bound, "ONE-BOUND", ["np.clip", "a_max"]),
    (bad_order, "BAD-ORDER", ["order", "'Q'"]),
    (bad_take_mode, "BAD-MODE", ["mode", "'bounce'"]),
    (reshape_without_shape, "NO-SHAPE", ["reshape", "shape"]),
    (reshape_by_floats, "FLOAT-SHAPE", ["'float'", "integer"]),  # (it reshaped; fuzz41a)
    (concatenate_by_keyword, "POSITIONAL-ONLY", ["np.concatenate", "arrays"]),
])
def test_a_call_numpy_refuses_is_an_argument_error_naming_the_line(fun, marker, words):
    with pytest.raises(gradc.ArgumentError) as excinfo:
        gradc.jit(fun)(np.ones((3, 4)))
    e = excinfo.value
    assert isinstance(e, TypeError) and not isinstance(e, gradc.ShapeError)
    msg = str(e)
    assert re.match(rf"{re.escape(THIS_FILE)}:{line_of(marker)}: ", msg), msg
    for word in words:
        assert word in msg, msg


@pytest.mark.parametrize("fun, marker, words", [
    (missing_axis, "MISSING", ["swapaxes", "axis2"]),
    (unknown_keyword, "UNKNOWN", ["squeeze", "axes"]),
    (repeated_argument, "REPEATED", ["transpose", "axes"]),
    (where_by_keywords, "WHERE-KEYWORDS", ["where", "x, y"]),
])
def test_numpys_own_argument_check_raises_its_type_error_at_the_line(fun, marker, words):
    """NumPy checks these calls itself before gradc sees them (its dispatchers bind the
    arguments): the error is NumPy's own TypeError, raised at the user's line, as without gradc."""
    with pytest.raises(TypeError) as excinfo:
        gradc.jit(fun)(np.ones((3, 4)))
    assert not isinstance(excinfo.value, gradc.ShapeError)
    innermost = excinfo.traceback[-1]
    assert os.path.basename(str(innermost.path)) == THIS_FILE
    assert innermost.lineno + 1 == line_of(marker)
    for word in words:
        assert word in str(excinfo.value)


def swap_out_of_range(x):
    return np.swapaxes(x, 0, 2)  # SWAP-RANGE


def move_out_of_range(x):
    return np.moveaxis(x, 0, -3)  # MOVE-RANGE


def transpose_out_of_range(x):
    return np.transpose(x, (0, 2))  # TRANSPOSE-RANGE


def expand_out_of_range(x):
    return np.expand_dims(x, 3)  # EXPAND-RANGE


def max_of_nothing(x):
    return np.max(x[:0], axis=0)  # EMPTY-MAX


@pytest.mark.parametrize("fun, marker", [
    (swap_out_of_range, "SWAP-RANGE"), (move_out_of_range, "MOVE-RANGE"),
    (transpose_out_of_range, "TRANSPOSE-RANGE"), (expand_out_of_range, "EXPAND-RANGE"),
    (max_of_nothing, "EMPTY-MAX"),
])
def test_an_axis_numpy_refuses_is_a_shape_error_not_a_wrapped_axis(fun, marker):
    """An out-of-range axis is refused as NumPy refuses it (it used to wrap around silently), and
    np.max of nothing raises as in NumPy (it used to give -inf)."""
    with pytest.raises(gradc.ShapeError) as excinfo:
        gradc.jit(fun)(np.ones((3, 4)))
    assert re.match(rf"{re.escape(THIS_FILE)}:{line_of(marker)}: ", str(excinfo.value))


def ravel_in_memory_order(x):
    return np.tanh(x).T.ravel(order="K")  # MEMORY-ORDER


def flatten_any_order(x):
    return (2.0 * x.T).flatten("A")  # ANY-ORDER


def reshape_any_order(x):
    return np.reshape(x.T, -1, order="a")  # RESHAPE-ANY-ORDER


@pytest.mark.parametrize("fun, marker", [(ravel_in_memory_order, "MEMORY-ORDER"),
                                         (flatten_any_order, "ANY-ORDER"),
                                         (reshape_any_order, "RESHAPE-ANY-ORDER")])
def test_orders_that_follow_memory_layout_are_refused_where_they_matter(fun, marker):
    """order='K' and 'A' read in the array's memory order, which NumPy gives x.T, 2 * x.T and a
    Fortran-ordered argument ('F'); a traced value has none. Taking 'C' gave x.T.ravel('K')
    in the wrong order, with its gradient permuted alike: refused, naming the line, where the
    orders differ (above: 1-D and one-long-axis arrays, where they do not, are NumPy's)."""
    with pytest.raises(gradc.UnsupportedOpError) as excinfo:
        gradc.jit(fun)(np.ones((3, 4)))
    msg = str(excinfo.value)
    assert re.match(rf"{re.escape(THIS_FILE)}:{line_of(marker)}: ", msg), msg
    assert "memory layout" in msg and "order='C'" in msg and "order='F'" in msg, msg


def test_dtypes_and_refusals_as_numpy_for_python_numbers_integer_loops_and_axes():
    """Found by a fuzzing round: a Python number given to np.polyval or np.broadcast_arrays is
    an int64/float64 array there (not weakly typed), np.vecdot keeps an integer or boolean
    dtype (wrapping, or the or of the ands), np.mean(dtype=int32) sums in int32 before
    dividing, np.stack checks its axis, np.concatenate of a generator and round() of an array
    are NumPy's errors, round() without ndigits (a Python int) is refused like int(), and a
    string operand or a non-native byte order is named as such."""
    i32 = np.array([2**31 - 1, 1], np.int32)
    x32 = np.array([0.5, 1.5, 2.5], np.float32)
    bools = np.array([True, False])
    cases = [(lambda p: np.polyval(p, 70000), np.array([70000, 3], np.int32)),
             (lambda x: np.polyval(x, 0.1), x32),
             (lambda x: np.broadcast_arrays(x, 0.1)[1] + x, x32),
             (lambda a: np.vecdot(a, a[::-1]), i32), (lambda b: np.vecdot(b, ~b | b), bools),
             (lambda a: np.mean(a, dtype=np.int32), i32),
             (lambda a: np.mean(a.reshape(1, 2), axis=1, dtype=np.int32, where=a > 0), i32),
             (lambda x: round(x[1], 1) * x, x32)]
    for fun, arg in cases:
        want, got = fun(arg), gradc.jit(fun)(arg)
        assert np.asarray(got).dtype == np.asarray(want).dtype, (want, got)
        np.testing.assert_allclose(got, want, rtol=1e-15)  # (exact for the integers)
    refused = [(lambda x: np.stack([x, x], axis=2), gradc.ShapeError, "axis 2"),
               (lambda x: np.stack([x, x], axis=-3), gradc.ShapeError, "axis -3"),
               (lambda x: np.concatenate(map(np.negative, [x, x])), gradc.ArgumentError,
                "sequence"),
               (lambda x: round(x), gradc.ArgumentError, "np.round"),  # (a TypeError)
               (lambda x: round(x[0]) * x, gradc.TracedBranchError, "np.round"),
               (lambda x: x.astype(">f8"), gradc.UnsupportedOpError, "native byte order")]
    for fun, error, words in refused:
        with pytest.raises(error, match=re.escape(words)) as excinfo:
            gradc.jit(fun)(x32)
        assert THIS_FILE in str(excinfo.value)


def test_a_traced_value_is_an_ndarray_to_isinstance():
    """User code that branches on isinstance(x, np.ndarray) takes NumPy's branch (it took the
    other: x + 100 for x * 2), in jit and in grad."""
    def f(x):
        y = x * 2.0 if isinstance(x, np.ndarray) else x + 100.0
        return np.sum(y ** 2) if isinstance(y[0], np.ndarray) or np.ndim(y[0]) == 0 else y

    x = np.array([1.0, 2.0])
    assert gradc.jit(f)(x) == f(x) == 20.0
    np.testing.assert_allclose(gradc.grad(f)(x), 8.0 * x)


def test_what_a_dtype_fuzzing_round_found():
    """np.where of a NumPy scalar made in the function and a Python number takes NumPy 2's weak
    rule (it gave float64 for float32 code); what NumPy refuses, or computes in a type gradc
    has not, is refused by name, not answered in another dtype; gradc.at's update of NumPy
    arrays casts the values to x's dtype first, as its compiled form (and JAX) does."""
    x = np.array([-2.5, -1.0, 0.0, 0.75, 3.0], np.float32)
    m = np.array([True, False, True, True, False])
    same = [lambda x, m: np.where(x > 0, np.float32(1.5), 0) * x,
            lambda x, m: np.where(m, np.array(1.5, np.float32), 0.0),
            lambda x, m: np.where(m, np.int32(3), 4),
            lambda x, m: np.where(m, np.int32(1), 2 ** 40),  # (wrapped, as NumPy does)
            lambda x, m: np.where(m, 1, 2.5),
            lambda x, m: np.where(m, [1.5, 2.5, 3.5, 4.5, 5.5], 0),  # (lists: arrays of their
            lambda x, m: np.where(m, (1, 2, 3, 4, 5), [3, 4, 5, 6, 7]),  # own dtype)
            lambda x, m: np.where(m, np.float32(1), [2.0, 3.0, 4.0, 5.0, 6.0])]
    for fun in same:
        want, got = fun(x, m), gradc.jit(fun)(x, m)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    value, _ = gradc.value_and_grad(lambda x: np.sum(np.where(x > 0, np.float32(1.5), 0) * x))(x)
    assert type(value) is np.float32
    refused = [(lambda x, m: np.var(x, dtype=np.int64), gradc.UnsupportedOpError, "dtype=int64"),
               (lambda x, m: np.std(x, dtype=bool), gradc.UnsupportedOpError, "dtype=bool"),
               (lambda x, m: np.nanmean(x, dtype=np.int32), gradc.UnsupportedOpError, "int32"),
               (lambda x, m: np.logaddexp.reduce(m), gradc.UnsupportedOpError, "float16"),
               (lambda x, m: np.add.accumulate(x[0]), gradc.ArgumentError, "0-d"),
               (lambda x, m: +m, gradc.ArgumentError, "positive")]
    for fun, error, words in refused:
        with pytest.raises(error, match=re.escape(words)) as excinfo:
            gradc.jit(fun)(x, m)
        assert THIS_FILE in str(excinfo.value)
    assert gradc.jit(lambda x: np.var(x, dtype=np.float64))(x).dtype == np.float64

    def update(a, v):
        return gradc.at(a)[np.array([3, 0, 3, 3, 2])].max(v)

    a, v = np.array([False, False, True, False, False]), np.array([10, -3, -41, 25, -30], np.int32)
    np.testing.assert_array_equal(update(a, v), gradc.jit(update)(a, v))
    np.testing.assert_array_equal(update(a, v), [True, False, True, True, False])


def test_ufunc_reductions_take_axis_0_or_minus_1_of_a_0d_array_as_numpy():
    """NumPy's ufunc reductions (sum, max, min, any, all) take axis=0 or -1 of a 0-d array; its
    mean does not. gradc refused both."""
    s = np.array(2.5)
    f = gradc.jit(lambda v: (np.sum(v, axis=0), np.max(v, axis=-1), v.min(axis=0),
                             np.all(v > 0, axis=-1)))
    for got, want in zip(f(s), (2.5, 2.5, 2.5, True)):
        assert got == want
    with pytest.raises(gradc.ShapeError):
        gradc.jit(lambda v: np.mean(v, axis=0))(s)


def test_numpy_functions_of_lists_of_traced_values():
    """np.mean([loss(x) for x in batch]) (autograd's idiom), np.sum([a, b]), np.max((a, b)),
    np.linalg.norm([s, t]), np.average of a list: NumPy dispatches on the list, not on the
    traced values in it, and its own conversion refused them."""
    a, b = np.arange(3.0), np.arange(3.0) + 1

    def f(a, b):
        return (np.sum([a, b]), np.mean([a.sum(), (b ** 2).sum()]), np.max((a, b), axis=0),
                np.linalg.norm([a.sum(), b.sum()]),
                np.average([a.sum(), a.max()], weights=[0.2, 0.8]))

    for got, want in zip(gradc.jit(f)(a, b), f(a, b)):
        np.testing.assert_allclose(got, want, rtol=1e-14)
    grad = gradc.grad(lambda a, b: np.mean([np.sum(a ** 2), np.sum(a * b)]))(a, b)
    np.testing.assert_allclose(grad, (2 * a + b) / 2, rtol=1e-14)


def test_cov_with_frequency_and_analytic_weights():
    rng = np.random.default_rng(2)
    x, fw, aw = rng.standard_normal((3, 6)), np.array([1, 2, 1, 3, 1, 1]), rng.random(6)
    for kw in (dict(fweights=fw), dict(aweights=aw), dict(fweights=fw, aweights=aw),
               dict(aweights=aw, ddof=0), dict(aweights=aw, bias=True), dict(fweights=fw, ddof=2)):
        np.testing.assert_allclose(gradc.jit(lambda x, kw=kw: np.cov(x, **kw))(x),
                                   np.cov(x, **kw), rtol=1e-12)
    # traced analytic weights: the gradient by central differences
    f = lambda x, aw: np.sum(np.cov(x, aweights=aw) ** 2)
    got = gradc.grad(f, argnums=1)(x, aw)
    e = np.eye(6) * 1e-6
    want = [(f(x, aw + e[i]) - f(x, aw - e[i])) / 2e-6 for i in range(6)]
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("func", [np.prod, np.nansum, np.nanprod, np.argmax, np.argmin,
                                  np.argsort, np.ptp, np.count_nonzero, np.nanmax, np.nanmin,
                                  np.nanmean, np.nanstd, np.nanvar])
def test_axis_0_and_minus_1_of_a_0d_array_are_numpys(func):
    """NumPy takes axis 0 or -1 of a 0-d array (its one element); gradc said the axis was out
    of bounds (fuzz39a)."""
    a = np.array(2.0)
    for axis in (0, -1):
        got, want = gradc.jit(lambda a: func(a, axis=axis))(a), func(a, axis=axis)
        assert np.shape(got) == np.shape(want)
        np.testing.assert_allclose(got, want)


def test_accumulate_of_axis_none_is_numpys():
    """ufunc.accumulate(x, axis=None): a 1-d array's one axis (np.maximum's was refused), a 2-d
    array NumPy's refusal (np.add's flattened it)."""
    x = np.array([3.0, 1.0, 4.0, 1.5])
    for ufunc in (np.maximum, np.add, np.minimum, np.multiply):
        np.testing.assert_allclose(gradc.jit(lambda x: ufunc.accumulate(x, axis=None))(x),
                                   ufunc.accumulate(x, axis=None))
        with pytest.raises(ValueError, match="multiple axes"):
            gradc.jit(lambda x: ufunc.accumulate(x, axis=None))(np.ones((2, 2)))


@pytest.mark.parametrize("fun, error", [
    (lambda b: np.gradient(b), TypeError),                  # boolean subtraction
    (lambda b: np.correlate(b[0] * 1.0, b * 1.0), ValueError),  # a 0-d sequence
    (lambda b: np.cov(np.stack([b, b]) * 1.0, ddof=1.5), ValueError),
])
def test_calls_numpy_refuses_are_refused_where_gradc_answered(fun, error):
    """fuzz41a: these gave numbers under gradc; NumPy raises, and so does gradc, naming the line."""
    b = np.array([True, False, True, True])
    with pytest.raises(error):
        fun(b)
    with pytest.raises(error) as excinfo:
        gradc.jit(fun)(b)
    assert isinstance(excinfo.value, gradc.GradcError)
    assert str(excinfo.value).startswith(THIS_FILE), str(excinfo.value)


def test_argsort_and_put_of_a_0d_array_are_numpys():
    """NumPy sorts a 0-d array as one element and puts into its only element (gradc refused)."""
    def f(x):
        y = (x[1:2] * 2.0).reshape(())
        np.put(y, [0, 0], [7.0, x[2]])  # (the last value wins)
        return np.argsort(x[0]), np.argsort(x[0], axis=None), y, np.cov(x, ddof=2.0)
    x = np.array([3.0, 1.0, 2.0, 5.0])
    for got, want in zip(gradc.jit(f)(x), f(x)):
        np.testing.assert_array_equal(got, want)
        assert np.shape(got) == np.shape(want)


@pytest.mark.parametrize("expr", [
    "np.sum(x, axis=[1])", "x.mean(axis=[0, 1])", "np.max(x, axis=[1])", "np.any(x, axis=[1])",
    "np.var(x, axis=[1])", "np.prod(x, axis=[1])", "np.nansum(x, axis=[1])",
    "np.nanmax(x, axis=[1])", "np.ptp(x, axis=[1])", "np.count_nonzero(x, axis=[1])",
    "np.squeeze(x[:1], axis=[0])", "np.add.reduce(x, axis=[1])",
    "np.logaddexp.reduce(x, axis=[1])", "np.concatenate([x, x], axis=[1])",
    "np.linalg.vector_norm(x, axis=[1])",
    # (and those NumPy takes a list of axes for)
    "np.median(x, axis=[1])", "np.quantile(x, 0.5, axis=[1])", "np.average(x, axis=[1])",
    "np.flip(x, [1])", "np.expand_dims(x, [0])", "np.roll(x, 1, axis=[1])",
    "gradc.nn.softmax(x, axis=[1])",
])
def test_a_list_of_axes_is_taken_where_numpy_takes_one(expr):
    """NumPy's reductions refuse axis=[1] (TypeError); gradc reduced (fuzz41a). Functions
    written in Python on normalize_axis_tuple take one."""
    x = np.arange(6.0).reshape(2, 3) + 1
    f = eval("lambda x: " + expr)
    if expr.startswith("gradc.nn"):
        want = gradc.nn.softmax(x, axis=(1,))
    else:
        try:
            want = f(x)
        except TypeError:
            with pytest.raises(gradc.ArgumentError, match="as a tuple"):
                gradc.jit(f)(x)
            return
    np.testing.assert_allclose(gradc.jit(f)(x), want, rtol=1e-12)


def test_cov_of_one_row_with_rowvar_false_is_one_observation_as_numpy_2s():
    """fuzz42b: np.cov(X, rowvar=False) of a (1, n) batch is the n x n covariance of one
    observation (NumPy 2 transposes any 2-D m); gradc kept it as one variable: a number."""
    X = np.array([[1.0, 2.5, -0.5]])
    for f in (lambda X: np.cov(X, rowvar=False, ddof=0), lambda X: np.cov(X, rowvar=False),
              lambda X: np.corrcoef(X, rowvar=False), lambda X: np.cov(X[0], rowvar=False)):
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want, got = f(X), gradc.jit(f)(X)
        assert np.shape(got) == np.shape(want)
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError):
        gradc.jit(lambda X: np.cov(X, X, rowvar=False))(X)


def test_a_traced_number_is_its_numpy_scalar_type_to_isinstance():
    """fuzz42a: `isinstance(s, float)` / np.isscalar(s) of a float argument (and of x.sum())
    were False, NumPy's True: the scalar branch silently not taken (value 6 for 3, gradient 0)."""
    def loss(scale, x):
        total = np.sum(x * scale) if isinstance(scale, float) and np.isscalar(scale) else 0.0
        s = x.sum()
        picked = s * 2.0 if isinstance(s, np.floating) and not isinstance(s, np.ndarray) else s
        zero_d = np.array(s)  # (a 0-d array: an ndarray, as NumPy's)
        return total + picked + (1.0 if isinstance(zero_d, np.ndarray) else -50.0)

    x = np.array([1.0, 2.0, 3.0])
    for scale in (0.5, np.float64(0.5)):
        value, grads = gradc.value_and_grad(loss, argnums=(0, 1))(scale, x)
        assert value == loss(scale, x) == 16.0
        assert grads[0] == 6.0
        np.testing.assert_array_equal(grads[1], np.full(3, 2.5))


def test_a_python_float_arguments_plus_real_conjugate_and_round_stay_weak():
    """fuzz42a: +s, s.real, s.imag, s.conjugate(), round(s, 2) of a Python float argument are
    Python floats in NumPy (weak: x32 * +s stays float32); gradc made them float64."""
    def f(s, x):
        return (x * +s, x * s.real, x * s.conjugate(), x * round(s, 2), x + s.imag, x * -s)

    x = np.ones(3, np.float32)
    for got, want in zip(gradc.jit(f)(0.5, x), f(0.5, x)):
        assert got.dtype == want.dtype == np.float32
        np.testing.assert_array_equal(got, want)


def test_the_scalar_type_isinstance_sees_is_numpys_for_floats_abcs_ellipsis_and_slogdet():
    """fuzz42e, on the change above: a Python float argument is a float, not an np.generic;
    isinstance(s, numbers.Number) (through abc) is True; s[...] of a NumPy scalar is a 0-d
    array; slogdet's logabsdet a scalar."""
    import numbers

    def f(s, x, m):
        m_ = x.mean()
        u = m_[...]
        u[...] = 5.0  # (a 0-d array takes a store)
        ld = np.linalg.slogdet(m).logabsdet
        return (x * (2.0 if isinstance(s, np.generic) else 3.0),
                x * (m_ if isinstance(m_, numbers.Number) else 0.0),
                u, ld * (10.0 if isinstance(ld, np.ndarray) else 1.0))

    x, m = np.array([1.0, 2.0, 4.0]), np.array([[2.0, 1.0], [1.0, 3.0]])
    for got, want in zip(gradc.jit(f)(0.5, x, m), f(0.5, x, m)):
        np.testing.assert_allclose(got, want, rtol=1e-13)
    assert gradc.grad(lambda s, x: np.sum(x * s) if not isinstance(s, np.generic) else 0.0)(
        0.5, x) == 7.0


def test_what_fuzz42e_found_in_scalars_signatures_and_options():
    """A NumPy scalar argument and a 0-d array share no compiled program (their x[i] differ:
    a view and a copy); `scale in (None, "auto")` is NumPy's False, not a refusal;
    np.array(y, copy=False, dtype=...) that must copy is NumPy 2's ValueError; a reshape of a
    read-only broadcast is read-only too."""
    def pick(W, i):
        y = W * 1.0
        r = y[i]
        r += 1.0  # (a view for a NumPy scalar i: y changes; a copy for a 0-d array)
        return y.sum()

    W = np.arange(12.0).reshape(3, 4)
    f = gradc.jit(pick)
    for i in (np.int64(2), np.array(2), np.int64(2)):
        assert f(W, i) == pick(W, i)

    def options(x, scale):
        return x / (x.std() if scale in (None, "auto") else scale)
    x = np.array([1.0, 4.0, -2.0])
    np.testing.assert_array_equal(gradc.jit(options)(x, x.std()), options(x, x.std()))
    compared = gradc.jit(lambda x: (x == "a", x != None, x == {}))(x)  # noqa: E711
    for got, want in zip(compared, (x == "a", x != None, x == {})):  # noqa: E711
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="copy"):
        gradc.jit(lambda y: np.array(y * 1.0, copy=False, dtype=np.float32))(x)
    with pytest.raises(gradc.UnsupportedOpError, match="read-only"):
        def store(x):
            b = np.broadcast_to(x[:1] * 1.0, (3,)).reshape(3)
            b[0] = 7.0
            return b
        gradc.jit(store)(x)


def _stored_outs(x):
    sums = np.zeros_like(x[0])
    total = np.sum(x, axis=0, out=sums)  # (returns out itself, as NumPy's)
    counts = np.zeros_like(x[0], dtype=np.int64)
    np.cumsum(x[0], out=counts)  # (NumPy's unsafe cast into int64)
    means = np.empty_like(x[:, 0])
    x.mean(axis=1, out=means)
    gram = np.zeros_like(x[:, :2])
    np.dot(x, x.T, out=gram)
    rounded = x.copy()
    np.round(x * 1.37, 1, out=rounded)
    return total, sums, counts, means * 2.0, gram, rounded, total is sums


def _stored_out_of_the_wrong_shape(x):
    return np.sum(x, axis=0, out=np.zeros_like(x[:, 0]))  # OUT-SHAPE


def _stored_out_into_numpys(x):
    buf = np.zeros(3)
    np.sum(x, axis=0, out=buf)  # OUT-NUMPY
    return buf


def test_out_of_numpy_functions_takes_a_traced_array_as_numpys():
    """fuzz47a: `np.sum(x, axis=0, out=buf)` (np.cumsum, np.mean, np.dot, np.round...) was
    refused whatever buf was; into a traced array it is NumPy's store now, its gradient too."""
    x = np.arange(6.0).reshape(2, 3) + 0.5
    for got, want in zip(gradc.jit(_stored_outs)(x), _stored_outs(x)):
        assert np.asarray(got).dtype == np.asarray(want).dtype
        np.testing.assert_allclose(got, want, rtol=1e-12)
    grad = gradc.grad(lambda x: np.sum(_stored_outs(x)[1] ** 2))(x)
    np.testing.assert_allclose(grad, 2 * x.sum(axis=0) * np.ones_like(x), rtol=1e-12)
    for fun, error, marker, word in ((_stored_out_of_the_wrong_shape, gradc.ShapeError,
                                      "OUT-SHAPE", "(2,)"),
                                     (_stored_out_into_numpys, gradc.UnsupportedOpError,
                                      "OUT-NUMPY", "np.zeros_like")):
        with pytest.raises(error) as excinfo:
            gradc.jit(fun)(x)
        msg = str(excinfo.value)
        assert re.match(rf"{re.escape(THIS_FILE)}:{line_of(marker)}: ", msg) and word in msg, msg
