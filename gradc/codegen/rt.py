"""Helpers that generated kernels use: raw addresses as arrays, NaN-propagating max/min, and the
fast-math flags. Kernels take buffer addresses (plain integers) instead of arrays, so calling one
costs well under a microsecond and allocates nothing (unboxing a NumPy array allocates a Numba
MemInfo on every call).

Matrix products (`sgemm`, `dgemm` below) call gradc's own product (gemm_rt.py) where the CPU has
AVX-512, else NumPy's own OpenBLAS, so gradc and the user's NumPy code share one BLAS and one
thread pool; matrix-vector products and LAPACK are always OpenBLAS's.

`gradc compile` copies this file's source into standalone modules, so it imports only NumPy and
Numba (and llvmlite, which Numba brings).
"""
import ctypes
import glob
import math
import os

import llvmlite.binding
import llvmlite.ir
import numpy as np
from numba import carray, njit, types
from numba.extending import intrinsic, overload

from .gemm_rt import GEMM_SYMBOLS, usable  # (a standalone module has gemm_rt.py's text above)

# Fast-math without 'nnan' and 'ninf': vectorized reductions and reassociation are allowed, but
# NaN and Inf keep their meaning, so check_finite and NaN propagation still work. Without
# 'arcp' too: it let LLVM turn y / sqrt(x) into y * rsqrt(x), a hardware estimate refined by a
# Newton step, NaN at x = 0 and inf and -inf at subnormals in float32 (NumPy: inf, 0, 1e20), the
# gradient of sqrt alike; and a division by a constant into a product by its rounded
# reciprocal, a last bit off NumPy's (np.round(x, 1) gave 0.30000000000000004). Without
# 'contract': NumPy rounds every product, and a fused multiply-add does not, so where products
# cancel it gave their rounding error for NumPy's exact 0: sqrt(a*a - b*b) NaN at a == b, a
# variance E[x^2] - E[x]^2 below zero, 1/(a*c - b*c) finite for inf, a softmax's max shift of a
# scaled row 1e23 (fuzz39e, fuzz38e).
FASTMATH = {"nsz", "afn", "reassoc"}
# Kernels with no reduction gain nothing from reassociation (a map vectorizes without it) and
# could lose precision to it: LLVM turns the stable log-softmax's (x - max) - log(sum) into
# x - (max + log(sum)), hoisted out of the loop, which cancels badly at |x| ~ 1000 in float32.
MAP_FASTMATH = FASTMATH - {"reassoc"}
JIT_OPTIONS = dict(nogil=True, cache=True, fastmath=FASTMATH, error_model="numpy")
# functions kernels call: compiled into each kernel that calls them (and so cached with it); not
# cached on their own, which would write beside this file (in site-packages, or an AOT module)
CALLEE_OPTIONS = dict(nogil=True, fastmath=FASTMATH, error_model="numpy")

f32, f64, i64, i32, i16, i8, u8, u16, bool_ = (np.float32, np.float64, np.int64, np.int32,
                                               np.int16, np.int8, np.uint8, np.uint16, np.bool_)


def _pointer_intrinsic(numba_type):
    @intrinsic
    def as_pointer(typingctx, address):
        sig = types.CPointer(numba_type)(types.intp)

        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], context.get_value_type(types.CPointer(numba_type)))

        return sig, codegen

    return as_pointer


_f32_ptr = _pointer_intrinsic(types.float32)
_f64_ptr = _pointer_intrinsic(types.float64)
_i64_ptr = _pointer_intrinsic(types.int64)
_i32_ptr = _pointer_intrinsic(types.int32)
_bool_ptr = _pointer_intrinsic(types.boolean)
_i16_ptr = _pointer_intrinsic(types.int16)
_i8_ptr = _pointer_intrinsic(types.int8)
_u16_ptr = _pointer_intrinsic(types.uint16)
_u8_ptr = _pointer_intrinsic(types.uint8)


def _array_view(as_pointer):
    """`<dtype>_array(address, n)`: the n elements at a buffer address, as an array (kernels
    take addresses, not arrays: see the module docstring)."""
    @njit
    def array(address, n):
        return carray(as_pointer(address), (n,))

    return array


f32_array, f64_array, i64_array, i32_array, bool_array = map(
    _array_view, (_f32_ptr, _f64_ptr, _i64_ptr, _i32_ptr, _bool_ptr))
i16_array, i8_array, u16_array, u8_array = map(_array_view, (_i16_ptr, _i8_ptr, _u16_ptr, _u8_ptr))

# `<dtype>_ptr(address)`: a buffer as a raw pointer, indexed like an array (`p[i]`, no bounds, no
# negative-index wrap). Sequential loop kernels use these: a pointer types and lowers in a
# fraction of a carray's work, ~35% of such a kernel's Numba compile time. (bool buffers keep
# bool_array: NumPy stores a bool in a byte, Numba's pointer would store one bit's register.)
f32_ptr, f64_ptr, i64_ptr, i32_ptr = _f32_ptr, _f64_ptr, _i64_ptr, _i32_ptr
i16_ptr, i8_ptr, u16_ptr, u8_ptr = _i16_ptr, _i8_ptr, _u16_ptr, _u8_ptr


def emit_freeze(builder, value):
    """LLVM's `freeze` of a value (llvmlite's builder has none): the same value, through which
    LLVM does not reason. llvm_cpu.py emits `freeze(x)` with it too."""
    inst = llvmlite.ir.instructions.Instruction(builder.block, value.type, "freeze", [value])
    builder._insert(inst)
    return inst


@intrinsic
def freeze(typingctx, x):
    """`x`, which LLVM's simplifications cannot trace back to how it was made: the guarded
    argument of exp (codegen/cpu.py `scalar`) stays guarded."""
    if not isinstance(x, types.Float):
        return None
    return x(x), lambda context, builder, signature, args: emit_freeze(builder, args[0])


# e^x as arithmetic (emit_exp): x = k ln2 + r, |r| <= ln2/2, e^x = p(r) 2^k. Per type: the
# clamp (beyond it e^x is inf or 0 alike; `low` is where k = -2 bias, whose half 2^(k/2) is
# exactly 0.0, so that a lane far below the float's range, a causal mask's exp(-inf), makes its
# 0 with no subnormal on the way, which this Zen 5's FPU takes a slow path for: 131K exps of
# -inf took 62 us against 28 of -50 when clamped at the float's bound, -104; a lane between
# the two still takes it), ln2 in two parts (k * hi exact for every k reached),
# and p's coefficients, constant term first: for float32 a least-squares fit on Chebyshev nodes
# (relative error 3.6e-9, against float32's 6e-8), for float64 Taylor's 1/n! to n = 13 (2e-18).
EXP_ARITHMETIC = {
    "float": dict(low=-176.0, high=88.75, ln2_hi=0.693359375,
                  ln2_lo=-2.12194440e-4, int_bits=32, bits=23, bias=127,
                  poly=(1.0, 1.0, 0.49999988595112765, 0.16666518459980317, 0.04166953310922207,
                        0.008368916341378523, 0.0013751407895950859)),
    "double": dict(low=-1418.5, high=709.8, ln2_hi=0.6931471803691238,
                   ln2_lo=1.9082149292705877e-10, int_bits=64, bits=52, bias=1023,
                   poly=tuple(1.0 / math.factorial(n) for n in range(14))),
}


def emit_exp(builder, x):
    """e^x of a float or double `x` as straight-line arithmetic, which LLVM vectorizes: no call,
    so no slow lanes (libmvec's vector exp takes every lane below ~-87, a causal softmax's masked
    exp(-inf), through scalar expf one at a time: a loop 5-15x slower than NumPy's). Within 2 ulp
    of e^x; inf above the float's range, 0 below it, NaN for NaN. The same instructions on both
    of gradc's routes (fexp below, llvm_cpu.py), so vector and scalar loops agree to the bit."""
    ty = x.type
    c = EXP_ARITHMETIC[str(ty)]
    const = lambda v: llvmlite.ir.Constant(ty, v)  # noqa: E731
    fma = builder.module.declare_intrinsic("llvm.fma", [ty],
                                           llvmlite.ir.FunctionType(ty, [ty, ty, ty]))
    rint = builder.module.declare_intrinsic("llvm.rint", [ty], llvmlite.ir.FunctionType(ty, [ty]))
    int_ty = llvmlite.ir.IntType(c["int_bits"])
    clamped = builder.select(builder.fcmp_ordered(">", x, const(c["high"])), const(c["high"]), x)
    clamped = builder.select(builder.fcmp_ordered("<", clamped, const(c["low"])),
                             const(c["low"]), clamped)  # (NaN passes both: restored below)
    k = builder.call(rint, [builder.fmul(clamped, const(1.4426950408889634))])  # (x / ln2)
    r = builder.call(fma, [k, const(-c["ln2_hi"]), clamped])
    r = builder.call(fma, [k, const(-c["ln2_lo"]), r])
    p = const(c["poly"][-1])
    for coefficient in reversed(c["poly"][:-1]):
        p = builder.call(fma, [p, r, const(coefficient)])
    n = builder.fptosi(k, int_ty)  # (2^k in two halves: each a normal number from -k's 2^-150
    half = builder.ashr(n, llvmlite.ir.Constant(int_ty, 1))  # to k's 2^128)

    def power_of_two(m):
        biased = builder.add(m, llvmlite.ir.Constant(int_ty, c["bias"]))
        return builder.bitcast(builder.shl(biased, llvmlite.ir.Constant(int_ty, c["bits"])), ty)

    y = builder.fmul(emit_freeze(builder, builder.fmul(p, power_of_two(half))),  # (freeze: not
                     power_of_two(builder.sub(n, half)))  # reassociated into p * 2^k, inf at k=128)
    return builder.select(builder.fcmp_unordered("uno", x, x), x, y)


@intrinsic
def fexp(typingctx, x):
    """e^x of a float (emit_exp): the loop kernels' exp."""
    if not isinstance(x, types.Float):
        return None
    return x(x), lambda context, builder, signature, args: emit_exp(builder, args[0])


def _ieee_extremum(name):
    """`fmaximum(a, b)`, `fminimum(a, b)` of two floats: LLVM's llvm.maximum/minimum (NaN
    propagates, -0 < +0). LLVM vectorizes a reduction through them but not through max2's
    compare-and-select, so reductions use these (codegen/cpu.py); llvm_cpu.py emits the same."""
    @intrinsic
    def extremum(typingctx, a, b):
        if not (isinstance(a, types.Float) and a == b):
            return None

        def codegen(context, builder, signature, args):
            ty = args[0].type
            fn = builder.module.declare_intrinsic(f"llvm.{name}", [ty],
                                                  llvmlite.ir.FunctionType(ty, [ty, ty]))
            return builder.call(fn, args)

        return a(a, b), codegen

    return extremum


fmaximum, fminimum = _ieee_extremum("maximum"), _ieee_extremum("minimum")


@intrinsic
def radd(typingctx, a, b):
    """`a + b` of two floats that LLVM may reassociate: a loop kernel's sum accumulates through
    it, so LLVM vectorizes the sum, while the kernel's other arithmetic (MAP_FASTMATH) keeps the
    order written (with the whole kernel reassociable, (x + c) - c fused into a sum became x, and
    a log-softmax summed into a loss lost its stable form). llvm_cpu.py emits the same."""
    if not (isinstance(a, types.Float) and a == b):
        return None
    return a(a, b), lambda context, builder, signature, args: builder.fadd(
        *args, flags=("reassoc",))


# libm's cbrt: Numba's np.cbrt is a double-precision pow with branches, 60x slower than NumPy's;
# a call of cbrtf/cbrt vectorizes through libmvec (codegen/vecmath.py) like the other math calls
_libm_cbrt = {types.float32: types.ExternalFunction("cbrtf", types.float32(types.float32)),
              types.float64: types.ExternalFunction("cbrt", types.float64(types.float64))}


def libm_cbrt(x):
    return np.cbrt(x)


@overload(libm_cbrt)
def _libm_cbrt_of(x):
    cbrt = _libm_cbrt[x]
    return lambda x: cbrt(x)


@njit
def max2(a, b):
    return a if (a >= b or a != a) else b  # NaN in a or b propagates, like np.maximum


@njit
def min2(a, b):
    return a if (a <= b or a != a) else b


# --- matrix products -------------------------------------------------------------------------
# NumPy's wheels bundle OpenBLAS with 64-bit integers and prefixed names (scipy_cblas_sgemm64_).
# A kernel calls it by that name (Numba resolves the symbol when it links the kernel, from the
# disk cache too), which compiles in ~45 ms against ~150 ms for a kernel that calls np.dot, and
# leaves SciPy's OpenBLAS (what Numba's np.dot calls) unused: its second thread pool fought
# NumPy's for the cores when both ran with default threads. A NumPy without that library (MKL,
# Accelerate builds), or GRADC_BLAS=numba, takes np.dot inside Numba instead.
BLAS_SYMBOLS = ("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_", "scipy_cblas_sgemv64_",
                "scipy_cblas_dgemv64_")
# the LAPACK routines the kernels of gradc/ops/lapack.py call (LAPACKE's `_work` entry points:
# no NaN scan of the input, no copy in the column-major layout; the very routines np.linalg
# calls, so the results are NumPy's bit for bit)
LAPACK_SYMBOLS = tuple(f"scipy_LAPACKE_d{name}_work64_"
                       for name in ("potrf", "gesv", "getrf", "syevd", "gesdd", "geqrf", "orgqr",
                                    "trtrs"))


# How many threads a product gets: OpenBLAS's one. OpenBLAS splits a product over all its
# threads once m*n*k passes 2**18, and its threads wait on each other many times inside it;
# measured on the 2-core machines, in whole steps, a GPT block's ~20 products of 2-8 Mi
# multiply-adds took its step from 2.7 to 4.0 ms threaded, and while another process loaded the
# machine (a thread that waits for another waits for the scheduler) W8's step took 33-42 ms.
# So every product over 2**18 runs with OpenBLAS on one thread (its count, process-wide, set to
# 1 and put back: `openblas_set_num_threads_local` returns the count it replaces), and one of
# at least SPLIT_WORK is cut into blocks (product_blocks) that gradc's own threads take on
# the LLVM route (codegen/pool_rt.py) and that run one after another here. Blocks of 2**19
# (5-20 us): W8's per-step products of 2 Mi multiply-adds in two blocks of 2**20 took its step
# from 9.1 to 6.0-6.7 ms (blocks of 2**22 left them whole); in four of 2**19 (128 columns of
# h @ Wh each), with OpenBLAS's AVX-512 kernels, 4.5-4.6 -> 3.7 ms at 2 threads and 5.4-5.8 ->
# 4.5-4.7 ms at one (the blocks' panels fit the cache), the same with its AVX2 ones; W2, W7,
# W10 the same within noise (2**21: W7 and W8 slower). A product of 2**19 to 2**20 is cut in
# two (SPLIT_WORK, was 2**20): W5's per-step products of 32x128x128 (5-10 us each, one after
# another) then run on both cores, its step 0.82 -> 0.56-0.63 ms at 2 threads; W2, W4, W6, W7,
# W8, W9, W10 the same within noise (from 2**18, W7 was slower: 1.1 -> 1.65 ms). At most
# MAX_BLOCKS = 4 (was 8): each block packs the operand it does not cut again; single-threaded,
# 128x784x256 took 244 us whole, 263 in four column blocks, 294 in eight (784x128x256
# transposed: 223, 235, 258), and at 2 threads W2's step went 490 -> 435 us, W10's and W7's ~5%
# faster, the others the same within noise (a machine of more than 4 cores runs one product on
# 4 of them; the others take the chunks of long loops). An OpenBLAS older than 0.3.27 lacks
# the setter: the name is then bound to libc's abs (int -> int, the same count back).
SINGLE_THREADED_WORK = 1 << 18
SET_BLAS_THREADS = "openblas_set_num_threads_local"
BLOCK_WORK, MAX_BLOCKS, BLOCK_ALIGN = 1 << 19, 4, 16
SPLIT_WORK = 1 << 19


def _bind_thread_setter(lib):
    setter = getattr(lib, SET_BLAS_THREADS, None) or ctypes.CDLL(None).abs
    llvmlite.binding.add_symbol(SET_BLAS_THREADS, ctypes.cast(setter, ctypes.c_void_p).value)


def _numpy_openblas():
    """ctypes handle of the OpenBLAS bundled with NumPy, or None."""
    if os.environ.get("GRADC_BLAS", "openblas") != "openblas":
        return None
    root = os.path.dirname(os.path.dirname(os.path.abspath(np.__file__)))
    for pattern in ("numpy.libs/libscipy_openblas64_*", "numpy/.dylibs/libscipy_openblas64_*"):
        for path in sorted(glob.glob(os.path.join(root, pattern))):
            try:
                lib = ctypes.CDLL(path)
                for name in BLAS_SYMBOLS + LAPACK_SYMBOLS:
                    llvmlite.binding.add_symbol(name, ctypes.cast(getattr(lib, name),
                                                                  ctypes.c_void_p).value)
                _bind_thread_setter(lib)
                return lib
            except (OSError, AttributeError):
                continue
    return None


OPENBLAS = _numpy_openblas()  # (its ctypes handle, or None)
BLAS = "openblas" if OPENBLAS is not None else "numba"  # (part of the cache key)
# Which ?gemm the kernels call: gradc's own (gemm_rt.py) where the CPU has AVX-512, else
# OpenBLAS's; GRADC_GEMM=openblas chooses OpenBLAS's. The matrix-vector products (?gemv) and
# LAPACK stay OpenBLAS's. Part of the cache key. Each precision is bound before the first kernel
# that calls it links (codegen/modules.py bind_products), and by a `gradc compile` module as it
# is imported.
GEMM = ("avx512" if BLAS == "openblas" and os.environ.get("GRADC_GEMM", "") != "openblas"
        and usable(llvmlite.binding.get_host_cpu_features().flatten()) else "openblas")


def gemm_symbol(p):
    """The symbol of the ?gemm the kernels call, p "s" (float32) or "d" (float64)."""
    return GEMM_SYMBOLS[p] if GEMM == "avx512" else f"scipy_cblas_{p}gemm64_"


def _bind_integer_powers():
    """Give the JIT the runtime's x ** n for an integer n: under fast math LLVM turns
    pow(x, float(n)) into llvm.powi, which the code generator lowers to a call of __powidf2
    (__powisf2 for float32), a function of the compiler's runtime library that no library the
    process has loaded exports to the JIT. A kernel with `x ** k` for an int32 array k crashed
    the process (a segmentation fault, or LLVM's "Symbol not found: __powidf2")."""
    for path in ("libgcc_s.so.1", None):  # (glibc's systems; macOS: in the process itself)
        try:
            lib = ctypes.CDLL(path)
            for name in ("__powidf2", "__powisf2"):
                llvmlite.binding.add_symbol(name, ctypes.cast(getattr(lib, name),
                                                              ctypes.c_void_p).value)
            return
        except (OSError, AttributeError):
            continue


_bind_integer_powers()
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


@njit(**CALLEE_OPTIONS)
def product_blocks(m, n, k):
    """(by_rows, block, blocks): a product of m*n*k multiply-adds cut into `blocks` blocks of
    `block` rows of its result (by_rows; columns otherwise), each at least BLOCK_WORK (half
    of it where a product of at least SPLIT_WORK is cut in two); the
    axis cut is the one whose cut re-reads the smaller operand (rows: b; columns: a). A rule
    of the shape alone, so the bits are too. One block: the product whole."""
    count = min(MAX_BLOCKS, m * n * k // BLOCK_WORK)
    if m * n * k >= SPLIT_WORK:
        count = max(count, 2)
    by_rows = n <= m
    extent = m if by_rows else n
    if count < 2:
        return by_rows, extent, 1
    block = (extent + count - 1) // count
    block = (block + BLOCK_ALIGN - 1) // BLOCK_ALIGN * BLOCK_ALIGN
    return by_rows, block, (extent + block - 1) // block


@njit(**CALLEE_OPTIONS)
def vector_product_args(ta, tb, m, n, k):
    """A product of m = 1 or n = 1 (a matrix times a vector) as CBLAS's ?gemv takes it:
    (transposed, rows, columns, which operand is the matrix: 0 a, 1 b) of the matrix as stored,
    row-major (its leading dimension: columns); the vector is the other operand's k elements,
    the result's m or n. OpenBLAS's ?gemm took such a product many times as long as its ?gemv
    (`X.T @ dz` of a 100000 x 20 X: 5.8 ms, gemv 0.23)."""
    if n == 1:  # (op(a) @ b: a [m, k], or [k, m] transposed)
        return ta, (k if ta else m), (m if ta else k), 0
    return not tb, (n if tb else k), (k if tb else n), 1  # (a @ op(b): y = op(b)^T a)


def _cblas_gemm(p, numba_type, pointer, beta):
    """c[m,n] = alpha * op(a) @ op(b) + beta * c on flat C-ordered arrays, by the ?gemm of
    gemm_symbol(p); op transposes where ta/tb is set. beta is 0 (a product) or 1 (a product
    added into c: an accumulated weight gradient, or an SGD step folded into its gradient's
    product, alpha = -lr). Returns (product(ta, tb, m, n, k, a, b, c), alpha 1, and
    scaled(..., c, alpha))."""
    ptr = types.CPointer(numba_type)
    gemm = types.ExternalFunction(gemm_symbol(p), types.void(
        types.int32, types.int32, types.int32, types.int64, types.int64, types.int64, numba_type,
        ptr, types.int64, ptr, types.int64, numba_type, ptr, types.int64))
    gemv = types.ExternalFunction(f"scipy_cblas_{p}gemv64_", types.void(
        types.int32, types.int32, types.int64, types.int64, numba_type, ptr, types.int64, ptr,
        types.int64, numba_type, ptr, types.int64))
    one, beta = numba_type(1), numba_type(beta)

    @njit(**CALLEE_OPTIONS)
    def scaled(ta, tb, m, n, k, a, b, c, alpha):
        alpha = numba_type(alpha)
        pa, pb, pc, size = a.ctypes.data, b.ctypes.data, c.ctypes.data, a.itemsize
        lda, ldb = (m if ta else k), (k if tb else n)
        # (OpenBLAS's thread count matters only where OpenBLAS runs the product)
        middling = m * n * k > SINGLE_THREADED_WORK and (GEMM != "avx512" or m == 1 or n == 1)
        threads = _set_threads(1) if middling else 0
        if m == 1 or n == 1:
            trans, rows, cols, of_b = vector_product_args(ta, tb, m, n, k)
            gemv(_ROW_MAJOR, _TRANS if trans else _NO_TRANS, rows, cols, alpha,
                 pointer(pb if of_b else pa), cols, pointer(pa if of_b else pb), 1, beta,
                 pointer(pc), 1)
            if middling:
                _set_threads(threads)
            return
        by_rows, block, blocks = product_blocks(m, n, k)
        for i in range(blocks):  # (pool_rt.py's blocks, in order; one: the product whole)
            start = i * block
            count = min(block, (m if by_rows else n) - start)
            # rows start..: a's rows (its columns when transposed), c's; columns: b's, c's
            a_at = (start if ta else start * k) if by_rows else 0
            b_at = 0 if by_rows else (start * k if tb else start)
            c_at = start * n if by_rows else start
            gemm(_ROW_MAJOR, _TRANS if ta else _NO_TRANS, _TRANS if tb else _NO_TRANS,
                 count if by_rows else m, n if by_rows else count, k, alpha,
                 pointer(pa + size * a_at), lda, pointer(pb + size * b_at), ldb, beta,
                 pointer(pc + size * c_at), n)
        if middling:
            _set_threads(threads)

    @njit(**CALLEE_OPTIONS)
    def product(ta, tb, m, n, k, a, b, c):
        scaled(ta, tb, m, n, k, a, b, c, one)

    return product, scaled


@njit(**CALLEE_OPTIONS)
def _numba_gemm(ta, tb, m, n, k, a, b, c):
    out = c.reshape((m, n))
    if ta and tb:
        np.dot(a.reshape((k, m)).T, b.reshape((n, k)).T, out)
    elif ta:
        np.dot(a.reshape((k, m)).T, b.reshape((k, n)), out)
    elif tb:
        np.dot(a.reshape((m, k)), b.reshape((n, k)).T, out)
    else:
        np.dot(a.reshape((m, k)), b.reshape((k, n)), out)


@njit(**CALLEE_OPTIONS)
def _numba_gemm_scaled(ta, tb, m, n, k, a, b, c, alpha):
    product = np.empty_like(c)
    _numba_gemm(ta, tb, m, n, k, a, b, product)
    for i in range(c.size):
        c[i] += alpha * product[i]


@njit(**CALLEE_OPTIONS)
def _numba_gemm_add(ta, tb, m, n, k, a, b, c):
    product = np.empty_like(c)
    _numba_gemm(ta, tb, m, n, k, a, b, product)
    c += product


# sgemm_add/dgemm_add: c += op(a) @ op(b); sgemm_scaled/dgemm_scaled: c += alpha * op(a) @ op(b)
if BLAS == "openblas":
    _set_threads = types.ExternalFunction(SET_BLAS_THREADS, types.int32(types.int32))
    sgemm, _ = _cblas_gemm("s", types.float32, _f32_ptr, 0)
    dgemm, _ = _cblas_gemm("d", types.float64, _f64_ptr, 0)
    sgemm_add, sgemm_scaled = _cblas_gemm("s", types.float32, _f32_ptr, 1)
    dgemm_add, dgemm_scaled = _cblas_gemm("d", types.float64, _f64_ptr, 1)
else:
    sgemm = dgemm = _numba_gemm
    sgemm_add = dgemm_add = _numba_gemm_add
    sgemm_scaled = dgemm_scaled = _numba_gemm_scaled


# --- factorizations and solves ----------------------------------------------------------------
# LAPACK in double precision and column-major order, as np.linalg calls it (float32 matrices too:
# NumPy computes them in double and rounds the results): the kernels copy each matrix transposed
# into a workspace (a row-major matrix's buffer read column-major is its transpose), call the
# routine, and copy back. Each returns LAPACK's `info` (0: done; > 0: singular, not positive
# definite). The workspace comes from malloc, once per kernel call: `lapack_alloc(nbytes)` gives
# its address, `lapack_free(address)` returns it.
_COL_MAJOR, _LOWER, _VECTORS = 102, 76, 86  # LAPACK_COL_MAJOR, 'L', 'V'
_malloc = types.ExternalFunction("malloc", types.int64(types.int64))
_free = types.ExternalFunction("free", types.void(types.int64))


@njit(**CALLEE_OPTIONS)
def lapack_alloc(nbytes):
    return _malloc(nbytes)


@njit(**CALLEE_OPTIONS)
def lapack_free(address):
    _free(address)


def _lapacke(routine, *args):
    """LAPACKE_d<routine>_work(layout, *args) of NumPy's OpenBLAS; the args' types: 'i' a
    32-bit int (a char passes as one), 'n' a 64-bit int, 'a' a float64 array, 'p' an int64
    array (pivots, iwork)."""
    kinds = {"i": types.int32, "n": types.int64, "a": types.CPointer(types.float64),
             "p": types.CPointer(types.int64)}
    return types.ExternalFunction(f"scipy_LAPACKE_d{routine}_work64_",
                                  types.int64(types.int32, *(kinds[a] for a in args)))


if BLAS == "openblas":
    _potrf = _lapacke("potrf", "i", "n", "a", "n")
    _gesv = _lapacke("gesv", "n", "n", "a", "n", "p", "a", "n")
    _getrf = _lapacke("getrf", "n", "n", "a", "n", "p")
    _syevd = _lapacke("syevd", "i", "i", "n", "a", "n", "a", "a", "n", "p", "n")
    _gesdd = _lapacke("gesdd", "i", "n", "n", "a", "n", "a", "a", "n", "a", "n", "a", "n", "p")
    _geqrf = _lapacke("geqrf", "n", "n", "a", "n", "a", "a", "n")
    _orgqr = _lapacke("orgqr", "n", "n", "n", "a", "n", "a", "a", "n")
    _trtrs = _lapacke("trtrs", "i", "i", "i", "n", "n", "a", "n", "a", "n")

    @njit(**CALLEE_OPTIONS)
    def dpotrf(n, a):
        """The lower Cholesky factor of the column-major a, in place."""
        return _potrf(_COL_MAJOR, _LOWER, n, _f64_ptr(a.ctypes.data), max(n, 1))

    @njit(**CALLEE_OPTIONS)
    def dtrtrs(upper, trans, unit, n, k, a, b):
        """b = op(a)^-1 b for the triangular column-major a (its upper triangle where `upper`,
        transposed where `trans`, a unit diagonal where `unit`), b column-major n x k; info
        > 0 where a diagonal element is 0."""
        return _trtrs(_COL_MAJOR, np.int32(85 if upper else 76), np.int32(84 if trans else 78),
                      np.int32(85 if unit else 78), n, k, _f64_ptr(a.ctypes.data), max(n, 1),
                      _f64_ptr(b.ctypes.data), max(n, 1))

    @njit(**CALLEE_OPTIONS)
    def dgesv(n, k, a, pivots, b):
        """b = a^-1 b (column-major; b n x k), a overwritten by its LU factors."""
        return _gesv(_COL_MAJOR, n, k, _f64_ptr(a.ctypes.data), max(n, 1),
                     _i64_ptr(pivots.ctypes.data), _f64_ptr(b.ctypes.data), max(n, 1))

    @njit(**CALLEE_OPTIONS)
    def dgetrf(n, a, pivots):
        """a's LU factors in place (column-major), pivots 1-based as LAPACK's."""
        return _getrf(_COL_MAJOR, n, n, _f64_ptr(a.ctypes.data), max(n, 1),
                      _i64_ptr(pivots.ctypes.data))

    @njit(**CALLEE_OPTIONS)
    def dsyevd(n, a, w, work, lwork, iwork, liwork):
        """The eigenvalues (w, ascending) and eigenvectors (a's columns, in place) of the
        symmetric column-major a, from its lower triangle."""
        return _syevd(_COL_MAJOR, _VECTORS, _LOWER, n, _f64_ptr(a.ctypes.data), max(n, 1),
                      _f64_ptr(w.ctypes.data), _f64_ptr(work.ctypes.data), lwork,
                      _i64_ptr(iwork.ctypes.data), liwork)

    @njit(**CALLEE_OPTIONS)
    def dgesdd(jobz, m, n, a, s, u, ldu, vt, ldvt, work, lwork, iwork):
        """The SVD of the column-major a (m x n, destroyed): s, u and vt column-major; jobz
        'A' (ord 65: full u and vt) or 'S' (83: thin); lwork -1 asks work[0] for its size."""
        return _gesdd(_COL_MAJOR, np.int32(jobz), m, n, _f64_ptr(a.ctypes.data), max(m, 1),
                      _f64_ptr(s.ctypes.data), _f64_ptr(u.ctypes.data), max(ldu, 1),
                      _f64_ptr(vt.ctypes.data), max(ldvt, 1), _f64_ptr(work.ctypes.data), lwork,
                      _i64_ptr(iwork.ctypes.data))

    @njit(**CALLEE_OPTIONS)
    def dgeqrf(m, n, a, tau, work, lwork):
        """The QR factorization of the column-major a, in place (R above the diagonal, the
        Householder reflectors below, their scales in tau)."""
        return _geqrf(_COL_MAJOR, m, n, _f64_ptr(a.ctypes.data), max(m, 1),
                      _f64_ptr(tau.ctypes.data),
                      _f64_ptr(work.ctypes.data), lwork)

    @njit(**CALLEE_OPTIONS)
    def dorgqr(m, mc, k, q, tau, work, lwork):
        """Q (m x mc, column-major, in place) from dgeqrf's first k reflectors in q."""
        return _orgqr(_COL_MAJOR, m, mc, k, _f64_ptr(q.ctypes.data), max(m, 1),
                      _f64_ptr(tau.ctypes.data), _f64_ptr(work.ctypes.data), lwork)
