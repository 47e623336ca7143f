"""gradc.scipy: SciPy's names and semantics for traced code.

The argument space (axis, keepdims, b, return_sign, loc/scale, keyword and positional spellings,
dtypes, -inf entries, points off the support, parameters off their domain) is swept through the
reference interpreter (traced graphs evaluated by NumPy, no compiling); one compiled program
checks a representative subset end to end, and one compiled value_and_grad the gradients.
"""
import itertools

import numpy as np
import pytest
import scipy.linalg
import scipy.special as sp
import scipy.stats as st

import gradc
import gradc.scipy.special as gsp
import gradc.scipy.stats as gst
from gradc import autodiff, pytree
from gradc.interpret import evaluate
from gradc.passes import BEFORE_AUTODIFF, run_passes
from gradc.trace import trace

RNG = np.random.default_rng(7)
A = RNG.standard_normal((2, 3, 4))
A_INF = A.copy()
A_INF[0, 1, :] = -np.inf  # a row of -inf: logsumexp -inf there (SciPy), not NaN
A_INF[1, 2, 0] = -np.inf
B = RNG.uniform(-1, 2, (3, 4))


def interpret(f, *args):
    """f traced on `args` and evaluated by the reference interpreter."""
    graph, tree, _ = trace(f, list(args))
    return pytree.unflatten(tree, evaluate(graph, list(args)))


def interpreted_grads(f, *args):
    """Gradients of the scalar f with respect to every argument, by the interpreter."""
    graph, _, _ = trace(f, list(args))
    graph = run_passes(graph, BEFORE_AUTODIFF)
    graph.outputs = autodiff.vjp(graph, graph.outputs[0], list(graph.inputs))
    return evaluate(graph, list(args))


def central(f, args, i, eps=1e-6):
    x = np.array(args[i], dtype=np.float64)
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        hi, lo = x.copy(), x.copy()
        hi[idx] += eps
        lo[idx] -= eps
        g[idx] = (f(*args[:i], hi, *args[i + 1:]) - f(*args[:i], lo, *args[i + 1:])) / (2 * eps)
    return g


def assert_same(got, want, rtol, what):
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want), what
        for g, w in zip(got, want):
            assert_same(g, w, rtol, what)
        return
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    assert got.dtype == want.dtype, (what, got.dtype, want.dtype)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * 1e-3, err_msg=what)


# --- logsumexp, softmax, log_softmax -----------------------------------------------------------
LSE_CALLS = [  # (description, call of (module, a, b)): module is scipy.special or gradc's
    *[(f"axis={axis} keepdims={k}", lambda m, a, b, axis=axis, k=k: m.logsumexp(a, axis=axis, keepdims=k))
      for axis, k in itertools.product([None, 0, -1, (0, 2), (-1, -3)], [False, True])],
    ("b broadcast", lambda m, a, b: m.logsumexp(a, axis=-1, b=b)),
    ("b positional, keepdims", lambda m, a, b: m.logsumexp(a, (1, 2), b, True)),
    ("b number", lambda m, a, b: m.logsumexp(a, b=0.5)),
    ("return_sign", lambda m, a, b: m.logsumexp(a, axis=2, b=b - 0.5, return_sign=True)),
    ("return_sign keepdims", lambda m, a, b: m.logsumexp(a, 0, b, True, True)),
    ("softmax all", lambda m, a, b: m.softmax(a)),
    ("softmax axis", lambda m, a, b: m.softmax(a, axis=(0, -1))),
    ("log_softmax axis", lambda m, a, b: m.log_softmax(a, 1)),
    ("log_softmax all", lambda m, a, b: m.log_softmax(x=a)),
]


@pytest.mark.parametrize("a", [A, A_INF], ids=["finite", "with -inf"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("what, call", LSE_CALLS, ids=[c[0] for c in LSE_CALLS])
def test_logsumexp_family_matches_scipy(what, call, dtype, a):
    a, b = a.astype(dtype), B.astype(dtype)
    with np.errstate(all="ignore"):
        want = call(sp, a, b)
        got = interpret(lambda a, b: call(gsp, a, b), a, b)
    assert_same(got, want, 1e-5 if dtype == np.float32 else 1e-12, what)


def test_logsumexp_of_integers_and_all_minus_inf():
    i = np.array([[1, 2, 3], [0, 0, 0]])
    assert_same(interpret(lambda i: gsp.logsumexp(i, axis=1), i), sp.logsumexp(i, axis=1), 1e-12,
                "integers")
    a = np.full((2, 3), -np.inf)
    got = interpret(lambda a: gsp.logsumexp(a, axis=1, b=np.ones(3), return_sign=True), a)
    assert_same(got, sp.logsumexp(a, axis=1, b=np.ones(3), return_sign=True), 0, "all -inf")


# --- scipy.stats -------------------------------------------------------------------------------
X = np.linspace(-2.5, 3.5, 7)
P = np.linspace(0.05, 0.95, 7)
U = np.array([-0.2, 0.0, 0.1, 0.5, 0.9, 1.0, 1.3])  # beta: inside and outside [0, 1]
K = np.array([-1.0, 0.0, 1.0, 2.0, 2.5, 5.0, 9.0])  # poisson: off the support, integers, 2.5
STATS_CALLS = [  # (description, call of (stats module, x, p, u, k))
    ("norm.logpdf default", lambda s, x, p, u, k: s.norm.logpdf(x)),
    ("norm.logpdf loc scale", lambda s, x, p, u, k: s.norm.logpdf(x, 0.5, 2.0)),
    ("norm.pdf keywords", lambda s, x, p, u, k: s.norm.pdf(x, scale=p, loc=-1.0)),
    ("norm.cdf", lambda s, x, p, u, k: s.norm.cdf(x, loc=0.3)),
    ("norm.logcdf", lambda s, x, p, u, k: s.norm.logcdf(10 * x, 1.0, 0.5)),
    ("norm.sf", lambda s, x, p, u, k: s.norm.sf(x, 0.0, 3.0)),
    ("norm.logsf", lambda s, x, p, u, k: s.norm.logsf(10 * x)),
    ("norm.ppf", lambda s, x, p, u, k: s.norm.ppf(p, loc=x, scale=2.0)),
    ("norm.ppf ends", lambda s, x, p, u, k: s.norm.ppf(u)),
    ("norm bad scale", lambda s, x, p, u, k: s.norm.logpdf(x, scale=x)),
    ("t.logpdf", lambda s, x, p, u, k: s.t.logpdf(x, 3.0)),
    ("t.pdf loc scale df array", lambda s, x, p, u, k: s.t.pdf(x, 10 * p, 0.5, scale=1.5)),
    ("t bad df", lambda s, x, p, u, k: s.t.logpdf(p, df=x)),
    ("beta.logpdf", lambda s, x, p, u, k: s.beta.logpdf(u, 2.0, 3.0)),
    ("beta.pdf a<1, loc scale", lambda s, x, p, u, k: s.beta.pdf(2 * u + 1, 0.5, b=2.0, loc=1.0,
                                                                   scale=2.0)),
    ("beta a=1 at the ends", lambda s, x, p, u, k: s.beta.logpdf(u, 1.0, 1.0)),
    ("beta bad a", lambda s, x, p, u, k: s.beta.logpdf(p, x, 2.0)),
    ("gamma.logpdf", lambda s, x, p, u, k: s.gamma.logpdf(x, 2.0)),
    ("gamma.pdf loc scale", lambda s, x, p, u, k: s.gamma.pdf(x, a=1.5, loc=-1.0, scale=0.5)),
    ("gamma a=1 at 0", lambda s, x, p, u, k: s.gamma.logpdf(u, 1.0)),
    ("gamma bad a", lambda s, x, p, u, k: s.gamma.logpdf(p, x)),
    ("poisson.logpmf", lambda s, x, p, u, k: s.poisson.logpmf(k, 3.0)),
    ("poisson.pmf mu array loc", lambda s, x, p, u, k: s.poisson.pmf(k, 10 * p, loc=1)),
    ("poisson mu 0", lambda s, x, p, u, k: s.poisson.logpmf(k, 0.0)),
    ("poisson bad mu", lambda s, x, p, u, k: s.poisson.pmf(k, x)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("what, call", STATS_CALLS, ids=[c[0] for c in STATS_CALLS])
def test_stats_match_scipy(what, call, dtype):
    """Values, shapes and dtypes (float64, as SciPy's, for float32 inputs too)."""
    args = [v.astype(dtype) for v in (X, P, U, K)]
    with np.errstate(all="ignore"):
        want = call(st, *args)
        got = interpret(lambda *a: call(gst, *a), *args)
    assert_same(got, want, 1e-6 if dtype == np.float32 else 1e-12, what)


STATS_GRADS = [  # (description, function of float arrays, arguments)
    ("norm.logpdf", lambda x, m, s: st.norm.logpdf(x, m, s), (X, X[::-1], P + 0.5)),
    ("norm.logcdf", lambda x, m, s: st.norm.logcdf(x, loc=m, scale=s), (4 * X, X[::-1], P + 0.5)),
    ("norm.ppf", lambda q, m, s: st.norm.ppf(q, m, s), (P, X, P + 0.5)),
    ("t.logpdf", lambda x, df, s: st.t.logpdf(x, df, 0.2, s), (X, 10 * P, P + 0.5)),
    ("beta.logpdf", lambda x, a, b: st.beta.logpdf(x, a, b), (P, 5 * P, 5 * P[::-1])),
    ("gamma.logpdf", lambda x, a, s: st.gamma.logpdf(x, a, scale=s), (P * 5, 3 * P, P + 0.5)),
    ("poisson.logpmf", lambda mu: st.poisson.logpmf(K[1:4], mu), (np.array([0.5, 2.0, 7.0]),)),
]


@pytest.mark.parametrize("what, f, args", STATS_GRADS, ids=[g[0] for g in STATS_GRADS])
def test_stats_gradients_match_central_differences(what, f, args):
    gf = {"norm.logpdf": lambda x, m, s: gst.norm.logpdf(x, m, s),
          "norm.logcdf": lambda x, m, s: gst.norm.logcdf(x, loc=m, scale=s),
          "norm.ppf": lambda q, m, s: gst.norm.ppf(q, m, s),
          "t.logpdf": lambda x, df, s: gst.t.logpdf(x, df, 0.2, s),
          "beta.logpdf": lambda x, a, b: gst.beta.logpdf(x, a, b),
          "gamma.logpdf": lambda x, a, s: gst.gamma.logpdf(x, a, scale=s),
          "poisson.logpmf": lambda mu: gst.poisson.logpmf(K[1:4], mu)}[what]
    grads = interpreted_grads(lambda *a: np.sum(gf(*a)), *args)
    for i, g in enumerate(grads):
        np.testing.assert_allclose(g, central(lambda *a: np.sum(f(*a)), list(args), i),
                                   rtol=1e-6, atol=1e-7, err_msg=f"{what}: argument {i}")


# --- compiled end to end -----------------------------------------------------------------------
def _program(s, sp_module, a, a32, b, x, p, loc, scale):
    """A representative subset, for SciPy's modules or gradc's: the max shift with -inf rows,
    weights and signs, float32, traced loc/scale keywords, the support's clamp."""
    return {"lse": sp_module.logsumexp(a, axis=(0, 2)),
            "lse_b": sp_module.logsumexp(a, axis=-1, b=b, return_sign=True),
            "softmax32": sp_module.softmax(a32, axis=1),
            "norm": s.norm.logpdf(x, loc=loc, scale=scale), "ppf": s.norm.ppf(p, loc, scale),
            "beta": s.beta.logpdf(p - 0.3, 2.0, 0.5), "poisson": s.poisson.logpmf(K, scale * 2)}


@pytest.fixture(scope="module")
def compiled_values():
    args = (A_INF, A.astype(np.float32), B, X, P, X[::-1].copy(), P + 0.5)
    with np.errstate(all="ignore"):
        want = _program(st, sp, *args)
    return gradc.jit(lambda *a: _program(gst, gsp, *a))(*args), want


@pytest.mark.parametrize("key", ["lse", "lse_b", "softmax32", "norm", "ppf", "beta", "poisson"])
def test_compiled_matches_scipy(compiled_values, key):
    got, want = compiled_values
    w = want[key]
    rtol = 1e-5 if np.asarray(w[0] if isinstance(w, tuple) else w).dtype == np.float32 else 1e-12
    assert_same(got[key], w, rtol, key)


def test_compiled_value_and_grad_matches_central_differences():
    def loss(a, b, loc, scale, mu):
        out, sign = gsp.logsumexp(a, axis=1, b=b, return_sign=True)
        return (np.sum(out * sign) + np.sum(gst.norm.logpdf(X, loc=loc, scale=scale))
                + np.sum(gst.poisson.logpmf(K[1:4], mu)))

    def loss_ref(a, b, loc, scale, mu):
        out, sign = sp.logsumexp(a, axis=1, b=b, return_sign=True)
        with np.errstate(all="ignore"):
            return (np.sum(out * sign) + np.sum(st.norm.logpdf(X, loc=loc, scale=scale))
                    + np.sum(st.poisson.logpmf(K[1:4], mu)))

    args = [A[0], B[0].copy(), X[::-1].copy(), P + 0.5, P[:3] * 3]
    value, grads = gradc.value_and_grad(loss, argnums=(0, 1, 2, 3, 4))(*args)
    assert value == pytest.approx(loss_ref(*args), rel=1e-12)
    for i, g in enumerate(grads):
        np.testing.assert_allclose(g, central(loss_ref, args, i), rtol=1e-6, atol=1e-7,
                                   err_msg=f"argument {i}")


# --- untraced arguments go to SciPy ------------------------------------------------------------
def test_untraced_calls_are_scipys():
    assert gsp.logsumexp(A, axis=1, b=B[0], return_sign=True)[0] == pytest.approx(
        sp.logsumexp(A, axis=1, b=B[0], return_sign=True)[0])
    np.testing.assert_array_equal(gsp.softmax(A, axis=0), sp.softmax(A, axis=0))
    np.testing.assert_array_equal(gsp.polygamma(2, P), sp.polygamma(2, P))
    np.testing.assert_array_equal(gst.beta.pdf(U, 2.0, b=3.0), st.beta.pdf(U, 2.0, b=3.0))
    np.testing.assert_array_equal(gst.poisson.pmf(K, 3.0), st.poisson.pmf(K, 3.0))
    assert gsp.erf is sp.erf and gsp.psi is sp.digamma


def test_a_wrong_argument_is_an_argument_error_naming_the_line():
    with pytest.raises(gradc.ArgumentError, match=r"test_gradc_scipy\.py:\d+"):
        gradc.jit(lambda x: gst.norm.logpdf(x, sigma=2.0))(X)


def test_what_an_adversarial_round_found_against_scipy():
    """logsumexp's b == 0 entries set the max shift (-inf for 1.0); multivariate_normal read a
    1-D x as one point where SciPy reads n points of a 1-D normal; t.logpdf lost its digits to
    cancelling log-gammas at large df (-19 for -1.04 at 1e16, NaN at inf); a NaN point was off
    gamma's, beta's and poisson's support (-inf) where SciPy gives NaN."""
    x = np.array([0.1, -0.3, 1.2, np.nan])
    df = np.array([3.0, 1e5, 1e12, 1e16, np.inf])

    def f(x, df):
        return (gsp.logsumexp(np.array([[1.0, 1000.0], [2.0, 3.0]]) * x[0] * 10,
                              b=np.array([[1.0, 0.0], [1.0, 1.0]]), axis=1),
                gst.multivariate_normal.logpdf(x[:3], 0.5, 2.0),
                gst.multivariate_normal.logpdf(x[:3]), gst.t.logpdf(0.5 + x[0] * 0, df),
                gst.gamma.logpdf(x, 2.0), gst.beta.pdf(x, 2.0, 3.0), gst.poisson.logpmf(x, 2.0))

    def reference(x, df):
        with np.errstate(all="ignore"):
            return (sp.logsumexp(np.array([[1.0, 1000.0], [2.0, 3.0]]) * x[0] * 10,
                                 b=np.array([[1.0, 0.0], [1.0, 1.0]]), axis=1),
                    st.multivariate_normal.logpdf(x[:3], 0.5, 2.0),
                    st.multivariate_normal.logpdf(x[:3]), st.t.logpdf(0.5, df),
                    st.gamma.logpdf(x, 2.0), st.beta.pdf(x, 2.0, 3.0), st.poisson.logpmf(x, 2.0))

    for got, want in zip(gradc.jit(f)(x, df), reference(x, df)):
        assert np.shape(got) == np.shape(want)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    g = gradc.grad(lambda df: np.sum(gst.t.logpdf(0.5, df)))(np.array([1e8]))
    assert g[0] == pytest.approx(3.594e-17, rel=1e-3)  # (central differences of SciPy's)
    with pytest.raises(gradc.UnsupportedOpError, match="allow_singular"):
        gradc.jit(lambda x: gst.multivariate_normal.logpdf(x, np.zeros(2), np.eye(2),
                                                          allow_singular=True))(np.ones(2))


def test_polygamma_just_below_zero():
    """psi^(n)(x) for n >= 2 and -0.5 < x < 0 took 1 - r from r = x + 1, which rounds: 1.5e-11
    off at x = -1e-5, 2.5e-7 at -1e-10, inf at -1e-20 (SciPy: 2e60); through nested gradients
    of digamma too. Compiled against SciPy, over the negative axis."""
    x = np.concatenate([-np.logspace(-20, -1, 40), -np.linspace(0.3, 7.7, 40)])
    for n in (2, 3, 5):
        np.testing.assert_allclose(gradc.jit(lambda x: gsp.polygamma(n, x))(x),
                                   sp.polygamma(n, x), rtol=1e-12)
    tiny = np.array([-1e-5, -1e-10, -1e-20])
    second = gradc.grad(lambda x: np.sum(gradc.grad(lambda y: np.sum(gsp.digamma(y)))(x)))
    np.testing.assert_allclose(second(tiny), sp.polygamma(2, tiny), rtol=1e-14)


def test_first_use_of_gradc_scipy_inside_a_traced_function():
    """gradc.scipy is imported on first use; inside a trace, scipy.stats' import (which makes
    and draws from a generator) was taken for the user's random numbers (FrozenRandomError)."""
    import subprocess
    import sys
    code = ("import numpy as np, sys, gradc\n"
            "assert 'gradc.scipy' not in sys.modules\n"
            "x = np.array([1.0, 2.0, 3.0])\n"
            "got = gradc.jit(lambda x: gradc.scipy.special.logsumexp(x))(x)\n"
            "assert abs(got - np.log(np.exp(x).sum())) < 1e-12, got\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_solve_triangular_of_a_singular_matrix_is_nan_where_scipy_raises():
    """(LAPACK's trtrs finds the zero on the diagonal; SciPy raises LinAlgError: a compiled
    function cannot stop halfway, so that matrix's result is NaN, as solve's is)"""
    a = np.tril(np.arange(1.0, 17.0).reshape(4, 4))
    a[2, 2] = 0.0
    b = np.ones((4, 2))
    with pytest.raises(np.linalg.LinAlgError):
        scipy.linalg.solve_triangular(a, b, lower=True)
    got = gradc.jit(lambda a, b: gradc.scipy.linalg.solve_triangular(a, b, lower=True))(a, b)
    assert np.isnan(got).all()


def test_gradc_scipy_imports_what_is_used_and_leaves_a_profiler_alone():
    """gradc.scipy.linalg does not import scipy.stats (1.4-1.8 s of a GP's first call), and the
    first use of gradc.scipy under cProfile keeps cProfile's profiler (it was handed back to
    sys.setprofile and called as a Python function: TypeError)."""
    import subprocess
    import sys
    code = ("import sys, cProfile, gradc\n"
            "profiler = cProfile.Profile(); profiler.enable()\n"
            "gradc.scipy.linalg.solve_triangular\n"
            "profiler.disable()\n"
            "assert 'scipy.stats' not in sys.modules, 'scipy.stats imported'\n"
            "gradc.scipy.stats.norm\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]
