"""Runs `gradc compile --target cuda` modules without gradc, under Numba's CUDA simulator (run
by tests/test_aot_cuda.py): argv = folder with the modules and inputs.npz; prints JSON."""
import json
import os
import sys

import numpy as np

sys.modules["gradc"] = None  # a generated module must not import gradc
folder = sys.argv[1]
sys.path.insert(0, folder)
data = np.load(os.path.join(folder, "inputs.npz"))
batches = [(data[f"x{i}"], data[f"y{i}"]) for i in range(3)]


def params():
    return {k[2:]: data[k].copy() for k in data.files if k.startswith("p_")}


out = {}
from mlp_step_cuda import TrainStep, loss as step  # noqa: E402

p = params()
out["losses"] = [step(p, x, y) for x, y in batches[:2]]
state = step.state_dict()
resumed = TrainStep()
resumed.load_state_dict(state)  # uploaded to the device on its first call
out["losses"].append(resumed(p, *batches[2]))
out["params"] = {k: v.tolist() for k, v in p.items()}
out["exp_avg_sq"] = [a.tolist() for a in resumed.state_dict()["state"]["exp_avg_sq"]]

from mlp_vg_cuda import loss as value_and_grad  # noqa: E402

value, grads = value_and_grad(params(), *batches[0])
out["value"], out["grads"] = float(value), {k: v.tolist() for k, v in grads.items()}
from mlp_forward_cuda import forward  # noqa: E402

out["forward"] = forward(params(), batches[0][0]).tolist()
json.dump(out, sys.stdout)
