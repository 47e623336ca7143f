"""Handwritten digits with an MLP: scikit-learn's 8x8 digits, 64-128-10, Adam via gradc.train_step.

The data is `sklearn.datasets.load_digits()` (1797 images bundled with scikit-learn, no
download), pixels scaled to [0, 1], split 80/20 with a fixed seed. The model is
relu(x @ W1 + b1) @ W2 + b2 with a softmax cross-entropy loss; every step (forward, backward
and the Adam update) is one compiled call that updates the parameters in place. Minibatches have
a fixed size (the ragged last batch of an epoch is dropped), so gradc compiles once.

    python3 examples/digits_mlp.py [--epochs N] [--seed S] [--batch-size B] [--lr LR]
                                   [--plot loss.png] [--quiet]

Exits non-zero if the held-out test accuracy is below 95%.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

import gradc  # noqa: E402

TARGET_ACCURACY = 0.95
HIDDEN = 128


def load_data(seed=0, test_fraction=0.2):
    """(x_train, y_train, x_test, y_test): x float32 (n, 64) in [0, 1], y int64 labels 0..9."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    return _common.train_test_split(x, y, test_fraction, seed)


def init_params(seed=0, n_in=64, hidden=HIDDEN, n_out=10):
    """He-initialised weights, zero biases; C-contiguous float32 as train_step needs."""
    rng = np.random.default_rng(seed)
    return {
        "W1": _common.float32(rng.standard_normal((n_in, hidden)) * np.sqrt(2.0 / n_in)),
        "b1": np.zeros(hidden, np.float32),
        "W2": _common.float32(rng.standard_normal((hidden, n_out)) * np.sqrt(1.0 / hidden)),
        "b2": np.zeros(n_out, np.float32),
    }


def forward(params, x):
    """Logits (n, 10). Plain NumPy: traced by gradc inside `loss`, run as NumPy for evaluation."""
    h = gradc.nn.relu(x @ params["W1"] + params["b1"])
    return h @ params["W2"] + params["b2"]


def loss(params, x, y):
    return gradc.nn.cross_entropy(forward(params, x), y)


def accuracy(params, x, y):
    return float(np.mean(np.argmax(forward(params, x), axis=1) == y))


def main(epochs=30, seed=0, verbose=True, plot=None, batch_size=32, lr=3e-3):
    """Train and return the final metrics: test_accuracy, train_accuracy, final_loss, losses,
    params (the trained arrays), compiles (signatures step compiled), ok (test accuracy >=
    TARGET_ACCURACY), compile_s (first step), wall_s (whole run)."""
    t_start = time.perf_counter()
    x_train, y_train, x_test, y_test = load_data(seed)
    params = init_params(seed)
    opt = gradc.optim.Adam(lr=lr)
    step = gradc.train_step(loss, opt)
    rng = np.random.default_rng(seed + 1)

    steps_per_epoch = len(x_train) // batch_size
    losses, compile_s = [], None
    bar = _common.Progress(epochs * steps_per_epoch, "digits MLP", verbose)
    with _common.single_thread_blas(), bar:  # one BLAS thread: see _common
        for epoch in range(epochs):
            opt.lr = lr * 0.5 * (1 + np.cos(np.pi * epoch / epochs))  # cosine decay, no recompile
            for idx in _common.batches(len(x_train), batch_size, rng):
                t0 = time.perf_counter()
                value = step(params, x_train[idx], y_train[idx])
                if compile_s is None:
                    compile_s = time.perf_counter() - t0
                    bar.write(f"first step (trace + compile): {compile_s:.2f} s")
                losses.append(value)
                bar.update(value)
            if verbose and (epoch % 10 == 9 or epoch == epochs - 1):
                bar.write(f"epoch {epoch + 1:3d}  loss {np.mean(losses[-steps_per_epoch:]):.4f}  "
                          f"test accuracy {100 * accuracy(params, x_test, y_test):.1f}%")

    test_acc = accuracy(params, x_test, y_test)
    metrics = {
        "test_accuracy": test_acc,
        "train_accuracy": accuracy(params, x_train, y_train),
        "final_loss": float(loss(params, x_train, y_train)),
        "losses": losses,
        "params": params,
        "compiles": _common.compile_count(step),
        "ok": test_acc >= TARGET_ACCURACY,
        "compile_s": compile_s,
        "wall_s": time.perf_counter() - t_start,
    }
    if plot:
        _common.plot_losses(losses, plot, "digits MLP: training loss (cross-entropy)")
        if verbose:
            print(f"loss curve written to {plot}")
    if verbose:
        print(f"{len(losses)} steps; train accuracy {100 * metrics['train_accuracy']:.1f}%, "
              f"test accuracy {100 * test_acc:.1f}% ({len(x_test)} held-out images)")
    return metrics


if __name__ == "__main__":
    args = _common.parse_args(__doc__, epochs=30, extra=[
        ("--batch-size", dict(type=int, default=32, help="minibatch size (default 32)")),
        ("--lr", dict(type=float, default=3e-3, help="peak Adam learning rate (default 3e-3)")),
    ])
    m = main(epochs=args.epochs, seed=args.seed, verbose=not args.quiet, plot=args.plot,
             batch_size=args.batch_size, lr=args.lr)
    _common.finish(m, "digits MLP", "test_accuracy", TARGET_ACCURACY)
