"""gradc's benchmark suite: training-step workloads, gradc side by side with NumPy written by
hand and, where installed, PyTorch eager, torch.compile and jax.jit.

    python3 benchmarks/run.py                  # everything (roughly 40-60 minutes on 2 cores)
    python3 benchmarks/run.py --quick          # smoke test: W1 and W3, few repetitions
    python3 benchmarks/run.py --only W2,W3     # some workloads (names or keys: mlp, fuse, ...)
    python3 benchmarks/run.py --threads 2      # BLAS/OpenMP/Numba/XLA threads (default 1)

One step = forward + backward + SGD update of every parameter, float32, returning the loss as a
Python float (see benchmarks/workloads.py for the workloads and benchmarks/systems.py for how
each system runs them). For every workload the runner

1. checks that every system computes the same loss and the same update from the same start
   (as NumPy by hand, or as the first peer present where a workload has no NumPy by hand);
2. in fresh processes, times the first step with empty caches (cold: the compile) and with warm
   caches (warm start: from after `import numba` to the end of the first step, including the
   import of gradc / torch / jax), and parses gradc's per-phase compile times from
   GRADC_LOG=compiles;
3. in this process, times the steps of all systems alternately (rotating the order each
   round, after warm-up), reporting the median and the minimum over all timed steps and the
   ratio of each system's time to gradc's (above 1: gradc is faster);
4. reports a roofline (max(FLOPs / SGEMM rate, compulsory bytes / memory bandwidth), both
   measured at the start of the run; the SGEMM rate is the faster of NumPy's BLAS and gradc's
   own product), the memory each system needs for a step, and where
   gradc's step time goes, kernel by kernel.

Then, in one fresh process that is not pinned and sets no thread counts (every library at its
own default), it times all workloads again (the default-thread table, with issue 15's targets:
gradc at most 0.5x the fastest peer, or 1.15x the roofline where that is above it), and again
while another process multiplies matrices with NumPy's default threads on every CPU (the
contention table: each system's loaded / idle step time, each system in a process of its own,
as its users run it).

Output is Markdown (tables and notes), so it can be saved as it is (benchmarks/RESULTS.md).
Peers that are not installed are reported as "absent". Threads are set explicitly: with
threadpoolctl (pip install -e ".[bench]") in this process, with environment variables
(OMP/OPENBLAS/MKL/NUMBA_NUM_THREADS, XLA_FLAGS) in the child processes; torch.set_num_threads
and numba.set_num_threads here.
"""
from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
QUICK_SUBSET = ("W1", "W3")


def pin_cpus(threads):
    """Pin this process (so every thread it starts later, and its child processes) to `threads`
    CPUs, the last ones it may run on. Libraries that size their own pools from the CPUs they may
    use (XLA does) then cannot use more than their share. Returns the CPUs, or None."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if threads >= len(cpus):
        return None
    chosen = cpus[-threads:]
    os.sched_setaffinity(0, chosen)
    return chosen


def thread_env(threads):
    """Environment variables that fix the thread count of every library we load."""
    return {
        "OMP_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "NUMBA_NUM_THREADS": str(threads),
        "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen="
                      + ("false" if threads == 1 else "true")
                      + f" intra_op_parallelism_threads={threads}").strip(),
    }


# =============================================================================================
# Child process: one system's first step in a fresh process


def child_main(system, wname, threads):
    """Time one system's first step in this fresh process and print `RESULT {json}`.

    start_s is measured from after `import numpy, numba` to the end of the first step: the
    import of the system (gradc, torch or jax), building its step function, and the first call
    (which compiles, or loads from the caches named in the environment). Making the data is not
    counted.
    """
    import numba  # noqa: F401  (the clock starts after this)
    import numpy as np  # noqa: F401

    sys.path.insert(0, str(HERE))
    if system != "gradc":  # workloads imports gradc; that is not a peer's cost
        import gradc  # noqa: F401
    pc = time.perf_counter
    t0 = pc()
    import gradc  # noqa: F401,F811  (for gradc: this import is part of its start)
    import systems
    import workloads
    if system != "gradc":
        why = systems.available(system)  # imports torch / jax
        if why:
            print("RESULT " + json.dumps({"absent": why}))
            return
    if system.startswith("torch"):
        import torch
        torch.set_num_threads(threads)
    if system == "jax":
        import jax
        cache = os.environ.get("BENCH_JAX_CACHE")
        if cache:
            jax.config.update("jax_compilation_cache_dir", cache)
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
            jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    import_s = pc() - t0
    w = workloads.get(wname)
    params, batch = w.init(0)
    t1 = pc()
    runner = systems.make(system, w, params, batch)
    build_s = pc() - t1
    t1 = pc()
    loss = runner.step()
    first_s = pc() - t1
    t1 = pc()
    runner.step()
    second_s = pc() - t1
    print("RESULT " + json.dumps({"import_s": import_s, "build_s": build_s, "first_s": first_s,
                                  "second_s": second_s, "start_s": import_s + build_s + first_s,
                                  "loss": loss}), flush=True)


_LOG_FIELDS = ("trace", "passes", "codegen", "program cache", "cached program", "llvm",
               "numba")  # (llvm: the direct loop kernels)


def parse_compile_log(text):
    """Per-phase milliseconds summed over GRADC_LOG=compiles lines, and the kernel count."""
    phases = {k: 0.0 for k in _LOG_FIELDS}
    kernels, n = 0, 0
    for line in text.splitlines():
        if "gradc: compiled" not in line:
            continue
        n += 1
        for k in _LOG_FIELDS:
            m = re.search(rf"\b{k} (\d+(?:\.\d+)?) ms", line)
            if m:
                phases[k] += float(m.group(1)) / 1e3
        m = re.search(r"(\d+) kernels", line)
        if m:
            kernels += int(m.group(1))
    return (phases, kernels) if n else (None, None)


def run_child(system, wname, threads, env_extra, timeout):
    env = dict(os.environ)
    env.update(thread_env(threads))
    env.update(env_extra)
    env.pop("GRADC_LOG", None)
    if system == "gradc":
        env["GRADC_LOG"] = "compiles"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", system, wname,
           "--threads", str(threads)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, cwd=str(ROOT), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": f"exit {proc.returncode}: {tail[:200]}"}
    r = json.loads(lines[-1][len("RESULT "):])
    r["wall_s"] = wall
    if system == "gradc":
        r["phases"], r["kernels"] = parse_compile_log(proc.stderr)
    return r


# =============================================================================================
# Formatting


class Out:
    """Print and keep the text (for --output)."""

    def __init__(self):
        self.lines = []

    def __call__(self, text=""):
        print(text, flush=True)
        self.lines.append(text)

    def table(self, header, rows, align=None):
        rows = [[str(c) for c in r] for r in rows]
        widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
        align = align or ["l"] + ["r"] * (len(header) - 1)

        def fmt(cells):
            return "| " + " | ".join(c.ljust(w) if a == "l" else c.rjust(w)
                                     for c, w, a in zip(cells, widths, align)) + " |"

        self(fmt([str(h) for h in header]))
        self("|" + "|".join("-" * (w + 2) if a == "l" else "-" * (w + 1) + ":"
                            for w, a in zip(widths, align)) + "|")
        for r in rows:
            self(fmt(r))
        self()


def fmt_t(s):
    if s is None:
        return "n/a"
    if s >= 1.0:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms" if s < 0.1 else f"{s * 1e3:.0f} ms"
    return f"{s * 1e6:.3g} µs"


def fmt_b(n):
    if n is None:
        return "n/a"
    if n >= 2 ** 20:
        return f"{n / 2 ** 20:.2f} MiB"
    if n >= 2 ** 10:
        return f"{n / 2 ** 10:.1f} KiB"
    return f"{n} B"


def fmt_ratio(x):
    if x < 0.01:
        return f"{x:.1g}×"
    return f"{x:.2f}×" if x < 10 else f"{x:.1f}×"


# =============================================================================================
# Machine, libraries, threads


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        fields = dict(ln.split(":", 1) for ln in out.splitlines() if ":" in ln)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        return (f"{fields.get('Model name', '?')}, {fields.get('CPU(s)', '?')} CPUs "
                f"({fields.get('Core(s) per socket', '?')} cores per socket, "
                f"{fields.get('Thread(s) per core', '?')} thread per core), "
                f"L2 {fields.get('L2 cache', '?')}, L3 {fields.get('L3 cache', '?')}")
    except OSError:
        return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"


def git_describe():
    """' (git abc1234)' for the checkout gradc was imported from, noting uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "gradc"], cwd=ROOT,
                               text=True, capture_output=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    if not head:
        return ""
    return f" (git {head}{', with uncommitted changes in gradc/' if dirty else ''})"


def owner_of(path):
    p = path.replace("\\", "/")
    if p.startswith(("/usr/lib", "/lib")):
        return "system (numba's omp layer)" if "gomp" in p else "system"
    for name in ("numpy", "scipy", "torch", "jaxlib", "jax", "numba", "sklearn"):
        if f"/{name}.libs/" in p or f"/{name}/" in p or f"/{name}_" in p:
            return name
    return "?"


def library_report(out, threads, have):
    """Which BLAS/OpenMP libraries each package loaded, and their thread counts."""
    rows = []
    try:
        from threadpoolctl import threadpool_info
        for p in threadpool_info():
            kernels = f" ({p['architecture']} kernels)" if p.get("architecture") else ""
            rows.append([owner_of(p.get("filepath", "")), p.get("user_api"),
                         f"{p.get('internal_api')} {p.get('version') or ''}".strip() + kernels,
                         p.get("num_threads"), Path(p.get("filepath", "")).name])
    except ImportError:
        out("threadpoolctl is not installed (pip install -e \".[bench]\"): thread counts were "
            "set through environment variables only, and the loaded libraries are not listed.")
    if "torch" in have:
        import torch
        cfg = torch.__config__.show()
        m = re.search(r"Intel\(R\) oneAPI Math Kernel Library Version ([\w.\-]+)", cfg)
        rows.append(["torch", "blas", f"MKL {m.group(1) if m else '?'} (linked into libtorch)",
                     torch.get_num_threads(), "torch.get_num_threads()"])
    if "jax" in have:
        rows.append(["jax", "-", "XLA:CPU (own GEMM/Eigen kernels, no BLAS library)", threads,
                     "XLA_FLAGS"])
    import numba
    rows.append(["numba", "-", f"threading layer {_numba_layer()}", numba.get_num_threads(),
                 "numba.get_num_threads()"])
    if rows:
        out.table(["loaded by", "api", "library", "threads", "file / knob"], rows,
                  ["l", "l", "l", "r", "l"])
    from gradc.codegen import rt
    gradc_blas = ("NumPy's own OpenBLAS (the numpy row above), called from the kernels by symbol"
                  if rt.BLAS == "openblas" else
                  "`np.dot` inside Numba, which calls the BLAS of `scipy.linalg.cython_blas`")
    if rt.GEMM == "avx512":
        gradc_blas = ("gradc's own AVX-512 product (gradc/codegen/gemm_rt.py; matrix-vector "
                      "products: " + gradc_blas + ")")
    out(f"gradc's matmul kernels call {gradc_blas}; NumPy by hand uses NumPy's own OpenBLAS; "
        "torch uses MKL/oneDNN; XLA its own kernels.")
    # OpenBLAS picks its kernels by the CPU unless told: a forced older kind (some machines set
    # one for old OpenBLAS builds) halves NumPy's and gradc's products on an AVX-512 CPU
    forced = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
    if forced:
        out("OpenBLAS's kernels are set by the environment, not chosen for this CPU: "
            + ", ".join(f"{k}={v}" for k, v in forced.items())
            + " (to measure what OpenBLAS picks itself, run with both unset).")
    out()


def _numba_layer():
    import numba
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        return f"not started yet (config {numba.config.THREADING_LAYER})"


# =============================================================================================
# Calibration: SGEMM rate and memory bandwidth


def calibrate(out, quick, threads):
    """SGEMM rate (NumPy float32 matmul 1024³, 1 and `threads` threads; at `threads`, gradc.jit's
    product where faster) and memory bandwidth (a large
    copy and add). Each is the best of several repetitions; single-threaded, also by process CPU
    time, which leaves out time spent waiting for a CPU held by other work (the higher of the
    two rates is the one used: a roofline is a lower bound)."""
    import numpy as np
    reps = 5 if quick else 15
    a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    b = a.copy()
    c = np.empty_like(a)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    rows, sgemm = [], {}
    flops = 2 * 1024 ** 3
    for nt in sorted({1, threads}):
        if threadpool_limits is None and nt != 1:
            continue
        ctx = threadpool_limits(limits=nt, user_api="blas") if threadpool_limits else _null()
        with ctx:
            np.matmul(a, b, out=c)
            wall, cpu = _best(lambda: np.matmul(a, b, out=c), reps)
        sgemm[nt] = max(flops / wall, flops / cpu) if nt == 1 else flops / wall
        rows.append([f"SGEMM 1024³ float32, {nt} thread{'s' if nt > 1 else ''}",
                     f"{flops / wall / 1e9:.1f} GFLOP/s",
                     f"{flops / cpu / 1e9:.1f} GFLOP/s" if nt == 1 else "",
                     f"{sgemm[nt] / 1e9:.1f} GFLOP/s"])
    # gradc's own product (where the CPU has AVX-512) may outrun NumPy's BLAS: the roofline
    # takes the faster of the two (this process is pinned to `threads` CPUs: so is gradc)
    wall, cpu = _best(_gradc_product(a, b), reps)
    rows.append([f"SGEMM 1024³ float32, gradc.jit (its products: {_gradc_gemm()})",
                 f"{flops / wall / 1e9:.1f} GFLOP/s", f"{flops / cpu / 1e9:.1f} GFLOP/s",
                 ""])
    sgemm[threads] = max(sgemm.get(threads, 0.0), flops / wall)
    n = 2 ** 25  # 128 MiB per array, 4x the L3 of most machines
    x = np.ones(n, np.float32)
    y = np.ones(n, np.float32)
    z = np.empty(n, np.float32)
    np.copyto(z, x)
    bws = []
    for label, nbytes, fn in (
            ("copy 128 MiB float32 (read + write)", 2 * x.nbytes, lambda: np.copyto(z, x)),
            ("add 2 x 128 MiB -> 128 MiB (2 reads + 1 write)", 3 * x.nbytes,
             lambda: np.add(x, y, out=z))):
        wall, cpu = _best(fn, max(3, reps // 2))
        bws.append(max(nbytes / wall, nbytes / cpu))
        rows.append([label, f"{nbytes / wall / 1e9:.1f} GB/s", f"{nbytes / cpu / 1e9:.1f} GB/s",
                     f"{bws[-1] / 1e9:.1f} GB/s"])
    out("## Machine rates (measured now: NumPy, and gradc's own product)")
    out()
    out.table(["measure", "by wall time", "by CPU time", "used"], rows)
    return {"sgemm": sgemm, "bandwidth": max(bws)}


def _gradc_product(a, b):
    """A call of gradc.jit's a @ b (compiled first)."""
    import gradc
    product = gradc.jit(lambda x, y: x @ y)
    product(a, b)
    return lambda: product(a, b)


def _gradc_gemm():
    from gradc.codegen import rt
    return "its own AVX-512 kernels" if rt.GEMM == "avx512" else "NumPy's OpenBLAS"


def _best(fn, reps):
    """Minimum wall time and minimum process CPU time of `fn` over `reps` calls."""
    walls, cpus = [], []
    for _ in range(reps):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return min(walls), max(min(cpus), 1e-9)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


# =============================================================================================
# In-process timing


def agreement(ref, params0, runner):
    """Relative error of `runner`'s first loss and first update against the reference's."""
    import numpy as np
    loss_ref, upd_ref = ref
    loss_err = abs(runner.first_loss - loss_ref) / max(abs(loss_ref), 1e-30)
    upd_err = 0.0
    for k, p0 in params0.items():
        d = np.asarray(runner.first_params[k], np.float64) - p0
        dr = upd_ref[k]
        upd_err = max(upd_err, float(np.linalg.norm(d - dr) / max(np.linalg.norm(dr), 1e-30)))
    return loss_err, upd_err


def time_alternating(runners, rounds, target_s, warm_s):
    """Warm up each runner, then `rounds` rounds; each round runs every system in turn (the
    order rotates), `calls[system]` steps each, timed one by one."""
    pc = time.perf_counter
    calls = {}
    for name, r in runners.items():
        ts = []
        t_end = pc() + warm_s
        while len(ts) < 5 or (pc() < t_end and len(ts) < 500):
            t0 = pc()
            r.step()
            ts.append(pc() - t0)
        calls[name] = max(1, min(5000, int(target_s / statistics.median(ts))))
    samples = {name: [] for name in runners}
    cpu = {name: 0.0 for name in runners}
    wall = {name: 0.0 for name in runners}
    cpu_step = {name: [] for name in runners}  # per round: CPU time ÷ steps
    last = {}
    names = list(runners)
    gc.collect()
    gc.disable()
    try:
        for i in range(rounds):
            order = names[i % len(names):] + names[:i % len(names)]
            for name in order:
                r, s = runners[name], samples[name]
                c0, w0 = time.process_time(), pc()
                for _ in range(calls[name]):
                    t0 = pc()
                    last[name] = r.step()
                    s.append(pc() - t0)
                c1, w1 = time.process_time(), pc()
                cpu[name] += c1 - c0
                wall[name] += w1 - w0
                cpu_step[name].append((c1 - c0) / calls[name])
            gc.collect()
    finally:
        gc.enable()
    return {name: _summary(s, cpu[name], wall[name], cpu_step[name], calls[name], last.get(name))
            for name, s in samples.items()}


def _summary(s, cpu, wall, cpu_steps, calls, last_loss):
    """One runner's timing: its steps' times `s`, CPU and wall time over them, CPU time per
    step of each round, steps per round, the last loss."""
    return {"median": statistics.median(s), "min": min(s), "n": len(s),
            "q1": statistics.quantiles(s, n=4)[0] if len(s) > 1 else s[0],
            "q3": statistics.quantiles(s, n=4)[2] if len(s) > 1 else s[0],
            "cpu_per_wall": cpu / wall if wall else None,
            "cpu_median": statistics.median(cpu_steps), "calls_per_round": calls,
            "last_loss": last_loss}


# =============================================================================================
# Default threads and contention: a second timing pass in a fresh process

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMBA_NUM_THREADS")

LOADER_SOURCE = """\
import os
import numpy as np
parent = os.getppid()
a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
c = a @ a
print("ready", flush=True)
while os.getppid() == parent:  # ends with the process that started it, if not stopped first
    np.matmul(a, a, out=c)
"""


class Loader:
    """Another multi-threaded process loading the machine for the length of a `with` block:
    NumPy float32 1024³ products in a loop, at NumPy's default threads, on every CPU."""

    def __init__(self, env):
        self.env = env
        self.proc = None

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", LOADER_SOURCE], env=self.env,
                                     stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            self.__exit__()
            raise RuntimeError(f"the load process exited with {self.proc.returncode}")
        return self

    def pause(self, paused):
        """Stop (SIGSTOP) or continue (SIGCONT) the load, and let the scheduler see it."""
        self.proc.send_signal(signal.SIGSTOP if paused else signal.SIGCONT)
        time.sleep(0.05)

    def __exit__(self, *exc):
        self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        _reap(self.proc, timeout=10)
        return False


def _reap(proc, timeout):
    """Wait for a child process to end (killed after `timeout` s) and close its output."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.stdout.close()


def default_thread_env(orig_env):
    """The environment the user started us with, less the thread-count variables: every library
    then picks its own thread count (XLA_FLAGS is the user's, as it was)."""
    env = {k: v for k, v in orig_env.items() if k not in THREAD_VARIABLES}
    env.pop("GRADC_LOG", None)
    return env


def run_timing_pass(spec, env, timeout, flag="--timing-pass"):
    """Run timing_pass_main (or, with flag "--contention-pass", contention_pass_main) in a
    fresh process (its progress goes to our stderr); its results, or {"error": why}."""
    cmd = [sys.executable, str(Path(__file__).resolve()), flag, json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, env=env, cwd=str(ROOT), stdout=subprocess.PIPE, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"error": f"exit {proc.returncode} (its error is above, on stderr)"}
    return json.loads(lines[-1][len("RESULT "):])


# Each round of the default-thread pass starts this long after the round before it ended: the
# process before may leave threads spinning (OpenBLAS's workers wait for work for ~0.1 s before
# they sleep), and a round started at once shared the cores with them (W8: gradc's first fifth
# of a round 3.96 ms a step, its last 2.51; with 0.3 s between rounds 2.57 and 2.46; PyTorch's
# nn.LSTM 3.68 / 3.48 and 3.60 / 3.26). A user's process has the machine to itself.
SETTLE_S = 0.25


def timing_pass_main(spec):
    """The default-thread pass, in a fresh process started by main() so that every library sizes
    its own thread pool: no pinning (the CPUs main() started with) and no thread settings. Each
    system runs in a process of its own (round_server_main), as its users run it: in one
    process, the other libraries' thread pools took the cores from it (PyTorch's OpenMP threads
    spin after each of its steps; W5's gradc step took 908 us beside them, 591 us alone). The
    processes take rounds in turn, as time_alternating's systems do, so all are measured side
    by side in time, each round SETTLE_S after the one before. Prints `RESULT {json}`."""
    if spec["cpus"] and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, spec["cpus"])
    sys.path.insert(0, str(HERE))
    import systems
    status = {s: (systems.available(s) if s in spec["systems"] else "not selected (--systems)")
              for s in systems.SYSTEMS}
    rates = default_thread_rates()
    servers = {s: RoundServer(dict(spec, system=s)) for s in systems.SYSTEMS if status[s] is None}
    results = {}
    try:
        for name in spec["workloads"]:
            print(f"default threads: {name}", file=sys.stderr, flush=True)
            res = {"status": dict(status), "notes": [], "idle": {}}
            for s in list(servers):
                try:
                    got = servers[s].ask({"workload": name})
                except RuntimeError as e:
                    res["status"][s] = f"failed: {e}"
                    del servers[s]
                    continue
                res["status"].update(got["status"])
                res["notes"] += got["notes"]
            order = list(servers)
            samples = {}
            for i in range(spec["rounds"]):
                for s in order[i % len(order):] + order[:i % len(order)]:
                    time.sleep(SETTLE_S)
                    for runner, got in servers[s].ask({"round": i}).items():
                        samples.setdefault(runner, []).append(got)
            for runner, rounds in samples.items():  # (each round: its steps' times...)
                res["idle"][runner] = dict(_summary(
                    [t for r in rounds for t in r["times"]], sum(r["cpu"] for r in rounds),
                    sum(r["wall"] for r in rounds), [r["cpu"] / len(r["times"]) for r in rounds],
                    len(rounds[0]["times"]), rounds[-1]["loss"]), agree=rounds[-1]["agree"])
            results[name] = res
    finally:
        for server in servers.values():
            server.close()
    print("RESULT " + json.dumps({"rates": rates, "threads": default_thread_counts(status),
                                  "results": results}, default=str), flush=True)
    return 0


class RoundServer:
    """One system's process for the default-thread pass (round_server_main): a JSON request
    per line on its stdin, a JSON answer per line on its stdout."""

    def __init__(self, spec):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--round-server", json.dumps(spec)]
        self.system = spec["system"]
        self.proc = subprocess.Popen(cmd, cwd=str(ROOT), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def ask(self, request):
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"the {self.system} process exited with "
                                   f"{self.proc.wait()} (its error is above, on stderr)")
            if line.startswith("ANSWER "):
                return json.loads(line[len("ANSWER "):])

    def close(self):
        self.proc.stdin.close()  # (its loop over stdin ends)
        _reap(self.proc, timeout=60)


def round_server_main(spec):
    """One system's side of the default-thread pass, in a process of its own (not pinned,
    default threads): for {"workload": name}, build its runners (and NumPy by hand's, to check
    the first step against) and warm them up; for {"round": i}, run each of its runners for
    about spec["round_s"], timing every step. Answers are `ANSWER {json}` lines."""
    if spec["cpus"] and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, spec["cpus"])
    sys.path.insert(0, str(HERE))
    import systems
    import workloads
    session, system = Path(spec["session"]), spec["system"]
    status = {s: (systems.available(s) if s in (system, "numpy") else "another process")
              for s in systems.SYSTEMS}
    if system.startswith("torch"):
        quiet_torch()
    if system == "jax" and status["jax"] is None:
        import jax
        jax.config.update("jax_compilation_cache_dir", str(session / "jax-default-threads"))
    pc = time.perf_counter
    mine, calls = {}, {}

    def answer(value):
        print("ANSWER " + json.dumps(value, default=str), flush=True)

    for line in sys.stdin:
        request = json.loads(line)
        if "workload" in request:
            mine.clear()
            gc.collect()
            w = workloads.get(request["workload"])
            os.environ["GRADC_CACHE_DIR"] = str(session / f"{w.key}-gradc")  # main() filled it
            res = {"status": {}, "notes": []}
            params, batch = w.init(0)
            runners = make_runners(w, params, batch, status, res)
            mine.update({s: r for s, r in runners.items()
                         if (w.variants[s][0] if s in w.variants else s) == system})
            for s, r in mine.items():  # warm up; steps per round from the warm-up's median
                ts, t_end = [], pc() + spec["warm_s"]
                while len(ts) < 5 or (pc() < t_end and len(ts) < 500):
                    t0 = pc()
                    r.step()
                    ts.append(pc() - t0)
                calls[s] = max(1, min(5000, int(spec["round_s"] / statistics.median(ts))))
            own = {s: v for s, v in res["status"].items()
                   if (w.variants[s][0] if s in w.variants else s) == system}
            answer({"status": own, "notes": res["notes"]})
            runners.clear()  # (NumPy by hand's, there to check the first step against)
        else:
            out = {}
            gc.collect()
            gc.disable()
            try:
                for s, r in mine.items():
                    times, loss = [], None
                    c0, w0 = time.process_time(), pc()
                    for _ in range(calls[s]):
                        t0 = pc()
                        loss = r.step()
                        times.append(pc() - t0)
                    out[s] = {"times": times, "cpu": time.process_time() - c0,
                              "wall": pc() - w0, "loss": loss, "agree": r.agree}
            finally:
                gc.enable()
            answer(out)
    return 0


def contention_pass_main(spec):
    """The contention run of one system (spec["system"]), in a fresh process of its own as its
    users run it: in one process with the others, a system's step also waited on their thread
    pools (PyTorch's OpenMP threads spin after each of its steps), which loaded the machine
    more than the load process did. Not pinned, default threads. For each workload, the
    system's runner (and its variants) take alternating rounds with the load process paused
    and running, so that the slowdown (loaded ÷ idle median) compares times taken minutes
    apart at most. Prints `RESULT {json}`."""
    if spec["cpus"] and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, spec["cpus"])
    sys.path.insert(0, str(HERE))
    import systems
    import workloads
    session, system = Path(spec["session"]), spec["system"]
    status = {s: (systems.available(s) if s == system else "another process")
              for s in systems.SYSTEMS}
    if system.startswith("torch"):
        quiet_torch()
    if system == "jax" and status["jax"] is None:
        import jax
        jax.config.update("jax_compilation_cache_dir", str(session / "jax-default-threads"))
    results = {}
    with Loader(dict(os.environ)) as load:
        for name in spec["workloads"]:
            w = workloads.get(name)
            print(f"contention: {system} {w.name} {w.key}", file=sys.stderr, flush=True)
            os.environ["GRADC_CACHE_DIR"] = str(session / f"{w.key}-gradc")  # main() filled it
            load.pause(True)
            res = {"status": {}, "notes": []}
            params, batch = w.init(0)
            runners = make_runners(w, params, batch, status, res)
            res["idle"], res["loaded"] = {}, {}
            for s, r in runners.items():
                times = time_paused_and_loaded(r, load, spec["rounds"], spec["round_s"],
                                               spec["warm_s"])
                res["idle"][s], res["loaded"][s] = times
            results[w.name] = res
            runners.clear()
            gc.collect()
    print("RESULT " + json.dumps({"results": results}, default=str), flush=True)
    return 0


def time_paused_and_loaded(runner, load, rounds, target_s, warm_s):
    """({"median": s}, {"median": s}): the runner's step time with the load process paused
    and running, in alternating rounds (the order alternates too)."""
    pc = time.perf_counter
    ts = []
    t_end = pc() + warm_s
    while len(ts) < 5 or (pc() < t_end and len(ts) < 500):
        t0 = pc()
        runner.step()
        ts.append(pc() - t0)
    calls = max(1, min(5000, int(target_s / statistics.median(ts))))
    samples = {True: [], False: []}
    gc.collect()
    gc.disable()
    try:
        for i in range(rounds):
            for paused in ((True, False) if i % 2 == 0 else (False, True)):
                load.pause(paused)
                for _ in range(calls):
                    t0 = pc()
                    runner.step()
                    samples[paused].append(pc() - t0)
    finally:
        gc.enable()
        load.pause(True)
    return tuple({"median": statistics.median(samples[p]), "n": len(samples[p])}
                 for p in (True, False))


def run_contention(spec, env, wanted, timeout):
    """contention_pass_main for each wanted system, each in a fresh process; merged into
    {"results": {workload: {"status", "notes", "idle", "loaded"}}} (or {"error": why})."""
    import systems
    missing = {s: "absent" if s in spec["systems"] else "not selected (--systems)"
               for s in systems.SYSTEMS if s not in wanted}
    merged = {name: {"status": dict(missing), "notes": [], "idle": {}, "loaded": {}}
              for name in spec["workloads"]}
    for system in wanted:
        got = run_timing_pass(dict(spec, system=system), env, timeout, "--contention-pass")
        for name in spec["workloads"]:
            res = merged[name]
            if "error" in got:
                res["status"][system] = f"failed: {got['error']}"
                continue
            part = got["results"].get(name, {})
            for key in ("idle", "loaded"):
                res[key].update(part.get(key, {}))
            res["status"].update({s: v for s, v in part.get("status", {}).items()
                                  if v != "another process"})
            res["notes"] += part.get("notes", [])
    return {"results": merged}


def default_thread_rates():
    """SGEMM rate (float32 1024³, the faster of NumPy's and gradc.jit's) and copy bandwidth at
    the default threads."""
    import numpy as np
    a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    c = np.empty_like(a)
    np.matmul(a, a, out=c)
    wall, _ = _best(lambda: np.matmul(a, a, out=c), 10)
    wall = min(wall, _best(_gradc_product(a, a), 10)[0])
    x = np.ones(2 ** 25, np.float32)
    z = np.empty_like(x)
    copy, _ = _best(lambda: np.copyto(z, x), 3)
    return {"sgemm": 2 * 1024 ** 3 / wall, "bandwidth": 2 * x.nbytes / copy}


def default_thread_counts(status):
    """How many threads each library chose on its own: {library: count}."""
    import numba
    counts = {"numba": numba.get_num_threads()}
    try:
        from threadpoolctl import threadpool_info
        for p in threadpool_info():
            name = f"{owner_of(p.get('filepath', ''))} {p.get('internal_api')}"
            counts[name] = p.get("num_threads")
    except ImportError:
        pass
    if status["torch"] is None:
        import torch
        counts["torch"] = torch.get_num_threads()
    if status["jax"] is None:
        counts["XLA (CPUs it may use)"] = (len(os.sched_getaffinity(0))
                                           if hasattr(os, "sched_getaffinity") else os.cpu_count())
    return counts


# =============================================================================================
# gradc: where the step time goes


def profile_gradc(runner, n):
    """Where gradc's step time goes: the train_step wrapper, the generated driver (one call into
    an LLVM loop that calls every kernel's native function by address), and each kernel's work.

    Each kernel's work is measured by a Python copy of the driver that calls the same compiled
    kernels' native functions (through ctypes) with a perf_counter pair around each call, minus
    the same calls to a no-op Numba function of the same arguments. The driver's own cost is then
    its time minus the kernels' work. Step, driver, instrumented and no-op steps interleave."""
    import ctypes
    import numpy as np
    import numba
    from gradc.codegen.driver_rt import entry_address
    compiled = runner.compiled()
    orig = compiled.driver
    pc = time.perf_counter
    kernels = compiled.fusion.kernels
    program = compiled.program

    acc = [0.0]

    def timed_driver(*args):
        t0 = pc()
        orig(*args)
        acc[0] = pc() - t0

    # a kernel's native Numba function: int32 status f(void **ret, void **excinfo, int64 ...)
    slots = (ctypes.c_void_p * 2)()
    ret, excinfo = ctypes.addressof(slots), ctypes.addressof(slots) + ctypes.sizeof(ctypes.c_void_p)

    def c_function(address, nargs):
        native = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p,
                                  *[ctypes.c_int64] * nargs)(address)
        return functools.partial(native, ret, excinfo)

    head = ["def run(_handle):", "    A = _A"] + [f"    {name} = int(_io[{i}])"
                                                for i, name in enumerate(program.input_names)]
    lines, noop_lines, labels, nargs = list(head), list(head), [], []
    ns = {"_pc": pc, "_io": compiled.io, "_A": compiled.address}
    # each call's kernel address, from the driver's table (direct and Numba kernels alike)
    from gradc.codegen.driver_rt import HEADER
    from gradc.passes.fuse import CHUNKS
    first = int(compiled.words[0])
    table = (ctypes.c_int64 * ctypes.c_int64.from_address(first).value).from_address(first)
    at, addresses = HEADER, []
    while at < len(table):
        addresses.append(int(table[at]))
        at += 3 + 2 * int(table[at + 1]) + int(table[at + 2])
    kinds_of = []
    for i, (k, ks, combine) in enumerate(program.calls):
        shape = "x".join(str(d) for d in k.shape) or "scalar"
        stores = ", ".join(f"%{v.id}" for v in k.stores)
        ops = ", ".join(dict.fromkeys(node.op for node in k.nodes))
        labels.append(f"{k.name}: its partial sums folded" if combine else
                      f"{k.name}: {ops} over [{shape}] -> {stores}"
                      + (f" (its {CHUNKS} chunks in turn here)" if ks.chunks else ""))
        kinds_of.append("combine" if combine else getattr(k, "kind", "?"))
        count = len(ks.call_args)
        ns[ks.name] = c_function(addresses[i], count)
        nargs.append(count)
        for dst, fn in ((lines, ks.name), (noop_lines, f"_noop{count}")):
            dst.append("    _t0 = _pc()")
            if ks.chunks is None:
                dst.append(f"    {fn}({', '.join(ks.call_args)})")
            else:  # (as an AOT module's driver runs a chunked call)
                dst += ["    " + line for line in ks.chunks.loop(fn, ks.call_args)]
            dst.append(f"    _T[{i}] += _pc() - _t0")
    T = np.zeros(len(labels))
    ns["_T"] = T
    for k in set(nargs):
        body = {}
        exec(f"def _noop({', '.join(f'a{j}' for j in range(k))}):\n    pass\n", body)
        noop = numba.njit("void(" + ", ".join(["int64"] * k) + ")", nogil=True)(body["_noop"])
        ns[f"_noop{k}"] = c_function(entry_address(noop), k)
    exec(compile("\n".join(noop_lines + ["    pass"]), "<gradc driver, no-op kernels>", "exec"), ns)
    noop_driver = ns["run"]
    exec(compile("\n".join(lines + ["    pass"]), "<gradc driver, instrumented>", "exec"), ns)
    instrumented = ns["run"]
    # the three measurements interleave step by step, so load from elsewhere hits all alike;
    # medians, not means, so a step interrupted by the scheduler does not count
    step_t, driver_t, kernel_t, noop_t = [], [], [], []
    gc.disable()
    try:
        for _ in range(n):
            compiled.driver = orig
            t0 = pc()
            runner.step()
            step_t.append(pc() - t0)
            compiled.driver = timed_driver
            runner.step()
            driver_t.append(acc[0])
            compiled.driver = instrumented
            T[:] = 0
            runner.step()
            kernel_t.append(T.copy())
            compiled.driver = noop_driver  # the kernels do not run: nothing changes
            T[:] = 0
            runner.step()
            noop_t.append(T.copy())
    finally:
        compiled.driver = orig
        gc.enable()
    per_call = np.median(np.array(noop_t), axis=0)
    per_kernel = np.maximum(np.median(np.array(kernel_t), axis=0) - per_call, 0.0)
    # the wrapper's check that this call is the last call's signature, which includes the
    # aliasing checks (an input overlapping gradc's buffers, or parameters sharing memory)
    last, args = runner.train._last_call, (runner.P,) + tuple(runner.batch)
    match_t = []
    if last is not None:
        for _ in range(max(n, 50)):
            t0 = pc()
            for _ in range(100):
                last.match(args)
            match_t.append((pc() - t0) / 100)
    kinds = {}
    for kind, t in zip(kinds_of, per_kernel):
        kinds[kind] = kinds.get(kind, 0.0) + t
    order = np.argsort(-per_kernel)
    return {
        "n": n,
        "step": statistics.median(step_t),
        "driver": statistics.median(driver_t),
        "match": statistics.median(match_t) if match_t else None,
        "kernels_sum": float(per_kernel.sum()),
        "calls_sum": float(per_call.sum()),
        "n_kernels": len(kernels),
        "by_kind": kinds,
        "kind_counts": {kd: kinds_of.count(kd) for kd in kinds},
        "top": [(labels[i], float(per_kernel[i])) for i in order[:4]],
    }


# =============================================================================================
# Main


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke test: {', '.join(QUICK_SUBSET)} (unless --only), few repetitions")
    parser.add_argument("--only", default=None, help="comma-separated workloads, e.g. W2,W3 or mlp,fuse")
    parser.add_argument("--systems", default=None,
                        help="comma-separated subset of gradc,numpy,torch,torch.compile,jax")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for BLAS, OpenMP, Numba, torch and XLA (default 1)")
    parser.add_argument("--no-pin", action="store_true",
                        help="do not pin the benchmark (and its child processes) to --threads CPUs")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 21, quick 3)")
    parser.add_argument("--round-ms", type=float, default=None,
                        help="milliseconds per system per round (default 100, quick 30)")
    parser.add_argument("--no-start", action="store_true",
                        help="skip the fresh-process cold/warm start measurements")
    parser.add_argument("--output", metavar="FILE.md", default=None,
                        help="also write the report (Markdown) to this file")
    parser.add_argument("--json", metavar="FILE.json", default=None, help="write raw results")
    parser.add_argument("--explain", metavar="DIR", default=None,
                        help="write gradc.explain's report (value_and_grad of each workload's "
                        "loss) into DIR")
    parser.add_argument("--keep-cache", action="store_true",
                        help="keep the temporary cache directories (printed)")
    parser.add_argument("--no-default-threads", action="store_true",
                        help="skip the second timing pass at every library's default threads "
                        "(unpinned, in a fresh process)")
    parser.add_argument("--no-contention", action="store_true",
                        help="skip the contention run (the default-thread pass again while "
                        "another process multiplies matrices on every CPU)")
    parser.add_argument("--child", nargs=2, metavar=("SYSTEM", "WORKLOAD"), help=argparse.SUPPRESS)
    parser.add_argument("--timing-pass", metavar="SPEC", help=argparse.SUPPRESS)
    parser.add_argument("--contention-pass", metavar="SPEC", help=argparse.SUPPRESS)
    parser.add_argument("--round-server", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        return child_main(args.child[0], args.child[1], args.threads)
    if args.timing_pass:
        return timing_pass_main(json.loads(args.timing_pass))
    if args.contention_pass:
        return contention_pass_main(json.loads(args.contention_pass))
    if args.round_server:
        return round_server_main(json.loads(args.round_server))

    threads = args.threads
    rounds = args.rounds or (3 if args.quick else 21)
    round_s = (args.round_ms or (30 if args.quick else 100)) / 1e3
    warm_s = 0.1 if args.quick else 0.5
    child_timeout = 1800

    orig_env = dict(os.environ)  # for the default-thread pass, before the settings below
    all_cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    pinned = pin_cpus(threads) if not args.no_pin else None
    session = Path(tempfile.mkdtemp(prefix="gradc-bench-"))
    os.environ["GRADC_CACHE_DIR"] = str(session / "gradc-main")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(session / "inductor-main")
    os.environ.pop("GRADC_LOG", None)
    try:
        import threadpoolctl  # noqa: F401
        have_tpc = True
    except ImportError:
        have_tpc = False
    # XLA reads its flags when jax starts; without threadpoolctl the BLAS/OpenMP environment
    # variables must also be set before NumPy and torch load their libraries.
    env = thread_env(threads)
    os.environ["XLA_FLAGS"] = env["XLA_FLAGS"]
    if not have_tpc:
        os.environ.update(env)

    sys.path.insert(0, str(HERE))
    import numba
    import numpy as np

    import gradc
    import systems
    import workloads

    out = Out()
    try:
        names = (args.only.split(",") if args.only
                 else list(QUICK_SUBSET) if args.quick else list(workloads.WORKLOADS))
        chosen = [workloads.get(n.strip()) for n in names if n.strip()]
        wanted = args.systems.split(",") if args.systems else list(systems.SYSTEMS)
        for s in wanted:
            if s not in systems.SYSTEMS:
                parser.error(f"unknown system {s!r}; choose from {', '.join(systems.SYSTEMS)}")
        status = {s: (systems.available(s) if s in wanted else "not selected (--systems)")
                  for s in systems.SYSTEMS}
        have = [s for s in systems.SYSTEMS if status[s] is None]

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        if "torch" in have or "torch.compile" in have:
            import torch
            torch.set_num_threads(threads)
            try:
                torch.set_num_interop_threads(1)
            except RuntimeError:
                pass
            quiet_torch()
        if "jax" in have:
            import jax  # noqa: F401
        limit_threads(threads, have_tpc)

        out(f"# gradc benchmarks{' (quick)' if args.quick else ''}")
        out()
        out(f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}")
        out(f"- machine: {cpu_model()}; load average at start "
            + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
        vers = [f"python {platform.python_version()}", f"numpy {np.__version__}",
                f"numba {numba.__version__}", f"gradc {gradc.__version__}{git_describe()}"]
        for s, mod in (("torch", "torch"), ("jax", "jax")):
            if status[s] is None:
                vers.append(f"{mod} {sys.modules[mod].__version__}")
        out("- versions: " + ", ".join(vers))
        out("- peers: " + "; ".join(f"{s}: {status[s] or 'measured'}" for s in systems.SYSTEMS
                                    if s != "gradc"))
        out(f"- threads: {threads} for every library"
            + (f", and the process (with its children) pinned to CPU{'s' if len(pinned) > 1 else ''} "
               + ",".join(map(str, pinned)) if pinned else ", not pinned")
            + f"; {rounds} alternating rounds of about {round_s * 1e3:.0f} ms per system after "
            f"{warm_s:.1f} s of warm-up each")
        out()
        out("## Libraries and threads")
        out()
        library_report(out, threads, have)
        rates = calibrate(out, args.quick, threads)
        sgemm = rates["sgemm"].get(threads) or max(rates["sgemm"].values())

        results = {}
        results_json = {"results": results}
        for w in chosen:
            out(f"## {w.name} {w.key}: {w.title}")
            out()
            results[w.name] = bench_workload(out, w, have, status, threads, session, rounds,
                                             round_s, warm_s, args, child_timeout, sgemm, rates)
        summary(out, chosen, results, have, status, threads)
        if not args.no_default_threads:
            spec = {"workloads": [w.name for w in chosen], "systems": wanted,
                    "session": str(session), "cpus": all_cpus, "rounds": rounds,
                    "round_s": round_s, "warm_s": warm_s}
            env = default_thread_env(orig_env)
            env["TORCHINDUCTOR_CACHE_DIR"] = os.environ["TORCHINDUCTOR_CACHE_DIR"]
            dpass = run_timing_pass(spec, env, timeout=3 * 3600)
            results_json["default_threads"] = dpass
            default_thread_report(out, chosen, results, dpass, threads, rates)
            if not args.no_contention:
                loaded = run_contention(spec, env, [s for s in wanted if s in have],
                                        timeout=3600)
                results_json["contention"] = loaded
                contention_report(out, chosen, loaded)
        if not args.no_start and any(w.name == "W2" for w in chosen):
            depth_report(out, session, threads, child_timeout)
        out("load average at the end: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
        if args.output:
            Path(args.output).write_text("\n".join(out.lines) + "\n", encoding="utf-8")
        if args.json:
            Path(args.json).write_text(json.dumps({"rates": rates, **results_json},
                                                  indent=1, default=str), encoding="utf-8")
    finally:
        if args.keep_cache:
            print(f"caches kept in {session}", file=sys.stderr)
        else:
            shutil.rmtree(session, ignore_errors=True)
    return 0


DEPTHS = (2, 10)


def depth_report(out, session, threads, child_timeout, repeats=5):
    """Cold compile time against depth: W2's MLP with 2 and with 10 layers, each compiled in a
    fresh process with an empty cache, the depths alternating (the best of `repeats`: single
    cold compiles of 0.3-0.8 s swing by half on this machine). Kernels shared by structure
    across layers should make the deep one cost little more than the shallow one."""
    rows, best, runs = [], {}, {layers: [] for layers in DEPTHS}
    for r in range(repeats):
        for layers in DEPTHS:
            cache = session / f"depth{layers}-{r}"
            runs[layers].append(run_child("gradc", f"mlp-depth-{layers}", threads,
                                          {"GRADC_CACHE_DIR": str(cache)}, child_timeout))
            shutil.rmtree(cache, ignore_errors=True)
    for layers in DEPTHS:
        ok = [x for x in runs[layers] if "error" not in x]
        if not ok:
            rows.append([f"{layers} layers", "failed", runs[layers][0]["error"], "", ""])
            continue
        x = min(ok, key=lambda x: x["first_s"])
        best[layers] = x["first_s"]
        phases = x.get("phases") or {}
        rows.append([f"{layers} layers", x.get("kernels", "n/a"), fmt_t(x["first_s"]),
                     fmt_t(phases["numba"] + phases.get("llvm", 0)) if "numba" in phases
                     else "n/a",
                     fmt_t(x["start_s"])])
    out("## Compile time against depth")
    out()
    out(f"W2's MLP (784-256-…-256-10, relu, softmax cross-entropy, batch 128, train_step SGD) with "
        f"{' and '.join(map(str, DEPTHS))} layers; each a fresh process with an empty cache, the "
        f"best of {repeats}.")
    out()
    out.table(["depth", "kernels", "cold first step", "of which kernels (llvm + numba)",
               "start (import+build+step)"],
              rows)
    if len(best) == len(DEPTHS):
        lo, hi = DEPTHS[0], DEPTHS[-1]
        out(f"{hi}-layer ÷ {lo}-layer cold compile: {best[hi] / best[lo]:.2f}×")
        out()


def quiet_torch():
    import logging
    logging.getLogger("torch._dynamo").setLevel(logging.ERROR)
    logging.getLogger("torch._inductor").setLevel(logging.ERROR)


def limit_threads(threads, have_tpc):
    """Limit every BLAS/OpenMP library loaded so far (again before each workload: torch.compile
    and jax may load more). scipy's BLAS, which gradc's matmul kernels call through Numba, is
    loaded first so that it is limited too."""
    import scipy.linalg  # noqa: F401  (loads scipy.linalg.cython_blas and its OpenBLAS)
    if have_tpc:
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=threads)


# the system whose first step the others are checked against: the first one present
REFERENCES = ("numpy", "torch", "jax")


def make_runners(w, params, batch, status, res):
    """Build every available system's runner for `w` and take its first step; record each
    system's status in res["status"] ("measured", "MISMATCH", "omitted (...)", "failed: ...",
    or why it is absent) and check every first loss and update against the reference (NumPy by
    hand, or the first of REFERENCES that ran). Returns {system: runner} of those that ran."""
    import numpy as np

    import systems
    runners = {}
    for s in list(systems.SYSTEMS) + list(w.variants):
        base = w.variants[s][0] if s in w.variants else s
        if status[base] is not None:
            res["status"][s] = status[base]
            continue
        try:
            t0 = time.perf_counter()
            r = systems.make(s, w, params, batch)
            r.first_loss = r.step()
            r.first_s = time.perf_counter() - t0
            r.first_params = {k: np.array(v, copy=True) for k, v in r.params().items()}
            r.agree = None
            runners[s] = r
            res["status"][s] = "measured"
        except systems.Omitted as e:
            res["status"][s] = f"omitted ({e})"
        except Exception as e:  # a system that cannot run this workload is reported, not fatal
            res["status"][s] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
            res["notes"].append(f"{s} failed: {type(e).__name__}: {e}")
    ref = next((s for s in REFERENCES if s in runners), None)
    if ref is None:
        return runners
    r0 = runners[ref]
    ref_upd = {k: np.asarray(v, np.float64) - params[k] for k, v in r0.first_params.items()}
    res["reference"] = ref
    for s, r in runners.items():
        loss_err, upd_err = agreement((r0.first_loss, ref_upd), params, r)
        r.agree = (loss_err, upd_err)
        if not (loss_err < 1e-3 and upd_err < 2e-2):
            res["status"][s] = "MISMATCH"
            res["notes"].append(f"{s} disagrees with {ref}: loss rel. error {loss_err:.1e}, "
                                f"update rel. error {upd_err:.1e}")
    return runners


def bench_workload(out, w, have, status, threads, session, rounds, round_s, warm_s, args,
                   child_timeout, sgemm, rates):
    import numpy as np

    import systems
    res = {"status": {}, "start": {}, "time": {}, "memory": {}, "notes": []}
    params, batch = w.init(0)

    # --- 1. fresh processes: cold first step and warm start ----------------------------------
    if not args.no_start:
        caches = {s: session / f"{w.key}-{s.replace('.', '_')}" for s in systems.SYSTEMS}
        for s in systems.SYSTEMS:
            if status[s] is not None or s in w.omitted:
                continue
            extra = {"GRADC_CACHE_DIR": str(caches["gradc"]),
                     "TORCHINDUCTOR_CACHE_DIR": str(caches[s] / "inductor"),
                     "BENCH_JAX_CACHE": str(caches[s] / "jax")}
            runs = {}
            kinds = ("cold", "warm") if s in ("gradc", "torch.compile", "jax") else ("warm",)
            for kind in kinds:
                runs[kind] = run_child(s, w.name, threads, extra, child_timeout)
            res["start"][s] = runs

    # --- 2. this process: build, agree, time -------------------------------------------------
    os.environ["GRADC_CACHE_DIR"] = str(session / f"{w.key}-gradc")  # warm from the children
    limit_threads(threads, "threadpoolctl" in sys.modules)
    runners = make_runners(w, params, batch, status, res)
    if not runners:
        for note in res["notes"]:
            out(f"- note: {note}")
        out()
        return res
    res["time"] = time_alternating(runners, rounds, round_s, warm_s)
    for s, r in runners.items():
        t = res["time"][s]
        t["first_in_process"] = r.first_s
        t["agree"] = r.agree
        if t["last_loss"] is not None and not np.isfinite(t["last_loss"]):
            res["notes"].append(f"{s}: the loss became {t['last_loss']} during timing")

    # --- 3. memory, profile, roofline --------------------------------------------------------
    for s, r in runners.items():
        try:
            res["memory"][s] = r.memory()
        except Exception as e:
            res["memory"][s] = {}
            res["notes"].append(f"{s} memory: {type(e).__name__}: {e}")
    if "gradc" in runners:
        try:
            n = max(5, min(500, int(0.3 / res["time"]["gradc"]["median"])))
            res["profile"] = profile_gradc(runners["gradc"], n)
        except Exception as e:
            res["notes"].append(f"gradc profile failed: {type(e).__name__}: {e}")
        if args.explain:
            import gradc
            d = Path(args.explain)
            d.mkdir(parents=True, exist_ok=True)
            text = gradc.explain(w.loss, {k: v.copy() for k, v in params.items()}, *batch)
            (d / f"{w.name}_{w.key}.txt").write_text(text, encoding="utf-8")
    flops = w.flops()
    nbytes = w.compulsory_bytes(params, batch)
    res["roofline"] = {"flops": flops, "bytes": nbytes, "t_flops": flops / sgemm,
                       "t_bytes": nbytes / rates["bandwidth"]}
    res["roofline"]["t"] = max(res["roofline"]["t_flops"], res["roofline"]["t_bytes"])
    res["param_bytes"] = w.param_bytes(params)
    res["batch_bytes"] = sum(b.nbytes for b in batch)
    report_workload(out, w, res, threads)
    runners.clear()  # free this workload's buffers before the next
    gc.collect()
    return res


def report_workload(out, w, res, threads):
    T = res["time"]
    g = T.get("gradc")
    rows = []
    for s, st in res["status"].items():
        if s not in T:
            rows.append([s, st, "", "", "", "", "", "", "", ""])
            continue
        t = T[s]
        ratio = fmt_ratio(t["median"] / g["median"]) if g else "n/a"
        rows.append([s + (" (!)" if st == "MISMATCH" else ""), fmt_t(t["median"]), fmt_t(t["min"]),
                     f"{fmt_t(t['q1'])} – {fmt_t(t['q3'])}", ratio,
                     fmt_ratio(t["min"] / g["min"]) if g else "n/a", fmt_t(t["cpu_median"]), t["n"],
                     f"{t['cpu_per_wall']:.2f}" if t["cpu_per_wall"] else "n/a",
                     f"{t['agree'][0]:.0e} / {t['agree'][1]:.0e}" if t["agree"] else "n/a"])
    out("Step time (forward + backward + SGD update), all systems alternating in this process; "
        "÷ gradc = median ÷ gradc's median (above 1: gradc is faster), min ÷ gradc likewise for "
        "the minima; CPU/step = process CPU time per step (median over rounds; it leaves out time "
        "spent waiting for a CPU that other work holds); CPU/wall = process CPU "
        f"time ÷ wall time while timing (above {threads} would mean a library uses more threads "
        "than asked; below 1, that the process waited for a CPU held by other work); agreement "
        "= relative error of the first loss / first update against "
        + ("NumPy by hand." if res.get("reference", "numpy") == "numpy" else
           f"{res['reference']} (this workload has no NumPy by hand)."))
    out()
    out.table(["system", "median", "min", "quartiles", "÷ gradc", "min ÷ gradc", "CPU/step",
               "steps", "CPU/wall", "agreement"], rows)
    rf = res["roofline"]
    out(f"Roofline: {rf['flops'] / 1e6:.2f} MFLOP → {fmt_t(rf['t_flops'])} at the measured SGEMM "
        f"rate; {fmt_b(rf['bytes'])} compulsory traffic → {fmt_t(rf['t_bytes'])} at the measured "
        f"bandwidth; bound {fmt_t(rf['t'])}"
        + (f"; gradc's median is {g['median'] / rf['t']:.1f}× the bound." if g else "."))
    out()
    if res["start"]:
        rows = []
        for s, runs in res["start"].items():
            for kind, r in runs.items():
                if "error" in r or "absent" in r:
                    rows.append([s, kind, r.get("error") or r.get("absent"), "", "", "", ""])
                    continue
                phases = ""
                if r.get("phases"):
                    p = r["phases"]
                    rest = r["first_s"] - sum(p.values())
                    phases = (", ".join(f"{k} {fmt_t(v)}" for k, v in p.items() if v)
                              + f", rest {fmt_t(max(rest, 0.0))}")
                rows.append([s, kind, fmt_t(r["import_s"]), fmt_t(r["first_s"]),
                             fmt_t(r["start_s"]), fmt_t(r["second_s"]), phases])
        out("Fresh processes (cold: empty caches; warm: the caches the cold run filled — "
            "GRADC_CACHE_DIR, TORCHINDUCTOR_CACHE_DIR, JAX's persistent compilation cache). "
            "start = import of the system + building the step + first step, measured from "
            "after `import numpy, numba`; gradc's phases are from GRADC_LOG=compiles (trace "
            "includes autodiff; a warm start takes the program from the cache instead of "
            "running the passes and codegen: \"cached program\").")
        out()
        out.table(["system", "run", "import", "first step", "start", "second step",
                   "gradc phases (first step)"], rows,
                  ["l", "l", "r", "r", "r", "r", "l"])
    mem = res["memory"]
    rows = []
    for s in res["status"]:
        m = mem.get(s)
        if m is None:
            continue
        if s == "gradc" and m:
            rows.append([s, fmt_b(m["arena"]),
                         f"planned arena (activations, gradients, scratch; {fmt_b(m['naive'])} "
                         "without reuse)"])
        elif s == "numpy" and m:
            rows.append([s, fmt_b(m["peak"]), "peak of NumPy allocations in one step (tracemalloc)"])
        elif s.startswith("torch") and m:
            rows.append([s, fmt_b(m["peak"]), "peak bytes allocated in one step (profiler "
                         "memory events)"])
        elif s == "jax" and m:
            rows.append([s, fmt_b(m["temp+out"]), "XLA buffer assignment: temporaries + "
                         "non-donated outputs"])
        else:
            rows.append([s, "n/a", "not measurable"])
    out(f"Memory for one step beyond parameters ({fmt_b(res['param_bytes'])}) and batch "
        f"({fmt_b(res['batch_bytes'])}):")
    out()
    out.table(["system", "bytes", "what"], rows, ["l", "r", "l"])
    p = res.get("profile")
    if p:
        rest = max(p["driver"] - p["kernels_sum"], 0.0)
        out(f"Where gradc's step goes (medians of {p['n']} interleaved steps): step "
            f"{fmt_t(p['step'])} = train_step's Python wrapper {fmt_t(max(p['step'] - p['driver'], 0))}"
            f" + generated driver {fmt_t(p['driver'])} (one @njit call); in the driver, the "
            f"kernels' work {fmt_t(p['kernels_sum'])} (each kernel called from Python through ctypes, "
            f"minus a no-op call: {fmt_t(p['calls_sum'])} for all {p['n_kernels']}) and the rest "
            f"{fmt_t(rest)} (one dispatch and {p['n_kernels']} calls by address); in the "
            f"wrapper, recognizing the last call's signature with the aliasing checks "
            f"{fmt_t(p['match']) if p.get('match') is not None else 'n/a'}; per-call "
            f"overhead (wrapper + the driver's rest) {fmt_t(max(p['step'] - p['kernels_sum'], 0))}"
            + "; work by kind: "
            + ", ".join(f"{k} ×{p['kind_counts'][k]} {fmt_t(v)}"
                        for k, v in sorted(p["by_kind"].items(), key=lambda kv: -kv[1]))
            + ". Slowest kernels (work, share of all kernel work):")
        out()
        for label, t in p["top"]:
            share = t / p["kernels_sum"] if p["kernels_sum"] else 0
            out(f"- {label}: {fmt_t(t)} ({share:.0%})")
        out()
    for note in res["notes"]:
        out(f"- note: {note}")
    if res["notes"]:
        out()


PEERS = ("numpy", "torch", "torch.compile", "jax")


def status_word(st):
    """A system's status in one word for a summary cell: absent, omitted, failed, n/a."""
    st = st or "n/a"
    for word in ("absent", "omitted", "not selected"):
        if st.startswith(word):
            return word
    return st.split(":")[0]


def workload_rows(w, cols, cell):
    """The summary rows of workload `w`: one with cell(system) under each of `cols`, then one per
    variant (W8's torch nn.LSTM) with its cell under its base system's column."""
    label = f"{w.name} {w.key}"
    rows = [[label] + [cell(s) for s in cols]]
    for v, (base, _) in w.variants.items():
        if base in cols:
            rows.append([f"{label}: {v}"] + [cell(v) if s == base else "" for s in cols])
    return rows


def time_cell(T, status, s, stat="median", ref=None):
    """`s`'s step time; with `ref` (gradc's), ÷ ref in brackets; (!) when it disagreed."""
    if s not in T:
        return status_word(status.get(s))
    t = T[s][stat]
    return (fmt_t(t) + (f" ({fmt_ratio(t / ref)})" if ref and s != "gradc" else "")
            + (" (!)" if status.get(s) == "MISMATCH" else ""))


def summary(out, chosen, results, have, status, threads):
    out("## Summary")
    out()
    for stat, what in (("median", "Median"), ("min", "Minimum")):
        out(f"{what} step time ({threads} thread{'s' if threads > 1 else ''}); in brackets each "
            f"system's {stat} ÷ gradc's (above 1: gradc is faster).")
        out()
        rows = []
        for w in chosen:
            r = results[w.name]
            T, st = r["time"], r["status"]
            g = T.get("gradc", {}).get(stat)
            rf = r.get("roofline")
            rows_w = workload_rows(w, ("gradc",) + PEERS, lambda s: time_cell(T, st, s, stat, g))
            rows.append(rows_w[0] + ([fmt_t(rf["t"]), f"{g / rf['t']:.1f}×" if g else "n/a"]
                                     if rf else ["n/a", "n/a"]))
            rows += [row + ["", ""] for row in rows_w[1:]]  # variants
        out.table(["workload", "gradc", *PEERS, "roofline", "gradc ÷ roofline"], rows)

    rows = []
    for w in chosen:
        r = results[w.name]
        st = r["start"]

        def cell(s, kind, key):
            x = st.get(s, {}).get(kind)
            if x is None:
                return status_word(r["status"].get(s) or status[s])
            if "error" in x:
                return "failed"
            return fmt_t(x[key])

        cold = st.get("gradc", {}).get("cold", {})
        gp = cold.get("phases")
        phases = ("/".join(fmt_t(gp.get(k, 0)) for k in ("passes", "codegen", "llvm", "numba"))
                  if gp else "n/a")
        jax_cold = st.get("jax", {}).get("cold", {})
        ratio = (fmt_ratio(cold["first_s"] / jax_cold["first_s"])
                 if "first_s" in cold and "first_s" in jax_cold else "n/a")
        rows.append([f"{w.name} {w.key}", cold.get("kernels", "n/a"),
                     cell("gradc", "cold", "first_s"), phases, ratio,
                     cell("gradc", "warm", "start_s"),
                     cell("torch", "warm", "start_s"), cell("torch.compile", "cold", "first_s"),
                     cell("torch.compile", "warm", "start_s"), cell("jax", "cold", "first_s"),
                     cell("jax", "warm", "start_s")])
    if any(results[w.name]["start"] for w in chosen):
        out("Compile and start-up, each in a fresh process: cold = the first step with empty "
            "caches; warm start = import + build + first step with the caches filled, from "
            "after `import numpy, numba`; gradc phases = passes/codegen/llvm/numba of the cold "
            "compile (llvm: the loop kernels compiled straight to LLVM IR); "
            "÷ jax = gradc's cold first step ÷ jax.jit's (the target is at most 1).")
        out()
        out.table(["workload", "gradc kernels", "gradc cold", "gradc phases", "gradc cold ÷ jax",
                   "gradc warm start", "torch warm start", "torch.compile cold",
                   "torch.compile warm start", "jax cold", "jax warm start"], rows)
    rows = []
    for w in chosen:
        r = results[w.name]
        m = r["memory"]
        key = {"gradc": "arena", "numpy": "peak", "torch": "peak", "torch.compile": "peak",
               "jax": "temp+out"}

        def mcell(s, k=None):
            if s not in m:
                return status_word(r["status"].get(s) or status.get(s))
            return fmt_b(m[s].get(k or key.get(s, "peak"))) if m[s] else "n/a"

        arena, peak = m.get("gradc", {}).get("arena"), m.get("torch", {}).get("peak")
        for i, row in enumerate(workload_rows(w, ("gradc",) + PEERS, mcell)):
            if i:  # a variant's row
                rows.append(row[:1] + ["", ""] + row[1:] + [""])
                continue
            rows.append(row[:1] + [fmt_b(r["param_bytes"] + r["batch_bytes"])
                                   if "param_bytes" in r else "n/a",
                                   row[1], mcell("gradc", "naive")] + row[2:]
                        + [fmt_ratio(arena / peak) if arena and peak else "n/a"])
    out("Memory per step beyond parameters and batch: gradc's planned arena (and without reuse), "
        "NumPy's tracemalloc peak, PyTorch's profiler peak, XLA's planned temporaries; "
        "gradc ÷ torch = gradc's arena ÷ PyTorch eager's peak (the target is at most 1).")
    out()
    out.table(["workload", "params + batch", "gradc arena", "gradc no reuse", "numpy peak",
               "torch peak", "torch.compile peak", "jax (XLA plan)", "gradc ÷ torch"], rows)


def step_target(gradc_t, fastest_t, roofline_t):
    """Issue 15's target for gradc's step time: half the fastest peer's, or where the roofline
    forbids that, 1.15× the roofline. Forbidden: half the fastest peer is within 1.15× of the
    roofline (a target of 1.01× the roofline would be stricter than the issue's allowance for
    one below it), so the target is the larger of the two."""
    return max(0.5 * fastest_t, 1.15 * roofline_t)


def default_thread_report(out, chosen, results, dpass, threads, rates):
    """Step times pinned beside default threads, and the default-thread summary with the
    targets of issue 15 (gradc ≤ 0.5× the fastest peer, or ≤ 1.15× the roofline)."""
    out("## Default threads")
    out()
    if "error" in dpass:
        out(f"The default-thread pass failed: {dpass['error']}.")
        out()
        return
    dr = dpass["rates"]
    bandwidth = max(dr["bandwidth"], rates["bandwidth"])
    out("The same alternating timing with each system in a fresh process of its own, as its "
        f"users run it (the processes take rounds in turn, {SETTLE_S:g} s apart), not pinned, "
        "every library at the thread count it picks itself ("
        + ", ".join(f"{k}: {v}" for k, v in dpass["threads"].items())
        + f"); measured there: SGEMM {dr['sgemm'] / 1e9:.1f} GFLOP/s, copy "
        f"{dr['bandwidth'] / 1e9:.1f} GB/s. First, each system's median pinned to {threads} "
        f"thread{'s' if threads > 1 else ''} (above) → at default threads:")
    out()
    rows = []
    for w in chosen:
        T1, D = results[w.name]["time"], dpass["results"].get(w.name, {})
        Td, st = D.get("idle", {}), D.get("status", {})

        def side_by_side(s):
            if s not in T1 and s not in Td:
                return status_word(st.get(s) or results[w.name]["status"].get(s))
            return " → ".join(fmt_t(T[s]["median"]) if s in T else "n/a" for T in (T1, Td))

        rows += workload_rows(w, ("gradc",) + PEERS, side_by_side)
    out.table(["workload", "gradc", *PEERS], rows)

    out("Median step time at default threads; in brackets ÷ gradc's (above 1: gradc is faster); "
        "fastest = the fastest peer that agreed with the reference (variants such as torch "
        "nn.LSTM included); roofline at the SGEMM rate and bandwidth measured at default threads; "
        "target = 0.5× the fastest peer, or 1.15× the roofline where that is above it.")
    out()
    rows, notes = [], []
    for w in chosen:
        D = dpass["results"].get(w.name, {})
        Td, st = D.get("idle", {}), D.get("status", {})
        g = Td.get("gradc", {}).get("median")
        rows_w = workload_rows(w, ("gradc",) + PEERS, lambda s: time_cell(Td, st, s, ref=g))
        peers = {s: t["median"] for s, t in Td.items()
                 if s != "gradc" and st.get(s) == "measured"}
        rf = results[w.name].get("roofline")
        tail = ["n/a"] * 6
        if peers and rf:
            fastest = min(peers, key=peers.get)
            roof = max(rf["flops"] / dr["sgemm"], rf["bytes"] / bandwidth)
            target = step_target(g, peers[fastest], roof) if g else None
            tail = [f"{fastest} {fmt_t(peers[fastest])}",
                    fmt_ratio(g / peers[fastest]) if g else "n/a", fmt_t(roof),
                    f"{g / roof:.1f}×" if g else "n/a", fmt_t(target) if target else "n/a",
                    ("met" if g <= target else f"missed ({fmt_ratio(g / target)})") if g else
                    "n/a"]
        rows.append(rows_w[0] + tail)
        rows += [r + [""] * 6 for r in rows_w[1:]]
        notes += [f"{w.name}: {note}" for note in D.get("notes", [])]
    out.table(["workload", "gradc", *PEERS, "fastest peer", "gradc ÷ fastest", "roofline",
               "gradc ÷ roofline", "target", "gradc"], rows)
    for note in notes:
        out(f"- note: {note}")
    if notes:
        out()


def contention_report(out, chosen, dpass):
    """Each system's default-thread step time while a Loader runs, and its slowdown."""
    out("## Contention")
    out()
    out("Each system in a fresh process of its own (as its users run it: in one process, the "
        "systems' thread pools loaded each other), at its default threads, while another "
        "process loads the machine (NumPy float32 1024³ products in a loop at NumPy's default "
        "threads, on every CPU), in rounds alternating with rounds where that process is "
        "paused (SIGSTOP). Each cell: the loaded median (loaded ÷ paused median: the "
        "slowdown). The target: gradc's slowdown no worse than PyTorch eager's and JAX's.")
    out()
    rows = []
    for w in chosen:
        D = dpass["results"].get(w.name, {})
        idle, loaded, st = D.get("idle", {}), D.get("loaded", {}), D.get("status", {})
        slow = {s: loaded[s]["median"] / idle[s]["median"] for s in loaded if s in idle}

        def cell(s):
            if s not in slow:
                return "n/a" if s in idle else status_word(st.get(s))
            return f"{fmt_t(loaded[s]['median'])} ({fmt_ratio(slow[s])})"

        rows_w = workload_rows(w, ("gradc",) + PEERS, cell)
        others = {s: slow[s] for s in ("torch", "jax") if s in slow}
        verdict = "n/a"
        if "gradc" in slow and others:
            worse = {s: x for s, x in others.items() if slow["gradc"] > x}
            verdict = "yes" if not worse else "no (" + ", ".join(
                f"{s} {fmt_ratio(x)}" for s, x in worse.items()) + ")"
        rows.append(rows_w[0] + [verdict])
        rows += [r + [""] for r in rows_w[1:]]
    out.table(["workload", "gradc", *PEERS, "gradc's slowdown ≤ torch's and jax's"], rows)


if __name__ == "__main__":
    sys.exit(main())
