"""Generated modules on disk, and what gradc trusts of its disk cache.

Every generated module is a real file in a cache directory, so Numba's `cache=True` can keep its
machine code between processes, and users can open the source. Nothing there runs on trust:

- The directories. Every directory from the cache root down must be the user's and writable by
  no one else; a sticky directory (like /tmp) may hold one of them (ssh's StrictModes). A cache
  that fails this, or that cannot be written (a regular file, a read-only directory, a full
  disk), is not used: gradc caches in a private temporary directory for the rest of the process
  (or in memory, when even that fails) and says so once, with a CacheWarning.
- The source. A module runs from the source gradc generated, compiled in memory: no `.pyc` is
  ever read. (A warm start takes that source from the program cache, gradc/program_cache.py,
  whose entries are checksummed and live under the same checked directories.) The file is
  rewritten when it differs (truncated, damaged, foreign), because Numba keys its cache on it.
- Numba's cache files, an index (a pickle) and data (machine code) that Numba loads unchecked.
  After a module is imported, the sha256 of each of its Numba files goes into a checksum file
  beside the module (`NAME.sha256`); before the next import, Numba files that do not match are
  deleted, so Numba compiles those kernels again instead of loading them.
- The kernels compiled straight to LLVM IR (codegen/llvm_cpu.py): one file of machine code
  per program (`gradc_direct_*.bin`), loaded only when the sha256 in its header matches the rest;
  otherwise it is deleted and compiled again.

Files are written to a temporary name and renamed, so concurrent processes never see half a file.
"""
from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import linecache
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import types
import warnings

import numba
import numpy as np
from numba.core.caching import FunctionCache

from .._version import __version__
from ..errors import CacheWarning
from . import driver_rt, gemm_rt, llvm_calls, llvm_cpu, llvm_expr, native, pool_rt, rt, vecmath


def _numba_without_scipy_linalg():
    """Numba's first compile or cache load imports numba.np.arraymath, which imports
    scipy.linalg (~0.25 s: a third of a warm start) only to set a flag, whether np.dot in
    Numba code can use BLAS (its `_check_blas`). gradc's kernels call NumPy's OpenBLAS. Import
    that module with the question answered by whether SciPy is installed, without importing
    it; Numba's np.dot still imports scipy.linalg when a user's own @njit code first calls it.
    (Not in rt.py: AOT modules copy that, and import only NumPy and Numba.)"""
    import importlib.util
    if "numba.np.arraymath" in sys.modules:
        return
    import numba.np.linalg as linalg

    def scipy_installed():
        if importlib.util.find_spec("scipy") is None:
            raise ImportError("scipy 0.16+ is required for linear algebra")

    real, linalg.ensure_blas = linalg.ensure_blas, scipy_installed
    try:
        import numba.np.arraymath  # noqa: F401  (binds the stand-in for its one check)
    finally:
        linalg.ensure_blas = real


_numba_without_scipy_linalg()

_places = {}  # configured cache root -> the module directory in use for it (None: in memory)
_temporary = {}  # "root": this process's private temporary cache root, once made (None: failed)
_numba_dirs = {}  # module directory -> the directory Numba caches its modules' kernels in
_untold = []  # (place, why) not yet in a warning
_told = set()


# --- where: the cache directory, checked, or a fallback -------------------------------------

def configured_root():
    """The cache root the user asked for: GRADC_CACHE_DIR, else the XDG cache directory's gradc."""
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.environ.get("GRADC_CACHE_DIR") or os.path.join(cache_home, "gradc")


def cache_tag():
    """The per-version directory name under the root: nothing compiled by another gradc, Numba,
    NumPy or Python, or with the libmvec hook or the kernels' route (GRADC_KERNELS) set
    differently, is ever loaded."""
    vecmath.enable()  # before the first kernel compiles; decides the tag
    tag = (f"gradc{__version__}-numba{numba.__version__}-numpy{np.__version__}"
           f"-py{sys.version_info[0]}{sys.version_info[1]}-{vecmath.tag()}-{rt.BLAS}-{rt.GEMM}"
           f"-{llvm_cpu.route()}-{_runtime_digest()}")
    return tag.replace(".", "_")


def _runtime_digest():
    """The code-generation inputs outside a module's own text, which is its name: the helpers
    generated kernels and drivers call (rt.py, gemm_rt.py, driver_rt.py, pool_rt.py, and
    native.py, which compiles the last three), the libmvec rewrite of their IR (vecmath.py)
    and the kernels' compiler (llvm_cpu.py, llvm_expr.py, llvm_calls.py). Editing one must not load code
    compiled with the old ones."""
    digest = hashlib.sha1()
    for module in (rt, gemm_rt, driver_rt, pool_rt, native, vecmath, llvm_cpu, llvm_expr,
                   llvm_calls):
        with open(module.__file__, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:8]


def module_dir():
    """The directory generated modules go in (Numba caches beside them): ROOT/TAG/modules of the
    configured root when it is safe and writable, else of a private temporary root; None when
    not even that works (modules are then compiled in memory and nothing is cached). Decided
    once per process and root; a warning says why whenever it is not the configured root."""
    root = configured_root()
    if root not in _places:
        vecmath.enable()
        _places[root] = _first_usable((root, _temporary_root))
        _tell(_places[root])
    return _places[root]


def bind_products(source):
    """Bind gradc's own products (codegen/gemm_rt.py) that the kernels of `source` call before
    they link, each compiled (or read from the disk cache) the first time a program calls it:
    a model without float64 products, or without products, compiles none (~45 ms each)."""
    if rt.GEMM != "avx512":
        return
    for p in gemm_rt.precisions_called(source):
        if not gemm_rt.address(p):
            gemm_rt.bind_products(native.native_engine(
                f"gradc_gemm_{p}", f"gemm {p}", lambda: gemm_rt.module_ir(p), 3, gemm_rt.STATS), p)
            pool_rt.products_bound()


def _first_usable(roots):
    """The module directory under the first root that can be used (a callable root is made
    only when reached); None when none can. Why each could not goes into _untold."""
    for root in roots:
        if callable(root):
            root = root()
            if root is None:
                continue
        try:
            return _prepare(root)
        except UnsafeDirectory as e:
            _untold.append((root, str(e)))
        except OSError as e:
            _untold.append((root, _os_reason(e)))
    return None


def _prepare(root):
    """Make ROOT/TAG/modules/__pycache__ (each missing one 0700), check each directory from the
    root down and that the last two can be written; returns ROOT/TAG/modules. Raises
    UnsafeDirectory or OSError."""
    root = os.path.abspath(root)
    try:  # above the root: not gradc's to judge
        os.makedirs(os.path.dirname(root), exist_ok=True)
    except FileExistsError:  # not a directory: say so below, for the root itself
        pass
    chain = [root]
    for part in (cache_tag(), "modules", "__pycache__"):
        chain.append(os.path.join(chain[-1], part))
    for i, path in enumerate(chain):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        why = distrust(path, may_be_sticky=i < len(chain) - 1)
        if why:
            raise UnsafeDirectory(why)
    for path in chain[-2:]:  # the modules and Numba's cache beside them (__pycache__)
        fd, probe = tempfile.mkstemp(dir=path, suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    _forget_unused_versions(root, chain[1])
    return chain[-2]


# a version directory (ROOT/TAG) no process used for this many days is deleted
UNUSED_DAYS = float(os.environ.get("GRADC_CACHE_DAYS", "30"))


def _forget_unused_versions(root, current):
    """Delete the version directories under `root` (ROOT/TAG: another gradc, Numba, NumPy or
    Python, or gradc's runtime edited) that no process has used for UNUSED_DAYS days: nothing
    loads them again, and each holds every program compiled with it (a development machine
    held eight, 1 GB). The current one is marked used (its time set to now)."""
    os.utime(current)
    cutoff = time.time() - UNUSED_DAYS * 86400.0
    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in names:
        path = os.path.join(root, name)
        if not (name.startswith("gradc") and "-numba" in name) or path == current:
            continue
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and st.st_mtime < cutoff:
            shutil.rmtree(path, ignore_errors=True)


class UnsafeDirectory(Exception):
    """A cache directory someone else could write into."""


def distrust(path, may_be_sticky=True):
    """Why directory `path` cannot hold gradc's cache (another user could plant files there),
    or None. Links are not followed for the check: a symbolic link must be the user's, then
    what it points to is checked too. A sticky directory (others cannot move or delete what is
    not theirs) owned by root or the user may hold the next one, when `may_be_sticky`."""
    me = os.getuid()
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        if st.st_uid != me:
            return (f"{path} is a symbolic link owned by {_user(st.st_uid)}, not by you "
                    f"({_user(me)})")
        st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory"
    writable_by_others = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if st.st_uid == me and not writable_by_others:
        return None
    if may_be_sticky and st.st_mode & stat.S_ISVTX and st.st_uid in (0, me):
        return None  # the next directory down is checked on its own
    if st.st_uid != me:
        return f"{path} is owned by {_user(st.st_uid)}, not by you ({_user(me)})"
    who = " and ".join(w for bit, w in ((stat.S_IWGRP, "its group"), (stat.S_IWOTH, "others"))
                       if st.st_mode & bit)
    return f"{path} is writable by {who} (mode {stat.S_IMODE(st.st_mode):o})"


def _user(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _os_reason(error):
    where = f"{error.filename}: " if error.filename else ""
    return f"{where}{error.strerror or error}"


def _temporary_root():
    """This process's private cache root (mkdtemp: 0700, an unguessable name), removed at exit;
    None when there is no usable temporary directory."""
    if "root" not in _temporary:
        try:
            _temporary["root"] = tempfile.mkdtemp(prefix="gradc-cache-")
        except OSError as e:
            _temporary["root"] = None
            _untold.append(("a temporary directory", _os_reason(e)))
        else:
            atexit.register(shutil.rmtree, _temporary["root"], ignore_errors=True)
    return _temporary["root"]


def _abandon(folder, error):
    """Writing under `folder` failed (`error`: a full disk, a directory made read-only...): every
    root that used it moves on, to the temporary root, or to memory when it was that one."""
    _untold.append((os.path.dirname(os.path.dirname(folder)), _os_reason(error)))
    temporary = _temporary.get("root")
    if temporary and folder.startswith(temporary + os.sep):
        instead = None
    else:
        instead = _first_usable((_temporary_root,))
    for root, used in _places.items():
        if used == folder:
            _places[root] = instead


def _tell(folder):
    """One warning for the reasons gathered since the last (each told once per process): which
    cache was refused and why, and where gradc caches instead (`folder`, or None: memory)."""
    news = [(place, why) for place, why in _untold if (place, why) not in _told]
    _untold.clear()
    if not news:
        return
    _told.update(news)
    refused = "; nor in ".join(f"{place}: {why}" for place, why in news)
    if folder is None:
        instead = "It keeps compiled code in memory instead: nothing is cached on disk"
    else:
        instead = (f"It caches in {os.path.dirname(os.path.dirname(folder))} instead, for this "
                   "process only")
    _warn(f"gradc does not cache compiled code in {refused}. {instead}. To cache between runs, "
          "set GRADC_CACHE_DIR to a directory that is yours and writable only by you.")


def _warn(message):
    """Warn at the user's line (the innermost frame outside gradc, NumPy and other libraries)."""
    from ..trace import _user_frame
    frame, _ = _user_frame(sys._getframe(1))
    if frame is None:
        warnings.warn(message, CacheWarning, stacklevel=2)
    else:
        warnings.warn_explicit(message, CacheWarning, frame.f_code.co_filename, frame.f_lineno,
                               module=frame.f_globals.get("__name__"))


# --- the modules -----------------------------------------------------------------------------

def content_name(prefix, source):
    return f"{prefix}_{hashlib.sha1(source.encode()).hexdigest()[:16]}"


def write_module(name, source, folder=None):
    """Write `source` as module `name` in `folder` (default: module_dir()) unless an identical
    file is already there; returns its path."""
    path = os.path.join(folder or module_dir(), name + ".py")
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == source:
                return path
    except (OSError, UnicodeDecodeError):
        pass
    write_atomically(path, source.encode("utf-8"))
    return path


def write_atomically(path, data):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_checked(path, magic, payload):
    """`payload` at `path` after a line of `magic` and its sha256, written atomically (a
    machine-code file: read_checked reads it back only whole and unchanged)."""
    write_atomically(path, magic + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)


def read_checked(path, magic):
    """The payload write_checked left at `path`, or None: no file, or one that is damaged,
    truncated or foreign (another `magic`), which is deleted: never loaded."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    head = len(magic) + 65
    if data[:len(magic)] == magic and \
            data[head - 65:head - 1] == hashlib.sha256(data[head:]).hexdigest().encode():
        return data[head:]
    with contextlib.suppress(OSError):
        os.unlink(path)
    return None


def load_module(name, source):
    """Import generated module `name` with exactly `source`: from the cache (writing the file
    first if needed), or where module_dir() falls back to when that cannot be written."""
    mod = sys.modules.get(name)
    if mod is not None and getattr(mod, "__gradc_source__", None) == source:
        return mod
    while True:
        folder = module_dir()
        if folder is None:
            mod = _load_in_memory(name, source)
            break
        try:
            mod = load_from(folder, name, source)
            break
        except OSError as e:
            _abandon(folder, e)  # and try again where the cache went
    _tell(folder)
    return mod


def load_from(folder, name, source):
    """Import module `name` from `folder`: write the file if it differs from `source`, delete
    the Numba cache files gradc did not record, run the source, record what Numba used or
    wrote. Raises OSError when something cannot be written."""
    path = write_module(name, source, folder)
    numba_dir = numba_cache_dir(folder, path)
    checked = _drop_unrecorded(folder, name, numba_dir)
    with vecmath.compiling():  # kernels compile (or load from Numba's cache) as the module runs
        mod = _run_module(name, source, path)
    _record(folder, name, numba_dir, checked)
    return mod


def _run_module(name, source, filename):
    """Run `source` as a fresh module `name`, compiled here (never from a `.pyc`). It is in
    sys.modules while it runs, as with an import: Numba finds cached kernels' globals there."""
    bind_products(source)
    code = compile(source, filename, "exec", dont_inherit=True)
    module = types.ModuleType(name)
    module.__file__ = filename
    sys.modules[name] = module
    try:
        exec(code, module.__dict__)
    except BaseException:
        if sys.modules.get(name) is module:
            del sys.modules[name]
        raise
    module.__gradc_source__ = source
    return module


def _load_in_memory(name, source):
    """No directory can be written: run the module from memory, with Numba's disk cache off."""
    filename = f"<gradc {name}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    rt.JIT_OPTIONS["cache"] = False  # the generated modules take their options from rt
    try:
        with vecmath.compiling():
            return _run_module(name, source, filename)
    finally:
        rt.JIT_OPTIONS["cache"] = True


# --- Numba's cache files, checked against what gradc recorded --------------------------------

def numba_cache_dir(folder, path):
    """Where Numba caches the kernels of the modules in `folder` (`path`: one of them), by
    Numba's own choice: NUMBA_CACHE_DIR's directory for `folder` if set, else folder/__pycache__."""
    if folder not in _numba_dirs:
        scope = {"__name__": os.path.basename(path)[:-3]}
        exec(compile("def probe():\n    pass\n", path, "exec", dont_inherit=True), scope)
        try:
            _numba_dirs[folder] = FunctionCache(scope["probe"]).cache_path
        except RuntimeError as e:  # "no locator available": it could not write anywhere
            raise OSError(f"Numba cannot write a cache for {path} ({e})") from None
    return _numba_dirs[folder]


def _numba_files(numba_dir, name):
    """{file name: path} of Numba's index and data files for module `name`."""
    prefix = name + "."
    try:
        entries = os.listdir(numba_dir)
    except FileNotFoundError:
        return {}
    return {e: os.path.join(numba_dir, e) for e in entries
            if e.startswith(prefix) and e.endswith((".nbi", ".nbc"))}


def _sums_path(folder, name):
    return os.path.join(folder, name + ".sha256")


def _drop_unrecorded(folder, name, numba_dir):
    """Delete module `name`'s Numba files whose sha256 is not the one gradc recorded (damaged,
    foreign, or left by a process that stopped first); returns the others, {file: (stat key,
    sha256)}. Raises OSError when one cannot be deleted (Numba would load it)."""
    try:
        with open(_sums_path(folder, name), encoding="utf-8") as f:
            recorded = json.load(f)
        if recorded.get("numba_dir") != numba_dir:
            recorded = {}
    except (OSError, ValueError, AttributeError):
        recorded = {}
    sums = recorded.get("files", {})
    kept = {}
    for entry, path in _numba_files(numba_dir, name).items():
        seen = _hash(path)
        if seen is not None and isinstance(sums, dict) and sums.get(entry) == seen[1]:
            kept[entry] = seen
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    return kept


def _record(folder, name, numba_dir, checked):
    """Write module `name`'s checksum file for the Numba files it has now, unless they are the
    ones just checked (a warm start writes nothing)."""
    now = {}
    for entry, path in _numba_files(numba_dir, name).items():
        try:
            key = _stat_key(os.stat(path))
        except OSError:
            continue
        seen = checked[entry] if entry in checked and checked[entry][0] == key else _hash(path)
        if seen is not None:
            now[entry] = seen
    if now == checked and (now or not os.path.exists(_sums_path(folder, name))):
        return
    files = {entry: digest for entry, (_, digest) in sorted(now.items())}
    write_atomically(_sums_path(folder, name),
                     json.dumps({"numba_dir": numba_dir, "files": files}).encode())


def _hash(path):
    """(stat key, sha256) of the file at `path`; None when it cannot be read."""
    try:
        with open(path, "rb") as f:
            key = _stat_key(os.fstat(f.fileno()))
            return key, hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def _stat_key(st):
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def numba_cached(name, folder=None):
    """Whether Numba's disk cache has an index for generated module `name` (it may still be
    stale: then importing compiles, as without it)."""
    folder = folder or module_dir()
    if folder is None:
        return False
    numba_dir = numba_cache_dir(folder, os.path.join(folder, name + ".py"))
    return any(e.endswith(".nbi") for e in _numba_files(numba_dir, name))


# --- many modules at once, with a helper process -------------------------------------------

# A helper process costs ~0.8 s of CPU before it compiles anything (importing Numba and gradc,
# Numba's first-use set-up); below this many kernels to compile it cannot pay for itself.
HELPER_MIN_MODULES = 6


def load_modules(sources):
    """Import generated modules {name: source}. When many are not in Numba's disk cache, a
    helper process (gradc/codegen/compile_helper.py) compiles some into the cache while this one
    compiles the others; each takes a module by creating its claim file, this process from the
    front, the helper from the back, and this one loads the helper's from the cache once it is
    done. Returns {name: module}. GRADC_COMPILE_HELPER=1 turns the helper on (see
    _helper_may_run)."""
    pending = [n for n, src in sources.items()
               if getattr(sys.modules.get(n), "__gradc_source__", None) != src]
    helper, claims, uncached = _start_helper(pending, sources)
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
            shutil.rmtree(claims, ignore_errors=True)
    for name in later:
        load_module(name, sources[name])
    return {name: sys.modules[name] for name in sources}


def _start_helper(pending, sources):
    """(helper process, claims directory, modules it may take), or (None, None, []) when a
    helper would not pay, may not run, or the cache cannot be written."""
    if len(pending) < HELPER_MIN_MODULES or not _helper_may_run():
        return None, None, []
    folder = module_dir()
    if folder is None:
        return None, None, []
    try:
        for name in pending:
            write_module(name, sources[name], folder)
        uncached = [n for n in pending if not numba_cached(n, folder)]
        if len(uncached) < HELPER_MIN_MODULES:
            return None, None, []
        claims = tempfile.mkdtemp(prefix="claims-", dir=folder)
    except OSError as e:
        _abandon(folder, e)  # the loads that follow say so, and go where the cache went
        return None, None, []
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(  # this gradc, not another install
        [here] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    helper = subprocess.Popen(
        [sys.executable, "-m", "gradc.codegen.compile_helper", folder, claims,
         *reversed(uncached)], env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return helper, claims, uncached


def _helper_may_run():
    """Only when asked for (GRADC_COMPILE_HELPER=1), with a second CPU for it (not in a process
    pinned to one), and not in an MPI job (its ranks have the CPUs, and some MPIs do not want
    their ranks to fork). Off by default: it pays only with an idle CPU. Measured on 2 cores
    that two other processes kept busy, the MLP benchmark's (784-256-256-10) cold compile took
    3.9-4.1 s with it and 2.7-2.8 s without; the best run with it at a lighter load was 2.3 s against 2.9 s."""
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
