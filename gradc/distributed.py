"""Data-parallel training over MPI (`mpi4py`): `gradc.distributed.train_step`.

Every rank runs the same compiled forward+backward on its own shard of the data. The loss and the
gradients of a compiled signature live side by side in one flat region of its arena
(`Compiled.output_region`: [loss, padding, grad0, padding, grad1, ...], padding zero), so one
in-place `Allreduce(MPI.IN_PLACE, region, SUM)` per step sums the losses and the gradients of
all ranks at once, with no packing and no copy. The update is a second compiled call, an
update-only step (`gradc.train.update_step`) that takes the summed gradients, scales them by
1/size inside its kernels (exact for 2, 4, 8... ranks) and runs the same fused optimizer update as
a single-process `gradc.train_step` (SGD, Adam, AdamW, `clip_norm` on the averaged gradient,
`check_finite`). The first step checks that every rank has the same model
(parameter structure, shapes, dtypes, optimizer) with one small allgather, then broadcasts the
parameters from rank 0, so all ranks start, and stay, bit-identical.

Failures. A step that fails on some ranks (a compile error, a bad batch) fails on every rank
together: the failing rank still joins the step's allreduce, with a zero buffer whose padding
slot after the loss is 1; every rank sees the count of failed ranks there, gathers their errors,
and raises — the failed rank its own exception, the others `RankFailedError` naming it and its
error. Nothing is updated on any rank, and training may go on. An exception *outside* the step
(in the user's own loop) cannot be seen by the other ranks, which would wait in the next
allreduce: wrap the loop in `abort_on_error()` (or run `python -m mpi4py script.py`), which
prints the rank and the error and calls `MPI_Abort`, and/or give the step a `timeout`.

With target="cuda" both compiled calls run on the device and the allreduce runs on the host
copy of the region, which the forward+backward copies back anyway (the loss and the gradients);
the parameters cross to the device and back with the update (NumPy parameters, as for a
single-process CUDA train step), the optimizer state stays there. A CUDA-aware MPI could
allreduce the device region in place instead: not done.
"""
from __future__ import annotations

import contextlib
import math
import re
import sys
import threading
import time
import traceback
import weakref

import numpy as np

from . import forks, pytree, random
from .api import value_and_grad
from .capture import CaptureChanged
from .errors import (ArgumentError, CompileError, GradcError, NonFiniteError, SignatureError,
                     UnsupportedOpError)
from .passes.memory import ALIGN
from .signature import Call, signature_key
from .train import (LearningRate, check_apart, check_argnums, check_no_python_numbers,
                    check_updatable, update_step)
from .trace import user_source

__all__ = ["train_step", "DataParallelStep", "shard", "abort_on_error", "world",
           "DistributedError", "ModelMismatchError", "RankFailedError"]


class DistributedError(GradcError):
    """A data-parallel step that cannot go on; raised on every rank together."""


class ModelMismatchError(DistributedError):
    """The ranks were given different models (parameter structure, shapes, dtypes, optimizer)."""


class RankFailedError(DistributedError):
    """Another rank failed this step; `failures` maps each failed rank to its error text."""

    def __init__(self, message, failures=None, source=None):
        self.failures = dict(failures or {})
        super().__init__(message, source=source)


_FLAG = 1  # the region element right after the loss: alignment padding, zero unless a rank failed


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError(
            "gradc.distributed needs mpi4py and an MPI library: pip install 'gradc[mpi]' "
            "(the mpi4py and mpich wheels), then run with mpiexec -n N python script.py") from e
    return MPI


def world():
    """MPI.COMM_WORLD (imports mpi4py, which initialises MPI)."""
    return _mpi().COMM_WORLD


def _aligned(n):
    return (n + ALIGN - 1) // ALIGN * ALIGN


# --- data ----------------------------------------------------------------------------------

def shard(data, rank=None, size=None, comm=None):
    """This rank's share of a dataset: rows [rank*m, (rank+1)*m) with m = len // size.

    `data` is an array or a tuple/list of arrays of the same length (sharded alike: `x, y =
    shard((x, y))`). Every rank gets the same number of rows (the last len % size rows are
    dropped), so all ranks run the same number of steps. The shards are views (no copy) of
    contiguous blocks: shuffle first (with the same seed on every rank) if the data is ordered.
    `rank`/`size` default to those of `comm` (MPI.COMM_WORLD)."""
    if rank is None or size is None:
        comm = comm if comm is not None else world()
        rank = comm.Get_rank() if rank is None else rank
        size = comm.Get_size() if size is None else size
    whole = (int, np.integer)
    if not (isinstance(size, whole) and not isinstance(size, (bool, np.bool_)) and size >= 1
            and isinstance(rank, whole) and not isinstance(rank, (bool, np.bool_))
            and 0 <= rank < size):
        raise ValueError(f"shard: rank {rank!r} of size {size!r} is not a rank")
    many = isinstance(data, (tuple, list))
    arrays = list(data) if many else [data]
    if not arrays or not all(hasattr(a, "__len__") and not isinstance(a, (dict, str, bytes))
                             and np.ndim(a) >= 1 for a in arrays):
        raise ValueError("shard takes an array, or a tuple or list of arrays of one length (of at "
                         "least one dimension: the rows are shared out), got "
                         + (type(data).__name__ if not many else
                            "[" + ", ".join(type(a).__name__ if not isinstance(a, np.ndarray)
                                            else f"array of shape {a.shape}" for a in arrays)
                            + "]"))
    lengths = {len(a) for a in arrays}
    if len(lengths) != 1:
        raise ValueError(f"shard: the arrays have different lengths {sorted(lengths)}")
    n = lengths.pop()
    m = n // size
    if m == 0:
        raise ValueError(f"shard: {n} rows cannot give each of {size} ranks at least one")
    parts = [a[rank * m:(rank + 1) * m] for a in arrays]
    if not many:
        return parts[0]
    return type(data)(*parts) if hasattr(data, "_fields") else type(data)(parts)  # (namedtuple)


# --- failures outside the step -------------------------------------------------------------

def _abort(comm, what):
    """Print the rank and `what`, then MPI_Abort every rank."""
    sys.stdout.flush()
    print(f"gradc.distributed: rank {comm.Get_rank()} of {comm.Get_size()}: {what}; aborting "
          "all ranks (MPI_Abort)", file=sys.stderr, flush=True)
    time.sleep(0.5)  # let mpiexec forward the message before it kills the job
    comm.Abort(1)


@contextlib.contextmanager
def abort_on_error(comm=None):
    """Around a training loop: an exception on one rank prints its traceback, the rank and the
    error, and aborts every rank (MPI_Abort), instead of leaving the others waiting in the next
    collective forever. A no-op with one rank (the exception propagates)."""
    comm = comm if comm is not None else world()
    try:
        yield comm
    except BaseException as e:
        if comm.Get_size() == 1 or (isinstance(e, SystemExit) and e.code in (None, 0)):
            raise
        traceback.print_exc()
        _abort(comm, f"{type(e).__name__}: {e}")


# --- the step ------------------------------------------------------------------------------

def _describe_error(e):
    text = f"{type(e).__name__}: {e}"
    return text if len(text) < 2000 else text[:2000] + "..."


class DataParallelStep(LearningRate):
    """`loss = step(params, *batch)` on every rank: the local forward+backward, one in-place
    allreduce of the loss and gradients, and the optimizer update with the averaged gradient.
    Returns the mean of the ranks' losses (the global mean loss when the shards' batches have
    equal sizes and the loss is a mean)."""

    def __init__(self, loss_fn, optimizer, argnums=0, comm=None, check_finite=False,
                 clip_norm=None, target="cpu", timeout=None, root=0):
        check_argnums(argnums)
        self.comm = comm if comm is not None else world()
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.loss_fn, self.optimizer, self.argnums = loss_fn, optimizer, argnums
        if timeout is not None and not (
                isinstance(timeout, (int, float, np.integer, np.floating))
                and not isinstance(timeout, (bool, np.bool_)) and 0 < timeout < math.inf):
            raise ArgumentError(f"timeout={timeout!r}: give the seconds to wait for the other "
                                "ranks (a number > 0), or None to wait forever",
                                source=user_source())
        self.check_finite, self.timeout, self.root = check_finite, timeout, root
        self.clip_norm = clip_norm
        if not (isinstance(root, (int, np.integer)) and 0 <= root < self.size):
            raise ArgumentError(f"root {root!r} is not a rank of this communicator's "
                                f"{self.size} ranks", source=user_source())
        self.__name__ = getattr(loss_fn, "__name__", "loss")
        self.grad_fn = value_and_grad(loss_fn, argnums=argnums, target=target)
        # the update alone, with the summed gradients scaled to their mean inside its kernels
        self.update = update_step(optimizer, check_finite=check_finite, clip_norm=clip_norm,
                                  grad_scale=1.0 / self.size, target=target)
        self.lock = threading.Lock()
        forks.track(self, "lock")
        self.allreduce_s = 0.0  # time spent in the allreduce, summed over steps
        self._region_spec = None  # (dtype, nbytes, offsets of the gradients) agreed at step 1
        # compiled program -> (region, gradient tree of views into it); weakly keyed: a program
        # replaced when an outside value changed is freed, and its id() taken by a new one
        # (keyed by id, the new program's step read the old one's freed gradients)
        self._views = weakref.WeakKeyDictionary()
        self._params_spec = None  # (tree, shapes) of the first step's parameters
        self._failed = None  # a zero region with the failure flag, joined by a failed rank

    # --- what train_step exposes -----------------------------------------------------------
    @property
    def step_count(self):
        return self.update.step_count

    @property
    def cache(self):
        """The compiled forward+backward signatures (one per batch shape)."""
        return self.grad_fn.cache

    def state_dict(self):
        """The optimizer state (identical on every rank): save it from rank 0."""
        return self.update.state_dict()

    def load_state_dict(self, state):
        """Restore the optimizer state: load the same state on every rank."""
        self.update.load_state_dict(state)

    # --- calling ---------------------------------------------------------------------------
    def __call__(self, *args):
        with self.lock:
            if self._region_spec is None:
                self._first_step(args)
            # the forward advances the Generators among the arguments; a step that any rank
            # refuses (non-finite, failed) leaves them where they were, as a single process's
            generators = _generator_states(args)
            try:
                return self._step(args)
            except BaseException:
                for state, saved in generators:
                    state[...] = saved
                raise

    def _step(self, args):
        error, region, grads = None, None, None
        try:
            region, grads = self._forward_backward(args)
        except BaseException as e:  # (KeyboardInterrupt, SystemExit too) joined below, so
            error = e  # the other ranks fail too instead of waiting
        if error is not None:
            region = self._failed
            region[_FLAG] = 1
        self._allreduce(region)
        if region[_FLAG] != 0:
            region[:] = 0
            self._raise_failure(error)
        loss = float(region[0]) / self.size
        if self.check_finite and not np.isfinite(loss):
            raise NonFiniteError(
                f"the mean loss over the {self.size} ranks ({loss}) is not finite; parameters "
                "and optimizer state were left unchanged on every rank", source=user_source())
        try:
            self.update(args[self.argnums], grads)
        except NonFiniteError:
            raise NonFiniteError(
                f"an averaged gradient is not finite (mean loss {loss}); parameters and "
                "optimizer state were left unchanged on every rank",
                source=user_source()) from None
        return loss

    def _forward_backward(self, args):
        """The local loss and gradients, in the output region; raises what would make this
        rank's update fail (checked here, before the allreduce, so every rank hears of it)."""
        p_leaves, p_tree = pytree.flatten(args[self.argnums])
        for x in p_leaves:
            if not (isinstance(x, np.ndarray) and x.flags.c_contiguous and x.flags.writeable):
                self._check_params(args, user_source())
        if (p_tree, [x.shape for x in p_leaves]) != self._params_spec:
            # (checked before the allreduce, so every rank raises: a reshaped or renamed
            # parameter keeps the region's bytes, and the other ranks would have updated)
            tree, shapes = self._params_spec
            raise SignatureError(
                f"this rank's parameters are {pytree.describe(p_tree)} of shapes "
                f"{[x.shape for x in p_leaves]}, but the first step's were "
                f"{pytree.describe(tree)} of shapes {shapes}: every step takes the same "
                "parameters", source=user_source())
        check_apart(p_leaves, args, self.argnums, self.loss_fn)  # (the update would refuse them)
        leaves, treedef = pytree.flatten((args, {}))
        key = signature_key(leaves, treedef)
        compiled = self.grad_fn.cache.get(key)
        if compiled is None:  # a new batch signature: trace and compile
            compiled = self.grad_fn.compiled_for(*args)
        try:
            compiled.captures.read()
        except CaptureChanged as e:  # an array read from outside the arguments changed
            compiled = self.grad_fn.compiled_once(key, Call(self.grad_fn.traced_args(args), {}),
                                                   stale=compiled, why=str(e))
        if compiled.write_backs:  # (their outputs would be summed over the ranks)
            raise UnsupportedOpError(
                f"the loss assigns traced values outside its arguments "
                f"({', '.join(f'`{w.where}`' for w in compiled.write_backs[:4])}), which a "
                "data-parallel step does not write back: return them (has_aux=True) and store "
                "them after the step", source=user_source())
        views = self._views.get(compiled)
        if views is None:
            views = self._views[compiled] = self._layout(compiled, args, user_source())[:2]
        with compiled.lock:
            compiled.run(leaves)
        return views

    def _layout(self, compiled, args, src):
        """The compiled signature's output region and the gradient views into it, checked to be
        laid out as [loss | pad | grad0 | pad | grad1 ...] in one dtype, and (after the first
        step) exactly as the first step's, which every rank agreed on."""
        outs = [o for o in compiled.outputs if o is not None]  # (None: a generator, in place)
        dtypes = {o.dtype for o in outs}
        if len(dtypes) != 1:
            raise SignatureError(
                "a data-parallel train_step allreduces the loss and the gradients as one array, "
                "so they need one dtype; got " + ", ".join(sorted(d.name for d in dtypes)) +
                " (give every parameter and input the same float dtype)", source=src)
        dtype = outs[0].dtype
        region = compiled.output_region(dtype)
        offsets, cursor = [0], _aligned(dtype.itemsize)
        for o in outs[1:]:  # (an empty gradient has no bytes: no place in the region)
            offsets.append(cursor if o.size else None)
            cursor += _aligned(o.nbytes)
        actual = [o.ctypes.data - region.ctypes.data if o.size else None for o in outs]
        if actual != offsets or region.nbytes != cursor:
            raise CompileError(
                "gradc.distributed expects the loss and gradients laid out as [loss | grad0 | "
                f"grad1 ...] with {ALIGN}-byte alignment; this gradc's plan differs (offsets "
                f"{actual}, region {region.nbytes} bytes)")
        spec = (dtype.str, region.nbytes, tuple(offsets))
        if self._region_spec is not None and spec != self._region_spec:
            raise SignatureError(
                f"these arguments make the loss and gradients {dtype.name}, {region.nbytes} "
                f"bytes, but the first step's were {np.dtype(self._region_spec[0]).name}, "
                f"{self._region_spec[1]} bytes; every step must keep the parameters' and the "
                "loss's dtype", source=src)
        grads = pytree.unflatten(pytree.flatten(args[self.argnums])[1], outs[1:])
        return region, grads, spec

    def _allreduce(self, region):
        MPI = _mpi()
        t0 = time.perf_counter()
        # (nonblocking on every rank, with a timeout or not: a blocking collective does not
        # match a nonblocking one, and a timeout given on one rank only hung every rank)
        self._wait(self.comm.Iallreduce(MPI.IN_PLACE, region, op=MPI.SUM),
                   "the gradient allreduce")
        self.allreduce_s += time.perf_counter() - t0

    def _wait(self, request, what):
        if self.timeout is None:
            request.Wait()
            return
        deadline = time.monotonic() + self.timeout
        while not request.Test():
            if time.monotonic() > deadline:
                _abort(self.comm, f"step {self.step_count + 1}: the other ranks did not join "
                        f"{what} within {self.timeout:g} s (did a rank fail outside the step, or "
                        "do the ranks run different numbers of steps?)")
            time.sleep(0)

    def _gather(self, obj, what):
        self._wait(self.comm.Ibarrier(), what)
        return self.comm.allgather(obj)

    def _raise_failure(self, error, failures=None):
        if failures is None:
            failures = self._gather(None if error is None else _describe_error(error),
                                    "the failure report")
            failures = {r: e for r, e in enumerate(failures) if e is not None}
        step = self.step_count + 1
        if error is not None:
            others = [r for r in failures if r != self.rank]
            note = getattr(error, "add_note", None)  # (Python 3.11 and later)
            note = note if note is not None else (lambda text: None)
            note(f"gradc.distributed: step {step} failed on rank {self.rank} of {self.size}"
                 + (f" (and on ranks {others})" if others else "")
                 + "; every rank raised, nothing was updated")
            raise error
        lines = "; ".join(f"rank {r}: {e}" for r, e in failures.items())
        raise RankFailedError(
            f"step {step} failed on rank{'s' if len(failures) > 1 else ''} "
            f"{', '.join(map(str, failures))} of {self.size} ({lines}); parameters and optimizer "
            "state were left unchanged on every rank", failures, source=user_source())

    # --- the first step: same model everywhere, then rank 0's parameters -------------------
    def _signature(self, args):
        params = args[self.argnums] if len(args) > self.argnums else None
        leaves, tree = pytree.flatten(params)
        return {"params": pytree.describe(tree),
                "shapes": [tuple(np.shape(x)) for x in leaves],
                "dtypes": [np.asarray(x).dtype.name for x in leaves],
                "optimizer": re.sub(r" at 0x[0-9a-fA-F]+", "", repr(self.optimizer)),
                # (options given as functions, by what they answer here: by name alone, a decay
                # read from the rank's own config passed, and the ranks drifted apart)
                "per_parameter": self.optimizer.leaf_options(params),
                "options": f"clip_norm={self.clip_norm!r}, check_finite={self.check_finite!r}"}

    def _first_step(self, args):
        src = user_source()
        error, signature, spec = None, None, None
        try:
            signature = self._signature(args)
            self._check_params(args, src)
            compiled = self.grad_fn.compiled_for(*args)
            region, grads, spec = self._layout(compiled, args, src)
        except BaseException as e:  # reported to every rank below
            error = e
        infos = self._gather((signature, spec, None if error is None else _describe_error(error)),
                             "the first step's model check")
        signatures = [s for s, _, _ in infos]
        if any(s != signatures[0] for s in signatures):
            raise ModelMismatchError(_mismatch(signatures), source=src)
        failures = {r: e for r, (_, _, e) in enumerate(infos) if e is not None}
        if failures:
            self._raise_failure(error, failures)
        if any(s != spec for _, s, _ in infos):
            raise ModelMismatchError(
                "the ranks' loss and gradient regions differ (" + "; ".join(
                    f"rank {r}: {s}" for r, (_, s, _) in enumerate(infos)) + ")", source=src)
        for leaf in pytree.flatten(args[self.argnums])[0]:
            self.comm.Bcast(leaf, root=self.root)  # every rank starts from rank 0's parameters
        self._views[compiled] = region, grads
        self._params_spec = _params_spec(args[self.argnums])
        self._failed = np.zeros(spec[1] // np.dtype(spec[0]).itemsize, spec[0])
        self._region_spec = spec

    def _check_params(self, args, src):
        p_leaves, p_tree = pytree.flatten(args[self.argnums])
        check_no_python_numbers(p_tree, "params", src)
        check_updatable(p_leaves, src)
        check_apart(p_leaves, args, self.argnums, self.loss_fn)


def _generator_states(args):
    """[(state array, a copy)] of the gradc.random Generators among `args` (none for arguments
    that do not flatten: the step then fails, on every rank, where it flattens them)."""
    try:
        leaves, treedef = pytree.flatten((args, {}))
        found = random.generator_leaves(treedef, leaves)
    except GradcError:
        return []
    return [(leaves[i], leaves[i].copy()) for i in found]


def _params_spec(params):
    """(tree, shapes) of the parameters: what every step must give."""
    leaves, tree = pytree.flatten(params)
    return tree, [np.shape(x) for x in leaves]


def _mismatch(signatures):
    def summary(sig):
        if sig is None:
            return "no usable parameters"
        options = sig["per_parameter"]
        return (f"parameters {sig['params']} of shapes {sig['shapes']} "
                f"({', '.join(sorted(set(sig['dtypes'])))}), {sig['optimizer']}"
                + ("" if options is None else f" (per parameter leaf: {options})")
                + f", {sig['options']}")

    lines = [f"rank 0 has {summary(signatures[0])}"]
    lines += [f"rank {r} has {summary(s)}" for r, s in enumerate(signatures)
              if r and s != signatures[0]]
    return ("the ranks were given different models: every rank must build the same parameters "
            "and optimizer (rank 0's values are broadcast at the first step); " + "; ".join(lines))


def train_step(loss_fn=None, optimizer=None, *, argnums=0, comm=None, check_finite=False,
               clip_norm=None, target="cpu", timeout=None, root=0, has_aux=False):
    """A data-parallel `gradc.train_step`: run it on every rank (`mpiexec -n N`) with that
    rank's batch; `loss = step(params, *batch)` updates `params` in place with the gradient
    averaged over the ranks and returns the ranks' mean loss. `comm` defaults to
    MPI.COMM_WORLD. `timeout` (seconds, default None: wait forever) aborts every rank when the
    others do not join a step's allreduce in time. Other options as for `gradc.train_step`."""
    if optimizer is None:
        raise TypeError("train_step needs an optimizer, e.g. gradc.optim.SGD(lr=0.1)")
    if has_aux:
        raise UnsupportedOpError("a data-parallel train_step does not take has_aux=True yet: "
                                 "return the loss alone, and compute the metrics with gradc.jit "
                                 "on one rank", source=user_source())
    options = dict(argnums=argnums, comm=comm, check_finite=check_finite, clip_norm=clip_norm,
                   target=target, timeout=timeout, root=root)
    if loss_fn is None:
        return lambda f: DataParallelStep(f, optimizer, **options)
    return DataParallelStep(loss_fn, optimizer, **options)
