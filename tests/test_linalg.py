"""np.linalg (solve, inv, det, slogdet, cholesky, eigh, eigvalsh, svd, qr, pinv, lstsq,
matrix_power), gradc.scipy.linalg (solve_triangular, cho_factor, cho_solve) and
multivariate_normal.logpdf, through the public API.

Compiling is the cost, so few programs are compiled: one float64 forward that computes every
function (batched and not) at once, checked against NumPy/SciPy (values, shapes, dtypes; where
the signs are LAPACK's choice, the invariants: reconstruction, orthonormality, |columns|), and one
grad of grad. The wide sweep of gradients (every function, option and shape) runs on the
reference interpreter, against central differences of NumPy itself. Each primitive's float32
kernel and its compiled gradient are the linalg cases of tests/ops/test_ops.py.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.linalg
import scipy.stats

import gradc
import gradc.scipy.linalg as gsl
from gradc import autodiff
from gradc.compile import lower
from gradc.interpret import evaluate
from gradc.scipy import _mvn
from gradc.trace import trace

RNG = np.random.default_rng(20261203)


def _spd(*shape):
    x = RNG.standard_normal(shape)
    return x @ np.swapaxes(x, -1, -2) + shape[-1] * np.eye(shape[-1])


def _normal(*shape):
    return RNG.standard_normal(shape)


# inputs: well conditioned; S_junk is SPD below the diagonal and junk above it (NumPy reads the
# lower triangle only); Z is singular
INPUTS = dict(
    A=_spd(3, 3) + _normal(3, 3), Ab=_spd(2, 3, 3) + _normal(2, 3, 3), B=_normal(3, 2),
    b=_normal(3), M=_normal(4, 3), W=_normal(2, 3, 5),
    S_junk=_spd(2, 3, 3) + np.triu(_normal(3, 3), 1),
    X=_normal(5, 3), mu=_normal(3), B4=_normal(4, 2),
    Z=np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [0.0, 1.0, 1.0]]))


def forward(A, Ab, B, b, M, W, S_junk, X, mu, B4, Z, sl=gsl, mvn_logpdf=_mvn.logpdf):
    """Every function, as NumPy user code (sl: gradc.scipy.linalg or scipy.linalg)."""
    out = dict(
        solve=np.linalg.solve(A, B), solve_vec_batch=np.linalg.solve(Ab, b),
        solve_broadcast=np.linalg.solve(Ab, B), inv=np.linalg.inv(Ab), det=np.linalg.det(Ab),
        det2=np.linalg.det(A), slogdet=tuple(np.linalg.slogdet(Ab)),
        chol=np.linalg.cholesky(S_junk), chol_upper=np.linalg.cholesky(
            np.swapaxes(S_junk, -1, -2), upper=True),
        eigh=tuple(np.linalg.eigh(S_junk)), eigh_U=tuple(np.linalg.eigh(
            np.swapaxes(S_junk, -1, -2), UPLO="U")), eigvalsh=np.linalg.eigvalsh(S_junk),
        svd_full=tuple(np.linalg.svd(M)), svd_thin=tuple(np.linalg.svd(M, full_matrices=False)),
        svd_wide=tuple(np.linalg.svd(W)), svd_s=np.linalg.svd(W, compute_uv=False),
        qr=tuple(np.linalg.qr(M)), qr_complete=tuple(np.linalg.qr(M, mode="complete")),
        qr_wide=tuple(np.linalg.qr(W)), qr_r=np.linalg.qr(M, mode="r"),
        pinv=np.linalg.pinv(M), pinv_batch=np.linalg.pinv(W, rcond=1e-10),
        lstsq=tuple(np.linalg.lstsq(M, B4)), lstsq_vec=tuple(np.linalg.lstsq(M, B4[:, 0])),
        lstsq_wide=tuple(np.linalg.lstsq(W[0], B, rcond=None)),
        power3=np.linalg.matrix_power(A, 3), power_neg=np.linalg.matrix_power(Ab, -2),
        power0=np.linalg.matrix_power(A, 0),
        tri_lower=sl.solve_triangular(A, B, lower=True),
        tri_upper_t=sl.solve_triangular(A, B, trans="T"),
        tri_unit=sl.solve_triangular(A, b, lower=True, trans=1, unit_diagonal=True),
        cho_lower=sl.cho_solve(sl.cho_factor(S_junk[0], lower=True), B),
        cho_upper=sl.cho_solve(sl.cho_factor(np.swapaxes(S_junk[0], -1, -2)), B),
        mvn=mvn_logpdf(X, mu, A @ A.T + np.eye(3)), mvn_one=mvn_logpdf(X[0], mu, A @ A.T),
        # NumPy raises LinAlgError for these; gradc gives NaN
        singular_solve=np.linalg.solve(Z, b) if sl is gsl else np.full(3, np.nan),
        not_spd=np.linalg.cholesky(-A @ A.T) if sl is gsl else np.full((3, 3), np.nan),
        singular_det=np.linalg.det(Z),
    )
    return out


def reference():
    return forward(**INPUTS, sl=scipy.linalg, mvn_logpdf=scipy.stats.multivariate_normal.logpdf)


@pytest.fixture(scope="module")
def compiled_forward():
    return gradc.jit(forward)(**INPUTS)


def _close(got, want, dtype, what, scale=1.0):
    tol = 1e-9 if dtype == np.float64 else 2e-4
    assert np.shape(got) == np.shape(want), what
    np.testing.assert_allclose(got, want, rtol=tol * 10, atol=tol * scale, err_msg=what)


def _sym(a):
    return np.tril(a) + np.swapaxes(np.tril(a, -1), -1, -2)


def _check_factorizations(got, dtype):
    """eigh, svd and qr: the invariants (their signs are LAPACK's), and |columns| as NumPy's."""
    tol = dict(rtol=1e-8, atol=1e-8) if dtype == np.float64 else dict(rtol=1e-3, atol=1e-3)
    T = lambda x: np.swapaxes(x, -1, -2)  # noqa: E731
    S = _sym(INPUTS["S_junk"])
    eye = lambda q: np.broadcast_to(np.eye(q.shape[-1]), q.shape[:-2] + (q.shape[-1],) * 2)  # noqa
    for name in ("eigh", "eigh_U"):
        w, v = got[name]
        np.testing.assert_allclose(w, np.linalg.eigvalsh(S), **tol)
        np.testing.assert_allclose((v * w[..., None, :]) @ T(v), S, **tol)
        np.testing.assert_allclose(np.abs(v), np.abs(np.linalg.eigh(S)[1]), **tol)
    for name, a in (("svd_full", INPUTS["M"]), ("svd_thin", INPUTS["M"]),
                    ("svd_wide", INPUTS["W"])):
        u, s, vh = got[name]
        u_np, s_np, vh_np = np.linalg.svd(a, full_matrices=name != "svd_thin")
        assert u.shape == u_np.shape and s.shape == s_np.shape and vh.shape == vh_np.shape, name
        np.testing.assert_allclose(s, s_np, **tol)
        r = s.shape[-1]
        np.testing.assert_allclose((u[..., :r] * s[..., None, :]) @ vh[..., :r, :], a, **tol)
        for q in (u, T(vh)):  # orthonormal, full ones included
            np.testing.assert_allclose(T(q) @ q, eye(q), **tol)
        np.testing.assert_allclose(np.abs(u[..., :r]), np.abs(u_np[..., :r]), **tol)
    for name, a in (("qr", INPUTS["M"]), ("qr_complete", INPUTS["M"]), ("qr_wide", INPUTS["W"])):
        q, r = got[name]
        q_np, r_np = np.linalg.qr(a, mode="complete" if name == "qr_complete" else "reduced")
        assert q.shape == q_np.shape and r.shape == r_np.shape, name
        np.testing.assert_allclose(q @ r, a, **tol)
        np.testing.assert_allclose(T(q) @ q, eye(q), **tol)
        np.testing.assert_array_equal(r, np.triu(r))
        np.testing.assert_allclose(np.abs(r), np.abs(r_np), **tol)
    np.testing.assert_allclose(np.abs(got["qr_r"]), np.abs(np.linalg.qr(INPUTS["M"], mode="r")),
                               **tol)


def test_values_match_numpy(compiled_forward):
    dtype, got = np.dtype(np.float64), compiled_forward
    want = reference()
    _check_factorizations(got, dtype)
    skip = {"eigh", "eigh_U", "svd_full", "svd_thin", "svd_wide", "qr", "qr_complete",
            "qr_wide", "qr_r"}
    for name, w in want.items():
        if name in skip:
            continue
        g = got[name]
        for i, (gi, wi) in enumerate(zip(g, w) if isinstance(w, tuple) else [(g, w)]):
            what = f"{name}[{i}]"
            if name.startswith("lstsq") and i == 2:  # the rank
                assert np.asarray(gi).dtype == np.int32 and gi == wi, what
                continue
            if name == "singular_det":
                assert abs(gi) < (1e-12 if dtype == np.float64 else 1e-5), what
                continue
            assert np.asarray(gi).dtype == dtype, what
            _close(gi, wi, dtype, what, scale=np.max(np.abs(wi), initial=1.0))
    # what NumPy refuses is NaN, for that matrix only
    assert np.isnan(got["singular_solve"]).all() and np.isnan(got["not_spd"]).all()


# ---------------------------------------------------------------------------------------------
# gradients: compiled (one program) and on the reference interpreter (the sweep)

def central_differences(f, args, eps=1e-6):
    grads = []
    for i, a in enumerate(args):
        g = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            up = [x.copy() for x in args]
            down = [x.copy() for x in args]
            up[i][idx] += eps
            down[i][idx] -= eps
            g[idx] = (f(*up) - f(*down)) / (2 * eps)
        grads.append(g)
    return grads


def interpreted_value_and_grad(f, args):
    """The joint graph (value and gradients of every argument) on the reference interpreter."""
    graph, _, outs = trace(f, args)
    graph.outputs = [outs[0]] + autodiff.vjp(graph, outs[0], graph.inputs)
    value, *grads = evaluate(graph, args)
    return value, grads


def _weights(*shape):
    return np.random.default_rng(sum(shape) + len(shape)).standard_normal(shape)


def _gauge_free_svd(u, s, vh, r):
    """U diag(c) Vh (sign flips of a singular pair cancel)."""
    return (u[..., :r] * _weights(r)) @ vh[..., :r, :]


# name -> (loss as NumPy user code, its arguments)
SWEEP = {
    "solve": (lambda a, b: np.sum(np.linalg.solve(a, b) * _weights(3, 2)),
              [INPUTS["A"], INPUTS["B"]]),
    "solve_vector_broadcast": (lambda a, b: np.sum(np.linalg.solve(a, b) * _weights(2, 3)),
                               [INPUTS["Ab"], INPUTS["b"]]),
    "inv": (lambda a: np.sum(np.linalg.inv(a) * _weights(2, 3, 3)), [INPUTS["Ab"]]),
    "det": (lambda a: np.sum(np.linalg.det(a) * _weights(2)), [INPUTS["Ab"]]),
    "slogdet": (lambda a: np.sum(np.linalg.slogdet(a)[1] * _weights(2)), [INPUTS["Ab"]]),
    "cholesky_lower_only": (lambda a: np.sum(np.linalg.cholesky(a) * _weights(2, 3, 3)),
                            [INPUTS["S_junk"]]),
    "cholesky_upper": (lambda a: np.sum(np.linalg.cholesky(a, upper=True) * _weights(3, 3)),
                       [INPUTS["S_junk"][0].T.copy()]),
    "eigvalsh": (lambda a: np.sum(np.linalg.eigvalsh(a) * _weights(2, 3)), [INPUTS["S_junk"]]),
    "eigh_vectors": (lambda a: np.sum(np.linalg.eigh(a)[1] ** 2 * _weights(2, 3, 3)),
                     [INPUTS["S_junk"]]),
    "eigh_upper": (lambda a: np.sum(np.linalg.eigh(a, UPLO="U").eigenvectors ** 2
                                    * _weights(3, 3)) + np.sum(np.linalg.eigh(a, "U")[0]),
                   [INPUTS["S_junk"][1].T.copy()]),
    "svd_values_tall": (lambda a: np.sum(np.linalg.svd(a, compute_uv=False) * _weights(3)),
                        [INPUTS["M"]]),
    "svd_values_wide_batch": (lambda a: np.sum(np.linalg.svd(a)[1] ** 2 * _weights(2, 3)),
                              [INPUTS["W"]]),
    "svd_vectors_tall": (lambda a: np.sum(_gauge_free_svd(*np.linalg.svd(a, False), 3)
                                          * _weights(4, 3)), [INPUTS["M"]]),
    "svd_vectors_wide": (lambda a: np.sum(_gauge_free_svd(*np.linalg.svd(a, False), 3)
                                          * _weights(2, 3, 5)), [INPUTS["W"]]),
    "svd_full_thin_part": (lambda a: np.sum(_gauge_free_svd(*np.linalg.svd(a), 3)
                                            * _weights(4, 3)), [INPUTS["M"]]),
    "qr_tall": (lambda a: np.sum(np.linalg.qr(a)[0] * _weights(4, 3))
                + np.sum(np.linalg.qr(a)[1] * _weights(3, 3)), [INPUTS["M"]]),
    "qr_wide_batch": (lambda a: np.sum(np.linalg.qr(a)[0] * _weights(2, 3, 3))
                      + np.sum(np.linalg.qr(a).R * _weights(2, 3, 5)), [INPUTS["W"]]),
    "qr_complete_thin_part": (lambda a: np.sum(np.linalg.qr(a, "complete")[0][:, :3]
                                               * _weights(4, 3))
                              + np.sum(np.linalg.qr(a, "complete")[1] ** 2), [INPUTS["M"]]),
    "pinv": (lambda a: np.sum(np.linalg.pinv(a) * _weights(3, 4)), [INPUTS["M"]]),
    "lstsq": (lambda a, b: np.sum(np.linalg.lstsq(a, b)[0] * _weights(3, 2))
              + np.sum(np.linalg.lstsq(a, b)[1]), [INPUTS["M"], INPUTS["B4"]]),
    "matrix_power": (lambda a: np.sum(np.linalg.matrix_power(a, 5) * _weights(3, 3))
                     + np.sum(np.linalg.matrix_power(a, -3)), [INPUTS["A"] / 4]),
}
def test_gradient_of_values_at_repeated_or_zero_ones_is_finite():
    """The values' gradient alone where eigenvalues repeat or singular values vanish: the
    trace (sum of eigenvalues) of the identity, the squared Frobenius norm (sum of s^2) of a
    rank-one matrix."""
    _, (g,) = interpreted_value_and_grad(lambda a: np.sum(np.linalg.eigvalsh(a)), [np.eye(3)])
    np.testing.assert_allclose(g, np.eye(3), atol=1e-12)
    rank_one = np.outer(np.arange(1.0, 5.0), np.arange(1.0, 4.0))
    for full in (True, False):
        _, (g,) = interpreted_value_and_grad(
            lambda a: np.sum(np.linalg.svd(a, full_matrices=full)[1] ** 2), [rank_one])
        np.testing.assert_allclose(g, 2 * rank_one, atol=1e-9)
    _, (g,) = interpreted_value_and_grad(
        lambda a: np.sum(np.linalg.svd(a, compute_uv=False) ** 2), [rank_one.T.copy()])
    np.testing.assert_allclose(g, 2 * rank_one.T, atol=1e-9)


TRIANGULAR = [(lower, trans, unit) for lower in (True, False) for trans in (0, "T")
              for unit in (False, True)]


@pytest.mark.parametrize("name", sorted(SWEEP))
def test_gradient_on_the_interpreter(name):
    f, args = SWEEP[name]
    value, grads = interpreted_value_and_grad(f, args)
    np.testing.assert_allclose(value, f(*args), rtol=1e-10)
    for g, want in zip(grads, central_differences(f, args)):
        np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("lower,trans,unit", TRIANGULAR)
def test_solve_triangular_gradient_on_the_interpreter(lower, trans, unit):
    w = _weights(2, 3, 2)

    def loss(a, b, sl):
        return np.sum(sl.solve_triangular(a, b, trans=trans, lower=lower, unit_diagonal=unit) * w)
    args = [INPUTS["Ab"], INPUTS["B"]]  # a batch of matrices, one right-hand side broadcast
    _, grads = interpreted_value_and_grad(lambda a, b: loss(a, b, gsl), args)

    def ref(a, b):
        return loss(a, np.broadcast_to(b, (2, 3, 2)), scipy.linalg)
    for g, want in zip(grads, central_differences(ref, args)):
        np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-6)


def test_grad_of_grad_of_solve_cholesky_slogdet():
    """A Hessian-vector product, compiled: the VJPs differentiate again."""
    def f(a, s, b):
        return (np.sum(np.linalg.solve(a, b) ** 2) + np.sum(np.linalg.cholesky(s) ** 3)
                + np.sum(np.linalg.slogdet(s)[1]))
    inner = gradc.grad(f, argnums=(0, 1))
    v = [_weights(3, 3), _weights(2, 3, 3)]

    def hvp(a, s, b):
        ga, gs = inner(a, s, b)
        return np.sum(ga * v[0]) + np.sum(gs * v[1])
    args = [INPUTS["A"], INPUTS["S_junk"], INPUTS["B"]]
    got = gradc.grad(hvp, argnums=(0, 1))(*args)

    def hvp_ref(a, s):  # the first derivatives on the interpreter, differenced
        _, (ga, gs, _) = interpreted_value_and_grad(f, [a, s, args[2]])
        return np.sum(ga * v[0]) + np.sum(gs * v[1])
    for g, want in zip(got, central_differences(hvp_ref, args[:2], eps=1e-5)):
        np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# errors

def _trace(f, *args):
    return trace(f, list(args))


def test_shape_errors_name_the_function():
    with pytest.raises(gradc.ShapeError, match="np.linalg.solve"):
        _trace(lambda a: np.linalg.solve(a, a), np.ones((3, 2)))
    with pytest.raises(gradc.ShapeError, match="np.linalg.cholesky"):
        _trace(lambda a: np.linalg.cholesky(a), np.ones(3))
    with pytest.raises(gradc.ShapeError, match="do not fit"):
        _trace(lambda a, b: np.linalg.solve(a, b), np.eye(3), np.ones(4))
    with pytest.raises(gradc.ShapeError, match="solve_triangular"):
        _trace(lambda a, b: gsl.solve_triangular(a, b), np.eye(3), np.ones((2, 2)))


def test_unsupported_arguments():
    with pytest.raises(gradc.UnsupportedOpError, match="mode='raw'"):
        _trace(lambda a: np.linalg.qr(a, mode="raw"), np.ones((3, 2)))
    with pytest.raises(gradc.ArgumentError, match="UPLO"):
        _trace(lambda a: np.linalg.eigh(a, UPLO="X"), np.eye(3))
    with pytest.raises(gradc.ArgumentError, match="trans"):
        _trace(lambda a: gsl.solve_triangular(a, a, trans=3), np.eye(3))
    with pytest.raises(gradc.ArgumentError, match="integer"):
        _trace(lambda a: np.linalg.matrix_power(a, 1.5), np.eye(3))


@pytest.mark.parametrize("fun", [lambda a: np.sum(np.linalg.svd(a)[0]),
                                 lambda a: np.sum(np.linalg.svd(a.T)[2] ** 2),
                                 lambda a: np.sum(np.linalg.qr(a, mode="complete").Q[:, 2:])])
def test_gradient_of_arbitrary_vectors_is_refused(fun):
    """The extra columns of a full U/V or a complete Q are any basis: no gradient, an error."""
    with pytest.raises(gradc.NonDifferentiableError, match="not defined"):
        interpreted_value_and_grad(fun, [INPUTS["M"]])


def test_cuda_has_no_kernel_and_says_so():
    pytest.importorskip("numba.cuda")
    graph, _, _ = _trace(lambda a: np.linalg.cholesky(a), INPUTS["A"])
    with pytest.raises(gradc.CompileError, match=r"np.linalg.cholesky has no CUDA kernel; "
                                                 r"use target='cpu'"):
        lower(graph, "cholesky", target="cuda")


def test_an_output_that_is_a_leading_part_of_a_buffer_does_not_own_it():
    """Returning a buffer's leading part and another part of it (a packed factorization's Q and
    R; here two halves of one product): the first must not take the buffer as its own output
    (the rest was overwritten before passes/fuse.py's legalize checked the size)."""
    x, y = _normal(4, 3), _normal(3, 5)
    top, bottom = gradc.jit(lambda x, y: ((x @ y)[:2], (x @ y)[2:]))(x, y)
    np.testing.assert_allclose(top, (x @ y)[:2])
    np.testing.assert_allclose(bottom, (x @ y)[2:])


def test_outside_a_trace_they_are_scipys():
    """gradc.scipy's functions on NumPy arrays (a loss run as plain NumPy) are SciPy's."""
    a, b, s = INPUTS["A"], INPUTS["B"], _sym(INPUTS["S_junk"][0])
    np.testing.assert_array_equal(gsl.solve_triangular(a, b, lower=True),
                                  scipy.linalg.solve_triangular(a, b, lower=True))
    np.testing.assert_array_equal(gsl.cho_solve(gsl.cho_factor(s), b),
                                  scipy.linalg.cho_solve(scipy.linalg.cho_factor(s), b))
    x, mu = INPUTS["X"], INPUTS["mu"]
    np.testing.assert_array_equal(_mvn.logpdf(x, mu, s),
                                  scipy.stats.multivariate_normal.logpdf(x, mu, s))


OUT_OF_MEMORY = """
import os, resource
import numpy as np, gradc
f = gradc.jit(lambda a: np.linalg.slogdet(a)[1])
a = np.eye(1500) * 2.0  # an 18 MB workspace, malloc'd in each call
print(round(float(f(a)), 3))
pages = int(open("/proc/self/statm").read().split()[0])
resource.setrlimit(resource.RLIMIT_AS, (pages * os.sysconf("SC_PAGE_SIZE") + (4 << 20),
                                        resource.getrlimit(resource.RLIMIT_AS)[1]))
try:
    f(a)
except MemoryError as e:
    print("MemoryError:", e)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc: Linux")
def test_a_refused_lapack_workspace_raises_memory_error_on_both_routes(tmp_path):
    """LAPACK handed the null address of a malloc that failed would crash the process; the
    kernel raises MemoryError instead (the address space capped below the workspace's size)."""
    for route in ("llvm", "numba"):
        env = dict(os.environ, GRADC_CACHE_DIR=str(tmp_path / route), GRADC_KERNELS=route)
        out = subprocess.run([sys.executable, "-c", OUT_OF_MEMORY], env=env,
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr
        logdet, refused = out.stdout.splitlines()
        assert float(logdet) == round(1500 * np.log(2.0), 3)
        assert refused.startswith("MemoryError: gradc: no memory for the LAPACK workspace"), refused


def test_a_numpy_matrix_solved_against_a_traced_right_hand_side():
    # np.linalg.solve(A, v) with A a NumPy array (a global) and v traced was a bare
    # AttributeError: A had no graph to be a constant of
    rng = np.random.default_rng(7)
    a = rng.standard_normal((4, 4)) + 4 * np.eye(4)
    v = rng.standard_normal(4)
    np.testing.assert_allclose(gradc.jit(lambda v: np.linalg.solve(a, v))(v),
                               np.linalg.solve(a, v), rtol=1e-12)
    np.testing.assert_allclose(gradc.jit(lambda v: np.linalg.lstsq(a, v)[0])(v),
                               np.linalg.lstsq(a, v)[0], rtol=1e-10)
    grad = gradc.grad(lambda v: np.sum(np.linalg.solve(a, v) ** 2))(v)
    np.testing.assert_allclose(grad, 2 * np.linalg.solve(a.T, np.linalg.solve(a, v)), rtol=1e-10)


def test_numpys_answers_at_the_edges_of_lstsq_pinv_det_and_svd():
    """Found by a fuzzing round: pinv with one rcond per matrix of a batch (each cut its own
    singular values: the products broadcast across the batch), lstsq with rcond=-1 (machine
    precision, LAPACK's meaning: it kept a zero singular value, x ~ 1e14), det and slogdet of
    0x0 matrices (1, as the empty product), svd of a matrix with no singular value (the
    identity for a full U or Vh; LAPACK left NaN), and svd/pinv(hermitian=True) from eigh of
    the lower triangle (the flag was ignored)."""
    stack = np.stack([np.diag([4.0, 2.0, 1.0])] * 3)
    rank2 = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    rhs = np.array([1.0, 2.0, 3.0, 4.0])
    cases = [(lambda a: np.linalg.pinv(a, rcond=np.array([0.1, 0.3, 0.6])), stack),
             (lambda a: np.linalg.lstsq(a, rhs, rcond=-1)[0], rank2),
             (lambda a: np.linalg.lstsq(a, rhs, rcond=-1)[2], rank2),
             (np.linalg.det, np.zeros((2, 0, 0))),
             (lambda a: np.linalg.slogdet(a)[1], np.zeros((0, 0))),
             (lambda a: np.linalg.svd(a)[0], np.zeros((3, 0))),
             (lambda a: np.linalg.svd(a)[2], np.zeros((2, 0, 4))),
             # hermitian=True: eigh of the lower triangle, as NumPy (a non-symmetric a shows it)
             (lambda a: np.linalg.svd(a, hermitian=True)[1], np.array([[2.0, 5.0], [1.0, -3.0]])),
             (lambda a: np.linalg.svd(a, hermitian=True)[2], np.array([[2.0, 5.0], [1.0, -3.0]])),
             (lambda a: np.linalg.svd(a, compute_uv=False, hermitian=True), stack - 3.0),
             (lambda a: np.linalg.pinv(a, hermitian=True), np.array([[2.0, 5.0], [1.0, -3.0]]))]
    for fun, a in cases:
        want = fun(a)
        got = gradc.jit(fun)(a)
        assert np.shape(got) == np.shape(want)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_empty_matrices_as_numpy_and_without_lapack_complaints(capfd):
    """Matrices with a zero dimension: NumPy's (empty or zero) answers, and LAPACK is never
    handed a leading dimension of 0 (it printed "illegal value" lines and returned
    at once), pinv and lstsq had no largest singular value to scale their cutoff by."""
    b2 = lambda a: np.ones((a.shape[0], 2))
    cases = [(np.linalg.inv, [(0, 0), (2, 0, 0)]), (np.linalg.cholesky, [(0, 0), (3, 0, 0)]),
             (lambda a: np.linalg.solve(a, a), [(0, 0), (2, 0, 0)]),
             (lambda a: np.linalg.eigh(a)[1], [(0, 0), (2, 0, 0)]),
             (lambda a: np.linalg.qr(a)[1], [(0, 0), (3, 0), (0, 3)]),
             (lambda a: np.linalg.svd(a)[1], [(0, 0), (3, 0), (0, 3)]),
             (np.linalg.pinv, [(0, 0), (3, 0), (0, 3), (2, 3, 0)]),
             (lambda a: np.linalg.pinv(a, hermitian=True), [(0, 0), (3, 0), (2, 0, 3)]),
             (lambda a: np.linalg.lstsq(a, b2(a))[0], [(0, 0), (3, 0), (0, 3)]),
             (lambda a: np.linalg.lstsq(a, b2(a))[1], [(3, 0)]),
             (lambda a: np.linalg.lstsq(a, b2(a))[2], [(0, 3)])]
    for fun, shapes in cases:
        for shape in shapes:
            a = np.zeros(shape)
            want, got = fun(a), gradc.jit(fun)(a)
            assert np.shape(got) == np.shape(want), (fun, shape)
            np.testing.assert_array_equal(got, want)
    printed = capfd.readouterr()
    assert "illegal value" not in printed.out + printed.err


def test_negative_order_vector_norms_have_zero_gradients_at_zeros():
    """norm(x, ord < 0) is 0 where an element is 0 (|0|^p = inf); its gradient there was
    0 * inf = NaN in every element: 0, as the README's kink table says of every order."""
    for order in (-1, -2, -0.5):
        for x in (np.zeros(3), np.array([0.0, 1.0, 2.0])):
            assert gradc.jit(lambda x, o=order: np.linalg.norm(x, ord=o))(x) == 0.0
            g = gradc.grad(lambda x, o=order: np.linalg.norm(x, ord=o))(x)
            np.testing.assert_array_equal(g, np.zeros(3))
