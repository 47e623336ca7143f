"""The digits MLP's training step (64-128-10, relu, softmax cross-entropy, Adam, batch 32):
gradc.train_step against the same forward, backward and Adam update written by hand in NumPy,
side by side in one run (alternating, best and median of several rounds).

    python3 benchmarks/bench_digits_step.py [--rounds 7] [--calls 200]
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
import digits_mlp  # noqa: E402

import gradc  # noqa: E402


class NumpyAdamMLP:
    """The model by hand: forward, backward and PyTorch's Adam, float32 throughout."""

    def __init__(self, params, lr=3e-3, b1=0.9, b2=0.999, eps=1e-8):
        self.p, self.lr, self.b1, self.b2, self.eps, self.t = params, lr, b1, b2, eps, 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def __call__(self, x, y):
        p = self.p
        a = x @ p["W1"] + p["b1"]
        h = np.maximum(a, 0)
        z = h @ p["W2"] + p["b2"]
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        s = e.sum(axis=1, keepdims=True)
        n = len(y)
        loss = float(np.mean(np.log(s[:, 0]) - z[np.arange(n), y]))
        dz = e / s
        dz[np.arange(n), y] -= 1
        dz /= n
        grads = {"W2": h.T @ dz, "b2": dz.sum(0)}
        dh = (dz @ p["W2"].T) * (a > 0)
        grads["W1"], grads["b1"] = x.T @ dh, dh.sum(0)
        self.t += 1
        bc1, bc2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        for k, g in grads.items():
            self.m[k] += np.float32(1 - self.b1) * (g - self.m[k])
            self.v[k] = self.v[k] * np.float32(self.b2) + np.float32(1 - self.b2) * g * g
            denom = np.sqrt(self.v[k]) / np.float32(np.sqrt(bc2)) + np.float32(self.eps)
            p[k] -= np.float32(self.lr / bc1) * (self.m[k] / denom)
        return loss


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=200)
    args = ap.parse_args()
    x_train, y_train, _, _ = digits_mlp.load_data(0)
    x, y = np.ascontiguousarray(x_train[:32]), np.ascontiguousarray(y_train[:32])
    p_gradc, p_numpy = digits_mlp.init_params(0), digits_mlp.init_params(0)
    step = gradc.train_step(digits_mlp.loss, gradc.optim.Adam(lr=3e-3))
    by_hand = NumpyAdamMLP(p_numpy)
    t0 = time.perf_counter()
    first = step(p_gradc, x, y)
    cold = time.perf_counter() - t0
    assert abs(first - by_hand(x, y)) < 1e-5, "the two implementations disagree"
    for k in p_gradc:
        np.testing.assert_allclose(p_gradc[k], p_numpy[k], rtol=1e-4, atol=1e-6)
    times = {"gradc": [], "numpy": []}
    for _ in range(args.rounds):
        for name, f in (("gradc", lambda: step(p_gradc, x, y)), ("numpy", lambda: by_hand(x, y))):
            t0 = time.perf_counter()
            for _ in range(args.calls):
                f()
            times[name].append((time.perf_counter() - t0) / args.calls)
    print(f"digits MLP train step (64-128-10, batch 32, Adam), float32; gradc first call "
          f"(trace + compile) {cold:.2f} s")
    print("| system          | best (us) | median (us) |")
    print("|-----------------|----------:|------------:|")
    for name, ts in times.items():
        print(f"| {name:<15} | {min(ts) * 1e6:9.1f} | {np.median(ts) * 1e6:11.1f} |")
    g, n = np.median(times["gradc"]), np.median(times["numpy"])
    print(f"speed-up of gradc over NumPy by hand: {n / g:.2f}x (median), "
          f"{min(times['numpy']) / min(times['gradc']):.2f}x (best)")


if __name__ == "__main__":
    main()
