"""Outside arrays NumPy reads alone (gradc/capture.py `read_by_numpy`): a compiled function reads
an array from outside its arguments live where it meets a traced value (`X.dot(self.W)`), but
what NumPy computes from it alone (`reg * np.sum(W * W)`) is compiled in. The trace is run again
with those arrays' contents changed; where the program changes, their contents are checked on
every call, so a training loop that updates them sees the new values (it was silently stale:
cs231n's and nnfs's L2 penalty kept the first weights' value). The arrays are changed back
exactly, and runs of compiled programs that read them wait meanwhile."""
import threading
import time
import warnings

import numpy as np
import pytest

import gradc

from _threads import errors_in_threads

RNG = np.random.default_rng(11)
X = RNG.standard_normal((5, 4))


class TwoLayerNet:
    """cs231n's TwoLayerNet.loss as written there: the weights in self.params, the L2 penalty
    and its gradient computed with NumPy beside the traced products."""

    def __init__(self):
        self.params = {"W1": RNG.standard_normal((4, 3)), "W2": RNG.standard_normal((3, 2))}

    def loss(self, x, reg):
        W1, W2 = self.params["W1"], self.params["W2"]
        h = np.maximum(x.dot(W1), 0)
        scores = h.dot(W2)
        loss = 0.5 * np.sum(scores ** 2) + reg * np.sum(W1 * W1)  # (W2 not regularized)
        dW1 = x.T.dot((scores.dot(W2.T)) * (h > 0)) + 2 * reg * W1
        return loss, dW1


def test_an_l2_penalty_numpy_computes_from_live_weights_follows_their_updates(monkeypatch, capsys):
    monkeypatch.setenv("GRADC_LOG", "compiles")
    net = TwoLayerNet()
    loss = gradc.jit(net.loss)
    for step in range(3):
        (got, got_dW1), (want, want_dW1) = loss(X, 0.5), net.loss(X, 0.5)
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=f"step {step}")
        np.testing.assert_allclose(got_dW1, want_dW1, rtol=1e-12, err_msg=f"step {step}")
        net.params["W1"] -= 0.1 * want_dW1  # (the Solver's in-place SGD)
    np.testing.assert_allclose(loss(X, 0.5)[0], net.loss(X, 0.5)[0], rtol=1e-12)
    log = capsys.readouterr().err
    assert log.count("compiled jit(loss)") == 4
    assert "`self.params['W1']` (float64[4, 3], compiled in: the trace read it with NumPy alone)" \
        " changed" in log
    # W2 meets only traced values: read live, its contents not checked (no trace again)
    for _ in range(3):
        net.params["W2"] *= 0.9
        np.testing.assert_allclose(loss(X, 0.5)[0], net.loss(X, 0.5)[0], rtol=1e-12)
    assert capsys.readouterr().err.count("compiled jit(loss)") == 0
    net.params["W1"] = net.params["W1"] + 1.0  # (a new array of the same shape: checked too)
    np.testing.assert_allclose(loss(X, 0.5)[0], net.loss(X, 0.5)[0], rtol=1e-12)


def test_gradients_and_train_steps_see_what_numpy_computes_from_outside_arrays():
    shift = RNG.standard_normal((5, 2))  # (a global the loss reads live and with NumPy)

    def loss(w, x):
        return np.sum((x @ w + shift) ** 2) + np.sum(shift * shift) * np.sum(w)

    def reference(w, x):
        return 2 * x.T @ (x @ w + shift) + np.sum(shift * shift)

    grad = gradc.grad(loss)
    w = RNG.standard_normal((4, 2))
    for _ in range(3):
        np.testing.assert_allclose(grad(w, X), reference(w, X), rtol=1e-12)
        shift *= 1.5
    step = gradc.train_step(loss, gradc.optim.SGD(lr=0.01))
    params = w.copy()
    for _ in range(3):
        want = params - 0.01 * reference(params, X)
        step(params, X)
        np.testing.assert_allclose(params, want, rtol=1e-12)
        shift += 0.25


def test_a_normalization_numpy_computes_is_seen_though_its_scale_is_not():
    """W / norm(W) is the same for any scale of W: the contents are changed in direction too."""
    table = RNG.standard_normal((3, 4))

    def f(x):
        unit = table / np.linalg.norm(table)  # NumPy alone: compiled in
        return np.sum(x @ table.T) + np.sum(x @ unit.T)

    jf = gradc.jit(f)
    for _ in range(3):
        np.testing.assert_allclose(jf(X), f(X), rtol=1e-12)
        table[0] *= -3.0


def test_code_that_refuses_other_contents_keeps_them_checked():
    """A trace that raises on other contents (an assertion on a NumPy value) counts as a
    program that depends on them."""
    probs = np.full(4, 0.25)

    def f(x):
        assert abs(probs.sum() - 1.0) < 1e-9, "probabilities must sum to 1"
        return x @ probs + np.log(probs).sum()

    jf = gradc.jit(f)
    np.testing.assert_allclose(jf(X), f(X), rtol=1e-12)
    probs[:] = [0.1, 0.2, 0.3, 0.4]
    np.testing.assert_allclose(jf(X), f(X), rtol=1e-12)
    probs[0] = 0.5
    with pytest.raises(AssertionError, match="must sum to 1"):
        jf(X)


def test_outside_arrays_are_changed_back_to_their_exact_bits():
    """NaN payloads, -0.0, infinities, subnormals, Fortran order, float32; values within a factor
    4 of overflow and read-only arrays are not changed at all."""
    tiny = np.finfo(np.float64).tiny
    special = np.array([np.nan, -0.0, np.inf, -np.inf, tiny / 8, 1e300, -2.5, 3.0])
    weights = np.asfortranarray(RNG.standard_normal((4, 3)))
    single = RNG.standard_normal((3, 4)).astype(np.float32)
    huge = np.array([np.finfo(np.float64).max / 2, 1.0, 2.0, 3.0])
    frozen_view = RNG.standard_normal(4)
    frozen_view.flags.writeable = False
    arrays = [special, weights, single, huge, frozen_view]
    before = [a.tobytes() for a in arrays]

    def f(x):
        y = x @ weights @ single.astype(np.float64) + huge + frozen_view
        return y, np.sum(x) * special + np.sum(weights * weights)

    jf = gradc.jit(f)
    for got, want in zip(jf(X), f(X)):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    assert [a.tobytes() for a in arrays] == before
    assert weights.flags.f_contiguous and np.signbit(special[1])
    weights[0, 0] += 1.0  # (they were changed and changed back: NumPy's read of them counts)
    np.testing.assert_allclose(jf(X)[1], f(X)[1], rtol=1e-12)


def test_a_program_that_differs_on_every_trace_is_no_sign_of_numpy_reads(monkeypatch, capsys):
    """A constant the trace reads from the clock makes another program on each trace: that is
    not a dependence on the weights, whose updates then trace nothing again."""
    monkeypatch.setenv("GRADC_LOG", "compiles")
    W = RNG.standard_normal((4, 2))

    def f(x):
        return x @ W + 0.0 * time.perf_counter()

    jf = gradc.jit(f)
    for _ in range(3):
        np.testing.assert_allclose(jf(X), X @ W)
        W *= 2.0
    assert capsys.readouterr().err.count("compiled jit(f)") == 1


def test_runs_in_other_threads_never_see_the_arrays_changed():
    """While one thread traces new signatures (changing the arrays they read for a moment),
    others run a compiled function that reads the same weights live: those runs wait, and their
    results stay right."""
    model = TwoLayerNet()
    W1, W2 = model.params["W1"], model.params["W2"]
    forward = gradc.jit(lambda x: np.maximum(x.dot(W1), 0).dot(W2))
    want = np.maximum(X.dot(W1), 0).dot(W2)
    np.testing.assert_allclose(forward(X), want, rtol=1e-12)
    done = threading.Event()

    def run():
        while not done.is_set():
            np.testing.assert_allclose(forward(X), want, rtol=1e-12)

    def penalized(x):  # (long to trace: the arrays stay changed a while)
        for _ in range(30):
            x = np.tanh(x.dot(W1) @ W1.T)
        return x + np.sum(W1 * W1)

    errors = []
    runner = threading.Thread(target=lambda: errors.extend(errors_in_threads(run, 2)))
    runner.start()
    try:
        for n in range(2, 8):
            gradc.jit(penalized)(RNG.standard_normal((n, 4)))
    finally:
        done.set()
        runner.join()
    assert errors == []
