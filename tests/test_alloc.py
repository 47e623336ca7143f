"""After warm-up, a value_and_grad call allocates nothing: Numba's runtime allocation counters do
not move over 10 calls, and no NumPy array is allocated per call. The results are checked
against NumPy so that a call that did nothing would fail."""
import gc
import os
import tracemalloc

import numpy as np
import pytest
from numba import njit
from numba.core.runtime import _nrt_python, rtsys

import gradc  # tests/conftest.py points GRADC_CACHE_DIR at a session temp dir


@pytest.fixture(scope="module", autouse=True)
def nrt_stats():
    was_on = _nrt_python.memsys_stats_enabled()
    _nrt_python.memsys_enable_stats()
    yield
    if not was_on:
        _nrt_python.memsys_disable_stats()


def nrt_counts():
    s = rtsys.get_allocation_stats()
    return {"alloc": s.alloc, "free": s.free, "mi_alloc": s.mi_alloc, "mi_free": s.mi_free}


@njit(cache=False)
def _allocating(n):
    return np.ones(n).sum()


def test_the_counters_see_numba_allocations():
    """Control: the measurement works, so a zero difference below means something."""
    _allocating(3)
    before = nrt_counts()
    _allocating(3)
    after = nrt_counts()
    assert after["alloc"] > before["alloc"] and after["mi_alloc"] > before["mi_alloc"]


# ---------------------------------------------------------------------------------------------

def mlp_loss(params, x, y):
    h = np.tanh(x @ params["W1"] + params["b1"])
    logits = h @ params["W2"] + params["b2"]
    return gradc.nn.cross_entropy(logits, y)


def np_mlp(params, x, y):
    h = np.tanh(x @ params["W1"] + params["b1"])
    logits = h @ params["W2"] + params["b2"]
    m = logits.max(axis=1, keepdims=True)
    logp = logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))
    n = x.shape[0]
    d = np.exp(logp)
    d[np.arange(n), y] -= 1.0
    d /= n
    dz1 = (d @ params["W2"].T) * (1.0 - h * h)
    return -logp[np.arange(n), y].mean(), {"W1": x.T @ dz1, "b1": dz1.sum(0), "W2": h.T @ d,
                                           "b2": d.sum(0)}


def make_mlp(n=6, hidden=5, seed=0):
    rng = np.random.default_rng(seed)
    params = {"W1": rng.standard_normal((4, hidden)), "b1": 0.1 * rng.standard_normal(hidden),
              "W2": rng.standard_normal((hidden, 3)), "b2": 0.1 * rng.standard_normal(3)}
    return params, rng.standard_normal((n, 4)), rng.integers(0, 3, n)


def fused(w, b, x):
    return np.sum(np.tanh(x * w + b) ** 2 * gradc.nn.sigmoid(x * w) + 0.5 * np.exp(-np.abs(b)))


def np_fused(w, b, x):
    t = np.tanh(x * w + b)
    s = 1.0 / (1.0 + np.exp(-x * w))
    value = np.sum(t ** 2 * s + 0.5 * np.exp(-np.abs(b)))
    dt = 2 * t * (1 - t ** 2) * s
    ds = t ** 2 * s * (1 - s)
    gw = dt * x + ds * x
    gb = dt - 0.5 * np.sign(b) * np.exp(-np.abs(b))
    return value, (gw, gb)


def _mlp_case():
    params, x, y = make_mlp()
    return gradc.value_and_grad(mlp_loss), (params, x, y), np_mlp(params, x, y)


def _fused_case(n=64):
    rng = np.random.default_rng(1)
    w, b, x = (rng.standard_normal(n) for _ in range(3))
    return gradc.value_and_grad(fused, argnums=(0, 1)), (w, b, x), np_fused(w, b, x)


def _fused_parallel_case():
    """2**17 elements, with loop kernels cut into chunks for gradc's threads."""
    os.environ["GRADC_PARALLEL_MIN_ITERATIONS"] = str(1 << 17)
    try:
        case = _fused_case(n=1 << 17)
        case[0].compiled_for(*case[1])  # compile while parallel loops are on
        return case
    finally:
        del os.environ["GRADC_PARALLEL_MIN_ITERATIONS"]


def _assert_matches(result, expected):
    (value, grads), (ref_value, ref_grads) = result, expected
    assert float(value) == pytest.approx(ref_value, rel=1e-10)
    if isinstance(ref_grads, dict):
        assert sorted(grads) == sorted(ref_grads)
        grads, ref_grads = [grads[k] for k in ref_grads], list(ref_grads.values())
    assert len(grads) == len(ref_grads)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(g, r, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("case", [_mlp_case, _fused_case, _fused_parallel_case],
                         ids=["mlp_cross_entropy", "elementwise_reduction", "parallel_loops"])
def test_warm_calls_do_not_touch_numba_allocation_counters(case):
    vg, args, expected = case()
    _assert_matches(vg(*args), expected)  # warm-up: trace, compile, first run
    vg(*args)
    before = nrt_counts()
    results = [vg(*args) for _ in range(10)]
    after = nrt_counts()
    assert after == before, f"Numba runtime allocations during 10 warm calls: {before} -> {after}"
    _assert_matches(results[-1], expected)
    assert len(vg.cache) == 1


def test_warm_calls_allocate_no_numpy_arrays():
    """Batch 4096, hidden 32: the input is 128 KiB and one activation 1 MiB, so any per-call
    array (a copy of the inputs, the activations, fresh gradients of this size) would show in
    the traced peak; only small Python objects (the result dict and tuples) may be made per
    call. The cyclic GC is off while measuring so the figure does not depend on when it runs."""
    params, x, y = make_mlp(n=4096, hidden=32, seed=2)
    vg = gradc.value_and_grad(mlp_loss)
    vg(params, x, y)
    vg(params, x, y)
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        for _ in range(10):
            value, grads = vg(params, x, y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        gc.enable()
    assert peak - base < 64 * 1024, f"{peak - base} bytes allocated during 10 warm calls"
    _assert_matches((value, grads), np_mlp(params, x, y))
