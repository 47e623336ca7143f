"""gradc's own matrix product (gradc/codegen/gemm_rt.py), which the kernels call where the CPU has
AVX-512: CBLAS's row-major ?gemm over every transposition, alpha and beta, shapes at and around
its blocking (strips of 12/4/1 rows, panels of two vectors, chunks of KC along k), empty
and degenerate ones; the same bits whole as in the blocks gradc's threads take; and, end to
end, what `gradc.jit` and `gradc.grad` compute with it and with OpenBLAS's (GRADC_GEMM=openblas).

The IR is compiled here for this CPU whatever it has, and for older x86 CPUs (AVX2, SSE2: LLVM
splits the wide vectors), so the product's arithmetic is checked on every machine."""
import ctypes
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from gradc.codegen import gemm_rt, rt

CTYPES = {np.float32: ctypes.c_float, np.float64: ctypes.c_double}


# this CPU; and, where it can run them, an AVX2 CPU's code and x86-64's first (SSE2)
TARGETS = [None] + ([("haswell", ""), ("x86-64", "")] if platform.machine() == "x86_64" else [])


@pytest.fixture(scope="module", params=TARGETS, ids=lambda t: t[0] if t else "host")
def engine(request):
    if request.param and not _runs(request.param[0]):
        pytest.skip(f"this CPU cannot run {request.param[0]}'s code")
    return gemm_rt.uncached_engine("sd", *(request.param or ()))


def _runs(cpu):
    """Whether this CPU has what LLVM's `cpu` may use (haswell: AVX2, FMA, BMI2...)."""
    from llvmlite import binding as ll
    if cpu == "x86-64":
        return True
    have = ll.get_host_cpu_features()
    return all(have.get(f, False) for f in ("avx2", "fma", "bmi", "bmi2", "f16c", "lzcnt",
                                             "movbe", "popcnt"))


def product(engine, dtype):
    """The product of `engine` for `dtype` as a Python function of arrays:
    c = alpha * op(a) @ op(b) + beta * c, ta/tb: a and b stored transposed."""
    p = "s" if dtype == np.float32 else "d"
    real = CTYPES[dtype]
    fn = ctypes.CFUNCTYPE(None, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, ctypes.c_int64,
                          ctypes.c_int64, ctypes.c_int64, real, ctypes.c_void_p, ctypes.c_int64,
                          ctypes.c_void_p, ctypes.c_int64, real, ctypes.c_void_p,
                          ctypes.c_int64)(engine.get_function_address(gemm_rt.GEMM_SYMBOLS[p]))

    def call(a, b, c, ta=False, tb=False, alpha=1.0, beta=0.0):
        m, n = c.shape
        k = a.shape[0] if ta else a.shape[1]
        fn(101, 112 if ta else 111, 112 if tb else 111, m, n, k, alpha, a.ctypes.data,
           a.shape[1], b.ctypes.data, b.shape[1], beta, c.ctypes.data, c.strides[0] // c.itemsize)
    return call


def operands(rng, m, n, k, ta, tb, dtype):
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    return a, b


def reference(a, b, ta, tb, alpha, beta, c):
    exact = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
    return alpha * exact + (beta * c.astype(np.float64) if beta else 0.0)


SHAPES = [(1, 1, 1), (5, 3, 7), (12, 32, 16), (13, 33, 17), (11, 31, 15), (25, 65, 513),
          (24, 64, 256), (3, 100, 600), (40, 17, 257), (32, 128, 128), (7, 5, 0), (0, 5, 3),
          (4, 0, 9), (2, 16, 8), (9, 48, 40)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_every_transposition_and_shape_is_the_product(engine, dtype, ta, tb):
    call, rng = product(engine, dtype), np.random.default_rng(0)
    tol = 2e-6 if dtype == np.float32 else 1e-14
    for m, n, k in SHAPES:
        for alpha, beta in ((1.0, 0.0), (0.5, 2.0), (-0.01, 1.0)):
            a, b = operands(rng, m, n, k, ta, tb, dtype)
            c = rng.standard_normal((m, n)).astype(dtype)
            want = reference(a, b, ta, tb, alpha, beta, c)
            if beta == 0.0:
                c[...] = np.nan  # (beta 0: c is written, never read, as BLAS's gemm)
            call(a, b, c, ta, tb, alpha, beta)
            scale = max(1.0, float(np.abs(want).max(initial=0.0))) * max(k, 1)
            np.testing.assert_allclose(c, want, rtol=0, atol=tol * scale,
                                       err_msg=f"m, n, k = {m, n, k}, alpha {alpha}, beta {beta}")


def test_writes_only_its_block_of_a_larger_c(engine):
    """c with a leading dimension wider than n: the columns past n and the rows past m keep
    their values (the masked stores of a panel's last columns)."""
    call, rng = product(engine, np.float32), np.random.default_rng(1)
    big = np.full((20, 50), 7.0, np.float32)
    a, b = operands(rng, 13, 37, 20, False, True, np.float32)
    call(a, b, big[3:16, 5:42], tb=True)
    np.testing.assert_allclose(big[3:16, 5:42], a @ b.T, rtol=1e-5, atol=1e-5)
    outside = np.ones(big.shape, bool)
    outside[3:16, 5:42] = False
    assert (big[outside] == 7.0).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blocks_give_the_bits_of_the_whole(engine, dtype):
    """rt.product_blocks cuts a product into blocks of rows or columns for gradc's threads;
    each element is a sum over k in the same order either way, so the bits are the same."""
    call, rng = product(engine, dtype), np.random.default_rng(2)
    m, n, k = 70, 90, 300
    for ta, tb in ((False, False), (True, True), (False, True)):
        a, b = operands(rng, m, n, k, ta, tb, dtype)
        whole = np.empty((m, n), dtype)
        call(a, b, whole, ta, tb)
        by_rows, by_cols = np.empty_like(whole), np.empty_like(whole)
        for lo, hi in ((0, 16), (16, 48), (48, m)):
            rows = np.ascontiguousarray(a[:, lo:hi] if ta else a[lo:hi])
            call(rows, b, by_rows[lo:hi], ta, tb)
        for lo, hi in ((0, 32), (32, 64), (64, n)):
            cols = np.ascontiguousarray(b[lo:hi] if tb else b[:, lo:hi])
            call(a, cols, by_cols[:, lo:hi], ta, tb)
        assert whole.tobytes() == by_rows.tobytes() == by_cols.tobytes()


def test_kernels_call_it_where_the_cpu_has_avx512():
    """The choice follows the CPU (and GRADC_GEMM); where chosen, it is bound by the time a
    kernel runs, and a jit product through it is NumPy's to float32 rounding."""
    import gradc
    from llvmlite import binding as ll
    assert rt.GEMM == ("avx512" if rt.BLAS == "openblas" and "GRADC_GEMM" not in os.environ
                       and gemm_rt.usable(ll.get_host_cpu_features().flatten()) else "openblas")
    rng = np.random.default_rng(3)
    a, b = (rng.standard_normal(s).astype(np.float32) for s in ((50, 300), (70, 300)))
    got = gradc.jit(lambda x, y: x @ y.T)(a, b)
    np.testing.assert_allclose(got, a @ b.T, rtol=1e-5, atol=1e-4)
    if rt.GEMM == "avx512":
        assert gemm_rt._bound and ll.address_of_symbol(gemm_rt.GEMM_SYMBOLS["s"])


CHILD = r"""
import numpy as np, gradc
from gradc.codegen import rt
rng = np.random.default_rng(4)
W = rng.standard_normal((64, 48)); x = rng.standard_normal((40, 64))
def loss(W, x):
    return np.sum(np.tanh(x @ W) @ W.T * x)
g = gradc.grad(loss)(W, x)
np.save(OUT, g)
print(rt.GEMM)
"""


def test_openblas_chosen_by_the_environment_gives_the_same_gradients(tmp_path):
    """GRADC_GEMM=openblas: the kernels call OpenBLAS's ?gemm; float64 gradients agree with
    gradc's own product's to rounding, and with finite differences."""
    outputs = {}
    for choice in ("openblas", None):
        env = {k: v for k, v in os.environ.items() if k != "GRADC_GEMM"}
        if choice:
            env["GRADC_GEMM"] = choice
        env["GRADC_CACHE_DIR"] = str(tmp_path / "cache")
        out = tmp_path / f"g_{choice}.npy"
        run = subprocess.run([sys.executable, "-c", CHILD.replace("OUT", repr(str(out)))],
                             env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        outputs[choice] = (run.stdout.split()[-1], np.load(out))
    assert outputs["openblas"][0] == "openblas"
    np.testing.assert_allclose(outputs[None][1], outputs["openblas"][1], rtol=1e-12, atol=1e-12)
    rng = np.random.default_rng(4)
    W, x = rng.standard_normal((64, 48)), rng.standard_normal((40, 64))
    loss = lambda W: np.sum(np.tanh(x @ W) @ W.T * x)  # noqa: E731
    for i, j in ((0, 0), (17, 5), (63, 47)):
        e = np.zeros_like(W)
        e[i, j] = 1e-6
        fd = (loss(W + e) - loss(W - e)) / 2e-6
        assert abs(outputs[None][1][i, j] - fd) < 1e-5 * max(1.0, abs(fd))


LAZY_CHILD = r"""
import numpy as np, gradc
from gradc.codegen import gemm_rt, rt
gradc.jit(lambda x: np.tanh(x) * 2)(np.ones((300, 300), np.float32))
print(rt.GEMM, sorted(gemm_rt._bound), end=" ")
a = np.ones((64, 100), np.float32)
assert np.array_equal(gradc.jit(lambda x, y: x @ y)(a, a.T), a @ a.T)
print(sorted(gemm_rt._bound), end=" ")
b = np.ones((700, 600))
assert np.array_equal(gradc.grad(lambda x: np.sum(x @ x.T))(b), 2 * b.sum(0) * np.ones_like(b))
print(sorted(gemm_rt._bound))
"""


def test_products_are_compiled_when_a_program_first_calls_them(tmp_path):
    """A model without products compiles none of gradc's own (~45 ms each on a fresh cache);
    a float32 product binds the float32 one alone; a float64 one split over gradc's threads
    (the pool started before it was bound) binds the other."""
    env = {k: v for k, v in os.environ.items() if k != "GRADC_GEMM"}
    env["GRADC_CACHE_DIR"] = str(tmp_path / "cache")
    run = subprocess.run([sys.executable, "-c", LAZY_CHILD], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    from llvmlite import binding as ll
    if rt.BLAS == "openblas" and gemm_rt.usable(ll.get_host_cpu_features().flatten()):
        assert run.stdout.split() == ["avx512", "[]", "['s']", "['d',", "'s']"]
    else:
        assert run.stdout.split() == ["openblas", "[]", "[]", "[]"]
