"""What generated CUDA kernels use (gradc/codegen/cuda.py): typed literals, device-function
equivalents of the CPU helpers (max2/min2, and the math functions the ops' scalar expressions name
through cuda.CudaMath: `cu_<name>`, or `cu_<name>_<dtype>` where each dtype needs its own), the
second pass of chunked reductions (`rows_<op>`), and the library kernels (matmul, gathers,
scatter-adds, slicing, windows; each op's launcher is its OpDef's `cuda`), each written once,
flat and shape-generic: sizes are arguments.

Every kernel is a grid-stride loop (any launch size is correct). Scatter-adds (take_grad,
take_along_axis_grad, fold) accumulate with atomics into an output that a `fill` launch
initialised, so their float sums are in a non-deterministic order; reductions use no atomics
(block trees in a fixed order, gradc/codegen/cuda.py) and are deterministic.

Importing this module imports numba.cuda: import it only for target="cuda".
"""
import math

import numpy as np
from numba import config, cuda

f32, f64, i64, i32, i16, i8, u8, bool_ = (np.float32, np.float64, np.int64, np.int32, np.int16,
                                          np.int8, np.uint8, np.bool_)


# --- scalar helpers (device functions) ------------------------------------------------------
@cuda.jit(device=True)
def max2(a, b):
    return a if (a >= b or a != a) else b  # NaN in a or b propagates, like np.maximum


@cuda.jit(device=True)
def min2(a, b):
    return a if (a <= b or a != a) else b


SIMULATOR = bool(config.ENABLE_CUDASIM)


# --- float32 sin and cos ----------------------------------------------------------------------
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


if SIMULATOR:
    # Under the simulator device functions run as Python on NumPy scalars: NumPy's ufuncs give
    # the IEEE results (log(0) = -inf, sqrt(-1) = nan) where the math module would raise.
    def _ufunc(f):
        def apply(x):
            with np.errstate(all="ignore"):
                return f(x)
        return cuda.jit(device=True)(apply)

    cu_exp, cu_log, cu_log1p, cu_expm1, cu_tanh, cu_sqrt, cu_arctan = map(_ufunc, (
        np.exp, np.log, np.log1p, np.expm1, np.tanh, np.sqrt, np.arctan))
    cu_sin_f32 = cu_sin_f64 = _ufunc(np.sin)
    cu_cos_f32 = cu_cos_f64 = _ufunc(np.cos)
    cu_floor_f32 = cu_floor_f64 = _ufunc(np.floor)
    cu_ceil_f32 = cu_ceil_f64 = _ufunc(np.ceil)
    cu_sign_f32 = cu_sign_f64 = cu_sign_i64 = cu_sign_i32 = _ufunc(np.sign)
else:
    from numba.cuda import libdevice

    # math.* on a float32 argument compiles to the float32 function (expf, logf...)
    @cuda.jit(device=True)
    def cu_exp(x):
        return math.exp(x)

    @cuda.jit(device=True)
    def cu_log(x):
        return math.log(x)

    @cuda.jit(device=True)
    def cu_log1p(x):
        return math.log1p(x)

    @cuda.jit(device=True)
    def cu_expm1(x):
        return math.expm1(x)

    @cuda.jit(device=True)
    def cu_tanh(x):
        return math.tanh(x)

    @cuda.jit(device=True)
    def cu_arctan(x):
        return math.atan(x)

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
    def cu_sin_f64(x):
        return math.sin(x)

    @cuda.jit(device=True)
    def cu_cos_f64(x):
        return math.cos(x)

    @cuda.jit(device=True)
    def cu_sqrt(x):
        return math.sqrt(x)

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

    @cuda.jit(device=True)
    def cu_sign_i64(x):
        return i64(1) if x > 0 else (i64(-1) if x < 0 else i64(0))

    @cuda.jit(device=True)
    def cu_sign_i32(x):
        return i32(1) if x > 0 else (i32(-1) if x < 0 else i32(0))


@cuda.jit(device=True)
def _integer_itself(x):
    return x


# integers are their own floor and ceiling (NumPy keeps their dtype)
cu_floor_i64 = cu_floor_i32 = cu_ceil_i64 = cu_ceil_i32 = _integer_itself


# --- small kernels ---------------------------------------------------------------------------
@cuda.jit
def fill(out, n, value):
    for t in range(cuda.grid(1), n, cuda.gridsize(1)):
        out[t] = value


# Block reductions (gradc/codegen/cuda.py): threads per block, a power of two; the simulator
# runs each thread as a Python thread, so its blocks are small
RED_THREADS = 32 if SIMULATOR else 128


@cuda.jit(device=True)
def add2(a, b):
    return a + b


def _rows(combine):
    """A kernel: out[o] = partial[o * width] combined with the rest of its row, in order."""
    @cuda.jit
    def rows(out, partial, n_rows, width):
        for o in range(cuda.grid(1), n_rows, cuda.gridsize(1)):
            acc = partial[o * width]
            for c in range(1, width):
                acc = combine(acc, partial[o * width + c])
            out[o] = acc
    return rows


rows_sum, rows_max, rows_min = _rows(add2), _rows(max2), _rows(min2)


@cuda.jit
def copy_rows(out, x, n_outer, width, row, col):
    """out[a * row + col + b] = x[a * width + b]: one input of a concatenate."""
    for t in range(cuda.grid(1), n_outer * width, cuda.gridsize(1)):
        a = t // width
        b = t - a * width
        out[a * row + col + b] = x[t]


@cuda.jit
def matmul(out, x, y, batch, m, n, k, ta, tb, a_step, b_step, zero):
    """out[t] = op(x[t]) @ op(y[t]) for each batch t: one thread per output element."""
    for e in range(cuda.grid(1), batch * m * n, cuda.gridsize(1)):
        bt = e // (m * n)
        r = e - bt * m * n
        i = r // n
        j = r - i * n
        a0 = bt * a_step
        b0 = bt * b_step
        acc = zero
        for p in range(k):
            av = x[a0 + p * m + i] if ta else x[a0 + i * k + p]
            bv = y[b0 + j * k + p] if tb else y[b0 + p * n + j]
            acc += av * bv
        out[e] = acc


# Tiled matmul: a block of TILE x TILE threads computes a TILE x TILE tile of the output,
# staging TILE-wide panels of op(x) and op(y) in shared memory; blocks stride over the tiles
# (of every batch), so each thread of a block runs the same number of tiles and syncs.
TILE = 8 if SIMULATOR else 16


def tiled_items(batch, m, n):
    """Work items of a tiled matmul launch: a TILE x TILE block per output tile."""
    return batch * -(-m // TILE) * -(-n // TILE) * TILE * TILE


def _tiled_matmul(dtype):
    @cuda.jit
    def kernel(out, x, y, batch, m, n, k, ta, tb, a_step, b_step, zero):
        sa = cuda.shared.array((TILE, TILE), dtype)
        sb = cuda.shared.array((TILE, TILE), dtype)
        tx = cuda.threadIdx.x % TILE
        ty = cuda.threadIdx.x // TILE
        tm = (m + TILE - 1) // TILE
        tn = (n + TILE - 1) // TILE
        for tile in range(cuda.blockIdx.x, batch * tm * tn, cuda.gridDim.x):
            bt = tile // (tm * tn)
            r = tile - bt * tm * tn
            i = (r // tn) * TILE + ty
            j = (r - (r // tn) * tn) * TILE + tx
            a0 = bt * a_step
            b0 = bt * b_step
            acc = zero
            for p0 in range(0, k, TILE):
                pa = p0 + tx
                if i < m and pa < k:
                    sa[ty, tx] = x[a0 + pa * m + i] if ta else x[a0 + i * k + pa]
                else:
                    sa[ty, tx] = zero
                pb = p0 + ty
                if j < n and pb < k:
                    sb[ty, tx] = y[b0 + j * k + pb] if tb else y[b0 + pb * n + j]
                else:
                    sb[ty, tx] = zero
                cuda.syncthreads()
                for q in range(TILE):
                    acc += sa[ty, q] * sb[q, tx]
                cuda.syncthreads()
            if i < m and j < n:
                out[bt * m * n + i * n + j] = acc
    return kernel


matmul_tiled_f32 = _tiled_matmul(np.float32)
matmul_tiled_f64 = _tiled_matmul(np.float64)


@cuda.jit(device=True)
def _index(j, n, err, code):
    if j < 0:
        j += n
    if j < 0 or j >= n:
        err[0] = code
        return 0
    return j


@cuda.jit(device=True)
def _gathered(e, idx, one_per_row, n, inner, m, err, code):
    """Output element e = (a, t, b) of a gather reads (a, j, b) of its source, j = idx[t] (take:
    one index per row) or idx[e] (take_along_axis); the flat index of that source element."""
    a = e // (m * inner)
    r = e - a * m * inner
    t = r // inner
    b = r - t * inner
    j = _index(idx[t] if one_per_row else idx[e], n, err, code)
    return (a * n + j) * inner + b


def _gather(one_per_row):
    """take (one index per row) or take_along_axis: a thread per output element."""
    @cuda.jit
    def gather(out, x, idx, outer, n, inner, m, err, code):
        for e in range(cuda.grid(1), outer * m * inner, cuda.gridsize(1)):
            out[e] = x[_gathered(e, idx, one_per_row, n, inner, m, err, code)]
    return gather


def _scatter_add(one_per_row):
    """take_grad or take_along_axis_grad: g added into out (zeroed by a fill launch before),
    a thread per element of g."""
    @cuda.jit
    def scatter_add(out, g, idx, outer, n, inner, m, err, code):
        for e in range(cuda.grid(1), outer * m * inner, cuda.gridsize(1)):
            cuda.atomic.add(out, _gathered(e, idx, one_per_row, n, inner, m, err, code), g[e])
    return scatter_add


take, take_along_axis = _gather(True), _gather(False)
take_grad, take_along_axis_grad = _scatter_add(True), _scatter_add(False)


@cuda.jit(device=True)
def _slice_element(e, shape, dst_strides, offset):
    """Where element e of a slice (row-major over `shape`) lies in the sliced array."""
    r = e
    dst = offset
    for d in range(shape.shape[0] - 1, -1, -1):
        i = r % shape[d]
        r = r // shape[d]
        dst += i * dst_strides[d]
    return dst


@cuda.jit
def unslice_add(out, g, size, shape, dst_strides, offset):
    """out[offset + sum(i_d * dst_strides[d])] += g[i]: an unslice (after a zero fill), or one
    term of an unslice_sum. A slice never names an element twice, so threads do not race; the
    terms are launches in order."""
    for e in range(cuda.grid(1), size, cuda.gridsize(1)):
        dst = _slice_element(e, shape, dst_strides, offset)
        out[dst] += g[e]


@cuda.jit(device=True)
def _window(e, C, H, W, OH, OW, KH, KW, SH, SW, PH, PW):
    """Patch element e = (n, a, b, c, i, j) -> (source pixel index, inside the image)."""
    j, r = e % KW, e // KW
    i, r = r % KH, r // KH
    c, r = r % C, r // C
    b, r = r % OW, r // OW
    a, n = r % OH, r // OH
    y = a * SH - PH + i
    z = b * SW - PW + j
    inside = y >= 0 and y < H and z >= 0 and z < W
    return ((n * C + c) * H + y) * W + z, inside


@cuda.jit
def unfold(out, x, size, C, H, W, OH, OW, KH, KW, SH, SW, PH, PW, pad):
    for e in range(cuda.grid(1), size, cuda.gridsize(1)):
        src, inside = _window(e, C, H, W, OH, OW, KH, KW, SH, SW, PH, PW)
        out[e] = x[src] if inside else pad


@cuda.jit
def fold(out, g, size, C, H, W, OH, OW, KH, KW, SH, SW, PH, PW):
    """Scatter-add of the patches g into the image out (zeroed by a fill launch before)."""
    for e in range(cuda.grid(1), size, cuda.gridsize(1)):
        src, inside = _window(e, C, H, W, OH, OW, KH, KW, SH, SW, PH, PW)
        if inside:
            cuda.atomic.add(out, src, g[e])


# --- direct convolution and max pooling (gradc/ops/conv.py): one thread per output element,
# summing in a fixed order (deterministic, no atomics); NCHW images, OCKK weights
@cuda.jit(device=True)
def _nchw(e, C, H, W):
    """(n, c, y, x) of the flat index e of an N x C x H x W array."""
    return e // (W * H * C), (e // (W * H)) % C, (e // W) % H, e % W


@cuda.jit
def conv2d(out, x, w, N, C, H, W, OH, OW, O, KH, KW, SH, SW, PH, PW, zero):
    """out[n,o,a,b] = sum over c,i,j of w[o,c,i,j] * x[n,c,a*SH-PH+i,b*SW-PW+j] (zero outside)."""
    for e in range(cuda.grid(1), N * O * OH * OW, cuda.gridsize(1)):
        n, o, a, b = _nchw(e, O, OH, OW)
        acc = zero
        for c in range(C):
            for i in range(KH):
                y = a * SH - PH + i
                if y < 0 or y >= H:
                    continue
                for j in range(KW):
                    z = b * SW - PW + j
                    if z >= 0 and z < W:
                        acc += w[((o * C + c) * KH + i) * KW + j] * x[((n * C + c) * H + y) * W + z]
        out[e] = acc


@cuda.jit
def conv2d_grad_input(out, g, w, N, C, H, W, OH, OW, O, KH, KW, SH, SW, PH, PW, zero):
    """out[n,c,y,z] = sum of w[o,c,i,j] * g[n,o,a,b] over the outputs (a, b) whose window
    reads pixel (y, z): a*SH - PH + i == y, b*SW - PW + j == z."""
    for e in range(cuda.grid(1), N * C * H * W, cuda.gridsize(1)):
        n, c, y, z = _nchw(e, C, H, W)
        acc = zero
        for o in range(O):
            for i in range(KH):
                ta = y + PH - i
                if ta < 0 or ta % SH != 0 or ta // SH >= OH:
                    continue
                for j in range(KW):
                    tb = z + PW - j
                    if tb >= 0 and tb % SW == 0 and tb // SW < OW:
                        acc += (w[((o * C + c) * KH + i) * KW + j]
                                * g[((n * O + o) * OH + ta // SH) * OW + tb // SW])
        out[e] = acc


@cuda.jit
def conv2d_grad_weight(out, x, g, N, C, H, W, OH, OW, O, KH, KW, SH, SW, PH, PW, zero):
    """out[o,c,i,j] = sum over n,a,b of g[n,o,a,b] * x[n,c,a*SH-PH+i,b*SW-PW+j] (inside): a
    block per weight (few weights, many terms each), its threads striding over (n, a, b), then
    a tree in shared memory, as the loop kernels' block reductions."""
    sh = cuda.shared.array(RED_THREADS, out.dtype)
    t = cuda.threadIdx.x
    for e in range(cuda.blockIdx.x, O * C * KH * KW, cuda.gridDim.x):
        o, c, i, j = _nchw(e, C, KH, KW)
        acc = zero
        for q in range(t, N * OH * OW, RED_THREADS):
            b = q % OW
            a = (q // OW) % OH
            n = q // (OW * OH)
            y = a * SH - PH + i
            z = b * SW - PW + j
            if y >= 0 and y < H and z >= 0 and z < W:
                acc += g[((n * O + o) * OH + a) * OW + b] * x[((n * C + c) * H + y) * W + z]
        sh[t] = acc
        cuda.syncthreads()
        s = RED_THREADS // 2
        while s > 0:
            if t < s:
                sh[t] = sh[t] + sh[t + s]
            cuda.syncthreads()
            s //= 2
        if t == 0:
            out[e] = sh[0]
        cuda.syncthreads()


@cuda.jit
def pool_argmax(out, x, planes, H, W, OH, OW, KH, KW, SH, SW, PH, PW):
    """out[p,a,b] = the in-plane index y*W + z of window (a, b)'s maximum: the first in
    row-major order, a NaN over any number (the last NaN); padding is never picked."""
    for e in range(cuda.grid(1), planes * OH * OW, cuda.gridsize(1)):
        b = e % OW
        a = (e // OW) % OH
        xp = (e // (OW * OH)) * H * W
        y0 = a * SH - PH
        z0 = b * SW - PW
        # the window's rows and columns inside the image (no builtin min/max: Numba's own
        # CUDA target fails to type them)
        i_lo = -y0 if y0 < 0 else 0
        j_lo = -z0 if z0 < 0 else 0
        i_hi = KH if KH < H - y0 else H - y0
        j_hi = KW if KW < W - z0 else W - z0
        best_t = (y0 + i_lo) * W + z0 + j_lo
        best = x[xp + best_t]
        for i in range(i_lo, i_hi):
            for j in range(j_lo, j_hi):
                t = (y0 + i) * W + z0 + j
                v = x[xp + t]
                if v > best or v != v:
                    best = v
                    best_t = t
        out[e] = best_t



# --- counter-based random numbers (gradc.random): the bits of gradc/ops/random.py ------------
RNG_GAMMA = np.uint64(0x9E3779B97F4A7C15)
RNG_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
RNG_MIX2 = np.uint64(0x94D049BB133111EB)


def _rng_step(k, n):
    """SplitMix64's step: mix(k + (n + 1) * gamma), in wrapping uint64 arithmetic."""
    z = k + np.uint64(n + 1) * RNG_GAMMA
    z = (z ^ (z >> np.uint64(30))) * RNG_MIX1
    z = (z ^ (z >> np.uint64(27))) * RNG_MIX2
    return z ^ (z >> np.uint64(31))


if SIMULATOR:  # NumPy's uint64 scalars wrap as the GPU's do, but warn about it
    def _quiet_step(k, n):
        with np.errstate(over="ignore"):
            return _rng_step(k, n)
    rng_step = cuda.jit(device=True)(_quiet_step)
else:
    rng_step = cuda.jit(device=True)(_rng_step)


@cuda.jit(device=True)
def rng_key(seed, counter, stream):
    return rng_step(rng_step(rng_step(np.uint64(0), seed), counter), stream)


@cuda.jit(device=True)
def rng_unit_f64(bits):
    return f64(bits >> np.uint64(11)) * f64(1.1102230246251565e-16)  # 2**-53


@cuda.jit(device=True)
def rng_unit_f32(bits):
    return f32(bits >> np.uint64(40)) * f32(5.960464477539063e-08)  # 2**-24


def _random_uniform(unit):
    @cuda.jit
    def random_uniform(out, state, n, stream):
        """out[i] = element i of the draw `stream` of generator state [seed, counter]."""
        key = rng_key(state[0], state[1], stream)
        for i in range(cuda.grid(1), n, cuda.gridsize(1)):
            out[i] = unit(rng_step(key, i))
    return random_uniform


random_uniform_f32 = _random_uniform(rng_unit_f32)
random_uniform_f64 = _random_uniform(rng_unit_f64)
