"""Neural-network functions for traced code. Each is numerically stable forward and backward:
the composites (logsumexp, softmax, log_softmax) have hand-written VJPs and max-shifted forms;
sigmoid, softplus and log_sigmoid are single elementwise ops with stable scalar formulas.
They also work on plain NumPy arrays (outside tracing), with the same semantics.
"""
import numpy as np

from .ir import Value
from .ops import fn
from .ops.registry import get_op
from .trace import traced


def _value(x):
    """Trace plain arrays as constants in no graph: run the NumPy reference instead."""
    return x if isinstance(x, Value) else None


def _unary(op):
    @traced
    def f(x):
        if _value(x) is None:
            x = np.asarray(x)
            return get_op(op).ref(x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float64))
        return fn.unary(op, x)
    f.__name__ = op
    return f


relu = _unary("relu")
sigmoid = _unary("sigmoid")
softplus = _unary("softplus")
log_sigmoid = _unary("log_sigmoid")
relu.__doc__ = "max(x, 0); its gradient at 0 is 0."
sigmoid.__doc__ = "1 / (1 + exp(-x)), stable for large |x|."
softplus.__doc__ = "log(1 + exp(x)) computed as max(x, 0) + log1p(exp(-|x|))."
log_sigmoid.__doc__ = "log(sigmoid(x)) computed as min(x, 0) - log1p(exp(-|x|))."


def _composite(op, keepdims_out):
    @traced
    def f(x, axis=-1, keepdims=False):
        if _value(x) is None:
            x = np.asarray(x)
            axes = fn.normalize_axes(axis, x.ndim)
            out = get_op(op).ref(x, axes=axes)
            return out if keepdims or not keepdims_out else np.squeeze(out, axis=axes)
        axes = fn.normalize_axes(axis, x.ndim)
        if not np.issubdtype(x.dtype, np.floating):
            x = fn.astype(x, np.float64)
        out = x.graph.apply(op, (x,), axes=axes)
        if keepdims_out and not keepdims:
            out = fn.reshape(out, tuple(d for i, d in enumerate(x.shape) if i not in axes))
        return out
    f.__name__ = op
    return f


logsumexp = _composite("logsumexp", keepdims_out=True)
softmax = _composite("softmax", keepdims_out=False)
log_softmax = _composite("log_softmax", keepdims_out=False)
logsumexp.__doc__ = "log(sum(exp(x), axis)), max-shifted so it never overflows."
softmax.__doc__ = "exp(x) / sum(exp(x), axis), max-shifted."
log_softmax.__doc__ = "x - logsumexp(x, axis)."


@traced
def cross_entropy(logits, labels):
    """Mean softmax cross-entropy of `logits` (batch, classes) against integer `labels` (batch,)."""
    logp = log_softmax(logits, axis=-1)
    n = logits.shape[0]
    if isinstance(logp, Value):
        picked = fn.take_along_axis(logp, fn.reshape(fn.as_value(labels, logp), (n, 1)), 1)
        return -fn.mean(picked)
    return -np.mean(logp[np.arange(n), np.asarray(labels)])


@traced
def mse(pred, target):
    """Mean squared error."""
    diff = pred - target
    return np.mean(diff * diff)
