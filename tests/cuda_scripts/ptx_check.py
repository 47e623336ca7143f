"""PTX of every kernel target="cuda" launches, for the op families and the examples' models
(tests/cuda_scripts/cases.py, float32): `cuda.compile_ptx` must succeed for each, and
tests/test_cuda.py checks where double precision (`.f64`) shows up in the PTX.

Run WITHOUT the simulator (NUMBA_ENABLE_CUDASIM unset or 0; tests/test_cuda.py runs it in a
subprocess; it imports numba.cuda, so the test process only imports its f64_lines). It needs
Numba's CUDA compiler (NVVM: numba-cuda with its NVRTC/NVVM wheels, or a CUDA toolkit), not a
GPU. With no GPU the compute capability is fixed to CC below: `compile_ptx` is given it, and
numba-cuda's device-function dispatcher, which asks the current device for it (and fails
without one), is given a stand-in device.

Programs are built without a GPU the way `gradc compile` does: `lower(..., load=False)` of a
Function / TrainStep made for target="cpu" and switched to target="cuda" (making one for "cuda"
directly asks for a GPU).

Prints one JSON object: {"skipped": reason} where compile_ptx does not work here, else
{"cc", "gpu", "programs": {name: {"kernels", "s"} or {"error"}}, "kernels": count,
"unexpected_f64": [...], "expected_f64": [...]}: kernels with .f64 in their PTX, expected where
an argument or a value of the kernel's IR is float64 (each entry: program, kernel, argument
types, the first lines with .f64).
"""
import copy
import json
import re
import sys
import time
import traceback

import numpy as np

CC = (9, 0)
F64 = re.compile(r"\.f64\b")  # a type suffix (cvt.rn.f32.f64, add.f64, .reg .f64); not %f64


def f64_lines(ptx):
    """Lines of PTX code (comments dropped) that use double precision."""
    out = []
    for line in ptx.splitlines():
        code = line.split("//", 1)[0].strip()
        if F64.search(code):
            out.append(code)
    return out


def setup():
    """numba.cuda with compile_ptx usable, or a reason why not (a str)."""
    try:
        from numba import cuda, float32
    except Exception as e:  # noqa: BLE001
        return None, f"numba.cuda cannot be imported: {type(e).__name__}: {e}"
    try:
        gpu = bool(cuda.is_available())
    except Exception:  # noqa: BLE001
        gpu = False
    if not gpu:
        import functools

        import numba.cuda.dispatcher as dispatcher

        class StandIn:
            compute_capability = CC

        if hasattr(dispatcher, "get_current_device"):
            dispatcher.get_current_device = lambda: StandIn()
        cuda.compile_ptx = functools.partial(cuda.compile_ptx, cc=CC)

    @cuda.jit(device=True)
    def twice(v):
        return v * float32(2)

    def probe(a):
        i = cuda.grid(1)
        if i < a.shape[0]:
            a[i] = twice(a[i])

    try:
        ptx, _ = cuda.compile_ptx(probe, (float32[:],))
        assert ".entry" in ptx, ptx[:200]
    except Exception as e:  # noqa: BLE001
        msg = " ".join(str(e).split())[:400]
        return None, f"cuda.compile_ptx does not work here ({type(e).__name__}: {msg})"
    return cuda, gpu


def programs():
    """(name, thunk returning a CudaProgram) for every op case and model, float32."""
    import gradc
    from cases import FLOAT64_CASES, MODELS, OP_CASES, mlp_loss, mlp_setup

    def lowered(make, *args):
        def build():
            f = make()
            f.target = "cuda"  # see the module docstring
            return f.lower(*args, load=False).program
        return build

    out = []
    for name, fn, args, mode, argnums in OP_CASES:
        if name in FLOAT64_CASES:
            continue
        kw = {} if mode == "jit" else {"argnums": argnums}
        make = lambda fn=fn, mode=mode, kw=kw: getattr(gradc, mode)(fn, **kw)  # noqa: E731
        out.append((name, lowered(make, *args)))
    p, xs, ys = mlp_setup()
    out.append(("train_step_adam",
                lowered(lambda: gradc.train_step(mlp_loss, gradc.optim.Adam(lr=0.05)), p, xs, ys)))
    for name, setup_model in MODELS.items():
        m = setup_model()
        out.append((f"{name}/value_and_grad",
                    lowered(lambda m=m: gradc.value_and_grad(m["loss"]), m["params"], *m["batch"])))
        out.append((f"{name}/train_step",
                    lowered(lambda m=m: gradc.train_step(m["loss"], m["make_optimizer"]()),
                            copy.deepcopy(m["params"]), *m["batch"])))
    m = MODELS["digits_mlp"]()
    out.append(("digits_mlp/train_step clip_norm check_finite",
                lowered(lambda: gradc.train_step(m["loss"], m["make_optimizer"](), clip_norm=1.0,
                                                 check_finite=True),
                        copy.deepcopy(m["params"]), *m["batch"])))
    # the float64 case last: its PTX must show .f64 (the detector works)
    for name, fn, args, mode, argnums in OP_CASES:
        if name in FLOAT64_CASES:
            make = lambda fn=fn, a=argnums: gradc.value_and_grad(fn, argnums=a)  # noqa: E731
            out.append((name, lowered(make, *args)))
    return out


def ir_has_f64(program, kernel_name):
    """Whether the fused kernel behind a generated kernel (k<index>_...) has a float64 value."""
    m = re.match(r"k(\d+)_", kernel_name)
    if not m:
        return False
    for k in program.fusion.kernels:
        if k.index == int(m.group(1)):
            return any(v.dtype == np.float64 for n in k.nodes for v in (*n.inputs, n.output))
    return False


def main():
    import numba
    if numba.config.ENABLE_CUDASIM:
        raise SystemExit("ptx_check.py: run it without the simulator (NUMBA_ENABLE_CUDASIM=0)")
    cuda, gpu = setup()
    if cuda is None:
        return {"skipped": gpu}
    from gradc.codegen.cuda import kernel_ptx

    compile_ptx = cuda.compile_ptx
    memo, calls = {}, []

    def recording(fn, sig, **kw):  # each kernel and signature compiled once across programs
        calls.append((fn.__name__, sig))
        key = (fn, tuple(sig))
        if key not in memo:
            memo[key] = compile_ptx(fn, sig, **kw)
        return memo[key]

    cuda.compile_ptx = recording
    result = {"cc": list(CC) if not gpu else "the GPU's", "gpu": gpu, "programs": {}, "kernels": 0,
              "unexpected_f64": [], "expected_f64": []}
    for name, build in programs():
        t0 = time.perf_counter()
        try:
            program = build()
            calls.clear()
            ptxs = kernel_ptx(program)
            assert len(ptxs) == len(calls), (len(ptxs), len(calls))
        except Exception as e:  # noqa: BLE001 - reported to the test
            msg = " ".join(str(e).split())[:600]
            result["programs"][name] = {"error": f"{type(e).__name__}: {msg}",
                                        "trace": traceback.format_exc()[-2000:]}
            continue
        for (kernel, ptx), (_, sig) in zip(ptxs, calls):
            bad = f64_lines(ptx)
            if not bad:
                continue
            expected = (any("float64" in str(t) for t in sig) or ir_has_f64(program, kernel))
            entry = {"program": name, "kernel": kernel, "sig": [str(t) for t in sig],
                     "lines": len(bad), "first": bad[:4]}
            result["expected_f64" if expected else "unexpected_f64"].append(entry)
        result["programs"][name] = {"kernels": len(ptxs), "s": round(time.perf_counter() - t0, 2)}
        result["kernels"] += len(ptxs)
    result["compiled"] = len(memo)
    return result


if __name__ == "__main__":
    json.dump(main(), sys.stdout)
