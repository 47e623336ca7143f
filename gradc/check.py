"""`gradc check`: every VJP on a function's gradient path against finite differences.

    report = gradc.check.check(loss, params, x, y)      # or: gradc check model.py:loss --example ...
    print(report.format()); report.ok; report.first_failure

The function is traced on the example arguments and simplified as for `gradc.grad` (so these are
the nodes autodiff really differentiates). Every node on the path from the differentiated
arguments to the output is then checked on its own: a single-node graph (`Graph.apply`) in
float64, its VJP from `gradc.autodiff.vjp` with a random cotangent `s`, and for each
differentiable input x a random direction d, comparing

    <VJP(s)_x, d>   with   (F(x + eps d) - F(x - eps d)) / (2 eps),   F(x) = <s, op(x)>,

both evaluated by the reference interpreter `gradc.interpret.evaluate` on the node's actual
input values. A node whose one-sided differences disagree (a kink: relu at 0, ties of a max, a
jump of floor) or that leaves its domain within eps is reported as skipped, not failed.
"""
from __future__ import annotations

import types
from dataclasses import dataclass

import numpy as np

from . import autodiff
from .aot import materialize
from .interpret import evaluate
from .ir import Graph
from .passes import BEFORE_AUTODIFF, run_passes
from .signature import Call, differentiable_leaves, normalize_argnums
from .errors import NonDifferentiableError
from .trace import trace

RTOL = 1e-4  # float64 central differences are good to ~1e-8 relative on smooth ops
EPS = 1e-6


@dataclass
class NodeCheck:
    index: int  # position in the simplified graph
    op: str
    source: str  # the user's file:line
    value: str  # "%7:f32[3,4]"
    status: str  # "ok", "skip" or "fail"
    detail: str  # error figures, or why it was skipped / failed
    input: int | None = None  # the input whose cotangent failed


@dataclass
class CheckReport:
    name: str
    checks: list
    seed: int

    @property
    def ok(self):
        return not any(c.status == "fail" for c in self.checks)

    @property
    def first_failure(self):
        return next((c for c in self.checks if c.status == "fail"), None)

    def counts(self):
        out = {"ok": 0, "skip": 0, "fail": 0}
        for c in self.checks:
            out[c.status] += 1
        return out

    def format(self, verbose=False, source_text=None):
        """The report as text; `source_text(file_line)` may give the line's code."""
        n = self.counts()
        lines = [f"gradc check: {self.name}: {len(self.checks)} nodes on the gradient path, VJPs "
                 f"vs float64 central finite differences (seed {self.seed})"]
        for c in self.checks:
            if verbose or c.status != "ok":
                lines.append(f"  {c.status.upper():<4}  {c.op:<22} {c.source:<24} {c.detail}")
        lines.append(f"{n['ok']} agree, {n['skip']} skipped (not differentiable at the example "
                     f"point), {n['fail']} disagree")
        first = self.first_failure
        if first is not None:
            code = source_text(first.source) if source_text else None
            lines.append(f"FAILED: the first op whose gradient disagrees is {first.op!r} at "
                         f"{first.source}" + (f": {code}" if code else "") + f" ({first.detail})")
        else:
            lines.append("OK: every checked VJP agrees with finite differences")
        return "\n".join(lines)


def _float64(dtype):
    return np.dtype(np.float64) if np.issubdtype(dtype, np.floating) else np.dtype(dtype)


def _attrs64(node):
    """The node's attributes with float dtypes widened to float64 (astype's target)."""
    out = {}
    for k, a in node.attr.items():
        if isinstance(a, np.dtype) and np.issubdtype(a, np.floating):
            a = np.dtype(np.float64)
        out[k] = a
    return out


def _single(node, values, widen):
    """A graph of this one node, its inputs fresh graph inputs (float64 if `widen`)."""
    g = Graph()
    dtype = _float64 if widen else np.dtype
    ins = [g.add_input(v.shape, dtype(v.dtype)) for v in node.inputs]
    xs = [np.asarray(x, dtype=v.dtype).reshape(v.shape) for v, x in zip(ins, values)]
    out = g.apply(node.op, ins, **(_attrs64(node) if widen else node.attr))
    return g, ins, xs, out


def check_node(node, values, rng, eps=EPS, rtol=RTOL, index=0):
    """Check one node's VJP on its input `values` (arrays); returns a NodeCheck."""
    def result(status, detail, which=None):
        return NodeCheck(index, node.op, node.source, repr(node.output), status, detail, which)

    try:
        g, ins, xs, out = _single(node, values, widen=True)
    except Exception as e:  # the op refuses float64: check it in its own dtypes
        try:
            g, ins, xs, out = _single(node, values, widen=False)
        except Exception:
            return result("skip", f"cannot rebuild the node alone ({type(e).__name__}: {e})")
    if not np.issubdtype(out.dtype, np.floating):
        return result("skip", "integer or boolean output")
    diff = [i for i, v in enumerate(ins) if np.issubdtype(v.dtype, np.floating)
            and i not in node.opdef.nondiff]
    if not diff:
        return result("skip", "no differentiable input")
    seed_v = g.add_input(out.shape, out.dtype)
    seed = rng.standard_normal(out.shape).astype(out.dtype)
    try:
        cts = autodiff.vjp(g, out, [ins[i] for i in diff], seed=seed_v)
    except NonDifferentiableError as e:
        return result("fail", f"no gradient rule: {e}")
    g.outputs = [out] + cts
    forward = types.SimpleNamespace(inputs=g.inputs, nodes=[out.node], outputs=[out])
    with np.errstate(all="ignore"):
        grads = evaluate(g, xs + [seed])[1:]

        def F(i, t, d):
            moved = list(xs)
            moved[i] = xs[i] + t * d
            y = evaluate(forward, moved + [seed])[0]
            return float(np.sum(seed * y)), float(np.sum(np.abs(seed * y)))

        worst = 0.0
        for which, (i, ct) in enumerate(zip(diff, grads)):
            d = rng.standard_normal(xs[i].shape).astype(xs[i].dtype)
            h = eps * max(1.0, float(np.max(np.abs(xs[i]), initial=0.0)))
            fp, sp = F(i, h, d)
            f0, s0 = F(i, 0.0, d)
            fm, sm = F(i, -h, d)
            analytic = float(np.sum(np.asarray(ct, np.float64) * d))
            if not all(np.isfinite([fp, f0, fm])):
                return result("skip", f"input {i}: leaves its domain within {h:.0e} (non-finite "
                                      "values)")
            numeric = (fp - fm) / (2 * h)
            # rounding in the sums F, amplified by 1/h
            atol = 64 * np.finfo(np.float64).eps * max(sp, s0, sm) / h + 1e-12
            right, left = (fp - f0) / h, (f0 - fm) / h
            if abs(right - left) > 1e-3 * max(abs(right), abs(left)) + 8 * atol:
                return result("skip", f"input {i}: not differentiable at the example point "
                                      f"(one-sided slopes {left:.6g} and {right:.6g})")
            if not np.isfinite(analytic):
                return result("fail", f"input {i}: the VJP gives {analytic}, finite differences "
                                      f"{numeric:.6g}", i)
            err = abs(analytic - numeric)
            scale = max(abs(analytic), abs(numeric))
            if err > rtol * scale + 4 * atol:
                return result("fail", f"input {i}: the VJP gives {analytic:.6g}, finite "
                                      f"differences {numeric:.6g} (relative error "
                                      f"{err / max(scale, 1e-300):.1e})", i)
            worst = max(worst, err / (scale + 4 * atol))  # rounding-level errors count as 0
    return result("ok", f"relative error {worst:.1e}")


def check(fun, *args, argnums=0, seed=0, eps=EPS, rtol=RTOL, **kwargs):
    """Check the VJP of every node between argument(s) `argnums` and `fun`'s output on these
    example arguments (Specs are filled with seeded random values). Returns a CheckReport."""
    args = tuple(materialize(args, seed))
    graph, _, outs = trace(fun, args, kwargs, capture=False)
    name = getattr(fun, "__name__", "fn")
    argnums_t, _ = normalize_argnums(argnums, len(args), None)
    call = Call(args, kwargs)
    differentiable_leaves(call, argnums_t, None)
    floats = [v for v in outs if np.issubdtype(v.dtype, np.floating)]
    if not floats:
        raise NonDifferentiableError(f"{name} returns no floating-point value to differentiate")
    graph = run_passes(graph, BEFORE_AUTODIFF)
    wrt = [graph.inputs[p] for i in argnums_t for p in call.ranges[i]]
    active, seen = [], set()
    for out in graph.outputs:
        if np.issubdtype(out.dtype, np.floating):
            for node in autodiff.active_nodes(graph, wrt, out):
                if id(node) not in seen:
                    seen.add(id(node))
                    active.append(node)
    order = {id(n): i for i, n in enumerate(graph.nodes)}
    active.sort(key=lambda n: order[id(n)])
    leaves = call.leaves
    everything = types.SimpleNamespace(inputs=graph.inputs, nodes=graph.nodes,
                                       outputs=[n.output for n in graph.nodes])
    with np.errstate(all="ignore"):
        values = evaluate(everything, leaves) if graph.nodes else []
    env = {v.id: np.asarray(x) for v, x in zip(graph.inputs, leaves)}
    env.update({n.output.id: x for n, x in zip(graph.nodes, values)})
    rng = np.random.default_rng(seed)
    checks = [check_node(node, [env[v.id] for v in node.inputs], rng, eps, rtol, order[id(node)])
              for node in active]
    return CheckReport(name, checks, seed)
