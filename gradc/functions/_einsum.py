"""np.einsum's subscripts, and the lowering every contraction shares (einsum, tensordot, inner,
vdot): each operand alone first (broadcast axes dropped, diagonals taken, labels no other operand
needs summed), then pairs in the order np.einsum_path picks for the static shapes, each pair one
BLAS product (transpose + reshape + fn.matmul, shared labels that stay as its batch) or, when
nothing is summed, a broadcast multiply that fuses. The gradients come from those primitives.

Labels are single letters, as in NumPy's subscripts; the axes an ellipsis stands for get letters
the subscripts do not use.
"""
from __future__ import annotations

import operator
import string

import numpy as np

from ..errors import ArgumentError, ShapeError, UnsupportedOpError
from ..ir import Value
from ..ops import fn

LETTERS = string.ascii_letters


# ---------------------------------------------------------------------------------------------
# subscripts

def _sublist_label(s):
    """NumPy's C einsum: 0-25 are 'A'-'Z', 26-51 'a'-'z'."""
    if s is Ellipsis:
        return "..."
    try:
        s = operator.index(s)
    except TypeError:
        raise ArgumentError(f"np.einsum: a subscript list holds {s!r}; use integers in [0, 52) "
                            "or Ellipsis") from None
    if not 0 <= s < 52:
        raise ArgumentError(f"np.einsum: subscript {s} is not within the valid range [0, 52)")
    return chr(ord("A") + s) if s < 26 else chr(ord("a") + s - 26)


def split_operands(operands):
    """(subscripts string, operands) of either calling form: np.einsum('ij,jk', a, b) or the
    interleaved np.einsum(a, [0, 1], b, [1, 2], [0, 2])."""
    if not operands:
        raise ArgumentError("np.einsum needs the subscripts and at least one operand")
    if isinstance(operands[0], str):
        return operands[0], list(operands[1:])
    arrays, sublists = list(operands[0::2]), list(operands[1::2])
    output = None
    if len(operands) % 2:  # a trailing output sublist
        arrays, output = arrays[:-1], operands[-1]
    if len(sublists) != len(arrays):
        raise ArgumentError("np.einsum: give each operand its subscript list")
    terms = ["".join(_sublist_label(s) for s in sub) for sub in sublists]
    subscripts = ",".join(terms)
    if output is not None:
        subscripts += "->" + "".join(_sublist_label(s) for s in output)
    return subscripts, arrays


def _term(text, where):
    """The labels of one term, '...' kept as one item."""
    if text.count(".") not in (0, 3) or (text.count(".") == 3 and "..." not in text):
        raise ArgumentError(f"np.einsum: the subscripts of {where} contain a '.' that is not "
                            "part of an ellipsis ('...')")
    head, ell, tail = text.partition("...")
    bad = [c for c in head + tail if c not in LETTERS]
    if bad:
        raise ArgumentError(f"np.einsum: invalid subscript {bad[0]!r} in {where}; subscripts "
                            "are letters (and one '...')")
    return list(head) + ([ell] if ell else []) + list(tail)


def parse(subscripts, shapes):
    """Labels of each operand and of the output, with the ellipsis written out, and each label's
    size. Checks what NumPy checks, and the sizes: a label's axes are of one size, or 1 (which
    broadcasts)."""
    subscripts = subscripts.replace(" ", "")
    inputs, arrow, output = subscripts.partition("->")
    if ("-" in inputs + output or ">" in inputs + output):
        raise ArgumentError("np.einsum: the subscripts have a '-' or '>' that is not one '->'")
    terms = [_term(t, f"operand {i}") for i, t in enumerate(inputs.split(","))]
    if len(terms) != len(shapes):
        raise ArgumentError(f"np.einsum: the subscripts name {len(terms)} operands, and "
                            f"{len(shapes)} were given")
    if arrow:
        out = _term(output, "the output")
    else:  # implicit: the labels used once, in alphabetical (ASCII) order, after the ellipsis
        used = [c for t in terms for c in t if c != "..."]
        out = (["..."] if any("..." in t for t in terms) else []) + \
            sorted(c for c in set(used) if used.count(c) == 1)
    # the ellipsis's axes, right-aligned across operands as broadcasting aligns them
    spare = [c for c in LETTERS if c not in subscripts]
    ell_dims = []
    for i, (t, shape) in enumerate(zip(terms, shapes)):
        named = len(t) - ("..." in t)
        if named > len(shape) or (named < len(shape) and "..." not in t):
            raise ArgumentError(
                f"np.einsum: operand {i} has {len(shape)} dimensions and {named} subscripts "
                f"{''.join(t)!r}; give one per axis, or '...' for the rest")
        ell_dims.append(len(shape) - named if "..." in t else 0)
    n_ell = max(ell_dims)
    if n_ell > len(spare):
        raise UnsupportedOpError("np.einsum: too many axes for 52 letters of subscripts")
    ell = spare[:n_ell]
    labels = []
    for t, k in zip(terms, ell_dims):
        where = t.index("...") if "..." in t else len(t)
        labels.append(t[:where] + ell[n_ell - k:] + t[where + 1:])
    if "..." not in out and n_ell and arrow:
        raise ArgumentError("np.einsum: the operands have axes under '...' that the output "
                            "does not name; put '...' in the output subscripts")
    where = out.index("...") if "..." in out else len(out)
    out = out[:where] + (ell if "..." in out else []) + out[where + 1:]
    for c in out:
        if out.count(c) > 1:
            raise ArgumentError(f"np.einsum: the output names {c!r} more than once")
        if not any(c in t for t in labels):
            raise ArgumentError(f"np.einsum: the output names {c!r}, which no operand has")
    return labels, out, label_sizes(labels, shapes)


def label_sizes(labels, shapes):
    """{label: size}; a label's axes must have one size, but for 1s that broadcast."""
    sizes = {}
    for i, (t, shape) in enumerate(zip(labels, shapes)):
        for c, n in zip(t, shape):
            own = {m for l, m in zip(t, shape) if l == c}
            if len(own) > 1:
                raise ShapeError(f"np.einsum: operand {i} has axes of sizes {sorted(own)} under "
                                 f"the one repeated label {c!r} (a diagonal needs equal sizes)")
            if sizes.get(c, 1) == 1:
                sizes[c] = n
            elif n not in (1, sizes[c]):
                raise ShapeError(f"np.einsum: label {c!r} stands for axes of sizes {sizes[c]} "
                                 f"and {n} (operand {i}); they must be equal, or 1 to broadcast")
    return sizes


# ---------------------------------------------------------------------------------------------
# lowering

def contract(values, labels, out, sizes, optimize="greedy", dtype=None):
    """The einsum of graph values `values` (labels[i] naming the axes of values[i]) into the
    output labels `out`, in `dtype` (default: the operands' result type)."""
    dtype = np.dtype(dtype) if dtype is not None else np.result_type(*[v.dtype for v in values])
    # integers and booleans accumulate in int64 (a boolean einsum is an "or" of "and"s: a count)
    work = dtype if np.issubdtype(dtype, np.floating) else np.dtype(np.int64)
    ops = [_drop_broadcast(fn.astype(v, work), list(t), sizes) for v, t in zip(values, labels)]
    ops = [_diagonals(v, t, sizes) for v, t in ops]
    ops = [_sum_unneeded(v, t, _needed(ops, i, out)) for i, (v, t) in enumerate(ops)]
    for step in _path(ops, out, optimize):
        group = [ops[i] for i in step]
        for i in sorted(step, reverse=True):
            del ops[i]
        x, tx = group[0]
        for j, (y, ty) in enumerate(group[1:], 2):
            keep = set(out).union(*[t for _, t in ops + group[j:]])
            x, tx = _pair(x, tx, y, ty, keep)
        ops.append((x, tx))
    (x, tx), = ops
    x, tx = _sum_unneeded(x, tx, set(out))
    x = fn.transpose(x, [tx.index(c) for c in out])
    if dtype == np.bool_:
        return fn.not_equal(x, 0)
    return fn.astype(x, dtype)


def _needed(ops, i, out):
    """The labels some operand other than ops[i], or the output, has."""
    return set(out).union(*[t for j, (_, t) in enumerate(ops) if j != i])


def _drop_broadcast(x, t, sizes):
    """Axes of size 1 whose label is longer elsewhere: the operand does not vary along them."""
    keep = [i for i, c in enumerate(t) if x.shape[i] != 1 or sizes[c] == 1]
    if len(keep) == len(t):
        return x, t
    return fn.reshape(x, [x.shape[i] for i in keep]), [t[i] for i in keep]


def _diagonals(x, t, sizes):
    """One axis for each repeated label: its axes moved last and merged, every (n^k - 1)/(n - 1)-th
    element of the merged axis is the diagonal (a strided slice: a view, whose VJP scatters)."""
    for c in dict.fromkeys(t):
        pos = [i for i, l in enumerate(t) if l == c]
        k = len(pos)
        if k == 1:
            continue
        x = fn.moveaxis(x, pos, list(range(x.ndim - k, x.ndim)))
        t = [l for l in t if l != c] + [c]
        n = sizes[c]
        x = fn.reshape(x, x.shape[:-k] + (n ** k,))
        step = sum(n ** j for j in range(k))
        x = fn.slice_(x, (0,) * x.ndim, x.shape, (1,) * (x.ndim - 1) + (step,))
    return x, t


def _sum_unneeded(x, t, needed):
    axes = tuple(i for i, c in enumerate(t) if c not in needed)
    if not axes:
        return x, t
    return fn.sum(x, axes), [c for c in t if c in needed]


def _path(ops, out, optimize):
    """The contraction order: np.einsum_path's for these shapes (it reads only shapes: the
    operands are zero-stride stand-ins), or the one the user gave."""
    if isinstance(optimize, (list, tuple)) and optimize and optimize[0] == "einsum_path":
        return _checked_path(list(optimize[1:]), len(ops))
    strategy = optimize[0] if isinstance(optimize, tuple) and len(optimize) == 2 else optimize
    if not (isinstance(strategy, (bool, type(None))) or strategy in ("greedy", "optimal")):
        raise ArgumentError(f"np.einsum: optimize={optimize!r}; give a bool, 'greedy', "
                            "'optimal', (strategy, memory limit) or an np.einsum_path path")
    if len(ops) == 1:
        return [(0,)]
    if optimize is False or optimize is True or optimize is None:
        optimize = "greedy"  # (the order only; optimize=False's one-shot loop has no BLAS)
    subscripts = ",".join("".join(t) for _, t in ops) + "->" + "".join(out)
    stand_ins = [np.broadcast_to(np.empty((), np.float64), v.shape) for v, _ in ops]
    try:
        path, _ = np.einsum_path(subscripts, *stand_ins, optimize=optimize)
    except (TypeError, ValueError, KeyError) as e:
        raise ArgumentError(f"np.einsum: optimize={optimize!r} is not an einsum_path "
                            f"strategy or path ({e})") from None
    return path[1:]


def _checked_path(path, n):
    for step in path:
        if (not isinstance(step, tuple) or not step or len(set(step)) != len(step)
                or not all(isinstance(i, (int, np.integer)) and 0 <= i < n for i in step)):
            raise ArgumentError(f"np.einsum: the path step {step!r} does not index the {n} "
                                "operands left at that point")
        n -= len(step) - 1
    if n != 1:
        raise ArgumentError(f"np.einsum: the path leaves {n} operands; it must contract to one")
    return path


def _pair(x, tx, y, ty, keep):
    """Contract two operands; labels outside `keep` that both have are summed."""
    x, tx = _sum_unneeded(x, tx, keep | set(ty))
    y, ty = _sum_unneeded(y, ty, keep | set(tx))
    batch = [c for c in tx if c in ty and c in keep]
    summed = [c for c in tx if c in ty and c not in keep]
    left = [c for c in tx if c not in ty]
    right = [c for c in ty if c not in tx]
    size = dict(zip(tx, x.shape)) | dict(zip(ty, y.shape))
    dims = lambda labels: tuple(size[c] for c in labels)  # noqa: E731
    if not summed or not (left or right):
        # nothing summed (an outer or elementwise product), or one dot product per batch element:
        # a broadcast multiply (and a sum) that fuses with its neighbours
        xb = fn.reshape(_arrange(x, tx, batch + left + summed),
                        dims(batch + left) + (1,) * len(right) + dims(summed))
        yb = fn.reshape(_arrange(y, ty, batch + right + summed),
                        dims(batch) + (1,) * len(left) + dims(right + summed))
        z = fn.multiply(xb, yb)
        if summed:
            z = fn.sum(z, tuple(range(z.ndim - len(summed), z.ndim)))
        return z, batch + left + right
    nb, nl, nk, nr = (int(np.prod(dims(g), dtype=np.int64)) for g in (batch, left, summed, right))
    lead = (nb,) if batch else ()
    xm = _matrix(x, tx, batch, left, summed, lead + (nl, nk))
    ym = _matrix(y, ty, batch, summed, right, lead + (nk, nr))
    z = fn.matmul(xm, ym)
    return fn.reshape(z, dims(batch + left + right)), batch + left + right


def _arrange(x, t, order):
    return fn.transpose(x, [t.index(c) for c in order])


def _matrix(x, t, batch, rows, cols, shape):
    """x as a (batch,) rows x cols matrix. If its axes are already in cols-rows order, the
    matrix is the transposed reshape, a transpose the simplifier folds into the BLAS flags."""
    if t != batch + rows + cols and t == batch + cols + rows:
        flipped = fn.reshape(x, shape[:-2] + (shape[-1], shape[-2]))
        return fn.swapaxes(flipped, -1, -2)
    return fn.reshape(_arrange(x, t, batch + rows + cols), shape)


def as_operand(x, like):
    """An operand as NumPy's contractions take it: a Python number is an array of its own dtype
    (np.asarray's), not weakly typed."""
    if isinstance(x, Value):
        return x
    return fn.as_value(np.asarray(x), like)
