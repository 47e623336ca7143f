"""Sums of matrix products become one product.

    op(a_1) @ op(b_1) + ... + op(a_n) @ op(b_n)  ==  op(A) @ op(B)

with A the a_i and B the b_i concatenated along the contracted axis. Backpropagation through
time makes exactly such sums: a weight used at every step gets one product per step in its
gradient (the RNN benchmark's recurrent weight: 31 products of 128x32 by 32x128). One product over all steps
runs at BLAS speed, and what stays alive until the sum is the steps' small operands rather than
their (here 4x larger) products.

It fires only where it moves less memory: copying the operands, sum(k_i) * (m + n) elements,
against adding the products, n * m * n elements; and only for products used nowhere else.
"""
from collections import defaultdict

from ..ops import fn
from .sums import rewrite_sums


def _contracted_axes(node):
    """(axis of a, axis of b) that the product contracts, for a 2-D matmul node."""
    return (0 if node.attr["ta"] else 1), (1 if node.attr["tb"] else 0)


def merge_products(graph):
    return rewrite_sums(graph, _merged_sum)


def _merged_sum(new_graph, summands, uses, new):
    """The sum with each group of like products (same flags, dtype and output shape) merged
    where that moves less memory; None where nothing merges."""
    groups = defaultdict(list)
    for t in summands:
        n = t.node
        if n is not None and n.op == "matmul" and uses[t.id] == 1:
            ax_a, ax_b = _contracted_axes(n)
            a, b = n.inputs
            key = (n.attr["ta"], n.attr["tb"], a.dtype, a.shape[1 - ax_a], b.shape[1 - ax_b])
            groups[key].append(t)
    merged, out = set(), []
    for group in groups.values():
        m, n = group[0].shape
        k_total = sum(t.node.inputs[0].shape[_contracted_axes(t.node)[0]] for t in group)
        if len(group) < 2 or k_total * (m + n) >= len(group) * m * n:
            continue
        ax_a, ax_b = _contracted_axes(group[0].node)
        a = fn.concatenate([new(t.node.inputs[0]) for t in group], axis=ax_a)
        b = fn.concatenate([new(t.node.inputs[1]) for t in group], axis=ax_b)
        out.append(new_graph.apply("matmul", (a, b), **dict(group[0].node.attrs)))
        merged.update(t.id for t in group)
    if not merged:
        return None
    out += [new(t) for t in summands if t.id not in merged]
    total = out[0]
    for v in out[1:]:
        total = new_graph.apply("add", (total, v))
    return total
