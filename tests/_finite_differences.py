"""Central differences, the reference for gradients in the tests."""
import numpy as np


def central_difference(f, x, eps=1e-6):
    """d f / d x of the scalar function `f` at `x`, element by element."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[i] = eps
        grad[i] = (f(x + step) - f(x - step)) / (2 * eps)
    return grad
