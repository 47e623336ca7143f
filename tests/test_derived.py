"""What NumPy computes from arrays outside the arguments while tracing (gradc/derived.py):
replayed on the traced arrays where it meets a traced value, so a change to the outside array
is seen on the next call, as NumPy would see it; what cannot be replayed, and Python values
computed from such arrays, trace again when the array changes; changing an outside array in
place inside the traced function is refused."""
import warnings

import numpy as np
import pytest

import gradc

RNG = np.random.default_rng(11)
X = RNG.standard_normal((4, 3))


@pytest.fixture
def compiles(monkeypatch, capsys):
    """How many times a function compiled since the fixture began (GRADC_LOG=compiles)."""
    monkeypatch.setenv("GRADC_LOG", "compiles")
    return lambda: capsys.readouterr().err.count("compiled ")


@pytest.fixture(autouse=True)
def no_constant_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error", gradc.ConstantArrayWarning)
        yield


class WeightNormed:
    """A weight read plainly and normalised with NumPy alone, side by side (the normalised
    part was compiled in and went stale while the plain read followed the update)."""

    def __init__(self):
        self.W = RNG.standard_normal((3, 3))

    def forward(self, x):
        return x @ self.W.T + x @ (self.W / np.sqrt((self.W ** 2).sum()))


def test_numpy_computation_beside_a_plain_read_follows_updates(compiles):
    model = WeightNormed()
    forward = gradc.jit(model.forward)
    for change in (lambda: None, lambda: setattr(model, "W", RNG.standard_normal((3, 3))),
                   lambda: model.W.__imul__(-2.0), lambda: model.W.__setitem__((0, 0), 5.0)):
        change()
        np.testing.assert_allclose(forward(X), model.forward(X), rtol=1e-13)
    assert compiles() == 1
    assert type(model.W) is np.ndarray  # (the view swapped in while tracing is gone)


class Reparameterized:
    """A scale kept as its log, turned into the scale with NumPy (np.exp(self.log_std))."""

    def __init__(self, n):
        self.log_std = RNG.standard_normal(n) * 0.1
        self.mean = RNG.standard_normal(n)

    def sample(self, eps):
        std = np.exp(self.log_std)
        return self.mean + std * eps, std


@pytest.mark.parametrize("n", [3, 5000])  # (small and past capture.CONTENT_GUARD_SIZE)
def test_a_parameter_transform_reads_the_array_on_every_call(compiles, n):
    model = Reparameterized(n)
    sample = gradc.jit(model.sample)
    eps = RNG.standard_normal(n)
    for _ in range(3):
        got, std = sample(eps)
        want, want_std = model.sample(eps)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(std, want_std, rtol=1e-13)  # (an output NumPy computed)
        model.log_std -= 0.5
    assert compiles() == 1


def test_gradients_through_a_replayed_computation():
    scale = RNG.random(3) + 0.5

    def loss(x):
        w = np.log1p(scale) / scale.sum()  # (NumPy alone, on a global)
        return np.sum(np.tanh(x * w) ** 2)

    grad = gradc.grad(loss)
    for _ in range(2):
        x = RNG.standard_normal(3)
        w = np.log1p(scale) / scale.sum()
        want = 2 * np.tanh(x * w) * (1 - np.tanh(x * w) ** 2) * w
        np.testing.assert_allclose(grad(x), want, rtol=1e-12)
        scale *= 3.0


def test_views_iteration_reshape_and_conversions_of_outside_arrays_read_live(compiles):
    W = RNG.standard_normal((3, 4))

    def f(x):
        rows = sum(row * (i + 1) for i, row in enumerate(W))  # (rows of a global)
        M = np.asarray(W, dtype=np.float64).reshape(4, 3)[::-1]
        return x @ M.T + rows + np.array(W.T)[0, 0] + W.mean(axis=1)[0]

    jf = gradc.jit(f)
    for _ in range(3):
        np.testing.assert_allclose(jf(X), f(X), rtol=1e-13)
        W[...] = RNG.standard_normal((3, 4))
    assert compiles() == 1


def test_closures_and_dict_entries_are_replayed_too(compiles):
    table = {"bias": RNG.standard_normal(3)}
    gain = RNG.random(3)

    def f(x):
        return x * np.sqrt(gain) + np.maximum(table["bias"], 0.0)

    jf = gradc.jit(f)
    for _ in range(3):
        np.testing.assert_allclose(jf(X), f(X), rtol=1e-13)
        gain += 1.0
        table["bias"] = -table["bias"]
    assert compiles() == 1


class Branchy:
    def __init__(self):
        self.W = np.eye(3)

    def forward(self, x):
        if np.abs(self.W).max() > 2.0:  # (a Python decision on the array's contents)
            return x @ self.W * 0.5
        return x @ self.W


def test_a_python_decision_on_an_outside_array_traces_again_when_it_changes():
    model = Branchy()
    forward = gradc.jit(model.forward)
    np.testing.assert_allclose(forward(X), model.forward(X), rtol=1e-13)
    model.W *= 3.0  # (the decision flips)
    np.testing.assert_allclose(forward(X), model.forward(X), rtol=1e-13)
    model.W *= 0.5  # (the same decision: the same program, still checked)
    np.testing.assert_allclose(forward(X), model.forward(X), rtol=1e-13)
    model.W *= 0.5  # (flips back)
    np.testing.assert_allclose(forward(X), model.forward(X), rtol=1e-13)


def test_what_gradc_cannot_replay_is_compiled_in_and_checked():
    W = RNG.standard_normal((3, 3))
    W = W + W.T

    def f(x):
        return x @ np.fft.irfft(np.fft.rfft(W, axis=0), n=3, axis=0)  # (no FFT in gradc)

    jf = gradc.jit(f)
    for _ in range(2):
        np.testing.assert_allclose(jf(X), f(X), rtol=1e-12, atol=1e-14)
        W *= 2.0


def test_an_array_changed_in_place_after_a_view_of_it_was_taken():
    W = RNG.standard_normal((3, 3))

    def f(x):
        t = W * 2.0
        row = t[0]  # (a view: NumPy's row sees the change below)
        t[0, 0] = 7.0
        t += 1.0
        return x @ t + row

    jf = gradc.jit(f)
    for _ in range(2):
        np.testing.assert_allclose(jf(X), f(X), rtol=1e-13)
        W *= -1.0


class Counter:
    def __init__(self):
        self.W = np.ones((3, 3))
        self.n = np.zeros(3)


@pytest.mark.parametrize("change, how", [
    (lambda m: m.n.__iadd__(1.0), r"np\.add"),
    (lambda m: m.n.__setitem__(0, 1.0), "item assignment"),
    (lambda m: m.n.fill(2.0), r"\.fill\(\)"),
    (lambda m: np.copyto(m.n, 3.0), r"np\.copyto"),
    (lambda m: m.n[1:].__imul__(2.0), r"np\.multiply"),  # (a view of it)
])
def test_changing_an_outside_array_in_place_is_refused(change, how):
    model = Counter()

    def forward(x):
        change(model)
        return x @ model.W

    with pytest.raises(gradc.UnsupportedOpError, match=rf"changes `model\.n`.*in place \({how}"):
        gradc.jit(forward)(X)
    assert not model.n.any() and type(model.n) is np.ndarray
