"""The functions the CUDA checks compile, shared by sim_checks.py / sim_models.py (values under
the simulator) and ptx_check.py (the PTX of every kernel): op families and the examples' models
at tiny shapes. Importing this module does not import numba.cuda.

OP_CASES: (name, fn, args, mode, argnums), mode a gradc function name ("value_and_grad", "jit").
MODELS: name -> a function returning a dict: loss, params, batch (the loss's other arguments),
optimizer (a fresh one per call of `make_optimizer`), steps (train_step calls to compare).
"""
import os
import sys

import numpy as np

import gradc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "examples"))

RTOL, ATOL = 2e-5, 2e-5  # float32: sums in atomic (any) order
rng = np.random.default_rng(0)


def f32(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def leaves(tree):
    if isinstance(tree, dict):
        return [x for k in sorted(tree) for x in leaves(tree[k])]
    if isinstance(tree, (list, tuple)):
        return [x for t in tree for x in leaves(t)]
    return [np.asarray(tree)]


def compare(a, b, rtol=RTOL, atol=ATOL):
    """Max abs difference of every leaf of a against b; AssertionError if not allclose."""
    la, lb = leaves(a), leaves(b)
    assert len(la) == len(lb), (len(la), len(lb))
    worst = 0.0
    for x, y in zip(la, lb):
        assert x.shape == y.shape and x.dtype == y.dtype, (x.shape, y.shape, x.dtype, y.dtype)
        if not np.allclose(x, y, rtol=rtol, atol=atol, equal_nan=True):
            diff = np.nanmax(np.abs(x.astype(np.float64) - y))
            raise AssertionError(f"max abs difference {diff:.3g}")
        if x.size and np.issubdtype(x.dtype, np.floating):
            finite = np.isfinite(y)
            if finite.any():
                worst = max(worst, float(np.abs(x[finite].astype(np.float64) - y[finite]).max()))
    return worst


# --- op families ------------------------------------------------------------------------------
OP_CASES = []


def case(name, fn, *args, mode="value_and_grad", argnums=0):
    OP_CASES.append((name, fn, args, mode, argnums))


# elementwise, transcendental, broadcasting
x, y = f32(4, 5), f32(4, 5)
case("elementwise", lambda a, b: (a * b - a / (b * b + 1.0) + np.maximum(a, b) - np.minimum(a, 0.5)
                                  + np.abs(a) + np.square(b)).sum(), x, y, argnums=(0, 1))
case("transcendental", lambda a: (np.exp(a) + np.log1p(np.exp(a)) + np.tanh(a) + np.sin(a)
                                  + np.cos(a) + np.sqrt(a * a + 1.0) + np.expm1(a * 0.5)
                                  + np.log(a * a + 0.1) + np.arctan(a * 2.0)).sum(), x)
case("activations", lambda a: (gradc.nn.relu(a) + gradc.nn.sigmoid(a) + gradc.nn.softplus(a)
                               + gradc.nn.gelu(a)).sum(), x)
case("where_compare", lambda a, b: np.where(a > b, a * 2.0, b - 1.0).sum()
     + (a ** 2.0).mean(), x, y, argnums=(0, 1))
case("floor_sign_jit", lambda a: [np.floor(a * 3.0), np.ceil(a), np.sign(a), a // 0.7, a % 0.7],
     x, mode="jit")
# integers and booleans as NumPy computes them: bool + bool is an or, fmod at INT_MIN, int32
# wrapping, a negative exponent known only when the kernel runs (1 / a**|b| truncated: Numba's
# CUDA raised inside the kernel), np.sign of -0.0
ints32 = np.array([-2**31, 7, -7, 2**31 - 1], np.int32)
exps = np.array([-1, 2, -3, 0], np.int64)
case("integers_jit", lambda i, e, m, z: [(m + m) * np.float32(1.5), np.fmod(i, np.int32(3)),
                                          i + 1, np.array([2, 1, -1, 5]) ** e, np.sign(z) + 0.0,
                                          np.floor(m), np.ceil(m), np.floor(i)],
     ints32, exps, np.array([True, False, True, True]),
     np.array([-0.0, 0.0, -2.0, 3.0], np.float32), mode="jit")
# int8, uint8, int16, uint16 in their own dtypes, wrapping as NumPy's; floats out of range as
# NumPy casts them (through an int32)
bytes8 = np.array([[0, 1, 127, 128], [200, 254, 255, 3]], np.uint8)
case("narrow_integers_jit", lambda b, w: [
    b + 100, (b / np.float32(255.0)) @ w, b.astype(np.int8) * 3,
    (b * np.float32(3.7) - np.float32(100.0)).astype(np.uint8), b.max(axis=1),
    b.astype(np.int16) * 300, b.astype(np.uint16) - 1, b ** 3, b.astype(np.int16) ** 3,
    np.sign(b.astype(np.int8)), np.sign(b.astype(np.int16) - 100), np.sign(b)],
     bytes8, f32(4, 2), mode="jit")  # (** of them: fuzz47c, `i8(65536)` in the simulator)
# NumPy's further math ufuncs (gradc/ops/math.py), inside their domains
case("math_ufuncs", lambda a, b: (
    np.tan(a * 0.5) + np.sinh(a) + np.cosh(b) + np.arcsin(np.tanh(a) * 0.9)
    + np.arccos(np.tanh(b) * 0.9) + np.arctan2(a, b) + np.arcsinh(a) + np.arccosh(a * a + 1.5)
    + np.arctanh(np.tanh(b) * 0.9) + np.hypot(a, b) + np.log2(a * a + 0.5)
    + np.log10(b * b + 0.5) + np.exp2(a) + np.logaddexp(a, b) + np.logaddexp2(a, b) + np.sinc(a)
    + np.cbrt(a) + np.fabs(b) + np.deg2rad(a) + np.rad2deg(b) + np.copysign(a, b)
    + np.heaviside(a, b) + np.fmod(a, b)).sum(), x, y, argnums=(0, 1))
case("math_ufuncs_jit", lambda a: [np.trunc(a * 3.0), np.rint(a * 3.0), np.signbit(a),
                                   np.isnan(np.log(a)), np.isinf(a / (a > 0)),
                                   np.isfinite(np.log(a)), np.nan_to_num(np.log(a)),
                                   np.fmod(a * 5.0, -0.7)], x, mode="jit")
case("broadcast", lambda a, r, c: ((a + r) * c).sum(), x, f32(5), f32(4, 1), argnums=(0, 1, 2))
case("transpose_slice_views", lambda a: (a.T[1:4] * a.T[:3]).sum() + a[::-1, ::2].sum(), x)

# reductions
z = f32(2, 3, 4)
case("sum_axes", lambda a: (a.sum(axis=0) ** 2.0).sum() + (a.sum(axis=(1, 2)) ** 2.0).sum()
     + (a.sum(axis=1, keepdims=True) * a).sum(), z)
case("max_min", lambda a: a.max(axis=2).sum() + a.min(axis=0).sum() + a.max()
     - a.min(axis=(0, 2)).sum(), z)
case("mean_var", lambda a: a.mean() + ((a - a.mean(axis=1, keepdims=True)) ** 2.0).mean(), z)
case("reductions_jit", lambda a: [a.sum(axis=1), a.max(axis=(0, 2)), a.min()], z, mode="jit")

# matmul
case("matmul_2d", lambda a, b: np.tanh(a @ b).sum() + (a.T @ a).sum(), f32(3, 4), f32(4, 5),
     argnums=(0, 1))
case("matmul_batched", lambda a, b: (np.tanh(a @ b) * 2.0).sum(), f32(2, 3, 4), f32(2, 4, 3),
     argnums=(0, 1))

# gathers, slicing, concatenate
table, idx = f32(6, 3), np.array([0, 5, 2, 5], np.int64)
case("take_embedding", lambda t, i: (np.tanh(gradc.nn.embedding(t, i)) * 2.0).sum(), table, idx)
case("take_axis1", lambda t: (np.take(t, np.array([2, 0, 2]), axis=1) ** 2.0).sum(), table)
logits, labels = f32(4, 5), np.array([1, 0, 4, 4], np.int64)
case("take_along_axis", lambda l, y: (l[np.arange(4), y] ** 2.0).sum(), logits, labels)
case("slice_concat", lambda a, b: (np.concatenate([a[:, 1:3], b], axis=1) ** 2.0).sum()
     + (np.concatenate([a, b[:, :1]], axis=1) * 3.0).sum(), x, f32(4, 2), argnums=(0, 1))
# an LSTM cell's gates: their gradients are column blocks of z's, each stored in place by its
# kernel with z's row strides (passes/fuse.py block_stores)
case("gate_blocks", lambda a, w: (lambda z: ((1.0 / (1.0 + np.exp(-z[:, 16:32]))) * 0.5
                                             + np.tanh(z[:, :16]) * np.tanh(z[:, 32:])).sum())(
    a @ w), f32(4, 5), f32(5, 48), argnums=(0, 1))
case("stride_slice_grad", lambda a: (a[1::2, ::3] ** 3.0).sum() + a[:2].sum(), x)
# a sum of slice gradients (unslice_sum): per-step, overlapping, reversed slices and a dense term
case("slice_sums", lambda a: sum((np.tanh(a[:, t]) * (t + 1.0)).sum() for t in range(4))
     + (a[:, ::-2, 1:] ** 2.0).sum() + (a[:, 1:] * a[:, :-1]).sum() + (a * a).sum(), f32(2, 4, 3))



def filled_steps(w, a):  # gradc.at's slice update (set_slice), in place step after step
    h, prev = np.zeros(a.shape, np.float32), np.zeros(a.shape[::2], np.float32)
    for t in range(a.shape[1]):
        prev = np.tanh(prev @ w + a[:, t])
        h = gradc.at(h)[:, t].set(prev)
    return (h ** 2.0).sum() + (gradc.at(h)[:, ::-2, 1:].add(a[:, 1::2, :2]) * a).sum()


case("set_slice_steps", filled_steps, f32(3, 3, scale=0.5), f32(2, 4, 3), argnums=(0, 1))

# conv, pooling, softmax cross-entropy
img, w, b = f32(1, 2, 5, 5), f32(2, 2, 3, 3, scale=0.3), f32(2)
case("conv2d", lambda w, b, x: (np.tanh(gradc.nn.conv2d(x, w, b, padding=1)) ** 2.0).sum(),
     w, b, img, argnums=(0, 1, 2))
case("pooling", lambda x: gradc.nn.max_pool2d(x, 2).sum()
     + (gradc.nn.avg_pool2d(x, 2, padding=1) ** 2.0).sum(), img)
case("pooling_tiles", lambda x: (gradc.nn.max_pool2d(x, 2) ** 2.0).sum(), f32(1, 2, 4, 6))
case("cross_entropy", lambda l, y: gradc.nn.cross_entropy(l, y), logits, labels)
case("softmax_log_softmax", lambda l: (gradc.nn.softmax(l, axis=-1) ** 2.0).sum()
     + gradc.nn.log_softmax(l, axis=0).mean(), logits)
# scans (cumulative sums and products, np.prod; a zero factor) and sorting (gradc/ops/scan.py)
scan_x = f32(3, 4)
scan_x[1, 2] = 0.0
case("scans_sorting", lambda a: (np.cumsum(a, axis=1) * np.cumprod(a, axis=0)).sum()
     + (np.sort(a, axis=0) * a).sum() + np.prod(a, axis=1).sum() + np.cumsum(a[::-1], axis=0).sum(),
     scan_x)
ties = np.array([[3, 1, np.nan, 1], [2, 2, 2, -1], [0, -np.inf, 5, 0]], np.float32)
case("argsort_jit", lambda a: [np.argsort(a, axis=1), np.argsort(a, axis=0), np.sort(a, axis=None),
                               np.argmax(a, axis=1)], ties, mode="jit")
case("float64", lambda a: (np.exp(a) * a).sum(), x.astype(np.float64))
FLOAT64_CASES = {"float64"}  # float64 on purpose: .f64 expected in their PTX


# the tiny MLP of sim_checks' train_step_adam
def mlp_loss(p, x, y):
    h = np.tanh(x @ p["W1"] + p["b1"])
    return gradc.nn.cross_entropy(h @ p["W2"] + p["b2"], y)


def mlp_setup():
    r = np.random.default_rng(1)
    p = {"W1": (r.standard_normal((4, 6)) * 0.5).astype(np.float32), "b1": np.zeros(6, np.float32),
         "W2": (r.standard_normal((6, 3)) * 0.5).astype(np.float32), "b2": np.zeros(3, np.float32)}
    xs = r.standard_normal((4, 4)).astype(np.float32)
    ys = np.array([0, 2, 1, 2], np.int64)
    return p, xs, ys


# --- the examples' models, tiny ---------------------------------------------------------------
# Each imports the example's own loss (and init where its shapes are parameters); data is random
# (no scikit-learn): only shapes and dtypes matter to the comparison.

def linear_regression():
    import linear_regression as ex
    x, y = ex.make_data(n=8, seed=0)
    r = np.random.default_rng(2)
    params = {"w": r.standard_normal((ex.N_FEATURES, 1)).astype(np.float32),
              "b": np.zeros(1, np.float32)}
    return dict(loss=ex.loss, params=params, batch=(x, y),
                make_optimizer=lambda: gradc.optim.SGD(lr=0.1, momentum=0.9), steps=3)


def moons_mlp():
    import moons_mlp as ex
    x, y = ex.make_moons(7, noise=0.1, seed=1337)  # 3 and 4 points: b3's gradient is not 0
    params = ex.init_params(0, sizes=(2, 6, 6, 1))  # the example's 2-16-16-1, narrower
    return dict(loss=ex.loss, params=params, batch=(x, y),
                make_optimizer=lambda: gradc.optim.SGD(lr=0.5), steps=3)


def digits_mlp():
    import digits_mlp as ex
    r = np.random.default_rng(3)
    x = (r.integers(0, 17, (8, 64)) / 16.0).astype(np.float32)  # 8 images of 8x8, in [0, 1]
    y = r.integers(0, 10, 8).astype(np.int64)
    params = ex.init_params(0, n_in=64, hidden=12, n_out=10)
    return dict(loss=ex.loss, params=params, batch=(x, y),
                make_optimizer=lambda: gradc.optim.Adam(lr=3e-3), steps=4)


def digits_cnn():
    import digits_cnn as ex
    r = np.random.default_rng(4)
    channels = 3
    x = (r.integers(0, 17, (4, 1, 6, 6)) / 16.0).astype(np.float32)  # 6x6 images: 3x3 after pooling
    y = r.integers(0, 10, 4).astype(np.int64)
    params = ex.init_params(0, channels=channels)
    params["W"] = (r.standard_normal((channels * 9, 10)) / np.sqrt(channels * 9)).astype(np.float32)
    params["conv_b"] = (r.standard_normal(channels) * 0.1).astype(np.float32)
    return dict(loss=ex.loss, params=params, batch=(x, y),
                make_optimizer=lambda: gradc.optim.Adam(lr=3e-3), steps=2)


def sequence_rnn():
    import sequence_rnn as ex
    x, y = ex.make_sequences(4, steps=3, seed=0)  # (3 steps, batch 4, 1)
    params = ex.init_params(0, hidden=5)
    r = np.random.default_rng(5)
    # the example's readout starts at zero, which zeroes every other gradient: make it random
    params["Wo"] = (r.standard_normal((5, 1)) * 0.5).astype(np.float32)
    params["b"] = (r.standard_normal(5) * 0.1).astype(np.float32)
    return dict(loss=ex.loss, params=params, batch=(x, y),
                make_optimizer=lambda: gradc.optim.Adam(lr=1e-2), steps=2)


def attention():
    import attention as ex
    tokens, targets = ex.make_data(2, length=4, seed=0)  # batch 2, sequences of 4
    params = ex.init_params(0, dim=6, length=4)
    r = np.random.default_rng(6)
    params["gamma"] = (1 + 0.1 * r.standard_normal(6)).astype(np.float32)
    params["beta"] = (0.1 * r.standard_normal(6)).astype(np.float32)
    return dict(loss=ex.loss, params=params, batch=(tokens, targets),
                make_optimizer=lambda: gradc.optim.AdamW(lr=1e-2, betas=(0.9, 0.98),
                                                         weight_decay=1e-2), steps=2)


MODELS = {f.__name__: f for f in (linear_regression, moons_mlp, digits_mlp, digits_cnn,
                                  sequence_rnn, attention)}
