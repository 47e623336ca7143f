"""The disk cache and the compile helper (gradc/codegen/modules.py): generated modules live in a
private directory (0700), a damaged file is rewritten and a damaged Numba cache entry rebuilt,
never used; a helper process that compiles some kernels into the cache while this process
compiles the others changes nothing but the time it takes. Each case runs in a fresh process
with its own cache directory, so nothing is compiled yet."""
import glob
import os
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from gradc.codegen import modules

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import sys, numpy as np, gradc
    from gradc.codegen import modules
    modules.HELPER_MIN_MODULES = int(sys.argv[1])
    def loss(p, x, y):
        h = np.tanh(x @ p["W1"] + p["b1"])
        h = gradc.nn.relu(h @ p["W2"] + p["b2"])
        return gradc.nn.cross_entropy(h @ p["W3"], y) + 0.1 * np.sum(np.exp(-np.abs(p["b1"])))
    rng = np.random.default_rng(0)
    p = {"W1": rng.standard_normal((5, 8)), "b1": rng.standard_normal(8),
         "W2": rng.standard_normal((8, 8)), "b2": rng.standard_normal(8),
         "W3": rng.standard_normal((8, 3))}
    x, y = rng.standard_normal((6, 5)), rng.integers(0, 3, 6)
    step = gradc.train_step(loss, gradc.optim.Adam(1e-2))
    losses = [step(p, x, y) for _ in range(3)]
    print(repr(losses), repr(sorted((k, v.tobytes().hex()) for k, v in p.items())))
""")


def run(cache, helper_min, helper="1", kernels="llvm"):
    env = dict(os.environ, GRADC_CACHE_DIR=str(cache), GRADC_COMPILE_HELPER=helper,
               GRADC_KERNELS=kernels,
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(helper_min)], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def module_dirs(cache):
    return glob.glob(os.path.join(str(cache), "*", "modules"))


def test_claims_are_exclusive(tmp_path):
    assert modules.claim(str(tmp_path), "m")
    assert not modules.claim(str(tmp_path), "m")


def test_a_helper_process_gives_the_same_bits(tmp_path):
    # (every kernel a Numba module: the helper compiles Numba's; most go direct otherwise)
    alone = run(tmp_path / "alone", 1, helper="0", kernels="numba")
    helped = run(tmp_path / "helped", 1, kernels="numba")
    assert helped == alone
    (folder,) = module_dirs(tmp_path / "helped")
    assert not glob.glob(os.path.join(folder, "claims-*"))  # cleaned up
    kernels = [os.path.basename(f)[:-3] for f in glob.glob(os.path.join(folder, "gradc_*.py"))
               if "driver" not in f]
    cached = [k for k in kernels
              if glob.glob(os.path.join(folder, "__pycache__", f"{k}.*.nbi"))]
    assert len(kernels) >= 6 and set(cached) >= {k for k in kernels if "calls" not in k}
    assert run(tmp_path / "helped", 1, kernels="numba") == alone  # and again, from the cache


def test_cache_directory_is_private_and_damage_is_rebuilt(tmp_path):
    # every kernel a Numba module, as this checks Numba's cache files (the loop kernels' own
    # cache file: tests/test_direct_kernels.py)
    first = run(tmp_path, 100, kernels="numba")
    (folder,) = module_dirs(tmp_path)
    for path in (folder, os.path.dirname(folder)):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    kernels = sorted(glob.glob(os.path.join(folder, "gradc_loop_*.py")))
    with open(kernels[0], "r+", encoding="utf-8") as f:  # a truncated module
        f.truncate(40)
    with open(kernels[1], "a", encoding="utf-8") as f:  # a foreign line in another
        f.write("\nraise SystemExit('foreign code ran')\n")
    for index in glob.glob(os.path.join(folder, "__pycache__", "*.nbi"))[:3]:
        with open(index, "wb") as f:  # garbage where Numba's index was
            f.write(b"not a pickle")
    for data in glob.glob(os.path.join(folder, "__pycache__", "*.nbc"))[-3:]:
        with open(data, "r+b") as f:  # a truncated compiled entry
            f.truncate(10)
    assert run(tmp_path, 100, kernels="numba") == first


@pytest.mark.parametrize("n", [0, 3])
def test_load_modules_imports_every_module(tmp_path, monkeypatch, n):
    monkeypatch.setenv("GRADC_CACHE_DIR", str(tmp_path))
    sources = {f"gradc_test_mod_{n}_{i}": f"VALUE = {i}\n" for i in range(n)}
    loaded = modules.load_modules(sources)
    assert sorted(loaded) == sorted(sources)
    assert [loaded[k].VALUE for k in sorted(sources)] == list(range(n))
    np.testing.assert_equal(len(loaded), n)


def test_no_helper_unless_asked_or_on_one_cpu(monkeypatch):
    monkeypatch.delenv("GRADC_COMPILE_HELPER", raising=False)
    assert not modules._helper_may_run()
    monkeypatch.setenv("GRADC_COMPILE_HELPER", "0")
    assert not modules._helper_may_run()
    monkeypatch.setenv("GRADC_COMPILE_HELPER", "1")
    if hasattr(os, "sched_getaffinity"):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
        assert not modules._helper_may_run()
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
        assert modules._helper_may_run() == ("mpi4py.MPI" not in sys.modules)


def test_the_helper_fills_numba_cache_and_stops_at_a_taken_module(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADC_CACHE_DIR", str(tmp_path))
    body = ("from numba import njit\n\n\n@njit('void(int64)', cache=True)\n"
            "def f(n):\n    for i in range(n):\n        pass\n")
    names = [f"gradc_helper_test_{i}" for i in range(3)]
    for i, name in enumerate(names):
        modules.write_module(name, body + f"# {i}\n")
    claims = tmp_path / "claims"
    claims.mkdir()
    assert modules.claim(str(claims), names[2])  # taken by "this process": the helper stops
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, "-m", "gradc.codegen.compile_helper", modules.module_dir(),
                    str(claims), *names], env=env, check=True, timeout=300)
    assert [modules.numba_cached(n) for n in names] == [True, True, False]
    assert sorted(os.listdir(claims)) == sorted(names)
