"""Sliding windows: `unfold` (im2col) and its VJP `fold` (col2im, a scatter-add).

unfold(x[N,C,H,W]) -> patches[N,OH,OW,C,KH,KW], where patches[n,a,b,c,i,j] =
x[n, c, a*stride - padding + i, b*stride - padding + j] (`pad` outside the image). Rows of the
patches are contiguous (C*KH*KW each), so conv2d is one matmul on them, and pooling is a
reduction over the last two axes. Both ops are loop kernels of their own.
"""
import numpy as np

from ..errors import ShapeError
from .elementwise import lit
from .registry import KERNEL, OpDef, register


def out_size(size, k, stride, padding):
    return (size + 2 * padding - k) // stride + 1


def _geometry(x_shape, kh, kw, stride, padding):
    n, c, h, w = x_shape
    oh, ow = out_size(h, kh, stride, padding), out_size(w, kw, stride, padding)
    if oh <= 0 or ow <= 0:
        raise ShapeError(f"a {kh}x{kw} window does not fit a {h}x{w} image with padding {padding}")
    return n, c, h, w, oh, ow


def _unfold_infer(inputs, kh, kw, stride, padding, pad):
    (x,) = inputs
    if x.ndim != 4:
        raise ShapeError(f"sliding windows take NCHW arrays, got shape {x.shape}")
    n, c, h, w, oh, ow = _geometry(x.shape, kh, kw, stride, padding)
    return (n, oh, ow, c, kh, kw), x.dtype


def _unfold_ref(x, kh, kw, stride, padding, pad):
    n, c, h, w, oh, ow = _geometry(x.shape, kh, kw, stride, padding)
    xp = np.full((n, c, h + 2 * padding, w + 2 * padding), pad, x.dtype)
    xp[:, :, padding:padding + h, padding:padding + w] = x
    out = np.empty((n, oh, ow, c, kh, kw), x.dtype)
    for i in range(kh):
        for j in range(kw):
            win = xp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]  # n,c,oh,ow
            out[:, :, :, :, i, j] = win.transpose(0, 2, 3, 1)
    return out


def _fold_ref(g, x_shape, kh, kw, stride, padding):
    n, c, h, w, oh, ow = _geometry(x_shape, kh, kw, stride, padding)
    xp = np.zeros((n, c, h + 2 * padding, w + 2 * padding), g.dtype)
    for i in range(kh):
        for j in range(kw):
            xp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride] += \
                g[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return xp[:, :, padding:padding + h, padding:padding + w]


def _window_loops(k, x_shape, kh_, kw_, stride_, padding_):
    """Open the loops over (n, a, b, c, i, j) and compute the source pixel (y, z); returns the
    names of the flat patch index and of the image row start."""
    n, c, h, w, oh, ow = _geometry(x_shape, kh_, kw_, stride_, padding_)
    N, C, H, W = (k.param(s, v) for s, v in zip(("N", "C", "H", "W"), (n, c, h, w)))
    OH, OW = k.param("OH", oh), k.param("OW", ow)
    KH, KW = k.param("KH", kh_), k.param("KW", kw_)
    S, P = k.param("stride", stride_), k.param("padding", padding_)
    k.line(f"for n in range({N}):")
    k.line(f"    for a in range({OH}):")
    k.line(f"        for b in range({OW}):")
    k.line(f"            for c in range({C}):")
    k.line(f"                row = (((n * {OH} + a) * {OW} + b) * {C} + c) * {KH} * {KW}")
    k.line(f"                for i in range({KH}):")
    k.line(f"                    y = a * {S} - {P} + i")
    k.line(f"                    for j in range({KW}):")
    k.line(f"                        z = b * {S} - {P} + j")
    k.line(f"                        inside = y >= 0 and y < {H} and z >= 0 and z < {W}")
    k.line(f"                        src = ((n * {C} + c) * {H} + y) * {W} + z")
    return f"row + i * {KW} + j"


def _unfold_kernel(k):
    a = k.attr
    patch = _window_loops(k, k.inputs[0].shape, a["kh"], a["kw"], a["stride"], a["padding"])
    with k.indent(6):
        k.line(f"out[{patch}] = x0[src] if inside else {lit(a['pad'], k.output.dtype)}")


def _fold_kernel(k):
    a = k.attr
    k.line(f"for t in range({k.size(k.output)}):")
    k.line(f"    out[t] = {k.zero}")
    patch = _window_loops(k, a["x_shape"], a["kh"], a["kw"], a["stride"], a["padding"])
    with k.indent(6):
        k.line("if inside:")
        k.line(f"    out[src] += x0[{patch}]")


def _unfold_vjp(node, g):
    a = node.attr
    return [node.output.graph.apply("fold", (g,), x_shape=node.inputs[0].shape, kh=a["kh"],
                                    kw=a["kw"], stride=a["stride"], padding=a["padding"])]


def _fold_vjp(node, g):
    a = node.attr
    return [node.output.graph.apply("unfold", (g,), kh=a["kh"], kw=a["kw"], stride=a["stride"],
                                    padding=a["padding"], pad=0.0)]


register(OpDef("unfold", KERNEL, _unfold_infer, ref=_unfold_ref, vjp=_unfold_vjp,
               kernel=_unfold_kernel))
register(OpDef("fold", KERNEL,
               lambda inputs, x_shape, kh, kw, stride, padding: (tuple(x_shape), inputs[0].dtype),
               ref=_fold_ref, vjp=_fold_vjp, kernel=_fold_kernel))
