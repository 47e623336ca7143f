"""What crosses between host and device with target="cuda" (gradc/cuda_runtime.py), checked
under Numba's CUDA simulator against target="cpu"; run by tests/test_cuda_device.py, prints JSON
{check: {"ok": bool, "err": message}}."""
import json
import sys
import traceback

import numpy as np
from numba import cuda

import gradc

rng = np.random.default_rng(1)
RESULTS = {}


def loss(p, x, y):
    h = np.tanh(x @ p["w"] + p["b"])
    return np.mean((h - y) ** 2)


def batch(n):
    return (rng.standard_normal((n, 3)).astype(np.float32),
            rng.standard_normal((n, 2)).astype(np.float32))


P0 = {"w": rng.standard_normal((3, 2)).astype(np.float32), "b": np.zeros(2, np.float32)}
BATCHES = [batch(5) for _ in range(3)] + [batch(3)] + [batch(5)]


def params():
    return {k: v.copy() for k, v in P0.items()}


def close(a, b, tol=2e-5):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    err = float(np.abs(a.astype(np.float64) - b).max()) if a.size else 0.0
    assert np.allclose(a, b, rtol=tol, atol=tol), f"max abs difference {err:.3g}"
    return err


def check(name):
    def wrap(f):
        try:
            RESULTS[name] = {"ok": True, "err": f()}
        except Exception as e:  # noqa: BLE001 - reported to the test
            RESULTS[name] = {"ok": False, "err": f"{type(e).__name__}: {e}",
                             "trace": traceback.format_exc()[-1500:]}
        return f
    return wrap


def cpu_run():
    p, step = params(), gradc.train_step(loss, gradc.optim.Adam(lr=0.05))
    losses = [step(p, x, y) for x, y in BATCHES]
    return losses, p, step.state_dict()


CPU_LOSSES, CPU_PARAMS, CPU_STATE = cpu_run()


@check("numpy_params_in_sync")
def _():
    """NumPy parameters: the caller's arrays hold the new values after every step, also across
    a change of batch size (a second signature takes the optimizer state over)."""
    p, step = params(), gradc.train_step(loss, gradc.optim.Adam(lr=0.05), target="cuda")
    errs = []
    for (x, y), want in zip(BATCHES, CPU_LOSSES):
        errs.append(close(step(p, x, y), want))
    errs += [close(p[k], CPU_PARAMS[k]) for k in p]
    state = step.state_dict()
    errs += [close(state["state"][s][k], CPU_STATE["state"][s][k]) for s in state["state"] for k in p]
    return max(errs)


@check("device_params_copy_back_only_the_loss")
def _():
    """Device-array parameters stay on the device: after the first step, a step copies to the
    host only the outputs region (the loss), and its uploads are the batch and the scalars."""
    p = {k: cuda.to_device(v) for k, v in params().items()}
    step = gradc.train_step(loss, gradc.optim.Adam(lr=0.05), target="cuda")
    x, y = BATCHES[0]
    first = step(p, x, y)
    compiled = next(iter(step.cache.values()))
    before = list(compiled.driver.copied)
    second = step(p, *BATCHES[1])
    up, down = (a - b for a, b in zip(compiled.driver.copied, before))
    scalars = 4 * len(step.optimizer.scalar_names)  # float32, like the parameters
    assert down == compiled.plan.output_bytes and down <= 64, (down, compiled.plan.output_bytes)
    assert up == x.nbytes + y.nbytes + scalars, (up, x.nbytes + y.nbytes + scalars)
    errs = [close(first, CPU_LOSSES[0]), close(second, CPU_LOSSES[1])]
    for xy, want in zip(BATCHES[2:], CPU_LOSSES[2:]):
        errs.append(close(step(p, *xy), want))
    errs += [close(p[k].copy_to_host(), CPU_PARAMS[k]) for k in p]
    return max(errs)


@check("state_dict_round_trip")
def _():
    """load_state_dict uploads the loaded state: a CUDA step resumed from a CPU step's state
    continues exactly as the CPU step does."""
    cpu_p, cpu_step = params(), gradc.train_step(loss, gradc.optim.Adam(lr=0.05))
    gpu_p, gpu_step = params(), gradc.train_step(loss, gradc.optim.Adam(lr=0.05), target="cuda")
    for xy in BATCHES[:2]:
        cpu_step(cpu_p, *xy)
        gpu_step(gpu_p, *xy)
    gpu_step.load_state_dict(cpu_step.state_dict())
    for k in gpu_p:
        gpu_p[k][...] = cpu_p[k]
    return max(close(gpu_step(gpu_p, *xy), cpu_step(cpu_p, *xy)) for xy in BATCHES[2:])


@check("host_writes_between_steps_are_seen")
def _():
    """Writing into a NumPy parameter between steps is what the next step uses."""
    cpu_p, cpu_step = params(), gradc.train_step(loss, gradc.optim.SGD(lr=0.1))
    gpu_p, gpu_step = params(), gradc.train_step(loss, gradc.optim.SGD(lr=0.1), target="cuda")
    cpu_step(cpu_p, *BATCHES[0])
    gpu_step(gpu_p, *BATCHES[0])
    for p in (cpu_p, gpu_p):
        p["w"] *= 0.5
    return close(gpu_step(gpu_p, *BATCHES[1]), cpu_step(cpu_p, *BATCHES[1]))


@check("value_and_grad_device_inputs")
def _():
    x, y = BATCHES[0]
    want_v, want_g = gradc.value_and_grad(loss)(params(), x, y)
    f = gradc.value_and_grad(loss, target="cuda")
    dev = {k: cuda.to_device(v) for k, v in params().items()}
    v, g = f(dev, cuda.to_device(x), cuda.to_device(y))
    v2, g2 = f(params(), x, y)  # the same signature with NumPy inputs
    assert isinstance(g["w"], np.ndarray)
    return max([close(v, want_v), close(v2, want_v)] + [close(g[k], want_g[k]) for k in g]
               + [close(g2[k], want_g[k]) for k in g])


@check("device_array_to_cpu_function_is_an_error")
def _():
    try:
        gradc.grad(loss)({k: cuda.to_device(v) for k, v in params().items()}, *BATCHES[0])
    except gradc.GradcError as e:
        assert "target='cpu'" in str(e) and "sim_device.py" in str(e), str(e)
        return 0.0
    raise AssertionError("no error")


# --- reductions: shared-memory trees in a fixed order ------------------------------------------
X = rng.standard_normal((3, 700)).astype(np.float32)


def chunked_sum(x):  # 2100 elements into one: chunks, then a second pass
    return np.sum(np.tanh(x) * 2.0)


def mixed_axes(x):  # one fused kernel reducing over axis 1 and over axis 0
    return x.max(axis=1).sum() + x.sum(axis=0).max()


@check("reductions_match_cpu_and_repeat_exactly")
def _():
    errs = []
    for f in (chunked_sum, mixed_axes):
        gpu = gradc.value_and_grad(f, target="cuda")
        (v1, g1), (v2, g2) = gpu(X), gpu(X)
        assert v1 == v2 and np.array_equal(g1, g2), f"{f.__name__}: differs from run to run"
        v, g = gradc.value_and_grad(f)(X)
        errs += [close(v1, v, 1e-5), close(g1, g)]
    return max(errs)


@check("bool_and_int_reductions")
def _():
    def count(x):
        return (x > 0).sum(axis=1), (x > 0).max(axis=0), np.any(x > 2.0, axis=1), (x > -3.0).all(axis=0)
    got, want = gradc.jit(count, target="cuda")(X), gradc.jit(count)(X)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and np.array_equal(a, b), (a, b)
    return 0.0


@check("aux_reductions_read_the_parameters_before_the_update")
def _():
    """A train step's aux reduced over other axes than the loss's, in the kernel that writes
    the update over the parameter: CUDA ran it after that store (aux of the updated W)."""
    def with_aux(p):
        return np.sum(p["W"] ** 2), {"cols": p["W"].sum(axis=0), "rows": p["W"].max(axis=1)}
    w0 = np.arange(24.0).reshape(4, 6) / 10
    errs = []
    for params in ({"W": w0.copy()}, {"W": cuda.to_device(w0)}):
        step = gradc.train_step(with_aux, gradc.optim.SGD(0.1), has_aux=True, target="cuda")
        _, aux = step(params)
        errs += [close(aux["cols"], w0.sum(axis=0), 1e-12), close(aux["rows"], w0.max(axis=1), 1e-12)]
        close(np.asarray(params["W"].copy_to_host() if hasattr(params["W"], "copy_to_host")
                         else params["W"]), 0.8 * w0, 1e-12)
    return max(errs)


@check("a_strided_device_array_is_refused_by_name")
def _():
    # (and one in Fortran order: on a GPU its upload, a reshape of Numba's device array, is a
    # view in memory order, which the kernels read transposed; fuzz42c)
    fortran = cuda.to_device(np.asfortranarray(np.arange(12.0).reshape(3, 4)))
    for given in (cuda.to_device(np.arange(20.0))[::2], fortran):
        try:
            gradc.jit(lambda x: x * 2.0, target="cuda")(given)
        except gradc.SignatureError as e:
            assert "C order" in str(e) and "ascontiguousarray" in str(e), str(e)
            continue
        raise AssertionError("no SignatureError")
    return 0.0


@check("a_device_array_read_from_outside_is_refused_by_name")
def _():
    outside = cuda.to_device(np.arange(3.0))
    try:
        gradc.jit(lambda a: a * outside, target="cuda")(np.eye(3))
    except gradc.UnsupportedOpError as e:
        assert "pass it as an argument" in str(e), str(e)
        return 0.0
    raise AssertionError("no UnsupportedOpError")


@check("a_generator_over_a_strided_column_is_advanced_there")
def _():
    """A Generator's state is written in place: a view with gaps (a column of a table of
    states) took the writes in a throwaway copy, every call drawing the same numbers."""
    states = np.zeros((2, 3), np.int64)
    states[0] = [7, 8, 9]
    draw = gradc.jit(lambda x, rng: x + rng.random(3), target="cuda")
    on_cpu = gradc.jit(lambda x, rng: x + rng.random(3))
    column, reference = gradc.random.Generator.from_state(states[:, 0]), gradc.random.Generator(7)
    errs = [close(draw(np.zeros(3), column), on_cpu(np.zeros(3), reference), 1e-6)
            for _ in range(2)]
    assert states.tolist() == [[7, 8, 9], [2, 0, 0]], states.tolist()
    return max(errs)


@check("a_read_only_generator_state_is_refused_by_name")
def _():
    rng = gradc.random.Generator(7)
    rng.state.flags.writeable = False
    try:
        gradc.jit(lambda x, rng: x + rng.random(3), target="cuda")(np.zeros(3), rng)
    except gradc.SignatureError as e:
        assert "read-only array" in str(e) and "sim_device.py" in str(e), str(e)
        assert rng.state.tolist() == [7, 0], rng.state.tolist()
        return 0.0
    raise AssertionError("no SignatureError")


json.dump(RESULTS, sys.stdout)
