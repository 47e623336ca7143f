"""Kernels through Numba or straight to LLVM IR (gradc/codegen/llvm_cpu.py), side by side.

Each round runs one fresh process per route (GRADC_KERNELS=numba / llvm) with an empty cache:
it trains one step of a workload (the cold first step: trace, compile, run), reports the compile
time and how many loop kernels the direct route took, then times warm steps and prints a digest
of the loss and every parameter after 3 steps, which must be the same for both routes.

    PYTHONPATH=$PWD python benchmarks/bench_direct_kernels.py W5 W7 --rounds 3
    PYTHONPATH=$PWD python benchmarks/bench_direct_kernels.py W5 W7 --per-kernel
    PYTHONPATH=$PWD python benchmarks/bench_direct_kernels.py W5 W7 --run-kernels
    PYTHONPATH=$PWD python benchmarks/bench_direct_kernels.py W1 W2 W3 --left

--run-kernels: each direct kernel (loop or library) against its Numba twin (same bytes out?
same time?), on a random arena (a gather's random indices raise at once, on both routes).
--left: the kernels the direct route leaves to Numba, and why (llvm_cpu's Unsupported).
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

# each distinct direct loop kernel against its Numba twin, in one process: both called on copies
# of one random arena with the program's own arguments, their bytes compared and times taken
RUN_KERNELS = r"""
import sys, time, ctypes
import numpy as np, gradc
from benchmarks.workloads import WORKLOADS
from gradc.codegen import llvm_cpu, modules
from gradc.codegen.driver_rt import entry_address, ARENA, CONSTANT, INPUT
w = WORKLOADS[sys.argv[1]]
params, batch = w.init(0)
lowered = gradc.train_step(w.loss, gradc.optim.SGD(w.lr)).lower(params, *batch).lowered
program = lowered.program
direct = llvm_cpu.load_kernels(program.kernel_modules, modules.module_dir())
numba = {n: entry_address(getattr(m, n[6:])) for n, m in
         modules.load_modules({n: program.kernel_modules[n] for n in direct}).items()}
rng = np.random.default_rng(0)
arena = rng.standard_normal(lowered.plan.arena_bytes // 4 + 64).astype(np.float32)
inputs = [rng.standard_normal(v.size * v.dtype.itemsize // 4 + 16).astype(np.float32)
          for v in lowered.fusion.graph.inputs]
def bound(address, args, A, ins):
    words = [v if b == CONSTANT else (A.ctypes.data + v if b == ARENA else ins[b - INPUT].ctypes.data + v)
             for b, v in args]
    f = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p, *[ctypes.c_int64] * len(words))(address)
    status, exc = ctypes.c_int64(), ctypes.c_void_p()
    return lambda: f(ctypes.byref(status), ctypes.byref(exc), *words)
seen, total, differ = set(), {"numba": 0.0, "llvm": 0.0}, []
for name, args in program.encoded_calls():
    if name not in direct or name in seen:
        continue
    seen.add(name)
    runs = {}
    for route, address in (("numba", numba[name]), ("llvm", direct[name])):
        A, ins = arena.copy(), [x.copy() for x in inputs]
        call = bound(address, args, A, ins)
        call()
        runs[route] = (A, ins, call)
    (a, ia, fa), (b, ib, fb) = runs["numba"], runs["llvm"]
    if a.tobytes() != b.tobytes() or any(x.tobytes() != y.tobytes() for x, y in zip(ia, ib)):
        differ.append(name)
    best = {}
    for _ in range(3):
        for route, (_, _, call) in runs.items():
            t = time.perf_counter()
            for _ in range(100):
                call()
            best[route] = min(best.get(route, 1e9), (time.perf_counter() - t) / 100 * 1e6)
    for route in best:
        total[route] += best[route]
    print(f"{name[6:56]:50s} numba {best['numba']:8.1f} us  llvm {best['llvm']:8.1f} us"
          + ("  RESULTS DIFFER" if name in differ else ""))
print(f"{len(seen)} kernels: numba {total['numba']:.0f} us, llvm {total['llvm']:.0f} us in all; "
      f"{len(differ)} differ")
"""

# the kernels a workload's step leaves to Numba, each with the construct llvm_cpu refused
LEFT = r"""
import sys
import gradc
from llvmlite import binding as ll
from benchmarks.workloads import WORKLOADS
from gradc.codegen import llvm_cpu
w = WORKLOADS[sys.argv[1]]
params, batch = w.init(0)
program = gradc.train_step(w.loss, gradc.optim.SGD(w.lr)).lower(params, *batch).lowered.program
left = []
for name, source in program.kernel_modules.items():
    try:
        ll.parse_assembly(llvm_cpu.ir_text(llvm_cpu.kernel_module(source, "probe"))).verify()
    except (llvm_cpu.Unsupported, RuntimeError) as e:
        left.append(f"    {name[6:]}: {type(e).__name__} {str(e)[:100]}")
print("\n".join([f"{len(left)} of {len(program.kernel_modules)} kernels left to Numba"] + left))
"""


def run(workload, route, cache, child=CHILD):
    env = dict(os.environ, GRADC_KERNELS=route, GRADC_CACHE_DIR=cache)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", child, workload, route], env=env, cwd=root,
                         capture_output=True, text=True, timeout=600)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    if child in (RUN_KERNELS, LEFT):
        return out.stdout
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("workloads", nargs="+")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warm", action="store_true", help="also a second process on the same cache")
    ap.add_argument("--per-kernel", action="store_true",
                    help="compile time per distinct loop kernel instead")
    ap.add_argument("--run-kernels", action="store_true",
                    help="each direct kernel's results and run time against Numba's")
    ap.add_argument("--left", action="store_true",
                    help="the kernels left to Numba, and why")
    args = ap.parse_args()
    for w in args.workloads:
        if args.left:
            with tempfile.TemporaryDirectory() as cache:
                print(w, run(w, "llvm", cache, LEFT), end="", flush=True)
            continue
        if args.run_kernels:
            with tempfile.TemporaryDirectory() as cache:
                print(w, run(w, "llvm", cache, RUN_KERNELS), flush=True)
            continue
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
