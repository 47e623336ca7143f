"""Gaussian-process regression: kernel hyperparameters fitted by gradient descent with gradc.

Data: y = sin(x) + noise (std 0.1) at 64 points. Model: a squared-exponential kernel
k(x, x') = sf^2 exp(-(x - x')^2 / (2 l^2)) plus noise sn^2 on the diagonal. The loss is the
negative log marginal likelihood per point, through a Cholesky factor and triangular solves:

    L = cholesky(K);  alpha = L^-T L^-1 y
    nlml = 0.5 y^T alpha + sum(log diag L) + n/2 log(2 pi)

`gradc.value_and_grad` gives its gradient with respect to (log l, log sf, log sn), and plain
gradient descent fits them.

    python3 examples/gaussian_process.py [--steps N] [--lr LR] [--quiet]

Exits non-zero unless the fit recovers the noise level (0.1 within a factor 1.5), the posterior
mean follows sin(x) (RMSE < 0.1 on a grid) and the loss went down.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import gradc
from gradc.scipy.linalg import solve_triangular

N_POINTS = 64
NOISE = 0.1
INIT = np.array([np.log(0.3), np.log(0.5), np.log(0.5)])  # log l, log sf, log sn: far off


def make_data(n=N_POINTS, seed=0):
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-4.0, 4.0, n))
    return x, np.sin(x) + NOISE * rng.standard_normal(n)


def kernel(a, b, log_l, log_sf):
    d = a[:, None] - b[None, :]
    return np.exp(2 * log_sf) * np.exp(-0.5 * d * d / np.exp(2 * log_l))


def nlml(theta, x, y):
    """Negative log marginal likelihood per point: plain NumPy (and gradc.scipy), traced."""
    log_l, log_sf, log_sn = theta[0], theta[1], theta[2]
    n = x.shape[0]
    K = kernel(x, x, log_l, log_sf) + np.exp(2 * log_sn) * np.eye(n)
    L = np.linalg.cholesky(K)
    z = solve_triangular(L, y, lower=True)  # L^-1 y: 0.5 y^T K^-1 y = 0.5 |z|^2
    log_det = np.sum(np.log(np.diag(L)))  # log det K = 2 sum(log diag L)
    return (0.5 * np.sum(z * z) + log_det + 0.5 * n * np.log(2 * np.pi)) / n


def posterior_mean(theta, x, y, grid):
    """The GP's predictive mean at `grid`, compiled too: K(grid, x) K^-1 y."""
    log_l, log_sf, log_sn = theta[0], theta[1], theta[2]
    K = kernel(x, x, log_l, log_sf) + np.exp(2 * log_sn) * np.eye(x.shape[0])
    return kernel(grid, x, log_l, log_sf) @ np.linalg.solve(K, y)


def main(steps=150, lr=0.5, verbose=True, seed=0):
    """Fit and return the metrics: ``theta`` (log l, log sf, log sn), ``loss0`` and ``loss``
    (first and final), ``lengthscale``, ``signal_std``, ``noise_std``, ``rmse`` (posterior mean
    against sin on a grid), ``ok``, ``compile_s``, ``train_s``."""
    x, y = make_data(seed=seed)
    theta = INIT.copy()
    vg = gradc.value_and_grad(nlml)

    t0 = time.perf_counter()
    loss0, grad = vg(theta, x, y)  # first call: trace, differentiate, compile
    loss0 = float(loss0)
    compile_s = time.perf_counter() - t0
    if verbose:
        print(f"first call (trace + compile): {compile_s:.2f} s, loss {loss0:.4f}")
    t0 = time.perf_counter()
    value = loss0
    for step in range(steps):
        if step > 0:
            value, grad = vg(theta, x, y)
        theta = theta - lr * grad
        if verbose and (step % max(1, steps // 10) == 0 or step == steps - 1):
            print(f"step {step:4d}  loss {float(value):.4f}  l {np.exp(theta[0]):.3f}  "
                  f"sf {np.exp(theta[1]):.3f}  sn {np.exp(theta[2]):.3f}")
    train_s = time.perf_counter() - t0

    grid = np.linspace(-3.5, 3.5, 50)
    mean = gradc.jit(posterior_mean)(theta, x, y, grid)
    rmse = float(np.sqrt(np.mean((mean - np.sin(grid)) ** 2)))
    final = float(vg(theta, x, y)[0])
    noise_std = float(np.exp(theta[2]))
    metrics = {
        "theta": theta.tolist(), "loss0": loss0, "loss": final,
        "lengthscale": float(np.exp(theta[0])),
        "signal_std": float(np.exp(theta[1])), "noise_std": noise_std, "rmse": rmse,
        "ok": bool(NOISE / 1.5 <= noise_std <= NOISE * 1.5 and rmse < 0.1 and final < loss0),
        "compile_s": compile_s, "train_s": train_s,
    }
    if verbose:
        print(f"{steps} steps in {train_s:.3f} s ({1e6 * train_s / max(steps, 1):.0f} us/step)")
        print(f"fitted: lengthscale {metrics['lengthscale']:.3f}, signal std "
              f"{metrics['signal_std']:.3f}, noise std {noise_std:.4f} (true {NOISE})")
        print(f"posterior mean vs sin(x): RMSE {rmse:.4f}")
    return metrics


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150,
                        help="gradient-descent steps (default 150)")
    parser.add_argument("--lr", type=float, default=0.5, help="learning rate (default 0.5)")
    parser.add_argument("--seed", type=int, default=0, help="data seed (default 0)")
    parser.add_argument("--quiet", action="store_true", help="print only the result")
    args = parser.parse_args()
    m = main(steps=args.steps, lr=args.lr, verbose=not args.quiet, seed=args.seed)
    if not m["ok"]:
        print(f"FAILED: noise std {m['noise_std']:.4f} (true {NOISE}), RMSE {m['rmse']:.4f}, "
              f"loss {m['loss0']:.4f} -> {m['loss']:.4f}", file=sys.stderr)
        sys.exit(1)
    print(f"OK: noise std {m['noise_std']:.4f} (true {NOISE}), posterior mean RMSE "
          f"{m['rmse']:.4f}, loss {m['loss0']:.4f} -> {m['loss']:.4f}")
