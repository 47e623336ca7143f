"""The systems a workload runs on, behind one interface.

``make(system, workload, params, batch)`` returns a `Runner`: ``runner.step()`` does one
training step (forward, backward, SGD update of every parameter, float32) and returns the loss
as a Python float; ``runner.params()`` gives the current parameters as NumPy arrays (for the
agreement check); ``runner.memory()`` says how much memory a step needs, by whatever each system
can tell honestly. Each runner owns a private copy of the parameters.

Systems: ``gradc`` (`gradc.train_step` with `gradc.optim.SGD`), ``numpy`` (the forward and
backward written by hand), ``torch`` (PyTorch eager, `torch.optim.SGD(foreach=True)`),
``torch.compile`` (the loss compiled with `torch.compile`, its backward through AOTAutograd,
and `opt.step` compiled too), ``jax`` (`jax.jit` of `value_and_grad` plus the SGD update, with
the parameters donated so the update is in place, dispatched synchronously).
"""
from __future__ import annotations

import functools
import importlib.util
import itertools
import tracemalloc

import numpy as np

SYSTEMS = ("gradc", "numpy", "torch", "torch.compile", "jax")
PEERS = {"torch": "torch", "torch.compile": "torch", "jax": "jax"}


def available(system):
    """None if the system can run here, or why not ("absent: ...")."""
    module = PEERS.get(system)
    if module is None:
        return None
    if importlib.util.find_spec(module) is None:
        return f"absent ({module} is not installed)"
    try:
        importlib.import_module(module)
    except Exception as e:  # a broken install is as good as none
        return f"absent (import {module} failed: {type(e).__name__}: {e})"
    return None


class Omitted(Exception):
    """The workload has no form for this system (the message says why)."""


class Runner:
    system = "?"

    def step(self):
        raise NotImplementedError

    def params(self):
        raise NotImplementedError

    def memory(self):
        """{label: bytes} of what a step needs beyond the parameters and data."""
        return {}


# ---------------------------------------------------------------------------------------------


class GradcRunner(Runner):
    system = "gradc"

    def __init__(self, workload, params, batch):
        import gradc
        self.w = workload
        self.P = {k: v.copy() for k, v in params.items()}
        self.batch = batch
        self.train = gradc.train_step(workload.loss, gradc.optim.SGD(workload.lr))

    def step(self):
        return self.train(self.P, *self.batch)

    def params(self):
        return self.P

    def compiled(self):
        return self.train.cache[self.train._last_key]

    def memory(self):
        plan = self.compiled().plan
        return {"arena": plan.arena_bytes, "naive": plan.naive_bytes,
                "scratch": plan.scratch_bytes}


class NumpyRunner(Runner):
    system = "numpy"

    def __init__(self, workload, params, batch):
        self.w = workload
        self.P = {k: v.copy() for k, v in params.items()}
        self.batch = batch

    def step(self):
        return self.w.numpy_step(self.P, *self.batch, lr=self.w.lr)

    def params(self):
        return self.P

    def memory(self):
        """Peak of NumPy's allocations during one step (NumPy reports them to tracemalloc)."""
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            self.step()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        return {"peak": peak - base}


class TorchRunner(Runner):
    system = "torch"

    def __init__(self, workload, params, batch, compiled=False, loss=None):
        import torch
        self.torch = torch
        self.w = workload
        self.P = {k: torch.from_numpy(v.copy()).requires_grad_() for k, v in params.items()}
        self.batch = tuple(torch.from_numpy(b) for b in batch)
        self.opt = torch.optim.SGD(list(self.P.values()), lr=workload.lr, foreach=True)
        loss = functools.partial(loss or workload.torch_loss)
        if compiled:
            self.system = "torch.compile"
            loss = torch.compile(loss)
            self._opt_step = torch.compile(self.opt.step)
        else:
            self._opt_step = self.opt.step
        self._loss = loss

    def step(self):
        self.opt.zero_grad(set_to_none=True)
        loss = self._loss(self.P, *self.batch)
        loss.backward()
        self._opt_step()
        return loss.item()

    def params(self):
        return {k: v.detach().numpy() for k, v in self.P.items()}

    def memory(self):
        """Peak bytes newly allocated during one step, from the profiler's memory events (the
        allocations of the step: gradients, saved activations, temporaries; the previous step's
        gradients are freed by zero_grad before, and their frees are not counted)."""
        from torch.profiler import ProfilerActivity, profile
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
                self.step()
        events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                        if e.name() == "[memory]")
        if not events:
            return {}
        return {"peak": max(0, max(itertools.accumulate(b for _, b in events)))}


class JaxRunner(Runner):
    system = "jax"

    def __init__(self, workload, params, batch):
        import jax
        import jax.numpy as jnp
        self.jax = jax
        # Run each call in the calling thread. With the default (asynchronous) dispatch XLA runs
        # the step on a thread of its own while Python waits for the loss, which only adds a
        # hand-off here (each step needs the previous one's parameters and the loss) and lets
        # JAX use a second core: on W1 it took 100 µs of CPU per 60 µs step.
        jax.config.update("jax_cpu_enable_async_dispatch", False)
        self.w = workload
        lr = workload.lr

        def sgd_step(P, *b):
            loss, g = jax.value_and_grad(workload.jax_loss)(P, *b)
            return jax.tree.map(lambda p, d: p - lr * d, P, g), loss

        self._step = jax.jit(sgd_step, donate_argnums=0)
        # JAX without x64 keeps integers as int32
        self.batch = tuple(jnp.asarray(b.astype(np.int32) if b.dtype == np.int64 else b)
                           for b in batch)
        self.P = {k: jnp.asarray(v.copy()) for k, v in params.items()}

    def step(self):
        self.P, loss = self._step(self.P, *self.batch)
        return float(loss)

    def params(self):
        return {k: np.asarray(v) for k, v in self.P.items()}

    def memory(self):
        """XLA's buffer assignment for the compiled step: temporaries plus outputs that do not
        alias a donated input (planned, like gradc's arena)."""
        m = self._step.lower(self.P, *self.batch).compile().memory_analysis()
        if m is None:
            return {}
        return {"temp+out": m.temp_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes}


def make(system, workload, params, batch):
    """A runner of `workload` on `system`: one of SYSTEMS, or one of the workload's variants."""
    why = workload.omitted.get(system)
    if why:
        raise Omitted(why)
    if system in workload.variants:
        base, method = workload.variants[system]
        if base != "torch":
            raise KeyError(f"{system}: only PyTorch eager variants are supported")
        return TorchRunner(workload, params, batch, loss=getattr(workload, method))
    if system == "gradc":
        return GradcRunner(workload, params, batch)
    if system == "numpy":
        return NumpyRunner(workload, params, batch)
    if system == "torch":
        return TorchRunner(workload, params, batch)
    if system == "torch.compile":
        return TorchRunner(workload, params, batch, compiled=True)
    if system == "jax":
        return JaxRunner(workload, params, batch)
    raise KeyError(system)
