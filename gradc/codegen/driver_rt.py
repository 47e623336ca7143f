"""What a generated CPU driver uses: `call(address, *args)`, a call through a kernel's C entry
point, and `entry_address(kernel)`, where that entry point is.

The driver is one `@njit` function that calls every kernel of a step through its address. Calling
through an address (rather than calling the kernel's dispatcher, which Numba would link into the
driver and optimize again: compile time grows like N^1.4 with the kernel count) keeps each kernel
compiled and cached on its own, while a step costs one dispatch from Python instead of one per
kernel (~0.5 us each). The addresses are run-time values, passed in a table, so the driver's
machine code holds none and Numba's disk cache can keep it.
"""
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def call(typingctx, address, *args):
    """`call(address, a, b, ...)`: call the C function `void f(int64, int64, ...)` at `address`."""
    if not all(isinstance(t, types.Integer) for t in (address,) + args):
        return None
    sig = types.void(address, types.StarArgTuple.from_types(args))

    def codegen(context, builder, signature, llargs):
        values = [context.cast(builder, v, t, types.int64) for v, t in
                  zip(cgutils.unpack_tuple(builder, llargs[1]), args)]
        fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(64)] * len(values))
        builder.call(builder.inttoptr(llargs[0], fnty.as_pointer()), values)
        return context.get_dummy_value()

    return sig, codegen


def entry_address(kernel):
    """The address of a compiled kernel's C entry point (Numba makes one for every `@njit`
    function unless told not to): `void kernel(int64, ...)`, callable with `call`."""
    (cres,) = kernel.overloads.values()
    return cres.library.get_pointer_to_function(cres.fndesc.llvm_cfunc_wrapper_name)
