"""Rematerialization: which reads of a forward activation by the backward's library kernels
(a weight gradient's matmul) are served by recomputing the activation just before them, so it
need not stay in memory from the forward to the backward. fuse.py's legalize gives each such
read a copy of its own, which the fuser fills by recomputing the value (`_Fuser.recompute`)."""
from ..ops.registry import CONST, ELEMENTWISE, KERNEL
from .fuse import RECOMPUTE_LIMIT, _nbytes, _stored_anyway, base_layout

REMAT_DISTANCE = 64  # nodes between a value's reads that make the later one a late read


def late_reads(graph):
    """(node's output id, input index) of the reads by a library kernel of an elementwise
    value whose previous read came more than REMAT_DISTANCE nodes before: a weight gradient's
    read of a forward activation (GELU's output, a layer norm's). Such a read gets a copy of
    its own that the fuser fills by recomputing the value's elementwise chain, just before the
    library kernel, so the value need not stay in memory from the forward to the backward
    (AOTAutograd's rematerialization; `compile.lower` keeps it only where the arena shrinks).
    Only reads whose value looks recomputable (_recomputable) are taken: the fuser decides,
    but a refusal costs a second grouping."""
    last_use = {}
    for i, node in enumerate(graph.nodes):
        for x in node.inputs:
            if (layout := base_layout(x)) is not None:
                last_use[layout[0].id] = i
    stored = _stored_anyway(graph)
    last, late = {}, set()
    for i, node in enumerate(graph.nodes):
        for j, x in enumerate(node.inputs):
            layout = base_layout(x)
            if layout is None:
                continue
            base = layout[0]
            if (node.opdef.kind == KERNEL and base.node is not None
                    and base.node.opdef.kind == ELEMENTWISE and i - last.get(base.id, i) > REMAT_DISTANCE
                    and _recomputable(base, i, last_use, stored)):
                late.add((node.output.id, j))
            last[base.id] = i
    return late


def _recomputable(x, now, last_use, stored):
    """Whether `x` is a short elementwise chain over values that are in memory at graph
    position `now` anyway (read later, inputs, constants), or stored anyway and no larger than
    `x` together: the graph's view of what fuse.py's `_Fuser.recompute` will check. An LSTM's hidden
    state, read by the weight gradient after the whole backward, is not (its chain runs back
    through every step)."""
    chain, seen, stack, longer_lived = 0, set(), [x], 0
    while stack:
        v = stack.pop()
        if v.id in seen:
            continue
        seen.add(v.id)
        if v is x or (v.node is not None and v.node.opdef.kind == ELEMENTWISE
                      and v.id not in stored and last_use.get(v.id, -1) <= now):
            chain += 1
            if chain > RECOMPUTE_LIMIT:
                return False
            stack.extend(v.node.inputs)
            continue
        layout = base_layout(v)
        if layout is None:
            return False
        base = layout[0]
        if base.node is None or base.node.opdef.kind == CONST or last_use.get(base.id, -1) > now:
            continue
        if base.id not in stored:
            return False
        longer_lived += _nbytes(base)
    return longer_lived <= _nbytes(x)
