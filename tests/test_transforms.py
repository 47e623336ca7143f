"""Transforms and calling conventions: has_aux, jacobian/hessian/vjp/hvp, losses of size 1, the
recompile-storm warning, and per-parameter optimizer options.

Compiles are few (each test compiles one or two programs); the wide sweeps of the Jacobian run
the traced graph in the NumPy reference interpreter (`interpreted`), the same graph a call
compiles.
"""
import types
import warnings

import numpy as np
import pytest

import gradc
from gradc.interpret import evaluate
from gradc.signature import Call, RecompileWatch, signature_key, static_changes

RNG = np.random.default_rng(7)
X = RNG.standard_normal(4)
W = RNG.standard_normal((3, 4))


def interpreted(function, *args):
    """What the compiled `function` (a gradc Function) returns for `args`, computed by the
    NumPy reference interpreter on its traced graph (no Numba compile)."""
    call = Call(function.traced_args(args), {})
    graph, out_kind = function.trace_joint(call, "test")
    outs = evaluate(graph, [np.asarray(x) for x in call.leaves])
    return function._package(types.SimpleNamespace(out_kind=out_kind), outs)


def numeric_jacobian(f, x, eps=1e-6):
    """Central differences: d f(x) / d x, shaped f(x).shape + x.shape (float64)."""
    x = np.asarray(x, np.float64)
    out = np.asarray(f(x))
    jac = np.zeros(out.shape + x.shape)
    for i in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[i] = eps
        jac[(...,) + i] = (np.asarray(f(x + d)) - np.asarray(f(x - d))) / (2 * eps)
    return jac


# ---------------------------------------------------------------------------------------------
# has_aux

def _model(counter):
    def loss(w, x):
        counter.append(1)  # one entry per trace
        h = np.tanh(w @ x)
        return (h ** 2).mean(), {"h": h, "max": h.max(), "n": 3}
    return loss


def _model_ref(w, x):
    h = np.tanh(w @ x)
    g = (2 * h * (1 - h ** 2) / h.size)[:, None] * x[None, :]
    return (h ** 2).mean(), h, g


def test_value_and_grad_and_grad_with_aux_in_one_program():
    traces = []
    vg = gradc.value_and_grad(_model(traces), has_aux=True)
    (value, aux), g = vg(W, X)
    want, h, want_g = _model_ref(W, X)
    np.testing.assert_allclose(value, want, rtol=1e-12)
    np.testing.assert_allclose(aux["h"], h, rtol=1e-12)
    np.testing.assert_allclose(aux["max"], h.max(), rtol=1e-12)
    assert aux["n"] == 3 and np.ndim(aux["max"]) == 0  # static values come back as they are
    np.testing.assert_allclose(g, want_g, rtol=1e-10)
    np.testing.assert_allclose(g, numeric_jacobian(lambda w: _model_ref(w, X)[0], W), atol=1e-8)
    x2 = X[::-1].copy()
    (value2, aux2), _ = vg(W, x2)  # copy=False: aux arrays are views, as the gradients are
    np.testing.assert_allclose(aux["h"], _model_ref(W, x2)[1], rtol=1e-12)
    assert len(traces) == 1 and len(vg.cache) == 1  # aux traced once, not in a second pass

    traces.clear()
    gr = gradc.grad(_model(traces), argnums=(0, 1), has_aux=True, copy=True)
    (g_w, g_x), aux = gr(W.astype(np.float32), X.astype(np.float32))
    gr(W.astype(np.float32), x2.astype(np.float32))  # copy=True: aux of the first call is kept
    assert aux["h"].dtype == np.float32 and g_w.dtype == np.float32
    np.testing.assert_allclose(aux["h"], h, rtol=1e-5)
    np.testing.assert_allclose(g_w, want_g, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(g_x, numeric_jacobian(lambda x: _model_ref(W, x)[0], X), atol=1e-5)
    assert len(traces) == 1


def test_has_aux_inside_another_trace_and_its_errors():
    inner = gradc.grad(lambda w, x: ((w @ x) ** 2).sum() * 0.5 + 0.0 * w.sum(), has_aux=False)
    with_aux = gradc.grad(lambda w, x: (((w @ x) ** 2).sum() * 0.5, w @ x), has_aux=True)
    # grad of a function that takes a gradient with aux (the _inline path), interpreted
    outer = gradc.grad(lambda w: with_aux(w, X)[0].sum() + with_aux(w, X)[1].sum())
    want = gradc.grad(lambda w: inner(w, X).sum() + (w @ X).sum())
    np.testing.assert_allclose(interpreted(outer, W), interpreted(want, W), rtol=1e-12)

    def no_pair(w):
        return (w ** 2).sum()  # a loss alone, with has_aux=True

    with pytest.raises(gradc.NonDifferentiableError) as e:
        interpreted(gradc.grad(no_pair, has_aux=True), W)
    msg = str(e.value)
    assert "test_transforms.py:" in msg and "(loss, aux)" in msg and "no_pair" in msg
    with pytest.raises(gradc.NonDifferentiableError, match=r"\(loss, aux\)"):
        interpreted(gradc.value_and_grad(lambda w: (w.sum(), w, w), has_aux=True), W)
    with pytest.raises(gradc.NonDifferentiableError, match="has_aux=True"):  # the hint
        interpreted(gradc.grad(lambda w: (w.sum(), w)), W)


def test_train_step_with_aux():
    traces = []
    loss = _model(traces)
    step = gradc.train_step(loss, gradc.optim.SGD(lr=0.5), has_aux=True)
    w = W.copy()
    value, aux = step(w, X)
    want, h, g = _model_ref(W, X)
    assert isinstance(value, float) and value == pytest.approx(want, rel=1e-12)
    np.testing.assert_allclose(aux["h"], h, rtol=1e-12)
    np.testing.assert_allclose(w, W - 0.5 * g, rtol=1e-12)
    value2, aux2 = step(w, X)  # aux are fresh copies: the first call's are kept
    np.testing.assert_allclose(aux["h"], h, rtol=1e-12)
    assert not np.allclose(aux2["h"], h) and len(traces) == 1
    plain = gradc.train_step(lambda w, x: loss(w, x)[0], gradc.optim.SGD(lr=0.5))
    assert isinstance(plain(W.copy(), X), float)  # without has_aux: the loss alone, as before
    with pytest.raises(gradc.UnsupportedOpError, match="has_aux"):
        gradc.train_step(loss, gradc.optim.SGD(lr=0.5), has_aux=True, distributed=True)


# ---------------------------------------------------------------------------------------------
# jacobian, hessian, vjp, hvp

def _vec(x):
    return np.sin(x) * x[::-1] + x[:3].sum() * x[3]


def _mat_scalar(w, x):
    return np.tanh(w @ x).sum() ** 2


def _mat_scalar_dx(w, x):
    t = np.tanh(w @ x)
    return 2 * t.sum() * (w.T @ (1 - t ** 2))


def _tree(p, s):
    return np.concatenate([p["a"] * s, np.exp(p["b"]).ravel()]) * p["a"].sum()


def test_jacobian_against_finite_differences_interpreted():
    np.testing.assert_allclose(interpreted(gradc.jacobian(_vec), X),
                               numeric_jacobian(_vec, X), atol=1e-8)
    jw, jx = interpreted(gradc.jacobian(_mat_scalar, argnums=(0, 1)), W, X)
    assert jw.shape == W.shape and jx.shape == X.shape
    np.testing.assert_allclose(jw, numeric_jacobian(lambda w: _mat_scalar(w, X), W), atol=1e-7)
    np.testing.assert_allclose(jx, numeric_jacobian(lambda x: _mat_scalar(W, x), X), atol=1e-7)
    p = {"a": X[:2].copy(), "b": W[:2, :2].copy()}
    jac = interpreted(gradc.jacobian(_tree), p, 1.5)  # pytree input: the input tree inside
    assert set(jac) == {"a", "b"} and jac["b"].shape == (6, 2, 2)
    np.testing.assert_allclose(jac["a"], numeric_jacobian(lambda a: _tree({**p, "a": a}, 1.5),
                                                          p["a"]), atol=1e-7)
    np.testing.assert_allclose(jac["b"], numeric_jacobian(lambda b: _tree({**p, "b": b}, 1.5),
                                                          p["b"]), atol=1e-7)
    js = interpreted(gradc.jacobian(_tree, argnums=1), p, 1.5)  # a Python float argument
    np.testing.assert_allclose(js, numeric_jacobian(lambda s: _tree(p, s), 1.5), atol=1e-7)
    pair = interpreted(gradc.jacobian(lambda x: (x * 2.0, {"s": (x ** 2).sum()})), X)
    np.testing.assert_allclose(pair[0], 2 * np.eye(4))  # pytree output: the output tree outside
    np.testing.assert_allclose(pair[1]["s"], 2 * X, rtol=1e-12)


def test_jacobian_and_hessian_of_no_arguments_are_empty_as_grads_are():
    """argnums=(): no derivative, an empty tuple per output (it was a bare ValueError)."""
    x = np.ones(3)
    assert gradc.jacobian(lambda x, y: np.sin(x) * y, argnums=())(x, x) == ()
    assert gradc.hessian(lambda x, y: np.sum(np.sin(x) * y), argnums=())(x, x) == ()
    assert gradc.jacobian(lambda x: (np.sin(x), {"a": 2 * x}), argnums=())(x) == ((), {"a": ()})


def test_jacobian_and_hessian_compiled():
    jac = gradc.jacobian(_vec)
    got = jac(X.astype(np.float32))
    assert got.dtype == np.float32 and got.shape == (4, 4)
    np.testing.assert_allclose(got, numeric_jacobian(_vec, X), rtol=1e-5, atol=1e-5)
    assert jac(X[::-1].copy().astype(np.float32)) is not got and len(jac.cache) == 1

    def f(x):
        return (np.sin(x) * x ** 2).sum()

    hess = gradc.hessian(f)(X)  # the Jacobian of the gradient, one program
    want = np.diag(2 * np.sin(X) + 4 * X * np.cos(X) - X ** 2 * np.sin(X))
    np.testing.assert_allclose(hess, want, rtol=1e-10, atol=1e-12)
    h2 = interpreted(gradc.hessian(_mat_scalar, argnums=(0, 1)), W, X)  # nested pairs
    np.testing.assert_allclose(h2[1][1], numeric_jacobian(lambda x: _mat_scalar_dx(W, x), X),
                               atol=1e-6)
    assert h2[0][0].shape == W.shape * 2 and h2[1][1].shape == (4, 4)
    with pytest.raises(gradc.UnsupportedOpError, match="one VJP per output element"):
        interpreted(gradc.jacobian(lambda x: np.outer(x, x)), np.ones(40))


def test_jacobian_and_hessian_with_aux():
    """has_aux=True as JAX's jacrev and hessian: fun returns (out, aux), the call (derivative,
    aux); aux computed in the same program, numbers in it kept as they are; inside another
    trace too."""
    def f(x):
        return np.sin(x) * x[::-1], {"s": x.sum(), "n": 3}

    jac, aux = gradc.jacobian(f, has_aux=True)(X)
    np.testing.assert_allclose(jac, numeric_jacobian(lambda x: f(x)[0], X), rtol=1e-6, atol=1e-8)
    assert aux["n"] == 3 and aux["s"] == pytest.approx(X.sum(), rel=1e-12)
    jac2, aux2 = interpreted(gradc.jacobian(f, has_aux=True, argnums=(0,)), X)
    np.testing.assert_allclose(jac2[0], jac, rtol=1e-12)

    hess, top = gradc.hessian(lambda x: ((np.sin(x) * x ** 2).sum(), x.max()), has_aux=True)(X)
    want = np.diag(2 * np.sin(X) + 4 * X * np.cos(X) - X ** 2 * np.sin(X))
    np.testing.assert_allclose(hess, want, rtol=1e-10, atol=1e-12)
    assert top == X.max()

    def outer(x):  # d/dx of sum(J) * aux, J and aux from the inner call
        inner, a = gradc.jacobian(f, has_aux=True)(x)
        return inner.sum() * a["s"]

    def outer_numpy(x):  # sum(J) in closed form: diag cos(x) x[::-1], anti-diagonal sin(x)
        return np.array([(np.sum(np.cos(x) * x[::-1]) + np.sum(np.sin(x))) * x.sum()])

    assert gradc.jit(outer)(X) == pytest.approx(outer_numpy(X)[0], rel=1e-12)
    np.testing.assert_allclose(gradc.grad(outer)(X), numeric_jacobian(outer_numpy, X)[0],
                               rtol=1e-6, atol=1e-8)
    with pytest.raises(gradc.NonDifferentiableError, match="must return a pair"):
        gradc.jacobian(np.sin, has_aux=True)(X)


def test_vjp_and_hvp():
    out, vjp_fn = gradc.vjp(_mat_scalar, W, X)
    assert out == pytest.approx(_mat_scalar(W, X), rel=1e-12)
    ct_w, ct_x = vjp_fn(2.0)  # JAX: a tuple, one cotangent per primal
    np.testing.assert_allclose(ct_x, 2 * numeric_jacobian(lambda x: _mat_scalar(W, x), X),
                               atol=1e-7)
    out, vjp_fn = gradc.vjp(_vec, X)
    ct = np.arange(4.0)
    (got,) = vjp_fn(ct)
    np.testing.assert_allclose(got, ct @ numeric_jacobian(_vec, X), atol=1e-8)
    np.testing.assert_allclose(out, _vec(X), rtol=1e-12)
    backward = gradc.transforms._BUILT[_vec]["vjp", 1]
    gradc.vjp(_vec, X + 1.0)[1](ct)  # a loop of gradc.vjp calls: built once, compiled once
    assert len(backward.cache) == 1
    with pytest.raises(gradc.NonDifferentiableError, match="cotangent of shape"):
        vjp_fn(np.ones(3))

    def f(x, y):
        return (np.sin(x) * x ** 2).sum() + (x[:2] * y).sum() ** 2

    def f_grads(z):  # f's gradient with respect to (x, y), in NumPy, z = [x, y]
        x, y = z[:4], z[4:]
        s = (x[:2] * y).sum()
        gx = np.cos(x) * x ** 2 + 2 * x * np.sin(x) + 2 * s * np.concatenate([y, [0, 0]])
        return np.concatenate([gx, 2 * s * x[:2]])

    v, y = np.array([0.5, -1.0, 2.0, 0.25]), X[:2]
    (gx, gy), (hx, hy) = gradc.hvp(f, (X, y), (v, v[:2]))  # several primals: tuples
    z = np.concatenate([X, y])
    np.testing.assert_allclose(np.concatenate([gx, gy]), f_grads(z), rtol=1e-12)
    np.testing.assert_allclose(np.concatenate([hx, hy]),
                               numeric_jacobian(f_grads, z) @ np.concatenate([v, v[:2]]), atol=1e-6)
    g, hv = gradc.hvp(lambda x: (x ** 3).sum(), [X], [v])  # one primal: shaped like it
    np.testing.assert_allclose(g, 3 * X ** 2, rtol=1e-12)
    np.testing.assert_allclose(hv, 6 * X * v, rtol=1e-12)


def test_vjp_with_aux_returns_out_vjp_fn_and_aux_as_jaxs():
    """fuzz47d: gradc.vjp(f, x, has_aux=True) was Python's TypeError (JAX takes has_aux)."""
    def f(x, y):
        return np.sin(x) * y, {"norm": np.sum(x * x), "y": y * 2.0}

    out, vjp_fn, aux = gradc.vjp(f, X, X[::-1], has_aux=True)
    np.testing.assert_allclose(out, np.sin(X) * X[::-1], rtol=1e-12)
    assert aux["norm"] == pytest.approx(np.sum(X * X), rel=1e-12)
    np.testing.assert_allclose(aux["y"], X[::-1] * 2.0, rtol=1e-12)
    ct = np.arange(4.0)
    ct_x, ct_y = vjp_fn(ct)
    np.testing.assert_allclose(ct_x, ct * np.cos(X) * X[::-1], rtol=1e-12)
    np.testing.assert_allclose(ct_y, ct * np.sin(X), rtol=1e-12)
    with pytest.raises(gradc.NonDifferentiableError, match=r"must return a pair \(out, aux\)"):
        gradc.vjp(np.sin, X, has_aux=True)


_SCALE = np.array([2.0, 3.0, 4.0, 5.0])
_POWER = 2.0


def _reads_outside(x):
    return np.sum(np.sin(x) * _SCALE) ** _POWER


def test_vjp_fn_refuses_outside_state_changed_since_the_output():
    """vjp_fn computes its cotangents with the arrays and numbers the function reads from
    outside as they are when it runs: after `_SCALE[:] = ...` they were the gradient of another
    function than the output's, silently."""
    global _POWER
    out, vjp_fn = gradc.vjp(_reads_outside, X)
    assert out == pytest.approx(_reads_outside(X), rel=1e-12)
    (got,) = vjp_fn(1.0)  # unchanged: the cotangents of the output's function
    np.testing.assert_allclose(got, numeric_jacobian(_reads_outside, X), rtol=1e-6)
    saved = _SCALE.copy()
    try:
        _SCALE[0] = 10.0
        with pytest.raises(gradc.SignatureError, match=r"`_SCALE`.*changed since gradc\.vjp"):
            vjp_fn(1.0)
        _SCALE[:] = saved
        vjp_fn(1.0)  # (restored: the same function again)
        _POWER = 3.0
        with pytest.raises(gradc.SignatureError, match="_POWER.*call gradc.vjp again"):
            vjp_fn(1.0)
        out, vjp_fn = gradc.vjp(_reads_outside, X)  # after the change: the new function
        np.testing.assert_allclose(vjp_fn(1.0)[0], numeric_jacobian(_reads_outside, X),
                                   rtol=1e-6)
    finally:
        _SCALE[:], _POWER = saved, 2.0


def test_a_python_number_returned_is_a_constant_with_zero_derivatives():
    """`return 1.0` (a constant, as JAX reads it): its Jacobian came back as the float 1.0, and
    grad refused it; a loss in a tuple without has_aux dropped the tuple's other entries."""
    np.testing.assert_array_equal(gradc.jacobian(lambda x: 1.0)(X), np.zeros_like(X))
    jac = gradc.jacobian(lambda x: (np.sum(x ** 2), 2.0, "tag"))(X)
    np.testing.assert_allclose(jac[0], 2 * X, rtol=1e-12)
    np.testing.assert_array_equal(jac[1], np.zeros_like(X))
    assert jac[2] == "tag"
    value, g = gradc.value_and_grad(lambda x: 1.5)(X)
    assert value == 1.5 and np.array_equal(g, np.zeros_like(X))
    g, aux = gradc.grad(lambda x: (0.0, {"n": 3}), has_aux=True)(X)
    assert np.array_equal(g, np.zeros_like(X)) and aux == {"n": 3}
    np.testing.assert_array_equal(gradc.hessian(lambda x: 1.0)(X), np.zeros((4, 4)))
    with pytest.raises(gradc.NonDifferentiableError, match="jacobian needs float outputs"):
        gradc.jacobian(lambda x: 3)(X)
    for wrapped in (lambda x: (np.sum(x), 1.0), lambda x: [np.sum(x)]):
        with pytest.raises(gradc.NonDifferentiableError, match="returns one scalar.*has_aux"):
            gradc.grad(wrapped)(X)


# ---------------------------------------------------------------------------------------------
# losses of size 1

def test_losses_of_size_one_are_scalars():
    vg = gradc.value_and_grad(lambda w: (w ** 2).sum(keepdims=True))  # shape (1,)
    value, g = vg(X)
    assert value.shape == (1,) and value[0] == pytest.approx((X ** 2).sum(), rel=1e-12)
    np.testing.assert_allclose(g, 2 * X, rtol=1e-12)
    g = interpreted(gradc.grad(lambda w: (w @ X).reshape(1, 1)), X)  # shape (1, 1)
    np.testing.assert_allclose(g, X, rtol=1e-12)
    with pytest.raises(gradc.NonDifferentiableError, match=r"\(2,\)"):
        interpreted(gradc.grad(lambda w: w[:2] * 2.0), X)
    w = X.copy()
    step = gradc.train_step(lambda w: ((w - 1.0) ** 2).sum(keepdims=True), gradc.optim.SGD(0.25))
    loss = step(w)
    assert isinstance(loss, float) and loss == pytest.approx(((X - 1) ** 2).sum(), rel=1e-12)
    np.testing.assert_allclose(w, X - 0.25 * 2 * (X - 1), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# recompile storms

def test_a_changing_static_value_warns_once_at_the_eighth_signature():
    f = gradc.jit(lambda x, i: x + 1.0)  # (i unused: every signature compiles the same kernels)
    x = np.ones(3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(7):
            f(x, i)
        assert not [w for w in caught if w.category is gradc.RecompileWarning]
        f(x, 7)  # STORM
        f(x, 8)
        f(x, 9)
    storms = [w for w in caught if w.category is gradc.RecompileWarning]
    assert len(storms) == 1 and issubclass(gradc.RecompileWarning, UserWarning)
    msg = str(storms[0].message)
    assert "8 signatures" in msg and "static value i " in msg and "6 -> 7" in msg
    assert "np.asarray" in msg and "max_signatures" in msg
    line = next(n for n, text in enumerate(open(__file__), 1) if "# STORM" in text)
    assert f"test_transforms.py:{line}" in msg and storms[0].lineno == line


def test_what_counts_as_a_static_change():
    def key(*args, **kwargs):
        leaves, tree = gradc.pytree.flatten((args, kwargs))
        return signature_key(leaves, tree)

    x = np.ones(3)
    names = ["params", "it"]
    assert static_changes(key({"w": x}, 1), key({"w": x}, 2), names) == [("it", 1, 2)]
    assert static_changes(key({"w": x, "k": 1}, 0), key({"w": x, "k": 2}, 0), names) == [
        ("params['k']", 1, 2)]
    assert static_changes(key(x, 1, lr=0.1), key(x, 1, lr=0.2), names) == [("lr", 0.1, 0.2)]
    assert static_changes(key(x, 1), key(np.ones(4), 2), names) is None  # a shape changed too
    assert static_changes(key(x, 1), key(x.astype(np.float32), 1), names) is None
    assert static_changes(key({"w": x}, 1), key({"v": x}, 1), names) is None
    watch = RecompileWatch()
    old = None
    with warnings.catch_warnings(record=True) as caught:  # shape changes never warn
        warnings.simplefilter("always")
        for n in range(1, 12):
            new = key(np.ones(n), 1)
            watch.note(old, new, "f", names, "here:1", "raise max_signatures")
            old = new
    assert not caught


# ---------------------------------------------------------------------------------------------
# per-parameter optimizer options

def _params():
    rng = np.random.default_rng(3)
    f32 = np.float32
    return {"W": rng.standard_normal((3, 4)).astype(f32), "b": rng.standard_normal(4).astype(f32),
            "ln": {"g": rng.standard_normal(4).astype(f32)},
            "emb": rng.standard_normal((5, 3)).astype(f32)}


def _linear_loss(coef):
    """A loss whose gradient is `coef` exactly: sum of coef * p over the leaves."""
    def loss(p):
        total = (p["ln"]["g"] * coef["ln"]["g"]).sum()
        return total + sum((p[k] * coef[k]).sum() for k in ("W", "b", "emb"))
    return loss


def _gpt_decay(params):
    """The GPT recipe: decay the weight matrices only (no biases, norms or embeddings)."""
    return {"W": True, "b": False, "ln": False, "emb": False}


def test_adamw_per_parameter_decay_and_lr_mult_against_numpy():
    p = _params()
    coef = {k: np.float32(0.5) * np.ones_like(v) if k != "ln" else {"g": -np.ones_like(v["g"])}
            for k, v in p.items()}
    lr, wd, b1, b2, eps = 0.1, 0.3, 0.9, 0.999, 1e-8
    mult = {"W": 1.0, "b": 2.0, "ln": 0.5, "emb": 0.0}  # a number covers the "ln" subtree
    opt = gradc.optim.AdamW(lr=lr, weight_decay=wd, mask=_gpt_decay, lr_mult=mult)
    step = gradc.train_step(_linear_loss(coef), opt)
    before = {k: (v.copy() if k != "ln" else {"g": v["g"].copy()}) for k, v in p.items()}
    step(p)
    for path, got, p0, g, m, decay in [("W", p["W"], before["W"], coef["W"], 1.0, True),
                                        ("b", p["b"], before["b"], coef["b"], 2.0, False),
                                        ("g", p["ln"]["g"], before["ln"]["g"], coef["ln"]["g"], 0.5,
                                         False),
                                        ("emb", p["emb"], before["emb"], coef["emb"], 0.0, False)]:
        q = p0.astype(np.float64) * (1 - lr * m * wd if decay else 1.0)  # PyTorch's step 1
        mom, var = (1 - b1) * g, (1 - b2) * g * g
        want = q - lr * m / (1 - b1) * mom / (np.sqrt(var) / np.sqrt(1 - b2) + eps)
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7, err_msg=path)
    np.testing.assert_array_equal(p["emb"], before["emb"])  # lr_mult 0: frozen


def test_sgd_weight_decay_pytree_and_uniform_decay_unchanged():
    p = _params()
    coef = {k: np.ones_like(v) if k != "ln" else {"g": np.ones_like(v["g"])} for k, v in p.items()}
    rates = {"W": 0.5, "b": 0.0, "ln": {"g": 0.0}, "emb": 0.25}
    before = {k: (v.copy() if k != "ln" else {"g": v["g"].copy()}) for k, v in p.items()}
    gradc.train_step(_linear_loss(coef), gradc.optim.SGD(lr=0.1, weight_decay=rates))(p)
    for k, rate in (("W", 0.5), ("emb", 0.25)):
        np.testing.assert_allclose(p[k], before[k] - np.float32(0.1) * (1 + rate * before[k]),
                                   rtol=1e-6)
    np.testing.assert_array_equal(p["b"], before["b"] - np.float32(0.1))  # decay 0: none at all
    np.testing.assert_array_equal(p["ln"]["g"], before["ln"]["g"] - np.float32(0.1))
    # one number and no mask or lr_mult: PyTorch's exact path, as before (leaf options None)
    assert gradc.optim.AdamW(weight_decay=0.1).leaf_options(p) is None
    with pytest.raises(gradc.ArgumentError, match="weight_decay"):
        gradc.optim.SGD(lr=0.1, weight_decay="0.1")
    opts = gradc.optim.Adam(weight_decay=0.1, mask={"W": True, "b": False, "ln": True,
                                                    "emb": False}).leaf_options(p)
    assert [o["weight_decay"] for o in opts] == [0.1, 0.0, 0.1, 0.0]  # flatten order: W b ln emb


def test_a_weight_decay_function_is_read_at_every_step_whatever_the_batch_shape():
    """A decay schedule written as a function of a config it closes over: the step after the
    config changes uses the new decay, on the batch shape it compiled for and on a new one,
    and changing it back uses the old decay again (once per compile, a new shape took the new
    decay and the old shape kept the old)."""
    config = {"wd": 0.0}
    opt = gradc.optim.SGD(lr=0.1, weight_decay=lambda p: {"a": config["wd"], "b": 0.0})
    step = gradc.train_step(lambda p, x: np.sum(p["a"] * 0.0) + np.sum(p["b"] * x), opt)
    p = {"a": np.ones(3, np.float32), "b": np.ones(2, np.float32)}

    def a_after_step(x, wd):
        config["wd"] = wd
        before = p["a"].copy()
        step(p, x)
        return p["a"] / before  # the gradient of a is 0: 1 - lr * wd

    small, large = np.ones(2, np.float32), np.ones((4, 2), np.float32)
    for x, wd in [(small, 0.0), (small, 0.5), (large, 0.5), (small, 0.0), (large, 0.25),
                  (small, 0.25)]:
        np.testing.assert_allclose(a_after_step(x, wd), np.float32(1 - 0.1 * wd), rtol=1e-6,
                                   err_msg=f"decay {wd}, batch {x.shape}")


def test_hvp_takes_tuples_and_python_number_tangents():
    f = lambda x: x ** 3  # noqa: E731
    g, hv = gradc.hvp(f, (2.0,), (1.0,))  # (the tangent a Python float, as the primal)
    assert float(g) == pytest.approx(12.0) and float(hv) == pytest.approx(12.0)
    with pytest.raises(gradc.ArgumentError) as excinfo:
        gradc.hvp(lambda x: np.sum(x ** 3), np.ones(3), np.ones(3))
    assert "(x,), (v,)" in str(excinfo.value) and "test_transforms.py" in str(excinfo.value)
    with pytest.raises(gradc.NonDifferentiableError) as excinfo:  # (a tangent, not a cotangent)
        gradc.hvp(lambda x: np.sum(x ** 3), (np.ones(3),), (np.ones(4),))
    assert "a tangent of shape (4,) for a primal of shape (3,)" in str(excinfo.value)


@pytest.mark.parametrize("x", [np.array(2.0), 2.0, np.float64(2.0)], ids=["0-d", "float", "np.float64"])
def test_hvp_gradient_has_the_type_of_the_hessian_vector_product(x):
    """JAX's jvp(grad(f), (x,), (v,)) gives both as the primal's kind: a 0-d primal's gradient
    is a 0-d array beside its 0-d HVP (it was a NumPy scalar: the gradient comes back as aux),
    a Python float's a float; with two primals, each pair alike."""
    g, hv = gradc.hvp(lambda x: x ** 3, (x,), (1.0,))
    assert type(g) is type(hv) and np.shape(g) == np.shape(hv) == ()
    assert float(g) == pytest.approx(12.0) and float(hv) == pytest.approx(12.0)
    gs, hvs = gradc.hvp(lambda a, b: a ** 3 * b, (np.array(2.0), x), (1.0, 1.0))
    assert [type(a) for a in gs] == [type(h) for h in hvs]
    assert float(gs[0]) == pytest.approx(12.0 * float(x)) and float(gs[1]) == pytest.approx(8.0)


def test_second_derivatives_a_fuzzing_round_against_jax_found_wrong():
    """Each against its closed form: the mixed derivative of a ** b at b = 0 (the base's
    cotangent was masked to 0 for all of b = 0: 0 for 1/a, an asymmetric Hessian);
    logaddexp's Hessian at a finite tie (a constant 1/2 there: 0 for 1/4); the stability
    rewrites and log_ndtr at second order (log(exp(x)) at 1000 and log_ndtr at 40: NaN for 0);
    a product of two separate np.abs/np.std calls at 0 (0 for the sum of squares' Hessian)."""
    import scipy.special
    a, b = 1.5, 0.0
    h = gradc.hessian(lambda a, b: a ** b, argnums=(0, 1))(np.array(a), np.array(b))
    np.testing.assert_allclose([[h[0][0], h[0][1]], [h[1][0], h[1][1]]],
                               [[0.0, 1 / a], [1 / a, np.log(a) ** 2]], atol=1e-15)
    _, hv = gradc.hvp(lambda a, b: a ** b, (np.array(a), np.array(b)),
                      (np.array(1.0), np.array(0.0)))
    np.testing.assert_allclose([hv[0], hv[1]], [0.0, 1 / a], atol=1e-15)
    for v in (0.0, 1.0, 1000.0):
        h = gradc.hessian(lambda a, b: np.logaddexp(a, b), argnums=(0, 1))(np.array(v), np.array(v))
        np.testing.assert_allclose(np.array([[h[0][0], h[0][1]], [h[1][0], h[1][1]]], float),
                                   [[0.25, -0.25], [-0.25, 0.25]])
    assert gradc.grad(gradc.grad(lambda s: np.logaddexp2(s, 0.0)))(0.0) == pytest.approx(
        np.log(2) / 4)
    x = np.array([1000.0, 1.0, 2.0])
    sig = 1 / (1 + np.exp(-x[1:]))
    for f, diag in ((lambda x: np.sum(np.log(np.exp(x))), [0, 0, 0]),
                    (lambda x: np.sum(np.log(1 + np.exp(x))), [0, *(sig * (1 - sig))]),
                    (lambda x: np.sum(np.log1p(np.exp(x))), [0, *(sig * (1 - sig))])):
        np.testing.assert_allclose(np.diag(gradc.hessian(f)(x)), diag, atol=1e-15)
    h = gradc.hessian(lambda x: np.sum(scipy.special.log_ndtr(x)))(np.array([40.0, 1.0]))
    assert np.isfinite(h).all() and h[0, 0] == 0 and h[1, 0] == 0
    np.testing.assert_allclose(h[1, 1], -0.3703137142233946, rtol=1e-12)
    zero = np.zeros(3)
    np.testing.assert_allclose(gradc.hessian(lambda x: np.sum(np.abs(x) * np.abs(x)))(zero),
                               2 * np.eye(3))
    np.testing.assert_allclose(gradc.hessian(lambda x: np.std(x) * np.std(x))(zero),
                               2 * (np.eye(3) - 1 / 3) / 3, atol=1e-15)


def test_gradc_scipy_is_there_after_a_bare_import():
    import subprocess
    import sys
    code = ("import gradc, numpy as np; print(gradc.scipy.special.logsumexp(np.zeros(2)), "
            "callable(gradc.distributed.shard))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(np.log(2.0)), "True"]


def test_a_hessian_too_large_to_unroll_names_hvp():
    """A Hessian of 1,100 parameters said 'this function returns 1100' (a scalar function) and
    pointed at gradc.vjp; it names gradc.hvp now."""
    with pytest.raises(gradc.UnsupportedOpError, match=r"1100 \(over 1024\).*gradc\.hvp"):
        gradc.hessian(lambda x: np.sum(x ** 3))(np.ones(1100))


def test_jacobians_of_0d_values_are_arrays_and_argnums_types_are_named():
    """jacobian and hessian with respect to a 0-d array (or a number) gave a NumPy scalar where
    grad gives a 0-d array and JAX gives arrays; argnums=None or 1.0 was reported as not
    fitting the count of arguments."""
    cube = lambda s: s ** 3
    for s in (np.array(2.0), np.float64(2.0), 2.0):
        for got, want in ((gradc.hessian(cube)(s), 12.0), (gradc.jacobian(cube)(s), 12.0)):
            assert type(got) is np.ndarray and got.shape == () and got == want
    f = lambda x, y: np.sum(x * y)
    for bad in (None, 1.0, True, "0"):
        with pytest.raises(gradc.SignatureError, match="argnums is an int or a tuple of ints"):
            gradc.grad(f, argnums=bad)(np.ones(2), np.ones(2))


def test_second_derivatives_of_a_function_that_updates_its_own_arrays_in_place():
    """A stable softmax written with in-place updates (`z -= z.max(...)`, `p /= p.sum(...)`):
    the derivatives of a gradient taken in traced code (hessian, hvp, jacobian of grad) read
    the values before each update, as the backward does; they were refused as stale reads."""
    def in_place(w, x):
        z = x @ w
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        return -np.log(p[:, 0]).mean()

    def out_of_place(w, x):
        z = x @ w
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return -np.log((p / p.sum(axis=1, keepdims=True))[:, 0]).mean()

    rng = np.random.default_rng(3)
    w, x = rng.standard_normal((3, 2)), rng.standard_normal((5, 3))
    want = gradc.hessian(out_of_place)(w, x)
    np.testing.assert_allclose(gradc.hessian(in_place)(w, x), want, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gradc.jacobian(gradc.grad(in_place))(w, x), want, rtol=1e-12,
                               atol=1e-14)
    v = rng.standard_normal(w.shape)
    got = gradc.hvp(in_place, (w, x), (v, np.zeros_like(x)))[1][0]
    np.testing.assert_allclose(got, np.tensordot(want, v, 2), rtol=1e-10, atol=1e-12)


def test_python_numbers_inside_tangent_and_cotangent_pytrees():
    """hvp's tangents and a vjp_fn's cotangents may hold Python numbers anywhere in their
    pytrees, namedtuples too, as JAX's take them (a dict entry and a namedtuple field were
    refused as not matching: fuzz40c)."""
    import collections

    def f(p):
        return np.sum(np.tanh(p["w"] * p["s"]))

    w = np.array([0.1, 0.2, 0.3])
    g, hv = gradc.hvp(f, ({"w": w, "s": 0.5},), ({"w": np.ones(3), "s": 0.1},))
    eps = 1e-6
    up = gradc.grad(f)({"w": w + eps * np.ones(3), "s": 0.5 + eps * 0.1})
    down = gradc.grad(f)({"w": w - eps * np.ones(3), "s": 0.5 - eps * 0.1})
    np.testing.assert_allclose(hv["w"], (up["w"] - down["w"]) / (2 * eps), rtol=1e-6)
    np.testing.assert_allclose(hv["s"], (up["s"] - down["s"]) / (2 * eps), rtol=1e-6)
    assert float(g["s"]) == pytest.approx(float(np.sum(w / np.cosh(w * 0.5) ** 2)))

    Pair = collections.namedtuple("Pair", "vec total")
    out, vjp_fn = gradc.vjp(lambda x: Pair(np.sin(x), np.sum(x ** 2)), w)
    (ct,) = vjp_fn(Pair(np.ones(3), 2.0))
    np.testing.assert_allclose(ct, np.cos(w) + 2.0 * 2 * w, rtol=1e-14)


def test_a_structure_mismatch_names_a_namedtuple_by_its_class():
    """A tuple cotangent for a namedtuple output: both were described as (array, array)."""
    import collections
    Pair = collections.namedtuple("Pair", "a b")
    _, vjp_fn = gradc.vjp(lambda x: Pair(x * 2, x * 3), np.ones(2))
    with pytest.raises(gradc.NonDifferentiableError,
                       match=r"\(array, array\) does not match the output Pair\(array, array\)"):
        vjp_fn((np.ones(2), np.ones(2)))
