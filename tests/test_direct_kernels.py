"""Kernels compiled straight to LLVM IR (gradc/codegen/llvm_cpu.py) against the same kernel text
compiled by Numba: every op's scalar math gives the same bits, and so do the statements and
integer operations of the library kernels (tuples, //, %, min/max, unsigned loops) and their
`raise IndexError`, the same exception; a program mixes both routes; library kernels (products
through BLAS, concatenate, scatters, gathers, convolutions, pooling) go direct too;
np.linalg's kernels call NumPy's LAPACK direct, NumPy's bits;
the library of a program is cached on disk, reloaded by a fresh process, and a damaged cache
file is compiled again, never loaded."""
import ast
import ctypes
import inspect
import os
import re
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.special import erf

import gradc
from gradc.codegen import llvm_cpu, rt
from gradc.codegen.cpu import CPU_MATH
from gradc.codegen.cpu import combine as cpu_combine
from gradc.codegen.cpu import scalar as cpu_scalar
from gradc.codegen.driver_rt import entry_address
from gradc.codegen.modules import load_module
from gradc.codegen.program import KERNEL_HEADER
from gradc.ops.registry import ELEMENTWISE, _OPS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECIAL = np.array([0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, 3.0, 1e-30, -1e-30, 1e30, -1e30, 0.999,
                    -0.999, 1e-40, np.nan, np.inf, -np.inf, 88.0, -88.0, 710.0, 1e-8])
# ops whose CPU math is outside what llvm_cpu compiles (those kernels go through Numba)
NUMBA_ONLY = {"hypot", "polygamma"}
ATTRS = {"tag": 0, "reason": "", "dtype": "float32", "n": 1}  # ops' attributes (not inputs)


def _op_statements(dtype):
    """[(name, output dtype, expression)] of every elementwise op's scalar math on x0, x1 (the
    floats) and c (a bool)."""
    out = []
    for name, op in sorted(_OPS.items()):
        if op.kind != ELEMENTWISE or op.scalar is None or name in NUMBA_ONLY:
            continue
        params = [p for p in list(inspect.signature(op.scalar).parameters)[2:]
                  if p not in ATTRS]
        if name == "astype":  # (not to an integer: NaN has none, LLVM's fptosi gives poison)
            for to in ("float64" if dtype == "float32" else "float32", "bool"):
                out.append((f"astype_{to}", to, op.scalar(CPU_MATH, np.dtype(to), "x0", dtype=to)))
            continue
        on_bools = name.startswith(("logical_", "bitwise_")) or name == "invert"  # (no floats)
        if name == "where":
            args = ["c", "x0", "x1"]
        elif on_bools:
            args = ["c", "d"][:len(params)]
        else:
            args = ["x0", "x1"][:len(params)]
        names = list(inspect.signature(op.scalar).parameters)[2:]
        try:
            expr = op.scalar(CPU_MATH, np.dtype("bool" if on_bools else dtype), *args,
                             **{k: ATTRS[k] for k in names if k in ATTRS})
        except (KeyError, TypeError, ValueError):
            continue
        if expr.startswith("f32(sp_") or expr.startswith("f64(sp_") or "sp_" in expr:
            continue
        boolean = name in ("equal", "not_equal", "less", "less_equal", "greater",
                           "greater_equal", "isnan", "isinf", "isfinite", "signbit") or on_bools
        out.append((name, "bool" if boolean else dtype, expr))
    return out


ARRAY = {"float32": "f32_array", "float64": "f64_array", "bool": "bool_array",
         "int64": "i64_array"}


def _ops_kernel(dtype, statements, reduce):
    """A loop kernel's text in loop_kernel's form: each statement's value stored to its own
    array; with `reduce`, a sum and a max of x0 as well (fast-math with reassociation)."""
    name = f"loop_ops_{dtype}{'_red' if reduce else ''}"
    params = ["n0", "p0", "p1", "p2", "p3"] + [f"q{i}" for i in range(len(statements))]
    lines = [f"    a0 = {ARRAY[dtype]}(p0, n0)", f"    a1 = {ARRAY[dtype]}(p1, n0)",
             "    a2 = bool_array(p2, n0)", "    a3 = bool_array(p3, n0)"]
    for i, (_, to, _) in enumerate(statements):
        lines.append(f"    o{i} = {ARRAY[to]}(q{i}, n0)")
    if reduce:
        params += ["r0", "r1"]
        lines += [f"    s0 = {ARRAY[dtype]}(r0, 1)", f"    s1 = {ARRAY[dtype]}(r1, 1)",
                  f"    acc0 = {'f32' if dtype == 'float32' else 'f64'}(0.0)",
                  "    for j in range(1):",
                  f"        s1[j] = {'f32' if dtype == 'float32' else 'f64'}(-np.inf)"]
    lines += ["    for i0 in range(n0):", "        x0 = a0[i0]", "        x1 = a1[i0]",
              "        c = a2[i0]", "        d = a3[i0]"]
    for i, (op, _, expr) in enumerate(statements):
        lines += [f"        t{i} = {expr}  # {op}", f"        o{i}[i0] = t{i}"]
    if reduce:
        red_max = SimpleNamespace(op="max", dtype=np.dtype(dtype))  # (cpu.py's form)
        lines += ["        acc0 = acc0 + x0  # sum",
                  f"        s1[0] = {cpu_combine(red_max, 's1[0]', 'x0')}  # max",
                  "    s0[0] = acc0"]
    options = "JIT_OPTIONS" if reduce else "dict(JIT_OPTIONS, fastmath=MAP_FASTMATH)"
    sig = ", ".join(["int64"] * len(params))
    return name, (f'@njit("void({sig})", **{options})\n'
                  f"def {name}({', '.join(params)}):\n" + "\n".join(lines) + "\n")


def _call(address, args):
    f = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p,
                         *[ctypes.c_int64] * len(args))(address)
    status = f(ctypes.byref(ctypes.c_int64()), ctypes.byref(ctypes.c_void_p()), *args)
    assert status == 0


POINTER_VIEWS = "from gradc.codegen.rt import _f32_ptr, _f64_ptr  # noqa: F401\n\n"


@pytest.mark.parametrize("dtype, pointers", [("float32", False), ("float64", False),
                                             ("float32", True)])
def test_every_op_gives_numbas_bits(dtype, pointers):
    statements = _op_statements(dtype)
    assert len(statements) > 50
    name, source = _ops_kernel(dtype, statements, reduce=True)
    if pointers:  # the float buffers as raw pointers (rt._f32_ptr), indexed without wrapping
        name, source = name + "_ptr", source.replace(name, name + "_ptr")
        for view, ptr in (("f32_array", "_f32_ptr"), ("f64_array", "_f64_ptr")):
            source = re.sub(rf"{view}\((\w+), \w+\)", rf"{ptr}(\1)", source)
    llvm_cpu.kernel_module(source, "probe")  # raises Unsupported if any op is outside
    direct = llvm_cpu.load_kernels({name: source}, None)[name]
    module = load_module(f"gradc_test_{name}",
                         KERNEL_HEADER.format(version="test") + POINTER_VIEWS + source)
    numba = entry_address(getattr(module, name))

    rng = np.random.default_rng(0)
    x0 = np.concatenate([SPECIAL, rng.standard_normal(45) * 3]).astype(dtype)
    x1 = np.concatenate([rng.permutation(SPECIAL), rng.standard_normal(45)]).astype(dtype)
    c, d = rng.random(x0.size) < 0.5, rng.random(x0.size) < 0.5
    results = []
    for address in (numba, direct):
        outs = [np.zeros(x0.size, to) for _, to, _ in statements]
        outs += [np.zeros(1, dtype), np.zeros(1, dtype)]  # the sum and the max
        args = [x0.size] + [a.ctypes.data for a in (x0, x1, c, d)] + [o.ctypes.data for o in outs]
        _call(address, args)
        results.append(outs)
    for (op, _, expr), a, b in zip(statements + [("sum", 0, ""), ("max", 0, "")], *results):
        assert _bits(a) == _bits(b), f"{op} ({expr}) in {dtype}: {a} != {b}"


UNDERFLOW = np.array([-np.inf, -1e30, -1420.0, -1418.5, -1418.0, -1000.0, -800.0, -746.0, -745.0,
                      -200.0, -176.5, -176.0, -175.99, -175.0, -150.0, -104.5, -104.0, -103.98,
                      -103.9, -100.0, -90.0, -87.5, -87.0, -50.0, -1.0, 0.0, 1.0, 88.0, 89.0,
                      np.nan, np.inf])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_exp_as_arithmetic_is_within_an_ulp_and_alike_on_both_routes(dtype):
    # rt.emit_exp (the kernels' exp): the same bits from Numba's route and the direct one; NaN,
    # inf, 0 and subnormal results where NumPy's are; within one ulp of e^x (long double) across
    # the float's whole range, masked softmax lanes (-inf, -1e30) included
    exp = _OPS["exp"]
    node = SimpleNamespace(op="exp", opdef=exp, attr={}, inputs=[],
                           output=SimpleNamespace(dtype=np.dtype(dtype)))
    expr = cpu_scalar(SimpleNamespace(node=node, args=["x0"]))
    name, source = _ops_kernel(dtype, [("exp", dtype, expr)], reduce=False)
    name, source = name + "_exp", source.replace(name, name + "_exp")
    direct = llvm_cpu.load_kernels({name: source}, None)[name]
    module = load_module(f"gradc_test_{name}", KERNEL_HEADER.format(version="test") + source)
    edge = np.log(np.finfo(dtype).max)
    x = np.concatenate([np.tile(UNDERFLOW, 5), np.random.default_rng(5).uniform(
        -1.2 * edge, 1.1 * edge, 20_000), np.linspace(-0.35, 0.35, 2_001)]).astype(dtype)
    results = []
    for address in (entry_address(getattr(module, name)), direct):
        out = np.ones(x.size, dtype)
        _call(address, [x.size] + [a.ctypes.data for a in (x, x, x > 0, x > 0, out)])
        results.append(out)
    assert _bits(results[0]) == _bits(results[1])
    got = results[1]
    with np.errstate(over="ignore", under="ignore"):
        want = np.exp(x)
        exact = np.exp(x.astype(np.longdouble))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(got == 0, want == 0)
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    finite = np.isfinite(want) & (want != 0)
    ulps = np.abs(got[finite] - exact[finite]) / np.spacing(want[finite]).astype(np.longdouble)
    subnormal = want[finite] < np.finfo(dtype).tiny  # (spacing there: the smallest subnormal)
    assert ulps[~subnormal].max() <= 1.0 and ulps[subnormal].max() <= 1.0


def test_a_masked_softmax_exp_is_numpys():
    # causal masks put -inf in exp's argument: arithmetic exp (rt.fexp) gives 0 there at a
    # normal lane's cost (libmvec's vector exp took such lanes through scalar expf)
    def f(x):
        s = np.where(np.tril(np.ones((4, 4), bool)), x, -np.inf)
        return np.exp(s - s.max(axis=1, keepdims=True)), np.exp(x)

    x = np.random.default_rng(4).standard_normal((4, 4)).astype(np.float32)
    jf = gradc.jit(f)
    for got, want in zip(jf(x), f(x)):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    lines = [line for source in jf.last_compiled().program.kernel_modules.values()
             for line in source.splitlines() if line.endswith("# exp")]
    assert len(lines) == 2 and all("fexp(" in line and "np.exp" not in line for line in lines)


def test_max_and_min_reductions_vectorize_and_propagate_nan():
    # codegen/cpu.py folds a float max/min with rt.fmaximum/fminimum (LLVM's maximum/minimum,
    # vectorized) over a where's output too; NaN anywhere in a row makes the row's answer NaN
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 67)).astype(np.float32)
    x[1, 5], x[2, 66], x[3, :] = np.nan, np.nan, -np.inf
    x[4, :] = 0.0
    x[4, ::3] = -0.0
    mask = rng.random((6, 67)) < 0.7
    mask[5] = False

    def f(x, mask):
        masked = np.where(mask, x, -np.inf)
        return np.max(masked, axis=1), np.min(np.where(mask, x, np.inf), axis=1), np.max(x)

    with np.errstate(invalid="ignore"):
        for got, want in zip(gradc.jit(f)(x, mask), f(x, mask)):
            np.testing.assert_array_equal(got, want)
    source = "".join(gradc.jit(f).lower(x, mask).program.kernel_modules.values())
    assert "fmaximum(" in source and "fminimum(" in source


def test_a_broadcast_operand_is_read_once_per_outer_iteration():
    # codegen/cpu.py reads an operand that only outer loops move (a per-channel weight) in
    # that loop, not per element; an array the kernel also writes (an in-place update) stays
    # in the innermost loop. Same values as NumPy on both routes.
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 4, 5, 7)).astype(np.float32)
    w, b = rng.standard_normal((2, 4)).astype(np.float32)

    def f(x, w, b):
        return np.maximum(x * w[:, None, None] + b[:, None, None], 0.0) * x[:, :1]

    want = f(x, w, b)
    for route in ("numba", "llvm"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("GRADC_KERNELS", route)
            np.testing.assert_allclose(gradc.jit(f)(x, w, b), want, rtol=1e-6)
    (source,) = [ks.source for ks in gradc.jit(f).lower(x, w, b).program.kernels
                 if ks.name.startswith("loop_")]
    body = source[source.index("for i0"):]
    innermost = body[body.rindex("range("):]
    assert "a1[" in body and "a1[" not in innermost  # w, read once per channel
    assert "a0[" in innermost  # x, per element

    step = gradc.train_step(lambda p, x: np.sum((x * p["w"][:, None, None]) ** 2),
                            gradc.optim.SGD(0.1))
    p = {"w": w.copy()}
    grad = np.sum(2 * (x * w[:, None, None]) * x, axis=(0, 2, 3))
    step(p, x)
    np.testing.assert_allclose(p["w"], w - 0.1 * grad, rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_transposing_map_walks_tiles_with_numpys_values(monkeypatch, dtype):
    # codegen/cpu.py _transpose_tile: a map that reads rows and writes columns walks its last
    # two loops in tiles of a cache line (W8's transposed weight, 190 -> 30 us). Edges that
    # are not multiples of the tile, a batch axis outside, a transposed read (the loop order
    # puts the contiguous load innermost) and a transposed read into a sum; both routes, the
    # tiled loops go direct.
    rng = np.random.default_rng(5)

    def transposed(x, y):
        return np.swapaxes(x, -1, -2) * 2.0 + y

    def summed(x, y):
        return np.sum(np.swapaxes(x, -1, -2) * y, axis=-1)

    def tiled(f, x, y):
        return [ks for ks in gradc.jit(f).lower(x, y).program.kernels if "tiles" in ks.source]

    for shape in [(37, 53), (3, 40, 33), (17, 17)]:
        x = rng.standard_normal(shape).astype(dtype)
        y = rng.standard_normal(shape[-1:]).astype(dtype)[:, None]
        for route in ("numba", "llvm"):
            monkeypatch.setenv("GRADC_KERNELS", route)
            for f in (transposed, summed):
                np.testing.assert_allclose(gradc.jit(f)(x, y), f(x, y), rtol=1e-5, atol=1e-5)
        kernels = tiled(transposed, x, y)
        assert kernels and all(f"gradc_{ks.name}" in llvm_cpu._loaded for ks in kernels)
        assert not tiled(summed, x, y)  # (a reduction keeps its loops)
    edge = 64 // np.dtype(dtype).itemsize  # an edge of one cache line is one tile: no tiles
    x = rng.standard_normal((edge, 40)).astype(dtype)
    assert not tiled(transposed, x, x[0, :, None])


def _bits(a):
    """The array's bytes, every NaN made the same: which NaN an operation of two NaNs returns
    is the machine's choice (x86 returns its first operand's, and LLVM may swap the operands
    of an add), not the arithmetic's."""
    if a.dtype.kind == "f":
        a = np.where(np.isnan(a), np.nan, a).astype(a.dtype)
    return a.tobytes()


def _model(x, w, v):
    # a library kernel (Numba); a loop kernel with scipy's erf (Numba: its special math is
    # outside llvm_cpu); and loop kernels direct (the softmax-like sums, the backward's)
    s = erf(np.tanh(x @ w)) * v
    return np.sum(np.log(np.sum(np.exp(s), axis=1)))


def test_a_program_mixes_both_routes(monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 7)).astype(np.float32)
    w = rng.standard_normal((7, 9)).astype(np.float32)
    v = rng.standard_normal(9).astype(np.float32)
    outs = {}
    for route in ("numba", "llvm"):
        monkeypatch.setenv("GRADC_KERNELS", route)
        f = gradc.value_and_grad(_model, argnums=(1, 2))
        value, grads = f(x, w, v)
        outs[route] = [np.asarray(value)] + [np.array(g) for g in grads]
        program = f.last_compiled().lowered.program
    loops = [f"gradc_{ks.name}" for ks in program.kernels if ks.name.startswith("loop_")]
    direct = [n for n in loops if n in llvm_cpu._loaded]
    assert direct and len(direct) < len(loops), (direct, loops)
    for a, b in zip(outs["numba"], outs["llvm"]):
        assert _bits(a) == _bits(b)
    np.testing.assert_allclose(outs["llvm"][0], _model(x.astype(np.float64), w, v), rtol=1e-4)


def _movements(x, i):
    # library kernels in the subset llvm_cpu compiles: concatenate, the slices' gradients, the
    # products' BLAS calls, sums of products accumulated (addmm), a gather's index check
    h = np.concatenate([np.tanh(x[:, :3]), x[:, 1:] * 2, x[::-1, ::2]], axis=1)
    g = np.take_along_axis(h, i, axis=1)
    big = np.tile(h, (2, 3))  # (12, 39): its products are BLAS calls, the small ones loops
    return (np.sum(np.stack([h[:, :4], h[:, 2:6] ** 2]) * 1.5) + np.sum(g * g) + np.sum(h @ h.T)
            + np.sum(np.tanh(big.T @ big)) + np.sum(np.stack([big, big * 2]) @ np.stack([big.T, -big.T]))
            + np.sum(np.tanh(big.T @ np.sin(big) + big.T @ np.cos(big))) + np.sum(h @ h.T + h @ (h * h).T))


def test_library_kernels_in_the_subset_go_direct_with_numbas_bits(monkeypatch):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 7))
    i = rng.integers(0, 13, (6, 5))
    outs = {}
    for route in ("numba", "llvm"):
        monkeypatch.setenv("GRADC_KERNELS", route)
        f = gradc.value_and_grad(_movements)
        outs[route] = [np.asarray(a) for a in f(x, i)]
        sources = f.last_compiled().lowered.program.kernel_modules
        names = list(sources)
    library = [n for n in names if not n.startswith("gradc_loop_")]
    direct = [n for n in library if n in llvm_cpu._loaded]
    assert any("concatenate" in n for n in direct) and any("matmul" in n for n in direct)
    assert any("bmm" in n for n in direct) and sum("sgemm" in s or "dgemm" in s for n, s in
                                                    sources.items() if n in direct) >= 2
    assert any("dgemm_add" in s for n, s in sources.items() if n in direct)  # (BLAS-sized)
    assert any("addmm" in n and "gemm" not in s for n, s in sources.items() if n in direct)
    assert direct == library  # (the gathers too, with their index checks)
    for a, b in zip(outs["numba"], outs["llvm"]):
        assert _bits(a) == _bits(b)
    np.testing.assert_allclose(outs["llvm"][0], _movements(x, i), rtol=1e-12)


INTEGERS = textwrap.dedent("""
    @njit("void(int64, int64, int64, int64)", **JIT_OPTIONS)
    def integers(p_x, p_out, n, mode):
        x = i64_array(p_x, n)
        out = i64_array(p_out, 12 * n)
        f = f64_array(p_out, 12 * n)
        lo, hi = -3, n - 3
        t4 = (x[0], x[1], x[2], x[3], )
        for i in range(n):
            a, b = x[i], x[n - 1 - i]
            a, b = b, a
            out[i] = a // b
            out[n + i] = a % b
            a, b = a % 1000, b % 997  # (small: no signed overflow below, which LLVM takes as
            # undefined behaviour: either route could give anything)
            out[2 * n + i] = min(a, b, 5) + max(b, -7)
            s = u = a - b
            out[3 * n + i] = s * u
            inside = lo <= a < hi
            both = (a > 0) | (b > 0)
            out[4 * n + i] = (8 if inside else 0) + (2 if both and a != b else 1)
            out[5 * n + i] = t4[i % 8 - 4]
            q = np.uint64(a * 3 + 100)
            out[6 * n + i] = q + np.uint64(i) * np.uint64(2)
            acc = np.uint64(0)
            for k in range(np.uint64(b - a)):  # (a "negative" unsigned count: no iteration)
                acc += k + q
            out[7 * n + i] = acc
            y = f64(a) / f64(3.0)
            f[8 * n + i] = max(y, f64(0.5), -y) + min(np.sign(y), y // f64(2.0), y % f64(-1.5))
            h = i32(x[i])  # (the low 32 bits)
            out[9 * n + i] = max2(i64(h), b) - min2(a, i64(h) * 3)
        if mode == 1:
            out[0] = t4[mode + 6]
        if mode == 2:
            raise IndexError('gradc: index out of range in take (here)')
""")


def _status_and_exception(address, args):
    """The kernel's status and, if it raised, (exception class, args) from its excinfo."""
    import pickle
    excinfo = ctypes.c_void_p()
    f = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p,
                         *[ctypes.c_int64] * len(args))(address)
    status = f(ctypes.byref(ctypes.c_int64()), ctypes.byref(excinfo), *args)
    if status == 0:
        return status, None
    # Numba's excinfo: {i8* pickled (class, args, location), i32 its size, ...}
    data = ctypes.cast(excinfo, ctypes.POINTER(ctypes.c_void_p))[0]
    size = ctypes.cast(excinfo.value + 8, ctypes.POINTER(ctypes.c_int32))[0]
    return status, pickle.loads(ctypes.string_at(data, size))[:2]  # (not Numba's location)


def test_statements_and_integer_math_give_numbas_bits_and_exceptions():
    llvm_cpu.kernel_module(INTEGERS, "probe")  # raises Unsupported if any of it is outside
    direct = llvm_cpu.load_kernels({"integers": INTEGERS}, None)["integers"]
    module = load_module("gradc_test_integers", KERNEL_HEADER.format(version="test") + INTEGERS)
    numba = entry_address(module.integers)
    lo = np.iinfo(np.int64).min
    x = np.array([7, -7, 0, 3, -3, 1, lo, -1, 5, -5, 0, 2, -2, 9, -9, 4, 12, 2, 6, -1],
                 np.int64)
    results = {}
    for route, address in (("numba", numba), ("llvm", direct)):
        out = np.zeros(12 * x.size, np.int64)
        runs = [_status_and_exception(address, [x.ctypes.data, out.ctypes.data, x.size, mode])
                for mode in (0, 1, 2)]
        results[route] = out.tobytes(), runs
    assert results["llvm"] == results["numba"]
    out, runs = results["llvm"]
    assert runs[0] == (0, None)
    assert runs[1][1] == (IndexError, ("tuple index out of range",))
    assert runs[2][1] == (IndexError, ("gradc: index out of range in take (here)",))
    n, got = x.size, np.frombuffer(out, np.int64)
    a, b = x[::-1], x  # (swapped)
    with np.errstate(all="ignore"):
        expect = np.where(b == 0, 0, a // np.where(b == 0, 1, b))
    expect[(a == lo) & (b == -1)] = 0  # (Numba's, where Python's is out of range)
    np.testing.assert_array_equal(got[:n], expect)
    with np.errstate(all="ignore"):
        expect = np.where(b == 0, 0, a % np.where(b == 0, 1, b))  # (the divisor's sign)
    np.testing.assert_array_equal(got[n:2 * n], expect)


def _convnet(params, x, y, rows):
    # conv2d and its weight gradient, a padded, strided max pool (the argmax kernel's border
    # loops, ties from the relu), gathers with negative indices and a weight read as slices
    # (the sum of their gradients)
    w = params["w"]
    h = gradc.nn.conv2d(x, w[:, :, :, :3] + w[:, :, :, 1:], params["b"])
    h = gradc.nn.max_pool2d(gradc.nn.relu(h), 3, stride=2, padding=1)
    logits = gradc.nn.flatten(h) @ params["W"] + np.take(params["E"], rows, axis=0)
    return gradc.nn.cross_entropy(logits, y)


def test_convolutions_pooling_and_gathers_go_direct_with_numbas_bits_and_errors(monkeypatch):
    rng = np.random.default_rng(3)
    params = {"w": rng.standard_normal((3, 2, 3, 4)).astype(np.float32),
              "b": rng.standard_normal(3).astype(np.float32),
              "W": rng.standard_normal((3 * 4 * 4, 5)).astype(np.float32),
              "E": rng.standard_normal((6, 5)).astype(np.float32)}
    x = rng.standard_normal((4, 2, 9, 9)).astype(np.float32)
    x[0, 0, :4, :4] = 1.0  # (ties in the pooling windows)
    y, rows = np.array([0, 4, 1, 2]), np.array([5, -6, 0, -1])
    outs, errors = {}, {}
    for route in ("numba", "llvm"):
        monkeypatch.setenv("GRADC_KERNELS", route)
        f = gradc.value_and_grad(_convnet)
        value, grads = f(params, x, y, rows)
        outs[route] = [np.asarray(value)] + [np.array(grads[k]) for k in sorted(grads)]
        with pytest.raises(gradc.IndexOutOfRangeError) as error:
            f(params, x, y, np.array([5, -7, 0, -1]))
        errors[route] = str(error.value)
        sources = f.last_compiled().lowered.program.kernel_modules
    assert all(n in llvm_cpu._loaded for n in sources), [n for n in sources
                                                         if n not in llvm_cpu._loaded]
    assert any("pool_argmax" in n for n in sources) and any("unslice" in n for n in sources)
    for a, b in zip(outs["numba"], outs["llvm"]):
        assert _bits(a) == _bits(b)
    assert errors["llvm"] == errors["numba"] and "rows holds an index outside" in errors["llvm"]


def _factorizations(s, a, b):
    sign, logdet = np.linalg.slogdet(a)
    return ((np.linalg.cholesky(s), np.linalg.solve(a, b), sign, logdet) + tuple(np.linalg.eigh(s))
            + tuple(np.linalg.svd(b)) + tuple(np.linalg.qr(b, mode="complete")))


def _lapack_inputs(dtype):
    """Batches of 3 with what LAPACK refuses: a matrix that is not positive definite, a
    singular one; the NaN above the diagonal is never read."""
    rng = np.random.default_rng(4)
    m = rng.standard_normal((3, 4, 4))
    s = m @ np.swapaxes(m, 1, 2) + 4 * np.eye(4)
    s[1] = -s[1]
    s[2, 0, 3] = np.nan
    a = rng.standard_normal((3, 4, 4))
    a[1, 2] = 0.0
    return s.astype(dtype), a.astype(dtype), rng.standard_normal((3, 4, 2)).astype(dtype)


def _numpys(fun, *args):
    """NumPy's answer per batch element, NaN where it refuses."""
    out = []
    for t in range(args[0].shape[0]):
        try:
            out.append(np.asarray(fun(*(x[t] for x in args))))
        except np.linalg.LinAlgError:
            out.append(np.full(args[-1].shape[1:], np.nan, args[0].dtype))
    return np.stack(out)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_lapack_kernels_go_direct_with_numbas_and_numpys_bits(monkeypatch, dtype):
    """cholesky, solve, slogdet, eigh, svd and qr call NumPy's OpenBLAS as np.linalg does (in double, column-
    major): NumPy's bits, float32 too; NaN where LAPACK refuses, slogdet's (0, -inf) for a
    singular matrix."""
    if gradc.codegen.rt.BLAS != "openblas":
        pytest.skip("NumPy without its OpenBLAS: Numba's np.linalg")
    s, a, b = _lapack_inputs(dtype)
    outs = {}
    for route in ("numba", "llvm"):
        monkeypatch.setenv("GRADC_KERNELS", route)
        f = gradc.jit(_factorizations)
        outs[route] = [np.array(x) for x in f(s, a, b)]
        sources = f.last_compiled().lowered.program.kernel_modules
    assert [n for n in sources if n not in llvm_cpu._loaded] == []
    routines = ("dpotrf", "dgesv", "dgetrf", "dsyevd", "dgesdd", "dorgqr")
    assert sum(r in text for r in routines for text in sources.values()) == len(routines)
    for x, y in zip(outs["numba"], outs["llvm"]):
        assert _bits(x) == _bits(y)
    lower = np.tril(s) + np.swapaxes(np.tril(s, -1), 1, 2)  # (what cholesky reads)
    want = [_numpys(np.linalg.cholesky, lower), _numpys(np.linalg.solve, a, b),
            *(np.array(v, dtype) for v in zip(*(np.linalg.slogdet(m) for m in a))),
            *np.linalg.eigh(lower), *np.linalg.svd(b), *np.linalg.qr(b, mode="complete")]
    for got, w in zip(outs["llvm"], want):
        assert got.dtype == dtype and _bits(got) == _bits(w.astype(dtype))
    assert np.isnan(outs["llvm"][0][1]).all() and np.isnan(outs["llvm"][1][1]).all()
    assert outs["llvm"][2][1] == 0 and outs["llvm"][3][1] == -np.inf


CHILD = textwrap.dedent("""
    import sys
    import numpy as np, gradc
    from gradc.codegen import driver_rt, llvm_cpu, llvm_expr, pool_rt
    f = gradc.jit(lambda x, i, w: np.sum(np.tanh(x) * np.exp(-x * x))
                  + np.max(np.sqrt(x * x + 1)) + np.sum(np.sign(x)[i]) + np.sum(w @ w))
    x = np.linspace(-2, 2, 37).astype(np.float32)
    w = np.linspace(-1, 1, 48 * 48).astype(np.float32).reshape(48, 48)  # (a BLAS product)
    value = float(f(x, np.array([3, -1, 7]), w))
    # every kernel direct, and the loop that calls them: Numba compiled nor loaded anything,
    # and a gather's index check and np.sign did not set up Numba's target context (~0.1 s)
    assert [m for m in sys.modules if m.startswith("gradc_") and "driver" not in m] == []
    assert llvm_expr.numba_context.cache_info().currsize == 0
    stats = {"runner": driver_rt, "pool": pool_rt, "direct": llvm_cpu}[sys.argv[1]].STATS
    print(value, stats["compiled"], stats["loaded"])
""")


def _child(cache, library):
    env = dict(os.environ, GRADC_CACHE_DIR=str(cache), GRADC_KERNELS="llvm",
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", CHILD, library], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    value, compiled, loaded = out.stdout.split()
    return float(value), int(compiled), int(loaded)


@pytest.mark.parametrize("library", ["direct", "runner", "pool"])
def test_the_disk_cache_reloads_and_a_damaged_file_is_compiled_again(tmp_path, library):
    """The kernels' library, the loop's that calls them (codegen/driver_rt.py) and the
    products' thread pool's (codegen/pool_rt.py)."""
    if library == "pool" and rt.BLAS != "openblas":
        return
    first = _child(tmp_path, library)
    assert first[1:] == (1, 0)
    assert _child(tmp_path, library) == (first[0], 0, 1)  # a fresh process: from the disk cache
    (path,) = list(tmp_path.rglob(f"gradc_{library}_*.bin"))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # damaged machine code: must not run
    path.write_bytes(bytes(data))
    assert _child(tmp_path, library) == (first[0], 1, 0)
    assert path.read_bytes() != bytes(data)  # written again, and loaded by the next process
    assert _child(tmp_path, library) == (first[0], 0, 1)


def test_unknown_route_says_what_to_set(monkeypatch):
    monkeypatch.setenv("GRADC_KERNELS", "fast")
    with pytest.raises(gradc.GradcError, match="GRADC_KERNELS='fast'"):
        llvm_cpu.route()


@pytest.mark.parametrize("source, independent", [
    ("t = a[i]\n    b[i] = t * 2.0", True),
    ("t = a[i]\n    t = t + 1.0\n    b[j * n + i] = np.sqrt(t)", True),
    ("b[i + 1] = a[i]", True),
    ("acc = acc + a[i]", False),  # a sum: vectorized, its order would change
    ("acc += a[i]", False),
    ("s[0] = max2(s[0], a[i])", False),  # the same element every iteration
    ("b[i] = b[i + 1]", False),  # reads the element the next iteration writes
    ("b[i] = a[i]\n    b[i + 1] = a[i]", False),  # two iterations write one element
    ("b[idx[i]] = a[i]", False),  # a scatter
    ("b[2 * i] = a[i]", False),
    ("b[i] = np.exp(a[i])", False),  # libmvec's exp rounds otherwise than libm's
    ("t = a[i]\n    if t > 0.0:\n        u = t\n    b[i] = u", False),  # u from an earlier one
    ("for j in range(m):\n        b[j] = a[j]", False),  # not innermost
])
def test_which_loops_llvm_may_take_as_independent(source, independent):
    """llvm_cpu marks a loop's iterations independent (no runtime overlap checks, so a wide
    horizontally fused loop compiles ~4x faster and vectorizes) only where that is so and
    vectorizing it cannot change a bit (an AOT module, through Numba, must compute the same)."""
    loop = ast.parse(f"for i in range(n):\n    {source}").body[0]
    assert llvm_cpu._independent_iterations(loop) is independent
