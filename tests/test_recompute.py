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


# --- late reads recomputed, values written over the inputs they replace, the LSTM's factors ---

def numeric_grads(loss, params, *args, eps=1e-6):
    """Central differences of `loss` (plain NumPy, float64) in every parameter element."""
    grads = {}
    for k, v in params.items():
        g = np.zeros_like(v)
        for idx in np.ndindex(v.shape):
            old = v[idx]
            v[idx] = old + eps
            up = loss(params, *args)
            v[idx] = old - eps
            g[idx] = (up - loss(params, *args)) / (2 * eps)
            v[idx] = old
        grads[k] = g
    return grads


def gelu_block(p, x, labels):
    h = gradc.nn.gelu(x @ p["W1"] + p["b1"])
    y = gradc.nn.layer_norm(h @ p["W2"] + p["b2"], p["g"], p["beta"])
    return gradc.nn.cross_entropy(y @ p["W3"], labels)


def block_data(dtype):
    params, x, _ = data(np.float64)
    rng = np.random.default_rng(2)
    params.update(g=np.ones(D), beta=np.zeros(D), W3=rng.standard_normal((D, 5)))
    labels = rng.integers(0, 5, N)
    return {k: v.astype(dtype) for k, v in params.items()}, x.astype(dtype), labels


def test_late_read_of_gelu_output_recomputed_before_the_weight_gradient():
    """W2's gradient reads GELU's output long after the forward did: a kernel just before it
    recomputes the output from the matmul's (kept for GELU's backward anyway) instead of the
    output staying in memory all that time (passes/remat.py); with the gradients written
    over the values they replace (memory.py _overwritable), 36,544 -> 23,488 bytes."""
    params, x, labels = block_data(np.float32)
    vg = gradc.value_and_grad(gelu_block)
    report = gradc.explain(vg, params, x, labels)
    assert vg.last_compiled().fusion.rematerialized >= 1
    assert report.memory.arena_bytes <= 28_000, report.memory.arena_bytes


def test_late_read_recomputed_values_and_gradients():
    params, x, labels = block_data(np.float64)
    value, grads = gradc.value_and_grad(gelu_block)(params, x, labels)
    np.testing.assert_allclose(value, gelu_block(params, x, labels), rtol=1e-12)
    want = numeric_grads(gelu_block, params, x, labels)
    for k in want:
        np.testing.assert_allclose(grads[k], want[k], rtol=1e-6, atol=1e-9, err_msg=k)


T, B, I, H = 16, 4, 3, 8


def lstm(p, x, target):
    xw = x @ p["Wx"] + p["b"]
    h = c = np.zeros((B, H), x.dtype)
    for t in range(T):
        z = xw[t] + h @ p["Wh"]
        i, f = gradc.nn.sigmoid(z[:, :H]), gradc.nn.sigmoid(z[:, H:2 * H])
        g, o = np.tanh(z[:, 2 * H:3 * H]), gradc.nn.sigmoid(z[:, 3 * H:])
        c = f * c + i * g
        h = o * np.tanh(c)
    return gradc.nn.mse(h, target)


def lstm_data(dtype):
    rng = np.random.default_rng(3)
    p = {"Wx": rng.standard_normal((I, 4 * H)) / np.sqrt(I),
         "Wh": rng.standard_normal((H, 4 * H)) / np.sqrt(H), "b": rng.standard_normal(4 * H) * 0.1}
    x, target = rng.standard_normal((T, B, I)), rng.standard_normal((B, H))
    return {k: v.astype(dtype) for k, v in p.items()}, x.astype(dtype), target.astype(dtype)


def test_lstm_backward_recomputes_its_gate_factors():
    """The backward's 1 - s and 1 - tanh(c)^2 of each step are recomputed from the gates it
    reads anyway (they were stored from the forward: five more buffers a step), and the plan
    places the largest values first (34,048 -> 24,704 bytes)."""
    report = gradc.explain(gradc.value_and_grad(lstm), *lstm_data(np.float32))
    assert report.memory.arena_bytes <= 28_000, report.memory.arena_bytes


def test_lstm_values_and_gradients():
    p, x, target = lstm_data(np.float64)
    value, grads = gradc.value_and_grad(lstm)(p, x, target)
    np.testing.assert_allclose(value, lstm(p, x, target), rtol=1e-12)
    want = numeric_grads(lstm, p, x, target)
    for k in want:
        np.testing.assert_allclose(grads[k], want[k], rtol=1e-6, atol=1e-9, err_msg=k)


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
    want = numeric_grads(numpy_cnn, params, x, y)
    for name in params:
        np.testing.assert_allclose(grads[name], want[name], rtol=1e-5, atol=1e-8, err_msg=name)



def erf_softmax(x, w, v):
    from scipy.special import erf  # (a SciPy ufunc: gradc traces it)
    h = np.tanh(x @ w)
    s = erf(h) * v
    z = s - s.max(axis=1, keepdims=True)
    return np.sum(np.log(np.sum(np.exp(z), axis=1)) + (h * h).sum(axis=1))


def test_a_value_read_before_it_is_recomputed_keeps_its_buffer():
    """The same fault as the CNN's, where the first read found no buffer at all: the code
    generator stopped with a KeyError (a helper's model, gradients in w and v only)."""
    rng = np.random.default_rng(1)
    x, w, v = rng.standard_normal((5, 7)), rng.standard_normal((7, 9)), rng.standard_normal(9)
    value, (gw, gv) = gradc.value_and_grad(erf_softmax, argnums=(1, 2))(x, w, v)
    np.testing.assert_allclose(value, erf_softmax(x, w, v), rtol=1e-12)
    want = numeric_grads(lambda p, x: erf_softmax(x, p["w"], p["v"]),
                         {"w": w.copy(), "v": v.copy()}, x)
    np.testing.assert_allclose(gw, want["w"], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(gv, want["v"], rtol=1e-5, atol=1e-8)


def rnn(params, x, target):
    h = np.tanh(x[0] @ params["Wx"] + params["b"])
    for t in range(1, x.shape[0]):
        h = np.tanh(x[t] @ params["Wx"] + h @ params["Wh"] + params["b"])
    return np.mean((h @ params["Wo"] - target) ** 2)


def rnn_problem(seed, T, n, d, hdim, recurrent_scale):
    """(params, x, target) of an RNN over T steps of (n, d) inputs, hidden size hdim."""
    rng = np.random.default_rng(seed)
    params = {"Wx": rng.standard_normal((d, hdim)) * 0.5,
              "Wh": rng.standard_normal((hdim, hdim)) * recurrent_scale,
              "b": rng.standard_normal(hdim) * 0.1, "Wo": rng.standard_normal((hdim, 2)) * 0.5}
    return params, rng.standard_normal((T, n, d)), rng.standard_normal((n, 2))


def test_rnn_weight_gradients_are_accumulated_step_by_step():
    """The recurrent weight's gradient is accumulated a step at a time (passes/products.py:
    addmm, each written over the sum before it), so each step's hidden state and gradient die
    at their step instead of living until one product over all steps. Values against central
    differences; the arena (53,632 bytes) against a bound that the merged product exceeded
    (86,912 bytes with the states stored straight into its concatenation)."""
    T = 16
    params, x, target = rnn_problem(3, T, 8, 3, 32, 0.2)
    f = gradc.value_and_grad(rnn)
    value, grads = f(params, x, target)
    fusion, plan = f.last_compiled().fusion, f.last_compiled().plan
    sums = [k.nodes[0] for k in fusion.kernels if k.kind == "addmm"]
    assert len(sums) >= 2 * (T - 2)  # (Wh's and Wx's gradients)
    assert sum(plan.shared.get(n.output.id) == n.inputs[0].id for n in sums) >= T - 2
    assert plan.arena_bytes <= 60_000, plan.arena_bytes
    np.testing.assert_allclose(value, rnn(params, x, target), rtol=1e-12)
    want = numeric_grads(rnn, params, x, target)
    for k in params:
        np.testing.assert_allclose(grads[k], want[k], rtol=1e-5, atol=1e-8, err_msg=k)


def hoisted_rnn(params, x, target):
    xw = x @ params["Wx"] + params["b"]  # every step's input projection, one product
    h = np.tanh(xw[0])
    for t in range(1, x.shape[0]):
        h = np.tanh(xw[t] + h @ params["Wh"])
    return np.mean((h @ params["Wo"] - target) ** 2) + 0.1 * np.sum(params["Wh"] ** 2)


def test_a_product_is_added_into_a_stored_term_of_its_sum():
    """A step's `xw[t] + h @ Wh` is one addmm into (a copy of) the stored slice xw[t], not a
    product and an add kernel (passes/products.py _seed); the weight decay term of Wh's
    gradient, an elementwise value read only by that sum, stays fused in the update's kernel
    instead. Values against NumPy and central differences."""
    T = 6
    params, x, target = rnn_problem(5, T, 4, 3, 8, 0.3)
    f = gradc.value_and_grad(hoisted_rnn)
    value, grads = f(params, x, target)
    fusion = f.last_compiled().fusion
    forward_sums = [k.nodes[0] for k in fusion.kernels if k.kind == "addmm"
                    and k.nodes[0].inputs[0].node is not None
                    and k.nodes[0].inputs[0].node.op in ("slice", "reshape")]
    assert len(forward_sums) == T - 1
    decay = [k for k in fusion.kernels if k.kind == "loop" and len(k.nodes) == 2
             and [nd.op for nd in k.nodes] == ["square", "multiply"]]
    assert not decay  # (2 * 0.1 * Wh is not a kernel of its own)
    np.testing.assert_allclose(value, hoisted_rnn(params, x, target), rtol=1e-12)
    want = numeric_grads(hoisted_rnn, params, x, target)
    for k in params:
        np.testing.assert_allclose(grads[k], want[k], rtol=1e-5, atol=1e-8, err_msg=k)
