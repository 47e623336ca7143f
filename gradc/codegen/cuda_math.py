"""Device functions of generated CUDA kernels (gradc/codegen/cuda.py): max2/min2 (the CPU's
helpers), and the math functions the ops' scalar expressions name through cuda.CudaMath:
`cu_<name>`, or `cu_<name>_<dtype>` where each dtype needs its own. A math function that is one
call on both targets is one line of UNARY_MATH or BINARY_MATH.

Importing this module imports numba.cuda: import it only for target="cuda". gradc/aot_cuda.py
copies it, then cuda_rt.py, into standalone CUDA modules.
"""
import math

import numpy as np
from numba import config, cuda
from numba.cuda import libdevice

f32, f64, i64, i32, i16, i8, u8, u16, bool_ = (np.float32, np.float64, np.int64, np.int32,
                                               np.int16, np.int8, np.uint8, np.uint16, np.bool_)


# --- scalar helpers (device functions) ------------------------------------------------------
@cuda.jit(device=True)
def max2(a, b):
    return a if (a >= b or a != a) else b  # NaN in a or b propagates, like np.maximum


@cuda.jit(device=True)
def min2(a, b):
    return a if (a <= b or a != a) else b


SIMULATOR = bool(config.ENABLE_CUDASIM)


# a statement's result in a narrow integer dtype, wrapped as NumPy wraps it: through an int64
# (on the device the cast alone truncates; the simulator's NumPy scalars refuse a Python int
# out of their range, `i8(65536)`)
def _wrapping(cast, bits, signed):
    mask, half = (1 << bits) - 1, 1 << (bits - 1) if signed else 0

    @cuda.jit(device=True)
    def wrap(x):
        return cast(((int(x) + half) & mask) - half)

    return wrap


wrap_i8, wrap_u8 = _wrapping(i8, 8, True), _wrapping(u8, 8, False)
wrap_i16, wrap_u16 = _wrapping(i16, 16, True), _wrapping(u16, 16, False)


# --- float32 sin, cos (and tan) ---------------------------------------------------------------
# libdevice's sinf/cosf reduce large arguments (|x| > 105615) in double precision; these reduce
# in float32 and 64-bit integers only, so a float32 graph's PTX has no .f64. Accuracy: at most
# 2.3 ulp against the exact result over all float32 inputs sampled (tests/test_cuda_trig.py).
def _two_over_pi_words(n_words):
    """The first 32 * n_words bits of 2/pi after the binary point, as 32-bit words, computed
    with Python integers (Machin's formula for pi)."""
    bits = 32 * n_words + 64

    def atan_inv(k):  # atan(1/k) * 2**bits
        total, term, n, sign = 0, (1 << bits) // k, 1, 1
        while term:
            total += sign * (term // n)
            term //= k * k
            n, sign = n + 2, -sign
        return total

    t = ((2 << (2 * bits)) // (16 * atan_inv(5) - 4 * atan_inv(239))) >> 64
    return [(t >> (32 * (n_words - 1 - i))) & 0xFFFFFFFF for i in range(n_words)]


# two zero words first: the window of a small argument starts before the first bit of 2/pi
TWO_OVER_PI = np.array([0, 0] + _two_over_pi_words(8), np.int64)
PIO2_HI = f32(np.pi / 2)  # pi/2 in three float32 pieces
PIO2_MID = f32(np.pi / 2 - float(PIO2_HI))
PIO2_LO = f32(np.pi / 2 - float(PIO2_HI) - float(PIO2_MID))


def fmaf_host(a, b, c):
    """a * b + c of float32s, the product exact in float64 (libdevice's fmaf on the GPU; this
    stands in for it on the host, in tests)."""
    return f32(f64(a) * f64(b) + f64(c))


fmaf = fmaf_host


def trig_reduce_f32(x):
    """(q, r) with x = (4n + q) * pi/2 + r, |r| <= pi/4 (about)."""
    if abs(x) <= f32(1000.0):  # Cody-Waite: three fused steps, exact enough for small k
        k = i64(math.floor(x * f32(0.636619772) + f32(0.5)))
        kf = f32(k)
        r = fmaf(-kf, PIO2_HI, x)
        r = fmaf(-kf, PIO2_MID, r)
        return k & 3, fmaf(-kf, PIO2_LO, r)
    # Payne-Hanek in integers: |x| = m * 2**e (m < 2**24) times the 96 bits of 2/pi that
    # matter; bits 94-95 of the product are the quadrant, bits 32-93 the fraction
    mant, exp = math.frexp(abs(x))
    m = i64(mant * f32(16777216.0))
    start = exp - 24 - 2 + 64  # the window's first bit, counting the two zero words
    j, s = start >> 5, start & 31
    w0 = ((TWO_OVER_PI[j] << s) | (TWO_OVER_PI[j + 1] >> (32 - s))) & 0xFFFFFFFF
    w1 = ((TWO_OVER_PI[j + 1] << s) | (TWO_OVER_PI[j + 2] >> (32 - s))) & 0xFFFFFFFF
    w2 = ((TWO_OVER_PI[j + 2] << s) | (TWO_OVER_PI[j + 3] >> (32 - s))) & 0xFFFFFFFF
    mid = m * w1 + ((m * w2) >> 32)
    hi = m * w0 + (mid >> 32)
    q = (hi >> 30) & 3
    frac = ((hi & 0x3FFFFFFF) << 32) | (mid & 0xFFFFFFFF)  # 62 bits after the point
    if frac >= (1 << 61):  # past half way: the next quadrant, a negative remainder
        frac -= 1 << 62
        q = (q + 1) & 3
    f = f32(frac) * f32(2.0 ** -62)
    r = fmaf(f, PIO2_HI, f * PIO2_MID)
    if x < 0:
        return (-q) & 3, -r
    return q, r


def sincos_f32(x, shift):
    """sin(x) (shift 0) or cos(x) (shift 1) of a float32: Cephes' minimax polynomials on the
    reduced argument."""
    if not abs(x) < f32(np.inf):
        return x - x  # nan for inf and nan
    if shift == 0 and abs(x) < f32(2.0 ** -12):
        return x  # sin(x) rounds to x (keeps -0.0)
    q, r = trig_reduce_f32(x)
    q = (q + shift) & 3
    z = r * r
    if q & 1:
        p = f32(1.0) - f32(0.5) * z + z * z * (f32(4.166664568298827e-2) + z * (
            f32(-1.388731625493765e-3) + z * f32(2.443315711809948e-5)))
    else:
        p = r + r * z * (f32(-1.6666654611e-1) + z * (f32(8.3321608736e-3)
                                                     + z * f32(-1.9515295891e-4)))
    return -p if q & 2 else p


def _device_math(ufunc, device_function, n_args=1):
    """The device function `cu_<name>` of a math function: under the simulator (device functions
    run as Python on NumPy scalars) NumPy's ufunc, which gives the IEEE results (log(0) = -inf,
    sqrt(-1) = nan) where the math module would raise; on a GPU `device_function` (math.* on a
    float32 argument compiles to the float32 function, expf, logf...; or libdevice's)."""
    if SIMULATOR:
        def simulated(*args):
            with np.errstate(all="ignore"):
                return ufunc(*args)
        return cuda.jit(device=True)(simulated)
    if n_args == 1:
        def unary(x):
            return device_function(x)
        return cuda.jit(device=True)(unary)

    def binary(x, y):
        return device_function(x, y)
    return cuda.jit(device=True)(binary)


# The math functions that are one call on both targets: one line each, (NumPy ufunc, device
# function). Functions that need more (float32 sin/cos, per-dtype floor) follow the table.
UNARY_MATH = {
    "exp": (np.exp, math.exp), "log": (np.log, math.log), "log1p": (np.log1p, math.log1p),
    "expm1": (np.expm1, math.expm1), "tanh": (np.tanh, math.tanh), "sqrt": (np.sqrt, math.sqrt),
    "arctan": (np.arctan, math.atan), "sin_f64": (np.sin, math.sin),
    "cos_f64": (np.cos, math.cos),
    "tan_f64": (np.tan, math.tan), "sinh": (np.sinh, math.sinh), "cosh": (np.cosh, math.cosh),
    "arcsin": (np.arcsin, math.asin), "arccos": (np.arccos, math.acos),
    "arcsinh": (np.arcsinh, math.asinh), "arccosh": (np.arccosh, math.acosh),
    "arctanh": (np.arctanh, math.atanh), "log2": (np.log2, math.log2),
    "log10": (np.log10, math.log10),
    "isnan": (np.isnan, math.isnan), "isinf": (np.isinf, math.isinf),
    "isfinite": (np.isfinite, math.isfinite),
    # no math.* for these (or one that returns an int: math.trunc): libdevice's, per dtype
    "exp2_f32": (np.exp2, libdevice.exp2f), "exp2_f64": (np.exp2, libdevice.exp2),
    "cbrt_f32": (np.cbrt, libdevice.cbrtf), "cbrt_f64": (np.cbrt, libdevice.cbrt),
    "rint_f32": (np.rint, libdevice.rintf), "rint_f64": (np.rint, libdevice.rint),
    "trunc_f32": (np.trunc, libdevice.truncf), "trunc_f64": (np.trunc, libdevice.trunc),
    # (an int, nonzero for a set sign bit: stored as a bool)
    "signbit_f32": (np.signbit, libdevice.signbitf),
    "signbit_f64": (np.signbit, libdevice.signbitd),
}
BINARY_MATH = {
    "arctan2": (np.arctan2, math.atan2), "hypot": (np.hypot, math.hypot),
    "copysign": (np.copysign, math.copysign), "fmod": (np.fmod, math.fmod),
}
for _name, (_ufunc, _device_function) in UNARY_MATH.items():
    globals()["cu_" + _name] = _device_math(_ufunc, _device_function)
for _name, (_ufunc, _device_function) in BINARY_MATH.items():
    globals()["cu_" + _name] = _device_math(_ufunc, _device_function, n_args=2)

if SIMULATOR:
    cu_sin_f32 = _device_math(np.sin, None)
    cu_cos_f32 = _device_math(np.cos, None)
    cu_tan_f32 = _device_math(np.tan, None)
    cu_floor_f32 = cu_floor_f64 = _device_math(np.floor, None)
    cu_ceil_f32 = cu_ceil_f64 = _device_math(np.ceil, None)
    cu_sign_f32 = cu_sign_f64 = cu_sign_i64 = cu_sign_i32 = cu_sign_i16 = cu_sign_i8 = (
        _device_math(np.sign, None))
else:
    fmaf = libdevice.fmaf
    trig_reduce_f32 = cuda.jit(device=True)(trig_reduce_f32)
    sincos_f32 = cuda.jit(device=True)(sincos_f32)

    @cuda.jit(device=True)
    def cu_sin_f32(x):
        return sincos_f32(x, 0)

    @cuda.jit(device=True)
    def cu_cos_f32(x):
        return sincos_f32(x, 1)

    @cuda.jit(device=True)
    def cu_tan_f32(x):
        # libdevice's tanf reduces large arguments in double precision too, as its sinf does
        return sincos_f32(x, 0) / sincos_f32(x, 1)

    # floor, ceil and sign keep their argument's dtype: one device function per dtype
    @cuda.jit(device=True)
    def cu_floor_f32(x):
        return libdevice.floorf(x)

    @cuda.jit(device=True)
    def cu_floor_f64(x):
        return libdevice.floor(x)

    @cuda.jit(device=True)
    def cu_ceil_f32(x):
        return libdevice.ceilf(x)

    @cuda.jit(device=True)
    def cu_ceil_f64(x):
        return libdevice.ceil(x)

    @cuda.jit(device=True)
    def cu_sign_f32(x):
        return f32(1) if x > 0 else (f32(-1) if x < 0 else x)

    @cuda.jit(device=True)
    def cu_sign_f64(x):
        return f64(1) if x > 0 else (f64(-1) if x < 0 else x)

    def _integer_sign(cast):
        @cuda.jit(device=True)
        def sign(x):
            return cast(1) if x > 0 else (cast(-1) if x < 0 else cast(0))

        return sign

    cu_sign_i64, cu_sign_i32, cu_sign_i16, cu_sign_i8 = map(_integer_sign, (i64, i32, i16, i8))


# --- special functions (gradc/ops/special.py): the scalar code of special_math.py compiled as
# device functions (cu_erfinv...; float64: float32 ops round their result); under the simulator
# SciPy's ufuncs
from gradc.codegen.special_math import FUNCTIONS as SPECIAL_FUNCTIONS  # noqa: E402
from gradc.codegen.special_math import compiled as _compiled_special  # noqa: E402

if SIMULATOR:
    import scipy.special

    for _name in SPECIAL_FUNCTIONS:
        globals()["cu_" + _name] = _device_math(getattr(scipy.special, _name), None)
else:
    globals().update({"cu_" + _name: _f for _name, _f in
                      _compiled_special(cuda.jit(device=True)).items()})


@cuda.jit(device=True)
def _integer_itself(x):
    return x


# integers are their own floor and ceiling (NumPy keeps their dtype)
cu_floor_i64 = cu_floor_i32 = cu_ceil_i64 = cu_ceil_i32 = _integer_itself
cu_floor_bool_ = cu_ceil_bool_ = _integer_itself  # (NumPy: a boolean array as it is)
