"""Optimizers, written as IR so the update fuses with the gradient computation.

Each optimizer follows PyTorch's update rule (torch.optim, single-tensor, non-capturable) in the
same order of float32 operations, each rounded as PyTorch rounds it (the CPU kernels have no
fused multiply-adds: codegen/rt.py FASTMATH). Per-step numbers that change without recompiling — the learning
rate (a schedule may change `opt.lr` between calls) and the bias corrections of Adam — are runtime
scalars computed in float64 from the step count, then rounded to float32, as PyTorch does.

    SGD:   d = g + wd*p;  buf = momentum*buf + (1-dampening)*d  (buf = d at step 1)
           d = d + momentum*buf (nesterov) or d = buf;           p = p - lr*d
    Adam:  g = g + wd*p;  m = lerp(m, g, 1-b1);  v = b2*v + (1-b2)*g*g
           p = p + (-(lr/(1-b1^t)) * m) / (sqrt(v)/sqrt(1-b2^t) + eps)
    AdamW: p = p*(1 - lr*wd), then Adam with no weight decay.

Per-parameter options, for every optimizer: `weight_decay` (a number, a pytree of numbers shaped
like the parameters, or a function params -> such a pytree), `mask` (optax's: a pytree of bools
or a function params -> one; decay only where True) and `lr_mult` (a learning-rate multiplier per
parameter, the name Caffe and MXNet give it; PyTorch spells it as a param group's own lr). They
are compiled into the update as constants. With them, AdamW's factor 1 - lr*lr_mult*wd is
computed in the parameter's dtype (PyTorch's param groups compute it in float64, so a float32
factor can differ in its last bit); one weight_decay number alone keeps PyTorch's order exactly.
"""
import math
import numbers

import numpy as np

from . import pytree
from .errors import ArgumentError
from .trace import user_source


def _lerp(start, end, weight):
    """torch.lerp's formula, which switches form at weight 0.5 for accuracy."""
    if abs(weight) < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1 - weight)


def _option(optimizer, name, value):
    """A per-parameter option as given: a number, a pytree of numbers matching the parameters
    (a number stands for every leaf below it), or a function params -> such a pytree."""
    if isinstance(value, numbers.Real):
        value = float(value)  # (np.float32 too: `scalars` tells a number by its type)
        if name != "mask" and not 0.0 <= value < math.inf:  # (NaN too, as PyTorch)
            raise ArgumentError(f"{optimizer}({name}={value!r}): it must be a number >= 0",
                                source=user_source())
        return value
    if value is None or callable(value) or isinstance(value, (dict, list, tuple)):
        return value
    raise ArgumentError(
        f"{optimizer}({name}={type(value).__name__}): give a number, a pytree of numbers shaped "
        "like the parameters (dicts, lists, tuples), or a function params -> such a pytree",
        source=user_source())


def _frozen(value):
    """A hashable stand-in for an option (part of the compiled signature)."""
    if isinstance(value, dict):
        return ("dict", tuple((repr(k), _frozen(v)) for k, v in sorted(value.items(), key=repr)))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_frozen(v) for v in value))
    if isinstance(value, np.ndarray):  # (a 0-d array's value, `mask={"W": np.array(True)}`:
        return ("array", value.dtype.str, value.shape, value.tobytes())  # an array hashes not)
    return value  # a number, None, or a function (by identity)


def per_leaf(option, params, optimizer, name, default):
    """`option` resolved to one float per leaf of `params` (in flatten order): a function is
    called with the parameters; a number applies to every leaf below it; bools are 1.0/0.0."""
    if option is None:
        option = default
    if callable(option):
        option = option(params)
    out = []

    def walk(o, p, path):
        if isinstance(o, (numbers.Real, np.bool_)) or (isinstance(o, np.ndarray) and o.ndim == 0):
            if name != "mask" and not 0.0 <= float(o) < math.inf:  # (NaN too, as PyTorch)
                raise ArgumentError(f"{optimizer}({name}=...): at {path or 'the root'} it is "
                                    f"{float(o)!r}; it must be a number >= 0",
                                    source=user_source())
            out.extend([float(o)] * len(pytree.flatten(p)[0]))
        elif isinstance(p, dict) and isinstance(o, dict) and set(o) == set(p):
            for k in p:  # (pytree.flatten's order)
                walk(o[k], p[k], f"{path}[{k!r}]")
        elif isinstance(p, (list, tuple)) and isinstance(o, (list, tuple)) and len(o) == len(p):
            for i, (a, b) in enumerate(zip(o, p)):
                walk(a, b, f"{path}[{i}]")
        else:
            keys = f" (keys {list(p)})" if isinstance(p, dict) else ""
            raise ArgumentError(
                f"{optimizer}({name}=...): at {path or 'the root'} the parameters are "
                f"{type(p).__name__}{keys} but {name} has {o!r}; give a number per parameter, "
                "in a pytree shaped like the parameters (a number covers a whole subtree)",
                source=user_source())

    walk(option, params, "")
    return out


def _hyperparameter(optimizer, name, value):
    """A number hyperparameter checked as PyTorch checks it (lr, momentum, eps >= 0; betas in
    [0, 1)), as a float; betas as a tuple of two."""
    if name == "betas":
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise ArgumentError(f"{optimizer}(betas={value!r}): give two numbers, (beta1, beta2)",
                                source=user_source())
        return tuple(_hyperparameter(optimizer, "beta", b) for b in value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ArgumentError(f"{optimizer}({name}={value!r}): give a number (a "
                            f"{type(value).__name__} is not one)", source=user_source())
    value = float(value)
    high = 1.0 if name == "beta" else math.inf
    if not 0.0 <= value < high:  # (NaN too)
        raise ArgumentError(f"{optimizer}({name}={value!r}): it must be "
                            + ("in [0, 1)" if name == "beta" else "a number >= 0"),
                            source=user_source())
    return value


class Optimizer:
    """Base: `slots` names the per-parameter state arrays, `scalar_names` the runtime scalars.

    Per-parameter options (`weight_decay`, `mask`, `lr_mult`) are resolved against the
    parameters when a step compiles (`leaf_options`) and compiled in as constants. Set after
    construction (`opt.lr = ...`, a schedule), a hyperparameter is checked as in the
    constructor: an np.float64 weight decay set so was once read as no decay at all."""

    slots = ()
    scalar_names = ("lr",)
    weight_decay, mask, lr_mult = 0.0, None, None
    HYPERPARAMETERS = ("lr", "momentum", "dampening", "eps", "betas")

    def __setattr__(self, name, value):
        if name in ("weight_decay", "mask", "lr_mult"):
            value = _option(type(self).__name__, name, value)
        elif name in self.HYPERPARAMETERS:
            value = _hyperparameter(type(self).__name__, name, value)
        object.__setattr__(self, name, value)

    def static(self, params=None):
        """Hyperparameters baked into the compiled update (part of the signature); options
        given as functions resolved against `params`."""
        raise NotImplementedError

    def scalars(self, step):
        """Runtime scalars (float64) for update number `step` (1-based)."""
        raise NotImplementedError

    def update(self, p, g, state, s, leaf=None):
        """IR of one parameter's update: returns (new_p, {slot: new_state}). `leaf`: that
        parameter's options ({"weight_decay": rate, "lr_mult": m}), or None when they are the
        same for all (one weight_decay number, no mask or lr_mult)."""
        raise NotImplementedError

    def _set_options(self, mask, lr_mult):
        """Set `mask` and `lr_mult` when given (left unset, they are the class's None and not
        among the hyperparameters: repr and `gradc compile`'s modules stay as they were)."""
        if mask is not None:
            self.mask = mask
        if lr_mult is not None:
            self.lr_mult = lr_mult

    def uniform(self):
        """One weight_decay number for every parameter, and no mask or lr_mult."""
        return isinstance(self.weight_decay, numbers.Real) and self.mask is None and \
            self.lr_mult is None

    def _options_key(self, params=None):
        """The options, frozen; an option given as a function, called with `params`: what it
        returns now is compiled in, so a function whose answer changes (a decay read from a
        config it closes over) compiles again, as a changed dict does. (Called once per
        compile, its answer was kept for that signature alone: a new batch shape took the new
        decay, the shape before kept the old.)"""
        def key(option, name, default):
            if callable(option) and params is not None:
                return ("function", option, tuple(per_leaf(
                    option, params, type(self).__name__, name, default)))
            return _frozen(option)
        return (key(self.weight_decay, "weight_decay", 0.0), key(self.mask, "mask", True),
                key(self.lr_mult, "lr_mult", 1.0))

    def leaf_options(self, params):
        """Per leaf of `params` (flatten order): {"weight_decay": rate, "lr_mult": m}; None when
        `uniform`. A mask (optax's semantics) keeps the decay only where it is True."""
        if self.uniform():
            return None
        name = type(self).__name__
        rates = per_leaf(self.weight_decay, params, name, "weight_decay", 0.0)
        keep = per_leaf(self.mask, params, name, "mask", True)
        mults = per_leaf(self.lr_mult, params, name, "lr_mult", 1.0)
        return [{"weight_decay": r if k else 0.0, "lr_mult": m}
                for r, k, m in zip(rates, keep, mults)]

    def __repr__(self):
        """The optimizer with its options, dicts in sorted key order (one text per meaning:
        gradc.distributed compares the ranks' optimizers by it; a dict built from a set came
        in another order on another rank)."""
        def sort(value):
            return ({k: sort(value[k]) for k in sorted(value, key=repr)}
                    if isinstance(value, dict) else value)
        args = ", ".join(f"{k}={sort(v)!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


def _scaled(lr, leaf):
    """A runtime learning-rate scalar times the parameter's lr_mult (a compiled constant)."""
    m = 1.0 if leaf is None else leaf["lr_mult"]
    return lr if m == 1.0 else lr * m


class SGD(Optimizer):
    def __init__(self, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0,
                 mask=None, lr_mult=None):
        self.lr, self.momentum, self.dampening = lr, momentum, dampening
        self.nesterov, self.weight_decay = nesterov, weight_decay
        self._check_nesterov()
        self._set_options(mask, lr_mult)

    def _check_nesterov(self):
        """PyTorch's refusal, at construction and at each step (`opt.nesterov = True` set later
        was used with no momentum, silently)."""
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ArgumentError("SGD(nesterov=True) requires a momentum and zero dampening",
                                source=user_source())

    @property
    def slots(self):
        return ("momentum_buffer",) if self.momentum else ()

    @property
    def scalar_names(self):
        return ("lr", "buf_keep", "buf_new") if self.momentum else ("lr",)

    def static(self, params=None):
        self._check_nesterov()
        return ("SGD", self.momentum, self.dampening, self.nesterov) + self._options_key(params)

    def scalars(self, step):
        out = {"lr": float(self.lr)}
        if self.momentum:  # PyTorch starts the buffer as a copy of the first gradient
            out["buf_keep"] = 0.0 if step == 1 else float(self.momentum)
            out["buf_new"] = 1.0 if step == 1 else 1.0 - float(self.dampening)
        return out

    def update(self, p, g, state, s, leaf=None):
        wd = self.weight_decay if leaf is None else leaf["weight_decay"]
        d = g + wd * p if wd else g
        new_state = {}
        if self.momentum:
            buf = s["buf_keep"] * state["momentum_buffer"] + s["buf_new"] * d
            new_state["momentum_buffer"] = buf
            d = d + self.momentum * buf if self.nesterov else buf
        return p - _scaled(s["lr"], leaf) * d, new_state


class Adam(Optimizer):
    slots = ("exp_avg", "exp_avg_sq")
    scalar_names = ("lr", "step_size", "bias_correction2_sqrt", "decay")
    decoupled = False

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, mask=None,
                 lr_mult=None):
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self._set_options(mask, lr_mult)

    def static(self, params=None):
        return (type(self).__name__, self.betas, self.eps) + self._options_key(params)

    def scalars(self, step):
        b1, b2 = self.betas
        # (a pytree of rates computes each decay in the graph: `update`; this method is copied
        # into `gradc compile`'s modules, hence no imports)
        wd = self.weight_decay if type(self.weight_decay) in (int, float) else 0.0
        return {"lr": float(self.lr),
                "step_size": float(self.lr) / (1 - b1 ** step),
                "bias_correction2_sqrt": math.sqrt(1 - b2 ** step),
                "decay": 1.0 - float(self.lr) * wd}

    def update(self, p, g, state, s, leaf=None):
        b1, b2 = self.betas
        wd = self.weight_decay if leaf is None else leaf["weight_decay"]
        if self.decoupled and wd:  # PyTorch: p *= 1 - lr*wd, that factor rounded from float64
            p = p * (s["decay"] if leaf is None else 1.0 - _scaled(s["lr"], leaf) * wd)
        elif wd:
            g = g + wd * p
        m = _lerp(state["exp_avg"], g, 1 - b1)
        v = state["exp_avg_sq"] * b2 + (1 - b2) * g * g
        denom = np.sqrt(v) / s["bias_correction2_sqrt"] + self.eps
        # torch's addcdiv_(m, denom, value=-step_size): p + (-step_size * m) / denom
        step = -_scaled(s["step_size"], leaf) * m
        return p + step / denom, {"exp_avg": m, "exp_avg_sq": v}


class AdamW(Adam):
    decoupled = True

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, mask=None,
                 lr_mult=None):
        super().__init__(lr, betas, eps, weight_decay, mask, lr_mult)
