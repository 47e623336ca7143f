"""`gradc.train_step`: forward, backward and optimizer update as one compiled call.

The step owns the optimizer state (fixed arrays shaped like the parameters) and a few runtime
scalars (learning rate, bias corrections). The compiled graph's outputs are the loss, the new
parameters and the new state; the new values are written in place into the parameters' and the
state's own buffers (`graph.aliases`), so a step allocates nothing and returns the loss.

With check_finite=True the update is guarded: every new value is `where(ok, new, old)` where `ok`
says the loss and all gradients are finite, so a bad step leaves parameters and state exactly as
they were (and the gradc.random Generators in the batch unadvanced: a retry draws the same
numbers), and the call raises NonFiniteError.
"""
from __future__ import annotations

import numbers
import threading
import time

import numpy as np

from . import autodiff, forks, frozen, pytree, random
from .capture import (OUTSIDE_READS, CaptureChanged, Captures, changed_contents,
                      numpy_read_before, unchanged_by)
from .compile import check_target, compile_graph
from .errors import ArgumentError, NonFiniteError, SignatureError, UnsupportedOpError
from .function import MAX_VARIANTS, _take_variant
from .ir import Graph, Value, gc_paused
from .log import log_compile
from .ops import fn
from .passes import BEFORE_AUTODIFF, run_passes
from .pytree import is_device_array
from .signature import (Call, RecompileWatch, as_scalar, check_device_leaves, check_input_dtypes,
                        check_loss_output, differentiable_leaves, normalize_argnums, number_loss,
                        keep_recent, signature_key, what_changed)
from .standalone.calls import first_overlap
from .trace import argument_names, leaf_names, trace, user_source


def global_norm_clip(grads, max_norm):
    """PyTorch's clip_grad_norm_: scale every gradient by min(1, max_norm / (norm + 1e-6))."""
    total = None
    for g in grads:
        sq = fn.sum(g * g)
        total = sq if total is None else total + sq
    coef = fn.minimum(max_norm / (np.sqrt(total) + 1e-6), 1.0)
    return [g * fn.broadcast_to(fn.astype(coef, g.dtype), g.shape) for g in grads]


def all_finite(values):
    """A boolean scalar: every element of every value is finite (x*0 is 0 exactly when x is)."""
    acc = None
    for v in values:
        z = fn.sum(fn.astype(v, np.float64) * 0.0)
        acc = z if acc is None else acc + z
    return acc == 0.0


def updatable(x, target="cpu"):
    """A parameter a step can update in place: a writeable, C-contiguous float NumPy array in
    native byte order (or, for target="cuda", a C-contiguous float device array)."""
    if target == "cuda" and is_device_array(x):
        return np.issubdtype(x.dtype, np.floating) and x.is_c_contiguous()
    return (isinstance(x, np.ndarray) and type(x) is not Value  # (traced: check_updatable says)
            and x.flags.c_contiguous and x.flags.writeable
            and np.issubdtype(x.dtype, np.floating) and x.dtype.isnative)


def check_updatable(leaves, src, target="cpu", names=None):
    """Parameters are updated in place: each must be `updatable`. `names`: the leaves' paths."""
    if any(isinstance(x, Value) for x in leaves):
        raise UnsupportedOpError(
            "a train_step called inside a traced function: a step updates its parameters in "
            "place and runs as a program of its own. Call it outside (or trace the loss and "
            "its gradient, gradc.value_and_grad, and update in the caller)", source=src)
    for i, x in enumerate(leaves):
        if isinstance(x, np.ndarray) and not x.dtype.isnative:
            raise SignatureError(
                f"train_step updates parameters in place, and a {x.dtype.name} parameter is in "
                f"non-native byte order ({x.dtype.str!r}); convert it once with "
                f"p.astype(np.{x.dtype.name})", source=src)
        if not updatable(x, target):
            device = ", or a C-contiguous float device array" if target == "cuda" else ""
            name = names[i] if names else "a parameter"
            what = (f"a {type(x).__name__}" if not isinstance(x, np.ndarray) else
                    f"a {x.dtype.name} array" if not np.issubdtype(x.dtype, np.floating) else
                    "a read-only array" if not x.flags.writeable else
                    "a Fortran-ordered array" if x.flags.f_contiguous else
                    "a non-contiguous view")
            floating = np.issubdtype(np.asarray(x).dtype, np.floating)
            leaf = names[i] if names else "p"  # (np.array keeps a Fortran array's order)
            if isinstance(x, np.ndarray) and not floating:  # (an index table, a generator)
                raise SignatureError(
                    f"train_step updates parameters in place, and {name} is {what}, which "
                    "has no gradient to train it: pass it among the batch arguments, "
                    "step(params, *batch) (a gradc.random.Generator there advances on every "
                    "step), or, to train it, keep it as floats (.astype(np.float32))",
                    source=src)
            fix = (f"np.array({leaf}, order='C') once (a writeable, C-ordered copy of the same "
                   f"dtype)" if floating else f"{leaf}.astype(np.float32) once")
            raise SignatureError(
                f"train_step updates parameters in place, and {name} is {what}: each must be a "
                f"writeable, C-contiguous float NumPy array{device}; make it one with {fix} "
                "and train that", source=src)


def check_apart(p_leaves, args, argnums, loss_fn):
    """Parameters are updated in place one by one, so two that share memory (the same array
    passed twice, or overlapping slices of one) would lose an update: refuse them, naming both
    (`p_leaves` are the updatable leaves of `args[argnums]`, the parameters of `loss_fn`)."""
    pair = first_overlap(p_leaves)
    if pair is None:
        return
    argnum = argnums % len(args)
    argnames = argument_names(loss_fn) if loss_fn is not None else []
    argname = argnames[argnum] if argnum < len(argnames) else f"arg{argnum}"
    a, b = (leaf_names(((args[argnum],), {}), [argname])[i] for i in pair)
    raise SignatureError(
        f"parameters {a} and {b} share memory: train_step updates each parameter in place with "
        "its own gradient and optimizer state, so one of the two updates would be lost. To tie "
        "them, pass the array once and use it in both places in the loss; to train them "
        "separately, pass a copy", source=user_source())


def check_no_python_numbers(tree, name, src):
    """A Python number among the parameters (tree: their description) cannot be updated in place."""
    for path, number in pytree.static_numbers(tree, name):
        raise SignatureError(
            f"{path} is a Python {type(number).__name__} ({number!r}): train_step updates "
            f"parameters in place, which a Python number cannot be; pass np.array({number!r}) "
            "(a 0-d array) to train it, or pass it as another argument", source=src)


def _brief(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_options(optimizer, clip_norm):
    """An optimizer object (not its class, nor a name) and a clip_norm > 0 or None."""
    from .optim import Optimizer
    if not isinstance(optimizer, Optimizer):
        what = (f"the class {optimizer.__name__}" if isinstance(optimizer, type)
                else f"{type(optimizer).__name__} {optimizer!r}")
        raise ArgumentError(f"train_step's optimizer is {what}: give an optimizer object, such "
                            "as gradc.optim.Adam(lr=1e-3) or gradc.optim.SGD(lr=0.1)",
                            source=user_source())
    if clip_norm is not None and (isinstance(clip_norm, (bool, np.bool_))
                                  or not isinstance(clip_norm, numbers.Real)
                                  or not clip_norm > 0):
        raise ArgumentError(f"train_step(clip_norm={clip_norm!r}): give a number > 0 (the "
                            "largest global gradient norm), or None", source=user_source())


def update_step(optimizer, check_finite=False, clip_norm=None, grad_scale=1.0, target="cpu"):
    """An update-only step: `step(params, grads)` applies `optimizer` with the given gradients
    (times `grad_scale`) in place, as a train step would after its backward."""
    return TrainStep(None, optimizer, 0, check_finite, clip_norm, target=target,
                     grad_scale=grad_scale)


def _counts_as_ints(state):
    """A state whose "step" and "start" are 0-d integer arrays (np.savez and np.load make
    them so) with them as ints; any other state as it is."""
    if not isinstance(state, dict):
        return state
    counts = {k: int(v) for k, v in state.items() if k in ("step", "start")
              and isinstance(v, np.ndarray) and v.ndim == 0 and v.dtype.kind in "iu"}
    return {**state, **counts} if counts else state


def _arrays_only(tree):
    """Whether every leaf of a (dict, list, tuple) tree is a NumPy array."""
    if isinstance(tree, dict):
        return all(_arrays_only(v) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return all(_arrays_only(v) for v in tree)
    return isinstance(tree, np.ndarray)


def check_argnums(argnums):
    if not isinstance(argnums, int):
        raise SignatureError(
            f"train_step updates one argument: argnums must be an int, got {argnums!r}; put "
            "the parameters in one dict, list or tuple and give its position",
            source=user_source())


class LearningRate:
    """`step.lr`: the learning rate of the step's `optimizer`."""

    @property
    def lr(self):
        """The optimizer's learning rate (`step.lr = x` sets it, as `opt.lr = x` does: read at
        every call, no recompile; as a `gradc compile` module's step.lr)."""
        return self.optimizer.lr

    @lr.setter
    def lr(self, value):
        self.optimizer.lr = value


class TrainStep(LearningRate):
    """`loss = step(params, *batch)`: one optimizer step, params updated in place."""

    def __init__(self, loss_fn, optimizer, argnums=0, check_finite=False, clip_norm=None,
                 target="cpu", grad_scale=1.0, has_aux=False):
        check_target(target)
        if loss_fn is not None and not callable(loss_fn):
            raise ArgumentError(f"gradc.train_step: {type(loss_fn).__name__} {loss_fn!r} is not a "
                                "loss function: give the function", source=user_source())
        self.target = target
        self.has_aux = has_aux  # loss_fn returns (loss, aux); a step returns (loss, aux copies)
        check_argnums(argnums)
        _check_options(optimizer, clip_norm)
        self.loss_fn, self.optimizer, self.argnums = loss_fn, optimizer, argnums
        self.check_finite, self.clip_norm = check_finite, clip_norm
        # loss_fn=None makes an update-only step, `step(params, grads)`, whose gradients (times
        # grad_scale) are given: the optimizer, clipping and check_finite without a forward
        self.grad_scale = grad_scale
        self.__name__ = getattr(loss_fn, "__name__", "loss")
        self.step_count = 0
        self.cache = {}
        self.variants = {}  # key -> earlier compiles whose outside values may come back
        self.lock = threading.Lock()
        forks.track(self, "lock")
        self._param_spec = None  # (treedef, [(shape, dtype)]) fixed by the first call
        self._spec_origin = "first called with"  # (or loaded by load_state_dict)
        self._state = None  # {slot: [array per parameter leaf]}
        self._born = 0  # the step count when the newest slot of _state began
        # the learning rate and other per-step scalars (given the parameters' dtype when the
        # step compiles: _scalar_inputs)
        self._scalars = {name: np.zeros((), np.float64) for name in optimizer.scalar_names}
        self._last_key = None
        self._last_call = None  # a LastCall: the last call's signature, recognized fast
        self._storm = RecompileWatch()
        self._owned = (None, [], [])  # (ids, addresses, arrays) of the owned inputs: _owned_addresses
        self._on_device = None  # target="cuda": the CudaCompiled holding the current state

    def __reduce__(self):
        """A copy (copy.deepcopy of a trainer holding its step; pickle): the same step of the
        copied loss and optimizer, with its optimizer state (state_dict), compiled anew."""
        return (TrainStep, (self.loss_fn, self.optimizer, self.argnums, self.check_finite,
                            self.clip_norm, self.target, self.grad_scale, self.has_aux),
                self.state_dict())

    def __setstate__(self, state):
        if state["state"]:
            self.load_state_dict(state)
        else:
            self.step_count = int(state["step"])

    # --- state -----------------------------------------------------------------------------
    def state_dict(self):
        """Optimizer state as plain NumPy arrays (copies): step count and every slot, as after
        a whole step (it waits for a step running in another thread)."""
        with self.lock:
            if self._state is None:
                return {"step": self.step_count, "state": {}}
            self._pull_device_state()
            tree = self._param_spec[0]
            state = {"step": self.step_count,
                     "state": {slot: pytree.unflatten(tree, [a.copy() for a in arrays])
                               for slot, arrays in self._state.items()}}
            if self._born:  # (a state begun after step 0: Adam's bias correction counts from it)
                state["start"] = self._born
            return state

    def load_state_dict(self, state):
        """Restore what `state_dict` returned (the step must have been called once, or the
        parameter structure is taken from the state)."""
        with self.lock:
            state = _counts_as_ints(self._from_module(state))
            self._check_state(state)
            self.step_count = int(state["step"])
            # a state with no slots (an SGD without momentum's, into one with): the optimizer's
            # state starts afresh at the next step, as PyTorch's missing buffers do
            self._born = (self.step_count if set(self.optimizer.slots) - set(state["state"])
                          else int(state.get("start", 0)))
            for slot, tree_value in state["state"].items():
                leaves, tree = pytree.flatten(tree_value)
                if self._state is None:
                    self._param_spec = (tree, [(a.shape, a.dtype) for a in leaves])
                    self._spec_origin = "given, by load_state_dict, the state of"
                    self._state = {s: [np.zeros(a.shape, a.dtype) for a in leaves]
                                   for s in self.optimizer.slots}
                for dst, src in zip(self._state[slot], leaves):
                    np.copyto(dst, src)
            # (afresh, not with what this step held; a step not yet called makes its state, of
            # zeros, at its first call)
            for slot in set(self.optimizer.slots) - set(state["state"]):
                for dst in self._state[slot] if self._state is not None else ():
                    dst.fill(0)
            if self._on_device is not None:  # target="cuda": upload the loaded state next step
                self._on_device.forget_owned()

    def _from_module(self, state):
        """A state from a module `gradc compile --train` wrote (each slot a flat list of arrays
        in the parameters' leaf order), or keyed in another order, as this step's (each slot
        shaped like the parameters, in their order)."""
        spec = self._param_spec
        if spec is None or not isinstance(state, dict) or not isinstance(state.get("state"), dict):
            return state
        trees = {}
        for slot, value in state["state"].items():
            flat = (type(value) is list and len(value) == len(spec[1])
                    and all(isinstance(a, np.ndarray) for a in value))
            # (a state keyed like the parameters in another order is theirs: state is per key)
            trees[slot] = (pytree.unflatten(spec[0], list(value)) if flat
                           else pytree.in_order_of(value, spec[0]))
        return {**state, "state": trees}

    def _check_state(self, state):
        """A state_dict of this optimizer, shaped like this step's parameters (when known):
        anything else raises, before any of it is loaded."""
        src = user_source()
        start = state.get("start", 0) if isinstance(state, dict) else None
        if not (isinstance(state, dict) and {"step", "state"} <= set(state)
                <= {"step", "state", "start"} and isinstance(state["state"], dict)
                and isinstance(state["step"], (int, np.integer)) and state["step"] >= 0
                and isinstance(start, (int, np.integer)) and 0 <= start <= state["step"]):
            raise ArgumentError("load_state_dict takes what state_dict() returned: a dict "
                                "{'step': int, 'state': {slot: arrays shaped like the "
                                "parameters}} (and 'start', the step count when that state "
                                f"began, if not 0), got {_brief(state)}", source=src)
        name = type(self.optimizer).__name__
        # (all of them, or none: an optimizer's state starts afresh; a part of it would not,
        # Adam's exp_avg loaded beside an exp_avg_sq of zeros moved by ~lr / eps)
        # (or the slots this step holds: a momentum buffer kept while momentum is off)
        held = set(self._state) if self._state is not None else set(self.optimizer.slots)
        if state["state"] and set(state["state"]) not in (set(self.optimizer.slots), held):
            raise ArgumentError(f"this state holds {sorted(state['state'])}, but {name} keeps "
                                f"{sorted(self.optimizer.slots) or 'no state'}: load the state "
                                "of the same optimizer, whole", source=src)
        spec = self._param_spec
        for slot, tree_value in state["state"].items():
            leaves, tree = pytree.flatten(tree_value)
            shapes = [(tuple(np.shape(a)), np.asarray(a).dtype) for a in leaves]
            # (a static leaf of the parameters, a name beside the arrays, is in their state too,
            # loaded into a step not yet called as well: its parameters then are those)
            arrays = _arrays_only(tree_value) or (spec is None or tree == spec[0]) and bool(
                leaves) and all(isinstance(a, np.ndarray) for a in leaves)
            if any(d.kind != "f" for _, d in shapes) or not arrays:
                raise ArgumentError(f"state[{slot!r}] is {_brief(tree_value)}: a state's "
                                    "slots are float arrays shaped like the parameters",
                                    source=src)
            if spec is not None and (tree != spec[0] or shapes != spec[1]):
                raise ArgumentError(
                    f"state[{slot!r}] is {pytree.describe(tree)} of shapes "
                    f"{[sh for sh, _ in shapes]} ({sorted({d.name for _, d in shapes})}); this "
                    f"step's parameters are {pytree.describe(spec[0])} of shapes "
                    f"{[sh for sh, _ in spec[1]]} ({sorted({d.name for _, d in spec[1]})}): "
                    "load the state of a step of the same parameters", source=src)
            spec = spec or (tree, shapes)

    def _pull_device_state(self):
        """target="cuda": the optimizer state lives on the device between steps; bring it into
        the host arrays (before they are read, or before another signature uploads them)."""
        if self._on_device is not None:
            state = [a for slot in self.optimizer.slots for a in self._state.get(slot, ())]
            self._on_device.pull_owned(state, self._on_device.first_owned)

    def _activate(self, compiled):
        """target="cuda": make `compiled` the signature whose device holds the optimizer state."""
        if self._on_device is not compiled:
            self._pull_device_state()
            compiled.forget_owned()
            self._on_device = compiled

    # --- calling ---------------------------------------------------------------------------
    def _static(self, args):
        """The optimizer's compiled-in hyperparameters for a call with `args` (options given
        as functions are called with its parameters), and the step's own (check_finite,
        clip_norm, grad_scale: one set after the first call compiles again, where it was
        ignored, and check_finite read a flag the program had not computed)."""
        at = self.argnums if self.loss_fn is not None else 0
        params = args[at] if -len(args) <= at < len(args) else None
        return (self.optimizer.static(params), bool(self.check_finite), self.clip_norm,
                self.grad_scale)

    def __call__(self, *args, **kwargs):
        if kwargs:
            raise SignatureError(
                f"a train step takes its arguments by position, step(params, *batch), got "
                f"{', '.join(k + '=' for k in kwargs)}: pass them in the order of "
                f"{self.__name__}'s parameters", source=user_source())
        with self.lock:
            # the same signature, optimizer and state arrays as the last call: no flatten, key,
            # lookup or parameter check (LastCall.match checks shapes, dtypes, writeability)
            last = self._last_call
            fast = (last is not None and last.state is self._state and last.match(args)
                    and last.static == self._static(args))
            if fast:
                compiled = last.compiled
            else:
                try:
                    leaves, treedef = pytree.flatten((args, {}))
                except SignatureError as e:
                    raise SignatureError(str(e), source=user_source()) from None
                # hyperparameters other than the learning rate are compiled into the update
                static = self._static(args)
                key = signature_key(leaves, treedef) + (static,)
                # (refused before compiling: one Generator in two places of the batch)
                generators = random.generator_leaves(treedef, leaves)
                compiled = self.cache.get(key)
                if compiled is None or not all(updatable(x, self.target)
                                               for x in leaves[compiled.param_leaves]):
                    src = user_source()  # the slow path: first call, new signature, or an error
                    call = Call(args, {}, leaves, treedef)
                    before = (self._param_spec, self._state, self._born)
                    try:
                        p_leaves = self._check_params(call, src)
                        check_apart(p_leaves, args, self.argnums, self.loss_fn)
                        if compiled is None:
                            compiled = self._compile(key, call, src)
                    except BaseException:
                        # a first call that failed (a parameter of the wrong shape) fixes no
                        # parameters: the next call is the first
                        self._param_spec, self._state, self._born = before
                        raise
                else:
                    check_apart(leaves[compiled.param_leaves], args, self.argnums, self.loss_fn)
                try:
                    compiled.captures.read()
                except CaptureChanged as e:  # an array read from outside the arguments changed
                    compiled = self._variant(key, compiled) or self._compile(
                        key, Call(args, {}, leaves, treedef), user_source(), why=e,
                        stale=compiled)
                p_leaves = leaves[compiled.param_leaves]
                # written in place: the parameters, and the states of Generators in the batch
                written = [*range(compiled.param_leaves.start, compiled.param_leaves.stop),
                           *generators]
                for slot in self.optimizer.slots:  # e.g. momentum switched on after some steps
                    if slot not in self._state:
                        self._state[slot] = [np.zeros(x.shape, x.dtype) for x in p_leaves]
                        self._born = self.step_count
            step = self.step_count + 1
            # (the optimizer counts its steps from its newest state's first: PyTorch's momentum
            # buffer switched on after some steps starts as a copy of that step's gradient)
            for name, value in self.optimizer.scalars(step - self._born).items():
                self._scalars[name][()] = value
            if fast:
                if compiled.captures.captures:  # (see capture.OUTSIDE_READS)
                    with OUTSIDE_READS:
                        compiled.driver(compiled.handle)  # io: see LastCall
                else:
                    compiled.driver(compiled.handle)
                outs = compiled.outputs
            else:
                if self.target == "cuda":
                    self._activate(compiled)
                # a batch array that is (part of) a parameter is read from a copy
                outs = compiled.run(leaves, self._owned_addresses(), written=written)
                # next time, recognize this call fast (LastCall.match sees `args`, the first
                # child of the flattened `(args, {})`)
                try:
                    last = self._last_call = compiled.last_call(treedef[1][0], leaves, written)
                except CaptureChanged:  # (the step changed an array the loss reads with NumPy
                    # alone, `np.sum(P["W"] ** 2)` of a global P: the next call traces again)
                    last = self._last_call = None
                if last is not None:  # (owned are in io now, where the fast way leaves them)
                    last.state, last.static = self._state, static
            loss = float(outs[0].reshape(()))  # (a loss of shape (1,) too)
            if self.check_finite and not bool(outs[-1]):
                raise NonFiniteError(
                    f"the loss ({loss}) or a gradient is not finite; parameters and optimizer "
                    "state were left unchanged", source=user_source())
            self.step_count = step
            if self.has_aux:  # out_kind: (aux tree, where its leaves start among the outputs)
                tree, first = compiled.out_kind
                aux = outs[first:first + pytree.leaf_count(tree)]
                return loss, pytree.unflatten(tree, [_fresh(a) for a in aux])
            return loss

    def _owned_addresses(self):
        """Addresses of the optimizer state and runtime scalars, in the graph's input order
        (cached: load_state_dict copies into the same arrays)."""
        owned = [a for slot in self.optimizer.slots for a in self._state[slot]] + \
            [self._scalars[n] for n in self.optimizer.scalar_names]
        key = tuple(id(a) for a in owned)
        if self._owned[0] != key:
            self._owned = (key, [a.__array_interface__["data"][0] for a in owned], owned)
        return self._owned[1]

    def _check_params(self, call, src, record=True):
        """The parameter leaves of `call` (a Call): parameters this step can update, and shaped
        like the first call's (whose structure and state it records, unless record=False)."""
        normalize_argnums(self.argnums, len(call.args), src)  # a call without the parameters
        leaves, tree = call.arg_leaves(self.argnums), call.arg_trees[self.argnums]
        names = argument_names(self.loss_fn) if self.loss_fn is not None else ["params"]
        name = names[self.argnums] if self.argnums < len(names) else f"argument {self.argnums}"
        check_no_python_numbers(tree, name, src)
        check_updatable(leaves, src, self.target,
                        names=leaf_names(((call.args[self.argnums],), {}), [name]))
        spec = (tree, [(tuple(x.shape), np.dtype(x.dtype)) for x in leaves])
        if self._param_spec is None:
            if not record:
                return leaves
            self._param_spec = spec
            self._born = self.step_count
            self._state = {slot: [np.zeros(x.shape, x.dtype) for x in leaves]
                           for slot in self.optimizer.slots}
        elif spec != self._param_spec:
            same_keys = tree != self._param_spec[0] and (
                pytree.sorted_keys(tree) == pytree.sorted_keys(self._param_spec[0]))
            if same_keys and self._spec_origin.startswith("given") and record \
                    and self._reorder_loaded_state(tree, spec):
                return leaves
            if same_keys:
                raise SignatureError(
                    f"this train_step's parameters {pytree.describe(tree)} have their keys in "
                    f"another order than when it was {self._spec_origin} them "
                    f"({pytree.describe(self._param_spec[0])}): the loss sees a dict in the order "
                    "given, and the optimizer state is kept in the first one; pass them in that "
                    "order", source=src)

            def arrays(spec):
                return ", ".join(f"{np.dtype(t).name}{list(s)}" for s, t in spec[1])
            raise SignatureError(
                f"this train_step was {self._spec_origin} parameters "
                f"{pytree.describe(self._param_spec[0])} ({arrays(self._param_spec)}); now "
                f"{pytree.describe(tree)} ({arrays(spec)}). Its optimizer state is shaped like "
                "the first; make a new train_step for other parameters (or load a state of "
                "their dtypes)" + (
                    ". A `gradc compile` module's state holds flat lists: load it into a step "
                    "called once, which knows its parameters' structure"
                    if self._spec_origin.startswith("given") else ""), source=src)
        return leaves

    def _reorder_loaded_state(self, tree, spec):
        """Whether the first call's parameters are keyed like the state load_state_dict was
        given before it, in another order, with each key's shapes: the state is per key, so it
        is then kept in the parameters' order."""
        state = {}
        for slot, values in self._state.items():
            keyed = pytree.in_order_of(pytree.unflatten(self._param_spec[0], values), tree)
            state[slot] = pytree.flatten(keyed)[0]
            if [(tuple(a.shape), a.dtype) for a in state[slot]] != spec[1]:
                return False
        self._state, self._param_spec, self._spec_origin = state, spec, "first called with"
        return True

    def _scalar_inputs(self, graph, param_dtypes):
        """Graph inputs for the runtime scalars, in the parameters' dtype when they share one, so
        a float32 model reads float32 scalars (no float64 in its kernels); the host arrays that
        feed them take that dtype too (writing a float64 into them rounds to nearest)."""
        dtypes = set(param_dtypes)
        dtype = dtypes.pop() if len(dtypes) == 1 else np.dtype(np.float64)
        for name in self.optimizer.scalar_names:  # (momentum switched on: a new scalar)
            if name not in self._scalars or self._scalars[name].dtype != dtype:
                self._scalars[name] = np.zeros((), dtype)
        return {name: graph.add_input((), dtype, name=name) for name in self.optimizer.scalar_names}

    def lower(self, *args, load=False, source=None, capture=True):
        """Trace and compile for these arguments without caching the result, running nothing
        and changing no state; with load=False nothing is Numba-compiled and the Compiled has no
        driver (what `gradc compile` writes out, with capture=False: arrays read from outside
        the arguments compiled in; and what `gradc.explain` reports). `source` names the caller
        in the generated code (default: the calling line)."""
        src = source or user_source()
        call = Call(args, {})
        self._check_params(call, src, record=False)
        key = call.key() + (self._static(args),)
        return self._compile(key, call, src, load=load, cache=False, capture=capture)

    def _joint_graph(self, call, src, capture=False):
        """The loss and the gradients of the parameters, as one graph (or, for an update-only
        step, the gradients as inputs). Returns (graph, params, loss, grads, first param leaf,
        (aux tree, aux values) or None). With capture=True, arrays read from outside the
        arguments are inputs after theirs (graph.captures: gradc/capture.py)."""
        if self.loss_fn is None:
            return self._gradients_given(call, src) + (None,)
        graph, out_tree, outs = trace(self.loss_fn, call.args, capture=capture)
        differentiable_leaves(call, (self.argnums,), src)
        out_tree, graph.outputs = number_loss(out_tree, outs, self.has_aux, graph)
        check_loss_output(out_tree, graph.outputs, self.has_aux, self.loss_fn, src)
        graph = run_passes(graph, BEFORE_AUTODIFF, consume=True)
        positions = call.ranges[self.argnums]  # the parameters' graph inputs
        params = graph.inputs[positions.start:positions.stop]
        loss = graph.outputs[0]
        aux = (out_tree[1][1], graph.outputs[1:]) if self.has_aux else None
        grads = autodiff.vjp(graph, as_scalar(loss), params)
        return graph, params, loss, grads, positions.start, aux

    def _gradients_given(self, call, src):
        if len(call.args) != 2:
            raise SignatureError("an update-only step takes (params, grads)", source=src)
        p_leaves, p_tree = call.arg_leaves(0), call.arg_trees[0]
        g_leaves, g_tree = call.arg_leaves(1), call.arg_trees[1]
        if g_tree != p_tree or [np.shape(g) for g in g_leaves] != [p.shape for p in p_leaves]:
            raise SignatureError(f"gradients {pytree.describe(g_tree)} do not match parameters "
                                 f"{pytree.describe(p_tree)} in structure or shapes", source=src)
        graph = Graph()
        params = [graph.add_input(p.shape, p.dtype, name=f"params[{i}]") for i, p in enumerate(p_leaves)]
        grads = [fn.astype(graph.add_input(p.shape, np.asarray(g).dtype, name=f"grads[{i}]"), p.dtype)
                 for i, (p, g) in enumerate(zip(p_leaves, g_leaves))]
        if self.grad_scale != 1:
            grads = [g * self.grad_scale for g in grads]
        return graph, params, fn.const(graph, 0.0, np.float32), grads, 0

    def _variant(self, key, stale):
        """An earlier compile of signature `key` whose outside values are those of now (it
        replaces `stale`), or None: a flag a caller sets on alternate steps traced once each
        (function.py's, which train_step lacked: 3.5 ms a step, fuzz46f)."""
        match = _take_variant(self.variants.get(key, []), stale)
        if match is not None:
            self.cache[key] = match
        return match

    def _compile(self, key, call, src, load=True, cache=True, capture=True, why=None,
                 stale=None):
        """Trace, differentiate, add the update and compile the signature `key` of `call` (a
        Call); cache it unless cache=False. `src`: the calling line; `why`: what changed, if
        not the key (an array read from outside the arguments), in what `stale` (the Compiled
        before) read."""
        names = argument_names(self.loss_fn) if self.loss_fn is not None else ["params", "grads"]
        check_input_dtypes(key, lambda: leaf_names((call.args, {}), names), src)
        check_device_leaves(call.leaves, self.target, src)
        try:  # (step.clip_norm = ... set since: checked as the constructor checks it)
            _check_options(self.optimizer, self.clip_norm)
        except ArgumentError as e:
            raise ArgumentError(str(e), source=src) from None
        t0 = time.perf_counter()
        changed = changed_contents(stale)
        with gc_paused(), frozen.recording_lines(bool(changed)), \
                numpy_read_before(stale, changed):
            graph, params, loss, grads, before, aux = self._joint_graph(call, src, capture)
        n_params = len(params)
        with graph.at_source(f"optimizer {type(self.optimizer).__name__}"):
            state_in = {slot: [graph.add_input(p.shape, p.dtype, name=f"{slot}[{i}]")
                               for i, p in enumerate(params)] for slot in self.optimizer.slots}
            scalars = self._scalar_inputs(graph, [p.dtype for p in params])
            if self.clip_norm is not None:
                grads = global_norm_clip(grads, self.clip_norm)
            ok = all_finite([loss] + grads) if self.check_finite else None
            new_params, new_state = [], {slot: [] for slot in self.optimizer.slots}
            # per-parameter options (weight_decay, mask, lr_mult), or None: the same for all
            leaf_options = self.optimizer.leaf_options(
                call.args[self.argnums if self.loss_fn is not None else 0])
            for i, (p, g) in enumerate(zip(params, grads)):
                s = {k: fn.astype(v, p.dtype) for k, v in scalars.items()}
                state = {k: v[i] for k, v in state_in.items()}
                if leaf_options is None:
                    new_p, st = self.optimizer.update(p, g, state, s)
                else:
                    new_p, st = self.optimizer.update(p, g, state, s, leaf_options[i])
                if ok is not None:
                    new_p = fn.where(ok, new_p, p)
                    st = {k: fn.where(ok, v, state_in[k][i]) for k, v in st.items()}
                new_params.append(new_p)
                for slot in self.optimizer.slots:
                    new_state[slot].append(st[slot])
        outputs = [loss] + new_params + [v for slot in self.optimizer.slots for v in new_state[slot]]
        out_kind = None
        if aux is not None:  # computed by the same forward: returned after the state
            out_kind = (aux[0], len(outputs))
            outputs += aux[1]
        aliases = {1 + i: _index(graph.inputs, p) for i, p in enumerate(params)}
        k = 1 + len(params)
        for slot in self.optimizer.slots:
            for v_in in state_in[slot]:
                aliases[k] = _index(graph.inputs, v_in)
                k += 1
        for advanced, i in random.counter_updates(graph, call.treedef):
            aliases[len(outputs)] = i  # a gradc.random Generator: new numbers every step
            if ok is not None:  # (a step refused as not finite draws the same numbers again)
                advanced = fn.where(ok, advanced, graph.inputs[i])
            outputs.append(advanced)
        if ok is not None:
            outputs.append(ok)
        graph.outputs = outputs
        graph.aliases = aliases
        title = f"train_step of {self.__name__} with {self.optimizer!r} from {src}"
        t_trace = time.perf_counter() - t0
        # where the parameters sit among the leaves; which inputs are gradc's: the optimizer
        # state (kept on the device by target="cuda"), then the runtime scalars
        first_owned = len(graph.inputs) - len(scalars) - n_params * len(self.optimizer.slots)
        compiled = compile_graph(graph, title, out_kind, load, self.target,
                                 param_leaves=slice(before, before + n_params),
                                 first_owned=first_owned, runtime_scalars=len(scalars))
        if random.draws_from_generators(call):
            compiled.lock = random.DRAWS
        compiled.captures = Captures(graph.captures, graph.guards, compiled.input_types,
                                     graph.numpy_read)
        compiled.just_traced = threading.get_ident()
        unchanged_by(compiled.captures, stale, compiled, graph.names_run)
        if not cache:
            return compiled
        log_compile(f"train_step({self.__name__})", src,
                    why or what_changed(self._last_key, key, leaf_names((call.args, {}), names)),
                    compiled.layout.kernels, {"trace": t_trace, **compiled.lowered.timings})
        if why is not None:
            self._storm.note_outside(why, self.__name__, src)
            if key in self.cache:  # (kept: its values may come back)
                variants = self.variants.setdefault(key, [])
                variants.append(self.cache[key])
                del variants[:-MAX_VARIANTS]
        else:
            self._storm.note(self._last_key, key, self.__name__, names, src,
                             "filter the warning: warnings.simplefilter('ignore', "
                             "gradc.RecompileWarning)")
        keep_recent(self.cache, key, compiled, self.variants)
        self._last_key = key
        return compiled


def _fresh(view):
    """An aux output as the caller keeps it: a copy (0-d: a NumPy scalar)."""
    return view.dtype.type(view[()]) if view.shape == () else view.copy()


def _index(values, v):
    return next(i for i, x in enumerate(values) if x is v)


def train_step(loss_fn=None, optimizer=None, *, argnums=0, check_finite=False, clip_norm=None,
               target="cpu", distributed=False, comm=None, timeout=None, has_aux=False):
    """Compile `loss_fn`'s forward, backward and `optimizer`'s update into one call:
    `loss = step(params, *batch)` updates `params` (argument `argnums`) in place and returns
    the loss as a float. distributed=True trains data-parallel over MPI (gradc.distributed:
    one allreduce of the gradients per step; `comm` defaults to COMM_WORLD, `timeout` in
    seconds aborts a rank left waiting). has_aux=True: `loss_fn` returns (loss, aux), aux a
    pytree of arrays computed in the same program, and a step returns (loss, aux) with aux
    fresh copies."""
    if optimizer is None:
        raise TypeError("train_step needs an optimizer, e.g. gradc.optim.Adam(lr=1e-3)")
    if distributed:  # data parallel over MPI; mpi4py is imported only here
        from .distributed import train_step as data_parallel
        make = lambda f: data_parallel(f, optimizer, argnums=argnums, comm=comm,  # noqa: E731
                                       check_finite=check_finite, clip_norm=clip_norm,
                                       target=target, timeout=timeout, has_aux=has_aux)
    else:
        make = lambda f: TrainStep(f, optimizer, argnums, check_finite, clip_norm, target,  # noqa: E731
                                   has_aux=has_aux)
    return make if loss_fn is None else make(loss_fn)

