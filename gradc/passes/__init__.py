"""The pass pipeline, in order. Each pass is a pure function Graph -> Graph.

    trace -> BEFORE_AUTODIFF -> autodiff -> AFTER_AUTODIFF -> fuse -> plan -> codegen
"""
from ..ir import release
from .cse import cse
from .dce import dce
from .lower import lower_composites
from .products import (accumulate_products, fold_sgd_steps, long_dots_as_sums,
                       share_transposes, stack_products, transpose_small_lhs)
from .simplify import clear_zero_signs, simplify
from .slices import merge_slice_sums

BEFORE_AUTODIFF = (simplify, cse, dce)
# Composites are lowered after autodiff (their VJPs are hand-written), then simplified again so
# the stability rewrites and CSE also reach the backward graph; sums of products (a weight's
# gradient over time steps) are accumulated a product at a time, and sums of slice gradients
# become one accumulation (an accumulation whose steps' operands are blocks of such a
# concatenation is one product again: stack_products); a matrix many products read transposed
# is transposed once (after simplify, which would fold the transpose back into the products'
# flags), and small products
# with B transposed read A transposed where this machine's BLAS runs them faster so; a plain
# SGD step on a weight is folded into its gradient's product (one gemm into the weight). Long
# float32 dot and matrix-vector products become sums first (sgemm sums them in float32). A
# float's `x + 0.0` clears a -0.0 as NumPy's does (a select fast-math cannot fold away).
AFTER_AUTODIFF = (simplify, lower_composites, simplify, clear_zero_signs, long_dots_as_sums,
                  accumulate_products, merge_slice_sums, stack_products, share_transposes,
                  transpose_small_lhs, fold_sgd_steps, cse, dce)


def run_passes(graph, passes, log=None, consume=False):
    """`graph` through `passes` in turn; `log` (a list) gets (pass name, graph) after each.
    Without a log, the graphs made on the way are released as soon as the next is made
    (ir.release: freed at once, not left to the cyclic collector), and with `consume` the
    caller's `graph` too (it hands over a graph no one else holds)."""
    first = graph
    for p in passes:
        new = p(graph)
        if log is not None:
            log.append((p.__name__, new))
        elif new is not graph and (consume or graph is not first):
            release(graph)
        graph = new
    return graph
