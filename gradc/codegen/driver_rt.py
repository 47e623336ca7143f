"""What a generated CPU driver runs on: a step's kernel calls are data (a table of int64 words),
walked by one `@njit` loop, `run_program`, that calls each kernel's native function by address.

Why data and not code: a step then costs one dispatch from Python (~0.3 us) instead of one per
kernel (~0.5 us each), and nothing is compiled per signature. An `@njit` driver with one call
per kernel compiled in ~8 ms per call (0.3 s for the tiny MLP benchmark's 25, 0.55 s for a
10-layer MLP's 62), and one that called the kernels' dispatchers would have Numba link and
optimize every kernel into it again (N^1.4). `run_program` is generated for a set of argument
counts (calls through a C pointer need the count at compile time) and cached like a kernel, so
every program with the same counts shares one.

The table: `[size, n_inputs, max_args]`, then per call `[entry address, n, (base, value) * n]`,
where an argument is `value` (base 0), the arena's address + value (base 1), or input i's
address + value (base 2 + i). Input addresses come in `io`, an int64 array that also holds
`max_args` words of scratch for the arguments being assembled (one per caller: thread-safe).
"""
import functools

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

import numpy as np

CONSTANT, ARENA, INPUT = 0, 1, 2


@functools.lru_cache(maxsize=None)
def call_from(n):
    """An intrinsic `call_n(address, words)`: call the kernel of n int64 arguments whose native
    Numba function is at `address` with the n int64 at address `words`; an exception it raises
    propagates to the caller (Numba's own call convention, as between two @njit functions).
    (Loading the arguments in LLVM, not as n Numba array reads, makes a call site ~10x cheaper
    to compile: `call(f, a[0], ..., a[11])` cost ~25 ms.)"""
    @intrinsic
    def call_n(typingctx, address, words):
        if not (isinstance(address, types.Integer) and isinstance(words, types.Integer)):
            return None

        def codegen(context, builder, signature, llargs):
            i64 = ir.IntType(64)
            base = builder.inttoptr(llargs[1], i64.as_pointer())
            values = [builder.load(builder.gep(base, [ir.Constant(i64, j)])) for j in range(n)]
            argtypes = [types.int64] * n
            fnty = context.call_conv.get_function_type(types.void, argtypes)
            kernel = builder.inttoptr(llargs[0], fnty.as_pointer())
            status, _ = context.call_conv.call_function(builder, kernel, types.void, argtypes,
                                                        values)
            with builder.if_then(status.is_error, likely=False):
                context.call_conv.return_status_propagate(builder, status)
            return context.get_dummy_value()

        return types.void(address, words), codegen

    return call_n


def entry_address(kernel):
    """The address of a compiled kernel's native Numba function (`status f(ret, excinfo, int64
    ...)`), callable with `call_from(n)`: unlike its C wrapper, it reports an exception (an
    index out of range) to the caller instead of printing it."""
    (cres,) = kernel.overloads.values()
    return cres.library.get_pointer_to_function(cres.fndesc.mangled_name)


def interpreter_source(arg_counts):
    """Source of the module that defines `run_program` for calls of these argument counts."""
    counts = sorted(arg_counts)
    branches = []
    for i, n in enumerate(counts):
        branches += [f"        {'if' if i == 0 else 'elif'} n == {n}:",
                     f"            call_{n}(f, io_address + 8 * s)"]
    return ("from gradc.codegen.driver_rt import call_from\n\n"
            + "".join(f"call_{n} = call_from({n})\n" for n in counts)) + f'''

@njit("void(int64, int64, int64)", **JIT_OPTIONS)
def run_program(program, A, io_address):
    """Run the kernel calls in the table at `program`: see gradc/codegen/driver_rt.py."""
    size = i64_array(program, 1)[0]
    p = i64_array(program, size)
    s = p[1]  # io: the input addresses, then the scratch the arguments are assembled in
    io = i64_array(io_address, s + p[2])
    at = 3
    while at < size:
        f, n = p[at], p[at + 1]
        at += 2
        for j in range(n):
            base, value = p[at], p[at + 1]
            at += 2
            if base == {ARENA}:
                value += A
            elif base >= {INPUT}:
                value += io[base - {INPUT}]
            io[s + j] = value
''' + "\n".join(branches) + "\n"


def program_table(calls, n_inputs, kernels):
    """The int64 table of `calls` ([(kernel key, [(base, value)...])...]) with each kernel key
    replaced by its entry address (`kernels`: key -> address)."""
    max_args = max([len(args) for _, args in calls], default=0)
    words = [0, n_inputs, max_args]
    for key, args in calls:
        words += [kernels[key], len(args)]
        for base, value in args:
            words += [base, value]
    words[0] = len(words)
    return np.array(words, np.int64)
