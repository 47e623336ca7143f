"""CPU code generation: Numba kernels and a Python driver.

Kernels are shape-generic and named by their content: sizes, strides and buffer addresses are
arguments, so one kernel body serves every layer, batch size and model with the same structure,
and compiles once (and once per machine, through Numba's disk cache). Kernel bodies are canonical
(no user names), which is what lets them be shared; the driver, one per compiled signature, calls
them in order and carries the user's names and source lines in its comments.
"""
from __future__ import annotations

import contextlib
import hashlib

import numpy as np

from ..errors import CompileError
from ..ops.elementwise import lit
from ..ops.movement import contiguous_strides
from ..ops.reduction import combine, identity
from ..ops.registry import KERNEL, REDUCE

ARRAY_OF = {"float32": "f32_array", "float64": "f64_array", "int64": "i64_array",
            "int32": "i32_array", "bool": "bool_array"}


class KernelSource:
    """One kernel: canonical source plus the driver's argument expressions for one call."""

    def __init__(self, title, params, body, call_args, helper=None):
        self.params = params
        body_text = "\n".join(body)
        helper_text = ""
        if helper is not None:  # a parallel loop nest, called from the kernel
            name, args, lines = helper
            helper_text = (f"@njit(**JIT_OPTIONS, parallel=True)\n"
                           f"def {name}({', '.join(args)}):\n" + "\n".join(lines) + "\n\n\n")
        digest = hashlib.sha1(f"{title}\n{params}\n{helper_text}{body_text}".encode()).hexdigest()[:10]
        self.name = f"{title}_{digest}"
        self.call_args = call_args
        sig = ", ".join(["int64"] * len(params))
        self.source = (helper_text.replace(f"{title}_body", f"{self.name}_body") +
                       f'@njit("void({sig})", **JIT_OPTIONS)\n'
                       f"def {self.name}({', '.join(params)}):\n"
                       + body_text.replace(f"{title}_body", f"{self.name}_body") + "\n")


def _array_ctor(dtype):
    try:
        return ARRAY_OF[np.dtype(dtype).name]
    except KeyError:
        raise CompileError(f"no CPU buffers of dtype {np.dtype(dtype).name}") from None


class _Params:
    """Kernel parameters in canonical order, each with the driver expression that feeds it."""

    def __init__(self):
        self.names, self.values = [], []

    def add(self, name, value):
        if name in self.names:
            i = self.names.index(name)
            if self.values[i] != str(value):
                raise AssertionError(f"parameter {name} bound twice")
            return name
        self.names.append(name)
        self.values.append(str(value))
        return name


# ---------------------------------------------------------------------------------------------
# loop kernels

def _collapse(shape, strides_list):
    """Drop size-1 dims and merge adjacent dims that every access walks contiguously."""
    dims = [d for d in range(len(shape)) if shape[d] != 1]
    sizes, groups = [], []
    for d in dims:
        if groups and all(s[groups[-1][-1]] == s[d] * shape[d] for s in strides_list):
            groups[-1].append(d)
            sizes[-1] *= shape[d]
        else:
            groups.append([d])
            sizes.append(shape[d])
    collapsed = [[s[g[-1]] for g in groups] for s in strides_list]
    return sizes, collapsed


class _Access:
    def __init__(self, array, strides, dtype, origin=0):
        self.array, self.strides, self.dtype = array, strides, dtype
        self.origin = origin  # elements from the array's start to index 0 (negative strides)


def _index(access, sizes, params, loopvars):
    """The flat index of an access, written from sizes where the access is a (broadcast of a)
    contiguous buffer, else from stride parameters. Returns (index, extent) expressions."""
    nz = [l for l, s in enumerate(access.strides) if s != 0]
    if not nz:
        return "0", "1"
    natural, acc = True, 1
    for l in reversed(nz):
        if access.strides[l] != acc:
            natural = False
        acc *= sizes[l]
    if natural:
        expr = loopvars[nz[0]]
        for l in nz[1:]:
            expr = f"({expr}) * n{l} + {loopvars[l]}" if "+" in expr else f"{expr} * n{l} + {loopvars[l]}"
        return expr, " * ".join(f"n{l}" for l in nz)
    terms = [f"{loopvars[l]} * {params.add(f's{access.array}_{l}', access.strides[l])}" for l in nz]
    if access.origin:
        terms.insert(0, params.add(f"o{access.array}", access.origin))
    extent = access.origin + sum((sizes[l] - 1) * s for l, s in enumerate(access.strides) if s > 0) + 1
    return " + ".join(terms), params.add(f"len{access.array}", extent)


def loop_kernel(kernel, fusion, address):
    """Source of a fused loop kernel. `address(base, offset_elements)` gives the driver's pointer
    expression for a buffer."""
    shape = kernel.shape
    local = {}  # value id -> local variable or literal
    arrays = {}  # (base id, offset) -> (array name, dtype, pointer expression)
    loads = {}  # (array, strides) -> local name
    accesses = []  # (_Access, role, payload) in order
    body_ops = []  # (kind, payload)
    counter = iter(range(10 ** 6))

    def array_for(base, offset, dtype):
        # keyed by address: a value written in place into an input (a train step's parameter)
        # uses the input's own array, so LLVM sees one pointer and still vectorizes (two arrays
        # over one address failed its overlap check: W3's step ran scalar, 29 ms vs 2.3 ms)
        ptr = address(base, offset)
        key = (ptr, np.dtype(dtype).str)
        if key not in arrays:
            arrays[key] = (f"a{len(arrays)}", dtype, ptr)
        return arrays[key][0]

    for node in kernel.nodes:
        for x in node.inputs:
            if x.id in local:
                continue
            base, offset, strides = fusion.layouts[x.id]
            if base.node is not None and base.node.op == "const":
                local[x.id] = lit(base.node.attr["value"], x.dtype)
                continue
            # negative strides (x[::-1]): address the lowest element, index from an origin
            low = sum(min(0, (n - 1) * s) for n, s in zip(x.shape, strides))
            arr = array_for(base, offset + low, x.dtype)
            key = (arr, strides)
            if key not in loads:
                loads[key] = f"t{next(counter)}"
                accesses.append((_Access(arr, strides, x.dtype, origin=-low), "load", loads[key]))
            local[x.id] = loads[key]
        name = f"t{next(counter)}"
        local[node.output.id] = name
        body_ops.append((node, name))

    stored = {v.id for v in kernel.stores}
    for node in kernel.nodes:
        v = node.output
        if v.id not in stored:
            continue
        offset = 0
        arr = array_for(v, offset, v.dtype)
        if node.opdef.kind == REDUCE:
            strides = tuple(0 if d in node.attr["axes"] else s
                            for d, s in enumerate(contiguous_strides(v.shape)))
        else:
            strides = contiguous_strides(shape)
        accesses.append((_Access(arr, strides, v.dtype), "store", node))

    sizes, collapsed = _collapse(shape, [a.strides for a, _, _ in accesses])
    for (acc, _, _), cs in zip(accesses, collapsed):
        acc.strides = cs
    ndim = len(sizes)
    loopvars = [f"i{l}" for l in range(ndim)]
    params = _Params()
    for l, n in enumerate(sizes):
        params.add(f"n{l}", n)
    for name, dtype, ptr in arrays.values():
        params.add(f"p{name[1:]}", ptr)

    index, extent_of = {}, {}
    for acc, _, _ in accesses:
        idx, extent = _index(acc, sizes, params, loopvars)
        index[id(acc)] = idx
        extent_of.setdefault(acc.array, []).append(extent)

    lines = []
    emit = lambda depth, text: lines.append("    " * depth + text)  # noqa: E731
    for name, dtype, _ in arrays.values():
        extents = extent_of[name]
        extent = extents[0] if len(set(extents)) == 1 else params.add(
            f"len{name}", max(_eval_extent(e, sizes, params) for e in extents))
        emit(1, f"{name} = {_array_ctor(dtype)}(p{name[1:]}, {extent})")

    # reductions: the trailing loops they reduce over accumulate in a register
    reductions = []
    for acc, role, node in accesses:
        if role == "store" and node.opdef.kind == REDUCE:
            reduced = [l for l in range(ndim) if acc.strides[l] == 0]
            start = ndim
            while start > 0 and start - 1 in reduced:
                start -= 1
            in_memory = any(l < start for l in reduced)  # also reduced across outer loops
            reductions.append((acc, node, start, in_memory))
    for acc, node, start, in_memory in reductions:
        if in_memory:
            ident = lit(identity(node.op, node.output.dtype), node.output.dtype)
            emit(1, f"for j in range({extent_of[acc.array][0]}):")
            emit(2, f"{acc.array}[j] = {ident}")

    # Parallel kernels split the outermost loop into CHUNKS ranges run by a prange in a nested
    # function (Numba drops stores to arrays made inside a parfor's own function). A reduction
    # over everything leaves one partial result per chunk in planned scratch, combined after.
    parallel = kernel.parallel
    full = [(acc, node) for acc, node, start, _ in reductions if start == 0] if parallel else []
    nest = []
    nest_emit = lambda depth, text: nest.append("    " * depth + text)  # noqa: E731
    out = nest_emit if parallel else emit
    depth = 1
    if parallel:
        out(depth, "for c in prange(CHUNKS):")
        depth += 1
    for acc, role, name in accesses:  # scalars (a learning rate...) are read once, before loops
        if role == "load" and index[id(acc)] == "0":
            out(depth, f"{name} = {acc.array}[0]")
    for l in range(ndim):
        for acc, node, start, _ in reductions:
            if start == l:
                out(depth, f"acc{acc.array[1:]} = {lit(identity(node.op, node.output.dtype), node.output.dtype)}")
        span = "c * n0 // CHUNKS, (c + 1) * n0 // CHUNKS" if parallel and l == 0 else f"n{l}"
        out(depth, f"for {loopvars[l]} in range({span}):")
        depth += 1
    for acc, role, name in accesses:
        if role == "load" and index[id(acc)] != "0":
            out(depth, f"{name} = {acc.array}[{index[id(acc)]}]")
    for node, name in body_ops:
        if node.opdef.kind == REDUCE:
            continue
        args = [local[x.id] for x in node.inputs]
        expr = node.opdef.scalar(node.output.dtype, *args, **node.attr)
        out(depth, f"{name} = {expr}  # {node.op}")
    for acc, role, node in accesses:
        if role != "store":
            continue
        value = local[node.inputs[0].id] if node.opdef.kind == REDUCE else local[node.output.id]
        target = f"{acc.array}[{index[id(acc)]}]"
        if node.opdef.kind != REDUCE:
            out(depth, f"{target} = {value}")
            continue
        start, in_memory = next((s, m) for a, n, s, m in reductions if a is acc)
        if start < ndim:
            accname = f"acc{acc.array[1:]}"
            out(depth, f"{accname} = {combine(node.op, accname, value)}  # {node.op}")
        elif in_memory:
            out(depth, f"{target} = {combine(node.op, target, value)}  # {node.op}")
        else:  # only size-1 axes reduced: a copy
            out(depth, f"{target} = {value}  # {node.op}")
    for l in reversed(range(ndim)):
        depth -= 1
        for acc, node, start, in_memory in reductions:
            if start == l:
                accname = f"acc{acc.array[1:]}"
                target = (f"part{acc.array[1:]}[c]" if parallel and l == 0 else
                          f"{acc.array}[{index[id(acc)]}]")
                out(depth, f"{target} = {combine(node.op, target, accname) if in_memory else accname}")

    ops = [n.op for n, _ in body_ops]
    title = "loop_" + "_".join(dict.fromkeys(o for o in ops if o not in ("copy", "alias")))[:40]
    title = title.rstrip("_") if title != "loop_" else "loop_copy"
    if not parallel:
        return KernelSource(title, params.names, lines, params.values)

    title += "_par"
    for acc, node in full:
        ptr = address(("partial", kernel.index, node.output.id), 0)
        params.add(f"q{acc.array[1:]}", ptr)
        emit(1, f"part{acc.array[1:]} = {_array_ctor(node.output.dtype)}(q{acc.array[1:]}, CHUNKS)")
    inner_args = [n for n in params.names if not n.startswith(("p", "q"))] + \
        [name for name, _, _ in arrays.values()] + [f"part{acc.array[1:]}" for acc, _ in full]
    emit(1, f"{title}_body({', '.join(inner_args)})")
    for acc, node in full:
        p = f"part{acc.array[1:]}"
        emit(1, f"acc = {p}[0]")
        emit(1, "for c in range(1, CHUNKS):")
        emit(2, f"acc = {combine(node.op, 'acc', f'{p}[c]')}")
        emit(1, f"{acc.array}[{index[id(acc)]}] = acc")
    return KernelSource(title, params.names, lines, params.values,
                        helper=(f"{title}_body", inner_args, nest))




def _eval_extent(expr, sizes, params):
    if expr.isdigit():
        return int(expr)
    if expr in params.names:
        return int(params.values[params.names.index(expr)])
    total = 1
    for part in expr.split(" * "):
        total *= sizes[int(part[1:])] if part.startswith("n") else int(part)
    return total


# ---------------------------------------------------------------------------------------------
# library kernels (matmul, gathers...): each op writes its own loop through a KernelWriter

class KernelWriter:
    """What an op's `kernel` template writes with: `x0, x1, ...` are the input arrays, `out` the
    output, all flat and contiguous; sizes become parameters so the kernel is shape-generic."""

    def __init__(self, node, pointers):
        self.node = node
        self.op = node.op
        self.inputs = node.inputs
        self.output = node.output
        self.attr = node.attr
        self.source = node.source
        self.zero = lit(0, node.output.dtype)
        self._params = _Params()
        self._lines = []
        self._depth = 1
        names = [f"x{i}" for i in range(len(node.inputs))] + ["out"]
        for name, v, ptr in zip(names, list(node.inputs) + [node.output], pointers):
            self._params.add(f"p_{name}", ptr)
        for name, v in zip(names, list(node.inputs) + [node.output]):
            self.line(f"{name} = {_array_ctor(v.dtype)}(p_{name}, {self.size(v)})")

    def param(self, name, value):
        return self._params.add(name, int(value))

    def size(self, v):
        which = "out" if v is self.output else f"x{[x.id for x in self.inputs].index(v.id)}"
        return self.param(f"len_{which}", v.size)

    def collapse(self, shape, *strides):
        """(sizes, strides per access) of loops over `shape` with size-1 dims dropped and dims
        that every access walks contiguously merged."""
        return _collapse(shape, list(strides))

    def array(self, address, like):
        """An expression viewing `address` as a flat array of the dtype and size of `like` (an
        input): for a template that picks its input's address at run time."""
        return f"{_array_ctor(like.dtype)}({address}, {self.size(like)})"

    def line(self, text):
        self._lines.append("    " * self._depth + text)

    @contextlib.contextmanager
    def indent(self, n=1):
        self._depth += n
        try:
            yield
        finally:
            self._depth -= n

    def loops(self, shape):
        writer = self

        class Loops:
            index = [f"i{d}" for d in range(len(shape))]
            sizes = [writer.param(f"m{d}", n) for d, n in enumerate(shape)]
            flat = " + ".join(
                f"{i} * {writer.param(f'm_stride{d}', s)}" if s != 1 else i
                for d, (i, s) in enumerate(zip(index, contiguous_strides(shape)))) or "0"

            def __enter__(self):
                for i, n in zip(self.index, self.sizes):
                    writer.line(f"for {i} in range({n}):")
                    writer._depth += 1
                return self

            def __exit__(self, *exc):
                writer._depth -= len(self.index)

        return Loops()

    def finish(self):
        return KernelSource(f"{self.op}", self._params.names, self._lines, self._params.values)


def library_kernel(kernel, fusion, address):
    (node,) = kernel.nodes
    pointers = []
    for x in list(node.inputs) + [node.output]:
        base, offset, _ = fusion.layouts[x.id]
        pointers.append(address(base, offset))
    writer = KernelWriter(node, pointers)
    node.opdef.kernel(writer)
    return writer.finish()


def kernel_source(kernel, fusion, address):
    if kernel.kind == "loop":
        return loop_kernel(kernel, fusion, address)
    if kernel.nodes[0].opdef.kind == KERNEL:
        return library_kernel(kernel, fusion, address)
    raise CompileError(f"op {kernel.kind!r} cannot be emitted for the CPU",
                       source=kernel.nodes[0].source)


MODULE_HEADER = '''"""Generated by gradc {version}. {what}"""
import numpy as np
from numba import njit
{runtime_import}
'''
