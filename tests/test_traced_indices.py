"""NumPy arrays indexed by traced values (gradc/subscript.py): `self.C[X]` with the embedding
table on the model and the token ids an argument (makemore's MLP, word2vec, a GPT's wte). NumPy's
indexing cannot take a traced index, and it was refused: now the table is read as a graph
value, live where it is from outside, as a traced `X @ self.W` reads W."""
import threading

import numpy as np
import pytest

import gradc
from gradc import subscript

RNG = np.random.default_rng(5)
G = RNG.standard_normal((10, 3))


class CharMLP:
    """makemore's MLP as its lecture writes it, the table and weights on the model."""

    def __init__(self):
        self.C = RNG.standard_normal((27, 4))
        self.W = RNG.standard_normal((12, 5))

    def loss(self, X, t):
        emb = self.C[X]  # (B, 3, 4)
        h = np.tanh(emb.reshape(len(X), -1) @ self.W)
        # (a traced scalar and a slice, a column by a traced position, indices from the end)
        return (h.sum() + self.C[t, 0] + self.W[:, X[0, 0]].sum() + self.C[-X[:, 0]].sum()
                + self.C[X[:, 1], 1:3].sum())


def test_a_table_on_the_model_indexed_by_arguments_follows_its_updates():
    model = CharMLP()
    X, t = np.array([[1, 2, 3], [4, 5, 26]]), np.int64(3)
    loss = gradc.jit(model.loss)
    for _ in range(3):
        np.testing.assert_allclose(loss(X, t), model.loss(X, t), rtol=1e-13)
        model.C *= 0.9  # (in place: read live)
        model.W += 0.1
    model.C = model.C + 1.0  # (rebound)
    np.testing.assert_allclose(loss(X, t), model.loss(X, t), rtol=1e-13)
    np.testing.assert_allclose(loss(X[::-1], np.int64(0)), model.loss(X[::-1], np.int64(0)),
                               rtol=1e-13)


def test_gradients_through_a_global_table_and_indices_out_of_range():
    def loss(w, idx):
        return (G[idx] @ w).sum() ** 2

    w, idx = np.ones(3), np.array([1, 2, 2])
    rows = G[idx]
    np.testing.assert_allclose(gradc.grad(loss)(w, idx), 2 * (rows @ w).sum() * rows.sum(0),
                               rtol=1e-12)
    with pytest.raises(IndexError, match="outside"):  # (checked as the compiled function runs)
        gradc.jit(lambda i: G[i])(np.array([11]))


def test_numpy_keeps_its_own_indexing_outside_traces_and_in_other_threads():
    other = np.arange(1000.0)
    stop, wrong = threading.Event(), []

    def index_plain_arrays():  # (while traces run in the main thread)
        while not stop.is_set():
            if other[7] != 7.0 or other[np.array([3, 4])].sum() != 7.0 or other[2:4, ].sum() != 5:
                wrong.append(True)

    thread = threading.Thread(target=index_plain_arrays)
    thread.start()
    try:
        for n in range(3):
            np.testing.assert_allclose(gradc.jit(lambda i: G[i] * n)(np.array([n])), G[[n]] * n)
    finally:
        stop.set()
        thread.join()
    assert not wrong
    if subscript._available():  # (NumPy's slot back once no trace runs)
        assert subscript._state["slot"].value == subscript._state["numpy"]
    with pytest.raises(IndexError):
        G[10]


def test_a_table_gradc_cannot_compute_with_is_refused_at_the_users_line():
    """fuzz44d: a complex table indexed by a traced index was refused without the file and
    line (the refusal came from inside the native slot's call)."""
    table = np.array([1 + 2j, 3 - 1j, 0.5j])
    with pytest.raises(gradc.UnsupportedOpError, match=r"test_traced_indices\.py:\d+: a "
                                                       r"complex128 array"):
        gradc.jit(lambda i: table[i])(np.array([0, 2]))
