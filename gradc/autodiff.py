"""Reverse-mode autodiff over the IR.

`vjp` appends the backward to the same graph, so the result is one joint graph (value and
gradients) that the later passes simplify and fuse as a whole, and that `vjp` can differentiate
again (grad of grad). Only active nodes are visited: those that depend on a differentiated input
and that the output depends on.
"""
from .errors import NonDifferentiableError
from .ops import fn


def is_differentiable(value):
    return value.dtype.kind == "f"  # (np.issubdtype's answer, ~20x faster: it runs per node)


def active_nodes(graph, wrt, out):
    """Nodes on a path from any of `wrt` to `out`, in graph order."""
    varied = {v.id for v in wrt}
    forward = []
    for node in graph.nodes:
        if any(v.id in varied for v in node.inputs) and is_differentiable(node.output):
            varied.add(node.output.id)
            forward.append(node)
    needed = {out.id}
    active = []
    for node in reversed(forward):
        if node.output.id in needed:
            active.append(node)
            needed.update(v.id for v in node.inputs)
    return list(reversed(active))


def vjp(graph, out, wrt, seed=None, active=None):
    """Build d(out)/d(wrt) · seed as new nodes of `graph`; return one cotangent per `wrt` value.

    A `wrt` value that `out` does not depend on gets zeros. `active`: active_nodes(graph, wrt,
    out), when the caller has it (a Jacobian's rows share it: the nodes one row adds are not
    on the path from wrt to out, and finding it anew per row scanned the grown graph, n^2).
    """
    for w in wrt:
        if not is_differentiable(w):
            raise NonDifferentiableError(
                f"cannot differentiate with respect to a {w.dtype} value; gradients need float "
                "arguments (leave integer and boolean arguments out of argnums)")
    with graph.stamping_user_source(False):  # backward nodes take the source of their forward node
        if seed is None:
            with graph.at_source(out.node.source if out.node else graph.source):
                seed = fn.ones_like(out)
        cotangent = {out.id: seed}
        for node in reversed(active if active is not None else active_nodes(graph, wrt, out)):
            g = cotangent.pop(node.output.id, None)
            if g is None:
                continue
            with graph.at_source(node.source):
                rule = node.opdef.vjp
                if rule is None:
                    raise NonDifferentiableError(
                        f"op {node.op!r} has no gradient rule", source=node.source)
                in_cts = rule(node, g)
                for i, (x, ct) in enumerate(zip(node.inputs, in_cts)):
                    if ct is None or i in node.opdef.nondiff or not is_differentiable(x):
                        continue
                    if ct.shape != x.shape or ct.dtype != x.dtype:
                        raise AssertionError(
                            f"VJP of {node.op} gave {ct} for input {x}")  # a bug in an op rule
                    prev = cotangent.get(x.id)
                    cotangent[x.id] = ct if prev is None else prev + ct
        results = []
        for w in wrt:
            ct = cotangent.get(w.id)
            results.append(ct if ct is not None else fn.zeros_like(w))
        return results
