"""Sliding windows: `unfold` (im2col) and its VJP `fold` (col2im, a scatter-add).

unfold(x[N,C,H,W]) -> patches[N,OH,OW,C,KH,KW], where patches[n,a,b,c,i,j] =
x[n, c, a*sh - ph + i, b*sw - pw + j] (`pad` outside the image; strides sh, sw and paddings
ph, pw per axis). Rows of the
patches are contiguous (C*KH*KW each), so conv2d is one matmul on them, and pooling is a
reduction over the last two axes. Both ops are loop kernels of their own.
"""
import numpy as np

from ..errors import ShapeError
from .elementwise import lit
from .registry import KERNEL, OpDef, register


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


register(OpDef("unfold", KERNEL, _unfold_infer, ref=_unfold_ref, vjp=_unfold_vjp,
               kernel=_unfold_kernel))
register(OpDef("fold", KERNEL,
               lambda inputs, x_shape, **window: (tuple(x_shape), inputs[0].dtype),
               ref=_fold_ref, vjp=_fold_vjp, kernel=_fold_kernel))
