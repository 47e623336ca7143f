"""A standalone module's CUDA executable: one device arena holding every buffer (constants
copied in once), the kernel launches bound to views of it, and a host copy of the outputs region.

Copied verbatim (from the first definition on) into every CUDA module `gradc compile --target
cuda` writes, in place of gradc/standalone/host.py, after what it reads: DEVICE_BYTES,
CONSTANTS, INPUTS, INPUT_SLOTS, OUTPUT_BYTES, OUTPUTS, ERROR_FLAG, ERROR_SOURCES, CHECK_BEFORE,
RUNTIME_SCALARS, `launches(view)`, and from gradc/codegen/cuda_rt.py `cuda`, `SIMULATOR` and
`launch_size`. NumPy and numba.cuda only.
"""
import base64

import numpy as np

from .calls import _new_lock


class Compiled:
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
        self.lock = _new_lock(self)

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
