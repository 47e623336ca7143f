"""Fusion: partition the joint graph into kernels.

- View ops (reshape, broadcast_to, transpose, slice) get no kernel: a value read through views is
  a strided load of the buffer underneath (`layouts`).
- Elementwise ops over one iteration space join one loop kernel; a reduction joins the loop kernel
  that computes its input, as an accumulator. Inside a kernel, values are scalars in registers;
  only values read by other kernels (or returned) are stored.
- Every other op (matmul, gathers, scatters, concatenate) is a kernel of its own.

A node starts a new kernel instead of joining one when it reads the candidate's value through a
view (that would recompute it per broadcast element or need a value not yet computed), reads a
reduction of that kernel (not ready until the loop ends), or would make kernels depend on each
other in a cycle. Every such decision is recorded for `explain`.
"""
from __future__ import annotations

import functools
import heapq
import math
import os
from dataclasses import dataclass, field

import numpy as np

from ..ir import replay
from ..ops import fn
from ..ops.elementwise import COMPARISONS
from ..ops.fn import ConstArray
from ..ops.movement import contiguous_strides
from ..ops.registry import CONST, ELEMENTWISE, KERNEL, REDUCE, VIEW


@dataclass(eq=False)
class Kernel:
    index: int
    kind: str  # "loop" or the op name of a library kernel
    shape: tuple  # iteration space of a loop kernel; output shape otherwise
    nodes: list = field(default_factory=list)
    deps: set = field(default_factory=set)  # kernels whose buffers this one reads
    stores: list = field(default_factory=list)  # values this kernel writes to memory
    recomputed: set = field(default_factory=set)  # ids of values of other kernels it recomputes
    notes: list = field(default_factory=list)
    parallel: bool = False  # split the outer loop across threads (see decide_parallel)

    @property
    def name(self):
        return f"k{self.index}"


@dataclass
class Fusion:
    graph: object
    kernels: list  # in execution order
    layouts: dict  # value id -> (base value, offset, strides) for every value with storage
    notes: list  # refusals and decisions, for explain
    rematerialized: int = 0  # late reads served by recomputing the value (see remat.py)
    # value id -> (its concatenation, element offset of its block, the block's strides): values
    # a loop kernel stores straight into their block of a concatenation along an inner axis
    # (block_stores)
    block_stores: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# legalization: make every kernel input and every output addressable

def base_layout(v):
    """(base value, offset, strides) of `v` through view ops, or None if a view in the chain is
    not expressible as strides. A constant scalar's base is the const itself (strides 0)."""
    known = v.graph.layouts
    if v.id not in known:
        known[v.id] = _base_layout(v)
    return known[v.id]


def _base_layout(v):
    node = v.node
    if node is None or node.opdef.kind != VIEW:
        return v, 0, _strides(v.shape)
    inner = base_layout(node.inputs[0])
    if inner is None:
        return None
    base, offset, strides = inner
    mapped = node.opdef.view((offset, strides), node.inputs[0].shape, **node.attr)
    return None if mapped is None else (base, mapped[0], mapped[1])


# contiguous_strides of a value's shape (a tuple of ints), asked for a few times per read
_strides = functools.lru_cache(maxsize=4096)(contiguous_strides)


def _is_contiguous(layout, shape):
    base, _, strides = layout
    if base.node is not None and base.node.op == "const":
        return False
    return all(s == c for s, c, d in zip(strides, _strides(shape), shape) if d != 1)


def _copy(x):
    return x.graph.apply("copy", (x,))


def _contiguous(x, written_over):
    """x as a library kernel reads it: a copy, but a scalar broadcast (np.zeros(n) read by a
    matmul: an RNN's first state) is an array in the constant region, filled once, not a copy
    at every call. Not the x a set_slice may write its result over (`written_over`), which a
    copy lets it do (a buffer of the program's whole life would not)."""
    value = fn.const_value(x)
    if value is not None and not written_over:
        return x.graph.apply("constant", (), data=ConstArray(np.full(x.shape, value, x.dtype)))
    return _copy(x)


def _literal(value, dtype):
    """Whether a scalar constant is written into kernels as a literal. Other float constants (a
    mean's 1/N, an epsilon) are read from the arena's constant region instead, so the kernel that
    uses them is the same for every batch size and every such value: a new batch size compiles
    no new kernel. Integers and the few values that appear whatever the shapes stay literals:
    whole floats up to LITERAL_WHOLE (x * 2.0, 1 - y, x ** 3.0), not all: a batch size as a
    float (`loss * n`), or a closure's `float(i)` in a loop of fresh functions, compiled a new
    kernel for every value (500 such functions kept 190 MiB of machine code)."""
    if not np.issubdtype(dtype, np.floating):
        return True
    v = float(value)
    return not np.isfinite(v) or (v.is_integer() and abs(v) <= LITERAL_WHOLE) or abs(v) == 0.5


LITERAL_WHOLE = 64


def legalize(graph, late=frozenset()):
    """Insert copies where a view cannot be strided, where a library kernel needs a contiguous
    input, and for outputs that are not computed by a kernel (inputs, views, constants,
    duplicates), so every output owns a buffer of its own; and a copy to fill by recomputation
    under each of the `late` reads (see remat.py). Returns (graph, {copy id: its late read})."""
    copies = {}

    def rewrite(new, node, ins):
        kind = node.opdef.kind
        if node.op == "const" and not _literal(node.attr["value"], node.output.dtype):
            return new.apply("constant", (), data=ConstArray(np.array(node.attr["value"],
                                                                      node.output.dtype)))
        if kind == VIEW and base_layout(ins[0]) is not None:
            probe = new.apply(node.op, ins, **node.attr)
            if base_layout(probe) is None:
                return new.apply(node.op, (_copy(ins[0]),), **node.attr)
            return probe
        if kind == KERNEL:
            ins = tuple(_recopied(x, copies, (node.output.id, j)) if (node.output.id, j) in late
                        else x for j, x in enumerate(ins))
            fixed = tuple(x if (layout := base_layout(x)) is not None and _is_contiguous(layout, x.shape)
                          else _contiguous(x, node.op == "set_slice" and j == 0)
                          for j, x in enumerate(ins))
            return new.apply(node.op, fixed, **node.attr)
        return None

    g = replay(graph, rewrite)
    outs, seen = [], set()
    for v in g.outputs:
        layout = base_layout(v)
        base = layout[0] if layout is not None else None
        owns_buffer = (base is not None and base.node is not None and base.node.opdef.kind
                       not in (VIEW, CONST) and layout[1] == 0 and _is_contiguous(layout, v.shape)
                       and v.size == base.size)  # (not a leading part: the rest is not its own)
        if not owns_buffer or base.id in seen:
            with g.at_source(v.node.source if v.node else "<output>"):
                v = g.apply("alias", (v,), tag=len(outs))  # a copy into the output's own buffer
            base = v
        seen.add(base.id)
        outs.append(v)
    g.outputs = outs
    return g, copies


def _recopied(x, copies, read):
    """`x` read through a copy of its base value (the views from the base made again over the
    copy); copies[the copy's id] = `read`."""
    if x.node is None or x.node.opdef.kind != VIEW:
        y = _copy(x)
        copies[y.id] = read
        return y
    node = x.node
    return x.graph.apply(node.op, (_recopied(node.inputs[0], copies, read),)
                         + tuple(node.inputs[1:]), **node.attr)


# ---------------------------------------------------------------------------------------------
# grouping

def fuse(graph, remat=True, repeats=True, parallel=True):
    """Group the legalized graph's nodes into kernels (see the module docstring); with `remat`,
    recompute elementwise values for their late reads by library kernels (see remat.py).
    A late read whose value the fuser cannot recompute (its chain is long, or reads a buffer
    that would have to live longer) is read as it was, in a second grouping. With `repeats`, a
    loop kernel of identical parts becomes one kernel called for each part (repeats.py); with
    `parallel`, long loop kernels are cut into chunks for gradc's threads (decide_parallel)."""
    from .remat import late_reads  # (here: remat.py and repeats.py import this module)
    from .repeats import split_repeats
    late = late_reads(graph) if remat else set()
    while True:
        legal, copies = legalize(graph, late)
        fuser = _Fuser(legal, copies)
        for node in legal.nodes:
            if node.opdef.kind not in (VIEW, CONST):
                fuser.place(node)
        if not fuser.refused:
            break
        late -= fuser.refused
    graph = legal
    kernels = fuser.kernels
    _mark_stores(graph, kernels)
    if repeats:
        kernels = split_repeats(fuser, kernels)
    in_region = {base_layout(v)[0].id for i, v in enumerate(graph.outputs) if i not in graph.aliases}
    in_place = {base_layout(graph.outputs[o])[0].id for o in graph.aliases}
    ordered = _schedule(kernels, in_region, in_place)
    if parallel:
        decide_parallel_all(ordered)
    layouts = {}
    for node in graph.nodes:
        layout = base_layout(node.output)
        if layout is not None:
            layouts[node.output.id] = layout
    for v in graph.inputs:
        layouts[v.id] = (v, 0, _strides(v.shape))
    return Fusion(graph, ordered, layouts, fuser.notes, fuser.rematerialized,
                  block_stores(graph, ordered, layouts))


def buffer_reads(kernels, layouts):
    """(kernel, base value) for every read of a stored buffer, in schedule order, through any
    view; not a value computed (or recomputed) earlier in the same kernel, which it reads from
    a register."""
    for k in kernels:
        local = set()
        for node in k.nodes:
            for x in node.inputs:
                layout = layouts.get(x.id)
                if layout is not None and not (x is layout[0] and x.id in local):
                    yield k, layout[0]
            local.add(node.output.id)


def block_stores(graph, kernels, layouts):
    """{value id: (concatenation, element offset, strides)}: the values that the loop kernel
    computing them stores straight into their block of a concatenation along an inner axis,
    with the concatenation's strides, so that the concatenation copies nothing (an LSTM's four
    gate gradients side by side in its pre-activation gradient: W8's 48 steps copied 3 MiB a
    step). A value qualifies when the concatenation alone reads it, as itself; a loop kernel
    over its shape stores it (not a reduction); it is no output; its block starts 64 bytes
    into the concatenation's rows (every buffer starts 64-byte aligned); and the
    concatenation is no output either (memory.py places it in the scratch region, its blocks
    inside it). A concatenation along the first axis (or after axes of length 1) has
    contiguous blocks: memory.py's _concat_members stores those without new strides."""
    storer = {v.id: k for k in kernels for v in k.stores}
    reads = {}  # value id -> kernels reading its buffer
    for k, base in buffer_reads(kernels, layouts):
        reads.setdefault(base.id, set()).add(k.index)
    outputs = {layouts[v.id][0].id for v in graph.outputs if v.id in layouts}
    found = {}
    for k in kernels:
        if k.kind != "concatenate":
            continue
        node = k.nodes[0]
        out, axis = node.output, node.attr["axis"]
        if math.prod(out.shape[:axis]) == 1 or out.id in outputs:
            continue
        strides, at = _strides(out.shape), 0
        for x in node.inputs:
            source = storer.get(x.id)
            if (source is not None and source.kind == "loop" and tuple(source.shape) == x.shape
                    and x.node.opdef.kind != REDUCE and layouts[x.id][0] is x
                    and reads.get(x.id) == {k.index} and sum(y is x for y in node.inputs) == 1
                    and x.id not in outputs and x.dtype == out.dtype
                    and at * x.dtype.itemsize % 64 == 0):
                found[x.id] = (out, at, strides)
            at += math.prod(x.shape[axis:])
    return found


CHUNKS = 16  # a parallel kernel's outer loop is split into this many ranges
HORIZONTAL_WINDOW = 16  # loop kernels of one iteration space a node may join horizontally
RECOMPUTE_LIMIT = 16  # nodes of an elementwise chain a kernel may recompute instead of reading
# buffers one loop kernel may read: LLVM's time on a kernel grows with the pairs of its arrays
# (a loss summed over a dict of 400 parameters, fused horizontally into one kernel of 400
# loads, compiled in 2.4 s, 2000 in 27 s); a node that would read one more starts a kernel
MAX_KERNEL_READS = 64
# ...and independent work joins a loop kernel (horizontally) only while it has fewer nodes than
# this: each joined node stores a buffer of its own, and the same growth came from stores
# (np.concatenate of 200 small pieces, x[i] * c each, fused into one kernel of 200 stores: its
# value_and_grad compiled in 13 s, 100 pieces in 3 s)
MAX_HORIZONTAL_NODES = 64
# ...and no loop kernel grows past this many nodes: LLVM's time on one kernel grew as its
# statements squared (h = h * c + w unrolled 3000 times, one kernel each way: 45 s of LLVM,
# 13x JAX's compile; 5000 times: 234 s); the benchmarks' largest kernel has 28
MAX_KERNEL_NODES = 256
# Comparisons decide on exact bits: a max's gradient compares x with max(x), equal only for the
# very x the max reduced. Recomputed in another kernel, x may differ in its last bit (other
# fast-math contractions; libmvec in one kernel's vector loop, libm in another's remainder) and
# the gradient went missing, or came out inf (0 ties counted). So a comparison never reads a
# recomputed value, and no recomputed chain holds a comparison (ops/elementwise.py COMPARISONS).


class _Fuser:
    """Greedy grouping, node by node in graph order: a node joins the newest loop kernel that
    computes one of its inputs elementwise over the same iteration space (vertical fusion), or
    else any loop kernel over that space it is independent of (horizontal), where that makes
    no dependency cycle and no race on an overwritten input; otherwise it starts a kernel."""

    def __init__(self, graph, copies=frozenset()):
        self.copies = copies  # ids of copies to fill by recomputation (see remat.py)
        self.rematerialized = 0
        self.refused = set()  # the late reads of the copies it could not fill by recomputation
        self.recopying = set()  # indices of the kernels that fill those copies
        self.kernels: list[Kernel] = []
        self.home = {}  # value id -> kernel that computes it (for computed values)
        self.notes = []  # why fusions were refused, for explain
        # In-place outputs (a train step's new parameters) overwrite an input's buffer: the
        # kernel that writes one must run after every other kernel that reads the old value,
        # and must read it only at the element it writes.
        self.overwrites = {base_layout(graph.outputs[o])[0].id: graph.inputs[i].id
                           for o, i in graph.aliases.items()}
        # kernels that check an index array (a gather): an in-place write waits for them
        # (_schedule), so it must not join a kernel one of them depends on
        self.guards = []
        self.readers, self.strided_readers = {}, {}  # input id -> kernels reading it (via a view)
        self.writers = {}  # input id -> the kernel that overwrites it (once placed)
        # Reachability, kept up to date as deps are added, so the cycle checks cost a bit test
        # instead of a walk over the kernel graph (a walk per check made fusion quadratic: 8 s of
        # a 128-step LSTM's 12 s of passes). ancestors[i]: bit j set if kernel i depends,
        # transitively, on kernel j; dependents[i]: the kernels that depend directly on kernel i.
        self.ancestors, self.dependents = [], []
        # per kernel: the values it computes or recomputes, and the buffers it reads
        self.local, self.read = [], []
        self.by_space = {}  # iteration space -> its loop kernels, oldest first
        self.position = {node.output.id: i for i, node in enumerate(graph.nodes)}
        self.stored_anyway = _stored_anyway(graph)
        self.last_use = {}  # value id -> position of the last node reading its buffer
        for i, node in enumerate(graph.nodes):
            for x in node.inputs:
                if (layout := base_layout(x)) is not None:
                    self.last_use[layout[0].id] = i

    def producer(self, v):
        """The kernel whose buffer a read of `v` depends on (through views), or None."""
        layout = base_layout(v)
        return self.home.get(layout[0].id) if layout is not None else None

    def reaches(self, src, dst):
        """Does kernel `src` (transitively) depend on kernel `dst`?"""
        return src is dst or bool(self.ancestors[src.index] >> dst.index & 1)

    def add_deps(self, k, deps):
        """Record that kernel `k` reads the buffers of `deps`; update what depends on what."""
        new = 0
        for d in deps:
            if d is not k and d not in k.deps:
                k.deps.add(d)
                self.dependents[d.index].add(k)
                new |= self.ancestors[d.index] | 1 << d.index
        stack = [k]  # k and everything downstream of it gain k's new ancestors
        while new and stack:
            x = stack.pop()
            if new & ~self.ancestors[x.index]:
                self.ancestors[x.index] |= new
                stack.extend(self.dependents[x.index])

    def can_join(self, k, node, identity_inputs):
        """(whether `node` may join kernel `k`, why not); `identity_inputs` are inputs `k`
        computes elementwise, read at the same element."""
        if k.kind != "loop" or k.shape != _space(node):
            return False, "a different iteration space"
        if node.op in COMPARISONS and any(x.id in k.recomputed for x in node.inputs):
            return False, "compares a value this kernel recomputes (its bits may differ)"
        if k.index in self.recopying:
            return False, "the kernel recomputes a value for a late read (see remat.py)"
        if len(k.nodes) >= MAX_KERNEL_NODES:
            return False, f"the kernel has {MAX_KERNEL_NODES} nodes already"
        if len(self.read[k.index]) >= MAX_KERNEL_READS and any(
                (layout := base_layout(x)) is not None and layout[0].id not in self.read[k.index]
                and x.id not in self.local[k.index] for x in node.inputs):
            return False, f"the kernel reads {MAX_KERNEL_READS} buffers already"
        for x in node.inputs:  # (a reader of an input's old value runs before its overwrite)
            layout = base_layout(x)
            writer = self.writers.get(layout[0].id) if layout is not None else None
            if writer is not None and self.reaches(k, writer):
                return False, "reads an input that this kernel (or one before it) overwrites"
        target = self.overwrites.get(node.output.id)
        if target is not None:
            if any(self.reaches(g, k) for g in self.guards):  # (a random mask beside
                # cross_entropy at batch size 2 put the generator's advance in the loss's loop)
                return False, ("writes an input in place, which waits for an index check that "
                               "depends on this kernel")
            if k in self.strided_readers.get(target, ()):
                return False, "the kernel reads, through a view, the buffer this node overwrites"
            if any(r is not k and self.reaches(r, k) for r in self.readers.get(target, ())):
                return False, "overwriting its input here would race with a kernel reading it"
        for x in node.inputs:
            p = self.producer(x)
            if p is None or x.id in identity_inputs:
                continue
            if p is k:
                base = base_layout(x)[0]
                why = ("reads a reduction of this kernel, which is ready only after the loop"
                       if base.node.opdef.kind == REDUCE else
                       "reads a value of this kernel through a view (broadcast/transpose/slice)")
                return False, why
            if self.reaches(p, k):
                return False, "would make kernels depend on each other in a cycle"
        return True, ""

    def target_for(self, node):
        """The loop kernel `node` joins, or None."""
        home = self.home
        identity = {x.id for x in node.inputs
                    if x.id in home and x.node.opdef.kind == ELEMENTWISE}
        for cand in sorted({home[i] for i in identity}, key=lambda k: -k.index):
            ok, why = self.can_join(cand, node, {i for i in identity if home[i] is cand})
            if ok:
                return cand
            self.notes.append(f"{node.op} at {node.source} not fused into {cand.name}: {why}")
        # horizontal fusion: independent work over the same space, one loop (among the newest
        # few such loops: a 400-step unroll has thousands of one shape, and joining one far back
        # would only lengthen what stays live)
        for cand in reversed(self.by_space.get(_space(node), ())[-HORIZONTAL_WINDOW:]):
            if len(cand.nodes) < MAX_HORIZONTAL_NODES and self.can_join(
                    cand, node, {i for i in identity if home[i] is cand})[0]:
                return cand
        return None

    def place(self, node):
        kind = node.opdef.kind
        copy = node.output.id in self.copies  # (a kernel of its own, just before its reader)
        target = self.target_for(node) if kind in (ELEMENTWISE, REDUCE) and not copy else None
        if target is None:
            target = Kernel(len(self.kernels), "loop" if kind in (ELEMENTWISE, REDUCE) else node.op,
                            _space(node))
            self.kernels.append(target)
            self.ancestors.append(0)
            self.dependents.append(set())
            self.local.append(set())
            self.read.append(set())
            if copy:
                self.recopying.add(target.index)
            elif target.kind == "loop":
                self.by_space.setdefault(target.shape, []).append(target)
        if target.kind == "loop" and node.op not in COMPARISONS:
            for x in node.inputs:
                done = self.recompute(target, x, self.position[node.output.id], copy)
                if copy:
                    self.rematerialized += done
                    if not done:
                        self.refused.add(self.copies[node.output.id])
        target.nodes.append(node)
        if node.opdef.checks_indices and target not in self.guards:
            self.guards.append(target)
        self.local[target.index].add(node.output.id)
        self.home[node.output.id] = target
        self.note_reads(target, node)
        if node.output.id in self.overwrites:  # run after every other reader of the old value
            old = self.overwrites[node.output.id]
            self.add_deps(target, self.readers.get(old, ()))
            self.writers[old] = target

    def note_reads(self, target, node):
        """Record the buffers `node`, computed in `target`, reads. A kernel placed after the
        kernel that overwrites an input, and reading that input's old value, must run before
        it: a train step's aux output p["W"].T, copied from the parameter, came back updated."""
        self.add_deps(target, [p for x in node.inputs if (p := self.producer(x)) is not None])
        for x in node.inputs:
            layout = base_layout(x)
            writer = self.writers.get(layout[0].id) if layout is not None else None
            if writer is not None and writer is not target:
                if self.reaches(target, writer):
                    from ..errors import CompileError
                    raise CompileError(f"{node.op} at {node.source} reads an input's old value "
                                       "after the kernel that overwrites it (gradc's fault: "
                                       "please report it)")
                self.add_deps(writer, [target])
            if layout is not None:
                self.read[target.index].add(layout[0].id)
                self.readers.setdefault(layout[0].id, set()).add(target)
                if layout[0] is not x:
                    self.strided_readers.setdefault(layout[0].id, set()).add(target)

    def recompute(self, k, x, now, force=False):
        """Recompute `x`, an elementwise value of another loop kernel, inside loop kernel `k`
        instead of reading it from memory, when it is a short chain of elementwise ops over
        values that are in memory anyway (inputs, constants, library kernels' outputs, values
        `k` already reads). Then `x` need not be stored: the backward's uses of a forward
        activation's intermediates (GELU's cube and tanh, a sigmoid) cost no buffer each while
        the backward waits, at the price of recomputing them (AOTAutograd's recompute-over-save
        choice, taken per read). `now`: the graph position of the node reading `x`; `force`:
        recompute `x` even if it is stored anyway (for a late read, see remat.py). Returns
        whether `x` is recomputed."""
        p = self.home.get(x.id)
        if (p is None or p is k or p.kind != "loop" or x.node.opdef.kind != ELEMENTWISE
                or (x.id in self.stored_anyway and not force)):
            return False
        local, read = self.local[k.index], self.read[k.index]
        # (a value k already reads from memory stays read: computing it again further down the
        # kernel would leave the earlier read of it without a buffer)
        if x.id in local or x.id in read:
            return False
        chain, seen, stack, longer_lived = [], set(), [x], 0
        while stack:
            v = stack.pop()
            if v.id in seen or v.id in local:
                continue
            seen.add(v.id)
            if v.id in read:  # (a buffer k reads anyway: no need to recompute it)
                continue
            if (self.home.get(v.id) is p and v.node.opdef.kind == ELEMENTWISE
                    and (v.id not in self.stored_anyway or v is x)):  # (read what is in memory anyway)
                if v.node.op in COMPARISONS:
                    return False
                chain.append(v.node)
                if len(chain) > RECOMPUTE_LIMIT:
                    return False
                stack.extend(v.node.inputs)
                continue
            layout = base_layout(v)  # a leaf: it must be in memory anyway
            if layout is None:
                return False
            base = layout[0]
            writer = self.writers.get(base.id)
            if writer is not None and self.reaches(k, writer):  # (its old value is gone at k)
                return False
            if (base.node is None or base.node.opdef.kind == CONST or base.id in read
                    or self.last_use.get(base.id, -1) > now):  # (in memory at k anyway)
                continue
            if base.id not in self.stored_anyway:
                return False
            longer_lived += _nbytes(base)  # its buffer now lives until k
        if longer_lived > _nbytes(x):  # (a float32 buffer kept to spare a bool mask's)
            return False
        for node in sorted(chain, key=lambda n: self.position[n.output.id]):
            k.nodes.append(node)
            k.recomputed.add(node.output.id)
            local.add(node.output.id)
            self.note_reads(k, node)
        return True


def _mark_stores(graph, kernels):
    """A kernel stores the values read outside it (or through a view, or a reduction's), the
    graph's outputs, and what library kernels compute."""
    computed = {node.output.id for k in kernels for node in k.nodes}
    read_as_buffer = set()
    for k in kernels:
        local = set()  # computed (or recomputed) earlier in this kernel, as the code reads it
        for node in k.nodes:
            for x in node.inputs:
                layout = base_layout(x)
                base = layout[0] if layout else x
                if base.id in computed and (base.id not in local or base is not x
                                        or base.node.opdef.kind == REDUCE):
                    read_as_buffer.add(base.id)
            local.add(node.output.id)
    out_ids = {base_layout(v)[0].id for v in graph.outputs}  # an output may be a reshape
    for k in kernels:
        for node in k.nodes:
            v = node.output
            if v.id not in k.recomputed and (v.id in read_as_buffer or v.id in out_ids
                                    or node.opdef.kind in (REDUCE, KERNEL)):
                k.stores.append(v)


def _nbytes(v):
    return v.size * v.dtype.itemsize  # (a Value's shape holds Python ints, its dtype a dtype)


def _stored_anyway(graph):
    """Values that will have a buffer whatever fusion does: the outputs, what library kernels
    compute and read, and what is read through a view. (Before legalize, an output may be a
    view that strides cannot express: legalize copies it.)"""
    ids = {layout[0].id for v in graph.outputs if (layout := base_layout(v)) is not None}
    for node in graph.nodes:
        if node.opdef.kind in (KERNEL, REDUCE):
            ids.add(node.output.id)
        for x in node.inputs:
            layout = base_layout(x)
            if layout is not None and (node.opdef.kind == KERNEL or layout[0] is not x):
                ids.add(layout[0].id)
    return ids


PARALLEL_MIN_ITERATIONS = 1 << 16


def parallel_min_iterations():
    """Loop kernels of at least this many iterations are cut into CHUNKS chunks of their outer
    loop, which gradc's threads take (codegen/pool_rt.py): GRADC_PARALLEL_MIN_ITERATIONS, else
    2^16. The cut depends on the shape alone, so the bits do too (never on the thread count).

    Measured on this project's 2-core machine at default threads, against the same loops on
    one thread: W3's fused value and gradient (1M elements) 1.5 -> 0.76 ms a step, W4n
    0.93 -> 0.82 ms, W10 8.8-14 -> 8.5-8.9 ms; with another process loading both cores, W3 took
    1.55 ms either way. (Numba's parfors, the earlier way, lost every time: their loops ran
    scalar, 1M-element tanh 0.43 ms serial against 1.46 ms parallel.) 2^14 for every loop
    gained nothing more there, and lost W4 and W9 5-17%: loops from a quarter of the threshold
    are cut only where decide_parallel's reader rule holds."""
    value = os.environ.get("GRADC_PARALLEL_MIN_ITERATIONS", "")
    if not value:
        return PARALLEL_MIN_ITERATIONS
    if not value.isdigit() or int(value) < 1:
        from ..errors import CompileError
        raise CompileError(f"GRADC_PARALLEL_MIN_ITERATIONS={value!r}: set it to a number of "
                           "loop iterations (loops that long run on gradc's threads), or unset "
                           f"it ({PARALLEL_MIN_ITERATIONS})")
    return int(value)


def decide_parallel_all(kernels):
    """Mark the loop kernels that run in chunks (decide_parallel), the last first: a
    middling kernel's choice depends on its readers'."""
    readers = {k.index: [] for k in kernels}
    for k in kernels:
        for d in k.deps:
            readers[d.index].append(k)
    for k in reversed(kernels):
        k.parallel = decide_parallel(k, readers[k.index])


def decide_parallel(k, readers=()):
    """Split a loop kernel's outermost loop across threads when it is big and no two chunks
    of it would accumulate into the same memory. Reductions over trailing axes are private to
    an iteration; one over the outer axis (a bias's gradient, a sum over everything) gets a
    partial result per chunk (partial_slots), folded in chunk order after, where those partials
    are small beside the loop (PARTIAL_SHARE).

    A middling kernel (a quarter of the threshold and more) is split only when it has no
    partial results and a kernel that reads it runs on several threads too (`readers`):
    a GPT block's layer norms and softmaxes (32K iterations, read by split products), W7's
    step 2.05 -> 1.93 ms at 2 threads. Split where one thread reads its result next, half of
    that result sits in the other core's cache: a CNN's max-pooling (43K) read by a small
    product made W4's step 406 -> 430 us; a batch norm's sums over the batch (32K, partial
    results folded after) made W9's 127 -> 148 us."""
    threshold = parallel_min_iterations()
    dims = [d for d, n in enumerate(k.shape) if n != 1]
    total = math.prod(k.shape)
    if k.kind != "loop" or not dims or total < threshold // 4:
        return False
    middling = total < threshold
    if middling and not any(_runs_split(r) for r in readers):
        return False
    for node in k.nodes:
        if node.opdef.kind == REDUCE:
            reduced = [d for d in dims if d in node.attr["axes"]]
            suffix = dims[len(dims) - len(reduced):] if reduced else []
            if reduced == suffix:
                continue
            if (middling or dims[0] not in reduced
                    or CHUNKS * node.output.size * PARTIAL_SHARE > total):
                return False
    return True


def _runs_split(k):
    """Whether kernel k runs on several threads: a loop kernel in chunks, or a product big
    enough for blocks (codegen/rt.py SPLIT_WORK; a batched one, ops/linalg.py _bmm_kernel)."""
    from ..codegen.rt import BLOCK_WORK, SPLIT_WORK
    if k.kind == "loop":
        return k.parallel
    if k.kind not in ("matmul", "addmm", "bmm"):
        return False
    node = k.nodes[0]
    a = node.inputs[1] if k.kind == "addmm" else node.inputs[0]
    inner = a.shape[-2] if node.attr["ta"] else a.shape[-1]
    work = node.output.size * inner
    if k.kind == "bmm":
        return node.output.shape[0] > 1 and work >= 2 * BLOCK_WORK
    return work >= SPLIT_WORK


# A reduction over the outer axis is cut in chunks only where its CHUNKS partial results come
# to at most 1/PARTIAL_SHARE of the loop's iterations: W10's bias gradient (512 sums over 2048
# rows: 8 Ki partials beside 1 Mi iterations) is; a sum over the 4 rows of a (4, 1M) array is not.
PARTIAL_SHARE = 8


def partial_slots(k):
    """Reductions of a parallel kernel that need one partial result per chunk: those over the
    outer axis (so over everything, or a bias's gradient over the batch)."""
    dims = [d for d, n in enumerate(k.shape) if n != 1]
    return [node.output for node in k.nodes if k.parallel and node.opdef.kind == REDUCE
            and dims[0] in node.attr["axes"]]


def _space(node):
    """A node's iteration space: its input's shape for a reduction, else its output shape."""
    return node.inputs[0].shape if node.opdef.kind == REDUCE else node.output.shape


def _schedule(kernels, region_outputs, in_place=frozenset()):
    """Topological order of kernels by their buffer dependencies: of the kernels whose inputs
    are ready, the one created first runs first (list scheduling). A walk that ran each kernel
    in creation order after everything it waits for (depth first) let a kernel that a much
    later node joined pull that node's inputs ahead of the kernels created after it: the tiny
    MLP's loss kernel, waiting for the squares of the weights that their updates joined, ran
    the whole backward before the weight gradients, their activations alive until then (arena
    28,096 -> 17,216 bytes). Except that a kernel no other kernel depends on, and that writes
    no output into the arena's output region, runs as soon as its inputs are ready: a train
    step's in-place update of one parameter, so that parameter's gradient is dead before the
    next gradient is computed, instead of every gradient living until the updates at the end.
    (Outputs in the region keep their place: the views returned by the last call may be
    passed back as this call's inputs, so writing them early could overwrite an input that a
    later kernel reads.)

    A kernel that writes an input in place (`in_place`: value ids) runs only after every kernel
    that may raise (an index out of range), so a call that raises has changed no input."""
    has_dependents = {d.index for k in kernels for d in k.deps}
    sinks = {k.index for k in kernels if k.index not in has_dependents
             and not any(v.id in region_outputs for v in k.stores)}
    guards = _index_guards(kernels)
    waits = {k.index: {d.index for d in k.deps} for k in kernels}
    for k in kernels:
        if any(v.id in in_place for v in k.stores):
            waits[k.index].update(g.index for g in guards if g is not k)
    dependents = {k.index: [] for k in kernels}
    for i, ds in waits.items():
        for d in ds:
            dependents[d].append(i)
    _overwrites_last(kernels, waits, dependents)

    by_index = {k.index: k for k in kernels}
    keys = {k.index: (k.index not in sinks, k.index) for k in kernels}  # (sinks first)
    ready = [keys[i] for i, ds in waits.items() if not ds]
    heapq.heapify(ready)
    left = {i: len(ds) for i, ds in waits.items()}
    order = []
    while ready:
        k = by_index[heapq.heappop(ready)[1]]
        order.append(k)
        for j in dependents[k.index]:
            left[j] -= 1
            if not left[j]:
                heapq.heappush(ready, keys[j])
    assert len(order) == len(kernels), "the kernels depend on each other in a cycle"
    for i, k in enumerate(order):
        k.index = i
    return order


def _overwrites_last(kernels, waits, dependents):
    """A set_slice kernel waits for the other kernels that read its x (and do not depend on
    it), so it reads x last and the plan may write its result over x (memory.py
    _overwritable): the backward of `gradc.at(h)[:, t].set(v)` makes the step's gradient dv, a
    slice of g, and g with that slice zeroed; created first, the zeroing ran first and copied g,
    a whole array per step. Each wait is added only where it closes no cycle."""
    readers = {}
    for k in kernels:
        for node in k.nodes:
            for x in node.inputs:
                layout = base_layout(x)
                if layout is not None:
                    readers.setdefault(layout[0].id, set()).add(k.index)
    for k in kernels:
        if k.kind != "set_slice":
            continue
        x = base_layout(k.nodes[0].inputs[0])[0]
        others = readers.get(x.id, set()) - {k.index}
        if not others or x.node is None or x.node.op == "constant":
            continue  # (an input or a constant is never written over)
        after, stack = set(), [k.index]  # the kernels that wait for k, transitively
        while stack:
            for j in dependents[stack.pop()]:
                if j not in after:
                    after.add(j)
                    stack.append(j)
        for r in others - after - waits[k.index]:
            waits[k.index].add(r)
            dependents[r].append(k.index)


def _index_guards(kernels):
    """The kernels that check an index array first (in creation order, which the schedule
    keeps for them): the gathers of the forward. A scatter-add of the backward reads indices
    its gather has already checked."""
    checked, guards = set(), []
    for k in kernels:
        new = {n.inputs[1].id for n in k.nodes if n.opdef.checks_indices} - checked
        if new:
            guards.append(k)
            checked |= new
    return guards


def kernel_count_by_kind(fusion):
    counts = {}
    for k in fusion.kernels:
        counts[k.kind] = counts.get(k.kind, 0) + 1
    return counts


def describe(fusion):
    lines = []
    for k in fusion.kernels:
        ops = ", ".join(n.op for n in k.nodes)
        shape = "x".join(str(d) for d in k.shape) or "scalar"
        stores = ", ".join(f"%{v.id}" for v in k.stores)
        again = sorted(k.recomputed)
        again = f" (recomputes {', '.join(f'%{i}' for i in again)})" if again else ""
        lines.append(f"{k.name}: {k.kind} over [{shape}]: {ops} -> {stores}{again}")
    return "\n".join(lines)

