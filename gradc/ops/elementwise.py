"""Elementwise ops: same-shape inputs, one scalar expression per element.

Each op: its NumPy reference, its VJP (built from Values with NumPy operators), and the scalar
expression that the fused loop kernels emit, `scalar(m, dtype, *args, **attrs)`. Math functions
are named through `m`, the target's math table (gradc/codegen/cpu.py CPU_MATH, cuda.py CudaMath):
`{m.exp}(x)` is `np.exp(x)` in a Numba CPU kernel, a device function of cuda_math.py in a CUDA one.
Constants in emitted code carry their dtype (`f32(0.5)`) because Numba would otherwise promote
float32 arithmetic to float64.
"""
import numpy as np

from ..errors import ShapeError
from . import fn
from .registry import COMPOSITE, CONST, ELEMENTWISE, OpDef, register

CODE_DTYPE = {"float32": "f32", "float64": "f64", "int64": "i64", "int32": "i32", "bool": "bool_",
              "int8": "i8", "uint8": "u8", "int16": "i16", "uint16": "u16", "float16": "f16"}


def lit(value, dtype):
    """A typed literal for generated code."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return "True" if value else "False"
    if np.issubdtype(dtype, np.floating):
        v = float(value)
        if np.isnan(v):  # (its sign kept: np.copysign reads it)
            return f"{CODE_DTYPE[dtype.name]}({'-' if np.signbit(v) else ''}np.nan)"
        if np.isinf(v):
            return f"{CODE_DTYPE[dtype.name]}({'' if v > 0 else '-'}np.inf)"
        return f"{CODE_DTYPE[dtype.name]}({v!r})"
    return f"{CODE_DTYPE[dtype.name]}({int(value)})"


def same_shape(inputs, out_dtype=None):
    shape = inputs[0].shape
    for v in inputs[1:]:
        if v.shape != shape:
            raise ShapeError(f"elementwise op on shapes {[x.shape for x in inputs]}")
    return shape, np.dtype(out_dtype) if out_dtype is not None else inputs[0].dtype


def _infer_same(*inputs, **_):
    dtypes = {v.dtype for v in inputs}
    if len(dtypes) != 1:
        raise TypeError(f"elementwise op on mixed dtypes {dtypes}: promote first")
    return same_shape(inputs)


def _infer_bool(*inputs, **_):
    return same_shape(inputs, np.bool_)


def elementwise(name, ref, scalar, vjp=None, infer=_infer_same, nondiff=(), ufuncs=(),
                float_only=False, scipy_ufuncs=()):
    def infer_(inputs, **attrs):
        return infer(*inputs, **attrs)

    def ref_(*arrays, **attrs):
        return ref(*arrays, **attrs)

    return register(OpDef(name, ELEMENTWISE, infer_, ref_, vjp=vjp, scalar=scalar,
                          nondiff=nondiff, ufuncs=ufuncs, float_only=float_only,
                          scipy_ufuncs=scipy_ufuncs))


def _x(node, i=0):
    return node.inputs[i]


def _y(node):
    return node.output


# --- constants (scalars; they broadcast into loops as literals) ------------------------------
register(OpDef(
    "const", CONST,
    infer=lambda inputs, value, dtype: ((), np.dtype(dtype)),
    ref=lambda value, dtype: np.array(value, dtype=dtype),
    scalar=lambda m, dt, value, dtype: lit(value, dt),
))
register(OpDef(
    "constant", CONST,
    infer=lambda inputs, data: (data.array.shape, data.array.dtype),
    ref=lambda data: data.array,
))

# --- arithmetic ------------------------------------------------------------------------------
# (NumPy's add of booleans is a logical or; Python's + of two bools is the int 2, which a fused
# kernel carried on: (m + k) * 1.0 was 2.0 where both held)
elementwise("add", np.add, lambda m, dt, a, b: f"max2({a}, {b})" if dt == np.bool_ else f"{a} + {b}",
            vjp=lambda n, g: [g, g],
            ufuncs=(np.add,))
elementwise("subtract", np.subtract, lambda m, dt, a, b: f"{a} - {b}",
            vjp=lambda n, g: [g, -g],
            ufuncs=(np.subtract,))
elementwise("multiply", np.multiply, lambda m, dt, a, b: f"{a} * {b}",
            vjp=lambda n, g: [g * _x(n, 1), g * _x(n, 0)],
            ufuncs=(np.multiply,))
elementwise("divide", np.divide, lambda m, dt, a, b: f"{a} / {b}",
            vjp=lambda n, g: [g / _x(n, 1), -g * _y(n) / _x(n, 1)],
            ufuncs=(np.divide, np.true_divide), float_only=True)
def _power_vjp(node, g):
    a, b = node.inputs
    return [_power_base_cotangent(g, a, b),
            # d/db a**b = a**b log a, taken as 0 at a = 0 (as JAX does)
            g * node.output * np.log(fn.where(a == 0, 1, a))]


def _power_base_cotangent(g, a, b):
    """g * d/da a**b = g b a**(b-1), and 0 where b = 0 (a**0 is constant 1), as in JAX and
    autograd: not 0 * 0**-1 = NaN at a = 0, where a is taken as 1 under the mask (so that grad
    of grad stays finite there). Only a = 0 is masked: masking all of b = 0 made the mixed
    second derivative d/db (b a**(b-1)) = 1/a there 0 (an asymmetric Hessian)."""
    exponent = fn.const_value(b)
    if exponent == 0:
        return fn.zeros_like(a)
    if exponent is not None:  # (b - 1 made one constant: written as two literals, x ** -0.5's
        # -0.5 - 1.0 folded to pow(x, -1.5), which fast-math's afn rewrote as
        # powi(x, -2) * sqrt(x): inf at x = 1e-20 in float32, where the answer is 5e29)
        return g * b * a ** fn.broadcast_to(fn.const(a.graph, exponent - 1, b.dtype), b.shape)
    return g * b * fn.where((b == 0) & (a == 0), 1, a) ** (b - 1)


def _power_scalar(m, dt, a, b):
    """a ** b; for integers, a negative exponent (known only when the kernel runs: one that
    tracing sees is refused, as NumPy refuses it) gives the machine's answer on both targets,
    1 / a**|b| truncated: 1 for a base of 1, +-1 for -1, else 0 (Numba's CUDA raised inside
    the kernel, and INT64_MIN overflowed its negation on the CPU). An exponent above 2**16
    is taken 16 bits at a time: Numba's integer ** goes through a float pow above that (a
    wrapped 2 ** 70000 came out INT64_MIN; NumPy's, by squaring, wraps to 0)."""
    if np.dtype(dt).kind not in "iu":
        return f"{a} ** {b}"
    one, zero = lit(1, dt), lit(0, dt)
    power = (f"{a} ** {b}" if np.dtype(dt).itemsize <= 2 else  # (int16's exponents: < 2**16)
             f"{a} ** {b} if {b} <= {lit(1 << 16, dt)} else {_power_by_16_bits(a, b, dt)}")
    return (f"(({power}) if {b} >= {zero} else ({one} if {a} == {one} else (({one} if "
            f"{b} % {lit(2, dt)} == {zero} else -{one}) if {a} == -{one} else {zero})))")


def _power_by_16_bits(a, b, dt):
    """a ** b for 0 <= b < 2**bits: the product of (a ** 2**(16 k)) ** (the k-th 16 bits of
    b), each a power Numba takes by squaring (wrapping as NumPy's does)."""
    bits = np.dtype(dt).itemsize * 8
    mask, terms, base = lit(0xFFFF, dt), [], f"({a})"
    for k in range(0, bits, 16):
        terms.append(f"{base} ** (({b} >> {lit(k, dt)}) & {mask})")
        base = f"({base} ** {lit(1 << 16, dt)})"  # (parenthesized: ** binds to the right)
    return "(" + " * ".join(terms) + ")"


elementwise("power", np.power, _power_scalar, vjp=_power_vjp, ufuncs=(np.power,))
elementwise("floor_divide", np.floor_divide, lambda m, dt, a, b: f"{a} // {b}",
            vjp=lambda n, g: [fn.zeros_like(_x(n, 0)), fn.zeros_like(_x(n, 1))],
            ufuncs=(np.floor_divide,))
elementwise("remainder", np.remainder, lambda m, dt, a, b: f"{a} % {b}",  # sign of the divisor
            vjp=lambda n, g: [g, -g * np.floor_divide(_x(n, 0), _x(n, 1))],
            ufuncs=(np.remainder, np.mod))
elementwise("floor", np.floor, lambda m, dt, a: f"{m.floor}({a})",
            vjp=lambda n, g: [fn.zeros_like(_x(n))],
            ufuncs=(np.floor,))
elementwise("ceil", np.ceil, lambda m, dt, a: f"{m.ceil}({a})",
            vjp=lambda n, g: [fn.zeros_like(_x(n))],
            ufuncs=(np.ceil,))
elementwise("negative", np.negative, lambda m, dt, a: f"-{a}",
            vjp=lambda n, g: [-g],
            ufuncs=(np.negative,))
elementwise("maximum", np.maximum, lambda m, dt, a, b: f"max2({a}, {b})",
            vjp=lambda n, g: [fn.where(_x(n, 0) >= _x(n, 1), g, 0),
                              fn.where(_x(n, 0) >= _x(n, 1), 0, g)],
            ufuncs=(np.maximum,))
elementwise("minimum", np.minimum, lambda m, dt, a, b: f"min2({a}, {b})",
            vjp=lambda n, g: [fn.where(_x(n, 0) <= _x(n, 1), g, 0),
                              fn.where(_x(n, 0) <= _x(n, 1), 0, g)],
            ufuncs=(np.minimum,))


def _fmax_vjp(n, g, compare=np.greater_equal):
    """fmax/fmin take the other operand where one is NaN: a's gradient where a was taken (a
    at least b, or b NaN; at a tie a's, as maximum's), b's elsewhere."""
    a, b = _x(n, 0), _x(n, 1)
    took_a = compare(a, b) | (b != b)
    return [fn.where(took_a, g, 0), fn.where(took_a, 0, g)]


# NaN as missing: the other operand where one is NaN (NaN only where both are)
elementwise("fmax", np.fmax, lambda m, dt, a, b: f"({a} if ({a} >= {b} or {b} != {b}) else {b})",
            vjp=_fmax_vjp, ufuncs=(np.fmax,))
elementwise("fmin", np.fmin, lambda m, dt, a, b: f"({a} if ({a} <= {b} or {b} != {b}) else {b})",
            vjp=lambda n, g: _fmax_vjp(n, g, np.less_equal), ufuncs=(np.fmin,))
elementwise("square", np.square, lambda m, dt, a: f"{a} * {a}",
            vjp=lambda n, g: [g * 2 * _x(n)],
            ufuncs=(np.square,))
elementwise("reciprocal", lambda a: np.reciprocal(a), lambda m, dt, a: f"{lit(1, dt)} / {a}",
            vjp=lambda n, g: [-g * _y(n) * _y(n)],
            ufuncs=(np.reciprocal,), float_only=True)
elementwise("abs", np.abs, lambda m, dt, a: f"abs({a})",
            vjp=lambda n, g: [g * np.sign(_x(n))],
            ufuncs=(np.abs, np.absolute))
def _sign_scalar(m, dt, a):
    """NumPy's sign: 0.0 for both zeros (Numba's, and C's, give -0.0 back for -0.0); 1 for
    every unsigned integer but 0 (Numba's compares uint8's 128 as signed: -1, wrapped 255)."""
    if np.dtype(dt).kind == "u":
        return f"({lit(0, dt)} if {a} == {lit(0, dt)} else {lit(1, dt)})"
    if np.dtype(dt).kind != "f":
        return f"{m.sign}({a})"
    return f"({lit(0, dt)} if {a} == {lit(0, dt)} else {m.sign}({a}))"


elementwise("sign", np.sign, _sign_scalar,
            vjp=lambda n, g: [fn.zeros_like(_x(n))],
            ufuncs=(np.sign,))
elementwise("copy", np.copy, lambda m, dt, a: a,
            vjp=lambda n, g: [g])
# `alias` marks a value as a fresh variable for a nested gradient (its tag keeps it from
# merging with other uses of the same value); simplify removes it after autodiff.
elementwise("alias", lambda a, tag: a, lambda m, dt, a, tag: a, vjp=lambda n, g: [g],
            infer=lambda a, tag: (a.shape, a.dtype))

# --- transcendental --------------------------------------------------------------------------
elementwise("exp", np.exp, lambda m, dt, a: f"{m.exp}({a})",
            vjp=lambda n, g: [g * _y(n)],
            ufuncs=(np.exp,), float_only=True)
elementwise("log", np.log, lambda m, dt, a: f"{m.log}({a})",
            vjp=lambda n, g: [g / _x(n)],
            ufuncs=(np.log,), float_only=True)
elementwise("tanh", np.tanh, lambda m, dt, a: f"{m.tanh}({a})",
            vjp=lambda n, g: [g * (1 - _y(n) * _y(n))],
            ufuncs=(np.tanh,), float_only=True)
elementwise("sin", np.sin, lambda m, dt, a: f"{m.sin}({a})",
            vjp=lambda n, g: [g * np.cos(_x(n))],
            ufuncs=(np.sin,), float_only=True)
elementwise("cos", np.cos, lambda m, dt, a: f"{m.cos}({a})",
            vjp=lambda n, g: [-g * np.sin(_x(n))],
            ufuncs=(np.cos,), float_only=True)
elementwise("sqrt", np.sqrt, lambda m, dt, a: f"{m.sqrt}({a})",
            vjp=lambda n, g: [g * 0.5 / _y(n)],
            ufuncs=(np.sqrt,), float_only=True)
elementwise("log1p", np.log1p, lambda m, dt, a: f"{m.log1p}({a})",
            vjp=lambda n, g: [g / (1 + _x(n))],
            ufuncs=(np.log1p,), float_only=True)
elementwise("expm1", np.expm1, lambda m, dt, a: f"{m.expm1}({a})",
            vjp=lambda n, g: [g * (_y(n) + 1)],
            ufuncs=(np.expm1,), float_only=True)

elementwise("arctan", np.arctan, lambda m, dt, a: f"{m.arctan}({a})",
            vjp=lambda n, g: [g / (1 + _x(n) * _x(n))],
            ufuncs=(np.arctan,), float_only=True)

# --- activations: stable scalar forms with hand-written VJPs ---------------------------------
def _np_sigmoid(x):
    with np.errstate(over="ignore"):
        return (1 / (1 + np.exp(-x))).astype(x.dtype)


def _np_log1p_exp_neg_abs(x):
    return np.log1p(np.exp(-np.abs(x)))


elementwise("relu", lambda a: np.maximum(a, 0).astype(a.dtype), lambda m, dt, a: f"max2({a}, {lit(0, dt)})",
            vjp=lambda n, g: [fn.where(_y(n) > 0, g, 0)])  # (the result: x not kept)
elementwise("sigmoid", _np_sigmoid, lambda m, dt, a: f"{lit(1, dt)} / ({lit(1, dt)} + {m.exp}(-{a}))",
            vjp=lambda n, g: [g * _y(n) * (1 - _y(n))], scipy_ufuncs=("expit",), float_only=True)
elementwise("softplus",  # max(x, 0) + log1p(exp(-|x|)): no overflow for large |x|
            lambda a: (np.maximum(a, 0) + _np_log1p_exp_neg_abs(a)).astype(a.dtype),
            lambda m, dt, a: f"max2({a}, {lit(0, dt)}) + {m.log1p}({m.exp}(-abs({a})))",
            vjp=lambda n, g: [g * fn.unary("sigmoid", _x(n))])
elementwise("log_sigmoid",  # min(x, 0) - log1p(exp(-|x|))
            lambda a: (np.minimum(a, 0) - _np_log1p_exp_neg_abs(a)).astype(a.dtype),
            lambda m, dt, a: f"min2({a}, {lit(0, dt)}) - {m.log1p}({m.exp}(-abs({a})))",
            vjp=lambda n, g: [g * fn.unary("sigmoid", -_x(n))], scipy_ufuncs=("log_expit",),
            float_only=True)

# --- comparisons, selection, casts ------------------------------------------------------------
_COMPARISONS = [("less", np.less, "<"), ("less_equal", np.less_equal, "<="),
                ("greater", np.greater, ">"), ("greater_equal", np.greater_equal, ">="),
                ("equal", np.equal, "=="), ("not_equal", np.not_equal, "!=")]
COMPARISONS = frozenset(name for name, _, _ in _COMPARISONS)  # (fuse.py: decided on exact bits)
for _name, _ref, _sym in _COMPARISONS:
    elementwise(_name, _ref, (lambda sym: lambda m, dt, a, b: f"{a} {sym} {b}")(_sym),
                vjp=lambda n, g: [None, None], infer=_infer_bool, nondiff=(0, 1), ufuncs=(_ref,))

elementwise("logical_and", np.logical_and, lambda m, dt, a, b: f"{a} and {b}",
            vjp=lambda n, g: [None, None], infer=_infer_bool, nondiff=(0, 1))
elementwise("logical_or", np.logical_or, lambda m, dt, a, b: f"{a} or {b}",
            vjp=lambda n, g: [None, None], infer=_infer_bool, nondiff=(0, 1))
elementwise("logical_not", np.logical_not, lambda m, dt, a: f"not {a}",
            vjp=lambda n, g: [None], infer=_infer_bool, nondiff=(0,))

# bitwise, of integers (and of booleans, where they are the logical ops); NumPy refuses floats
for _name, _ref, _sym in [("bitwise_and", np.bitwise_and, "&"), ("bitwise_or", np.bitwise_or, "|"),
                          ("bitwise_xor", np.bitwise_xor, "^")]:
    elementwise(_name, _ref, (lambda sym: lambda m, dt, a, b: f"{a} {sym} {b}")(_sym),
                vjp=lambda n, g: [None, None], nondiff=(0, 1), ufuncs=(_ref,))


def _shift(op):
    """`a << b` / `a >> b` as NumPy's shifts give them where C's are undefined: a count that is
    negative or not below 64 gives 0 (or -1 for a negative number shifted right); counts from
    the type's width up to 63 shift in int64, whose extra bits a narrower type's store drops
    (NumPy's 0 or -1 again)."""
    def text(m, dt, a, b):
        if np.dtype(dt).kind not in "iu":
            raise TypeError(f"shifts of integers only, not {np.dtype(dt).name}")
        zero, unsigned = lit(0, dt), np.dtype(dt).kind == "u"
        inside = (f"{b} < {lit(64, dt)}" if unsigned else
                  f"({b} >= {zero}) & ({b} < {lit(64, dt)})")
        outside = (zero if op == "<<" or unsigned else
                   f"({lit(-1, dt)} if {a} < {zero} else {zero})")
        return f"({a} {op} {b}) if {inside} else {outside}"
    return text


def _infer_shift(a, b):
    if a.dtype.kind not in "iu" or b.dtype != a.dtype:
        raise TypeError("shifts take integers of one dtype; promote first")
    return same_shape((a, b), a.dtype)


for _name, _ref, _sym in [("left_shift", np.left_shift, "<<"),
                          ("right_shift", np.right_shift, ">>")]:
    elementwise(_name, _ref, _shift(_sym), vjp=lambda n, g: [None, None], nondiff=(0, 1),
                infer=_infer_shift, ufuncs=(_ref,))
elementwise("invert", np.invert,  # (Python's ~True is -2)
            lambda m, dt, a: f"not {a}" if dt == np.bool_ else f"~{a}",
            vjp=lambda n, g: [None], nondiff=(0,), ufuncs=(np.invert,))


def _infer_where(cond, a, b):
    if cond.dtype != np.bool_:
        raise TypeError("where: the condition must be boolean")
    if a.dtype != b.dtype:
        raise TypeError("where: branches of mixed dtypes; promote first")
    return same_shape((cond, a, b), a.dtype)


elementwise("where", lambda c, a, b: np.where(c, a, b),
            lambda m, dt, c, a, b: f"{a} if {c} else {b}",
            vjp=lambda n, g: [None, fn.where(_x(n, 0), g, 0), fn.where(_x(n, 0), 0, g)],
            infer=_infer_where, nondiff=(0,))


# masked_gradient(mask, x) is x, whose gradient is kept only where the mask holds: a ufunc's
# inputs under NumPy's where= (np.divide(a, b, out=..., where=b != 0) never divides by the
# zeros), so the ufunc's derivative there (1 / b at b = 0: inf) is never multiplied by the
# zero gradient (NaN). Lowered to x after autodiff, as the composites are.
register(OpDef("masked_gradient", COMPOSITE, lambda inputs: (inputs[1].shape, inputs[1].dtype),
               ref=lambda mask, x: x, vjp=lambda n, g: [None, fn.where(n.inputs[0], g, 0)],
               lower=lambda mask, x: x, nondiff=(0,)))


def _astype_vjp(node, g):
    src = node.inputs[0].dtype
    if not np.issubdtype(src, np.floating):
        return [None]
    return [fn.astype(g, src)]


def _astype_scalar(m, dt, a, dtype):
    if np.dtype(dtype) == np.bool_:
        return f"{a} != 0"
    return f"{CODE_DTYPE[np.dtype(dtype).name]}({a})"


elementwise("astype", lambda a, dtype: a.astype(dtype), _astype_scalar, vjp=_astype_vjp,
            infer=lambda a, dtype: (a.shape, np.dtype(dtype)))
