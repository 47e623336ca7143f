"""np.left_shift / np.right_shift and the << and >> operators: NumPy's values and dtypes for every
integer dtype, counts that are negative or not below the width (NumPy's 0, or -1 for a negative
number shifted right, not C's undefined result), Python numbers on either side, booleans (int8),
mixed dtypes, in place; on both kernel routes; floats refused as NumPy refuses them."""
import numpy as np
import pytest

import gradc

DTYPES = [np.int64, np.int32, np.int16, np.int8, np.uint8, np.uint16]


def shifts(a, b):
    c = a.copy()
    c <<= 1
    return (np.left_shift(a, b), np.right_shift(a, b), a << b, a >> b, a << 3, a >> 2,
            5 << b, 7 >> b, -(a >> 1) >> b if a.dtype.kind == "i" else a, c)


def operands(dtype):
    info, rng = np.iinfo(dtype), np.random.default_rng(2)
    a = rng.integers(info.min, info.max, 80, endpoint=True).astype(dtype)
    a[:4] = [0, 1, info.max, info.min]
    counts = np.arange(-4, 76) if info.min < 0 else np.arange(0, 80)
    b = counts.astype(dtype)
    b[-1] = info.max  # (a count far past the width)
    return a, b


@pytest.mark.parametrize("route", ["llvm", "numba"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_shifts_are_numpys(dtype, route, monkeypatch):
    monkeypatch.setenv("GRADC_KERNELS", route)
    a, b = operands(dtype)
    got, want = gradc.jit(shifts)(a, b), shifts(a, b)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == w.dtype and g.shape == w.shape, (i, g.dtype, w.dtype)
        np.testing.assert_array_equal(g, w, err_msg=f"result {i} of {np.dtype(dtype).name}")


def test_booleans_and_mixed_dtypes_shift_as_numpy():
    def f(m, n, i8, u8):
        return np.left_shift(m, n), m >> n, i8 << u8, u8 >> i8, np.left_shift(u8, 1)

    m, n = np.array([True, False, True]), np.array([True, True, False])
    i8, u8 = np.array([-3, 5, 7], np.int8), np.array([1, 9, 2], np.uint8)
    for g, w in zip(gradc.jit(f)(m, n, i8, u8), f(m, n, i8, u8)):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("call", [lambda x: x << 1, lambda x: np.right_shift(x, 2),
                                  lambda x: 3 << x.astype(np.float32)])
def test_shifting_a_float_is_numpys_refusal(call):
    with pytest.raises(gradc.ArgumentError, match="not supported for the input types") as e:
        gradc.jit(call)(np.ones(3))
    assert "test_shifts.py" in str(e.value)


def test_shifts_in_place_keep_the_arrays_dtype_or_are_numpys_refusal():
    def f(x, c):
        y, z = x.copy(), x.copy()
        y <<= c  # (int8 <<= int64: the int64 result cast back, same_kind)
        z >>= np.int64(1)
        return y, z

    x, c = np.array([1, -3, 64], np.int8), np.array([1, 2, 3], np.int64)
    for got, want in zip(gradc.jit(f)(x, c), f(x, c)):
        assert got.dtype == want.dtype == np.int8
        np.testing.assert_array_equal(got, want)

    def onto_a_mask(x, c):
        y = x > 0
        y <<= c  # (NumPy: int64 cannot go into a bool array)
        return y

    with pytest.raises(gradc.ArgumentError, match="same_kind"):
        gradc.jit(onto_a_mask)(x, c)
