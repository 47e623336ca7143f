"""Augmented assignment (x += y, x *= y, ...) in traced code. NumPy writes the result into x's
memory; gradc's arrays are immutable, so the name is bound to a new array. That is NumPy's
answer whenever x's memory is reached through x alone (a value the function computed, a copy,
a number), and those must match NumPy with their gradients; where NumPy would also change
another array (x is an argument: the caller's array; x is a view: the array it views) gradc
refuses by name and line rather than answer differently."""
import dataclasses
import re
import types
import warnings

import numpy as np
import pytest

import gradc
from _finite_differences import central_difference

X = np.arange(1.0, 7.0).reshape(2, 3) / 7.0
B = np.array([0.5, -1.0, 2.0])


def _fresh_all_operators(x, b):
    h = x @ np.ones((3, 3)) + 1.0
    h += b
    h -= 0.25 * b
    h *= x
    h /= 1.5 + x * x
    h **= 2
    g = h.copy()
    g //= 0.3
    g %= 0.7
    return h + g


def _accumulate_rows(x, b):
    total = x[0].copy()
    for i in range(1, x.shape[0]):
        total += x[i] * b
    return total


def _accumulate_scalars(x, b):
    s = 0.0
    for i in range(x.shape[0]):
        s += np.sum(x[i] * b)  # (a Python float, then a traced 0-d value)
    v = x[0, 1]  # (every axis an integer: a NumPy scalar, a copy)
    v *= 3.0
    return s + v + x[0, 1]


def _copies(x, b):
    a, c, d = x.copy(), np.copy(x), x.flatten()
    a += b
    c *= 2.0
    d -= 1.0
    k = np.sum(x, axis=0, keepdims=True)  # (a reduction: a new array, not a view)
    k += 1.0
    return np.sum(a) + np.sum(c * x) + np.sum(d) + np.sum(k)


def _matmul_and_logic(x, b):
    m = x.T @ x
    m @= np.eye(3) * 2.0
    mask = x > 0.3
    mask &= x < 0.8
    mask |= x > 0.85
    return np.sum(m) + np.sum(np.where(mask, x, 0.0))


@pytest.mark.parametrize("f", [_fresh_all_operators, _accumulate_rows, _accumulate_scalars,
                               _copies, _matmul_and_logic])
def test_augmented_assignment_to_values_reached_by_one_name_is_numpys(f):
    ref = f(X.copy(), B.copy())
    np.testing.assert_allclose(gradc.jit(f)(X, B), ref, rtol=1e-12, atol=1e-12)
    loss = lambda x, b: np.sum(f(x, b) ** 2)  # noqa: E731
    g = gradc.grad(loss, argnums=(0, 1))(X, B)
    eps = 1e-6
    for arg, (grad, base) in enumerate(zip(g, (X, B))):
        fd = np.zeros_like(base)
        for i in np.ndindex(base.shape):
            hi, lo = [X.copy(), B.copy()], [X.copy(), B.copy()]
            hi[arg][i] += eps
            lo[arg][i] -= eps
            fd[i] = (loss(*hi) - loss(*lo)) / (2 * eps)
        if f is _copies or f is _fresh_all_operators:  # (// and % are flat almost everywhere)
            np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-4)
        else:
            np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-7)


def test_numbers_given_as_arguments_may_be_rebound():
    def f(x, lr, k):
        lr *= 2.0
        k += 1.0
        return np.sum(x * lr) + k

    for lr in (0.5, np.float64(0.5)):
        assert gradc.jit(f)(X, lr, np.float32(1.0)) == pytest.approx(f(X, lr, np.float32(1.0)))
    assert gradc.grad(f, argnums=1)(X, 0.5, 1.0) == pytest.approx(2.0 * X.sum())


def _names_line(e, marker):
    with open(__file__, encoding="utf-8") as fh:
        line = next(i for i, text in enumerate(fh, 1) if text.rstrip().endswith(f"# {marker}"))
    assert re.search(rf"test_in_place\.py:{line}(?!\d)", str(e)), str(e)


def _arg(x, b):
    out = x  # (another name for the caller's array)
    out += b  # ARG
    return np.sum(out * x)


def _slice(x, b):
    head = x[:, :2]
    head += 10.0  # SLICE
    return np.sum(x)


def _row(x, b):
    r = x[0] * 1.0 + x[1]
    v = r[1:].T  # (a transpose: views by basic indexing follow their array's updates)
    v *= 2.0  # ROW
    return np.sum(r)


def _transposed(x, b):
    h = x * 2.0
    y = h.T
    y -= 1.0  # TRANSPOSED
    return np.sum(h)


def _reshaped(x, b):
    h = x + 1.0
    flat = np.reshape(h, -1)
    flat /= 2.0  # RESHAPED
    return np.sum(h)


def _squeezed(x, b):
    h = x[None] * b
    s = h.squeeze(0)
    s **= 2  # SQUEEZED
    return np.sum(h)


@pytest.mark.parametrize("f, marker", [(_arg, "ARG"), (_slice, "SLICE"), (_row, "ROW"),
                                       (_transposed, "TRANSPOSED"), (_reshaped, "RESHAPED"),
                                       (_squeezed, "SQUEEZED")])
def test_augmented_assignment_that_numpy_would_see_elsewhere_is_refused(f, marker):
    with pytest.raises(gradc.UnsupportedOpError) as excinfo:
        gradc.jit(f)(X, B)
    _names_line(excinfo.value, marker)
    assert "gradc.at(x)" in str(excinfo.value)
    step = gradc.train_step(lambda p, x: f(x, p["b"]), gradc.optim.SGD(0.1))
    with pytest.raises(gradc.UnsupportedOpError):
        step({"b": B.copy()}, X)


def _flipped(x, b):
    h = x * 2.0
    f = np.flip(h, axis=1)
    f += 1.0  # FLIPPED
    return np.sum(h)


def _whole_slice(x, b):
    h = x * 2.0
    w = h.T  # (the whole array: a view of its own in NumPy)
    w += 1.0  # WHOLE
    return np.sum(h)


def _split_part(x, b):
    h = x * 2.0
    first, _ = np.split(h, 2)
    first *= 3.0  # SPLIT
    return np.sum(h)


def _read_only_diagonal(x, b):
    d = np.diag(x @ x.T)  # (NumPy's is a read-only view)
    d += 1.0  # DIAG
    return np.sum(d)


@pytest.mark.parametrize("f, marker", [(_flipped, "FLIPPED"), (_whole_slice, "WHOLE"),
                                       (_split_part, "SPLIT"), (_read_only_diagonal, "DIAG")])
def test_augmented_assignment_on_every_kind_of_view_is_refused(f, marker):
    # (np.flip, np.split, h[:] and a read-only np.diag were updated alone: np.sum(h) came back
    # without the update NumPy makes through the view)
    with pytest.raises(gradc.UnsupportedOpError) as excinfo:
        gradc.jit(f)(X, B)
    _names_line(excinfo.value, marker)


def _view_read_after(x, b):
    h = x * 2.0
    head = h.T[:1]
    h += 1.0
    return np.sum(head * b[:1])  # VIEW-READ


def _view_returned(x, b):
    h = x * 2.0
    t = h.T
    h *= b  # VIEW-RETURNED
    return t




def test_a_view_taken_before_and_unused_after_an_update_is_fine():
    def f(x, b):
        h = x * 2.0
        s = np.sum(h[:1])  # (read before the update)
        h += b
        return s + np.sum(h) + np.sum(h[:1])  # (a view of the new h)

    assert gradc.jit(f)(X, B) == pytest.approx(f(X, B))


def test_augmented_assignment_keeps_the_target_dtype_as_numpy_does():
    def mixed(x32, x64, i32, i64):
        h = x32 * 2.0
        h += x64  # (float32: NumPy computes in float64 and writes into float32)
        k = i32 * 1
        k += i64  # (int32: wraps)
        m = x32 @ np.ones((3, 3), np.float32)
        m @= np.eye(3)  # (float64 eye: float32 result)
        return h, k, m

    args = (X.astype(np.float32), X + 1e-9, np.array([2 ** 31 - 1, 5], np.int32),
            np.array([1, 1], np.int64))
    for got, want in zip(gradc.jit(mixed)(*args), mixed(*args)):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    value, grad = gradc.value_and_grad(lambda w, b: np.sum(mixed(w, b, args[2], args[3])[0]))(
        args[0], args[1])
    assert np.asarray(value).dtype == np.float32 and grad.dtype == np.float32


def _to_float(x, b):
    k = np.argsort(x, axis=1)  # (int64, traced)
    k *= 0.5  # TO-FLOAT
    return np.sum(k * x)


def _grow(x, b):
    h = b * 2.0
    h += x  # GROW
    return np.sum(h)


def _matmul_shape(x, b):
    h = x * 1.0
    h @= np.ones((3, 4))  # MATMUL-SHAPE
    return np.sum(h)


@pytest.mark.parametrize("f, marker", [(_to_float, "TO-FLOAT"), (_grow, "GROW"),
                                       (_matmul_shape, "MATMUL-SHAPE")])
def test_augmented_assignment_numpy_refuses_is_refused(f, marker):
    with pytest.raises(Exception) as numpy_error:
        f(X, B)
    assert isinstance(numpy_error.value, (TypeError, ValueError))
    with pytest.raises(gradc.ArgumentError) as excinfo:
        gradc.jit(f)(X, B)
    _names_line(excinfo.value, marker)


def test_changing_the_dicts_and_lists_given_is_refused_or_written_into_them():
    # NumPy code changes the caller's containers; the trace ran on copies, once, and the
    # compiled function kept p["b"] = zeros as a constant
    def stores(p, x):
        p["b"] = np.zeros(2)
        return np.sum(x @ p["W"] + p["b"])

    def pops(p, x):
        p["hist"].pop()
        return np.sum(x @ p["W"])

    def counts(p, x):
        p["step"] += 1
        return np.sum(x @ p["W"])

    def keeps_state(p, x):  # (a traced value: written into the caller's dict after each call,
        h = np.tanh(x @ p["W"] + p["b"])  # as cs231n's batchnorm_forward writes bn_param's
        p["b"] = h[0]  # running mean; it went into the trace's copy, silently, once)
        return np.sum(h ** 2)

    x = np.ones((3, 2))
    for transform in (gradc.jit, gradc.grad, gradc.value_and_grad):  # (cs231n's bn_param)
        p = {"W": np.ones((2, 2)), "b": np.ones(2)}
        want = np.tanh(x @ p["W"] + p["b"])[0]
        transform(keeps_state)(p, x) if transform is gradc.jit else transform(
            keeps_state, argnums=1)(p, x)
        np.testing.assert_allclose(p["b"], want, rtol=1e-14)
    for f in (stores, pops, counts):
        for transform in (gradc.jit, gradc.grad, gradc.value_and_grad):
            p = {"W": np.ones((2, 2)), "b": np.ones(2), "hist": [np.ones(1)], "step": 0}
            with pytest.raises(gradc.UnsupportedOpError) as excinfo:
                transform(f)(p, x) if transform is gradc.jit else transform(f, argnums=1)(p, x)
            assert "changed the dicts or lists it was given" in str(excinfo.value)
            assert p["b"][0] == 1.0 and len(p["hist"]) == 1 and p["step"] == 0


def test_traced_index_updates_keep_negative_zeros():
    x = np.array([1.0, 2.0, -0.0, 4.0])
    i = np.array([1])
    set_ = gradc.jit(lambda x, i, v: gradc.at(x)[i].set(v))(x, i, np.array([-0.0]))
    add = gradc.jit(lambda x, i, v: gradc.at(x)[i].add(v))(x, i, np.array([1.0]))
    assert np.signbit(set_[1]) and np.signbit(set_[2]) and np.signbit(add[2])
    np.testing.assert_array_equal(add, [1.0, 3.0, -0.0, 4.0])


def test_equal_expressions_are_separate_arrays_for_in_place_updates():
    # while tracing, equal expressions were one value: updating one array retired the views
    # of its twin (a = x.copy(); c = x.copy(); v = c[:1]; a += 1 refused v)
    def twins(x, b):
        a, c = x.copy(), x.copy()
        v = c[:1]
        a += 1.0
        m1, m2 = np.zeros_like(x), np.zeros_like(x)
        w = m2[:, :2]
        m1 += x
        mean, running = x.mean(axis=0), x.mean(axis=0)
        mb = mean.reshape(1, -1)
        running *= 0.1
        return np.sum(a) + np.sum(v) + np.sum(m1[:, :2] + w) + np.sum((x - mb) ** 2) + np.sum(
            running)

    assert gradc.jit(twins)(X, B) == pytest.approx(twins(X, B))
    np.testing.assert_allclose(gradc.grad(twins)(X, B), _numerical(twins, X, B), atol=1e-6)


def _numerical(f, x, b, eps=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[i] = eps
        g[i] = (f(x + d, b) - f(x - d, b)) / (2 * eps)
    return g


def test_copies_numpy_makes_are_copies():
    # astype (same dtype), np.array and +x are new arrays in NumPy: updating one in place is
    # no update of a view, and updating the original leaves their views readable
    def copies(x, b):
        h = x * 2.0
        c = h[:, :2].astype(np.float64)
        c *= 3.0
        d = np.array(h)
        e = +h
        v, w = d[:1], e[:1]
        h += 1.0
        return np.sum(c) + np.sum(v) + np.sum(w) + np.sum(h)

    assert gradc.jit(copies)(X, B) == pytest.approx(copies(X, B))


def test_numbers_updated_in_place_are_bound_anew_as_numpy_scalars_are():
    # a NumPy scalar is immutable: s += x.sum() makes a new number, float64 from float32 + f64,
    # and m -= x an array (both refused by a cast and shape check meant for arrays)
    def numbers(x, b):
        s = x.astype(np.float32).sum()
        s += x.sum()
        m = x.max()
        m -= x
        c = (x > 0.3).sum()
        c /= x.size
        return s, m, c

    for got, want in zip(gradc.jit(numbers)(X, B), numbers(X, B)):
        assert np.asarray(got).dtype == np.asarray(want).dtype
        np.testing.assert_allclose(got, want, rtol=1e-6)


def _xor_view(x, b):
    k = np.argsort(x, axis=1)
    row = k.T
    row ^= 5  # XOR-VIEW
    return k


def test_xor_assignment_is_an_in_place_operator_too():
    with pytest.raises(gradc.UnsupportedOpError) as excinfo:
        gradc.jit(_xor_view)(X, B)
    _names_line(excinfo.value, "XOR-VIEW")

    def wraps(x, b):
        k = np.argsort(x, axis=1).astype(np.int32)
        k ^= np.int64(7)
        return k

    got, want = gradc.jit(wraps)(X, B), wraps(X, B)
    assert got.dtype == want.dtype == np.int32
    np.testing.assert_array_equal(got, want)


def test_broadcast_arrays_views_belong_to_their_own_arrays():
    def f(x, b):
        h, g = x * 1.0, b * 2.0
        first, second = np.broadcast_arrays(h, g)
        h += 1.0  # (second views g: still readable)
        return np.sum(second)

    assert gradc.jit(f)(X, B) == pytest.approx(f(X, B))


def _kept_in_a_list(x, b):
    hs, h = [], x * 1.0
    for _ in range(2):
        h = np.tanh(h + b)
        hs.append(h)
        h *= 0.9  # (NumPy: hs[-1] is h, updated too)
    return np.sum(np.stack(hs))


def _helper_updates_its_parameter(x, b):
    def shift(h):
        h += b
        return h

    h = x * 2.0
    shifted = shift(h)
    return np.sum(shifted) + np.sum(h)




def _views_follow(x, b):
    """Views by basic indexing share their array's memory: an update of the array, or of one
    view, shows in every other, taken before or after, as NumPy's (each was refused)."""
    h = x * 2.0
    r = x[0] * 1.0 + x[1]
    v = r[1:]
    v *= 2.0  # (r too)
    w = h[:]
    head = h[:1]
    w += 1.0  # (h and head too)
    k = np.argsort(x, axis=1)
    row = k[0]
    row ^= 5  # (k too)
    s = np.array(x.sum())
    t = s[None]
    s += 1.0  # (t too: a 0-d array is written in place)
    h[1] += b  # (w and head: h[1] += b is a store into h)
    return np.sum(r) + np.sum(h) + np.sum(head * b) + np.sum(k * x) + np.sum(t) + np.sum(w)


def test_views_by_basic_indexing_follow_their_arrays_updates():
    assert gradc.jit(_views_follow)(X, B) == pytest.approx(_views_follow(X, B), rel=1e-12)
    np.testing.assert_allclose(gradc.grad(_views_follow)(X, B), _numerical(_views_follow, X, B),
                               atol=1e-6)


def test_numpy_functions_that_make_new_arrays_are_not_their_argument():
    # np.conj of a real array, np.round of integers, a sum over no axis: new arrays in NumPy,
    # which an update of the argument in place does not reach
    def f(x, b):
        h, k = x * 2.0, np.argsort(x, axis=1)
        c, r, s = np.conj(h), np.round(k), np.sum(h, axis=())
        h += 1.0
        k += 1
        return np.sum(c) + np.sum(r) + np.sum(s) + np.sum(h) + np.sum(k)

    assert gradc.jit(f)(X, B) == pytest.approx(f(X, B))


def test_an_array_updated_in_place_is_seen_by_every_holder():
    """`hs.append(h); h *= 0.9`, a helper's `h += b` on its parameter, `d["k"] *= 3`, `L[0] +=
    1` with L = [a, a]: the array object takes the update, as NumPy's memory does (the first
    two were refused when read; the dict and list ones left `a` stale: fuzz40e)."""
    def holders(x, b):
        a = x * 2.0
        d, pair = {"k": a}, [a, a]
        d["k"] *= 3.0
        pair[0] += b
        return a, pair[1], _kept_in_a_list(x, b), _helper_updates_its_parameter(x, b)

    for got, want in zip(gradc.jit(holders)(X, B), holders(X, B)):
        np.testing.assert_allclose(got, want, rtol=1e-14)
    loss = lambda x, b: sum(np.sum(v ** 2) for v in holders(x, b))  # noqa: E731
    np.testing.assert_allclose(gradc.grad(loss)(X, B), _numerical(loss, X, B), rtol=1e-6)


@pytest.mark.parametrize("f, marker", [(_view_read_after, "VIEW-READ"),
                                       (_view_returned, "VIEW-RETURNED")])
def test_an_array_or_view_read_after_an_update_in_place_is_refused(f, marker):
    # NumPy's view, list element or helper's parameter is the updated array; gradc's would
    # have held the old values (56 for 84)
    with pytest.raises(gradc.UnsupportedOpError) as excinfo:
        gradc.jit(f)(X, B)
    _names_line(excinfo.value, marker)
    assert "changed afterwards" in str(excinfo.value)


def test_an_update_through_a_view_of_a_computed_array_is_numpys_while_the_array_is_unread():
    # `out = (x @ W).reshape(2, -1); out += b` is ordinary NumPy (no other name reaches the
    # product): it ran, where it was refused as "a view of another array"; the array a view
    # was taken of is retired, so reading it after is refused (NumPy's changed)
    w = np.arange(9.0).reshape(3, 3) / 9.0

    def through_views(x, b):
        out = (x @ w).reshape(3, -1)
        out += 1.0
        h = (x @ w).T
        h *= b[:, None]
        return np.sum(out) + np.sum(h)

    assert gradc.jit(through_views)(X, B) == pytest.approx(through_views(X, B))
    np.testing.assert_allclose(gradc.grad(through_views)(X, B), _numerical(through_views, X, B),
                               atol=1e-6)

    def reads_the_array(x, b):
        h = x * 2.0
        t = h.T
        t += 1.0
        return np.sum(h)  # BASE-READ

    with pytest.raises(gradc.UnsupportedOpError) as excinfo:
        gradc.jit(reads_the_array)(X, B)
    _names_line(excinfo.value, "BASE-READ")

    def read_only(x, b):
        v = np.broadcast_to(x[0] * 1.0, (4, 3))
        v += 1.0  # READ-ONLY
        return v

    with pytest.raises(gradc.UnsupportedOpError, match="read-only") as excinfo:
        gradc.jit(read_only)(X, B)
    _names_line(excinfo.value, "READ-ONLY")


def test_views_numpy_makes_that_gradc_took_for_copies():
    """A one-operand einsum that only permutes or takes a diagonal, np.array(h, ndmin=k,
    copy=False), and np.atleast_*d of several arrays (each result a view of its own argument)
    are NumPy views: writing into them changes the array they view. gradc treated them as new
    arrays (or all as views of the first argument): the base read afterwards kept its old
    values, silently. Now such a read is refused as other in-place writes through views are."""
    x = np.arange(6.0).reshape(2, 3)
    for view in (lambda a: np.einsum("ij->ji", a), lambda a: np.einsum("ij", a),
                 lambda a: np.einsum("...->...", a),
                 lambda a: np.array(a, ndmin=3, copy=False),
                 lambda a: np.atleast_3d(a, a[0])[1]):
        def f(x, view=view):
            a = x * 1.0
            b = view(a)
            b += 100.0
            return a
        with pytest.raises(gradc.UnsupportedOpError, match="changed afterwards"):
            gradc.jit(f)(x)
    # a summing einsum and np.array's copy are new arrays, as NumPy's
    for new in (lambda a: np.einsum("ij->i", a), lambda a: np.array(a, ndmin=3)):
        def g(x, new=new):
            a = x * 1.0
            b = new(a)
            b += 100.0
            return a, b
        for got, want in zip(gradc.jit(g)(x), g(x)):
            np.testing.assert_array_equal(got, want)


def test_numpys_in_place_writers_say_what_to_use():
    """np.place and np.putmask write in place; they got the generic 'not supported' with the
    list of every supported name (3,000 characters)."""
    x = np.arange(4.0)
    for f, text in ((lambda h: np.place(h, h > 2, 0.0), "np.where"),
                    (lambda h: np.putmask(h, h > 2, 0.0), "np.where")):
        with pytest.raises(gradc.UnsupportedOpError, match=text) as info:
            gradc.jit(lambda x: f(x * 1.0))(x)
        assert len(str(info.value)) < 400


def test_in_place_methods_write_into_the_traced_array():
    """.sort(), .fill(v) and .put(ind, v) on an array the function computed: the array object
    takes the new values, as a store does (each was refused)."""
    def methods(x):
        h = x * 2.0
        h.sort(axis=0)
        g = x + 1.0
        g.fill(x[0, 0])
        k = x * 1.0
        k.put([0, 3], [5.0, x[1, 1]])
        return np.sum(h * x) + np.sum(g ** 2) + np.sum(k ** 3)

    m = np.array([[3.0, 1.0], [2.0, 5.0]])
    assert gradc.jit(methods)(m) == pytest.approx(methods(m.copy()), rel=1e-14)
    np.testing.assert_allclose(gradc.grad(methods)(m), _numerical(lambda a, b: methods(a), m, B),
                               rtol=1e-6)


def test_a_stale_view_returned_names_the_function_that_returns_it():
    """A view of an array changed in place afterwards, read by the return: the message said
    'this line reads', naming the caller's line; it names the function that returns it."""
    def f(x):
        a = x * 1
        b = a.T
        a += 1
        return b

    with pytest.raises(gradc.UnsupportedOpError,
                       match=r"f \(defined at test_in_place\.py:\d+\) returns a view"):
        gradc.jit(f)(np.ones((2, 2)))


def test_joining_one_array_and_reshape_copy_true_are_new_arrays():
    """np.concatenate([x]) (np.vstack, np.hstack, np.block of one array) and
    x.reshape(..., copy=True) are new arrays in NumPy: an update of one leaves x alone. gradc
    returned x itself (concatenate) or a view (reshape): the update was refused as one of the
    caller's array, or a later read of x as stale."""
    x = np.arange(6.0).reshape(2, 3)
    for new in (lambda a: np.concatenate([a]), lambda a: np.concatenate((a,), axis=1),
                lambda a: np.vstack([a]), lambda a: np.hstack([a]), lambda a: np.block([a]),
                lambda a: a.reshape(-1, copy=True), lambda a: np.reshape(a, (3, 2), copy=True)):
        def on_argument(x, new=new):
            b = new(x)
            b += 100.0
            return b, x * 2

        def on_computed(x, new=new):
            a = x * 1.0
            b = new(a)
            b *= 3.0
            return a, b

        for f in (on_argument, on_computed):
            for got, want in zip(gradc.jit(f)(x), f(x.copy())):
                np.testing.assert_array_equal(got, want)


def test_a_reshape_of_a_strided_view_says_numpy_may_copy_it():
    """NumPy copies a reshape (ravel, np.ascontiguousarray) of a transposed or strided view where
    the array viewed is laid out so, and views it otherwise; gradc does not know an argument's
    layout and takes it as a view, so an update through it stays refused (never lost). The
    refusal said 'NumPy would write into the caller's array' or 'would read the changed
    values', which is false for a C-ordered array: it now says what happened and to write
    .copy(). A reshape NumPy always views keeps the plain message."""
    x = np.arange(12.0).reshape(3, 4)
    hinted = (lambda a: a.T.reshape(-1), lambda a: a.T.ravel(), lambda a: a[:, ::2].reshape(-1),
              lambda a: a[:, 1:].ravel(), lambda a: a.reshape(-1, order="F"),
              lambda a: np.ascontiguousarray(a.T), lambda a: np.asfortranarray(a),
              lambda a: np.array(a.T, order="C", copy=None))
    plain = (lambda a: a.reshape(-1), lambda a: a[1].reshape(2, 2), lambda a: a[1:].ravel(),
             lambda a: np.ascontiguousarray(a[1:]))
    for view in hinted + plain:
        def on_argument(x, view=view):
            b = view(x)
            b += 1.0
            return b

        def read_after(x, view=view):
            a = x * 2.0
            b = view(a)
            b += 1.0
            return a + 1.0

        for f in (on_argument, read_after):
            with pytest.raises(gradc.UnsupportedOpError) as info:
                gradc.jit(f)(x)
            assert ("NumPy copies or views" in str(info.value)) == (view in hinted), view
            assert (".copy() after the reshape" in str(info.value)) == (view in hinted)
    # ...and .copy() after it gives NumPy's answer
    def copied(x):
        b = x.T.reshape(-1).copy()
        b += 1.0
        return b, x
    for got, want in zip(gradc.jit(copied)(x), copied(x.copy())):
        np.testing.assert_array_equal(got, want)


def test_ascontiguousarray_of_a_number_is_one_dimensional():
    """np.ascontiguousarray and np.asfortranarray return at least one dimension, as NumPy's."""
    for name in ("ascontiguousarray", "asfortranarray"):  # (looked up while traced)
        got = gradc.jit(lambda s, name=name: getattr(np, name)(s * 2.0))(np.float64(1.5))
        assert got.shape == getattr(np, name)(np.float64(3.0)).shape == (1,)
        assert got[0] == 3.0


def test_a_0d_array_is_written_in_place_as_numpy_writes_it():
    """A 0-d array (np.array(s), a 0-d argument's .copy(), np.where's result, a view `a[...]`)
    is mutable in NumPy, unlike a NumPy scalar (what ufuncs, operators and reductions return):
    `a += 1` writes into it, so a view or another name of it sees the change, the result keeps
    its dtype, and one that would broadcast bigger is NumPy's ValueError. gradc took every 0-d
    value for a scalar: the view kept its old value, silently, and float32 became float64."""
    s0 = np.array(0.5)

    def view_of_copy(x):
        a = x.copy()
        b = a.reshape(1)
        a += 1.0
        return b

    def alias(x):
        a = np.array(x.sum())
        b = a
        a *= 2.0
        return b

    def where_result(x):
        a = np.where(x > 0, x, 0.0)
        hist = [a]
        a += 1.0
        return np.stack(hist)

    with pytest.raises(gradc.UnsupportedOpError, match="changed afterwards"):
        gradc.jit(view_of_copy)(s0)  # (a reshape: not followed)
    for f in (alias, where_result):  # (another name, a list: the array object took it)
        np.testing.assert_array_equal(gradc.jit(f)(s0), f(s0))

    def keeps_dtype(s32, s64):
        t = s32.copy()
        t += s64
        return t

    got = gradc.jit(keeps_dtype)(np.array(1.1, np.float32), np.array(1e-3))
    want = keeps_dtype(np.array(1.1, np.float32), np.array(1e-3))
    assert np.asarray(got).dtype == want.dtype == np.float32 and got == want

    def grows(s, v):
        t = np.array(s)
        t += v
        return t

    with pytest.raises(ValueError):
        grows(np.float64(1.0), np.arange(3.0))
    with pytest.raises(gradc.ArgumentError, match="non-broadcastable"):
        gradc.jit(grows)(np.float64(1.0), np.arange(3.0))

    def scalars(x):  # NumPy scalars are bound anew: the old names keep their values
        s = x.sum()
        t = s
        kept = [s]
        s += 1.0
        m = np.max(x) * 1.0
        m += np.float32(2.0) * x[0]  # (a scalar's result may change dtype, shape stays)
        f = np.flip(np.array(x[0]))  # (NumPy's flip of a 0-d array: a scalar)
        f *= 3.0
        return s, t, np.stack(kept), m, f

    x = np.array([1.0, 2.0, 4.0])
    for got, want in zip(gradc.jit(scalars)(x), scalars(x)):
        np.testing.assert_array_equal(got, want)
        assert np.asarray(got).dtype == np.asarray(want).dtype

    def empty_view(x):  # writing an empty slice changes nothing
        y = x * 1.0
        e = y[2:1]
        e += 1.0
        return y

    np.testing.assert_array_equal(gradc.jit(empty_view)(x), x)


def test_a_ufunc_writes_into_a_traced_out_where_its_mask_holds():
    """`np.divide(a, b, out=np.zeros_like(a), where=b != 0)` (the safe division idiom) and
    `np.log(x, out=np.full_like(x, -np.inf), where=x > 0)`: NumPy's values, dtypes (out's, by
    the same_kind cast) and shapes (the result broadcast into out); the gradient is zero where
    the mask is False, where NumPy computes nothing (1 / b at b = 0 would make it NaN)."""
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    b[0, 1] = b[2, 3] = 0.0

    def safe_div(a, b):
        return np.divide(a, b, out=np.zeros_like(a), where=b != 0)

    def cases(a, b):
        return (safe_div(a, b), np.log(b, out=np.full_like(b, -np.inf), where=b > 0),
                np.multiply(a, 2.0, out=np.zeros_like(a, dtype=np.float32)),
                np.add(a[0], 1.0, out=np.zeros_like(a), where=[True, False, True, False]),
                np.exp(a, out=(np.ones_like(a),)))

    for got, want in zip(gradc.jit(cases)(a, b), cases(a, b)):
        np.testing.assert_allclose(got, want, rtol=1e-15)  # (exp, log: last bits)
        assert got.dtype == want.dtype and got.shape == want.shape
    ga, gb = gradc.grad(lambda a, b: np.sum(safe_div(a, b)), argnums=(0, 1))(a, b)
    on = b != 0
    np.testing.assert_allclose(ga, np.where(on, 1 / np.where(on, b, 1), 0), rtol=1e-14)
    np.testing.assert_allclose(gb, np.where(on, -a / np.where(on, b, 1) ** 2, 0), rtol=1e-14)


def test_a_ufunc_out_refusals_name_the_line_and_what_to_read():
    def into_argument(a):
        return np.add(a, 1.0, out=a)

    def where_alone(a):
        return np.add(a, 1.0, where=a > 0)

    def wrong_shape(a):
        return np.add(a, np.ones((2, 1, 3)), out=np.zeros_like(a))

    def made_with_numpy(a):  # (the safe-division idiom: its message names what works)
        return np.divide(a, a - 1.0, out=np.zeros(a.shape), where=a != 1.0)

    for f, error, words in [(into_argument, gradc.UnsupportedOpError, "argument of the traced"),
                            (where_alone, gradc.UnsupportedOpError, "uninitialized"),
                            (made_with_numpy, gradc.UnsupportedOpError,
                             r"made with NumPy.*out=np\.zeros_like\(a\)"),
                            (wrong_shape, gradc.ArgumentError, "non-broadcastable output")]:
        with pytest.raises(error, match=words) as e:
            gradc.jit(f)(X)
        assert "test_in_place.py" in str(e.value)


def test_diff_of_order_zero_is_its_argument_itself():
    """np.diff(a, n=0) returns a itself in NumPy: `y = np.diff(h, n=0); y += 1` changes h (the
    same array object: read after, it shows the update), and of an argument it would write
    into the caller's (refused)."""
    def later_read(x):
        h = x * 2.0
        y = np.diff(h, n=0)
        y += 1.0
        return h

    def of_argument(x):
        y = np.diff(x, n=0)
        y *= 2.0
        return y

    np.testing.assert_array_equal(gradc.jit(later_read)(X), later_read(X))  # (h is y)
    with pytest.raises(gradc.UnsupportedOpError):
        gradc.jit(of_argument)(X)
    np.testing.assert_array_equal(gradc.jit(lambda x: np.diff(x, n=0) * 1.0)(X), X)


def test_ufunc_out_reused_dtype_loops_and_numbers_only():
    """out= is the array written and returned, as NumPy's: read after under its name (it was
    refused), or used again as out= (NumPy's first result is the same array, so it shows the
    second write); out= the only traced array (numbers in); casting='unsafe' as NumPy casts;
    dtype= the loop's dtype, inputs cast to it."""
    def reused(a):
        o = np.zeros_like(a)
        r = np.add(a, 1.0, out=o)
        np.multiply(a, 2.0, out=o)
        s = np.zeros_like(a)
        np.sqrt(a, out=s, where=a > 0.3)
        return r, o, s

    for got, want in zip(gradc.jit(reused)(X), reused(X)):
        np.testing.assert_array_equal(got, want)

    def others(a):
        return (np.add(1.0, 2.0, out=np.zeros_like(a)),
                np.add(a, 1.5, out=np.zeros_like(a, dtype=np.int64), casting="unsafe"),
                np.multiply(a, a, dtype=np.float32),
                np.add(np.arange(3), 1, dtype=np.float64))

    for got, want in zip(gradc.jit(others)(X), others(X)):
        np.testing.assert_allclose(got, want, rtol=1e-6)
        assert got.dtype == want.dtype
    with pytest.raises(gradc.ArgumentError, match="same_kind"):
        gradc.jit(lambda a: np.add(a, 1, dtype=np.int64))(X)


def test_the_imaginary_part_of_a_real_array_is_read_only():
    """np.imag(x) and x.imag of a real array are read-only zeros in NumPy (`y += 1` is its
    ValueError); gradc wrote into them."""
    for f in (lambda x: np.imag(x), lambda x: x.imag):
        def update(x, f=f):
            y = f(x)
            y += 1.0
            return y

        with pytest.raises(ValueError):
            update(X.copy())
        with pytest.raises(gradc.UnsupportedOpError, match="read-only"):
            gradc.jit(update)(X)
        np.testing.assert_array_equal(gradc.jit(lambda x, f=f: f(x) + 1.0)(X), np.ones_like(X))


def test_arrays_made_from_a_numpy_scalar_are_new_arrays():
    """`s = x.sum(); v = np.atleast_1d(s); v += 1`: s is NumPy's immutable scalar, v a new array
    (the update was refused as one NumPy would show through s)."""
    def f(x):
        s = x.sum()
        v = np.atleast_1d(s)
        v += 1
        w = s.reshape(-1)
        w *= 2
        return s, v, w, s[None] + 1

    got, want = gradc.jit(f)(X), f(X)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def _scalars_made_anew(x):
    s = x.sum()  # (a NumPy scalar)
    outs = []
    for make in (lambda s: s.reshape(()), lambda s: s.squeeze(), lambda s: s.T,
                 lambda s: np.squeeze(s), lambda s: np.reshape(s, ()), lambda s: s.real,
                 lambda s: np.real(s), lambda s: s.conj()):
        u = make(s)
        t = u
        u += 1  # (a scalar: bound anew; t keeps its value)
        outs += [t, u]
    a = np.array(x.sum())  # (a 0-d array)
    b = a[()]  # (a scalar: a copy)
    v = a[...]  # (a 0-d view)
    v += 1
    return outs + [a, b]


def test_a_numpy_scalars_reshape_squeeze_and_real_are_scalars_and_a_0d_arrays_item_a_copy():
    """fuzz42d: gradc took these for 0-d arrays (views): `u += 1` changed t too."""
    x = np.array([0.5, -1.0, 2.0])
    for got, want in zip(gradc.jit(_scalars_made_anew)(x), _scalars_made_anew(x)):
        np.testing.assert_array_equal(got, want)

    def read_only(x):
        y = np.broadcast_to(x.sum(), ())
        y += 1  # (NumPy: "output array is read-only")
        return y
    with pytest.raises(gradc.UnsupportedOpError, match="read-only"):
        gradc.jit(read_only)(x)


def _scatter_backward(W, idx, dout):
    dW = np.zeros_like(W)  # (cs231n's word_embedding_backward)
    np.add.at(dW, idx, dout)
    rows = dW[1:]  # (a view: the update through it reaches dW)
    np.maximum.at(rows, [0, 0, 2], 0.25)
    return dW


def test_ufunc_at_updates_a_traced_array_in_place_as_numpy():
    """fuzz42f: np.add.at (hand-written backward passes, word2vec's sparse updates) was refused
    for every traced array; on one the function made it is NumPy's in-place update now."""
    W = np.arange(12.0).reshape(4, 3)
    idx = np.array([0, 2, 0, 3])
    dout = np.linspace(-1.0, 1.0, 12).reshape(4, 3)
    np.testing.assert_array_equal(gradc.jit(_scatter_backward)(W, idx, dout),
                                  _scatter_backward(W, idx, dout))
    loss = lambda W, dout: np.sum(_scatter_backward(W, idx, dout) ** 2)
    np.testing.assert_allclose(gradc.grad(loss, argnums=1)(W, dout),
                               central_difference(lambda d: loss(W, d), dout),
                               rtol=1e-6, atol=1e-8)
    with pytest.raises(gradc.UnsupportedOpError, match="argument"):
        gradc.jit(lambda W: np.add.at(W, [0], 1.0))(W)


def _word_embedding_backward(dout, x, V):
    dW = np.zeros((V, dout.shape[-1]))  # (a NumPy array: its names are bound to a traced copy)
    np.add.at(dW, x, dout)
    counts = np.zeros(V, dtype=np.int64)
    np.add.at(counts, x.reshape(-1), 1)  # (by traced positions, a number added)
    return dW, counts


def test_ufunc_at_into_a_numpy_array_the_function_made_is_numpys():
    """fuzz42f: cs231n's word_embedding_backward, np.add.at into np.zeros((V, D)), was refused
    (only np.zeros_like of a traced array was taken)."""
    dout = np.arange(12.0).reshape(2, 3, 2)
    x = np.array([[0, 1, 1], [3, 1, 0]])
    for got, want in zip(gradc.jit(_word_embedding_backward)(dout, x, 4),
                         _word_embedding_backward(dout, x, 4)):
        np.testing.assert_array_equal(got, want)
    loss = lambda d: np.sum(_word_embedding_backward(d, x, 4)[0] ** 2)
    np.testing.assert_allclose(gradc.grad(loss)(dout), central_difference(loss, dout),
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("case", ["sync after update", "heavy ball"])
def test_an_array_updated_in_place_then_bound_or_copied_outside_follows_numpy(case):
    """fuzz45b: a DQN's target network synced by reference after the in-place update
    (`self.W -= ...; self.tW = self.W`) got a copy, not W itself (tW stopped following W); a
    heavy-ball step (`v = W - prev; prev = W.copy(); W += 0.9 * v - lr * g`) kept the trace's
    copy: other weights from the second call on."""
    class Model:
        def __init__(self):
            self.W = np.arange(8.0).reshape(4, 2) * 0.1
            self.tW, self.prev = self.W.copy(), self.W.copy()

        def step(self, x, sync):
            q = x @ self.W
            if case == "sync after update":
                loss = np.mean((q - 0.9 * (x @ self.tW) - 1.0) ** 2)
                self.W -= 0.1 * (x.T @ (q - 1.0))
                if sync:
                    self.tW = self.W
                return loss
            v = self.W - self.prev
            self.prev = self.W.copy()
            self.W += 0.9 * v - 0.05 * (x.T @ q)
            return q.sum()

    model, reference = Model(), Model()
    step = gradc.jit(model.step)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gradc.RecompileWarning)
        for i in range(5):
            x = np.random.default_rng(i).standard_normal((3, 4))
            sync = case == "sync after update" and i == 1
            np.testing.assert_allclose(step(x, sync), reference.step(x, sync), rtol=1e-12)
            np.testing.assert_allclose(model.W, reference.W, rtol=1e-12)
            assert (model.tW is model.W) == (reference.tW is reference.W)
            np.testing.assert_allclose(model.prev, reference.prev, rtol=1e-12)


def test_an_in_place_update_beside_an_iteration_counter_is_compiled():
    """fuzz45b: nnfs's optimizer counts its steps (`self.iterations += 1`) beside `self.W -=
    lr * g`: the probe that looks for reads after the update traced again from the counter the
    first trace had left at 1, stored 2, and refused the update as read after it."""
    class Model:
        def __init__(self):
            self.W = np.arange(6.0).reshape(3, 2) * 0.1
            self.iterations = 0

        def step(self, x):
            out = x @ self.W
            self.W -= 0.1 * (x.T @ out)
            self.iterations += 1
            return out.sum()

    model, reference = Model(), Model()
    x = np.random.default_rng(0).standard_normal((4, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gradc.TraceEffectWarning)  # (the counter: README)
        assert gradc.jit(model.step)(x) == pytest.approx(reference.step(x), rel=1e-13)
    np.testing.assert_allclose(model.W, reference.W, rtol=1e-13)


def test_an_in_place_update_beside_a_snapshot_made_on_the_first_step_is_compiled():
    """fuzz46b: `if self.W0 is None: self.W0 = self.W.copy()` (the initial weights kept for an
    L2-SP penalty) beside `self.W -= lr * g`: the probe traced again from the copy the first
    trace had left, took the other way, and refused the update as read after it."""
    class Model:
        def __init__(self):
            self.W, self.W0 = np.ones((3, 2)), None

        def step(self, x, t):
            if self.W0 is None:
                self.W0 = self.W.copy()
            d = x @ self.W - t
            self.W -= 0.1 * (x.T @ d)
            return (d ** 2).sum() + np.sum((self.W0 - 1.0) ** 2)

    model, reference = Model(), Model()
    compiled = gradc.jit(model.step)
    x, t = np.full((4, 3), 0.5), np.ones((4, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gradc.RecompileWarning)
        for _ in range(4):
            assert compiled(x, t) == pytest.approx(reference.step(x, t), rel=1e-13)
            np.testing.assert_allclose(model.W, reference.W, rtol=1e-13)
            np.testing.assert_array_equal(model.W0, reference.W0)


@pytest.mark.parametrize("keep", ["prev", "cache", "record in a list", "first layer",
                                  "frozen slotted record"])
def test_places_holding_the_weights_beside_their_update_in_place_follow_numpy(keep):
    """fuzz46c: `self.prev = self.W` (or a cache dict, a record in a list) beside `self.W -=
    lr * g`: beside any update in place, outside arrays were never written back elsewhere, so
    once the caller rebound W, prev kept an old array."""
    @dataclasses.dataclass(slots=True, frozen=True)
    class Record:
        w: np.ndarray

    class Model:
        def __init__(self):
            self.W = np.ones((3, 2))
            self.layers = [types.SimpleNamespace(W=np.ones((3, 2)))]

        def step(self, x):
            g = x.T @ (x @ self.W)
            if keep == "prev":
                self.prev = self.W
            elif keep == "cache":
                self.cache = {"w": self.W}
            elif keep == "first layer":  # (fuzz46d: refused as storing traced values)
                self.first = self.layers[0]
                self.layers[0].W -= 0.1 * g
            elif keep == "frozen slotted record":  # (fuzz46d: a FrozenInstanceError)
                self.rec = Record(w=self.W)
            else:
                self.log = [types.SimpleNamespace(w=self.W)]
            self.W -= 0.1 * g
            return g.sum()

    model, reference = Model(), Model()
    compiled = gradc.jit(model.step)
    x = np.full((4, 3), 0.1)
    for i in range(6):
        np.testing.assert_allclose(compiled(x), reference.step(x), rtol=1e-13)
        kept = {"prev": lambda m: m.prev, "cache": lambda m: m.cache["w"],
                "record in a list": lambda m: m.log[0].w, "first layer": lambda m: m.first.W,
                "frozen slotted record": lambda m: m.rec.w}[keep]
        assert kept(model) is (model.layers[0].W if keep == "first layer" else model.W)
        np.testing.assert_allclose(kept(model), kept(reference), rtol=1e-13)
        if i % 2:
            model.W, reference.W = model.W * 0.5, reference.W * 0.5
            for m in (model, reference):
                m.layers[0].W = m.layers[0].W * 0.5


def test_outside_arrays_swapped_beside_an_update_in_place_are_refused():
    """fuzz45b: `self.A, self.B = self.B, self.A` and `self.A -= lr * g` (Double Q-learning's
    role swap): written back as each call's arrays, the update went into the wrong one (both
    -2.5 where NumPy has -2.5 and 1). Refused, as before the write-back of outside arrays."""
    class Model:
        def __init__(self):
            self.A, self.B = np.full(2, 1.0), np.full(2, 2.0)

        def step(self, x):
            self.A, self.B = self.B, self.A
            self.A -= 0.5 * x * self.B
            return np.sum(self.A)

    model = Model()
    with pytest.raises(gradc.UnsupportedOpError, match=r"bound `self\.\w`"):
        gradc.jit(model.step)(np.ones(2) * 3.0)


@pytest.mark.parametrize("container", ["dict", "list"])
def test_an_update_in_place_of_an_argument_entry_is_refused(container):
    """fuzz45b: Deep Learning from Scratch's `gradc.jit(optimizer.update)(network.params,
    grads)` with `params[key] -= lr * grads[key]`: NumPy writes into the arrays the layers
    share; gradc put new arrays in the caller's dict, and the layers never learned. Refused,
    as `W -= g` of an argument is, naming the entry."""
    def update(params, grads):
        for key in (range(len(params)) if isinstance(params, list) else params):
            params[key] -= 0.1 * grads[key]
        return 0.0

    W = np.ones(2)
    params = {"W1": W} if container == "dict" else [W]
    grads = {"W1": np.ones(2)} if container == "dict" else [np.ones(2)]
    with pytest.raises(gradc.UnsupportedOpError, match=r"-= on params\[.*argument"):
        gradc.jit(update)(params, grads)
    assert (params["W1"] if container == "dict" else params[0]) is W and W[0] == 1.0


def test_an_update_in_place_then_a_new_array_at_the_same_place_follows_numpy():
    """fuzz45b: `self.W -= lr * g` then a max-norm `self.W = self.W * c`: NumPy updates the
    array in place (self.params[0], the same array, sees it), then binds self.W anew; gradc
    wrote the update into the new array and never into the old one."""
    class Model:
        def __init__(self):
            self.W = np.ones((2, 2))
            self.params = [self.W]

        def step(self, g):
            self.W -= 0.3 * g
            self.W = self.W * min(1.0, 1.0 / float(np.sqrt(2.0)))
            return 0.0

    model, reference = Model(), Model()
    step = gradc.jit(model.step)
    for _ in range(3):
        g = np.ones((2, 2))
        step(g)
        reference.step(g)
        np.testing.assert_allclose(model.W, reference.W, rtol=1e-13)
        np.testing.assert_allclose(model.params[0], reference.params[0], rtol=1e-13)


def test_tied_weights_each_updated_in_place_stay_one_array():
    """fuzz45b: an autoencoder's tied weights (`self.D = self.E`), each updated in place with its
    own gradient: NumPy applies both updates to the one array; gradc bound E to a new array
    holding the first update alone (untied, one update lost)."""
    class AutoEncoder:
        def __init__(self):
            self.E = np.arange(9.0).reshape(3, 3) * 0.1
            self.D = self.E

        def step(self, x):
            h = x @ self.E
            out = h @ self.D.T
            self.E -= 0.1 * (x.T @ (out @ self.D))
            self.D -= 0.1 * (out.T @ h)
            return out.sum()

    model, reference = AutoEncoder(), AutoEncoder()
    step = gradc.jit(model.step)
    for i in range(3):
        x = np.ones((2, 3)) * 0.3 * (i + 1)
        assert step(x) == pytest.approx(reference.step(x), rel=1e-12)
        assert model.D is model.E
        np.testing.assert_allclose(model.E, reference.E, rtol=1e-12)


class _FlatParameters:
    """Weights as views of one flat vector, updated through the vector."""

    def __init__(self):
        self.flat = np.linspace(-1.0, 1.0, 15)
        self.W, self.c = self.flat[:12].reshape(4, 3), self.flat[12:]

    def step(self, x):
        y = x @ self.W + self.c
        self.flat -= 0.01 * np.concatenate([(x.T @ y).ravel(), y.sum(0)])
        return ((x @ self.W + self.c) ** 2).mean()  # (after the update: through the views)


class _FullView:
    """b = a[:], updated through b, read through a."""

    def __init__(self):
        self.a = np.linspace(-1.0, 1.0, 12).reshape(4, 3)
        self.b = self.a[:]

    def step(self, x):
        self.b -= 0.01 * (x.T @ (x @ self.a))
        return (x @ self.a).sum()


@pytest.mark.parametrize("model", [_FlatParameters, _FullView])
def test_an_update_in_place_is_seen_through_the_arrays_sharing_its_memory(model):
    """fuzz47e: `self.flat -= lr * g` then `self.W` (a view of flat) read the values before
    the update, from the first call on: a view read after an update of the array it views is
    made from the updated value now, as NumPy's shows it."""
    m, reference = model(), model()
    f = gradc.jit(m.step)
    rng = np.random.default_rng(0)
    for k in range(3):
        x = rng.standard_normal((3, 4))
        assert f(x) == pytest.approx(reference.step(x), rel=1e-12), k
        for name in vars(reference):
            np.testing.assert_allclose(getattr(m, name), getattr(reference, name), rtol=1e-12)


def test_a_read_of_an_array_a_view_of_it_was_updated_through_is_refused():
    class Part:
        def __init__(self):
            self.flat = np.linspace(-1.0, 1.0, 15)
            self.W = self.flat[:12].reshape(4, 3)

        def step(self, x):
            self.W -= 0.01 * (x.T @ (x @ self.W))
            return (self.flat * x[0, 0]).sum()  # (the whole vector: no view of the part)

    with pytest.raises(gradc.UnsupportedOpError, match=r"`self\.flat` shares memory with "
                                                       r"`self\.W`"):
        gradc.jit(Part().step)(np.ones((3, 4)))


def test_weights_the_user_ties_after_the_trace_trace_again():
    """fuzz47e: `m.b = m.a` after the first calls (b updated in place, a read after): the
    program compiled for two arrays ran on, reading a as it was before b's update."""
    class Model:
        def __init__(self):
            self.a = np.linspace(-1.0, 1.0, 12).reshape(4, 3)
            self.b = self.a.copy()

        def step(self, x):
            self.b -= 0.01 * (x.T @ (x @ self.a))
            return (x @ self.a).sum()

    m, reference = Model(), Model()
    f = gradc.jit(m.step)
    rng = np.random.default_rng(1)
    for k in range(4):
        x = rng.standard_normal((3, 4))
        assert f(x) == pytest.approx(reference.step(x), rel=1e-12), k
        if k == 1:
            m.b, reference.b = m.a, reference.a


# what a step keeps of its weights before `self.W -= g`, made from the model and what it kept
_KEPT_BEFORE_THE_UPDATE = {
    "ema": lambda m, kept: 0.9 * (0.0 if kept is None else kept) + 0.1 * m.W,
    "history": lambda m, kept: (kept or []) + [m.W.copy()],
    "view": lambda m, kept: m.W.T,
    "astype copy=False": lambda m, kept: m.W.astype(np.float64, copy=False),
    "atleast_2d": lambda m, kept: np.atleast_2d(m.W),
    "atleast_1d": lambda m, kept: np.atleast_1d(m.W),
}


@pytest.mark.parametrize("kept", list(_KEPT_BEFORE_THE_UPDATE))
def test_what_a_step_keeps_of_its_weights_before_updating_them_in_place_is_numpys(kept):
    """fuzz47e: an EMA of the weights, a history of their copies or a view of them (self.W.T)
    taken before `self.W -= g` was refused as a read after the update: the probe that looks
    for one started from what the first trace had stored (the EMA moved once more, the list
    one longer), and the stored view's bytes moved with W's; it starts from what the first
    trace found now, and a view kept is no read. `W.astype(np.float64, copy=False)` and
    np.atleast_2d(W) are W itself in NumPy; from the second call on gradc's was a copy
    holding W before its update (the trace reading W live took it as a traced value)."""
    make = _KEPT_BEFORE_THE_UPDATE[kept]

    class Model:
        def __init__(self):
            self.W, self.kept = np.linspace(-1.0, 1.0, 12).reshape(4, 3), None

        def step(self, x):
            self.kept = make(self, self.kept)
            y = x @ self.W
            self.W -= 0.01 * (x.T @ y)
            return y.sum()

    m, reference = Model(), Model()
    f = gradc.jit(m.step)
    for i in range(4):
        x = np.full((3, 4), 0.1 * (i + 1))
        assert f(x) == pytest.approx(reference.step(x), rel=1e-12)
        np.testing.assert_allclose(m.W, reference.W, rtol=1e-12)
        if kept == "history":
            assert len(m.kept) == len(reference.kept)
            for mine, theirs in zip(m.kept, reference.kept):
                np.testing.assert_allclose(mine, theirs, rtol=1e-12)
        else:
            np.testing.assert_allclose(m.kept, reference.kept, rtol=1e-12)
        if kept == "view":
            assert np.shares_memory(m.kept, m.W)
        elif kept not in ("ema", "history"):
            assert m.kept is m.W


def _swap(p, x):
    p["b"], p["rm"] = p["rm"], p["b"]
    return x.sum()


def _rotate(l, x):
    l[0], l[1], l[2] = l[1], l[2], l[0]
    return x.sum()


def _sequential(p, x):
    p["b"] = p["rm"]
    p["rm"] = p["b"]
    return x.sum()


@pytest.mark.parametrize("fun, make", [
    (_swap, lambda k: {"b": np.full(2, 10.0 + k), "rm": np.full(2, 20.0 + k)}),
    (_rotate, lambda k: [np.full(2, 0.0 + k), np.full(2, 1.0 + k), np.full(2, 2.0 + k)]),
    (_sequential, lambda k: {"b": np.full(2, 10.0 + k), "rm": np.full(2, 20.0 + k)}),
])
def test_entries_of_an_argument_swapped_are_swapped_as_numpys(fun, make):
    """`p["b"], p["rm"] = p["rm"], p["b"]`: each entry is bound to the array the call found at
    the other (the second write-back followed p["b"] after the first had rebound it: both
    entries held the old rm, on every call); written one after the other, both are rm."""
    compiled = gradc.jit(fun)
    for k in range(3):
        by_numpy, by_gradc = make(k), make(k)
        fun(by_numpy, np.ones(2))
        compiled(by_gradc, np.ones(2))
        entries = (lambda p: list(p.values()) if isinstance(p, dict) else list(p))
        for a, b in zip(entries(by_numpy), entries(by_gradc)):
            np.testing.assert_array_equal(a, b)
        ids = lambda p: [[id(v) for v in entries(p)].index(id(v)) for v in entries(p)]  # noqa
        assert ids(by_numpy) == ids(by_gradc)  # (which entries are one array)


class _Holder:
    pass


_HOLDER = _Holder()


def _wrap_given(p, x):
    p["me"] = [p["l"], (p["d"], 1)]
    _HOLDER.keep = {"l": p["l"], "h": x * 2.0}
    return x.sum()


def test_a_given_list_or_dict_inside_a_new_container_is_the_callers_own():
    """`p["me"] = [p["l"]]`: the caller's own list, as NumPy binds it (the trace's copy of it,
    which holds traced values, leaked into the caller's dict), in a dict argument's entry and in
    an object's attribute alike."""
    compiled = gradc.jit(_wrap_given)
    for k in range(3):
        p = {"l": [np.full(2, 7.0 + k)], "d": {"w": np.ones(2) * k}}
        x = np.full(2, float(k))
        compiled(p, x)
        assert p["me"][0] is p["l"] and p["me"][1][0] is p["d"] and p["me"][1][1] == 1
        assert _HOLDER.keep["l"] is p["l"]
        np.testing.assert_array_equal(_HOLDER.keep["h"], x * 2.0)
        np.testing.assert_array_equal(p["l"][0], np.full(2, 7.0 + k))


_SHARED = {"a": np.zeros(2)}


class _Net:
    pass


_NET = _Net()
_NET.bn = _SHARED


def _store_through_one(p, q, x):
    p["a"] = x * 2.0
    q["a"] = q["a"] + 1.0
    return q["a"].sum()


def _store_through_outside(p, x):
    _NET.bn["a"] = x * 3.0
    return p["a"] * 1.0


def test_a_dict_stored_into_that_the_call_also_reaches_another_way_is_refused():
    """`f(d, d, x)`, or a dict passed that the function also stores into through an outside
    name: the trace ran on a copy per argument, so a store through one name was not seen
    through the other (returned 2.0 for NumPy's 22.0, and left d["a"] at [1, 1]). Refused,
    nothing written back; passed apart, as before."""
    compiled = gradc.jit(_store_through_one)
    d = {"a": np.zeros(2)}
    with pytest.raises(gradc.UnsupportedOpError, match=r"passes as argument 0 and argument 1"):
        compiled(d, d, np.full(2, 5.0))
    np.testing.assert_array_equal(d["a"], np.zeros(2))
    p, q = {"a": np.zeros(2)}, {"a": np.ones(2)}
    assert compiled(p, q, np.full(2, 5.0)) == 4.0
    np.testing.assert_array_equal(p["a"], [10.0, 10.0])
    with pytest.raises(gradc.UnsupportedOpError, match=r"reaches from outside too"):
        gradc.jit(_store_through_outside)(_SHARED, np.ones(2))
