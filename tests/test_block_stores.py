"""Blocks of a concatenation along an inner axis stored in place (passes/fuse.py block_stores).

A loop kernel that computes a block of `np.concatenate(..., axis=1)` (an LSTM's four gate
gradients side by side, a model that concatenates features) stores it straight into its place
in the concatenation's buffer, with the concatenation's row strides, and the concatenation
copies nothing. Checked through the public API over the argument space: 2-D and 3-D, the
first, a middle and the last axis, float32 and float64, blocks that cannot be stored in place
(read by another kernel, not 64-byte aligned, the concatenation returned), a block cut in
chunks for the threads, and blocks inside a block (a step's gate gradients inside the
sequence's gradient). Values against NumPy, gradients against central finite differences and
the reference interpreter; the memory plan is verified (GRADC_CHECK_PLAN, set by conftest).
"""
import numpy as np
import pytest

import gradc
from gradc import pytree
from gradc.interpret import evaluate

from _finite_differences import central_difference


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def gates(x, w):
    """An LSTM cell's gates: four column blocks of one product, each through its own function;
    their gradients tile the product's gradient along its columns."""
    z = x @ w
    n = w.shape[1] // 4
    i, f, g, o = sigmoid(z[:, :n]), sigmoid(z[:, n:2 * n]), np.tanh(z[:, 2 * n:3 * n]), sigmoid(z[:, 3 * n:])
    c = f * 0.5 + i * g
    return np.sum(o * np.tanh(c))


def features(x):
    """Features concatenated along the columns, then reduced: not an output itself."""
    both = np.concatenate([np.sin(x), x * x - 1.0, np.tanh(x)], axis=1)
    return np.sum(both.sum(axis=0) ** 2)


def middle_axis(a, b):
    """3-D blocks along the middle axis (offsets of whole rows of the last axis)."""
    c = np.concatenate([np.exp(a * 0.5), b * 2.0], axis=1)
    return np.sum(c * c[:, ::-1, :])


def last_axis(a, b):
    c = np.concatenate([np.cos(a), a + b, b * b], axis=-1)
    return np.sum(np.tanh(c).mean(axis=(0, 1)))


def read_elsewhere(x, w):
    """The first block is also a product's operand: it keeps a buffer of its own (copied)."""
    a = np.tanh(x)
    c = np.concatenate([a, x * 3.0], axis=1)
    return np.sum(c ** 2) + np.sum(a @ w)


def unaligned(x, y):
    """Blocks of 3 and 5 columns: the second starts 24 bytes into a row (float64)."""
    c = np.concatenate([np.sin(x), np.cos(y)], axis=1)
    return np.sum(c * c[::-1])


def steps(x, w):
    """Per-step gates of a small recurrence over time-major x: each step's gate gradients are
    blocks of the step's gradient, which is a block of the input projection's."""
    xw = x @ w
    n = w.shape[1] // 2
    h = np.zeros((x.shape[1], n), x.dtype)
    for t in range(x.shape[0]):
        z = xw[t] + np.concatenate([h, h], axis=1)
        h = sigmoid(z[:, :n]) * np.tanh(z[:, n:])
    return np.sum(h * h)


def _rng_args(seed, *shapes):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) * 0.5 for s in shapes]


# name: (function, argument shapes, argnums, blocks stored in place in float64, in float32):
# a block that the backward reads (tanh's, exp's value: its derivative) keeps its own buffer,
# as does one whose first element is not 64 bytes into the row (float32: 16 columns apart)
CASES = {
    "gates": (gates, [(6, 8), (8, 64)], (0, 1), (4, 4)),
    "features": (features, [(5, 8)], (0,), (2, 1)),
    "middle_axis": (middle_axis, [(2, 3, 8), (2, 5, 8)], (0, 1), (1, 0)),
    "last_axis": (last_axis, [(2, 3, 8), (2, 3, 8)], (0, 1), (3, 2)),
    "read_elsewhere": (read_elsewhere, [(4, 8), (8, 3)], (0, 1), (1, 0)),
    "unaligned": (unaligned, [(4, 3), (4, 5)], (0, 1), (1, 1)),
    "steps": (steps, [(3, 4, 5), (5, 32)], (0, 1), (6, 6)),
}


@pytest.fixture(scope="module")
def results():
    out = {}
    for name, (f, shapes, argnums, _) in CASES.items():
        for dtype in (np.float64, np.float32):
            args = [a.astype(dtype) for a in _rng_args(7, *shapes)]
            vg = gradc.value_and_grad(f, argnums=argnums)
            value, grads = vg(*args)
            out[name, dtype] = (value, list(grads), vg, args)
    return out


@pytest.mark.parametrize("name", CASES)
def test_blocks_stored_in_place(results, name):
    """The blocks that can be are stored in place: an aligned block, computed by a loop kernel
    and read by the concatenation alone; each where the plan put it, with its strides."""
    for dtype, count in zip((np.float64, np.float32), CASES[name][3]):
        _, _, vg, args = results[name, dtype]
        compiled = vg.compiled_for(*args)
        stored = compiled.fusion.block_stores
        assert len(stored) == count, (dtype, len(stored))
        for vid, (concat, offset, strides) in stored.items():
            # the block's first element, in bytes, where the plan put the block
            at = compiled.plan.offsets[vid] - compiled.plan.offsets[concat.id]
            assert compiled.plan.members[vid] == concat.id  # (in its block, nested or not)
            assert at == offset * np.dtype(dtype).itemsize
            assert strides == tuple(s // 8 for s in np.zeros(concat.shape).strides)


@pytest.mark.parametrize("name", CASES)
def test_values_and_gradients(results, name):
    f, shapes, argnums, _ = CASES[name]
    value, grads, vg, args = results[name, np.float64]
    np.testing.assert_allclose(value, f(*args), rtol=1e-12, atol=1e-12)
    for g, i in zip(grads, argnums):
        want = central_difference(lambda a: f(*args[:i], a, *args[i + 1:]), args[i])
        np.testing.assert_allclose(g, want, rtol=1e-6, atol=1e-8)
    # float32 as the reference interpreter computes the traced graph, before any pass
    value, grads, vg, args = results[name, np.float32]
    traced = vg.compiled_for(*args).stages[0][1]
    want = evaluate(traced, pytree.flatten((tuple(args), {}))[0])
    for got, w in zip([np.asarray(value)] + grads, want):
        assert got.dtype == w.dtype == np.float32
        np.testing.assert_allclose(got, w, rtol=2e-5, atol=2e-5)


def test_returned_concatenation_is_copied_not_strided():
    """A concatenation the function returns lives in the output's array: its blocks are
    computed into buffers of their own and copied there, as NumPy's result."""
    x = np.linspace(-1.0, 1.0, 24).reshape(4, 6)
    f = gradc.jit(lambda x: np.concatenate([np.sin(x), x * 2.0, np.exp(x)], axis=1))
    got = f(x)
    want = np.concatenate([np.sin(x), x * 2.0, np.exp(x)], axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-15, atol=0)
    assert f.compiled_for(x).fusion.block_stores == {}


def test_block_cut_in_chunks_for_threads():
    """Blocks of a loop kernel long enough for gradc's threads (passes/fuse.py
    decide_parallel): each chunk stores its rows of every block."""
    x = np.random.default_rng(1).standard_normal((256, 256)).astype(np.float32)

    def f(x):
        c = np.concatenate([np.tanh(x), x * 0.5], axis=1)
        return c.sum(axis=0)

    jf = gradc.jit(f)
    got = jf(x)
    np.testing.assert_allclose(got, f(x), rtol=1e-5, atol=1e-4)
    compiled = jf.compiled_for(x)
    assert len(compiled.fusion.block_stores) == 2
    (kernel,) = [k for k in compiled.fusion.kernels
                 if any(v.id in compiled.fusion.block_stores for v in k.stores)]
    assert kernel.parallel


def test_ahead_of_time_module_matches_bit_for_bit(tmp_path):
    """A `gradc compile` module of the gates (its kernels store the blocks in place, on Numba's
    route) gives gradc's value and gradients to the bit."""
    import importlib.util

    from gradc import aot
    x, w = (a.astype(np.float32) for a in _rng_args(3, (6, 8), (8, 64)))
    path = tmp_path / "gates_vg.py"
    aot.compile_module(gates, (x, w), str(path), argnums=(0, 1))
    spec = importlib.util.spec_from_file_location("gates_vg", str(path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    value, grads = module.gates(x, w)
    want_value, want_grads = gradc.value_and_grad(gates, argnums=(0, 1))(x, w)
    assert np.asarray(value).tobytes() == np.asarray(want_value).tobytes()
    for g, want in zip(grads, want_grads):
        assert g.dtype == want.dtype and g.tobytes() == want.tobytes()
