"""gradc.nn layers: conv2d (dilated, grouped), pooling, layer_norm, batch_norm, group_norm,
embedding, dropout, gelu, flatten.

Forwards are checked, compiled (`gradc.jit`) and on plain NumPy arrays, against NumPy references
written here with explicit loops over output positions; gradients (float64) against central
finite differences of those references, and against PyTorch where it is installed.

gradc's kernels are shape-generic, so the compiled functions below are module-level and shared:
after the first compile of each kernel, other shapes and settings cost little.
"""
import numpy as np
import pytest

import gradc  # tests/conftest.py points GRADC_CACHE_DIR at a session temp dir
from gradc import nn

RNG = np.random.default_rng(1234)
X = RNG.standard_normal((2, 2, 5, 5))     # N, C, H, W
W = RNG.standard_normal((3, 2, 3, 3))     # OC, C, KH, KW
B = RNG.standard_normal(3)


# --- NumPy references -----------------------------------------------------------------------

def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def windows(x, k, s, p, value):
    """{(a, b): x_padded[:, :, a*sh : a*sh+kh, b*sw : b*sw+kw]} over all output positions;
    k, s, p are ints or (height, width) pairs, as in PyTorch."""
    (kh, kw), (sh, sw), (ph, pw) = pair(k), pair(s), pair(p)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)
    oh = (x.shape[2] + 2 * ph - kh) // sh + 1
    ow = (x.shape[3] + 2 * pw - kw) // sw + 1
    return oh, ow, {(a, b): xp[:, :, a * sh:a * sh + kh, b * sw:b * sw + kw]
                    for a in range(oh) for b in range(ow)}


def ref_conv2d(x, w, b=None, stride=1, padding=0):
    oh, ow, wins = windows(x, w.shape[2:], stride, padding, 0.0)
    out = np.zeros((x.shape[0], w.shape[0], oh, ow), np.result_type(x, w))
    for (a, c), patch in wins.items():
        out[:, :, a, c] = np.einsum("nchw,ochw->no", patch, w)
    if b is not None:
        out += b[None, :, None, None]
    return out


def ref_pool(x, k, s, p, kind):
    s = k if s is None else s  # PyTorch: the stride defaults to the kernel size
    oh, ow, wins = windows(x, k, s, p, -np.inf if kind == "max" else 0.0)
    out = np.zeros(x.shape[:2] + (oh, ow), x.dtype)
    for (a, c), patch in wins.items():
        out[:, :, a, c] = (patch.max(axis=(2, 3)) if kind == "max" else
                           patch.sum(axis=(2, 3)) / patch[0, 0].size)
    return out


def ref_layer_norm(x, gamma=None, beta=None, eps=1e-5, axis=-1):
    mu = x.mean(axis=axis, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axis, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps)
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    return y


def ref_gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def numeric_grad(f, args, i, eps=1e-6):
    """Central differences of the scalar f(*args) with respect to args[i] (float64)."""
    x = args[i]
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + eps
        fp = f(*args)
        x[idx] = old - eps
        fm = f(*args)
        x[idx] = old
        g[idx] = (fp - fm) / (2 * eps)
    return g


def check_against_fd(grads, ref_loss, args, wrt, rtol=1e-6, atol=1e-7):
    args = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    for g, i in zip(grads, wrt):
        expected = numeric_grad(ref_loss, args, i)
        assert g.shape == args[i].shape and g.dtype == args[i].dtype
        np.testing.assert_allclose(g, expected, rtol=rtol, atol=atol, err_msg=f"argument {i}")


# --- compiled functions, shared by the tests --------------------------------------------------

conv_fwd = gradc.jit(lambda x, w, b, s, p: nn.conv2d(x, w, b, stride=s, padding=p))
conv_grad = gradc.grad(lambda x, w, b, r, s, p: np.sum(nn.conv2d(x, w, b, stride=s, padding=p) * r),
                       argnums=(0, 1, 2))
conv_grad_nobias = gradc.grad(lambda x, w, r, s, p: np.sum(nn.conv2d(x, w, stride=s, padding=p) * r),
                              argnums=(0, 1))
max_fwd = gradc.jit(lambda x, k, s, p: nn.max_pool2d(x, k, s, p))
avg_fwd = gradc.jit(lambda x, k, s, p: nn.avg_pool2d(x, k, s, p))
max_grad = gradc.grad(lambda x, r, k, s, p: np.sum(nn.max_pool2d(x, k, s, p) * r))
avg_grad = gradc.grad(lambda x, r, k, s, p: np.sum(nn.avg_pool2d(x, k, s, p) * r))

CONV_CASES = [(1, 0), (1, 1), (2, 0), (2, 1)]  # (stride, padding)
POOL_CASES = [  # (kernel, stride, padding)
    (2, None, 0),  # non-overlapping windows that tile the image (the reshape fast path)
    (2, None, 1),  # non-overlapping, padded
    (2, 2, 0),     # 5x5 image: the last row and column are dropped
    (3, 1, 1),     # overlapping windows (stride < kernel) with padding
    (3, 2, 1),
    (2, 1, 0),
    (5, 2, 2),     # a 25-pixel window: the max-pool's border scans as loops, not unrolled
]
X4 = RNG.standard_normal((2, 3, 4, 4))  # an image that 2x2 windows tile exactly


def pool_input(k, s, p):
    return X4 if (k, s, p) == (2, None, 0) else X


# --- conv2d -----------------------------------------------------------------------------------

@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("stride, padding", CONV_CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_conv2d_forward(stride, padding, bias, dtype):
    x, w, b = X.astype(dtype), W.astype(dtype), B.astype(dtype) if bias else None
    expected = ref_conv2d(X, W, B if bias else None, stride, padding)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-5)
    for got in (conv_fwd(x, w, b, stride, padding), nn.conv2d(x, w, b, stride, padding)):
        assert got.dtype == dtype and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, **tol)


def test_conv2d_output_sizes():
    x = np.zeros((1, 2, 7, 6))
    for k, s, p in [(3, 1, 0), (3, 2, 1), (1, 1, 0), (2, 3, 1), (6, 1, 0), (8, 1, 1)]:
        w = np.zeros((4, 2, k, k))
        expected = (1, 4, (7 + 2 * p - k) // s + 1, (6 + 2 * p - k) // s + 1)
        assert conv_fwd(x, w, None, s, p).shape == expected


def test_conv2d_window_larger_than_the_image_is_a_shape_error():
    with pytest.raises(gradc.ShapeError):
        conv_fwd(np.zeros((1, 2, 7, 6)), np.zeros((4, 2, 7, 7)), None, 1, 0)


def test_conv2d_channel_mismatch_is_a_shape_error():
    with pytest.raises(gradc.ShapeError, match="channels"):
        conv_fwd(X, np.zeros((3, 4, 3, 3)), None, 1, 0)


@pytest.mark.parametrize("stride, padding", CONV_CASES)
def test_conv2d_gradients_match_finite_differences(stride, padding):
    r = RNG.standard_normal(ref_conv2d(X, W, B, stride, padding).shape)
    grads = conv_grad(X, W, B, r, stride, padding)
    check_against_fd(grads, lambda x, w, b: np.sum(ref_conv2d(x, w, b, stride, padding) * r),
                     [X, W, B], (0, 1, 2))


def test_conv2d_gradients_without_bias():
    r = RNG.standard_normal(ref_conv2d(X, W, None, 2, 1).shape)
    gx, gw = conv_grad_nobias(X, W, r, 2, 1)
    check_against_fd((gx, gw), lambda x, w: np.sum(ref_conv2d(x, w, None, 2, 1) * r), [X, W], (0, 1))


# --- pooling ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kernel, stride, padding", POOL_CASES)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_forward(kind, kernel, stride, padding):
    x = pool_input(kernel, stride, padding)
    expected = ref_pool(x, kernel, stride, padding, kind)
    fwd, plain = (max_fwd, nn.max_pool2d) if kind == "max" else (avg_fwd, nn.avg_pool2d)
    for got in (fwd(x, kernel, stride, padding), plain(x, kernel, stride, padding)):
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_max_pool_all_negative_window_with_padding():
    """Padding is -inf for max pooling, not 0: a window of negatives has a negative max."""
    x = -1.0 - np.arange(16.0).reshape(1, 1, 4, 4)
    got = max_fwd(x, 3, 2, 1)
    np.testing.assert_array_equal(got, ref_pool(x, 3, 2, 1, "max"))
    assert got[0, 0, 0, 0] == -1.0


def test_max_pool_of_minus_inf_beside_padding_on_plain_arrays_and_traced():
    """A window whose only pixel is -inf, beside -inf padding: the max is that pixel (-inf),
    on plain NumPy arrays (the reference's argmax took a padding cell, whose index wrapped to
    another pixel: 5) as in compiled code, and as PyTorch gives."""
    x = np.array([[[[-np.inf, 5.0], [1.0, 2.0]]]])
    want = np.array([[[[-np.inf, 5.0], [1.0, 2.0]]]])
    np.testing.assert_array_equal(gradc.nn.max_pool2d(x, 2, 2, 1), want)
    np.testing.assert_array_equal(gradc.jit(lambda x: gradc.nn.max_pool2d(x, 2, 2, 1))(x), want)


def test_avg_pool_refuses_padding_over_half_the_window_as_max_pool_does():
    x = np.ones((1, 1, 4, 4))
    for pool in (gradc.nn.avg_pool2d, gradc.nn.max_pool2d):
        with pytest.raises(gradc.ShapeError, match="more than half the window"):
            gradc.jit(lambda x: pool(x, (2, 1), 1, (1, 1)))(x)
    np.testing.assert_array_equal(gradc.nn.avg_pool2d(x, (2, 2), 1, (1, 1))[0, 0, 0, 0], 0.25)


def test_avg_pool_counts_padding():
    x = np.ones((1, 1, 4, 4))
    got = avg_fwd(x, 3, 1, 1)
    assert got[0, 0, 0, 0] == pytest.approx(4 / 9)  # corner: 4 pixels, 5 padded zeros
    assert got[0, 0, 1, 1] == pytest.approx(1.0)


@pytest.mark.parametrize("kernel, stride, padding", POOL_CASES)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_gradients_match_finite_differences(kind, kernel, stride, padding):
    x = pool_input(kernel, stride, padding)
    r = RNG.standard_normal(ref_pool(x, kernel, stride, padding, kind).shape)
    g = (max_grad if kind == "max" else avg_grad)(x, r, kernel, stride, padding)
    check_against_fd([g], lambda x: np.sum(ref_pool(x, kernel, stride, padding, kind) * r),
                     [x], (0,))


def test_max_pool_gradient_goes_to_the_argmax():
    """Overlapping windows: a pixel that is the max of several windows gets all their
    gradients, the others none."""
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 5.0
    x[0, 0, 0, 0] = 1.0
    r = np.arange(1.0, 5.0).reshape(1, 1, 2, 2)
    g = max_grad(x, r, 2, 1, 0)  # all four 2x2 windows contain the centre
    expected = np.zeros_like(x)
    expected[0, 0, 1, 1] = r.sum()
    np.testing.assert_array_equal(g, expected)


def test_max_pool_gradient_with_ties_is_a_subgradient():
    """Max pooling after a ReLU sees windows of equal zeros. Whichever tied element gets the
    gradient (PyTorch: the first), each window passes on exactly its upstream gradient, and
    only to elements that attain its max."""
    x = np.maximum(RNG.standard_normal((1, 2, 4, 4)), 0.0)
    x[0, 0, :2, :2] = 0.0  # one all-zero window
    r = RNG.standard_normal((1, 2, 2, 2))
    g = max_grad(x, r, 2, None, 0)
    blocks = g.reshape(1, 2, 2, 2, 2, 2).transpose(0, 1, 2, 4, 3, 5)   # n, c, a, b, i, j
    xb = x.reshape(1, 2, 2, 2, 2, 2).transpose(0, 1, 2, 4, 3, 5)
    np.testing.assert_allclose(blocks.sum(axis=(4, 5)), r, rtol=1e-12)
    is_max = xb == xb.max(axis=(4, 5), keepdims=True)
    assert not blocks[~is_max].any()


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("stride", [None, (2, 3), (1, 2)], ids=["default", "s2x3", "s1x2"])
def test_pool_non_square_kernel_and_stride_pairs(kind, stride):
    """kernel=(2, 3): PyTorch's default stride is (2, 3), the kernel size on each axis. gradc
    may refuse pairs with a GradcError, but must not silently pool with other windows."""
    x = RNG.standard_normal((1, 2, 4, 9))
    expected = ref_pool(x, (2, 3), stride, 0, kind)
    fwd = max_fwd if kind == "max" else avg_fwd
    try:
        got = fwd(x, (2, 3), stride, 0)
    except gradc.GradcError:
        return
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("stride, padding", [((1, 2), 0), (1, (0, 1)), ((2, 1), (1, 0))],
                         ids=["s1x2", "p0x1", "s2x1_p1x0"])
def test_conv2d_stride_and_padding_pairs(stride, padding):
    """Per-axis stride/padding as in PyTorch, or a GradcError saying they are not supported
    (gradc's errors are all GradcError subclasses)."""
    expected = ref_conv2d(X, W, B, stride, padding)
    try:
        got = conv_fwd(X, W, B, stride, padding)
    except gradc.GradcError:
        return
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_conv2d_non_square_kernel_and_image():
    x = RNG.standard_normal((1, 2, 4, 6))
    w = RNG.standard_normal((3, 2, 2, 3))
    for s, p in [(1, 0), (2, 1)]:
        np.testing.assert_allclose(conv_fwd(x, w, B, s, p), ref_conv2d(x, w, B, s, p),
                                   rtol=1e-12, atol=1e-12)


# --- layer_norm -------------------------------------------------------------------------------

LN_X = RNG.standard_normal((3, 4, 5))
LN_G = RNG.standard_normal(5)
LN_B = RNG.standard_normal(5)
LN_G2 = RNG.standard_normal((4, 5))

ln_fwd = gradc.jit(lambda x, g, b, axis: nn.layer_norm(x, g, b, axis=axis))
ln_grad = gradc.grad(lambda x, g, b, r: np.sum(nn.layer_norm(x, g, b) * r), argnums=(0, 1, 2))
ln_grad_2axes = gradc.grad(lambda x, g, r: np.sum(nn.layer_norm(x, g, axis=(1, 2)) * r),
                           argnums=(0, 1))


@pytest.mark.parametrize("case", ["affine", "plain", "two_axes", "axis0"])
def test_layer_norm_forward(case):
    x = LN_X
    g, b, axis = {"affine": (LN_G, LN_B, -1), "plain": (None, None, -1),
                  "two_axes": (LN_G2, None, (1, 2)), "axis0": (None, None, 0)}[case]
    expected = ref_layer_norm(x, g, b, axis=axis)
    for got in (ln_fwd(x, g, b, axis), nn.layer_norm(x, g, b, axis=axis)):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    if case == "plain":  # normalized: mean 0, biased variance 1 - eps/(var+eps)
        got = ln_fwd(x, None, None, -1)
        np.testing.assert_allclose(got.mean(-1), 0, atol=1e-12)
        np.testing.assert_allclose(got.var(-1), 1, rtol=1e-3)


def test_layer_norm_float32_constant_rows():
    """A constant row has variance 0: the output is 0 (eps keeps it finite), not NaN."""
    x = np.ones((2, 6), np.float32) * np.float32(3.5)
    got = ln_fwd(x, None, None, -1)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.zeros_like(x))


def test_layer_norm_gradients_match_finite_differences():
    r = RNG.standard_normal(LN_X.shape)
    grads = ln_grad(LN_X, LN_G, LN_B, r)
    check_against_fd(grads, lambda x, g, b: np.sum(ref_layer_norm(x, g, b) * r),
                     [LN_X, LN_G, LN_B], (0, 1, 2))


def test_layer_norm_over_two_axes_gradients_match_finite_differences():
    r = RNG.standard_normal(LN_X.shape)
    grads = ln_grad_2axes(LN_X, LN_G2, r)
    check_against_fd(grads, lambda x, g: np.sum(ref_layer_norm(x, g, axis=(1, 2)) * r),
                     [LN_X, LN_G2], (0, 1))


# --- dilated and grouped convolutions ---------------------------------------------------------

def ref_conv2d_general(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """Every output element as its own sum over the taps, PyTorch's definition."""
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(padding), pair(dilation)
    n, c, h, wd = x.shape
    oc, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, oc, oh, ow), np.result_type(x, w))
    per_group = oc // groups
    for o in range(oc):
        g = o // per_group
        for a in range(oh):
            for bb in range(ow):
                patch = xp[:, g * cg:(g + 1) * cg, a * sh:a * sh + dh * (kh - 1) + 1:dh,
                           bb * sw:bb * sw + dw * (kw - 1) + 1:dw]
                out[:, o, a, bb] = np.einsum("nchw,chw->n", patch, w[o])
    if b is not None:
        out += b[None, :, None, None]
    return out


conv_general_fwd = gradc.jit(lambda x, w, b, s, p, d, g: nn.conv2d(x, w, b, s, p, d, g))
conv_general_grad = gradc.grad(
    lambda x, w, b, r, s, p, d, g: np.sum(nn.conv2d(x, w, b, s, p, d, g) * r), argnums=(0, 1, 2))
GENERAL_CONV_CASES = [  # (channels in, out, kernel, stride, padding, dilation, groups)
    (2, 3, 3, 1, 2, 2, 1),         # dilated, direct route
    (2, 4, 2, (1, 2), 1, (2, 3), 1),  # dilation and stride pairs
    (40, 4, 3, 1, 1, 2, 1),        # dilated, wide: im2col
    (4, 6, 3, 1, 1, 1, 2),         # two groups
    (4, 4, 3, 2, 1, 1, 4),         # depthwise, strided
    (3, 6, 3, 1, 1, 2, 3),         # depthwise with two outputs per channel, dilated
]


@pytest.mark.parametrize("c, oc, k, s, p, d, g", GENERAL_CONV_CASES)
def test_conv2d_dilation_and_groups(c, oc, k, s, p, d, g):
    x = RNG.standard_normal((2, c, 7, 6))
    w, b = RNG.standard_normal((oc, c // g, k, k)), RNG.standard_normal(oc)
    expected = ref_conv2d_general(x, w, b, s, p, d, g)
    for got in (conv_general_fwd(x, w, b, s, p, d, g), nn.conv2d(x, w, b, s, p, d, g)):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    got32 = conv_general_fwd(*(a.astype(np.float32) for a in (x, w, b)), s, p, d, g)
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, expected, rtol=1e-4, atol=1e-4)
    r = RNG.standard_normal(expected.shape)
    check_against_fd(conv_general_grad(x, w, b, r, s, p, d, g),
                     lambda x, w, b: np.sum(ref_conv2d_general(x, w, b, s, p, d, g) * r),
                     [x, w, b], (0, 1, 2))


@pytest.mark.parametrize("c, oc, k, s, p, d, g", GENERAL_CONV_CASES)
def test_conv2d_dilation_and_groups_match_torch(c, oc, k, s, p, d, g):
    torch = pytest.importorskip("torch")
    x = RNG.standard_normal((2, c, 7, 6))
    w, b = RNG.standard_normal((oc, c // g, k, k)), RNG.standard_normal(oc)
    tf = lambda x, w, b: torch.nn.functional.conv2d(x, w, b, s, p, d, g)  # noqa: E731
    out = tf(*map(torch.tensor, (x, w, b))).numpy()
    np.testing.assert_allclose(conv_general_fwd(x, w, b, s, p, d, g), out, rtol=1e-12, atol=1e-12)
    r = RNG.standard_normal(out.shape)
    expected = torch_grads(torch, lambda *t: (tf(*t) * torch.tensor(r)).sum(), [x, w, b])
    for got, e in zip(conv_general_grad(x, w, b, r, s, p, d, g), expected):
        np.testing.assert_allclose(got, e, rtol=1e-10, atol=1e-12)


def test_conv2d_groups_and_dilation_refuse_what_does_not_fit():
    x, w = RNG.standard_normal((1, 4, 5, 5)), RNG.standard_normal((2, 2, 3, 3))
    with pytest.raises(gradc.ShapeError, match="groups=3 must divide"):
        nn.conv2d(x, RNG.standard_normal((3, 1, 3, 3)), groups=3)
    with pytest.raises(gradc.ShapeError, match="weights expect 6 .3 per group, 2 groups"):
        nn.conv2d(x, RNG.standard_normal((2, 3, 3, 3)), groups=2)
    for bad in (0, True, 1.5):
        with pytest.raises(gradc.ArgumentError, match="groups="):
            nn.conv2d(x, w, groups=bad)
    with pytest.raises(gradc.ArgumentError, match="dilation=0"):
        nn.conv2d(x, w, groups=2, dilation=0)
    with pytest.raises(gradc.ShapeError):  # a dilated window wider than the image
        conv_general_fwd(x, w, None, 1, 0, 3, 2)


# --- batch and group normalisation ------------------------------------------------------------

def ref_batch_norm(x, gamma, beta, axis, mean=None, var=None, eps=1e-5):
    xs = np.moveaxis(x, axis, -1)
    if mean is None:
        mean = xs.reshape(-1, xs.shape[-1]).mean(0)
        var = xs.reshape(-1, xs.shape[-1]).var(0)
    return np.moveaxis((xs - mean) / np.sqrt(var + eps) * gamma + beta, -1, axis)


def ref_group_norm(x, groups, gamma, beta, eps=1e-5):
    g = x.reshape(x.shape[0], groups, -1)
    y = ((g - g.mean(2, keepdims=True)) / np.sqrt(g.var(2, keepdims=True) + eps)).reshape(x.shape)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return y * gamma.reshape(shape) + beta.reshape(shape)


bn_grad = gradc.grad(lambda x, g, b, r, axis: np.sum(nn.batch_norm(x, g, b, axis=axis) * r),
                     argnums=(0, 1, 2))
bn_eval_grad = gradc.grad(lambda x, g, b, m, v, r: np.sum(nn.batch_norm(x, g, b, mean=m, var=v)
                                                          * r), argnums=(0, 1, 2, 3, 4))
bn_stats = gradc.jit(lambda x, g, b, axis: nn.batch_norm(x, g, b, axis=axis, return_stats=True))
gn_grad = gradc.grad(lambda x, g, b, r, groups: np.sum(nn.group_norm(x, groups, g, b) * r),
                     argnums=(0, 1, 2))
gn_fwd = gradc.jit(lambda x, g, b, groups: nn.group_norm(x, groups, g, b))


@pytest.mark.parametrize("shape, axis", [((8, 3), 1), ((4, 3, 2, 5), 1), ((4, 2, 5, 3), -1)],
                         ids=["dense", "nchw", "channels_last"])
def test_batch_norm_training(shape, axis):
    x = RNG.standard_normal(shape)
    c = shape[axis]
    g, b, r = RNG.standard_normal(c), RNG.standard_normal(c), RNG.standard_normal(shape)
    y, mean, var = bn_stats(x, g, b, axis)
    np.testing.assert_allclose(y, ref_batch_norm(x, g, b, axis), rtol=1e-12, atol=1e-12)
    xs = np.moveaxis(x, axis, -1).reshape(-1, c)
    np.testing.assert_allclose(mean, xs.mean(0), rtol=1e-12)
    np.testing.assert_allclose(var, xs.var(0), rtol=1e-12)
    assert mean.shape == var.shape == (c,)
    np.testing.assert_allclose(nn.batch_norm(x, g, b, axis=axis), y, rtol=1e-12, atol=1e-12)
    check_against_fd(bn_grad(x, g, b, r, axis),
                     lambda x, g, b: np.sum(ref_batch_norm(x, g, b, axis) * r), [x, g, b],
                     (0, 1, 2), rtol=1e-5, atol=1e-6)


def test_batch_norm_evaluation_with_running_statistics():
    x = RNG.standard_normal((4, 3, 2, 2))
    g, b, m = RNG.standard_normal(3), RNG.standard_normal(3), RNG.standard_normal(3)
    v, r = RNG.random(3) + 0.5, RNG.standard_normal(x.shape)
    expected = ref_batch_norm(x, g, b, 1, m, v)
    np.testing.assert_allclose(nn.batch_norm(x, g, b, mean=m, var=v), expected, rtol=1e-12)
    check_against_fd(bn_eval_grad(x, g, b, m, v, r),
                     lambda *a: np.sum(ref_batch_norm(*a[:3], 1, a[3], a[4]) * r),
                     [x, g, b, m, v], (0, 1, 2, 3, 4), rtol=1e-5, atol=1e-6)
    with pytest.raises(gradc.ArgumentError, match="both mean= and var="):
        nn.batch_norm(x, mean=m)
    with pytest.raises(gradc.ShapeError, match=r"shape \(3,\) for axis 1"):
        nn.batch_norm(x, g[:2], b)
    with pytest.raises(gradc.ArgumentError, match="axis=4"):
        nn.batch_norm(x, axis=4)


def test_batch_norm_trains_with_running_statistics_kept_by_the_caller():
    """The pattern the docstring gives: statistics returned as aux, running ones updated after
    the step with PyTorch's rule (the unbiased variance), evaluation with them."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((16, 4)).astype(np.float32)
    params = {"W": rng.standard_normal((4, 3)).astype(np.float32),
              "g": np.ones(3, np.float32), "b": np.zeros(3, np.float32)}

    def loss(p, x):
        h, mean, var = nn.batch_norm(x @ p["W"], p["g"], p["b"], return_stats=True)
        return np.mean(h ** 3), (mean, var)

    step = gradc.train_step(loss, gradc.optim.SGD(0.1), has_aux=True)
    running_mean, running_var = np.zeros(3, np.float32), np.ones(3, np.float32)
    for _ in range(3):
        h = x @ params["W"]  # the batch statistics, in NumPy, before the step changes W
        _, (mean, var) = step(params, x)
        np.testing.assert_allclose(mean, h.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(var, h.var(0), rtol=1e-5, atol=1e-6)
        running_mean = 0.9 * running_mean + 0.1 * mean
        running_var = 0.9 * running_var + 0.1 * var * 16 / 15
    evaluate = gradc.jit(lambda p, x, m, v: nn.batch_norm(x @ p["W"], p["g"], p["b"], mean=m,
                                                          var=v))
    np.testing.assert_allclose(
        evaluate(params, x, running_mean, running_var),
        ref_batch_norm(x @ params["W"], params["g"], params["b"], 1, running_mean, running_var),
        rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape, groups", [((2, 6, 3, 3), 3), ((3, 4, 5), 1), ((2, 4, 2, 2), 4)],
                         ids=["groups", "layer", "instance"])
def test_group_norm(shape, groups):
    x = RNG.standard_normal(shape)
    c = shape[1]
    g, b, r = RNG.standard_normal(c), RNG.standard_normal(c), RNG.standard_normal(shape)
    expected = ref_group_norm(x, groups, g, b)
    for got in (gn_fwd(x, g, b, groups), nn.group_norm(x, groups, g, b)):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    check_against_fd(gn_grad(x, g, b, r, groups),
                     lambda x, g, b: np.sum(ref_group_norm(x, groups, g, b) * r), [x, g, b],
                     (0, 1, 2), rtol=1e-5, atol=1e-6)
    with pytest.raises(gradc.ArgumentError, match="divides the"):
        nn.group_norm(x, 5, g, b)


def test_batch_and_group_norm_match_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = RNG.standard_normal((4, 6, 3, 3))
    g, b, r = RNG.standard_normal(6), RNG.standard_normal(6), RNG.standard_normal(x.shape)
    m, v = RNG.standard_normal(6), RNG.random(6) + 0.5
    for training in (True, False):
        tf = lambda x, g, b: (F.batch_norm(x, torch.tensor(m), torch.tensor(v), g, b,  # noqa
                                           training=training) * torch.tensor(r)).sum()
        expected = torch_grads(torch, tf, [x, g, b])
        got = bn_grad(x, g, b, r, 1) if training else bn_eval_grad(x, g, b, m, v, r)[:3]
        for a, e in zip(got, expected):
            np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-12)
    tf = lambda x, g, b: (F.group_norm(x, 3, g, b) * torch.tensor(r)).sum()  # noqa: E731
    for a, e in zip(gn_grad(x, g, b, r, 3), torch_grads(torch, tf, [x, g, b])):
        np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-12)


# --- embedding --------------------------------------------------------------------------------

TABLE = RNG.standard_normal((7, 3))
IDX = np.array([[1, 3, 1, 6], [0, 1, 3, 1]])  # row 1 four times, row 3 twice; 2, 4, 5 unused

emb_fwd = gradc.jit(nn.embedding)
emb_grad = gradc.grad(lambda t, i, r: np.sum(nn.embedding(t, i) * r))


def test_embedding_forward():
    for got in (emb_fwd(TABLE, IDX), nn.embedding(TABLE, IDX)):
        assert got.shape == (2, 4, 3)
        np.testing.assert_array_equal(got, TABLE[IDX])
    np.testing.assert_array_equal(emb_fwd(TABLE, np.array([5, 5, 0])), TABLE[[5, 5, 0]])


def test_embedding_gradient_scatter_adds_repeated_indices():
    r = RNG.standard_normal((2, 4, 3))
    g = emb_grad(TABLE, IDX, r)
    expected = np.zeros_like(TABLE)
    for (i, j), row in np.ndenumerate(IDX):
        expected[row] += r[i, j]
    np.testing.assert_allclose(g, expected, rtol=1e-14, atol=1e-14)
    assert not g[[2, 4, 5]].any()
    check_against_fd([g], lambda t: np.sum(t[IDX] * r), [TABLE], (0,))


def test_embedding_negative_indices_are_out_of_range():
    """PyTorch's semantics, as cross_entropy's labels: a negative index raises. np.take's
    wrap-around read the last row for -1, a common padding id, silently; `table[idx]` in
    the traced code still counts from the end, as NumPy does."""
    idx = np.array([[-1, 6, 0, 3]])
    with pytest.raises(gradc.IndexOutOfRangeError, match="outside"):
        emb_fwd(TABLE, idx)
    with pytest.raises(gradc.IndexOutOfRangeError):
        emb_grad(TABLE, idx, np.ones((1, 4, 3)))
    with pytest.raises(IndexError, match="negative index"):
        gradc.nn.embedding(TABLE, idx)
    np.testing.assert_array_equal(gradc.jit(lambda t, i: t[i])(TABLE, idx), TABLE[idx])


@pytest.mark.parametrize("bad", [7, -8, 1000])
def test_embedding_index_out_of_range_raises(bad):
    """An index past the vocabulary must raise (as NumPy does), never read other memory."""
    with pytest.raises((IndexError, gradc.GradcError)):
        emb_fwd(TABLE, np.array([[0, bad, 1, 2]]))
    with pytest.raises((IndexError, gradc.GradcError)):
        emb_grad(TABLE, np.array([[0, bad, 1, 2]]), np.ones((1, 4, 3)))


# --- dropout, gelu, flatten -------------------------------------------------------------------

drop_fwd = gradc.jit(lambda x, m, rate: nn.dropout(x, m, rate))
gelu_fwd = gradc.jit(nn.gelu)
gelu_grad = gradc.grad(lambda x: np.sum(nn.gelu(x)))
flat_fwd = gradc.jit(lambda x, a: nn.flatten(x, a))


def test_dropout_mask_is_reproducible_and_has_the_rate():
    m = nn.dropout_mask(np.random.default_rng(3), (200, 50), 0.3)
    assert m.dtype == bool and m.shape == (200, 50)
    np.testing.assert_array_equal(m, np.random.default_rng(3).random((200, 50)) >= 0.3)
    assert abs(1 - m.mean() - 0.3) < 0.02


@pytest.mark.parametrize("rate", [0.0, 0.25, 0.5])
def test_dropout_forward(rate):
    x = RNG.standard_normal((4, 6)).astype(np.float32)
    mask = nn.dropout_mask(np.random.default_rng(7), x.shape, rate)
    expected = np.where(mask, x / np.float32(1 - rate), 0)
    for got in (drop_fwd(x, mask, rate), nn.dropout(x, mask, rate)):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    if rate == 0:
        np.testing.assert_array_equal(drop_fwd(x, mask, rate), x)


def test_dropout_rejects_a_rate_of_one():
    x = np.ones(3)
    with pytest.raises((ValueError, gradc.GradcError)):
        drop_fwd(x, np.ones(3, bool), 1.0)
    with pytest.raises(ValueError):
        nn.dropout(x, np.ones(3, bool), 1.0)


def test_gelu_forward_and_gradient():
    x = np.linspace(-6, 6, 25)
    for got in (gelu_fwd(x), nn.gelu(x)):
        np.testing.assert_allclose(got, ref_gelu(x), rtol=1e-12, atol=1e-15)
    got = gelu_fwd(np.array([0.0, 30.0, -30.0]))
    np.testing.assert_allclose(got, [0.0, 30.0, 0.0], atol=1e-12)
    check_against_fd([gelu_grad(x)], lambda x: np.sum(ref_gelu(x)), [x], (0,))


def test_gelu_exact_form_and_its_gradient():
    """approximate=False: PyTorch's default, the erf form (the tanh form is up to 2e-3 off)."""
    import scipy.special
    x = np.linspace(-6, 6, 25)

    def exact(x):
        return 0.5 * x * (1 + scipy.special.erf(x / np.sqrt(2)))

    f = gradc.value_and_grad(lambda x: np.sum(nn.gelu(x, approximate=False) * x))
    value, g = f(x)
    assert value == pytest.approx(np.sum(exact(x) * x), rel=1e-13)
    check_against_fd([g], lambda x: np.sum(exact(x) * x), [x], (0,))
    np.testing.assert_allclose(nn.gelu(x, approximate=False), exact(x), rtol=1e-13, atol=1e-15)
    with pytest.raises(gradc.ArgumentError, match="approximate is True"):
        gradc.jit(lambda x: nn.gelu(x, approximate="tanh"))(x)


def test_flatten():
    x = RNG.standard_normal((2, 3, 2, 2))
    for a, shape in [(1, (2, 12)), (2, (2, 3, 4)), (0, (24,))]:
        for got in (flat_fwd(x, a), nn.flatten(x, a)):
            assert got.shape == shape
            np.testing.assert_array_equal(got, x.reshape(shape))


# --- a 3-step tanh RNN --------------------------------------------------------------------------

RNN_P = {"W": 0.5 * RNG.standard_normal((4, 4)), "U": 0.5 * RNG.standard_normal((3, 4)),
         "b": 0.1 * RNG.standard_normal(4), "h0": 0.1 * RNG.standard_normal((2, 4))}
RNN_XS = RNG.standard_normal((3, 2, 3))   # time, batch, features
RNN_R = RNG.standard_normal((2, 4))


def rnn_loss(params, xs, r):
    h = params["h0"]
    for t in range(xs.shape[0]):
        h = np.tanh(h @ params["W"] + xs[t] @ params["U"] + params["b"])
    return np.sum(h * r)


rnn_grad = gradc.grad(rnn_loss, argnums=(0, 1))


def test_rnn_gradients_match_finite_differences():
    gp, gxs = rnn_grad(RNN_P, RNN_XS, RNN_R)
    params = {k: v.copy() for k, v in RNN_P.items()}
    for k in params:
        expected = numeric_grad(lambda v: rnn_loss(params, RNN_XS, RNN_R), [params[k]], 0)
        np.testing.assert_allclose(gp[k], expected, rtol=1e-6, atol=1e-8, err_msg=k)
    xs = RNN_XS.copy()
    np.testing.assert_allclose(gxs, numeric_grad(lambda xs: rnn_loss(RNN_P, xs, RNN_R), [xs], 0),
                               rtol=1e-6, atol=1e-8)


# --- PyTorch ----------------------------------------------------------------------------------

def torch_grads(torch, f, arrays):
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    f(*ts).backward()
    return [t.grad.numpy() for t in ts]


@pytest.mark.parametrize("stride, padding", CONV_CASES)
def test_conv2d_matches_torch(stride, padding):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    r = RNG.standard_normal(ref_conv2d(X, W, B, stride, padding).shape)
    out = F.conv2d(torch.tensor(X), torch.tensor(W), torch.tensor(B), stride, padding).numpy()
    np.testing.assert_allclose(conv_fwd(X, W, B, stride, padding), out, rtol=1e-12, atol=1e-12)
    expected = torch_grads(torch, lambda x, w, b: (F.conv2d(x, w, b, stride, padding)
                                                   * torch.tensor(r)).sum(), [X, W, B])
    for g, e in zip(conv_grad(X, W, B, r, stride, padding), expected):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kernel, stride, padding", POOL_CASES)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_matches_torch(kind, kernel, stride, padding):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = pool_input(kernel, stride, padding)
    tf = ((lambda t: F.max_pool2d(t, kernel, stride, padding)) if kind == "max" else
          (lambda t: F.avg_pool2d(t, kernel, stride, padding, count_include_pad=True)))
    out = tf(torch.tensor(x)).numpy()
    fwd, grad = (max_fwd, max_grad) if kind == "max" else (avg_fwd, avg_grad)
    np.testing.assert_allclose(fwd(x, kernel, stride, padding), out, rtol=1e-12, atol=1e-12)
    r = RNG.standard_normal(out.shape)
    (expected,) = torch_grads(torch, lambda t: (tf(t) * torch.tensor(r)).sum(), [x])
    np.testing.assert_allclose(grad(x, r, kernel, stride, padding), expected, rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("kernel, stride, padding", [(2, None, 0), (3, 1, 1), (3, 2, 1)])
def test_max_pool_ties_and_nan_match_torch(kernel, stride, padding):
    """Ties (windows of ReLU zeros, repeated values) send the gradient where PyTorch does, to
    the first maximum; a NaN is the maximum, as in PyTorch."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = np.maximum(np.round(RNG.standard_normal((2, 2, 6, 6)), 0), 0.0)
    x[1, 1, 2, 3] = np.nan
    tf = lambda t: F.max_pool2d(t, kernel, stride, padding)  # noqa: E731
    out = tf(torch.tensor(x)).numpy()
    np.testing.assert_array_equal(max_fwd(x, kernel, stride, padding), out)
    r = RNG.standard_normal(out.shape)
    (expected,) = torch_grads(torch, lambda t: (tf(t) * torch.tensor(r)).sum(), [x])
    np.testing.assert_allclose(max_grad(x, r, kernel, stride, padding), expected, rtol=1e-12,
                               atol=1e-12)


def test_layer_norm_matches_torch():
    torch = pytest.importorskip("torch")
    r = RNG.standard_normal(LN_X.shape)
    expected = torch_grads(torch, lambda x, g, b: (torch.nn.functional.layer_norm(
        x, (5,), g, b, eps=1e-5) * torch.tensor(r)).sum(), [LN_X, LN_G, LN_B])
    for g, e in zip(ln_grad(LN_X, LN_G, LN_B, r), expected):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)
    out = torch.nn.functional.layer_norm(torch.tensor(LN_X), (4, 5), torch.tensor(LN_G2)).numpy()
    np.testing.assert_allclose(ln_fwd(LN_X, LN_G2, None, (1, 2)), out, rtol=1e-10, atol=1e-12)


def test_embedding_matches_torch():
    torch = pytest.importorskip("torch")
    r = RNG.standard_normal((2, 4, 3))
    t = torch.tensor(TABLE, requires_grad=True)
    (torch.nn.functional.embedding(torch.tensor(IDX), t) * torch.tensor(r)).sum().backward()
    np.testing.assert_allclose(emb_grad(TABLE, IDX, r), t.grad.numpy(), rtol=1e-14, atol=1e-14)


def test_gelu_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.linspace(-6, 6, 25)
    (expected,) = torch_grads(torch, lambda t: torch.nn.functional.gelu(t, approximate="tanh")
                              .sum(), [x])
    out = torch.nn.functional.gelu(torch.tensor(x), approximate="tanh").numpy()
    np.testing.assert_allclose(gelu_fwd(x), out, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(gelu_grad(x), expected, rtol=1e-10, atol=1e-14)


def test_rnn_matches_torch():
    torch = pytest.importorskip("torch")
    names = list(RNN_P)
    xs_t, r_t = torch.tensor(RNN_XS), torch.tensor(RNN_R)

    def f(*ts):
        p = dict(zip(names, ts))
        h = p["h0"]
        for t in range(3):
            h = torch.tanh(h @ p["W"] + xs_t[t] @ p["U"] + p["b"])
        return (h * r_t).sum()

    expected = torch_grads(torch, f, [RNN_P[k] for k in names])
    gp, _ = rnn_grad(RNN_P, RNN_XS, RNN_R)
    for k, e in zip(names, expected):
        np.testing.assert_allclose(gp[k], e, rtol=1e-10, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("kernel", [2, 3, (2, 3)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_max_pool_over_tiles_keeps_pytorchs_rule_for_ties_and_nan(kernel, dtype):
    """Windows that tile the image take the max_pool_tiles op (a max over the windows' axes
    and, for the gradient, a select at the window's argmax): values and gradients must be the
    gather's exactly, ties going to the first maximum in row-major window order, a NaN to the
    NaN, as PyTorch does."""
    from gradc.ops.registry import get_op
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = np.round(RNG.standard_normal((2, 3, 2 * kh, 3 * kw)), 1).astype(dtype)  # (many ties)
    x[0, 0, :kh, :kw] = 0.5  # a window of equal values
    x[1, 2, kh, kw + 1] = np.nan
    attrs = dict(kh=kh, kw=kw, sh=kh, sw=kw, ph=0, pw=0)
    idx = get_op("pool_argmax").ref(x, **attrs).reshape(2, 3, -1)
    flat = x.reshape(2, 3, -1)
    np.testing.assert_array_equal(max_fwd(x, kernel, None, 0),
                                  np.take_along_axis(flat, idx, 2).reshape(2, 3, 2, 3))
    r = RNG.standard_normal((2, 3, 2, 3)).astype(dtype)
    expected = np.zeros_like(flat)
    np.put_along_axis(expected, idx, r.reshape(2, 3, -1), 2)  # (each pixel wins one window)
    g = max_grad(x, r, kernel, None, 0)
    np.testing.assert_array_equal(g, expected.reshape(x.shape))
    assert g.dtype == dtype


def test_mse_refuses_shapes_that_broadcast_to_another_and_dropout_mask_checks_its_rate():
    """mse of (N,) against (N, 1) averaged the (N, N) broadcast (2.5 where 0 was meant): a
    ShapeError, a number as the target still works; dropout_mask(rate=1.5) kept nothing,
    silently, where dropout refuses the rate."""
    pred = np.arange(4.0)
    with pytest.raises(gradc.ShapeError, match="reshape"):
        gradc.jit(lambda p, t: gradc.nn.mse(p, t))(pred, pred[:, None])
    assert gradc.jit(lambda p: gradc.nn.mse(p, 1.0))(pred) == np.mean((pred - 1) ** 2)
    for rate in (1.5, -0.5):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            gradc.nn.dropout_mask(np.random.default_rng(0), (3,), rate)


def test_the_usual_slips_with_nn_functions_say_what_to_write():
    """softmax(x, dim=1) (PyTorch's name), float labels to cross_entropy, float indices to
    embedding (or its arguments swapped) named internal functions and ops."""
    x = np.ones((4, 3))
    for fun, words in [(lambda x: nn.softmax(x, dim=1), "write axis="),
                       (lambda x: nn.cross_entropy(x, np.zeros(4)), "astype\\(np.int64\\)"),
                       (lambda x: nn.embedding(x, np.array([0.0, 1.0])), "astype\\(np.int64\\)"),
                       (lambda x: nn.embedding(np.array([0, 1]), x), "table first")]:
        with pytest.raises(gradc.ArgumentError, match=words):
            gradc.jit(fun)(x)


def test_what_a_fuzzing_round_against_pytorch_found_in_argument_handling():
    """Arrays passed by keyword lost the user's line from nn's errors; cross_entropy of constant
    logits and traced labels went down NumPy's path and branched on a traced value; a bias that
    was no array (a number) raised AttributeError, and one of another shape was reshaped."""
    w = RNG.standard_normal((3, 2, 3, 3))
    with pytest.raises(gradc.ShapeError, match=r"test_nn_layers\.py:\d+: conv2d: input has"):
        gradc.jit(lambda x: nn.conv2d(x=x[:, :1], w=w))(X)
    with pytest.raises(gradc.ArgumentError, match=r"test_nn_layers\.py:\d+: dropout rate"):
        gradc.jit(lambda z: nn.dropout(x=z, mask=z > 0, rate=1.5))(X)
    logits = RNG.standard_normal((4, 5))
    labels = np.array([0, 4, 2, 1])
    want = -np.mean(logits[np.arange(4), labels] - np.log(np.exp(logits).sum(1)))
    assert gradc.jit(lambda y: nn.cross_entropy(logits, y))(labels) == pytest.approx(want)
    for bias in (0.5, np.zeros((3, 1))):
        with pytest.raises(gradc.ShapeError, match=r"bias b\[OC\] of shape \(3,\)"):
            gradc.jit(lambda x: nn.conv2d(x, w, bias))(X)
    np.testing.assert_allclose(gradc.jit(lambda x: nn.conv2d(x, w, [1.0, 2.0, 3.0]))(X),
                               nn.conv2d(X, w) + np.array([1.0, 2.0, 3.0])[:, None, None])


def test_layer_norm_checks_gamma_beta_and_eps():
    """PyTorch's layer_norm(x, normalized_shape, weight, bias) written against gradc's
    layer_norm(x, gamma, beta, eps, axis) took (5,) as gamma (5x the output) and shifted the
    rest along; a (3, 1) gamma scaled rows. Refused by name; the shapes that scale the
    normalized axes (D,), (1, D), a number, a list of floats, axis tuples, still work."""
    x = RNG.standard_normal((3, 5))
    ok = [lambda x: gradc.nn.layer_norm(x, np.ones(5), np.zeros(5)),
          lambda x: gradc.nn.layer_norm(x, 2.0, 1.0),
          lambda x: gradc.nn.layer_norm(x, np.full((1, 5), 3.0)),
          lambda x: gradc.nn.layer_norm(x, [1.0, 2.0, 3.0, 4.0, 5.0]),
          lambda x: gradc.nn.layer_norm(x, np.ones((3, 5)), axis=(0, 1)),
          lambda x: gradc.nn.layer_norm(x, np.ones((3, 1)), axis=0)]
    for f in ok:
        np.testing.assert_allclose(gradc.jit(f)(x), f(x), rtol=1e-12)
    for f, error, text in (
            (lambda x: gradc.nn.layer_norm(x, (5,)), gradc.ArgumentError, "normalized_shape"),
            (lambda x: gradc.nn.layer_norm(x, np.ones(5), np.ones(5), np.zeros(5)),
             gradc.ArgumentError, "eps is a number"),
            (lambda x: gradc.nn.layer_norm(x, np.ones((3, 1))), gradc.ShapeError,
             r"gamma of shape \(3, 1\).*shape \(5,\)"),
            (lambda x: gradc.nn.layer_norm(x, None, np.ones(5), axis=0), gradc.ShapeError,
             r"beta of shape \(5,\).*shape \(3, 1\)")):
        with pytest.raises(error, match=text):
            gradc.jit(f)(x)


def test_an_empty_batch_through_pooling_group_norm_and_flatten():
    """A batch of 0 images (PyTorch takes it) was refused: reshapes with -1, which NumPy cannot
    infer in an empty array; the max-pool gradient's error named no line."""
    x = np.zeros((0, 3, 4, 4))
    for f in (lambda x: gradc.nn.max_pool2d(x, 2), lambda x: gradc.nn.max_pool2d(x, 3, 1, 1),
              lambda x: gradc.nn.group_norm(x, 3), lambda x: gradc.nn.flatten(x)):
        assert gradc.jit(f)(x).shape == f(x).shape
        grad = gradc.grad(lambda x: np.sum(f(x)))(x)
        assert grad.shape == x.shape


def test_pytorchs_keywords_say_what_to_write():
    """reduction=, ignore_index=, ceil_mode=... (PyTorch's) were a bare 'unexpected keyword
    argument'; each now says what gradc's function does and what to write, with the line."""
    x, y = RNG.standard_normal((4, 3)), np.array([0, 1, 2, 1])
    for call, text in ((lambda: gradc.nn.cross_entropy(x, y, reduction="none"), "per-sample"),
                       (lambda: gradc.nn.cross_entropy(x, y, ignore_index=-100), "np.where"),
                       (lambda: gradc.nn.mse(x, x, reduction="sum"), "per-element"),
                       (lambda: gradc.nn.max_pool2d(np.ones((1, 1, 4, 4)), 2, ceil_mode=True),
                        "np.pad")):
        with pytest.raises(gradc.ArgumentError, match=rf"test_nn_layers\.py:\d+: .* takes no .*"
                                                      rf"{text}"):
            call()
    with pytest.raises(gradc.ArgumentError, match="takes no reduction="):
        gradc.jit(lambda x, y: gradc.nn.cross_entropy(x, y, reduction="sum"))(x, y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_of_a_fully_masked_row_is_uniform_on_plain_arrays_and_traced(dtype):
    """A row of finfo.min (Hugging Face's attention mask) or of huge equal logits: NumPy's
    exp(x - max) / sum is uniform. The plain-array path (and the reference the passes fold
    constants with) computed exp(x - logsumexp(x)), which lost log(n) beside the huge max and
    gave ones."""
    rows = np.array([[np.finfo(dtype).min] * 4, [1e17, 1e17, 1e17, 1e17],
                     [-1e9, -1e9 + 1, -1e9, -1e9]], dtype)
    e = np.exp(rows - rows.max(-1, keepdims=True))
    want = e / e.sum(-1, keepdims=True)
    np.testing.assert_allclose(nn.softmax(rows, axis=-1), want, rtol=1e-6)
    np.testing.assert_allclose(gradc.jit(lambda r: nn.softmax(r, axis=-1))(rows), want, rtol=1e-6)
    ones = np.ones(4, dtype)
    np.testing.assert_allclose(gradc.jit(lambda x: x * nn.softmax(rows[0]))(ones), 0.25, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_of_rows_with_infinities_and_nan_is_scipys(dtype):
    """fuzz46a: a row holding +inf gave [0, nan, 0] (shifted by 0 where its max was not
    finite); SciPy's, PyTorch's and JAX's softmax are NaN throughout there, as for a NaN or a
    row of -inf (0/0). log_softmax and logsumexp already followed SciPy."""
    rows = np.array([[1.0, np.inf, 2.0], [1.0, np.nan, 2.0], [-np.inf] * 3,
                     [-np.inf, 0.0, 1.0]], dtype)
    for got in (nn.softmax(rows, axis=-1), gradc.jit(lambda r: nn.softmax(r, axis=-1))(rows)):
        assert np.isnan(got[:3]).all()
        np.testing.assert_allclose(got[3], [0, 1 / (1 + np.e), np.e / (1 + np.e)], rtol=1e-6)


def test_a_product_read_twice_is_one_rounded_value_in_every_reader():
    """`z = x * c; z - z.max()`: a fused multiply-add in the subtraction gave it the exact
    product where the max had the rounded one: a scaled, fully masked attention row of -1e30
    (float32) shifted by the product's rounding error, 1e23, whose exp is inf: NaN, and a
    constant's `y - y.mean()` was not 0 (codegen: rt.FASTMATH has no `contract`)."""
    masked = np.full((2, 4), -1e30, np.float32)
    scale = 0.35355339  # (1 / sqrt(8): not a power of two, so x * scale is rounded)

    def hand_softmax(x):
        z = x * scale
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    for f in (hand_softmax, lambda x: nn.softmax(x * scale, axis=-1)):
        np.testing.assert_array_equal(gradc.jit(f)(masked), np.full((2, 4), 0.25, np.float32))
    x = np.array([1.0, 2.0, 3.0, -2.0, 7.0, -4.0, 0.5])
    got = gradc.jit(lambda x: nn.logsumexp(x * 1e300))(x)
    np.testing.assert_allclose(got, 7e300, rtol=1e-12)
    y = gradc.jit(lambda x: (x * 1.1 - (x * 1.1).mean(), np.std(x * 1.1)))(np.full(1000, 0.3))
    assert not y[0].any() and y[1] == 0.0


def test_products_that_cancel_cancel_exactly_as_numpys_do():
    """No fused multiply-adds in CPU kernels (rt.FASTMATH): a*a - b*b at a == b, a variance of
    equal values as E[x^2] - E[x]^2 and a cross product of parallel vectors are NumPy's exact
    zeros (contracted, they were the products' rounding errors: sqrt NaN, 1/0 finite)."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal(64) * 1e3
    b = a.copy()
    c = rng.standard_normal(64)

    def cancels(a, b, c):
        return np.sqrt(a * a - b * b), 1.0 / (a * c - b * c), np.mean(a * a) - np.mean(b * b)

    with np.errstate(divide="ignore"):
        for got, want in zip(gradc.jit(cancels)(a, b, c), cancels(a, b, c)):
            np.testing.assert_array_equal(got, want)


class _Net:
    """Arrays a model keeps, read by gradc.nn inside its jitted forward."""

    def __init__(self):
        self.W = RNG.standard_normal((4, 2, 3, 3))  # (a dilated kernel: spread out by gradc.nn)
        self.running_var = np.full(2, 4.0)
        self.wpe = RNG.standard_normal((6, 3))  # (a GPT's position table)

    def forward(self, x):
        h = nn.conv2d(x, self.W, dilation=2)
        h = nn.batch_norm(h[:, :2], mean=np.zeros(2), var=self.running_var)
        return h.sum((2, 3)) @ nn.embedding(self.wpe, np.arange(2))[:, :2], self.running_var


def test_nn_on_arrays_a_model_keeps_reads_them_on_every_call():
    """gradc.nn computed with NumPy alone on the arrays it was given that were not traced (a
    dilated kernel spread out, a batch norm's var + eps, embedding(self.wpe, np.arange(T))):
    compiled in, stale after the model's weights changed, in place or rebound (fuzz41c).
    Inside a trace they are values of the graph now, read live where they come from outside."""
    net, x = _Net(), RNG.standard_normal((2, 2, 7, 7))
    forward = gradc.jit(net.forward)
    for change in (lambda: None, lambda: net.W.__imul__(0.5),
                   lambda: setattr(net, "running_var", np.full(2, 9.0)),
                   lambda: net.wpe.__iadd__(1.0), lambda: setattr(net, "W", -net.W)):
        change()
        for got, want in zip(forward(x), net.forward(x)):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_an_empty_kernel_and_nn_refusals_outside_a_trace_name_the_line():
    """conv2d of weights (1, 1, 0, 2) was a SyntaxError from generated code (jit, grad) and a
    0-d array eagerly; PyTorch refuses it. On plain arrays gradc.nn's refusals named no line."""
    x, w = np.ones((1, 1, 5, 5)), np.ones((1, 1, 0, 2))
    for call in (lambda: nn.conv2d(x, w), lambda: gradc.jit(nn.conv2d)(x, w),
                 lambda: gradc.grad(lambda x, w: nn.conv2d(x, w).sum())(x, w)):
        with pytest.raises(gradc.ShapeError, match=r"test_nn_layers\.py:\d+: conv2d takes "
                                                   r"non-empty weights"):
            call()
    with pytest.raises(gradc.ArgumentError, match=r"test_nn_layers\.py:\d+: stride=0"):
        nn.conv2d(x, np.ones((1, 1, 2, 2)), stride=0)


def test_nn_on_arrays_the_function_made_stays_numpy():
    """Only where an argument is traced or comes from outside are gradc.nn's arrays graph
    values: on arrays the function made its result is NumPy's, so float() of it, an `if` on
    it and an eps given as a 0-d array (np.load's) work as in NumPy (refused for a while today:
    fuzz41d)."""
    def f(x):
        scale = float(nn.softmax(np.array([1.0, 2.0]))[1])  # (a number from made arrays)
        h = nn.layer_norm(x, np.ones(3), np.zeros(3), eps=np.array(1e-5))
        return h * scale if nn.relu(np.array([1.0]))[0] > 0 else h

    x = np.array([1.0, 2.0, 4.0])
    np.testing.assert_allclose(gradc.jit(f)(x), f(x), rtol=1e-12)


GATE = np.array([0.3, -1.0])


def test_python_code_on_nn_of_small_outside_arrays_runs_as_numpy():
    """`if nn.sigmoid(GATE)[0] > 0.5` and int(np.argmax(nn.softmax(PRIOR))) on small outside
    arrays: NumPy's computation (the arrays checked by contents: a change traces again); it
    was refused as a branch on traced values for a while today (fuzz41d)."""
    def f(x):
        return x * 2.0 if nn.sigmoid(GATE)[0] > 0.5 else x * int(np.argmax(nn.softmax(GATE)))

    jitted, x = gradc.jit(f), np.ones(2)
    for gate in ((0.3, -1.0), (-2.0, 1.0)):
        GATE[:] = gate
        np.testing.assert_array_equal(jitted(x), f(x))
