"""NumPy idioms of model code ported as written (autograd's examples, ML-From-Scratch, karpathy's
min-char-rnn, cs231n, contrastive losses), each refused or wrong before, checked against NumPy
and central differences through the public API."""
import importlib.util

import numpy as np
import pytest

import gradc

from _finite_differences import central_difference

RNG = np.random.default_rng(3)


def _value_and_gradient_match(loss, x, *rest):
    value, grad = gradc.value_and_grad(loss)(x, *rest)
    np.testing.assert_allclose(value, loss(x, *rest), rtol=1e-12)
    np.testing.assert_allclose(grad, central_difference(lambda v: loss(v, *rest), x),
                               rtol=1e-6, atol=1e-8)


def test_the_gradient_at_a_numpy_scalar_is_a_numpy_scalar_of_its_own():
    """autograd's sinusoid.py: `map(grad(f), x)` over an array's elements (np.float64 each).
    The gradients were 0-d views of one buffer: the list held the last point's everywhere."""
    d_sin = gradc.grad(np.sin)
    x = np.linspace(-3.0, 3.0, 5)
    got = list(map(d_sin, x))
    assert all(type(g) is np.float64 for g in got)
    np.testing.assert_allclose(got, np.cos(x), rtol=1e-15)
    both = gradc.grad(lambda a, b: a * b * b, argnums=(0, 1))
    ga, gb = both(np.float32(2.0), np.array(3.0, np.float32))
    assert type(ga) is np.float32 and ga == 9.0
    assert isinstance(gb, np.ndarray) and gb.shape == () and gb == 12.0  # (an array: an array)


class _Recurrent:  # (ML-From-Scratch's RNN.forward_pass: buffers held by the layer object)
    def forward(self, X, W):
        self.states = np.zeros((X.shape[0], X.shape[1]))
        for t in range(X.shape[1]):
            self.states[:, t] = np.tanh(X[:, t] * W[t] + (self.states[:, t - 1] if t else 0.0))
        return self.states


def _layer_made_inside(W, X):
    return np.sum(_Recurrent().forward(X, W) ** 2)


def _one_hot_in_a_dict(W, inputs):  # (min-char-rnn's lossFun, inputs an int array)
    xs, hs = {}, {}
    hs[-1] = np.zeros((3, 1))
    for t in range(len(inputs)):
        xs[t] = np.zeros((4, 1))
        xs[t][inputs[t]] = 1
        hs[t] = np.tanh(np.dot(W, xs[t]) + hs[t - 1])
    return np.sum(hs[len(inputs) - 1])


def test_a_made_buffer_held_by_a_local_object_or_dict_takes_stores():
    """`self.states[:, t] = ...` on a layer made inside the loss, `xs[t][inputs[t]] = 1` on a
    dict entry: the object's attribute and the dict's entry hold the array the function made,
    and are bound to the traced copy as local names are (both were refused)."""
    _value_and_gradient_match(_layer_made_inside, np.array([0.5, -0.3, 0.8]),
                              RNG.standard_normal((2, 3)))
    _value_and_gradient_match(_one_hot_in_a_dict, RNG.standard_normal((3, 4)),
                              np.array([1, 3, 0]))


def _written_through_out(W, X):
    h = X @ W
    np.maximum(h, 0, out=h)  # (in-place ReLU)
    same = h
    np.exp(h, out=h, where=h > 0.5)
    return np.sum(same ** 2)


def _numpy_writers(E):
    sim = E @ E.T
    np.fill_diagonal(sim, -3.0)
    tall = np.tanh(E) * 1.0
    np.fill_diagonal(tall, [7.0, 8.0], wrap=True)
    cube = np.ones((2, 2, 2)) * E[0, 0]
    np.fill_diagonal(cube, E[1, :2])
    target = np.zeros_like(E)
    np.copyto(target, E ** 2, where=E > 0)
    order = np.argsort(E, axis=1)
    np.put_along_axis(target, order[:, :1], E[:, 1:2] * 5.0, axis=1)
    flat = E * 2.0
    np.put(flat, [0, -1, 5], [E[1, 1], 0.5], mode="raise")
    return np.sum(sim ** 2) + np.sum(tall) + np.sum(cube ** 2) + np.sum(target ** 2) + np.sum(
        flat ** 3)


def test_numpys_writing_functions_write_into_the_traced_array():
    """ufuncs' out= (read the array afterwards, under any name), np.fill_diagonal (contrastive
    losses, t-SNE), np.copyto, np.put_along_axis and np.put: the array object takes the new
    values, as item assignment does (each was refused)."""
    _value_and_gradient_match(_written_through_out, np.array([[1.0, -2.0], [0.5, 0.3]]),
                              np.array([[1.0, 2.0], [-1.0, 0.5]]))
    _value_and_gradient_match(_numpy_writers, RNG.standard_normal((4, 3)))


def test_writing_functions_refuse_what_numpy_refuses_or_gradc_cannot_write():
    def into_argument(x):
        np.fill_diagonal(x, 0.0)
        return x

    def narrowing(x):
        counts = (x[0] * 0).astype(np.int64)
        np.copyto(counts, x[0])  # (float64 into int64: not 'same_kind')
        return counts

    with pytest.raises(gradc.UnsupportedOpError, match="argument of the traced function"):
        gradc.jit(into_argument)(np.ones((2, 2)))
    with pytest.raises(gradc.ArgumentError, match="Cannot cast array data"):
        gradc.jit(narrowing)(np.ones((2, 3)))


def _reshaped_in_place(w, x):  # (cs231n's conv_forward_strides: `res.shape = (...)`)
    res = w.reshape(3, -1).dot(x) + 1.0
    before = res[0]
    res.shape = (3, 2, 2)
    return np.sum(res.transpose(1, 0, 2) ** 2) + np.sum(before)


def test_setting_the_shape_of_an_array_the_function_computed_reshapes_it():
    _value_and_gradient_match(_reshaped_in_place, np.arange(6.0).reshape(3, 2) / 10,
                              np.ones((2, 4)))

    def of_an_argument(x):
        x.shape = (-1,)
        return x

    with pytest.raises(gradc.UnsupportedOpError, match="caller's array"):
        gradc.jit(of_an_argument)(np.ones((2, 2)))


def test_a_tuple_inside_an_index_is_an_integer_array_index():
    """ML-From-Scratch's polynomial_features: X[:, index_combs], a tuple from itertools."""
    def features(X):
        return np.sum(np.prod(X[:, (0, 1)], axis=1) + np.prod(X[:, (1, 1)], axis=1)) + np.sum(
            X[:, ()])

    _value_and_gradient_match(features, np.arange(1.0, 7.0).reshape(3, 2))


def test_gradc_generators_take_randomstates_randn_and_rand():
    """autograd's examples draw with `rs.randn(*shape)`; FrozenRandomError says to pass a
    gradc.random generator, which had no randn."""
    def objective(params, rs):
        samples = rs.randn(50, 2) * np.exp(params[2:]) + params[:2]
        return np.mean(np.sum(samples ** 2, axis=1)) + np.sum(rs.rand(3)) + rs.randn()

    def with_generators_names(params, rs):
        samples = rs.standard_normal((50, 2)) * np.exp(params[2:]) + params[:2]
        return (np.mean(np.sum(samples ** 2, axis=1)) + np.sum(rs.random(3))
                + rs.standard_normal())

    params = np.array([-1.0, -1.0, -2.0, -2.0])
    got = gradc.value_and_grad(objective)(params, gradc.random.Generator(0))
    want = gradc.value_and_grad(with_generators_names)(params, gradc.random.Generator(0))
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_an_assert_on_traced_values_says_what_to_do_with_it(tmp_path):
    """numpy-ml validates its inputs with `assert np.allclose(...)` inside the loss: the refusal
    said to use np.where, which does not apply to an assert. (In a file of its own: pytest
    rewrites the asserts of test modules.)"""
    path = tmp_path / "validating_loss.py"
    path.write_text("import numpy as np\n"
                    "def loss(z):\n"
                    "    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)\n"
                    "    assert np.allclose(p.sum(axis=1), 1.0), 'rows should sum to one'\n"
                    "    return np.sum(p * z)\n")
    spec = importlib.util.spec_from_file_location("validating_loss", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(gradc.TracedBranchError, match=r"validating_loss\.py:4: an assert on "
                                                      r"traced values.*before the call"):
        gradc.grad(module.loss)(np.eye(2))


def test_clip_into_its_own_array_and_a_reshape_numpy_refuses():
    """`np.clip(g, -1, 1, out=g)` (gradient clipping in place) was refused; `y.shape = (4,)` of
    3 elements is NumPy's refusal at the user's line (it had none)."""
    def clipped(x):
        g = x * 3.0
        np.clip(g, -1.0, 1.0, out=g)
        h = x * 1.0
        h.clip(0.0, None, out=h)
        return np.sum(g ** 2) + np.sum(h)

    _value_and_gradient_match(clipped, np.array([0.1, -0.7, 0.5]))

    def wrong_size(x):
        y = x * 1.0
        y.shape = (4,)
        return y

    with pytest.raises(gradc.ShapeError, match=r"test_ported_idioms\.py:\d+: cannot reshape"):
        gradc.jit(wrong_size)(np.ones(3))


def test_numpys_writing_functions_write_into_arrays_the_function_made():
    """`M = np.zeros((n, n)); np.fill_diagonal(M, d)` with d traced (np.copyto, np.put,
    np.put_along_axis, the methods .fill and .put too): as a store, the array's local names are bound to a traced copy
    written into (refused: fuzz40e). Held by a list too, it is refused, as a store is."""
    def made(w):
        M = np.zeros((3, 3))
        np.fill_diagonal(M, w)
        buf = np.empty(3)
        np.copyto(buf, w * 2.0)
        flat = np.zeros(4)
        np.put(flat, [0, 2], w[:2])
        along = np.zeros((2, 3))
        np.put_along_axis(along, np.array([[1], [0]]), w[:2, None], axis=1)
        filled = np.empty(2)
        filled.fill(w[2])  # (the methods too)
        put = np.zeros(3)
        put.put([2], w[0] * 5.0)
        return (np.sum(M @ w) + np.sum(buf ** 2) + np.sum(flat * 3.0) + np.sum(along ** 3)
                + np.sum(filled ** 2) + np.sum(put ** 2))

    _value_and_gradient_match(made, np.array([0.3, -0.5, 0.2]))

    def listed(w):
        M = np.zeros((3, 3))
        keep = [[M]]
        np.fill_diagonal(M, w)
        return keep[0][0]

    with pytest.raises(gradc.UnsupportedOpError, match="np.zeros_like"):
        gradc.jit(listed)(np.ones(3))


def test_products_of_lists_of_traced_values_and_clips_promote_as_numpys():
    """fuzz44c: np.dot(v, v) of a list of traced scalars was refused (NumPy dispatches on
    neither list) with a message about `A.dot(x)`; np.clip of a boolean mask with a Python and
    a NumPy bound promoted in two steps (np.clip(mask, 0, np.int32(3)) int64, NumPy's int32)."""
    def dot(a, b):
        v = [a, b]
        return np.dot(v, v) + np.inner((a, b), [b, a]) + np.outer([a, b], [1.0, 2.0]).sum()

    a, b = np.float64(1.5), np.float64(-0.5)
    assert gradc.jit(dot)(a, b) == pytest.approx(dot(a, b), rel=1e-14)
    mask = np.array([True, False, True])
    for hi in (np.int32(3), np.float32(2.0), 2, 2.5):
        got, want = gradc.jit(lambda m, h: np.clip(m, 0, h))(mask, hi), np.clip(mask, 0, hi)
        assert got.dtype == want.dtype and np.array_equal(got, want)


def test_cs231n_batchnorm_forward_keeps_its_running_statistics_in_bn_param():
    """cs231n's batchnorm_forward(x, gamma, beta, bn_param) writes its running mean and
    variance into bn_param, the dict it is given: refused before (the trace ran on a copy)."""
    def batchnorm_forward(x, gamma, beta, bn_param):
        momentum = bn_param.get("momentum", 0.9)
        running_mean = bn_param.get("running_mean", np.zeros(x.shape[1], dtype=x.dtype))
        running_var = bn_param.get("running_var", np.zeros(x.shape[1], dtype=x.dtype))
        if bn_param["mode"] == "train":
            mu, var = x.mean(axis=0), x.var(axis=0)
            out = gamma * (x - mu) / np.sqrt(var + 1e-5) + beta
            running_mean = momentum * running_mean + (1 - momentum) * mu
            running_var = momentum * running_var + (1 - momentum) * var
        else:
            out = gamma * (x - running_mean) / np.sqrt(running_var + 1e-5) + beta
        bn_param["running_mean"], bn_param["running_var"] = running_mean, running_var
        return out

    def loss(x, gamma, beta, bn_param):
        return np.sum(batchnorm_forward(x, gamma, beta, bn_param) ** 2)

    rng = np.random.default_rng(0)
    gamma, beta = np.ones(3), np.zeros(3)
    ours, theirs = {"mode": "train"}, {"mode": "train"}
    step = gradc.value_and_grad(loss, argnums=(1, 2))
    for _ in range(3):
        x = rng.standard_normal((5, 3))
        assert step(x, gamma, beta, ours)[0] == pytest.approx(loss(x, gamma, beta, theirs))
        for key in ("running_mean", "running_var"):
            np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-13)
    ours["mode"] = theirs["mode"] = "test"
    x = rng.standard_normal((5, 3))
    np.testing.assert_allclose(gradc.jit(batchnorm_forward)(x, gamma, beta, ours),
                               batchnorm_forward(x, gamma, beta, theirs), rtol=1e-13)
