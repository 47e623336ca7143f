"""The examples' models (cases.MODELS: each example's own loss, tiny shapes) on target="cuda"
under Numba's CUDA simulator against target="cpu" (run by tests/test_cuda.py in a subprocess with
NUMBA_ENABLE_CUDASIM=1).

For each model: `value_and_grad` gives the same value and gradients on both targets, and a
`train_step` with the example's optimizer makes the same updates, compared after every step
(loss, every parameter), then the optimizer state. Tolerances are float32's: the CUDA target sums
with atomics, in any order.

    NUMBA_ENABLE_CUDASIM=1 python tests/cuda_scripts/sim_models.py [MODEL ...]

Prints one JSON object: {model: {"vg": {...}, "train": {...}}}, each part {"ok", "err" (max abs
difference, or the error), "s_cuda" (seconds on target="cuda": the simulator)}, and per model
"s" and "cpu_s" (wall and CPU seconds, both targets and the compiles).
"""
import copy
import json
import sys
import time
import traceback

import numpy as np

import gradc

from cases import MODELS, compare

VG_TOL = dict(rtol=2e-5, atol=2e-5)
# after a few optimizer steps: differences in the last bits of a gradient are scaled by the
# learning rate, and Adam divides by sqrt(v); still float32-close
TRAIN_TOL = dict(rtol=1e-4, atol=2e-5)


def _fail(e):
    return {"ok": False, "err": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-2000:]}


def check_value_and_grad(m):
    out = {}
    for target in ("cpu", "cuda"):
        t0 = time.perf_counter()
        vg = gradc.value_and_grad(m["loss"], target=target, copy=True)
        out[target] = vg(m["params"], *m["batch"])
        out[f"s_{target}"] = time.perf_counter() - t0
    (v_gpu, g_gpu), (v_cpu, g_cpu) = out["cuda"], out["cpu"]
    assert np.isfinite(v_cpu), v_cpu
    # gradients that are all zero would make the comparison vacuous
    zero = [k for k, g in g_cpu.items() if not np.abs(g).max() > 0]
    assert not zero, f"gradients all zero on target='cpu': {zero}"
    err = max(compare(v_gpu, v_cpu, **VG_TOL), compare(g_gpu, g_cpu, **VG_TOL))
    return {"ok": True, "err": err,
            "value": float(v_gpu), "s_cuda": round(out["s_cuda"], 2)}


def check_train_step(m):
    params = {t: copy.deepcopy(m["params"]) for t in ("cpu", "cuda")}
    steps = {t: gradc.train_step(m["loss"], m["make_optimizer"](), target=t)
             for t in ("cpu", "cuda")}
    losses, errs, s_cuda = {"cpu": [], "cuda": []}, [], 0.0
    for k in range(m["steps"]):
        for t in ("cpu", "cuda"):
            t0 = time.perf_counter()
            losses[t].append(steps[t](params[t], *m["batch"]))
            if t == "cuda":
                s_cuda += time.perf_counter() - t0
        try:
            loss_err = compare(np.float32(losses["cuda"][-1]), np.float32(losses["cpu"][-1]),
                               **TRAIN_TOL)
            err = max(loss_err, compare(params["cuda"], params["cpu"], **TRAIN_TOL))
        except AssertionError as e:
            raise AssertionError(f"after step {k + 1}: {e}") from None
        errs.append(err)
    state = {t: steps[t].state_dict() for t in ("cpu", "cuda")}
    assert state["cpu"]["step"] == state["cuda"]["step"] == m["steps"], state["cuda"]["step"]
    errs.append(compare(state["cuda"]["state"], state["cpu"]["state"], **TRAIN_TOL))
    # every parameter moved: a step that does nothing on both targets would compare equal
    unchanged = [k for k in m["params"] if np.array_equal(params["cuda"][k], m["params"][k])]
    assert not unchanged, f"parameters not updated on target='cuda': {unchanged}"
    return {"ok": True, "err": max(errs), "err_per_step": errs[:-1], "losses": losses["cuda"],
            "steps": m["steps"], "s_cuda": round(s_cuda, 2)}


def main(names):
    results = {}
    for name in names:
        t0, c0 = time.perf_counter(), time.process_time()
        r = results[name] = {}
        try:
            m = MODELS[name]()
        except Exception as e:  # noqa: BLE001 - reported to the test
            r["vg"] = r["train"] = _fail(e)
            continue
        for part, fn in (("vg", check_value_and_grad), ("train", check_train_step)):
            try:
                r[part] = fn(m)
            except Exception as e:  # noqa: BLE001 - reported to the test
                r[part] = _fail(e)
        r["s"] = round(time.perf_counter() - t0, 2)
        r["cpu_s"] = round(time.process_time() - c0, 2)  # all threads: the load-independent figure
    return results


if __name__ == "__main__":
    json.dump(main(sys.argv[1:] or list(MODELS)), sys.stdout)
