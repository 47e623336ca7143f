"""The compile pipeline of one signature, after tracing (and autodiff, done by the caller):

    passes (AFTER_AUTODIFF) -> fuse -> plan buffers -> generate code -> load

`lower` runs everything up to the generated code and returns a `Lowered`, which prints stage by
stage; `compile_graph` also loads it (Numba-compiles the kernels, or takes them from the disk
cache) into a Compiled, the executable signature (gradc/executable.py; gradc/cuda_runtime.py for
target="cuda").
"""
from __future__ import annotations

import os
import threading
import time
from typing import NamedTuple

from .codegen.driver_rt import argument_counts, entry_address, program_table, runner
from . import program_cache
from .codegen import llvm_cpu, pool_rt
from .codegen.modules import content_name, load_module, load_modules, module_dir
from .codegen.program import Program, verify_plan
from .executable import Compiled, Layout
from .ir import Graph, gc_paused, release
from .passes import AFTER_AUTODIFF, run_passes
from .passes import products
from .passes.fuse import describe as describe_kernels
from .passes.fuse import fuse
from .passes.memory import describe as describe_plan
from .passes.memory import plan_buffers

class Stage(NamedTuple):
    """The graph after one stage of the pipeline ("traced", then each pass by name)."""
    name: str
    graph: Graph

    def __str__(self):
        return f"== {self.name}: {len(self.graph.nodes)} nodes\n{self.graph}"


class Lowered:
    """A graph lowered for a target: the graph after each stage, the fused kernels, the memory
    plan and the generated program (not loaded). `print(lowered)` shows each in turn."""

    def __init__(self, stages, fusion, plan, program, target, timings):
        self.stages, self.fusion, self.plan, self.program = stages, fusion, plan, program
        self.target, self.timings = target, timings
        self.layout = Layout.of(fusion, plan)

    @property
    def runnable(self):
        """What the target loads: the generated program (of a SavedLowered, what the cache
        keeps of it)."""
        return self.program

    def __str__(self):
        parts = [str(stage) for stage in self.stages]
        parts.append(f"== kernels: {len(self.fusion.kernels)}\n{describe_kernels(self.fusion)}")
        parts.append(f"== memory plan\n{describe_plan(self.plan)}")
        parts.append(f"== generated driver\n{self.program.driver_source}")
        return "\n\n".join(parts)


class SavedLowered:
    """A loaded CPU program as a Compiled keeps it, whether from the program cache
    (gradc/program_cache.py) or lowered just now (`_kept`): what load_driver loads (`runnable`,
    a program_cache.SavedProgram) and what the Compiled needs (`layout`). The
    stages, kernels, plan and full Program are those of the graph lowered again, when first
    asked for (explain, profiling)."""

    def __init__(self, graph, title, runnable, layout, timings, fresh_outputs=False):
        self.graph, self.title, self.runnable, self.layout = graph, title, runnable, layout
        self.target, self.timings, self.fresh_outputs = "cpu", timings, fresh_outputs
        self._lowered = None

    def relowered(self):
        if self._lowered is None:
            with gc_paused():
                self._lowered = lower(self.graph, self.title, self.target, self.fresh_outputs)
        return self._lowered

    stages = property(lambda self: self.relowered().stages)
    fusion = property(lambda self: self.relowered().fusion)
    plan = property(lambda self: self.relowered().plan)
    program = property(lambda self: self.relowered().program)

    def __str__(self):
        return str(self.relowered())


class CpuTarget:
    """target="cpu": Numba CPU kernels, run in order by a generated driver. A target says
    whether it can run here (`check`), generates a program (`generate`) and loads it into an
    executable that owns the arena (`executable`; load=False: none loaded, for explain and
    `gradc compile`). target="cuda" is gradc/cuda_runtime.py's CudaTarget."""

    def check(self):
        pass

    def generate(self, fusion, plan, title):
        return Program(fusion, plan, title)

    def executable(self, lowered, out_kind, load, **fields):
        module = load_driver(lowered.runnable, lowered.timings) if load else None
        return Compiled(lowered, None if module is None else module.run, out_kind,
                        driver_module=module, **fields)


def target_named(name):
    """The Target called `name` (target="cuda": gradc/cuda_runtime.py, imported only then)."""
    if name == "cpu":
        return CpuTarget()
    if name == "cuda":
        from .cuda_runtime import CudaTarget
        return CudaTarget()
    from .errors import ArgumentError
    from .trace import user_source
    raise ArgumentError(f"target={name!r} is not available; use 'cpu' or 'cuda'",
                        source=user_source())


def check_target(target):
    """target="cpu" or "cuda" (which needs numba.cuda and a GPU, or the simulator)."""
    target_named(target).check()


def _refuse_empty_arrays(graph, target):
    """The CUDA target's kernels and transfers take no array of no elements (a launch over
    none, an upload of none failed inside Numba); the CPU target does."""
    from .errors import UnsupportedOpError
    from .trace import user_source
    why = (f"target={target!r} does not take arrays with no elements ({{}}): compile this "
           "function for the CPU target")
    for v in graph.inputs:
        if v.size == 0:
            raise UnsupportedOpError(why.format(f"{v.name or 'an input'}: {v.type_str}"),
                                     source=user_source())
    for node in graph.nodes:
        if node.output.size == 0:
            raise UnsupportedOpError(why.format(f"{node.op} gives {node.output.type_str}"),
                                     source=node.source)


def lower(graph, title, target="cpu", fresh_outputs=False):
    """Run the passes after autodiff, fuse, plan the buffers and generate the target's code.
    fresh_outputs (CPU): the program writes its outputs into new arrays passed on each call
    (gradc.jit's results), not into the arena (memory.plan_buffers)."""
    if target != "cpu":
        _refuse_empty_arrays(graph, target)
    timings = {}
    t0 = time.perf_counter()
    stages = [Stage("traced", graph)]
    log = []
    with products.lowering_for(target):
        graph = run_passes(graph, AFTER_AUTODIFF, log)
    stages += [Stage(name, g) for name, g in log]
    # (a CPU kernel call costs nanoseconds: identical parts become calls of one kernel, which
    # compiles once; a CUDA launch costs microseconds. CUDA kernels are parallel anyway: only
    # the CPU's long loops are cut into chunks for gradc's threads)
    cpu = target == "cpu"
    fusion = fuse(graph, repeats=cpu, parallel=cpu)
    fresh_outputs = fresh_outputs and cpu
    plan = plan_buffers(fusion, fresh_outputs)
    if fusion.rematerialized:  # recomputed late reads: kept only where the arena is smaller
        plain = fuse(graph, remat=False, repeats=cpu, parallel=cpu)
        plain_plan = plan_buffers(plain, fresh_outputs)
        if plain_plan.arena_bytes <= plan.arena_bytes:
            fusion, plan, plain = plain, plain_plan, fusion
        release(plain.graph)  # (the one not taken)
    if os.environ.get("GRADC_CHECK_PLAN") == "1":  # (the tests set it)
        verify_plan(fusion, plan)
    timings["passes"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    program = target_named(target).generate(fusion, plan, title)
    timings["codegen"] = time.perf_counter() - t0
    return Lowered(stages, fusion, plan, program, target, timings)


def compile_graph(graph, title, out_kind, load=True, target="cpu", fresh_outputs=False,
                  **fields):
    """The Compiled of `graph`: lowered, and loaded unless load=False (then it has no driver:
    what `gradc compile` writes out and `gradc.explain` reports); with fresh_outputs (a CPU
    program), writing its outputs into new arrays on each call (gradc.jit). A CPU program to load is
    taken from the program cache when an earlier compile of the same graph left it there
    (gradc/program_cache.py). `fields`: a train step's (Compiled's keyword arguments). Its
    `lowered.timings` says where the time went."""
    with gc_paused():
        t0 = time.perf_counter()
        fresh_outputs = fresh_outputs and target == "cpu"
        key = program_cache.graph_key(graph, title, target, fresh_outputs)  # (None: no cache,
        digest = key if key is not None or program_cache.programs_dir() is not None else (
            program_cache.graph_digest(graph, title, target, fresh_outputs))  # or uncacheable)
        lowered = _lowered(graph, title, target, load, key, time.perf_counter() - t0,
                           fresh_outputs)
        t0 = time.perf_counter()
        with _LOADING:
            compiled = target_named(target).executable(lowered, out_kind, load, **fields)
    lowered.timings["numba"] = time.perf_counter() - t0 - lowered.timings.get("llvm", 0)
    compiled.digest = digest  # (what the program is: the same after a retrace, nothing changed)
    return compiled


def _lowered(graph, title, target, load, key, t_key, fresh_outputs=False):
    """lower(), or for a CPU program to load, the cache's entry `key` (a SavedLowered) when it
    has one; a program lowered here goes into the cache. `t_key`: the time the key took."""
    if not (load and target == "cpu"):
        return lower(graph, title, target, fresh_outputs)
    t0 = time.perf_counter() - t_key
    saved = program_cache.load(key)
    if saved is not None:
        return SavedLowered(graph, title, *saved, {"cached program": time.perf_counter() - t0},
                            fresh_outputs)
    t_key = time.perf_counter() - t0
    lowered = lower(graph, title, target, fresh_outputs)
    t0 = time.perf_counter()
    program_cache.store(key, lowered.program, lowered.layout)
    lowered.timings["program cache"] = t_key + time.perf_counter() - t0
    return _kept(lowered, graph, title, fresh_outputs)


def _kept(lowered, graph, title, fresh_outputs=False):
    """What a loaded CPU program keeps of its lowering: the traced graph, the program as the
    program cache holds it and the layout (a SavedLowered: explain lowers again). Every other
    graph (each pass's, the fusion's) is released: a graph's nodes and values hold each other,
    so only the cyclic collector would free them (10-20 ms of a new batch size's 60 ms compile
    of W7), and kept, a signature held ten times the objects every full collection walks."""
    saved = SavedLowered(graph, title, program_cache.saved(lowered.program), lowered.layout,
                         lowered.timings, fresh_outputs)
    for g in {id(g): g for g in [s.graph for s in lowered.stages] + [lowered.fusion.graph]}.values():
        if g is not graph:
            release(g)
    return saved


# Loading generated modules is one thread at a time: load_module replaces a module in
# sys.modules, which breaks another thread's import of the same module (a KeyError from
# importlib); and a driver's PROGRAM table is filled once.
_LOADING = threading.RLock()


def load_driver(program, timings=None):
    """Load (compile, or take from the disk cache) a CPU program's kernels, the loop that runs
    its calls (codegen/driver_rt.py) and its driver; fill the driver's PROGRAM table once (the
    same for every user).
    Returns the driver's module: `run(words)` runs the program (gradc.executable.Compiled).
    Kernels whose text is in the subset codegen/llvm_cpu.py compiles (the loop kernels, and
    library kernels such as products, concatenate, scatters) are compiled straight to LLVM IR,
    together; the others (index checks, special functions...), and all of them with
    GRADC_KERNELS=numba, by Numba, one module each. `timings` (seconds by
    stage) gets the direct kernels' and the loop's time as "llvm"."""
    kernels = {}
    t0 = time.perf_counter()
    if llvm_cpu.route() == "llvm":
        kernels = llvm_cpu.load_kernels(program.kernel_modules, module_dir())
    calls = program.encoded_calls()
    runner(argument_counts(calls))  # (the one the driver loads)
    # chunked calls go to gradc's threads (the pool, started here: its compile is LLVM's too)
    pool = pool_rt.chunks_address() if any(chunks for _, _, chunks in calls) else 0
    if timings is not None:
        timings["llvm"] = time.perf_counter() - t0
    modules = load_modules({name: source for name, source in program.kernel_modules.items()
                            if name not in kernels})
    kernels.update((name, entry_address(getattr(module, name[len("gradc_"):])))
                   for name, module in modules.items())
    module = load_module(content_name("gradc_driver", program.driver_source), program.driver_source)
    if module.PROGRAM is None:
        module.program_table = program_table(calls, len(program.input_names), kernels, pool)
        module.PROGRAM = module.program_table.ctypes.data
    return module
