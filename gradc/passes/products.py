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
RNN: ~300 us against ~330 us and the concatenations' copies). Where the products' right
operands are stored side by side already (the blocks of an input projection's gradient),
`stack_products` makes the chain one product again, with nothing copied or kept longer.

Products join when they have the same flags, dtype and shape, and are used nowhere else.

Also here, `share_transposes`: a matrix that many products read transposed is transposed once;
and `transpose_small_lhs`: a small a @ B.T reads a transposed copy of a where this machine's
BLAS runs that faster.
"""
import contextlib
import contextvars
import functools
import os
import time
from collections import Counter, defaultdict

import numpy as np

from ..ir import consumers, replay
from ..ops import fn
from ..ops.linalg import SMALL_MATMUL
from ..ops.registry import ELEMENTWISE, KERNEL, REDUCE
from .dce import dce
from .sums import add_trees


def accumulate_products(graph):
    uses, trees = add_trees(graph)
    position = {n.output.id: i for i, n in enumerate(graph.nodes)}
    after = {}  # product id -> the term before it in its sum (the accumulation it adds to)
    chains = {}  # sum id -> (the last product of each accumulation, the other terms)
    for root, terms in trees.items():
        groups = defaultdict(list)
        for t in terms:
            n = t.node
            if n is not None and n.op == "matmul" and uses[t.id] == 1:
                groups[(n.attrs, t.dtype, t.shape)].append(t)
        ends, joined = [], {t.id for group in groups.values() for t in group}
        for group in groups.values():
            group.sort(key=lambda t: position[t.id])
            seed = _seed(group, terms, joined, position, uses)
            if len(group) < 2 and seed is None:
                joined.discard(group[0].id)  # (a lone product stays a term of the sum)
                continue
            chain = ([seed] if seed is not None else []) + group
            after.update((t.id, prev) for prev, t in zip(chain, chain[1:]))
            ends.append(group[-1])
            joined.update(t.id for t in chain)
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
            out = new_graph.apply("addmm", (new(after[vid]),) + ins, **dict(node.attrs))
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


def stack_products(graph):
    """An accumulated weight gradient (accumulate_products' chain of addmms, op(a_t).T @ b_t a
    step) whose b_t are a run of consecutive blocks of one concatenation along axis 0 (an RNN's
    per-step gate gradients, which merge_slice_sums made its input projection's gradient)
    becomes one product: concatenate(a_t).T @ those rows of the concatenation (or the same with
    a and b swapped). One long product runs at BLAS's full rate, on both cores, where each
    step's had 32 rows to sum (W8's recurrent weight: 47 products of 128x32 by 32x512), and
    nothing is copied: the concatenation is stored already, and the plan stores each a_t
    straight into its block of the new one (memory.py _concat_members). Where neither side is
    stored so already, the chain stays (W5: one concatenation more kept every step's gradient
    alive to the end). The product runs where its last operand is made, later than the chain's
    last addmm: only where nothing reads the sum before then."""
    blocks = {}  # value id -> (concatenation node, row offset) of axis-0 concatenations' inputs
    for n in graph.nodes:
        if n.op == "concatenate" and n.attr["axis"] == 0 and n.output.ndim == 2:
            row = 0
            for x in n.inputs:
                blocks.setdefault(x.id, (n, row))
                row += x.shape[0]
    if not blocks:
        return graph
    uses = Counter(v.id for n in graph.nodes for v in n.inputs)
    uses.update(v.id for v in graph.outputs)
    position = {n.output.id: i for i, n in enumerate(graph.nodes)}
    readers = consumers(graph)
    stacked, anchors = {}, defaultdict(list)
    for end in graph.nodes:
        if any(r.op == "addmm" and r.inputs[0] is end.output
               for r in readers.get(end.output.id, ())):
            continue  # (not the chain's end: an addmm adds to it)
        plan = _stack_plan(end, blocks, uses, position)
        if plan is None:
            continue
        last = plan[-1]
        if last is not None and any(position[r.output.id] <= position[last.output.id]
                                    for r in readers.get(end.output.id, ())):
            continue  # (read before its operands are all made)
        stacked[end.output.id] = plan
        if last is not None and position[last.output.id] > position[end.output.id]:
            anchors[last.output.id].append(end)
    if not stacked:
        return graph
    moved = {n.output.id for ends in anchors.values() for n in ends}
    order = []
    for n in graph.nodes:
        if n.output.id not in moved:
            order.append(n)
            order += anchors.get(n.output.id, [])
    input_index = {v.id: i for i, v in enumerate(graph.inputs)}
    new_of = {}

    def rewrite(new_graph, node, ins):
        def new(v):
            return new_of[v.id] if v.id in new_of else new_graph.inputs[input_index[v.id]]

        plan = stacked.get(node.output.id)
        if plan is None:
            out = new_graph.rebuild(node, ins)
        else:
            seed, a_side, b_side, _ = plan
            a, b = (_operand(side, new) for side in (a_side, b_side))
            out = (new_graph.apply("matmul", (a, b), ta=True, tb=False) if seed is None else
                   new_graph.apply("addmm", (new(seed), a, b), ta=True, tb=False))
        new_of[node.output.id] = out
        return out

    return dce(replay(graph, rewrite, order=order))


def _stack_plan(end, blocks, uses, position):
    """(seed or None, a side, b side, the node made last among the operands) that make the
    chain of addmms ending at `end` one product, or None. A side is ("rows", concatenation,
    first row, last row) or ("join", values in order)."""
    if end.op != "addmm" or len(end.inputs) != 3 or not end.attr["ta"] or end.attr["tb"]:
        return None
    terms, v = [], end.output
    while len(terms) <= MAX_STACKED and v.node is not None and v.node.op in (
            "addmm", "matmul") and (v is end.output or uses[v.id] == 1) and len(
            v.node.inputs) == 3 - (v.node.op == "matmul") and v.node.attrs == end.attrs and (
            v.dtype == end.output.dtype):
        terms.append(v.node.inputs[-2:])
        if v.node.op == "matmul":
            v = None
            break
        v = v.node.inputs[0]
    if len(terms) < 2 or len(terms) > MAX_STACKED:
        return None
    for side in (1, 0):  # (the b's a run of a concatenation's blocks, else the a's)
        found = [blocks.get(t[side].id) for t in terms]
        if None in found or len({id(n) for n, _ in found}) > 1:
            continue
        order = sorted(range(len(terms)), key=lambda i: found[i][1])
        rows = [found[i][1] for i in order]
        ends = [r + terms[i][side].shape[0] for r, i in zip(rows, order)]
        if any(e != r for e, r in zip(ends, rows[1:])):
            continue  # (not consecutive blocks, or one twice)
        concat = found[0][0]
        sliced = ("rows", concat, rows[0], ends[-1])
        joined = ("join", [terms[i][1 - side] for i in order])
        a_side, b_side = (joined, sliced) if side == 1 else (sliced, joined)
        made = [concat.output] + joined[1] + ([v] if v is not None else [])
        last = max((x for x in made if x.node is not None), key=lambda x: position[x.id],
                   default=None)
        return v, a_side, b_side, None if last is None else last.node
    return None


# products one stacked product may join (its new concatenation is one kernel: fn.concatenate
# splits longer ones into groups, whose blocks the plan would copy)
MAX_STACKED = 64


def _operand(side, new):
    if side[0] == "rows":
        _, concat, start, stop = side
        whole = new(concat.output)
        return fn.slice_(whole, (start, 0), (stop, whole.shape[1]), (1, 1))
    return fn.concatenate([new(x) for x in side[1]], axis=0)


def _seed(group, terms, joined, position, uses):
    """A term of the sum that the first product of `group` can be added into (addmm): one of
    the product's dtype and shape (no broadcast), made before that product, added once, and
    not a product that may join an accumulation (`joined`: every grouped product, and the
    seeds taken). An LSTM's step adds its input projection's slice to h @ Wh: one kernel, where
    a product and then an add kernel were two (W8: 48 adds of 32x512 a step)."""
    first = group[0]
    count = Counter(t.id for t in terms)
    for t in terms:  # (a term the sum adds twice, x + x + a @ b, is left as it is)
        if (count[t.id] == 1 and t.id not in joined and t.shape == first.shape
                and t.dtype == first.dtype and _stored(t, uses)
                and (t.node is None or position[t.id] < position[first.id])):
            return t
    return None


def _stored(v, uses):
    """Whether `v` is in memory whether or not the sum reads it: an input, a library kernel's
    result, an elementwise value read elsewhere too, or a slice or reshape of one. (An
    elementwise value read only here, as a weight decay's 2 * lam * W, is better fused into
    the kernel that reads the sum: W1's update kernels took it so, three kernels fewer; and a
    broadcast bias would be a copy of its own.)"""
    while v.node is not None and v.node.op in ("slice", "reshape"):
        v = v.node.inputs[0]
    if v.node is None:
        return True
    kind = v.node.opdef.kind
    return kind in (KERNEL, REDUCE) or (kind == ELEMENTWISE and uses[v.id] > 1)


# A matrix read transposed by at least this many products is transposed once for all of them.
SHARED_TRANSPOSE_READS = 3
# ...and only a matrix of at least this many elements: the copy is alive through the backward,
# and a small B packs about as fast transposed. W8's 512x128 recurrent weight: a step 4% faster
# for 256 KiB; W5's 128x128: no faster (1.15-1.21 ms either way) for 64 KiB, which took its arena
# over PyTorch's peak (672 against 663 KiB).
SHARED_TRANSPOSE_MIN_ELEMENTS = 32768


def share_transposes(graph):
    """Products that read one matrix B transposed (`a @ B.T`, tb) read a contiguous copy of B.T
    instead (tb off), made once, where at least SHARED_TRANSPOSE_READS products read it and it has
    at least SHARED_TRANSPOSE_MIN_ELEMENTS elements.

    OpenBLAS packs a transposed B more slowly than a plain one: single-threaded, 32x512 @
    (128x512).T took 74 us against 47 us for the same product with B.T contiguous (32x128 @
    128x512 ones: 72 vs 53; a 64x512 @ (64x512).T 57 vs 46), while A's flag (ta) costs little.
    Backpropagation through time reads the recurrent weight so at every step (W8's LSTM: 48
    products); the copy costs about one product's difference. The copy is legalize's (fuse.py),
    which makes a library kernel's non-contiguous input contiguous, once per value. (Products
    small enough to be loops, ops/linalg.py SMALL_MATMUL, are left as they are.)"""
    reads = Counter(n.inputs[1].id for n in graph.nodes if _blas_nt(n)
                    and n.inputs[1].size >= SHARED_TRANSPOSE_MIN_ELEMENTS)
    shared = {i for i, count in reads.items() if count >= SHARED_TRANSPOSE_READS}
    if not shared:
        return graph

    def rewrite(new_graph, node, ins):
        if _blas_nt(node) and node.inputs[1].id in shared:
            a, b = ins
            return new_graph.apply("matmul", (a, fn.transpose(b)), ta=node.attr["ta"], tb=False)
        return None

    return replay(graph, rewrite)


# OpenBLAS runs products of at most 10**6 multiply-adds (its own limit) with its small-matrix
# kernels, and on its AVX-512 builds the one for a @ B.T is slow: single-threaded, in us,
# a @ B.T against a.T @ B.T with a.T contiguous (m, k, n): 32x128x128 11.6 vs 5.8 (W5's
# dh = dz @ Wh.T at every step), 32x64x256 11.5 vs 5.3, 64x64x64 4.8 vs 3.1, 128x32x128 7.8
# vs 5.9, 128x128x32 7.7 vs 5.4; the same with beta = 1 (addmm). With fewer than 32 rows or
# inner columns the TT kernel is the slower one (8x128x128: 2.2 vs 3.5; 128x10x256: 6.0 vs
# 13.7), and below 2**17 multiply-adds the copy of a costs what the product saves. float64
# alike (32x128x128: 15.8 vs 9.3). Other builds (AVX2, Zen) run NT and TT alike, so whether to
# is measured once per process.
SMALL_KERNEL_WORK = 10 ** 6
TRANSPOSED_LHS_MIN_WORK = 1 << 17
TRANSPOSED_LHS_MIN_SIDE = 32
TRANSPOSED_LHS_GAIN = 1.3  # TT this much faster in the measurement, or left as it is

# Whether the products are lowered for this process's BLAS (compile.lower: the CPU target),
# and not portably (gradc compile's modules are the same whichever machine writes them); and
# whether for the CPU target at all (its BLAS calls take a scale: fold_sgd_steps)
_FOR_THIS_BLAS = contextvars.ContextVar("gradc_for_this_blas", default=False)
_PORTABLE = contextvars.ContextVar("gradc_portable_products", default=False)
_FOR_CPU = contextvars.ContextVar("gradc_products_for_cpu", default=False)


@contextlib.contextmanager
def lowering_for(target):
    """Lower products for `target`'s BLAS: this process's, measured, for the CPU target."""
    token = _FOR_THIS_BLAS.set(target == "cpu" and not _PORTABLE.get())
    cpu = _FOR_CPU.set(target == "cpu")
    try:
        yield
    finally:
        _FOR_THIS_BLAS.reset(token)
        _FOR_CPU.reset(cpu)


@contextlib.contextmanager
def portable():
    """Lower products with no choice measured on this machine (gradc compile)."""
    token = _PORTABLE.set(True)
    try:
        yield
    finally:
        _PORTABLE.reset(token)


def transposed_lhs_choice():
    """Whether transpose_small_lhs rewrites products where lowering_for("cpu") is in force
    (part of the program cache's key)."""
    return not _PORTABLE.get() and _tt_faster_than_nt()


@functools.lru_cache(maxsize=None)
def _tt_faster_than_nt():
    """GRADC_TRANSPOSED_LHS=1 or 0, or measured (once, kept in the cache's folder): whether
    NumPy's BLAS (the one the kernels call) runs 32x128 @ (128x128).T at least
    TRANSPOSED_LHS_GAIN times slower than the same product from a contiguous copy of a.T, TT.
    Minima of 5 alternating rounds of 20 calls each, ~3 ms."""
    value = os.environ.get("GRADC_TRANSPOSED_LHS", "")
    if value in ("0", "1"):
        return value == "1"
    if value:
        from ..errors import CompileError
        raise CompileError(f"GRADC_TRANSPOSED_LHS={value!r}: set it to 1 (small a @ B.T products "
                           "read a transposed copy of a), 0 (never), or unset it (measured)")
    from ..codegen import modules, rt
    if rt.BLAS != "openblas" or rt.GEMM == "avx512":  # (gradc's own products: NT is not slow)
        return False
    # Measured once per cache: where the two are close, a measurement per process flipped
    # between processes (and so did the program cache's key, and the products' last bits)
    folder = modules.module_dir()
    path = os.path.join(os.path.dirname(folder), "transposed_lhs") if folder else None
    try:
        with open(path, encoding="ascii") as f:
            kept = f.read().strip()
        if kept in ("0", "1"):
            return kept == "1"
    except (OSError, TypeError):
        pass
    faster = _measure_tt_against_nt()
    if path is not None:
        try:
            modules.write_atomically(path, b"1" if faster else b"0")
        except OSError:
            pass
    return faster


def _measure_tt_against_nt():
    """On one BLAS thread, as the kernels call it (at NumPy's default threads the answer
    depended on them, and so did the programs of a fresh cache)."""
    from ..codegen import rt
    set_threads = getattr(rt.OPENBLAS, rt.SET_BLAS_THREADS)  # (returns the count it replaces,
    threads = set_threads(1)  # for calls from this thread, as the kernels' own calls set it)
    try:
        return _time_tt_against_nt()
    finally:
        set_threads(threads)


def _time_tt_against_nt():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((32, 128), dtype=np.float32)
    a_t, b = np.ascontiguousarray(a.T), rng.standard_normal((128, 128), dtype=np.float32)
    out = np.empty((32, 128), np.float32)
    best = [np.inf, np.inf]
    for _ in range(5):
        for i, lhs in enumerate((a, a_t.T)):
            t0 = time.perf_counter()
            for _ in range(20):
                np.matmul(lhs, b.T, out=out)
            best[i] = min(best[i], time.perf_counter() - t0)
    return best[0] >= TRANSPOSED_LHS_GAIN * best[1]


# A float32 sum of this many terms or more adds float32 blocks in float64 (README); OpenBLAS's
# sgemm adds a product's k terms into one float32 accumulator per output, which a dot product
# or a matrix-vector product (one row or column of output) shows: x.T @ y over 2**19 positive
# terms was 4e-3 off, 200x NumPy's sdot; a matrix product's many outputs hide it no better,
# but NumPy's answer is sgemm's there too.
LONG_DOT = 4096


def long_dots_as_sums(graph):
    """A float32 product with one row or one column of output (a dot product, a matrix-vector
    product) over at least LONG_DOT terms -> the sum over k of the elementwise products, which
    the fuser makes one loop kernel (no product array), and which sums as gradc's long float32
    sums do. Both read each operand once, as BLAS's gemv does: memory-bound alike."""
    if not any(_long_dot(n) for n in graph.nodes):
        return graph

    def rewrite(new_graph, node, ins):
        if not _long_dot(node):
            return None
        a, b = ins
        a = fn.transpose(a) if node.attr["ta"] else a  # (m, k)
        b = fn.transpose(b) if node.attr["tb"] else b  # (k, n)
        return fn.sum(fn.multiply(fn.expand_dims(a, 2), fn.expand_dims(b, 0)), axis=1)

    return replay(graph, rewrite)


def _long_dot(node):
    if node.op != "matmul" or node.output.dtype != np.float32 or min(node.output.shape) != 1:
        return False
    a = node.inputs[0]
    return a.shape[0 if node.attr["ta"] else 1] >= LONG_DOT


def transpose_small_lhs(graph):
    """A product a @ B.T (or an addmm's) within OpenBLAS's small-matrix kernels reads a
    contiguous copy of a.T instead, both flags set, where this machine's BLAS runs it so
    faster (see SMALL_KERNEL_WORK). The copy is legalize's (fuse.py), as in share_transposes."""
    if not (_FOR_THIS_BLAS.get() and any(_small_nt(n) for n in graph.nodes)
            and transposed_lhs_choice()):
        return graph

    def rewrite(new_graph, node, ins):
        if not _small_nt(node):
            return None
        *c, a, b = ins
        return new_graph.apply(node.op, (*c, fn.transpose(a), b), ta=True, tb=True)

    return replay(graph, rewrite)


def _small_nt(node):
    """A product op(a) @ B.T, a not transposed, that OpenBLAS's small kernels would run and
    that is large enough to gain from reading a transposed copy of a."""
    if node.op not in ("matmul", "addmm") or node.attr["ta"] or not node.attr["tb"]:
        return False
    if node.output.dtype.kind != "f":
        return False
    m, n = node.output.shape
    k = node.inputs[-1].shape[1]  # (B is n x k)
    return (TRANSPOSED_LHS_MIN_WORK <= m * n * k <= SMALL_KERNEL_WORK
            and min(m, k) >= TRANSPOSED_LHS_MIN_SIDE)


def _blas_nt(node):
    """A 2-D float product with B transposed that calls BLAS (ops/linalg.py `_product`)."""
    if node.op != "matmul" or not node.attr["tb"] or node.output.dtype.kind != "f":
        return False
    m, n = node.output.shape
    return m * n * node.inputs[1].shape[1] > SMALL_MATMUL  # (B is n x k)


def fold_sgd_steps(graph):
    """W - s * (op(a) @ op(b)) (or W + s * ...) with s a scalar and the product read nowhere
    else -> addmm(W, a, b, -s): one gemm with alpha = -s and beta = 1 into W's buffer. Plain
    SGD's step on a weight (s = lr) is such an update: the weight's gradient is then never
    stored (W2's 784x256 first layer: 784 KiB and a kernel that read it and W and wrote W), as
    it is not by a hand-written `W -= lr * x.T @ dz` gemm. Only on the CPU target (cuda_rt's
    addmm has no scale), for products that call BLAS, where W is not an operand of its own
    product (the gemm would read what it writes), and where nothing reads W after the product:
    else the gemm, which overwrites W, waits for that reader and keeps the product's operands
    alive until it (a hidden layer's W, which its input's gradient reads: W10's arena 10.0 ->
    13.0 MiB; a first layer's has no such reader). The bits differ from the two-step update's:
    the product is not rounded before it is scaled."""
    if not _FOR_CPU.get():
        return graph
    uses = Counter(x.id for n in graph.nodes for x in n.inputs)
    uses.update(v.id for v in graph.outputs)
    reads = defaultdict(list)  # root value id -> positions of the nodes reading it (via views)
    for i, node in enumerate(graph.nodes):
        for x in node.inputs:
            reads[_root(x)].append(i)
    position = {node.output.id: i for i, node in enumerate(graph.nodes)}
    folds = {}
    for i, node in enumerate(graph.nodes):
        if node.op not in ("subtract", "add"):
            continue
        for c, term in ([node.inputs] if node.op == "subtract" else
                        [node.inputs, node.inputs[::-1]]):
            found = _scaled_product(term)
            if (found is not None and uses[term.id] == 1 and uses[found[0].output.id] == 1
                    and c.shape == term.shape and c.dtype == term.dtype
                    and _root(c) not in {_root(x) for x in found[0].inputs}
                    and all(r < position[found[0].output.id] or r == i
                            for r in reads[_root(c)])):
                folds[node.output.id] = c is node.inputs[1]  # (which input is c)
                break
    if not folds:
        return graph

    def rewrite(new_graph, node, ins):
        if node.output.id not in folds:
            return None
        c, term = ins[::-1] if folds[node.output.id] else ins
        product, scale = _scaled_product(term)
        alpha = fn.negative(scale) if node.op == "subtract" else scale
        return new_graph.apply("addmm", (c, *product.inputs, alpha), **dict(product.attrs))

    return replay(graph, rewrite)


def _scaled_product(v):
    """(the matmul node, the 0-d scale) of v = scale * op(a) @ op(b) (a scalar broadcast times
    a float product that calls BLAS), or None."""
    if v.node is None or v.node.op != "multiply":
        return None
    for product, scale in (v.node.inputs, v.node.inputs[::-1]):
        while scale.node is not None and scale.node.op in ("broadcast_to", "reshape") \
                and scale.node.inputs[0].size == 1:
            scale = scale.node.inputs[0]
        node = product.node
        if (scale.shape != () or node is None or node.op != "matmul"
                or product.dtype.kind != "f" or scale.dtype != product.dtype):
            continue
        b_rows, b_columns = node.inputs[1].shape
        if product.size * (b_columns if node.attr["tb"] else b_rows) > SMALL_MATMUL:
            return node, scale
    return None


def _root(v):
    """The value whose buffer v views (through reshapes, slices, transposes, broadcasts)."""
    while v.node is not None and v.node.op in ("reshape", "slice", "transpose", "broadcast_to"):
        v = v.node.inputs[0]
    return v.id
