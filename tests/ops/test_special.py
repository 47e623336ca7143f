"""scipy.special's ufuncs in traced code (gradc/ops/special.py, gradc/codegen/special_math.py).

- the scalar code against SciPy on dense grids with the tails (plain Python: the same code the
  kernels compile, without compiling it);
- the ufuncs through gradc.jit (float32 and float64 in one compiled program): SciPy's values,
  shapes and dtypes, special values (poles, +-inf, NaN, the ends of erfinv's domain),
  broadcasting, Python numbers, integers;
- the VJPs against central differences over wide ranges (the reference interpreter), float32
  gradients compiled, grad of grad (gammaln, digamma, erf, erfinv, log_ndtr) compiled;
- errors: an unsupported SciPy ufunc, out=, ufunc methods, SciPy's Python functions.
The per-op cases of tests/ops/test_ops.py check each op's compiled forward and gradient too.
"""
import math
import subprocess
import sys

import numpy as np
import pytest
import scipy.special as sp

import gradc
import gradc.scipy
from gradc import autodiff
from gradc.codegen import special_math as sm
from gradc.interpret import evaluate
from gradc.passes import BEFORE_AUTODIFF, run_passes
from gradc.trace import supported_markdown, trace


def _tail(lo, hi, n=400):
    return np.logspace(lo, hi, n)


GRIDS = {  # name: (points, SciPy, relative tolerance, absolute tolerance)
    "erfinv": (np.concatenate([np.linspace(-1, 1, 4001), 1 - _tail(-16, -1), -1 + _tail(-16, -1),
                               _tail(-300, -1), [np.nextafter(1, 0), np.nextafter(-1, 0)]]),
               sp.erfinv, 1e-14, 0),
    "ndtri": (np.concatenate([np.linspace(0, 1, 4001), _tail(-300, -1), 1 - _tail(-16, -1)]),
              sp.ndtri, 1e-14, 0),
    "ndtr": (np.linspace(-40, 40, 4001), sp.ndtr, 1e-13, 1e-300),
    "log_ndtr": (np.concatenate([np.linspace(-40, 40, 4001), -_tail(1, 150), _tail(0, 2)]),
                 sp.log_ndtr, 1e-13, 1e-300),
    # SciPy rounds x*x in exp(x*x) for x < 0 (errors up to x^2 * 1.1e-16 near x = -26.6)
    "erfcx": (np.concatenate([np.linspace(-26, 40, 4001), _tail(1, 300)]), sp.erfcx, 2e-13, 0),
    "erf": (np.linspace(-8, 8, 2001), sp.erf, 1e-15, 0),
    "erfc": (np.linspace(-8, 28, 2001), sp.erfc, 1e-13, 1e-300),
    "logit": (np.concatenate([np.linspace(0, 1, 4001), _tail(-300, -1), 1 - _tail(-16, -1)]),
              sp.logit, 1e-14, 0),
    # libm's lgamma and the recurrences are ~1e-16 absolute near the roots of their results
    "gammaln": (np.concatenate([np.linspace(-30.25, 30.25, 4001), _tail(-10, 5),
                                [-np.inf, -1e300]]), sp.gammaln, 1e-13, 1e-15),
    "digamma": (np.concatenate([np.linspace(0, 30.25, 2001), _tail(-10, 5),
                                np.linspace(1.36, 1.56, 201), [-0.0, -1.0, -2.0, np.inf, -np.inf]]),
                sp.digamma, 1e-13, 2e-15),
    # below 0 SciPy's own error grows near the poles (5.6e-13 at -25.999875, against mpmath)
    "digamma_negative": (np.concatenate([np.linspace(-30.25, 0, 2001), -_tail(-3, 5) + 0.3,
                                         [-1e300, -1e-310, -1e-5, -4503599627370495.5]]),
                         sp.digamma, 1e-11, 2e-15),
}


def _assert_close(got, want, rtol, atol, what):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    bad = ~same & ~(np.abs(got - want) <= rtol * np.abs(want) + atol)
    assert not bad.any(), (f"{what}: {bad.sum()} points off, e.g. x-index {np.argmax(bad)}: "
                           f"{got[bad][:3]} vs SciPy's {want[bad][:3]}")


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_scalar_code_matches_scipy_on_dense_grids(name):
    """float64 to ~1e-13 relative; float32 (the float64 result rounded) to about an ulp."""
    x, ref, rtol, atol = GRIDS[name]
    f = getattr(sm, name.split("_negative")[0])
    with np.errstate(all="ignore"):
        want = ref(x)
        got = np.array([f(float(v)) for v in x])
        _assert_close(got, want, rtol, atol, f"{name} float64")
        x32 = x.astype(np.float32)
        got32 = np.array([f(float(v)) for v in x32]).astype(np.float32)
        _assert_close(got32, ref(x32), 2.5e-7, 1e-37, f"{name} float32")


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_polygamma_scalar_code_matches_scipy(n):
    x = np.concatenate([np.linspace(-20.25, 30.25, 2001), _tail(-8, 4), [0.0, -1.0, np.inf]])
    got = np.array([sm.polygamma(n, float(v)) for v in x])
    with np.errstate(all="ignore"):
        _assert_close(got, sp.polygamma(n, x), 1e-13, 1e-300, f"polygamma({n})")


# --- through gradc.jit ------------------------------------------------------------------------
SPECIAL_X = np.array([-np.inf, -40.0, -27.0, -3.5, -1.0, -0.0, 0.0, 1e-300, 0.3, 1.5, 7.0,
                      30.0, np.inf, np.nan])
SPECIAL_P = np.array([-0.5, 0.0, 1e-300, 1e-20, 0.25, 0.5, 0.9, 1 - 1e-16, 1.0, 1.5, np.nan,
                      0.1, 0.7, 0.5])


def _ufuncs(x, p):
    """Every special ufunc, keyed by name (and a few spellings: psi, broadcasting, numbers)."""
    return {"erf": sp.erf(x), "erfc": sp.erfc(x), "erfcx": sp.erfcx(x), "ndtr": sp.ndtr(x),
            "log_ndtr": sp.log_ndtr(x), "gammaln": sp.gammaln(x), "digamma": sp.digamma(x),
            "psi": sp.psi(x), "expit": sp.expit(x), "log_expit": sp.log_expit(x),
            "erfinv": sp.erfinv(2 * p - 1), "ndtri": sp.ndtri(p), "logit": sp.logit(p),
            "xlogy": sp.xlogy(x, p), "xlog1py": sp.xlog1py(p, x),
            "xlogy_broadcast": sp.xlogy(p[:4, None], x[None, 4:8]),
            "xlogy_number": sp.xlogy(2.0, p), "erf_2d": sp.erf(x.reshape(2, 7))}


def _ufuncs32(x, p):
    """The float32 special values of the functions with their own scalar code (the per-op
    cases of tests/ops/test_ops.py check every op on float32)."""
    return {"erfinv": sp.erfinv(2 * p - 1), "ndtri": sp.ndtri(p), "log_ndtr": sp.log_ndtr(x),
            "digamma": sp.digamma(x), "erfcx": sp.erfcx(x)}


@pytest.fixture(scope="module")
def jitted_ufuncs():
    """One compiled program: the ufuncs on float64 inputs, float32 inputs and integers."""
    def f(x64, p64, x32, p32, i):
        return {"f64": _ufuncs(x64, p64), "f32": _ufuncs32(x32, p32),
                "int": {"erf": sp.erf(i), "xlogy": sp.xlogy(i, 2)}}
    args = (SPECIAL_X, SPECIAL_P, SPECIAL_X.astype(np.float32), SPECIAL_P.astype(np.float32),
            np.arange(1, 5))
    with np.errstate(all="ignore"):
        return gradc.jit(f)(*args), f(*args)


@pytest.mark.parametrize("group, rtol", [("f64", 1e-13), ("f32", 2.5e-7), ("int", 1e-13)])
def test_ufuncs_compiled_match_scipy_values_shapes_dtypes(jitted_ufuncs, group, rtol):
    got, want = jitted_ufuncs
    for name, w in want[group].items():
        g = got[group][name]
        assert g.shape == w.shape and g.dtype == w.dtype, (group, name, g.dtype, w.dtype)
        _assert_close(g, w, rtol, 1e-300 if group != "f32" else 1e-37, f"{group} {name}")


# --- gradients ---------------------------------------------------------------------------------
def _interpreted_grad(f, x):
    """d/dx sum(f(x)) by gradc's VJPs, run by the reference interpreter (no compiling)."""
    graph, _, _ = trace(lambda v: np.sum(f(v)), [x])
    graph = run_passes(graph, BEFORE_AUTODIFF)
    graph.outputs = autodiff.vjp(graph, graph.outputs[0], [graph.inputs[0]])
    return evaluate(graph, [x])[0]


def _central(f, x, eps):
    """Central differences, divided by the step as rounded (near 1, x +- 1e-12 is not exact)."""
    hi, lo = x + eps, x - eps
    with np.errstate(all="ignore"):
        return (f(hi) - f(lo)) / (hi - lo)


WIDE = {  # name: (function of x, points, steps)
    "erf": (sp.erf, np.linspace(-5, 5, 41), 1e-6),
    "erfc": (sp.erfc, np.linspace(-5, 5, 41), 1e-6),
    "erfcx": (sp.erfcx, np.concatenate([np.linspace(-5, 5, 41), [20.0, 1e3]]), 1e-6),
    "erfinv": (sp.erfinv, np.concatenate([np.linspace(-0.99, 0.99, 41), [1 - 1e-9]]),
               np.concatenate([np.full(41, 1e-7), [1e-12]])),
    "ndtr": (sp.ndtr, np.linspace(-8, 8, 41), 1e-6),
    "ndtri": (sp.ndtri, np.concatenate([np.linspace(0.01, 0.99, 41), [1e-30]]),
              np.concatenate([np.full(41, 1e-7), [1e-33]])),
    "log_ndtr": (sp.log_ndtr, np.concatenate([np.linspace(-8, 8, 41), [-40.0, -300.0]]),
                 1e-6),
    "gammaln": (sp.gammaln, np.concatenate([np.linspace(0.05, 20, 41), [-2.5, -0.3, 1e3]]), 1e-6),
    "digamma": (sp.digamma, np.concatenate([np.linspace(0.05, 20, 41), [-2.5, -0.3, 1e3]]), 1e-7),
    "polygamma": (lambda x: sp.polygamma(3, x), np.concatenate([np.linspace(0.3, 20, 41), [-2.5]]),
                  1e-7),
    "logit": (sp.logit, np.linspace(0.01, 0.99, 41), 1e-8),
    "expit": (sp.expit, np.linspace(-30, 30, 41), 1e-6),
    "log_expit": (sp.log_expit, np.linspace(-30, 30, 41), 1e-6),
}


@pytest.mark.parametrize("name", sorted(WIDE))
def test_vjp_matches_central_differences_over_wide_ranges(name):
    f, x, eps = WIDE[name]
    traced_f = (lambda v: gradc.scipy.special.polygamma(3, v)) if name == "polygamma" else f
    got = _interpreted_grad(traced_f, x)
    want = _central(f, x, eps)
    assert np.all(np.isfinite(got)), (name, x[~np.isfinite(got)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-8, err_msg=name)


def test_log_ndtr_gradient_in_the_far_tail_is_minus_x():
    """pdf/ndtr would be 0/0 there: the VJP uses erfcx, so d/dx log ndtr(x) ~ -x."""
    x = np.array([-40.0, -1e3, -1e10, -1e150])
    np.testing.assert_allclose(_interpreted_grad(sp.log_ndtr, x), -x * (1 + 1 / x ** 2),
                               rtol=1e-6)


def test_xlogy_gradients_at_zero():
    """xlogy(0, y) = 0 (also at y = 0): d/dx is log(y) (JAX's convention), d/dy is 0."""
    def f(x, y):
        return np.sum(sp.xlogy(x, y) + sp.xlog1py(x, y - 1))
    x, y = np.array([0.0, 0.0, 2.0]), np.array([0.0, 3.0, 3.0])
    graph, _, _ = trace(f, [x, y])
    graph.outputs = graph.outputs + autodiff.vjp(graph, graph.outputs[0], graph.inputs)
    value, gx, gy = evaluate(graph, [x, y])
    assert value == pytest.approx(4 * math.log(3))
    np.testing.assert_array_equal(gx[1:], 2 * np.log([3.0, 3.0]))
    assert gx[0] == -np.inf  # log(0) + log1p(-1)
    np.testing.assert_allclose(gy, [0.0, 0.0, 4 / 3])


def _second(name):
    return {"gammaln": lambda x: sp.polygamma(1, x), "digamma": lambda x: sp.polygamma(2, x),
            "erf": lambda x: -4 * x / math.sqrt(math.pi) * np.exp(-x * x),
            "erfinv": lambda x: np.pi / 2 * sp.erfinv(x) * np.exp(2 * sp.erfinv(x) ** 2),
            "log_ndtr": lambda x: _central(lambda v: np.exp(-v * v / 2) / np.sqrt(2 * np.pi)
                                           / sp.ndtr(v), x, 1e-6)}[name]


GRAD_GRAD = {"gammaln": np.array([0.3, 1.5, 7.0]), "digamma": np.array([0.3, 1.5, 7.0]),
             "erf": np.array([-1.0, 0.2, 2.0]), "erfinv": np.array([-0.9, 0.1, 0.6]),
             "log_ndtr": np.array([-6.0, 0.0, 3.0])}


@pytest.fixture(scope="module")
def compiled_second_derivatives():
    """One compiled program: d2/dx2 of each function (grad of grad), float64, and the first
    derivatives in float32."""
    def first(name, x):
        return gradc.grad(lambda v: np.sum(getattr(sp, name)(v)))(x)

    def f(xs, xs32):
        return ({k: gradc.grad(lambda v, k=k: np.sum(first(k, v)))(x) for k, x in xs.items()},
                {k: first(k, x) for k, x in xs32.items()})

    xs32 = {k: v.astype(np.float32) for k, v in GRAD_GRAD.items()}
    return gradc.jit(f)(GRAD_GRAD, xs32)


@pytest.mark.parametrize("name", sorted(GRAD_GRAD))
def test_grad_of_grad_compiled(compiled_second_derivatives, name):
    second, first32 = compiled_second_derivatives
    x = GRAD_GRAD[name]
    np.testing.assert_allclose(second[name], _second(name)(x), rtol=1e-6, err_msg=name)
    assert first32[name].dtype == np.float32
    f = getattr(sp, name)
    np.testing.assert_allclose(first32[name], _central(f, x, 1e-6), rtol=1e-5, err_msg=name)


# --- errors and the supported list -------------------------------------------------------------
def test_unsupported_scipy_ufunc_names_itself():
    with pytest.raises(gradc.UnsupportedOpError, match=r"scipy\.special\.gamma is not supported"):
        gradc.jit(lambda x: sp.gamma(x))(np.ones(3))


@pytest.mark.parametrize("call, match", [
    (lambda x: sp.erf(x, out=np.empty(3)), "out="),
    (lambda x: sp.xlogy.outer(x, x), r"scipy\.special\.xlogy\.outer"),
    (lambda x: sp.erf(x, dtype=np.int64), "same_kind"),  # (float64 -> int64: NumPy's refusal)
])
def test_ufunc_arguments_gradc_refuses(call, match):
    with pytest.raises(gradc.GradcError, match=match):
        gradc.jit(call)(np.ones(3))


@pytest.mark.parametrize("call", [lambda x: sp.logsumexp(x), lambda x: sp.softmax(x),
                                  lambda x: sp.polygamma(1, x)])
def test_scipy_python_functions_point_to_gradc_scipy(call):
    """SciPy's Python functions call np.asarray on their arguments first: they cannot trace."""
    with pytest.raises(gradc.GradcError, match=r"gradc\.scipy\.special"):
        gradc.jit(call)(np.ones(3))


@pytest.mark.parametrize("n", [1.5, -1, np.ones(2)])
def test_polygamma_order_must_be_a_static_integer(n):
    with pytest.raises(gradc.ArgumentError, match="n must be"):
        gradc.jit(lambda x: gradc.scipy.special.polygamma(n, x))(np.ones(3))


def test_readme_list_names_the_scipy_ufuncs():
    text = supported_markdown()
    for name in ("erf", "erfinv", "gammaln", "psi", "digamma", "xlogy", "expit", "log_expit"):
        assert f"`scipy.special.{name}`" in text


def test_importing_gradc_does_not_import_scipy_special():
    code = "import sys, gradc; assert 'scipy.special' not in sys.modules, 'imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]



def test_what_a_fuzzing_round_found_in_the_special_functions():
    """xlogy's and xlog1py's Hessians at x = 0 (the y-gradient's x-derivative, 1/y, was lost:
    gamma.logpdf's at a = 1, poisson.logpmf's at k = 0, not even symmetric); erfcx's gradient
    for large x (2 x erfcx(x) - 2/sqrt(pi) cancelled: the wrong sign at 1e8, float32 off at
    30); trigamma at large negative x (digamma's gradient: a recurrence of -x steps, 28 s)."""
    import scipy.stats  # noqa: F401  (gradc.scipy.stats mirrors it)
    hessian = gradc.hessian(lambda v: sp.xlogy(v[0], v[1]) + sp.xlog1py(v[0], v[1]))
    h = hessian(np.array([0.0, 0.7]))
    want = 1 / 0.7 + 1 / 1.7
    np.testing.assert_allclose(h, [[0.0, want], [want, h[1, 1]]], rtol=1e-12)
    assert h[1, 1] == 0.0
    x = np.array([30.0, 1e3, 1e5, 1e8, 1e20])
    z = 0.5 / x**2  # (the asymptotic series, to z^8: exact to rounding from x = 25)
    exact = -2 / np.sqrt(np.pi) * sum((-1) ** (k + 1) * math.prod(range(1, 2 * k, 2)) * z**k
                                      for k in range(1, 9))
    np.testing.assert_allclose(gradc.grad(lambda x: sp.erfcx(x).sum())(x), exact, rtol=1e-8)
    x32 = x[:3].astype(np.float32)
    np.testing.assert_allclose(gradc.grad(lambda x: sp.erfcx(x).sum())(x32),
                               exact[:3].astype(np.float32), rtol=1e-6)
    from gradc.scipy import special as gs
    x = np.array([-1e9 - 0.5, -123456.7, -2.7, -0.3, -1e-8, 3.3])
    np.testing.assert_allclose(gradc.jit(lambda x: gs.polygamma(1, x))(x), sp.polygamma(1, x),
                               rtol=1e-14)
    np.testing.assert_allclose(gradc.grad(lambda x: sp.digamma(x).sum())(x),
                               sp.polygamma(1, x), rtol=1e-14)
    x = np.array([-1e9 - 0.7, -123456.3, -2.7, -0.3, 3.3])  # (n >= 2 too: 28 s at -1e9)
    np.testing.assert_allclose(gradc.jit(lambda x: gs.polygamma(3, x))(x),
                               sp.polygamma(3, x), rtol=1e-11)


def test_logsumexp_weights_at_zero_keep_their_gradient():
    """scipy's logsumexp(a, b=b) drops entries with b == 0 (they set no max shift); their
    weight's gradient exp(a) / sum(b exp(a)) is kept (it was 0: a weight at 0 never moved),
    finite where exp would overflow, and infinite or NaN a there still drop out."""
    from gradc.scipy import special as gs
    a = np.array([[1.0, 0.3, -np.inf, np.nan, 2.0], [0.5, 0.1, 3.0, 1.0, np.inf]])
    b = np.array([[1.0, 0.0, 0.0, 0.0, 2.0], [0.0, 1.0, 1.0, 0.5, 0.0]])
    np.testing.assert_allclose(gradc.jit(lambda a, b: gs.logsumexp(a, axis=1, b=b))(a, b),
                               sp.logsumexp(a, axis=1, b=b), rtol=1e-15)
    g = gradc.grad(lambda b: gs.logsumexp(a, axis=1, b=b).sum())(b)
    s = np.array([np.exp(1.0) + 2 * np.exp(2.0)])
    np.testing.assert_allclose(g[0], [np.exp(1.0) / s[0], np.exp(0.3) / s[0], 0, 0,
                                      np.exp(2.0) / s[0]], rtol=1e-14)
    a[0, 1] = 800.0  # (exp(800 - 2) overflows: capped, the value untouched)
    big = gradc.grad(lambda b: gs.logsumexp(a, axis=1, b=b).sum())(b)
    assert np.all(np.isfinite(big)) and big[0, 1] > 1e100
