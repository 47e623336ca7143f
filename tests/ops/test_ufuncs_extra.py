"""The elementwise math ufuncs of gradc/ops/math.py beyond test_ops.py's one Case each: special
values (inf, nan, -0.0, huge arguments), integer and boolean inputs, Python scalars (weak typing),
broadcasting, stability at +-1000, the values at kinks, and grad of grad.

Compiles are what cost time, so each test traces ONE function that returns many results.
"""
import itertools
import operator
import warnings

import numpy as np
import pytest

import gradc

SPECIAL = [np.inf, -np.inf, np.nan, -0.0, 0.0, 1e30, -1e30, 3e38, 1.0, -1.0, 0.5, -0.75, 2.5,
           1e-30, 100.0]

UNARY = [np.tan, np.sinh, np.cosh, np.arcsin, np.arccos, np.arcsinh, np.arccosh, np.arctanh,
         np.log2, np.log10, np.exp2, np.cbrt, np.fabs, np.deg2rad, np.radians, np.rad2deg,
         np.degrees, np.trunc, np.rint, np.signbit, np.isnan, np.isinf, np.isfinite,
         np.conjugate, np.sinc, np.nan_to_num]
BINARY = [np.arctan2, np.hypot, np.logaddexp, np.logaddexp2, np.float_power, np.copysign,
          np.heaviside, np.fmod]
# where the sign of a zero result is part of NumPy's answer
SIGNED_ZEROS = {"tan", "sinh", "arcsin", "arcsinh", "arctanh", "cbrt", "deg2rad", "radians",
                "rad2deg", "degrees", "trunc", "rint", "conjugate", "copysign", "fmod",
                "arctan2", "nan_to_num"}


def _all_ufuncs(x, y):
    """Every function on the special values; binary ones on all pairs (broadcast (n,1), (1,n))."""
    out = {f.__name__: f(x) for f in UNARY}
    out.update({f.__name__: f(x[:, None], y[None, :]) for f in BINARY})
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_special_values_match_numpy(dtype):
    x = np.array(SPECIAL, dtype)
    with np.errstate(all="ignore"):
        expected = _all_ufuncs(x, x)
    got = gradc.jit(_all_ufuncs)(x, x)
    # libmvec's SIMD functions are within 4 ulp of the exact result, NumPy's within 1-2
    rtol = 4e-6 if dtype == np.float32 else 1e-14
    for name, want in expected.items():
        have = got[name]
        assert have.dtype == want.dtype and have.shape == want.shape, name
        if want.dtype == np.bool_:
            np.testing.assert_array_equal(have, want, err_msg=name)
            continue
        np.testing.assert_allclose(have, want, rtol=rtol, atol=0, equal_nan=True, err_msg=name)
        if name in SIGNED_ZEROS:
            zero = want == 0
            np.testing.assert_array_equal(np.signbit(have[zero]), np.signbit(want[zero]),
                                          err_msg=f"{name}: the sign of a zero")


def _int_and_bool(i, j, b):
    return {
        "sin_int": np.tan(i), "hypot_int32": np.hypot(j, j), "arctan2": np.arctan2(i, j),
        "trunc_int": np.trunc(i), "trunc_int32": np.trunc(j), "trunc_bool": np.trunc(b),
        "rint_int": np.rint(i), "fmod_int": np.fmod(i, j), "fmod_int32": np.fmod(j, j[::-1]),
        "copysign_int": np.copysign(i, -1), "heaviside_int": np.heaviside(i, 0.5),
        "float_power_int": np.float_power(i, 2), "conj_int": np.conj(i),
        "isnan_int": np.isnan(i), "isinf_bool": np.isinf(b), "isfinite_int32": np.isfinite(j),
        "signbit_int": np.signbit(i), "signbit_bool": np.signbit(b), "sinc_int": np.sinc(i),
        "sinc_bool": np.sinc(b), "nan_to_num_int": np.nan_to_num(i), "fabs_int32": np.fabs(j),
        "logaddexp_int": np.logaddexp(i, j), "cbrt_int": np.cbrt(i * 9),
    }


def test_integer_and_boolean_inputs_give_numpy_dtypes():
    i = np.array([-7, -3, 0, 2, 5, 8])
    j = np.array([2, -3, 4, 5, -2, 0], np.int32)  # (fmod by 0 is 0 for integers, as NumPy)
    b = np.array([True, False, True, True, False, False])
    with np.errstate(all="ignore"):
        expected = _int_and_bool(i, j, b)
    got = gradc.jit(_int_and_bool)(i, j, b)
    for name, want in expected.items():
        assert got[name].dtype == want.dtype, f"{name}: {got[name].dtype}, NumPy {want.dtype}"
        np.testing.assert_allclose(got[name], want, rtol=1e-14, err_msg=name)


def _int_powers(x, k32, k64, i32):
    return {"f64 ** i32": x ** k32, "f64 ** i64": x ** k64, "f32 ** i32": x.astype(np.float32) ** k32,
            "f32 ** i64": x.astype(np.float32) ** k64, "i32 ** i32": i32 ** np.abs(k32),
            "i32 ** scalar i32": i32 ** np.int32(3), "i64 ** i32": k64 ** np.abs(k32)}


def test_integer_exponents_of_every_width():
    """x ** k with k an int32 or int64 array: under fast math LLVM makes such a power a call of
    the compiler runtime's __powidf2 / __powisf2, which gradc binds for the JIT (codegen/rt.py
    _bind_integer_powers; without it an int32 exponent crashed the process). Values and dtypes
    as NumPy's, and the gradient k x ** (k - 1)."""
    x = np.array([1.5, -2.0, 3.0, 0.5, -1.25, 2.0])
    k32 = np.array([2, 3, 1, -2, 5, 0], np.int32)
    k64, i32 = k32.astype(np.int64), np.array([3, -2, 0, 5, 1, -1], np.int32)
    expected, got = _int_powers(x, k32, k64, i32), gradc.jit(_int_powers)(x, k32, k64, i32)
    for name, want in expected.items():
        assert got[name].dtype == want.dtype, f"{name}: {got[name].dtype}, NumPy {want.dtype}"
        np.testing.assert_allclose(got[name], want, rtol=1e-6, err_msg=name)
    g = gradc.grad(lambda x, k: np.sum(x ** k))(x, k32)
    np.testing.assert_allclose(g, k32 * x ** (k32 - 1.0), rtol=1e-12)


def test_integer_powers_wrap_as_numpy_at_any_exponent():
    """An integer power wraps as NumPy's (by squaring), whatever the exponent: above 2**16
    Numba's ** went through a float pow (2 ** 70000 was INT64_MIN; NumPy's is 0), so gradc
    takes the exponent 16 bits at a time; a constant exponent and an array of them alike."""
    for dtype in (np.int64, np.int32):
        a = np.array([2**30, 3, -3, 7, 1, -1, 0, 2, np.iinfo(dtype).min], dtype)
        exponents = np.array([0, 3, 65536, 65537, 70000, 2**31 - 1] + (
            [2**40 + 12345, 2**63 - 1] if dtype == np.int64 else []), dtype)
        got = gradc.jit(lambda a, k: (a[:, None] ** k, a ** 70000))(a, exponents)
        for g, want in zip(got, (a[:, None] ** exponents, a ** 70000)):
            assert g.dtype == want.dtype
            np.testing.assert_array_equal(g, want)


def _divmods(x, i):
    return np.divmod(x, 0.7), divmod(i, -3), divmod(3.5, x), divmod(x, x * 0.3), np.divmod(i, 4)


OPERATORS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
             "//": operator.floordiv, "%": operator.mod, "**": operator.pow}
NUMBERS = {"2": 2, "2.0": 2.0, "True": True, "f32(2)": np.float32(2), "i32(3)": np.int32(3)}


def _operand_arrays():
    i = np.array([3, -2, 5])
    return {"mask": i > 0, "i64": i, "i32": i.astype(np.int32), "f32": i.astype(np.float32),
            "f64": i * 0.75}


def test_operators_follow_numpys_dtypes_or_refuse():
    """Every arithmetic operator between arrays of each dtype and Python or NumPy numbers, both
    ways round: NumPy's dtype and values where NumPy answers in a dtype gradc has; a refusal
    (a GradcError) where NumPy refuses or answers in a dtype gradc has not. mask ** 2 is
    np.square, int8, while np.power(mask, 2) is int64 (before, gradc answered int64 for both;
    then refused int8: now it runs NumPy's int8 loop, as mask // True and mask % True)."""
    arrays, cases, refused = _operand_arrays(), [], []
    for (a, x), (o, op), (n, k) in itertools.product(arrays.items(), OPERATORS.items(),
                                                      NUMBERS.items()):
        for reflected in (False, True):
            try:
                with np.errstate(all="ignore"):
                    want = op(k, x) if reflected else op(x, k)
            except (TypeError, ValueError):
                refused.append((a, o, n, reflected))
                continue
            (cases if want.dtype.name in ("bool", "int8", "int32", "int64", "float32",
                                          "float64")
             else refused).append((a, o, n, reflected))

    def every_case(**xs):
        return [OPERATORS[o](NUMBERS[n], xs[a]) if r else OPERATORS[o](xs[a], NUMBERS[n])
                for a, o, n, r in cases]

    with np.errstate(all="ignore"):
        for case, got, want in zip(cases, gradc.jit(every_case)(**arrays), every_case(**arrays)):
            assert got.dtype == want.dtype, (case, got.dtype, want.dtype)
            rtol = {"f": 4e-7 if want.dtype == np.float32 else 1e-15}.get(want.dtype.kind, 0)
            np.testing.assert_allclose(got, want, rtol=rtol, err_msg=str(case))  # (fast math's
            # x / 3 is x * (1 / 3), to an ulp)
    assert len(refused) > 5  # (mask - True, k ** negative integers...)
    for a, o, n, r in refused:
        if o == "**" and r and a in ("i64", "i32"):
            continue  # (k ** i: NumPy refuses i's negative values, known only when it runs)
        op, k = OPERATORS[o], NUMBERS[n]
        with pytest.raises(gradc.GradcError):
            gradc.jit(lambda x: op(k, x) if r else op(x, k))(arrays[a])


def test_divmod_builtin_and_ufunc_match_numpy():
    x, i = np.array([1.5, -2.0, 3.0, -0.25]), np.array([7, -3, 5, 0])
    for got, want in zip(gradc.jit(_divmods)(x, i), _divmods(x, i)):
        for g, w in zip(got, want):
            assert g.dtype == w.dtype
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-15)


def test_a_ufunc_numpy_computes_in_the_inputs_integer_dtype_is_refused():
    """np.reciprocal of integers is an integer in NumPy (1 // x, truncated); gradc's is a float
    only, so it refuses rather than answer in another dtype (it gave float64)."""
    with pytest.raises(gradc.UnsupportedOpError, match="int64 in NumPy"):
        gradc.jit(np.reciprocal)(np.array([1, 2, -1]))
    np.testing.assert_array_equal(gradc.jit(np.reciprocal)(np.array([2.0, -4.0])), [0.5, -0.25])


@pytest.mark.parametrize("f", [np.sin, np.exp2, np.hypot, np.copysign])
def test_booleans_numpy_computes_in_float16_are_refused(f):
    """NumPy's math ufuncs compute booleans in float16: gradc has none, so it refuses with what
    to do instead of answering in float64."""
    b = np.array([True, False])
    args = (b,) * f.nin
    with pytest.raises(gradc.UnsupportedOpError, match="astype"):
        gradc.jit(lambda *a: f(*a))(*args)


@pytest.mark.parametrize("f", [np.conjugate, np.fmod, np.floor_divide, np.remainder])
def test_booleans_numpy_computes_in_int8_are_int8(f):
    """np.conj, np.fmod, // and % of booleans are NumPy's int8 loops (by zero: 0): gradc runs
    them so (it refused them while it had no int8)."""
    a, b = np.array([True, False, True, False]), np.array([True, True, False, False])
    with np.errstate(all="ignore"):
        want = f(a, b) if f.nin == 2 else f(a)
    got = gradc.jit(lambda a, b: f(a, b) if f.nin == 2 else f(a))(a, b)
    assert want.dtype == got.dtype == np.int8
    np.testing.assert_array_equal(got, want)


def _weak(x, i):
    return {"hypot": np.hypot(x, 2.0), "arctan2": np.arctan2(1.0, x),
            "logaddexp": np.logaddexp(x, 0), "copysign": np.copysign(3, x),
            "heaviside": np.heaviside(x, 0.5), "fmod": np.fmod(x, 0.75),
            "float_power": np.float_power(x, 2), "fmod_int": np.fmod(i, 3),
            "hypot_int": np.hypot(i, 2.5), "logaddexp2": np.logaddexp2(2, x),
            "nan_to_num": np.nan_to_num(x / 0.0, posinf=7, neginf=np.float64(-7.0))}


def test_python_scalars_are_weakly_typed():
    x = np.array([[-1.5, 0.0, 2.0]], np.float32)
    i = np.array([5, -4, 7], np.int32)
    with np.errstate(all="ignore"):
        expected = _weak(x, i)
        got = gradc.jit(_weak)(x, i)
    for name, want in expected.items():
        assert got[name].dtype == want.dtype, f"{name}: {got[name].dtype}, NumPy {want.dtype}"
        np.testing.assert_allclose(got[name], want, rtol=2e-6, equal_nan=True, err_msg=name)


def test_stable_at_large_arguments_and_gradients_at_kinks():
    """float32 logaddexp/logaddexp2 at +-1000 and at -inf, -inf (value -inf, as NumPy; gradient
    1/2 each at a tie), cbrt at -inf, sinc'(0) = 0, hypot's gradient 0 at the origin, hypot
    near the largest float."""
    def f(a, b, z):
        return (np.sum(np.logaddexp(a, b)) + np.sum(np.logaddexp2(a, b) * 0.5)
                + np.sum(np.cbrt(a * 0.001)) + np.sum(np.sinc(z)) + np.sum(np.hypot(z, z * 0.0)))

    a = np.array([1000.0, -1000.0, 999.0, -np.inf, 3.0, -1000.0], np.float32)
    b = np.array([-1000.0, -1000.0, 1000.0, -np.inf, 3.0, 1000.0], np.float32)
    z = np.array([0.0, 1e-3, 0.5], np.float32)
    value, (ga, gb, gz) = gradc.value_and_grad(f, argnums=(0, 1, 2), copy=True)(a, b, z)
    assert value == -np.inf
    a64, b64, z64 = (v.astype(np.float64) for v in (a, b, z))
    with np.errstate(all="ignore"):
        tie = a64 == b64
        s = np.where(tie, 0.5, 1 / (1 + np.exp(b64 - a64)))
        s2 = np.where(tie, 0.5, 1 / (1 + np.exp((b64 - a64) * np.log(2))))
        cbrt_d = 0.001 / (3 * np.cbrt(0.001 * a64) ** 2)
    np.testing.assert_allclose(ga, s + 0.5 * s2 + cbrt_d, rtol=1e-5, atol=1e-30)
    np.testing.assert_allclose(gb, (1 - s) + 0.5 * (1 - s2), rtol=1e-5, atol=1e-30)
    nonzero = np.where(z64 == 0, 1, z64)
    sinc_d = np.where(z64 == 0, 0.0, (np.cos(np.pi * nonzero) - np.sinc(nonzero)) / nonzero)
    np.testing.assert_allclose(gz, sinc_d + np.sign(z64), rtol=1e-5, atol=1e-7)

    big = np.array([3e38, -1e38, 1e38], np.float32)
    got = gradc.jit(lambda v: (np.hypot(v, v[::-1]), np.logaddexp(v, -v)))(big)
    with np.errstate(over="ignore"):
        np.testing.assert_allclose(got[0], np.hypot(big, big[::-1]), rtol=1e-6)
        np.testing.assert_allclose(got[1], np.logaddexp(big, -big), rtol=1e-6)


def _second_order(x):
    """tan, arcsin, hypot, logaddexp and sinc (at 0 too: x[7] - 0.25) of 8 numbers."""
    return (np.sum(np.tan(x[:2])) + np.sum(np.arcsin(x[2:4] * 0.5))
            + np.hypot(x[4], x[5]) * 2.0 + np.logaddexp(x[5], x[6]) + np.sinc(x[6])
            + np.sinc(x[7] - 0.25))


def test_grad_of_grad_matches_finite_differences():
    """H v through the VJPs of tan, arcsin, hypot, logaddexp and sinc (whose derivative near 0
    is a series, so that its own derivative at 0, -pi^2/3, is right): gradc's H v against
    central differences of gradc's gradient."""
    x = np.array([0.3, -0.8, 0.9, -1.2, 0.7, -0.4, 1.1, 0.25])
    v = np.array([0.5, -1.0, 0.25, 0.75, -0.5, 1.0, -0.25, 0.5])
    grad_f = gradc.grad(_second_order, copy=True)
    hvp = gradc.grad(lambda x, v: np.sum(gradc.grad(_second_order)(x) * v), copy=True)(x, v)
    eps = 1e-5
    expected = (grad_f(x + eps * v) - grad_f(x - eps * v)) / (2 * eps)
    np.testing.assert_allclose(hvp, expected, rtol=1e-6, atol=1e-8)
    assert abs(expected[7] - (-np.pi ** 2 / 3 * v[7])) < 1e-6  # sinc''(0), the series' slope


def test_negative_whole_powers_of_huge_numbers_are_subnormal_not_zero():
    """x ** -2 was compiled as 1 / (x * x) (fast-math's pow): x * x overflows where the answer
    is a subnormal, 2e19 ** -2 in float32 came out 0, not 2.5e-39 (1e155 ** -2 in float64)."""
    for dtype, big in ((np.float32, 2e19), (np.float64, 1e155)):
        x = np.array([big, 3.0, -2.0, 0.0], dtype)
        for k in (-2, -2.0, -3):
            with np.errstate(divide="ignore"):
                want = x ** k
            got = gradc.jit(lambda x: x ** k)(x)
            assert got.dtype == want.dtype
            np.testing.assert_allclose(got, want, rtol=3e-7 if dtype == np.float32 else 1e-15)
    x = np.array([1.5, 2.0])
    np.testing.assert_allclose(gradc.grad(lambda x: np.sum(x ** -2))(x), -2 * x ** -3)


def _from_a_dtype_round():
    """What a dtype fuzzing round found, in one function: np.float_power with a Python float
    computes in float64 from the start (gradc rounded the float to the array's float32: 3e-8
    off, 1e39 became inf); a float to integer cast of NaN, inf or a value out of range is the
    integer's smallest, as NumPy's on x86, whether LLVM can see the value (a NaN constant, the
    mean of nothing: it folded them to 0) or not; np.clip of a Python number makes it an
    array (float64, int64); np.fmax.reduce and np.fmin.reduce leave NaNs out; a float-only
    ufunc of an integer array and a Python int too big for its dtype computes in float64, as
    NumPy's (it was refused as out of bounds); np.clip of an integer array with a Python int
    bound beyond its dtype's range leaves that side unbounded, as NumPy 2's (it was refused)."""
    def f(x32, x, lo32, lo_i32):
        odd = np.array([3e9, -3e9, np.inf, -np.inf, 1e20, 2.5, -2.5, 2147483647.9,
                        -2147483648.9, -2147483649.0, 9.3e18, -9.223372036854775808e18])
        mixed = np.concatenate([x, odd])  # (computed: the values are known when it runs)
        out = {"float_power_base": np.float_power(0.1, x32),
               "float_power_big": np.float_power(1e39, x32),
               "float_power_exp": np.float_power(np.abs(x32), 1 / 3),
               "nan_constant": np.full_like(x, np.nan).astype(np.int64),
               "inf_constant": (x * np.inf).astype(np.int32),
               "mean_of_nothing": np.mean(x[:0]).astype(np.int64),
               "clip_float": np.clip(0.5, lo32, None), "clip_int": np.clip(1, lo_i32, 5),
               # (a Python int bound beyond the integer dtype's range bounds nothing)
               "clip_wide_bounds": np.clip(lo_i32, -2**40, 2**40),
               "clip_wide_upper": np.clip(lo_i32.astype(np.int64), 1, 2**63), "clip_wide_lower":
                   lo_i32.clip(min=-2**31, max=2),
               "fmax_reduce": np.fmax.reduce(x / x, axis=0),
               "fmin_reduce": np.fmin.reduce(np.where(x > 0, x, np.nan)),
               # (a Python int too big for int32 fits the float64 loop these run in)
               "big_int_divide": lo_i32 / 3000000000, "big_int_hypot": np.hypot(lo_i32, 2**63),
               # (integers to tens, halves to even: 15 -> 20, -35 -> -40; it was refused)
               "round_int": np.round(lo_i32 * 5, -1), "round_int64": np.round(
                   lo_i32.astype(np.int64) * 5 + 2**60, -2)}
        for src in (np.float64, np.float32):
            for dst in (np.int32, np.int64):
                out[f"{src.__name__}_{dst.__name__}"] = mixed.astype(src).astype(dst)
        return out
    return f


def test_what_a_dtype_fuzzing_round_found():
    f = _from_a_dtype_round()
    args = (np.array([1.5, -2.25, 0.7], np.float32), np.array([0.0, 2.0, -1.0]),
            np.array([1.5, 0.2, 0.7], np.float32), np.array([3, -7, 2], np.int32))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # (NumPy's: the mean of nothing)
        want = f(*args)
        got = gradc.jit(f)(*args)
    for name, w in want.items():
        assert np.asarray(got[name]).dtype == np.asarray(w).dtype, name
        np.testing.assert_array_equal(got[name], w, err_msg=name)
