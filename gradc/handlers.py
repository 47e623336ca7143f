"""Which `except` clauses of the user's traced code an exception raised at a call would reach.

gradc's factorizations give NaN where NumPy raises LinAlgError (a compiled function cannot stop
halfway), so a traced `try: L = np.linalg.cholesky(A) except np.linalg.LinAlgError: ...` would
never run its handler and silently return NaN. gradc/functions/lapack.py calls
`refuse_caught_linalg_error` at each function NumPy may raise LinAlgError from: it reads the
exception table of the user's frames (Python 3.11+; on older Pythons it does nothing) and refuses
the call when a handler around it would catch LinAlgError (`except np.linalg.LinAlgError`,
`except ValueError`, `except Exception`, a bare `except:`, a tuple holding one of them).
"""
import builtins
import contextlib
import dis
import functools
import linecache
import os
import re
import sys

import numpy as np

from .errors import UnsupportedOpError

_LOADS = {"LOAD_GLOBAL", "LOAD_NAME", "LOAD_ATTR", "LOAD_FAST", "LOAD_FAST_CHECK",
          "LOAD_FAST_BORROW", "LOAD_DEREF", "LOAD_CLASSDEREF", "LOAD_CONST", "BUILD_TUPLE"}


def refuse_caught_linalg_error(name, when):
    """Raise UnsupportedOpError if the user's traced code calls `name` (np.linalg.cholesky...)
    inside a `try` with a handler that would catch LinAlgError, which NumPy raises `when` (for a
    singular matrix...): gradc gives NaN instead, so that handler would never run."""
    _refuse_caught(np.linalg.LinAlgError, lambda handler: (
        f"{name} is called inside a `try` or `with` whose {handler} catches "
        f"LinAlgError, which NumPy raises for {when}. A compiled function cannot stop "
        "halfway: gradc gives NaN there instead, so the handler would never run and the "
        "result would be NaN, silently. Move the call out of the `try` and apply the "
        "fallback unconditionally (a jitter: `np.linalg.cholesky(A + 1e-6 * "
        "np.eye(n))`; np.linalg.pinv for inv), or check the result (`bad = "
        "np.isnan(L).any()`) and choose with `np.where(bad, fallback, L)` (for values "
        "only: the gradient through a NaN branch is NaN)"))


def refuse_caught_index_error(*indices):
    """Raise UnsupportedOpError if the user's traced code indexes by traced positions (any of
    `indices` a traced integer array) inside a `try` with a handler that would catch IndexError:
    the positions are checked when the compiled function runs, which then raises
    IndexOutOfRangeError out of the call, so that handler would never run."""
    from .ir import Value
    traced = [i for i in indices if isinstance(i, Value) and i.dtype.kind in "iu"
              and i.id not in i.graph.in_range]
    if not traced or traced[0].graph.nested:  # (positions known now are checked now: NumPy's
        return  # IndexError, caught as NumPy's; gradc's own index, in range, is not the user's)
    _refuse_caught(IndexError, lambda handler: (
        f"an index by traced positions inside a `try` whose {handler} catches IndexError: "
        "the positions are checked when the compiled function runs, which cannot go on into "
        "the handler (it raises gradc.IndexOutOfRangeError out of the call). Move the index "
        "out of the `try`, and check or clip the positions first (np.clip(i, 0, n - 1), "
        "np.take(x, i, mode='clip')), choosing the fallback with np.where"))


def _refuse_caught(error_class, message):
    """Raise UnsupportedOpError(message(the handler)) if an `except` of the user's frames
    around the current call would catch `error_class`."""
    from .trace import _frame_kind, _trace, current_graph
    graph = current_graph()
    if graph is None or not graph.tracing:
        return
    # Every user frame out from here (a library's or gradc's frames between are passed over:
    # a decorator's wrapper, singledispatch). Past the traced function, into the code around
    # the compiled call, a LinAlgError it would raise never comes (NaN): where the traced
    # function is the user's, only a clause naming LinAlgError counts there (an `except
    # Exception` around a training loop is no fallback for it); where it is NumPy's own
    # (gradc.jit(np.linalg.cholesky)(A)), any. An IndexError does come out of the compiled
    # call (IndexOutOfRangeError): its search ends there.
    frame, caller, past, users_inside = sys._getframe(1), None, False, False
    error = error_class  # (what goes on out: a handler may raise another, `raise FitError`)
    while frame is not None:
        if frame.f_code is _trace.__code__:
            if error_class is IndexError:
                return
            past = True
        elif (kind := _frame_kind(frame.f_code.co_filename)) == "user" or (
                kind == "library" and not past):  # (an installed package's code the trace
            # runs: its own `except LinAlgError` fallback, a GP library's jitter, gave NaN)
            caller = caller or frame
            users_inside = users_inside or not past
            handler, error = _handler_catching(frame, error, exactly=past and users_inside)
            if handler is not None:
                line, clause = handler
                where = "" if frame is caller else f", in `{frame.f_code.co_name}`"
                if error is not error_class:
                    where += (f", reached as the {error.__name__} a handler raises instead"
                              if error is not ANY else ", reached as what a handler raises "
                              "instead")
                error = UnsupportedOpError(
                    message(f"`{clause}` (line {line}{where})"),
                    source=f"{os.path.basename(caller.f_code.co_filename)}:{caller.f_lineno}")
                error.about_the_handler = True  # (caught by that handler and raised again by
                raise error  # the trace: trace.py's note that NumPy would not have raised is
                # not for it)
        frame = frame.f_back


def _handler_catching(frame, error, exactly=False):
    """(handler, error out): handler is (line, text) of the first `except` clause that an
    `error` raised by the instruction `frame` runs would reach and be caught by, and that does
    not raise again on every path, or None; error out is the class that leaves the frame,
    `error` or what a clause raises instead (`except LinAlgError as e: raise FitError(...) from
    e`: FitError is sought from there on). It follows the exception table from handler to
    enclosing handler, testing each clause's class (CHECK_EXC_MATCH) in turn; a bare `except:`
    catches all; `finally:` and `with` pass it on (a context manager that suppresses it is not
    seen). `exactly`: only a clause of `error`'s class or a subclass."""
    table = _table(frame.f_code)
    if table is None:
        return None, error
    entries, code = table
    offset, seen = frame.f_lasti, set()
    while True:
        target = next((e.target for e in entries if e.start <= offset < e.end), None)
        if target is None or target in seen:
            return None, error
        seen.add(target)
        caught = error
        i = code.index(target)
        if code[i].opname == "PUSH_EXC_INFO":
            i += 1
        if code[i].opname == "WITH_EXCEPT_START":  # (the end of a `with`: one of
            start = next(e.start for e in entries if e.start <= offset < e.end)
            if _suppresses(code, code.index(start), frame, error, exactly):  # contextlib.
                return _with_clause(frame.f_code, code[code.index(start) - 1]), error  # suppress)
            offset = code[i].offset
            continue
        while True:  # the clauses: loads, CHECK_EXC_MATCH, a jump to the next clause if False
            start = i
            while code[i].opname in _LOADS:
                i += 1
            test = code[i]
            if test.opname == "POP_TOP" and i == start:  # a bare `except:`
                if exactly:
                    return None, error
                body = i + 1
            elif test.opname != "CHECK_EXC_MATCH":  # (no clause matched, or a finally/with:
                offset = test.offset  # the exception goes on to the enclosing handler)
                break
            elif _catches(code.instructions[start:i], frame, error, exactly):
                body = i + 2
            else:
                jump = code[i + 1]  # (POP_JUMP_IF_FALSE to the next clause)
                if not jump.opname.startswith("POP_JUMP"):
                    return None, error
                i = code.index(jump.argval)
                continue
            raised = _raises_again(code, body)
            if raised is None:  # (a fallback)
                return _clause(frame.f_code, test), error
            out = {_raised_class(code, body, r, frame) for r in raised}
            offset = raised[0].offset
            error = next(iter(out)) if len(out) == 1 else ANY  # (two classes: either may come)
            if error is None:  # (raise, raise e: the same)
                error = caught
            break


def _suppresses(code, body, frame, error, exactly):
    """Whether the `with` whose block starts at instruction `body` (its BEFORE_WITH's POP_TOP)
    is contextlib.suppress of a class that takes `error` (`with suppress(LinAlgError):` around
    a solve: a fallback)."""
    k = body - 1
    if k < 0 or code[k].opname != "BEFORE_WITH":
        return False
    _, stack = _statement_values(code, 0, k, frame)
    if not stack or stack[0] is not contextlib.suppress:
        return False
    return any(isinstance(c, type) and (issubclass(c, error) if exactly else
                                        error is not ANY and issubclass(error, c))
               for c in stack[1:])


class _Code:
    """A code object's instructions, found by offset."""

    def __init__(self, code):
        self.instructions = list(dis.get_instructions(code))
        self.at = {ins.offset: n for n, ins in enumerate(self.instructions)}

    def index(self, offset):
        return self.at[offset]

    def __getitem__(self, n):
        return self.instructions[n]


@functools.lru_cache(maxsize=256)
def _table(code):
    """(exception table entries, _Code) of `code`, or None without an exception table (before
    Python 3.11) or a handler."""
    entries = getattr(dis.Bytecode(code), "exception_entries", None)
    return (entries, _Code(code)) if entries else None


def _raises_again(code, i):
    """The raise instructions the handler body starting at instruction i ends at, where every
    path through it ends at one (`if strict: raise X from e` then `raise`; after a `with lock:`
    block or a loop flushing the log handlers), or None: a path that goes on past the handler
    or returns (`if STRICT: raise`, a fallback), or code it cannot follow (a `try` inside)."""
    raises, todo, seen = [], [i], set()
    while todo:
        i = todo.pop()
        if i >= len(code.instructions):
            return None
        if i in seen:  # (a loop back: that path is walked already)
            continue
        seen.add(i)
        ins = code[i]
        name = ins.opname
        if name in ("RAISE_VARARGS", "RERAISE"):
            raises.append(ins)
        elif name in ("POP_EXCEPT", "RETURN_VALUE", "RETURN_CONST", "SETUP_WITH",
                      "PUSH_EXC_INFO", "SEND"):
            return None
        elif name in ("JUMP_FORWARD", "JUMP", "JUMP_ABSOLUTE", "JUMP_NO_INTERRUPT",
                      "JUMP_BACKWARD", "JUMP_BACKWARD_NO_INTERRUPT"):
            todo.append(code.index(ins.argval))
        elif name == "FOR_ITER":  # (the loop's body, and past it when it is done)
            todo += [code.index(ins.argval), i + 1]
        elif "JUMP" in name:  # (a branch: both ways)
            todo += [code.index(ins.argval), i + 1]
        else:
            todo.append(i + 1)
    return raises or None


# what a handler raises where its class cannot be looked up (`raise self.Error(...)`, `raise
# make_error(e)`): any clause further out may take it (one naming LinAlgError past the trace)
ANY = type("AnyException", (Exception,), {})


def _raised_class(code, body, raised, frame):
    """The class a handler's `raise X(...)` / `raise X from e` raises (`raised` its
    RAISE_VARARGS, `body` where the handler starts), looked up in `frame`; None for `raise`
    and `raise e` of the exception caught; ANY for one it cannot look up."""
    if raised.opname != "RAISE_VARARGS" or not raised.arg:
        return None
    caught_as = code[body].argval if code[body].opname in ("STORE_FAST", "STORE_NAME") else None
    k = code.index(raised.offset)
    start, stack = _statement_values(code, body, k, frame)  # (the class: the first value)
    first = code[start]
    if (caught_as is not None and k - start == 1 and first.opname.startswith("LOAD_")
            and first.argval == caught_as):
        return None  # (raise e)
    found = stack[0] if stack else None
    return found if isinstance(found, type) and issubclass(found, BaseException) else ANY


_NO_VALUE = frozenset({"PUSH_NULL", "PRECALL", "CALL", "CACHE", "NOP", "EXTENDED_ARG"})


def _statement_values(code, first, k, frame):
    """(start, values): the values the statement that instruction k ends loads, from its first
    instruction on k's line (`start`, not before `first`), looked up in `frame`, in order up to
    the first instruction that is no plain load or whose name is not bound: `raise
    self.Error(...)`'s class, `with contextlib.suppress(LinAlgError)`'s function and class."""
    line = code[k].positions.lineno if getattr(code[k], "positions", None) else None
    start = next((j for j in range(first, k) if getattr(code[j], "positions", None)
                  and code[j].positions.lineno == line), k)
    values = []
    for ins in code.instructions[start:k]:
        if ins.opname in _NO_VALUE:
            continue
        try:
            if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
                values.append(frame.f_globals[ins.argval] if ins.argval in frame.f_globals
                              else getattr(builtins, ins.argval))
            elif ins.opname in ("LOAD_ATTR", "LOAD_METHOD") and values:  # (self.Error)
                values.append(getattr(values.pop(), ins.argval))
            elif ins.opname.startswith("LOAD_FAST") or ins.opname == "LOAD_DEREF":
                values.append(frame.f_locals[ins.argval])
            else:
                break
        except (KeyError, AttributeError):
            break
    return start, values


def _catches(loads, frame, error, exactly=False):
    """Whether the class (or tuple of classes) the `loads` of an except clause compute in
    `frame` catches `error`; by their names (LinAlgError, ValueError, Exception...) where they
    cannot be looked up."""
    stack = []
    try:
        for ins in loads:
            if ins.opname == "LOAD_GLOBAL":
                stack.append(frame.f_globals[ins.argval] if ins.argval in frame.f_globals
                             else getattr(builtins, ins.argval))
            elif ins.opname == "LOAD_NAME":
                scopes = (frame.f_locals, frame.f_globals, vars(builtins))
                stack.append(next(s[ins.argval] for s in scopes if ins.argval in s))
            elif ins.opname == "LOAD_ATTR":
                stack.append(getattr(stack.pop(), ins.argval))
            elif ins.opname == "LOAD_CONST":
                stack.append(ins.argval)
            elif ins.opname == "BUILD_TUPLE":
                stack[len(stack) - ins.arg:] = [tuple(stack[len(stack) - ins.arg:])]
            else:  # (a local or a closure's variable)
                stack.append(frame.f_locals[ins.argval])
        caught = stack[-1]
    except Exception:  # noqa: BLE001 (a name not bound yet: judge by the names it loads)
        names = {error.__name__} if exactly else {cls.__name__ for cls in error.__mro__}
        return any(ins.argval in names for ins in loads)
    classes = caught if isinstance(caught, tuple) else (caught,)
    if error is ANY:  # (a class no name tells: any clause may take it, but past the trace)
        return not exactly and any(isinstance(c, type) for c in classes)
    return any(isinstance(c, type) and (issubclass(c, error) if exactly else issubclass(error, c))
               for c in classes)


def _with_clause(code, instruction):
    """(line, source text) of the `with` statement `instruction` (its BEFORE_WITH) begins."""
    positions = getattr(instruction, "positions", None)
    line = positions.lineno if positions and positions.lineno else 0
    text = re.match(r"\s*(with\b[^:#]*)", linecache.getline(code.co_filename, line))
    return line, text.group(1).strip() if text else "with"


def _clause(code, instruction):
    """(line, source text) of the `except` clause `instruction` belongs to."""
    positions = getattr(instruction, "positions", None)
    line = positions.lineno if positions and positions.lineno else 0
    text = re.match(r"\s*(except\b[^:#]*)", linecache.getline(code.co_filename, line))
    return line, text.group(1).strip() if text else "except"


__all__ = ["refuse_caught_index_error", "refuse_caught_linalg_error"]
