"""A compiled call keeps nothing of the caller's alive: the fresh arrays it hands back die when the
caller drops them, the arrays passed in die when the caller drops them, and a call makes no
reference cycles (which only the cyclic GC frees, later). Had they been kept, every call's
fresh outputs would land in new, never-touched memory: a page fault per 4 KiB page, ~10x the
cost of a NumPy copy (benchmarks/bench_jit_outputs.py). Each function is called both the fast way
(the last call's signature, gradc/last_call.py) and the slow way (another signature between),
with the cyclic GC off so that nothing is freed behind the test's back."""
import gc
import weakref
from contextlib import contextmanager

import numpy as np
import pytest

import gradc

rng = np.random.default_rng(0)
X32 = rng.random((4, 3), dtype=np.float32)
X64 = rng.random((4, 3))  # another signature: a call with it in between takes the slow way


def _loss_aux(p, x, s):
    h = p["w"] * x
    return (h * h).sum() * s, {"h": h, "t": [h.T]}


@pytest.fixture(scope="module")
def functions():
    """name -> (compiled function, call(function, x) -> its result, the NumPy reference for x);
    each result is a pytree of fresh arrays (and floats), values checked against the reference."""
    def aux_ref(w, x):
        h = w * x
        return (float((h * h).sum()) * 1.5, {"h": h, "t": [h.T]}), {"w": 2 * 1.5 * h * x}

    params = {"w": X32.copy()}  # (the step's parameters keep their shape; lr=0: their values)

    jit = gradc.jit(lambda x: {"y": x * 2, "z": [x.sum(axis=0), x.T]})
    vg = gradc.value_and_grad(_loss_aux, has_aux=True, copy=True)
    train = gradc.train_step(_loss_aux, gradc.optim.SGD(lr=0.0), has_aux=True)
    return {
        "jit": (jit, lambda f, x: f(x), lambda x: {"y": x * 2, "z": [x.sum(axis=0), x.T]}),
        "value_and_grad(copy=True, has_aux)": (vg, lambda f, x: f({"w": x}, x, 1.5),
                                               lambda x: aux_ref(x, x)),
        "train_step(has_aux)": (train, lambda f, x: f(params, x, 1.5),
                                lambda x: aux_ref(X32, x)[0]),
    }


def _arrays(tree):
    return [a for a in gradc.pytree.flatten(tree)[0] if isinstance(a, np.ndarray)]


@contextmanager
def _no_cyclic_gc():
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.parametrize("name", ["jit", "value_and_grad(copy=True, has_aux)",
                                  "train_step(has_aux)"])
def test_results_and_inputs_die_with_the_caller(functions, name):
    f, call, reference = functions[name]
    with _no_cyclic_gc():
        for x in (X32, X32, X64, X32):  # fast, slow (a new signature), slow again
            refs = _checked_call(f, call, reference, x.copy())  # (an input only it holds)
            alive = [r() for r in refs if r() is not None]
            assert not alive, f"{name} keeps {len(alive)} of its results/inputs alive"


def _checked_call(f, call, reference, x):
    """Weak references to `x` and to the arrays `call(f, x)` returns, checked against NumPy."""
    got, want = _arrays(call(f, x)), _arrays(reference(x))
    assert len(got) == len(want) > 0
    for a, b in zip(got, want):
        assert a.dtype == x.dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5)
    return [weakref.ref(a) for a in got] + [weakref.ref(x)]


def test_calls_make_no_reference_cycles(functions):
    for f, call, _ in functions.values():  # compile both signatures (compiling makes cycles)
        call(f, X32), call(f, X64)
    with _no_cyclic_gc():
        for f, call, _ in functions.values():
            for x in (X32, X64, X32, X32):
                call(f, x.copy())
        gc.set_debug(gc.DEBUG_SAVEALL)  # (keep what it finds, to say what it was)
        try:
            found = gc.collect()
            kinds = sorted({type(o).__name__ for o in gc.garbage})
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.collect()
    assert found == 0, f"calls left {found} objects in reference cycles: {kinds}"


def _graphs():
    return sum(type(o) is gradc.ir.Graph for o in gc.get_objects())


@pytest.mark.parametrize("kind", ["value_and_grad", "train_step"])
def test_a_compile_keeps_one_graph_and_leaves_no_cyclic_garbage(kind):
    """A new signature's compile keeps the graph as traced (what explain lowers again) and
    nothing else of the pipeline; every other graph (each pass's, the fusion's) is freed as
    soon as it is done with, not left in cycles for the collector (whose passes over them
    cost a new batch size of a GPT block 10-20 ms), and not kept (ten times the objects)."""
    def loss(p, x, y):
        h = np.tanh(x @ p["W1"] + p["b1"])
        return ((h @ p["W2"] - y) ** 2).mean()

    p = {"W1": rng.random((5, 8), dtype=np.float32), "b1": np.zeros(8, np.float32),
         "W2": rng.random((8, 2), dtype=np.float32)}
    f = (gradc.value_and_grad(loss) if kind == "value_and_grad"
         else gradc.train_step(loss, gradc.optim.SGD(lr=0.0)))
    f(p, rng.random((4, 5), dtype=np.float32), rng.random((4, 2), dtype=np.float32))
    x, y = rng.random((6, 5), dtype=np.float32), rng.random((6, 2), dtype=np.float32)
    with _no_cyclic_gc():
        before = _graphs()
        f(p, x, y)  # a new batch size: a new signature
        assert _graphs() == before + 1
        assert gc.collect() < 100
    report = str(gradc.explain(f, p, x, y))  # (lowered again from the kept graph)
    assert "== kernels:" in report and "tanh" in report
