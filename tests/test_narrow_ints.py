"""int8, uint8, int16 and uint16 arrays (images as bytes, quantized values, labels kept
small): computed as NumPy computes them, in their own dtypes with NumPy's wrap-around, or refused
with the line where NumPy's result has a dtype gradc has not (the sum of uint8 is uint64)."""
import warnings

import numpy as np
import pytest

import gradc

from _finite_differences import central_difference

NARROW = [np.int8, np.uint8, np.int16, np.uint16]
W = np.linspace(-1.0, 1.0, 8).reshape(4, 2)


def _data(dtype):
    info = np.iinfo(dtype)
    values = [info.min, info.min + 1, -1, 0, 1, 7, info.max - 1, info.max]
    return np.array([v for v in values if info.min <= v <= info.max][:8] * 2,
                    dtype=dtype)[:8].reshape(2, 4)


CASES = {
    "add wraps": lambda x: x + 1,
    "subtract wraps": lambda x: x - x[::-1],
    "multiply wraps": lambda x: x * x,
    "negative": lambda x: -x,
    "absolute": lambda x: np.abs(x),
    "sign": lambda x: np.sign(x),  # (fuzz47c: uint8's 128 and up were 255)
    "power": lambda x: x ** 2,
    "power of arrays": lambda x: x ** (x % 4),
    "floor divide": lambda x: x // 3,
    "remainder": lambda x: x % 5,
    "true divide": lambda x: x / 255.0,
    "with a float array": lambda x: x * W.T,
    "with a float32 array": lambda x: x * W.T.astype(np.float32),
    "with int64": lambda x: x + np.arange(4),
    "compare": lambda x: x > 3,
    "compare beyond the dtype": lambda x: (np.less(x, 300), np.greater_equal(x, -200),
                                           np.not_equal(70000, x), np.logical_and(x, 300)),
    "maximum": lambda x: np.maximum(x, x[::-1]),
    "where": lambda x: np.where(x > 3, x, 0),
    "clip": lambda x: np.clip(x, 1, 5),
    "max over an axis": lambda x: x.max(axis=1),
    "argmax": lambda x: np.argmax(x, axis=0),
    "sort": lambda x: np.sort(x, axis=1),
    "reshape and transpose": lambda x: x.reshape(4, 2).T.copy(),
    "concatenate": lambda x: np.concatenate([x, x[:, ::-1]], axis=0),
    "mean": lambda x: x.mean(axis=0),
    "matmul wraps": lambda x: x @ x.T,
    "as float32": lambda x: x.astype(np.float32) * 0.5,
    "from floats out of range": lambda x: (x * 3.7 - 100.0).astype(x.dtype),
    "as another narrow dtype": lambda x: x.astype(np.int8) * 3,
}


@pytest.mark.parametrize("dtype", NARROW, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", list(CASES))
def test_narrow_integers_compute_as_numpy(dtype, case):
    f, x = CASES[case], _data(dtype)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = f(x)
        got = gradc.jit(f)(x)
    for got, expected in zip(*((got, expected) if type(expected) is tuple else
                               ((got,), (expected,)))):
        assert np.asarray(got).dtype == expected.dtype
        np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6 if
                                   expected.dtype.kind == "f" else 0)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16], ids=lambda d: np.dtype(d).name)
def test_sums_numpy_gives_as_uint64_are_refused_with_the_line(dtype):
    x = _data(dtype)
    with pytest.raises(gradc.UnsupportedOpError,
                       match=r"test_narrow_ints\.py:\d+: .*sum of u?int\d+ arrays gives uint64"):
        gradc.jit(lambda x: x.sum())(x)
    with pytest.raises(gradc.UnsupportedOpError, match=r"np\.cumsum of .* gives uint64"):
        gradc.jit(lambda x: np.cumsum(x, axis=1))(x)
    for method in ("reduce", "accumulate"):  # (fuzz47c: uint8 wrapped, silently)
        for ufunc in (np.add, np.multiply):
            with pytest.raises(gradc.UnsupportedOpError, match=rf"{ufunc.__name__}\.{method} of "
                                                               r".* gives uint64"):
                gradc.jit(lambda x: getattr(ufunc, method)(x, axis=1))(x)
    # (cast first, as the message says: the sum of the values)
    assert gradc.jit(lambda x: x.astype(np.int64).sum())(x) == x.astype(np.int64).sum()


def test_signed_narrow_sums_are_int64_as_numpys():
    x = _data(np.int8)
    got = gradc.jit(lambda x: (x.sum(), np.sum(x, axis=1)))(x)
    assert got[0] == x.sum() and np.asarray(got[0]).dtype == np.int64
    np.testing.assert_array_equal(got[1], x.sum(axis=1))


def test_narrow_indices_and_labels_index_as_numpy():
    labels = np.array([3, 0, 9, 255], dtype=np.uint8)
    table = np.arange(256.0 * 2).reshape(256, 2)
    f = gradc.jit(lambda table, labels: (table[labels], np.eye(256)[labels].sum(axis=0)))
    got = f(table, labels)
    np.testing.assert_array_equal(got[0], table[labels])
    np.testing.assert_array_equal(got[1], np.eye(256)[labels].sum(axis=0))


def test_narrow_labels_and_indices_of_larger_tables_in_gradc_nn():
    """fuzz47c: int8 indices into a 300-row table (gradc.nn.embedding) and int8 labels of 200
    classes (cross_entropy) were refused: the row count met them as an int8."""
    rng = np.random.default_rng(2)
    table, logits = rng.standard_normal((300, 2)), rng.standard_normal((3, 200))
    i8 = np.array([1, 99, 5], np.int8)
    np.testing.assert_array_equal(
        gradc.jit(lambda t, i: gradc.nn.embedding(t, i))(table, i8), table[i8])
    assert gradc.jit(gradc.nn.cross_entropy)(logits, i8) == pytest.approx(
        gradc.nn.cross_entropy(logits, i8.astype(np.int64)), rel=1e-12)


def test_a_narrow_array_made_in_the_trace_is_written_in_place_as_numpy():
    def f(x):
        buf = np.zeros(4, np.uint8)
        buf[1:] = x[0, :3]
        buf += 250
        return buf

    x = _data(np.uint8)
    np.testing.assert_array_equal(gradc.jit(f)(x), f(x))


def _image_loss(w, images, targets):
    h = np.tanh((images.reshape(len(images), -1) / 255.0) @ w)
    return np.mean((h - targets) ** 2)


def test_gradients_of_a_model_of_uint8_images_match_finite_differences():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 4, 4)).astype(np.uint8)
    targets, w = rng.standard_normal((6, 3)), rng.standard_normal((16, 3)) * 0.1
    value, grad = gradc.value_and_grad(_image_loss)(w, images, targets)
    assert value == pytest.approx(_image_loss(w, images.astype(np.float64), targets), rel=1e-12)
    numeric = central_difference(lambda w: _image_loss(w, images, targets), w)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_a_train_step_on_uint8_batches_updates_as_numpy_by_hand():
    rng = np.random.default_rng(1)
    params = {"w": rng.standard_normal((16, 3)) * 0.1}
    reference = params["w"].copy()
    step = gradc.train_step(lambda p, x, y: _image_loss(p["w"], x, y), gradc.optim.SGD(lr=0.5))
    for i in range(3):
        images = rng.integers(0, 256, (6, 4, 4)).astype(np.uint8)
        targets = rng.standard_normal((6, 3))
        loss = step(params, images, targets)
        x = images.reshape(6, -1) / 255.0
        h = np.tanh(x @ reference)
        assert loss == pytest.approx(np.mean((h - targets) ** 2), rel=1e-12)
        reference -= 0.5 * x.T @ (2 * (h - targets) / h.size * (1 - h ** 2))
        np.testing.assert_allclose(params["w"], reference, rtol=1e-10, err_msg=f"step {i}")


def test_a_narrow_argument_is_not_differentiable():
    with pytest.raises(gradc.GradcError, match="uint8"):
        gradc.grad(lambda x: np.sum(x / 255.0))(_data(np.uint8))


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.uint16])
def test_linear_algebra_of_narrow_integer_matrices_is_numpys(dtype):
    """np.linalg's functions of narrow integer matrices compute in float64 as NumPy's; those
    that have no answer on a matrix of zeros (inv, solve, cholesky: singular) were refused,
    NumPy's dtype being asked on zeros alone."""
    a = np.array([[4, 1, 0], [1, 3, 1], [0, 1, 2]], dtype)
    b = np.array([1, 2, 3], dtype)
    calls = [lambda a, b: np.linalg.inv(a), lambda a, b: np.linalg.solve(a, b),
             lambda a, b: np.linalg.cholesky(a), lambda a, b: np.linalg.det(a),
             lambda a, b: np.linalg.eigh(a)[0], lambda a, b: np.linalg.slogdet(a)[1]]
    for call in calls:
        got, want = gradc.jit(call)(a, b), call(a, b)
        assert np.asarray(got).dtype == np.asarray(want).dtype
        np.testing.assert_allclose(got, want, rtol=1e-12)


FLOAT_LOOPS = {  # NumPy runs these on int16 / uint16 in its float32 loop (float16 for 8 bits)
    "sin": lambda x: np.sin(x), "sqrt": lambda x: np.sqrt(np.abs(x)),
    "tanh": lambda x: np.tanh(x), "log1p": lambda x: np.log1p(np.abs(x)),
    "hypot": lambda x: np.hypot(x, x[::-1]), "arctan2": lambda x: np.arctan2(x, x + 1),
}


@pytest.mark.parametrize("dtype", [np.int16, np.uint16], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", ["sin", "sqrt", "tanh", "log1p", "hypot", "arctan2"])
def test_float_ufuncs_of_16_bit_integers_compute_in_float32_as_numpy(dtype, name):
    """A math ufunc of int16 or uint16 is float32 in NumPy (its float32 loop on the integers
    cast): gradc computes it so (it was refused, gradc's op computing integers in float64)."""
    f, x = FLOAT_LOOPS[name], _data(dtype)
    with np.errstate(all="ignore"):
        expected = f(x)
    got = gradc.jit(f)(x)
    assert expected.dtype == np.float32 and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=2e-6, atol=1e-6)


def test_narrow_loops_numpy_runs_in_another_dtype_than_gradcs():
    """A boolean's `** 2` is NumPy's int8 square (computed so); 8-bit integers' math ufuncs are
    float16 in NumPy (refused, with the line); np.reciprocal of integers stays refused (NumPy's
    integer reciprocal: 1 // x)."""
    mask = np.array([[True, False], [False, True]])
    got = gradc.jit(lambda m: m ** 2)(mask)
    assert got.dtype == np.int8 and np.array_equal(got, mask ** 2)
    with pytest.raises(gradc.UnsupportedOpError,
                       match=r"test_narrow_ints\.py:\d+: np\.sin of int8 gives float16"):
        gradc.jit(lambda x: np.sin(x))(_data(np.int8))
    with pytest.raises(gradc.UnsupportedOpError, match=r"np\.reciprocal of int16 gives int16"):
        gradc.jit(lambda x: np.reciprocal(x))(_data(np.int16))
