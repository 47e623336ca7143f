"""Gathers by integer indices and their VJPs, the scatter-adds.

`take(x, idx, axis)` is np.take (embedding lookups); `take_along_axis` is the
`x[np.arange(n), labels]` pattern. Both fold x to (outer, n, inner) so one loop nest serves every
axis. Indices are checked in the kernel: an index out of range raises instead of reading memory.
"""
import numpy as np

from ..errors import ShapeError
from . import fn
from .registry import KERNEL, OpDef, register


def _fold(shape, axis):
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
    return outer, shape[axis], inner


def _check_index(k, idx_expr, n):
    k.line(f"j = {idx_expr}")
    k.line("if j < 0:")
    k.line(f"    j += {n}")
    k.line(f"if j < 0 or j >= {n}:")
    k.line(f"    raise IndexError('gradc: index out of range in {k.op} ({k.source})')")


# --- take ----------------------------------------------------------------------------------
def _take_infer(inputs, axis):
    x, idx = inputs
    return x.shape[:axis] + idx.shape + x.shape[axis + 1:], x.dtype


def _take_ref(x, idx, axis):
    return np.take(x, idx, axis=axis)


def _take_kernel(k):
    """take, and its scatter-add take_grad (into a zeroed output)."""
    scatter = k.op == "take_grad"
    idx = k.inputs[1]
    outer, n, inner = _fold((k.output if scatter else k.inputs[0]).shape, k.attr["axis"])
    o, nn, i_, m = (k.param("outer", outer), k.param("n", n), k.param("inner", inner),
                    k.param("m", idx.size))
    if scatter:
        k.line(f"for i in range({k.size(k.output)}):")
        k.line(f"    out[i] = {k.zero}")
    k.line(f"for a in range({o}):")
    k.line(f"    for t in range({m}):")
    with k.indent(2):
        _check_index(k, "x1[t]", nn)
        k.line(f"for b in range({i_}):")
        row, gathered = f"(a * {m} + t) * {i_} + b", f"(a * {nn} + j) * {i_} + b"
        k.line(f"    out[{gathered}] += x0[{row}]" if scatter else
               f"    out[{row}] = x0[{gathered}]")


# CUDA: the launches of cuda_rt.py's kernel for this op: (program, node, out Buf, input Bufs)
def _cuda_gather(prog, node, out, ins):
    """The gathers (a thread per output element) and their scatter-adds (a thread per input
    element, atomics into a zeroed output); out-of-range indices set the error flag."""
    x, idx = node.inputs
    axis = node.attr["axis"]
    scatter = node.op.endswith("_grad")
    outer, n, inner = _fold(node.output.shape if scatter else x.shape, axis)
    if node.op in ("take", "take_grad"):
        m = idx.size
    else:
        m = idx.shape[axis]
    launches = [prog.fill_zero(out, node)] if scatter else []
    launches.append(prog.launch(node.op, [out, ins[0], ins[1], outer, n, inner, m, prog.err,
                                          prog.error_code(node)], outer * m * inner))
    return launches


register(OpDef("take", KERNEL, _take_infer, ref=_take_ref, nondiff=(1,),
               vjp=lambda n, g: [n.output.graph.apply(
                   "take_grad", (g, n.inputs[1]), axis=n.attr["axis"],
                   size=n.inputs[0].shape[n.attr["axis"]]), None],
               kernel=_take_kernel, checks_indices=True, cuda=_cuda_gather))


def _take_grad_infer(inputs, axis, size):
    g, idx = inputs
    return g.shape[:axis] + (size,) + g.shape[axis + idx.ndim:], g.dtype


def _take_grad_ref(g, idx, axis, size):
    shape = g.shape[:axis] + (size,) + g.shape[axis + idx.ndim:]
    out = np.zeros(shape, g.dtype)
    outer, _, inner = _fold(shape, axis)
    g3 = g.reshape(outer, idx.size, inner)
    o3 = out.reshape(outer, size, inner)
    for t, j in enumerate(idx.reshape(-1)):
        o3[:, j, :] += g3[:, t, :]
    return out


register(OpDef("take_grad", KERNEL, _take_grad_infer, ref=_take_grad_ref, nondiff=(1,),
               vjp=lambda n, g: [fn.take(g, n.inputs[1], n.attr["axis"]), None],
               kernel=_take_kernel, checks_indices=True, cuda=_cuda_gather))


# --- take_along_axis -----------------------------------------------------------------------
def _tala_infer(inputs, axis):
    x, idx = inputs
    if idx.ndim != x.ndim or any(a != b for d, (a, b) in enumerate(zip(x.shape, idx.shape))
                                 if d != axis):
        raise ShapeError(f"take_along_axis: indices {idx.shape} do not fit array {x.shape}")
    return idx.shape, x.dtype


def _tala_kernel(k):
    """take_along_axis, and its scatter-add take_along_axis_grad (into a zeroed output)."""
    scatter = k.op == "take_along_axis_grad"
    idx = k.inputs[1]
    outer, n, inner = _fold((k.output if scatter else k.inputs[0]).shape, k.attr["axis"])
    m_ = idx.shape[k.attr["axis"]]
    o, nn, i_, m = (k.param("outer", outer), k.param("n", n), k.param("inner", inner),
                    k.param("m", m_))
    if scatter:
        k.line(f"for i in range({k.size(k.output)}):")
        k.line(f"    out[i] = {k.zero}")
    k.line(f"for a in range({o}):")
    k.line(f"    for t in range({m}):")
    k.line(f"        for b in range({i_}):")
    with k.indent(3):
        _check_index(k, f"x1[(a * {m} + t) * {i_} + b]", nn)
        row, gathered = f"(a * {m} + t) * {i_} + b", f"(a * {nn} + j) * {i_} + b"
        k.line(f"out[{gathered}] += x0[{row}]" if scatter else f"out[{row}] = x0[{gathered}]")


register(OpDef("take_along_axis", KERNEL, _tala_infer,
               ref=lambda x, idx, axis: np.take_along_axis(x, idx, axis=axis), nondiff=(1,),
               vjp=lambda n, g: [n.output.graph.apply(
                   "take_along_axis_grad", (g, n.inputs[1]), axis=n.attr["axis"],
                   size=n.inputs[0].shape[n.attr["axis"]]), None],
               kernel=_tala_kernel, checks_indices=True, cuda=_cuda_gather))


def _tala_grad_ref(g, idx, axis, size):
    shape = list(g.shape)
    shape[axis] = size
    out = np.zeros(shape, g.dtype)
    outer, _, inner = _fold(tuple(shape), axis)
    m = idx.shape[axis]
    g3, i3, o3 = g.reshape(outer, m, inner), idx.reshape(outer, m, inner), out.reshape(outer, size, inner)
    for a in range(outer):
        for t in range(m):
            for b in range(inner):
                o3[a, i3[a, t, b], b] += g3[a, t, b]
    return out


def _tala_grad_infer(inputs, axis, size):
    shape = list(inputs[0].shape)
    shape[axis] = size
    return tuple(shape), inputs[0].dtype


register(OpDef("take_along_axis_grad", KERNEL, _tala_grad_infer, ref=_tala_grad_ref, nondiff=(1,),
               vjp=lambda n, g: [fn.take_along_axis(g, n.inputs[1], n.attr["axis"]), None],
               kernel=_tala_kernel, checks_indices=True, cuda=_cuda_gather))
