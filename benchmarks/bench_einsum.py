"""np.einsum's forward through gradc.jit against np.einsum(optimize=True), float32: attention's
two products and two 3-operand chains. Each is timed twice: returning the result (gradc.jit hands
out a fresh copy of it) and summed to a scalar (the contraction alone). Best of several calls,
after warm-up calls (so neither side page-faults a fresh output each call).

    python3 benchmarks/bench_einsum.py [--calls 40]
"""
import argparse
import time

import numpy as np

import gradc


def best_ms(f, args, calls):
    for _ in range(max(5, calls // 2)):
        f(*args)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        f(*args)
        times.append(time.perf_counter() - t0)
    return min(times) * 1e3


def workloads(rng):
    def arr(*shape):
        return rng.standard_normal(shape).astype(np.float32)
    return [("bhqd,bhkd->bhqk", [arr(8, 8, 128, 64), arr(8, 8, 128, 64)]),
            ("bhqk,bhkd->bhqd", [arr(8, 8, 128, 128), arr(8, 8, 128, 64)]),
            ("ij,jk,kl->il", [arr(256, 512), arr(512, 64), arr(64, 512)]),
            ("bij,jk,ik->bk", [arr(64, 32, 48), arr(48, 64), arr(32, 64)])]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=40)
    calls = parser.parse_args().calls
    for subscripts, args in workloads(np.random.default_rng(0)):
        for summed in (False, True):
            def ref(*a):
                y = np.einsum(subscripts, *a, optimize=True)
                return np.sum(y) if summed else y

            def ours(*a):
                y = np.einsum(subscripts, *a)
                return np.sum(y) if summed else y

            jitted = gradc.jit(ours)
            np.testing.assert_allclose(jitted(*args), ref(*args), rtol=1e-3, atol=1e-2)
            g, n = best_ms(jitted, args, calls), best_ms(ref, args, calls)
            what = "summed  " if summed else "returned"
            print(f"{subscripts:18s} {what} gradc {g:8.3f} ms  NumPy {n:8.3f} ms  "
                  f"ratio {g / n:5.2f}")


if __name__ == "__main__":
    main()
