"""The program cache: what the passes, fusion, the memory plan and code generation made of a
traced graph, kept on disk, so that a signature compiled in an earlier process skips them.

The key is a digest of the graph as traced and differentiated (`graph_key`): every node's op,
attributes (constant arrays by their bytes), inputs, type and source line, the graph's inputs
(types and names), outputs, in-place aliases and weakly typed values, the title the driver is
generated with, the target, gradc's cache tag (gradc, Numba, NumPy and Python versions...), a
digest of gradc's own source files and the settings that change what the passes make. A graph
with an attribute of a type the digest does not know is not cached.

The entry (`KEY.json` in ROOT/TAG/programs) holds the generated program (the kernel modules'
names and sources, the driver's source and its encoded calls, the input
names) and the executable's `Layout` (arena size, output offsets, constants...), as JSON. It is
trusted as the generated modules' directory is (gradc/codegen/modules.py): the directory must be
the user's and writable by no one else, files are written to a temporary name and renamed, and
the first line holds the sha256 of the rest, so that a damaged, truncated or foreign entry
(another key's) is ignored and written again. Nothing is unpickled.

A Compiled made from an entry has no fusion, plan or stages at hand: `gradc.explain` and
`Compiled.fusion` get them by lowering the traced graph again, when first asked for.
"""
from __future__ import annotations

import base64
import hashlib
import json
import math
import os

import numpy as np

from .codegen import modules
from .executable import Layout
from .ops.fn import ConstArray
from .passes import memory
from .passes.fuse import parallel_min_iterations
from .passes.products import transposed_lhs_choice

FORMAT = "gradc-program 6"  # (5: an index check's low bound; 6: outputs into new arrays)
# an entry holds the constants' bytes (base64): graphs with more are lowered every time
MAX_CONSTANT_BYTES = 8 << 20

_dirs = {}  # module directory -> its programs directory (None: not usable)
_code = []  # the digest of gradc's source files, once computed


class Uncacheable(Exception):
    """The graph has something the key cannot spell (an attribute of an unknown type)."""


# --- the key ---------------------------------------------------------------------------------

def graph_key(graph, title, target, fresh_outputs=False):
    """The hex digest that names `graph`'s lowered program, or None: not cacheable, or no
    directory to cache in."""
    if programs_dir() is None:
        return None
    return graph_digest(graph, title, target, fresh_outputs)


def graph_digest(graph, title, target, fresh_outputs=False):
    """The hex digest of what `graph` lowers to (graph_key's, cache or not), or None where the
    graph has an attribute the digest does not know. `fresh_outputs`: lowered to write its
    outputs into new arrays (compile.lower's)."""
    try:
        text = graph_text(graph)
    except Uncacheable:
        return None
    h = hashlib.sha256()
    for part in (FORMAT, modules.cache_tag(), _code_digest(), target,
                 f"fresh outputs from {memory.FRESH_MIN_BYTES} bytes" if fresh_outputs
                 else "arena outputs", title,
                 repr(parallel_min_iterations()), repr(transposed_lhs_choice()), text):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


def graph_text(graph):
    """The canonical text of `graph`: a line per input, per node and for the outputs."""
    lines = [f"in %{v.id} {v.dtype.str}{v.shape} {v.name!r}" for v in graph.inputs]
    for n in graph.nodes:
        attrs = ",".join(f"{k}={_attr(v)}" for k, v in n.attrs)
        out = n.output
        lines.append(f"%{out.id} {out.dtype.str}{out.shape} {out.name!r} = {n.op}"
                     f"({','.join(str(v.id) for v in n.inputs)}) {attrs} @{n.source}")
    lines.append(f"out {[v.id for v in graph.outputs]} aliases {sorted(graph.aliases.items())} "
                 f"weak {sorted(graph.weak)}")
    return "\n".join(lines)


def _attr(value):
    """An attribute's text: one text per value (0.0 and -0.0 apart, NaN and -NaN, types
    apart)."""
    t = type(value)
    if t is float and value != value:  # (repr drops a NaN's sign, which np.copysign reads)
        return f"float:{'-' if math.copysign(1.0, value) < 0 else ''}nan"
    if t in (int, bool, str, float, type(None)):
        return f"{t.__name__}:{value!r}"
    if t is tuple:
        return "(" + ",".join(_attr(v) for v in value) + ")"
    if t is ConstArray:
        a = value.array
        return f"array:{a.dtype.str}{a.shape}:{hashlib.sha256(a.tobytes()).hexdigest()}"
    if isinstance(value, np.dtype):
        return f"dtype:{value.str}"
    if isinstance(value, np.generic):
        return f"{value.dtype.str}:{value.item()!r}"
    raise Uncacheable(t.__name__)


def _code_digest():
    """sha256 of gradc's source files: an edited gradc never uses programs made by another."""
    if not _code:
        root = os.path.dirname(os.path.abspath(__file__))
        h = hashlib.sha256()
        for folder, _, files in sorted(os.walk(root)):
            for name in sorted(files):
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    h.update(os.path.relpath(path, root).encode() + b"\0")
                    with open(path, "rb") as f:
                        h.update(f.read())
        _code.append(h.hexdigest())
    return _code[0]


# --- the directory ---------------------------------------------------------------------------

def programs_dir():
    """ROOT/TAG/programs beside the generated modules (made 0700), or None: no module directory
    (modules compile in memory), or one this user does not own alone."""
    folder = modules.module_dir()
    if folder not in _dirs:
        path = None
        if folder is not None:
            path = os.path.join(os.path.dirname(folder), "programs")
            try:
                try:
                    os.mkdir(path, 0o700)
                except FileExistsError:
                    pass
                if modules.distrust(path, may_be_sticky=False):
                    path = None
            except OSError:
                path = None
        _dirs[folder] = path
    return _dirs[folder]


# --- entries ---------------------------------------------------------------------------------

class SavedProgram:
    """A CPU Program as the cache keeps it: what gradc.compile.load_driver loads."""

    def __init__(self, kernel_modules, driver_source, input_names, calls, output_names=()):
        self.kernel_modules, self.driver_source = kernel_modules, driver_source
        self.input_names, self._calls = input_names, calls
        self.output_names = output_names  # (outputs written into new arrays: plan.fresh)

    def encoded_calls(self):
        return self._calls


def saved(program):
    """What the cache keeps of a Program (kernel modules, driver, input and output names,
    calls)."""
    return SavedProgram(program.kernel_modules, program.driver_source, program.input_names,
                        program.encoded_calls(), program.output_names)


def load(key):
    """(SavedProgram, Layout) of entry `key`, or None: none, or one that fails its checks."""
    folder = programs_dir()
    if key is None or folder is None:
        return None
    try:
        with open(os.path.join(folder, key + ".json"), "rb") as f:
            data = f.read()
    except OSError:
        return None
    head, _, body = data.partition(b"\n")
    if head.decode("ascii", "replace") != f"{FORMAT} {hashlib.sha256(body).hexdigest()}":
        return None  # damaged, or written by another format
    try:
        entry = json.loads(body)
        if entry["key"] != key:
            return None  # a foreign entry: another graph's
        return _program(entry["program"]), _layout(entry["layout"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def store(key, program, layout):
    """Write entry `key` (best effort: a cache that cannot be written is skipped)."""
    folder = programs_dir()
    too_big = sum(a.nbytes for _, a in layout.constants) > MAX_CONSTANT_BYTES
    if key is None or folder is None or too_big:
        return
    entry = {"key": key,
             "program": {"kernel_modules": program.kernel_modules,
                         "driver_source": program.driver_source,
                         "input_names": program.input_names,
                         "output_names": program.output_names,
                         "calls": program.encoded_calls()},
             "layout": {"inputs": [[list(s), d.str] for s, d in layout.inputs],
                        "outputs": [[o, list(s), d.str] for o, s, d in layout.outputs],
                        "arena_bytes": layout.arena_bytes, "output_bytes": layout.output_bytes,
                        "constants": [[o, a.dtype.str, list(a.shape),
                                       base64.b64encode(a.tobytes()).decode("ascii")]
                                      for o, a in layout.constants],
                        "gathers": [[*where, [list(c) for c in checked]]
                                    for where, checked in layout.gathers.items()],
                        "in_place": layout.in_place, "kernels": layout.kernels,
                        "fresh": layout.fresh}}
    body = json.dumps(entry, separators=(",", ":")).encode("utf-8")
    data = f"{FORMAT} {hashlib.sha256(body).hexdigest()}\n".encode("ascii") + body
    try:
        modules.write_atomically(os.path.join(folder, key + ".json"), data)
    except OSError:
        pass


def _program(p):
    names, outputs = _strs(p["input_names"]), _strs(p["output_names"])
    kernels = {_str(k): _str(v) for k, v in p["kernel_modules"].items()}
    calls = []
    for name, args, chunks in p["calls"]:
        if name not in kernels:
            raise ValueError(f"a call of {name}, not a kernel of the entry")
        pairs = [(_int(base), _int(value)) for base, value in args]
        if any(not 0 <= base < 2 + len(names) + len(outputs) for base, _ in pairs):
            raise ValueError("an argument's base is out of range")
        if chunks is not None:
            count, steps, per_chunk = chunks
            chunks = [_int(count), [_int(x) for x in steps], [_int(x) for x in per_chunk]]
            if not (0 <= chunks[0] < len(pairs) and len(chunks[1]) == len(chunks[2]) == len(pairs)):
                raise ValueError("a chunked call's description does not fit its arguments")
        calls.append((name, pairs, chunks))
    return SavedProgram(kernels, _str(p["driver_source"]), names, calls, outputs)


def _layout(d):
    arena = _int(d["arena_bytes"])
    outputs = []
    for offset, shape, dtype in d["outputs"]:
        offset = None if offset is None else _int(offset)
        outputs.append((offset, _shape(shape), np.dtype(_str(dtype))))
    constants = []
    for offset, dtype, shape, data in d["constants"]:
        array = np.frombuffer(base64.b64decode(_str(data), validate=True), np.dtype(_str(dtype)))
        constants.append((_int(offset), array.reshape(_shape(shape))))
    spans = [(o, a.nbytes) for o, a in constants]
    spans += [(o, int(np.prod(s)) * t.itemsize) for o, s, t in outputs if o is not None]
    if any(not 0 <= offset <= arena - size for offset, size in spans):
        raise ValueError("a buffer outside the arena")
    gathers = {(_str(op), _str(src)): [(_str(name), _int(size), _int(low))
                                       for name, size, low in checked]
               for op, src, checked in d["gathers"]}
    fresh = [None if i is None else _int(i) for i in d["fresh"]]
    if len(fresh) != len(outputs) or any(i is not None and not (
            0 <= i < len(fresh) and fresh[i] == i and outputs[j][0] is None)
            for j, i in enumerate(fresh)):
        raise ValueError("an output's new array is not one of the outputs'")
    return Layout([(_shape(s), np.dtype(_str(t))) for s, t in d["inputs"]], outputs, arena,
                  _int(d["output_bytes"]), constants, gathers, d["in_place"] is True,
                  _int(d["kernels"]), fresh)


def _int(x):
    if type(x) is not int:
        raise TypeError("not an integer")
    return x


def _str(x):
    if type(x) is not str:
        raise TypeError("not a string")
    return x


def _strs(xs):
    return [_str(x) for x in xs]


def _shape(xs):
    return tuple(_int(x) for x in xs)
