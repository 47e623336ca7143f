"""np.linalg calls inside a `try` whose handler would catch LinAlgError, through the public API.

gradc gives NaN where NumPy raises LinAlgError (a singular matrix, one not positive definite, a
NaN for the SVD), so such a handler (a jitter, a pinv fallback) would never run and the result
would be NaN, silently: gradc refuses the call, naming its line (gradc/handlers.py). A handler
that cannot catch LinAlgError, a call outside any `try`, and the functions NumPy does not raise
it from trace as before. The refusals come while tracing, before anything compiles; the cases
that must not be refused compile once.
"""
import contextlib
import importlib.util
import inspect
import os
import sys
from numpy.linalg import LinAlgError

import numpy as np
import pytest

import gradc
from _finite_differences import central_difference

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11),
                                reason="reads the exception table of Python 3.11+")

A = np.array([[1.0, 1.0], [1.0, 1.0]])  # positive semidefinite, singular: NumPy raises
SPD = np.array([[4.0, 1.0], [1.0, 3.0]])
HERE = os.path.basename(__file__)


def _line(fun, text):
    """`file:line` of the first line of `fun`'s source holding `text`."""
    lines, start = inspect.getsourcelines(fun)
    return f"{HERE}:{start + next(i for i, s in enumerate(lines) if text in s)}"


def _refused(call, where, *parts):
    """The refusal `call()` raises: at `where` (file:line), its message holding `parts`."""
    with pytest.raises(gradc.UnsupportedOpError) as info:
        call()
    message = str(info.value)
    assert message.startswith(where + ": "), message
    for part in ("LinAlgError", "NaN", "the handler would never run", *parts):
        assert part in message, (part, message)
    return message


def chol_with_jitter(A):
    try:
        L = np.linalg.cholesky(A)
    except np.linalg.LinAlgError:
        L = np.linalg.cholesky(A + 1e-3 * np.eye(A.shape[0]))
    return L.sum()


def inv_or_pinv(A):
    try:
        return np.linalg.inv(A).sum()
    except LinAlgError:  # (imported by name)
        return np.linalg.pinv(A).sum()


def test_cholesky_in_try_except_linalgerror_is_refused_by_jit():
    line = _line(chol_with_jitter, "except np.linalg.LinAlgError").split(":")[1]
    _refused(lambda: gradc.jit(chol_with_jitter)(A),
             _line(chol_with_jitter, "L = np.linalg.cholesky(A)"),
             "np.linalg.cholesky", f"`except np.linalg.LinAlgError` (line {line})",
             "not positive definite", "np.linalg.cholesky(A + 1e-6 * np.eye(n))")


def test_inv_in_try_except_imported_linalgerror_is_refused_by_grad():
    _refused(lambda: gradc.grad(inv_or_pinv)(A), _line(inv_or_pinv, "np.linalg.inv(A)"),
             "np.linalg.inv", "`except LinAlgError`", "singular matrix")


def _user_function(tmp_path, call, handler):
    """f(A) from a user file: `call` on line 3, inside `try` with `handler` on line 4."""
    path = tmp_path / "handlers_case.py"
    path.write_text("import numpy as np\nimport gradc.scipy.linalg as gsl\n"
                    "def f(A):\n"
                    "    try:\n"
                    f"        out = {call}\n"
                    f"    {handler}\n"
                    "        out = A\n"
                    "    out = out[0] if isinstance(out, tuple) else out\n"
                    "    return np.sum(out)\n")
    spec = importlib.util.spec_from_file_location(f"handlers_case_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.f


@pytest.mark.parametrize("handler", [
    "except ValueError:", "except Exception:", "except BaseException:", "except:",
    "except (KeyError, np.linalg.LinAlgError):", "except (KeyError, ValueError) as e:",
    "except KeyError:\n        out = 1\n    except Exception as e:"])
def test_every_handler_that_catches_linalgerror_is_refused(tmp_path, handler):
    """LinAlgError's bases (ValueError, Exception, BaseException), a bare except, a tuple, a
    later clause. (A handler that catches gradc's refusal too runs, and gradc raises the
    refusal again after the trace.)"""
    f = _user_function(tmp_path, "np.linalg.solve(A, np.ones(2))", handler)
    clause = handler.rsplit("\n", 1)[-1].strip().rstrip(":")
    _refused(lambda: gradc.jit(f)(A), "handlers_case.py:5", "np.linalg.solve is called",
             f"`{clause}`", "singular matrix")


@pytest.mark.parametrize("call, name", [
    ("np.linalg.svd(A)", "svd"), ("np.linalg.svd(A, compute_uv=False)", "svd"),
    ("np.linalg.pinv(A)", "pinv"), ("np.linalg.lstsq(A, np.ones(2))", "lstsq"),
    ("np.linalg.matrix_power(A, -2)", "matrix_power"), ("np.linalg.cond(A)", "cond"),
    ("np.linalg.matrix_rank(A)", "matrix_rank"), ("np.linalg.norm(A, 2)", "svd"),
    ("np.linalg.cholesky(A, upper=True)", "cholesky"), ("gsl.cho_factor(A)", "cholesky"),
    ("gsl.solve_triangular(A, np.ones(2))", "scipy.linalg.solve_triangular"),
    ("gsl.cho_solve((A, True), np.ones(2))", "scipy.linalg.solve_triangular")])
def test_every_function_numpy_may_raise_from_is_refused(tmp_path, call, name):
    """The SVD's (NumPy raises for NaN), matrix_power's inverse, norm(ord=2) through the SVD,
    gradc.scipy.linalg.cho_factor through cholesky, solve_triangular (SciPy raises for a zero
    on the diagonal: gradc gives inf) and cho_solve through it."""
    f = _user_function(tmp_path, call, "except np.linalg.LinAlgError:")
    name = name if "." in name else f"np.linalg.{name}"
    _refused(lambda: gradc.jit(f)(A), "handlers_case.py:5", f"{name} is called")


def _helper(A):
    return np.linalg.cholesky(A)  # (no try here: the caller's catches)


def outer(A):
    try:
        L = _helper(A)
    except ValueError:
        L = np.zeros_like(A)
    return L.sum()


def test_handler_of_a_calling_user_function_is_refused():
    _refused(lambda: gradc.jit(outer)(A), _line(_helper, "np.linalg.cholesky(A)"),
             "`except ValueError`", "in `outer`")


def not_caught(A, B):
    try:
        L = np.linalg.cholesky(B)  # (KeyError cannot be a LinAlgError)
        k = {"a": 1.0}["a"]
    except KeyError:
        k = 0.0
    x = np.linalg.solve(B, np.ones(2))  # (outside any try)
    try:
        y = np.linalg.inv(B)
    finally:  # (passes the exception on: no handler)
        k = k + 1.0
    try:
        # (NumPy does not raise here: det, eigvalsh, qr; cond(p=1) of a singular matrix is inf)
        d = np.linalg.det(A) + np.linalg.eigvalsh(A).sum() + np.linalg.qr(B).R.sum()
        c = np.linalg.cond(B, 1) + np.linalg.svd(A, hermitian=True).S.sum()
    except Exception:
        d = c = 0.0
    try:
        w = {}["missing"]
    except KeyError:  # (a fallback inside the handler is not in the try)
        w = np.linalg.cholesky(B + 1e-3 * np.eye(2)).sum()
    return L.sum() * k + x.sum() + y.sum() + d + c + w


def test_handlers_that_cannot_catch_it_and_calls_outside_a_try_compile():
    np.testing.assert_allclose(gradc.jit(not_caught)(A, SPD), not_caught(A, SPD), rtol=1e-12)
    np.testing.assert_allclose(gradc.grad(not_caught, argnums=1)(A, SPD),
                               central_difference(lambda B: not_caught(A, B), SPD),
                               rtol=1e-5, atol=1e-7)


def test_a_refusal_its_handler_catches_is_raised_again_without_the_caught_refusal_note():
    """`except Exception:` catches the refusal itself, which the trace raises again: without the
    note for refusals code catches ("NumPy would not have raised there"), which is not so."""
    def f(a):
        try:
            low = np.linalg.cholesky(a)
        except Exception:
            low = np.linalg.cholesky(a + 1e-6 * np.eye(2))
        return low.sum()

    with pytest.raises(gradc.UnsupportedOpError, match="catches LinAlgError") as info:
        gradc.jit(f)(np.eye(2))
    assert "would not have raised" not in str(info.value)


TABLE = np.arange(15.0).reshape(5, 3)


def index_fallback(x, i):
    try:
        v = x[i]  # INDEX-IN-TRY
    except IndexError:
        v = x[0] * 0
    return v


def indexes_caught_as_numpys(x, i):
    try:
        v = x[[0, 9]]  # (static positions: NumPy's IndexError while tracing, its handler runs)
    except IndexError:
        v = x[:2] * 0
    try:
        w = np.take(x, i, mode="clip") + x[np.argmax(x)]  # (no IndexError can come)
    except IndexError:
        w = 0.0
    return v * w


def index_in_a_caller_try(x, i):
    try:
        return np.take(x, i) + index_fallback(x, i)
    except Exception:
        return x[0]


@pytest.mark.parametrize("fun", [index_fallback, index_in_a_caller_try])
def test_an_index_by_traced_positions_inside_a_try_catching_index_error_is_refused(fun):
    """fuzz42d: positions known only when the compiled function runs are checked then, and an
    IndexOutOfRangeError comes out of the call: the user's `except IndexError` fallback, which
    NumPy runs, never ran. Refused at trace time, naming the handler."""
    x = np.arange(6.0)
    with pytest.raises(gradc.UnsupportedOpError, match="catches IndexError") as info:
        gradc.jit(fun)(x, np.array(2))
    assert "np.clip" in str(info.value)
    np.testing.assert_array_equal(gradc.jit(indexes_caught_as_numpys)(x, np.array(9)),
                                  indexes_caught_as_numpys(x, np.array(9)))


def test_embedding_and_cross_entropy_inside_a_try_catching_index_error_are_refused():
    def f(x, ids, y):
        try:
            e = gradc.nn.embedding(TABLE, ids).sum() + gradc.nn.cross_entropy(x, y)
        except IndexError:
            e = 0.0
        return e
    with pytest.raises(gradc.UnsupportedOpError, match="catches IndexError"):
        gradc.jit(f)(np.ones((2, 4)), np.array([1, 2]), np.array([0, 3]))


def test_a_try_around_the_compiled_call_counts_where_numpys_own_function_is_traced():
    """gradc.jit(np.linalg.solve)(A, b) has no user frame inside the trace: the handlers around
    the compiled call are the ones a LinAlgError would reach (NaN instead: refused, `except
    ValueError` too, fuzz42e); an IndexError does come out of a compiled call (taken)."""
    try:
        i = gradc.jit(lambda v, i: v[i])(np.arange(3.0), np.array(1))
    except Exception:  # (the compiled call's IndexOutOfRangeError would reach it: fine)
        raise AssertionError("refused")
    assert i == 1.0
    with pytest.raises(gradc.UnsupportedOpError, match="catches LinAlgError"):
        try:
            gradc.jit(np.linalg.cholesky)(np.array([[1.0, 2.0], [2.0, 1.0]]))
        except ValueError:  # (LinAlgError is a ValueError)
            pass


def strict_or_fallback(A, strict=False):
    try:
        L = np.linalg.cholesky(A)
    except np.linalg.LinAlgError:
        if strict:  # (raises only where asked: else the fallback runs)
            raise
        L = np.linalg.cholesky(A + 1e-3 * np.eye(2))
    return L


def wraps_and_raises_again(table, i):
    try:
        row = gradc.nn.embedding(table, i)
    except Exception as e:  # (raises again: the error reaches the caller either way)
        raise RuntimeError("lookup failed") from e
    return row.sum()


def test_a_handler_that_raises_again_is_no_fallback_and_one_around_the_compiled_call_counts():
    """fuzz42e: `except Exception as e: raise ... from e` around a gather was refused (it
    changes nothing the compiled function computes); an `except LinAlgError` around
    gradc.jit(np.linalg.cholesky)(A) is one the compiled function would never reach (NaN)."""
    table = np.arange(12.0).reshape(4, 3)
    assert gradc.jit(wraps_and_raises_again)(table, np.array([1, 2])) == 33.0
    with pytest.raises(gradc.UnsupportedOpError, match="catches LinAlgError"):
        try:
            gradc.jit(np.linalg.cholesky)(np.array([[1.0, 2.0], [2.0, 1.0]]))
        except np.linalg.LinAlgError:
            pass
    with pytest.raises(gradc.UnsupportedOpError, match="catches LinAlgError"):
        gradc.jit(strict_or_fallback)(SPD)  # (a conditional raise is no raise again)


def test_a_compiled_user_function_inside_a_try_naming_linalgerror_is_refused():
    """fuzz42g: `try: f(A) except LinAlgError:` around a compiled function of the user's (the
    Gaussian-process retry) ran into NaN silently; so did gradc.grad inside traced code under
    such a try, and a caller's handler behind a library's frame (an @np.errstate decorator).
    An `except Exception` around the call (a training loop's) is no fallback for it."""
    f = gradc.jit(lambda A: np.linalg.cholesky(A))
    with pytest.raises(gradc.UnsupportedOpError, match="catches LinAlgError"):
        try:
            f(SPD)
        except np.linalg.LinAlgError:
            pass

    @np.errstate(all="ignore")
    def helper(A):
        return np.linalg.cholesky(A)

    def calls_helper(A):
        try:
            return helper(A)
        except np.linalg.LinAlgError:
            return np.eye(2)
    with pytest.raises(gradc.UnsupportedOpError, match="catches LinAlgError"):
        gradc.jit(calls_helper)(SPD)
    g = gradc.jit(lambda A: np.linalg.cholesky(A) * 2)
    try:
        np.testing.assert_allclose(g(SPD), 2 * np.linalg.cholesky(SPD))
    except Exception:  # (no fallback for a LinAlgError: taken)
        raise


class FitError(Exception):
    pass


def factor(A):
    try:
        return np.linalg.cholesky(A)
    except np.linalg.LinAlgError as e:
        raise FitError("not positive definite") from e  # (translated: raised on every path)


def fit_or_identity(A):
    try:
        L = factor(A)
    except FitError:
        L = np.eye(2)
    return L.sum()


def translated_in_one_function(A):
    try:
        try:
            L = np.linalg.cholesky(A)
        except np.linalg.LinAlgError:
            raise KeyError("no factor")
    except LookupError:  # (KeyError's base)
        L = np.eye(2)
    return L.sum()


def test_a_linalgerror_raised_again_as_another_exception_is_followed_to_its_handler():
    """fuzz42g: a helper that turns LinAlgError into its own exception, which a caller catches
    and falls back on, ran into NaN silently (the helper's handler raises on every path, so it
    was no fallback, and the search stopped there). The exception raised instead is what the
    handlers out from there are tested against: in the same function, in a caller, and around
    the compiled call (a clause naming it); one nobody catches, or only `except KeyError`,
    compiles."""
    _refused(lambda: gradc.jit(fit_or_identity)(SPD), _line(factor, "np.linalg.cholesky"),
             "`except FitError`", "reached as the FitError a handler raises instead")
    _refused(lambda: gradc.jit(translated_in_one_function)(SPD),
             _line(translated_in_one_function, "np.linalg.cholesky"), "`except LookupError`")
    with pytest.raises(gradc.UnsupportedOpError, match="except FitError"):
        try:
            gradc.jit(factor)(SPD)
        except FitError:
            pass
    np.testing.assert_allclose(gradc.jit(factor)(SPD), np.linalg.cholesky(SPD))

    def only_key_errors(A):
        try:
            return factor(A).sum()
        except KeyError:
            return 0.0
    np.testing.assert_allclose(gradc.jit(only_key_errors)(SPD), np.linalg.cholesky(SPD).sum())


def solve_or_explain(A, b):
    try:
        return np.linalg.solve(A, b)
    except np.linalg.LinAlgError as e:
        if "Singular" in str(e):  # (raises on every path: through a branch)
            raise FitError("singular system") from e
        raise


class Solver:
    Error = FitError

    def factor(self, A):
        try:
            return np.linalg.cholesky(A)
        except np.linalg.LinAlgError as e:
            raise self.Error("not positive definite") from e  # (a class no name tells)

    def fit(self, A):
        try:
            return self.factor(A).sum()
        except Exception:  # (takes what factor raises: a fallback)
            return 0.0


def test_handlers_that_raise_on_every_branch_or_a_class_found_at_run_time():
    """fuzz43b: a handler raising on every path through an `if` was taken for a fallback (a
    false refusal where nothing further out catches); `raise self.Error(...) from e`, a class
    no name tells, stopped the search (a caller's fallback ran into NaN): any clause further
    out in the traced code takes it now (self.Error: looked up, FitError)."""
    b = np.array([1.0, 2.0])
    np.testing.assert_allclose(gradc.jit(solve_or_explain)(SPD, b), np.linalg.solve(SPD, b))
    _refused(lambda: gradc.jit(Solver().fit)(SPD), _line(Solver.factor, "np.linalg.cholesky"),
             "`except Exception`", "reached as the FitError a handler raises instead")


class _OwnErrors:
    Error = FitError

    def solve(self, A, b):
        try:
            return np.linalg.solve(A, b)
        except np.linalg.LinAlgError as e:
            raise self.Error("singular system") from e  # (a class found through self)

    def fit(self, A, b):
        try:
            return self.solve(A, b)
        except KeyError:  # (takes no FitError: no fallback for it)
            return np.zeros(2)


def test_a_class_a_handler_raises_through_self_is_looked_up():
    """fuzz43c: `raise self.Error(...)` (LOAD_METHOD) was a class no name tells, so an unrelated
    `except KeyError` further out was taken for its handler: a false refusal."""
    b = np.array([1.0, 2.0])
    np.testing.assert_allclose(gradc.jit(_OwnErrors().fit)(SPD, b), np.linalg.solve(SPD, b))


def solve_or_zero(A, b):
    x = np.zeros_like(b)
    with contextlib.suppress(np.linalg.LinAlgError):
        x = np.linalg.solve(A, b)
    return x


def test_contextlib_suppress_of_linalgerror_is_a_handler_too():
    """fuzz43c: `with contextlib.suppress(np.linalg.LinAlgError):` around a solve kept NumPy's
    fallback (zeros) where gradc gave NaN, silently; it is refused as `except` is. A suppress of
    another class compiles."""
    b = np.array([1.0, 2.0])
    _refused(lambda: gradc.jit(solve_or_zero)(A, b), _line(solve_or_zero, "np.linalg.solve"),
             "`with contextlib.suppress(np.linalg.LinAlgError)`")

    def keys_only(A, b):
        with contextlib.suppress(KeyError):
            return np.linalg.solve(A, b)
    np.testing.assert_allclose(gradc.jit(keys_only)(SPD, b), np.linalg.solve(SPD, b))


_LOCK = __import__("threading").Lock()
_FAILURES = []


def solve_logged(A, b):
    try:
        return np.linalg.solve(A, b)
    except np.linalg.LinAlgError:
        with _LOCK:  # (bookkeeping, then the error goes on)
            _FAILURES.append("solve")
        for note in ("singular",):
            _FAILURES.append(note)
        raise


def solve_or_identity(A, b):
    try:
        return np.linalg.solve(A, b)
    except np.linalg.LinAlgError:
        with _LOCK:
            x = b.copy()  # (a fallback inside a `with`)
        return x


def test_a_handler_that_raises_after_a_with_block_or_a_loop_is_no_fallback():
    """fuzz43c: a handler that re-raised after `with lock:` bookkeeping (or a loop flushing log
    handlers) was taken for a fallback: a false refusal. A fallback inside a `with` is one."""
    b = np.array([1.0, 2.0])
    np.testing.assert_allclose(gradc.jit(solve_logged)(SPD, b), np.linalg.solve(SPD, b))
    _refused(lambda: gradc.jit(solve_or_identity)(A, b),
             _line(solve_or_identity, "np.linalg.solve"), "`except np.linalg.LinAlgError`")


@pytest.mark.parametrize("filename", ["<string>", "<generated>", "<doctest m.f[0]>",
                                      "<python-input-0>", "<ipython-input-1-abc>"])
def test_a_function_made_by_exec_is_the_users_code(filename):
    """A code generator's function (exec'd: its file is "<string>", as `python -c` code's, a
    doctest's, a REPL's or a generator's own name) is the user's code: its own `except
    LinAlgError` is refused (it gave NaN silently, its frames taken for gradc's), and like a
    def in a file it may be called inside a caller's `try` that does not name LinAlgError."""
    scope = {"np": np}
    exec(compile("def f(A):\n"
         "    try:\n"
         "        L = np.linalg.cholesky(A)\n"
         "    except np.linalg.LinAlgError:\n"
         "        L = np.linalg.cholesky(A + 10.0 * np.eye(2))\n"
         "    return np.sum(L)\n"
         "def g(A):\n"
         "    return np.sum(np.linalg.inv(A))\n", filename, "exec"), scope)
    _refused(lambda: gradc.jit(scope["f"])(np.array([[1.0, 2.0], [2.0, 1.0]])),
             f"{filename}:3", "(line 4)")  # (the clause's text: no source to read it from)
    try:
        got = gradc.grad(scope["g"])(SPD)
    except Exception as e:  # (an ordinary caller-side handler: not a fallback for it)
        raise AssertionError(f"refused: {e}")
    np.testing.assert_allclose(got, central_difference(scope["g"], SPD), rtol=1e-6)


def test_an_installed_librarys_own_handler_is_refused(tmp_path, monkeypatch):
    """A package's function the trace runs (a GP library's `try: cholesky except LinAlgError:
    add jitter`, an `except IndexError` around a traced index) is refused at its line: its
    handler would never run (NaN, or IndexOutOfRangeError out of the call) and its frames
    were passed over, as a decorator's are."""
    site = tmp_path / "site-packages"
    site.mkdir()
    (site / "gplib_case.py").write_text(
        "import numpy as np\n"
        "def chol(K):\n"
        "    try:\n"
        "        return np.linalg.cholesky(K)\n"
        "    except np.linalg.LinAlgError:\n"
        "        return np.linalg.cholesky(K + 3.0 * np.eye(K.shape[0]))\n"
        "def row(table, i):\n"
        "    try:\n"
        "        return table[i]\n"
        "    except IndexError:\n"
        "        return table[0]\n")
    monkeypatch.syspath_prepend(str(site))
    import gplib_case
    K = np.array([[1.0, 2.0], [2.0, 1.0]])
    _refused(lambda: gradc.jit(gplib_case.chol)(K), "gplib_case.py:4",
             "`except np.linalg.LinAlgError` (line 5)")
    _refused(lambda: gradc.grad(lambda K: np.sum(gplib_case.chol(K)))(K), "gplib_case.py:4")
    with pytest.raises(gradc.UnsupportedOpError, match=r"gplib_case\.py:9: an index by traced "
                                                       r"positions inside a `try`"):
        gradc.jit(gplib_case.row)(np.arange(6.0).reshape(3, 2), np.array([1, 5]))
