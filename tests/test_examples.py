"""The examples train for real and reach their stated targets: linear regression recovers the
true weights to 1e-3, and micrograd's moons MLP reaches >= 97% training accuracy. Training steps
cost microseconds once compiled, so the configurations stay close to the defaults; the compile
is the cost."""
import importlib.util
import os

import numpy as np
import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def load_example(name):
    path = os.path.join(EXAMPLES, name + ".py")
    if not os.path.exists(path):
        pytest.fail(f"missing example {path}")
    spec = importlib.util.spec_from_file_location(f"gradc_example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def linear_regression():
    return load_example("linear_regression")


@pytest.fixture(scope="module")
def moons_mlp():
    return load_example("moons_mlp")


def test_linear_regression_recovers_the_true_weights(linear_regression):
    ex = linear_regression
    metrics = ex.main(steps=100, verbose=False)
    w = np.asarray(metrics["w"]).reshape(ex.W_TRUE.shape)
    b = np.asarray(metrics["b"]).reshape(ex.B_TRUE.shape)
    # checked here, not only through the example's own "ok"
    assert np.max(np.abs(w - ex.W_TRUE)) <= 1e-3, metrics
    assert np.max(np.abs(b - ex.B_TRUE)) <= 1e-3, metrics
    assert metrics["ok"] is True
    assert metrics["w_error"] == pytest.approx(np.max(np.abs(w - ex.W_TRUE)), abs=1e-6)
    x, y = ex.make_data()
    assert metrics["loss"] == pytest.approx(float(np.mean((x @ w + b - y) ** 2)), rel=1e-3, abs=1e-9)
    assert metrics["loss"] < 1e-6


def test_linear_regression_stops_short_of_the_target_without_training(linear_regression):
    """Control: a run too short to converge does not pass, so the test above measures training."""
    metrics = linear_regression.main(steps=3, verbose=False)
    assert metrics["ok"] is False and metrics["w_error"] > 1e-3


def test_moons_mlp_reaches_97_percent(moons_mlp):
    ex = moons_mlp
    x, y = ex.make_moons(100, noise=0.1, seed=1337)
    untrained = ex.accuracy(ex.init_params(0), x, y)
    acc = ex.main(steps=100, verbose=False)
    assert isinstance(acc, float) and 0.0 <= acc <= 1.0
    assert acc >= ex.TARGET_ACCURACY >= 0.97
    assert untrained < 0.97  # the accuracy comes from training


@pytest.fixture(scope="module")
def gaussian_process():
    return load_example("gaussian_process")


def test_gaussian_process_fits_its_hyperparameters(gaussian_process):
    ex = gaussian_process
    metrics = ex.main(verbose=False)
    assert metrics["ok"] is True, metrics
    # the loss, recomputed with NumPy and SciPy at the fitted hyperparameters
    import scipy.linalg
    x, y = ex.make_data()
    log_l, log_sf, log_sn = metrics["theta"]
    d = x[:, None] - x[None, :]
    K = (np.exp(2 * log_sf) * np.exp(-0.5 * d * d / np.exp(2 * log_l))
         + np.exp(2 * log_sn) * np.eye(len(x)))
    L = np.linalg.cholesky(K)
    z = scipy.linalg.solve_triangular(L, y, lower=True)
    nlml = (0.5 * z @ z + np.sum(np.log(np.diag(L))) + 0.5 * len(x) * np.log(2 * np.pi)) / len(x)
    assert metrics["loss"] == pytest.approx(nlml, rel=1e-9)
    assert metrics["loss"] < metrics["loss0"] - 1.0
    assert 0.1 / 1.5 <= np.exp(log_sn) <= 0.1 * 1.5 and metrics["rmse"] < 0.1


def test_gaussian_process_stops_short_without_training(gaussian_process):
    """Control: three steps do not fit, so the test above measures the fit."""
    assert gaussian_process.main(steps=3, verbose=False)["ok"] is False


def test_examples_print_progress_when_verbose(linear_regression, capsys):
    linear_regression.main(steps=5, verbose=True)
    out = capsys.readouterr().out
    assert "first call" in out and "loss" in out
