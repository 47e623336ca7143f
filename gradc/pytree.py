"""Pytrees: nested dicts, lists and tuples whose array leaves are the dynamic arguments.

Objects of a registered class (`register_node`: gradc.random.Generator) are nodes too: their
array attributes are leaves, so they can be passed to compiled functions.

`flatten` returns the array leaves and a hashable tree description in which every non-array leaf
(Python numbers, strings, None) is stored by value: those are static arguments, part of the
compiled signature. A static node is `("static", value, key)`: the key keeps apart values that
== would merge (1, 1.0 and True; 0.0 and -0.0), and every NaN is one NaN object, so a NaN
argument finds its compiled version again.

A gradient function traces the Python floats of its differentiated arguments instead
(`trace_floats`): they become `TracedFloat` leaves, whose tree is `FLOAT`.
"""
import array
import collections
import collections.abc
import math
import numbers

import numpy as np

from .errors import SignatureError
from .ir import Value
from .standalone.calls import leaf_count  # noqa: F401  (shared with generated modules)

LEAF = ("*",)
FLOAT = ("float",)  # a TracedFloat leaf


class TracedFloat(float):
    """A Python float in a differentiated argument: traced as a weakly typed float64 0-d input
    (not a static value), and its gradient comes back as a Python float."""

    __slots__ = ()

# classes whose instances are pytree nodes: type -> the names of the attributes that are its
# children (gradc.random.Generator: its state array). Rebuilt by `cls._from_children(*children)`.
NODE_TYPES = {}


def register_node(cls, fields):
    """Flatten instances of `cls` as a node with the children `fields` (attribute names)."""
    NODE_TYPES[cls] = tuple(fields)
    return cls


def is_array_leaf(x):
    return (isinstance(x, (np.ndarray, np.generic, Value, TracedFloat))
            and not isinstance(x, _TEXT_SCALARS) or is_device_array(x))


_TEXT_SCALARS = (np.str_, np.bytes_)  # (np.str_("tanh") from a NumPy array of names: a static
# value, as a str is)


def is_device_array(x):
    """A CUDA device array (for target="cuda"): Numba's, the simulator's, or any object with
    `__cuda_array_interface__` (CuPy, PyTorch)."""
    return _has(x, "__cuda_array_interface__") or (
        _has(x, "copy_to_host") and hasattr(x, "shape") and hasattr(x, "dtype"))


def _has(x, name):
    """Whether x's class has the attribute `name` and x answers it (an attribute dict's
    __getattr__, `__getattr__ = dict.get`, answers any name, or raises KeyError; a CPU torch
    tensor's __cuda_array_interface__ raises)."""
    if not hasattr(type(x), name):
        return False
    try:
        getattr(x, name)
    except Exception:  # noqa: BLE001 - (whatever the property raises: not one)
        return False
    return True


def leaf_type(x):
    """(shape, dtype) of an array leaf, without copying a device array to the host."""
    if hasattr(x, "dtype") and hasattr(x, "shape"):
        return tuple(x.shape), np.dtype(x.dtype)
    return np.shape(x), np.asarray(x).dtype


def subclass_meaning(x, what="an argument", error=SignatureError):
    """An ndarray subclass means more than its data (a masked array's mask, np.matrix's `*`
    as a product), which gradc would drop: its sum of a masked array counted the masked
    values, and one read from a global was compiled in without its mask. Refused (np.memmap,
    whose data is all it means, passes)."""
    from .fresh import Fresh  # (an array the traced function made: NumPy's in every way)
    if not isinstance(x, np.ndarray) or type(x) is np.ndarray or isinstance(
            x, (np.memmap, Value, Fresh)):
        return
    hint = (" (x.filled(fill) for a masked array's values with the masked ones replaced)"
            if isinstance(x, np.ma.MaskedArray) else "")
    raise error(f"{what} is a {type(x).__module__}.{type(x).__name__}, a subclass of "
                f"np.ndarray whose meaning gradc does not keep: pass np.asarray(x){hint}")


def flatten(tree):
    leaves = []
    try:
        return leaves, _walk(tree, leaves)
    except RecursionError:
        raise SignatureError(
            "an argument is a pytree that contains itself, or nests deeper than Python's "
            "recursion limit: pass the arrays in a tree without cycles (a dict, list or "
            "tuple of arrays, a few levels deep)") from None


# (flatten and unflatten recurse through module-level functions, not through a closure that
# calls itself: such a closure is a reference cycle, which would keep the leaves it saw (the
# caller's arrays, a call's fresh outputs) alive until the cyclic GC runs, so every call's
# outputs would land in new, never-touched memory: page faults, 10x a NumPy copy)
def _walk(x, leaves):
    if type(x) is np.ndarray or is_array_leaf(x):  # (the common case first: it runs per call)
        if type(x) is not np.ndarray:
            subclass_meaning(x)
        leaves.append(x)
        return FLOAT if type(x) is TracedFloat else LEAF
    if isinstance(x, dict):
        if hasattr(type(x), "__missing__"):  # (the function would get a plain dict: a key it
            raise SignatureError(  # lacks was a bare KeyError, not the default)
                f"cannot pass a {type(x).__name__} (a dict with a default for missing keys) to "
                "a compiled function: it takes plain dicts, whose missing keys are KeyErrors; "
                "pass dict(x) with every key the function reads")
        # in the dict's own order: the function sees the dict it was given (a loop over
        # params.values() of {"layer2": .., "layer10": ..} ran layer10 first when sorted), and
        # another order is another signature
        keys = tuple(x)
        if type(x) is not dict:  # (an OrderedDict, an attribute dict: rebuilt as one)
            keys = _Keys(keys, type(x))
        elif not all(type(k) is str for k in keys):  # (1, 1.0 and True are one key to ==)
            keys = _Keys(keys)
        return ("dict", keys, tuple(_walk(dict.__getitem__(x, k), leaves) for k in keys))
    if isinstance(x, tuple) and hasattr(x, "_fields"):
        return ("namedtuple", type(x), tuple(_walk(v, leaves) for v in x))
    if isinstance(x, (list, tuple)):
        if type(x) not in (list, tuple):  # (rebuilt, it would be gradc's leaf markers)
            base = "list" if isinstance(x, list) else "tuple"
            raise SignatureError(
                f"a {type(x).__name__} (a subclass of {base}) cannot go in or out of a compiled "
                f"function: it takes and returns plain dicts, lists, tuples and namedtuples of "
                f"arrays; convert it ({base}(x)) and rebuild it outside")
        return (type(x).__name__, tuple(_walk(v, leaves) for v in x))
    fields = NODE_TYPES.get(type(x))
    if fields is not None:
        return ("node", type(x), tuple(_walk(getattr(x, f), leaves) for f in fields))
    if isinstance(x, collections.abc.Iterator):  # (hashable, by identity: it was a static
        raise SignatureError(  # value, its items read once, when traced, and compiled in)
            f"an argument is an iterator ({type(x).__name__}: a generator, iter(...), zip, "
            "map): a compiled function would read its items once, when traced, and an exhausted "
            "one looks the same; pass a list or tuple of them")
    if isinstance(x, (memoryview, bytearray, array.array)):  # (buffers: data, not settings)
        raise SignatureError(
            f"cannot pass a `{'array.array' if isinstance(x, array.array) else type(x).__name__}`"
            " to a compiled function: its contents can change "
            "in place, and it is not an array; pass np.asarray(x) (or np.frombuffer)")
    if isinstance(x, (collections.deque, collections.UserList, collections.UserDict)):
        raise SignatureError(  # (told apart by identity, their items changed unseen: stale)
            f"cannot pass a {type(x).__name__} to a compiled function: it takes plain dicts, "
            "lists, tuples and namedtuples of arrays (and hashable static values); pass "
            f"{'dict' if isinstance(x, collections.UserDict) else 'list'}(x)")
    module = type(x).__module__ or ""
    if not isinstance(x, np.generic) and module != "gradc" and not module.startswith(
            "gradc.") and any(
            hasattr(type(x), a) for a in ("__array__", "__array_interface__", "__dlpack__")):
        raise SignatureError(  # (a torch.Tensor hashes by identity: its values were compiled
            # in, stale after t.add_(1); a JAX array crashed the trace)
            f"cannot pass a {type(x).__module__.split('.')[0]}.{type(x).__name__} to a "
            "compiled function: it is another library's array, whose values a compiled "
            "function would read once, when traced; pass np.asarray(x) (a NumPy array)")
    if _compared_by_identity(x):  # (a @dataclass model: unhashable, told apart by identity)
        return static_node(x)
    try:
        hash(x)
    except TypeError:
        raise SignatureError(
            f"cannot pass a {type(x).__name__} to a compiled function: arguments are "
            "pytrees (dict, list, tuple) of NumPy arrays, and hashable static values") from None
    return static_node(x)


_NAN, _NEGATIVE_NAN = float("nan"), -float("nan")


def typed_key(x):
    """A key for a static value or dict key that keeps apart what == merges: 1, 1.0 and True;
    0.0 and -0.0; a NaN and a negative NaN (np.copysign tells them apart); the same inside a
    frozenset or tuple (frozenset({1}) == frozenset({1.0}))."""
    t = type(x)
    if isinstance(x, (float, np.floating)):
        if x != x:
            return t, "nan", math.copysign(1.0, x)
        return (t, x, math.copysign(1.0, x)) if x == 0 else (t, x)
    if t in (frozenset, tuple):
        return t, t(typed_key(v) for v in x)
    return t, x


class _Keys(tuple):
    """A dict's keys in a tree description when not all are strings, or when the dict is of a
    subclass (`mapping`: an OrderedDict, an attribute dict, rebuilt as one): equal only to keys
    of the same types and signs (`typed_key`), so {1: x} and {1.0: x} are two signatures, and
    of the same mapping class."""

    def __new__(cls, keys, mapping=dict):
        self = tuple.__new__(cls, keys)
        self.mapping = mapping
        return self

    def __eq__(self, other):
        return (isinstance(other, _Keys) and tuple.__eq__(self, other)
                and self.mapping is other.mapping
                and typed_key(tuple(self)) == typed_key(tuple(other)))

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash((typed_key(tuple(self)), self.mapping))

    def like(self, keys):
        """These keys in another order, of the same mapping class."""
        return _Keys(keys, self.mapping)


def _mapping(cls, items):
    """A dict subclass holding `items`, made as a copy of one would be (no __init__, which may
    want arguments; each item set through the class's own __setitem__, which an attribute dict
    also makes an attribute)."""
    try:
        out = cls.__new__(cls)
        for k, v in items:
            out[k] = v
        return out
    except Exception as e:  # noqa: BLE001 - (the class's own error: named)
        raise SignatureError(
            f"a {cls.__name__} (a subclass of dict) cannot be rebuilt to go in or out of a "
            f"compiled function ({type(e).__name__}: {e}): pass dict(x) and rebuild it "
            "outside") from None


def sorted_keys(treedef):
    """`treedef` with every dict's keys sorted by repr (two trees that differ only in the order
    of their dicts' keys have the same)."""
    if treedef[0] == "dict":
        pairs = sorted(zip(treedef[1], treedef[2]), key=lambda kv: repr(kv[0]))
        keys = tuple(k for k, _ in pairs)
        keys = treedef[1].like(keys) if isinstance(treedef[1], _Keys) else keys  # (typed)
        return ("dict", keys, tuple(sorted_keys(c) for _, c in pairs))
    if treedef[0] in ("list", "tuple"):
        return (treedef[0], tuple(sorted_keys(c) for c in treedef[1]))
    if treedef[0] in ("namedtuple", "node"):
        return (treedef[0], treedef[1], tuple(sorted_keys(c) for c in treedef[2]))
    return treedef


def in_order_of(x, treedef):
    """`x` with each dict's keys in the order `treedef` has them where the keys are the same
    (a loaded optimizer state, keyed like the parameters in another order); else `x` as it is."""
    if isinstance(x, dict) and treedef[0] == "dict" and set(x) == set(treedef[1]) \
            and len(x) == len(treedef[1]):
        return {k: in_order_of(x[k], c) for k, c in zip(treedef[1], treedef[2])}
    if isinstance(x, (list, tuple)) and treedef[0] in ("list", "tuple") \
            and len(x) == len(treedef[1]):
        items = [in_order_of(v, c) for v, c in zip(x, treedef[1])]
        return items if isinstance(x, list) else type(x)(items)
    return x


def static_node(x):
    """The tree of static value `x`: ("static", x, key), see the module docstring."""
    if type(x) is float and x != x:  # (one NaN object per sign: a NaN finds its version again)
        x = _NAN if math.copysign(1.0, x) > 0 else _NEGATIVE_NAN
    if _compared_by_identity(x):
        return _StaticByIdentity(("static", x, (type(x), id(x))))
    return ("static", x, typed_key(x))


class _StaticByIdentity(tuple):
    """The static node of an object told apart by identity (`_compared_by_identity`): hashed
    and compared without the object's own __hash__ and __eq__ (a @dataclass has no hash)."""

    def __hash__(self):
        return hash(self[2])

    def __eq__(self, other):
        return isinstance(other, _StaticByIdentity) and self[1] is other[1]

    def __ne__(self, other):
        return not self == other


def _compared_by_identity(x):
    """Whether static value `x` is an object of the user's class with an __eq__ of its own: told
    apart by identity, not equality. The compiled program reads what it holds from the object
    it was traced with (its arrays, its numbers): a model whose __eq__/__hash__ compare a name
    ran a second, equal model with the first one's weights."""
    cls = type(x)
    if cls.__module__ in ("builtins", "numpy") or isinstance(x, numbers.Number):
        return False
    return cls.__eq__ is not object.__eq__


def trace_floats(tree):
    """`tree` with its Python floats as TracedFloat leaves (see the module docstring); `tree`
    itself when it holds none."""
    if type(tree) is float:
        return TracedFloat(tree)
    if isinstance(tree, dict):
        items = {k: trace_floats(v) for k, v in tree.items()}
        changed = any(items[k] is not v for k, v in tree.items())
        return items if changed else tree
    if isinstance(tree, (list, tuple)):
        items = [trace_floats(v) for v in tree]
        if all(a is b for a, b in zip(items, tree)):
            return tree
        if isinstance(tree, tuple) and hasattr(tree, "_fields"):
            return type(tree)(*items)
        return type(tree)(items)
    return tree


def static_numbers(treedef, path):
    """(path, value) of each static Python number (int, float, bool) in a tree description;
    paths like `p['n']`, from `path` for the root."""
    if treedef[0] == "static":
        number = isinstance(treedef[1], (int, float)) and not isinstance(treedef[1], np.generic)
        return [(path, treedef[1])] if number else []
    if treedef[0] == "dict":
        return [hit for k, c in zip(treedef[1], treedef[2])
                for hit in static_numbers(c, f"{path}[{k!r}]")]
    if treedef[0] in ("list", "tuple", "namedtuple"):
        return [hit for i, c in enumerate(treedef[-1]) for hit in static_numbers(c, f"{path}[{i}]")]
    return []


def unflatten(treedef, leaves):
    return _build(treedef, iter(leaves))  # (no closure: see _walk)


def _build(t, it):
    if t == LEAF or t == FLOAT:
        return next(it)
    kind = t[0]
    if kind == "dict":
        mapping = getattr(t[1], "mapping", dict)
        if mapping is dict:
            return {k: _build(c, it) for k, c in zip(t[1], t[2])}
        return _mapping(mapping, [(k, _build(c, it)) for k, c in zip(t[1], t[2])])
    if kind == "namedtuple":
        return t[1](*[_build(c, it) for c in t[2]])
    if kind == "node":
        return t[1]._from_children(*[_build(c, it) for c in t[2]])
    if kind in ("list", "tuple"):
        items = [_build(c, it) for c in t[1]]
        return items if kind == "list" else tuple(items)
    return t[1]


_NUMBERS = (bool, int, float, complex)


def numbers_as_leaves(treedef, leaves, make):
    """(treedef, leaves) with each Python number the tree holds as a static value (a function's
    `return 0.0`) a leaf of its own, `make(number)`, in flattening order."""
    out, it = [], iter(leaves)
    return _numbers_as_leaves(treedef, it, out, make), out


def _numbers_as_leaves(t, it, out, make):
    if t == LEAF or t == FLOAT:
        out.append(next(it))
        return t
    kind = t[0]
    if kind == "static":
        if type(t[1]) not in _NUMBERS:
            return t
        out.append(make(t[1]))
        return LEAF
    children = tuple(_numbers_as_leaves(c, it, out, make) for c in t[-1])
    return t[:-1] + (children,)


def leaves_inside(treedef, cls):
    """Indices, in flatten order, of the leaves inside nodes of type `cls`. (A loop over a
    stack, not a recursive closure: every call makes one, and a closure that calls itself is a
    reference cycle, left for the collector on every call of a compiled function.)"""
    found, count, stack = [], 0, [(treedef, False)]
    while stack:
        t, inside = stack.pop()
        if t in (LEAF, FLOAT):  # (a traced Python float is a leaf too)
            if inside and t == LEAF:
                found.append(count)
            count += 1
        elif t[0] != "static":
            inner = inside or (t[0] == "node" and t[1] is cls)
            stack.extend((child, inner) for child in reversed(t[-1]))
    return found


def describe(treedef):
    """A short human description of a tree's structure, for error messages."""
    if treedef == LEAF:
        return "array"
    if treedef == FLOAT:
        return "float"
    kind = treedef[0]
    if kind == "dict":
        return "{" + ", ".join(f"{k!r}: {describe(c)}" for k, c in zip(treedef[1], treedef[2])) + "}"
    if kind == "node":
        return f"{treedef[1].__name__}(" + ", ".join(describe(c) for c in treedef[2]) + ")"
    if kind in ("list", "tuple", "namedtuple"):
        inner = ", ".join(describe(c) for c in treedef[-1])
        return (f"[{inner}]" if kind == "list" else f"{treedef[1].__name__}({inner})"
                if kind == "namedtuple" else f"({inner})")
    return repr(treedef[1])
