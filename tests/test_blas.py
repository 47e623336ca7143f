"""Matrix products go to NumPy's own OpenBLAS (gradc/codegen/rt.py), or to np.dot inside Numba
where NumPy has no bundled OpenBLAS (GRADC_BLAS=numba takes that path here). Both must give
NumPy's products and gradients, for every transpose combination and the batched product.
Through NumPy's OpenBLAS, gradc never imports scipy.linalg (~0.25 s of every start: Numba would,
gradc/codegen/modules.py `_numba_without_scipy_linalg`), and a user's @njit np.dot still works."""
import glob
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import gradc
from gradc.codegen import rt

CHECK = textwrap.dedent("""
    import sys
    import numpy as np, gradc
    from gradc.codegen import rt

    def f(a, b, c):  # products large enough for BLAS (over SMALL_MATMUL), every layout
        return (np.sum(np.tanh(a @ b)) + np.sum((a.T @ c) ** 2) + np.sum(np.sin(b.T @ a.T))
                + np.sum(np.cos(np.stack([a, c]) @ np.stack([b, b]))))

    rng = np.random.default_rng(0)
    for dtype, tol in ((np.float32, 2e-4), (np.float64, 1e-10)):
        a, b, c = (rng.standard_normal((32, 32)).astype(dtype) for _ in range(3))
        value, grads = gradc.value_and_grad(f, argnums=(0, 1, 2))(a, b, c)
        ref = f(a.astype(np.float64), b.astype(np.float64), c.astype(np.float64))
        assert abs(value - ref) <= tol * abs(ref), (dtype, value, ref)
        # d/da of sum(tanh(a @ b)) alone, by hand
        g = gradc.grad(lambda a, b: np.sum(np.tanh(a @ b)))(a, b)
        t = np.tanh(a.astype(np.float64) @ b)
        np.testing.assert_allclose(g, (1 - t * t) @ b.T.astype(np.float64), rtol=tol * 10, atol=tol)
    linalg_imported = "scipy.linalg" in sys.modules
    import numba  # a user's own Numba code, after gradc, still has np.dot
    a = np.arange(6.0).reshape(2, 3)
    np.testing.assert_allclose(numba.njit(lambda x: np.dot(x, x.T))(a), a @ a.T)
    print(rt.BLAS, linalg_imported)
""")


def _run(env_blas, tmp_path):
    env = dict(os.environ, GRADC_CACHE_DIR=str(tmp_path / env_blas), GRADC_BLAS=env_blas)
    out = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    blas, linalg_imported = out.stdout.split()
    assert linalg_imported == str(blas == "numba")
    return blas


def test_products_through_numpys_openblas_and_through_numba_agree_with_numpy(tmp_path):
    assert _run("numba", tmp_path) == "numba"
    bundled = glob.glob(os.path.join(os.path.dirname(os.path.dirname(np.__file__)),
                                     "numpy.libs", "libscipy_openblas64_*"))
    assert _run("openblas", tmp_path) == ("openblas" if bundled else "numba")


def test_numpy_wheels_openblas_is_the_one_gradc_calls():
    """On a NumPy wheel (bundled OpenBLAS), gradc's kernels call it: one BLAS, one thread pool."""
    bundled = glob.glob(os.path.join(os.path.dirname(os.path.dirname(np.__file__)),
                                     "numpy.libs", "libscipy_openblas64_*"))
    if os.environ.get("GRADC_BLAS", "openblas") == "openblas" and bundled:
        assert rt.BLAS == "openblas"
    a = np.arange(64 * 64, dtype=np.float32).reshape(64, 64) / 4096
    np.testing.assert_allclose(gradc.jit(lambda x: x @ x.T)(a), a @ a.T, rtol=1e-5)


PRODUCTS = textwrap.dedent("""
    import sys, threading
    import numpy as np, gradc
    from gradc.codegen import rt

    lib = rt._numpy_openblas()
    lib.scipy_openblas_set_num_threads64_(2)
    rng = np.random.default_rng(1)
    f = gradc.jit(lambda a, b, c, d: (a @ b, a.T @ c, d @ b.T))  # every transpose
    g = gradc.grad(lambda a, b: np.sum(np.tanh(a @ b)))  # weight gradients (addmm: beta 1)
    out = []
    # whole products (a middling one: on one thread), products cut into row and column blocks
    # (32x130x129: just over rt.SPLIT_WORK, cut in two uneven column blocks)
    for m, n, k in ((40, 50, 60), (32, 130, 129), (100, 101, 103), (333, 517, 129),
                    (1000, 7, 600), (64, 1030, 300)):
        for dtype in (np.float32, np.float64):
            a, c = rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((m, n))
            b, d = rng.standard_normal((k, n)).astype(dtype), rng.standard_normal((m, n))
            results = f(a, b, c.astype(dtype), d.astype(dtype)) + (g(a, b),)
            refs = (a @ b, a.T @ c, d @ b.T)
            for got, ref in zip(results, refs):
                assert np.allclose(got, ref, rtol=1e-4, atol=1e-3 * np.sqrt(k)), (m, n, k)
            out += [r.tobytes() for r in results]
    assert lib.scipy_openblas_get_num_threads64_() == 2, "OpenBLAS's count is put back"
    # a loop kernel big enough to be cut into chunks (gradc's threads take them on the LLVM
    # route), with reductions over everything (per-chunk partial results) and over rows
    h = gradc.value_and_grad(lambda x, y: np.sum(np.tanh(x) * y) + np.max(np.exp(x), axis=1).sum()
                             - np.mean(x * x))
    for dtype in (np.float32, np.float64):
        x, y = (rng.standard_normal((301, 700)).astype(dtype) for _ in range(2))
        value, gx = h(x, y)
        assert any(chunks for _, _, chunks in h.compiled_for(x, y).program.encoded_calls())
        e = np.exp(x.astype(np.float64))
        ref = np.sum(np.tanh(x) * y) + e.max(axis=1).sum() - np.mean(x * x.astype(np.float64))
        assert abs(value - ref) <= 1e-4 * abs(ref), (value, ref)
        ref_gx = (1 - np.tanh(x.astype(np.float64)) ** 2) * y - 2 * x / x.size + \
            e * (x == x.max(axis=1, keepdims=True))
        assert np.allclose(gx, ref_gx, rtol=1e-4, atol=1e-5)
        out += [np.float64(value).tobytes(), gx.tobytes()]
    # reductions over the outer axis, cut in chunks too: a bias's gradient (a sum over rows)
    # and a max over rows, one partial row per chunk folded in chunk order (301 rows: uneven)
    col = gradc.value_and_grad(lambda x, b: np.sum(np.tanh(x + b) * np.max(x, axis=0)),
                               argnums=(0, 1))
    for dtype in (np.float32, np.float64):
        x, b = rng.standard_normal((301, 700)).astype(dtype), rng.standard_normal(700).astype(dtype)
        value, (gx, gb) = col(x, b)
        program = col.compiled_for(x, b).program
        assert any(combine and ks.call_args[2] == "700" for _, ks, combine in program.calls)
        x64 = x.astype(np.float64)
        t, m = np.tanh(x64 + b), x64.max(axis=0)
        assert abs(value - np.sum(t * m)) <= 1e-4 * abs(np.sum(t * m))
        assert np.allclose(gb, ((1 - t * t) * m).sum(axis=0), rtol=1e-4, atol=1e-4)
        gm = (t.sum(axis=0)) * (x64 == m)
        assert np.allclose(gx, (1 - t * t) * m + gm, rtol=1e-4, atol=1e-4)
        out += [np.float64(value).tobytes(), gx.tobytes(), gb.tobytes()]
    # a batched product big enough for its entries to be cut into chunks (attention's scores)
    bm = gradc.value_and_grad(lambda a, b: np.sum(np.tanh(a @ b.transpose(0, 2, 1))),
                              argnums=(0, 1))
    for dtype in (np.float32, np.float64):
        a, b = (rng.standard_normal((9, 64, 70)).astype(dtype) for _ in range(2))
        value, (ga, gb) = bm(a, b)
        calls = bm.compiled_for(a, b).program.encoded_calls()
        assert any(name.startswith("gradc_bmm_") and chunks for name, _, chunks in calls)
        t = np.tanh(a.astype(np.float64) @ b.transpose(0, 2, 1))
        assert abs(value - t.sum()) <= 1e-4 * abs(t.sum())
        assert np.allclose(ga, (1 - t * t) @ b, rtol=1e-3, atol=1e-3)
        assert np.allclose(gb, (1 - t * t).transpose(0, 2, 1) @ a, rtol=1e-3, atol=1e-3)
        out += [np.float64(value).tobytes(), ga.tobytes(), gb.tobytes()]
    # several Python threads at once (one holds gradc's pool, the others run their blocks alone)
    a, b = rng.standard_normal((512, 300)), rng.standard_normal((300, 400))
    want, errors = a @ b, []
    x, y = (rng.standard_normal((301, 700)) for _ in range(2))
    want_h = h(x, y)[1]
    def call():
        for _ in range(20):
            if not np.allclose(f(a, b, a @ b, a @ b)[0], want):
                errors.append("wrong")
            if not np.array_equal(h(x, y)[1], want_h):
                errors.append("loop kernel")
    threads = [threading.Thread(target=call) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    sys.stdout.buffer.write(__import__("hashlib").sha256(b"".join(out)).hexdigest().encode())
""")


def test_products_and_loops_give_the_same_bits_on_both_routes_at_any_thread_count(tmp_path):
    """A large product is cut into blocks by its shape alone (rt.product_blocks), a large loop
    kernel into chunks of its outer loop (passes/fuse.py decide_parallel), a large batched
    product into chunks of its batch entries (ops/linalg.py): gradc's threads
    take them on the LLVM route (codegen/pool_rt.py); the Numba route and AOT modules run
    them in order. Same bits on both routes, with 1 or 2 threads; right for every transpose,
    for a weight gradient's product added in (beta 1) and for reductions over chunks; right
    with four Python threads calling at once; OpenBLAS's thread count put back."""
    if rt.BLAS != "openblas":
        return
    digests = set()
    for route, threads in (("llvm", "2"), ("llvm", "1"), ("numba", "2")):
        env = dict(os.environ, GRADC_CACHE_DIR=str(tmp_path / route), GRADC_KERNELS=route,
                   GRADC_THREADS=threads, GRADC_PARALLEL_MIN_ITERATIONS=str(1 << 16))
        out = subprocess.run([sys.executable, "-c", PRODUCTS], env=env, capture_output=True,
                             text=True, timeout=600)
        assert out.returncode == 0, out.stderr
        digests.add(out.stdout.strip())
    assert len(digests) == 1, digests


FORKED = textwrap.dedent("""
    import multiprocessing as mp
    import threading
    import numpy as np, gradc

    f = gradc.jit(lambda a, b: a @ b)
    a, b = np.random.default_rng(0).standard_normal((2, 300, 300))
    want = f(a, b)  # the pool started here, before the fork

    def child(queue):
        from gradc.codegen import pool_rt
        pool = pool_rt.workers() == 0 or any(t.name.startswith("gradc-pool")
                                             for t in threading.enumerate())
        queue.put(bool(np.array_equal(f(a, b), want)) and pool)

    if __name__ == "__main__":
        queue = mp.get_context("fork").Queue()
        p = mp.get_context("fork").Process(target=child, args=(queue,))
        p.start()
        print(queue.get(timeout=120))
        p.join(timeout=120)
        print(p.exitcode)
""")


def test_a_forked_child_runs_blocked_products(tmp_path):
    """A child forked after the pool started has none of its threads: it starts its own
    (os.register_at_fork) and gets the same bits; neither process hangs."""
    if rt.BLAS != "openblas" or not hasattr(os, "fork"):
        return
    script = tmp_path / "forked.py"
    script.write_text(FORKED)
    root = os.path.dirname(os.path.dirname(os.path.abspath(gradc.__file__)))
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=300, env=dict(os.environ, GRADC_CACHE_DIR=str(tmp_path / "c"),
                                               PYTHONPATH=path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "0"], out.stdout


def test_gradc_threads_must_be_a_count():
    from gradc.codegen import pool_rt
    if not pool_rt.supported():
        return
    old = os.environ.get("GRADC_THREADS")
    try:
        for bad in ("0", "two", "-1"):
            os.environ["GRADC_THREADS"] = bad
            with pytest.raises(gradc.GradcError, match="GRADC_THREADS"):
                pool_rt.workers()
        os.environ["GRADC_THREADS"] = "3"
        assert pool_rt.workers() == 2
    finally:
        if old is None:
            os.environ.pop("GRADC_THREADS", None)
        else:
            os.environ["GRADC_THREADS"] = old


def test_parallel_min_iterations_must_be_a_count(monkeypatch):
    from gradc.passes.fuse import PARALLEL_MIN_ITERATIONS, parallel_min_iterations
    for bad in ("0", "many", "-5", "1e5"):
        monkeypatch.setenv("GRADC_PARALLEL_MIN_ITERATIONS", bad)
        with pytest.raises(gradc.GradcError, match="GRADC_PARALLEL_MIN_ITERATIONS"):
            gradc.jit(lambda x: x * 2.0)(np.ones(3))
    monkeypatch.setenv("GRADC_PARALLEL_MIN_ITERATIONS", "100")
    assert parallel_min_iterations() == 100
    monkeypatch.delenv("GRADC_PARALLEL_MIN_ITERATIONS")
    assert parallel_min_iterations() == PARALLEL_MIN_ITERATIONS


def _rnn_loss(p, x):
    h = np.tanh(x[0] @ p["wx"])
    for t in range(1, x.shape[0]):
        h = np.tanh(x[t] @ p["wx"] + h @ p["wh"])
    return np.sum(h * h)


@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-4), (np.float64, 1e-9)])
def test_small_products_read_transposed_give_the_same_gradients(monkeypatch, dtype, tol):
    """passes/products.py transpose_small_lhs, forced on (it is measured per machine): an RNN
    whose backward's dz @ wh.T (32x64 @ (64x64).T) reads a transposed copy of dz gives the
    value and gradients it gives with the products as they are, and the gradients agree with
    central differences of the float64 loss along a random direction."""
    from gradc.passes import products
    rng = np.random.default_rng(5)
    p = {"wx": rng.standard_normal((8, 64)) * 0.3, "wh": rng.standard_normal((64, 64)) * 0.1}
    x = rng.standard_normal((4, 32, 8))
    p32, x32 = {k: v.astype(dtype) for k, v in p.items()}, x.astype(dtype)
    results = {}
    for faster in (True, False):
        monkeypatch.setattr(products, "_tt_faster_than_nt", lambda faster=faster: faster)
        vg = gradc.value_and_grad(_rnn_loss)
        results[faster] = vg(p32, x32)
        copies = [k.shape for k in vg.compiled_for(p32, x32).fusion.kernels
                  if k.kind == "loop" and [n.op for n in k.nodes] == ["copy"]]
        assert copies == ([(64, 32)] * 3 if faster else []), copies
    (v1, g1), (v0, g0) = results[True], results[False]
    assert abs(v1 - v0) <= tol * abs(v0)
    for k in p:
        np.testing.assert_allclose(g1[k], g0[k], rtol=tol * 10, atol=tol * np.abs(g0[k]).max())
        d = rng.standard_normal(p[k].shape)
        eps = 1e-6
        up, down = ({**p, k: p[k] + s * eps * d} for s in (1, -1))
        numeric = (_rnn_loss(up, x) - _rnn_loss(down, x)) / (2 * eps)
        assert abs(np.sum(g1[k] * d) - numeric) <= max(tol, 1e-6) * 50 * abs(numeric), k


def test_matrix_vector_products_of_every_layout_are_numpys_and_their_gradients_too():
    """A product with one row or one column is BLAS's ?gemv (rt.vector_product_args): each
    operand stored either way, results and gradients NumPy's, on the direct route here (and
    Numba's in the test above's subprocess)."""
    rng = np.random.default_rng(1)

    def products(a, b):
        return [a @ b, a.T.copy().T @ b, a @ b.T.copy().T, (b.T @ a.T).T]

    for dtype, tol in ((np.float32, 1e-5), (np.float64, 1e-12)):
        for m, k, n in ((1, 300, 200), (300, 200, 1), (1, 5, 7), (6, 5, 1), (1, 40, 1)):
            a = rng.standard_normal((m, k)).astype(dtype)
            b = rng.standard_normal((k, n)).astype(dtype)
            for got in gradc.jit(products)(a, b):
                np.testing.assert_allclose(got, a @ b, rtol=tol, atol=tol * 10)
            ga, gb = gradc.grad(lambda a, b: np.sum((a @ b) ** 2), argnums=(0, 1))(a, b)
            r = (a @ b).astype(np.float64)
            np.testing.assert_allclose(ga, 2 * r @ b.T, rtol=tol * 100, atol=tol * 100)
            np.testing.assert_allclose(gb, 2 * a.T @ r, rtol=tol * 100, atol=tol * 100)
