"""What a forked child must make anew: the locks other threads of the parent held.

A child has only the thread that forked; a lock another thread held at that moment stays held
in the child, for good. A child (multiprocessing's 'fork' start method, os.fork) that called a
function another parent thread was calling waited forever on that signature's lock, and one
that compiled while a parent thread compiled waited on the loader's. After a fork, the child
replaces every lock gradc keeps (and undoes what a parent thread's compile or trace had
switched for the process: the garbage collector paused, NumPy's constructors wrapped). The
pool's threads start again on their own (codegen/pool_rt.py).
"""
import gc
import os
import threading
import weakref

# objects -> the name of their lock attribute and how to make a new one
_HOLDERS = weakref.WeakKeyDictionary()


def track(obj, attribute, make=threading.Lock):
    """Make `obj.<attribute>` anew (with `make`) in a forked child."""
    _HOLDERS.setdefault(obj, []).append((attribute, make))


def _after_fork_in_child():
    from . import compile as compile_, ir, literals, random, trace
    draws = random.DRAWS
    trace.TRACING = threading.RLock()  # (a parent thread's trace held it)
    random.DRAWS = threading.RLock()
    compile_._LOADING = threading.RLock()
    ir._PAUSES = threading.Lock()
    if ir._paused[0]:  # (a parent thread's compile paused the collector)
        if ir._paused[1]:
            gc.enable()
        ir._paused[:] = [0, False]
    literals._lock = threading.Lock()
    if literals._tracing:  # (a parent thread's trace wrapped NumPy's constructors)
        literals._tracing = 0
        for name, original in literals._ORIGINAL.items():
            setattr(literals.np, name, original)
    for obj, locks in list(_HOLDERS.items()):
        for attribute, make in locks:
            # (a program that draws from Generators shares random.DRAWS: the new one)
            setattr(obj, attribute, random.DRAWS if getattr(obj, attribute) is draws else make())


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
