"""Linear regression by gradient descent with gradc.

Synthetic data y = x @ w_true + b_true (+ a little noise), loss = mean squared error,
gradients from ``gradc.value_and_grad``, and a plain NumPy update of the parameters.

    python3 examples/linear_regression.py [--steps N] [--lr LR] [--quiet]

Exits non-zero if the recovered w and b are not within 1e-3 of the true values.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import gradc

N_SAMPLES = 256
N_FEATURES = 3
W_TRUE = np.array([[2.0], [-3.5], [0.75]], dtype=np.float32)  # (3, 1)
B_TRUE = np.array([1.25], dtype=np.float32)                    # (1,)
TOLERANCE = 1e-3


def make_data(n=N_SAMPLES, seed=0, noise=1e-4):
    """x: (n, 3) float32, y: (n, 1) float32 with y = x @ W_TRUE + B_TRUE + noise."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, N_FEATURES)).astype(np.float32)
    y = x @ W_TRUE + B_TRUE + noise * rng.standard_normal((n, 1)).astype(np.float32)
    return x, y.astype(np.float32)


def loss(params, x, y):
    """Mean squared error of the linear model: plain NumPy, traced by gradc."""
    pred = x @ params["w"] + params["b"]
    return np.mean((pred - y) ** 2)


def main(steps=200, lr=0.1, verbose=True, seed=0):
    """Train and return the final metrics as a dict.

    Keys: ``loss`` (final training loss), ``w``, ``b`` (recovered parameters),
    ``w_error``, ``b_error`` (max absolute error against the true values), ``ok``
    (both errors within TOLERANCE), ``compile_s`` (first call, trace+compile included),
    ``train_s`` (the remaining steps).
    """
    x, y = make_data(seed=seed)
    params = {
        "w": np.zeros((N_FEATURES, 1), dtype=np.float32),
        "b": np.zeros((1,), dtype=np.float32),
    }
    vg = gradc.value_and_grad(loss)  # grads of argument 0, the params dict

    t0 = time.perf_counter()
    value, grads = vg(params, x, y)  # first call: trace, differentiate, compile
    compile_s = time.perf_counter() - t0
    if verbose:
        print(f"first call (trace + compile): {compile_s:.2f} s, loss {float(value):.6f}")

    t0 = time.perf_counter()
    for step in range(steps):
        if step > 0:
            value, grads = vg(params, x, y)
        # grads["w"] and grads["b"] are views of gradc's fixed gradient buffers; they are
        # overwritten by the next call, which is fine here: we use them before that.
        params["w"] -= lr * grads["w"]
        params["b"] -= lr * grads["b"]
        if verbose and (step % max(1, steps // 10) == 0 or step == steps - 1):
            print(f"step {step:4d}  loss {float(value):.3e}")
    train_s = time.perf_counter() - t0

    final_loss = float(loss(params, x, y))  # the same function runs as plain NumPy too
    w_error = float(np.max(np.abs(params["w"] - W_TRUE)))
    b_error = float(np.max(np.abs(params["b"] - B_TRUE)))
    metrics = {
        "loss": final_loss,
        "w": params["w"].ravel().tolist(),
        "b": params["b"].ravel().tolist(),
        "w_error": w_error,
        "b_error": b_error,
        "ok": w_error <= TOLERANCE and b_error <= TOLERANCE,
        "compile_s": compile_s,
        "train_s": train_s,
    }
    if verbose:
        print(f"{steps} steps in {train_s:.3f} s ({1e6 * train_s / max(steps, 1):.1f} us/step)")
        print(f"true      w = {W_TRUE.ravel().tolist()}, b = {B_TRUE.tolist()}")
        print("recovered w = [" + ", ".join(f"{v:.4f}" for v in metrics["w"]) + "], "
              "b = [" + ", ".join(f"{v:.4f}" for v in metrics["b"]) + "]")
        print(f"max error w {w_error:.2e}, b {b_error:.2e} (tolerance {TOLERANCE:g})")
    return metrics


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="gradient-descent steps (default 200)")
    parser.add_argument("--lr", type=float, default=0.1, help="learning rate (default 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="data seed (default 0)")
    parser.add_argument("--quiet", action="store_true", help="print only the result")
    args = parser.parse_args()
    m = main(steps=args.steps, lr=args.lr, verbose=not args.quiet, seed=args.seed)
    if not m["ok"]:
        print(f"FAILED: w error {m['w_error']:.2e}, b error {m['b_error']:.2e} "
              f"exceed {TOLERANCE:g}", file=sys.stderr)
        sys.exit(1)
    print("OK: recovered w and b within 1e-3 of the true values")
