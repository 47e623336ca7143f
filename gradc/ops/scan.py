"""Scans and sorting along one axis: `scan`, a first-order linear recurrence (np.cumsum,
np.cumprod, np.prod), and `argsort` (np.sort, np.argsort, np.median...).

scan(a, b; axis, reverse, shifted) is y[i] = a[i] * y[i-1] + b[i] along `axis`, with y[-1] = 0
(y[i+1] and y[n] = 0 when reversed); `shifted` reads the coefficient one step back in scan
order, y[i] = a[i-1] * y[i-1] + b[i]; scan(b) is the same with a = 1 (a cumulative sum, no array
of ones). Its VJP is again a scan, the other way: the total cotangent of y[i] is
    S[i] = g[i] + a[i+1] * S[i+1]          (S[n] = 0)
(y[i] reaches the loss directly and through y[i+1] = a[i+1] * y[i] + ...): a reversed scan that
reads a one step back in its own order (shifted), and
    db[i] = S[i],   da[i] = S[i] * y[i-1]   (y[-1] = 0).
(Of a shifted scan, S is an unshifted scan the other way and da[i] = S[i+1] * y[i].) No
division anywhere: a cumulative product over zeros has its exact gradient (the product of the
other factors), and grad of grad differentiates these scans again.

argsort is NumPy's stable argsort (kind="stable": equal keys keep their order, NaNs last); it
has no gradient. np.sort is a gather by it (take_along_axis), whose VJP is a scatter.

Both fold x to (outer, n, inner) around the axis, as gradc/ops/indexing.py does.
"""
import numpy as np

from ..errors import ShapeError
from . import fn
from .indexing import _fold
from .registry import KERNEL, OpDef, register


# --- scan ----------------------------------------------------------------------------------
def _scan_infer(inputs, axis, reverse, shifted=False):
    if len(inputs) == 2 and (inputs[0].shape != inputs[1].shape or
                             inputs[0].dtype != inputs[1].dtype):
        raise ShapeError(f"scan: a {inputs[0]} and b {inputs[1]} differ in shape or dtype")
    b = inputs[-1]
    if not 0 <= axis < b.ndim:
        raise ShapeError(f"scan: axis {axis} of an array of {b.ndim} dimensions")
    return b.shape, b.dtype


def _scan_ref(*xs, axis, reverse, shifted=False):
    b = np.moveaxis(xs[-1], axis, 0)
    a = np.moveaxis(xs[0], axis, 0) if len(xs) == 2 else np.ones_like(b)
    y = np.empty_like(b)
    order = range(b.shape[0] - 1, -1, -1) if reverse else range(b.shape[0])
    for t, i in enumerate(order):
        if t == 0:
            y[i] = b[i]
        else:
            prev = i + 1 if reverse else i - 1
            y[i] = a[prev if shifted else i] * y[prev] + b[i]
    return np.moveaxis(y, 0, axis)


def _shift(x, axis, toward_end):
    """x moved one step along `axis` (toward its end or its start), zeros filling in."""
    n = x.shape[axis]
    shape = list(x.shape)
    shape[axis] = 1
    zero = fn.full(x.graph, shape, 0, x.dtype)
    if n <= 1:
        return fn.broadcast_to(zero, x.shape) if n == 1 else x
    starts, stops = [0] * x.ndim, list(x.shape)
    if toward_end:
        stops[axis] = n - 1
    else:
        starts[axis] = 1
    kept = fn.slice_(x, starts, stops, (1,) * x.ndim)
    return fn.concatenate([zero, kept] if toward_end else [kept, zero], axis)


def scan(b, a=None, axis=0, reverse=False, shifted=False):
    """y[i] = a[i] * y[i-1] + b[i] along `axis` (a = 1 if None; a[i-1] if shifted); reversed:
    from the end."""
    if a is None:
        return b.graph.apply("scan", (b,), axis=axis, reverse=bool(reverse))
    return b.graph.apply("scan", (a, b), axis=axis, reverse=bool(reverse), shifted=bool(shifted))


def _scan_vjp(node, g):
    axis, reverse = node.attr["axis"], node.attr["reverse"]
    if len(node.inputs) == 1:
        return [scan(g, None, axis, not reverse)]
    a, y, shifted = node.inputs[0], node.output, node.attr.get("shifted", False)
    s = scan(g, a, axis, not reverse, not shifted)
    # da[i] = S[i] * y[i-1] (unshifted) or S[i+1] * y[i] (shifted), in scan order
    if shifted:
        return [_shift(s, axis, toward_end=reverse) * y, s]
    return [s * _shift(y, axis, toward_end=not reverse), s]


def _scan_kernel(k):
    """For each (outer, inner) lane, along the axis in order. A scan over the last axis (inner
    = 1) keeps y in a register; otherwise the inner loop is innermost, so a scan over a leading
    axis reads whole rows."""
    axis, reverse, shifted = k.attr["axis"], k.attr["reverse"], k.attr.get("shifted", False)
    outer, n, inner = _fold(k.output.shape, axis)
    o, nn, i_ = k.param("outer", outer), k.param("n", n), k.param("inner", inner)
    xb = f"x{len(k.inputs) - 1}"
    step = "+" if reverse else "-"

    def times(at):  # the coefficient's factor, read at `at`
        return f"x0[{at}] * " if len(k.inputs) == 2 else ""

    k.line(f"for a in range({o}):")
    with k.indent():
        k.line(f"if {i_} == 1 and {nn} > 0:")
        with k.indent():
            k.line(f"row = a * {nn}")
            k.line(f"j = {nn} - 1" if reverse else "j = 0")
            k.line(f"acc = {xb}[row + j]")
            k.line("out[row + j] = acc")
            k.line(f"for t in range(1, {nn}):")
            k.line(f"    j = {nn} - 1 - t" if reverse else "    j = t")
            k.line(f"    acc = {times(f'row + j {step} 1' if shifted else 'row + j')}acc "
                   f"+ {xb}[row + j]")
            k.line("    out[row + j] = acc")
        k.line("else:")
        with k.indent():
            k.line(f"for t in range({nn}):")
            with k.indent():
                k.line(f"j = {nn} - 1 - t" if reverse else "j = t")
                k.line(f"row = (a * {nn} + j) * {i_}")
                k.line("if t == 0:")
                k.line(f"    for c in range({i_}):")
                k.line(f"        out[row + c] = {xb}[row + c]")
                k.line("else:")
                k.line(f"    prev = row {step} {i_}")
                k.line(f"    for c in range({i_}):")
                k.line(f"        out[row + c] = {times('prev + c' if shifted else 'row + c')}"
                       f"out[prev + c] + {xb}[row + c]")


# CUDA: the launches of cuda_rt.py's kernel for this op: (program, node, out Buf, input Bufs)
def _cuda_scan(prog, node, out, ins):
    """A thread per (outer, inner) lane, walking the axis (cuda_rt.scan)."""
    outer, n, inner = _fold(node.output.shape, node.attr["axis"])
    a = ins[0] if len(ins) == 2 else ins[-1]  # (not read when has_a is False)
    return [prog.launch("scan", [out, a, ins[-1], outer, n, inner, node.attr["reverse"],
                                 len(ins) == 2, node.attr.get("shifted", False)], outer * inner)]


register(OpDef("scan", KERNEL, _scan_infer, ref=_scan_ref, vjp=_scan_vjp, kernel=_scan_kernel,
               cuda=_cuda_scan))


# --- argsort -------------------------------------------------------------------------------
RUN = 16  # the merge sort starts from runs this long, each sorted by insertion
def _argsort_kernel(k):
    """Each lane copied out with its indices, then a bottom-up merge sort of the (key, index)
    pairs from insertion-sorted runs: stable (the left run wins unless the right key sorts
    strictly first), NaNs last, as NumPy's kind="stable". Two halves of one workspace (malloc'd
    once, at offsets src and dst) take turns as the merges' source. Written as the direct LLVM
    route takes it (for loops only; every key read before the and/or that uses it, at an index
    kept inside the lane): np.sort of (256, 1000) float32 compiled cold in 0.37 s, where
    Numba's front end took 2.5 s (and its own np.argsort(kind="mergesort") ~10 s per dtype)."""
    from ..codegen.cpu import ARRAY_OF
    from .lapack_kernels import _out_of_memory
    outer, n, inner = _fold(k.inputs[0].shape, k.attr["axis"])
    o, nn, i_ = k.param("outer", outer), k.param("n", n), k.param("inner", inner)
    passes, width = 0, RUN
    while width < n:
        passes, width = passes + 1, width * 2
    x = k.inputs[0]
    k.line(f"ws = lapack_alloc(2 * {nn} * ({x.dtype.itemsize} + 8) + 8)")
    _out_of_memory(k, "ws")
    k.line(f"keys = {ARRAY_OF[x.dtype.name]}(ws, 2 * {nn})")
    k.line(f"idx = i64_array(ws + 2 * {nn} * {x.dtype.itemsize}, 2 * {nn})")
    k.line(f"last = {nn} - 1")
    k.line(f"for a in range({o}):")
    k.line(f"    for c in range({i_}):")
    with k.indent(2):
        k.line(f"for t in range({nn}):")
        k.line(f"    keys[t] = x0[(a * {nn} + t) * {i_} + c]")
        k.line("    idx[t] = t")
        # runs of RUN by insertion sort: a key moves left past keys that sort strictly after it
        # (stable); a NaN sorts after every number
        k.line(f"for lo in range(0, {nn}, {RUN}):")
        k.line(f"    for t in range(lo + 1, min(lo + {RUN}, {nn})):")
        with k.indent(2):
            k.line("kv = keys[t]")
            k.line("iv = idx[t]")
            k.line("j = t")
            k.line("moving = True")
            k.line("for s in range(t - lo):")
            k.line("    prev = keys[j - 1]")
            k.line("    before = kv < prev")
            k.line("    nan_prev = prev != prev")
            k.line("    number = kv == kv")
            k.line("    if moving and (before or (nan_prev and number)):")
            k.line("        keys[j] = prev")
            k.line("        idx[j] = idx[j - 1]")
            k.line("        j -= 1")
            k.line("    else:")
            k.line("        moving = False")
            k.line("keys[j] = kv")
            k.line("idx[j] = iv")
        k.line("src = 0")
        k.line(f"dst = {nn}")
        k.line(f"width = {RUN}")
        k.line(f"for p in range({k.param('passes', passes)}):")
        with k.indent():
            k.line(f"for b in range(({nn} + 2 * width - 1) // (2 * width)):")
            with k.indent():
                k.line("lo = b * 2 * width")
                k.line(f"mid = min(lo + width, {nn})")
                k.line(f"hi = min(lo + 2 * width, {nn})")
                k.line("i = lo")
                k.line("j = mid")
                k.line("for t in range(lo, hi):")
                with k.indent():
                    # (the keys at i and j read first, at most the lane's last: a run spent)
                    k.line("ki = keys[src + min(i, last)]")
                    k.line("kj = keys[src + min(j, last)]")
                    k.line("left_spent = i >= mid")
                    k.line("right_left = j < hi")
                    k.line("strictly_first = kj < ki")
                    k.line("nan_left = ki != ki")
                    k.line("number = kj == kj")
                    # the right run's key first only if it sorts strictly before the left's
                    k.line("if left_spent or (right_left and (strictly_first or "
                           "(nan_left and number))):")
                    k.line("    keys[dst + t] = kj")
                    k.line("    idx[dst + t] = idx[src + j]")
                    k.line("    j += 1")
                    k.line("else:")
                    k.line("    keys[dst + t] = ki")
                    k.line("    idx[dst + t] = idx[src + i]")
                    k.line("    i += 1")
            k.line("src, dst = dst, src")
            k.line("width = width * 2")
        k.line(f"for t in range({nn}):")
        k.line(f"    out[(a * {nn} + t) * {i_} + c] = idx[src + t]")
    k.line("lapack_free(ws)")


def _cuda_argsort(prog, node, out, ins):
    """A thread per element, which counts the elements of its lane that sort before it: its
    place (cuda_rt.argsort_rank; n^2 work per lane, no scratch)."""
    outer, n, inner = _fold(node.inputs[0].shape, node.attr["axis"])
    return [prog.launch("argsort_rank", [out, ins[0], outer, n, inner], outer * n * inner)]


register(OpDef("argsort", KERNEL,
               lambda inputs, axis: (inputs[0].shape, np.dtype(np.int64)),
               ref=lambda x, axis: np.argsort(x, axis=axis, kind="stable"),
               nondiff=(0,),  # (an integer output: autodiff never asks)
               kernel=_argsort_kernel, cuda=_cuda_argsort))
