"""Sums of matrix products become one product.

    op(a_1) @ op(b_1) + ... + op(a_n) @ op(b_n)  ==  op(A) @ op(B)

with A the a_i and B the b_i concatenated along the contracted axis. Backpropagation through
time makes exactly such sums: a weight used at every step gets one product per step in its
gradient (the RNN benchmark's recurrent weight: 31 products of 128x32 by 32x128). One product over all steps
runs at BLAS speed, and what stays alive until the sum is the steps' small operands rather than
their (here 4x larger) products.

It fires only where it moves less memory: copying the operands, sum(k_i) * (m + n) elements,
against adding the products, n * m * n elements; and only for products used nowhere else.

Also here, `share_transposes`: a matrix that many products read transposed is transposed once.
"""
from collections import Counter, defaultdict

from ..ir import replay
from ..ops import fn
from ..ops.linalg import SMALL_MATMUL
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
        # blocks in the order of their first operands in the graph (an RNN's steps, in time):
        # a concatenation of the same blocks in that order elsewhere (the steps' gradients
        # of a sliced input projection, slices.py) is then the same node, stored once
        group.sort(key=lambda t: t.node.inputs[0].id)
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


# A matrix read transposed by at least this many products is transposed once for all of them.
SHARED_TRANSPOSE_READS = 3


def share_transposes(graph):
    """Products that read one matrix B transposed (`a @ B.T`, tb) read a contiguous copy of B.T
    instead (tb off), made once, where at least SHARED_TRANSPOSE_READS products read it.

    OpenBLAS packs a transposed B more slowly than a plain one: single-threaded, 32x512 @
    (128x512).T took 74 us against 47 us for the same product with B.T contiguous (32x128 @
    128x512 ones: 72 vs 53; a 64x512 @ (64x512).T 57 vs 46), while A's flag (ta) costs little.
    Backpropagation through time reads the recurrent weight so at every step (W8's LSTM: 48
    products); the copy costs about one product's difference. The copy is legalize's (fuse.py),
    which makes a library kernel's non-contiguous input contiguous, once per value. (Products
    small enough to be loops, ops/linalg.py SMALL_MATMUL, are left as they are.)"""
    reads = Counter(n.inputs[1].id for n in graph.nodes if _blas_nt(n))
    shared = {i for i, count in reads.items() if count >= SHARED_TRANSPOSE_READS}
    if not shared:
        return graph

    def rewrite(new_graph, node, ins):
        if _blas_nt(node) and node.inputs[1].id in shared:
            a, b = ins
            return new_graph.apply("matmul", (a, fn.transpose(b)), ta=node.attr["ta"], tb=False)
        return None

    return replay(graph, rewrite)


def _blas_nt(node):
    """A 2-D float product with B transposed that calls BLAS (ops/linalg.py `_product`)."""
    if node.op != "matmul" or not node.attr["tb"] or node.output.dtype.kind != "f":
        return False
    m, n = node.output.shape
    return m * n * node.inputs[1].shape[1] > SMALL_MATMUL  # (B is n x k)
