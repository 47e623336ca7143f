"""Sums of matrix products are accumulated in one buffer, a product at a time.

    op(a_1) @ op(b_1) + ... + op(a_n) @ op(b_n)  ->  c = a_1 @ b_1; c = addmm(c, a_2, b_2); ...

Backpropagation through time makes exactly such sums: a weight used at every step gets one
product per step in its gradient (the RNN benchmark's recurrent weight: 31 products of 128x32
by 32x128). Each `addmm` (c + op(a) @ op(b): BLAS's gemm with beta = 1, gradc/ops/linalg.py)
takes the place of its product in the graph, so it runs as soon as that step's operands exist
and they die there, as in PyTorch's eager backward; the sum's buffer is written over at each
step (passes/memory.py). Left as a sum, the adds fuse into one loop kernel after the last
product, keeping every product alive until then; one product over the concatenated operands
(an earlier form of this pass) kept every step's operands alive instead, twice the hidden
states of an RNN. A gemm a step is no slower than the one long product here (31 steps of the
RNN: ~300 us against ~330 us and the concatenations' copies).

Products join when they have the same flags, dtype and shape, and are used nowhere else.
"""
from collections import defaultdict

from ..ir import replay
from .sums import add_trees


def accumulate_products(graph):
    uses, trees = add_trees(graph)
    position = {n.output.id: i for i, n in enumerate(graph.nodes)}
    after = {}  # product id -> the product before it in its sum (the accumulation it adds to)
    chains = {}  # sum id -> (the last product of each accumulation, the other terms)
    for root, terms in trees.items():
        groups = defaultdict(list)
        for t in terms:
            n = t.node
            if n is not None and n.op == "matmul" and uses[t.id] == 1:
                groups[(n.attrs, t.dtype, t.shape)].append(t)
        ends, joined = [], set()
        for group in groups.values():
            if len(group) < 2:
                continue
            group.sort(key=lambda t: position[t.id])
            after.update((t.id, prev.id) for prev, t in zip(group, group[1:]))
            ends.append(group[-1])
            joined.update(t.id for t in group)
        if ends:
            chains[root] = (ends, [t for t in terms if t.id not in joined])
    if not chains:
        return graph

    input_index = {v.id: i for i, v in enumerate(graph.inputs)}
    new_of = {}

    def rewrite(new_graph, node, ins):
        def new(v):
            return new_of[v.id] if v.id in new_of else new_graph.inputs[input_index[v.id]]

        vid = node.output.id
        if vid in after:  # (the accumulation so far is what replaced the product before)
            out = new_graph.apply("addmm", (new_of[after[vid]],) + ins, **dict(node.attrs))
        elif vid in chains:
            ends, others = chains[vid]
            out = new(ends[0])
            for t in ends[1:] + others:
                out = new_graph.apply("add", (out, new(t)))
        else:  # (the adds inside an accumulated sum too: dead now, left to dce)
            out = new_graph.apply(node.op, ins, **dict(node.attrs))
        new_of[vid] = out
        return out

    return replay(graph, rewrite)
