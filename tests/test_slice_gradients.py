"""Slice gradients accumulate into one buffer (issue 15, memory item 1).

A value sliced many times (an RNN's `xw[:, t]`, a convolution written as nine shifted slices, a
max-pool as `np.maximum` of strided slices) gets its gradient as one `unslice_sum` kernel
instead of a zero-padded full-size buffer per slice. Checked through `gradc.value_and_grad`:
values against NumPy and the reference interpreter, gradients against central finite
differences (float64) and float32 against float64; and the planned arena grows linearly with
the number of steps.
"""
import numpy as np
import pytest

import gradc
from gradc import pytree
from gradc.interpret import evaluate


def rnn(p, x):
    """A tanh RNN whose input projection is computed once for all steps, then sliced."""
    xw = x @ p["Wx"]
    h = np.tanh(xw[:, 0])
    for t in range(1, x.shape[1]):
        h = np.tanh(xw[:, t] + h @ p["Wh"])
    return np.sum(h * h)


def lstm(p, x):
    """W8's form, small: time-major steps xw[t] of one input projection (their gradients tile
    xw: a concatenation, passes/slices.py), four gates per step, and the recurrent weight read
    transposed by every step's backward product (passes/products.py share_transposes)."""
    xw = x @ p["Wx"] + p["b"]
    n = p["Wh"].shape[0]
    h = c = np.zeros((x.shape[1], n), x.dtype)
    for t in range(x.shape[0]):
        z = xw[t] + h @ p["Wh"]
        i, f, o = (gradc.nn.sigmoid(z[:, k * n:(k + 1) * n]) for k in range(3))
        c = f * c + i * np.tanh(z[:, 3 * n:])
        h = o * np.tanh(c)
    return np.sum(h * h)


def lstm_args(dtype, seed=3):
    rng = np.random.default_rng(seed)
    p = {"Wx": rng.standard_normal((3, 128)) * 0.3, "Wh": rng.standard_normal((32, 128)) * 0.2,
         "b": rng.standard_normal(128) * 0.1}
    x = rng.standard_normal((4, 8, 3))
    return ({k: v.astype(dtype) for k, v in p.items()}, x.astype(dtype))


def slice_mix(x, v, z):
    """1-D, 2-D and 3-D slices: overlapping, strided, reversed, integer-indexed, slices of
    slices, and a dense use."""
    return (np.sum(np.sin(x[1:4, ::2]) * x[:3, 1::2]) + np.sum(x[::-1, ::-2] ** 2)
            + np.sum(x[:, 2] * x[3, :4]) + np.sum(np.tanh(x) * v[:4, None])
            + np.sum(v[::-3] * v[1:4].sum()) + np.sum(v[5:] ** 3)
            + np.sum(z[1, :, 2:] * z[0, :, :2]) + np.sum(np.cos(z[:, ::-1, 1:3]))
            + np.sum(np.sin(x[1:][::2, :0:-1]) * x[::-1][1::2, 1:]))


def conv_pool(x, w, r):
    """W4 in plain NumPy: a 3x3 valid convolution as nine shifted slices (NCHW image, OCKK
    weights, NHWC result), tanh, and a 2x2 max-pool as np.maximum of four strided slices."""
    oh, ow = x.shape[2] - 2, x.shape[3] - 2
    y = sum(x[:, :, i:i + oh, j:j + ow].transpose(0, 2, 3, 1) @ w[:, :, i, j].T
            for i in range(3) for j in range(3))
    a = np.tanh(y)
    pooled = np.maximum(np.maximum(a[:, 0::2, 0::2], a[:, 0::2, 1::2]),
                        np.maximum(a[:, 1::2, 0::2], a[:, 1::2, 1::2]))
    return np.sum(pooled * r)


def rnn_args(steps, dtype, batch=2, features=3, hidden=4, seed=0):
    rng = np.random.default_rng(seed)
    p = {"Wx": rng.standard_normal((features, hidden)),
         "Wh": rng.standard_normal((hidden, hidden)) * 0.5}
    x = rng.standard_normal((batch, steps, features))
    return ({k: v.astype(dtype) for k, v in p.items()}, x.astype(dtype))


def mix_args(dtype, seed=1):
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal(s).astype(dtype) for s in ((4, 6), (7,), (2, 3, 4)))


def conv_args(dtype, seed=2):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 2, 6, 6))
    w = rng.standard_normal((3, 2, 3, 3)) * 0.4
    r = rng.standard_normal((2, 2, 2, 3))
    return tuple(a.astype(dtype) for a in (x, w, r))


CASES = {  # name -> (function, args(dtype), argnums)
    "rnn_T1": (rnn, lambda dt: rnn_args(1, dt), (0, 1)),
    "rnn_T3": (rnn, lambda dt: rnn_args(3, dt), (0, 1)),
    "rnn_T6": (rnn, lambda dt: rnn_args(6, dt), (0, 1)),
    "slice_mix": (slice_mix, mix_args, (0, 1, 2)),
    "conv_pool": (conv_pool, conv_args, (0, 1)),
    "lstm": (lstm, lstm_args, (0, 1)),
}


def finite_differences(fun, args, argnums, eps=1e-6):
    """Central differences of scalar fun, one array per leaf of args[argnums]."""
    out = []
    for a in argnums:
        leaves, tree = pytree.flatten(args[a])
        for k, leaf in enumerate(leaves):
            g = np.zeros_like(leaf)
            for idx in np.ndindex(leaf.shape):
                values = []
                for sign in (1, -1):
                    moved = [x.copy() for x in leaves]
                    moved[k][idx] += sign * eps
                    call = list(args)
                    call[a] = pytree.unflatten(tree, moved)
                    values.append(fun(*call))
                g[idx] = (values[0] - values[1]) / (2 * eps)
            out.append(g)
    return out


def flat_grads(grads):
    return [np.array(g) for g in pytree.flatten(grads)[0]]


@pytest.fixture(scope="module")
def results():
    """name -> dtype -> (value, flat gradients, value_and_grad, args), compiled once."""
    out = {}
    for name, (fun, make, argnums) in CASES.items():
        out[name] = {}
        for dtype in (np.float64, np.float32):
            args = make(dtype)
            vg = gradc.value_and_grad(fun, argnums=argnums, copy=True)
            value, grads = vg(*args)
            out[name][dtype] = (value, flat_grads(grads), vg, args)
    return out


@pytest.mark.parametrize("name", CASES)
def test_gradients_match_finite_differences_float64(results, name):
    fun, _, argnums = CASES[name]
    value, grads, _, args = results[name][np.float64]
    np.testing.assert_allclose(value, fun(*args), rtol=1e-12)
    expected = finite_differences(fun, args, argnums)
    assert len(grads) == len(expected)
    for g, e in zip(grads, expected):
        assert g.dtype == np.float64
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", CASES)
def test_value_and_gradients_equal_the_reference_interpreter(results, name):
    """The compiled value and gradients equal the reference interpreter's on the joint graph
    as traced (before the passes that make the unslice_sum)."""
    for dtype, tol in ((np.float64, 1e-12), (np.float32, 2e-5)):
        value, grads, vg, args = results[name][dtype]
        traced = vg.compiled_for(*args).stages[0][1]
        want = evaluate(traced, pytree.flatten((args, {}))[0])
        for got, w in zip([np.asarray(value)] + grads, want):
            assert got.dtype == w.dtype == dtype
            np.testing.assert_allclose(got, w, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", CASES)
def test_float32_gradients_agree_with_float64(results, name):
    value32, grads32, _, _ = results[name][np.float32]
    value64, grads64, _, _ = results[name][np.float64]
    assert np.asarray(value32).dtype == np.float32
    np.testing.assert_allclose(value32, value64, rtol=1e-4, atol=1e-4)
    for g32, g64 in zip(grads32, grads64):
        assert g32.dtype == np.float32
        np.testing.assert_allclose(g32, g64, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name", ["rnn_T6", "slice_mix", "conv_pool"])
def test_no_zero_padded_buffer_per_slice(results, name):
    """The compiled program has no unslice (a full-size zero-padded slice gradient) left: every
    sum of slice gradients is one unslice_sum kernel, or a concatenation where the slices tile
    the array (the RNN's xw[:, t] along its second axis)."""
    _, _, vg, args = results[name][np.float64]
    kinds = [k.kind for k in vg.compiled_for(*args).fusion.kernels]
    assert "unslice" not in kinds, kinds
    assert ("concatenate" if name == "rnn_T6" else "unslice_sum") in kinds, kinds


def test_rnn_projection_arena_grows_linearly_in_steps():
    """The arena of an RNN over xw[:, t], xw of shape (4, T, 32), grows linearly in T (with a
    padded buffer per step it grew as T^2: 3.5x from T = 16 to 32, 13x to 64; now 1.8x, 3.5x)."""
    arena = {}
    for steps in (16, 32, 64):
        args = rnn_args(steps, np.float32, batch=4, features=32, hidden=32)
        compiled = gradc.value_and_grad(rnn, argnums=(0, 1)).lower(*args)
        arena[steps] = compiled.plan.arena_bytes
    assert arena[64] / arena[16] < 5 and arena[32] / arena[16] < 2.5, arena
    # each step adds a few (batch, hidden) slices, not a (batch, T, hidden) buffer
    slice_bytes = 4 * 32 * 4
    assert (arena[64] - arena[32]) / 32 <= 8 * slice_bytes, arena


def test_lstm_gradient_is_a_concatenation_and_copies_no_small_weight(results):
    _, _, vg, args = results["lstm"][np.float32]
    compiled = vg.compiled_for(*args)
    kernels, plan = compiled.fusion.kernels, compiled.plan
    assert [k.shape for k in kernels if k.kind == "unslice_sum"] == []
    # each step's four gate gradients tile its z's gradient along the columns: a concatenation
    # whose blocks the gates' kernel stores in place (fuse.py block_stores), so it copies
    # nothing; and each step's gradient is in turn a block of xw's gradient
    steps = [k.nodes[0] for k in kernels if k.kind == "concatenate" and k.shape == (8, 128)]
    assert len(steps) == 4
    for step in steps:
        assert [compiled.fusion.block_stores[x.id][1] for x in step.inputs] == [0, 32, 64, 96]
        assert [plan.offsets[x.id] - plan.offsets[step.output.id] for x in step.inputs] == [
            0, 128, 256, 384]  # (bytes: the blocks' first row)
        assert plan.members[step.output.id] == plan.members[steps[0].output.id]
    copies = [k for k in kernels if k.kind == "loop" and [n.op for n in k.nodes] == ["copy"]]
    # Wh (32x128) is below passes/products.py SHARED_TRANSPOSE_MIN_ELEMENTS: read transposed,
    # not copied (a copy would stay alive through the backward for no gain)
    assert copies == []
    # Wh's gradient, a product a step, is one product of the states stacked with the gates'
    # gradients as they are concatenated (passes/products.py stack_products); nothing
    # accumulates a step at a time
    assert [k.shape for k in kernels if k.kind == "addmm" and k.nodes[0].attr["ta"]] == []
    stacked = [k.nodes[0] for k in kernels if k.kind == "matmul" and k.nodes[0].attr["ta"]
               and k.nodes[0].inputs[0].node.op == "concatenate"]
    assert [n.output.shape for n in stacked] == [(32, 128)]
