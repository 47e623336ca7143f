"""Damage anywhere in the disk cache is ignored and rebuilt, never run (gradc/codegen/modules.py):
bytes flipped in, or files truncated of, every kind of file a cache holds (generated modules
`.py`, bytecode `.pyc` as Python or an older gradc would leave it, Numba's index `.nbi` and data
`.nbc`, gradc's checksums `.sha256`), and a Numba index replaced by a pickle that runs code. After
each damage a fresh process sharing the cache computes the right answer, bit for bit what it did
at first, and the last one loads every kernel from Numba's cache again (nothing compiles).

Each trial is one child process on one tiny function (one loop kernel and the driver's loop),
seeded, so the whole file is ~14 processes.
"""
import glob
import json
import os
import pickle
import py_compile
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = textwrap.dedent('''
    import json, sys, warnings
    import numpy as np
    import gradc
    from numba.core.registry import CPUDispatcher

    def loss(w, x):
        return np.sum(np.tanh(x * w))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value, grad = gradc.value_and_grad(loss)(np.linspace(-1.0, 1.0, 5),
                                                 np.linspace(0.0, 2.0, 5))
    hits = misses = 0
    for name, module in list(sys.modules.items()):
        if name.startswith("gradc_"):
            for f in vars(module).values():
                if isinstance(f, CPUDispatcher) and f.py_func.__module__ == name:
                    hits += sum(f.stats.cache_hits.values())
                    misses += sum(f.stats.cache_misses.values())
    print(json.dumps({"value": float(value).hex(), "grad": [float(g).hex() for g in grad],
                      "hits": hits, "misses": misses,
                      "warnings": [str(w.message) for w in caught]}))
''')


def run(cache):
    # (through Numba, whose files these are: the direct route's are checked in
    # tests/test_direct_kernels.py)
    env = dict(os.environ, GRADC_CACHE_DIR=str(cache), GRADC_KERNELS="numba",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]  # (a segfault is -11)
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["warnings"] == []
    return out


def check_against_numpy(out):
    w, x = np.linspace(-1.0, 1.0, 5), np.linspace(0.0, 2.0, 5)
    t = np.tanh(x * w)
    np.testing.assert_allclose(float.fromhex(out["value"]), np.sum(t), rtol=1e-12)
    np.testing.assert_allclose([float.fromhex(g) for g in out["grad"]], x * (1 - t * t),
                               rtol=1e-12)


class Planted:
    """A pickle that runs code when loaded (what a Numba index must never be able to do)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A cache the tiny function has been compiled into, and what it computed."""
    root = tmp_path_factory.mktemp("fuzz_cache")
    first = run(root)
    check_against_numpy(first)
    assert first["misses"] > 0 and first["hits"] == 0  # compiled
    warm = run(root)  # compiled from gradc's source, not a .pyc, Numba's cache still works
    assert warm["misses"] == 0 and warm["hits"] == first["misses"]
    (folder,) = glob.glob(os.path.join(str(root), "*", "modules"))
    return root, folder, first


def files_of_kind(folder, kind):
    if kind == ".pyc":  # gradc writes none: make them, as Python would beside each module
        for path in glob.glob(os.path.join(folder, "gradc_*.py")):
            py_compile.compile(path, doraise=True)
        return sorted(glob.glob(os.path.join(folder, "__pycache__", "*.pyc")))
    where = folder if kind in (".py", ".sha256") else os.path.join(folder, "__pycache__")
    return sorted(glob.glob(os.path.join(where, "gradc_*" + kind)))


def damage(path, rng, how):
    with open(path, "rb") as f:
        data = bytearray(f.read())
    if how == "flip":
        at = int(rng.integers(len(data)))
        data[at] ^= int(rng.integers(1, 256))
    else:  # truncate
        data = data[:int(rng.integers(len(data)))]
    with open(path, "wb") as f:
        f.write(bytes(data))
    return bytes(data)


@pytest.mark.parametrize("kind", [".py", ".pyc", ".nbi", ".nbc", ".sha256"])
def test_damaged_cache_files_are_ignored_and_rebuilt(cache, kind):
    root, folder, first = cache
    rng = np.random.default_rng([7, len(kind), ord(kind[-1])])
    for how in ("flip", "truncate"):
        candidates = files_of_kind(folder, kind)
        assert candidates, kind
        path = candidates[int(rng.integers(len(candidates)))]
        damaged = damage(path, rng, how)
        out = run(root)
        assert (out["value"], out["grad"]) == (first["value"], first["grad"]), (kind, how)
        if kind != ".pyc":  # (never read: left as it is)
            with open(path, "rb") as f:
                assert f.read() != damaged, (path, how)  # rebuilt


def test_a_planted_numba_index_never_runs_and_the_cache_still_works(cache, tmp_path):
    root, folder, first = cache
    marker = tmp_path / "planted code ran"
    for index in files_of_kind(folder, ".nbi"):
        with open(index, "wb") as f:
            pickle.dump(Planted(str(marker)), f)
    out = run(root)
    assert not marker.exists()
    assert (out["value"], out["grad"]) == (first["value"], first["grad"])
    again = run(root)  # everything it rebuilt is trusted again: loaded, not compiled
    assert again["misses"] == 0 and again["hits"] == first["misses"]
