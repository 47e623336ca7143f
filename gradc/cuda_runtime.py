"""target="cuda" at run time: a compiled signature whose buffers live on the device.

What crosses between host and device on a call:
- data inputs (a batch): NumPy arrays are copied in on every call; device arrays (Numba's
  `cuda.to_device`, or anything with `__cuda_array_interface__`) are copied device to device;
- outputs that are not written in place (a loss, gradients, a jit's results) come back into
  the host arena, from which they are returned as NumPy values;
- parameters a train step updates in place: device arrays stay on the device (the step writes
  them there, so only the loss crosses to the host); NumPy parameters are copied in before the
  step and the new values back into the same arrays after it, so the arrays you hold are always
  the parameters (no stale copy to forget; pass device arrays to save those copies);
- a train step's optimizer state and the gradc-owned buffers of a step live on the device
  between steps: they cross only when the step's state is read or loaded (`state_dict`,
  `load_state_dict`) or when another compiled signature of the same step takes over.
"""
from __future__ import annotations

import numpy as np

from .capture import OUTSIDE_READS
from .errors import SignatureError
from .pytree import is_device_array
from .trace import user_source
from .executable import Compiled, reporting_index_errors


class CudaTarget:
    """target="cuda": CUDA kernels launched from Python (gradc/codegen/cuda.py), run by a
    CudaCompiled (see gradc/compile.py's CpuTarget for what a target does)."""

    def check(self):
        from .codegen.cuda import require_cuda
        require_cuda()

    def generate(self, fusion, plan, title):
        from .codegen.cuda import CudaProgram
        return CudaProgram(fusion, plan, title)

    def executable(self, lowered, out_kind, load, **fields):
        return CudaCompiled(lowered, lowered.program.load() if load else None, out_kind, **fields)


class CudaCompiled(Compiled):
    """The same interface as Compiled; `driver` is a CudaDriver (gradc/codegen/cuda.py)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        graph = self.fusion.graph
        in_place = {v.id for v in self.plan.aliases.values()}
        self.updated_inputs = [i for i, v in enumerate(graph.inputs) if v.id in in_place]
        self.owned_on_device = False  # the gradc-owned inputs (optimizer state) are current there
        if self.driver is not None:
            self.driver.upload_constants(self.arena)

    def _report_index_errors(self, report, driver_module):
        """(The launches find an index out of range: see Compiled.)"""
        self.driver.launch = reporting_index_errors(self.driver.launch, report)

    def run(self, leaves, owned=(), written=()):
        """`leaves`: the caller's arrays (host or device); `owned`: addresses of gradc's host
        buffers for the remaining inputs (optimizer state, then runtime scalars). Every input
        is copied to the device before the launches, and the new values come back after them,
        so inputs that overlap each other, the host arena or the parameters (`written`) need
        no copy here. (The uploads read the arrays from outside the arguments:
        capture.OUTSIDE_READS.)"""
        leaves = self.with_captures(leaves)
        if not self.captures.captures:
            return self._run(leaves, owned, written)
        with OUTSIDE_READS:
            return self._run(leaves, owned, written)

    def _run(self, leaves, owned, written):
        driver = self.driver
        types = self.input_types
        self.check_writable(leaves, [i for i in self.updated_inputs
                                     if i < len(leaves) and not is_device_array(leaves[i])])
        for i, x in enumerate(leaves):
            shape, dtype = types[i]
            if is_device_array(x):
                if x.dtype != dtype or tuple(x.shape) != tuple(shape):
                    raise TypeError(f"device array input {i} is {x.dtype}{tuple(x.shape)}, "
                                    f"compiled for {np.dtype(dtype)}{tuple(shape)}")
                if not _c_contiguous(x):
                    raise SignatureError(
                        f"device array input {i} ({x.dtype}{tuple(x.shape)}) is not in C order "
                        "(a strided view with gaps, x[::2], or Fortran order, d_x.T): gradc's "
                        "CUDA kernels read its memory as rows; pass a C-ordered copy "
                        "(cupy.ascontiguousarray, or to_device of np.ascontiguousarray(host))",
                        source=user_source())
                driver.upload(i, _numba_array(x, driver.cuda))
            else:
                driver.upload(i, np.ascontiguousarray(x, dtype=dtype))
        first_scalar = len(owned) - self.runtime_scalars
        for j, address in enumerate(owned):
            if j >= first_scalar or not self.owned_on_device:
                shape, dtype = types[len(leaves) + j]
                driver.upload(len(leaves) + j, _host_array(address, shape, dtype))
        self.owned_on_device = True
        driver.launch(self.arena)
        for i in self.updated_inputs:  # new parameters into the caller's arrays
            if i < len(leaves):
                x = leaves[i]
                driver.download(i, _numba_array(x, driver.cuda) if is_device_array(x) else x)
        return self.outputs

    def pull_owned(self, state_arrays, first):
        """Copy the device values of inputs `first`, `first + 1`, ... (the optimizer state) into
        their host arrays, for state_dict or a switch of signature."""
        if self.owned_on_device:
            for j, host in enumerate(state_arrays):
                self.driver.download(first + j, host)

    def forget_owned(self):
        """The host copies of the owned inputs changed (load_state_dict, or another signature
        ran): upload them again on the next call."""
        self.owned_on_device = False


def _c_contiguous(x):
    """Whether a device array's memory is its elements in C order, without gaps (Numba's own
    flags, or its __cuda_array_interface__ strides: None is C order). Fortran order is not:
    the upload's x.reshape(-1) of Numba's device array is then a view in memory order, not
    NumPy's row order (the kernels read the input transposed; the simulator's copy hid it)."""
    if hasattr(x, "is_c_contiguous"):  # (Numba's device arrays, the simulator's too)
        return x.is_c_contiguous()
    interface = x.__cuda_array_interface__
    strides, shape = interface.get("strides"), tuple(interface["shape"])
    if strides is None or 0 in shape:
        return True
    itemsize = np.dtype(interface["typestr"]).itemsize
    c_order = [itemsize * int(np.prod(shape[i + 1:], dtype=np.int64)) for i in range(len(shape))]
    used = [i for i, n in enumerate(shape) if n > 1]  # (a stride of a length-1 axis is moot)
    return all(strides[i] == c_order[i] for i in used)


def _numba_array(x, cuda):
    """A Numba device array for x (wrapping a foreign `__cuda_array_interface__` array)."""
    return x if hasattr(x, "copy_to_host") else cuda.as_cuda_array(x)


def _host_array(address, shape, dtype):
    import ctypes
    n = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    raw = np.ctypeslib.as_array(ctypes.cast(address, ctypes.POINTER(ctypes.c_uint8)), shape=(n,))
    return raw.view(dtype).reshape(shape)
