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
