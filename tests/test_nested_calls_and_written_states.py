"""A function called inside another's trace, and inputs a compiled call writes in place:

- a function called inside another's trace after a call of its own (so it has a fast path) is
  inlined: its fast path ran first, and the trace walked its generated `match` as the user's
  code (guarding gradc's internals, not the index table the function reads), or ran the program
  on the arrays at hand (a constant in the trace);
- a state a compiled call writes in place (a gradc.random.Generator's): a non-contiguous view
  (from_state of a column of a table of states, "shared, not copied") was advanced in a
  throwaway copy, the same numbers on every call; a read-only one was written anyway (a
  read-only np.memmap: a segfault);
- gradc.vjp's check of the arrays the function reads from outside was skipped where the
  forward's call made no fast path (a non-contiguous primal).
Compiled functions are tiny: each test compiles a kernel or two.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import gradc

THIS_FILE = os.path.basename(__file__)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
X3 = np.array([1.0, 10.0, 100.0])


# --- a function with a fast path, inlined into another's trace --------------------------------

_S = 2.0
_IDX = np.array([0, 2])
_K = np.array([1.0, 2.0, 3.0])
_W = np.array([1.0, 2.0, 3.0])


def test_inner_function_called_alone_first_keeps_what_it_reads_guarded_in_the_outer():
    inner = gradc.jit(lambda x: x[_IDX].sum() * _S)
    outer = gradc.jit(lambda x: inner(x) * 2.0)
    saved = _IDX.copy()
    try:
        assert inner(X3) == pytest.approx(202.0)  # (its own call first: a fast path)
        assert outer(X3) == pytest.approx(404.0)
        guards = [g.name for g in outer.last_compiled().captures.guards]
        assert not any(name.startswith(("refs", "addresses", "G", "LO")) for name in guards), \
            guards  # (gradc's generated code, walked as the user's)
        _IDX[1] = 1
        assert outer(X3) == pytest.approx((X3[0] + X3[1]) * _S * 2.0)
        assert inner(X3) == pytest.approx((X3[0] + X3[1]) * _S)
    finally:
        _IDX[:] = saved


def test_inner_function_on_an_outside_array_is_traced_not_run_as_a_constant():
    """Inside the outer trace, inner(_K) matched inner's fast path (the same array as its own
    last call): the program ran there, its result a constant of the outer, and what inner
    reads from outside (_W) was guarded by neither."""
    inner = gradc.jit(lambda k: np.sum(k * _W))
    outer = gradc.jit(lambda x: x * inner(_K))
    saved = _W.copy()
    try:
        inner(_K)
        np.testing.assert_allclose(outer(X3), X3 * 14.0)
        _W[0] = 3.0
        np.testing.assert_allclose(outer(X3), X3 * 16.0)
    finally:
        _W[:] = saved


# --- states written in place: the caller's arrays take the writes, or the call is refused ------

@pytest.fixture(scope="module")
def draw():
    return gradc.jit(lambda x, rng: x + rng.random(3))


def test_a_generator_over_a_column_of_a_table_of_states_is_advanced_there(draw):
    """from_state shares its state, not copied: a column of a (2, n) table (a non-contiguous
    view) was advanced in a throwaway copy, every call drawing the same numbers."""
    states = np.zeros((2, 4), np.int64)  # (a generator per column: [seeds; counters])
    states[0] = [7, 8, 9, 10]
    rng = gradc.random.Generator.from_state(states[:, 0])
    other = gradc.random.Generator.from_state(states[:, 1])
    ref = gradc.random.Generator(7)
    for _ in range(2):
        np.testing.assert_array_equal(draw(np.zeros(3), rng), draw(np.zeros(3), ref))
    np.testing.assert_array_equal(states, [[7, 8, 9, 10], [2, 0, 0, 0]])
    both = gradc.jit(lambda a, b: a.random(2) + b.random(2))  # (apart, though interleaved)
    both(rng, other)
    np.testing.assert_array_equal(states, [[7, 8, 9, 10], [3, 1, 0, 0]])
    with pytest.raises(gradc.SignatureError, match="passed in two places"):
        both(rng, gradc.random.Generator.from_state(states[:, 0]))


def test_a_read_only_state_is_refused_by_the_compiled_call_fast_path_too(draw):
    rng = gradc.random.Generator(7)
    draw(np.zeros(3), rng)
    draw(np.zeros(3), rng)  # (the fast path now knows this call)
    rng.state.flags.writeable = False
    with pytest.raises(gradc.SignatureError, match=rf"{THIS_FILE}:\d+: rng\.state is a "
                                                   r"read-only array.*in place"):
        draw(np.zeros(3), rng)  # (the call's line)
    np.testing.assert_array_equal(rng.state, [7, 2])
    view = np.array([[9, 0], [0, 0]], np.int64)[:, 0]
    view.flags.writeable = False
    fresh = gradc.random.Generator.from_state(view)
    with pytest.raises(gradc.SignatureError, match="read-only array"):
        draw(np.zeros(3), fresh)
    np.testing.assert_array_equal(view, [9, 0])


def test_a_read_only_memory_mapped_state_is_refused_not_a_crash(tmp_path):
    path = tmp_path / "state.bin"
    np.array([7, 0], np.int64).tofile(path)
    script = (  # (in a process of its own: it was a segfault)
        "import numpy as np, gradc\n"
        f"state = np.memmap({str(path)!r}, dtype=np.int64, mode='r', shape=(2,))\n"
        "f = gradc.jit(lambda x, rng: x + rng.random(3))\n"
        "try:\n"
        "    f(np.zeros(3), gradc.random.Generator.from_state(state))\n"
        "except gradc.SignatureError as e:\n"
        "    assert 'read-only array' in str(e), e\n"
        "    print('refused')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert done.returncode == 0 and done.stdout.strip() == "refused", done.stderr[-2000:]
    np.testing.assert_array_equal(np.fromfile(path, np.int64), [7, 0])


def test_a_train_step_advances_a_column_state_and_refuses_a_read_only_one():
    step = gradc.train_step(lambda w, rng: np.sum(w * rng.standard_normal(3)),
                            gradc.optim.SGD(0.1))
    w = np.ones(3)
    rng = gradc.random.Generator(3)
    rng.state.flags.writeable = False
    with pytest.raises(gradc.SignatureError, match=rf"{THIS_FILE}:\d+: .*read-only array"):
        step(w, rng)
    np.testing.assert_array_equal(w, np.ones(3))
    np.testing.assert_array_equal(rng.state, [3, 0])
    states = np.array([[3, 5], [0, 0]], np.int64)
    column = gradc.random.Generator.from_state(states[:, 0])
    w_ref, ref = np.ones(3), gradc.random.Generator(3)
    for _ in range(2):
        step(w, column)
        step(w_ref, ref)
    np.testing.assert_array_equal(states, [[3, 5], [2, 0]])
    np.testing.assert_array_equal(w, w_ref)


# --- gradc.vjp: the outside check whatever the forward's call path -----------------------------

_G = np.array([1.0, 2.0, 3.0])


def _times_g(x):
    return np.sin(x) * _G


def test_vjp_refuses_a_changed_outside_array_with_a_non_contiguous_primal():
    x = np.array([0.1, 9.0, 0.2, 9.0, 0.3])[::2]  # (its call makes no fast path)
    saved = _G.copy()
    try:
        out, vjp_fn = gradc.vjp(_times_g, x)
        np.testing.assert_allclose(out, np.sin(x) * saved)
        np.testing.assert_allclose(vjp_fn(np.ones(3))[0], np.cos(x) * saved)
        _G[:] = [10.0, 20.0, 30.0]
        with pytest.raises(gradc.SignatureError, match="`_G`.*changed since gradc.vjp"):
            vjp_fn(np.ones(3))
    finally:
        _G[:] = saved
