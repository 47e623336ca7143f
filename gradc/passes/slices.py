"""Sums of slice gradients become one accumulation.

The gradient of `x[s]` is `unslice(g)`: zeros shaped like x, with g in the slice. A value that is
sliced many times (an RNN's `xw[:, t]` at every step, a convolution written as shifted slices, a
max-pool as strided slices) gets a sum of such zero-padded, full-size buffers, all alive until
they are added: memory that grows as T^2 over T steps. Here every sum with unslice terms becomes
one `unslice_sum` (gradc/ops/movement.py): a kernel that writes the other terms' sum (or zeros)
once and adds each slice gradient into its slice, so what stays alive is the slice-sized g's.

Why one kernel after autodiff rather than an accumulation in place as each g is made: in
backpropagation through time each step's g stays alive anyway, until the one product of
`merge_products` that makes the recurrent weight's gradient from all steps, so adding it in
earlier would free nothing (and it would need an in-place buffer facility in the planner).
"""
from collections import Counter

from ..ir import replay


def _is_sum_of_terms(v, uses):
    return v.node is not None and v.node.op == "add" and uses[v.id] == 1


def merge_slice_sums(graph):
    uses = Counter(v.id for n in graph.nodes for v in n.inputs)
    uses.update(v.id for v in graph.outputs)
    inner_adds = {v.id for n in graph.nodes if n.op == "add" for v in n.inputs
                  if _is_sum_of_terms(v, uses)}
    input_index = {v.id: i for i, v in enumerate(graph.inputs)}
    new_of = {}

    def new(new_graph, v):
        return new_of[v.id] if v.id in new_of else new_graph.inputs[input_index[v.id]]

    def terms(root):
        """The summands of the add tree rooted at `root` (old values), left to right."""
        out, stack = [], [root]
        while stack:
            v = stack.pop()
            if v is root or v.id in inner_adds:
                stack += [v.node.inputs[1], v.node.inputs[0]]
            else:
                out.append(v)
        return out

    def slice_sum(new_graph, node):
        summands = terms(node.output)
        # an unslice read elsewhere too is materialized anyway: it stays a dense term
        sliced = [t for t in summands if t.node is not None and t.node.op == "unslice"
                  and uses[t.id] == 1]
        if not sliced:
            return None
        sliced_ids = {t.id for t in sliced}
        dense = [t for t in summands if t.id not in sliced_ids]
        slices = tuple((t.node.attr["starts"], t.node.attr["stops"], t.node.attr["steps"])
                       for t in sliced)
        ins = ([new(new_graph, t.node.inputs[0]) for t in sliced]
               + [new(new_graph, t) for t in dense])
        return new_graph.apply("unslice_sum", ins, shape=node.output.shape, slices=slices)

    def rewrite(new_graph, node, ins):
        out = None
        if node.op == "add" and node.output.id not in inner_adds:
            out = slice_sum(new_graph, node)
        if out is None:
            out = new_graph.apply(node.op, ins, **dict(node.attrs))
        new_of[node.output.id] = out
        return out

    return replay(graph, rewrite)
