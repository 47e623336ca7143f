"""Building and cutting arrays (gradc/functions/arrays.py), NumPy's indexing (gradc/indexing.py),
gradc.at, and array literals of traced values (gradc/literals.py), through the public API.

Wide sweeps run the traced graph in the reference interpreter (no compiling): every function and
index against NumPy (values, shapes, dtypes; float64, float32, int64) and its gradient, built by
gradc's autodiff, against central differences of the NumPy reference. A representative subset
is compiled end to end (gradc.jit in float32, gradc.value_and_grad in float64), a few programs
shared by module-scoped fixtures.
"""
import queue
import threading

import numpy as np
import pytest

import gradc
from gradc import autodiff, literals, pytree
from gradc.interpret import evaluate
from gradc.trace import trace

RNG = np.random.default_rng(0)
X = RNG.standard_normal((3, 4))
V = RNG.standard_normal(5)
Y = RNG.standard_normal((2, 3, 4))

# name -> f(x (3, 4), v (5,), y (2, 3, 4)): one NumPy call each, positional and keyword spellings
ARRAYS = {
    "repeat": lambda x, v, y: np.repeat(x, 2),
    "repeat_per_row": lambda x, v, y: np.repeat(x, [1, 0, 2], axis=0),
    "repeat_neg_axis": lambda x, v, y: np.repeat(y, repeats=2, axis=-1),
    "repeat_method": lambda x, v, y: x.repeat(3, axis=1),
    "tile": lambda x, v, y: np.tile(x, (2, 1, 2)),
    "tile_int": lambda x, v, y: np.tile(A=v, reps=2),
    "hstack": lambda x, v, y: np.hstack([x, x[:, :1]]),
    "hstack_1d": lambda x, v, y: np.hstack((v, v[:2], 1.5)),
    "vstack": lambda x, v, y: np.vstack([x, v[:4]]),
    "row_stack_dtype": lambda x, v, y: np.vstack(tup=(v, v), dtype=np.float32),
    "dstack": lambda x, v, y: np.dstack([x, x, x[:, :, None]]),
    "column_stack": lambda x, v, y: np.column_stack([v, v * 2, np.ones((5, 2))]),
    "block": lambda x, v, y: np.block([[x, x[:, :1]], [v[None, :4], np.ones((1, 1))]]),
    "block_1d": lambda x, v, y: np.block([v, 2.0, v[:2]]),
    "block_3d": lambda x, v, y: np.block([[y], [y[:, :1]]]),
    "block_array": lambda x, v, y: np.block(x),
    "split": lambda x, v, y: np.split(x, 2, axis=1),
    "split_indices": lambda x, v, y: np.split(v, [1, 3]),
    "split_unsorted": lambda x, v, y: np.split(y, [3, 1], -1),
    "array_split": lambda x, v, y: np.array_split(v, 3),
    "array_split_kw": lambda x, v, y: np.array_split(ary=y, indices_or_sections=2, axis=1),
    "hsplit": lambda x, v, y: np.hsplit(x, 2),
    "vsplit": lambda x, v, y: np.vsplit(x, [1]),
    "dsplit": lambda x, v, y: np.dsplit(y, [1, 3]),
    "pad_int": lambda x, v, y: np.pad(x, 1),
    "pad_constant_values": lambda x, v, y: np.pad(x, ((1, 2), (0, 3)),
                                                  constant_values=((1, 2), (3, 4))),
    "pad_dict": lambda x, v, y: np.pad(y, {-1: (2, 1), 0: 1}, constant_values=-2),
    "pad_edge": lambda x, v, y: np.pad(x, 2, "edge"),
    "pad_reflect": lambda x, v, y: np.pad(x, (3, 5), "reflect"),
    "pad_symmetric": lambda x, v, y: np.pad(array=y, pad_width=((0, 1), (4, 2), (1, 0)),
                                            mode="symmetric"),
    "pad_wrap": lambda x, v, y: np.pad(v, (1, 7), mode="wrap"),
    "flip": lambda x, v, y: np.flip(x),
    "flip_axes": lambda x, v, y: np.flip(y, (0, -1)),
    "flip_axis": lambda x, v, y: np.flip(m=y, axis=1),
    "fliplr": lambda x, v, y: np.fliplr(x),
    "flipud": lambda x, v, y: np.flipud(v),
    "roll": lambda x, v, y: np.roll(x, 2),
    "roll_axes": lambda x, v, y: np.roll(x, (1, -5), (0, 1)),
    "roll_neg_axis": lambda x, v, y: np.roll(y, 3, axis=-1),
    "roll_one_axis_twice": lambda x, v, y: np.roll(a=x, shift=[1, 2], axis=1),
    "rot90": lambda x, v, y: np.rot90(x),
    "rot90_k2": lambda x, v, y: np.rot90(y, 2, (1, 2)),
    "rot90_neg": lambda x, v, y: np.rot90(y, k=-1, axes=(2, 0)),
    "rot90_k3": lambda x, v, y: np.rot90(x, 3),
    "rollaxis": lambda x, v, y: np.rollaxis(y, 2),
    "rollaxis_start": lambda x, v, y: np.rollaxis(y, -1, start=1),
    "tril": lambda x, v, y: np.tril(x),
    "triu_batched": lambda x, v, y: np.triu(y, 1),
    "tril_1d": lambda x, v, y: np.tril(v, -1),
    "triu_kw": lambda x, v, y: np.triu(m=x, k=-1),
    "diag_1d": lambda x, v, y: np.diag(v),
    "diag_1d_k": lambda x, v, y: np.diag(v, 2),
    "diag_2d_k": lambda x, v, y: np.diag(x, k=-1),
    "diag_2d": lambda x, v, y: np.diag(x),
    "diagonal": lambda x, v, y: np.diagonal(y, 1, 2, 0),
    "diagonal_kw": lambda x, v, y: np.diagonal(x, offset=-1),
    "diagonal_method": lambda x, v, y: y.diagonal(0, -1, -2),
    "atleast_1d": lambda x, v, y: np.atleast_1d(x[0, 0]),
    "atleast_2d": lambda x, v, y: np.atleast_2d(v, x),
    "atleast_3d": lambda x, v, y: np.atleast_3d(v, x, x[0, 0], y),
    "append": lambda x, v, y: np.append(x, v),
    "append_axis": lambda x, v, y: np.append(x, x, axis=0),
    "delete": lambda x, v, y: np.delete(x, 1, 0),
    "delete_flat": lambda x, v, y: np.delete(arr=v, obj=[0, 2]),
    "delete_slice": lambda x, v, y: np.delete(y, slice(0, 3, 2), axis=-1),
    "insert": lambda x, v, y: np.insert(v, 2, 9),
    "insert_columns": lambda x, v, y: np.insert(x, [1, 3], [7, 8], axis=1),
    "insert_row": lambda x, v, y: np.insert(x, 1, v[:4], 0),
}
# compiled end to end (the rest share their code paths)
COMPILED = ["repeat_per_row", "pad_dict", "pad_reflect", "roll_axes", "triu_batched",
            "insert_columns"]


def leaves(tree):
    return [np.asarray(a) for a in pytree.flatten(tree)[0]]


def interpret(f, args):
    """f traced, run by the reference interpreter: its output leaves."""
    graph, _, _ = trace(f, tuple(args))
    return evaluate(graph, list(args))


def interpret_grads(loss, args, argnums):
    """Value and gradients of a scalar loss as gradc's autodiff builds them, run by the
    reference interpreter."""
    graph, _, _ = trace(loss, tuple(args))
    grads = autodiff.vjp(graph, graph.outputs[0], [graph.inputs[i] for i in argnums])
    graph.outputs = [graph.outputs[0]] + grads
    return evaluate(graph, list(args))


def finite_differences(loss, args, argnums, eps=1e-6):
    out = []
    for a in argnums:
        g = np.zeros_like(args[a])
        for idx in np.ndindex(args[a].shape):
            values = []
            for sign in (1, -1):
                moved = [x.copy() for x in args]
                moved[a][idx] += sign * eps
                values.append(loss(*moved))
            g[idx] = (values[0] - values[1]) / (2 * eps)
        out.append(g)
    return out


def weighted_loss(f, shapes):
    """sum(f(...) * r) over every output leaf, r fixed random cotangents."""
    rng = np.random.default_rng(1)
    cotangents = [rng.standard_normal(s) for s in shapes]

    def loss(*args):
        return sum(np.sum(o * r) for o, r in zip(pytree.flatten(f(*args))[0], cotangents))
    return loss


def assert_same(got, want, what, exact=True):
    assert len(got) == len(want), what
    for k, (g, w) in enumerate(zip(got, want)):
        w = np.asarray(w)
        assert g.shape == w.shape and g.dtype == w.dtype, (what, k, g.shape, w.shape, g.dtype,
                                                           w.dtype)
        if exact:
            np.testing.assert_array_equal(g, w, err_msg=f"{what} [{k}]")
        else:
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12, err_msg=f"{what} [{k}]")


# ---------------------------------------------------------------------------------------------
# building and cutting: the sweep, in the reference interpreter

@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64])
def test_functions_match_numpy(dtype):
    args = [a.astype(dtype) if dtype != np.int64 else np.round(a * 5).astype(dtype)
            for a in (X, V, Y)]
    for name, f in ARRAYS.items():
        assert_same(interpret(f, args), leaves(f(*args)), name)


@pytest.mark.parametrize("name", [n for n in ARRAYS if n != "row_stack_dtype"])  # (float32)
def test_function_gradients_match_finite_differences(name):
    f = ARRAYS[name]
    loss = weighted_loss(f, [np.shape(o) for o in leaves(f(X, V, Y))])
    value, *grads = interpret_grads(loss, [X, V, Y], (0, 1, 2))
    np.testing.assert_allclose(value, loss(X, V, Y), rtol=1e-12)
    for g, want in zip(grads, finite_differences(loss, [X, V, Y], (0, 1, 2))):
        np.testing.assert_allclose(g, want, rtol=1e-6, atol=1e-8, err_msg=name)


# ---------------------------------------------------------------------------------------------
# compiled end to end

def compiled_subset(x, v, y, names=COMPILED):
    return {name: ARRAYS[name](x, v, y) for name in names}


@pytest.fixture(scope="module")
def subset_loss():
    return weighted_loss(compiled_subset,
                         [np.shape(o) for o in leaves(compiled_subset(X, V, Y))])


def test_compiled_functions_match_numpy_float32():
    args = [a.astype(np.float32) for a in (X, V, Y)]
    names = ["repeat_per_row", "pad_reflect", "roll_axes", "triu_batched", "insert_columns"]
    got = gradc.jit(compiled_subset)(*args, names)
    want = compiled_subset(*args, names)
    for name in names:
        assert_same(leaves(got[name]), leaves(want[name]), name)


def test_compiled_gradients_match_finite_differences(subset_loss):
    value, grads = gradc.value_and_grad(subset_loss, argnums=(0, 1, 2))(X, V, Y)
    np.testing.assert_allclose(value, subset_loss(X, V, Y), rtol=1e-12)
    for g, want in zip(grads, finite_differences(subset_loss, [X, V, Y], (0, 1, 2))):
        assert g.dtype == np.float64
        np.testing.assert_allclose(g, want, rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------------------------------------
# indexing

A = RNG.standard_normal((3, 4, 5))
I = np.array([[0, 2], [1, -1]])  # (2 and -1 repeat one row: their gradients accumulate)
J = np.array([3, -4])
MASK = A[0] > 0  # (4, 5)
ROWS = np.array([True, False, True])

# name -> f(a (3, 4, 5), i (2, 2), j (2,)): i and j traced or static
INDEXES = {
    "two_arrays": lambda a, i, j: a[i, j],
    "arrays_apart": lambda a, i, j: a[i, :, j],
    "arrays_after_slice": lambda a, i, j: a[:, i, j],
    "ellipsis": lambda a, i, j: a[..., i],
    "none_between": lambda a, i, j: a[i, None, j],
    "int_and_array_apart": lambda a, i, j: a[1, :, j],
    "array_and_int": lambda a, i, j: a[i, 1],
    "slice_between": lambda a, i, j: a[i, 1:3, j],
    "none_step_slice": lambda a, i, j: a[None, i, ::-2, j],
    "list_and_ellipsis": lambda a, i, j: a[[2, -3], ..., j],
    # an ellipsis of no axes still separates them: the block moves to the front
    "empty_ellipsis_between": lambda a, i, j: a[:, i, ..., j],
    "int_empty_ellipsis_array": lambda a, i, j: a[:, 1, ..., j],
    "one_array": lambda a, i, j: a[i],
    "list_pair": lambda a, i, j: a[[0, 2], :, [1, 1]],
    # a range is a list of integers to NumPy (CS231n's probs[range(N), y])
    "range_and_array": lambda a, i, j: a[range(2), :, j],
    "range_alone": lambda a, i, j: a[:, range(1, 3)],
    "empty_range": lambda a, i, j: a[range(0)],
    "zero_d_array": lambda a, i, j: a[np.array(1), :, j],
    "static_mask_rows": lambda a, i, j: a[ROWS],
    "static_mask_2d": lambda a, i, j: a[:, MASK],
    "static_mask_and_array": lambda a, i, j: a[ROWS, 1:, j],
    "static_mask_full": lambda a, i, j: a[A > 0.5],
}


@pytest.mark.parametrize("traced_indices", [False, True], ids=["static", "traced"])
def test_indexing_matches_numpy(traced_indices):
    for name, f in INDEXES.items():
        if traced_indices:
            got = interpret(f, [A, I, J])
        else:
            got = interpret(lambda a: f(a, I, J), [A])
        assert_same(got, [f(A, I, J)], name)


@pytest.mark.parametrize("traced_indices", [False, True], ids=["static", "traced"])
def test_indexing_gradients_scatter_add(traced_indices):
    for name, f in INDEXES.items():
        r = np.random.default_rng(2).standard_normal(np.shape(f(A, I, J)))
        loss = (lambda a, i, j: np.sum(f(a, i, j) * r)) if traced_indices else (
            lambda a: np.sum(f(a, I, J) * r))
        args = [A, I, J] if traced_indices else [A]
        value, grad = interpret_grads(loss, args, (0,))
        # the gradient of a gather: r added at every position read (repeats accumulate)
        want = np.zeros(A.size)
        np.add.at(want, f(np.arange(A.size).reshape(A.shape), I, J).reshape(-1), r.reshape(-1))
        np.testing.assert_allclose(value, np.sum(f(A, I, J) * r), rtol=1e-12)
        np.testing.assert_allclose(grad, want.reshape(A.shape), rtol=1e-12, atol=1e-12,
                                   err_msg=name)


# name -> (f(a, v, i), its NumPy reference): updates out of place, i traced or static
AT = {
    "set": (lambda a, v, i: gradc.at(a)[i].set(v[:, :, None, None]),
            lambda a, v, i: _numpy_set(a, i, v[:, :, None, None])),
    "add": (lambda a, v, i: gradc.at(a)[i, 1:3].add(v[:, :, None, None]),
            lambda a, v, i: _numpy_add_at(a, (i, slice(1, 3)), v[:, :, None, None])),
    "add_scalar": (lambda a, v, i: gradc.at(a)[:, i[0], 2].add(2.5),
                   lambda a, v, i: _numpy_add_at(a, (slice(None), i[0], 2), 2.5)),
    "add_range": (lambda a, v, i: gradc.at(a)[range(1, 3), 0].add(v[0, :, None]),
                  lambda a, v, i: _numpy_add_at(a, (range(1, 3), 0), v[0, :, None])),
    "set_two_arrays": (lambda a, v, i: gradc.at(a)[i, J].set(v[:, :1]),
                       lambda a, v, i: _numpy_set(a, (i, J), v[:, :1])),
}
AT_STATIC_ONLY = {
    "multiply": (lambda a, v, i: gradc.at(a)[i].multiply(v[:, :, None, None]),
                 lambda a, v, i: _numpy_at(np.multiply, a, i, v[:, :, None, None])),
    "min": (lambda a, v, i: gradc.at(a)[i, :, 1].min(v[:, :, None]),
            lambda a, v, i: _numpy_at(np.minimum, a, (i, slice(None), 1), v[:, :, None])),
    "max": (lambda a, v, i: gradc.at(a)[ROWS, 0].max(v[0, 0]),
            lambda a, v, i: _numpy_at(np.maximum, a, (ROWS, 0), v[0, 0])),
    "set_basic": (lambda a, v, i: gradc.at(a)[1:, ::-2].set(v[:, :, None]),
                  lambda a, v, i: _numpy_set(a, (slice(1, None), slice(None, None, -2)),
                                             v[:, :, None])),
    "set_static_mask": (lambda a, v, i: gradc.at(a)[A > 0.5].set(v[0, 1]),
                        lambda a, v, i: _numpy_set(a, A > 0.5, v[0, 1])),
    "add_traced_mask": (lambda a, v, i: gradc.at(a)[a > 0.5].add(v[0, 1]),
                        lambda a, v, i: _numpy_add_at(a, A > 0.5, v[0, 1])),
}
W = RNG.standard_normal((2, 2))  # the values written (as I's shape)


def _numpy_set(a, index, values):
    out = a.copy()
    out[index] = values
    return out


def _numpy_at(ufunc, a, index, values):
    out = a.copy()
    ufunc.at(out, index, values)
    return out


def _numpy_add_at(a, index, values):
    return _numpy_at(np.add, a, index, values)


@pytest.mark.parametrize("traced_indices", [False, True], ids=["static", "traced"])
def test_at_matches_numpy_with_gradients(traced_indices):
    table = dict(AT, **({} if traced_indices else AT_STATIC_ONLY))
    for name, (f, ref) in table.items():
        want = ref(A, W, I)
        r = np.random.default_rng(3).standard_normal(want.shape)
        if traced_indices:
            got = interpret(f, [A, W, I])
            value, *grads = interpret_grads(lambda a, v, i: np.sum(f(a, v, i) * r), [A, W, I],
                                            (0, 1))
        else:
            got = interpret(lambda a, v: f(a, v, I), [A, W])
            value, *grads = interpret_grads(lambda a, v: np.sum(f(a, v, I) * r), [A, W], (0, 1))
        assert_same(got, [want], name, exact=False)  # (a scatter-add sums in its own order)

        def loss(a, v):
            return np.sum(ref(a, v, I) * r)
        np.testing.assert_allclose(value, loss(A, W), rtol=1e-12)
        for g, w in zip(grads, finite_differences(loss, [A, W], (0, 1))):
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-8, err_msg=name)


def test_at_on_numpy_arrays_outside_a_trace_is_numpy():
    for name, (f, ref) in dict(AT, **AT_STATIC_ONLY).items():
        if name != "add_traced_mask":
            np.testing.assert_array_equal(f(A, W, I), ref(A, W, I), err_msg=name)
    assert np.shares_memory(gradc.at(A)[0].set(1.0), A) is False
    # values broadcast over a 2-D index: NumPy 2.4's own np.add.at wrote garbage here
    index, values = np.array([[0, 0], [1, 0]]), np.array([10.0, 100.0])
    added = gradc.at(np.zeros(4))[index].add(values)
    np.testing.assert_array_equal(added, [210.0, 10.0, 0.0, 0.0])
    np.testing.assert_array_equal(
        gradc.jit(lambda z, v: gradc.at(z)[index].add(v))(np.zeros(4), values), added)
    np.testing.assert_array_equal(gradc.at(np.ones(3))[[[2]]].multiply(np.full((1, 1, 1), 4.0)),
                                  [1.0, 1.0, 4.0])


GATHERED = ("arrays_apart", "static_mask_and_array")
UPDATED = ("set", "add")


def indexed(a, v, i, j):
    """Indexing and updates with traced index arrays i, j and static ones, in one program."""
    return [INDEXES[n](a, i, j) for n in GATHERED] + [AT[n][0](a, v, i) for n in UPDATED]


def indexed_by_numpy(a, v):
    """The same by NumPy: its indexing, its assignment and np.ufunc.at."""
    return [INDEXES[n](a, I, J) for n in GATHERED] + [AT[n][1](a, v, I) for n in UPDATED]


COTANGENTS = [np.random.default_rng(4).standard_normal(np.shape(o))
              for o in indexed_by_numpy(A, W)]


@pytest.fixture(scope="module")
def indexed_grad():
    def loss(a, v, i, j):
        return sum(np.sum(o * r) for o, r in zip(indexed(a, v, i, j), COTANGENTS))
    return gradc.value_and_grad(loss, argnums=(0, 1))


def test_compiled_indexing_matches_numpy_and_finite_differences(indexed_grad):
    value, grads = indexed_grad(A, W, I, J)

    def reference(a, v):
        return sum(np.sum(o * r) for o, r in zip(indexed_by_numpy(a, v), COTANGENTS))
    np.testing.assert_allclose(value, reference(A, W), rtol=1e-12)
    for g, w in zip(grads, finite_differences(reference, [A, W], (0, 1))):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-8)


def test_compiled_traced_index_out_of_range_raises(indexed_grad):
    vg = indexed_grad
    for i, j in ((np.array([[0, 3], [1, 1]]), J), (I, np.array([3, -6]))):
        with pytest.raises(gradc.IndexOutOfRangeError):
            vg(A, W, i, j)
    vg(A, W, I, J)  # (and then it runs again)


def check_error(f, error, words, args=(A,)):
    """f(*args) traced raises `error` naming this file's line and the words (before compiling)."""
    with pytest.raises(error) as excinfo:
        gradc.jit(f)(*args)
    msg = str(excinfo.value)
    assert "test_arrays.py" in msg and all(w in msg for w in words), msg


def test_function_errors():
    check_error(lambda x: np.repeat(x, x[0].astype(np.int64)), gradc.UnsupportedOpError,
                ["repeats", "data-dependent"], (V,))
    check_error(lambda x: np.roll(x, (x[0].astype(np.int64), 1), (0, 0)),
                gradc.UnsupportedOpError, ["shift", "one integer"], (V,))
    check_error(lambda x: np.pad(x, 1, mode="reflect", reflect_type="odd"),
                gradc.UnsupportedOpError, ["reflect_type"], (X,))
    check_error(lambda x: np.pad(x, 1, "reflect", reflect_type="odd"),
                gradc.UnsupportedOpError, ["odd"], (X,))
    check_error(lambda x: np.pad(x, 1.5), gradc.ArgumentError, ["integral"], (X,))
    check_error(lambda x: np.pad(x, ((1, 2), (3, -1))), gradc.ArgumentError, ["negative"], (X,))
    check_error(lambda x: np.split(x, 3, axis=1), gradc.ArgumentError, ["equal division"], (X,))
    check_error(lambda x: np.fliplr(x), gradc.ArgumentError, [">= 2-d"], (V,))
    check_error(lambda x: np.diag(x), gradc.ArgumentError, ["1- or 2-d"], (Y,))
    check_error(lambda x: np.rot90(x, axes=(1, 1)), gradc.ArgumentError, ["Axes"], (X,))
    check_error(lambda x: np.vsplit(x, 2), gradc.ArgumentError, ["vsplit"], (V,))
    check_error(lambda x: np.tile(x, x.shape[0] + x[0]), gradc.UnsupportedOpError, ["reps"],
                (V,))


def test_index_errors():
    check = check_error
    check(lambda a: a[a > 0], gradc.UnsupportedOpError, ["data-dependent", "np.where"])
    check(lambda a: gradc.at(a)[a > 0].set(a[0]), gradc.UnsupportedOpError, ["scalar"])
    check(lambda a: a[[0, 3]], gradc.IndexOutOfRangeError, ["out of bounds"])
    check(lambda a: a[I, :, [5, 0]], gradc.IndexOutOfRangeError, ["out of bounds"])
    # (an integer, as NumPy's IndexError, in an index and in an update: it was a ShapeError)
    check(lambda a: a[3], gradc.IndexOutOfRangeError, ["out of bounds"])
    check(lambda a: gradc.at(a)[:, -5].set(0.0), gradc.IndexOutOfRangeError, ["out of bounds"])
    check(lambda a: a[ROWS[:2]], gradc.ShapeError, ["boolean index"])
    check(lambda a, i: a[i, :, 0.5], gradc.GradcError, [], (A, I))
    check(lambda a, i: gradc.at(a)[i].multiply(2.0), gradc.UnsupportedOpError,
          [".multiply", "static"], (A, I))

    def assign(a):  # (into the caller's array)
        a[0] = 1.0
        return a
    check(assign, gradc.UnsupportedOpError, ["gradc.at(x)", "x.copy()", "argument"])


# ---------------------------------------------------------------------------------------------
# array literals and constructors in traced code

def array_literals(x, s):
    a, b = x[0], x[1]
    return [np.array([a, b]), np.array([a, 1.0]), np.array([[a, b], [s, 2]]), np.asarray(x),
            np.asarray(x, dtype=np.float64), np.array([x, x * 2]), np.array((x, [1.0, 2.0, 3.0])),
            np.array([a, 3], dtype=np.float32), np.array(a, ndmin=2), np.array([[a], [b]]).T,
            np.asanyarray([[a], [b]]), np.ascontiguousarray([a, b]), np.array([True, a > 0]),
            np.stack([[a, b], [b, a]], axis=1), np.concatenate([[a, b], x]),
            np.full((2, 3), s), np.full(3, a, dtype=np.float64), np.full((2,), [a, b]),
            np.zeros(x.shape, x.dtype) + x, np.ones((2, 2)), np.eye(3, k=1), np.identity(2),
            np.linspace(0, 1, 5), np.arange(4), np.tri(3), np.empty((2, 1)).shape[0] * x,
            np.full_like(x, 2.0), np.zeros((2,), np.int32)]


def few_literals(x, s):
    a, b = x[0], x[1]
    return [np.array([[a, b], [s, 2]]), np.stack([[a, b], [b, a]], axis=1), np.full((2, 3), s),
            np.zeros(x.shape, x.dtype) + x]


def test_array_literals_match_numpy():
    x, s = np.array([1.5, -2.0, 3.0], np.float32), 4.0
    assert_same(interpret(array_literals, [x, np.float64(s)]), array_literals(x, s), "literals")
    assert_same(leaves(gradc.jit(few_literals)(x, s)), few_literals(x, s), "compiled")


def test_array_literal_gradients():
    def loss(x, s):
        a, b = x[0], x[1]
        m = np.array([[a, b * s], [s, 2.0]])
        return np.sum(m @ np.asarray([a, 3.0 * b]) * np.array([1.0, -2.0])) + np.sum(
            np.full((2, 2), s) * m)

    x = np.array([0.3, -1.2, 2.0])
    value, *grads = interpret_grads(loss, [x, np.float64(0.7)], (0, 1))
    np.testing.assert_allclose(value, loss(x, 0.7), rtol=1e-12)
    want = finite_differences(lambda x, s: loss(x, float(s)), [x, np.array(0.7)], (0, 1))
    for g, w in zip(grads, want):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-8)


def index_concatenations(v, x):
    return [np.r_[v, v], np.r_[v, 2.0, 0:3], np.r_[v[0], v[1]], np.r_[x, x[:1]],
            np.r_[v.astype(np.float32), 1.5], np.c_[np.ones(4), v], np.c_[v], np.c_[x, x[:, 0]],
            np.c_[np.ones(3), x], np.c_[np.zeros(3, np.int32), x.astype(np.float32)]]


def test_r_and_c_of_traced_values_as_numpys():
    """np.r_[...] / np.c_[...] (`np.c_[np.ones(n), X]`, a bias column) convert their items with
    NumPy's own np.array, which no wrapper reaches: a traced item was refused as 'a traced index
    into a NumPy array'. They concatenate by NumPy's rules now (shapes, dtypes, 1-d items as
    columns in np.c_, ranges from slices), with gradients; a string directive is refused."""
    v, x = np.linspace(0.1, 0.9, 4), np.linspace(0.1, 1.2, 12).reshape(3, 4)
    assert_same(leaves(gradc.jit(index_concatenations)(v, x)), index_concatenations(v, x),
                "r_/c_")

    def loss(v, x):
        return sum(np.sum(np.sin(y)) for y in index_concatenations(v, x)[:4])

    got = gradc.grad(loss, argnums=(0, 1))(v, x)
    want = finite_differences(loss, [v, x], (0, 1))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-8)
    with pytest.raises(gradc.UnsupportedOpError, match="directive '0,2'"):
        gradc.jit(lambda v: np.r_["0,2", v, v])(v)
    assert np.r_ is literals._ORIGINAL["r_"] and np.c_ is literals._ORIGINAL["c_"]


def test_ragged_literal_is_numpys_value_error():
    with pytest.raises(gradc.ArgumentError, match="inhomogeneous") as excinfo:
        trace(lambda x: np.array([x[0], x[:2]]), (X[0],))
    assert isinstance(excinfo.value, ValueError) and "test_arrays.py" in str(excinfo.value)


def test_numpy_constructors_are_restored_after_a_trace_and_an_error():
    originals = dict(literals._ORIGINAL)
    trace(lambda x: np.array([x[0], x[1]]), (X[0],))
    with pytest.raises(ZeroDivisionError):
        trace(lambda x: np.array([x[0], 1 / 0]), (X[0],))
    for name, original in originals.items():
        assert getattr(np, name) is original, name


def test_array_imported_by_name_says_what_to_do():
    from numpy import array

    with pytest.raises(gradc.TracedBranchError, match="np.array") as excinfo:
        trace(lambda x: array([x[0], x[1]]), (X[0],))
    assert "from numpy import array" in str(excinfo.value)


def test_a_thread_that_does_not_trace_keeps_numpys_functions():
    """While one thread is inside a trace (np.array wrapped), another calls np.array as NumPy's:
    a list of numbers is NumPy's array, and a traced value it was handed is NumPy's refusal."""
    inside, done = threading.Event(), threading.Event()
    seen = {}
    handed = queue.SimpleQueue()  # (a traced value stored in a dict outside would be refused)

    def traced_fn(x):
        handed.put(x)
        inside.set()
        assert done.wait(30)
        return np.array([x[0], x[1]])

    tracer = threading.Thread(target=lambda: seen.setdefault("graph", trace(traced_fn, (X[0],))))
    tracer.start()
    try:
        assert inside.wait(30)
        assert np.array is not literals._ORIGINAL["array"]  # (the wrapper is installed)
        out = np.array([1, 2.5])
        assert type(out) is np.ndarray and out.dtype == np.float64
        assert np.asarray(X) is X
        with pytest.raises(gradc.TracedBranchError):
            np.asarray(handed.get())
    finally:
        done.set()
        tracer.join()
    assert seen["graph"][2][0].shape == (2,)
    assert np.array is literals._ORIGINAL["array"]


def test_an_attribute_no_array_has_is_numpys_attribute_error():
    """getattr(x, "scale", 2.0) and hasattr(x, "mask") on a traced value raised
    UnsupportedOpError; NumPy's arrays raise AttributeError, so duck-typed code answers as
    for an array. An ndarray method gradc lacks is still named as unsupported."""
    def loss(x):
        scale = getattr(x, "scale", 2.0)
        if hasattr(x, "mask"):
            scale = 0.0
        return (x * scale).sum()

    np.testing.assert_array_equal(gradc.grad(loss)(np.ones(3)), 2.0 * np.ones(3))
    with pytest.raises(AttributeError, match="no attribute 'foo'"):
        gradc.jit(lambda x: x.foo)(np.ones(3))
    with pytest.raises(gradc.UnsupportedOpError):
        gradc.jit(lambda x: x.tofile("x.bin"))(np.ones(3))


def test_at_add_into_booleans_with_traced_indices_reads_the_values():
    """x | v at the named positions, as np.add.at and the static-index form give: with a traced
    index every written position came out True, whatever was added (a False too)."""
    x = np.zeros(4, bool)
    i = np.array([0, 1, 0])
    update = gradc.jit(lambda x, v, i: gradc.at(x)[i].add(v))
    for v in (np.array([False, False, True]), np.zeros(3, bool), np.array([0, 2, 0], np.int64),
              np.array([0.0, 0.5, 0.0])):
        want = x.copy()
        np.add.at(want, i, v.astype(bool))
        np.testing.assert_array_equal(update(x, v, i), want)


def test_at_with_a_basic_index_in_a_loop_plans_as_little_as_a_stack():
    """gradc.at(h)[:, t].set(v) in a loop over t (the rewrite of `h[:, t] = v` gradc's refusal
    suggests) held, per update, a gather index and a mask of h's size as constants and
    gathered h whole: an RNN's states of (32, 64, 256) needed 359 MiB; then a where of h and
    the values written into zeros, 70 MiB (np.stack of the steps: 4.6). Now each update is a
    set_slice written over h in place, forward and backward: the plan is a stack's, within
    one h, at every T, and the result and gradients are NumPy's and the chain rule's."""
    def fill(w, x):
        h = np.zeros(x.shape)
        prev = np.zeros(x.shape[::2])
        for t in range(x.shape[1]):
            prev = np.tanh(prev @ w + x[:, t, :])
            h = gradc.at(h)[:, t, :].set(prev)
        return np.sum(h ** 2)

    def stacked(w, x):
        prev, hs = np.zeros(x.shape[::2]), []
        for t in range(x.shape[1]):
            prev = np.tanh(prev @ w + x[:, t, :])
            hs.append(prev)
        return np.sum(np.stack(hs, 1) ** 2)

    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 4)) * 0.5
    for steps in (6, 24):
        x = rng.standard_normal((3, steps, 4))
        (value, grads), want = gradc.value_and_grad(fill, argnums=(0, 1))(w, x), stacked(w, x)
        np.testing.assert_allclose(value, want, rtol=1e-12)
        for got, ref in zip(grads, gradc.grad(stacked, argnums=(0, 1))(w, x)):
            np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)
        plan = gradc.explain(gradc.value_and_grad(fill, argnums=(0, 1)), w, x).memory
        stack_plan = gradc.explain(gradc.value_and_grad(stacked, argnums=(0, 1)), w, x).memory
        assert not [b for b in plan.largest if b.op == "constant" and np.prod(b.shape) >= x.size]
        assert plan.arena_bytes <= stack_plan.arena_bytes + x.nbytes, (steps, plan, stack_plan)


def test_a_uniform_numpy_array_is_a_broadcast_scalar_not_an_arena_constant():
    """np.zeros/np.ones/np.full arrays made in the traced code (a state buffer filled step by
    step, a mask of ones) are one scalar broadcast: no arena bytes for the program's life.
    Arrays whose elements differ by their bits alone (-0.0 beside 0.0) stay constants, so the
    sign of a zero is NumPy's."""
    def f(x):
        signed = np.zeros(x.shape)
        signed[3, 5] = -0.0
        return (x + np.zeros(x.shape)) * np.full(x.shape, 2.0), 1.0 / (x * signed)

    x = np.ones((64, 64))
    got = gradc.jit(f)(x)
    with np.errstate(divide="ignore"):
        want = f(x)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert np.signbit(got[1][3, 5]) and got[1][3, 5] == -np.inf
    plan = gradc.explain(gradc.jit(f), x).memory
    constants = [b for b in plan.largest if b.op == "constant"]
    assert [b.shape for b in constants] == [(64, 64)]  # (the signed zeros' only)


def test_searchsorted_and_compress_methods_are_numpy_s():
    x, v = np.array([1.0, 3.0, 5.0, 7.0]), np.array([2.0, 7.0])
    m = np.arange(6.0).reshape(2, 3)

    def f(x, v, m):
        return (x.searchsorted(v), x.searchsorted(v, side="right"),
                x.compress([True, False, True, True]), m.compress([False, True, True], axis=1),
                m.compress([True, False]))

    for got, want in zip(gradc.jit(f)(x, v, m), f(x, v, m)):
        np.testing.assert_array_equal(got, want)
        assert got.dtype == want.dtype
    grad = gradc.grad(lambda m: np.sum(m.compress([False, True, True], axis=1) ** 2))(m)
    np.testing.assert_array_equal(grad, np.where([False, True, True], 2 * m, 0.0))


def test_roll_by_a_traced_shift():
    """np.roll(x, s) with s a traced integer: a gather of (i - s) mod n, NumPy's values for
    every shift and axis (None flattens), its gradient the rolled-back cotangent."""
    x = np.arange(12.0).reshape(3, 4)
    for axis in (None, 0, 1, -1):
        f = gradc.jit(lambda x, s, axis=axis: np.roll(x, s, axis))
        for s in (1, -2, 5, 0, -13):
            np.testing.assert_array_equal(f(x, np.int64(s)), np.roll(x, s, axis))
    w = np.arange(4.0)
    g = gradc.grad(lambda x, s: np.sum(np.roll(x, s, 1) * w))(x, np.int64(1))
    np.testing.assert_array_equal(g, np.broadcast_to(np.roll(w, -1), x.shape))
    with pytest.raises(gradc.UnsupportedOpError, match="one integer"):
        gradc.jit(lambda x, s: np.roll(x, (s, s), (0, 1)))(x, np.int64(1))


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64, np.bool_])
def test_pad_statistic_and_linear_ramp_modes_are_numpy_s(dtype):
    """np.pad's maximum/minimum/mean/median (stat_length too; integers' mean and median
    rounded, booleans' cast: a third True pads True, it was rounded to False) and linear_ramp
    (end_values; floored for integers), axis by axis as NumPy pads."""
    a = (np.random.default_rng(1).standard_normal((3, 4)) * 5).astype(dtype)
    if dtype is np.bool_:
        a = np.array([[1, 0, 0, 1], [0, 0, 1, 0], [1, 1, 0, 0]], bool)
    cases = [("maximum", {}), ("minimum", {"stat_length": 2}), ("mean", {}),
             ("median", {"stat_length": ((1, 3), (2, 1))}), ("linear_ramp", {}),
             ("linear_ramp", {"end_values": (5, -1)})]
    widths = ((1, 2), (2, 1))

    def f(a):
        return [np.pad(a, widths, mode, **kw) for mode, kw in cases]

    for got, want in zip(gradc.jit(f)(a), f(a)):
        np.testing.assert_allclose(got, want, rtol=1e-6)
        assert got.dtype == want.dtype and got.shape == want.shape
    if dtype is np.float64:
        w = np.arange(42.0).reshape(6, 7)
        for mode, kw in cases:
            loss = lambda a, mode=mode, kw=kw: np.sum(np.pad(a, widths, mode, **kw) * w)
            np.testing.assert_allclose(gradc.grad(loss)(a), finite_differences(loss, [a], [0])[0],
                                       rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.int64, np.uint8])
def test_isin_is_numpys(dtype):
    """fuzz47c: np.isin was refused; it is `==` against each test element (any shape, in any
    dtype, a Python int beyond the element's dtype too), invert=True its negation."""
    x = np.array([[1, 5, 3], [7, 2, 2]]).astype(dtype)
    cases = (lambda x: np.isin(x, [2, 3]), lambda x: np.isin(x, np.array([[7], [9]]), invert=True),
             lambda x: np.isin(x, []), lambda x: np.isin(x / 2, [1.0, 2.5]),
             lambda x: np.isin(x, x[0]), lambda x: np.isin(3, x),
             lambda x: np.isin(element=x, test_elements=[2, 300]))
    for i, f in enumerate(cases):
        got, want = gradc.jit(f)(x), f(x)
        assert np.shape(got) == np.shape(want) and np.asarray(got).dtype == np.bool_, i
        np.testing.assert_array_equal(got, want, err_msg=str(i))


def test_ediff1d_is_numpys():
    """np.ediff1d was refused: the differences of the flattened array between to_begin's and
    to_end's values, in its dtype (another kind refused, as NumPy refuses it)."""
    x = np.array([[1, 4], [9, 16]])
    cases = (lambda x: np.ediff1d(x), lambda x: np.ediff1d(x, to_begin=-99, to_end=[7, 8]),
             lambda x: np.ediff1d(x.astype(np.float32), to_end=1.5),
             lambda x: np.ediff1d(x * 1.5, to_begin=x[0]))
    for i, f in enumerate(cases):
        got, want = gradc.jit(f)(x), f(x)
        assert got.dtype == want.dtype, i
        np.testing.assert_array_equal(got, want, err_msg=str(i))
    with pytest.raises(gradc.ArgumentError, match="same_kind"):
        gradc.jit(lambda x: np.ediff1d(x, to_end=1.5))(x)
