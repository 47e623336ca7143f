"""A transposed copy of a loop kernel's value is a second, permuted store of that kernel.

A library kernel (a sort, a cumsum, a gather, a concatenation, a product that reads its operand
transposed: passes/products.py) needs its input contiguous; a value computed by a loop kernel
and read transposed was copied by a kernel of its own. The kernel that computes the value now
also stores each element at its transposed place (passes/fuse.py `transposing_kernel`,
codegen/loops.py), on the CPU. Checked here through the public API: values against NumPy,
gradients against central differences, over 2-D and 3-D permutations, square shapes (where the
copy's shape is the kernel's own: its element must never be read as the kernel's), kernels big
enough to run in chunks on gradc's threads, both kernel routes, and float32.
"""
import numpy as np
import pytest

import gradc

CASES = {
    "sort": (lambda x: np.sum(np.sort(np.tanh(x).T, axis=1) * np.arange(x.shape[0])), (24, 40)),
    # square: the copy's shape is the kernel's; its consumer must read the stored copy
    "square": (lambda x: np.sum(np.sort(np.tanh(x).T, axis=1) * np.tanh(x)), (16, 16)),
    "cumsum": (lambda x: np.sum(np.cumsum(np.exp(x).T, axis=1) ** 2), (20, 12)),
    "concatenate": (lambda x: np.sum(np.concatenate([np.sin(x).T, x.T * 2], axis=0) ** 3), (6, 9)),
    "gather_3d": (lambda x: np.sum(np.transpose(np.tanh(x), (2, 0, 1))[np.array([0, 2, 2])] ** 2),
                  (4, 5, 3)),
    # 2^17 iterations: the kernel runs in chunks on gradc's threads
    "chunked": (lambda x: np.sum(np.sort(np.tanh(x).T, axis=1)[:, -3:] * 2.0), (512, 256)),
}


def _transposed_stores(compiled):
    return [k.transposed for k in compiled.fusion.kernels if k.transposed]


@pytest.mark.parametrize("name", sorted(CASES))
def test_values_and_gradients_through_a_transposed_store(name):
    f, shape = CASES[name]
    rng = np.random.default_rng(len(name))
    x = rng.standard_normal(shape)
    vg = gradc.value_and_grad(f)
    value, grad = vg(x)
    assert _transposed_stores(vg.compiled_for(x)), "the copy was a kernel of its own"
    np.testing.assert_allclose(value, f(x), rtol=1e-12)
    direction = rng.standard_normal(shape)
    eps = 1e-6
    numeric = (f(x + eps * direction) - f(x - eps * direction)) / (2 * eps)
    assert abs(np.sum(grad * direction) - numeric) <= 1e-6 * max(1.0, abs(numeric))
    np.testing.assert_allclose(gradc.jit(f)(x), f(x), rtol=1e-12)


@pytest.mark.parametrize("route", ["numba", "llvm"])
def test_both_kernel_routes_store_the_transpose(monkeypatch, route):
    monkeypatch.setenv("GRADC_KERNELS", route)

    def f(x):
        return np.sort((np.tanh(x) * 3.0).T, axis=-1), np.tanh(x)

    x = np.random.default_rng(2).standard_normal((40, 24)).astype(np.float32)
    jitted = gradc.jit(f)
    out, same = jitted(x)
    np.testing.assert_allclose(out, np.sort((np.tanh(x) * 3.0).T, axis=-1), rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(same, np.tanh(x), rtol=2e-6, atol=1e-7)
    assert out.dtype == np.float32
    assert [list(t.values()) for t in _transposed_stores(jitted.lower(x))] == [[(1, 0)]]


def test_the_kernel_source_stores_at_transposed_strides():
    def f(x):
        return np.cumsum(np.exp(x).T, axis=1)

    x = np.ones((8, 6))
    lowered = gradc.jit(f).lower(x)
    (loop,) = [ks.source for ks in lowered.program.kernels if ks.name.startswith("loop_")]
    assert "# copy" in loop, loop
    assert not [ks for ks in lowered.program.kernels if ks.name == "loop_copy"]
    np.testing.assert_allclose(gradc.jit(f)(x * 0.5), f(x * 0.5), rtol=1e-12)
