"""Every op, through the public API, on plain NumPy user code.

For each case in CASES:
- the compiled forward (`gradc.jit`) on float32 inputs equals an independent NumPy reference,
  with NumPy's output shape and dtype;
- `gradc.value_and_grad` of `sum(f(x) * r)` (r a fixed random cotangent) on float64 inputs gives
  the reference value (tight) and gradients equal to central finite differences of the reference;
- no call mutates its inputs.
A subset also runs its gradient in float32. Then: semantics the table cannot pin (ties, scatter
accumulation, index checks), numerical stability at +-1000, Hessian-vector products (grad of grad,
through the VJPs of VJP ops), and loops big enough to take the parallel path.

`test_every_op_is_covered` fails when an op is registered without a case here.
"""
from __future__ import annotations

import warnings
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
import scipy.linalg
import scipy.special as sp

import gradc
import gradc.scipy
import gradc.scipy.linalg as gsl
from gradc import autodiff
from gradc.ops import all_ops
from gradc.passes import AFTER_AUTODIFF, BEFORE_AUTODIFF, run_passes
from gradc.passes.fuse import fuse
from gradc.trace import trace

# ---------------------------------------------------------------------------------------------
# input generators: each takes a numpy Generator and returns one array (float64 or int64)


def normal(*shape):
    return lambda rng: rng.standard_normal(shape)


def positive(*shape, lo=0.5, hi=2.0):
    return lambda rng: rng.uniform(lo, hi, shape)


def away(*shape, margin=0.2):
    """Normal-ish values at least `margin` away from 0 (kinks of abs, relu, sign, 1/x)."""
    def gen(rng):
        return rng.choice([-1.0, 1.0], shape) * rng.uniform(margin, 1.5, shape)
    return gen


def away_from(points, *shape, margin=0.05, lo=-1.5, hi=1.5):
    """Uniform values at least `margin` away from each of `points` (kinks of clip)."""
    def gen(rng):
        x = rng.uniform(lo, hi, shape)
        for p in points:
            near = np.abs(x - p) < margin
            x = np.where(near, p + np.sign(x - p + 1e-12) * margin * 2, x)
        return x
    return gen


def quotient_apart(*shape):
    """(x, y) with x / y at least 0.1 away from an integer (jumps of // and %), mixed signs."""
    def gen(rng):
        y = rng.choice([-1.0, 1.0], shape) * rng.uniform(0.5, 2.0, shape)
        q = rng.integers(-3, 3, shape) + rng.uniform(0.1, 0.9, shape)
        return [q * y, y]
    return gen


def ints(high, *shape):
    return lambda rng: rng.integers(0, high, shape).astype(np.int64)


def generator_state(seed, counter):
    """A gradc.random generator state, [seed, counter] (int64)."""
    return lambda rng: np.array([seed, counter], np.int64)


def pair_apart(*shape, margin=0.1):
    """Two arrays whose elements differ by at least `margin` (kinks of maximum/minimum)."""
    def gen(rng):
        x = rng.standard_normal(shape)
        y = x + rng.choice([-1.0, 1.0], shape) * rng.uniform(margin, 1.0, shape)
        return [x, y]
    return gen


def pair_tied(*shape):
    """Two arrays equal in about half of their elements (for ==, <=, ...)."""
    def gen(rng):
        x = rng.standard_normal(shape)
        y = np.where(rng.random(shape) < 0.5, x, rng.standard_normal(shape))
        return [x, y]
    return gen


@dataclass
class Case:
    name: str
    fn: Callable  # plain NumPy user code, traced by gradc
    args: list | Callable  # list of generators, or one generator returning the list
    ref: Callable | None = None  # independent NumPy reference; default: fn on NumPy arrays
    grad: bool = True  # is the output differentiable (float) w.r.t. the float arguments?
    fd_eps: float = 1e-6
    grad_rtol: float = 1e-5
    grad_atol: float = 1e-6

    def make_args(self, dtype=np.float64):
        rng = np.random.default_rng(zlib.crc32(self.name.encode()))
        if callable(self.args):
            arrays = self.args(rng)
        else:
            arrays = [gen(rng) for gen in self.args]
        return [a.astype(dtype) if np.issubdtype(a.dtype, np.floating) else a for a in arrays]

    def reference(self, *args):
        return (self.ref or self.fn)(*args)

    def argnums(self, args):
        return tuple(i for i, a in enumerate(args) if np.issubdtype(a.dtype, np.floating))


nn = gradc.nn
# where the nan-functions' cases put NaNs (two numbers or more in every row), and the knots and
# coordinates of np.interp's and np.gradient's
_NAN_AT = np.array([[False, True, False, False, True], [True, False, False, False, False],
                    [False, False, True, True, False]])
_KNOTS = np.array([-1.0, 0.0, 0.5, 1.25])
_COORDS = np.array([0.0, 0.5, 1.5, 2.0, 3.0, 4.5, 5.0])
# two different constants of one shape and dtype, too big to print in full
_CONST_A = np.arange(12.0).reshape(3, 4)
_CONST_B = np.linspace(-1.0, 1.0, 12).reshape(3, 4)


def _windows_ref(x, kh, kw, stride, padding, pad):
    """Independent sliding windows: x[N,C,H,W] -> [N,C,OH,OW,KH,KW]."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)),
                constant_values=pad)
    oh, ow = (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1
    out = np.empty((n, c, oh, ow, kh, kw), x.dtype)
    for a in range(oh):
        for b in range(ow):
            out[:, :, a, b] = xp[:, :, a * stride:a * stride + kh, b * stride:b * stride + kw]
    return out


def conv2d_ref(x, w, b=None, stride=1, padding=0):
    win = _windows_ref(x, w.shape[2], w.shape[3], stride, padding, 0.0)
    out = np.einsum("ncabij,ocij->noab", win, w)
    return out if b is None else out + b[None, :, None, None]


def pool_ref(x, k, stride, padding, reduce):
    pad = -np.inf if reduce is np.max else 0.0
    return reduce(_windows_ref(x, k, k, stride or k, padding, pad), axis=(4, 5))


def layer_norm_ref(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


def linalg_args(rng):
    """(a, s, b): a well-conditioned matrix, a batch of two SPD ones, right-hand sides."""
    a = rng.standard_normal((3, 3)) + 3 * np.eye(3)
    x = rng.standard_normal((2, 3, 3))
    s = x @ np.swapaxes(x, -1, -2) + 3 * np.eye(3)
    return [a, s, rng.standard_normal((3, 2))]


def masks(*shape):
    return lambda rng: rng.random(shape) < 0.7


CASES = [
    # --- arithmetic with broadcasting and Python scalars --------------------------------------
    Case("add_broadcast", lambda x, y: x + y, [normal(3, 4), normal(4)]),
    Case("add_scalar", lambda x: x + 2.5, [normal(3, 4)]),
    Case("subtract_outer_broadcast", lambda x, y: x - y, [normal(3, 1), normal(1, 4)]),
    Case("rsubtract_scalar", lambda x: 1.0 - x, [normal(3, 4)]),
    Case("multiply_broadcast_3d", lambda x, y: x * y, [normal(2, 3, 4), normal(3, 1)]),
    Case("multiply_same", lambda x, y: np.multiply(x, y), [normal(3, 4), normal(3, 4)]),
    Case("divide", lambda x, y: x / y, [normal(3, 4), away(3, 4)]),
    Case("rdivide_scalar", lambda x: 2.0 / x, [away(3, 4)]),
    Case("power", lambda x, y: x ** y, [positive(3, 4), normal(3, 4)]),
    Case("power_int_exponent", lambda x: x ** 3, [normal(3, 4)]),
    Case("power_half", lambda x: np.power(x, 0.5), [positive(3, 4)]),
    Case("rpower", lambda x: 2.0 ** x, [normal(3, 4)]),
    Case("power_zero_exponent", lambda x: x ** 0 * x + np.power(x, 0.0), [normal(3, 4)]),
    Case("negative", lambda x: -x, [normal(3, 4)]),
    Case("floor_divide", lambda x, y: x // y, quotient_apart(3, 4)),
    Case("floor_divide_int", lambda i, j: i // j,
         lambda rng: [rng.integers(-9, 9, (3, 4)), rng.choice([-3, -2, 2, 5], (3, 4))], grad=False),
    Case("remainder", lambda x, y: x % y, quotient_apart(3, 4)),
    Case("remainder_scalar", lambda x: np.remainder(x, 0.75) * x, [away_from(
        [-1.5, -0.75, 0.0, 0.75, 1.5], 3, 4)]),
    Case("mod_int", lambda i: np.mod(i, 3) + i // 4, [lambda rng: rng.integers(-9, 9, (3, 4))],
         grad=False),
    # NumPy's operators on integers are bitwise (on booleans logical: x & y of masks)
    Case("bitwise_int", lambda i, j: (i & j) + (i | 6) - (3 ^ j) + ~i + np.invert(j.astype(np.int32)),
         lambda rng: [rng.integers(-9, 9, (3, 4)), rng.integers(-9, 9, (4,))], grad=False),
    Case("bitwise_bool", lambda x: (x > 0) & ~(x > 1) | (x < -1) ^ np.logical_not(x > 0.5),
         [normal(3, 4)],
         grad=False),
    Case("bitwise_mixed", lambda x, i: np.bitwise_and(x > 0, i) * x,
         [normal(3, 4), lambda rng: rng.integers(0, 4, (3, 4))]),
    # (every count, tests/test_shifts.py)
    Case("shifts", lambda i, j: (i << j) + np.right_shift(i, j) + (i >> 1) + (3 << j),
         lambda rng: [rng.integers(-9, 9, (3, 4)), rng.integers(-2, 70, (4,))], grad=False),
    Case("round_whole", lambda x: np.round(x) * x + np.around(x * 3.0) + x.round(),
         [away_from([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5], 3, 4)]),
    Case("round_decimals", lambda x: np.round(x * 100.0, 1) + np.around(x, 2) * x
         + np.round(x * 1000.0, -2), [normal(3, 4)], grad=False),  # (steps every 0.001)
    # (past float64's range NumPy's 10**d is inf: NaN; gradc raised Python's OverflowError)
    Case("round_far_decimals", lambda x: np.round(x, 400) + np.round(x, -309) + np.round(x, 308),
         [normal(3, 4)], grad=False),
    Case("logaddexp_reduce", lambda x: np.logaddexp.reduce(x, axis=1)[:, None]
         + np.logaddexp2.reduce(x, axis=0, keepdims=True) + np.logaddexp.reduce(x, axis=None),
         [normal(3, 4)]),
    Case("running_max_min", lambda x: np.maximum.accumulate(x, axis=1)
         + np.minimum.accumulate(x) * 2.0 + np.fmax.accumulate(x[:, ::-1], axis=-1)
         + np.fmin.accumulate(x, axis=0), [normal(3, 7)]),
    Case("conj_methods", lambda x: x.conj() * x.conjugate() + np.conj(x), [normal(3, 4)]),
    Case("floor", lambda x: np.floor(x) * x, [away_from([-2, -1, 0, 1, 2], 3, 4)]),
    Case("ceil", lambda x: np.ceil(x), [away_from([-2, -1, 0, 1, 2], 3, 4)]),
    Case("maximum", lambda x, y: np.maximum(x, y), pair_apart(3, 4)),
    Case("minimum", lambda x, y: np.minimum(x, y), pair_apart(3, 4)),
    Case("maximum_scalar", lambda x: np.maximum(x, 0.25), [away_from([0.25], 3, 4)]),
    Case("fmax", lambda x, y: np.fmax(x, y), pair_apart(3, 4)),
    Case("fmin", lambda x, y: np.fmin(x, y), pair_apart(3, 4)),
    Case("square", lambda x: np.square(x), [normal(3, 4)]),
    Case("reciprocal", lambda x: np.reciprocal(x), [away(3, 4)]),
    Case("abs", lambda x: np.abs(x), [away(3, 4)]),
    Case("abs_operator", lambda x: abs(x) * x, [away(3, 4)]),
    Case("sign", lambda x: np.sign(x), [away(3, 4)]),
    Case("sign_times", lambda x: np.sign(x) * x ** 2, [away(3, 4)]),
    # --- transcendental -------------------------------------------------------------------
    Case("exp", lambda x: np.exp(x), [normal(3, 4)]),
    Case("log", lambda x: np.log(x), [positive(3, 4)]),
    Case("tanh", lambda x: np.tanh(x), [normal(3, 4)]),
    Case("sin", lambda x: np.sin(x), [normal(3, 4)]),
    Case("cos", lambda x: np.cos(x), [normal(3, 4)]),
    Case("sqrt", lambda x: np.sqrt(x), [positive(3, 4)]),
    Case("log1p", lambda x: np.log1p(x), [positive(3, 4, lo=-0.5, hi=2.0)]),
    Case("expm1", lambda x: np.expm1(x), [normal(3, 4)]),
    Case("arctan", lambda x: np.arctan(x), [normal(3, 4)]),
    # --- scipy.special ufuncs (gradc/ops/special.py) ------------------------------------------
    Case("erf", lambda x: sp.erf(x), [normal(3, 4)]),
    Case("erfc", lambda x: sp.erfc(x), [normal(3, 4)]),
    Case("erfcx", lambda x: sp.erfcx(x), [normal(3, 4)]),
    Case("erfinv", lambda x: sp.erfinv(x), [positive(3, 4, lo=-0.9, hi=0.9)]),
    Case("ndtr", lambda x: sp.ndtr(x), [normal(3, 4)]),
    Case("ndtri", lambda p: sp.ndtri(p), [positive(3, 4, lo=0.05, hi=0.95)]),
    Case("log_ndtr", lambda x: sp.log_ndtr(x), [normal(3, 4)]),
    Case("gammaln", lambda x: sp.gammaln(x), [positive(3, 4, lo=0.2, hi=4.0)]),
    Case("digamma", lambda x: sp.digamma(x), [positive(3, 4, lo=0.2, hi=4.0)]),
    Case("polygamma", lambda x: gradc.scipy.special.polygamma(2, x), [positive(3, 4)],
         ref=lambda x: sp.polygamma(2, x)),
    Case("logit", lambda p: sp.logit(p), [positive(3, 4, lo=0.05, hi=0.95)]),
    Case("xlogy", lambda x, y: sp.xlogy(x, y), [normal(3, 4), positive(4)]),
    Case("xlog1py", lambda x, y: sp.xlog1py(x, y), [normal(3, 4), positive(3, 1, lo=-0.5, hi=2.0)]),
    # (gradc/ops/math.py; special values, dtypes and weak scalars: tests/ops/test_ufuncs_extra.py)
    Case("tan", lambda x: np.tan(x), [positive(3, 4, lo=-1.2, hi=1.2)]),
    Case("sinh", lambda x: np.sinh(x), [normal(3, 4)]),
    Case("cosh", lambda x: np.cosh(x), [normal(3, 4)]),
    Case("arcsin", lambda x: np.arcsin(x), [positive(3, 4, lo=-0.9, hi=0.9)]),
    Case("arccos", lambda x: np.arccos(x), [positive(3, 4, lo=-0.9, hi=0.9)]),
    Case("arctan2_broadcast", lambda y, x: np.arctan2(y, x), [normal(3, 4), away(4)]),
    Case("arcsinh", lambda x: np.arcsinh(x), [normal(3, 4)]),
    Case("arccosh", lambda x: np.arccosh(x), [positive(3, 4, lo=1.2, hi=3.0)]),
    Case("arctanh", lambda x: np.arctanh(x), [positive(3, 4, lo=-0.8, hi=0.8)]),
    Case("hypot_broadcast", lambda x, y: np.hypot(x, y), [normal(3, 1), away(4)]),
    Case("log2", lambda x: np.log2(x), [positive(3, 4)]),
    Case("log10", lambda x: np.log10(x), [positive(3, 4)]),
    Case("exp2", lambda x: np.exp2(x), [normal(3, 4)]),
    Case("logaddexp", lambda x, y: np.logaddexp(x, y), [normal(3, 4), normal(3, 4)]),
    Case("logaddexp2_scalar", lambda x: np.logaddexp2(x, 0.5) * x, [normal(3, 4)]),
    Case("sinc", lambda x: np.sinc(x), [lambda rng: rng.uniform(-0.4, 0.4, (3, 4))
                                        + rng.choice([0.0, 1.0], (3, 4))]),
    Case("cbrt", lambda x: np.cbrt(x), [away(3, 4)]),
    Case("fabs", lambda x: np.fabs(x) * x, [away(3, 4)]),
    Case("deg2rad_radians", lambda x: np.deg2rad(x) + np.radians(x * 2.0), [normal(3, 4)]),
    Case("rad2deg_degrees", lambda x: np.rad2deg(x) - np.degrees(x * 0.5), [normal(3, 4)]),
    Case("float_power", lambda x, y: np.float_power(x, y), [positive(3, 4), normal(3, 4)]),
    Case("copysign", lambda x, y: np.copysign(x, y), [away(3, 4), away(3, 4)]),
    Case("heaviside", lambda i, h: np.heaviside(i, h), [lambda rng: rng.integers(-1, 2, (3, 4)),
                                                         normal(3, 4)]),
    Case("isnan", lambda x: np.isnan(x), [lambda rng: np.where(rng.random((3, 4)) < 0.3, np.nan,
                                                               rng.standard_normal((3, 4)))],
         grad=False),
    Case("isinf", lambda x: np.isinf(x), [lambda rng: rng.choice([np.inf, -np.inf, np.nan, 1.0],
                                                                 (3, 4))], grad=False),
    Case("isfinite", lambda x: np.isfinite(x), [lambda rng: rng.choice(
        [np.inf, -np.inf, np.nan, 1.0, -2.0], (3, 4))], grad=False),
    Case("signbit", lambda x: np.signbit(x), [lambda rng: rng.choice([-0.0, 0.0, -1.0, 2.0],
                                                                     (3, 4))], grad=False),
    Case("trunc", lambda x: np.trunc(x) * x, [away_from([-1, 0, 1], 3, 4)]),
    Case("rint", lambda x: np.rint(x) * x, [away_from([-1.5, -0.5, 0.5, 1.5], 3, 4)]),
    Case("fmod", lambda x, y: np.fmod(x, y), quotient_apart(3, 4)),
    Case("conjugate", lambda x: np.conj(x) * np.conjugate(x), [normal(3, 4)]),
    Case("nan_to_num", lambda x: np.nan_to_num(x * 2.0, nan=1.0), [normal(3, 4)]),
    Case("elementwise_chain", lambda x, w, b: np.tanh(x * w + b) ** 2 * nn.sigmoid(x * w)
         + 0.5 * np.exp(-np.abs(b)), [normal(3, 4), normal(3, 4), away(3, 4)],
         ref=lambda x, w, b: np.tanh(x * w + b) ** 2 * sp.expit(x * w) + 0.5 * np.exp(-np.abs(b))),
    # --- comparisons, logic, selection, casts ---------------------------------------------
    Case("less", lambda x, y: x < y, pair_tied(3, 4), grad=False),
    Case("less_equal", lambda x, y: x <= y, pair_tied(3, 4), grad=False),
    Case("greater", lambda x, y: np.greater(x, y), pair_tied(3, 4), grad=False),
    Case("greater_equal", lambda x, y: x >= y, pair_tied(3, 4), grad=False),
    Case("equal", lambda x, y: x == y, pair_tied(3, 4), grad=False),
    Case("not_equal", lambda x, y: x != y, pair_tied(3, 4), grad=False),
    Case("compare_scalar", lambda x: x > 0.0, [away(3, 4)], grad=False),
    Case("logical_and", lambda x, y: (x > 0) & (y > 0), [away(3, 4), away(3, 4)], grad=False),
    Case("logical_or", lambda x, y: np.logical_or(x > 0, y > 0), [away(3, 4), away(3, 4)],
         grad=False),
    Case("logical_not", lambda x: ~(x > 0), [away(3, 4)], grad=False),
    # NumPy 2's functions and a few more of NumPy's (gradc/functions/)
    Case("cumulative_sum", lambda x: np.cumulative_sum(x, axis=1, include_initial=True)
         + np.cumulative_prod(x, axis=1, include_initial=True), [normal(3, 4)]),
    Case("vecdot", lambda x, v: np.vecdot(x, v) + np.vecdot(x.T, x[:1].T, axis=0),
         [normal(3, 4), normal(4)]),
    Case("matvec_vecmat", lambda a, v, u: np.matvec(a, v) + np.vecmat(u, a[0].T)
         + np.matvec(a[:1], v[None, :]).sum(0), [normal(2, 3, 4), normal(4), normal(4)]),
    Case("matrix_transpose", lambda x: np.matrix_transpose(x) * np.empty_like(x.T, shape=(3,))
         ** 0, [normal(2, 3, 4)]),
    Case("meshgrid", lambda u, v: sum(np.meshgrid(u, v)) * np.meshgrid(u, v, indexing="ij",
                                                                      sparse=True)[0].T,
         [normal(4), normal(3)]),
    # a convolution as NumPy users write one: the windows, then a contraction
    Case("sliding_window_conv", lambda x, w: np.einsum(
        "nchwij,ocij->nohw", np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(2, 3)), w)
         + np.lib.stride_tricks.sliding_window_view(x[0, 0], 2, axis=1)[:3, :4].sum(),
         [normal(2, 2, 5, 6), normal(3, 2, 3, 3)]),
    Case("cov_corrcoef_trapezoid", lambda x, t: np.cov(x) + np.corrcoef(x, rowvar=False)[:3, :3]
         + np.cov(x[0], x[1], bias=True).sum() + np.trapezoid(x, np.sort(t)) + np.trapezoid(x, dx=0.5,
                                                                                   axis=0)[:3],
         [normal(3, 6), normal(6)]),
    Case("convolve_correlate", lambda a, v: np.convolve(a, v) + np.correlate(a, v, "full")
         + np.pad(np.convolve(v, a, "valid"), 2) + np.convolve(a, v, "same")[:5].sum()
         + np.correlate(v, a).sum(), [normal(7), normal(3)]),
    # the nan-functions over a fixed pattern of NaNs (two numbers at least in every row)
    Case("nan_reductions", lambda x: np.nanmax(np.where(_NAN_AT, np.nan, x), axis=1)
         + np.nanmin(np.where(_NAN_AT, np.nan, x), axis=1) + np.nanprod(np.where(_NAN_AT, np.nan, x), 1)
         + np.nanvar(np.where(_NAN_AT, np.nan, x), axis=1) + np.nanstd(np.where(_NAN_AT, np.nan, x), 1,
                                                                        ddof=1)
         + np.nancumsum(np.where(_NAN_AT, np.nan, x), axis=1)[:, -1]
         + np.nancumprod(np.where(_NAN_AT, np.nan, x), axis=1)[:, 2] + np.nanmax(x, axis=1, initial=1.7),
         [normal(3, 5)]),
    Case("interp_searchsorted_digitize", lambda x, fp: np.interp(x, _KNOTS, fp)
         + np.interp(x, _KNOTS, fp, left=-3.0) * 0.5 + np.searchsorted(_KNOTS, x) * 0.25
         + np.digitize(x, _KNOTS[::-1], right=True) * 0.125, [away_from(list(_KNOTS), 3, 4, lo=-2, hi=2),
                                                               normal(4)]),
    Case("gradient_polyval_vander", lambda x, p: np.gradient(x, 0.5) + np.gradient(x, _COORDS,
                                                                                 edge_order=2)
         + np.gradient(x, _COORDS) + np.polyval(p, x) + np.vander(x, 3)[:, 1] + np.polyval([2.0, 1], x),
         [normal(7), normal(3)]),
    Case("gradient_axes", lambda m: np.stack(np.gradient(m, 2.0, edge_order=2)) + np.gradient(m, axis=1),
         [normal(3, 4)]),
    Case("cond_matrix_rank", lambda a: np.linalg.cond(a) + np.linalg.cond(a, "fro")
         + np.linalg.cond(a, -2) + np.linalg.matrix_rank(a) + np.linalg.matrix_rank(a[:, :2] @ a[:2]),
         [normal(4, 4)], grad_rtol=1e-4),
    Case("resize_compress_extract", lambda x: np.resize(x, (2, 8))[1, :5]
         + np.compress([True, False, True, True, False], x, axis=1).ravel()[:5]
         + np.extract(_NAN_AT, x).sum() + np.diagflat(x[0, :2], 1)[0] @ np.ones(3)
         + np.broadcast_arrays(x[:1, :1], x[1])[0][0, :5].sum() + np.real(x)[0, :5] + x.imag[1, :5]
         + np.angle(x)[2, :5], [away(3, 5)], ref=lambda x: np.resize(x, (2, 8))[1, :5]
         + np.compress([True, False, True, True, False], x, axis=1).ravel()[:5]
         + np.extract(_NAN_AT, x).sum() + np.diagflat(x[0, :2], 1)[0] @ np.ones(3) + x[0, 0] * 5
         + x[0, :5] + np.angle(x)[2, :5]),
    Case("ufunc_methods", lambda x, v: np.add.accumulate(x) * np.multiply.accumulate(x, axis=1)
         + np.subtract.outer(x[:, 0], v[:4]) + np.maximum.reduce(x, axis=0)
         + np.multiply.outer(v[:3], np.ones(4)), [normal(3, 4), normal(5)]),
    Case("select", lambda x: np.select([x > 0.5, x < -0.5], [x ** 2, 2 * x], default=0.5),
         [away_from([-0.5, 0.5], 3, 4)]),
    Case("isclose_fix_xor", lambda x, y: np.isclose(x, y, rtol=0.1, atol=0.05) ^ np.logical_xor(
        x > 0, np.fix(y * 2) > 0) | np.allclose(x, x + 1e-9), [normal(3, 4), normal(3, 4)],
         grad=False),
    # reductions with NumPy's where= (elements left out) and initial= (one more element)
    Case("reductions_where", lambda x: np.sum(x, axis=1, where=x > 0, initial=0.5)
         + np.mean(x, axis=1, where=x < 0.5) + np.max(x, axis=1, where=x < 1.0, initial=-2.0)
         + x.min(axis=-1, initial=0.25) + np.add.reduce(x, axis=1)
         + np.sum(x, axis=1, where=np.array([True, False, True, True]))
         + np.any(x > 0.5, axis=1, where=x < 0) * 1.0 + np.all(x > -1, axis=1, where=x > 0)
         + np.mean(np.arange(12).reshape(3, 4), axis=1, where=x > -1.0),  # (ints: float)
         [away_from([-1.0, 0.0, 0.5, 1.0], 3, 4)]),
    Case("where", lambda x, y: np.where(x > 0, x * y, y), [away(3, 4), normal(3, 4)]),
    Case("where_scalar_branch", lambda x: np.where(x > 0, x, 0.0), [away(3, 4)]),
    Case("where_two_python_scalars", lambda x: np.where(x > 0, 1.0, -1.0) * x, [away(3, 4)]),
    Case("where_broadcast", lambda c, x, y: np.where(c > 0, x, y),
         [away(3, 1), normal(1, 4), normal(3, 4)]),
    Case("where_compare_tied", lambda x, y: np.where(x <= y, x * y, x - y), pair_apart(3, 4)),
    Case("where_logic", lambda x, y: np.where(np.logical_and(x > 0, ~(y > 0)), x, y * 2.0),
         [away(3, 4), away(3, 4)]),
    Case("clip", lambda x: np.clip(x, -0.5, 0.5), [away_from([-0.5, 0.5], 3, 4)]),
    Case("clip_method_lower", lambda x: x.clip(0.0) * x, [away(3, 4)]),
    Case("astype_bool_to_float", lambda x: (x > 0).astype(np.float64) * x, [away(3, 4)]),
    Case("astype_float_to_int", lambda x: (x * 3).astype(np.int64), [normal(3, 4)], grad=False),
    Case("astype_to_float32", lambda x: x.astype(np.float32) * 2, [normal(3, 4)],
         fd_eps=1e-2, grad_rtol=1e-4, grad_atol=1e-5),
    Case("array_constant", lambda x: x * np.array([1.0, -2.0, 3.0, 0.5]), [normal(3, 4)]),
    Case("two_big_array_constants", lambda x: x * _CONST_A + np.tanh(x) * _CONST_B,
         [normal(3, 4)]),
    # --- reductions -----------------------------------------------------------------------
    Case("sum_all", lambda x: np.sum(x), [normal(3, 4)]),
    Case("sum_axis0", lambda x: np.sum(x, axis=0), [normal(3, 4)]),
    Case("sum_axis1_keepdims", lambda x: x.sum(axis=1, keepdims=True), [normal(3, 4)]),
    Case("sum_axes_3d", lambda x: np.sum(x, axis=(0, 2)), [normal(2, 3, 4)]),
    Case("sum_int32", lambda i: np.sum(i, axis=0) * 3 + np.sum(i),
         [lambda rng: rng.integers(-5, 5, (3, 4)).astype(np.int32)], grad=False),
    Case("sum_of_product", lambda x, y: np.sum(x * y, axis=-1), [normal(3, 4), normal(4)]),
    Case("mean_last_axis", lambda x: np.mean(x, axis=-1), [normal(3, 4)]),
    Case("mean_all_keepdims", lambda x: np.mean(x, keepdims=True), [normal(3, 4)]),
    Case("mean_method_3d", lambda x: x.mean(axis=(1, 2)), [normal(2, 3, 4)]),
    Case("max_axis1", lambda x: np.max(x, axis=1), [normal(3, 4)]),
    Case("max_all", lambda x: x.max(), [normal(3, 4)]),
    Case("amax_axis0", lambda x: np.amax(x, axis=0), [normal(3, 4)]),
    Case("min_axis0_keepdims", lambda x: np.min(x, axis=0, keepdims=True), [normal(3, 4)]),
    Case("min_3d", lambda x: np.min(x, axis=(1, 2)), [normal(2, 3, 4)]),
    Case("max_of_chain", lambda x: np.max(np.tanh(x) * 2.0, axis=-1, keepdims=True) - x,
         [normal(3, 4)]),
    # --- scans and sorting (the rest of the family: tests/ops/test_statistics.py) ----------
    Case("cumprod_with_zeros", lambda x: np.cumprod(x, axis=1) + np.cumsum(x, axis=0),
         [lambda rng: np.where(rng.random((3, 4)) < 0.25, 0.0, rng.standard_normal((3, 4)))]),
    Case("sort_rows", lambda x: np.sort(x, axis=-1) * np.arange(4.0), [normal(3, 4)]),
    # --- shapes and movement --------------------------------------------------------------
    Case("reshape", lambda x: x.reshape(4, 3) * 2.0, [normal(3, 4)]),
    Case("reshape_infer", lambda x: np.reshape(x, (2, -1)), [normal(3, 4)]),
    Case("ravel", lambda x: np.ravel(np.tanh(x)), [normal(3, 4)]),
    Case("reshape_fortran_order", lambda x: x.reshape((2, 6), order="F") * 2.0, [normal(3, 4)]),
    Case("ravel_fortran_order", lambda x: np.ravel(np.tanh(x), order="F"), [normal(3, 4)]),
    Case("transpose_T", lambda x: x.T, [normal(3, 4)]),
    Case("transpose_axes", lambda x: np.transpose(x, (2, 0, 1)) * 3.0, [normal(2, 3, 4)]),
    Case("transpose_times", lambda x, y: x.T * y, [normal(3, 4), normal(4, 3)]),
    Case("swapaxes", lambda x: np.swapaxes(x, 0, 2), [normal(2, 3, 4)]),
    Case("moveaxis_several", lambda x: np.moveaxis(x, [0, 1], [-1, 0]), [normal(2, 3, 4)]),
    Case("expand_dims", lambda x, y: np.expand_dims(x, 1) * y, [normal(3, 4), normal(3, 2, 4)]),
    Case("squeeze_axis", lambda x: np.squeeze(x, axis=1) * 2.0, [normal(3, 1, 4)]),
    Case("squeeze_all", lambda x: x.squeeze(), [normal(1, 3, 1)]),
    Case("broadcast_to", lambda x: np.broadcast_to(x, (2, 3, 4)), [normal(3, 1)]),
    Case("broadcast_to_times", lambda x, y: np.broadcast_to(x, (3, 4)) * y,
         [normal(4), normal(3, 4)]),
    # --- slicing, concatenation -----------------------------------------------------------
    Case("slice_rows", lambda x: x[1:3], [normal(4, 5)]),
    Case("slice_steps", lambda x: x[::2, 1:] * 2.0, [normal(4, 5)]),
    Case("slice_negative_steps", lambda x: x[::-1, ::-2], [normal(4, 5)]),
    Case("slice_int_index", lambda x: x[:, 1], [normal(4, 5)]),
    Case("slice_none_ellipsis", lambda x: x[None, ..., 1:3], [normal(4, 5)]),
    Case("slice_overlapping", lambda x: np.tanh(x[1:, :]) * x[:-1, :], [normal(4, 5)]),
    Case("slice_3d", lambda x: x[1, :, 2:] + x[0, :, :2], [normal(2, 3, 4)]),
    Case("ufunc_out_where", lambda a, b: np.divide(a, b, out=np.ones_like(a), where=b > 0),
         [normal(3, 4), normal(3, 4)]),
    Case("set_slice_steps", lambda x, v: gradc.at(x)[1:, ::-2].set(np.tanh(v)),
         [normal(4, 5), normal(3, 3)]),
    Case("set_slice_add_int_index", lambda x, v: gradc.at(x * 2.0)[:, 1].add(v) * x,
         [normal(4, 5), normal(4)]),
    Case("concatenate_axis0", lambda x, y: np.concatenate([x, y], axis=0),
         [normal(2, 3), normal(3, 3)]),
    Case("concatenate_axis1", lambda x, y: np.concatenate([x, np.tanh(y), x], axis=1),
         [normal(2, 3), normal(2, 2)]),
    Case("concatenate_3d_middle", lambda x, y: np.concatenate((x, y), axis=1) * 2.0,
         [normal(2, 1, 3), normal(2, 2, 3)]),
    Case("concatenate_flattened", lambda x, y: np.concatenate([x, y], axis=None),
         [normal(2, 3), normal(4)]),
    Case("stack", lambda x, y: np.stack([x, y]), [normal(3, 4), normal(3, 4)]),
    Case("stack_last_axis", lambda x, y: np.stack([x, y * 2.0], axis=-1),
         [normal(3, 4), normal(3, 4)]),
    # --- integer-array indexing -----------------------------------------------------------
    Case("arange_labels_index", lambda x, lab: x[np.arange(x.shape[0]), lab],
         [normal(5, 4), ints(4, 5)]),
    Case("take_axis0_repeats", lambda w, idx: np.take(w, idx, axis=0),
         lambda rng: [rng.standard_normal((5, 3)), np.array([4, 0, 2, 2, 4, 1, 2])]),
    Case("take_2d_indices", lambda w, idx: np.take(w, idx, axis=0),
         [normal(5, 3), ints(5, 2, 3)]),
    Case("take_axis1_index", lambda x, idx: x[:, idx], [normal(3, 5), ints(5, 4)]),
    Case("take_negative_constant_indices", lambda w: np.take(w, np.array([-1, 0, -2, -1]), axis=0),
         [normal(5, 3)]),
    Case("take_python_int_index", lambda x: np.take(x, 1, axis=1) * 2.0, [normal(3, 4)]),
    Case("take_list_index", lambda w: w[[0, 2, 2]] * 2.0, [normal(4, 3)]),
    Case("take_wrap_and_clip", lambda w: np.take(w, [5, -7, 1], axis=0, mode="wrap")
         + np.take(w, [9, -1, 0], axis=0, mode="clip"), [normal(4, 3)]),
    Case("take_along_axis", lambda x, idx: np.take_along_axis(x, idx, axis=1),
         [normal(3, 5), ints(5, 3, 2)]),
    Case("take_along_axis0", lambda x, idx: np.take_along_axis(x, idx, axis=0),
         [normal(3, 5), ints(3, 4, 5)]),
    # --- matmul ---------------------------------------------------------------------------
    Case("matmul_1d_1d", lambda a, b: a @ b, [normal(4), normal(4)]),
    Case("matmul_2d_1d", lambda a, b: a @ b, [normal(3, 4), normal(4)]),
    Case("matmul_1d_2d", lambda a, b: a @ b, [normal(3), normal(3, 4)]),
    Case("matmul_2d_2d", lambda a, b: a @ b, [normal(3, 4), normal(4, 2)]),
    Case("matmul_batched_3d", lambda a, b: a @ b, [normal(2, 3, 4), normal(2, 4, 5)]),
    Case("matmul_3d_2d", lambda a, b: a @ b, [normal(2, 3, 4), normal(4, 5)]),
    Case("matmul_broadcast_batch", lambda a, b: np.matmul(a, b),
         [normal(2, 3, 4), normal(1, 4, 2)]),
    Case("matmul_transposed_operands", lambda a, b: a.T @ b.T, [normal(4, 3), normal(2, 4)]),
    Case("matmul_of_slice", lambda a, b: a[:, 1:] @ b, [normal(3, 5), normal(4, 2)]),
    Case("matmul_sum_of_products", lambda a, b, c: a @ b + c @ b.T + (a * 2) @ np.sin(b),  # addmm
         [normal(3, 4), normal(4, 4), normal(3, 4)]),
    Case("matmul_int", lambda i, j: i @ j, [ints(5, 3, 4), ints(5, 4, 2)], grad=False),
    Case("dot_2d", lambda a, b: np.dot(a, b), [normal(3, 4), normal(4, 2)]),
    Case("dot_constant_left", lambda w: np.dot(_CONST_A.T, w), [normal(3, 2)]),
    Case("dot_method_constant_right", lambda w: w.dot(_CONST_B), [normal(2, 3)]),
    Case("dot_2d_3d", lambda a, b: np.dot(a, b), [normal(2, 3), normal(2, 3, 4)]),
    Case("dot_3d_3d", lambda a, b: np.dot(a, b), [normal(2, 2, 3), normal(2, 3, 2)]),
    Case("dot_python_scalar", lambda a: np.dot(a, 2.5), [normal(3, 4)]),
    Case("matmul_constant_left", lambda w: _CONST_A @ w, [normal(4, 2)]),
    Case("outer", lambda a, b: np.outer(a, b), [normal(3), normal(4)]),
    Case("outer_flattens", lambda a, b: np.outer(a, b), [normal(2, 2), normal(3)]),
    Case("mlp", lambda x, w1, b1, w2, b2: np.tanh(x @ w1 + b1) @ w2 + b2,
         [normal(5, 3), normal(3, 4), normal(4), normal(4, 2), normal(2)]),
    # --- gradc.nn ---------------------------------------------------------------------------
    Case("nn_relu", lambda x: nn.relu(x), [away(3, 4)], ref=lambda x: np.maximum(x, 0)),
    Case("nn_sigmoid", lambda x: nn.sigmoid(x), [normal(3, 4)], ref=sp.expit),
    Case("nn_softplus", lambda x: nn.softplus(x), [normal(3, 4)],
         ref=lambda x: np.logaddexp(0, x)),
    Case("nn_log_sigmoid", lambda x: nn.log_sigmoid(x), [normal(3, 4)],
         ref=lambda x: -np.logaddexp(0, -x)),
    Case("nn_logsumexp", lambda x: nn.logsumexp(x), [normal(3, 4)],
         ref=lambda x: sp.logsumexp(x, axis=-1)),
    Case("nn_logsumexp_axis0_keepdims", lambda x: nn.logsumexp(x, axis=0, keepdims=True),
         [normal(3, 4)], ref=lambda x: sp.logsumexp(x, axis=0, keepdims=True)),
    Case("nn_logsumexp_all_3d", lambda x: nn.logsumexp(x, axis=(1, 2)), [normal(2, 3, 4)],
         ref=lambda x: sp.logsumexp(x, axis=(1, 2))),
    Case("nn_softmax", lambda x: nn.softmax(x), [normal(3, 4)],
         ref=lambda x: sp.softmax(x, axis=-1)),
    Case("nn_softmax_axis0", lambda x: nn.softmax(x, axis=0), [normal(3, 4)],
         ref=lambda x: sp.softmax(x, axis=0)),
    Case("nn_log_softmax", lambda x: nn.log_softmax(x, axis=1), [normal(3, 4)],
         ref=lambda x: sp.log_softmax(x, axis=1)),
    Case("nn_cross_entropy", lambda z, y: nn.cross_entropy(z, y), [normal(5, 4), ints(4, 5)],
         ref=lambda z, y: -np.mean(sp.log_softmax(z, axis=-1)[np.arange(len(y)), y])),
    Case("nn_mse", lambda p, t: nn.mse(p, t), [normal(3, 4), normal(3, 4)],
         ref=lambda p, t: np.mean((p - t) ** 2)),
    Case("nn_gelu", lambda x: nn.gelu(x), [normal(3, 4)],
         ref=lambda x: 0.5 * x * (1 + np.tanh(float(np.sqrt(2 / np.pi))
                                              * (x + 0.044715 * x ** 3)))),
    Case("nn_layer_norm", lambda x, g, b: nn.layer_norm(x, g, b),
         [normal(3, 5), normal(5), normal(5)],
         ref=layer_norm_ref),
    Case("nn_layer_norm_plain", lambda x: nn.layer_norm(x), [normal(2, 3, 4)],
         ref=lambda x: layer_norm_ref(x, 1.0, 0.0)),
    Case("nn_embedding", lambda t, i: nn.embedding(t, i), [normal(6, 3), ints(6, 2, 4)],
         ref=lambda t, i: t[i]),
    Case("nn_dropout", lambda x, m: nn.dropout(x, m, 0.25), [normal(3, 4), masks(3, 4)],
         ref=lambda x, m: x * m / 0.75),
    # --- gradc.random over an explicit state argument (a raw state is not advanced: the same
    # numbers every call); the reference is the generator run eagerly on a copy of the state
    Case("random_uniform", lambda x, s: x * gradc.random.Generator.from_state(s).uniform(
         -1.0, 2.0, x.shape), [normal(3, 4), generator_state(11, 3)],
         ref=lambda x, s: x * gradc.random.Generator.from_state(s.copy()).uniform(-1.0, 2.0, x.shape)),
    Case("random_normal_loc_scale", lambda mu, sigma, s: gradc.random.Generator.from_state(s).normal(
         mu, sigma), [normal(2, 3), positive(2, 3), generator_state(5, 0)],
         ref=lambda mu, sigma, s: gradc.random.Generator.from_state(s.copy()).normal(mu, sigma)),
    Case("nn_flatten", lambda x: nn.flatten(np.tanh(x)), [normal(2, 3, 2, 2)],
         ref=lambda x: np.tanh(x).reshape(2, 12)),
    Case("nn_conv2d", lambda x, w, b: nn.conv2d(x, w, b, padding=1),
         [normal(2, 3, 5, 5), normal(4, 3, 3, 3), normal(4)],
         ref=lambda x, w, b: conv2d_ref(x, w, b, padding=1)),
    Case("nn_conv2d_stride2", lambda x, w: nn.conv2d(x, w, stride=2),
         [normal(1, 2, 6, 6), normal(3, 2, 2, 2)], ref=lambda x, w: conv2d_ref(x, w, stride=2)),
    Case("nn_conv2d_rect_window_stride2_padded", lambda x, w: nn.conv2d(x, w, stride=2, padding=1),
         [normal(2, 2, 7, 6), normal(3, 2, 2, 3)],
         ref=lambda x, w: conv2d_ref(x, w, stride=2, padding=1)),
    Case("nn_conv2d_5x5_padding2", lambda x, w: nn.conv2d(x, w, padding=2),
         [normal(1, 1, 6, 5), normal(2, 1, 5, 5)], ref=lambda x, w: conv2d_ref(x, w, padding=2)),
    Case("nn_conv2d_wide_im2col", lambda x, w: nn.conv2d(x, w, padding=1),  # > DIRECT_MAX_TAPS
         [normal(1, 33, 3, 3), normal(2, 33, 3, 3)], ref=lambda x, w: conv2d_ref(x, w, padding=1)),
    Case("nn_max_pool2d", lambda x: nn.max_pool2d(x, 2), [normal(2, 2, 4, 4)],
         ref=lambda x: pool_ref(x, 2, None, 0, np.max)),
    Case("nn_max_pool2d_overlapping_padded", lambda x: nn.max_pool2d(x, 3, stride=2, padding=1),
         [normal(1, 2, 5, 5)], ref=lambda x: pool_ref(x, 3, 2, 1, np.max)),
    Case("nn_avg_pool2d", lambda x: nn.avg_pool2d(x, 2), [normal(2, 2, 4, 4)],
         ref=lambda x: pool_ref(x, 2, None, 0, np.mean)),
    Case("nn_avg_pool2d_padded", lambda x: nn.avg_pool2d(x, 3, stride=1, padding=1),
         [normal(1, 2, 4, 4)], ref=lambda x: pool_ref(x, 3, 1, 1, np.mean)),
    Case("nn_mlp_cross_entropy",
         lambda x, w1, b1, w2, y: nn.cross_entropy(nn.relu(x @ w1 + b1) @ w2, y),
         [normal(5, 3), normal(3, 4), normal(4), normal(4, 3), ints(3, 5)],
         ref=lambda x, w1, b1, w2, y: -np.mean(sp.log_softmax(
             np.maximum(x @ w1 + b1, 0) @ w2, axis=-1)[np.arange(len(y)), y])),
    # --- linear algebra (the wide sweep: tests/test_linalg.py) ----------------------------
    Case("linalg_solve_cholesky_slogdet", lambda a, s, b: np.linalg.solve(a, b)
         + gsl.solve_triangular(np.linalg.cholesky(s), b, lower=True, trans="T")
         * np.linalg.slogdet(s)[1][:, None, None], linalg_args,
         ref=lambda a, s, b: np.linalg.solve(a, b) + np.stack([scipy.linalg.solve_triangular(
             np.linalg.cholesky(si), b, lower=True, trans="T") for si in s])
         * np.linalg.slogdet(s)[1][:, None, None]),
    Case("linalg_eigh_svd_qr", lambda s, m: np.concatenate([
        np.linalg.eigvalsh(s).ravel(), (np.linalg.eigh(s)[1] ** 2).ravel(),
        np.linalg.svd(m, compute_uv=False).ravel(), np.linalg.qr(m)[0].ravel(),
        np.linalg.qr(m)[1].ravel()]), lambda rng: linalg_args(rng)[1:2] + [
            rng.standard_normal((4, 3))]),
    Case("linalg_full_svd_vectors", lambda m: np.abs(np.linalg.svd(m)[0]), [normal(4, 3)],
         grad=False),
]

CASE_IDS = [c.name for c in CASES]
assert len(set(CASE_IDS)) == len(CASE_IDS), "duplicate case names"
GRAD_CASES = [c for c in CASES if c.grad]

# ops that user code does not reach directly: the VJPs' scatters, and the copies/aliases that
# legalization and nested gradients insert
REACHED_ONLY_INDIRECTLY = {"take_grad", "take_along_axis_grad", "unslice", "unslice_sum", "fold",
                           "copy", "alias", "conv2d_grad_input", "conv2d_grad_weight", "addmm"}


def _snapshot(args):
    return [np.array(a, copy=True) for a in args]


def _assert_unchanged(args, saved):
    for a, s in zip(args, saved):
        assert a.dtype == s.dtype and a.shape == s.shape
        np.testing.assert_array_equal(a, s, err_msg="gradc mutated an input array")


def _cotangent(case, args):
    """A fixed random cotangent r shaped like the output, so the test loss is sum(f(x) * r)."""
    out = np.asarray(case.reference(*args))
    rng = np.random.default_rng(zlib.crc32(b"r" + case.name.encode()))
    return rng.standard_normal(out.shape) if out.shape else np.float64(rng.standard_normal())


def numerical_grad(f, args, i, eps):
    """Central finite differences of scalar f with respect to args[i]."""
    x = args[i]
    g = np.zeros_like(x, dtype=np.float64)
    for idx in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[idx] += eps
        minus[idx] -= eps
        hi = f(*args[:i], plus, *args[i + 1:])
        lo = f(*args[:i], minus, *args[i + 1:])
        g[idx] = (hi - lo) / (2 * eps)
    return g


# ---------------------------------------------------------------------------------------------
# (a) compiled forward == NumPy reference


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_forward_float32(case):
    args = case.make_args(np.float32)
    saved = _snapshot(args)
    expected = np.asarray(case.reference(*args))
    out = gradc.jit(case.fn)(*args)
    _assert_unchanged(args, saved)
    got = np.asarray(out)
    assert got.shape == expected.shape
    assert got.dtype == expected.dtype, f"gradc gave {got.dtype}, NumPy gives {expected.dtype}"
    if expected.dtype == np.bool_ or np.issubdtype(expected.dtype, np.integer):
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-6)


# ---------------------------------------------------------------------------------------------
# (b) gradients == central finite differences (float64), and the float64 value is tight


@pytest.mark.parametrize("case", GRAD_CASES, ids=[c.name for c in GRAD_CASES])
def test_value_and_grad_float64(case):
    args = case.make_args(np.float64)
    r = _cotangent(case, args)
    argnums = case.argnums(args)
    assert argnums, "a gradient case needs a float argument"

    def loss(*a):
        return np.sum(case.fn(*a) * r)

    def loss_ref(*a):
        return np.sum(np.asarray(case.reference(*a), dtype=np.float64) * r)

    saved = _snapshot(args)
    value, grads = gradc.value_and_grad(loss, argnums=argnums, copy=True)(*args)
    _assert_unchanged(args, saved)

    assert np.asarray(value).dtype == np.float64
    np.testing.assert_allclose(value, loss_ref(*args), rtol=1e-12, atol=1e-12)
    assert len(grads) == len(argnums)
    for i, g in zip(argnums, grads):
        assert g.shape == args[i].shape and g.dtype == args[i].dtype
        expected = numerical_grad(loss_ref, args, i, case.fd_eps)
        np.testing.assert_allclose(g, expected, rtol=case.grad_rtol, atol=case.grad_atol,
                                   err_msg=f"gradient of argument {i}")


# ---------------------------------------------------------------------------------------------
# every registered op has a test


def _graphs_of(case):
    """The graphs gradc builds for a case: the traced forward, and (for differentiable cases)
    the joint graph after autodiff, after the passes, and as fused (legalized)."""
    args = case.make_args(np.float64)
    forward, _, _ = trace(case.fn, args)
    graphs = {"forward": forward, "jit-fused": fuse(run_passes(
        run_passes(trace(case.fn, args)[0], BEFORE_AUTODIFF), AFTER_AUTODIFF)).graph}
    if case.grad:
        r = _cotangent(case, args)
        graph, _, outs = trace(lambda *a: np.sum(case.fn(*a) * r), args)
        graph = run_passes(graph, BEFORE_AUTODIFF)
        wrt = [graph.inputs[i] for i in case.argnums(args)]
        graph.outputs = [graph.outputs[0]] + autodiff.vjp(graph, graph.outputs[0], wrt)
        graphs["joint"] = graph
        after = run_passes(graph, AFTER_AUTODIFF)
        graphs["optimized"] = after
        graphs["fused"] = fuse(after).graph
    return {name: {n.op for n in g.nodes} for name, g in graphs.items()}


def test_every_op_is_covered():
    ops = set(all_ops())
    in_forward, anywhere = set(), set()
    for case in CASES:
        try:
            seen = _graphs_of(case)
        except Exception:  # that case's own tests report the failure
            continue
        in_forward |= seen["forward"]
        for s in seen.values():
            anywhere |= s
    # what user code reaches directly must appear in some traced forward graph of the table
    missing_forward = sorted(ops - REACHED_ONLY_INDIRECTLY - in_forward)
    assert not missing_forward, f"ops with no case in tests/ops/test_ops.py: {missing_forward}"
    # scatters (VJPs), copies and aliases must appear in some differentiated/compiled graph
    missing = sorted(ops - anywhere)
    assert not missing, f"ops never reached by the case table: {missing}"


def test_grad_of_grad_reaches_alias():
    """`alias` marks the variables of a nested gradient: it is in the traced graph of a grad of a
    function that calls gradc.grad."""
    inner = gradc.grad(lambda x: np.sum(np.sin(x)))
    graph, _, _ = trace(lambda x: np.sum(inner(x) ** 2), [np.ones(3)])
    assert "alias" in {n.op for n in graph.nodes}


# ---------------------------------------------------------------------------------------------
# a few semantics the table cannot pin


@pytest.mark.parametrize("name", ["relu", "sigmoid", "softplus", "log_sigmoid", "logsumexp",
                                  "softmax", "log_softmax", "gelu"])
def test_nn_functions_on_integer_arrays(name):
    """gradc.nn functions take integer arrays like NumPy ufuncs do (as floats), traced or not:
    "They also work on plain NumPy arrays (outside tracing), with the same semantics"."""
    f = getattr(nn, name)
    i = np.array([[3, -1, 0, 2], [-2, 5, 1, 1]])
    ref = {"relu": lambda v: np.maximum(v, 0.0), "sigmoid": sp.expit,
           "softplus": lambda v: np.logaddexp(0, v), "log_sigmoid": lambda v: -np.logaddexp(0, -v),
           "logsumexp": lambda v: sp.logsumexp(v, axis=-1),
           "softmax": lambda v: sp.softmax(v, axis=-1),
           "log_softmax": lambda v: sp.log_softmax(v, axis=-1),
           "gelu": lambda v: 0.5 * v * (1 + np.tanh(float(np.sqrt(2 / np.pi))
                                                    * (v + 0.044715 * v ** 3)))}[name]
    expected = ref(i)
    eager = np.asarray(f(i))
    compiled = np.asarray(gradc.jit(f)(i))
    for what, got in (("eager", eager), ("compiled", compiled)):
        assert got.dtype == expected.dtype, f"{what}: {got.dtype}"
        np.testing.assert_allclose(got, expected, rtol=1e-12, err_msg=what)


def test_max_gradient_is_shared_between_ties():
    g = gradc.grad(lambda x: np.max(x), copy=True)(np.array([1.0, 3.0, 3.0, -2.0]))
    np.testing.assert_allclose(g, [0.0, 0.5, 0.5, 0.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_nan_extremum_sends_its_gradient_to_the_nans(dtype):
    # (it went nowhere: a NaN loss with all-zero gradients)
    x = np.array([[1.0, np.nan, 3.0, 3.0], [1.0, 2.0, 5.0, 5.0]], dtype)
    g = gradc.grad(lambda x: np.sum(np.max(x, axis=1)) + np.min(x[1]))(x)
    np.testing.assert_array_equal(g, [[0, 1, 0, 0], [1, 0, 0.5, 0.5]])


def test_max_pool_gradient_goes_to_the_first_max():
    """PyTorch's rule: each window's gradient goes to its first maximum in row-major order
    (not shared between ties as np.max's is); overlapping windows add up."""
    x = np.array([[[[1.0, 3.0, 3.0, 0.0],
                    [3.0, 2.0, 0.0, 0.0],
                    [5.0, 5.0, 1.0, 2.0],
                    [5.0, 5.0, 2.0, 1.0]]]])
    g = gradc.grad(lambda x: np.sum(nn.max_pool2d(x, 2)), copy=True)(x)
    np.testing.assert_array_equal(g[0, 0], [[0, 1, 1, 0], [0, 0, 0, 0], [1, 0, 0, 1],
                                            [0, 0, 0, 0]])
    # stride 1: windows overlap, the middle 3 is the first max of two windows
    g = gradc.grad(lambda x: np.sum(nn.max_pool2d(x[:, :, :2, :3], 2, stride=1)), copy=True)(x)
    np.testing.assert_array_equal(g[0, 0, :2, :3], [[0, 2, 0], [0, 0, 0]])


def test_max_pool_propagates_nan():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 0, 1] = np.nan
    out = gradc.jit(lambda x: nn.max_pool2d(x, 2))(x)
    assert np.isnan(out[0, 0, 0, 0]) and out[0, 0, 1, 1] == 15.0
    g = gradc.grad(lambda x: np.sum(nn.max_pool2d(x, 2) * 2.0), copy=True)(x)
    assert g[0, 0, 0, 1] == 2.0 and g.sum() == 8.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["fmax", "fmin"])
def test_fmax_fmin_take_the_other_operand_where_one_is_nan(name, dtype):
    """np.fmax/np.fmin treat NaN as missing: the other operand where one is NaN, NaN where both
    are (np.maximum/minimum propagate it); the gradient goes to the operand taken (a at a tie
    and where both are NaN, as maximum's)."""
    f = getattr(np, name)
    nan = np.nan
    a = np.array([3.0, nan, 7.0, 1.0, nan, 2.0], dtype)
    b = np.array([nan, 0.0, 8.0, 0.0, nan, 2.0], dtype)
    np.testing.assert_array_equal(gradc.jit(f)(a, b), f(a, b))
    np.testing.assert_array_equal(gradc.jit(lambda b, a: f(b, a))(b, a), f(b, a))
    ga, gb = gradc.grad(lambda a, b: np.sum(f(a, b) * np.arange(1.0, 7.0, dtype=dtype)),
                        argnums=(0, 1))(a, b)
    wins = (a >= b) if name == "fmax" else (a <= b)
    took_a = wins | np.isnan(b)
    weights = np.arange(1.0, 7.0)
    np.testing.assert_array_equal(ga, np.where(took_a, weights, 0.0).astype(dtype))
    np.testing.assert_array_equal(gb, np.where(took_a, 0.0, weights).astype(dtype))


def test_pool_padding_more_than_half_the_window_is_an_error():
    with pytest.raises(gradc.GradcError):
        gradc.jit(lambda x: nn.max_pool2d(x, 2, padding=2))(np.ones((1, 1, 4, 4)))
    for kernel in (2, 3):  # (eagerly too: it read wrapped-around pixels, or a bare IndexError)
        with pytest.raises(gradc.ShapeError, match="more than half the window"):
            nn.max_pool2d(np.ones((1, 1, 4, 4)), kernel, padding=2)


def test_power_gradient_at_zero_base_is_finite():
    """d/dw 0**w = 0 for w > 0 (0**w is constant 0 there), as in JAX and PyTorch — not
    0 * log(0) = NaN."""
    base = np.array([0.0, 2.0, 0.0])
    g = gradc.grad(lambda w: np.sum(base ** w), copy=True)(np.array([2.0, 1.5, 0.5]))
    np.testing.assert_allclose(g, [0.0, np.log(2.0) * 2.0 ** 1.5, 0.0])


def test_power_gradient_of_a_half_power_of_tiny_numbers_is_finite():
    """d/dx x**-0.5 = -0.5 x**-1.5 is 5e29 at x = 1e-20 in float32: the exponent -0.5 - 1 was two
    literals, which LLVM folded and fast-math rewrote as powi(x, -2) * sqrt(x), inf."""
    for dtype, x in ((np.float32, [1e-20, 1e-25, 4.0]), (np.float64, [1e-200, 1e-160, 4.0])):
        x = np.array(x, dtype)
        want = -0.5 * x.astype(np.float64) ** -1.5
        for f in (lambda x: np.sum(x ** -0.5), lambda x: np.sum(np.power(x, -0.5))):
            np.testing.assert_allclose(gradc.grad(f)(x), want.astype(dtype), rtol=1e-5)
        hessian = gradc.hessian(lambda x: np.sum(x ** 0.5))(x)
        np.testing.assert_allclose(np.diag(hessian), (-0.25 * x.astype(np.float64) ** -1.5)
                                   .astype(dtype), rtol=1e-5)


def test_take_grad_accumulates_repeated_indices():
    w = np.arange(12.0).reshape(4, 3)
    idx = np.array([1, 1, 3, 1])
    g = gradc.grad(lambda w, i: np.sum(np.take(w, i, axis=0)), copy=True)(w, idx)
    np.testing.assert_array_equal(g, [[0, 0, 0], [3, 3, 3], [0, 0, 0], [1, 1, 1]])


def test_take_index_out_of_range_raises():
    f = gradc.jit(lambda w, i: np.take(w, i, axis=0))
    w = np.ones((4, 3))
    np.testing.assert_array_equal(f(w, np.array([3, 0])), np.ones((2, 3)))
    with pytest.raises(IndexError):
        f(w, np.array([4, 0]))


# ---------------------------------------------------------------------------------------------
# numerical stability: inputs of +-1000 in float32 give finite, correct values and gradients

BIG = np.array([[1000.0, -1000.0, 999.0, 0.0],
                [-1000.0, -999.0, -1000.0, -998.0],
                [1000.0, 1000.0, 1000.0, -1000.0]])
BIG_LABELS = np.array([1, 3, 0])
BIG_R = np.array([[0.3, -1.2, 0.8, 0.5], [1.1, 0.4, -0.7, 0.2], [-0.6, 0.9, 0.1, -1.3]])


def _softmax(x, axis=-1):
    return sp.softmax(x, axis=axis)


# name, function of (x, r), reference value, reference gradient (all in float64)
STABLE = [
    ("sigmoid", lambda x, r: np.sum(nn.sigmoid(x) * r),
     lambda x, r: np.sum(sp.expit(x) * r),
     lambda x, r: r * sp.expit(x) * sp.expit(-x)),
    ("softplus", lambda x, r: np.sum(nn.softplus(x) * r),
     lambda x, r: np.sum(np.logaddexp(0, x) * r),
     lambda x, r: r * sp.expit(x)),
    ("log_sigmoid", lambda x, r: np.sum(nn.log_sigmoid(x) * r),
     lambda x, r: np.sum(-np.logaddexp(0, -x) * r),
     lambda x, r: r * sp.expit(-x)),
    ("logsumexp", lambda x, r: np.sum(nn.logsumexp(x, axis=-1) * r[:, 0]),
     lambda x, r: np.sum(sp.logsumexp(x, axis=-1) * r[:, 0]),
     lambda x, r: r[:, :1] * _softmax(x)),
    ("softmax", lambda x, r: np.sum(nn.softmax(x, axis=-1) * r),
     lambda x, r: np.sum(_softmax(x) * r),
     lambda x, r: _softmax(x) * (r - np.sum(r * _softmax(x), axis=-1, keepdims=True))),
    ("log_softmax", lambda x, r: np.sum(nn.log_softmax(x, axis=-1) * r),
     lambda x, r: np.sum(sp.log_softmax(x, axis=-1) * r),
     lambda x, r: r - _softmax(x) * np.sum(r, axis=-1, keepdims=True)),
    ("cross_entropy", lambda x, r: nn.cross_entropy(x, BIG_LABELS),
     lambda x, r: -np.mean(sp.log_softmax(x, axis=-1)[np.arange(3), BIG_LABELS]),
     lambda x, r: (_softmax(x) - np.eye(4)[BIG_LABELS]) / 3),
    # the user's naive formulas, which simplify rewrites into the stable ops
    ("log_of_sigmoid", lambda x, r: np.sum(np.log(nn.sigmoid(x)) * r),
     lambda x, r: np.sum(-np.logaddexp(0, -x) * r),
     lambda x, r: r * sp.expit(-x)),
    ("log_one_plus_exp", lambda x, r: np.sum(np.log(1 + np.exp(x)) * r),
     lambda x, r: np.sum(np.logaddexp(0, x) * r),
     lambda x, r: r * sp.expit(x)),
]


@pytest.mark.parametrize("name,f,ref,ref_grad", STABLE, ids=[s[0] for s in STABLE])
def test_stable_at_large_inputs_float32(name, f, ref, ref_grad):
    x = BIG.astype(np.float32)
    r = BIG_R.astype(np.float32)
    value, g = gradc.value_and_grad(f, copy=True)(x, r)
    assert np.isfinite(value), f"{name}: value {value}"
    assert np.all(np.isfinite(g)), f"{name}: gradient {g}"
    assert np.asarray(value).dtype == np.float32 and g.dtype == np.float32
    x64, r64 = x.astype(np.float64), r.astype(np.float64)
    np.testing.assert_allclose(value, ref(x64, r64), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(g, ref_grad(x64, r64), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fn_name", ["sigmoid", "softplus", "log_sigmoid", "logsumexp",
                                     "softmax", "log_softmax"])
def test_stable_forward_at_large_inputs_float32(fn_name):
    x = BIG.astype(np.float32)
    out = gradc.jit(getattr(nn, fn_name))(x)
    ref = {"sigmoid": sp.expit, "softplus": lambda v: np.logaddexp(0, v),
           "log_sigmoid": lambda v: -np.logaddexp(0, -v),
           "logsumexp": lambda v: sp.logsumexp(v, axis=-1),
           "softmax": _softmax, "log_softmax": lambda v: sp.log_softmax(v, axis=-1)}[fn_name]
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, ref(BIG), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# grad of grad: Hessian-vector products


A_HVP = np.random.default_rng(7).standard_normal((4, 3))


def _f_hvp(x):
    return np.sum(np.tanh(A_HVP @ x) ** 2) + np.sum(np.exp(0.1 * x) * x)


def _grad_f_hvp(x):
    """The gradient of _f_hvp, by hand."""
    t = np.tanh(A_HVP @ x)
    return A_HVP.T @ (2 * t * (1 - t * t)) + np.exp(0.1 * x) * (1 + 0.1 * x)


def test_hessian_vector_product_matches_finite_differences():
    grad_f = gradc.grad(_f_hvp)
    hvp = gradc.grad(lambda x, v: np.sum(grad_f(x) * v), copy=True)
    rng = np.random.default_rng(3)
    x, v = rng.standard_normal(3), rng.standard_normal(3)
    saved = _snapshot([x, v])
    got = hvp(x, v)
    _assert_unchanged([x, v], saved)
    eps = 1e-5
    expected = (_grad_f_hvp(x + eps * v) - _grad_f_hvp(x - eps * v)) / (2 * eps)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-8)
    # the inner gradient alone, compiled, also matches the hand-written one
    np.testing.assert_allclose(gradc.grad(_f_hvp, copy=True)(x), _grad_f_hvp(x), rtol=1e-10)


W_HVP = np.random.default_rng(11).standard_normal((3, 4))


def test_hessian_vector_product_through_stable_composites():
    """grad of grad through logsumexp (whose VJP is softmax) and softplus (whose VJP is sigmoid)."""
    def f(x):
        return nn.logsumexp(x @ W_HVP) + np.sum(nn.softplus(x))

    def grad_ref(x):
        return W_HVP @ sp.softmax(x @ W_HVP) + sp.expit(x)

    hvp = gradc.grad(lambda x, v: np.sum(gradc.grad(f)(x) * v), copy=True)
    rng = np.random.default_rng(5)
    x, v = rng.standard_normal(3), rng.standard_normal(3)
    eps = 1e-5
    expected = (grad_ref(x + eps * v) - grad_ref(x - eps * v)) / (2 * eps)
    np.testing.assert_allclose(hvp(x, v), expected, rtol=1e-6, atol=1e-8)


def test_value_and_grad_of_grad_norm():
    """value_and_grad of a function of the gradient: d/dx |grad f(x)|^2 = 2 H grad f."""
    grad_f = gradc.grad(_f_hvp)
    vg = gradc.value_and_grad(lambda x: np.sum(grad_f(x) ** 2), copy=True)
    x = np.random.default_rng(9).standard_normal(3)
    value, g = vg(x)
    gf = _grad_f_hvp(x)
    np.testing.assert_allclose(value, np.sum(gf ** 2), rtol=1e-10)
    eps = 1e-5
    hess_gf = (_grad_f_hvp(x + eps * gf) - _grad_f_hvp(x - eps * gf)) / (2 * eps)
    np.testing.assert_allclose(g, 2 * hess_gf, rtol=1e-6, atol=1e-8)


# grad of grad through the VJPs of VJP ops (unslice, take_grad, take_along_axis_grad, fold,
# concatenate, extremum, matmul flags): H v by gradc vs central differences of gradc's gradient
_IDX = np.array([3, 0, 3, 1])
_LAB = np.array([2, 0, 1, 2, 0])
HVP_CASES = [
    ("slices", lambda x: np.sum(np.tanh(x[1:] * x[:-1]) ** 2), (4, 3)),
    ("take", lambda w: np.sum(np.tanh(np.take(w, _IDX, axis=0) * 1.5) ** 2), (4, 3)),
    ("cross_entropy", lambda z: nn.cross_entropy(z * z, _LAB), (5, 3)),
    ("concatenate", lambda x: np.sum(np.tanh(np.concatenate([x, x[::-1] * 2.0], axis=1)) ** 2),
     (3, 2)),
    ("max", lambda x: np.sum(np.max(np.sin(x) * x, axis=1) ** 2), (3, 4)),
    ("matmul", lambda x: np.sum(np.tanh(x @ x.T) * x[:, :3].T), (3, 4)),
    ("bmm", lambda x: np.sum(np.tanh(x @ np.swapaxes(x, 1, 2))), (2, 3, 2)),
    ("conv_pool", lambda w: np.sum(np.tanh(nn.max_pool2d(nn.conv2d(_CONV_X, w, padding=1), 2))),
     (2, 2, 3, 3)),
    ("layer_norm", lambda x: np.sum(nn.layer_norm(x) * _LN_R), (3, 4)),
]
_CONV_X = np.random.default_rng(21).standard_normal((1, 2, 4, 4))
_LN_R = np.random.default_rng(22).standard_normal((3, 4))


@pytest.mark.parametrize("name,f,shape", HVP_CASES, ids=[c[0] for c in HVP_CASES])
def test_hessian_vector_products(name, f, shape):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    x, v = rng.standard_normal(shape), rng.standard_normal(shape)
    grad_f = gradc.grad(f, copy=True)
    hvp = gradc.grad(lambda x, v: np.sum(gradc.grad(f)(x) * v), copy=True)(x, v)
    eps = 1e-5
    expected = (grad_f(x + eps * v) - grad_f(x - eps * v)) / (2 * eps)
    np.testing.assert_allclose(hvp, expected, rtol=1e-5, atol=1e-7)


# gradients in float32 keep float32 all the way and agree with the float64 gradients
F32_GRAD_CASES = [c for c in GRAD_CASES if c.name in {
    "elementwise_chain", "divide", "where_broadcast", "clip", "max_of_chain", "slice_overlapping",
    "concatenate_axis1", "take_axis0_repeats", "arange_labels_index", "matmul_batched_3d", "mlp",
    "nn_cross_entropy", "nn_log_softmax", "nn_layer_norm", "nn_conv2d", "nn_max_pool2d",
    "array_constant", "power"}]


def test_float32_gradient_cases_exist():
    assert len(F32_GRAD_CASES) == 18


@pytest.mark.parametrize("case", F32_GRAD_CASES, ids=[c.name for c in F32_GRAD_CASES])
def test_value_and_grad_float32(case):
    args32 = case.make_args(np.float32)
    args64 = [a.astype(np.float64) if a.dtype == np.float32 else a for a in args32]
    r = _cotangent(case, args64)
    argnums = case.argnums(args32)

    def loss_ref(*a):
        return np.sum(np.asarray(case.reference(*a), dtype=np.float64) * r)

    r32 = np.asarray(r, dtype=np.float32)
    value, grads = gradc.value_and_grad(lambda *a: np.sum(case.fn(*a) * r32), argnums=argnums,
                                        copy=True)(*args32)
    assert np.asarray(value).dtype == np.asarray(case.reference(*args32)).dtype
    np.testing.assert_allclose(value, loss_ref(*args64), rtol=1e-4, atol=1e-4)
    for i, g in zip(argnums, grads):
        assert g.dtype == np.float32, f"gradient of argument {i} is {g.dtype}"
        expected = numerical_grad(loss_ref, args64, i, case.fd_eps)
        np.testing.assert_allclose(g, expected, rtol=1e-3,
                                   atol=1e-4 * (1 + np.max(np.abs(expected))))


# ---------------------------------------------------------------------------------------------
# big loops take the parallel path (chunks of the outer loop on gradc's threads, per-chunk
# partial reductions; passes/fuse.py decide_parallel); the threshold is pinned here

PARALLEL_MIN_ITERATIONS = 1 << 17
_ROWS = 257  # odd sizes: chunks of unequal length
_COLS = PARALLEL_MIN_ITERATIONS // _ROWS + 3


@pytest.fixture
def parallel_loops(monkeypatch):
    monkeypatch.setenv("GRADC_PARALLEL_MIN_ITERATIONS", str(PARALLEL_MIN_ITERATIONS))


def _parallel_kernels(fun, *args):
    compiled = fun.compiled_for(*args)
    return [k for k in compiled.fusion.kernels if getattr(k, "parallel", False)]


def test_parallel_reductions_forward(parallel_loops):
    def f(x, y):
        e = np.tanh(x) * y.T + 0.5
        return (np.sum(e), np.sum(e, axis=1), np.max(e, axis=-1, keepdims=True), np.min(e),
                np.mean(e * e))

    rng = np.random.default_rng(1)
    x = rng.standard_normal((_ROWS, _COLS))
    y = rng.standard_normal((_COLS, _ROWS))
    jf = gradc.jit(f)
    got = jf(x, y)
    assert _parallel_kernels(jf, x, y), "no kernel took the parallel path: make the arrays bigger"
    for g, w in zip(got, f(x, y)):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-9)
    # a reduction over the outer axis would race across chunks: it must still be right
    g = gradc.jit(lambda x: np.sum(np.tanh(x), axis=0) + np.max(x * 2.0, axis=0))
    np.testing.assert_allclose(g(x), np.sum(np.tanh(x), axis=0) + np.max(x * 2.0, axis=0),
                               rtol=1e-10, atol=1e-9)


def test_parallel_w3_value_and_grad(parallel_loops):
    n = PARALLEL_MIN_ITERATIONS + 37
    rng = np.random.default_rng(2)
    x, w, b = (rng.standard_normal(n) for _ in range(3))

    def loss(x, w, b):
        return np.sum(np.tanh(x * w + b) ** 2 * nn.sigmoid(x * w) + 0.5 * np.exp(-np.abs(b)))

    vg = gradc.value_and_grad(loss, argnums=(1, 2), copy=True)
    value, (gw, gb) = vg(x, w, b)
    assert _parallel_kernels(vg, x, w, b)
    u = x * w
    t, s, e = np.tanh(u + b), sp.expit(u), np.exp(-np.abs(b))
    du = 2 * t * s * (1 - t * t) + t * t * s * (1 - s)
    np.testing.assert_allclose(value, np.sum(t * t * s + 0.5 * e), rtol=1e-10)
    np.testing.assert_allclose(gw, x * du, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gb, 2 * t * s * (1 - t * t) - 0.5 * e * np.sign(b), rtol=1e-9,
                               atol=1e-12)
    # a second call with new values reuses the buffers and is still right
    value2, (gw2, _) = vg(x, -w, b)
    np.testing.assert_allclose(value2, loss(x, -w, b), rtol=1e-10)


def test_int32_arithmetic_wraps_inside_fused_kernels():
    """Numba computes int32 arithmetic in int64: an int32 intermediate that overflows wrapped
    only where it was stored, so fused into a cast, a max, a sum or a comparison it was
    +2**31 where NumPy's is -2**31 (codegen/loops.py wrapped_int32)."""
    a = np.array([2**31 - 1, 123456789, -2**31, 7] * 5, np.int32)

    def f(a):
        return ((a + 1).astype(np.float64), (a * 1103515245 + 12345) % 1000, np.max(a + 1),
                np.sum(a * a), (a + 1) < 0, -a)

    with np.errstate(over="ignore"):
        want = f(a)
    for got, expected in zip(gradc.jit(f)(a), want):
        assert np.asarray(got).dtype == np.asarray(expected).dtype
        np.testing.assert_array_equal(got, expected)


def test_integer_fmod_at_the_least_integer_and_comparisons_with_wider_python_ints():
    """fmod took |a| % |b| (|INT_MIN| overflows: fmod(INT32_MIN, 3) was -1 for -2); a Python
    int beyond the dtype's range was refused where NumPy 2 compares it exactly."""
    a = np.array([-2**31, 7, -7, 1, 5, -2**31 + 1], np.int32)
    b = np.array([3, -2**31, 3, -2**31, -3, -1], np.int32)

    def f(a, b):
        return (np.fmod(a, b), np.fmod(a.astype(np.int64), b), a < 2**31, a >= -2**40,
                a == 2**33, 2**31 != a, a.astype(np.int64) < 2**64)

    for got, expected in zip(gradc.jit(f)(a, b), f(a, b)):
        assert np.asarray(got).dtype == np.asarray(expected).dtype
        np.testing.assert_array_equal(got, expected)


def test_new_numpy_functions_at_their_edges():
    """What an adversarial round found in the functions added with them: np.gradient's axes in
    the order given, np.searchsorted comparing a Python float in float64, a singular matrix's
    condition number inf, matrix_rank's batched rtol, hermitian and empty forms, an integer
    product's float initial, np.interp's infinite ends, nanvar of integers, real_if_close."""
    rng = np.random.default_rng(3)
    m = rng.standard_normal((3, 4))
    coords = np.array([0.0, 1.0, 3.0, 4.0])
    f32 = np.array([0.1, 0.2], np.float32)
    stack = np.stack([np.outer([1.0, 2, 3], [1.0, 0, 1]), np.eye(3), np.diag([1.0, 1, 1e-9])])
    ints = np.array([[1, 2, 2], [3, 4, 2]])

    def f(m, stack, f32, ints):
        return (np.gradient(m, coords, 2.0, axis=(1, 0))[0], np.gradient(m, axis=(1, 0))[1],
                np.searchsorted(f32, 0.1, side="right"), np.linalg.cond(np.zeros((2, 2))),
                np.linalg.cond(stack[0], "fro"), np.linalg.cond(stack),
                np.linalg.matrix_rank(stack, rtol=np.array([0.1, 0.1, 1e-6])),
                np.linalg.matrix_rank(np.array([[1.0, 0.0], [1.0, 1.0]]) * m[0, 0],
                                      hermitian=True), np.linalg.matrix_rank(np.zeros((2, 0))),
                np.prod(ints, axis=1, initial=1.5), np.nanprod(ints, axis=1, initial=2.5),
                np.interp(np.array([-1.0, 0.5, 2.0]), [-np.inf, 0.0, 1.0, np.inf],
                          [1.0, -2.0, 0.5, 3.0]),
                np.nanvar(ints, axis=1, ddof=3), np.real_if_close(m), np.sum(ints, initial=0.5))

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = f(m, stack, f32, ints)
        got = gradc.jit(f)(m, stack, f32, ints)
    for i, (g, w) in enumerate(zip(got, want)):
        assert np.asarray(g).dtype == np.asarray(w).dtype, i
        np.testing.assert_allclose(g, w, rtol=1e-7, err_msg=str(i))


def test_interp_of_a_python_number_on_float32_knots_is_float64_throughout():
    """np.interp computes in float64 whatever its arguments: a Python number beside float32
    knots was made a float32 first (0.3 off by 1e-8; the result 5e-7 off; fuzz41a)."""
    xp = np.array([-1.3, 0.1, 0.7, 2.2], np.float32)
    fp = np.array([0.3, -1.7, 2.9, 0.11], np.float32)
    f = lambda xp, fp: (np.interp(0.3, xp, fp), np.interp([0.3, 1.1], xp, fp, left=0.1))
    for got, want in zip(gradc.jit(f)(xp, fp), f(xp, fp)):
        assert np.asarray(got).dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=1e-14)


def test_compiled_x_plus_zero_clears_a_negative_zero_as_numpy():
    """x + 0.0 is +0.0 at x = -0.0 in NumPy; the compiled kernels' fast-math (nsz) folded the
    add away, so np.copysign(3, x + 0.0) was -3 and 1 / (x + 0.0) -inf (fuzz41a). After
    autodiff it is a select fast-math keeps; its gradient stays the add's, 1, at 0 too."""
    x = np.array([-0.0, 0.0, 1.0, -2.0])
    f = lambda x: (np.copysign(3.0, x + 0.0), 1.0 / (0.0 - x), np.signbit(x + 0.0))
    with np.errstate(divide="ignore"):
        for got, want in zip(gradc.jit(f)(x), f(x)):
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(np.signbit(got), np.signbit(want))
    grad = gradc.grad(lambda x: np.sum((x + 0.0) * 3.0) + np.sum(0.0 - x))(x)
    np.testing.assert_array_equal(grad, [2.0, 2.0, 2.0, 2.0])


def test_logaddexp_reduce_of_a_0d_or_empty_array_is_numpys():
    """np.logaddexp.reduce of a 0-d array is its value and of an empty axis -inf (the
    identity) in NumPy; gradc refused both, the empty one saying NumPy's max raises (fuzz41a)."""
    f = lambda a, e: (np.logaddexp.reduce(a), np.logaddexp.reduce(e),
                      np.logaddexp2.reduce(e, axis=1, keepdims=True))
    a, e = np.array(0.5), np.zeros((3, 0))
    for got, want in zip(gradc.jit(f)(a, e), f(a, e)):
        assert np.shape(got) == np.shape(want)
        np.testing.assert_array_equal(got, want)


def test_gradients_at_knots_and_constant_slices_are_central_differences():
    # np.interp's gradient was 0 at every interior knot (an exact-hit branch); np.std's and
    # np.nanstd's NaN (0 * inf) on a slice whose variance is 0
    xp = np.array([0.0, 1.0, 2.0, 3.0])

    def interp(x):
        return np.sum(np.interp(x, xp, 2.0 * xp + 1.0))

    x = np.array([0.5, 1.0, 2.0, 2.5])
    np.testing.assert_allclose(gradc.grad(interp)(x), [2.0, 2.0, 2.0, 2.0])

    def spreads(x):
        return np.sum(np.nanstd(np.where(_NAN_AT[:2, :4], np.nan, x), axis=1)) + np.sum(
            np.std(x[:, :1], axis=1))

    x = np.array([[1.0, 7.0, 2.0, 3.0], [2.0, 4.0, 4.0, 4.0]])
    g = gradc.grad(spreads)(x)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, numerical_grad(spreads, [x], 0, 1e-6), atol=1e-6)


def test_an_extremum_over_no_elements_is_its_initial_value():
    z = np.zeros((0, 3))

    def f(z):
        return (np.max(z, axis=0, initial=-5.0), np.min(z, axis=(0, 1), initial=2.0),
                np.max(z, axis=0, keepdims=True, initial=1.0), np.max(z, axis=1, initial=0.0))

    for got, want in zip(gradc.jit(f)(z), f(z)):
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def test_boolean_add_is_a_logical_or_inside_fused_kernels():
    """NumPy adds booleans as a logical or; Python's + of two bools is the int 2, which a fused
    kernel carried on: (m + k) * 1.0 was 2.0 where both held, np.sum(m + m) twice NumPy's, and
    np.trapezoid of a mask 2.5 for 1.5."""
    m = np.array([True, False, True, True])
    k = np.array([True, True, False, True])

    def f(m, k):
        return ((m + k) * 1.0, np.sum(m + m), (m * k + m) * 2.0, np.add(m, k),
                np.trapezoid(m), np.cumsum(m + k))

    for got, expected in zip(gradc.jit(f)(m, k), f(m, k)):
        assert np.asarray(got).dtype == np.asarray(expected).dtype
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_reciprocal_square_root_at_zero_infinity_and_subnormals(dtype):
    """y / sqrt(x) was y * rsqrt(x) under fast-math's arcp (a hardware estimate and a Newton
    step): NaN at 0 and inf, -inf at float32 subnormals, in loop tails and in sqrt's gradient."""
    tiny = np.finfo(dtype).smallest_subnormal * 1000
    for n in (1, 10):  # (a loop's scalar tail, and its vector body)
        y = np.array([0.0, np.inf, tiny, 4.0, 2.0] * n, dtype)
        with np.errstate(divide="ignore"):
            want = 1.0 / np.sqrt(y)
        for f in (lambda y: 1.0 / np.sqrt(y), lambda y: y ** -0.5,
                  lambda y: np.reciprocal(np.sqrt(y))):
            np.testing.assert_allclose(gradc.jit(f)(y), want, rtol=4 * np.finfo(dtype).eps)
        np.testing.assert_allclose(gradc.grad(lambda y: np.sum(np.sqrt(y)))(y), 0.5 * want,
                                   rtol=4 * np.finfo(dtype).eps)


def test_a_sum_reassociates_only_its_own_accumulation():
    """The arithmetic fused into a sum keeps the order written: with the whole kernel
    reassociable, (x * 100 + c) - c (a rounding trick) was folded to x * 100, error-free
    transforms came out exactly 0, and a log-softmax summed into a loss lost its stable form
    (error 4.7e-2 at logits of 1e7 in float32)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(1000).astype(np.float32)
    c = np.float32(1.5 * 2 ** 23)
    rounded = gradc.jit(lambda x: np.sum((x * 100 + c) - c))(x)
    assert rounded == np.sum((x * 100 + c) - c)  # (integers: exact in any order)
    a, b = x, rng.standard_normal(1000).astype(np.float32) * np.float32(1e-4)

    def two_sum_error(a, b):  # (what a + b lost to rounding, exactly)
        s = a + b
        bb = s - a
        return np.sum((a - (s - bb)) + (b - bb))

    err = gradc.jit(two_sum_error)(a, b)
    assert err != 0 and abs(err - two_sum_error(a, b)) <= 1e-6 * np.sum(np.abs(b))
    logits = (1e7 + 3.0 * rng.standard_normal((64, 10))).astype(np.float32)
    onehot = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 64)]

    def nll(z):
        return -np.mean(np.sum(onehot * gradc.nn.log_softmax(z, axis=1), axis=1))

    z64 = logits.astype(np.float64)
    ref = -np.mean(np.sum(onehot * (z64 - z64.max(1, keepdims=True) - np.log(np.sum(
        np.exp(z64 - z64.max(1, keepdims=True)), 1, keepdims=True))), 1))
    assert abs(gradc.jit(nll)(logits) - ref) < 1e-5


def test_convolve_of_short_and_long_filters_is_numpys():
    """Filters up to SHIFTED_TAPS taps are a sum of shifted slices, longer ones a product of the
    windows: both NumPy's in every mode, whichever argument is the longer."""
    rng = np.random.default_rng(5)
    f = gradc.jit(lambda a, v: [np.convolve(a, v, mode) for mode in ("full", "same", "valid")])
    for n, m in ((80, 1), (80, 3), (80, 64), (80, 65), (3, 70)):
        a, v = rng.normal(size=n), rng.normal(size=m)
        for got, mode in zip(f(a, v), ("full", "same", "valid")):
            np.testing.assert_allclose(got, np.convolve(a, v, mode), rtol=1e-12, atol=1e-12)
    a, v = rng.normal(size=40), rng.normal(size=9)
    g = gradc.grad(lambda v: np.sum(np.convolve(a, v, "same") ** 2))(v)
    want = [2 * np.sum(np.convolve(a, v, "same") * np.convolve(a, np.eye(9)[j], "same"))
            for j in range(9)]
    np.testing.assert_allclose(g, want, rtol=1e-10)


def test_trapezoid_of_one_sample_has_numpys_dtype():
    """fuzz42b: a single sample along the axis returned zeros in y's dtype; NumPy's come from
    the (empty) products of the spacing: float64 for float64 points or an np.float64 dx."""
    y = np.ones((4, 1), np.float32)

    def f(y):
        return (np.trapezoid(y, x=np.array([0.0]), axis=1), np.trapezoid(y, axis=1),
                np.trapezoid(y, dx=np.float64(2), axis=1), np.trapezoid(y.astype(np.int32)),
                np.trapezoid(y[:, :0] > 0, axis=1), np.trapezoid(y, x=np.array([3]), axis=1))

    for got, want in zip(gradc.jit(f)(y), f(y)):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
