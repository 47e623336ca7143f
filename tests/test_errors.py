"""Errors a user can cause: each is a gradc.GradcError subclass whose message names this file and
the exact line that caused it, and no Numba (or other internal) exception escapes instead.

The offending line of each case ends with a `# MARKER` comment; `line_of` finds it."""
import math
import os
import re

import numpy as np
import pytest
import scipy.special
from numpy import asarray as numpy_asarray

import gradc  # tests/conftest.py points GRADC_CACHE_DIR at a session temp dir

THIS_FILE = os.path.basename(__file__)

X3 = np.linspace(-1.0, 1.0, 3)
X4 = np.linspace(-1.0, 1.0, 4)


def line_of(marker):
    with open(__file__, encoding="utf-8") as f:
        hits = [i for i, line in enumerate(f, start=1) if line.rstrip().endswith(f"# {marker}")]
    assert len(hits) == 1, marker
    return hits[0]


def displayed_chain(exc):
    """The exceptions Python prints for `exc`: itself, then its cause or unsuppressed context."""
    while exc is not None:
        yield exc
        exc = exc.__cause__ if exc.__cause__ is not None else (
            None if exc.__suppress_context__ else exc.__context__)


def check(excinfo, cls, marker):
    """The error (a pytest ExceptionInfo or an exception) is `cls` (a GradcError), names
    THIS_FILE:<line of marker>, and shows no Numba exception in its chain."""
    e = excinfo if isinstance(excinfo, BaseException) else excinfo.value
    assert issubclass(cls, gradc.GradcError)
    assert isinstance(e, cls), f"{type(e).__name__}: {e}"
    msg = str(e)
    line = line_of(marker)
    assert re.search(rf"{re.escape(THIS_FILE)}:{line}(?!\d)", msg), (
        f"message should name {THIS_FILE}:{line}: {msg}")
    for link in displayed_chain(e):
        assert not type(link).__module__.startswith("numba"), f"a Numba error escaped: {link!r}"
    return msg


# ---------------------------------------------------------------------------------------------
# unsupported NumPy functions

def uses_fft(x):
    return np.sum(np.fft.fft(x).real)  # FFT


def uses_unique(x):
    return np.sum(np.unique(x) * 2.0)  # UNIQUE


def uses_polyfit(x):
    return np.sum(np.polyfit(x[0], x[1], 1))  # POLYFIT


def uses_ufunc_method(x):
    return np.subtract.reduceat(x, [0, 2])  # ACCUMULATE


@pytest.mark.parametrize("fun, marker, name", [
    (uses_fft, "FFT", "fft.fft"),
    (uses_unique, "UNIQUE", "unique"),
    (uses_polyfit, "POLYFIT", "polyfit"),
    (uses_ufunc_method, "ACCUMULATE", "subtract.reduceat"),
])
@pytest.mark.parametrize("api", ["jit", "grad"])
def test_unsupported_numpy_function(fun, marker, name, api):
    x = np.eye(3) + 0.1
    with pytest.raises(gradc.UnsupportedOpError) as excinfo:
        getattr(gradc, api)(fun)(x)
    msg = check(excinfo, gradc.UnsupportedOpError, marker)
    assert re.search(rf"\b{re.escape(name)}\b", msg), msg
    if name in ("fft.fft", "unique"):  # (refused for a reason, said)
        assert "complex numbers" in msg or "depends on the values" in msg, msg


def test_unsupported_function_in_a_helper_names_the_helper_line():
    def helper(x):
        y = np.tanh(x)
        return np.unique(y)  # HELPER-UNIQUE

    def loss(x):
        return np.sum(helper(x) * 2.0)

    with pytest.raises(gradc.UnsupportedOpError) as excinfo:
        gradc.value_and_grad(loss)(X3)
    check(excinfo, gradc.UnsupportedOpError, "HELPER-UNIQUE")


def uses_setitem(x):
    x[0] = 1.0  # (a store into the caller's array)  # SETITEM
    return np.sum(x)


def uses_nonzero_method(x):
    return np.sum(x[x.nonzero()])  # NONZERO-METHOD


def uses_sort_method(x):
    x.sort()  # SORT-METHOD
    return np.sum(x)


def uses_eig(x):
    return np.sum(np.linalg.eig(np.outer(x, x))[0])  # EIG


@pytest.mark.parametrize("fun, marker, name", [
    (uses_setitem, "SETITEM", None),
    (uses_nonzero_method, "NONZERO-METHOD", "nonzero"),
    (uses_sort_method, "SORT-METHOD", "sort"),
    (uses_eig, "EIG", "linalg.eig"),
])
def test_unsupported_array_feature(fun, marker, name):
    """A store into an argument and ndarray methods gradc does not trace are UnsupportedOpErrors
    naming the line (not a bare TypeError/AttributeError from the tracer class)."""
    with pytest.raises(gradc.GradcError) as excinfo:
        gradc.grad(fun)(X3)
    msg = check(excinfo, gradc.UnsupportedOpError, marker)
    if name:
        assert re.search(rf"\b{re.escape(name)}\b", msg), msg


def stores_into_numpy_array(x):
    acc = np.zeros(3)
    acc[0] = np.sum(x)
    return acc


def stores_slice_into_numpy_array(x):
    acc = np.zeros(4)
    acc[1:3] = x[:2] * 2.0
    return np.sum(acc)


def stores_at_a_traced_index(x):
    ranks = np.zeros(3)
    ranks[np.argsort(x)] = np.arange(3.0)
    return np.sum(ranks * x)


@pytest.mark.parametrize("fun", [stores_into_numpy_array, stores_slice_into_numpy_array,
                                 stores_at_a_traced_index])
def test_stores_into_a_numpy_array_the_function_made_are_numpys(fun):
    """`acc = np.zeros(n); acc[i] = v` with v (or i) traced: the function's own array, held by
    its name alone, takes the store (gradc/fresh.py), as NumPy's."""
    np.testing.assert_allclose(gradc.jit(fun)(X3), fun(X3), rtol=1e-12)


def _store_row(acc, row):
    acc[0] = row  # STORE-IN-HELPER


def stores_into_numpy_array_in_a_helper(x):
    acc = np.zeros((2, 3), np.float32)
    _store_row(acc, np.tanh(x))
    return np.sum(acc)


OUTSIDE = np.zeros(3)


def stores_into_an_outside_array(x):
    OUTSIDE[0] = np.sum(x)  # STORE-OUTSIDE
    return OUTSIDE


def stores_into_an_array_a_list_holds(x):
    acc = np.zeros(3)
    kept = [[acc]]  # (a list in a list: one level down is bound anew, deeper is not seen)
    acc[np.argmax(x)] = 1.0  # STORE-LISTED
    return np.sum(kept[0][0] * x)


@pytest.mark.parametrize("fun, marker", [
    (stores_into_numpy_array_in_a_helper, "STORE-IN-HELPER"),
    (stores_into_an_outside_array, "STORE-OUTSIDE"),
    (stores_into_an_array_a_list_holds, "STORE-LISTED"),
])
@pytest.mark.parametrize("api", [gradc.jit, gradc.grad])
def test_storing_a_traced_value_into_a_numpy_array_is_refused(fun, marker, api):
    """`acc[i] = v` with acc a NumPy array and v (or i) traced, where NumPy's store would reach
    what gradc cannot bind anew (an array from outside, one a list or another function's
    variable holds): one UnsupportedOpError naming the line, saying to start the array traced,
    build it with np.stack or update it with gradc.at."""
    with pytest.raises(gradc.GradcError) as excinfo:
        api(fun)(X3)
    msg = check(excinfo, gradc.UnsupportedOpError, marker)
    assert "np.stack" in msg and "gradc.at(a)" in msg and "traced index" in msg, msg
    assert "np.zeros_like(x)" in msg, msg


def floor_div(x):
    return np.sum((x * 3.0) // 2.0)  # FLOORDIV


def modulo(x):
    return np.sum((x * 3.0) % 2.0)  # MOD


@pytest.mark.parametrize("fun, marker", [(floor_div, "FLOORDIV"), (modulo, "MOD")])
def test_numpy_operator_either_works_or_is_unsupported_op_error(fun, marker):
    """`//` and `%` are NumPy operators: they should match NumPy, or be refused with an
    UnsupportedOpError naming the line, never a bare TypeError."""
    x = np.linspace(-2.0, 2.0, 7)
    try:
        out = gradc.jit(fun)(x)
    except gradc.GradcError as e:
        check(e, gradc.UnsupportedOpError, marker)
    else:
        assert float(out) == pytest.approx(float(fun(x)))


def negated_mask(x, i):
    return -(x > 0) * x  # NEG-MASK


def subtracted_masks(x, i):
    return ((x > 0) - (x > 1)) * x  # SUB-MASKS


def divided_masks(x, i):
    return ((x > 0) // (x > 1)) * x  # FLOORDIV-MASKS


def negative_integer_power(x, i):
    return i ** -1 * x  # INT-POW


def negative_integer_power_array(x, i):
    return np.power(i, np.array([1, -2, 3])) * x  # INT-POW-ARRAY


def out_of_range_python_int(x, i):
    return (i.astype(np.int32) + 2 ** 40) * x  # INT-RANGE


@pytest.mark.parametrize("fun, cls, marker", [
    (negated_mask, gradc.ArgumentError, "NEG-MASK"),
    (subtracted_masks, gradc.ArgumentError, "SUB-MASKS"),
    (negative_integer_power, gradc.ArgumentError, "INT-POW"),
    (negative_integer_power_array, gradc.ArgumentError, "INT-POW-ARRAY"),
    (out_of_range_python_int, gradc.ArgumentError, "INT-RANGE")])  # (NumPy's OverflowError)
def test_operators_numpy_refuses_are_refused(fun, cls, marker):
    """What NumPy refuses (-mask and mask - mask: a TypeError; an integer to a negative integer
    power: a ValueError) is refused with the line, not computed (these gave -1s, 0s and int64s
    before)."""
    x, i = np.linspace(-2.0, 2.0, 3), np.arange(1, 4)
    with pytest.raises((TypeError, ValueError, OverflowError)):
        fun(x, i)
    with pytest.raises(cls) as excinfo:
        gradc.jit(fun)(x, i)
    check(excinfo, cls, marker)


def test_operators_numpy_takes_still_work():
    """... and what NumPy computes, in its dtypes: mask // mask is NumPy's int8 floor division
    (by False: 0), which gradc refused while it had no int8."""
    def f(x, i):
        m = x > 0
        return (m + m, m * 2.5, i ** 2, x ** -1, 2 ** i, i // 2, -i, i - m, m / m, i % 3,
                divided_masks(x, i), (x > 0) // (x > 1))
    x, i = np.array([0.5, -1.5, 2.0]), np.array([1, 2, 3])
    with np.errstate(all="ignore"):
        for got, want in zip(gradc.jit(f)(x, i), f(x, i)):
            assert np.asarray(got).dtype == want.dtype
            np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------------------------------
# other libraries called on traced values

def uses_scipy_ufunc(x):
    return np.sum(scipy.special.gamma(x))  # SCIPY-UFUNC


def uses_scipy_function(x):
    return scipy.special.logsumexp(x * 2.0)  # SCIPY-FUNCTION


def test_a_scipy_ufunc_is_named_as_scipys():
    with pytest.raises(gradc.UnsupportedOpError) as excinfo:
        gradc.grad(uses_scipy_ufunc)(X3)
    msg = check(excinfo, gradc.UnsupportedOpError, "SCIPY-UFUNC")
    assert "scipy.special.gamma is not supported" in msg and "np.gamma" not in msg


def test_an_error_inside_another_library_names_the_users_call():
    """SciPy's logsumexp converts its argument to an array deep inside SciPy: the error names the
    user's call of it (not SciPy's file) and which library function it was."""
    with pytest.raises(gradc.TracedBranchError) as excinfo:
        gradc.value_and_grad(uses_scipy_function)(X3)
    msg = check(excinfo, gradc.TracedBranchError, "SCIPY-FUNCTION")
    assert "scipy.special" in msg and "logsumexp" in msg and "gradc.scipy.special" in msg


# ---------------------------------------------------------------------------------------------
# arguments

def sum_method_keywords(x):
    return np.sum(x.sum(axes=0))  # METHOD-KEYWORD


def test_a_wrong_argument_is_an_argument_error_not_a_shape_error():
    with pytest.raises(gradc.ArgumentError) as excinfo:
        gradc.grad(sum_method_keywords)(np.ones((2, 3)))
    msg = check(excinfo, gradc.ArgumentError, "METHOD-KEYWORD")
    assert not isinstance(excinfo.value, gradc.ShapeError)
    assert isinstance(excinfo.value, TypeError) and "axes" in msg


# ---------------------------------------------------------------------------------------------
# shapes

def test_broadcast_mismatch_is_a_shape_error():
    def f(x, y):
        z = np.tanh(x)
        return np.sum(z + y)  # ADD-MISMATCH

    with pytest.raises(gradc.ShapeError) as excinfo:
        gradc.grad(f)(X3, X4)
    msg = check(excinfo, gradc.ShapeError, "ADD-MISMATCH")
    assert "(3,)" in msg and "(4,)" in msg


def test_matmul_mismatch_is_a_shape_error():
    def f(a, b):
        return np.sum(a @ b)  # MATMUL-MISMATCH

    with pytest.raises(gradc.ShapeError) as excinfo:
        gradc.jit(f)(np.ones((2, 3)), np.ones((4, 5)))
    msg = check(excinfo, gradc.ShapeError, "MATMUL-MISMATCH")
    assert "3" in msg and "4" in msg


def test_dot_mismatch_is_a_shape_error():
    def f(a, b):
        return np.sum(np.dot(a, b))  # DOT-MISMATCH

    with pytest.raises(gradc.ShapeError) as excinfo:
        gradc.grad(f)(np.ones((2, 3)), np.ones((2, 4, 5)))
    msg = check(excinfo, gradc.ShapeError, "DOT-MISMATCH")
    assert "(2, 3)" in msg and "(2, 4, 5)" in msg and "not aligned" in msg


def test_bad_reshape_is_a_shape_error():
    def f(x):
        return np.sum(x.reshape(5, 2))  # RESHAPE

    with pytest.raises(gradc.ShapeError) as excinfo:
        gradc.grad(f)(np.ones((3, 4)))
    check(excinfo, gradc.ShapeError, "RESHAPE")


def test_cross_entropy_with_wrong_label_count_names_the_callers_line():
    def f(logits, labels):
        return gradc.nn.cross_entropy(logits, labels)  # XENT

    with pytest.raises(gradc.ShapeError) as excinfo:
        gradc.grad(f)(np.ones((6, 3)), np.zeros(5, dtype=np.int64))
    check(excinfo, gradc.ShapeError, "XENT")


# ---------------------------------------------------------------------------------------------
# branching on traced values

def branch_if(x):
    if x.sum() > 0:  # IF
        return np.sum(x)
    return -np.sum(x)


def branch_while(x):
    s = np.sum(x)
    while s > 10:  # WHILE
        s = s / 2
    return s


def branch_bool(x):
    flag = bool(x[0])  # BOOL
    return np.sum(x) if flag else np.sum(-x)


def branch_float(x):
    return np.sum(x) * float(x.sum())  # FLOAT


def branch_int(x):
    return np.sum(x[: int(x[0])])  # INT


def branch_item(x):
    return np.sum(x) + x.sum().item()  # ITEM


def branch_asarray(x):
    # (np.asarray(x) is x in traced code; NumPy's own function, imported by name, converts)
    return np.sum(numpy_asarray(x) * 2.0)  # ASARRAY


@pytest.mark.parametrize("fun, marker", [
    (branch_if, "IF"), (branch_while, "WHILE"), (branch_bool, "BOOL"), (branch_float, "FLOAT"),
    (branch_int, "INT"), (branch_item, "ITEM"), (branch_asarray, "ASARRAY"),
])
def test_branching_on_a_traced_value(fun, marker):
    with pytest.raises(gradc.TracedBranchError) as excinfo:
        gradc.value_and_grad(fun)(X3)
    msg = check(excinfo, gradc.TracedBranchError, marker)
    if marker != "ASARRAY":
        assert "np.where" in msg or "static" in msg  # says what to do instead


def test_branch_on_static_value_is_fine():
    def f(x, flag):
        if flag:
            return np.sum(np.tanh(x))
        return np.sum(x * x)

    g = gradc.grad(f)
    np.testing.assert_allclose(g(X3, True), 1 - np.tanh(X3) ** 2, rtol=1e-12)
    np.testing.assert_allclose(g(X3, False), 2 * X3, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# gradients of things that have none

def test_non_scalar_output_to_grad():
    def f(x):
        return np.tanh(x) * 2.0  # NON-SCALAR

    with pytest.raises(gradc.NonDifferentiableError) as excinfo:
        gradc.grad(f)(X3)
    msg = check(excinfo, gradc.NonDifferentiableError, "NON-SCALAR")
    assert "(3,)" in msg and "scalar" in msg


def test_non_scalar_output_to_value_and_grad():
    def f(x):
        return x * 2.0  # NON-SCALAR-VG

    with pytest.raises(gradc.NonDifferentiableError) as excinfo:
        gradc.value_and_grad(f)(X3)
    check(excinfo, gradc.NonDifferentiableError, "NON-SCALAR-VG")


def test_integer_output_to_grad():
    def f(x):
        return np.sum(x > 0)  # INT-OUTPUT

    with pytest.raises(gradc.NonDifferentiableError) as excinfo:
        gradc.grad(f)(X3)
    check(excinfo, gradc.NonDifferentiableError, "INT-OUTPUT")


def _sum_times(x, w):
    return np.sum(x * w)


def test_integer_argument_in_argnums():
    g = gradc.grad(_sum_times, argnums=(0, 1))
    with pytest.raises(gradc.NonDifferentiableError) as excinfo:
        g(np.arange(3), X3)  # INT-ARG
    msg = check(excinfo, gradc.NonDifferentiableError, "INT-ARG")
    assert "int64" in msg and "argument 0" in msg


def test_boolean_argument_in_argnums():
    g = gradc.value_and_grad(_sum_times, argnums=1)
    with pytest.raises(gradc.NonDifferentiableError) as excinfo:
        g(X3, np.array([True, False, True]))  # BOOL-ARG
    msg = check(excinfo, gradc.NonDifferentiableError, "BOOL-ARG")
    assert "bool" in msg and "argument 1" in msg


def test_python_int_in_argnums():
    """A Python float in argnums is traced (tests/test_calling_conventions.py); an int or a
    bool is refused, as JAX does, naming where it is."""
    g = gradc.grad(_sum_times, argnums=1)
    with pytest.raises(gradc.NonDifferentiableError) as excinfo:
        g(X3, 2)  # PY-INT-ARG
    msg = check(excinfo, gradc.NonDifferentiableError, "PY-INT-ARG")
    assert "w is a Python int" in msg and "2.0" in msg


def test_python_bool_inside_a_differentiated_pytree():
    g = gradc.grad(lambda p: np.sum(p["w"]) * (2.0 if p["twice"] else 1.0))
    with pytest.raises(gradc.NonDifferentiableError) as excinfo:
        g({"w": X3, "twice": True})  # PY-BOOL-LEAF
    msg = check(excinfo, gradc.NonDifferentiableError, "PY-BOOL-LEAF")
    assert "p['twice'] is a Python bool" in msg


def test_integer_argument_outside_argnums_is_fine():
    g = gradc.grad(_sum_times, argnums=1)
    np.testing.assert_allclose(g(np.arange(3), X3), np.arange(3.0))


# ---------------------------------------------------------------------------------------------
# call-time inputs

def test_unhashable_non_pytree_argument():
    f = gradc.jit(lambda x: np.sum(x))
    with pytest.raises(gradc.SignatureError) as excinfo:
        f({1.0, 2.0})  # SET-ARG
    check(excinfo, gradc.SignatureError, "SET-ARG")


def test_unhashable_object_inside_a_pytree():
    class Box:
        __hash__ = None

    g = gradc.grad(lambda p: np.sum(p["w"]))
    with pytest.raises(gradc.SignatureError) as excinfo:
        g({"w": X3, "extra": Box()})  # BOX-ARG
    msg = check(excinfo, gradc.SignatureError, "BOX-ARG")
    assert "Box" in msg


def test_complex_input_is_rejected_at_call_time():
    f = gradc.jit(lambda x: x * 2.0)
    with pytest.raises(gradc.SignatureError) as excinfo:
        f(X3.astype(np.complex128))  # COMPLEX-ARG
    msg = check(excinfo, gradc.SignatureError, "COMPLEX-ARG")
    assert "complex128" in msg


@pytest.mark.parametrize("dtype", [np.float16, np.uint8])
def test_uncommon_dtype_either_works_or_is_a_signature_error(dtype):
    """The natural expectation is NumPy's result; an explicit SignatureError naming the call is
    acceptable. An internal CompileError ("never the user's fault") or a Numba error is not."""
    x = np.arange(1, 4).astype(dtype)
    f = gradc.jit(lambda x: x * x + x)
    try:
        out = f(x)  # ODD-DTYPE
    except gradc.SignatureError as e:
        check(e, gradc.SignatureError, "ODD-DTYPE")
        assert np.dtype(dtype).name in str(e)
    else:
        np.testing.assert_allclose(np.asarray(out, np.float64), (x * x + x).astype(np.float64),
                                   rtol=1e-3)


def test_argnums_out_of_range():
    g = gradc.grad(lambda x: np.sum(x), argnums=2)
    with pytest.raises(gradc.SignatureError) as excinfo:
        g(X3)  # ARGNUMS-RANGE
    check(excinfo, gradc.SignatureError, "ARGNUMS-RANGE")


def test_train_step_called_without_its_parameters():
    # the step (and explain of it) named the call, not an IndexError from inside gradc
    step = gradc.train_step(lambda p, x: np.sum(p * x), gradc.optim.SGD(0.1), argnums=1)
    with pytest.raises(gradc.SignatureError) as excinfo:
        step(X3)  # STEP-NO-PARAMS
    check(excinfo, gradc.SignatureError, "STEP-NO-PARAMS")
    with pytest.raises(gradc.SignatureError) as excinfo:
        gradc.explain(step, X3)  # EXPLAIN-NO-PARAMS
    check(excinfo, gradc.SignatureError, "EXPLAIN-NO-PARAMS")
    with pytest.raises(gradc.SignatureError) as excinfo:
        gradc.train_step(lambda x, p: np.sum(p * x), gradc.optim.SGD(0.1), argnums=(1, 0))  # STEP-ARGNUMS
    assert "got (1, 0)" in check(excinfo, gradc.SignatureError, "STEP-ARGNUMS")


def test_max_signatures_caps_recompiles():
    f = gradc.jit(lambda x: x * 2.0, max_signatures=1)
    np.testing.assert_allclose(f(X3), 2 * X3)
    np.testing.assert_allclose(f(X3 + 1.0), 2 * X3 + 2.0)  # same signature: fine
    with pytest.raises(gradc.SignatureError) as excinfo:
        f(X4)  # MAX-SIGNATURES
    msg = check(excinfo, gradc.SignatureError, "MAX-SIGNATURES")
    assert "x: (3,)/float64 -> (4,)/float64" in msg  # (the argument's name, not "input 0")
    assert len(f.cache) == 1
    g = gradc.jit(lambda x, s: x * s, max_signatures=1)
    g(X3, 2.0)
    with pytest.raises(gradc.SignatureError, match=r"static values changed \(s: 2\.0 -> 3\.0\)"):
        g(X3, 3.0)


# ---------------------------------------------------------------------------------------------
# after an error

def test_failed_trace_does_not_poison_the_function():
    def f(x, y):
        return np.sum(np.tanh(x) * y)

    g = gradc.grad(f)
    with pytest.raises(gradc.ShapeError):
        g(X3, X4)
    assert len(g.cache) == 0
    np.testing.assert_allclose(g(X3, X3), X3 * (1 - np.tanh(X3) ** 2), rtol=1e-12)


def test_every_error_class_is_exported_and_a_gradc_error():
    for name in ["ArgumentError", "ShapeError", "UnsupportedOpError", "TracedBranchError",
                 "SignatureError", "NonDifferentiableError", "NonFiniteError",
                 "IndexOutOfRangeError", "CompileError"]:
        cls = getattr(gradc, name)
        assert issubclass(cls, gradc.GradcError) and cls is not gradc.GradcError
    assert issubclass(gradc.GradcError, Exception)
    assert issubclass(gradc.IndexOutOfRangeError, IndexError)  # as NumPy would raise


# ---------------------------------------------------------------------------------------------
# calling conventions (the results are in tests/test_calling_conventions.py)

def test_big_endian_input_names_the_byte_order():
    f = gradc.jit(lambda x: x * 2.0)
    with pytest.raises(gradc.SignatureError) as excinfo:
        f(X3.astype(">f4"))  # BIG-ENDIAN
    msg = check(excinfo, gradc.SignatureError, "BIG-ENDIAN")
    assert "x is float32 in big-endian byte order ('>f4')" in msg and ".astype(np.float32)" in msg


def test_big_endian_train_step_parameter_names_the_byte_order():
    step = gradc.train_step(lambda p, x: np.sum(p * x), gradc.optim.SGD(lr=0.1))
    with pytest.raises(gradc.SignatureError) as excinfo:
        step(X3.astype(">f8"), X3)  # BIG-ENDIAN-PARAM
    msg = check(excinfo, gradc.SignatureError, "BIG-ENDIAN-PARAM")
    assert "byte order ('>f8')" in msg


def test_python_float_among_train_step_params_names_its_path():
    step = gradc.train_step(lambda p, x: np.sum(p["w"] * x) * p["scale"], gradc.optim.SGD(lr=0.1))
    w = X3.copy()
    with pytest.raises(gradc.SignatureError) as excinfo:
        step({"w": w, "scale": 2.0}, X3)  # PY-FLOAT-PARAM
    msg = check(excinfo, gradc.SignatureError, "PY-FLOAT-PARAM")
    assert "p['scale'] is a Python float (2.0)" in msg and "np.array(2.0)" in msg
    np.testing.assert_array_equal(w, X3)


def test_label_out_of_range_names_the_call_and_the_labels():
    vg = gradc.value_and_grad(lambda logits, labels: gradc.nn.cross_entropy(logits, labels))
    with pytest.raises(gradc.IndexOutOfRangeError) as excinfo:
        vg(np.zeros((2, 3)), np.array([0, 3]))  # LABEL-RANGE
    msg = check(excinfo, gradc.IndexOutOfRangeError, "LABEL-RANGE")
    assert "labels holds an index outside [0, 3)" in msg and "take_along_axis" in msg


def test_index_out_of_range_names_the_arrays_checked_on_that_line():
    # x[i, j] checks i against the rows and j against the columns, then gathers from the
    # flattened x: the message named "an input" and the flattened size, [-12, 12)
    x = np.arange(12.0).reshape(4, 3)
    with pytest.raises(gradc.IndexOutOfRangeError) as excinfo:
        gradc.jit(lambda x, i, j: x[i, j])(x, np.array([0]), np.array([5]))  # TWO-INDICES
    msg = check(excinfo, gradc.IndexOutOfRangeError, "TWO-INDICES")
    assert "i holds an index outside [-4, 4) or j holds an index outside [-3, 3)" in msg, msg
    assert "12" not in msg
    with pytest.raises(gradc.IndexOutOfRangeError) as excinfo:
        gradc.jit(lambda x, i: gradc.at(x)[i].add(1.0))(x, np.array([7]))  # AT-ADD
    msg = check(excinfo, gradc.IndexOutOfRangeError, "AT-ADD")
    assert msg.endswith("i holds an index outside [-4, 4)"), msg


@pytest.mark.parametrize("use", [lambda u: u * 2.0, lambda u: np.sum(u), lambda u: 1.0 + u,
                                 lambda u: u.sum()])
def test_an_update_left_unfinished_says_how_to_finish_it(use):
    # gradc.at(x)[i] * 2 (the .set/.add forgotten) named an internal class in Python's TypeError
    with pytest.raises(gradc.UnsupportedOpError) as excinfo:
        gradc.jit(lambda x: use(gradc.at(x)[0]))(X3)  # AT-UNFINISHED
    msg = str(excinfo.value)
    assert "test_errors.py" in msg and (".set(v), .add(v)" in msg or "not an update" in msg), msg


def test_weight_decay_tree_that_does_not_fit_the_parameters():
    step = gradc.train_step(lambda p, x: (p["w"] * x).sum(),
                            gradc.optim.AdamW(weight_decay={"w": 0.1, "b": 0.0}))
    w = X3.copy()
    with pytest.raises(gradc.ArgumentError) as excinfo:
        step({"w": w}, X3)  # WD-TREE
    msg = check(excinfo, gradc.ArgumentError, "WD-TREE")
    assert "weight_decay" in msg and "keys ['w']" in msg and "pytree shaped like" in msg
    np.testing.assert_array_equal(w, X3)


def test_numpy_function_given_a_list_of_traced_values():
    # np.sum and the other reductions of a list make it an array first (autograd's idiom);
    # other NumPy functions convert it with NumPy's own np.asarray: refused, saying np.stack
    np.testing.assert_array_equal(gradc.grad(lambda xs: np.sum(xs))([1.0, 2.0]), [1.0, 1.0])
    g = gradc.grad(lambda xs: np.cumsum(xs)[-1])  # LIST-OF-TRACED
    with pytest.raises(gradc.TracedBranchError) as excinfo:
        g([1.0, 2.0])
    msg = check(excinfo, gradc.TracedBranchError, "LIST-OF-TRACED")
    assert "np.stack" in msg


def test_dot_with_a_batched_second_argument_follows_numpy_not_matmul():
    """np.dot pairs every row of a with every matrix of b (not matmul's broadcasting)."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((4, 3, 5))
    np.testing.assert_allclose(gradc.jit(lambda a, b: np.dot(a, b))(a, b), np.dot(a, b),
                               rtol=1e-12)


# --- options and arguments that once failed inside gradc or gave a wrong value ----------------

def test_optimizer_options_are_checked_as_pytorch_checks_them():
    loss = lambda p, x: np.sum(p * x)  # noqa: E731
    with pytest.raises(gradc.ArgumentError) as excinfo:
        gradc.train_step(loss, gradc.optim.Adam)  # OPT-CLASS
    assert "optimizer object" in check(excinfo, gradc.ArgumentError, "OPT-CLASS")
    with pytest.raises(gradc.ArgumentError) as excinfo:
        gradc.train_step(loss, "adam")  # OPT-NAME
    check(excinfo, gradc.ArgumentError, "OPT-NAME")
    with pytest.raises(gradc.ArgumentError) as excinfo:
        gradc.train_step(loss, gradc.optim.SGD(0.1), clip_norm="1.0")  # CLIP-STR
    check(excinfo, gradc.ArgumentError, "CLIP-STR")
    with pytest.raises(gradc.ArgumentError) as excinfo:
        gradc.optim.Adam(betas=(1.0, 0.999))  # BETA-ONE
    check(excinfo, gradc.ArgumentError, "BETA-ONE")
    with pytest.raises(gradc.ArgumentError) as excinfo:
        gradc.optim.Adam(betas=(0.9, 0.99, 0.9))  # BETA-THREE
    check(excinfo, gradc.ArgumentError, "BETA-THREE")
    with pytest.raises(gradc.ArgumentError) as excinfo:
        gradc.optim.SGD(lr=None)  # LR-NONE
    check(excinfo, gradc.ArgumentError, "LR-NONE")
    with pytest.raises(gradc.ArgumentError) as excinfo:
        gradc.optim.SGD(0.1, momentum=-0.5)  # MOMENTUM-NEG
    check(excinfo, gradc.ArgumentError, "MOMENTUM-NEG")
    opt = gradc.optim.Adam(0.1)
    with pytest.raises(gradc.ArgumentError) as excinfo:
        opt.eps = "small"  # EPS-SET
    check(excinfo, gradc.ArgumentError, "EPS-SET")
    opt.betas = [0.8, 0.99]  # (a list set later: a tuple, as the constructor makes it)
    assert opt.betas == (0.8, 0.99)
    with pytest.raises(gradc.ArgumentError) as excinfo:
        gradc.jit(np.sin, max_signatures="2")  # MAX-SIG-STR
    check(excinfo, gradc.ArgumentError, "MAX-SIG-STR")


def test_load_state_dict_refuses_another_models_or_optimizers_state():
    def loss(p, x):
        return np.sum((x @ p["W"] + p["b"]) ** 2)

    p = {"W": np.ones((3, 2)), "b": np.zeros(2)}
    x = np.ones((4, 3))
    step = gradc.train_step(loss, gradc.optim.Adam(0.1))
    step(p, x)
    good = step.state_dict()
    wrong_shape = {"step": 1, "state": {k: {"W": np.ones(2), "b": np.ones(2)} for k in good["state"]}}
    other_opt = {"step": 1, "state": {"momentum_buffer": good["state"]["exp_avg"]}}
    def refused(bad):
        before = step.state_dict()
        with pytest.raises(gradc.ArgumentError) as excinfo:
            step.load_state_dict(bad)  # STATE
        check(excinfo, gradc.ArgumentError, "STATE")
        after = step.state_dict()  # (nothing of it was loaded)
        assert after["step"] == before["step"]
        for slot in before["state"]:
            for k in p:
                np.testing.assert_array_equal(after["state"][slot][k], before["state"][slot][k])

    for bad in (wrong_shape, other_opt, {}, None):
        refused(bad)
    step.load_state_dict(good)


def test_ndarray_subclasses_are_refused_not_read_as_their_data():
    masked = np.ma.masked_array([1.0, 2.0, 3.0], mask=[False, True, False])
    with pytest.raises(gradc.SignatureError) as excinfo:
        gradc.jit(np.sum)(masked)  # MASKED
    assert "filled" in check(excinfo, gradc.SignatureError, "MASKED")
    step = gradc.train_step(lambda p, x: np.sum(p * x), gradc.optim.SGD(0.1))
    with pytest.raises(gradc.SignatureError) as excinfo:
        step(np.ones(2), np.matrix([[1.0, 2.0]]))  # MATRIX
    check(excinfo, gradc.SignatureError, "MATRIX")



def test_a_pytree_that_contains_itself_or_nests_too_deep_is_refused_by_name():
    cyclic = {"a": np.ones(3)}
    cyclic["self"] = cyclic
    deep = np.ones(2)
    for _ in range(5000):
        deep = [deep]
    f = gradc.jit(lambda p: np.sum(np.ones(1)))
    with pytest.raises(gradc.SignatureError) as excinfo:
        f(cyclic)  # CYCLE
    assert "contains itself" in check(excinfo, gradc.SignatureError, "CYCLE")
    with pytest.raises(gradc.SignatureError) as excinfo:
        f(deep)  # DEEP
    assert "nests deeper" in check(excinfo, gradc.SignatureError, "DEEP")

@pytest.mark.parametrize("call, marker", [
    (lambda x, w: gradc.nn.conv2d(x, w, padding=-1), "GEO-1"),  # GEO-1
    (lambda x, w: gradc.nn.conv2d(x, w, stride=0), "GEO-2"),  # GEO-2
    (lambda x, w: gradc.nn.conv2d(x, w, stride=(1, 0)), "GEO-3"),  # GEO-3
    (lambda x, w: gradc.nn.max_pool2d(x, 2, 0), "GEO-4"),  # GEO-4
    (lambda x, w: gradc.nn.avg_pool2d(x, 2, 0), "GEO-5"),  # GEO-5
    (lambda x, w: gradc.nn.max_pool2d(x, 2, padding=-1), "GEO-6"),  # GEO-6
    (lambda x, w: gradc.nn.conv2d(x, w, padding=1.5), "GEO-7")])  # GEO-7
def test_convolution_and_pooling_geometry_is_checked(call, marker):
    x, w = np.ones((1, 1, 6, 6)), np.ones((2, 1, 3, 3))
    with pytest.raises(gradc.ArgumentError) as excinfo:
        gradc.jit(call)(x, w)
    check(excinfo, gradc.ArgumentError, marker)


def test_convolution_of_an_image_without_its_batch_axis_says_so():
    with pytest.raises(gradc.ShapeError) as excinfo:
        gradc.jit(gradc.nn.conv2d)(np.ones((1, 6, 6)), np.ones((2, 1, 3, 3)))  # NO-BATCH
    assert "x[None]" in check(excinfo, gradc.ShapeError, "NO-BATCH")


def test_messages_name_the_argument_and_the_fix():
    def loss(p, x):
        return np.sum(p["w"] * x) + p["b"]

    step = gradc.train_step(loss, gradc.optim.SGD(0.1))
    with pytest.raises(gradc.SignatureError) as excinfo:
        step({"w": np.ones((3, 2))[:, 0], "b": np.zeros(())}, np.ones(3))  # NON-CONTIGUOUS
    msg = check(excinfo, gradc.SignatureError, "NON-CONTIGUOUS")
    assert "np.array(p['w'], order='C')" in msg and "np.float32" not in msg
    with pytest.raises(gradc.SignatureError) as excinfo:
        step({"w": np.ones(3)}, x=np.ones(3))  # STEP-KEYWORD
    check(excinfo, gradc.SignatureError, "STEP-KEYWORD")
    with pytest.raises(gradc.SignatureError) as excinfo:
        gradc.grad(lambda x, y: np.sum(x * y))(x=X3, y=X3)  # GRAD-KEYWORDS
    assert "by position" in check(excinfo, gradc.SignatureError, "GRAD-KEYWORDS")
    g = gradc.grad(lambda x, y: np.sum(x * y), argnums=np.int64(1))(X3, 2 * X3)
    np.testing.assert_allclose(g, X3)
    with pytest.raises(gradc.NonDifferentiableError) as excinfo:
        gradc.grad(lambda r: np.sum(r.random(3)))(gradc.random.default_rng(0))  # GRAD-GENERATOR
    assert "Generator" in check(excinfo, gradc.NonDifferentiableError, "GRAD-GENERATOR")
    with pytest.raises(gradc.SignatureError) as excinfo:
        gradc.jit(lambda x: {1, 2})(X3)  # RETURNS-SET
    check(excinfo, gradc.SignatureError, "RETURNS-SET")
    with pytest.raises(gradc.ShapeError) as excinfo:
        gradc.jit(gradc.nn.cross_entropy)(np.ones((2, 3, 4)), np.zeros((2, 3), np.int64))  # XENT-3D
    assert "(-1, classes)" in check(excinfo, gradc.ShapeError, "XENT-3D")


def test_a_constant_of_a_dtype_gradc_does_not_compute_in_is_refused_with_the_line():
    with pytest.raises(gradc.UnsupportedOpError,
                       match=r"test_errors\.py:\d+: a float16 array meets a traced value"):
        gradc.jit(lambda x: x * np.array([1, 2], np.float16))(np.ones(2))
    for dtype in (np.int8, np.uint8):  # (computed in since stop 47, as NumPy's)
        f = lambda x: x * np.array([1, 2], dtype)  # noqa: E731
        np.testing.assert_array_equal(gradc.jit(f)(np.ones(2)), f(np.ones(2)))


def test_unsupported_dtypes_of_new_arrays_and_0d_triangles_name_the_line():
    # np.zeros_like(x, dtype=np.float16) failed in the back end ("no CPU buffers of dtype
    # float16", no line); np.tril of a 0-d value was a bare IndexError
    with pytest.raises(gradc.UnsupportedOpError) as excinfo:
        gradc.jit(lambda x: np.zeros_like(x, dtype=np.float16))(X3)  # HALF-ZEROS
    assert "float16" in check(excinfo, gradc.UnsupportedOpError, "HALF-ZEROS")
    ones = gradc.jit(lambda x: np.ones_like(x, dtype=np.int8))(X3)  # (an int8 array since
    assert ones.dtype == np.int8 and np.all(ones == 1)  # stop 47)
    with pytest.raises(gradc.ArgumentError) as excinfo:
        gradc.jit(lambda x: np.tril(x[0]))(X3)  # TRIL-0D
    assert "0-d" in check(excinfo, gradc.ArgumentError, "TRIL-0D")


def test_formatting_a_traced_number_names_the_line():
    # print(f"loss = {l:.4f}") in traced code was a bare TypeError from Value.__format__
    def f(x):
        loss = np.sum(x ** 2)
        print(f"loss = {loss:.4f}")  # FORMAT
        return loss

    with pytest.raises(gradc.TracedBranchError) as excinfo:
        gradc.jit(f)(X3)
    msg = check(excinfo, gradc.TracedBranchError, "FORMAT")
    assert ".4f" in msg and "has_aux" in msg


def test_printing_a_traced_value_says_what_it_is(capsys):
    # (it printed the IR's name, "%4:f64[3]", once at trace time, with no word of why)
    def f(x):
        y = x * 2.0
        print("y =", y, f"{y}")
        return y

    jitted = gradc.jit(f)
    jitted(X3)
    jitted(X3)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 1 and printed[0].count("<traced f64[3]: values exist when") == 2


class _Model:
    def __init__(self):
        self.w = X3.copy()

    def loss(self, x):
        return np.sum(self.w * x)


def test_grad_of_a_method_through_its_class_names_self():
    # gradc.grad(Model.loss)(model, x): argument 0 is `self`, an object, not a pytree
    with pytest.raises(gradc.NonDifferentiableError) as excinfo:
        gradc.grad(_Model.loss)(_Model(), X3)  # SELF-ARG
    msg = check(excinfo, gradc.NonDifferentiableError, "SELF-ARG")
    assert "argument 0 (self) is a _Model" in msg and "argnums=1" in msg
    np.testing.assert_allclose(gradc.grad(_Model.loss, argnums=1)(_Model(), X3), X3)


def _math_exp(x):
    return math.exp(np.sum(x))  # MATH-EXP


def _add_at(x):
    z = np.zeros(3)  # (a NumPy array the function made, but a view of it is kept)
    tail = z[1:]
    np.add.at(z, np.array([0, 0]), x[:2])  # ADD-AT
    return z, tail


def _segment_max(x):
    out = np.full(2, -np.inf)
    np.maximum.at(out, (x[:3] > 0).astype(np.int64), x[:3])  # MAXIMUM-AT
    return out


_FILTERS = np.ones((3, 2)) + 1j * np.ones((3, 2))


def _complex_constant(x):
    return np.sum(np.abs(x[:3] @ _FILTERS))  # COMPLEX


def _local_accumulator(x):
    acc = np.zeros(3)
    steps = [acc]  # (held twice: NumPy's += would show in the list too)
    acc += x  # ACCUMULATOR
    return steps[0]


def _builtin_max(x):
    return max(x[0], x[1]) + min(np.sum(x), 1.0)  # BUILTIN-MAX


def _returns_float16(x):
    return np.zeros(3, np.float16), x * 2.0  # (the call line is named)


def _pads_out_of_range(x):
    return np.pad(x.astype(np.int32), 1, constant_values=10 ** 10)  # PAD-RANGE


def _rounds_a_mask(x):
    return np.round(x > 0)  # ROUND-MASK


def _as_strided(x):
    return np.lib.stride_tricks.as_strided(x, (2, 2), (8, 8))  # AS-STRIDED


@pytest.mark.parametrize("f, cls, marker, words", [
    (_math_exp, gradc.TracedBranchError, "MATH-EXP", "use np.exp"),
    (_add_at, gradc.UnsupportedOpError, "ADD-AT", "something besides its local names holds it"),
    (_complex_constant, gradc.UnsupportedOpError, "COMPLEX", "parts apart (W.real, W.imag)"),
    (_segment_max, gradc.UnsupportedOpError, "MAXIMUM-AT", "np.maximum.at by traced positions"),
    (_local_accumulator, gradc.UnsupportedOpError, "ACCUMULATOR", "acc = acc + x"),
    (_builtin_max, gradc.TracedBranchError, "BUILTIN-MAX", "use np.maximum(a, b)"),
    (_pads_out_of_range, gradc.ArgumentError, "PAD-RANGE", "out of bounds for int32"),
    (_rounds_a_mask, gradc.UnsupportedOpError, "ROUND-MASK", "float16"),
    (_as_strided, gradc.UnsupportedOpError, "AS-STRIDED", "sliding_window_view")])
def test_refusals_say_what_to_write_instead(f, cls, marker, words):
    with pytest.raises(cls) as excinfo:
        gradc.jit(f)(X3)
    assert words in check(excinfo, cls, marker)


def test_returning_a_numpy_array_of_a_dtype_gradc_lacks_names_the_call():
    with pytest.raises(gradc.UnsupportedOpError) as excinfo:
        gradc.jit(_returns_float16)(X3)  # RETURNED-FLOAT16
    assert "returned an array" in check(excinfo, gradc.UnsupportedOpError, "RETURNED-FLOAT16")


def test_api_misuse_is_named_with_the_line():
    # each was accepted, or a bare TypeError/NotImplementedError from inside gradc
    with pytest.raises(gradc.ArgumentError) as excinfo:
        gradc.grad(3)  # NOT-CALLABLE
    check(excinfo, gradc.ArgumentError, "NOT-CALLABLE")
    with pytest.raises(gradc.ArgumentError) as excinfo:
        gradc.jit(np.sum, target="tpu")  # BAD-TARGET
    check(excinfo, gradc.ArgumentError, "BAD-TARGET")
    f = gradc.jit(lambda x, y: x + y)
    with pytest.raises(gradc.SignatureError) as excinfo:
        f(X3)  # MISSING-ARG
    assert "missing a required argument" in check(excinfo, gradc.SignatureError, "MISSING-ARG")
    with pytest.raises(gradc.SignatureError) as excinfo:
        gradc.jit(lambda x: (x * i for i in range(2)))(X3)  # GENERATOR-OUT
    assert "list(...)" in check(excinfo, gradc.SignatureError, "GENERATOR-OUT")
    with pytest.raises(gradc.ArgumentError) as excinfo:
        gradc.optim.SGD(0.1, weight_decay=-1.0)  # NEGATIVE-DECAY
    check(excinfo, gradc.ArgumentError, "NEGATIVE-DECAY")
    with pytest.raises(gradc.ArgumentError) as excinfo:
        gradc.random.Generator(0).normal(0.0, -1.0, 3)  # NEGATIVE-SCALE
    check(excinfo, gradc.ArgumentError, "NEGATIVE-SCALE")
    with pytest.raises(gradc.ArgumentError) as excinfo:
        gradc.jit(lambda x: gradc.nn.flatten(x, 7))(np.ones((4, 5)))  # FLATTEN-AXIS
    check(excinfo, gradc.ArgumentError, "FLATTEN-AXIS")


def test_transform_and_update_misuse_names_the_line():
    f = lambda x: np.sum(np.sin(x) * x)  # noqa: E731
    with pytest.raises(gradc.NonDifferentiableError) as excinfo:
        gradc.vjp(f)  # VJP-NO-PRIMALS
    check(excinfo, gradc.NonDifferentiableError, "VJP-NO-PRIMALS")
    with pytest.raises(gradc.NonDifferentiableError) as excinfo:
        gradc.hvp(f, (X3,), (X3, X3))  # HVP-LENGTHS
    check(excinfo, gradc.NonDifferentiableError, "HVP-LENGTHS")
    _, vjp_fn = gradc.vjp(lambda x: x * 2.0, X3)
    with pytest.raises(gradc.ArgumentError) as excinfo:
        vjp_fn(X3, X3)  # VJP-FN-ARITY
    check(excinfo, gradc.ArgumentError, "VJP-FN-ARITY")
    with pytest.raises(gradc.UnsupportedOpError) as excinfo:
        gradc.jit(lambda x: gradc.at(x)[0].sub(1.0))(X3)  # AT-SUB
    assert ".add(-v)" in check(excinfo, gradc.UnsupportedOpError, "AT-SUB")


TABLE = np.arange(8.0).reshape(4, 2)


def test_another_librarys_function_and_a_traced_index_say_what_to_write():
    """scipy.special.logsumexp(x) on a traced x names the SciPy function and its gradc.scipy
    mirror (it gave 900 characters of generic advice, or named SciPy's own file); a NumPy
    table indexed by a traced value says so first, with the one-hot idiom."""
    scipy_special = pytest.importorskip("scipy.special")
    x = np.ones(3)
    with pytest.raises(gradc.TracedBranchError,
                       match=r"test_errors\.py:\d+: scipy\.special\.logsumexp is scipy's .*"
                             r"Use gradc\.scipy\.special\.logsumexp"):
        gradc.grad(lambda x: scipy_special.logsumexp(x))(x)
    # a distribution's method and a decorated linalg function: named by their public paths
    # (they were `scipy.stats.logpdf` and `scipy.wrapper`, with no mirror)
    stats, linalg = pytest.importorskip("scipy.stats"), pytest.importorskip("scipy.linalg")
    for f, public in ((lambda x: stats.norm.logpdf(x).sum(), r"scipy\.stats\.norm\.logpdf"),
                      (lambda x: stats.poisson.logpmf(3, x).sum(),
                       r"scipy\.stats\.poisson\.logpmf"),
                      (lambda x: stats.multivariate_normal.logpdf(x, np.zeros(3)),  # (a class
                       r"scipy\.stats\.multivariate_normal\.logpdf"),  # of its own: *_gen)
                      (lambda x: linalg.solve_triangular(np.eye(3), x).sum(),
                       r"scipy\.linalg\.solve_triangular")):
        with pytest.raises(gradc.TracedBranchError,
                           match=rf"{public} is scipy's .*Use gradc\.{public}"):
            gradc.grad(f)(x)
    distance = pytest.importorskip("scipy.spatial.distance")
    with pytest.raises(gradc.GradcError, match=r"scipy\.spatial\.distance\.cdist .*outside the "
                                               r"traced function"):
        gradc.jit(lambda x: distance.cdist(x, x))(np.ones((3, 2)))
    actions = np.array([1, 2])
    table = TABLE.view(np.memmap)  # (a subclass indexes itself: tests/test_traced_indices.py)
    with pytest.raises(gradc.TracedBranchError,
                       match=r"test_errors\.py:\d+: a traced index into a NumPy array whose "
                             r"own indexing .*np\.memmap.*np\.take\(table, i, axis=0\).*"
                             r"gradc\.nn\.embedding"):
        gradc.jit(lambda a: table[a])(actions)
    # (a table the function makes takes a traced index: np.eye(4)[a], one-hot rows)
    np.testing.assert_array_equal(gradc.jit(lambda a: np.eye(4)[a])(actions), np.eye(4)[actions])


def test_what_a_survey_of_user_mistakes_found():
    """len() of a 0-d traced value, an arena larger than the machine (NumPy's MemoryError named
    the arena's internal uint8 shape), gradc.explain without arguments, a channels-last image
    to conv2d, and `python -m gradc`: each a GradcError that names the line and says what to
    do (or the command)."""
    with pytest.raises(gradc.ArgumentError, match=r"test_errors\.py:\d+: len\(\) of a 0-d"):
        gradc.jit(lambda x: len(x.sum()))(np.ones(3))
    outer = gradc.jit(lambda a, b: (a @ b).sum())
    with pytest.raises(gradc.ShapeError, match=r"test_errors\.py:\d+: the compiled program needs "
                                               r".* GiB.*float64\[1000000, 1000000\].*matmul"):
        outer(np.ones((10 ** 6, 1)), np.ones((1, 10 ** 6)))
    with pytest.raises(gradc.ArgumentError, match=r"test_errors\.py:\d+: gradc\.explain\(fun, "
                                                  r"\*args\): give the arguments"):
        gradc.explain(lambda x: x.sum())
    with pytest.raises(gradc.ShapeError, match=r"channels-last.*transpose\(0, 3, 1, 2\)"):
        gradc.nn.conv2d(np.ones((2, 8, 8, 3)), np.ones((4, 3, 3, 3)))
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-m", "gradc", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "usage: gradc" in done.stdout, done.stderr


def test_a_refusal_the_traced_code_catches_is_raised_again():
    """`try: if x.sum() > 0: ... except Exception: fallback` caught gradc's refusal and compiled
    the fallback, which NumPy never takes: a silent wrong answer (also for .item() and a
    view's in-place write). The refusal is raised again, saying the code caught it. An error
    NumPy raises too (shapes that do not broadcast) may still be caught: NumPy's code takes
    that fallback as well."""
    def branch(x):
        try:
            if x.sum() > 0:
                return x * 1
            return -x
        except Exception:
            return x * 0

    def item(x):
        try:
            s = x.sum().item()
        except Exception:
            s = 1.0
        return x * s

    x = np.array([1.0, -2.0, 3.0])
    for fn, error in ((branch, gradc.TracedBranchError), (item, gradc.TracedBranchError)):
        with pytest.raises(error, match=r"An `except` in the traced code caught this refusal "
                                        rf"\(in `{fn.__name__}`, around test_errors\.py:\d+\)"):
            gradc.jit(fn)(x)
        with pytest.raises(error, match="caught this refusal"):
            gradc.grad(lambda x: np.sum(fn(x)))(x)

    def numpy_refuses_too(a, b):
        try:
            return a + b
        except ValueError:  # (NumPy: operands could not be broadcast together)
            return a + b.T

    a, b = np.ones((2, 3)), np.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(gradc.jit(numpy_refuses_too)(a, b), numpy_refuses_too(a, b))


def test_returning_an_object_that_holds_traced_values_is_refused():
    """A dataclass, a SimpleNamespace or a closure returned (or as has_aux's aux) came back
    holding the trace's placeholders, not numbers, without an error."""
    import dataclasses
    import types

    @dataclasses.dataclass
    class Out:
        y: object
        total: object

    x = np.arange(6.0).reshape(2, 3)
    for fn, kind in ((lambda x: Out(x * 2, x.sum()), "Out"),
                     (lambda x: [types.SimpleNamespace(a=x * 2)], "SimpleNamespace"),
                     (lambda x: (lambda: x * 2), "function")):
        with pytest.raises(gradc.UnsupportedOpError, match=rf"object of type `{kind}` holding "
                                                           "traced values"):
            gradc.jit(fn)(x)
    with pytest.raises(gradc.UnsupportedOpError, match="object of type `Out`"):
        gradc.grad(lambda x: (np.sum(x ** 2), Out(x, x.max())), has_aux=True)(x)
    # text made from a traced value holds its placeholder: refused too
    for fn in (lambda x: (x.sum(), {"msg": f"loss={x.sum()}"}), lambda x: [repr(x[0])],
               lambda x: str(x.max())):
        with pytest.raises(gradc.UnsupportedOpError, match="returned text made from a traced"):
            gradc.jit(fn)(x)
    # static objects and text without traced values come back as they are
    got = gradc.jit(lambda x: (x * 2, types.SimpleNamespace(n=3), "50% at f64[2]"))(x)
    assert got[1].n == 3 and got[2] == "50% at f64[2]"


def test_a_0d_integer_array_as_a_size_and_iterating_a_0d_value():
    """NumPy takes a 0-d integer array as a reshape size (gradc said 'iteration over a 0-d
    array'); iterating a 0-d traced value is NumPy's TypeError, now named with the line."""
    x = np.arange(6.0)
    for fn in (lambda a: a.reshape(np.array(6)), lambda a: np.reshape(a, np.array(6)),
               lambda a: a.reshape(np.array([2, 3]))):
        np.testing.assert_array_equal(gradc.jit(fn)(x), fn(x))
    with pytest.raises(gradc.ArgumentError, match=r"test_errors\.py:\d+: iteration over a 0-d") \
            as info:
        gradc.jit(lambda a: [v for v in a.sum()])(x)
    assert isinstance(info.value, TypeError)


def test_a_train_step_inside_traced_code_says_so():
    """A train_step called inside a traced function failed on gradc's own check of `.flags`."""
    step = gradc.train_step(lambda p: np.sum(p ** 2), gradc.optim.SGD(0.1))
    with pytest.raises(gradc.UnsupportedOpError, match="a train_step called inside a traced"):
        gradc.jit(lambda a: step(a))(np.ones(3))


def test_an_integer_constant_loss_says_to_return_a_float():
    """`return 1` from a differentiated function (autograd's test_grad_const) was 'needs a
    function that returns one scalar, got 1'; `return 1.0` is a constant with zero gradient."""
    with pytest.raises(gradc.NonDifferentiableError, match="returned the integer 1 "):
        gradc.grad(lambda x: 1)(2.0)
    assert gradc.grad(lambda x: 1.0)(2.0) == 0.0


def test_the_supported_methods_list_leaves_out_the_refused_ones():
    """.ptp is refused with its own message: the list of supported methods in another refusal
    named it too. (.sort, .fill and .put write into the array they are called on.)"""
    with pytest.raises(gradc.UnsupportedOpError, match="supported: T, ") as info:
        gradc.jit(lambda x: x.tofile)(np.ones(2))
    listed = str(info.value).split("supported: ")[1].split(", ")
    assert "ptp" not in listed and {"argsort", "sort", "fill", "put"} <= set(listed)


def test_messages_a_port_of_user_code_found_unclear():
    """`A.dot(x)` with A a NumPy array (NumPy's method converts x; filterpy's Kalman filter)
    got the generic conversion message; `y.T = ...` and `y.imag = ...` were a bare
    AttributeError naming gradc's Value class; .item() said to use np.where; a SciPy ufunc's
    out= was called np.expit."""
    import scipy.special
    F = np.array([[1.0, 0.5], [0.0, 1.0]])
    x = np.array([0.3, -0.2])
    for f, text in ((lambda v: F.dot(v), r"A @ x or np.dot\(A, x\)"),
                    (lambda v: F.T.dot(v).dot(F), r"A @ x"),
                    (lambda v: (v @ v.T).item(), r"x.reshape\(\(\)\)"),
                    (lambda v: v.item(1), r"x\.reshape\(-1\)\[i\] \(of x\.item\(i\)\)")):  # (NumPy
        # takes an element of any array there: it was called NumPy's refusal of a size-2 one)
        with pytest.raises(gradc.TracedBranchError, match=text):
            gradc.jit(f)(x)
    np.testing.assert_allclose(gradc.jit(lambda v: F @ v)(x), F.dot(x))

    def set_t(v):
        y = v * 1.0
        y.T = y  # SET-T
        return y

    def set_imag(v):
        y = v * 1.0
        y.imag = 0.0  # SET-IMAG
        return y

    for f, marker, text in ((set_t, "SET-T", "not writable"),
                            (set_imag, "SET-IMAG", "no imaginary part")):
        with pytest.raises(gradc.UnsupportedOpError, match=text) as info:
            gradc.jit(f)(x)
        check(info, gradc.UnsupportedOpError, marker)

    with pytest.raises(gradc.UnsupportedOpError, match=r"scipy\.special\.expit\(out="):
        gradc.jit(lambda v: scipy.special.expit(v, out=v))(x)


def test_as_strided_reading_strides_float_and_static_sizes():
    """as_strided(x, shape, x.strides * 2) reads x.strides before as_strided runs: it got the
    list of supported attributes (which named the refused .item and .tolist) instead of the
    memory message that points to sliding_window_view; float() of a 0-d value says to drop
    it; .itemsize and .nbytes are static, as .size."""
    from numpy.lib.stride_tricks import as_strided
    x = np.arange(4.0)
    with pytest.raises(gradc.UnsupportedOpError, match="sliding_window_view"):
        gradc.jit(lambda v: as_strided(v, (3, 2), v.strides * 2))(x)
    with pytest.raises(gradc.UnsupportedOpError, match="supported: ") as info:
        gradc.jit(lambda v: v.tofile)(x)
    assert " item," not in str(info.value) and "tolist" not in str(info.value)
    with pytest.raises(gradc.TracedBranchError, match="drop it"):
        gradc.jit(lambda v: v * float(np.squeeze(v[:1])))(x)
    assert gradc.jit(lambda v: v * (v.itemsize + v.nbytes))(x)[1] == 8 + 32


def test_a_numpy_scalar_type_of_a_traced_value_says_to_write_astype():
    def f(x):
        return np.float64(x.sum()) * x

    with pytest.raises(gradc.TracedBranchError, match=r"write x.astype\(np.float64\)") as e:
        gradc.jit(f)(np.ones(3, np.float32))
    assert "test_errors.py" in str(e.value)


def test_a_traced_value_as_a_dict_key_or_set_element_is_refused():
    """NumPy's y[i] (an np.int64) hashes by value: `WEIGHTS.get(y[i], 0.0)`, `y[i] in {0, 1}`,
    `len(set(y))` look up the label. A traced value's is not known: these silently took the
    default (or raised a bare KeyError naming an IR value)."""
    weights = {0: 1.0, 1: 5.0}
    x, y = np.array([1.0, 2.0, 3.0]), np.array([1, 0, 1])
    cases = [lambda x, y: sum(weights.get(y[i], 0.0) * x[i] for i in range(3)),
             lambda x, y: x * (1.0 if y[0] in {0, 1} else 0.0),
             lambda x, y: x * len(set(y)),
             lambda x, y: sum(weights[y[i]] * x[i] for i in range(3))]
    for f in cases:
        with pytest.raises(gradc.TracedBranchError, match=r"hash\(\) \(a dict key") as e:
            gradc.jit(f)(x, y)
        assert "test_errors.py" in str(e.value)


def test_numpys_shape_refusals_and_dtype_questions_answer_as_numpy_does():
    """bool()/float()/.item() of an array without one element is NumPy's ValueError/TypeError
    whatever its values (it was a TracedBranchError saying to use np.where); a static index out
    of range in np.take is NumPy's IndexError while tracing, where the user's `except` sees it;
    np.result_type, np.can_cast and np.common_type read a traced value's dtype."""
    x = np.arange(3.0)
    for f, error in ((lambda x: 1.0 if x > 0 else 2.0, ValueError),
                     (lambda x: float(x), TypeError), (lambda x: x.item(), ValueError)):
        with pytest.raises(error, match="NumPy's refusal, whatever the values"):
            gradc.jit(f)(x)

    def falls_back(x):
        try:
            return np.take(x, [10]).sum()
        except IndexError:
            return x.sum() * 2

    assert gradc.jit(falls_back)(x) == falls_back(x) == 6.0

    def generic(x, w):
        assert np.can_cast(x, np.float64) and np.common_type(x) is np.float32
        return (x.astype(np.result_type(x, w)) * w).sum(), np.result_type(x, 1.0)

    xf, w = np.ones(3, np.float32), np.ones(3)
    assert gradc.jit(generic)(xf, w) == generic(xf, w)


def logs_of_zeros_it_made(x):
    zeros = np.zeros(3)
    return x + np.log(zeros)  # LOG-OF-ZEROS


def test_numpys_warning_on_an_array_the_trace_made_names_the_users_line():
    """NumPy's RuntimeWarning while tracing, on an array the function made (np.log of its own
    np.zeros), was shown at gradc's fresh.py (fuzz41b)."""
    with pytest.warns(RuntimeWarning, match="divide by zero") as caught:
        np.testing.assert_array_equal(gradc.jit(logs_of_zeros_it_made)(X3), np.full(3, -np.inf))
    found = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert found and all(os.path.basename(w.filename) == THIS_FILE
                         and w.lineno == line_of("LOG-OF-ZEROS") for w in found)


def slope_by_polyder(c):
    from numpy.polynomial import polynomial as P
    return np.sum(P.polyval(X4, P.polyder(c)) ** 2)  # POLYDER


def test_a_library_storing_a_traced_value_into_its_array_is_refused_at_the_users_line():
    """fuzz42b: numpy.polynomial's polyder stores the coefficients into an array it makes:
    NumPy's bare "setting an array element with a sequence" came out, naming no user line."""
    with pytest.raises(gradc.UnsupportedOpError) as excinfo:
        gradc.grad(slope_by_polyder)(np.array([0.5, -1.0, 2.0, 0.3]))
    check(excinfo, gradc.UnsupportedOpError, "POLYDER")
    assert "polyder" in str(excinfo.value)


def row_in_matrix(M):
    found = M[0] in M  # ROW-IN
    return M * found


def pickles_a_traced_value(x):
    import pickle
    return pickle.loads(pickle.dumps(x))  # PICKLE


def views_memory(x):
    return x * len(memoryview(x))  # MEMORYVIEW


def logs_json(x):
    import json
    log = json.dumps({"loss": x.sum()})  # JSON
    return x * len(log)


@pytest.mark.parametrize("fun, cls, marker", [
    (row_in_matrix, gradc.TracedBranchError, "ROW-IN"),
    (pickles_a_traced_value, gradc.UnsupportedOpError, "PICKLE"),
    (views_memory, gradc.UnsupportedOpError, "MEMORYVIEW"),
    (logs_json, gradc.UnsupportedOpError, "JSON"),
])
def test_python_reading_a_traced_values_contents_is_refused_at_the_line(fun, cls, marker):
    """fuzz42d: `row in M` was a ShapeError claiming NumPy refuses it (NumPy answers (M ==
    row).any(); a ValueError a user's `except ValueError` swallowed); pickle, memoryview and
    json of traced values raised bare Python errors naming gradc's `Value`."""
    with pytest.raises(cls) as excinfo:
        gradc.jit(fun)(np.arange(6.0).reshape(2, 3))
    check(excinfo, cls, marker)
    assert "NumPy's refusal" not in str(excinfo.value) and "'Value'" not in str(excinfo.value)


def object_array_of_parts(c):
    parts = np.empty(2, dtype=object)
    parts[0] = c[:1]  # OBJECT-STORE
    parts[1] = c[1:]
    return np.sum(parts[0]) + np.sum(parts[1] ** 2)


def ragged_parts_caught(c):
    try:
        parts = np.array([c[:2], c[:1]], dtype=object)  # OBJECT-LITERAL
        return c * 0
    except (TypeError, ValueError):  # (meant for NumPy's own errors: NumPy raises none here)
        return c


@pytest.mark.parametrize("fun, marker", [(object_array_of_parts, "OBJECT-STORE"),
                                         (ragged_parts_caught, "OBJECT-LITERAL")])
def test_object_arrays_of_traced_values_are_refused_at_the_line_past_handlers(fun, marker):
    """fuzz42b/d: the refusal named no line; np.array(parts, dtype=object) raised a ValueError
    that the user's handler caught, silently taking its fallback."""
    with pytest.raises(gradc.UnsupportedOpError, match="Python list") as excinfo:
        gradc.jit(fun)(np.array([0.5, -1.0, 2.0]))
    check(excinfo, gradc.UnsupportedOpError, marker)


def poly1d_of_traced(c):
    return np.sum(np.poly1d(c)(X4) ** 2)  # POLY1D


def test_a_refused_function_numpys_own_code_calls_names_what_the_user_called():
    """fuzz42b: np.poly1d(c) calls np.trim_zeros: the refusal named only trim_zeros."""
    with pytest.raises(gradc.UnsupportedOpError) as excinfo:
        gradc.grad(poly1d_of_traced)(np.array([1.0, -2.0, 0.5]))
    check(excinfo, gradc.UnsupportedOpError, "POLY1D")
    assert "np.trim_zeros (called by NumPy's np.poly1d" in str(excinfo.value)


class _IndexLike:
    def __index__(self):
        return 1


def three_argument_pow(x):
    return pow(x, 2, 3)  # POW3


def reads_flags(x):
    return x * np.isfortran(x)  # FLAGS


def test_pow_with_a_modulus_flags_and_index_objects_as_numpy():
    """fuzz42d: pow(x, 2, 3) leaked gradc's lambda in the message; np.isfortran blamed an
    attribute the user never wrote; an object with __index__ is an integer index to NumPy."""
    with pytest.raises(gradc.ArgumentError) as excinfo:
        gradc.jit(three_argument_pow)(X3)
    check(excinfo, gradc.ArgumentError, "POW3")
    assert "lambda" not in str(excinfo.value) and isinstance(excinfo.value, TypeError)
    with pytest.raises(gradc.UnsupportedOpError, match="np.isfortran") as excinfo:
        gradc.jit(reads_flags)(X3)
    check(excinfo, gradc.UnsupportedOpError, "FLAGS")
    assert gradc.jit(lambda x: x[_IndexLike()] + x[_IndexLike(), None])(X3).tolist() == [0.0]


def truncates(x):
    return x * math.trunc(x.sum())  # TRUNC


def test_math_trunc_and_is_integer_of_a_traced_number_name_the_line():
    """fuzz42e: they were bare TypeError / AttributeError naming gradc's Value."""
    with pytest.raises(gradc.TracedBranchError, match="np.trunc") as excinfo:
        gradc.jit(truncates)(X3)
    check(excinfo, gradc.TracedBranchError, "TRUNC")
    with pytest.raises(gradc.TracedBranchError, match="is_integer"):
        gradc.jit(lambda x: x * x.sum().is_integer())(X3)


def test_np_vectorize_on_a_traced_array_is_named():
    """np.vectorize's __call__ converts its inputs to arrays: the refusal says it is
    np.vectorize and what to write instead (it was the generic conversion message)."""
    with pytest.raises(gradc.TracedBranchError,
                       match=r"test_errors\.py:\d+: np\.vectorize calls its Python function once "
                             r"per element.*whole arrays"):
        gradc.jit(lambda x: np.vectorize(lambda v: v * 2.0 if v > 0 else 0.0)(x))(np.arange(3.0))


@pytest.mark.parametrize("call, name", [
    (lambda x: gradc.nn.softplus(x, beta=2.0), "softplus"),
    (lambda x: gradc.nn.relu(x, inplace=True), "relu"),
    (lambda x: gradc.nn.softmax(x, 0, False, 1), "softmax"),
])
def test_a_wrong_argument_to_a_gradc_nn_function_names_the_function(call, name):
    """Python's message for a wrong argument names gradc.nn's function (it named an internal
    closure: "_unary.<locals>.f() got an unexpected keyword argument 'beta'")."""
    with pytest.raises(gradc.ArgumentError, match=rf"test_errors\.py:\d+: {name}\(\) (got|takes)"):
        gradc.jit(call)(np.arange(3.0))
