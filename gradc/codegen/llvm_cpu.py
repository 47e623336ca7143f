"""Kernels compiled straight to LLVM IR: one module, optimised once, per program.

Numba spends ~100-240 ms on each distinct kernel, most of it in its Python front end (bytecode
analysis, typing, lowering), which a model's 50-150 kernels pay on a cold start. The kernels'
text (gradc/codegen/cpu.py `loop_kernel`, and most library kernels' templates) is a small
subset of Python: typed buffer views and parts of them (`x[lo:hi]`), `for i in range(n)` loops,
`if`, assignments (`+=` too), rt.py's `sgemm`/`dgemm` (a call of NumPy's OpenBLAS, made here
as rt.py makes it), and each op's scalar expression (its OpDef's
`scalar`, the one place an op's math is written). This module compiles that same text to LLVM
IR, typed as Numba types it (float32 stays float32; comparisons and `x if c else y` as Numba
lowers them), and hands every kernel of a program to ONE Numba code library: the same LLVM, the
same optimisation passes and target machine, the same libmvec rewrite (gradc/codegen/vecmath.py)
and fast-math flags (rt.py FASTMATH / MAP_FASTMATH) as the Numba route, and the same calling
convention, so the driver calls either kind of kernel alike (driver_rt.call_from).

Text outside the subset (a parallel kernel's prange, the special functions, integer division,
mixed-dtype arithmetic, `raise`...) raises Unsupported: that kernel goes through Numba as before. So the
generated Python stays what users read and what `gradc compile` writes, and both routes run the
same arithmetic in the same order.
"""
from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import os
import struct

import numpy as np
from llvmlite import ir

from ..errors import CompileError
from . import vecmath
from .rt import emit_freeze

I1, I8, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
LL = {"float32": ir.FloatType(), "float64": ir.DoubleType(), "int64": I64, "uint64": I64,
      "int32": I32, "bool": I1}
MEMORY = dict(LL, bool=I8)  # a bool is a byte in memory, one bit in a register (as in Numba)
ARRAYS = {"f32_array": "float32", "f64_array": "float64", "i64_array": "int64",
          "i32_array": "int32", "bool_array": "bool"}
# raw pointers (rt.py's intrinsics): `p[i]` indexes without wrapping a negative index around
POINTERS = {"f32_ptr": "float32", "f64_ptr": "float64", "i64_ptr": "int64", "i32_ptr": "int32",
            "_f32_ptr": "float32", "_f64_ptr": "float64", "_i64_ptr": "int64", "_i32_ptr": "int32"}
VIEWS = {**ARRAYS, **POINTERS}
CASTS = {"f32": "float32", "f64": "float64", "i64": "int64", "i32": "int32", "bool_": "bool",
         "float32": "float32", "float64": "float64", "int64": "int64", "int32": "int32",
         "uint64": "uint64"}
FLOATS = ("float32", "float64")
INTS = ("int64", "int32", "uint64")

# NumPy's math as Numba lowers it for a float: an LLVM intrinsic, or libm (f suffix for float32)
INTRINSIC = {"exp": "exp", "exp2": "exp2", "log": "log", "log2": "log2", "log10": "log10",
             "sin": "sin", "cos": "cos", "floor": "floor", "ceil": "ceil", "trunc": "trunc",
             "rint": "rint", "abs": "fabs", "copysign": "copysign",
             "fmaximum": "maximum", "fminimum": "minimum"}  # (rt.fmaximum: reductions)
LIBM = {"tanh": "tanh", "log1p": "log1p", "expm1": "expm1", "tan": "tan", "sinh": "sinh",
        "cosh": "cosh", "arctan": "atan", "arctanh": "atanh", "arcsin": "asin",
        "arcsinh": "asinh", "arccos": "acos", "arccosh": "acosh", "sqrt": "sqrt",
        "arctan2": "atan2", "libm_cbrt": "cbrt"}
ARITY = {"copysign": 2, "arctan2": 2, "fmaximum": 2, "fminimum": 2}
CLASSIFY = ("isnan", "isinf", "isfinite", "signbit")
CONSTANTS = {"nan": float("nan"), "inf": float("inf")}


def _never_negative(e):
    """Whether an index expression is a sum or product of names and non-negative integers
    (the kernels' names are sizes, steps and loop counters, never negative)."""
    if isinstance(e, ast.BinOp) and isinstance(e.op, (ast.Add, ast.Mult)):
        return _never_negative(e.left) and _never_negative(e.right)
    if isinstance(e, ast.Constant):
        return isinstance(e.value, int) and not isinstance(e.value, bool) and e.value >= 0
    return isinstance(e, ast.Name)


class Unsupported(Exception):
    """Kernel text outside what this module compiles: the kernel goes through Numba."""


class _Var:
    __slots__ = ("slot", "dtype")

    def __init__(self, slot, dtype):
        self.slot, self.dtype = slot, dtype


class _Array:
    __slots__ = ("ptr", "length", "dtype")

    def __init__(self, ptr, length, dtype):
        self.ptr, self.length, self.dtype = ptr, length, dtype


def kernel_module(source, symbol):
    """An ir.Module that defines the kernel in `source` (one `@njit` function of int64
    arguments, returning nothing) as `symbol`, with Numba's calling convention and fast-math
    flags. Raises Unsupported."""
    tree = ast.parse(source)
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    if len(functions) != 1:
        raise Unsupported("a kernel with a helper (parallel)")
    (fdef,) = functions
    flags = _fastmath(fdef)
    signature = fdef.decorator_list[0].args[:1]
    params = ", ".join(["int64"] * len(fdef.args.args))
    if not (signature and isinstance(signature[0], ast.Constant)
            and signature[0].value == f"void({params})"):
        raise Unsupported("a signature other than void(int64, ...)")
    from numba.core.registry import cpu_target
    module = cpu_target.target_context.create_module(symbol)  # (Numba's triple and layout)
    _Kernel(module, fdef, symbol).build()
    _add_fastmath(module, flags)
    return module


def _fastmath(fdef):
    """The fast-math flags the decorator names (rt.FASTMATH, or MAP_FASTMATH for maps)."""
    from . import rt
    if len(fdef.decorator_list) != 1:
        raise Unsupported("decorators")
    decorator = fdef.decorator_list[0]
    if not (isinstance(decorator, ast.Call) and _name(decorator.func) == "njit"):
        raise Unsupported("a function that is not @njit(...)")
    text = ast.unparse(decorator)
    if text.endswith(", **JIT_OPTIONS)"):
        return rt.FASTMATH
    if text.endswith("**dict(JIT_OPTIONS, fastmath=MAP_FASTMATH))"):
        return rt.MAP_FASTMATH
    raise Unsupported(f"options {text}")


def _add_fastmath(module, flags):
    """Numba's fast-math pass (its rewrite of every float operation and float call)."""
    from numba.core.cpu_options import FastMathOptions
    from numba.core.fastmathpass import rewrite_module
    rewrite_module(module, FastMathOptions(set(flags)))


class _Kernel:
    """Lowers one kernel's function body. Variables live in allocas (LLVM's mem2reg makes them
    registers), as in Numba's lowering."""

    def __init__(self, module, fdef, symbol):
        from numba.core import types
        from numba.core.registry import cpu_target
        self.module, self.fdef = module, fdef
        params = [a.arg for a in fdef.args.args]
        if fdef.args.vararg or fdef.args.kwarg or fdef.args.kwonlyargs or fdef.args.defaults:
            raise Unsupported("arguments")
        call_conv = cpu_target.target_context.call_conv
        fnty = call_conv.get_function_type(types.void, [types.int64] * len(params))
        self.function = ir.Function(module, fnty, symbol)
        self.entry = self.function.append_basic_block("entry")
        self.builder = ir.IRBuilder(self.function.append_basic_block("body"))
        self.scope = {}
        for name, arg in zip(params, self.function.args[-len(params):] if params else ()):
            self.scope[name] = self._new_var(name, "int64")
            self.builder.store(arg, self.scope[name].slot)

    def build(self):
        self._block(self.fdef.body)
        self.builder.ret(ir.Constant(I32, 0))  # Numba's status: OK
        ir.IRBuilder(self.entry).branch(self.function.blocks[1])

    # --- statements ----------------------------------------------------------------------
    def _block(self, statements):
        for st in statements:
            if isinstance(st, ast.Assign) and len(st.targets) == 1:
                self._assign(st.targets[0], st.value)
            elif isinstance(st, ast.For) and not st.orelse:
                self._for(st)
            elif isinstance(st, ast.AugAssign):  # (Numba: load, the operation, store)
                load = ast.Name(st.target.id, ast.Load()) if isinstance(st.target, ast.Name) \
                    else ast.Subscript(st.target.value, st.target.slice, ast.Load())
                self._assign(st.target, ast.BinOp(load, st.op, st.value))
            elif isinstance(st, ast.If):
                self._if(st)
            elif isinstance(st, ast.Expr) and isinstance(st.value, ast.Call) \
                    and _name(st.value.func) in ("sgemm", "dgemm"):
                self._gemm(st.value)
            elif isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant):
                continue  # a docstring
            else:
                raise Unsupported(ast.unparse(st))

    def _assign(self, target, value):
        if isinstance(target, ast.Name):
            if isinstance(value, ast.Call) and _name(value.func) in VIEWS:
                self._bind_array(target.id, value)
                return
            if isinstance(value, ast.Subscript) and isinstance(value.slice, ast.Slice):
                self._bind_part(target.id, value)
                return
            v, dtype = self._expr(value)
            var = self.scope.get(target.id)
            if var is None:
                var = self.scope[target.id] = self._new_var(target.id, dtype)
            elif not isinstance(var, _Var) or var.dtype != dtype:
                raise Unsupported(f"{target.id} changes type")
            self.builder.store(v, var.slot)
        elif isinstance(target, ast.Subscript):
            array, pointer = self._element(target)
            v, dtype = self._expr(value)
            if dtype != array.dtype:
                raise Unsupported(f"a {dtype} stored in a {array.dtype} array")
            if dtype == "bool":
                v = self.builder.zext(v, I8)
            self.builder.store(v, pointer)
        else:
            raise Unsupported(ast.unparse(target))

    def _bind_array(self, name, call):
        """`a = f32_array(p, n)` (n elements at address p) or `a = _f32_ptr(p)`."""
        view = _name(call.func)
        dtype = VIEWS[view]
        if len(call.args) != (2 if view in ARRAYS else 1) or call.keywords or name in self.scope:
            raise Unsupported(ast.unparse(call))
        address, atype = self._expr(call.args[0])
        length, ltype = self._expr(call.args[1]) if view in ARRAYS else (None, "int64")
        if atype != "int64" or ltype != "int64":
            raise Unsupported(ast.unparse(call))
        ptr = self.builder.inttoptr(address, MEMORY[dtype].as_pointer())
        self.scope[name] = _Array(ptr, length, dtype)

    def _for(self, st):
        it = st.iter
        if not (isinstance(st.target, ast.Name) and isinstance(it, ast.Call)
                and _name(it.func) == "range" and 1 <= len(it.args) <= 2 and not it.keywords):
            raise Unsupported(ast.unparse(st.iter))
        bounds = [self._expr(a) for a in it.args]
        if any(t != "int64" for _, t in bounds):
            raise Unsupported("a range of non-int64 bounds")
        start = bounds[0][0] if len(bounds) == 2 else ir.Constant(I64, 0)
        stop = bounds[-1][0]
        name = st.target.id
        if name in self.scope:
            raise Unsupported(f"loop variable {name} reused")
        counter = self._new_var(f"{name}.next", "int64")
        self.builder.store(start, counter.slot)
        b = self.builder
        test = self.function.append_basic_block(f"{name}.test")
        body = self.function.append_basic_block(f"{name}.body")
        done = self.function.append_basic_block(f"{name}.done")
        b.branch(test)
        b.position_at_end(test)
        i = b.load(counter.slot)
        b.cbranch(b.icmp_signed("<", i, stop), body, done)
        b.position_at_end(body)
        var = self.scope[name] = self._new_var(name, "int64")
        b.store(i, var.slot)
        self._block(st.body)
        b.store(b.add(b.load(var.slot), ir.Constant(I64, 1), flags=["nsw"]), counter.slot)
        b.branch(test)
        b.position_at_end(done)
        del self.scope[name]  # (Python keeps it; the kernels never read it after the loop)

    def _bind_part(self, name, e):
        """`a = x[lo:hi]`, a part of an array as an array of its own. The kernels slice within
        bounds (bmm's batch t of x), which is all this reads: a slice with a step, an open
        bound, or a bound that could be negative is left to Numba."""
        array, sl = self.scope.get(_name(e.value)), e.slice
        if (not isinstance(array, _Array) or array.length is None or sl.step is not None
                or sl.lower is None or sl.upper is None or name in self.scope):
            raise Unsupported(ast.unparse(e))
        (lo, lt), (hi, ht) = self._expr(sl.lower), self._expr(sl.upper)
        if lt != "int64" or ht != "int64" or not _never_negative(sl.lower) \
                or not _never_negative(sl.upper):
            raise Unsupported(ast.unparse(e))
        self.scope[name] = _Array(self.builder.gep(array.ptr, [lo]), self.builder.sub(hi, lo),
                                  array.dtype)

    def _gemm(self, call):
        """`sgemm(ta, tb, m, n, k, a, b, c)` (rt.py): c = op(a) @ op(b) by NumPy's OpenBLAS,
        called as rt.py's kernel calls it. Left to Numba where rt.py's sgemm is Numba's np.dot."""
        from . import rt
        name = _name(call.func)
        dtype = "float32" if name == "sgemm" else "float64"
        if rt.BLAS != "openblas" or len(call.args) != 8:
            raise Unsupported(ast.unparse(call))
        flags = [a.value if isinstance(a, ast.Constant) else None for a in call.args[:2]]
        if any(not isinstance(f, bool) for f in flags):
            raise Unsupported(ast.unparse(call))
        m, n, k = (self._int(a) for a in call.args[2:5])
        arrays = [self.scope.get(_name(a)) for a in call.args[5:]]
        if any(not isinstance(a, _Array) or a.dtype != dtype for a in arrays):
            raise Unsupported(ast.unparse(call))
        real, ptr = LL[dtype], LL[dtype].as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [I32, I32, I32, I64, I64, I64, real, ptr, I64, ptr,
                                               I64, real, ptr, I64])
        symbol = f"scipy_cblas_{name}64_"
        gemm = self.module.globals.get(symbol) or ir.Function(self.module, fnty, symbol)
        ta, tb = flags
        trans = lambda t: ir.Constant(I32, 112 if t else 111)  # noqa: E731  (CblasTrans, NoTrans)
        a, b, c = arrays
        self.builder.call(gemm, [ir.Constant(I32, 101), trans(ta), trans(tb), m, n, k,
                                 ir.Constant(real, 1.0), a.ptr, m if ta else k, b.ptr,
                                 k if tb else n, ir.Constant(real, 0.0), c.ptr, n])

    def _int(self, e):
        v, dtype = self._expr(e)
        if dtype != "int64":
            raise Unsupported(ast.unparse(e))
        return v

    def _if(self, st):
        """`if c: ... else: ...` on a bool (a comparison; Numba's truth of a number is left to
        Numba)."""
        cond, dtype = self._expr(st.test)
        if dtype != "bool":
            raise Unsupported(f"if on a {dtype}")
        b = self.builder
        then = self.function.append_basic_block("if.then")
        other = self.function.append_basic_block("if.else") if st.orelse else None
        done = self.function.append_basic_block("if.done")
        b.cbranch(cond, then, other or done)
        for block, body in ((then, st.body), (other, st.orelse)):
            if block is not None:
                b.position_at_end(block)
                self._block(body)
                b.branch(done)
        b.position_at_end(done)

    def _new_var(self, name, dtype):
        slot = ir.IRBuilder(self.entry).alloca(LL[dtype], name=name)
        return _Var(slot, dtype)

    # --- expressions: (LLVM value, dtype name) -----------------------------------------------
    def _expr(self, e):
        method = getattr(self, f"_{type(e).__name__}", None)
        if method is None:
            raise Unsupported(ast.unparse(e))
        return method(e)

    def _Name(self, e):
        var = self.scope.get(e.id)
        if not isinstance(var, _Var):
            raise Unsupported(f"name {e.id}")
        return self.builder.load(var.slot), var.dtype

    def _Constant(self, e):
        if isinstance(e.value, bool):
            return ir.Constant(I1, e.value), "bool"
        if isinstance(e.value, int) and -2 ** 63 <= e.value < 2 ** 63:
            return ir.Constant(I64, e.value), "int64"
        if isinstance(e.value, float):
            return ir.Constant(LL["float64"], e.value), "float64"
        raise Unsupported(repr(e.value))

    def _Subscript(self, e):
        array, pointer = self._element(e)
        v = self.builder.load(pointer)
        if array.dtype == "bool":  # (Numba: a byte that is not 0 is True)
            v = self.builder.icmp_unsigned("!=", v, ir.Constant(I8, 0))
        return v, array.dtype

    def _element(self, e):
        """(array, element pointer) of `a[index]`: a negative signed index counts from the end
        of an array, as Numba's (no bounds check, as with its default boundscheck=False), not
        of a pointer."""
        array = self.scope.get(_name(e.value))
        if not isinstance(array, _Array):
            raise Unsupported(ast.unparse(e))
        index, dtype = self._expr(e.slice)
        b = self.builder
        if dtype == "int64" and array.length is not None:
            negative = b.icmp_signed("<", index, ir.Constant(I64, 0))
            index = b.select(negative, b.add(index, array.length), index)
        elif dtype not in ("int64", "uint64"):
            raise Unsupported(f"an index of {dtype}")
        return array, b.gep(array.ptr, [index])

    def _UnaryOp(self, e):
        v, dtype = self._expr(e.operand)
        b = self.builder
        if isinstance(e.op, ast.USub):
            if dtype in FLOATS:  # Numba's negate_real: -0.0 - x keeps the sign of zero
                return b.fsub(ir.Constant(LL[dtype], -0.0), v), dtype
            if dtype == "int64":
                return b.neg(v), dtype
        if isinstance(e.op, ast.UAdd) and dtype != "bool":
            return v, dtype
        if isinstance(e.op, ast.Not) and dtype == "bool":
            return b.xor(v, ir.Constant(I1, 1)), "bool"
        raise Unsupported(ast.unparse(e))

    def _BinOp(self, e):
        (a, ta), (c, tc) = self._expr(e.left), self._expr(e.right)
        if ta != tc:
            raise Unsupported(f"{ast.unparse(e)}: {ta} and {tc}")
        b, op = self.builder, type(e.op)
        if ta in FLOATS:
            emit = {ast.Add: b.fadd, ast.Sub: b.fsub, ast.Mult: b.fmul, ast.Div: b.fdiv}.get(op)
        elif ta == "int64":  # no signed overflow (Numba's `nsw`, which lets LLVM drop the
            # wraparound of a negative index computed from loop counters). (Numba computes
            # int32 arithmetic in int64: not here.)
            emit = {ast.Add: b.add, ast.Sub: b.sub, ast.Mult: b.mul}.get(op)
            if emit is not None:
                return emit(a, c, flags=["nsw"]), ta
        else:
            emit = None
        if emit is None:
            raise Unsupported(ast.unparse(e))
        return emit(a, c), ta

    def _Compare(self, e):
        if len(e.ops) != 1:
            raise Unsupported(ast.unparse(e))
        sym = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==",
               ast.NotEq: "!="}.get(type(e.ops[0]))
        (a, ta), (c, tc) = self._expr(e.left), self._expr(e.comparators[0])
        if ta != tc:  # x != 0 (astype to bool): a small integer literal is exact in any float
            if ta in FLOATS and _small_int(e.comparators[0]):
                c, tc = ir.Constant(LL[ta], float(e.comparators[0].value)), ta
            else:
                raise Unsupported(f"{ast.unparse(e)}: {ta} and {tc}")
        b = self.builder
        if sym is None:
            raise Unsupported(ast.unparse(e))
        if ta in FLOATS:  # as Numba: ordered, but != is unordered (NaN != NaN)
            if sym == "!=":
                return b.fcmp_unordered(sym, a, c), "bool"
            return b.fcmp_ordered(sym, a, c), "bool"
        if ta in ("int64", "int32"):
            return b.icmp_signed(sym, a, c), "bool"
        if ta in ("uint64", "bool"):
            return b.icmp_unsigned(sym, a, c), "bool"
        raise Unsupported(ast.unparse(e))

    def _BoolOp(self, e):
        values = [self._expr(v) for v in e.values]
        if any(t != "bool" for _, t in values):
            raise Unsupported(ast.unparse(e))
        emit = self.builder.and_ if isinstance(e.op, ast.And) else self.builder.or_
        out = values[0][0]
        for v, _ in values[1:]:
            out = emit(out, v)
        return out, "bool"

    def _IfExp(self, e):
        cond, tcond = self._expr(e.test)
        (a, ta), (c, tc) = self._expr(e.body), self._expr(e.orelse)
        if tcond != "bool" or ta != tc:
            raise Unsupported(ast.unparse(e))
        return self.builder.select(cond, a, c), ta

    def _Call(self, e):
        name = _name(e.func)
        if e.keywords:
            raise Unsupported(ast.unparse(e))
        if name.startswith("np."):
            name = name[3:]
        if name in CASTS and len(e.args) == 1:
            return self._cast(e.args[0], CASTS[name])
        if name in ("max2", "min2") and len(e.args) == 2:
            return self._extremum(name, *e.args)
        if name == "freeze" and len(e.args) == 1:
            value, dtype = self._expr(e.args[0])
            return emit_freeze(self.builder, value), dtype
        if name in CLASSIFY and len(e.args) == 1:
            return self._classify(name, *self._expr(e.args[0]))
        if name in INTRINSIC or name in LIBM:
            args = [self._expr(a) for a in e.args]
            dtype = args[0][1] if args else None
            if (len(args) != ARITY.get(name, 1) or dtype not in FLOATS
                    or any(t != dtype for _, t in args)):
                raise Unsupported(ast.unparse(e))
            return self._math(name, dtype, [v for v, _ in args]), dtype
        raise Unsupported(ast.unparse(e))

    def _cast(self, arg, dtype):
        literal = _literal(arg)
        if literal is not None:
            if dtype in FLOATS:
                return ir.Constant(LL[dtype], float(np.dtype(dtype).type(literal))), dtype
            if dtype == "bool":
                return ir.Constant(I1, bool(literal)), dtype
            if isinstance(literal, int):
                return ir.Constant(LL[dtype], int(np.dtype(dtype).type(literal))), dtype
            raise Unsupported(ast.unparse(arg))
        v, src = self._expr(arg)
        b = self.builder
        if src == dtype or {src, dtype} == {"int64", "uint64"}:
            return v, dtype
        if src in FLOATS and dtype in FLOATS:
            emit = b.fpext if dtype == "float64" else b.fptrunc
            return emit(v, LL[dtype]), dtype
        if src in ("int64", "int32") and dtype in FLOATS:
            return b.sitofp(v, LL[dtype]), dtype
        if src == "bool" and dtype in FLOATS:  # (Numba: through an int32)
            return b.sitofp(b.zext(v, I32), LL[dtype]), dtype
        if src == "bool" and dtype in INTS:
            return b.zext(v, LL[dtype]), dtype
        raise Unsupported(f"a cast from {src} to {dtype}")

    def _classify(self, name, v, dtype):
        """np.isnan, isinf, isfinite, signbit of a float: exact, whatever the instructions."""
        if dtype not in FLOATS:
            raise Unsupported(f"np.{name} of {dtype}")
        b, ty = self.builder, LL[dtype]
        if name == "isnan":
            return b.fcmp_unordered("uno", v, v), "bool"
        if name == "signbit":
            bits = ir.IntType(32 if dtype == "float32" else 64)
            return b.icmp_signed("<", b.bitcast(v, bits), ir.Constant(bits, 0)), "bool"
        magnitude = self._math("abs", dtype, [v])
        infinity = ir.Constant(ty, float("inf"))
        if name == "isinf":
            return b.fcmp_ordered("==", magnitude, infinity), "bool"
        return b.fcmp_ordered("!=", magnitude, infinity), "bool"  # isfinite: False for NaN

    def _extremum(self, name, x, y):
        """rt.max2/min2: `a if (a >= b or a != a) else b` (NaN propagates)."""
        (a, ta), (c, tc) = self._expr(x), self._expr(y)
        if ta != tc or ta not in FLOATS:
            raise Unsupported(f"{name} of {ta} and {tc}")
        b = self.builder
        keep = b.or_(b.fcmp_ordered(">=" if name == "max2" else "<=", a, c),
                     b.fcmp_unordered("!=", a, a))
        return b.select(keep, a, c), ta

    def _math(self, name, dtype, args):
        ty = LL[dtype]
        if name in INTRINSIC:
            fn = self.module.declare_intrinsic(f"llvm.{INTRINSIC[name]}", [ty],
                                               ir.FunctionType(ty, [ty] * len(args)))
        else:
            symbol = LIBM[name] + ("f" if dtype == "float32" else "")
            fn = self.module.globals.get(symbol)
            if fn is None:
                fn = ir.Function(self.module, ir.FunctionType(ty, [ty] * len(args)), symbol)
                fn.attributes.add("nounwind")
                fn.attributes.add("readonly")
        return self.builder.call(fn, args)


def _name(node):
    """`f32`, `np.exp`: the dotted name a call or subscript names ('' for anything else)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return f"{node.value.id}.{node.attr}"
    return ""


def _literal(node):
    """The Python number of a literal argument (1.5, -2, np.nan, -np.inf), else None."""
    sign = 1
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        sign, node = -1, node.operand
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return sign * node.value
    if _name(node) in ("np.nan", "np.inf"):
        return sign * CONSTANTS[node.attr]
    return None


def _small_int(node):
    return isinstance(node, ast.Constant) and type(node.value) is int and abs(node.value) < 2 ** 24


def ir_text(module):
    """The module's IR as the Numba route hands it to LLVM: normalised, with libmvec's vector
    variants marked on its math calls when gradc uses them."""
    from numba.core import cgutils
    text = cgutils.normalize_ir_text(str(module))
    if vecmath.tag() == "mvec":
        text = vecmath.rewrite(text)
    return text


# --- one library per program, cached on disk ---------------------------------------------------

_loaded = {}  # kernel name -> entry address: each kernel is compiled once per process
STATS = {"compiled": 0, "loaded": 0}  # libraries compiled / read from the disk cache
_libraries = []  # (kept alive: their machine code is what the addresses point to)
_MAGIC = b"gradc direct kernels 1\n"


def route():
    """GRADC_KERNELS: "llvm" (the default: loop kernels through this module) or "numba"."""
    value = os.environ.get("GRADC_KERNELS", "llvm")
    if value not in ("llvm", "numba"):
        raise CompileError(f"GRADC_KERNELS={value!r}: set it to 'llvm' (loop kernels compiled "
                           "straight to LLVM IR, the default) or 'numba' (every kernel by Numba)")
    return value


def load_kernels(sources, folder):
    """{kernel name: address} of the kernels of `sources` ({name: kernel source}) that this
    route compiles: those loaded before in this process, and the rest compiled together as one
    library, or loaded from its file in `folder` (the module directory; None: no disk cache).
    Kernels missing from the answer are for Numba."""
    from numba.core.compiler_lock import global_compiler_lock
    from numba.core.registry import cpu_target
    todo = {n: s for n, s in sources.items() if n not in _loaded}
    if todo:
        vecmath.enable()  # (decides the rewrite, as for Numba's kernels)
        codegen = cpu_target.target_context.codegen()
        # keyed by the kernels and the machine code's target (triple, CPU, features), as
        # Numba's own cache is: a cache shared by two machines never runs the other's code
        key = [repr(codegen.magic_tuple())] + [f"{n}\0{s}" for n, s in sorted(todo.items())]
        digest = hashlib.sha256("\0".join(key).encode()).hexdigest()
        path = os.path.join(folder, f"gradc_direct_{digest[:24]}.bin") if folder else None
        with global_compiler_lock:
            found = _read(codegen, path) if path else None
            STATS["loaded" if found else "compiled"] += 1
            if found is None:
                found = _compile(codegen, todo, f"gradc_direct_{digest[:24]}")
                if path:
                    with contextlib.suppress(OSError):  # (uncached, but compiled)
                        _write(path, *found)
        symbols, library = found
        if library is not None:
            _libraries.append(library)
            for name, symbol in symbols.items():
                _loaded[name] = library.get_pointer_to_function(symbol)
    return {n: _loaded[n] for n in sources if n in _loaded}


def _compile(codegen, sources, name):
    """({kernel name: symbol}, finalized library or None) of the kernels of `sources` that
    compile here."""
    from llvmlite import binding as ll
    library, symbols = None, {}
    for kernel, source in sources.items():
        symbol = f"{kernel}_direct"
        try:
            llmod = ll.parse_assembly(ir_text(kernel_module(source, symbol)))
            llmod.verify()
        except (Unsupported, RuntimeError):  # (RuntimeError: LLVM refused it, a bug here;
            continue  # tests/test_direct_kernels.py checks that every op compiles)
        llmod.name = symbol
        if library is None:
            library = codegen.create_library(name)
            library.enable_object_caching()
        library.add_llvm_module(llmod)
        symbols[kernel] = symbol
    if library is not None:
        library.finalize()
    return symbols, library


def _write(path, symbols, library):
    """The library's machine code (Numba's object-code serialisation) in one file, after a
    line with the sha256 of the rest, written atomically."""
    from .modules import write_atomically
    if library is None:
        name, blobs = "", (b"", b"")
    else:
        name, _, blobs = library.serialize_using_object_code()
    header = json.dumps({"library": name, "symbols": symbols}).encode()
    payload = struct.pack("<3Q", len(header), *map(len, blobs)) + header + b"".join(blobs)
    write_atomically(path, _MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" +
                      payload)


def _read(codegen, path):
    """(symbols, library) from the file at `path`, or None when there is none; a file whose
    checksum does not match (damaged, truncated, foreign) is deleted, never loaded."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    head = len(_MAGIC) + 65
    try:
        payload = data[head:]
        if data[:len(_MAGIC)] != _MAGIC or data[head - 65:head - 1].decode() != \
                hashlib.sha256(payload).hexdigest():
            raise ValueError("checksum")
        sizes = struct.unpack_from("<3Q", payload)
        at = struct.calcsize("<3Q")
        header = json.loads(payload[at:at + sizes[0]])
        obj = payload[at + sizes[0]:at + sizes[0] + sizes[1]]
        bitcode = payload[at + sizes[0] + sizes[1]:]
        if len(bitcode) != sizes[2]:
            raise ValueError("size")
    except (ValueError, UnicodeDecodeError, struct.error):
        with contextlib.suppress(OSError):
            os.unlink(path)
        return None
    if not header["symbols"]:
        return {}, None
    library = codegen.unserialize_library((header["library"], "object", (obj, bitcode)))
    return header["symbols"], library
