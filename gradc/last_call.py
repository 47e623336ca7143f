"""The fast way into a compiled call: `LastCall` recognizes the last call's signature without
flattening, hashing or a cache lookup (see the class)."""
from __future__ import annotations

import ctypes
import math
import types
import weakref
from bisect import bisect_left

import numpy as np

from . import pytree
from .capture import owner_of, same


def _data_offset():
    """The byte offset of an ndarray's data pointer in its object (NumPy's PyArrayObject:
    `data` follows the object's header), found by looking at two arrays, or None."""
    probes = [np.empty(n, np.uint8) for n in (8, 24)]
    for offset in range(8, 64, 8):  # (within the object: its fields take more than 64 bytes)
        if all(ctypes.c_int64.from_address(id(a) + offset).value
               == a.__array_interface__["data"][0] for a in probes):
            return offset
    return None


DATA_OFFSET = _data_offset()
_INT64_AT = ctypes.c_int64.from_address


def data_address(x):
    """The address of the NumPy array x's data: its pointer read from the object (~80 ns;
    `x.__array_interface__` builds a dict: ~0.8 us a call, which every new input or result
    array paid)."""
    if DATA_OFFSET is None:
        return x.__array_interface__["data"][0]
    return _INT64_AT(id(x) + DATA_OFFSET).value


def _forgotten():
    return None  # what a forgotten weak reference returns: no array is this one


# guarded values the fast path compares by identity (capture.same would say the same, slower):
# a function's code (replaced in place by an autoreload), functions, classes, True and False
# (not builtin methods: `[].append` is a new object each time it is read)
_BY_IDENTITY = frozenset({types.CodeType, types.FunctionType, type, bool})


def _same_bytes(now, was, was_bytes):
    """Whether the array `now` holds the bits of `was` (whose bytes are `was_bytes`): a NaN of
    another payload differs here (the slow way, capture.same, then decides)."""
    return (type(now) is type(was) and now.shape == was.shape and now.dtype == was.dtype
            and now.tobytes() == was_bytes)


class LastCall:
    """The last call's signature, recognized without flattening, hashing or a cache lookup.

    `match(x)` is generated from the signature's tree (x is what was flattened: `(args, kwargs)`)
    and checks exactly what the signature key holds: the same containers (exact types, lengths,
    dict keys), static values of the same type and value, and every leaf a NumPy array of the same
    shape, strides (so still C-contiguous) and dtype; leaves in `writeable` (a train step's
    parameters) must be writeable. It writes the leaves' addresses into the compiled signature's
    `io` (what the driver reads) only for arrays that are not the ones it saw last, held by weak
    reference (an array's data never moves while it lives; taking an address costs ~1 us).
    Anything else returns False and the caller takes the slow way (flatten, key, cache), which
    also raises the errors.

    Aliasing is checked where an address is taken, so a call with the same arrays checks
    nothing: a leaf must not overlap the arena (an output handed out earlier, or a view of one),
    nor a parameter, and parameters must not overlap each other (a new parameter array re-checks
    every leaf). Where one does, match returns False: the slow way copies it (Compiled.run), or
    raises (tied parameters)."""

    def __init__(self, source, consts, leaves, compiled, spans):
        self.source = source  # readable: print(f._last_call.source)
        self.refs = [_forgotten] * len(leaves)  # the first match takes every address
        # (`__name__`: match's frames are gradc's, never the user's code that a trace's walk
        # of what is read from outside looks into: gradc/frozen.py's _kind)
        namespace = dict(consts, __name__=__name__, ndarray=np.ndarray, ref=weakref.ref,
                         address_of=data_address,
                         refs=self.refs, addresses=compiled.io, forget=self.forget)
        if spans is not None:
            namespace.update(starts=spans.starts, params_apart=spans.apart, bisect=bisect_left,
                             param_starts=spans.lo, param_ends=spans.hi)
        exec(compile(source, "<gradc LastCall.match>", "exec"), namespace)
        self.match = namespace["match"]
        self.compiled = compiled
        self.state = self.static = None  # a train step's optimizer state and hyperparameters

    def forget(self):
        """Someone else wrote the addresses in io: take them all again next time."""
        self.refs[:] = [_forgotten] * len(self.refs)

    @classmethod
    def make(cls, treedef, leaves, compiled, writeable=()):
        """The LastCall of a signature, or None if its tree holds something it does not handle.
        `leaves` end with the arrays the compiled signature reads from outside the arguments,
        found again through their paths (gradc/capture.py; another shape: the slow way)."""
        consts, lines = {}, []
        captures, guards = compiled.captures.captures, compiled.captures.guards
        first = len(leaves) - len(captures)
        if not _match_lines(treedef, "x", lines, consts, iter(range(first))):
            return None
        if captures or guards:
            lines.append("try:")
            for guard in guards:
                name = f"G{len(consts)}"
                consts.update({name: guard.value, "same": same, "same_bytes": _same_bytes})
                now = guard.path.expression(consts)
                if guard.value is None or type(guard.value) in _BY_IDENTITY:
                    test = f"{now} is not {name}"  # (what only is itself)
                elif isinstance(guard.value, np.ndarray):  # (a small array's contents: its
                    consts[f"{name}_bytes"] = guard.value.tobytes()  # bits, ~7x faster)
                    test = f"not same_bytes({now}, {name}, {name}_bytes)"
                else:
                    test = f"not same({now}, {name})"
                lines += [f"    if {test}:", "        return False"]
            for j, c in enumerate(captures):
                lines.append(f"    l{first + j} = {c.path.expression(consts)}")
                for _, tie in c.ties:  # (another way to that array then: untied since?)
                    lines += [f"    if {tie.expression(consts)} is not l{first + j}:",
                              "        return False"]
                for _, shared in c.shares:  # (an array viewing its memory then: apart since?)
                    consts["owner_of"] = owner_of
                    lines += [f"    if owner_of({shared.expression(consts)}) is not "
                              f"owner_of(l{first + j}):", "        return False"]
            apart = compiled.captures.apart  # (one updated in place, apart then: together?)
            if apart:
                consts["owner_of"] = owner_of
                owners = ", ".join(f"id(owner_of(l{first + k}))" for k in apart)
                lines += [f"    if len({{{owners}}}) < {compiled.captures.memories}:",
                          "        return False"]
            lines += ["except Exception:", "    return False"]
            for j in range(len(captures)):
                lines += [f"if type(l{first + j}) is not ndarray:", "    return False"]
        for i, x in enumerate(leaves):
            consts.update({f"S{i}": x.shape, f"T{i}": x.strides, f"D{i}": x.dtype})
            lines += [f"if l{i}.shape != S{i} or l{i}.strides != T{i} or l{i}.dtype is not D{i}:",
                      "    return False"]
            if i in writeable:
                lines += [f"if not l{i}.flags.writeable:", "    return False"]
        params = [i for i in range(len(leaves)) if i in writeable]
        spans = _ParamSpans([x.nbytes for x in leaves], params) if params else None
        if params:
            lines.append("moved = False  # a parameter array is not the last one")
        for i in params:
            lines += [f"if refs[{i}]() is not l{i}:",
                      f"    refs[{i}] = ref(l{i})",
                      f"    addresses[{i}] = starts[{i}] = address_of(l{i})",
                      "    moved = True"]
        if params:
            lines += ["if moved and not params_apart():", "    forget()", "    return False"]
        arena_start, arena_end = compiled.address, compiled.address + compiled.arena_bytes
        for i, x in enumerate(leaves):
            if i in writeable:
                continue
            overlaps = []
            if x.nbytes and arena_end > arena_start:  # a + nbytes > arena_start and a < arena_end
                consts[f"LO{i}"] = arena_start - x.nbytes
                overlaps.append(f"LO{i} < a < {arena_end}")
            lines += [f"if {'moved or ' if params else ''}refs[{i}]() is not l{i}:",
                      f"    a = address_of(l{i})"]
            if x.nbytes and params:  # (inline: a call of _ParamSpans.hits costs ~0.15 us)
                lines.append(f"    k = bisect(param_starts, a + {x.nbytes})")
                overlaps.append("k and param_ends[k - 1] > a")
            if overlaps:
                lines += [f"    if {' or '.join(overlaps)}:", "        forget()", "        return False"]
            lines += [f"    refs[{i}] = ref(l{i})", f"    addresses[{i}] = a"]
        lines.append("return True")
        source = "def match(x):\n" + "".join(f"    {line}\n" for line in lines)
        return cls(source, consts, leaves, compiled, spans)


class _ParamSpans:
    """A train step's parameters' byte ranges as LastCall last took them, sorted (they must not
    overlap), so whether another input's [start, end) overlaps one is a bisection: only the last
    parameter starting before `end` can, if it ends after `start`."""

    def __init__(self, sizes, params):
        self.starts = [0] * len(sizes)  # LastCall.match writes a parameter's address here
        self.sizes = sizes
        self.params = [i for i in params if sizes[i]]  # (an empty array overlaps nothing)
        self.lo, self.hi = [], []

    def apart(self):
        """Sort the parameters' ranges; False if two overlap."""
        spans = sorted((self.starts[i], self.starts[i] + self.sizes[i]) for i in self.params)
        if any(start < end for (_, end), (start, _) in zip(spans, spans[1:])):
            return False
        self.lo[:] = [start for start, _ in spans]
        self.hi[:] = [end for _, end in spans]
        return True


_STATIC_TYPES = (int, float, bool, str, type(None))


def _match_lines(tree, expr, lines, consts, leaf_ids):
    """Lines that check the value at `expr` against `tree` (returning False when it differs) and
    bind each leaf to `l<i>`. False if the tree holds something the fast path does not handle."""
    if tree == pytree.LEAF:
        i = next(leaf_ids)
        lines += [f"l{i} = {expr}", f"if type(l{i}) is not ndarray:", "    return False"]
        return True
    kind = tree[0]
    if kind == "float":  # a traced Python float: the slow way converts it
        return False
    if kind == "static":
        if type(tree[1]) not in _STATIC_TYPES:
            return False
        name = f"V{len(consts)}"
        consts[name] = tree[1]
        differs = f"type({expr}) is not type({name}) or {expr} != {name}"
        if tree[1] == 0.0 and type(tree[1]) is float:  # (0.0 == -0.0; 1/x tells them apart)
            consts["copysign"] = math.copysign
            differs += f" or copysign(1.0, {expr}) != copysign(1.0, {name})"
        lines += [f"if {differs}:", "    return False"]  # (a NaN never matches: the slow way)
        return True
    var = f"c{len(lines)}"
    if kind == "node":  # an object (gradc.random.Generator): its type, then its array fields
        ctype = f"C{len(consts)}"
        consts[ctype] = tree[1]
        lines += [f"{var} = {expr}", f"if type({var}) is not {ctype}:", "    return False"]
        return all(_match_lines(child, f"{var}.{field}", lines, consts, leaf_ids)
                   for field, child in zip(pytree.NODE_TYPES[tree[1]], tree[2]))
    if kind == "dict":
        keys, children = tree[1], tree[2]
        container = getattr(keys, "mapping", dict)  # (an OrderedDict's type is checked too)
    elif kind == "namedtuple":
        keys, children, container = range(len(tree[2])), tree[2], tree[1]
    else:
        keys, children, container = range(len(tree[1])), tree[1], (list if kind == "list" else tuple)
    ctype = f"C{len(consts)}"
    consts[ctype] = container
    lines += [f"{var} = {expr}", f"if type({var}) is not {ctype} or len({var}) != {len(children)}:",
              "    return False"]
    if kind == "dict":  # (its keys in the order compiled: another order is another signature)
        if container.__getitem__ is not dict.__getitem__ or not all(
                type(k) in (str, int) for k in keys):  # (an attribute dict's own lookup, or
            return False  # float and bool keys, 1.0 == 1 == True, 0.0 == -0.0: the slow way)
        order = f"K{len(consts)}"
        consts[order] = tuple(keys)
        lines += [f"if tuple({var}) != {order}:", "    return False"]
        if not all(type(k) is str for k in keys):  # (an int key where 1.0 or True was)
            types_name = f"K{len(consts)}"
            consts[types_name] = tuple(type(k) for k in keys)
            lines += [f"if tuple(map(type, {var})) != {types_name}:", "    return False"]
    for key, child in zip(keys, children):
        if kind == "dict":
            kname = f"K{len(consts)}"
            consts[kname] = key
            item = f"{var}[{kname}]"
        else:
            item = f"{var}[{key}]"
        if not _match_lines(child, item, lines, consts, leaf_ids):
            return False
    return True

