"""target="cuda", checked against target="cpu" under Numba's CUDA simulator.

The simulator must be switched on (NUMBA_ENABLE_CUDASIM=1) before numba.cuda is first imported,
and this test process uses the CPU target, so the checks run in one subprocess,
tests/cuda_scripts/sim_checks.py, which prints what it saw as JSON; the tests below read it.
Shapes there are tiny: the simulator runs every GPU thread as a Python thread.
"""
import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BOUND_S = 240


def _run(script, env_extra):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
               **env_extra)
    return subprocess.run([sys.executable, os.path.join(HERE, "cuda_scripts", script)],
                          capture_output=True, text=True, env=env, timeout=BOUND_S, cwd=ROOT)


@pytest.fixture(scope="module")
def sim_results():
    proc = _run("sim_checks.py", {"NUMBA_ENABLE_CUDASIM": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


CHECKS = ["elementwise", "transcendental", "activations", "where_compare", "floor_sign_jit",
          "broadcast", "transpose_slice_views", "sum_axes", "max_min", "mean_var",
          "reductions_jit", "matmul_2d", "matmul_batched", "take_embedding", "take_axis1",
          "take_along_axis", "slice_concat", "stride_slice_grad", "conv2d", "pooling",
          "cross_entropy", "softmax_log_softmax", "float64", "train_step_adam", "index_error"]


@pytest.mark.parametrize("name", CHECKS)
def test_cuda_matches_cpu(sim_results, name):
    r = sim_results[name]
    assert r["ok"], f"{name}: {r['err']}\n{r.get('trace', '')}"


def test_train_step_learns(sim_results):
    r = sim_results["train_step_adam"]
    assert r["changed"] and r["losses"][-1] < r["losses"][0]


def test_ptx_has_no_f64_for_float32(sim_results):
    r = sim_results["ptx_no_f64"]
    if "skipped" in r:
        print("ptx check skipped:", r["skipped"])
        pytest.skip(r["skipped"])
    assert r["ok"], r["err"]


def test_no_cuda_is_a_clear_error():
    code = ("import gradc\n"
            "from numba import cuda\n"
            "if cuda.is_available(): print('HAS_GPU'); raise SystemExit\n"
            "try:\n"
            "    gradc.jit(lambda x: x, target='cuda')\n"
            "except gradc.GradcError as e:\n"
            "    print(type(e).__name__, e)\n")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0",
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=BOUND_S).stdout
    if "HAS_GPU" in out:
        pytest.skip("a CUDA GPU is available here")
    assert "CudaUnavailableError" in out and "pip install numba-cuda" in out \
        and "NUMBA_ENABLE_CUDASIM=1" in out, out


def test_unknown_op_is_named(monkeypatch):
    """An op with no CUDA emitter is a compile-time error naming it (checked without numba.cuda:
    code generation alone)."""
    import numpy as np

    import gradc
    from gradc.codegen import cuda as cuda_codegen
    from gradc.passes.fuse import fuse
    from gradc.passes.memory import plan_buffers
    from gradc.trace import trace

    monkeypatch.delitem(cuda_codegen.LIBRARY, "matmul")
    graph, _, _ = trace(lambda a, b: a @ b, (np.ones((2, 2), np.float32),) * 2, {})
    fusion = fuse(graph)
    with pytest.raises(gradc.CompileError, match="'matmul' has no CUDA kernel"):
        cuda_codegen.CudaProgram(fusion, plan_buffers(fusion), "t")
