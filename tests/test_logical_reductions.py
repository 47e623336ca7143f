"""np.any / np.all (functions and methods) in traced code: max / min of the values as booleans."""
import numpy as np
import pytest

import gradc


@pytest.mark.parametrize("axis,keepdims", [(None, False), (0, False), (1, True), ((0, 1), False)])
def test_any_all_match_numpy(axis, keepdims):
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    x[1] = 0.0

    def f(x):
        return (np.any(x > 1.0, axis=axis, keepdims=keepdims), np.all(x, axis=axis, keepdims=keepdims),
                (x < 0).any(axis=axis, keepdims=keepdims), x.all(axis=axis, keepdims=keepdims))

    for got, want in zip(gradc.jit(f)(x), f(x)):
        assert np.asarray(got).dtype == np.bool_ and np.array_equal(got, want)


def test_any_in_a_differentiated_function():
    x = np.array([0.5, -1.0, 2.0], np.float32)
    g = gradc.grad(lambda x: np.where(np.any(x > 1.0), 2.0, 1.0) * np.sum(x * x))(x)
    np.testing.assert_allclose(g, 4.0 * x)
