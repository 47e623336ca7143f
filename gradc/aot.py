"""Ahead-of-time compilation: one standalone Python module per compiled signature.

    gradc compile model.py:loss --example specs.py:args [--grad | --value-and-grad | --jit |
                  --train sgd|momentum|adam|adamw [--lr LR]] -o loss_step.py

`compile_module(fun, args, ...)` traces and compiles `fun` for the example arguments exactly as
`gradc.value_and_grad` / `gradc.grad` / `gradc.jit` / `gradc.train_step` would (the same
passes, fusion, buffer plan and kernel source), and writes it out as ONE module that imports
only NumPy and Numba: the kernels (explicit signatures, a comment with the op on every line),
the runtime helpers (gradc/codegen/rt.py and the libmvec hook of gradc/codegen/vecmath.py,
copied verbatim), the driver (its comments carry the user's source lines), the buffer plan
(arena size, output offsets, constants as base64) and a callable named after the function with
a documented calling convention. Calling it gives results identical, bit for bit, to gradc's.

The output is reproducible: no timestamps, no absolute paths, stable names and ordering; the
same inputs give byte-identical files on any machine (whether libmvec is used is decided when
the generated module is imported, not when it is written).

Nothing here runs Numba: the module is generated from gradc's code generator without loading
the kernels, so compiling ahead of time is fast.

Example arguments may be arrays or `Spec(shape, dtype)` placeholders.
"""
from __future__ import annotations

import ast
import base64
import hashlib
import inspect
import linecache
import os
import sys
import textwrap

import numpy as np

from . import pytree
from ._version import __version__

CALLING_CONVENTION = 2  # bump when the generated module's interface changes
# 2: 0-d gradients are 0-d arrays; a Python float in a differentiated argument is traced
MODES = ("value_and_grad", "grad", "jit", "train")


class Spec:
    """A placeholder example argument: an array of this shape and dtype.

    `gradc compile` needs only shapes and dtypes; `gradc explain` and `gradc check` fill a Spec
    with deterministic values (floats from a seeded normal distribution, integers and booleans
    zero, which is a valid index)."""

    __slots__ = ("shape", "dtype")

    def __init__(self, shape, dtype=np.float32):
        if isinstance(shape, (int, np.integer)):
            shape = (int(shape),)
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)

    def __repr__(self):
        return f"Spec({self.shape}, {self.dtype.name})"

    def __eq__(self, other):
        return isinstance(other, Spec) and (self.shape, self.dtype) == (other.shape, other.dtype)

    def __hash__(self):
        return hash((self.shape, self.dtype.str))

    def materialize(self, rng):
        if np.issubdtype(self.dtype, np.floating):
            return rng.standard_normal(self.shape).astype(self.dtype)
        return np.zeros(self.shape, self.dtype)


def materialize(tree, seed=0):
    """The example arguments with every Spec replaced by an array (deterministic values); arrays
    are copied, so nothing the caller holds is touched."""
    rng = np.random.default_rng(seed)

    def walk(x):
        if isinstance(x, Spec):
            return x.materialize(rng)
        if isinstance(x, np.ndarray):
            return x.copy()
        if isinstance(x, dict):
            return {k: walk(v) for k, v in x.items()}
        if isinstance(x, tuple) and hasattr(x, "_fields"):
            return type(x)(*[walk(v) for v in x])
        if isinstance(x, (list, tuple)):
            return type(x)(walk(v) for v in x)
        return x

    return walk(tree)


class AotError(ValueError):
    """Something the ahead-of-time compiler cannot write out (a message for the user)."""


# ---------------------------------------------------------------------------------------------
# compiling: gradc's own pipeline, without loading (Numba-compiling) the kernels

def make_optimizer(name, lr=None, momentum=None, weight_decay=None):
    """The optimizer `--train NAME` stands for, with gradc's defaults for what is not given."""
    from . import optim
    name = name.lower()
    kw = {}
    if weight_decay is not None:
        kw["weight_decay"] = weight_decay
    if name == "sgd":
        return optim.SGD(lr=0.01 if lr is None else lr, momentum=momentum or 0.0, **kw)
    if name == "momentum":
        return optim.SGD(lr=0.01 if lr is None else lr, momentum=0.9 if momentum is None else momentum,
                         **kw)
    if name == "adam":
        return optim.Adam(lr=1e-3 if lr is None else lr, **kw)
    if name == "adamw":
        return optim.AdamW(lr=1e-3 if lr is None else lr, **kw)
    raise AotError(f"unknown optimizer {name!r}: use sgd, momentum, adam or adamw")


def build(fun, args, mode="value_and_grad", argnums=0, optimizer=None, clip_norm=None,
          check_finite=False, target="cpu"):
    """Trace and compile `fun` for `args` (Specs allowed) as `mode` would; return the
    `gradc.executable.Compiled` (its driver is None: nothing was loaded)."""
    if target not in ("cpu", "cuda"):
        raise AotError(f"target must be 'cpu' or 'cuda', got {target!r}")
    from .function import Function
    from .train import TrainStep
    if mode not in MODES:
        raise AotError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    args = tuple(materialize(args))
    src = f"{getattr(fun, '__name__', 'fn')}"  # not a file:line, so the output is reproducible
    if mode == "train":
        if optimizer is None:
            raise AotError("--train needs an optimizer")
        step = TrainStep(fun, optimizer, argnums=argnums, check_finite=check_finite,
                         clip_norm=clip_norm)
        step.target = target  # (set after the constructor: generating code needs no GPU)
        if not (isinstance(argnums, int) and -len(args) <= argnums < len(args)):
            raise AotError(f"argnums={argnums!r} does not fit {len(args)} arguments")
        return step.lower(*args, load=False, source=src), step
    f = Function(fun, mode, argnums=argnums)
    f.target = target
    return f.lower(*args, load=False, source=src), f


# ---------------------------------------------------------------------------------------------
# pieces of the generated module

def _strip_docstring(source):
    """Module source without its docstring (a comment keeps its first line)."""
    tree = ast.parse(source)
    body = tree.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None),
                                                              ast.Constant):
        lines = source.splitlines()
        first = " ".join(body[0].value.value.strip().split("\n\n")[0].split())
        comment = textwrap.fill(first, width=98, initial_indent="# ", subsequent_indent="# ")
        return comment + "\n" + "\n".join(lines[body[0].end_lineno:]).strip("\n") + "\n"
    return source


def _runtime_sources():
    from .codegen import rt, vecmath
    return (_strip_docstring(inspect.getsource(vecmath)), _strip_docstring(inspect.getsource(rt)))


def _literal(value, what):
    """`repr(value)` when it reads back as an equal Python literal; else an AotError."""
    text = repr(value)
    try:
        back = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        back = _NOTHING
    if back is _NOTHING or back != value or type(back) is not type(value):
        raise AotError(f"{what} {text} cannot be written into a generated module: static "
                       "(non-array) arguments must be Python literals (numbers, strings, None)")
    return text


_NOTHING = object()


def _portable_tree(treedef, what):
    """gradc's pytree description, checked to be writable as a Python literal."""
    if treedef in (pytree.LEAF, pytree.FLOAT):
        return treedef
    kind = treedef[0]
    if kind == "dict":
        for k in treedef[1]:
            _literal(k, f"{what}: dict key")
        return ("dict", treedef[1], tuple(_portable_tree(c, what) for c in treedef[2]))
    if kind == "namedtuple":
        raise AotError(f"{what}: a namedtuple ({treedef[1].__name__}) cannot be written into a "
                       "generated module; use a dict, list or tuple")
    if kind == "node":
        raise AotError(f"{what}: a {treedef[1].__name__} cannot be passed to a generated module "
                       "(it advances inside gradc's runtime); draw the random numbers outside "
                       "and pass them in as an array argument")
    if kind in ("list", "tuple"):
        return (kind, tuple(_portable_tree(c, what) for c in treedef[1]))
    _literal(treedef[1], f"{what}: static value")
    return treedef[:2]  # ("static", value): the generated _same_static compares exactly


def _describe(tree, leaves):
    """`{'b': float32[1], 'w': float32[3,1]}` for a tree whose leaves are type strings."""
    it = iter(leaves)

    def walk(t):
        if t == pytree.LEAF:
            return next(it)
        if t == pytree.FLOAT:
            next(it)
            return "float"
        kind = t[0]
        if kind == "dict":
            return "{" + ", ".join(f"{k!r}: {walk(c)}" for k, c in zip(t[1], t[2])) + "}"
        if kind in ("list", "tuple"):
            inner = [walk(c) for c in t[1]]
            if kind == "list":
                return "[" + ", ".join(inner) + "]"
            return "(" + ", ".join(inner) + ("," if len(inner) == 1 else "") + ")"
        return repr(t[1])

    return walk(tree)


def _count(tree):
    if tree in (pytree.LEAF, pytree.FLOAT):
        return 1
    if tree[0] == "dict":
        return sum(_count(c) for c in tree[2])
    if tree[0] in ("list", "tuple"):
        return sum(_count(c) for c in tree[1])
    return 0


def _type(shape, dtype):
    return f"{np.dtype(dtype).name}[{','.join(str(d) for d in shape)}]"


def display_path(path):
    """A path for generated text: relative to the working directory when inside it, else the
    file's base name (never an absolute path)."""
    path = os.path.abspath(path)
    rel = os.path.relpath(path, os.getcwd())
    if rel.startswith(".."):
        return os.path.basename(path)
    return rel.replace(os.sep, "/")


def file_sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class _SourceLines:
    """The text of the user's `file:line` sources (node.source holds the base name)."""

    def __init__(self, primary_files):
        self.paths = {}
        for p in primary_files:
            if p:
                self.paths.setdefault(os.path.basename(p), p)

    def _path(self, base):
        if base not in self.paths:
            found = None
            for p in list(self.paths.values()):  # a neighbour of the function's own file first
                near = os.path.join(os.path.dirname(p), base) if p else None
                if near and os.path.isfile(near):
                    self.paths[base] = near
                    return near
            for name in sorted(sys.modules):
                f = getattr(sys.modules[name], "__file__", None)
                if f and os.path.basename(f) == base and f.endswith(".py"):
                    found = f
                    break
            self.paths[base] = found
        return self.paths[base]

    def text(self, source):
        base, sep, line = source.rpartition(":")
        if not sep or not line.isdigit():
            return None
        path = self._path(base)
        if path is None:
            return None
        text = linecache.getline(path, int(line)).strip()
        return text or None


def _b64_lines(data, indent, width=88):
    text = base64.b64encode(data).decode("ascii")
    step = width - len(indent) - 2
    return [f'{indent}"{text[i:i + step]}"' for i in range(0, len(text), step)] or [f'{indent}""']


def _docstring_safe(text):
    return text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')


def _comment_safe(text):
    return " ".join(text.split())


# ---------------------------------------------------------------------------------------------
# the module

def generate(fun, args, mode="value_and_grad", argnums=0, optimizer=None, clip_norm=None,
             check_finite=False, command=None, source_file=None, module_name=None,
             target="cpu"):
    """The standalone module's source (a str) for `fun` compiled on `args` as `mode`.
    `command` (the command line, for the header), `source_file` (default: where `fun` is
    defined) and `module_name` (for the usage example) only change comments."""
    if mode == "train" and not isinstance(argnums, int):
        raise AotError("--train updates one argument: --argnums must be one integer")
    raw_args = tuple(args)
    compiled, owner = build(fun, raw_args, mode, argnums, optimizer, clip_norm, check_finite,
                            target)
    if mode == "train":
        argnums %= len(raw_args)
    args = tuple(materialize(raw_args))
    name = getattr(fun, "__name__", "fn")
    if not name.isidentifier() or name.startswith("_"):
        raise AotError(f"cannot name the generated callable {name!r}: give the function a plain "
                       "name (not a lambda)")
    if source_file is None:
        try:
            source_file = inspect.getsourcefile(fun)
        except TypeError:
            source_file = None
    if target == "cuda":
        from .aot_cuda import CudaGenerator as generator
    else:
        generator = _Generator
    g = generator(compiled, owner, fun, name, args, mode, argnums, optimizer, clip_norm,
                  check_finite, command, source_file, module_name)
    return g.module()


def compile_module(fun, args, out_path, **kwargs):
    """Write the module for `fun` on `args` (see `generate`) to `out_path`; returns the path.
    Written to a temporary name and renamed, so a reader never sees half a file."""
    kwargs.setdefault("module_name", os.path.splitext(os.path.basename(out_path))[0])
    source = generate(fun, args, **kwargs)
    directory = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(directory, exist_ok=True)
    try:  # an identical file is left alone (its mtime keys Numba's cache of the kernels)
        with open(out_path, encoding="utf-8", newline="") as f:
            if f.read() == source:
                return out_path
    except (OSError, UnicodeDecodeError):
        pass
    tmp = out_path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(source)
    os.replace(tmp, out_path)
    return out_path


class _Generator:
    target = "cpu"

    def __init__(self, compiled, owner, fun, name, args, mode, argnums, optimizer, clip_norm,
                 check_finite, command, source_file, module_name):
        self.module_name = module_name
        self.c, self.owner, self.fun, self.name = compiled, owner, fun, name
        self.args, self.mode, self.argnums = args, mode, argnums
        self.optimizer, self.clip_norm, self.check_finite = optimizer, clip_norm, check_finite
        self.command, self.source_file = command, source_file
        self.graph = compiled.fusion.graph
        self.plan = compiled.plan
        self.program = compiled.program
        if mode != "train":  # (as a call traces them: Python floats at argnums are leaves)
            args = owner.traced_args(args)
        _, treedef = pytree.flatten((args, {}))
        self.args_tree = _portable_tree(treedef[1][0], "an argument")
        self.lines = _SourceLines([source_file])

    # --- text pieces -------------------------------------------------------------------------
    def _header(self):
        what = {"value_and_grad": "value_and_grad", "grad": "grad", "jit": "jit (forward only)",
                "train": "train_step"}[self.mode]
        out = ["# Generated by gradc " + __version__ + " (ahead-of-time compiler). Do not edit: "
               "regenerate it."]
        if self.command:
            out.append(f"#   {_comment_safe(self.command)}")
        out.append(f"# Compiled: {what} of `{self.name}`"
                   + (f", argnums={self.argnums!r}" if self.mode != "jit" else "")
                   + (f", optimizer {self.optimizer!r}" if self.mode == "train" else "")
                   + (f", clip_norm={self.clip_norm!r}" if self.clip_norm is not None else "")
                   + (", check_finite=True" if self.check_finite else "") + f", target {self.target}")
        if self.source_file and os.path.isfile(self.source_file):
            out.append(f"# Source: {display_path(self.source_file)} "
                       f"(sha256 {file_sha256(self.source_file)})")
        out.append(f"# Calling convention version {CALLING_CONVENTION}. Imports only NumPy and "
                   "Numba (and llvmlite, which Numba brings).")
        return "\n".join(out) + "\n"

    def _input_table(self, start=0, stop=None):
        rows = []
        for i, v in enumerate(self.graph.inputs[start:stop], start):
            rows.append(f"        {i:<3} {v.name or self.program.input_names[i]:<28} "
                        f"{_type(v.shape, v.dtype)}")
        return rows

    def _docstring(self):
        n_args = len(self.args)
        param_names = _param_names(self.fun, n_args)
        sig = ", ".join(param_names)
        leaves = [_type(v.shape, v.dtype) for v in self.graph.inputs]
        n_user = _count(self.args_tree)
        arg_lines, cursor = [], 0
        for pname, t in zip(param_names, self.args_tree[1]):
            n = _count(t)
            arg_lines.append(f"        {pname} = {_describe(t, leaves[cursor:cursor + n])}")
            cursor += n
        d = [f"{self.name}: {self._title()}, compiled ahead of time by gradc.", ""]
        d += ["Usage", ""]
        if self.mode == "train":
            batch = [p for i, p in enumerate(param_names) if i != self.argnums]
            params_name = param_names[self.argnums]
            d += [f"    from {{module}} import {self.name}  # a TrainStep: owns the optimizer state",
                  f"    for {', '.join(batch) or '_'} in batches:",
                  f"        value = {self.name}({sig})  # one step: {params_name} updated in place; "
                  "returns the loss",
                  f"    {self.name}.lr = 1e-4  # the learning rate may change between steps",
                  f"    {self.name}.state_dict(), {self.name}.load_state_dict(state)  "
                  "# the optimizer state",
                  "    another = TrainStep(lr=1e-3)  # a step object with fresh optimizer state",
                  ""]
        elif self.mode == "jit":
            d += [f"    from {{module}} import {self.name}", f"    out = {self.name}({sig})", ""]
        elif self.mode == "grad":
            d += [f"    from {{module}} import {self.name}", f"    grads = {self.name}({sig})", ""]
        else:
            d += [f"    from {{module}} import {self.name}",
                  f"    value, grads = {self.name}({sig})", ""]
        d += ["Calling convention (version " + str(CALLING_CONVENTION) + ")", "",
              f"    `{self.name}` takes the arguments the Python function takes, positionally, as "
              "pytrees (dicts,",
              "    lists, tuples) of NumPy arrays of exactly these shapes and dtypes; other "
              "leaves are",
              "    static and must equal the values it was compiled with:", ""]
        d += arg_lines
        d += ["", "    Flat argument order (the pytree leaves, dict keys sorted by repr), as the "
              "kernels take them:", ""]
        d += self._input_table(0, n_user)
        if self.mode == "train":
            d += ["", "    then the optimizer state and runtime scalars, which the step owns:", ""]
            d += self._input_table(n_user)
        d += ["", "    Returns " + self._returns(), ""]
        d += ["Low level: `run(A, *addresses)` runs the kernels; A is the address of a "
              f"{self.plan.arena_bytes}-byte,",
              "64-byte aligned arena holding the constants at their offsets (`CONSTANTS`), then "
              "one address per",
              "input in the flat order above (`INPUTS`); outputs are written into the arena or "
              "in place (`OUTPUTS`)."]
        return d

    def _title(self):
        return {"value_and_grad": f"value and gradient of `{self.name}`",
                "grad": f"gradient of `{self.name}`",
                "jit": f"`{self.name}` (forward only)",
                "train": f"a training step of `{self.name}` with {self.optimizer!r}"}[self.mode]

    def _returns(self):
        outs = self.graph.outputs
        if self.mode == "train":
            return ("the loss as a Python float; the parameters and the optimizer state are "
                    "updated in place.")
        if self.mode == "jit":
            out_tree = self.c.out_kind
            return (_describe(out_tree, [_type(v.shape, v.dtype) for v in outs])
                    + " (fresh arrays; 0-d results as NumPy scalars).")
        out_tree, grad_trees, many, counts, _ = self.c.out_kind
        grads, cursor = [], 1
        for tree, n in zip(grad_trees, counts):
            grads.append(_describe(tree, [_type(v.shape, v.dtype) for v in outs[cursor:cursor + n]]))
            cursor += n
        g = "(" + ", ".join(grads) + ")" if many else grads[0]
        text = (f"grads = {g}" if self.mode == "grad" else
                f"(value, grads): value a {outs[0].dtype.name} NumPy scalar, grads = {g}")
        return (text + ".\n    The gradient arrays are views of this callable's fixed buffers: "
                "the next call overwrites\n    them (copy them to keep them), as "
                "gradc.value_and_grad(copy=False) does; `ValueAndGrad(copy=True)`\n    "
                "(`Grad(copy=True)`) makes a callable that returns fresh arrays.")

    def _kernels(self):
        seen, out = {}, []
        for k, ks in zip(self.c.fusion.kernels, self.program.kernels):
            seen.setdefault(ks.name, (ks, []))[1].append(k)
        for kname, (ks, ks_kernels) in seen.items():
            ops = ", ".join(dict.fromkeys(n.op for k in ks_kernels for n in k.nodes))
            users = ", ".join(k.name for k in ks_kernels)
            out.append(f"# {kname}: {ops}; called by {users}")
            out.append(ks.source.rstrip("\n"))
            out.append("")
            out.append("")
        return out

    def _driver(self):
        names = self.program.input_names
        out = [f"def run(A{''.join(', ' + n for n in names)}):",
               '    """Run the kernels in order. A: the arena\'s address; then each input\'s '
               'buffer address, in',
               '    the flat order of `INPUTS`. Allocates nothing."""']
        for k, ks in zip(self.c.fusion.kernels, self.program.kernels):
            ops = ", ".join(dict.fromkeys(n.op for n in k.nodes))
            shape = "x".join(str(d) for d in k.shape) or "scalar"
            stores = ", ".join(f"%{v.id}" for v in k.stores)
            out.append(f"    # {k.name}: {ops} over [{shape}] -> {stores}")
            for src in dict.fromkeys(n.source for n in k.nodes):
                text = self.lines.text(src)
                out.append(f"    #   {src}" + (f"  {_comment_safe(text)}" if text else ""))
            out.append(f"    {ks.name}({', '.join(ks.call_args)})")
        if not self.c.fusion.kernels:
            out.append("    pass")
        return out

    def _plan(self):
        plan, graph = self.plan, self.graph
        out = ["# The buffer plan: every intermediate value has a fixed offset in one arena.",
               f"ARENA_BYTES = {plan.arena_bytes}",
               "# (offset, dtype, shape, data): constants copied into the arena once",
               "CONSTANTS = ["]
        for vid in sorted(plan.constants, key=lambda v: plan.offsets[v]):
            array = np.ascontiguousarray(plan.constants[vid])
            dt = array.dtype.newbyteorder("<")
            out.append(f"    ({plan.offsets[vid]}, {dt.str!r}, {tuple(array.shape)!r}, (")
            out += _b64_lines(array.astype(dt).tobytes(), "        ")
            out.append("    )),")
        out.append("]")
        out.append("# (name, shape, dtype) of each input, in the order `run` takes them")
        out.append("INPUTS = [")
        for v, n in zip(graph.inputs, self.program.input_names):
            out.append(f"    ({(v.name or n)!r}, {tuple(v.shape)!r}, {v.dtype.str!r}),")
        out.append("]")
        return out + self._outputs_and_arguments("arena")

    def _outputs_and_arguments(self, region):
        """The OUTPUTS table (where each output is) and the tables of the call's arguments."""
        plan, graph = self.plan, self.graph
        out = [f"# (byte offset in the {region}, or None when written in place into input i, "
               "i or None, shape, dtype)", "OUTPUTS = ["]
        index = {v.id: i for i, v in enumerate(graph.inputs)}
        for v in graph.outputs:
            if v.id in plan.aliases:
                out.append(f"    (None, {index[plan.aliases[v.id].id]}, {tuple(v.shape)!r}, "
                           f"{v.dtype.str!r}),")
            else:
                out.append(f"    ({plan.offsets[v.id]}, None, {tuple(v.shape)!r}, {v.dtype.str!r}),")
        return out + ["]", f"ARGS_TREE = {self.args_tree!r}", f"NAME = {self.name!r}",
                      f"N_ARGS = {len(self.args)}",
                      f"ARG_NAMES = {tuple(_param_names(self.fun, len(self.args)))!r}"]

    def _callable(self):
        mode = self.mode
        if mode == "train":
            return self._train_callable()
        if mode == "jit":
            out_tree = _portable_tree(self.c.out_kind, "a returned value")
            return [f"OUT_TREE = {out_tree!r}", "", "", _JIT_CLASS,
                    f"{self.name} = Jit()", ""]
        out_tree, grad_trees, many, counts, _ = self.c.out_kind
        trees = tuple(_portable_tree(t, "a differentiated argument") for t in grad_trees)
        cls = "ValueAndGrad" if mode == "value_and_grad" else "Grad"
        return [f"GRAD_TREES = {trees!r}", f"GRAD_COUNTS = {tuple(counts)!r}",
                f"MANY_ARGNUMS = {bool(many)!r}", "", "",
                _GRAD_CLASS.replace("@CLASS@", cls).replace("@VALUE@", repr(mode == "value_and_grad")),
                f"{self.name} = {cls}()", ""]

    def _train_callable(self):
        opt = self.optimizer
        hyper = vars(opt)
        fields = []
        for k in sorted(hyper):
            v = hyper[k]
            if isinstance(v, (np.floating, np.integer)):
                v = v.item()
            fields.append(f"        self.{k} = {_literal(v, f'hyperparameter {k}')}")
        scalars_fn = type(opt).scalars
        scalars_src = textwrap.dedent(inspect.getsource(scalars_fn))
        origin = f"{scalars_fn.__module__}.{scalars_fn.__qualname__}"
        hyper_cls = [
            "class Hyperparameters:",
            f'    """{type(opt).__name__}\'s hyperparameters. Only `lr` may change between '
            'steps: the others are compiled',
            '    into the kernels (changing them here changes nothing but the runtime '
            'scalars)."""',
            "",
            "    def __init__(self):",
            *fields,
            "",
            f"    # copied from {origin}",
            textwrap.indent(scalars_src.rstrip("\n"), "    "),
        ]
        return ["OPTIMIZER = " + repr(repr(opt)),
                f"ARGNUMS = {self.argnums!r}",
                f"SLOTS = {tuple(opt.slots)!r}",
                f"SCALAR_NAMES = {tuple(opt.scalar_names)!r}",
                f"CHECK_FINITE = {bool(self.check_finite)!r}",
                "", "",
                *hyper_cls, "", "",
                _TRAIN_CLASS, f"{self.name} = TrainStep()", ""]

    def module(self):
        vec_src, rt_src = _runtime_sources()
        doc = "\n".join(self._docstring()).replace("{module}", self.module_name or "<this module>")
        parts = [self._header(),
                 '"""' + _docstring_safe(doc) + '\n"""',
                 "import base64",
                 "import math",
                 "import sys",
                 "import threading",
                 "",
                 "import numpy as np",
                 "",
                 f"CALLING_CONVENTION = {CALLING_CONVENTION}",
                 f"GRADC_VERSION = {__version__!r}",
                 "",
                 "",
                 _banner("runtime helpers, copied from gradc/codegen/vecmath.py: SIMD "
                         "exp/log/tanh through glibc's libmvec"),
                 vec_src.rstrip("\n"),
                 "",
                 "",
                 _banner("runtime helpers, copied from gradc/codegen/rt.py"),
                 rt_src.rstrip("\n"),
                 "",
                 "",
                 _banner("kernels"),
                 "# As in gradc: the libmvec hook (where the machine has libmvec; "
                 "GRADC_VECMATH=0 turns it off)",
                 "# rewrites what Numba compiles for these kernels. Numba's disk cache is "
                 "used only with the",
                 "# hook on, so machine code that calls libmvec never loads into a process "
                 "without it, only when",
                 "# this module is in sys.modules (Numba cannot reload cached kernels of a "
                 "module that is not), and",
                 "# only where Numba can write a cache (imported from a read-only folder by "
                 "a user with no writable",
                 "# home, the kernels compile on every import).",
                 "",
                 "",
                 _NUMBA_CAN_CACHE,
                 "",
                 "",
                 "_VECMATH = enable()",
                 "JIT_OPTIONS = dict(JIT_OPTIONS, cache=_VECMATH and sys.modules.get(__name__) "
                 "is not None\n                   and _numba_can_cache())",
                 '_state["active"] = True  # the kernels below compile (eagerly: explicit '
                 'signatures) with the hook',
                 "",
                 "",
                 *self._kernels(),
                 '_state["active"] = False',
                 "",
                 "",
                 _banner("driver: the kernels in order (comments: the op, the user's source "
                         "line)"),
                 *self._driver(),
                 "",
                 "",
                 _banner("buffer plan and calling convention"),
                 *self._plan(),
                 "",
                 "",
                 _COMMON,
                 *self._callable()]
        text = "\n".join(parts).rstrip("\n") + "\n"
        if _top_level_names(text).count(self.name) != 1:
            raise AotError(f"cannot name the generated callable {self.name!r}: the module "
                           "itself uses that name; rename the function")
        return text


def _top_level_names(text):
    """Every name bound at the top level of a module (with repeats)."""
    names = []
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names += [(a.asname or a.name).split(".")[0] for a in node.names]
    return names


def _banner(text):
    return "# " + "=" * 96 + "\n# " + text + "\n# " + "=" * 96


def _param_names(fun, n):
    names = []
    try:
        params = list(inspect.signature(fun).parameters.values())
    except (TypeError, ValueError):
        params = []
    for p in params:
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            names.append(p.name)
        elif p.kind == p.VAR_POSITIONAL:
            names += [f"{p.name}{i}" for i in range(n - len(names))]
    names = names[:n]
    names += [f"arg{i}" for i in range(len(names), n)]
    return names


# ---------------------------------------------------------------------------------------------
# the generated module's runtime (pytree checks, arena, calling), written into every module

_NUMBA_CAN_CACHE = '''def _numba_can_cache():
    """Whether Numba finds a writable place to cache kernels defined in this file (as it looks
    for one: a __pycache__ beside it, NUMBA_CACHE_DIR, the user's cache directory)."""
    from numba.core.caching import FunctionCache
    try:
        FunctionCache(_numba_can_cache)
    except Exception:  # RuntimeError: "no locator available"
        return False
    return True'''

_COMMON = '''def _flatten(tree, x, path, leaves):
    """Check `x` against the compiled pytree structure and collect its array leaves."""
    kind = tree[0]
    if kind == "*":
        if not isinstance(x, (np.ndarray, np.generic)):
            raise TypeError(f"{path} must be a NumPy array, got {type(x).__name__}")
        leaves.append((path, x))
    elif kind == "float":  # a Python float in a differentiated argument
        if type(x) is not float:
            raise TypeError(f"{path} must be a Python float, got {type(x).__name__}")
        leaves.append((path, np.float64(x)))
    elif kind == "dict":
        if not isinstance(x, dict) or tuple(sorted(x, key=repr)) != tuple(tree[1]):
            got = sorted(x, key=repr) if isinstance(x, dict) else type(x).__name__
            raise TypeError(f"{path} must be a dict with keys {list(tree[1])}, got {got}")
        for k, t in zip(tree[1], tree[2]):
            _flatten(t, x[k], f"{path}[{k!r}]", leaves)
    elif kind in ("list", "tuple"):
        if not isinstance(x, (list, tuple)) or type(x).__name__ != kind or len(x) != len(tree[1]):
            got = type(x).__name__
            if isinstance(x, (list, tuple)):
                got += f" of length {len(x)}"
            raise TypeError(f"{path} must be a {kind} of length {len(tree[1])}, got {got}")
        for i, (t, v) in enumerate(zip(tree[1], x)):
            _flatten(t, v, f"{path}[{i}]", leaves)
    elif not _same_static(x, tree[1]):  # a static value: compiled in
        raise TypeError(f"{path} was compiled as the static value {tree[1]!r}; got {x!r}")


def _same_static(x, value):
    """x is the static `value`: of its type and equal, with the sign of a float zero (1/x
    tells 0.0 from -0.0); a NaN is a NaN."""
    if type(x) is not type(value):
        return False
    if type(x) is float:
        return x == value and math.copysign(1.0, x) == math.copysign(1.0, value) or (
            x != x and value != value)
    return x == value


def _unflatten(tree, it):
    kind = tree[0]
    if kind == "*":
        return next(it)
    if kind == "float":  # the gradient of a Python float
        return float(next(it))
    if kind == "dict":
        return {k: _unflatten(t, it) for k, t in zip(tree[1], tree[2])}
    if kind in ("list", "tuple"):
        items = [_unflatten(t, it) for t in tree[1]]
        return items if kind == "list" else tuple(items)
    return tree[1]


def _leaves(name, args):
    """The flat input arrays of a call, checked against `INPUTS` (shape and dtype must match)."""
    if len(args) != N_ARGS:
        raise TypeError(f"{name}() takes {N_ARGS} arguments ({', '.join(ARG_NAMES)}), "
                        f"got {len(args)}")
    leaves = []
    for arg_name, tree, x in zip(ARG_NAMES, ARGS_TREE[1], args):
        _flatten(tree, x, arg_name, leaves)
    arrays = []
    for (path, x), (_, shape, dtype) in zip(leaves, INPUTS):
        if not x.dtype.isnative:
            raise ValueError(f"{path} is {x.dtype.name} in non-native byte order "
                             f"({x.dtype.str!r}); convert it with .astype(np.{x.dtype.name})")
        if x.shape != shape or x.dtype.str != dtype:
            raise ValueError(f"{path} must be {np.dtype(dtype).name}{list(shape)}, got "
                             f"{x.dtype.name}{list(x.shape)} (this module was compiled for one "
                             "signature)")
        if not isinstance(x, np.ndarray) or not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)  # kept alive in `arrays` until the kernels return
        arrays.append(x)
    return arrays


def _span(x):
    """[start, end) of a C-contiguous array's memory."""
    start = x.__array_interface__["data"][0]
    return start, start + x.nbytes


def _first_overlap(arrays):
    """The positions (i, j) of two C-contiguous `arrays` whose memory overlaps, or None."""
    spans = sorted(_span(x) + (i,) for i, x in enumerate(arrays) if x.size)
    for (_, end, i), (start, _, j) in zip(spans, spans[1:]):
        if start < end:
            return min(i, j), max(i, j)
    return None


def _address(x):
    return x.__array_interface__["data"][0]


def _overlaps(x, spans):
    """Whether the memory of array `x` overlaps one of the byte ranges `spans`."""
    start, end = _span(x)
    return any(s < end and start < e for s, e in spans)


class Compiled:
    """The arena (constants copied in once) and views of the outputs that live in it."""

    def __init__(self):
        self._raw = np.zeros(ARENA_BYTES + 64, np.uint8)
        start = (-self._raw.ctypes.data) % 64
        self.arena = self._raw[start:start + ARENA_BYTES]
        self.address = self.arena.ctypes.data
        for offset, dtype, shape, data in CONSTANTS:
            array = np.frombuffer(base64.b64decode("".join(data)), dtype).reshape(shape)
            self.arena[offset:offset + array.nbytes] = array.view(np.uint8).reshape(-1)
        self.outputs = [None if offset is None else self.view(offset, shape, dtype)
                        for offset, _, shape, dtype in OUTPUTS]
        self.updated = sorted(i for offset, i, _, _ in OUTPUTS if offset is None)
        self.lock = threading.Lock()

    def view(self, offset, shape, dtype):
        dtype = np.dtype(dtype)
        n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        return self.arena[offset:offset + n].view(dtype).reshape(shape)

    def _run(self, arrays, owned=()):
        """Run the kernels on the caller's arrays and the arrays this object owns (a train
        step's optimizer state and runtime scalars). An array whose memory overlaps what the
        kernels write (the arena, which holds the outputs handed out earlier, or a parameter
        updated in place) is read from a copy, as if a copy had been passed."""
        written = [i for i in self.updated if i < len(arrays)]
        spans = [(self.address, self.address + ARENA_BYTES)] + [_span(arrays[i]) for i in written]
        arrays = [x.copy() if i not in written and _overlaps(x, spans) else x
                  for i, x in enumerate(arrays)]
        run(self.address, *[_address(x) for x in arrays], *[_address(x) for x in owned])

    def _owned_changed(self):
        """(The kernels read the owned arrays where they are: nothing to do.)"""

    def _read_owned(self):
        """(The kernels write the owned arrays where they are: nothing to do.)"""


def _result(view, fresh):
    if view.shape == ():
        return view.dtype.type(view[()])
    return view.copy() if fresh else view

'''

_GRAD_CLASS = '''class @CLASS@(Compiled):
    """Call it like the Python function; see the module docstring for what it returns."""

    value = @VALUE@

    def __init__(self, copy=False):
        super().__init__()
        self.copy = copy

    def __call__(self, *args):
        arrays = _leaves(NAME, args)
        with self.lock:
            self._run(arrays)
            outs = self.outputs
            value = _result(outs[0], fresh=True)
            grads, cursor = [], 1
            for tree, n in zip(GRAD_TREES, GRAD_COUNTS):  # (0-d gradients too are arrays)
                grads.append(_unflatten(tree, iter([o.copy() if self.copy else o
                                                    for o in outs[cursor:cursor + n]])))
                cursor += n
            grads = tuple(grads) if MANY_ARGNUMS else grads[0]
            return (value, grads) if self.value else grads

'''

_JIT_CLASS = '''class Jit(Compiled):
    """Call it like the Python function: returns what it returns (fresh arrays)."""

    def __call__(self, *args):
        arrays = _leaves(NAME, args)
        with self.lock:
            self._run(arrays)
            return _unflatten(OUT_TREE, iter([_result(o, fresh=True) for o in self.outputs]))

'''

_TRAIN_CLASS = '''class TrainStep(Compiled):
    """`loss = step(*args)`: forward, backward and the optimizer update in one call. Argument
    ARGNUMS (the parameters) is updated in place: each leaf must be a writeable, C-contiguous
    array of its compiled shape and dtype. The step owns the optimizer state (zeros at first)."""

    def __init__(self, lr=None):
        super().__init__()
        self.hyper = Hyperparameters()
        if lr is not None:
            self.hyper.lr = lr
        self.step_count = 0
        n = _n_leaves_before(ARGNUMS)
        params = INPUTS[n:n + _n_leaves(ARGS_TREE[1][ARGNUMS])]
        self.state = {slot: [np.zeros(shape, dtype) for _, shape, dtype in params] for slot in SLOTS}
        first = len(INPUTS) - len(SCALAR_NAMES)  # the last inputs, in their compiled dtype
        self.scalars = {name: np.zeros((), dtype)
                        for name, (_, _, dtype) in zip(SCALAR_NAMES, INPUTS[first:])}

    @property
    def lr(self):
        """The learning rate (may change between steps, e.g. for a schedule)."""
        return self.hyper.lr

    @lr.setter
    def lr(self, value):
        self.hyper.lr = value

    def __call__(self, *args):
        arrays = _leaves(NAME, args)
        n = _n_leaves_before(ARGNUMS)
        params = _params(args)
        for x, (_, given) in zip(arrays[n:], params):
            if x is not given or not x.flags.writeable:
                raise TypeError(f"{ARG_NAMES[ARGNUMS]}: a TrainStep updates the parameters in "
                                "place: each must be a writeable, C-contiguous NumPy array")
        pair = _first_overlap([x for _, x in params])
        if pair is not None:
            a, b = (params[i][0] for i in pair)
            raise ValueError(f"parameters {a} and {b} share memory: a TrainStep updates each "
                             "parameter in place with its own gradient and optimizer state, so "
                             "one update would be lost; pass the array once (and use it twice "
                             "in the loss) to tie them, or pass a copy")
        with self.lock:
            step = self.step_count + 1
            for name, value in self.hyper.scalars(step).items():
                self.scalars[name][()] = value
            self._run(arrays, [a for slot in SLOTS for a in self.state[slot]]
                      + [self.scalars[name] for name in SCALAR_NAMES])
            loss = float(self.outputs[0])
            if CHECK_FINITE and not bool(self.outputs[-1]):
                raise FloatingPointError(f"the loss ({loss}) or a gradient is not finite; "
                                         "parameters and optimizer state were left unchanged")
            self.step_count = step
            return loss

    def state_dict(self):
        """The optimizer state as plain NumPy arrays (copies): the step count and every slot,
        as after a whole step (it waits for a step running in another thread)."""
        with self.lock:
            self._read_owned()
            return {"step": self.step_count,
                    "state": {slot: [a.copy() for a in arrays]
                              for slot, arrays in self.state.items()}}

    def load_state_dict(self, state):
        """Restore what `state_dict` returned."""
        with self.lock:
            self.step_count = int(state["step"])
            for slot, arrays in state["state"].items():
                for dst, src in zip(self.state[slot], arrays):
                    np.copyto(dst, src)
            self._owned_changed()


def _n_leaves(tree):
    if tree[0] in ("*", "float"):
        return 1
    if tree[0] == "dict":
        return sum(_n_leaves(t) for t in tree[2])
    if tree[0] in ("list", "tuple"):
        return sum(_n_leaves(t) for t in tree[1])
    return 0


def _n_leaves_before(argnum):
    return sum(_n_leaves(t) for t in ARGS_TREE[1][:argnum])


def _params(args):
    """The parameters' (path, array) pairs."""
    leaves = []
    _flatten(ARGS_TREE[1][ARGNUMS], args[ARGNUMS], ARG_NAMES[ARGNUMS], leaves)
    return leaves

'''
