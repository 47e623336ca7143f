"""Compiled functions: the per-signature cache, the compile pipeline, and the call path.

A call flattens its arguments, looks up the signature (pytree structure, shapes, dtypes, static
values), and on a hit hands buffer addresses to the driver: no tracing, no compiling, no
allocation. On a miss it traces, runs the passes, fuses, plans, generates and loads code, and
says why under GRADC_LOG=compiles.
"""
from __future__ import annotations

import functools
import math
import os
import re
import sys
import threading
import time
import weakref
from bisect import bisect_left

import numpy as np

from . import autodiff, pytree, random
from .codegen.driver_rt import entry_address, program_table
from .codegen.modules import content_name, load_module, load_modules
from .codegen.program import Program
from .errors import IndexOutOfRangeError, NonDifferentiableError, SignatureError
from .ir import SUPPORTED_DTYPES, Value
from .ops import fn
from .passes import AFTER_AUTODIFF, BEFORE_AUTODIFF, run_passes
from .passes.fuse import fuse
from .passes.memory import plan_buffers
from .trace import argument_names, current_graph, leaf_names, trace, user_source


def _log_enabled(topic):
    return topic in os.environ.get("GRADC_LOG", "").split(",")


def _log(msg):
    print(f"gradc: {msg}", file=sys.stderr, flush=True)


def normalize_argnums(argnums, nargs, src):
    many = isinstance(argnums, (tuple, list))
    nums = tuple(argnums) if many else (argnums,)
    for a in nums:
        if not isinstance(a, int) or not -nargs <= a < nargs:
            raise SignatureError(f"argnums={argnums!r} does not fit a call with {nargs} "
                                 "positional arguments", source=src)
    return tuple(a % nargs for a in nums), many


def differentiable_leaves(args, argnums, src, names=()):
    """The array leaves of the differentiated arguments, checked to be floating point. (Their
    Python floats are TracedFloat leaves by now: `pytree.trace_floats`.) `names`: the
    function's parameter names, for messages."""
    out = []
    for a in argnums:
        name = names[a] if a < len(names) else f"argument {a}"
        leaves, tree = pytree.flatten(args[a])
        for path, number in pytree.static_numbers(tree, name):
            raise NonDifferentiableError(
                f"{path} is a Python {type(number).__name__} ({number!r}) in a differentiated "
                f"argument: gradients need floats; pass {float(number)!r} or a NumPy float "
                "array, or move it out of the differentiated arguments", source=src)
        if not leaves:
            raise NonDifferentiableError(
                f"argument {a} has no arrays to differentiate: pass NumPy float arrays or Python "
                "floats", source=src)
        for x in leaves:
            dt = pytree.leaf_type(x)[1]
            if not np.issubdtype(dt, np.floating):
                raise NonDifferentiableError(
                    f"argument {a} has a {dt} array: gradients need floating-point arguments; "
                    "leave integer and boolean arguments out of argnums", source=src)
        out.append(leaves)
    return out


def check_device_leaves(leaves, target, src):
    """CUDA device arrays are inputs of target="cuda" only."""
    if target != "cuda" and any(pytree.is_device_array(x) for x in leaves):
        raise SignatureError("a CUDA device array was passed to a target='cpu' function: pass "
                             "NumPy arrays (x.copy_to_host()), or compile with target='cuda'",
                             source=src)


def check_input_dtypes(key, names, src):
    """Every input of a signature `key` has a dtype the kernels read (in native byte order)."""
    for (_, dtype), name in zip(key[1], names):
        dtype = np.dtype(dtype)
        if dtype in SUPPORTED_DTYPES:
            continue
        if dtype.newbyteorder("=") in SUPPORTED_DTYPES:
            order = {">": "big", "<": "little"}[dtype.byteorder]
            raise SignatureError(
                f"{name} is {dtype.name} in {order}-endian byte order ({dtype.str!r}), which gradc "
                f"does not read; convert it with .astype(np.{dtype.name}) (native byte order)",
                source=src)
        raise SignatureError(
            f"{name} has dtype {dtype.name}, which gradc does not support; convert it with "
            ".astype(np.float32) (supported: " + ", ".join(d.name for d in SUPPORTED_DTYPES) + ")",
            source=src)


def check_scalar_output(out, src):
    if not isinstance(out, Value) or out.shape != () or not np.issubdtype(out.dtype, np.floating):
        what = f"shape {out.shape} {out.dtype}" if isinstance(out, Value) else type(out).__name__
        raise NonDifferentiableError(
            f"grad needs a function that returns a scalar float, got {what}; reduce it first "
            "(e.g. .sum() or .mean())", source=(out.node.source if isinstance(out, Value) and out.node
                                               else src))


def index_error_reporter(graph, in_place):
    """`report(error, frame=None)`: the IndexOutOfRangeError for a kernel's IndexError "index
    out of range in OP (SOURCE)" (or "in OP at SOURCE") of `graph`: the caller's line (from
    `frame`), which input holds the indices and their valid range. `in_place`: the graph writes
    inputs in place (a train step, whose schedule checks indices before: passes/fuse.py)."""
    gathers = {}  # (op, source) -> (name of the indices' input, size of the axis, the axis)
    for node in graph.nodes:
        if node.opdef.checks_indices:
            axis = node.attr["axis"]
            size = node.attr["size"] if "size" in node.attr else node.inputs[0].shape[axis]
            gathers[node.op, node.source] = (_input_name(node.inputs[1]), size, axis)

    def report(error, frame=None):
        message = str(error).removeprefix("gradc: ")
        found = re.search(r"in (\w+) (?:\((.*)\)|at (.*))$", message)
        gather = gathers.get((found[1], found[2] or found[3])) if found else None
        if gather is not None:
            name, size, axis = gather
            message += f": {name} holds an index outside [-{size}, {size}) (axis {axis} has {size} entries)"
        if in_place:
            message += "; the parameters and the optimizer state are unchanged"
        return IndexOutOfRangeError(message, source=user_source(frame))

    return report


def reporting_index_errors(run, report):
    """`run` with its IndexError raised as `report(error)` instead."""
    @functools.wraps(run)
    def reporting(*args):
        try:
            return run(*args)
        except IndexError as e:
            raise report(e) from None

    return reporting


class Compiled:
    """One compiled signature: the graph after each stage, the plan, the arena and the driver."""

    def __init__(self, stages, fusion, plan, program, driver, out_kind):
        self.stages = stages  # [(name, graph)] for explain
        self.fusion, self.plan, self.program = fusion, plan, program
        self.driver = driver
        # what a CPU driver takes besides the arena: the inputs' addresses, then scratch
        program_table = getattr(sys.modules.get(getattr(driver, "__module__", None)),
                                "program_table", None)
        self.io = np.zeros(len(fusion.graph.inputs) + (0 if program_table is None else
                                                       int(program_table[2])), np.int64)
        self.io_address = self.io.ctypes.data if program_table is not None else 0
        self.fast = None  # the LastCall that recognizes this signature (see last_call)
        self.out_kind = out_kind
        self._raw = np.zeros(plan.arena_bytes + 64, np.uint8)
        start = (-self._raw.ctypes.data) % 64
        self.arena = self._raw[start:start + plan.arena_bytes]
        self.address = self.arena.ctypes.data
        for vid, array in plan.constants.items():
            off = plan.offsets[vid]
            self.arena[off:off + array.nbytes] = np.ascontiguousarray(array).view(np.uint8).reshape(-1)
        graph = fusion.graph
        self.input_types = [(v.shape, v.dtype) for v in graph.inputs]
        self.outputs = [None if v.id in plan.aliases else self.view(v) for v in graph.outputs]
        self.lock = threading.Lock()
        if driver is not None and any(n.opdef.checks_indices for n in graph.nodes):
            self._report_index_errors(index_error_reporter(graph, bool(plan.aliases)))

    def _report_index_errors(self, report):
        """A kernel's IndexError (an index out of range) is raised as `report(error)`, a
        GradcError that names the caller's line and the input holding the indices: by the
        generated driver (a try costs nothing until it catches), which the first signature
        with that driver tells how (the same driver is the same graph)."""
        module = sys.modules.get(getattr(self.driver, "__module__", None))
        if module is not None and getattr(module, "ON_INDEX_ERROR", False) is None:
            module.ON_INDEX_ERROR = report

    def last_call(self, treedef, leaves, writeable=()):
        """This signature's LastCall (made once, on a call whose leaves the driver could take as
        they are), or None: not a CPU program, a tree it does not handle, or not made yet."""
        if self.fast is None and self.io_address and all(
                type(x) is np.ndarray and x.flags.c_contiguous and x.dtype == dtype
                for x, (_, dtype) in zip(leaves, self.input_types)):
            self.fast = LastCall.make(treedef, leaves, self, writeable) or False
        return self.fast or None

    def output_region(self, dtype):
        """The outputs (value and gradients, side by side) as one flat array of `dtype`: what a
        data-parallel step allreduces in place. Alignment padding between them stays zero."""
        return self.arena[:self.plan.output_bytes].view(dtype)

    def view(self, v):
        off = self.plan.offsets[v.id]
        return self.arena[off:off + v.size * v.dtype.itemsize].view(v.dtype).reshape(v.shape)

    def run(self, leaves, owned=(), written=range(0)):
        """Run on the caller's array `leaves`; `owned` are the addresses of the remaining inputs,
        buffers gradc owns (a train step's optimizer state), which never move. `written` are
        the positions of leaves the driver writes in place (a train step's parameters, checked
        apart by the caller): every other leaf whose memory overlaps them or the arena (an
        output handed out earlier, or a view of one) is read from a copy, so the result is what
        copies of the inputs would give."""
        keep = []  # contiguous copies that must live until the driver returns
        io = self.io
        spans = [byte_span(leaves[i]) for i in written]
        spans.append((self.address, self.address + self.plan.arena_bytes))
        for i, (x, (shape, dtype)) in enumerate(zip(leaves, self.input_types)):
            if not (isinstance(x, np.ndarray) and x.flags.c_contiguous and x.dtype == dtype):
                x = np.ascontiguousarray(x, dtype=dtype)
                keep.append(x)
            address = x.__array_interface__["data"][0]  # (x.ctypes leaves GC garbage)
            if i not in written and any(start < address + x.nbytes and address < end
                                        for start, end in spans):
                x = x.copy()  # the driver would overwrite what it still has to read
                keep.append(x)
                address = x.__array_interface__["data"][0]
            io[i] = address
        for j, address in enumerate(owned, start=len(leaves)):
            io[j] = address
        if self.fast:
            self.fast.forget()  # io no longer holds the addresses it remembers
        self.driver(self.address, self.io_address)
        return self.outputs


def byte_span(x):
    """[start, end) of a C-contiguous array's memory (a NumPy or a CUDA device array)."""
    if isinstance(x, np.ndarray):
        start = x.__array_interface__["data"][0]
        return start, start + x.nbytes
    interface = getattr(x, "__cuda_array_interface__", None)
    if interface is None:  # Numba's CUDA simulator: a device array wraps a host array
        return byte_span(x._ary)
    start = interface["data"][0]
    return start, start + x.size * x.dtype.itemsize


def first_overlap(arrays):
    """The positions (i, j) of two C-contiguous `arrays` whose memory overlaps, or None."""
    spans = sorted(byte_span(x) + (i,) for i, x in enumerate(arrays) if x.size)
    for (_, end, i), (start, _, j) in zip(spans, spans[1:]):
        if start < end:
            return min(i, j), max(i, j)
    return None


TARGETS = ("cpu", "cuda")


def make_compiled(target, *args):
    """The Compiled of a target (target="cuda": gradc/cuda_runtime.py, imported only then)."""
    if target == "cuda":
        from .cuda_runtime import CudaCompiled
        return CudaCompiled(*args)
    return Compiled(*args)


def check_target(target):
    """target="cpu" or "cuda" (which needs numba.cuda and a GPU, or the simulator)."""
    if target not in TARGETS:
        raise NotImplementedError(f"target={target!r} is not available; use 'cpu' or 'cuda'")
    if target == "cuda":
        from .codegen.cuda import require_cuda
        require_cuda()


def compile_graph(graph, title, load=True, target="cpu"):
    """Run the passes after tracing (and autodiff, done by the caller); generate code, and load
    it (Numba-compile the kernels) unless load=False, which returns no driver."""
    timings = {}
    t0 = time.perf_counter()
    stages = [("traced", graph)]
    graph = run_passes(graph, AFTER_AUTODIFF, stages)
    fusion = fuse(graph)
    plan = plan_buffers(fusion)
    timings["passes"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if target == "cuda":  # target="cuda": gradc/codegen/cuda.py
        from .codegen.cuda import CudaProgram
        program = CudaProgram(fusion, plan, title)
    else:
        program = Program(fusion, plan, title)
    timings["codegen"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    driver = None
    if load:
        with _LOADING:
            driver = program.load() if target == "cuda" else load_driver(program)
    timings["numba"] = time.perf_counter() - t0
    return stages, fusion, plan, program, driver, timings


# Loading generated modules is one thread at a time: load_module replaces a module in
# sys.modules, which breaks another thread's import of the same module (a KeyError from
# importlib); and a driver's PROGRAM table is filled once.
_LOADING = threading.RLock()


def load_driver(program):
    """Load (compile, or take from the disk cache) a CPU program's kernels, the loop that runs
    its calls and its driver; fill the driver's PROGRAM table once (the same for every user)."""
    modules = load_modules(program.kernel_modules)
    kernels = {name: entry_address(getattr(module, name[len("gradc_"):]))
               for name, module in modules.items()}
    load_module(program.calls_module, program.calls_source)
    module = load_module(content_name("gradc_driver", program.driver_source), program.driver_source)
    if module.PROGRAM is None:
        module.program_table = program_table(program.encoded_calls(), len(program.input_names),
                                             kernels)
        module.PROGRAM = module.program_table.ctypes.data
    return module.run


class Function:
    """A compiled function: `jit`, `grad` or `value_and_grad` of `fun`."""

    def __init__(self, fun, mode, argnums=0, copy=False, target="cpu", max_signatures=None):
        check_target(target)
        self.fun, self.mode, self.argnums, self.copy = fun, mode, argnums, copy
        self.target = target
        self.max_signatures = max_signatures
        self.cache = {}
        self._compiling = threading.RLock()  # one compile at a time: see compiled_once
        self._last_key = None
        self._last_call = None  # a LastCall: the last call's signature, recognized fast
        self.__name__ = getattr(fun, "__name__", "fn")
        self.__doc__ = getattr(fun, "__doc__", None)
        self.__wrapped__ = fun

    def __repr__(self):
        return f"<gradc.{self.mode} of {self.__name__}>"

    # --- tracing ---------------------------------------------------------------------------
    def trace_joint(self, args, kwargs):
        """Trace into a new graph; for gradients, append the backward. Returns (graph, out_info):
        the output tree, or for gradients (output tree, gradient trees, whether argnums is a
        tuple, leaves per gradient tree, indices of the outputs that are Python floats)."""
        if self.mode == "jit":
            graph, out_tree, outs = trace(self.fun, args, kwargs)
            graph = run_passes(graph, BEFORE_AUTODIFF)
            _advance_generators(graph, (args, kwargs))
            return graph, out_tree
        src = getattr(self, "_call_source", None)
        argnums, many = normalize_argnums(self.argnums, len(args), src)
        differentiable_leaves(args, argnums, src, argument_names(self.fun))
        graph, out_tree, outs = trace(self.fun, args, kwargs)
        if len(outs) != 1:
            raise NonDifferentiableError("grad needs a function that returns one scalar", source=src)
        check_scalar_output(outs[0], src)
        # graph inputs are in flatten order of (args, kwargs): find those of the argnums
        positions, cursor = [], 0
        for i, a in enumerate(args):
            n = len(pytree.flatten(a)[0])
            if i in argnums:
                positions.append((i, list(range(cursor, cursor + n))))
            cursor += n
        graph = run_passes(graph, BEFORE_AUTODIFF)
        order = {i: pos for i, pos in positions}
        wrt = [graph.inputs[p] for i in argnums for p in order[i]]
        grads = autodiff.vjp(graph, graph.outputs[0], wrt)
        graph.outputs = [graph.outputs[0]] + grads
        _advance_generators(graph, (args, kwargs))
        grad_trees = [pytree.flatten(args[i])[1] for i in argnums]
        floats = [type(x) is pytree.TracedFloat for i in argnums for x in pytree.flatten(args[i])[0]]
        return graph, (out_tree, grad_trees, many, [len(order[i]) for i in argnums],
                       frozenset(1 + j for j, f in enumerate(floats) if f))

    def traced_args(self, args):
        """The arguments with the Python floats of the differentiated ones traced (a gradient's
        contract: pytree.TracedFloat); `args` itself for jit, or when there are none."""
        if self.mode == "jit":
            return args
        nums = self.argnums if isinstance(self.argnums, (tuple, list)) else (self.argnums,)
        nums = {a % len(args) for a in nums if isinstance(a, int) and -len(args) <= a < len(args)}
        traced = tuple(pytree.trace_floats(a) if i in nums else a for i, a in enumerate(args))
        return args if all(a is b for a, b in zip(traced, args)) else traced

    # --- calling ---------------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        last = self._last_call
        if last is not None:  # the same signature as the last call: no flatten, key or lookup
            compiled = last.compiled
            with compiled.lock:
                if last.match((args, kwargs)):
                    compiled.driver(compiled.address, compiled.io_address)
                    return self._package(compiled, compiled.outputs)
        args = self.traced_args(args)
        try:
            leaves, treedef = pytree.flatten((args, kwargs))
        except SignatureError as e:
            raise SignatureError(str(e), source=user_source()) from None
        if current_graph() is not None or any(isinstance(x, Value) for x in leaves):
            return self._inline(args, kwargs)  # called while tracing another function
        key = signature_key(leaves, treedef)
        compiled = self.cache.get(key)
        if compiled is None:
            compiled = self.compiled_once(key, args, kwargs)
        with compiled.lock:
            outs = compiled.run(leaves)
            self._last_call = compiled.last_call(treedef, leaves)
            return self._package(compiled, outs)

    def lower(self, *args, load=False, source=None, **kwargs):
        """Trace and compile for these arguments without caching the result; with load=False
        nothing is Numba-compiled and the Compiled has no driver (what `gradc compile` writes
        out). `source` names the caller in the generated code (default: the calling line)."""
        args = self.traced_args(args)
        leaves, treedef = pytree.flatten((args, kwargs))
        self._call_source = source or user_source()
        return self._compile(signature_key(leaves, treedef), args, kwargs, load=load, cache=False)

    def compiled_for(self, *args, **kwargs):
        """The compiled signature for these arguments (compiling it if needed)."""
        args = self.traced_args(args)
        leaves, treedef = pytree.flatten((args, kwargs))
        key = signature_key(leaves, treedef)
        compiled = self.cache.get(key)
        return compiled if compiled is not None else self.compiled_once(key, args, kwargs)

    def compiled_once(self, key, args, kwargs):
        """The compiled signature `key`, compiled now unless it is cached: threads whose first
        calls come at once compile it once, the others waiting for it."""
        with self._compiling:
            compiled = self.cache.get(key)
            if compiled is None:
                self._call_source = user_source()
                compiled = self._compile(key, args, kwargs)
            return compiled

    def _compile(self, key, args, kwargs, load=True, cache=True):
        check_input_dtypes(key, leaf_names((args, kwargs), argument_names(self.fun)),
                           self._call_source)
        if cache and self.max_signatures is not None and len(self.cache) >= self.max_signatures:
            raise SignatureError(
                f"{self.__name__} would compile signature number {len(self.cache) + 1}, over "
                f"max_signatures={self.max_signatures}: {_why(self._last_key, key)}",
                source=self._call_source)
        check_device_leaves(pytree.flatten((args, kwargs))[0], self.target, self._call_source)
        t0 = time.perf_counter()
        graph, out_info = self.trace_joint(args, kwargs)
        t_trace = time.perf_counter() - t0
        title = f"{self.mode} of {self.__name__} from {self._call_source}"
        stages, fusion, plan, program, driver, timings = compile_graph(graph, title, load, self.target)
        compiled = make_compiled(self.target, stages, fusion, plan, program, driver, out_info)
        if not cache:
            return compiled
        if _log_enabled("compiles"):
            _log(f"compiled {self.mode}({self.__name__}) at {self._call_source}: "
                 f"{_why(self._last_key, key)}; {len(fusion.kernels)} kernels; trace "
                 f"{t_trace * 1e3:.0f} ms, passes {timings['passes'] * 1e3:.0f} ms, codegen "
                 f"{timings['codegen'] * 1e3:.0f} ms, numba {timings['numba'] * 1e3:.0f} ms")
        self.cache[key] = compiled
        self._last_key = key
        return compiled

    def _package(self, compiled, outs):
        if self.mode == "jit":  # (None: a generator's counter, advanced in place)
            return pytree.unflatten(compiled.out_kind, [_result(o, fresh=True) for o in outs
                                                        if o is not None])
        out_tree, grad_trees, many, counts, floats = compiled.out_kind
        value = _result(outs[0], fresh=True)
        if floats:  # the gradient of a Python float is a Python float
            outs = [float(o) if i in floats else o for i, o in enumerate(outs)]
        grads, cursor = [], 1
        for tree, n in zip(grad_trees, counts):  # (0-d gradients too are arrays, like params)
            grads.append(pytree.unflatten(tree, [o.copy() if self.copy and type(o) is not float
                                                 else o for o in outs[cursor:cursor + n]]))
            cursor += n
        grads = tuple(grads) if many else grads[0]
        return grads if self.mode == "grad" else (value, grads)

    # --- inside another trace: grad of grad ------------------------------------------------
    def _inline(self, args, kwargs):
        """Called while another function is traced (grad of grad, or a gradient taken at a
        constant point of a function that closes over traced values): build this function,
        and its gradient, into that function's graph."""
        if self.mode == "jit":
            return self.fun(*args, **kwargs)
        graph = current_graph() or next(x.graph for x in pytree.flatten((args, kwargs))[0]
                                        if isinstance(x, Value))
        src = user_source()
        argnums, many = normalize_argnums(self.argnums, len(args), src)
        differentiable_leaves(args, argnums, src, argument_names(self.fun))
        args = list(args)
        wrt, trees = [], []
        for i in argnums:  # fresh variables, so only this function's uses are differentiated
            leaves, tree = pytree.flatten(args[i])
            marked = [_fresh_variable(graph, x) for x in leaves]
            wrt.append(marked)
            trees.append(tree)
            args[i] = pytree.unflatten(tree, marked)
        out = self.fun(*args, **kwargs)
        check_scalar_output(out, src)
        flat = [w for ws in wrt for w in ws]
        grads_flat = autodiff.vjp(graph, out, flat)
        grads, cursor = [], 0
        for tree, ws in zip(trees, wrt):
            grads.append(pytree.unflatten(tree, grads_flat[cursor:cursor + len(ws)]))
            cursor += len(ws)
        grads = tuple(grads) if many else grads[0]
        return grads if self.mode == "grad" else (out, grads)


def _fresh_variable(graph, x):
    """A new value of `graph` equal to `x` (a traced value, an array, or a TracedFloat: weak,
    float64), to differentiate with respect to."""
    value = fn.const(graph, x, np.float64) if type(x) is pytree.TracedFloat else fn.as_value(
        x, graph=graph)
    fresh = graph.apply("alias", (value,), tag=f"grad{graph._next_id}")
    if type(x) is pytree.TracedFloat or fn.is_weak(x):
        graph.weak.add(fresh.id)
    return fresh


def _advance_generators(graph, tree):
    """Outputs that advance the gradc.random Generators among the arguments on every call."""
    for value, i in random.counter_updates(graph, pytree.flatten(tree)[1]):
        graph.aliases[len(graph.outputs)] = i
        graph.outputs.append(value)


def _forgotten():
    return None  # what a forgotten weak reference returns: no array is this one


class LastCall:
    """The last call's signature, recognized without flattening, hashing or a cache lookup.

    `match(x)` is generated from the signature's tree (x is what was flattened: `(args, kwargs)`)
    and checks exactly what the signature key holds: the same containers (exact types, lengths,
    dict keys), static values of the same type and value, and every leaf a NumPy array of the same
    shape, strides (so still C-contiguous) and dtype; leaves in `writeable` (a train step's
    parameters) must be writeable. It writes the leaves' addresses into the compiled signature's
    `io` (what the driver reads) only for arrays that are not the ones it saw last, held by weak
    reference (an array's data never moves while it lives; taking an address costs ~1 us).
    Anything else returns False and the caller takes the slow way (flatten, key, cache), which
    also raises the errors.

    Aliasing is checked where an address is taken, so a call with the same arrays checks
    nothing: a leaf must not overlap the arena (an output handed out earlier, or a view of one),
    nor a parameter, and parameters must not overlap each other (a new parameter array re-checks
    every leaf). Where one does, match returns False: the slow way copies it (Compiled.run), or
    raises (tied parameters)."""

    def __init__(self, source, consts, leaves, compiled, spans):
        self.source = source  # readable: print(f._last_call.source)
        self.refs = [_forgotten] * len(leaves)  # the first match takes every address
        namespace = dict(consts, ndarray=np.ndarray, ref=weakref.ref, refs=self.refs,
                         addresses=compiled.io, forget=self.forget)
        if spans is not None:
            namespace.update(starts=spans.starts, params_apart=spans.apart, bisect=bisect_left,
                             param_starts=spans.lo, param_ends=spans.hi)
        exec(compile(source, "<gradc LastCall.match>", "exec"), namespace)
        self.match = namespace["match"]
        self.compiled = compiled

    def forget(self):
        """Someone else wrote the addresses in io: take them all again next time."""
        self.refs[:] = [_forgotten] * len(self.refs)

    @classmethod
    def make(cls, treedef, leaves, compiled, writeable=()):
        """The LastCall of a signature, or None if its tree holds something it does not handle."""
        consts, lines = {}, []
        if not _match_lines(treedef, "x", lines, consts, iter(range(len(leaves)))):
            return None
        for i, x in enumerate(leaves):
            consts.update({f"S{i}": x.shape, f"T{i}": x.strides, f"D{i}": x.dtype})
            lines += [f"if l{i}.shape != S{i} or l{i}.strides != T{i} or l{i}.dtype is not D{i}:",
                      "    return False"]
            if i in writeable:
                lines += [f"if not l{i}.flags.writeable:", "    return False"]
        params = [i for i in range(len(leaves)) if i in writeable]
        spans = _ParamSpans([x.nbytes for x in leaves], params) if params else None
        if params:
            lines.append("moved = False  # a parameter array is not the last one")
        for i in params:
            lines += [f"if refs[{i}]() is not l{i}:",
                      f"    refs[{i}] = ref(l{i})",
                      f"    addresses[{i}] = starts[{i}] = l{i}.__array_interface__['data'][0]",
                      "    moved = True"]
        if params:
            lines += ["if moved and not params_apart():", "    forget()", "    return False"]
        arena_start, arena_end = compiled.address, compiled.address + compiled.plan.arena_bytes
        for i, x in enumerate(leaves):
            if i in writeable:
                continue
            overlaps = []
            if x.nbytes and arena_end > arena_start:  # a + nbytes > arena_start and a < arena_end
                consts[f"LO{i}"] = arena_start - x.nbytes
                overlaps.append(f"LO{i} < a < {arena_end}")
            lines += [f"if {'moved or ' if params else ''}refs[{i}]() is not l{i}:",
                      f"    a = l{i}.__array_interface__['data'][0]"]
            if x.nbytes and params:  # (inline: a call of _ParamSpans.hits costs ~0.15 us)
                lines.append(f"    k = bisect(param_starts, a + {x.nbytes})")
                overlaps.append("k and param_ends[k - 1] > a")
            if overlaps:
                lines += [f"    if {' or '.join(overlaps)}:", "        forget()", "        return False"]
            lines += [f"    refs[{i}] = ref(l{i})", f"    addresses[{i}] = a"]
        lines.append("return True")
        source = "def match(x):\n" + "".join(f"    {line}\n" for line in lines)
        return cls(source, consts, leaves, compiled, spans)


class _ParamSpans:
    """A train step's parameters' byte ranges as LastCall last took them, sorted (they must not
    overlap), so whether another input's [start, end) overlaps one is a bisection: only the last
    parameter starting before `end` can, if it ends after `start`."""

    def __init__(self, sizes, params):
        self.starts = [0] * len(sizes)  # LastCall.match writes a parameter's address here
        self.sizes = sizes
        self.params = [i for i in params if sizes[i]]  # (an empty array overlaps nothing)
        self.lo, self.hi = [], []

    def apart(self):
        """Sort the parameters' ranges; False if two overlap."""
        spans = sorted((self.starts[i], self.starts[i] + self.sizes[i]) for i in self.params)
        if any(start < end for (_, end), (start, _) in zip(spans, spans[1:])):
            return False
        self.lo[:] = [start for start, _ in spans]
        self.hi[:] = [end for _, end in spans]
        return True


_STATIC_TYPES = (int, float, bool, str, type(None))


def _match_lines(tree, expr, lines, consts, leaf_ids):
    """Lines that check the value at `expr` against `tree` (returning False when it differs) and
    bind each leaf to `l<i>`. False if the tree holds something the fast path does not handle."""
    if tree == pytree.LEAF:
        i = next(leaf_ids)
        lines += [f"l{i} = {expr}", f"if type(l{i}) is not ndarray:", "    return False"]
        return True
    kind = tree[0]
    if kind == "float":  # a traced Python float: the slow way converts it
        return False
    if kind == "static":
        if type(tree[1]) not in _STATIC_TYPES:
            return False
        name = f"V{len(consts)}"
        consts[name] = tree[1]
        differs = f"type({expr}) is not type({name}) or {expr} != {name}"
        if tree[1] == 0.0 and type(tree[1]) is float:  # (0.0 == -0.0; 1/x tells them apart)
            consts["copysign"] = math.copysign
            differs += f" or copysign(1.0, {expr}) != copysign(1.0, {name})"
        lines += [f"if {differs}:", "    return False"]  # (a NaN never matches: the slow way)
        return True
    var = f"c{len(lines)}"
    if kind == "node":  # an object (gradc.random.Generator): its type, then its array fields
        ctype = f"C{len(consts)}"
        consts[ctype] = tree[1]
        lines += [f"{var} = {expr}", f"if type({var}) is not {ctype}:", "    return False"]
        return all(_match_lines(child, f"{var}.{field}", lines, consts, leaf_ids)
                   for field, child in zip(pytree.NODE_TYPES[tree[1]], tree[2]))
    if kind == "dict":
        keys, children = tree[1], tree[2]
        container = dict
    elif kind == "namedtuple":
        keys, children, container = range(len(tree[2])), tree[2], tree[1]
    else:
        keys, children, container = range(len(tree[1])), tree[1], (list if kind == "list" else tuple)
    ctype = f"C{len(consts)}"
    consts[ctype] = container
    lines += [f"{var} = {expr}", f"if type({var}) is not {ctype} or len({var}) != {len(children)}:",
              "    return False"]
    for key, child in zip(keys, children):
        if kind == "dict":
            kname = f"K{len(consts)}"
            consts[kname] = key
            lines += [f"if {kname} not in {var}:", "    return False"]
            item = f"{var}[{kname}]"
        else:
            item = f"{var}[{key}]"
        if not _match_lines(child, item, lines, consts, leaf_ids):
            return False
    return True


def signature_key(leaves, treedef):
    """What a compiled version is keyed by: pytree structure with static values, shapes, dtypes."""
    return (treedef, tuple((x.shape, x.dtype.str) if isinstance(x, np.ndarray)
                           else _leaf_key(x) for x in leaves))


def _leaf_key(x):
    shape, dtype = pytree.leaf_type(x)
    return shape, dtype.str


def _input_name(v):
    """The name of the graph input that `v` is computed from through casts and views (the
    indices of a gather: a label array, embedding ids), or "an input"."""
    while v.node is not None and len(v.node.inputs) == 1:
        v = v.node.inputs[0]
    return v.name if v.node is None and v.name else "an input"


def _result(view, fresh):
    if view.shape == ():
        return view.dtype.type(view[()])
    return view.copy() if fresh else view


def _why(old, new):
    if old is None:
        return "first call"
    if old[0] != new[0]:
        return "the argument structure or static values changed"
    if old[2:] != new[2:]:
        return "the optimizer's hyperparameters changed"
    changes = [f"input {i}: {a[0]}/{np.dtype(a[1]).name} -> {b[0]}/{np.dtype(b[1]).name}"
               for i, (a, b) in enumerate(zip(old[1], new[1])) if a != b]
    return "new signature (" + "; ".join(changes) + ")"
