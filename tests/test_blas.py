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


THREADS_CHECK = textwrap.dedent("""
    import ctypes
    import numpy as np, gradc
    from gradc.codegen import rt

    lib = rt._numpy_openblas()
    set_, get = lib.scipy_openblas_set_num_threads64_, lib.scipy_openblas_get_num_threads64_
    set_(2)
    rng = np.random.default_rng(1)
    product, told = gradc.jit(lambda a, b: a @ b), 0
    # shapes whose float64 product OpenBLAS rounds differently on 1 and 2 threads
    for (m, n, k), threads in (((100, 101, 103), 1), ((333, 517, 129), 2)):
        assert rt.SINGLE_THREADED_WORK < m * n * k and (m * n * k < rt.THREADED_WORK) == (threads == 1)
        a, b = rng.standard_normal((m, k)), rng.standard_normal((k, n))
        set_(1); one = a @ b
        set_(2); two = a @ b
        if np.array_equal(one, two):
            continue  # (another OpenBLAS: nothing to tell them apart by)
        told += 1
        got = product(a, b)
        assert get() == 2, "the thread count is put back after the product"
        assert np.array_equal(got, one if threads == 1 else two), (m, n, k)
    print("told apart", told)
""")


def test_a_middling_product_runs_on_one_thread_and_a_large_one_on_all(tmp_path):
    """rt.py's thread policy, on both routes: a product below THREADED_WORK multiply-adds runs on
    the calling thread (threaded, a step of them waited on OpenBLAS's second thread, most of
    all while another process loaded the machine); a large one on OpenBLAS's threads; the
    count is put back. Told apart by results OpenBLAS rounds differently on 1 and 2 threads."""
    if rt.BLAS != "openblas":
        return
    for route in ("llvm", "numba"):
        env = dict(os.environ, GRADC_CACHE_DIR=str(tmp_path / route), GRADC_KERNELS=route)
        out = subprocess.run([sys.executable, "-c", THREADS_CHECK], env=env,
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr
        # (0: this OpenBLAS rounds these shapes alike on 1 and 2 threads: pick others)
        assert out.stdout.split()[-1] == "2", out.stdout
