"""A fused loop over strided operands (column blocks of a matrix, reversed rows) vectorizes.

The LSTM's gate kernel reads the four column blocks of z = x @ Wx + h @ Wh and writes a dozen
values; it ran scalar (exp and tanh through scalar libm), 316 us a step against 23 us: Numba
wraps a signed index that might be negative (x[-1]), and that select hid the access's range from
LLVM, whose overlap checks then refused to vectorize, or failed at run time against any buffer
above it. Sequential kernels now read raw pointers (no wraparound at all; array views, in
parallel kernels, take unsigned strided indices: gradc/codegen/cpu.py `_index`); the optimized
code must not read any array length, which only the wraparound does.
"""
import re

import numpy as np
import pytest

import gradc
from gradc.codegen import rt, vecmath

H = 16


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def lstm_step(z, c, sigmoid=gradc.nn.sigmoid):
    i, f = sigmoid(z[:, :H]), sigmoid(z[:, H:2 * H])
    g, o = np.tanh(z[:, 2 * H:3 * H]), sigmoid(z[:, 3 * H:])
    c2 = f * c + i * g
    h = o * np.tanh(c2)
    # the backward's values, as a value_and_grad keeps them: 12 stores from one kernel
    return h, c2, i, f, g, o, 1 - i, 1 - f, 1 - g * g, 1 - o, np.tanh(c2), h * h


def reversed_blocks(z):
    """Negative strides: the index's origin keeps it non-negative (read as unsigned)."""
    return np.tanh(z[::-1, ::-1][:, :H]) * z[::-1, -1:3 * H - 1:-1], np.exp(z[1::2, ::-3][:, :H])


@pytest.fixture(scope="module")
def step():
    f = gradc.jit(lstm_step)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((8, 4 * H)).astype(np.float32)
    c = rng.standard_normal((8, H)).astype(np.float32)
    return f, z, c


def test_values_match_numpy(step):
    f, z, c = step
    for got, want in zip(f(z, c), lstm_step(z, c, sigmoid=_sigmoid)):
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)
    z64 = np.linspace(-3, 3, 8 * 4 * H).reshape(8, 4 * H)
    for got, want in zip(gradc.jit(reversed_blocks)(z64), reversed_blocks(z64)):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.skipif(not vecmath.enable(), reason="no libmvec here")
def test_gate_kernel_vectorizes_without_index_wraparound(step):
    f, z, c = step
    f(z, c)
    sources = [s for s in f.last_compiled().program.kernel_modules.values() if "tanh" in s]
    (source,) = sources  # one fused kernel: the whole step
    # (the four column blocks of z: one array, each block at its own displacement)
    assert len(re.findall(r"\[(?:\w+ \+ )*i0 \* sa\d+_0 \+ i1\]", source)) >= 4, \
        "the column blocks are read through strided indices"
    assert "_array(" not in source, "buffers are raw pointers"
    name = re.search(r"^def (\w+)", source, re.M)[1]
    namespace = {}
    cache, rt.JIT_OPTIONS["cache"] = rt.JIT_OPTIONS["cache"], False  # (compiled from a string)
    try:
        with vecmath.compiling():
            exec(compile(source, "<kernel>", "exec"), namespace)
    finally:
        rt.JIT_OPTIONS["cache"] = cache
    kernel = namespace[name]
    (llvm,) = kernel.inspect_llvm().values()
    assert re.search(r"call [^\n]*@_ZGV\w+v_tanhf\(", llvm), "the loop runs scalar"
    body = [line for line in llvm.splitlines() if not line.startswith(("define", "declare"))]
    uses = [line for line in body if "%arg.len" in line]
    assert not uses, f"an index is wrapped around (Numba's x[-1]): {uses[:2]}"


def test_a_transposing_map_reads_its_source_contiguously():
    # codegen/loops.py puts innermost the loop most loads walk one element at a time: a
    # transposed read becomes a contiguous read and a strided write (W8's weight transpose
    # 145 -> 48 us); a map whose loads agree with its store keeps its order, and so does one
    # whose only other unit-stride loads are broadcasts (a batch norm's per-channel scale)
    def f(x, y, z, g, h):
        return (np.tanh(x.T) * 2.0, np.tanh(x.T) + y.T, x + 1.0,
                np.maximum(z * g[None, :, None] - h[None, :, None], 0.0))

    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((5, 67)), rng.standard_normal((5, 67))
    z, g, h = rng.standard_normal((2, 5, 67)), rng.standard_normal(5), rng.standard_normal(5)
    jf = gradc.jit(f)
    for got, want in zip(jf(x, y, z, g, h), f(x, y, z, g, h)):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    sources = jf.last_compiled().program.kernel_modules.values()
    (source,) = [s for s in sources if "tanh" in s]
    assert re.findall(r"= a\d+\[([^\]]+)\]", source) == ["i0 * n1 + i1"] * 2, source
    assert len(re.findall(r"a\d+\[i0 \* sa\d+_0 \+ i1 \* sa\d+_1\] =", source)) == 2, source
    (source,) = [s for s in sources if "# maximum" in s]
    assert "= a0[(i0 * n1 + i1) * n2 + i2]" in source and "= a1[i1]" in source, source


def test_a_chunked_calls_bool_mask_is_stored_in_vectors(monkeypatch):
    """A call in chunks runs the kernel any call runs, over a part of its outer loop from 0
    (its arguments moved): the relu's mask is stored in vectors. (A chunk function whose loop
    started at c * n0 // CHUNKS, which LLVM could not see is never negative, stored it one
    element at a time: W4's chunked kernel took 130 us a step more.)"""
    monkeypatch.setenv("GRADC_PARALLEL_MIN_ITERATIONS", "64")

    def loss(x, b, w):  # the relu's mask is kept for the product's backward
        return np.sum((np.maximum(x + b, 0.0).reshape(32, -1) @ w) ** 2)

    f = gradc.value_and_grad(loss, argnums=(1, 2))
    rng = np.random.default_rng(2)
    x, b = rng.standard_normal((32, 8, 30)).astype(np.float32), np.ones((8, 1), np.float32)
    w = rng.standard_normal((240, 10)).astype(np.float32)
    value, _ = f(x, b, w)
    assert value == pytest.approx(loss(x, b, w), rel=1e-5)
    program = f.last_compiled().program
    sources = [program.kernel_modules[name] for name, _, chunks in program.encoded_calls()
               if chunks and "bool_array(" in program.kernel_modules[name]]
    assert sources, "no call in chunks stores the relu's mask"
    name = re.search(r"^def (\w+)\(", sources[0], re.M)[1]
    namespace = {}
    cache, rt.JIT_OPTIONS["cache"] = rt.JIT_OPTIONS["cache"], False  # (compiled from a string)
    try:
        exec(compile(sources[0], "<kernel>", "exec"), namespace)
    finally:
        rt.JIT_OPTIONS["cache"] = cache
    (llvm,) = namespace[name].inspect_llvm().values()
    assert re.search(r"store <\d+ x i8>", llvm), "the mask is stored one element at a time"


def test_a_max_pools_views_are_one_array_read_at_constant_distances():
    # codegen/cpu.py reads the four strided views of a 2x2 max-pool (a[0::2, 0::2], a[0::2,
    # 1::2], a[1::2, 0::2], a[1::2, 1::2]) through one array, step 2 and the distances 0 and 1
    # within a row written as numbers: LLVM loads them as interleaved vectors, where four
    # arrays with a stride parameter each took a gather per element (W4n's pooling 64 -> 21 us).
    from numba.core.compiler_lock import global_compiler_lock
    from numba.core.registry import cpu_target
    from gradc.codegen import llvm_cpu

    def pool(a):
        return np.maximum(np.maximum(a[:, :, 0::2, 0::2], a[:, :, 0::2, 1::2]),
                          np.maximum(a[:, :, 1::2, 0::2], a[:, :, 1::2, 1::2]))

    a = np.random.default_rng(3).standard_normal((4, 3, 10, 12)).astype(np.float32)
    f = gradc.jit(pool)
    np.testing.assert_array_equal(f(a), pool(a))
    (source,) = [s for s in f.last_compiled().program.kernel_modules.values() if "maximum" in s]
    loads = re.findall(r"= (a\d+)\[([^\]]+)\]", source)
    assert {array for array, _ in loads} == {"a0"}, source
    starts = [re.fullmatch(r"(?:(\d+) \+ )?i0 \* sa0_0 \+ i1 \* 2", index) for _, index in loads]
    assert all(starts), source  # (rows of 12: the next row is near enough to be a number too)
    assert sorted(int(m[1] or 0) for m in starts) == [0, 1, 12, 13], source
    body = source[source.index("@njit"):]
    with global_compiler_lock:
        _, library = llvm_cpu._compile(cpu_target.target_context.codegen(), {"pool": body}, "t")
    assert library is not None and "gather" not in library.get_llvm_str()
