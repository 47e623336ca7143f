"""`gradc compile --target cuda` (gradc/aot_cuda.py): a standalone module (NumPy and numba.cuda
only) whose train step and value_and_grad match gradc's CPU target. The modules are generated
here without a GPU and run in a subprocess under Numba's CUDA simulator, at tiny shapes."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import gradc
from gradc import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))
from digits_mlp import forward, loss  # noqa: E402

SPECS = '''
import numpy as np
from gradc.aot import Spec

def args():
    params = {"W1": Spec((6, 5)), "b1": Spec((5,)), "W2": Spec((5, 3)), "b2": Spec((3,))}
    return params, Spec((4, 6), np.float32), Spec((4,), np.int64)


def forward_args():
    return args()[:2]
'''


def inputs():
    rng = np.random.default_rng(3)
    params = {"W1": rng.standard_normal((6, 5)), "b1": rng.standard_normal(5) * 0.1,
              "W2": rng.standard_normal((5, 3)), "b2": np.zeros(3)}
    params = {k: v.astype(np.float32) for k, v in params.items()}
    batches = [(rng.standard_normal((4, 6)).astype(np.float32), rng.integers(0, 3, 4))
               for _ in range(3)]
    return params, batches


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("aot_cuda")
    (folder / "specs.py").write_text(SPECS)
    model = os.path.join(ROOT, "examples", "digits_mlp.py")
    for fun, spec, what, out in (
            ("loss", "args", ["--train", "adam", "--lr", "0.05"], "mlp_step_cuda.py"),
            ("loss", "args", ["--value-and-grad"], "mlp_vg_cuda.py"),
            ("forward", "forward_args", ["--jit"], "mlp_forward_cuda.py")):
        assert cli.main(["compile", f"{model}:{fun}", "--example", f"{folder}/specs.py:{spec}",
                         *what, "--target", "cuda", "-q", "-o", str(folder / out)]) in (0, None)
    params, batches = inputs()
    arrays = {f"p_{k}": v for k, v in params.items()}
    for i, (x, y) in enumerate(batches):
        arrays[f"x{i}"], arrays[f"y{i}"] = x, y
    np.savez(folder / "inputs.npz", **arrays)
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "cuda_scripts",
                                                        "aot_cuda_run.py"), str(folder)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder, json.loads(proc.stdout)


def test_header_names_the_target(results):
    folder, _ = results
    text = (folder / "mlp_step_cuda.py").read_text()
    assert "target cuda" in text and "def launches(view):" in text
    # the header's command makes this module again (it left out --target cuda)
    command = next(line for line in text.splitlines() if "gradc compile " in line)
    assert command.rstrip().endswith("--target cuda"), command
    assert not re.search(r"^\s*(import gradc|from gradc\S* import)", text, re.M)


def test_train_step_module_matches_gradc_cpu(results):
    """Three Adam steps (the third by a new TrainStep resumed from state_dict) make the same
    updates as gradc's CPU train_step."""
    _, got = results
    params, batches = inputs()
    step = gradc.train_step(loss, gradc.optim.Adam(lr=0.05))
    want = [step(params, x, y) for x, y in batches]
    np.testing.assert_allclose(got["losses"], want, rtol=1e-5, atol=1e-6)
    for k, v in params.items():
        np.testing.assert_allclose(np.array(got["params"][k], np.float32), v, rtol=1e-5, atol=1e-6)
    state = step.state_dict()["state"]["exp_avg_sq"]
    for k, v in zip(params, got["exp_avg_sq"]):  # (the flat order: the dict's own)
        np.testing.assert_allclose(np.array(v, np.float32), state[k], rtol=1e-5, atol=1e-9)


def test_value_and_grad_module_matches_gradc_cpu(results):
    _, got = results
    params, batches = inputs()
    value, grads = gradc.value_and_grad(loss)(params, *batches[0])
    assert abs(got["value"] - float(value)) <= 1e-5 * abs(float(value)) + 1e-6
    for k, g in grads.items():
        np.testing.assert_allclose(np.array(got["grads"][k], np.float32), g, rtol=1e-5, atol=1e-6)


def test_jit_module_matches_gradc_cpu(results):
    _, got = results
    params, batches = inputs()
    want = gradc.jit(forward)(params, batches[0][0])
    np.testing.assert_allclose(np.array(got["forward"], np.float32), want, rtol=1e-5, atol=1e-6)


def test_explain_shows_cuda_launches(tmp_path, capsys):
    (tmp_path / "specs.py").write_text(SPECS)
    model = os.path.join(ROOT, "examples", "digits_mlp.py")
    cli.main(["explain", f"{model}:loss", "--example", f"{tmp_path}/specs.py:args",
              "--target", "cuda"])
    out = capsys.readouterr().out
    assert "launches, in order" in out and "matmul_tiled_f32" in out and "@cuda.jit" in out
