"""Reversing integer sequences with one block of self-attention, AdamW via gradc.train_step.

The data is generated here: sequences of 8 random digits (0..9); the target is the same
sequence reversed. The model is one transformer-style block with a single head:

    e      = embedding(tokens) + positional embedding                 (batch, 8, D)
    q, k, v = e @ Wq, e @ Wk, e @ Wv
    a      = softmax(q @ k^T / sqrt(D)) @ v                            (batch, 8, D)
    h      = layer_norm(e + a @ Wa, gamma, beta)                       (residual + layer norm)
    logits = h @ Wout + bout                                           (batch, 8, 10)

with a softmax cross-entropy over every position. Each output position has to learn to attend
to the mirrored input position, which only the positional embeddings can tell apart. Accuracy
is measured on 1,024 held-out sequences (per token and per whole sequence).

    python3 examples/attention.py [--epochs N] [--seed S] [--dim D] [--plot loss.png] [--quiet]

Exits non-zero if the held-out per-token accuracy is below 99%.
"""
from __future__ import annotations

import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

import gradc  # noqa: E402

TARGET_TOKEN_ACCURACY = 0.99
LENGTH = 8
VOCAB = 10
DIM = 32


def make_data(n, length=LENGTH, seed=0):
    """(tokens, targets), each (n, length) int64: targets are the tokens reversed."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, VOCAB, size=(n, length))
    return x, np.ascontiguousarray(x[:, ::-1])


def init_params(seed=0, dim=DIM, length=LENGTH):
    rng = np.random.default_rng(seed)

    def dense(n_in, n_out):
        return _common.float32(rng.standard_normal((n_in, n_out)) / np.sqrt(n_in))

    return {
        "tok": _common.float32(rng.standard_normal((VOCAB, dim))),
        "pos": _common.float32(rng.standard_normal((length, dim))),
        "Wq": dense(dim, dim), "Wk": dense(dim, dim), "Wv": dense(dim, dim), "Wa": dense(dim, dim),
        "gamma": np.ones(dim, np.float32), "beta": np.zeros(dim, np.float32),
        "Wout": dense(dim, VOCAB), "bout": np.zeros(VOCAB, np.float32),
    }


def forward(params, tokens):
    """Logits (batch, length, VOCAB). Traced by gradc in `loss`; plain NumPy for evaluation."""
    dim = params["Wq"].shape[0]
    e = gradc.nn.embedding(params["tok"], tokens) + params["pos"]      # (B, L, D)
    q, k, v = e @ params["Wq"], e @ params["Wk"], e @ params["Wv"]
    scores = q @ np.swapaxes(k, -1, -2) * (1.0 / math.sqrt(dim))       # (B, L, L); a Python
    # float, not np.sqrt: under NumPy 2's promotion rules a np.float64 scalar makes float64
    a = gradc.nn.softmax(scores, axis=-1) @ v                          # (B, L, D)
    h = gradc.nn.layer_norm(e + a @ params["Wa"], params["gamma"], params["beta"])
    return h @ params["Wout"] + params["bout"]


def loss(params, tokens, targets):
    logits = forward(params, tokens)
    b, length, vocab = logits.shape
    return gradc.nn.cross_entropy(logits.reshape(b * length, vocab), targets.reshape(b * length))


def accuracy(params, tokens, targets):
    """(per-token accuracy, whole-sequence accuracy)."""
    right = np.argmax(forward(params, tokens), axis=-1) == targets
    return float(np.mean(right)), float(np.mean(np.all(right, axis=1)))


def main(epochs=8, seed=0, verbose=True, plot=None, batch_size=64, lr=1e-2, weight_decay=1e-2,
         dim=DIM, n_train=4096, n_test=1024):
    """Train and return the final metrics: token_accuracy, sequence_accuracy (held-out),
    final_loss (held-out), losses, params (the trained arrays), compiles (signatures step
    compiled), ok (token accuracy >= TARGET_TOKEN_ACCURACY), compile_s, wall_s."""
    t_start = time.perf_counter()
    x_train, y_train = make_data(n_train, seed=seed)
    x_test, y_test = make_data(n_test, seed=seed + 1000)
    params = init_params(seed, dim)
    opt = gradc.optim.AdamW(lr=lr, betas=(0.9, 0.98), weight_decay=weight_decay)
    step = gradc.train_step(loss, opt)
    rng = np.random.default_rng(seed + 1)

    steps_per_epoch = n_train // batch_size
    total = epochs * steps_per_epoch
    warmup = min(50, total // 10)
    losses, compile_s = [], None
    bar = _common.Progress(total, "attention", verbose)
    with _common.single_thread_blas(), bar:  # one BLAS thread: see _common
        for epoch in range(epochs):
            for idx in _common.batches(n_train, batch_size, rng):
                k = len(losses)
                # linear warm-up, then cosine decay; a runtime scalar, no recompile
                opt.lr = lr * (k + 1) / warmup if k < warmup else \
                    lr * 0.5 * (1 + np.cos(np.pi * (k - warmup) / (total - warmup)))
                t0 = time.perf_counter()
                value = step(params, x_train[idx], y_train[idx])
                if compile_s is None:
                    compile_s = time.perf_counter() - t0
                    bar.write(f"first step (trace + compile): {compile_s:.2f} s")
                losses.append(value)
                bar.update(value)
            if verbose and (epoch % 4 == 3 or epoch == epochs - 1):
                tok, seq = accuracy(params, x_test, y_test)
                bar.write(f"epoch {epoch + 1:3d}  loss {np.mean(losses[-steps_per_epoch:]):.4f}  "
                          f"held-out accuracy {100 * tok:.1f}% per token, {100 * seq:.1f}% "
                          "per sequence")

    tok, seq = accuracy(params, x_test, y_test)
    metrics = {
        "token_accuracy": tok,
        "sequence_accuracy": seq,
        "final_loss": float(loss(params, x_test, y_test)),
        "losses": losses,
        "params": params,
        "compiles": _common.compile_count(step),
        "ok": tok >= TARGET_TOKEN_ACCURACY,
        "compile_s": compile_s,
        "wall_s": time.perf_counter() - t_start,
    }
    if plot:
        _common.plot_losses(losses, plot, "attention (reverse 8 digits): training loss")
        if verbose:
            print(f"loss curve written to {plot}")
    if verbose:
        print(f"{len(losses)} steps; held-out accuracy {100 * tok:.2f}% per token, "
              f"{100 * seq:.1f}% of sequences fully reversed (chance: 10% per token)")
    return metrics


if __name__ == "__main__":
    args = _common.parse_args(__doc__, epochs=8, extra=[
        ("--dim", dict(type=int, default=DIM, help=f"model width (default {DIM})")),
        ("--batch-size", dict(type=int, default=64, help="minibatch size (default 64)")),
        ("--lr", dict(type=float, default=1e-2, help="peak AdamW learning rate (default 1e-2)")),
    ])
    m = main(epochs=args.epochs, seed=args.seed, verbose=not args.quiet, plot=args.plot,
             batch_size=args.batch_size, lr=args.lr, dim=args.dim)
    _common.finish(m, "attention", "token_accuracy", TARGET_TOKEN_ACCURACY)
