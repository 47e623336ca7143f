"""Warm starts: a fresh process whose gradc cache an earlier run filled, timed from after
`import numpy, numba` to the end of the first step (import gradc + building the step + the first
step, as benchmarks/run.py's fresh-process measurement), with GRADC_LOG=compiles' phases.

Workloads: W8 (the LSTM) at 48 steps and at 64 (issue 14's target: <= 1 s), and W7 (a GPT
block). With --other CHECKOUT, that gradc (e.g. the main branch) runs the same starts
alternately with this one, each on its own cache, and both are reported side by side; the
losses and the parameters after the step must be the same bits.

    python3 benchmarks/bench_warm_start.py [--rounds 5] [--other /path/to/gradc]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CASES = [("W8", 48), ("W8", 64), ("W7", None)]
ONE_THREAD = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                "NUMBA_NUM_THREADS")}


def child(checkout, name, steps):
    """One start in this fresh process: prints RESULT {json}."""
    sys.path[:0] = [checkout, os.path.join(checkout, "benchmarks")]
    import numba  # noqa: F401  (the clock starts after these)
    import numpy  # noqa: F401
    t0 = time.perf_counter()
    import gradc  # noqa: F401
    import systems
    import workloads
    imports = time.perf_counter() - t0
    w = workloads.get(name)
    if steps:
        w.steps = steps
    params, batch = w.init(0)  # (making the data is not counted)
    t1 = time.perf_counter()
    runner = systems.make("gradc", w, params, batch)
    loss = runner.step()
    t2 = time.perf_counter()
    after = runner.params()
    digest = hashlib.sha256(b"".join(after[k].tobytes() for k in sorted(after))).hexdigest()
    print("RESULT " + json.dumps({"start_s": imports + t2 - t1, "loss": float(loss).hex(),
                                  "params": digest[:16]}), flush=True)


def start(checkout, cache, name, steps):
    env = dict(os.environ, **ONE_THREAD, GRADC_CACHE_DIR=cache, GRADC_LOG="compiles")
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, __file__, "--child", checkout, name, str(steps or 0)],
                          env=env, capture_output=True, text=True, timeout=600,
                          cwd=tempfile.gettempdir())
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    result = json.loads(proc.stdout.split("RESULT ")[-1])
    result["log"] = [line.split("kernels; ")[-1] for line in proc.stderr.splitlines()
                     if "gradc: compiled" in line][-1]
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--other", help="another gradc checkout, timed alternately with this one")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    ns = ap.parse_args()
    if ns.child:
        return child(ns.child[0], ns.child[1], int(ns.child[2]))
    sides = {"this": str(HERE.parent)}
    if ns.other:
        sides["other"] = os.path.abspath(ns.other)
    with tempfile.TemporaryDirectory(prefix="warm-start-") as tmp:
        caches = {side: os.path.join(tmp, side) for side in sides}
        for side in sides:  # the earlier run that fills the caches (cold)
            for name, steps in CASES:
                start(sides[side], caches[side], name, steps)
        results = {}
        for r in range(ns.rounds):
            for name, steps in CASES:
                for side in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
                    results.setdefault((name, steps, side), []).append(
                        start(sides[side], caches[side], name, steps))
    print("| workload | gradc | best s | median s | range s | last compile log |")
    print("|---|---|---:|---:|---:|---|")
    for (name, steps, side), runs in results.items():
        t = sorted(x["start_s"] for x in runs)
        label = f"{name} ({steps} steps)" if steps else name
        print(f"| {label} | {side} | {t[0]:.3f} | {t[len(t) // 2]:.3f} | {t[0]:.2f}-{t[-1]:.2f} | "
              f"{runs[-1]['log']} |")
    for name, steps in CASES:
        bits = {(x["loss"], x["params"]) for side in sides for x in results[name, steps, side]}
        if len(bits) != 1:
            print(f"{name} {steps}: the starts disagree: {bits}")


if __name__ == "__main__":
    sys.exit(main())
