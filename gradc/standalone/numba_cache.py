"""Whether Numba can cache a standalone module's kernels: copied verbatim (from the first
definition on) into every CPU module `gradc compile` writes, before its kernels."""


def _numba_can_cache():
    """Whether Numba finds a writable place to cache kernels defined in this file (as it looks
    for one: a __pycache__ beside it, NUMBA_CACHE_DIR, the user's cache directory)."""
    from numba.core.caching import FunctionCache
    try:
        FunctionCache(_numba_can_cache)
    except Exception:  # RuntimeError: "no locator available"
        return False
    return True
