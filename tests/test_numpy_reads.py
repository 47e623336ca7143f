"""Outside arrays NumPy reads alone (gradc/capture.py `read_by_numpy`): a compiled function reads
an array from outside its arguments live where it meets a traced value (`X.dot(self.W)`), but
what NumPy computes from it alone (`reg * np.sum(W * W)`) is compiled in. The trace is run again
with those arrays' contents changed; where the program changes, their contents are checked on
every call, so a training loop that updates them sees the new values (it was silently stale:
cs231n's and nnfs's L2 penalty kept the first weights' value). The arrays are changed back
exactly, and runs of compiled programs that read them wait meanwhile."""
import collections
import json
import pickle
import threading
import time
import types
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
    # (the trace after W1 changed reads it live, NumPy's L2 penalty too: gradc/live.py; it
    # traced again on every step before)
    assert log.count("compiled jit(loss)") == 2
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
    """NaN payloads (a signalling NaN too), -0.0, infinities, subnormals, values near overflow,
    Fortran order, float32: put back from a copy; read-only arrays are not changed at all."""
    tiny = np.finfo(np.float64).tiny
    special = np.array([np.nan, -0.0, np.inf, -np.inf, tiny / 8, 1e300, -2.5, 3.0])
    special.view(np.uint64)[6] = 0x7FF0000000000001  # (a signalling NaN: multiplied, quiet)
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
    with np.errstate(invalid="ignore"):  # (the signalling NaN, multiplied)
        for got, want in zip(jf(X), f(X)):
            np.testing.assert_allclose(got, want, rtol=1e-12)
        assert [a.tobytes() for a in arrays] == before
        assert weights.flags.f_contiguous and np.signbit(special[1])
        weights[0, 0] += 1.0  # (changed and changed back: NumPy's read of them counts)
        np.testing.assert_allclose(jf(X)[1], f(X)[1], rtol=1e-12)


def test_a_program_that_differs_on_every_trace_keeps_the_weights_checked():
    """fuzz43b: a constant the trace reads from the clock makes another program on each trace;
    the probe gave up there, and an L2 penalty beside it went stale. Every array tried counts
    then (checked: traced again as they change, right)."""
    W = RNG.standard_normal((4, 2))

    def f(x):
        jitter = 1e-12 * (time.perf_counter() % 1.0)  # (compiled in: read when traced)
        return x @ W + jitter + np.sum(W * W)

    jf = gradc.jit(f)
    for _ in range(3):
        np.testing.assert_allclose(jf(X), f(X), rtol=0, atol=1e-9)
        W *= 2.0


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


class Clipped:
    """A max-norm scale and a divergence check computed with NumPy alone, and effects in the
    branch the check guards (a learning rate halved, a flag, a log), as a user writes them."""

    def __init__(self):
        self.W = RNG.standard_normal((4, 3))
        self.lr, self.diverged, self.events = 0.1, False, []

    def loss(self, x):
        scale = min(1.0, 10.0 / np.linalg.norm(self.W))  # (1 until the weights grow)
        if np.abs(self.W).max() > 100.0:  # (never, on these weights)
            self.lr *= 0.5
            self.diverged = True
            self.events.append("diverged")
            print("weights diverged")
        return np.sum((x @ self.W) ** 2) * scale


def test_thresholds_numpy_computes_and_the_effects_of_branches_not_taken(capsys):
    """A scale that stays 1 on small changes (min(1, c / norm(W))) is found by large ones; the
    branch the changed contents take has its effects put back, and prints nothing."""
    m = Clipped()
    loss = gradc.jit(m.loss)
    np.testing.assert_allclose(loss(X), m.loss(X), rtol=1e-12)
    assert (m.lr, m.diverged, m.events) == (0.1, False, [])
    assert "diverged" not in capsys.readouterr().out
    m.W *= 10.0  # (past the max norm)
    np.testing.assert_allclose(loss(X), m.loss(X), rtol=1e-12)


def test_code_that_exits_or_never_ends_on_other_contents_counts_them():
    """A sys.exit on contents the weights never have, and a loop that ends at once on the
    weights and never on other contents, mean the contents count: the probe stops at its time
    limit (2 s at least) and the compile goes on."""
    P = np.full((3, 3), 0.5)
    Q = np.full((3, 3), 0.5)

    def exits(x):
        if np.abs(P).max() > 1.0:
            raise SystemExit("bad weights")
        return x @ P + np.sum(P)

    def waits(x):
        while np.any(Q < 0):  # (never on these weights)
            pass
        return x @ Q + np.sum(Q)

    x = RNG.standard_normal(3)
    for f, W in ((exits, P), (waits, Q)):
        jf = gradc.jit(f)
        np.testing.assert_allclose(jf(x), f(x), rtol=1e-12)
        W[0, 0] = 0.25
        np.testing.assert_allclose(jf(x), f(x), rtol=1e-12)


def test_memory_numpy_does_not_own_is_probed_and_a_files_never_written(tmp_path):
    """Weights in a bytearray (pickle protocol 5's buffers, torch's .numpy()) are probed and put
    back; a memmap's pages are never written (its file keeps its bytes)."""
    buf = bytearray(RNG.standard_normal(12).tobytes())
    W = np.frombuffer(buf, dtype=np.float64).reshape(4, 3)
    path = tmp_path / "w.bin"
    RNG.standard_normal(12).tofile(path)
    M = np.memmap(path, dtype=np.float64, mode="r+", shape=(4, 3))
    before = path.read_bytes()

    def f(x):
        return x @ W + x @ M + np.sum(W * W)

    jf = gradc.jit(f)
    np.testing.assert_allclose(jf(X), f(X), rtol=1e-12)
    W *= 2.0
    np.testing.assert_allclose(jf(X), f(X), rtol=1e-12)
    del M
    assert path.read_bytes() == before


def test_a_branch_the_first_trace_did_not_take_is_not_run(monkeypatch):
    """fuzz43b: the trace on changed contents follows the first one's lines (frozen.following)
    and stops where it would leave them, before that line runs: a draw from NumPy's global
    generator, an environment flag and np.seterr in a branch only those contents take are not
    done (the draw advanced the user's random state, the flag and the error mode stayed)."""
    W = RNG.standard_normal((4, 2)) * 0.01
    monkeypatch.delenv("GRADC_TEST_DIVERGED", raising=False)

    def f(x):
        if np.abs(W).max() > 1.0:  # (never, on these weights)
            import os
            os.environ["GRADC_TEST_DIVERGED"] = "1"
            np.seterr(over="raise")
            np.random.standard_normal()
        return x @ W

    state = np.random.get_state()[1].copy()
    errors = np.geterr()
    np.testing.assert_allclose(gradc.jit(f)(X), X @ W)
    assert np.array_equal(np.random.get_state()[1], state)
    assert np.geterr() == errors and "GRADC_TEST_DIVERGED" not in __import__("os").environ


def test_a_training_loop_traces_again_once_per_step_with_two_probes(monkeypatch):
    """fuzz43b: each weight an L2 penalty reads was found anew by halving on every step's trace
    (16 layers: 31 traces, 2.4 s a step); those found before are tried together now, and the
    finding is capped (capture.PROBE_TRACES)."""
    from gradc import capture
    traces = []
    within = capture._within
    monkeypatch.setattr(capture, "_within", lambda call, s: traces.append(1) or within(call, s))
    Ws = [RNG.standard_normal((4, 4)) * 0.1 for _ in range(16)]

    def loss(x):
        for W in Ws:
            x = np.tanh(x @ W)
        return np.sum(x ** 2) + 1e-3 * sum(np.sum(W * W) for W in Ws)

    f = gradc.jit(loss)
    np.testing.assert_allclose(f(X), loss(X), rtol=1e-12)
    assert len(traces) <= capture.PROBE_TRACES
    for W in Ws:
        W *= 0.9
    traces.clear()
    np.testing.assert_allclose(f(X), loss(X), rtol=1e-12)
    assert len(traces) <= 2


class Recorded:
    """A branch the weights never take whose first statements call nothing: a class counter
    and a store into a record of over 4096 elements, before a log call."""
    clipped = 0

    def __init__(self):
        self.W = np.linspace(-2.0, 2.0, 12).reshape(4, 3)
        self.record = np.zeros(5000)

    def loss(self, x):
        if np.linalg.norm(self.W) > 10.0:
            Recorded.clipped += 1
            self.record[0] = 1.0
            print("clipped")
        return np.sum(np.tanh(x @ self.W)) + 0.1 * np.sum(self.W * self.W)


def test_what_a_branch_not_taken_does_before_its_first_call_is_put_back():
    """fuzz43b: the trace on other contents stops at the first call the first trace did not make
    (frozen.following, from the profile hook); what it did before, a class attribute and an
    outside array over 4096 elements written, is put back (both stayed changed)."""
    m = Recorded()
    np.testing.assert_allclose(gradc.jit(m.loss)(X), m.loss(X), rtol=1e-12)
    assert Recorded.clipped == 0 and not m.record.any()


def test_a_bare_except_around_the_branch_and_another_profiler_keep_the_weights_checked():
    """fuzz43c: a bare `except:` took the probe's Diverged and the program looked the same (W
    unchecked, stale once it grew); under another profiler (cProfile) the probe did not run at
    all (stale). Both count now; what the branch did before its call is put back (a value
    stored with setattr, a scalar draw from NumPy's generator)."""
    import cProfile
    W = RNG.standard_normal((4, 2)) * 0.01
    U = RNG.standard_normal((4, 2)) * 0.01
    state = {}

    def f(x):
        damp = 1.0
        try:
            if np.abs(W).max() > 1.0:
                damp = min(0.5, damp)
        except:  # noqa: E722 - (the user's)
            pass
        return x @ W * damp

    def g(x):
        if np.abs(U).max() > 1.0:  # (never: U stays small)
            setattr(g, "note", "big")
            state["draw"] = np.random.standard_normal()
        return x @ U

    before = np.random.get_state()[1].copy()
    jf, jg = gradc.jit(f), gradc.jit(g)
    np.testing.assert_allclose(jf(X), f(X), rtol=1e-12)
    np.testing.assert_allclose(jg(X), g(X), rtol=1e-12)
    assert np.array_equal(np.random.get_state()[1], before)
    assert not hasattr(g, "note") and state == {}
    W *= 1000.0
    np.testing.assert_allclose(jf(X), f(X), rtol=1e-12)
    V = RNG.standard_normal((4, 2))
    g = gradc.jit(lambda x: x @ V + np.sum(V * V))
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        np.testing.assert_allclose(g(X), X @ V + np.sum(V * V), rtol=1e-12)
        V += 1.0
        np.testing.assert_allclose(g(X), X @ V + np.sum(V * V), rtol=1e-12)
    finally:
        profiler.disable()


class SelfParams:
    """A model keeping its parameters in self.params and passing that dict to its train step."""

    def __init__(self, reg):
        self.params, self.reg = {"W": np.ones((4, 8)) * 0.1, "b": np.zeros(8)}, reg

    def loss(self, p, x):
        hidden = self.params["W"].shape[1]  # (its shape only, through self)
        penalty = self.reg * np.sum(self.params["W"] ** 2)  # (its values, by NumPy alone)
        return np.mean((x @ p["W"] + p["b"]) ** 2) / hidden + penalty


def test_arrays_that_are_arguments_too_are_checked_only_where_numpy_reads_them(monkeypatch,
                                                                            capsys):
    """fuzz43d: an argument also read through self (its shape: self.params["W"].shape[1]) was
    checked by contents, so every train step traced again; now it is probed (read_by_numpy),
    and checked only where NumPy alone reads its values (an L2 penalty through self)."""
    monkeypatch.setenv("GRADC_LOG", "compiles")
    x = np.ones((5, 4))
    for reg in (0.0, 0.5):
        m, reference = SelfParams(reg), SelfParams(reg)
        step = gradc.train_step(m.loss, gradc.optim.SGD(lr=0.1))
        for _ in range(4):
            want_loss = reference.loss(reference.params, x)  # (NumPy's)
            grads = gradc.grad(reference.loss)(reference.params, x)
            want = {k: reference.params[k] - 0.1 * grads[k] for k in grads}
            np.testing.assert_allclose(step(m.params, x), want_loss, rtol=1e-12)
            for k in want:
                np.testing.assert_allclose(m.params[k], want[k], rtol=1e-12)
                reference.params[k][...] = want[k]
        compiles = capsys.readouterr().err.count("compiled train_step(loss)")
        assert compiles == 1 if reg == 0.0 else compiles > 1


def test_the_probes_log_records_are_not_shown(caplog):
    """fuzz43c: a loss that logs a statistic of its weights logged it twice per compile, the
    second time for the changed contents (`weight norm 1337.9` after the true 2.55): a handler
    holds its own stream, which hiding stdout did not reach."""
    import logging
    W = np.linspace(-1.0, 1.0, 8).reshape(4, 2)
    log = logging.getLogger("gradc_test_probe")

    def f(x):
        log.warning("weight norm %.3f", np.linalg.norm(W))
        return x @ W + np.sum(W * W)

    with caplog.at_level(logging.WARNING, logger="gradc_test_probe"):
        np.testing.assert_allclose(gradc.jit(f)(X), f(X), rtol=1e-12)
    assert {r.getMessage() for r in caplog.records} == {f"weight norm {np.linalg.norm(W):.3f}"}


def test_np_take_of_a_table_numpy_computes_from_outside_counts_follows_them():
    """makemore's bigram: P = N / N.sum(1) of an outside count table, then its entries at the
    traced pairs, by np.take (NumPy dispatches on the table alone: gradc's take reads it) and
    by NumPy's indexing (gradc/subscript.py)."""
    counts = {"small": np.arange(1.0, 17.0).reshape(4, 4),
              "large": RNG.integers(1, 9, (70, 70)).astype(float)}  # (> 4096: probed)

    def nll(xs, ys, key):
        N = counts[key]
        P = N / N.sum(1, keepdims=True)
        rows = np.take(P, xs, axis=0)
        return (-np.log(rows[np.arange(len(xs)), ys]).mean() - np.log(P[xs, ys]).sum()
                + np.take(a=P, indices=ys, mode="clip").sum())

    xs, ys = np.array([0, 1, 2, 3]), np.array([1, 2, 3, 0])
    f = gradc.jit(nll)  # (a string argument is part of the signature)
    for key in ("small", "large"):
        for _ in range(3):
            np.testing.assert_allclose(f(xs, ys, key), nll(xs, ys, key), rtol=1e-13)
            counts[key][xs, ys] += 5.0  # (the counts grow as the data is read)


def test_trained_weights_found_beside_frozen_ones_numpy_reads_stop_tracing_again(monkeypatch,
                                                                                 capsys):
    """fuzz43c: eight trained A beside eight frozen B that NumPy also reads alone, in turn: the
    probe's cap on traces made whole groups count, so the A's were checked and every SGD step
    traced again. A trace again takes those found before as found, and tries the ones that
    changed together: the A's are let go at the first retrace."""
    monkeypatch.setenv("GRADC_LOG", "compiles")
    rng = np.random.default_rng(0)

    class Net:
        def __init__(self):
            self.A = [rng.standard_normal((4, 4)) * 0.3 for _ in range(8)]  # trained
            self.B = [rng.standard_normal((4, 4)) * 0.3 for _ in range(8)]  # frozen

        def loss(self, x):
            h = x
            for A, B in zip(self.A, self.B):
                h = np.tanh(h @ A) @ B / np.abs(B).sum()
            return np.sum(h * h)

    net, x = Net(), rng.standard_normal((3, 4))
    loss = gradc.jit(net.loss)
    for _ in range(8):
        assert loss(x) == pytest.approx(Net.loss(net, x), rel=1e-12)
        for A in net.A:
            A -= 0.01 * np.sign(A)
    assert capsys.readouterr().err.count("compiled jit(loss)") <= 2
    net.B[3] *= 2.0  # (a frozen one changed after all: its contents were checked)
    assert loss(x) == pytest.approx(Net.loss(net, x), rel=1e-12)


def test_what_numpy_stores_outside_from_outside_arrays_follows_them():
    """fuzz43b: `self.col_norms = np.linalg.norm(self.W, axis=0)`, a monitoring statistic of a
    W over 4096 elements read live by the traced product: the probe compared programs only, and
    the store is in none, so the statistic kept the first W's."""
    class Net:
        def __init__(self):
            self.W = np.linspace(-1, 1, 4900).reshape(70, 70)
            self.col_norms = None

        def loss(self, x):
            self.col_norms = np.linalg.norm(self.W, axis=0)
            return np.sum(np.tanh(x @ self.W))

    net, x = Net(), np.ones((2, 70))
    loss = gradc.jit(net.loss)
    for _ in range(3):
        assert loss(x) == pytest.approx(np.sum(np.tanh(x @ net.W)), rel=1e-12)
        np.testing.assert_allclose(net.col_norms, np.linalg.norm(net.W, axis=0), rtol=1e-13)
        net.W *= 1.1


def test_state_the_function_writes_back_and_numpy_reads_stops_tracing_again(monkeypatch, capsys):
    """A batch norm's `self.rm = 0.9 * self.rm + 0.1 * mu`, ML-From-Scratch's momentum
    `self.w_updt = m * self.w_updt + (1 - m) * g`: NumPy alone computes `0.9 * self.rm`, so the
    array the compiled function wrote back after a call was compiled in by the next trace, and
    every step traced again (25 compiles in 30 steps; 65 ms a step, NumPy's 0.3). A trace after
    such a call reads those arrays live (gradc/live.py); nothing the user keeps changes type."""
    monkeypatch.setenv("GRADC_LOG", "compiles")

    class BatchNorm:
        def __init__(self):
            self.rm, self.rv, self.W = np.zeros(3), np.ones(3), np.eye(3)
            self.stats = {}

        def forward(self, x):
            h = x @ self.W
            mu, var = h.mean(0), h.var(0)
            self.rm = 0.9 * self.rm + 0.1 * mu
            self.rv = 0.9 * self.rv + 0.1 * var
            self.stats["mu"] = mu  # (a metrics dict, written and never read: fuzz44e)
            return np.sum((h - mu) / np.sqrt(var + 1e-5))

    model, reference = BatchNorm(), BatchNorm()
    forward = gradc.jit(model.forward)
    for _ in range(12):
        x = RNG.standard_normal((4, 3))
        assert forward(x) == pytest.approx(reference.forward(x), rel=1e-12)
        np.testing.assert_allclose(model.rm, reference.rm, rtol=1e-13)
        np.testing.assert_allclose(model.rv, reference.rv, rtol=1e-13)
        assert type(model.rm) is np.ndarray
        np.testing.assert_allclose(model.stats["mu"], (x @ model.W).mean(0), rtol=1e-13)
    assert capsys.readouterr().err.count("compiled jit(forward)") <= 3


def test_caches_another_function_writes_are_read_live_by_a_hand_written_backward(monkeypatch,
                                                                                   capsys):
    """A deeplearning.ai-style network: forward stores its activations in `self.caches[f"A{l}"]`
    (a jitted function of its own), backward reads them (`1 - A ** 2` with NumPy alone) and
    stores `self.grads[f"dW{l}"]`, the update is NumPy's. The caches, new arrays each step, were
    compiled in, and backward traced again on every step (30 ms a step): the trace after one
    changed reads them live, and those it read live stay so in the traces after."""
    monkeypatch.setenv("GRADC_LOG", "compiles")

    class Net:
        def __init__(self):
            self.params = {"W1": np.full((3, 3), 0.3), "W2": np.full((3, 3), 0.2)}
            self.caches, self.grads = {}, {}

        def forward(self, X):
            A = X
            self.caches["A0"] = X
            for layer in (1, 2):
                A = np.tanh(A @ self.params[f"W{layer}"])
                self.caches[f"A{layer}"] = A
            return A

        def backward(self, Y):
            dA = self.caches["A2"] - Y
            for layer in (2, 1):
                dZ = dA * (1 - self.caches[f"A{layer}"] ** 2)
                self.grads[f"dW{layer}"] = self.caches[f"A{layer - 1}"].T @ dZ
                dA = dZ @ self.params[f"W{layer}"].T
            return dA

        def update(self, lr):
            for layer in (1, 2):
                self.params[f"W{layer}"] -= lr * self.grads[f"dW{layer}"]

    net, reference = Net(), Net()
    forward, backward = gradc.jit(net.forward), gradc.jit(net.backward)
    for _ in range(12):
        X, Y = RNG.standard_normal((4, 3)), RNG.standard_normal((4, 3))
        np.testing.assert_allclose(forward(X), reference.forward(X), rtol=1e-13)
        np.testing.assert_allclose(backward(Y), reference.backward(Y), rtol=1e-12)
        for key in ("dW1", "dW2"):
            np.testing.assert_allclose(net.grads[key], reference.grads[key], rtol=1e-12)
        net.update(0.1)
        reference.update(0.1)
    log = capsys.readouterr().err
    assert log.count("compiled jit(backward)") <= 4 and log.count("compiled jit(forward)") <= 4


@pytest.mark.parametrize("case", ["traced", "numpy", "method"])
def test_state_in_a_closure_or_read_by_a_method_stops_tracing_again(case, monkeypatch, capsys):
    """A running mean kept in a closure (`nonlocal running_mean`), rebound on every call: read by
    a traced operation, it traced again on every call all the same (the frame's own name for the
    array was taken as a second way to it that must not change); read with NumPy alone (`0.9 *
    running_mean`), it was compiled in. A batch norm's `self.rm.mean()` (a method, NumPy's
    np.mean) was compiled in. All traced again on every call; now at most twice."""
    monkeypatch.setenv("GRADC_LOG", "compiles")

    def make():
        running_mean, model = np.zeros(3), types.SimpleNamespace(rm=np.zeros(3))

        def step(x):
            nonlocal running_mean
            if case == "traced":
                running_mean = running_mean + 0.1 * x.mean(0)
                return x - running_mean
            if case == "numpy":
                running_mean = 0.9 * running_mean + 0.1 * x.mean(0)
                return x - x.mean(0)
            drift = model.rm.mean()
            model.rm = 0.9 * model.rm + 0.1 * x.mean(0)
            return x - drift
        return step, lambda: running_mean if case != "method" else model.rm

    (step, state), (reference, reference_state) = make(), make()
    compiled = gradc.jit(step)
    for i in range(10):
        x = RNG.standard_normal((2, 3)) + i
        np.testing.assert_allclose(compiled(x), reference(x), rtol=1e-13)
        np.testing.assert_allclose(state(), reference_state(), rtol=1e-13)
        assert type(state()) is np.ndarray
    assert capsys.readouterr().err.count("compiled jit(step)") <= 2


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_numpy_scalar_the_function_keeps_on_the_model_stays_numpys(dtype):
    """`self.smooth = 0.9 * self.smooth + 0.1 * loss` (a smoothed loss on the model): NumPy's
    code leaves a NumPy scalar there, which `isinstance(x, float)` and json take as a float.
    It is compiled in and traced again on every call (a RecompileWarning): reading it as a
    0-d array instead answered those checks otherwise (fuzz45a)."""
    class Model:
        def __init__(self):
            self.smooth, self.log = 0.0, ""

        def loss(self, x):
            loss = (x ** 2).mean()
            self.log = json.dumps({"smooth": float(self.smooth)})
            scale = 2.0 if isinstance(self.smooth, float) else 1.0
            self.smooth = 0.9 * self.smooth + 0.1 * loss
            return loss * scale

    model, reference = Model(), Model()
    loss = gradc.jit(model.loss)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gradc.RecompileWarning)
        for i in range(6):
            x = np.full(3, i + 1.0, dtype)
            assert loss(x) == reference.loss(x)
            assert type(model.smooth) is type(reference.smooth)
            assert model.smooth == pytest.approx(reference.smooth, rel=1e-6)
            assert model.log == reference.log


@pytest.mark.parametrize("case", ["tied", "type", "tuple", "namedtuple", "slots", "pickle",
                                  "method"])
def test_code_around_an_array_read_live_sees_numpys_objects(case):
    """fuzz45a, on the arrays a trace reads live after they changed (gradc/live.py): tied
    weights (`if m.W_out is m.W_in`) were two views, untied; `type(m.W) is np.ndarray` took the
    other branch, compiled in for good (such code is traced without the views); `m.prev =
    (m.W, 1)` kept a view, or was refused; `keep.w = m.W` into __slots__, a pickle of m.W, a
    kept `m.W.sum` held gradc's view after the call."""
    class Keep:
        __slots__ = ("w",)

    Cache = collections.namedtuple("Cache", "W step")
    W = np.linspace(-1, 1, 6).reshape(2, 3)

    def make():
        m = types.SimpleNamespace(W=W.copy(), keep=Keep(), prev=None, held=None)
        m.W_in = m.W_out = m.W

        def f(x):
            if case == "tied":
                scale = 1.0 if m.W_out is m.W_in else 10.0
            elif case == "type":
                scale = 1.0 if type(m.W) is np.ndarray else 10.0
            else:
                scale = 1.0
            if case == "tuple":
                m.prev = (m.W, 1)
            elif case == "namedtuple":
                m.prev = Cache(m.W, 1)
            elif case == "slots":
                m.keep.w = m.W
            elif case == "pickle":
                m.held = pickle.loads(pickle.dumps(m.W))
            elif case == "method":
                m.held = m.W.sum
            return x * (1 - m.W ** 2) * scale
        return f, m

    (f, m), (reference, m_reference) = make(), make()
    compiled = gradc.jit(f)
    x = np.ones((2, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gradc.RecompileWarning)
        for _ in range(5):
            np.testing.assert_allclose(compiled(x), reference(x), rtol=1e-14)
            held = {"tuple": lambda: m.prev[0], "namedtuple": lambda: m.prev.W,
                    "slots": lambda: m.keep.w,
                    "pickle": lambda: m.held, "method": lambda: m.held.__self__}.get(case)
            if held is not None:
                assert type(held()) is np.ndarray
            if case in ("tuple", "namedtuple"):
                assert m.prev[0] is m.W and m.prev[1] == 1 and type(m.prev) is type(m_reference.prev)
            m.W += 0.1
            m_reference.W += 0.1


@pytest.mark.parametrize("case", ["where", "threshold", "layer type", "argument type"])
def test_a_running_mean_stays_live_beside_other_outside_arrays_that_change(case, monkeypatch,
                                                                           capsys):
    """fuzz45a: a running mean written back (read live from the second trace on) beside an
    outside array changed once: `np.where(x > 0, m.scale, 0.0)` of it asked np.result_type of a
    traced value (refused), and a Python decision on one, `if m.clip.max() > 2`, is refused;
    either made the function trace without live arrays from then on, the running mean
    compiled in again: a trace on every call. Now the dtype question is NumPy's, and a
    refusal keeps the arrays the function writes back live. Code asking a layer's type
    (`type(layer) is Dropout`) asks nothing of an array: read live too."""
    monkeypatch.setenv("GRADC_LOG", "compiles")

    def make():
        m = types.SimpleNamespace(rm=np.zeros(3), scale=np.ones(3), clip=np.array([5.0]),
                                  layer=types.SimpleNamespace())

        def f(x):
            m.rm = 0.9 * m.rm + 0.1 * x.mean(0)
            if case == "where":
                return np.where(x > 0, m.scale, 0.0) * (x - m.rm)
            if case == "layer type":
                return (x - m.rm) * (2.0 if type(m.layer) is types.SimpleNamespace else 1.0)
            if case == "argument type":
                if type(x) is not np.ndarray:
                    x = np.asarray(x)
                return x - m.rm
            return (x - m.rm) * (1.0 if m.clip.max() > 2 else 0.5)
        return f, m

    (f, m), (reference, m_reference) = make(), make()
    compiled = gradc.jit(f)
    for i in range(12):
        x = RNG.standard_normal((4, 3))
        np.testing.assert_allclose(compiled(x), reference(x), rtol=1e-13)
        np.testing.assert_allclose(m.rm, m_reference.rm, rtol=1e-13)
        if i == 3:
            m.scale, m.clip = m.scale * 2.0, np.array([1.0])
            m_reference.scale, m_reference.clip = m_reference.scale * 2.0, np.array([1.0])
    assert capsys.readouterr().err.count("compiled jit(f)") <= 4


def test_python_decisions_on_an_array_read_live_are_still_checked():
    """An array read live after it changed (gradc/live.py) whose values Python also reads,
    `2.0 if m.t[0] > 1 else 1.0` beside `np.sum(m.t)`: the branch is compiled in, and the
    array, read by a traced operation, had no check of its contents left: the branch stayed
    when t[0] fell below 1."""
    m = types.SimpleNamespace(t=np.array([3.0, 1.0]))

    def f(x):
        k = 2.0 if m.t[0] > 1 else 1.0
        return x * k * np.sum(m.t)

    compiled = gradc.jit(f)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gradc.RecompileWarning)
        for value in (3.0, 4.0, 5.0, 0.5, 0.25, 2.0):
            m.t[0] = value
            np.testing.assert_allclose(compiled(np.ones(2)), f(np.ones(2)), rtol=1e-15)


@pytest.mark.parametrize("form", ["deepcopy", "np.array", "asarray times one", "astype",
                                  "slice times one", "sorted max"])
def test_what_numpy_keeps_of_an_array_read_live_follows_it(form):
    """fuzz45b: a snapshot or a log of the weights kept on the model with NumPy alone
    (`copy.deepcopy(self.W)`, `np.array(self.W)`, `np.sort(self.W.ravel())[-1]`...), the
    weights updated between calls: once W was read live (gradc/live.py) the retrace that
    made the same program stopped checking it, and the kept values went stale."""
    import copy
    forms = {"deepcopy": copy.deepcopy, "np.array": np.array,
             "asarray times one": lambda W: np.asarray(W) * 1.0,
             "astype": lambda W: W.astype(np.float64), "slice times one": lambda W: W[:, :] * 1.0,
             "sorted max": lambda W: np.sort(W.ravel())[-1]}

    class Model:
        def __init__(self):
            self.W, self.kept = np.arange(6.0).reshape(3, 2) * 0.1, None

        def step(self, x):
            g = x.T @ (x @ self.W)
            self.kept = forms[form](self.W)
            return g

    model, reference = Model(), Model()
    step = gradc.jit(model.step)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gradc.RecompileWarning)
        for i in range(5):
            x = np.random.default_rng(i).standard_normal((4, 3))
            g, want = step(x), reference.step(x)
            np.testing.assert_allclose(g, want, rtol=1e-12)
            np.testing.assert_allclose(model.kept, reference.kept, rtol=1e-12)
            model.W -= 0.05 * g
            reference.W -= 0.05 * want


@pytest.mark.parametrize("case", ["weight decay over a list", "cache beside an alias"])
def test_an_array_read_through_another_name_is_read_live_there_too(case, monkeypatch, capsys):
    """fuzz45b: a changed array is made a Live view where it was checked (`self.W`), and read
    with NumPy through another holder (`for p in self.params: p -= lr * (g + wd * p)`, the
    same array as self.W; `1 - self.h ** 2` of the array also held as `l2.cache[0]`): it was
    compiled in there, and the step traced again on every call. Every dict and list holding
    the array now holds the view while the trace runs."""
    monkeypatch.setenv("GRADC_LOG", "compiles")

    class Model:
        def __init__(self):
            self.W = np.arange(6.0).reshape(3, 2) * 0.1
            self.params = [self.W]
            self.h, self.cache = None, None

        def step(self, x):
            if case == "weight decay over a list":
                g = x.T @ (x @ self.W)
                for p in self.params:
                    p -= 0.05 * (g + 0.01 * p)
                return g.sum()
            return np.sum((1 - self.h ** 2) * (x @ self.cache[0].T)[:, :3])

    model, reference = Model(), Model()
    step = gradc.jit(model.step)
    for i in range(8):
        x = np.random.default_rng(i).standard_normal((4, 3))
        if case == "cache beside an alias":  # (a NumPy forward between the steps)
            for m in (model, reference):
                m.h = np.tanh(x @ m.W @ m.W.T)
                m.cache = (m.h, 1)
        assert step(x) == pytest.approx(reference.step(x), rel=1e-12)
        np.testing.assert_allclose(model.W, reference.W, rtol=1e-12)
        assert model.params[0] is model.W
    assert capsys.readouterr().err.count("compiled jit(step)") <= 3
