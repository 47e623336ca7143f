"""Pieces of the text of a generated module (gradc/aot.py, gradc/aot_cuda.py): literals and
pytree descriptions written as Python, the constants table, comments and docstrings made safe,
paths and source lines for comments."""
from __future__ import annotations

import ast
import base64
import math
import hashlib
import inspect
import linecache
import os
import sys
import textwrap

import numpy as np

from . import pytree
from .pyparse import parse


class AotError(ValueError):
    """Something the ahead-of-time compiler cannot write out (a message for the user)."""


def strip_docstring(source):
    """Module source without its docstring (a comment keeps its first line)."""
    tree = parse(source)
    body = tree.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None),
                                                              ast.Constant):
        lines = source.splitlines()
        first = " ".join(body[0].value.value.strip().split("\n\n")[0].split())
        comment = textwrap.fill(first, width=98, initial_indent="# ", subsequent_indent="# ")
        return comment + "\n" + "\n".join(lines[body[0].end_lineno:]).strip("\n") + "\n"
    return source


# rt.py's import of gemm_rt.py, whose text a CPU module holds above rt.py's
GEMM_IMPORT = "from .gemm_rt import GEMM_SYMBOLS, usable"


def helper_sources():
    """The source of the runtime helpers a CPU module holds: gradc/codegen/vecmath.py,
    gemm_rt.py and rt.py, without their docstrings (and rt.py without its import of gemm_rt)."""
    from .codegen import gemm_rt, rt, vecmath
    rt_source = strip_docstring(inspect.getsource(rt))
    import_line = next(line for line in rt_source.splitlines() if line.startswith(GEMM_IMPORT))
    return (strip_docstring(inspect.getsource(vecmath)),
            strip_docstring(inspect.getsource(gemm_rt)),
            rt_source.replace(import_line + "\n", "", 1))


def special_math_source():
    """gradc/codegen/special_math.py without its docstring: the special functions' scalar code,
    which kernels of both targets call (sp_erfinv, cu_erfinv)."""
    from .codegen import special_math
    return strip_docstring(inspect.getsource(special_math))


def literal(value, what):
    """`repr(value)` when it reads back as an equal Python literal (an infinite or NaN float as
    float('inf')...); else an AotError."""
    if type(value) is float and not math.isfinite(value):
        return literal_text(value)
    text = repr(value)
    try:
        back = ast.literal_eval(parse(text, mode="eval"))
    except (ValueError, SyntaxError):
        back = _NOTHING
    if back is _NOTHING or back != value or type(back) is not type(value):
        raise AotError(f"{what} {text} cannot be written into a generated module: static "
                       "(non-array) arguments must be Python literals (numbers, strings, None)")
    return text


_NOTHING = object()


def literal_text(value):
    """Python source for a pytree description or option of literals (repr's, but for infinite
    and NaN floats, which repr writes as names no module defines)."""
    if type(value) is float and not math.isfinite(value):
        if value != value:
            return "float('nan')" if math.copysign(1.0, value) > 0 else "-float('nan')"
        return "float('inf')" if value > 0 else "-float('inf')"
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        items = ", ".join(literal_text(v) for v in value)
        return f"({items},)" if len(value) == 1 else f"({items})"
    if type(value) is list:
        return "[" + ", ".join(literal_text(v) for v in value) + "]"
    if type(value) is dict:
        return "{" + ", ".join(f"{literal_text(k)}: {literal_text(v)}"
                               for k, v in value.items()) + "}"
    return repr(value)


def portable_tree(treedef, what):
    """gradc's pytree description, checked to be writable as a Python literal."""
    if treedef in (pytree.LEAF, pytree.FLOAT):
        return treedef
    kind = treedef[0]
    if kind == "dict":
        mapping = getattr(treedef[1], "mapping", dict)
        if mapping is not dict:
            raise AotError(f"{what}: a {mapping.__name__} (a subclass of dict) cannot be "
                           "written into a generated module; use a dict")
        for k in treedef[1]:
            literal(k, f"{what}: dict key")
        return ("dict", treedef[1], tuple(portable_tree(c, what) for c in treedef[2]))
    if kind == "namedtuple":
        raise AotError(f"{what}: a namedtuple ({treedef[1].__name__}) cannot be written into a "
                       "generated module; use a dict, list or tuple")
    if kind == "node":
        raise AotError(f"{what}: a {treedef[1].__name__} cannot be passed to a generated module "
                       "(it advances inside gradc's runtime); draw the random numbers outside "
                       "and pass them in as an array argument")
    if kind in ("list", "tuple"):
        return (kind, tuple(portable_tree(c, what) for c in treedef[1]))
    literal(treedef[1], f"{what}: static value")
    return treedef[:2]  # ("static", value): the generated _same_static compares exactly


def describe_tree(tree, leaves):
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


def type_name(shape, dtype):
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


class SourceLines:
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


def b64_lines(data, indent, width=88):
    text = base64.b64encode(data).decode("ascii")
    step = width - len(indent) - 2
    return [f'{indent}"{text[i:i + step]}"' for i in range(0, len(text), step)] or [f'{indent}""']


def docstring_safe(text):
    return text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')


def comment_safe(text):
    return " ".join(text.split())


def top_level_names(text):
    """Every name bound at the top level of a module (with repeats): by def, class, import or
    assignment, a tuple's too (`f32, f64 = ...`), in if/try/with/for blocks as well (a name
    the generated module binds so was missed: a callable named `f64` then replaced the type
    its kernels call)."""
    names, pending = [], list(parse(text).body)
    while pending:
        node = pending.pop(0)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names += [(a.asname or a.name).split(".")[0] for a in node.names]
        else:
            targets = (node.targets if isinstance(node, ast.Assign) else
                       [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign, ast.For))
                       else [item.optional_vars for item in node.items
                             if item.optional_vars is not None]
                       if isinstance(node, ast.With) else [])
            names += [n.id for t in targets for n in ast.walk(t)
                      if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)]
            for field in ("body", "orelse", "finalbody"):  # (blocks, not functions' bodies)
                pending += getattr(node, field, [])
            pending += [h for handler in getattr(node, "handlers", []) for h in handler.body]
    return names


def read_names(text):
    """Every name a module's code reads (a global or builtin it uses, anywhere)."""
    return {node.id for node in ast.walk(parse(text))
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}


def banner(text):
    return "# " + "=" * 96 + "\n# " + text + "\n# " + "=" * 96


def parameter_names(fun, n):
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


def compiled_defaults(fun, n):
    """{name: default} of `fun`'s parameters after its first n (those the example did not
    pass, so the module was compiled with their defaults) whose default is a Python literal:
    a call may name one with that value."""
    try:
        params = list(inspect.signature(fun).parameters.values())
    except (TypeError, ValueError):
        return {}
    later = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)][n:]
    plain = (bool, int, float, str, type(None))
    return {p.name: p.default for p in later
            if p.default is not p.empty and type(p.default) in plain}


def constants_table(constants):
    """The CONSTANTS table's rows: (byte offset, little-endian dtype, shape, base64 data) of
    each (offset, array) in `constants`, by offset."""
    out = []
    for offset, array in sorted(constants, key=lambda c: c[0]):
        array = np.ascontiguousarray(array)
        dt = array.dtype.newbyteorder("<")
        out.append(f"    ({offset}, {dt.str!r}, {tuple(array.shape)!r}, (")
        out += b64_lines(array.astype(dt).tobytes(), "        ")
        out.append("    )),")
    return out
