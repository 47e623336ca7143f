"""np.linalg's factorizations and solves: solve, inv, det, slogdet, cholesky, eigh, eigvalsh, svd,
qr, pinv, lstsq, matrix_power, cond, matrix_rank. Batched over leading axes where NumPy batches. The primitives
(gradc/ops/lapack.py) take (B, m, n) batches; this module folds the leading axes, unpacks the
packed results and builds the composites (inv from solve, det from slogdet, pinv and lstsq from
svd, matrix_power from matmul).

A matrix NumPy would refuse with LinAlgError (singular for solve/inv, not positive definite for
cholesky, holding NaN for the SVD) gives NaN for that matrix instead; see gradc/ops/lapack.py. So
the functions NumPy may raise it from refuse to be traced inside a `try` whose handler would catch
it (gradc/handlers.py): that handler would never run.
"""
import operator

import numpy as np

from ..errors import ArgumentError, ShapeError, UnsupportedOpError
from ..handlers import refuse_caught_linalg_error
from ..ops import fn
from ..ops import lapack as la
from ._args import ABSENT, array_arg

_results = np.linalg._linalg  # NumPy's named result tuples

# when NumPy raises LinAlgError (for refuse_caught_linalg_error's message)
_SINGULAR = "a singular matrix"
_NOT_POSITIVE = "a matrix that is not positive definite"
_NO_SVD = "a matrix holding NaN (its SVD does not converge)"


def matrix_arg(a, name, square=False, like=None):
    """`a` as a float graph value of at least 2 dimensions (integers become float64, as NumPy's
    linalg does); a NumPy array becomes a constant of the graph of `like` (the traced b of
    np.linalg.solve(A, b) with A a NumPy array)."""
    (x,) = fn.promote(array_arg(a, like), float_only=True)
    if x.ndim < 2:
        raise ShapeError(f"np.linalg.{name}: {x.ndim}-dimensional array given; the array must "
                         "be at least two-dimensional")
    if square and x.shape[-1] != x.shape[-2]:
        raise ShapeError(f"np.linalg.{name}: the last two dimensions of the array must be square, "
                         f"got {x.shape}")
    return x


def fold(x):
    """(..., m, n) -> (B, m, n), with the leading shape to unfold with."""
    lead = x.shape[:-2]
    return fn.reshape(x, (int(np.prod(lead, dtype=np.int64)),) + x.shape[-2:]), lead


def unfold(x, lead):
    return fn.reshape(x, lead + x.shape[1:])


def solve(a, b):
    """np.linalg.solve: b is a vector only when 1-D (NumPy 2), else a stack of matrices; the
    leading axes broadcast."""
    refuse_caught_linalg_error("np.linalg.solve", _SINGULAR)
    return solve_with(a, b, "np.linalg.solve", la.solve)


def solve_with(a, b, name, solver):
    """`solver(a, b)` on stacks of square matrices a (n, n) and right-hand sides b (n, k) whose
    leading axes broadcast: b is a vector only when 1-D (NumPy 2's rule), promoted to a's float
    dtype; np.linalg.solve's and scipy.linalg.solve_triangular's shared calling convention."""
    a = matrix_arg(a, name.rsplit(".", 1)[-1], square=True, like=b)
    (b,) = fn.promote(array_arg(b, a), float_only=True)
    a, b = fn.promote(a, b)
    vector = b.ndim == 1
    if vector:
        b = fn.expand_dims(b, -1)
    if b.shape[-2] != a.shape[-1]:
        raise ShapeError(f"{name}: b's {b.shape[-2]} rows do not fit a of shape {a.shape}")
    lead = fn.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a2, _ = fold(fn.broadcast_to(a, lead + a.shape[-2:]))
    b2, _ = fold(fn.broadcast_to(b, lead + b.shape[-2:]))
    x = unfold(solver(a2, b2), lead)
    return fn.squeeze(x, -1) if vector else x


def inv(a):
    refuse_caught_linalg_error("np.linalg.inv", _SINGULAR)
    return _inverse(a)


def _inverse(a):
    """inv without the check (cond's: NumPy's cond does not raise for a singular matrix)."""
    a = matrix_arg(a, "inv", square=True)
    return solve_with(a, fn.broadcast_to(la.eye(a), a.shape), "np.linalg.inv", la.solve)


def slogdet(a):
    a = matrix_arg(a, "slogdet", square=True)
    if a.shape[-1] == 0:  # (the empty product: det 1, as NumPy)
        one = fn.full(a.graph, a.shape[:-2], 1.0, a.dtype)
        return _results.SlogdetResult(one, fn.zeros_like(one))
    a2, lead = fold(a)
    packed = fn.reshape(a.graph.apply("slogdet", (a2,)), lead + (2,))
    return _results.SlogdetResult(packed[..., 0], packed[..., 1])


def det(a):
    """sign * exp(log|det|): its gradient, det * A^-T, is NaN at a singular matrix."""
    sign, logdet = slogdet(a)
    return fn.multiply(sign, fn.unary("exp", logdet))


def cholesky(a, upper=False):
    """The lower factor from a's lower triangle, as NumPy; upper=True: the upper factor from the
    upper triangle."""
    refuse_caught_linalg_error("np.linalg.cholesky", _NOT_POSITIVE)
    a = matrix_arg(a, "cholesky", square=True)
    if upper:
        return la.mT(cholesky(la.mT(a)))
    a2, lead = fold(a)
    return unfold(a.graph.apply("cholesky", (a2,)), lead)


def _uplo(a, UPLO, name):
    """The matrix whose lower triangle holds the one NumPy reads."""
    if UPLO not in ("L", "U", "l", "u"):
        raise ArgumentError(f"np.linalg.{name}: UPLO must be 'L' or 'U', got {UPLO!r}")
    return la.mT(a) if UPLO in ("U", "u") else a


def eigh(a, UPLO="L"):
    """Eigenvalues ascending, eigenvectors as columns (their signs are LAPACK's). The gradient
    of the eigenvectors needs distinct eigenvalues."""
    a = matrix_arg(a, "eigh", square=True)
    a2, lead = fold(_uplo(a, UPLO, "eigh"))
    w, v = la.eigh_parts(a.graph.apply("eigh", (a2,)))
    return _results.EighResult(unfold(w, lead), unfold(v, lead))


def eigvalsh(a, UPLO="L"):
    return eigh(a, UPLO).eigenvalues


_NOT_UNIQUE = ("the gradient of the extra {} of {} is not defined (they are any orthonormal basis "
               "of the complement); use {} or leave them out of the differentiated result")


def svd(a, full_matrices=True, compute_uv=True, hermitian=False):
    """U, S, Vh as NumPy (full_matrices=True by default). Gradients: of S always (for distinct,
    nonzero singular values), of the thin U and Vh; not of the extra columns of a full U or
    rows of a full Vh."""
    a = matrix_arg(a, "svd")
    if hermitian:  # (through eigh, which does not raise for NaN)
        return _hermitian_svd(a, compute_uv)
    refuse_caught_linalg_error("np.linalg.svd", _NO_SVD)
    m, n = a.shape[-2:]
    r = min(m, n)
    full = bool(full_matrices) and bool(compute_uv) and m != n
    if r == 0:  # (no singular value: a full U or Vh is the identity, as NumPy's; LAPACK's was NaN)
        lead = a.shape[:-2]
        s = fn.full(a.graph, lead + (0,), 0.0, a.dtype)
        if not compute_uv:
            return s
        u, vh = (fn.broadcast_to(fn.as_value(np.eye(k, d, dtype=a.dtype), a), lead + (k, d))
                 for k, d in ((m, m if full else 0), (n if full else 0, n)))
        return _results.SVDResult(u, s, vh)
    a2, lead = fold(a)
    u, s, vh = la.svd_parts(a.graph.apply("svd", (a2,), full=full), m, n, full)
    if not compute_uv:
        return unfold(s, lead)
    u, s, vh = unfold(u, lead), unfold(s, lead), unfold(vh, lead)
    # (split at the user's shape, so that the gradient of the thin part leaves a provably zero
    # cotangent on the rest: see no_gradient)
    reason = _NOT_UNIQUE.format("singular vectors", "svd(full_matrices=True)",
                                "full_matrices=False")
    if full and m > r:
        u = fn.concatenate([u[..., :r], la.no_gradient(u[..., r:], reason)], axis=-1)
    if full and n > r:
        vh = fn.concatenate([vh[..., :r, :], la.no_gradient(vh[..., r:, :], reason)], axis=-2)
    return _results.SVDResult(u, s, vh)


def _hermitian_svd(a, compute_uv):
    """svd(hermitian=True) as NumPy computes it: from eigh of a's lower triangle, the
    eigenvalues' magnitudes in descending order, their signs moved into Vh."""
    if not compute_uv:
        return np.sort(fn.unary("abs", eigvalsh(a)), axis=-1)[..., ::-1]
    w, u = eigh(a)
    order = np.argsort(fn.unary("abs", w), axis=-1)[..., ::-1]
    sign = np.take_along_axis(np.copysign(1.0, w), order, axis=-1)
    s = np.take_along_axis(fn.unary("abs", w), order, axis=-1)
    u = np.take_along_axis(u, order[..., None, :], axis=-1)
    return _results.SVDResult(u, s, la.mT(u * sign[..., None, :]))


def qr(a, mode="reduced"):
    """Q, R as NumPy (mode 'reduced', 'complete' or 'r'); the signs of R's diagonal are LAPACK's."""
    a = matrix_arg(a, "qr")
    if mode not in ("reduced", "complete", "r"):
        raise UnsupportedOpError(f"np.linalg.qr(mode={mode!r}) is not supported; use 'reduced', "
                                 "'complete' or 'r'")
    m, n = a.shape[-2:]
    complete = mode == "complete" and m > n
    a2, lead = fold(a)
    q, r = la.qr_parts(a.graph.apply("qr", (a2,), complete=complete), m, n, complete)
    q, r = unfold(q, lead), unfold(r, lead)
    if complete:
        reason = _NOT_UNIQUE.format("columns of Q", "qr(mode='complete')", "mode='reduced'")
        q = fn.concatenate([q[..., :n], la.no_gradient(q[..., n:], reason)], axis=-1)
        r = fn.concatenate([r[..., :n, :], fn.zeros_like(r[..., n:, :])], axis=-2)
    if mode == "r":
        return r
    return _results.QRResult(q, r)


def _inverse_singular_values(s, cutoff):
    """1/s where s > cutoff, else 0 (without an inf in the dropped branch)."""
    keep = fn.compare("greater", s, cutoff)
    return fn.where(keep, fn.divide(1.0, fn.where(keep, s, fn.ones_like(s))), fn.zeros_like(s))


def pinv(a, rcond=None, hermitian=False, rtol=ABSENT):
    """V diag(1/s) U^T over the singular values above rcond * max(s) (rtol: the same; NumPy's
    default 1e-15). Its gradient needs distinct singular values."""
    a = matrix_arg(a, "pinv")
    if rcond is not None and rtol is not ABSENT:
        raise ArgumentError("np.linalg.pinv: give rcond or rtol, not both")
    rcond = rtol if rtol is not ABSENT and rtol is not None else (1e-15 if rcond is None else rcond)
    if a.size == 0:  # (as NumPy: before the SVD, so hermitian=True takes any empty shape)
        return fn.zeros_like(la.mT(a))
    if not hermitian:
        refuse_caught_linalg_error("np.linalg.pinv", _NO_SVD)
    u, s, vh = svd(a, full_matrices=False, hermitian=hermitian)
    cutoff = fn.multiply(_largest(s, keepdims=True), _per_matrix(rcond, a))
    inv_s = _inverse_singular_values(s, cutoff)
    return fn.matmul(la.mT(vh) * fn.expand_dims(inv_s, -2), la.mT(u))


def _largest(s, keepdims=False):
    """The largest singular value (of each matrix), 0 where there are none (an empty matrix:
    its pseudo-inverse and least squares solution are empty or zeros, as NumPy's)."""
    if s.shape[-1] == 0:
        return fn.zeros_like(s[..., :1] if keepdims else fn.sum(s, axis=-1))
    return fn.max(s, axis=-1, keepdims=keepdims)


def _per_matrix(v, a):
    """A tolerance per matrix of a batch (rcond=[...]) along a new last axis, to meet the
    singular values' (a number stays one: it broadcasts)."""
    return fn.expand_dims(array_arg(v, a), -1) if np.ndim(v) else v


def lstsq(a, b, rcond=None):
    """(x, residuals, rank, s) as NumPy, x from the SVD (gelsd's answer). NumPy's residuals have
    a shape that depends on the rank; here they have NumPy's full-rank shape ((K,) when m > n,
    else (0,)) and are NaN where the rank is below n."""
    refuse_caught_linalg_error("np.linalg.lstsq", "a matrix holding NaN or inf (its SVD does "
                               "not converge)")
    a = matrix_arg(a, "lstsq", like=b)
    if a.ndim != 2:
        raise ShapeError(f"np.linalg.lstsq takes a 2-D a, got {a.shape}")
    (b,) = fn.promote(array_arg(b, a), float_only=True)
    a, b = fn.promote(a, b)
    vector = b.ndim == 1
    b2 = fn.expand_dims(b, -1) if vector else b
    if b2.ndim != 2 or b2.shape[0] != a.shape[0]:
        raise ShapeError(f"np.linalg.lstsq: b of shape {b.shape} does not fit a of shape {a.shape}")
    m, n = a.shape
    u, s, vh = svd(a, full_matrices=False)
    eps = np.finfo(a.dtype).eps
    rcond = eps * max(m, n) if rcond is None else rcond
    if np.ndim(rcond) == 0 and rcond < 0:  # (LAPACK's gelsd: machine precision; -1 was
        rcond = eps  # NumPy's default before 1.14, and code still passes it)
    cutoff = fn.multiply(_largest(s), rcond)
    inv_s = _inverse_singular_values(s, cutoff)
    x = fn.matmul(la.mT(vh), fn.expand_dims(inv_s, -1) * fn.matmul(la.mT(u), b2))
    rank = fn.astype(fn.sum(fn.astype(fn.compare("greater", s, cutoff), np.int32)), np.int32)
    if m > n:
        d = b2 - fn.matmul(a, x)
        res = fn.sum(fn.multiply(d, d), axis=0)
        full = fn.compare("equal", rank, n)
        res = fn.where(full, res, fn.full(a.graph, res.shape, np.nan, res.dtype))
    else:
        res = fn.as_value(np.zeros((0,), a.dtype), a)
    return (fn.squeeze(x, -1) if vector else x), res, rank, s


def matrix_power(a, n):
    """a @ a @ ... (n a Python integer: repeated squaring); n < 0 inverts first."""
    x = array_arg(a)
    if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        raise ShapeError(f"np.linalg.matrix_power: the last two dimensions must be square, got "
                         f"{x.shape}")
    try:
        n = operator.index(n)
    except TypeError:
        raise ArgumentError("np.linalg.matrix_power: n must be a Python integer") from None
    if n == 0:
        return fn.broadcast_to(la.eye(x), x.shape)
    a = x
    if n < 0:
        refuse_caught_linalg_error("np.linalg.matrix_power", _SINGULAR + " (n < 0 inverts it)")
        a, n = _inverse(x), -n
    result, power = None, a
    while n:
        if n & 1:
            result = power if result is None else fn.matmul(result, power)
        n >>= 1
        if n:
            power = fn.matmul(power, power)
    return result


def cond(x, p=None):
    """np.linalg.cond: the ratio of the extreme singular values (p None, 2, -2), else
    norm(x, p) * norm(inv(x), p)."""
    a = matrix_arg(x, "cond", square=p not in (None, 2, -2))
    if p is None or p in (2, -2):
        refuse_caught_linalg_error("np.linalg.cond", _NO_SVD)
        s = svd(a, compute_uv=False)
        n = s.shape[-1]
        largest, smallest = (fn.reshape(fn.slice_(s, (0,) * (s.ndim - 1) + (i,),
                                                  s.shape[:-1] + (i + 1,), (1,) * s.ndim),
                                        s.shape[:-1]) for i in (0, n - 1))
        r = largest / smallest if p != -2 else smallest / largest
    else:  # (a singular matrix's inverse is NaN here: see gradc/ops/lapack.py)
        r = np.linalg.norm(a, p, axis=(-2, -1)) * np.linalg.norm(_inverse(a), p, axis=(-2, -1))
    # NumPy's: a NaN from a singular matrix (0 / 0) is inf, unless the matrix held a NaN
    held_nan = fn.any(fn.compare("not_equal", a, a), (-2, -1))
    return fn.where(fn.compare("not_equal", r, r) & fn.compare("equal", held_nan, False),
                    np.inf, r)


def matrix_rank(A, tol=None, hermitian=False, *, rtol=None):
    """np.linalg.matrix_rank: the singular values above tol (default: the largest times
    max(M, N) * eps), counted (int64; not differentiable)."""
    a = array_arg(A)
    if a.ndim < 2:
        return fn.astype(fn.any(fn.compare("not_equal", a, 0)), np.int64)
    a = matrix_arg(a, "matrix_rank")
    if min(a.shape[-2:]) == 0:
        return fn.full(a.graph, a.shape[:-2], 0, np.int64)
    # (hermitian: NumPy's eigenvalues of the lower triangle, their magnitudes)
    if not hermitian:
        refuse_caught_linalg_error("np.linalg.matrix_rank", _NO_SVD)
    s = fn.unary("abs", eigvalsh(a)) if hermitian else svd(a, compute_uv=False)

    if tol is None:
        if rtol is None:
            rtol = max(a.shape[-2:]) * np.finfo(a.dtype).eps
        tol = _largest(s, keepdims=True) * _per_matrix(rtol, a)
    elif rtol is not None:
        raise ArgumentError("`tol` and `rtol` can't be both set.")
    else:
        tol = _per_matrix(tol, a)
    return fn.sum(fn.astype(fn.compare("greater", s, tol), np.int64), -1)


FUNCTIONS = {
    np.linalg.cond: cond, np.linalg.matrix_rank: matrix_rank,
    np.linalg.solve: solve, np.linalg.inv: inv, np.linalg.det: det, np.linalg.slogdet: slogdet,
    np.linalg.cholesky: cholesky, np.linalg.eigh: eigh, np.linalg.eigvalsh: eigvalsh,
    np.linalg.svd: svd, np.linalg.qr: qr, np.linalg.pinv: pinv, np.linalg.lstsq: lstsq,
    np.linalg.matrix_power: matrix_power,
}
