"""Handwritten digits with a small CNN: conv2d -> relu -> max_pool2d -> dense, Adam via gradc.

The same data as digits_mlp.py (scikit-learn's bundled 8x8 digits, 80/20 fixed-seed split), as
images (N, 1, 8, 8). The model is a 3x3 convolution with 16 channels and padding 1 (8x8 ->
8x8), relu, 2x2 max pooling (-> 16 x 4 x 4), flatten, and one dense layer to 10 logits, with a
softmax cross-entropy loss. gradc runs the convolution and its gradients as direct loop
kernels, max pooling as a gather at each window's argmax. Every step is one compiled call.

    python3 examples/digits_cnn.py [--epochs N] [--seed S] [--batch-size B] [--lr LR]
                                   [--channels C] [--plot loss.png] [--quiet]

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
CHANNELS = 16


def load_data(seed=0, test_fraction=0.2):
    """(x_train, y_train, x_test, y_test): x float32 (n, 1, 8, 8) in [0, 1], y int64 0..9."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    return _common.train_test_split(x, y, test_fraction, seed)


def init_params(seed=0, channels=CHANNELS, n_out=10):
    """He-initialised conv and dense weights, zero biases (C-contiguous float32)."""
    rng = np.random.default_rng(seed)
    fan_conv, fan_dense = 1 * 3 * 3, channels * 4 * 4
    return {
        "conv_w": _common.float32(rng.standard_normal((channels, 1, 3, 3))
                                  * np.sqrt(2.0 / fan_conv)),
        "conv_b": np.zeros(channels, np.float32),
        "W": _common.float32(rng.standard_normal((fan_dense, n_out)) * np.sqrt(1.0 / fan_dense)),
        "b": np.zeros(n_out, np.float32),
    }


def forward(params, x):
    """Logits (n, 10) of images x (n, 1, 8, 8); traced by gradc, or run as plain NumPy."""
    h = gradc.nn.conv2d(x, params["conv_w"], params["conv_b"], stride=1, padding=1)  # n,C,8,8
    h = gradc.nn.max_pool2d(gradc.nn.relu(h), 2)                                     # n,C,4,4
    return gradc.nn.flatten(h) @ params["W"] + params["b"]


def loss(params, x, y):
    return gradc.nn.cross_entropy(forward(params, x), y)


def accuracy(params, x, y):
    return float(np.mean(np.argmax(forward(params, x), axis=1) == y))


def main(epochs=20, seed=0, verbose=True, plot=None, batch_size=32, lr=3e-3, channels=CHANNELS):
    """Train and return the final metrics: test_accuracy, train_accuracy, final_loss, losses,
    params (the trained arrays), compiles (signatures step compiled), ok (test accuracy >=
    TARGET_ACCURACY), compile_s (first step), wall_s (whole run)."""
    t_start = time.perf_counter()
    x_train, y_train, x_test, y_test = load_data(seed)
    params = init_params(seed, channels)
    opt = gradc.optim.Adam(lr=lr)
    step = gradc.train_step(loss, opt)
    rng = np.random.default_rng(seed + 1)

    steps_per_epoch = len(x_train) // batch_size
    losses, compile_s = [], None
    bar = _common.Progress(epochs * steps_per_epoch, "digits CNN", verbose)
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
            if verbose and (epoch % 5 == 4 or epoch == epochs - 1):
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
        _common.plot_losses(losses, plot, "digits CNN: training loss (cross-entropy)")
        if verbose:
            print(f"loss curve written to {plot}")
    if verbose:
        print(f"{len(losses)} steps; train accuracy {100 * metrics['train_accuracy']:.1f}%, "
              f"test accuracy {100 * test_acc:.1f}% ({len(x_test)} held-out images)")
    return metrics


if __name__ == "__main__":
    args = _common.parse_args(__doc__, epochs=20, extra=[
        ("--batch-size", dict(type=int, default=32, help="minibatch size (default 32)")),
        ("--lr", dict(type=float, default=3e-3, help="peak Adam learning rate (default 3e-3)")),
        ("--channels", dict(type=int, default=CHANNELS,
                            help=f"convolution channels (default {CHANNELS})")),
    ])
    m = main(epochs=args.epochs, seed=args.seed, verbose=not args.quiet, plot=args.plot,
             batch_size=args.batch_size, lr=args.lr, channels=args.channels)
    _common.finish(m, "digits CNN", "test_accuracy", TARGET_ACCURACY)
