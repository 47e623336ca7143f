"""Item assignment (`x[i] = v`, `x[i] += v`) in traced code. NumPy writes into x's memory, and
every name, list and attribute holding x sees the store; gradc's array object x takes the
updated array (Graph.take_over), so those see it too, and what read x before keeps the old
values. Where NumPy would show the store through another array (a view taken before, the array
x views, the caller's argument) gradc refuses by name and line rather than answer otherwise."""
import re

import numpy as np
import pytest

import gradc

X = np.random.RandomState(0).randn(3, 4)


def _numeric_grad(f, x, eps=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[i] = eps
        g[i] = (f(x + d) - f(x - d)) / (2 * eps)
    return g


def _relu_on_a_copy(x):
    y = x.copy()
    y[y < 0] = 0.0  # (a traced mask)
    return np.sum(y * y)


def _filled_step_by_step(x):
    n, t_steps = x.shape
    h = np.zeros_like(x)
    h[:, 0] = np.tanh(x[:, 0])
    for t in range(1, t_steps):
        h[:, t] = np.tanh(x[:, t] + 0.5 * h[:, t - 1])
    return np.sum(h ** 2)


def _augmented_stores(x):
    y = x * 1.0
    y[1] += 3 * x[0]
    y[:, 1:] *= 2
    y[[0, 0, 2]] += 1.0  # (repeated: NumPy adds once, the last store wins)
    y[..., -1] -= y[..., 0]
    return np.sum(np.sin(y))


def _seen_through_a_list(x):
    y = np.tanh(x)
    kept = [y]
    y[0, 0] = 5.0
    return np.sum(kept[0] * x)  # (the list holds the array that was written)


def _read_before_the_store(x):
    y = np.tanh(x)
    before = y.sum()
    y[0] = 0.0
    return before + np.sum(y * y)


def _stores_of_every_kind(x):
    y = np.exp(x)
    y[1, 2] = x[0, 0] * 3  # (an element)
    y[:, ::2] = x[:, 1::2]  # (a strided slice)
    y[np.array([2, 0])] = x[1]  # (an index array, a row broadcast)
    y[x > 1.0] = -1.0  # (a traced mask, a number)
    y[np.argmax(x[:, 0])] = 0.25  # (a traced index)
    return np.sum(y * x)


def _integer_and_boolean_targets(x):
    k = np.zeros(4, np.int64)
    k = k + 1  # (a computed integer array)
    k[1] = 2.7 * 2  # (NumPy truncates to 5)
    m = x[0] > 10.0
    m[2] = True
    return np.sum(x[0] * k) + np.sum(np.where(m, x[1], 0.0))


@pytest.mark.parametrize("f", [_relu_on_a_copy, _filled_step_by_step, _augmented_stores,
                               _seen_through_a_list, _read_before_the_store,
                               _stores_of_every_kind, _integer_and_boolean_targets])
def test_item_assignment_is_numpys_with_its_gradient(f):
    value, grad = gradc.value_and_grad(f)(X)
    assert value == pytest.approx(f(X.copy()), rel=1e-12)
    np.testing.assert_allclose(grad, _numeric_grad(f, X), atol=1e-6)


def test_a_0d_array_takes_a_store_and_a_number_does_not():
    def zero_d(x):
        a = np.array(x.sum())  # (a 0-d array: written in place, as NumPy's)
        a[()] = a * 2.0
        return a + 1.0

    assert gradc.jit(zero_d)(X) == pytest.approx(X.sum() * 2.0 + 1.0)

    def number(x):
        s = x.sum()  # (a NumPy scalar: NumPy refuses the store)
        s[()] = 1.0  # NUMBER
        return s

    with pytest.raises(gradc.ArgumentError, match="does not support item assignment"):
        gradc.jit(number)(X)


def _into_an_argument(x):
    x[0] = 0.0  # ARG
    return np.sum(x)


def _into_a_view_of_an_argument(x):
    row = x[1]
    row[0] = 0.0  # ARG-VIEW
    return np.sum(row)


def _view_read_after(x):
    y = np.tanh(x)
    first = y[0]
    y[0, 1] = 7.0
    return np.sum(first)  # VIEW-READ (NumPy's view shows the 7)


def _array_read_after_a_store_through_its_view(x):
    y = np.tanh(x)
    row = y[0]
    row[1] = 7.0
    return np.sum(y)  # BASE-READ (NumPy's y holds the 7)


@pytest.mark.parametrize("f, marker", [(_into_an_argument, "ARG"),
                                       (_into_a_view_of_an_argument, "ARG-VIEW"),
                                       (_view_read_after, "VIEW-READ"),
                                       (_array_read_after_a_store_through_its_view,
                                        "BASE-READ")])
def test_a_store_numpy_would_show_elsewhere_is_refused(f, marker):
    with pytest.raises(gradc.UnsupportedOpError) as excinfo:
        gradc.jit(f)(X.copy())
    line = next(i for i, text in enumerate(open(__file__, encoding="utf-8"), start=1)
                if text.rstrip().endswith(f"# {marker}") or f"# {marker} " in text)
    assert re.search(rf"test_item_assignment\.py:{line}\b", str(excinfo.value))


def test_a_store_through_a_view_is_read_through_that_view():
    def through_view(x):
        y = np.tanh(x)
        row = y[0]
        row[1] = 7.0
        return np.sum(row * x[0])  # (y itself unread)

    value, grad = gradc.value_and_grad(through_view)(X)
    assert value == pytest.approx(through_view(X.copy()))
    np.testing.assert_allclose(grad, _numeric_grad(through_view, X), atol=1e-6)
