"""Recompute instead of save (gradc/passes/fuse.py `_Fuser.recompute`): a backward kernel that
needs a forward activation's elementwise intermediates recomputes them from what is in memory
anyway instead of keeping one buffer each from the forward to the backward. Checked end to end:
the buffers the plan keeps, and that the values and gradients (also of a train step, where the
recomputation reads parameters that the step then overwrites) are those of NumPy."""
import numpy as np

import gradc

N, D, F = 64, 8, 32
C = np.sqrt(2 / np.pi)


def gelu_mlp(params, x, target):
    h = gradc.nn.gelu(x @ params["W1"] + params["b1"])
    return gradc.nn.mse(h @ params["W2"] + params["b2"], target)


def numpy_gelu_mlp(P, x, target):
    """Value and gradients by hand, in float64."""
    u = x @ P["W1"] + P["b1"]
    t = np.tanh(C * (u + 0.044715 * u ** 3))
    h = 0.5 * u * (1 + t)
    dh_du = 0.5 * (1 + t) + 0.5 * u * (1 - t * t) * C * (1 + 3 * 0.044715 * u * u)
    diff = h @ P["W2"] + P["b2"] - target
    dout = 2 * diff / diff.size
    du = (dout @ P["W2"].T) * dh_du
    return np.mean(diff ** 2), {"W1": x.T @ du, "b1": du.sum(0), "W2": h.T @ dout,
                                "b2": dout.sum(0)}


def data(dtype):
    rng = np.random.default_rng(0)
    params = {"W1": rng.standard_normal((D, F)) / np.sqrt(D), "b1": rng.standard_normal(F) * 0.1,
              "W2": rng.standard_normal((F, D)) / np.sqrt(F), "b2": np.zeros(D)}
    x, target = rng.standard_normal((N, D)), rng.standard_normal((N, D))
    cast = lambda a: a.astype(dtype)  # noqa: E731
    return {k: cast(v) for k, v in params.items()}, cast(x), cast(target)


def test_gelu_backward_keeps_no_intermediates():
    """GELU's forward has six hidden-sized intermediates that its backward reads; only the
    matmul's output (read again to recompute them) and the activation (the next matmul's input)
    stay in memory until the backward, plus the backward's own two hidden-sized values."""
    params, x, target = data(np.float32)
    report = gradc.explain(gradc.value_and_grad(gelu_mlp), params, x, target)
    hidden = [b for b in report.memory.largest if b.shape == (N, F)]
    assert len(hidden) <= 4, hidden
    assert "recomputes" in str(report)


def test_gelu_mlp_values_and_gradients():
    params, x, target = data(np.float64)
    value, grads = gradc.value_and_grad(gelu_mlp)(params, x, target)
    want_value, want_grads = numpy_gelu_mlp(params, x, target)
    np.testing.assert_allclose(value, want_value, rtol=1e-12)
    for k in want_grads:
        np.testing.assert_allclose(grads[k], want_grads[k], rtol=1e-10, atol=1e-13, err_msg=k)


def test_train_step_recomputing_from_a_parameter_it_updates():
    """sigmoid(w * x)'s backward recomputes the sigmoid from w, which the step updates in
    place: the update must wait for that read (else the gradient uses the new w)."""
    rng = np.random.default_rng(1)
    w0, x = rng.standard_normal((16, 16)), rng.standard_normal((16, 16))

    def loss(p, x):
        return np.sum(gradc.nn.sigmoid(p["w"] * x) ** 2)

    p = {"w": w0.copy()}
    step = gradc.train_step(loss, gradc.optim.SGD(lr=0.1))
    for _ in range(3):
        step(p, x)
    w = w0.copy()
    for _ in range(3):
        s = 1 / (1 + np.exp(-w * x))
        w -= 0.1 * 2 * s * s * (1 - s) * x
    np.testing.assert_allclose(p["w"], w, rtol=1e-12)


def numpy_cnn(params, x, y):
    """A CNN as a NumPy user writes one (the benchmarks' W4n): a convolution as shifted slices,
    relu, 2x2 max-pooling as np.maximum of strided slices, a log-softmax by hand."""
    w, k, n = params["conv_w"], 3, x.shape[0]
    oh = x.shape[2] - k + 1
    h = params["conv_b"][:, None, None]
    for i in range(k):
        for j in range(k):
            h = h + x[:, :, i:i + oh, j:j + oh] * w[:, 0, i, j][:, None, None]
    a = np.maximum(h, 0.0)
    pooled = np.maximum(np.maximum(a[:, :, 0::2, 0::2], a[:, :, 0::2, 1::2]),
                        np.maximum(a[:, :, 1::2, 0::2], a[:, :, 1::2, 1::2]))
    logits = pooled.reshape(n, -1) @ params["W"] + params["b"]
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.sum(np.exp(z), axis=1, keepdims=True))
    return -np.mean(logp[np.arange(n), y])


def test_cnn_gradients_when_a_kernel_reads_a_value_it_could_recompute():
    """A kernel that already read a value from memory was made to recompute it further down
    (for another reader), so the plan saw no read of the buffer and reused it early: the bias
    gradient of this CNN came out wrong (b[0]: -0.0019 against 0.0031). Checked against central
    differences of the same NumPy function."""
    rng = np.random.default_rng(0)
    n, c, hw, classes = 6, 4, 10, 5
    params = {"conv_w": rng.standard_normal((c, 1, 3, 3)) * 0.5, "conv_b": rng.standard_normal(c) * 0.1,
              "W": rng.standard_normal((c * 16, classes)) * 0.3, "b": rng.standard_normal(classes) * 0.1}
    x, y = rng.standard_normal((n, 1, hw, hw)), rng.integers(0, classes, n)
    value, grads = gradc.value_and_grad(numpy_cnn)(params, x, y)
    np.testing.assert_allclose(value, numpy_cnn(params, x, y), rtol=1e-12)
    eps = 1e-6
    for name, p in params.items():
        want = np.zeros_like(p)
        for i in range(p.size):
            old = p.flat[i]
            p.flat[i] = old + eps
            up = numpy_cnn(params, x, y)
            p.flat[i] = old - eps
            down = numpy_cnn(params, x, y)
            p.flat[i] = old
            want.flat[i] = (up - down) / (2 * eps)
        np.testing.assert_allclose(grads[name], want, rtol=1e-5, atol=1e-8, err_msg=name)
