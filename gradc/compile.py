"""The compile pipeline of one signature, after tracing (and autodiff, done by the caller):

    passes (AFTER_AUTODIFF) -> fuse -> plan buffers -> generate code -> load

`lower` runs everything up to the generated code and returns a `Lowered`, which prints stage by
stage; `compile_graph` also loads it (Numba-compiles the kernels, or takes them from the disk
cache) into a Compiled, the executable signature (gradc/executable.py; gradc/cuda_runtime.py for
target="cuda").
"""
from __future__ import annotations

import threading
import time
from typing import NamedTuple

from .codegen.driver_rt import entry_address, program_table
from .codegen.modules import content_name, load_module, load_modules
from .codegen.program import Program
from .executable import Compiled
from .ir import Graph
from .passes import AFTER_AUTODIFF, run_passes
from .passes.fuse import describe as describe_kernels
from .passes.fuse import fuse
from .passes.memory import describe as describe_plan
from .passes.memory import plan_buffers

TARGETS = ("cpu", "cuda")


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

    def __str__(self):
        parts = [str(stage) for stage in self.stages]
        parts.append(f"== kernels: {len(self.fusion.kernels)}\n{describe_kernels(self.fusion)}")
        parts.append(f"== memory plan\n{describe_plan(self.plan)}")
        parts.append(f"== generated driver\n{self.program.driver_source}")
        return "\n\n".join(parts)


def check_target(target):
    """target="cpu" or "cuda" (which needs numba.cuda and a GPU, or the simulator)."""
    if target not in TARGETS:
        raise NotImplementedError(f"target={target!r} is not available; use 'cpu' or 'cuda'")
    if target == "cuda":
        from .codegen.cuda import require_cuda
        require_cuda()


def lower(graph, title, target="cpu"):
    """Run the passes after autodiff, fuse, plan the buffers and generate the target's code."""
    timings = {}
    t0 = time.perf_counter()
    stages = [Stage("traced", graph)]
    log = []
    graph = run_passes(graph, AFTER_AUTODIFF, log)
    stages += [Stage(name, g) for name, g in log]
    fusion = fuse(graph)
    plan = plan_buffers(fusion)
    timings["passes"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if target == "cuda":  # target="cuda": gradc/codegen/cuda.py
        from .codegen.cuda import CudaProgram
        program = CudaProgram(fusion, plan, title)
    else:
        program = Program(fusion, plan, title)
    timings["codegen"] = time.perf_counter() - t0
    return Lowered(stages, fusion, plan, program, target, timings)


def compile_graph(graph, title, out_kind, load=True, target="cpu", **fields):
    """The Compiled of `graph`: lowered, and loaded unless load=False (then it has no driver:
    what `gradc compile` writes out and `gradc.explain` reports). `fields`: a train step's
    (Compiled's keyword arguments). Its `lowered.timings` says where the time went."""
    lowered = lower(graph, title, target)
    t0 = time.perf_counter()
    driver = module = None
    if load:
        with _LOADING:
            if target == "cuda":
                driver = lowered.program.load()
            else:
                module = load_driver(lowered.program)
                driver = module.run
    lowered.timings["numba"] = time.perf_counter() - t0
    if target == "cuda":  # gradc/cuda_runtime.py, imported only then
        from .cuda_runtime import CudaCompiled
        return CudaCompiled(lowered, driver, out_kind, **fields)
    return Compiled(lowered, driver, out_kind, driver_module=module, **fields)


# Loading generated modules is one thread at a time: load_module replaces a module in
# sys.modules, which breaks another thread's import of the same module (a KeyError from
# importlib); and a driver's PROGRAM table is filled once.
_LOADING = threading.RLock()


def load_driver(program):
    """Load (compile, or take from the disk cache) a CPU program's kernels, the loop that runs
    its calls and its driver; fill the driver's PROGRAM table once (the same for every user).
    Returns the driver's module: `run(arena address, io address)` runs the program."""
    modules = load_modules(program.kernel_modules)
    kernels = {name: entry_address(getattr(module, name[len("gradc_"):]))
               for name, module in modules.items()}
    load_module(program.calls_module, program.calls_source)
    module = load_module(content_name("gradc_driver", program.driver_source), program.driver_source)
    if module.PROGRAM is None:
        module.program_table = program_table(program.encoded_calls(), len(program.input_names),
                                             kernels)
        module.PROGRAM = module.program_table.ctypes.data
    return module
