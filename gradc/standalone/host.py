"""A standalone module's CPU executable: the arena (constants copied in once), views of the
outputs that live in it, and the call of the driver `run`.

Copied verbatim (from the first definition on) into every CPU module `gradc compile` writes,
after the tables it reads: ARENA_BYTES, CONSTANTS, OUTPUTS, and the driver `run`. NumPy only.
"""
import base64

import numpy as np

from .calls import _address, _new_lock, _overlaps, byte_span


class Compiled:
    """The arena (constants copied in once) and views of the outputs that live in it."""

    def __init__(self):
        self._raw = np.zeros(ARENA_BYTES + 64, np.uint8)
        start = (-self._raw.ctypes.data) % 64
        self.arena = self._raw[start:start + ARENA_BYTES]
        self.address = self.arena.ctypes.data
        for offset, dtype, shape, data in CONSTANTS:
            array = np.frombuffer(base64.b64decode("".join(data)), dtype).reshape(shape)
            self.arena[offset:offset + array.nbytes] = array.view(np.uint8).reshape(-1)
        self.outputs = [None if offset is None else self.view(offset, shape, dtype)
                        for offset, _, shape, dtype in OUTPUTS]
        self.updated = sorted(i for offset, i, _, _ in OUTPUTS if offset is None)
        self.lock = _new_lock(self)

    def view(self, offset, shape, dtype):
        dtype = np.dtype(dtype)
        n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        return self.arena[offset:offset + n].view(dtype).reshape(shape)

    def _run(self, arrays, owned=()):
        """Run the kernels on the caller's arrays and the arrays this object owns (a train
        step's optimizer state and runtime scalars). An array whose memory overlaps what the
        kernels write (the arena, which holds the outputs handed out earlier, or a parameter
        updated in place) is read from a copy, as if a copy had been passed."""
        written = [i for i in self.updated if i < len(arrays)]
        spans = [(self.address, self.address + ARENA_BYTES)] + [byte_span(arrays[i]) for i in written]
        arrays = [x.copy() if i not in written and _overlaps(x, spans) else x
                  for i, x in enumerate(arrays)]
        run(self.address, *[_address(x) for x in arrays], *[_address(x) for x in owned])

    def _owned_changed(self):
        """(The kernels read the owned arrays where they are: nothing to do.)"""

    def _read_owned(self):
        """(The kernels write the owned arrays where they are: nothing to do.)"""
