"""What a generated CPU driver runs on: a step's kernel calls are data (a table of int64 words),
walked by one loop, `run_program`, compiled here straight to LLVM IR, that calls each kernel's
native function by address.

Why data and not code: a step then costs one call from Python (~0.2 us) instead of one per
kernel (~0.5 us each), and nothing is compiled per signature. Why LLVM and not Numba: an
`@njit` loop cost ~0.3-0.4 s to compile on a cold cache, and Numba's first compile in a process
another ~0.3 s, which programs whose kernels are all direct (codegen/llvm_cpu.py) now never pay.
A call through a C pointer needs its argument count at compile time, so `runner(counts)`
compiles the loop for a set of counts (~10 ms, then cached on disk beside the kernels): every
program with the same counts shares one.

The table: `[size, n_inputs, max_args, pool]`, then per call `[entry address, n, extra,
(base, value) * n]`, where an argument is `value` (base 0), the arena's address + value (base
1), or input i's address + value (base 2 + i); a call in chunks (codegen/cpu.py Chunks) then has
its `extra` = 2 + 2n words: the index of the argument that holds its outer loop's length, the
bytes each argument moves per iteration, and per chunk, and a word the pool keeps the call's
time in (pool_rt.py: a short call does not wake a sleeping thread). Its chunks go to `pool`
(pool_rt.py's gradc_pool_chunks: gradc's threads), or where that is 0, run in turn; each
calls the kernel, the same kernel as a whole call, with its arguments moved. `run_program(words)` takes the address of six int64 words (a
compiled signature's, gradc.executable.Compiled.words): the table's address, the arena's, that
of the int64 array of the inputs' addresses, then what a failed call leaves: its status, its
exception (Numba's excinfo) and its index. It returns 0, or 1 when a kernel raised.

Kernels are called with Numba's calling convention, as one @njit function calls another
(`status f(ret, excinfo, int64 ...)`), whether Numba or llvm_cpu compiled them; an exception a
kernel raises (an index out of range) comes back as `kernel_error(words)`.
"""
import ctypes
import functools
import os
import pickle

import numpy as np
from llvmlite import ir

from .native import native_engine

CONSTANT, ARENA, INPUT = 0, 1, 2
TABLE, ARENA_ADDRESS, INPUTS, STATUS, EXCINFO, FAILED_CALL = range(6)  # the words
WORDS = 6
HEADER = 4  # the table's words before its calls
DESC_TIME = 6  # a chunked call's descriptor: the address of its time word (pool_rt.py)

_OK, _NONE = 0, -2  # Numba's status of a function that returned normally (None: void)
_NO_SUCH_COUNT = -100  # a call whose argument count the loop was not compiled for

I32, I64 = ir.IntType(32), ir.IntType(64)
I8P = ir.IntType(8).as_pointer()
# Numba's excinfo: {pickled (exception class, arguments, location), its size, hash or dynamic
# arguments, their unpacking function, number of dynamic arguments}
EXCINFO_T = ir.LiteralStructType([I8P, I32, I8P, I8P, I32])


class _ExcInfo(ctypes.Structure):
    _fields_ = [("pickled", ctypes.c_void_p), ("size", ctypes.c_int32), ("hash", ctypes.c_void_p),
                ("unpack", ctypes.c_void_p), ("dynamic", ctypes.c_int32)]


def kernel_type(n):
    """The LLVM type of a kernel of n int64 arguments in Numba's calling convention."""
    return ir.FunctionType(I32, [I8P.as_pointer(), EXCINFO_T.as_pointer().as_pointer()] + [I64] * n)


def _call_function(module, counts):
    """`i32 gradc_call(int64 kernel, int64 *values, int64 n, ret, excinfo)`: call the kernel
    at address `kernel` with the n int64 values at `values`, through a switch over `counts` (a
    call through a C pointer needs its argument count at compile time); its status, or
    _NO_SUCH_COUNT. One function (not inlined) for run_program and the chunks alike: the
    switch is compiled once."""
    fn = ir.Function(module, ir.FunctionType(I32, [I64, I64.as_pointer(), I64, I8P.as_pointer(),
                                                     EXCINFO_T.as_pointer().as_pointer()]),
                     "gradc_call")
    fn.attributes.add("noinline")
    kernel, values, n, ret, excinfo = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    switch = b.switch(n, fn.append_basic_block("no_such_count"))
    for count in sorted(counts):
        block = fn.append_basic_block(f"call_{count}")
        switch.add_case(I64(count), block)
        b.position_at_end(block)
        callee = b.inttoptr(kernel, kernel_type(count).as_pointer())
        args = [b.load(b.gep(values, [I64(i)])) for i in range(count)]
        b.ret(b.call(callee, [ret, excinfo] + args))
    b.position_at_end(switch.default)
    b.ret(I32(_NO_SUCH_COUNT))
    return fn


def _chunk_function(module, call):
    """`void gradc_chunk(int64 *desc, int64 c)`: chunk c of a chunked call (codegen/cpu.py
    Chunks), as pool_rt.py's threads call it. desc: the kernel's address, its argument count,
    the index of the argument that holds the outer loop's length N, and the addresses of the
    arguments, of the bytes each moves per iteration, of the bytes each moves per chunk, and
    of the call's word for the pool (DESC_TIME).
    The chunk covers iterations [c * N // CHUNKS, (c + 1) * N // CHUNKS)."""
    from ..passes.fuse import CHUNKS
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [I64.as_pointer(), I64]), "gradc_chunk")
    fn.attributes.add("noinline")
    fn.attributes.add("optnone")
    desc, c = fn.args
    gradc_call = call
    entry, head, body, call = (fn.append_basic_block(name) for name in (
        "entry", "head", "body", "call"))
    b = ir.IRBuilder(entry)
    word = lambda i: b.load(b.gep(desc, [I64(i)]))  # noqa: E731
    kernel, n, count_at = word(0), word(1), word(2)
    args, steps, per_chunk = (b.inttoptr(word(i), I64.as_pointer()) for i in (3, 4, 5))
    total = b.load(b.gep(args, [count_at]))
    lo = b.sdiv(b.mul(c, total), I64(CHUNKS))
    hi = b.sdiv(b.mul(b.add(c, I64(1)), total), I64(CHUNKS))
    moved = b.alloca(I64, b.add(n, I64(1)), name="moved")
    ret = b.bitcast(b.alloca(I64), I8P.as_pointer())
    excinfo = b.alloca(EXCINFO_T.as_pointer())
    b.branch(head)
    b.position_at_end(head)
    j = b.phi(I64, "j")
    j.add_incoming(I64(0), entry)
    b.cbranch(b.icmp_signed("<", j, n), body, call)
    b.position_at_end(body)
    at = lambda array: b.load(b.gep(array, [j]))  # noqa: E731
    value = b.add(b.add(at(args), b.mul(lo, at(steps))), b.mul(c, at(per_chunk)))
    b.store(b.select(b.icmp_signed("==", j, count_at), b.sub(hi, lo), value), b.gep(moved, [j]))
    j.add_incoming(b.add(j, I64(1)), body)
    b.branch(head)
    b.position_at_end(call)
    b.call(gradc_call, [kernel, moved, n, ret, excinfo])
    b.ret_void()  # (a chunked kernel raises nothing: loops, and products through gradc_?gemm64)
    return fn


def _chunks_function(module, chunk):
    """`void gradc_chunks(int64 *desc, int64 pool)`: a chunked call's CHUNKS chunks, each
    `chunk(desc, c)`: handed to `pool` (the address of pool_rt.py's gradc_pool_chunks, whose
    threads take them), or where that is 0, run in turn."""
    from ..passes.fuse import CHUNKS
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [I64.as_pointer(), I64]),
                     "gradc_chunks")
    fn.attributes.add("noinline")
    # (once per chunked call, and _chunk_function's once per chunk: not worth optimizing.
    # Through Numba's O3 pipeline, with the chunks unrolled, they doubled the runner's compile,
    # 30 -> 60-80 ms; native.py runs no IR passes, and optnone keeps the code generator on its
    # quickest path for them too)
    fn.attributes.add("optnone")
    desc, pool = fn.args
    entry, shared, head, body, done = (fn.append_basic_block(name) for name in (
        "entry", "shared", "head", "body", "done"))
    b = ir.IRBuilder(entry)
    b.cbranch(b.icmp_signed("!=", pool, I64(0)), shared, head)
    b.position_at_end(shared)
    run = ir.FunctionType(ir.VoidType(), [I64, I64.as_pointer(), I64]).as_pointer()
    b.call(b.inttoptr(pool, run), [b.ptrtoint(chunk, I64), desc, I64(CHUNKS)])
    b.branch(done)
    b.position_at_end(head)
    c = b.phi(I64, "c")
    c.add_incoming(I64(0), entry)
    b.cbranch(b.icmp_signed("<", c, I64(CHUNKS)), body, done)
    b.position_at_end(body)
    b.call(chunk, [desc, c])
    c.add_incoming(b.add(c, I64(1)), body)
    b.branch(head)
    b.position_at_end(done)
    b.ret_void()
    return fn


def runner_ir(counts):
    """LLVM IR of `i32 run_program(i64 words)` for calls of these argument counts."""
    module = ir.Module("gradc_runner")
    call = _call_function(module, counts)
    chunks = _chunks_function(module, _chunk_function(module, call))
    fn = ir.Function(module, ir.FunctionType(I32, [I64]), "run_program")
    entry, head, body, arg_head, arg_body, dispatch, chunked, plain, next_call, failed, done = (
        fn.append_basic_block(name) for name in (
            "entry", "head", "body", "arg_head", "arg_body", "dispatch", "chunked", "plain",
            "next_call", "failed", "done"))
    b = ir.IRBuilder(entry)

    def word(base, i):
        return b.load(b.gep(base, [i if isinstance(i, ir.Value) else I64(i)]))

    words = b.inttoptr(fn.args[0], I64.as_pointer())
    table = b.inttoptr(word(words, TABLE), I64.as_pointer())
    arena = word(words, ARENA_ADDRESS)
    inputs = b.inttoptr(word(words, INPUTS), I64.as_pointer())
    size, pool = word(table, 0), word(table, 3)
    args = b.alloca(I64, b.add(word(table, 2), I64(1)), name="args")  # max_args (+1: never 0)
    ret = b.bitcast(b.alloca(I64), I8P.as_pointer())  # a void kernel's return slot
    excinfo = b.alloca(EXCINFO_T.as_pointer())
    b.store(EXCINFO_T.as_pointer()(None), excinfo)
    desc = b.alloca(I64, I64(DESC_TIME + 1), name="desc")  # a chunked call's (_chunk_function)
    b.branch(head)

    b.position_at_end(head)  # the next call, at word `at` of the table; k calls made so far
    at = b.phi(I64, "at")
    k = b.phi(I64, "k")
    at.add_incoming(I64(HEADER), entry)
    k.add_incoming(I64(0), entry)
    b.cbranch(b.icmp_signed("<", at, size), body, done)

    b.position_at_end(body)
    kernel = word(table, at)
    n = word(table, b.add(at, I64(1)))
    extra = word(table, b.add(at, I64(2)))  # 0, or a chunked call's 2 + 2n words after its pairs
    b.branch(arg_head)

    b.position_at_end(arg_head)  # argument j: value, plus the arena's or an input's address
    j = b.phi(I64, "j")
    j.add_incoming(I64(0), body)
    b.cbranch(b.icmp_signed("<", j, n), arg_body, dispatch)

    b.position_at_end(arg_body)
    pair = b.add(b.add(at, I64(3)), b.mul(j, I64(2)))
    base = word(table, pair)
    value = word(table, b.add(pair, I64(1)))
    with b.if_else(b.icmp_signed(">=", base, I64(INPUT))) as (of_input, other):
        with of_input:
            from_input = b.add(value, word(inputs, b.sub(base, I64(INPUT))))
            block_input = b.block
        with other:
            from_other = b.select(b.icmp_signed("==", base, I64(ARENA)), b.add(value, arena),
                                  value)
            block_other = b.block
    address = b.phi(I64)
    address.add_incoming(from_input, block_input)
    address.add_incoming(from_other, block_other)
    b.store(address, b.gep(args, [j]))
    j.add_incoming(b.add(j, I64(1)), b.block)
    b.branch(arg_head)

    b.position_at_end(dispatch)
    b.cbranch(b.icmp_signed("!=", extra, I64(0)), chunked, plain)

    b.position_at_end(chunked)  # its chunks on the pool's threads, or in turn without one
    described = b.add(b.add(at, I64(3)), b.mul(n, I64(2)))  # the count's index, steps...
    steps = b.gep(table, [b.add(described, I64(1))])
    for i, v in enumerate([kernel, n, word(table, described), b.ptrtoint(args, I64),
                           b.ptrtoint(steps, I64), b.ptrtoint(b.gep(steps, [n]), I64),
                           b.ptrtoint(b.gep(steps, [b.mul(n, I64(2))]), I64)]):
        b.store(v, b.gep(desc, [I64(i)]))
    b.call(chunks, [desc, pool])
    b.branch(next_call)

    b.position_at_end(plain)
    status = b.call(call, [kernel, args, n, ret, excinfo])
    ok = b.or_(b.icmp_signed("==", status, I32(_OK)), b.icmp_signed("==", status, I32(_NONE)))
    b.cbranch(ok, next_call, failed)

    b.position_at_end(next_call)
    at.add_incoming(b.add(at, b.add(b.add(I64(3), b.mul(n, I64(2))), extra)), next_call)
    k.add_incoming(b.add(k, I64(1)), next_call)
    b.branch(head)

    b.position_at_end(failed)
    b.store(b.sext(status, I64), b.gep(words, [I64(STATUS)]))
    b.store(b.ptrtoint(b.load(excinfo), I64), b.gep(words, [I64(EXCINFO)]))
    b.store(k, b.gep(words, [I64(FAILED_CALL)]))
    b.ret(I32(1))

    b.position_at_end(done)
    b.ret(I32(0))
    return str(module)


_PROTOTYPE = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_int64)
STATS = {"compiled": 0, "loaded": 0}  # loops compiled / read from the disk cache


@functools.lru_cache(maxsize=None)
def runner(counts):
    """`run_program(words)` for calls of these argument counts (a tuple), as a ctypes function
    to call with a ctypes.c_int64 (a prepared argument: ~0.17 us a call). Compiled by
    codegen/native.py at code generator level RUNNER_OPT, or loaded from the disk cache."""
    engine = native_engine("gradc_runner", repr(counts), lambda: runner_ir(counts),
                           RUNNER_OPT, STATS)
    _ENGINES.append(engine)  # (its code runs as long as the process)
    return _PROTOTYPE(engine.get_function_address("run_program"))


_ENGINES = []
# The runner's code generator level: 1 (~13 ms; its loop is already the IR it should be),
# against ~35 ms through Numba's O3 pipeline; W1's and W5's steps (19 and 231 calls) the same
# within noise at 0, 1 and 3
RUNNER_OPT = 1


def kernel_error(words):
    """The exception a kernel raised in the run_program call that returned 1 with these words
    (a ctypes.c_int64 holding their address): Numba's pickled (class, arguments), as Numba's
    own dispatcher would raise it."""
    status, excinfo, call = (ctypes.c_int64 * WORDS).from_address(words.value)[STATUS:]
    if status == _NO_SUCH_COUNT:
        return RuntimeError(f"gradc: call {call} of the program has an argument count its "
                            "loop was not compiled for (a bug in gradc: please report it)")
    if status > 0 and excinfo:
        info = _ExcInfo.from_address(excinfo)
        if info.dynamic == 0 and info.pickled:
            exc, args, _ = pickle.loads(ctypes.string_at(info.pickled, info.size))
            return exc(*args)
    return RuntimeError(f"gradc: kernel call {call} of the program failed (status {status})")


def entry_address(kernel):
    """The address of a compiled kernel's native Numba function (`status f(ret, excinfo, int64
    ...)`), what run_program calls: unlike its C wrapper, it reports an exception (an index
    out of range) to the caller instead of printing it."""
    (cres,) = kernel.overloads.values()
    return cres.library.get_pointer_to_function(cres.fndesc.mangled_name)


def argument_counts(calls):
    """The argument counts of `calls` ([(kernel, [argument...], chunks)...]), as `runner`
    takes them."""
    return tuple(sorted({len(args) for _, args, _ in calls}))


def program_table(calls, n_inputs, kernels, pool=0):
    """The int64 table of `calls` ([(kernel key, [(base, value)...], chunks)...]) with each
    kernel key replaced by its entry address (`kernels`: key -> address); a call with chunks
    ([count index, steps, per-chunk steps]) has them after its pairs, and a word for the pool
    (the call's last time, 0: not yet run). `pool`: the address of
    pool_rt.py's gradc_pool_chunks, or 0 (chunks run in turn)."""
    max_args = max([len(args) for _, args, _ in calls], default=0)
    words = [0, n_inputs, max_args, pool]
    for key, args, chunks in calls:
        described = [chunks[0], *chunks[1], *chunks[2], 0] if chunks else []
        words += [kernels[key], len(args), len(described)]
        for base, value in args:
            words += [base, value]
        words += described
    words[0] = len(words)
    return np.array(words, np.int64)
