"""Train steps' arenas against PyTorch eager's way of freeing (issue 15), through the public
API: an unrolled RNN accumulates its weight gradients a step at a time (passes/products.py),
so each step's hidden state dies at its step of the backward; and the schedule runs the ready
kernel created first (passes/fuse.py `_schedule`), so a weight gradient runs before the rest
of the backward and its activation dies there. Each update against central differences."""
import copy

import numpy as np

import gradc
from test_recompute import numeric_grads, rnn, rnn_problem

LR = 0.1


def l2_mlp(p, x, y):
    """The tiny benchmark MLP's form (W1): hinge loss and an L2 term over every parameter."""
    h = np.maximum(x @ p["W1"] + p["b1"], 0)
    h = np.maximum(h @ p["W2"] + p["b2"], 0)
    score = h @ p["W3"] + p["b3"]
    return np.mean(np.maximum(1.0 - y * score, 0)) + 1e-2 * sum(np.sum(v * v) for v in p.values())


def _step(loss, params, *batch):
    """(the train step's arena bytes, the parameters it updated, the update by central
    differences)."""
    want = numeric_grads(loss, copy.deepcopy(params), *batch)
    want = {k: params[k] - LR * want[k] for k in params}
    step = gradc.train_step(loss, gradc.optim.SGD(LR))
    step(params, *batch)
    return step.cache[step._last_key].plan.arena_bytes, params, want


def test_rnn_train_step_keeps_each_hidden_state_until_its_step_of_the_backward():
    """16 steps of a 32-wide RNN: 43,904 bytes; 77,440 with the weight gradients' products
    merged into one over all steps."""
    params, x, target = rnn_problem(3, 16, 8, 3, 32, 0.2)
    arena, got, want = _step(rnn, params, x, target)
    assert arena <= 48_000, arena
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-7, atol=1e-9, err_msg=k)


def test_l2_mlp_train_step_frees_each_activation_at_its_weight_gradient():
    """13,504 bytes; 22,016 when the loss kernel, which waits for the L2 terms that the
    updates joined, pulled the whole backward ahead of the weight gradients (a depth-first
    schedule)."""
    rng = np.random.default_rng(4)
    params = {"W1": rng.uniform(-1, 1, (2, 16)), "b1": rng.uniform(-.1, .1, 16),
              "W2": rng.uniform(-1, 1, (16, 16)), "b2": rng.uniform(-.1, .1, 16),
              "W3": rng.uniform(-1, 1, (16, 1)), "b3": rng.uniform(-.1, .1, 1)}
    x, y = rng.standard_normal((40, 2)), np.where(rng.random((40, 1)) < .5, -1.0, 1.0)
    arena, got, want = _step(l2_mlp, params, x, y)
    assert arena <= 16_000, arena
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-7, atol=1e-9, err_msg=k)
