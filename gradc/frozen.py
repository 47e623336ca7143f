"""Random numbers drawn while a function is traced: an error, never frozen silently.

A traced function runs once, when it is traced, so a random draw in it runs once too: its numbers
would become constants of the compiled function, the same on every call. While `trace` runs, a
`Watch` on the tracing thread looks for such draws and raises FrozenRandomError naming the line:

- NumPy's generators are compiled code that no Python hook sees call by call, so they are
  fingerprinted instead: NumPy's global RandomState (behind np.random.randn, np.random.normal...)
  from the start, and every Generator, RandomState or BitGenerator the traced code can reach (the
  arguments, closures and referenced globals of each user function it enters, and their
  attributes) when first seen. A changed fingerprint is a draw; it is checked before every traced
  operation (the error names the line that uses the numbers) and when the trace ends.
- Python's `random` module and fresh entropy (os.urandom, which np.random.default_rng() without a
  seed uses) are seen by a profile hook (`sys.setprofile`, per thread), at the exact line.
The hook costs every Python call, so gradc's own surface calls, when their arguments can run no
user code, run with it off (`Watch.pause`, `inert`).
Generators seeded inside the traced function (np.random.default_rng(0), random.Random(0)) give the
same numbers on every call, so they are allowed. If another profiler is installed, the hook stays
off and the traced function's own closure, globals and arguments are scanned once instead.

The same walk notes the float arrays, numbers, strings and Nones the traced code can reach from
outside its arguments, with the `Path` to each: gradc/capture.py reads those arrays again on
every call and guards those values.
"""
from __future__ import annotations

import ctypes
import dis
import functools
import importlib.util
import inspect
import os
import random as _py_random
import secrets
import sys
import sysconfig
import threading
import types
from typing import NamedTuple

import numpy as np

from .errors import FrozenRandomError
from .ir import Value


# the attributes a Path takes through a function or partial (its cells, defaults, arguments): no
# code names them, but what they hold is what the code reads
_HELD_BY_CALLABLES = frozenset({"cell_contents", "__defaults__", "__kwdefaults__", "args",
                                "keywords"})


class Path(NamedTuple):
    """Where a trace found an object: `root` (a module's globals, a closure cell, an object an
    argument or a user frame held), then attribute and item steps: self -> .W. Followed again on
    every call for the arrays a compiled function reads from outside its arguments
    (gradc/capture.py)."""
    root: object
    steps: tuple  # (("attr", name) | ("item" | "global", key) | ("len" | "type", None), ...)

    def then(self, kind, key):
        return Path(self.root, self.steps + ((kind, key),))

    def follow(self):
        x = self.root
        for kind, key in self.steps:
            x = (getattr(x, key) if kind == "attr" else (type(x), len(x)) if kind == "len"
                 else type(x) if kind == "type" else x[key])
        return x

    def named_in(self, names, called=False):
        """Whether the code entered reads each name on the path (`names`, a Names): a global,
        an attribute (of a global: that global's; a method the code calls, where `called`),
        a string key; or it is what a function or partial holds (its cells, defaults)."""
        steps = self.steps
        for i, (kind, key) in enumerate(steps):
            if not isinstance(key, str) or kind == "attr" and key in _HELD_BY_CALLABLES or (
                    i and steps[i - 1][1] in ("keywords", "__kwdefaults__")):
                continue
            if kind == "global":
                found = key in names.globals
            elif kind == "item":
                found = key in names.keys
            elif i and steps[i - 1][0] == "global":  # (wmod.W; m.s read as self.s in m.fwd)
                found = (steps[i - 1][1], key) in names.global_attrs or key in names.attrs
            else:
                found = key in names.attrs or called and key in names.methods
            if not found:
                return False
        return True

    def expression(self, consts):
        """Python source that follows the path (LastCall's generated match), its root and keys
        bound in `consts`."""
        expr = f"R{len(consts)}"
        consts[expr] = self.root
        for kind, key in self.steps:
            if kind == "len":  # (a list, and its length)
                expr = f"(type({expr}), len({expr}))"
            elif kind == "type":
                expr = f"type({expr})"
            elif kind == "attr" and key.isidentifier():
                expr += f".{key}"
            else:
                name = f"K{len(consts)}"
                consts[name] = key
                expr = f"getattr({expr}, {name})" if kind == "attr" else f"{expr}[{name}]"
        return expr

ADVICE = ("Draw fresh numbers on every call with gradc.random: pass `rng = "
          "gradc.random.default_rng(seed)` as an argument and draw inside with "
          "rng.standard_normal(shape) or rng.random(shape); or draw the numbers outside the "
          "function and pass them in as an argument")

_local = threading.local()


def active():
    """The Watch of the trace running on this thread, or None."""
    return getattr(_local, "watch", None)


# --- where code comes from ----------------------------------------------------------------------
# gradc and the libraries it runs while tracing (a nested compile runs Numba): never user code
_LIBRARIES = ("gradc", "numpy", "numba", "llvmlite", "dataclasses")


def _package_dir(name):
    spec = importlib.util.find_spec(name)
    return list(spec.submodule_search_locations or ()) if spec else []


def _dirs(paths):
    return tuple(os.path.abspath(p) + os.sep for p in set(paths))


_PATHS = sysconfig.get_paths()
_LIBRARY_DIRS = _dirs(d for name in _LIBRARIES for d in _package_dir(name))
_SITE_DIRS = _dirs((_PATHS["purelib"], _PATHS["platlib"]))  # other packages: user code
_STDLIB_DIRS = _dirs((_PATHS["stdlib"], _PATHS["platstdlib"]))
_RANDOM_FILES = {os.path.abspath(m.__file__) for m in (_py_random, secrets)}
_KIND = {}  # code filename -> "user", "library" or "random"
_RANDOM_OWNER = {}  # type -> is it Python's random.Random (whose C methods draw)?


def _kind(frame):
    """Where the code of `frame` comes from: "user", "library" (gradc, NumPy, Numba, the standard
    library) or "random" (Python's random and secrets modules)."""
    filename = frame.f_code.co_filename
    kind = _KIND.get(filename)
    if kind is not None:
        return kind
    if filename.startswith("<"):  # exec'd code (a dataclass's __init__, python -c): by module
        module = frame.f_globals.get("__name__") or ""
        return "library" if filename.startswith("<frozen") or module.split(".")[0] in (
            _LIBRARIES) else "user"
    path = os.path.abspath(filename)
    if path in _RANDOM_FILES:
        kind = "random"
    elif path.startswith(_LIBRARY_DIRS) or (path.startswith(_STDLIB_DIRS)
                                            and not path.startswith(_SITE_DIRS)):
        kind = "library"
    else:
        kind = "user"
    _KIND[filename] = kind
    return kind


def _line(frame):
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"


@functools.lru_cache(maxsize=4096)
class Names(NamedTuple):
    """What code reads, from its bytecode (co_names alone mixes globals, attributes and
    methods: a global W is not self.W, np.log not self.log, x.mean() not self.mean)."""
    globals: frozenset  # LOAD_GLOBAL
    attrs: frozenset  # attributes read (LOAD_ATTR), of what is not a global; getattr(x, "name")
    methods: frozenset  # attributes called (LOAD_METHOD): self.act(x)
    global_attrs: frozenset  # (global, attribute): wmod.W, np.log
    keys: frozenset  # string constants (dict keys; in tuples too: for k in ("w1", "w2"): p[k])
    iterated: frozenset  # what a for loop runs over directly: for k in params

    def __or__(self, other):
        return Names(*(a | b for a, b in zip(self, other)))


NO_NAMES = Names(*(frozenset(),) * 6)


@functools.lru_cache(maxsize=4096)
def code_names(code):
    """The Names `code` reads."""
    globals_, attrs, methods, global_attrs, iterated = set(), set(), set(), set(), set()
    previous = []
    for ins in dis.get_instructions(code):
        if ins.opname == "GET_ITER" and previous and previous[-1].opname in (
                "LOAD_GLOBAL", "LOAD_NAME", "LOAD_ATTR", "LOAD_FAST", "LOAD_DEREF"):
            iterated.add(previous[-1].argval)
        if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
            globals_.add(ins.argval)
        elif ins.opname in ("LOAD_ATTR", "LOAD_METHOD"):
            if previous and previous[-1].opname in ("LOAD_GLOBAL", "LOAD_NAME"):
                global_attrs.add((previous[-1].argval, ins.argval))
            else:
                (attrs if ins.opname == "LOAD_ATTR" else methods).add(ins.argval)
        elif (ins.opname == "LOAD_CONST" and type(ins.argval) is str and len(previous) >= 2
              and previous[-2].opname == "LOAD_GLOBAL"
              and previous[-2].argval in ("getattr", "hasattr")):
            attrs.add(ins.argval)
        if ins.opname not in ("CACHE", "PRECALL", "PUSH_NULL", "NOP", "EXTENDED_ARG"):
            previous = previous[-2:] + [ins]
    keys, stack = set(), list(code.co_consts)
    while stack:
        c = stack.pop()
        if type(c) is str:
            keys.add(c)
        elif type(c) in (tuple, frozenset):
            stack.extend(c)
    return Names(*map(frozenset, (globals_, attrs, methods, global_attrs, keys, iterated)))


# --- fingerprints of NumPy's generators ---------------------------------------------------------
# how far the scan looks into what user code can reach: three levels below a global
# (params['l1']['a']['W']), four below a local or an argument (self.blocks[0].attn.W), at most
# MAX_ITEMS entries of a container and SCAN_LIMIT containers in all (a large object graph
# costs no more)
GLOBAL_DEPTH, LOCAL_DEPTH, SCAN_LIMIT, MAX_ITEMS = 3, 4, 5000, 1024
_PLAIN = (bool, int, float, complex, str, type(None))
# what tells that code walks or measures a list or dict (besides `for x in self.layers`)
_WALK_METHODS = frozenset({"items", "values", "keys"})
_SIZED_BUILTINS = frozenset({"len", "zip", "enumerate", "reversed", "sum", "map", "list",
                             "tuple", "sorted", "max", "min", "any", "all"})
_GUARDED_CALLABLES = (types.FunctionType, types.BuiltinFunctionType, np.ufunc, functools.partial,
                      types.MethodType)
_NUMPY_PLAIN = (np.number, np.bool_)  # (NumPy's scalars: np.float32(1e-5))
_NUMPY_RANDOM = (np.random.Generator, np.random.RandomState, np.random.BitGenerator)
# names that reach NumPy's global RandomState (np.random.randn, from numpy.random import rand...)
_GLOBAL_NAMES = frozenset(n for n in dir(np.random.mtrand) if not n.startswith("_")) | {"random"}
_SKIP = (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType, types.MethodType,
         np.ndarray, np.generic, str, bytes, int, float, complex, bool, type(None))


def _freeze(x):
    """A comparable copy of a generator's state (dicts of ints and arrays)."""
    if isinstance(x, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in x.items()))
    if isinstance(x, np.ndarray):
        return (x.dtype.str, x.shape, x.tobytes())
    if isinstance(x, (list, tuple)):
        return tuple(_freeze(v) for v in x)
    return x


def _reader(bit_generator):
    """A cheap function whose result changes when `bit_generator` draws."""
    slow = lambda: _freeze(bit_generator.state)  # noqa: E731
    if type(bit_generator) is not np.random.MT19937:
        return slow  # (PCG64: ~2 us)
    # MT19937 (NumPy's global RandomState) builds a 624-word state (~60 us): read its position
    # and first word in place instead (struct mt19937_state {uint32_t key[624]; int pos;}),
    # once checked against the state it reports
    address = bit_generator.ctypes.state_address
    pos = ctypes.c_int.from_address(address + 624 * 4)
    key0 = ctypes.c_uint32.from_address(address)
    state = bit_generator.state["state"]
    if (pos.value, key0.value) != (state["pos"], int(state["key"][0])):
        return slow
    return lambda: (pos.value, key0.value)


def _bit_generator(obj):
    if isinstance(obj, np.random.RandomState):
        return obj._bit_generator
    return obj.bit_generator if isinstance(obj, np.random.Generator) else obj


class _Probe:
    """One watched NumPy generator: its fingerprint when first seen."""

    def __init__(self, obj, bit_generator, what):
        self.obj, self.what = obj, what
        # a RandomState's cached normal (has_gauss) is only in its full state: compared at the end
        self.full = (lambda: _freeze(obj.get_state(legacy=False))) if isinstance(
            obj, np.random.RandomState) else None
        self.read = _reader(bit_generator)
        self.start = self.read()
        self.start_full = self.full() if self.full else None

    def changed(self, final):
        if self.read() != self.start:
            return True
        return final and self.full is not None and self.full() != self.start_full


# --- the watch ----------------------------------------------------------------------------------
class Watch:
    """While `fun` is traced on this thread (a context manager): looks for random draws, and
    walks what the traced code can reach from outside its arguments (`arrays`, `plain`, their
    Paths: gradc/capture.py reads and guards them; `held`: a traced value stored there is
    refused and undone)."""

    def __init__(self, fun, static_args=()):
        self.fun = fun
        self.static_args = static_args
        self.probes = {}  # id(bit generator) -> _Probe
        self.scanned = set()  # ids of containers and objects already scanned
        self.keep = []  # (what was scanned, kept alive so its id stays its own)
        self.codes = set()  # user code objects entered
        self.seeded = set()  # ids of Python random.Random instances seeded inside the trace
        self.found = None  # (message, source) of the first draw the hook saw
        self.uses_global = False  # user code that names np.random's functions ran
        # id -> (name, NumPy array, Path) of the float arrays the traced code can reach from
        # outside (gradc/capture.py reads them on every call), and [(name, value, Path)] of
        # the numbers, strings, Nones, functions and lengths (`guards`: those the code reads)
        self.arrays = {}
        self.paths = {}  # id -> [(name, Path)]: every way to an array of `arrays` found
        # [(name, dict, list or an object's __dict__, a copy of it, whether an object's)] of the
        # containers scanned, [(globals, name, value)] of the globals: a traced value stored in
        # one is undone (undo_stored_values)
        self.held, self.held_globals, self.held_cells = [], [], []
        self.names_now = NO_NAMES  # what the code being entered reads (of the user's modules)
        self.top = None  # the code of the traced function (the first user frame entered)
        self.plain = []

    def __enter__(self):
        self.outer = active()
        _local.watch = self
        self.previous = sys.getprofile()
        # a Watch of an enclosing trace is replaced meanwhile; another profiler is left alone
        self.hooked = self.previous is None or getattr(self.previous, "watch", None) is not None
        self._watch(np.random.mtrand._rand, "NumPy's global random state (np.random.*)")
        if self.hooked:  # (the hook finds the arguments among the traced function's locals)
            self.scan_callable(self.fun)  # (first: found there, arrays are read through cells)
            sys.setprofile(self._hook())
        else:
            for x in self.static_args:
                self._consider(x, "an argument", LOCAL_DEPTH, Path(x, ()))
            self._scan_function(self.fun)
        return self

    def __exit__(self, *exc):
        if self.hooked:
            sys.setprofile(self.previous)
        _local.watch = self.outer
        return False

    def pause(self):
        """Turn this watch's profile hook off for a call that runs no user code (gradc/trace.py
        `traced`, and `inert` below); returns what `resume` takes, or None where it is not on."""
        hook = sys.getprofile()
        if getattr(hook, "watch", None) is not self:
            return None
        sys.setprofile(None)
        return hook

    def resume(self, hook):
        sys.setprofile(hook)

    # --- checks ------------------------------------------------------------------------------
    def check(self, source, final=False):
        """Raise FrozenRandomError if a draw happened since the trace began; `source` is the
        user line about to use what was drawn (or, at the end, the traced function)."""
        if self.found is not None:
            raise FrozenRandomError(*self.found)
        for probe in self.probes.values():
            if probe.obj is np.random.mtrand._rand and not self.uses_global:
                continue  # (another thread drew from it: this trace's code never names it)
            if probe.changed(final):
                name = getattr(self.fun, "__name__", "the function")
                raise FrozenRandomError(
                    f"random numbers were drawn from {probe.what} while `{name}` was traced (at "
                    "or before this line): they would be frozen into the compiled function, the "
                    "same on every call. " + ADVICE, source=source)

    def _record(self, frame, what):
        """A draw or fresh entropy seen by the hook at `frame`: an error if user code asked for
        it (a library that uses `random` for itself, like tempfile, is left alone)."""
        while frame is not None and _kind(frame) == "random":
            frame = frame.f_back
        if self.found is None and frame is not None and _kind(frame) == "user":
            name = getattr(self.fun, "__name__", "the function")
            self.found = (f"{what} was used while `{name}` was traced: the numbers would be frozen "
                          "into the compiled function, the same on every call. " + ADVICE,
                          _line(frame))

    # --- the profile hook --------------------------------------------------------------------
    def _hook(self):
        """The profile function. Most events are gradc's and NumPy's own calls, which cost two
        dictionary lookups here; user frames, `random` and entropy go to the methods below."""
        kinds, random_owner, urandom = _KIND, _RANDOM_OWNER, os.urandom

        def profile(frame, event, arg):
            if event == "call":
                kind = kinds.get(frame.f_code.co_filename) or _kind(frame)
                if kind != "library":
                    try:
                        self._call(frame, kind)
                    except Exception:  # noqa: BLE001 - (an object that fails to be looked at
                        pass  # is no generator; the hook must never raise into the user's code)
            elif event == "c_call":
                owner = type(getattr(arg, "__self__", None))
                drawn = random_owner.get(owner)
                if drawn is None:
                    drawn = random_owner[owner] = issubclass(owner, _py_random.Random)
                if drawn or arg is urandom:
                    self._c_call(frame, arg)
        profile.watch = self  # (a nested trace recognizes it, and restores it after)
        return profile

    def _call(self, frame, kind):
        if kind == "user":
            self._enter_user(frame)
        elif frame.f_code.co_name == "seed":  # in random.py
            # random.seed(0) or random.Random(0) inside the trace: the same numbers each call
            if isinstance(frame.f_locals.get("a"), (int, float, str, bytes, bytearray)):
                self.seeded.add(id(frame.f_locals.get("self")))

    def _c_call(self, frame, arg):
        if arg is os.urandom:
            self._record(frame, "fresh entropy from the operating system (os.urandom; "
                                "np.random.default_rng() or random.Random() without a seed)")
        elif arg.__name__ in ("random", "getrandbits") and id(arg.__self__) not in self.seeded:
            self._record(frame, "Python's `random` module")

    def _enter_user(self, frame):
        code = frame.f_code
        self.names_now = code_names(code)
        if code not in self.codes:
            self.codes.add(code)
            if not self.uses_global and not _GLOBAL_NAMES.isdisjoint(code.co_names):
                self.uses_global = True
            for name in code_names(code).globals:
                if name in frame.f_globals:
                    self.held_globals.append((frame.f_globals, name, frame.f_globals[name]))
                    self._consider(frame.f_globals[name], name, GLOBAL_DEPTH,
                                   Path(frame.f_globals, (("global", name),)))
        if self.top is None:
            self.top = code
        # the traced function's own locals are its arguments (and self) from outside; a
        # helper's are mostly made inside the trace (a list it fills, a dict of arrays NumPy
        # computed): looked into for generators only (what is outside was found from the top)
        outside = code is self.top
        for name, value in frame.f_locals.items():
            self._consider(value, name, LOCAL_DEPTH, Path(value, ()), outside=outside)

    def scan_callable(self, fun, depth=LOCAL_DEPTH):
        """What the traced callable holds: a bound method's or callable object's `self`, a
        partial's arguments, a function's closure (through its cells: a rebound nonlocal too)
        and defaults. Returns the function whose code runs, or None."""
        if isinstance(fun, functools.partial):
            for i, arg in enumerate(fun.args):
                self._consider(arg, f"partial argument {i}", depth,
                               Path(fun, (("attr", "args"), ("item", i))))
            for key, arg in fun.keywords.items():
                self._consider(arg, key, depth, Path(fun, (("attr", "keywords"), ("item", key))))
            return self.scan_callable(fun.func, depth)
        owner = getattr(fun, "__self__", None)
        if isinstance(fun, types.MethodType) and not isinstance(owner, (type, types.ModuleType)):
            self._consider(owner, "self", depth, Path(owner, ()))
            fun = fun.__func__
        elif not isinstance(fun, (types.FunctionType, types.BuiltinFunctionType, type)):
            self._consider(fun, "self", depth, Path(fun, ()))  # (a callable object)
            fun = getattr(type(fun), "__call__", None)
        fun = inspect.unwrap(fun) if isinstance(fun, types.FunctionType) else fun
        if not isinstance(fun, types.FunctionType):
            return None
        for i, value in enumerate(fun.__defaults__ or ()):
            self._consider(value, "a default argument", depth,
                           Path(fun, (("attr", "__defaults__"), ("item", i))))
        for key, value in (fun.__kwdefaults__ or {}).items():
            self._consider(value, key, depth, Path(fun, (("attr", "__kwdefaults__"), ("item", key))))
        self._scan_closure(fun, depth)
        return fun

    def _scan_closure(self, fun, depth=LOCAL_DEPTH):
        code = fun.__code__
        for name, cell in zip(code.co_freevars, fun.__closure__ or ()):
            try:
                value = cell.cell_contents
            except ValueError:  # (an empty cell)
                continue
            self.held_cells.append((name, cell, value))
            self._consider(value, name, depth, Path(cell, (("attr", "cell_contents"),)))

    def _scan_function(self, fun):
        """Without the hook: what `fun` itself can reach (`_scan_callable`, and the globals
        its code reads); the code of the functions it calls is not seen."""
        self.uses_global = True
        fun = self.scan_callable(fun)
        if fun is None:
            return
        code = fun.__code__
        self.codes.add(code)
        self.names_now = code_names(code)
        for name in code_names(code).globals:
            if name in fun.__globals__:
                self._consider(fun.__globals__[name], name, GLOBAL_DEPTH,
                               Path(fun.__globals__, (("global", name),)))

    # --- finding generators ------------------------------------------------------------------
    def undo_stored_values(self):
        """Undo what the traced code stored in the containers and globals it could reach that
        is a traced value (`self.mean = h.mean(0)`, `history.append(loss)`, `global total`):
        it would hold a placeholder, not a number, after the trace. Returns where they were."""
        stored = []
        for name, container, held, attrs in self.held:  # (values there before are not new)
            if isinstance(container, list):
                found = [i for i, v in enumerate(container) if isinstance(v, Value)
                         and not (i < len(held) and held[i] is v)]
                if found:
                    stored.append(f"{name}[{found[0]}]")
                    container[:] = held
                continue
            for key in [k for k, v in container.items()
                        if isinstance(v, Value) and held.get(k) is not v]:
                stored.append(f"{name}.{key}" if attrs else f"{name}[{key!r}]")
                if key in held:
                    container[key] = held[key]
                else:
                    del container[key]
        for globals_, name, value in self.held_globals:
            if isinstance(globals_.get(name), Value) and globals_.get(name) is not value:
                stored.append(name)
                globals_[name] = value
        for name, cell, value in self.held_cells:
            if isinstance(cell.cell_contents, Value) and cell.cell_contents is not value:
                stored.append(name)
                cell.cell_contents = value
        return stored

    def way_to(self, array):
        """(name, Path) to `array` (one of `arrays`): the first found through names the code
        entered so far uses (self.W where self.__dict__ also holds it as self.params['W']),
        else the first found."""
        ways = self.paths[id(array)]
        if len(ways) > 1:
            names = self.names()
            return next((way for way in ways if way[1].named_in(names)), ways[0])
        return ways[0]

    def names(self):
        """The Names the user code entered reads."""
        names = NO_NAMES
        for code in list(self.codes):  # (the profile hook may add one meanwhile)
            names = names | code_names(code)
        return names

    def guards(self):
        """[(name, value, Path)] of the numbers, strings and Nones outside the arguments whose
        every name the user code entered names (co_names: globals and attributes; string
        constants: dict keys): what the trace may have used. Their values now, at the trace's
        end (what the trace itself changed, a counter, is not a change)."""
        names = self.names()
        guards, seen = [], set()
        for name, first, path in self.plain:
            key = (id(path.root), path.steps)
            if key in seen:
                continue
            seen.add(key)
            try:
                value = path.follow()
            except Exception:  # noqa: BLE001 - (gone: nothing to check)
                continue
            if not path.named_in(names, called=callable(value)):
                continue
            if path.steps[-1][0] == "len" and (value != first or not (
                    path.steps[-2][1] in names.iterated or names.methods & _WALK_METHODS
                    or names.globals & _SIZED_BUILTINS)):
                continue  # (a list the trace appends to is a log, not what a loop runs over;
                # a list's or dict's size matters where the code walks or measures one)
            if (type(value) in _PLAIN or isinstance(value, _NUMPY_PLAIN)
                    or type(value) in _GUARDED_CALLABLES or path.steps[-1][0] in ("len", "type")):
                guards.append((name, value, path))
        return guards

    def _consider(self, value, name, depth, path, outside=True):
        """Watch `value` if it is a NumPy generator; else look `depth` levels into it. Where it
        lies `outside` the trace: NumPy float arrays met on the way are noted, `arrays`, with
        their `path`, and numbers, strings, None and functions with a path too, `plain`."""
        if type(value) in _PLAIN or isinstance(value, _NUMPY_PLAIN):
            if path.steps and outside:
                self.plain.append((name, value, path))
            return
        if type(value) is np.ndarray:
            if outside and value.size and value.dtype.kind == "f":  # (weights, data; not
                if id(value) not in self.arrays:  # index tables and masks)
                    self.arrays[id(value)] = (name, value, path)
                self.paths.setdefault(id(value), []).append((name, path))
            return
        if isinstance(value, _NUMPY_RANDOM):
            self._watch(value, f"the NumPy generator `{name}`")
            return
        if type(value) is types.MethodType and value.__self__ is np.random.mtrand._rand:
            self.uses_global = True  # (from numpy.random import normal as N)
            return
        if type(value) in _GUARDED_CALLABLES:  # (self.act = np.tanh: guarded as it is)
            if path.steps and outside:
                self.plain.append((name, value, path))
            if (type(value) is types.FunctionType and depth and outside
                    and id(value) not in self.scanned):
                self.scanned.add(id(value))  # (a helper's closure: read through its cells)
                self._scan_closure(value, depth - 1)
            return
        if type(value).__module__.startswith("gradc"):
            return  # (gradc's own objects: a compiled function, an optimizer)
        if isinstance(value, types.ModuleType) and depth and _users_module(value):
            read = {a for g, a in self.names_now.global_attrs} | self.names_now.attrs
            for key in read & value.__dict__.keys():  # (the names the code reads of it)
                self._consider(value.__dict__[key], f"{name}.{key}", depth - 1,
                               path.then("attr", key), outside)
            return
        if isinstance(value, type) and depth and _users(value) and id(value) not in self.scanned:
            self.scanned.add(id(value))  # (a class: Model.lr, cls.W)
            for item_name, kind, key, item in _class_items(value, name, ()):
                self._consider(item, item_name, depth - 1, path.then(kind, key), outside)
            return
        seen = id(value) if outside else (id(value), "inside")  # (looked at again from outside)
        if (depth == 0 or isinstance(value, _SKIP) or seen in self.scanned
                or len(self.scanned) >= SCAN_LIMIT):
            return
        container = value if outside else None  # (where a traced value stored is refused)
        if isinstance(value, (list, tuple, dict)) and path.steps and outside:
            # (its class: an array where a list was; its length: a loop over it unrolls)
            self.plain.append((f"type({name})", type(value), path.then("type", None)))
            if not isinstance(value, tuple):
                self.plain.append((f"len({name})", (type(value), len(value)),
                                   path.then("len", None)))
        if isinstance(value, (list, tuple)):
            items = [(f"{name}[{i}]", "item", i, v) for i, v in enumerate(value[:MAX_ITEMS])]
            if type(value) is tuple:
                container = None
        elif isinstance(value, dict):
            items = [(f"{name}[{k!r}]", "item", k, v)
                     for k, v in list(value.items())[:MAX_ITEMS]]
        else:
            attrs = getattr(value, "__dict__", None)
            if type(attrs) is dict:
                items = [(f"{name}.{k}", "attr", k, v) for k, v in list(attrs.items())[:MAX_ITEMS]]
            else:  # (__slots__)
                attrs = None
                items = [(f"{name}.{k}", "attr", k, getattr(value, k)) for k in _slots(type(value))
                         if hasattr(value, k)]
            # (what the class holds and the object does not: `training = True` in the class)
            items += _class_items(type(value), name, attrs or ())
            if outside and path.steps and callable(value):  # (self.act = ReLU(): its class)
                self.plain.append((f"type({name})", type(value), path.then("type", None)))
            container = attrs if outside else None
        self.scanned.add(seen)
        self.keep.append(value)
        if container is not None:
            self.held.append((name, container, container.copy(), container is not value))
        for item_name, kind, key, item in items:
            self._consider(item, item_name, depth - 1, path.then(kind, key), outside)

    def _watch(self, obj, what):
        bit_generator = _bit_generator(obj)
        if id(bit_generator) not in self.probes:
            self.probes[id(bit_generator)] = _Probe(obj, bit_generator, what)


def _users_module(module):
    """Whether a module is the user's own (`import mymodel; mymodel.W`)."""
    name = module.__name__.split(".")[0]
    return not (name in _LIBRARIES or name in sys.stdlib_module_names
                or getattr(module, "__file__", None) is None)


def _users(cls):
    """Whether the class is the user's (not NumPy's, gradc's, the standard library's)."""
    module = cls.__module__.split(".")[0]
    return not (module in _LIBRARIES or module in sys.stdlib_module_names or module == "builtins")


def _class_items(cls, name, instance_attrs):
    """(name, "attr", key, value) of the numbers, strings, arrays and functions the user's
    class `cls` and its bases hold, but for `instance_attrs` (the object's own, which win)."""
    items, seen = [], set(instance_attrs)
    for klass in cls.__mro__:
        if not _users(klass):
            continue
        for key, value in list(vars(klass).items())[:MAX_ITEMS]:
            if key not in seen and not key.startswith("__") and (
                    type(value) in _PLAIN or isinstance(value, (np.ndarray, np.generic))):
                seen.add(key)
                items.append((f"{name}.{key}", "attr", key, value))
    return items


def _slots(cls):
    """The attribute names the __slots__ of `cls` and its bases declare."""
    names = []
    for klass in cls.__mro__:
        slots = vars(klass).get("__slots__", ())
        names += [slots] if isinstance(slots, str) else [n for n in slots if n != "__dict__"]
    return names


# --- calls that run no user code (the hook is off during them) -----------------------------------
_BOUND_FUNCTIONS, _BOUND_TYPES = set(), set()


def bind_functions(functions):
    """The NumPy functions gradc implements (gradc/trace.py's table): a call given one runs
    gradc's implementation, never the function."""
    _BOUND_FUNCTIONS.update(functions)
    _BOUND_TYPES.update(type(f) for f in functions)


_INERT_TYPES = frozenset({Value, int, float, bool, complex, str, bytes, type(None), type(Ellipsis),
                          range, np.ufunc})


def inert(items):
    """Whether a surface call with these arguments runs only gradc's and NumPy's code, never the
    user's: traced values, numbers, strings, dtypes, NumPy's own scalars, numeric arrays and
    ufuncs, the functions gradc binds, and tuples, lists, slices and dicts of these. Such a call
    runs with the random-draw watch's profile hook off (Watch.pause): the hook costs every
    Python call, and gradc's own calls are most of a trace's (a 32-step RNN's trace 44 -> 15
    ms; 14 with no watch at all). Any other object (a callable, an object with
    __array__ or __index__) may run user code, which the hook must see: the hook stays on."""
    for x in items:
        t = type(x)
        if t in _INERT_TYPES or isinstance(x, np.dtype) or t in _NUMPY_SCALARS:
            continue
        if t is np.ndarray:
            if x.dtype.hasobject:
                return False
        elif t is tuple or t is list:
            if not inert(x):
                return False
        elif t is dict:  # (the keyword arguments __array_function__ passes on)
            if not (all(type(k) is str for k in x) and inert(x.values())):
                return False
        elif t is slice:
            if not inert((x.start, x.stop, x.step)):
                return False
        elif t is type:
            if not (issubclass(x, (np.generic, int, float, complex, str)) or x is Value):
                return False
        elif t not in _BOUND_TYPES or x not in _BOUND_FUNCTIONS:
            return False
    return True


_NUMPY_SCALARS = frozenset(t for t in np.sctypeDict.values() if t not in (np.object_, np.void))
