"""Item assignment (`x[i] = v`, `x[i] += v`) in traced code. NumPy writes into x's memory, and
every name, list and attribute holding x sees the store; gradc's array object x takes the
updated array (Graph.take_over), so those see it too, and what read x before keeps the old
values. Where NumPy would show the store through another array (a view taken before, the array
x views, the caller's argument) gradc refuses by name and line rather than answer otherwise."""
import re

import numpy as np
import pytest

import gradc
from _finite_differences import central_difference

X = np.random.RandomState(0).randn(3, 4)


def _check_value_and_gradient(f):
    """f's value is NumPy's and its gradient the central differences'."""
    value, grad = gradc.value_and_grad(f)(X)
    assert value == pytest.approx(f(X.copy()), rel=1e-12)
    np.testing.assert_allclose(grad, central_difference(f, X), atol=1e-6)


def _relu_on_a_copy(x):
    y = x.copy()
    y[y < 0] = 0.0  # (a traced mask)
    return np.sum(y * y)


def _filled_step_by_step(x):
    n, t_steps = x.shape
    h = np.zeros_like(x)
    h[:, 0] = np.tanh(x[:, 0])
    for t in range(1, t_steps):
        h[:, t] = np.tanh(x[:, t] + 0.5 * h[:, t - 1])
    return np.sum(h ** 2)


def _augmented_stores(x):
    y = x * 1.0
    y[1] += 3 * x[0]
    y[:, 1:] *= 2
    y[[0, 0, 2]] += 1.0  # (repeated: NumPy adds once, the last store wins)
    y[..., -1] -= y[..., 0]
    return np.sum(np.sin(y))


def _seen_through_a_list(x):
    y = np.tanh(x)
    kept = [y]
    y[0, 0] = 5.0
    return np.sum(kept[0] * x)  # (the list holds the array that was written)


def _read_before_the_store(x):
    y = np.tanh(x)
    before = y.sum()
    y[0] = 0.0
    return before + np.sum(y * y)


def _stores_of_every_kind(x):
    y = np.exp(x)
    y[1, 2] = x[0, 0] * 3  # (an element)
    y[:, ::2] = x[:, 1::2]  # (a strided slice)
    y[np.array([2, 0])] = x[1]  # (an index array, a row broadcast)
    y[x > 1.0] = -1.0  # (a traced mask, a number)
    y[np.argmax(x[:, 0])] = 0.25  # (a traced index)
    return np.sum(y * x)


def _integer_and_boolean_targets(x):
    k = np.zeros(4, np.int64)
    k = k + 1  # (a computed integer array)
    k[1] = 2.7 * 2  # (NumPy truncates to 5)
    m = x[0] > 10.0
    m[2] = True
    return np.sum(x[0] * k) + np.sum(np.where(m, x[1], 0.0))


@pytest.mark.parametrize("f", [_relu_on_a_copy, _filled_step_by_step, _augmented_stores,
                               _seen_through_a_list, _read_before_the_store,
                               _stores_of_every_kind, _integer_and_boolean_targets])
def test_item_assignment_is_numpys_with_its_gradient(f):
    _check_value_and_gradient(f)


def test_a_0d_array_takes_a_store_and_a_number_does_not():
    def zero_d(x):
        a = np.array(x.sum())  # (a 0-d array: written in place, as NumPy's)
        a[()] = a * 2.0
        return a + 1.0

    assert gradc.jit(zero_d)(X) == pytest.approx(X.sum() * 2.0 + 1.0)

    def number(x):
        s = x.sum()  # (a NumPy scalar: NumPy refuses the store)
        s[()] = 1.0  # NUMBER
        return s

    with pytest.raises(gradc.ArgumentError, match="does not support item assignment"):
        gradc.jit(number)(X)


def _into_an_argument(x):
    x[0] = 0.0  # ARG
    return np.sum(x)


def _into_a_view_of_an_argument(x):
    row = x[1]
    row[0] = 0.0  # ARG-VIEW
    return np.sum(row)


def _view_read_after(x):
    y = np.tanh(x)
    flipped = y.T  # (a transpose: not followed, as basic indexing's views are)
    y[0, 1] = 7.0
    return np.sum(flipped * x.T)  # VIEW-READ (NumPy's view shows the 7)


def _array_read_after_a_store_through_its_view(x):
    y = np.tanh(x)
    flipped = y.T
    flipped[1] = 7.0
    return np.sum(y)  # BASE-READ (NumPy's y holds the 7)


@pytest.mark.parametrize("f, marker", [(_into_an_argument, "ARG"),
                                       (_into_a_view_of_an_argument, "ARG-VIEW"),
                                       (_view_read_after, "VIEW-READ"),
                                       (_array_read_after_a_store_through_its_view,
                                        "BASE-READ")])
def test_a_store_numpy_would_show_elsewhere_is_refused(f, marker):
    with pytest.raises(gradc.UnsupportedOpError) as excinfo:
        gradc.jit(f)(X.copy())
    line = next(i for i, text in enumerate(open(__file__, encoding="utf-8"), start=1)
                if text.rstrip().endswith(f"# {marker}") or f"# {marker} " in text)
    assert re.search(rf"test_item_assignment\.py:{line}\b", str(excinfo.value))


def _stores_through_views(x):
    """Views by basic indexing share their array's memory: a store through one shows in the
    array and in every other such view, before and after, as NumPy's."""
    y = np.tanh(x)
    row, col, corner = y[0], y[:, 1], y[1:, ::-1][0]
    kept = [row]
    y[0][1] = x[1, 0] * 3.0  # (a chained store, through a temporary view)
    row[2] = -row[0]
    corner[0] += x[1, 1]
    y[1, :][::-1][1] = 5.0
    col *= 2.0  # (an in-place operator on a view)
    deep = y[1:][0][::2]
    deep[-1] = x[0, 0] ** 2
    return y, row, col, corner, deep, kept[0] + 0.0


def test_stores_through_views_of_basic_indexing_show_everywhere_as_numpys():
    """`out[i][j] = v` of beginners' loops, `row = y[0]; row[1] = v`, `col *= 2`: NumPy
    writes into y's memory, which every view taken by basic indexing shows (each was refused,
    or y was stale, when read after)."""
    x = X[:2, :3].copy()
    got, want = gradc.jit(_stores_through_views)(x), _stores_through_views(x)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12)

    def loss(x):
        return sum(np.sum(v * v) for v in _stores_through_views(x))
    np.testing.assert_allclose(gradc.grad(loss)(x), central_difference(loss, x), rtol=1e-6,
                               atol=1e-8)


def test_a_store_through_a_view_is_read_through_that_view():
    def through_view(x):
        y = np.tanh(x)
        row = y[0]
        row[1] = 7.0
        return np.sum(row * x[0])  # (y itself unread)

    value, grad = gradc.value_and_grad(through_view)(X)
    assert value == pytest.approx(through_view(X.copy()))
    np.testing.assert_allclose(grad, central_difference(through_view, X), atol=1e-6)


# --- NumPy arrays the function makes (gradc/fresh.py) -----------------------------------------

def _conv_naive(x):  # (cs231n's conv_forward_naive, small)
    out = np.zeros((2, 3))
    for i in range(2):
        for j in range(3):
            out[i, j] = np.sum(x[i:i + 2, j:j + 2] * np.array([[1.0, -2.0], [0.5, 3.0]]))
    return np.sum(out ** 2)


def _rnn_forward(x):  # (cs231n's rnn_forward: h = np.zeros((N, T, H)); h[:, t, :] = ...)
    n, t_steps = x.shape
    h = np.zeros((n, t_steps, 2))
    prev = np.zeros((n, 2))
    for t in range(t_steps):
        prev = np.tanh(x[:, t, None] * np.array([1.0, -0.5]) + prev @ np.eye(2) * 0.5)
        h[:, t, :] = prev
    return np.sum(h ** 2)


def _accumulators(x):
    acc = np.zeros(4)
    for i in range(3):
        acc += x[i] * (i + 1)
    counts = np.zeros(4, np.int64)
    counts += 1  # (NumPy's own: nothing traced)
    counts[np.argmax(x[0])] += 5  # (`a[i] += v` at a traced index)
    part = np.ones(4)
    part[1:] *= x[1, :3]
    table = {"s": np.zeros(4)}
    table["s"] += x[2]  # (a dict's slot: bound anew by the operator)
    return np.sum(acc * counts) + np.sum(part ** 2) + np.sum(table["s"] ** 3)


def _labels_and_names(x):
    labels = np.argmax(x, axis=1)
    one_hot = np.zeros((3, 4))
    one_hot[np.arange(3), labels] = 1.0
    same = one_hot  # (two names of one array: both see the next store)
    one_hot[0, 0] = x[0, 0]
    return np.sum(same * x) + np.sum(np.eye(4)[labels] * x) + np.sum(one_hot)


def _made_every_way(x):
    a = np.empty((3, 4))
    a[...] = x * 2
    b = np.full((3, 4), 0.5)
    b[:, 0] = x[:, 1]
    c = np.ones_like(np.zeros((3, 4)), order="F")
    c[1] = x[2]
    mask = np.zeros(4, bool)  # (used by NumPy alone: stays NumPy's)
    mask[1] = True
    return np.sum(a * b * c) + np.sum(x[:, mask])


def _chained_stores(x):  # (beginners' `out[i][j] = v`: a store through the temporary out[i])
    out = np.zeros((3, 4))
    for i in range(3):
        for j in range(4):
            out[i][j] = x[i, j] * (i - j)
    out[0][1:3] += x[1, :2]
    calls = np.zeros((2, 2))
    calls[1][0] += np.sin(x[2, 0])  # (a call in the value: the stack followed through it)
    grid = np.ones((2, 2, 3))
    grid[1][0][::2] = x[2, :2]
    grid[0][1][-1] *= x[0, 0]
    grid[1][1][0] = 4.0  # (a number: the array is traced from the first such store)
    return np.sum(out ** 2) + np.sum(grid * 1.5) + np.sum(calls ** 2)


@pytest.mark.parametrize("f", [_conv_naive, _rnn_forward, _accumulators, _labels_and_names,
                               _made_every_way, _chained_stores])
def test_stores_into_arrays_the_function_makes_are_numpys(f):
    _check_value_and_gradient(f)


def test_an_accumulator_keeps_its_dtype_and_a_made_array_is_returned_as_numpys():
    def f(x):
        acc = np.zeros(4, np.float32)
        acc += x[0]  # (float64 into float32: stays float32, as NumPy's)
        return acc, np.zeros(2)

    acc, zeros = gradc.jit(f)(X)
    assert acc.dtype == np.float32 and type(zeros) is np.ndarray
    np.testing.assert_array_equal(acc, X[0].astype(np.float32))
    np.testing.assert_array_equal(zeros, np.zeros(2))


def _held_by_a_helper(x):
    out = np.zeros(4)

    def fill(buf, v):
        buf[0] = v  # HELPER

    fill(out, x[0, 0])
    return out.sum()


def _with_a_view_alive(x):
    out = np.zeros((2, 4))
    row = out[0]
    out[1] = x[0]  # VIEW-ALIVE
    return out.sum() + row.sum()


def _row_named_then_stored_into(x):
    out = np.zeros((2, 4))
    row = out[0]  # (a name holds the view: NumPy's store into it writes into out)
    row[1] = x[0, 0]  # ROW-NAMED
    return out.sum()


def _accumulator_in_a_list(x):
    acc = np.zeros(4)
    steps = [acc]
    acc += x[0]  # LISTED
    return steps[0]


def _explicit_out(x):
    acc = np.zeros(4)
    np.add(acc, x[0], out=acc)  # EXPLICIT-OUT (acc is not bound to the result)
    return acc


@pytest.mark.parametrize("f, marker", [(_held_by_a_helper, "HELPER"),
                                       (_with_a_view_alive, "VIEW-ALIVE"),
                                       (_row_named_then_stored_into, "ROW-NAMED"),
                                       (_accumulator_in_a_list, "LISTED"),
                                       (_explicit_out, "EXPLICIT-OUT")])
def test_a_store_into_a_made_array_something_else_holds_is_refused(f, marker):
    with pytest.raises(gradc.UnsupportedOpError) as excinfo:
        gradc.jit(f)(X)
    line = next(i for i, text in enumerate(open(__file__, encoding="utf-8"), start=1)
                if f"# {marker}" in text)
    assert re.search(rf"test_item_assignment\.py:{line}\b", str(excinfo.value))
    assert "np.zeros_like(x)" in str(excinfo.value)


# --- x[mask] with a traced mask, kept in place (gradc/selection.py) ---------------------------

def _stable_sigmoid(x):  # (cs231n's)
    pos = x >= 0
    neg = ~pos
    z = np.zeros_like(x)
    z[pos] = np.exp(-x[pos])
    z[neg] = np.exp(x[neg])
    top = np.ones_like(x)
    top[neg] = z[neg]
    return np.sum(top / (1 + z))


def _leaky_relu(x):  # (numpy-ml's: the mask computed twice)
    z = x * 1.0
    _z = z.copy()
    _z[z < 0] = _z[z < 0] * 0.1
    return np.sum(_z ** 2)


def _masked_sums(x):
    m = x > 0.2
    err = x - 0.5
    rows = x[:, 0] > 0  # (a mask of the first axis: whole rows)
    y = x.copy()
    y[rows] = np.tanh(y[rows]) * 2
    y[x < 0] *= x[x < 0]
    return (np.sum(err[m] ** 2) + x[m].mean() + np.sum(y ** 2)
            + np.sum(np.sum(x[rows], axis=0) ** 2))


@pytest.mark.parametrize("f", [_stable_sigmoid, _leaky_relu, _masked_sums])
def test_a_selection_by_a_traced_mask_is_numpys_in_math_stores_and_sums(f):
    _check_value_and_gradient(f)


def test_values_a_selection_computes_where_it_does_not_select_never_reach_the_gradient():
    def f(x):
        z = np.zeros_like(x)
        m = x < 0.5
        z[m] = np.exp(x[m] * 1000)  # (exp(800) = inf where x = 0.8, not selected)
        return np.sum(z)

    x = np.array([0.001, -0.01, 0.8])
    np.testing.assert_allclose(gradc.grad(f)(x), [1000 * np.exp(1.0), 1000 * np.exp(-10.0), 0.0])


def test_what_a_selection_cannot_be_is_refused_by_name():
    for f, words in ((lambda x: len(x[x > 0]), "len()"),
                     (lambda x: x[x > 0] + x[x > 1], "different masks"),
                     (lambda x: x[x > 0] * x, "combined with an array"),
                     (lambda x: np.max(x[x > 0]), "np.max")):
        with pytest.raises(gradc.UnsupportedOpError, match=re.escape(words)):
            gradc.jit(f)(X)


# --- fuzz39g: what a store must not reach, and what it may -----------------------------------

def test_a_store_never_reaches_an_array_numpy_made_anew():
    """Calls that gave back the very traced object they were given (log(exp(y)) by a stability
    rule, an all-True mask, meshgrid, asarray(copy=True), an empty gradc.at update): a store
    into y showed in their results (Graph.take_over changes that one object)."""
    ops = [lambda y: np.log(np.exp(y)), lambda y: y[np.ones(4, bool)],
           lambda y: np.meshgrid(y)[0], lambda y: np.asarray(y, copy=True),
           lambda y: gradc.at(y)[1:1].add(1.0)]
    x = np.array([0.1, 0.2, 0.3, 0.4])
    for op in ops:
        def f(x, op=op):
            y = x * 2.0
            c = op(y)
            y[0] = 100.0
            c[1] = -1.0
            return c, y
        got = gradc.jit(f)(x)
        np.testing.assert_allclose(got[0], [0.2, -1.0, 0.6, 0.8])
        np.testing.assert_allclose(got[1], [100.0, 0.4, 0.6, 0.8])


def test_stores_the_count_cannot_vouch_for_are_refused_and_locals_stay_whole():
    """`out.__setitem__(i, v)` holds one reference fewer than `out[i] = v`, whose count the
    check is measured on: a list holding out went unseen (refused now); the user's locals()
    dict stays whole (the check cleared it: a bare KeyError after)."""
    def by_call(x):
        out = np.zeros(3)
        held = [[out]]
        out.__setitem__(0, x[0])  # CALL
        return held[0][0]

    with pytest.raises(gradc.UnsupportedOpError):
        gradc.jit(by_call)(X[0])

    def with_locals(x):
        names = locals()
        out = np.zeros(4)
        out[0] = x[0]
        return out + names["x"]

    np.testing.assert_allclose(gradc.jit(with_locals)(X[0]), with_locals(X[0]))


def _recurrence_and_closure(x):
    rows = np.zeros((3, 4))
    rows[0] = x[0]
    for t in range(1, 3):
        rows[t] = rows[t - 1] * 0.5 + x[t]  # (a view of rows read while rows is NumPy's)
    total = np.zeros(())
    total += np.sum(x)  # (a 0-d array the function made)

    def put(i):
        extra[i] = x[2, i] ** 2  # (through a closure)

    extra = np.zeros(4)
    for i in range(4):
        put(i)
    return np.sum(rows ** 2) + total + np.sum(extra)


def test_recurrences_closures_and_0d_arrays_the_function_made_are_numpys():
    _check_value_and_gradient(_recurrence_and_closure)


def test_a_selection_refuses_what_is_not_elementwise_and_keeps_its_mask_and_dtype():
    """x[m] @ x[m] (a gufunc) summed over all of x; a list operand lined up with all of x; a
    mask changed after the selection kept matching it; a float32 mean was float64."""
    x = np.array([1.0, -2.0, 3.0, -4.0])
    for f in (lambda x: x[x > 0] @ x[x > 0], lambda x: np.sum(x[x > 0] * [1.0, 2.0])):
        with pytest.raises(gradc.UnsupportedOpError):
            gradc.jit(f)(x)

    def mask_changed(x):
        m = x > 0
        s = x[m]
        m[0] = False
        m[1] = True
        z = np.zeros_like(x)
        z[m] = s
        return z

    with pytest.raises(gradc.UnsupportedOpError):
        gradc.jit(mask_changed)(x)
    mean = gradc.jit(lambda x: x[x > 0].mean())(x.astype(np.float32))
    assert mean.dtype == np.float32 and mean == 2.0


def test_a_selection_broadcasts_what_numpy_broadcasts_against_it():
    """x[m] * np.array([c]) (one along the selected elements), a row across a first-axis mask's
    selected rows, `z[m] = x[:1]` (one value): NumPy's, gradient too; an operand along the
    selected elements (two values, a (2, 3) block) stays refused."""
    rows = X[:, 0] > 0

    def f(x):
        z = np.zeros_like(x)
        z[x > 0] = x[0, :1]
        return (np.sum(x[x > 0] * np.array([2.0])) + np.sum(x[rows] * np.array([1.0, 2.0, 3.0,
                                                                                  4.0]))
                + np.sum(x[x[:, 0] > 0] * np.array([[1.0, -1.0, 2.0, 0.5]])) + np.sum(z))

    _check_value_and_gradient(f)
    with pytest.raises(gradc.UnsupportedOpError):
        gradc.jit(lambda x: np.sum(x[x[:, 0] > 0] * np.ones((2, 4))))(X)


def test_under_a_debuggers_tracer_a_store_still_counts_every_holder():
    """A Python-level tracer (pdb's) makes a frame's dict of locals at every line; the probes
    that measure a statement's count discount it as the user's frames do: an array a list in
    a list holds is refused, one held alone or by a list takes the store."""
    def tracer(frame, event, arg):
        frame.f_locals  # noqa: B018 (what pdb reads)
        return tracer

    def listed(x):
        out = np.zeros(3)
        held = [[out]]
        out[0] = x[0]
        return held[0][0]

    def in_a_list(x):
        out = np.zeros(3)
        held = [out]
        out[0] = x[0]
        return held[0] + out

    def alone(x):
        out = np.zeros(3)
        out[0] = x[0]
        acc = np.zeros(3)
        acc += x
        return out + acc

    x = np.array([1.0, 2.0, 3.0])
    import sys
    sys.settrace(tracer)
    try:
        with pytest.raises(gradc.UnsupportedOpError):
            gradc.jit(listed)(x)
        got = gradc.jit(alone)(x)
        in_list = gradc.jit(in_a_list)(x)
    finally:
        sys.settrace(None)
    np.testing.assert_array_equal(got, alone(x))
    np.testing.assert_array_equal(in_list, in_a_list(x))


@pytest.mark.parametrize("store", [
    lambda y: y.__setitem__(0, np.inf), lambda y: y.__setitem__(slice(0, 2), [np.nan, 1]),
    lambda y: y.__setitem__(0, 2 ** 33), lambda y: np.put(y, [0], [2 ** 33]),
    lambda y: np.r_[y, 2 ** 33], lambda y: np.insert(y, 1, np.inf),
    lambda y: np.pad(y, 1, constant_values=np.nan), lambda y: np.prod(y, initial=np.inf),
    lambda y: y.__setitem__(0, 1e20), lambda y: np.pad(y, 1, constant_values=np.array(1e20))],
    ids=["inf", "list_nan", "big_int", "put", "r_", "insert", "pad", "prod_initial",
         "big_float", "pad_array"])
def test_a_number_that_does_not_fit_an_integer_array_is_numpys_error(store):
    """Python numbers stored into an int32 array that do not fit it (inf, NaN, 2**33): NumPy
    raises; gradc cast them, storing INT_MIN or a wrapped value (fuzz41a). An array of them is
    cast as NumPy casts it."""
    def f(x):
        y = x.copy()
        out = store(y)
        return y if out is None else out

    x = np.array([1, -2, 3], np.int32)
    with pytest.raises((OverflowError, ValueError)):
        f(x)
    with pytest.raises(gradc.ArgumentError, match=r"test_item_assignment\.py:\d+: .*(cannot "
                                                   r"convert float|out of bounds for int)"):
        gradc.jit(f)(x)
    fits = gradc.jit(lambda x: np.r_[x.copy(), 7])(x)  # (what fits is stored as before)
    np.testing.assert_array_equal(fits, [1, -2, 3, 7])


def _row_of_the_max(x):
    y = x * 1.0
    i = np.argmax(x[:, 0])  # (a NumPy integer scalar: y[i] is a view, as y[2] is)
    r = y[i]
    r[1] = -1.0  # (NumPy's store through the view writes into y)
    y[i, 0] = 50.0  # (...and a store into y shows in the view)
    y[0] = 3.0
    column = y[:, i - 2]  # (scalar arithmetic keeps it a scalar)
    copied = y[np.asarray(i)]  # (a 0-d array indexes as an array: a copy)
    copied[0] = 99.0
    return r, y, column, copied


def test_a_traced_integer_scalar_index_makes_a_view_as_numpy():
    """fuzz42d: y[np.argmax(...)] was a gather (a copy): a store through it was lost, and a
    store into y did not show in it. NumPy indexes by a NumPy integer scalar as by an int."""
    x = np.arange(12.0).reshape(3, 4)
    for got, want in zip(gradc.jit(_row_of_the_max)(x), _row_of_the_max(x)):
        np.testing.assert_array_equal(got, want)
    loss = lambda x: np.sum(_row_of_the_max(x)[0] ** 2) + np.sum(_row_of_the_max(x)[1])
    g = gradc.grad(loss)(x)  # (r = [50, -1, 10, 11]: x[2, 2:] reach the loss squared)
    np.testing.assert_array_equal(g, [[0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 21, 23]])

    def into_argument(x):
        r = x[np.argmax(x[:, 0])]  # (a view of the caller's x: the write is refused)
        r += 1
        return x.sum()
    with pytest.raises(gradc.UnsupportedOpError, match="argument"):
        gradc.jit(into_argument)(x)


def _through_other_spellings_of_the_same_array(M):
    a = M * 1.0
    same = np.astype(a, np.float64, copy=False)  # (NumPy 2: a itself)
    same[0, 0] = -1.0
    new = np.astype(a, np.float64)  # (a copy)
    new[0, 1] = -2.0
    return a, new


def test_np_astype_without_a_copy_is_the_array_itself_and_einsums_sublist_view_a_view():
    """fuzz42d: np.astype(a, a.dtype, copy=False) was a new array (a store through it lost);
    np.einsum(a, [0, 1], [1, 0]) is a view as 'ij->ji' is (a store through it was lost)."""
    M = np.arange(12.0).reshape(3, 4)
    for got, want in zip(gradc.jit(_through_other_spellings_of_the_same_array)(M),
                         _through_other_spellings_of_the_same_array(M)):
        np.testing.assert_array_equal(got, want)

    def transposed(M):
        a = M * 1.0
        t = np.einsum(a, [0, 1], [1, 0])
        t[0, 1] = 5.0
        return a
    with pytest.raises(gradc.GradcError, match="in-place|store"):  # (as for 'ij->ji')
        gradc.jit(transposed)(M)


def test_a_numpy_buffers_view_by_a_traced_integer_scalar_takes_stores_or_is_refused():
    """fuzz42d: `buf[np.argmax(x)][1] = v` into an array the function made with NumPy dropped
    the store; `row = buf[i]; row += v` too (now refused: the view is not followed)."""
    def chained(x):
        buf = np.zeros((3, 2))
        buf[np.argmax(x[:, 0])][1] = x[0, 0] + 1.0
        return buf

    def through_a_name(x):
        buf = np.zeros((3, 2))
        row = buf[np.argmax(x[:, 0])]
        row += x[0] + 1.0
        return buf

    x = np.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(gradc.jit(chained)(x), chained(x))
    with pytest.raises(gradc.UnsupportedOpError, match="store by its name"):
        gradc.jit(through_a_name)(x)


def test_a_store_whose_static_rows_tell_the_writes_apart_takes_any_number_of_them():
    """DLFS's Pooling.backward: `dmax[np.arange(n), arg_max.flatten()] = dout.flatten()`. The
    static rows name another position at each write, so no two writes meet: it was refused past
    4096 traced indices (finding repeats compares every pair), at the book's own sizes."""
    n, k = 4200, 4
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, k))

    def pool_backward(x, dout):
        arg_max = np.argmax(x, axis=1)
        dmax = np.zeros((arg_max.size, k))
        dmax[np.arange(arg_max.size), arg_max.flatten()] = dout.flatten()
        return dmax

    dout = rng.standard_normal(n)
    np.testing.assert_array_equal(gradc.jit(pool_backward)(x, dout), pool_backward(x, dout))

    def repeated_rows(x, dout):  # (rows that repeat: writes may meet, refused by name)
        dmax = np.zeros((n, k))
        dmax[np.arange(n) // 2, np.argmax(x, axis=1)] = dout
        return dmax

    with pytest.raises(gradc.UnsupportedOpError, match="4200 traced indices"):
        gradc.jit(repeated_rows)(x, dout)


def test_a_loop_of_augmented_stores_traces_in_time_linear_in_its_stores():
    """`dx[:, t, :] += dh[:, t, :]` over t (a hand-written RNN backward), `dC[ix] += demb[k, j]`
    (makemore's backprop ninja): each store updated every earlier statement's own view x[i] by
    a new gather, so the trace grew as the square of the stores (17 s for the lecture's 96).
    A view a name holds (`r` below) still follows every store, as NumPy's does."""
    from gradc.trace import trace

    def backward(dh):
        n, steps, h = dh.shape
        dx = np.zeros((n, steps, h))
        for t in reversed(range(steps)):
            dx[:, t, :] += dh[:, t, :] * 2.0
        r = dx[:, 0, :]
        for t in range(steps):
            dx[:, t, :] += 1.0
        return dx, r

    sizes = [len(trace(backward, (np.ones((2, steps, 3)),))[0].nodes) for steps in (20, 40)]
    assert sizes[1] < 2.2 * sizes[0]
    dh = np.arange(2 * 5 * 3.0).reshape(2, 5, 3)
    got, want = gradc.jit(backward)(dh), backward(dh)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])  # (r saw the second loop's stores)
