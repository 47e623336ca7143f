"""The benchmark workloads (W1-W10), each written once per system.

A workload step is forward + backward + a plain SGD update (p -= lr * grad) of every parameter,
in float32, returning the loss as a Python float. Each workload gives:

- ``init(seed)``: ``(params, batch)``: a dict of float32 parameter arrays and a tuple of batch
  arrays (float32 data, int64 labels), the same numbers for every system;
- ``loss(params, *batch)``: the loss as plain NumPy code, traced by gradc (``gradc.train_step``);
- ``numpy_step(params, *batch, lr)``: forward, backward and update written by hand in NumPy,
  updating ``params`` in place (what a careful NumPy user would write: no autodiff); a workload
  without one names "numpy" in ``omitted``;
- ``torch_loss(P, *batch)`` / ``jax_loss(P, *batch)``: the same loss in PyTorch / JAX;
  ``variants`` names further forms of one workload (W8's ``nn.LSTM``);
- ``flops()`` and ``compulsory_bytes()``: for the roofline. FLOPs count the matrix products
  that a step must do (forward, and backward only for the gradients that are needed: nothing
  flows into the data) plus one FLOP per elementwise operation per element (a transcendental
  counts as one); compulsory bytes are reading the data and the parameters once and writing
  the parameters once.

Nothing here imports torch or jax at module level: the runner marks them absent when they are
not installed.
"""
from __future__ import annotations

import math

import numpy as np

import gradc

F32 = np.float32


def _f32(a):
    return np.ascontiguousarray(a, dtype=F32)


def _mm(m, k, n):
    """FLOPs of an (m, k) @ (k, n) product."""
    return 2 * m * k * n


def _dense_flops(m, k, n, need_dx):
    """Forward, weight gradient and (if needed) input gradient of x[m,k] @ W[k,n]."""
    return _mm(m, k, n) * (3 if need_dx else 2)


def _softmax_xent_np(logits, labels):
    """Mean softmax cross-entropy and its gradient with respect to the logits (NumPy)."""
    n = logits.shape[0]
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    logp = z - np.log(s)
    loss = -logp[np.arange(n), labels].mean()
    d = e / s
    d[np.arange(n), labels] -= 1.0
    d *= F32(1.0 / n)
    return loss, d


def _layer_norm_np(x, gamma, beta, eps=1e-5):
    """Layer norm over the last axis (biased variance) and what its backward needs (NumPy)."""
    d = x - x.mean(axis=-1, keepdims=True)
    inv = 1.0 / np.sqrt((d * d).mean(axis=-1, keepdims=True) + F32(eps))
    nhat = d * inv
    return nhat * gamma + beta, (nhat, inv)


def _layer_norm_back_np(dy, gamma, saved):
    """Gradients of `_layer_norm_np` with respect to x, gamma and beta."""
    nhat, inv = saved
    axes = tuple(range(dy.ndim - 1))
    dn = dy * gamma
    dx = inv * (dn - dn.mean(axis=-1, keepdims=True)
                - nhat * (dn * nhat).mean(axis=-1, keepdims=True))
    return dx, (dy * nhat).sum(axis=axes), dy.sum(axis=axes)


_GELU_C = F32(math.sqrt(2.0 / math.pi))


def _gelu_np(u):
    """GELU, tanh form (gradc.nn.gelu's), and its derivative (NumPy)."""
    t = np.tanh(_GELU_C * (u + F32(0.044715) * u * u * u))
    y = 0.5 * u * (1.0 + t)
    dy = 0.5 * (1.0 + t) + 0.5 * u * (1.0 - t * t) * _GELU_C * (1.0 + F32(3 * 0.044715) * u * u)
    return y, dy


def _layer_norm_jax(x, gamma, beta, eps=1e-5):
    import jax.numpy as jnp
    mu = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean((x - mu) ** 2, axis=-1, keepdims=True)
    return (x - mu) / jnp.sqrt(var + eps) * gamma + beta


def _xent_jax(logits, labels):
    import jax
    import jax.numpy as jnp
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))


class Workload:
    name = "W?"
    key = "?"
    title = "?"
    lr = 0.01
    # systems this workload has no form for: {system: why}, reported in that system's column
    omitted = {}
    # more systems for this workload only: {label: (base system, name of the loss method)}
    variants = {}

    def init(self, seed=0):
        raise NotImplementedError

    def param_bytes(self, params):
        return sum(p.nbytes for p in params.values())

    def compulsory_bytes(self, params, batch):
        """Read the batch and the parameters once, write the parameters once."""
        return sum(b.nbytes for b in batch) + 2 * self.param_bytes(params)

    def flops(self):
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# W1: micrograd's demo MLP


class Tiny(Workload):
    name, key = "W1", "tiny"
    title = "MLP 2-16-16-1, relu, batch 100, hinge loss + 1e-4 L2 (micrograd's demo)"
    sizes = (2, 16, 16, 1)
    n = 100
    alpha = 1e-4
    lr = 0.05

    def init(self, seed=0):
        rng = np.random.default_rng(seed)
        params = {}
        for i, (a, b) in enumerate(zip(self.sizes[:-1], self.sizes[1:]), start=1):
            params[f"W{i}"] = _f32(rng.uniform(-1, 1, (a, b)))
            params[f"b{i}"] = _f32(rng.uniform(-0.1, 0.1, (b,)))
        x = _f32(rng.standard_normal((self.n, 2)))
        y = _f32(np.where(rng.random((self.n, 1)) < 0.5, -1.0, 1.0))
        return params, (x, y)

    def loss(self, params, x, y):
        h = gradc.nn.relu(x @ params["W1"] + params["b1"])
        h = gradc.nn.relu(h @ params["W2"] + params["b2"])
        score = h @ params["W3"] + params["b3"]
        data = np.mean(gradc.nn.relu(1.0 - y * score))
        reg = sum(np.sum(p * p) for p in params.values())
        return data + 1e-4 * reg

    def numpy_step(self, params, x, y, lr):
        P = params
        z1 = x @ P["W1"] + P["b1"]
        h1 = np.maximum(z1, 0)
        z2 = h1 @ P["W2"] + P["b2"]
        h2 = np.maximum(z2, 0)
        s = h2 @ P["W3"] + P["b3"]
        m = 1.0 - y * s
        loss = np.mean(np.maximum(m, 0)) + self.alpha * sum(np.sum(p * p) for p in P.values())
        ds = np.where(m > 0, -y, F32(0)) * F32(1.0 / m.size)
        grads = {"W3": h2.T @ ds, "b3": ds.sum(0)}
        dz2 = (ds @ P["W3"].T) * (z2 > 0)
        grads["W2"], grads["b2"] = h1.T @ dz2, dz2.sum(0)
        dz1 = (dz2 @ P["W2"].T) * (z1 > 0)
        grads["W1"], grads["b1"] = x.T @ dz1, dz1.sum(0)
        two_alpha = F32(2 * self.alpha)
        lr = F32(lr)
        for k, p in P.items():
            p -= lr * (grads[k] + two_alpha * p)
        return float(loss)

    def torch_loss(self, P, x, y):
        import torch
        h = torch.relu(x @ P["W1"] + P["b1"])
        h = torch.relu(h @ P["W2"] + P["b2"])
        score = h @ P["W3"] + P["b3"]
        data = torch.relu(1.0 - y * score).mean()
        reg = sum((p * p).sum() for p in P.values())
        return data + 1e-4 * reg

    def jax_loss(self, P, x, y):
        import jax
        import jax.numpy as jnp
        h = jax.nn.relu(x @ P["W1"] + P["b1"])
        h = jax.nn.relu(h @ P["W2"] + P["b2"])
        score = h @ P["W3"] + P["b3"]
        data = jnp.mean(jax.nn.relu(1.0 - y * score))
        reg = sum(jnp.sum(p * p) for p in P.values())
        return data + 1e-4 * reg

    def flops(self):
        n, (a, b, c, d) = self.n, self.sizes
        mm = (_dense_flops(n, a, b, False) + _dense_flops(n, b, c, True)
              + _dense_flops(n, c, d, True))
        act = n * (b + c) * 4 + n * d * 8  # bias, relu, masks; hinge
        params = a * b + b + b * c + c + c * d + d
        return mm + act + params * 6  # L2 term and update


# ---------------------------------------------------------------------------------------------
# W2: MNIST-sized MLP


class Mlp(Workload):
    name, key = "W2", "mlp"
    title = "MLP 784-256-256-10, relu, softmax cross-entropy, batch 128"
    sizes = (784, 256, 256, 10)
    n = 128
    lr = 0.01

    def init(self, seed=0):
        rng = np.random.default_rng(seed)
        params = {}
        for i, (a, b) in enumerate(zip(self.sizes[:-1], self.sizes[1:]), start=1):
            params[f"W{i}"] = _f32(rng.standard_normal((a, b)) * math.sqrt(2.0 / a))
            params[f"b{i}"] = np.zeros(b, F32)
        x = _f32(rng.random((self.n, self.sizes[0])))
        y = rng.integers(0, self.sizes[-1], self.n).astype(np.int64)
        return params, (x, y)

    def loss(self, params, x, y):
        h = gradc.nn.relu(x @ params["W1"] + params["b1"])
        h = gradc.nn.relu(h @ params["W2"] + params["b2"])
        return gradc.nn.cross_entropy(h @ params["W3"] + params["b3"], y)

    def numpy_step(self, params, x, y, lr):
        P = params
        z1 = x @ P["W1"] + P["b1"]
        h1 = np.maximum(z1, 0)
        z2 = h1 @ P["W2"] + P["b2"]
        h2 = np.maximum(z2, 0)
        loss, dl = _softmax_xent_np(h2 @ P["W3"] + P["b3"], y)
        grads = {"W3": h2.T @ dl, "b3": dl.sum(0)}
        dz2 = (dl @ P["W3"].T) * (z2 > 0)
        grads["W2"], grads["b2"] = h1.T @ dz2, dz2.sum(0)
        dz1 = (dz2 @ P["W2"].T) * (z1 > 0)
        grads["W1"], grads["b1"] = x.T @ dz1, dz1.sum(0)
        lr = F32(lr)
        for k, p in P.items():
            p -= lr * grads[k]
        return float(loss)

    def torch_loss(self, P, x, y):
        import torch
        import torch.nn.functional as F
        h = torch.relu(x @ P["W1"] + P["b1"])
        h = torch.relu(h @ P["W2"] + P["b2"])
        return F.cross_entropy(h @ P["W3"] + P["b3"], y)

    def jax_loss(self, P, x, y):
        import jax
        import jax.numpy as jnp
        h = jax.nn.relu(x @ P["W1"] + P["b1"])
        h = jax.nn.relu(h @ P["W2"] + P["b2"])
        logp = jax.nn.log_softmax(h @ P["W3"] + P["b3"], axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    def flops(self):
        n, (a, b, c, d) = self.n, self.sizes
        mm = (_dense_flops(n, a, b, False) + _dense_flops(n, b, c, True)
              + _dense_flops(n, c, d, True))
        act = n * (b + c) * 4 + n * d * 10
        params = a * b + b + b * c + c + c * d + d
        return mm + act + params * 2


# ---------------------------------------------------------------------------------------------
# W3: one big fused elementwise expression (also benchmarks/bench_fuse.py)


class Fuse(Workload):
    name, key = "W3", "fuse"
    title = "sum(tanh(x*w+b)**2 * sigmoid(x*w) + 0.5*exp(-|b|)), 1M elements, grads of w, b"
    n = 1_000_000
    lr = 1e-3

    def init(self, seed=0):
        rng = np.random.default_rng(seed)
        x = _f32(rng.standard_normal(self.n))
        params = {"w": _f32(rng.standard_normal(self.n)), "b": _f32(rng.standard_normal(self.n))}
        return params, (x,)

    def loss(self, params, x):
        w, b = params["w"], params["b"]
        return np.sum(np.tanh(x * w + b) ** 2 * gradc.nn.sigmoid(x * w) + 0.5 * np.exp(-np.abs(b)))

    def numpy_step(self, params, x, lr):
        # u = x*w, t = tanh(u + b), s = sigmoid(u), e = exp(-|b|); L = sum(t^2 s + e/2)
        # dL/du = 2ts(1 - t^2) + t^2 s(1 - s); dL/dw = x dL/du; dL/db = 2ts(1 - t^2) - e/2 sign(b)
        w, b = params["w"], params["b"]
        u = x * w
        t = np.tanh(u + b)
        s = 1.0 / (1.0 + np.exp(-u))
        e = np.exp(-np.abs(b))
        t2 = t * t
        loss = np.sum(t2 * s + 0.5 * e)
        dt = 2.0 * t * s * (1.0 - t2)
        du = dt + t2 * s * (1.0 - s)
        lr = F32(lr)
        w -= lr * (x * du)
        b -= lr * (dt - 0.5 * e * np.sign(b))
        return float(loss)

    def torch_loss(self, P, x):
        import torch
        w, b = P["w"], P["b"]
        return (torch.tanh(x * w + b) ** 2 * torch.sigmoid(x * w)
                + 0.5 * torch.exp(-torch.abs(b))).sum()

    def jax_loss(self, P, x):
        import jax
        import jax.numpy as jnp
        w, b = P["w"], P["b"]
        return jnp.sum(jnp.tanh(x * w + b) ** 2 * jax.nn.sigmoid(x * w)
                       + 0.5 * jnp.exp(-jnp.abs(b)))

    def flops(self):
        return self.n * 30  # about 12 forward and 18 backward operations per element

    def compulsory_bytes(self, params, batch):
        return 5 * self.n * 4  # read x, w, b; write w, b


# ---------------------------------------------------------------------------------------------
# W4: a small CNN on 28x28 images


class Cnn(Workload):
    name, key = "W4", "cnn"
    title = "conv 1->8 3x3 valid, relu, 2x2 max-pool, dense 1352->10, softmax CE, batch 32, 28x28"
    n, c_out, hw, k, classes = 32, 8, 28, 3, 10
    lr = 0.01

    def init(self, seed=0):
        rng = np.random.default_rng(seed)
        oh = self.hw - self.k + 1
        ph = oh // 2
        flat = self.c_out * ph * ph
        params = {
            "conv_w": _f32(rng.standard_normal((self.c_out, 1, self.k, self.k)) / self.k),
            "conv_b": np.zeros(self.c_out, F32),
            "W": _f32(rng.standard_normal((flat, self.classes)) * math.sqrt(1.0 / flat)),
            "b": np.zeros(self.classes, F32),
        }
        x = _f32(rng.random((self.n, 1, self.hw, self.hw)))
        y = rng.integers(0, self.classes, self.n).astype(np.int64)
        return params, (x, y)

    def loss(self, params, x, y):
        h = gradc.nn.conv2d(x, params["conv_w"], params["conv_b"])
        h = gradc.nn.max_pool2d(gradc.nn.relu(h), 2)
        return gradc.nn.cross_entropy(gradc.nn.flatten(h) @ params["W"] + params["b"], y)

    def numpy_step(self, params, x, y, lr):
        P = params
        n, k, co = self.n, self.k, self.c_out
        oh = self.hw - k + 1
        ph = oh // 2
        # im2col, channels last: cols[(n, i, j), (c, di, dj)]
        win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))  # n,1,oh,ow,k,k
        cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * oh, k * k)
        wmat = P["conv_w"].reshape(co, k * k)
        z = cols @ wmat.T + P["conv_b"]  # (n*oh*ow, co)
        a = np.maximum(z, 0).reshape(n, ph, 2, ph, 2, co)
        pooled = a.max(axis=(2, 4))  # n, ph, pw, co
        flat = pooled.transpose(0, 3, 1, 2).reshape(n, co * ph * ph)  # NCHW flatten order
        loss, dl = _softmax_xent_np(flat @ P["W"] + P["b"], y)
        gW, gb = flat.T @ dl, dl.sum(0)
        dpool = (dl @ P["W"].T).reshape(n, co, ph, ph).transpose(0, 2, 3, 1)
        # max-pool backward: to every maximum of its window (ties are relu zeros, whose
        # gradient the relu mask removes below)
        mask = a == pooled[:, :, None, :, None, :]
        da = (mask * dpool[:, :, None, :, None, :]).reshape(n * oh * oh, co)
        dz = da * (z > 0)
        gcw = (dz.T @ cols).reshape(co, 1, k, k)
        gcb = dz.sum(0)
        lr = F32(lr)
        P["conv_w"] -= lr * gcw
        P["conv_b"] -= lr * gcb
        P["W"] -= lr * gW
        P["b"] -= lr * gb
        return float(loss)

    def torch_loss(self, P, x, y):
        import torch.nn.functional as F
        h = F.max_pool2d(F.relu(F.conv2d(x, P["conv_w"], P["conv_b"])), 2)
        return F.cross_entropy(h.flatten(1) @ P["W"] + P["b"], y)

    def jax_loss(self, P, x, y):
        import jax
        import jax.numpy as jnp
        h = jax.lax.conv_general_dilated(x, P["conv_w"], (1, 1), "VALID",
                                         dimension_numbers=("NCHW", "OIHW", "NCHW"))
        h = jax.nn.relu(h + P["conv_b"][None, :, None, None])
        h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
        logp = jax.nn.log_softmax(h.reshape(h.shape[0], -1) @ P["W"] + P["b"], axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    def flops(self):
        oh = self.hw - self.k + 1
        ph = oh // 2
        m = self.n * oh * oh
        conv = _dense_flops(m, self.k * self.k, self.c_out, False)
        dense = _dense_flops(self.n, self.c_out * ph * ph, self.classes, True)
        act = m * self.c_out * 6 + self.n * self.classes * 10
        return conv + dense + act


# ---------------------------------------------------------------------------------------------
# W5: tanh RNN unrolled over 32 steps


class Rnn(Workload):
    name, key = "W5", "rnn"
    title = "tanh RNN, input 32, hidden 128, 32 steps unrolled, batch 32, MSE of a 10-output head"
    steps, n, d_in, hidden, d_out = 32, 32, 32, 128, 10
    lr = 0.01

    def init(self, seed=0):
        rng = np.random.default_rng(seed)
        params = {
            "Wx": _f32(rng.standard_normal((self.d_in, self.hidden)) / math.sqrt(self.d_in)),
            "Wh": _f32(rng.standard_normal((self.hidden, self.hidden)) / math.sqrt(self.hidden)),
            "b": np.zeros(self.hidden, F32),
            "Wo": _f32(rng.standard_normal((self.hidden, self.d_out)) / math.sqrt(self.hidden)),
            "bo": np.zeros(self.d_out, F32),
        }
        x = _f32(rng.standard_normal((self.steps, self.n, self.d_in)))
        target = _f32(rng.standard_normal((self.n, self.d_out)))
        return params, (x, target)

    def loss(self, params, x, target):
        h = np.tanh(x[0] @ params["Wx"] + params["b"])
        for t in range(1, x.shape[0]):
            h = np.tanh(x[t] @ params["Wx"] + h @ params["Wh"] + params["b"])
        return gradc.nn.mse(h @ params["Wo"] + params["bo"], target)

    def numpy_step(self, params, x, target, lr):
        P = params
        T = x.shape[0]
        hs = np.empty((T, self.n, self.hidden), F32)
        hs[0] = np.tanh(x[0] @ P["Wx"] + P["b"])
        for t in range(1, T):
            hs[t] = np.tanh(x[t] @ P["Wx"] + hs[t - 1] @ P["Wh"] + P["b"])
        out = hs[-1] @ P["Wo"] + P["bo"]
        diff = out - target
        loss = np.mean(diff * diff)
        dout = diff * F32(2.0 / diff.size)
        gWo, gbo = hs[-1].T @ dout, dout.sum(0)
        dz = np.empty_like(hs)  # gradient of each step's pre-activation
        dh = dout @ P["Wo"].T
        for t in range(T - 1, -1, -1):
            dz[t] = dh * (1.0 - hs[t] * hs[t])
            if t:
                dh = dz[t] @ P["Wh"].T
        gWx = x.reshape(-1, self.d_in).T @ dz.reshape(-1, self.hidden)
        gWh = hs[:-1].reshape(-1, self.hidden).T @ dz[1:].reshape(-1, self.hidden)
        gb = dz.sum(axis=(0, 1))
        lr = F32(lr)
        for k, g in (("Wx", gWx), ("Wh", gWh), ("b", gb), ("Wo", gWo), ("bo", gbo)):
            P[k] -= lr * g
        return float(loss)

    def torch_loss(self, P, x, target):
        import torch
        import torch.nn.functional as F
        h = torch.tanh(x[0] @ P["Wx"] + P["b"])
        for t in range(1, x.shape[0]):
            h = torch.tanh(x[t] @ P["Wx"] + h @ P["Wh"] + P["b"])
        return F.mse_loss(h @ P["Wo"] + P["bo"], target)

    def jax_loss(self, P, x, target):
        import jax.numpy as jnp
        h = jnp.tanh(x[0] @ P["Wx"] + P["b"])
        for t in range(1, x.shape[0]):
            h = jnp.tanh(x[t] @ P["Wx"] + h @ P["Wh"] + P["b"])
        diff = h @ P["Wo"] + P["bo"] - target
        return jnp.mean(diff * diff)

    def flops(self):
        T, n, i, h, o = self.steps, self.n, self.d_in, self.hidden, self.d_out
        mm = (T * _dense_flops(n, i, h, False) + (T - 1) * _dense_flops(n, h, h, True)
              + _dense_flops(n, h, o, True))
        act = T * n * h * 6 + n * o * 6
        return mm + act


# ---------------------------------------------------------------------------------------------
# W6: one self-attention block


class Attn(Workload):
    name, key = "W6", "attn"
    title = "one-head self-attention, d=64, seq 64, batch 8, softmax, residual + layer norm, MSE"
    n, seq, d = 8, 64, 64
    lr = 0.01

    def init(self, seed=0):
        rng = np.random.default_rng(seed)
        s = 1.0 / math.sqrt(self.d)
        params = {k: _f32(rng.standard_normal((self.d, self.d)) * s)
                  for k in ("Wq", "Wk", "Wv", "Wo")}
        params["gamma"] = np.ones(self.d, F32)
        params["beta"] = np.zeros(self.d, F32)
        x = _f32(rng.standard_normal((self.n, self.seq, self.d)))
        target = _f32(rng.standard_normal((self.n, self.seq, self.d)))
        return params, (x, target)

    def loss(self, params, x, target):
        q, k, v = x @ params["Wq"], x @ params["Wk"], x @ params["Wv"]
        scores = q @ np.swapaxes(k, -1, -2) * (1.0 / math.sqrt(self.d))
        a = gradc.nn.softmax(scores, axis=-1) @ v
        h = gradc.nn.layer_norm(x + a @ params["Wo"], params["gamma"], params["beta"])
        return gradc.nn.mse(h, target)

    def numpy_step(self, params, x, target, lr):
        P = params
        B, L, D = x.shape
        scale = F32(1.0 / math.sqrt(D))
        x2 = x.reshape(B * L, D)
        q, k, v = x @ P["Wq"], x @ P["Wk"], x @ P["Wv"]
        s = (q @ k.transpose(0, 2, 1)) * scale
        s -= s.max(axis=-1, keepdims=True)
        e = np.exp(s)
        a = e / e.sum(axis=-1, keepdims=True)
        o = a @ v
        r = x + o @ P["Wo"]
        mu = r.mean(axis=-1, keepdims=True)
        dr_ = r - mu
        inv = 1.0 / np.sqrt((dr_ * dr_).mean(axis=-1, keepdims=True) + F32(1e-5))
        nhat = dr_ * inv
        h = nhat * P["gamma"] + P["beta"]
        diff = h - target
        loss = np.mean(diff * diff)
        dh = diff * F32(2.0 / diff.size)
        ggamma = (dh * nhat).sum(axis=(0, 1))
        gbeta = dh.sum(axis=(0, 1))
        dn = dh * P["gamma"]
        dr = inv * (dn - dn.mean(axis=-1, keepdims=True)
                    - nhat * (dn * nhat).mean(axis=-1, keepdims=True))
        gWo = o.reshape(B * L, D).T @ dr.reshape(B * L, D)
        do = dr @ P["Wo"].T
        da = do @ v.transpose(0, 2, 1)
        dv = a.transpose(0, 2, 1) @ do
        ds = a * (da - (da * a).sum(axis=-1, keepdims=True)) * scale
        dq = ds @ k
        dk = ds.transpose(0, 2, 1) @ q
        gWq = x2.T @ dq.reshape(B * L, D)
        gWk = x2.T @ dk.reshape(B * L, D)
        gWv = x2.T @ dv.reshape(B * L, D)
        lr = F32(lr)
        for key, g in (("Wq", gWq), ("Wk", gWk), ("Wv", gWv), ("Wo", gWo),
                       ("gamma", ggamma), ("beta", gbeta)):
            P[key] -= lr * g
        return float(loss)

    def torch_loss(self, P, x, target):
        import torch
        import torch.nn.functional as F
        q, k, v = x @ P["Wq"], x @ P["Wk"], x @ P["Wv"]
        scores = q @ k.transpose(-1, -2) * (1.0 / math.sqrt(self.d))
        a = torch.softmax(scores, dim=-1) @ v
        h = F.layer_norm(x + a @ P["Wo"], (self.d,), P["gamma"], P["beta"], eps=1e-5)
        return F.mse_loss(h, target)

    def jax_loss(self, P, x, target):
        import jax
        import jax.numpy as jnp
        q, k, v = x @ P["Wq"], x @ P["Wk"], x @ P["Wv"]
        scores = q @ jnp.swapaxes(k, -1, -2) * (1.0 / math.sqrt(self.d))
        a = jax.nn.softmax(scores, axis=-1) @ v
        r = x + a @ P["Wo"]
        mu = jnp.mean(r, axis=-1, keepdims=True)
        var = jnp.mean((r - mu) ** 2, axis=-1, keepdims=True)
        h = (r - mu) / jnp.sqrt(var + 1e-5) * P["gamma"] + P["beta"]
        return jnp.mean((h - target) ** 2)

    def flops(self):
        B, L, D = self.n, self.seq, self.d
        proj = 4 * _dense_flops(B * L, D, D, False)  # q, k, v from data; o: dW only + do
        proj += _mm(B * L, D, D)  # input gradient of the output projection
        attn = B * (_dense_flops(L, D, L, True) + _dense_flops(L, L, D, True))
        act = B * L * L * 8 + B * L * D * 20
        return proj + attn + act


# ---------------------------------------------------------------------------------------------
# W4n: W4's CNN written in plain NumPy


class CnnNumpy(Cnn):
    """W4's model and numbers (the same init, NumPy by hand and peers); only gradc's form
    differs: the layers are written with NumPy slicing instead of gradc.nn."""
    name, key = "W4n", "cnn-np"
    title = ("W4's CNN in plain NumPy: conv as nine shifted slices summed, relu and 2x2 max-pool "
             "as np.maximum (of four strided slices), log-softmax by hand")

    def loss(self, params, x, y):
        w, k, n = params["conv_w"], self.k, x.shape[0]
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


# ---------------------------------------------------------------------------------------------
# W7: one GPT block, character level


class Gpt(Workload):
    name, key = "W7", "gpt"
    title = ("one GPT block, char-level: vocab 65, d 64, 4 heads, seq 64, batch 8; token + "
             "position embedding, causal attention, pre-LN, GELU MLP 64-256-64, cross-entropy")
    n, seq, d, heads, d_ff, vocab = 8, 64, 64, 4, 256, 65
    lr = 0.01

    def init(self, seed=0):
        rng = np.random.default_rng(seed)
        D, F, V = self.d, self.d_ff, self.vocab

        def dense(a, b):
            return _f32(rng.standard_normal((a, b)) / math.sqrt(a))

        params = {"tok": _f32(rng.standard_normal((V, D)) * 0.1),
                  "pos": _f32(rng.standard_normal((self.seq, D)) * 0.1)}
        for ln in ("ln1", "ln2", "lnf"):
            params[f"{ln}_g"], params[f"{ln}_b"] = np.ones(D, F32), np.zeros(D, F32)
        for k in ("Wq", "Wk", "Wv", "Wo"):
            params[k] = dense(D, D)
        params["W1"], params["b1"] = dense(D, F), np.zeros(F, F32)
        params["W2"], params["b2"] = dense(F, D), np.zeros(D, F32)
        params["Wout"] = dense(D, V)
        text = rng.integers(0, V, (self.n, self.seq + 1)).astype(np.int64)
        return params, (np.ascontiguousarray(text[:, :-1]), np.ascontiguousarray(text[:, 1:]))

    def loss(self, params, idx, targets):
        P = params
        B, L = idx.shape
        H, D = self.heads, self.d
        causal = np.tril(np.ones((L, L), dtype=bool))  # a constant: position i sees j <= i

        def split_heads(t):  # (B, L, D) -> (B, H, L, D/H)
            return t.reshape(B, L, H, D // H).transpose(0, 2, 1, 3)

        x = P["tok"][idx] + P["pos"]
        h = gradc.nn.layer_norm(x, P["ln1_g"], P["ln1_b"])
        q, k, v = (split_heads(h @ P[w]) for w in ("Wq", "Wk", "Wv"))
        scores = q @ k.swapaxes(-1, -2) * (1.0 / math.sqrt(D // H))
        att = gradc.nn.softmax(np.where(causal, scores, -np.inf), axis=-1)
        x = x + (att @ v).transpose(0, 2, 1, 3).reshape(B, L, D) @ P["Wo"]
        h = gradc.nn.layer_norm(x, P["ln2_g"], P["ln2_b"])
        x = x + gradc.nn.gelu(h @ P["W1"] + P["b1"]) @ P["W2"] + P["b2"]
        logits = gradc.nn.layer_norm(x, P["lnf_g"], P["lnf_b"]) @ P["Wout"]
        return gradc.nn.cross_entropy(logits.reshape(B * L, -1), targets.reshape(-1))

    def numpy_step(self, params, idx, targets, lr):
        P = params
        B, L = idx.shape
        H, D = self.heads, self.d
        dh, M = D // H, B * L
        scale = F32(1.0 / math.sqrt(dh))
        causal = np.tril(np.ones((L, L), dtype=bool))

        def split_heads(t):
            return t.reshape(B, L, H, dh).transpose(0, 2, 1, 3)

        def merge_heads(t):  # (B, H, L, dh) -> (B*L, D)
            return t.transpose(0, 2, 1, 3).reshape(M, D)

        # forward, rows = the B*L tokens
        x0 = (P["tok"][idx] + P["pos"]).reshape(M, D)
        h1, ln1 = _layer_norm_np(x0, P["ln1_g"], P["ln1_b"])
        q, k, v = (split_heads(h1 @ P[w]) for w in ("Wq", "Wk", "Wv"))
        s = np.where(causal, (q @ k.transpose(0, 1, 3, 2)) * scale, -np.inf)
        e = np.exp(s - s.max(axis=-1, keepdims=True))
        a = e / e.sum(axis=-1, keepdims=True)
        o = merge_heads(a @ v)
        x1 = x0 + o @ P["Wo"]
        h2, ln2 = _layer_norm_np(x1, P["ln2_g"], P["ln2_b"])
        m, dm_du = _gelu_np(h2 @ P["W1"] + P["b1"])
        x2 = x1 + m @ P["W2"] + P["b2"]
        hf, lnf = _layer_norm_np(x2, P["lnf_g"], P["lnf_b"])
        loss, dlogits = _softmax_xent_np(hf @ P["Wout"], targets.reshape(-1))
        # backward
        g = {"Wout": hf.T @ dlogits}
        dx2, g["lnf_g"], g["lnf_b"] = _layer_norm_back_np(dlogits @ P["Wout"].T, P["lnf_g"], lnf)
        g["W2"], g["b2"] = m.T @ dx2, dx2.sum(0)
        du = (dx2 @ P["W2"].T) * dm_du
        g["W1"], g["b1"] = h2.T @ du, du.sum(0)
        dx1, g["ln2_g"], g["ln2_b"] = _layer_norm_back_np(du @ P["W1"].T, P["ln2_g"], ln2)
        dx1 += dx2
        g["Wo"] = o.T @ dx1
        do = split_heads(dx1 @ P["Wo"].T)
        da = do @ v.transpose(0, 1, 3, 2)
        dv = a.transpose(0, 1, 3, 2) @ do
        ds = a * (da - (da * a).sum(axis=-1, keepdims=True)) * scale
        dq, dk = merge_heads(ds @ k), merge_heads(ds.transpose(0, 1, 3, 2) @ q)
        dv = merge_heads(dv)
        g["Wq"], g["Wk"], g["Wv"] = h1.T @ dq, h1.T @ dk, h1.T @ dv
        dh1 = dq @ P["Wq"].T + dk @ P["Wk"].T + dv @ P["Wv"].T
        dx0, g["ln1_g"], g["ln1_b"] = _layer_norm_back_np(dh1, P["ln1_g"], ln1)
        dx0 += dx1
        g["pos"] = dx0.reshape(B, L, D).sum(0)
        g["tok"] = np.zeros_like(P["tok"])
        np.add.at(g["tok"], idx.reshape(-1), dx0)
        lr = F32(lr)
        for key, p in P.items():
            p -= lr * g[key]
        return float(loss)

    def torch_loss(self, P, idx, targets):
        import torch.nn.functional as F
        B, L = idx.shape
        H, D = self.heads, self.d

        def split_heads(t):
            return t.view(B, L, H, D // H).transpose(1, 2)

        x = P["tok"][idx] + P["pos"]
        h = F.layer_norm(x, (D,), P["ln1_g"], P["ln1_b"])
        q, k, v = (split_heads(h @ P[w]) for w in ("Wq", "Wk", "Wv"))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + a.transpose(1, 2).reshape(B, L, D) @ P["Wo"]
        h = F.layer_norm(x, (D,), P["ln2_g"], P["ln2_b"])
        x = x + F.gelu(h @ P["W1"] + P["b1"], approximate="tanh") @ P["W2"] + P["b2"]
        logits = F.layer_norm(x, (D,), P["lnf_g"], P["lnf_b"]) @ P["Wout"]
        return F.cross_entropy(logits.reshape(B * L, -1), targets.reshape(-1))

    def jax_loss(self, P, idx, targets):
        import jax
        import jax.numpy as jnp
        B, L = idx.shape
        H, D = self.heads, self.d

        def split_heads(t):
            return t.reshape(B, L, H, D // H).transpose(0, 2, 1, 3)

        x = P["tok"][idx] + P["pos"]
        h = _layer_norm_jax(x, P["ln1_g"], P["ln1_b"])
        q, k, v = (split_heads(h @ P[w]) for w in ("Wq", "Wk", "Wv"))
        scores = q @ jnp.swapaxes(k, -1, -2) * (1.0 / math.sqrt(D // H))
        att = jax.nn.softmax(jnp.where(jnp.tril(jnp.ones((L, L), bool)), scores, -jnp.inf),
                             axis=-1)
        x = x + (att @ v).transpose(0, 2, 1, 3).reshape(B, L, D) @ P["Wo"]
        h = _layer_norm_jax(x, P["ln2_g"], P["ln2_b"])
        x = x + jax.nn.gelu(h @ P["W1"] + P["b1"], approximate=True) @ P["W2"] + P["b2"]
        logits = _layer_norm_jax(x, P["lnf_g"], P["lnf_b"]) @ P["Wout"]
        return _xent_jax(logits.reshape(B * L, -1), targets.reshape(-1))

    def flops(self):
        B, L, D, H, F, V = self.n, self.seq, self.d, self.heads, self.d_ff, self.vocab
        M, dh = B * L, D // H
        mm = (4 * _dense_flops(M, D, D, True) + _dense_flops(M, D, F, True)
              + _dense_flops(M, F, D, True) + _dense_flops(M, D, V, True)
              + B * H * (_dense_flops(L, dh, L, True) + _dense_flops(L, L, dh, True)))
        act = (3 * M * D * 20 + B * H * L * L * 8 + M * F * 25 + M * V * 10 + M * D * 6)
        params = V * D + L * D + 4 * D * D + 2 * D * F + F + D * V + 7 * D
        return mm + act + params * 2


# ---------------------------------------------------------------------------------------------
# W8: LSTM unrolled over 48 steps, input projection hoisted


class Lstm(Workload):
    name, key = "W8", "lstm"
    title = ("LSTM, input 32, hidden 128, 48 steps unrolled (x @ Wx of all steps as one product, "
             "then h @ Wh + gates per step), batch 32, MSE of a 10-output head on the last state")
    steps, n, d_in, hidden, d_out = 48, 32, 32, 128, 10
    lr = 0.01
    # PyTorch's own LSTM layer on the same parameters (gate order i, f, g, o, as here)
    variants = {"torch nn.LSTM": ("torch", "torch_nn_lstm_loss")}

    def init(self, seed=0):
        rng = np.random.default_rng(seed)
        I, H, O = self.d_in, self.hidden, self.d_out
        params = {
            "Wx": _f32(rng.standard_normal((I, 4 * H)) / math.sqrt(I)),
            "Wh": _f32(rng.standard_normal((H, 4 * H)) / math.sqrt(H)),
            "b": np.zeros(4 * H, F32),
            "Wo": _f32(rng.standard_normal((H, O)) / math.sqrt(H)),
            "bo": np.zeros(O, F32),
        }
        x = _f32(rng.standard_normal((self.steps, self.n, I)))
        target = _f32(rng.standard_normal((self.n, O)))
        return params, (x, target)

    def loss(self, params, x, target):
        B, H = x.shape[1], self.hidden
        xw = x @ params["Wx"] + params["b"]  # every step's input projection in one product
        h = np.zeros((B, H), np.float32)
        c = np.zeros((B, H), np.float32)
        for t in range(x.shape[0]):
            z = xw[t] + h @ params["Wh"]
            i, f = gradc.nn.sigmoid(z[:, :H]), gradc.nn.sigmoid(z[:, H:2 * H])
            g, o = np.tanh(z[:, 2 * H:3 * H]), gradc.nn.sigmoid(z[:, 3 * H:])
            c = f * c + i * g
            h = o * np.tanh(c)
        return gradc.nn.mse(h @ params["Wo"] + params["bo"], target)

    def numpy_step(self, params, x, target, lr):
        P = params
        T, B, I = x.shape
        H = self.hidden
        z = (x.reshape(T * B, I) @ P["Wx"] + P["b"]).reshape(T, B, 4 * H)
        gates = np.empty_like(z)  # i, f, g, o after their nonlinearity
        hs = np.zeros((T + 1, B, H), F32)  # hs[t] is the state before step t
        cs = np.zeros((T + 1, B, H), F32)
        tcs = np.empty((T, B, H), F32)
        for t in range(T):
            zt = z[t] + hs[t] @ P["Wh"] if t else z[t]
            gt = gates[t]
            gt[:, :2 * H] = 1.0 / (1.0 + np.exp(-zt[:, :2 * H]))
            gt[:, 2 * H:3 * H] = np.tanh(zt[:, 2 * H:3 * H])
            gt[:, 3 * H:] = 1.0 / (1.0 + np.exp(-zt[:, 3 * H:]))
            i, f, g, o = gt[:, :H], gt[:, H:2 * H], gt[:, 2 * H:3 * H], gt[:, 3 * H:]
            cs[t + 1] = f * cs[t] + i * g
            tcs[t] = np.tanh(cs[t + 1])
            hs[t + 1] = o * tcs[t]
        out = hs[T] @ P["Wo"] + P["bo"]
        diff = out - target
        loss = np.mean(diff * diff)
        dout = diff * F32(2.0 / diff.size)
        gWo, gbo = hs[T].T @ dout, dout.sum(0)
        dz = np.empty_like(z)  # gradient of each step's pre-activations
        dh = dout @ P["Wo"].T
        dc = np.zeros((B, H), F32)
        for t in range(T - 1, -1, -1):
            gt, dzt = gates[t], dz[t]
            i, f, g, o = gt[:, :H], gt[:, H:2 * H], gt[:, 2 * H:3 * H], gt[:, 3 * H:]
            dc += dh * o * (1.0 - tcs[t] * tcs[t])
            dzt[:, :H] = dc * g * i * (1.0 - i)
            dzt[:, H:2 * H] = dc * cs[t] * f * (1.0 - f)
            dzt[:, 2 * H:3 * H] = dc * i * (1.0 - g * g)
            dzt[:, 3 * H:] = dh * tcs[t] * o * (1.0 - o)
            dc *= f
            if t:
                dh = dzt @ P["Wh"].T
        dz2 = dz.reshape(T * B, 4 * H)
        gWx = x.reshape(T * B, I).T @ dz2
        gWh = hs[1:T].reshape(-1, H).T @ dz[1:].reshape(-1, 4 * H)
        gb = dz2.sum(0)
        lr = F32(lr)
        for k, g in (("Wx", gWx), ("Wh", gWh), ("b", gb), ("Wo", gWo), ("bo", gbo)):
            P[k] -= lr * g
        return float(loss)

    def torch_loss(self, P, x, target):
        import torch
        import torch.nn.functional as F
        B, H = x.shape[1], self.hidden
        xw = x @ P["Wx"] + P["b"]
        h = torch.zeros(B, H)
        c = torch.zeros(B, H)
        for t in range(x.shape[0]):
            z = xw[t] + h @ P["Wh"]
            i, f = torch.sigmoid(z[:, :H]), torch.sigmoid(z[:, H:2 * H])
            g, o = torch.tanh(z[:, 2 * H:3 * H]), torch.sigmoid(z[:, 3 * H:])
            c = f * c + i * g
            h = o * torch.tanh(c)
        return F.mse_loss(h @ P["Wo"] + P["bo"], target)

    def torch_nn_lstm_loss(self, P, x, target):
        """The same model through `nn.LSTM` (its weights are ours, transposed; no second bias)."""
        import torch
        import torch.nn.functional as F
        from torch.func import functional_call
        lstm = self.__dict__.get("_nn_lstm")
        if lstm is None:
            lstm = self._nn_lstm = torch.nn.LSTM(self.d_in, self.hidden)
            self._zero_bias = torch.zeros(4 * self.hidden)
        weights = {"weight_ih_l0": P["Wx"].T, "weight_hh_l0": P["Wh"].T, "bias_ih_l0": P["b"],
                   "bias_hh_l0": self._zero_bias}
        _, (h, _) = functional_call(lstm, weights, (x,))
        return F.mse_loss(h[0] @ P["Wo"] + P["bo"], target)

    def jax_loss(self, P, x, target):
        import jax
        import jax.numpy as jnp
        B, H = x.shape[1], self.hidden
        xw = x @ P["Wx"] + P["b"]
        h = jnp.zeros((B, H), jnp.float32)
        c = jnp.zeros((B, H), jnp.float32)
        for t in range(x.shape[0]):
            z = xw[t] + h @ P["Wh"]
            i, f = jax.nn.sigmoid(z[:, :H]), jax.nn.sigmoid(z[:, H:2 * H])
            g, o = jnp.tanh(z[:, 2 * H:3 * H]), jax.nn.sigmoid(z[:, 3 * H:])
            c = f * c + i * g
            h = o * jnp.tanh(c)
        return jnp.mean((h @ P["Wo"] + P["bo"] - target) ** 2)

    def flops(self):
        T, B, I, H, O = self.steps, self.n, self.d_in, self.hidden, self.d_out
        mm = (_dense_flops(T * B, I, 4 * H, False) + (T - 1) * _dense_flops(B, H, 4 * H, True)
              + _dense_flops(B, H, O, True))
        act = T * B * H * 30 + B * O * 6  # gates, cell, their gradients; MSE
        return mm + act + (I * 4 * H + H * 4 * H + 4 * H + H * O + O) * 2


# ---------------------------------------------------------------------------------------------
# W9: the digits CNN with a batch norm written in NumPy


class DigitsBn(Workload):
    name, key = "W9", "digits-bn"
    title = ("examples/digits_cnn.py's CNN (8x8 images, conv 1->16 3x3 pad 1) with a batch norm "
             "written in NumPy, relu, 2x2 max-pool, dense 256->10, softmax CE, batch 32")
    n, channels, hw, classes = 32, 16, 8, 10
    eps = 1e-5
    lr = 0.01

    def init(self, seed=0):
        rng = np.random.default_rng(seed)
        C, flat = self.channels, self.channels * (self.hw // 2) ** 2
        params = {  # no conv bias: the batch norm's shift takes its place
            "conv_w": _f32(rng.standard_normal((C, 1, 3, 3)) * math.sqrt(2.0 / 9)),
            "bn_g": np.ones(C, F32),
            "bn_b": np.zeros(C, F32),
            "W": _f32(rng.standard_normal((flat, self.classes)) * math.sqrt(1.0 / flat)),
            "b": np.zeros(self.classes, F32),
        }
        x = _f32(rng.random((self.n, 1, self.hw, self.hw)))  # digits-sized images in [0, 1]
        y = rng.integers(0, self.classes, self.n).astype(np.int64)
        return params, (x, y)

    def loss(self, params, x, y):
        h = gradc.nn.conv2d(x, params["conv_w"], padding=1)  # n, C, 8, 8
        mu = h.mean(axis=(0, 2, 3), keepdims=True)
        var = ((h - mu) ** 2).mean(axis=(0, 2, 3), keepdims=True)
        h = ((h - mu) / np.sqrt(var + self.eps) * params["bn_g"][:, None, None]
             + params["bn_b"][:, None, None])
        h = gradc.nn.max_pool2d(gradc.nn.relu(h), 2)
        return gradc.nn.cross_entropy(gradc.nn.flatten(h) @ params["W"] + params["b"], y)

    def numpy_step(self, params, x, y, lr):
        P = params
        n, C, hw = self.n, self.channels, self.hw
        ph = hw // 2
        # im2col of the padded images, channels last: cols[(n, i, j), (di, dj)]
        xp = np.pad(x[:, 0], ((0, 0), (1, 1), (1, 1)))
        cols = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(1, 2))
        cols = cols.reshape(n * hw * hw, 9)
        z = cols @ P["conv_w"].reshape(C, 9).T  # (n*h*w, C)
        d = z - z.mean(axis=0)
        inv = 1.0 / np.sqrt((d * d).mean(axis=0) + F32(self.eps))
        nhat = d * inv
        bn = nhat * P["bn_g"] + P["bn_b"]
        a = np.maximum(bn, 0).reshape(n, ph, 2, ph, 2, C)
        pooled = a.max(axis=(2, 4))  # n, ph, pw, C
        flat = pooled.transpose(0, 3, 1, 2).reshape(n, C * ph * ph)  # NCHW flatten order
        loss, dl = _softmax_xent_np(flat @ P["W"] + P["b"], y)
        gW, gb = flat.T @ dl, dl.sum(0)
        dpool = (dl @ P["W"].T).reshape(n, C, ph, ph).transpose(0, 2, 3, 1)
        mask = a == pooled[:, :, None, :, None, :]  # ties are relu zeros, masked out below
        dbn = (mask * dpool[:, :, None, :, None, :]).reshape(n * hw * hw, C) * (bn > 0)
        gg, gbb = (dbn * nhat).sum(0), dbn.sum(0)
        dn = dbn * P["bn_g"]
        dz = inv * (dn - dn.mean(axis=0) - nhat * (dn * nhat).mean(axis=0))
        gcw = (dz.T @ cols).reshape(C, 1, 3, 3)
        lr = F32(lr)
        for k, g in (("conv_w", gcw), ("bn_g", gg), ("bn_b", gbb), ("W", gW), ("b", gb)):
            P[k] -= lr * g
        return float(loss)

    def torch_loss(self, P, x, y):
        import torch.nn.functional as F
        h = F.conv2d(x, P["conv_w"], padding=1)
        h = F.batch_norm(h, None, None, P["bn_g"], P["bn_b"], training=True, eps=self.eps)
        h = F.max_pool2d(F.relu(h), 2)
        return F.cross_entropy(h.flatten(1) @ P["W"] + P["b"], y)

    def jax_loss(self, P, x, y):
        import jax
        import jax.numpy as jnp
        h = jax.lax.conv_general_dilated(x, P["conv_w"], (1, 1), ((1, 1), (1, 1)),
                                         dimension_numbers=("NCHW", "OIHW", "NCHW"))
        mu = jnp.mean(h, axis=(0, 2, 3), keepdims=True)
        var = jnp.mean((h - mu) ** 2, axis=(0, 2, 3), keepdims=True)
        h = ((h - mu) / jnp.sqrt(var + self.eps) * P["bn_g"][:, None, None]
             + P["bn_b"][:, None, None])
        h = jax.nn.relu(h)
        h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
        return _xent_jax(h.reshape(h.shape[0], -1) @ P["W"] + P["b"], y)

    def flops(self):
        m, C = self.n * self.hw * self.hw, self.channels
        flat = C * (self.hw // 2) ** 2
        conv = _dense_flops(m, 9, C, False)
        dense = _dense_flops(self.n, flat, self.classes, True)
        act = m * C * (15 + 6) + self.n * self.classes * 10  # batch norm; relu and pool
        return conv + dense + act


# ---------------------------------------------------------------------------------------------
# W10: a GELU MLP (for the memory table, and timed like the others)


class GeluMlp(Workload):
    name, key = "W10", "gelu-mlp"
    title = "MLP 128-512-128 with GELU (tanh form), batch 2048, MSE"
    n, d, d_ff = 2048, 128, 512
    lr = 0.01

    def init(self, seed=0):
        rng = np.random.default_rng(seed)
        D, F = self.d, self.d_ff
        params = {"W1": _f32(rng.standard_normal((D, F)) / math.sqrt(D)), "b1": np.zeros(F, F32),
                  "W2": _f32(rng.standard_normal((F, D)) / math.sqrt(F)), "b2": np.zeros(D, F32)}
        x = _f32(rng.standard_normal((self.n, D)))
        target = _f32(rng.standard_normal((self.n, D)))
        return params, (x, target)

    def loss(self, params, x, target):
        h = gradc.nn.gelu(x @ params["W1"] + params["b1"])
        return gradc.nn.mse(h @ params["W2"] + params["b2"], target)

    def numpy_step(self, params, x, target, lr):
        P = params
        h, dh_du = _gelu_np(x @ P["W1"] + P["b1"])
        diff = h @ P["W2"] + P["b2"] - target
        loss = np.mean(diff * diff)
        dout = diff * F32(2.0 / diff.size)
        gW2, gb2 = h.T @ dout, dout.sum(0)
        du = (dout @ P["W2"].T) * dh_du
        gW1, gb1 = x.T @ du, du.sum(0)
        lr = F32(lr)
        for k, g in (("W1", gW1), ("b1", gb1), ("W2", gW2), ("b2", gb2)):
            P[k] -= lr * g
        return float(loss)

    def torch_loss(self, P, x, target):
        import torch.nn.functional as F
        h = F.gelu(x @ P["W1"] + P["b1"], approximate="tanh")
        return F.mse_loss(h @ P["W2"] + P["b2"], target)

    def jax_loss(self, P, x, target):
        import jax
        import jax.numpy as jnp
        h = jax.nn.gelu(x @ P["W1"] + P["b1"], approximate=True)
        return jnp.mean((h @ P["W2"] + P["b2"] - target) ** 2)

    def flops(self):
        n, D, F = self.n, self.d, self.d_ff
        mm = _dense_flops(n, D, F, False) + _dense_flops(n, F, D, True)
        act = n * F * 25 + n * D * 6  # bias, GELU and its derivative; MSE
        return mm + act + (2 * D * F + D + F) * 2


WORKLOADS = {w.name: w for w in (Tiny(), Mlp(), Fuse(), Cnn(), CnnNumpy(), Rnn(), Attn(), Gpt(),
                                Lstm(), DigitsBn(), GeluMlp())}


class DeepMlp(Mlp):
    """W2's MLP with `layers` weight matrices (784-256-...-256-10): for compile time against depth
    only (benchmarks/run.py's compile section), not one of the timed workloads."""

    def __init__(self, layers):
        self.layers = layers
        self.sizes = (784,) + (256,) * (layers - 1) + (10,)
        self.name = self.key = f"mlp-depth-{layers}"
        self.title = f"MLP {'-'.join(map(str, self.sizes))}, relu, softmax cross-entropy, batch 128"

    def loss(self, params, x, y):
        h = x
        for i in range(1, self.layers):
            h = gradc.nn.relu(h @ params[f"W{i}"] + params[f"b{i}"])
        n = self.layers
        return gradc.nn.cross_entropy(h @ params[f"W{n}"] + params[f"b{n}"], y)

    def numpy_step(self, params, x, y, lr):
        raise NotImplementedError("compile-time workload only")


def get(name):
    """A workload by name ("W2") or key ("mlp"); "mlp-depth-N" is W2's MLP with N layers."""
    if name.lower().startswith("mlp-depth-"):
        return DeepMlp(int(name.rsplit("-", 1)[1]))
    for w in WORKLOADS.values():
        if name.upper() == w.name.upper() or name.lower() == w.key:
            return w
    raise KeyError(f"no workload {name!r}; choose from "
                   + ", ".join(f"{w.name} ({w.key})" for w in WORKLOADS.values()))
