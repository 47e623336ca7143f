"""CUDA target checks under Numba's CUDA simulator (run by tests/test_cuda.py in a subprocess
with NUMBA_ENABLE_CUDASIM=1, which must be set before numba.cuda is imported).

Every check compiles one function of cases.OP_CASES for target="cuda" and target="cpu" and
compares the values and gradients; shapes are tiny because the simulator runs each GPU thread as
a Python thread.
Prints one JSON object: {name: {"ok": bool, "err": max abs difference or a message}}.
"""
import json
import sys
import time
import traceback

import numpy as np

import gradc

from cases import OP_CASES, compare, mlp_loss, mlp_setup, table

RESULTS = {}


def check(name, fn, args, mode="value_and_grad", argnums=0):
    t0 = time.perf_counter()
    try:
        make = getattr(gradc, mode)
        kw = {} if mode == "jit" else {"argnums": argnums}
        cpu = make(fn, target="cpu", **kw)(*args)
        cuda = make(fn, target="cuda", **kw)(*args)
        RESULTS[name] = {"ok": True, "err": compare(cuda, cpu)}
    except Exception as e:  # noqa: BLE001 - reported to the test
        RESULTS[name] = {"ok": False, "err": f"{type(e).__name__}: {e}",
                         "trace": traceback.format_exc()[-1500:]}
    RESULTS[name]["s"] = round(time.perf_counter() - t0, 2)


# --- train_step: Adam on a tiny MLP, several steps -------------------------------------------
def train(target, steps=3):
    p, xs, ys = mlp_setup()
    step = gradc.train_step(mlp_loss, gradc.optim.Adam(lr=0.05), target=target)
    ids = {k: id(v) for k, v in p.items()}
    losses = [step(p, xs, ys) for _ in range(steps)]
    assert all(id(v) == ids[k] for k, v in p.items())
    return losses, p, step.state_dict()


def train_check():
    t0 = time.perf_counter()
    try:
        (l_cpu, p_cpu, s_cpu), (l_gpu, p_gpu, s_gpu) = train("cpu"), train("cuda")
        assert np.allclose(l_cpu, l_gpu, rtol=1e-5, atol=1e-6), (l_cpu, l_gpu)
        RESULTS["train_step_adam"] = {"ok": True, "err": max(compare(p_gpu, p_cpu), compare(s_gpu["state"], s_cpu["state"])),
                                      "losses": l_gpu, "changed": bool(l_gpu[0] != l_gpu[-1])}
    except Exception as e:  # noqa: BLE001
        RESULTS["train_step_adam"] = {"ok": False, "err": f"{type(e).__name__}: {e}",
                                      "trace": traceback.format_exc()[-1500:]}
    RESULTS["train_step_adam"]["s"] = round(time.perf_counter() - t0, 2)


def error_check():
    try:
        gradc.jit(lambda t, i: np.take(t, i, axis=0), target="cuda")(table, np.array([7]))
        RESULTS["index_error"] = {"ok": False, "err": "no error for an index out of range"}
    except IndexError as e:
        RESULTS["index_error"] = {"ok": "take" in str(e), "err": str(e)}


def empty_check():
    """An array with no elements is refused by name on the CUDA target (a bare ValueError from
    Numba's upload, or a ZeroDivisionError from cuda.py, before)."""
    try:
        gradc.jit(lambda a: np.sum(a, axis=0), target="cuda")(np.zeros((0, 3), np.float32))
        RESULTS["empty_refused"] = {"ok": False, "err": "no error for an array of no elements"}
    except gradc.UnsupportedOpError as e:
        RESULTS["empty_refused"] = {"ok": "no elements" in str(e) and "sim_checks.py" in str(e),
                                    "err": str(e)}


def _half_step_loss(params, x, y):
    # p's gradient does not depend on the labels: its update could run before they are checked
    return np.sum(params["p"] * 2.0) + gradc.nn.cross_entropy(x @ params["W"], y)


def index_error_train_step_check():
    """A train step whose labels are out of range raises IndexOutOfRangeError and changes no
    parameter and no optimizer state (on the device either)."""
    try:
        params = {"W": np.ones((3, 2), np.float32), "p": np.ones(2, np.float32)}
        x = np.ones((4, 3), np.float32)
        step = gradc.train_step(_half_step_loss, gradc.optim.Adam(lr=0.1), target="cuda")
        step(params, x, np.array([0, 1, 0, 1]))
        before, state = {k: v.copy() for k, v in params.items()}, step.state_dict()
        try:
            step(params, x, np.array([0, 1, 5, 1]))
            RESULTS["index_error_train_step"] = {"ok": False, "err": "no error"}
            return
        except gradc.IndexOutOfRangeError as e:
            err = str(e)
        after = step.state_dict()
        unchanged = all(np.array_equal(before[k], params[k]) for k in params) and all(
            np.array_equal(state["state"][s][k], after["state"][s][k])
            for s in state["state"] for k in params)
        RESULTS["index_error_train_step"] = {"ok": unchanged and step.step_count == 1, "err": err}
    except Exception as e:  # noqa: BLE001
        RESULTS["index_error_train_step"] = {"ok": False, "err": f"{type(e).__name__}: {e}",
                                             "trace": traceback.format_exc()[-1500:]}


for name, fn, args, mode, argnums in OP_CASES:
    check(name, fn, args, mode, argnums)
train_check()
error_check()
empty_check()
index_error_train_step_check()
json.dump(RESULTS, sys.stdout)
