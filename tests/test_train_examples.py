"""The training examples (examples/digits_mlp.py, digits_cnn.py, sequence_rnn.py, attention.py)
train for real with gradc.train_step and reach their stated targets.

Each example's `main()` runs in a shortened configuration (fewer epochs, otherwise the same code
path as `python examples/NAME.py`), and its target is checked here too, with the trained
parameters and an independent NumPy forward pass, not only through the example's own "ok".
Training costs a second or two; compiling the steps is most of the time (the gradc cache dir is
shared by the examples, so kernels they have in common compile once).
"""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


def load_example(name):
    path = os.path.join(EXAMPLES, name + ".py")
    if not os.path.exists(path):
        pytest.fail(f"missing example {path}")
    spec = importlib.util.spec_from_file_location(f"gradc_example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module", autouse=True)
def cache_dir(request, tmp_path_factory):
    """A private GRADC_CACHE_DIR: conftest.py's session one when it has it, else our own."""
    try:
        yield request.getfixturevalue("gradc_cache_dir")
        return
    except pytest.FixtureLookupError:
        pass
    path = tmp_path_factory.mktemp("gradc-cache-examples")
    old = os.environ.get("GRADC_CACHE_DIR")
    os.environ["GRADC_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("GRADC_CACHE_DIR", None)
    else:
        os.environ["GRADC_CACHE_DIR"] = old


def has_module(name):
    return importlib.util.find_spec(name) is not None


def check_training_metrics(m, compiled_once=True):
    losses = np.asarray(m["losses"])
    assert losses.ndim == 1 and len(losses) > 20 and np.all(np.isfinite(losses))
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10]), "the training loss did not fall"
    if compiled_once:  # fixed-size batches: one signature, one compile
        assert m["compiles"] in (1, None)
    assert m["compile_s"] > 0 and m["wall_s"] >= m["compile_s"]
    for p in m["params"].values():
        assert p.dtype == np.float32 and np.all(np.isfinite(p))


# --- digits (scikit-learn's bundled 8x8 images) ------------------------------------------------

def test_digits_mlp_reaches_95_percent_test_accuracy():
    pytest.importorskip("sklearn")
    ex = load_example("digits_mlp")
    _, _, x_test, y_test = ex.load_data(seed=0)
    assert x_test.shape == (359, 64) and len(np.unique(y_test)) == 10
    untrained = ex.accuracy(ex.init_params(0), x_test, y_test)

    m = ex.main(epochs=10, seed=0, verbose=False)
    check_training_metrics(m)
    p = m["params"]
    logits = np.maximum(x_test @ p["W1"] + p["b1"], 0) @ p["W2"] + p["b2"]
    acc = float(np.mean(np.argmax(logits, axis=1) == y_test))
    assert acc == pytest.approx(m["test_accuracy"])
    assert acc >= ex.TARGET_ACCURACY >= 0.95, m["test_accuracy"]
    assert m["ok"] is True
    assert untrained < 0.5  # the accuracy comes from training


def _conv_pool_dense(p, x):
    """digits_cnn's model in plain NumPy, independent of gradc.nn: conv 3x3 padding 1, relu,
    2x2 max pool, dense."""
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))  # N,C,8,8,3,3
    h = np.einsum("nchwij,ocij->nohw", windows, p["conv_w"]) + p["conv_b"][None, :, None, None]
    h = np.maximum(h, 0)
    n, c, hh, ww = h.shape
    h = h.reshape(n, c, hh // 2, 2, ww // 2, 2).max(axis=(3, 5))
    return h.reshape(n, -1) @ p["W"] + p["b"]


def test_digits_cnn_reaches_95_percent_test_accuracy():
    pytest.importorskip("sklearn")
    ex = load_example("digits_cnn")
    _, _, x_test, y_test = ex.load_data(seed=0)
    assert x_test.shape == (359, 1, 8, 8)
    untrained = ex.accuracy(ex.init_params(0), x_test, y_test)

    m = ex.main(epochs=10, seed=0, verbose=False)
    check_training_metrics(m)
    acc = float(np.mean(np.argmax(_conv_pool_dense(m["params"], x_test), axis=1) == y_test))
    assert acc == pytest.approx(m["test_accuracy"])
    assert acc >= ex.TARGET_ACCURACY >= 0.95, m["test_accuracy"]
    assert m["ok"] is True
    assert untrained < 0.5


# --- generated data ------------------------------------------------------------------------

def test_sequence_rnn_loss_falls_10x(capsys):
    ex = load_example("sequence_rnn")
    assert ex.STEPS >= 20
    m = ex.main(epochs=5, seed=0, verbose=True)  # verbose: the progress path runs too
    out = capsys.readouterr().out
    assert "first step (trace + compile" in out and "held-out MSE" in out

    check_training_metrics(m)
    p = m["params"]
    x, y = ex.make_sequences(512, ex.STEPS, seed=1000)  # main's held-out set
    h = np.zeros((x.shape[1], p["Wh"].shape[0]), np.float32)
    sq = []
    for t in range(x.shape[0]):
        h = np.tanh(x[t] @ p["Wx"] + h @ p["Wh"] + p["b"])
        sq.append(np.mean((h @ p["Wo"] + p["bo"] - y[t]) ** 2))
    final = float(np.mean(sq))
    initial = float(np.mean(y.astype(np.float64) ** 2))  # the untrained model predicts 0
    assert final == pytest.approx(m["final_loss"], rel=1e-4)
    assert initial == pytest.approx(m["initial_loss"], rel=1e-4)
    assert initial / final >= ex.TARGET_REDUCTION >= 10, (initial, final)
    assert final < m["last_value_loss"]  # better than repeating the last value
    assert m["ok"] is True


def _attention_logits(p, tokens):
    """attention.py's model in plain NumPy, independent of gradc.nn."""
    d = p["Wq"].shape[0]
    e = p["tok"][tokens] + p["pos"]
    q, k, v = e @ p["Wq"], e @ p["Wk"], e @ p["Wv"]
    s = np.einsum("bid,bjd->bij", q, k) / np.sqrt(d)
    w = np.exp(s - s.max(axis=-1, keepdims=True))
    w /= w.sum(axis=-1, keepdims=True)
    r = e + (w @ v) @ p["Wa"]
    mu = r.mean(axis=-1, keepdims=True)
    var = ((r - mu) ** 2).mean(axis=-1, keepdims=True)
    h = (r - mu) / np.sqrt(var + 1e-5) * p["gamma"] + p["beta"]
    return h @ p["Wout"] + p["bout"]


def test_attention_reverses_sequences(tmp_path):
    ex = load_example("attention")
    plot = str(tmp_path / "attention-loss.png") if has_module("matplotlib") else None
    m = ex.main(epochs=3, seed=0, verbose=False, plot=plot)
    check_training_metrics(m)
    x, y = ex.make_data(1024, seed=1000)  # main's held-out set
    assert np.array_equal(y, x[:, ::-1])
    right = np.argmax(_attention_logits(m["params"], x), axis=-1) == y
    assert float(np.mean(right)) == pytest.approx(m["token_accuracy"])
    assert float(np.mean(right)) >= ex.TARGET_TOKEN_ACCURACY >= 0.99
    assert float(np.mean(np.all(right, axis=1))) == pytest.approx(m["sequence_accuracy"])
    assert m["ok"] is True
    untrained = np.argmax(_attention_logits(ex.init_params(0), x), axis=-1) == y
    assert np.mean(untrained) < 0.3
    if plot:
        with open(plot, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


# --- the command line ----------------------------------------------------------------------

def run_example(name, *args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, os.path.join(EXAMPLES, name + ".py"), *args],
                          capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)


def test_command_line_passes_and_plots(tmp_path):
    """`python examples/attention.py`: exit status 0 and an OK line when the target is met, and
    --plot writes a PNG. (The same signature as above: the disk cache skips the compile.)"""
    args = ["--epochs", "3", "--quiet"]
    plot = tmp_path / "loss.png"
    if has_module("matplotlib"):
        args += ["--plot", str(plot)]
    r = run_example("attention", *args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK: attention token_accuracy" in r.stdout
    if has_module("matplotlib"):
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_command_line_fails_when_the_target_is_missed():
    """No training (--epochs 0): the example exits non-zero and says why."""
    r = run_example("attention", "--epochs", "0", "--quiet")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAILED: attention token_accuracy" in r.stderr


def test_plain_progress_fallback_without_tqdm(capsys):
    sys.path.insert(0, EXAMPLES)
    try:
        import _common
    finally:
        sys.path.remove(EXAMPLES)
    with _common.Progress(20, "demo", verbose=True, use_tqdm=False) as bar:
        for i in range(20):
            bar.update(1.0 / (i + 1))
    out = capsys.readouterr().out
    assert "demo: step 20/20" in out and "demo: step 2/20" in out
    with _common.Progress(5, "quiet", verbose=False) as bar:
        bar.update(1.0)
        bar.write("hidden")
    assert capsys.readouterr().out == ""
