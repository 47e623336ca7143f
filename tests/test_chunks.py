"""Calls of loop kernels cut into chunks for gradc's threads (passes/fuse.py decide_parallel,
codegen/cpu.py Chunks, driver_rt.py, pool_rt.py gradc_pool_chunks), with the threshold lowered
so that small shapes take that path: every kind of kernel that may be cut (maps, broadcasts,
reductions over trailing axes, over everything, with keepdims, in place in a train step) must
give NumPy's answer, a reduction over leading axes (which would race across chunks) must stay
whole and right, and a shape that crosses the threshold runs the kernels it ran before."""
import numpy as np
import pytest

import gradc
from gradc.optim import Adam

THRESHOLD = "64"  # iterations: every loop below is cut


@pytest.fixture
def chunked(monkeypatch):
    monkeypatch.setenv("GRADC_PARALLEL_MIN_ITERATIONS", THRESHOLD)


def _chunked_calls(compiled):
    return [name for name, _, chunks in compiled.program.encoded_calls() if chunks]


def _chunked_kernels(fun, *args):
    return _chunked_calls(fun.compiled_for(*args))


def _forward(x, y, b):
    e = np.tanh(x * y[:, None, :] + b)  # broadcasts over a leading and a middle axis
    return (np.sum(e), np.max(e, axis=-1), np.mean(e, axis=(1, 2), keepdims=True),
            np.min(e * e, axis=2).sum(axis=1), np.sum(e, axis=0), np.abs(e[:, ::-1]) + 1.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_chunked_forward_matches_numpy_over_axes_and_keywords(chunked, dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((37, 5, 11)).astype(dtype)  # outer sizes not multiples of 16
    y, b = rng.standard_normal((37, 11)).astype(dtype), rng.standard_normal(11).astype(dtype)
    f = gradc.jit(_forward)
    got = f(x, y, b)
    assert _chunked_kernels(f, x, y, b)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    for g, want in zip(got, _forward(*(a.astype(np.float64) for a in (x, y, b)))):
        assert g.dtype == dtype
        np.testing.assert_allclose(g, want, rtol=tol, atol=tol * 10)


def test_chunked_gradients_match_unchunked_ones(chunked, monkeypatch):
    """The same loss with and without chunks: the same gradients (sums over chunks are summed
    in another order, so to rounding), and the chunked ones against finite differences."""
    def loss(x, w):
        h = np.maximum(x @ w, 0.0)
        return np.sum(np.log1p(np.exp(-h)) * h) + 0.5 * np.mean(w * w)

    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((40, 9)), rng.standard_normal((9, 13))
    vg = gradc.value_and_grad(loss, argnums=(0, 1))
    v, (gx, gw) = vg(x, w)
    assert _chunked_kernels(vg, x, w)
    monkeypatch.setenv("GRADC_PARALLEL_MIN_ITERATIONS", str(1 << 30))
    vg_whole = gradc.value_and_grad(loss, argnums=(0, 1))
    v1, (gx1, gw1) = vg_whole(x, w)
    assert not _chunked_kernels(vg_whole, x, w)
    np.testing.assert_allclose(v, v1, rtol=1e-13)
    np.testing.assert_allclose(gx, gx1, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gw, gw1, rtol=1e-12, atol=1e-14)
    eps, i, j = 1e-6, 3, 5
    wp, wm = w.copy(), w.copy()
    wp[i, j] += eps
    wm[i, j] -= eps
    assert gw[i, j] == pytest.approx((loss(x, wp) - loss(x, wm)) / (2 * eps), rel=1e-6)


def test_chunked_train_step_updates_parameters_in_place(chunked):
    """Adam's update writes each parameter (and its moments) in place, chunk by chunk on
    gradc's threads: 5 steps must match NumPy's Adam, and the arrays stay the same objects."""
    def loss(p, x, t):
        h = np.tanh(x @ p["w"] + p["b"])
        return np.mean((h - t) ** 2)

    rng = np.random.default_rng(5)
    p = {"w": rng.standard_normal((16, 24)) * 0.3, "b": np.zeros(24)}
    x, t = rng.standard_normal((50, 16)), rng.standard_normal((50, 24))
    step = gradc.train_step(loss, Adam(lr=0.01))
    ids = {k: id(v) for k, v in p.items()}
    ref = {k: v.copy() for k, v in p.items()}
    m = {k: np.zeros_like(v) for k, v in ref.items()}
    s = {k: np.zeros_like(v) for k, v in ref.items()}
    for n in range(1, 6):
        step(p, x, t)
        h = np.tanh(x @ ref["w"] + ref["b"])
        dz = 2 * (h - t) / h.size * (1 - h * h)
        grads = {"w": x.T @ dz, "b": dz.sum(axis=0)}
        for k in ref:
            m[k] = 0.9 * m[k] + 0.1 * grads[k]
            s[k] = 0.999 * s[k] + 0.001 * grads[k] ** 2
            ref[k] -= 0.01 * (m[k] / (1 - 0.9 ** n)) / (np.sqrt(s[k] / (1 - 0.999 ** n)) + 1e-8)
    assert {k: id(v) for k, v in p.items()} == ids
    for k in ref:
        np.testing.assert_allclose(p[k], ref[k], rtol=1e-9, atol=1e-12)
    (compiled,) = step.cache.values()
    assert _chunked_calls(compiled)


def test_reductions_over_the_outer_axis_fold_one_partial_row_per_chunk(chunked):
    """A sum over the outer axis accumulates across its iterations: two chunks would add into
    one element at once. Cut into chunks, each chunk sums its rows into a partial row of its
    own, folded in chunk order after (a bias's gradient over the batch); where those partial
    rows would be large beside the loop (4 rows of 300), or a reduction over a middle axis
    accumulates across outer iterations, the kernel stays whole. Right every way."""
    rng = np.random.default_rng(6)
    tall, wide = rng.standard_normal((300, 7)), rng.standard_normal((4, 300))
    f = gradc.jit(lambda x: (np.sum(np.exp(x), axis=0), np.max(x * 2.0, axis=0)))
    for x, cut in ((tall, True), (wide, False)):
        total, top = f(x)
        np.testing.assert_allclose(total, np.exp(x).sum(axis=0), rtol=1e-12)
        np.testing.assert_array_equal(top, (x * 2.0).max(axis=0))
        assert bool(_chunked_kernels(f, x)) == cut
    g = gradc.jit(lambda x: np.sum(np.exp(x), axis=1))
    x = rng.standard_normal((40, 30, 7))
    np.testing.assert_allclose(g(x), np.exp(x).sum(axis=1), rtol=1e-12)
    assert not _chunked_kernels(g, x)


def _logical(x):
    return (np.any(x > 2.5), np.all(x > -4), np.any(x > 1, axis=0), np.all(x < 2, axis=0),
            np.argmax(x), np.argmin(x, axis=0), np.argmax(x, axis=1), np.max(x > 0, axis=0))


def test_chunked_logical_reductions_and_arg_reductions_match_numpy(chunked):
    """any/all (bool partial results: their fold reads bool views) and argmax/argmin over
    everything, over the outer axis and over the inner one, cut into chunks. (Before, any
    bool reduction cut in chunks failed to compile: 'no CPU buffers of dtype bool', at 2**16
    elements with the default threshold.)"""
    x = np.random.default_rng(8).standard_normal((300, 7))
    f = gradc.jit(_logical)
    for got, want in zip(f(x), _logical(x)):
        assert np.asarray(got).dtype == np.asarray(want).dtype
        np.testing.assert_array_equal(got, want)
    assert _chunked_kernels(f, x)


def test_a_transposed_copy_runs_whole(chunked):
    """Cut along its outer loop, a transposed copy's chunks would each store a few elements of
    every row of the result, between the other chunks' elements: two threads writing the same
    cache lines (W8's recurrent weight: 1 ms a step against 0.16 ms whole). Such a call runs
    whole; a copy whose chunks store whole rows is still cut."""
    x = np.random.default_rng(9).standard_normal((64, 96))
    transposed, plain = gradc.jit(lambda x: x.T * 2.0), gradc.jit(lambda x: x * 2.0)
    np.testing.assert_array_equal(transposed(x), x.T * 2.0)
    np.testing.assert_array_equal(plain(x), x * 2.0)
    assert not _chunked_kernels(transposed, x) and _chunked_kernels(plain, x)


def _kernels_called(compiled):
    return {name for name, _, _ in compiled.program.encoded_calls()}


def test_a_shape_across_the_threshold_runs_the_same_kernels(chunked):
    """Whether a call runs in chunks is the call's business (its arguments move), not the
    kernel's: a batch that crosses the threshold calls the kernels the small one called, plus
    the folds of partial sums (one per reduction kind and dtype, shared by every program).
    (Run whole, the same shape may differ in the last bit: which elements a chunk's vector
    loop leaves to its scalar remainder, libm's tanh and not libmvec's, moves with the cut.)"""
    def loss(w, x):
        h = np.tanh(x @ w)
        return np.mean(h * h), h * 2.0

    f = gradc.jit(loss)
    rng = np.random.default_rng(7)
    w = rng.standard_normal((5, 3))
    small, big = rng.standard_normal((4, 5)), rng.standard_normal((40, 5))  # 12, 120 iterations
    f(w, small)
    value, h2 = f(w, big)
    cs, cb = f.compiled_for(w, small), f.compiled_for(w, big)
    assert not _chunked_calls(cs) and _chunked_calls(cb)
    new = _kernels_called(cb) - _kernels_called(cs)
    assert new and all(name.startswith("gradc_combine_") for name in new), new
    h = np.tanh(big @ w)
    np.testing.assert_allclose(value, np.mean(h * h), rtol=1e-12)
    np.testing.assert_allclose(h2, 2 * h, rtol=1e-12)
    whole = gradc.jit(loss)
    with pytest.MonkeyPatch.context() as m:
        m.setenv("GRADC_PARALLEL_MIN_ITERATIONS", str(1 << 30))
        value1, h21 = whole(w, big)
        assert not _chunked_calls(whole.compiled_for(w, big))
    np.testing.assert_allclose(h21, h2, rtol=1e-14)
    np.testing.assert_allclose(value1, value, rtol=1e-14)


def test_a_middling_loop_runs_in_chunks_only_for_a_reader_on_several_threads(monkeypatch):
    """A loop of a quarter of the threshold up to it (passes/fuse.py decide_parallel) is cut
    only where a kernel that reads it runs on several threads (a product big enough for
    blocks), and never with a sum over its outer axis: the answers are NumPy's either way."""
    from gradc.codegen.rt import SPLIT_WORK
    monkeypatch.setenv("GRADC_PARALLEL_MIN_ITERATIONS", "4096")
    rng = np.random.default_rng(6)
    x = rng.standard_normal((64, 32)).astype(np.float32)  # 2048 iterations: middling
    wide, narrow = (rng.standard_normal((32, n)).astype(np.float32) for n in (256, 8))
    assert 64 * 256 * 32 >= SPLIT_WORK > 64 * 8 * 32

    def product_of_tanh(x, w):
        return np.tanh(x) @ w

    def centred_product(x, w):
        return (x - x.mean(axis=0)) @ w

    cases = [(product_of_tanh, wide, ["tanh"]), (product_of_tanh, narrow, []),
             (centred_product, wide, ["subtract"])]  # (the mean's sum: whole)
    for fun, w, cut in cases:
        f = gradc.jit(fun)
        np.testing.assert_allclose(f(x, w), fun(x.astype(np.float64), w), rtol=1e-4, atol=1e-4)
        names = _chunked_kernels(f, x, w)
        assert [op for op in ("tanh", "subtract", "sum") if any(op in n for n in names)] == cut


def test_new_batch_sizes_call_the_kernels_compiled_for_the_first():
    """The kernels' text does not depend on the batch size: not on which calls run in chunks
    (the default threshold, crossed at 130 rows; chunked, the biases' gradients add the folds
    of their partial sums, one per reduction kind and dtype, shared by every program), nor on
    which placement of the memory plan
    wins (a value written over the one it replaces shares its array: only the largest-first
    placement did that, and a batch of 50 compiled 7 kernels that one of 20 had not)."""
    from gradc.optim import SGD

    def loss(p, x, y):
        h = np.maximum(x @ p["W1"] + p["b1"], 0.0)
        h = np.maximum(h @ p["W2"] + p["b2"], 0.0)
        z = h @ p["W3"] + p["b3"]
        z = z - z.max(axis=1, keepdims=True)
        return np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y])

    rng = np.random.default_rng(8)
    p = {"W1": rng.standard_normal((100, 48)) * 0.1, "b1": np.zeros(48),
         "W2": rng.standard_normal((48, 48)) * 0.1, "b2": np.zeros(48),
         "W3": rng.standard_normal((48, 10)) * 0.1, "b3": np.zeros(10)}
    step = gradc.train_step(loss, SGD(lr=0.1))
    called, chunked = [], []
    for n in (20, 50, 1400):
        x, y = rng.standard_normal((n, 100)), rng.integers(0, 10, n)
        before = {k: v.copy() for k, v in p.items()}
        value = step(p, x, y)
        assert value == pytest.approx(loss(before, x, y), rel=1e-12)
        compiled = list(step.cache.values())[-1]
        called.append(_kernels_called(compiled))
        chunked.append(bool(_chunked_calls(compiled)))
    assert chunked == [False, False, True]
    folds = {name for name in called[2] if name.startswith("gradc_combine_")}
    assert called[1] == called[0] and called[2] - folds == called[0]


def _chunk_times(compiled):
    """The word each chunked call of `compiled` keeps its last time in (driver_rt.py's table:
    the call's last word; 0 until the pool has run it)."""
    import ctypes

    from gradc.codegen.driver_rt import HEADER
    first = int(compiled.words[0])
    size = ctypes.c_int64.from_address(first).value
    table = np.ctypeslib.as_array((ctypes.c_int64 * size).from_address(first))
    at, times = HEADER, []
    while at < size:
        n, extra = int(table[at + 1]), int(table[at + 2])
        if extra:
            times.append(int(table[at + 3 + 2 * n + extra - 1]))
        at += 3 + 2 * n + extra
    return times


def test_a_lone_short_chunked_call_runs_on_the_caller_with_the_same_bits(chunked):
    """The pool keeps each chunked call's time; a short call that finds gradc's threads asleep
    after an idle spell runs its chunks on the caller without waking them (pool_rt.py
    WAKE_CYCLES): the same chunks, so the same bits as a call they shared."""
    import time

    from gradc.codegen import pool_rt, rt
    f = gradc.jit(lambda x: np.sum(np.tanh(x) * 2.0 + x, axis=1))
    x = np.random.default_rng(3).standard_normal((500, 7))
    first = f(x)
    np.testing.assert_allclose(first, np.sum(np.tanh(x) * 2.0 + x, axis=1), rtol=1e-12)
    compiled = f.compiled_for(x)
    times = _chunk_times(compiled)
    assert times  # (one chunked call at least)
    if pool_rt.supported() and rt.BLAS == "openblas":  # (else the chunks run in turn)
        assert all(t > 0 for t in times)
    for _ in range(5):
        time.sleep(0.005)  # (the pool's threads sleep after ~26 us without work)
        np.testing.assert_array_equal(f(x), first)
    for _ in range(20):
        np.testing.assert_array_equal(f(x), first)
