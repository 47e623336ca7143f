"""Generated modules on disk.

Every generated module is a real file in a private cache directory, imported by name, so Numba's
`cache=True` can keep its machine code between processes, and users can open the source. A file
is named by the hash of its content: one whose content does not match its name (truncated,
corrupt, or written by something else) is rewritten, never imported. Files are written to a
temporary name and renamed, so concurrent processes never see half a file.
"""
from __future__ import annotations

import glob
import hashlib
import importlib
import importlib.util
import os
import subprocess
import sys
import tempfile

import numba
import numpy as np

from .. import __version__
from . import rt, vecmath

_loaded_dirs = set()


def cache_root():
    root = os.environ.get("GRADC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "gradc")
    vecmath.enable()  # before the first kernel compiles; decides the cache tag below
    tag = (f"gradc{__version__}-numba{numba.__version__}-numpy{np.__version__}"
           f"-py{sys.version_info[0]}{sys.version_info[1]}-{vecmath.tag()}-{rt.BLAS}")
    path = os.path.join(root, tag.replace(".", "_"))
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def module_dir():
    path = os.path.join(cache_root(), "modules")
    os.makedirs(path, mode=0o700, exist_ok=True)
    if path not in _loaded_dirs:
        sys.path.append(path)
        _loaded_dirs.add(path)
    return path


def content_name(prefix, source):
    return f"{prefix}_{hashlib.sha1(source.encode()).hexdigest()[:16]}"


def write_module(name, source):
    """Write `source` as module `name` unless an identical file is already there."""
    path = os.path.join(module_dir(), name + ".py")
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == source:
                return path
    except (OSError, UnicodeDecodeError):
        pass
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(source)
    os.replace(tmp, path)
    try:  # bytecode of what was there before could pass Python's mtime and size check
        os.unlink(importlib.util.cache_from_source(path))
    except OSError:
        pass
    return path


def load_module(name, source):
    """Import generated module `name` with exactly `source` (writing it first if needed)."""
    mod = sys.modules.get(name)
    if mod is not None and getattr(mod, "__gradc_source__", None) == source:
        return mod
    write_module(name, source)
    sys.modules.pop(name, None)
    importlib.invalidate_caches()
    with vecmath.compiling():  # kernels compile (or load from Numba's cache) on import
        try:
            mod = importlib.import_module(name)
        except Exception:
            # Numba unpickles its cache entries without checking them: a damaged index or data
            # file raises here. Drop this module's entries and compile again (once).
            stale = glob.glob(os.path.join(module_dir(), "__pycache__", f"{name}.*.nb[ic]"))
            if not stale:
                raise
            for path in stale:
                os.unlink(path)
            sys.modules.pop(name, None)
            mod = importlib.import_module(name)
    mod.__gradc_source__ = source
    return mod


# A helper process costs ~0.8 s of CPU before it compiles anything (importing Numba and gradc,
# Numba's first-use set-up); below this many kernels to compile it cannot pay for itself.
HELPER_MIN_MODULES = 6


def numba_cached(name):
    """Whether Numba's disk cache has an index for generated module `name` (it may still be
    stale: then importing compiles, as without it)."""
    return bool(glob.glob(os.path.join(module_dir(), "__pycache__", f"{name}.*.nbi")))


def load_modules(sources):
    """Import generated modules {name: source}. When many are not in Numba's disk cache, a
    helper process (gradc/codegen/compile_helper.py) compiles some into the cache while this one
    compiles the others; each takes a module by creating its claim file, this process from the
    front, the helper from the back, and this one loads the helper's from the cache once it is
    done. Returns {name: module}. GRADC_COMPILE_HELPER=1 turns the helper on (see
    _helper_may_run)."""
    pending = [n for n, src in sources.items()
               if getattr(sys.modules.get(n), "__gradc_source__", None) != src]
    for name in pending:
        write_module(name, sources[name])
    uncached = [n for n in pending if not numba_cached(n)]
    helper = claims = None
    if len(uncached) >= HELPER_MIN_MODULES and _helper_may_run():
        claims = tempfile.mkdtemp(prefix="claims-", dir=module_dir())
        here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(  # this gradc, not another install
            [here] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        helper = subprocess.Popen(
            [sys.executable, "-m", "gradc.codegen.compile_helper", module_dir(), claims,
             *reversed(uncached)], env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    later = []  # the helper's: load them from the cache once it has finished
    try:
        for name in pending:
            if helper is not None and name in uncached and not claim(claims, name):
                later.append(name)
                continue
            load_module(name, sources[name])
    finally:
        if helper is not None:
            try:
                helper.wait(timeout=600 if later else 0)  # (none of its own taken: stop it)
            except subprocess.TimeoutExpired:
                helper.kill()
                helper.wait()
            for name in os.listdir(claims):
                os.unlink(os.path.join(claims, name))
            os.rmdir(claims)
    for name in later:
        load_module(name, sources[name])
    return {name: sys.modules[name] for name in sources}


def _helper_may_run():
    """Only when asked for (GRADC_COMPILE_HELPER=1), with a second CPU for it (not in a process
    pinned to one), and not in an MPI job (its ranks have the CPUs, and some MPIs do not want
    their ranks to fork). Off by default: it pays only with an idle CPU. Measured on 2 cores
    that two other processes kept busy, W2's cold compile took 3.9-4.1 s with it and 2.7-2.8 s
    without; the best run with it at a lighter load was 2.3 s against 2.9 s."""
    if os.environ.get("GRADC_COMPILE_HELPER", "0") != "1" or "mpi4py.MPI" in sys.modules:
        return False
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) >= 2
    return (os.cpu_count() or 1) >= 2


def claim(claims, name):
    """Take module `name` for this process (False if another process took it first)."""
    try:
        os.close(os.open(os.path.join(claims, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        return True
    except FileExistsError:
        return False
