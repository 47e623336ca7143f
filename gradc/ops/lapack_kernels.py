"""The CPU kernels of the ops of gradc/ops/lapack.py: each a loop over the batch of matrices
around a LAPACK call.

Where NumPy brings its own OpenBLAS (gradc/codegen/rt.py BLAS == "openblas"), the kernels call its
LAPACK as np.linalg calls it: each matrix copied transposed into a workspace (column-major,
LAPACK's order; in double, as NumPy computes float32 too), the routine, the results copied back.
So they give NumPy's bits, and they compile straight to LLVM (codegen/llvm_calls.py) in a
fraction of the seconds Numba spends on its np.linalg. Elsewhere (a NumPy built on MKL or
Accelerate, or GRADC_BLAS=numba) they call Numba's np.linalg (SciPy's LAPACK), and `trsolve`
is a plain substitution loop (Numba has no triangular solve).
"""
import numpy as np

from .elementwise import lit


def _openblas():
    from ..codegen import rt
    return rt.BLAS == "openblas"


def _kernel(lapack, numba):
    """A kernel template: through NumPy's OpenBLAS where there is one."""
    return lambda k: lapack(k) if _openblas() else numba(k)


# ---------------------------------------------------------------------------------------------
# NumPy's OpenBLAS, as np.linalg calls it (rt.py's helpers: each returns LAPACK's `info`)

def _casts(k):
    """(to double, from double): the text that converts one element (float32 outputs are
    computed in double, as NumPy computes them)."""
    if k.output.dtype == np.float64:
        return "{}", "{}"
    return "f64({})", "f32({})"


def _transpose(k, dst, src, rows, cols, cast="{}"):
    """dst (cols x rows) = src (rows x cols)^T, `dst` and `src` flat element texts."""
    k.line(f"for i in range({rows}):")
    k.line(f"    for j in range({cols}):")
    element = src.format(f"i * {cols} + j")
    k.line(f"        {dst.format(f'j * {rows} + i')} = {cast.format(element)}")


def _nan_fill(k, at, count):
    k.line(f"for i in range({count}):")
    k.line(f"    out[{at} + i] = {lit(np.nan, k.output.dtype)}")


def _out_of_memory(k, name, free=()):
    """A malloc that failed (address `name` 0): free what the kernel holds, raise MemoryError
    (LAPACK handed a null workspace would crash the process)."""
    k.line(f"if {name} == 0:")
    with k.indent():
        for held in free:
            k.line(f"lapack_free({held})")
        k.line(f"raise MemoryError('gradc: no memory for the LAPACK workspace of {k.op} (malloc "
               "failed): free memory or use smaller matrices')")


def _workspace(k, floats, ints):
    """`pivots` (ints) and `w` (doubles), malloc'd once for the whole batch (LAPACK works in
    place) at address `ws`, which the kernel frees at its end."""
    k.line(f"ws = lapack_alloc(({ints} + {floats}) * 8)")
    _out_of_memory(k, "ws")
    k.line(f"pivots = i64_array(ws, {ints})")
    k.line(f"w = f64_array(ws + {ints} * 8, {floats})")


def _query(k, calls):
    """`lwork`: the largest work size the routines' queries (`calls`, lines that write it to
    q[0]) ask for, at least 1, and `work`, malloc'd at `wk` (NumPy's sizes: the blocking, and
    so the bits, depend on them)."""
    k.line("lwork = 1  # (the work sizes LAPACK asks for, lwork -1, as NumPy asks)")
    for call in calls:
        k.line(call)
        k.line("if i64(q[0]) > lwork:")
        k.line("    lwork = i64(q[0])")
    k.line("wk = lapack_alloc(lwork * 8)")
    _out_of_memory(k, "wk", free=("ws",))
    k.line("work = f64_array(wk, lwork)")


def _cholesky_lapack(k):
    """potrf 'L' of A column-major, in the output (float64) or the workspace; read back
    transposed, zeros above the diagonal."""
    B = k.param("batch", k.inputs[0].shape[0])
    n = k.param("n", k.inputs[0].shape[1])
    step = k.param("step", int(np.prod(k.inputs[0].shape[1:])))
    into, back = _casts(k)
    in_place = k.output.dtype == np.float64
    if not in_place:
        _workspace(k, step, 0)
    k.line(f"for t in range({B}):")
    with k.indent():
        k.line(f"o = t * {step}")
        c = "c[{}]" if in_place else "w[{}]"
        if in_place:
            k.line(f"c = out[o:o + {step}]")
        _transpose(k, c, "x0[o + {}]", n, n, into)
        k.line(f"info = dpotrf({n}, {c[0]})")
        k.line("if info == 0:")
        with k.indent():  # (in place: each element above the diagonal read, then zeroed)
            k.line(f"for i in range({n}):")
            k.line("    for j in range(i):")
            k.line(f"        out[o + i * {n} + j] = {back.format(c.format(f'j * {n} + i'))}")
            k.line(f"        out[o + j * {n} + i] = {k.zero}")
            k.line(f"    out[o + i * {n} + i] = {back.format(c.format(f'i * {n} + i'))}")
        k.line("else:  # not positive definite, or NaN")
        with k.indent():
            _nan_fill(k, "o", step)
    if not in_place:
        k.line("lapack_free(ws)")


def _solve_lapack(k):
    """gesv of A and B column-major, in the workspace."""
    B = k.param("batch", k.inputs[0].shape[0])
    n = k.param("n", k.inputs[0].shape[1])
    nrhs = k.param("k", k.inputs[1].shape[2])
    sa = k.param("a_step", k.inputs[0].shape[1] * k.inputs[0].shape[2])
    sb = k.param("b_step", k.inputs[1].shape[1] * k.inputs[1].shape[2])
    _solve_in_workspace(k, B, n, nrhs, sa, sb, n, f"dgesv({n}, {nrhs}, a, pivots, b)",
                        lambda into: _transpose(k, "a[{}]", f"x0[t * {sa} + {{}}]", n, n, into))


def _solve_in_workspace(k, B, n, nrhs, sa, sb, pivots, call, load_a):
    """Each matrix's right-hand sides solved by the LAPACK `call` (which returns info) in the
    workspace: `load_a(cast)` writes A into `a` (column-major), B is copied in transposed and
    back; NaN where the routine finds A singular."""
    into, back = _casts(k)
    _workspace(k, f"{sa} + {sb}", pivots)
    k.line(f"a = w[0:{sa}]")
    k.line(f"b = w[{sa}:{sa} + {sb}]")
    k.line(f"for t in range({B}):")
    with k.indent():
        load_a(into)
        _transpose(k, "b[{}]", f"x1[t * {sb} + {{}}]", n, nrhs, into)
        k.line(f"info = {call}")
        k.line("if info == 0:")
        with k.indent():
            _transpose(k, f"out[t * {sb} + {{}}]", "b[{}]", nrhs, n, back)
        k.line("else:  # singular")
        with k.indent():
            _nan_fill(k, f"t * {sb}", sb)
    k.line("lapack_free(ws)")


def _slogdet_lapack(k):
    """getrf of A column-major, in the workspace; the sign from the pivots and the diagonal,
    log|det| the sum of the diagonal's logs in order, as NumPy's (0 and -inf where getrf finds
    the matrix singular)."""
    B = k.param("batch", k.inputs[0].shape[0])
    n = k.param("n", k.inputs[0].shape[1])
    sa = k.param("a_step", k.inputs[0].shape[1] * k.inputs[0].shape[2])
    into, back = _casts(k)
    k.reassociate = False  # (log|det| summed in NumPy's order)
    _workspace(k, sa, n)
    k.line(f"for t in range({B}):")
    with k.indent():
        _transpose(k, "w[{}]", f"x0[t * {sa} + {{}}]", n, n, into)
        k.line(f"info = dgetrf({n}, w, pivots)")
        k.line("if info == 0:")
        with k.indent():
            k.line("sign = 1.0")
            k.line("logdet = 0.0")
            k.line(f"for i in range({n}):")
            with k.indent():
                k.line("if pivots[i] != i + 1:  # (1-based) a row swap")
                k.line("    sign = -sign")
                k.line(f"d = w[i * {n} + i]")
                k.line("if d < 0.0:")
                k.line("    sign = -sign")
                k.line("    d = -d")
                k.line("logdet += np.log(d)")
            k.line(f"out[t * 2] = {back.format('sign')}")
            k.line(f"out[t * 2 + 1] = {back.format('logdet')}")
        k.line("else:  # singular")
        with k.indent():
            k.line(f"out[t * 2] = {k.zero}")
            k.line(f"out[t * 2 + 1] = {lit(-np.inf, k.output.dtype)}")
    k.line("lapack_free(ws)")


def _eigh_lapack(k):
    """syevd 'V', 'L' of A column-major, in the workspace, with the workspace sizes LAPACK
    documents as its minimum (NumPy asks for the optimal ones: the same blocking, the same
    bits); the eigenvectors are the columns of the result."""
    B, n = k.param("batch", k.inputs[0].shape[0]), k.param("n", k.inputs[0].shape[1])
    size = k.inputs[0].shape[1]
    sa = k.param("a_step", size * size)
    lwork = k.param("lwork", 1 + 6 * size + 2 * size * size)
    liwork = k.param("liwork", 3 + 5 * size)
    so = k.param("out_step", (size + 1) * size)
    into, back = _casts(k)
    _workspace(k, f"{sa} + {n} + {lwork}", liwork)
    k.line(f"a = w[0:{sa}]")
    k.line(f"values = w[{sa}:{sa} + {n}]")
    k.line(f"work = w[{sa} + {n}:{sa} + {n} + {lwork}]")
    k.line(f"for t in range({B}):")
    with k.indent():
        _transpose(k, "a[{}]", f"x0[t * {sa} + {{}}]", n, n, into)
        k.line(f"info = dsyevd({n}, a, values, work, {lwork}, pivots, {liwork})")
        k.line("if info == 0:")
        with k.indent():
            k.line(f"for j in range({n}):")
            k.line(f"    out[t * {so} + j] = {back.format('values[j]')}")
            _transpose(k, f"out[t * {so} + {n} + {{}}]", "a[{}]", n, n, back)
        k.line("else:  # no convergence")
        with k.indent():
            _nan_fill(k, f"t * {so}", so)
    k.line("lapack_free(ws)")


def _svd_lapack(k):
    """gesdd 'A' (full) or 'S' of A column-major, in the workspace; U and V^T copied back
    transposed."""
    full = k.attr["full"]
    B, m, n = (k.param(name, d) for name, d in zip(("batch", "m", "n"), k.inputs[0].shape))
    mm_, nn_ = k.inputs[0].shape[1:]
    r_ = min(mm_, nn_)
    k1_, k2_ = (mm_, nn_) if full else (r_, r_)
    r, k1, k2 = k.param("r", r_), k.param("k1", k1_), k.param("k2", k2_)
    sa, su = k.param("a_step", mm_ * nn_), k.param("u_size", mm_ * k1_)
    sv = k.param("v_size", k2_ * nn_)
    so = k.param("out_step", int(np.prod(k.output.shape[1:])))
    iw = k.param("iwork", 8 * r_)
    into, back = _casts(k)
    jobz = ord("A") if full else ord("S")
    _workspace(k, f"{sa} + {r} + {su} + {sv} + 1", iw)
    k.line(f"a = w[0:{sa}]")
    k.line(f"s = w[{sa}:{sa} + {r}]")
    k.line(f"u = w[{sa} + {r}:{sa} + {r} + {su}]")
    k.line(f"vt = w[{sa} + {r} + {su}:{sa} + {r} + {su} + {sv}]")
    k.line(f"q = w[{sa} + {r} + {su} + {sv}:{sa} + {r} + {su} + {sv} + 1]")
    args = f"{jobz}, {m}, {n}, a, s, u, {m}, vt, {k2}"
    _query(k, [f"info = dgesdd({args}, q, -1, pivots)"])
    k.line(f"for t in range({B}):")
    with k.indent():
        k.line(f"o = t * {so}")
        _transpose(k, "a[{}]", f"x0[t * {sa} + {{}}]", m, n, into)
        k.line(f"info = dgesdd({args}, work, lwork, pivots)  # (jobz {chr(jobz)!r})")
        k.line("if info == 0:")
        with k.indent():
            _transpose(k, "out[o + {}]", "u[{}]", k1, m, back)
            k.line(f"for j in range({r}):")
            k.line(f"    out[o + {su} + j] = {back.format('s[j]')}")
            _transpose(k, f"out[o + {su} + {r} + {{}}]", "vt[{}]", n, k2, back)
        k.line("else:  # no convergence")
        with k.indent():
            _nan_fill(k, "o", so)
    k.line("lapack_free(wk)")
    k.line("lapack_free(ws)")


def _qr_lapack(k):
    """geqrf of A column-major, in the workspace, then orgqr of its reflectors for Q (m x K:
    K = m for the complete Q); R the upper triangle of geqrf's first K rows."""
    complete = k.attr["complete"]
    B, m, n = (k.param(name, d) for name, d in zip(("batch", "m", "n"), k.inputs[0].shape))
    mm_, nn_ = k.inputs[0].shape[1:]
    K_ = mm_ if complete else min(mm_, nn_)
    K, mn = k.param("kk", K_), k.param("mn", min(mm_, nn_))
    sa, sq = k.param("a_step", mm_ * nn_), k.param("q_size", mm_ * K_)
    reflectors = k.param("reflectors", mm_ * min(mm_, nn_))  # (a's first mn columns)
    so = k.param("out_step", int(np.prod(k.output.shape[1:])))
    into, back = _casts(k)
    _workspace(k, f"{sa} + {mn} + {sq} + 1", 0)
    k.line(f"a = w[0:{sa}]")
    k.line(f"tau = w[{sa}:{sa} + {mn}]")
    k.line(f"qm = w[{sa} + {mn}:{sa} + {mn} + {sq}]")
    k.line(f"q = w[{sa} + {mn} + {sq}:{sa} + {mn} + {sq} + 1]")
    _query(k, [f"info = dgeqrf({m}, {n}, a, tau, q, -1)",
               f"info = dorgqr({m}, {K}, {mn}, qm, tau, q, -1)"])
    k.line(f"for t in range({B}):")
    with k.indent():
        k.line(f"o = t * {so}")
        _transpose(k, "a[{}]", f"x0[t * {sa} + {{}}]", m, n, into)
        k.line(f"info = dgeqrf({m}, {n}, a, tau, work, lwork)")
        k.line(f"for i in range({reflectors}):")
        k.line("    qm[i] = a[i]")
        k.line(f"info2 = dorgqr({m}, {K}, {mn}, qm, tau, work, lwork)")
        k.line("if info == 0 and info2 == 0:")
        with k.indent():
            _transpose(k, "out[o + {}]", "qm[{}]", K, m, back)
            k.line(f"for i in range({K}):")
            k.line(f"    for j in range({n}):")
            k.line(f"        out[o + {sq} + i * {n} + j] = {k.zero}")
            k.line(f"    for j in range(i, {n}):")
            k.line(f"        out[o + {sq} + i * {n} + j] = {back.format(f'a[j * {m} + i]')}")
        k.line("else:")
        with k.indent():
            _nan_fill(k, "o", so)
    k.line("lapack_free(wk)")
    k.line("lapack_free(ws)")


# ---------------------------------------------------------------------------------------------
# Numba's np.linalg (SciPy's LAPACK)


def _batch_kernel(k, compute, sizes):
    """The loop over the batch: `compute` writes lines that read matrix `a` (C order, a view of
    the input: Numba's np.linalg copies it) and write the batch element's results at
    `out[o:...]`; any LinAlgError fills that element with NaN."""
    B = k.param("batch", k.inputs[0].shape[0])
    step_in = k.param("in_step", int(np.prod(k.inputs[0].shape[1:])))
    step_out = k.param("out_step", int(np.prod(k.output.shape[1:])))
    m, n = (k.param(name, d) for name, d in zip(("m", "n"), sizes))
    k.line(f"for t in range({B}):")
    with k.indent():
        k.line(f"o = t * {step_out}")
        k.line(f"a = x0[t * {step_in}:(t + 1) * {step_in}].reshape(({m}, {n}))")
        k.line("try:")
        with k.indent():
            compute(k, m, n)
        k.line("except Exception:  # LinAlgError: singular, not positive definite, NaN input")
        k.line(f"    out[o:o + {step_out}] = np.nan")


def _write(k, name, rows, cols, at):
    """Copy the matrix `name` into out at offset `at` (C order), element by element (Numba's
    results may be Fortran-ordered)."""
    k.line(f"for i in range({rows}):")
    k.line(f"    for j in range({cols}):")
    k.line(f"        out[{at} + i * {cols} + j] = {name}[i, j]")


def _cholesky_numba(k):
    def compute(k, m, n):  # (Numba's cholesky and eigh read the lower triangle, as NumPy's:
        k.line("L = np.linalg.cholesky(a)")  # tests/test_linalg.py's S_junk checks it)
        _write(k, "L", n, n, "o")
    _batch_kernel(k, compute, k.inputs[0].shape[1:])


def _solve_numba(k):
    nrhs = k.param("k", k.inputs[1].shape[2])

    def compute(k, m, n):
        k.line(f"b = x1[t * out_step:(t + 1) * out_step].reshape(({n}, {nrhs}))")
        k.line("x = np.linalg.solve(a, b)")
        _write(k, "x", n, nrhs, "o")
    _batch_kernel(k, compute, k.inputs[0].shape[1:])


def _slogdet_numba(k):
    def compute(k, m, n):
        k.line("sign, logdet = np.linalg.slogdet(a)")
        k.line("out[o] = sign")
        k.line("out[o + 1] = logdet")
    _batch_kernel(k, compute, k.inputs[0].shape[1:])


def _eigh_numba(k):
    def compute(k, m, n):
        k.line("w, v = np.linalg.eigh(a)")
        k.line(f"for j in range({n}):")
        k.line("    out[o + j] = w[j]")
        _write(k, "v", n, n, f"o + {n}")
    _batch_kernel(k, compute, k.inputs[0].shape[1:])


def _svd_numba(k):
    full = k.attr["full"]
    mm_, nn_ = k.inputs[0].shape[1:]
    r, K1, K2 = min(mm_, nn_), (mm_ if full else min(mm_, nn_)), (nn_ if full else min(mm_, nn_))
    r, K1, K2 = k.param("r", r), k.param("k1", K1), k.param("k2", K2)

    def compute(k, m, n):
        k.line(f"u, s, vh = np.linalg.svd(a, {full})")
        _write(k, "u", m, K1, "o")
        k.line(f"for j in range({r}):")
        k.line(f"    out[o + {m} * {K1} + j] = s[j]")
        _write(k, "vh", K2, n, f"o + {m} * {K1} + {r}")
    _batch_kernel(k, compute, k.inputs[0].shape[1:])


def _qr_numba(k):
    complete = k.attr["complete"]
    mm_, nn_ = k.inputs[0].shape[1:]
    K = k.param("kk", mm_ if complete else min(mm_, nn_))

    def compute(k, m, n):
        if complete and mm_ > nn_:
            # Numba's qr is the reduced one: the QR of [a | I] has the complete Q (the same
            # Householder reflections on a's columns) and a's R in its first n columns
            k.line(f"ext = np.zeros(({m}, {n} + {m}), a.dtype)")
            k.line(f"ext[:, :{n}] = a")
            k.line(f"for i in range({m}):")
            k.line(f"    ext[i, {n} + i] = 1")
            k.line("q, rr = np.linalg.qr(ext)")
            k.line(f"r = rr[:, :{n}]")
        else:
            k.line("q, r = np.linalg.qr(a)")
        _write(k, "q", m, K, "o")
        _write(k, "r", K, n, f"o + {m} * {K}")
    _batch_kernel(k, compute, k.inputs[0].shape[1:])


# ---------------------------------------------------------------------------------------------
# triangular solves

def _trsolve_lapack(k):
    """trtrs of A and B column-major, in the workspace: A's memory read column-major is A^T,
    so its triangle and op are the other ones. A zero on the diagonal: NaN (SciPy's
    LinAlgError). (The substitution loop below took 50 ms of a 500x500 Cholesky's gradient,
    twice; trtrs ~2.)"""
    lower, trans, unit = k.attr["lower"], k.attr["trans"], k.attr["unit"]
    batch, size, count = k.inputs[1].shape
    B, n, nrhs = k.param("batch", batch), k.param("n", size), k.param("k", count)
    sa, sb = k.param("a_step", size * size), k.param("b_step", size * count)

    def load_a(into):  # (A as it is: read column-major it is A^T)
        k.line(f"for i in range({sa}):")
        k.line(f"    a[i] = {into.format(f'x0[t * {sa} + i]')}")

    call = f"dtrtrs({int(lower)}, {int(not trans)}, {int(unit)}, {n}, {nrhs}, a, b)"
    _solve_in_workspace(k, B, n, nrhs, sa, sb, 0, call, load_a)


def _trsolve_numba(k):
    """Substitution, forward (op(a) lower) or backward, on the right-hand sides' rows."""
    lower, trans, unit = k.attr["lower"], k.attr["trans"], k.attr["unit"]
    B, n, nrhs = (k.param(name, d) for name, d in zip(("batch", "n", "k"), k.inputs[1].shape))
    forward = lower != trans  # op(a) is lower triangular
    at = (lambda i, j: f"x0[ao + {j} * {n} + {i}]") if trans else \
        (lambda i, j: f"x0[ao + {i} * {n} + {j}]")
    k.line(f"for t in range({B}):")
    with k.indent():
        k.line(f"ao = t * {n} * {n}")
        k.line(f"bo = t * {n} * {nrhs}")
        k.line(f"for ii in range({n}):")
        with k.indent():
            k.line("i = ii" if forward else f"i = {n} - 1 - ii")
            k.line(f"for c in range({nrhs}):")
            k.line(f"    out[bo + i * {nrhs} + c] = x1[bo + i * {nrhs} + c]")
            k.line("for j in range(i):" if forward else f"for j in range(i + 1, {n}):")
            k.line(f"    s = {at('i', 'j')}")
            k.line(f"    for c in range({nrhs}):")
            k.line(f"        out[bo + i * {nrhs} + c] -= s * out[bo + j * {nrhs} + c]")
            if not unit:
                k.line(f"d = {at('i', 'i')}")
                k.line(f"for c in range({nrhs}):")
                k.line(f"    out[bo + i * {nrhs} + c] /= d")


KERNELS = {"cholesky": _kernel(_cholesky_lapack, _cholesky_numba),
           "solve": _kernel(_solve_lapack, _solve_numba),
           "slogdet": _kernel(_slogdet_lapack, _slogdet_numba),
           "eigh": _kernel(_eigh_lapack, _eigh_numba),
           "svd": _kernel(_svd_lapack, _svd_numba),
           "qr": _kernel(_qr_lapack, _qr_numba),
           "trsolve": _kernel(_trsolve_lapack, _trsolve_numba)}
