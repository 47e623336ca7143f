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
