"""Every registered op can be emitted for both targets, and its math runs as SIMD on the CPU.

An elementwise op's `scalar` names its math through the target's table (gradc/codegen/cpu.py
CPU_MATH, gradc/codegen/cuda.py CudaMath): rendering it for each dtype it takes must succeed on
both, so an op added without a CUDA device function fails here, not at a user's first CUDA
compile. Ops with their own kernel need a CPU template and a CUDA launcher.
"""
import re

import numpy as np
import pytest

import gradc  # noqa: F401  (registers the ops)
from gradc.codegen import cpu, cuda, vecmath
from gradc.codegen.loops import Statement
from gradc.codegen.rt import FASTMATH, libm_cbrt
from gradc.ir import Graph
from gradc.ops import all_ops
from gradc.ops.registry import ELEMENTWISE, KERNEL

ELEMENTWISE_OPS = sorted(name for name, op in all_ops().items() if op.kind == ELEMENTWISE)
KERNEL_OPS = sorted(name for name, op in all_ops().items() if op.kind == KERNEL)
ATTRS = {"alias": {"tag": 0}, "astype": {"dtype": np.dtype(np.float32)}, "polygamma": {"n": 1}}


def _dtypes(op):
    """The argument dtypes an op's scalar code is emitted for: floats; integers too where
    integer inputs are not made float first; booleans for logic."""
    if op.name.startswith("logical_"):
        return [np.bool_]
    if op.name.endswith("_shift"):  # (of integers only: floats are refused when built)
        return [np.int64, np.int32, np.uint8]
    if op.float_only:
        return [np.float32, np.float64]
    return [np.float32, np.float64, np.int64, np.int32]


def _statement(op, dtype):
    """A one-node graph of `op` on inputs of `dtype`, as a loop-nest statement."""
    graph = Graph()
    n_inputs = op.scalar.__code__.co_argcount - 2 - len(ATTRS.get(op.name, {}))
    if op.name == "where":
        inputs = [graph.add_input((3,), np.bool_, "c"), graph.add_input((3,), dtype, "a"),
                  graph.add_input((3,), dtype, "b")]
    else:
        inputs = [graph.add_input((3,), dtype, f"x{i}") for i in range(n_inputs)]
    out = graph.apply(op.name, inputs, **ATTRS.get(op.name, {}))
    return Statement("t", out.node, [f"a{i}" for i in range(len(inputs))])


@pytest.mark.parametrize("name", ELEMENTWISE_OPS)
def test_elementwise_op_renders_for_cpu_and_cuda(name):
    pytest.importorskip("numba.cuda")
    op = all_ops()[name]
    for dtype in _dtypes(op):
        st = _statement(op, dtype)
        cpu_code, cuda_code = cpu.scalar(st), cuda.scalar(st)
        assert "a0" in cpu_code and "a0" in cuda_code
        assert "np." not in cuda_code.replace("np.inf", "").replace("np.nan", ""), cuda_code


def test_a_math_function_without_a_device_function_is_a_compile_error():
    from gradc.errors import CompileError
    st = _statement(all_ops()["exp"], np.float32)
    with pytest.raises(CompileError, match="no CUDA device function"):
        cuda.CudaMath(st.node).no_such_function


@pytest.mark.parametrize("name", KERNEL_OPS)
def test_kernel_op_has_a_cpu_template_and_a_cuda_launcher(name):
    assert all_ops()[name].kernel is not None
    assert all_ops()[name].cuda is not None


@pytest.mark.skipif(not vecmath.enable(), reason="no libmvec here")
@pytest.mark.parametrize("function, libm", [(np.exp, "expf"), (np.tanh, "tanhf"),
                                             (np.arctan, "atanf"), (np.log1p, "log1pf"),
                                             (np.tan, "tanf"), (np.sinh, "sinhf"),
                                             (np.log10, "log10f"), (np.arcsin, "asinf"),
                                             # Numba writes these two as unsuffixed intrinsics
                                             (np.exp2, "exp2f"), (np.log2, "log2f"),
                                             (libm_cbrt, "cbrtf")])  # (rt.py's, for np.cbrt)
def test_math_calls_use_libmvec_vector_functions(function, libm):
    """A loop over float32 calling the function (with the kernels' fast-math flags) compiles to
    libmvec's SIMD version (_ZGV...): nothing to list per function (np.arctan, added later,
    vectorizes like np.exp)."""
    from numba import njit

    def loop(x, out):
        for i in range(x.size):
            out[i] = function(x[i])

    with vecmath.compiling():
        kernel = njit(fastmath=FASTMATH)(loop)
        x = np.linspace(-0.5, 1, 64).astype(np.float32)
        out = np.empty_like(x)
        kernel(x, out)
    with np.errstate(invalid="ignore"):  # (log2 and log10 of the negative x: NaN)
        np.testing.assert_allclose(out, function(x), rtol=1e-5, atol=1e-6)
    llvm = kernel.inspect_llvm(kernel.signatures[0])
    # a call of a libmvec vector function, _ZGV<isa>N<lanes>v_<libm>
    assert re.search(rf"call [^\n]*@_ZGV\w+v_{libm}\(", llvm), f"no vector call of {libm}"
