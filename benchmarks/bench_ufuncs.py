"""The elementwise math ufuncs of issue 13: gradc.jit(lambda x: np.f(x)) against np.f itself.

For each function, 1,000,000 elements in float32 and in float64 (binary functions take two such
arrays), the median of 15 timed calls of each side, at default threads; prints the times and
the ratio gradc / NumPy (below 1: gradc is faster), and that of gradc's kernel alone (the call
less copying its result into the fresh array it returns). Inputs lie in each function's domain, so
that neither side takes a slow NaN path. gradc's first call (the compile) is not timed.

    python3 benchmarks/bench_ufuncs.py [--n N] [--repeats R] [--only tan,hypot]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

import gradc  # noqa: E402

# name: (function, number of inputs, low, high) - inputs uniform in [low, high)
FUNCTIONS = {
    "exp": (np.exp, 1, -10, 10),
    "exp_masked": (np.exp, 1, -1e30, -1e9),  # a mask's exp(-1e9) or exp(-inf): 0
    "tan": (np.tan, 1, -1.5, 1.5), "sinh": (np.sinh, 1, -5, 5), "cosh": (np.cosh, 1, -5, 5),
    "arcsin": (np.arcsin, 1, -1, 1), "arccos": (np.arccos, 1, -1, 1),
    "arctan2": (np.arctan2, 2, -3, 3), "arcsinh": (np.arcsinh, 1, -10, 10),
    "arccosh": (np.arccosh, 1, 1, 10), "arctanh": (np.arctanh, 1, -0.99, 0.99),
    "hypot": (np.hypot, 2, -10, 10), "log2": (np.log2, 1, 0.01, 100),
    "log10": (np.log10, 1, 0.01, 100), "exp2": (np.exp2, 1, -10, 10),
    "logaddexp": (np.logaddexp, 2, -10, 10), "logaddexp2": (np.logaddexp2, 2, -10, 10),
    "sinc": (np.sinc, 1, -5, 5), "cbrt": (np.cbrt, 1, -100, 100), "fabs": (np.fabs, 1, -5, 5),
    "deg2rad": (np.deg2rad, 1, -360, 360), "rad2deg": (np.rad2deg, 1, -6, 6),
    "float_power": (np.float_power, 2, 0.1, 3), "copysign": (np.copysign, 2, -5, 5),
    "heaviside": (np.heaviside, 2, -1, 1), "isnan": (np.isnan, 1, -5, 5),
    "isinf": (np.isinf, 1, -5, 5), "isfinite": (np.isfinite, 1, -5, 5),
    "trunc": (np.trunc, 1, -50, 50), "rint": (np.rint, 1, -50, 50),
    "fmod": (np.fmod, 2, 0.5, 20), "signbit": (np.signbit, 1, -5, 5),
    "conjugate": (np.conjugate, 1, -5, 5), "nan_to_num": (np.nan_to_num, 1, -5, 5),
}


def median_time(call, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(name, dtype, n, repeats):
    f, nin, lo, hi = FUNCTIONS[name]
    rng = np.random.default_rng(0)
    args = [rng.uniform(lo, hi, n).astype(dtype) for _ in range(nin)]
    compiled = gradc.jit(lambda *a: f(*a))
    got = compiled(*args)  # compiles
    with np.errstate(all="ignore"):
        want = f(*args)
    assert np.asarray(got).dtype == want.dtype, name
    if want.dtype != np.bool_:
        single = dtype == np.float32  # (libmvec: within 4 ulp)
        np.testing.assert_allclose(got, want, rtol=1e-5 if single else 1e-12,
                                   atol=1e-6 if single else 1e-14, err_msg=name)
    t_gradc = median_time(lambda: compiled(*args), repeats)
    # the kernel alone: without the copy of the result out of gradc's buffers into the fresh
    # array that the call returns (NumPy writes its result into the fresh array directly)
    c = compiled.compiled_for(*args)
    t_kernel = median_time(lambda: c.driver(c.handle), repeats)
    with np.errstate(all="ignore"):
        t_numpy = median_time(lambda: f(*args), repeats)
    return t_gradc, t_kernel, t_numpy


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--only", default="", help="comma-separated names")
    opts = parser.parse_args()
    names = [n for n in opts.only.split(",") if n] or list(FUNCTIONS)
    print(f"{opts.n:,} elements, median of {opts.repeats} calls; ratio = gradc / NumPy; "
          "kernel: gradc's kernel alone, without copying the result out")
    head = "{0} gradc  {0} kernel  {0} numpy  ratio  kernel"
    print(f"{'function':12s} " + "   ".join(head.format(d) for d in ("f32", "f64")))
    for name in names:
        cells = []
        for dtype in (np.float32, np.float64):
            t_gradc, t_kernel, t_numpy = bench(name, dtype, opts.n, opts.repeats)
            cells.append(f"{t_gradc * 1e3:7.2f}ms {t_kernel * 1e3:8.2f}ms {t_numpy * 1e3:7.2f}ms "
                         f"{t_gradc / t_numpy:6.2f} {t_kernel / t_numpy:6.2f}")
        print(f"{name:12s} " + "   ".join(cells), flush=True)


if __name__ == "__main__":
    main()
