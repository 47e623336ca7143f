"""Matrix products: `matmul` (2-D) and `bmm` (batched 3-D), each with transpose flags so that
the backward's `g @ B.T` reads B in place instead of copying a transpose; and `addmm`,
c + op(a) @ op(b), the step of a product sum accumulated in one buffer (passes/products.py).
Emitted as BLAS calls (gradc/codegen/rt.py: NumPy's own OpenBLAS) into the planned, contiguous
output buffer.
"""

import numpy as np

from ..errors import ShapeError
from .elementwise import CODE_DTYPE
from .registry import KERNEL, OpDef, register


def _dims(a, b, ta, tb):
    m, k = (a[1], a[0]) if ta else (a[0], a[1])
    k2, n = (b[1], b[0]) if tb else (b[0], b[1])
    if k != k2:
        raise ShapeError(f"matmul: inner dimensions {k} and {k2} differ")
    return m, k, n


def _op(x, t):
    return np.swapaxes(x, -1, -2) if t else x


def _vjp(node, g):
    """C = op(A) @ op(B); each cotangent is again one product with transpose flags."""
    return _product_vjp(node, *node.inputs, g)


def _addmm_vjp(node, g):
    """C + op(A) @ op(B) (times alpha, a 0-d fourth input, where given: an SGD step folded into
    its gradient's product, passes/products.py): C's cotangent is g, the others a product's,
    alpha's the sum of g times the product."""
    if len(node.inputs) == 3:
        return [g] + _product_vjp(node, *node.inputs[1:], g)
    c, a, b, alpha = node.inputs
    product = node.output.graph.apply("matmul", (a, b), ta=node.attr["ta"], tb=node.attr["tb"])
    return [g] + _product_vjp(node, a, b, g * alpha) + [(g * product).sum()]


def _product_vjp(node, a, b, g):
    ta, tb = node.attr["ta"], node.attr["tb"]
    op = "matmul" if node.op == "addmm" else node.op
    mm = lambda x, y, tx, ty: node.output.graph.apply(op, (x, y), ta=tx, tb=ty)  # noqa: E731
    # The cotangent whose product reads the larger operand comes first in the graph (so in
    # the schedule): x @ W's weight gradient reads the activation x, often for the last time,
    # so x is freed before x's own cotangent (x-sized) is allocated (W10's train step 13.25
    # -> 12.00 MiB).
    first_b = a.size > b.size
    gb = (mm(g, a, True, ta) if tb else mm(a, g, not ta, False)) if first_b else None
    ga = mm(b, g, tb, True) if ta else mm(g, b, False, not tb)
    if gb is None:
        gb = mm(g, a, True, ta) if tb else mm(a, g, not ta, False)
    return [ga, gb]


def _infer_mm(inputs, ta, tb):
    a, b = inputs
    if a.ndim != 2 or b.ndim != 2:
        raise ShapeError(f"matmul op takes 2-D operands, got {a.shape} and {b.shape}")
    m, _, n = _dims(a.shape, b.shape, ta, tb)
    return (m, n), a.dtype


def _infer_addmm(inputs, ta, tb):
    c, a, b, *alpha = inputs
    shape, dtype = _infer_mm((a, b), ta, tb)
    if c.shape != shape or c.dtype != dtype:
        raise ShapeError(f"addmm adds a {c.dtype}{c.shape} to a {dtype}{shape} product")
    if alpha and (alpha[0].shape != () or alpha[0].dtype != dtype):
        raise ShapeError(f"addmm scales by a {alpha[0].dtype}{alpha[0].shape}, not a 0-d {dtype}")
    return shape, dtype


def _infer_bmm(inputs, ta, tb):
    a, b = inputs
    if a.ndim != 3 or b.ndim != 3 or a.shape[0] != b.shape[0]:
        raise ShapeError(f"bmm takes 3-D operands with one batch size, got {a.shape}, {b.shape}")
    m, _, n = _dims(a.shape[1:], b.shape[1:], ta, tb)
    return (a.shape[0], m, n), a.dtype


# Below this many multiply-adds a plain loop nest beats the BLAS call's fixed cost (the tiny MLP
# benchmark's 100x2 @ 2x16). Above it BLAS wins by far on an idle machine (measured here, us per
# call, loops vs BLAS: 32x64@64x128 13 vs 6; 64x128@128x32 35 vs 6; 512x32@32x32 90 vs 10), though
# OpenBLAS's threads suffer when the cores are busy with other work.
SMALL_MATMUL = 1 << 13


def _loop_matmul(k, a, b, c, m, n, kk, ta, tb, add=False):
    """c[m,n] = op(a) @ op(b) (with `add`, c += op(a) @ op(b)) with the loop order that reads
    memory contiguously."""
    A = (lambda i, p: f"{a}[{p} * {m} + {i}]") if ta else (lambda i, p: f"{a}[{i} * {kk} + {p}]")
    B = (lambda p, j: f"{b}[{j} * {kk} + {p}]") if tb else (lambda p, j: f"{b}[{p} * {n} + {j}]")
    zero = k.zero
    # a matrix-vector product (one output column; b is then a vector in either layout): the
    # contiguous axis innermost (a loop of one over j would keep c's element in memory: the
    # tiny MLP benchmark's two such products took 6 us each)
    k.line(f"if {n} == 1:")
    with k.indent():
        if ta:
            if not add:
                k.line(f"for i in range({m}):")
                k.line(f"    {c}[i] = {zero}")
            k.line(f"for p in range({kk}):")
            k.line(f"    s = {b}[p]")
            k.line(f"    for i in range({m}):")
            k.line(f"        {c}[i] += {A('i', 'p')} * s")
        else:
            k.line(f"for i in range({m}):")
            k.line("    acc = " + (f"{c}[i]" if add else zero))
            k.line(f"    for p in range({kk}):")
            k.line(f"        acc += {A('i', 'p')} * {b}[p]")
            k.line(f"    {c}[i] = acc")
    k.line("else:")
    with k.indent():
        if tb:  # rows of op(b) are contiguous in p: a dot product per output
            k.line(f"for i in range({m}):")
            k.line(f"    for j in range({n}):")
            k.line(f"        acc = {c}[i * {n} + j]" if add else f"        acc = {zero}")
            k.line(f"        for p in range({kk}):")
            k.line(f"            acc += {A('i', 'p')} * {B('p', 'j')}")
            k.line(f"        {c}[i * {n} + j] = acc")
        else:
            k.line(f"for i in range({m}):")  # rows of b are contiguous in j: axpy into c's row
            if not add:
                k.line(f"    for j in range({n}):")
                k.line(f"        {c}[i * {n} + j] = {zero}")
            k.line(f"    for p in range({kk}):")
            k.line(f"        s = {A('i', 'p')}")
            k.line(f"        for j in range({n}):")
            k.line(f"            {c}[i * {n} + j] += s * {B('p', 'j')}")


def _product(k, a, b, c, a_shape, b_shape, add=False, alpha=None):
    """One 2-D product of the flat arrays named a, b into c (with `add`, added to c; with
    `alpha`, the name of a scale, added scaled): BLAS, or loops when small."""
    ta, tb = k.attr["ta"], k.attr["tb"]
    m, kk, n = _dims(a_shape, b_shape, ta, tb)
    small = m * n * kk <= SMALL_MATMUL or not np.issubdtype(k.output.dtype, np.floating)
    if alpha is not None:  # (passes/products.py folds only products that call BLAS)
        assert not small and add, "a scaled addmm calls BLAS"
        gemm = ("sgemm" if k.output.dtype == np.float32 else "dgemm") + "_scaled"
        k.line(f"{gemm}({ta}, {tb}, {k.param('m', m)}, {k.param('n', n)}, {k.param('k', kk)}, "
               f"{a}, {b}, {c}, {alpha})")
    elif small:  # (no integer BLAS)
        _loop_matmul(k, a, b, c, k.param("m", m), k.param("n", n), k.param("k", kk), ta, tb, add)
    else:  # BLAS: gradc/codegen/rt.py
        gemm = ("sgemm" if k.output.dtype == np.float32 else "dgemm") + ("_add" if add else "")
        k.line(f"{gemm}({ta}, {tb}, {k.param('m', m)}, {k.param('n', n)}, {k.param('k', kk)}, "
               f"{a}, {b}, {c})")


def _matmul_kernel(k):
    a, b = k.inputs
    _product(k, "x0", "x1", "out", a.shape, b.shape)


def _addmm_kernel(k):
    c, a, b, *alpha = k.inputs
    # out starts as c; the plan usually writes out over c, read here for the last time
    # (passes/memory.py _overwritable), and then there is nothing to copy
    k.line("if p_out != p_x0:")
    with k.indent():
        k.line(f"for i in range({k.size(k.output)}):")
        k.line("    out[i] = x0[i]")
    _product(k, "x1", "x2", "out", a.shape, b.shape, add=True, alpha="x3[0]" if alpha else None)


def _bmm_kernel(k):
    """One product per batch entry; a call of at least 2 * BLOCK_WORK multiply-adds in all
    runs in chunks of entries that gradc's threads take (the cut, and so the bits, by the
    shape alone: W6's attention, 8 entries of 64x64x64)."""
    from ..codegen.rt import BLOCK_WORK
    a, b = k.inputs
    nb, m, n = k.output.shape
    batch = k.param("batch", nb)
    steps = {"x0": a.shape[1] * a.shape[2], "x1": b.shape[1] * b.shape[2], "out": m * n}
    sa, sb, so = (k.param(f"{name}_step", steps[x]) for name, x in
                  (("a", "x0"), ("b", "x1"), ("out", "out")))
    k.line(f"for t in range({batch}):")
    with k.indent():
        k.line(f"a_t = x0[t * {sa}:(t + 1) * {sa}]")
        k.line(f"b_t = x1[t * {sb}:(t + 1) * {sb}]")
        k.line(f"out_t = out[t * {so}:(t + 1) * {so}]")
        _product(k, "a_t", "b_t", "out_t", a.shape[1:], b.shape[1:])
    inner = a.shape[1] if k.attr["ta"] else a.shape[2]
    if nb > 1 and nb * m * n * inner >= 2 * BLOCK_WORK:
        k.in_chunks(batch, steps)


# CUDA: the launches of cuda_rt.py's kernel for this op: (program, node, out Buf, input Bufs)
def _cuda_matmul(prog, node, out, ins):
    """matmul/bmm: cuda_rt's tiled shared-memory kernel for floats, a thread per output element
    for integers."""
    a, b = node.inputs
    ta, tb = bool(node.attr["ta"]), bool(node.attr["tb"])
    if node.op == "bmm":
        batch = a.shape[0]
        m, k, n = _dims(a.shape[1:], b.shape[1:], ta, tb)
        steps = (a.shape[1] * a.shape[2], b.shape[1] * b.shape[2])
    else:
        batch = 1
        m, k, n = _dims(a.shape, b.shape, ta, tb)
        steps = (0, 0)
    args = [out, ins[0], ins[1], batch, m, n, k, ta, tb, *steps, prog.zero(node)]
    dtype = node.output.dtype.name
    if dtype in ("float32", "float64"):  # shared-memory tiles (cuda_rt.matmul_tiled_*)
        from ..codegen.cuda_rt import TILE, tiled_items
        launch = prog.launch(f"matmul_tiled_{CODE_DTYPE[dtype]}", args, tiled_items(batch, m, n),
                             threads=TILE * TILE)
        # TILE differs under the simulator: a generated module sizes the launch when it loads
        launch.size_source = (f"tiled_items({batch}, {m}, {n})", "TILE * TILE")
        return [launch]
    return [prog.launch("matmul", args, batch * m * n)]


def _cuda_addmm(prog, node, out, ins):
    """addmm: cuda_rt's addmm kernel, a thread per output element (out may be c's buffer). (A
    scaled addmm is the CPU target's only: passes/products.py fold_sgd_steps.)"""
    c, a, b = node.inputs
    ta, tb = bool(node.attr["ta"]), bool(node.attr["tb"])
    m, k, n = _dims(a.shape, b.shape, ta, tb)
    return [prog.launch("addmm", [out, *ins, m, n, k, ta, tb], m * n)]


register(OpDef("matmul", KERNEL, _infer_mm,
               ref=lambda a, b, ta, tb: np.matmul(_op(a, ta), _op(b, tb)),
               vjp=_vjp, kernel=_matmul_kernel, cuda=_cuda_matmul))
register(OpDef("addmm", KERNEL, _infer_addmm,
               ref=lambda c, a, b, *alpha, ta, tb: c + (alpha[0] if alpha else 1) * np.matmul(
                   _op(a, ta), _op(b, tb)),
               vjp=_addmm_vjp, kernel=_addmm_kernel, cuda=_cuda_addmm))
register(OpDef("bmm", KERNEL, _infer_bmm,
               ref=lambda a, b, ta, tb: np.matmul(_op(a, ta), _op(b, tb)),
               vjp=_vjp, kernel=_bmm_kernel, cuda=_cuda_matmul))
