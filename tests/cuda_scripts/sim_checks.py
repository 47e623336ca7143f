"""CUDA target checks under Numba's CUDA simulator (run by tests/test_cuda.py in a subprocess
with NUMBA_ENABLE_CUDASIM=1, which must be set before numba.cuda is imported).

Every check compiles one function for target="cuda" and target="cpu" and compares the values
and gradients; shapes are tiny because the simulator runs each GPU thread as a Python thread.
Prints one JSON object: {name: {"ok": bool, "err": max abs difference or a message}}.
"""
import json
import sys
import time
import traceback

import numpy as np

import gradc

RESULTS = {}
RTOL, ATOL = 2e-5, 2e-5  # float32: sums in atomic (any) order
rng = np.random.default_rng(0)


def f32(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def leaves(tree):
    if isinstance(tree, dict):
        return [x for k in sorted(tree) for x in leaves(tree[k])]
    if isinstance(tree, (list, tuple)):
        return [x for t in tree for x in leaves(t)]
    return [np.asarray(tree)]


def compare(a, b):
    la, lb = leaves(a), leaves(b)
    assert len(la) == len(lb), (len(la), len(lb))
    worst = 0.0
    for x, y in zip(la, lb):
        assert x.shape == y.shape and x.dtype == y.dtype, (x.shape, y.shape, x.dtype, y.dtype)
        if not np.allclose(x, y, rtol=RTOL, atol=ATOL, equal_nan=True):
            raise AssertionError(f"max abs difference {np.nanmax(np.abs(x.astype(np.float64) - y)):.3g}")
        if x.size and np.issubdtype(x.dtype, np.floating):
            finite = np.isfinite(y)
            if finite.any():
                worst = max(worst, float(np.abs(x[finite].astype(np.float64) - y[finite]).max()))
    return worst


def check(name, fn, *args, mode="value_and_grad", argnums=0):
    t0 = time.perf_counter()
    try:
        make = getattr(gradc, mode)
        kw = {} if mode == "jit" else {"argnums": argnums}
        cpu = make(fn, target="cpu", **kw)(*args)
        cuda = make(fn, target="cuda", **kw)(*args)
        RESULTS[name] = {"ok": True, "err": compare(cuda, cpu)}
    except Exception as e:  # noqa: BLE001 - reported to the test
        RESULTS[name] = {"ok": False, "err": f"{type(e).__name__}: {e}",
                         "trace": traceback.format_exc()[-1500:]}
    RESULTS[name]["s"] = round(time.perf_counter() - t0, 2)


# --- elementwise, transcendental, broadcasting ----------------------------------------------
x, y = f32(4, 5), f32(4, 5)
check("elementwise", lambda a, b: (a * b - a / (b * b + 1.0) + np.maximum(a, b) - np.minimum(a, 0.5)
                                    + np.abs(a) + np.square(b)).sum(), x, y, argnums=(0, 1))
check("transcendental", lambda a: (np.exp(a) + np.log1p(np.exp(a)) + np.tanh(a) + np.sin(a)
                                   + np.cos(a) + np.sqrt(a * a + 1.0) + np.expm1(a * 0.5)
                                   + np.log(a * a + 0.1)).sum(), x)
check("activations", lambda a: (gradc.nn.relu(a) + gradc.nn.sigmoid(a) + gradc.nn.softplus(a)
                                + gradc.nn.gelu(a)).sum(), x)
check("where_compare", lambda a, b: np.where(a > b, a * 2.0, b - 1.0).sum()
      + (a ** 2.0).mean(), x, y, argnums=(0, 1))
check("floor_sign_jit", lambda a: [np.floor(a * 3.0), np.ceil(a), np.sign(a), a // 0.7, a % 0.7],
      x, mode="jit")
check("broadcast", lambda a, r, c: ((a + r) * c).sum(), x, f32(5), f32(4, 1), argnums=(0, 1, 2))
check("transpose_slice_views", lambda a: (a.T[1:4] * a.T[:3]).sum() + a[::-1, ::2].sum(), x)

# --- reductions -------------------------------------------------------------------------------
z = f32(2, 3, 4)
check("sum_axes", lambda a: (a.sum(axis=0) ** 2.0).sum() + (a.sum(axis=(1, 2)) ** 2.0).sum()
      + (a.sum(axis=1, keepdims=True) * a).sum(), z)
check("max_min", lambda a: a.max(axis=2).sum() + a.min(axis=0).sum() + a.max() - a.min(axis=(0, 2)).sum(), z)
check("mean_var", lambda a: a.mean() + ((a - a.mean(axis=1, keepdims=True)) ** 2.0).mean(), z)
check("reductions_jit", lambda a: [a.sum(axis=1), a.max(axis=(0, 2)), a.min()], z, mode="jit")

# --- matmul ---------------------------------------------------------------------------------
check("matmul_2d", lambda a, b: np.tanh(a @ b).sum() + (a.T @ a).sum(), f32(3, 4), f32(4, 5),
      argnums=(0, 1))
check("matmul_batched", lambda a, b: (np.tanh(a @ b) * 2.0).sum(), f32(2, 3, 4), f32(2, 4, 3),
      argnums=(0, 1))

# --- gathers, slicing, concatenate -------------------------------------------------------------
table, idx = f32(6, 3), np.array([0, 5, 2, 5], np.int64)
check("take_embedding", lambda t, i: (np.tanh(gradc.nn.embedding(t, i)) * 2.0).sum(), table, idx)
check("take_axis1", lambda t: (np.take(t, np.array([2, 0, 2]), axis=1) ** 2.0).sum(), table)
logits, labels = f32(4, 5), np.array([1, 0, 4, 4], np.int64)
check("take_along_axis", lambda l, y: (l[np.arange(4), y] ** 2.0).sum(), logits, labels)
check("slice_concat", lambda a, b: (np.concatenate([a[:, 1:3], b], axis=1) ** 2.0).sum()
      + (np.concatenate([a, b[:, :1]], axis=1) * 3.0).sum(), x, f32(4, 2), argnums=(0, 1))
check("stride_slice_grad", lambda a: (a[1::2, ::3] ** 3.0).sum() + a[:2].sum(), x)

# --- conv, pooling, softmax cross-entropy --------------------------------------------------
img, w, b = f32(1, 2, 5, 5), f32(2, 2, 3, 3, scale=0.3), f32(2)
check("conv2d", lambda w, b, x: (np.tanh(gradc.nn.conv2d(x, w, b, padding=1)) ** 2.0).sum(),
      w, b, img, argnums=(0, 1, 2))
check("pooling", lambda x: gradc.nn.max_pool2d(x, 2).sum() + (gradc.nn.avg_pool2d(x, 2, padding=1) ** 2.0).sum(),
      img)
check("cross_entropy", lambda l, y: gradc.nn.cross_entropy(l, y), logits, labels)
check("softmax_log_softmax", lambda l: (gradc.nn.softmax(l, axis=-1) ** 2.0).sum()
      + gradc.nn.log_softmax(l, axis=0).mean(), logits)
check("float64", lambda a: (np.exp(a) * a).sum(), x.astype(np.float64))


# --- train_step: Adam on a tiny MLP, several steps -------------------------------------------
def mlp_loss(p, x, y):
    h = np.tanh(x @ p["W1"] + p["b1"])
    return gradc.nn.cross_entropy(h @ p["W2"] + p["b2"], y)


def train(target, steps=3):
    r = np.random.default_rng(1)
    p = {"W1": (r.standard_normal((4, 6)) * 0.5).astype(np.float32), "b1": np.zeros(6, np.float32),
         "W2": (r.standard_normal((6, 3)) * 0.5).astype(np.float32), "b2": np.zeros(3, np.float32)}
    xs = r.standard_normal((4, 4)).astype(np.float32)
    ys = np.array([0, 2, 1, 2], np.int64)
    step = gradc.train_step(mlp_loss, gradc.optim.Adam(lr=0.05), target=target)
    ids = {k: id(v) for k, v in p.items()}
    losses = [step(p, xs, ys) for _ in range(steps)]
    assert all(id(v) == ids[k] for k, v in p.items())
    return losses, p, step.state_dict()


t0 = time.perf_counter()
try:
    (l_cpu, p_cpu, s_cpu), (l_gpu, p_gpu, s_gpu) = train("cpu"), train("cuda")
    assert np.allclose(l_cpu, l_gpu, rtol=1e-5, atol=1e-6), (l_cpu, l_gpu)
    RESULTS["train_step_adam"] = {"ok": True, "err": max(compare(p_gpu, p_cpu), compare(s_gpu["state"], s_cpu["state"])),
                                  "losses": l_gpu, "changed": bool(l_gpu[0] != l_gpu[-1])}
except Exception as e:  # noqa: BLE001
    RESULTS["train_step_adam"] = {"ok": False, "err": f"{type(e).__name__}: {e}",
                                  "trace": traceback.format_exc()[-1500:]}
RESULTS["train_step_adam"]["s"] = round(time.perf_counter() - t0, 2)

# --- errors ---------------------------------------------------------------------------------
try:
    gradc.jit(lambda t, i: np.take(t, i, axis=0), target="cuda")(table, np.array([7]))
    RESULTS["index_error"] = {"ok": False, "err": "no error for an index out of range"}
except IndexError as e:
    RESULTS["index_error"] = {"ok": "take" in str(e), "err": str(e)}


# --- PTX: no .f64 in a float32 graph's kernels, where the CUDA compiler works -----------------
def ptx_check():
    from numba import cuda, float32
    try:
        cuda.compile_ptx(lambda a: None, (float32[:],))
    except Exception as e:  # noqa: BLE001
        return {"ok": True, "skipped": f"cuda.compile_ptx does not work here: {type(e).__name__}: "
                                       f"{str(e).strip().splitlines()[-1] if str(e).strip() else ''}"}
    from gradc.codegen.cuda import kernel_ptx
    f = gradc.value_and_grad(lambda a, w: gradc.nn.cross_entropy(np.tanh(a @ w), labels), argnums=1,
                             target="cuda")
    compiled = f.compiled_for(x, f32(5, 5))
    bad = [name for name, ptx in kernel_ptx(compiled.program) if ".f64" in ptx]
    return {"ok": not bad, "err": f"kernels with .f64: {bad}" if bad else ""}


if not __import__("numba").config.ENABLE_CUDASIM:
    RESULTS["ptx_no_f64"] = ptx_check()
else:
    try:
        RESULTS["ptx_no_f64"] = ptx_check()
    except Exception as e:  # noqa: BLE001
        RESULTS["ptx_no_f64"] = {"ok": False, "err": f"{type(e).__name__}: {e}"}

json.dump(RESULTS, sys.stdout)
