"""Inputs whose memory overlaps what a call writes (DESIGN.md section 2: "inputs that alias each
other or the function's own output buffers give the same result as copies would").

- gradc's own buffers: the gradients `grad`/`value_and_grad` return are views of the arena the
  next call writes; fed back (whole, sliced, as a view of a view), the call must compute from
  their values, on the slow path and on the fast path (LastCall) alike;
- a train_step's parameters, written in place: a batch that is (part of) a parameter must give
  the update that a copy of it would;
- two parameters sharing memory (tied weights, overlapping slices) are refused with an error
  naming both, and nothing changes.

Every result is compared bit for bit with the same computation on copies, and the gradients
also with a hand-derived NumPy reference. Shapes are tiny and the compiled functions are shared.
"""
import os

import numpy as np
import pytest

import gradc

THIS_FILE = os.path.basename(__file__)


def copies(tree):
    if isinstance(tree, dict):
        return {k: copies(v) for k, v in tree.items()}
    return np.array(tree, copy=True)


def assert_same_bits(actual, expected, what=""):
    if isinstance(expected, dict):
        assert sorted(actual) == sorted(expected), what
        for k in expected:
            assert_same_bits(actual[k], expected[k], f"{what}[{k!r}]")
        return
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, what
    assert actual.tobytes() == expected.tobytes(), f"{what}: {actual} != {expected}"


# ---------------------------------------------------------------------------------------------
# value_and_grad / grad fed their own gradient views

def f(p, x):
    h = np.tanh(x @ p["W"] + p["b"])
    return np.sum(h * h) + 0.5 * np.sum(p["W"] * p["W"]) + 0.25 * np.sum(p["E"] * p["E"])


def np_f(p, x):
    """f's value and gradients (params, x), derived by hand."""
    h = np.tanh(x @ p["W"] + p["b"])
    dz = 2.0 * h * (1.0 - h * h)
    value = np.sum(h * h) + 0.5 * np.sum(p["W"] ** 2) + 0.25 * np.sum(p["E"] ** 2)
    grads = {"W": x.T @ dz + p["W"], "b": dz.sum(axis=0), "E": 0.5 * p["E"]}
    return value, grads, dz @ p["W"].T


def make(seed=0):
    rng = np.random.default_rng(seed)
    return ({"W": rng.standard_normal((4, 4)), "b": rng.standard_normal(4),
             "E": rng.standard_normal((8, 4))}, rng.standard_normal((4, 4)))


VG = gradc.value_and_grad(f, argnums=(0, 1))
VG_COPIES = gradc.value_and_grad(f, argnums=(0, 1), copy=True)  # the reference: fresh arrays
G = gradc.grad(f)

# what to feed the next call, from this call's (params, x) and returned gradients
FEEDS = {
    "gradients as params": lambda p, x, gp, gx: (gp, x),
    "x gradient as x": lambda p, x, gp, gx: (p, gx),
    "both": lambda p, x, gp, gx: (gp, gx),
    "a gradient as x": lambda p, x, gp, gx: (p, gp["W"]),
    "a slice": lambda p, x, gp, gx: (p, gp["E"][2:6]),
    "a view of a view": lambda p, x, gp, gx: (p, gp["E"][1:][1:5].reshape(2, 8).reshape(4, 4)),
    "a strided view": lambda p, x, gp, gx: (p, gp["E"][::2]),
    "a slice as a param": lambda p, x, gp, gx: (dict(p, b=gp["E"][3]), x),
}


@pytest.mark.parametrize("feed", list(FEEDS))
def test_value_and_grad_fed_its_own_gradients_equals_copies(feed):
    p, x = make(1)
    value, (gp, gx) = VG(p, x)
    for call in range(3):  # the second and third would take the fast path
        p, x = FEEDS[feed](p, x, gp, gx)
        expected = VG_COPIES(copies(p), copies(x))
        ref_value, ref_gp, ref_gx = np_f(copies(p), copies(x))
        value, (gp, gx) = VG(p, x)
        assert value == expected[0], call
        assert_same_bits(gp, expected[1][0], f"call {call} params")
        assert_same_bits(gx, expected[1][1], f"call {call} x")
        np.testing.assert_allclose(value, ref_value, rtol=1e-12)
        for k in ref_gp:
            np.testing.assert_allclose(gp[k], ref_gp[k], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(gx, ref_gx, rtol=1e-12, atol=1e-12)


def test_grad_fed_its_own_gradients_equals_copies():
    p, x = make(2)
    g = G(p, x)
    for call in range(3):
        expected = np_f(copies(g), x)[1]
        g = G(g, x)
        for k in expected:
            np.testing.assert_allclose(g[k], expected[k], rtol=1e-12, atol=1e-12, err_msg=k)


def test_the_fast_path_still_takes_arrays_that_do_not_overlap():
    """After calls fed with gradient views (the slow way, with copies), new arrays that overlap
    nothing are taken the fast way again, and give the right numbers."""
    p, x = make(3)
    _, (gp, _) = VG(p, x)
    VG(gp, x)
    p2, x2 = make(4)
    for _ in range(2):
        value, (gp, gx) = VG(p2, x2)
        assert VG._last_call.match(((p2, x2), {}))
        ref_value, ref_gp, ref_gx = np_f(p2, x2)
        np.testing.assert_allclose(value, ref_value, rtol=1e-12)
        np.testing.assert_allclose(gp["W"], ref_gp["W"], rtol=1e-12)
    assert not VG._last_call.match(((gp, x2), {}))  # a gradient view: not the fast way


def test_jit_outputs_are_fresh_so_feeding_them_back_is_plain():
    step = gradc.jit(lambda a, b: (np.tanh(a @ b), a + 0.5 * b))
    a, b = make(5)[1], make(6)[1]
    for _ in range(3):
        expected = (np.tanh(a @ b), a + 0.5 * b)
        out = step(a, b)
        np.testing.assert_allclose(out[0], expected[0], rtol=1e-12)
        np.testing.assert_allclose(out[1], expected[1], rtol=1e-12)
        assert not np.shares_memory(out[0], a) and not np.shares_memory(out[1], b)
        a, b = out


# ---------------------------------------------------------------------------------------------
# train_step: a batch that is (part of) a parameter

def step_loss(q, c):
    h = np.tanh(c @ q["D"])
    return np.sum(h * h) + np.sum(q["C"] * q["C"]) + 0.1 * np.sum(q["E"] * q["E"])


def make_q(seed=0):
    rng = np.random.default_rng(seed)
    return {"C": rng.standard_normal((4, 4)), "D": rng.standard_normal((4, 4)),
            "E": rng.standard_normal((8, 4))}


def in_one_buffer(q):
    """q's parameters as consecutive pieces of one buffer (and the buffer)."""
    buf = np.concatenate([q[k].reshape(-1) for k in sorted(q)])
    out, start = {}, 0
    for k in sorted(q):
        out[k] = buf[start:start + q[k].size].reshape(q[k].shape)
        start += q[k].size
    return out, buf


BATCHES = {
    "a parameter": lambda q, buf: q["C"],
    "the parameter read by the batch's product": lambda q, buf: q["D"],
    "a slice of a parameter": lambda q, buf: q["E"][2:6],
    "a strided view of a parameter": lambda q, buf: q["E"][::2],
    "memory straddling two parameters": lambda q, buf: buf[8:24].reshape(4, 4),
}
OPTIMIZERS = {"sgd_momentum": lambda: gradc.optim.SGD(0.1, momentum=0.9),
              "adam": lambda: gradc.optim.Adam(0.1)}


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
@pytest.mark.parametrize("batch", list(BATCHES))
def test_batch_that_is_a_parameter_gives_the_update_of_a_copy(batch, opt):
    q, buf = in_one_buffer(make_q(7))
    q_ref, buf_ref = in_one_buffer(make_q(7))
    step = gradc.train_step(step_loss, OPTIMIZERS[opt]())
    ref = gradc.train_step(step_loss, OPTIMIZERS[opt]())
    for i in range(3):  # the second and third would take the fast path
        expected = ref(q_ref, BATCHES[batch](q_ref, buf_ref).copy())
        assert step(q, BATCHES[batch](q, buf)) == expected, i
        assert_same_bits(q, q_ref, f"step {i}")
    assert_same_bits(step.state_dict()["state"], ref.state_dict()["state"])


def test_batch_aliasing_after_fast_steps_and_back():
    """A step taken the fast way with a separate batch, then the batch a parameter, then a
    separate batch again: each step is what copies would give."""
    q, q_ref = make_q(8), make_q(8)
    x = np.random.default_rng(9).standard_normal((4, 4))
    step = gradc.train_step(step_loss, gradc.optim.Adam(0.05))
    ref = gradc.train_step(step_loss, gradc.optim.Adam(0.05))
    for batch in ("x", "x", "C", "C", "x", "D", "x"):
        b, b_ref = (x, x) if batch == "x" else (q[batch], q_ref[batch].copy())
        assert step(q, b) == ref(q_ref, b_ref), batch
        assert_same_bits(q, q_ref, batch)


# ---------------------------------------------------------------------------------------------
# train_step: parameters that share memory are refused, naming both

def tied_loss(params, x):
    return np.sum((x @ params["A"]) ** 2) + np.sum(params["B"] * x)


def test_the_same_array_passed_as_two_parameters_is_an_error_naming_both():
    W = np.ones((4, 4))
    x = np.full((4, 4), 0.5)
    step = gradc.train_step(tied_loss, gradc.optim.SGD(0.1))
    with pytest.raises(gradc.SignatureError,
                       match=rf"^{THIS_FILE}:\d+: parameters params\['A'\] and params\['B'\] share "
                             "memory.*pass the array once"):
        step({"A": W, "B": W}, x)
    np.testing.assert_array_equal(W, 1.0)
    assert step.state_dict()["step"] == 0


TIED = {  # (A, B) views of a buffer of 32 ones
    "overlapping slices": lambda buf: (buf[:16], buf[8:24]),
    "one element in common": lambda buf: (buf[:16], buf[15:31]),
    "two views of the same memory": lambda buf: (buf[:16], buf[:16].reshape(2, 8)),
}


@pytest.mark.parametrize("layout", list(TIED))
def test_overlapping_parameters_are_refused_after_fast_steps_too(layout):
    """Refused on the fast path as well: good steps first, then the overlapping parameters."""
    x = np.full((4, 4), 0.5)
    good = {"A": np.ones((4, 4)), "B": np.ones((4, 4))}
    step = gradc.train_step(tied_loss, gradc.optim.Adam(0.1))
    step(good, x)
    step(good, x)
    buf = np.ones(32)
    A, B = TIED[layout](buf)
    bad = {"A": A.reshape(4, 4), "B": B.reshape(4, 4)}
    before, state = buf.copy(), step.state_dict()
    with pytest.raises(gradc.SignatureError, match=rf"^{THIS_FILE}:\d+: parameters "
                                                   r"params\['A'\] and params\['B'\] share"):
        step(bad, x)
    assert_same_bits(buf, before)
    assert_same_bits(step.state_dict(), state)
    step(good, x)  # and the step goes on
    assert step.state_dict()["step"] == 3


def test_adjacent_slices_of_one_buffer_are_separate_parameters():
    buf = np.ones(32)
    q = {"A": buf[:16].reshape(4, 4), "B": buf[16:].reshape(4, 4)}
    q_ref = copies(q)
    x = np.full((4, 4), 0.5)
    step = gradc.train_step(tied_loss, gradc.optim.SGD(0.1))
    ref = gradc.train_step(tied_loss, gradc.optim.SGD(0.1))
    for _ in range(3):
        assert step(q, x) == ref(q_ref, x)
        assert_same_bits(q, q_ref)
