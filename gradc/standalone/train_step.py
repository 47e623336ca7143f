"""The callable of a standalone module of a train step: `TrainStep`, a Compiled
(gradc/standalone/host.py or device.py) that owns the optimizer state.

Copied verbatim (from the first definition on) into every train-step module `gradc compile
--train` writes, after gradc/standalone/calls.py, the Compiled and the tables it reads: ARGNUMS,
SLOTS, SCALAR_NAMES, CHECK_FINITE, HYPERPARAMETERS (the optimizer's, by name) and the function
`scalars(hyperparameters, step)` (the optimizer's method, copied). NumPy only.
"""
import numpy as np

from .calls import _flatten, _leaves, _positional, first_overlap, leaf_count
from .host import Compiled


class Hyperparameters:
    """The optimizer's hyperparameters. Only `lr` may change between steps: the others are
    compiled into the kernels (changing them here changes nothing but the runtime scalars)."""

    def __init__(self):
        self.__dict__.update(HYPERPARAMETERS)

    def scalars(self, step):
        """The runtime scalars of update number `step` (the module's `scalars`: the optimizer's)."""
        return scalars(self, step)


class TrainStep(Compiled):
    """`loss = step(*args)`: forward, backward and the optimizer update in one call. Argument
    ARGNUMS (the parameters) is updated in place: each leaf must be a writeable, C-contiguous
    array of its compiled shape and dtype. The step owns the optimizer state (zeros at first)."""

    def __init__(self, lr=None):
        super().__init__()
        self.hyper = Hyperparameters()
        if lr is not None:
            self.lr = lr  # (checked: -1 or NaN trained uphill)
        self.step_count = 0
        self.start = 0  # the step count when the optimizer's state began (its steps count from it)
        n = _leaves_before(ARGNUMS)
        params = INPUTS[n:n + leaf_count(ARGS_TREE[1][ARGNUMS])]
        self.state = {slot: [np.zeros(shape, dtype) for _, shape, dtype in params] for slot in SLOTS}
        first = len(INPUTS) - len(SCALAR_NAMES)  # the last inputs, in their compiled dtype
        self.scalars = {name: np.zeros((), dtype)
                        for name, (_, _, dtype) in zip(SCALAR_NAMES, INPUTS[first:])}

    @property
    def lr(self):
        """The learning rate (may change between steps, e.g. for a schedule)."""
        return self.hyper.lr

    @lr.setter
    def lr(self, value):
        if (isinstance(value, (bool, np.bool_))  # (as gradc.optim's: a number, not "0.1" or
                or not isinstance(value, (int, float, np.integer, np.floating))):  # an array)
            raise TypeError(f"lr={value!r}: give a number (a {type(value).__name__} is not one)")
        if not 0.0 <= float(value) < float("inf"):  # (-1 did gradient ascent)
            raise ValueError(f"lr={value!r}: the learning rate must be a number >= 0")
        self.hyper.lr = float(value)

    def __call__(self, *args, **kwargs):
        args = _positional(NAME, args, kwargs)
        arrays = _leaves(NAME, args)
        n = _leaves_before(ARGNUMS)
        params = _params(args)
        for x, (_, given) in zip(arrays[n:], params):
            if x is not given or not x.flags.writeable:
                raise TypeError(f"{ARG_NAMES[ARGNUMS]}: a TrainStep updates the parameters in "
                                "place: each must be a writeable, C-contiguous NumPy array")
        pair = first_overlap([x for _, x in params])
        if pair is not None:
            a, b = (params[i][0] for i in pair)
            raise ValueError(f"parameters {a} and {b} share memory: a TrainStep updates each "
                             "parameter in place with its own gradient and optimizer state, so "
                             "one update would be lost; pass the array once (and use it twice "
                             "in the loss) to tie them, or pass a copy")
        with self.lock:
            step = self.step_count + 1
            for name, value in self.hyper.scalars(step - self.start).items():
                self.scalars[name][()] = value
            self._run(arrays, [a for slot in SLOTS for a in self.state[slot]]
                      + [self.scalars[name] for name in SCALAR_NAMES])
            loss = float(self.outputs[0].reshape(()))  # (a loss of shape (1,) too)
            if CHECK_FINITE and not bool(self.outputs[-1]):
                raise FloatingPointError(f"the loss ({loss}) or a gradient is not finite; "
                                         "parameters and optimizer state were left unchanged")
            self.step_count = step
            return loss

    def state_dict(self):
        """The optimizer state as plain NumPy arrays (copies): the step count and every slot,
        as after a whole step (it waits for a step running in another thread)."""
        with self.lock:
            self._read_owned()
            state = {"step": self.step_count,
                     "state": {slot: [a.copy() for a in arrays]
                               for slot, arrays in self.state.items()}}
            if self.start:
                state["start"] = self.start
            return state

    def load_state_dict(self, state):
        """Restore what `state_dict` returned, or gradc.train_step's (each slot shaped like the
        parameters; an empty one starts the optimizer's state afresh): checked whole before any
        of it is loaded."""
        step = state.get("step") if isinstance(state, dict) else None
        start = state.get("start", 0) if isinstance(state, dict) else None
        if not (isinstance(state, dict) and isinstance(state.get("state"), dict)
                and set(state) <= {"step", "state", "start"}
                and isinstance(step, (int, np.integer)) and not isinstance(step, bool)
                and step >= 0 and isinstance(start, (int, np.integer))
                and not isinstance(start, bool) and 0 <= start <= step):
            raise TypeError("load_state_dict takes what state_dict() returned: "
                            "{'step': an int >= 0, 'state': {slot: arrays}} (and 'start', "
                            "the step count when that state began, if not 0)")
        if not state["state"]:  # (empty: the optimizer's state starts afresh at `step`)
            state = {"step": step, "start": step,
                     "state": {slot: [np.zeros_like(a) for a in arrays]
                               for slot, arrays in self.state.items()}}
            start = step
        if set(state["state"]) != set(self.state):
            raise ValueError(f"the state holds {sorted(state['state'])}; this step's optimizer "
                             f"keeps {sorted(SLOTS)}: load the state of the same optimizer, "
                             "whole")
        loaded = {}
        for slot, value in state["state"].items():
            mine = self.state[slot]
            if (type(value) is list and len(value) == len(mine)
                    and all(isinstance(a, np.ndarray) for a in value)):
                arrays = value  # (this module's own form)
            else:  # (gradc.train_step's: a pytree shaped like the parameters)
                pairs, tree = [], ARGS_TREE[1][ARGNUMS]
                _flatten(tree, _in_order(tree, value), f"state[{slot!r}]", pairs)
                arrays = [a for _, a in pairs]
            if len(arrays) != len(mine):
                raise ValueError(f"state[{slot!r}] holds {len(arrays)} arrays; the parameters "
                                 f"are {len(mine)}")
            for i, (dst, src) in enumerate(zip(mine, arrays)):
                if np.shape(src) != dst.shape or np.asarray(src).dtype != dst.dtype:
                    raise ValueError(f"state[{slot!r}]: its array {i} is {np.asarray(src).dtype}"
                                     f"{list(np.shape(src))}, the parameter's "
                                     f"{dst.dtype}{list(dst.shape)}")
            loaded[slot] = arrays
        with self.lock:
            self.step_count, self.start = int(state["step"]), int(start)
            for slot, arrays in loaded.items():
                for dst, src in zip(self.state[slot], arrays):
                    np.copyto(dst, src)
            self._owned_changed()


def _leaves_before(argnum):
    """How many array leaves the arguments before `argnum` have."""
    return sum(leaf_count(t) for t in ARGS_TREE[1][:argnum])


def _params(args):
    """The parameters' (path, array) pairs."""
    leaves = []
    _flatten(ARGS_TREE[1][ARGNUMS], args[ARGNUMS], ARG_NAMES[ARGNUMS], leaves)
    return leaves


def _in_order(tree, x):
    """A state `x` with each dict's keys in the parameters' order (`tree`) where they are the
    same keys, of the same types: a state is per key, and a file may give a dict back in
    another order."""
    if tree[0] == "dict" and isinstance(x, dict) and (
            {(type(k), k) for k in x} == {(type(k), k) for k in tree[1]}):
        return {k: _in_order(t, x[k]) for k, t in zip(tree[1], tree[2])}
    if tree[0] in ("list", "tuple") and isinstance(x, (list, tuple)) and len(x) == len(tree[1]):
        return type(x)(_in_order(t, v) for t, v in zip(tree[1], x))
    return x
