"""Property-based tests: random expression graphs through the whole pipeline.

Hypothesis draws a small program — random unary and binary elementwise ops, broadcasting between
random compatible shapes (up to 3-D, at most 4 per axis), scalar and array constants,
transposes, slices and reshapes, reductions over random axes with and without keepdims — as
plain NumPy code. Then `gradc.value_and_grad` of `sum(expr * r)` (compiled: passes, fusion,
buffer plan, Numba) must agree with the reference interpreter on the traced joint
graph and with NumPy itself; so must the forward compiled by `gradc.jit`.

Values are drawn from a seeded NumPy generator (continuous, so no accidental ties at the kinks of
max/abs/relu) and every op is kept in its safe domain (log and sqrt of x*x + 1, exp of tanh...).
Each example compiles new kernels (~0.3 s each), hence the small example counts.
"""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import gradc
from gradc import autodiff
from gradc.interpret import evaluate
from gradc.passes import AFTER_AUTODIFF, BEFORE_AUTODIFF, run_passes
from gradc.passes.fuse import fuse
from gradc.passes.memory import nbytes, plan_buffers
from gradc.trace import trace

from _plan_checks import assert_member_in_its_block, assert_overwrites_elementwise

nn = gradc.nn

UNARY = {
    "neg": lambda a: -a,
    "tanh": np.tanh,
    "sin": np.sin,
    "cos": np.cos,
    "exp_tanh": lambda a: np.exp(np.tanh(a)),
    "log_sq1": lambda a: np.log(a * a + 1.0),
    "sqrt_sq1": lambda a: np.sqrt(a * a + 1.0),
    "log1p_abs": lambda a: np.log1p(np.abs(a)),
    "square": np.square,
    "cube": lambda a: a ** 3,
    "abs": np.abs,
    "recip_sq1": lambda a: 1.0 / (1.0 + a * a),
    "affine": lambda a: 0.5 * a - 1.25,
    "sigmoid": nn.sigmoid,
    "relu": nn.relu,
    "softplus": nn.softplus,
    "log_sigmoid": nn.log_sigmoid,
}

BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / (1.0 + b * b),
    "maximum": np.maximum,
    "minimum": np.minimum,
    "where": lambda a, b: np.where(a > b, a, b * 0.5),
    "hypot1": lambda a, b: np.sqrt(a * a + b * b + 1.0),
}

REDUCE = {
    "sum": np.sum,
    "mean": np.mean,
    "max": np.max,
    "min": np.min,
}

# shape changes, read through views by the fused loops
MOVE = {
    "T": lambda a: a.T,
    "flip_last": lambda a: a[..., ::-1],
    "drop_first": lambda a: a[1:] if a.shape[0] > 1 else a[:1] * 1.0,
    "flatten": lambda a: a.reshape(-1),
    "every_other": lambda a: a[::2],
}

CONSTANTS = [0.5, 2.0, -1.5]


def _broadcastable(s1, s2):
    try:
        np.broadcast_shapes(s1, s2)
        return True
    except ValueError:
        return False


@st.composite
def programs(draw, max_steps=6, reductions=True):
    """A random program: input shapes, and steps each building one expression from earlier ones.

    An expression is ("in", i) | ("un", op, e) | ("bin", op, e1, e2) | ("const", c)
    | ("array", shape, seed) | ("move", op, e) | ("red", op, axes, keepdims, e); `e` are
    indices into the list of earlier expressions.
    """
    ndim = draw(st.integers(1, 3))
    base = tuple(draw(st.lists(st.integers(1, 4), min_size=ndim, max_size=ndim)))
    n_inputs = draw(st.integers(1, 3))
    shapes = []
    for _ in range(n_inputs):
        drop = draw(st.integers(0, ndim - 1))  # drop leading axes (NumPy-style broadcasting)
        ones = draw(st.lists(st.booleans(), min_size=ndim - drop, max_size=ndim - drop))
        shapes.append(tuple(1 if o else d for o, d in zip(ones, base[drop:])))
    exprs = [("in", i) for i in range(n_inputs)]
    shape_of = list(shapes)
    kinds = ["un", "bin", "bin", "move"] + (["red"] if reductions else [])
    for _ in range(draw(st.integers(1, max_steps))):
        kind = draw(st.sampled_from(kinds))
        # operand: the latest expression half of the time (long chains), else any earlier one
        candidates = [j for j, e in enumerate(exprs) if e[0] not in ("const", "array")]
        a = candidates[-1] if draw(st.booleans()) else draw(st.sampled_from(candidates))
        if kind in ("red", "move") and len(shape_of[a]) == 0:
            kind = "un"
        if kind == "move":
            op = draw(st.sampled_from(sorted(MOVE)))
            exprs.append(("move", op, a))
            shape_of.append(MOVE[op](np.zeros(shape_of[a])).shape)
        elif kind == "un":
            exprs.append(("un", draw(st.sampled_from(sorted(UNARY))), a))
            shape_of.append(shape_of[a])
        elif kind == "bin":
            op = draw(st.sampled_from(sorted(BINARY)))
            partners = [j for j in candidates if _broadcastable(shape_of[a], shape_of[j])]
            if draw(st.booleans()) and len(partners) > 1:
                b = draw(st.sampled_from(partners))
                b_shape = shape_of[b]
            elif draw(st.booleans()):
                exprs.append(("const", draw(st.sampled_from(CONSTANTS))))
                shape_of.append(())
                b, b_shape = len(exprs) - 1, ()
            else:  # a NumPy array captured by the function: an array constant in the graph
                b_shape = shape_of[a][draw(st.integers(0, len(shape_of[a]))):]
                exprs.append(("array", b_shape, draw(st.integers(0, 3))))
                shape_of.append(b_shape)
                b = len(exprs) - 1
            pair = (a, b) if draw(st.booleans()) else (b, a)
            exprs.append(("bin", op, *pair))
            shape_of.append(np.broadcast_shapes(shape_of[a], b_shape))
        else:
            nd = len(shape_of[a])
            axes = draw(st.one_of(st.none(), st.lists(st.integers(0, nd - 1), min_size=1,
                                                         max_size=nd, unique=True)))
            keepdims = draw(st.booleans())
            op = draw(st.sampled_from(sorted(REDUCE)))
            axes_t = None if axes is None else tuple(sorted(axes))
            exprs.append(("red", op, axes_t, keepdims, a))
            shape_of.append(np.sum(np.zeros(shape_of[a]), axis=axes_t, keepdims=keepdims).shape)
    seed = draw(st.integers(0, 2 ** 32 - 1))
    return shapes, exprs, seed


@st.composite
def product_programs(draw, max_steps=7):
    """Sums and products of square matrices: ("mm", e1, e2) beside ("bin", "add", e1, e2) (e1
    may be e2: a term added twice), transposes and a few elementwise ops, as the passes that
    accumulate products (passes/products.py) see them. The size 24 makes BLAS calls, 2 and 3
    loop nests."""
    k = draw(st.sampled_from([2, 3, 24]))
    n_inputs = draw(st.integers(1, 3))
    exprs = [("in", i) for i in range(n_inputs)]
    for _ in range(draw(st.integers(2, max_steps))):
        kind = draw(st.sampled_from(["mm", "mm", "add", "add", "un", "move"]))
        a = len(exprs) - 1 if draw(st.booleans()) else draw(st.integers(0, len(exprs) - 1))
        b = draw(st.integers(0, len(exprs) - 1))
        if kind == "mm":
            exprs.append(("mm", a, b))
        elif kind == "add":
            exprs.append(("bin", "add", a, b))
        elif kind == "un":
            exprs.append(("un", draw(st.sampled_from(["tanh", "square", "affine"])), a))
        else:
            exprs.append(("move", "T", a))
    return [(k, k)] * n_inputs, exprs, draw(st.integers(0, 2 ** 32 - 1))


def run(exprs, xs, all_values=False):
    """Evaluate the program on arrays or traced values (the same NumPy code); with all_values,
    return every intermediate value too."""
    vals = []
    for e in exprs:
        if e[0] == "in":
            vals.append(xs[e[1]])
        elif e[0] == "const":
            vals.append(e[1])
        elif e[0] == "array":
            vals.append(np.random.default_rng(e[2]).uniform(-1.5, 1.5, e[1]))
        elif e[0] == "un":
            vals.append(UNARY[e[1]](vals[e[2]]))
        elif e[0] == "move":
            vals.append(MOVE[e[1]](vals[e[2]]))
        elif e[0] == "bin":
            vals.append(BINARY[e[1]](vals[e[2]], vals[e[3]]))
        elif e[0] == "mm":
            vals.append(vals[e[1]] @ vals[e[2]])
        else:
            _, op, axes, keepdims, a = e
            vals.append(REDUCE[op](vals[a], axis=axes, keepdims=keepdims))
    return vals if all_values else vals[-1]


def make_inputs(shapes, exprs, seed):
    rng = np.random.default_rng(seed)
    xs = [rng.uniform(-2.0, 2.0, s) for s in shapes]
    out = np.asarray(run(exprs, xs), dtype=np.float64)
    r = rng.standard_normal(out.shape)
    return xs, r, out


def magnitude(exprs, xs):
    """The largest |value| anywhere in the program: rounding errors scale with it (a difference
    of two large intermediates can be a small output)."""
    with np.errstate(all="ignore"):
        return max(float(np.max(np.abs(v))) if np.size(v) else 0.0
                   for v in run(exprs, xs, all_values=True))


def reference_joint(loss, args, n):
    """The oracle: evaluate() of the traced joint graph (before the AFTER_AUTODIFF passes and
    fusion), and of the same graph after those passes."""
    graph, _, _ = trace(loss, args)
    graph = run_passes(graph, BEFORE_AUTODIFF)
    wrt = graph.inputs[:n]
    graph.outputs = [graph.outputs[0]] + autodiff.vjp(graph, graph.outputs[0], wrt)
    return evaluate(graph, args), evaluate(run_passes(graph, AFTER_AUTODIFF), args)


def assert_close(got, want, what, magnitude=0.0, rtol=1e-7, atol=1e-9):
    want = np.asarray(want)
    scale = 1.0 + max(np.max(np.abs(want)) if want.size else 0.0, magnitude)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * scale, err_msg=what)


def check_program(shapes, exprs, seed):
    xs, r, out = make_inputs(shapes, exprs, seed)
    if not np.all(np.isfinite(out)):
        return
    n = len(xs)
    mag = magnitude(exprs, xs)

    def loss(*args):
        return np.sum(run(exprs, args[:n]) * args[n])

    args = xs + [r]
    saved = [a.copy() for a in args]
    value, grads = gradc.value_and_grad(loss, argnums=tuple(range(n)), copy=True)(*args)
    for a, s in zip(args, saved):
        np.testing.assert_array_equal(a, s)
    (want_value, *want_grads), optimized = reference_joint(loss, args, n)

    assert_close(value, np.sum(out * r), "value vs NumPy", mag)
    assert_close(value, want_value, "value vs evaluate(joint graph)", mag)
    assert len(grads) == n
    for i, (g, w) in enumerate(zip(grads, want_grads)):
        assert g.shape == xs[i].shape and g.dtype == np.float64
        assert_close(g, w, f"gradient {i} vs evaluate(joint graph)", mag)
    for i, (o, w) in enumerate(zip(optimized, [want_value] + want_grads)):
        assert_close(o, w, f"output {i}: evaluate after AFTER_AUTODIFF passes", mag)


SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow],
                print_blob=True)


@settings(max_examples=40, **SETTINGS)
@given(programs(reductions=False))
def test_random_elementwise_broadcast_programs(program):
    check_program(*program)


@settings(max_examples=40, **SETTINGS)
@given(programs(max_steps=5, reductions=True))
# a max's gradient compared a recomputed sqrt(x * x + 1.25) with the max of the stored one: bits
# differed (other fast-math contractions), no tie was counted, the gradient came out -inf
@example(program=([(1, 1, 1), (1, 1)], [("in", 0), ("in", 1), ("const", 0.5), ("bin", "hypot1", 0, 2),
                                        ("red", "max", None, False, 3), ("bin", "add", 4, 0),
                                        ("un", "abs", 5), ("un", "abs", 6)], 1013493))
def test_random_programs_with_reductions(program):
    check_program(*program)


@settings(max_examples=25, **SETTINGS)
@given(product_programs())
# x + x + a @ b: the product was added into x, and the second x lost (fixed in 8ba08e8)
@example(program=([(3, 3), (3, 3)], [("in", 0), ("in", 1), ("mm", 0, 1), ("bin", "add", 0, 0),
                                     ("bin", "add", 3, 2)], 7))
def test_random_sums_of_products(program):
    check_program(*program)


@settings(max_examples=30, **SETTINGS)
@given(programs(max_steps=5, reductions=True), st.sampled_from([np.float32, np.float64]))
def test_random_programs_compiled_forward(program, dtype):
    """gradc.jit of the program itself (an output of any shape), in float32 or float64, equals
    NumPy run on the same arrays: same shape, same dtype (NumPy's promotion rules), same values."""
    shapes, exprs, seed = program
    xs, _, _ = make_inputs(shapes, exprs, seed)
    xs = [x.astype(dtype) for x in xs]
    with np.errstate(all="ignore"):
        out = np.asarray(run(exprs, xs))
    if not np.all(np.isfinite(out)):
        return
    got = np.asarray(gradc.jit(lambda *a: run(exprs, a))(*xs))
    assert got.shape == out.shape and got.dtype == out.dtype
    mag = magnitude(exprs, [x.astype(np.float64) for x in xs])
    if dtype == np.float64:
        assert_close(got, out, "jit forward vs NumPy", mag)
    else:
        assert_close(got, out, "jit forward vs NumPy (float32)", mag, rtol=1e-4, atol=1e-5)


def joint_graph_of(shapes, exprs, seed):
    xs, r, _ = make_inputs(shapes, exprs, seed)
    n = len(xs)
    graph, _, _ = trace(lambda *a: np.sum(run(exprs, a[:n]) * a[n]), xs + [r])
    graph = run_passes(graph, BEFORE_AUTODIFF)
    graph.outputs = [graph.outputs[0]] + autodiff.vjp(graph, graph.outputs[0], graph.inputs[:n])
    return run_passes(graph, AFTER_AUTODIFF), xs + [r]


@settings(max_examples=100, **SETTINGS)
@given(programs(max_steps=8, reductions=True))
def test_random_programs_fusion_and_buffer_plan(program):
    """No compiling: the fused (legalized) graph evaluates like the graph, kernels run after the
    kernels they read, and no two values alive in the same kernel share arena bytes."""
    graph, args = joint_graph_of(*program)
    fusion = fuse(graph)
    for got, want in zip(evaluate(fusion.graph, args), evaluate(graph, args)):
        assert_close(got, want, "evaluate(fused graph)")
    for k in fusion.kernels:
        assert all(d.index < k.index for d in k.deps)
    plan = plan_buffers(fusion)
    # lifetimes over the kernel schedule: [kernel that stores it, last kernel that reads it
    # from memory] (as the generated code does: a value computed, or recomputed, earlier in the
    # same kernel is in a register)
    life = {v.id: [k.index, k.index] for k in fusion.kernels for v in k.stores}
    for k in fusion.kernels:
        local = set()
        for node in k.nodes:
            for x in node.inputs:
                base = fusion.layouts[x.id][0].id
                if base in life and not (base == x.id and x.id in local):
                    life[base][1] = max(life[base][1], k.index)
            local.add(node.output.id)
    for v in fusion.graph.outputs:
        life[fusion.layouts[v.id][0].id] = [-1, len(fusion.kernels)]
    stored = {v.id: v for k in fusion.kernels for v in k.stores}
    for vid, v in stored.items():
        assert plan.offsets[vid] + nbytes(v) <= plan.arena_bytes
    for new, old in plan.shared.items():
        assert_overwrites_elementwise(fusion, new, old, life)
    for member, concat in plan.members.items():
        assert_member_in_its_block(fusion, plan, member, concat)
    items = sorted(stored.items())
    for i, (a, va) in enumerate(items):
        for b, vb in items[i + 1:]:
            if life[a][1] < life[b][0] or life[b][1] < life[a][0]:
                continue
            if plan.shared.get(a) == b or plan.shared.get(b) == a:
                continue  # one kernel's value written over its input (checked below)
            if plan.members.get(a) == b or plan.members.get(b) == a:
                continue  # a value stored in its block of a concatenation (checked above)
            oa, ob = plan.offsets[a], plan.offsets[b]
            assert oa + nbytes(va) <= ob or ob + nbytes(vb) <= oa, (
                f"%{a} and %{b} are alive together (kernels {life[a]}, {life[b]}) and overlap")
