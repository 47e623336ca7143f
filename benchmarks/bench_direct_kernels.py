"""Loop kernels through Numba or straight to LLVM IR (gradc/codegen/llvm_cpu.py), side by side.

Each round runs one fresh process per route (GRADC_KERNELS=numba / llvm) with an empty cache:
it trains one step of a workload (the cold first step: trace, compile, run), reports the compile
time and how many loop kernels the direct route took, then times warm steps and prints a digest
of the loss and every parameter after 3 steps, which must be the same for both routes.

    PYTHONPATH=$PWD python benchmarks/bench_direct_kernels.py W5 W7 --rounds 3
"""
import argparse
import hashlib
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


def run(workload, route, cache):
    env = dict(os.environ, GRADC_KERNELS=route, GRADC_CACHE_DIR=cache)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", CHILD, workload], env=env, cwd=root,
                         capture_output=True, text=True, timeout=600)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("workloads", nargs="+")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warm", action="store_true", help="also a second process on the same cache")
    args = ap.parse_args()
    for w in args.workloads:
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
