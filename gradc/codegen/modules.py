"""Generated modules on disk.

Every generated module is a real file in a private cache directory, imported by name, so Numba's
`cache=True` can keep its machine code between processes, and users can open the source. A file
is named by the hash of its content: one whose content does not match its name (truncated,
corrupt, or written by something else) is rewritten, never imported. Files are written to a
temporary name and renamed, so concurrent processes never see half a file.
"""
from __future__ import annotations

import hashlib
import importlib
import os
import sys
import tempfile

import numba
import numpy as np

from .. import __version__
from . import vecmath

_loaded_dirs = set()


def cache_root():
    root = os.environ.get("GRADC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "gradc")
    vecmath.enable()  # before the first kernel compiles; decides the cache tag below
    tag = (f"gradc{__version__}-numba{numba.__version__}-numpy{np.__version__}"
           f"-py{sys.version_info[0]}{sys.version_info[1]}-{vecmath.tag()}")
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
        mod = importlib.import_module(name)
    mod.__gradc_source__ = source
    return mod
