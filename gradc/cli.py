"""The `gradc` command line.

    gradc explain MODULE.py:FUNC --example MODULE.py:ARGS_FN [--jit] [--argnums N]

ARGS_FN returns the example arguments (a tuple, in the order FUNC takes them). Errors print one
line and exit with status 2; `--debug` shows the traceback.
"""
import argparse
import importlib.util
import os
import sys

from . import __version__


class CliError(Exception):
    pass


def load_attr(spec, what):
    path, sep, name = spec.rpartition(":")
    if not sep or not path or not name:
        raise CliError(f"{what} must look like MODULE.py:NAME, got {spec!r}")
    if not os.path.isfile(path):
        raise CliError(f"no such file: {path}")
    mod_name = "gradc_user_" + os.path.splitext(os.path.basename(path))[0]
    module = sys.modules.get(mod_name)
    if module is None:
        spec_ = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(spec_)
        sys.modules[mod_name] = module
        sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
        try:
            spec_.loader.exec_module(module)
        except Exception as e:  # the user's module failed to import
            raise CliError(f"importing {path} failed: {type(e).__name__}: {e}") from e
    if not hasattr(module, name):
        raise CliError(f"{path} has no function {name!r}")
    return getattr(module, name)


def example_args(spec):
    fn = load_attr(spec, "--example")
    try:
        args = fn()
    except Exception as e:
        raise CliError(f"the example function {spec} raised {type(e).__name__}: {e}") from e
    return args if isinstance(args, tuple) else (args,)


def cmd_explain(ns):
    from .report import explain
    fun = load_attr(ns.target, "FUNC")
    args = example_args(ns.example)
    print(explain(fun, *args, argnums=ns.argnums, mode="jit" if ns.jit else "value_and_grad"))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="gradc", description="gradc: a gradient compiler for NumPy models")
    parser.add_argument("--version", action="version", version=f"gradc {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("explain", help="print how a function is compiled: IR, passes, kernels, memory")
    p.add_argument("target", metavar="MODULE.py:FUNC")
    p.add_argument("--example", required=True, metavar="MODULE.py:ARGS_FN",
                   help="a function returning example arguments for FUNC")
    p.add_argument("--argnums", type=int, default=0, help="the argument to differentiate")
    p.add_argument("--jit", action="store_true", help="the forward alone, no gradient")
    p.set_defaults(run=cmd_explain)
    ns = parser.parse_args(argv)
    try:
        ns.run(ns)
    except Exception as e:
        if ns.debug:
            raise
        print(f"gradc: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
