"""micrograd's demo, compiled: a 2-16-16-1 ReLU MLP on two moons with an SVM max-margin loss.

As in micrograd's ``demo.ipynb``: 100 points of two moons with noise 0.1 and labels -1/+1,
loss = mean(relu(1 - y * score)) + 1e-4 * (sum of squared parameters), full-batch SGD with
learning rate ``1.0 - 0.9 * k / steps``. The data is generated here in NumPy (no scikit-learn).

    python3 examples/moons_mlp.py [--steps N] [--samples N] [--seed S] [--quiet]

Exits non-zero if the final training accuracy is below 97%.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import gradc

SIZES = (2, 16, 16, 1)
ALPHA = 1e-4
TARGET_ACCURACY = 0.97


def make_moons(n_samples=100, noise=0.1, seed=1337):
    """Two interleaving half circles, as ``sklearn.datasets.make_moons`` makes them.

    Returns x: (n, 2) float32 and y: (n, 1) float32 with labels -1 (upper moon) and +1.
    """
    rng = np.random.default_rng(seed)
    n_out = n_samples // 2
    n_in = n_samples - n_out
    t_out = np.linspace(0.0, np.pi, n_out)
    t_in = np.linspace(0.0, np.pi, n_in)
    x = np.concatenate([
        np.stack([np.cos(t_out), np.sin(t_out)], axis=1),
        np.stack([1.0 - np.cos(t_in), 1.0 - np.sin(t_in) - 0.5], axis=1),
    ])
    y = np.concatenate([np.zeros(n_out), np.ones(n_in)])
    x = x + noise * rng.standard_normal(x.shape)
    order = rng.permutation(n_samples)
    x, y = x[order], y[order]
    return x.astype(np.float32), (2.0 * y - 1.0).astype(np.float32).reshape(-1, 1)


def init_params(seed=0, sizes=SIZES):
    """micrograd's initialisation: weights uniform in [-1, 1], biases zero."""
    rng = np.random.default_rng(seed)
    params = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        params[f"W{i}"] = rng.uniform(-1.0, 1.0, (n_in, n_out)).astype(np.float32)
        params[f"b{i}"] = np.zeros((n_out,), dtype=np.float32)
    return params


def forward(params, x):
    """Scores of the MLP, shape (n, 1): ReLU on the hidden layers, linear output."""
    n_layers = len(SIZES) - 1
    h = x
    for i in range(1, n_layers + 1):
        h = h @ params[f"W{i}"] + params[f"b{i}"]
        if i < n_layers:
            h = np.maximum(h, 0)
    return h


def loss(params, x, y):
    """SVM max-margin loss plus L2 regularisation of every parameter, as micrograd does."""
    scores = forward(params, x)
    data_loss = np.mean(np.maximum(1 - y * scores, 0))
    reg_loss = ALPHA * sum(np.sum(p * p) for p in params.values())
    return data_loss + reg_loss


def accuracy(params, x, y):
    """Fraction of points whose score has the sign of the label (plain NumPy forward)."""
    scores = forward(params, x)
    return float(np.mean((scores > 0) == (y > 0)))


def main(steps=100, verbose=True, n_samples=100, seed=1337, init_seed=0):
    """Train the MLP and return the final training accuracy (a float in [0, 1])."""
    x, y = make_moons(n_samples, noise=0.1, seed=seed)
    params = init_params(init_seed)
    vg = gradc.value_and_grad(loss)

    t_start = time.perf_counter()
    compile_s = None
    for k in range(steps):
        t0 = time.perf_counter()
        value, grads = vg(params, x, y)
        if compile_s is None:
            compile_s = time.perf_counter() - t0
            if verbose:
                print(f"first call (trace + compile): {compile_s:.2f} s")
        lr = 1.0 - 0.9 * k / steps
        # grads are views of gradc's fixed buffers, overwritten by the next call: use them now.
        for name, p in params.items():
            p -= lr * grads[name]
        if verbose and (k % 10 == 0 or k == steps - 1):
            print(f"step {k:3d}  loss {float(value):.4f}  accuracy {100 * accuracy(params, x, y):5.1f}%")
    total_s = time.perf_counter() - t_start

    acc = accuracy(params, x, y)
    if verbose:
        train_s = total_s - (compile_s or 0.0)
        per_step = 1e6 * train_s / max(steps - 1, 1)
        print(f"{steps} steps in {total_s:.2f} s ({per_step:.0f} us/step after the first)")
        print(f"final training accuracy: {100 * acc:.1f}%")
    return acc


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="SGD steps (default 100)")
    parser.add_argument("--samples", type=int, default=100, help="number of points (default 100)")
    parser.add_argument("--seed", type=int, default=1337, help="data seed (default 1337)")
    parser.add_argument("--init-seed", type=int, default=0, help="parameter seed (default 0)")
    parser.add_argument("--quiet", action="store_true", help="print only the result")
    args = parser.parse_args()
    acc = main(steps=args.steps, verbose=not args.quiet, n_samples=args.samples,
               seed=args.seed, init_seed=args.init_seed)
    if acc < TARGET_ACCURACY:
        print(f"FAILED: training accuracy {100 * acc:.1f}% < {100 * TARGET_ACCURACY:.0f}%",
              file=sys.stderr)
        sys.exit(1)
    print(f"OK: training accuracy {100 * acc:.1f}% >= {100 * TARGET_ACCURACY:.0f}%")
