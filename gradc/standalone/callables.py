"""The callables of a standalone module of a function: `Jit`, `Grad` and `ValueAndGrad`, each
a Compiled (gradc/standalone/host.py or device.py) called like the Python function.

Copied verbatim (from the first definition on) into every module `gradc compile` writes, after
gradc/standalone/calls.py, the Compiled and the tables they read: OUT_TREE (a jit's results),
GRAD_TREES, GRAD_COUNTS and MANY_ARGNUMS (a gradient's). NumPy only.
"""
from .calls import _leaves, _positional, _result, _unflatten
from .host import Compiled


class Jit(Compiled):
    """Call it like the Python function: returns what it returns (fresh arrays)."""

    def __call__(self, *args, **kwargs):
        args = _positional(NAME, args, kwargs)
        arrays = _leaves(NAME, args)
        with self.lock:
            self._run(arrays)
            return _unflatten(OUT_TREE, iter([_result(o, fresh=True) for o in self.outputs]))


class Grad(Compiled):
    """Call it like the Python function; see the module docstring for what it returns."""

    value = False  # (ValueAndGrad: True)

    def __init__(self, copy=False):
        super().__init__()
        self.copy = copy

    def __call__(self, *args, **kwargs):
        args = _positional(NAME, args, kwargs)
        arrays = _leaves(NAME, args)
        with self.lock:
            self._run(arrays)
            outs = self.outputs  # (each call new views of them: a caller's `g.shape = (-1,)`
            value = _result(outs[0], fresh=True)  # or read-only flag stays with its view)
            grads, cursor = [], 1
            for tree, n in zip(GRAD_TREES, GRAD_COUNTS):  # (0-d gradients too are arrays)
                grads.append(_unflatten(tree, iter([o.copy() if self.copy else o.view()
                                                    for o in outs[cursor:cursor + n]])))
                cursor += n
            grads = tuple(grads) if MANY_ARGNUMS else grads[0]
            return (value, grads) if self.value else grads


class ValueAndGrad(Grad):
    """Call it like the Python function: returns (value, grads); see the module docstring."""

    value = True
