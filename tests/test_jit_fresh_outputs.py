"""gradc.jit writes its results straight into new arrays, made for each call (not into the
arena and then copied out): each result is an array of its own, equal to NumPy's, whoever wrote
it (a loop kernel, a product, a parallel kernel in chunks) and whatever reads it after; two
results over one stored value are two arrays; the arena holds no output bytes."""
import numpy as np
import pytest
from _finite_differences import central_difference

import gradc

RNG = np.random.default_rng(7)


@pytest.fixture(autouse=True)
def small_results_too(monkeypatch):
    """Results of any size written into new arrays (by default only those of 64 KiB or more
    are: a smaller one's copy out of the arena is cheaper than a new array's making)."""
    monkeypatch.setattr(gradc.passes.memory, "FRESH_MIN_BYTES", 0)


X = RNG.standard_normal((6, 5)).astype(np.float32)
W = RNG.standard_normal((5, 4)).astype(np.float32)


def own_arrays(results):
    """Each result owns its memory and shares none with another (a 0-d one is a NumPy
    scalar)."""
    results = [a for a in results if not (isinstance(a, np.generic) or a.shape == ())]
    for i, a in enumerate(results):
        assert a.flags.owndata and a.flags.c_contiguous and a.flags.writeable
        for b in results[i + 1:]:
            assert not np.shares_memory(a, b)


def check(f, *args, calls=3):
    """f compiled, called (slow way, then fast) on new values each time: NumPy's results, in
    arrays of their own, none overwritten by a later call."""
    jf = gradc.jit(f)
    kept = []
    for c in range(calls):
        moved = [a + np.float32(c) for a in args]
        got, want = jf(*moved), f(*moved)
        got, want = (got, want) if isinstance(want, tuple) else ((got,), (want,))
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == np.shape(w) and g.dtype == np.asarray(w).dtype
            np.testing.assert_allclose(g, w, rtol=2e-5, atol=1e-5)
        own_arrays(got)
        kept.append((got, want))
    for got, want in kept:  # (an earlier call's results, as they were)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=2e-5, atol=1e-5)
    return jf


@pytest.mark.parametrize("f", [
    lambda x, w: np.tanh(x) * 2,  # a loop kernel
    lambda x, w: x @ w,  # a product (BLAS) writing the result
    lambda x, w: (x @ w, np.sum(x @ w, axis=0)),  # a result read again by a later kernel
    lambda x, w: ((x * 2).reshape(-1), (x * 2).T.sum()),  # a reshape of a stored value
    lambda x, w: (np.concatenate([x, x * 3], axis=1), x.max()),  # a concatenation; a scalar
    lambda x, w: (x * 2, (x * 2)[1:]),  # a slice of a result: both kept in the arena
], ids=["loop", "product", "read-again", "reshape", "concatenate", "slice-of-result"])
def test_results_are_new_arrays_equal_to_numpys(f):
    check(f, X, W)


def test_merged_results_are_separate_arrays():
    """`a = x * 2; b = x * 2` is one value after CSE; `return y, y` one value twice: NumPy's
    code gives arrays that a write into one does not change the other, and so does gradc."""
    def twice(x):
        a, b = x * 2, x * 2
        return a, b, b.reshape(-1)

    jf = gradc.jit(twice)
    for _ in range(2):
        a, b, flat = jf(X)
        own_arrays([a, b, flat])
        a[0, 0] = 100.0
        assert b[0, 0] == flat[0] == X[0, 0] * 2
    y = gradc.jit(lambda x: (lambda y: (y, y))(np.exp(x)))(X)
    own_arrays(list(y))
    np.testing.assert_array_equal(y[0], y[1])


def test_parallel_chunks_write_the_new_array():
    """A long loop runs in chunks on gradc's threads, each writing its part of the new array."""
    x = RNG.standard_normal(1 << 18).astype(np.float32)
    check(lambda x: (np.sqrt(np.abs(x)) + 1.0, np.sum(x * x)), x, calls=2)


def test_the_arena_holds_no_output_and_the_driver_says_so():
    jf = gradc.jit(lambda x, w: np.tanh(x @ w))
    jf(X, W)
    report = gradc.explain(jf, X, W)
    assert report.memory.output_bytes == 0
    assert "outputs written into new arrays on each call (the caller's): 0.1 KiB" in report
    assert "output 0: f32[6,4] into out0" in report and "OUTPUTS = ('out0',)" in report


def test_feeding_a_result_back_and_threads():
    """A result fed back as the next input is an array like any other (not the arena's, read
    from a copy); threads calling one function get their own results."""
    import threading
    jf = gradc.jit(lambda x: np.tanh(x) + 0.5)
    x = X.copy()
    for _ in range(4):
        want = np.tanh(x) + 0.5
        x = jf(x)
        np.testing.assert_allclose(x, want, rtol=2e-5, atol=1e-6)
    results, errors = {}, []

    def worker(k):
        try:
            for _ in range(50):
                got = jf(X + k)
                np.testing.assert_allclose(got, np.tanh(X + k) + 0.5, rtol=2e-5, atol=1e-6)
            results[k] = got
        except AssertionError as e:  # (reported after the join)
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 4
    own_arrays(list(results.values()))


def test_copied_gradients_and_jacobians_are_written_into_new_arrays():
    """grad(copy=True), value_and_grad(copy=True) and jacobian hand back arrays of their own too,
    written by the program itself: finite differences agree, and the arena's output region
    holds the loss alone."""
    def loss(p, x):
        h = np.tanh(x @ p["W"])
        return np.sum(h * h) + np.sum(p["b"] ** 2), h

    p = {"W": W.astype(np.float64), "b": np.linspace(-1.0, 1.0, 4)}
    x = X.astype(np.float64)
    vg = gradc.value_and_grad(loss, has_aux=True, copy=True)
    kept = []
    for c in range(3):
        q = {k: v + 0.1 * c for k, v in p.items()}
        (value, h), g = vg(q, x)
        np.testing.assert_allclose(value, loss(q, x)[0], rtol=1e-12)
        np.testing.assert_allclose(h, loss(q, x)[1], rtol=1e-12)
        for k in q:
            want = central_difference(lambda a: loss({**q, k: a}, x)[0], q[k])
            np.testing.assert_allclose(g[k], want, rtol=1e-6, atol=1e-8)
        own_arrays([value, h, g["W"], g["b"]])
        kept.append((g["W"], g["W"].copy()))
    for got, was in kept:
        np.testing.assert_array_equal(got, was)
    assert gradc.explain(vg, p, x).memory.output_bytes <= 64  # (the loss, a NumPy scalar)
    jac = gradc.jacobian(lambda w: np.tanh(w) * 2)
    first = jac(x[0])
    np.testing.assert_allclose(jac(x[1]), np.diag(2 - 2 * np.tanh(x[1]) ** 2), rtol=1e-12)
    np.testing.assert_allclose(first, np.diag(2 - 2 * np.tanh(x[0]) ** 2), rtol=1e-12)


def test_scalars_and_values_written_back():
    """A 0-d result is still a NumPy scalar; a result the function also assigns outside
    (`self.cache = h`) is one array in both places, and a value assigned alone is an array of
    its own, on every call."""
    class Model:
        def __init__(self):
            self.W = W

        @gradc.jit
        def forward(self, x):
            h = np.tanh(x @ self.W)
            self.cache = h
            self.scaled = (h * 2, h)
            return h, h.sum()

    m = Model()
    for c in range(3):
        h, total = m.forward(X + c)
        want = np.tanh((X + c) @ W)
        np.testing.assert_allclose(h, want, rtol=2e-5, atol=1e-6)
        assert type(total) is np.float32 and np.isclose(total, want.sum(), rtol=1e-4)
        assert m.cache is h and m.scaled[1] is h
        np.testing.assert_allclose(m.scaled[0], 2 * want, rtol=2e-5, atol=1e-6)
        own_arrays([h, m.scaled[0]])


def test_by_default_small_results_are_copied_out_of_the_arena(monkeypatch):
    monkeypatch.setattr(gradc.passes.memory, "FRESH_MIN_BYTES", 64 << 10)
    jf = gradc.jit(lambda x: (x * 2, np.tanh(x)))
    small, large = X, RNG.standard_normal((128, 128)).astype(np.float32)  # 64 KiB
    for x in (small, large, small, large):
        out = jf(x)
        np.testing.assert_allclose(out[0], x * 2, rtol=1e-6)
        own_arrays(list(out))
    assert gradc.explain(jf, small).memory.output_bytes == 2 * 128  # (two 120-byte buffers)
    assert gradc.explain(jf, large).memory.output_bytes == 0
