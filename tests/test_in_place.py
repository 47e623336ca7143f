"""Augmented assignment (x += y, x *= y, ...) in traced code. NumPy writes the result into x's
memory; gradc's arrays are immutable, so the name is bound to a new array. That is NumPy's
answer whenever x's memory is reached through x alone (a value the function computed, a copy,
a number), and those must match NumPy with their gradients; where NumPy would also change
another array (x is an argument: the caller's array; x is a view: the array it views) gradc
refuses by name and line rather than answer differently."""
import re

import numpy as np
import pytest

import gradc

X = np.arange(1.0, 7.0).reshape(2, 3) / 7.0
B = np.array([0.5, -1.0, 2.0])


def _fresh_all_operators(x, b):
    h = x @ np.ones((3, 3)) + 1.0
    h += b
    h -= 0.25 * b
    h *= x
    h /= 1.5 + x * x
    h **= 2
    g = h.copy()
    g //= 0.3
    g %= 0.7
    return h + g


def _accumulate_rows(x, b):
    total = x[0].copy()
    for i in range(1, x.shape[0]):
        total += x[i] * b
    return total


def _accumulate_scalars(x, b):
    s = 0.0
    for i in range(x.shape[0]):
        s += np.sum(x[i] * b)  # (a Python float, then a traced 0-d value)
    v = x[0, 1]  # (every axis an integer: a NumPy scalar, a copy)
    v *= 3.0
    return s + v + x[0, 1]


def _copies(x, b):
    a, c, d = x.copy(), np.copy(x), x.flatten()
    a += b
    c *= 2.0
    d -= 1.0
    k = np.sum(x, axis=0, keepdims=True)  # (a reduction: a new array, not a view)
    k += 1.0
    return np.sum(a) + np.sum(c * x) + np.sum(d) + np.sum(k)


def _matmul_and_logic(x, b):
    m = x.T @ x
    m @= np.eye(3) * 2.0
    mask = x > 0.3
    mask &= x < 0.8
    mask |= x > 0.85
    return np.sum(m) + np.sum(np.where(mask, x, 0.0))


@pytest.mark.parametrize("f", [_fresh_all_operators, _accumulate_rows, _accumulate_scalars,
                               _copies, _matmul_and_logic])
def test_augmented_assignment_to_values_reached_by_one_name_is_numpys(f):
    ref = f(X.copy(), B.copy())
    np.testing.assert_allclose(gradc.jit(f)(X, B), ref, rtol=1e-12, atol=1e-12)
    loss = lambda x, b: np.sum(f(x, b) ** 2)  # noqa: E731
    g = gradc.grad(loss, argnums=(0, 1))(X, B)
    eps = 1e-6
    for arg, (grad, base) in enumerate(zip(g, (X, B))):
        fd = np.zeros_like(base)
        for i in np.ndindex(base.shape):
            hi, lo = [X.copy(), B.copy()], [X.copy(), B.copy()]
            hi[arg][i] += eps
            lo[arg][i] -= eps
            fd[i] = (loss(*hi) - loss(*lo)) / (2 * eps)
        if f is _copies or f is _fresh_all_operators:  # (// and % are flat almost everywhere)
            np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-4)
        else:
            np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-7)


def test_numbers_given_as_arguments_may_be_rebound():
    def f(x, lr, k):
        lr *= 2.0
        k += 1.0
        return np.sum(x * lr) + k

    for lr in (0.5, np.float64(0.5)):
        assert gradc.jit(f)(X, lr, np.float32(1.0)) == pytest.approx(f(X, lr, np.float32(1.0)))
    assert gradc.grad(f, argnums=1)(X, 0.5, 1.0) == pytest.approx(2.0 * X.sum())


def _names_line(e, marker):
    with open(__file__, encoding="utf-8") as fh:
        line = next(i for i, text in enumerate(fh, 1) if text.rstrip().endswith(f"# {marker}"))
    assert re.search(rf"test_in_place\.py:{line}(?!\d)", str(e)), str(e)


def _arg(x, b):
    out = x  # (another name for the caller's array)
    out += b  # ARG
    return np.sum(out * x)


def _slice(x, b):
    head = x[:, :2]
    head += 10.0  # SLICE
    return np.sum(x)


def _row(x, b):
    r = x[0] * 1.0 + x[1]
    v = r[1:]
    v *= 2.0  # ROW
    return np.sum(r)


def _transposed(x, b):
    h = x * 2.0
    y = h.T
    y -= 1.0  # TRANSPOSED
    return np.sum(h)


def _reshaped(x, b):
    h = x + 1.0
    flat = np.reshape(h, -1)
    flat /= 2.0  # RESHAPED
    return np.sum(h)


def _squeezed(x, b):
    h = x[None] * b
    s = h.squeeze(0)
    s **= 2  # SQUEEZED
    return np.sum(h)


@pytest.mark.parametrize("f, marker", [(_arg, "ARG"), (_slice, "SLICE"), (_row, "ROW"),
                                       (_transposed, "TRANSPOSED"), (_reshaped, "RESHAPED"),
                                       (_squeezed, "SQUEEZED")])
def test_augmented_assignment_that_numpy_would_see_elsewhere_is_refused(f, marker):
    with pytest.raises(gradc.UnsupportedOpError) as excinfo:
        gradc.jit(f)(X, B)
    _names_line(excinfo.value, marker)
    assert "gradc.at(x)" in str(excinfo.value)
    step = gradc.train_step(lambda p, x: f(x, p["b"]), gradc.optim.SGD(0.1))
    with pytest.raises(gradc.UnsupportedOpError):
        step({"b": B.copy()}, X)
