"""np.dot, np.matmul/@ and np.outer as NumPy defines them, for every rank NumPy takes and every
mix of traced values, NumPy constants and Python numbers; values against NumPy, gradients
against central finite differences (float64). Also the power rule's derivative where the base
is 0, and np.mean over an empty axis.

Many products share one compiled function (compiles are the slow part).
"""
import warnings

import numpy as np
import pytest

import gradc

# (shape of a, shape of b) for every kind of operand pair np.dot takes: 0-d (a product),
# 1-D . 1-D, 1-D . N-D, N-D . 1-D, 2-D . 2-D, 2-D . N-D, N-D . 2-D, N-D . M-D
DOT_SHAPES = [((), (2, 3)), ((3,), ()), ((3,), (3,)), ((3,), (3, 2)), ((2, 3), (3,)),
              ((3,), (2, 3, 4)), ((2, 2, 3), (3,)), ((2, 3), (3, 4)), ((2, 3), (2, 3, 4)),
              ((2, 2, 3), (3, 4)), ((2, 2, 3), (2, 3, 4)), ((2, 3), (2, 2, 3, 2))]
# (shape of a, shape of b) for matmul: 1-D and 2-D operands, stacks, broadcast stacks
MATMUL_SHAPES = [((3,), (3,)), ((3,), (3, 2)), ((2, 3), (3,)), ((2, 3), (3, 4)),
                 ((2, 2, 3), (3, 4)), ((2, 3), (2, 3, 4)), ((2, 2, 3), (1, 3, 4)),
                 ((3,), (2, 3, 4)), ((2, 2, 3), (3,))]
OUTER_SHAPES = [((3,), (4,)), ((2, 2), (3,)), ((), (3,))]
# which operands are traced (t) and which are NumPy constants (c)
OPERANDS = ["tt", "tc", "ct"]


def _arrays(shapes, seed):
    rng = np.random.default_rng(seed)
    return {f"{side}{i}": rng.standard_normal(shape)
            for i, pair in enumerate(shapes) for side, shape in zip("ab", pair)}


PARAMS = {"dot": _arrays(DOT_SHAPES, 1), "matmul": _arrays(MATMUL_SHAPES, 2),
          "outer": _arrays(OUTER_SHAPES, 3)}
CONSTS = {"dot": _arrays(DOT_SHAPES, 11), "matmul": _arrays(MATMUL_SHAPES, 12),
          "outer": _arrays(OUTER_SHAPES, 13)}


def _pick(p, family, i, operands):
    """The operands of product i: traced from the parameters p or constant from CONSTS."""
    a = p[family][f"a{i}"] if operands[0] == "t" else CONSTS[family][f"a{i}"]
    b = p[family][f"b{i}"] if operands[1] == "t" else CONSTS[family][f"b{i}"]
    return a, b


def products(p):
    """Every product, as plain NumPy code (run by NumPy it is the reference)."""
    out = []
    for i in range(len(DOT_SHAPES)):
        for operands in OPERANDS:
            a, b = _pick(p, "dot", i, operands)
            out.append(np.dot(a, b))
        a, b = _pick(p, "dot", i, "tc")
        out.append(a.dot(b))  # the method, with a NumPy constant
    for i in range(len(MATMUL_SHAPES)):
        for operands in OPERANDS:
            a, b = _pick(p, "matmul", i, operands)
            out.append(a @ b if operands != "tc" else np.matmul(a, b))
    for i in range(len(OUTER_SHAPES)):
        for operands in OPERANDS:
            out.append(np.outer(*_pick(p, "outer", i, operands)))
    a = p["dot"]["a2"]  # Python numbers: np.dot and np.outer take them as arrays
    out += [np.dot(2.5, a), np.dot(a, -1.5), np.outer(a, 2.0)]
    return out


COTANGENTS = [np.random.default_rng(4).standard_normal(np.shape(y)) for y in products(PARAMS)]


def loss(p):
    return sum(np.sum(y * r) for y, r in zip(products(p), COTANGENTS))


def numerical_grad(f, p, eps=1e-6):
    """Central differences of scalar f with respect to every array in the dict of dicts p."""
    grads = {}
    for family, arrays in p.items():
        grads[family] = {}
        for name, x in arrays.items():
            g = np.zeros_like(x)
            for idx in np.ndindex(x.shape):
                def at(delta):
                    moved = {k: dict(v) for k, v in p.items()}
                    y = x.copy()
                    y[idx] += delta
                    moved[family][name] = y
                    return f(moved)
                g[idx] = (at(eps) - at(-eps)) / (2 * eps)
            grads[family][name] = g
    return grads


def test_products_match_numpy_for_every_rank_and_operand_kind():
    got = gradc.jit(products)(PARAMS)
    expected = products(PARAMS)
    assert len(got) == len(expected)
    for k, (g, e) in enumerate(zip(got, expected)):
        e = np.asarray(e)
        g = np.asarray(g)
        assert g.shape == e.shape and g.dtype == e.dtype, (k, g.shape, e.shape, g.dtype)
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12, err_msg=f"product {k}")


def test_product_gradients_match_finite_differences():
    value, grads = gradc.value_and_grad(loss, copy=True)(PARAMS)
    np.testing.assert_allclose(value, loss(PARAMS), rtol=1e-12)
    expected = numerical_grad(loss, PARAMS)
    for family, arrays in expected.items():
        for name, e in arrays.items():
            g = grads[family][name]
            assert g.shape == e.shape
            np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-8, err_msg=f"{family} {name}")


def test_dot_of_2d_and_3d_pairs_each_row_with_each_matrix():
    """The issue's example: (2, 3) . (2, 3, 4) is (2, 2, 4), not matmul's broadcast (2, 2, 4)
    with the leading axes paired."""
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((2, 3, 4))
    got = gradc.jit(lambda a, b: np.dot(a, b))(a, b)
    np.testing.assert_allclose(got, np.einsum("ik,jkn->ijn", a, b), rtol=1e-12)


def test_dot_with_a_closure_constant():
    """The issue's example: a NumPy constant dotted with a parameter is a matrix product."""
    A = np.arange(9.0).reshape(3, 3)
    w = np.ones((3, 3))
    assert gradc.jit(lambda w: np.sum(np.dot(A, w)))(w) == 108.0
    np.testing.assert_allclose(gradc.grad(lambda w: np.sum(np.dot(A, w)), copy=True)(w),
                               np.tile(A.sum(axis=0)[:, None], (1, 3)))
    np.testing.assert_allclose(gradc.grad(lambda w: np.sum(w.dot(A)), copy=True)(w),
                               np.tile(A.sum(axis=1), (3, 1)))


def _dtype_products(x32, y64, i32, m):
    c32 = np.linspace(-1.0, 1.0, 12, dtype=np.float32).reshape(3, 4)
    c64 = c32.astype(np.float64)
    return (np.dot(x32, c32), np.dot(x32, c64), np.dot(c64.T, x32.T), x32 @ c32, c64.T @ x32.T,
            np.dot(x32, y64), np.outer(x32[0], c64[0]), np.outer(x32[0], c32[0]),
            np.dot(2.0, x32), np.dot(x32, np.float32(2.0)), np.dot(i32, i32.T),
            np.dot(i32, 2), np.dot(m, m), m @ m, np.dot(x32, c32.astype(np.int32)))


def test_product_dtypes_follow_numpy():
    rng = np.random.default_rng(6)
    args = (rng.standard_normal((2, 3)).astype(np.float32), rng.standard_normal((3, 2)),
            rng.integers(-3, 3, (2, 3)).astype(np.int32), rng.random((3, 3)) < 0.5)
    got = gradc.jit(_dtype_products)(*args)
    for k, (g, e) in enumerate(zip(got, _dtype_products(*args))):
        assert g.dtype == e.dtype and g.shape == e.shape, (k, g.dtype, e.dtype)
        np.testing.assert_allclose(g, e, rtol=1e-6, err_msg=f"product {k}")


# ---------------------------------------------------------------------------------------------
# the power rule where the base is 0

ZEROS = np.array([0.0, 0.0, 1.5, -2.0])


def _zero_exponents(x):
    return np.sum(x ** 0 + x ** 0.0 + np.power(x, 0.0) * 2.0)


def test_zero_exponent_has_zero_derivative_at_zero():
    """d/dx x**0 = 0 everywhere, x = 0 included (autograd and JAX give 0; not 0 * 0**-1)."""
    value, g = gradc.value_and_grad(_zero_exponents, copy=True)(ZEROS)
    assert value == 16.0  # 0**0 = 1, as in NumPy
    np.testing.assert_array_equal(g, np.zeros(4))
    v = np.array([1.0, -2.0, 0.5, 3.0])
    hvp = gradc.grad(lambda x, v: np.sum(gradc.grad(_zero_exponents)(x) * v), copy=True)(ZEROS, v)
    np.testing.assert_array_equal(hvp, np.zeros(4))


def _constant_exponents(x):
    return np.sum(x ** 2 + 3.0 * x ** 1 + x ** 3)


def test_positive_exponents_at_zero_are_finite():
    """x**2 -> 2x, x**1 -> 1, x**3 -> 3x**2 at 0 too, and the second derivatives 2, 0, 6x."""
    g = gradc.grad(_constant_exponents, copy=True)(ZEROS)
    np.testing.assert_allclose(g, 2 * ZEROS + 3.0 + 3 * ZEROS ** 2, rtol=1e-12)
    v = np.array([1.0, -2.0, 0.5, 3.0])
    hvp = gradc.grad(lambda x, v: np.sum(gradc.grad(_constant_exponents)(x) * v), copy=True)(
        ZEROS, v)
    np.testing.assert_allclose(hvp, (2.0 + 6 * ZEROS) * v, rtol=1e-12)


def _traced_power(x, y):
    return np.sum(x ** y)


def test_traced_exponent_at_zero_base():
    """x**y with both traced, at x = 0: d/dx is y x**(y-1) (0 where y = 0, 1 where y = 1) and
    d/dy = x**y log x is 0 (as in JAX); the second derivative in x stays finite."""
    x = np.array([0.0, 0.0, 0.0, 2.0])
    y = np.array([0.0, 1.0, 2.0, 0.5])
    gx, gy = gradc.grad(_traced_power, argnums=(0, 1), copy=True)(x, y)
    np.testing.assert_allclose(gx, [0.0, 1.0, 0.0, 0.5 * 2.0 ** -0.5], rtol=1e-12)
    np.testing.assert_allclose(gy, [0.0, 0.0, 0.0, np.log(2.0) * 2.0 ** 0.5], rtol=1e-12)
    v = np.array([1.0, -2.0, 0.5, 3.0])
    hvp = gradc.grad(lambda x, y, v: np.sum(gradc.grad(_traced_power)(x, y) * v), copy=True)(
        x, y, v)
    np.testing.assert_allclose(hvp, [0.0, 0.0, 2.0 * 0.5, 3.0 * 0.5 * -0.5 * 2.0 ** -1.5],
                               rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# mean over an empty axis: NaN with NumPy's warning, naming the user's line

def _empty_means(x):
    return np.mean(x, axis=0), x.mean(axis=1), np.mean(x)  # EMPTY-MEAN


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mean_over_an_empty_axis_is_nan_with_numpys_warning(dtype):
    x = np.ones((0, 3), dtype)
    with pytest.warns(RuntimeWarning, match="Mean of empty slice") as record:
        got = gradc.jit(_empty_means)(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = _empty_means(x)
    for g, e in zip(got, expected):
        g, e = np.asarray(g), np.asarray(e)
        assert g.shape == e.shape and g.dtype == e.dtype
        np.testing.assert_array_equal(g, e)  # NaN where NumPy has NaN
    ours = [w for w in record if "Mean of empty slice" in str(w.message)]
    assert ours and all(w.filename.endswith("test_dot_semantics.py") for w in ours)
    src = open(__file__, encoding="utf-8").read().splitlines()
    assert all(src[w.lineno - 1].rstrip().endswith("# EMPTY-MEAN") for w in ours)


def test_long_float32_dot_and_matrix_vector_products_are_accurate():
    """A float32 dot or matrix-vector product over 2**18 terms sums as gradc's float32 sums do,
    not in sgemm's one float32 accumulator per output (x.T @ y was 3e-3 off, NumPy's sdot
    1e-6): a dot and a matrix-vector product within 1e-7 of float64, a vector-matrix product
    (a sum over the outer axis) no worse than NumPy's; the gradients as before."""
    rng = np.random.default_rng(1)
    k = 1 << 18
    x, y = ((1e4 + rng.standard_normal((k, 1))).astype(np.float32) for _ in range(2))
    m = (1e4 + rng.standard_normal((k, 3))).astype(np.float32)

    def forms(x, y, m):
        return x.T @ y, x[:, 0] @ y[:, 0], m.T @ y, x.T @ m, np.dot(y[:, 0], m)

    got = gradc.jit(forms)(x, y, m)
    exact = forms(*(a.astype(np.float64) for a in (x, y, m)))
    numpy = forms(x, y, m)
    for i, (g, want, theirs) in enumerate(zip(got, exact, numpy)):
        assert g.dtype == np.float32 and g.shape == np.shape(want)
        error = np.max(np.abs(g - want) / want)
        assert error <= (1e-7 if i < 3 else np.max(np.abs(theirs - want) / want)), (i, error)
    g = gradc.grad(lambda m, x: np.sum(x.T @ m))(m, x)
    np.testing.assert_allclose(g, np.broadcast_to(x, m.shape), rtol=1e-7)


def test_a_batched_product_over_an_empty_axis_is_zeros():
    """(2, 3, 0) @ (0, 4): NumPy's zeros of (2, 3, 4); its batch folded into rows by a reshape to
    (-1, 0), which cannot tell -1 (a ShapeError naming a reshape the user never wrote)."""
    a, b = np.ones((2, 3, 0)), np.ones((0, 4))
    for f in (lambda a, b: a @ b, lambda a, b: np.matmul(a, b)):
        np.testing.assert_array_equal(gradc.jit(f)(a, b), f(a, b))
