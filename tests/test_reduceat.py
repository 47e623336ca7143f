"""ufunc.reduceat (np.add.reduceat(x, indices, axis)): NumPy's values, dtypes and shapes over the
reductions, index patterns (increasing, out of order, repeated, one, none; list, tuple or array
of any integer type), axes and dtypes; gradients against central differences; NumPy's refusals
as gradc's errors, and traced indices refused by name."""
import numpy as np
import pytest
from _finite_differences import central_difference

import gradc

UFUNCS = [np.add, np.multiply, np.maximum, np.minimum, np.fmax, np.fmin, np.logical_and,
          np.logical_or]
INDICES = [[0, 2, 3], [3, 1, 4], [2, 2, 0, 4], [1], (0, 4), np.array([4, 0], np.int8), []]


def every_reduceat(axis):
    def f(x):
        return tuple(u.reduceat(x, i, axis=axis) for u in UFUNCS for i in INDICES)
    return f


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int32, np.bool_])
@pytest.mark.parametrize("axis", [0, -1, 1])
def test_reduceat_is_numpys(dtype, axis):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((5, 6, 5)) * 3
    if dtype is np.bool_:
        x = x > 0
    elif dtype is np.int32:
        x = np.clip(x, -3, 3).astype(dtype)  # (products of 6 stay far from wrapping)
    else:
        x[1, 2, 0] = x[4, 0, 2] = np.nan  # (fmax/fmin leave NaNs out, maximum keeps them)
        x = x.astype(dtype)
    f = every_reduceat(axis)
    got, want = gradc.jit(f)(x), f(x)
    for g, w, (u, i) in zip(got, want, [(u, i) for u in UFUNCS for i in INDICES]):
        what = f"{u.__name__}.reduceat(x, {i!r}, axis={axis}) of {x.dtype}"
        assert g.dtype == w.dtype and g.shape == w.shape, what
        np.testing.assert_allclose(g, w, rtol=1e-5, equal_nan=True, err_msg=what)


def test_reduceat_with_dtype_casts_each_element_first_as_numpy():
    """dtype= is the dtype NumPy reduces in: each element cast to it, then reduced (not the
    reduction cast after); indices= by keyword."""
    x = np.array([0.6, 0.6, 1.9, -1.5, 2.5])
    calls = [lambda x: np.add.reduceat(x, [0, 2], dtype=np.int64),
             lambda x: np.add.reduceat(x.astype(np.float32) * 1e-3 + 1, [0, 2], dtype=np.float64),
             lambda x: np.multiply.reduceat((x * 20).astype(np.uint8), [0, 4], dtype=np.int64),
             lambda x: np.maximum.reduceat((x * -5).astype(np.int8), [0, 3], dtype=np.uint8),
             lambda x: np.add.reduceat(x, indices=[1, 3], axis=0)]
    for call in calls:
        got, want = gradc.jit(call)(x), call(x)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_reduceat_gradients_match_finite_differences():
    x = np.random.default_rng(6).standard_normal((4, 7))

    def loss(x):
        return (np.sum(np.add.reduceat(x, [5, 1, 3, 6], axis=1) ** 2)
                + np.sum(np.multiply.reduceat(x, [0, 2], axis=0))
                + np.sum(np.sin(np.maximum.reduceat(x, [0, 3, 3], axis=-1)))
                + np.sum(np.minimum.reduceat(x, [2], axis=0) * x[0]))

    grad = gradc.grad(loss)
    for point in (x, x[::-1].copy()):
        np.testing.assert_allclose(grad(point), central_difference(loss, point), rtol=1e-6,
                                   atol=1e-8)


@pytest.mark.parametrize("call, error, words", [
    (lambda x: np.add.reduceat(x, [7]), gradc.IndexOutOfRangeError, "index 7 out-of-bounds"),
    (lambda x: np.add.reduceat(x, [0, -1]), gradc.IndexOutOfRangeError, "index -1"),
    (lambda x: np.add.reduceat(x, [[0, 1]]), gradc.ArgumentError, "one-dimensional"),
    (lambda x: np.add.reduceat(x, [0], axis=None), gradc.ArgumentError, "multiple axes"),
    (lambda x: np.add.reduceat(x[0], [0]), gradc.ArgumentError, "scalar"),
    (lambda x: np.add.reduceat(x, [0], out=np.zeros(1)), gradc.UnsupportedOpError, "out="),
    (lambda x: np.add.reduceat(x, (x > 0).astype(np.int64)), gradc.UnsupportedOpError,
     "traced indices"),
    (lambda x: np.subtract.reduceat(x, [0, 2]), gradc.UnsupportedOpError, "np.subtract"),
    (lambda x: np.add.reduceat(x, np.array([0, 2], np.uint64)), gradc.ArgumentError,
     "uint64.*'safe'"),
    (lambda x: np.add.reduceat(x, np.array([0.0, 2.0])), gradc.ArgumentError, "float64"),
])
def test_reduceat_refusals_name_the_line(call, error, words):
    x = np.arange(7.0)
    with pytest.raises(error, match=words) as caught:
        gradc.jit(call)(x)
    assert "test_reduceat.py" in str(caught.value)
