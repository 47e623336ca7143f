"""What generated CUDA kernels use (gradc/codegen/cuda.py): typed literals and device functions
(cuda_math.py's, re-exported here), the second pass of chunked reductions (`rows_<op>`), and the
library kernels (matmul, gathers, scatter-adds, slicing, windows; each op's launcher is its
OpDef's `cuda`), each written once, flat and shape-generic: sizes are arguments.

Every kernel is a grid-stride loop (any launch size is correct). Scatter-adds (take_grad,
take_along_axis_grad, fold) accumulate with atomics into an output that a `fill` launch
initialised, so their float sums are in a non-deterministic order; reductions use no atomics
(block trees in a fixed order, gradc/codegen/cuda.py) and are deterministic.

Importing this module imports numba.cuda: import it only for target="cuda".
"""
import numpy as np
from numba import cuda

from gradc.codegen.cuda_math import *  # noqa: F401,F403  (typed literals, device functions)
from gradc.codegen.cuda_math import SIMULATOR


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


@cuda.jit
def addmm(out, c, x, y, m, n, k, ta, tb):
    """out = c + op(x) @ op(y): one thread per output element, which reads c's element before
    it writes out's (so out may be c's buffer)."""
    for e in range(cuda.grid(1), m * n, cuda.gridsize(1)):
        i = e // n
        j = e - i * n
        acc = c[e]
        for p in range(k):
            av = x[p * m + i] if ta else x[i * k + p]
            bv = y[j * k + p] if tb else y[p * n + j]
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


@cuda.jit
def unslice_set(out, v, size, shape, dst_strides, offset):
    """out[offset + sum(i_d * dst_strides[d])] = v[i]: a set_slice's values, after x is copied
    into out (or out is x's buffer)."""
    for e in range(cuda.grid(1), size, cuda.gridsize(1)):
        out[_slice_element(e, shape, dst_strides, offset)] = v[e]


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



# --- scans and sorting (gradc/ops/scan.py): a lane is the (outer, inner) pair around the axis
@cuda.jit
def scan(out, a, b, outer, n, inner, reverse, has_a, shifted):
    """y[j] = a[j] * y[j-1] + b[j] along each lane (a = 1 without has_a; a[j-1] if shifted;
    from the end when reversed): a thread per lane, walking it in order."""
    for e in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        o = e // inner
        c = e - o * inner
        for t in range(n):
            j = n - 1 - t if reverse else t
            at = (o * n + j) * inner + c
            if t == 0:
                out[at] = b[at]
            else:
                prev = at + inner if reverse else at - inner
                if has_a:
                    out[at] = a[prev if shifted else at] * out[prev] + b[at]
                else:
                    out[at] = out[prev] + b[at]


@cuda.jit(device=True)
def _sorts_before(u, i, v, j):
    """Does u (at i) come before v (at j) in a stable sort with NaNs last?"""
    if u != u:
        return v != v and i < j
    return v != v or u < v or (u == v and i < j)


@cuda.jit
def argsort_rank(out, x, outer, n, inner):
    """A stable argsort: each element counts the elements of its lane that sort before it, and
    writes its own index at that place."""
    for e in range(cuda.grid(1), outer * n * inner, cuda.gridsize(1)):
        o = e // (n * inner)
        r = e - o * n * inner
        i = r // inner
        c = r - i * inner
        base = o * n * inner + c
        u = x[e]
        rank = 0
        for j in range(n):
            if _sorts_before(x[base + j * inner], j, u, i):
                rank += 1
        out[base + rank * inner] = i


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
