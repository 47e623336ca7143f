"""Shape and movement ops.

View ops (reshape, broadcast_to, transpose, slice) have no kernel: each maps the (offset,
strides) index map of its input to that of its output, so fused loops read through them for free.
A reshape that is not expressible as strides (of a non-contiguous input) materializes a copy.

`unslice` (the VJP of slice), `unslice_sum` (a sum of slice gradients) and `concatenate` are
small loop kernels of their own.
"""
import math

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
    if math.prod(shape) != x.size:
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


def compose_slices(first, second):
    """(starts, stops, steps) of x[first][second] as one slice of x, or None when the result is
    empty (its start may then lie outside x, which a stop cannot express). Each is a (starts,
    stops, steps) triple in the IR's form: normalized, a stop of -1 meaning "through index 0"."""
    starts, stops, steps = [], [], []
    for a1, c1, a2, b2, c2 in zip(first[0], first[2], *second):
        n = len(range(a2, b2, c2))
        if n == 0:
            return None
        start, step = a1 + c1 * a2, c1 * c2
        starts.append(start)
        steps.append(step)
        stops.append(max(start + step * n, -1))
    return tuple(starts), tuple(stops), tuple(steps)


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
def slice_index_map(shape, starts, steps):
    """(offset, strides) of a slice of a contiguous array of `shape`: element i of the slice is
    element offset + sum(i_d * strides[d]) of the array (a negative step: a negative stride)."""
    strides = contiguous_strides(shape)
    return (sum(a * s for a, s in zip(starts, strides)),
            tuple(s * c for s, c in zip(strides, steps)))


def _unslice_ref(g, shape, starts, stops, steps):
    out = np.zeros(shape, g.dtype)
    out[_slices(starts, stops, steps)] = g
    return out


def _unslice_kernel(k):
    # Zero the output, then scatter g through the slice's strides (an affine index map).
    k.line(f"for i in range({k.size(k.output)}):")
    k.line(f"    out[i] = {k.zero}")
    _write_slice(k, "x0", k.inputs[0].shape, k.attr["shape"])


def _write_slice(k, values, shape, whole):
    """out's slice (k.attr's starts and steps, of an array of shape `whole`) = `values` (an
    input of `shape`), through the slice's strides."""
    offset, strides = slice_index_map(whole, k.attr["starts"], k.attr["steps"])
    loops = k.loops(shape)
    dst = " + ".join([k.param("offset", offset)] + [
        f"{i} * {k.param(f'stride{d}', strides[d])}" for d, i in enumerate(loops.index)])
    with loops:
        k.line(f"out[{dst}] = {values}[{loops.flat}]")


# CUDA: the launches of cuda_rt.py's kernel for this op: (program, node, out Buf, input Bufs)
def _cuda_unslice(prog, node, out, ins):
    g = node.inputs[0]
    starts, steps = node.attr["starts"], node.attr["steps"]
    strides = contiguous_strides(node.attr["shape"])
    offset = sum(a * s for a, s in zip(starts, strides))
    shape = prog.constant(np.array(g.shape or (1,), np.int64))
    dst = prog.constant(np.array([s * st for s, st in zip(strides, steps)] or [0], np.int64))
    return [prog.fill_zero(out, node),
            prog.launch("unslice_add", [out, ins[0], g.size, shape, dst, offset], g.size)]


register(OpDef("unslice", KERNEL,
               lambda inputs, shape, starts, stops, steps: (tuple(shape), inputs[0].dtype),
               ref=_unslice_ref,
               vjp=lambda n, g: [fn.slice_(g, n.attr["starts"], n.attr["stops"], n.attr["steps"])],
               kernel=_unslice_kernel, cuda=_cuda_unslice))


# --- set_slice: x with v written into a slice of it (gradc.at(x)[:, t].set(v)) --------------
# The memory plan lets it write over x where it reads x for the last time (memory.py
# _overwritable): an RNN filling its states a step at a time then writes each step's slice in
# place, and its backward zeroes each step's slice of the gradient in place.
def _set_slice_infer(inputs, starts, stops, steps):
    x, v = inputs
    if v.shape != _slice_shape(starts, stops, steps) or v.dtype != x.dtype:
        raise ShapeError(f"set_slice: values {v.dtype}{list(v.shape)} for a slice "
                         f"{_slice_shape(starts, stops, steps)} of {x.dtype}{list(x.shape)}")
    return x.shape, x.dtype


def _set_slice_ref(x, v, starts, stops, steps):
    out = x.copy()
    out[_slices(starts, stops, steps)] = v
    return out


def _set_slice_vjp(node, g):
    starts, stops, steps = node.attr["starts"], node.attr["stops"], node.attr["steps"]
    v = node.inputs[1]
    # (fuse.py _overwrites_last runs the zeroing after dv's readers: it may write over g)
    dv = fn.slice_(g, starts, stops, steps)
    zeros = fn.full(g.graph, v.shape, 0, g.dtype)
    dx = g.graph.apply("set_slice", (g, zeros), starts=starts, stops=stops, steps=steps)
    return [dx, dv]


def _set_slice_kernel(k):
    # x copied unless the plan stored the result over it, then v written through the slice's
    # strides (an affine index map)
    x, v = k.inputs
    k.line("if p_x0 != p_out:")
    k.line(f"    for i in range({k.size(k.output)}):")
    k.line("        out[i] = x0[i]")
    _write_slice(k, "x1", v.shape, x.shape)


def _cuda_set_slice(prog, node, out, ins):
    x, v = node.inputs
    offset, strides = slice_index_map(x.shape, node.attr["starts"], node.attr["steps"])
    shape = prog.constant(np.array(v.shape or (1,), np.int64))
    dst = prog.constant(np.array(strides or (0,), np.int64))
    copy = [] if out.key() == ins[0].key() else [
        prog.launch("copy_rows", [out, ins[0], 1, x.size, x.size, 0], x.size)]
    return copy + [prog.launch("unslice_set", [out, ins[1], v.size, shape, dst, offset], v.size)]


register(OpDef("set_slice", KERNEL, _set_slice_infer, ref=_set_slice_ref, vjp=_set_slice_vjp,
               kernel=_set_slice_kernel, cuda=_cuda_set_slice))


# --- unslice_sum: a sum of slice gradients (and other terms), accumulated in one buffer --------
# unslice_sum(g_1..g_k, d_1..d_m; shape, slices) = d_1 + ... + d_m (or zeros), then g_i added
# into slice i (slices[i] = (starts, stops, steps)), in order; slices may overlap. It replaces
# a sum of unslice terms (gradc/passes/slices.py), so slice gradients stay slice-sized.
def _unslice_sum_infer(inputs, shape, slices):
    if not slices or len(slices) > len(inputs):
        raise ShapeError(f"unslice_sum: {len(slices)} slices for {len(inputs)} inputs")
    if len({v.dtype for v in inputs}) != 1:
        raise TypeError(f"unslice_sum on mixed dtypes {sorted({v.dtype.name for v in inputs})}")
    for i, v in enumerate(inputs):
        want = _slice_shape(*slices[i]) if i < len(slices) else tuple(shape)
        if v.shape != want:
            raise ShapeError(f"unslice_sum: input {i} has shape {v.shape}, expected {want}")
    return tuple(shape), inputs[0].dtype


def _unslice_sum_ref(*xs, shape, slices):
    out = np.zeros(shape, xs[0].dtype)
    for d in xs[len(slices):]:
        out += d
    for g, s in zip(xs, slices):
        out[_slices(*s)] += g
    return out


def _unslice_sum_vjp(node, g):
    slices = node.attr["slices"]
    return [fn.slice_(g, *s) for s in slices] + [g] * (len(node.inputs) - len(slices))


def _slice_groups(k):
    """The sliced inputs grouped by (shape, strides into the output), in order of first
    appearance: {(shape, strides): [(input index, offset)]}. A group is one loop over its
    members (an RNN's T steps: one group), so the kernel's body does not grow with T (its
    arguments do: an address and an offset per member)."""
    groups = {}
    for i, (starts, _, steps) in enumerate(k.attr["slices"]):
        offset, strides = slice_index_map(k.attr["shape"], starts, steps)
        groups.setdefault((k.inputs[i].shape, strides), []).append((i, offset))
    return groups


def _tuple(items):
    """Python's text of a tuple of these names: (a, b), (a,)."""
    items = list(items)
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


def _unslice_sum_kernel(k):
    n_sliced = len(k.attr["slices"])
    dense = " + ".join(f"x{i}[i]" for i in range(n_sliced, len(k.inputs)))
    k.line(f"for i in range({k.size(k.output)}):")
    k.line(f"    out[i] = {dense or k.zero}")
    for g, ((shape, strides), members) in enumerate(_slice_groups(k).items()):
        first = k.inputs[members[0][0]]
        # the members' addresses and offsets as tuples, indexed by the loop over members
        k.line(f"ptr{g} = {_tuple(f'p_x{i}' for i, _ in members)}")
        k.line(f"off{g} = {_tuple(k.param(f'offset{i}', o) for i, o in members)}")
        # (the count a parameter, not a literal: LLVM unrolled a literal 9 members' loops,
        # W4n's nine shifted slices, and spent 130 ms on the kernel instead of 36)
        k.line(f"for t in range({k.param(f'members{g}', len(members))}):")
        with k.indent():
            k.line(f"g = {k.array(f'ptr{g}[t]', first)}")
            sizes, (src, dst) = k.collapse(shape, contiguous_strides(shape), strides)
            index = [f"i{d}" for d in range(len(sizes))]
            for d, (i, n) in enumerate(zip(index, sizes)):
                k.line("    " * d + f"for {i} in range({k.param(f'n{g}_{d}', n)}):")
            src_at = " + ".join([f"{i} * {k.param(f'src{g}_{d}', s)}" if s != 1 else i
                                 for d, (i, s) in enumerate(zip(index, src))] or ["0"])
            dst_at = " + ".join([f"off{g}[t]"] + [f"{i} * {k.param(f'dst{g}_{d}', s)}" if s != 1
                                                  else i for d, (i, s) in enumerate(zip(index, dst))])
            # unsigned indices (never negative) and unit strides written as such: the loop
            # vectorizes (see `_index` in gradc/codegen/cpu.py); an LSTM's 32x512 gradient of
            # its four gate blocks took 20 us, its 48 steps' 1.1 ms
            k.line("    " * len(index) + f"out[np.uint64({dst_at})] += g[np.uint64({src_at})]")


# CUDA: zeros, then each slice term and each dense term added in, one launch per term, in
# order: deterministic, and no atomics (no two threads of one launch write one element)
def _cuda_unslice_sum(prog, node, out, ins):
    n_sliced, geometries = len(node.attr["slices"]), {}
    launches = [prog.fill_zero(out, node)]
    for i, (x, buf) in enumerate(zip(node.inputs, ins)):
        if i < n_sliced:
            starts, _, steps = node.attr["slices"][i]
        else:  # a dense term: the whole array, a slice with unit steps
            starts, steps = (0,) * x.ndim, (1,) * x.ndim
        offset, strides = slice_index_map(node.attr["shape"], starts, steps)
        key = (x.shape, strides)  # (slices of one geometry share their small constant arrays)
        if key not in geometries:
            geometries[key] = (prog.constant(np.array(x.shape or (1,), np.int64)),
                               prog.constant(np.array(strides or (0,), np.int64)))
        launches.append(prog.launch("unslice_add", [out, buf, x.size, *geometries[key], offset],
                                    x.size))
    return launches


register(OpDef("unslice_sum", KERNEL, _unslice_sum_infer, ref=_unslice_sum_ref,
               vjp=_unslice_sum_vjp, kernel=_unslice_sum_kernel, cuda=_cuda_unslice_sum))


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
    # Inputs of one width are one loop over their addresses and columns (a Hessian's 64 rows,
    # an LSTM's 48 steps): the kernel's body does not grow with their count (its arguments do),
    # nor LLVM's time on it (64 blocks of loops: 19 KB of source, most of a Hessian's compile).
    axis = k.attr["axis"]
    outer = int(np.prod(k.output.shape[:axis], dtype=np.int64))
    row = k.param("row", int(np.prod(k.output.shape[axis:], dtype=np.int64)))
    n_outer = k.param("n_outer", outer)
    col, itemsize, groups = 0, k.output.dtype.itemsize, {}
    for i, x in enumerate(k.inputs):
        inner = int(np.prod(x.shape[axis:], dtype=np.int64))
        groups.setdefault(inner, []).append((i, col))
        col += inner
    for g, (inner, members) in enumerate(groups.items()):
        first = k.inputs[members[0][0]]
        w = k.param(f"width{g}", inner)
        k.line(f"ptrs{g} = {_tuple(f'p_x{i}' for i, _ in members)}")
        k.line(f"cols{g} = {_tuple(k.param(f'col{i}', c) for i, c in members)}")
        k.line(f"for t in range({k.param(f'members{g}', len(members))}):")
        # an input the plan stored in its block of the output (memory.py _concat_members) is
        # there already: copying it onto itself cost W8's LSTM 0.3 ms a step
        k.line(f"    if ptrs{g}[t] != p_out + cols{g}[t] * {itemsize}:")
        k.line(f"        block = {k.array(f'ptrs{g}[t]', first)}")
        k.line(f"        for a in range({n_outer}):")
        k.line(f"            for b in range({w}):")  # (unsigned indices vectorize)
        k.line(f"                out[np.uint64(a * {row} + cols{g}[t] + b)] = "
               f"block[np.uint64(a * {w} + b)]")


# CUDA: the launches of cuda_rt.py's kernel for this op: (program, node, out Buf, input Bufs)
def _cuda_concatenate(prog, node, out, ins):
    axis = node.attr["axis"]
    outer = int(np.prod(node.output.shape[:axis], dtype=np.int64))
    row = int(np.prod(node.output.shape[axis:], dtype=np.int64))
    launches, col = [], 0
    for x, buf in zip(node.inputs, ins):
        width = int(np.prod(x.shape[axis:], dtype=np.int64))
        if prog.plan.members.get(x.id) != node.output.id:  # (else stored in its block already)
            launches.append(prog.launch("copy_rows", [out, buf, outer, width, row, col],
                                        outer * width))
        col += width
    return launches


register(OpDef("concatenate", KERNEL, _concat_infer,
               ref=lambda *xs, axis: np.concatenate(xs, axis=axis),
               vjp=_concat_vjp, kernel=_concat_kernel, cuda=_cuda_concatenate))
