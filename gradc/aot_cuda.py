"""`gradc compile --target cuda`: the standalone module of a CUDA-compiled signature.

The same module shape as gradc/aot.py's (header, docstring with the calling convention, the
pytree checks, a callable named after the function), with the CUDA pieces in place of the CPU
ones: the device functions and library kernels of gradc/codegen/cuda_rt.py copied verbatim,
the generated loop kernels, `launches(view)` (every launch in order, its arguments as views of
one device arena, with the user's source lines as comments), and a `Compiled` that owns the
device arena. It imports NumPy and numba.cuda only, and runs on a GPU or in Numba's simulator.

What crosses between host and device is what gradc/cuda_runtime.py does for NumPy arrays:
inputs in on every call, the outputs region back, parameters a step updates back into the
caller's arrays; a train step's optimizer state stays on the device (state_dict reads it).
"""
from __future__ import annotations

import inspect
import textwrap

import numpy as np

from . import aot
from .aot import _b64_lines, _banner, _comment_safe, _strip_docstring
from .codegen.cuda import Buf, launch_size
from .ops.elementwise import lit


def _arg(value):
    """A launch argument as source: a Buf as a view of the device arena, a scalar typed."""
    if isinstance(value, Buf):
        return f"view({value.offset}, {value.dtype.str!r}, {value.n})"
    if isinstance(value, (bool, np.bool_)):
        return repr(bool(value))
    if isinstance(value, (int, np.integer)) and not isinstance(value, np.generic):
        return repr(int(value))
    return lit(value, np.asarray(value).dtype)


class CudaGenerator(aot._Generator):
    """aot._Generator for a CudaCompiled (its program is a CudaProgram)."""

    target = "cuda"

    def _docstring(self):
        d = super()._docstring()
        cut = next(i for i, line in enumerate(d) if line.startswith("Low level:"))
        return d[:cut] + [
            "Low level: `Compiled` owns one device array of DEVICE_BYTES bytes; `launches(view)` "
            "lists the",
            "kernel launches in order, their buffers as views of it. Inputs are copied into "
            "their slots",
            "(`INPUT_SLOTS`) on each call and the outputs region (`OUTPUTS`) back; a train "
            "step's optimizer",
            "state stays on the device between steps (`state_dict` copies it back).",
            "Runs on a GPU with numba-cuda, or in Numba's simulator (NUMBA_ENABLE_CUDASIM=1)."]

    def _kernels(self):
        out = []
        for name, source in self.program.kernel_sources:
            out += [source.rstrip("\n"), "", ""]
        return out

    def _driver(self):
        out = ["def launches(view):",
               '    """The kernel launches in order: (kernel, work items, fixed block size or '
               'None, arguments);',
               '    `view(offset, dtype, n)` is n elements of dtype at a byte offset of the device '
               'arena."""',
               "    return ["]
        for launch in self.program.launches:
            out.append(f"        # {_comment_safe(launch.comment.split(' (')[0])}")
            for src in launch.sources:
                text = self.lines.text(src)
                out.append(f"        #   {src}" + (f"  {_comment_safe(text)}" if text else ""))
            items, threads = launch.size_source or (launch.total, repr(launch.threads))
            call = (f"({launch.kernel}, {items}, {threads}, ("
                    + ", ".join(_arg(a) for a in launch.args) + ",)),")
            out += textwrap.wrap(call, width=100, initial_indent=" " * 8,
                                 subsequent_indent=" " * 12, break_long_words=False,
                                 break_on_hyphens=False)
        out.append("    ]")
        out += ["", "", "# copied from gradc/codegen/cuda.py",
                inspect.getsource(launch_size).rstrip("\n")]
        return out

    def _plan(self):
        program, plan, graph = self.program, self.plan, self.graph
        out = ["# The buffer plan: one device arena holds every buffer: the plan's arena "
               "(outputs first), then",
               "# a slot per input, then small kernel constants and an error flag.",
               f"DEVICE_BYTES = {program.device_bytes}",
               f"OUTPUT_BYTES = {plan.output_bytes}  # the outputs region, copied back after each call",
               "# (byte offset, dtype, shape, data): constants copied to the device once",
               "CONSTANTS = ["]
        constants = [(plan.offsets[vid], np.ascontiguousarray(a)) for vid, a in plan.constants.items()]
        constants += [(buf.offset, np.ascontiguousarray(a)) for buf, a in program.extra]
        for offset, array in sorted(constants, key=lambda c: c[0]):
            dt = array.dtype.newbyteorder("<")
            out.append(f"    ({offset}, {dt.str!r}, {tuple(array.shape)!r}, (")
            out += _b64_lines(array.astype(dt).tobytes(), "        ")
            out.append("    )),")
        out.append("]")
        out.append("# (name, shape, dtype) of each input, in flat order")
        out.append("INPUTS = [")
        for v in graph.inputs:
            out.append(f"    ({v.name!r}, {tuple(v.shape)!r}, {v.dtype.str!r}),")
        out.append("]")
        out.append("# the byte offset of each input's slot in the device arena")
        out.append(f"INPUT_SLOTS = {[buf.offset for buf in program.input_bufs]!r}")
        n_scalars = len(self.optimizer.scalar_names) if self.mode == "train" else 0
        out.append(f"RUNTIME_SCALARS = {n_scalars}  # the last inputs: uploaded on every call")
        out.append(f"ERROR_FLAG = {program.err.offset}  # int32: which index check failed (0: none)")
        out.append(f"ERROR_SOURCES = {dict(sorted(program.err_sources.items()))!r}")
        check = program.first_in_place if (program.first_in_place or -1) >= 0 else None
        out.append(f"CHECK_BEFORE = {check!r}  # the first launch that writes an input in place: "
                   "an index error found before it raises first")
        return out + self._outputs_and_arguments("outputs region")

    def module(self):
        from .codegen import cuda_rt
        doc = "\n".join(self._docstring()).replace("{module}", self.module_name or "<this module>")
        parts = [self._header(),
                 '"""' + aot._docstring_safe(doc) + '\n"""',
                 "import base64", "import math", "import sys", "import threading", "",
                 "import numpy as np", "",
                 f"CALLING_CONVENTION = {aot.CALLING_CONVENTION}",
                 f"GRADC_VERSION = {aot.__version__!r}", "", "",
                 _banner("device functions and library kernels, copied from "
                         "gradc/codegen/cuda_rt.py"),
                 _strip_docstring(inspect.getsource(cuda_rt)).rstrip("\n"), "", "",
                 _banner("loop kernels (one per fused group)"),
                 *self._kernels(),
                 _banner("launches: the kernels in order (comments: the ops, the user's "
                         "source lines)"),
                 *self._driver(), "", "",
                 _banner("buffer plan and calling convention"),
                 *self._plan(), "", "",
                 _common(),
                 *self._callable()]
        text = "\n".join(parts).rstrip("\n") + "\n"
        text = text.replace("from gradc.codegen.cuda_rt import *", "# (cuda_rt is above)")
        if aot._top_level_names(text).count(self.name) != 1:
            raise aot.AotError(f"cannot name the generated callable {self.name!r}: the module "
                               "itself uses that name; rename the function")
        return text


def _common():
    """aot's module runtime (pytree checks, results) with the device Compiled instead of the
    host one."""
    common = aot._COMMON
    start, end = common.index("def _address(x):"), common.index("def _result(view, fresh):")
    return common[:start] + _CUDA_COMPILED + common[end:]


_CUDA_COMPILED = '''class Compiled:
    """The device arena (constants copied in once), the launches bound to views of it, and a
    host copy of the outputs region."""

    def __init__(self):
        self.device = cuda.to_device(np.zeros(max(DEVICE_BYTES, 1), np.uint8))  # padding reads 0
        self._views = {}
        for offset, dtype, shape, data in CONSTANTS:
            array = np.frombuffer(base64.b64decode("".join(data)), dtype)
            self._view(offset, dtype, array.size).copy_to_device(array)
        self.calls, self.check_at = [], None
        for i, (kernel, total, threads, args) in enumerate(launches(self._view)):
            if i == CHECK_BEFORE:
                self.check_at = len(self.calls)
            if total:
                self.calls.append((kernel[launch_size(total, SIMULATOR, threads)], args))
        self.inputs = [self._view(offset, dtype, max(int(np.prod(shape, dtype=np.int64)), 1))
                       for (_, shape, dtype), offset in zip(INPUTS, INPUT_SLOTS)]
        self.host = np.zeros(max(OUTPUT_BYTES, 1), np.uint8)
        self.outputs = [None if offset is None else self.view(offset, shape, dtype)
                        for offset, _, shape, dtype in OUTPUTS]
        self.updated = sorted(i for offset, i, _, _ in OUTPUTS if offset is None)
        self.error = self._view(ERROR_FLAG, "<i4", 1)
        self.owned = []  # the owned arrays of the last call
        self.owned_on_device = False
        self.lock = threading.Lock()

    def _view(self, offset, dtype, n):
        key = (offset, dtype, n)
        if key not in self._views:
            size = np.dtype(dtype).itemsize
            self._views[key] = self.device[offset:offset + n * size].view(np.dtype(dtype))
        return self._views[key]

    def view(self, offset, shape, dtype):
        """An output in the host copy of the outputs region."""
        dtype = np.dtype(dtype)
        n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        return self.host[offset:offset + n].view(dtype).reshape(shape)

    def _run(self, arrays, owned=()):
        """Copy the caller's arrays in, run the launches, copy the outputs region back and the
        new values of in-place outputs into the caller's arrays. `owned` (a train step's
        optimizer state, then RUNTIME_SCALARS scalars) is uploaded only when it changed."""
        for dev, x in zip(self.inputs, arrays):
            dev.copy_to_device(x.reshape(-1))
        first_scalar = len(owned) - RUNTIME_SCALARS
        for j, x in enumerate(owned):
            if j >= first_scalar or not self.owned_on_device:
                self.inputs[len(arrays) + j].copy_to_device(x.reshape(-1))
        self.owned, self.owned_on_device = list(owned), True
        for i, (kernel, args) in enumerate(self.calls):
            if i == self.check_at:  # (nothing is written in place yet)
                self._raise_index_error()
            kernel(*args)
        if ERROR_SOURCES:
            self._raise_index_error()
        if OUTPUT_BYTES:
            self.device[:OUTPUT_BYTES].copy_to_host(self.host[:OUTPUT_BYTES])
        for i in self.updated:
            if i < len(arrays):
                self.inputs[i].copy_to_host(arrays[i].reshape(-1))

    def _raise_index_error(self):
        """Raise IndexError if a launch so far found an index out of range (and clear it)."""
        code = int(self.error.copy_to_host()[0])
        if code:
            self.error.copy_to_device(np.zeros(1, np.int32))
            raise IndexError(f"index out of range in {ERROR_SOURCES[code]}")

    def _owned_changed(self):
        """The owned arrays were written on the host (load_state_dict): upload them next call."""
        self.owned_on_device = False

    def _read_owned(self):
        """Copy the owned arrays' device values (the optimizer state) into them."""
        if self.owned_on_device:
            first = len(self.inputs) - len(self.owned)
            for j, x in enumerate(self.owned[:len(self.owned) - RUNTIME_SCALARS]):
                self.inputs[first + j].copy_to_host(x.reshape(-1))


'''
