"""`ast.parse` behind one lock: CPython before 3.12 (gh-106905) can fail with "SystemError: AST
constructor recursion depth mismatch" when two threads build syntax trees at once (gradc
compiles kernels, and writes modules, from several threads)."""
import ast
import threading

_LOCK = threading.Lock()


def parse(text, mode="exec"):
    with _LOCK:
        return ast.parse(text, mode=mode)
