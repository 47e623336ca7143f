"""Loop kernels through Numba or straight to LLVM IR (gradc/codegen/llvm_cpu.py), side by side.

Each round runs one fresh process per route (GRADC_KERNELS=numba / llvm) with an empty cache:
it trains one step of a workload (the cold first step: trace, compile, run), reports the compile
time and how many loop kernels the direct route took, then times warm steps and prints a digest
of the loss and every parameter after 3 steps, which must be the same for both routes.

    PYTHONPATH=$PWD python benchmarks/bench_direct_kernels.py W5 W7 --rounds 3
    PYTHONPATH=$PWD python benchmarks/bench_direct_kernels.py W5 W7 --per-kernel

--per-kernel: the compile time of the workload's distinct loop kernels alone, per kernel: Numba
one module each (as `load_driver` did), or all of them as one library through llvm_cpu.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import sys, time, json, hashlib
t0 = time.perf_counter()
import numpy as np, gradc
from benchmarks.workloads import WORKLOADS
from gradc.codegen import llvm_cpu
w = WORKLOADS[sys.argv[1]]
params, batch = w.init(0)
P = {k: v.copy() for k, v in params.items()}
step = gradc.train_step(w.loss, gradc.optim.SGD(w.lr))
t1 = time.perf_counter()
loss = step(P, *batch)
t2 = time.perf_counter()
losses = [loss] + [step(P, *batch) for _ in range(2)]
digest = hashlib.sha256(np.array(losses).tobytes())
for k in sorted(P):
    digest.update(P[k].tobytes())
times = []
for _ in range(7):
    t = time.perf_counter()
    for _ in range(20):
        step(P, *batch)
    times.append((time.perf_counter() - t) / 20)
compiled = step.cache[step._last_key]
loops = sum(k.kind == "loop" for k in compiled.lowered.fusion.kernels)
print(json.dumps({"import_s": t1 - t0, "first_step_s": t2 - t1, "digest": digest.hexdigest()[:16],
                  "step_us": min(times) * 1e6, "direct": len(llvm_cpu._loaded),
                  "loop_kernels": loops, "distinct": len(compiled.lowered.program.kernel_modules)}))
"""

# one route's compile time for a workload's distinct loop kernels (a fresh process, empty cache;
# Numba and llvmlite warmed up on one kernel first, which is not counted)
PER_KERNEL = r"""
import sys, time, json
import gradc
from benchmarks.workloads import WORKLOADS
from gradc.codegen import llvm_cpu, modules
from gradc.codegen.program import KERNEL_HEADER
w = WORKLOADS[sys.argv[1]]
params, batch = w.init(0)
program = gradc.train_step(w.loss, gradc.optim.SGD(w.lr)).lower(params, *batch).lowered.program
loops = {f"gradc_{ks.name}": ks.source for ks in program.kernels if ks.name.startswith("loop_")}
folder = modules.module_dir()
warm = "@njit(\"void(int64, int64)\", **JIT_OPTIONS)\ndef loop_warm(n0, p0):\n    a0 = f32_array(p0, n0)\n    for i0 in range(n0):\n        a0[i0] = np.tanh(a0[i0])\n"
if sys.argv[2] == "numba":
    modules.load_module("gradc_loop_warm", KERNEL_HEADER.format(version="b") + warm)
    t = time.perf_counter()
    for name in loops:
        modules.load_module(name, program.kernel_modules[name])
    n = len(loops)
else:
    llvm_cpu.load_kernels({"gradc_loop_warm": warm}, folder)
    t = time.perf_counter()
    n = len(llvm_cpu.load_kernels(loops, folder))
dt = time.perf_counter() - t
print(json.dumps({"kernels": n, "loops": len(loops), "ms_per_kernel": dt * 1e3 / max(n, 1)}))
"""


def run(workload, route, cache, child=CHILD):
    env = dict(os.environ, GRADC_KERNELS=route, GRADC_CACHE_DIR=cache)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", child, workload, route], env=env, cwd=root,
                         capture_output=True, text=True, timeout=600)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("workloads", nargs="+")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warm", action="store_true", help="also a second process on the same cache")
    ap.add_argument("--per-kernel", action="store_true",
                    help="compile time per distinct loop kernel instead")
    args = ap.parse_args()
    for w in args.workloads:
        if args.per_kernel:
            times = {}
            for r in range(args.rounds):
                for route in ("numba", "llvm"):
                    with tempfile.TemporaryDirectory() as cache:
                        res = run(w, route, cache, PER_KERNEL)
                    print(w, route, json.dumps(res), flush=True)
                    times.setdefault(route, []).append(res["ms_per_kernel"])
            for route, ts in times.items():
                print(f"{w} {route}: {min(ts):.1f}-{max(ts):.1f} ms per loop kernel")
            continue
        best = {}
        for r in range(args.rounds):
            for route in ("numba", "llvm"):
                with tempfile.TemporaryDirectory() as cache:
                    res = run(w, route, cache)
                    if args.warm:
                        res["warm_first_step_s"] = run(w, route, cache)["first_step_s"]
                print(w, route, json.dumps(res), flush=True)
                best.setdefault(route, []).append(res)
        for route, results in best.items():
            firsts = sorted(x["first_step_s"] for x in results)
            steps = sorted(x["step_us"] for x in results)
            print(f"{w} {route}: cold first step {firsts[0]:.2f}-{firsts[-1]:.2f} s, "
                  f"step {steps[0]:.0f}-{steps[-1]:.0f} us, digests "
                  f"{sorted({x['digest'] for x in results})}")


if __name__ == "__main__":
    main()
