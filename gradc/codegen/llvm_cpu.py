"""Kernels compiled straight to LLVM IR: one module, optimised once, per program.

Numba spends ~100-240 ms on each distinct kernel, most of it in its Python front end (bytecode
analysis, typing, lowering), which a model's 50-150 kernels pay on a cold start. The kernels' text
(gradc/codegen/cpu.py `loop_kernel`, and most library kernels' templates) is a small subset of
Python: typed buffer views and parts of them (`x[lo:hi]`), tuples of numbers, `for i in range(n)`
loops (n signed or unsigned; `range(lo, hi, 16)`, a tile's, with a literal step), `if`, assignments
(`+=`, `a = b = v` and `a, b = u, v` too), `raise IndexError('...')` (a gather's index check),
rt.py's `sgemm`/`dgemm`, `sgemm_add`/`dgemm_add` and LAPACK helpers (calls of NumPy's OpenBLAS,
made as rt.py makes them: llvm_calls.py), and each op's scalar expression (its OpDef's `scalar`,
the one place an op's math is written). This module compiles that same text to LLVM IR, typed as
Numba types it (float32 stays float32; comparisons, `x if c else y`, integer `//` and `%`, min/max,
a tuple's item, np.sign and raise written here as Numba lowers them; a float's `//`, `%`, `**` and
other NumPy ufuncs by Numba's own lowering functions, which set up its target context, ~0.1 s, the
first time), and hands every kernel of a program to ONE Numba code library: the same LLVM, the same
optimisation passes and target machine, the same libmvec rewrite (gradc/codegen/vecmath.py) and
fast-math flags (rt.py FASTMATH / MAP_FASTMATH) as the Numba route, and the same calling convention
(an exception too), so the driver calls either kind of kernel alike (codegen/driver_rt.py).

Text outside the subset (the special functions, mixed-dtype arithmetic, a name given values of
two types...) raises Unsupported: that kernel goes through Numba as before. So the generated
Python stays what users read and what `gradc compile` writes, and both routes run the same
arithmetic in the same order.
"""
from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import os
import re
import struct

from llvmlite import ir

from ..errors import CompileError
from ..pyparse import parse
from . import vecmath
from .llvm_calls import GEMM_BETA, LAPACK_CALLS, LibraryCalls
from .llvm_expr import (ARRAYS, CASTS, CLASSIFY, I8, I32, I64, INT_FLAGS, LL, MEMORY, VIEWS, Array,
                        Expressions, UniTuple, Unsupported, Var, dotted_name)

__all__ = ["Unsupported", "kernel_module", "ir_text", "route", "load_kernels"]



def _never_negative(e):
    """Whether an index expression is a sum or product of names and non-negative integers
    (the kernels' names are sizes, steps and loop counters, never negative)."""
    if isinstance(e, ast.BinOp) and isinstance(e.op, (ast.Add, ast.Mult)):
        return _never_negative(e.left) and _never_negative(e.right)
    if isinstance(e, ast.Constant):
        return isinstance(e.value, int) and not isinstance(e.value, bool) and e.value >= 0
    return isinstance(e, ast.Name)


def kernel_module(source, symbol):
    """An ir.Module that defines the kernel in `source` (one `@njit` function of int64
    arguments, returning nothing) as `symbol`, with Numba's calling convention and fast-math
    flags. Raises Unsupported."""
    tree = parse(source)
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    if len(functions) != 1:
        raise Unsupported("functions other than one kernel")
    (fdef,) = functions
    signature = fdef.decorator_list[0].args[:1]
    params = ", ".join(["int64"] * len(fdef.args.args))
    if not (signature and isinstance(signature[0], ast.Constant)
            and signature[0].value == f"void({params})"):
        raise Unsupported("a signature other than void(int64, ...)")
    from numba.core.registry import cpu_target
    module = cpu_target.target_context.create_module(symbol)  # (Numba's triple and layout)
    _Kernel(module, fdef, symbol).build()
    _add_fastmath(module, _fastmath(fdef))
    return module


def _fastmath(fdef):
    """The fast-math flags the decorator names (rt.FASTMATH, MAP_FASTMATH for loop kernels)."""
    from . import rt
    if len(fdef.decorator_list) != 1:
        raise Unsupported("decorators")
    decorator = fdef.decorator_list[0]
    if not (isinstance(decorator, ast.Call) and dotted_name(decorator.func) == "njit"):
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


class _Kernel(Expressions, LibraryCalls):
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
        self.scope, self.bound = {}, []
        for name, arg in zip(params, self.function.args[-len(params):] if params else ()):
            self.scope[name] = self._new_var(name, "int64")
            self.builder.store(arg, self.scope[name].slot)

    def build(self):
        self._block(self.fdef.body)
        self.builder.ret(ir.Constant(I32, 0))  # Numba's status: OK
        ir.IRBuilder(self.entry).branch(self.function.blocks[1])

    # --- statements ----------------------------------------------------------------------
    def _block(self, statements):
        # the views and tuples bound in this block are LLVM values, not variables: they are
        # gone after it (a loop's next body may bind the name again: unslice_sum's `g`)
        self.bound.append([])
        self._statements(statements)
        for name in self.bound.pop():
            del self.scope[name]

    def _bind(self, name, value):
        if name in self.scope:
            raise Unsupported(f"{name} bound again")
        self.scope[name] = value
        self.bound[-1].append(name)

    def _statements(self, statements):
        for st in statements:
            if isinstance(st, ast.Assign):
                self._assign(st.targets, st.value)
            elif isinstance(st, ast.For) and not st.orelse:
                self._for(st)
            elif isinstance(st, ast.AugAssign):  # (Numba: load, the operation, store)
                load = ast.Name(st.target.id, ast.Load()) if isinstance(st.target, ast.Name) \
                    else ast.Subscript(st.target.value, st.target.slice, ast.Load())
                self._assign([st.target], ast.BinOp(load, st.op, st.value))
            elif isinstance(st, ast.If):
                self._if(st)
            elif isinstance(st, ast.Expr) and isinstance(st.value, ast.Call) \
                    and dotted_name(st.value.func) in GEMM_BETA:
                self._gemm(st.value)
            elif isinstance(st, ast.Expr) and isinstance(st.value, ast.Call) \
                    and dotted_name(st.value.func) == "lapack_free":
                self._lapack(st.value)
            elif isinstance(st, ast.Raise):
                self._raise(st)
            elif isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant):
                continue  # a docstring
            else:
                raise Unsupported(ast.unparse(st))

    def _assign(self, targets, value):
        """`x = v`, `a[i] = v`, `x = y = v` (v evaluated once) and `x, y = u, v` (u and v
        evaluated first, as Python does)."""
        (target, *more) = targets
        if isinstance(target, ast.Name) and not more:
            if isinstance(value, ast.Call) and dotted_name(value.func) in VIEWS:
                return self._bind_array(target.id, value)
            if isinstance(value, ast.Subscript) and isinstance(value.slice, ast.Slice):
                return self._bind_part(target.id, value)
            if isinstance(value, ast.Tuple):
                return self._bind_tuple(target.id, value)
            if isinstance(value, ast.Call) and dotted_name(value.func) in LAPACK_CALLS:
                return self._store(target, *self._lapack(value))
        if isinstance(target, ast.Tuple):
            if more or not isinstance(value, ast.Tuple) or len(value.elts) != len(target.elts):
                raise Unsupported(ast.unparse(target))
            values = [self._expr(v) for v in value.elts]
            for t, v in zip(target.elts, values):
                self._store(t, *v)
            return
        v = self._expr(value)
        for t in targets:
            self._store(t, *v)

    def _store(self, target, v, dtype):
        if isinstance(target, ast.Name):
            var = self.scope.get(target.id)
            if var is None:
                var = self.scope[target.id] = self._new_var(target.id, dtype)
            elif not isinstance(var, Var) or var.dtype != dtype:
                raise Unsupported(f"{target.id} changes type")
            self.builder.store(v, var.slot)
        elif isinstance(target, ast.Subscript):
            array, pointer = self._element(target)
            # (Numba casts an unsigned into an int64 array: the same bits)
            if dtype != array.dtype and {dtype, array.dtype} != {"int64", "uint64"}:
                raise Unsupported(f"a {dtype} stored in a {array.dtype} array")
            if dtype == "bool":
                v = self.builder.zext(v, I8)
            self._access(self.builder.store(v, pointer))
        else:
            raise Unsupported(ast.unparse(target))

    def _bind_tuple(self, name, value):
        """`t = (a, b, c)`: a tuple of one type, indexed later (unslice_sum's addresses)."""
        values = [self._expr(v) for v in value.elts]
        dtypes = {t for _, t in values}
        if not values or len(dtypes) != 1:
            raise Unsupported(ast.unparse(value))
        from numba.core import cgutils
        value = cgutils.pack_array(self.builder, [v for v, _ in values])
        self._bind(name, UniTuple(value, len(values), dtypes.pop()))

    def _raise(self, st):
        """`raise IndexError('message')` (a gather's index check) or `raise MemoryError(...)`
        (a LAPACK workspace malloc refused), as Numba raises it: the kernel returns its
        user-exception status with *excinfo pointing at the pickled exception, which the
        driver propagates to Python."""
        exc = st.exc
        kinds = {"IndexError": IndexError, "MemoryError": MemoryError}
        if not (st.cause is None and isinstance(exc, ast.Call) and not exc.keywords
                and dotted_name(exc.func) in kinds and len(exc.args) == 1
                and isinstance(exc.args[0], ast.Constant) and isinstance(exc.args[0].value, str)):
            raise Unsupported(ast.unparse(st))
        self._return_exception(kinds[dotted_name(exc.func)], exc.args[0].value)
        # (what follows in the same block is never reached: its own block, with no way in)
        self.builder.position_at_end(self.function.append_basic_block("raised"))

    def _bind_array(self, name, call):
        """`a = f32_array(p, n)` (n elements at address p) or `a = _f32_ptr(p)`."""
        view = dotted_name(call.func)
        dtype = VIEWS[view]
        if len(call.args) != (2 if view in ARRAYS else 1) or call.keywords:
            raise Unsupported(ast.unparse(call))
        address, atype = self._expr(call.args[0])
        length, ltype = self._expr(call.args[1]) if view in ARRAYS else (None, "int64")
        if atype != "int64" or ltype != "int64":
            raise Unsupported(ast.unparse(call))
        ptr = self.builder.inttoptr(address, MEMORY[dtype].as_pointer())
        self._bind(name, Array(ptr, length, dtype))

    def _for(self, st):
        it = st.iter
        if not (isinstance(st.target, ast.Name) and isinstance(it, ast.Call)
                and dotted_name(it.func) == "range" and 1 <= len(it.args) <= 3 and not it.keywords):
            raise Unsupported(ast.unparse(st.iter))
        step = 1  # range(lo, hi, step): a positive literal step (a tiled loop's)
        if len(it.args) == 3:
            step = it.args[2].value if isinstance(it.args[2], ast.Constant) else None
            if type(step) is not int or step < 1:
                raise Unsupported(ast.unparse(st.iter))
        bounds = [self._expr(a) for a in it.args[:2]]
        dtype = bounds[-1][1]  # range(np.uint64(n)): an unsigned counter (a view's index)
        if dtype not in ("int64", "uint64") or any(t != dtype for _, t in bounds):
            raise Unsupported(f"a range of {', '.join(t for _, t in bounds)}")
        start = bounds[0][0] if len(bounds) == 2 else ir.Constant(I64, 0)
        stop = bounds[-1][0]
        name = st.target.id
        if name in self.scope:
            raise Unsupported(f"loop variable {name} reused")
        counter = self._new_var(f"{name}.next", dtype)
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
        # (as Numba's range, whatever the counter's type: a signed count, 0 when stop <= start)
        var = self.scope[name] = self._new_var(name, dtype)
        b.store(i, var.slot)
        outer, loop = self.group, None
        if _independent_iterations(st):
            self.group, loop = self._parallel_loop()
        self._block(st.body)
        self.group = outer
        # (the next value from the counter, as Python's: the body may assign the variable)
        b.store(b.add(i, ir.Constant(I64, step), flags=INT_FLAGS[dtype]), counter.slot)
        back = b.branch(test)
        if loop is not None:
            back.set_metadata("llvm.loop", loop)
        b.position_at_end(done)
        del self.scope[name]  # (Python keeps it; the kernels never read it after the loop)

    def _parallel_loop(self):
        """(access group, loop metadata) that tell LLVM a loop's iterations are independent
        (llvm.loop.parallel_accesses): it vectorizes without runtime checks for overlapping
        arrays. (Both nodes must be distinct, the loop's naming itself: ir_text writes them so
        from these placeholders.)"""
        n = len(self.module.metadata)
        group = self.module.add_metadata([ir.MetaDataString(self.module, f"gradc.group.{n}")])
        parallel = self.module.add_metadata(
            [ir.MetaDataString(self.module, "llvm.loop.parallel_accesses"), group])
        loop = self.module.add_metadata([ir.MetaDataString(self.module, f"gradc.loop.{n}"),
                                         parallel])
        return group, loop

    def _bind_part(self, name, e):
        """`a = x[lo:hi]`, a part of an array as an array of its own. The kernels slice within
        bounds (bmm's batch t of x), which is all this reads: a slice with a step, an open
        bound, or a bound that could be negative is left to Numba."""
        array, sl = self.scope.get(dotted_name(e.value)), e.slice
        if (not isinstance(array, Array) or array.length is None or sl.step is not None
                or sl.lower is None or sl.upper is None):
            raise Unsupported(ast.unparse(e))
        (lo, lt), (hi, ht) = self._expr(sl.lower), self._expr(sl.upper)
        if lt != "int64" or ht != "int64" or not _never_negative(sl.lower) \
                or not _never_negative(sl.upper):
            raise Unsupported(ast.unparse(e))
        part = self.builder.gep(array.ptr, [lo])
        self._bind(name, Array(part, self.builder.sub(hi, lo), array.dtype))


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
        return Var(slot, dtype)


def _independent_iterations(loop):
    """Whether LLVM may take `loop`'s iterations as independent, and nothing it computes would
    change by vectorizing it. Independent: it is innermost, each array it stores to is stored at
    one index that moves with the loop variable by one (`a[i]`, `a[j * n + i]`) and read only
    at that index. That holds of the loop kernels: buffers of two names overlap only element for
    element (the memory plan's invariant, which codegen/program.py verify_plan checks), so LLVM
    need not emit runtime checks for overlap before vectorizing, which cost compile time as
    stores x accesses (0.17 s for one loop that updates 9 parameters, 0.04 s without) and,
    past a count, keep the loop scalar. Unchanged: no value carried from one iteration to the
    next (a sum's order would change) and no transcendental function (libmvec's vector variants
    round otherwise than libm), so this route keeps Numba's bits where Numba's loop stayed
    scalar (an AOT module's, tests/test_aot.py)."""
    var = loop.target.id
    stored = {}  # array -> the indices it is stored at
    for node in ast.walk(loop):
        if node is not loop and isinstance(node, (ast.For, ast.While)):
            return False
        if isinstance(node, ast.Name) and node.id == var and isinstance(node.ctx, ast.Store) \
                and node is not loop.target:
            return False  # (the loop variable reassigned: an index need not move with it)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            return False  # (pow: libmvec's and libm's round otherwise)
        if isinstance(node, ast.Call) and not _exact(dotted_name(node.func)):
            return False
        targets = (node.targets if isinstance(node, ast.Assign) else
                   [node.target] if isinstance(node, ast.AugAssign) else [])
        for t in targets:
            for element in (t.elts if isinstance(t, ast.Tuple) else [t]):
                if isinstance(element, ast.Subscript):
                    if not _moves_with(element.slice, var):
                        return False
                    indices = stored.setdefault(dotted_name(element.value), set())
                    indices.add(ast.dump(element.slice))
    for node in ast.walk(loop):
        if isinstance(node, ast.Subscript) and dotted_name(node.value) in stored:
            if stored[dotted_name(node.value)] != {ast.dump(node.slice)}:
                return False
    return not _carries(loop)


def _carries(loop):
    """Whether an iteration of `loop` reads a variable before assigning it (an accumulator): a
    name it assigns anywhere, read where it is not yet surely assigned in this iteration."""
    assigned = {n.id for n in ast.walk(loop) if isinstance(n, ast.Name)
                and isinstance(n.ctx, ast.Store)} - {loop.target.id}
    sure = set()

    def reads_early(node):
        return any(isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id in assigned
                   and n.id not in sure for n in ast.walk(node))

    def visit(statements, definite):
        for st in statements:
            if isinstance(st, ast.If):
                if reads_early(st.test) or visit(st.body, False) or visit(st.orelse, False):
                    return True
                continue
            if isinstance(st, ast.AugAssign) and isinstance(st.target, ast.Name) \
                    and st.target.id not in sure:
                return True
            if reads_early(st.value if hasattr(st, "value") else st):
                return True
            for t in getattr(st, "targets", [getattr(st, "target", None)]):
                if t is not None and reads_early(t.slice if isinstance(t, ast.Subscript) else
                                                 ast.Tuple([], ast.Load())):
                    return True
                if definite:
                    sure.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name)
                                and isinstance(n.ctx, ast.Store))
        return False

    return visit(loop.body, True)


def _exact(name):
    """Whether a call of `name` touches no memory and rounds alike in a vector and a scalar loop
    (a cast, exact math, the loop's range)."""
    name = name.removeprefix("np.")
    return name in CASTS or name in CLASSIFY or name in (
        "max2", "min2", "sign", "range", "sqrt", "floor", "ceil", "trunc", "rint", "abs",
        "copysign", "fmaximum", "fminimum", "freeze", "fexp")


def _moves_with(index, var):
    """Whether `index` is `var` plus terms that do not mention it."""
    if isinstance(index, ast.Name):
        return index.id == var
    if isinstance(index, ast.BinOp) and isinstance(index.op, ast.Add):
        return (_moves_with(index.left, var) and not _mentions(index.right, var)
                or _moves_with(index.right, var) and not _mentions(index.left, var))
    return False


def _mentions(node, var):
    return any(isinstance(n, ast.Name) and n.id == var for n in ast.walk(node))


def ir_text(module):
    """The module's IR as the Numba route hands it to LLVM: normalised, with libmvec's vector
    variants marked on its math calls when gradc uses them."""
    from numba.core import cgutils
    text = cgutils.normalize_ir_text(str(module))
    text = re.sub(r'^(!\d+) = !\{ ?!"gradc\.group\.\d+" ?\}$', r"\1 = distinct !{}", text,
                  flags=re.M)
    text = re.sub(r'^(!\d+) = !\{ ?!"gradc\.loop\.\d+", ?(!\d+) ?\}$', r"\1 = distinct !{\1, \2}",
                  text, flags=re.M)
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
    from . import modules, pool_rt, rt
    todo = {n: s for n, s in sources.items() if n not in _loaded}
    if todo:
        vecmath.enable()  # (decides the rewrite, as for Numba's kernels)
        if rt.BLAS == "openblas" and any("gemm" in s for s in todo.values()):
            pool_rt.pool()  # (its products, gradc_?gemm64, before a kernel links to them)
            modules.bind_products("\n".join(todo.values()))  # (the ?gemm they call)
        codegen = cpu_target.target_context.codegen()
        # keyed by the kernels and the machine code's target (triple, CPU, features), as
        # Numba's own cache is: a cache shared by two machines never runs the other's code
        key = [repr(codegen.magic_tuple())] + [f"{n}\0{s}" for n, s in sorted(todo.items())]
        digest = hashlib.sha256("\0".join(key).encode()).hexdigest()
        path = os.path.join(folder, f"gradc_direct_{digest[:24]}.bin") if folder else None
        with global_compiler_lock:
            found = read_library(codegen, path) if path else None
            STATS["loaded" if found else "compiled"] += 1
            if found is None:
                found = _compile(codegen, todo, f"gradc_direct_{digest[:24]}")
                if path:  # (uncached, but compiled; RuntimeError: no machine code captured
                    # to cache, as after an interrupt inside LLVM's callback)
                    with contextlib.suppress(OSError, RuntimeError):
                        write_library(path, *found)
        symbols, library = found
        if library is not None:
            keep_alive(library)
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


def keep_alive(library):
    """Keep a finalized library (its machine code, which addresses into it point to) for the
    rest of the process."""
    _libraries.append(library)


def write_library(path, symbols, library):
    """The library's machine code (Numba's object-code serialisation) in one file, after a
    line with the sha256 of the rest, written atomically."""
    from .modules import write_checked
    if library is None:
        name, blobs = "", (b"", b"")
    else:
        name, _, blobs = library.serialize_using_object_code()
    header = json.dumps({"library": name, "symbols": symbols}).encode()
    write_checked(path, _MAGIC,
                  struct.pack("<3Q", len(header), *map(len, blobs)) + header + b"".join(blobs))


def read_library(codegen, path):
    """(symbols, library) from the file at `path`, or None when there is none; a file whose
    checksum does not match (damaged, truncated, foreign) is deleted, never loaded."""
    from .modules import read_checked
    payload = read_checked(path, _MAGIC)
    if payload is None:
        return None
    try:
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
