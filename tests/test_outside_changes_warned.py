"""Outside Python state that traced code consumes or changes (fuzz39e): its Python runs once,
when traced, so a compiled function reuses what the trace took. A module-level list, deque,
dict or set the code changes (`queue.pop()`, `history.append(1)`) was warned about for a
closure's and `self`'s but not for a global's, and one drawn from an outside iterator
(`next(counter)`, a generator, iter(list)) not at all: both silently gave the first call's
value forever. A gradc.TraceEffectWarning names them now; what NumPy's code does once too (a
cache filled on first use, an iterator only named) is not warned about."""
import collections
import io
import itertools
import warnings

import numpy as np
import pytest

import gradc

X = np.array([1.0, 2.0])

queue = [1.0, 2.0, 3.0]
history = []
lines = collections.deque([1.0, 2.0, 3.0])
pending = {"a": 1.0, "b": 2.0}
todo = {1.0, 2.0}
counter = itertools.count(1)
cache = {}
seen = set()


def pop_queue(x):
    return x * queue.pop()


def append_history(x):
    history.append(1)
    return x * len(history)


def popleft_lines(x):
    return x * lines.popleft()


def popitem_pending(x):
    return x * pending.popitem()[1]


def delete_pending(x):
    scale = pending["a"]
    del pending["a"]
    return x * scale


def pop_todo(x):
    return x * todo.pop()


def _reset():
    global counter
    queue[:] = [1.0, 2.0, 3.0]
    history.clear()
    lines.clear()
    lines.extend([1.0, 2.0, 3.0])
    pending.clear()
    pending.update(a=1.0, b=2.0)
    todo.clear()
    todo.update({1.0, 2.0})
    counter = itertools.count(1)
    cache.clear()
    seen.clear()


@pytest.mark.parametrize("fun, name", [
    (pop_queue, "queue"), (append_history, "history"), (popleft_lines, "lines"),
    (popitem_pending, "pending"), (delete_pending, "pending")])
def test_a_module_level_container_the_traced_code_changes_is_warned_about(fun, name):
    _reset()
    with pytest.warns(gradc.TraceEffectWarning, match=rf"changed `{name}`, a Python number"):
        compiled = gradc.jit(fun)
        first = compiled(X)
    np.testing.assert_array_equal(compiled(X), first)  # (what the warning says: run once)


def test_a_set_the_traced_code_takes_from_is_taken_from_on_every_call_as_numpys():
    """A set's contents are guarded by what the trace read: the next call finds it changed and
    traces again, so each call pops as NumPy's code does (it warned, and ran the first pop's
    program on every call)."""
    _reset()
    with warnings.catch_warnings():
        warnings.simplefilter("error", gradc.TraceEffectWarning)
        compiled = gradc.jit(pop_todo)
        got = [compiled(X) for _ in range(2)]
    todo.update({1.0, 2.0})
    want = [pop_todo(X) for _ in range(2)]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_a_closures_and_selfs_dict_taken_from_are_warned_about_as_a_globals():
    def make(container, take):
        return lambda x: x * take(container)

    for container, take in (({"a": 1.0, "b": 2.0}, lambda d: d.popitem()[1]),
                            ({"a": 1.0, "b": 2.0}, lambda d: d.pop("a"))):
        with pytest.warns(gradc.TraceEffectWarning, match="changed `container`"):
            gradc.jit(make(container, take))(X)


def test_a_closures_and_selfs_set_taken_from_are_taken_from_on_every_call():
    def make(container):
        return lambda x: x * container.pop()

    class Model:
        def __init__(self):
            self.todo = {1.0, 2.0}

        def forward(self, x):
            return x * self.todo.pop()

    with warnings.catch_warnings():
        warnings.simplefilter("error", gradc.TraceEffectWarning)
        for fun, reference in ((make({1.0, 2.0}), make({1.0, 2.0})),
                               (Model().forward, Model().forward)):
            compiled = gradc.jit(fun)
            for _ in range(2):
                np.testing.assert_array_equal(compiled(X), reference(X))


def _generator():
    for i in range(1, 10):
        yield float(i)


def _yields_from():
    yield from _generator()


@pytest.mark.parametrize("make", [
    lambda: itertools.count(1), _generator, _yields_from, lambda: iter([1.0, 2.0, 3.0]),
    lambda: iter({"a": 1.0, "b": 2.0}.values()), lambda: map(float, [1, 2, 3]),
    lambda: itertools.cycle([1.0, 2.0]), lambda: io.StringIO("1\n2\n3\n")],
    ids=["count", "generator", "yield-from", "iter-list", "dict-values", "map", "cycle",
         "file"])
def test_an_outside_iterator_the_trace_draws_from_is_warned_about(make):
    draws = make()

    def draw(x):
        return x * float(next(draws))

    with pytest.warns(gradc.TraceEffectWarning,
                      match=r"drew from `draws`, an iterator .* compiled in.* pass them as "
                            r"arguments"):
        compiled = gradc.jit(draw)
        first = compiled(X)
    np.testing.assert_array_equal(compiled(X), first)


def test_a_global_iterator_and_one_a_loop_or_self_draws_from_are_warned_about():
    _reset()
    with pytest.warns(gradc.TraceEffectWarning, match="drew from `counter`"):
        gradc.jit(lambda x: x * next(counter))(X)
    assert next(counter) == 2  # (drawn once, when traced)
    rows = iter([1.0, 2.0])

    def product(x):
        for r in rows:
            x = x * r
        return x

    with pytest.warns(gradc.TraceEffectWarning, match="drew from `rows`"):
        gradc.jit(product)(X)

    class Loader:
        def __init__(self):
            self.batches = iter([X, 2 * X])

        def loss(self, w):
            return np.sum(w * next(self.batches))

    with pytest.warns(gradc.TraceEffectWarning, match=r"drew from `self\.batches`"):
        gradc.grad(Loader().loss)(X)


def test_what_numpy_code_does_once_too_is_not_warned_about():
    """A cache filled on first use, a set entry added, an iterator only named, one made inside
    the function, a copy of a global dict popped from."""
    _reset()
    named = iter([1.0, 2.0])

    def lazily(x):
        cache.setdefault("scale", 2.0)
        if "shift" not in cache:
            cache["shift"] = 1.0
        seen.add("lazily")
        local = dict(pending)
        local.pop("a")
        made = iter([3.0, 4.0])
        return x * cache["scale"] + cache["shift"] + local["b"] * next(made) * (named is not None)

    with warnings.catch_warnings():
        warnings.simplefilter("error", gradc.TraceEffectWarning)
        np.testing.assert_array_equal(gradc.jit(lazily)(X), X * 2.0 + 1.0 + 2.0 * 3.0)
    assert next(named) == 1.0 and pending == {"a": 1.0, "b": 2.0}
