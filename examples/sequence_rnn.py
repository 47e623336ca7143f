"""Next-value prediction with a tanh RNN unrolled over 24 steps, Adam via gradc.train_step.

The data is generated here: sine waves with a random frequency, phase and amplitude, plus
Gaussian noise (std 0.05). At every step t the RNN reads x[t] and predicts x[t+1]:

    h[t] = tanh(x[t] @ Wx + h[t-1] @ Wh + b),   pred[t] = h[t] @ Wo + bo

The loss is the mean squared error over all steps. The loop over time steps is a Python loop in
the loss function: gradc unrolls it into one static graph, differentiates it (backpropagation
through time), and compiles forward, backward and the update into one call.

    python3 examples/sequence_rnn.py [--epochs N] [--seed S] [--steps T] [--hidden H]
                                     [--plot loss.png] [--quiet]

Exits non-zero unless the held-out loss falls at least 10x below its value before training.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

import gradc  # noqa: E402

TARGET_REDUCTION = 10.0  # initial held-out loss / final held-out loss
STEPS = 24
HIDDEN = 32
NOISE = 0.05


def make_sequences(n, steps=STEPS, seed=0, noise=NOISE):
    """(x, y), each (steps, n, 1) float32, time-major: y[t] = x[t+1] of noisy sine waves."""
    rng = np.random.default_rng(seed)
    freq = rng.uniform(0.15, 0.6, (1, n, 1))      # radians per step
    phase = rng.uniform(0.0, 2 * np.pi, (1, n, 1))
    amp = rng.uniform(0.5, 1.5, (1, n, 1))
    t = np.arange(steps + 1).reshape(-1, 1, 1)
    wave = amp * np.sin(freq * t + phase) + noise * rng.standard_normal((steps + 1, n, 1))
    wave = wave.astype(np.float32)
    return np.ascontiguousarray(wave[:-1]), np.ascontiguousarray(wave[1:])


def init_params(seed=0, hidden=HIDDEN):
    """Random input and recurrent weights; a zero readout, so the untrained model predicts 0
    everywhere and the loss before training is the mean square of the signal (about 0.53)."""
    rng = np.random.default_rng(seed)
    return {
        "Wx": _common.float32(rng.standard_normal((1, hidden)) * 0.5),
        "Wh": _common.float32(rng.standard_normal((hidden, hidden)) / np.sqrt(hidden)),
        "b": np.zeros(hidden, np.float32),
        "Wo": np.zeros((hidden, 1), np.float32),
        "bo": np.zeros(1, np.float32),
    }


def loss(params, x, y):
    """Mean squared error of the one-step-ahead predictions over all time steps.
    x, y: (steps, batch, 1). The Python loop unrolls into the traced graph."""
    steps = x.shape[0]
    total = 0.0
    h = None
    for t in range(steps):
        pre = x[t] @ params["Wx"] + params["b"]
        if h is not None:
            pre = pre + h @ params["Wh"]
        h = np.tanh(pre)
        pred = h @ params["Wo"] + params["bo"]
        diff = pred - y[t]
        total = total + np.mean(diff * diff)
    return total / steps


def main(epochs=30, seed=0, verbose=True, plot=None, batch_size=64, lr=1e-2, steps=STEPS,
         hidden=HIDDEN, n_train=2048, n_test=512):
    """Train and return the final metrics: initial_loss and final_loss (held-out MSE before and
    after training), reduction (their ratio), last_value_loss (the MSE of predicting x[t+1] =
    x[t], for scale), losses, params (the trained arrays), compiles (signatures step compiled),
    ok (reduction >= TARGET_REDUCTION), compile_s, wall_s."""
    t_start = time.perf_counter()
    x_train, y_train = make_sequences(n_train, steps, seed)
    x_test, y_test = make_sequences(n_test, steps, seed + 1000)
    params = init_params(seed, hidden)
    initial = float(loss(params, x_test, y_test))  # the same loss function, as plain NumPy
    opt = gradc.optim.Adam(lr=lr)
    step = gradc.train_step(loss, opt)
    rng = np.random.default_rng(seed + 1)

    steps_per_epoch = n_train // batch_size
    losses, compile_s = [], None
    bar = _common.Progress(epochs * steps_per_epoch, "sequence RNN", verbose)
    with _common.single_thread_blas(), bar:  # one BLAS thread: see _common
        bar.write(f"held-out loss before training: {initial:.4f}")
        for epoch in range(epochs):
            opt.lr = lr * 0.5 * (1 + np.cos(np.pi * epoch / epochs))  # cosine decay, no recompile
            for idx in _common.batches(n_train, batch_size, rng):
                t0 = time.perf_counter()
                # batch along axis 1 (time-major); fancy indexing returns a C-contiguous copy
                value = step(params, x_train[:, idx], y_train[:, idx])
                if compile_s is None:
                    compile_s = time.perf_counter() - t0
                    bar.write(f"first step (trace + compile, {steps} steps unrolled): "
                              f"{compile_s:.2f} s")
                losses.append(value)
                bar.update(value)
            if verbose and (epoch % 10 == 9 or epoch == epochs - 1):
                bar.write(f"epoch {epoch + 1:3d}  loss {np.mean(losses[-steps_per_epoch:]):.5f}  "
                          f"held-out {float(loss(params, x_test, y_test)):.5f}")

    final = float(loss(params, x_test, y_test))
    metrics = {
        "initial_loss": initial,
        "final_loss": final,
        "reduction": initial / final,
        "last_value_loss": float(np.mean((x_test - y_test) ** 2)),
        "noise_floor": NOISE ** 2,
        "losses": losses,
        "params": params,
        "compiles": _common.compile_count(step),
        "ok": initial / final >= TARGET_REDUCTION,
        "compile_s": compile_s,
        "wall_s": time.perf_counter() - t_start,
    }
    if plot:
        _common.plot_losses(losses, plot, f"sequence RNN ({steps} steps unrolled): training MSE")
        if verbose:
            print(f"loss curve written to {plot}")
    if verbose:
        print(f"held-out MSE {initial:.4f} -> {final:.5f} ({metrics['reduction']:.0f}x lower); "
              f"repeating the last value gives {metrics['last_value_loss']:.4f}, "
              f"the noise alone {NOISE ** 2:.4f}")
    return metrics


if __name__ == "__main__":
    args = _common.parse_args(__doc__, epochs=30, extra=[
        ("--steps", dict(type=int, default=STEPS, help=f"time steps unrolled (default {STEPS})")),
        ("--hidden", dict(type=int, default=HIDDEN, help=f"hidden units (default {HIDDEN})")),
        ("--batch-size", dict(type=int, default=64, help="minibatch size (default 64)")),
        ("--lr", dict(type=float, default=1e-2, help="peak Adam learning rate (default 1e-2)")),
    ])
    m = main(epochs=args.epochs, seed=args.seed, verbose=not args.quiet, plot=args.plot,
             batch_size=args.batch_size, lr=args.lr, steps=args.steps, hidden=args.hidden)
    _common.finish(m, "sequence RNN", "reduction", TARGET_REDUCTION, fmt="{:.1f}x")
