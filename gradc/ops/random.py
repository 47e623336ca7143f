"""The one primitive behind gradc.random: `random_uniform`, floats uniform in [0, 1).

Its input is a generator's state, an int64 array [seed, counter]; its attributes are the shape,
the dtype (float32 or float64) and the draw site's `stream` (each draw in one traced function has
its own). Element i is a counter-based hash of (seed, counter, stream, i): SplitMix64's step
(Steele, Lea and Flood, 2014: mix(k + (n + 1) * gamma)) taken from 0 by the seed, the counter
and the stream, which gives the draw's key, then from the key by i; the top 53 (float64) or 24
(float32) bits of the result are the float in [0, 1). Any element is computed alone, in any
order: the CPU kernel below, the CUDA kernels (gradc/codegen/cuda_rt.py) and the NumPy reference
give the same bits. It has no gradient: nothing flows back into a seed.
"""
import numpy as np

from ..errors import ShapeError, UnsupportedOpError
from .elementwise import CODE_DTYPE
from .registry import KERNEL, OpDef, register

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _step(k, n):
    """SplitMix64's step on uint64 arrays (arrays, not scalars: they wrap without warnings)."""
    z = k + (n + np.uint64(1)) * _GAMMA
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def uniform_bits(state, size, stream):
    """The 64 random bits of each of `size` elements."""
    key = np.zeros(1, np.uint64)
    for x in (state[0], state[1], stream):
        key = _step(key, np.array([x], np.int64).view(np.uint64))
    return _step(key, np.arange(size, dtype=np.uint64))


def uniform_ref(state, shape, dtype, stream):
    bits = uniform_bits(np.asarray(state), int(np.prod(shape, dtype=np.int64)), stream)
    if np.dtype(dtype) == np.float32:
        u = (bits >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24)
    else:
        u = (bits >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    return u.reshape(shape)


def _uniform_infer(inputs, shape, dtype, stream):
    (state,) = inputs
    if state.shape != (2,) or state.dtype != np.int64:
        raise ShapeError(f"random_uniform needs a generator state int64[2], got {state}")
    if np.dtype(dtype) not in FLOATS:
        raise UnsupportedOpError(f"random numbers are drawn as float32 or float64, not {dtype}")
    return tuple(shape), np.dtype(dtype)


def _step_lines(k, out, key, n):
    """Kernel lines: out = _step(key, n), in Numba's wrapping uint64 arithmetic."""
    k.line(f"z = {key} + np.uint64({n} + 1) * np.uint64({int(_GAMMA):#x})")
    k.line(f"z = (z ^ (z >> np.uint64(30))) * np.uint64({int(_MIX1):#x})")
    k.line(f"z = (z ^ (z >> np.uint64(27))) * np.uint64({int(_MIX2):#x})")
    k.line(f"{out} = z ^ (z >> np.uint64(31))")


def _uniform_kernel(k):
    stream = k.param("stream", k.attr["stream"])
    k.line("key = np.uint64(0)")
    k.line(f"for n in (x0[0], x0[1], {stream}):  # seed, counter, draw site")
    with k.indent():
        _step_lines(k, "key", "key", "n")
    k.line(f"for i in range({k.size(k.output)}):")
    with k.indent():
        _step_lines(k, "bits", "key", "i")
        if k.output.dtype == np.float32:
            k.line("out[i] = np.float32(bits >> np.uint64(40)) * f32(5.960464477539063e-08)")
        else:
            k.line("out[i] = np.float64(bits >> np.uint64(11)) * f64(1.1102230246251565e-16)")


# CUDA: the launches of cuda_rt.py's kernel for this op: (program, node, out Buf, input Bufs)
def _cuda_uniform(prog, node, out, ins):
    kernel = f"random_uniform_{CODE_DTYPE[node.output.dtype.name]}"
    return [prog.launch(kernel, [out, ins[0], out.n, node.attr["stream"]], out.n)]


register(OpDef("random_uniform", KERNEL, _uniform_infer, ref=uniform_ref, nondiff=(0,),
               vjp=lambda node, g: [None], kernel=_uniform_kernel, cuda=_cuda_uniform))
