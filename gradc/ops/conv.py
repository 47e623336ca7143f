"""Sliding windows: `unfold` (im2col) and its VJP `fold` (col2im, a scatter-add); the direct
convolution `conv2d` and its two VJPs; `pool_argmax`, the windows' argmax for max pooling, and
`max_pool_tiles`, max pooling whose windows tile the image.

unfold(x[N,C,H,W]) -> patches[N,OH,OW,C,KH,KW], where patches[n,a,b,c,i,j] =
x[n, c, a*sh - ph + i, b*sw - pw + j] (`pad` outside the image; strides sh, sw and paddings
ph, pw per axis). Rows of the patches are contiguous (C*KH*KW each), so a wide convolution is
one matmul on them, and padded average pooling a reduction over their last two axes. All these
ops are loop kernels of their own.
"""
import contextlib

import numpy as np

from ..errors import ShapeError
from . import fn
from .elementwise import lit
from .registry import COMPOSITE, KERNEL, OpDef, register


def out_size(size, k, stride, padding):
    return (size + 2 * padding - k) // stride + 1


def _geometry(x_shape, kh, kw, sh, sw, ph, pw):
    n, c, h, w = x_shape
    oh, ow = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    if oh <= 0 or ow <= 0:
        raise ShapeError(f"a {kh}x{kw} window does not fit a {h}x{w} image with padding {(ph, pw)}")
    return n, c, h, w, oh, ow


WINDOW = ("kh", "kw", "sh", "sw", "ph", "pw")


def _window(attrs):
    return tuple(attrs[k] for k in WINDOW)


def _unfold_infer(inputs, kh, kw, sh, sw, ph, pw, pad):
    (x,) = inputs
    if x.ndim != 4:
        raise ShapeError(f"sliding windows take NCHW arrays, got shape {x.shape}")
    n, c, h, w, oh, ow = _geometry(x.shape, kh, kw, sh, sw, ph, pw)
    return (n, oh, ow, c, kh, kw), x.dtype


def _unfold_ref(x, kh, kw, sh, sw, ph, pw, pad):
    n, c, h, w, oh, ow = _geometry(x.shape, kh, kw, sh, sw, ph, pw)
    xp = np.full((n, c, h + 2 * ph, w + 2 * pw), pad, x.dtype)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    out = np.empty((n, oh, ow, c, kh, kw), x.dtype)
    for i in range(kh):
        for j in range(kw):
            win = xp[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw]  # n,c,oh,ow
            out[:, :, :, :, i, j] = win.transpose(0, 2, 3, 1)
    return out


def _fold_ref(g, x_shape, kh, kw, sh, sw, ph, pw):
    n, c, h, w, oh, ow = _geometry(x_shape, kh, kw, sh, sw, ph, pw)
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), g.dtype)
    for i in range(kh):
        for j in range(kw):
            xp[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw] += g[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return xp[:, :, ph:ph + h, pw:pw + w]


def _window_loops(k, x_shape, window):
    """Open the loops over (n, a, b, c, i, j) and compute the source pixel (y, z) and whether it
    is inside the image; returns the flat patch index."""
    kh_, kw_, sh_, sw_, ph_, pw_ = window
    n, c, h, w, oh, ow = _geometry(x_shape, *window)
    N, C, H, W = (k.param(s, v) for s, v in zip(("N", "C", "H", "W"), (n, c, h, w)))
    OH, OW = k.param("OH", oh), k.param("OW", ow)
    KH, KW = k.param("KH", kh_), k.param("KW", kw_)
    SH, SW, PH, PW = (k.param(s, v) for s, v in zip(("SH", "SW", "PH", "PW"), (sh_, sw_, ph_, pw_)))
    k.line(f"for n in range({N}):")
    k.line(f"    for a in range({OH}):")
    k.line(f"        for b in range({OW}):")
    k.line(f"            for c in range({C}):")
    k.line(f"                row = (((n * {OH} + a) * {OW} + b) * {C} + c) * {KH} * {KW}")
    k.line(f"                for i in range({KH}):")
    k.line(f"                    y = a * {SH} - {PH} + i")
    k.line(f"                    for j in range({KW}):")
    k.line(f"                        z = b * {SW} - {PW} + j")
    k.line(f"                        inside = y >= 0 and y < {H} and z >= 0 and z < {W}")
    k.line(f"                        src = ((n * {C} + c) * {H} + y) * {W} + z")
    return f"row + i * {KW} + j"


def _unfold_kernel(k):
    patch = _window_loops(k, k.inputs[0].shape, _window(k.attr))
    with k.indent(6):
        k.line(f"out[{patch}] = x0[src] if inside else {lit(k.attr['pad'], k.output.dtype)}")


def _fold_kernel(k):
    k.line(f"for t in range({k.size(k.output)}):")
    k.line(f"    out[t] = {k.zero}")
    patch = _window_loops(k, k.attr["x_shape"], _window(k.attr))
    with k.indent(6):
        k.line("if inside:")
        k.line(f"    out[src] += x0[{patch}]")


def _unfold_vjp(node, g):
    window = {k: node.attr[k] for k in WINDOW}
    return [node.output.graph.apply("fold", (g,), x_shape=node.inputs[0].shape, **window)]


def _fold_vjp(node, g):
    window = {k: node.attr[k] for k in WINDOW}
    return [node.output.graph.apply("unfold", (g,), pad=0.0, **window)]


# CUDA: the launches of cuda_rt.py's kernel for this op: (program, node, out Buf, input Bufs)
def _cuda_windows(prog, node, out, ins):
    """unfold (a thread per output element) and fold (its scatter-add, into a zeroed output)."""
    window = _window(node.attr)
    x_shape = node.inputs[0].shape if node.op == "unfold" else node.attr["x_shape"]
    n, c, h, w, oh, ow = _geometry(x_shape, *window)
    size = n * oh * ow * c * window[0] * window[1]
    geometry = [c, h, w, oh, ow, *window]
    if node.op == "unfold":
        pad = np.array(node.attr["pad"], node.output.dtype)[()]
        return [prog.launch("unfold", [out, ins[0], size, *geometry, pad], size)]
    return [prog.fill_zero(out, node), prog.launch("fold", [out, ins[0], size, *geometry], size)]


register(OpDef("unfold", KERNEL, _unfold_infer, ref=_unfold_ref, vjp=_unfold_vjp,
               kernel=_unfold_kernel, cuda=_cuda_windows))
register(OpDef("fold", KERNEL,
               lambda inputs, x_shape, **window: (tuple(x_shape), inputs[0].dtype),
               ref=_fold_ref, vjp=_fold_vjp, kernel=_fold_kernel, cuda=_cuda_windows))


# --- direct convolution ------------------------------------------------------------------------
# conv2d(x[N,C,H,W], w[O,C,KH,KW]) -> y[N,O,OH,OW], y[n,o,a,b] = sum over c,i,j of
# w[o,c,i,j] * x[n, c, a*sh + i, b*sw + j]: PyTorch's conv2d without bias or padding (gradc.nn
# pads the image first, with `unslice`, so every window is inside it and the loops need no
# bounds tests: a train step of a padded 3 -> 16 channel 3x3 layer on 32x16x16 took 2.9 ms
# with bounds-checked border loops, 0.44 ms padding first). Its two
# VJPs are ops of their own, and the three close under differentiation (each is bilinear; the
# VJP of each is one of the others), so grad of grad needs nothing else.
# Why not im2col + GEMM for narrow layers: on the CNN benchmark (1 -> 8 channels, 3x3,
# 32x28x28) unfold alone took 690 us, the products with K = 9 ran at 7-14 GFLOP/s in BLAS, and
# transposes around them cost 230 us more; these loops read each image once and write NCHW.
# Wide layers are another matter (see gradc.nn.DIRECT_MAX_TAPS).

CONV = ("sh", "sw")


def _conv_geometry(x_shape, w_shape, sh, sw):
    n, c, h, w = x_shape
    o, c2, kh, kw = w_shape
    if c != c2:
        raise ShapeError(f"conv2d: input has {c} channels, weights expect {c2}")
    return (*_geometry(x_shape, kh, kw, sh, sw, 0, 0), o, kh, kw)


def _conv_infer(inputs, sh, sw):
    x, w = inputs
    if x.ndim != 4 or w.ndim != 4:
        raise ShapeError(f"conv2d takes NCHW input and OCKK weights, got {x.shape}, {w.shape}")
    n, c, h, wd, oh, ow, o, kh, kw = _conv_geometry(x.shape, w.shape, sh, sw)
    return (n, o, oh, ow), x.dtype


def _shifted_windows(x, kh, kw, sh, sw):
    """(i, j, x[:, :, rows, cols]) for each window offset: the (N, C, OH, OW) pixels it reads."""
    n, c, h, w, oh, ow = _geometry(x.shape, kh, kw, sh, sw, 0, 0)
    for i in range(kh):
        for j in range(kw):
            yield i, j, x[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]


def _conv_ref(x, w, sh, sw):
    out = 0
    for i, j, win in _shifted_windows(x, w.shape[2], w.shape[3], sh, sw):
        out = out + np.einsum("ncab,oc->noab", win, w[:, :, i, j])
    return np.asarray(out, x.dtype)


def _conv_grad_input_ref(g, w, x_shape, sh, sw):
    out = np.zeros(x_shape, g.dtype)
    oh, ow = g.shape[2:]
    for i in range(w.shape[2]):
        for j in range(w.shape[3]):
            out[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw] += \
                np.einsum("noab,oc->ncab", g, w[:, :, i, j])
    return out


def _conv_grad_weight_ref(x, g, kh, kw, sh, sw):
    out = np.zeros((g.shape[1], x.shape[1], kh, kw), x.dtype)
    for i, j, win in _shifted_windows(x, kh, kw, sh, sw):
        out[:, :, i, j] = np.einsum("noab,ncab->oc", g, win)
    return out


def _conv_params(k, x_shape, w_shape, attrs):
    """Sizes are kernel parameters; the window (KH, KW) and strides are literals, so the loops
    over a window unroll and strided accesses have known steps (one kernel per window shape and
    stride, shared by every image size, batch and channel count)."""
    n, c, h, w, oh, ow, o, kh, kw = _conv_geometry(x_shape, w_shape, attrs["sh"], attrs["sw"])
    names = ("N", "C", "H", "W", "OH", "OW", "O")
    p = dict(zip(names, (k.param(s, v) for s, v in zip(names, (n, c, h, w, oh, ow, o)))))
    p.update(KH=kh, KW=kw, SH=attrs["sh"], SW=attrs["sw"], PH=0, PW=0)
    k.line(f"a_lo, a_hi, b_lo, b_hi = 0, {p['OH']}, 0, {p['OW']}  # every window is inside")
    return p


@contextlib.contextmanager
def _planes(k, p, outer):
    """Loops over images n and channel pairs (o, c), `outer` ("o" or "c") the outer of the
    two; sets yp and xp (offsets of the output and input planes) and wp (of the weights)."""
    inner = "c" if outer == "o" else "o"
    k.line(f"for n in range({p['N']}):")
    k.line(f"    for {outer} in range({p[outer.upper()]}):")
    k.line(f"        for {inner} in range({p[inner.upper()]}):")
    k.line(f"            yp = (n * {p['O']} + o) * {p['OH']} * {p['OW']}")
    k.line(f"            xp = (n * {p['C']} + c) * {p['H']} * {p['W']}")
    k.line(f"            wp = (o * {p['C']} + c) * {p['KH'] * p['KW']}")
    with k.indent(3):
        yield


def _interior_rows(k, p, interior):
    """The loop over the output rows a_lo..a_hi, and in them over the columns
    b = 0..b_hi-b_lo (column b_lo + b), whose windows are inside the image; `interior()`
    writes that loop's body, which reads tap (i, j) at x0[q{i} + b * SW + j] and the output
    at `oq + b`."""
    k.line("for a in range(a_lo, a_hi):")
    with k.indent():
        # unsigned indices: Numba adds a wrap-around test to every signed index it cannot prove
        # non-negative, which costs the column loop its vectorization (the CNN benchmark's weight
        # gradient: 196 us with signed slices, 99 us unsigned)
        k.line(f"y0 = a * {p['SH']} - {p['PH']}")
        k.line(f"oq = np.uint64(yp + a * {p['OW']} + b_lo)")
        for i in range(p["KH"]):
            k.line(f"q{i} = np.uint64(xp + (y0 + {i}) * {p['W']} + b_lo * {p['SW']} - {p['PW']})")
        k.line("for b in range(np.uint64(b_hi - b_lo)):")
        with k.indent():
            interior()


def _taps(p, name):
    """(local `name`{i}_{j}, pixel expression in the interior loop) of every window offset."""
    col = "b" if p["SW"] == 1 else f"b * np.uint64({p['SW']})"
    return [(f"{name}{i}_{j}", f"x0[q{i} + {col}{f' + np.uint64({j})' if j else ''}]")
            for i in range(p["KH"]) for j in range(p["KW"])]


def _conv_kernel(k):
    x, w = k.inputs
    p = _conv_params(k, x.shape, w.shape, k.attr)
    taps = _taps(p, "w")  # weights
    total = " + ".join(f"{wn} * {px}" for wn, px in taps)
    # the first channel stores, the others add: no zeroing pass, and the first pass has no
    # load of the output (the CNN benchmark, one channel: 156 us with zeroing and +=, 69 us storing)
    with _planes(k, p, "o"):
        for t, (wname, _) in enumerate(taps):
            k.line(f"{wname} = x1[wp + {t}]")
        for first in (True, False):
            k.line("if c == 0:" if first else "else:")
            with k.indent():
                _interior_rows(k, p, lambda: k.line(f"out[oq + b] {'=' if first else '+='} {total}"))


def _conv_grad_input_kernel(k):
    # A scatter: each gradient pixel adds w * g to the KH*KW pixels of its window, one window
    # offset per loop (consecutive columns of one loop never write the same pixel, so it
    # vectorizes).
    g, w = k.inputs
    p = _conv_params(k, k.attr["x_shape"], w.shape, k.attr)
    step = "" if p["SW"] == 1 else f" * np.uint64({p['SW']})"
    plane = f"{p['H']} * {p['W']}"
    with _planes(k, p, "c"):
        k.line("if o == 0:")
        k.line(f"    for t in range(xp, xp + {plane}):")
        k.line(f"        out[t] = {k.zero}")
        k.line("for a in range(a_lo, a_hi):")
        k.line(f"    gq = np.uint64(yp + a * {p['OW']})")
        for i in range(p["KH"]):
            for j in range(p["KW"]):
                k.line(f"    xq = np.uint64(xp + (a * {p['SH']} + {i}) * {p['W']} + {j})")
                k.line(f"    wv = x1[wp + {i * p['KW'] + j}]")
                k.line(f"    for b in range(np.uint64(b_hi - b_lo)):")
                k.line(f"        out[xq + b{step}] += wv * x0[gq + b]")


def _conv_grad_weight_kernel(k):
    x, g = k.inputs
    w_shape = (g.shape[1], x.shape[1], k.attr["kh"], k.attr["kw"])
    p = _conv_params(k, x.shape, w_shape, k.attr)
    taps = _taps(p, "s")  # sums
    k.line(f"for t in range({k.size(k.output)}):")
    k.line(f"    out[t] = {k.zero}")
    with _planes(k, p, "o"):  # images outermost: both planes stay in cache
        # one sum per window offset, all updated from each gradient pixel (one pass over the
        # planes instead of KH*KW), vectorized along the row
        k.line(" = ".join(wn for wn, _ in taps) + f" = {k.zero}")

        def interior():
            k.line("gv = x1[oq + b]")
            for wn, px in taps:
                k.line(f"{wn} += gv * {px}")

        _interior_rows(k, p, interior)
        for t, (wn, _) in enumerate(taps):
            k.line(f"out[wp + {t}] += {wn}")


def _conv_attrs(node):
    return {a: node.attr[a] for a in CONV}


def _input_grad(g, w, x_shape, sh, sw):
    """The VJP of conv2d for its input. With stride 1 it is itself a convolution: of g
    zero-padded by the window less one, with the weights flipped and their channel axes
    swapped; that runs as the forward's all-taps loops (a train step of a 16 -> 32 channel
    3x3 layer on 8x8 images: 7.4 ms through conv2d_grad_input's per-tap scatter, 2.6 ms so)."""
    graph = g.graph
    if (sh, sw) != (1, 1):
        return graph.apply("conv2d_grad_input", (g, w), x_shape=tuple(x_shape), sh=sh, sw=sw)
    n, o, oh, ow = g.shape
    kh, kw = w.shape[2:]
    padded = graph.apply("unslice", (g,), shape=(n, o, oh + 2 * (kh - 1), ow + 2 * (kw - 1)),
                         starts=(0, 0, kh - 1, kw - 1), stops=(n, o, oh + kh - 1, ow + kw - 1),
                         steps=(1, 1, 1, 1))
    flipped = fn.slice_(w, (0, 0, kh - 1, kw - 1), (w.shape[0], w.shape[1], -1, -1), (1, 1, -1, -1))
    return graph.apply("conv2d", (padded, fn.transpose(flipped, (1, 0, 2, 3))), sh=1, sw=1)


def _conv_vjp(node, g):
    x, w = node.inputs
    graph = node.output.graph
    return [_input_grad(g, w, x.shape, **_conv_attrs(node)),
            graph.apply("conv2d_grad_weight", (x, g), kh=w.shape[2], kw=w.shape[3],
                        **_conv_attrs(node))]


def _conv_grad_input_vjp(node, gg):
    g, w = node.inputs  # gx = B(g, w), bilinear: d/dg is conv2d(gg, w), d/dw pairs gg with g
    graph = node.output.graph
    return [graph.apply("conv2d", (gg, w), **_conv_attrs(node)),
            graph.apply("conv2d_grad_weight", (gg, g), kh=w.shape[2], kw=w.shape[3],
                        **_conv_attrs(node))]


def _conv_grad_weight_vjp(node, gg):
    x, g = node.inputs
    graph = node.output.graph
    return [_input_grad(g, gg, x.shape, **_conv_attrs(node)),
            graph.apply("conv2d", (x, gg), **_conv_attrs(node))]


def _conv_grad_input_infer(inputs, x_shape, sh, sw):
    g, w = inputs
    n, c, h, wd, oh, ow, o, kh, kw = _conv_geometry(x_shape, w.shape, sh, sw)
    if g.shape != (n, o, oh, ow):
        raise ShapeError(f"conv2d_grad_input: gradient {g.shape} does not fit {x_shape}")
    return tuple(x_shape), g.dtype


def _conv_grad_weight_infer(inputs, kh, kw, sh, sw):
    x, g = inputs
    n, c, h, wd, oh, ow = _geometry(x.shape, kh, kw, sh, sw, 0, 0)
    if g.shape[0] != n or g.shape[2:] != (oh, ow):
        raise ShapeError(f"conv2d_grad_weight: gradient {g.shape} does not fit {x.shape}")
    return (g.shape[1], c, kh, kw), x.dtype


# CUDA: the launches of cuda_rt.py's kernel for this op: (program, node, out Buf, input Bufs)
def _cuda_conv(prog, node, out, ins):
    """conv2d and its two gradients, one thread per output element (cuda_rt.conv2d...)."""
    a = node.attr
    if node.op == "conv2d":
        (x, w), kh, kw = node.inputs, node.inputs[1].shape[2], node.inputs[1].shape[3]
        n, c, h, wd = x.shape
        o, oh, ow = w.shape[0], *node.output.shape[2:]
    elif node.op == "conv2d_grad_input":
        (g, w), (n, c, h, wd) = node.inputs, a["x_shape"]
        kh, kw, o, oh, ow = w.shape[2], w.shape[3], g.shape[1], g.shape[2], g.shape[3]
    else:  # conv2d_grad_weight(x, g)
        (x, g), kh, kw = node.inputs, a["kh"], a["kw"]
        n, c, h, wd = x.shape
        o, oh, ow = g.shape[1], g.shape[2], g.shape[3]
    # (the ops take a padded image: nn.conv2d pads first; padding attributes, if any, count)
    geometry = [n, c, h, wd, oh, ow, o, kh, kw, a["sh"], a["sw"], a.get("ph", 0), a.get("pw", 0)]
    args = [out, *ins, *geometry, prog.zero(node)]
    if node.op != "conv2d_grad_weight":
        return [prog.launch(node.op, args, node.output.size)]
    from ..codegen.cuda_rt import RED_THREADS  # a block per weight: cuda_rt.conv2d_grad_weight
    launch = prog.launch(node.op, args, node.output.size * RED_THREADS, threads=RED_THREADS)
    launch.size_source = (f"{node.output.size} * RED_THREADS", "RED_THREADS")
    return [launch]


register(OpDef("conv2d", KERNEL, _conv_infer, ref=_conv_ref, vjp=_conv_vjp,
               kernel=_conv_kernel, cuda=_cuda_conv))
register(OpDef("conv2d_grad_input", KERNEL, _conv_grad_input_infer, ref=_conv_grad_input_ref,
               vjp=_conv_grad_input_vjp, kernel=_conv_grad_input_kernel, cuda=_cuda_conv))
register(OpDef("conv2d_grad_weight", KERNEL, _conv_grad_weight_infer,
               ref=_conv_grad_weight_ref, vjp=_conv_grad_weight_vjp,
               kernel=_conv_grad_weight_kernel, cuda=_cuda_conv))


# --- max pooling -------------------------------------------------------------------------------
# pool_argmax(x[N,C,H,W]) -> int64 [N,C,OH,OW]: for each window, the flat index (y * W + z) in its
# image plane of the window's maximum. PyTorch's rule: ties go to the first maximum in row-major
# window order, and a NaN is always the maximum (the last NaN, if several); padding is never
# picked. Max pooling is then a gather at these indices (take_along_axis), and its gradient that
# gather's scatter-add: each window's gradient goes to one pixel, in one pass (the reduction's
# VJP compared every pixel with its window's max, counted ties and divided among them).

def _pool_argmax_infer(inputs, kh, kw, sh, sw, ph, pw):
    (x,) = inputs
    if x.ndim != 4:
        raise ShapeError(f"pooling takes NCHW arrays, got shape {x.shape}")
    if 2 * ph > kh or 2 * pw > kw:  # else a window could hold padding only
        raise ShapeError(f"pool padding {(ph, pw)} is more than half the window {(kh, kw)}")
    n, c, h, w, oh, ow = _geometry(x.shape, kh, kw, sh, sw, ph, pw)
    return (n, c, oh, ow), np.dtype(np.int64)


def _pool_argmax_ref(x, kh, kw, sh, sw, ph, pw):
    n, c, h, w, oh, ow = _geometry(x.shape, kh, kw, sh, sw, ph, pw)
    xp = np.full((n, c, h + 2 * ph, w + 2 * pw), -np.inf, np.float64)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    rows, cols = np.meshgrid(np.arange(h + 2 * ph) - ph, np.arange(w + 2 * pw) - pw, indexing="ij")
    flat = rows * w + cols
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    out = np.empty((n, c, oh, ow), np.int64)
    for a in range(oh):
        for b in range(ow):
            win = xp[:, :, a * sh:a * sh + kh, b * sw:b * sw + kw].reshape(n, c, kh * kw)
            real = inside[a * sh:a * sh + kh, b * sw:b * sw + kw].reshape(-1)
            last_nan = kh * kw - 1 - np.isnan(win)[..., ::-1].argmax(-1)
            # the first pixel at the max, never a padding cell (a -inf pixel beside -inf
            # padding: argmax picked the padding, whose index wrapped to another pixel)
            first_max = ((win == win.max(-1, keepdims=True)) & real).argmax(-1)
            pick = np.where(np.isnan(win).any(-1), last_nan, first_max)
            out[:, :, a, b] = flat[a * sh:a * sh + kh, b * sw:b * sw + kw].reshape(-1)[pick]
    return out


def _take_if_max(k, v, index, at="best_t"):
    """Keep (v, index) if v beats the best so far (`best`, `at`): strictly greater (ties keep
    the first), or NaN (so NaN wins); bitwise ops and selects, not branches."""
    k.line(f"v = {v}")
    k.line("take = (v > best) | (v != v)")
    k.line("best = v if take else best")
    k.line(f"{at} = {index} if take else {at}")


def _interior(k, p):
    """a_lo..a_hi, b_lo..b_hi: the output rows and columns whose whole window is inside the
    image; `border`: whether any output is not (padding, or a stride that leaves pixels)."""
    for lo, hi, size, out, pad, step, k_ in (("a_lo", "a_hi", "H", "OH", "PH", "SH", "KH"),
                                           ("b_lo", "b_hi", "W", "OW", "PW", "SW", "KW")):
        k.line(f"{lo} = min({p[out]}, ({p[pad]} + {p[step] - 1}) // {p[step]})")
        k.line(f"{hi} = max({lo}, min({p[out]}, ({p[size]} - {p[k_]} + {p[pad]}) // {p[step]} + 1))")
    k.line(f"border = a_lo > 0 or a_hi < {p['OH']} or b_lo > 0 or b_hi < {p['OW']}")


# A border window of at most this many pixels is scanned unrolled, each pixel under its bounds
# check: as loops of 0 to KH (KW) steps, LLVM spent most of the kernel's compile on them.
UNROLLED_WINDOW = 16


def _border_rows(k, p, border):
    """The outputs the interior loops skip: `border()` writes the bounds-checked scan of the
    window of output (a, b) (y0: the window's top row, yrow: the output row's offset). A loop
    nest of its own, after the interior one, run only when there is a border: border loops in
    the interior's nest slowed its loops down (the CNN benchmark's convolution, when it still
    had padding, from 80 to 135 us, with no border to do). One scan over every output, which
    skips the interior's: written three times (the columns left and right of the interior,
    the rows above and below it), the scans took LLVM 120 of the kernel's 165 ms to compile."""
    k.line(f"for a in range({p['OH']}):")
    k.line(f"    y0 = a * {p['SH']} - {p['PH']}")
    k.line(f"    yrow = yp + a * {p['OW']}")
    k.line(f"    for b in range({p['OW']}):")
    k.line("        if a < a_lo or a >= a_hi or b < b_lo or b >= b_hi:")
    with k.indent(3):
        border()


def _pool_argmax_kernel(k):
    # The window and strides are literals of the kernel (one kernel per window shape; sizes and
    # paddings stay parameters), and windows inside the image take the interior loops of the
    # convolution (unrolled scan, unsigned indices; borders in a pass of their own). The CNN
    # benchmark's pooling: 360 us with run-time window bounds, 204 us with the window literal, 120
    # us so.
    (x,) = k.inputs
    n, c, h, w, oh, ow = _geometry(x.shape, *_window(k.attr))
    names = ("H", "W", "OH", "OW", "PH", "PW")
    p = dict(zip(names, (k.param(s, v) for s, v in zip(names, (h, w, oh, ow, k.attr["ph"],
                                                                  k.attr["pw"])))))
    p.update(KH=k.attr["kh"], KW=k.attr["kw"], SH=k.attr["sh"], SW=k.attr["sw"])
    planes = k.param("planes", n * c)
    col = "b" if p["SW"] == 1 else f"b * np.uint64({p['SW']})"
    _interior(k, p)
    k.line(f"for plane in range({planes}):")
    k.line(f"    xp, yp = plane * {p['H']} * {p['W']}, plane * {p['OH']} * {p['OW']}")
    k.line("    xq = np.uint64(xp)")
    with k.indent():
        def interior():  # indices into x0, from the window's corner; the output is in-plane
            k.line(f"corner = q0 + {col}")
            # (best_q, unsigned, is not the border's signed best_t: a name keeps one type, as
            # gradc/codegen/llvm_cpu.py needs)
            k.line("best, best_q = x0[corner], corner")
            for i in range(p["KH"]):
                for j in range(p["KW"]):
                    if i or j:
                        row = f"{i} * {p['W']} + " if i else ""
                        t = f"corner + np.uint64({row}{j})"
                        _take_if_max(k, f"x0[{t}]", t, at="best_q")
            k.line("out[oq + b] = best_q - xq")

        _interior_rows(k, p, interior)
    k.line("if border:")
    k.line(f"    for plane in range({planes}):")
    k.line(f"        xp, yp = plane * {p['H']} * {p['W']}, plane * {p['OH']} * {p['OW']}")
    with k.indent(2):
        def border():
            k.line(f"z0 = b * {p['SW']} - {p['PW']}")
            k.line(f"i_lo, i_hi = max(0, -y0), min({p['KH']}, {p['H']} - y0)")
            k.line(f"j_lo, j_hi = max(0, -z0), min({p['KW']}, {p['W']} - z0)")
            k.line(f"best_t = (y0 + i_lo) * {p['W']} + z0 + j_lo")
            k.line("best = x0[xp + best_t]")
            if p["KH"] * p["KW"] <= UNROLLED_WINDOW:
                for i in range(p["KH"]):
                    for j in range(p["KW"]):
                        k.line(f"if i_lo <= {i} < i_hi and j_lo <= {j} < j_hi:")
                        with k.indent():
                            t = f"(y0 + {i}) * {p['W']} + z0 + {j}"
                            _take_if_max(k, f"x0[xp + {t}]", t)
            else:
                k.line("for i in range(i_lo, i_hi):")
                k.line("    for j in range(j_lo, j_hi):")
                with k.indent(2):
                    t = f"(y0 + i) * {p['W']} + z0 + j"
                    _take_if_max(k, f"x0[xp + {t}]", t)
            k.line("out[yrow + b] = best_t")

        _border_rows(k, p, border)


# CUDA: the launches of cuda_rt.py's kernel for this op: (program, node, out Buf, input Bufs)
def _cuda_pool_argmax(prog, node, out, ins):
    n, c, h, w = node.inputs[0].shape
    oh, ow = node.output.shape[2:]
    a = node.attr
    return [prog.launch("pool_argmax", [out, ins[0], n * c, h, w, oh, ow, a["kh"], a["kw"],
                                        a["sh"], a["sw"], a["ph"], a["pw"]], node.output.size)]


register(OpDef("pool_argmax", KERNEL, _pool_argmax_infer, ref=_pool_argmax_ref,
               kernel=_pool_argmax_kernel, cuda=_cuda_pool_argmax))


# --- max pooling over tiles --------------------------------------------------------------------
# max_pool_tiles(x[N,C,H,W]) -> [N,C,H/kh,W/kw]: max pooling whose windows tile the image (stride
# = window, no padding, H and W multiples of it), the common 2x2 case. A composite: lowered to
# np.maximum of the kh*kw strided slices of x, one loop kernel, where a gather at pool_argmax's
# indices was (the CNN benchmark's: 48 -> 23 us; its step 340 -> 318 us). Its VJP is the
# gather's: each window's gradient scattered to its argmax, computed in the backward (PyTorch's
# rule: the first maximum in row-major window order; NaN wins), so no index array lives from
# the forward to the backward. (A max over the windows' axes of a 6-D reshape, and a select at
# the argmax for the gradient, made loops of trip count 2: the step took 650 us.)

def _tiles(x_shape, kh, kw):
    n, c, h, w = x_shape
    return n, c, h // kh, kh, w // kw, kw


def _max_pool_tiles_infer(inputs, kh, kw):
    (x,) = inputs
    if x.ndim != 4 or x.shape[2] % kh or x.shape[3] % kw:
        raise ShapeError(f"max_pool_tiles takes NCHW arrays whose height and width are "
                         f"multiples of the window {(kh, kw)}, got shape {x.shape}")
    n, c, oh, _, ow, _ = _tiles(x.shape, kh, kw)
    return (n, c, oh, ow), x.dtype


def _max_pool_tiles_ref(x, kh, kw):
    return x.reshape(_tiles(x.shape, kh, kw)).max(axis=(3, 5))


def _max_pool_tiles_lower(x, kh, kw):
    n, c, h, w = x.shape
    out = None
    for i in range(kh):  # (NaN wins, as in the argmax: np.maximum keeps it)
        for j in range(kw):
            part = fn.slice_(x, (0, 0, i, j), (n, c, h, w), (1, 1, kh, kw))
            out = part if out is None else fn.maximum(out, part)
    return out


def _max_pool_tiles_vjp(node, g):
    x, (kh, kw) = node.inputs[0], (node.attr["kh"], node.attr["kw"])
    n, c, h, w = x.shape
    best = x.graph.apply("pool_argmax", (x,), kh=kh, kw=kw, sh=kh, sw=kw, ph=0, pw=0)
    tiles = best.shape[2] * best.shape[3]  # (by size: a -1 fails in an empty batch)
    flat = x.graph.apply("take_along_axis_grad", (fn.reshape(g, (n, c, tiles)),
                                                    fn.reshape(best, (n, c, tiles))),
                         axis=2, size=h * w)
    return [fn.reshape(flat, x.shape)]


register(OpDef("max_pool_tiles", COMPOSITE, _max_pool_tiles_infer, ref=_max_pool_tiles_ref,
               vjp=_max_pool_tiles_vjp, lower=_max_pool_tiles_lower))
