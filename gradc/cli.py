"""The `gradc` command line.

    gradc compile MODULE.py:FUNC --example MODULE.py:ARGS_FN [--value-and-grad | --grad | --jit |
                  --train sgd|momentum|adam|adamw [--lr LR] ...] [--argnums N] -o OUT.py
    gradc explain MODULE.py:FUNC --example MODULE.py:ARGS_FN [--jit] [--argnums N] [--dot FILE]
    gradc check   MODULE.py:FUNC --example MODULE.py:ARGS_FN [--argnums N] [--verbose]

ARGS_FN is a function of no arguments returning FUNC's example arguments: a tuple, in the order
FUNC takes them (anything else is one argument), each a pytree of NumPy arrays or
`gradc.aot.Spec(shape, dtype)` placeholders. Exit status: 0 on success, 1 when `check` finds a
gradient that disagrees, 2 for an error, which prints one line (`--debug` shows the traceback).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import inspect
import os
import shlex
import sys
import warnings

from ._version import __version__


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


# ---------------------------------------------------------------------------------------------
# loading the user's code

def load_attr(spec, what):
    """`path/to/module.py:NAME` -> the object. Each file is imported once per process, under a
    name derived from its absolute path (two files with one base name do not collide)."""
    path, sep, name = spec.rpartition(":")
    if not sep or not path or not name:
        raise CliError(f"{what} must look like MODULE.py:NAME, got {spec!r}")
    if not os.path.isfile(path) and _dotted(path) and not path.endswith(".py"):  # (pkg.module:
        # NAME, importable from here; `typo.py` is a file that is not there, not module `py`)
        return _attr(_import_dotted(path), path, name)
    if not os.path.isfile(path):
        raise CliError(f"no such file: {path}")
    full = os.path.abspath(path)
    package = _package_of(full)
    if package is not None:  # (a module of a package, which may import relatively)
        return _attr(_import_dotted(package[1], root=package[0]), path, name)
    base = os.path.splitext(os.path.basename(path))[0]
    mod_name = f"gradc_user_{base}_{hashlib.sha1(full.encode()).hexdigest()[:8]}"
    module = sys.modules.get(mod_name)
    if module is None:
        spec_ = importlib.util.spec_from_file_location(mod_name, full)
        if spec_ is None or spec_.loader is None:
            raise CliError(f"cannot import {path}: not a Python file")
        module = importlib.util.module_from_spec(spec_)
        sys.modules[mod_name] = module
        directory = os.path.dirname(full)
        if directory not in sys.path:
            sys.path.insert(0, directory)  # so the module can import its neighbours
        try:
            spec_.loader.exec_module(module)
        except BaseException as e:  # the user's module failed to import (or called sys.exit)
            del sys.modules[mod_name]
            if isinstance(e, KeyboardInterrupt):
                raise
            raise CliError(f"importing {path} failed: {_one_line(e)}") from e
    return _attr(module, path, name)


def _attr(module, path, name):
    try:
        obj = getattr(module, name)
    except AttributeError:
        raise CliError(f"{path} has no function {name!r}") from None
    if not callable(obj):
        raise CliError(f"{path}:{name} is a {type(obj).__name__}, not a function")
    return obj


def _dotted(text):
    return all(part.isidentifier() for part in text.split("."))


def _package_of(full):
    """(the folder above the top package, the module's dotted name) for a file inside a
    package (folders with __init__.py), else None."""
    folder, parts = os.path.dirname(full), [os.path.splitext(os.path.basename(full))[0]]
    while os.path.isfile(os.path.join(folder, "__init__.py")):
        parts.insert(0, os.path.basename(folder))
        folder = os.path.dirname(folder)
    if len(parts) == 1 or not all(p.isidentifier() for p in parts):
        return None
    return folder, ".".join(parts)


def _import_dotted(dotted, root=None):
    """Import `dotted` (from `root`, put first on sys.path, else from the working folder)."""
    root = root or os.getcwd()
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        return importlib.import_module(dotted)
    except BaseException as e:  # the user's module failed to import (or called sys.exit)
        if isinstance(e, KeyboardInterrupt):
            raise
        raise CliError(f"importing {dotted} failed: {_one_line(e)}") from e


def example_args(spec):
    fn = load_attr(spec, "--example")
    try:
        args = fn()
    except Exception as e:
        raise CliError(f"the example function {spec} raised {_one_line(e)}") from e
    return args if isinstance(args, tuple) else (args,)


def load(ns):
    """(FUNC, example args), checked to fit each other."""
    fun = load_attr(ns.target, "FUNC")
    args = example_args(ns.example)
    try:
        sig = inspect.signature(fun)
    except (TypeError, ValueError):
        sig = None
    if sig is not None:
        try:
            sig.bind(*args)
        except TypeError as e:
            raise CliError(f"{ns.target} cannot take the {len(args)} example argument"
                           f"{'s' if len(args) != 1 else ''} from {ns.example}: {e}") from e
    return fun, args


def parse_argnums(text):
    try:
        nums = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--argnums takes an integer or a comma-separated list "
                                         f"of integers, got {text!r}") from None
    if not nums:
        raise argparse.ArgumentTypeError("--argnums is empty")
    return nums[0] if len(nums) == 1 and "," not in text else nums


def _one_line(e):
    text = f"{type(e).__name__}: {e}" if not isinstance(e, CliError) else str(e)
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())




# ---------------------------------------------------------------------------------------------
# commands

def cmd_compile(ns):
    from . import aot
    from .errors import GradcError
    train_only = (ns.lr, ns.momentum, ns.weight_decay, ns.clip_norm)
    if ns.train is None and (any(v is not None for v in train_only) or ns.check_finite):
        raise CliError("--lr, --momentum, --weight-decay, --clip-norm and --check-finite go with "
                       "--train")
    inputs = {os.path.abspath(spec.rpartition(":")[0]) for spec in (ns.target, ns.example)}
    if os.path.abspath(ns.output) in inputs:
        raise CliError(f"-o {ns.output} is the module it compiles from: write the generated "
                       "module to another file")
    if ns.train in ("adam", "adamw") and ns.momentum is not None:
        raise CliError(f"--momentum goes with --train sgd or momentum, not {ns.train}")
    mode = ns.mode or ("train" if ns.train else "value_and_grad")
    if mode == "jit" and ns.argnums != 0:
        raise CliError("--argnums goes with a gradient (--value-and-grad, --grad, --train), "
                       "not --jit: the forward takes every argument as it is")
    fun, args = load(ns)
    optimizer = None
    if mode == "train":
        try:
            optimizer = aot.make_optimizer(ns.train, ns.lr, ns.momentum, ns.weight_decay)
        except ValueError as e:
            raise CliError(str(e)) from e
    command = _command_line(ns, mode)
    try:
        aot.compile_module(fun, args, ns.output, mode=mode, argnums=ns.argnums,
                           optimizer=optimizer, clip_norm=ns.clip_norm,
                           check_finite=ns.check_finite, command=command,
                           target=ns.target_device)
    except aot.AotError as e:
        raise CliError(str(e)) from e
    except GradcError as e:
        if not getattr(e, "aux_advice", None):
            raise
        raise CliError(str(e).replace(
            e.aux_advice, "; gradc compile writes modules of a loss alone: return the loss, and "
            "write what else it computes in a --jit module of its own")) from e
    if not ns.quiet:
        print(f"gradc: wrote {ns.output}")


def _command_line(ns, mode):
    """The command for the generated header: paths as `aot.display_path`, no output path."""
    from .aot_text import display_path

    def spec(s):
        path, _, name = s.rpartition(":")
        return f"{display_path(path)}:{name}"

    parts = ["gradc", "compile", spec(ns.target), "--example", spec(ns.example)]
    if mode == "train":
        parts += ["--train", ns.train]
        for flag, v in (("--lr", ns.lr), ("--momentum", ns.momentum),
                        ("--weight-decay", ns.weight_decay), ("--clip-norm", ns.clip_norm)):
            if v is not None:
                parts += [flag, repr(v)]
        if ns.check_finite:
            parts.append("--check-finite")
    else:
        parts.append("--" + mode.replace("_", "-"))
    if ns.argnums != 0:
        parts += ["--argnums", ",".join(map(str, ns.argnums)) if isinstance(ns.argnums, tuple)
                  else str(ns.argnums)]
    if ns.target_device != "cpu":  # (the header's command regenerates this module)
        parts += ["--target", ns.target_device]
    return " ".join(shlex.quote(p) for p in parts)


def cmd_explain(ns):
    from .aot import materialize
    from .report import report
    from .function import Function
    fun, args = load(ns)
    args = tuple(materialize(args))
    f = Function(fun, "jit" if ns.jit else "value_and_grad", argnums=ns.argnums)
    if ns.target_device == "cuda":  # the CUDA launches and kernels, generated without a GPU
        f.target = "cuda"
        compiled = f.lower(*args, load=False, source=f.__name__)
    else:
        f(*args)
        compiled = f.last_compiled()
    print(report(compiled, f))
    if ns.dot:
        with open(ns.dot, "w", encoding="utf-8") as out:
            out.write(graph_dot(compiled, f"{f.mode} of {f.__name__}"))
        print(f"gradc: wrote {ns.dot}", file=sys.stderr)


def cmd_check(ns):
    from .aot_text import SourceLines
    from .check import check
    fun, args = load(ns)
    report = check(fun, *args, argnums=ns.argnums, seed=ns.seed)
    try:
        source_file = inspect.getsourcefile(fun)
    except TypeError:
        source_file = None
    lines = SourceLines([source_file])
    print(report.format(verbose=ns.verbose, source_text=lines.text))
    return 0 if report.ok else 1


# ---------------------------------------------------------------------------------------------
# Graphviz

def _dot_label(text):
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def graph_dot(compiled, title):
    """The IR after the passes as a Graphviz digraph: one box per node (op, type, source line),
    one cluster per kernel, graph inputs and outputs as ellipses."""
    fusion = compiled.fusion
    graph = fusion.graph
    kernel_of = {}
    for k in fusion.kernels:
        for n in k.nodes:
            kernel_of[id(n)] = k
    lines = ["digraph gradc {",
             f'  label="{_dot_label(title)}"; labelloc=t; rankdir=TB;',
             '  node [shape=box, fontname="monospace", fontsize=10];',
             '  edge [fontname="monospace", fontsize=9];']
    for i, v in enumerate(graph.inputs):
        label = _dot_label(f"{v.name or f'input {i}'}\n{v.type_str}")
        lines.append(f'  v{v.id} [shape=ellipse, label="{label}"];')

    def node_line(n, indent):
        label = f"%{n.output.id} = {n.op}\n{n.output.type_str}\n{n.source}"
        style = "" if id(n) in kernel_of else ", style=dashed"
        return f'{indent}v{n.output.id} [label="{_dot_label(label)}"{style}];'

    for k in fusion.kernels:
        shape = "x".join(str(d) for d in k.shape) or "scalar"
        lines.append(f"  subgraph cluster_{k.name} {{")
        label = _dot_label(f"{k.name}: {k.kind} over [{shape}]")
        lines.append(f'    label="{label}"; style=rounded; color=blue;')
        for n in k.nodes:
            lines.append(node_line(n, "    "))
        lines.append("  }")
    for n in graph.nodes:  # views and constants: no kernel of their own
        if id(n) not in kernel_of:
            lines.append(node_line(n, "  "))
    for n in graph.nodes:
        for x in n.inputs:
            lines.append(f"  v{x.id} -> v{n.output.id};")
    for i, v in enumerate(graph.outputs):
        lines.append(f'  out{i} [shape=ellipse, style=bold, label="output {i}\\n{v.type_str}"];')
        lines.append(f"  v{v.id} -> out{i};")
    lines.append("}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# the parser

def _target_option(p):
    p.add_argument("--target", dest="target_device", default="cpu", choices=("cpu", "cuda"),
                   help="code generation target (default cpu; cuda needs no GPU to generate)")


def _common(p, argnums_help="the argument(s) to differentiate: N or N,M (default 0)"):
    p.add_argument("target", metavar="MODULE.py:FUNC", help="the function to compile")
    p.add_argument("--example", required=True, metavar="MODULE.py:ARGS_FN",
                   help="a function of no arguments returning example arguments for FUNC: a "
                        "tuple of pytrees of arrays or gradc.aot.Spec(shape, dtype)")
    p.add_argument("--argnums", type=parse_argnums, default=0, metavar="N", help=argnums_help)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show the traceback of an error")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="gradc", description="gradc: a static-graph gradient compiler for NumPy models.",
        epilog="Run `gradc COMMAND --help` for a command's options.")
    parser.add_argument("--version", action="version", version=f"gradc {__version__}")
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "compile", help="write a standalone module (NumPy + Numba only) for one signature",
        description="Compile FUNC for the example arguments' signature into ONE Python module "
                    "that imports only NumPy and Numba: its kernels, driver, buffer plan and a "
                    "callable named after FUNC, which returns what gradc.value_and_grad (or "
                    "grad, jit, train_step) would, bit for bit. The output is reproducible.")
    _common(p, "the argument(s) to differentiate (N or N,M; one N with --train; default 0)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--value-and-grad", dest="mode", action="store_const",
                      const="value_and_grad", help="(value, gradients): the default")
    what.add_argument("--grad", dest="mode", action="store_const", const="grad",
                      help="the gradients alone")
    what.add_argument("--jit", dest="mode", action="store_const", const="jit",
                      help="the forward alone")
    what.add_argument("--train", choices=("sgd", "momentum", "adam", "adamw"), type=str.lower,
                      help="a training step with this optimizer (momentum: SGD with momentum "
                           "0.9): forward, backward and update in one call")
    p.add_argument("--lr", type=float, help="learning rate (default: 0.01 for sgd and momentum, "
                                            "1e-3 for adam and adamw); settable on the step")
    p.add_argument("--momentum", type=float, help="SGD momentum (with --train sgd|momentum)")
    p.add_argument("--weight-decay", type=float, help="weight decay (with --train)")
    p.add_argument("--clip-norm", type=float, help="clip the global gradient norm (with --train)")
    p.add_argument("--check-finite", action="store_true",
                   help="a non-finite loss or gradient leaves everything unchanged and raises")
    _target_option(p)
    p.add_argument("-o", "--output", required=True, metavar="OUT.py", help="the module to write")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(run=cmd_compile)

    p = sub.add_parser(
        "explain", help="print how a function is compiled: IR, passes, kernels, memory",
        description="Compile FUNC (value and gradient, or --jit) for the example arguments and "
                    "print the IR before and after the passes, the kernels, the memory plan and "
                    "the generated driver. --dot also writes the IR as a Graphviz graph with "
                    "one cluster per kernel.")
    _common(p, "the argument(s) to differentiate: N or N,M (default 0)")
    p.add_argument("--jit", action="store_true", help="the forward alone, no gradient")
    p.add_argument("--dot", metavar="FILE", help="write the IR as Graphviz DOT (kernels as "
                                                 "clusters) to FILE")
    _target_option(p)
    p.set_defaults(run=cmd_explain)

    p = sub.add_parser(
        "check", help="check every VJP on the gradient path against finite differences",
        description="Trace FUNC on the example arguments and check the VJP of every node "
                    "between the differentiated arguments and the output against central finite "
                    "differences in float64 (reference interpreter, one node at a time). Reports "
                    "the first op whose gradient disagrees, with its source line. Exit status 0 "
                    "when all agree, 1 otherwise.")
    _common(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the random directions, "
                                                       "cotangents and Spec values (default 0)")
    p.add_argument("-v", "--verbose", action="store_true", help="one line per checked node")
    p.set_defaults(run=cmd_check)
    return parser


def _user_line(tb):
    """`file:line: ` of the innermost frame outside gradc and the libraries (the user's code
    that raised), or ""."""
    import os
    import traceback
    package = os.path.dirname(os.path.abspath(__file__))
    for frame in reversed(traceback.extract_tb(tb)):
        path = os.path.abspath(frame.filename)
        if not path.startswith(package) and "site-packages" not in path and \
                not path.startswith(os.path.dirname(os.__file__)):
            return f"{os.path.basename(path)}:{frame.lineno}: "
    return ""


@contextlib.contextmanager
def _gradc_warnings_as_notes():
    """gradc's own warnings print as `gradc: warning: ...` lines: their messages name the
    user's file and line, where Python's would point at this command's own script."""
    from .errors import CacheWarning, ConstantArrayWarning, RecompileWarning
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, (CacheWarning, ConstantArrayWarning, RecompileWarning)):
            print(f"gradc: warning: {category.__name__}: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


def main(argv=None):
    parser = build_parser()
    ns = parser.parse_args(argv)
    debug = getattr(ns, "debug", False)
    try:
        with _gradc_warnings_as_notes():
            status = ns.run(ns)
    except CliError as e:
        if debug:
            raise
        print(f"gradc: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # GradcError names the user's line; anything else is reported too
        if debug:
            raise
        from .errors import GradcError
        what = _one_line(e) if not isinstance(e, GradcError) else \
            f"{type(e).__name__}: " + "; ".join(str(e).splitlines())
        where = "" if isinstance(e, GradcError) else _user_line(e.__traceback__)
        print(f"gradc: error: {where}{what} (--debug shows the traceback)", file=sys.stderr)
        return 2
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
