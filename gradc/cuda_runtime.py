"""target="cuda" at run time: the Compiled of a signature whose buffers live on the device."""
from __future__ import annotations

import numpy as np

from .runtime import Compiled


class CudaCompiled(Compiled):
    """target="cuda" (gradc/codegen/cuda.py): the same interface; the host arena mirrors the
    device's outputs region, and the driver copies inputs in and outputs back on each call."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.driver is not None:
            self.driver.upload_constants(self.arena)

    def run(self, leaves, owned=()):
        hosts = [x if isinstance(x, np.ndarray) and x.flags.c_contiguous and x.dtype == dtype
                 else np.ascontiguousarray(x, dtype=dtype)
                 for x, (shape, dtype) in zip(leaves, self.input_types)]
        for address, (shape, dtype) in zip(owned, self.input_types[len(leaves):]):
            hosts.append(_host_array(address, shape, dtype))  # gradc-owned buffers, by address
        self.driver(self.arena, hosts)
        return self.outputs


def _host_array(address, shape, dtype):
    import ctypes
    n = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    raw = np.ctypeslib.as_array(ctypes.cast(address, ctypes.POINTER(ctypes.c_uint8)), shape=(n,))
    return raw.view(dtype).reshape(shape)
