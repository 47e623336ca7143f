"""The fast way into a compiled call (gradc/last_call.py: LastCall): a call with the last call's signature
skips flattening and the cache lookup. It must give the same results as the slow way, notice
every change the signature key would notice (and then recompile or raise what the slow way
raises), and take the address of a new array passed in place of the last one."""
import numpy as np
import pytest

import gradc


def loss(params, x, y):
    h = np.tanh(x @ params["W"] + params["b"])
    return np.mean((h.sum(axis=1) - y) ** 2)


def make(seed=0, n=5, dtype=np.float32):
    rng = np.random.default_rng(seed)
    params = {"W": rng.standard_normal((3, 4)).astype(dtype),
              "b": rng.standard_normal(4).astype(dtype)}
    return params, rng.standard_normal((n, 3)).astype(dtype), rng.standard_normal(n).astype(dtype)


def slow_value_and_grad(params, x, y):
    """The same function, made to take the slow way every call."""
    vg = gradc.value_and_grad(loss)
    return vg(params, x, y)


def test_fast_calls_give_the_slow_calls_bits():
    params, x, y = make(1)
    vg = gradc.value_and_grad(loss)
    vg(params, x, y)
    assert vg._last_call is not None
    for seed in range(3):  # new arrays each call, and the same ones again
        p2, x2, y2 = make(seed + 10)
        for _ in range(2):
            v, g = vg(p2, x2, y2)
            v_ref, g_ref = gradc.value_and_grad(loss)(p2, x2, y2)
            assert v == v_ref
            for k in g:
                np.testing.assert_array_equal(g[k], g_ref[k])
    assert len(vg.cache) == 1


def test_a_new_array_at_a_dead_arrays_address_is_read():
    vg = gradc.grad(lambda w: np.sum(w * w))
    for i in range(5):  # each array dies after its call; the next may reuse its memory
        w = np.full(6, float(i))
        np.testing.assert_array_equal(vg(w), 2 * w)


@pytest.mark.parametrize("change", ["shape", "dtype", "key", "static", "container"])
def test_a_changed_signature_compiles_again(change):
    def f(p, x, s=1.0):
        return np.sum(p["W"] * x) * s

    vg = gradc.grad(f)
    p = {"W": np.ones(3)}
    x = np.arange(3.0)
    vg(p, x)
    vg(p, x)
    if change == "shape":
        out = vg({"W": np.ones(4)}, np.arange(4.0))
        np.testing.assert_array_equal(out["W"], np.arange(4.0))
    elif change == "dtype":
        out = vg({"W": np.ones(3, np.float32)}, np.arange(3.0, dtype=np.float32))
        assert out["W"].dtype == np.float32
    elif change == "key":
        with pytest.raises(Exception):  # the loss reads p["W"]: a trace error, as before
            vg({"V": np.ones(3)}, x)
        out = vg({"W": np.ones(3), "extra": np.ones(2)}, x)
        np.testing.assert_array_equal(out["W"], x)
        np.testing.assert_array_equal(out["extra"], 0)
    elif change == "static":
        out = vg(p, x, 3.0)
        np.testing.assert_array_equal(out["W"], 3 * x)
    elif change == "container":
        with pytest.raises(TypeError):  # the user's own p["W"] on a list, as the slow way
            vg([np.ones(3)], x)
    assert len(vg.cache) == 2 or change in ("container",)
    np.testing.assert_array_equal(vg(p, x)["W"], x)  # and back


def test_an_array_reshaped_in_place_is_a_new_signature():
    vg = gradc.grad(lambda w: np.sum(w * np.arange(w.size).reshape(w.shape)))
    w = np.ones(6)
    vg(w)
    vg(w)
    w.shape = (2, 3)
    assert vg(w).shape == (2, 3)
    assert len(vg.cache) == 2


def test_non_contiguous_and_converted_inputs_still_work_after_a_fast_call():
    vg = gradc.grad(lambda w, x: np.sum(w * x))
    w = np.ones(4)
    x = np.arange(8.0)
    vg(w, x[:4])
    vg(w, x[:4])
    np.testing.assert_array_equal(vg(w, x[::2]), x[::2])
    np.testing.assert_array_equal(vg(w, x[:4]), x[:4])


def test_train_step_fast_calls_match_a_fresh_step():
    params, x, y = make(2)
    p_fast = {k: v.copy() for k, v in params.items()}
    step = gradc.train_step(loss, gradc.optim.SGD(0.1, momentum=0.9))
    losses = [step(p_fast, x, y) for _ in range(4)]
    assert step._last_call is not None
    p_slow = {k: v.copy() for k, v in params.items()}
    ref = gradc.train_step(loss, gradc.optim.SGD(0.1, momentum=0.9))
    ref_losses = []
    for _ in range(4):
        ref._last_call = None  # the slow way every time
        ref_losses.append(ref(p_slow, x, y))
    assert losses == ref_losses
    for k in params:
        np.testing.assert_array_equal(p_fast[k], p_slow[k])


def test_train_step_notices_a_read_only_parameter_and_a_changed_optimizer():
    params, x, y = make(3)
    opt = gradc.optim.SGD(0.1)
    step = gradc.train_step(loss, opt)
    step(params, x, y)
    step(params, x, y)
    params["W"].flags.writeable = False
    before = params["b"].copy()
    with pytest.raises(gradc.GradcError, match=r"test_fast_call\.py:\d+"):
        step(params, x, y)
    np.testing.assert_array_equal(params["b"], before)
    params["W"].flags.writeable = True
    w = params["W"].copy()
    opt.weight_decay = 0.5  # compiled into the update: a new signature
    step(params, x, y)
    assert len(step.cache) == 2
    opt.weight_decay = 0.0
    step(params, x, y)
    assert len(step.cache) == 2
    assert not np.array_equal(params["W"], w)


def test_train_step_batch_shape_change_and_back():
    params, x, y = make(4)
    step = gradc.train_step(loss, gradc.optim.SGD(0.1))
    step(params, x, y)
    _, x2, y2 = make(4, n=7)
    step(params, x2, y2)
    step(params, x, y)
    step(params, x2, y2)
    assert len(step.cache) == 2
    with pytest.raises(gradc.GradcError):
        step({"W": params["W"]}, x, y)


def test_a_kernel_error_is_raised_on_a_fast_call():
    f = gradc.jit(lambda w, i: np.take(w, i, axis=0))
    w = np.ones((4, 3))
    i = np.array([3, 0])
    f(w, i)
    f(w, i)
    i[0] = 4  # the same arrays: the fast way
    with pytest.raises(IndexError, match=r"index out of range in take \(test_fast_call\.py:\d+\)"):
        f(w, i)
    i[0] = 1
    np.testing.assert_array_equal(f(w, i), np.ones((2, 3)))
