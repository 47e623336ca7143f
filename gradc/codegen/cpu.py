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
import math
from dataclasses import dataclass

import numpy as np

from ..errors import CompileError
from ..ops.elementwise import lit
from ..ops.movement import contiguous_strides
from ..ops.registry import KERNEL
from ..passes.fuse import CHUNKS
from .loops import collapse, lower, wrapped_narrow
from .special_math import FUNCTIONS as SPECIAL_FUNCTIONS

ARRAY_OF = {"float32": "f32_array", "float64": "f64_array", "int64": "i64_array",
            "int32": "i32_array", "bool": "bool_array", "int16": "i16_array", "int8": "i8_array",
            "uint16": "u16_array", "uint8": "u8_array"}


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
        if name == "exp":  # (arithmetic: libmvec's vector exp is 5-15x slower on lanes < -87)
            return "fexp"
        if not hasattr(np, name):
            raise AttributeError(f"no NumPy function {name!r} for the CPU's scalar math")
        return f"np.{name}"


CPU_MATH = _CpuMath()


def scalar(statement):
    """The CPU expression of one statement of a loop nest's body."""
    node = statement.node
    dtype = node.output.dtype
    text = node.opdef.scalar(CPU_MATH, dtype, *statement.args, **node.attr)
    if node.op == "astype" and node.inputs[0].dtype.kind == "f" and dtype.kind == "i":
        text = _float_to_int(statement.args[0], node.inputs[0].dtype, dtype, text)
    return wrapped_narrow(text, dtype)


def _float_to_int(x, source, target, cast):
    """`cast` (a float to an integer conversion of x) as NumPy's on x86 gives it: a NaN, an
    infinity or a value out of the integer's range is its smallest integer. LLVM's conversion
    of those is undefined (poison), and where it could see the value (a NaN constant, a mean
    of nothing) it folded them to 0 where the same value computed at run time gave NumPy's."""
    info = np.iinfo(target)
    low = source.type(info.min - 1)  # (the least float whose truncation is in range)
    if int(low) <= info.min - 1:
        low = np.nextafter(low, source.type(0))
    in_range = f"({x} >= {lit(low, source)}) & ({x} < {lit(-float(info.min), source)})"
    return f"{cast} if {in_range} else {lit(info.min, target)}"


WIDE_SUM = 1 << 12  # elements a register sums per output, from which float32 sums in float64
# elements a float32 register sums before its total goes into float64: each of 16 vector lanes
# adds 64, as NumPy's pairwise sum adds 128-element leaves in 8 registers. Blocks of 8192 left a
# float32 sum of 0.1s 11-16 ulps off (NumPy 1-2); these, under 1, at no time measurable (a sum
# of 4M floats, W3, W6, alternating processes).
SUM_BLOCK = 1024
_FLOAT64_MAX = float(np.finfo(np.float64).max)


def _long_sum(red, sizes):
    """Whether a reduction is a long float sum, summed in blocks of SUM_BLOCK elements whose
    totals are added with compensation (Neumaier's: the rounding error of each addition kept
    and added back at the end): a float32 one in float64 (see _wide), a float64 one in float64.
    A float64 sum of ten million 0.1s, one running total per vector lane, was 3000 ulps off
    (NumPy's pairwise sum: exact)."""
    return (red.op == "sum" and np.dtype(red.dtype) in (np.float32, np.float64)
            and math.prod(sizes[red.register_from(len(sizes)):]) >= WIDE_SUM)


def _wide(red, sizes):
    """Whether a reduction accumulates in a float64 register: a long float32 sum. Its running
    float32 total lost ~n/16 ulps over n elements (16 vector lanes): 999906.75 for ten million
    0.1s, against NumPy's pairwise 1000000.1. The innermost loop sums in float32, in blocks of
    SUM_BLOCK elements, and the blocks' totals go into float64: 1e-6 off there, and on random
    data as close as NumPy (each element converted to float64 instead cost W3's step 15-25%,
    W6's 4-6%). Short sums (a row of a softmax or a layer norm) stay in float32: over fewer
    than WIDE_SUM elements the error is NumPy's pairwise sum's."""
    return _long_sum(red, sizes) and np.dtype(red.dtype) == np.float32


def combine(red, acc, x):
    """The CPU expression that folds `x` into a reduction's accumulator `acc`. A float max/min
    folds with rt.fmaximum/fminimum, which LLVM vectorizes, not through max2's compare and
    select (W7's row max of its masked attention scores ran one element at a time, 1.7 ns
    each); `freeze` keeps LLVM from folding a `where` that makes x into a conditional
    update, which it does not vectorize."""
    if red.op in ("max", "min") and np.dtype(red.dtype).kind == "f":
        return f"f{red.op}imum({acc}, freeze({x}))"
    if red.op == "sum" and np.dtype(red.dtype).kind == "f":
        return f"radd({acc}, {x})"  # (the one reassociable operation of a loop kernel)
    return red.combine(acc, x)


class KernelSource:
    """One kernel: canonical source plus the driver's argument expressions for one call.
    `chunks`: how this call runs in chunks (Chunks), or None; `combines`: the calls that fold
    its partial results after (KernelSource each)."""

    def __init__(self, title, params, body, call_args, reassociate=True):
        self.params = params
        body_text = "\n".join(body)
        options = "JIT_OPTIONS" if reassociate else "dict(JIT_OPTIONS, fastmath=MAP_FASTMATH)"
        digest = hashlib.sha1(f"{title}\n{params}\n{options}\n{body_text}".encode()).hexdigest()[:10]
        self.name = f"{title}_{digest}"
        self.call_args = call_args
        self.chunks, self.combines = None, []
        sig = ", ".join(["int64"] * len(params))
        self.source = (f'@njit("void({sig})", **{options})\n'
                       f"def {self.name}({', '.join(params)}):\n" + body_text + "\n")


@dataclass
class Chunks:
    """How one call of a kernel runs as CHUNKS calls, each over a part of its outermost loop,
    which gradc's threads take (codegen/driver_rt.py, pool_rt.py): the kernel is the one any
    call runs, only its arguments move. So whether a call is cut in chunks is the call's
    business (the shape's), and a new batch size that crosses the threshold compiles nothing.

    Chunk c covers iterations [c * N // CHUNKS, (c + 1) * N // CHUNKS) of the N that argument
    `count` holds; it gets that many as `count`, and every other argument j moves by
    `steps[j]` bytes per iteration skipped and `per_chunk[j]` bytes per chunk (a sum over
    everything writes chunk c's partial result there; `combines` fold them after)."""
    count: int
    steps: list
    per_chunk: list

    def loop(self, kernel, args):
        """The chunked call as Python lines (an AOT module's driver, the benchmark's profile):
        the chunks in turn, `kernel` called with `args` (text) moved. (_c, _lo, _hi: no
        input's name starts with "_", program.identifier.)"""
        total = args[self.count]
        moved = []
        for j, a in enumerate(args):
            terms = [a] + ([f"_lo * {self.steps[j]}"] if self.steps[j] else []) + \
                ([f"_c * {self.per_chunk[j]}"] if self.per_chunk[j] else [])
            moved.append("_hi - _lo" if j == self.count else " + ".join(terms))
        return [f"for _c in range({CHUNKS}):  # in chunks of the outer loop, as gradc's threads run them",
                f"    _lo, _hi = _c * {total} // {CHUNKS}, (_c + 1) * {total} // {CHUNKS}",
                f"    {kernel}({', '.join(moved)})"]


def combine_kernel(red, partials, out, size):
    """The call that folds a chunked call's CHUNKS partial results of a reduction over its
    outer axis (CHUNKS rows of `size` elements at address `partials`) into its result (at
    `out`), in chunk order: the bits depend on the shape alone."""
    if np.dtype(red.dtype) == np.bool_:  # (bool buffers are array views: see loop_kernel)
        views = [f"    q = bool_array(pq, {CHUNKS} * n)", "    out = bool_array(pout, n)"]
    else:
        ctor = _pointer_ctor(red.dtype)
        views = [f"    q = {ctor}(pq)", f"    out = {ctor}(pout)"]
    lines = views + ["    for j in range(n):", "        acc = q[j]",
                     f"        for c in range(1, {CHUNKS}):",
                     f"            acc = {combine(red, 'acc', 'q[c * n + j]')}",
                     "        out[j] = acc"]
    return KernelSource(f"combine_{red.op}_{np.dtype(red.dtype).name}", ["pq", "pout", "n"],
                        lines, [partials, out, str(size)])


@functools.lru_cache(maxsize=64)
def _array_ctor(dtype):
    try:
        return ARRAY_OF[np.dtype(dtype).name]
    except KeyError:
        raise CompileError(f"no CPU buffers of dtype {np.dtype(dtype).name}") from None


POINTER_OF = {"float32": "f32_ptr", "float64": "f64_ptr", "int64": "i64_ptr", "int32": "i32_ptr",
              "int16": "i16_ptr", "int8": "i8_ptr", "uint16": "u16_ptr", "uint8": "u8_ptr"}


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

def _index(access, sizes, params, loopvars, tag, unsigned, displacement=""):
    index, extent = _view_index(access, sizes, params, loopvars, tag, unsigned)
    if displacement:  # (a view of an array shared by several: `d + 1 + i0 * s`)
        index = displacement if index == "0" else f"{displacement} + {index}"
    return index, extent


# Views of one buffer that start within this many elements of each other (the windows of a
# row: x[:, 0::2] and x[:, 1::2], a 3x3 stencil's columns) are written at constant distances:
# `a0[d + 1 + 2 * i]`, so that LLVM sees them as one interleaved load.
NEAR_VIEWS = 16
LITERAL_STRIDE = 8


def _displacements(shifts, name, params):
    """{shift: index text} for the views of array `name` that start `shift` elements past its
    pointer: a cluster of views within NEAR_VIEWS of its first is written as that first's
    parameter (none for the cluster at 0) plus a literal."""
    text, base, k = {}, 0, 0
    for shift in sorted(set(shifts)):
        if shift - base > NEAR_VIEWS:
            base, k = shift, k + 1
        parts = ([params.add(f"d{name}_{k}", base)] if k else []) + \
            ([str(shift - base)] if shift != base else [])
        text[shift] = " + ".join(parts)
    return text


def _view_index(access, sizes, params, loopvars, tag, unsigned):
    """The flat index of an access, written from sizes where the access is a (broadcast of a)
    contiguous buffer, else from stride parameters named by `tag` (one per distinct stride
    pattern of the array: x[:, 0] * x[::-1, 1] reads one array two ways). Returns (index,
    extent): the extent is an expression of the sizes, or (parameter name, value) for a strided
    access, a parameter added only where an array view needs its length (`_extent_text`).
    `unsigned`: a strided index is wrapped in np.uint64 (for array views; see the end)."""
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
    # The innermost loop's stride is written as a number where it is 1 (contiguous), or where
    # a load's is small (a max-pool's 2): LLVM then loads contiguous or interleaved vectors,
    # not gathers, and needs no check that the stride is 1. (A load's small stride is a
    # slice's step: the kernel stays shape-generic. A store's would be a size: a transposed
    # result's, whose every batch size would make a kernel of its own.)
    literal = access.role == "load" and access.strides[-1] <= LITERAL_STRIDE
    terms = [loopvars[l] if l == len(sizes) - 1 and access.strides[l] == 1 else
             f"{loopvars[l]} * {access.strides[l]}"
             if l == len(sizes) - 1 and literal and access.strides[l] > 1 else
             f"{loopvars[l]} * {_stride(params, tag, l, access.strides[l])}" for l in nz]
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


def _stride(params, tag, loop, value):
    """The parameter of a view's stride along a loop: the array's own (`sa0_2`) where its
    other views step the same (shifted windows of one buffer: LLVM sees one address move),
    else the view's (`sa0v1_2`)."""
    shared = f"s{tag.partition('v')[0]}_{loop}"
    if params.value_of.get(shared, str(value)) == str(value):
        return params.add(shared, value)
    return params.add(f"s{tag}_{loop}", value)


def _extent_text(extent, params):
    """An extent from `_index` as kernel text (adding its length parameter if it has one)."""
    return params.add(*extent) if isinstance(extent, tuple) else extent


def _arrays(nest, address):
    """Name the arrays of a loop nest: {id(access): array name}, {name: (dtype, pointer)},
    {id(access): elements from its array's pointer to its lowest element}. Arrays are keyed by
    address: a value written in place into an input (a train step's parameter) uses the
    input's own array, so LLVM sees one pointer and still vectorizes (two arrays over one
    address failed its overlap check: the fused-loop benchmark's train step ran scalar, 29 ms
    against 2.3 ms). Views of one buffer that the kernel only reads (shifted windows of a
    stencil or a convolution, the strided slices of a max-pool) share one array, each at its
    own displacement: LLVM then sees x[2i] and x[2i + 1] as one interleaved load instead of two
    gathers, and keeps one pointer instead of nine."""
    root = {id(a): (address(a.base, 0), np.dtype(a.dtype).str) for a in nest.accesses}
    written = {root[id(a)] for a in nest.stores}
    shared = {}  # root -> the lowest element any of its read-only views reads
    for access in nest.accesses:
        key = root[id(access)]
        if key not in written and np.dtype(access.dtype) != np.bool_:
            start = access.offset - access.origin
            shared[key] = min(start, shared.get(key, start))
    by_address, arrays, array_of, shift = {}, {}, {}, {}
    for access in nest.accesses:
        start = access.offset - access.origin
        if root[id(access)] in shared:
            lowest = shared[root[id(access)]]
            ptr, shift[id(access)] = address(access.base, lowest), start - lowest
        else:
            ptr, shift[id(access)] = address(access.base, start), 0
        key = (ptr, np.dtype(access.dtype).str)
        if key not in by_address:
            by_address[key] = f"a{len(by_address)}"
            arrays[by_address[key]] = (access.dtype, ptr)
        array_of[id(access)] = by_address[key]
    return array_of, arrays, shift


def loop_kernel(kernel, fusion, address):
    """Source of a fused loop kernel. `address(base, offset_elements)` gives the driver's pointer
    expression for a buffer."""
    nest = lower(kernel, fusion)
    array_of, arrays, shift = _arrays(nest, address)
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
    index, extent_of, patterns, displaced = {}, {}, {}, {}
    extent_at = {}  # id(access) -> its own extent (an empty value may share its array's address)
    for access in nest.accesses:
        name = array_of[id(access)]
        seen = patterns.setdefault(name, [])
        if (access.strides, access.origin) not in seen:
            seen.append((access.strides, access.origin))
        j = seen.index((access.strides, access.origin))
        if name not in displaced:
            displaced[name] = _displacements(
                [shift[id(a)] for a in nest.accesses if array_of[id(a)] == name], name, params)
        idx, extent = _index(access, sizes, params, loopvars, f"{name}v{j}" if j else name,
                             unsigned=name in viewed,
                             displacement=displaced[name][shift[id(access)]])
        index[id(access)] = f"{name}[{idx}]"
        extent_of.setdefault(name, []).append(extent)
        extent_at[id(access)] = extent

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
    for text in constructors.values():
        emit(1, text)

    # reductions: the trailing loops they reduce over accumulate in a register
    for red in nest.reductions:
        if red.in_memory(ndim):
            emit(1, f"for j in range({_extent_text(extent_at[id(red.access)], params)}):")
            emit(2, f"{array_of[id(red.access)]}[j] = {red.identity()}")

    # Each load of an array the kernel never writes is read in the loop of the last index it
    # moves with: a scalar (a learning rate...) once, before the loops; a per-channel weight
    # or bias once per channel, not once per element. LLVM cannot hoist these itself: it must
    # assume any store may change them (pointers of unknown overlap). W4n's nine-slice
    # convolution read nine broadcast weights per element.
    written = {array_of[id(a)] for a in nest.stores}
    loads_at = {}  # loop level (-1: before the loops) -> its loads, in body order
    for access in nest.loads:
        moving = [l for l, s in enumerate(access.strides) if s]
        level = (ndim - 1 if array_of[id(access)] in written and not access.is_scalar else
                 max(moving, default=-1))
        loads_at.setdefault(level, []).append(access)
    depth, tile = 1, _transpose_tile(nest)
    last = ndim - 1
    # long float32 sums: float32 registers over the innermost loop (in blocks of SUM_BLOCK
    # elements where it is longer), their totals added in float64 (see _wide)
    blocked = {id(red.access) for red in nest.reductions if not tile and _long_sum(red, sizes)}
    split = bool(blocked) and sizes[last] > SUM_BLOCK

    def accumulator(red):
        return ("blk" if id(red.access) in blocked else "acc") + array_of[id(red.access)][1:]

    for l in range(-1, ndim):
        if l >= 0:
            for red in nest.reductions:
                if red.register_from(ndim) == l:
                    identity = lit(0, np.float64) if _wide(red, sizes) else red.identity()
                    emit(depth, f"acc{array_of[id(red.access)][1:]} = {identity}")
                    if id(red.access) in blocked:  # (the blocks' rounding errors, summed)
                        emit(depth, f"err{array_of[id(red.access)][1:]} = {lit(0, np.float64)}")
            if split and l == last:
                emit(depth, f"for b{l} in range(0, n{l}, {SUM_BLOCK}):  # float32 sums by blocks")
                depth += 1
            if blocked and l == last:
                for red in nest.reductions:
                    if id(red.access) in blocked:
                        emit(depth, f"{accumulator(red)} = {red.identity()}")
            if tile and l == ndim - 2:  # the last two loops in tiles: see _transpose_tile
                outer, inner = ndim - 2, ndim - 1
                emit(depth, f"for b{outer} in range(0, n{outer}, {tile}):  # {tile} x {tile} tiles")
                emit(depth + 1, f"for b{inner} in range(0, n{inner}, {tile}):")
                depth += 2
            if tile and l >= ndim - 2:
                emit(depth, f"for {loopvars[l]} in range(b{l}, min(b{l} + {tile}, n{l})):")
            elif split and l == last:
                emit(depth, f"for {loopvars[l]} in range(b{l}, min(b{l} + {SUM_BLOCK}, n{l})):")
            else:
                emit(depth, f"for {loopvars[l]} in range(n{l}):")
            depth += 1
        for access in loads_at.get(l, ()):
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
            accname = accumulator(red)
            if _wide(red, sizes) and id(access) not in blocked:
                value = f"f64({value})"
            emit(depth, f"{accname} = {combine(red, accname, value)}  # {red.op}")
        elif red.in_memory(ndim):
            emit(depth, f"{target} = {combine(red, target, value)}  # {red.op}")
        else:  # only size-1 axes reduced: a copy
            emit(depth, f"{target} = {value}  # {red.op}")
    for l in reversed(range(ndim)):
        depth -= 1
        if blocked and l == last:
            for red in nest.reductions:
                if id(red.access) in blocked:
                    n = array_of[id(red.access)][1:]
                    # (Neumaier: t = acc + part exactly is tot + the error kept; `part`, not
                    # blk rebound: a name that changes type keeps a kernel off the LLVM route)
                    emit(depth, f"part{n} = f64(blk{n})")
                    emit(depth, f"tot{n} = acc{n} + part{n}")
                    emit(depth, f"err{n} = err{n} + ((acc{n} - tot{n}) + part{n} if abs(acc{n}) "
                                f">= abs(part{n}) else (part{n} - tot{n}) + acc{n})")
                    emit(depth, f"acc{n} = tot{n}")
        if split and l == last:
            depth -= 1
        for red in nest.reductions:
            if red.register_from(ndim) == l:
                array = array_of[id(red.access)]
                n = array[1:]
                # (the errors of a total that is inf or NaN are NaN: inf - inf. NumPy's sum
                # of an inf, or of terms that overflow, is that inf)
                total = (f"(acc{n} + err{n} if abs(acc{n}) <= {lit(_FLOAT64_MAX, np.float64)} "
                         f"else acc{n})" if id(red.access) in blocked else f"acc{n}")
                accname = f"f32({total})" if _wide(red, sizes) else total
                target = index[id(red.access)]
                value = combine(red, target, accname) if red.in_memory(ndim) else accname
                emit(depth, f"{target} = {value}")

    ks = KernelSource("loop_" + (nest.title() or "copy"), params.names, lines, params.values,
                      reassociate=False)  # (its sums through rt.radd: see `combine`)
    if kernel.parallel:
        _cut_in_chunks(ks, nest, array_of, arrays, address, kernel.index)
    return ks


CACHE_LINE = 64  # bytes


def _transpose_tile(nest):
    """The tile edge (elements) in which a map walks its last two loops where one of its arrays
    moves a cache line or more at each step of the innermost loop but less along the one
    outside it: a transposed copy, which reads rows and writes columns. Walked whole, each
    store of a column touches a line of its own, and the lines are evicted before the next
    column fills them (W8's 128x512 copy: ~190 us); tile by tile, a line is filled while it
    is in L1. None for other nests."""
    if nest.ndim < 2 or nest.reductions:
        return None
    for access in nest.accesses:
        per_line = CACHE_LINE // np.dtype(access.dtype).itemsize
        inner, outer = (abs(s) for s in access.strides[-2:][::-1])
        if inner >= per_line and 0 < outer < per_line and min(nest.sizes[-2:]) > per_line:
            return per_line
    return None


def _cut_in_chunks(ks, nest, array_of, arrays, address, kernel_index):
    """Run this call of a parallel loop kernel (passes/fuse.py decide_parallel) in chunks of
    its outer loop (Chunks): every array moves by its stride along that loop, and a reduction
    over that loop (over everything, or a bias's gradient) writes one partial result per chunk
    into planned scratch, folded after by a combine call. Left whole where an array is read
    along that loop in two ways (x[:, 0] * x[::-1, 1]: no one address moves for both), where
    the chunks' stores would interleave (a transposed copy), or where a reduced result's
    buffer is also read, or is not its result's elements 0..size-1."""
    strides = {}
    for access in nest.accesses:
        strides.setdefault(array_of[id(access)], set()).add(access.strides[0])
    if any(len(s) > 1 for s in strides.values()):
        return
    # Chunks that store between each other's elements, a few bytes each, write the same cache
    # lines from two threads: W8's transposed copy of its recurrent weight (each chunk 8 of 128
    # floats of every row of the copy) took 1 ms a step on two threads against 0.16 ms whole.
    for access in nest.stores:
        step = abs(access.strides[0])
        span = 1 + sum((n - 1) * abs(s) for n, s in zip(nest.sizes[1:], access.strides[1:]))
        run = step * np.dtype(access.dtype).itemsize * (nest.sizes[0] // CHUNKS)
        if 0 < step < span and run < 2 * CACHE_LINE:
            return
    full = [red for red in nest.reductions if 0 in red.reduced]  # (partial_slots)
    names = [array_of[id(a)] for a in nest.accesses]
    if any(names.count(array_of[id(red.access)]) > 1 for red in full):
        return
    for red in full:  # each partial result is laid out as its result: elements 0..size-1
        a = red.access
        if a.origin or min(a.strides) < 0 or 1 + sum(
                (n - 1) * s for n, s in zip(nest.sizes, a.strides)) != red.node.output.size:
            return
    args = list(ks.call_args)
    steps, per_chunk = [0] * len(args), [0] * len(args)
    for name, (dtype, _) in arrays.items():
        (stride,) = strides[name]
        steps[ks.params.index(f"p{name[1:]}")] = stride * np.dtype(dtype).itemsize
    for red in full:
        j = ks.params.index(f"p{array_of[id(red.access)][1:]}")
        partials = address(("partial", kernel_index, red.node.output.id), 0)
        size = red.node.output.size
        ks.combines.append(combine_kernel(red, partials, args[j], size))
        args[j], per_chunk[j] = partials, size * np.dtype(red.dtype).itemsize
    ks.call_args = args
    ks.chunks = Chunks(ks.params.index("n0"), steps, per_chunk)


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
        self._chunks = None  # (in_chunks())
        names = self._names = [f"x{i}" for i in range(len(node.inputs))] + ["out"]
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

    def in_chunks(self, count, steps):
        """Run this call in chunks of the kernel's outermost loop (Chunks), whose length is
        parameter `count`; `steps`: {array name ("x0", "out"...): elements it moves per
        iteration of that loop}. Only the call changes: the kernel's text is the same."""
        self._chunks = (count, steps)

    def finish(self):
        ks = KernelSource(f"{self.op}", self._params.names, self._lines, self._params.values,
                          reassociate=self.reassociate)
        if self._chunks:
            count, steps = self._chunks
            itemsize = {f"p_{name}": np.dtype(v.dtype).itemsize
                        for name, v in zip(self._names, list(self.inputs) + [self.output])}
            ks.chunks = Chunks(ks.params.index(count), [
                steps.get(p[len("p_"):], 0) * itemsize[p] if p in itemsize else 0
                for p in ks.params], [0] * len(ks.params))
        return ks


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
