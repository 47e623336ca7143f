"""The six benchmark workloads, each written once per system.

A workload step is forward + backward + a plain SGD update (p -= lr * grad) of every parameter,
in float32, returning the loss as a Python float. Each workload gives:

- ``init(seed)``: ``(params, batch)``: a dict of float32 parameter arrays and a tuple of batch
  arrays (float32 data, int64 labels), the same numbers for every system;
- ``loss(params, *batch)``: the loss as plain NumPy code, traced by gradc (``gradc.train_step``);
- ``numpy_step(params, *batch, lr)``: forward, backward and update written by hand in NumPy,
  updating ``params`` in place (what a careful NumPy user would write: no autodiff);
- ``torch_loss(P, *batch)`` / ``jax_loss(P, *batch)``: the same loss in PyTorch / JAX;
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


class Workload:
    name = "W?"
    key = "?"
    title = "?"
    lr = 0.01

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


WORKLOADS = {w.name: w for w in (Tiny(), Mlp(), Fuse(), Cnn(), Rnn(), Attn())}


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
        if name.upper() == w.name or name.lower() == w.key:
            return w
    raise KeyError(f"no workload {name!r}; choose from "
                   + ", ".join(f"{w.name} ({w.key})" for w in WORKLOADS.values()))
