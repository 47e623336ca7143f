"""The expressions of the kernels compiled straight to LLVM IR (gradc/codegen/llvm_cpu.py, which
lowers their statements): each gives (LLVM value, dtype name), typed as Numba types it and
lowered as Numba lowers it; where Numba's lowering is more than an instruction or two (`//`,
`%`, `**`, min/max, NumPy's ufuncs, a tuple's item), by Numba's own lowering function, called
with a CPU context set up as the kernels' JIT_OPTIONS set it up."""
from __future__ import annotations

import ast
import functools
import hashlib
import operator

import numpy as np
from llvmlite import ir

from .rt import emit_exp, emit_freeze

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
NUMBA_OPS = {ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
INT_FLAGS = {"int64": ["nsw"], "uint64": []}  # (Numba's: no signed overflow, `nsw`, if signed)


class Unsupported(Exception):
    """Kernel text outside what this module compiles: the kernel goes through Numba."""


class Var:
    __slots__ = ("slot", "dtype")

    def __init__(self, slot, dtype):
        self.slot, self.dtype = slot, dtype


class Array:
    __slots__ = ("ptr", "length", "dtype")

    def __init__(self, ptr, length, dtype):
        self.ptr, self.length, self.dtype = ptr, length, dtype


class UniTuple:
    __slots__ = ("value", "count", "dtype")  # value: Numba's LLVM value of a UniTuple

    def __init__(self, value, count, dtype):
        self.value, self.count, self.dtype = value, count, dtype


@functools.lru_cache(maxsize=None)
def numba_context():
    """Numba's CPU target context as the kernels' JIT_OPTIONS set it up (rt.py:
    error_model="numpy", under which a division by zero gives 0, inf or NaN), for the
    operations lowered by Numba's own code here (//, %, **, np.sign, np.fmod, a tuple's item,
    raise)."""
    from numba.core import callconv
    from numba.core.registry import cpu_target
    from . import rt
    context = cpu_target.target_context
    context.refresh()
    model = callconv.create_error_model(rt.JIT_OPTIONS["error_model"], context)
    context = context.subtarget(error_model=model)
    context._codelib_stack = [_NoLinking()]  # (its own: the copy shared Numba's)
    return context


class _NoLinking:
    """The code library Numba's lowering functions see as active here: one that would link a
    function Numba compiled (its compile_internal) is refused, and the kernel goes to Numba."""

    def add_linking_library(self, library):
        raise Unsupported("an operation Numba compiles a function for")


def _numba_op(key, dtype, args, builder):
    """Numba's own lowering of `key` (an operator or a builtin) on values of one dtype."""
    ty = _numba_type(dtype)
    return numba_context().get_function(key, ty(*[ty] * len(args)))(builder, args)


def _numba_type(dtype):
    from numba.core import types
    return getattr(types, "boolean" if dtype == "bool" else dtype)


class Expressions:
    """The expression half of llvm_cpu._Kernel: its `builder`, `module` and `scope` (name ->
    Var, Array or UniTuple)."""
    group = None  # the access group of the innermost loop whose iterations are independent

    def _access(self, instruction):
        """An array element's load or store, in the current independent loop's access group
        (llvm_cpu._Kernel._for)."""
        if self.group is not None:
            instruction.set_metadata("llvm.access.group", self.group)
        return instruction

    def _expr(self, e):
        method = getattr(self, f"_{type(e).__name__}", None)
        if method is None:
            raise Unsupported(ast.unparse(e))
        return method(e)

    def _Name(self, e):
        var = self.scope.get(e.id)
        if not isinstance(var, Var):
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
        item = self.scope.get(dotted_name(e.value))
        if isinstance(item, UniTuple):
            index, dtype = self._expr(e.slice)
            if dtype != "int64":
                raise Unsupported(ast.unparse(e))
            return self._tuple_item(item, index), item.dtype
        array, pointer = self._element(e)
        v = self._access(self.builder.load(pointer))
        if array.dtype == "bool":  # (Numba: a byte that is not 0 is True)
            v = self.builder.icmp_unsigned("!=", v, ir.Constant(I8, 0))
        return v, array.dtype

    def _tuple_item(self, item, index):
        """`t[i]` as Numba's getitem_unituple: a switch on i (i - count too: a negative index),
        IndexError("tuple index out of range") outside."""
        b = self.builder
        fail = self.function.append_basic_block("tuple.out_of_range")
        done = self.function.append_basic_block("tuple.item")
        switch = b.switch(index, fail)
        with b.goto_block(fail):
            self._return_exception(IndexError, "tuple index out of range")
        with b.goto_block(done):
            value = b.phi(LL[item.dtype])
        for i in range(item.count):
            block = self.function.append_basic_block(f"tuple.{i}")
            switch.add_case(ir.Constant(I64, i), block)
            switch.add_case(ir.Constant(I64, i - item.count), block)
            with b.goto_block(block):
                value.add_incoming(b.extract_value(item.value, i), block)
                b.branch(done)
        b.position_at_end(done)
        return value

    def _return_exception(self, kind, message):
        """Return Numba's user-exception status (1) with *excinfo pointing at a constant
        {pickled (kind, (message,), None), its size, its SHA-1, null, 0}, the struct Numba's
        call_conv.return_user_exc makes, built here without Numba's target context (whose
        first set-up costs ~0.1 s of a cold compile: every classifier's gathers raise)."""
        from numba.core import serialize
        data = serialize.dumps((kind, (message,), None))
        digest = hashlib.sha1(data).digest()
        excinfo = self.function.args[1]  # ({i8*, i32, i8*, i8*, i32}**)
        struct_type = excinfo.type.pointee.pointee
        name = f".const.picklebuf.{digest.hex()}"
        found = self.module.globals.get(name)
        if found is None:
            def constant(suffix, payload):
                array = ir.Constant(ir.ArrayType(I8, len(payload)), bytearray(payload))
                g = ir.GlobalVariable(self.module, array.type, f".const.{suffix}.{digest.hex()}")
                g.linkage, g.global_constant, g.initializer = "internal", True, array
                return g.bitcast(I8.as_pointer())
            found = ir.GlobalVariable(self.module, struct_type, name)
            found.linkage, found.global_constant = "internal", True
            found.initializer = ir.Constant(struct_type, [
                constant("pickledata", data), ir.Constant(I32, len(data)),
                constant("picklehash", digest), ir.Constant(I8.as_pointer(), None),
                ir.Constant(I32, 0)])
        self.builder.store(found, excinfo)
        self.builder.ret(ir.Constant(I32, 1))  # (Numba's RETCODE_USEREXC)

    def _element(self, e):
        """(array, element pointer) of `a[index]`: a negative signed index counts from the end
        of an array, as Numba's (no bounds check, as with its default boundscheck=False), not
        of a pointer."""
        array = self.scope.get(dotted_name(e.value))
        if not isinstance(array, Array):
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
        if isinstance(e.op, ast.Invert) and dtype in INT_FLAGS:
            return b.not_(v), dtype
        raise Unsupported(ast.unparse(e))

    def _BinOp(self, e):
        (a, ta), (c, tc) = self._expr(e.left), self._expr(e.right)
        if ta != tc:  # (Numba: int64 and uint64 give a float64; int32 is computed in int64)
            raise Unsupported(f"{ast.unparse(e)}: {ta} and {tc}")
        b, op = self.builder, type(e.op)
        if ta in FLOATS:
            emit = {ast.Add: b.fadd, ast.Sub: b.fsub, ast.Mult: b.fmul, ast.Div: b.fdiv}.get(op)
            if op in NUMBA_OPS:  # Python's // and % (floor, the divisor's sign), **
                return _numba_op(NUMBA_OPS[op], ta, [a, c], b), ta
        elif ta in INT_FLAGS:  # no signed overflow (Numba's `nsw`, which lets LLVM drop the
            # wraparound of a negative index computed from loop counters)
            emit = {ast.Add: b.add, ast.Sub: b.sub, ast.Mult: b.mul}.get(op)
            if emit is not None:
                return emit(a, c, flags=INT_FLAGS[ta]), ta
            emit = {ast.BitOr: b.or_, ast.BitAnd: b.and_, ast.BitXor: b.xor, ast.LShift: b.shl,
                    ast.RShift: b.ashr if ta == "int64" else b.lshr}.get(op)  # (a count
            # outside [0, 64) is poison: ops/elementwise.py's shifts select around it)
            if op in (ast.FloorDiv, ast.Mod):  # Python's: floor, the divisor's sign
                quotient, remainder = self._int_divmod(a, c, ta)
                return (quotient if op is ast.FloorDiv else remainder), ta
        elif ta == "bool":
            emit = {ast.BitOr: b.or_, ast.BitAnd: b.and_, ast.BitXor: b.xor}.get(op)
        else:
            emit = None
        if emit is None:
            raise Unsupported(ast.unparse(e))
        return emit(a, c), ta

    def _minmax(self, name, args):
        """Python's min/max as Numba's do_minmax: left to right, a value replaces the one so far
        where it compares greater (max) or less (min), so max(1.5, nan, 2.5) is 2.5."""
        b = self.builder
        (acc, dtype), op = args[0], (">" if name == "max" else "<")
        for v, _ in args[1:]:
            if dtype in FLOATS:
                better = b.fcmp_ordered(op, v, acc)
            elif dtype == "uint64":
                better = b.icmp_unsigned(op, v, acc)
            else:
                better = b.icmp_signed(op, v, acc)
            acc = b.select(better, v, acc)
        return acc, dtype

    def _int_divmod(self, x, y, dtype):
        """Python's // and % of integers as Numba lowers them (numbers.int_divmod_signed, under
        the numpy error model): the floor, and the remainder with the divisor's sign; 0 and 0
        for a divisor 0, and for the lowest integer over -1 (which traps on x86). Written here,
        not through Numba's lowering, which needs its target context (~0.1 s to set up)."""
        b, ty = self.builder, x.type
        zero, one = ir.Constant(ty, 0), ir.Constant(ty, 1)
        if dtype == "uint64":
            bad = b.icmp_unsigned("==", y, zero)
            safe = b.select(bad, one, y)
            quotient, remainder = b.udiv(x, safe), b.urem(x, safe)
        else:
            lowest = ir.Constant(ty, -(1 << (ty.width - 1)))
            overflow = b.and_(b.icmp_signed("==", x, lowest),
                              b.icmp_signed("==", y, ir.Constant(ty, -1)))
            bad = b.or_(b.icmp_signed("==", y, zero), overflow)
            safe = b.select(bad, one, y)
            quotient, remainder = b.sdiv(x, safe), b.srem(x, safe)
            differ = b.and_(b.icmp_signed("!=", remainder, zero),
                            b.icmp_signed("<", b.xor(safe, remainder), zero))
            quotient = b.select(differ, b.sub(quotient, one), quotient)
            remainder = b.select(differ, b.add(remainder, safe), remainder)
        return b.select(bad, zero, quotient), b.select(bad, zero, remainder)

    def _Compare(self, e):
        """`a < b`, and `a <= b < c` as `a <= b and b < c` (b evaluated once; Numba stops at
        the first False, the same value of expressions without effects)."""
        if not all(_pure(c) for c in e.comparators[1:]):
            raise Unsupported(ast.unparse(e))
        operands = [self._expr(e.left)] + [self._expr(c) for c in e.comparators]
        out = None
        for i, op in enumerate(e.ops):
            v, _ = self._compare(op, operands[i], operands[i + 1], e.comparators[i])
            out = v if out is None else self.builder.and_(out, v)
        return out, "bool"

    def _compare(self, op, left, right, right_node):
        sym = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==",
               ast.NotEq: "!="}.get(type(op))
        (a, ta), (c, tc) = left, right
        if ta != tc:  # x != 0 (astype to bool): a small integer literal is exact in any float
            if ta in FLOATS and _small_int(right_node):
                c, tc = ir.Constant(LL[ta], float(right_node.value)), ta
            else:
                raise Unsupported(f"{ast.unparse(right_node)}: {ta} and {tc}")
        b = self.builder
        if sym is None:
            raise Unsupported(ast.unparse(right_node))
        if ta in FLOATS:  # as Numba: ordered, but != is unordered (NaN != NaN)
            if sym == "!=":
                return b.fcmp_unordered(sym, a, c), "bool"
            return b.fcmp_ordered(sym, a, c), "bool"
        if ta in ("int64", "int32"):
            return b.icmp_signed(sym, a, c), "bool"
        if ta in ("uint64", "bool"):
            return b.icmp_unsigned(sym, a, c), "bool"
        raise Unsupported(ast.unparse(right_node))

    def _BoolOp(self, e):
        """`a and b`, `a or b` of bools, every operand evaluated: the same value as Numba's
        branches when the operands after the first read no memory (an index check's `j < 0 or
        j >= n`)."""
        if not all(_pure(v) for v in e.values[1:]):
            raise Unsupported(ast.unparse(e))
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
        name = dotted_name(e.func)
        if e.keywords:
            raise Unsupported(ast.unparse(e))
        numpy = name.startswith("np.")
        if numpy:
            name = name[3:]
        if name in CASTS and len(e.args) == 1:
            return self._cast(e.args[0], CASTS[name])
        if name in ("max2", "min2") and len(e.args) == 2:
            return self._extremum(name, *e.args)
        if name in ("min", "max") and len(e.args) >= 2:  # Python's, on numbers of one type
            return self._minmax(name, self._same_type(e, INTS + FLOATS))
        if name == "freeze" and len(e.args) == 1:
            value, dtype = self._expr(e.args[0])
            return emit_freeze(self.builder, value), dtype
        if name == "fexp" and len(e.args) == 1:  # (rt.fexp: exp as arithmetic)
            value, dtype = self._expr(e.args[0])
            if dtype not in FLOATS:
                raise Unsupported(ast.unparse(e))
            return emit_exp(self.builder, value), dtype
        if name == "radd" and len(e.args) == 2:  # (rt.radd: a sum's reassociable add)
            (a, dtype), (b, _) = self._same_type(e, FLOATS)
            return self.builder.fadd(a, b, flags=("reassoc",)), dtype
        if name in CLASSIFY and len(e.args) == 1:
            return self._classify(name, *self._expr(e.args[0]))
        if name in INTRINSIC or name in LIBM:
            args = self._same_type(e, FLOATS)
            if len(args) != ARITY.get(name, 1):
                raise Unsupported(ast.unparse(e))
            return self._math(name, args[0][1], [v for v, _ in args]), args[0][1]
        if numpy and name == "sign" and len(e.args) == 1:
            return self._sign(*self._same_type(e, FLOATS)[0])
        if numpy and isinstance(getattr(np, name, None), np.ufunc):
            return self._ufunc(getattr(np, name), e)
        raise Unsupported(ast.unparse(e))

    def _sign(self, v, dtype):
        """np.sign of a float as Numba lowers it (numbers.real_sign_impl): 1 above 0, -1 below,
        else x itself (0, -0, NaN). Written here, not through _ufunc, because Numba's lowering
        functions need its target context, whose first set-up costs ~0.1 s of a cold compile."""
        b, ty = self.builder, LL[dtype]
        below = b.select(b.fcmp_ordered("<", v, ir.Constant(ty, 0.0)), ir.Constant(ty, -1.0), v)
        return b.select(b.fcmp_ordered(">", v, ir.Constant(ty, 0.0)), ir.Constant(ty, 1.0),
                        below), dtype

    def _same_type(self, e, dtypes):
        """[(value, dtype)] of the call's arguments, all of one dtype among `dtypes`."""
        args = [self._expr(a) for a in e.args]
        if not args or args[0][1] not in dtypes or any(t != args[0][1] for _, t in args):
            raise Unsupported(ast.unparse(e))
        return args

    def _ufunc(self, ufunc, e):
        """A NumPy ufunc of floats of one dtype (np.sign, np.fmod...) by the function Numba
        lowers it with (its ufunc_db loop for those types)."""
        from numba.np.ufunc_db import get_ufunc_info
        args = self._same_type(e, FLOATS)
        dtype = args[0][1]
        char = np.dtype(dtype).char
        impl = get_ufunc_info(ufunc).get(f"{char * len(args)}->{char}")
        if impl is None or ufunc.nout != 1:
            raise Unsupported(ast.unparse(e))
        ty = _numba_type(dtype)
        return impl(numba_context(), self.builder, ty(*[ty] * len(args)),
                    [v for v, _ in args]), dtype

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
        if src in FLOATS and dtype in ("int64", "int32"):  # (Numba's: poison for NaN, out
            return b.fptosi(v, LL[dtype]), dtype  # of range; cpu.py's astype guards them)
        if {src, dtype} <= {"int32", "int64", "uint64"}:  # (Numba's: int32 is signed)
            return (b.trunc(v, I32) if dtype == "int32" else b.sext(v, I64)), dtype
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
        if ta != tc or ta not in FLOATS + ("int64", "uint64"):
            raise Unsupported(f"{name} of {ta} and {tc}")
        b, sym = self.builder, ">=" if name == "max2" else "<="
        if ta == "int64":  # (an integer is never != itself)
            keep = b.icmp_signed(sym, a, c)
        elif ta == "uint64":
            keep = b.icmp_unsigned(sym, a, c)
        else:
            keep = b.or_(b.fcmp_ordered(sym, a, c), b.fcmp_unordered("!=", a, a))
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


def dotted_name(node):
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
        return -node.value if sign < 0 else node.value
    if dotted_name(node) in ("np.nan", "np.inf"):  # (negated, not times -1: -1 * nan is nan)
        return -CONSTANTS[node.attr] if sign < 0 else CONSTANTS[node.attr]
    return None


def _pure(node):
    """Whether evaluating `node` reads no memory and calls nothing (names, constants,
    arithmetic and comparisons of them)."""
    return not any(isinstance(n, (ast.Subscript, ast.Call)) for n in ast.walk(node))


def _small_int(node):
    return isinstance(node, ast.Constant) and type(node.value) is int and abs(node.value) < 2 ** 24
