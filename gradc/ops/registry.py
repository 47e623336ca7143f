"""The op registry: each op is defined once, with everything the compiler needs to know of it.

An `OpDef` holds, side by side (micrograd-style):
- `infer(inputs, **attrs) -> (shape, dtype)`: the shape/dtype rule, which also validates;
- `ref(*arrays, **attrs) -> ndarray`: the NumPy reference the interpreter runs;
- `vjp(node, g) -> [cotangent or None per input]`: builds backward IR from Values;
- how it is emitted: `scalar(math, dtype, *arg_exprs, **attrs) -> str` for elementwise ops
  (`math`: the target's table of math functions, see ops/elementwise.py); for ops that are their
  own kernel, a CPU `kernel` template and a `cuda` launcher of cuda_rt.py's kernel; or `lower`
  for composites that are rewritten into primitive ops before fusion;
- `ufuncs`: the NumPy ufuncs that trace to it (the tracer's table and the README's list);
  `scipy_ufuncs`: scipy.special's, by name (ops/special.py).

Adding an elementwise op (np.arctan was done so): one `elementwise(...)` in ops/elementwise.py (or,
for NumPy's further math ufuncs, ops/math.py) with its reference, scalar math, VJP and ufuncs; one
Case in tests/ops/test_ops.py; `make readme`. A
math function CUDA has no device function for yet also needs its `cu_<name>` in
codegen/cuda_math.py, one table line (tests/test_op_renderings.py fails until it has one). The
CPU's SIMD versions need nothing: codegen/vecmath.py finds any libm call that libmvec has.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import UnsupportedOpError

# op kinds, which decide how fusion and code generation treat an op
ELEMENTWISE = "elementwise"  # same-shape inputs, one scalar expression per element
REDUCE = "reduce"  # sum/max/min over axes, keepdims form
VIEW = "view"  # reshape/broadcast/transpose/slice: an index map, no kernel of its own
KERNEL = "kernel"  # its own loop kernel (gather, scatter, concatenate...)
COMPOSITE = "composite"  # lowered to primitives after autodiff; has a hand-written VJP
CONST = "const"


@dataclass
class OpDef:
    name: str
    kind: str
    infer: Callable
    ref: Callable
    vjp: Callable | None = None
    scalar: Callable | None = None
    kernel: Callable | None = None
    # KERNEL ops on CUDA: (program, node, out Buf, input Bufs) -> [Launch] of cuda_rt's kernel
    cuda: Callable | None = None
    lower: Callable | None = None
    view: Callable | None = None  # VIEW ops: (offset, strides) of the input -> of the output
    nondiff: tuple = ()  # inputs that never get a cotangent (labels, masks)
    checks_indices: bool = False  # its kernel checks input 1's indices and may raise IndexError
    # the NumPy ufuncs that trace to this op through `fn.elementwise` (promotion, then
    # broadcasting): the tracer's ufunc table and the README's list are made from these
    ufuncs: tuple = ()
    # scipy.special's ufuncs by name ("erf"): bound when the tracer meets one, so that gradc
    # does not import SciPy (gradc/trace.py)
    scipy_ufuncs: tuple = ()
    float_only: bool = False  # integer inputs become float64 first, as NumPy's math ufuncs do


_OPS: dict[str, OpDef] = {}


def register(opdef: OpDef) -> OpDef:
    if opdef.name in _OPS:
        raise ValueError(f"op {opdef.name!r} registered twice")
    _OPS[opdef.name] = opdef
    return opdef


def get_op(name: str) -> OpDef:
    try:
        return _OPS[name]
    except KeyError:
        raise UnsupportedOpError(f"unknown op {name!r}") from None


def all_ops() -> dict[str, OpDef]:
    return dict(_OPS)
