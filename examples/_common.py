"""Helpers shared by the training examples (not part of gradc).

- `parse_args`: the common command line (--epochs, --seed, --plot FILE.png, --quiet, plus extras).
- `Progress`: a tqdm progress bar over training steps, with a plain-text fallback when tqdm is
  not installed (or when not verbose: then it prints nothing).
- `plot_losses`: the loss curve as a PNG, with matplotlib's non-interactive backend.
- `train_test_split`: a fixed-seed shuffled split; `batches`: fixed-size minibatches that drop
  the ragged last one (a new batch shape would compile gradc's step again).
- `single_thread_blas`: run BLAS on one thread while training (see its docstring).
- `finish`: print the result and exit non-zero when an example misses its target.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

import numpy as np


# --- command line --------------------------------------------------------------------------

def parse_args(doc, epochs, seed=0, extra=(), argv=None):
    """The options every example takes. `extra` is a list of (flag, kwargs) for add_argument."""
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=epochs,
                        help=f"training epochs (default {epochs})")
    parser.add_argument("--seed", type=int, default=seed, help=f"random seed (default {seed})")
    parser.add_argument("--plot", metavar="FILE.png", default=None,
                        help="write the training-loss curve to this PNG (needs matplotlib)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar; print the result only")
    for flag, kwargs in extra:
        parser.add_argument(flag, **kwargs)
    return parser.parse_args(argv)


# --- progress ------------------------------------------------------------------------------

try:  # optional: pip install tqdm (or pip install -e ".[examples]")
    from tqdm.auto import tqdm as _tqdm
except ImportError:  # pragma: no cover - depends on the environment
    _tqdm = None


class Progress:
    """Progress over `total` training steps: `update(loss)` after each step, `close()` at the end.

    With tqdm: a bar showing the running (smoothed) loss. Without tqdm: a line every tenth of
    the run. With verbose=False: silent.
    """

    def __init__(self, total, desc="train", verbose=True, use_tqdm=None):
        self.total, self.desc, self.verbose = total, desc, verbose
        self.count, self.smoothed = 0, None
        self.bar = None
        if use_tqdm is None:
            use_tqdm = _tqdm is not None
        if verbose and use_tqdm and _tqdm is not None:
            self.bar = _tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True,
                             file=sys.stdout, mininterval=0.2)
        self._every = max(1, total // 10)
        self._t0 = time.perf_counter()

    def update(self, loss, **extra):
        self.count += 1
        self.smoothed = loss if self.smoothed is None else 0.95 * self.smoothed + 0.05 * loss
        if not self.verbose:
            return
        if self.bar is not None:
            if self.count % 10 == 0 or self.count == self.total:  # postfix formatting is not free
                self.bar.set_postfix(loss=f"{self.smoothed:.4f}", **extra, refresh=False)
            self.bar.update(1)
        elif self.count % self._every == 0 or self.count == self.total:
            rest = "".join(f"  {k} {v}" for k, v in extra.items())
            print(f"{self.desc}: step {self.count}/{self.total}  loss {self.smoothed:.4f}{rest}"
                  f"  ({time.perf_counter() - self._t0:.1f} s)", flush=True)

    def write(self, message):
        """Print a line without breaking the bar."""
        if not self.verbose:
            return
        if self.bar is not None:
            self.bar.write(message, file=sys.stdout)
        else:
            print(message, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --- plotting ------------------------------------------------------------------------------

def plot_losses(losses, path, title="training loss", log=True, smooth=None):
    """Save the per-step training loss (and a moving average) to `path` as a PNG."""
    import matplotlib
    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    losses = np.asarray(losses, dtype=np.float64)
    steps = np.arange(1, len(losses) + 1)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    ax.plot(steps, losses, lw=0.8, alpha=0.45, label="per step")
    smooth = smooth or max(1, len(losses) // 50)
    if smooth > 1 and len(losses) > smooth:
        kernel = np.ones(smooth) / smooth
        ax.plot(steps[smooth - 1:], np.convolve(losses, kernel, mode="valid"), lw=1.8,
                label=f"mean of {smooth}")
    if log and np.all(losses > 0):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# --- data ----------------------------------------------------------------------------------

def train_test_split(x, y, test_fraction=0.2, seed=0):
    """A shuffled split with a fixed seed: (x_train, y_train, x_test, y_test)."""
    n = len(x)
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def batches(n, batch_size, rng):
    """Index arrays of a shuffled epoch in full batches of `batch_size` (the ragged rest is
    dropped, so every step has the same shape and gradc compiles once)."""
    order = rng.permutation(n)
    for start in range(0, n - batch_size + 1, batch_size):
        yield order[start:start + batch_size]


def float32(a):
    """A C-contiguous float32 copy, as gradc.train_step needs for parameters."""
    return np.ascontiguousarray(a, dtype=np.float32)


# --- threads -------------------------------------------------------------------------------

def single_thread_blas():
    """A context manager limiting OpenBLAS/MKL to one thread (threadpoolctl, installed with
    scikit-learn; a no-op without it).

    The matmuls of these small models (a few hundred rows by 32-128 columns) take microseconds;
    handing them to a second BLAS thread costs more than it saves, and when the machine is busy
    the waiting threads make a step 10-80x slower. One thread is faster here in every case.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - depends on the environment
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def compile_count(step):
    """How many signatures a gradc.train_step has compiled (1 with fixed-size batches), or
    None if this gradc does not expose it."""
    cache = getattr(step, "cache", None)
    return len(cache) if isinstance(cache, dict) else None


# --- results -------------------------------------------------------------------------------

def finish(metrics, name, value_key, target, higher_is_better=True, fmt="{:.4f}"):
    """Print OK/FAILED for the example's target and exit non-zero when it is missed."""
    value = metrics[value_key]
    comparison = ">=" if higher_is_better else "<="
    shown, shown_target = fmt.format(value), fmt.format(target)
    if metrics.get("ok"):
        print(f"OK: {name} {value_key} {shown} {comparison} {shown_target} "
              f"({metrics.get('wall_s', float('nan')):.1f} s including compile)")
        return 0
    print(f"FAILED: {name} {value_key} {shown}, target {comparison} {shown_target}",
          file=sys.stderr)
    sys.exit(1)
