"""A call's arguments as gradc compiles them: flattened once, keyed, and checked.

`Call` holds the flattened `(args, kwargs)` of one call and where each positional argument's
leaves sit among them, so a compile flattens the arguments once. `signature_key` is what the
per-signature cache is keyed by, and `what_changed` says, for GRADC_LOG and errors, how one key
differs from the last. The checks here (`normalize_argnums`, `differentiable_leaves`, ...) are
the argument rules every entry point (jit, grad, train_step, gradc check) shares.
"""
from __future__ import annotations

import numpy as np

from . import pytree
from .errors import NonDifferentiableError, RecompileWarning, SignatureError
from .ir import SUPPORTED_DTYPES, Value
from .ops import fn
from .trace import warn_at_user_line


class Call:
    """The flattened arguments of one call: `leaves` and `treedef` of `(args, kwargs)`, and
    `ranges[i]`, the positions of positional argument i's leaves (which are the graph's inputs
    at those positions: a trace makes one input per leaf, in flatten order)."""

    def __init__(self, args, kwargs, leaves=None, treedef=None):
        if leaves is None:
            leaves, treedef = pytree.flatten((args, kwargs))
        self.args, self.kwargs = args, kwargs
        self.leaves, self.treedef = leaves, treedef
        self.arg_trees = treedef[1][0][1]  # (args, kwargs) -> args -> each argument's tree
        self.ranges, cursor = [], 0
        for tree in self.arg_trees:
            n = pytree.leaf_count(tree)
            self.ranges.append(range(cursor, cursor + n))
            cursor += n

    def arg_leaves(self, i):
        """The leaves of positional argument i."""
        return self.leaves[self.ranges[i].start:self.ranges[i].stop]

    def key(self):
        return signature_key(self.leaves, self.treedef)


def signature_key(leaves, treedef):
    """What a compiled version is keyed by: pytree structure with static values, shapes, dtypes."""
    return (treedef, tuple((x.shape, x.dtype.str) if isinstance(x, np.ndarray)
                           else _leaf_key(x) for x in leaves))


def _leaf_key(x):
    shape, dtype = pytree.leaf_type(x)
    if isinstance(x, np.generic):  # (a NumPy scalar is traced as one, not as a 0-d array:
        return shape, dtype.str, "scalar"  # its x[i] is a view, its reshape a scalar...)
    return shape, dtype.str


def what_changed(old, new, names=None, argnames=()):
    """Why signature key `new` compiles anew after `old` (the last one compiled, or None);
    `names`, the leaves' argument paths (`params['W1']`), name the inputs that changed, and
    `argnames` (the function's parameters) the static values."""
    if old is None:
        return "first call"
    if old[0] != new[0]:
        changes = static_changes(old, new, argnames)
        if changes:
            return "static values changed (" + "; ".join(
                f"{path}: {a!r} -> {b!r}" for path, a, b in changes[:4]) + ")"
        return "the argument structure or static values changed"
    if old[2:] != new[2:]:
        return "the optimizer's hyperparameters changed"
    names = names or [f"input {i}" for i in range(len(new[1]))]
    def leaf(a):
        return f"{a[0]}/{np.dtype(a[1]).name}" + (" (a NumPy scalar)" if len(a) > 2 else "")
    changes = [f"{names[i]}: {leaf(a)} -> {leaf(b)}"
               for i, (a, b) in enumerate(zip(old[1], new[1])) if a != b]
    return "new signature (" + "; ".join(changes) + ")"


def static_changes(old, new, argnames=()):
    """[(path, old value, new value)] of the static values that differ between signature keys
    `old` and `new` when nothing else does (same structure, shapes and dtypes); else None.
    `argnames`: the function's positional parameter names, for the paths."""
    if old is None or old[1:] != new[1:]:
        return None
    found = []

    def walk(a, b, path):
        if a == b:
            return True
        if a[0] == "static" and b[0] == "static":
            found.append((path, a[1], b[1]))
            return True
        if a[0] != b[0] or len(a) != len(b) or a[0] in ("*", "float") or a[1:-1] != b[1:-1]:
            return False  # (a dict's keys, a namedtuple's or node's type, ... differ)
        if len(a[-1]) != len(b[-1]):
            return False
        keys = a[1] if a[0] == "dict" else range(len(a[-1]))
        return all(walk(x, y, f"{path}[{k!r}]") for k, x, y in zip(keys, a[-1], b[-1]))

    (old_args, old_kw), (new_args, new_kw) = old[0][1], new[0][1]
    if len(old_args[1]) != len(new_args[1]) or old_kw[1] != new_kw[1]:
        return None
    for i, (a, b) in enumerate(zip(old_args[1], new_args[1])):
        if not walk(a, b, argnames[i] if i < len(argnames) else f"arg{i}"):
            return None
    for k, a, b in zip(new_kw[1], old_kw[2], new_kw[2]):
        if not walk(a, b, k):
            return None
    return found or None


class RecompileWatch:
    """Warns once (RecompileWarning) when a function has compiled STORM signatures that differ
    from the one before only in a static value: a Python number that keeps changing, such as
    an iteration count, compiles a new program per value. Shape changes are not counted (a few
    batch shapes are expected; max_signatures caps them)."""

    STORM = 8

    def __init__(self):
        self.static_compiles, self.warned = 0, False
        self.outside_compiles = 0  # traced again: a value read from outside the arguments changed

    def note_outside(self, why, name, src):
        """A trace again because of `why` (a capture.CaptureChanged): warned once at STORM. An
        outside array's new shape or dtype does not count, as an argument's does not."""
        from .capture import CaptureReshaped
        if isinstance(why, CaptureReshaped):
            return
        self.outside_compiles += 1
        if self.warned or self.outside_compiles < self.STORM:
            return
        self.warned = True
        if "with NumPy alone" in str(why):  # (an array's contents: capture.content_guards)
            what = ("what NumPy computes alone from an array read from outside is compiled in, "
                    "so every change to the array traces again. Compute it from a traced value "
                    "(the array meeting a traced operation is read on every call), or pass the "
                    "array as an argument")
        else:
            what = ("numbers, strings and None read from globals, closures or attributes are "
                    "compiled in, so every new value traces again. Pass it as an argument "
                    "(np.float64(...) for a float) so it is traced")
        warn_at_user_line(RecompileWarning(
            f"{src}: {name} has traced {self.outside_compiles} times again because what it reads "
            f"from outside its arguments keeps changing (now {why}): {what}"))

    def note(self, old, new, name, argnames, src, keep):
        """A compile of key `new` after `old` (None at the first), from the user's line `src`;
        `keep` says how to keep the value static on purpose."""
        if old is None:
            self.static_compiles = 1  # the first signature
            return
        changes = static_changes(old, new, argnames)
        if changes is None:
            return
        self.static_compiles += 1
        if self.warned or self.static_compiles < self.STORM:
            return
        self.warned = True
        path, a, b = changes[0]
        warn_at_user_line(RecompileWarning(
            f"{src}: {name} has compiled {self.static_compiles} signatures because the static "
            f"value {path} keeps changing (now {a!r} -> {b!r}): a Python {type(b).__name__} is "
            "compiled into the program, so every new value compiles again. Pass it as an array "
            "(np.asarray(...), or np.float64(...) for a float) so it is traced; or, to keep it "
            f"static on purpose, {keep}"))


def normalize_argnums(argnums, nargs, src):
    """(argnums as a tuple of non-negative positions, whether it was given as a tuple/list)."""
    many = isinstance(argnums, (tuple, list))
    nums = tuple(argnums) if many else (argnums,)
    for a in nums:
        if not isinstance(a, (int, np.integer)) or isinstance(a, (bool, np.bool_)):
            raise SignatureError(f"argnums={argnums!r}: argnums is an int or a tuple of ints "
                                 "(positions of the differentiated arguments), got "
                                 f"{type(a).__name__} {a!r}", source=src)
        if not -nargs <= a < nargs:
            raise SignatureError(f"argnums={argnums!r} does not fit a call with {nargs} "
                                 "positional arguments (argnums counts the arguments given by "
                                 "position: pass the differentiated ones so, f(x, y=...))",
                                 source=src)
    return tuple(int(a) % nargs for a in nums), many


def differentiable_leaves(call, argnums, src, names=()):
    """Check that the leaves of the differentiated arguments of `call` (a Call) are floating
    point. (Their Python floats are TracedFloat leaves by now: `pytree.trace_floats`.) `names`:
    the function's parameter names, for messages."""
    for a in argnums:
        name = names[a] if 0 <= a < len(names) else f"argument {a}"
        for path, number in pytree.static_numbers(call.arg_trees[a], name):
            raise NonDifferentiableError(
                f"{path} is a Python {type(number).__name__} ({number!r}) in a differentiated "
                f"argument: gradients need floats; pass {float(number)!r} or a NumPy float "
                "array, or move it out of the differentiated arguments", source=src)
        leaves = call.arg_leaves(a)
        if not leaves:
            value = call.args[a] if 0 <= a < len(call.args) else None
            label = f"argument {a}" + (f" ({names[a]})" if 0 <= a < len(names) else "")
            if value is not None and not isinstance(value, (dict, list, tuple)):
                label += (f" is a {type(value).__name__}, a static value (not a pytree of "
                          "arrays): it")
            hint = (f"; differentiate another argument (argnums={a + 1}), or pass the arrays in "
                    "a dict" if 0 <= a < len(names) and names[a] == "self" else "")
            raise NonDifferentiableError(
                f"{label} has no arrays to differentiate: pass NumPy float arrays or Python "
                f"floats{hint}", source=src)
        tree = call.arg_trees[a]
        label = f"argument {a}" + (f" ({names[a]})" if 0 <= a < len(names) else "")
        if tree != pytree.LEAF and tree[0] == "node":  # (a gradc.random.Generator)
            raise NonDifferentiableError(
                f"{label} is a {tree[1].__module__}.{tree[1].__name__}, which has no gradient: "
                "leave it out of argnums", source=src)
        for j, x in enumerate(leaves):
            dt = pytree.leaf_type(x)[1]
            if not np.issubdtype(dt, np.floating):
                from .trace import leaf_names  # (it builds on this module)
                value = call.args[a] if 0 <= a < len(call.args) else None
                paths = leaf_names(((value,), {}), [names[a] if 0 <= a < len(names)
                                                    else f"argument {a}"])
                path = paths[j] if j < len(paths) else label
                what = ("the state of a gradc.random.Generator, which has no gradient: pass "
                        "the generator as an argument of its own, out of argnums"
                        if path.endswith(".state") else "leave integer and boolean arrays "
                        "out of the differentiated arguments (argnums)")
                raise NonDifferentiableError(
                    f"{label}: {path} holds {dt} values, and gradients need floating-point "
                    f"arrays; {what}", source=src)


def check_device_leaves(leaves, target, src):
    """CUDA device arrays are inputs of target="cuda" only."""
    if target != "cuda" and any(pytree.is_device_array(x) for x in leaves):
        raise SignatureError("a CUDA device array was passed to a target='cpu' function: pass "
                             "NumPy arrays (x.copy_to_host()), or compile with target='cuda'",
                             source=src)


def check_input_dtypes(key, names, src):
    """Every input of a signature `key` has a dtype the kernels read (in native byte order).
    `names()`: the inputs' names, for a message (made only when one is needed)."""
    for i, (_, dtype, *_) in enumerate(key[1]):
        dtype = np.dtype(dtype)
        if dtype in SUPPORTED_DTYPES:
            continue
        name = names()[i]
        if dtype.newbyteorder("=") in SUPPORTED_DTYPES:
            order = {">": "big", "<": "little"}[dtype.byteorder]
            raise SignatureError(
                f"{name} is {dtype.name} in {order}-endian byte order ({dtype.str!r}), which gradc "
                f"does not read; convert it with .astype(np.{dtype.name}) (native byte order)",
                source=src)
        convert = (".astype(np.int64) (labels, indices and counts stay integers; "
                   ".astype(np.float32) for values)" if dtype.kind in "iu" else
                   ".astype(np.float32)")
        raise SignatureError(
            f"{name} has dtype {dtype.name}, which gradc does not support; convert it with "
            f"{convert} (supported: " + ", ".join(d.name for d in SUPPORTED_DTYPES) + ")",
            source=src)


def check_scalar_output(out, src):
    """A differentiated function returns one float of size 1: a scalar, or an array of shape
    (1,), (1, 1)... (as autograd accepts; its value keeps the shape the function returned)."""
    if not isinstance(out, Value) or out.size != 1 or not np.issubdtype(out.dtype, np.floating):
        what = f"shape {out.shape} {out.dtype}" if isinstance(out, Value) else type(out).__name__
        raise NonDifferentiableError(
            f"grad needs a function that returns a scalar float, got {what}; reduce it first "
            "(e.g. .sum() or .mean()), or use gradc.jacobian for a Jacobian",
            source=(out.node.source if isinstance(out, Value) and out.node else src))


def as_scalar(loss):
    """The loss (of size 1, checked) as a 0-d value, to differentiate."""
    return loss if loss.shape == () else fn.reshape(loss, ())


def defined_at(fun):
    """` (defined at file.py:12)` of a user's function, for messages; "" for other callables."""
    code = getattr(fun, "__code__", None)
    return (f" (defined at {code.co_filename.rsplit('/', 1)[-1]}:{code.co_firstlineno})"
            if code is not None else "")


AUX_ADVICE = "; to return more beside the loss, use has_aux=True and return (loss, aux)"


def check_loss_output(out_tree, outs, has_aux, fun, src):
    """What a differentiated function returned (`out_tree`, its array leaves `outs`, traced) is
    one loss, or with has_aux=True a pair (loss, aux) whose aux is a pytree of arrays."""
    if not has_aux:
        if (out_tree[0] == "static" and isinstance(out_tree[1], (int, np.integer))
                and not outs):  # (`return 1`: an integer has no gradient, as in JAX)
            raise NonDifferentiableError(
                f"grad needs a float loss; the function returned the integer {out_tree[1]!r} "
                f"(return {float(out_tree[1])!r} for a constant loss, whose gradient is zeros)",
                source=src)
        if len(outs) != 1 or out_tree not in (pytree.LEAF, pytree.FLOAT):  # ((loss, 0.5))
            e = NonDifferentiableError(
                f"grad needs a function that returns one scalar, got {pytree.describe(out_tree)}"
                + AUX_ADVICE, source=src)
            e.aux_advice = AUX_ADVICE  # (`gradc compile`, which has no has_aux, advises else)
            raise e
        check_scalar_output(outs[0], src)
        return
    pair = out_tree[0] in ("tuple", "list") and len(out_tree[1]) == 2
    if not pair or out_tree[1][0] != pytree.LEAF:
        where = defined_at(fun)
        raise NonDifferentiableError(
            f"has_aux=True: {getattr(fun, '__name__', 'the function')}{where} must return a pair "
            f"(loss, aux), loss a scalar array and aux a pytree of arrays; it returned "
            f"{pytree.describe(out_tree)}. Return `loss, aux`, or drop has_aux=True", source=src)
    check_scalar_output(outs[0], src)


def number_loss(out_tree, outs, has_aux, graph):
    """(out_tree, outs) with a loss returned as a Python float (`return 0.0`, a constant) as a
    constant of `graph`, a leaf of its own: its gradient is zeros, as JAX's, not a refusal."""
    pair = has_aux and out_tree[0] in ("tuple", "list") and len(out_tree[1]) == 2
    loss_tree = out_tree[1][0] if pair else out_tree
    if loss_tree[0] != "static" or type(loss_tree[1]) is not float:
        return out_tree, outs
    loss = fn.as_value(np.asarray(loss_tree[1]), graph=graph)
    return ((out_tree[0], (pytree.LEAF, out_tree[1][1])), [loss] + outs) if pair else (
        pytree.LEAF, [loss])


# Compiled signatures a function or train step keeps; past it, the one compiled longest ago goes
# (compiled again if it comes back: the program cache makes that a load). Batch sizes drawn at
# random kept all of theirs: 200 signatures, 54 MiB, growing. A `max_signatures` cap instead
# refuses a new one.
KEPT_SIGNATURES = 64


def keep_recent(cache, key, compiled, variants=None):
    """cache[key] = compiled, the oldest entries dropped past KEPT_SIGNATURES (with their
    `variants`, a dict of the same keys)."""
    cache.pop(key, None)
    cache[key] = compiled
    while len(cache) > KEPT_SIGNATURES:
        oldest = next(iter(cache))
        del cache[oldest]
        if variants is not None:
            variants.pop(oldest, None)
