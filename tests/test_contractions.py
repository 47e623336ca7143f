"""np.einsum, np.tensordot, np.inner, np.vdot, np.kron, np.cross and np.linalg.multi_dot
(gradc/functions/contractions.py) against NumPy.

The wide sweeps run on the reference interpreter (no Numba compile): each case's traced graph,
and its joint value-and-gradient graph before and after the pass pipeline and as fused, in
float32 and float64, values against NumPy (shape and dtype too) and gradients against central
differences of NumPy. A representative handful then compiles end to end through gradc.jit,
gradc.value_and_grad and a grad of grad, a few programs for many functions.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest

import gradc
from gradc import autodiff
from gradc.interpret import evaluate
from gradc.passes import AFTER_AUTODIFF, BEFORE_AUTODIFF, run_passes
from gradc.passes.fuse import fuse
from gradc.trace import trace

E = np.einsum


def es(subscripts, **kw):
    """A case's function: np.einsum with these subscripts (and keywords)."""
    return lambda *ops: E(subscripts, *ops, **kw)


# (name, plain NumPy function of the arrays, shapes of the arrays)
EINSUM = [
    ("bij,bjk->bik", es("bij,bjk->bik"), [(2, 3, 4), (2, 4, 5)]),
    ("ij,jk,kl->il", es("ij,jk,kl->il"), [(2, 3), (3, 4), (4, 2)]),
    ("i,i->", es("i,i->"), [(4,), (4,)]),
    ("ij->ji", es("ij->ji"), [(2, 3)]),
    ("...ij,...jk", es("...ij,...jk"), [(2, 2, 3), (3, 4)]),
    ("...ij,...jk->...ik bcast", es("...ij,...jk->...ik"), [(2, 1, 2, 3), (3, 3, 2)]),
    ("ii->i", es("ii->i"), [(3, 3)]),
    ("ii (trace)", es("ii"), [(3, 3)]),
    ("ij,ij->i", es("ij,ij->i"), [(3, 4), (3, 4)]),
    ("ij,ij->ij", es("ij,ij->ij"), [(3, 4), (3, 4)]),
    ("i,j->ij", es("i,j->ij"), [(3,), (4,)]),
    ("ij (implicit)", es("ij"), [(2, 3)]),
    ("ji (implicit)", es("ji"), [(2, 3)]),
    ("ij->", es("ij->"), [(2, 3)]),
    ("ij->j", es("ij->j"), [(2, 3)]),
    ("iij->ji", es("iij->ji"), [(3, 3, 2)]),
    ("iii->i", es("iii->i"), [(3, 3, 3)]),
    ("ii,i->i", es("ii,i->i"), [(3, 3), (3,)]),
    ("ij,ji->", es("ij,ji->"), [(3, 4), (4, 3)]),
    ("ijk,jil->kl", es("ijk,jil->kl"), [(2, 3, 4), (3, 2, 2)]),
    ("bhqd,bhkd->bhqk", es("bhqd,bhkd->bhqk"), [(2, 2, 3, 4), (2, 2, 5, 4)]),
    ("bhqk,bhkd->bqhd", es("bhqk,bhkd->bqhd"), [(2, 2, 3, 5), (2, 2, 5, 4)]),
    ("ijk,ikl,ilm->ijm", es("ijk,ikl,ilm->ijm"), [(2, 2, 3), (2, 3, 2), (2, 2, 3)]),
    ("abc,cd,de->abe", es("abc,cd,de->abe"), [(2, 2, 3), (3, 4), (4, 2)]),
    ("ab,bc,cd,de->ae", es("ab,bc,cd,de->ae"), [(2, 3), (3, 4), (4, 2), (2, 3)]),
    ("ij,kl->ijkl", es("ij,kl->ijkl"), [(2, 2), (3, 2)]),
    ("ij,jk->ki", es("ij,jk->ki"), [(2, 3), (3, 4)]),
    ("i,i,i->", es("i,i,i->"), [(4,), (4,), (4,)]),
    ("ab,ab,ab->a", es("ab,ab,ab->a"), [(2, 3), (2, 3), (2, 3)]),
    ("Ab,bC (uppercase first)", es("Ab,bC"), [(2, 3), (3, 4)]),
    ("ba,aC (implicit Cb)", es("ba,aC"), [(2, 3), (3, 4)]),
    ("ij,jk size-1 j broadcasts", es("ij,jk"), [(2, 1), (3, 4)]),
    ("...i,...i", es("...i,...i"), [(3, 1, 4), (5, 4)]),
    ("i...,i", es("i...,i"), [(3, 1, 4), (3,)]),
    ("...i->...", es("...i->..."), [(2, 3, 4)]),
    ("i...->...", es("i...->..."), [(2, 3)]),
    ("i,->i (0-d)", es("i,->i"), [(3,), ()]),
    ("spaces", es(" ij , jk -> ik "), [(2, 3), (3, 4)]),
    ("sublists", lambda a, b: E(a, [0, 1], b, [1, 2], [0, 2]), [(2, 3), (3, 4)]),
    ("sublists implicit", lambda a, b: E(a, [0, 1], b, [1, 2]), [(2, 3), (3, 4)]),
    ("sublists ellipsis", lambda a, b: E(a, [Ellipsis, 0], b, [0], [Ellipsis]), [(2, 3), (3,)]),
    ("sublists trace", lambda a: E(a, [0, 0]), [(3, 3)]),
    ("sublists high labels", lambda a, b: E(a, [30, 40], b, [40, 51], [51, 30]),
     [(2, 3), (3, 4)]),
    ("optimize=True", es("ij,jk,kl->il", optimize=True), [(2, 3), (3, 4), (4, 2)]),
    ("optimize='optimal'", es("ab,bc,cd->ad", optimize="optimal"), [(2, 3), (3, 4), (4, 2)]),
    ("optimize='greedy'", es("ab,bc,cd->ad", optimize="greedy"), [(2, 3), (3, 4), (4, 2)]),
    ("optimize=False", es("ab,bc,cd->ad", optimize=False), [(2, 3), (3, 4), (4, 2)]),
    ("optimize=(greedy, limit)", es("ab,bc,cd->ad", optimize=("greedy", 8)),
     [(2, 3), (3, 4), (4, 2)]),
    ("optimize=path", es("ab,bc,cd->ad", optimize=["einsum_path", (1, 2), (0, 1)]),
     [(2, 3), (3, 4), (4, 2)]),
    ("optimize=one-step path", es("ab,bc,cd->ad", optimize=["einsum_path", (0, 1, 2)]),
     [(2, 3), (3, 4), (4, 2)]),
    ("with a NumPy constant", lambda a: E("ij,jk->ik", a, np.linspace(-1, 1, 12).reshape(3, 4)),
     [(2, 3)]),
    ("dtype=float64", lambda a, b: E("ij,jk", a, b, dtype=np.float64), [(2, 3), (3, 4)]),
    ("dtype=float32 unsafe", lambda a, b: E("ij,jk", a, b, dtype=np.float32, casting="unsafe"),
     [(2, 3), (3, 4)]),
    ("Python number", lambda a: E("i,", a, 2.5), [(3,)]),
    ("order='F'", es("ij,jk", order="F"), [(2, 3), (3, 4)]),
]
EINSUM_IDS = [c[0] for c in EINSUM]

# the other functions, over their argument forms
OTHERS = [
    ("tensordot default", lambda a, b: np.tensordot(a, b), [(2, 3, 4), (3, 4, 2)]),
    ("tensordot int", lambda a, b: np.tensordot(a, b, 1), [(2, 3), (3, 4)]),
    ("tensordot 0 (outer)", lambda a, b: np.tensordot(a, b, axes=0), [(2, 3), (2,)]),
    ("tensordot pair of ints", lambda a, b: np.tensordot(a, b, axes=(0, 1)), [(3, 2), (4, 3)]),
    ("tensordot pair of lists", lambda a, b: np.tensordot(a, b, ([0, 2], [1, 0])),
     [(2, 3, 4), (4, 2, 5)]),
    ("tensordot negative axes", lambda a, b: np.tensordot(a, b, axes=([-1], [-2])),
     [(2, 3), (4, 3, 2)]),
    ("tensordot keywords", lambda a, b: np.tensordot(a=a, b=b, axes=1), [(2, 3), (3, 4)]),
    ("inner 1-D", lambda a, b: np.inner(a, b), [(3,), (3,)]),
    ("inner N-D", lambda a, b: np.inner(a, b), [(2, 2, 3), (4, 3)]),
    ("inner 0-d", lambda a, b: np.inner(a, b), [(), (2, 3)]),
    ("inner Python number", lambda a: np.inner(a, 2.0), [(2, 3)]),
    ("vdot", lambda a, b: np.vdot(a, b), [(2, 3), (3, 2)]),
    ("kron 2-D", lambda a, b: np.kron(a, b), [(2, 3), (3, 2)]),
    ("kron ranks differ", lambda a, b: np.kron(a, b), [(2, 3), (4,)]),
    ("kron ranks differ (a lower)", lambda a, b: np.kron(a, b), [(3,), (2, 2, 2)]),
    ("kron keywords", lambda a, b: np.kron(b=b, a=a), [(2, 1), (2, 2)]),
    ("kron 0-d", lambda a, b: np.kron(a, b), [(), (2, 3)]),
    ("cross 3x3", lambda a, b: np.cross(a, b), [(4, 3), (4, 3)]),
    ("cross broadcast", lambda a, b: np.cross(a, b), [(4, 3), (2, 1, 3)]),
    ("cross 2x2 (z only)", lambda a, b: np.cross(a, b), [(4, 2), (4, 2)]),
    ("cross 2x3", lambda a, b: np.cross(a, b), [(4, 2), (4, 3)]),
    ("cross 3x2", lambda a, b: np.cross(a, b), [(3,), (4, 2)]),
    ("cross axisa/axisb/axisc", lambda a, b: np.cross(a, b, axisa=0, axisb=1, axisc=0),
     [(3, 4), (4, 3)]),
    ("cross positional axes", lambda a, b: np.cross(a, b, 0, 1, 0), [(3, 4), (4, 3)]),
    ("cross keywords", lambda a, b: np.cross(a=a, b=b, axis=-1), [(2, 3), (2, 3)]),
    ("cross axis", lambda a, b: np.cross(a, b, axis=0), [(3, 2, 2), (3, 2, 2)]),
    ("cross reversed rows", lambda a: np.cross(a, a[::-1]), [(3, 3)]),
    ("multi_dot 3", lambda a, b, c: np.linalg.multi_dot([a, b, c]), [(2, 3), (3, 4), (4, 2)]),
    ("multi_dot 5", lambda a, b, c, d, e: np.linalg.multi_dot([a, b, c, d, e]),
     [(2, 5), (5, 3), (3, 4), (4, 2), (2, 3)]),
    ("multi_dot vectors", lambda a, b, c: np.linalg.multi_dot([a, b, c]), [(3,), (3, 4), (4,)]),
    ("multi_dot row vector", lambda a, b, c: np.linalg.multi_dot([a, b, c]),
     [(3,), (3, 4), (4, 2)]),
    ("multi_dot keyword", lambda a, b, c: np.linalg.multi_dot(arrays=[a, b, c]),
     [(2, 3), (3, 4), (4, 2)]),
    ("multi_dot 2 (dot)", lambda a, b: np.linalg.multi_dot([a, b]), [(2, 3, 4), (4,)]),
    ("matmul 1-D @ N-D", lambda a, b: a @ b, [(3,), (2, 3, 4)]),
    ("matmul broadcast batches", lambda a, b: np.matmul(a, b), [(3, 1, 2, 4), (2, 4, 2)]),
    ("matmul empty k", lambda a, b: a @ b, [(2, 0), (0, 3)]),
]
OTHER_IDS = [c[0] for c in OTHERS]
CASES = {c[0]: c for c in EINSUM + OTHERS}


def _args(name, shapes, dtype):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def _assert_like_numpy(got, want, dtype, what):
    want = np.asarray(want)
    got = np.asarray(got)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    assert got.dtype == want.dtype, (what, got.dtype, want.dtype)
    tol = 1e-5 if np.float32 in (dtype, want.dtype) else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=what)


def _joint(loss, args):
    """The graph value_and_grad builds: the traced loss, then the backward of every input."""
    graph = run_passes(trace(loss, args)[0], BEFORE_AUTODIFF)
    graph.outputs = [graph.outputs[0]] + autodiff.vjp(graph, graph.outputs[0], graph.inputs)
    return graph


def _numerical_grads(loss, args, eps=1e-6):
    grads = []
    for i, x in enumerate(args):
        g = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            moved = [a.copy() for a in args]
            moved[i][idx] += eps
            up = loss(*moved)
            moved[i][idx] -= 2 * eps
            g[idx] = (up - loss(*moved)) / (2 * eps)
        grads.append(g)
    return grads


@pytest.mark.filterwarnings("ignore:Arrays of 2-dimensional vectors:DeprecationWarning")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", EINSUM_IDS + OTHER_IDS)
def test_values_match_numpy_on_the_interpreter(name, dtype):
    _, f, shapes = CASES[name]
    args = _args(name, shapes, dtype)
    graph, _, _ = trace(f, args)
    _assert_like_numpy(evaluate(graph, args)[0], f(*args), dtype, name)
    # and after the pipeline a compile runs (simplify's BLAS flags, lowering, fusion)
    lowered = fuse(run_passes(run_passes(graph, BEFORE_AUTODIFF), AFTER_AUTODIFF)).graph
    _assert_like_numpy(evaluate(lowered, args)[0], f(*args), dtype, f"{name} (lowered)")


@pytest.mark.filterwarnings("ignore:Arrays of 2-dimensional vectors:DeprecationWarning")
@pytest.mark.parametrize("name", [n for n in EINSUM_IDS + OTHER_IDS  # (float64 results only)
                                  if n != "dtype=float32 unsafe"])
def test_gradients_match_finite_differences_on_the_interpreter(name):
    _, f, shapes = CASES[name]
    args = _args(name, shapes, np.float64)
    r = np.random.default_rng(1).standard_normal(np.shape(f(*args)))

    def loss(*a):
        return np.sum(f(*a) * r)

    joint = _joint(loss, args)
    expected = _numerical_grads(loss, args)
    for graph in (joint, fuse(run_passes(joint, AFTER_AUTODIFF)).graph):
        value, *grads = evaluate(graph, args)
        np.testing.assert_allclose(value, loss(*args), rtol=1e-12, atol=1e-12)
        for i, (g, e) in enumerate(zip(grads, expected)):
            np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-8, err_msg=f"{name}: arg {i}")


# ---------------------------------------------------------------------------------------------
# dtypes: NumPy's result type, booleans and integers exact

def _dtype_cases(x32, x64, i32, m):
    return (E("ij,jk", x32, x64[:3]), E("ij,jk", x32, x32[0][:, None]), E("ij,jk", i32, i32.T),
            E("ij,ij->i", m, m), E("ij,jk", m, m.T), E("i,", x32[0], 2.0),
            E("ij,jk", i32, x32[0][:, None]), E("ij->", i32, dtype=np.int64),
            E("ii->i", i32.T @ i32), E("ij,jk", x64, x64.T, dtype=np.float32, casting="same_kind"),
            np.tensordot(i32, x32.T, 1), np.inner(m, m), np.vdot(i32, i32), np.kron(i32, m),
            np.kron(m, m), np.cross(i32[:, :3], x32[:, :3]))


def test_dtypes_follow_numpy():
    rng = np.random.default_rng(7)
    args = (rng.standard_normal((2, 3)).astype(np.float32), rng.standard_normal((4, 3)),
            rng.integers(-3, 4, (2, 3)).astype(np.int32), rng.random((3, 3)) < 0.5)
    graph, _, _ = trace(_dtype_cases, args)
    for k, (g, e) in enumerate(zip(evaluate(graph, list(args)), _dtype_cases(*args))):
        assert g.dtype == e.dtype and g.shape == e.shape, (k, g.dtype, e.dtype, g.shape, e.shape)
        np.testing.assert_allclose(g, e, rtol=1e-6, err_msg=f"result {k}")


# ---------------------------------------------------------------------------------------------
# end to end: compiled forward (float32), compiled gradients (float64), grad of grad

def _forward(a, b, s, v):
    return (E("bij,bjk->bik", a, b), E("ij,jk,kl->il", a[0], b[0], b[1].T),
            E("ii->i", s[:, :3]), E("bhqd,bhkd->bhqk", a[None], a[None]),
            E(a, [0, 1, 2], v, [2], [Ellipsis, 1]), np.cross(s[:, :3], s[:, 1:]),
            np.linalg.multi_dot([v, s.T, s, v]),
            # one array read along two strided paths in one loop (a codegen regression)
            s[:, 0] * s[:, 1] - s[:, 1] * s[::-1, 0])


@pytest.fixture(scope="module")
def forward_args():
    rng = np.random.default_rng(3)
    return [rng.standard_normal(shape).astype(np.float32)
            for shape in [(2, 3, 4), (2, 4, 5), (3, 4), (4,)]]


def test_compiled_forward_matches_numpy_float32(forward_args):
    got = gradc.jit(_forward)(*forward_args)
    want = _forward(*forward_args)
    assert len(got) == len(want)
    for k, (g, e) in enumerate(zip(got, want)):
        _assert_like_numpy(g, e, np.float32, f"result {k}")


def _loss(a, b, s, v):
    ys = (E("bij,bjk->bik", a, b), E("iij->ij", E("ij,kj->ikj", s, s)), E("ij,ij->i", s, s),
          np.tensordot(a, b, ([0, 2], [0, 1])), np.kron(s[:2, :2], v),
          np.cross(s[:, :3], s[::-1, 1:]), np.linalg.multi_dot([s, s.T, s]))
    return sum(np.sum(y * np.cos(np.arange(y.size)).reshape(y.shape)) for y in ys)


def test_compiled_gradients_match_finite_differences():
    rng = np.random.default_rng(4)
    args = [rng.standard_normal(shape) for shape in [(2, 3, 4), (2, 4, 5), (3, 4), (4,)]]
    value, grads = gradc.value_and_grad(_loss, argnums=(0, 1, 2, 3), copy=True)(*args)
    np.testing.assert_allclose(value, _loss(*args), rtol=1e-12)
    for i, (g, e) in enumerate(zip(grads, _numerical_grads(_loss, args))):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-8, err_msg=f"argument {i}")


def test_grad_of_grad_of_a_bilinear_form():
    """f(x, y) = x^T A y: df/dx = A y, and d/dy of (df/dx . v) = A^T v."""
    A = np.random.default_rng(5).standard_normal((3, 4))

    def f(x, y):
        return E("i,ij,j->", x, A, y)

    x, y, v = np.ones(3), np.linspace(-1, 1, 4), np.array([1.0, -2.0, 0.5])
    hvp = gradc.grad(lambda x, y: np.sum(gradc.grad(f)(x, y) * v), argnums=1, copy=True)(x, y)
    np.testing.assert_allclose(hvp, A.T @ v, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# what NumPy refuses, gradc refuses, with a GradcError that names the user's line

ERRORS = [
    (lambda a: E("ij,jk", a), gradc.ArgumentError, "subscripts name 2 operands"),
    (lambda a: E("ij->ii", a), gradc.ArgumentError, "more than once"),
    (lambda a: E("ij->k", a), gradc.ArgumentError, "which no operand has"),
    (lambda a: E("i", a), gradc.ArgumentError, "one per axis"),
    (lambda a: E("ijk", a), gradc.ArgumentError, "one per axis"),
    (lambda a: E("i.j", a), gradc.ArgumentError, "ellipsis"),
    (lambda a: E("i1", a), gradc.ArgumentError, "invalid subscript"),
    (lambda a: E("i-j", a), gradc.ArgumentError, "'->'"),
    (lambda a: E("...->i", a), gradc.ArgumentError, "'...'"),
    (lambda a: E("...i->i", a), gradc.ArgumentError, "put '...' in the output"),
    (lambda a: E("ii", a), gradc.ShapeError, "equal sizes"),
    (lambda a: E("ij,ij", a, a.T), gradc.ShapeError, "must be equal, or 1"),
    (lambda a: E(a, [0, 60]), gradc.ArgumentError, r"\[0, 52\)"),
    (lambda a: E(a, ["i", "j"]), gradc.ArgumentError, "integers"),
    (lambda a: E("ij", a, out=np.empty((2, 3))), gradc.UnsupportedOpError, "out="),
    (lambda a: E("ij", a, dtype=np.float32), gradc.ArgumentError, "casting="),
    (lambda a: E("ij", a, foo=1), gradc.ArgumentError, "foo"),
    (lambda a: E("ij,jk", a, a.T, optimize="fastest"), gradc.ArgumentError, "optimize="),
    (lambda a: E("ij,jk", a, a.T, optimize=["einsum_path", (0, 2)]), gradc.ArgumentError,
     "path step"),
    (lambda a: E("ij,jk,kl", a, a.T, a, optimize=["einsum_path", (0, 1)]), gradc.ArgumentError,
     "leaves 2 operands"),
    (lambda a: np.tensordot(a, a, 1), gradc.ShapeError, "shape-mismatch"),
    (lambda a: np.tensordot(a, a, ([0, 1], [0])), gradc.ShapeError, "shape-mismatch"),
    (lambda a: np.tensordot(a, a, ([0, 0], [0, 0])), gradc.ShapeError, "duplicate"),
    (lambda a: np.tensordot(a, a, ([5], [0])), gradc.ShapeError, "out of bounds"),
    (lambda a: np.inner(a, a.T), gradc.ShapeError, "shape-mismatch"),
    (lambda a: np.vdot(a, a[0]), gradc.ShapeError, "6 and 3 elements"),
    (lambda a: np.cross(a[:, :1], a), gradc.ShapeError, "must be 2 or 3"),
    (lambda a: np.cross(a > 0, a > 0), gradc.ArgumentError, "boolean"),
    (lambda a: np.cross(a[0], a[1], axisc=1), gradc.ShapeError, "out of bounds"),
    (lambda a: np.linalg.multi_dot([a]), gradc.ArgumentError, "at least two"),
    (lambda a: np.linalg.multi_dot([a, a[None].T, a]), gradc.ShapeError, "must be 2-D"),
    (lambda a: np.linalg.multi_dot([a, a, a]), gradc.ShapeError, "do not align"),
]


@pytest.mark.parametrize("k", range(len(ERRORS)))
def test_bad_arguments_raise_gradc_errors_naming_the_line(k):
    f, error, match = ERRORS[k]
    with pytest.raises(error, match=match) as info:
        gradc.jit(f)(np.arange(6.0).reshape(2, 3))
    assert "test_contractions.py:" in str(info.value)


def test_two_vector_cross_warns_as_numpy_does_at_the_users_line():
    a = np.ones((4, 2))
    with pytest.warns(DeprecationWarning, match="2-dimensional vectors") as record:
        graph, _, _ = trace(lambda a: np.cross(a, a[::-1]), [a])  # CROSS-2
    line = [w for w in record if "2-dimensional" in str(w.message)][0]
    assert line.filename.endswith("test_contractions.py")
    src = open(__file__, encoding="utf-8").read().splitlines()
    assert src[line.lineno - 1].rstrip().endswith("# CROSS-2")


def test_einsum_pairs_are_blas_products_with_the_transpose_folded():
    """'bhqd,bhkd->bhqk' is one batched product reading k's operand in place (the transposed
    BLAS flag), not a copy of it."""
    a = np.ones((2, 2, 3, 4), np.float32)
    graph, _, _ = trace(lambda q, k: E("bhqd,bhkd->bhqk", q, k), [a, a])
    ops = [n.op for n in run_passes(run_passes(graph, BEFORE_AUTODIFF), AFTER_AUTODIFF).nodes]
    assert ops.count("bmm") == 1 and "transpose" not in ops, ops


def test_gradients_through_an_empty_batch_are_zeros():
    """An empty batch's loss is an empty sum: every gradient is zero. A fused loop over the
    empty batch that also summed into a [1, 4] gradient shared its pointer with the empty
    product it wrote (both at one address) and zeroed the sum's buffer over the empty loop's
    extent, 0 elements: the gradient came back as whatever the arena held (fuzz40c)."""
    rng = np.random.default_rng(0)
    W = rng.standard_normal((4, 3))
    for dtype in (np.float32, np.float64):
        k1 = np.zeros((0, 4), dtype)
        f = lambda k1, W: np.sum((k1 * np.diagonal(W @ W.T)) @ W)  # noqa: E731
        for _ in range(2):
            g = gradc.grad(f, argnums=1)(k1, W.astype(dtype) * rng.standard_normal())
            np.testing.assert_array_equal(g, np.zeros((4, 3), dtype))
    k0, k1 = rng.standard_normal((3, 0, 1)), rng.standard_normal((2, 0, 1))

    def contraction(k0, k1):
        d = k1[:1] - k0
        return np.einsum("ajk,bjk->abk", d, d)[:, :, 0]

    for block in gradc.jacobian(contraction, argnums=(0, 1))(k0, k1):
        np.testing.assert_array_equal(block, np.zeros_like(block))
