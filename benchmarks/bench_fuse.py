"""W3: a fused elementwise forward+backward, gradc against NumPy written by hand.

    loss(x, w, b) = sum(tanh(x*w + b)**2 * sigmoid(x*w) + 0.5*exp(-abs(b)))

over 1,000,000 float32 elements; value and gradients with respect to w and b. NumPy runs the
forward and the hand-derived backward one array operation at a time (each a pass over memory
and a temporary); gradc fuses them into a few loops over fixed buffers.

Also times the cold compile of the moons MLP's ``value_and_grad`` (examples/moons_mlp.py) in a
fresh subprocess with an empty ``GRADC_CACHE_DIR``, then in a second fresh subprocess with the
same directory (warm disk cache).

    python3 benchmarks/bench_fuse.py [--n N] [--rounds R] [--calls C] [--no-moons]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# A cold first call must really be cold: unless the caller chose a cache directory, use an
# empty temporary one (set before gradc is imported).
_TMP_CACHE = None
if "GRADC_CACHE_DIR" not in os.environ:
    _TMP_CACHE = tempfile.mkdtemp(prefix="gradc-bench-")
    os.environ["GRADC_CACHE_DIR"] = _TMP_CACHE

import numpy as np  # noqa: E402

import gradc  # noqa: E402


# --------------------------------------------------------------------------------------------
# W3 in gradc


def loss(x, w, b):
    return np.sum(np.tanh(x * w + b) ** 2 * gradc.nn.sigmoid(x * w) + 0.5 * np.exp(-np.abs(b)))


# --------------------------------------------------------------------------------------------
# W3 by hand in NumPy
#
#   u = x*w, t = tanh(u + b), s = sigmoid(u), e = exp(-|b|)
#   L = sum(t^2 s + e/2)
#   dL/du = 2 t s (1 - t^2) + t^2 s (1 - s)        (through t, and through s)
#   dL/dw = x * dL/du
#   dL/db = 2 t s (1 - t^2) - e/2 * sign(b)


def numpy_value_and_grad(x, w, b):
    u = x * w
    t = np.tanh(u + b)
    s = 1.0 / (1.0 + np.exp(-u))
    e = np.exp(-np.abs(b))
    t2 = t * t
    value = np.sum(t2 * s + 0.5 * e)
    dt = 2.0 * t * s * (1.0 - t2)   # dL/d(u+b)
    du = dt + t2 * s * (1.0 - s)
    gw = x * du
    gb = dt - 0.5 * e * np.sign(b)
    return value, (gw, gb)


# --------------------------------------------------------------------------------------------
# Timing helpers


def _time_call(fn, *args):
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def _fmt_s(s):
    if s >= 1.0:
        return f"{s:8.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:8.2f} ms"
    return f"{s * 1e6:8.1f} us"


def _table(title, header, rows):
    """Print a Markdown table (so it can be pasted into the README as it is)."""
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]

    def fmt(cells):
        return "| " + " | ".join(str(c).rjust(w) if i else str(c).ljust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    print(f"\n{title}\n")
    print(fmt(header))
    print("|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":"
                         for i, w in enumerate(widths)) + "|")
    for r in rows:
        print(fmt(r))
    print()


def _blas_info():
    """A one-line summary of numpy's BLAS and its thread count."""
    try:
        from threadpoolctl import threadpool_info

        parts = [f"{p.get('internal_api')} {p.get('version')} ({p.get('num_threads')} threads)"
                 for p in threadpool_info() if p.get("user_api") == "blas"]
        if parts:
            return ", ".join(parts)
    except Exception:  # threadpoolctl is optional (`pip install -e .[bench]`)
        pass
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        return f"{blas.get('name', '?')} {blas.get('version', '')} (threads: see OPENBLAS_NUM_THREADS)"
    except Exception:
        return "unknown"


# --------------------------------------------------------------------------------------------
# W3


def bench_w3(n, rounds, calls):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(n).astype(np.float32)
    w = rng.standard_normal(n).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)

    vg = gradc.value_and_grad(loss, argnums=(1, 2))

    t0 = time.perf_counter()
    v_g, (gw_g, gb_g) = vg(x, w, b)
    cold_s = time.perf_counter() - t0
    v_n, (gw_n, gb_n) = numpy_value_and_grad(x, w, b)
    numpy_first_s = _time_call(numpy_value_and_grad, x, w, b)

    # Agreement before timing: value to rtol 1e-3, gradients elementwise.
    np.testing.assert_allclose(float(v_g), float(v_n), rtol=1e-3, err_msg="value")
    np.testing.assert_allclose(gw_g, gw_n, rtol=1e-3, atol=1e-5, err_msg="grad w")
    np.testing.assert_allclose(gb_g, gb_n, rtol=1e-3, atol=1e-5, err_msg="grad b")
    for name, arr in (("x", x), ("w", w), ("b", b)):
        assert arr.dtype == np.float32, name

    # Warm: alternate the two systems round by round so drift (turbo, other load) hits both.
    times = {"gradc": [], "numpy": []}
    for _ in range(rounds):
        for name, fn in (("gradc", vg), ("numpy", numpy_value_and_grad)):
            for _ in range(calls):
                times[name].append(_time_call(fn, x, w, b))

    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    bytes_moved = 5 * n * 4  # read x, w, b; write grad w, grad b
    rows = [
        ["gradc", _fmt_s(cold_s), _fmt_s(med["gradc"]), _fmt_s(best["gradc"]),
         f"{bytes_moved / best['gradc'] / 1e9:6.2f}"],
        ["numpy (by hand)", _fmt_s(numpy_first_s), _fmt_s(med["numpy"]), _fmt_s(best["numpy"]),
         f"{bytes_moved / best['numpy'] / 1e9:6.2f}"],
    ]
    _table(f"W3: value and grad (w, b) of sum(tanh(x*w+b)**2 * sigmoid(x*w) + 0.5*exp(-|b|)), "
           f"n = {n:,} float32, {rounds} rounds x {calls} calls",
           ["system", "first call", "median", "min", "GB/s (min, 5 arrays)"], rows)
    print(f"speed-up numpy/gradc: median {med['numpy'] / med['gradc']:.2f}x, "
          f"min {best['numpy'] / best['gradc']:.2f}x  (gradc first call includes trace + compile)")
    return {"cold_s": cold_s, "median": med, "min": best,
            "ratio_median": med["numpy"] / med["gradc"], "ratio_min": best["numpy"] / best["gradc"]}


# --------------------------------------------------------------------------------------------
# Cold compile of the moons MLP in fresh processes

_MOONS_CHILD = textwrap.dedent(
    """
    import json, sys, time
    t0 = time.perf_counter()
    import numpy as np
    import gradc
    import_s = time.perf_counter() - t0
    sys.path.insert(0, {examples!r})
    import moons_mlp
    x, y = moons_mlp.make_moons(100, noise=0.1, seed=1337)
    params = moons_mlp.init_params(0)
    vg = gradc.value_and_grad(moons_mlp.loss)
    t0 = time.perf_counter()
    vg(params, x, y)
    first_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    n = 200
    for _ in range(n):
        vg(params, x, y)
    step_s = (time.perf_counter() - t0) / n
    print("RESULT " + json.dumps({{"import_s": import_s, "first_s": first_s, "step_s": step_s}}))
    """
)


def bench_moons_compile():
    cache = tempfile.mkdtemp(prefix="gradc-bench-moons-")
    code = _MOONS_CHILD.format(examples=str(ROOT / "examples"))
    env = dict(os.environ, GRADC_CACHE_DIR=cache)
    env.pop("GRADC_LOG", None)
    results = []
    try:
        for label in ("cold (empty GRADC_CACHE_DIR)", "warm disk cache (same dir, new process)"):
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=str(ROOT),
                                  capture_output=True, text=True, timeout=1800)
            wall_s = time.perf_counter() - t0
            if proc.returncode != 0:
                print(f"\nmoons subprocess failed ({label}):\n{proc.stdout}\n{proc.stderr}",
                      file=sys.stderr)
                return None
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
            r = json.loads(line[len("RESULT "):])
            r["wall_s"] = wall_s
            r["label"] = label
            results.append(r)
        n_files = sum(1 for p in Path(cache).rglob("*") if p.is_file())
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    rows = [[r["label"], _fmt_s(r["import_s"]), _fmt_s(r["first_s"]), _fmt_s(r["step_s"]),
             _fmt_s(r["wall_s"])] for r in results]
    _table("moons MLP (2-16-16-1, 100 points): gradc.value_and_grad in a fresh process",
           ["run", "import numpy+gradc", "first call", "warm step", "process wall"], rows)
    print(f"cache entries written: {n_files} files")
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="elements (default 1,000,000)")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds (default 7)")
    parser.add_argument("--calls", type=int, default=5, help="calls per round (default 5)")
    parser.add_argument("--no-moons", action="store_true", help="skip the moons compile timing")
    args = parser.parse_args(argv)

    import numba

    print(f"python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}, "
          f"gradc {getattr(gradc, '__version__', '?')}")
    print(f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, "
          f"numba threads {numba.get_num_threads()}")
    print(f"numpy BLAS: {_blas_info()}")
    print(f"GRADC_CACHE_DIR={os.environ.get('GRADC_CACHE_DIR')}"
          + (" (temporary, empty)" if _TMP_CACHE else ""))

    try:
        bench_w3(args.n, args.rounds, args.calls)
        if not args.no_moons:
            bench_moons_compile()
    finally:
        if _TMP_CACHE:
            shutil.rmtree(_TMP_CACHE, ignore_errors=True)


if __name__ == "__main__":
    main()
