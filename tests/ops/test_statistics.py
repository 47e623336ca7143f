"""Reductions, statistics, scans and sorting (gradc/functions/statistics.py, gradc/ops/scan.py)
against NumPy, through the public API.

- A wide sweep over NumPy's argument space (ranks 0-3, every axis form, keepdims, ddof, dtypes,
  keyword and positional spellings, methods) traces each call and runs the graph in the NumPy
  reference interpreter (no compile): values, shapes and dtypes equal NumPy's, and where NumPy
  refuses the arguments, gradc raises a GradcError.
- A representative subset is compiled end to end in ONE program (gradc.jit of a function that
  returns a dict), float32, float64, integers, ties and NaNs.
- Gradients of every differentiable function in ONE value_and_grad (one argument per function)
  against central differences of NumPy; zeros in np.prod / np.cumprod; grad of grad for var,
  prod and cumprod.
"""
from __future__ import annotations

import itertools
import warnings
import zlib

import numpy as np
import pytest

import gradc
from _finite_differences import central_difference
from gradc import autodiff, pytree
from gradc.interpret import evaluate
from gradc.trace import trace


def _rng(name):
    return np.random.default_rng(zlib.crc32(name.encode()))


def _interpret(f, *args):
    """f traced and its graph run by the NumPy reference interpreter."""
    graph, tree, _ = trace(f, list(args))
    return pytree.unflatten(tree, evaluate(graph, list(args)))


def _assert_same(got, want, what, rtol=1e-5, atol=1e-6):
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want), what
        for g, w in zip(got, want):
            _assert_same(g, w, what, rtol, atol)
        return
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, NumPy {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, NumPy {want.dtype}"
    if np.issubdtype(want.dtype, np.floating):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True, err_msg=what)
    else:
        np.testing.assert_array_equal(got, want, err_msg=what)


# ---------------------------------------------------------------------------------------------
# the sweep, in the reference interpreter

def _inputs():
    """Arrays of ranks 0-3 and several dtypes (float ones without ties, so arg-extrema and sorts
    are unambiguous; the tie semantics have tests of their own)."""
    r = _rng("inputs")
    return {
        "f64_0d": np.float64(0.7),
        "f32_1d": r.standard_normal(5).astype(np.float32),
        "f64_2d": r.standard_normal((3, 4)),
        "f32_3d": r.standard_normal((2, 3, 4)).astype(np.float32),
        "i32_2d": r.integers(-4, 5, (3, 4)).astype(np.int32),
        "i64_1d": r.integers(-9, 9, 6),
        "bool_2d": r.random((3, 4)) < 0.5,
    }


def _axes(ndim, tuples=True):
    """Every axis form NumPy takes for an array of `ndim` dimensions."""
    forms = [None] + list(range(ndim)) + list(range(-ndim, 0))
    if tuples and ndim >= 2:
        forms += [(0, ndim - 1), (-1, 0)] + ([tuple(range(ndim))] if ndim == 3 else [])
    if tuples:
        forms += [()]
    return forms


def _calls(x):
    """(label, function of x) for the sweep: every function over the axis forms of x."""
    nd = x.ndim
    out = []
    for axis, keep in itertools.product(_axes(nd), (False, True)):
        kw = dict(axis=axis, keepdims=keep)
        out += [
            (f"var{kw}", lambda x, kw=kw: np.var(x, **kw)),
            (f"var ddof=1 {kw}", lambda x, kw=kw: np.var(x, ddof=1, **kw)),
            (f"std{kw}", lambda x, kw=kw: np.std(x, **kw)),
            (f"std correction=1 {kw}", lambda x, kw=kw: np.std(x, correction=1, **kw)),
            (f"var mean= {kw}", lambda x, kw=kw: np.var(x, mean=np.mean(
                x, axis=kw["axis"], keepdims=True), **kw)),
            (f"average{kw}", lambda x, kw=kw: np.average(x, **kw)),
            (f"average returned {kw}", lambda x, kw=kw: np.average(x, returned=True, **kw)),
            (f"ptp{kw}", lambda x, kw=kw: np.ptp(x, **kw)),
            (f"prod{kw}", lambda x, kw=kw: np.prod(x, **kw)),
            (f"count_nonzero{kw}", lambda x, kw=kw: np.count_nonzero(x, **kw)),
            (f"nansum{kw}", lambda x, kw=kw: np.nansum(x, **kw)),
            (f"nanmean{kw}", lambda x, kw=kw: np.nanmean(x, **kw)),
            (f"median{kw}", lambda x, kw=kw: np.median(x, **kw)),
            (f"quantile{kw}", lambda x, kw=kw: np.quantile(x, [0.0, 0.3, 0.5, 1.0], **kw)),
            (f"percentile{kw}", lambda x, kw=kw: np.percentile(x, 70, **kw)),
        ]
    for axis in _axes(nd, tuples=False):
        out += [
            (f"cumsum axis={axis}", lambda x, a=axis: np.cumsum(x, axis=a)),
            (f"cumprod axis={axis}", lambda x, a=axis: np.cumprod(x, a)),
            (f"sort axis={axis}", lambda x, a=axis: np.sort(x, axis=a)),
            (f"argsort axis={axis}", lambda x, a=axis: np.argsort(x, a, kind="stable")),
        ]
        for keep in (False, True):
            out += [(f"argmax axis={axis} keepdims={keep}",
                     lambda x, a=axis, k=keep: np.argmax(x, axis=a, keepdims=k)),
                    (f"argmin axis={axis} keepdims={keep}",
                     lambda x, a=axis, k=keep: np.argmin(x, a, keepdims=k))]
        if axis is not None:
            out += [(f"diff axis={axis}", lambda x, a=axis: np.diff(x, axis=a)),
                    (f"diff n=2 axis={axis}", lambda x, a=axis: np.diff(x, 2, a)),
                    (f"diff prepend append axis={axis}", lambda x, a=axis: np.diff(
                        x, axis=a, prepend=0, append=np.ones_like(np.take(x, [0], axis=a))))]
    ords = [None, 1, 2, -1, -2, np.inf, -np.inf, 0, 3, 0.5, "fro", "nuc"]
    for ord_, keep in itertools.product(ords, (False, True)):
        out.append((f"norm ord={ord_} keepdims={keep}",
                    lambda x, o=ord_, k=keep: np.linalg.norm(x, o, keepdims=k)))
        for axis in _axes(nd, tuples=False)[1:]:
            out.append((f"norm ord={ord_} axis={axis} keepdims={keep}",
                        lambda x, o=ord_, a=axis, k=keep: np.linalg.norm(x, o, a, k)))
        if nd >= 2:
            for axes in [(0, 1), (-1, 0), (nd - 2, nd - 1)]:
                out.append((f"norm ord={ord_} axis={axes} keepdims={keep}",
                            lambda x, o=ord_, a=axes, k=keep: np.linalg.norm(
                                x, ord=o, axis=a, keepdims=k)))
    if nd >= 2:
        traces = [(0, 0, 1), (1, 0, 1), (-1, 0, 1), (2, -1, 0), (-5, 0, 1), (9, 0, 1)]
        for offset, a1, a2 in traces + ([(1, 1, 2), (0, 2, 0)] if nd == 3 else []):
            out.append((f"trace offset={offset} axes={a1},{a2}",
                        lambda x, o=offset, a1=a1, a2=a2: np.trace(x, o, a1, a2)))
    return out


REFUSED = ()  # what gradc refuses on purpose (messages), where NumPy computes


def _sweep(x):
    failures = []
    for label, f in _calls(x):
        what = f"{label} of {x.dtype}{list(np.shape(x))}"
        try:
            want = f(x)
        except (TypeError, ValueError, IndexError) as refused:  # (AxisError is both)
            try:
                _interpret(f, x)
            except gradc.GradcError:
                continue
            failures.append(f"{what}: NumPy raised {refused!r}, gradc did not")
            continue
        try:
            got = _interpret(f, x)
            _assert_same(got, want, what)
        except gradc.UnsupportedOpError as e:
            if not any(words in str(e) for words in REFUSED):
                failures.append(f"{what}: {str(e)[:300]}")
        except (AssertionError, gradc.GradcError) as e:
            failures.append(f"{what}: {str(e)[:300]}")
    return failures


@pytest.mark.parametrize("name", list(_inputs()))
def test_sweep_against_numpy(name):
    x = _inputs()[name]
    with np.errstate(all="ignore"), _quiet():
        failures = _sweep(x)
    assert not failures, f"{len(failures)} calls differ:\n" + "\n".join(failures[:25])


class _quiet:
    """NumPy's RuntimeWarnings (ddof >= count, a mean of nothing) are NumPy's business here."""

    def __enter__(self):
        import warnings
        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._catch.__exit__(*exc)


SPELLINGS = [  # the same call spelled as NumPy allows: (label, gradc-traced, NumPy) pairs agree
    ("var positional", lambda x: np.var(x, 1, None, None, 1, True)),
    ("var method", lambda x: x.var(1, ddof=1, keepdims=True)),
    ("std method", lambda x: x.std(axis=(0, 1))),
    ("var dtype", lambda x: np.var(x, axis=0, dtype=np.float32)),
    ("prod method", lambda x: x.prod(axis=-1, keepdims=True, initial=2.0)),
    ("prod dtype", lambda x: np.prod(x, 0, np.float32)),
    ("cumsum method", lambda x: x.cumsum(0)),
    ("cumsum dtype", lambda x: np.cumsum(x, axis=1, dtype=np.float32)),
    ("cumprod method", lambda x: x.cumprod()),
    ("argmax method", lambda x: x.argmax(axis=1, keepdims=True)),
    ("argmin method", lambda x: x.argmin()),
    ("argsort method", lambda x: x.argsort(axis=0, kind="stable")),
    ("trace method", lambda x: x.trace(1)),
    ("trace dtype", lambda x: np.trace(x, dtype=np.float32)),
    ("average weights axis", lambda x: np.average(x, axis=1, weights=np.arange(1.0, 5.0))),
    ("average weights tuple", lambda x: np.average(x, (1, 0), np.arange(12.0).reshape(4, 3),
                                                   True)),
    ("average weights full", lambda x: np.average(x, weights=np.abs(x) + 1.0, returned=True,
                                                  keepdims=True)),
    ("median keyword", lambda x: np.median(a=x, axis=-1, keepdims=True)),
    ("quantile 2-d q", lambda x: np.quantile(x, np.array([[0.1, 0.9], [0.25, 0.75]]), axis=0)),
    ("percentile keyword", lambda x: np.percentile(x, q=[5, 95], axis=None, keepdims=True)),
    ("sort kind", lambda x: np.sort(x, kind="mergesort", axis=0)),
    ("sort stable", lambda x: np.sort(x, stable=True)),
    ("norm keyword", lambda x: np.linalg.norm(x=x, ord=np.inf, axis=(1, 0), keepdims=True)),
    ("diff keyword", lambda x: np.diff(a=x, n=3, axis=0, prepend=x[:1] * 2.0)),
    ("diff n=0", lambda x: np.diff(x, 0)),
    ("diff too far", lambda x: np.diff(x, 5, axis=0)),
    ("nansum dtype initial", lambda x: np.nansum(x, axis=0, dtype=np.float32, initial=1.0)),
    ("count_nonzero keyword", lambda x: np.count_nonzero(a=x > 0, axis=(0, 1), keepdims=True)),
    ("ptp keyword", lambda x: np.ptp(a=x, axis=-1, keepdims=True)),
]


def test_spellings_against_numpy():
    x = _rng("spellings").standard_normal((3, 4))
    for label, f in SPELLINGS:
        _assert_same(_interpret(f, x), f(x), label)


def test_nan_handling_against_numpy():
    x = _rng("nan").standard_normal((3, 5))
    x[0, 1] = x[2, 4] = x[2, 0] = np.nan
    calls = [lambda x: np.nansum(x, axis=1), lambda x: np.nanmean(x, axis=0),
             lambda x: np.nanmean(x), lambda x: np.median(x, axis=1),
             lambda x: np.quantile(x, [0.2, 0.8], axis=-1), lambda x: np.argmax(x, axis=1),
             lambda x: np.argmin(x, axis=None), lambda x: np.sort(x, axis=1),
             lambda x: np.argsort(x, axis=0, kind="stable"), lambda x: np.var(x, axis=1),
             lambda x: np.cumsum(x, axis=1), lambda x: np.ptp(x, axis=0)]
    with _quiet():
        for i, f in enumerate(calls):
            _assert_same(_interpret(f, x), f(x), f"NaN call {i}")


# ---------------------------------------------------------------------------------------------
# errors: what NumPy refuses, or gradc does not support, is a GradcError naming what to do

ERRORS = [
    (lambda x: x.sort(), gradc.UnsupportedOpError, "np.sort"),
    (lambda x: x.ptp(), gradc.UnsupportedOpError, "np.ptp"),
    (lambda x: np.linalg.norm(x, "fro", axis=1), gradc.ArgumentError, "vectors"),
    (lambda x: np.linalg.norm(x, 3, axis=(0, 1)), gradc.ArgumentError, "matrices"),
    (lambda x: np.linalg.norm(x, axis=(1, 1)), gradc.ArgumentError, "duplicate"),
    (lambda x: np.linalg.norm(x[None], 1), gradc.ShapeError, "dimensions"),
    (lambda x: np.quantile(x, 1.5), gradc.ArgumentError, "range"),
    (lambda x: np.percentile(x, -1), gradc.ArgumentError, "range"),
    (lambda x: np.quantile(x, x[0, 0]), gradc.UnsupportedOpError, "static"),
    (lambda x: np.quantile(x, 0.5, method="nearestest"), gradc.ArgumentError, "hazen"),
    (lambda x: np.quantile(x[:, :0], 0.5, axis=1), gradc.IndexOutOfRangeError, "empty slice"),
    (lambda x: np.sort(x, order="a"), gradc.UnsupportedOpError, "structured"),
    (lambda x: np.sort(x, kind="bogo"), gradc.ArgumentError, "kind"),
    (lambda x: np.argmax(x[:, :0], axis=1), gradc.ShapeError, "empty"),
    (lambda x: np.argmin(x, axis=2), gradc.ShapeError, "out of bounds"),
    (lambda x: np.cumsum(x, axis=-3), gradc.ShapeError, "out of bounds"),
    (lambda x: np.trace(x[0]), gradc.ShapeError, "two dimensions"),
    (lambda x: np.trace(x, axis1=1, axis2=-1), gradc.ArgumentError, "same"),
    (lambda x: np.diff(x, -1), gradc.ArgumentError, "non-negative"),
    (lambda x: np.diff(x[0, 0]), gradc.ShapeError, "one dimensional"),
    (lambda x: np.var(x, ddof=1, correction=1), gradc.ArgumentError, "simultaneously"),
    (lambda x: np.var(x, axis=0, mean=np.mean(x, axis=0)), gradc.ShapeError, "keepdims"),
    (lambda x: np.var(x, out=x), gradc.ShapeError, r"the output has shape \(3, 4\), the result \(\)"),
    (lambda x: np.cumsum(x, axis=1, out=x), gradc.UnsupportedOpError,
     r"np.cumsum\(out=...\) stores its result into out, and x\[...\] = v on x: it is an argument"),
    (lambda x: np.average(x, weights=np.ones(4)), gradc.ArgumentError, "axis"),
    (lambda x: np.average(x, axis=1, weights=np.ones(3)), gradc.ShapeError, "weights"),
    (lambda x: np.average(x, axis=1, weights=np.array([1.0, -1.0, 0.0, 0.0])),
     gradc.ArgumentError, "zero"),
    (lambda x: np.ptp(x > 0), gradc.ArgumentError, "booleans"),
]


def test_errors_name_what_to_do():
    x = np.ones((3, 4))
    for i, (f, error, words) in enumerate(ERRORS):
        with pytest.raises(error, match=words):
            gradc.jit(f)(x)


# ---------------------------------------------------------------------------------------------
# compiled end to end: one program

def _forward(x3, x2, i2, ties):
    """A representative subset in one compiled program (each family, each new kernel: scans
    forward and reversed, with and without coefficients, argsort): float32 (x3), float64 (x2),
    int32, ties and NaNs. The sweep above checks the rest in the interpreter."""
    return {
        "var": np.var(x3, axis=(0, 2), ddof=1), "std": x2.std(axis=-1, keepdims=True),
        "prod": np.prod(x3, axis=(0, 1)), "prod_int": i2.prod(axis=0),
        "norm": np.linalg.norm(x3, axis=-1), "trace": np.trace(x3, 1, 1, 2),
        "diff": np.diff(x2, 2, axis=0, prepend=0.5), "cumsum": np.cumsum(x3, axis=1),
        "cumsum_int": np.cumsum(i2), "cumprod": np.cumprod(x2, axis=0),
        "argmax_ties": np.argmax(ties, axis=1), "argmin": np.argmin(x3, axis=0),
        "sort": np.sort(x3, axis=1), "sort_ties": np.sort(ties, axis=None),
        "argsort_ties": np.argsort(ties, axis=0, kind="stable"),
        "median": np.median(x2, axis=1), "quantile": np.quantile(ties, [0.2, 1.0], axis=1),
    }


TIES = np.array([[3.0, 1.0, np.nan, 1.0, 3.0],
                 [2.0, 2.0, 2.0, -1.0, 2.0],
                 [0.0, -np.inf, 5.0, 0.0, 5.0],
                 [1.0, 1.0, 1.0, 1.0, 1.0]])


@pytest.fixture(scope="module")
def forward_args():
    r = _rng("forward")
    return (r.standard_normal((2, 3, 4)).astype(np.float32), r.standard_normal((3, 4)),
            r.integers(-3, 4, (3, 4)).astype(np.int32), TIES.copy())


def test_compiled_forward_against_numpy(forward_args):
    got = gradc.jit(_forward)(*forward_args)
    with _quiet():
        want = _forward(*forward_args)
    assert sorted(got) == sorted(want)
    for k in want:
        _assert_same(got[k], want[k], k, rtol=2e-5, atol=2e-6)


def test_tie_semantics():
    """First occurrence for argmax/argmin, equal keys in their order for argsort, NaNs last."""
    want = {"argmax_ties": [2, 0, 2, 0], "argmin_ties": [2, 2, 0, 1, 3],
            "argsort_ties": [[1, 3, 0, 4, 2], [3, 0, 1, 2, 4], [1, 0, 3, 2, 4], [0, 1, 2, 3, 4]]}
    got = _interpret(lambda t: {"argmax_ties": np.argmax(t, axis=1),
                                "argmin_ties": np.argmin(t, axis=0),
                                "argsort_ties": np.argsort(t, axis=1)}, TIES)
    for k, w in want.items():
        np.testing.assert_array_equal(got[k], w, err_msg=k)


# ---------------------------------------------------------------------------------------------
# gradients: one value_and_grad, one argument per function, against central differences

def _zeros_in(shape, where):
    def make(r):
        x = r.uniform(0.5, 1.5, shape) * r.choice([-1.0, 1.0], shape)
        for idx in where:
            x[idx] = 0.0
        return x
    return make


def _normal(*shape):
    return lambda r: r.standard_normal(shape)


def _spread(*shape):
    """Values at least 0.1 apart (sorts, medians, extrema: no kinks within the differences)."""
    def make(r):
        n = int(np.prod(shape))
        return (r.permutation(n) * 0.25 + r.uniform(0, 0.1, n) - n * 0.1).reshape(shape)
    return make


_W = np.array([0.5, 1.0, 2.0])
GRADIENTS = {  # name: (function of one float64 array, generator)
    "var_axes_ddof": (lambda x: np.var(x, axis=(0, 2), ddof=1, keepdims=True), _normal(2, 3, 4)),
    "var_mean_keyword": (lambda x: np.var(x, axis=1, mean=np.mean(x, axis=1, keepdims=True)),
                         _normal(3, 4)),
    "std_last": (lambda x: np.std(x, axis=-1), _normal(3, 4)),
    "std_all_ddof": (lambda x: x.std(ddof=1), _normal(3, 4)),
    "average_weighted": (lambda x: np.average(x[:, :3], axis=1, weights=_W, returned=True)[0],
                         _normal(3, 4)),
    "average_traced_weights": (lambda x: np.average(x[0], weights=np.exp(x[1])), _normal(2, 5)),
    "average_tuple": (lambda x: np.average(x, axis=(-1, 0)), _normal(2, 3, 4)),
    "ptp": (lambda x: np.ptp(x, axis=0), _spread(3, 4)),
    "prod_zeros": (lambda x: np.prod(x, axis=(0, 2)),
                   _zeros_in((2, 3, 4), [(0, 1, 2), (1, 1, 0), (1, 2, 3)])),
    "prod_all_keepdims": (lambda x: np.prod(x, keepdims=True), _zeros_in((2, 3), [(1, 1)])),
    "prod_no_zero": (lambda x: x.prod(axis=1), _zeros_in((3, 4), [])),
    "cumsum_axis0": (lambda x: np.cumsum(x, axis=0), _normal(3, 4)),
    "cumsum_flat": (lambda x: np.cumsum(x), _normal(2, 3)),
    "cumprod_zeros": (lambda x: np.cumprod(x, axis=1), _zeros_in((3, 4), [(0, 1), (2, 0),
                                                                          (2, 2)])),
    "cumprod_axis0": (lambda x: np.cumprod(x, axis=-3), _zeros_in((2, 2, 3), [(1, 0, 1)])),
    "norm2_axis": (lambda x: np.linalg.norm(x, axis=-1), _normal(3, 4)),
    "norm_all": (lambda x: np.linalg.norm(x, keepdims=True), _normal(2, 3, 4)),
    "norm1": (lambda x: np.linalg.norm(x, 1, axis=0), _normal(3, 4)),
    "norm_inf": (lambda x: np.linalg.norm(x, np.inf, axis=1), _spread(3, 4)),
    "norm_p3": (lambda x: np.linalg.norm(x, 3, axis=1), _normal(3, 4)),
    "norm_fro": (lambda x: np.linalg.norm(x, "fro", axis=(2, 0)), _normal(2, 3, 4)),
    "norm_matrix1": (lambda x: np.linalg.norm(x, 1), _spread(3, 4)),
    "norm_matrix_ninf": (lambda x: np.linalg.norm(x, -np.inf, axis=(0, 1)), _spread(3, 4)),
    "norm_matrix2": (lambda x: np.linalg.norm(x, 2, axis=(2, 0)), _normal(2, 3, 4)),
    "norm_nuc": (lambda x: np.linalg.norm(x, "nuc"), _normal(3, 4)),
    "norm_matrix_n2": (lambda x: np.linalg.norm(x, -2), _normal(4, 3)),
    "trace": (lambda x: np.trace(x, 1, 1, 2), _normal(2, 3, 4)),
    "trace_negative": (lambda x: x.trace(-1), _normal(3, 4)),
    "diff": (lambda x: np.diff(x, 2, axis=0, prepend=x[:1] * 3.0, append=1.0), _normal(3, 4)),
    "ediff1d": (lambda x: np.ediff1d(x, to_begin=x[0] * 2.0, to_end=[1.0, -2.0]), _normal(3, 4)),
    "sort_axis0": (lambda x: np.sort(x, axis=0), _spread(3, 4)),
    "sort_flat": (lambda x: np.sort(x, axis=None), _spread(2, 3)),
    "median": (lambda x: np.median(x, axis=1), _spread(3, 4)),
    "quantile": (lambda x: np.quantile(x, [0.25, 0.7], axis=(0, 2)), _spread(2, 3, 4)),
    "percentile": (lambda x: np.percentile(x, 40, axis=-1, keepdims=True), _spread(3, 5)),
    "nansum": (lambda x: np.nansum(np.where(np.array([1, 0, 1, 1]) > 0, x, np.nan), axis=0),
               _normal(3, 4)),
    "nanmean": (lambda x: np.nanmean(np.where(x > 1.0, np.nan, x), axis=1), _spread(3, 4)),
}


def _numerical_grad(f, x, eps=1e-6):
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[idx] += eps
        minus[idx] -= eps
        g[idx] = (f(plus) - f(minus)) / (2 * eps)
    return g


def _interpret_grad(loss, args, argnums):
    """(value, gradients of the arguments in argnums) of loss(*args), by autodiff of the traced
    graph run in the reference interpreter; pytree arguments give their leaves' gradients in
    flattened order."""
    graph, _, (out,) = trace(loss, list(args))
    counts = [len(pytree.flatten(a)[0]) for a in args]
    starts = np.cumsum([0] + counts)
    wrt = [v for i in argnums for v in graph.inputs[starts[i]:starts[i + 1]]]
    graph.outputs = [out] + autodiff.vjp(graph, out, wrt)
    value, *grads = evaluate(graph, pytree.flatten(list(args))[0])
    return value, grads


def _gradient_case(names):
    xs = {k: GRADIENTS[k][1](_rng(k)) for k in names}
    rs = {k: _rng("r" + k).standard_normal(np.shape(GRADIENTS[k][0](xs[k]))) for k in names}

    def loss(xs, rs):
        return sum(np.sum(GRADIENTS[k][0](xs[k]) * rs[k]) for k in sorted(xs))

    def check(grads):
        failures = []
        for k in names:
            f = GRADIENTS[k][0]
            want = _numerical_grad(lambda x: np.sum(f(x) * rs[k]), xs[k])
            if not np.allclose(grads[k], want, rtol=1e-5, atol=1e-6):
                failures.append(f"{k}: gradc {grads[k].ravel()[:6]}, differences "
                                f"{want.ravel()[:6]}")
        assert not failures, "\n".join(failures)
    return xs, rs, loss, check


def test_gradients_against_central_differences():
    """Every entry of GRADIENTS, by the reference interpreter (no compile)."""
    names = sorted(GRADIENTS)
    xs, rs, loss, check = _gradient_case(names)
    value, grads = _interpret_grad(loss, (xs, rs), argnums=(0,))
    np.testing.assert_allclose(value, loss(xs, rs), rtol=1e-12)
    check(dict(zip(names, grads)))


COMPILED_GRADIENTS = ["var_axes_ddof", "prod_zeros", "cumsum_axis0", "sort_axis0", "median"]


def test_compiled_gradients():
    """A representative subset compiled (float64, against central differences), with float32
    gradients and exact special points in the same program: float32 stays float32; at a zero of
    np.prod the gradient is the product of the other factors (not 0/0); the 2-norm's gradient
    at 0 is 0 (as JAX's), not NaN; each tied element of a sort gets the cotangent of its own
    place."""
    xs, rs, loss64, check = _gradient_case(COMPILED_GRADIENTS)

    def special(x, z, ties):
        return (np.sum(np.cumprod(x, axis=1) * 0.5) + np.sum(np.var(x, axis=0))
                + np.linalg.norm(z) + np.sum(np.linalg.norm(z, axis=0))
                + np.sum(np.prod(x, axis=1)) + np.sum(np.sort(ties) * np.arange(1.0, 6.0)))

    def loss(xs, rs, x, z, ties):
        return loss64(xs, rs) + special(x, z, ties)

    x = np.array([[2.0, 0.0, 3.0], [0.0, 0.0, 5.0]], np.float32)
    z = np.zeros((2, 3), np.float32)
    ties = np.array([2.0, 1.0, 2.0, 1.0, 0.0], np.float32)
    value, (g64, gx, gz, gt) = gradc.value_and_grad(loss, argnums=(0, 2, 3, 4), copy=True)(
        xs, rs, x, z, ties)
    np.testing.assert_allclose(value, loss64(xs, rs) + special(x, z, ties), rtol=1e-6)
    check(g64)
    assert gx.dtype == gz.dtype == gt.dtype == np.float32
    cumprod_part = np.array([[0.5, 0.5 * (2 + 2 * 3), 0.0], [0.5, 0.0, 0.0]])
    var_part = x - x.mean(axis=0)  # (2 / n) (x - mean), n = 2
    prod_part = np.array([[0.0, 2 * 3, 0.0], [0.0, 0.0, 0.0]])  # two zeros in row 1: all 0
    np.testing.assert_allclose(gx, cumprod_part + var_part + prod_part, rtol=1e-6)
    np.testing.assert_array_equal(gz, np.zeros((2, 3)))
    np.testing.assert_array_equal(gt, [4.0, 2.0, 5.0, 3.0, 1.0])  # stable: ties keep their order


def _hvp_f(a, b, c):
    return (np.sum(np.var(a, axis=1, ddof=1) ** 2) + np.sum(np.prod(b, axis=0) * _W)
            + np.sum(np.cumprod(c, axis=1) ** 2))


def _hvp(a, b, c, va, vb, vc):
    grads = gradc.grad(_hvp_f, argnums=(0, 1, 2))(a, b, c)
    return sum(np.sum(g * v) for g, v in zip(grads, (va, vb, vc)))


def test_grad_of_grad_var_prod_cumprod():
    """Hessian-vector products through the scan's VJP (itself scans) and var, compiled, against
    central differences of the gradient (by the interpreter); zeros among the factors."""
    r = _rng("hvp")
    a = r.standard_normal((3, 4))
    b = _zeros_in((4, 3), [(1, 0), (2, 0), (3, 1)])(r)
    c = _zeros_in((2, 4), [(0, 2)])(r)
    vs = [r.standard_normal(v.shape) for v in (a, b, c)]
    hvp = gradc.grad(_hvp, argnums=(0, 1, 2), copy=True)(a, b, c, *vs)
    eps = 1e-5
    plus = _interpret_grad(_hvp_f, [x + eps * v for x, v in zip((a, b, c), vs)], (0, 1, 2))[1]
    minus = _interpret_grad(_hvp_f, [x - eps * v for x, v in zip((a, b, c), vs)], (0, 1, 2))[1]
    for got, p, m, name in zip(hvp, plus, minus, ("var", "prod", "cumprod")):
        np.testing.assert_allclose(got, (p - m) / (2 * eps), rtol=1e-5, atol=1e-7, err_msg=name)


def test_long_float32_sums_are_as_close_as_numpys():
    """A float32 sum over a million equal elements (the worst case: every add rounds the same
    way) ran a float32 total per vector lane: 1e-5 to 4e-5 off (NumPy's pairwise sum: 1e-7).
    Long sums now add float32 blocks of 1024 in float64: over the whole array, along rows, and
    with a strided read beside it; the mean and a float32 result dtype as NumPy's."""
    x = np.full((4, 1 << 18), 0.1, np.float32)

    def sums(x):
        return x.sum(), x.sum(axis=1), x.reshape(-1, 2)[:, 0].sum() + x.mean()

    got = gradc.jit(sums)(x)
    want = sums(x.astype(np.float64))
    for g, w in zip(got, want):
        assert np.asarray(g).dtype == np.float32
        np.testing.assert_allclose(np.asarray(g, np.float64), w, rtol=2e-6)
    # in ulps, as close as NumPy's pairwise sum (blocks of 8192 elements were 10x farther off),
    # on equal elements and on random ones
    rng = np.random.default_rng(0)
    for data in (x, np.full(1_000_003, 0.1, np.float32), rng.random(1 << 20, np.float32)):
        exact = np.sum(data.astype(np.float64))
        ulp = float(np.spacing(np.float32(exact)))
        ours = abs(float(gradc.jit(np.sum)(data)) - exact) / ulp
        numpys = abs(float(np.sum(data)) - exact) / ulp
        assert ours <= numpys + 0.5, (data.size, ours, numpys)


def test_long_float64_sums_add_compensated_blocks():
    """A float64 sum kept one running total per vector lane: a million 0.1s 239 ulps off, ten
    million 3000 (NumPy's pairwise sum: 2 and 0). Blocks of SUM_BLOCK elements, their totals
    added with Neumaier's compensation: within 40 ulps, and alternating signs as close as
    NumPy's (in units of eps * sum |x|)."""
    import math
    total = gradc.jit(lambda x: np.sum(x))
    x = np.full(1 << 20, 0.1)
    exact = math.fsum(x)
    assert abs(float(total(x)) - exact) <= 40 * np.spacing(exact)
    rng = np.random.default_rng(0)
    y = rng.standard_normal(1 << 20) * np.where(np.arange(1 << 20) % 2, 1.0, -1.0)
    scale = np.finfo(np.float64).eps * np.abs(y).sum()
    assert abs(float(total(y)) - math.fsum(y)) <= max(2 * abs(float(np.sum(y)) - math.fsum(y)),
                                                      0.01 * scale)


def test_long_sums_of_an_infinity_or_an_overflow_are_infinite_as_numpys():
    """The compensated long sum's rounding errors of an infinite total are NaN (inf - inf): a
    sum of >= 4096 elements holding an inf, or of float64 terms that overflow, came out NaN
    where NumPy's is inf (shorter sums were right)."""
    f = gradc.jit(lambda x: (np.sum(x), np.sum(x.reshape(4, -1), axis=1), np.mean(x)))
    for dtype in (np.float32, np.float64):
        for n in (4096, 1 << 17):
            x = np.ones(n, dtype)
            x[5] = -np.inf
            x[-1] = 3.0
            for got, want in zip(f(x), (np.sum(x), np.sum(x.reshape(4, -1), axis=1), np.mean(x))):
                np.testing.assert_array_equal(got, want)
    big = np.full(4096, 1e305)
    with np.errstate(over="ignore"):
        assert f(big)[0] == np.sum(big) == np.inf


def test_scans_take_a_0d_array_as_one_element():
    """np.cumsum and its kin treat a 0-d array as shape (1,), axis 0 or -1 too (refused as
    out of bounds before), and the gradient flows back to the scalar."""
    a = np.array(2.0)
    for scan in (np.cumsum, np.cumprod, np.nancumsum, np.nancumprod, np.cumulative_sum,
                 np.cumulative_prod):
        for axis in (0, -1, None):
            got = gradc.jit(lambda a: scan(a, axis=axis))(a)
            want = scan(a, axis=axis)
            assert got.shape == want.shape == (1,) and got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)
        assert float(gradc.grad(lambda a: scan(3.0 * a, axis=0).sum())(a)) == 3.0


QUANTILE_METHODS = ["inverted_cdf", "averaged_inverted_cdf", "closest_observation",
                    "interpolated_inverted_cdf", "hazen", "weibull", "linear", "median_unbiased",
                    "normal_unbiased", "lower", "higher", "midpoint", "nearest"]


def test_every_quantile_method_as_numpy():
    """NumPy's 13 methods of np.quantile/np.percentile (only 'linear' before): values, dtype (a
    discrete method keeps an integer input's) and shape, for every sample size from 1 to 7 and
    q at and between the elements, infinities at the ends; gradients against finite
    differences."""
    qs = np.linspace(0.0, 1.0, 29)

    def every(x):
        return [np.quantile(x, qs, axis=1, method=m) for m in QUANTILE_METHODS] + [
            np.percentile(x, 30, axis=0, method=m, keepdims=True) for m in QUANTILE_METHODS]

    f = gradc.jit(every)
    rng = np.random.default_rng(5)
    for n in range(1, 8):
        for x in ((rng.standard_normal((3, n)) * 10).round(1),
                  rng.integers(-9, 9, (3, n)),
                  np.array([[-np.inf] + [1.0] * (n - 1), [2.0] * (n - 1) + [np.inf],
                            list(range(n))])):
            with np.errstate(invalid="ignore"):  # (NumPy's inf - inf between equal ends)
                wants = every(x)
            for got, want in zip(f(x), wants):
                assert got.dtype == want.dtype and got.shape == want.shape
                np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-14)
    x = rng.standard_normal((4, 6))
    weights = np.arange(1.0, 4.0)[:, None]
    for method in ("hazen", "midpoint", "nearest", "averaged_inverted_cdf"):
        def loss(x):
            return np.sum(np.quantile(x, [0.1, 0.5, 0.77], axis=1, method=method) * weights)
        np.testing.assert_allclose(gradc.grad(loss)(x), central_difference(loss, x), atol=1e-7)


def test_quantiles_of_float32_data_with_float64_q_are_numpys_bits():
    """float32 data and float64 q: NumPy takes the elements' difference in float32, then goes
    on in float64; computed in float64 throughout, gradc's was 3e-8 off (fuzz41a)."""
    x = np.random.default_rng(4).standard_normal((3, 10)).astype(np.float32)
    f = lambda x: (np.quantile(x, [0.1, 0.37, 0.9], axis=1), np.percentile(x, np.float64(33)),
                   np.quantile(x, np.array([0.25, 0.75]), axis=0, method="hazen"))
    for got, want in zip(gradc.jit(f)(x), f(x)):
        assert got.dtype == want.dtype == np.float64
        np.testing.assert_array_equal(got, want)


def test_var_std_and_prod_take_where_as_numpy():
    """where= on np.var, np.std (with ddof, keepdims, a given mean's absence, a selection of
    no element: NaN) and np.prod (refused before), a mask from NumPy, broadcast, or traced;
    gradients against finite differences."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 4, 5))
    mask = rng.random(x.shape) > 0.4
    mask[0, 0], mask[1, 1] = False, [True, False, False, False, False]

    def every(x):
        return [getattr(np, name)(x, axis=axis, keepdims=keep, where=mask, **ddof)
                for name in ("var", "std", "prod") for axis in (None, 1, (0, 2))
                for keep in (False, True)
                for ddof in ([{}] if name == "prod" else [{"ddof": 0}, {"ddof": 1}])] + [
            np.var(x, axis=2, where=np.array([True, False, True, True, False])),
            np.std(x, axis=1, where=x > 0), np.prod(x, axis=0, where=x < 1)]

    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # (NumPy's "Degrees of freedom <= 0")
        wants = every(x)
    for got, want in zip(gradc.jit(every)(x), wants):
        assert np.shape(got) == np.shape(want)
        np.testing.assert_allclose(got, want, rtol=1e-12)
    select = mask.copy()
    select[:, :2] = True  # (two elements at least in each lane over axis 1)
    for name in ("var", "std", "prod"):
        def loss(x):
            return np.sum(getattr(np, name)(x, axis=1, where=select) ** 2)
        np.testing.assert_allclose(gradc.grad(loss)(x), central_difference(loss, x), atol=1e-6)


def test_norms_at_zero_and_of_empty_arrays_and_squared_roots():
    """What a fuzzing round against JAX found: the gradient of a p < 1 norm at the zero vector
    was NaN (README: 0); NumPy's max-type norms of empty arrays are 0 (gradc refused them); and
    a norm, std or |x| squared has the Hessian of the sum of squares (with the roots' gradient
    at 0 set to 0 by convention, norm(x) ** 2 had the Hessian 0 at x = 0, not 2I)."""
    zero = np.zeros(3)
    for ord_ in (0.5, 0.25):
        np.testing.assert_array_equal(gradc.grad(lambda x: np.linalg.norm(x, ord_))(zero), zero)
    np.testing.assert_allclose(gradc.grad(lambda x: np.linalg.norm(x, 0.5))(np.array([1.0, 4.0])),
                               [3 / 1.0 ** 0.5, 3 / 4.0 ** 0.5], rtol=1e-12)
    for shape, ord_ in (((0,), np.inf), ((0, 3), np.inf), ((3, 0), 1), ((0, 3), 2)):
        assert gradc.jit(lambda x: np.linalg.norm(x, ord_))(np.zeros(shape)) == 0.0
    np.testing.assert_array_equal(
        gradc.jit(lambda x: np.linalg.norm(x, np.inf, axis=1))(np.zeros((2, 0))), np.zeros(2))
    eye = np.eye(3)
    for f in (lambda x: np.linalg.norm(x) ** 2, lambda x: np.square(np.linalg.norm(x[None], "fro")),
              lambda x: np.sum(np.abs(x) ** 2), lambda x: (lambda n: n * n)(np.linalg.norm(x)),
              lambda x: np.sum(np.hypot(x, 0 * x) ** 2)):
        np.testing.assert_allclose(gradc.hessian(f)(zero), 2 * eye, atol=1e-15)
    np.testing.assert_allclose(gradc.hessian(lambda x: np.std(x) ** 2)(np.ones(3)),
                               (2 / 3) * (eye - 1 / 3), atol=1e-15)
    rbf = lambda x, y: np.exp(-0.5 * np.linalg.norm(x - y) ** 2)  # noqa: E731
    np.testing.assert_allclose(gradc.jacobian(gradc.grad(rbf), argnums=1)(zero, zero), eye,
                               atol=1e-15)


def test_nanmedian_nanquantile_nanpercentile_as_numpy():
    """np.nanmedian / nanquantile / nanpercentile (refused before): each lane's median or
    quantile of its numbers alone, NaN for a lane of NaNs; ranks, axes, keepdims, q of any
    shape, float32/float64/int data, ties. The reference interpreter over the argument space,
    one compiled program bit for bit, and gradients as JAX's (0 at the NaNs)."""
    rng = _rng("nanmedian")
    with _quiet():
        for trial in range(60):
            shape = tuple(int(d) for d in rng.integers(1, 5, size=rng.integers(1, 4)))
            dtype = (np.float64, np.float32, np.int64)[trial % 3]
            x = (rng.standard_normal(shape) * 3).astype(dtype)
            if dtype != np.int64:
                x[rng.random(shape) < 0.35] = np.nan
                if trial % 5 == 0:
                    x = np.round(x)  # (ties)
            axis = (None, 0, -1, (0, len(shape) - 1))[trial % 4]
            if isinstance(axis, tuple) and len(set(a % len(shape) for a in axis)) < 2:
                axis = None
            keepdims = bool(trial % 2)
            q = (0.5, [0.1, 0.9], 0.0, 1.0, np.array([[0.25, 0.3]]))[trial % 5]
            calls = {"nanmedian": lambda x: np.nanmedian(x, axis=axis, keepdims=keepdims),
                     "nanquantile": lambda x: np.nanquantile(x, q, axis=axis, keepdims=keepdims),
                     "nanpercentile": lambda x: np.nanpercentile(x, percents, axis=axis,
                                                                 keepdims=keepdims)}
            # (a Python float: NumPy's dtype for np.float64(q) beside float32 data depends on
            # whether a NaN is there: float32 if so, float64 if not. gradc's is the latter)
            percents = q * 100 if isinstance(q, float) else np.multiply(q, 100)
            for name, f in calls.items():
                want = f(x)
                got = _interpret(f, x)
                what = f"{name} of {dtype.__name__}{shape} axis={axis} q={q}"
                assert np.shape(got) == np.shape(want) and got.dtype == want.dtype, what
                np.testing.assert_array_equal(got, want, err_msg=what)
        x = np.array([[1.0, np.nan, 3.0, 2.5], [np.nan] * 4, [4.0, 1.0, 2.0, 3.0]])
        both = gradc.jit(lambda x: (np.nanmedian(x, axis=1), np.nanquantile(x, [0.0, 0.4, 1.0], 1),
                                    np.nanpercentile(x.astype(np.float32), 40, axis=0)))
        for got, want in zip(both(x), (np.nanmedian(x, axis=1), np.nanquantile(x, [0, 0.4, 1], 1),
                                       np.nanpercentile(x.astype(np.float32), 40, axis=0))):
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)
        g = gradc.grad(lambda x: np.nansum(np.nanmedian(x, axis=1))
                       + np.nansum(np.nanquantile(x, 0.4, axis=1)))(x)
    np.testing.assert_allclose(g, [[0.2, 0, 0, 1.8], [0, 0, 0, 0], [0, 0, 1.3, 0.7]], atol=1e-12)
    with pytest.raises(gradc.UnsupportedOpError, match="linear"):
        gradc.jit(lambda x: np.nanquantile(x, 0.5, method="nearest"))(x)


def test_a_median_of_an_empty_slice_is_nan_as_numpys():
    """np.median (nanmedian, nanquantile) of lanes with no element is NaN in NumPy, with a
    RuntimeWarning; gradc refused it with a ShapeError, which a user's `except ValueError`
    fallback then caught: a silent other answer (fuzz42d)."""
    x = np.arange(6.0).reshape(2, 3)
    calls = [lambda x: np.median(x[:, :0], axis=1), lambda x: np.median(x[:, :0]),
             lambda x: np.median(x[:, :0].astype(np.float32), axis=1, keepdims=True),
             lambda x: np.nanmedian(x[:, :0], axis=1),
             lambda x: np.nanquantile(x[:, :0], [0.5, 0.7], axis=1),  # (NumPy's: no q axis)
             lambda x: np.median(x[:0], axis=1)]
    for f in calls:
        with pytest.warns(RuntimeWarning) if f(x).size else _quiet():
            got = gradc.jit(f)(x)
        with _quiet():
            want = f(x)
        assert np.shape(got) == np.shape(want) and np.asarray(got).dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_interp_with_a_period_as_numpy():
    """np.interp(period=...) (angles, periodic splines) was refused by name (fuzz42b): x and
    xp brought into [0, period), xp sorted, its knots repeated a period below and above."""
    xp, fp = np.array([190.0, -190, 350, -350]), np.array([5.0, 10, 3, 4])
    x = np.array([-180.0, -170, -185, 185, -10, -5, 0, 365])

    def f(x, fp):
        return np.interp(x, xp, fp, period=360), np.interp(x, xp, fp, period=-360.0)

    for got, want in zip(gradc.jit(f)(x, fp), f(x, fp)):
        np.testing.assert_array_equal(got, want)
    loss = lambda fp: np.sum(np.interp(x, xp, fp, period=360) ** 2)
    np.testing.assert_allclose(gradc.grad(loss)(fp), [31.25, 23.75, 16.25, 10.75], rtol=1e-12)
    with pytest.raises(ValueError, match="non-zero"):
        gradc.jit(lambda x: np.interp(x, xp, fp, period=0))(x)


def test_lexsort_is_numpys():
    """np.lexsort over keys with ties, NaNs (last), booleans and integers, as a tuple or as an
    array's rows, along either axis, of 0-d keys; a gather by it differentiates; keys of two
    shapes are NumPy's error."""
    rng = np.random.default_rng(4)
    a = rng.integers(0, 3, (4, 7)).astype(np.float64)
    a[1, 2] = a[3, 5] = np.nan
    b, c = rng.integers(-2, 2, (4, 7)), rng.standard_normal((4, 7)) > 0
    calls = {
        "two keys": lambda a, b, c: np.lexsort((b, a)),
        "three keys, axis 0": lambda a, b, c: np.lexsort((c, b, a), axis=0),
        "an array's rows": lambda a, b, c: np.lexsort(a),
        "stacked, axis 1": lambda a, b, c: np.lexsort(np.stack([a, b]), axis=1),
        "0-d keys": lambda a, b, c: np.lexsort((a[0, 0], b[0, 0])),
        "one key": lambda a, b, c: np.lexsort((b[2],)),
    }
    for what, call in calls.items():
        got, want = gradc.jit(call)(a, b, c), call(a, b, c)
        assert got.dtype == want.dtype and np.shape(got) == np.shape(want), what
        np.testing.assert_array_equal(got, want, err_msg=what)
    x = rng.standard_normal(7)

    def ranked(x, b, c):
        return np.sum(x[np.lexsort((b[0], c[0]))] * np.arange(7.0))

    grad = gradc.grad(ranked)(x, b, c)
    np.testing.assert_allclose(grad, central_difference(lambda x: ranked(x, b, c), x), rtol=1e-7)
    with pytest.raises(gradc.ArgumentError, match="same shape"):
        gradc.jit(lambda a, b: np.lexsort((a, b[:, :3])))(a, b)
    with pytest.raises(gradc.ArgumentError, match="sequence of keys"):  # (NumPy's TypeError)
        gradc.jit(lambda k: np.lexsort(k))(np.array(3.0))
