"""np.linspace of traced endpoints and NumPy 2's array-API names (gradc/functions/array_api.py),
against NumPy; an unsupported function's refusal names the close ones, not all of them."""
import numpy as np
import pytest

import gradc

X = np.random.default_rng(0).normal(size=(3, 4))

CASES = [
    lambda x: np.linspace(x.min(), x.max(), 5),
    lambda x: np.linspace(x[0], x[1], 4, axis=-1),
    lambda x: np.linspace(x[0], x[1], 4, endpoint=False, axis=1),
    lambda x: np.linspace(x[0, 0], 3.0, 1),
    lambda x: np.linspace(x[0, 0], 3.0, 0),
    lambda x: np.linspace(0.0, x[0, 0] * 10, 6, dtype=np.int64),
    lambda x: np.linspace(x[0, 0], 3.0, 6, retstep=True),
    lambda x: np.linalg.vector_norm(x),
    lambda x: np.linalg.vector_norm(x, axis=1, ord=1, keepdims=True),
    lambda x: np.linalg.vector_norm(x, keepdims=True),
    lambda x: np.linalg.matrix_norm(x),
    lambda x: np.linalg.matrix_norm(x[None], ord=2, keepdims=True),
    lambda x: np.linalg.matmul(x, x.T),
    lambda x: np.linalg.vecdot(x, x),
    lambda x: np.linalg.outer(x[0], x[1]),
    lambda x: np.linalg.trace(np.stack([x[:, :3], x[:, 1:]])),
    lambda x: np.linalg.diagonal(x, offset=1),
    lambda x: np.linalg.tensordot(x, x.T, axes=1),
    lambda x: np.astype(x, np.float32),
    lambda x: np.unstack(x, axis=1),
    lambda x: np.linalg.cross(x[:, :3], x[::-1, 1:4]),  # (fuzz41a: these three were refused)
    lambda x: np.linalg.matrix_transpose(x[None]),
    lambda x: np.linalg.svdvals(x),
]


@pytest.mark.parametrize("f", CASES)
def test_linspace_and_array_api_names_are_numpys(f):
    got, want = gradc.jit(f)(X), f(X)
    for g, w in zip(got if isinstance(want, tuple) else [got],
                    want if isinstance(want, tuple) else [want]):
        assert np.shape(g) == np.shape(w) and np.asarray(g).dtype == np.asarray(w).dtype
        np.testing.assert_allclose(g, w, rtol=1e-12, equal_nan=True)


def test_linspace_gradient_reaches_its_endpoints():
    g = gradc.grad(lambda x: np.sum(np.linspace(x[0], x[1], 5) ** 2))(X)
    samples = np.linspace(X[0], X[1], 5)
    t = np.linspace(0.0, 1.0, 5)[:, None]
    np.testing.assert_allclose(g[0], np.sum(2 * samples * (1 - t), axis=0), rtol=1e-12)
    np.testing.assert_allclose(g[1], np.sum(2 * samples * t, axis=0), rtol=1e-12)
    assert not g[2:].any()


def test_an_unsupported_function_names_the_close_ones_not_all():
    with pytest.raises(gradc.UnsupportedOpError) as info:
        gradc.jit(lambda x: np.unwrap(x))(X)
    assert len(str(info.value)) < 400 and "Supported NumPy" in str(info.value)


def test_edges_numpy_has_for_these_names():
    """(fuzz39h) vector_norm over two axes is a vector norm (it took np.linalg.norm's matrix
    norm); linspace of float32 endpoints stays float32, one sample of an endpoint is
    start + 0 * (stop - start) (NaN for an infinite span) with a step NaN, a float count is a
    TypeError; linalg.outer refuses 2-D arrays; convolve takes a 0-d operand as length one."""
    x = np.random.default_rng(1).normal(size=(2, 3, 4))
    for kw in ({"axis": (0, 1)}, {"axis": (1, 2), "ord": 1}, {"axis": (0, 2), "keepdims": True}):
        np.testing.assert_allclose(gradc.jit(lambda x: np.linalg.vector_norm(x, **kw))(x),
                                   np.linalg.vector_norm(x, **kw), rtol=1e-12)
    f32 = np.float32
    got = gradc.jit(lambda a: np.linspace(a, f32(7.25), 3, endpoint=False))(f32(1.5))
    want = np.linspace(f32(1.5), f32(7.25), 3, endpoint=False)
    assert got.dtype == np.float32 and np.array_equal(got, want)
    with np.errstate(invalid="ignore"):
        one = gradc.jit(lambda a: np.linspace(a, np.inf, 1, retstep=True))(np.float64(1.0))
        assert np.isnan(one[0]).all() and np.ndim(one[1]) == 0 and np.isnan(one[1])
    with pytest.raises(TypeError):
        gradc.jit(lambda a: np.linspace(a, 2.0, 2.5))(np.float64(1.0))
    with pytest.raises(ValueError, match="one-dimensional"):
        gradc.jit(lambda x: np.linalg.outer(x, x))(np.ones((2, 2)))
    np.testing.assert_array_equal(gradc.jit(lambda a: np.convolve(a, [0.0, 1.0, 2.0]))(
        np.array(2.0)), [0.0, 2.0, 4.0])
