"""The report behind `gradc.explain`: how a function is compiled, stage by stage, for one set of arguments.

The report holds the traced IR, the IR after the passes (with source lines), what CSE merged and
where forward and backward share work, the kernels with what each fused (and why fusions were
refused), the memory plan, and the generated driver; and the lines where float32 values are
computed in float64 (NumPy's promotion by a float64 scalar: a common slip that doubles memory).
"""
import inspect
import types
from dataclasses import dataclass

import numpy as np

from .passes.fuse import describe as describe_kernels
from .passes.memory import describe as describe_plan
from .passes.memory import nbytes
from .errors import ArgumentError, NonDifferentiableError
from .function import Function
from .signature import Call
from .train import TrainStep
from .trace import user_source


@dataclass(frozen=True)
class Buffer:
    """One value the plan stores in the arena: its size, the op that computes it and the user's
    line that op comes from."""
    bytes: int
    op: str
    source: str
    shape: tuple
    dtype: str


@dataclass(frozen=True)
class MemoryReport:
    """The memory plan in numbers: the arena (outputs, constants and reused scratch), what it
    would take with no reuse, and the largest buffers, biggest first."""
    arena_bytes: int
    no_reuse_bytes: int
    output_bytes: int
    scratch_bytes: int
    largest: tuple


class Report(str):
    """What `gradc.explain` returns: the report's text (a str: print it), with `.memory`, the
    plan as a MemoryReport."""

    def __new__(cls, text, memory):
        report = super().__new__(cls, text)
        report.memory = memory
        return report


def memory_report(compiled, count=10):
    plan, graph = compiled.plan, compiled.fusion.graph
    stored = [Buffer(nbytes(n.output), n.op, n.source, n.output.shape, n.output.dtype.name)
              for n in graph.nodes if n.output.id in plan.offsets]
    stored.sort(key=lambda b: -b.bytes)
    return MemoryReport(plan.arena_bytes, plan.naive_bytes, plan.output_bytes,
                        plan.scratch_bytes, tuple(stored[:count]))


MODES = ("value_and_grad", "grad", "jit")


def explain(fun, *args, **kwargs):
    """Compile `fun` for these arguments and return the report (a Report: its text, and
    `.memory`, the plan in numbers), running nothing: the arguments, a generator among them,
    gradients held from earlier calls and a train step's parameters are left as they are.
    `fun` may be anything the API returns (its arguments, keywords included, are the call's;
    a data-parallel step reports its forward+backward and then its update), or a plain
    function, compiled as value and gradient of argument 0 unless explain's own keywords say
    otherwise: argnums=..., mode="jit" (the forward alone) or "grad"."""
    if not args and not kwargs:  # (argnums=0 then spoke of an argument nobody gave)
        raise ArgumentError("gradc.explain(fun, *args): give the arguments to compile `fun` "
                            "for, as you would call it (example arrays of the right shapes and "
                            "dtypes)", source=user_source())
    if isinstance(fun, types.MethodType) and isinstance(fun.__func__, (Function, TrainStep)):
        args = (fun.__self__,) + args  # (m.forward of a @gradc.jit method: the object first)
        fun = fun.__func__
    if isinstance(fun, TrainStep):
        return report(fun.lower(*args, source=user_source()), fun)
    if isinstance(getattr(fun, "grad_fn", None), Function) and isinstance(
            getattr(fun, "update", None), TrainStep):  # gradc.train_step(distributed=True)
        params = args[fun.argnums]
        forward = explain(fun.grad_fn, *args)
        return Report(forward + "\n\n" + explain(fun.update, params, params), forward.memory)
    if isinstance(fun, Function):
        if fun.max_signatures is None:  # (kept: the call after runs it)
            return report(fun.compiled_for(*args, **kwargs), fun)
        # under a cap, a signature it has not compiled is lowered, not kept: kept, it took one
        # of max_signatures' places, and a real call after was refused
        compiled = fun.cache.get(Call(fun.traced_args(args), kwargs).key())
        return report(compiled or fun.lower(*args, source=user_source(), **kwargs), fun)
    if not callable(fun):
        raise ArgumentError(f"gradc.explain takes a function or what gradc.jit, grad, "
                            f"value_and_grad or train_step returned, got {type(fun).__name__}",
                            source=user_source())
    options = {k: kwargs.pop(k) for k in ("argnums", "mode") if k in kwargs}
    try:
        parameters = inspect.signature(fun).parameters
    except (TypeError, ValueError):
        parameters = {}
    for k in options:
        if k in parameters:  # (else its keyword would be taken for explain's option)
            raise ArgumentError(
                f"{k}= is an option of gradc.explain, and {getattr(fun, '__name__', 'fun')} "
                f"takes {k} too: explain what gradc.value_and_grad(...) or gradc.jit(...) of it "
                f"returns, and {k}= goes to the function", source=user_source())
    mode = options.get("mode", "value_and_grad")
    if mode not in MODES:
        raise ArgumentError(f"gradc.explain(mode={mode!r}): give one of {', '.join(MODES)}",
                            source=user_source())
    f = Function(fun, mode, argnums=options.get("argnums", 0))
    try:
        return report(f.compiled_for(*args, **kwargs), f)
    except NonDifferentiableError as e:
        if "mode" in options:
            raise
        raise NonDifferentiableError(  # (a model's forward, explained as a gradient)
            f"{e} (gradc.explain compiles a plain function as its value and gradient: "
            "mode='jit' explains the forward alone)",
            source=None if e.source else user_source()) from None


def report(compiled, f):
    """The report of `compiled`, a signature of `f` (a Function or a TrainStep)."""
    stages = compiled.stages
    traced = stages[0][1]
    final = compiled.fusion.graph
    if isinstance(f, TrainStep):
        what, parts = f"train_step of {f.__name__} with {f.optimizer!r}", "forward + backward + update"
        if f.loss_fn is None:
            what, parts = f"update step with {f.optimizer!r}", "update"
    else:
        what = f"{f.mode} of {f.__name__}"
        parts = "forward + backward" if f.mode != "jit" else "forward"
    out = [f"gradc.explain: {what}", ""]
    out.append(f"== IR as traced ({parts}): {len(traced.nodes)} nodes")
    out.append(str(traced))
    out.append("")
    widened = _widened(traced)
    if widened:
        out.append(f"== float32 values computed in float64 ({len(widened)} lines)")
        out.append("  NumPy's promotion: a float64 NumPy scalar (np.sqrt(2 / np.pi), np.float64(c))"
                   " or array beside float32 ones makes float64 (twice the memory, slower); a "
                   "Python float (math.sqrt) or np.float32(c) keeps float32. At, in the order "
                   "traced (the first is where it starts):")
        out.extend(f"  {line}" for line in widened)
        out.append("")
    out.append("== passes")
    for name, g in stages[1:]:
        out.append(f"  {name:<18} -> {len(g.nodes)} nodes, {g.merged} repeated nodes merged")
    out.append("")
    out.append(f"== IR after the passes: {len(final.nodes)} nodes")
    out.append(str(final))
    out.append("")
    jit = isinstance(f, Function) and f.mode == "jit"  # (no backward)
    shared = _shared_forward_backward(final, len(final.outputs) if jit else 1)
    out.append(f"== CSE: forward values reused by the backward: {len(shared)}")
    for line in shared[:20]:
        out.append("  " + line)
    out.append("")
    out.append(f"== kernels: {len(compiled.fusion.kernels)}")
    out.append(describe_kernels(compiled.fusion))
    if compiled.fusion.notes:
        out.append("fusions refused:")
        out.extend("  " + n for n in compiled.fusion.notes)
    out.append("")
    memory = memory_report(compiled)
    out.append("== memory plan")
    out.append(describe_plan(compiled.plan))
    out.append("largest buffers:")
    out.extend(f"  {b.bytes / 1024:>10,.1f} KiB  {b.dtype}{list(b.shape)}  {b.op}  # {b.source}"
               for b in memory.largest)
    out.append("")
    out.append("== generated driver")
    out.append(compiled.program.driver_source)
    return Report("\n".join(out), memory)


def _widened(graph):
    """The source lines where the traced graph casts a float32 value to float64 (an explicit
    .astype too): a float32 model computing in float64 by NumPy's promotion rules."""
    lines = {}
    for node in graph.nodes:
        if (node.op == "astype" and node.output.dtype == np.float64
                and node.inputs[0].dtype == np.float32):
            lines.setdefault(node.source, None)
    return list(lines)


def _shared_forward_backward(graph, n_forward):
    """Forward values that the backward reads: work done once, in the forward. The forward is
    what the first `n_forward` outputs (the value; every output of a jit) are computed from; the
    backward is every other node (the gradients, and a train step's update). Constants and
    reshapes of them, which cost nothing, are left out."""
    forward = set()
    for value in graph.outputs[:n_forward]:
        forward |= _ancestors(value)
    readers = {}  # forward value id -> the backward nodes that read it
    for node in graph.nodes:
        if node.output.id not in forward:
            for x in node.inputs:
                if x.id in forward:
                    readers.setdefault(x.id, []).append(node)
    lines = []
    for node in graph.nodes:
        if node.output.id in readers and node.op not in ("const", "broadcast_to", "reshape"):
            users = readers[node.output.id]
            lines.append(f"%{node.output.id} = {node.op} ({node.source}) is read by the backward: "
                         + ", ".join(f"%{n.output.id} = {n.op}" for n in users[:4])
                         + (f" and {len(users) - 4} more" if len(users) > 4 else ""))
    return lines


def _ancestors(value):
    """The ids of the values `value` is computed from, itself included (inputs too)."""
    seen, stack = set(), [value]
    while stack:
        v = stack.pop()
        if v.id not in seen:
            seen.add(v.id)
            if v.node is not None:
                stack.extend(v.node.inputs)
    return seen
