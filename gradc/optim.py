"""Optimizers, written as IR so the update fuses with the gradient computation.

Each optimizer follows PyTorch's update rule (torch.optim, single-tensor, non-capturable) in the
same order of float32 operations. Per-step numbers that change without recompiling — the learning
rate (a schedule may change `opt.lr` between calls) and the bias corrections of Adam — are runtime
scalars computed in float64 from the step count, then rounded to float32, as PyTorch does.

    SGD:   d = g + wd*p;  buf = momentum*buf + (1-dampening)*d  (buf = d at step 1)
           d = d + momentum*buf (nesterov) or d = buf;           p = p - lr*d
    Adam:  g = g + wd*p;  m = lerp(m, g, 1-b1);  v = b2*v + (1-b2)*g*g
           p = p - (lr/(1-b1^t)) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
    AdamW: p = p*(1 - lr*wd), then Adam with no weight decay.
"""
import math
import numbers

import numpy as np

from .errors import UnsupportedOpError
from .trace import user_source


def _lerp(start, end, weight):
    """torch.lerp's formula, which switches form at weight 0.5 for accuracy."""
    if abs(weight) < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1 - weight)


def _one_rate(optimizer, weight_decay):
    """weight_decay as one number; a per-parameter pytree or mask is refused (for now)."""
    if isinstance(weight_decay, numbers.Real):
        return weight_decay
    raise UnsupportedOpError(
        f"{optimizer}(weight_decay={type(weight_decay).__name__}): per-parameter weight decay (a "
        "pytree of rates, or a mask) is not supported yet; give one float. To leave some "
        "parameters undecayed, pass weight_decay=0.0 and apply the decay to the others yourself "
        "after each step (AdamW: p *= 1 - lr * rate)", source=user_source())


class Optimizer:
    """Base: `slots` names the per-parameter state arrays, `scalar_names` the runtime scalars."""

    slots = ()
    scalar_names = ("lr",)

    def static(self):
        """Hyperparameters baked into the compiled update (part of the signature)."""
        raise NotImplementedError

    def scalars(self, step):
        """Runtime scalars (float64) for update number `step` (1-based)."""
        raise NotImplementedError

    def update(self, p, g, state, s):
        """IR of one parameter's update: returns (new_p, {slot: new_state})."""
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    def __init__(self, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        self.lr, self.momentum, self.dampening = lr, momentum, dampening
        self.nesterov, self.weight_decay = nesterov, _one_rate("SGD", weight_decay)

    @property
    def slots(self):
        return ("momentum_buffer",) if self.momentum else ()

    @property
    def scalar_names(self):
        return ("lr", "buf_keep", "buf_new") if self.momentum else ("lr",)

    def static(self):
        return ("SGD", self.momentum, self.dampening, self.nesterov, self.weight_decay)

    def scalars(self, step):
        out = {"lr": float(self.lr)}
        if self.momentum:  # PyTorch starts the buffer as a copy of the first gradient
            out["buf_keep"] = 0.0 if step == 1 else float(self.momentum)
            out["buf_new"] = 1.0 if step == 1 else 1.0 - float(self.dampening)
        return out

    def update(self, p, g, state, s):
        d = g + self.weight_decay * p if self.weight_decay else g
        new_state = {}
        if self.momentum:
            buf = s["buf_keep"] * state["momentum_buffer"] + s["buf_new"] * d
            new_state["momentum_buffer"] = buf
            d = d + self.momentum * buf if self.nesterov else buf
        return p - s["lr"] * d, new_state


class Adam(Optimizer):
    slots = ("exp_avg", "exp_avg_sq")
    scalar_names = ("lr", "step_size", "bias_correction2_sqrt", "decay")
    decoupled = False

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.lr, self.betas, self.eps = lr, tuple(betas), eps
        self.weight_decay = _one_rate(type(self).__name__, weight_decay)

    def static(self):
        return (type(self).__name__, self.betas, self.eps, self.weight_decay)

    def scalars(self, step):
        b1, b2 = self.betas
        return {"lr": float(self.lr),
                "step_size": float(self.lr) / (1 - b1 ** step),
                "bias_correction2_sqrt": math.sqrt(1 - b2 ** step),
                "decay": 1.0 - float(self.lr) * self.weight_decay}

    def update(self, p, g, state, s):
        b1, b2 = self.betas
        if self.decoupled and self.weight_decay:
            p = p * s["decay"]
        elif self.weight_decay:
            g = g + self.weight_decay * p
        m = _lerp(state["exp_avg"], g, 1 - b1)
        v = state["exp_avg_sq"] * b2 + (1 - b2) * g * g
        denom = np.sqrt(v) / s["bias_correction2_sqrt"] + self.eps
        return p - s["step_size"] * (m / denom), {"exp_avg": m, "exp_avg_sq": v}


class AdamW(Adam):
    decoupled = True

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(lr, betas, eps, weight_decay)
