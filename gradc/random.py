"""Random numbers in compiled functions: a Generator like NumPy's, passed as an argument.

    rng = gradc.random.default_rng(0)                   # np.random.default_rng(0) -> this

    @gradc.value_and_grad
    def loss(params, x, rng):                           # the generator is an argument
        eps = rng.standard_normal(params["mu"].shape, dtype=np.float32)
        z = params["mu"] + np.exp(params["log_sigma"]) * eps
        ...

    value, grads = loss(params, x, rng)                 # every call draws new numbers

A Generator's state is a small array [seed, counter]. A compiled function that takes Generators
reads their states and, in the same compiled call, advances each counter by one (written in place,
like a train step's parameters), so every call draws new numbers. The numbers depend only on the
seed, the counter and the draw's place in the function (each draw in one trace has its own
stream), so they are reproducible across processes and the same on the CPU and CUDA targets.
The bits are a counter-based hash of (seed, counter, stream, element): the op `random_uniform`
(gradc/ops/random.py). Normals are Box-Muller on two uniforms, built from log, sqrt and cos in
the graph; `loc + scale * z` differentiates through loc and scale as usual.

Outside a compiled function a Generator draws with NumPy (the op's reference), one counter step
per draw: a function with one draw gives, run eagerly, the numbers its compiled version gives on
the same call. Inside a traced function, a Generator that is not one of its arguments would be
drawn from once, at trace time: that is an error (gradc.errors.FrozenRandomError).
"""
from __future__ import annotations

import functools
import numbers
import operator
import secrets
import threading
import weakref

import numpy as np

from . import frozen, pytree
from .errors import (ArgumentError, FrozenRandomError, ShapeError, SignatureError,
                     UnsupportedOpError)
from .ir import Value
from .ops import fn
from .ops.random import FLOATS, uniform_ref
from .trace import traced, user_source

__all__ = ["Generator", "default_rng"]


def _graph_of_generator(rng, *args, **kwargs):
    return rng.state.graph if isinstance(rng.state, Value) else None


# a Generator method is a traced surface call: its nodes carry the user's line, errors name it
_surface = functools.partial(traced, graph_of=_graph_of_generator)

# graph -> {state value id: draws so far}: each draw in one trace gets its own stream
_STREAMS = weakref.WeakKeyDictionary()


def _next_stream(state):
    counts = _STREAMS.setdefault(state.graph, {})
    stream = counts.get(state.id, 0)
    counts[state.id] = stream + 1
    return stream


def _seed_value(seed):
    if seed is None:
        return secrets.randbits(63)
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (numbers.Integral, np.integer)) \
            or seed < 0:
        raise UnsupportedOpError(f"gradc.random seeds are non-negative integers (or None), not "
                                 f"{seed!r}", source=user_source())
    return int(seed) % 2 ** 63  # (kept as int64 >= 0: seeds equal modulo 2**63 are one stream)


def _shape(size):
    if size is None:
        return ()
    if isinstance(size, (numbers.Integral, np.integer)) and not isinstance(size, bool) or (
            isinstance(size, np.ndarray) and size.ndim == 0):  # (np.array(3): NumPy's size 3)
        size = (size,)
    try:  # (NumPy's: size=(2.5, 3) and size=True are TypeErrors, not shapes (2, 3) and (1,))
        shape = tuple(operator.index(d) for d in size)
        if any(isinstance(d, (bool, np.bool_)) for d in size):
            raise TypeError
    except TypeError:
        raise ArgumentError(f"size={size!r}: a size is an int or a tuple of ints (NumPy's "
                            "TypeError)", source=user_source()) from None
    if any(d < 0 for d in shape):
        raise ShapeError(f"negative dimensions in size={size!r}", source=user_source())
    return shape


def _listed(param):
    """A draw's parameter given as a list or tuple (NumPy's: uniform([0, 10], [1, 20])) as an
    array (high - low of two lists was a bare TypeError; fuzz41d)."""
    return np.asarray(param) if type(param) in (list, tuple) else param  # (while traced,
    # NumPy's constructors make a list holding traced values one: gradc/literals.py)


def _float_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype not in FLOATS:
        raise UnsupportedOpError(f"gradc.random draws float32 or float64 numbers, not {dtype.name}",
                                 source=user_source())
    return dtype


def _no_out(out):
    if out is not None:
        raise UnsupportedOpError("gradc.random draws return new arrays: out= is not supported",
                                 source=user_source())


class _MissingMethod(UnsupportedOpError, AttributeError):
    """A numpy.random.Generator method gradc's Generator lacks (an AttributeError too: hasattr
    answers False)."""


_INSTEAD = {  # numpy.random.Generator's methods gradc's lacks: how to write each with its own
    "binomial": "binomial(1, p, shape) is (rng.random(shape) < p) (a dropout mask); a count of "
                "n trials, (rng.random((n,) + shape) < p).sum(0)",
    "integers": "np.floor(rng.uniform(low, high, shape)).astype(np.int64)",
    "exponential": "-np.log1p(-rng.random(shape)) * scale",
    "choice": "draw the indices outside the compiled function and pass them as an argument",
    "permutation": "draw the permutation outside the compiled function and pass it as an "
                   "argument",
    "shuffle": "shuffle outside the compiled function and pass the result as an argument",
    "laplace": "loc - scale * np.sign(u) * np.log1p(-2 * np.abs(u)) with u = "
               "rng.uniform(-0.5, 0.5, shape)",
    "logistic": "loc + scale * np.log(u / (1 - u)) with u = rng.random(shape)",
    "gumbel": "loc - scale * np.log(-np.log(rng.random(shape)))",
}


class Generator:
    """A random generator for compiled functions, with (part of) numpy.random.Generator's API.

    Pass it as an argument of the compiled function (anywhere in the argument pytrees); every
    call of the compiled function advances it, so each call draws new numbers. `state` is the
    int64 array [seed, counter]: copy it to save the generator, assign into it to restore.
    Methods take `dtype=` (float32 or float64; NumPy's `uniform` and `normal` have no dtype and
    give float64, which is also the default here). RandomState's `randn(d0, d1, ...)` and
    `rand(d0, d1, ...)` are there too, for code written against np.random.RandomState.
    """

    __slots__ = ("state",)

    def __init__(self, seed=None):
        self.state = np.array([_seed_value(seed), 0], np.int64)

    def __getattr__(self, name):
        """numpy.random.Generator's other methods: what to write instead (a bare
        AttributeError told nnfs's dropout, rng.binomial(1, keep, shape), nothing; fuzz41e)."""
        if name.startswith("_") or not hasattr(np.random.Generator, name):
            raise AttributeError(f"'Generator' object has no attribute {name!r}")
        hint = _INSTEAD.get(name, "draw with random, uniform or normal and transform the "
                                  "numbers, or draw outside the compiled function and pass them")
        raise _MissingMethod(f"gradc.random.Generator has no {name}() (it has random, "
                             f"uniform, standard_normal, normal, rand, randn): {hint}",
                             source=user_source())

    @classmethod
    def from_state(cls, state):
        """A Generator over `state`, an int64 array [seed, counter], shared (not copied): draws
        advance it in place (a view, a column of a table of states, too; a read-only one is
        refused by the draw, as NumPy refuses, or by the compiled call). Inside
        a traced function, `state` may be a traced int64[2] argument: its draws then depend on
        that argument, which the compiled function does not advance (you choose the counter;
        the same state gives the same numbers)."""
        if isinstance(state, Value):
            if state.shape != (2,) or state.dtype != np.int64:
                raise ShapeError(f"a generator state is an int64 array [seed, counter], not "
                                 f"{state.type_str}", source=user_source())
        elif not (isinstance(state, np.ndarray) and state.shape == (2,) and state.dtype == np.int64):
            raise ShapeError("a generator state is an int64 array [seed, counter] (shape (2,))",
                             source=user_source())
        rng = object.__new__(cls)
        rng.state = state
        return rng

    _from_children = from_state  # how gradc.pytree rebuilds one around a traced state

    def __repr__(self):
        if isinstance(self.state, Value):
            return f"gradc.random.Generator(<traced {self.state}>)"
        return f"gradc.random.Generator(seed={int(self.state[0])}, counter={int(self.state[1])})"

    # --- NumPy's Generator methods -----------------------------------------------------------
    @_surface
    def random(self, size=None, dtype=np.float64, out=None):
        """Floats uniform in [0, 1) (53 random bits in float64, 24 in float32)."""
        _no_out(out)
        return self._uniform(_shape(size), _float_dtype(dtype))

    @_surface
    def uniform(self, low=0.0, high=1.0, size=None, dtype=np.float64):
        """Floats uniform in [low, high): low + (high - low) * random(). `low` and `high` may be
        numbers, arrays or traced values (their gradients are the usual ones)."""
        dtype = _float_dtype(dtype)
        low, high = _listed(low), _listed(high)
        if not isinstance(low, Value) and not isinstance(high, Value):
            with np.errstate(all="ignore"):
                span = np.asarray(high, dtype) - np.asarray(low, dtype)
            if np.any(span < 0):
                raise ArgumentError("Generator.uniform: high < low (NumPy's refusal: high - low "
                                    "< 0)", source=user_source())
            if not np.all(np.isfinite(span)):  # (every draw was high, or NaN)
                raise ArgumentError(f"Generator.uniform: high - low is not a finite "
                                    f"{dtype.name} (NumPy's OverflowError: range exceeds "
                                    "valid bounds)",
                                    source=user_source())
        low, high = self._traced_params(low, high)
        shape = self._params_shape(size, low, high)
        return _under(self._affine(self._uniform(shape, dtype), low, high - low, dtype), low,
                      high, dtype)

    @_surface
    def standard_normal(self, size=None, dtype=np.float64, out=None):
        """Standard normal floats (Box-Muller: |z| stops at about 5.8 in float32, 8.6 in float64)."""
        _no_out(out)
        return self._normal(_shape(size), _float_dtype(dtype))

    @_surface
    def normal(self, loc=0.0, scale=1.0, size=None, dtype=np.float64):
        """Normal floats: loc + scale * standard_normal(); `loc` and `scale` may be numbers,
        arrays or traced values (the reparameterization: gradients flow into them). A scale < 0
        is refused as NumPy refuses it, or, traced, gives NaN there."""
        dtype = _float_dtype(dtype)
        loc, scale = _listed(loc), _listed(scale)
        if not isinstance(scale, Value) and np.any(np.asarray(scale) < 0):
            raise ArgumentError("Generator.normal: scale < 0 (NumPy's refusal)",
                                source=user_source())
        loc, scale = self._traced_params(loc, scale)
        if isinstance(scale, Value):  # (unknown when traced: NaN where < 0, not a flipped
            scale = np.where(scale < 0, np.nan, scale)  # draw; check_finite=True refuses it)
        shape = self._params_shape(size, loc, scale)
        return self._affine(self._normal(shape, dtype), loc, scale, dtype)

    # --- np.random.RandomState's names, for code written against it -------------------------
    @_surface
    def randn(self, *shape):
        """RandomState.randn(d0, d1, ...): standard_normal((d0, d1, ...)) (autograd's examples
        draw with `rs.randn(*shape)`)."""
        return self.standard_normal(shape or None)

    @_surface
    def rand(self, *shape):
        """RandomState.rand(d0, d1, ...): random((d0, d1, ...))."""
        return self.random(shape or None)

    # --- building blocks ---------------------------------------------------------------------
    def _uniform(self, shape, dtype):
        """Uniform [0, 1) floats: a `random_uniform` node when traced; else NumPy, advancing."""
        state = self.state
        if isinstance(state, Value):
            return state.graph.apply("random_uniform", (state,), shape=shape, dtype=dtype,
                                     stream=_next_stream(state))
        if frozen.active() is not None:
            raise FrozenRandomError(
                "a gradc.random.Generator that is not an argument of the traced function would "
                "draw its numbers once, when the function is traced, and every call would reuse "
                "them: pass the generator to the compiled function as an argument",
                source=user_source())
        with DRAWS:  # (a counter read by two threads at once gave both the same numbers)
            u = uniform_ref(state, shape, dtype, 0)
            state[1] += 1
        return u if u.ndim else u[()]  # (size=None: a scalar, as NumPy gives)

    def _normal(self, shape, dtype):
        u = self._uniform((2,) + shape, dtype)  # one draw: two uniforms per number
        radius = np.sqrt(-2.0 * np.log(1.0 - u[0]))  # 1 - u in (0, 1]: the log is finite
        return radius * np.cos((2 * np.pi) * u[1])

    def _traced_params(self, *params):
        """A traced draw's NumPy array parameters as values of its graph, checked as traced
        ones are (a negative scale: NaN) and read on every call where they come from outside
        the arguments: `high - low` of a model's bounds was computed with NumPy, compiled in
        (draws in [5, 6) for new bounds [5, 10); fuzz41c)."""
        if not isinstance(self.state, Value):
            return params
        return tuple(fn.as_value(p, graph=self.state.graph) if isinstance(p, np.ndarray) else p
                     for p in params)

    @staticmethod
    def _params_shape(size, *params):
        """The draw's shape: `size`, which the parameters must broadcast to, or theirs."""
        shapes = [p.shape if isinstance(p, Value) else np.shape(p) for p in params]
        if size is None:
            return fn.broadcast_shapes(*shapes)
        shape = _shape(size)
        if fn.broadcast_shapes(shape, *shapes) != shape:
            raise ShapeError(f"parameters of shapes {shapes} do not broadcast to size {shape}",
                             source=user_source())
        return shape

    @staticmethod
    def _affine(z, shift, scale, dtype):
        """shift + scale * z in `dtype` (the NumPy operators on values and arrays alike)."""
        if not (isinstance(scale, numbers.Number) and scale == 1):
            z = scale * z
        if not (isinstance(shift, numbers.Number) and shift == 0):
            z = shift + z
        if isinstance(z, Value):
            return fn.astype(z, dtype) if z.dtype != dtype else z
        return np.asarray(z, dtype)[()]


def _under(z, low, high, dtype):
    """`z` where it is below `high` (in `dtype`), else a float just under it (and not under
    `low`): low + (high - low) * u rounds up to high for some u near 1 (in float32, uniform(1000,
    1001) gave 1001 once in 30,000 draws), and uniform's interval is [low, high)."""
    info = np.finfo(dtype)
    low, high = (fn.astype(v, dtype) if isinstance(v, Value) and v.dtype != dtype else
                 v if isinstance(v, Value) else np.asarray(v, dtype) for v in (low, high))
    below = np.maximum(low, high - np.abs(high) * dtype.type(4 * info.eps) - dtype.type(info.tiny))
    z = np.where((z < high) | (high <= low), z, below)
    if isinstance(z, Value):  # (bounds known only when it runs may come in reversed: NaN, as a
        z = np.where(high < low, np.nan, z)  # negative scale gives; NumPy refuses them)
    return z if isinstance(z, Value) else np.asarray(z, dtype)[()]


# Draws that read and advance Generators' counters, one at a time: eager ones, and the calls
# of compiled programs that take a Generator (their `lock`: function.py, train.py). Two threads
# drawing from one generator, eagerly or through two compiled functions (each with a lock of
# its own), read one counter value, the same numbers (8 threads: 1195 distinct draws of 1200;
# NumPy's Generator serializes its draws with a lock too).
DRAWS = threading.RLock()


def draws_from_generators(call):
    """Whether a call (signature.Call) passes Generators: its compiled program then runs under
    DRAWS, not a lock of its own."""
    return bool(generator_leaves(call.treedef, call.leaves))


pytree.register_node(Generator, ("state",))


def default_rng(seed=None):
    """A new Generator (like np.random.default_rng); seed=None takes a fresh random seed."""
    return Generator(seed)


def generator_leaves(treedef, leaves):
    """The positions among `leaves` (flattened from `treedef`) of the Generators' states, which
    a compiled call advances in place. Two that share memory (one Generator passed twice, or
    in two places of a pytree) are refused: each place would draw from the same counter, the
    same numbers, and advance it once (SignatureError naming both)."""
    found = pytree.leaves_inside(treedef, Generator)
    if len(found) > 1:  # (shares_memory, not byte ranges: a table's columns interleave apart)
        pair = next(((i, j) for k, i in enumerate(found) for j in found[k + 1:]
                     if isinstance(leaves[i], np.ndarray) and isinstance(leaves[j], np.ndarray)
                     and np.shares_memory(leaves[i], leaves[j])), None)
        if pair is not None:
            raise SignatureError(
                f"one gradc.random.Generator's state is passed in two places (leaves "
                f"{pair[0]} and {pair[1]} of the arguments): both would draw the "
                "same numbers. Pass it once and draw from it where it is needed, or pass "
                "Generators of their own (gradc.random.default_rng(seed) for each)",
                source=user_source())
    return found


def counter_updates(graph, treedef):
    """[(value, input index)]: for each Generator among `graph`'s inputs (the leaves of
    `treedef`), its state with the counter advanced by one, to be written in place into that
    input (graph.aliases), so every call of the compiled function draws new numbers."""
    updates = []
    for i in pytree.leaves_inside(treedef, Generator):
        state = graph.inputs[i]
        with graph.at_source(f"gradc.random: {state.name or 'a generator'} advances every call"):
            one = fn.array_const(graph, np.array([0, 1], np.int64))
            updates.append((fn.add(state, one), i))
    return updates
