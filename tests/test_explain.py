"""`gradc.explain` counts the forward values that the backward reuses, and a lowered signature
prints stage by stage (gradc/compile.py: Lowered)."""
import math
import re

import numpy as np
import pytest

import gradc
from gradc.function import Function

X = np.linspace(-1.0, 1.0, 6)


def exp_and_relu(x):
    return np.sum(np.exp(x)) + np.sum(gradc.nn.relu(x) ** 2)


def reused(text):
    """(the count the report gives, the ops of the values it lists)."""
    head = re.search(r"forward values reused by the backward: (\d+)\n((?:  .*\n)*)", text)
    ops = re.findall(r"^  %\d+ = (\w+) ", head[2], re.M)
    return int(head[1]), ops


def test_backward_reuses_the_forward_exp_and_relu():
    # d/dx = exp(x) + 2 relu(x) [x > 0]: the backward reads the forward's exp and relu outputs
    count, ops = reused(gradc.explain(exp_and_relu, X))
    assert count == 2 and sorted(ops) == ["exp", "relu"]
    count, ops = reused(gradc.explain(exp_and_relu, X, mode="grad"))
    assert count == 2 and sorted(ops) == ["exp", "relu"]


def test_a_forward_alone_reuses_nothing():
    assert reused(gradc.explain(exp_and_relu, X, mode="jit")) == (0, [])


def test_a_train_step_reports_what_its_backward_and_update_reuse():
    def loss(p, x):
        return np.sum(np.exp(p["w"] * x))

    step = gradc.train_step(loss, gradc.optim.SGD(lr=0.1))
    params = {"w": np.full(6, 0.5)}
    count, ops = reused(gradc.explain(step, params, X))
    assert count >= 1 and "exp" in ops
    np.testing.assert_array_equal(params["w"], np.full(6, 0.5))  # explain runs no step


def test_a_lowered_signature_prints_each_stage():
    f = Function(exp_and_relu, "value_and_grad")
    lowered = f.lower(X).lowered  # nothing Numba-compiled
    text = str(lowered)
    names = [stage.name for stage in lowered.stages]
    assert names[0] == "traced" and "cse" in names and "dce" in names
    for stage in lowered.stages:
        assert f"== {stage.name}: {len(stage.graph.nodes)} nodes" in text
    assert "== kernels:" in text and "== memory plan" in text and "def run(" in text
    assert text.index("== traced") < text.index("== kernels") < text.index("== memory plan")


def mlp(p, x):
    h = np.tanh(x @ p["W1"])  # HIDDEN
    return np.mean((h @ p["W2"]) ** 2)


def test_the_report_is_text_with_the_memory_plan_in_numbers():
    p = {"W1": np.ones((16, 64), np.float32) / 16, "W2": np.ones((64, 4), np.float32)}
    x = np.ones((32, 16), np.float32)
    report = gradc.explain(mlp, p, x)
    assert isinstance(report, str) and "== memory plan" in report
    memory = report.memory
    compiled = gradc.value_and_grad(mlp).compiled_for(p, x)
    assert memory.arena_bytes == compiled.plan.arena_bytes > 0
    assert memory.no_reuse_bytes >= memory.arena_bytes
    sizes = [b.bytes for b in memory.largest]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] >= 32 * 64 * 4
    # every buffer names a line of this file; the hidden layer's product names its own line
    line = next(i for i, text in enumerate(open(__file__), 1) if "# HIDDEN" in text)
    assert all(b.source.startswith("test_explain.py:") for b in memory.largest)
    assert any(b.shape == (32, 64) and b.op == "matmul" and b.source == f"test_explain.py:{line}"
               for b in memory.largest)
    step = gradc.train_step(mlp, gradc.optim.Adam(1e-3))
    assert gradc.explain(step, p, x).memory.arena_bytes > 0


def test_explain_reports_the_signature_asked_for_and_runs_nothing():
    def loss(w, x):
        return np.sum(np.tanh(x @ w) ** 2)

    w, x4, x8 = np.ones((3, 2)), np.ones((4, 3)), np.ones((8, 3))
    vg = gradc.value_and_grad(loss)
    vg(w, x4)
    _, g = vg(w, x8)  # (the last signature compiled, its gradient held)
    held = g.copy()
    text = gradc.explain(vg, w, x4 * 10.0)
    assert "f64[4,3] (x)" in text and "f64[8,3]" not in text
    np.testing.assert_array_equal(g, held)  # (explain did not run the step: g is not overwritten)
    rng = gradc.random.default_rng(0)
    draw = gradc.jit(lambda x, rng: x + rng.random(3))
    draw(np.zeros(3), rng)
    counter = int(rng.state[1])
    gradc.explain(draw, np.zeros(3), rng)
    assert int(rng.state[1]) == counter


def test_explain_keeps_its_options_apart_from_the_functions_keywords():
    def loss(w, x, mode="train"):
        return np.sum(x @ w) * (3.0 if mode == "train" else 1.0)

    w, x = np.ones((3, 2)), np.ones((4, 3))
    try:
        gradc.explain(loss, w, x, mode="eval")
    except gradc.ArgumentError as e:
        assert "gradc.value_and_grad" in str(e) and "test_explain.py" in str(e)
    else:
        raise AssertionError("mode= was taken as explain's own option without a word")
    # through a Function every keyword is the function's: the eval program has no factor 3
    text = gradc.explain(gradc.value_and_grad(loss), w, x, mode="eval")
    assert "3.0" not in text.split("== IR after the passes")[0]
    try:
        gradc.explain(lambda w: np.sum(w), w, mode="forward")
    except gradc.ArgumentError as e:
        assert "value_and_grad, grad, jit" in str(e)
    else:
        raise AssertionError("an unknown mode was accepted")


def test_explaining_a_new_signature_takes_no_place_among_max_signatures():
    """Under max_signatures, explain of a shape never run lowers it without keeping it:
    kept, it took one of max_signatures' places and the real call after it was refused."""
    def loss(p, x):
        return np.mean(np.tanh(x @ p["W"]) ** 2)

    vg = gradc.value_and_grad(loss, max_signatures=1)
    p = {"W": np.ones((3, 2))}
    report = gradc.explain(vg, p, np.ones((9, 3)))
    assert report.memory.arena_bytes > 0 and len(vg.cache) == 0
    value, _ = vg(p, np.ones((5, 3)))
    assert value == pytest.approx(np.tanh(3.0) ** 2)
    again = gradc.explain(vg, p, np.ones((5, 3)))  # (the version it runs, reported)
    assert len(vg.cache) == 1 and again.memory.arena_bytes > 0


def test_explain_names_the_lines_where_float32_values_are_computed_in_float64():
    """np.sqrt(d) of a Python number is a float64 NumPy scalar, strong in NumPy 2's promotion:
    a float32 model beside it computes in float64 (twice the memory); explain says where."""
    x = np.ones((4, 3), np.float32)

    def loss(x):
        h = x * (1.0 / np.sqrt(3))  # widened here
        return np.sum(h * h)

    text = str(gradc.explain(gradc.value_and_grad(loss), x))
    assert re.search(r"== float32 values computed in float64 \(\d+ lines\)", text)
    assert f"test_explain.py:{loss.__code__.co_firstlineno + 1}" in text.split(
        "== float32 values")[1].split("==")[0]
    assert "float32 values computed in float64" not in str(
        gradc.explain(gradc.value_and_grad(lambda x: np.sum(x * (1.0 / math.sqrt(3)))), x))


def test_explaining_a_forward_that_is_not_scalar_says_to_ask_for_the_forward():
    """gradc.explain(f, x) compiles a plain function as value and gradient: a model's forward
    (an array out) was refused as having no gradient, without saying why explain asked."""
    with pytest.raises(gradc.NonDifferentiableError, match="mode='jit'") as info:
        gradc.explain(lambda x: x * 2.0, np.ones(3))
    assert "test_explain.py:" in str(info.value)
    assert "== IR as traced" in str(gradc.explain(lambda x: x * 2.0, np.ones(3), mode="jit"))
