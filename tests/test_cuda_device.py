"""target="cuda": what stays on the device and what crosses to the host (gradc/cuda_runtime.py),
checked under Numba's CUDA simulator in a subprocess (tests/cuda_scripts/sim_device.py)."""
import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


@pytest.fixture(scope="module")
def results():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1",
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, os.path.join(HERE, "cuda_scripts", "sim_device.py")],
                          capture_output=True, text=True, env=env, timeout=240, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize("name", [
    "numpy_params_in_sync", "device_params_copy_back_only_the_loss", "state_dict_round_trip",
    "host_writes_between_steps_are_seen", "value_and_grad_device_inputs",
    "device_array_to_cpu_function_is_an_error", "reductions_match_cpu_and_repeat_exactly",
    "bool_and_int_reductions", "aux_reductions_read_the_parameters_before_the_update",
    "a_strided_device_array_is_refused_by_name",
    "a_device_array_read_from_outside_is_refused_by_name",
    "a_generator_over_a_strided_column_is_advanced_there",
    "a_read_only_generator_state_is_refused_by_name"])
def test_device_residency(results, name):
    r = results[name]
    assert r["ok"], f"{name}: {r['err']}\n{r.get('trace', '')}"
