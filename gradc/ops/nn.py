"""Numerically stable composites with hand-written VJPs.

Autodiff sees `logsumexp`, `softmax` and `log_softmax` as single ops and uses the VJPs below, so
the backward never differentiates through the max-shift. After autodiff, `lower` rewrites each
into primitives (max-shifted, so logits of ±1000 neither overflow nor lose the answer).
Outputs keep the reduced axes (keepdims form), like the reductions.
"""
import numpy as np

from . import fn
from .registry import COMPOSITE, OpDef, register


def _np_logsumexp(x, axes):
    m = np.max(x, axis=axes, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    return (np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m).astype(x.dtype)


def finite_max(x, axes):
    """The max over `axes` (keepdims), 0 where it is not finite: the shift of the stable forms
    (a row of -inf gives log(0) = -inf, as the references and SciPy, not -inf - -inf = NaN)."""
    m = fn.max(x, axes, keepdims=True)
    return fn.where(np.abs(m) < np.inf, m, 0)


def _lse_lower(x, axes):
    m = finite_max(x, axes)
    shifted = x - fn.broadcast_to(m, x.shape)
    return np.log(fn.sum(np.exp(shifted), axes, keepdims=True)) + m


def _softmax_lower(x, axes):
    m = finite_max(x, axes)  # (logsumexp's, so that CSE merges their exps: cross-entropy's
    e = np.exp(x - fn.broadcast_to(m, x.shape))  # forward and backward)
    y = e / fn.broadcast_to(fn.sum(e, axes, keepdims=True), x.shape)
    # a row holding +inf is NaN throughout, as SciPy's, PyTorch's and JAX's softmax (shifted
    # by 0 it was [0, nan, 0])
    return fn.where(fn.broadcast_to(fn.max(x, axes, keepdims=True) == np.inf, x.shape), np.nan, y)


def _log_softmax_lower(x, axes):
    # (x - m) - log(sum(exp(x - m))): x - m is exact, so large logits keep their digits
    shifted = x - fn.broadcast_to(finite_max(x, axes), x.shape)
    return shifted - fn.broadcast_to(np.log(fn.sum(np.exp(shifted), axes, keepdims=True)), x.shape)


def _apply(op, x, axes):
    return x.graph.apply(op, (x,), axes=axes)


def _lse_vjp(node, g):
    x = node.inputs[0]
    return [fn.broadcast_to(g, x.shape) * _apply("softmax", x, node.attr["axes"])]


def _softmax_vjp(node, g):
    y, axes = node.output, node.attr["axes"]
    return [y * (g - fn.broadcast_to(fn.sum(g * y, axes, keepdims=True), y.shape))]


def _log_softmax_vjp(node, g):
    x, axes = node.inputs[0], node.attr["axes"]
    return [g - _apply("softmax", x, axes) * fn.broadcast_to(fn.sum(g, axes, keepdims=True), x.shape)]


def _keepdims_infer(inputs, axes):
    (x,) = inputs
    return tuple(1 if i in axes else d for i, d in enumerate(x.shape)), x.dtype


def _same_infer(inputs, axes):
    return inputs[0].shape, inputs[0].dtype


register(OpDef("logsumexp", COMPOSITE, _keepdims_infer, ref=_np_logsumexp, vjp=_lse_vjp,
               lower=_lse_lower))
def _np_softmax(x, axes):
    # (exp(x - m) / sum, the lowered form: exp(x - logsumexp(x)) lost log(n) added to a huge
    # max, and gave ones for a row of finfo.min, a fully masked attention row)
    m = np.max(x, axis=axes, keepdims=True)
    with np.errstate(invalid="ignore"):  # (+inf - +inf, 0 / 0: NaN, as SciPy's)
        e = np.exp(x - np.where(m == -np.inf, 0, m))
        return (e / np.sum(e, axis=axes, keepdims=True)).astype(x.dtype)


register(OpDef("softmax", COMPOSITE, _same_infer, ref=_np_softmax, vjp=_softmax_vjp,
               lower=_softmax_lower))
def _np_log_softmax(x, axes):
    m = np.max(x, axis=axes, keepdims=True)
    shifted = x - np.where(np.isfinite(m), m, 0)
    return (shifted - np.log(np.sum(np.exp(shifted), axis=axes, keepdims=True))).astype(x.dtype)


register(OpDef("log_softmax", COMPOSITE, _same_infer, ref=_np_log_softmax,
               vjp=_log_softmax_vjp, lower=_log_softmax_lower))
