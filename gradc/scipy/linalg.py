"""scipy.linalg for traced code: solve_triangular, cho_factor, cho_solve. Call these (not SciPy's,
which would turn a traced value into a NumPy array) inside a function gradc traces:

    from gradc.scipy.linalg import solve_triangular
    z = solve_triangular(L, y, lower=True)

Batched over leading axes (the matrices' and the right-hand sides' broadcast together); b may be
a vector. A zero on the diagonal gives inf/NaN where SciPy raises LinAlgError. Called on NumPy
arrays outside a trace, they are SciPy's own (so a loss runs as plain NumPy too).
"""
import scipy.linalg

from ..ir import Value
from ..errors import ArgumentError
from ..handlers import refuse_caught_linalg_error
from ..functions.lapack import cholesky, solve_with
from ..ops import lapack as la
from ..trace import traced

_TRANS = {0: False, "N": False, 1: True, "T": True, 2: True, "C": True}  # (real: C is T)


@traced
def solve_triangular(a, b, trans=0, lower=False, unit_diagonal=False, overwrite_b=False,
                     check_finite=True):
    """x with op(a) x = b, reading only a's lower (lower=True) or upper triangle; op is the
    transpose for trans 1/'T'/2/'C'; unit_diagonal takes a's diagonal as ones."""
    if not isinstance(a, Value) and not isinstance(b, Value):
        return scipy.linalg.solve_triangular(a, b, trans=trans, lower=lower,
                                             unit_diagonal=unit_diagonal)
    if trans not in _TRANS:
        raise ArgumentError(f"solve_triangular: trans must be 0, 1, 2, 'N', 'T' or 'C', got "
                            f"{trans!r}")
    refuse_caught_linalg_error("scipy.linalg.solve_triangular",
                               "a zero on the diagonal (a singular matrix)")
    return solve_with(a, b, "solve_triangular",
                      lambda a2, b2: la.trsolve(a2, b2, lower, _TRANS[trans], unit_diagonal))


@traced
def cho_factor(a, lower=False, overwrite_a=False, check_finite=True):
    """(c, lower): c the Cholesky factor in the triangle `lower` names, zeros in the other
    (SciPy leaves whatever was there)."""
    if not isinstance(a, Value):
        return scipy.linalg.cho_factor(a, lower=lower)
    return cholesky(a, upper=not lower), bool(lower)


@traced
def cho_solve(c_and_lower, b, overwrite_b=False, check_finite=True):
    """x with A x = b from cho_factor's (c, lower): two triangular solves."""
    c, lower = c_and_lower
    if not isinstance(c, Value) and not isinstance(b, Value):
        return scipy.linalg.cho_solve((c, lower), b)
    y = solve_triangular(c, b, trans=0 if lower else 1, lower=lower)
    return solve_triangular(c, y, trans=1 if lower else 0, lower=lower)


__all__ = ["solve_triangular", "cho_factor", "cho_solve"]
