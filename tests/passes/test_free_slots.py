"""The scratch placement's free-slot structure (gradc/passes/memory.py FreeSlots) places every
value where the plain list it replaces placed it: the best fit, the first in list order among
equal sizes, with the list sorted and coalesced when slots expire. Random schedules of stored
values (equal sizes for ties, empty values, values read much later) through `_place_scratch`
against that list, with and without growing the top slot. No compiles: a fraction of a second."""
from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest

from gradc.passes.memory import FreeSlots, _aligned, _place_scratch, nbytes


def _place_with_list(kernels, last_read, start, grow_top):
    """The placement over a plain list of (offset, size) slots: what FreeSlots must match."""
    offsets, free, end, expiring = {}, [], start, {}
    for k in kernels:
        for v in k.stores:
            if v.id in offsets:
                continue
            size = _aligned(nbytes(v))
            fit = min((s for s in free if s[1] >= size), key=lambda s: s[1], default=None)
            if fit is not None:
                free.remove(fit)
                if fit[1] > size:
                    free.append((fit[0] + size, fit[1] - size))
                offsets[v.id] = fit[0]
            elif grow_top and free and free[-1][0] + free[-1][1] == end:
                offsets[v.id] = free.pop()[0]
                end = offsets[v.id] + size
            else:
                offsets[v.id] = end
                end += size
            expiring.setdefault(max(last_read.get(v.id, -1), k.index), []).append(
                (offsets[v.id], size))
        if k.index in expiring:
            merged = []
            for off, size in sorted(free + expiring.pop(k.index)):
                if merged and merged[-1][0] + merged[-1][1] == off:
                    merged[-1] = (merged[-1][0], merged[-1][1] + size)
                else:
                    merged.append((off, size))
            free = merged
    return offsets, end


def _schedule(rng, n_kernels):
    """Kernels storing 0-3 values each, of a few sizes (some empty), read up to 40 kernels on."""
    kernels, last_read, vid = [], {}, 0
    sizes = [0, 1, 16, 16, 17, 64, 100, 300]
    for i in range(n_kernels):
        stores = []
        for _ in range(rng.randrange(4)):
            stores.append(SimpleNamespace(id=vid, size=rng.choice(sizes),
                                          dtype=np.dtype("float32")))
            if rng.random() < 0.8:
                last_read[vid] = i + rng.randrange(1, 40)
            vid += 1
        kernels.append(SimpleNamespace(index=i, stores=stores))
    return kernels, last_read


@pytest.mark.parametrize("grow_top", [False, True])
def test_free_slots_place_as_the_plain_list_does(grow_top):
    rng = random.Random(14)
    for trial in range(60):
        kernels, last_read = _schedule(rng, rng.choice([5, 40, 300]))
        got = _place_scratch({k.index: k.stores for k in kernels}, {}, {}, last_read, 128,
                             grow_top, {})
        assert got == _place_with_list(kernels, last_read, 128, grow_top), trial


def test_free_slots_coalesce_touching_slots_and_keep_list_order():
    free = FreeSlots()
    free.coalesce([(128, 64), (0, 64), (320, 64), (64, 64)])
    assert free.starts == [0, 320] and free.sizes == {0: 192, 320: 64}
    assert free.best_fit(64) == (320, 64) and free.best_fit(65) == (0, 192)
    free.take((320, 64))
    free.add((384, 64))  # after the sorted slots in list order: last, and after ties
    free.add((512, 64))
    assert free.last() == (512, 64) and free.best_fit(1) == (384, 64)
    assert free.best_fit(193) is None
    free.coalesce([(448, 64)])
    assert free.starts == [0, 384] and free.sizes == {0: 192, 384: 192}
    assert free.last() == (384, 192)
