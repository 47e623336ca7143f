"""Arrays a traced function reads from outside its arguments, read again on every call.

`gradc.jit(model.forward)` whose forward reads `self.W`, a loss that reads a global `W`, a closure
over an array: NumPy would read those arrays as they are when the function runs, so an update of
the model's weights (`model.W -= lr * g`, or `model.W = new`) must be seen by the next call. A
trace cannot see through NumPy's own calls on such arrays, but it knows where it met them:
gradc/outside.py's walk (in frozen.Watch) goes through the globals, closures, arguments and
their attributes that each user function can reach, and notes every float array with the way
to it (`Path`). Where such an array (or a view of it: `self.W.T`, `self.W[:, :4]`) meets a
traced value, `captured` makes it an input of the graph instead of a constant (a `Capture`,
appended after the arguments' inputs).

On every call the compiled signature follows each capture's path again (`Captures.read`): the
array found there is passed by reference (in-place updates are seen), a new array of the same
shape and dtype too (a rebound attribute is seen); one of another shape or dtype, or none,
raises CaptureChanged, on which the caller traces again. Numbers, strings and None found the
same way (`self.training`, a global EPS) are compiled in and guarded (`Guard`): those whose
names the user code uses are checked on every call, and another value traces again, as
torch.compile guards its globals. What the trace computed from such an array with NumPy's own
functions (`np.tanh(self.W)` outside any traced value) is still a constant, as in JAX; integer
and boolean arrays (index tables, masks, which may decide shapes) too. `gradc compile` writes
modules whose inputs are the arguments: there the arrays are compiled in, and a
ConstantArrayWarning names them (trace.py).
"""
from __future__ import annotations

import contextlib
import mmap
import sys
import threading
import time
import warnings
from types import CodeType
from typing import NamedTuple

import numpy as np

from .fresh import Fresh
from .frozen import Diverged
from .ir import Value

from .outside import ABSENT, ChangedByTrace, Path, owner_of
from .pytree import typed_key
from .errors import SignatureError, UnsupportedOpError


class Capture(NamedTuple):
    """One captured array: its name in messages (`self.W`), its path, the position of the
    graph input that receives it, and `ties`: (name, path) of the other ways the code names
    that reached the same array when traced (`self.dec` tied to `self.enc`, a global also in a
    dict): the trace read one array for all of them, so a call that finds them apart traces
    again."""
    name: str
    path: Path
    position: int
    ties: tuple = ()
    # (name, path) of the other outside arrays the code names that viewed the same memory when
    # traced (`self.flat = self.W.reshape(-1)`): a view the code took of one (self.flat[:4]) is
    # read through whichever was found first, so a call that finds them apart (self.W rebound:
    # self.flat still views the old weights) traces again
    shares: tuple = ()


class Guard(NamedTuple):
    """A value read from outside the arguments and compiled in: a number, string, None or
    function (`self.training`, a global `EPS`, `self.act`), a list's (class, length), a
    callable object's class, a small array's contents (`content_guards`). A call that finds
    another value there traces again."""
    name: str
    value: object
    path: Path


def same(a, b):
    """Whether a guarded value is still what the trace saw: the same type and value (NaN is
    NaN of the same sign; -0.0 is not 0.0; a set: its elements so compared, {1} is not {1.0};
    an array: the same shape, dtype and elements)."""
    if type(a) is not type(b):
        return False
    if type(a) is CodeType:  # (a function's code: replaced in place by an autoreload)
        return a is b
    if isinstance(a, np.ndarray):  # (an array, or a memmap's contents)
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if a.dtype.kind not in "biufc":  # (structured, text, dates: their bits)
            return a.tobytes() == b.tobytes()
        return (np.array_equal(a, b, equal_nan=True)
                and (a.dtype.kind != "f" or np.array_equal(np.signbit(a), np.signbit(b))))
    if isinstance(a, (float, np.floating, set, frozenset)):
        return typed_key(frozenset(a) if isinstance(a, set) else a) == typed_key(
            frozenset(b) if isinstance(b, set) else b)
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - (a signalling Decimal NaN: compared, it raises)
        return False


class CaptureChanged(SignatureError):
    """An array read from outside the arguments is no longer an array of the traced shape and
    dtype, or a guarded value changed: the caller traces again."""


class _Placeholder(Exception):
    """A traced value found where a capture or guard reads: another thread's trace's."""


class CaptureReshaped(CaptureChanged):
    """An array read from outside the arguments has a new shape or dtype (or is no array)."""


class Captures:
    """The captured arrays of one compiled signature, in input order (they follow the
    arguments' inputs), and its guards."""

    def __init__(self, captures, guards, input_types, numpy_read=(), updated=frozenset()):
        self.captures = list(captures)
        self.guards = [Guard(*g) for g in guards]
        self.types = [input_types[c.position] for c in self.captures]
        # {(id(root), steps)} of the paths to the arrays read_by_numpy found
        self.numpy_read = frozenset(numpy_read)
        # the captures updated in place and those apart from one of them when traced, and how
        # many memories they were then: fewer now, two came together (`m.b = m.a` tied by the
        # user since: the program reads one as it was before the other's update)
        self.apart, self.memories = _apart(self.captures, updated)

    def _moved_together(self, arrays):
        """CaptureChanged where two arrays apart when traced, one of them updated in place, now
        share their memory."""
        if len({id(owner_of(arrays[k])) for k in self.apart}) < self.memories:
            raise CaptureChanged(f"`{', '.join(self.captures[k].name for k in self.apart)}` "
                                 "were apart when traced, and two of them now share memory")

    def __len__(self):
        return len(self.captures) + len(self.guards)

    def hold(self):
        """Whether the guarded values and captured arrays are still what the trace saw."""
        try:
            self.read()
        except CaptureChanged:
            return False
        return True

    def read(self, guards=True):
        """The arrays at the captures' paths now; CaptureChanged if a guarded value changed
        (where `guards`) or one is not an array of the traced shape and dtype. Where another
        thread's trace holds a placeholder there (a traced value it assigned, `self.rm = ...`,
        until it undoes it), after that trace."""
        try:
            return self._read(guards)
        except _Placeholder:
            from .trace import TRACING  # (it imports this module)
            with TRACING:
                pass
            return self._read(guards)

    def _read(self, guards):
        for guard in self.guards if guards else ():
            try:
                now = guard.path.follow()
            except Exception as e:  # noqa: BLE001 - (whatever the path raises: it is gone)
                raise CaptureChanged(
                    f"`{guard.name}` is gone ({type(e).__name__}: {e})") from None
            if isinstance(now, Value):
                raise _Placeholder
            if not same(guard.value, now):
                raise CaptureChanged(_change(guard, now))
        arrays = []
        for capture, (shape, dtype) in zip(self.captures, self.types):
            try:
                x = capture.path.follow()
            except Exception as e:  # noqa: BLE001 - (whatever the path raises: it is gone)
                raise CaptureChanged(
                    f"`{capture.name}` is gone ({type(e).__name__}: {e})") from None
            if isinstance(x, Value):
                raise _Placeholder
            if type(x) not in ARRAY_TYPES or x.shape != shape or x.dtype != dtype:
                now = (f"{x.dtype.name}{list(x.shape)}" if isinstance(x, np.ndarray)
                       else f"a {type(x).__name__}")
                raise CaptureReshaped(f"`{capture.name}` was {np.dtype(dtype).name}{list(shape)} "
                                      f"when traced, now {now}")
            for name, path in capture.ties:
                try:
                    tied = path.follow()
                except Exception:  # noqa: BLE001 - (gone: the trace read it as capture's array)
                    tied = None
                if tied is not x:
                    raise CaptureChanged(f"`{name}` was the array `{capture.name}` is when "
                                         "traced, now another")
            for name, path in capture.shares:
                try:
                    other = path.follow()
                except Exception:  # noqa: BLE001 - (gone: apart)
                    other = None
                if not isinstance(other, np.ndarray) or owner_of(other) is not owner_of(x):
                    raise CaptureChanged(f"`{name}` viewed the memory of `{capture.name}` when "
                                         "traced, now not")
            arrays.append(x)
        self._moved_together(arrays)
        return arrays


def _apart(captures, updated):
    """(the positions of the captures updated in place (`updated`: their arrays' ids,
    Graph.updated) and of those whose memory was another than one of theirs when traced, the
    number of memories among them then)."""
    try:
        arrays = [c.path.follow() for c in captures]
    except Exception:  # noqa: BLE001 - (gone meanwhile: the next call traces again anyway)
        return (), 0
    owners = [owner_of(a) if isinstance(a, np.ndarray) else a for a in arrays]
    changed = [i for i, a in enumerate(arrays) if id(a) in updated]
    apart = tuple(sorted({k for i in changed for j in range(len(arrays))
                          if owners[j] is not owners[i] for k in (i, j)}))
    return apart, len({id(owners[k]) for k in apart})


# what a capture's path may lead to: a memmap is read live as an array is (compiled in, a
# global once a memmap was never looked at again: rebound to an array, it stayed the memmap)
ARRAY_TYPES = (np.ndarray, np.memmap, Fresh)  # (Fresh: made by a trace, `self.buf = np.ones(4)`)


NO_CAPTURES = Captures([], [], [])
# an array found outside the arguments that no traced operation read may have been computed from
# with NumPy alone (np.sqrt(self.running_var + eps), np.diag(1 / self.v)), which is compiled in:
# up to this many elements its contents are guarded (compared on every call); larger ones of the
# size of a float array compiled in are named in a warning
CONTENT_GUARD_SIZE = 4096


def uncaptured(graph, watch):
    """[(name, array, path)] of the float arrays outside the arguments that the code's names
    reach (frozen.Watch) but that no traced operation read."""
    names = watch.names()
    found = []
    for i, (_, array, _) in watch.arrays.items():
        if i not in graph.captured:  # (through any of its ways: ud["W"] of a UserDict is
            # first found as ud.data["W"], a way the code does not name)
            found += [(name, array, path) for name, path in watch.paths.get(i, ())
                      if path.named_in(names)][:1]
    return found


def content_guards(graph, watch, given=frozenset()):
    """Guards on the contents of the small uncaptured arrays (what NumPy may have computed
    from alone: no trace sees its reads; np.diag(1 / self.prior_var) was compiled in and never
    checked, as it had another size): every one up to CONTENT_GUARD_SIZE elements. One the
    code names in a branch not taken (`self.running_mean` while training) traces again once
    when it changes, and is no longer checked where that made the same program
    (`unchanged_by`). See CONTENT_GUARD_SIZE. Not those that are arguments too (`given`: ids;
    the model's own params dict passed to train_step, `self.params["W"].shape` read through
    self): their contents change every step, so read_by_numpy tries them instead."""
    names, cells = watch.names(), watch.cells_read()
    guards = []
    for name, array, path in uncaptured(graph, watch):
        if id(array) in given or id(array) in graph.moved:  # (moved by reference alone,
            continue  # `self.hist = [self.W] + self.hist[:1]`: read_by_numpy tries them)
        # (a larger one too where the code bound it anew, `self.W = np.clip(self.W, -1, 1)`:
        # the array it left there is another, so the next call traces again and binds it, as
        # NumPy's code runs; it was compiled in once, stale. At every path that reaches it:
        # tied weights, `m.dec = m.enc`, combined by NumPy alone, untied by `m.dec = m.enc * 5`)
        if array.size <= CONTENT_GUARD_SIZE or watch.bound_anew(path, array):
            named = [(n, p) for n, p in watch.paths.get(id(array), []) if p.named_in(names)]
            ways = [(n, p) for n, p in named if not (
                p.steps and p.steps[-1][0] == "cell" and p.steps[-1][1] not in cells)]
            if named and not ways:  # (a closure variable only assigned, `nonlocal prev;
                continue  # prev = W`: its array was never read)
            guards += [(n, array.copy(), p) for n, p in ways or [(name, path)]]
    return guards + [(name, array.copy(), path) for name, array, path in named_tables(watch)
                     if array.size <= CONTENT_GUARD_SIZE]


def read_by_numpy(graph, watch, retrace, program_text, seconds, follows=True,
                  given=frozenset()):
    """[(name, array, path)] of the outside arrays whose contents the traced program depends
    on though no trace saw them read: NumPy computed from them alone, and what it computed
    is compiled in (cs231n's `loss += reg * np.sum(W * W)` beside a traced `X.dot(W)`: the
    penalty of the first weights on every later step). Found by tracing again with their
    contents changed (`_changed`): where the program (`program_text` of `retrace()`) is not
    the same, or that trace raises or runs past a time limit (`_within`, `seconds`), the
    contents count, and halves of the arrays are tried until each one that counts is found.
    Arrays tried: those the program reads live (graph inputs: their contents are not in the
    program unless NumPy read them too) and the others the code names too large to have their
    contents guarded anyway, or that are arguments too (content_guards; `given`: their ids).
    Those traces follow the first's calls (frozen.following); what they change outside is put
    back (outside.restore, _process_state); what they print or log is not shown. A function
    whose trace drew from an outside iterator is not traced again (that cannot be put back);
    where runs of other threads reading the arrays do not end (OUTSIDE_READS), where the first
    trace's calls were not seen (`follows`: under another profiler, cProfile's), or where the
    program has no text to compare, every array tried counts."""
    inputs = {v.id: watch.arrays[key][1] for key, v in graph.captured.items()
              if key in watch.arrays}
    tried = [(c.name, inputs[graph.inputs[c.position].id], c.path) for c in graph.captures
             if graph.inputs[c.position].id in inputs]
    tried += [t for t in uncaptured(graph, watch)
              if t[1].size > CONTENT_GUARD_SIZE or id(t[1]) in given or id(t[1]) in graph.moved]
    tried = [t for t in tried if _changeable(owner_of(t[1]))]
    if not tried:
        return []
    if not follows:
        return tried
    try:
        traced = program_text(graph)
    except Exception:  # noqa: BLE001 - (an attribute the text does not know: not compared,
        return tried  # so not known not to count)

    everyone = [a for _, a, _ in tried]

    def counts(arrays):
        with _changed([a for _, a, _ in arrays], everyone):
            try:
                return program_text(_within(retrace, seconds)) != traced
            except (Exception, SystemExit, Diverged):  # noqa: BLE001 - (those contents took
                return True  # another branch, were refused, an assert, a sys.exit: they count)

    left = [PROBE_TRACES]

    def which(arrays):
        if left[0] <= 0:  # (out of traces: the group counts whole)
            return arrays
        left[0] -= 1
        if not counts(arrays):
            return []
        if len(arrays) == 1:
            return arrays
        half = len(arrays) // 2
        return which(arrays[:half]) + which(arrays[half:]) or arrays

    # (traced again because one that counted changed: those found then count still, and those
    # of them that changed are tried together: a model's trained weights, found beside frozen
    # ones that count, each step)
    known = getattr(_numpy_read, "paths", None) or frozenset()
    moved = getattr(_numpy_read, "changed", None) or frozenset()
    again = [t for t in tried if (id(t[2].root), t[2].steps) in known]
    rest = [t for t in tried if (id(t[2].root), t[2].steps) not in known]
    kept = [t for t in again if (id(t[2].root), t[2].steps) not in moved]
    again = [t for t in again if (id(t[2].root), t[2].steps) in moved]

    with _probing(watch) as paused:
        if not paused:  # (a run of another thread that reads them did not end)
            return tried
        found = kept + (again if again and counts(again) else [])
        return found + which(rest)  # (a program that differs on each trace, one that
        # compiles in the clock, makes them all count: checked, traced again as they change)


def numpy_writes(arrays, watch, retrace, seconds):
    """The names (`self.v`, with the line that stores into it where found) of the outside
    arrays NumPy alone writes into where `arrays` (those the trace updated in place with a
    traced value) hold other contents: `self.v *= 0.9; self.v += g`,
    `np.add(self.v, g, out=self.v); self.W -= 0.1 * self.v`. The compiled function makes only
    the traced updates; the first trace's bytes could not tell (zeros times 0.9 are zeros, W
    minus 0.1 times zeros is W). Traced again with their contents changed (_changed: zeros are
    0.75 there), the arrays compared after that trace (Graph.written, before its restore puts
    them back)."""
    arrays = [a for a in arrays if _changeable(owner_of(a))]
    if not arrays:
        return []

    def named(array_id, name=None):
        found = watch.arrays.get(array_id)
        if found is None:
            return f"`{name}`"
        name, path = watch.way_to(found[1])
        return f"`{name}`{watch.stored_along(path)}"  # (`self.v *= 0.9`'s line)

    with _probing(watch) as paused:
        if not paused:  # (another thread's run did not end: not known not to, so they count)
            return [named(id(a)) for a in arrays]
        with _changed(arrays, arrays):
            before = [a.copy() for a in arrays]
            try:
                graph = _within(retrace, seconds)
            except (Exception, SystemExit, Diverged):  # noqa: BLE001 - (that trace took
                return []  # another way: not known to write; the first trace's checks stand)
            written = dict(getattr(graph, "written", {}))
            for a, b in zip(arrays, before):
                if id(a) not in written and not np.array_equal(a, b, equal_nan=True):
                    written[id(a)] = None
            return [named(i, name) for i, name in written.items()]


# set while read_after_update's trace runs: what the trace then updates in place with a traced
# value has its memory changed at that moment (trace.py's _array_ufunc), put back at its end
AFTER_UPDATES = threading.local()


def read_after_update(graph, watch, retrace, program_text, seconds):
    """Whether NumPy alone reads an array after the code updated it in place with a traced
    value (`np.subtract(W, g, out=W); W.sum()`, `self.total += x; self.total * 2` of a NumPy
    read): that read would see the update, which the trace has no numbers for. Traced again
    with each such array's memory changed at its update: a program (or what NumPy stored
    outside) unlike the first, or a trace that goes another way, says it was read after. (A
    read before the update, an L2 penalty `np.sum(W * W)` before `W -= lr * dW`, is one the
    first trace's checks take; the trace after a call reads it live, gradc/live.py.)"""
    try:
        first = program_text(graph)
    except Exception:  # noqa: BLE001 - (no text to compare: not known)
        return True
    with _probing(watch) as paused:
        if not paused:
            return True
        AFTER_UPDATES.on = True
        try:
            return program_text(_within(retrace, seconds)) != first
        except (Exception, SystemExit, Diverged):  # noqa: BLE001 - (it went another way)
            return True
        finally:
            AFTER_UPDATES.on = False


@contextlib.contextmanager
def _probing(watch):
    """Around a trace on other contents: other threads' compiled runs that read outside arrays
    wait (OUTSIDE_READS; yields whether they did: False where one did not end), its warnings,
    output and log records are not shown, and what it changes of the process is put back
    (_process_state)."""
    with OUTSIDE_READS.paused() as paused, warnings.catch_warnings(), _quiet("stdout"), \
            _quiet("stderr"), _quiet_logging(), _process_state(watch), _plain_as_found(watch), \
            watch.stores_as_found():
        warnings.simplefilter("ignore")
        yield paused


_SIMPLE = (int, float, bool, str, type(None))


@contextlib.contextmanager
def _plain_as_found(watch):
    """The numbers and strings outside that the first trace changed (nnfs's `self.iterations
    += 1`) as that trace found them while a probe traces again, and as it left them after: the
    probe's stores (`stored self['iterations'] int:2`) differed from the first's by that
    change alone, and an in-place update beside the counter was refused as read after it; an
    array the first trace made where it found None, `if self.W0 is None: self.W0 = ...`, too:
    the probe took the other way)."""
    changed = []
    for _, value, path in list(getattr(watch, "plain", ())):
        if type(value) not in _SIMPLE or not path.steps or path.steps[-1][0] not in (
                "attr", "item", "global"):
            continue
        try:
            parent, now = Path(path.root, path.steps[:-1]).follow(), path.follow()
        except Exception:  # noqa: BLE001 - (gone)
            continue
        if (type(now) in _SIMPLE or type(now) is np.ndarray) and (  # (or an array it made
                type(now) is not type(value) or now != value):  # where it found None: `if
            changed.append((parent, path.steps[-1], now))  # self.W0 is None: self.W0 =
            _put(parent, path.steps[-1], value)  # self.W.copy()`, taken the other way)
    try:
        yield
    finally:
        for parent, step, now in reversed(changed):
            _put(parent, step, now)


def _put(parent, step, value):
    kind, key = step
    try:
        if kind == "attr":
            setattr(parent, key, value)
        else:
            parent[key] = value
    except Exception:  # noqa: BLE001 - (a property, a frozen object: left as it is)
        pass


@contextlib.contextmanager
def _process_state(watch):
    """NumPy's error mode, the environment, and the states of the random generators the first
    trace found (NumPy's global one, those on the model, Python's `random`) put back on
    leaving: what a branch only other contents take may change before its first call stops
    it (a scalar draw, `np.seterr(over="raise")`, `os.environ[...] = ...`)."""
    import os
    import random as py_random
    errors, environ, py_state = np.geterr(), dict(os.environ), py_random.getstate()
    states = []
    for probe in list(watch.probes.values()):
        obj = probe.obj
        try:
            if isinstance(obj, np.random.RandomState):
                states.append((obj.set_state, obj.get_state(legacy=False)))
            else:
                holder = getattr(obj, "bit_generator", obj)
                states.append((lambda s, h=holder: setattr(h, "state", s), holder.state))
        except Exception:  # noqa: BLE001 - (a state that cannot be read: left as it is)
            continue
    try:
        yield
    finally:
        np.seterr(**errors)
        py_random.setstate(py_state)
        for put, state in states:
            put(state)
        for key in set(os.environ) - set(environ):
            del os.environ[key]
        for key, value in environ.items():
            if os.environ.get(key) != value:
                os.environ[key] = value


@contextlib.contextmanager
def _quiet(name):
    """sys.stdout (or stderr) writes nothing of this thread's meanwhile; other threads' output
    goes on to the stream as before."""
    stream = getattr(sys, name)
    quiet = _Quiet(stream, threading.get_ident())
    setattr(sys, name, quiet)
    try:
        yield
    finally:
        quiet.ident = None  # (one another thread's redirect_stdout put back later forwards all)
        if getattr(sys, name) is quiet:
            setattr(sys, name, stream)


@contextlib.contextmanager
def _quiet_logging():
    """The `logging` handlers of every logger drop this thread's records meanwhile (a handler
    holds its own stream: the probe's `log.info(f"norm {np.linalg.norm(W)}")` showed the
    changed weights' norm); other threads' records go on."""
    import logging
    ident = threading.get_ident()

    def others(record):
        return record.thread != ident

    loggers = [logging.getLogger()] + [x for x in list(logging.Logger.manager.loggerDict.values())
                                       if isinstance(x, logging.Logger)]
    handlers = {id(h): h for x in loggers for h in x.handlers}.values()
    for handler in handlers:
        handler.addFilter(others)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(others)


class _Quiet:
    def __init__(self, stream, ident):
        self._stream, self.ident = stream, ident

    def write(self, text):
        return len(text) if threading.get_ident() == self.ident else self._stream.write(text)

    def __getattr__(self, name):  # (flush, fileno, encoding...: the stream's)
        return getattr(self._stream, name)


_numpy_read = threading.local()


@contextlib.contextmanager
def numpy_read_before(stale, changed=frozenset()):
    """read_by_numpy, in a trace begun inside, takes the arrays `stale` (the Compiled traced
    before, or None) found NumPy read (Captures.numpy_read) as found again, and tries those of
    them whose contents `changed` (changed_contents) together: one trace, where finding each
    anew took two per array, on every step of a training loop that updates them."""
    _numpy_read.paths = getattr(getattr(stale, "captures", None), "numpy_read", None)
    _numpy_read.changed = changed
    try:
        yield
    finally:
        _numpy_read.paths = _numpy_read.changed = None


# how many traces on changed contents read_by_numpy takes at most to find which arrays count
# (each that counts costs about two: 16 weights under an L2 penalty took 31, 2.4 s a step)
PROBE_TRACES = 7


# what `_changed` multiplies the elements by, in turn: in scale, in direction, in sign, past
# thresholds (W / norm(W), W > 0 and min(1, c / norm(W)) change too)
_FACTORS = np.array([2.0, -3.0, 1000.0, 0.25])


@contextlib.contextmanager
def _changed(arrays, kept=()):
    """The memory of `arrays` changed in place (each element times one of _FACTORS), and that
    of `kept` too where the code writes into it meanwhile: both put back bit for bit on
    leaving, from copies (`self.flags[0] = 1.0` in a branch only the changed contents take
    runs before the first call stops it: frozen.following)."""
    owners = {}
    for a in list(arrays) + list(kept):
        owners.setdefault(id(owner_of(a)), owner_of(a))
    changed = {id(owner_of(a)) for a in arrays}
    saved = []
    try:
        for key, owner in owners.items():
            saved.append((owner, owner.copy(order="K")))
            if key in changed:
                scale_contents(owner)
        yield
    finally:
        for owner, copy in saved:
            np.copyto(owner, copy)


def scale_contents(owner):
    """Multiply the elements of `owner` by _FACTORS in turn, in place, and make its zeros 0.75
    (zeros times anything stay zeros: `self.total += x.sum(); return self.total * 2` of a total
    begun at 0, `W != 0` of a sparse W, were not seen to count)."""
    flat = owner.ravel(order="K")  # (a view of contiguous memory; np.resize took 11 ms of 36)
    with np.errstate(all="ignore"):
        if np.may_share_memory(flat, owner):
            for k, factor in enumerate(_FACTORS):
                flat[k::len(_FACTORS)] *= factor
            flat[flat == 0] = 0.75
        else:
            owner *= np.resize(_FACTORS.astype(owner.dtype), owner.size).reshape(owner.shape)
            owner[owner == 0] = 0.75


def _changeable(owner):
    """Whether `_changed` may write into the memory of `owner` (an array that views no other
    array): a writeable float array whose memory is no file's (a memmap, np.frombuffer of an
    mmap: its pages would be written out)."""
    if (not isinstance(owner, np.ndarray) or isinstance(owner, np.memmap)
            or owner.dtype.kind != "f" or not owner.size or not owner.flags.writeable):
        return False
    base = owner.base
    while base is not None:  # (what holds the memory: bytes, a bytearray, a torch tensor...)
        if isinstance(base, (mmap.mmap, np.memmap)):
            return False
        base = getattr(base, "base", None) or getattr(base, "obj", None)
    return True


class _TimeUp(BaseException):
    """Raised in a thread whose `_within` call ran past its time."""


def _within(call, seconds):
    """call(), raising TimeoutError if it runs past `seconds` (a loop over the changed contents
    of read_by_numpy that never ends: a series that diverges). The limit is an asynchronous
    exception (_TimeUp) raised in this thread, so between Python's instructions only: a long
    NumPy call finishes first. (It is never cleared once set: setting none, NULL, left
    CPython 3.11's eval breaker set, and the next trace stalled.)"""
    import ctypes
    ident, lock, state = threading.get_ident(), threading.Lock(), {"armed": True, "fired": False}

    def stop():
        with lock:
            if state["armed"]:
                state["fired"] = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident),
                                                           ctypes.py_object(_TimeUp))

    timer = threading.Timer(seconds, stop)
    timer.daemon = True
    try:
        try:
            timer.start()
            return call()
        finally:
            timer.cancel()
            with lock:
                state["armed"] = False
            if state["fired"]:  # (raised, or about to be: at one of these instructions)
                for _ in range(10_000_000):
                    pass
    except _TimeUp:
        raise TimeoutError(f"traced again past {seconds:.1f} s") from None


class _OutsideReads:
    """Runs of compiled programs that read arrays from outside their arguments keep out of
    the way of `read_by_numpy`, which changes those arrays for a moment: a run waits while
    it does (`with OUTSIDE_READS:` around the driver), and it waits for the runs under way
    (up to WAIT seconds; past that every array counts). The thread that pauses them may run
    programs meanwhile (a compiled function the traced code calls on NumPy arrays)."""

    WAIT = 10.0

    def __init__(self):
        self._gate = threading.RLock()
        self._running = []  # one item per run under way (append and pop: atomic)

    def __enter__(self):
        with self._gate:
            self._running.append(None)

    def __exit__(self, *exc):
        self._running.pop()

    @contextlib.contextmanager
    def paused(self):
        with self._gate:
            deadline = time.monotonic() + self.WAIT
            while self._running and time.monotonic() < deadline:
                time.sleep(0.0005)
            yield not self._running


OUTSIDE_READS = _OutsideReads()


def changed_contents(stale):
    """{(id(root), steps)} of the paths to the arrays whose contents `stale` (a Compiled, or
    None) guards and that changed since."""
    changed = set()
    for guard in stale.captures.guards if stale is not None else ():
        if isinstance(guard.value, np.ndarray):
            try:
                now = guard.path.follow()
            except Exception:  # noqa: BLE001 - (gone: another reason to trace again)
                continue
            if not same(guard.value, now):
                changed.add((id(guard.path.root), guard.path.steps))
    return changed


def unchanged_by(captures, stale, compiled, names_run):
    """After tracing again because a guarded array changed (`stale`, the Compiled traced
    before), with the lines run recorded (`names_run`: what they read, frozen.Watch): an array
    that no line run names, `self.running_mean` in a branch not taken while training, reached
    no result, so where the new trace made the same program (`compiled.digest`) its contents
    are not checked again (`captures` loses those guards); it would trace again on every step.
    One a line run names stays checked: NumPy read it, and a program alike for its old and
    new contents (np.clip saturated both) need not be for the next; unless the new trace read
    it live through NumPy's functions alone (gradc/live.py: traced, its contents made no
    constant; `x, w, b = self.cache` of a b the backward never uses; not `b[0] > 1`)."""
    if (names_run is None or stale is None or compiled.digest is None
            or compiled.digest != stale.digest):
        return
    changed = changed_contents(stale)
    live = {(id(p.root), p.steps) for p in getattr(compiled, "read_live", ())} - set(
        captures.numpy_read or ())  # (but what its probe found NumPy read: np.array(W) stored)
    captures.guards = [g for g in captures.guards
                       if (id(g.path.root), g.path.steps) not in changed
                       or g.path.named_in(names_run)
                       and (id(g.path.root), g.path.steps) not in live]


def unwritten(captures, stale, compiled):
    """After tracing again because a value the function assigns outside changed (DLFS's
    `self.loss = ...; return self.loss`, a metrics dict's `self.stats["mu"] = mu`: the
    write-back after each call changes what the next call finds there), where the new trace,
    on another value, made the same program, that value is not checked again: the program
    writes it and never read the old one (one it read and compiled in, `0.9 * self.loss +
    ...`, makes another program, and stays checked)."""
    if stale is None or compiled.digest is None or compiled.digest != stale.digest:
        return
    written = getattr(compiled, "write_backs", ())
    before = {(id(g.path.root), g.path.steps): g.value for g in stale.captures.guards}

    def other_value(g):  # (the old value traced again was another: 0.0 then np.float64(0.0)
        old = before.get((id(g.path.root), g.path.steps), ABSENT)  # is the same, and an
        if old is ABSENT:  # EMA's `0.9 * self.smooth` of it made the same program)
            return False
        if isinstance(old, np.ndarray) or isinstance(g.value, np.ndarray):
            return not same(old, g.value)  # (an array written back, `self.stats["mu"] = mu`)
        try:
            return bool(old != g.value)
        except Exception:  # noqa: BLE001 - (no answer: not known to be another)
            return False

    def dropped_before(g):  # (stale wrote it back too, and did not check it: a value it
        # did not have, or a check an earlier retrace dropped; kept, two values written back
        # in turn, `self.cache = x` and `self.dW = ...`, traced again on every call)
        return ((id(g.path.root), g.path.steps) not in before
                and g.path.assigned_by(getattr(stale, "write_backs", ())))

    numpy_read = captures.numpy_read or frozenset()  # (NumPy alone read it too, `self.snap =
    # self.W.astype(np.float32)` beside `self.W -= lr * g`: what it made from the old value
    # is no part of the program, so an alike program says nothing; checked still)
    captures.guards = [g for g in captures.guards
                       if not (g.path.assigned_by(written)
                               and (id(g.path.root), g.path.steps) not in numpy_read
                               and (other_value(g) or dropped_before(g)))]


def named_tables(watch):
    """[(name, array, path)] of the integer and boolean arrays outside the arguments that the
    code's names reach: index tables and masks, which a trace compiles in where it indexes with
    them (x[IDX] gathers at positions computed from IDX), so a change to one must trace again
    (it was read stale: x[IDX] after IDX[0] = 2 gathered the old rows)."""
    names = watch.names()
    return [t for t in watch.tables.values() if t[2].named_in(names)]


def _change(guard, now):
    """What changed, for the compile log and CaptureChanged."""
    was = guard.value
    if isinstance(was, ChangedByTrace):
        return (f"`{guard.name}` was {was}: traced again, as NumPy's code would run its "
                "Python again")
    if not isinstance(was, np.ndarray):  # (now an array: one the trace built, outside._built)
        now = (f"a {now.dtype.name}{list(now.shape)} array" if isinstance(now, np.ndarray)
               else repr(now))
        was = "not there" if was is ABSENT else repr(was)
        return f"`{guard.name}` was {was} when traced, now {now}"
    kind = f"{was.dtype.name}{list(was.shape)}"
    if isinstance(now, np.ndarray) and (now.shape, now.dtype) == (was.shape, was.dtype):
        return (f"`{guard.name}` ({kind}, compiled in: the trace read it with NumPy alone) "
                "changed")
    now = f"{now.dtype.name}{list(now.shape)}" if isinstance(now, np.ndarray) else repr(now)
    return f"`{guard.name}` was {kind} when traced, now {now}"


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def captured(graph, x):
    """The graph input that reads the NumPy array `x` on every call, if the trace found `x` (or
    the array whose memory `x` views) outside the traced function's arguments; else None."""
    watch = graph.outside
    if watch is None or x.dtype not in _FLOATS or x.size == 0:
        return None
    updated = graph.in_place.get(id(x))
    if updated is not None and updated[0] is x:  # (`params["W"] -= g` before: its new value)
        return updated[1]
    through = _updated_through_alias(graph, x)
    if through is not None:
        return through
    found = watch.arrays.get(id(x))
    if found is None and watch.frontier:
        watch.look_beyond(x)  # (past the walk's limits: a layer deep down, a long list's)
        found = watch.arrays.get(id(x))
    if found is not None and found[1] is x:
        return _input(graph, x, *watch.way_to(x))
    owner = owner_of(x)
    if owner is x:
        return None
    unflipped, flips = _unflipped(x)
    for _, base, _ in watch.arrays.values():  # (an array found outside that x views)
        if owner_of(base) is owner:
            recipe = view_recipe(unflipped, base)
            if recipe is not None:
                break
    else:
        return None
    v = _input(graph, base, *watch.way_to(base))
    _note_shares(graph, base)
    return _made_by(v, recipe, x.shape, flips)


def _unflipped(x):
    """(x with its reversed axes turned forward, those axes): view_recipe makes no reversal."""
    flips = [k for k in range(x.ndim) if x.strides[k] < 0 and x.shape[k] > 1]
    return x[tuple(slice(None, None, -1) if k in flips else slice(None)
                   for k in range(x.ndim))], flips


def _made_by(v, recipe, shape, flips):
    """The value of a view of shape `shape` made from `v` (the value of the array it views) by
    view_recipe's `recipe`, its `flips` axes reversed after."""
    from .ops import fn
    perm, base_shape, starts, stops, steps, lengths, axes = recipe
    v = fn.slice_(fn.reshape(fn.transpose(v, perm), base_shape), starts, stops, steps)
    v = fn.reshape(fn.transpose(fn.reshape(v, lengths), axes), shape)
    if flips:  # (x[::-1]: the last element first)
        v = fn.slice_(v, [n - 1 if k in flips else 0 for k, n in enumerate(shape)],
                      [-1 if k in flips else n for k, n in enumerate(shape)],
                      [-1 if k in flips else 1 for k in range(len(shape))])
    return v


def _user_source():
    from .trace import user_source  # (it imports this module)
    return user_source()


def _updated_through_alias(graph, x):
    """The value of x where the code updated in place, before this read, another outside array
    whose memory x shares (`self.flat -= lr * g`, then `self.W`, a view of flat): made from
    the updated value, as NumPy's x shows the update; None where none such was updated. One x
    cannot be made from (a view of x was updated, `self.b = self.a[:]; self.b -= g`, then
    `self.a` read) is refused: its read would miss the update."""
    for into, value in list(graph.in_place.values()):
        if into is x or owner_of(into) is not owner_of(x) or not np.shares_memory(into, x):
            continue
        unflipped, flips = _unflipped(x)
        recipe = view_recipe(unflipped, into)
        if recipe is not None:
            return _made_by(value, recipe, x.shape, flips)
        watch = graph.outside
        name = watch.way_to(x)[0] if id(x) in watch.arrays else "an array"
        updated = watch.way_to(into)[0] if id(into) in watch.arrays else "an array"
        raise UnsupportedOpError(
            f"`{name}` shares memory with `{updated}`, which the function updated in place "
            "before this read: NumPy reads the update through it, and gradc can make it only "
            "where it views the updated array (`self.W` a view of `self.flat`, after `self.flat "
            "-= g`). Update the array it views instead, or read the updated array itself",
            source=_user_source())
    return None


def tie_stored_places(graph, watch):
    """Add to each capture's ties the other places that held its array when traced which the
    code entered stores into, though it never reads them (`self.prev = self.W`, where
    __init__ set prev to W: the store binds nothing new when traced, so nothing is written
    back; a call that finds prev and W apart traces again, and that trace writes prev back)."""
    array_ids = {v.id: key for key, v in graph.captured.items()}
    stores = watch.stores()  # (by code, cached: the bytecode scan for a line only where the
    stored = {"attr": stores.attrs, "global": stores.globals, "cell": stores.cells}  # name is)
    for n, capture in enumerate(graph.captures):
        ways = watch.paths.get(array_ids.get(graph.inputs[capture.position].id), ())
        known = {(id(p.root), p.steps) for _, p in capture.ties} | {
            (id(capture.path.root), capture.path.steps)}
        more = tuple((name, p) for name, p in ways if p.steps
                     and (id(p.root), p.steps) not in known
                     and (p.steps[-1][1] in stored[p.steps[-1][0]]
                          if p.steps[-1][0] in stored else stores.items)
                     and watch.stored_at(p))
        if more:
            graph.captures[n] = capture._replace(ties=capture.ties + more)


def _input(graph, x, name, path):
    v = graph.captured.get(id(x))
    if v is None:
        v = graph.captured[id(x)] = graph.add_input(x.shape, x.dtype, name=name)
        watch = graph.outside
        names = watch.names()
        ties = tuple((n, p) for n, p in watch.paths.get(id(x), ())  # (a frame's local, the
                     if p is not path and p.steps and p.named_in(names))  # array itself: no way
        # that can change; as a tie it kept `nonlocal state; state = state + x` tracing again)
        graph.captures.append(Capture(name, path, len(graph.inputs) - 1, ties))
    return v


def _note_shares(graph, base):
    """A view read through `base` (`captured`), which was chosen among the outside arrays the
    code names that view the same memory: those (up to eight) become its Capture's shares."""
    watch, owner = graph.outside, owner_of(base)
    names = watch.names()
    shares = tuple((n, p) for n, other, p in watch.arrays.values()
                   if other is not base and owner_of(other) is owner and p.named_in(names))[:8]
    read = graph.captured[id(base)]
    for k, capture in enumerate(graph.captures):
        if graph.inputs[capture.position] is read and shares:
            known = {(id(p.root), p.steps) for _, p in capture.shares}
            graph.captures[k] = capture._replace(shares=capture.shares + tuple(
                (n, p) for n, p in shares if (id(p.root), p.steps) not in known))


def view_recipe(view, base):
    """How to make `view` from the array `base` whose memory it views, as (perm, shape, starts,
    stops, steps, lengths, axes): transpose base by `perm`, reshape to `shape`, slice it,
    reshape to `lengths` (dropping the axes an index took), transpose by `axes`, reshape to
    view.shape. None where no such recipe makes it (reversed or repeated elements, another
    dtype). W.T of a (3, 4) W: ((0, 1), (3, 4), (0, 0), (3, 4), (1, 1), (3, 4), (1, 0)). Tried
    on base's own axes, outermost first (what basic indexing and transposes make, of a
    Fortran-order or sliced base too), then, for a C-contiguous base, on a shape cut to the
    view's strides (reshapes)."""
    item = base.itemsize
    offset = view.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    kept = [k for k in range(view.ndim) if view.shape[k] != 1]  # (size-1 axes: any stride)
    if view.dtype != base.dtype or offset % item or any(
            view.strides[k] <= 0 or view.strides[k] % item for k in kept) or any(
            s <= 0 or s % item for s in base.strides):
        return None
    order = sorted(kept, key=lambda k: -view.strides[k])  # outermost first
    strides = [view.strides[k] // item for k in order]
    lengths = tuple(view.shape[k] for k in order)
    axes = tuple(sorted(range(len(order)), key=lambda j: order[j]))  # back to the view's order
    perm = tuple(sorted(range(base.ndim), key=lambda a: -base.strides[a]))
    tries = [(perm, tuple(base.shape[a] for a in perm), [base.strides[a] // item for a in perm])]
    cut = _cut_to(strides, base.size) if base.flags.c_contiguous else None
    if cut:
        tries.append((tuple(range(base.ndim)), tuple(cut), _c_strides(cut)))
    for perm, shape, apart in tries:
        slicing = _slicing(shape, apart, strides, lengths, offset // item)
        recipe = slicing and (perm, shape) + slicing + (lengths, axes)
        if recipe and _makes(base, view, recipe):
            return recipe
    if base.flags.c_contiguous and strides == _c_strides(list(lengths)):  # (a run of base's
        # elements: theta[:D * H].reshape(D, H) of a flat vector whose length H does not
        # divide, compiled in before, stale)
        start = offset // item
        recipe = ((tuple(range(base.ndim)), (base.size,), (start,),
                   (start + int(np.prod(lengths, dtype=np.int64)),), (1,), lengths, axes))
        if _makes(base, view, recipe):
            return recipe
    return None


def _c_strides(shape):
    return [int(np.prod(shape[a + 1:], dtype=np.int64)) for a in range(len(shape))]


def _cut_to(strides, size):
    """A C-order shape of `size` elements whose axes lie `strides` apart (the innermost 1
    apart), or None."""
    inner = strides[:-1] + [1]
    outer = [size] + strides[:-1]
    if any(o % i for o, i in zip(outer, inner)):
        return None
    return [o // i for o, i in zip(outer, inner)]


def _slicing(shape, apart, strides, lengths, offset):
    """(starts, stops, steps) slicing an array of `shape`, whose axes lie `apart` elements
    apart (outermost first), to axes of `lengths` that lie `strides` apart (outermost first)
    from element `offset`, or None."""
    if not shape:
        return None
    starts = [offset // apart[0]] + [offset // apart[a] % shape[a] for a in range(1, len(shape))]
    stops, steps = [s + 1 for s in starts], [1] * len(shape)
    a = 0
    for stride, length in zip(strides, lengths):  # each view axis on the next axis it steps along
        while a < len(shape) and (stride % apart[a] or starts[a] + (length - 1) * (
                stride // apart[a]) >= shape[a]):
            a += 1
        if a == len(shape):
            return None
        steps[a] = stride // apart[a]
        stops[a] = starts[a] + (length - 1) * steps[a] + 1
        a += 1
    return tuple(starts), tuple(stops), tuple(steps)


def _makes(base, view, recipe):
    """Whether `recipe` made on NumPy's own arrays is `view`: the same memory, shape, strides."""
    perm, shape, starts, stops, steps, lengths, axes = recipe
    try:
        made = base.transpose(perm).reshape(shape)[tuple(map(slice, starts, stops, steps))]
        made = made.reshape(lengths).transpose(axes).reshape(view.shape)
    except ValueError:
        return False
    return (made.__array_interface__["data"][0] == view.__array_interface__["data"][0]
            and made.shape == view.shape
            and all(n == 1 or s == t for n, s, t in zip(view.shape, made.strides, view.strides)))
