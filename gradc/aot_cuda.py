"""`gradc compile --target cuda`: the standalone module of a CUDA-compiled signature.

The same module shape as gradc/aot.py's (header, docstring with the calling convention, the pytree
checks, a callable named after the function), with the CUDA pieces in place of the CPU ones: the
device functions and library kernels of gradc/codegen/cuda_math.py and cuda_rt.py copied verbatim,
the generated loop kernels, `launches(view)` (every launch in order, its arguments as views of one
device arena, with the user's source lines as comments), and a `Compiled` that owns the device
arena. It imports NumPy and numba.cuda only, and runs on a GPU or in Numba's simulator.

What crosses between host and device is what gradc/cuda_runtime.py does for NumPy arrays:
inputs in on every call, the outputs region back, parameters a step updates back into the
caller's arrays; a train step's optimizer state stays on the device (state_dict reads it).
"""
from __future__ import annotations

import inspect
import textwrap

import numpy as np

from . import aot
from ._version import __version__
from .aot_text import (banner, comment_safe, constants_table, docstring_safe,
                       special_math_source, strip_docstring)
from .codegen.cuda import Buf, launch_size
from .ops.elementwise import lit
from .standalone import device


def _arg(value):
    """A launch argument as source: a Buf as a view of the device arena, a scalar typed."""
    if isinstance(value, Buf):
        return f"view({value.offset}, {value.dtype.str!r}, {value.n})"
    if isinstance(value, (bool, np.bool_)):
        return repr(bool(value))
    if isinstance(value, (int, np.integer)) and not isinstance(value, np.generic):
        return repr(int(value))
    return lit(value, np.asarray(value).dtype)


class CudaGenerator(aot.Generator):
    """aot.Generator for a CudaCompiled (its program is a CudaProgram)."""

    target = "cuda"
    executable = device  # the device Compiled in place of the host one

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
            out.append(f"        # {comment_safe(launch.comment.split(' (')[0])}")
            for src in launch.sources:
                text = self.lines.text(src)
                out.append(f"        #   {src}" + (f"  {comment_safe(text)}" if text else ""))
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
        out += constants_table([(plan.offsets[vid], a) for vid, a in plan.constants.items()]
                               + [(buf.offset, a) for buf, a in program.extra])
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
        from .codegen import cuda_math, cuda_rt
        doc = "\n".join(self._docstring()).replace("{module}", self.module_name or "<this module>")
        parts = [self._header(),
                 '"""' + docstring_safe(doc) + '\n"""',
                 "import base64", "import math", "import os", "import sys", "import threading",
                 "import weakref", "",
                 "import numpy as np", "",
                 f"CALLING_CONVENTION = {aot.CALLING_CONVENTION}",
                 f"GRADC_VERSION = {__version__!r}", "", "",
                 banner("special functions, copied from gradc/codegen/special_math.py"),
                 special_math_source().rstrip("\n"), "", "",
                 banner("device functions, copied from gradc/codegen/cuda_math.py"),
                 strip_docstring(inspect.getsource(cuda_math)).rstrip("\n"), "", "",
                 banner("library kernels, copied from gradc/codegen/cuda_rt.py"),
                 strip_docstring(inspect.getsource(cuda_rt)).rstrip("\n"), "", "",
                 banner("loop kernels (one per fused group)"),
                 *self._kernels(),
                 banner("launches: the kernels in order (comments: the ops, the user's "
                         "source lines)"),
                 *self._driver(), "", "",
                 banner("buffer plan and calling convention"),
                 *self._plan(), "", "",
                 *self._calling()]
        text = "\n".join(parts).rstrip("\n") + "\n"
        for above in ("cuda_rt", "cuda_math"):
            text = text.replace(f"from gradc.codegen.{above} import *", f"# ({above} is above)")
        text = text.replace("from gradc.codegen.cuda_math import SIMULATOR\n", "")
        for name in ("FUNCTIONS as SPECIAL_FUNCTIONS", "compiled as _compiled_special"):
            text = text.replace(f"from gradc.codegen.special_math import {name}  # noqa: E402",
                                f"{name.split()[-1]} = {name.split()[0]}  # (special_math is above)")
        return self._checked(text)
