"""gradc's own threads for large matrix products and long loops, compiled straight to LLVM IR.

A product of at least rt.SPLIT_WORK multiply-adds is cut into blocks of rows (or columns)
of its result by rt.product_blocks, a rule of the shape alone; each block is one
single-threaded call of the kernels' ?gemm (rt.gemm_symbol: gradc's own, or OpenBLAS's).
The calling thread publishes the blocks and takes them one at a time, as do the pool's
threads; it then waits only for blocks already taken.

Why not OpenBLAS's threads: they synchronize many times inside one product and wait by
yielding the CPU, so while another process holds the cores each wait costs a time slice (W2's
step went from 1 to 28 ms). Here a product synchronizes once, and a thread the scheduler has
set aside takes no block: the caller does the work itself. The blocks, and so the bits, depend
on the shape only, never on the thread count or the load; rt.py's product (the Numba route,
AOT modules) runs the same blocks one after another, so both routes give the same bits.

A call in chunks (a long loop kernel's, passes/fuse.py decide_parallel, or a batched
product's) is a job of the same kind: its CHUNKS chunks of the kernel's outer loop are its
blocks, each a call of the kernel over its part (gradc_pool_chunks, called by driver_rt.py's
chunked calls).

The pool's state is an int64 array owned by Python (`Pool.words`), one field per cache line.
Its threads are Python threads that call `gradc_pool_work` through ctypes (the GIL released)
and sleep on a futex (Linux) after spinning ~26 us; a product wakes them only if one sleeps.
"""
import atexit
import ctypes
import functools
import os
import platform
import sys
import threading

from llvmlite import ir

from . import rt
from .driver_rt import DESC_TIME
from .native import native_engine

I32, I64, F32, F64 = ir.IntType(32), ir.IntType(64), ir.FloatType(), ir.DoubleType()
I8P = ir.IntType(8).as_pointer()
LINE = 8  # int64 words per cache line
(GENERATION, SLEEPERS, NEXT, DONE, BUSY, STOP, WORKERS, LOCK, USERS, SAVED, ALONE, LAST,
 TICKET, GEMMS, JOB) = (LINE * i for i in range(15))
# GEMMS, GEMMS + 1: the addresses of gradc's own float32 and float64 products (gemm_rt.py),
# written as each is bound (0 before: no product kernel has linked yet), where the pool calls
# them (rt.GEMM "avx512"); it is compiled before any of them, which a model without products,
# or without float64 ones, never binds
# a job's fields, in the JOB line(s): the product (CBLAS's arguments) and its blocks
FIELDS = ("double", "ta", "tb", "m", "n", "k", "a", "b", "c", "alpha", "beta", "by_rows",
          "block", "blocks", "call", "args", "time")  # call: a loop kernel's chunk entry (0: a
# product); time: the address of the chunked call's word that keeps its last time (0: a
# product); alpha: the product's scale, a double's bits (1.0, or an SGD step's -lr)
WORDS = JOB + 3 * LINE  # (the job: len(FIELDS) words)
assert len(FIELDS) <= WORDS - JOB
SPINS = 1000  # ~26 us of `pause` (AMD EPYC) before a pool thread sleeps (and before a waiting caller
# yields its CPU: the thread with the block it waits for may need it)
CLOSED = 1 << 62  # NEXT while a job is being written: no block to take
# A job's number (its `seq`, counting jobs modulo 2**29) is in the high half of NEXT, the next
# block's index in the low half; TICKET holds the job's number and its count of blocks, in one
# word written before NEXT opens. A thread takes block i of the job it incremented NEXT for
# only if TICKET names that same job and i < its count. (Comparing i with the count alone
# raced: a thread that drew an index past the end of one job, then lost its CPU before it read
# the count, read the next job's count, and ran that job's block i a second time, beside the
# thread that drew it there: an addmm's block added twice, and the caller, counting DONE,
# returned before the last block was done.)
SEQ_MASK, INDEX_BITS = (1 << 29) - 1, 32
# After a job whose caller took every block (no thread awake came in time) or, done with
# its own, waited for the other threads' blocks longer than those blocks would have taken it
# (sharing lost time: a thread ran slow or was set aside, another process holds the cores),
# the next ALONE_AFTER_WAIT jobs run their blocks on the caller alone: the same blocks, so the
# same bits, without the waits, and without pool threads spinning on a CPU the caller needs.
# (A wait longer than one block was the rule before: a thread woken late from its sleep, in
# these VMs ~100 us and more after a long one, then made W3's one job a step run alone for
# the next 32 steps, and the thread's long sleep meanwhile made the next shared one late
# again: W3 ran alone in 95% of its steps, 1.5 ms against 1.1 shared. Measured side by side
# while another process loaded both cores, W2, W3, W5 and W8 slowed no more than before.)
ALONE_AFTER_WAIT = 32
LONG_BLOCK_WORK = 1 << 23  # blocks this long are shared even then: sharing a loaded machine
# still gives the process more CPU time, and waits are short beside them (W10: 22 ms a step
# shared under load, 35 ms alone)
WAIT_FLOOR = 150_000  # cycles (~50 us): a shorter wait is no sign of load
# A short job that comes alone does not wake a sleeping thread: it runs on the caller. Waking
# one cost the caller ~6 us (a futex wake that reaches another CPU: ~2 us with no sleeper, in
# these VMs), and the woken thread came late for short work: a chunked 173K-element loop of
# ~9 us single-threaded took 33-47 us after an idle spell, against 19 us while the thread was
# awake (the CNN benchmark's two such loops made its step 5% slower at 2 threads than at one).
# Short: a product of less than WAKE_WORK multiply-adds, or a chunked call whose last run took
# less than WAKE_CYCLES on one thread (its first run wakes). Alone: no job in the last
# STREAM_GAP cycles, so that a stream of short jobs (an RNN's steps) still wakes the thread
# for the next ones.
WAKE_WORK = 1 << 22
WAKE_CYCLES = 100_000  # ~35 us
STREAM_GAP = 150_000
_FUTEX = {"x86_64": 202, "aarch64": 98}  # the syscall's number
_WAIT, _WAKE = 128, 129  # FUTEX_WAIT_PRIVATE, FUTEX_WAKE_PRIVATE
STATS = {"compiled": 0, "loaded": 0}  # the pool's library compiled / read from the disk cache


def supported():
    return sys.platform.startswith("linux") and platform.machine() in _FUTEX


def _pause(b):
    """The CPU's spin-wait hint (x86 `pause`, ARM `yield`), through LLVM's intrinsic."""
    m = b.module
    if platform.machine() == "aarch64":
        hint = m.globals.get("llvm.aarch64.hint") or ir.Function(
            m, ir.FunctionType(ir.VoidType(), [I32]), "llvm.aarch64.hint")
        b.call(hint, [I32(1)])
    elif platform.machine() == "x86_64":
        pause = m.globals.get("llvm.x86.sse2.pause") or ir.Function(
            m, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
        b.call(pause, [])


def module_ir():
    """LLVM IR of the pool: gradc_sgemm64/gradc_dgemm64 (CBLAS's row-major signature)
    and the pool threads' loop gradc_pool_work(void)."""
    return str(_Module().module)


class _Module:
    """The pool's LLVM module, one function per method."""

    def __init__(self):
        m = self.module = ir.Module("gradc_pool")
        self.state = ir.GlobalVariable(m, ir.ArrayType(I64, WORDS), "gradc_pool_state")
        self.syscall = ir.Function(m, ir.FunctionType(I64, [I64], var_arg=True), "syscall")
        self.set_threads = ir.Function(m, ir.FunctionType(I32, [I32]), rt.SET_BLAS_THREADS)
        self.yield_cpu = ir.Function(m, ir.FunctionType(I32, []), "sched_yield")
        self.clock = ir.Function(m, ir.FunctionType(I64, []), "llvm.readcyclecounter")
        self.gemms = {double: ir.Function(m, _gemm_type(double),
                                          rt.gemm_symbol("d" if double else "s"))
                      for double in (0, 1)} if rt.GEMM != "avx512" else None
        self.gemvs = {double: ir.Function(m, _gemv_type(double),
                                          f"scipy_cblas_{'d' if double else 's'}gemv64_")
                      for double in (0, 1)}
        self.run_block = self._run_block()
        self.take = self._take_blocks()
        self._worker()
        self.sections = {enter: self._one_thread(enter) for enter in (True, False)}
        for double in (0, 1):
            self._product(double)
        self._chunks()

    def gemm(self, b, double):
        """The ?gemm the pool calls: OpenBLAS's by its symbol, or gradc's own by the address in
        its GEMMS word."""
        if self.gemms is not None:
            return self.gemms[double]
        address = b.load_atomic(self.word(b, GEMMS + double), "seq_cst", 8)
        return b.inttoptr(address, _gemm_type(double).as_pointer())

    def word(self, b, i):
        """The address of the pool's word i."""
        return b.gep(self.state, [I64(0), I64(i)])

    def futex(self, b, op, value, timeout):
        address = b.bitcast(self.word(b, GENERATION), I32.as_pointer())
        b.call(self.syscall, [I64(_FUTEX[platform.machine()]), address, I32(op), value, timeout])

    def _internal(self, name, fnty):
        fn = ir.Function(self.module, fnty, name)
        fn.linkage = "internal"
        return fn, ir.IRBuilder(fn.append_basic_block("entry"))

    def _run_block(self):
        """run_block(job, i): block i of the job at `job` (its FIELDS, int64 words)."""
        fn, b = self._internal("run_block", ir.FunctionType(ir.VoidType(),
                                                            [I64.as_pointer(), I64]))
        job, i = fn.args
        f = {name: b.load(b.gep(job, [I64(at)])) for at, name in enumerate(FIELDS)}
        with b.if_then(b.icmp_signed("!=", f["call"], I64(0))):  # chunk i of a loop kernel
            entry = b.inttoptr(f["call"], ir.FunctionType(
                ir.VoidType(), [I64.as_pointer(), I64]).as_pointer())
            b.call(entry, [b.inttoptr(f["args"], I64.as_pointer()), i])
            b.ret_void()
        rows = b.icmp_signed("!=", f["by_rows"], I64(0))
        start = b.mul(i, f["block"])
        count = b.sub(b.select(rows, f["m"], f["n"]), start)
        count = b.select(b.icmp_signed("<", f["block"], count), f["block"], count)
        ta, tb = (b.icmp_signed("!=", f[t], I64(0)) for t in ("ta", "tb"))
        lda = b.select(ta, f["m"], f["k"])
        ldb = b.select(tb, f["k"], f["n"])
        # rows start..: a's rows (its columns when transposed), c's rows; columns: b's, c's
        a_at = b.select(rows, b.select(ta, start, b.mul(start, f["k"])), I64(0))
        b_at = b.select(rows, I64(0), b.select(tb, b.mul(start, f["k"]), start))
        c_at = b.select(rows, b.mul(start, f["n"]), start)
        mm = b.select(rows, count, f["m"])
        nn = b.select(rows, f["n"], count)
        trans = [b.select(t, I32(112), I32(111)) for t in (ta, tb)]
        with b.if_else(b.icmp_signed("!=", f["double"], I64(0))) as (is_double, is_single):
            for double, branch in ((1, is_double), (0, is_single)):
                with branch:
                    real = F64 if double else F32
                    size = I64(8 if double else 4)

                    def ptr(base, at):
                        return b.inttoptr(b.add(base, b.mul(at, size)), real.as_pointer())
                    alpha = b.bitcast(f["alpha"], F64)
                    b.call(self.gemm(b, double), [
                        I32(101), *trans, mm, nn, f["k"],
                        alpha if double else b.fptrunc(alpha, F32),
                        ptr(f["a"], a_at), lda, ptr(f["b"], b_at), ldb,
                        b.sitofp(f["beta"], real), ptr(f["c"], c_at), f["n"]])
        b.ret_void()
        return fn

    def _take_blocks(self):
        """take_blocks() -> count: take blocks of the published job until none is left."""
        fn, b = self._internal("take_blocks", ir.FunctionType(I64, []))
        count = b.alloca(I64)
        b.store(I64(0), count)
        loop, work, done = (fn.append_basic_block(n) for n in ("loop", "work", "done"))
        b.branch(loop)
        b.position_at_end(loop)
        drawn = b.atomic_rmw("add", self.word(b, NEXT), I64(1), "seq_cst")
        ticket = b.load_atomic(self.word(b, TICKET), "seq_cst", 8)
        index_mask = I64((1 << INDEX_BITS) - 1)
        same_job = b.icmp_unsigned("==", b.lshr(drawn, I64(INDEX_BITS)),
                                   b.lshr(ticket, I64(INDEX_BITS)))
        i = b.and_(drawn, index_mask)
        b.cbranch(b.and_(same_job, b.icmp_unsigned("<", i, b.and_(ticket, index_mask))),
                  work, done)
        b.position_at_end(work)
        b.call(self.run_block, [b.bitcast(self.word(b, JOB), I64.as_pointer()), i])
        b.atomic_rmw("add", self.word(b, DONE), I64(1), "seq_cst")
        b.store(b.add(b.load(count), I64(1)), count)
        b.branch(loop)
        b.position_at_end(done)
        b.ret(b.load(count))
        return fn

    def _worker(self):
        """gradc_pool_work(): a pool thread's loop, until STOP: spin for a new generation,
        then sleep on it; take the new job's blocks."""
        fn = ir.Function(self.module, ir.FunctionType(ir.VoidType(), []), "gradc_pool_work")
        entry, wait, spin, sleep, got, run = (fn.append_basic_block(n) for n in (
            "entry", "wait", "spin", "sleep", "got", "run"))
        b = ir.IRBuilder(entry)
        seen, spins = b.alloca(I64), b.alloca(I64)
        timeout = b.alloca(ir.ArrayType(I64, 2))  # timespec: 1 s (a lost wake-up would cost no
        b.store(I64(1), b.gep(timeout, [I64(0), I64(0)]))  # more: a caller never waits for
        b.store(I64(0), b.gep(timeout, [I64(0), I64(1)]))  # a thread that has taken no block)
        b.store(b.load_atomic(self.word(b, GENERATION), "seq_cst", 8), seen)
        b.store(I64(0), spins)
        b.branch(wait)
        b.position_at_end(wait)
        current = b.load_atomic(self.word(b, GENERATION), "seq_cst", 8)
        b.cbranch(b.icmp_signed("!=", current, b.load(seen)), got, spin)
        b.position_at_end(spin)
        n = b.load(spins)
        b.store(b.add(n, I64(1)), spins)
        with b.if_then(b.icmp_signed("<", n, I64(SPINS))):
            _pause(b)
            b.branch(wait)
        b.branch(sleep)
        b.position_at_end(sleep)  # (a product reads SLEEPERS after its GENERATION: Dekker's)
        b.atomic_rmw("add", self.word(b, SLEEPERS), I64(1), "seq_cst")
        now = b.load_atomic(self.word(b, GENERATION), "seq_cst", 8)
        with b.if_then(b.icmp_signed("==", now, b.load(seen))):
            self.futex(b, _WAIT, b.trunc(now, I32), b.bitcast(timeout, I8P))
        b.atomic_rmw("sub", self.word(b, SLEEPERS), I64(1), "seq_cst")
        b.branch(wait)
        b.position_at_end(got)
        b.store(current, seen)
        b.store(I64(0), spins)
        with b.if_then(b.icmp_signed("!=", b.load_atomic(self.word(b, STOP), "seq_cst", 8),
                                     I64(0))):
            b.ret_void()
        b.branch(run)
        b.position_at_end(run)
        b.call(self.take, [])
        b.branch(wait)

    def _one_thread(self, enter):
        """one_thread_enter/leave(): OpenBLAS on one thread while any gradc product runs, the
        count it had put back when the last one leaves (counted under a spin lock: two
        callers' set-and-put-back would race, and a product could run threaded, with other
        bits)."""
        fn, b = self._internal("one_thread_" + ("enter" if enter else "leave"),
                               ir.FunctionType(ir.VoidType(), []))
        lock, locked = fn.append_basic_block("lock"), fn.append_basic_block("locked")
        b.branch(lock)
        b.position_at_end(lock)
        got = b.cmpxchg(self.word(b, LOCK), I64(0), I64(1), "seq_cst", "seq_cst")
        with b.if_then(b.not_(b.extract_value(got, 1))):
            _pause(b)
            b.branch(lock)
        b.branch(locked)
        b.position_at_end(locked)
        users = b.load(self.word(b, USERS))
        if enter:
            with b.if_then(b.icmp_signed("==", users, I64(0))):
                saved = b.sext(b.call(self.set_threads, [I32(1)]), I64)
                b.store(saved, self.word(b, SAVED))
            b.store(b.add(users, I64(1)), self.word(b, USERS))
        else:
            b.store(b.sub(users, I64(1)), self.word(b, USERS))
            with b.if_then(b.icmp_signed("==", users, I64(1))):
                b.call(self.set_threads, [b.trunc(b.load(self.word(b, SAVED)), I32)])
        b.store_atomic(I64(0), self.word(b, LOCK), "seq_cst", 8)
        b.ret_void()
        return fn

    def _product(self, double):
        """gradc_?gemm64: CBLAS's signature; the product whole, or in blocks (rt.product_blocks)
        taken by the pool's threads, or by the caller alone."""
        fn = ir.Function(self.module, _gemm_type(double), f"gradc_{'d' if double else 's'}gemm64")
        _, ta, tb, m, n, k, alpha, a, _, b_, _, beta, c, _ = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        enter, leave = self.sections[True], self.sections[False]
        work = b.mul(b.mul(m, n), k)
        middling = b.icmp_signed(">", work, I64(rt.SINGLE_THREADED_WORK))
        with b.if_then(b.or_(b.icmp_signed("==", m, I64(1)), b.icmp_signed("==", n, I64(1)))):
            with b.if_then(middling):  # (a matrix times a vector: ?gemv, rt.vector_product_args)
                b.call(enter, [])
            self._vector_product(b, double, fn.args)
            with b.if_then(middling):
                b.call(leave, [])
            b.ret_void()
        # (OpenBLAS's thread count matters only where OpenBLAS runs the product)
        openblas = rt.GEMM != "avx512"
        with b.if_then(b.icmp_signed("<", work, I64(rt.SPLIT_WORK))):
            if openblas:
                with b.if_then(middling):  # (rt.py: on the calling thread alone)
                    b.call(enter, [])
            b.call(self.gemm(b, double), list(fn.args))
            if openblas:
                with b.if_then(middling):
                    b.call(leave, [])
            b.ret_void()
        by_rows, block, blocks = _blocks(b, m, n, k)
        if openblas:
            b.call(enter, [])
        job = {"double": I64(double), "ta": b.zext(b.icmp_signed("==", ta, I32(112)), I64),
               "tb": b.zext(b.icmp_signed("==", tb, I32(112)), I64), "m": m, "n": n, "k": k,
               "a": b.ptrtoint(a, I64), "b": b.ptrtoint(b_, I64), "c": b.ptrtoint(c, I64),
               "alpha": b.bitcast(alpha if double else b.fpext(alpha, F64), I64),
               "beta": b.fptosi(beta, I64), "by_rows": by_rows, "block": block,
               "blocks": blocks, "call": I64(0), "args": I64(0), "time": I64(0)}
        self._dispatch(b, job, b.icmp_signed(">=", b.sdiv(work, blocks), I64(LONG_BLOCK_WORK)),
                       b.icmp_signed("<", work, I64(WAKE_WORK)))
        if openblas:
            b.call(leave, [])
        b.ret_void()

    def _vector_product(self, b, double, args):
        """rt.vector_product_args's ?gemv call, from ?gemm's arguments (n = 1: a is the matrix;
        else m = 1: b is)."""
        _, ta, tb, m, n, k, alpha, a, _, b_, _, beta, c, _ = args
        ta, tb = b.icmp_signed("==", ta, I32(112)), b.icmp_signed("==", tb, I32(112))
        of_a = b.icmp_signed("==", n, I64(1))
        trans = b.select(of_a, ta, b.not_(tb))
        rows = b.select(of_a, b.select(ta, k, m), b.select(tb, n, k))
        cols = b.select(of_a, b.select(ta, m, k), b.select(tb, k, n))
        b.call(self.gemvs[double], [I32(101), b.select(trans, I32(112), I32(111)), rows, cols,
                                    alpha, b.select(of_a, a, b_), cols, b.select(of_a, b_, a),
                                    I64(1), beta, c, I64(1)])

    def _chunks(self):
        """gradc_pool_chunks(entry, args, chunks): a chunked call's chunks 0..chunks-1, each
        `entry(args, c)` (driver_rt.py), taken by the pool's threads or by the caller alone,
        as a product's blocks are."""
        fn = ir.Function(self.module, ir.FunctionType(ir.VoidType(), [I64, I64.as_pointer(),
                                                                      I64]), "gradc_pool_chunks")
        entry, args, chunks = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        job = {name: I64(0) for name in FIELDS}
        time = b.load(b.gep(args, [I64(DESC_TIME)]))
        job.update(call=entry, args=b.ptrtoint(args, I64), blocks=chunks, time=time)
        last = b.load(b.inttoptr(time, I64.as_pointer()))  # (0: its first run)
        short = b.and_(b.icmp_signed(">", last, I64(0)), b.icmp_signed("<", last, I64(WAKE_CYCLES)))
        self._dispatch(b, job, ir.Constant(ir.IntType(1), 0), short)
        b.ret_void()

    def _dispatch(self, b, job, long_blocks, short):
        """Run the job's blocks: shared unless the pool has no threads, another caller holds
        it, a recent job found its threads slow (ALONE) and these blocks are not long, or the
        job is short, comes alone and would have to wake a thread (WAKE_WORK)."""
        alone_for = b.load_atomic(self.word(b, ALONE), "seq_cst", 8)
        with b.if_then(b.icmp_signed(">", alone_for, I64(0))):
            b.atomic_rmw("sub", self.word(b, ALONE), I64(1), "seq_cst")
        since = b.sub(b.call(self.clock, []), b.load_atomic(self.word(b, LAST), "seq_cst", 8))
        asleep = b.icmp_signed(">", b.load_atomic(self.word(b, SLEEPERS), "seq_cst", 8), I64(0))
        lone_short = b.and_(b.and_(short, asleep),
                            b.icmp_unsigned(">=", since, I64(STREAM_GAP)))
        may_share = b.and_(b.and_(
            b.icmp_signed(">", b.load_atomic(self.word(b, WORKERS), "seq_cst", 8), I64(0)),
            b.or_(long_blocks, b.icmp_signed("<=", alone_for, I64(0)))), b.not_(lone_short))
        shared = b.alloca(ir.IntType(1))
        b.store(ir.Constant(ir.IntType(1), 0), shared)
        with b.if_then(may_share):
            taken = b.cmpxchg(self.word(b, BUSY), I64(0), I64(1), "seq_cst", "seq_cst")
            b.store(b.extract_value(taken, 1), shared)
        with b.if_else(b.load(shared)) as (pool, alone):
            with pool:
                self._share(b, job)
            with alone:
                started = b.call(self.clock, [])
                self._alone(b, job)
                self._keep_time(b, job, b.sub(b.call(self.clock, []), started))
        b.store_atomic(b.call(self.clock, []), self.word(b, LAST), "seq_cst", 8)

    def _keep_time(self, b, job, cycles):
        """A chunked call's time on one thread, kept in its word (job["time"]) for its next run."""
        with b.if_then(b.icmp_signed("!=", job["time"], I64(0))):
            b.store(cycles, b.inttoptr(job["time"], I64.as_pointer()))

    def _share(self, b, job):
        """Publish the job (close, write, open, wake), take blocks, wait for those taken; set
        ALONE when the other threads were slow."""
        b.store_atomic(I64(CLOSED), self.word(b, NEXT), "seq_cst", 8)
        for at, name in enumerate(FIELDS):
            b.store(job[name], self.word(b, JOB + at))
        b.store_atomic(I64(0), self.word(b, DONE), "seq_cst", 8)
        last = b.lshr(b.load_atomic(self.word(b, TICKET), "seq_cst", 8), I64(INDEX_BITS))
        opened = b.shl(b.and_(b.add(last, I64(1)), I64(SEQ_MASK)), I64(INDEX_BITS))
        b.store_atomic(b.or_(opened, job["blocks"]), self.word(b, TICKET), "seq_cst", 8)
        b.store_atomic(opened, self.word(b, NEXT), "seq_cst", 8)
        b.atomic_rmw("add", self.word(b, GENERATION), I64(1), "seq_cst")
        sleepers = b.load_atomic(self.word(b, SLEEPERS), "seq_cst", 8)
        with b.if_then(b.icmp_signed(">", sleepers, I64(0))):
            self.futex(b, _WAKE, I32(2 ** 31 - 1), ir.Constant(I8P, None))
        started = b.call(self.clock, [])
        own = b.call(self.take, [])
        waiting = b.call(self.clock, [])
        spins = b.alloca(I64)
        b.store(I64(0), spins)
        wait, after = b.append_basic_block("wait"), b.append_basic_block("after")
        b.branch(wait)
        b.position_at_end(wait)
        done = b.load_atomic(self.word(b, DONE), "seq_cst", 8)
        with b.if_then(b.icmp_signed("<", done, job["blocks"])):
            n = b.load(spins)
            b.store(b.add(n, I64(1)), spins)
            with b.if_else(b.icmp_signed("<", n, I64(SPINS))) as (short, long):
                with short:
                    _pause(b)
                with long:
                    b.call(self.yield_cpu, [])
            b.branch(wait)
        b.branch(after)
        b.position_at_end(after)
        b.store_atomic(I64(0), self.word(b, BUSY), "seq_cst", 8)
        waited = b.sub(b.call(self.clock, []), waiting)
        per_block = b.udiv(b.sub(waiting, started),
                           b.select(b.icmp_signed(">", own, I64(0)), own, I64(1)))
        # (a caller that took every block while a thread slept, being woken, learns nothing)
        awake_and_absent = b.and_(b.icmp_signed("==", own, job["blocks"]),
                                  b.icmp_signed("==", sleepers, I64(0)))
        saved = b.mul(per_block, b.sub(job["blocks"], own))  # (the others' blocks, as it ran)
        slow = b.or_(awake_and_absent, b.and_(
            b.icmp_signed(">", own, I64(0)), b.and_(
                b.icmp_unsigned(">", waited, saved),
                b.icmp_unsigned(">", waited, I64(WAIT_FLOOR)))))
        with b.if_then(slow):
            b.store_atomic(I64(ALONE_AFTER_WAIT), self.word(b, ALONE), "seq_cst", 8)
        with b.if_else(b.icmp_signed(">", own, I64(0))) as (took, none):
            with took:  # (its blocks' time, one after another)
                self._keep_time(b, job, b.mul(per_block, job["blocks"]))
            with none:  # (an awake thread took every block while the caller woke the others:
                # the time they took, as it came; kept at 0, the call counted as never run and
                # woke the threads again, and test_chunks' first-call check failed by chance)
                self._keep_time(b, job, b.sub(b.call(self.clock, []), started))

    def _alone(self, b, job):
        """The same blocks, one after another, on the caller."""
        fn = b.function
        fields = b.alloca(I64, len(FIELDS))
        for at, name in enumerate(FIELDS):
            b.store(job[name], b.gep(fields, [I64(at)]))
        i = b.alloca(I64)
        b.store(I64(0), i)
        head, body, end = (fn.append_basic_block(n) for n in ("head", "body", "end"))
        b.branch(head)
        b.position_at_end(head)
        b.cbranch(b.icmp_signed("<", b.load(i), job["blocks"]), body, end)
        b.position_at_end(body)
        b.call(self.run_block, [fields, b.load(i)])
        b.store(b.add(b.load(i), I64(1)), i)
        b.branch(head)
        b.position_at_end(end)


def _gemm_type(double):
    """CBLAS's ?gemm: (order, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)."""
    real = F64 if double else F32
    p = real.as_pointer()
    return ir.FunctionType(ir.VoidType(), [I32, I32, I32, I64, I64, I64, real, p, I64, p, I64,
                                           real, p, I64])


def _gemv_type(double):
    """CBLAS's ?gemv: (order, trans, m, n, alpha, a, lda, x, incx, beta, y, incy)."""
    real = F64 if double else F32
    p = real.as_pointer()
    return ir.FunctionType(ir.VoidType(), [I32, I32, I64, I64, real, p, I64, p, I64, real, p, I64])


def _blocks(b, m, n, k):
    """rt.product_blocks in IR: (by_rows, block, blocks) as int64s."""
    work = b.mul(b.mul(m, n), k)
    count = b.sdiv(work, I64(rt.BLOCK_WORK))
    count = b.select(b.icmp_signed("<", count, I64(rt.MAX_BLOCKS)), count, I64(rt.MAX_BLOCKS))
    count = b.select(b.icmp_signed("<", count, I64(2)), I64(2), count)  # (work >= SPLIT_WORK here)
    by_rows = b.icmp_signed("<=", n, m)
    extent = b.select(by_rows, m, n)
    block = b.sdiv(b.add(extent, b.sub(count, I64(1))), count)
    align = I64(rt.BLOCK_ALIGN)
    block = b.mul(b.sdiv(b.add(block, I64(rt.BLOCK_ALIGN - 1)), align), align)
    blocks = b.sdiv(b.add(extent, b.sub(block, I64(1))), block)
    return b.zext(by_rows, I64), block, blocks


class Pool:
    """The pool's state and threads (one per process, made by `pool()`)."""

    def __init__(self, workers):
        self.words = (ctypes.c_int64 * WORDS)()
        from llvmlite import binding as ll
        ll.add_symbol("gradc_pool_state", ctypes.addressof(self.words))
        # (codegen/native.py; its loops wait, or call OpenBLAS and the kernels: the code
        # generator at its lowest level, ~9 ms, against ~35 ms at opt=2; W7's, W8's and W10's
        # steps at default threads the same within noise)
        self.engine = native_engine("gradc_pool", f"pool {rt.GEMM}", module_ir, 0, STATS)
        for name in ("gradc_sgemm64", "gradc_dgemm64", "gradc_pool_chunks"):
            ll.add_symbol(name, self.engine.get_function_address(name))
        work = ctypes.CFUNCTYPE(None)(self.engine.get_function_address("gradc_pool_work"))
        self.work, self.workers = work, workers
        self._start()
        atexit.register(self.stop)
        if hasattr(os, "register_at_fork"):  # a child has no threads but this one: new ones
            os.register_at_fork(after_in_child=self._start)

    def _start(self):
        for at in range(WORDS):
            self.words[at] = 0
        self.words[WORKERS] = self.workers
        self.bind_products()
        self.threads = [threading.Thread(target=self.work, name=f"gradc-pool-{i}", daemon=True)
                        for i in range(self.workers)]
        for t in self.threads:
            t.start()

    def bind_products(self):
        """Write the addresses of gradc's own products bound so far (gemm_rt.py) into GEMMS."""
        from . import gemm_rt
        for at, p in enumerate("sd"):
            self.words[GEMMS + at] = gemm_rt.address(p)

    def stop(self):
        """Let the threads return (at exit): STOP, then a new generation that wakes them."""
        self.words[STOP] = 1
        self.words[WORKERS] = 0
        self.words[GENERATION] += 1
        libc = ctypes.CDLL(None)
        for _ in self.threads:
            libc.syscall(ctypes.c_long(_FUTEX[platform.machine()]),
                         ctypes.c_void_p(ctypes.addressof(self.words)), ctypes.c_int(_WAKE),
                         ctypes.c_int(2 ** 31 - 1))
        for t in self.threads:
            t.join(timeout=1.0)


def workers():
    """The pool's threads besides the caller: GRADC_THREADS (all of them, the caller's
    included) or the CPUs this process may use, less one; 0 where futexes are not at hand."""
    if not supported():
        return 0
    value = os.environ.get("GRADC_THREADS", "")
    if value and not (value.isdigit() and int(value) >= 1):
        from ..errors import CompileError
        raise CompileError(f"GRADC_THREADS={value!r}: set it to a number of threads (1: "
                           "products on the calling thread alone), or unset it (the CPUs "
                           "this process may use)")
    cpus = int(value) if value else len(os.sched_getaffinity(0))
    return min(cpus, 16) - 1


@functools.lru_cache(maxsize=None)
def pool():
    """The process's pool, started on first use (before the first kernel that calls it)."""
    return Pool(workers())


def chunks_address():
    """The address of gradc_pool_chunks, for a program's chunked calls (driver_rt.py), the
    pool started; 0 where NumPy has no OpenBLAS (the pool calls it, so there is none: the
    chunks run in turn)."""
    if rt.BLAS != "openblas":
        return 0
    return pool().engine.get_function_address("gradc_pool_chunks")


def products_bound():
    """gradc's own products were bound (codegen/modules.py bind_products): the pool, if it has
    started, takes their addresses."""
    if pool.cache_info().currsize:
        pool().bind_products()
