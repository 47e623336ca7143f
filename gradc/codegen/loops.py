"""The one lowering of a fused loop kernel into a target-neutral loop nest.

`lower(kernel, fusion)` turns a fusion loop kernel into a `LoopNest`: the collapsed iteration
space, every array access (loads and stores) with its strides over that space, the scalar body
in order, and the reductions with their accumulators. It decides everything that does not depend
on the target; gradc/codegen/cpu.py and gradc/codegen/cuda.py render the same LoopNest, each
with its own schedule (sequential or parallel chunks on the CPU, a grid of threads or blocks on
CUDA) and its own code for each op.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..ops.elementwise import lit
from ..ops.movement import contiguous_strides
from ..ops.reduction import combine, identity
from ..ops.registry import REDUCE

LOAD, STORE = "load", "store"


@dataclass
class Access:
    """One array read or written by the loop nest. `base` is the buffer's value (its address is
    the target's business), `offset` the elements from the buffer's start to the view's index 0,
    `strides` the elements per step of each loop, `origin` the elements from the lowest element
    addressed to index 0 (non-zero only with negative strides, x[::-1])."""
    base: object
    offset: int
    strides: tuple
    dtype: np.dtype
    role: str
    name: str = ""  # loads: the local variable that holds the loaded element
    node: object = None  # stores: the node whose value (or reduced input) is stored
    origin: int = 0

    @property
    def is_scalar(self):
        """Reads one element for the whole nest (a learning rate...)."""
        return not any(self.strides)


@dataclass
class Statement:
    """`name = <op's scalar math>(args)`: one elementwise node of the body."""
    name: str
    node: object
    args: list


@dataclass
class Reduction:
    """A reduce node stored through `access` (its reduced loops have stride 0)."""
    access: Access
    node: object
    value: str  # the local holding the element reduced

    @property
    def op(self):
        return self.node.op

    @property
    def dtype(self):
        return self.node.output.dtype

    @property
    def reduced(self):
        """The loops this reduction reduces over."""
        return tuple(l for l, s in enumerate(self.access.strides) if s == 0)

    def identity(self):
        """The accumulator's start value, as a typed literal."""
        return lit(identity(self.op, self.dtype), self.dtype)

    def combine(self, acc, x):
        """The scalar expression that folds `x` into the accumulator `acc`."""
        return combine(self.op, acc, x)

    def register_from(self, ndim):
        """The first of the trailing loops that this reduction reduces entirely: from that loop
        on, it accumulates in a register."""
        start = ndim
        while start > 0 and start - 1 in self.reduced:
            start -= 1
        return start

    def in_memory(self, ndim):
        """True where it also reduces across loops outside its register loops, so that the
        output element accumulates in memory (initialised to the identity first)."""
        start = self.register_from(ndim)
        return any(l < start for l in self.reduced)


@dataclass
class LoopNest:
    sizes: list  # collapsed loop sizes, outermost first
    accesses: list  # Access, loads in body order then stores
    body: list  # Statement, in order (reduce nodes excluded)
    reductions: list  # Reduction, in store order
    local: dict = field(repr=False, default_factory=dict)  # value id -> local name or literal
    ops: list = field(default_factory=list)  # the op of every node, in order

    @property
    def ndim(self):
        return len(self.sizes)

    @property
    def total(self):
        return int(np.prod(self.sizes, dtype=np.int64)) if self.sizes else 1

    @property
    def loads(self):
        return [a for a in self.accesses if a.role == LOAD]

    @property
    def stores(self):
        return [a for a in self.accesses if a.role == STORE]

    @property
    def plain_stores(self):
        """Stores of elementwise values (not reductions)."""
        return [a for a in self.stores if a.node.opdef.kind != REDUCE]

    def stored_value(self, access):
        """The local a store writes: the value, or for a reduction the element it reduces."""
        node = access.node
        return self.local[(node.inputs[0] if node.opdef.kind == REDUCE else node.output).id]

    def title(self):
        """The kernel's readable name: its ops, copies left out."""
        name = "_".join(dict.fromkeys(o for o in self.ops if o not in ("copy", "alias")))[:40]
        return name.rstrip("_")


# the integers narrower than Numba's arithmetic (it computes them in int64), by their casts
NARROW = {np.dtype(np.int32): "i32", np.dtype(np.int16): "i16", np.dtype(np.int8): "i8",
          np.dtype(np.uint16): "u16", np.dtype(np.uint8): "u8"}


def wrapped_narrow(text, dtype):
    """A statement's result in a narrow integer dtype cast back to it (both targets): Numba
    computes int32, int16, int8, uint16 and uint8 arithmetic in int64, so an intermediate that
    overflowed did not wrap as NumPy's does ((a + 1) of 2**31 - 1 was +2**31 when fused into a
    cast, a max or a sum; 255 + 1 of uint8 is 0)."""
    cast = NARROW.get(np.dtype(dtype))
    return f"{cast}({text})" if cast else text


def collapse(shape, strides_list):
    """Drop size-1 dims and merge adjacent dims that every access walks contiguously."""
    dims = [d for d in range(len(shape)) if shape[d] != 1]
    sizes, groups = [], []
    for d in dims:
        if groups and all(s[groups[-1][-1]] == s[d] * shape[d] for s in strides_list):
            groups[-1].append(d)
            sizes[-1] *= shape[d]
        else:
            groups.append([d])
            sizes.append(shape[d])
    collapsed = [tuple(s[g[-1]] for g in groups) for s in strides_list]
    return sizes, collapsed


def lower(kernel, fusion):
    """The LoopNest of a fusion loop kernel."""
    local, loads, accesses, body, ops = {}, {}, [], [], []
    counter = iter(range(10 ** 6))
    for node in kernel.nodes:
        for x in node.inputs:
            if x.id not in local:
                local[x.id] = _load(x, fusion, loads, accesses, counter)
        name = f"t{next(counter)}"
        local[node.output.id] = name
        ops.append(node.op)
        if node.opdef.kind != REDUCE:
            body.append(Statement(name, node, [local[x.id] for x in node.inputs]))

    stored = {v.id for v in kernel.stores}
    for node in kernel.nodes:
        v = node.output
        if v.id not in stored:
            continue
        if node.opdef.kind == REDUCE:
            strides = tuple(0 if d in node.attr["axes"] else s
                            for d, s in enumerate(contiguous_strides(v.shape)))
        elif v.id in fusion.block_stores:  # (its block of a concatenation: the rows' strides)
            strides = fusion.block_stores[v.id][2]
        else:
            strides = contiguous_strides(kernel.shape)
        accesses.append(Access(v, 0, tuple(strides), v.dtype, STORE, node=node))

    sizes, collapsed = collapse(kernel.shape, [a.strides for a in accesses])
    for access, strides in zip(accesses, collapsed):
        access.strides = strides
    reductions = [Reduction(a, a.node, local[a.node.inputs[0].id]) for a in accesses
                  if a.role == STORE and a.node.opdef.kind == REDUCE]
    if not reductions:
        sizes = _unit_loads_inner(sizes, accesses)
    return LoopNest(sizes, accesses, body, reductions, local, ops)


def _unit_loads_inner(sizes, accesses):
    """A map's loops with the innermost one the loop that most loads walk one element at a
    time, where that beats the innermost as it is (the others keep their order); returns the
    sizes, and reorders every access's strides alike. A transposing copy then reads its source
    contiguously and writes with a stride, not the other way round: W8's copy of a 128x512
    weight transposed, 145 -> 48 us. Only loads of a new element at every step count: a
    broadcast one (a batch norm's per-channel scale) is read again and again from cache, and
    made innermost it cost W9's normalization 2.7 -> 37 us."""
    loads = [a for a in accesses if a.role == LOAD and all(a.strides)]

    def unit(l):
        return sum(1 for a in loads if a.strides[l] == 1)

    inner = len(sizes) - 1
    if inner < 1:
        return sizes
    best = max(range(len(sizes)), key=lambda l: (unit(l), l))
    if unit(best) <= unit(inner):
        return sizes
    order = [l for l in range(len(sizes)) if l != best] + [best]
    for a in accesses:
        a.strides = tuple(a.strides[l] for l in order)
    return [sizes[l] for l in order]


def _load(x, fusion, loads, accesses, counter):
    """The local (or literal) that holds x's element: a load, shared by equal accesses."""
    base, offset, strides = fusion.layouts[x.id]
    if base.node is not None and base.node.op == "const":
        return lit(base.node.attr["value"], x.dtype)
    key = (base.id, offset, tuple(strides), np.dtype(x.dtype).str)
    if key not in loads:
        loads[key] = f"t{next(counter)}"
        low = sum(min(0, (n - 1) * s) for n, s in zip(x.shape, strides))
        accesses.append(Access(base, offset, tuple(strides), np.dtype(x.dtype), LOAD,
                               name=loads[key], origin=-low))
    return loads[key]
