"""Calling conventions at the API boundary: Python floats among differentiated arguments,
gradients at a constant point inside another trace, lists where NumPy takes array-likes, static
values that == cannot tell apart, 0-d gradients, indices out of range, and explain on a train
step. (The errors' messages and lines are in tests/test_errors.py.)"""
import numpy as np
import pytest

import gradc

X3 = np.array([0.5, -1.0, 2.0])
X32 = np.array([0.5, -1.0, 2.0], np.float32)


def central_difference(f, x, eps=1e-6):
    return (f(x + eps) - f(x - eps)) / (2 * eps)


# ---------------------------------------------------------------------------------------------
# a Python float in argnums is traced; its gradient is a Python float

def test_grad_of_a_python_float_is_its_derivative_as_a_float():
    g = gradc.grad(lambda x: x ** 2)
    assert g(3.0) == 6.0 and type(g(3.0)) is float
    assert g(-1.5) == -3.0  # another value: the same compiled version
    assert len(g.cache) == 1


def test_python_float_inside_a_differentiated_pytree():
    def f(p, x):
        return np.sum(np.tanh(p["s"] * p["t"] * x)) + p["layers"][1] ** 3

    def params(s=2.0, c=0.7):
        return {"s": s, "t": X3 * 0.5, "layers": [X3, c]}

    value, grads = gradc.value_and_grad(f)(params(), X3)
    assert type(grads["s"]) is float and type(grads["layers"][1]) is float
    assert grads["s"] == pytest.approx(central_difference(lambda s: f(params(s=s), X3), 2.0),
                                       rel=1e-8)
    assert grads["layers"][1] == pytest.approx(3 * 0.7 ** 2, rel=1e-14)
    np.testing.assert_allclose(grads["t"], 2.0 * X3 * (1 - np.tanh(X3 * X3) ** 2), rtol=1e-12)
    np.testing.assert_array_equal(grads["layers"][0], np.zeros(3))
    assert float(value) == pytest.approx(f(params(), X3), rel=1e-14)


def test_list_of_python_floats_and_argnums_tuple():
    def f(xs, w):
        return np.sum(np.stack(xs) ** 2 * w) + xs[0] * xs[1]

    g_xs, g_w = gradc.grad(f, argnums=(0, 1))([2.0, 3.0], X3[:2])
    assert all(type(v) is float for v in g_xs)
    assert g_xs == pytest.approx([2 * 2.0 * X3[0] + 3.0, 2 * 3.0 * X3[1] + 2.0], rel=1e-14)
    np.testing.assert_allclose(g_w, [4.0, 9.0], rtol=1e-14)


def test_python_float_outside_argnums_stays_static():
    calls = []

    def f(x, k):
        calls.append(k)
        return np.sum(x * k)

    g = gradc.grad(f)
    np.testing.assert_array_equal(g(X3, 2.0), [2.0, 2.0, 2.0])
    np.testing.assert_array_equal(g(X3, 3.0), [3.0, 3.0, 3.0])
    assert calls == [2.0, 3.0]  # a static value: traced once per value


# NumPy 2: a Python float is weak (x32 * 0.5 is float32), Python arithmetic on it stays weak,
# a NumPy function's result is a NumPy float64 (strong)
WEAK_CASES = {
    "times": lambda s, x: np.sum(s * x),
    "python arithmetic": lambda s, x: np.sum(x * (2.0 * -s + 1.0) ** 2),
    "numpy function": lambda s, x: np.sum(np.multiply(s, 2.0) * x),
    "where": lambda s, x: np.sum(np.where(x > 0, s, x)),
}


@pytest.mark.parametrize("name", list(WEAK_CASES))
def test_traced_python_float_is_weakly_typed_like_numpy(name):
    f = WEAK_CASES[name]
    value, g = gradc.value_and_grad(f)(0.75, X32)
    expected = f(0.75, X32)
    assert value.dtype == expected.dtype, (value.dtype, expected.dtype)
    assert float(value) == pytest.approx(float(expected), rel=1e-6)
    fd = central_difference(lambda s: f(s, X32.astype(np.float64)), 0.75)
    assert type(g) is float and g == pytest.approx(fd, rel=1e-5)


def test_python_float_in_a_nested_grad_inside_a_trace():
    # d/dx [x * d/dy (x y^2) at y=3] = d/dx 6 x^2 = 12 x
    outer = gradc.grad(lambda x: x * gradc.grad(lambda y: x * y ** 2)(3.0))
    assert float(outer(np.float64(1.0))) == pytest.approx(12.0, rel=1e-14)
    assert gradc.grad(lambda s: gradc.grad(lambda t: t ** 3)(s))(2.0) == pytest.approx(12.0)


# ---------------------------------------------------------------------------------------------
# a gradient at a constant point of a function that closes over traced values

def test_nested_grad_at_a_constant_point_closing_over_the_outer_value():
    g = gradc.grad(lambda x: x * gradc.grad(lambda y: x * y)(np.float64(2.0)))
    assert float(g(np.float64(1.0))) == 2.0
    assert float(g(np.float64(-3.0))) == -6.0


def test_nested_value_and_grad_of_arrays_at_a_constant_point():
    c = np.array([1.0, 2.0, -1.0])

    def f(x):
        value, inner = gradc.value_and_grad(lambda y: np.sum(np.sin(x) * y ** 2))(c)
        return np.sum(x * inner) + value  # inner = 2 sin(x) c; value = sum(sin(x) c^2)

    g = gradc.grad(f)(X3)
    expected = 2 * c * (np.sin(X3) + X3 * np.cos(X3)) + np.cos(X3) * c ** 2
    np.testing.assert_allclose(g, expected, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# lists (and NumPy arrays) where NumPy takes an array-like, inside traced code

W2 = np.array([[1.0, -2.0], [0.5, 3.0]])


def with_lists(x):
    return (np.dot(x, [1, 2]), x + [1, 2], np.maximum(x, [0, 1]), [1.0, 2.0] - x,
            np.where(x > 0.6, x, [5.0, 6.0]), x @ [[1.0], [2.0]], np.dot(x, W2), np.dot(W2, x),
            x * (3.0, 4.0), np.outer(x, [1, 2, 3]), np.full_like(x, [7, 8]), np.clip(x, [0, 1], 1.2),
            np.concatenate([x, [1.0]]))


def test_lists_in_traced_code_are_arrays_as_in_numpy():
    f = gradc.jit(with_lists)
    for x in (np.array([0.5, 1.5]), np.array([0.5, 1.5], np.float32)):
        for got, want in zip(f(x), with_lists(x)):
            assert np.asarray(got).dtype == np.asarray(want).dtype
            np.testing.assert_allclose(got, want, rtol=1e-6)


def test_gradient_through_a_list_constant():
    g = gradc.grad(lambda x: np.dot(x * [1.0, 2.0], [3, 4]))(np.array([0.5, 1.5]))
    np.testing.assert_array_equal(g, [3.0, 8.0])


def test_list_of_numbers_to_jit_is_a_static_pytree():
    f = gradc.jit(lambda xs: np.sum(xs) * 2)
    assert f([1.0, 2.0]) == 6.0 and f([1.0, 5.0]) == 12.0


# ---------------------------------------------------------------------------------------------
# static values that == cannot tell apart

def test_static_nan_compiles_once():
    f = gradc.jit(lambda x, s: x + s)
    for _ in range(3):
        assert np.isnan(f(X3, float("nan"))).all()
    assert len(f.cache) == 1


def test_static_zero_and_negative_zero_are_different_values():
    f = gradc.jit(lambda x, s: x / s)
    for s in (0.0, -0.0, 0.0, -0.0):  # (again: the fast way must tell them apart too)
        with np.errstate(divide="ignore"):
            np.testing.assert_array_equal(f(X3, s), X3 / s)
    assert len(f.cache) == 2


def test_static_int_float_and_bool_are_different_values():
    f = gradc.jit(lambda x, k: x * k)
    xi = np.arange(3)
    for k in (1, 1.0, True, 1):
        out = f(xi, k)
        assert out.dtype == (xi * k).dtype
        np.testing.assert_array_equal(out, xi * k)


# ---------------------------------------------------------------------------------------------
# 0-d gradients are 0-d arrays (views, like every gradient; copies with copy=True)

@pytest.mark.parametrize("copy", [False, True])
def test_zero_d_array_parameters_get_zero_d_array_gradients_and_scalars_scalars(copy):
    def f(p):
        return p["a"] * np.sum(p["v"]) + p["b"] ** 2

    params = {"a": np.array(3.0), "v": X3, "b": np.float64(0.5)}
    value, grads = gradc.value_and_grad(f, copy=copy)(params)
    assert isinstance(value, np.float64)  # the value stays a NumPy scalar
    assert type(grads["a"]) is np.ndarray and grads["a"].shape == ()
    assert type(grads["b"]) is np.float64  # (a NumPy scalar's: immutable, no buffer's view)
    assert float(grads["a"]) == pytest.approx(X3.sum(), rel=1e-14)
    assert float(grads["b"]) == 1.0
    np.testing.assert_array_equal(grads["v"], [3.0, 3.0, 3.0])


# ---------------------------------------------------------------------------------------------
# indices out of range: IndexOutOfRangeError (an IndexError too), and nothing half-updated

def _ce(logits, y):
    return gradc.nn.cross_entropy(logits, y)


@pytest.mark.parametrize("bad", [3, -1, -4, -100, 1000])
def test_label_out_of_range_is_an_index_error_naming_the_labels(bad):
    """A label outside [0, classes): negative ones too, as in PyTorch (NumPy's wrap-around took
    -1 as the last class, and PyTorch's padding label -100 as a class where there are 100+)."""
    vg = gradc.value_and_grad(_ce)
    logits = np.zeros((2, 3))
    vg(logits, np.array([0, 2]))
    with pytest.raises(gradc.IndexOutOfRangeError) as excinfo:
        vg(logits, np.array([0, bad]))
    assert isinstance(excinfo.value, IndexError)
    assert "y holds an index outside [0, 3)" in str(excinfo.value)
    with pytest.raises(IndexError):
        gradc.nn.cross_entropy(logits, np.array([0, bad]))  # (eagerly, on NumPy arrays, too)


def _half_step_loss(params, x, y):
    # p's gradient does not depend on the labels: its update could run before they are checked
    return np.sum(params["p"] * 2.0) + gradc.nn.cross_entropy(x @ params["W"], y)


def _fresh_params():
    return {"W": np.linspace(-1.0, 1.0, 6).reshape(3, 2), "p": np.ones(2)}


def test_train_step_with_a_label_out_of_range_changes_nothing():
    params, x = _fresh_params(), np.linspace(0.0, 1.0, 12).reshape(4, 3)
    good, bad = np.array([0, 1, 0, 1]), np.array([0, 1, 2, 1])
    step = gradc.train_step(_half_step_loss, gradc.optim.Adam(lr=0.1))
    step(params, x, good)
    before, state = {k: v.copy() for k, v in params.items()}, step.state_dict()
    with pytest.raises(gradc.IndexOutOfRangeError, match="parameters and the optimizer state"):
        step(params, x, bad)
    for k in params:
        np.testing.assert_array_equal(params[k], before[k])
    after = step.state_dict()
    assert after["step"] == 1
    for slot in state["state"]:
        for k in params:
            np.testing.assert_array_equal(after["state"][slot][k], state["state"][slot][k])
    # and it goes on as if the failed call had not happened
    reference, ref_params = gradc.train_step(_half_step_loss, gradc.optim.Adam(lr=0.1)), _fresh_params()
    reference(ref_params, x, good)
    assert step(params, x, good) == reference(ref_params, x, good)
    for k in params:
        np.testing.assert_array_equal(params[k], ref_params[k])


def test_embedding_index_out_of_range_names_the_ids():
    f = gradc.jit(lambda table, ids: np.sum(table[ids]))
    table = np.ones((4, 2))
    assert f(table, np.array([3, 0])) == 4.0
    with pytest.raises(gradc.IndexOutOfRangeError, match=r"ids holds an index outside \[-4, 4\)"):
        f(table, np.array([4, 0]))


# ---------------------------------------------------------------------------------------------
# explain works on what train_step returns, without running it

def test_explain_a_train_step_runs_nothing_and_touches_no_state():
    params, x = _fresh_params(), np.linspace(0.0, 1.0, 12).reshape(4, 3)
    y = np.array([0, 1, 0, 1])
    step = gradc.train_step(_half_step_loss, gradc.optim.SGD(lr=0.1, momentum=0.9))
    text = gradc.explain(step, params, x, y)
    assert "train_step of _half_step_loss with SGD(" in text
    assert "forward + backward + update" in text and "== memory plan" in text
    np.testing.assert_array_equal(params["W"], _fresh_params()["W"])
    assert step.step_count == 0 and step.state_dict()["state"] == {}
    loss = step(params, x, y)  # the step still works, from the start
    reference, ref_params = gradc.train_step(_half_step_loss, gradc.optim.SGD(lr=0.1, momentum=0.9)), _fresh_params()
    assert loss == reference(ref_params, x, y)
    np.testing.assert_array_equal(params["W"], ref_params["W"])


def test_a_dict_argument_keeps_its_keys_order():
    """The function sees the dict it was given, in its order: the keys were sorted by repr, so
    a loop over params.values() of layer1, layer2, layer10 ran layer10 second (silently another
    network); another order is another signature; gradients come back in the given order."""
    rng = np.random.default_rng(0)
    params = {f"layer{i}": rng.standard_normal((3, 3)) * 0.5 for i in (1, 2, 10)}
    x = rng.standard_normal((2, 3))

    def net(p, x):
        h = x
        for w in p.values():
            h = np.tanh(h @ w)
        return np.sum(h ** 2)

    reordered = dict(reversed(list(params.items())))
    f, vg = gradc.jit(net), gradc.value_and_grad(net)
    for p in (params, reordered, params, reordered):  # (the fast path checks the order too)
        assert f(p, x) == pytest.approx(net(p, x), rel=1e-12)
        value, grads = vg(p, x)
        assert value == pytest.approx(net(p, x), rel=1e-12) and list(grads) == list(p)
    assert list(gradc.jit(lambda x: {"b": x, "a": 2 * x})(x)) == ["b", "a"]
    step = gradc.train_step(net, gradc.optim.SGD(lr=0.1))
    step({k: v.copy() for k, v in params.items()}, x)
    with pytest.raises(gradc.SignatureError, match="another order"):
        step({k: v.copy() for k, v in reordered.items()}, x)


class AttrDict(dict):  # (EasyDict/Munch-style parameters: p.W is p["W"])
    __getattr__ = dict.__getitem__


class DotDict(dict):  # (the common recipe: a missing attribute is None)
    __getattr__ = dict.get


class NeedsArguments(dict):
    def __init__(self, items, tag):
        super().__init__(items)
        self.tag = tag

    def __setitem__(self, key, value):
        self.tag.append(key)  # (its own state, made by __init__)
        super().__setitem__(key, value)


def test_dict_subclasses_go_in_and_out_as_themselves():
    """An attribute dict given or returned crashed inside gradc (its __getattr__ answered
    gradc's `hasattr(x, "__cuda_array_interface__")` with None or a KeyError); any dict subclass
    reached the function as a plain dict (p.W an AttributeError; isinstance(p, OrderedDict)
    another branch, silently) and came back as one."""
    import collections

    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3))

    def net(p, x):
        branch = 2.0 if isinstance(p, collections.OrderedDict) else 1.0
        return branch * np.sum(np.tanh(x @ p.W if hasattr(p, "W") and p.W is not None
                                       else x @ p["W"]) ** 2)

    for cls in (AttrDict, DotDict, collections.OrderedDict):
        p = cls(W=rng.standard_normal((3, 2)))
        value, grads = gradc.value_and_grad(net)(p, x)
        assert value == pytest.approx(net(p, x), rel=1e-12) and type(grads) is cls
        assert gradc.jit(net)(p, x) == pytest.approx(net(p, x), rel=1e-12)
        out = gradc.jit(lambda p: cls(y=p["W"] * 2, n=p["W"].sum()))(p)
        assert type(out) is cls and np.allclose(out["y"], 2 * p["W"])
    with pytest.raises(gradc.SignatureError, match=r"a NeedsArguments \(a subclass of dict\) "
                                                   r"cannot be rebuilt.*pass dict\(x\)"):
        gradc.jit(lambda p: p["W"] * 2)(NeedsArguments({"W": x}, []))


def test_sequence_subclasses_and_buffers_are_refused_by_name():
    """A list or tuple subclass (not a namedtuple) came back rebuilt from gradc's own leaf
    markers (('*', '*')); an array.array was compiled in by identity (a change in place
    ignored); a writable memoryview was a bare ValueError."""
    import array

    class Layers(list):
        pass

    W = np.arange(3.0)
    with pytest.raises(gradc.SignatureError, match=r"a Layers \(a subclass of list\)"):
        gradc.jit(lambda l: l[0] * 2)(Layers([W]))
    with pytest.raises(gradc.SignatureError, match="subclass of list"):
        gradc.jit(lambda w: Layers([w * 2]))(W)
    for buffer, name in ((array.array("d", [1.0, 2.0]), "array.array"),
                         (memoryview(bytearray(8)), "memoryview")):
        with pytest.raises(gradc.SignatureError, match=rf"cannot pass a `{name}`"):
            gradc.jit(lambda b, w: w * 2)(buffer, W)
