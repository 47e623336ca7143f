"""CPU code generation: Numba kernels and a Python driver.

Kernels are shape-generic and named by their content: sizes, strides and buffer addresses are
arguments, so one kernel body serves every layer, batch size and model with the same structure,
and compiles once (and once per machine, through Numba's disk cache). Kernel bodies are canonical
(no user names), which is what lets them be shared; the driver, one per compiled signature, calls
them in order and carries the user's names and source lines in its comments.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib

import numpy as np

from ..errors import CompileError
from ..ops.elementwise import lit
from ..ops.movement import contiguous_strides
from ..ops.fn import const_value
from ..ops.registry import ELEMENTWISE, KERNEL, VIEW
from ..passes.fuse import CHUNKS
from .loops import collapse, lower
from .special_math import FUNCTIONS as SPECIAL_FUNCTIONS

ARRAY_OF = {"float32": "f32_array", "float64": "f64_array", "int64": "i64_array",
            "int32": "i32_array", "bool": "bool_array"}


class _CpuMath:
    """The CPU's math table for the ops' scalar expressions: NumPy's functions, which Numba
    compiles to libm calls (vectorized through libmvec, gradc/codegen/vecmath.py); rt.py's call
    of libm where Numba compiles NumPy's function otherwise (cbrt); and the special functions of
    gradc/codegen/special_math.py (`sp_erfinv`)."""

    def __getattr__(self, name):
        if name in SPECIAL_FUNCTIONS:
            return f"sp_{name}"
        if name == "cbrt":
            return "libm_cbrt"
        if not hasattr(np, name):
            raise AttributeError(f"no NumPy function {name!r} for the CPU's scalar math")
        return f"np.{name}"


CPU_MATH = _CpuMath()


# Below these, exp underflows to 0 (e^x < half the smallest subnormal: x < -150 ln 2, -1075 ln 2)
EXP_ZERO_BELOW = {"float32": -104.0, "float64": -746.0}


def _made_from_below(v, bound, depth=8):
    """Whether `v` is computed, through at most `depth` elementwise ops and views, from a
    constant holding a number below `bound` (a mask's -inf or -1e9)."""
    stack, seen = [(v, 0)], set()
    while stack:
        x, d = stack.pop()
        value = const_value(x)
        if value is not None and value < bound:
            return True
        node = x.node
        if node is None or x.id in seen:
            continue
        seen.add(x.id)
        if node.op == "constant":
            data = node.attr["data"].array
            if data.dtype.kind == "f" and data.size and np.nanmin(data) < bound:
                return True
        elif d < depth and node.opdef.kind in (ELEMENTWISE, VIEW):
            stack += [(i, d + 1) for i in node.inputs]
    return False


def scalar(statement):
    """The CPU expression of one statement of a loop nest's body."""
    node = statement.node
    dtype = node.output.dtype
    text = node.opdef.scalar(CPU_MATH, dtype, *statement.args, **node.attr)
    if (node.op == "exp" and dtype.name in EXP_ZERO_BELOW
            and _made_from_below(node.inputs[0], EXP_ZERO_BELOW[dtype.name])):
        # libmvec's vector exp calls the scalar expf once for every lane outside its fast range
        # (|x| > ~87): a causal softmax's masked lanes, exp(-inf), made its loop 5x slower.
        # Lanes below the underflow bound get 0, what exp gives them, and exp gets 0 there in
        # their place (NaN still goes in); `freeze` (rt.py) keeps LLVM from seeing that the
        # result ignores those lanes and passing x itself again. (Only where the argument is
        # made from such a constant, a mask's: the guard cost W3's exp loop ~5%.)
        (x,) = statement.args
        zero, under = lit(0, dtype), f"{x} < {lit(EXP_ZERO_BELOW[dtype.name], dtype)}"
        text = f"{zero} if {under} else {CPU_MATH.exp}(freeze({zero} if {under} else {x}))"
    return text


def combine(red, acc, x):
    """The CPU expression that folds `x` into a reduction's accumulator `acc`. A float max/min
    folds with rt.fmaximum/fminimum, which LLVM vectorizes, not through max2's compare and
    select (W7's row max of its masked attention scores ran one element at a time, 1.7 ns
    each); `freeze` keeps LLVM from folding a `where` that makes x into a conditional
    update, which it does not vectorize."""
    if red.op in ("max", "min") and np.dtype(red.dtype).kind == "f":
        return f"f{red.op}imum({acc}, freeze({x}))"
    return red.combine(acc, x)


class KernelSource:
    """One kernel: canonical source plus the driver's argument expressions for one call."""

    def __init__(self, title, params, body, call_args, chunk=None, reassociate=True):
        self.params = params
        body_text = "\n".join(body)
        options = "JIT_OPTIONS" if reassociate else "dict(JIT_OPTIONS, fastmath=MAP_FASTMATH)"
        chunk_text = ""
        if chunk is not None:  # a parallel kernel's chunk function, called by the kernel first
            chunk_text = (f'@njit("void({", ".join(["int64"] * (len(params) + 1))})", '
                          f"**{options})\n"
                          f"def {title}_chunk(c, {', '.join(params)}):\n" + "\n".join(chunk)
                          + "\n\n\n")
            body_text = (f"    for c in range({CHUNKS}):  # on gradc's threads (LLVM route), "
                         f"else in turn\n        {title}_chunk(c, {', '.join(params)})\n"
                         + body_text).rstrip("\n")
        digest = hashlib.sha1(f"{title}\n{params}\n{options}\n{chunk_text}{body_text}"
                              .encode()).hexdigest()[:10]
        self.name = f"{title}_{digest}"
        self.call_args = call_args
        sig = ", ".join(["int64"] * len(params))
        self.source = (chunk_text.replace(f"{title}_chunk", f"{self.name}_chunk") +
                       f'@njit("void({sig})", **{options})\n'
                       f"def {self.name}({', '.join(params)}):\n"
                       + body_text.replace(f"{title}_chunk", f"{self.name}_chunk") + "\n")


@functools.lru_cache(maxsize=64)
def _array_ctor(dtype):
    try:
        return ARRAY_OF[np.dtype(dtype).name]
    except KeyError:
        raise CompileError(f"no CPU buffers of dtype {np.dtype(dtype).name}") from None


POINTER_OF = {"float32": "f32_ptr", "float64": "f64_ptr", "int64": "i64_ptr", "int32": "i32_ptr"}


def _pointer_ctor(dtype):
    try:
        return POINTER_OF[np.dtype(dtype).name]
    except KeyError:
        raise CompileError(f"no CPU buffers of dtype {np.dtype(dtype).name}") from None


class _Params:
    """Kernel parameters in canonical order, each with the driver expression that feeds it."""

    def __init__(self):
        self.names, self.values = [], []
        self.value_of = {}  # name -> value (a concatenate of 800 time steps has 1600 names)

    def add(self, name, value):
        bound = self.value_of.get(name)
        if bound is not None:
            if bound != str(value):
                raise AssertionError(f"parameter {name} bound twice")
            return name
        self.names.append(name)
        self.values.append(str(value))
        self.value_of[name] = str(value)
        return name


# ---------------------------------------------------------------------------------------------
# loop kernels: the CPU rendering of a LoopNest (gradc/codegen/loops.py)

def _index(access, sizes, params, loopvars, tag, unsigned, chunked=False):
    """The flat index of an access, written from sizes where the access is a (broadcast of a)
    contiguous buffer, else from stride parameters named by `tag` (one per distinct stride
    pattern of the array: x[:, 0] * x[::-1, 1] reads one array two ways). Returns (index,
    extent): the extent is an expression of the sizes, or (parameter name, value) for a strided
    access, a parameter added only where an array view needs its length (`_extent_text`).
    `unsigned`: the index is wrapped in np.uint64 (for array views; see the end), the natural
    one too where the outer loop is `chunked` (it starts at c * n0 // CHUNKS, which LLVM cannot
    see is never negative: the bool mask of W4's relu was stored one element at a time, and
    its chunked kernel took 130 us a step more than the whole one)."""
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
        return (f"np.uint64({expr})" if unsigned and chunked else expr), \
            " * ".join(f"n{l}" for l in nz)
    # A unit stride of the innermost loop is written as such, not as a parameter: LLVM sees
    # contiguous loads (no gathers, no check that the stride is 1). The kernel is still
    # shape-generic; it only fixes that one stride.
    terms = [loopvars[l] if l == len(sizes) - 1 and access.strides[l] == 1 else
             f"{loopvars[l]} * {params.add(f's{tag}_{l}', access.strides[l])}" for l in nz]
    if access.origin:
        terms.insert(0, params.add(f"o{tag}", access.origin))
    extent = access.origin + sum((sizes[l] - 1) * s for l, s in enumerate(access.strides) if s > 0) + 1
    index = " + ".join(terms)
    # An array view's index is unsigned, because it is never negative (the origin makes it so)
    # and Numba wraps a signed index that might be (x[-1]): that select hid the access's range
    # from LLVM, which then gave up on the overlap checks ("too many memory checks") or ran checks
    # that failed against any buffer above it, and the loop ran scalar, libm's exp and tanh
    # included (the LSTM's gate kernel: 316 us a step instead of 13.5 us). A pointer never wraps.
    return (f"np.uint64({index})" if unsigned else index), (f"len{tag}", extent)


def _extent_text(extent, params):
    """An extent from `_index` as kernel text (adding its length parameter if it has one)."""
    return params.add(*extent) if isinstance(extent, tuple) else extent


def _arrays(nest, address):
    """Name the arrays of a loop nest: {id(access): array name}, {name: (dtype, pointer)}.
    Arrays are keyed by address: a value written in place into an input (a train step's
    parameter) uses the input's own array, so LLVM sees one pointer and still vectorizes (two
    arrays over one address failed its overlap check: the fused-loop benchmark's train step ran
    scalar, 29 ms against 2.3 ms)."""
    by_address, arrays, array_of = {}, {}, {}
    for access in nest.accesses:
        ptr = address(access.base, access.offset - access.origin)
        key = (ptr, np.dtype(access.dtype).str)
        if key not in by_address:
            by_address[key] = f"a{len(by_address)}"
            arrays[by_address[key]] = (access.dtype, ptr)
        array_of[id(access)] = by_address[key]
    return array_of, arrays


def loop_kernel(kernel, fusion, address):
    """Source of a fused loop kernel. `address(base, offset_elements)` gives the driver's pointer
    expression for a buffer."""
    nest = lower(kernel, fusion)
    array_of, arrays = _arrays(nest, address)
    sizes, ndim = nest.sizes, nest.ndim
    loopvars = [f"i{l}" for l in range(ndim)]
    params = _Params()
    for l, n in enumerate(sizes):
        params.add(f"n{l}", n)
    for name, (dtype, ptr) in arrays.items():
        params.add(f"p{name[1:]}", ptr)

    # Buffers are raw pointers (rt.py's f32_ptr...: much cheaper for Numba to compile), except
    # bool buffers: array views
    viewed = {name for name, (dtype, _) in arrays.items() if np.dtype(dtype) == np.bool_}
    index, extent_of, patterns = {}, {}, {}
    for access in nest.accesses:
        name = array_of[id(access)]
        seen = patterns.setdefault(name, [])
        if (access.strides, access.origin) not in seen:
            seen.append((access.strides, access.origin))
        j = seen.index((access.strides, access.origin))
        idx, extent = _index(access, sizes, params, loopvars, f"{name}v{j}" if j else name,
                             unsigned=name in viewed, chunked=kernel.parallel)
        index[id(access)] = f"{name}[{idx}]"
        extent_of.setdefault(name, []).append(extent)

    # A parallel kernel's nest is a function of one chunk `c` of its outermost loop (CHUNKS
    # ranges); the kernel calls it per chunk, and on the LLVM route gradc's threads take the
    # chunks (pool_rt.py). A reduction over everything leaves one partial result per chunk in
    # planned scratch, combined after in chunk order: the bits depend on the shape alone.
    parallel = kernel.parallel
    full = [red for red in nest.reductions if red.register_from(ndim) == 0] if parallel else []
    for red in full:
        array = array_of[id(red.access)]
        params.add(f"q{array[1:]}", address(("partial", kernel.index, red.node.output.id), 0))

    lines = []
    emit = lambda depth, text: lines.append("    " * depth + text)  # noqa: E731
    constructors = {}
    for name, (dtype, _) in arrays.items():
        if name not in viewed:
            constructors[name] = f"{name} = {_pointer_ctor(dtype)}(p{name[1:]})"
            continue
        extents = [_extent_text(e, params) for e in extent_of[name]]
        longest = max(_eval_extent(e, sizes, params) for e in extents)
        whole = f"len{name}"  # (unless a strided access bound that name to a shorter extent)
        if params.value_of.get(whole, str(longest)) != str(longest):
            whole = f"len{name}all"
        extent = extents[0] if len(set(extents)) == 1 else params.add(whole, longest)
        constructors[name] = f"{name} = {_array_ctor(dtype)}(p{name[1:]}, {extent})"
    for red in full:
        array = array_of[id(red.access)]
        constructors[f"part{array[1:]}"] = \
            f"part{array[1:]} = {_pointer_ctor(red.dtype)}(q{array[1:]})"
    for text in constructors.values():
        emit(1, text)

    # reductions: the trailing loops they reduce over accumulate in a register
    for red in nest.reductions:
        if red.in_memory(ndim):
            emit(1, f"for j in range({_extent_text(extent_of[array_of[id(red.access)]][0], params)}):")
            emit(2, f"{array_of[id(red.access)]}[j] = {red.identity()}")

    depth = 1
    for access in nest.loads:  # scalars (a learning rate...) are read once, before loops
        if access.is_scalar:
            emit(depth, f"{access.name} = {index[id(access)]}")
    for l in range(ndim):
        for red in nest.reductions:
            if red.register_from(ndim) == l:
                emit(depth, f"acc{array_of[id(red.access)][1:]} = {red.identity()}")
        span = f"c * n0 // {CHUNKS}, (c + 1) * n0 // {CHUNKS}" if parallel and l == 0 else f"n{l}"
        emit(depth, f"for {loopvars[l]} in range({span}):")
        depth += 1
    for access in nest.loads:
        if not access.is_scalar:
            emit(depth, f"{access.name} = {index[id(access)]}")
    for st in nest.body:
        emit(depth, f"{st.name} = {scalar(st)}  # {st.node.op}")
    reduction_of = {id(red.access): red for red in nest.reductions}
    for access in nest.stores:
        value, target = nest.stored_value(access), index[id(access)]
        red = reduction_of.get(id(access))
        if red is None:
            emit(depth, f"{target} = {value}")
        elif red.register_from(ndim) < ndim:
            accname = f"acc{array_of[id(access)][1:]}"
            emit(depth, f"{accname} = {combine(red, accname, value)}  # {red.op}")
        elif red.in_memory(ndim):
            emit(depth, f"{target} = {combine(red, target, value)}  # {red.op}")
        else:  # only size-1 axes reduced: a copy
            emit(depth, f"{target} = {value}  # {red.op}")
    for l in reversed(range(ndim)):
        depth -= 1
        for red in nest.reductions:
            if red.register_from(ndim) == l:
                array = array_of[id(red.access)]
                accname = f"acc{array[1:]}"
                target = f"part{array[1:]}[c]" if parallel and l == 0 else index[id(red.access)]
                value = combine(red, target, accname) if red.in_memory(ndim) else accname
                emit(depth, f"{target} = {value}")

    title = "loop_" + (nest.title() or "copy")
    if not parallel:
        return KernelSource(title, params.names, lines, params.values,
                            reassociate=bool(nest.reductions))

    title += "_par"
    kernel_lines = []  # (after the chunks: KernelSource writes their loop)
    for red in full:
        array = array_of[id(red.access)]
        p = f"part{array[1:]}"
        kernel_lines += [f"    {constructors[array]}", f"    {constructors[p]}",
                         f"    acc = {p}[0]", f"    for c in range(1, {CHUNKS}):",
                         f"        acc = {combine(red, 'acc', f'{p}[c]')}",
                         f"    {index[id(red.access)]} = acc"]
    return KernelSource(title, params.names, kernel_lines, params.values, chunk=lines,
                        reassociate=bool(nest.reductions))


def _eval_extent(expr, sizes, params):
    if expr.isdigit():
        return int(expr)
    if expr in params.value_of:
        return int(params.value_of[expr])
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
        self.reassociate = True  # False: sums in the order written (rt.MAP_FASTMATH)
        self._params = _Params()
        self._lines = []
        self._depth = 1
        self._chunked = False  # (chunks())
        names = [f"x{i}" for i in range(len(node.inputs))] + ["out"]
        self._input_name = {}  # value id -> the name of its first place among the inputs
        for name, v in zip(names, node.inputs):
            self._input_name.setdefault(v.id, name)
        for name, v, ptr in zip(names, list(node.inputs) + [node.output], pointers):
            self._params.add(f"p_{name}", ptr)
        for name, v in zip(names, list(node.inputs) + [node.output]):
            self.line(f"{name} = {_array_ctor(v.dtype)}(p_{name}, {self.size(v)})")

    def param(self, name, value):
        return self._params.add(name, int(value))

    def size(self, v):
        which = "out" if v is self.output else self._input_name[v.id]
        return self.param(f"len_{which}", v.size)

    def collapse(self, shape, *strides):
        """(sizes, strides per access) of loops over `shape` with size-1 dims dropped and dims
        that every access walks contiguously merged."""
        return collapse(shape, list(strides))

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

    @contextlib.contextmanager
    def chunks(self):
        """The whole kernel written inside (after the arrays' views) is a chunk function, of
        chunk `c` of CHUNKS, which the kernel calls per chunk: gradc's threads take them on
        the LLVM route, as a parallel loop kernel's (loop_kernel)."""
        self._chunked = True
        yield

    def finish(self):
        chunk, lines = (self._lines, []) if self._chunked else (None, self._lines)
        return KernelSource(f"{self.op}", self._params.names, lines, self._params.values,
                            chunk=chunk, reassociate=self.reassociate)


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
