"""The CUDA target's float32 sin and cos (gradc/codegen/cuda_math.py `sincos_f32`): float32 and
64-bit integer arithmetic only, so a float32 graph's PTX has no .f64 (libdevice's sinf/cosf
reduce large arguments in double). The same Python source runs here under numba.njit, with
`fmaf` emulated (exact products of float32s in float64, then one rounding per step; a GPU's
fmaf rounds once), against float64 NumPy."""
import types

import numpy as np
import pytest
from numba import njit

cuda_rt = pytest.importorskip("gradc.codegen.cuda_math")


def _cpu_versions():
    """njit copies of fmaf, trig_reduce_f32 and sincos_f32 that call each other."""
    env = dict(vars(cuda_rt))
    env["fmaf"] = njit(cuda_rt.fmaf_host)
    for name in ("trig_reduce_f32", "sincos_f32"):
        f = getattr(cuda_rt, name)
        f = getattr(f, "py_func", f)  # a cuda.jit device function on a CUDA machine
        env[name] = njit(types.FunctionType(f.__code__, env, name))
    return env["sincos_f32"]


SINCOS = _cpu_versions()


@njit
def _sweep(xs, shift, out):
    for i in range(xs.size):
        out[i] = SINCOS(xs[i], shift)


def _ulps(got, x, ref):
    want = ref(x.astype(np.float64))
    spacing = np.spacing(np.abs(want.astype(np.float32))).astype(np.float64)
    return np.abs(got.astype(np.float64) - want) / np.maximum(spacing, np.float64(1e-45))


def _samples(seed):
    """Uniform samples in ranges from tiny to the largest float32, and log-uniform ones."""
    rng = np.random.default_rng(seed)
    parts = [rng.uniform(-hi, hi, 40_000) for hi in (1.0, 4.0, 1e3, 2e3, 1e5, 1e7, 1e10)]
    parts.append(np.sign(rng.standard_normal(80_000)) * np.exp(rng.uniform(-20, 88, 80_000)))
    # near multiples of pi/2, where the reduction cancels the most
    k = rng.integers(1, 1 << 20, 40_000)
    parts.append(k * (np.pi / 2) + rng.uniform(-1e-3, 1e-3, k.size))
    return np.concatenate(parts).astype(np.float32)


@pytest.mark.parametrize("shift,ref", [(0, np.sin), (1, np.cos)], ids=["sin", "cos"])
def test_within_3_ulp_of_the_exact_result(shift, ref):
    x = _samples(shift)
    out = np.empty_like(x)
    _sweep(x, shift, out)
    err = _ulps(out, x, ref)
    worst = int(np.argmax(err))
    assert err.max() <= 3.0, f"{err.max():.2f} ulp at x={x[worst]!r}"


def test_special_values():
    x = np.array([0.0, -0.0, 1e-30, -1e-30, np.inf, -np.inf, np.nan], np.float32)
    s, c = np.empty_like(x), np.empty_like(x)
    _sweep(x, 0, s)
    _sweep(x, 1, c)
    assert np.array_equal(s[:4], x[:4]) and np.signbit(s[1]) and np.isnan(s[4:]).all()
    assert np.array_equal(c[:4], np.ones(4, np.float32)) and np.isnan(c[4:]).all()


def test_two_over_pi_bits():
    """The table's first words are the well-known expansion of 2/pi (0.A2F9836E4E44...)."""
    assert [int(w) for w in cuda_rt.TWO_OVER_PI[2:5]] == [0xA2F9836E, 0x4E441529, 0xFC2757D1]
