"""Handwritten digits with an MLP, data-parallel over MPI ranks: examples/digits_mlp.py's model,
loss and data, trained with gradc.distributed.train_step.

Every rank loads the same data (the same fixed-seed split), keeps its own shard of the training
set (`gradc.distributed.shard`), and takes minibatches of batch_size / N from it; each step
averages the ranks' gradients with one allreduce, so N ranks together take the same steps as one
process with batch_size (same number of steps per epoch, same learning-rate schedule). The first
step broadcasts rank 0's parameters; all ranks stay bit-identical, rank 0 reports.

    mpiexec -n 2 python3 examples/digits_mlp_distributed.py [--epochs N] [--seed S]
                  [--batch-size B] [--lr LR] [--plot loss.png] [--quiet]

(`mpiexec` comes with `pip install -e ".[mpi]"`, next to the environment's python.) Also runs as
one process without mpiexec. Exits non-zero if the held-out test accuracy is below 95%.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
import digits_mlp  # noqa: E402  (the model, loss and data)

import gradc  # noqa: E402
import gradc.distributed as dist  # noqa: E402

TARGET_ACCURACY = digits_mlp.TARGET_ACCURACY


def main(epochs=30, seed=0, verbose=True, plot=None, batch_size=32, lr=3e-3, comm=None):
    """Train on this rank's shard; returns digits_mlp.main's metrics (the same on every rank),
    plus rank, size, per_rank_batch and allreduce_s (this rank's time in the allreduce)."""
    t_start = time.perf_counter()
    comm = comm if comm is not None else dist.world()
    rank, size = comm.Get_rank(), comm.Get_size()
    verbose = verbose and rank == 0
    if batch_size % size:
        raise SystemExit(f"--batch-size {batch_size} does not split over {size} ranks")
    per_rank = batch_size // size

    x_train, y_train, x_test, y_test = digits_mlp.load_data(seed)  # the same split everywhere
    x_mine, y_mine = dist.shard((x_train, y_train), comm=comm)
    params = digits_mlp.init_params(seed + rank)  # rank 0's are broadcast at the first step
    opt = gradc.optim.Adam(lr=lr)
    step = dist.train_step(digits_mlp.loss, opt, comm=comm)
    rng = np.random.default_rng(seed + 1 + rank)  # each rank shuffles its own shard

    steps_per_epoch = len(x_mine) // per_rank
    losses, compile_s = [], None
    bar = _common.Progress(epochs * steps_per_epoch, f"digits MLP x{size} ranks", verbose)
    with _common.single_thread_blas(), bar, dist.abort_on_error(comm):
        for epoch in range(epochs):
            opt.lr = lr * 0.5 * (1 + np.cos(np.pi * epoch / epochs))  # the same on every rank
            for idx in _common.batches(len(x_mine), per_rank, rng):
                t0 = time.perf_counter()
                value = step(params, x_mine[idx], y_mine[idx])  # the mean loss over the ranks
                if compile_s is None:
                    compile_s = time.perf_counter() - t0
                    bar.write(f"first step (trace + compile): {compile_s:.2f} s")
                losses.append(value)
                bar.update(value)
            if verbose and (epoch % 10 == 9 or epoch == epochs - 1):
                bar.write(f"epoch {epoch + 1:3d}  loss {np.mean(losses[-steps_per_epoch:]):.4f}  "
                          f"test accuracy "
                          f"{100 * digits_mlp.accuracy(params, x_test, y_test):.1f}%")

    flat = np.concatenate([p.ravel() for p in params.values()])
    identical = all(np.array_equal(flat, other) for other in comm.allgather(flat))
    test_acc = digits_mlp.accuracy(params, x_test, y_test)
    metrics = {
        "test_accuracy": test_acc,
        "train_accuracy": digits_mlp.accuracy(params, x_train, y_train),
        "final_loss": float(digits_mlp.loss(params, x_train, y_train)),
        "losses": losses,
        "params": params,
        "compiles": _common.compile_count(step),
        "ok": test_acc >= TARGET_ACCURACY and identical,
        "ranks_identical": identical,
        "compile_s": compile_s,
        "wall_s": time.perf_counter() - t_start,
        "rank": rank,
        "size": size,
        "per_rank_batch": per_rank,
        "allreduce_s": step.allreduce_s,
    }
    if plot and rank == 0:
        _common.plot_losses(losses, plot, f"digits MLP on {size} ranks: training loss")
        if verbose:
            print(f"loss curve written to {plot}")
    if verbose:
        print(f"{len(losses)} steps of {per_rank} examples on each of {size} ranks "
              f"({'identical' if identical else 'DIFFERENT'} parameters on every rank; "
              f"{step.allreduce_s:.2f} s in the allreduce); train accuracy "
              f"{100 * metrics['train_accuracy']:.1f}%, test accuracy {100 * test_acc:.1f}% "
              f"({len(x_test)} held-out images)")
    return metrics


if __name__ == "__main__":
    args = _common.parse_args(__doc__, epochs=30, extra=[
        ("--batch-size", dict(type=int, default=32,
                              help="global minibatch size, split over the ranks (default 32)")),
        ("--lr", dict(type=float, default=3e-3, help="peak Adam learning rate (default 3e-3)")),
    ])
    m = main(epochs=args.epochs, seed=args.seed, verbose=not args.quiet, plot=args.plot,
             batch_size=args.batch_size, lr=args.lr)
    if m["rank"] == 0:
        _common.finish(m, f"digits MLP on {m['size']} ranks", "test_accuracy", TARGET_ACCURACY)
    elif not m["ok"]:
        sys.exit(1)
