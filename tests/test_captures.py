"""Arrays a compiled function reads from outside its arguments (gradc/capture.py): a method's
`self.W`, a global, a closure's, a dict of them, and views of them (`self.W.T`) are read as they
are on every call, as NumPy reads them: updated in place or assigned anew, the next call sees
them; another shape traces again. Numbers and flags read so are guarded (another value traces
again); a traced value stored outside is refused and undone. `gradc compile` compiles them in
and says so."""
import copy
import collections
import enum
import collections.abc
import dataclasses
import functools
import threading
import operator
import re
import types
import weakref
import warnings

import numpy as np
import pytest

import gradc
from gradc import aot, capture

from _finite_differences import central_difference
from _threads import errors_in_threads

RNG = np.random.default_rng(7)
X = RNG.standard_normal((4, 3))


class Model:
    def __init__(self):
        self.W = RNG.standard_normal((3, 2))
        self.b = RNG.standard_normal(2)

    def forward(self, x):
        return np.tanh(x @ self.W + self.b)


def test_a_jitted_method_sees_its_weights_updated_in_place_and_assigned():
    model = Model()
    forward = gradc.jit(model.forward)
    for change in (lambda m: m.W.__imul__(2.0),  # in place
                   lambda m: setattr(m, "W", m.W - 0.5),  # a new array of the same shape
                   lambda m: m.b.__setitem__(0, 3.0),
                   lambda m: setattr(m, "b", np.zeros(2))):
        np.testing.assert_allclose(forward(X), model.forward(X), rtol=1e-13)
        change(model)
        np.testing.assert_allclose(forward(X), model.forward(X), rtol=1e-13)  # (the fast path)
        np.testing.assert_allclose(forward(X), model.forward(X), rtol=1e-13)
    assert len(forward.cache) == 1  # read as inputs: nothing compiled again


class Stack:  # layers in a list, their weights three steps below `self`
    def __init__(self):
        self.layers = [Model(), Model()]
        self.layers[1].W = RNG.standard_normal((2, 2))

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x


NESTED = {"l1": {"W": RNG.standard_normal((3, 3))}}  # two steps below a global


def test_weights_in_lists_of_layers_and_nested_dicts_are_read_live():
    stack = Stack()
    forward = gradc.jit(stack.forward)
    nested = gradc.jit(lambda x: np.sum(x @ NESTED["l1"]["W"]))
    for i in range(2):
        np.testing.assert_allclose(forward(X), stack.forward(X), rtol=1e-13)
        np.testing.assert_allclose(nested(X), np.sum(X @ NESTED["l1"]["W"]), rtol=1e-13)
        stack.layers[1].W -= 0.25
        stack.layers[0].b = stack.layers[0].b + 1.0
        NESTED["l1"]["W"] *= 2.0


W_GLOBAL = RNG.standard_normal((3, 3))
TABLE = {"scale": RNG.standard_normal(3)}


def _global_loss(w, x):
    return np.sum((x @ w @ W_GLOBAL.T) ** 2 * TABLE["scale"])


def test_gradients_read_globals_and_their_views_as_they_are_now():
    global W_GLOBAL
    w = RNG.standard_normal((3, 3))
    value_and_grad = gradc.value_and_grad(_global_loss)

    def reference(w):  # d/dw of sum((x w G^T)^2 s) = 2 x^T ((x w G^T) s) G
        y = X @ w @ W_GLOBAL.T
        return np.sum(y ** 2 * TABLE["scale"]), 2 * X.T @ (y * TABLE["scale"]) @ W_GLOBAL

    saved = W_GLOBAL
    try:
        for change in (lambda: W_GLOBAL.__iadd__(1.0), lambda: TABLE["scale"].__imul__(-1),
                       lambda: TABLE.__setitem__("scale", np.ones(3))):
            change()
            value, grad = value_and_grad(w, X)
            want_value, want_grad = reference(w)
            np.testing.assert_allclose(value, want_value, rtol=1e-12)
            np.testing.assert_allclose(grad, want_grad, rtol=1e-12)
        W_GLOBAL = RNG.standard_normal((3, 3))  # the global assigned anew
        np.testing.assert_allclose(value_and_grad(w, X)[1], reference(w)[1], rtol=1e-12)
    finally:
        W_GLOBAL = saved


def test_views_of_outside_arrays_are_read_through_the_array_they_view():
    base = RNG.standard_normal((4, 6))
    views = {
        "transpose": lambda: base.T[:, :3],
        "columns": lambda: base[:, 1:4],
        "strided": lambda: base[1:, ::2].T,
        "row": lambda: base[2, :3],
        "reversed": lambda: base[::-1, 5:2:-1],
        "reshaped": lambda: base.reshape(8, 3)[::2],
        # (a run of a flat vector reshaped, its length not a multiple of the rows': an
        # evolution-strategies MLP's theta[:D * H].reshape(D, H); compiled in before: fuzz41e)
        "run_reshaped": lambda: base.reshape(-1)[1:11].reshape(2, 5),
    }
    for name, view in views.items():
        x = RNG.standard_normal(view().shape)
        f = gradc.jit(lambda x, view=view: np.sum(np.sin(x * view())))
        with warnings.catch_warnings():
            warnings.simplefilter("error", gradc.ConstantArrayWarning)  # (none: all read live)
            np.testing.assert_allclose(f(x), np.sum(np.sin(x * view())), rtol=1e-13, err_msg=name)
        base *= -1.5
        np.testing.assert_allclose(f(x), np.sum(np.sin(x * view())), rtol=1e-13, err_msg=name)


class _KeepsAView:
    def __init__(self, view):
        self.W = RNG.standard_normal((4, 5))
        self.V = view(self.W)


@pytest.mark.parametrize("view, read", [
    (lambda W: W.reshape(-1), lambda V: V[:4]), (lambda W: W[1:], lambda V: V[:2]),
    (lambda W: W.T, lambda V: V[0]), (lambda W: W[:, :2], lambda V: V.T)],
    ids=["flat", "rows", "transpose", "columns"])
def test_a_view_of_a_kept_view_stays_with_its_memory_when_the_weight_is_rebound(view, read):
    """`self.flat = self.W.reshape(-1)` kept, `self.flat[:4]` read: the view was read through
    self.W (found first), so after `self.W = new` it gave the new weights where NumPy's
    self.flat still views the old ones (fuzz41e). The arrays that viewed one memory when traced
    are checked to view it still (Capture.shares): the next call traces again."""
    model = _KeepsAView(view)

    def f(x):
        return np.sum(x * read(model.V)) + np.sum(model.W)

    x = np.linspace(0.5, 1.5, read(model.V).size).reshape(read(model.V).shape)
    jitted = gradc.jit(f)
    for change in (lambda: None, lambda: model.W.__imul__(2.0),
                   lambda: setattr(model, "W", RNG.standard_normal((4, 5)))):
        change()
        assert jitted(x) == pytest.approx(f(x), rel=1e-12)


def test_a_closure_rebound_with_nonlocal_is_seen():
    scale = np.ones(3)

    def set_scale(value):
        nonlocal scale
        scale = value

    f = gradc.jit(lambda x: np.sum(x * scale))
    assert f(X) == pytest.approx(np.sum(X))
    set_scale(np.full(3, 2.0))
    assert f(X) == pytest.approx(2 * np.sum(X))


def test_another_shape_or_dtype_traces_again_and_says_why(capsys, monkeypatch):
    monkeypatch.setenv("GRADC_LOG", "compiles")
    model = Model()
    forward = gradc.jit(model.forward)
    forward(X)
    model.W = RNG.standard_normal((3, 5))
    with pytest.raises(gradc.ShapeError):  # traced again: b is still (2,), as NumPy would say
        forward(X)
    model.b = np.zeros(5, np.float32)
    np.testing.assert_allclose(forward(X), model.forward(X), rtol=1e-6)
    assert "`self.W` was float64[3, 2] when traced, now float64[3, 5]" in capsys.readouterr().err
    model.b = np.zeros(5)
    np.testing.assert_allclose(forward(X), model.forward(X), rtol=1e-13)
    assert "`self.b` was float32[5] when traced, now float64[5]" in capsys.readouterr().err
    del model.W  # gone: traced again, and the model's own AttributeError says so
    with pytest.raises(AttributeError):
        forward(X)


def test_a_train_step_reads_outside_arrays_and_one_that_is_its_parameter():
    target = RNG.standard_normal((4, 2))
    params = {"W": RNG.standard_normal((3, 2))}
    shared = params["W"]  # the loss also reads the parameter's own array from outside

    def loss(p, x):
        return np.mean((x @ p["W"] - target) ** 2) + 0.1 * np.sum(p["W"] * shared)

    def reference_step(w, lr=0.1):
        r = X @ w - target
        return w - lr * (2 * X.T @ r / r.size + 0.1 * w)  # (shared: a constant, w before the step)

    step = gradc.train_step(loss, gradc.optim.SGD(lr=0.1))
    for i in range(3):
        want = reference_step(params["W"].copy())
        step(params, X)
        np.testing.assert_allclose(params["W"], want, rtol=1e-12, err_msg=f"step {i}")
        if i == 1:
            target = target + 1.0  # (the global read anew: a new array of the same shape)


def test_grad_inside_another_trace_reads_the_outer_functions_outside_arrays():
    model = Model()
    inner = gradc.grad(lambda x: np.sum(model.forward(x)))
    outer = gradc.jit(lambda x: inner(x) * 2.0)

    def reference():
        return 2 * (1 - np.tanh(X @ model.W + model.b) ** 2) @ model.W.T

    np.testing.assert_allclose(outer(X), reference(), rtol=1e-12)
    model.W *= 3.0
    np.testing.assert_allclose(outer(X), reference(), rtol=1e-12)


def test_integer_tables_and_broadcast_views_stay_constants_and_are_named():
    picks = np.array([2, 0, 1])  # an index table: a constant, as in JAX, without a warning
    bias = np.arange(3.0)
    f = gradc.jit(lambda x: np.sum(x[:, picks] + np.broadcast_to(bias, (4, 3))))
    with pytest.warns(gradc.ConstantArrayWarning, match=r"`a view of bias` float64\[4, 3\]"):
        assert f(X) == pytest.approx(np.sum(X[:, picks] + bias))


PICKS = np.array([0, 1])
KEEP = np.array([True, False, True])


def test_integer_tables_and_masks_changed_in_place_trace_again():
    """An index table or mask read from outside the arguments is compiled in (it may decide
    shapes): its contents are checked on every call, so a change traces again. x[PICKS] after
    PICKS[0] = 2 gathered the old rows."""
    class Rows:
        order = np.array([1, 0, 2])

        def __call__(self, x):
            return x[self.order] * np.where(KEEP, 1.0, -1.0) + x[:, PICKS].sum()

    rows, x = Rows(), np.arange(9.0).reshape(3, 3)
    f = gradc.jit(rows)
    g = gradc.grad(lambda x: np.sum(rows(x) ** 2))

    def reference(x):
        return x[rows.order] * np.where(KEEP, 1.0, -1.0) + x[:, PICKS].sum()

    for change in (lambda: None, lambda: PICKS.__setitem__(0, 2),
                   lambda: KEEP.__setitem__(1, True), lambda: rows.order.__setitem__(0, 2)):
        change()
        np.testing.assert_array_equal(f(x), reference(x))
        eps, d = 1e-6, np.random.default_rng(0).standard_normal(x.shape)
        numeric = (np.sum(reference(x + eps * d) ** 2) - np.sum(reference(x - eps * d) ** 2)) / (
            2 * eps)
        assert np.sum(g(x) * d) == pytest.approx(numeric, rel=1e-6)
    PICKS[0], KEEP[1] = 0, False


def test_gradc_compile_writes_outside_arrays_in_and_warns():
    model = Model()
    with pytest.warns(gradc.ConstantArrayWarning, match=r"`self\.W` float64\[3, 2\]"):
        source = aot.generate(model.forward, (X,), mode="jit")
    assert "CONSTANTS" in source and "self_W" not in source


def test_an_outside_array_returned_as_it_is_is_read_on_every_call():
    model = Model()
    weights = gradc.jit(lambda x: (model.W, np.sum(x)))
    model.W += 1.0
    np.testing.assert_array_equal(weights(X)[0], model.W)
    model.W = -model.W
    np.testing.assert_array_equal(weights(X)[0], model.W)


EPS = 1e-3


class Dropoutless:
    """A model whose forward reads a flag, a float and a global, and counts its traces."""

    def __init__(self):
        self.W = RNG.standard_normal((3, 2))
        self.training, self.scale, self.traces, self.note = True, 0.5, 0, "not read"

    def forward(self, x):
        self.traces += 1  # (a counter the trace itself moves: not a change)
        h = x @ self.W
        if self.training:
            h = h * self.scale
        return h + EPS


def test_numbers_and_flags_read_from_outside_trace_again_when_they_change():
    global EPS
    model = Dropoutless()
    forward = gradc.jit(model.forward)

    def check():
        traces = model.traces
        want = Dropoutless.forward(model, X)  # (NumPy; it counts too)
        model.traces = traces
        np.testing.assert_allclose(forward(X), want, rtol=1e-13)
        return model.traces

    assert check() == 1 and check() == 1  # traced once; a repeat reads nothing new
    model.note = "changed"  # not named by the code: no trace
    assert check() == 1
    model.training = False
    assert check() == 2
    model.scale, model.training = 0.25, True
    assert check() == 3
    saved = EPS
    try:
        EPS = 1.0
        assert check() == 4
    finally:
        EPS = saved
    assert len(forward.cache) == 1


def test_a_value_that_keeps_changing_is_named_in_a_recompile_warning():
    model = Dropoutless()
    forward = gradc.jit(model.forward)
    with pytest.warns(gradc.RecompileWarning, match=r"`self\.scale` was .* now .*as an argument"):
        for i in range(10):
            model.scale = float(i)
            forward(X)


def test_numpy_scalars_read_from_outside_are_guarded_too():
    model = Dropoutless()
    model.scale = np.float32(0.5)
    forward = gradc.jit(model.forward)
    np.testing.assert_allclose(forward(X), X @ model.W * 0.5 + EPS, rtol=1e-6)
    model.scale = np.float32(2.0)
    np.testing.assert_allclose(forward(X), X @ model.W * 2.0 + EPS, rtol=1e-6)
    from gradc.capture import same  # (another sign of zero is another value; NaN is NaN)
    assert not same(np.float32(-0.0), np.float32(0.0)) and same(np.nan, np.nan)
    assert not same(1, 1.0) and not same(True, 1) and same(None, None)


class BatchNormEval:
    """Running statistics read partly with NumPy alone (np.sqrt(self.var + eps)), and gradient
    buffers the user's own optimizer writes, which forward never names."""

    def __init__(self, n):
        self.mean, self.var = RNG.standard_normal(n), RNG.random(n) + 0.5
        self.grad_buffer = np.zeros(n)

    def forward(self, x):
        return (x - self.mean) / np.sqrt(self.var + 1e-5)


def test_arrays_read_with_numpy_alone_are_checked_small_and_large(monkeypatch, capsys):
    monkeypatch.setenv("GRADC_LOG", "compiles")
    bn = BatchNormEval(3)
    forward = gradc.jit(bn.forward)
    np.testing.assert_allclose(forward(X), bn.forward(X), rtol=1e-13)
    for _ in range(3):  # not named by forward: no trace
        bn.grad_buffer += 1.0
        np.testing.assert_allclose(forward(X), bn.forward(X), rtol=1e-13)
    assert capsys.readouterr().err.count("compiled jit(forward)") == 1
    bn.var *= 4.0  # compiled in (NumPy computed the sqrt): its contents are checked
    np.testing.assert_allclose(forward(X), bn.forward(X), rtol=1e-13)
    assert "`self.var` (float64[3], compiled in: the trace read it with NumPy alone) changed" in (
        capsys.readouterr().err)
    # a large one too, where tracing with its contents changed made another program
    # (capture.read_by_numpy): it was only named in a warning, and stale
    big = BatchNormEval(capture.CONTENT_GUARD_SIZE + 1)
    x = np.ones(capture.CONTENT_GUARD_SIZE + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        forward = gradc.jit(big.forward)
        np.testing.assert_allclose(forward(x), big.forward(x), rtol=1e-13)
        big.mean -= 1.0  # (read live)
        np.testing.assert_allclose(forward(x), big.forward(x), rtol=1e-13)
        assert capsys.readouterr().err.count("compiled jit(forward)") == 1
        big.var *= 4.0
        np.testing.assert_allclose(forward(x), big.forward(x), rtol=1e-13)
    assert "`self.var` (float64[4097], compiled in" in capsys.readouterr().err


def test_entries_read_by_keys_the_code_builds_or_is_given_are_checked(monkeypatch, capsys):
    """A dict entry read by a key the code formats (`masks[f"m{i}"]`, `"W%d" % i`, `"b" +
    str(i)`) or was called with (`counts[key]`) and computed on with NumPy alone (a mask, a
    normalized table, a scale) was compiled in unchecked: stale after the user's change."""
    monkeypatch.setenv("GRADC_LOG", "compiles")
    tables = {"m1": np.array([1.0, 0.0, 1.0]), "W1": np.arange(1.0, 10.0).reshape(3, 3),
              "W_1": np.ones((3, 3)),
              "b1": np.array(2.0), "gain1": 0.5, "counts": np.arange(1.0, 10.0).reshape(3, 3),
              "unread": np.zeros(3)}

    def forward(x, i, key):
        mask = tables[f"m{i}"] > 0
        W = tables["W%d" % i] + tables["_".join(["W", str(i)])]  # (and "W_1")
        scale = np.sqrt(tables["b" + str(i)]) * tables["gain{}".format(i)]
        P = tables[key] / tables[key].sum(1, keepdims=True)
        return (x * mask) @ (W / np.abs(W).max()) * scale + x @ P

    f = gradc.jit(forward)
    x = X[:, :3]
    for change in (lambda: tables["m1"].__setitem__(1, 1.0), lambda: tables["W1"].__imul__(-1),
                   lambda: tables["b1"].__iadd__(2.0), lambda: tables.__setitem__("gain1", 2.0),
                   lambda: tables["counts"].__setitem__((0, 0), 50.0),
                   lambda: tables["W_1"].__imul__(3.0)):
        np.testing.assert_allclose(f(x, 1, "counts"), forward(x, 1, "counts"), rtol=1e-13)
        change()
    np.testing.assert_allclose(f(x, 1, "counts"), forward(x, 1, "counts"), rtol=1e-13)
    compiles = capsys.readouterr().err.count("compiled jit(forward)")
    tables["unread"] += 1.0  # (no key the code builds or is given names it: no trace)
    np.testing.assert_allclose(f(x, 1, "counts"), forward(x, 1, "counts"), rtol=1e-13)
    # (a changed entry is read live by the traces after: gradc/live.py; fewer may trace again)
    assert capsys.readouterr().err.count("compiled jit(forward)") == 0 and 2 <= compiles <= 7

    class Pruned:  # (the keys kept on the model: `for n in self.names`)
        names = ["enc", "dec"]
        masks = {"enc": np.array([1.0, 0.0, 1.0]), "dec": np.array([0.0, 1.0, 1.0])}

        def forward(self, x):
            return sum((x * (self.masks[n] > 0)).sum() for n in self.names)

    model = Pruned()
    f = gradc.jit(model.forward)
    for bit in (1.0, 0.0, 1.0):
        np.testing.assert_allclose(f(x[0]), model.forward(x[0]), rtol=1e-13)
        model.masks["enc"][1] = bit


class RunningMean:
    def __init__(self):
        self.mean, self.history = np.zeros(2), []

    def forward(self, x):
        h = x @ np.ones((3, 2))
        self.mean = 0.9 * self.mean + 0.1 * h.mean(0)  # NumPy-style state update
        return h - self.mean


def test_a_traced_value_assigned_outside_is_written_there_after_each_call():
    """`self.mean = 0.9 * self.mean + ...`, `self.layer_input = X` (ML-From-Scratch's layers
    keep their input for a hand-written backward), a global, a nonlocal: the compiled function
    computes the value and writes it there after each call, a new array, as NumPy's code
    assigns one (each was refused and undone)."""
    model, reference = RunningMean(), RunningMean()
    forward = gradc.jit(model.forward)
    for scale in (1.0, 2.0, -1.0):
        np.testing.assert_allclose(forward(X * scale), reference.forward(X * scale), rtol=1e-14)
        np.testing.assert_allclose(model.mean, reference.mean, rtol=1e-14)
        assert type(model.mean) is np.ndarray
    kept = model.mean
    forward(X)
    assert kept is not model.mean  # (a new array each call: one held before keeps its values)

    class Dense:
        def __init__(self):
            self.W = np.eye(3) * 0.5

        def forward(self, x):
            self.layer_input = x
            self.loss = np.sum((x @ self.W) ** 2)
            return self.loss

    layer = Dense()
    value, grad = gradc.value_and_grad(layer.forward)(X)
    np.testing.assert_array_equal(layer.layer_input, X)
    assert type(layer.loss) is np.float64 and layer.loss == value
    np.testing.assert_allclose(grad, X @ layer.W @ layer.W.T * 2, rtol=1e-14)


def test_what_the_function_was_given_or_updates_in_place_is_bound_as_numpys_code_binds_it():
    """fuzz44a, teaching code: `net.params = params` (DLFS's TwoLayerNet: its predict reads
    self.params) crashed inside gradc; `layer.weight = W` (makemore's layer classes, D2L's
    `global W, b`) bound a copy, so the author's `W -= lr * g` after the call never reached the
    model; a lazily made optimizer state (`self.v = {}` then its entries, DLFS's Momentum)
    left traced values in the user's dict; `self.params["W"] -= lr * g` (DLFS's SGD) bound the
    entry to a new array, so the layer holding the same array (`self.W`) kept the old one."""
    class Net:
        def __init__(self):
            self.params = {"W": np.eye(3)}
            self.W = self.params["W"]  # (the layer's reference to the same array)
            self.v = None

        def predict(self, x):
            return x @ self.params["W"]

        def sgd_step(self, x):
            g = x.T @ (x @ self.W - 1.0)
            self.params["W"] -= 0.1 * g  # (in place: self.W sees it, as in NumPy)
            return np.sum((x @ self.W - 1.0) ** 2)

        def momentum_step(self, x):
            if self.v is None:
                self.v = {}
                self.v["W"] = np.zeros_like(self.params["W"])
            self.v["W"] = 0.9 * self.v["W"] - 0.1 * (x.T @ (x @ self.params["W"]))
            return np.sum(self.v["W"])

    net, reference = Net(), Net()

    def loss(params, x):
        net.params = params
        return np.sum(net.predict(x) ** 2)

    params = {"W": np.eye(3) * 2, "scale": 1.0}  # (a Python float: traced, the dict copied)
    value, grads = gradc.value_and_grad(loss)(params, X[:, :3])
    assert net.params is params and value == loss(params, X[:, :3])
    np.testing.assert_allclose(grads["W"], 2 * X[:, :3].T @ (X[:, :3] @ params["W"]))
    net = Net()
    step, momentum = gradc.jit(net.sgd_step), gradc.jit(net.momentum_step)
    for _ in range(3):
        assert step(X[:, :3]) == pytest.approx(reference.sgd_step(X[:, :3]), rel=1e-13)
        assert net.params["W"] is net.W
        np.testing.assert_allclose(net.W, reference.W, rtol=1e-13)
        assert momentum(X[:, :3]) == pytest.approx(reference.momentum_step(X[:, :3]), rel=1e-13)
        assert type(net.v) is dict and type(net.v["W"]) is np.ndarray

    class Layer:
        weight = None

        def __call__(self, x):
            return x @ self.weight

    layer = Layer()

    def layer_loss(W, x):
        layer.weight = W
        return np.sum(layer(x) ** 2)

    W = np.eye(3)
    for _ in range(2):
        g = gradc.grad(layer_loss)(W, X[:, :3])
        W -= 0.01 * g  # (the author's update, after the call)
        assert layer.weight is W


def test_a_value_the_function_stores_and_reads_back_does_not_trace_again_each_call(monkeypatch,
                                                                                    capsys):
    """DLFS's SoftmaxWithLoss: `self.loss = None` in __init__, `self.loss = ...; return
    self.loss` in forward. The number written back after each call was checked as a read
    value: every call traced again (9 ms, not 0.02) and warned to pass `self.loss`."""
    monkeypatch.setenv("GRADC_LOG", "compiles")

    class SoftmaxWithLoss:
        def __init__(self):
            self.loss = None

        def forward(self, x):
            self.loss = np.log(np.sum(np.exp(x)))
            return self.loss

    layer = SoftmaxWithLoss()
    forward = gradc.jit(layer.forward)
    for scale in np.linspace(0.5, 2.0, 10):
        assert forward(X * scale) == pytest.approx(np.log(np.sum(np.exp(X * scale))), rel=1e-13)
        assert layer.loss == pytest.approx(np.log(np.sum(np.exp(X * scale))), rel=1e-13)
    assert capsys.readouterr().err.count("compiled jit(forward)") <= 3

    class Smoothed(SoftmaxWithLoss):  # (the old value read, compiled in: checked still)
        def forward(self, x):
            self.loss = np.log(np.sum(np.exp(x))) + (0.0 if self.loss is None else self.loss)
            return self.loss

    layer = Smoothed()
    forward = gradc.jit(layer.forward)
    total = 0.0
    for scale in (0.5, 1.0, 2.0):
        total += np.log(np.sum(np.exp(X * scale)))
        assert forward(X * scale) == pytest.approx(total, rel=1e-13)


def test_a_mask_the_function_makes_and_reads_back_is_not_warned_about():
    """DLFS's Relu, `self.mask = (x <= 0); out[self.mask] = 0`, after a NumPy call left a mask
    of over 4096 elements there: a ConstantArrayWarning said that mask was compiled in and a
    later change would not be seen, though the code reads only the one it makes."""
    class Relu:
        def __init__(self):
            self.mask = None

        def forward(self, x):
            self.mask = (x <= 0)
            out = x.copy()
            out[self.mask] = 0
            return out

    relu, x = Relu(), RNG.standard_normal((70, 70))
    relu.forward(x)  # (NumPy's call: a mask of 4900 elements there)
    with warnings.catch_warnings():
        warnings.simplefilter("error", gradc.ConstantArrayWarning)
        forward = gradc.jit(relu.forward)
        for _ in range(2):
            x = RNG.standard_normal((70, 70))
            np.testing.assert_array_equal(forward(x), np.maximum(x, 0))
            np.testing.assert_array_equal(relu.mask, x <= 0)


def test_helpers_defaults_and_containers_replaced_between_calls_are_followed():
    """fuzz44b: layers as lambdas binding their weights by a default argument (`lambda h, W=W:
    ...`, the loop-capture idiom) read the first call's weights, stale after `W -= lr * g`; a
    write-back went into the dict seen when traced, so a metrics dict replaced each epoch
    (`m.stats = {}`) stayed empty."""
    weights = [np.eye(2), np.eye(2) * 2]
    layers = [lambda h, W=W: np.tanh(h @ W) for W in weights]

    def forward(x):
        for layer in layers:
            x = layer(x)
        return x

    f, x = gradc.jit(forward), np.ones((1, 2))
    f(x)
    for W in weights:
        W -= 0.3
    np.testing.assert_allclose(f(x), forward(x), rtol=1e-13)

    class Model:
        def __init__(self):
            self.W = np.eye(2) * 0.5
            self.stats = {}

        def forward(self, x):
            h = np.tanh(x @ self.W)
            self.stats["h_mean"] = h.mean()
            return h

    model = Model()
    forward = gradc.jit(model.forward)
    forward(x)
    model.stats = {}  # (a new epoch's metrics)
    forward(2 * x)
    assert model.stats["h_mean"] == pytest.approx(np.tanh(2 * x @ model.W).mean(), rel=1e-13)


def test_a_cache_tuple_written_back_holds_the_objects_numpys_holds():
    """fuzz44b: cs231n's `self.cache = (x, self.W, h)` was written back with copies of x and
    self.W (an update of W in place never showed through the cache) and `(h, h)` as two arrays;
    an object of traced values (`SimpleNamespace(h=h)`) was left holding placeholders; an
    np.load'ed .npz in a closure crashed the walk (its BagObj raises on `__class__`)."""
    import io
    import types

    class Affine:
        def __init__(self):
            self.W = np.eye(2) * 0.5

        def forward(self, x):
            h = x @ self.W
            self.cache = (x, self.W, h, h)
            return h

        def record(self, x):
            h = x @ self.W
            self.cache = types.SimpleNamespace(x=x, h=h)
            return h

    layer, x = Affine(), np.ones((1, 2))
    gradc.jit(layer.forward)(x)
    assert layer.cache[0] is x and layer.cache[1] is layer.W and layer.cache[2] is layer.cache[3]
    np.testing.assert_array_equal(layer.cache[2], x @ layer.W)
    with pytest.raises(gradc.UnsupportedOpError, match=r"`self\.cache`"):
        gradc.jit(layer.record)(x)
    assert not hasattr(layer.cache, "h")  # (undone)

    def load():
        buffer = io.BytesIO()
        np.savez(buffer, W=np.eye(2))
        buffer.seek(0)
        checkpoint = np.load(buffer)
        return lambda x: np.tanh(x @ checkpoint["W"])

    predict = load()
    np.testing.assert_allclose(gradc.jit(predict)(x), predict(x))


def test_what_an_in_place_update_cannot_show_is_refused_and_the_rest_follows_it():
    """fuzz44d, on this session's in-place write-backs: a NumPy read after the update (`np.
    subtract(W, x, out=W); W.sum()`, a zero buffer `np.tanh(x, out=self.buf); self.buf + 1`)
    saw the values before it, silently; so did the argument that is the same array; a vjp's
    pullback wrote the update a second time; `self.cache = (x, self.W)` after `self.W -= g`
    held a copy; closure cells that answer no attribute (a dead weakref.proxy) crashed the
    walk."""
    import weakref

    W = np.ones((2, 2))

    def subtract_then_sum(x):
        np.subtract(W, x, out=W)
        return W.sum()

    class Layer:
        def __init__(self):
            self.buf, self.W = np.zeros(3), np.ones(3)

        def forward(self, x):
            np.tanh(x, out=self.buf)
            return self.buf + 1.0

        def step(self, x):
            self.W -= 0.1 * x
            self.cache = (x, self.W)
            return x.sum()

    layer, x = Layer(), np.full((2, 2), 0.5)
    for f, args in ((subtract_then_sum, (x,)), (layer.forward, (x[0].repeat(2)[:3],)),
                    (lambda x, V: (W.__isub__(x), V.sum())[1], (x, W))):
        with pytest.raises(gradc.UnsupportedOpError, match="in place with a traced value"):
            gradc.jit(f)(*args)
    np.testing.assert_array_equal(W, np.ones((2, 2)))
    gradc.jit(layer.step)(np.ones(3))
    assert layer.cache[1] is layer.W and np.allclose(layer.W, 0.9)

    class Model:
        pass

    model = Model()
    model.W = np.zeros(2)

    def updates(v):
        model.W -= 0.1 * v
        return np.tanh(v)

    out, pullback = gradc.vjp(updates, np.ones(2))
    pullback(np.ones(2))
    np.testing.assert_allclose(model.W, -0.1)  # (once, as NumPy's one call)

    class Gone:
        pass

    def closing_over_a_dead_proxy():
        proxy = weakref.proxy(Gone())
        return lambda x: np.tanh(x) if proxy is not None else x

    np.testing.assert_allclose(gradc.jit(closing_over_a_dead_proxy())(x), np.tanh(x))


def test_written_back_values_keep_numpys_identities_and_their_reads():
    """fuzz44e: `self.prev = self.rm` during the trace that reads rm live left a gradc Live view
    on the model; `self.cache = self.out = np.tanh(x)` wrote two arrays; an EMA of a Python
    float, `self.smooth = 0.9 * self.smooth + 0.1 * loss`, stopped tracing again once 0.0 and
    np.float64(0.0) made the same program, and then kept that constant (stale); a vjp of a
    function that keeps its activation (`self.cache = h`) raised CaptureChanged."""
    class Layer:
        def __init__(self):
            self.rm, self.prev, self.smooth = np.zeros(3), None, 0.0

        def forward(self, x):
            self.prev = self.rm
            self.rm = 0.9 * self.rm + 0.1 * x.mean(0)
            self.cache = self.out = np.tanh(x)
            loss = (x ** 2).mean()
            self.smooth = 0.9 * self.smooth + 0.1 * loss
            return loss

    layer, reference = Layer(), Layer()
    forward = gradc.jit(layer.forward)
    for i in range(4):
        x = np.full((2, 3), float(i))
        old = layer.rm
        assert forward(x) == reference.forward(x)
        assert type(layer.prev) is np.ndarray and layer.prev is old
        assert layer.cache is layer.out
        assert layer.smooth == pytest.approx(reference.smooth, rel=1e-14)
    out, pullback = gradc.vjp(layer.forward, np.ones((2, 3)))
    np.testing.assert_allclose(pullback(np.float64(1.0))[0], np.full((2, 3), 2 / 6))


@pytest.mark.parametrize("cached", [False, True])
def test_outside_arrays_assigned_elsewhere_outside_are_bound_on_every_call(cached, monkeypatch,
                                                                           capsys):
    """`self.prev = self.rm` (rm rebound each call), `self.cache = (x, self.rm, self.W)`: the
    trace's binding was that of its own call, so once the function stopped tracing again,
    `self.prev` held one old array on every later call (and the cache one old rm). Each call
    binds the arrays those paths hold when it starts, as NumPy's code does."""
    class Layer:
        def __init__(self):
            self.rm, self.prev, self.W = np.zeros(3), None, np.eye(3)

        def forward(self, x):
            self.prev = self.rm
            if cached:
                self.cache = (x, self.rm, self.W, {"rm": self.rm})
            self.rm = 0.9 * self.rm + 0.1 * x.mean(0)
            return np.sum(x @ self.W)

    monkeypatch.setenv("GRADC_LOG", "compiles")
    layer, reference = Layer(), Layer()
    forward = gradc.jit(layer.forward)
    for i in range(8):
        x = np.full((2, 3), i + 1.0)
        old_rm, old_W = layer.rm, layer.W
        assert forward(x) == reference.forward(x)
        assert layer.prev is old_rm
        if cached:
            assert layer.cache[1] is old_rm and layer.cache[3]["rm"] is old_rm
            assert layer.cache[2] is old_W
            np.testing.assert_array_equal(layer.cache[0], x)
        np.testing.assert_allclose(layer.rm, reference.rm, rtol=1e-14)
        if i == 4:
            layer.W = reference.W = 2 * np.eye(3)
    assert capsys.readouterr().err.count("compiled jit(forward)") <= 4


def test_an_outside_array_appended_to_a_list_outside_is_refused_by_name():
    """`self.hist.append(self.W)`: appended once, by the trace (NumPy's code appends on every
    call: the list stayed one long). Refused, naming the entry, undone."""
    class Model:
        def __init__(self):
            self.W, self.hist = np.ones(3), []

        def f(self, x):
            self.hist.append(self.W)
            return np.sum(x * self.W)

    model = Model()
    with pytest.raises(gradc.GradcError, match=r"`self\.hist\[0\]` \(an array from outside, put "
                                               r"there once"):
        gradc.jit(model.f)(np.ones(3))
    assert model.hist == []


def test_numpy_writes_beside_traced_in_place_updates_are_refused_and_state_follows_the_user():
    """fuzz44e: `self.v *= 0.9; self.v += g` of a v of zeros (the walk's copy saw no change:
    0.9 times 0 is 0) compiled only the traced `+= g` (momentum that never decays; an
    accumulator reset by `buf[...] = 0` that never reset); `np.add(self.v, g, out=self.v);
    self.W -= 0.1 * self.v` never updated W. A list of state the user replaced between calls
    (`opt.v = [np.zeros(2)]`) was written into the old list; `log["rm"] = self.rm` and
    copy.deepcopy(self.rm) during a trace that reads rm live kept a gradc Live view."""
    import copy

    class Momentum:
        def __init__(self):
            self.v, self.W = np.zeros(2), np.ones(2)

        def decay(self, g):
            self.v *= 0.9
            self.v += g
            return self.v.sum()

        def chained(self, g):
            np.add(self.v, g, out=self.v)
            self.W -= 0.1 * self.v
            return g.sum()

    line = Momentum.decay.__code__.co_firstlineno + 1  # (fuzz46d: the line is named)
    with pytest.raises(gradc.UnsupportedOpError, match=rf"`self\.v` \(at test_captures\.py:"
                                                       rf"{line}\) in place with NumPy alone"):
        gradc.jit(Momentum().decay)(np.ones(2))
    with pytest.raises(gradc.UnsupportedOpError, match="in place with NumPy alone"):
        gradc.jit(Momentum().chained)(np.ones(2))

    class ListState:
        def __init__(self):
            self.v = [np.zeros(2)]

        def step(self, g):
            self.v[0] = 0.9 * self.v[0] + g
            return self.v[0].sum()

    opt, reference = ListState(), ListState()
    step = gradc.jit(opt.step)
    for call in range(3):
        if call == 2:
            opt.v, reference.v = [np.zeros(2)], [np.zeros(2)]  # (a reset)
        assert step(np.ones(2)) == reference.step(np.ones(2))
        np.testing.assert_allclose(opt.v[0], reference.v[0], rtol=1e-14)

    class Logged:
        def __init__(self):
            self.rm, self.log = np.zeros(3), {}

        def forward(self, x):
            self.log["rm"] = self.rm
            self.best = copy.deepcopy(self.rm)
            self.rm = 0.9 * self.rm + 0.1 * x.mean(0)
            return x.sum()

    logged = Logged()
    forward = gradc.jit(logged.forward)
    for i in range(3):
        old = logged.rm
        forward(np.full((2, 3), float(i)))
        assert type(logged.log["rm"]) is np.ndarray and logged.log["rm"] is old
        assert type(logged.best) is np.ndarray


def test_a_traced_value_stored_in_slots_or_on_a_class_is_refused_and_undone():
    """fuzz44e: `self.rm = ...` of an object with __slots__, `Shared.rm = ...` of a class: not
    undone (the walk held __dict__s only): the internal _Placeholder, a tracer left there."""
    class Shared:
        rm = np.zeros(3)

        def forward(self, x):
            Shared.rm = 0.9 * Shared.rm + 0.1 * x.mean(0)
            return x.sum()

    class Slotted:
        __slots__ = ("rm",)

        def __init__(self):
            self.rm = np.zeros(3)

        def forward(self, x):
            self.rm = 0.9 * self.rm + 0.1 * x.mean(0)
            return x.sum()

    for model, where in ((Shared(), "Shared.rm"), (Slotted(), "self.rm")):
        with pytest.raises(gradc.UnsupportedOpError, match=rf"`{where}`"):
            gradc.jit(model.forward)(np.ones((2, 3)))
        assert type(model.rm) is np.ndarray and not model.rm.any()

    class Lazy:  # (stop 47: a slot empty before the trace kept the placeholder, not refused)
        __slots__ = ("h", "W")

        def __init__(self):
            self.W = np.ones((3, 2))

        def forward(self, x):
            self.h = np.tanh(x @ self.W)
            return self.h.sum()

    model = Lazy()
    with pytest.raises(gradc.UnsupportedOpError, match=r"`self\.h`"):
        gradc.jit(model.forward)(np.ones((2, 3)))
    assert not hasattr(model, "h")


def test_a_traced_value_appended_outside_or_stored_by_a_train_step_is_refused_and_undone():
    model = RunningMean()
    # (named with the line that computed the value: the store itself runs no traced operation)
    line = RunningMean.forward.__code__.co_firstlineno + 2
    step = gradc.train_step(lambda p, x: np.sum(model.forward(x @ p["W"]) ** 2),
                            gradc.optim.SGD(lr=0.1))
    with pytest.raises(gradc.UnsupportedOpError,
                       match=r"stored traced values outside its arguments \(`model\.mean` "
                             rf"\(a value computed at test_captures\.py:{line}\)\)"):
        step({"W": np.eye(3)}, X)
    assert type(model.mean) is np.ndarray and not model.mean.any()  # (as it was)
    log = []

    def logged(x):
        loss = np.sum(x ** 2)
        log.append(loss)
        return loss

    with pytest.raises(gradc.UnsupportedOpError, match=r"`log\[0\]`.*has_aux=True"):
        gradc.grad(logged)(X)
    assert log == []


class Toggle:
    training = True  # (a class attribute, set on the object by eval())
    scale = 2.0

    def __init__(self):
        self.W = RNG.standard_normal((3, 2))
        self.act = np.tanh
        self.extra = [RNG.standard_normal(2)]

    def eval(self):
        self.training = False

    def forward(self, x):
        h = self.act(x @ self.W) * self.scale
        for e in self.extra:  # (unrolled: the list's length is checked)
            h = h + e
        return h * 0.5 if self.training else h


def test_class_attributes_functions_and_list_lengths_are_checked(monkeypatch, capsys):
    monkeypatch.setenv("GRADC_LOG", "compiles")
    model = Toggle()
    forward = gradc.jit(model.forward)
    changes = [model.eval, lambda: setattr(Toggle, "scale", 3.0),
               lambda: setattr(model, "act", np.sin), lambda: model.extra.append(np.ones(2))]
    try:
        for change in changes:
            np.testing.assert_allclose(forward(X), model.forward(X), rtol=1e-13)
            change()
        np.testing.assert_allclose(forward(X), model.forward(X), rtol=1e-13)
    finally:
        Toggle.scale = 2.0
    assert capsys.readouterr().err.count("compiled jit(forward)") == 5


def test_containers_a_loop_walks_are_checked_wherever_the_function_holds_them():
    """`for W in layers` over a list (or dict) held in a closure's cell, a default argument or
    a partial's positional argument: a layer added between calls traces again (the length
    check was kept only for a container named by a key or attribute: a closure's list kept
    the program of one layer, silently)."""
    def make(layers):
        def forward(x):
            for w in layers:
                x = np.tanh(x @ w)
            return np.sum(x)
        return forward

    def with_default(x, layers=[np.eye(2) * 0.5]):  # noqa: B006 - (the case itself)
        for w in layers:
            x = np.tanh(x @ w)
        return np.sum(x)

    def walks_dict(cfg, x):
        return sum(np.sum(x * cfg[k]) for k in cfg)

    closure_list = [np.eye(2) * 0.5]
    cfg = {"a": np.ones(2)}
    cases = [(make(closure_list), closure_list.append),
             (with_default, with_default.__defaults__[0].append),
             (functools.partial(walks_dict, cfg), lambda w: cfg.__setitem__("b", w[0]))]
    x = X[:, :2]
    for f, grow in cases:
        compiled = gradc.jit(f)
        np.testing.assert_allclose(compiled(x), f(x), rtol=1e-13)
        grow(np.full((2, 2), 2.0))
        np.testing.assert_allclose(compiled(x), f(x), rtol=1e-13)


def test_switching_a_flag_back_and_forth_compiles_each_variant_once(monkeypatch, capsys):
    monkeypatch.setenv("GRADC_LOG", "compiles")
    model = Toggle()
    forward = gradc.jit(model.forward)
    for _ in range(4):
        model.training = True
        np.testing.assert_allclose(forward(X), model.forward(X), rtol=1e-13)
        model.training = False
        np.testing.assert_allclose(forward(X), model.forward(X), rtol=1e-13)
    assert capsys.readouterr().err.count("compiled jit(forward)") == 2


def make_loss():
    W, scale = RNG.standard_normal((3, 2)), 2.0

    def helper(x):  # (a helper's closure: read through its cells)
        return x @ W * scale

    def loss(x, bias=np.ones(2)):
        return np.sum(helper(x) + bias)

    def set_values(new_W, new_scale):
        nonlocal W, scale
        W, scale = new_W, new_scale

    return loss, set_values, lambda: (W, scale)


def test_helper_closures_defaults_and_partials_are_read_live():
    loss, set_values, current = make_loss()
    f = gradc.jit(loss)

    def want():
        W, scale = current()
        return np.sum(X @ W * scale + loss.__defaults__[0])

    assert f(X) == pytest.approx(want())
    set_values(RNG.standard_normal((3, 2)), 5.0)
    loss.__defaults__[0][:] = 3.0  # (the default array, in place)
    assert f(X) == pytest.approx(want())
    W = RNG.standard_normal((3, 2))
    partial = gradc.jit(functools.partial(lambda W, x: np.sum(x @ W), W))
    assert partial(X) == pytest.approx(np.sum(X @ W))
    W *= 2.0
    assert partial(X) == pytest.approx(np.sum(X @ W))


def test_module_attributes_and_slots_are_read_live(tmp_path, monkeypatch):
    (tmp_path / "weights_module.py").write_text("import numpy as np\nW = np.ones((3, 2))\n"
                                                "EPS = 0.5\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import weights_module

    class Slotted:
        __slots__ = ("W",)

        def __init__(self):
            self.W = np.full((2, 2), 2.0)

    slotted = Slotted()
    f = gradc.jit(lambda x: np.sum(x @ weights_module.W @ slotted.W) + weights_module.EPS)
    want = lambda: np.sum(X @ weights_module.W @ slotted.W) + weights_module.EPS  # noqa: E731
    assert f(X) == pytest.approx(want())
    weights_module.W *= 3.0
    weights_module.EPS = 7.0
    slotted.W = np.eye(2)
    assert f(X) == pytest.approx(want())


def test_under_another_profiler_a_methods_self_is_read_live():
    import cProfile
    model = Model()
    forward = gradc.jit(model.forward)
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        forward(X)
        model.W *= 4.0
        got = forward(X)
    finally:
        profiler.disable()
    np.testing.assert_allclose(got, model.forward(X), rtol=1e-13)


class Decorated:
    def __init__(self, scale):
        self.W = RNG.standard_normal((3, 2)) * scale

    @gradc.jit
    def forward(self, x):
        return np.tanh(x @ self.W)


def test_jit_in_a_class_body_binds_like_a_method():
    a, b = Decorated(1.0), Decorated(2.0)
    np.testing.assert_allclose(a.forward(X), np.tanh(X @ a.W), rtol=1e-13)
    np.testing.assert_allclose(b.forward(X), np.tanh(X @ b.W), rtol=1e-13)
    a.W += 1.0
    np.testing.assert_allclose(a.forward(X), np.tanh(X @ a.W), rtol=1e-13)
    assert Decorated.forward(b, X).shape == (4, 2)


def _record(acts, h):
    acts.append(h)


def test_containers_the_function_fills_itself_are_not_outside_state():
    W = RNG.standard_normal((3, 3))

    def activations(x):  # a local list filled by a helper, a memo dict, an object made inside
        acts, memo = [], {}
        h = x
        for _ in range(2):
            h = np.tanh(h @ W)
            _record(acts, h)
            memo[len(memo)] = h
        return acts, memo[1]

    (a0, a1), last = gradc.jit(activations)(X)
    np.testing.assert_allclose(a1, np.tanh(np.tanh(X @ W) @ W), rtol=1e-13)
    np.testing.assert_allclose(last, a1, rtol=1e-13)


class Logger:
    def __init__(self):
        self.W = RNG.standard_normal((3, 2))
        self.loss, self.log, self.mean = 0.0, {}, 0.0  # (the loop's; names the code also uses)
        self.act = self.relu

    def relu(self, h):
        return np.maximum(h, 0.0)

    def tanh(self, h):
        return np.tanh(h)

    def forward(self, x):
        h = np.log1p(np.exp(x @ self.W))
        out = {"loss": h.mean(), "h": self.act(h)}
        return out["loss"] + np.sum(out["h"]) + np.log(2.0)


def test_what_a_training_loop_keeps_on_the_model_does_not_trace_again(monkeypatch, capsys):
    monkeypatch.setenv("GRADC_LOG", "compiles")
    model = Logger()
    forward = gradc.jit(model.forward)
    for step in range(3):
        assert forward(X) == pytest.approx(model.forward(X), rel=1e-12)
        model.loss, model.mean = float(step), float(step)  # (attributes the code never reads)
        model.log[step] = step
    assert capsys.readouterr().err.count("compiled jit(forward)") == 1
    model.act = model.tanh  # a bound method swapped: checked
    assert forward(X) == pytest.approx(model.forward(X), rel=1e-12)


def test_a_jitted_method_called_inside_another_trace_reads_its_object_live():
    model = Model()
    inner = gradc.jit(model.forward)
    outer = gradc.jit(lambda x: np.sum(inner(x) ** 2))
    assert outer(X) == pytest.approx(np.sum(model.forward(X) ** 2), rel=1e-12)
    model.W *= 3.0
    assert outer(X) == pytest.approx(np.sum(model.forward(X) ** 2), rel=1e-12)


BUFFER = [RNG.standard_normal(3) for _ in range(4)]


def test_a_list_read_by_index_may_grow_without_tracing_again(monkeypatch, capsys):
    monkeypatch.setenv("GRADC_LOG", "compiles")
    first = gradc.jit(lambda x: x * BUFFER[0])  # (the code neither walks nor measures it)
    for _ in range(3):
        np.testing.assert_allclose(first(X), X * BUFFER[0], rtol=1e-13)
        BUFFER.append(RNG.standard_normal(3))
    assert capsys.readouterr().err.count("compiled jit(<lambda>)") == 1


class Norm:
    def __init__(self):
        self.eps = 1e-5

    def __call__(self, h):
        return h / np.sqrt(np.mean(h * h, axis=-1, keepdims=True) + self.eps)


class Linear:
    def __init__(self, n_in, n_out):
        self.W = RNG.standard_normal((n_in, n_out))


class Block:
    def __init__(self):
        self.attn = type("Attention", (), {})()
        self.attn.qkv = Linear(3, 3)
        self.norm = Norm()


class Gpt:  # weights five steps below self: self.blocks[0].attn.qkv.W
    def __init__(self):
        self.blocks = [Block()]
        self.alpha = np.array([0.5])  # a learned scale read as self.alpha[0]
        self.table = RNG.standard_normal((5, 3))

    def forward(self, x, ids):
        for block in self.blocks:
            x = block.norm(x @ block.attn.qkv.W)
        return x * self.alpha[0] + gradc.nn.embedding(self.table, ids)


def test_a_gpt_layout_sub_layer_numbers_scalar_elements_and_an_outside_table():
    model = Gpt()
    ids = np.array([0, 4, 2, 1])
    forward = gradc.jit(model.forward)

    def want():
        h = X @ model.blocks[0].attn.qkv.W
        h = h / np.sqrt(np.mean(h * h, axis=-1, keepdims=True) + model.blocks[0].norm.eps)
        return h * model.alpha[0] + model.table[ids]

    np.testing.assert_allclose(forward(X, ids), want(), rtol=1e-12)
    model.blocks[0].attn.qkv.W = RNG.standard_normal((3, 3))  # five steps down, rebound
    np.testing.assert_allclose(forward(X, ids), want(), rtol=1e-12)
    model.blocks[0].norm.eps = 10.0  # a number in a sub-layer called as block.norm(h)
    np.testing.assert_allclose(forward(X, ids), want(), rtol=1e-12)
    model.alpha -= 0.25  # its element, compiled in by NumPy: the small array is checked
    model.table *= 2.0  # the embedding's table, read live
    np.testing.assert_allclose(forward(X, ids), want(), rtol=1e-12)


def test_outside_arrays_updated_in_place_with_traced_values_are_written_into_after_each_call(
        monkeypatch, capsys):
    """`running += 0.1 * h.mean(0)` into a default argument's array, nnfs's optimizer
    (`layer.weights += -lr * layer.dweights`), `W = self.W; W -= lr * g`, np.subtract(...,
    out=): NumPy writes into the array itself; the compiled function writes its new value into
    that array after each call, and reads of it later in the call see it (they were refused)."""
    running = np.zeros(2)

    def forward(x, running=running):
        h = x @ np.ones((3, 2))
        running += 0.1 * h.mean(0)  # (NumPy: into the default array, in place)
        return h

    f = gradc.jit(forward)
    for step in range(1, 3):
        f(X)
        np.testing.assert_allclose(running, 0.1 * step * (X @ np.ones((3, 2))).mean(0))

    class Dense:
        def __init__(self):
            self.weights, self.biases = np.ones((3, 2)), np.zeros(2)

    class SGD:
        def update_params(self, layer, dW, db):
            layer.weights += -0.1 * dW
            np.subtract(layer.biases, 0.1 * db, out=layer.biases)

    class Net:
        def __init__(self):
            self.dense, self.optimizer = Dense(), SGD()
            self.kept = self.dense.weights  # (another holder of the same array)

        def step(self, x, y):
            err = x @ self.dense.weights + self.dense.biases - y
            self.optimizer.update_params(self.dense, x.T @ err, err.sum(0))
            W = self.dense.weights
            W -= 0.01 * W  # (through a local name)
            return np.sum(err ** 2) + np.sum(x @ self.kept)

    net, reference = Net(), Net()
    step = gradc.jit(net.step)
    y = np.ones((len(X), 2))
    for _ in range(3):
        assert step(X, y) == pytest.approx(reference.step(X, y), rel=1e-12)
        assert net.kept is net.dense.weights
        np.testing.assert_allclose(net.dense.weights, reference.dense.weights, rtol=1e-12)
        np.testing.assert_allclose(net.dense.biases, reference.dense.biases, rtol=1e-12)
    class ListNet:  # (`for i in range(len(self.params)): self.params[i] -= lr * grads[i]`)
        def __init__(self):
            self.params = [np.ones((2, 2)), np.zeros(2)]

        def step(self, x):
            grads = [x, x.sum(0)]
            for i in range(len(self.params)):
                self.params[i] -= 0.1 * grads[i]
            return x.sum()

    listed, listed_reference, x2 = ListNet(), ListNet(), np.full((2, 2), 0.5)
    kept = listed.params[0]
    for _ in range(2):
        gradc.jit(listed.step)(x2), listed_reference.step(x2)
        for a, b in zip(listed.params, listed_reference.params):
            np.testing.assert_allclose(a, b, rtol=1e-13)
    assert listed.params[0] is kept  # (an entry assigned anew: test_numpy_writes_beside_...)
    class Softmax:  # (cs231n-style: the L2 penalty read with NumPy before the update)
        def __init__(self):
            self.W = np.ones((3, 2)) * 0.1

        def step(self, x):
            loss = np.sum((x @ self.W) ** 2) + 0.5 * np.sum(self.W * self.W)
            dW = 2 * x.T @ (x @ self.W) + self.W
            self.W -= 0.1 * dW
            return loss

    softmax, softmax_reference = Softmax(), Softmax()
    monkeypatch.setenv("GRADC_LOG", "compiles")
    capsys.readouterr()
    step = gradc.jit(softmax.step)
    for _ in range(5):
        assert step(X) == pytest.approx(softmax_reference.step(X), rel=1e-12)
        np.testing.assert_allclose(softmax.W, softmax_reference.W, rtol=1e-12)
    # (the penalty of the W it updates read live from the second trace on: gradc/live.py)
    assert capsys.readouterr().err.count("compiled jit(step)") <= 2
    frozen = np.ones(3)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):  # (NumPy's)
        gradc.jit(lambda x: frozen.__isub__(x))(np.ones(3))


def test_an_array_read_with_numpy_alone_that_keeps_changing_is_named_with_its_fix():
    """NumPy's ufuncs and functions on a changed array are traced from the next trace on
    (gradc/live.py); a view a method takes of it (`.reshape`) is NumPy's own, compiled in."""
    class Reshaped(BatchNormEval):
        def forward(self, x):
            return (x - self.mean) / np.sqrt(self.var.reshape(1, -1) + 1e-5)

    for model, storms in ((BatchNormEval(3), False), (Reshaped(3), True)):
        forward = gradc.jit(model.forward)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(10):
                model.var += 1.0
                np.testing.assert_allclose(forward(X), model.forward(X), rtol=1e-13)
        messages = [str(w.message) for w in caught if w.category is gradc.RecompileWarning]
        assert bool(messages) == storms
        if storms:
            assert re.search(r"`self\.var` .*NumPy alone.*pass the array as an argument",
                             messages[0])


def test_a_method_patched_on_the_class_or_a_new_class_traces_again():
    """gradc.jit(m.forward), forward calling self.act: patching the class's act, or giving m
    another class, changes what self.act runs; both kept the first trace's act."""
    class Base:
        def __init__(self):
            self.W = np.eye(3) * 2

        def act(self, x):
            return np.tanh(x)

        def forward(self, x):
            return self.act(x @ self.W).sum()

    class Sub(Base):
        def act(self, x):
            return np.sin(x)

    a = np.array([0.5, -1.0, 2.0])
    m = Base()
    f = gradc.jit(m.forward)
    for change in (lambda: None, lambda: setattr(m, "__class__", Sub),
                   lambda: setattr(Sub, "act", lambda self, x: x ** 2)):
        change()
        assert f(a) == pytest.approx(m.forward(a), rel=1e-12)
        assert f(a) == pytest.approx(m.forward(a), rel=1e-12)  # (the fast path too)
    calls = [0]

    class Layer:
        scale = 2.0

        def __call__(self, x):
            calls[0] += 1
            return np.sum(self.inner(x) * self.scale)

        def inner(self, x):
            return x * 3.0

    layer = Layer()
    g = gradc.jit(layer)
    for _ in range(3):
        assert g(a) == pytest.approx(np.sum(a * 6.0))
    assert calls[0] == 1  # (traced once: an unchanged method is no change)


_D = {"a": 2.0}
_L = [1.0, 2.0]
_S = {1, 2}


def _walks_a_global_dict(w):
    t = w
    for _, v in _D.items():
        t = t * v
    return np.sum(t) + np.sum(w * _D.get("q", 0.5)) + np.sum(w * ("r" in _D))


def _reads_from_the_end(w):
    return np.sum(w * _L[-1]) + np.sum(w * (3 in _S))


def test_outside_containers_read_by_items_lookups_and_from_the_end_are_guarded():
    """A global dict walked with .items(), a key looked up with .get or `in`, a list read from
    its end, a set's membership: a change to them between calls was not seen (the trace's
    numbers stayed compiled in)."""
    w = np.ones(3)
    f, g = gradc.jit(_walks_a_global_dict), gradc.jit(_reads_from_the_end)
    for change in (None, lambda: _D.update(a=5.0), lambda: _D.update(q=3.0),
                   lambda: _D.update(r=1.0)):
        if change:
            change()
        assert f(w) == pytest.approx(_walks_a_global_dict(w))
    for change in (None, lambda: _L.append(10.0), lambda: _S.add(3)):
        if change:
            change()
        assert g(w) == pytest.approx(_reads_from_the_end(w))


class _EasyDict(dict):  # (easydict's and many configs' attribute access to a dict's items)
    __getattr__ = dict.__getitem__

    def __setattr__(self, key, value):
        self[key] = value


class _ConfigDict:  # (ml_collections' ConfigDict: the fields live in a dict the object holds)
    def __init__(self, **fields):
        object.__setattr__(self, "_fields", dict(fields))

    def __getattr__(self, key):
        try:
            return self._fields[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key, value):
        self._fields[key] = value


_CFG = _EasyDict(scale=2.0)


class _Configured:
    def __init__(self):
        self.cfg = _ConfigDict(scale=2.0, act="tanh")
        self.__dict__["shift"] = 1.0

    def __call__(self, x):
        h = x * self.cfg.scale * _CFG.scale + self.__dict__["shift"] + vars(self)["shift"]
        return np.tanh(h) if self.cfg.act == "tanh" else h


def test_config_objects_that_serve_attributes_and_dict_reads_are_guarded():
    """cfg.scale of a dict subclass with __getattr__ (EasyDict), of an object that serves its
    fields from a dict it holds (ConfigDict), and self.__dict__["k"] / vars(self)["k"]: a
    change to any of them was not seen (the first call's numbers stayed compiled in)."""
    model = _Configured()
    f = gradc.jit(model)
    changes = (None, lambda: setattr(model.cfg, "scale", 0.5), lambda: setattr(_CFG, "scale", 3.0),
               lambda: setattr(model.cfg, "act", "none"),
               lambda: model.__dict__.update(shift=-1.0))
    try:
        for change in changes:
            if change:
                change()
            np.testing.assert_allclose(f(X), model(X), rtol=1e-13)
    finally:
        _CFG.scale = 2.0


class _Prior:
    def __init__(self):
        self.v = np.array([0.5, 2.0, 4.0])


@pytest.mark.parametrize("derive", [
    lambda m, x: x @ np.diag(1.0 / m.v),
    lambda m, x: x[:3, :3] * np.outer(m.v, m.v),
    lambda m, x: x[0, :2] * (m.v[:2] * 2),
    lambda m, x: x[:2, :3] * np.stack([m.v, m.v]),
    lambda m, x: x.ravel()[:6] * np.concatenate([m.v, m.v]),
    lambda m, x: x[:3, :3] @ np.linalg.cholesky(np.diag(m.v))])
def test_what_numpy_computes_alone_from_a_small_outside_array_into_another_size_is_checked(
        derive):
    """np.diag(1 / self.v) and the like were compiled in and never checked (the check looked
    only for a constant of v's own size): a change to v, in place or a new array, was not
    seen."""
    model = _Prior()
    f = gradc.jit(lambda x: np.sum(derive(model, x)))
    x = RNG.standard_normal((4, 3))
    for change in (None, lambda: model.v.__imul__(3.0),
                   lambda: setattr(model, "v", np.array([1.0, 0.25, 9.0]))):
        if change:
            change()
        assert f(x) == pytest.approx(np.sum(derive(model, x)), rel=1e-12)


class _BatchNorm:
    def __init__(self, n):
        self.running_mean, self.running_var = np.zeros(n), np.ones(n)
        self.training = True

    def forward(self, x, W):
        h = x @ W
        if self.training:
            mean, var = h.mean(0), h.var(0)
        else:
            mean, var = self.running_mean, self.running_var
        y = (h - mean) / np.sqrt(var + 1e-5)
        return np.sum(np.tril(np.ones((4, 3))) * y[:4] ** 2), (mean, var)


def test_running_statistics_named_in_a_branch_not_taken_trace_again_once(monkeypatch, capsys):
    """While training, self.running_mean is named (the eval branch) but not read: its change
    every step traces again once, finds the same program, and stops checking it; in eval mode
    it is read, and checked."""
    monkeypatch.setenv("GRADC_LOG", "compiles")
    bn = _BatchNorm(3)
    step = gradc.value_and_grad(bn.forward, argnums=1, has_aux=True)
    W = RNG.standard_normal((5, 3))
    for _ in range(5):
        x = RNG.standard_normal((8, 5))
        (loss, (m, v)), _ = step(x, W)
        assert loss == pytest.approx(bn.forward(x, W)[0], rel=1e-12)
        bn.running_mean = 0.9 * bn.running_mean + 0.1 * m
        bn.running_var = 0.9 * bn.running_var + 0.1 * v
    assert capsys.readouterr().err.count("compiled value_and_grad(forward)") == 2
    bn.training = False
    for _ in range(2):
        (loss, _), _ = step(x, W)
        assert loss == pytest.approx(bn.forward(x, W)[0], rel=1e-12)
        bn.running_mean += 1.0


class _Clipped:
    def __init__(self, W):
        self.W = W

    def clipped(self, x):
        self.W = np.clip(self.W, -1.0, 1.0)  # (saturated: -2 and -3 both clip to -1)
        return x * self.W

    def masked(self, x):
        return np.where(self.W > 0, x, 0.0)  # (the same mask for -2 and -3)


def test_an_array_numpy_reads_stays_checked_where_two_of_its_values_made_one_program():
    """An outside array that NumPy alone reads on a line the trace ran (np.clip, a mask) is
    compiled in through what NumPy made of it: two values that made the same program (both
    saturated, the same mask) do not make its later values irrelevant. Its check was dropped
    there and the weights the user set later were never seen (x * -1 for W = 0.5)."""
    x = np.ones(3)
    for method in ("clipped", "masked"):
        m, reference = _Clipped(np.full(3, -2.0)), _Clipped(np.full(3, -2.0))
        f = gradc.jit(getattr(m, method))
        for w in (-2.0, -3.0, 0.5, 2.0, -0.25):
            m.W, reference.W = np.full(3, w), np.full(3, w)
            np.testing.assert_array_equal(f(x), getattr(reference, method)(x))
            np.testing.assert_array_equal(m.W, reference.W)


class _Layer:
    def __init__(self, scale, W):
        self.scale, self.W = scale, W


def _mappings():
    """(what the model reads through, how the user changes it): mappings that are no dict and
    weak references, each serving a number and an array."""
    chained = collections.ChainMap({"scale": 0.5}, {"W": np.full(3, 2.0)})
    user_dict = collections.UserDict({"scale": 0.5, "W": np.full(3, 2.0)})
    under_proxy = {"scale": 0.5, "W": np.full(3, 2.0)}
    layer = _Layer(0.5, np.full(3, 2.0))
    weak_values = weakref.WeakValueDictionary({"layer": layer})

    def chain_shadowed(k, v):  # (a new first map entry hides the second map's W)
        chained[k] = v

    return [(lambda: chained["scale"] * chained["W"], chain_shadowed),
            (lambda: user_dict["scale"] * user_dict["W"], user_dict.__setitem__),
            (lambda: types.MappingProxyType(under_proxy)["scale"]
             * types.MappingProxyType(under_proxy)["W"], under_proxy.__setitem__),
            (lambda: weakref.ref(layer)().scale * weakref.ref(layer)().W,
             functools.partial(setattr, layer)),
            (lambda: weak_values["layer"].scale * weak_values["layer"].W,
             functools.partial(setattr, layer))]


@pytest.mark.parametrize("case", range(5))
def test_numbers_and_arrays_behind_other_mappings_and_weak_references_are_read_live(case):
    """A ChainMap, UserDict, mapping proxy, WeakValueDictionary or weak reference between the
    function and its settings: they were not walked (the walk went into a ChainMap's maps, not
    through its lookup; a proxy and a weakref not at all), so a number set there later was
    never seen and an array rebound there was compiled in: silent stale results."""
    scaled, change = _mappings()[case]
    f = gradc.jit(lambda x: x * scaled())
    x = np.ones(3)
    for scale, W in ((0.5, None), (0.25, None), (0.25, np.full(3, 7.0)), (2.0, np.ones(3))):
        change("scale", scale)
        if W is not None:
            change("W", W)
        np.testing.assert_array_equal(f(x), x * scaled())
    assert f._last_call.match(((x,), {}))  # (the fast path follows them too)


class _WithDefault(dict):
    def __missing__(self, key):
        return 1.0


class _UserWithDefault(collections.UserDict):
    def __missing__(self, key):
        return 4.0


@pytest.mark.parametrize("mapping", [_WithDefault, _UserWithDefault])
def test_a_key_served_by_missing_and_added_later_is_seen(mapping):
    """A mapping with __missing__ (a default for an absent key): the key added after the trace
    (a number, then an array) was never seen: the default stayed compiled in (fuzz41d)."""
    cfg = mapping()
    f = gradc.jit(lambda x: x * cfg["scale"])
    x = np.ones(2)
    for value in (None, 3.0, np.array([5.0, 6.0]), None):
        if value is None:
            if "scale" in cfg:
                del cfg["scale"]
        else:
            cfg["scale"] = value
        np.testing.assert_array_equal(f(x), x * cfg["scale"])


class _Aliased:
    def __init__(self):
        self.layers = [_Layer(0.5, np.full(3, 2.0)), _Layer(1.0, np.ones(3))]
        self.first = self.layers[0]  # (found first as self.layers[0], which the code never names)
        self.by_name = {"last": self.layers[-1]}

    def __call__(self, x):
        return x * self.first.scale * (self.first.W * 2) + self.by_name["last"].scale


def test_an_object_reached_two_ways_is_read_live_through_the_way_the_code_names():
    """An object the walk met first through a way the code does not name (self.layers[0]) and
    then through the one it does (self.first) was walked once: its number and the array NumPy
    read were guarded at neither way, stale after `m.first.scale = 0.25`."""
    model, reference = _Aliased(), _Aliased()
    f = gradc.jit(model.__call__)
    x = np.ones(3)
    for change in (lambda m: None, lambda m: setattr(m.first, "scale", 0.25),
                   lambda m: setattr(m.first, "W", np.full(3, 5.0)),
                   lambda m: setattr(m.layers[1], "scale", 3.0)):
        change(model)
        change(reference)
        np.testing.assert_array_equal(f(x), reference(x))


class _Node:
    pass


def _chain(levels, W):
    root = node = _Node()
    for _ in range(levels):
        node.child = node = _Node()
    node.W = W
    return root, node


def test_arrays_past_the_walks_depth_and_width_are_read_live():
    """An array deeper than the walk looks (thirteen levels below a global) or past the first
    MAX_ITEMS entries of a list was compiled in with no warning: a weight assigned there later
    was never seen. It is looked for past those limits where a traced operation reads it."""
    from gradc.outside import GLOBAL_DEPTH, MAX_ITEMS
    root, leaf = _chain(GLOBAL_DEPTH + 4, np.full(3, 2.0))
    layers = [_Layer(1.0, np.full(3, 2.0)) for _ in range(MAX_ITEMS + 20)]

    def deep(x):
        node = root
        while hasattr(node, "child"):
            node = node.child
        return x * node.W

    def wide(x):
        return x * layers[MAX_ITEMS + 10].W[::-1]  # (a view of it)

    x = np.array([1.0, 2.0, 3.0])
    for f, holder in ((deep, leaf), (wide, layers[MAX_ITEMS + 10])):
        compiled = gradc.jit(f)
        for W in (None, np.full(3, 5.0), np.array([1.0, -1.0, 0.5])):
            if W is not None:
                holder.W = W
            np.testing.assert_array_equal(compiled(x), f(x))


class _Pooled:
    def __init__(self):
        self.W, self.act, self.pool = np.full(3, -2.0), np.tanh, np.mean

    def clipped(self, x):
        return x * np.clip(operator.attrgetter("W")(self), -1.0, 1.0)

    def by_name(self, x):
        return x * np.clip(self.__getattribute__("W"), -1.0, 1.0)

    def forward(self, x):
        return self.pool(self.act(x))


_POOLED = _Pooled()


def _through_a_global(x):
    return _POOLED.forward(x)


def test_state_read_by_attrgetter_or_called_through_a_global_object_is_checked():
    """operator.attrgetter("W")(self) read W unnamed (compiled in, stale); a function an
    object keeps (`self.act`) called through a global object's method, and a NumPy 2 function
    (`self.pool = np.mean`, a dispatcher object), were not guarded: swapped, not seen
    (fuzz41d)."""
    x = np.array([0.5, -1.0, 2.0])
    clipped, through = gradc.jit(_POOLED.clipped), gradc.jit(_through_a_global)
    by_name = gradc.jit(_POOLED.by_name)
    for change in (lambda: None, lambda: _POOLED.W.fill(0.5), lambda: setattr(_POOLED, "W",
                                                                             np.ones(3) * 0.25),
                   lambda: setattr(_POOLED, "act", np.sin),
                   lambda: setattr(_POOLED, "pool", np.sum)):
        change()
        np.testing.assert_allclose(clipped(x), _POOLED.clipped(x), rtol=1e-12)
        np.testing.assert_allclose(by_name(x), _POOLED.by_name(x), rtol=1e-12)
        np.testing.assert_allclose(through(x), _through_a_global(x), rtol=1e-12)


class _LazyWeights(collections.abc.Mapping):
    """A checkpoint reader that loads a weight when it is looked up."""

    def __init__(self, n):
        self.n, self.loaded = n, []

    def __getitem__(self, key):
        self.loaded.append(key)
        return np.full(3, float(key[1:]))

    def __iter__(self):
        return iter(f"w{i}" for i in range(self.n))

    def __len__(self):
        return self.n


def test_the_walk_looks_nothing_up_in_a_mapping_of_the_users_own_class():
    """Mappings that are no dict were walked through their lookup for every key (fuzz41d): a
    lazy checkpoint reader loaded its every weight when traced (500 where NumPy loads 1). Only
    the standard library's (ChainMap, UserDict, mapping proxies, WeakValueDictionary) are."""
    weights = _LazyWeights(500)
    f = gradc.jit(lambda x: x * weights["w3"])
    np.testing.assert_array_equal(f(np.ones(3)), np.full(3, 3.0))
    assert weights.loaded == ["w3"]


def test_objects_behind_a_weakref_proxy_are_read_live():
    """A weakref.proxy has __next__ (for its referent's sake): the walk took it for an
    iterator and did not look into it, so p.W *= 2 was never seen (fuzz41d)."""
    layer = _Layer(2.0, np.arange(3.0))
    proxy = weakref.proxy(layer)
    f = gradc.jit(lambda x: x * proxy.W * proxy.scale)
    x = np.ones(3)
    for change in (lambda: None, lambda: layer.W.__imul__(2.0),
                   lambda: setattr(layer, "scale", 0.5)):
        change()
        np.testing.assert_array_equal(f(x), x * proxy.W * proxy.scale)


def test_under_a_debuggers_trace_function_the_lines_run_are_recorded_too(monkeypatch, capsys):
    """The retrace that decides whether an array a branch not taken names stays checked
    records the lines it runs with sys.settrace; under a debugger's or coverage's trace
    function it did not, and the BN running mean the user updates traced again on every call
    (fuzz41d). It chains the trace function that was set, which still sees every line."""
    import sys
    monkeypatch.setenv("GRADC_LOG", "compiles")
    seen = []

    def debugger(frame, event, arg):
        seen.append(event)
        return debugger

    bn = _BatchNorm(3)
    step = gradc.value_and_grad(bn.forward, argnums=1, has_aux=True)
    W, x = RNG.standard_normal((5, 3)), RNG.standard_normal((8, 5))
    before = sys.gettrace()
    sys.settrace(debugger)
    try:
        for _ in range(6):
            (loss, (m, v)), _ = step(x, W)
            bn.running_mean = 0.9 * bn.running_mean + 0.1 * m
    finally:
        sys.settrace(before)
    assert capsys.readouterr().err.count("compiled value_and_grad(forward)") == 2
    assert "line" in seen and loss == pytest.approx(bn.forward(x, W)[0], rel=1e-12)


class _Block:
    def __init__(self):
        self.scale, self.var = 2.0, np.ones(3)

    def __call__(self, x):
        return x * self.scale / np.sqrt(self.var)


class _Net:
    def __init__(self):
        self.block = _Block()

    def __call__(self, x):
        return self.block(x)


GLOBAL_NET = _Net()


def _global_net_loss(x):
    return np.sum(GLOBAL_NET(x) ** 2)


def test_a_sub_layer_of_a_global_model_called_through_it_is_checked():
    """`model(x)` of a module-level model whose __call__ runs `self.block(x)`: the block was
    reached as model.block, a way the code names only as a method it calls, so its scale and
    its var (read by NumPy alone) were unguarded: stale after model.block.scale = 5 (the
    PyTorch-style module pattern; fuzz41d)."""
    x = np.array([-1.0, 2.0, 3.0])
    jitted, grad = gradc.jit(_global_net_loss), gradc.grad(_global_net_loss)
    for change in (lambda: None, lambda: setattr(GLOBAL_NET.block, "scale", 5.0),
                   lambda: GLOBAL_NET.block.var.__imul__(4.0),
                   lambda: setattr(GLOBAL_NET, "block", _Block())):
        change()
        assert jitted(x) == pytest.approx(_global_net_loss(x), rel=1e-12)
        factor = GLOBAL_NET.block.scale ** 2 / GLOBAL_NET.block.var
        np.testing.assert_allclose(grad(x), 2 * x * factor, rtol=1e-12)


def test_subclasses_read_from_outside_are_refused_and_large_masks_named():
    """A masked array or np.matrix read from a global was compiled in as its data (the mask
    dropped: (x * M).sum() counted the masked element) and never checked again: refused by
    name, as such arguments are. A mask of more than CONTENT_GUARD_SIZE elements, compiled in
    unchecked, is named in a ConstantArrayWarning (float arrays of that size already were)."""
    x = np.ones(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)  # (np.matrix's own)
        matrix = np.asmatrix([[1.0, 2.0, 3.0]])
    for outside in (np.ma.masked_array([1.0, 2.0, 3.0], mask=[False, True, False]), matrix):
        with pytest.raises(gradc.UnsupportedOpError, match="subclass of np.ndarray"):
            gradc.jit(lambda x: (x * outside).sum())(x)
    mask = np.arange(capture.CONTENT_GUARD_SIZE + 1) % 2 == 0
    with pytest.warns(gradc.ConstantArrayWarning, match=r"`mask` bool\[4097\]"):
        gradc.jit(lambda x: np.where(mask, x, 0.0).sum())(np.ones(mask.size))


def test_a_small_outside_array_changed_to_minus_zero_traces_again():
    """The content guard of an array compiled in tells -0.0 from 0.0 (np.array_equal does not):
    1 / A after A[0] = -0.0 is -inf."""
    table = np.array([0.0, 1.0])
    f = gradc.jit(lambda x: x * (1.0 / table))  # (1 / table: NumPy alone, compiled in)
    with np.errstate(divide="ignore"):
        for value in (0.0, -0.0, 0.0):
            table[0] = value
            np.testing.assert_array_equal(f(np.ones(2)), np.ones(2) * (1.0 / table))


WRITTEN_ONLY = None


def test_a_global_the_function_only_writes_is_written_after_each_call():
    """`global W; W = x.sum()` with W never read: the store was not seen (only read globals
    were held) and W kept a traced value after the call; it was refused then; now written."""
    def loss(x):
        global WRITTEN_ONLY
        WRITTEN_ONLY = x.sum()
        return (x ** 2).sum()

    grad = gradc.grad(loss)
    for x in (np.arange(3.0), np.ones(3)):
        np.testing.assert_array_equal(grad(x), 2 * x)
        assert WRITTEN_ONLY == x.sum()
    with pytest.raises(gradc.UnsupportedOpError, match="WRITTEN_ONLY"):
        gradc.jacobian(loss)(np.arange(3.0))  # (not written by the transforms)


def test_an_outside_dict_walked_in_another_order_traces_again():
    """A model's dict of layers, walked by .values(), rebuilt with the same entries in another
    order (or a layer popped and put back at the end): the old order's program ran; the
    dict's keys in their order are guarded, as a list's length is."""
    class Model:
        def __init__(self):
            self.layers = {"a": np.eye(2) * 2.0, "b": np.ones((2, 2))}

        def __call__(self, x):
            for w in self.layers.values():
                x = np.tanh(x @ w)
            return x

    model, x = Model(), np.array([[0.3, -0.2]])
    f = gradc.jit(model)

    def reference(x):
        for w in model.layers.values():
            x = np.tanh(x @ w)
        return x

    for change in (lambda: None, lambda: setattr(model, "layers", dict(reversed(
            list(model.layers.items())))), lambda: model.layers.__setitem__(
            "b", model.layers.pop("b"))):
        change()
        np.testing.assert_allclose(f(x), reference(x), rtol=1e-12)


def test_a_weight_seven_steps_below_self_is_read_live():
    """self.backbone.encoder.layers[0].attn.q.weight (seven steps: an ordinary transformer's
    layout) was past the walk's depth: compiled in, and an update was never seen."""
    class Box:
        def __init__(self, **parts):
            self.__dict__.update(parts)

    model = Box(backbone=Box(encoder=Box(layers=[Box(attn=Box(q=Box(weight=np.eye(2))))])))

    def forward(x):
        for block in model.backbone.encoder.layers:
            x = np.tanh(x @ block.attn.q.weight)
        return x

    f, x = gradc.jit(forward), np.array([[0.5, -1.0]])
    np.testing.assert_allclose(f(x), forward(x))
    model.backbone.encoder.layers[0].attn.q.weight -= 0.5
    np.testing.assert_allclose(f(x), forward(x))


def test_equal_objects_of_a_class_with_its_own_eq_are_told_apart():
    """A jitted method's self with __eq__/__hash__ by name: a second, equal model ran on the
    first one's weights (the program was keyed by equality, its arrays read from the object it
    was traced with)."""
    class Net:
        def __init__(self, w, name):
            self.w, self.name = w, name

        def __eq__(self, other):
            return isinstance(other, Net) and other.name == self.name

        def __hash__(self):
            return hash(self.name)

        @gradc.jit
        def forward(self, x):
            return x @ self.w

    x = np.ones((1, 3))
    a, b = Net(np.eye(3), "net"), Net(5 * np.eye(3), "net")
    np.testing.assert_array_equal(a.forward(x), x)
    np.testing.assert_array_equal(b.forward(x), 5 * x)
    np.testing.assert_array_equal(a.forward(x), x)


def test_a_mask_numpy_made_from_a_large_outside_array_is_checked():
    """x[W > 0]: the mask NumPy computed is compiled in; W, over 4096 elements, was only named
    in a warning (silent before that: only float arrays were compared by size). Tracing again
    with W's signs changed (capture.read_by_numpy) makes another program: W is checked."""
    W = np.where(np.arange(capture.CONTENT_GUARD_SIZE + 1) % 2 == 0, 1.0, -1.0)
    f = lambda x: x[W > 0].sum()
    x = np.arange(W.size, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jf = gradc.jit(f)
        assert jf(x) == f(x)
        W[:10] *= -1.0
        assert jf(x) == f(x)


class Counting:
    def __init__(self):
        self.W, self.seen, self.steps = np.eye(3), np.zeros(3), np.zeros(1, dtype=np.int64)


@pytest.mark.parametrize("change", [
    lambda m: m.seen.__iadd__(1.0),  # (self.seen += 1)
    lambda m: m.steps.__setitem__(0, m.steps[0] + 1),  # (an integer counter)
    lambda m: np.copyto(m.seen[1:], 2.0),  # (through a view)
    lambda m: m.W.fill(0.5),
])
def test_an_outside_array_changed_in_place_by_the_traced_code_is_refused(change):
    """NumPy code that changes an array outside its arguments changes it on every call; the
    trace changed it once and the compiled function never did (a silent divergence)."""
    model = Counting()

    def forward(x):
        change(model)
        return x @ model.W

    with pytest.raises(gradc.UnsupportedOpError, match=r"changed `model\.(seen|steps|W)`, "
                                                       r"outside its arguments, in place"):
        gradc.jit(forward)(X)


def test_outside_arrays_changed_but_not_by_the_traced_code_are_not_refused():
    """What the walk finds but the code never names (a counter a training loop keeps, maybe
    bumped by another thread during the trace) is not the trace's doing; object arrays and NaNs
    compare as they are (a ragged object array raised NumPy's ValueError)."""
    class Model:
        def __init__(self):
            self.W, self.calls = np.eye(3), np.zeros(1)
            self.ragged = np.empty(2, dtype=object)
            self.ragged[0], self.ragged[1] = np.ones(2), np.ones(3)
            self.nan = np.array([np.nan, 1.0])

    import threading
    model = Model()

    def bump():  # (another thread: the trace does not see its code)
        model.calls += 1.0

    def forward(x):
        other = threading.Thread(target=bump)
        other.start()
        other.join()
        return x @ model.W + model.nan[1] + len(model.ragged)

    np.testing.assert_allclose(gradc.jit(forward)(X), X + 3.0)
    assert model.calls[0] >= 1.0  # (kept, not undone; traced twice: capture.read_by_numpy)

    def counting(x):
        model.calls += 1.0  # (the traced code's own change: refused)
        return x @ model.W

    with pytest.raises(gradc.UnsupportedOpError, match=r"changed `model\.calls`"):
        gradc.jit(counting)(X)


def test_a_jitted_method_of_a_dataclass_model():
    """A @dataclass (eq=True: no __hash__) is a static `self` told apart by identity: it was
    refused as unhashable."""
    import dataclasses

    @dataclasses.dataclass
    class Linear:
        W: np.ndarray

        @gradc.jit
        def forward(self, x):
            return np.tanh(x @ self.W)

    a, b = Linear(np.eye(3) * 0.5), Linear(np.eye(3) * 0.5)  # (equal: two models all the same)
    np.testing.assert_allclose(a.forward(X), np.tanh(X @ a.W), rtol=1e-13)
    b.W = b.W * 3.0
    np.testing.assert_allclose(b.forward(X), np.tanh(X @ b.W), rtol=1e-13)
    a.W *= -1.0
    np.testing.assert_allclose(a.forward(X), np.tanh(X @ a.W), rtol=1e-13)


def test_a_callable_layer_whose_class_call_is_patched_traces_again():
    """`Act.__call__ = f` on the class of a callable layer the function calls: the old
    __call__ ran (the guard held the class alone; a call is no attribute read in bytecode)."""
    class Act:
        def __call__(self, z):
            return np.sin(z)

    act, x = Act(), np.linspace(-1.0, 1.0, 5)
    f = gradc.jit(lambda z: act(z) * 2.0)
    np.testing.assert_allclose(f(x), 2 * np.sin(x))
    Act.__call__ = lambda self, z: np.cos(z)
    np.testing.assert_allclose(f(x), 2 * np.cos(x))


def test_a_staticmethod_swapped_on_the_class_traces_again():
    """`C.act = staticmethod(f)`: the class held a staticmethod object, which the walk skipped
    (it looked for functions), so the old one ran."""
    class C:
        @staticmethod
        def act(z):
            return np.tanh(z)

        def forward(self, z):
            return self.act(z) * 2.0

    c, x = C(), np.linspace(-1.0, 1.0, 5)
    f = gradc.jit(c.forward)
    np.testing.assert_allclose(f(x), 2 * np.tanh(x))
    C.act = staticmethod(lambda z: np.sin(z))
    np.testing.assert_allclose(f(x), 2 * np.sin(x))


@pytest.mark.parametrize("new", [np.sin, staticmethod(np.sin), np.cos])
def test_a_ufunc_held_by_the_class_swapped_traces_again(new):
    """`act = np.tanh` on the class, then `C.act = np.sin`: a ufunc (or a builtin function,
    a functools.partial) the class holds is checked as its functions are (it was not: the
    traced tanh ran on, silently)."""
    class C:
        act = np.tanh

        def __call__(self, z):
            return (self.act(z) * 2.0).sum()

    c, x = C(), np.linspace(-0.5, 1.0, 5)
    f = gradc.jit(c)
    assert np.isclose(f(x), c(x))
    C.act = new
    assert np.isclose(f(x), c(x)) and not np.isclose(c(x), 2 * np.tanh(x).sum())


@pytest.mark.parametrize("scope", [{}, {"__name__": "generated_models"}])
def test_a_class_made_by_exec_is_the_users(scope):
    """A class exec'd with globals that have no __name__ is in module "builtins": it was taken
    for a built-in one, and its attributes, changed between calls, were read stale."""
    exec("import numpy as np\n"
         "class Model:\n"
         "    scale = 2.0\n"
         "    W = np.array([1.0, -1.0, 0.5])\n"
         "    def __call__(self, x):\n"
         "        return (np.tanh(self.W * x) * self.scale).sum()\n", scope)
    Model, x = scope["Model"], np.array([0.5, -1.0, 2.0])
    m = Model()
    f = gradc.jit(m)
    assert np.isclose(f(x), m(x))
    for change in (lambda: setattr(Model, "scale", 5.0), lambda: Model.W.__setitem__(0, 3.0),
                   lambda: setattr(Model, "W", np.array([2.0, 2.0, 2.0]))):
        before = m(x)
        change()
        assert not np.isclose(m(x), before) and np.isclose(f(x), m(x))


class _Mode(enum.Enum):
    A = 1
    B = 2


def _class_held(kind):
    """(object whose __call__ reads a value the class holds, how to change that value)."""
    if kind == "object":
        class C:
            hp = types.SimpleNamespace(k=2.0, W=np.array([1.0, 2.0, 3.0]))

            def __call__(self, x):
                return np.sum(x * self.hp.k * self.hp.W)
        return C(), lambda: setattr(C.hp, "k", 5.0)
    if kind == "array in an object":
        class C:
            hp = types.SimpleNamespace(W=np.array([1.0, 2.0, 3.0]))

            def __call__(self, x):
                return np.sum(x * self.hp.W)
        return C(), lambda: C.hp.W.__imul__(2.0)
    if kind == "OrderedDict":
        class C:
            cfg = collections.OrderedDict(k=2.0)

            def __call__(self, x):
                return np.sum(x * self.cfg["k"])
        return C(), lambda: C.cfg.__setitem__("k", 5.0)
    if kind == "enum member":
        class C:
            mode = _Mode.A

            def __call__(self, x):
                return np.sum(np.tanh(x) if self.mode is _Mode.A else np.sin(x))
        return C(), lambda: setattr(C, "mode", _Mode.B)
    if kind == "set":
        class C:
            allowed = {1, 2}

            def __call__(self, x):
                return np.sum(x * (2.0 if 3 in self.allowed else 1.0))
        return C(), lambda: C.allowed.add(3)
    if kind == "nested class":
        class C:
            class Cfg:
                k = 2.0

            def __call__(self, x):
                return np.sum(x * self.Cfg.k)
        return C(), lambda: setattr(C.Cfg, "k", 5.0)
    if kind == "metaclass":
        class Meta(type):
            k = 2.0

        class M(metaclass=Meta):
            pass
        return (lambda x: np.sum(x * M.k)), lambda: setattr(Meta, "k", 7.0)
    if kind == "types.new_class":
        NC = types.new_class("NC", (), {}, lambda ns: ns.update(k=2.0))
        return (lambda x: np.sum(x * NC.k)), lambda: setattr(NC, "k", 8.0)
    if kind == "float subclass":
        class LR(float):
            pass

        class C:
            lr = LR(0.1)

            def __call__(self, x):
                return np.sum(x * self.lr)
        return C(), lambda: setattr(C, "lr", LR(0.5))
    holder = types.SimpleNamespace(pick=operator.itemgetter(0), mul=(2.0).__mul__,
                                   cached=functools.lru_cache(lambda n: n * 2.0))
    if kind == "itemgetter":
        return (lambda x: np.sum(x * holder.pick((2.0, 5.0)))), lambda: setattr(
            holder, "pick", operator.itemgetter(1))
    if kind == "method-wrapper":
        return (lambda x: np.sum(x * holder.mul(3.0))), lambda: setattr(
            holder, "mul", (5.0).__mul__)
    assert kind == "lru_cache"
    return (lambda x: np.sum(x * holder.cached(3))), lambda: setattr(
        holder, "cached", functools.lru_cache(lambda n: n * 5.0))


@pytest.mark.parametrize("kind", [
    "object", "array in an object", "OrderedDict", "enum member", "set", "nested class",
    "metaclass", "types.new_class", "float subclass", "itemgetter", "method-wrapper",
    "lru_cache"])
def test_what_a_class_holds_or_a_callable_swapped_is_seen(kind):
    """A sweep of the object model (stop 51): these were read stale, silently (class-level
    objects and containers, a metaclass's attributes, a class of types.new_class, a float
    subclass as a setting, callables swapped for another of their type): each is checked on
    every call now, and a change traces again (or is read live), as NumPy's code sees it."""
    f, change = _class_held(kind)
    x = np.array([0.5, -1.0, 2.0])
    compiled = gradc.jit(f)
    assert np.isclose(compiled(x), f(x))
    before = f(x)
    change()
    assert not np.isclose(f(x), before)
    assert np.isclose(compiled(x), f(x))
    np.testing.assert_allclose(gradc.grad(f)(x), central_difference(f, x), rtol=1e-6)


GLOBAL_W = np.array([1.0, 2.0, 3.0])
GLOBAL_K = 2.0
CONFIG_MODULE = types.ModuleType("config_made_in_code")
CONFIG_MODULE.V = np.array([1.0, 2.0, 3.0])


def test_globals_and_a_modules_vars_read_by_a_constant_key_are_read_live():
    """`globals()["W"]` and `vars(config)["V"]` (keys the code names): the arrays are read live
    and the numbers checked, as when read by name (they were compiled in, stale)."""
    global GLOBAL_W, GLOBAL_K
    x = np.array([0.5, -1.0, 2.0])
    f = gradc.jit(lambda x: np.sum(x * globals()["GLOBAL_W"] * globals()["GLOBAL_K"]))
    g = gradc.jit(lambda x: np.sum(x * vars(CONFIG_MODULE)["V"]))
    assert np.isclose(f(x), np.sum(x * GLOBAL_W * 2.0)) and np.isclose(g(x), 4.5)
    GLOBAL_W *= 2.0
    CONFIG_MODULE.V *= 3.0
    assert np.isclose(f(x), np.sum(x * GLOBAL_W * 2.0)) and np.isclose(g(x), 13.5)
    GLOBAL_W, GLOBAL_K = np.array([5.0, 5.0, 5.0]), 3.0
    assert np.isclose(f(x), np.sum(x * 15.0))


def test_a_config_namespaces_entries_the_code_does_not_read_are_not_guarded():
    """A types.SimpleNamespace serves attributes from its __dict__, as an object does: only the
    entries the code reads are checked on each call (every entry was, as for an object that
    answers attributes itself, an EasyDict: 2.5 us a call for a few), and an unread one
    changed compiles nothing new."""
    class Model:
        hp = types.SimpleNamespace(k=1.5, names=("a", "b"), table=[1.0, 2.0, 3.0])

        def __call__(self, x):
            return np.sum(x * self.hp.k)

    f, x = gradc.jit(Model()), np.array([0.5, -1.0, 2.0])
    assert np.isclose(f(x), 2.25)
    guards = [g.name for g in f.last_compiled().captures.guards]
    assert "self.hp.k" in guards and not any("names" in g or "table" in g for g in guards)
    Model.hp.table[0] = 9.0
    Model.hp.k = 2.0
    assert np.isclose(f(x), 3.0)


def test_a_train_step_sees_a_setting_on_a_class_level_object():
    """`Model.hp.scale` changed between steps: the loss and the update use the new scale."""
    class Model:
        hp = types.SimpleNamespace(scale=1.0)

        def loss(self, p, x):
            return np.sum((p["w"] * x * self.hp.scale) ** 2)

    m, x = Model(), np.array([0.5, -1.0, 2.0])
    params = {"w": np.array([1.0, 2.0, 3.0])}
    step = gradc.train_step(m.loss, gradc.optim.SGD(lr=0.01))
    step(params, x)
    Model.hp.scale = 3.0
    w = params["w"].copy()
    loss = step(params, x)
    assert np.isclose(loss, m.loss({"w": w}, x))
    np.testing.assert_allclose(params["w"], w - 0.01 * 2 * w * (x * 3.0) ** 2)


# --- what a fuzzing round of retraces found ---------------------------------------------------

def test_tied_outside_arrays_untied_later_trace_again():
    """One array reached two ways (tied weights; a global also in a dict) is one input; a call
    that finds the two apart traces again (both were read as the first array: 8 for 16)."""
    x = np.ones((3, 4))

    class Tied:
        def __init__(self):
            self.enc = np.ones((4, 2))
            self.dec = self.enc

        def forward(self, x):
            return (x @ self.enc) @ self.dec.T

    m = Tied()
    forward = gradc.jit(m.forward)
    np.testing.assert_allclose(forward(x), m.forward(x))
    m.dec = m.enc * 2
    np.testing.assert_allclose(forward(x), m.forward(x))
    np.testing.assert_allclose(forward(x), m.forward(x))  # (the fast path, untied)
    m.dec = m.enc  # tied again: two inputs that hold one array read it twice
    np.testing.assert_allclose(forward(x), m.forward(x))
    table = {"w": m.enc}
    both = gradc.jit(lambda x: x @ m.enc + x @ table["w"])
    np.testing.assert_allclose(both(x), 2 * x @ m.enc)
    table["w"] = np.full((4, 2), 10.0)
    np.testing.assert_allclose(both(x), x @ m.enc + x @ table["w"])


def test_a_memmap_outside_is_read_live_and_its_path_stays_watched(tmp_path):
    x = np.ones((3, 4))
    mapped = np.memmap(tmp_path / "w.dat", np.float64, "w+", shape=(4, 2))
    mapped[:] = 1.0
    holder = {"W": mapped}
    f = gradc.jit(lambda x: x @ holder["W"])
    np.testing.assert_allclose(f(x), x @ mapped)
    mapped[:] = 3.0  # in place, in the file's memory
    np.testing.assert_allclose(f(x), x @ mapped)
    holder["W"] = np.full((4, 2), 2.0)  # rebound to an array: seen (it stayed the memmap)
    np.testing.assert_allclose(f(x), 8.0)
    holder["W"] = np.full((4, 3), 3.0)  # another shape: traced again
    assert f(x).shape == (3, 3)


def test_arrays_and_numbers_in_a_deque_are_read_as_in_a_list():
    import collections
    x = np.ones((3, 4))
    arrays, scales = collections.deque([np.ones((4, 2))]), collections.deque([2.0])
    f = gradc.jit(lambda x: (x @ arrays[0]) * scales[0])
    np.testing.assert_allclose(f(x), 8.0)
    arrays[0] *= 3
    scales[0] = 5.0
    np.testing.assert_allclose(f(x), 60.0)
    arrays[0] = np.zeros((4, 2))
    np.testing.assert_allclose(f(x), 0.0)
    history = collections.deque(maxlen=3)

    def stores(x):
        y = np.tanh(x).sum()
        history.append(y)
        return y

    with pytest.raises(gradc.UnsupportedOpError, match=r"`history\[0\]`"):
        gradc.jit(stores)(x)
    assert len(history) == 0  # (undone)


def test_static_values_and_dict_keys_that_compare_equal_are_apart():
    """1, 1.0 and True; 0.0 and -0.0; NaN and -NaN: as arguments, dict keys, frozenset items
    and guarded globals (each pair shared one compiled version: the first one's answer)."""
    xi = np.arange(4, dtype=np.int32)
    scale = gradc.jit(lambda d: {k: v * k for k, v in d.items()})
    for key in (1, 1.0, True, 1, 1.0):
        (got,), (want,) = scale({key: xi}).items(), {key: xi * key}.items()
        assert type(got[0]) is type(want[0]) and got[1].dtype == want[1].dtype
    sign = gradc.jit(lambda d: {k: np.copysign(np.ones(2), k) for k in d})
    for key in (0.0, -0.0, 0.0):
        assert sign({key: 1})[key][0] == np.copysign(1.0, key)
    first = gradc.jit(lambda x, s: x * next(iter(s)))
    for s in (frozenset({1}), frozenset({1.0}), frozenset({1})):
        assert first(xi, s).dtype == (xi * next(iter(s))).dtype
    nan_sign = gradc.jit(lambda x, s: np.copysign(np.ones_like(x), s) * x)
    x = np.ones(3)
    for s in (float("nan"), -float("nan"), float("nan")):
        np.testing.assert_array_equal(nan_sign(x, s), np.copysign(1.0, s))
    global GUARDED_NAN
    GUARDED_NAN = float("nan")
    g = gradc.jit(lambda x: np.copysign(np.ones_like(x), GUARDED_NAN) * x)
    g(x)
    GUARDED_NAN = -float("nan")
    np.testing.assert_array_equal(g(x), -1.0)


GUARDED_NAN = float("nan")


def test_fresh_functions_over_whole_float_constants_share_their_kernels():
    """A closure's float(i) in a loop of fresh functions: whole floats past LITERAL_WHOLE are
    read from the arena, as other floats are, so each is not a new kernel (and its machine
    code kept for good: 500 such functions held 190 MiB)."""
    from gradc.passes import fuse
    x = np.ones((4, 4))
    kernels = set()
    for k in (100.0, 101.0, 1e6):
        f = gradc.jit(lambda a, k=k: np.tanh(a) * k + a)
        np.testing.assert_allclose(f(x), np.tanh(x) * k + x)
        kernels.add(tuple(sorted(next(iter(f.cache.values())).program.kernel_modules)))
    assert len(kernels) == 1 and fuse._literal(64.0, np.float64)


def test_a_namedtuple_reached_from_outside_is_walked_not_copied():
    """A closure over an object whose attributes hold a namedtuple (jax.jit's functions do) made
    the walk call the tuple's .copy(): AttributeError from every trace."""
    import collections
    Config = collections.namedtuple("Config", "scale shift")

    class Holder:
        def __init__(self):
            self.config = Config(np.full(3, 2.0), 1.0)

    holder = Holder()

    def make(h):
        return lambda x: np.sum(x * h.config.scale + h.config.shift)

    f = make(holder)
    x = np.arange(3.0)
    assert gradc.jit(f)(x) == f(x)
    np.testing.assert_allclose(gradc.grad(f)(x), 2.0)
    holder.config.scale[:] = 5.0  # read live through the namedtuple
    assert gradc.jit(f)(x) == f(x)


def test_a_python_counter_changed_by_traced_code_is_warned_about():
    """`self.t += 1` (a step counter on the model), `calls["n"] += 1`, a nonlocal count, a list
    appended to: NumPy's code changes them on every call, the compiled function once, when
    traced, and a result computed from them kept the traced value, silently. A warning names
    them; a flag set once, a table built lazily, and a counter the code does not store into
    are not warned about."""
    class Model:
        def __init__(self):
            self.t, self.history, self.built, self.table = 0, [], False, None

        def forward(self, x):
            self.t += 1
            self.history.append(self.t)
            if self.table is None:
                self.table = np.arange(3.0)
            self.built = True
            return x * self.t + self.table.sum()

    model = Model()
    with pytest.warns(gradc.TraceEffectWarning, match=r"changed `self\.t`, `self\.history`, a "
                                                      r"Python number or list"):
        gradc.jit(model.forward)(X)
    count = 0

    def counted(x):
        nonlocal count
        count += 1
        return x * 2

    with pytest.warns(gradc.TraceEffectWarning, match="changed `count`"):
        gradc.jit(counted)(X)
    assert count == 1  # (the trace's change is kept: a count of traces stays one)
    lazy = Model()
    lazy.t = 5

    def reads_only(x):
        lazy.built = True
        if lazy.table is None:
            lazy.table = np.ones(2)
        return x * lazy.t

    with warnings.catch_warnings():
        warnings.simplefilter("error", gradc.TraceEffectWarning)
        np.testing.assert_allclose(gradc.jit(reads_only)(X), X * 5)


def test_enum_members_and_function_attributes_read_from_outside_are_guarded():
    """A mode held as an enum member (`self.mode is Mode.TRAIN`) and a setting kept as a
    function's attribute (`scaled.k`) were compiled in and not checked: a later change was
    silently ignored. Both trace again when they change."""
    import enum

    class Mode(enum.Enum):
        TRAIN = "train"
        EVAL = "eval"

    class Net:
        def __init__(self):
            self.mode = Mode.TRAIN

        def forward(self, x):
            return x * 0.5 if self.mode is Mode.TRAIN else x

    net = Net()
    forward = gradc.jit(net.forward)
    np.testing.assert_array_equal(forward(X), X * 0.5)
    net.mode = Mode.EVAL
    np.testing.assert_array_equal(forward(X), X)
    settings = {"mode": Mode.TRAIN}
    g = gradc.jit(lambda x: x * (2.0 if settings["mode"] == Mode.EVAL else 1.0))
    g(X)
    settings["mode"] = Mode.EVAL
    np.testing.assert_array_equal(g(X), 2 * X)

    def scaled(x):
        return x * scaled.k

    scaled.k = 1.0
    h = gradc.jit(scaled)
    h(X)
    scaled.k = 5.0
    np.testing.assert_array_equal(h(X), 5 * X)


def test_a_big_endian_float_array_from_outside_is_read_by_value():
    """A big-endian float64 global (read from a file as '>f8') was refused as 'a float64 array
    ... gradc computes in float32, float64': compiled in by its values now (it cannot be read
    live: a ConstantArrayWarning says so), and checked by contents."""
    W = np.arange(6.0).reshape(2, 3).astype(">f8")

    def f(x):
        return np.sum(x @ W)

    x = np.ones((4, 2))
    g = gradc.jit(f)
    assert g(x) == f(x)
    W[0, 0] = 100.0
    with pytest.warns(gradc.ConstantArrayWarning):
        assert g(x) == f(x) == 460.0


def test_an_outside_array_of_new_shapes_is_no_recompile_storm():
    """self.W of a new shape at each call traces again, as an argument of a new shape
    compiles again, without a RecompileWarning (whose advice, pass it as an argument, would
    change nothing)."""
    class Model:
        def __init__(self):
            self.w = np.ones((3, 1))

        def f(self, x):
            return np.sum(x @ self.w)

    model = Model()
    f = gradc.jit(model.f)
    with warnings.catch_warnings():
        warnings.simplefilter("error", gradc.RecompileWarning)
        for n in range(1, 11):
            model.w = np.ones((3, n))
            assert f(np.ones((2, 3))) == 6.0 * n


def _mlp(x, weights):
    for w in weights:
        x = np.tanh(x @ w)
    return np.sum(x)


class _Linear:
    def __init__(self):
        self.w, self.s = np.eye(2) * 0.5, 2.0

    def apply(self, x):
        return (x @ self.w) * self.s


class _Config:
    table = {"scale": 2.0}
    stack = [np.eye(2) * 0.5]


def test_outside_state_reached_however_the_code_walks_it():
    """Each change below once kept the old program silently: a list walked by a helper under
    another name, through a slice or an alias, in a dict; a tuple rebound to a longer one; an
    OrderedDict reordered; a class-level dict or list; what a bound method or partial held as
    a value carries (fuzz38j). Each now traces again or reads live: NumPy's answer."""
    import collections
    x = X[:, :2]
    layers = [np.eye(2) * 0.5]
    holder = types.SimpleNamespace(layers=layers, tup=(np.eye(2),))
    table = {"layers": [np.eye(2) * 0.5]}
    ordered = collections.OrderedDict(a=np.eye(2) * 0.5, b=np.eye(2) * 2.0)
    lin = _Linear()
    bound = types.SimpleNamespace(act=lin.apply)
    w = np.eye(2) * 0.5
    held = types.SimpleNamespace(f=functools.partial(lambda x, w: x @ w, w=w))

    def grow(seq):
        return lambda: seq.append(np.full((2, 2), 0.3))

    cases = [
        (lambda x: _mlp(x, holder.layers), grow(layers)),
        (lambda x: _mlp(x, holder.layers[1:]) + np.sum(x), grow(layers)),
        (lambda x: (lambda ls: _mlp(x, ls))(holder.layers), grow(layers)),
        (lambda x: _mlp(x, table["layers"]), grow(table["layers"])),
        (lambda x: _mlp(x, holder.tup),
         lambda: setattr(holder, "tup", holder.tup + (np.eye(2) * 3,))),
        (lambda x: _mlp(x, ordered.values()), lambda: ordered.move_to_end("a")),
        (lambda x: np.sum(x) * _Config.table["scale"],
         lambda: _Config.table.__setitem__("scale", 3.0)),
        (lambda x: _mlp(x, _Config.stack), grow(_Config.stack)),
        (lambda x: np.sum(bound.act(x)), lambda: setattr(lin, "s", 5.0)),
        (lambda x: np.sum(bound.act(x)), lambda: lin.w.__imul__(3.0)),
        (lambda x: np.sum(held.f(x)), lambda: w.__imul__(3.0)),
    ]
    try:
        for f, change in cases:
            compiled = gradc.jit(f)
            np.testing.assert_allclose(compiled(x), f(x), rtol=1e-13)
            change()
            np.testing.assert_allclose(compiled(x), f(x), rtol=1e-13)
    finally:
        _Config.table["scale"] = 2.0
        del _Config.stack[1:]


def test_tied_arrays_combined_by_numpy_alone_trace_again_when_untied():
    """`m.dec = m.enc`, read as `x @ (m.enc + m.dec)`: NumPy adds them alone (no trace sees
    that), so each path's contents are checked: `m.dec = m.enc * 5` traces again (the content
    guard was kept at one path of the array only: the tied sum, silently)."""
    m = types.SimpleNamespace(enc=np.eye(2) * 0.5)
    m.dec = m.enc
    f = lambda x: np.sum(x @ (m.enc + m.dec))  # noqa: E731
    compiled = gradc.jit(f)
    x = X[:, :2]
    np.testing.assert_allclose(compiled(x), f(x), rtol=1e-13)
    m.dec = m.enc * 5
    np.testing.assert_allclose(compiled(x), f(x), rtol=1e-13)


_LAZY_TABLE = None


def _lazily_built_tables():
    """Functions that build a table the first time they run and read it from then on, each
    with a way to change that table afterwards (as a user's code may)."""
    class Layer:
        mask = None  # (a class attribute: the instance has none until the first call)

        def __init__(self):
            self.scale = None

        def __call__(self, x):
            if self.mask is None:
                self.mask = np.ones(3)
            if self.scale is None:
                self.scale = np.full(3, 2.0)
            return x * self.mask * self.scale

    layer = Layer()

    def by_global(x):
        global _LAZY_TABLE
        if _LAZY_TABLE is None:
            _LAZY_TABLE = np.zeros(3)
        return x + _LAZY_TABLE

    cache = {}

    def by_dict_entry(x):
        if "w" not in cache:
            cache["w"] = np.ones(3)
        return x * cache["w"]

    def closure():
        table = None

        def by_cell(x):
            nonlocal table
            if table is None:
                table = np.ones(3)
            return x * table
        return by_cell, lambda: by_cell.__closure__[0].cell_contents

    by_cell, cell_table = closure()

    def change_global():
        _LAZY_TABLE[:] = 5.0
    return [(layer, lambda: layer.mask.__setitem__(1, 4.0)),
            (layer, lambda: setattr(layer, "scale", np.full(3, -1.0))),
            (by_global, change_global),
            (by_dict_entry, lambda: cache["w"].__imul__(3.0)),
            (by_cell, lambda: cell_table().__setitem__(0, 7.0))]


@pytest.mark.parametrize("case", range(5))
def test_a_table_the_function_builds_on_its_first_call_is_read_as_it_is_afterwards(case):
    """`if self.mask is None: self.mask = np.ones(n)` makes the table once; NumPy's code reads
    whatever is there on later calls, changed in place or rebound by the user. The first trace
    compiled in the table it made; the next call traces again and reads it live (it was stale:
    every later call computed with the table as first built)."""
    global _LAZY_TABLE
    _LAZY_TABLE = None
    fun, change = _lazily_built_tables()[case]
    jitted = gradc.jit(fun)
    gradient = gradc.grad(lambda x: np.sum(fun(x) ** 2))
    x = np.array([1.0, -2.0, 3.0])
    np.testing.assert_allclose(jitted(x), fun(x), rtol=1e-15)
    gradient(x)
    change()
    want = fun(x)
    np.testing.assert_allclose(jitted(x), want, rtol=1e-15)
    np.testing.assert_allclose(jitted(x), want, rtol=1e-15)  # (the fast path)
    np.testing.assert_allclose(gradient(x), central_difference(lambda x: np.sum(fun(x) ** 2), x),
                               rtol=1e-7)


def _state_the_trace_changes():
    """Factories of (function, change between calls) whose function changes outside state as
    it runs (fuzz40a): each called anew for gradc's copy and NumPy's."""
    def flag():
        class Model:
            first_call = True

            def f(self, x):
                if self.first_call:  # (a data-dependent init on the first batch)
                    self.first_call = False
                    return x * 0.0
                return x
        return Model().f, None

    def previous_setting():
        class Model:
            prev = None

            def f(self, x):
                out = x * (1.0 if self.prev is None else self.prev)
                self.prev = 3.0
                return out
        return Model().f, None

    def shapes_seen():
        seen = set()

        def f(x):
            y = x if x.shape in seen else x * 0.5
            seen.add(x.shape)
            return y
        return f, None

    def dict_of_tables():
        class Model:
            cache = None

            def f(self, x):
                if self.cache is None:
                    self.cache = {"pos": np.linspace(1, 2, x.shape[0])}
                return x * self.cache["pos"]
        m = Model()
        return m.f, lambda: m.cache["pos"].__imul__(2.0)

    def rebuilt_for_a_shape():
        class Model:
            buf = np.zeros(0)

            def f(self, x):
                if self.buf.shape != x.shape:
                    self.buf = np.linspace(0, 1, x.shape[0])
                return x * self.buf
        m = Model()
        return m.f, lambda: m.buf.__imul__(2.0)

    def loop_over_a_keyed_list():
        cfg = {"scales": [1.0, 2.0]}

        def f(x):
            for s in cfg["scales"]:
                x = x * s + 1
            return x
        return f, lambda: cfg["scales"].append(3.0)

    def tables_split():
        st = types.SimpleNamespace()
        st.src = st.dst = np.array([0, 1])

        def f(x):
            return x[st.src] + 10 * x[st.dst]
        return f, lambda: setattr(st, "dst", np.array([2, 1]))

    def large_state_dict():
        params = {f"block{i}.scale": np.ones(3) for i in range(1100)}

        def f(x):
            return x * params["block1050.scale"]
        return f, lambda: params["block1050.scale"].__imul__(3.0)

    def appended_tables():
        tables = []

        def f(x):
            if not tables:
                tables.append(np.linspace(1, 2, x.shape[0]))
            return x * tables[0]
        return f, lambda: tables[0].__imul__(2.0)

    def class_table():
        class Model:
            TABLE = None  # (shared by the class, built on first use)

            def f(self, x):
                if Model.TABLE is None:
                    Model.TABLE = np.linspace(1, 2, x.shape[0])
                return x * Model.TABLE
        return Model().f, lambda: Model.TABLE.__imul__(2.0)

    def a_list_without_len():
        class Stream(list):
            def __len__(self):
                raise TypeError("Stream has no len()")
        buf = Stream([np.full(3, 2.0)])

        def f(x):
            return x * list.__getitem__(buf, 0)
        return f, None
    return [flag, previous_setting, shapes_seen, dict_of_tables, rebuilt_for_a_shape,
            loop_over_a_keyed_list, tables_split, large_state_dict, appended_tables,
            class_table, a_list_without_len]


@pytest.mark.parametrize("case", _state_the_trace_changes(), ids=lambda c: c.__name__)
def test_state_the_function_changes_as_it_runs_is_read_as_numpy_reads_it(case):
    """What the traced code changes outside (a flag it clears, a setting, a set of shapes seen,
    tables built on first use or for a new shape) was guarded by its value after the trace, so
    the compiled first-call program ran on every call; a list looped over by key was not
    guarded, nor the second name of an index table, nor entries past the walk's 1024th; a list
    whose len() raises crashed the walk. Each call is checked against NumPy's."""
    (fun, change), (reference, change_reference) = case(), case()
    jitted = gradc.jit(fun)
    x = np.array([1.0, -2.0, 3.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error", gradc.TraceEffectWarning)  # (none is a counter)
        for call in range(4):
            np.testing.assert_allclose(jitted(x), reference(x), rtol=1e-14)
            if call == 1 and change is not None:
                change()
                change_reference()


def test_an_outside_array_the_function_binds_anew_after_reading_it_is_refused():
    """`self.W = self.W * 0.5` after reading self.W: NumPy's W halves on every call; the
    compiled function read the new W from its first call on (1.5 for 3.0), never halving it."""
    class Decaying:
        def __init__(self):
            self.W = np.ones(3)

        def f(self, x):
            y = (x * self.W).sum()
            self.W = self.W * 0.5
            return y

    line = Decaying.f.__code__.co_firstlineno + 2  # (the rebinding line, named)
    with pytest.raises(gradc.UnsupportedOpError, match=rf"bound `self\.W` \(at test_captures"
                                                       rf"\.py:{line}\).* to a new array after "
                                                       r"reading it"):
        gradc.jit(Decaying().f)(np.ones(3))

    class Agent:  # (fuzz46b: a DQN's target synced by deepcopy rebinds what holds the array:
        def __init__(self):  # the line of that store is named)
            self.online = types.SimpleNamespace(W=np.ones(3))
            self.target = copy.deepcopy(self.online)

        def f(self, x):
            y = (x * self.online.W).sum() + (x * self.target.W).sum()
            self.target = copy.deepcopy(self.online)
            return y

    line, agent = Agent.f.__code__.co_firstlineno + 2, Agent()
    step = gradc.jit(agent.f)
    with pytest.raises(gradc.UnsupportedOpError, match=rf"bound `self\.target\.W` \(at "
                                                       rf"test_captures\.py:{line}\)"):
        for _ in range(3):  # (the first copy holds the same values: what the trace read)
            step(np.ones(3))
            agent.online.W -= 0.5


def test_a_module_imported_inside_the_function_is_read_live(tmp_path, monkeypatch):
    """`import mymod` inside the traced function (a lazy import): the module is no global of
    the function, so the walk never met it and mymod.W was compiled in, stale after an update
    in place. Imported before the first call, or first by the trace itself (the next call then
    traces again and reads it live)."""
    import sys
    for name in ("lazy_weights_a", "lazy_weights_b"):
        (tmp_path / f"{name}.py").write_text("import numpy as np\nW = np.ones(3)\nS = 2.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import lazy_weights_a  # noqa: F401 (imported before the first call)

    def before(x):
        import lazy_weights_a
        return x * lazy_weights_a.W * lazy_weights_a.S

    def by_the_trace(x):
        import lazy_weights_b
        return x * lazy_weights_b.W * lazy_weights_b.S

    x = np.arange(3.0)
    for fun, name in ((before, "lazy_weights_a"), (by_the_trace, "lazy_weights_b")):
        jitted = gradc.jit(fun)
        np.testing.assert_array_equal(jitted(x), fun(x))
        module = sys.modules[name]
        module.W[:] = 5.0
        np.testing.assert_array_equal(jitted(x), fun(x))
        module.S = 3.0
        np.testing.assert_array_equal(jitted(x), fun(x))
        del sys.modules[name]


def _doubled(z):
    return z * 2.0


def test_a_helper_whose_code_is_replaced_traces_again():
    """IPython's %autoreload puts an edited function's new code into the function object
    (`helper.__code__ = ...`): the compiled caller kept running the old code."""
    def loss(x):
        return np.sum(_doubled(x))

    jitted, x = gradc.jit(loss), np.ones(3)
    saved = _doubled.__code__
    try:
        assert jitted(x) == 6.0
        _doubled.__code__ = (lambda z: z * 3.0).__code__
        assert jitted(x) == loss(x) == 9.0
        assert jitted(x) == 9.0  # (the fast path)
    finally:
        _doubled.__code__ = saved


def _programs_that_set_state():
    """Factories of (state, function, change between calls) whose function assigns outside
    state (fuzz40f): each called anew for gradc's copy and NumPy's."""
    class Model:
        def __init__(self):
            self.training, self.first, self.phase, self.status = True, True, False, "idle"
            self.W, self.last_shape = None, None

        def forward(self, x):
            return x * 0.5 if self.training else x

        def predict(self, x):  # (model.eval() inside: a flag set, then read by a helper)
            self.training = False
            return self.forward(x)

        def train_out(self, x):
            self.training = True
            return self.forward(x)

        def once(self, x):
            if self.first:
                self.first = False
                return x * 2.0
            return x * 3.0

        def toggled(self, x):
            self.phase = not self.phase
            return x * (2.0 if self.phase else 5.0)

        def lazy(self, x):
            if self.W is None:
                self.W = np.linspace(-1.0, 1.0, x.shape[-1])
            self.status = "running"
            self.last_shape = x.shape
            return x * self.W

    def reset(m):
        m.first, m.W, m.status = True, None, "idle"
    return Model, reset


def test_state_the_function_sets_is_set_on_every_call_as_numpy_sets_it():
    """A program is guarded by what its trace read, and by the value it left where the code
    assigns: a program whose trace changed a value (model.eval()'s flag, a first-call flag, a
    toggle, a table built where None was) never runs again, since it would not make the change;
    a later call traces again. (Guarded by the value read alone, two compiled methods that set
    a shared `training` flag stopped setting it; a flag or table the user reset brought back
    the first trace's program; a value only assigned went stale.)"""
    Model, reset = _programs_that_set_state()
    ours, numpys = Model(), Model()
    compiled = {name: gradc.jit(getattr(ours, name))
                for name in ("forward", "predict", "train_out", "once", "toggled", "lazy")}
    x = np.array([1.0, -2.0, 3.0])
    fields = ("training", "first", "phase", "status", "last_shape")
    for call in range(6):
        if call == 3:
            reset(ours)
            reset(numpys)
        for name, function in compiled.items():
            xs = x if call % 2 else x[None, :]
            np.testing.assert_array_equal(function(xs), getattr(numpys, name)(xs), err_msg=name)
            assert [getattr(ours, f) for f in fields] == [getattr(numpys, f) for f in fields]
            assert (ours.W is None) == (numpys.W is None)


def test_threads_calling_a_function_that_sets_state_are_not_refused():
    """Four threads calling one function whose trace clears a flag and builds a table: the
    run after a trace skips the guards only in the thread that traced, and a call retries
    while other threads change what its trace read (3 of 40 calls were refused: changed while
    traced again)."""
    class Layer:
        def __init__(self):
            self.first, self.buf = True, None

        def __call__(self, x):
            if self.buf is None:
                self.buf = np.full(3, 2.0)
            if self.first:
                self.first = False
            return x * self.buf

    f = gradc.jit(Layer())

    def work():
        for _ in range(10):
            np.testing.assert_array_equal(f(np.ones(3)), np.full(3, 2.0))

    errors = errors_in_threads(work)
    assert not errors, errors[0]


TRAINED_W = np.ones((3, 2))


def test_weights_another_thread_updates_in_place_while_a_trace_runs_are_not_its_doing():
    """A trainer thread's `W -= lr * g` while another thread's jitted forward traced (a new
    batch size) was blamed on the traced function, "changed W in place", and refused (an async
    evaluation thread; fuzz41d). Code that writes into no array cannot have: the change is
    another thread's, and W is read live as before."""
    started, written = threading.Event(), threading.Event()

    def wait_for_the_trainer():
        started.set()
        written.wait(10)

    def forward(x):
        h = x @ TRAINED_W
        wait_for_the_trainer()
        return h.sum(axis=1)

    def trainer():
        started.wait(10)
        TRAINED_W[...] -= 0.5
        written.set()

    thread = threading.Thread(target=trainer)
    thread.start()
    f = gradc.jit(forward)
    x = np.ones((4, 3))
    f(x)  # (traced while the trainer wrote: refused before)
    thread.join()
    np.testing.assert_allclose(f(x), x @ TRAINED_W @ np.ones(2), rtol=1e-12)


class _Running:
    def __init__(self):
        self.rm = np.zeros(3)

    def loss(self, w, x, assigned, evaluated):
        h = x * w
        self.rm = 0.9 * self.rm + 0.1 * h.mean(0)  # (a traced value: written back after calls)
        assigned.set()
        evaluated.wait(1.0)  # (the other thread's call waits for this trace to end)
        return np.sum(h ** 2)

    def evaluate(self, x):
        return x - self.rm


def test_a_compiled_call_waits_for_another_threads_trace_that_holds_a_placeholder():
    """While a trace runs, what its code assigns outside (`self.rm = ...`) holds a placeholder
    until the trace undoes it: another thread's compiled call reading self.rm then was refused
    ("belongs to another graph") or died with a bare KeyError (fuzz41d). It waits for the trace
    (trace.TRACING) and reads the array."""
    model, x = _Running(), np.ones((2, 3))
    evaluate = gradc.jit(model.evaluate)
    evaluate(x)
    assigned, evaluated, results = threading.Event(), threading.Event(), []

    def other_thread():
        assigned.wait(10)
        try:
            results.append(evaluate(x))
        except BaseException as e:  # reported below
            results.append(e)
        evaluated.set()

    thread = threading.Thread(target=other_thread)
    thread.start()
    grad = gradc.grad(model.loss)
    grad(np.ones(3), x, assigned, evaluated)
    thread.join()
    assert isinstance(results[0], np.ndarray), results
    # (before the grad call wrote self.rm back, or after: the values either way)
    assert np.allclose(results[0], x) or np.allclose(results[0], x - model.rm), results


DTYPE, WINDOW, COEFFS, HYPER = np.float32, slice(0, 2), [1.0, 2.0], {"a": 1.0, "b": 2.0}


def _hyper_sum(x, a, b):
    return x * a + b


def _settings_reads(x):
    total = 0.0
    for key in HYPER:  # (HYPER[key]: no key the code names)
        total = total + x * HYPER[key]
    return ((x * 1.5).astype(DTYPE), x[WINDOW], np.polyval(COEFFS, x), total,
            _hyper_sum(x, **HYPER))


def test_dtypes_slices_number_lists_and_dicts_walked_by_the_code_are_guarded():
    """fuzz42b: a global dtype given to .astype, a slice as an index, a list of coefficients
    NumPy walks (np.polyval) that grows or is rebound longer, a dict's values read by a loop
    over its keys or unpacked with ** were compiled in unchecked: stale after a change."""
    global DTYPE, WINDOW, COEFFS
    f = gradc.jit(_settings_reads)
    x = np.linspace(-1.0, 1.0, 4)
    changes = [lambda: None, lambda: globals().update(DTYPE=np.float64),
               lambda: globals().update(WINDOW=slice(1, 4)), lambda: COEFFS.append(3.0),
               lambda: globals().update(COEFFS=(1.0, 2.0, 3.0, 4.0)),
               lambda: HYPER.update(a=5.0), lambda: globals().update(DTYPE=np.dtype("f4"))]
    try:
        for change in changes:
            change()
            for got, want in zip(f(x), _settings_reads(x)):
                assert got.dtype == want.dtype and got.shape == want.shape
                np.testing.assert_array_equal(got, want)
    finally:
        DTYPE, WINDOW, COEFFS = np.float32, slice(0, 2), [1.0, 2.0]
        HYPER.update(a=1.0)


@dataclasses.dataclass
class _Kernel:
    ls: float = 1.0
    sf: float = 1.0


KERNEL, ROWS = _Kernel(), [[1.0, 0.5, 0.0], [0.0, 1.0, 2.0]]


def _rbf(d2, ls, sf):
    return sf ** 2 * np.exp(-0.5 * d2 / ls ** 2)


def _read_whole(x):
    return (np.sum(_rbf((x[:, None] - x[None, :]) ** 2, **dataclasses.asdict(KERNEL)))
            + sum(vars(KERNEL).values()), np.matmul(ROWS, x))


def test_attributes_read_whole_and_a_matrix_kept_as_rows_are_guarded():
    """fuzz42b: `**dataclasses.asdict(cfg)` and `vars(cfg)` read every field, and a matrix kept
    as a list of rows grows by a row: each was compiled in, stale."""
    global ROWS
    f = gradc.jit(_read_whole)
    x = np.linspace(-1.0, 1.0, 3)
    changes = [lambda: None, lambda: setattr(KERNEL, "ls", 0.3), lambda: ROWS.append([1.0] * 3),
               lambda: globals().update(ROWS=tuple(ROWS) + ((2.0, 2.0, 2.0),))]
    try:
        for change in changes:
            change()
            for got, want in zip(f(x), _read_whole(x)):
                np.testing.assert_allclose(got, want, rtol=1e-13)
    finally:
        KERNEL.ls, ROWS = 1.0, [[1.0, 0.5, 0.0], [0.0, 1.0, 2.0]]


class _KeyMemory:
    def __init__(self):
        self.keys = np.empty((0, 2))

    def read(self, q):
        return np.sum(np.exp(self.keys @ q)) + q.sum()


def test_an_outside_array_with_no_elements_is_guarded_by_its_shape():
    """fuzz42f: an empty array (a KV cache or memory started as np.zeros((0, d)), an empty
    index table) was compiled in: grown or rebound later, it was never seen."""
    memory, reference = _KeyMemory(), _KeyMemory()
    f = gradc.jit(memory.read)
    q = np.ones(2)
    for rows in (None, np.ones((3, 2)), np.full((1, 2), 0.5)):
        if rows is not None:
            memory.keys = reference.keys = rows
        np.testing.assert_allclose(f(q), reference.read(q), rtol=1e-13)


MEMORY = [np.full(3, 1.0), np.full(3, 2.0)]


def _stacked(x):
    return x * np.stack(MEMORY).sum(0)  # (the whole list: its length matters)


def test_a_list_of_arrays_read_whole_traces_again_when_it_grows():
    """fuzz42e: np.stack(BUF) of an outside list that grows kept its old length (a replay
    memory stacked each call); a list only indexed (BUFFER[0]) may still grow untraced."""
    f = gradc.jit(_stacked)
    x = np.ones(3)
    try:
        for _ in range(3):
            np.testing.assert_array_equal(f(x), _stacked(x))
            MEMORY.append(np.full(3, float(len(MEMORY) + 1)))
    finally:
        del MEMORY[2:]


class _Optional:
    def __init__(self):
        self.W = np.ones((3, 2))

    def forward(self, x):
        h = x @ self.W
        if hasattr(self, "temperature"):
            h = h / self.temperature
        return h.sum() * getattr(self, "gain", 1.0)


def test_an_attribute_asked_for_by_name_and_set_later_is_seen(monkeypatch, capsys):
    """fuzz42f: hasattr(self, "temperature") / getattr(self, "gain", 1.0) kept their first
    answer after the attributes were set; absent and unchanged, nothing traces again."""
    monkeypatch.setenv("GRADC_LOG", "compiles")
    net, reference = _Optional(), _Optional()
    f = gradc.jit(net.forward)
    x = np.ones((2, 3))
    for _ in range(3):
        assert f(x) == reference.forward(x)
    assert capsys.readouterr().err.count("compiled jit(") == 1
    for obj in (net, reference):
        obj.temperature, obj.gain = 2.0, 10.0
    assert f(x) == reference.forward(x) == 60.0
    del net.temperature, reference.temperature
    assert f(x) == reference.forward(x)


class _Stepper:
    def __init__(self):
        self.W = np.ones(3)
        self.history = []


def test_presence_tests_and_none_tests_do_not_trace_again_as_values_change():
    """fuzz42g: `if not hasattr(m, "steps")` with the loop setting m.steps = i, and
    `if m.history is not None` with the loop appending to it, traced again on every call
    (their presence and None-ness are what the code reads, not the value or the length)."""
    import warnings as _warnings
    m = _Stepper()

    def f(x):
        scale = 2.0 if not hasattr(m, "steps") else 3.0
        return x * m.W * scale * (1.0 if m.history is not None else 0.0)

    jf = gradc.jit(f)
    x = np.ones(3)
    with _warnings.catch_warnings():
        _warnings.simplefilter("error", gradc.RecompileWarning)
        for i in range(12):
            np.testing.assert_array_equal(jf(x), f(x))
            m.steps = i
            m.history.append(i)


REPLAY = {"obs": [np.full(3, 1.0), np.full(3, 2.0)], "step": 0}


def _stacked_entry(x):
    return x * np.stack(REPLAY["obs"]).sum(0)


def test_a_list_kept_in_a_dict_and_used_whole_traces_again_when_it_grows():
    """fuzz42g: np.stack(self.memory["obs"]) kept its traced length after the loop appended."""
    f = gradc.jit(_stacked_entry)
    x = np.ones(3)
    try:
        for _ in range(3):
            np.testing.assert_array_equal(f(x), _stacked_entry(x))
            REPLAY["obs"].append(np.full(3, 5.0))
            REPLAY["step"] += 1  # (read by no code: no retrace for it)
    finally:
        del REPLAY["obs"][2:]


def test_weights_in_an_object_array_are_read_live():
    """fuzz42f: np.array(list_of_weights, dtype=object), walked as the list it stands for: an
    in-place update and a new array stored in it were not seen (compiled in)."""
    weights = np.empty(2, dtype=object)
    weights[0], weights[1] = RNG.standard_normal((3, 4)), RNG.standard_normal((4, 1))

    def forward(x):
        for W in weights:
            x = np.tanh(x @ W)
        return x.sum()

    jf = gradc.jit(forward)
    np.testing.assert_allclose(jf(X), forward(X), rtol=1e-12)
    weights[0] -= 0.5
    weights[1] = np.full((4, 1), 2.0)
    np.testing.assert_allclose(jf(X), forward(X), rtol=1e-12)


class _FilterBank:
    def __init__(self):
        self.H = np.ones(3, complex)
        self.hp = np.zeros(1, dtype=[("lr", "f8"), ("wd", "f8")])
        self.hp["lr"] = 0.5
        self.tag = np.array(["relu"])

    def __call__(self, x):
        scale = 2.0 if self.tag[0] == "gelu" else 1.0
        return np.sum(x[:3] * np.abs(self.H)) * self.hp["lr"][0] * scale


@pytest.mark.parametrize("change", [
    lambda m: setattr(m, "H", np.full(3, 2 + 0j)),  # (complex: rebound)
    lambda m: m.H.__imul__(2),  # (in place)
    lambda m: m.hp["lr"].__setitem__(0, 2.0),  # (a structured array's field)
    lambda m: m.tag.__setitem__(0, "gelu"),  # (text)
])
def test_complex_structured_and_text_arrays_numpy_reads_alone_are_checked(change):
    """fuzz42f: an outside array of another kind than float, int or bool, read by NumPy alone
    (np.abs of a complex filter bank, a field of a structured array of settings), was compiled
    in and never checked."""
    m = _FilterBank()
    jm = gradc.jit(m)
    x = RNG.standard_normal(4)
    np.testing.assert_allclose(jm(x), m(x), rtol=1e-12)
    change(m)
    np.testing.assert_allclose(jm(x), m(x), rtol=1e-12)


def test_settings_kept_as_fractions_decimals_or_in_a_module_made_in_code_are_checked():
    """fuzz42f, fuzz42g: Fraction and Decimal settings were compiled in unchecked; so was a
    config module made with types.ModuleType, and an attribute getattr(config, "scale", 1.0)
    found absent there when traced."""
    import decimal
    import fractions
    cfg = types.SimpleNamespace(keep=fractions.Fraction(1, 2), wd=decimal.Decimal("0.5"))
    config = types.ModuleType("config")
    config.bias = 1.0

    def f(x):
        return (np.sum(x * float(cfg.keep)) + float(cfg.wd) * np.sum(x ** 2)
                + config.bias * getattr(config, "scale", 1.0))

    jf = gradc.jit(f)
    x = RNG.standard_normal(4)
    for change in (lambda: setattr(cfg, "keep", fractions.Fraction(1, 3)),
                   lambda: setattr(cfg, "wd", decimal.Decimal("0.25")),
                   lambda: setattr(config, "bias", 3.0),
                   lambda: setattr(config, "scale", 0.5)):
        np.testing.assert_allclose(jf(x), f(x), rtol=1e-12)
        change()
    np.testing.assert_allclose(jf(x), f(x), rtol=1e-12)


@dataclasses.dataclass
class _Opt:
    lr: float = 0.1


@dataclasses.dataclass
class _Cfg:
    scale: float = 2.0
    opt: _Opt = dataclasses.field(default_factory=_Opt)

    def __call__(self, x):  # (the dataclass's own method reads itself whole)
        return x * dataclasses.asdict(self)["scale"] * dataclasses.astuple(self)[1][0]


def test_nested_dataclasses_read_whole_and_asdict_of_self_are_checked():
    """fuzz42e: asdict(cfg) reads cfg.opt.lr too (only cfg's own fields were guarded), and
    asdict(self) in the dataclass's method read self's fields unguarded: stale after a change."""
    cfg = _Cfg()

    def f(x):
        return x * dataclasses.asdict(cfg)["opt"]["lr"]

    jf, jm = gradc.jit(f), gradc.jit(cfg.__call__)
    x = np.ones(3)
    for change in (lambda: setattr(cfg.opt, "lr", 0.7), lambda: setattr(cfg, "scale", 5.0),
                   lambda: setattr(cfg, "opt", _Opt(0.25))):
        np.testing.assert_allclose(jf(x), f(x))
        np.testing.assert_allclose(jm(x), cfg(x))
        change()
    np.testing.assert_allclose(jf(x), f(x))
    np.testing.assert_allclose(jm(x), cfg(x))


def test_a_list_read_by_getattr_or_vars_and_used_whole_has_its_length_checked():
    """fuzz42g: np.stack(getattr(self, "buf")) kept the length of the list when traced."""
    class Memory:
        def __init__(self):
            self.buf = [np.ones(2)]

        def by_getattr(self, x):
            return x * np.stack(getattr(self, "buf")).sum()

        def by_vars(self, x):
            return x * np.stack(vars(self)["buf"]).sum()

    for name in ("by_getattr", "by_vars"):
        m = Memory()
        f, x = gradc.jit(getattr(m, name)), np.ones(2)
        np.testing.assert_allclose(f(x), getattr(m, name)(x))
        m.buf.append(np.full(2, 3.0))
        np.testing.assert_allclose(f(x), getattr(m, name)(x), err_msg=name)


def test_a_large_array_numpy_alone_reads_and_the_code_binds_anew_is_checked():
    """fuzz43b: `self.W = np.clip(self.W, -0.1, 0.1)` of a W over 4096 elements (which only
    NumPy reads) compiled the first call's W in: an SGD step rebinding W was never seen. Its
    contents are checked now, as a small one's are (the next call traces again and binds it)."""
    class Net:
        def __init__(self):
            self.W = np.full((80, 80), 0.05)

        def loss(self, x):
            self.W = np.clip(self.W, -0.1, 0.1)
            return np.sum(np.tanh(x @ self.W))

    net, reference, x = Net(), Net(), np.ones((5, 80))
    f = gradc.jit(net.loss)
    for step in range(3):
        np.testing.assert_allclose(f(x), reference.loss(x), rtol=1e-12, err_msg=f"step {step}")
        np.testing.assert_array_equal(net.W, reference.W)
        net.W = net.W - 0.07
        reference.W = reference.W - 0.07


def test_an_attribute_read_by_vars_get_with_a_default_and_set_later_is_seen():
    """fuzz43b: vars(self).get("scale", 1.0) and self.__dict__.get(...) of an attribute absent
    when traced were compiled in (getattr with a default was guarded)."""
    class Net:
        def by_vars(self, x):
            return x * vars(self).get("scale", 1.0)

        def by_dict(self, x):
            return x * self.__dict__.get("shift", 0.0) + x

    net, x = Net(), np.ones(3)
    by_vars, by_dict = gradc.jit(net.by_vars), gradc.jit(net.by_dict)
    np.testing.assert_allclose(by_vars(x), x)
    np.testing.assert_allclose(by_dict(x), x)
    net.scale, net.shift = 0.5, 2.0
    np.testing.assert_allclose(by_vars(x), net.by_vars(x))
    np.testing.assert_allclose(by_dict(x), net.by_dict(x))


def test_one_attribute_read_through_vars_does_not_check_the_others(monkeypatch, capsys):
    """fuzz43c: vars(self).get("scale", 1.0) and vars(self)["shift"] read one attribute each
    but checked every attribute, so a step counter the loop keeps on the model traced again on
    every step (and the warning named the counter)."""
    monkeypatch.setenv("GRADC_LOG", "compiles")

    class Net:
        def __init__(self):
            self.shift, self.step = 1.0, 0

        def forward(self, x):
            return x * vars(self).get("scale", 1.0) + vars(self)["shift"]

    net, x = Net(), np.ones(3)
    f = gradc.jit(net.forward)
    for _ in range(5):
        np.testing.assert_allclose(f(x), net.forward(x))
        net.step += 1
    assert capsys.readouterr().err.count("compiled jit(forward)") == 1
    net.shift = 2.0
    np.testing.assert_allclose(f(x), net.forward(x))


@pytest.mark.parametrize("case", ["remember", "swap attributes", "swap entries", "rotate",
                                  "ordered cache", "record", "records in a list", "slot",
                                  "snapshot", "nested records", "slotted record"])
def test_outside_arrays_moved_between_places_outside_follow_numpy(case):
    """fuzz45a: a closure's model (`m` a cell) remembering its previous weights (`m.prev =
    m.W`), swapping attributes or dict entries, rotating a pair of buffers of which the model
    also names one (`a, b = m.pair; m.pair = (b, a)`, m.W is pair[0]), an OrderedDict cache
    of the weights: refused with a message about cells, or silently wrong (the rotation
    wrote one array into both places; the OrderedDict kept an old W), once outside arrays
    were written back on every call. A record made each call (`m.used = Record(w=m.W)`)
    kept the W of the trace. Stop 46: so did records made in a list (`m.log =
    [SimpleNamespace(w=m.W)]`), a __slots__ attribute (`m.keep.w = m.W`), a copy.deepcopy of
    a dict holding W (no check of W's contents)."""
    @dataclasses.dataclass(frozen=True)
    class Record:
        w: np.ndarray
        step: int

    class Keep:
        __slots__ = ("w",)

    @dataclasses.dataclass(slots=True, frozen=True)
    class Slotted:
        w: np.ndarray

    def make():
        W = np.full(3, 1.0)
        m = types.SimpleNamespace(W=W, prev=None, cur=np.full(3, 2.0), old=np.full(3, 10.0),
                                  pair=(W, W * 10), cache=None, keep=Keep(),
                                  registry={"w": W})
        m.d = {"a": m.cur, "b": m.old}

        def f(x):
            if case == "records in a list":
                m.log = [types.SimpleNamespace(w=m.W), {"w": m.W}]
                return x * np.tanh(m.W)
            if case == "nested records":
                m.rec = types.SimpleNamespace(a=types.SimpleNamespace(b=m.W), l=[m.W])
                return x * m.W
            if case == "slotted record":
                m.rec = Slotted(m.W)
                return x * m.W
            if case == "slot":
                m.keep.w = m.W
                return x * m.W
            if case == "snapshot":
                m.snap = copy.deepcopy(m.registry)
                return x * m.W
            if case == "remember":
                old = m.prev if m.prev is not None else m.W
                m.prev = m.W
                return x * (m.W - old)
            if case == "swap attributes":
                a, b = m.cur, m.old
                m.cur, m.old = m.old, m.cur
                return x * a - b
            if case == "swap entries":
                m.d["a"], m.d["b"] = m.d["b"], m.d["a"]
                return x * m.d["a"] - m.d["b"]
            if case == "rotate":
                a, b = m.pair
                m.pair = (b, a)
                return x * a - b
            if case == "record":
                m.used = Record(w=m.W, step=3)
                return x * np.tanh(m.W)
            m.cache = collections.OrderedDict(x=x, W=m.W)
            return x @ np.diag(m.W)
        return f, m

    (f, m), (reference, m_reference) = make(), make()
    compiled = gradc.jit(f)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gradc.RecompileWarning)
        for i in range(6):
            x = np.full(3, i + 1.0)
            np.testing.assert_allclose(compiled(x), reference(x), rtol=1e-14)
            if case == "ordered cache":
                assert type(m.cache) is collections.OrderedDict and m.cache["W"] is m.W
            if case == "record":
                assert m.used.w is m.W and m.used.step == 3
                np.testing.assert_array_equal(m.used.w, m_reference.used.w)
            if case == "records in a list":
                assert m.log[0].w is m.W and m.log[1]["w"] is m.W
            if case == "slot":
                assert m.keep.w is m.W
            if case == "nested records":
                assert m.rec.a.b is m.W and m.rec.l[0] is m.W
            if case == "slotted record":
                assert m.rec.w is m.W
            if case == "snapshot":
                np.testing.assert_array_equal(m.snap["w"], m_reference.snap["w"])
            if i % 2 and case != "snapshot":  # (updated in place on every call)
                m.W = m.W + 0.5
                m_reference.W = m_reference.W + 0.5
            else:
                m.W += 0.25
                m_reference.W += 0.25
            if case == "rotate" and i % 2:  # (the model's W rebound: the pair keeps its own)
                m.W, m_reference.W = m.pair[0], m_reference.pair[0]


PREVIOUS_W = CURRENT_W = np.arange(6.0).reshape(3, 2) * 0.1


def _step_remembering_the_global_weights(x):
    global PREVIOUS_W, CURRENT_W
    g = x.T @ (x @ CURRENT_W)
    PREVIOUS_W = CURRENT_W
    CURRENT_W = CURRENT_W - 0.1 * g
    return g.sum()


@pytest.mark.parametrize("where", ["attribute", "global"])
def test_remembering_the_weights_in_a_place_that_starts_out_holding_them(where):
    """fuzz45b: `self.prev = self.W; self.W = self.W - lr * g` where __init__ set prev to W
    (and so with module globals): the store bound nothing new when traced, so nothing was
    written back, and from the second call on prev held an older array than NumPy's."""
    global PREVIOUS_W, CURRENT_W

    class Model:
        def __init__(self):
            self.W = np.arange(6.0).reshape(3, 2) * 0.1
            self.prev = self.W

        def step(self, x):
            g = x.T @ (x @ self.W)
            self.prev = self.W
            self.W = self.W - 0.1 * g
            return g.sum()

    model, reference = Model(), Model()
    if where == "attribute":
        compiled = gradc.jit(model.step)
    else:
        PREVIOUS_W = CURRENT_W = np.arange(6.0).reshape(3, 2) * 0.1
        compiled = gradc.jit(_step_remembering_the_global_weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gradc.RecompileWarning)
        for i in range(4):
            x = np.random.default_rng(i).standard_normal((4, 3))
            start = model.W if where == "attribute" else CURRENT_W
            np.testing.assert_allclose(compiled(x), reference.step(x), rtol=1e-12)
            previous, now = ((model.prev, model.W) if where == "attribute"
                             else (PREVIOUS_W, CURRENT_W))
            assert previous is start
            np.testing.assert_allclose(previous, reference.prev, rtol=1e-12)
            np.testing.assert_allclose(now, reference.W, rtol=1e-12)


def test_a_history_of_weights_made_again_from_itself_grows_as_numpys(monkeypatch, capsys):
    """fuzz45b: `self.hist = [self.W] + self.hist[:1]` (the last two weights): the list's length,
    read only by a slice, was not checked, so the list stayed one long (the trace's)."""
    monkeypatch.setenv("GRADC_LOG", "compiles")
    class Model:
        def __init__(self):
            self.W = np.arange(6.0).reshape(3, 2) * 0.1
            self.hist = []

        def step(self, x):
            out = x @ self.W
            self.hist = [self.W] + self.hist[:1]
            self.W = self.W - 0.05 * (x.T @ out)
            return out.sum()

    model, reference = Model(), Model()
    compiled = gradc.jit(model.step)
    for i in range(8):
        x = np.random.default_rng(i).standard_normal((4, 3))
        np.testing.assert_allclose(compiled(x), reference.step(x), rtol=1e-12)
        assert len(model.hist) == len(reference.hist) == min(i + 1, 2)
        for mine, theirs in zip(model.hist, reference.hist):
            np.testing.assert_allclose(mine, theirs, rtol=1e-12)
    compiles = capsys.readouterr().err.count("compiled jit(step)")
    assert 1 <= compiles <= 4, compiles  # (the length grows twice; an entry no longer moved
    # is checked by contents once)


@pytest.mark.parametrize("case", ["lagged copies", "last two copies", "last four by reference",
                                  "record of a copy", "checkpoint", "handle on a dict"])
def test_weights_shifted_through_places_each_call_follow_numpy(case):
    """fuzz46b: `self.c = self.b; self.b = self.a; self.a = self.W.copy()` (lagged weights in
    the loss): the traced call's write-back of b read a's place after the trace had put its
    copy there (b took the copy; the loss of the third call was 96 for NumPy's 56); `self.hist
    = [self.hist[-1], self.W.copy()]` kept the first copy (it sat in the written-back list,
    unchecked); `self.hist = self.hist[-3:] + [self.W]` where W was appended twice (updated
    in place between) took hist[0] for hist[1] once they parted. A record made of a copy
    (`self.used = SimpleNamespace(w=self.W.copy())`) and a checkpoint (`copy.deepcopy(self.
    layer)`) kept the first call's copy; `self.first = self.layers[0]` stored a copy of the
    dict, which the layers' own no longer reached."""
    class Model:
        def __init__(self):
            self.W = np.ones((3, 2))
            self.a, self.b, self.c = self.W.copy(), self.W.copy(), self.W.copy()
            self.hist = [self.W.copy(), self.W.copy()] if case == "last two copies" else []
            self.layer = types.SimpleNamespace(W=self.W)
            self.layers = [{"W": self.W}]

        def step(self, x):
            if case == "record of a copy":
                self.used = types.SimpleNamespace(w=self.W.copy())
                return (x @ self.W).sum()
            if case == "checkpoint":
                self.checkpoint = copy.deepcopy(self.layer)
                return (x @ self.layer.W).sum()
            if case == "handle on a dict":
                self.first = self.layers[0]
                return (x @ self.layers[0]["W"]).sum()
            if case == "lagged copies":
                y = x @ self.W + 10 * (x @ self.c)
                self.c = self.b
                self.b = self.a
                self.a = self.W.copy()
            elif case == "last two copies":
                y = x @ self.W
                self.hist = [self.hist[-1], self.W.copy()]
            else:
                y = x @ self.W
                self.hist = self.hist[-3:] + [self.W]
            return (y ** 2).sum()

    model, reference = Model(), Model()
    compiled = gradc.jit(model.step)
    x = np.full((4, 3), 0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gradc.RecompileWarning)
        for i in range(8):
            np.testing.assert_allclose(compiled(x), reference.step(x), rtol=1e-13)
            for name in "abc":
                np.testing.assert_array_equal(getattr(model, name), getattr(reference, name))
            assert len(model.hist) == len(reference.hist)
            for mine, theirs in zip(model.hist, reference.hist):
                np.testing.assert_array_equal(mine, theirs)
            if case == "record of a copy":
                np.testing.assert_array_equal(model.used.w, reference.used.w)
            if case == "checkpoint":
                np.testing.assert_array_equal(model.checkpoint.W, reference.checkpoint.W)
            if case == "handle on a dict":
                assert model.first is model.layers[0]
            if i % 2:  # (rebound, and updated in place)
                model.W, reference.W = model.W * 0.9, reference.W * 0.9
                model.layer.W, reference.layer.W = model.W, reference.W
                model.layers[0]["W"], reference.layers[0]["W"] = model.W, reference.W
            else:
                model.W += 0.01
                reference.W += 0.01


@pytest.mark.parametrize("reads_prev", [False, True])
def test_a_closure_remembering_its_previous_weights_traces_twice(monkeypatch, capsys,
                                                                 reads_prev):
    """fuzz46b: `nonlocal W, prev; prev = W; W = W - lr * g`: prev, only assigned, had its
    old array checked by contents, and every call traced again (25-35 ms a call); fuzz46c:
    so did prev assigned first and read after (`x @ prev`)."""
    monkeypatch.setenv("GRADC_LOG", "compiles")

    def make():
        W, prev = np.ones((3, 2)), None

        def step(x):
            nonlocal W, prev
            y = x @ W
            prev = W
            W = W - 0.1 * (x.T @ y)
            return (y ** 2).sum() + (np.sum(np.tanh(x @ prev)) if reads_prev else 0.0)
        return step, lambda: (W, prev)

    (step, state), (reference, reference_state) = make(), make()
    compiled = gradc.jit(step)
    x = np.full((4, 3), 0.1)
    for _ in range(6):
        np.testing.assert_allclose(compiled(x), reference(x), rtol=1e-13)
        for mine, theirs in zip(state(), reference_state()):
            np.testing.assert_allclose(mine, theirs, rtol=1e-13)
    compiles = capsys.readouterr().err.count("compiled jit(step)")
    assert 1 <= compiles <= 2, compiles  # (the second: prev was None)


@pytest.mark.parametrize("held", ["self", "argument"])
def test_fields_added_to_self_or_an_argument_the_code_walks_are_seen(held):
    """fuzz46f: `len(vars(self))` in a jitted bound method, and `vars(m)` of an object passed
    to value_and_grad: a cache the caller set and deleted between calls was not seen (the
    root object's attribute names were not checked, only those of objects reached from it)."""
    class Model:
        def __init__(self):
            self.W = np.ones(2)

        def forward(self, x):
            return np.sum(x * self.W) * len(vars(self))

    def loss(x, m):
        return np.sum(x * m.W) * len(vars(m))

    model, x = Model(), np.ones(2)
    compiled = (gradc.jit(model.forward) if held == "self"
                else gradc.value_and_grad(loss))
    for i in range(5):
        got = compiled(x) if held == "self" else compiled(x, model)[0]
        assert got == pytest.approx(2.0 * len(vars(model)))
        if i % 2:
            del model.cache
        else:
            model.cache = np.zeros(2)


@pytest.mark.parametrize("walk", ["items", "keyword arguments", "membership"])
def test_a_field_added_to_an_object_whose_attributes_the_code_walks_traces_again(walk):
    """fuzz46e: `for k, v in vars(cfg).items()`, `f(**vars(cfg))`, `"bias" in vars(cfg)`: a
    field the caller added or removed between calls was not seen (each field's value was
    checked, not which fields there are)."""
    cfg = types.SimpleNamespace(a=1.0, b=2.0)

    def scale(a, b, c=0.0):
        return a + b + c

    def f(x):
        if walk == "items":
            return x * sum(v for _, v in vars(cfg).items())
        if walk == "keyword arguments":
            return x * scale(**vars(cfg))
        return x * (3.0 if "c" in vars(cfg) else 1.0)

    compiled = gradc.jit(f)
    x = np.ones(2)
    for i in range(5):
        np.testing.assert_allclose(compiled(x), f(x))
        if i == 1:
            cfg.c = 10.0
        if i == 3:
            del cfg.a, cfg.c
            cfg.a = 4.0  # (the same names, another order: vars' order)


def test_a_traced_value_stored_in_a_record_nested_in_a_record_is_refused():
    """fuzz46d: `s.rec = NS(a=NS(h=None)); s.rec.a.h = np.tanh(x)` left gradc's placeholder in
    the record (one level down was refused; two were not looked at)."""
    s = types.SimpleNamespace(rec=None)

    def f(x):
        s.rec = types.SimpleNamespace(a=types.SimpleNamespace(h=None))
        s.rec.a.h = np.tanh(x)
        return np.sum(x)

    with pytest.raises(gradc.UnsupportedOpError, match=r"stored traced values .*`s\.rec`"):
        gradc.jit(f)(np.ones(3))
    assert s.rec is None


@pytest.mark.parametrize("update", ["rebound", "in place"])
@pytest.mark.parametrize("kept", ["itself", "in a tuple"])
def test_a_dict_from_outside_kept_elsewhere_stays_one_dict_beside_its_entries_updates(
        update, kept):
    """fuzz46c: `self.best = self.params` beside `self.params["W"] = ...` (or `-=`): the
    dict held a traced value when written back, so best became a copy of it, holding the
    weights before the update from the first call on; fuzz46d: so did `self.best =
    (self.params, self.layers)`."""
    class Model:
        def __init__(self):
            self.params, self.best, self.layers = {"W": np.ones((3, 2))}, None, [np.ones(2)]

        def step(self, x):
            g = x.T @ (x @ self.params["W"])
            if kept == "itself":
                self.best = self.params
            else:
                self.pair = (self.params, self.layers)
                self.best = self.pair[0]
            if update == "rebound":
                self.params["W"] = self.params["W"] - 0.1 * g
            else:
                self.params["W"] -= 0.1 * g
            return g.sum()

    model, reference = Model(), Model()
    compiled = gradc.jit(model.step)
    x = np.full((4, 3), 0.1)
    for _ in range(4):
        np.testing.assert_allclose(compiled(x), reference.step(x), rtol=1e-13)
        assert model.best is model.params
        if kept == "in a tuple":
            assert model.pair[0] is model.params and model.pair[1] is model.layers
        np.testing.assert_allclose(model.best["W"], reference.best["W"], rtol=1e-13)


def test_a_user_modules_attribute_the_function_assigns_is_written_back(tmp_path, monkeypatch):
    """fuzz46c: `sharedmod.w = np.tanh(x)` kept gradc's placeholder in the module after every
    call; `sharedmod.w = W` (an outside array) kept the first call's array."""
    import importlib
    import sys
    (tmp_path / "shared_state_mod.py").write_text("w = None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    shared = importlib.import_module("shared_state_mod")
    state = types.SimpleNamespace(W=np.ones(2))

    def step(x):
        h = np.tanh(x * state.W)
        shared.w = h
        shared.last_W = state.W
        return np.sum(h)

    compiled = gradc.jit(step)
    try:
        for i in range(3):
            x = np.full(2, 0.5 + i)
            assert compiled(x) == pytest.approx(np.sum(np.tanh(x * state.W)), rel=1e-13)
            assert type(shared.w) is np.ndarray and shared.last_W is state.W
            np.testing.assert_allclose(shared.w, np.tanh(x * state.W), rtol=1e-13)
            state.W = state.W + 1.0
    finally:
        sys.modules.pop("shared_state_mod", None)


@pytest.mark.parametrize("kind", ["deque", "defaultdict", "tuple subclass", "deque of weights"])
def test_a_cache_in_a_container_gradc_cannot_write_back_is_refused_at_its_line(kind):
    """fuzz45a: `self.cache = collections.deque([x, self.W])` left gradc's placeholder in the
    model (a NumPy backward then computed with it); a defaultdict or a tuple subclass was
    refused as one "passed to a compiled function", with no line."""
    class Pair(tuple):
        pass

    class Dense:
        def __init__(self):
            self.W, self.cache = np.linspace(-1, 1, 6).reshape(3, 2), None

        def forward(self, x):
            self.cache = {"deque": lambda: collections.deque([x, self.W]),
                          "deque of weights": lambda: collections.deque([self.W]),
                          "defaultdict": lambda: collections.defaultdict(int, x=x, W=self.W),
                          "tuple subclass": lambda: Pair((x, self.W))}[kind]()
            return x @ self.W

    layer = Dense()
    with pytest.raises(gradc.UnsupportedOpError, match=r"test_captures\.py:\d+: forward stored "
                                                       r"a \w+ holding .*`self\.cache`"):
        gradc.jit(layer.forward)(np.ones((4, 3)))
    assert layer.cache is None


def test_a_list_the_trace_made_in_a_dict_outside_is_appended_to_next_call_and_refused():
    """fuzz45b: `log.setdefault("loss", []).append(l)` (and a defaultdict(list)'s): the trace
    made the entry, and every call wrote back a list of its own one value, where NumPy's grows.
    The entry, made by the trace, is checked absent: the next call traces again, finds the
    list, and its append is refused by name. `stats["mu"] = mu` of a new key settles."""
    W = np.ones((3, 2)) * 0.1
    log, history, stats = {}, collections.defaultdict(list), {}

    def logged(x):
        total = np.sum(x @ W)
        log.setdefault("loss", []).append(total)
        history["loss"].append(total)
        return total

    def mean(x):
        total = np.sum(x @ W)
        stats["mu"] = total / 6
        return total

    f = gradc.jit(logged)
    f(np.ones((4, 3)))
    with pytest.raises(gradc.UnsupportedOpError, match=r"`log\['loss'\]\[1\]`"):
        f(np.ones((4, 3)))
    g = gradc.jit(mean)
    for i in range(4):
        x = np.full((4, 3), i + 1.0)
        assert g(x) == pytest.approx(np.sum(x @ W))
        assert stats["mu"] == pytest.approx(np.sum(x @ W) / 6)


def test_a_list_of_the_last_weights_kept_on_the_model_grows_as_numpys():
    """fuzz45b: `self.hist = ([self.W] + self.hist)[:3]`: the list's length, read by its own
    `+`, was not checked (taken for an index expression, x[i + 1]): gradc's stayed one long."""
    class Model:
        def __init__(self):
            self.W, self.hist = np.arange(6.0).reshape(3, 2) * 0.1, []

        def step(self, x):
            out = x @ self.W
            self.hist = ([self.W] + self.hist)[:3]
            self.W = self.W - 0.05 * (x.T @ out)
            return out.sum()

    model, reference = Model(), Model()
    step = gradc.jit(model.step)
    for i in range(5):
        x = np.random.default_rng(i).standard_normal((4, 3))
        assert step(x) == pytest.approx(reference.step(x), rel=1e-12)
        assert len(model.hist) == len(reference.hist)
        for mine, theirs in zip(model.hist, reference.hist):
            np.testing.assert_allclose(mine, theirs, rtol=1e-12)


@pytest.mark.parametrize("made", ["lambda", "partial", "nested closure", "default argument",
                                  "bound method"])
@pytest.mark.parametrize("where", ["attribute", "list", "dict entry", "global", "nonlocal"])
def test_a_function_made_in_the_trace_holding_a_traced_value_is_refused_and_undone(made, where):
    """Stop 47: `self.act = lambda y: y * h` (h traced) kept gradc's placeholder in the
    function stored outside; called after the call, it computed with no number at all (a
    partial, a default argument and a bound method of an object holding h too)."""
    global _MADE_FUNCTION
    s = types.SimpleNamespace(act=None, hooks=[], table={})
    _MADE_FUNCTION, cell = None, None

    class Scale:
        def __init__(self, v):
            self.v = v

        def __call__(self, y):
            return y * self.v

    def make(h):
        if made == "lambda":
            return lambda y: y * h
        if made == "partial":
            return functools.partial(np.multiply, h)
        if made == "nested closure":
            return (lambda hh: (lambda y: y * hh))(h)
        if made == "default argument":
            return lambda y, h=h: y * h
        return Scale(h).__call__

    def f(x):
        global _MADE_FUNCTION
        nonlocal cell
        h = np.tanh(x)
        if where == "attribute":
            s.act = make(h)
        elif where == "list":
            s.hooks.append(make(h))
        elif where == "dict entry":
            s.table["act"] = make(h)
        elif where == "global":
            _MADE_FUNCTION = make(h)
        else:
            cell = make(h)
        return np.sum(h)

    with pytest.raises(gradc.UnsupportedOpError,
                       match=r"stored traced values .*a function holding a"):
        gradc.jit(f)(np.ones(3))
    assert (s.act, s.hooks, s.table, _MADE_FUNCTION, cell) == (None, [], {}, None, None)


_MADE_FUNCTION = None


def test_a_function_made_in_the_trace_holding_only_outside_state_is_kept():
    """Stop 47's refusal is of functions holding traced values: one that reads the model's
    weights when called (`self.predict = lambda y: y @ self.W`) is stored as NumPy stores it."""
    s = types.SimpleNamespace(W=np.ones((3, 2)), predict=None)

    def f(x):
        s.predict = lambda y: y @ s.W
        return np.sum(x @ s.W)

    g = gradc.jit(f)
    for i in range(2):
        s.predict = None
        assert g(np.full((2, 3), i + 1.0)) == pytest.approx(12 * (i + 1.0))
        np.testing.assert_allclose(s.predict(np.ones((1, 3))), np.full((1, 2), 3.0))
    s.W += 1
    np.testing.assert_allclose(s.predict(np.ones((1, 3))), np.full((1, 2), 6.0))


@pytest.mark.parametrize("walk", ["__dict__", "__dict__.items()", "vars", "dir", "getmembers",
                                  "self.__dict__"])
@pytest.mark.parametrize("change", ["changed", "added", "deleted"])
def test_attributes_named_at_run_time_by_a_walk_of_an_object_are_checked(walk, change):
    """Stop 47: `for k in cfg.__dict__: getattr(cfg, k)` (and dir(cfg), inspect.getmembers,
    self.__dict__.items()) read every attribute by a name built at run time: a changed value
    was compiled in, the first call's sum returned again."""
    import inspect

    class Config:
        def __init__(self):
            self.a, self.b = 1.0, 2.0

        def total(self, x):  # (the walk of its own attributes)
            t = x * 0
            for k, v in self.__dict__.items():
                t = t + v * x
            return np.sum(t)

    cfg = Config()

    def total(x):
        t = x * 0
        if walk == "__dict__":
            for k in cfg.__dict__:
                t = t + getattr(cfg, k) * x
        elif walk == "__dict__.items()":
            for _, v in cfg.__dict__.items():
                t = t + v * x
        elif walk == "vars":
            for k in vars(cfg):
                t = t + getattr(cfg, k) * x
        elif walk == "dir":
            for k in dir(cfg):
                if not k.startswith("_") and not callable(getattr(cfg, k)):
                    t = t + getattr(cfg, k) * x
        else:
            for k, v in inspect.getmembers(cfg):
                if not k.startswith("_") and not callable(v):
                    t = t + v * x
        return np.sum(t)

    f = gradc.jit(cfg.total if walk == "self.__dict__" else total)
    reference = cfg.total if walk == "self.__dict__" else total
    x = np.ones(3)
    assert f(x) == pytest.approx(reference(x))
    if change == "changed":
        cfg.a = 5.0
    elif change == "added":
        cfg.c = 4.0
    else:
        del cfg.b
    assert f(x) == pytest.approx(reference(x))


@pytest.mark.parametrize("snapshot", ["np.array", "astype", "flatten", "copy.copy",
                                      "copy.deepcopy", "record of a copy", "float"])
def test_a_snapshot_of_weights_the_step_updates_in_place_follows_numpy(snapshot):
    """Stop 47: `self.snap = np.array(self.W)` (or .astype, .flatten, copy.copy, a deepcopy,
    a record of W.copy(), float(W[0, 0])) before `self.W -= lr * g`: after two traces the
    snapshot stayed the third call's on every later step; the check of W's contents was
    dropped as one of a value the program writes, though NumPy alone had read it."""
    def make():
        return types.SimpleNamespace(W=np.arange(6.0).reshape(3, 2) / 10, snap=None)

    def unwrap(snap):
        if snapshot == "copy.deepcopy":
            return snap["W"]
        return snap.w if snapshot == "record of a copy" else snap

    def step(m, x):
        g = x.T @ (x @ m.W)
        if snapshot == "np.array":
            m.snap = np.array(m.W)
        elif snapshot == "astype":
            m.snap = m.W.astype(np.float32)
        elif snapshot == "flatten":
            m.snap = m.W.flatten()
        elif snapshot == "copy.copy":
            m.snap = copy.copy(m.W)
        elif snapshot == "copy.deepcopy":
            m.snap = copy.deepcopy({"W": m.W})
        elif snapshot == "record of a copy":
            m.snap = types.SimpleNamespace(w=m.W.copy())
        else:
            m.snap = float(m.W[0, 0])
        m.W -= 0.01 * g
        return g.sum()

    model, reference = make(), make()
    f = gradc.jit(lambda x: step(model, x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gradc.TraceEffectWarning)
        for i in range(6):
            x = np.full((4, 3), i + 1.0)
            assert f(x) == pytest.approx(step(reference, x), rel=1e-12)
            np.testing.assert_allclose(model.W, reference.W, rtol=1e-12)
            np.testing.assert_allclose(unwrap(model.snap), unwrap(reference.snap), rtol=1e-6,
                                       err_msg=f"step {i}")


def test_a_traced_value_stored_into_an_outside_object_array_is_written_there_as_numpys():
    """Stop 47: `store[0] = np.tanh(x)` of a global object array (layers kept as
    np.empty(n, dtype=object)) left gradc's placeholder in it, and the next call raised
    gradc's internal _Placeholder: object arrays were walked as lists but not held."""
    store = np.empty(2, dtype=object)
    layers = np.empty(2, dtype=object)
    layers[0], layers[1] = np.full((3, 2), 0.5), np.ones((2, 1))
    reference = layers.copy()

    def step(layers, x):
        store[0] = np.tanh(x[0])
        h = np.tanh(x @ layers[0])
        layers[1] = layers[1] - 0.1 * (h.T @ (h @ layers[1]))
        return np.sum(h @ layers[1])

    f = gradc.jit(lambda x: step(layers, x))
    for i in range(3):
        x = np.full((4, 3), 0.1 * (i + 1))
        assert f(x) == pytest.approx(step(reference, x), rel=1e-12)
        np.testing.assert_allclose(layers[1], reference[1], rtol=1e-12)
        np.testing.assert_allclose(store[0], np.tanh(x[0]))

    # (fuzz47e: `L[1] -= g` of an array two items hold bound a new array to L[1], untying
    # them; it writes into the array, as NumPy's)
    tied = np.empty(2, dtype=object)
    tied[0] = tied[1] = np.linspace(-1.0, 1.0, 12).reshape(4, 3)
    reference = np.empty(2, dtype=object)
    reference[0] = reference[1] = tied[0].copy()

    def update(L, x):
        y = x @ L[0]
        L[1] -= 0.01 * (x.T @ y)
        return y.sum()

    g, weights = gradc.jit(lambda x: update(tied, x)), tied[0]
    for i in range(3):
        x = np.full((3, 4), 0.1 * (i + 1))
        assert g(x) == pytest.approx(update(reference, x), rel=1e-12)
        assert tied[0] is tied[1] is weights
        np.testing.assert_allclose(weights, reference[0], rtol=1e-12)


def test_a_traced_value_stored_as_an_attribute_of_a_function_is_written_there_as_numpys():
    """Stop 47: `helper.last = h` (a function's attribute as a cache, a memo of the last
    activation) kept gradc's placeholder: functions' attributes were read, not held."""
    def helper(x):
        return np.tanh(x)

    def f(x):
        h = helper(x)
        helper.last = h
        return np.sum(h)

    g = gradc.jit(f)
    for i in range(3):
        x = np.full(3, i + 0.5)
        assert g(x) == pytest.approx(np.sum(np.tanh(x)))
        np.testing.assert_allclose(helper.last, np.tanh(x))


def test_a_refused_call_leaves_the_state_outside_as_it_found_it():
    """fuzz47e: a refused call kept what NumPy stored outside before the refusal
    (`self.hist.append(self.W.copy())`, a __slots__ attribute) while the traced stores were
    undone: a state NumPy never makes, and a second update where the caller fell back to
    NumPy."""
    class Model:
        def __init__(self):
            self.W, self.snaps, self.hist = np.linspace(-1.0, 1.0, 12).reshape(4, 3), [], []

        def step(self, x):
            self.snaps = self.snaps + [self.W.copy()]
            y = x @ self.W
            self.hist.append(y)  # (a traced value appended: refused)
            return y.sum()

    class Slotted:
        __slots__ = ("W", "snap", "h")

        def __init__(self):
            self.W, self.snap, self.h = np.ones((4, 3)), None, np.zeros(3)

        def step(self, x):
            self.snap = np.array(self.W)
            y = x @ self.W + self.h
            self.h = y.mean(0)  # (a traced value into a slot: refused)
            return y.sum()

    m = Model()
    with pytest.raises(gradc.UnsupportedOpError):
        gradc.jit(m.step)(np.ones((3, 4)))
    assert m.snaps == [] and m.hist == []
    s = Slotted()
    with pytest.raises(gradc.UnsupportedOpError, match=r"`self\.h`"):
        gradc.jit(s.step)(np.ones((3, 4)))
    assert s.snap is None and not s.h.any()


def test_a_value_stored_and_returned_is_one_array_as_numpys():
    """fuzz47e: `self.h = h; return h` returned a copy of what it stored (NumPy returns the
    stored array itself): a state reset through the returned array (`h[...] = 0`) was lost.
    So for a tuple holding it, `self.state = (h, c); return h`, and a global."""
    class Cell:
        def __init__(self):
            self.W, self.h, self.state = np.full((3, 3), 0.3), np.zeros(3), None

        def step(self, x):
            h = np.tanh(x + self.h @ self.W)
            self.h = h
            self.state = (h, h * 2.0)
            return h

    m, reference = Cell(), Cell()
    f = gradc.jit(m.step)
    for i in range(3):
        x = np.full(3, 0.5 * (i + 1))
        got, want = f(x), reference.step(x)
        assert got is m.h and got is m.state[0]
        np.testing.assert_allclose(got, want, rtol=1e-12)
        got[...] = 0.0  # (a reset through the returned array: the next step starts from it)
        want[...] = 0.0
