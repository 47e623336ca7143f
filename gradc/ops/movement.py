"""Shape and movement ops.

View ops (reshape, broadcast_to, transpose, slice) have no kernel: each maps the (offset,
strides) index map of its input to that of its output, so fused loops read through them for free.
A reshape that is not expressible as strides (of a non-contiguous input) materializes a copy.

`unslice` (the VJP of slice) and `concatenate` are small loop kernels of their own.
"""
import numpy as np

from ..errors import ShapeError
from . import fn
from .registry import KERNEL, VIEW, OpDef, register


def contiguous_strides(shape):
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= d
    return tuple(reversed(strides))


# --- reshape -------------------------------------------------------------------------------
def _reshape_infer(inputs, shape):
    (x,) = inputs
    if int(np.prod(shape, dtype=np.int64)) != x.size:
        raise ShapeError(f"cannot reshape {x.shape} into {shape}")
    return tuple(shape), x.dtype


def _reshape_view(layout, in_shape, shape):
    offset, strides = layout
    kept = [(d, s) for d, s in zip(in_shape, strides) if d != 1]
    if [d for d, _ in kept] == [d for d in shape if d != 1]:  # only size-1 axes move
        it = iter(s for _, s in kept)
        return offset, tuple(0 if d == 1 else next(it) for d in shape)
    if all(s == c for (d, s), c in zip(zip(in_shape, strides), contiguous_strides(in_shape))
           if d != 1):
        return offset, contiguous_strides(shape)
    return None


register(OpDef("reshape", VIEW, _reshape_infer,
               ref=lambda x, shape: x.reshape(shape),
               vjp=lambda n, g: [fn.reshape(g, n.inputs[0].shape)],
               view=_reshape_view))


# --- broadcast_to --------------------------------------------------------------------------
def _broadcast_infer(inputs, shape):
    (x,) = inputs
    if x.ndim != len(shape) or any(a != b and a != 1 for a, b in zip(x.shape, shape)):
        raise ShapeError(f"cannot broadcast {x.shape} to {shape} (ranks must match in the IR)")
    return tuple(shape), x.dtype


def _broadcast_vjp(node, g):
    x = node.inputs[0]
    axes = tuple(i for i, (a, b) in enumerate(zip(x.shape, g.shape)) if a == 1 and b != 1)
    return [fn.sum(g, axes, keepdims=True)]


register(OpDef("broadcast_to", VIEW, _broadcast_infer,
               ref=lambda x, shape: np.broadcast_to(x, shape),
               vjp=_broadcast_vjp,
               view=lambda layout, in_shape, shape: (
                   layout[0], tuple(0 if a == 1 and b != 1 else s
                                    for a, b, s in zip(in_shape, shape, layout[1])))))


# --- transpose -----------------------------------------------------------------------------
register(OpDef("transpose", VIEW,
               lambda inputs, perm: (tuple(inputs[0].shape[p] for p in perm), inputs[0].dtype),
               ref=lambda x, perm: np.transpose(x, perm),
               vjp=lambda n, g: [fn.transpose(g, tuple(np.argsort(n.attr["perm"])))],
               view=lambda layout, in_shape, perm: (layout[0], tuple(layout[1][p] for p in perm))))


# --- slice ---------------------------------------------------------------------------------
def _slice_shape(starts, stops, steps):
    return tuple(len(range(a, b, c)) for a, b, c in zip(starts, stops, steps))


def _slice_view(layout, in_shape, starts, stops, steps):
    offset, strides = layout
    return (offset + sum(a * s for a, s in zip(starts, strides)),
            tuple(s * c for s, c in zip(strides, steps)))


def _slices(starts, stops, steps):
    return tuple(slice(a, b if b >= 0 else None, c) for a, b, c in zip(starts, stops, steps))


register(OpDef("slice", VIEW,
               lambda inputs, starts, stops, steps: (_slice_shape(starts, stops, steps),
                                                     inputs[0].dtype),
               ref=lambda x, starts, stops, steps: x[_slices(starts, stops, steps)],
               vjp=lambda n, g: [n.output.graph.apply(
                   "unslice", (g,), shape=n.inputs[0].shape, starts=n.attr["starts"],
                   stops=n.attr["stops"], steps=n.attr["steps"])],
               view=_slice_view))


# --- unslice: zeros of `shape` with g written into the slice (the VJP of slice) -------------
def _unslice_ref(g, shape, starts, stops, steps):
    out = np.zeros(shape, g.dtype)
    out[_slices(starts, stops, steps)] = g
    return out


def _unslice_kernel(k):
    # Zero the output, then scatter g through the slice's strides (an affine index map).
    g = k.inputs[0]
    starts, steps = k.attr["starts"], k.attr["steps"]
    strides = contiguous_strides(k.attr["shape"])
    offset = sum(a * s for a, s in zip(starts, strides))
    k.line(f"for i in range({k.size(k.output)}):")
    k.line(f"    out[i] = {k.zero}")
    loops = k.loops(g.shape)
    dst = " + ".join([k.param("offset", offset)] + [
        f"{i} * {k.param(f'stride{d}', strides[d] * steps[d])}" for d, i in enumerate(loops.index)])
    with loops:
        k.line(f"out[{dst}] = x0[{loops.flat}]")


# CUDA: the launches of cuda_rt.py's kernel for this op: (program, node, out Buf, input Bufs)
def _cuda_unslice(prog, node, out, ins):
    g = node.inputs[0]
    starts, steps = node.attr["starts"], node.attr["steps"]
    strides = contiguous_strides(node.attr["shape"])
    offset = sum(a * s for a, s in zip(starts, strides))
    shape = prog.constant(np.array(g.shape or (1,), np.int64))
    dst = prog.constant(np.array([s * st for s, st in zip(strides, steps)] or [0], np.int64))
    return [prog.fill_zero(out, node),
            prog.launch("unslice", [out, ins[0], g.size, shape, dst, offset], g.size)]


register(OpDef("unslice", KERNEL,
               lambda inputs, shape, starts, stops, steps: (tuple(shape), inputs[0].dtype),
               ref=_unslice_ref,
               vjp=lambda n, g: [fn.slice_(g, n.attr["starts"], n.attr["stops"], n.attr["steps"])],
               kernel=_unslice_kernel, cuda=_cuda_unslice))


# --- concatenate ---------------------------------------------------------------------------
def _concat_infer(inputs, axis):
    shape = list(inputs[0].shape)
    shape[axis] = sum(v.shape[axis] for v in inputs)
    return tuple(shape), inputs[0].dtype


def _concat_vjp(node, g):
    axis, start, out = node.attr["axis"], 0, []
    for x in node.inputs:
        starts = [0] * g.ndim
        stops = list(g.shape)
        starts[axis], stops[axis] = start, start + x.shape[axis]
        out.append(fn.slice_(g, starts, stops, (1,) * g.ndim))
        start += x.shape[axis]
    return out


def _concat_kernel(k):
    # Each input is a (outer, inner_i) block; the output rows are the inputs' rows side by side.
    axis = k.attr["axis"]
    outer = int(np.prod(k.output.shape[:axis], dtype=np.int64))
    row = k.param("row", int(np.prod(k.output.shape[axis:], dtype=np.int64)))
    n_outer = k.param("n_outer", outer)
    col = 0
    for i, x in enumerate(k.inputs):
        inner = int(np.prod(x.shape[axis:], dtype=np.int64))
        w, c = k.param(f"width{i}", inner), k.param(f"col{i}", col)
        k.line(f"for a in range({n_outer}):")
        k.line(f"    for b in range({w}):")
        k.line(f"        out[a * {row} + {c} + b] = x{i}[a * {w} + b]")
        col += inner


# CUDA: the launches of cuda_rt.py's kernel for this op: (program, node, out Buf, input Bufs)
def _cuda_concatenate(prog, node, out, ins):
    axis = node.attr["axis"]
    outer = int(np.prod(node.output.shape[:axis], dtype=np.int64))
    row = int(np.prod(node.output.shape[axis:], dtype=np.int64))
    launches, col = [], 0
    for x, buf in zip(node.inputs, ins):
        width = int(np.prod(x.shape[axis:], dtype=np.int64))
        launches.append(prog.launch("copy_rows", [out, buf, outer, width, row, col], outer * width))
        col += width
    return launches


register(OpDef("concatenate", KERNEL, _concat_infer,
               ref=lambda *xs, axis: np.concatenate(xs, axis=axis),
               vjp=_concat_vjp, kernel=_concat_kernel, cuda=_cuda_concatenate))
