"""target="cuda", checked against target="cpu" under Numba's CUDA simulator, and its PTX.

The simulator must be switched on (NUMBA_ENABLE_CUDASIM=1) before numba.cuda is first imported,
and this test process uses the CPU target, so the checks run in subprocesses that print what they
saw as JSON; the tests below read it. The functions are in tests/cuda_scripts/cases.py:
- sim_checks.py: every op family (and a tiny Adam step) on both targets, simulator;
- sim_models.py: the examples' models (their own loss functions, tiny shapes) through
  value_and_grad and several train_step calls with the example's optimizer, simulator;
- ptx_check.py: without the simulator, every kernel of those programs through
  `cuda.compile_ptx` (needs NVVM, not a GPU; skipped, with the reason, where it is missing).
Shapes are tiny: the simulator runs every GPU thread as a Python thread.
"""
import json
import os
import subprocess
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BOUND_S = 300


SCRIPTS = {  # fixture -> (script, environment)
    "sim_results": ("sim_checks.py", {"NUMBA_ENABLE_CUDASIM": "1"}),
    "model_results": ("sim_models.py", {"NUMBA_ENABLE_CUDASIM": "1"}),
    "ptx_results": ("ptx_check.py", {"NUMBA_ENABLE_CUDASIM": "0"}),
}
_PROCS = {}  # script -> (Popen, stdout file, stderr file)


def _start(fixture):
    script, env_extra = SCRIPTS[fixture]
    if script not in _PROCS:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
                   **env_extra)
        out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        proc = subprocess.Popen([sys.executable, os.path.join(HERE, "cuda_scripts", script)],
                                stdout=out, stderr=err, text=True, env=env, cwd=ROOT)
        _PROCS[script] = (proc, out, err)
    return _PROCS[script]


def _results(request, fixture):
    """The JSON the fixture's script printed. The first call starts every script that the
    selected tests need, so they run side by side (each is mostly one busy thread)."""
    for name in SCRIPTS:
        if any(name in getattr(item, "fixturenames", ()) for item in request.session.items):
            _start(name)
    proc, out, err = _start(fixture)
    try:
        rc = proc.wait(timeout=BOUND_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"{SCRIPTS[fixture][0]} ran over {BOUND_S} s")
    out.seek(0)
    err.seek(0)
    stdout, stderr = out.read(), err.read()
    assert rc == 0, stderr[-3000:]
    return json.loads(stdout)


@pytest.fixture(scope="module", autouse=True)
def _stop_scripts():
    yield
    for proc, out, err in _PROCS.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.close()
        err.close()
    _PROCS.clear()


@pytest.fixture(scope="module")
def sim_results(request):
    return _results(request, "sim_results")


CHECKS = ["elementwise", "transcendental", "activations", "where_compare", "floor_sign_jit",
          "math_ufuncs", "math_ufuncs_jit", "broadcast", "transpose_slice_views", "sum_axes",
          "max_min", "mean_var", "reductions_jit", "matmul_2d", "matmul_batched",
          "take_embedding", "take_axis1", "take_along_axis", "slice_concat", "gate_blocks",
          "stride_slice_grad",
          "slice_sums", "set_slice_steps", "conv2d", "pooling", "pooling_tiles", "cross_entropy",
          "softmax_log_softmax", "scans_sorting", "argsort_jit", "float64", "integers_jit",
          "narrow_integers_jit",
          "train_step_adam", "index_error", "index_error_train_step", "empty_refused"]


@pytest.mark.parametrize("name", CHECKS)
def test_cuda_matches_cpu(sim_results, name):
    r = sim_results[name]
    assert r["ok"], f"{name}: {r['err']}\n{r.get('trace', '')}"


def test_train_step_learns(sim_results):
    r = sim_results["train_step_adam"]
    assert r["changed"] and r["losses"][-1] < r["losses"][0]


# --- the examples' models -----------------------------------------------------------------
MODELS = ["linear_regression", "moons_mlp", "digits_mlp", "digits_cnn", "sequence_rnn", "attention"]


@pytest.fixture(scope="module")
def model_results(request):
    return _results(request, "model_results")


@pytest.mark.parametrize("model", MODELS)
def test_model_value_and_grad_matches_cpu(model_results, model):
    r = model_results[model]["vg"]
    assert r["ok"], f"{model}: {r['err']}\n{r.get('trace', '')}"


@pytest.mark.parametrize("model", MODELS)
def test_model_train_step_matches_cpu(model_results, model):
    """The same loss and parameters as target="cpu" after every step, then the same state."""
    r = model_results[model]["train"]
    assert r["ok"], f"{model}: {r['err']}\n{r.get('trace', '')}"
    assert len(r["err_per_step"]) == r["steps"] >= (3 if model == "digits_mlp" else 2)


# --- PTX ------------------------------------------------------------------------------------
PTX_TRAIN = ["train_step_adam"] + [f"{m}/train_step" for m in MODELS]
PTX_FLOAT32 = ([c for c in CHECKS if c not in ("float64", "index_error", "index_error_train_step",
                                                 "train_step_adam", "empty_refused",
                                                 "integers_jit")]  # (Numba's int ** is f64)
               + [f"{m}/value_and_grad" for m in MODELS] + PTX_TRAIN)
PTX_CHECK_FINITE = "digits_mlp/train_step clip_norm check_finite"  # float64 sums on purpose
PTX_PROGRAMS = PTX_FLOAT32 + [PTX_CHECK_FINITE, "float64", "integers_jit"]


@pytest.fixture(scope="module")
def ptx_results(request):
    r = _results(request, "ptx_results")
    if "skipped" in r:
        print("PTX checks skipped:", r["skipped"])
        pytest.skip(r["skipped"])
    return r


def _f64(r, program):
    return [e for key in ("expected_f64", "unexpected_f64") for e in r[key]
            if e["program"] == program]


def test_ptx_covers_every_program(ptx_results):
    assert sorted(ptx_results["programs"]) == sorted(PTX_PROGRAMS)


@pytest.mark.parametrize("program", PTX_PROGRAMS)
def test_ptx_compiles(ptx_results, program):
    """cuda.compile_ptx succeeds for every kernel the program launches."""
    r = ptx_results["programs"][program]
    assert "error" not in r, f"{r['error']}\n{r.get('trace', '')}"
    assert r["kernels"] >= 1


@pytest.mark.parametrize("program", [
    p for p in PTX_FLOAT32])
def test_ptx_no_f64(ptx_results, program):
    """A float32 program's kernels have no double precision (.f64 anywhere in their PTX)."""
    assert "error" not in ptx_results["programs"][program]
    bad = _f64(ptx_results, program)
    assert not bad, "\n".join(f"{e['kernel']} {e['sig']}: {e['first']}" for e in bad)


@pytest.mark.parametrize("program", PTX_TRAIN + [PTX_CHECK_FINITE])
def test_ptx_f64_confined(ptx_results, program):
    """In a train step, double precision only where the IR has float64 values (the optimizer's
    runtime scalars, check_finite's sums), nowhere else."""
    assert "error" not in ptx_results["programs"][program]
    bad = [e for e in ptx_results["unexpected_f64"] if e["program"] == program]
    assert not bad, "\n".join(f"{e['kernel']} {e['sig']}: {e['first']}" for e in bad)


def test_ptx_f64_detected(ptx_results):
    """The float64 case's kernels do show .f64: the check above can see it."""
    kernels = {e["kernel"] for e in _f64(ptx_results, "float64")}
    assert any(k.startswith("k") for k in kernels), kernels


def test_f64_lines():
    """.f64 as an instruction or declaration type counts; a register named %f64 or a comment
    does not."""
    sys.path.insert(0, os.path.join(HERE, "cuda_scripts"))
    try:
        from ptx_check import f64_lines
    finally:
        sys.path.remove(os.path.join(HERE, "cuda_scripts"))
    ptx = ("\t.reg .f32 \t%f<70>;\n\tmov.f32 \t%f64, 0f3C80F082;\n"
           "\tfma.rn.f32 \t%f65, %f64, %f62, %f63;  // no .f64 here\n"
           "\tcvt.rn.f32.f64 \t%f3, %fd1;\n\t.reg .f64 \t%fd<3>;\n\tadd.f64 %fd2, %fd1, %fd1;\n")
    assert f64_lines(ptx) == ["cvt.rn.f32.f64 \t%f3, %fd1;", ".reg .f64 \t%fd<3>;",
                              "add.f64 %fd2, %fd1, %fd1;"]


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

    from gradc.ops import get_op
    monkeypatch.setattr(get_op("matmul"), "cuda", None)
    graph, _, _ = trace(lambda a, b: a @ b, (np.ones((2, 2), np.float32),) * 2, {})
    fusion = fuse(graph)
    with pytest.raises(gradc.CompileError, match="'matmul' has no CUDA kernel"):
        cuda_codegen.CudaProgram(fusion, plan_buffers(fusion), "t")
