"""Compiled functions: the per-signature cache, the compile pipeline, and the call path.

A call flattens its arguments, looks up the signature (pytree structure, shapes, dtypes, static
values), and on a hit hands buffer addresses to the driver: no tracing, no compiling, no
allocation. On a miss it traces, runs the passes, fuses, plans, generates and loads code, and
says why under GRADC_LOG=compiles.
"""
from __future__ import annotations

import os
import sys
import threading
import time
import weakref

import numpy as np

from . import autodiff, pytree, random
from .codegen.driver_rt import entry_address, program_table
from .codegen.modules import content_name, load_module, load_modules
from .codegen.program import Program
from .errors import NonDifferentiableError, SignatureError
from .ir import SUPPORTED_DTYPES, Value
from .ops import fn
from .passes import AFTER_AUTODIFF, BEFORE_AUTODIFF, run_passes
from .passes.fuse import fuse
from .passes.memory import plan_buffers
from .trace import trace, user_source


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


def differentiable_leaves(args, argnums, src):
    """The array leaves of the differentiated arguments, checked to be floating point."""
    out = []
    for a in argnums:
        leaves, _ = pytree.flatten(args[a])
        if not leaves:
            raise NonDifferentiableError(
                f"argument {a} has no arrays to differentiate (a Python number is static: pass a "
                "NumPy float array instead)", source=src)
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


def check_scalar_output(out, src):
    if not isinstance(out, Value) or out.shape != () or not np.issubdtype(out.dtype, np.floating):
        what = f"shape {out.shape} {out.dtype}" if isinstance(out, Value) else type(out).__name__
        raise NonDifferentiableError(
            f"grad needs a function that returns a scalar float, got {what}; reduce it first "
            "(e.g. .sum() or .mean())", source=(out.node.source if isinstance(out, Value) and out.node
                                               else src))


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

    def run(self, leaves, owned=()):
        """Run on the caller's array `leaves`; `owned` are the addresses of the remaining inputs,
        buffers gradc owns (a train step's optimizer state), which never move."""
        keep = []  # contiguous copies that must live until the driver returns
        io = self.io
        for i, (x, (shape, dtype)) in enumerate(zip(leaves, self.input_types)):
            if not (isinstance(x, np.ndarray) and x.flags.c_contiguous and x.dtype == dtype):
                x = np.ascontiguousarray(x, dtype=dtype)
                keep.append(x)
            io[i] = x.__array_interface__["data"][0]  # (x.ctypes leaves GC garbage)
        for j, address in enumerate(owned, start=len(leaves)):
            io[j] = address
        if self.fast:
            self.fast.forget()  # io no longer holds the addresses it remembers
        self.driver(self.address, self.io_address)
        return self.outputs


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
    if load and target == "cuda":
        driver = program.load()
    elif load:
        driver = load_driver(program)
    timings["numba"] = time.perf_counter() - t0
    return stages, fusion, plan, program, driver, timings


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
        self._last_key = None
        self._last_call = None  # a LastCall: the last call's signature, recognized fast
        self.__name__ = getattr(fun, "__name__", "fn")
        self.__doc__ = getattr(fun, "__doc__", None)
        self.__wrapped__ = fun

    def __repr__(self):
        return f"<gradc.{self.mode} of {self.__name__}>"

    # --- tracing ---------------------------------------------------------------------------
    def trace_joint(self, args, kwargs):
        """Trace into a new graph; for gradients, append the backward. Returns (graph, out_tree)."""
        graph, out_tree, outs = trace(self.fun, args, kwargs)
        if self.mode == "jit":
            graph = run_passes(graph, BEFORE_AUTODIFF)
            _advance_generators(graph, (args, kwargs))
            return graph, out_tree
        src = getattr(self, "_call_source", None)
        argnums, many = normalize_argnums(self.argnums, len(args), src)
        differentiable_leaves(args, argnums, src)
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
        return graph, (out_tree, grad_trees, many, [len(order[i]) for i in argnums])

    # --- calling ---------------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        last = self._last_call
        if last is not None:  # the same signature as the last call: no flatten, key or lookup
            compiled = last.compiled
            with compiled.lock:
                if last.match((args, kwargs)):
                    compiled.driver(compiled.address, compiled.io_address)
                    return self._package(compiled, compiled.outputs)
        try:
            leaves, treedef = pytree.flatten((args, kwargs))
        except SignatureError as e:
            raise SignatureError(str(e), source=user_source()) from None
        if any(isinstance(x, Value) for x in leaves):
            return self._inline(args, kwargs)
        key = signature_key(leaves, treedef)
        compiled = self.cache.get(key)
        if compiled is None:
            self._call_source = user_source()
            compiled = self._compile(key, args, kwargs)
        with compiled.lock:
            outs = compiled.run(leaves)
            self._last_call = compiled.last_call(treedef, leaves)
            return self._package(compiled, outs)

    def lower(self, *args, load=False, source=None, **kwargs):
        """Trace and compile for these arguments without caching the result; with load=False
        nothing is Numba-compiled and the Compiled has no driver (what `gradc compile` writes
        out). `source` names the caller in the generated code (default: the calling line)."""
        leaves, treedef = pytree.flatten((args, kwargs))
        self._call_source = source or user_source()
        return self._compile(signature_key(leaves, treedef), args, kwargs, load=load, cache=False)

    def compiled_for(self, *args, **kwargs):
        """The compiled signature for these arguments (compiling it if needed)."""
        leaves, treedef = pytree.flatten((args, kwargs))
        key = signature_key(leaves, treedef)
        if key not in self.cache:
            self._call_source = user_source()
            self._compile(key, args, kwargs)
        return self.cache[key]

    def _compile(self, key, args, kwargs, load=True, cache=True):
        for i, (shape, dtype) in enumerate(key[1]):
            if np.dtype(dtype) not in SUPPORTED_DTYPES:
                raise SignatureError(
                    f"an input array has dtype {np.dtype(dtype).name}, which gradc does not "
                    "support; convert it with .astype(np.float32) (supported: "
                    + ", ".join(d.name for d in SUPPORTED_DTYPES) + ")", source=self._call_source)
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
        out_tree, grad_trees, many, counts = compiled.out_kind
        value = _result(outs[0], fresh=True)
        grads, cursor = [], 1
        for tree, n in zip(grad_trees, counts):
            grads.append(pytree.unflatten(tree, [_result(o, fresh=self.copy)
                                                 for o in outs[cursor:cursor + n]]))
            cursor += n
        grads = tuple(grads) if many else grads[0]
        return grads if self.mode == "grad" else (value, grads)

    # --- inside another trace: grad of grad ------------------------------------------------
    def _inline(self, args, kwargs):
        if self.mode == "jit":
            return self.fun(*args, **kwargs)
        like = next(x for x in pytree.flatten((args, kwargs))[0] if isinstance(x, Value))
        graph = like.graph
        src = user_source()
        argnums, many = normalize_argnums(self.argnums, len(args), src)
        differentiable_leaves(args, argnums, src)
        args = list(args)
        wrt, trees = [], []
        for i in argnums:  # fresh variables, so only this function's uses are differentiated
            leaves, tree = pytree.flatten(args[i])
            marked = [graph.apply("alias", (fn.as_value(x, like),), tag=f"grad{graph._next_id}")
                      for x in leaves]
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
    shape, strides (so still C-contiguous) and dtype; leaves in `writeable` must be writeable. It
    writes the leaves' addresses into the compiled signature's `io` (what the driver reads) only
    for arrays that are not the ones it saw last, held by weak reference (an array's data never
    moves while it lives; taking an address costs ~1 us). Anything else returns False and the
    caller takes the slow way (flatten, key, cache), which also raises the errors."""

    def __init__(self, source, consts, leaves, compiled):
        self.source = source  # readable: print(f._last_call.source)
        self.refs = [_forgotten] * len(leaves)  # the first match takes every address
        namespace = dict(consts, ndarray=np.ndarray, ref=weakref.ref, refs=self.refs,
                         addresses=compiled.io)
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
            lines += [f"if refs[{i}]() is not l{i}:",
                      f"    refs[{i}] = ref(l{i})",
                      f"    addresses[{i}] = l{i}.__array_interface__['data'][0]"]
        lines.append("return True")
        source = "def match(x):\n" + "".join(f"    {line}\n" for line in lines)
        return cls(source, consts, leaves, compiled)


_STATIC_TYPES = (int, float, bool, str, type(None))


def _match_lines(tree, expr, lines, consts, leaf_ids):
    """Lines that check the value at `expr` against `tree` (returning False when it differs) and
    bind each leaf to `l<i>`. False if the tree holds something the fast path does not handle."""
    if tree == pytree.LEAF:
        i = next(leaf_ids)
        lines += [f"l{i} = {expr}", f"if type(l{i}) is not ndarray:", "    return False"]
        return True
    kind = tree[0]
    if kind == "static":
        if type(tree[1]) not in _STATIC_TYPES:
            return False
        name = f"V{len(consts)}"
        consts[name] = tree[1]
        lines += [f"if type({expr}) is not type({name}) or {expr} != {name}:", "    return False"]
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
