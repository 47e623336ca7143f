"""CUDA code generation: `numba.cuda` kernels and a host driver, from the same Fusion and
BufferPlan as the CPU target.

- Loop kernels are grid-stride loops over the kernel's iteration space, flattened: each thread
  computes the fused scalar expressions (each op's `scalar`, with `np.*` math mapped to the
  device functions of gradc/codegen/cuda_rt.py) for the elements it owns, loading inputs through
  their strided index maps. Sizes and strides are literals of the kernel's source.
- A reduction accumulates straight into its output with `cuda.atomic.add` / `max` / `min`; a
  `fill` launch before the kernel sets the output to the reduction's identity (0, -inf, +inf).
  Float sums are therefore in a non-deterministic order (results differ from the CPU target in
  the last bits, and from run to run).
- Library kernels are the shape-generic kernels of cuda_rt.py: matmul/bmm as a tiled
  shared-memory kernel for floats (one thread per output element for integers); take,
  take_along_axis, unslice, concatenate and unfold one thread per output element; the
  scatter-adds (take_grad, take_along_axis_grad, fold) one per input element, with atomics.
- Every buffer lives in ONE device array allocated when the signature is compiled: the plan's
  arena (outputs, constants, scratch), then a slot per graph input, then small kernel constants
  and an error flag. The driver copies inputs into their slots, launches the kernels in order,
  and copies back the outputs region; what crosses when is decided by gradc/cuda_runtime.py
  (a train step's optimizer state stays on the device, device-array parameters too).

Importing this module does not import numba.cuda; `require_cuda` does, and says what to install
or set when there is no CUDA.
"""
from __future__ import annotations

import math
import re

import numpy as np

from .. import __version__
from ..errors import CompileError, GradcError
from ..ops.conv import _geometry, _window
from ..ops.elementwise import CODE_DTYPE, lit
from ..ops.indexing import _fold
from ..ops.linalg import _dims
from ..ops.movement import contiguous_strides
from ..ops.reduction import identity
from ..ops.registry import REDUCE
from ..passes.memory import ALIGN, nbytes
from ..pytree import is_device_array
from .cpu import _collapse
from .modules import content_name, load_module


class CudaUnavailableError(GradcError):
    """target='cuda' where Numba's CUDA target has no GPU (and the simulator is off)."""


def require_cuda():
    """numba.cuda, or CudaUnavailableError saying how to get it."""
    hint = ("install Numba's CUDA target with `pip install numba-cuda` (or `pip install -e '.[cuda]'`) "
            "on a machine with an NVIDIA GPU and driver, or set NUMBA_ENABLE_CUDASIM=1 before "
            "Python starts to run the CUDA kernels in Numba's (slow) CUDA simulator")
    try:
        from numba import config, cuda
    except ImportError as e:  # pragma: no cover - numba without its CUDA package
        raise CudaUnavailableError(f"target='cuda': numba.cuda cannot be imported ({e}); {hint}") from None
    if config.ENABLE_CUDASIM:
        return cuda
    try:
        available = cuda.is_available()
    except Exception:  # noqa: BLE001 - a broken driver or toolkit
        available = False
    if not available:
        raise CudaUnavailableError(f"target='cuda' but no CUDA GPU is available here; {hint}")
    return cuda


def _aligned(n):
    return (n + ALIGN - 1) // ALIGN * ALIGN


ATOMIC = {"sum": "add", "max": "max", "min": "min"}
ATOMIC_DTYPES = ("float32", "float64", "int32", "int64")
PER_DTYPE = ("floor", "ceil", "sign")  # device functions that keep their argument's dtype


class Buf:
    """A typed, flat view of the device arena: `n` elements of `dtype` from byte `offset`."""
    __slots__ = ("offset", "dtype", "n")

    def __init__(self, offset, dtype, n):
        self.offset, self.dtype, self.n = int(offset), np.dtype(dtype), int(n)

    def key(self):
        return (self.offset, self.dtype.str, self.n)


class Launch:
    """One kernel launch: `kernel` names a generated kernel or a cuda_rt kernel; `args` are Bufs
    and scalars; `total` is the number of work items (for the launch size)."""

    def __init__(self, kernel, args, total, generated=False, comment="", threads=None):
        self.kernel, self.args, self.total = kernel, args, int(total)
        self.generated, self.comment = generated, comment
        self.threads = threads  # a fixed block size (the tiled matmul's TILE x TILE)


def _cuda_expr(node, expr):
    """An op's CPU scalar expression with `np.*` mapped to cuda_rt's device functions."""
    from . import cuda_rt

    def sub(m):
        name = m.group(1)
        if name in ("nan", "inf"):
            return f"cu_{name}"
        if name in PER_DTYPE:
            name = f"{name}_{CODE_DTYPE[np.dtype(node.inputs[0].dtype).name]}"
        if not hasattr(cuda_rt, f"cu_{name}"):
            raise CompileError(f"op {node.op!r} uses np.{m.group(1)}, which has no CUDA device "
                               "function yet (gradc/codegen/cuda_rt.py)", source=node.source)
        return f"cu_{name}"

    return re.sub(r"\bnp\.(\w+)", sub, expr)


class CudaProgram:
    """The launches of one compiled signature and the module source of its loop kernels."""

    def __init__(self, fusion, plan, title):
        self.fusion, self.plan, self.title = fusion, plan, title
        graph = fusion.graph
        cursor = _aligned(plan.arena_bytes)
        self.input_bufs = []  # a device slot per graph input
        self.input_slot = {}
        for v in graph.inputs:
            self.input_bufs.append(Buf(cursor, v.dtype, max(v.size, 1)))
            self.input_slot[v.id] = cursor
            cursor += _aligned(max(nbytes(v), 1))
        self.extra = []  # (Buf, array) kernel constants copied in once
        self._cursor = cursor
        self.err = self._constant(np.zeros(1, np.int32))
        self.err_sources = {}  # error code -> "op at source"
        self.kernel_sources = []  # (name, source)
        self.launches = []
        for k in fusion.kernels:
            if k.kind == "loop":
                self._loop(k)
            else:
                self._library(k)
        self.device_bytes = self._cursor
        self.module_source = (
            f'"""Generated by gradc {__version__}: CUDA loop kernels of {title}."""\n'
            "from numba import cuda\n\n"
            "from gradc.codegen.cuda_rt import *  # noqa: F401,F403  (typed literals, device functions)\n\n\n"
            + "\n\n".join(src for _, src in self.kernel_sources))
        self.module_name = content_name("gradc_cuda", self.module_source)

    # --- buffers ---------------------------------------------------------------------------
    def _constant(self, array):
        array = np.ascontiguousarray(array)
        buf = Buf(self._cursor, array.dtype, array.size)
        self.extra.append((buf, array))
        self._cursor += _aligned(array.nbytes)
        return buf

    def _base_offset(self, base):
        """Byte offset of a stored value's buffer (an in-place output: its input's slot)."""
        base = self.plan.aliases.get(base.id, base)
        if base.id in self.input_slot:
            return self.input_slot[base.id]
        return self.plan.offsets[base.id]

    def _view(self, v):
        """A library kernel's operand: contiguous, possibly at an offset of its base."""
        base, offset, _ = self.fusion.layouts[v.id]
        return Buf(self._base_offset(base) + offset * base.dtype.itemsize, v.dtype, v.size)

    # --- loop kernels ----------------------------------------------------------------------
    def _loop(self, kernel):
        fusion = self.fusion
        arrays = {}  # base id -> (name, Buf)
        local = {}
        loads = {}  # (array, offset, strides) -> local name
        accesses = []  # [array, offset, strides, role, payload]
        body = []
        counter = iter(range(10 ** 6))

        def array_for(base):
            if base.id not in arrays:
                arrays[base.id] = (f"a{len(arrays)}",
                                   Buf(self._base_offset(base), base.dtype, max(base.size, 1)))
            return arrays[base.id][0]

        for node in kernel.nodes:
            for x in node.inputs:
                if x.id in local:
                    continue
                base, offset, strides = fusion.layouts[x.id]
                if base.node is not None and base.node.op == "const":
                    local[x.id] = lit(base.node.attr["value"], x.dtype)
                    continue
                arr = array_for(base)
                key = (arr, offset, tuple(strides))
                if key not in loads:
                    loads[key] = f"t{next(counter)}"
                    accesses.append([arr, offset, tuple(strides), "load", loads[key]])
                local[x.id] = loads[key]
            name = f"t{next(counter)}"
            local[node.output.id] = name
            body.append((node, name))

        fills = []
        stored = {v.id for v in kernel.stores}
        for node in kernel.nodes:
            v = node.output
            if v.id not in stored:
                continue
            arr = array_for(v)
            if node.opdef.kind == REDUCE:
                if v.dtype.name not in ATOMIC_DTYPES:
                    raise CompileError(f"{node.op} of {v.dtype.name} values has no CUDA kernel "
                                       "(atomics take float32/64 and int32/64); cast first",
                                       source=node.source)
                strides = tuple(0 if d in node.attr["axes"] else s
                                for d, s in enumerate(contiguous_strides(v.shape)))
                start = np.array(identity(node.op, v.dtype), v.dtype)[()]
                fills.append(Launch("fill", [arrays[v.id][1], v.size, start], v.size,
                                    comment=f"{node.op} identity"))
            else:
                strides = contiguous_strides(kernel.shape)
            accesses.append([arr, 0, strides, "store", node])

        sizes, collapsed = _collapse(kernel.shape, [a[2] for a in accesses])
        loopvars = [f"i{l}" for l in range(len(sizes))]

        def index(offset, strides):
            terms = [f"{i} * {s}" if s != 1 else i for i, s in zip(loopvars, strides) if s != 0]
            if offset or not terms:
                terms.insert(0, str(offset))
            return " + ".join(terms)

        total = int(np.prod(sizes, dtype=np.int64)) if sizes else 1
        lines = [f"    for e in range(cuda.grid(1), {total}, cuda.gridsize(1)):"]
        emit = lambda text: lines.append("        " + text)  # noqa: E731
        if sizes:
            emit("r = e")
            for l in reversed(range(len(sizes))):
                if l == 0:
                    emit(f"{loopvars[l]} = r")
                else:
                    emit(f"{loopvars[l]} = r % {sizes[l]}")
                    emit(f"r = r // {sizes[l]}")
        for acc, cs in zip(accesses, collapsed):
            if acc[3] == "load":
                emit(f"{acc[4]} = {acc[0]}[{index(acc[1], cs)}]")
        for node, name in body:
            if node.opdef.kind == REDUCE:
                continue
            expr = node.opdef.scalar(node.output.dtype, *[local[x.id] for x in node.inputs], **node.attr)
            emit(f"{name} = {_cuda_expr(node, expr)}  # {node.op}")
        for acc, cs in zip(accesses, collapsed):
            if acc[3] != "store":
                continue
            node = acc[4]
            where = index(acc[1], cs)
            if node.opdef.kind == REDUCE:
                code = CODE_DTYPE[node.output.dtype.name]
                emit(f"cuda.atomic.{ATOMIC[node.op]}({acc[0]}, {where}, "
                     f"{code}({local[node.inputs[0].id]}))  # {node.op}")
            else:
                emit(f"{acc[0]}[{where}] = {local[node.output.id]}")

        ops = [n.op for n, _ in body]
        title = "_".join(dict.fromkeys(o for o in ops if o not in ("copy", "alias")))[:40].rstrip("_")
        name = f"k{kernel.index}_{title or 'copy'}"
        params = [n for n, _ in arrays.values()]
        source = "@cuda.jit\n" + f"def {name}({', '.join(params)}):\n" + "\n".join(lines) + "\n"
        self.kernel_sources.append((name, source))
        shape = "x".join(str(d) for d in kernel.shape) or "scalar"
        self.launches += fills
        self.launches.append(Launch(name, [b for _, b in arrays.values()], total, generated=True,
                                    comment=f"{kernel.name}: {', '.join(dict.fromkeys(ops))} over [{shape}]"))

    # --- library kernels -------------------------------------------------------------------
    def _library(self, kernel):
        (node,) = kernel.nodes
        emitter = LIBRARY.get(node.op)
        if emitter is None:
            raise CompileError(f"op {node.op!r} has no CUDA kernel yet (target='cuda'); use "
                               "target='cpu' for this function", source=node.source)
        out = self._view(node.output)
        ins = [self._view(x) for x in node.inputs]
        for launch in emitter(self, node, out, ins):
            launch.comment = launch.comment or f"{kernel.name}: {node.op} ({node.source})"
            self.launches.append(launch)

    def error_code(self, node):
        code = len(self.err_sources) + 1
        self.err_sources[code] = f"{node.op} at {node.source}"
        return code

    # --- loading ---------------------------------------------------------------------------
    def load(self):
        """Numba-load the loop kernels; returns a CudaDriver (allocates nothing yet)."""
        cuda = require_cuda()
        from . import cuda_rt
        module = load_module(self.module_name, self.module_source) if self.kernel_sources else None
        kernels = []
        for launch in self.launches:
            fn = getattr(module, launch.kernel) if launch.generated else getattr(cuda_rt, launch.kernel)
            kernels.append(fn)
        return CudaDriver(self, kernels, cuda)

    def describe(self):
        return "\n".join(f"{l.kernel}[{l.total}]  # {l.comment}" for l in self.launches)


# threads per block, and the most blocks a launch uses (grid-stride loops cover the rest); the
# simulator runs every thread as a Python thread, so it gets small launches
def launch_size(total, simulator, threads=None):
    default, max_blocks = (32, 2) if simulator else (256, 4096)
    threads = threads or default
    return max(1, min(max_blocks, math.ceil(total / threads))), threads


class CudaDriver:
    """The device arena of one signature and the launches, bound to views of it."""

    def __init__(self, program, kernels, cuda):
        self.program, self.cuda = program, cuda
        from numba import config
        simulator = bool(config.ENABLE_CUDASIM)
        self.arena = cuda.device_array(max(program.device_bytes, 1), np.uint8)
        views = {}

        def view(buf):
            key = buf.key()
            if key not in views:
                end = buf.offset + buf.n * buf.dtype.itemsize
                views[key] = self.arena[buf.offset:end].view(buf.dtype)
            return views[key]

        self.view = view
        self.calls = []
        for launch, fn in zip(program.launches, kernels):
            if launch.total == 0:
                continue
            args = tuple(view(a) if isinstance(a, Buf) else a for a in launch.args)
            self.calls.append((fn[launch_size(launch.total, simulator, launch.threads)], args))
        self.inputs = [view(b) for b in program.input_bufs]
        for buf, array in program.extra:
            view(buf).copy_to_device(array.reshape(-1))
        plan = program.plan
        self.outputs_region = self.arena[:plan.output_bytes] if plan.output_bytes else None
        self.err = view(program.err)
        self.checks_errors = bool(program.err_sources)
        self._err_host = np.zeros(1, np.int32)
        self.copied = [0, 0]  # bytes copied host to device, device to host (over all calls)

    def upload_constants(self, host_arena):
        """Copy the plan's constants (laid out in the host arena by Compiled) to the device."""
        plan = self.program.plan
        if plan.constant_bytes:
            lo, hi = plan.output_bytes, plan.output_bytes + plan.constant_bytes
            self.arena[lo:hi].copy_to_device(host_arena[lo:hi])

    def upload(self, i, x):
        """Input i's values from a host array (C-contiguous, its dtype) or a device array."""
        self.inputs[i].copy_to_device(x.reshape(-1))
        if not is_device_array(x):
            self.copied[0] += x.nbytes

    def download(self, i, x):
        """Input i's device values (after a step: the new values of an in-place output) into
        the host or device array x."""
        if is_device_array(x):
            x.reshape(-1).copy_to_device(self.inputs[i])
        else:
            self.inputs[i].copy_to_host(x.reshape(-1))
            self.copied[1] += x.nbytes

    def launch(self, host_arena):
        """Run every kernel in order, then copy the outputs region (the values that are not
        written in place: a loss, gradients, a jit's results) into the host arena."""
        for kernel, args in self.calls:
            kernel(*args)
        if self.outputs_region is not None:
            self.outputs_region.copy_to_host(host_arena[:self.program.plan.output_bytes])
            self.copied[1] += self.program.plan.output_bytes
        if self.checks_errors:
            self.err.copy_to_host(self._err_host)
            code = int(self._err_host[0])
            if code:
                self.err.copy_to_device(np.zeros(1, np.int32))
                raise IndexError(f"gradc: index out of range in {self.program.err_sources[code]}")


# ---------------------------------------------------------------------------------------------
# library kernels: (program, node, out Buf, input Bufs) -> [Launch]

def _zero(node):
    return np.zeros((), node.output.dtype)[()]


def _fill_zero(out, node):
    return Launch("fill", [out, out.n, _zero(node)], out.n)


def _matmul(prog, node, out, ins):
    a, b = node.inputs
    ta, tb = bool(node.attr["ta"]), bool(node.attr["tb"])
    if node.op == "bmm":
        batch = a.shape[0]
        m, k, n = _dims(a.shape[1:], b.shape[1:], ta, tb)
        steps = (a.shape[1] * a.shape[2], b.shape[1] * b.shape[2])
    else:
        batch = 1
        m, k, n = _dims(a.shape, b.shape, ta, tb)
        steps = (0, 0)
    args = [out, ins[0], ins[1], batch, m, n, k, ta, tb, *steps, _zero(node)]
    dtype = node.output.dtype.name
    if dtype in ("float32", "float64"):  # shared-memory tiles (cuda_rt.matmul_tiled_*)
        from .cuda_rt import TILE
        tiles = batch * -(-m // TILE) * -(-n // TILE)
        return [Launch(f"matmul_tiled_{CODE_DTYPE[dtype]}", args, tiles * TILE * TILE,
                       threads=TILE * TILE)]
    return [Launch("matmul", args, batch * m * n)]


def _gather(prog, node, out, ins):
    x, idx = node.inputs
    axis = node.attr["axis"]
    scatter = node.op.endswith("_grad")
    outer, n, inner = _fold(node.output.shape if scatter else x.shape, axis)
    if node.op in ("take", "take_grad"):
        m = idx.size
    else:
        m = idx.shape[axis]
    launches = [_fill_zero(out, node)] if scatter else []
    launches.append(Launch(node.op, [out, ins[0], ins[1], outer, n, inner, m, prog.err,
                                     prog.error_code(node)], outer * m * inner))
    return launches


def _unslice(prog, node, out, ins):
    g = node.inputs[0]
    starts, steps = node.attr["starts"], node.attr["steps"]
    strides = contiguous_strides(node.attr["shape"])
    offset = sum(a * s for a, s in zip(starts, strides))
    shape = prog._constant(np.array(g.shape or (1,), np.int64))
    dst = prog._constant(np.array([s * st for s, st in zip(strides, steps)] or [0], np.int64))
    return [_fill_zero(out, node), Launch("unslice", [out, ins[0], g.size, shape, dst, offset], g.size)]


def _concatenate(prog, node, out, ins):
    axis = node.attr["axis"]
    outer = int(np.prod(node.output.shape[:axis], dtype=np.int64))
    row = int(np.prod(node.output.shape[axis:], dtype=np.int64))
    launches, col = [], 0
    for x, buf in zip(node.inputs, ins):
        width = int(np.prod(x.shape[axis:], dtype=np.int64))
        launches.append(Launch("copy_rows", [out, buf, outer, width, row, col], outer * width))
        col += width
    return launches


def _windows(prog, node, out, ins):
    window = _window(node.attr)
    x_shape = node.inputs[0].shape if node.op == "unfold" else node.attr["x_shape"]
    n, c, h, w, oh, ow = _geometry(x_shape, *window)
    size = n * oh * ow * c * window[0] * window[1]
    geometry = [c, h, w, oh, ow, *window]
    if node.op == "unfold":
        pad = np.array(node.attr["pad"], node.output.dtype)[()]
        return [Launch("unfold", [out, ins[0], size, *geometry, pad], size)]
    return [_fill_zero(out, node), Launch("fold", [out, ins[0], size, *geometry], size)]


LIBRARY = {
    "matmul": _matmul, "bmm": _matmul,
    "take": _gather, "take_grad": _gather,
    "take_along_axis": _gather, "take_along_axis_grad": _gather,
    "unslice": _unslice, "concatenate": _concatenate,
    "unfold": _windows, "fold": _windows,
}


def kernel_ptx(program):
    """[(kernel name, PTX)] of every kernel a program launches, compiled for the argument types
    of its launch (needs the CUDA compiler: not under the simulator)."""
    from numba import cuda, from_dtype, types

    from . import cuda_rt

    def typeof(arg):
        if isinstance(arg, Buf):
            return types.Array(from_dtype(arg.dtype), 1, "C")
        if isinstance(arg, (bool, np.bool_)):
            return types.boolean
        if isinstance(arg, int):
            return types.int64
        return from_dtype(np.asarray(arg).dtype)

    module = load_module(program.module_name, program.module_source) if program.kernel_sources else None
    out, seen = [], set()
    for launch in program.launches:
        fn = getattr(module, launch.kernel) if launch.generated else getattr(cuda_rt, launch.kernel)
        sig = tuple(typeof(a) for a in launch.args)
        if (launch.kernel, sig) in seen:
            continue
        seen.add((launch.kernel, sig))
        ptx, _ = cuda.compile_ptx(fn.py_func, sig)
        out.append((launch.kernel, ptx))
    return out
