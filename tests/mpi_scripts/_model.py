"""The small model and data that the MPI scripts share (so their compiles share the cache)."""
import numpy as np

import gradc

N_IN, HIDDEN, N_OUT, BATCH = 20, 16, 5, 64


def init(seed, hidden=HIDDEN):
    rng = np.random.default_rng(seed)
    return {"W1": np.ascontiguousarray(rng.standard_normal((N_IN, hidden)) * 0.3, np.float32),
            "b1": np.ascontiguousarray(rng.standard_normal(hidden) * 0.1, np.float32),
            "W2": np.ascontiguousarray(rng.standard_normal((hidden, N_OUT)) * 0.3, np.float32),
            "b2": np.zeros(N_OUT, np.float32)}


def loss(params, x, y):  # a mean: the mean of the two halves' gradients is the whole's
    h = gradc.nn.relu(x @ params["W1"] + params["b1"])
    return gradc.nn.cross_entropy(h @ params["W2"] + params["b2"], y)


def flat(params):
    return np.concatenate([params[k].ravel() for k in sorted(params)])


def batch(seed=123):
    data = np.random.default_rng(seed)
    x = data.standard_normal((BATCH, N_IN)).astype(np.float32)
    y = data.integers(0, N_OUT, BATCH).astype(np.int64)
    return x, y
