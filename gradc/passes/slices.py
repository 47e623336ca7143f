"""Sums of slice gradients become one accumulation.

The gradient of `x[s]` is `unslice(g)`: zeros shaped like x, with g in the slice. A value that is
sliced many times (an RNN's `xw[:, t]` at every step, a convolution written as shifted slices, a
max-pool as strided slices) gets a sum of such zero-padded, full-size buffers, all alive until
they are added: memory that grows as T^2 over T steps. Here every sum with unslice terms becomes
one `unslice_sum` (gradc/ops/movement.py): a kernel that writes the other terms' sum (or zeros)
once and adds each slice gradient into its slice, so what stays alive is the slice-sized g's.

Each step's g still lives until that one kernel, at the end of the backward. Adding it into
its slice as soon as it is made (as products.py accumulates a weight's gradient, an addmm per
step, each written over the sum before it) would free it at its step; not done yet: no benchmark
workload's arena is above PyTorch's for it.
"""
from .sums import rewrite_sums


def merge_slice_sums(graph):
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
    ins = [new(t.node.inputs[0]) for t in sliced] + [new(t) for t in dense]
    return new_graph.apply("unslice_sum", ins, shape=sliced[0].shape, slices=slices)
