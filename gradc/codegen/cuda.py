"""CUDA code generation: `numba.cuda` kernels and a host driver, from the same Fusion and
BufferPlan as the CPU target.

- Loop kernels render the LoopNest of gradc/codegen/loops.py (the CPU renders the same one) as
  grid-stride loops over the kernel's iteration space, flattened: each thread computes the
  fused scalar expressions (each op's `scalar`, its math functions named by CudaMath: the
  device functions of gradc/codegen/cuda_math.py) for the elements it owns, loading inputs through
  their strided index maps. Sizes and strides are literals of the kernel's source.
- A short reduction (at most SHORT_REDUCTION elements per output) is a loop in the thread that
  owns the output element. A longer one is a block reduction: each block owns one output element (or a chunk of the
  elements it reduces, combined in order by a second `rows_<op>` launch when the outputs are
  too few to fill the GPU); its threads accumulate strided elements, then combine their
  accumulators as a tree in shared memory. The order is fixed, so results are deterministic
  (they differ from the CPU target's sequential sums in the last bits). Reductions over
  different axes in one fused kernel are split into one kernel per set of axes.
- Library kernels are the shape-generic kernels of cuda_rt.py, launched as each op's `cuda`
  launcher (in its gradc/ops module, beside its CPU template) says: matmul/bmm as a tiled
  shared-memory kernel for floats (one thread per output element for integers); take,
  take_along_axis, unslice, concatenate, unfold and random_uniform one thread per output
  element; the scatter-adds (take_grad, take_along_axis_grad, fold) one per input element, with
  atomics; unslice_sum one launch per term, each adding a slice in (in order: no atomics).
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
import threading

import numpy as np

from .._version import __version__
from ..errors import CompileError, GradcError
from ..ops.elementwise import CODE_DTYPE
from ..passes.memory import ALIGN, nbytes
from ..pytree import is_device_array
from .loops import NARROW, lower, wrapped_narrow
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
        from ..trace import user_source  # (the call that asked for it)
        raise CudaUnavailableError(f"target='cuda' but no CUDA GPU is available here; {hint}",
                                   source=user_source())
    return cuda


def _aligned(n):
    return (n + ALIGN - 1) // ALIGN * ALIGN


SHORT_REDUCTION = 64  # reductions of at most this many elements: a thread per output element


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
        self.sources = ()  # the user's file:line of the ops it runs
        self.size_source = None  # (work items, block size) as source, where they depend on TILE


class CudaMath:
    """CUDA's math table for the ops' scalar expressions, for one argument dtype: `m.exp` is the
    device function `cu_exp` of cuda_rt.py, or `cu_sin_f32` where cuda_rt has one per dtype."""

    def __init__(self, node):
        self.node = node
        self.code = CODE_DTYPE[np.dtype(node.inputs[0].dtype).name]

    def __getattr__(self, name):
        from . import cuda_rt
        for function in (f"cu_{name}_{self.code}", f"cu_{name}"):
            if hasattr(cuda_rt, function):
                return function
        dtype = np.dtype(self.node.inputs[0].dtype).name
        raise CompileError(f"op {self.node.op!r} uses {name} on {dtype}, "
                           f"which has no CUDA device function yet (add cu_{name} to "
                           "gradc/codegen/cuda_rt.py)", source=self.node.source)


def scalar(statement):
    """The CUDA expression of one statement of a loop nest's body."""
    node = statement.node
    text = node.opdef.scalar(CudaMath(node), node.output.dtype, *statement.args, **node.attr)
    dtype = np.dtype(node.output.dtype)
    if dtype.kind in "iu" and dtype.itemsize < 4:  # (cuda_math.wrap_u8...)
        return f"wrap_{NARROW[dtype]}({text})"
    return wrapped_narrow(text, dtype)


class _LoopWriter:
    """Source lines of one CUDA kernel over a LoopNest's collapsed loops (loop variables i0,
    i1...); `array_of` names each access's array."""

    def __init__(self, nest, array_of):
        self.nest, self.sizes, self.array_of, self.lines = nest, nest.sizes, array_of, []
        self.total = nest.total

    def line(self, depth, text):
        self.lines.append("    " * depth + text)

    def split(self, depth, var, dims):
        """Loop variables of `dims` (row-major) from the flat index `var`."""
        dims = list(dims)
        if not dims:
            return
        if len(dims) == 1:
            self.line(depth, f"i{dims[0]} = {var}")
            return
        self.line(depth, f"r = {var}")
        for k, l in enumerate(reversed(dims)):
            if k == len(dims) - 1:
                self.line(depth, f"i{l} = r")
            else:
                self.line(depth, f"i{l} = r % {self.sizes[l]}")
                self.line(depth, f"r = r // {self.sizes[l]}")

    def element(self, access):
        """`array[flat index]` of an access (sizes and strides are literals)."""
        terms = [f"i{l} * {s}" if s != 1 else f"i{l}"
                 for l, s in enumerate(access.strides) if s != 0]
        if access.offset or not terms:
            terms.insert(0, str(access.offset))
        return f"{self.array_of[id(access)]}[{' + '.join(terms)}]"

    def loads(self, depth):
        for access in self.nest.loads:
            self.line(depth, f"{access.name} = {self.element(access)}")

    def accumulate(self, loop, red, stores, reductions):
        """At depth 2: start an accumulator per reduction, then `for q in <loop>` over the
        reduced elements (dims `red`): loads, the fused work, plain stores, accumulate."""
        for j, r in enumerate(reductions):
            self.line(2, f"acc{j} = {r.identity()}")
        self.line(2, f"for q in {loop}:")
        self.split(3, "q", red)
        self.loads(3)
        self.compute(3)
        for access in stores:
            self.line(3, f"{self.element(access)} = {self.nest.stored_value(access)}")
        for j, r in enumerate(reductions):
            self.line(3, f"acc{j} = {r.combine(f'acc{j}', r.value)}")

    def compute(self, depth):
        for st in self.nest.body:
            self.line(depth, f"{st.name} = {scalar(st)}  # {st.node.op}")


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
        self.err = self.constant(np.zeros(1, np.int32))
        self.err_sources = {}  # error code -> "op at source"
        self.kernel_sources = []  # (name, source)
        self.launches = []
        # the first launch that writes an input in place (a train step's update), when launches
        # before it check indices: the driver checks for an index error there, so a step that
        # raises has written nothing (the schedule puts every index check before it)
        self.first_in_place = None
        for k in fusion.kernels:
            if self.first_in_place is None and any(v.id in plan.aliases for v in k.stores):
                self.first_in_place = len(self.launches) if self.err_sources else -1
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
    def constant(self, array):
        """A Buf holding `array`, copied to the device once."""
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
        """A fused loop kernel. Without reductions: one thread per element of the flattened
        iteration space. With reductions: a block per output element (or per chunk of its
        reduced elements, then a `rows_<op>` pass), reducing in shared memory in a fixed order,
        so results are deterministic; reductions over different axes in one fused kernel become
        one such kernel per set of axes (each recomputing the kernel's elementwise work)."""
        nest = lower(kernel, self.fusion)
        arrays, array_of = {}, {}  # base id -> (name, Buf); id(access) -> name
        for access in nest.accesses:
            base = access.base
            if base.id not in arrays:
                # (a block of a concatenation, stored with its rows' strides, spans more than
                # its own elements: passes/fuse.py block_stores)
                extent = max([base.size, 1] + [
                    1 + sum((n - 1) * s for n, s in zip(nest.sizes, a.strides))
                    for a in nest.stores if a.base is base and base.id in self.fusion.block_stores])
                arrays[base.id] = (f"a{len(arrays)}",
                                   Buf(self._base_offset(base), base.dtype, extent))
            array_of[id(access)] = arrays[base.id][0]
        # group the reductions by the loop dims they reduce over (none: a reduction of size-1
        # axes only, a copy); each group is one kernel, the last also does the plain stores:
        # the groups before it read the inputs first (a train step's update written in place
        # over a parameter that an aux reduction over other axes reads: that reduction read
        # the updated parameter when the first group stored)
        groups = {}
        for r in nest.reductions:
            groups.setdefault(r.reduced, []).append(r)
        title = nest.title() or "copy"
        shape = "x".join(str(d) for d in kernel.shape) or "scalar"
        parts = list(groups.items()) or [((), [])]
        for k, (red, reductions) in enumerate(parts):
            stores = nest.plain_stores if k == len(parts) - 1 else []
            letter = "abcdefghijklmnopqrstuvwxyz"[k] if len(parts) > 1 else ""
            name = f"k{kernel.index}{letter}_{title}"
            w = _LoopWriter(nest, array_of)
            kernel_arrays = dict(arrays)
            n_red = int(np.prod([nest.sizes[l] for l in red], dtype=np.int64))
            if red and n_red <= SHORT_REDUCTION:
                self._thread_reduction(w, stores, reductions, red)
                launches = [Launch(name, [b for _, b in kernel_arrays.values()],
                                   w.total // n_red, generated=True)]
            elif red:
                blocks, passes = self._block_reduction(w, stores, reductions, red, kernel_arrays)
                launch = Launch(name, [b for _, b in kernel_arrays.values()],
                                blocks * w.red_threads, generated=True, threads=w.red_threads)
                launch.size_source = (f"{blocks} * RED_THREADS", "RED_THREADS")
                launches = [launch] + passes
            else:
                self._flat(w, stores, [r.access for r in reductions])
                launches = [Launch(name, [b for _, b in kernel_arrays.values()], w.total,
                                   generated=True)]
            params = [n for n, _ in kernel_arrays.values()]
            source = "@cuda.jit\n" + f"def {name}({', '.join(params)}):\n" + "\n".join(w.lines) + "\n"
            self.kernel_sources.append((name, source))
            for launch in launches:
                if launch.generated:
                    ops = ", ".join(dict.fromkeys(nest.ops))
                    launch.comment = f"{kernel.name}: {ops} over [{shape}]"
                launch.sources = tuple(dict.fromkeys(n.source for n in kernel.nodes))
            self.launches += launches

    def _flat(self, w, stores, copies):
        """One thread per element of the flattened iteration space (`copies`: reductions of
        size-1 axes only, stored as copies)."""
        w.line(1, f"for e in range(cuda.grid(1), {w.total}, cuda.gridsize(1)):")
        w.split(2, "e", range(len(w.sizes)))
        w.loads(2)
        w.compute(2)
        for access in stores + copies:
            w.line(2, f"{w.element(access)} = {w.nest.stored_value(access)}  # {access.node.op}")

    def _thread_reduction(self, w, stores, reductions, red):
        """A short reduction: one thread per output element loops over what it reduces."""
        kept = [l for l in range(len(w.sizes)) if l not in red]
        n_out = w.total // int(np.prod([w.sizes[l] for l in red], dtype=np.int64))
        w.line(1, f"for o in range(cuda.grid(1), {n_out}, cuda.gridsize(1)):")
        w.split(2, "o", kept)
        w.accumulate(f"range({w.total // n_out})", red, stores, reductions)
        for j, r in enumerate(reductions):
            w.line(2, f"{w.element(r.access)} = acc{j}  # {r.op}")

    def _block_reduction(self, w, stores, reductions, red, arrays):
        """Block `b` reduces chunk `b % chunks` of output element `b // chunks`: its threads
        stride over the chunk, then combine their accumulators in shared memory. Returns
        (blocks, the launches of the second pass that combines chunks)."""
        from .cuda_rt import RED_THREADS
        w.red_threads = RED_THREADS
        kept = [l for l in range(len(w.sizes)) if l not in red]
        n_out = int(np.prod([w.sizes[l] for l in kept], dtype=np.int64))
        n_red = int(np.prod([w.sizes[l] for l in red], dtype=np.int64))
        # chunks: enough blocks to fill a GPU, each thread still summing a few elements
        chunks = max(1, min(-(-n_red // (4 * 128)), -(-512 // n_out)))
        chunk = -(-n_red // chunks)
        chunks = -(-n_red // chunk)
        passes = []
        for j, r in enumerate(reductions):
            v = r.node.output
            w.line(1, f"sh{j} = cuda.shared.array(RED_THREADS, {CODE_DTYPE[v.dtype.name]})"
                      f"  # {r.op}")
            if chunks > 1:
                partial = Buf(self._cursor, v.dtype, n_out * chunks)
                self._cursor += _aligned(n_out * chunks * v.dtype.itemsize)
                arrays[("partial", j)] = (f"p{j}", partial)
                passes.append(Launch(f"rows_{r.op}", [arrays[v.id][1], partial, n_out, chunks],
                                     n_out, comment=f"{r.op}: combine {chunks} chunks"))
        w.line(1, "t = cuda.threadIdx.x")
        w.line(1, f"for b in range(cuda.blockIdx.x, {n_out * chunks}, cuda.gridDim.x):")
        if chunks > 1:
            w.line(2, f"o = b // {chunks}")
            w.line(2, f"start = (b - o * {chunks}) * {chunk}")
            # (no builtin min: Numba's own CUDA target fails to type it)
            w.line(2, f"stop = start + {chunk} if start + {chunk} < {n_red} else {n_red}")
            stop = "stop"
        else:
            w.line(2, "o = b")
            w.line(2, "start = 0")
            stop = str(n_red)
        w.split(2, "o", kept)
        w.accumulate(f"range(start + t, {stop}, RED_THREADS)", red, stores, reductions)
        for j, _ in enumerate(reductions):
            w.line(2, f"sh{j}[t] = acc{j}")
        w.line(2, "cuda.syncthreads()")
        w.line(2, "s = RED_THREADS // 2")
        w.line(2, "while s > 0:  # a tree over the block's accumulators, in a fixed order")
        w.line(3, "if t < s:")
        for j, r in enumerate(reductions):
            w.line(4, f"sh{j}[t] = {r.combine(f'sh{j}[t]', f'sh{j}[t + s]')}")
        w.line(3, "cuda.syncthreads()")
        w.line(3, "s //= 2")
        w.line(2, "if t == 0:")
        for j, r in enumerate(reductions):
            target = f"p{j}[b]" if chunks > 1 else w.element(r.access)
            w.line(3, f"{target} = sh{j}[0]  # {r.op}")
        w.line(2, "cuda.syncthreads()  # (the next output reuses the shared arrays)")
        return n_out * chunks, passes

    # --- library kernels -------------------------------------------------------------------
    def _library(self, kernel):
        (node,) = kernel.nodes
        emitter = node.opdef.cuda
        if emitter is None:
            raise CompileError(f"op {node.op!r} has no CUDA kernel yet (target='cuda'); use "
                               "target='cpu' for this function", source=node.source)
        out = self._view(node.output)
        ins = [self._view(x) for x in node.inputs]
        for launch in emitter(self, node, out, ins):
            launch.comment = launch.comment or f"{kernel.name}: {node.op} ({node.source})"
            launch.sources = (node.source,)
            self.launches.append(launch)

    # what the ops' `cuda` launchers (gradc/ops/*) build with
    def launch(self, kernel, args, total, threads=None):
        """A launch of cuda_rt's `kernel`."""
        return Launch(kernel, args, total, threads=threads)

    def fill_zero(self, out, node):
        """A launch that zeroes `out` (before a scatter-add)."""
        return Launch("fill", [out, out.n, self.zero(node)], out.n)

    @staticmethod
    def zero(node):
        """A zero of the node's output dtype, as a kernel argument."""
        return np.zeros((), node.output.dtype)[()]

    def error_code(self, node):
        code = len(self.err_sources) + 1
        op = node.op.removesuffix("_grad")  # (the user wrote the gather: its scatter-add in
        self.err_sources[code] = f"{op} at {node.source}"  # the backward checks the same indices)
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

    @property
    def driver_source(self):
        """What `gradc explain` shows: the launches in order, then the loop kernels' module."""
        return "# launches, in order: kernel[work items]  # what it computes\n" + \
            self.describe() + "\n\n" + self.module_source


_SIMULATED = threading.Lock()  # (Numba's simulator: "concurrent simulated kernel not supported")


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
        simulator = self.simulated = bool(config.ENABLE_CUDASIM)
        # zeroed once: the alignment padding between outputs is copied back with them and must
        # read as zero (gradc.distributed allreduces the region, padding and all)
        self.arena = cuda.to_device(np.zeros(max(program.device_bytes, 1), np.uint8))
        views = {}

        def view(buf):
            key = buf.key()
            if key not in views:
                end = buf.offset + buf.n * buf.dtype.itemsize
                views[key] = self.arena[buf.offset:end].view(buf.dtype)
            return views[key]

        self.view = view
        self.calls = []
        self.check_at = None  # index in calls before which launch() checks for an index error
        for i, (launch, fn) in enumerate(zip(program.launches, kernels)):
            if i == program.first_in_place:
                self.check_at = len(self.calls)
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
        elif x.flags.c_contiguous:
            self.inputs[i].copy_to_host(x.reshape(-1))
            self.copied[1] += x.nbytes
        else:  # (a view with gaps: reshape would copy, and the copy would take the values)
            x[...] = self.inputs[i].copy_to_host().reshape(x.shape)
            self.copied[1] += x.nbytes

    def launch(self, host_arena):
        """Run every kernel in order, then copy the outputs region (the values that are not
        written in place: a loss, gradients, a jit's results) into the host arena. Under the
        simulator, one thread's launches at a time (it cannot run two kernels at once)."""
        if not self.simulated:
            return self._launch(host_arena)
        with _SIMULATED:
            return self._launch(host_arena)

    def _launch(self, host_arena):
        for i, (kernel, args) in enumerate(self.calls):
            if i == self.check_at:
                self._raise_index_error()
            kernel(*args)
        if self.outputs_region is not None:
            self.outputs_region.copy_to_host(host_arena[:self.program.plan.output_bytes])
            self.copied[1] += self.program.plan.output_bytes
        if self.checks_errors:
            self._raise_index_error()

    def _raise_index_error(self):
        """Raise IndexError if a launch so far found an index out of range (and clear it)."""
        self.err.copy_to_host(self._err_host)
        code = int(self._err_host[0])
        if code:
            self.err.copy_to_device(np.zeros(1, np.int32))
            raise IndexError(f"gradc: index out of range in {self.program.err_sources[code]}")


def kernel_ptx(program, cc=None):
    """[(kernel name, PTX)] of every kernel a program launches, compiled for the argument types
    of its launch and compute capability `cc` (default: the GPU's, or (9, 0) where there is
    none: the CUDA compiler, NVVM, is needed, not a GPU; not under the simulator)."""
    from numba import cuda
    try:
        device_cc = cuda.get_current_device().compute_capability
    except Exception:  # noqa: BLE001 - no driver or no GPU: compile for an H100/H200
        with _no_device(cc or (9, 0)):
            return _kernel_ptx(program, cc or (9, 0))
    return _kernel_ptx(program, cc or device_cc)


class _no_device:
    """numba-cuda compiles the device functions a kernel calls for the current GPU's compute
    capability even inside `compile_ptx(cc=...)`; without a GPU, say it is `cc` meanwhile."""

    def __init__(self, cc):
        self.cc = cc

    def __enter__(self):
        import types as pytypes

        from numba.cuda import dispatcher
        self.module, self.saved = dispatcher, getattr(dispatcher, "get_current_device", None)
        if self.saved is not None:
            dispatcher.get_current_device = lambda: pytypes.SimpleNamespace(compute_capability=self.cc)

    def __exit__(self, *exc):
        if self.saved is not None:
            self.module.get_current_device = self.saved


def _kernel_ptx(program, cc):
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
        ptx, _ = cuda.compile_ptx(fn.py_func, sig, cc=cc)
        out.append((launch.kernel, ptx))
    return out
