"""What a traced function can reach from outside its arguments, found by walking it.

gradc/frozen.py's Watch walks, as each user function is entered while tracing, the globals its
code reads, the traced function's own arguments, `self`, closure, defaults and partial
arguments, and what those hold (attributes, class attributes, items, the user's modules), a few
levels down (`OutsideWalk`). It notes NumPy float arrays (`arrays`) and numbers, strings, None,
functions, classes and lengths (`plain`), each with the `Path` to it, which gradc/capture.py
follows again on every call: arrays become inputs read live, the rest guards, kept where the
code reads them (`Names`, from its bytecode). Containers it met are `held`: a traced value the
trace stored into one is refused and undone, a list changed or an entry taken out warned about;
iterators and generators are noted with what tells how far they are (`_progress`): one the trace
drew from is warned about too. The same walk finds NumPy generators for the random-draw check
(frozen.py), through `random_source`.
"""
from __future__ import annotations

import builtins
import collections
import contextlib
import copy
import decimal
import dis
import enum
import fractions
import functools
import gc
import hashlib
import inspect
import itertools
import keyword
import operator
import os
import re
import sys
import types
import warnings
import weakref
from typing import NamedTuple

import numpy as np

from .fresh import Fresh
from .live import Live, array_of, entry_of, is_container, is_namedtuple, slots_of
from .ir import Value
from .pytree import typed_key

# gradc and the libraries it runs while tracing: never user code, and not outside state
LIBRARIES = ("gradc", "numpy", "numba", "llvmlite", "dataclasses")
# what the walk does not look into (numbers and strings are noted, not walked)
SKIP = (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType, types.MethodType,
        np.ndarray, np.generic, str, bytes, int, float, complex, bool, type(None))


# the attributes a Path takes through a function or partial (its cells, defaults, arguments): no
# code names them, but what they hold is what the code reads
_HELD_BY_CALLABLES = frozenset({"cell_contents", "__defaults__", "__kwdefaults__", "args",
                                "keywords", "__self__", "__code__"})


def _step(x, kind, key):
    """What one step of a Path reaches from `x`."""
    return (getattr(x, key) if kind == "attr" else (type(x), _extent(x)) if kind == "len"
            else x is key.path.follow() if kind == "is"  # (key: a SameAs)
            else tuple(vars(x)) if kind == "keys"  # (an object's attribute names, in order)
            else x.cell_contents if kind == "cell"  # (a closure's cell; key: its variable)
            else hasattr(x, key) if kind == "has"
            else type(x) if kind == "type" else frozenset(x) if kind == "set"
            else _called(x) if kind == "called" else x() if kind == "ref" else x[key])


def _called(x):
    """A callable object's class and the function a call of it runs (`Act.__call__ = f`,
    patched on the class, changes what `self.act(z)` computes)."""
    return type(x), getattr(type(x), "__call__", None)


def _extent(x):
    """What a loop over `x` depends on beyond its items: a list's length, a dict's keys in
    their order (a dict of layers rebuilt in another order ran the old order, silently)."""
    return (tuple(x) if isinstance(x, collections.abc.Mapping) else x.shape
            if isinstance(x, np.ndarray) else len(x))  # (an empty array's shape: captured()
    # reads arrays with elements, and an empty one compiled in kept its shape: a KV cache
    # grown by np.concatenate outside)


def _answers_attributes(x):
    """Whether x's class serves attributes itself, from what the object holds."""
    cls = type(x)
    return (getattr(cls, "__getattr__", None) is not None
            or getattr(cls, "__getattribute__", None) is not object.__getattribute__
            and not isinstance(x, (dict, list, tuple, types.ModuleType, types.CellType,
                                   types.FunctionType, types.MethodType, functools.partial,
                                   types.SimpleNamespace)))  # (its own __getattribute__ is
    # the plain lookup in its __dict__: every entry of a config namespace was guarded, read or
    # not, 2.5 us a call for a few)


class Path(NamedTuple):
    """Where a trace found an object: `root` (a module's globals, a closure cell, an object an
    argument or a user frame held), then attribute and item steps: self -> .W. Followed again on
    every call for the arrays a compiled function reads from outside its arguments
    (gradc/capture.py)."""
    root: object
    steps: tuple  # (("attr", name) | ("item" | "global", key) | ("len" | "type" | "set" | "ref",
    #                None), ...): "ref" calls a weak reference

    def then(self, kind, key):
        return Path(self.root, self.steps + ((kind, key),))

    def follow(self):
        x = self.root
        for kind, key in self.steps:
            x = _step(x, kind, key)
        return x

    def assigned_by(self, stored):
        """Whether the path ends where one of `stored` (Stored write-backs) assigns: the
        attribute or dict entry the traced code itself assigns after each call."""
        if not self.steps or not stored:
            return False
        kind, key = self.steps[-1]
        try:
            parent = Path(self.root, self.steps[:-1]).follow()
        except Exception:  # noqa: BLE001 - (gone)
            return False
        holder = parent if kind == "item" else getattr(parent, "__dict__", None)
        return any(w.container is holder and w.key == key for w in stored)

    def named_in(self, names, called=False):
        """Whether the code entered reads each name on the path (`names`, a Names): a global,
        an attribute (of a global: that global's; a method the code calls, where `called`),
        a string key; or it is what a function or partial holds (its cells, defaults).

        An object whose class answers attributes itself (`__getattr__`: an EasyDict's cfg.lr, a
        ConfigDict's fields) may serve any name read as an attribute from what it holds, and
        `o.__dict__["k"]`, `vars(o)[k]`, `getattr(o, k)` read attributes by key."""
        steps, x, served = self.steps, self.root, False
        attributes = names.attrs | names.methods | {a for _, a in names.global_attrs}
        by_key = "__dict__" in attributes or bool(names.globals & {"vars", "getattr"}) or (
            "attrgetter" in attributes or "attrgetter" in names.globals)  # (operator's:
        # attrgetter("W")(self) reads self.W by a string, as getattr does)
        # (below a name read with all it holds, asdict(cfg), every step is read)
        deep = bool(steps) and steps[0][0] == "attr" and THE_OBJECT in names.deep
        for i, (kind, key) in enumerate(steps):
            served = served or _answers_attributes(x)
            try:
                x = _step(x, kind, key)
            except Exception:  # noqa: BLE001 - (gone since: what follows is not served)
                x = None
            if deep or not isinstance(key, str) or kind == "attr" and key in _HELD_BY_CALLABLES or (
                    i and steps[i - 1][1] in ("keywords", "__kwdefaults__")):
                continue
            deep = key in names.deep
            as_attribute = served and key in attributes
            if kind == "has":  # (hasattr(o, "k"), getattr(o, "k", default))
                found = key in names.probed
            elif kind == "cell":  # (a variable of the closure: its code names it)
                found = True
            elif kind == "global":  # (or a key of globals() the code names: globals()["K"])
                found = key in names.globals or "globals" in names.globals and names.key(key)
            elif kind == "item":  # (a key the code names, or any, where it walks items:
                found = (names.key(key) or bool(names.methods & _WALK_METHODS)  # d.items(),
                         or as_attribute or i and steps[i - 1][1] in names.iterated)  # for k
                # in d: d[k], f(**d))
            elif i and steps[i - 1][0] == "global":  # (wmod.W; m.s read as self.s in m.fwd;
                found = ((steps[i - 1][1], key) in names.global_attrs  # self.act(x) there;
                         or steps[i - 1][1] in names.iterated  # asdict(CFG), vars(CFG)
                         or key in names.attrs  # self.block(x) of a global model, called
                         or (called or i < len(steps) - 1) and key in names.methods  # on)
                         or by_key and names.key(key) or served)
            else:  # (an object on the way may be called: self.norm(x) reads self.norm.eps)
                found = key in names.attrs or (steps[i - 1][1] in names.iterated if i else (
                    kind == "attr" and THE_OBJECT in names.iterated)) or (
                    called or i < len(steps) - 1) and key in names.methods or (
                    by_key and names.key(key)) or served and (i < len(steps) - 1
                                                                   or as_attribute)
            if not found:
                return False
        return True

    def expression(self, consts):
        """Python source that follows the path (LastCall's generated match), its root and keys
        bound in `consts`."""
        expr = f"R{len(consts)}"
        consts[expr] = self.root
        for kind, key in self.steps:
            if kind == "len":  # (a list, and its length; a dict, and its keys: _extent)
                consts["_extent"] = _extent
                expr = f"(type({expr}), _extent({expr}))"
            elif kind == "type":
                expr = f"type({expr})"
            elif kind == "called":  # (a callable object's class and its __call__: _called)
                consts["_called"] = _called
                expr = f"_called({expr})"
            elif kind == "set":  # (a set's contents)
                expr = f"frozenset({expr})"
            elif kind == "ref":  # (a weak reference's referent)
                expr = f"{expr}()"
            elif kind == "cell":  # (a closure's variable)
                expr += ".cell_contents"
            elif kind == "keys":  # (an object's attribute names)
                expr = f"tuple(vars({expr}))"
            elif kind == "is":  # (whether it is the object another path reaches: SameAs)
                name = f"K{len(consts)}"
                consts[name] = key
                expr = f"({expr} is {name}.path.follow())"
            elif kind == "has":  # (whether it has the attribute hasattr/getattr(o, k, d) asks)
                name = f"K{len(consts)}"
                consts[name] = key
                expr = f"hasattr({expr}, {name})"
            elif kind == "attr" and key.isidentifier() and not keyword.iskeyword(key):
                expr += f".{key}"
            else:
                name = f"K{len(consts)}"
                consts[name] = key
                expr = f"getattr({expr}, {name})" if kind == "attr" else f"{expr}[{name}]"
        return expr


class Names(NamedTuple):
    """What code reads, from its bytecode (co_names alone mixes globals, attributes and
    methods: a global W is not self.W, np.log not self.log, x.mean() not self.mean)."""
    globals: frozenset  # LOAD_GLOBAL
    attrs: frozenset  # attributes read (LOAD_ATTR), of what is not a global; getattr(x, "name")
    methods: frozenset  # attributes called (LOAD_METHOD): self.act(x)
    global_attrs: frozenset  # (global, attribute): wmod.W, np.log
    keys: frozenset  # string constants (dict keys; in tuples too: for k in ("w1", "w2"): p[k])
    iterated: frozenset  # what a for loop runs over directly: for k in params
    whole: frozenset = frozenset()  # names whose value is used whole (np.stack(BUF)), not only
    # indexed by a simple index, nor an attribute of it taken: a list's length matters there
    probed: frozenset = frozenset()  # attributes asked for by name: hasattr(o, "k"), getattr(o,
    # "k", default): one absent may be set later
    deep: frozenset = frozenset()  # names read whole with all they hold: asdict(cfg) reads
    # cfg.opt.lr too
    formats: frozenset = frozenset()  # keys the code formats (KeyFormat: f"W{i}", "W%d" % i,
    # "b{}".format(i))
    given: frozenset = frozenset()  # strings the user code was called with (`counts[key]`) or
    # found outside (`for n in self.names: self.masks[n]`)

    def __or__(self, other):
        return Names(*(a | b for a, b in zip(self, other)))

    def key(self, key):
        """Whether the code may name dict key `key`: a constant it loads, a key it formats, or
        a string it was given."""
        return key in self.keys or key in self.given or type(key) is str and any(
            f.matches(key) for f in self.formats)


class KeyFormat(NamedTuple):
    """A string the code builds from constant parts and values: f"W{i}" is ("W", "")."""
    parts: tuple

    def matches(self, key):
        return _format_pattern(self.parts).fullmatch(key) is not None


@functools.lru_cache(maxsize=1024)
def _format_pattern(parts):
    return re.compile(".*".join(map(re.escape, parts)), re.DOTALL)


# a %-format's or str.format's fields in a constant (a key made by "W%d" % i, "W{}".format(i))
_FIELDS = re.compile(r"%[-#0 +]*[\d*]*(?:\.[\d*]+)?[diouxXeEfFgGcrsa]|\{[^{}]*\}")


NO_NAMES = Names(*(frozenset(),) * 11)
# (in Names.iterated and .deep: the function's first argument, a method's `self`, read whole:
# asdict(self), vars(self); a path from a method's object starts at its attributes)
THE_OBJECT = ("the function's first argument",)


_LIST_CHANGES = frozenset({"append", "extend", "insert", "pop", "remove", "clear", "sort",
                           "reverse", "appendleft", "extendleft", "popleft", "rotate"})
# what takes entries out of a dict or set (`queue.popitem()`, `pending.pop()`); one put in is a
# table built on first use, once by NumPy's code too, as a dict key stored anew is
_REMOVALS = frozenset({"pop", "popitem", "remove", "discard", "clear", "difference_update",
                       "intersection_update", "symmetric_difference_update"})
_ADDITIONS = frozenset({"add", "update", "setdefault", "__setitem__"})  # (a dict's, a set's)


class Stores(NamedTuple):
    """What code stores into, from its bytecode."""
    attrs: frozenset  # STORE_ATTR: self.t = ...
    globals: frozenset  # STORE_GLOBAL
    cells: frozenset  # STORE_DEREF: a nonlocal
    items: bool  # any STORE_SUBSCR or DELETE_SUBSCR: d[k] = ..., del queue[0]

    def __or__(self, other):
        return Stores(self.attrs | other.attrs, self.globals | other.globals,
                      self.cells | other.cells, self.items or other.items)


NO_STORES = Stores(frozenset(), frozenset(), frozenset(), False)


@functools.lru_cache(maxsize=4096)
def code_stores(code):
    """The Stores of `code`."""
    found = {"STORE_ATTR": set(), "STORE_GLOBAL": set(), "STORE_DEREF": set()}
    items = False
    for ins in dis.get_instructions(code):
        if ins.opname in found:
            found[ins.opname].add(ins.argval)
        items = items or ins.opname in ("STORE_SUBSCR", "DELETE_SUBSCR")
    return Stores(frozenset(found["STORE_ATTR"]), frozenset(found["STORE_GLOBAL"]),
                  frozenset(found["STORE_DEREF"]), items)


# what writes into an array it is given: NumPy's writers, ndarray's in-place methods
_WRITERS = frozenset({"fill", "put", "sort", "partition", "copyto", "fill_diagonal",
                      "put_along_axis", "place", "putmask", "itemset", "resize", "byteswap",
                      "setfield", "setflags", "__setitem__", "__iadd__", "__isub__",
                      "__imul__", "__itruediv__", "shuffle", "at"})


@functools.lru_cache(maxsize=4096)
def code_writes(code):
    """Whether `code` may write into an array it reaches: a store into an item, an augmented
    assignment (`W -= g`), a writer called, an `out=` keyword."""
    for ins in dis.get_instructions(code):
        if ins.opname in ("STORE_SUBSCR", "DELETE_SUBSCR", "STORE_SLICE") or (
                ins.opname == "BINARY_OP" and ins.argrepr.endswith("=")) or (
                ins.opname in ("LOAD_ATTR", "LOAD_METHOD", "LOAD_GLOBAL", "LOAD_NAME")
                and ins.argval in _WRITERS) or (
                ins.opname in ("KW_NAMES", "LOAD_CONST") and type(ins.argval) is tuple
                and "out" in ins.argval) or ins.opname.startswith("INPLACE_"):
            return True
    return False


def _entries(container):
    """A dict's keys, or a set itself: what can be taken out of it."""
    return container.keys() if isinstance(container, dict) else container


def _numbered(container):
    """(key, value) of a dict or an object's __dict__ (a set: none)."""
    return container.items() if isinstance(container, dict) else ()


def _progress(iterator, keep, depth=4):
    """What moves as `iterator` is drawn from, or None where nothing tells: a generator's
    place, locals and what it yields from; what a C iterator's own __reduce__ holds
    (iter(list)'s index, the iterators a map or zip draws from), or a Python one's
    attributes; its __length_hint__; itertools.count's and repeat's repr (count(2)). Objects
    count by identity, kept alive in `keep` so that no other takes their id."""
    if isinstance(iterator, types.GeneratorType):
        frame = iterator.gi_frame
        return "finished" if frame is None else (
            frame.f_lasti, _key(tuple(frame.f_locals.values()), keep, depth),
            _key(iterator.gi_yieldfrom, keep, depth))
    cls = type(iterator)
    try:
        with warnings.catch_warnings():  # (itertools' pickling is deprecated: 3.12, 3.13)
            warnings.simplefilter("ignore", DeprecationWarning)
            state = (iterator.__reduce__()[1:] if cls.__reduce__ is not object.__reduce__
                     else vars(iterator) if isinstance(cls.__next__, types.FunctionType)
                     else None)  # (object's __reduce__ tells nothing, nor a file's __dict__)
        hint = operator.length_hint(iterator, -1)
    except Exception:  # noqa: BLE001 - (none: a file, a csv reader)
        state, hint = None, -1
    shown = repr(iterator) if isinstance(iterator, (itertools.count, itertools.repeat)) else None
    if state is None and hint < 0 and shown is None:
        return None
    return _key(state, keep, depth), hint, shown


def _key(x, keep, depth):
    """`x` compared by value (a number, a string), item by item (a list, tuple or dict: a
    __reduce__ makes new ones), by _progress (an iterator), or by identity (kept in `keep`)."""
    if type(x) in _PLAIN:
        return x
    if type(x) in (list, tuple, dict):  # (a few levels, a few items: what says where it is)
        items = x.items() if type(x) is dict else x
        return tuple(_key(v, keep, depth - 1) for v in itertools.islice(items, 16)) if depth else ()
    if hasattr(type(x), "__next__"):
        return _progress(x, keep, depth - 1) if depth else ()
    keep.append(x)
    return ("id", id(x))


def _set_of(path):
    """The set a ("set", None) path's contents are read from (None if gone)."""
    try:
        return Path(path.root, path.steps[:-1]).follow()
    except Exception:  # noqa: BLE001 - (gone)
        return None


def _renumbered(old, new):
    """Whether a Python number was replaced by a different number (bools are flags, not
    counts)."""
    def number(x):
        return isinstance(x, (int, float, np.number)) and not isinstance(x, (bool, np.bool_))
    return number(old) and number(new) and typed_key(old) != typed_key(new)


def _tables_appended(held, now):
    """Whether the list `held` (a copy taken when walked) is `now` with arrays appended: a list
    of tables built on first use (`if not tables: tables.append(np.linspace(...))`)."""
    try:
        now = list.__iter__(now) if isinstance(now, list) else iter(now)
        now = [*now]
    except Exception:  # noqa: BLE001 - (what cannot be listed: not a table)
        return False
    return (len(now) > len(held) and all(a is b for a, b in zip(held, now))
            and all(isinstance(x, np.ndarray) for x in now[len(held):]))


@functools.lru_cache(maxsize=4096)
def imported_modules(code):
    """The modules `code` imports (IMPORT_NAME: `import mymod` inside a function)."""
    return frozenset(ins.argval for ins in dis.get_instructions(code)
                     if ins.opname == "IMPORT_NAME")


def stored_globals(code):
    """The globals `code` assigns (STORE_GLOBAL): held too, though it may never read them, so
    that a traced value stored there is refused and undone (`global LAST; LAST = x.sum()`)."""
    return code_stores(code).globals


ABSENT = object()  # a held global that did not exist: undone by deleting it


# what runs over a sequence's items: a for loop, unpacking (a, b = pair), a starred argument
# (f(*shape)) or list display ([*xs])
_WALKS_ITS_ITEMS = frozenset({"GET_ITER", "UNPACK_SEQUENCE", "UNPACK_EX", "LIST_EXTEND",
                              "CALL_FUNCTION_EX", "DICT_MERGE", "DICT_UPDATE"})  # (f(**cfg))


_LOADS_A_NAME = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "LOAD_ATTR", "LOAD_METHOD", "LOAD_FAST",
                           "LOAD_DEREF"})
_READ_WHOLE = frozenset({"asdict", "astuple", "vars", "dir", "getmembers"})  # (functions that
# read every attribute, or name each: `for k in dir(cfg): getattr(cfg, k)`)
_READ_DEEP = frozenset({"asdict", "astuple"})  # (and every attribute of the dataclasses in them)
_QUIET = frozenset({"CACHE", "PRECALL", "PUSH_NULL", "NOP", "EXTENDED_ARG"})  # (no step)


@functools.lru_cache(maxsize=4096)
def code_names(code, lines=None):
    """The Names `code` reads; `lines` (a frozenset): only those its instructions on these
    lines read (the lines a trace ran: frozen.Watch.names_run)."""
    globals_, attrs, methods, global_attrs, iterated = set(), set(), set(), set(), set()
    previous, consts, whole, probed, deep = [], [], None, set(), set()
    first = code.co_varnames[0] if code.co_argcount else None
    instructions = list(dis.get_instructions(code))
    for n, ins in enumerate(instructions):
        line = ins.positions.lineno
        if lines is not None and line is not None and line not in lines:
            continue  # (a line not run; `previous` then holds what ran before it)
        if ins.opname in _LOADS_A_NAME:  # (what asdict(cfg), vars(self.cfg) read whole: each
            if whole and not (whole == "vars" and _one_entry_of(instructions, n)):  # attribute,
                # as `for k in d` reads each entry; not vars(self)["k"], vars(self).get("k"):
                # one, by its key (a counter the loop keeps in self traced again every step)
                read = [ins.argval] + ([THE_OBJECT] if ins.argval == first and ins.opname in (
                    "LOAD_FAST", "LOAD_DEREF") else [])
                iterated.update(read)
                if whole in _READ_DEEP:
                    deep.update(read)
            whole = whole or (ins.argval if ins.argval in _READ_WHOLE else None)
        elif ins.opname not in _QUIET:
            whole = None
        if ins.opname in ("LOAD_CONST", "KW_NAMES"):
            consts.append(ins.argval)
        if ins.opname in _WALKS_ITS_ITEMS and previous and previous[-1].opname in (
                "LOAD_GLOBAL", "LOAD_NAME", "LOAD_ATTR", "LOAD_FAST", "LOAD_DEREF"):
            iterated.add(previous[-1].argval)
        elif (ins.opname in _WALKS_ITS_ITEMS and len(previous) >= 2
              and previous[-1].opname == "BINARY_SUBSCR" and previous[-2].opname == "LOAD_CONST"):
            iterated.add(previous[-2].argval)  # (for s in cfg["scales"], a, b = cfg["ab"])
        if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
            globals_.add(ins.argval)
        elif ins.opname in ("LOAD_ATTR", "LOAD_METHOD"):
            if previous and previous[-1].opname in ("LOAD_GLOBAL", "LOAD_NAME"):
                global_attrs.add((previous[-1].argval, ins.argval))
                if ins.argval in _READ_METHODS:  # (a global dict's D.items(), D.get: they
                    methods.add(ins.argval)  # read its entries as self.d.items() does)
            else:
                (attrs if ins.opname == "LOAD_ATTR" else methods).add(ins.argval)
            if (ins.argval == "__dict__" and previous and previous[-1].opname in _LOADS_A_NAME
                    and not _one_entry_read(instructions, n)):  # (`for k in cfg.__dict__:
                owner = previous[-1]  # getattr(cfg, k)`: each attribute, as vars(cfg))
                iterated.update([owner.argval] + ([THE_OBJECT] if owner.argval == first and (
                    owner.opname in ("LOAD_FAST", "LOAD_DEREF")) else []))
        elif ins.opname == "CONTAINS_OP":  # (`k in d`: what d holds decides, as d.get does)
            methods.add("__contains__")
        elif (ins.opname == "LOAD_CONST" and type(ins.argval) is str and len(previous) >= 2
              and previous[-2].opname == "LOAD_GLOBAL"
              and previous[-2].argval in ("getattr", "hasattr")):
            probed.add(ins.argval)  # (hasattr: whether it is there; getattr: its value too)
            if previous[-2].argval == "getattr":
                attrs.add(ins.argval)
        elif (ins.opname == "LOAD_CONST" and type(ins.argval) is str and previous
              and previous[-1].opname in ("LOAD_ATTR", "LOAD_METHOD")
              and previous[-1].argval in ("__getattribute__", "__getattr__")):
            attrs.add(ins.argval)  # (self.__getattribute__("W"): self.W)
        elif (ins.opname == "LOAD_CONST" and type(ins.argval) is str and previous
              and previous[-1].opname in ("LOAD_ATTR", "LOAD_METHOD")
              and previous[-1].argval == "get"):
            probed.add(ins.argval)  # (vars(self).get("scale", 1.0): an attribute set later)
        if ins.opname not in _QUIET:
            previous = previous[-2:] + [ins]
    keys, stack = set(), list(code.co_consts if lines is None else consts)
    formats = _built_keys(instructions, lines)
    while stack:
        c = stack.pop()
        if type(c) is str:
            keys.add(c)
            parts = tuple(_FIELDS.split(c))
            if len(parts) > 1 and any(parts):  # ("%s" alone would name every key: not taken)
                formats.add(KeyFormat(parts))
        elif type(c) is int and c < 0:  # (xs[-1]: which element depends on the length)
            keys.add(_FROM_THE_END)
        elif type(c) in (tuple, frozenset):
            stack.extend(c)
    return Names(*map(frozenset, (globals_, attrs, methods, global_attrs, keys, iterated,
                                  _used_whole(code, lines), probed, deep, formats)))


def _built_keys(instructions, lines):
    """The KeyFormats of the strings the code joins: f"W{i}" (BUILD_STRING of its parts), and
    "W" + str(i) (a constant string added to a value)."""
    formats = set()
    for n, ins in enumerate(instructions):
        if lines is not None and ins.positions.lineno not in lines:
            continue
        separator = None
        if ins.opname == "BUILD_STRING":
            operands = _operands(instructions, n, ins.arg)
        elif ins.opname == "BINARY_OP" and ins.argrepr in ("+", "+="):
            operands = _operands(instructions, n, 2)
        elif ins.opname in ("BUILD_LIST", "BUILD_TUPLE"):  # ("_".join([name, "W"]))
            operands = _operands(instructions, n, ins.arg)
            first = n - sum(len(op) for op in operands or ()) - 1
            while first >= 0 and instructions[first].opname in ("CACHE", "EXTENDED_ARG", "NOP"):
                first -= 1
            if (operands is None or first < 1 or instructions[first].argval != "join"
                    or instructions[first - 1].opname != "LOAD_CONST"
                    or type(instructions[first - 1].argval) is not str):
                continue
            separator = instructions[first - 1].argval
        else:
            continue
        if operands is None:
            continue
        parts = [op[0].argval if len(op) == 1 and op[0].opname == "LOAD_CONST" else None
                 for op in operands]
        if separator is not None:  # (the separator between each two items)
            parts = [x for i, part in enumerate(parts)
                     for x in ((separator,) if i else ()) + (part,)]
        if not any(type(p) is str and p for p in parts) or (
                ins.opname == "BINARY_OP" and None not in parts):
            continue
        joined = [""]  # (the constant text between the values, a value's place "")
        for part in parts:
            if type(part) is str:
                joined[-1] += part
            else:
                joined.append("")
        formats.add(KeyFormat(tuple(joined)))
    return formats


def _operands(instructions, n, count):
    """The instructions that push each of the `count` values instruction n takes (straight-line
    code: their stack effects summed back from n), or None where they cannot be told."""
    operands, end, depth = [], n, 0
    for j in range(n - 1, -1, -1):
        ins = instructions[j]
        if ins.opname in ("CACHE", "EXTENDED_ARG", "NOP"):
            continue
        try:
            depth += dis.stack_effect(ins.opcode, ins.arg if ins.opcode >= dis.HAVE_ARGUMENT
                                      else None, jump=False)
        except ValueError:
            return None
        if depth == 1:
            operands.append([i for i in instructions[j:end] if i.opname not in _QUIET])
            end, depth = j, 0
            if len(operands) == count:
                return operands[::-1]
        elif depth > 1 or ins.is_jump_target or "JUMP" in ins.opname:
            return None
    return None


def _one_entry_of(instructions, n):
    """Whether what the call taking the value loaded at instruction n returns is read for one
    entry by a constant key: vars(self)["k"], vars(self).get("k", d)."""
    call = next((i for i in range(n + 1, min(n + 8, len(instructions)))
                 if instructions[i].opname not in _QUIET), None)
    return (call is not None and instructions[call].opname.startswith("CALL")
            and _one_entry_read(instructions, call))


def _one_entry_read(instructions, n):
    """Whether the dict instruction n leaves is read for one entry by a constant key:
    self.__dict__["k"], self.__dict__.get("k", d)."""
    after = [ins for ins in instructions[n + 1:n + 8] if ins.opname not in _QUIET]
    return len(after) >= 2 and ((
        after[0].opname == "LOAD_CONST" and type(after[0].argval) is str
        and (after[1].opname == "BINARY_SUBSCR" or after[1].argrepr == "[]")) or (
        after[0].opname in ("LOAD_ATTR", "LOAD_METHOD") and after[0].argval == "get"
        and after[1].opname == "LOAD_CONST" and type(after[1].argval) is str))


_INDEXED = frozenset({"BINARY_SUBSCR", "BINARY_SLICE", "STORE_SUBSCR", "DELETE_SUBSCR",
                      "STORE_SLICE"})
_SIMPLE_INDEX = frozenset({"LOAD_CONST", "LOAD_FAST", "LOAD_DEREF", "LOAD_GLOBAL", "LOAD_NAME",
                           "LOAD_SMALL_INT"})


def _used_whole(code, lines=None):
    """The names of `code` whose loaded value goes on whole (an argument, `np.stack(BUF)`, a
    result), not only indexed by one simple index (`BUF[0]`, `BUF[i]`, `BUF[a:b]`), iterated, or
    asked for an attribute."""
    run = [ins for ins in dis.get_instructions(code) if ins.opname not in _QUIET and (
        lines is None or ins.positions.lineno is None or ins.positions.lineno in lines)]
    whole = set()
    for i, ins in enumerate(run):
        if (ins.opname == "LOAD_CONST" and type(ins.argval) is str and i >= 2
                and run[i - 2].opname in ("LOAD_GLOBAL", "LOAD_NAME")
                and run[i - 2].argval == "getattr"):
            whole.add(ins.argval)  # (getattr(self, "buf") goes on as self.buf would)
            continue
        if (ins.opname in _INDEXED or ins.opname == "BINARY_OP" and ins.argrepr == "[]") and (
                i and run[i - 1].opname == "LOAD_CONST" and type(run[i - 1].argval) is str):
            ins = run[i - 1]  # (d["obs"] goes on as an entry read by its key: np.stack of it)
        elif ins.opname not in _LOADS_A_NAME:
            continue
        if i + 1 >= len(run):
            continue
        if run[i + 1].opname in ("LOAD_ATTR", "LOAD_METHOD", "GET_ITER", "STORE_ATTR",
                                 "DELETE_ATTR") or run[i + 1].opname.endswith("_NONE"):
            continue  # (an attribute of it; `if x is not None:`, a jump if None)
        if run[i + 1].opname == "BINARY_OP" and run[i + 1].argrepr != "[]":
            whole.add(ins.argval)  # (its own arithmetic: `[self.W] + self.hist`)
            continue
        j = i + 1  # (past an index expression of loads and arithmetic: x[k], x[self.slot],
        while j < min(len(run), i + 9) and (  # x[i + 1], x[a:b])
                run[j].opname in _SIMPLE_INDEX or run[j].opname in ("LOAD_ATTR", "BUILD_SLICE")
                or run[j].opname == "BINARY_OP" and run[j].argrepr != "[]"):
            j += 1
        end = run[j] if j < len(run) else None
        if end is not None and j > i + 1 and (
                end.opname in _INDEXED or end.opname == "BINARY_OP" and end.argrepr == "[]"):
            continue
        if end is not None and end.opname in ("IS_OP", "COMPARE_OP") and j == i + 2 and (
                run[i + 1].opname == "LOAD_CONST" and run[i + 1].argval is None):
            continue  # (x is None, x is not None: its length does not matter)
        whole.add(ins.argval)
    return whole


# how far the walk looks into what user code can reach: eight levels below a global, nine below
# a local or an argument (self.blocks[0].attn.qkv.W of a nanoGPT is five; a weight seven below
# self, self.backbone.encoder.layers[0].attn.q.weight, was frozen in at six), at most
# MAX_ITEMS entries of a container and SCAN_LIMIT containers in all (a large object graph
# costs no more)
GLOBAL_DEPTH, LOCAL_DEPTH, SCAN_LIMIT, MAX_ITEMS = 8, 9, 5000, 1024
# an object is walked again from each new way to it, up to this many ways: what it holds gets a
# Path through each (`self.first = self.layers[0]`: found first as self.layers[0], a way the
# code did not name, its self.first.scale was never guarded; stale)
WAYS_WALKED = 3
# where the walk stopped at those limits, a float array a traced operation reads is looked for
# beyond them (OutsideWalk.look_beyond), through at most this many more objects: an array
# thirteen levels down or a list's 2,500th layer was compiled in, stale
BEYOND_LIMIT = 10_000
# outside arrays up to this many elements are copied when found, to see a change in place
SNAPSHOT_SIZE = 4096
_PLAIN = (bool, int, float, complex, str, type(None), slice, range,  # (x[WINDOW], a slice)
          fractions.Fraction, decimal.Decimal, bytes)  # (settings kept as fractions, a tag)
# what tells that code walks or measures a list or dict (besides `for x in self.layers`)
_WALK_METHODS = frozenset({"items", "values", "keys"})
# ...and what walks an object's attributes
_WALKS_ATTRIBUTES = frozenset({"vars", "dir", "getmembers", "asdict", "astuple"})
# ...or reads entries that may come and go (d.get("k", default), `k in d`), and what a negative
# index constant notes in Names.keys (L[-1] is another element once L grows)
_LOOKUP_METHODS = frozenset({"get", "__contains__"})
_READ_METHODS = _WALK_METHODS | {"get"}
_FROM_THE_END = ("index from the end",)
_SIZED_BUILTINS = frozenset({"len", "zip", "enumerate", "reversed", "sum", "map", "list",
                             "tuple", "sorted", "max", "min", "any", "all"})
_GUARDED_CALLABLES = (types.FunctionType, types.BuiltinFunctionType, np.ufunc, functools.partial,
                      types.MethodType, type(np.mean),  # (NumPy 2's functions: a dispatcher;
                      # self.pool = np.mean swapped for np.sum was not seen)
                      operator.itemgetter, operator.attrgetter, operator.methodcaller,
                      types.MethodWrapperType, types.WrapperDescriptorType,
                      functools.partialmethod,  # (self.pick = itemgetter(0) swapped for
                      # itemgetter(1), an instance's __mul__ for another's, were not seen:
                      # compared as objects; an lru_cache'd function, which NumPy's code
                      # calls as it was cached)
                      type(functools.lru_cache()(lambda: None)))
_NUMPY_PLAIN = (np.number, np.bool_)  # (NumPy's scalars: np.float32(1e-5))
# (and enum members: self.mode = Mode.TRAIN, compared as numbers are)
_PLAIN_INSTANCES = _NUMPY_PLAIN + (enum.Enum, np.dtype,  # (a dtype: x.astype(DTYPE))
                                    int, float, complex, str, bytes)  # (a subclass of a number
# or a string as a setting, `class LR(float)`: swapped, it was read stale; guarded by type and
# value as the numbers are)


def _walks_attributes(names):
    """Whether code that reads `names` walks an object's attributes: vars(cfg), dir(cfg),
    inspect.getmembers(cfg), cfg.__dict__ (of a global cfg too)."""
    read = names.globals | names.attrs | {a for _, a in names.global_attrs}  # (inspect.getmembers)
    return bool(read & _WALKS_ATTRIBUTES or "__dict__" in read)


def _carried(fun):
    """[(label, Path steps from fun, value)] of what a bound method or a partial carries: its
    object, or its arguments."""
    if isinstance(fun, types.MethodType):
        return [("__self__", (("attr", "__self__"),), fun.__self__)]
    return ([(f"args[{i}]", (("attr", "args"), ("item", i)), a) for i, a in enumerate(fun.args)]
            + [(k, (("attr", "keywords"), ("item", k)), a) for k, a in fun.keywords.items()])


def _length(extent):
    """A container's length from its (class, _extent) guard value."""
    found = extent[1]
    return len(found) if isinstance(found, tuple) else found


def _read_to_end(read):
    """{(id of root, steps to a container, its length)} for each container whose last item
    (`("item", length - 1)`) is on the path of an array the trace read."""
    ends = set()
    for path in read:
        for i, (kind, key) in enumerate(path.steps):
            if kind == "item" and isinstance(key, int):
                ends.add((id(path.root), path.steps[:i], key + 1))
    return ends


def _served_by_default(extent, names):
    """Whether a mapping with a __missing__ that does not store the key (its guard value
    `extent`: class, keys) lacks a key the code names: that key was served by default. (A
    defaultdict stores it: the key is there, guarded by value; guarding its keys made a log of
    new keys kept beside the one read trace again on every call.)"""
    cls, keys = extent
    missing = getattr(cls, "__missing__", None)
    return (missing is not None and missing is not collections.defaultdict.__missing__
            and isinstance(keys, tuple)
            and any(type(k) is str and k not in keys for k in names.keys))


def _container_names(name, path):
    """The names the code may read the container by whose length `path` (named `name`,
    "len(layers)") ends at, for `for W in layers`: its key or attribute, the variable of a
    closure's cell or a default argument, the parameter a partial's positional argument is."""
    names = {path.steps[-2][1], name[len("len("):-1]}
    if isinstance(path.root, functools.partial) and path.steps[0] == ("attr", "args"):
        func = path.root.func
        code = getattr(inspect.unwrap(getattr(func, "__func__", func)), "__code__", None)
        at = path.steps[1][1] + isinstance(func, types.MethodType)  # (after a method's self)
        if len(path.steps) == 3 and code is not None and at < code.co_argcount:
            names.add(code.co_varnames[at])
    return names


class OutsideWalk:
    """The walk (a mixin of frozen.Watch, which enters user frames and calls `_consider`)."""

    def __init__(self):
        self.scanned = set()  # ids of containers and objects already walked
        self.ways_walked = {}  # id -> how many ways to it were walked
        self.keep = []  # (what was walked, kept alive so its id stays its own)
        self.codes = set()  # user code objects entered
        self.given_strings = set()  # the strings among their arguments as each was entered
        # id -> (name, NumPy array, Path) of the float arrays the traced code can reach from
        # outside (gradc/capture.py reads them on every call), and [(name, value, Path)] of
        # the numbers, strings, Nones, functions and lengths (`guards`: those the code reads)
        self.arrays = {}
        self.paths = {}  # id -> [(name, Path)]: every way to an array of `arrays` found
        # (id, the Path's root's id, its steps) -> (name, array, Path) of the integer and
        # boolean arrays (index tables, masks), at every way to them:
        # compiled in where the code indexes with them, so their contents are guarded
        self.tables = {}
        # id -> (name, array, Path, its bytes when found) of the numeric arrays up to
        # SNAPSHOT_SIZE elements: one the traced code changed in place (`self.n += 1`) is refused
        self.snapshots = {}
        self.plain = []
        # [(name, dict, list, set or an object's __dict__, a copy of it, whether an object's)]
        # of the containers walked, [(globals, name, value)] of the globals, [(name, cell,
        # value)] of the closure cells: a traced value stored in one is undone
        # (undo_stored_values), a number or list changed is warned about (changed_numbers)
        self.held, self.held_globals, self.held_cells = [], [], []
        self.held_at = {}  # id(container) -> the Path to it (to the object, for its __dict__)
        self.marks = {}  # id(_Mark) -> its Held (marked)
        self.absent = []  # (name, Path) of the dict entries the trace made (undo_stored_values)
        self.slotted = []  # [(name, object with __slots__, its slots' values when found)]
        self.classes = {}  # id -> (a user's class walked, what it held then): restore
        # id -> (iterator, its _progress when found, [(name, Path)] of the ways to it) of the
        # iterators and generators outside: one the trace drew from is warned about (`drawn`)
        self.iterators = {}
        self.names_now = NO_NAMES  # what the code being entered reads (of the user's modules)
        self.imported_later = set()  # modules the code imports that were not imported yet
        self.top = None  # the code of the traced function (the first user frame entered)
        # [(value, name, Path, first)] where the walk stopped at its limits: what lies below
        # value (its entries from `first` on) was not walked (look_beyond)
        self.frontier = []
        self.beyond = None  # id -> (name, array, Path) of the float arrays found past it

    def random_source(self, value, name):
        """Whether `value` is a source of random numbers (handled by frozen.Watch)."""
        return False

    def scan_callable(self, fun, depth=LOCAL_DEPTH):
        """What the traced callable holds: a bound method's or callable object's `self`, a
        partial's arguments, a function's closure (through its cells: a rebound nonlocal too)
        and defaults. Returns the function whose code runs, or None."""
        if isinstance(fun, functools.partial):
            for i, arg in enumerate(fun.args):
                self._consider(arg, f"{getattr(fun.func, '__name__', 'partial')}.args[{i}]", depth,
                               Path(fun, (("attr", "args"), ("item", i))))
            for key, arg in fun.keywords.items():
                self._consider(arg, key, depth, Path(fun, (("attr", "keywords"), ("item", key))))
            return self.scan_callable(fun.func, depth)
        owner = getattr(fun, "__self__", None)
        if isinstance(fun, types.MethodType) and not isinstance(owner, (type, types.ModuleType)):
            self._consider(owner, "self", depth, Path(owner, ()))
            self.plain.append(("type(self)", type(owner), Path(owner, (("type", None),))))
            fun = fun.__func__
        elif not isinstance(fun, (types.FunctionType, types.BuiltinFunctionType, type)):
            self._consider(fun, "self", depth, Path(fun, ()))  # (a callable object)
            # (its class: `m.__class__ = Sub` makes self.act another method)
            self.plain.append(("type(self)", type(fun), Path(fun, (("type", None),))))
            fun = getattr(type(fun), "__call__", None)
        fun = inspect.unwrap(fun) if isinstance(fun, types.FunctionType) else fun
        if not isinstance(fun, types.FunctionType):
            return None
        self._scan_defaults(fun, depth, Path(fun, ()))
        self._scan_closure(fun, depth)
        return fun

    def _scan_defaults(self, fun, depth, path):
        """A function's default arguments, each named by its parameter (`lambda h, W=W: ...`,
        the loop-capture idiom: W is the weights array, outside), `path` the way to fun."""
        defaults = fun.__defaults__ or ()
        params = fun.__code__.co_varnames[:fun.__code__.co_argcount][-len(defaults):]
        for i, (param, value) in enumerate(zip(params, defaults)):
            self._consider(value, param, depth, path.then("attr", "__defaults__").then("item", i))
        for key, value in (fun.__kwdefaults__ or {}).items():
            self._consider(value, key, depth,
                           path.then("attr", "__kwdefaults__").then("item", key))

    def _scan_closure(self, fun, depth=LOCAL_DEPTH):
        code = fun.__code__
        reading, self.names_now = self.names_now, self.names_now | code_names(code)  # (what
        # its code reads of what the cells hold: a key of a large dict)
        for name, cell in zip(code.co_freevars, fun.__closure__ or ()):
            try:
                value = cell.cell_contents
            except ValueError:  # (an empty cell)
                continue
            self.held_cells.append((name, cell, value))
            self._consider(value, name, depth, Path(cell, (("cell", name),)))
        self.names_now = reading

    def undo_stored_values(self, given=None, in_place=None, results=None):
        """Undo what the traced code stored in the containers and globals it could reach that
        is a traced value (`self.mean = h.mean(0)`, `history.append(loss)`, `global total`), a
        dict, list or tuple holding one (`self.cache = {"h": h}`), or what the function was
        given (`net.params = params`; `given`: {id: steps} of those objects): it would hold a
        placeholder, not a number, after the trace. Returns (where values were appended to a
        list, each with the line that computed it; `Stored` assignments: an attribute, a dict
        entry, a global, a nonlocal, which a compiled function can make after each call,
        gradc/function.py's write-backs; the value, of what was given, Given). `in_place`:
        Graph.in_place; an entry that held one of those arrays is written into it (`into`)."""
        undo = _Undo(self, given or {}, in_place or {}, results or {})
        for name, container, held, attrs in self.held:  # (values there before are not new)
            if isinstance(container, (list, collections.deque, np.ndarray)):
                undo.sequence(name, container, held)
            else:
                undo.mapping(name, container, held, attrs)
        for name, obj, held in self.slotted + [  # (slots, and a class's attributes: refused,
                (cls.__name__, cls, held) for cls, held in self.classes.values()]:  # not written)
            undo.slots(name, obj, held)
        for globals_, name, value in self.held_globals:
            undo.place(name, _Globals(globals_, name), value, globals_, name)
        for name, cell, value in self.held_cells:
            undo.place(name, _Cell(cell), value, cell, None)
        return undo.appended, undo.assigned

    def _made_holding_value(self, x):
        """Whether x is an object, function, partial or bound method made in the trace that
        holds a traced value (_object_holding_value): refused where stored outside."""
        return _object_holding_value(x) and self._held_path(x) is None

    def _held_path(self, x):
        """The Path by which the walk held the dict or list x, or the object whose attributes
        x holds, where it leads to x still; else None (not from outside)."""
        attrs = getattr(x, "__dict__", None) if not is_container(x) else None
        path = self.held_at.get(id(x) if attrs is None else id(attrs))
        try:
            return path if path is not None and path.follow() is x else None
        except Exception:  # noqa: BLE001 - (gone)
            return None

    def _holds_outside_array(self, x, depth=3):
        """Whether x is a dict, list or tuple holding (a few levels down) a float array the
        walk found outside."""
        if not is_container(x) or not depth:
            return False
        items = list(x.values() if isinstance(x, dict) else x)[:256]
        return any(self.outside_array(v) is not None or self.rebuilt(v) is not None
                   or self._holds_outside_array(v, depth - 1) for v in items)

    def marked(self, x, given=None, depth=4):
        """x (a dict, list or tuple the trace made, written back) with the dicts and lists from
        outside in it in their marks (Held): a copy of one made on every call was another dict
        than the caller's (`self.both = (self.params, ...)`; `both[0] is params` was False).
        So are those the function was given (`given`: {id: steps}, trace.py _given_paths;
        HeldGiven): `p["me"] = [p["l"]]` wrote the trace's own copy of p["l"], which holds
        traced values, into the caller's dict."""
        def mark(_, v):
            if given is not None and type(v) in (dict, list) and id(v) in given:
                place = _Mark()
                self.marks[id(place)] = HeldGiven(place, ((None, Given(given[id(v)])),))
                return place
            path = self._held_path(v) if type(v) in (dict, list) else None
            if path is not None:
                place = _Mark()
                self.marks[id(place)] = Held(place, ((None, Outside(path, v)),))
                return place
            return self.marked(v, given, depth - 1) if is_container(v) and depth else v
        return replaced(x, mark)  # (nothing from outside in it: x as it is)

    def rebuilt(self, x, known=None, depth=3):
        """Rebuilt(x, fields) where x is an object the trace made (its __dict__ not among
        `known`, by default those the walk held) whose attributes hold float arrays the walk
        found outside (`Record(w=self.W)`, a dataclass or SimpleNamespace, also in a list the
        trace made), or such objects, or dicts, lists and tuples of them, a few levels down
        (`NS(a=NS(b=self.b))`, `NS(l=[self.b])`): made again on every call with each call's
        arrays, else None."""
        if id(x) in self.marks:
            return self.marks[id(x)]
        if known is None:
            known = {id(c) for _, c, _, _ in self.held}
        if is_container(x):
            if self._held_path(x) is not None:  # (one from outside: itself, not a copy)
                return None
            items = list(x.items() if isinstance(x, dict) else enumerate(x))[:256]
        else:
            attrs = getattr(x, "__dict__", None)
            if isinstance(x, (type, types.ModuleType, types.FunctionType, np.ndarray, Value)) or (
                    attrs is not None and (type(attrs) is not dict or id(attrs) in known)):
                return None
            items = (list(attrs.items())[:64] if attrs is not None else  # (or its __slots__:
                     [(k, getattr(x, k)) for k in slots_of(type(x))[:64] if hasattr(x, k)])
            # `@dataclass(slots=True)`)
        fields = []
        for key, v in items:
            part = self.outside_array(v)
            path = self._held_path(v) if part is None and is_container(v) else None
            if path is not None:
                part = Outside(path, v)
            if part is None and depth:
                part = self.rebuilt(v, known, depth - 1)
            if part is not None:
                fields.append((key, part))
        return Rebuilt(x, tuple(fields)) if fields else None

    def outside_array(self, x):
        """Outside(path) where x is a float array the walk found outside (a Live view too: the
        array it stands for), else None."""
        array = array_of(x) if isinstance(x, np.ndarray) else None
        found = self.arrays.get(id(array)) if array is not None else None
        if found is None or found[1] is not array:
            return None
        return Outside(self.way_to(array)[1], array)  # (the way the code
        # names: `a, b = m.pair` of a pair whose first array is m.W too reads m.pair[0], which
        # a swap rebinds)

    def stored_text(self, assigned=()):
        """What the user code stored outside with NumPy alone, as text: the arrays (by their
        bytes) and numbers it assigned to the attributes, dict entries and globals the walk
        held (`self.col_norms = np.linalg.norm(self.W, axis=0)`), and those in the containers
        it assigned that are written back (`assigned`: Stored, `self.hist = [self.hist[-1],
        self.W.copy()]`: the copy, compiled in): the compiled program makes no such store, so
        a probe (capture.read_by_numpy) whose contents store other values counts as one that
        makes another program."""
        lines = []
        owners = {id(owner_of(a)) for _, a, _ in self.arrays.values()}

        def moved(x):  # (an array from outside stored by reference, `self.hist = [self.W] +
            # ...`, is written back as itself, and a view of one, `self.v = self.W.T`, views
            # it still: their contents were not read)
            return self.outside_array(x) or (x.base is not None and id(owner_of(x)) in owners
                                               or None)
        for name, container, held, attrs in self.held:
            if isinstance(container, (list, collections.deque, set, frozenset, np.ndarray)):
                continue
            for key, value in list(container.items()):
                if held.get(key, ABSENT) is not value:
                    _stored_lines(lines, f"{name}[{key!r}]", value, moved)
        for globals_, name, value in self.held_globals:
            if globals_.get(name, ABSENT) is not value:
                _stored_lines(lines, name, globals_.get(name), moved)
        for stored in assigned:
            if is_container(stored.value):
                _stored_lines(lines, stored.where, stored.value, moved)
        return "".join(sorted(lines))

    def _hold_class(self, cls):
        """Keep what a class of the user's holds as the walk finds it (restore: `Net.n += 1`)."""
        if _users(cls) and id(cls) not in self.classes:
            self.classes[id(cls)] = (cls, dict(vars(cls)))

    @contextlib.contextmanager
    def stores_as_found(self):
        """What the trace stored with NumPy alone into the dicts, lists, objects' attributes
        and globals the walk held (`self.ema = 0.9 * self.ema + 0.1 * self.W`, `self.hist =
        self.hist + [self.W.copy()]`, before `self.W -= g`) as the walk found them, inside,
        and as the trace left them, after (capture._probing: a probe that started from the
        first trace's results stored others, and that counted as NumPy reading W after its
        update). Where `restore` puts back for good what the code stores into, this puts
        back everything held, for a while."""
        saved = []
        for _, container, held, _ in list(self.held):
            if type(container) is dict:
                for key in [k for k in set(container) | set(held)
                            if container.get(k, ABSENT) is not held.get(k, ABSENT)]:
                    saved.append((container, key, container.get(key, ABSENT)))
                    put_entry(container, key, held.get(key, ABSENT))
            elif type(container) is list and (len(container) != len(held) or any(
                    a is not b for a, b in zip(container, held))):
                saved.append((container, slice(None), list(container)))
                container[:] = held
        for namespace, name, value in list(self.held_globals):
            if namespace.get(name, ABSENT) is not value:
                saved.append((namespace, name, namespace.get(name, ABSENT)))
                put_entry(namespace, name, value)
        try:
            yield
        finally:
            for container, key, now in reversed(saved):
                put_entry(container, key, now)

    def restore(self):
        """Put back what the user code this trace entered changed in the containers, globals
        and closure cells the walk held, and in the small numeric arrays it copied: the probe
        of capture.read_by_numpy runs the first trace's calls on other contents
        (`self.last_norm = float(np.linalg.norm(self.W))` stores another number; a branch
        the first trace did not take, stopped at its first call, `self.lr *= 0.5` before it).
        Only what that code stores into, by its bytecode: a value another thread sets
        meanwhile (a scheduler's `net.best = loss`) is not undone unless the code stores
        that attribute too."""
        stores, called, by_name = NO_STORES, set(), False
        for code in list(self.codes):
            stores = stores | code_stores(code)
            names = code_names(code)
            called |= names.methods
            by_name = by_name or bool(names.globals & {"setattr", "vars"}) or bool(
                (names.attrs | names.methods) & {"__dict__", "__setattr__"})  # (setattr(self,
            # "last", v), self.__dict__[k] = v: any attribute)
        items = stores.items or bool(called & (_LIST_CHANGES | _REMOVALS | _ADDITIONS))
        for _, container, held, attrs in self.held:
            if isinstance(container, np.ndarray):  # (an object array: its items)
                if items and any(a is not b for a, b in zip(container, held)):
                    container[:] = held
            elif isinstance(container, (list, collections.deque)):
                if items and (len(container) != len(held)
                              or any(a is not b for a, b in zip(container, held))):
                    container.clear()
                    container.extend(held)
            elif isinstance(container, (set, frozenset)):
                if items and container != held:
                    container.clear()
                    container.update(held)
            else:
                for key in set(container) | set(held):
                    if ((key in stores.attrs or by_name) if attrs else items) and (
                            container.get(key, ABSENT) is not held.get(key, ABSENT)):
                        put_entry(container, key, held.get(key, ABSENT))
        for _, obj, held in self.slotted:  # (an object's __slots__)
            for key, before in held.items():
                if (key in stores.attrs or by_name) and getattr(obj, key, ABSENT) is not before:
                    if before is ABSENT:
                        delattr(obj, key)
                    else:
                        setattr(obj, key, before)
        for cls, held in self.classes.values():
            for key in stores.attrs:
                if vars(cls).get(key, ABSENT) is not held.get(key, ABSENT):
                    if key in held:
                        setattr(cls, key, held[key])
                    else:
                        delattr(cls, key)
        for globals_, name, value in self.held_globals:
            if name in stores.globals and globals_.get(name, ABSENT) is not value:
                put_entry(globals_, name, value)
        for name, cell, value in self.held_cells:
            if (name in stores.cells and value is not ABSENT
                    and getattr(cell, "cell_contents", ABSENT) is not value):
                cell.cell_contents = value
        writes = any(code_writes(code) for code in list(self.codes))
        for _, array, _, data in self.snapshots.values():
            if writes and array.flags.writeable and array.tobytes() != data:
                array[...] = np.frombuffer(data, array.dtype).reshape(array.shape)

    def changed_in_place(self):
        """The names of the outside numeric arrays (up to SNAPSHOT_SIZE elements) the code names
        whose bytes changed since the walk found them: the traced code changed them in place,
        which NumPy code would do on every call and the compiled function never. (Arrays the
        code does not name, a counter another thread bumps meanwhile, are not its doing.)"""
        names = self.names()
        changed = [name for name, array, path, data in self.snapshots.values()
                   if array.tobytes() != data and path.named_in(names)]
        if changed and not any(code_writes(code) for code in list(self.codes)):
            return []  # (code that writes into no array: another thread's, `W -= lr * g` of a
        return changed  # trainer while this one traced; a refusal before, fuzz41d)

    def rebound(self, graph):
        """The names (each with the line that stored it, where found) of the outside arrays
        the trace read live (graph.captured, at the paths of graph.captures) that those paths
        no longer reach at its end: the traced code bound them anew, with NumPy alone
        (`self.W = self.W * 0.5`), which NumPy's code would do on every call and the compiled
        function never (it would read the new array from its first call on)."""
        arrays = {id(v): self.arrays[key][1] for key, v in graph.captured.items()
                  if key in self.arrays}
        rebound = []
        for capture in graph.captures:
            array = arrays.get(id(graph.inputs[capture.position]))
            try:
                now = capture.path.follow()
            except Exception:  # noqa: BLE001 - (gone: deleted by the trace)
                now = ABSENT
            if type(now) is Live:  # (the array itself while this trace runs: gradc/live.py)
                now = now.base
            if array is not None and now is not array and not (
                    type(now) in (np.ndarray, Fresh) and now.shape == array.shape
                    and now.dtype == array.dtype and np.array_equal(now, array)):
                rebound.append(f"`{capture.name}`{self.stored_along(capture.path)}")  # (a copy
                # of the same values read again is what it reads: self.W.copy())
        return rebound

    def bound_anew(self, path, array):
        """Whether the code bound `path`, where the walk found `array`, to another array
        (`self.W = np.clip(self.W, -1, 1)` of an array only NumPy read)."""
        try:
            now = path.follow()
        except Exception:  # noqa: BLE001 - (gone)
            return False
        now = now.base if type(now) is Live else now
        return isinstance(now, np.ndarray) and now is not array and bool(self.stored_at(path))

    def stored_along(self, path):
        """stored_at of `path`, or of the longest way to what holds it that the code stores
        (`self.target = copy.deepcopy(self.online)` rebinds self.target.W)."""
        for end in range(len(path.steps), 0, -1):
            at = self.stored_at(Path(path.root, path.steps[:end]))
            if at:
                return at
        return ""

    def stored_at(self, path):
        """" (at file:line)" of the user code's store into the last step of `path` (`self.W =
        ...` for self.W, `P["W"] = ...`, `global W`), or "" where none is found."""
        kind, key = path.steps[-1] if path.steps else (None, None)
        wanted = {"attr": ("STORE_ATTR",), "global": ("STORE_GLOBAL", "STORE_NAME"),
                  "item": ("STORE_SUBSCR",), "cell": ("STORE_DEREF",)}.get(kind, ())
        from .trace import _frame_kind  # (it imports this module)
        for code in list(self.codes):
            if _frame_kind(code.co_filename) != "user":
                continue
            previous = None
            for ins in dis.get_instructions(code):
                if ins.opname in wanted and (ins.argval == key if kind != "item" else (
                        previous is not None and previous.opname == "LOAD_CONST"
                        and previous.argval == key)):
                    return f" (at {os.path.basename(code.co_filename)}:{ins.positions.lineno})"
                if ins.opname not in ("CACHE", "PRECALL", "NOP", "EXTENDED_ARG"):
                    previous = ins
        return ""

    def changed_numbers(self):
        """The Python numbers outside the arguments that the traced code stored anew
        (`self.t += 1`, `calls["n"] += 1`, `global steps; steps += 1`, a nonlocal counter), and
        the lists it changed (`history.append(1)`; traced values stored there are
        undo_stored_values's), and the dicts and sets it took entries out of (`queue.popitem()`,
        `pending.pop()`): its Python runs once, when traced, so NumPy's code would change
        them on every call and the compiled function once. Only names the code itself stores
        count (STORE_ATTR, STORE_SUBSCR of a key it names, STORE_GLOBAL, STORE_DEREF, a list,
        dict or set method it calls, on a global too): a warnings registry's version, another
        thread's counter are not its doing; and only a number replaced by another number: a
        lazily built table (None, then an array; a key or set entry added) is built once by
        NumPy's code too, and so is a flag set once (bools are left alone)."""
        stores = self.stores()
        names, changed = self.names(), []
        # (a global's methods are global_attrs: `queue.pop()` of a module-level list)
        called = names.methods | {attr for _, attr in names.global_attrs}
        grows = bool(called & _LIST_CHANGES) or stores.items
        removes = bool(called & _REMOVALS) or stores.items
        guarded_sets = {id(_set_of(path)) for _, _, path in self.plain
                        if path.steps and path.steps[-1][0] == "set" and path.named_in(names)}
        for name, container, held, attrs in self.held:
            if isinstance(container, (list, collections.deque, np.ndarray)):
                if grows and (len(container) != len(held)
                              or any(a is not b for a, b in zip(container, held))) and not (
                        not held and _tables_appended(held, container)):
                    changed.append(name)  # (`history.append(1)`; tables built on first use
                continue  # into an empty list: guarded, _built)
            if (removes and not attrs and not _entries(held) <= _entries(container)
                    and id(container) not in guarded_sets):
                changed.append(name)  # (`queue.popitem()`, `pending.pop()`: an entry gone;
                continue  # a set whose contents are guarded traces again, as NumPy's runs)
            for key, old in _numbered(held):
                stored = key in stores.attrs if attrs else stores.items and names.key(key)
                if stored and _renumbered(old, container.get(key, ABSENT)):
                    changed.append(f"{name}.{key}" if attrs else f"{name}[{key!r}]")
        changed += [name for globals_, name, old in self.held_globals
                    if name in stores.globals and _renumbered(old, globals_.get(name, ABSENT))]
        changed += [name for name, cell, old in self.held_cells if name in stores.cells
                    and _renumbered(old, getattr(cell, "cell_contents", ABSENT))]
        return changed

    def drawn(self):
        """The names of the outside iterators the traced code drew from (`next(counter)` of an
        itertools.count, a generator, iter(list)), of those the code names: its Python runs
        once, when traced, so the values drawn then are compiled in, where NumPy's code would
        draw new ones on every call. One whose progress nothing tells (a file, a csv reader)
        counts where the code calls next() or loops over it."""
        names, drawn = self.names(), []
        for iterator, before, ways in self.iterators.values():
            name, path = next(((n, p) for n, p in ways if p.named_in(names)), (None, None))
            if path is None:
                continue
            if before is None:
                last = path.steps[-1][1] if path.steps else name  # (for line in self.log)
                moved = "next" in names.globals or last in names.iterated
            else:
                moved = _progress(iterator, []) != before
            if moved:
                drawn.append(name)
        return drawn

    def cells_read(self):
        """The closure variables the user code entered may read as it found them (LOAD_DEREF
        before a STORE_DEREF): one it only assigns, or assigns first (`nonlocal prev; prev =
        W`), never had its old array read."""
        return frozenset().union(*(_cells_read(code) for code in list(self.codes)))

    def ties(self, moved):
        """Guards that the other places the code names that held an array written back as
        itself (`moved`: Outside and Rebuilt write-backs) when traced hold it still: the trace
        took one way to it (`self.hist[0]` where hist[1] was the same array, W appended twice),
        which a later call may find apart (the write-back then took hist[0] for hist[1])."""
        names, guards = self.names(), []
        outsides = [o for x in moved for o in (
            [x] if isinstance(x, Outside) else x.outsides() if isinstance(x, Rebuilt) else [])
            if o.traced is not None]
        for o in outsides:
            ways = [(n, p) for n, p in self.paths.get(id(o.traced), ()) if p.named_in(names)]
            chosen = next((n for n, p in ways if (id(p.root), p.steps) == (
                id(o.path.root), o.path.steps)), None)
            guards += [(f"{name} is {chosen}", True, path.then("is", SameAs(o.path)))
                       for name, path in ways if chosen is not None and path.steps
                       and (id(path.root), path.steps) != (id(o.path.root), o.path.steps)]
        return guards

    def way_to(self, array):
        """(name, Path) to `array` (one of `arrays`): the first found through names the code
        entered so far uses (self.W where self.__dict__ also holds it as self.params['W']),
        else the first found."""
        ways = self.paths[id(array)]
        if len(ways) > 1:
            names = self.names()
            return next((way for way in ways if way[1].named_in(names)), ways[0])
        return ways[0]

    def stores(self):
        """The Stores of the user code entered (but gc callbacks': they run at any time)."""
        from .trace import _frame_kind  # (it imports this module)
        asynchronous = {getattr(cb, "__code__", None) for cb in gc.callbacks}
        stores = NO_STORES
        for code in list(self.codes):  # (the profile hook may add one meanwhile)
            if code not in asynchronous and _frame_kind(code.co_filename) == "user":
                stores = stores | code_stores(code)
        return stores

    def given(self, names):
        """`names` (what the code reads) with the strings the user code was called with, or
        found outside (`for n in self.names: self.masks[n]`): keys it may look up."""
        found = {v for _, v, _ in self.plain if type(v) is str}
        return names._replace(given=names.given | self.given_strings | found)

    def names(self):
        """The Names the user code entered reads."""
        names = NO_NAMES
        for code in list(self.codes):  # (the profile hook may add one meanwhile)
            names = names | code_names(code)
        return self.given(names)

    def guards(self, read=()):
        """[(name, value, Path)] of the numbers, strings, Nones, functions, classes and
        (class, length) of lists and dicts outside the arguments whose every name on the path
        the user code entered reads (Path.named_in): what the trace may have used. Their values
        now, at the trace's end (what the trace itself changed, a counter, is not a change).
        `read`: the Paths of the outside arrays the trace read (a container whose last item it
        read was walked to its end, however the code named it)."""
        names = self.names()
        read_to_end = _read_to_end(read)
        stores = self.stores()
        rebound = stores.attrs | stores.globals | stores.cells
        guards, seen = [], set()
        from .capture import same  # (it imports this module)
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
            if path.steps[-1][0] == "keys" and not _walks_attributes(names):
                continue  # (`vars(cfg)`, `cfg.__dict__`, `dir(cfg)`: a field added or removed
                # is another walk; `**vars(cfg)` another call)
            if path.steps[-1][0] == "len" and (value != first or not (
                    _container_names(name, path) & (names.iterated | names.whole)  # (a loop
                    # over it, np.polyval(COEFFS, x), np.stack(BUF); not a buffer read by index,
                    # which may grow)
                    or (id(path.root), path.steps[:-1], _length(value)) in read_to_end
                    or names.methods & _WALK_METHODS
                    or names.globals & _SIZED_BUILTINS or names.methods & _LOOKUP_METHODS
                    or _FROM_THE_END in names.keys
                    or _served_by_default(value, names)  # (a key it lacked was served
                    # by __missing__, a default: one added later is another value)
                    or issubclass(value[0], np.ndarray)  # (an empty array: its shape)
                    or _container_names(name, path) & rebound)):  # (`self.hist = [self.W] +
                # self.hist[:1]`: made again from itself, its length decides the new one's)
                continue  # (a list the trace appends to is a log, not what a loop runs over;
                # a list's or dict's size matters where the code walks or measures one)
            if (type(value) in (_PLAIN + (frozenset, types.CodeType))
                    or isinstance(value, _PLAIN_INSTANCES) or type(value) in _GUARDED_CALLABLES
                    or isinstance(value, type)
                    or path.steps[-1][0] in ("len", "type", "called", "keys")):
                # (what the trace itself changed: the value it read, so that the next call,
                # which finds the new one, traces again as NumPy's code runs again; `if
                # self.first_call: self.first_call = False`. A number counted up is warned
                # about instead, changed_numbers, and guarded as it is now)
                changed = (path.steps[-1][0] in ("attr", "item", "global", "cell", "len", "set",
                                                 "keys")
                           and (type(first) in _PLAIN + (frozenset, tuple)
                                or isinstance(first, _PLAIN_INSTANCES))
                           and not _renumbered(first, value) and not same(first, value))
                guards.append((name, ChangedByTrace(first, value) if changed else value, path))
            elif ((type(first) in _PLAIN or isinstance(first, _PLAIN_INSTANCES))
                  and path.steps[-1][0] in ("attr", "item", "global", "cell")):
                guards.append((name, ChangedByTrace(first, value), path))  # (a table the trace
                # built where it found None, on a class too, `M.TABLE = ...`: see _built)
        guards += [(f"import {name}", ABSENT, Path(sys.modules, (("item", name),)))
                   for name in sorted(self.imported_later) if name in sys.modules]  # (the next
        # call walks the module the trace imported: its arrays read live)
        guards += [(name, ABSENT, path) for name, path in self.absent]  # (made by the trace)
        return guards + self._built()

    def _built(self):
        """Guards of what the traced code assigned outside (its Stores: an attribute, a dict
        entry it names, a global, a nonlocal; an empty list it appended tables to). The
        compiled program makes no assignment, so it may run only where each would change
        nothing: a plain value assigned is guarded by the value the trace left (`self.status
        = "running"`, reset by the user: traced again); one the trace changed (a table built
        where it found nothing, None, a number or an empty array: `if self.buf is None:
        self.buf = np.zeros(n)`, a flag or string set anew) makes the program single-use
        (ChangedByTrace): the next call traces again, and that trace reads the table live. A
        number counted up keeps its warning instead (changed_numbers)."""
        from .capture import same  # (it imports this module)
        stores, keys = self.stores(), self.names().keys

        def guard(name, before, now, path):
            if _renumbered(before, now):
                return []
            if before is not ABSENT and (now is before or same(before, now)):
                return [(name, now, path)] if _guardable(now) else []
            placeholder = (before is ABSENT or _guardable(before)
                           or type(before) is np.ndarray and before.size == 0)
            return [(name, ChangedByTrace(before, now), path)] if placeholder else []

        guards = []
        for name, container, held, attrs in self.held:
            stored = (lambda k: k in stores.attrs) if attrs else (
                lambda k: stores.items and k in keys)
            for key, now in list(_numbered(container)):
                if stored(key) or key not in held:
                    guards += guard(f"{name}.{key}" if attrs else f"{name}[{key!r}]",
                                    held.get(key, ABSENT), now, Path(container, (("item", key),)))
            if type(container) is list and not held and _tables_appended(held, container):
                guards.append((f"{name}[0]", ChangedByTrace([], "tables appended"),
                               Path(container, (("item", 0),))))
        for globals_, name, before in self.held_globals:
            if name in stores.globals:
                guards += guard(name, before, globals_.get(name, ABSENT),
                                Path(globals_, (("item", name),)))
        for name, cell, before in self.held_cells:
            if name in stores.cells:
                guards += guard(name, before, getattr(cell, "cell_contents", ABSENT),
                                Path(cell, (("cell", name),)))
        return guards

    def look_beyond(self, x):
        """Where the walk stopped at its limits (`frontier`): look for the array `x` (or the
        array it views) further down, through at most BEYOND_LIMIT more objects, and note it
        in `arrays` and `paths` where found (gradc/capture.py asks, for an array a traced
        operation reads that the walk did not find; most such are made inside the trace, by
        NumPy, and are found nowhere). The arrays found there are listed once a trace."""
        if self.beyond is None:
            self.beyond = {}
            queue, visited = collections.deque(self.frontier), set(self.scanned)
            while queue and len(visited) < BEYOND_LIMIT:
                value, name, path, first = queue.popleft()
                for child_name, kind, key, child in _children(value, name, first):
                    if type(child) in (np.ndarray, np.memmap, Fresh):
                        if child.size and child.dtype.kind == "f":
                            self.beyond.setdefault(id(child),
                                                   (child_name, child, path.then(kind, key)))
                    elif id(child) not in visited and not isinstance(child, SKIP) and not (
                            _gradcs(child)):
                        visited.add(id(child))
                        queue.append((child, child_name, path.then(kind, key), 0))
        from .capture import owner_of  # (it imports this module)
        for array in (x, owner_of(x)):
            found = self.beyond.get(id(array))
            if found is not None and found[1] is array and id(array) not in self.arrays:
                self.arrays[id(array)] = found
                self.paths.setdefault(id(array), []).append((found[0], found[2]))

    def _consider(self, value, name, depth, path, outside=True):
        """Watch `value` if it is a NumPy generator; else look `depth` levels into it. Where it
        lies `outside` the trace: NumPy float arrays met on the way are noted, `arrays`, with
        their `path`, and numbers, strings, None and functions with a path too, `plain`."""
        try:  # (an object that answers no attribute: np.load's BagObj, a dead weakref.proxy)
            value.__class__
        except Exception:  # noqa: BLE001 - (nothing to walk in it)
            return
        if type(value) in _PLAIN or isinstance(value, _PLAIN_INSTANCES) or type(value) in (
                set, frozenset) and all(type(v) in _PLAIN for v in value):
            if path.steps and outside:  # (a set of numbers and strings: guarded by contents)
                self.plain.append((name, frozenset(value) if type(value) is set else value,
                                   path.then("set", None)  # (a copy: what it held then)
                                   if type(value) in (set, frozenset) else path))
            if type(value) is not set:  # (a set: held too, below, for entries taken out)
                return
        if type(value) is Live and type(value.base) is np.ndarray:  # (the array it stands for
            value = value.base  # while this trace runs: gradc/live.py)
        if type(value) in (np.ndarray, np.memmap, Fresh) and not _object_array(value):  # (a
            # memmap: read live too; Fresh: made by an earlier trace, `self.buf = np.zeros(n)`)
            if outside and value.size and value.dtype.kind == "f":  # (weights, data; not
                if id(value) not in self.arrays:  # index tables and masks)
                    self.arrays[id(value)] = (name, value, path)
                self.paths.setdefault(id(value), []).append((name, path))
            elif outside and value.size:  # (index tables, masks; complex, structured and
                # text arrays, which NumPy alone reads: compiled in, checked by contents)
                self.tables.setdefault((id(value), id(path.root), path.steps),
                                       (name, value, path))  # (every way: `st.dst = st.src`
                # split later by `st.dst = new` must be seen at st.dst too)
            if outside and not value.size and path.steps:  # (its shape: grown, it traces again)
                self.plain.append((f"len({name})", (type(value), value.shape),
                                   path.then("len", None)))
            if (outside and 0 < value.size <= SNAPSHOT_SIZE and value.dtype.kind in "biufc"
                    and id(value) not in self.snapshots):
                self.snapshots[id(value)] = (name, value, path, value.tobytes())
            return
        if self.random_source(value, name):  # (frozen.Watch: a generator, np.random's)
            return
        if type(value) in _GUARDED_CALLABLES:  # (self.act = np.tanh: guarded as it is)
            if path.steps and outside:
                self.plain.append((name, value, path))
                if type(value) is types.FunctionType:  # (and its code: IPython's autoreload
                    self.plain.append((f"{name}.__code__", value.__code__,  # puts an edited
                                       path.then("attr", "__code__")))  # function's there)
            if (type(value) is types.FunctionType and depth and outside
                    and id(value) not in self.scanned):
                self.scanned.add(id(value))  # (a helper's closure: read through its cells,
                self._scan_closure(value, depth - 1)  # and its defaults)
                self._scan_defaults(value, depth - 1, path)
                for key, item in list(value.__dict__.items())[:MAX_ITEMS]:  # (its attributes:
                    self._consider(item, f"{name}.{key}", depth - 1,  # `scaled.k` as a setting)
                                   path.then("attr", key), outside)
                if _users(value) and id(value.__dict__) not in self.held_at:  # (what the code
                    # stores there, `helper.last = h`: written back, or refused, as an
                    # object's attributes)
                    self.held.append((name, value.__dict__, dict(value.__dict__), True))
                    self.held_at[id(value.__dict__)] = path
            elif depth and outside and id(value) not in self.scanned and (
                    isinstance(value, (types.MethodType, functools.partial))):
                self.scanned.add(id(value))  # (what a bound method or partial held as a value
                # carries: self.act = lin.apply reads lin.W, lin.s; partial(f, W) reads W)
                for label, steps, item in _carried(value):
                    self._consider(item, f"{name}.{label}", depth - 1,
                                   Path(path.root, path.steps + steps), outside)
            return
        if isinstance(value, type) and not _users(value):  # (DTYPE = np.float32 given to
            if path.steps and outside:  # x.astype: compiled in; guarded as it is)
                self.plain.append((name, value, path))
            return
        if _gradcs(value):
            return  # (gradc's own objects: a compiled function, an optimizer)
        if isinstance(value, types.ModuleType) and depth and _users_module(value):
            read = {a for g, a in self.names_now.global_attrs} | self.names_now.attrs
            if "vars" in self.names_now.globals:  # (vars(config)["W"]: the keys it may name)
                read |= {k for k in value.__dict__ if type(k) is str and self.names_now.key(k)}
            for key in read & value.__dict__.keys():  # (the names the code reads of it)
                self._consider(value.__dict__[key], f"{name}.{key}", depth - 1,
                               path.then("attr", key), outside)
            if outside:  # (getattr(config, "scale", 1.0): set or deleted later)
                for key in sorted(self.names_now.probed):
                    self.plain.append((f"hasattr({name}, {key!r})", hasattr(value, key),
                                       path.then("has", key)))
                if id(value.__dict__) not in self.held_at:  # (what the code stores there,
                    # `sharedmod.w = h`: written back, or refused, as an object's attributes)
                    self.held.append((name, value.__dict__, dict(value.__dict__), True))
                    self.held_at[id(value.__dict__)] = path
            return
        if isinstance(value, type) and depth and _users(value) and id(value) not in self.scanned:
            self._hold_class(value)
            self.scanned.add(id(value))  # (a class: Model.lr, cls.W)
            items = _class_items(value, name, ())
            if _users(type(value)):  # (its metaclass's, which the class serves too: M.k)
                items += _class_items(type(value), name, {key for _, _, key, _ in items})
            for item_name, kind, key, item in items:
                self._consider(item, item_name, depth - 1, path.then(kind, key), outside)
            return
        if outside and hasattr(type(value), "__next__") and not _users(type(value)) and not (
                isinstance(value, (weakref.ProxyType, weakref.CallableProxyType))):  # (a
            # weakref.proxy has __next__ for its referent's sake: walked as the object)
            # (an iterator, a generator: noted with what tells it moved; one of the user's
            # classes is walked as an object, its attributes held)
            if id(value) not in self.iterators:
                self.iterators[id(value)] = (value, _progress(value, self.keep), [])
            self.iterators[id(value)][2].append((name, path))
            return
        seen = id(value) if outside else (id(value), "inside")  # (looked at again from outside)
        ways = self.ways_walked.get(seen, 0)
        skipped = isinstance(value, SKIP) and not _object_array(value)  # (an object array:
        if depth == 0 or skipped or ways >= WAYS_WALKED or len(self.scanned) >= SCAN_LIMIT:
            if outside and not ways and not skipped:  # walked as a list of its rows)
                self.frontier.append((value, name, path, 0))
            return
        self.ways_walked[seen] = ways + 1
        container = value if outside else None  # (where a traced value stored is refused)
        if isinstance(value, weakref.ref):  # (self.parent = weakref.ref(p): self.parent().W)
            self.scanned.add(seen)
            referent = value()
            if referent is not None:
                self._consider(referent, f"{name}()", depth - 1, path.then("ref", None), outside)
            return
        sized = (list, tuple, collections.abc.Mapping, collections.deque)
        if (isinstance(value, sized) or _object_array(value)) and path.steps and outside:
            # (its class: an array where a list was; its length: a loop over it unrolls)
            self.plain.append((f"type({name})", type(value), path.then("type", None)))
            # (a tuple's too: the name may be bound to a longer one, LAYERS += (W3,))
            try:
                extent = _extent(value)
            except Exception:  # noqa: BLE001 - (a subclass whose len() raises: not measured)
                extent = None
            if extent is not None:
                self.plain.append((f"len({name})", (type(value), extent),
                                   path.then("len", None)))
        if isinstance(value, (list, tuple, collections.deque)) or _object_array(value):  # (a
            # deque, and an object array of layers' weights, as a list)
            items = [(f"{name}[{i}]", "item", i, v)
                     for i, v in enumerate(itertools.islice(value, MAX_ITEMS))]
            if outside and len(items) == MAX_ITEMS:  # (its len() may raise: not asked)
                self.frontier.append((value, name, path, MAX_ITEMS))
            if not (isinstance(value, (list, collections.deque))  # (a namedtuple too:
                    or _object_array(value) and value.ndim == 1):  # immutable, nothing stored;
                container = None  # an object array's items are stored into as a list's)
        elif isinstance(value, dict):
            entries = list(value.items())
            # (past MAX_ITEMS, the keys the code names: params["block1050.scale"] of a large
            # state dict was compiled in, stale)
            if len(entries) > MAX_ITEMS and outside:
                self.frontier.append((value, name, path, MAX_ITEMS))
            entries = entries[:MAX_ITEMS] + [(k, v) for k, v in entries[MAX_ITEMS:]
                                             if type(k) is str and self.names_now.key(k)]
            items = [(f"{name}[{k!r}]", "item", k, v) for k, v in entries]
        elif isinstance(value, (set, frozenset)):  # (its entries hash: no arrays in them)
            items = []
            if isinstance(value, frozenset):
                container = None
        else:
            attrs = getattr(value, "__dict__", None)
            if type(attrs) is dict:
                items = [(f"{name}.{k}", "attr", k, v) for k, v in list(attrs.items())[:MAX_ITEMS]]
                if outside:  # (its attribute names, where the code walks them: guards,
                    self.plain.append((f"vars({name})", tuple(attrs),  # _WALKS_ATTRIBUTES;
                                       path.then("keys", None)))  # a bound method's self too)
            else:  # (__slots__)
                attrs = None
                items = [(f"{name}.{k}", "attr", k, getattr(value, k))
                         for k in slots_of(type(value)) if hasattr(value, k)]
                if outside:  # (a traced value stored there is refused: undo_stored_values;
                    # in a slot empty before too)
                    self.slotted.append((name, value, {
                        k: getattr(value, k, ABSENT) for k in slots_of(type(value))}))
            # (what the class holds and the object does not: `training = True` in the class)
            items += _class_items(type(value), name, attrs or ())
            self._hold_class(type(value))
            if outside:  # (hasattr(self, "t"), getattr(cfg, "t",
                for key in sorted(self.names_now.probed):  # 1.0): set or deleted later, another
                    self.plain.append((f"hasattr({name}, {key!r})", hasattr(value, key),  # answer
                                       path.then("has", key)))
            if _serves_plainly(value):  # (its entries as it serves them, cm["W"],
                # first, then where it keeps them: cm.maps[1]["W"] is shadowed by cm["W"] = W2;
                # not another class's: its lookup may load a checkpoint's every weight)
                items = [(f"{name}[{k!r}]", "item", k, v) for k, v in _served(value)] + items
            if outside and path.steps and callable(value):  # (self.act = ReLU(): its class,
                self.plain.append((f"type({name})", _called(value),  # and the __call__ it runs)
                                   path.then("called", None)))
            container = attrs if outside else None
        self.scanned.add(seen)
        self.keep.append(value)
        if container is not None and not ways:
            self.held.append((name, container, container.copy(), container is not value))
            self.held_at[id(container)] = path  # (the way to it: a write-back follows it)
        for item_name, kind, key, item in items:
            self._consider(item, item_name, depth - 1, path.then(kind, key), outside)


# mappings that are no dict whose lookup reads what they hold, with no other effect
_SERVED_MAPPINGS = (collections.ChainMap, collections.UserDict, types.MappingProxyType,
                    weakref.WeakValueDictionary)


def _object_array(x):
    """Whether x is a NumPy array of objects with an axis (weights kept as
    np.array(list_of_arrays, dtype=object)): walked as a list of its rows."""
    return type(x) is np.ndarray and x.dtype.kind == "O" and x.ndim > 0


def _serves_plainly(x):
    """Whether x is one of _SERVED_MAPPINGS, or of a subclass that keeps its lookup (a
    UserDict with a __missing__ default)."""
    base = next((m for m in _SERVED_MAPPINGS if isinstance(x, m)), None)
    return base is not None and type(x).__getitem__ is base.__getitem__


def _served(mapping):
    """(key, value) of a mapping that is no dict, as its __getitem__ serves them (up to
    MAX_ITEMS); none where that raises."""
    try:
        return [(k, mapping[k]) for k in itertools.islice(mapping.keys(), MAX_ITEMS)]
    except Exception:  # noqa: BLE001 - (a mapping that fails to be read: not walked)
        return []


def _users_module(module):
    """Whether a module is the user's own (`import mymodel; mymodel.W`, or a config module
    made in code, types.ModuleType("config"), which has no file)."""
    name = module.__name__.split(".")[0]
    return not (name in LIBRARIES or name in sys.stdlib_module_names
                or name in sys.builtin_module_names
                or getattr(module, "__file__", None) is None and hasattr(module, "__path__"))
    # (a namespace package: a folder of modules, no file)


def _users(cls):
    """Whether the class is the user's (not NumPy's, gradc's, the standard library's). A class
    made by exec() with globals that have no __name__ is in module "builtins" too: one made by
    a class statement (a heap type, not one of C's: a generator, a list's iterator) is the
    user's (its attributes, changed, were read stale); so is one of types.new_class or
    dataclasses.make_dataclass, which Python 3.11 puts in module "types"."""
    module = cls.__module__.split(".")[0]
    if module in ("builtins", "types"):  # (types.new_class, dataclasses.make_dataclass)
        return bool(getattr(cls, "__flags__", 0) & _HEAP_TYPE) and getattr(
            sys.modules.get(module), cls.__name__, None) is not cls
    return not (module in LIBRARIES or module in sys.stdlib_module_names)


_HEAP_TYPE = 1 << 9  # (Py_TPFLAGS_HEAPTYPE: a class made at run time, not a static C type)


def _class_items(cls, name, instance_attrs):
    """(name, "attr", key, value) of what the user's class `cls` and its bases hold (numbers,
    arrays, functions, containers, objects: `hp = SimpleNamespace(k=2.0)`, a nested class, an
    enum member), but for `instance_attrs` (the object's own, which win) and descriptors other
    than functions and staticmethods (a property computes from what is walked anyway)."""
    items, seen = [], set(instance_attrs)
    for klass in cls.__mro__:
        if not _users(klass):
            continue
        for key, value in list(vars(klass).items())[:MAX_ITEMS]:
            if isinstance(value, staticmethod):  # (read through the object: the function;
                value = value.__func__  # C.act = staticmethod(f) swapped was not seen)
            if key not in seen and not key.startswith("__") and (
                    type(value) is types.FunctionType  # (a method: Base.act = ... patched)
                    or not hasattr(type(value), "__get__")  # (class-level objects, held as
                    # the instance's are: only numbers, arrays, functions and lists were, and
                    # a `Model.hp.scale` changed between calls was read stale)
                    or isinstance(value, functools.partialmethod)):  # (swapped: seen)
                seen.add(key)
                items.append((f"{name}.{key}", "attr", key, value))
    return items


def _children(value, name, first=0):
    """(name, step kind, key, value) of what a container or object holds, from its entry
    number `first` on (look_beyond: lists, tuples, deques, mappings, weak references,
    attributes)."""
    try:
        if isinstance(value, (list, tuple, collections.deque)):
            return [(f"{name}[{i}]", "item", i, v)
                    for i, v in enumerate(itertools.islice(value, first, None), first)]
        if isinstance(value, weakref.ref):
            referent = value()
            return [] if referent is None else [(f"{name}()", "ref", None, referent)]
        if isinstance(value, dict) or _serves_plainly(value):
            return [(f"{name}[{k!r}]", "item", k, value[k])
                    for k in itertools.islice(value.keys(), first, None)]
        if isinstance(value, (set, frozenset)) or hasattr(type(value), "__next__") and not (
                isinstance(value, (weakref.ProxyType, weakref.CallableProxyType))):
            return []  # (entries that hash hold no arrays; an iterator is not drawn from)
        attrs = getattr(value, "__dict__", None)
        if type(attrs) is dict:
            return [(f"{name}.{k}", "attr", k, v)
                    for k, v in itertools.islice(attrs.items(), first, None)]
        return [(f"{name}.{k}", "attr", k, getattr(value, k)) for k in slots_of(type(value))
                if hasattr(value, k)]
    except Exception:  # noqa: BLE001 - (an object that fails to be looked at holds nothing)
        return []


def _guardable(x):
    """Whether an assigned value is guarded by value: a number, string, None, enum member, or
    a tuple of them (`self.last_shape = x.shape`)."""
    return (type(x) in _PLAIN or isinstance(x, _PLAIN_INSTANCES)
            or type(x) is tuple and len(x) <= 32 and all(map(_guardable, x)))


class ChangedByTrace:
    """The guard value of what the traced code itself changed outside its arguments (`before`
    to `after`): no later call may run that program, which would not make the change (a flag
    cleared, a table built, `self.training = False` of an eval() method), so each call traces
    again until a trace leaves the value as it found it. Matches nothing (capture.same)."""
    __slots__ = ("before", "after")

    def __init__(self, before, after):
        self.before, self.after = before, after

    def __repr__(self):
        shown = lambda x: "nothing" if x is ABSENT else (  # noqa: E731
            f"a {x.dtype.name}{list(x.shape)} array" if isinstance(x, np.ndarray) else repr(x))
        return f"{shown(self.before)}, then {shown(self.after)} by the traced code itself"


class WrittenInto(NamedTuple):
    """An outside array the traced code updated in place, by no store the walk saw (`W =
    self.W; W -= lr * g`, `np.subtract(W, g, out=W)`): its new value written into the array
    at `path` after each call, as NumPy's code writes into it."""
    where: str
    path: Path
    value: object
    container: object = None  # (no dict entry or attribute is assigned: Stored's fields)
    key: object = None

    def message(self):
        return _stored(self.where, self.value)

    def write(self, value):
        np.copyto(self.path.follow(), value)  # (the same array the call read: its capture)


def written_into(in_place, stored, watch):
    """WrittenInto for each array of Graph.in_place that no Stored of `stored` writes into."""
    covered = {id(array_of(entry_of(w.container, w.key)))
               for w in stored if getattr(w, "into", False) and w.key is not None}
    found = []
    for array, value in in_place.values():
        if id(array) not in covered and id(array) in watch.paths:
            name, path = watch.way_to(array)
            found.append(WrittenInto(name, path, value))
    return found


class SameAs:
    """A step of a Path (kind "is") that asks whether what it reaches is the object at `path`
    (hashed by identity, as Paths in guards' keys are)."""
    __slots__ = ("path",)

    def __init__(self, path):
        self.path = path


class _Undo:
    """One OutsideWalk.undo_stored_values: what to write back for each value the trace stored
    (`stored`), the refusals (`appended`: where, with the line) and the write-backs
    (`assigned`: Stored), each place put back as the walk found it."""

    def __init__(self, walk, given, in_place, results):
        self.walk, self.given, self.in_place, self.results = walk, given, in_place, results
        self.known = {id(c) for _, c, _, _ in walk.held}  # (the objects' __dicts the walk held)
        self.appended, self.assigned = [], []
        # an array updated in place that left its place: the places holding outside arrays
        # stay as the trace left them (`self.prev = self.W` beside `self.W -= g` is written
        # back; a swap beside one is refused as rebound)
        self.moved_apart = any(self.moved(array) for array, _ in in_place.values()
                               if id(array) in walk.paths)

    def stored(self, v):
        """What to write back for v, or None: v holds no traced value."""
        walk = self.walk
        if id(v) in self.given:
            return Given(self.given[id(v)])
        path = walk._held_path(v) if type(v) in (dict, list) or _record(v) else None
        if path is not None:  # (one from outside, `self.best = self.params`, `self.first =
            return Outside(path, v)  # self.layers[0]`: itself, each call, its entries written
            # back where they are)
        if isinstance(v, Value) or _holds_value(v):
            return v
        if self.moved_apart:  # (outside arrays moved beside updates in place, `self.A, self.B
            return None  # = self.B, self.A; self.A -= g`: refused as rebound, trace.py)
        if isinstance(v, collections.deque) and any(  # (refused: trace.py
                walk.outside_array(x) is not None for x in list(v)[:256]):
            return v  # _containers_written_back)
        if walk._holds_outside_array(v):
            return v  # (`self.prev = (self.W, 1)`: each call's self.W, function.Made)
        return walk.outside_array(v) or walk.rebuilt(v, self.known)

    def written_into(self, before, now):
        """Whether `now` is a value an in-place update gave the array held there before: the
        last, or an earlier one (tied: `self.E -= g1; self.D -= g2` of one array)."""
        update = self.in_place.get(id(array_of(before)))
        return update is not None and update[0] is array_of(before) and (
            update[1] is now or self.results.get(id(now)) == id(update[0]))

    def moved(self, array):
        """Whether an outside array is no longer where it was found, nor updated there."""
        try:
            now = self.walk.way_to(array)[1].follow()
        except Exception:  # noqa: BLE001 - (gone)
            return True
        return array_of(now) is not array and not self.written_into(array, now)

    def write_back(self, where, container, key, before, now, **kwargs):
        """A Stored of `now` (at `where`), into the array held there before where it is an
        update of it (its last value)."""
        into = self.written_into(before, now)
        value = self.in_place[id(array_of(before))][1] if into else now
        self.assigned.append(Stored(where, container, key, self.stored(value), into=into,
                                    **kwargs))

    def sequence(self, name, container, held):
        """A list or deque: new items that are traced values (or hold one) refused as appended,
        and the list as it was; an item replaced in a list of the same length written back."""
        new = [i for i, v in enumerate(container) if not (i < len(held) and held[i] is v)]
        refused = [i for i in new if self.walk._made_holding_value(container[i])]
        found = refused or [i for i in new if self.stored(container[i]) is not None]
        if found and not refused and type(container) in (list, np.ndarray) and len(
                container) == len(held):
            for i in found:  # (`self.m[0] = 0.9 * self.m[0] + g`, `self.params[i] -= lr * g`:
                # written there after each call, into the array for the second)
                self.write_back(f"{name}[{i}]", container, i, held[i], container[i],
                                holder=self.walk.held_at.get(id(container)))
                container[i] = held[i]
        elif found:  # (`history.append(loss)`, `self.hooks.append(lambda y: y * h)`)
            self.appended.append(_stored(f"{name}[{found[0]}]", container[found[0]]))
            if isinstance(container, np.ndarray):  # (an object array: its items as they were)
                container[:] = held
            else:
                container.clear()
                container.extend(held)

    def mapping(self, name, container, held, attrs):
        """A dict, or an object's __dict__ (`attrs`): an object of traced values made in the
        trace refused (`SimpleNamespace(h=h)`); other entries that hold traced values written
        back, each place put back."""
        walk = self.walk
        where = (lambda key: f"{name}.{key}") if attrs else (lambda key: f"{name}[{key!r}]")
        for key in [k for k, v in _numbered(container) if held.get(k) is not v
                    and walk._made_holding_value(v)]:
            self.appended.append(_stored(where(key), container[key]))
            put_entry(container, key, held.get(key, ABSENT))
        for key in [k for k, v in _numbered(container)  # (a set: no traced value hashes)
                    if held.get(k) is not v and self.stored(v) is not None]:
            self.write_back(where(key), container, key, held.get(key), container[key],
                            holder=walk.held_at.get(id(container)), attrs=attrs)
            if key not in held and not attrs and id(container) in walk.held_at:
                walk.absent.append((where(key), walk.held_at[id(container)].then("item", key)))
            put_entry(container, key, held.get(key, ABSENT))  # (a new entry: checked absent, so that the next
            # call, which finds the one written back, traces again: `log.setdefault("loss",
            # []).append(l)` appends to it then, `stats["mu"] = mu` assigns)

    def slots(self, name, obj, held):
        """An object's __slots__, or a class's attributes: a traced value refused (a class's
        never written back); an outside array kept in a slot written back (`self.keep.w =
        self.W`: each call's self.W)."""
        for key, before in held.items():
            now = getattr(obj, key, ABSENT)
            if now is before:
                continue
            if isinstance(now, Value) or _holds_value(now) or self.walk._made_holding_value(now):
                self.appended.append(_stored(f"{name}.{key}", now))
            elif isinstance(obj, type) or self.stored(now) is None:
                continue
            else:
                self.assigned.append(Stored(f"{name}.{key}", _Slots(obj), key, self.stored(now)))
            if before is ABSENT:
                delattr(obj, key)
            else:
                setattr(obj, key, before)
        if isinstance(obj, type):  # (a class attribute set anew: Shared.rm = ...)
            for key in [k for k, v in list(vars(obj).items()) if k not in held and _holds_value(v)]:
                self.appended.append(_stored(f"{name}.{key}", vars(obj)[key]))
                delattr(obj, key)

    def place(self, name, place, before, container, key):
        """A global or a closure's cell (`place`, _Globals or _Cell): a function made in the
        trace holding a traced value refused (`ACT = partial(f, h)`), a traced value written
        back; put back as found."""
        now = place.get()
        if now is before:
            return
        if self.walk._made_holding_value(now):
            self.appended.append(_stored(name, now))
        elif self.stored(now) is not None:
            self.assigned.append(Stored(name, container, key, self.stored(now)))
        else:
            return
        place.set(before)


class _Globals(NamedTuple):
    """A global of a module's namespace, as a place: get, set (ABSENT: deleted)."""
    namespace: dict
    name: str

    def get(self):
        return self.namespace.get(self.name)

    def set(self, value):
        put_entry(self.namespace, self.name, value)


class _Cell(NamedTuple):
    """A closure's cell, as a place."""
    cell: object

    def get(self):
        return getattr(self.cell, "cell_contents", ABSENT)

    def set(self, value):
        self.cell.cell_contents = value


def put_entry(container, key, value):
    """container[key] = value; the entry deleted where value is ABSENT."""
    if value is ABSENT:
        container.pop(key, None)
    else:
        container[key] = value


class Outside:
    """An array from outside the arguments that the function assigned elsewhere outside
    (`self.prev = self.rm`, `self.cache = (x, self.rm)`): written back as the array `path`
    holds when the call starts, as NumPy's code binds it on every call (the trace's binding was
    that of the traced call: once the function stopped tracing again, it stayed). The traced
    call's own run writes back the array the trace stored (`traced`, dropped then): by then the
    place may hold another, one NumPy made there in the trace (`self.c = self.b; self.b =
    self.a; self.a = self.W.copy()`: b took a's copy, and nothing else held a's array)."""
    __slots__ = ("path", "traced")

    def __init__(self, path, traced=None):
        self.path, self.traced = path, traced

    def __repr__(self):
        return f"Outside({self.path!r})"

    def follow(self, found):
        """The array at `path` now, or as the call found it (`found`: id(self) -> array)."""
        return found[id(self)] if id(self) in found else self.path.follow()

    def found(self, traced_run):
        """The array to write back as a call starts: the one the traced code stored on the
        traced call's run (then forgotten either way), else the one at `path` now."""
        array, self.traced = self.traced, None
        return array if traced_run and array is not None else self.path.follow()


class Rebuilt(NamedTuple):
    """An object the trace made holding arrays from outside (`self.used = Record(w=self.W)`),
    or a dict, list or tuple inside one: written back as a copy of it, its `fields` (name or
    key, Outside or Rebuilt) what each call found there, as NumPy's code makes it on every
    call."""
    template: object
    fields: tuple

    def build(self, found):
        parts = {key: part.build(found) if isinstance(part, Rebuilt) else part.follow(found)
                 for key, part in self.fields}
        template = self.template
        if is_container(template):
            return replaced(template, lambda key, v: parts.get(key, v), fresh=True)
        made = copy.copy(template)
        if hasattr(made, "__dict__"):
            vars(made).update(parts)
        else:  # (__slots__; frozen or not)
            for key, part in parts.items():
                object.__setattr__(made, key, part)
        return made

    def outsides(self):
        """Its Outside parts, at every level."""
        for _, part in self.fields:
            yield from part.outsides() if isinstance(part, Rebuilt) else (part,)


class _Slots:
    """An object's __slots__ as the container of a write-back (Stored.write assigns items)."""

    def __init__(self, obj):
        self.obj = obj

    def __getitem__(self, key):
        return getattr(self.obj, key)

    def __setitem__(self, key, value):
        setattr(self.obj, key, value)


@functools.lru_cache(maxsize=4096)
def _cells_read(code):
    """The closure variables `code` may read before it assigns them: not one it assigns first,
    in the straight run of code before any jump (`prev = W; ... x @ prev`: the old array in
    prev is never read)."""
    read, assigned, jumped = set(), set(), False
    for ins in dis.get_instructions(code):
        if ins.opname in ("LOAD_DEREF", "LOAD_CLASSDEREF") and ins.argval not in assigned:
            read.add(ins.argval)
        elif ins.opname == "STORE_DEREF" and not jumped:
            assigned.add(ins.argval)
        elif "JUMP" in ins.opname or ins.opname in ("FOR_ITER", "SEND", "RETURN_VALUE"):
            jumped = True
    return frozenset(read)


def owner_of(x):
    """The array that owns the memory `x` views (x itself if it owns it)."""
    while type(x.base) is np.ndarray:
        x = x.base
    return x


def _stored_lines(lines, where, value, moved, depth=3):
    """Append to `lines` what OutsideWalk.stored_text says of `value` stored at `where`: its
    arrays by their bytes (but those `moved(array)` names: outside arrays), its numbers by
    value, in dicts, lists, tuples and records a few levels down. (A function of the module:
    a closure calling itself is a reference cycle, which kept the walk and its graph alive.)"""
    if is_container(value) and depth:  # (`self.snap = copy.deepcopy(self.params)`)
        for k, v in list(value.items() if isinstance(value, dict) else enumerate(value))[:256]:
            _stored_lines(lines, f"{where}[{k!r}]", v, moved, depth - 1)
    elif depth and _record(value):  # (`self.used = Snap(self.W.copy())`)
        for k, v in list(vars(value).items())[:64]:
            _stored_lines(lines, f"{where}.{k}", v, moved, depth - 1)
    elif (isinstance(value, np.ndarray) and not isinstance(value, Value)
          and value.dtype != object and moved(value) is None):
        digest = hashlib.sha256(np.ascontiguousarray(value).view(np.uint8)).hexdigest()
        lines.append(f"\nstored {where} {value.dtype.str}{value.shape} {digest}")
    elif type(value) in (int, float, bool, str, type(None)) or isinstance(value, np.generic):
        lines.append(f"\nstored {where} {type(value).__name__}:{value!r}")


def _record(x):
    """Whether x is an object of the user's whose attributes are data (a dataclass, a
    SimpleNamespace, a class's instance): not a module, class, function or array."""
    return type(getattr(x, "__dict__", None)) is dict and not isinstance(x, (
        type, types.ModuleType, types.FunctionType, types.MethodType, np.ndarray, Value))


def objects_in(x, depth=4):
    """The objects (no dict, list, tuple or array) a dict, list or tuple holds, a few levels
    down: those the trace made holding outside arrays are Rebuilt on every call."""
    for v in (list(x.values()) if isinstance(x, dict) else x)[:256]:
        if is_container(v):
            if depth:
                yield from objects_in(v, depth - 1)
        elif not isinstance(v, (np.ndarray, Value)):
            yield v


def with_objects(x, made, depth=4):
    """x (a dict, list or tuple) with the objects that `made` maps by id replaced."""
    return replaced(x, lambda _, v: with_objects(v, made, depth - 1)
                    if is_container(v) and depth else made.get(id(v), v))


def replaced(x, swap, fresh=False):
    """x (a dict, list or tuple) with each item v, at key or index k, swap(k, v): x itself
    where none changed (unless `fresh`); a dict or list of any class copied (a defaultdict
    keeps its default), a tuple or namedtuple made anew."""
    items = list(x.items() if isinstance(x, dict) else enumerate(x))
    new = [(k, swap(k, v)) for k, v in items]
    if not fresh and all(n is v for (_, v), (_, n) in zip(items, new)):
        return x
    if isinstance(x, tuple):
        values = [n for _, n in new]
        return type(x)(*values) if is_namedtuple(x) else type(x)(values)
    made = copy.copy(x)
    for k, n in new:
        made[k] = n
    return made


class Held(Rebuilt):
    """A dict or list from outside in a container the trace made (`self.both = (self.params,
    self.layers)`): written back as that very dict or list (the one its `fields`' Outside finds),
    where the container's mark (`template`, a _Mark) is."""

    def build(self, found):
        return self.fields[0][1].follow(found)


class HeldGiven(Held):
    """A dict or list the function was given, in a container the trace made (`p["me"] =
    [p["l"]]`): written back as the caller's own of each call (its field: a Given), where the
    container's mark is (function.Made.build)."""

    def build_given(self, given):
        return self.fields[0][1].follow(given)

    def outsides(self):
        return iter(())


class _Mark:
    """The place of a Held in the container a write-back builds (function.Made)."""
    __slots__ = ()


class Given(NamedTuple):
    """What the function was given, assigned outside (`net.params = params`): written back
    as the caller's own object of each call, at these steps (keys, indices) into its (args,
    kwargs), as NumPy's code binds it."""
    steps: tuple

    def follow(self, tree):
        for step in self.steps:
            tree = tree[step]
        return tree


def _object_holding_value(x, depth=3):
    """Whether x is an object (no dict, list or tuple) whose attributes hold traced values, a
    few levels down (`s.rec = NS(a=NS(h=None)); s.rec.a.h = np.tanh(x)`), in its __slots__
    too; or a function, partial or bound method made in the trace that carries one (`self.act
    = lambda y: y * h`: called after the call, it would compute with the trace's h)."""
    if isinstance(x, (dict, list, tuple, Value, np.ndarray, type)) or not depth:
        return False
    carried = _carried_by_callable(x)
    if carried is not None:
        return any(_holds_value(v, 1) or _object_holding_value(v, depth - 1) for v in carried)
    attrs = getattr(x, "__dict__", None)
    if attrs is not None and type(attrs) is not dict:
        return False
    values = (list(attrs.values())[:64] if attrs is not None else
              [getattr(x, k) for k in slots_of(type(x))[:64] if hasattr(x, k)])
    return any(_holds_value(v, 1) or _object_holding_value(v, depth - 1) for v in values)


def _carried_by_callable(x):
    """The values a function (its closure's cells, its defaults), a partial (its arguments) or
    a bound method (its object) carries; None for anything else."""
    if isinstance(x, types.FunctionType):
        cells = []
        for cell in x.__closure__ or ():
            try:
                cells.append(cell.cell_contents)
            except ValueError:  # (a variable not yet assigned)
                pass
        return cells + list(x.__defaults__ or ()) + list((x.__kwdefaults__ or {}).values())
    if isinstance(x, functools.partial):
        return [x.func, *x.args, *x.keywords.values()]
    if isinstance(x, types.MethodType):
        return [x.__self__]
    return None


def _gradcs(x):
    """Whether x is an object of gradc's own (a compiled function, an optimizer); not one of a
    module `gradc compile` imported as gradc_user_<name>."""
    module = type(x).__module__ or ""
    return module == "gradc" or module.startswith("gradc.")


def _holds_value(x, depth=0):
    """Whether a dict, list, tuple or deque holds a traced value (a few levels down)."""
    if isinstance(x, Value):
        return True
    if depth > 8 or not isinstance(x, (dict, list, tuple, collections.deque)):
        return False
    return any(_holds_value(v, depth + 1) for v in (x.values() if isinstance(x, dict) else x))


class Stored(NamedTuple):
    """A traced value the traced code assigned outside its arguments: `where` (its name in
    messages), the dict (an object's __dict__, a module's globals) and key, or the closure cell
    (key None), and the value. `write` puts a call's value there."""
    where: str
    container: object
    key: object
    value: object
    into: bool = False  # (written into the array there, as `params["W"] -= g` writes)
    holder: object = None  # (the Path to the dict, or the object whose __dict__ it is: one the
    attrs: bool = False  # user put there since, `m.stats = {}` each epoch, is written into)
    given: tuple = None  # (steps to the dict among the arguments: the trace ran on a copy, so
    # each call's own dict is written into, `bn_param["running_mean"] = ...`)

    def message(self):
        return _stored(self.where, self.value)

    def write(self, value):
        if self.key is None:
            self.container.cell_contents = value
            return
        container = self.container
        if self.holder is not None:
            try:
                now = self.holder.follow()
                now = vars(now) if self.attrs else now
            except Exception:  # noqa: BLE001 - (gone, or no __dict__: the one traced)
                now = None
            container = now if isinstance(now, (dict, list)) else container
        now = entry_of(container, self.key) if self.into else None
        if type(now) is np.ndarray and now.shape == np.shape(value) and now.dtype == value.dtype:
            if not now.flags.writeable:  # (made read-only since the trace: NumPy's refusal)
                raise ValueError(f"{self.where}: output array is read-only")
            np.copyto(now, value)  # (every other holder of the array sees it, as in NumPy)
        else:
            container[self.key] = value


def _stored(where, value):
    """`where` a traced value was stored, and the line that computed it (the store itself runs
    no traced operation, so no line of it is known)."""
    if isinstance(value, (Outside, Rebuilt)) or isinstance(value, np.ndarray) and not isinstance(
            value, Value):  # (an outside array, `self.hist.append(self.W)`: outside_array)
        return (f"`{where}` (an array from outside, put there once, where NumPy's code puts it "
                "there on every call)")
    carried = _carried_by_callable(value)
    held = next((v for v in carried or () if isinstance(v, Value)), None)
    value = held if held is not None else value
    node = value.node if isinstance(value, Value) else None  # (a dict of them, what was given)
    source = node.source if node is not None and node.source != "<gradc>" else None
    if carried is not None:  # (a function made in the trace: it computes with the trace's value)
        return (f"`{where}` (a function holding a value computed at {source})" if source else
                f"`{where}` (a function holding a traced value)")
    return f"`{where}` (a value computed at {source})" if source else f"`{where}`"
