"""Random numbers in traced code (DESIGN.md section 2): a draw that would be frozen at trace time
is an error naming the line; gradc.random draws fresh numbers on every call from an explicit seed.

- Detection: np.random.* (the global RandomState), RandomState and Generator methods, Python's
  `random`, unseeded entropy, a gradc Generator that is not an argument; inside grad of grad;
  seeded generators made inside the function and other threads' draws are left alone.
- gradc.random: the exact bits (SplitMix64's published outputs, the NumPy reference, fixed values
  for a fresh process), a new draw on every call (fast path included), reproducible from the seed,
  distributions (mean, variance, Kolmogorov-Smirnov on 1e5 draws), gradients through
  loc + scale * z, train_step (dropout noise fresh every step), target="cuda" under the simulator.
Compiled functions are module-scoped and tiny, so the suite compiles a handful of kernels.
"""
import json
import os
import random
import subprocess
import sys
import threading

import numpy as np
import pytest
import scipy.stats

import gradc
from gradc.ops.random import _step, uniform_ref
from gradc.trace import trace

THIS_FILE = os.path.basename(__file__)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
X3 = np.linspace(-1.0, 1.0, 3)


def line_of(marker):
    """The line number of the line of this file that ends with the comment `# <marker>`."""
    with open(__file__, encoding="utf-8") as f:
        hits = [i for i, line in enumerate(f, start=1) if line.rstrip().endswith(f"# {marker}")]
    assert len(hits) == 1, marker
    return hits[0]


def frozen_error(fun, *args, marker):
    """Compiling `fun` raises FrozenRandomError naming the line marked `marker` and the fix."""
    with pytest.raises(gradc.FrozenRandomError) as info:
        gradc.jit(fun)(*args)
    message = str(info.value)
    assert message.startswith(f"{THIS_FILE}:{line_of(marker)}: "), message
    assert "gradc.random" in message and "pass them in as an argument" in message
    return message


# ---------------------------------------------------------------------------------------------
# detection: frozen draws are errors naming the line

NP_RNG = np.random.default_rng(0)
LEGACY = np.random.RandomState(1)


def test_numpy_global_random_state():
    def f(x):
        # (the draw's own line is named; it was the next line, where the draw is used)
        eps = np.random.randn(*x.shape)  # NP-GLOBAL
        return np.sum(x + eps)
    message = frozen_error(f, X3, marker="NP-GLOBAL")
    assert "np.random" in message


def test_numpy_global_random_state_under_another_name():
    from numpy.random import standard_normal as draw

    def f(x):
        return x * draw(3)  # NP-ALIAS
    frozen_error(f, X3, marker="NP-ALIAS")


def test_randomstate_method_in_a_closure():
    state = np.random.RandomState(3)

    def f(x):
        return x * state.uniform(size=3)  # RANDOMSTATE
    assert "`state`" in frozen_error(f, X3, marker="RANDOMSTATE")


def test_module_level_randomstate_scalar():
    def f(x):
        return x * LEGACY.rand()  # LEGACY-SCALAR
    frozen_error(f, X3, marker="LEGACY-SCALAR")


def test_generator_method_from_a_global():
    def f(x):
        return np.sum(x * NP_RNG.standard_normal(x.shape))  # NP-GENERATOR
    assert "`NP_RNG`" in frozen_error(f, X3, marker="NP-GENERATOR")


def test_generator_passed_as_a_static_argument():
    def f(x, rng):
        return x + rng.normal(size=x.shape)  # STATIC-GENERATOR
    frozen_error(f, X3, np.random.default_rng(5), marker="STATIC-GENERATOR")


def test_generator_held_by_an_object():
    class Model:
        def __init__(self):
            self.rng = np.random.default_rng(2)

        def noise(self, shape):
            return self.rng.integers(0, 3, shape)

    model = Model()

    def f(x):
        return x * model.noise(x.shape)  # OBJECT-GENERATOR
    assert "model.rng" in frozen_error(f, X3, marker="OBJECT-GENERATOR")


def test_python_random_module_names_the_draw():
    def f(x):
        scale = random.random()  # PY-RANDOM
        return x * scale
    assert "random" in frozen_error(f, X3, marker="PY-RANDOM")


def test_user_code_that_gradc_runs_is_watched_too():
    """gradc's own calls run with the watch's profile hook off (gradc.frozen.inert); a call
    given an object of the user's keeps it on (gradc may run its __index__), and a call that
    fails turns it back on."""
    class One:
        def __index__(self):
            random.random()  # IN-INDEX
            return 1

    class GlobalOne:
        def __index__(self):
            np.random.rand()
            return 1

    assert "random" in frozen_error(lambda x: x.reshape(One(), 3), X3, marker="IN-INDEX")
    with pytest.raises(gradc.FrozenRandomError, match="global random state"):
        trace(lambda x: np.reshape(x, (GlobalOne(), 3)), (X3,))

    def caught(x):
        try:
            x.reshape(7)
        except gradc.ShapeError:
            pass
        return x * random.random()  # AFTER-CAUGHT
    frozen_error(caught, X3, marker="AFTER-CAUGHT")


def test_unseeded_generator_made_inside():
    def f(x):
        rng = np.random.default_rng()  # UNSEEDED
        return x * rng.random(3)
    assert "entropy" in frozen_error(f, X3, marker="UNSEEDED")


def test_grad_of_grad_names_the_inner_line():
    def inner(w):
        return np.sum(np.sin(w) * np.random.rand(3))  # GRAD-OF-GRAD

    def outer(w):
        return np.sum(gradc.grad(inner)(w) ** 2)
    with pytest.raises(gradc.FrozenRandomError) as info:
        gradc.grad(outer)(X3)
    assert str(info.value).startswith(f"{THIS_FILE}:{line_of('GRAD-OF-GRAD')}: ")


def test_gradc_generator_that_is_not_an_argument():
    rng = gradc.random.default_rng(0)

    def f(x):
        return x * rng.random(3)  # CLOSED-OVER
    with pytest.raises(gradc.FrozenRandomError, match="pass the generator to the compiled "
                       "function as an argument") as info:
        gradc.jit(f)(X3)
    assert str(info.value).startswith(f"{THIS_FILE}:{line_of('CLOSED-OVER')}: ")
    assert int(rng.state[1]) == 0  # nothing was drawn


def test_deterministic_and_outside_draws_are_allowed():
    """Generators seeded inside the function give the same numbers every call; draws made
    before the call are data. Neither is an error."""
    def f(x, noise):
        a = np.random.default_rng(7).standard_normal(3)
        b = random.Random(7).random()
        return x * a * b + noise
    noise = np.random.default_rng(1).standard_normal(3)
    graph, _, _ = trace(f, (X3, noise))
    assert {n.op for n in graph.nodes} >= {"constant", "add"}


def test_another_threads_draws_are_not_this_traces():
    """The global RandomState advanced by another thread while a function that never names
    np.random is traced: not a frozen draw."""
    started, drawn = threading.Event(), threading.Event()

    def other():
        started.wait()
        np.random.standard_normal(4)
        drawn.set()

    def f(x):
        started.set()
        drawn.wait(10)
        return x * 2.0
    t = threading.Thread(target=other)
    t.start()
    trace(f, (X3,))
    t.join()
    assert drawn.is_set()


def test_profile_hook_is_restored_and_another_profiler_is_kept():
    events = []

    def mine(frame, event, arg):
        events.append(event)
    doubled = gradc.jit(lambda a: a * 2.0)

    def nested(x):
        c = doubled(np.ones(3))  # compiled (traced) while `nested` is traced
        return x * c * LEGACY.rand()  # AFTER-NESTED
    assert sys.getprofile() is None
    with pytest.raises(gradc.FrozenRandomError) as info:
        trace(nested, (X3,))
    assert str(info.value).startswith(f"{THIS_FILE}:{line_of('AFTER-NESTED')}: ")
    assert sys.getprofile() is None
    sys.setprofile(mine)
    try:
        with pytest.raises(gradc.FrozenRandomError):  # (found without the hook: a global)
            trace(lambda x: x * NP_RNG.random(3), (X3,))
        assert sys.getprofile() is mine
    finally:
        sys.setprofile(None)
    assert "call" in events


# ---------------------------------------------------------------------------------------------
# the bits

def test_step_is_splitmix64():
    """SplitMix64 seeded with 1234567 (the reference implementation's first outputs)."""
    out = _step(np.array([1234567], np.uint64), np.arange(5, dtype=np.uint64))
    assert out.tolist() == [6457827717110365317, 3203168211198807973, 9817491932198370423,
                            4593380528125082431, 16408922859458223821]


# seed 0, counter 0, stream 0: the first uniforms (float64 exactly; pinned across versions)
FIRST_F64 = ["0x1.0983a45556400p-3", "0x1.98f1f72f39ca0p-5", "0x1.573547b5f74d6p-1"]


def test_reference_bits_are_pinned():
    u = uniform_ref(np.array([0, 0], np.int64), (3,), np.float64, 0)
    assert [float(v).hex() for v in u] == FIRST_F64
    u32 = uniform_ref(np.array([0, 0], np.int64), (3,), np.float32, 0)
    assert u32.dtype == np.float32
    np.testing.assert_array_equal(u32, np.floor(u * 2 ** 24) / 2 ** 24)  # the top 24 bits


# ---------------------------------------------------------------------------------------------
# compiled draws

N = 100_000


def _draws(rng):
    """Four draw sites: streams 0, 1, 2, 3 of each call."""
    return (rng.random(N), rng.random(N, dtype=np.float32),
            rng.standard_normal(N), rng.standard_normal(N, dtype=np.float32))


@pytest.fixture(scope="module")
def draws():
    return gradc.jit(_draws)


def box_muller(state, stream, dtype):
    """The hand formula on the reference's uniforms."""
    u = uniform_ref(state, (2, N), dtype, stream)
    return np.sqrt(-2 * np.log(1 - u[0])) * np.cos(2 * np.pi * u[1])


def test_each_call_draws_new_numbers_equal_to_the_reference(draws):
    rng = gradc.random.default_rng(12345)
    seen = []
    for call in range(3):
        state = rng.state.copy()
        assert state.tolist() == [12345, call]
        u64, u32, z64, z32 = draws(rng)
        assert (u64.dtype, u32.dtype, z64.dtype, z32.dtype) == (np.float64, np.float32,
                                                                np.float64, np.float32)
        np.testing.assert_array_equal(u64, uniform_ref(state, (N,), np.float64, 0))
        np.testing.assert_array_equal(u32, uniform_ref(state, (N,), np.float32, 1))
        np.testing.assert_allclose(z64, box_muller(state, 2, np.float64), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(z32, box_muller(state, 3, np.float32), rtol=2e-5, atol=2e-5)
        seen.append(u64[:8])
    assert draws._last_call is not None  # the later calls took the fast path
    assert rng.state.tolist() == [12345, 3]
    assert not np.array_equal(seen[0], seen[1]) and not np.array_equal(seen[1], seen[2])


def test_same_seed_same_numbers_other_seed_others(draws):
    a, b, c = (gradc.random.default_rng(s) for s in (99, 99, 100))
    for _ in range(2):
        ua, ub, uc = draws(a)[0], draws(b)[0], draws(c)[0]
        np.testing.assert_array_equal(ua, ub)
        assert np.mean(ua == uc) < 1e-3
    restored = gradc.random.default_rng(0)
    restored.state[:] = [99, 1]  # a saved state, restored: the same numbers again
    np.testing.assert_array_equal(draws(restored)[0], ua)


@pytest.fixture(scope="module")
def sample(draws):
    return draws(gradc.random.default_rng(2024))


def test_uniform_distribution(sample):
    for u in sample[:2]:
        assert u.min() >= 0 and u.max() < 1
        assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / N)
        assert abs(u.var() - 1 / 12) < 5 * np.sqrt(1 / 180 / N)  # var of (u - 1/2)**2: 1/180
        assert scipy.stats.kstest(u, "uniform").statistic < 1.63 / np.sqrt(N)  # p > 0.01
    np.testing.assert_array_equal(sample[1] * 2 ** 24, np.floor(sample[1] * 2 ** 24))
    # streams of one call, and neighbouring elements, are uncorrelated
    assert abs(np.corrcoef(sample[0], sample[1])[0, 1]) < 5 / np.sqrt(N)
    assert abs(np.corrcoef(sample[0][:-1], sample[0][1:])[0, 1]) < 5 / np.sqrt(N)


def test_normal_distribution(sample):
    for z in sample[2:]:
        assert abs(z.mean()) < 5 / np.sqrt(N)
        assert abs(z.var() - 1) < 5 * np.sqrt(2 / N)
        assert abs(scipy.stats.skew(z)) < 5 * np.sqrt(6 / N)
        assert abs(scipy.stats.kurtosis(z)) < 5 * np.sqrt(24 / N)
        assert scipy.stats.kstest(z, "norm").statistic < 1.63 / np.sqrt(N)


# ---------------------------------------------------------------------------------------------
# gradients, train_step, eager draws

def elbo_like(params, rng):
    """A reparameterized sample z = mu + exp(log_sigma) * eps and a loss of it."""
    z = rng.normal(params["mu"], np.exp(params["log_sigma"]))
    return np.sum(z ** 2) + np.sum(params["mu"])


def test_gradient_through_loc_and_scale_uses_that_calls_noise():
    vg = gradc.value_and_grad(elbo_like)
    params = {"mu": np.array([0.5, -1.0, 2.0]), "log_sigma": np.array([0.1, -0.3, 0.0])}
    rng = gradc.random.default_rng(3)
    sigma = np.exp(params["log_sigma"])
    for call in range(3):
        eps = gradc.random.Generator.from_state(rng.state.copy()).standard_normal(3)
        value, grads = vg(params, rng)
        z = params["mu"] + sigma * eps
        assert value == pytest.approx(np.sum(z ** 2) + np.sum(params["mu"]), rel=1e-12)
        np.testing.assert_allclose(grads["mu"], 2 * z + 1, rtol=1e-12)
        np.testing.assert_allclose(grads["log_sigma"], 2 * z * eps * sigma, rtol=1e-12)
    assert rng.state.tolist() == [3, 3]


def test_eager_generator_matches_a_one_draw_compiled_function():
    params = {"mu": np.zeros(3), "log_sigma": np.zeros(3)}
    a, b = gradc.random.default_rng(8), gradc.random.default_rng(8)
    compiled = gradc.jit(elbo_like)
    for _ in range(2):
        assert float(compiled(params, a)) == pytest.approx(elbo_like(params, b), rel=1e-12)
    assert a.state.tolist() == b.state.tolist() == [8, 2]


def dropout_loss(w, x, rng):
    h = gradc.nn.dropout(x, gradc.nn.dropout_mask(rng, x.shape, 0.5), 0.5)
    return np.mean((h @ w) ** 2)


def test_train_step_draws_fresh_noise_every_step():
    w = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
    x = np.ones((2, 4), np.float32)
    rng = gradc.random.default_rng(11)
    step = gradc.train_step(dropout_loss, gradc.optim.SGD(lr=0.1))
    losses = []
    for k in range(3):
        w_before = w.copy()
        expected_loss = dropout_loss(w_before, x, gradc.random.Generator.from_state(rng.state.copy()))
        keep = uniform_ref(rng.state.copy(), x.shape, np.float64, 0) >= 0.5
        h = np.where(keep, x, 0) * 2
        grad = 2 * h.T @ (h @ w_before) / (h.shape[0] * w.shape[1])
        losses.append(step(w, x, rng))
        assert losses[-1] == pytest.approx(float(expected_loss), rel=1e-5)
        np.testing.assert_allclose(w, w_before - 0.1 * grad, rtol=1e-5, atol=1e-6)
    assert rng.state.tolist() == [11, 3] and len(set(losses)) == 3
    assert step._last_call is not None


def test_one_generator_in_two_places_is_refused():
    """One Generator reached through two argument places (f(rng, rng), a pytree holding it
    twice, a train step's batch) would draw the same numbers in both and advance once: a
    SignatureError naming the line, also where the same signature ran fast before with two
    Generators; a Generator's state overlapping another argument is read from a copy."""
    two = gradc.jit(lambda a, b: (a.standard_normal(4), b.standard_normal(4)))
    first, second = gradc.random.default_rng(0), gradc.random.default_rng(1)
    u, v = two(first, second)
    assert not np.array_equal(u, v) and first.state.tolist() == [0, 1]
    rng = gradc.random.default_rng(0)
    with pytest.raises(gradc.SignatureError, match="two places") as info:
        two(rng, rng)  # SAME-RNG
    assert str(info.value).startswith(f"{THIS_FILE}:{line_of('SAME-RNG')}: ")
    assert rng.state.tolist() == [0, 0]  # nothing ran
    nested = gradc.jit(lambda p: p["enc"].random(2) + p["dec"].random(2))
    with pytest.raises(gradc.SignatureError, match="two places"):
        nested({"enc": rng, "dec": rng})
    with pytest.raises(gradc.SignatureError, match="two places"):
        nested({"enc": rng, "dec": gradc.random.Generator.from_state(rng.state)})
    # its state as an ordinary argument too: read as it was before the call advanced it
    peek = gradc.jit(lambda r, s: (r.random(2), s + 0))
    _, seen = peek(rng, rng.state)
    assert seen.tolist() == [0, 0] and rng.state.tolist() == [0, 1]
    step = gradc.train_step(dropout_loss, gradc.optim.SGD(lr=0.1))
    w, x = np.ones((4, 3), np.float32), np.ones((2, 4), np.float32)
    step(w, x, gradc.random.default_rng(3))
    with pytest.raises(gradc.SignatureError, match="two places"):
        gradc.train_step(lambda w, x, a, b: dropout_loss(w, x, a) + dropout_loss(w, x, b),
                         gradc.optim.SGD(lr=0.1))(w, x, rng, rng)


def test_a_step_refused_as_not_finite_leaves_its_generator_unadvanced():
    """check_finite=True leaves the parameters and the optimizer state as they were, and a
    Generator in the batch too: the same step again draws the same numbers; a finite step
    advances it."""
    step = gradc.train_step(lambda p, x, r: np.sum(np.log(p * x) + r.random(x.shape)),
                            gradc.optim.SGD(0.1), check_finite=True)
    rng, w = gradc.random.default_rng(0), np.ones(2)
    step(w, np.ones(2), rng)
    assert rng.state.tolist() == [0, 1]
    with pytest.raises(gradc.NonFiniteError):
        step(w, -np.ones(2), rng)
    assert rng.state.tolist() == [0, 1] and np.array_equal(w, np.ones(2) - 0.1)
    step(w, np.ones(2), rng)
    assert rng.state.tolist() == [0, 2]


def test_errors_name_the_line():
    rng = gradc.random.default_rng(0)
    with pytest.raises(gradc.UnsupportedOpError, match="float32 or float64") as info:
        gradc.jit(lambda x, r: x * r.random(3, dtype=np.int64))(X3, rng)  # INT-DTYPE
    assert str(info.value).startswith(f"{THIS_FILE}:{line_of('INT-DTYPE')}: ")
    with pytest.raises(gradc.ShapeError, match="broadcast"):
        gradc.jit(lambda x, r: r.normal(x, 1.0, size=(2,)))(X3, rng)
    with pytest.raises(gradc.UnsupportedOpError, match="out="):
        rng.random(3, out=np.zeros(3))
    with pytest.raises(gradc.UnsupportedOpError, match="non-negative"):
        gradc.random.default_rng(-1)
    assert rng.state.tolist() == [0, 0]  # failed traces advanced nothing


class _Noisy:
    def __init__(self):
        self.low, self.high, self.scale = np.array([5.0, 5.0]), np.array([6.0, 6.0]), 1.0 + X3

    def draw(self, rng):
        return rng.uniform(self.low, self.high, size=(4000, 2)), rng.normal(0.0, self.scale)


def test_a_draws_parameters_a_model_keeps_are_read_on_every_call():
    """rng.uniform(self.low, self.high): `high - low` was computed with NumPy alone, compiled
    in, so new bounds [5, 10) drew in [5, 6) (fuzz41c); a scale from outside that turned
    negative drew flipped normals, reversed bounds garbage. Both are NumPy's refusals now: the
    checks read them with NumPy alone, so their contents are checked (capture.read_by_numpy)
    and a change traces again, where the check refuses them."""
    model, rng = _Noisy(), gradc.random.default_rng(3)
    draw = gradc.jit(model.draw)
    for high in (6.0, 10.0):
        model.high[:] = high
        uniform, _ = draw(rng)
        assert 5.0 <= uniform.min() and uniform.max() < high and uniform.max() > high - 0.01
    model.scale = np.array([1.0, -1.0, 2.0])
    with pytest.raises(gradc.ArgumentError, match="scale < 0"):
        draw(rng)
    model.scale = np.array([1.0, 1.0, 2.0])
    model.high[0] = 4.0
    with pytest.raises(gradc.ArgumentError, match="high < low"):
        draw(rng)


def test_draw_arguments_numpy_refuses_are_refused():
    """uniform(-1e308, 1e308) drew 1e308 every time (high - low overflows; float32's at 3e38),
    size=(2.5, 3) drew (2, 3) and size=True (1,): NumPy raises for each (fuzz41c)."""
    rng = gradc.random.default_rng(0)
    for call in (lambda: rng.uniform(-1e308, 1e308, 3), lambda: rng.uniform(0.0, np.nan),
                 lambda: gradc.jit(lambda x, r: x * r.uniform(-3e38, 3e38, 3, np.float32))(
                     X3, rng),
                 lambda: rng.random((2.5, 3)), lambda: rng.random(True),
                 lambda: gradc.jit(lambda x, r: x * r.random(True))(X3, rng)):
        with pytest.raises(gradc.ArgumentError, match=r"test_random\.py:\d+: "):
            call()
    assert rng.state.tolist() == [0, 0]


def test_generated_modules_refuse_a_generator():
    from gradc.aot import AotError, generate

    def noisy(x, rng):
        return x * rng.random(3)
    with pytest.raises(AotError, match="Generator cannot be passed to a generated module"):
        generate(noisy, (X3, gradc.random.default_rng(0)), mode="jit")


# ---------------------------------------------------------------------------------------------
# target="cuda" (simulator, a fresh process): the CPU's bits, new on every call

CUDA_SCRIPT = r"""
import json
import numpy as np
import gradc
from gradc.ops.random import uniform_ref

def f(x, rng):
    return x * rng.random(x.shape, dtype=np.float32), rng.random(5), rng.standard_normal(4)

cuda, cpu = gradc.jit(f, target="cuda"), gradc.jit(f)
x = np.linspace(1, 2, 40).astype(np.float32)
a, b = gradc.random.default_rng(0), gradc.random.default_rng(0)
out = {"equal_cpu": [], "equal_ref": [], "first": None, "states": None}
for call in range(2):
    got, want = cuda(x, a), cpu(x, b)
    out["equal_cpu"].append([bool(np.array_equal(g, w)) for g, w in zip(got, want)])
    ref = x * uniform_ref(np.array([0, call]), x.shape, np.float32, 0)
    out["equal_ref"].append(bool(np.array_equal(got[0], ref)))
    if call == 0:
        out["first"] = [float(v).hex() for v in uniform_ref(np.array([0, 0]), (3,), np.float64, 0)]
        out["stream1"] = [float(v).hex() for v in got[1][:3]]
out["states"] = [a.state.tolist(), b.state.tolist()]
print(json.dumps(out))
"""


def test_cuda_target_under_the_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1",
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", CUDA_SCRIPT],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["equal_cpu"] == [[True, True, True]] * 2  # uniforms and normals, bit for bit
    assert out["equal_ref"] == [True, True]
    assert out["first"] == FIRST_F64  # the same bits in a fresh process
    state = np.array([0, 0])
    assert out["stream1"] == [float(v).hex() for v in uniform_ref(state, (3,), np.float64, 1)]
    assert out["states"] == [[0, 2], [0, 2]]


def test_vjp_refuses_a_generator_among_its_primals_before_running():
    """vjp differentiates every primal: a Generator is refused at once, its counter unmoved
    (it ran the forward, advanced it, and then refused in vjp_fn with advice about argnums,
    which vjp has not)."""
    rng = gradc.random.default_rng(5)
    before = rng.state.copy()
    with pytest.raises(gradc.NonDifferentiableError, match="array primal"):
        gradc.vjp(lambda x, r: x * r.standard_normal(3), np.ones(3), rng)
    np.testing.assert_array_equal(rng.state, before)


def test_a_draw_beside_an_index_check_compiles_at_every_batch_size():
    """The generator's counter advances in place, after the index checks (cross_entropy's
    labels); at batch size 2 its advance joined the loss's loop over [2], which the check
    depends on: AssertionError, the kernels depended on each other in a cycle."""
    rng = np.random.default_rng(0)

    def loss(W1, W2, x, y, g):
        keep = g.random((x.shape[0], 5), dtype=np.float32) >= 0.3
        return gradc.nn.cross_entropy((np.tanh(x @ W1) * keep) @ W2, y)

    W1 = rng.standard_normal((6, 5)).astype(np.float32)
    W2 = rng.standard_normal((5, 3)).astype(np.float32)
    vg = gradc.value_and_grad(loss, argnums=(0, 1))
    for n in (1, 2, 3):
        x, y = rng.standard_normal((n, 6)).astype(np.float32), rng.integers(0, 3, n)
        g = gradc.random.default_rng(1)
        state = g.state.copy()
        value, grads = vg(W1, W2, x, y, g)
        assert g.state[1] == state[1] + 1
        keep = gradc.random.Generator.from_state(state).random((n, 5), dtype=np.float32) >= 0.3
        logits = (np.tanh(x @ W1) * keep) @ W2
        shifted = logits - logits.max(1, keepdims=True)
        want = -np.mean(shifted[np.arange(n), y] - np.log(np.exp(shifted).sum(1)))
        assert value == pytest.approx(want, rel=1e-5)


def test_uniform_never_returns_high():
    """low + (high - low) * u rounds up to high for some float32 u near 1: uniform(1000, 1001)
    gave 1001.0 in 1 of 30,000 draws, eagerly and compiled; [low, high) is what it promises."""
    draw = gradc.jit(lambda g: (g.uniform(1000.0, 1001.0, 50_000, dtype=np.float32),
                                g.uniform(-1001.0, -1000.0, 50_000, dtype=np.float32)))
    g = gradc.random.default_rng(5)
    for _ in range(4):
        up, down = draw(g)
        assert up.dtype == np.float32 and up.min() >= 1000 and up.max() < 1001
        assert down.min() >= -1001 and down.max() < -1000
    eager = gradc.random.default_rng(5).uniform(1000.0, 1001.0, 200_000, dtype=np.float32)
    assert eager.max() < 1001 and eager.min() >= 1000
    assert np.unique(eager).size > 15_000  # (still the whole range of floats there)
    with pytest.raises(gradc.ArgumentError, match="high < low"):  # (NumPy refuses it too; the
        gradc.random.default_rng(5).uniform(5.0, 1.0, 3)  # clamp would have made all of it 5)


def test_a_traced_negative_scale_gives_nan_not_a_flipped_draw():
    """NumPy refuses normal(scale < 0); a traced scale is not known until the call, and
    loc + scale * z with scale < 0 is a draw of another sign, silently: NaN there instead
    (check_finite=True refuses the step), the gradient of the valid positions unchanged."""
    def sample(scale, g):
        return g.normal(1.0, scale)

    scale = np.array([0.5, -2.0, 0.0, 3.0])
    got = gradc.jit(sample)(scale, gradc.random.default_rng(4))
    want = gradc.random.default_rng(4).normal(1.0, np.abs(scale))
    assert np.isnan(got[1]) and not np.isnan(got[[0, 2, 3]]).any()
    np.testing.assert_allclose(got[[0, 2, 3]], want[[0, 2, 3]], rtol=1e-12)
    eps = gradc.random.default_rng(4).standard_normal(4)
    total = gradc.grad(lambda s, g: np.sum(np.nan_to_num(sample(s, g))))
    grad = total(scale, gradc.random.default_rng(4))
    np.testing.assert_allclose(grad[[0, 2, 3]], eps[[0, 2, 3]], rtol=1e-12)
    assert grad[1] == 0
    with pytest.raises(gradc.ArgumentError, match="scale < 0"):
        gradc.random.default_rng(4).normal(1.0, scale)


def test_a_numpy_generator_method_it_lacks_says_what_to_write():
    """rng.binomial(1, keep, shape) (nnfs's dropout, after switching to gradc.random) was a
    bare AttributeError: a GradcError naming the line and the way to write it (fuzz41e);
    hasattr still answers False."""
    rng = gradc.random.default_rng(0)
    with pytest.raises(gradc.UnsupportedOpError, match=r"test_random\.py:\d+: .*no binomial"
                                                       r"\(\).*rng\.random\(shape\) < p"):
        gradc.jit(lambda x, r: x * r.binomial(1, 0.5, size=x.shape))(X3, rng)
    assert not hasattr(rng, "integers") and not hasattr(rng, "nonsense")
    with pytest.raises(AttributeError, match="nonsense"):
        rng.nonsense


def test_draw_parameters_as_lists_and_a_size_as_a_0d_array():
    """uniform([0, 10], [1, 20]) (NumPy takes lists) was a bare TypeError, and size=np.array(3)
    was refused (fuzz41d)."""
    rng = gradc.random.default_rng(1)
    draws = rng.uniform([0.0, 10.0], [1.0, 20.0])
    assert draws.shape == (2,) and 0 <= draws[0] < 1 and 10 <= draws[1] < 20
    assert rng.random(size=np.array(3)).shape == (3,)
    jitted = gradc.jit(lambda x, r: x * r.normal([0.0, 5.0, 9.0], (1.0, 1.0, 1.0)))(X3, rng)
    assert jitted.shape == (3,)
