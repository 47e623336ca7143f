"""New batch sizes: each workload's value-and-gradient compiled for its batch, then for batches of
half and twice (and four times) as many rows, in one process with an empty gradc cache. Issue
14's target: a new batch size compiles no new kernel, and its compile takes <= 50 ms beyond
tracing. Printed per workload and batch: the compile's time beyond tracing (passes, code
generation, LLVM, Numba: GRADC_LOG=compiles' phases other than the trace), the kernels it called
that the first batch's program did not, and how many of its calls ran in chunks (a loop of 2^16
iterations or more, a large batched product: the same kernels, cut by the call).

    python3 benchmarks/bench_batch_sizes.py [--only W2,W7]

A workload whose loss fixes its batch (a reshape to the batch size written as a number) is
reported as such.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FACTORS = (0.5, 2, 4)


def _resized(batch, factor):
    """The batch with its leading axis cut or tiled to `factor` times its rows."""
    import numpy as np
    out = []
    for b in batch:
        b = np.asarray(b)
        rows = max(1, int(round(b.shape[0] * factor)))
        reps = -(-rows // b.shape[0])
        out.append(np.concatenate([b] * reps)[:rows] if reps > 1 else b[:rows].copy())
    return tuple(out)


def _called(compiled):
    calls = compiled.program.encoded_calls()
    return {name for name, _, _ in calls}, sum(1 for _, _, chunks in calls if chunks)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated workloads (default: all)")
    args = parser.parse_args(argv)
    os.environ["GRADC_CACHE_DIR"] = tempfile.mkdtemp(prefix="gradc-batch-sizes-")
    sys.path.insert(0, str(HERE))
    import numpy as np
    import gradc
    import workloads
    names = args.only.split(",") if args.only else list(workloads.WORKLOADS)
    print("| workload | batch rows | compile beyond tracing | new kernels | chunked calls |")
    print("|---|---|---|---|---|")
    worst = 0.0
    for name in names:
        w = workloads.get(name)
        params, batch = w.init(0)
        vg = gradc.value_and_grad(w.loss)
        vg({k: v.copy() for k, v in params.items()}, *batch)
        first, chunks = _called(vg.last_compiled())
        print(f"| {name} {w.key} | {len(batch[0])} (first) | | | {chunks} |")
        for factor in FACTORS:
            resized = _resized(batch, factor)
            try:
                value, _ = vg({k: v.copy() for k, v in params.items()}, *resized)
            except gradc.GradcError as e:
                print(f"| | x{factor} | fixed batch: {type(e).__name__} | | |")
                break
            if not np.isfinite(value):
                raise SystemExit(f"{name} at x{factor}: loss {value}")
            compiled = vg.last_compiled()
            beyond = sum(compiled.lowered.timings.values())
            worst = max(worst, beyond)
            called, chunks = _called(compiled)
            new = sorted(n[len("gradc_"):] for n in called - first)
            print(f"| | {len(resized[0])} | {beyond * 1e3:.0f} ms | {len(new)}"
                  f"{' (' + ', '.join(new) + ')' if new else ''} | {chunks} |", flush=True)
    print(f"\nslowest new batch size's compile beyond tracing: {worst * 1e3:.0f} ms "
          "(the target: <= 50 ms)")


if __name__ == "__main__":
    time.perf_counter()
    main()
