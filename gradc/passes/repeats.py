"""Repeats: a loop kernel that horizontal fusion made of N identical, independent parts (a deep
network's SGD updates of its N same-shaped weights) becomes N calls of one kernel.

The joined kernel's text depends on N, so a 10-layer MLP compiled a 9-update and an 8-update
kernel that the 2-layer one never needs (~25 ms of LLVM each on a cold start); one part's kernel
is shared by every depth and compiles once. The parts of a map read their own buffers, so the
split costs no memory traffic, only N - 1 more calls from the driver loop. Kernels with a
reduction are left joined: LLVM may vectorize a sum (reassociating it) in one loop and not in
another, and a split must not change any value's bits. CPU only (compile.lower): a CUDA launch
costs microseconds, where a call from the CPU driver costs nanoseconds."""
from ..ops.registry import CONST, REDUCE
from .fuse import Kernel, base_layout


def split_repeats(fuser, kernels):
    """`kernels` (the fuser's, in creation order, stores marked) with each loop kernel of
    identical parts replaced by its parts, in its place, numbered again in creation order. Each
    part waits for what its kernel waited for, and what waited for the kernel waits for every
    part: the schedule runs the parts one after another where the kernel ran, so the memory
    plan, and with it every value's bits, stay as they were. (Letting a part run as soon as
    its own inputs are ready would move buffers, and a loop with a sum vectorizes only where
    LLVM's runtime check finds its arrays apart, so other kernels' sums could round otherwise.)"""
    parts = {k.index: p for k in kernels if (p := _identical_parts(fuser, k))}
    if not parts:
        return kernels
    became = {}  # a kernel's index -> what it became
    for k in kernels:
        if k.index not in parts:
            became[k.index] = [k]
            continue
        fuser.notes.append(f"{k.name}: {len(parts[k.index])} identical parts over "
                           f"{'x'.join(map(str, k.shape))}, one kernel called for each")
        became[k.index] = [_part(k, nodes) for nodes in parts[k.index]]
    new = [x for k in kernels for x in became[k.index]]
    deps = [{q for d in x.deps for q in became[d.index]} for x in new]
    for i, x in enumerate(new):
        x.index, x.deps = i, deps[i]
    return new


def _part(k, nodes):
    """Kernel `k`'s part of `nodes` (its dependencies still the kernels `k` had)."""
    ids = {n.output.id for n in nodes}
    return Kernel(k.index, k.kind, k.shape, nodes=nodes, deps=k.deps,
                  stores=[v for v in k.stores if v.id in ids], recomputed=k.recomputed & ids,
                  notes=list(k.notes))


def _identical_parts(fuser, k):
    """The node lists of the independent parts of loop kernel `k` when there are two or more, all
    alike (the same ops on alike buffers: one kernel's text), none reading a buffer of the
    iteration space's size that another reads (joined, they read it once) or overwrites; else
    None."""
    if k.kind != "loop" or k.index in fuser.recopying or any(
            n.opdef.kind == REDUCE for n in k.nodes):
        return None
    at = {n.output.id: i for i, n in enumerate(k.nodes)}
    group = list(range(len(k.nodes)))  # union-find over the nodes: reading joins

    def find(i):
        while group[i] != i:
            group[i] = i = group[group[i]]
        return i

    for i, node in enumerate(k.nodes):
        for x in node.inputs:  # (the fuser never joins a node reading this kernel via a view)
            if x.id in at:
                group[find(i)] = find(at[x.id])
    parts = {}
    for i, node in enumerate(k.nodes):
        parts.setdefault(find(i), []).append(node)
    parts = list(parts.values())
    if len(parts) < 2:
        return None
    stored = {v.id for v in k.stores}
    if len({_signature(p, stored) for p in parts}) != 1:
        return None
    size, seen = _elements(k.shape), set()
    for p in parts:
        reads = {b.id for b in _buffers(p) if _elements(b.shape) >= size}
        reads |= {fuser.overwrites[n.output.id] for n in p if n.output.id in fuser.overwrites}
        if reads & seen:
            return None
        seen |= reads
    return parts


def _signature(nodes, stored):
    """What a part's kernel text is made of: its ops and attributes, which of its values it
    stores, and what each reads (a value of the part by position; a buffer by type and
    layout; a constant by value)."""
    at = {n.output.id: i for i, n in enumerate(nodes)}
    sig = []
    for n in nodes:
        ins = []
        for x in n.inputs:
            if x.id in at:
                ins.append(at[x.id])
                continue
            layout = base_layout(x)
            base = layout[0] if layout else x
            const = base.node.attr_key if base.node is not None and \
                base.node.opdef.kind == CONST else None
            ins.append((x.dtype, x.shape, layout[1:] if layout else None, base.dtype,
                        base.shape, const))
        sig.append((n.op, n.attr_key, n.output.dtype, n.output.id in stored, tuple(ins)))
    return tuple(sig)


def _buffers(nodes):
    """The buffers (base values) `nodes` read."""
    return {layout[0] for n in nodes for x in n.inputs if (layout := base_layout(x)) is not None}


def _elements(shape):
    count = 1
    for d in shape:
        count *= d
    return count
