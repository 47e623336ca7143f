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

The walk that finds the generators is gradc/outside.py's (a Watch is an OutsideWalk): it also
notes what the traced code can reach from outside its arguments, for gradc/capture.py.
"""
from __future__ import annotations

import contextlib
import ctypes
import dis
import importlib.util
import os
import random as _py_random
import secrets
import sys
import sysconfig
import threading
import types

import numpy as np

from .errors import FrozenRandomError
from .ir import Value
from .outside import (ABSENT, GLOBAL_DEPTH, LIBRARIES, LOCAL_DEPTH, NO_NAMES, OutsideWalk, Path,
                      code_names, _users_module, imported_modules, stored_globals)


ADVICE = ("Draw fresh numbers on every call with gradc.random: pass `rng = "
          "gradc.random.default_rng(seed)` as an argument and draw inside with "
          "rng.standard_normal(shape) or rng.random(shape); or draw the numbers outside the "
          "function and pass them in as an argument")

_local = threading.local()


@contextlib.contextmanager
def recording_lines(on=True):
    """The trace begun inside (its outermost Watch) records the lines of user code it runs:
    Watch.names_run. Costs a Python call per frame and line: asked for only where it decides
    something (gradc/capture.py unchanged_by)."""
    _local.record_lines = on
    try:
        yield
    finally:
        _local.record_lines = False


class Diverged(BaseException):
    """Raised at the first call user code makes where a trace that follows another's steps
    made another (`following`): an Exception's sibling, which no `except Exception` of the
    user's takes."""


@contextlib.contextmanager
def following(steps, follow=False):
    """The trace begun inside (its outermost Watch) records the calls user code makes, in
    order, as (code, line) into the list `steps`; with follow=True it makes those of an
    earlier trace instead, and raises Diverged at the first call that earlier trace did not
    make there, before the call runs (a branch the earlier trace did not take draws no random
    number, sets no np.seterr, appends nothing: each is a call; its plain stores, `self.lr *=
    0.5`, are put back, outside.restore). From the profile hook: no line tracing, which
    doubled the trace time. capture.read_by_numpy's trace on other contents follows the
    first. Under another profiler (no hook) nothing is recorded: `steps` stays empty."""
    _local.steps = (steps, follow)
    try:
        yield
    finally:
        _local.steps = None


def active():
    """The Watch of the trace running on this thread, or None."""
    return getattr(_local, "watch", None)


# --- where code comes from ----------------------------------------------------------------------
# gradc and the libraries it runs while tracing (a nested compile runs Numba): never user code
_LIBRARIES = LIBRARIES


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
            _LIBRARIES) or module.startswith("namedtuple_") else "user"  # (a namedtuple's
        # __new__, made by collections: its names are no user code's reads)
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


# the draws of NumPy's generators the code calls most (names few variables have)
_DRAWS = frozenset({"randn", "rand", "randint", "random_sample", "standard_normal", "normal",
                    "uniform", "choice", "permutation", "shuffle", "integers", "binomial",
                    "poisson", "exponential", "multivariate_normal", "random"})


def _draw_line():
    """`file:line` of the last line up to the current one of the innermost user frame that
    names one of NumPy's random functions or methods (np.random.randn(3): the probe finds the
    draw only at the next traced operation, a line later; NumPy's generators are Cython, which
    the profile hook does not see called), or None."""
    from .trace import _user_frame  # (it imports this module)
    frame, _ = _user_frame(sys._getframe(2))
    if frame is None:
        return None
    lines = [ins.positions.lineno for ins in dis.get_instructions(frame.f_code)
             if ins.opname in ("LOAD_ATTR", "LOAD_METHOD", "LOAD_GLOBAL", "LOAD_NAME")
             and ins.argval in _DRAWS and ins.positions.lineno is not None
             and ins.positions.lineno <= frame.f_lineno]
    return f"{os.path.basename(frame.f_code.co_filename)}:{max(lines)}" if lines else None


def _line(frame):
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"


# --- fingerprints of NumPy's generators ---------------------------------------------------------
_NUMPY_RANDOM = (np.random.Generator, np.random.RandomState, np.random.BitGenerator)
# names that reach NumPy's global RandomState (np.random.randn, from numpy.random import rand...)
_GLOBAL_NAMES = frozenset(n for n in dir(np.random.mtrand) if not n.startswith("_")) | {"random"}


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
def _importing(frame):
    """Whether `frame` runs inside an import (the import system's frames below it)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


class Watch(OutsideWalk):
    """While `fun` is traced on this thread (a context manager): looks for random draws, and
    walks what the traced code can reach from outside its arguments (`arrays`, `plain`, their
    Paths: gradc/capture.py reads and guards them; `held`: a traced value stored there is
    refused and undone)."""

    def __init__(self, fun, static_args=()):
        super().__init__()
        self.fun = fun
        self.static_args = static_args
        self.probes = {}  # id(bit generator) -> _Probe
        self.seeded = set()  # ids of Python random.Random instances seeded inside the trace
        self.found = None  # (message, source) of the first draw the hook saw
        self.uses_global = False  # user code that names np.random's functions ran
        self.lines = None  # code -> the lines of it run, where recorded (recording_lines)
        self.trace_before = None  # sys.gettrace() as the lines began to be recorded
        # ([(code, line)] of the calls user code made, in order; whether followed: `following`)
        self.steps = None
        self.diverged = False  # (a followed trace left the steps: `following`)

    def __enter__(self):
        self.outer = active()
        _local.watch = self
        self.steps, _local.steps = getattr(_local, "steps", None), None
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
        if getattr(_local, "record_lines", False):  # (a debugger's or coverage's trace function
            _local.record_lines = False  # is called on as before: _line_hook chains it)
            self.lines = {}
            self.trace_before = sys.gettrace()
            sys.settrace(self._line_hook(self.trace_before))
        return self

    def __exit__(self, *exc):
        if self.lines is not None:
            sys.settrace(self.trace_before)
        if self.hooked:
            sys.setprofile(self.previous)
        _local.watch = self.outer
        return False

    def names_run(self):
        """The Names read by the lines of user code this trace ran (where a name appears only
        in a branch not taken, the trace did not read what it names), or None where the lines
        were not recorded."""
        if self.lines is None:
            return None
        names = NO_NAMES
        for code, run in list(self.lines.items()):
            names = names | code_names(code, frozenset(run))
        return self.given(names)

    def _line_hook(self, before):
        """The trace function recording the lines of user code run (sys.settrace: called as a
        frame begins; its answer is called on each line of that frame), calling on `before`,
        the trace function that was set (a debugger's, coverage's), and its answers. Under
        one, lines were not recorded, and an array a branch not taken names (BN's running
        mean, updated by the user) traced again on every call (fuzz41d)."""
        kinds, lines = _KIND, self.lines

        def trace(frame, event, arg):
            theirs = before(frame, event, arg) if before is not None else None
            if (kinds.get(frame.f_code.co_filename) or _kind(frame)) != "user":
                return theirs
            run = lines.setdefault(frame.f_code, set())

            def line(frame, event, arg):
                nonlocal theirs
                if event == "line":
                    run.add(frame.f_lineno)
                if theirs is not None:
                    theirs = theirs(frame, event, arg)
                return line
            return line
        return trace

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
                drawn_at = None if final else _draw_line()
                raise FrozenRandomError(
                    f"random numbers were drawn from {probe.what} while `{name}` was traced"
                    + (" (at or before this line)" if drawn_at is None else "") + ": they would "
                    "be frozen into the compiled function, the same on every call. " + ADVICE,
                    source=drawn_at or source)

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
        steps, follow = self.steps or (None, False)
        at = [0]  # (where a trace that follows is in the steps)

        def step(caller):
            """The call `caller` (a frame) makes now, as a step of `following`: of the user's
            own files only (code made by exec, a namedtuple's __new__ that gradc's own calls
            of dis run, comes and goes with gradc's caches)."""
            code = caller.f_code
            name = code.co_filename
            if (kinds.get(name) or _kind(caller)) != "user" or (
                    name.startswith("<") and not name.startswith("<ipython")):
                return
            if not follow:
                steps.append((code, caller.f_lineno))
                return
            expected = steps[at[0]] if at[0] < len(steps) else None
            if expected is None or expected[0] is not code or expected[1] != caller.f_lineno:
                self.diverged = True  # (a bare `except:` of the user's may take it: it counts)
                raise Diverged
            at[0] += 1

        def profile(frame, event, arg):
            if steps is not None and event in ("call", "c_call"):
                caller = frame.f_back if event == "call" else frame
                if caller is not None:
                    step(caller)
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
        if arg is os.urandom and not _importing(frame):  # (a module's first import seeds its
            # own generator: numpy.random's, when the trace first reads np.random)
            self._record(frame, "fresh entropy from the operating system (os.urandom; "
                                "np.random.default_rng() or random.Random() without a seed; "
                                "np.random.RandomState(seed) and np.random.seed(seed) draw it "
                                "too, before they seed: use np.random.default_rng(seed))")
        elif arg.__name__ in ("random", "getrandbits") and id(arg.__self__) not in self.seeded:
            self._record(frame, "Python's `random` module")

    def _enter_user(self, frame):
        code = frame.f_code
        self.names_now = code_names(code)
        if code not in self.codes:
            self.codes.add(code)
            if not self.uses_global and not _GLOBAL_NAMES.isdisjoint(code.co_names):
                self.uses_global = True
            read = code_names(code).globals
            if "globals" in read and "globals" not in frame.f_globals:  # (globals()["W"]: the
                # globals it may name, read as the globals they are; stale before)
                read = read | {k for k in frame.f_globals
                               if type(k) is str and self.names_now.key(k)}
            for name in read:
                if name in frame.f_globals:
                    self.held_globals.append((frame.f_globals, name, frame.f_globals[name]))
                    self._consider(frame.f_globals[name], name, GLOBAL_DEPTH,
                                   Path(frame.f_globals, (("global", name),)))
            for name in imported_modules(code):  # (`import mymod` in the function: its
                module = sys.modules.get(name)  # module's arrays, read live as a global's)
                if module is None:
                    self.imported_later.add(name)  # (first imported by the trace: guarded)
                elif _users_module(module):
                    self._consider(module, name, GLOBAL_DEPTH, Path(module, ()))
            for name in stored_globals(code) - read:  # (written, never read: held all the same)
                value = frame.f_globals.get(name, ABSENT)
                self.held_globals.append((frame.f_globals, name, value))
                if id(value) in self.paths:  # (`prev = W` where prev held W: a tie,
                    self.paths[id(value)].append(  # capture.tie_stored_places)
                        (name, Path(frame.f_globals, (("global", name),))))
        if self.top is None:
            self.top = code
        # the traced function's own locals are its arguments (and self) from outside; a
        # helper's are mostly made inside the trace (a list it fills, a dict of arrays NumPy
        # computed): looked into for generators only (what is outside was found from the top)
        outside = code is self.top
        for name, value in frame.f_locals.items():
            if type(value) is str:  # (a key it may look up: counts[key], `key` given)
                self.given_strings.add(value)
            self._consider(value, name, LOCAL_DEPTH, Path(value, ()), outside=outside)

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

    def random_source(self, value, name):
        """Watch `value` if it is a NumPy generator (OutsideWalk meets it): True if it is one,
        or one of np.random's functions."""
        if isinstance(value, _NUMPY_RANDOM):
            self._watch(value, f"the NumPy generator `{name}`")
            return True
        if type(value) is types.MethodType and value.__self__ is np.random.mtrand._rand:
            self.uses_global = True  # (from numpy.random import normal as N)
            return True
        return False

    def _watch(self, obj, what):
        bit_generator = _bit_generator(obj)
        if id(bit_generator) not in self.probes:
            self.probes[id(bit_generator)] = _Probe(obj, bit_generator, what)


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
