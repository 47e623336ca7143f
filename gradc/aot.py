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

import builtins
import inspect
import os
import textwrap
import threading

import numpy as np

from . import pytree, standalone
from .codegen import gemm_rt
from ._version import __version__
from .aot_text import (AotError, SourceLines, banner, comment_safe, compiled_defaults,  # noqa: F401
                       constants_table, describe_tree, display_path, docstring_safe, file_sha256,
                       helper_sources, literal, literal_text, parameter_names, portable_tree,
                       read_names, special_math_source, top_level_names, type_name)
from .passes import products
from .trace import _definition, argument_names
from .standalone import callables, calls, host, numba_cache, train_step

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
        if any(d < 0 for d in self.shape) or any(
                not isinstance(d, (int, np.integer)) or isinstance(d, bool) for d in shape):
            raise AotError(f"Spec({tuple(shape)!r}): a shape is whole numbers >= 0 (the "
                           "example's sizes; a -1 is not inferred here)")
        self.dtype = np.dtype(dtype)

    def __repr__(self):
        return f"Spec({self.shape}, {self.dtype.name})"

    def __eq__(self, other):
        return isinstance(other, Spec) and (self.shape, self.dtype) == (other.shape, other.dtype)

    def __hash__(self):
        return hash((self.shape, self.dtype.str))

    def materialize(self, rng):
        if self.dtype in (np.float32, np.float64):  # (drawn in its dtype: a float64 copy of
            return rng.standard_normal(self.shape, dtype=self.dtype)  # a big table cost 2x)
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
        with products.portable():  # (the same module whichever machine writes it)
            return step.lower(*args, load=False, source=src, capture=False), step
    f = Function(fun, mode, argnums=argnums)
    f.target = target
    with products.portable():
        return f.lower(*args, load=False, source=src, capture=False,
                       fresh_outputs=False), f


# ---------------------------------------------------------------------------------------------
# pieces of the generated module

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
        generator = Generator
    g = generator(compiled, owner, fun, name, args, mode, argnums, optimizer, clip_norm,
                  check_finite, command, source_file, module_name)
    return g.module()


def compile_module(fun, args, out_path, **kwargs):
    """Write the module for `fun` on `args` (see `generate`) to `out_path`; returns the path.
    Written to a temporary name and renamed, so a reader never sees half a file."""
    if os.path.isdir(out_path):  # (checked before the compile: os.replace then failed, raw,
        raise AotError(  # and left the .tmp file beside the folder)
            f"the output path {out_path!r} is a directory: name the module's file "
            f"({os.path.join(out_path, 'step.py')!r})")
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
    # (a name of its own: writers of one path at once, threads or ranks of a job, each
    # replace it whole)
    tmp = f"{out_path}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(source)
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):  # (a failed replace leaves no stray file)
            os.remove(tmp)
    return out_path


class Generator:
    """The text of the standalone module of one compiled signature for target="cpu"
    (gradc/aot_cuda.py's CudaGenerator: target="cuda"): `module()`."""

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
        kind, trees = treedef[1][0]  # (("tuple", one tree per argument), named in messages)
        names = argument_names(fun)
        self.args_tree = (kind, tuple(portable_tree(
            tree, f"argument {names[i] if i < len(names) else i} of "
                  f"{getattr(fun, '__name__', 'the function')} (defined at {_definition(fun)})")
            for i, tree in enumerate(trees)))
        self.lines = SourceLines([source_file])

    # --- text pieces -------------------------------------------------------------------------
    def _header(self):
        what = {"value_and_grad": "value_and_grad", "grad": "grad", "jit": "jit (forward only)",
                "train": "train_step"}[self.mode]
        out = ["# Generated by gradc " + __version__ + " (ahead-of-time compiler). Do not edit: "
               "regenerate it."]
        if self.command:
            out.append(f"#   {comment_safe(self.command)}")
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
                        f"{type_name(v.shape, v.dtype)}")
        return rows

    def _docstring(self):
        n_args = len(self.args)
        param_names = parameter_names(self.fun, n_args)
        sig = ", ".join(param_names)
        leaves = [type_name(v.shape, v.dtype) for v in self.graph.inputs]
        n_user = pytree.leaf_count(self.args_tree)
        arg_lines, cursor = [], 0
        for pname, t in zip(param_names, self.args_tree[1]):
            n = pytree.leaf_count(t)
            arg_lines.append(f"        {pname} = {describe_tree(t, leaves[cursor:cursor + n])}")
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
              f"    `{self.name}` takes the arguments the Python function takes (by position or "
              "name), as pytrees (dicts,",
              "    lists, tuples) of NumPy arrays of exactly these shapes and dtypes; other "
              "leaves are",
              "    static and must equal the values it was compiled with:", ""]
        d += arg_lines
        d += ["", "    Flat argument order (the pytree leaves, dict keys in the compiled "
              "example's order), as the kernels take them:", ""]
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
            return (describe_tree(out_tree, [type_name(v.shape, v.dtype) for v in outs])
                    + " (fresh arrays; 0-d results as NumPy scalars).")
        out_tree, grad_trees, many, counts, _ = self.c.out_kind
        grads, cursor = [], 1
        for tree, n in zip(grad_trees, counts):
            grads.append(describe_tree(tree, [type_name(v.shape, v.dtype) for v in outs[cursor:cursor + n]]))
            cursor += n
        g = "(" + ", ".join(grads) + ")" if many else grads[0]
        text = (f"grads = {g}" if self.mode == "grad" else
                f"(value, grads): value a {outs[0].dtype.name} NumPy scalar, grads = {g}")
        return (text + ".\n    The gradient arrays are views of this callable's fixed buffers: "
                "the next call overwrites\n    them (copy them to keep them), as "
                "gradc.value_and_grad(copy=False) does; `ValueAndGrad(copy=True)`\n    "
                "(`Grad(copy=True)`) makes a callable that returns fresh arrays.")

    def _special_functions(self):
        """gradc/codegen/special_math.py, where a kernel calls one of its functions."""
        from .codegen.special_math import FUNCTIONS
        calls = {f"sp_{name}(" for name in FUNCTIONS}
        if not any(call in ks.source for _, ks, _ in self.program.calls for call in calls):
            return []
        return [banner("special functions, copied from gradc/codegen/special_math.py"),
                special_math_source().rstrip("\n"), "", ""]

    def _kernels(self):
        seen, out = {}, []
        for k, ks, _ in self.program.calls:
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
                out.append(f"    #   {src}" + (f"  {comment_safe(text)}" if text else ""))
            if ks.chunks is None:
                out.append(f"    {ks.name}({', '.join(ks.call_args)})")
                continue
            out += ["    " + line for line in ks.chunks.loop(ks.name, ks.call_args)]
            for fold in ks.combines:
                out.append(f"    {fold.name}({', '.join(fold.call_args)})  # the partial results, "
                           "in chunk order")
        if not self.c.fusion.kernels:
            out.append("    pass")
        return out

    def _plan(self):
        plan, graph = self.plan, self.graph
        out = ["# The buffer plan: every intermediate value has a fixed offset in one arena.",
               f"ARENA_BYTES = {plan.arena_bytes}",
               "# (offset, dtype, shape, data): constants copied into the arena once",
               "CONSTANTS = ["]
        out += constants_table((plan.offsets[vid], a) for vid, a in plan.constants.items())
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
        return out + ["]", f"ARGS_TREE = {literal_text(self.args_tree)}",
                      f"NAME = {self.name!r}",
                      f"N_ARGS = {len(self.args)}",
                      f"ARG_NAMES = {tuple(parameter_names(self.fun, len(self.args)))!r}",
                      "DEFAULTS = " + literal_text(compiled_defaults(self.fun, len(self.args)))]

    def _callable(self):
        mode = self.mode
        if mode == "train":
            return self._train_callable()
        if mode == "jit":
            out_tree = portable_tree(self.c.out_kind, "a returned value")
            return [f"OUT_TREE = {literal_text(out_tree)}", "", "",
                    *self._standalone(callables),
                    f"{self.name} = Jit()", ""]
        out_tree, grad_trees, many, counts, _ = self.c.out_kind
        trees = tuple(portable_tree(t, "a differentiated argument") for t in grad_trees)
        cls = "ValueAndGrad" if mode == "value_and_grad" else "Grad"
        return [f"GRAD_TREES = {literal_text(trees)}", f"GRAD_COUNTS = {tuple(counts)!r}",
                f"MANY_ARGNUMS = {bool(many)!r}", "", "", *self._standalone(callables),
                f"{self.name} = {cls}()", ""]

    def _train_callable(self):
        opt = self.optimizer
        hyper = {}
        for k, v in sorted(vars(opt).items()):
            if isinstance(v, (np.floating, np.integer)):
                v = v.item()
            literal(v, f"hyperparameter {k}")
            hyper[k] = v
        scalars_fn = type(opt).scalars
        origin = f"{scalars_fn.__module__}.{scalars_fn.__qualname__}"
        return ["OPTIMIZER = " + repr(repr(opt)),
                f"ARGNUMS = {self.argnums!r}",
                f"SLOTS = {tuple(opt.slots)!r}",
                f"SCALAR_NAMES = {tuple(opt.scalar_names)!r}",
                f"CHECK_FINITE = {bool(self.check_finite)!r}",
                f"HYPERPARAMETERS = {literal_text(hyper)}",
                "", "",
                f"# copied from {origin}: the runtime scalars of update number `step`",
                textwrap.dedent(inspect.getsource(scalars_fn)).rstrip("\n"), "", "",
                *self._standalone(train_step),
                f"{self.name} = TrainStep()", ""]

    def module(self):
        vec_src, gemm_src, rt_src = helper_sources()
        importable = self.module_name and self.module_name.isidentifier()  # (-o o-bad-name.py:
        # `from o-bad-name import f` is no Python)
        doc = "\n".join(self._docstring()).replace(
            "{module}", self.module_name if importable else "<this module>")
        parts = [self._header(),
                 '"""' + docstring_safe(doc) + '\n"""',
                 "import base64",
                 "import math",
                 "import os",
                 "import sys",
                 "import threading",
                 "import weakref",
                 "",
                 "import numpy as np",
                 "",
                 f"CALLING_CONVENTION = {CALLING_CONVENTION}",
                 f"GRADC_VERSION = {__version__!r}",
                 "",
                 "",
                 banner("runtime helpers, copied from gradc/codegen/vecmath.py: SIMD "
                         "exp/log/tanh through glibc's libmvec"),
                 vec_src.rstrip("\n"),
                 "",
                 "",
                 banner("runtime helpers, copied from gradc/codegen/gemm_rt.py: the matrix "
                        "product on AVX-512 CPUs"),
                 gemm_src.rstrip("\n"),
                 "",
                 "",
                 banner("runtime helpers, copied from gradc/codegen/rt.py"),
                 rt_src.rstrip("\n"),
                 "",
                 "",
                 *self._special_functions(),
                 banner("kernels"),
                 "# As in gradc: the libmvec hook (where the machine has libmvec; "
                 "GRADC_VECMATH=0 turns it off)",
                 "# rewrites what Numba compiles for these kernels. Numba's disk cache is "
                 "used only with the",
                 "# hook on, NumPy's OpenBLAS bound (BLAS) and the products this CPU takes "
                 "(no GRADC_GEMM set),",
                 "# so machine code that calls libmvec, OpenBLAS or gradc's products never "
                 "loads into a process",
                 "# without them (Numba keys its cache on the source and the CPU), only when",
                 "# this module is in sys.modules (Numba cannot reload cached kernels of a "
                 "module that is not), and",
                 "# only where Numba can write a cache (imported from a read-only folder by "
                 "a user with no writable",
                 "# home, the kernels compile on every import).",
                 "",
                 "",
                 *self._standalone(numba_cache),
                 "_VECMATH = enable()",
                 *self._products(),
                 "JIT_OPTIONS = dict(JIT_OPTIONS, cache=_VECMATH and BLAS == \"openblas\"\n"
                 "                   and \"GRADC_GEMM\" not in os.environ\n"
                 "                   and sys.modules.get(__name__) is not None and "
                 "_numba_can_cache())",
                 '_state["active"] = True  # the kernels below compile (eagerly: explicit '
                 'signatures) with the hook',
                 "",
                 "",
                 *self._kernels(),
                 '_state["active"] = False',
                 "",
                 "",
                 banner("driver: the kernels in order (comments: the op, the user's source "
                         "line)"),
                 *self._driver(),
                 "",
                 "",
                 banner("buffer plan and calling convention"),
                 *self._plan(),
                 "",
                 "",
                 *self._calling()]
        return self._checked("\n".join(parts).rstrip("\n") + "\n")

    # the code that runs the program: gradc/standalone/, copied verbatim
    executable = host

    def _products(self):
        """The lines that bind gradc's own products the kernels call (gemm_rt.py), on a CPU
        with AVX-512: compiled for it as the module is imported (~45 ms a precision)."""
        called = gemm_rt.precisions_called(
            "\n".join(ks.source for _, ks, _ in self.program.calls))
        if not called:
            return []
        return [f"if GEMM == \"avx512\":  # (gradc's own products, compiled for this CPU)",
                f"    bind_products(uncached_engine({called!r}), {called!r})"]

    def _standalone(self, module):
        """The lines of a gradc/standalone module's code (see gradc/standalone/__init__.py)."""
        return [standalone.source(module).rstrip("\n"), "", ""]

    def _calling(self):
        """The module's runtime (argument checks, the executable) and its callable."""
        return [*self._standalone(calls), *self._standalone(self.executable), *self._callable()]

    def _checked(self, text):
        """The module's text, once sure the callable's name is its own."""
        shadowed = hasattr(builtins, self.name) and self.name in read_names(text)
        if top_level_names(text).count(self.name) != 1 or shadowed:
            raise AotError(f"cannot name the generated callable {self.name!r}: the module "
                           "itself uses that name (its own, or a builtin its code calls: "
                           "`next`, `len`, `sum`); rename the function")
        return text
