"""The pass pipeline, stage by stage, against the reference interpreter.

- every pass in BEFORE_AUTODIFF and AFTER_AUTODIFF keeps `evaluate` results (forward graphs and
  joint value+gradient graphs), and leaves its input graph untouched;
- the pass order is pinned;
- simplify, CSE and DCE do what they say;
- fusion: a whole elementwise chain with its reduction (and its gradient) is one kernel, matmuls
  are kernels of their own, and the fused (legalized) graph still evaluates the same;
- the buffer plan reuses memory, and no two values alive at the same time overlap.

No Numba compiles here: everything runs on the IR and the NumPy interpreter.
"""
from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
import scipy.special as sp

import gradc
from gradc import autodiff
from gradc.interpret import evaluate
from gradc.ir import Graph
from gradc.ops import fn
from gradc.passes import AFTER_AUTODIFF, BEFORE_AUTODIFF, run_passes
from gradc.passes.cse import cse
from gradc.passes.dce import dce
from gradc.passes.lower import lower_composites
from gradc.passes.products import accumulate_products, stack_products
from gradc.passes.simplify import simplify
from gradc.passes.slices import merge_slice_sums
from gradc.passes.fuse import fuse
from gradc.passes.memory import nbytes, plan_buffers
from gradc.trace import trace

from _plan_checks import assert_member_in_its_block, assert_overwrites_elementwise

nn = gradc.nn


# ---------------------------------------------------------------------------------------------
# the graphs under test: (name, loss function, input generator, argnums)

def _mlp(x, y, w1, b1, w2, b2):
    h = np.tanh(x @ w1 + b1)
    return nn.cross_entropy(h @ w2 + b2, y)


def _w3(x, w, b):
    return np.sum(np.tanh(x * w + b) ** 2 * nn.sigmoid(x * w) + 0.5 * np.exp(-np.abs(b)))


def _softmax_xent(z, y):
    return nn.cross_entropy(z, y)


def _chain(x, y):
    a = np.exp(-x * x) * np.sin(y) + np.log(1 + x * x)
    return np.sum(np.sqrt(a * a + 1.0) / (1.0 + np.abs(y)) - np.maximum(x, y) * 0.5)


def _broadcast(x, v, c):
    d = x[:, None, :] - v[None, :, :]  # (4, 3, 5)
    return np.sum(d * d * c) + np.sum(np.tanh(x) * v.sum(axis=0))


def _slicing(x, y):
    z = np.concatenate([x[1:], x[:-1] * 2.0, y], axis=0)
    s = np.stack([z[:, 0], z[:, -1]], axis=1)
    return np.sum(z[::2] ** 2) + np.sum(np.tanh(s)) + np.sum(x[:, 1:3] @ y[:, :2].T)


def _reductions(x):
    m = np.max(x, axis=1, keepdims=True)
    return np.sum(np.min(x, axis=0) * np.mean(x, axis=0)) + np.sum((x - m) ** 2) + \
        nn.logsumexp(x.reshape(-1))


def _stable(x):
    return np.sum(np.log(nn.sigmoid(x)) + np.log(1 + np.exp(x)) + 1.0 / (1.0 + np.exp(-x)) * x
                  + nn.log_softmax(x, axis=0) * 1.0)


def _gather(w, idx, x, lab):
    e = np.take(w, idx, axis=0)  # (6, 3)
    return np.sum(np.tanh(e @ x)) + np.sum(w[np.arange(5), lab] ** 2)


def _reshaped(x, w):
    return np.sum(np.tanh(x.reshape(6, 2)) @ w) + np.sum(np.squeeze(w[:, :1], axis=1) ** 2)


def _rnn(x, wx, wh, b):
    h = np.tanh(x[0] @ wx + b)
    for t in range(1, x.shape[0]):
        h = np.tanh(x[t] @ wx + h @ wh + b)
    return np.sum(h * h)


def _rnn_projected(x, wx, wh, b):
    """Every step's input projection as one product, sliced per step (as W8's LSTM): the
    gradient of xw is its steps' blocks side by side; the gates' column blocks are not."""
    xw = x @ wx + b
    h = np.tanh(x[0, :, :2] @ wh[:2, :4])
    for t in range(x.shape[0]):
        z = xw[t] + h @ wh
        h = np.tanh(z[:, :4]) * nn.sigmoid(z[:, 4:])
    return np.sum(h * h)


def _slice_sums(x, v):
    """Overlapping, strided and reversed slices of one array, and a dense use of it."""
    return (np.sum(np.sin(x[1:4, ::2]) * x[:3, 1::2]) + np.sum(x[::-1, ::-2] ** 2)
            + np.sum(x[:, 2] * x[3, :4]) + np.sum(np.tanh(x) * v[:4, None])
            + np.sum(v[::-3] * v[1:4].sum()))


def _gen(specs):
    def make(seed):
        rng = np.random.default_rng(seed)
        return [s(rng) for s in specs]
    return make


N = lambda *shape: lambda rng: rng.standard_normal(shape)  # noqa: E731
LABELS = lambda high, n: lambda rng: rng.integers(0, high, n).astype(np.int64)  # noqa: E731

GRAPHS = [
    ("mlp", _mlp, _gen([N(8, 3), LABELS(4, 8), N(3, 5), N(5), N(5, 4), N(4)]), (2, 3, 4, 5)),
    ("w3", _w3, _gen([N(16), N(16), N(16)]), (1, 2)),
    ("softmax_cross_entropy", _softmax_xent, _gen([N(6, 4), LABELS(4, 6)]), (0,)),
    ("elementwise_chain", _chain, _gen([N(3, 4), N(3, 4)]), (0, 1)),
    ("broadcasting", _broadcast, _gen([N(4, 5), N(3, 5), N(1, 3, 1)]), (0, 1, 2)),
    ("slicing_concat", _slicing, _gen([N(4, 5), N(2, 5)]), (0, 1)),
    ("reductions", _reductions, _gen([N(3, 4)]), (0,)),
    ("stability", _stable, _gen([N(3, 4)]), (0,)),
    ("reshape_gradients", _reshaped, _gen([N(3, 4), N(2, 3)]), (0, 1)),
    ("gather", _gather, _gen([N(5, 3), LABELS(5, 6), N(3, 2), LABELS(3, 5)]), (0, 2)),
    ("unrolled_rnn", _rnn, _gen([N(5, 2, 3), N(3, 8), N(8, 8), N(8)]), (1, 2, 3)),
    ("slice_sums", _slice_sums, _gen([N(4, 6), N(7)]), (0, 1)),
    # products big enough for BLAS: the backward reads wh transposed 3 times (share_transposes)
    ("rnn_projected", _rnn_projected, _gen([N(3, 2, 3), N(3, 8), N(4, 8), N(8)]), (1, 2, 3)),
    ("rnn_shared_transpose", _rnn, _gen([N(4, 4, 3), N(3, 48), N(48, 48), N(48)]), (1, 2, 3)),
    # dz @ wh.T at each step: 32x64x64, in OpenBLAS's small-matrix range (transpose_small_lhs)
    ("rnn_small_products", _rnn, _gen([N(3, 32, 8), N(8, 64), N(64, 64), N(64)]), (1, 2, 3)),
]
GRAPH_IDS = [g[0] for g in GRAPHS]


def forward_graph(fn, make):
    graph, _, _ = trace(fn, make(0))
    return graph


def joint_graph(fn, make, argnums):
    """What value_and_grad builds: trace, BEFORE_AUTODIFF, then the backward appended."""
    graph = run_passes(forward_graph(fn, make), BEFORE_AUTODIFF)
    wrt = [graph.inputs[i] for i in argnums]
    graph.outputs = [graph.outputs[0]] + autodiff.vjp(graph, graph.outputs[0], wrt)
    return graph


def assert_same_results(before, after, make, what):
    for seed in (1, 2):
        args = make(seed)
        want = evaluate(before, args)
        got = evaluate(after, args)
        assert len(got) == len(want)
        for i, (g, w) in enumerate(zip(got, want)):
            assert g.shape == w.shape and g.dtype == w.dtype, f"{what}: output {i}"
            np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12,
                                       err_msg=f"{what}: output {i}, seed {seed}")


def fingerprint(graph):
    return (len(graph.nodes), [v.id for v in graph.outputs], [v.id for v in graph.inputs],
            str(graph))


def run_checked(graph, passes, make, label):
    """Run `passes` one by one; each must keep the results and leave its input unchanged."""
    for p in passes:
        before_print = fingerprint(graph)
        new = p(graph)
        assert fingerprint(graph) == before_print, f"{p.__name__} modified its input graph"
        assert_same_results(graph, new, make, f"{label}: {p.__name__}")
        graph = new
    return graph


# ---------------------------------------------------------------------------------------------
# every pass preserves evaluate()


def test_pass_order_is_pinned():
    assert [p.__name__ for p in BEFORE_AUTODIFF] == ["simplify", "cse", "dce"]
    assert [p.__name__ for p in AFTER_AUTODIFF] == [
        "simplify", "lower_composites", "simplify", "clear_zero_signs", "long_dots_as_sums",
        "accumulate_products", "merge_slice_sums", "stack_products", "share_transposes",
        "transpose_small_lhs", "fold_sgd_steps", "cse", "dce"]


@pytest.mark.parametrize("name,fn,make,argnums", GRAPHS, ids=GRAPH_IDS)
def test_passes_preserve_forward(name, fn, make, argnums):
    graph = forward_graph(fn, make)
    graph = run_checked(graph, BEFORE_AUTODIFF, make, f"{name} forward")
    graph = run_checked(graph, AFTER_AUTODIFF, make, f"{name} forward")
    assert_same_results(graph, fuse(graph).graph, make, f"{name} forward: fuse/legalize")


@pytest.mark.parametrize("name,fn,make,argnums", GRAPHS, ids=GRAPH_IDS)
def test_passes_preserve_joint_graph(name, fn, make, argnums):
    graph = joint_graph(fn, make, argnums)
    assert len(graph.outputs) == 1 + len(argnums)
    final = run_checked(graph, AFTER_AUTODIFF, make, f"{name} joint")
    assert_same_results(graph, fuse(final).graph, make, f"{name} joint: fuse/legalize")
    # after the pipeline only primitives remain: composites are lowered before fusion
    kinds = {n.opdef.kind for n in final.nodes}
    assert "composite" not in kinds


@pytest.mark.parametrize("name,fn,make,argnums", GRAPHS, ids=GRAPH_IDS)
def test_joint_graph_gradients_match_finite_differences(name, fn, make, argnums):
    """The oracle itself: evaluate() of the joint graph gives the value and FD gradients."""
    graph = joint_graph(fn, make, argnums)
    args = make(3)
    outs = evaluate(graph, args)
    np.testing.assert_allclose(outs[0], fn(*args), rtol=1e-12)
    eps = 1e-6
    for i, g in zip(argnums, outs[1:]):
        x = args[i]
        fd = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            plus, minus = [a.copy() for a in args], [a.copy() for a in args]
            plus[i][idx] += eps
            minus[i][idx] -= eps
            fd[idx] = (fn(*plus) - fn(*minus)) / (2 * eps)
        np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-6, err_msg=f"{name}: argument {i}")


@pytest.mark.parametrize("name,fn,make,argnums", GRAPHS, ids=GRAPH_IDS)
def test_no_duplicate_nodes_after_pipeline(name, fn, make, argnums):
    graph = run_passes(joint_graph(fn, make, argnums), AFTER_AUTODIFF)
    keys = [(n.op, tuple(v.id for v in n.inputs), repr(n.attrs)) for n in graph.nodes]
    dupes = {k for k in keys if keys.count(k) > 1}
    assert not dupes, f"repeated nodes after CSE: {sorted(dupes)[:5]}"


@pytest.mark.parametrize("name,fn,make,argnums", GRAPHS, ids=GRAPH_IDS)
def test_no_dead_nodes_after_pipeline(name, fn, make, argnums):
    graph = run_passes(joint_graph(fn, make, argnums), AFTER_AUTODIFF)
    used = {v.id for n in graph.nodes for v in n.inputs} | {v.id for v in graph.outputs}
    dead = [n for n in graph.nodes if n.output.id not in used]
    assert not dead, f"dead nodes after DCE: {[n.op for n in dead]}"


# ---------------------------------------------------------------------------------------------
# simplify


def ops_of(graph):
    return [n.op for n in graph.nodes]


def simplified(fn, *args):
    """simplify, then CSE and DCE (the BEFORE_AUTODIFF pipeline): simplify rewires uses to the
    rewritten values and leaves the nodes it bypassed for DCE to drop."""
    graph, _, _ = trace(fn, list(args))
    make = lambda seed: [np.random.default_rng(seed).standard_normal(np.shape(a))  # noqa: E731
                         for a in args]
    new = simplify(graph)
    assert_same_results(graph, new, make, "simplify")
    new = run_passes(new, BEFORE_AUTODIFF[1:])
    assert_same_results(graph, new, make, "simplify+cse+dce")
    return new


X34 = np.zeros((3, 4))


def test_simplify_log_sigmoid():
    g = simplified(lambda x: np.log(nn.sigmoid(x)), X34)
    assert "log_sigmoid" in ops_of(g)
    assert "log" not in ops_of(g) and "sigmoid" not in ops_of(g)


def test_simplify_naive_sigmoid_formula():
    g = simplified(lambda x: 1 / (1 + np.exp(-x)), X34)
    assert ops_of(g) == ["sigmoid"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_silu_written_as_a_quotient_has_a_finite_gradient_where_exp_overflows(dtype):
    """fuzz46a: `x / (1 + np.exp(-x))` (SiLU; the sigmoid GELU alike): its gradient through
    the quotient was x * inf / inf, NaN, below x = -88.7 in float32 (-709.8 in float64), where
    finite differences give 0. Now x * sigmoid(x): the forward within an ulp of NumPy's."""
    assert ops_of(simplified(lambda x: x / (1 + np.exp(-x)), X34)) == ["sigmoid", "multiply"]
    x = np.array([-800.0, -100.0, -3.0, 0.0, 2.5], dtype)
    silu = lambda v: np.sum(v / (1 + np.exp(-v)))  # noqa: E731
    g = gradc.grad(silu)(x)
    with np.errstate(over="ignore"):
        s = 1 / (1 + np.exp(-x.astype(np.float64)))
        np.testing.assert_allclose(gradc.jit(silu)(x), silu(x), rtol=4 * np.finfo(dtype).eps)
    np.testing.assert_allclose(g, s * (1 + x * (1 - s)), rtol=1e-5, atol=1e-30)


def test_simplify_log_one_plus_exp_is_softplus():
    g = simplified(lambda x: np.log(1 + np.exp(x)), X34)
    assert ops_of(g) == ["softplus"]


def test_simplify_log1p_exp_is_softplus():
    g = simplified(lambda x: np.log1p(np.exp(x)), X34)
    assert ops_of(g) == ["softplus"]


def test_simplify_log_of_softmax_is_log_softmax():
    g = simplified(lambda x: np.log(nn.softmax(x, axis=-1)), X34)
    assert ops_of(g) == ["log_softmax"]


@pytest.mark.parametrize("f", [lambda x: x * 1, lambda x: 1.0 * x, lambda x: x + -0.0,
                               lambda x: x - 0, lambda x: x / 1.0, lambda x: x ** 1,
                               lambda x: -(-x), lambda x: np.log(np.exp(x)),
                               lambda x: np.where(x > 0, x, x), lambda x: x.T.T,
                               lambda x: x.astype(x.dtype)],
                         ids=["x*1", "1*x", "x+0", "x-0", "x/1", "x**1", "--x", "log_exp",
                              "where_same", "TT", "astype_same"])
def test_simplify_identities_disappear(f):
    g = simplified(lambda x: f(x), X34)
    assert g.nodes == [] and g.outputs[0] is g.inputs[0], str(g)


def test_simplify_keeps_what_changes_a_zeros_sign():
    """x + 0.0 is +0.0 at x = -0.0, and 0.0 - x is +0.0 at x = 0.0: the rules that dropped the
    zero changed 1 / x and np.copysign's answer there (fuzz41a); x + -0.0 and x - 0.0 are x."""
    for f in (lambda x: x + 0.0, lambda x: 0.0 + x, lambda x: 0.0 - x, lambda x: x - -0.0):
        g = simplified(f, X34)
        assert ops_of(g) != [] and not (g.outputs[0] is g.inputs[0]), str(g)
        x = np.array([-0.0, 0.0, 1.0])
        np.testing.assert_array_equal(np.signbit(evaluate(g, [np.resize(x, X34.shape)])[0]),
                                      np.signbit(f(np.resize(x, X34.shape))))


def test_simplify_x_times_zero_is_kept():
    """x * 0 is not 0 when x is NaN or inf: the rule must not fire."""
    g = simplified(lambda x: x * 0.0, X34)
    assert "multiply" in ops_of(g)


def test_simplify_power_rewrites():
    assert ops_of(simplified(lambda x: x ** 2, X34)) == ["square"]
    assert ops_of(simplified(lambda x: x ** 0.5, X34)) == ["sqrt"]
    assert ops_of(simplified(lambda x: x ** -1, X34)) == ["reciprocal"]
    assert "square" in ops_of(simplified(lambda x: x * x, X34))


def test_simplify_folds_constants():
    g = simplified(lambda x: x * (np.float64(2.0) * 3.0 + 1.0), X34)
    consts = [n for n in g.nodes if n.op == "const"]
    assert len(consts) == 1 and consts[0].attr["value"] == 7.0
    assert ops_of(g).count("multiply") == 1
    assert set(ops_of(g)) <= {"const", "reshape", "broadcast_to", "multiply"}


def test_simplify_composes_slices_of_slices():
    """x[a][b] is one slice of x (so its gradient is one unslice, not a padded copy of a padded
    copy), for steps of either sign; an empty result stays as it was."""
    x = np.zeros((7, 6))
    g = simplified(lambda x: x[1:][::2, ::-1][::-1, 1:4] + x[::-2][1:, 4:1:-1], x)
    assert ops_of(g).count("slice") == 2
    g = simplified(lambda x: np.sum(x[2:5][3:]) + np.sum(x[5:][1::2]), x)
    assert ops_of(g).count("slice") == 3  # the empty x[2:5][3:] is left alone


def test_simplify_absorbs_transposes_into_matmul_flags():
    g = simplified(lambda a, b: a.T @ b.T, np.zeros((4, 3)), np.zeros((2, 4)))
    assert "transpose" not in ops_of(g)
    (mm,) = [n for n in g.nodes if n.op == "matmul"]
    assert mm.attr == {"ta": True, "tb": True}
    assert mm.inputs[0] is g.inputs[0] and mm.inputs[1] is g.inputs[1]


def test_simplify_absorbs_transposes_into_bmm_flags():
    g = simplified(lambda a, b: np.swapaxes(a, 1, 2) @ b, np.zeros((2, 4, 3)), np.zeros((2, 4, 5)))
    assert "transpose" not in ops_of(g)
    (mm,) = [n for n in g.nodes if n.op == "bmm"]
    assert mm.attr == {"ta": True, "tb": False}


def test_backward_matmuls_use_flags_not_transposes():
    """The VJP of a @ b is g @ b.T and a.T @ g: no transpose nodes, just flags."""
    graph = run_passes(joint_graph(lambda a, b: np.sum(np.tanh(a @ b)), _gen([N(3, 4), N(4, 2)]),
                                   (0, 1)), AFTER_AUTODIFF)
    assert "transpose" not in ops_of(graph)
    flags = sorted((n.attr["ta"], n.attr["tb"]) for n in graph.nodes if n.op == "matmul")
    assert flags == [(False, False), (False, True), (True, False)]


def test_a_matrix_many_products_read_transposed_is_transposed_once(monkeypatch):
    """share_transposes: the RNN's backward reads wh transposed at every step; after the
    pipeline those products read one transpose of wh with tb off, legalize copies it once, and
    the products too small for BLAS (the 5-step RNN's) keep their flag. A matrix smaller than
    SHARED_TRANSPOSE_MIN_ELEMENTS (this 48x48 one, by default) is not copied."""
    from gradc.passes import products
    name, fn, make, argnums = GRAPHS[GRAPH_IDS.index("rnn_shared_transpose")]
    default = run_passes(joint_graph(fn, make, argnums), AFTER_AUTODIFF)
    assert not [n for n in default.nodes if n.op == "transpose"]
    monkeypatch.setattr(products, "SHARED_TRANSPOSE_MIN_ELEMENTS", 48 * 48)
    graph = run_passes(joint_graph(fn, make, argnums), AFTER_AUTODIFF)
    wh = graph.inputs[2]
    transposes = [n for n in graph.nodes if n.op == "transpose" and n.inputs[0] is wh]
    assert len(transposes) == 1
    readers = [n for n in graph.nodes
               if n.op == "matmul" and any(v is transposes[0].output for v in n.inputs)]
    assert len(readers) == 3 and all(n.attr == {"ta": False, "tb": False} for n in readers)
    assert not [n for n in graph.nodes
                if n.op == "matmul" and n.attr["tb"] and any(v is wh for v in n.inputs)]
    fused = fuse(graph)
    copies = [k for k in fused.kernels if [n.op for n in k.nodes] == ["copy"]]
    assert len(copies) == 1 and copies[0].shape == (48, 48)
    small = run_passes(joint_graph(_rnn, GRAPHS[GRAPH_IDS.index("unrolled_rnn")][2], (1, 2, 3)),
                       AFTER_AUTODIFF)
    assert "transpose" not in ops_of(small)


def _small_products_rnn(monkeypatch, faster):
    """The rnn_small_products graph through the pipeline as the CPU target lowers it, with
    the measured choice of transpose_small_lhs set to `faster`, each pass checked by evaluation."""
    from gradc.passes import products
    monkeypatch.setattr(products, "_tt_faster_than_nt", lambda: faster)
    name, fn, make, argnums = GRAPHS[GRAPH_IDS.index("rnn_small_products")]
    with products.lowering_for("cpu"):
        return run_checked(joint_graph(fn, make, argnums), AFTER_AUTODIFF, make, name)


def test_small_products_read_their_left_operand_transposed_where_faster(monkeypatch):
    """transpose_small_lhs: the RNN's backward dz @ wh.T (32x64 @ (64x64).T) becomes
    dz.T.T @ wh.T, a TT product of a transposed copy of dz (legalize's copy kernel), where this
    machine's BLAS runs it faster; the results are the same (run_checked). Where it does not,
    or where a module must be the same on every machine (products.portable, gradc compile),
    or for another target, the products keep their flags."""
    from gradc.passes import products
    graph = _small_products_rnn(monkeypatch, True)
    tt = [n for n in graph.nodes if n.op in ("matmul", "addmm") and n.attr["ta"] and n.attr["tb"]]
    assert len(tt) == 2  # (the steps after the first: 3 steps, the first has no h @ wh)
    for n in tt:
        a = n.inputs[-2]
        assert a.node.op == "transpose" and a.shape == (64, 32)
    assert not [n for n in graph.nodes if n.op in ("matmul", "addmm") and n.attr["tb"]
                and not n.attr["ta"] and n.inputs[-1] is graph.inputs[2]]
    copies = [k for k in fuse(graph).kernels if [n.op for n in k.nodes] == ["copy"]]
    assert sorted(k.shape for k in copies) == [(64, 32)] * 2
    assert not _tt_products(_small_products_rnn(monkeypatch, False))
    with products.portable():
        assert not _tt_products(_small_products_rnn(monkeypatch, True))
    name, fn, make, argnums = GRAPHS[GRAPH_IDS.index("rnn_small_products")]
    with products.lowering_for("cuda"):
        assert not _tt_products(run_passes(joint_graph(fn, make, argnums), AFTER_AUTODIFF))


def _tt_products(graph):
    return [n for n in graph.nodes if n.op in ("matmul", "addmm") and n.attr["ta"] and n.attr["tb"]]


def test_transposed_lhs_setting(monkeypatch):
    """GRADC_TRANSPOSED_LHS=1/0 decides without measuring; anything else is refused by name."""
    from gradc.errors import CompileError
    from gradc.passes import products
    for value, want in (("1", True), ("0", False)):
        monkeypatch.setenv("GRADC_TRANSPOSED_LHS", value)
        products._tt_faster_than_nt.cache_clear()
        assert products._tt_faster_than_nt() is want
    monkeypatch.setenv("GRADC_TRANSPOSED_LHS", "yes")
    products._tt_faster_than_nt.cache_clear()
    with pytest.raises(CompileError, match="GRADC_TRANSPOSED_LHS='yes'"):
        products._tt_faster_than_nt()
    monkeypatch.delenv("GRADC_TRANSPOSED_LHS")
    products._tt_faster_than_nt.cache_clear()
    first = products._tt_faster_than_nt()  # (measured here, or kept from an earlier process)
    assert first in (True, False)
    # kept in the cache's folder: every process agrees (a measurement per process flipped
    # between processes where the two are close, and so did the program cache's key)
    monkeypatch.setattr(products, "_measure_tt_against_nt", lambda: not first)
    for _ in range(2):
        products._tt_faster_than_nt.cache_clear()
        assert products._tt_faster_than_nt() is first
    products._tt_faster_than_nt.cache_clear()


def test_slice_gradients_that_tile_an_array_are_its_concatenation():
    """merge_slice_sums: the steps' slices xw[t] cover xw once, in blocks along its first axis:
    their gradients' sum is a concatenation (in the blocks' order), not a zero-filled buffer
    and adds; so are each step's gates' column blocks (along the second axis); overlapping
    slices stay an unslice_sum."""
    name, fn, make, argnums = GRAPHS[GRAPH_IDS.index("rnn_projected")]
    graph = run_passes(joint_graph(fn, make, argnums), AFTER_AUTODIFF)
    (concat,) = [n for n in graph.nodes if n.op == "concatenate" and n.output.shape == (6, 8)]
    readers = {n.op for n in graph.nodes if any(v is concat.output for v in n.inputs)}
    assert readers == {"reshape", "matmul"}  # (wh's gradient: stack_products)
    assert (2, 8) not in [n.output.shape for n in graph.nodes if n.op == "unslice_sum"]
    gates = [n for n in graph.nodes if n.op == "concatenate" and n.output.shape == (2, 8)]
    assert [(n.attr["axis"], len(n.inputs)) for n in gates] == [(1, 2)] * 3  # (3 steps)
    name, fn, make, argnums = GRAPHS[GRAPH_IDS.index("slice_sums")]
    assert "unslice_sum" in ops_of(run_passes(joint_graph(fn, make, argnums), AFTER_AUTODIFF))


def test_simplify_removes_nested_gradient_aliases():
    inner = gradc.grad(lambda x: np.sum(np.sin(x)))
    graph, _, _ = trace(lambda x: np.sum(inner(x) * x), [np.ones(3)])
    assert "alias" in ops_of(graph)
    new = simplify(graph)
    assert "alias" not in ops_of(new)
    assert_same_results(graph, new, _gen([N(3)]), "simplify of grad of grad")


def test_stability_rewrites_reach_the_backward():
    """After autodiff the whole joint graph is finite at x = +-1000 (float32)."""
    x = np.array([[-1000.0, 1000.0], [0.5, -3.0]], np.float32)
    make = lambda seed: [x]  # noqa: E731
    graph = run_passes(joint_graph(lambda x: np.sum(np.log(nn.sigmoid(x)) + np.log(1 + np.exp(x))),
                                   make, (0,)), AFTER_AUTODIFF)
    value, grad = evaluate(graph, [x])
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(value, np.sum(-np.logaddexp(0, -x64) + np.logaddexp(0, x64)),
                               rtol=1e-6)
    np.testing.assert_allclose(grad, sp.expit(-x64) + sp.expit(x64), rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# CSE and DCE


def test_hash_consing_keeps_different_constants_apart():
    a = np.arange(12.0).reshape(3, 4)
    b = a + 1  # (not uniform: np.ones is a broadcast scalar constant)
    graph, _, _ = trace(lambda x: x * a + x * b, [X34])
    consts = [n for n in graph.nodes if n.op == "constant"]
    assert len(consts) == 2
    x = np.full((3, 4), 2.0)
    for g in (graph, run_passes(graph, BEFORE_AUTODIFF)):
        np.testing.assert_array_equal(evaluate(g, [x])[0], x * a + x * b)
    # equal constants do merge (in cse: while the user's code is traced, equal expressions are
    # separate arrays, for an in-place update of one must leave the other, gradc/ir.py apply)
    graph, _, _ = trace(lambda x: x * a + x * a.copy(), [X34])
    assert sum(n.op == "constant" for n in run_passes(graph, BEFORE_AUTODIFF).nodes) == 1


def test_cse_pass_merges_duplicate_nodes():
    g = Graph()
    x = g.add_input((3,), np.float64)
    a = g.apply("exp", (x,))
    g._memo.clear()  # defeat hash-consing to build a graph with a duplicate, as a rewrite might
    b = g.apply("exp", (x,))
    assert a is not b
    g.outputs = [g.apply("add", (a, b))]
    new = cse(g)
    assert ops_of(new) == ["exp", "add"]
    (add,) = [n for n in new.nodes if n.op == "add"]
    assert add.inputs[0] is add.inputs[1]
    assert new.merged >= 1
    assert_same_results(g, new, _gen([N(3)]), "cse")


def test_backward_reuses_forward_sigmoid():
    """softplus' VJP is sigmoid(x): the backward's sigmoid is the forward's node."""
    graph = joint_graph(lambda x: np.sum(nn.softplus(x)) + np.sum(nn.sigmoid(x) * x),
                        _gen([N(3, 4)]), (0,))
    assert ops_of(graph).count("sigmoid") == 1
    assert graph.merged >= 1
    final = run_passes(graph, AFTER_AUTODIFF)
    assert ops_of(final).count("sigmoid") == 1


def test_cse_merges_lowered_composites_with_their_vjps():
    """logsumexp's VJP is softmax(x); after lowering both compute max(x) and exp(x - max):
    CSE leaves one of each."""
    graph = joint_graph(lambda x: np.sum(nn.logsumexp(x, axis=-1)), _gen([N(3, 4)]), (0,))
    final = run_passes(graph, AFTER_AUTODIFF)
    assert ops_of(final).count("max") == 1
    assert ops_of(final).count("exp") == 1


def test_cse_in_mlp_backward_recomputes_nothing():
    """The MLP's backward reads the forward's activations: one tanh, one exp per softmax."""
    make = GRAPHS[0][2]
    final = run_passes(joint_graph(_mlp, make, (2, 3, 4, 5)), AFTER_AUTODIFF)
    forward = run_passes(run_passes(forward_graph(_mlp, make), BEFORE_AUTODIFF), AFTER_AUTODIFF)
    for op in ("tanh", "exp", "max", "log"):
        assert ops_of(final).count(op) == ops_of(forward).count(op), op
    # the two forward matmuls and their four VJPs (the first layer's x-gradient is not needed)
    assert ops_of(final).count("matmul") == 2 + 3


def test_dce_removes_unused_nodes():
    def f(x):
        unused = np.exp(x) * 3.0  # noqa: F841
        return np.sum(np.tanh(x))

    graph, _, _ = trace(f, [X34])
    assert "exp" in ops_of(graph)
    new = dce(graph)
    assert "exp" not in ops_of(new) and "multiply" not in ops_of(new)
    assert len(new.nodes) < len(graph.nodes)
    assert_same_results(graph, new, _gen([N(3, 4)]), "dce")


def test_dce_drops_forward_work_only_the_value_needs_when_it_is_not_an_output():
    graph = joint_graph(lambda x: np.sum(np.exp(x)), _gen([N(3)]), (0,))
    graph.outputs = graph.outputs[1:]  # keep only the gradient
    new = dce(graph)
    assert "sum" not in ops_of(new)
    assert ops_of(new).count("exp") == 1


def test_lower_composites_leaves_only_primitives():
    graph, _, _ = trace(lambda x: nn.logsumexp(x) + np.sum(nn.softmax(x) * nn.log_softmax(x)),
                        [X34])
    new = lower_composites(graph)
    assert not {"logsumexp", "softmax", "log_softmax"} & set(ops_of(new))
    assert_same_results(graph, new, _gen([N(3, 4)]), "lower")


# ---------------------------------------------------------------------------------------------
# fusion


def fused(fn, make, argnums=None):
    graph = joint_graph(fn, make, argnums) if argnums else run_passes(
        forward_graph(fn, make), BEFORE_AUTODIFF)
    graph = run_passes(graph, AFTER_AUTODIFF)
    fusion = fuse(graph)
    assert_same_results(graph, fusion.graph, make, "fuse")
    return fusion


def kernel_ops(fusion):
    return [[n.op for n in k.nodes] for k in fusion.kernels]


def test_w3_value_and_gradient_is_one_kernel():
    fusion = fused(_w3, _gen([N(1000), N(1000), N(1000)]), (1, 2))
    assert len(fusion.kernels) == 1, kernel_ops(fusion)
    (k,) = fusion.kernels
    assert k.kind == "loop"
    assert {"tanh", "sigmoid", "exp", "sum"} <= {n.op for n in k.nodes}


def test_elementwise_chain_with_reduction_is_one_kernel():
    fusion = fused(lambda x, y: np.sum(np.exp(x) * y + np.tanh(y) ** 2), _gen([N(4, 5), N(4, 5)]))
    assert len(fusion.kernels) == 1, kernel_ops(fusion)


def test_reduction_over_one_axis_fuses_its_producer():
    fusion = fused(lambda x: np.sum(np.exp(x) * 2.0, axis=1), _gen([N(4, 5)]))
    assert len(fusion.kernels) == 1, kernel_ops(fusion)


def test_fusion_refusals_are_explained():
    """softmax: the division reads a sum that is ready only after its loop, so it cannot join
    that kernel; the refusal is recorded with its reason, for explain."""
    fusion = fused(lambda x: nn.softmax(x, axis=-1), _gen([N(3, 4)]))
    assert len(fusion.kernels) >= 2
    assert any("divide" in note and "not fused" in note and "reduction" in note
               for note in fusion.notes), fusion.notes


def test_a_loop_kernel_reads_at_most_max_kernel_reads_buffers():
    """A loss summed over 150 parameters fused horizontally into one kernel of 150 loads (and
    its gradient into one of 150 stores): LLVM's compile time grows with the pairs of a kernel's
    arrays (400 parameters: 2.4 s, 2000: 27 s). Past MAX_KERNEL_READS a node starts a kernel."""
    from gradc.passes.fuse import MAX_KERNEL_READS

    def loss(*ws):
        return sum(np.sum(np.tanh(w) * 2.0) for w in ws)

    fusion = fused(loss, _gen([N(3)] * 150), tuple(range(150)))
    reads = [len({fusion.layouts[x.id][0].id for n in k.nodes for x in n.inputs
                  if x.id in fusion.layouts and x.id not in {m.output.id for m in k.nodes}})
             for k in fusion.kernels if k.kind == "loop"]
    assert max(reads) <= MAX_KERNEL_READS < 150 and len(reads) >= 3, reads


def test_many_pieces_are_concatenated_in_groups_and_joined_in_bounded_kernels():
    """np.concatenate of 150 small pieces (x[i % 10] * c each): one concatenate kernel of 150
    inputs and horizontally fused loop kernels of 150 stores made LLVM's compile superlinear
    (200 pieces 13 s, 400 30 s; now 1.7 and 2.7 s); the pieces join in groups
    (CONCATENATED_GROUP) and a horizontal kernel takes at most MAX_HORIZONTAL_NODES nodes (the
    values the same: `fused` evaluates)."""
    from gradc.ops.fn import CONCATENATED_GROUP, MAX_CONCATENATED
    from gradc.passes.fuse import MAX_HORIZONTAL_NODES

    def loss(x):
        return np.sum(np.concatenate([x[i % 10] * (i + 1.0) for i in range(150)]) ** 2)

    make = _gen([N(10, 3)])
    fusion = fused(loss, make, (0,))
    concatenated = [len(k.nodes[0].inputs) for k in fusion.kernels if k.kind == "concatenate"]
    assert max(concatenated) <= CONCATENATED_GROUP < MAX_CONCATENATED < 150, concatenated
    assert max(len(k.nodes) for k in fusion.kernels if k.kind == "loop") <= 2 * MAX_HORIZONTAL_NODES


def test_matmuls_are_separate_kernels():
    fusion = fused(_mlp, GRAPHS[0][2], (2, 3, 4, 5))
    n_matmul = sum(n.op == "matmul" for n in fusion.graph.nodes)
    mm_kernels = [k for k in fusion.kernels if any(n.op == "matmul" for n in k.nodes)]
    assert len(mm_kernels) == n_matmul == 5
    for k in mm_kernels:
        assert k.kind == "matmul" and len(k.nodes) == 1


@pytest.mark.parametrize("name,fn,make,argnums", GRAPHS, ids=GRAPH_IDS)
def test_fusion_partitions_and_schedules_the_graph(name, fn, make, argnums):
    fusion = fused(fn, make, argnums)
    placed = [n for k in fusion.kernels for n in k.nodes if n.output.id not in k.recomputed]
    assert len(placed) == len({id(n) for n in placed}), "a node computed by two kernels"
    for k in fusion.kernels:  # a value recomputed elsewhere is computed by one kernel too
        assert k.recomputed <= {n.output.id for n in placed}
        assert k.kind == "loop" or not k.recomputed
    computed = [n for n in fusion.graph.nodes if n.opdef.kind not in ("view", "const")]
    assert {id(n) for n in placed} == {id(n) for n in computed}
    for i, k in enumerate(fusion.kernels):
        assert k.index == i
        assert all(d.index < i for d in k.deps), f"{k.name} runs before a kernel it reads"
        # inside a kernel, nodes are in dependency order
        pos = {n.output.id: j for j, n in enumerate(k.nodes)}
        for j, n in enumerate(k.nodes):
            assert all(pos.get(x.id, -1) < j for x in n.inputs)
    # outputs are stored, each value by one kernel
    stores = [v.id for k in fusion.kernels for v in k.stores]
    assert len(stores) == len(set(stores))
    stored = set(stores)
    for v in fusion.graph.outputs:
        assert fusion.layouts[v.id][0].id in stored


def test_fewer_kernels_than_elementwise_nodes():
    fusion = fused(_chain, GRAPHS[3][2], (0, 1))
    n_elementwise = sum(n.opdef.kind == "elementwise" for n in fusion.graph.nodes)
    assert n_elementwise > 20
    assert len(fusion.kernels) <= 3, kernel_ops(fusion)


# ---------------------------------------------------------------------------------------------
# the buffer plan


def mlp_plan(batch=32, hidden=16):
    make = _gen([N(batch, 3), LABELS(4, batch), N(3, hidden), N(hidden), N(hidden, hidden),
                 N(hidden)])

    def loss(x, y, w1, b1, w2, b2):
        h = np.tanh(x @ w1 + b1)
        h2 = nn.relu(h @ w2 + b2)
        return nn.cross_entropy(h2[:, :4], y)

    graph = run_passes(joint_graph(loss, make, (2, 3, 4, 5)), AFTER_AUTODIFF)
    fusion = fuse(graph)
    return fusion, plan_buffers(fusion)


def test_plan_reuses_memory_for_mlp():
    fusion, plan = mlp_plan()
    assert plan.arena_bytes < plan.naive_bytes, (plan.arena_bytes, plan.naive_bytes)
    assert plan.arena_bytes == plan.output_bytes + plan.constant_bytes + plan.scratch_bytes


def _lifetimes(fusion, plan):
    """(first kernel, last kernel) for every stored value; outputs and constants live forever."""
    graph = fusion.graph
    forever = {fusion.layouts[v.id][0].id for v in graph.outputs} | set(plan.constants)
    life = {}
    for k in fusion.kernels:
        for v in k.stores:
            life[v.id] = [k.index, k.index]
    for k in fusion.kernels:
        for n in k.nodes:
            for x in n.inputs:
                layout = fusion.layouts.get(x.id)
                assert layout is not None, f"{x} read by {k.name} has no strided layout"
                base = layout[0].id
                if base in life:
                    life[base][1] = max(life[base][1], k.index)
    for vid in forever:
        life[vid] = [-1, len(fusion.kernels)]
    return life


def assert_no_live_overlap(fusion, plan):
    values = {v.id: v for k in fusion.kernels for v in k.stores}
    values.update({n.output.id: n.output for n in fusion.graph.nodes if n.op == "constant"})
    life = _lifetimes(fusion, plan)
    for vid, v in values.items():
        assert vid in plan.offsets, f"stored value %{vid} has no slot"
        off = plan.offsets[vid]
        assert off % 64 == 0
        assert 0 <= off and off + nbytes(v) <= plan.arena_bytes
    for new, old in plan.shared.items():
        assert_overwrites_elementwise(fusion, new, old, life)
    for member, concat in plan.members.items():
        assert_member_in_its_block(fusion, plan, member, concat)
    for (a, va), (b, vb) in combinations(values.items(), 2):
        (a0, a1), (b0, b1) = life[a], life[b]
        if a1 < b0 or b1 < a0:
            continue  # never alive at the same time
        if plan.shared.get(a) == b or plan.shared.get(b) == a:
            continue  # one kernel's value written over its input (checked above)
        if plan.members.get(a) == b or plan.members.get(b) == a:
            continue  # a value stored in its block of a concatenation (checked above)
        oa, ob = plan.offsets[a], plan.offsets[b]
        assert oa + nbytes(va) <= ob or ob + nbytes(vb) <= oa, (
            f"%{a} [{oa}, {oa + nbytes(va)}) alive in kernels {life[a]} overlaps "
            f"%{b} [{ob}, {ob + nbytes(vb)}) alive in kernels {life[b]}")


def test_plan_mlp_no_overlap_of_live_values():
    fusion, plan = mlp_plan()
    assert_no_live_overlap(fusion, plan)


@pytest.mark.parametrize("name,fn,make,argnums", GRAPHS, ids=GRAPH_IDS)
def test_plan_no_overlap_of_live_values(name, fn, make, argnums):
    fusion = fused(fn, make, argnums)
    assert_no_live_overlap(fusion, plan_buffers(fusion))


def test_plan_outputs_are_one_flat_region_in_order():
    fusion, plan = mlp_plan()
    outs = fusion.graph.outputs
    offsets = [plan.offsets[v.id] for v in outs]
    assert offsets == sorted(offsets) and offsets[0] == 0
    assert all(o + nbytes(v) <= plan.output_bytes for o, v in zip(offsets, outs))
    # nothing else lives in the output region
    out_bases = {fusion.layouts[v.id][0].id for v in outs} | {v.id for v in outs}
    for vid, off in plan.offsets.items():
        if vid not in out_bases:
            assert off >= plan.output_bytes


# ---------------------------------------------------------------------------------------------
# accumulate_products: a sum of matrix products is accumulated a product at a time

def _after_autodiff_without(graph, skipped):
    return run_passes(graph, [p for p in AFTER_AUTODIFF if p is not skipped])


def _count(graph, op):
    return sum(n.op == op for n in graph.nodes)


def test_accumulate_products_adds_each_step_of_a_weight_gradient_into_one_buffer():
    """The recurrent weight's gradient (4 steps: 4 products) becomes a product and 3 addmm,
    each where its step's product was; the results stay the same, the plan writes each addmm
    over the sum before it, and needs less memory."""
    make = _gen([N(5, 2, 3), N(3, 8), N(8, 8), N(8)])
    joint = joint_graph(_rnn, make, (1, 2, 3))
    accumulated = run_passes(joint, AFTER_AUTODIFF)
    plain = _after_autodiff_without(joint, accumulate_products)
    assert _count(accumulated, "addmm") >= 3
    assert _count(accumulated, "matmul") == _count(plain, "matmul") - _count(accumulated, "addmm")
    assert_same_results(plain, accumulated, make, "accumulate_products")
    fusion = fuse(accumulated)
    plan = plan_buffers(fusion)
    sums = [k.nodes[0] for k in fusion.kernels if k.kind == "addmm"]
    assert any(plan.shared.get(n.output.id) == n.inputs[0].id for n in sums), plan.shared
    assert plan.arena_bytes < plan_buffers(fuse(plain)).arena_bytes


def _rnn_projected_from_its_first_step(x, wx, wh, b):
    """As _rnn_projected, its first step without a recurrent product: the recurrent weight's
    gradient reads the gates' gradients of the later steps only, a run of the projection's
    gradient's blocks."""
    xw = x @ wx + b
    h = np.tanh(xw[0][:, :4]) * nn.sigmoid(xw[0][:, 4:])
    for t in range(1, x.shape[0]):
        z = xw[t] + h @ wh
        h = np.tanh(z[:, :4]) * nn.sigmoid(z[:, 4:])
    return np.sum(h * h)


@pytest.mark.parametrize("fun,rows", [(_rnn_projected, (0, 6)),
                                      (_rnn_projected_from_its_first_step, (2, 8))])
def test_stack_products_makes_a_weight_gradient_one_product_over_a_concatenation(fun, rows):
    """A weight gradient a product a step, whose per-step gradients are the blocks of a
    concatenation (the input projection's gradient), is one product: the states stacked
    (stored straight into their concatenation: no copy) by the concatenation's rows, whole or
    sliced; the same results, and no more memory, than the addmm a step."""
    make = _gen([N(4, 2, 3), N(3, 8), N(4, 8), N(8)])
    joint = joint_graph(fun, make, (1, 2, 3))
    stacked = run_passes(joint, AFTER_AUTODIFF)
    plain = _after_autodiff_without(joint, stack_products)
    assert_same_results(plain, stacked, make, "stack_products")
    (product,) = [n for n in stacked.nodes if n.op == "matmul" and n.output.shape == (4, 8)]
    states, gates = product.inputs
    assert states.node.op == "concatenate" and product.attr["ta"] and not product.attr["tb"]
    if rows == (0, 6):
        assert gates.node.op == "concatenate"
    else:
        assert gates.node.op == "slice" and gates.node.attr["starts"][0] == rows[0]
        assert gates.node.inputs[0].node.op == "concatenate"
    assert not any(n.op == "addmm" and n.output.shape == (4, 8) for n in stacked.nodes)
    fusion = fuse(stacked)
    plan = plan_buffers(fusion)
    (product,) = [n for k in fusion.kernels for n in k.nodes
                  if n.op == "matmul" and n.output.shape == (4, 8)]
    states = product.inputs[0]
    kept = [x for x in states.node.inputs if x.node.op != "constant"]
    assert kept and all(plan.members.get(x.id) == states.id for x in kept), plan.members
    assert plan.arena_bytes <= plan_buffers(fuse(plain)).arena_bytes


def test_stack_products_leaves_a_sum_read_before_its_operands_are_made():
    """The stacked product runs where its last operand is made: a sum read before then (here,
    a concatenation of the products' right operands made after a reader of the sum) stays the
    chain of addmms; read after, it becomes one product."""
    def build(read_first):
        g = Graph()
        a1, a2, b1, b2 = (g.add_input(s, np.dtype(np.float64)) for s in
                          [(2, 3), (2, 3), (2, 4), (2, 4)])
        total = g.apply("addmm", (g.apply("matmul", (a1, b1), ta=True, tb=False), a2, b2),
                        ta=True, tb=False)
        if read_first:
            early = fn.multiply(total, fn.as_value(2.0, total))
        joined = fn.concatenate([b1, b2], axis=0)
        if not read_first:
            early = fn.multiply(total, fn.as_value(2.0, total))
        g.outputs = [early, fn.sum(joined)]
        return g

    make = _gen([N(2, 3), N(2, 3), N(2, 4), N(2, 4)])
    for read_first in (True, False):
        g = build(read_first)
        out = stack_products(g)
        assert_same_results(g, out, make, "stack_products")
        assert ("addmm" in ops_of(out)) is read_first
    # W5's form (each step's own input product: no concatenation of its gradients) keeps it
    rnn = run_passes(joint_graph(_rnn, _gen([N(5, 2, 3), N(3, 8), N(8, 8), N(8)]), (1, 2, 3)),
                     AFTER_AUTODIFF)
    assert _count(rnn, "addmm") >= 3


def test_accumulate_products_keeps_products_used_elsewhere():
    def f(a1, b1, a2, b2):
        p = a1 @ b1
        return np.sum((p + a2 @ b2) ** 2) + np.sum(p)
    make = _gen([N(8, 1), N(1, 8), N(8, 1), N(1, 8)])
    graph = forward_graph(f, make)
    out = dce(accumulate_products(graph))
    # p is read elsewhere: it stays a product of its own, not a step of an accumulation; the
    # other product is added into it (addmm of a stored term, which copies it: products.py
    # _seed), and p's own sum still reads p
    (addmm,) = [n for n in out.nodes if n.op == "addmm"]
    assert addmm.inputs[0].node.op == "matmul" and _count(out, "matmul") == 1
    assert_same_results(graph, out, make, "accumulate_products")

    def g(a1, b1, a2, b2):
        return np.sum((a1 @ b1 + a2 @ b2) ** 2)
    graph = forward_graph(g, make)
    out = dce(accumulate_products(graph))
    assert _count(out, "matmul") == 1 and _count(out, "addmm") == 1
    assert_same_results(graph, out, make, "accumulate_products")


def test_accumulate_products_adds_into_a_term_added_once():
    """A product is added into a stored term of its sum (addmm: products.py _seed), and the
    products after it into that (two_products: two addmm), but not into a term the sum adds
    twice (x + x + a @ b: the second x was lost, a wrong sum)."""
    make = _gen([N(8, 8), N(8, 8), N(8, 8), N(8, 8), N(8, 8)])

    def once(x, a, b, c, d):
        return x + a @ b

    def twice(x, a, b, c, d):
        return (x + a @ b) + x

    def two_products(x, a, b, c, d):
        return a @ b + (c @ d).T @ x + x

    for f, addmms in ((once, 1), (twice, 0), (two_products, 2)):
        graph = forward_graph(f, make)
        out = dce(accumulate_products(graph))
        assert _count(out, "addmm") == addmms, f.__name__
        assert_same_results(graph, out, make, "accumulate_products")


def test_train_step_updates_run_as_soon_as_their_gradient_is_ready():
    """The schedule runs a parameter's in-place update right after its gradient (before the
    next layer's gradient exists), so gradients do not all live until the end: the planned
    arena of a 3-layer MLP's SGD step is smaller than the gradients' total."""
    def loss(p, x, y):
        h = np.tanh(x @ p["W1"])
        h = np.tanh(h @ p["W2"])
        return nn.cross_entropy(h @ p["W3"], y)
    rng = np.random.default_rng(0)
    p = {"W1": rng.standard_normal((64, 48)).astype(np.float32),
         "W2": rng.standard_normal((48, 48)).astype(np.float32),
         "W3": rng.standard_normal((48, 5)).astype(np.float32)}
    x = rng.standard_normal((4, 64)).astype(np.float32)
    y = rng.integers(0, 5, 4)
    compiled = gradc.train_step(loss, gradc.optim.SGD(lr=0.1)).lower(p, x, y)
    kernels = compiled.fusion.kernels
    aliases = compiled.plan.aliases
    updates = [k.index for k in kernels if any(v.id in aliases for v in k.stores)]
    grads = [k.index for k in kernels if k.kind in ("matmul", "addmm") and k.nodes[0].output.shape in
             {(64, 48), (48, 48), (48, 5)}]
    assert len(updates) == 3 and len(grads) == 3
    assert updates[0] < grads[-1]  # an update runs before the last gradient is computed
    grad_bytes = sum(a.nbytes for a in p.values())
    assert compiled.plan.scratch_bytes < grad_bytes


# ---------------------------------------------------------------------------------------------
# merge_slice_sums: a sum of slice gradients becomes one accumulation

def _projected_rnn(x, wx, wh):
    xw = x @ wx  # (batch, steps, hidden), sliced at every step
    h = np.tanh(xw[:, 0])
    for t in range(1, x.shape[1]):
        h = np.tanh(xw[:, t] + h @ wh)
    return np.sum(h * h)


def test_merge_slice_sums_accumulates_an_rnn_projection_gradient_in_one_buffer():
    """The gradient of xw over the steps (one unslice per step) becomes one concatenation along
    the steps' axis (the slices xw[:, t] tile it): no zero-padded full-size buffer per step,
    the same results, and a smaller plan."""
    make = _gen([N(2, 6, 3), N(3, 4), N(4, 4)])
    joint = joint_graph(_projected_rnn, make, (0, 1, 2))
    merged = run_passes(joint, AFTER_AUTODIFF)
    plain = _after_autodiff_without(joint, merge_slice_sums)
    assert _count(plain, "unslice") == 6
    assert _count(merged, "unslice") == 0 and _count(merged, "unslice_sum") == 0
    (node,) = [n for n in merged.nodes if n.op == "concatenate"]
    assert node.attr["axis"] == 1 and len(node.inputs) == 6
    assert_same_results(plain, merged, make, "merge_slice_sums")
    arena = [plan_buffers(fuse(g)).arena_bytes for g in (merged, plain)]
    assert arena[0] < arena[1], arena


def test_merge_slice_sums_keeps_dense_terms_and_unslices_used_elsewhere():
    """Dense summands are added in the same kernel; an unslice that is also read elsewhere is
    materialized anyway, so it stays (as a dense term)."""
    def f(x, y):
        return np.sum(np.tanh(x[1:]) * x[:-1]) + np.sum(x * y)
    make = _gen([N(5, 3), N(5, 3)])
    joint = joint_graph(f, make, (0,))
    merged = run_passes(joint, AFTER_AUTODIFF)
    (node,) = [n for n in merged.nodes if n.op == "unslice_sum"]
    assert len(node.attr["slices"]) == 2 and len(node.inputs) == 3  # + the dense y term
    assert_same_results(joint, merged, make, "merge_slice_sums with a dense term")

    graph = Graph()
    g = graph.add_input((2, 3), np.float64)
    d = graph.add_input((4, 3), np.float64)
    pad = graph.apply("unslice", (g,), shape=(4, 3), starts=(1, 0), stops=(3, 3), steps=(1, 1))
    graph.outputs = [pad + d, pad * 2.0]  # the unslice is read twice
    out = dce(merge_slice_sums(graph))
    assert _count(out, "unslice") == 1 and _count(out, "unslice_sum") == 0
    assert_same_results(graph, out, _gen([N(2, 3), N(4, 3)]), "an unslice read twice")



def _sgd_steps(w, v, x, d, lr):
    # (v's product reads v itself: left two-step, the gemm would read what it writes)
    return w - lr * (x.T @ d), v + (v.T @ v) * lr, lr * (x.T @ (d * 2.0)) * 2.0


def test_fold_sgd_steps_is_one_scaled_product_on_the_cpu_target():
    """W - lr * (op(a) @ op(b)) -> addmm(W, a, b, -lr) on the CPU target only, checked by
    evaluation; not where the weight is an operand of its product, nor where a node after the
    product reads the weight, nor for CUDA."""
    from gradc.passes import products

    def make(seed):
        rng = np.random.default_rng(seed)
        return [rng.standard_normal((40, 16)), rng.standard_normal((32, 32)),
                rng.standard_normal((32, 40)), rng.standard_normal((32, 16)), np.float64(0.1)]

    with products.lowering_for("cpu"):
        graph = run_checked(forward_graph(_sgd_steps, make), AFTER_AUTODIFF, make, "sgd")
    scaled = [n for n in graph.nodes if n.op == "addmm" and len(n.inputs) == 4]
    assert len(scaled) == 1 and scaled[0].inputs[0] is graph.inputs[0]
    with products.lowering_for("cuda"):
        graph = run_passes(forward_graph(_sgd_steps, make), AFTER_AUTODIFF)
    assert not [n for n in graph.nodes if n.op == "addmm"]
    values = gradc.jit(_sgd_steps)(*make(3))
    for got, want in zip(values, _sgd_steps(*make(3))):
        np.testing.assert_allclose(got, want, rtol=1e-12)

    def read_after(w, x, d, lr):  # (w's later reader: the gemm would wait for it)
        return w - lr * (x.T @ d), np.sum(w * 2.0)

    with products.lowering_for("cpu"):
        graph = run_passes(forward_graph(read_after, lambda s: make(s)[:1] + make(s)[2:]),
                           AFTER_AUTODIFF)
    assert not [n for n in graph.nodes if n.op == "addmm"]


def test_long_float32_dots_become_sums_and_keep_their_values():
    """long_dots_as_sums: float32 products with one output row or column over 4096 terms or
    more (every flag combination) become multiply + sum, which evaluate as before; shorter
    ones, float64 ones and full matrix products stay products."""
    from gradc.passes.products import long_dots_as_sums

    def products(a, w, b, s, d):
        return (np.sum(a @ w) + np.sum(w.T @ a.T) + np.sum(a @ b.T) + np.sum(s @ w[:64])
                + np.sum(d @ d.T) + np.sum(w.T @ w))

    rng = np.random.default_rng(0)
    args = [rng.standard_normal(shape).astype(np.float32)
            for shape in ((1, 4096), (4096, 3), (3, 4096), (1, 64))] + [
        rng.standard_normal((1, 4096))]
    graph = run_passes(forward_graph(products, lambda seed: args), BEFORE_AUTODIFF)
    new = long_dots_as_sums(graph)
    kept = [n.output.shape for n in new.nodes if n.op == "matmul"]
    assert sorted(kept) == [(1, 1), (1, 3), (3, 3)]  # (the short, the float64, the full one)
    (want,), (got,) = evaluate(graph, args), evaluate(new, args)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_a_long_elementwise_chain_is_cut_into_kernels_of_bounded_size():
    """h = h * c + w unrolled 1500 times fused into one loop kernel each way, whose LLVM time
    grew as its statements squared (3000 steps: 45 s); kernels stop at MAX_KERNEL_NODES and
    the cut graph evaluates as the whole did."""
    from gradc.passes.fuse import MAX_KERNEL_NODES

    def chain(h, w):
        for _ in range(1500):
            h = h * 1.0001 + w
        return np.sum(h * h)

    make = _gen([N(4), N(4)])
    graph = joint_graph(chain, make, (0, 1))
    final = run_passes(graph, AFTER_AUTODIFF)
    fusion = fuse(final)
    sizes = [len(k.nodes) for k in fusion.kernels]
    assert max(sizes) <= MAX_KERNEL_NODES and sum(sizes) >= 3000
    assert_same_results(graph, fusion.graph, make, "long chain: fuse/legalize")
