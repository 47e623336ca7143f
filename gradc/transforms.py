"""Function transforms beyond grad: `jacobian`, `hessian`, `vjp` and `hvp` (JAX's names and
conventions), each a compiled Function (or built from them), cached per signature like the rest.

The Jacobian is reverse mode: one VJP per output element, seeded with a one-hot cotangent, all
unrolled into ONE graph (the forward is shared; the passes merge what the VJPs have in common), so
a call runs one program. Its graph grows with the output's size, hence `MAX_JACOBIAN_ROWS`.
"""
from __future__ import annotations

import weakref

import numpy as np

from . import autodiff, pytree
from .capture import CaptureChanged, same
from .errors import ArgumentError, NonDifferentiableError, SignatureError, UnsupportedOpError
from .ops import fn
from .signature import defined_at
from .trace import current_graph, user_source

# output elements (VJPs) one Jacobian may unroll: beyond it the graph, and its compile, get big
MAX_JACOBIAN_ROWS = 1024


def jacobian_values(graph, outs, wrt, src):
    """The Jacobian of each of `outs` with respect to each of `wrt` (values of `graph`), as
    values of `graph`: a list per output of one value per `wrt`, shaped out.shape + w.shape."""
    rows = sum(o.size for o in outs)
    if rows > MAX_JACOBIAN_ROWS:
        raise UnsupportedOpError(
            f"gradc.jacobian unrolls one VJP per output element (gradc.hessian, the Jacobian of "
            f"the gradient: one per element of the arguments), and here there are {rows} (over "
            f"{MAX_JACOBIAN_ROWS}): take products instead, gradc.vjp for a Jacobian, gradc.hvp "
            "for a Hessian (Hessian-vector products), or differentiate fewer elements",
            source=src)
    result = []
    for o in outs:
        if not np.issubdtype(o.dtype, np.floating):
            raise NonDifferentiableError(
                f"gradc.jacobian needs float outputs, got a {o.dtype} output of shape {o.shape}",
                source=src)
        per_w = [[] for _ in wrt]
        active = autodiff.active_nodes(graph, wrt, o)  # (one for all the rows)
        for k in range(o.size):  # row k: the VJP with the k-th one-hot cotangent
            seed = np.zeros(o.size, o.dtype)
            seed[k] = 1
            cts = autodiff.vjp(graph, o, wrt, seed=fn.array_const(graph, seed.reshape(o.shape)),
                               active=active)
            for rows_w, ct, w in zip(per_w, cts, wrt):
                rows_w.append(fn.reshape(ct, (1,) + w.shape))
        result.append([fn.reshape(fn.concatenate(r, axis=0), o.shape + w.shape) if r
                       else fn.full(graph, o.shape + w.shape, 0, w.dtype)
                       for r, w in zip(per_w, wrt)])
    return result


def jacobian_tree(out_tree, arg_trees, many, blocks):
    """The Jacobian's pytree (JAX's jacrev): `out_tree` with each output replaced by the tree
    of the arguments (a tuple of them when argnums is a tuple); `blocks`: per output, the flat
    blocks of every argument's leaves, in order."""
    per_out = []
    for flat in blocks:
        trees, cursor = [], 0
        for tree in arg_trees:
            n = pytree.leaf_count(tree)
            trees.append(pytree.unflatten(tree, flat[cursor:cursor + n]))
            cursor += n
        per_out.append(tuple(trees) if many else trees[0])
    return pytree.unflatten(out_tree, per_out)


def split_aux(out_tree, outs, has_aux, fun, src):
    """(out tree, its leaves, aux tree, aux leaves) of what `fun` returned (`out_tree`, array
    leaves `outs`): with has_aux, a pair (out, aux); else all of it is out (aux tree None)."""
    if not has_aux:
        return out_tree, outs, None, []
    if not (out_tree[0] in ("tuple", "list") and len(out_tree[1]) == 2):
        raise _not_a_pair(fun, pytree.describe(out_tree), src)
    main, aux = out_tree[1]
    n = pytree.leaf_count(main)
    return main, list(outs[:n]), aux, list(outs[n:])


def jacobian(fun=None, argnums=0, *, has_aux=False, target="cpu", max_signatures=None):
    """The Jacobian of `fun` with respect to argument(s) `argnums` (reverse mode, JAX's jacrev
    convention): for an output of shape S and an argument leaf of shape T, an array of shape
    S + T; pytree outputs and arguments nest as JAX's do (output tree outside). Fresh arrays.
    has_aux=True: `fun` returns (out, aux), and the call returns (Jacobian of out, aux)."""
    from .function import Function
    if fun is None:
        return lambda f: jacobian(f, argnums=argnums, has_aux=has_aux, target=target,
                                  max_signatures=max_signatures)
    return Function(fun, "jacobian", argnums=argnums, target=target,
                    max_signatures=max_signatures, has_aux=has_aux)


def hessian(fun=None, argnums=0, *, has_aux=False, target="cpu", max_signatures=None):
    """The Hessian of scalar `fun`: the Jacobian of its gradient (both with respect to
    `argnums`), as JAX's hessian: shape T + T for an argument of shape T, nested pairs for
    pytrees and tuples of argnums. has_aux=True: `fun` returns (loss, aux), and the call
    returns (Hessian, aux)."""
    from .api import grad
    if fun is None:
        return lambda f: hessian(f, argnums=argnums, has_aux=has_aux, target=target,
                                 max_signatures=max_signatures)
    h = jacobian(grad(fun, argnums=argnums, target=target, has_aux=has_aux), argnums=argnums,
                 has_aux=has_aux, target=target, max_signatures=max_signatures)
    h.__name__ = f"hessian of {getattr(fun, '__name__', 'fn')}"
    return h


# gradc.vjp and gradc.hvp build their compiled Functions once per (function, kind, count of
# arguments), so a loop that calls gradc.vjp(f, x) compiles once per signature, not per call
_BUILT = weakref.WeakKeyDictionary()


def _built(fun, kind, n, make):
    try:
        per_fun = _BUILT.setdefault(fun, {})
    except TypeError:  # (not weakly referable: built anew)
        return make()
    if (kind, n) not in per_fun:
        per_fun[kind, n] = make()
    return per_fun[kind, n]


def _inner(a, b, b_is="cotangent", a_is="output"):
    """<a, b> summed over the leaves of two pytrees of the same structure (traced): vjp's
    output and cotangent, hvp's gradient (shaped as the primals) and tangents."""
    a_leaves, a_tree = pytree.flatten(a)
    b_leaves, b_tree = pytree.flatten(b)
    if a_tree != b_tree:
        raise NonDifferentiableError(f"the {b_is} {pytree.describe(b_tree)} does not match "
                                     f"the {a_is} {pytree.describe(a_tree)}: give it the "
                                     f"{a_is}'s structure", source=user_source())
    total = None
    for x, y in zip(a_leaves, b_leaves):
        if tuple(np.shape(x)) != tuple(np.shape(y)):
            raise NonDifferentiableError(
                f"a {b_is} of shape {np.shape(y)} for a{'n' if a_is[0] in 'aeiou' else ''} "
                f"{a_is} of shape {np.shape(x)}: give each {b_is} its {a_is}'s shape",
                source=user_source())
        term = fn.sum(x * y)
        total = term if total is None else total + term
    return total


def _frozen(x):
    """A copy of the array leaves of `x`, so a later change to the caller's arrays does not
    change what a vjp_fn computes (JAX's arrays are immutable)."""
    leaves, tree = pytree.flatten(x)
    return pytree.unflatten(tree, [np.array(v) if isinstance(v, np.ndarray) else v for v in leaves])


def _arrays(tree):
    """`tree` with its Python numbers as 0-d float64 arrays."""
    if isinstance(tree, (int, float)) and not isinstance(tree, bool):
        return np.asarray(tree, np.float64)
    if isinstance(tree, dict):
        return {k: _arrays(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        items = [_arrays(v) for v in tree]
        return type(tree)(*items) if hasattr(tree, "_fields") else type(tree)(items)
    return tree


def _discarding_stores(function):
    """A pullback's gradient function: what fun assigns outside (`self.h = h`, `m.W -= g`) the
    forward's call wrote already; the pullback computes the forward again without writing it."""
    function.stores = "discard"
    return function


def vjp(fun, *primals, has_aux=False):
    """(out, vjp_fn), as JAX's vjp: `out = fun(*primals)`, and `vjp_fn(cotangent)` returns the
    tuple of cotangents of the primals (one per primal, shaped like it): `cotangent` has the
    structure of `out`. Both are compiled; vjp_fn's program computes the forward again (gradc
    keeps no residuals between programs) and returns fresh arrays. The primals are copied; an
    array or number the function reads from outside its arguments that changed before vjp_fn
    runs is refused (SignatureError), as its cotangents would be another function's.
    has_aux=True: `fun` returns (out, aux), and vjp returns (out, vjp_fn, aux), as JAX's."""
    from .api import grad, jit
    n = len(primals)
    if n == 0:
        raise NonDifferentiableError("gradc.vjp(fun, *primals) needs at least one primal",
                                     source=user_source())
    from .random import Generator
    if pytree.leaves_inside(pytree.flatten(primals)[1], Generator):
        # (refused before the forward runs, which would advance it)
        raise NonDifferentiableError(
            "gradc.vjp differentiates every primal, and a gradc.random.Generator is not a "
            "number: noise drawn in the forward and again in vjp_fn's program would differ. "
            "Draw the noise first and pass it as an array primal", source=user_source())
    forward = _built(fun, "jit", n, lambda: jit(fun))
    out = forward(*primals)
    if has_aux:
        out, aux = _out_and_aux(out, fun)
    outside = _outside_read(forward, primals)
    primals = _frozen(primals)

    def pulled_back(*args):  # args: the primals, then the cotangent
        out = fun(*args[:-1])
        return _inner(out[0] if has_aux else out, args[-1])

    pulled_back.__name__ = f"vjp of {getattr(fun, '__name__', 'fn')}"
    backward = _built(fun, "vjp with aux" if has_aux else "vjp", n, lambda: _discarding_stores(
        grad(pulled_back, argnums=tuple(range(n)), copy=True)))

    def vjp_fn(*cotangent, **keywords):  # (Python numbers as arrays: traced, not one compile
        if len(cotangent) != 1 or keywords:  # per value)
            raise ArgumentError("vjp_fn(cotangent) takes one cotangent, shaped like the "
                                f"output, got {len(cotangent)} arguments"
                                + (f" and keywords {sorted(keywords)}" if keywords else ""),
                                source=user_source())
        _check_outside_unchanged(outside, fun)
        return backward(*primals, _arrays(cotangent[0]))

    return (out, vjp_fn, aux) if has_aux else (out, vjp_fn)


def _out_and_aux(result, fun):
    """(out, aux) of what a has_aux function returned."""
    if not (isinstance(result, (tuple, list)) and len(result) == 2):
        name = type(result).__name__
        raise _not_a_pair(fun, f"{'an' if name[0] in 'aeiou' else 'a'} {name}", user_source())
    return result[0], result[1]


def _not_a_pair(fun, returned, src):
    return NonDifferentiableError(
        f"has_aux=True: {getattr(fun, '__name__', 'the function')}{defined_at(fun)} must return "
        f"a pair (out, aux), aux a pytree of arrays; it returned {returned}. Return `out, aux`, "
        "or drop has_aux=True", source=src)


def _outside_read(function, args):
    """(Captures, copies of the arrays) of what `function` (a jit), just called with `args`,
    read from outside its arguments (a global W, self.W): vjp_fn reads them again, so it checks
    they are as they were when the output was computed. None inside another trace (nothing
    ran) or where it read none."""
    if current_graph() is not None:
        return None
    # (the signature that call ran, cached by it: its fast path, `_last_call`, is not made for
    # every call, a non-contiguous primal's)
    captures = function.compiled_for(*args).captures
    if not captures:
        return None
    # (the guarded values as the call left them: what it wrote back, `self.cache = h`, is not
    # what the trace found there, and is no change of the function)
    return captures, [a.copy() for a in captures.read(guards=False)], _guarded_now(captures)


def _guarded_now(captures):
    now = []
    for guard in captures.guards:
        try:
            value = guard.path.follow()
        except Exception:  # noqa: BLE001 - (gone: a change, if it was there)
            value = _GONE
        now.append(value.copy() if isinstance(value, np.ndarray) else value)
    return now


_GONE = object()


def _check_outside_unchanged(outside, fun):
    """Refuse a vjp_fn call whose function's outside arrays or guarded values changed since
    gradc.vjp ran it: the cotangents would be those of another function than the output's."""
    if outside is None:
        return
    captures, then, guarded = outside
    try:
        now = captures.read(guards=False)
        changed = next((f"`{c.name}`, which it reads from outside its arguments, changed"
                        for c, a, b in zip(captures.captures, then, now)
                        if not np.array_equal(a, b, equal_nan=True)), None)
    except CaptureChanged as e:  # (an array of another shape)
        changed = f"what it reads from outside its arguments changed ({e})"
    if changed is None:
        changed = next((f"`{g.name}`, which it reads from outside its arguments, changed"
                        for g, a, b in zip(captures.guards, guarded, _guarded_now(captures))
                        if not same(a, b)), None)
    if changed is not None:
        raise SignatureError(
            f"vjp_fn of {getattr(fun, '__name__', 'fn')}: {changed} since gradc.vjp computed "
            f"the output, so the cotangents would be another function's: call gradc.vjp again "
            f"after the change, or pass it to the function as an argument", source=user_source())


def hvp(fun, primals, tangents):
    """(gradient, Hessian-vector product) of scalar `fun` at `primals` along `tangents` (tuples,
    one entry per argument, as JAX's jvp takes them), without forming the Hessian: the Hessian
    times v is the gradient of <grad fun, v>, reverse over reverse, in one compiled program
    that computes the gradient too. With one primal, each is shaped like it (JAX's
    `jvp(grad(f), (x,), (v,))`); with several, a tuple over them (fun differentiated with
    respect to all of them)."""
    from .api import grad
    if not (isinstance(primals, (tuple, list)) and isinstance(tangents, (tuple, list))):
        raise ArgumentError(
            "gradc.hvp(fun, primals, tangents) takes tuples, one entry per argument of fun (as "
            f"JAX's jvp): gradc.hvp(f, (x,), (v,)), got {type(primals).__name__} and "
            f"{type(tangents).__name__}", source=user_source())
    # (a Python number as a tangent is a traced float64, as its primal is, never static; in a
    # pytree too: {"w": v, "s": 0.1} along {"w": x, "s": 0.5})
    tangents = tuple(np.float64(t) if type(t) in (int, float) else _arrays(t) for t in tangents)
    primals = tuple(primals)
    n = len(primals)
    if n == 0 or len(tangents) != n:
        raise NonDifferentiableError(
            f"gradc.hvp(fun, primals, tangents) takes tuples of the same length (one tangent per "
            f"primal), got {n} primals and {len(tangents)} tangents", source=user_source())

    def make():
        gradient = grad(fun, argnums=tuple(range(n)))

        def along(*args):  # args: the primals, then the tangents; aux: the gradient itself
            g = gradient(*args[:n])
            return _inner(g, args[n:], "tangent", "primal"), g

        along.__name__ = f"hvp of {getattr(fun, '__name__', 'fn')}"
        return grad(along, argnums=tuple(range(n)), copy=True, has_aux=True)

    hv, g = _built(fun, "hvp", n, make)(*primals, *tangents)
    # the gradient came back as aux (a 0-d one as a NumPy scalar): the type the Hessian-vector
    # product has, which is the gradient's for that primal (0-d array, or a float for a float)
    g = tuple(type(h)(a) if isinstance(h, float) else np.asarray(a) if isinstance(h, np.ndarray)
              else a for a, h in zip(g, hv))
    return (g[0], hv[0]) if n == 1 else (g, hv)
