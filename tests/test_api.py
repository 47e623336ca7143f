"""The public contract (DESIGN.md section 2): jit / grad / value_and_grad, called directly and as
decorators, argnums, pytrees, gradient buffers, the signature cache, static arguments, explain,
the generated driver file, parameter reuse, grad of grad, and call-time input conversion.

Shapes are small and shared between tests so that the compiled kernels are reused (kernels are
shared by structure across compiled functions)."""
import os
import re
import sys
import time
import threading
from collections import namedtuple

import numpy as np
import pytest

import gradc  # tests/conftest.py points GRADC_CACHE_DIR at a session temp dir

THIS_FILE = os.path.basename(__file__)


def line_of(marker):
    """The line number of the line of this file that ends with the comment `# <marker>`."""
    with open(__file__, encoding="utf-8") as f:
        hits = [i for i, line in enumerate(f, start=1) if line.rstrip().endswith(f"# {marker}")]
    assert len(hits) == 1, marker
    return hits[0]


# ---------------------------------------------------------------------------------------------
# the contract's MLP, its hand-derived gradient, and finite differences

def mlp_loss(params, x, y):
    h = np.tanh(x @ params["W1"] + params["b1"])  # MLP-TANH
    logits = h @ params["W2"] + params["b2"]
    return gradc.nn.cross_entropy(logits, y)


def np_mlp(params, x, y):
    """Loss and gradients (params, x) of mlp_loss derived by hand in NumPy."""
    z1 = x @ params["W1"] + params["b1"]
    h = np.tanh(z1)
    logits = h @ params["W2"] + params["b2"]
    m = logits.max(axis=1, keepdims=True)
    logp = logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))
    n = x.shape[0]
    loss = -logp[np.arange(n), y].mean()
    dlogits = np.exp(logp)
    dlogits[np.arange(n), y] -= 1.0
    dlogits /= n
    dh = dlogits @ params["W2"].T
    dz1 = dh * (1.0 - h * h)
    grads = {"W1": x.T @ dz1, "b1": dz1.sum(axis=0), "W2": h.T @ dlogits, "b2": dlogits.sum(axis=0)}
    return loss, grads, dz1 @ params["W1"].T


def make_mlp(seed=0, n=6, dtype=np.float64):
    rng = np.random.default_rng(seed)
    params = {"W1": rng.standard_normal((4, 5)), "b1": 0.1 * rng.standard_normal(5),
              "W2": rng.standard_normal((5, 3)), "b2": 0.1 * rng.standard_normal(3)}
    params = {k: v.astype(dtype) for k, v in params.items()}
    x = rng.standard_normal((n, 4)).astype(dtype)
    y = rng.integers(0, 3, n)
    return params, x, y


def finite_diff(f, arr, eps=1e-6):
    """Central differences of scalar f() with respect to every entry of arr (perturbed in place)."""
    out = np.zeros_like(arr, dtype=np.float64)
    for i in np.ndindex(arr.shape):
        old = arr[i]
        arr[i] = old + eps
        hi = f()
        arr[i] = old - eps
        lo = f()
        arr[i] = old
        out[i] = (hi - lo) / (2 * eps)
    return out


def assert_tree_close(actual, expected, rtol=1e-7, atol=1e-9):
    assert type(actual) is type(expected)
    if isinstance(expected, dict):
        assert sorted(actual) == sorted(expected)
        for k in expected:
            assert_tree_close(actual[k], expected[k], rtol, atol)
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected):
            assert_tree_close(a, e, rtol, atol)
    else:
        assert np.shape(actual) == np.shape(expected)
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


# One compiled value_and_grad of the MLP shared by several tests (one compile for the module).
MLP_VG = gradc.value_and_grad(mlp_loss)


def test_value_and_grad_mlp_matches_hand_derived_numpy():
    params, x, y = make_mlp(seed=0)
    value, grads = MLP_VG(params, x, y)
    ref_loss, ref_grads, _ = np_mlp(params, x, y)
    assert np.ndim(value) == 0
    assert float(value) == pytest.approx(ref_loss, rel=1e-10)
    assert_tree_close(grads, ref_grads)
    for k, g in grads.items():
        assert g.dtype == np.float64 and g.shape == params[k].shape


def test_grad_mlp_matches_finite_differences():
    params, x, y = make_mlp(seed=1)
    grads = gradc.grad(mlp_loss)(params, x, y)
    assert isinstance(grads, dict) and sorted(grads) == ["W1", "W2", "b1", "b2"]
    for k in params:
        fd = finite_diff(lambda: np_mlp(params, x, y)[0], params[k])
        np.testing.assert_allclose(grads[k], fd, rtol=1e-5, atol=1e-8, err_msg=k)


def test_value_and_grad_does_not_mutate_inputs():
    params, x, y = make_mlp(seed=2)
    before = ({k: v.copy() for k, v in params.items()}, x.copy(), y.copy())
    MLP_VG(params, x, y)
    MLP_VG(params, x, y)
    assert_tree_close(params, before[0], rtol=0, atol=0)
    np.testing.assert_array_equal(x, before[1])
    np.testing.assert_array_equal(y, before[2])


def test_jit_mlp_forward_matches_numpy():
    params, x, y = make_mlp(seed=3)
    f = gradc.jit(mlp_loss)
    value = f(params, x, y)
    assert np.ndim(value) == 0
    assert float(value) == pytest.approx(np_mlp(params, x, y)[0], rel=1e-10)


def test_argnums_tuple_gives_tuple_of_gradients():
    params, x, y = make_mlp(seed=4)
    vg = gradc.value_and_grad(mlp_loss, argnums=(0, 1))
    value, grads = vg(params, x, y)
    ref_loss, ref_grads, ref_dx = np_mlp(params, x, y)
    assert isinstance(grads, tuple) and len(grads) == 2
    assert float(value) == pytest.approx(ref_loss, rel=1e-10)
    assert_tree_close(grads[0], ref_grads)
    np.testing.assert_allclose(grads[1], ref_dx, rtol=1e-7, atol=1e-10)


def test_argnums_int_other_than_zero():
    params, x, y = make_mlp(seed=5)
    dx = gradc.grad(mlp_loss, argnums=1)(params, x, y)
    assert isinstance(dx, np.ndarray) and dx.shape == x.shape
    np.testing.assert_allclose(dx, np_mlp(params, x, y)[2], rtol=1e-7, atol=1e-10)


def test_argnums_one_element_tuple_gives_one_element_tuple():
    params, x, y = make_mlp(seed=5)
    grads = gradc.grad(mlp_loss, argnums=(1,))(params, x, y)
    assert isinstance(grads, tuple) and len(grads) == 1
    np.testing.assert_allclose(grads[0], np_mlp(params, x, y)[2], rtol=1e-7, atol=1e-10)


def test_keyword_arguments_are_accepted():
    params, x, y = make_mlp(seed=6)
    value, grads = MLP_VG(params, x=x, y=y)
    ref_loss, ref_grads, _ = np_mlp(params, x, y)
    assert float(value) == pytest.approx(ref_loss, rel=1e-10)
    assert_tree_close(grads, ref_grads)


# ---------------------------------------------------------------------------------------------
# decorators: one elementwise body, f(w, x) = sum(tanh(w * x))

W5 = np.linspace(-1.0, 1.5, 5)
X5 = np.linspace(0.5, -2.0, 5)
T5 = np.tanh(W5 * X5)


@gradc.grad
def dec_grad(w, x):
    return np.sum(np.tanh(w * x))


@gradc.grad(argnums=1)
def dec_grad_x(w, x):
    return np.sum(np.tanh(w * x))


@gradc.value_and_grad
def dec_vg(w, x):
    return np.sum(np.tanh(w * x))


@gradc.value_and_grad(argnums=(0, 1), copy=True)
def dec_vg_both(w, x):
    return np.sum(np.tanh(w * x))


@gradc.jit
def dec_jit(w, x):
    return np.tanh(w * x)


@gradc.jit(target="cpu")
def dec_jit_opts(w, x):
    return np.sum(np.tanh(w * x))


def test_decorator_grad():
    np.testing.assert_allclose(dec_grad(W5, X5), X5 * (1 - T5 ** 2), rtol=1e-12)


def test_decorator_grad_with_argnums():
    np.testing.assert_allclose(dec_grad_x(W5, X5), W5 * (1 - T5 ** 2), rtol=1e-12)


def test_decorator_value_and_grad():
    value, g = dec_vg(W5, X5)
    assert float(value) == pytest.approx(T5.sum(), rel=1e-12)
    np.testing.assert_allclose(g, X5 * (1 - T5 ** 2), rtol=1e-12)


def test_decorator_value_and_grad_with_options():
    value, (gw, gx) = dec_vg_both(W5, X5)
    assert float(value) == pytest.approx(T5.sum(), rel=1e-12)
    np.testing.assert_allclose(gw, X5 * (1 - T5 ** 2), rtol=1e-12)
    np.testing.assert_allclose(gx, W5 * (1 - T5 ** 2), rtol=1e-12)


def test_decorator_jit():
    out = dec_jit(W5, X5)
    assert isinstance(out, np.ndarray) and out.shape == (5,) and out.dtype == np.float64
    np.testing.assert_allclose(out, T5, rtol=1e-12)
    assert float(dec_jit_opts(W5, X5)) == pytest.approx(T5.sum(), rel=1e-12)


def test_decorated_function_keeps_name_and_doc():
    @gradc.value_and_grad
    def my_loss(w):
        """My docstring."""
        return np.sum(w * w)

    assert my_loss.__name__ == "my_loss"
    assert my_loss.__doc__ == "My docstring."


def test_jit_returns_fresh_arrays_each_call():
    a = dec_jit(W5, X5)
    b = dec_jit(-W5, X5)
    assert not np.shares_memory(a, b)
    np.testing.assert_allclose(a, T5, rtol=1e-12)  # not overwritten by the second call
    np.testing.assert_allclose(b, -T5, rtol=1e-12)


def test_jit_returns_the_same_pytree_structure():
    @gradc.jit
    def several(w, x):
        return {"t": np.tanh(w * x), "parts": (np.sum(w), [w * 2.0])}

    out = several(W5, X5)
    assert isinstance(out, dict) and sorted(out) == ["parts", "t"]
    assert isinstance(out["parts"], tuple) and isinstance(out["parts"][1], list)
    np.testing.assert_allclose(out["t"], T5, rtol=1e-12)
    assert float(out["parts"][0]) == pytest.approx(W5.sum())
    np.testing.assert_allclose(out["parts"][1][0], 2 * W5)


# ---------------------------------------------------------------------------------------------
# pytrees

Pair = namedtuple("Pair", ["a", "b"])


def tree_loss(p, x):
    first = p["layers"][0]["w"]
    w2, b2 = p["layers"][1]
    return (np.sum(np.tanh(first * x)) + np.sum((w2 * x) ** 2) + 3.0 * np.sum(b2)
            + np.sum(p["pair"].a * p["pair"].b))


def test_nested_pytree_gradients_have_the_same_structure():
    rng = np.random.default_rng(7)
    p = {"layers": [{"w": rng.standard_normal(5)}, (rng.standard_normal(5), rng.standard_normal(5))],
         "pair": Pair(rng.standard_normal(5), rng.standard_normal(5))}
    x = rng.standard_normal(5)
    value, g = gradc.value_and_grad(tree_loss)(p, x)
    w1 = p["layers"][0]["w"]
    w2, b2 = p["layers"][1]
    t = np.tanh(w1 * x)
    expected = {"layers": [{"w": x * (1 - t ** 2)}, (2 * w2 * x ** 2, np.full(5, 3.0))],
                "pair": Pair(p["pair"].b, p["pair"].a)}
    assert float(value) == pytest.approx(tree_loss(p, x), rel=1e-12)
    assert_tree_close(g, expected, rtol=1e-12)


@pytest.mark.parametrize("kind", [list, tuple])
def test_list_and_tuple_params(kind):
    ws = kind([W5, 2.0 * W5, -W5])

    def loss(ws, x):
        return sum(np.sum(np.tanh(w * x)) for w in ws)

    g = gradc.grad(loss)(ws, X5)
    assert type(g) is kind and len(g) == 3
    for w, gi in zip(ws, g):
        np.testing.assert_allclose(gi, X5 * (1 - np.tanh(w * X5) ** 2), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# gradient buffers: views that the next call overwrites, unless copy=True

def test_gradients_are_views_overwritten_by_the_next_call():
    p1, x, y = make_mlp(seed=8)
    p2, _, _ = make_mlp(seed=9)
    v1, g1 = MLP_VG(p1, x, y)
    first = {k: a.copy() for k, a in g1.items()}
    v2, g2 = MLP_VG(p2, x, y)
    ref1, ref2 = np_mlp(p1, x, y), np_mlp(p2, x, y)
    for k in g1:
        assert np.shares_memory(g1[k], g2[k]), k
        np.testing.assert_array_equal(g1[k], g2[k])  # the old result was overwritten
        assert not np.allclose(first[k], g2[k])
    assert_tree_close(first, ref1[1])
    assert_tree_close(g2, ref2[1])
    # the value is a fresh scalar, not a view
    assert float(v1) == pytest.approx(ref1[0], rel=1e-10)
    assert float(v2) == pytest.approx(ref2[0], rel=1e-10)


def test_each_call_returns_new_view_objects_of_the_buffers():
    """The same memory, but a new array object each call: reshaping one in place
    (`g.shape = (-1,)`) or making it read-only did reach the next call's result."""
    params, x, y = make_mlp(seed=8)
    _, g1 = MLP_VG(params, x, y)
    shape = g1["W1"].shape
    g1["W1"].shape = (-1,)
    g1["b1"].flags.writeable = False
    _, g2 = MLP_VG(params, x, y)
    assert g2["W1"] is not g1["W1"] and g2["W1"].shape == shape
    assert np.shares_memory(g1["W1"], g2["W1"]) and g2["b1"].flags.writeable
    assert_tree_close(g2, np_mlp(params, x, y)[1])


def test_copy_true_returns_fresh_arrays():
    vg = gradc.value_and_grad(mlp_loss, copy=True)
    p1, x, y = make_mlp(seed=8)
    p2, _, _ = make_mlp(seed=9)
    _, g1 = vg(p1, x, y)
    _, g2 = vg(p2, x, y)
    for k in g1:
        assert not np.shares_memory(g1[k], g2[k]), k
    assert_tree_close(g1, np_mlp(p1, x, y)[1])
    assert_tree_close(g2, np_mlp(p2, x, y)[1])
    g1["W1"][...] = 0.0  # a user may write into a copy without disturbing the next call
    _, g3 = vg(p1, x, y)
    assert_tree_close(g3, np_mlp(p1, x, y)[1])


def test_writing_into_gradient_views_does_not_corrupt_the_next_call():
    params, x, y = make_mlp(seed=18)
    _, grads = MLP_VG(params, x, y)
    for g in grads.values():
        g[...] = 1e6  # a user scaling or clipping the gradients in place
    _, grads = MLP_VG(params, x, y)
    assert_tree_close(grads, np_mlp(params, x, y)[1])


def test_gradient_views_passed_back_as_inputs():
    """The returned views may be fed to the next call (here as the parameters): the result is
    computed from their values, although the call then overwrites them."""
    params, x, y = make_mlp(seed=19)
    _, grads = MLP_VG(params, x, y)
    as_params = {k: v.copy() for k, v in grads.items()}
    value, grads2 = MLP_VG(grads, x, y)
    ref_loss, ref_grads, _ = np_mlp(as_params, x, y)
    assert float(value) == pytest.approx(ref_loss, rel=1e-10)
    assert_tree_close(grads2, ref_grads)


def test_unused_argument_and_unused_leaf_get_zero_gradients_every_call():
    vg = gradc.value_and_grad(lambda p, x: np.sum(p["a"] * x))
    p = {"a": W5, "unused": W5.copy()}
    _, g = vg(p, X5)
    np.testing.assert_array_equal(g["unused"], np.zeros(5))
    g["unused"][...] = 7.0  # even after the buffer was written to
    _, g = vg(p, X5)
    np.testing.assert_array_equal(g["unused"], np.zeros(5))
    np.testing.assert_allclose(g["a"], X5, rtol=1e-12)
    ga, gx = gradc.grad(lambda a, b: np.sum(b * 2.0), argnums=(0, 1))(W5, X5)
    np.testing.assert_array_equal(ga, np.zeros(5))
    np.testing.assert_allclose(gx, np.full(5, 2.0))


def test_sgd_update_with_view_gradients_decreases_loss():
    params, x, y = make_mlp(seed=10)
    losses = []
    for _ in range(20):
        value, grads = MLP_VG(params, x, y)
        losses.append(float(value))
        for k in params:
            params[k] -= 0.5 * grads[k]
    assert losses[-1] < 0.5 * losses[0]
    assert float(MLP_VG(params, x, y)[0]) == pytest.approx(np_mlp(params, x, y)[0], rel=1e-10)


# ---------------------------------------------------------------------------------------------
# the signature cache

def test_same_signature_neither_traces_nor_compiles_again(monkeypatch, capsys):
    monkeypatch.setenv("GRADC_LOG", "compiles")
    calls = []

    def counted(w, x):
        calls.append(1)
        return np.sum(np.tanh(w * x))

    vg = gradc.value_and_grad(counted)
    vg(W5, X5)  # COUNTED-FIRST-CALL
    err = capsys.readouterr().err
    assert len(calls) == 1 and len(vg.cache) == 1
    assert "first call" in err and f"{THIS_FILE}:{line_of('COUNTED-FIRST-CALL')}" in err
    for _ in range(3):
        value, g = vg(W5 * 0.5, X5 + 1.0)
    assert len(calls) == 1 and len(vg.cache) == 1
    assert capsys.readouterr().err == ""  # nothing compiled, nothing logged
    t = np.tanh(W5 * 0.5 * (X5 + 1.0))
    assert float(value) == pytest.approx(t.sum(), rel=1e-12)
    np.testing.assert_allclose(g, (X5 + 1.0) * (1 - t ** 2), rtol=1e-12)


def test_concurrent_first_calls_on_a_cold_cache_compile_once(tmp_path, monkeypatch, capsys):
    """Eight threads make the first call of one function at once, on an empty disk cache: the
    signature compiles once, the other threads waiting for it (then tracing it again for
    buffers of their own, from the program cache), and every thread gets the right gradient
    (no error from threads loading the same generated modules)."""
    monkeypatch.setenv("GRADC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("GRADC_LOG", "compiles")

    def cold_cache_only(w, x):  # compiled nowhere else: its generated modules are new
        return np.sum(np.sin(w * x) * w)

    f = gradc.grad(cold_cache_only)
    barrier = threading.Barrier(8)
    results = [None] * 8

    def first_call(i):
        barrier.wait()
        try:
            results[i] = f(W5, X5).copy()
        except BaseException as e:  # reported below
            results[i] = e

    threads = [threading.Thread(target=first_call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = np.cos(W5 * X5) * X5 * W5 + np.sin(W5 * X5)
    for r in results:
        assert not isinstance(r, BaseException), repr(r)
        np.testing.assert_allclose(r, expected, rtol=1e-12)
    assert len(f.cache) == 1
    log = capsys.readouterr().err
    assert log.count("compiled grad(cold_cache_only)") == 8
    assert log.count("in another thread than the one that compiled it") == 7


def test_new_shape_retraces_and_logs_why(monkeypatch, capsys):
    monkeypatch.setenv("GRADC_LOG", "compiles")
    calls = []

    def counted(w, x):
        calls.append(1)
        return np.sum(np.tanh(w * x))

    g = gradc.grad(counted)
    g(W5, X5)
    capsys.readouterr()
    w7, x7 = np.linspace(-1, 1, 7), np.linspace(2, 0, 7)
    out = g(w7, x7)  # COUNTED-NEW-SHAPE
    err = capsys.readouterr().err
    assert len(calls) == 2 and len(g.cache) == 2
    np.testing.assert_allclose(out, x7 * (1 - np.tanh(w7 * x7) ** 2), rtol=1e-12)
    lines = [ln for ln in err.splitlines() if "counted" in ln]
    assert len(lines) == 1, err
    assert f"{THIS_FILE}:{line_of('COUNTED-NEW-SHAPE')}" in lines[0]
    assert "(5,)" in lines[0] and "(7,)" in lines[0]  # says which shape changed, of which
    assert "w: (5,)/float64 -> (7,)/float64" in lines[0]  # argument, by its name
    # both signatures stay cached
    g(W5, X5)
    g(w7, x7)
    assert len(calls) == 2 and len(g.cache) == 2
    assert capsys.readouterr().err == ""


def test_new_dtype_retraces(monkeypatch, capsys):
    monkeypatch.setenv("GRADC_LOG", "compiles")
    calls = []

    def counted(w, x):
        calls.append(1)
        return np.sum(np.tanh(w * x))

    g = gradc.grad(counted)
    g(W5, X5)
    out = g(W5.astype(np.float32), X5.astype(np.float32))
    err = capsys.readouterr().err
    assert len(calls) == 2 and len(g.cache) == 2
    assert "float32" in err.splitlines()[-1]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, X5 * (1 - T5 ** 2), rtol=1e-5)


def test_no_log_without_gradc_log(monkeypatch, capsys):
    monkeypatch.delenv("GRADC_LOG", raising=False)
    gradc.grad(lambda w, x: np.sum(np.tanh(w * x)))(W5, X5)
    assert "gradc" not in capsys.readouterr().err


def test_static_python_numbers_are_part_of_the_signature(monkeypatch, capsys):
    monkeypatch.setenv("GRADC_LOG", "compiles")
    calls = []

    def scaled(w, x, k):
        calls.append(k)
        return np.sum(np.tanh(w * x)) * k

    vg = gradc.value_and_grad(scaled)
    v2, g2 = vg(W5, X5, 2.0)
    g2 = g2.copy()
    v3, g3 = vg(W5, X5, 3.0)
    assert calls == [2.0, 3.0] and len(vg.cache) == 2
    assert "static" in capsys.readouterr().err.splitlines()[-1]  # the log says why
    assert float(v2) == pytest.approx(2 * T5.sum(), rel=1e-12)
    assert float(v3) == pytest.approx(3 * T5.sum(), rel=1e-12)
    np.testing.assert_allclose(g2, 2 * X5 * (1 - T5 ** 2), rtol=1e-12)
    np.testing.assert_allclose(g3, 3 * X5 * (1 - T5 ** 2), rtol=1e-12)
    v2b, _ = vg(W5, X5, 2.0)
    assert calls == [2.0, 3.0] and len(vg.cache) == 2
    assert float(v2b) == pytest.approx(2 * T5.sum(), rel=1e-12)


def test_static_loop_count_unrolls():
    def power(w, n):
        y = w
        for _ in range(n - 1):
            y = y * w
        return np.sum(y)

    g = gradc.grad(power)
    w = np.linspace(0.5, 1.5, 5)
    np.testing.assert_allclose(g(w, 3), 3 * w ** 2, rtol=1e-12)
    np.testing.assert_allclose(g(w, 4), 4 * w ** 3, rtol=1e-12)
    assert len(g.cache) == 2


# ---------------------------------------------------------------------------------------------
# explain and the generated driver file

def test_explain_shows_ir_with_sources_kernels_and_memory_plan():
    params, x, y = make_mlp(seed=11)
    text = gradc.explain(mlp_loss, params, x, y)
    assert isinstance(text, str)
    tanh_src = f"# {THIS_FILE}:{line_of('MLP-TANH')}"
    ir_lines = [ln for ln in text.splitlines() if tanh_src in ln]
    assert any(re.search(r"%\d+\S* = .*tanh", ln) for ln in ir_lines), text[:3000]
    assert re.search(r"kernel", text, re.I)
    assert re.search(r"\d[\d,.]*\s*(bytes|B|KiB|MiB)\b", text)
    assert re.search(r"reuse", text, re.I)  # the naive (no reuse) figure beside the plan
    m = re.search(r"arena total: ([\d,.]+) KiB\s+without reuse: ([\d,.]+) KiB", text)
    if m:  # the planned arena is never bigger than one slot per value
        arena, naive = (float(g.replace(",", "")) for g in m.groups())
        assert 0 < arena <= naive
    # explain only reports: it neither runs nor mutates anything
    assert np.all(np.isfinite(params["W1"]))


def test_explain_accepts_a_compiled_function_and_argnums():
    params, x, y = make_mlp(seed=11)
    text = gradc.explain(MLP_VG, params, x, y)
    assert f"{THIS_FILE}:{line_of('MLP-TANH')}" in text
    text = gradc.explain(mlp_loss, params, x, y, argnums=1)
    assert "matmul" in text


def _compiled_entries(f):
    cache = getattr(f, "cache", None)
    if not isinstance(cache, dict) or not cache:
        pytest.skip("compiled signatures are not exposed")
    return list(cache.values())


def test_driver_module_is_a_real_readable_file():
    params, x, y = make_mlp(seed=12)
    MLP_VG(params, x, y)
    compiled = _compiled_entries(MLP_VG)[0]
    driver = getattr(compiled, "driver", None)
    module = sys.modules.get(getattr(driver, "__module__", None) or "")
    if module is None:
        pytest.skip("the driver module is not exposed")
    path = module.__file__
    assert os.path.isfile(path) and path.endswith(".py")
    with open(path, encoding="utf-8") as f:
        source = f.read()
    assert "def run(" in source
    assert f"{THIS_FILE}:{line_of('MLP-TANH')}" in source  # lines commented with the user's line


# ---------------------------------------------------------------------------------------------
# parameter reuse and grad of grad

def test_parameter_used_twice_accumulates_gradients():
    rng = np.random.default_rng(13)
    W = rng.standard_normal((3, 3))
    x = rng.standard_normal((2, 3))

    def twice(W, x):
        return np.sum(np.tanh(x @ W) @ W)

    def ref():
        return np.sum(np.tanh(x @ W) @ W)

    g = gradc.grad(twice)(W, x)
    np.testing.assert_allclose(g, finite_diff(ref, W), rtol=1e-6, atol=1e-9)


def test_same_array_passed_as_two_arguments():
    def prod(a, b):
        return np.sum(np.tanh(a * b))

    ga, gb = gradc.grad(prod, argnums=(0, 1))(W5, W5)
    t = np.tanh(W5 * W5)
    np.testing.assert_allclose(ga, W5 * (1 - t ** 2), rtol=1e-12)
    np.testing.assert_allclose(gb, W5 * (1 - t ** 2), rtol=1e-12)


def test_hessian_vector_product_by_grad_of_grad():
    rng = np.random.default_rng(14)
    A = rng.standard_normal((3, 3))
    w = rng.standard_normal(3)
    v = rng.standard_normal(3)

    def f(w, A):
        return np.sum(np.tanh(A @ w))

    df = gradc.grad(f)

    def directional(w, v, A):
        return np.sum(df(w, A) * v)

    hvp = gradc.grad(directional)(w, v, A)
    t = np.tanh(A @ w)
    H = A.T @ np.diag(-2 * t * (1 - t ** 2)) @ A
    np.testing.assert_allclose(hvp, H @ v, rtol=1e-10, atol=1e-12)
    # and the inner gradient itself, compiled on its own
    np.testing.assert_allclose(df(w, A), A.T @ (1 - t ** 2), rtol=1e-12)


def test_value_and_grad_of_a_function_calling_grad():
    def f(w):
        return np.sum(w ** 3)

    def grad_norm(w):
        g = gradc.grad(f)(w)
        return np.sum(g * g)

    value, g = gradc.value_and_grad(grad_norm)(W5)
    assert float(value) == pytest.approx(np.sum((3 * W5 ** 2) ** 2), rel=1e-12)
    np.testing.assert_allclose(g, 36 * W5 ** 3, rtol=1e-12)


def test_hessian_vector_product_with_pytree_params_via_inner_value_and_grad():
    rng = np.random.default_rng(20)
    x = rng.standard_normal((4, 3))
    p = {"w": rng.standard_normal((3, 2)), "b": rng.standard_normal(2)}
    v = {"w": rng.standard_normal((3, 2)), "b": rng.standard_normal(2)}

    def f(p, x):
        return np.sum(np.tanh(x @ p["w"] + p["b"]))

    def directional(p, v, x):
        _, g = gradc.value_and_grad(f)(p, x)
        return np.sum(g["w"] * v["w"]) + np.sum(g["b"] * v["b"])

    def np_grad(p):
        d = 1 - np.tanh(x @ p["w"] + p["b"]) ** 2
        return {"w": x.T @ d, "b": d.sum(0)}

    hv = gradc.grad(directional)(p, v, x)
    eps = 1e-6
    plus = np_grad({k: p[k] + eps * v[k] for k in p})
    minus = np_grad({k: p[k] - eps * v[k] for k in p})
    expected = {k: (plus[k] - minus[k]) / (2 * eps) for k in p}
    assert_tree_close(hv, expected, rtol=1e-6, atol=1e-8)


def test_third_derivative_by_nesting_grad_three_times():
    d1 = gradc.grad(lambda w: np.sum(w ** 4))
    d2 = gradc.grad(lambda w: np.sum(d1(w)))
    d3 = gradc.grad(lambda w: np.sum(d2(w)))
    w = np.array([1.0, 2.0, -0.5])
    np.testing.assert_allclose(d3(w), 24 * w, rtol=1e-12)


def test_gradient_penalty_inner_grad_with_respect_to_data():
    def inner(w, x):
        return np.sum(np.tanh(x * w))

    def penalty(w, x):
        gx = gradc.grad(inner, argnums=1)(w, x)
        return np.sum(gx ** 2)

    def ref(w):
        return np.sum((w * (1 - np.tanh(X5 * w) ** 2)) ** 2)

    w = W5.copy()
    g = gradc.grad(penalty)(w, X5)
    np.testing.assert_allclose(g, finite_diff(lambda: ref(w), w), rtol=1e-6, atol=1e-9)


def test_jit_function_called_inside_a_traced_function():
    inner = gradc.jit(lambda w: np.tanh(w) * 2.0)
    g = gradc.grad(lambda w: np.sum(inner(w)))(W5)
    np.testing.assert_allclose(g, 2 * (1 - np.tanh(W5) ** 2), rtol=1e-12)


def test_weight_shared_across_an_unrolled_loop():
    rng = np.random.default_rng(21)
    W = 0.5 * rng.standard_normal((3, 3))
    h0 = rng.standard_normal(3)

    def rnn(W, h0, steps):
        h = h0
        for _ in range(steps):
            h = np.tanh(W @ h)
        return np.sum(h)

    g = gradc.grad(rnn)(W, h0, 4)
    np.testing.assert_allclose(g, finite_diff(lambda: rnn(W, h0, 4), W), rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------------------------------------
# call-time conversion of inputs

def test_non_contiguous_inputs_give_the_same_result_without_retracing():
    params, x, y = make_mlp(seed=15)
    MLP_VG(params, x, y)
    n_sigs = len(MLP_VG.cache)
    expected_loss, expected_grads, _ = np_mlp(params, x, y)
    wide = np.zeros((6, 8))
    wide[:, ::2] = x
    x_strided = wide[:, ::2]
    fortran = {k: np.asfortranarray(v) for k, v in params.items()}
    fortran["W1"] = np.asfortranarray(params["W1"])
    assert not x_strided.flags.c_contiguous and not fortran["W1"].flags.c_contiguous
    value, grads = MLP_VG(fortran, x_strided, y[::-1].copy()[::-1])
    assert float(value) == pytest.approx(expected_loss, rel=1e-10)
    assert_tree_close(grads, expected_grads)
    assert len(MLP_VG.cache) == n_sigs
    np.testing.assert_array_equal(x_strided, x)  # inputs untouched


def test_float32_data_with_float64_params_promotes_like_numpy():
    params, x, y = make_mlp(seed=16)
    x32 = x.astype(np.float32)
    value, grads = gradc.value_and_grad(mlp_loss)(params, x32, y)
    ref_loss, ref_grads, _ = np_mlp(params, x32.astype(np.float64), y)
    assert grads["W1"].dtype == np.float64
    assert float(value) == pytest.approx(ref_loss, rel=1e-10)
    assert_tree_close(grads, ref_grads)


def test_int32_labels_work_like_int64_labels():
    params, x, y = make_mlp(seed=17)
    value, grads = MLP_VG(params, x, y.astype(np.int32))
    ref_loss, ref_grads, _ = np_mlp(params, x, y)
    assert float(value) == pytest.approx(ref_loss, rel=1e-10)
    assert_tree_close(grads, ref_grads)


def test_integer_data_into_float_model_is_converted_like_numpy():
    @gradc.jit
    def affine(x, w):
        return np.tanh(x @ w)

    xi = np.arange(6, dtype=np.int64).reshape(2, 3) - 2
    w = np.linspace(-0.5, 0.5, 6).reshape(3, 2)
    np.testing.assert_allclose(affine(xi, w), np.tanh(xi @ w), rtol=1e-12)


def test_numpy_scalar_argument_is_an_array_leaf():
    """A NumPy scalar (np.float64) is an array leaf, so its gradient can be taken."""
    def f(s, x):
        return np.sum(np.tanh(s * x))

    g = gradc.grad(f)(np.float64(0.5), X5)
    assert np.shape(g) == ()
    assert float(g) == pytest.approx(np.sum(X5 * (1 - np.tanh(0.5 * X5) ** 2)), rel=1e-12)


# ---------------------------------------------------------------------------------------------
# train_step: as a decorator (optimizers, errors and allocations are in tests/test_train.py)

def test_train_step_as_decorator_and_batch_shape_change_retraces():
    calls = []

    @gradc.train_step(optimizer=gradc.optim.SGD(lr=0.5))
    def step(w, x):
        calls.append(1)
        return np.sum(np.tanh(w * x))

    w = W5.copy()
    step(w, X5)
    step(w, X5)
    assert len(calls) == 1
    expected = W5 - 0.5 * X5 * (1 - T5 ** 2)
    expected = expected - 0.5 * X5 * (1 - np.tanh(expected * X5) ** 2)
    np.testing.assert_allclose(w, expected, rtol=1e-7)
    # a batch of another shape may retrace (w broadcasts against it)
    loss = step(w, np.ones((3, 5)))
    assert len(calls) == 2 and loss == pytest.approx(3 * np.sum(np.tanh(expected)), rel=1e-6)


def test_an_iterator_argument_is_refused():
    """A generator or iter(...) argument was a static value, hashed by identity: its items were
    read once when traced and compiled in, and the same iterator, exhausted, got the old
    answer."""
    f = gradc.grad(lambda p, xs: sum((x * p).sum() for x in xs))
    for it in (iter([np.ones(3)]), (x for x in [np.ones(3)]), zip([np.ones(3)])):
        with pytest.raises(gradc.SignatureError, match="list or tuple"):
            f(np.ones(3), it)
    np.testing.assert_array_equal(f(np.ones(3), [np.ones(3), 2 * np.ones(3)]), 3 * np.ones(3))


def test_a_function_keeps_its_recent_signatures_only(monkeypatch):
    """Batch sizes at random compiled a signature each and kept them all (200: 54 MiB): past
    signature.KEPT_SIGNATURES the oldest goes, and comes back compiled again if called."""
    from gradc import signature
    monkeypatch.setattr(signature, "KEPT_SIGNATURES", 3)
    vg = gradc.value_and_grad(lambda w, x: np.sum(np.tanh(x @ w)))
    step = gradc.train_step(lambda p, x: np.sum(np.tanh(x @ p["w"])), gradc.optim.SGD(0.1))
    w, p = np.ones((3, 2)), {"w": np.ones((3, 2))}
    for n in (1, 2, 3, 4, 5, 1):
        x = np.full((n, 3), 0.1)
        value, _ = vg(w, x)
        step(p, x)
        assert value == pytest.approx(np.sum(np.tanh(x @ w)), rel=1e-12)
    assert len(vg.cache) == 3 and len(step.cache) == 3


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_a_forked_child_calls_a_function_another_thread_was_calling():
    """The child inherits the locks the parent's other threads held at the fork, held for
    good: a child calling the signature a parent thread was running waited forever (gradc
    makes its locks anew in the child, gradc/forks.py). Also a generator's draws."""
    import threading
    f = gradc.value_and_grad(lambda x: (np.sin(x) ** 2).sum(), copy=True)
    draw = gradc.jit(lambda g: g.random(3))
    x = np.ones(10)
    f(x)
    g = gradc.random.default_rng(0)
    draw(g)
    stop = threading.Event()

    def busy():
        while not stop.is_set():
            f(x)
            draw(g)

    thread = threading.Thread(target=busy)
    thread.start()
    try:
        for _ in range(5):
            pid = os.fork()
            if pid == 0:  # the child: exit 0 when both calls come back right
                ok = np.isclose(f(x)[0], 10 * np.sin(1.0) ** 2) and draw(g).shape == (3,)
                os._exit(0 if ok else 3)
            deadline = time.monotonic() + 60
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
                    pytest.fail("the forked child hung on a lock another parent thread held")
                time.sleep(0.01)
    finally:
        stop.set()
        thread.join()


def test_another_librarys_caller_gets_fresh_gradients():
    """scipy.optimize.minimize(gradc.value_and_grad(f), x0, jac=True) (autograd's idiom) keeps
    one call's gradient while it makes the next: views of gradc's buffers changed under it, and
    BFGS and CG stopped far from the minimum, silently. A library's call gets fresh arrays; the
    user's own calls keep the views."""
    optimize = pytest.importorskip("scipy.optimize")

    def rosenbrock(x):
        return 100 * (x[1] - x[0] ** 2) ** 2 + (1 - x[0]) ** 2

    vg = gradc.value_and_grad(rosenbrock)
    for method in ("CG", "BFGS"):
        for objective in (vg, lambda x: vg(x)):  # (directly, and through the user's function)
            result = optimize.minimize(objective, np.array([-2.0, -1.0]), jac=True, method=method)
            assert result.success and np.allclose(result.x, 1.0, atol=1e-4), method
    x = np.array([0.5, 0.5])
    first = vg(x)[1]
    second = vg(x + 1)[1]
    assert np.shares_memory(first, second)  # (the user's own calls: views, as documented)


def test_argnums_by_position_as_jax_and_autograd():
    """grad(fun, 1), as jax.grad and autograd.grad take it, was a bare TypeError."""
    def fun(x, y):
        return np.sin(np.sin(x) + np.sin(y))

    want = np.cos(np.sin(0.3) + np.sin(0.7)) * np.cos(0.7)
    assert gradc.grad(fun, 1)(0.3, 0.7) == pytest.approx(want, rel=1e-14)
    assert gradc.value_and_grad(fun, 1)(0.3, 0.7)[1] == pytest.approx(want, rel=1e-14)
    assert gradc.jacobian(fun, 1)(0.3, 0.7) == pytest.approx(want, rel=1e-14)
    assert gradc.hessian(fun, (0, 1))(0.3, 0.7)[0][1] == gradc.hessian(fun, (1, 0))(0.3, 0.7)[1][0]


def test_a_gradient_view_is_overwritten_by_its_own_threads_next_call_only():
    """Gradients are views of the compiled signature's buffers; another thread's call of the
    same function overwrote them (a thread pool computing gradients of its own batches got
    the other threads' gradients). Each thread now runs the signature with buffers of its
    own: a view holds until its own thread calls again. copy=True is unchanged."""
    def loss(W, x):
        return np.tanh(x @ W).sum()

    vg = gradc.value_and_grad(loss)
    rng = np.random.default_rng(5)
    W = rng.standard_normal((4, 3))
    xs = [rng.standard_normal((2, 4)) for _ in range(2)]
    turns = threading.Barrier(2)
    held, errors = [None, None], []

    def worker(i):
        try:
            for _ in range(3):
                if i == 1:
                    turns.wait()  # (thread 0 has its views)
                held[i] = vg(W, xs[i])
                if i == 0:
                    turns.wait()
                turns.wait()  # (both called: each checks its own views)
                value, grad = held[i]
                assert value == pytest.approx(loss(W, xs[i]), rel=1e-12)
                np.testing.assert_allclose(
                    grad, xs[i].T @ (1 - np.tanh(xs[i] @ W) ** 2), rtol=1e-12)
                turns.wait()
        except BaseException as e:  # reported below
            errors.append(e)
            turns.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(vg.cache) == 1


def test_threads_one_after_another_keep_their_gradients():
    """A thread that ends hands its id to the next: the next one took the ended thread's
    buffers and overwrote the gradient it returned, still held (fuzz41d). Buffers are kept per
    thread (thread-local), not per id."""
    def loss(W, x):
        return np.sum(W * x) ** 2

    vg = gradc.value_and_grad(loss)
    vg(np.ones(3), np.ones(3))  # (compiled by this thread)
    W, held = np.ones(3), []
    for k in range(1, 4):
        worker = threading.Thread(target=lambda k=k: held.append(vg(W, np.full(3, k))[1]))
        worker.start()
        worker.join()
    for k, grad in zip(range(1, 4), held):
        np.testing.assert_allclose(grad, 2 * np.sum(W * k) * k)


class _Switch:
    def __init__(self):
        self.training = True

    def loss(self, W, x):
        return np.sum(W * x) * (2.0 if self.training else 3.0)


def test_a_thread_of_its_own_keeps_its_variants(monkeypatch, capsys):
    """A flag switched back and forth (model.training) compiles each value once in the
    compiling thread; in another thread every call traced again (fuzz41d): its own compiles
    keep their variants too, and a thread tracing again and again gets the RecompileWarning."""
    monkeypatch.setenv("GRADC_LOG", "compiles")
    model = _Switch()
    vg = gradc.value_and_grad(model.loss)
    vg(np.ones(3), np.ones(3))
    errors = []

    def worker():
        try:
            for i in range(8):
                model.training = i % 2 == 0
                value, _ = vg(np.ones(3), np.ones(3))
                assert value == (6.0 if model.training else 9.0)
        except BaseException as e:  # reported below
            errors.append(e)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert not errors, errors
    assert capsys.readouterr().err.count("in another thread than the one that compiled") == 2


def test_arguments_that_would_be_compiled_in_stale_are_refused_with_what_to_pass():
    """fuzz42a: a deque or UserList argument (told apart by identity: an append unseen), a
    torch.Tensor (hashable: its values compiled in) were stale; a JAX array crashed."""
    import collections
    x = np.ones(2)
    f = gradc.jit(lambda x, h: x * len(h))
    for given, advice in ((collections.deque([1.0]), "list(x)"),
                          (collections.UserList([1.0]), "list(x)"),
                          (collections.UserDict(a=1.0), "dict(x)")):
        with pytest.raises(gradc.SignatureError, match=re.escape(advice)):
            f(x, given)
    torch = pytest.importorskip("torch")
    with pytest.raises(gradc.SignatureError, match="np.asarray"):
        gradc.jit(lambda t: np.tanh(t))(torch.ones(2))


def test_what_fuzz42a_found_in_the_calling_conventions():
    """argnums as a NumPy integer traces a Python float argument; @gradc.grad over
    @staticmethod takes no object; gradc.explain of a @gradc.jit method bound to an object;
    np.str_ arguments are static values as str is; a defaultdict argument is refused (the
    function got a plain dict: a bare KeyError); a Generator inside the differentiated
    argument is named."""
    assert gradc.grad(lambda a, x: a * x, argnums=np.int64(0))(3.0, 2.0) == 2.0

    class Model:
        @gradc.grad
        @staticmethod
        def loss_grad(w):
            return np.sum(w ** 2)

        @gradc.jit
        def forward(self, x):
            return x * 2

    w = np.array([1.0, 2.0])
    np.testing.assert_array_equal(Model().loss_grad(w), 2 * w)
    assert gradc.explain(Model().forward, w).splitlines()[0] == "gradc.explain: jit of forward"
    act = np.array(["tanh", "relu"])
    f = gradc.jit(lambda x, a: np.tanh(x) if a == "tanh" else np.maximum(x, 0))
    np.testing.assert_array_equal(f(w, act[1]), w)
    import collections
    with pytest.raises(gradc.SignatureError, match=re.escape("dict(x)")):
        gradc.jit(lambda d: d["W"] * 2)(collections.defaultdict(float, W=w))
    with pytest.raises(gradc.NonDifferentiableError, match=re.escape("p['rng'].state")):
        gradc.grad(lambda p: np.sum(p["W"] * p["rng"].random(2)))(
            {"W": w, "rng": gradc.random.Generator(0)})


def _module_level_loss(p, x):
    return np.sum((x @ p["w"]) ** 2)


def test_copies_of_models_holding_compiled_functions_and_steps_are_independent():
    """fuzz44b: copy.deepcopy of a model that keeps `self.fwd = gradc.jit(self.forward)` (a
    DQN's target network) ran without end, to 20 GB (it walked the compiled graphs); before a
    call it was a bare TypeError (a lock). A copy is the same compiled function of the copied
    model; a train step's copy keeps its optimizer state."""
    import copy
    import pickle

    class QNet:
        def __init__(self):
            self.W = np.eye(2) * 0.5
            self.fwd = gradc.jit(self.forward)
            self.grad = gradc.grad(self.loss)

        def forward(self, x):
            return np.tanh(x @ self.W)

        def loss(self, x):
            return np.sum(self.forward(x))

    x = np.ones((1, 2))
    online = QNet()
    copy.deepcopy(online)  # (before a call)
    online.fwd(x)
    target = copy.deepcopy(online)
    online.W += 1.0
    np.testing.assert_allclose(target.fwd(x), np.tanh(x @ (np.eye(2) * 0.5)))
    np.testing.assert_allclose(online.fwd(x), np.tanh(x @ (np.eye(2) * 0.5 + 1.0)))
    np.testing.assert_allclose(target.grad(x), gradc.grad(target.loss)(x))
    step = gradc.train_step(_module_level_loss, gradc.optim.Adam(lr=0.01))
    params, batch = {"w": np.ones((2, 1))}, np.ones((3, 2))
    step(params, batch)
    twin, twin_params = pickle.loads(pickle.dumps(step)), copy.deepcopy(params)
    for _ in range(2):
        assert step(params, batch) == twin(twin_params, batch)
    np.testing.assert_array_equal(params["w"], twin_params["w"])
    np.testing.assert_allclose(pickle.loads(pickle.dumps(gradc.jit(np.tanh)))(x), np.tanh(x))
