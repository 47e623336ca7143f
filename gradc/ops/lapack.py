"""Factorizations and solves (np.linalg, scipy.linalg): few primitives, everything else composite.

Every op takes a batch of matrices, (B, m, n), the leading axes folded by the caller
(gradc/functions/lapack.py). Ops with several results (eigh, svd, qr, slogdet) give them packed
in one array that the caller slices apart; their VJP receives the packed cotangent.

The CPU kernels (gradc/ops/lapack_kernels.py) loop over the batch around a call of LAPACK: NumPy's
own where it has one (NumPy's bits, compiled straight to LLVM), else Numba's np.linalg. A matrix
LAPACK refuses (singular for solve, not positive definite for cholesky, a NaN input for Numba's)
gives NaN results for that matrix: a compiled kernel cannot raise NumPy's LinAlgError cheaply
mid-program, and NaN is what JAX does; `check_finite=True` turns it into a NonFiniteError. The
CUDA target has no kernels for them.

The VJPs are IR (matmul, trsolve, solve...), so they differentiate again. cholesky and eigh read
only the lower triangle of their input, as NumPy does, so their gradients are exact for that: zero
above the diagonal, both halves of the symmetric gradient folded below it.
"""
import numpy as np

from ..errors import CompileError, NonDifferentiableError, ShapeError
from . import fn
from .elementwise import elementwise
from .lapack_kernels import KERNELS
from .registry import KERNEL, OpDef, register

NUMPY_NAME = {"cholesky": "np.linalg.cholesky", "trsolve": "scipy.linalg.solve_triangular",
              "solve": "np.linalg.solve", "slogdet": "np.linalg.slogdet",
              "eigh": "np.linalg.eigh", "svd": "np.linalg.svd", "qr": "np.linalg.qr"}


def _no_cuda(prog, node, out, ins):
    raise CompileError(f"{NUMPY_NAME[node.op]} has no CUDA kernel; use target='cpu' (gradc "
                       "computes np.linalg.inv, det, lstsq, pinv and norm(ord=2) with the routines "
                       "of np.linalg.solve, slogdet and svd)", source=node.source)


# ---------------------------------------------------------------------------------------------
# IR helpers on batches of matrices (B, m, n), for the VJPs and the composites

def mT(x):
    return fn.swapaxes(x, -1, -2)


def mm(a, b):
    return fn.matmul(a, b)


def eye(like, n=None):
    n = like.shape[-1] if n is None else n
    return fn.as_value(np.eye(n, dtype=like.dtype), like)


def tril(x, k=0):
    mask = fn.as_value(np.tri(x.shape[-2], x.shape[-1], k, dtype=bool), x)
    return fn.where(mask, x, fn.zeros_like(x))


def triu(x, k=0):
    mask = fn.as_value(~np.tri(x.shape[-2], x.shape[-1], k - 1, dtype=bool), x)
    return fn.where(mask, x, fn.zeros_like(x))


def phi(x):
    """The lower triangle with the diagonal halved."""
    return tril(x) - fn.multiply(x, eye(x)) * 0.5


def diagonal(x):
    """(B, n, n) -> (B, n)."""
    return fn.sum(fn.multiply(x, eye(x)), axis=-1)


def diag_embed(v):
    """(B, n) -> (B, n, n)."""
    return fn.multiply(fn.expand_dims(v, -1), eye(v, v.shape[-1]))


def trsolve(a, b, lower, trans=False, unit=False):
    """op(a) x = b for triangular a (B, n, n) and b (B, n, k); op transposes when `trans`."""
    return a.graph.apply("trsolve", fn.promote(a, b), lower=bool(lower), trans=bool(trans),
                         unit=bool(unit))


def solve(a, b):
    return a.graph.apply("solve", fn.promote(a, b))


def _reciprocal_gaps(w):
    """F[i, j] = 1 / (w[j] - w[i]) off the diagonal, 0 on it ((B, n) -> (B, n, n)); the diagonal's
    denominator is 1, not 0, so no inf appears even in the branch `where` drops (its second
    derivative would be NaN)."""
    e = eye(w, w.shape[-1])
    gaps = fn.expand_dims(w, -2) - fn.expand_dims(w, -1) + e
    return fn.where(fn.as_value(np.eye(w.shape[-1], dtype=bool), w), fn.zeros_like(gaps),
                    fn.divide(1.0, gaps))


def _unless_zero(x, y):
    """y where x != 0, else 0: a term F * x or x / s of the VJPs below vanishes where no
    cotangent reaches it, even where F or 1/s is inf (repeated eigenvalues or singular values,
    a rank-deficient matrix), so the gradient of the values alone stays finite; a nonzero x
    there keeps the inf or NaN of a derivative that does not exist."""
    return fn.where(fn.compare("equal", x, 0), fn.zeros_like(y), y)


def _fold_lower(g):
    """The gradient with respect to the lower triangle that an op reads, from the gradient `g`
    of a function of the symmetric matrix that triangle stands for."""
    return phi(g + mT(g))


# ---------------------------------------------------------------------------------------------
# references (the interpreter's): NumPy per batch element, NaN where LAPACK refuses

def _each(f, a, out_shape, dtype):
    out = np.full((a.shape[0],) + out_shape, np.nan, dtype)
    for t in range(a.shape[0]):
        try:
            out[t] = f(t)
        except np.linalg.LinAlgError:
            pass
    return out


def _sym(a):
    return np.tril(a) + np.swapaxes(np.tril(a, -1), -1, -2)


def _svd_ref(a, full):
    m, n = a.shape[1:]

    def one(t):
        u, s, vh = np.linalg.svd(a[t], full_matrices=full)
        return np.concatenate([u.ravel(), s, vh.ravel()])
    return _each(one, a, _svd_infer_shape(m, n, full), a.dtype)


def _qr_ref(a, complete):
    def one(t):
        q, r = np.linalg.qr(a[t], mode="complete" if complete else "reduced")
        return np.concatenate([q.ravel(), r.ravel()])
    return _each(one, a, _qr_infer_shape(*a.shape[1:], complete), a.dtype)


def _trsolve_ref(a, b, lower, trans, unit):
    a = np.tril(a) if lower else np.triu(a)
    if unit:
        a = a - a * np.eye(a.shape[-1]) + np.eye(a.shape[-1])
    if trans:
        a = np.swapaxes(a, -1, -2)
    with np.errstate(all="ignore"):
        return _each(lambda t: np.linalg.solve(a[t], b[t]), a, b.shape[1:], b.dtype)


# ---------------------------------------------------------------------------------------------
# shape rules

def _square(x, op):
    if x.ndim != 3 or x.shape[1] != x.shape[2]:
        raise ShapeError(f"{NUMPY_NAME[op]}: the last two axes must be square, got {x.shape[1:]}")


def _infer_square(op):
    def infer(inputs, **_):
        _square(inputs[0], op)
        return inputs[0].shape, inputs[0].dtype
    return infer


def _infer_rhs(op):
    def infer(inputs, **_):
        a, b = inputs
        _square(a, op)
        if b.ndim != 3 or b.shape[:2] != a.shape[:2]:
            raise ShapeError(f"{NUMPY_NAME[op]}: right-hand sides {b.shape[1:]} do not fit "
                             f"matrices {a.shape[1:]}")
        return b.shape, b.dtype
    return infer


def _svd_infer_shape(m, n, full):
    r = min(m, n)
    k1, k2 = (m, n) if full else (r, r)
    return (m * k1 + r + k2 * n,)


def _qr_infer_shape(m, n, complete):
    kk = m if complete else min(m, n)
    return (m * kk + kk * n,)


# ---------------------------------------------------------------------------------------------
# VJPs

def _cholesky_vjp(node, g):
    """Murray 2016: S = L^-T Phi(L^T Lbar) L^-1, the gradient for a symmetric A."""
    L = node.output
    p = phi(mm(mT(L), g))
    x = trsolve(L, p, lower=True, trans=True)  # L^-T P
    s = mT(trsolve(L, mT(x), lower=True, trans=True))  # (L^-T (L^-T P)^T)^T = L^-T P L^-1
    return [_fold_lower(s)]


def _trsolve_vjp(node, g):
    a, _ = node.inputs
    x = node.output
    lower, trans, unit = node.attr["lower"], node.attr["trans"], node.attr["unit"]
    gb = trsolve(a, g, lower, not trans, unit)
    ga = -(mm(x, mT(gb)) if trans else mm(gb, mT(x)))
    ga = tril(ga, -1 if unit else 0) if lower else triu(ga, 1 if unit else 0)
    return [ga, gb]


def _solve_vjp(node, g):
    a, _ = node.inputs
    gb = solve(mT(a), g)
    return [-mm(gb, mT(node.output)), gb]


def _slogdet_vjp(node, g):
    """d log|det A| = tr(A^-1 dA); the sign is piecewise constant."""
    a = node.inputs[0]
    inv_t = solve(mT(a), fn.broadcast_to(eye(a), a.shape))
    return [fn.multiply(inv_t, fn.reshape(g[:, 1], (-1, 1, 1)))]


def eigh_parts(packed):
    return packed[:, 0, :], packed[:, 1:, :]


def _eigh_vjp(node, g):
    """A = V diag(w) V^T: Abar = V (diag(wbar) + F * (V^T Vbar)) V^T, F = 1 / (w_j - w_i)."""
    w, v = eigh_parts(node.output)
    gw, gv = eigh_parts(g)
    vt_gv = mm(mT(v), gv)
    inner = diag_embed(gw) + _unless_zero(vt_gv, fn.multiply(_reciprocal_gaps(w), vt_gv))
    return [_fold_lower(mm(mm(v, inner), mT(v)))]


def svd_parts(packed, m, n, full):
    """(U, s, Vh) from svd's packed output (B, ...)."""
    r = min(m, n)
    k1, k2 = (m, n) if full else (r, r)
    B = packed.shape[0]
    u = fn.reshape(packed[:, :m * k1], (B, m, k1))
    s = packed[:, m * k1:m * k1 + r]
    vh = fn.reshape(packed[:, m * k1 + r:], (B, k2, n))
    return u, s, vh


def _svd_vjp(node, g):
    """Townsend 2016, for the thin factors (the full ones' extra vectors are not differentiable:
    the caller wraps them in no_gradient). F = 1 / (s_j^2 - s_i^2)."""
    m, n = node.inputs[0].shape[1:]
    full = node.attr["full"]
    r = min(m, n)
    u, s, vh = svd_parts(node.output, m, n, full)
    gu, gs, gvh = svd_parts(g, m, n, full)
    u, gu, vh, gvh = u[:, :, :r], gu[:, :, :r], vh[:, :r, :], gvh[:, :r, :]
    v, gv = mT(vh), mT(gvh)
    f = _reciprocal_gaps(s * s)
    S = fn.expand_dims(s, -2)  # right-multiplying by diag(s) scales columns
    ut_gu, vt_gv = mm(mT(u), gu), mm(mT(v), gv)
    j, k = ut_gu - mT(ut_gu), vt_gv - mT(vt_gv)
    inner = (_unless_zero(j, fn.multiply(f, j)) * S + diag_embed(gs)
             + fn.multiply(fn.expand_dims(s, -1), _unless_zero(k, fn.multiply(f, k))))
    ga = mm(mm(u, inner), vh)
    if m > r:  # (I - U U^T) Ubar S^-1 V^T
        x = gu - mm(u, ut_gu)
        ga = ga + mm(_unless_zero(x, fn.divide(x, S)), vh)
    if n > r:  # U S^-1 Vbar^T (I - V V^T)
        x = gv - mm(v, vt_gv)
        ga = ga + mm(u, mT(_unless_zero(x, fn.divide(x, S))))
    return [ga]


def qr_parts(packed, m, n, complete):
    kk = m if complete else min(m, n)
    B = packed.shape[0]
    return (fn.reshape(packed[:, :m * kk], (B, m, kk)),
            fn.reshape(packed[:, m * kk:], (B, kk, n)))


def _qr_square_vjp(q, r, gq, gr):
    """A = QR with m >= n (Q m x n): Abar = (Qbar + Q copyltu(M)) R^-T, M = R Rbar^T - Qbar^T Q,
    copyltu(M) the symmetric matrix of M's lower triangle."""
    mat = mm(r, mT(gr)) - mm(mT(gq), q)
    sym = tril(mat) + mT(tril(mat, -1))
    x = gq + mm(q, sym)
    return mT(trsolve(r, mT(x), lower=False))  # X R^-T = (R^-1 X^T)^T


def _qr_vjp(node, g):
    """Wide matrices (m < n) split A = [X | Y] with X = Q R1 square: Ybar = Q R2bar, and X's
    gradient with Qbar + Y R2bar^T as Q's (Liao et al. 2019)."""
    m, n = node.inputs[0].shape[1:]
    complete = node.attr["complete"]
    q, r = qr_parts(node.output, m, n, complete)
    gq, gr = qr_parts(g, m, n, complete)
    if m >= n:  # complete: only Q's first n columns and R's first n rows carry a gradient
        q, gq, r, gr = q[:, :, :n], gq[:, :, :n], r[:, :n, :], gr[:, :n, :]
        return [_qr_square_vjp(q, r, gq, gr)]
    y = node.inputs[0][:, :, m:]
    r1, gr1, gr2 = r[:, :, :m], gr[:, :, :m], gr[:, :, m:]
    gx = _qr_square_vjp(q, r1, gq + mm(y, mT(gr2)), gr1)
    return [fn.concatenate([gx, mm(q, gr2)], axis=-1)]


# ---------------------------------------------------------------------------------------------
# the ops

def _lapack_op(name, infer, ref, vjp, kernel):
    register(OpDef(name, KERNEL, infer, ref=ref, vjp=vjp, kernel=kernel, cuda=_no_cuda))


_lapack_op("cholesky", _infer_square("cholesky"),
           lambda a: _each(lambda t: np.linalg.cholesky(_sym(a[t])), a, a.shape[1:], a.dtype),
           _cholesky_vjp, KERNELS["cholesky"])
_lapack_op("trsolve", _infer_rhs("trsolve"), _trsolve_ref, _trsolve_vjp, KERNELS["trsolve"])
_lapack_op("solve", _infer_rhs("solve"),
           lambda a, b: _each(lambda t: np.linalg.solve(a[t], b[t]), a, b.shape[1:], b.dtype),
           _solve_vjp, KERNELS["solve"])


def _slogdet_infer(inputs):
    _square(inputs[0], "slogdet")
    return (inputs[0].shape[0], 2), inputs[0].dtype


_lapack_op("slogdet", _slogdet_infer,
           lambda a: _each(lambda t: np.array(np.linalg.slogdet(a[t])), a, (2,), a.dtype),
           _slogdet_vjp, KERNELS["slogdet"])


def _eigh_infer(inputs):
    _square(inputs[0], "eigh")
    B, n, _ = inputs[0].shape
    return (B, n + 1, n), inputs[0].dtype


def _eigh_ref(a):
    def one(t):
        w, v = np.linalg.eigh(_sym(a[t]))
        return np.concatenate([w[None], v])
    return _each(one, a, (a.shape[1] + 1, a.shape[1]), a.dtype)


_lapack_op("eigh", _eigh_infer, _eigh_ref, _eigh_vjp, KERNELS["eigh"])


def _matrices(x, op):
    if x.ndim != 3:
        raise ShapeError(f"{NUMPY_NAME[op]} takes a batch of matrices, got {x.shape}")


def _svd_infer(inputs, full):
    _matrices(inputs[0], "svd")
    B, m, n = inputs[0].shape
    return (B,) + _svd_infer_shape(m, n, full), inputs[0].dtype


def _qr_infer(inputs, complete):
    _matrices(inputs[0], "qr")
    B, m, n = inputs[0].shape
    return (B,) + _qr_infer_shape(m, n, complete), inputs[0].dtype


_lapack_op("svd", _svd_infer, _svd_ref, _svd_vjp, KERNELS["svd"])
_lapack_op("qr", _qr_infer, _qr_ref, _qr_vjp, KERNELS["qr"])


# no_gradient: the identity, for results whose derivative is not defined (the extra singular
# vectors of svd(full_matrices=True), Q's extra columns of qr(mode='complete')); autodiff reaching
# it raises `reason`
def _no_gradient_vjp(node, g):
    if not _is_zero(g):
        raise NonDifferentiableError(node.attr["reason"], source=node.source)
    return [None]


def _positions(shape, starts, stops, steps):
    return [list(range(*slice(a, b if b >= 0 else None, c).indices(d)))
            for d, a, b, c in zip(shape, starts, stops, steps)]


def _is_zero(v, region=None):
    """Is the cotangent `v` zero by construction (in `region`, one set of positions per axis;
    None: everywhere)? The gradient of the rest of a matrix that no_gradient's part was
    concatenated to is a slice of sums of unslices that wrote elsewhere."""
    if fn.const_value(v) == 0:
        return True
    node = v.node
    if node is None:
        return False
    if node.op in ("add", "subtract"):
        return all(_is_zero(x, region) for x in node.inputs)
    if node.op == "negative":
        return _is_zero(node.inputs[0], region)
    attr = node.attr
    if node.op == "slice":  # the region, in the sliced input's positions
        taken = _positions(node.inputs[0].shape, attr["starts"], attr["stops"], attr["steps"])
        if region is not None:
            taken = [[t[i] for i in r] for t, r in zip(taken, region)]
        return _is_zero(node.inputs[0], [set(t) for t in taken])
    if node.op == "unslice":
        written = _positions(attr["shape"], attr["starts"], attr["stops"], attr["steps"])
        return region is not None and any(not (r & set(w)) for r, w in zip(region, written))
    return region is None and node.op in ("reshape", "broadcast_to", "transpose") and \
        _is_zero(node.inputs[0])


elementwise("no_gradient", ref=lambda x, reason: x, scalar=lambda m, dt, x, reason: x,
            vjp=_no_gradient_vjp)


def no_gradient(x, reason):
    return x.graph.apply("no_gradient", (x,), reason=reason)
