"""Neural-network functions for traced code. Each is numerically stable forward and backward:
the composites (logsumexp, softmax, log_softmax) have hand-written VJPs and max-shifted forms;
sigmoid, softplus and log_sigmoid are single elementwise ops with stable scalar formulas.
They also work on plain NumPy arrays (outside tracing), with the same semantics.
"""
import functools
import math

import numpy as np

from .errors import ArgumentError, ShapeError
from .handlers import refuse_caught_index_error
from .ir import Value
from .ops import fn
from .ops.registry import get_op
from .capture import CONTENT_GUARD_SIZE, captured
from .trace import _graph_of_values, current_graph, traced


def _traced(function):
    """A gradc.nn function (trace.traced): inside a trace, where an argument is traced, or an
    array from outside the function's arguments too large for its contents to be checked
    (capture.CONTENT_GUARD_SIZE), its NumPy arrays (of one or more dimensions) are values of
    the graph first, so that what it computes from them is traced too, and the outside ones
    are read on every call (gradc/capture.py): a dilated kernel spread out, a batch norm's
    `var + eps`, `embedding(self.wpe, np.arange(T))` were computed with NumPy, compiled in,
    stale after the weights changed (fuzz41c). Else it is NumPy's computation, a NumPy result
    (float() of it, an `if` on it work; a small outside array read so is checked by contents),
    and 0-d arrays stay numbers (an eps from np.load)."""
    def arrays_in_graph(*args, **kwargs):
        graph = current_graph()
        given = (*args, *kwargs.values())
        if graph is not None and (any(isinstance(a, Value) for a in given) or any(
                _arrays(a) and a.size > CONTENT_GUARD_SIZE and captured(graph, a) is not None
                for a in given)):
            args = [_in_graph(a, graph) for a in args]
            kwargs = {k: _in_graph(v, graph) for k, v in kwargs.items()}
        return function(*args, **kwargs)
    return traced(functools.wraps(function)(arrays_in_graph), graph_of=_graph_of)


def _arrays(x):
    return isinstance(x, np.ndarray) and x.ndim > 0


def _in_graph(x, graph):
    return fn.as_value(x, graph=graph) if _arrays(x) else x


def _graph_of(*args, **kwargs):
    """The graph of the traced values among the arguments; inside a trace, the graph traced
    into where an argument is a NumPy array (its refusals then name the user's line)."""
    graph = current_graph()
    if graph is not None and any(isinstance(a, (Value, np.ndarray))
                                 for a in (*args, *kwargs.values())):
        return graph
    return _graph_of_values(*args, **kwargs)


def _value(x):
    """Trace plain arrays as constants in no graph: run the NumPy reference instead."""
    return x if isinstance(x, Value) else None


def _named(op, f):
    """gradc.nn's function `op`, made from `f`, named so in a wrong call's message
    ("softplus() got an unexpected keyword argument 'beta'", not "_unary.<locals>.f()")."""
    f.__name__ = f.__qualname__ = op
    f.__module__ = __name__
    return _traced(f)


def _unary(op):
    def f(x):
        if _value(x) is None:
            x = np.asarray(x)
            return get_op(op).ref(x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float64))
        return fn.unary(op, x)
    return _named(op, f)


relu = _unary("relu")
sigmoid = _unary("sigmoid")
softplus = _unary("softplus")
log_sigmoid = _unary("log_sigmoid")
relu.__doc__ = "max(x, 0); its gradient at 0 is 0."
sigmoid.__doc__ = "1 / (1 + exp(-x)), stable for large |x|."
softplus.__doc__ = "log(1 + exp(x)) computed as max(x, 0) + log1p(exp(-|x|))."
log_sigmoid.__doc__ = "log(sigmoid(x)) computed as min(x, 0) - log1p(exp(-|x|))."


def _composite(op, keepdims_out):
    def f(x, axis=-1, keepdims=False, **others):
        if others:  # (PyTorch's spelling, dim=, is the usual slip)
            raise ArgumentError(f"gradc.nn.{op} takes axis= and keepdims= (NumPy's names), not "
                                + ", ".join(f"{k}=" for k in others)
                                + (": write axis=" if "dim" in others else ""))
        if _value(x) is None:
            x = np.asarray(x)
            if not np.issubdtype(x.dtype, np.floating):
                x = x.astype(np.float64)
            axes = fn.normalize_axes(axis, x.ndim, sequence=True)
            out = get_op(op).ref(x, axes=axes)
            return out if keepdims or not keepdims_out else np.squeeze(out, axis=axes)
        axes = fn.normalize_axes(axis, x.ndim, sequence=True)
        if any(x.shape[a] == 0 for a in axes):  # (else refused later, without the line)
            raise ShapeError(f"gradc.nn.{op} over an axis of length 0 (shape {x.shape}): its "
                             "max-shift has no maximum there (NumPy's max raises too); pass "
                             "non-empty arrays")
        if not np.issubdtype(x.dtype, np.floating):
            x = fn.astype(x, np.float64)
        out = x.graph.apply(op, (x,), axes=axes)
        if keepdims_out and not keepdims:
            out = fn.reshape(out, tuple(d for i, d in enumerate(x.shape) if i not in axes))
        return out
    return _named(op, f)


logsumexp = _composite("logsumexp", keepdims_out=True)
softmax = _composite("softmax", keepdims_out=False)
log_softmax = _composite("log_softmax", keepdims_out=False)
logsumexp.__doc__ = "log(sum(exp(x), axis)), max-shifted so it never overflows."
softmax.__doc__ = "exp(x) / sum(exp(x), axis), max-shifted."
log_softmax.__doc__ = "x - logsumexp(x, axis)."


@_traced
def cross_entropy(logits, labels):
    """Mean softmax cross-entropy of `logits` (batch, classes) against integer `labels` (batch,),
    each in [0, classes): a negative label is an IndexOutOfRangeError, as in PyTorch (NumPy's
    wrap-around picked a class for -1, and for PyTorch's padding label -100 with more than 100
    classes)."""
    if np.ndim(logits) != 2 or np.shape(labels) != np.shape(logits)[:1]:
        raise ShapeError(f"cross_entropy takes logits (batch, classes) and integer labels "
                         f"(batch,), got shapes {np.shape(logits)} and {np.shape(labels)}; for "
                         "more axes, reshape the logits to (-1, classes) and the labels to (-1,)")
    label_dtype = labels.dtype if isinstance(labels, Value) else np.asarray(labels).dtype
    if not np.issubdtype(label_dtype, np.integer):  # (an internal op's message named it)
        raise ArgumentError(f"cross_entropy takes integer class labels, got {label_dtype.name} "
                            "labels: pass labels.astype(np.int64)")
    refuse_caught_index_error(labels)
    if isinstance(labels, Value) and not isinstance(logits, Value):  # (constant logits)
        logits = fn.as_value(logits, labels)
    logp = log_softmax(logits, axis=-1)
    n = logits.shape[0]
    classes = logits.shape[1]
    if isinstance(logp, Value):
        labels = fn.as_value(labels, logp)
        if np.issubdtype(labels.dtype, np.signedinteger):  # (a negative one: out of range;
            labels = fn.astype(labels, np.int64)  # int8 labels of 200 classes: 200 in int64)
            labels = fn.where(fn.compare("less", labels, 0), classes, labels)
        picked = fn.take_along_axis(logp, fn.reshape(labels, (n, 1)), 1)
        return -fn.mean(picked)
    labels = np.asarray(labels)
    if labels.size and labels.min() < 0:
        raise IndexError(f"cross_entropy: label {labels.min()} is no class of {classes}")
    return -np.mean(logp[np.arange(n), labels])


@_traced
def mse(pred, target):
    """Mean squared error of arrays of one shape (or a number as the target). Shapes that
    broadcast to another, (N,) against (N, 1), are refused, as PyTorch warns of them: the
    mean over the (N, N) broadcast is seldom what was meant."""
    if np.shape(target) != np.shape(pred) and np.ndim(target) and np.ndim(pred):
        raise ShapeError(f"mse: pred {np.shape(pred)} and target {np.shape(target)} differ "
                         "(they would broadcast to another shape); reshape one to the other's "
                         "(target.reshape(pred.shape))")
    diff = pred - target
    return np.mean(diff * diff)


# --- layers -----------------------------------------------------------------------------------

def _pair(v, name="kernel", low=1):
    """(v, v) of an int, or a pair as given: whole numbers >= low (a kernel and a stride >= 1,
    a padding >= 0), else an ArgumentError (a negative padding once gave a wrong value)."""
    pair = (v, v) if isinstance(v, (int, np.integer)) else tuple(v) if isinstance(
        v, (tuple, list)) else None
    if (pair is None or len(pair) != 2 or not all(
            isinstance(d, (int, np.integer)) and not isinstance(d, (bool, np.bool_)) and d >= low
            for d in pair)):
        raise ArgumentError(f"{name}={v!r}: give a whole number >= {low}, or a pair of them "
                            "(rows, columns)")
    return tuple(int(d) for d in pair)


def _check_images(x, what):
    if np.ndim(x) != 4:
        raise ShapeError(f"{what} takes images x[N, C, H, W], got shape {np.shape(x)}; add the "
                         "missing axes (x[None] for one image)")


def _windows(x, kernel, stride, padding, pad):
    """Patches (N, OH, OW, C, KH, KW) of x[N,C,H,W] (see gradc.ops.conv)."""
    (kh, kw), (sh, sw) = _pair(kernel), _pair(stride, "stride")
    ph, pw = _pair(padding, "padding", 0)
    attrs = dict(kh=kh, kw=kw, sh=sh, sw=sw, ph=ph, pw=pw, pad=float(pad))
    if isinstance(x, Value):
        return x.graph.apply("unfold", (x,), **attrs)
    return get_op("unfold").ref(np.asarray(x), **attrs)


# conv2d runs as direct loops (the conv2d op) when each output sums at most this many products
# (C*KH*KW), else as im2col (unfold) + one BLAS product. Train steps of one 3x3 layer, batch 32,
# 1 thread, direct vs im2col, without / with the input's gradient: 1 -> 8 channels on 28x28
# 0.22 vs 1.3 / 0.46 vs 1.9 ms; 8 -> 16 on 16x16 1.1 vs 2.7 / 1.8 vs 4.1; 16 -> 16 on 16x16
# 2.1 vs 5.1 / 3.5 vs 8.1; 32 -> 32 on 16x16 7.9 vs 12.6 / 12.9 vs 19.1; but 16 -> 32 on 8x8
# 1.4 vs 1.4 / 2.6 vs 2.2 and 64 -> 64 on 8x8 11 vs 7 / 20 vs 11 (short rows cost the loops).
DIRECT_MAX_TAPS = 288


@_traced
def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution (cross-correlation, as in PyTorch), NCHW input x[N,C,H,W], weights
    w[OC,C/groups,KH,KW], optional bias b[OC]. Narrow inputs (C*KH*KW <= DIRECT_MAX_TAPS) take
    the `conv2d` op, a direct loop nest whose gradients are the ops conv2d_grad_input and
    conv2d_grad_weight (gradc.ops.conv); wider ones im2col (`unfold`) + one matmul, whose
    gradient is a matmul and a scatter-add (`fold`). `dilation` spaces the taps (PyTorch's):
    the kernel is spread out with zeros between its taps, (KH-1)*dh+1 rows, and convolved as
    above (the zeros cost their multiply-adds). `groups` splits the channels (PyTorch's):
    group g's OC/groups outputs see its C/groups inputs only; groups = C is a depthwise
    convolution. Grouped ones take im2col and one batched product over the groups."""
    _check_images(x, "conv2d")
    if np.ndim(w) != 4:
        raise ShapeError(f"conv2d takes weights w[OC, C/groups, KH, KW], got shape "
                         f"{np.shape(w)}")
    if (not isinstance(groups, (int, np.integer)) or isinstance(groups, (bool, np.bool_))
            or groups < 1):
        raise ArgumentError(f"conv2d: groups={groups!r}: give a whole number >= 1")
    groups = int(groups)
    oc, cg, kh, kw = w.shape
    if 0 in w.shape:  # (PyTorch's refusal; a loop over no taps had no body to generate)
        raise ShapeError(f"conv2d takes non-empty weights, got shape {w.shape}")
    if x.shape[1] % groups or oc % groups:
        raise ShapeError(f"conv2d: groups={groups} must divide the input's {x.shape[1]} "
                         f"channels and the weights' {oc} output channels")
    if x.shape[1] != cg * groups:
        raise ShapeError(f"conv2d: input has {x.shape[1]} channels, weights expect "
                         f"{cg * groups}" + (f" ({cg} per group, {groups} groups)"
                                             if groups > 1 else "")
                         + ("; the input looks channels-last (N, H, W, C): conv2d takes "
                            "(N, C, H, W), x.transpose(0, 3, 1, 2)"
                            if x.shape[3] == cg * groups else ""))
    dh, dw = _pair(dilation, "dilation")
    if (dh, dw) != (1, 1):
        w = _dilated(w, dh, dw)
        kh, kw = w.shape[2:]
    if groups > 1:
        out = _conv2d_grouped(x, w, stride, padding, groups)
    elif cg * kh * kw <= DIRECT_MAX_TAPS:
        out = _conv2d_direct(x, w, stride, padding)
    else:
        out = _conv2d_im2col(x, w, stride, padding)
    if b is not None:
        if np.shape(b) != (oc,):  # (a list or a number had no .reshape; (2, 2) for 4 was taken)
            raise ShapeError(f"conv2d takes a bias b[OC] of shape ({oc},), got "
                             f"{'shape ' + str(np.shape(b)) if np.ndim(b) else repr(b)}")
        out = out + (b if isinstance(b, Value) else np.asarray(b)).reshape(1, oc, 1, 1)
    return out


def _conv2d_direct(x, w, stride, padding):
    (sh, sw), (ph, pw) = _pair(stride, "stride"), _pair(padding, "padding", 0)
    n, c, h, wd = x.shape
    padded = (n, c, h + 2 * ph, wd + 2 * pw)
    if isinstance(x, Value) or isinstance(w, Value):
        like = x if isinstance(x, Value) else w
        x, w = fn.as_value(x, like), fn.as_value(w, like)
        dtype = np.result_type(x.dtype, w.dtype)  # as x @ w would promote
        x, w = fn.astype(x, dtype), fn.astype(w, dtype)
        if ph or pw:  # the image in zeros (its gradient is a slice, a view)
            x = x.graph.apply("unslice", (x,), shape=padded, starts=(0, 0, ph, pw),
                              stops=(n, c, ph + h, pw + wd), steps=(1, 1, 1, 1))
        return x.graph.apply("conv2d", (x, w), sh=sh, sw=sw)
    x, w = np.asarray(x), np.asarray(w)
    dtype = np.result_type(x.dtype, w.dtype)
    x = np.pad(x.astype(dtype), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    return get_op("conv2d").ref(x, w.astype(dtype), sh=sh, sw=sw)


def _conv2d_im2col(x, w, stride, padding):
    oc, c, kh, kw = w.shape
    cols = _windows(x, (kh, kw), stride, padding, 0.0)
    n, oh, ow = cols.shape[:3]
    out = cols.reshape(n * oh * ow, c * kh * kw) @ w.reshape(oc, c * kh * kw).T
    return out.reshape(n, oh, ow, oc).transpose(0, 3, 1, 2)


def _conv2d_grouped(x, w, stride, padding, groups):
    """Patches (N, OH, OW, C, KH, KW) as (groups, N*OH*OW, C/groups*KH*KW), times each group's
    weights: one batched product (a depthwise convolution's are matrix-vector products)."""
    oc, cg, kh, kw = w.shape
    cols = _windows(x, (kh, kw), stride, padding, 0.0)
    n, oh, ow = cols.shape[:3]
    cols = cols.reshape(n * oh * ow, groups, cg * kh * kw).transpose(1, 0, 2)
    wg = w.reshape(groups, oc // groups, cg * kh * kw).transpose(0, 2, 1)
    out = np.matmul(cols, wg)  # (groups, N*OH*OW, OC/groups)
    return out.transpose(1, 0, 2).reshape(n, oh, ow, oc).transpose(0, 3, 1, 2)


def _dilated(w, dh, dw):
    """The kernel w[OC, C, KH, KW] with dh-1 rows and dw-1 columns of zeros between its taps
    (traced: an unslice, whose gradient is the strided slice back)."""
    oc, c, kh, kw = w.shape
    shape = (oc, c, (kh - 1) * dh + 1, (kw - 1) * dw + 1)
    if isinstance(w, Value):
        return w.graph.apply("unslice", (w,), shape=shape, starts=(0, 0, 0, 0), stops=shape,
                             steps=(1, 1, dh, dw))
    w = np.asarray(w)
    out = np.zeros(shape, w.dtype)
    out[:, :, ::dh, ::dw] = w
    return out


# Windows of at most this many pixels that tile the image take max_pool_tiles: a maximum of
# that many strided slices in one kernel (a global max over a 28x28 image would be 784 terms).
TILE_WINDOW = 16


@_traced
def max_pool2d(x, kernel=2, stride=None, padding=0):
    """Max over kernel x kernel windows of x[N,C,H,W] (stride defaults to the kernel size;
    padding is never the max, and may be at most half the window, as in PyTorch). The gradient
    of each window goes to its first maximum in row-major order (PyTorch's rule), not shared
    between ties as np.max's is: a gather at the windows' argmax (`pool_argmax`), whose
    gradient is a scatter-add; windows that tile the image (the default 2x2) take the maximum
    of strided slices instead of the gather (`max_pool_tiles`), with the same gradient."""
    (kh, kw), (ph, pw) = _pair(kernel), _pair(padding, "padding", 0)
    sh, sw = (kh, kw) if stride is None else _pair(stride, "stride")
    _check_images(x, "max_pool2d")
    attrs = dict(kh=kh, kw=kw, sh=sh, sw=sw, ph=ph, pw=pw)
    n, c, h, w = x.shape
    if not isinstance(x, Value):
        x = np.asarray(x)
        get_op("pool_argmax").infer((x,), **attrs)  # (the compiled form's checks: padding...)
        idx = get_op("pool_argmax").ref(x, **attrs)
        flat = np.take_along_axis(x.reshape(n, c, h * w), _rows(idx, 2), axis=2)
        return flat.reshape(idx.shape)
    if ((sh, sw) == (kh, kw) and (ph, pw) == (0, 0) and h % kh == 0 and w % kw == 0
            and kh * kw <= TILE_WINDOW):  # (windows that tile x: gradc/ops/conv.py)
        return x.graph.apply("max_pool_tiles", (x,), kh=kh, kw=kw)
    idx = x.graph.apply("pool_argmax", (x,), **attrs)
    flat = fn.take_along_axis(x.reshape(n, c, h * w), _rows(idx, 2), 2)
    return flat.reshape(idx.shape)


@_traced
def avg_pool2d(x, kernel=2, stride=None, padding=0):
    """Mean over windows; padding counts as zeros (PyTorch's count_include_pad=True)."""
    return _pool(x, kernel, stride, padding, np.mean, 0.0)


def _pool(x, kernel, stride, padding, reduce, pad):
    kh, kw = _pair(kernel)
    sh, sw = (kh, kw) if stride is None else _pair(stride, "stride")
    _check_images(x, "avg_pool2d")
    ph, pw = _pair(padding, "padding", 0)
    if ph > kh // 2 or pw > kw // 2:  # (PyTorch's rule, and max_pool2d's: a window of
        # padding alone would average nothing of the image)
        raise ShapeError(f"pool padding {(ph, pw)} is more than half the window {(kh, kw)}")
    n, c, h, w = x.shape
    tiles = (sh, sw) == (kh, kw) and (ph, pw) == (0, 0)
    if tiles and h % kh == 0 and w % kw == 0:
        # non-overlapping windows: a reshape and a reduction, no gather
        return reduce(x.reshape(n, c, h // kh, kh, w // kw, kw), axis=(3, 5))
    patches = _windows(x, (kh, kw), (sh, sw), padding, pad)
    return reduce(patches, axis=(4, 5)).transpose(0, 3, 1, 2)


@_traced
def layer_norm(x, gamma=None, beta=None, eps=1e-5, axis=-1):
    """(x - mean) / sqrt(var + eps) * gamma + beta over `axis` (biased variance, as PyTorch).
    gamma and beta scale and shift the normalized elements: shaped like the normalized axes
    (D,) for the last, or a number; PyTorch's normalized_shape is `axis` here."""
    if isinstance(eps, Value) or np.ndim(eps) != 0 or isinstance(eps, (bool, np.bool_)):
        raise ArgumentError(f"layer_norm(x, gamma, beta, eps, axis): eps is a number, got "
                            f"{type(eps).__name__} (gamma and beta come before it)")
    ndim = np.ndim(x)
    axes = range(ndim) if axis is None else [
        a % ndim for a in (axis if isinstance(axis, (tuple, list)) else (axis,))]
    gamma, beta = (_affine_shaped(v, x, set(axes), name)
                   for v, name in ((gamma, "gamma"), (beta, "beta")))
    mu = np.mean(x, axis=axis, keepdims=True)
    d = x - mu
    var = np.mean(d * d, axis=axis, keepdims=True)
    y = d / np.sqrt(var + eps)
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    return y


def _affine_shaped(v, x, axes, name):
    """layer_norm's gamma or beta, checked: an array (or number) that varies along the
    normalized `axes` only (a tuple (5,) there is PyTorch's normalized_shape, which scaled the
    output by 5; a (3, 1) gamma scaled the rows)."""
    if v is None:
        return v
    if isinstance(v, (tuple, list)) and all(
            isinstance(e, (int, np.integer)) and not isinstance(e, bool) for e in v):
        raise ArgumentError(f"layer_norm(x, gamma, beta, eps, axis): {name} is an array of "
                            f"scales, got the {type(v).__name__} {v!r}; PyTorch's "
                            "normalized_shape is axis= here (layer_norm(x, gamma, beta, axis=-1))")
    shape = v.shape if isinstance(v, Value) else np.shape(v)
    x_shape, ndim = np.shape(x), np.ndim(x)
    wrong = len(shape) > ndim or any(
        s != 1 and (s != x_shape[ndim - 1 - i] or ndim - 1 - i not in axes)
        for i, s in enumerate(reversed(shape)))
    if wrong:
        want = [x_shape[a] if a in axes else 1 for a in range(ndim)]
        want = tuple(want[min(axes, default=ndim):])  # (leading ones left out: they broadcast)
        raise ShapeError(f"layer_norm: {name} of shape {shape} does not match the normalized "
                         f"axes {tuple(sorted(axes))} of x {x_shape}: give one number per "
                         f"normalized element, shape {want} (or a number)")
    return v


def _channel_shaped(v, x, axis, name):
    """gamma/beta/mean/var, one number per channel (x.shape[axis],), shaped to broadcast
    against x (a number broadcasts as it is)."""
    if v is None or np.ndim(v) == 0:
        return v
    c = x.shape[axis]
    if np.shape(v) != (c,):
        raise ShapeError(f"{name} takes one number per channel, shape ({c},) for axis {axis} of "
                         f"an input of shape {x.shape}; got shape {np.shape(v)}")
    shape = [1] * x.ndim
    shape[axis] = c
    return (v if isinstance(v, Value) else np.asarray(v)).reshape(shape)


def _channel_axis(x, axis, what):
    ndim = np.ndim(x)
    if ndim < 2:
        raise ShapeError(f"{what} takes a batch x[N, C, ...] of at least 2 dimensions, got "
                         f"shape {np.shape(x)}")
    if not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
        raise ArgumentError(f"{what}: axis={axis!r} is not an axis of an array of {ndim} "
                            "dimensions (the channels' axis: 1 for N, C, ...; -1 for "
                            "channels last)")
    return int(axis) % ndim


@_traced
def batch_norm(x, gamma=None, beta=None, eps=1e-5, axis=1, mean=None, var=None,
               return_stats=False):
    """Batch normalisation: (x - mean) / sqrt(var + eps) * gamma + beta, one mean and variance
    per channel (`axis`: 1, PyTorch's layout, for x[N, C] and x[N, C, H, W]; -1 for channels
    last) over all the other axes. Training: mean and var None, the batch's own (the variance
    biased, as PyTorch normalises). Evaluation: pass the running `mean` and `var` (shape (C,)).
    `return_stats=True` returns (y, mean, var) with the batch's mean and biased variance, shape
    (C,), to update running statistics after the call (return them with `has_aux=True`):
    PyTorch's rule is `running_var = (1 - m) * running_var + m * var * n / (n - 1)` with n the
    count per channel (x.size // C), `running_mean = (1 - m) * running_mean + m * mean`."""
    axis = _channel_axis(x, axis, "batch_norm")
    if (mean is None) != (var is None):
        raise ArgumentError("batch_norm takes both mean= and var= (evaluation with running "
                            "statistics) or neither (training, the batch's statistics)")
    others = tuple(a for a in range(np.ndim(x)) if a != axis)
    if mean is None:
        mu = np.mean(x, axis=others, keepdims=True)
        d = x - mu
        v = np.mean(d * d, axis=others, keepdims=True)
    else:
        mu = _channel_shaped(mean, x, axis, "batch_norm's mean")
        v = _channel_shaped(var, x, axis, "batch_norm's var")
        d = x - mu
    y = d / np.sqrt(v + eps)
    if gamma is not None:
        y = y * _channel_shaped(gamma, x, axis, "batch_norm's gamma")
    if beta is not None:
        y = y + _channel_shaped(beta, x, axis, "batch_norm's beta")
    if not return_stats:
        return y
    c = x.shape[axis]
    return y, np.reshape(mu, (c,)), np.reshape(v, (c,))


@_traced
def group_norm(x, groups, gamma=None, beta=None, eps=1e-5):
    """Group normalisation (PyTorch's F.group_norm) of x[N, C, ...]: the C channels in `groups`
    groups of C/groups, each sample's group normalised by its own mean and biased variance
    (over its channels and the other axes), then gamma and beta per channel, shape (C,).
    groups = 1 normalises each sample whole (layer norm over C, H, W); groups = C is instance
    normalisation."""
    _channel_axis(x, 1, "group_norm")
    n, c = x.shape[:2]
    if (not isinstance(groups, (int, np.integer)) or isinstance(groups, (bool, np.bool_))
            or groups < 1 or c % groups):
        raise ArgumentError(f"group_norm: groups={groups!r} must be a whole number >= 1 that "
                            f"divides the {c} channels")
    g = x.reshape((n, int(groups), math.prod(x.shape[1:]) // int(groups)))
    mu = np.mean(g, axis=2, keepdims=True)
    d = g - mu
    y = (d / np.sqrt(np.mean(d * d, axis=2, keepdims=True) + eps)).reshape(x.shape)
    if gamma is not None:
        y = y * _channel_shaped(gamma, x, 1, "group_norm's gamma")
    if beta is not None:
        y = y + _channel_shaped(beta, x, 1, "group_norm's beta")
    return y


@_traced
def embedding(table, indices):
    """Rows of `table` (vocab, dim) for integer `indices` of any shape, each in [0, vocab): a
    negative index is an IndexOutOfRangeError, as in PyTorch (np.take's wrap-around took the
    last row for -1, a common padding id); the gradient is a scatter-add into the rows used."""
    kind = (indices.dtype if isinstance(indices, Value) else np.asarray(indices).dtype).kind
    if kind not in "iu":  # (np.take's own message named an internal op; swapped arguments too)
        raise ArgumentError(f"embedding(table, indices) takes integer indices, got "
                            f"{'a float' if kind == 'f' else 'a non-integer'} array: pass "
                            "indices.astype(np.int64) (and the table first)")
    if type(table) is np.ndarray and isinstance(indices, Value):  # (np.take would not see it:
        table = fn.as_value(table, like=indices)  # a table from outside is read on every call)
    rows = np.shape(table)[0] if np.ndim(table) else 0
    refuse_caught_index_error(indices)
    if isinstance(indices, Value):
        if kind == "i":  # (a negative one: out of range, found when the kernel runs; the
            indices = fn.astype(indices, np.int64)  # row count in int64, int8's too)
            indices = fn.where(fn.compare("less", indices, 0), rows, indices)
    elif np.size(indices) and np.min(indices) < 0:
        raise IndexError(f"embedding: index {np.min(indices)} is no row of a table of {rows} "
                         "rows (a negative index does not count from the end, as in PyTorch)")
    return np.take(table, indices, axis=0)


@_traced
def dropout(x, mask, rate):
    """Inverted dropout with an explicit `mask` (True = keep), e.g. from `dropout_mask`:
    x * mask / (1 - rate). gradc keeps no hidden random state: pass a new mask each step, or
    draw it inside from a gradc.random.Generator argument."""
    if not 0 <= rate < 1:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
    return np.where(mask, x * (1.0 / (1.0 - rate)), 0.0)


def dropout_mask(rng, shape, rate):
    """A keep-mask for `dropout`, drawn from `rng`: a NumPy Generator outside a traced function,
    or inside one a gradc.random.Generator passed to it as an argument (a new mask every call)."""
    if not 0 <= rate < 1:  # (as dropout: 1.5 gave a mask of nothing kept, -0.5 of everything)
        raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
    return rng.random(shape) >= rate


@_traced
def gelu(x, approximate=True):
    """GELU. approximate=True (JAX's default, PyTorch's approximate="tanh"): the tanh form,
    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), up to ~2e-3 from the exact one;
    approximate=False (PyTorch's default): 0.5 x (1 + erf(x / sqrt(2))). (The tanh form's
    gradient is NaN where x^3 overflows, |x| > ~1e13 in float32: 0 * inf. Clipping x inside the
    tanh fixed that but kept the clip's masks for the backward, two more buffers: not done.)"""
    if approximate not in (True, False):
        raise ArgumentError(f"gelu: approximate is True (the tanh form) or False (erf), got "
                            f"{approximate!r}")
    if not approximate:
        import scipy.special  # (not at import: `import gradc` leaves SciPy out, ~0.1 s)
        return 0.5 * x * (1.0 + scipy.special.erf(x * 0.7071067811865476))
    return 0.5 * x * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))


@_traced
def flatten(x, start_axis=1):
    """Merge the axes from `start_axis` on: (N, C, H, W) -> (N, C*H*W)."""
    ndim = len(np.shape(x))
    if not -ndim <= start_axis < max(ndim, 1):
        raise ArgumentError(f"flatten: start_axis {start_axis} is out of range for an array of "
                            f"{ndim} dimensions")
    start_axis %= max(ndim, 1)
    return _rows(x, start_axis)


def _rows(x, axis):
    """x with its axes from `axis` on merged into one, by size (a -1 cannot stand for it in an
    empty batch: NumPy refuses to infer it there)."""
    return x.reshape(tuple(x.shape[:axis]) + (math.prod(x.shape[axis:]),))


# PyTorch's keywords these functions do not take, and what to write instead (a bare "unexpected
# keyword argument" said nothing of it)
_PER_SAMPLE = ("the per-sample losses are -np.take_along_axis(gradc.nn.log_softmax(logits, "
               "-1), labels[:, None], axis=1)[:, 0]")
cross_entropy.__wrapped__.keyword_hints = {
    "reduction": f"it is the mean over the batch; {_PER_SAMPLE} (sum or weight them as needed)",
    "weight": f"{_PER_SAMPLE}; weight them and take the sum divided by the weights' sum",
    "ignore_index": f"{_PER_SAMPLE}; mask them with np.where(labels != ignore, ..., 0)",
    "label_smoothing": "mix the one-hot targets with 1/classes and take "
                       "-(targets * gradc.nn.log_softmax(logits, -1)).sum(-1).mean()"}
mse.__wrapped__.keyword_hints = {
    "reduction": "it is the mean; (pred - target) ** 2 gives the per-element losses"}
max_pool2d.__wrapped__.keyword_hints = {
    "kernel_size": "the window is `kernel` (max_pool2d(x, kernel, stride, padding))",
    "ceil_mode": "windows that run past the edge are not taken; pad the input first (np.pad "
                 "with -np.inf)",
    "dilation": "no dilated pooling; take strided slices of the input first"}
avg_pool2d.__wrapped__.keyword_hints = {
    "kernel_size": "the window is `kernel` (avg_pool2d(x, kernel, stride, padding))",
    "count_include_pad": "padding counts in the mean (count_include_pad=True, PyTorch's "
                         "default); for the other, divide by avg_pool2d of np.ones_like(x)"}
batch_norm.__wrapped__.keyword_hints = {
    "training": "it uses the batch's statistics unless mean= and var= are given (the running "
                "statistics, for evaluation)"}
