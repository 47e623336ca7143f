"""Sums of slice gradients become one accumulation.

The gradient of `x[s]` is `unslice(g)`: zeros shaped like x, with g in the slice. A value that is
sliced many times (an RNN's `xw[:, t]` at every step, a convolution written as shifted slices, a
max-pool as strided slices) gets a sum of such zero-padded, full-size buffers, all alive until
they are added: memory that grows as T^2 over T steps. Here every sum with unslice terms becomes
one `unslice_sum` (gradc/ops/movement.py): a kernel that writes the other terms' sum (or zeros)
once and adds each slice gradient into its slice, so what stays alive is the slice-sized g's.
Slices that tile the array in blocks (along one axis, covering it once) make a concatenation
instead, which copies each block once (or not at all: memory.py stores a block straight into
its place where it can) and writes no zeros.

Each step's g still lives until that one kernel, at the end of the backward. Adding it into
its slice as soon as it is made (as products.py accumulates a weight's gradient, an addmm per
step, each written over the sum before it) would free it at its step; not done yet: no benchmark
workload's arena is above PyTorch's for it.
"""
from ..ops import fn
from .sums import rewrite_sums


def merge_slice_sums(graph):
    if not any(n.op == "unslice" for n in graph.nodes):
        return graph  # (nothing to merge: no replay, ~4 ms of a GPT block's compile)
    return rewrite_sums(graph, _slice_sum)


def _slice_sum(new_graph, summands, uses, new):
    """The sum as one unslice_sum, or None if no summand is an unslice."""
    # an unslice read elsewhere too is materialized anyway: it stays a dense term
    sliced = [t for t in summands if t.node is not None and t.node.op == "unslice"
              and uses[t.id] == 1]
    if not sliced:
        return None
    sliced_ids = {t.id for t in sliced}
    dense = [t for t in summands if t.id not in sliced_ids]
    slices = tuple((t.node.attr["starts"], t.node.attr["stops"], t.node.attr["steps"])
                   for t in sliced)
    tiling = None if dense else _tiling(sliced[0].shape, slices)
    if tiling is not None:  # the slices cover the array once, side by side: it is their blocks
        axis, order = tiling
        blocks = [new(sliced[i].node.inputs[0]) for i in order]
        if axis == 0 and all(_splits_first_axis(b) for b in blocks):
            # the blocks' own values (each step's (B, H) gradient, not its (1, B, H) view),
            # concatenated: read as themselves, the plan stores each straight into its block
            # (memory.py _concat_members) and the concatenation copies nothing
            whole = fn.concatenate([b.node.inputs[0] for b in blocks], axis=0)
            return fn.reshape(whole, sliced[0].shape)
        return fn.concatenate(blocks, axis=axis)
    ins = [new(t.node.inputs[0]) for t in sliced] + [new(t) for t in dense]
    return new_graph.apply("unslice_sum", ins, shape=sliced[0].shape, slices=slices)


def _tiling(shape, slices):
    """(axis, the slices in order along it) where the slices, with unit steps, cut `shape` along
    one axis into blocks that cover it once (an RNN's steps of its input projection, an LSTM's
    four gates), else None. Their sum is then a concatenation: a copy of each block, where
    unslice_sum zeroes the array and adds each block in (W8's 48 steps: 0.8 ms a step), and
    no copy at all for a block its kernel stores in place (memory.py _concat_members: an
    LSTM's gate gradients, 1.1 us a step as an unslice_sum)."""
    cut = {d for starts, stops, _ in slices
           for d, (start, stop, n) in enumerate(zip(starts, stops, shape)) if (start, stop) != (0, n)}
    if len(cut) > 1 or any(step != 1 for _, _, steps in slices for step in steps):
        return None
    axis = cut.pop() if cut else 0
    order = sorted(range(len(slices)), key=lambda i: slices[i][0][axis])
    at = 0
    for i in order:
        if slices[i][0][axis] != at:
            return None
        at = slices[i][1][axis]
    return (axis, order) if at == shape[axis] else None


def _splits_first_axis(v):
    """`v` is a reshape of a value whose first axis it splits in two (the (1, B, H) gradient of
    a step's slice xw[t] from the step's (B, H) one)."""
    if v.node is None or v.node.op != "reshape" or v.ndim < 2:
        return False
    x = v.node.inputs[0]
    return x.ndim >= 1 and x.shape[0] == v.shape[0] * v.shape[1] and x.shape[1:] == v.shape[2:]
