"""The code that runs a compiled program in a standalone module (`gradc compile`, gradc/aot.py).

Each module here is real Python (NumPy, and numba.cuda for device.py; nothing from gradc) that
gradc/aot.py copies verbatim into every generated module, from its first definition on
(`source`), after the tables it reads (named in each module's docstring): the generated module
holds exactly this code, and a test checks that it does.
"""
import ast
import inspect

from ..pyparse import parse


def source(module):
    """The text of `module` that a generated module holds: everything from its first
    statement that is not the docstring or an import, after a comment naming where it is from."""
    text = inspect.getsource(module)
    body = parse(text).body
    first = next(node for node in body if not isinstance(node, (ast.Import, ast.ImportFrom))
                 and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)))
    lines = text.splitlines(keepends=True)
    start = min([first.lineno] + [d.lineno for d in getattr(first, "decorator_list", ())]) - 1
    origin = module.__name__.replace(".", "/") + ".py"
    return f"# copied from {origin}\n" + "".join(lines[start:])
