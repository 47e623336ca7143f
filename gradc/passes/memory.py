"""The buffer plan: every stored value gets a byte offset in one preallocated arena.

Layout: [outputs | constants and per-chunk partials | scratch]. Outputs (the value and the gradients) sit side by side at
the front, in output order, so the gradients form one flat region (one allreduce covers them).
Scratch slots are reused: a slot is free once the last kernel that reads its value has run (a
kernel's outputs are placed before its dead inputs are freed, so no kernel reads and writes one
slot, except a loop kernel writing a value over an input it reads for the last time, at the
element it computes, an addmm writing its sum over its c, and a set_slice writing x with a
slice set over x: `_overwritable`). Everything is decided before anything runs.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np

from ..ops.movement import contiguous_strides
from ..ops.registry import REDUCE

ALIGN = 64  # bytes: a cache line, and enough for any SIMD load
# an output written into a new array of its own (plan_buffers' fresh_outputs) has at least this
# many bytes: making the array and taking its address cost ~0.4 us a call in Python, which a
# smaller one's copy out of the arena undercuts (jit(lambda x: x * 2), one thread: level at
# 64 KiB, the new array 0.45 us slower at 64 bytes and 4x faster at 16 MiB)
FRESH_MIN_BYTES = 64 << 10


def _aligned(n):
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass
class BufferPlan:
    offsets: dict  # value id -> byte offset in the arena
    arena_bytes: int
    output_bytes: int
    constant_bytes: int
    scratch_bytes: int  # peak of the reused region
    naive_bytes: int  # every stored value in a slot of its own
    input_bytes: int
    constants: dict = field(default_factory=dict)  # value id -> array to copy in once
    aliases: dict = field(default_factory=dict)  # value id -> input Value it is written into
    # value id -> id of the value whose slot it takes in the kernel that reads that value for
    # the last time (see _overwritable): the two are alive together in that kernel only
    shared: dict = field(default_factory=dict)
    # value id -> id of the concatenation whose buffer it is stored in (see _concat_members)
    members: dict = field(default_factory=dict)
    # value id -> index of the output whose array, the caller's, it is written into (outputs
    # written into new arrays: plan_buffers' fresh_outputs)
    fresh: dict = field(default_factory=dict)
    fresh_bytes: int = 0  # those outputs' bytes (the caller's memory, as the inputs')


def nbytes(v):
    return v.size * v.dtype.itemsize


def plan_buffers(fusion, fresh_outputs=False):
    """The plan of `fusion`'s buffers. With fresh_outputs, each output of FRESH_MIN_BYTES or more
    that a kernel stores whole (itself or a reshape) is written into an array the caller passes
    on every call (gradc.jit's results: new arrays, not copies of the arena's): `plan.fresh`,
    no arena bytes (_fresh_outputs)."""
    graph = fusion.graph
    offsets, cursor = {}, 0
    aliases = {}  # value id -> the input whose buffer it is written into
    fresh = _fresh_outputs(fusion) if fresh_outputs else {}
    for i, v in enumerate(graph.outputs):
        base = fusion.layouts[v.id][0]  # an output may be a contiguous view (reshape) of a store
        if i in graph.aliases:
            aliases[v.id] = aliases[base.id] = graph.inputs[graph.aliases[i]]
            continue
        if base.id in fresh:
            fresh[v.id] = fresh[base.id]
            continue
        offsets[v.id] = offsets[base.id] = cursor
        cursor += _aligned(nbytes(v))
    output_bytes = cursor

    constants = {}
    for node in graph.nodes:
        if node.op == "constant":
            offsets[node.output.id] = cursor
            constants[node.output.id] = node.attr["data"].array
            cursor += _aligned(nbytes(node.output))
    from .fuse import CHUNKS, buffer_reads, partial_slots
    for k in fusion.kernels:  # per-chunk partial results of parallel reductions
        for v in partial_slots(k):
            offsets[("partial", k.index, v.id)] = cursor
            cursor += _aligned(CHUNKS * v.size * v.dtype.itemsize)
    constant_bytes = cursor - output_bytes
    scratch_start = cursor

    # liveness: the last kernel reading each stored value (through any view)
    last_read = {base.id: k.index for k, base in buffer_reads(fusion.kernels, fusion.layouts)}

    # values stored straight into their concatenation's buffer: the concatenation is placed
    # when its first member is stored, and lives until its last member's read
    fixed = {**offsets, **fresh}  # (values whose place is decided: not the scratch region's)
    members = _concat_members(fusion, fixed, aliases)
    outermost = _outermost(members)
    first = {}  # outermost concatenation id -> the kernel storing its first member
    for k in fusion.kernels:
        for v in k.stores:
            if v.id in members:
                concat = outermost[v.id][0]
                first.setdefault(concat.id, k.index)
                last_read[concat.id] = max(last_read.get(concat.id, -1),
                                           last_read.get(v.id, -1), k.index)
    stores = {k.index: [v for v in k.stores if v.id not in members and v.id not in first]
              for k in fusion.kernels}
    for concat, _ in {c.id: (c, 0) for c, _ in outermost.values()}.values():
        stores[first[concat.id]].append(concat)

    # three placements, the smallest kept: in schedule order, best fit, and best fit that grows
    # a free block at the top of the arena rather than leaving it behind (the MLP benchmark's
    # train step 1.58 -> 0.91 MiB, but the attention benchmark's 1.01 -> 1.13); and largest
    # value first (reaches the peak of live bytes where the others fragment: the 48-step LSTM's
    # train step 14.58 -> 11.95 MiB, W10's 14.00 -> 13.25)
    # Every placement writes a value over the one it may overwrite (_overwritable): which
    # values share an address is the graph's, not the shape's, and so is the kernels' text
    # (codegen/cpu.py names one array per address). When only the largest-first placement
    # shared, an MLP's batch of 1000 compiled 7 kernels that its batch of 512 had not.
    grouped = set(members) | {c.id for c, _ in members.values()}
    overwritable = {new: old for new, old in _overwritable(fusion, last_read).items()
                    if new not in grouped and old not in grouped}
    scratch = [_place_scratch(stores, fixed, aliases, last_read, scratch_start, grow,
                              overwritable) for grow in (False, True)]
    scratch.append(_place_by_size(stores, fixed, aliases, last_read, scratch_start, overwritable))
    placed, end = min(scratch, key=lambda p: p[1])
    shared = {new: old for new, old in overwritable.items() if new in placed and old in placed}
    for vid, (concat, at) in outermost.items():
        placed[vid] = placed[concat.id] + at
    offsets.update(placed)
    naive = output_bytes + constant_bytes + sum(  # every scratch value in a slot of its own
        _aligned(nbytes(v)) for k in fusion.kernels for v in k.stores if v.id in placed)

    input_bytes = sum(nbytes(v) for v in graph.inputs)
    return BufferPlan(offsets, end, output_bytes, constant_bytes, end - scratch_start, naive,
                      input_bytes, constants, aliases, shared,
                      {vid: concat.id for vid, (concat, _) in members.items()}, fresh,
                      sum(nbytes(graph.outputs[i]) for i in set(fresh.values())))


def _fresh_outputs(fusion):
    """{stored value id: the index of the first output that is it}: the outputs that can be
    written straight into an array of their own: those of FRESH_MIN_BYTES or more (not 0-d:
    a NumPy scalar is made of it) stored whole by a kernel (not an input, a constant or an
    in-place write), every output over that store being all of it (itself or a reshape, not a
    slice). Two outputs over one store share its array (the caller copies it for the second:
    `return y, y` gives two arrays, as NumPy's code would after a merged `a = x * 2;
    b = x * 2`)."""
    graph = fusion.graph
    stored = {v.id for k in fusion.kernels for v in k.stores}
    fresh, whole = {}, {}
    for i, v in enumerate(graph.outputs):
        base, start, strides = fusion.layouts[v.id][:3]
        ok = (i not in graph.aliases and base.id in stored and start == 0 and v.shape != ()
              and nbytes(v) >= FRESH_MIN_BYTES
              and nbytes(base) == nbytes(v) and base.dtype == v.dtype
              and tuple(strides) == tuple(contiguous_strides(v.shape)))
        whole[base.id] = whole.get(base.id, True) and ok
        fresh.setdefault(base.id, i)
    return {vid: i for vid, i in fresh.items() if whole[vid]}


def _concat_members(fusion, fixed, aliases):
    """{value id: (concatenation, byte offset)} of values that can be stored straight into the
    buffer of a concatenation that reads them, each in its block: the concatenation kernel then
    skips that block. A block of a concatenation along its first axis (or after axes of length
    1) is contiguous (an LSTM's per-step gradients, concatenated as its input projection's
    gradient): a value qualifies when it is read there as itself (no view), is stored by a
    kernel in the scratch region, has the concatenation's dtype, and is in no other
    concatenation. A block along an inner axis is strided: fuse.py's block_stores chose the
    values whose loop kernel stores them with the concatenation's strides (a step's four gate
    gradients, side by side). A member may itself be a concatenation with members."""
    stored = {v.id for k in fusion.kernels for v in k.stores}
    members, seen = {}, set()
    for k in fusion.kernels:
        if k.kind != "concatenate":
            continue
        node = k.nodes[0]
        out, axis = node.output, node.attr["axis"]
        strided = [x for x in node.inputs if x.id in fusion.block_stores]
        if out.id in fixed or out.id in aliases:
            assert not strided, f"%{out.id}: strided blocks stored into a fixed concatenation"
            continue
        contiguous = int(np.prod(out.shape[:axis])) == 1
        group, at = {}, 0
        for x in node.inputs:
            layout = fusion.layouts.get(x.id)
            if x.id in fusion.block_stores or (
                    contiguous and layout is not None and layout[0] is x and x.id in stored
                    and x.id not in fixed and x.id not in aliases and x.dtype == out.dtype
                    and x.id not in seen and x.id not in group and x.node is not None
                    and x.node.op != "constant" and at % 64 == 0):  # (buffers: 64-byte aligned)
                group[x.id] = (out, at)
            at += int(np.prod(x.shape[axis:])) * x.dtype.itemsize
        seen.update(group)
        members.update(group)
    return members


def _outermost(members):
    """{member id: (the concatenation it is in, not itself a member), its byte offset there}."""
    placed = {}
    for vid, (concat, at) in members.items():
        while concat.id in members:
            concat, more = members[concat.id]
            at += more
        placed[vid] = (concat, at)
    return placed


def _place_scratch(stores, fixed, aliases, last_read, start, grow_top, overwritable):
    """Offsets of the kernels' stored values in the scratch region, in schedule order: a value
    takes the slot of the value it may overwrite (`overwritable`: that value's last reader
    stores it), else the smallest free slot it fits (with grow_top, else the free slot at the
    top, grown), and its slot is free after the last kernel that reads it. Returns (offsets,
    arena end)."""
    offsets, free, end = {}, FreeSlots(), start
    expiring = {}  # kernel index -> slots free once that kernel has run
    for index, values in stores.items():
        for v in values:
            if v.id in fixed or v.id in aliases or v.id in offsets:
                continue
            size = _aligned(nbytes(v))
            old = overwritable.get(v.id)
            slot = (offsets.get(old), size)
            if slot[0] is not None and slot in expiring.get(index, ()):
                expiring[index].remove(slot)  # (the slot lives on, as v's)
                offsets[v.id] = slot[0]
                expiring.setdefault(max(last_read.get(v.id, -1), index), []).append(slot)
                continue
            fit = free.best_fit(size)
            if fit is not None:
                free.take(fit)
                if fit[1] > size:
                    free.add((fit[0] + size, fit[1] - size))
                offsets[v.id] = fit[0]
            elif grow_top and (top := free.last()) is not None and top[0] + top[1] == end:
                free.take(top)
                offsets[v.id] = top[0]
                end = offsets[v.id] + size
            else:
                offsets[v.id] = end
                end += size
            expiring.setdefault(max(last_read.get(v.id, -1), index), []).append(
                (offsets[v.id], size))
        if index in expiring:
            free.coalesce(expiring.pop(index))
    return offsets, end


def _place_by_size(stores, fixed, aliases, last_read, start, overwritable):
    """Offsets of the stored values, largest first: each at the lowest offset where it overlaps
    no value placed before it that is alive at the same time (greedy by size); a value and the
    one it may overwrite (`overwritable`, see _overwritable) share one slot. Returns (offsets,
    arena end)."""
    life = {}  # value id -> [size, first kernel, last kernel, ids of the values in its slot]
    for index, values in stores.items():
        for v in values:
            if v.id not in fixed and v.id not in aliases and v.id not in life:
                life[v.id] = [_aligned(nbytes(v)), index,
                              max(last_read.get(v.id, -1), index), [v.id]]
    for vid, old in overwritable.items():  # one slot, the lives joined
        if vid in life and old in life:
            slot = life.pop(old)
            slot[2], slot[3] = life[vid][2], slot[3] + life[vid][3]
            for member in slot[3]:
                life[member] = slot
    slots = list({id(s): s for s in life.values()}.values())
    values = sorted(((size, first, last, ids) for size, first, last, ids in slots),
                    key=lambda t: (-t[0], t[1]))
    # the values placed so far, as arrays: each value compares itself with all of them at once
    off, end_, first_, last_ = (np.zeros(len(values), np.int64) for _ in range(4))
    offsets, end = {}, start
    for i, (size, first, last, ids) in enumerate(values):
        live = (last_[:i] >= first) & (first_[:i] <= last)
        lo, hi = off[:i][live], end_[:i][live]
        order = np.argsort(lo, kind="stable")
        lo, hi = lo[order], hi[order]
        below = np.maximum.accumulate(np.concatenate(([start], hi)))  # [j]: top of those below j
        gaps = np.flatnonzero(lo - below[:-1] >= size)
        at = int(below[gaps[0]] if len(gaps) else below[-1])
        offsets.update(dict.fromkeys(ids, at))
        off[i], end_[i], first_[i], last_[i] = at, at + size, first, last
        end = max(end, at + size)
    return offsets, end


def _overwritable(fusion, last_read):
    """{value id: id of a value whose slot it may take}: a loop kernel that reads a value for
    the last time, only at the element it computes (no view, same shape), may write a value of
    the same size into its slot: each iteration loads all its elements before it stores any
    (gradc/codegen/loops.py). GELU's backward writes its gradient over the incoming one. And an
    addmm (c + op(a) @ op(b)) may write its sum over c: an accumulated weight gradient's buffer
    is taken over by each step's. And a set_slice may write x with its slice set over x (it
    then skips its copy): an RNN's states filled a step at a time (fuse.py _overwrites_last
    schedules it after x's other readers)."""
    taken, shared = set(), {}
    for k in fusion.kernels:
        if k.kind == "addmm":  # c + a @ b: gemm reads each element of c before it writes it
            c, a, b = (fusion.layouts[x.id] for x in k.nodes[0].inputs[:3])  # (alpha: 0-d)
            out = k.nodes[0].output
            if (c[0] is k.nodes[0].inputs[0] and c[0].node is not None and c[0].id not in taken
                    and last_read.get(c[0].id) == k.index and c[0] is not a[0]
                    and c[0] is not b[0] and out in k.stores):
                taken.add(c[0].id)
                shared[out.id] = c[0].id
            continue
        if k.kind == "set_slice":  # x with a slice written: x copied, unless it is out's slot
            x, v = (fusion.layouts[y.id] for y in k.nodes[0].inputs)
            out = k.nodes[0].output
            if (x[0] is k.nodes[0].inputs[0] and x[0].node is not None and x[0].id not in taken
                    and last_read.get(x[0].id) == k.index and v[0] is not x[0]
                    and out in k.stores):
                taken.add(x[0].id)
                shared[out.id] = x[0].id
            continue
        # (CUDA runs a kernel with reductions over different axes as one launch per set of
        # axes, each loading the inputs again, and the last one stores: none is written over)
        if k.kind != "loop" or len({n.attr["axes"] for n in k.nodes if n.opdef.kind == REDUCE}) > 1:
            continue
        local = {node.output.id for node in k.nodes}
        views = {}  # base id -> how k reads it: (offset, strides, shape) of each read
        for node in k.nodes:
            for x in node.inputs:
                layout = fusion.layouts.get(x.id)
                if layout is not None and not (x is layout[0] and x.id in local):
                    views.setdefault(layout[0].id, set()).add((layout[1], tuple(layout[2]), x.shape))
        plain = {(0, tuple(contiguous_strides(k.shape)), k.shape)}
        dying = {}  # (dtype size) -> ids of the values k reads last, elementwise
        for node in k.nodes:
            for x in node.inputs:
                base = fusion.layouts.get(x.id, (None,))[0]
                if (base is not None and base.node is not None and views.get(base.id) == plain
                        and last_read.get(base.id) == k.index and base.id not in taken):
                    taken.add(base.id)
                    dying.setdefault(base.dtype.itemsize, []).append(base.id)
        for v in k.stores:
            if v.shape == k.shape and v.node.opdef.kind != REDUCE and dying.get(v.dtype.itemsize):
                shared[v.id] = dying[v.dtype.itemsize].pop()
    return shared


class FreeSlots:
    """The free (offset, size) slots of the scratch region, as a list that is sorted by offset
    and coalesced (adjacent slots merged) at each `coalesce`, with the slots `add`ed since then
    after it in the order added. `best_fit` is the smallest slot that fits, the first in that
    list order among equals; `last` the list's last slot. A plain list scanned per value made
    the plan quadratic on long unrolls (thousands of slots between live activations: 4.3 s of
    a 50k-node LSTM's 18 s); here each is a bisection. tests/passes checks it against the list."""

    def __init__(self):
        self.starts = []  # offsets of the coalesced slots, ascending
        self.sizes = {}  # offset -> size of each coalesced slot
        self.added = []  # slots added since the last coalesce, in order
        self.by_fit = []  # (size, list position, slot) of every slot, ascending
        self.count = 0  # slots added so far: an added slot's list position is (1, count)
        self.points = False  # an empty slot was in the last full merge (see coalesce)

    def best_fit(self, size):
        i = bisect.bisect_left(self.by_fit, (size,))
        return self.by_fit[i][2] if i < len(self.by_fit) else None

    def last(self):
        if self.added:
            return self.added[-1][2]
        return (self.starts[-1], self.sizes[self.starts[-1]]) if self.starts else None

    def take(self, slot):
        """Remove `slot`, one of the free slots."""
        off, size = slot
        if self.sizes.get(off) == size:
            del self.sizes[off]
            del self.starts[bisect.bisect_left(self.starts, off)]
            entry = (size, (0, off), slot)
        else:
            entry = next(e for e in self.added if e[2] == slot)
            self.added.remove(entry)
        del self.by_fit[bisect.bisect_left(self.by_fit, entry)]

    def add(self, slot):
        self.count += 1
        entry = (slot[1], (1, self.count), slot)
        self.added.append(entry)
        bisect.insort(self.by_fit, entry)

    def coalesce(self, expired):
        """The added and `expired` slots joined to the sorted list, touching slots merged (what
        sorting the whole list and merging neighbours gives, a slot at a time)."""
        for size, position, slot in self.added:
            del self.by_fit[bisect.bisect_left(self.by_fit, (size, position, slot))]
        pending, self.added = [e[2] for e in self.added] + list(expired), []
        if self.points or any(size == 0 for _, size in pending):
            # An empty value's slot is a point that may lie inside a free slot, which sorting
            # and merging keeps apart, and leaves touching slots apart beside it: done so, over
            # every slot, until a merge is left with no point (empty values are rare).
            self._sort_and_merge(pending)
            return
        for off, size in pending:
            end = off + size
            i = bisect.bisect_left(self.starts, off)
            if i and self.starts[i - 1] + self.sizes[self.starts[i - 1]] == off:
                i -= 1
                off = self.starts[i]
                self._drop(i)
            if i < len(self.starts) and self.starts[i] == end:
                end += self.sizes[end]
                self._drop(i)
            self.starts.insert(i, off)
            self.sizes[off] = end - off
            bisect.insort(self.by_fit, (end - off, (0, off), (off, end - off)))

    def _sort_and_merge(self, pending):
        merged = []
        for off, size in sorted(pending + [(off, self.sizes[off]) for off in self.starts]):
            if merged and merged[-1][0] + merged[-1][1] == off:
                merged[-1] = (merged[-1][0], merged[-1][1] + size)
            else:
                merged.append((off, size))
        self.starts = [off for off, _ in merged]
        self.sizes = dict(merged)
        self.by_fit = sorted((size, (0, off), (off, size)) for off, size in merged)
        self.points = any(size == 0 for _, size in merged)

    def _drop(self, i):
        off = self.starts.pop(i)
        size = self.sizes.pop(off)
        del self.by_fit[bisect.bisect_left(self.by_fit, (size, (0, off), (off, size)))]


def describe(plan):
    kib = lambda n: f"{n / 1024:,.1f} KiB"  # noqa: E731
    return "\n".join([
        f"inputs (parameters and data, caller's memory): {kib(plan.input_bytes)}",
        f"outputs (value and gradients, one flat region): {kib(plan.output_bytes)}",
        *([f"outputs written into new arrays on each call (the caller's): {kib(plan.fresh_bytes)}"]
          if plan.fresh else []),
        f"constants: {kib(plan.constant_bytes)}",
        f"activations and scratch (peak, with reuse): {kib(plan.scratch_bytes)}",
        f"arena total: {kib(plan.arena_bytes)}   without reuse: {kib(plan.naive_bytes)}",
    ])
