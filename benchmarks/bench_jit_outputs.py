"""What a compiled call's fresh outputs cost: gradc.jit(lambda x: x * 2) and
gradc.grad(lambda x: (x * x).sum(), copy=True) (both hand back one array the size of x) against
NumPy's `x * 2`, for outputs of 64 KiB to 16 MiB (float32), at the default thread count.
Median milliseconds per call and minor page faults per call (a fresh output whose memory is
reused costs none; one that lands in never-touched pages costs one per 4 KiB page).

    python3 benchmarks/bench_jit_outputs.py [--calls 200]
"""
import argparse
import resource
import time

import numpy as np

import gradc


def per_call(fn, calls):
    """(median ms, minor page faults per call) of `fn()`, its result dropped at once."""
    fn()
    times = []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return float(np.median(times)) * 1e3, faults / calls


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    calls = parser.parse_args().calls
    jit = gradc.jit(lambda x: x * 2)
    grad = gradc.grad(lambda x: (x * x).sum(), copy=True)
    print(f"{'output':>8}  {'numpy x*2':>16}  {'gradc.jit':>16}  {'grad(copy=True)':>16}"
          "   (ms/call, page faults/call)")
    for kib in (64, 1024, 4096, 16384):
        x = np.random.default_rng(0).random(kib * 256, dtype=np.float32)
        row = [per_call(lambda: x * 2, calls), per_call(lambda: jit(x), calls),
               per_call(lambda: grad(x), calls)]
        print(f"{kib:>5} KiB  " + "  ".join(f"{ms:8.3f} ({pf:5.0f})" for ms, pf in row))


if __name__ == "__main__":
    main()
