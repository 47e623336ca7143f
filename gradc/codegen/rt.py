"""Helpers that generated kernels use: raw addresses as arrays, NaN-propagating max/min, and the
fast-math flags. Kernels take buffer addresses (plain integers) instead of arrays, so calling one
costs well under a microsecond and allocates nothing (unboxing a NumPy array allocates a Numba
MemInfo on every call).

`gradc compile` copies this file's source into standalone modules, so it imports only NumPy and
Numba.
"""
import numpy as np
from numba import carray, njit, prange, types  # noqa: F401  (prange: parallel kernels)
from numba.extending import intrinsic

# Fast-math without 'nnan' and 'ninf': vectorized reductions and reassociation are allowed, but
# NaN and Inf keep their meaning, so check_finite and NaN propagation still work.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
JIT_OPTIONS = dict(nogil=True, cache=True, fastmath=FASTMATH, error_model="numpy")
CHUNKS = 16  # a parallel kernel's outer loop is split into this many ranges

f32, f64, i64, i32, i16, i8, u8, bool_ = (np.float32, np.float64, np.int64, np.int32, np.int16,
                                          np.int8, np.uint8, np.bool_)


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


@njit
def f32_array(address, n):
    return carray(_f32_ptr(address), (n,))


@njit
def f64_array(address, n):
    return carray(_f64_ptr(address), (n,))


@njit
def i64_array(address, n):
    return carray(_i64_ptr(address), (n,))


@njit
def i32_array(address, n):
    return carray(_i32_ptr(address), (n,))


@njit
def bool_array(address, n):
    return carray(_bool_ptr(address), (n,))


@njit
def max2(a, b):
    return a if (a >= b or a != a) else b  # NaN in a or b propagates, like np.maximum


@njit
def min2(a, b):
    return a if (a <= b or a != a) else b


# --- counter-based random numbers (gradc.random; the op random_uniform, gradc/ops/random.py) ---
# SplitMix64's step (Steele, Lea and Flood, 2014): mix(k + (n + 1) * gamma). A draw's key is
# three steps from 0 by the seed, the call counter and the draw site's stream; element i of the
# draw is the step from the key by i, its top 53 (float64) or 24 (float32) bits a float in
# [0, 1). gradc/codegen/cuda_rt.py and the NumPy reference compute the same bits.
RNG_GAMMA = np.uint64(0x9E3779B97F4A7C15)
RNG_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
RNG_MIX2 = np.uint64(0x94D049BB133111EB)


@njit
def rng_step(k, n):
    z = k + np.uint64(n + 1) * RNG_GAMMA
    z = (z ^ (z >> np.uint64(30))) * RNG_MIX1
    z = (z ^ (z >> np.uint64(27))) * RNG_MIX2
    return z ^ (z >> np.uint64(31))


@njit
def rng_key(seed, counter, stream):
    return rng_step(rng_step(rng_step(np.uint64(0), seed), counter), stream)


@njit
def rng_unit_f64(bits):
    return np.float64(bits >> np.uint64(11)) * 1.1102230246251565e-16  # 2**-53


@njit
def rng_unit_f32(bits):
    return np.float32(bits >> np.uint64(40)) * np.float32(5.960464477539063e-08)  # 2**-24
