"""W2 and W3 on a GPU: gradc's target="cuda" train step against PyTorch CUDA eager, side by side.

    python3 benchmarks/gpu.py [--only W2,W3] [--seconds 2]

Both systems train the same workload (benchmarks/workloads.py) from the same parameters with
plain SGD: gradc with its parameters as device arrays (a step copies only the loss back) and,
for comparison, as NumPy arrays (a round trip of the parameters per step); PyTorch with tensors
on the GPU and `torch.optim.SGD(foreach=True)`, `loss.item()` per step (the same one scalar
back to the host). Steps alternate between systems in rounds; the table gives the median and
minimum step time and the ratio to gradc (above 1: gradc is faster), the first-call (compile)
time, and the largest difference of the parameters after the same steps.

Needs a CUDA GPU, numba-cuda and torch with CUDA (the lent H200 machines have both); prints why
and exits 0 where either is missing, so it can run in any prepared device script.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gradc  # noqa: E402
from workloads import get  # noqa: E402


def gradc_runner(w, params, batch, device_params):
    from numba import cuda
    step = gradc.train_step(w.loss, gradc.optim.SGD(lr=w.lr), target="cuda")
    p = {k: cuda.to_device(v) for k, v in params.items()} if device_params else \
        {k: v.copy() for k, v in params.items()}
    data = tuple(cuda.to_device(b) for b in batch)  # the batch stays on the device too

    def run():
        step(p, *data)
        cuda.synchronize()

    def final():
        return {k: (v.copy_to_host() if device_params else v) for k, v in p.items()}
    return run, final


def torch_runner(w, params, batch):
    import torch
    dev = torch.device("cuda")
    P = {k: torch.from_numpy(v.copy()).to(dev).requires_grad_() for k, v in params.items()}
    data = tuple(torch.from_numpy(b).to(dev) for b in batch)
    opt = torch.optim.SGD(list(P.values()), lr=w.lr, foreach=True)

    def run():
        opt.zero_grad(set_to_none=True)
        loss = w.torch_loss(P, *data)
        loss.backward()
        opt.step()
        loss.item()  # one scalar back to the host, as gradc returns the loss
        torch.cuda.synchronize()

    def final():
        return {k: v.detach().cpu().numpy() for k, v in P.items()}
    return run, final


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="W2,W3")
    ap.add_argument("--seconds", type=float, default=2.0, help="timed seconds per system")
    args = ap.parse_args(argv)
    try:
        from numba import cuda
        import torch
        if not (cuda.is_available() and torch.cuda.is_available()):
            raise RuntimeError("no CUDA GPU visible to numba-cuda and torch")
    except Exception as e:  # noqa: BLE001
        print(f"benchmarks/gpu.py: skipped: {type(e).__name__}: {e}")
        return 0
    print(f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}; gradc {gradc.__version__}")
    print(f"{'workload':<8} {'system':<26} {'first call':>11} {'median':>10} {'min':>10} "
          f"{'÷ gradc':>8} {'max |Δp|':>10}")
    for name in args.only.split(","):
        w = get(name)
        params, batch = w.init(0)
        runners = {"gradc (device params)": gradc_runner(w, params, batch, True),
                   "gradc (NumPy params)": gradc_runner(w, params, batch, False),
                   "torch CUDA eager": torch_runner(w, params, batch)}
        first, times, steps = {}, {k: [] for k in runners}, {k: 0 for k in runners}
        for k, (run, _) in runners.items():
            t0 = time.perf_counter()
            run()
            first[k] = time.perf_counter() - t0
            steps[k] += 1
        for _ in range(3):  # warm-up
            for k, (run, _) in runners.items():
                run()
                steps[k] += 1
        deadline = time.perf_counter() + args.seconds * len(runners)
        while time.perf_counter() < deadline:  # rounds: each system one step in turn
            for k, (run, _) in runners.items():
                t0 = time.perf_counter()
                run()
                times[k].append(time.perf_counter() - t0)
                steps[k] += 1
        # the same number of steps on every system, so the parameters are comparable
        n = max(steps.values())
        for k, (run, _) in runners.items():
            for _ in range(n - steps[k]):
                run()
        ref = runners["gradc (device params)"][1]()
        base = statistics.median(times["gradc (device params)"])
        for k, (_, final) in runners.items():
            med, low = statistics.median(times[k]), min(times[k])
            diff = max(float(np.abs(final()[p] - ref[p]).max()) for p in ref)
            print(f"{name:<8} {k:<26} {first[k] * 1e3:>9.0f}ms {med * 1e6:>8.0f}µs "
                  f"{low * 1e6:>8.0f}µs {med / base:>8.2f} {diff:>10.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
