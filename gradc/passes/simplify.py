"""Algebraic simplification, constant folding and stability rewrites.

Each rule looks at one node whose inputs are already simplified (the graph is rebuilt in order)
and returns a replacement value or None. Rules only fire where the result is exactly equal in
exact arithmetic and no less stable in floating point (so `x * 0` is left alone: NaN * 0 is NaN).
"""
import numpy as np

from ..ir import replay
from ..ops import fn
from ..ops.fn import const_value
from ..ops.movement import compose_slices
from ..ops.registry import ELEMENTWISE


def is_const(v, c):
    value = const_value(v)
    return value is not None and value == c


def is_zero(v, negative):
    """Whether v is a constant zero that leaves every value as it is when added (`negative`:
    -0.0, as x + -0.0 is x; +0.0 is not, -0.0 + 0.0 being +0.0) or subtracted (+0.0). An
    integer zero is both."""
    value = const_value(v)
    return value is not None and value == 0 and (
        v.dtype.kind != "f" or bool(np.signbit(value)) == negative)


def op_of(v):
    return v.node.op if v.node is not None else None


def clear_zero_signs(graph):
    """`x + 0.0` and `0.0 - x` (floats) as where(x == 0, +0.0, x or -x): what NumPy computes,
    in a form the compiled kernels keep. Their fast-math (nsz) folds the add into x, keeping a
    -0.0 that 1 / x and np.copysign then read: -inf for NumPy's +inf (fuzz41a). After autodiff
    only: the select's derivative at 0 is 0, the add's 1."""
    def rewrite(new_graph, node, ins):
        if node.op not in ("add", "subtract") or node.output.dtype.kind != "f":
            return None
        a, b = ins
        if node.op == "subtract":
            keep = is_zero(a, negative=False) and b.shape == node.output.shape
            return _zero_sign_cleared(b, -b) if keep else None
        x = a if is_zero(b, negative=False) else b if is_zero(a, negative=False) else None
        return _zero_sign_cleared(x, x) if x is not None and x.shape == node.output.shape else None

    return replay(graph, rewrite)


def _zero_sign_cleared(x, y):
    return fn.where(fn.compare("equal", x, 0), fn.const(x.graph, 0.0, x.dtype), y)


def _fold(graph, node, ins):
    if ins and all(op_of(v) == "const" for v in ins) and node.opdef.kind == ELEMENTWISE:
        result = node.opdef.ref(*[np.array(v.node.attr["value"], v.dtype) for v in ins], **node.attr)
        return fn.const(graph, np.asarray(result).item(), node.output.dtype)
    return None


def _arith(graph, node, ins):
    op = node.op
    a = ins[0] if ins else None
    b = ins[1] if len(ins) > 1 else None
    if op == "add":  # (x + 0.0 is not x: -0.0 + 0.0 is +0.0, which 1 / x and copysign read)
        if is_zero(b, negative=True):
            return a
        if is_zero(a, negative=True):
            return b
    if op == "subtract":
        if is_zero(b, negative=False):
            return a
        if is_zero(a, negative=True):  # (-0.0 - b is -b; 0.0 - 0.0 is +0.0, not -0.0)
            return -b
    if op == "multiply":
        if is_const(b, 1):
            return a
        if is_const(a, 1):
            return b
        if is_const(b, -1):
            return -a
        if a is b:
            return fn.unary("square", a, float_only=False)
    if op == "divide":
        if is_const(b, 1):
            return a
        if op_of(b) == "add" and is_const(b.node.inputs[0], 1) and \
                op_of(b.node.inputs[1]) == "exp" and op_of(b.node.inputs[1].node.inputs[0]) == "negative":
            s = fn.unary("sigmoid", b.node.inputs[1].node.inputs[0].node.inputs[0])  # 1/(1+e^-x)
            return s if is_const(a, 1) else fn.multiply(a, s)  # (SiLU's x / (1 + e^-x): its
            # gradient through the quotient was x * inf / inf, NaN, where e^-x overflows)
    if op == "power":
        for c, rewrite in ((1, lambda x: x), (2, lambda x: fn.unary("square", x, float_only=False)),
                           (0.5, lambda x: fn.unary("sqrt", x)), (-1, lambda x: fn.unary("reciprocal", x))):
            if is_const(b, c) and (c in (1, 2) or np.issubdtype(a.dtype, np.floating)):
                return rewrite(a)
        # x ** -k as (1 / x) ** k: fast-math turns pow(x, -2.0) into 1 / (x * x), whose x * x
        # overflows where the answer is a subnormal (2e19 ** -2 in float32 was 0, not 2.5e-39)
        k = const_value(b)
        if (k is not None and np.issubdtype(a.dtype, np.floating) and float(k).is_integer()
                and k <= -2):
            return fn.power(fn.unary("reciprocal", a), -k)
    if op == "negative" and op_of(a) == "negative":
        return a.node.inputs[0]
    if op == "where" and ins[1] is ins[2]:
        return ins[1]
    if op in ("copy", "alias"):
        return a
    return None


def _stability(graph, node, ins):
    """Rewrite unstable compositions into the stable ops: log(sigmoid(x)) -> log_sigmoid(x)...
    (fn.stable_form, which the graph's construction applies too)."""
    if node.op in ("log", "log1p"):
        return fn.stable_form(node.op, ins[0])
    return None


def _movement(graph, node, ins):
    op = node.op
    x = ins[0] if ins else None
    if op == "reshape" and op_of(x) == "reshape":
        return fn.reshape(x.node.inputs[0], node.attr["shape"])
    if op == "transpose" and op_of(x) == "transpose":
        inner = x.node.attr["perm"]
        return fn.transpose(x.node.inputs[0], tuple(inner[p] for p in node.attr["perm"]))
    if op == "broadcast_to" and op_of(x) == "broadcast_to":
        return fn.broadcast_to(x.node.inputs[0], node.attr["shape"])
    if op == "slice" and op_of(x) == "slice":  # x[a][b]: one slice, one unslice in its VJP
        inner = x.node.attr
        one = compose_slices((inner["starts"], inner["stops"], inner["steps"]),
                             (node.attr["starts"], node.attr["stops"], node.attr["steps"]))
        if one is not None:
            return fn.slice_(x.node.inputs[0], *one)
    if op == "astype" and x.dtype == node.attr["dtype"]:
        return x
    if op in ("matmul", "bmm"):  # absorb transposes of the last two axes into the BLAS flags
        a, b = ins
        ta, tb = node.attr["ta"], node.attr["tb"]
        swap = tuple(range(a.ndim - 2)) + (a.ndim - 1, a.ndim - 2)
        changed = False
        if op_of(a) == "transpose" and a.node.attr["perm"] == swap:
            a, ta, changed = a.node.inputs[0], not ta, True
        if op_of(b) == "transpose" and b.node.attr["perm"] == swap:
            b, tb, changed = b.node.inputs[0], not tb, True
        if changed:
            return graph.apply(op, (a, b), ta=ta, tb=tb)
    return None


RULES = (_fold, _arith, _stability, _movement)


def simplify(graph):
    def rewrite(new_graph, node, ins):
        for rule in RULES:
            out = rule(new_graph, node, ins)
            if out is not None:
                return out
        return None

    return replay(graph, rewrite)
