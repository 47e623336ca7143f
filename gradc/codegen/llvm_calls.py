"""The calls of library functions in the kernels compiled straight to LLVM IR (the statement half
is gradc/codegen/llvm_cpu.py): rt.py's `sgemm`/`dgemm` and `sgemm_add`/`dgemm_add` (NumPy's
OpenBLAS's cblas_?gemm, beta 0 or 1),
`lapack_alloc`/`lapack_free` (malloc and free) and its LAPACK helpers (LAPACKE's column-major
routines of the same OpenBLAS), each made as rt.py makes it, so both routes call the same
function with the same arguments."""
from __future__ import annotations

import ast

from llvmlite import ir

from .llvm_expr import I32, I64, LL, Array, Unsupported, dotted_name

GEMM_BETA = {"sgemm": 0.0, "dgemm": 0.0, "sgemm_add": 1.0, "dgemm_add": 1.0,  # rt.py's products
             "sgemm_scaled": 1.0, "dgemm_scaled": 1.0}  # (the last with alpha, a 9th argument)
# rt.py's calls of malloc, free and LAPACK (LibraryCalls._lapack): their arguments, 'n' an
# int64, 'c' a char (as an int64), 'a' a float64 array, 'p' an int64 array (pivots, iwork)
LAPACK_CALLS = {"lapack_alloc": "n", "lapack_free": "n", "dpotrf": "na", "dgesv": "nnapa",
                "dgetrf": "nap", "dsyevd": "naaanpn", "dgesdd": "cnnaaanananp", "dgeqrf": "nnaaan",
                "dorgqr": "nnnaaan", "dtrtrs": "nnnnnaa"}


def _lapacke_args(builder, name, args):
    """LAPACKE's arguments from those of rt.py's helper `name`, as the helper passes them.
    A leading dimension is at least 1, as LAPACK requires (an empty matrix's 0 made it print
    "illegal value" and return at once)."""
    col, lower, vectors = (ir.Constant(I32, c) for c in (102, 76, 86))  # COL_MAJOR, 'L', 'V'

    def ld(n):
        one = ir.Constant(n.type, 1)
        return builder.select(builder.icmp_signed(">", n, one), n, one)

    if name == "dpotrf":
        n, a = args
        return [col, lower, n, a, ld(n)]
    if name == "dgesv":
        n, k, a, pivots, b = args
        return [col, n, k, a, ld(n), pivots, b, ld(n)]
    if name == "dgetrf":
        n, a, pivots = args
        return [col, n, n, a, ld(n), pivots]
    if name == "dsyevd":
        n, a, w, work, lwork, iwork, liwork = args
        return [col, vectors, lower, n, a, ld(n), w, work, lwork, iwork, liwork]
    if name == "dgesdd":
        jobz, m, n, a, s, u, ldu, vt, ldvt, work, lwork, iwork = args
        return [col, jobz, m, n, a, ld(m), s, u, ld(ldu), vt, ld(ldvt), work, lwork, iwork]
    if name == "dgeqrf":
        m, n, a, tau, work, lwork = args
        return [col, m, n, a, ld(m), tau, work, lwork]
    if name == "dtrtrs":  # (chars 'U'/'L', 'T'/'N', 'U'/'N' from rt.py's flags)
        upper, trans, unit, n, k, a, b = args
        char = lambda flag, yes, no: builder.select(  # noqa: E731
            builder.icmp_signed("!=", flag, ir.Constant(flag.type, 0)), ir.Constant(I32, yes),
            ir.Constant(I32, no))
        return [col, char(upper, 85, 76), char(trans, 84, 78), char(unit, 85, 78), n, k, a,
                ld(n), b, ld(n)]
    m, mc, k, q, tau, work, lwork = args  # dorgqr
    return [col, m, mc, k, q, ld(m), tau, work, lwork]


class LibraryCalls:
    """The library calls of llvm_cpu._Kernel: its `builder`, `module`, `scope` and `_int`."""

    def _gemm(self, call):
        """`sgemm(ta, tb, m, n, k, a, b, c)` (rt.py): c = op(a) @ op(b) by NumPy's OpenBLAS,
        called as rt.py's kernel calls it (`sgemm_add`: c += op(a) @ op(b); `sgemm_scaled(...,
        c, alpha)`: c += alpha * op(a) @ op(b)). Left to Numba where
        rt.py's sgemm is Numba's np.dot."""
        from . import rt
        name = dotted_name(call.func)
        dtype = "float32" if name.startswith("s") else "float64"
        scaled = name.endswith("_scaled")
        if rt.BLAS != "openblas" or len(call.args) != 8 + scaled:
            raise Unsupported(ast.unparse(call))
        flags = [a.value if isinstance(a, ast.Constant) else None for a in call.args[:2]]
        if any(not isinstance(f, bool) for f in flags):
            raise Unsupported(ast.unparse(call))
        m, n, k = (self._int(a) for a in call.args[2:5])
        arrays = [self.scope.get(dotted_name(a)) for a in call.args[5:8]]
        if any(not isinstance(a, Array) or a.dtype != dtype for a in arrays):
            raise Unsupported(ast.unparse(call))
        real, ptr = LL[dtype], LL[dtype].as_pointer()
        alpha = ir.Constant(real, 1.0)
        if scaled:
            alpha, alpha_dtype = self._expr(call.args[8])
            if alpha_dtype != dtype:
                raise Unsupported(ast.unparse(call))
        fnty = ir.FunctionType(ir.VoidType(), [I32, I32, I32, I64, I64, I64, real, ptr, I64, ptr,
                                               I64, real, ptr, I64])
        symbol = f"gradc_{name[:5]}64"  # (pool_rt.py: whole, or in blocks on gradc's threads)
        gemm = self.module.globals.get(symbol) or ir.Function(self.module, fnty, symbol)
        ta, tb = flags
        trans = lambda t: ir.Constant(I32, 112 if t else 111)  # noqa: E731  (CblasTrans, NoTrans)
        a, b, c = arrays
        self.builder.call(gemm, [ir.Constant(I32, 101), trans(ta), trans(tb), m, n, k,
                                 alpha, a.ptr, m if ta else k, b.ptr,
                                 k if tb else n, ir.Constant(real, GEMM_BETA[name]), c.ptr, n])

    def _lapack(self, call):
        """rt.py's `lapack_alloc(nbytes)` and `lapack_free(address)` (malloc and free), and its
        LAPACK helpers (`info = dpotrf(n, a)`...): LAPACKE's column-major routines of NumPy's
        OpenBLAS, called as rt.py calls them (left to Numba where rt.py has none)."""
        from . import rt
        name = dotted_name(call.func)
        kinds = LAPACK_CALLS[name]
        if len(call.args) != len(kinds) or call.keywords or \
                (name.startswith("d") and rt.BLAS != "openblas"):
            raise Unsupported(ast.unparse(call))
        args = []
        for kind, a in zip(kinds, call.args):
            if kind in "nc":  # (a char passes as a 32-bit int)
                v = self._int(a)
                args.append(self.builder.trunc(v, I32) if kind == "c" else v)
                continue
            array = self.scope.get(dotted_name(a))
            if not isinstance(array, Array) or array.dtype != ("float64" if kind == "a" else
                                                               "int64"):
                raise Unsupported(ast.unparse(call))
            args.append(array.ptr)
        if name == "lapack_alloc":
            symbol, result = "malloc", I64
        elif name == "lapack_free":
            symbol, result = "free", ir.VoidType()
        else:
            symbol, result = f"scipy_LAPACKE_{name}_work64_", I64
            args = _lapacke_args(self.builder, name, args)
        fn = self.module.globals.get(symbol) or ir.Function(
            self.module, ir.FunctionType(result, [a.type for a in args]), symbol)
        return self.builder.call(fn, args), "int64"
