"""The program cache (gradc/program_cache.py): a graph compiled before, in this process or an
earlier one, takes its lowered program from the disk cache instead of running the passes,
fusion, the plan and code generation again, and computes bit for bit what the cold compile did;
a graph that differs (a shape, a constant, an op) is lowered anew; a damaged or foreign entry is
ignored and written again."""
import hashlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import gradc
from gradc import compile as gradc_compile
from gradc import program_cache
from gradc.ir import Graph

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = textwrap.dedent('''
    import json, sys
    import numpy as np
    import gradc

    def loss(w, x, idx):  # a constant array, a gather (index checks), reductions
        table = x[:4] * np.array([0.5, -1.0, 2.0, 0.25], np.float32)
        return np.sum(np.tanh(x * w) * table[idx]) + np.mean(w * w)

    w = np.linspace(-1.0, 1.0, 6, dtype=np.float32)
    x = np.linspace(0.0, 2.0, 6, dtype=np.float32)
    idx = np.array([0, 3, 1, 2, 2, 1])
    vg = gradc.value_and_grad(loss)
    value, grad = vg(w, x, idx)
    params = {"w": w.copy()}
    step = gradc.train_step(lambda p, x, idx: loss(p["w"], x, idx), gradc.optim.SGD(0.1))
    losses = [step(params, x, idx) for _ in range(2)]  # (new parameters written in place)
    try:
        vg(w, x, np.array([0, 4, 1, 2, 2, 1]))
        error = None
    except gradc.IndexOutOfRangeError as e:
        error = str(e)
    # what explain shows of a program from the cache: the graph lowered again, in this process
    # (another hash seed): the same program
    same = True
    gradc.passes.memory.FRESH_MIN_BYTES = 0  # (results this small written into new arrays too)
    jit = gradc.jit(lambda w, x: (np.tanh(x * w), w @ x))
    results = [r.tobytes().hex() for call in (jit(w, x), jit(x, w)) for r in call]
    for f in (vg, jit):
        lowered = f.last_compiled().lowered
        again = lowered.relowered() if hasattr(lowered, "relowered") else lowered
        same = same and (again.program.driver_source == lowered.runnable.driver_source
                         and again.program.kernel_modules == lowered.runnable.kernel_modules
                         and again.layout.outputs == lowered.layout.outputs
                         and again.layout.fresh == lowered.layout.fresh)
    print(json.dumps({"value": value.tobytes().hex(), "grad": grad.tobytes().hex(), "same": same,
                      "jit": results,
                      "losses": [float(l).hex() for l in losses],
                      "params": params["w"].tobytes().hex(), "error": error}))
''')


def run_child(cache):
    env = dict(os.environ, GRADC_CACHE_DIR=str(cache), GRADC_LOG="compiles",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    compiles = [line for line in proc.stderr.splitlines() if "gradc: compiled" in line]
    return json.loads(proc.stdout.splitlines()[-1]), compiles


def test_a_warm_start_takes_the_program_from_the_cache_and_computes_the_same_bits(tmp_path):
    cold, cold_log = run_child(tmp_path)
    warm, warm_log = run_child(tmp_path)
    assert len(cold_log) == len(warm_log) == 3  # value_and_grad, train_step, jit
    assert all("passes" in line and "cached program" not in line for line in cold_log)
    assert all("cached program" in line and "passes" not in line for line in warm_log)
    assert warm == cold and warm["same"]
    w, x = np.linspace(-1.0, 1.0, 6, dtype=np.float32), np.linspace(0.0, 2.0, 6, dtype=np.float32)
    want = [np.tanh(x * w), w @ x, np.tanh(w * x), x @ w]
    got = [np.frombuffer(bytes.fromhex(h), np.float32) for h in warm["jit"]]
    for g, r in zip(got, want):
        np.testing.assert_allclose(g.reshape(np.shape(r)), r, rtol=1e-6)
    assert "idx holds an index outside [-4, 4)" in warm["error"]


# --- in this process: hits and misses, counted by the lowerings ---------------------------

@pytest.fixture
def lowerings(monkeypatch):
    """The graphs lowered (the passes run) from here on, by title."""
    seen = []
    lower = gradc_compile.lower

    def counting(graph, title, *rest):
        seen.append(title)
        return lower(graph, title, *rest)

    monkeypatch.setattr(gradc_compile, "lower", counting)
    return seen


def first_call(fun, *args):  # (one calling line: the title, part of the key, names it)
    return (fun if isinstance(fun, gradc.function.Function) else gradc.value_and_grad(fun))(*args)


def tanh_loss(w, x):
    return np.sum(np.tanh(x * w) * np.array([1.0, 2.0, 3.0, 4.0, 5.0]))


def scaled(c):
    def scaled_loss(w, x):  # (an array made inside: a constant. One read from outside the
        return np.sum(np.tanh(x * w) * np.array(c))  # arguments would be an input, read live)
    return scaled_loss


def sin_loss(w, x):
    return np.sum(np.sin(x * w) * np.array([1.0, 2.0, 3.0, 4.0, 5.0]))


W, X = np.linspace(-1.0, 1.0, 5), np.linspace(0.0, 2.0, 5)


@pytest.fixture
def keys(monkeypatch):
    """The keys of the graphs compiled from here on."""
    seen = []
    graph_key = program_cache.graph_key

    def recording(*args):
        seen.append(graph_key(*args))
        return seen[-1]

    monkeypatch.setattr(program_cache, "graph_key", recording)
    return seen


def entry_path(key):
    return os.path.join(program_cache.programs_dir(), key + ".json")


def test_the_same_graph_hits_and_a_changed_one_misses(lowerings, keys):
    first = first_call(tanh_loss, W, X)
    assert len(lowerings) == 1 and os.path.exists(entry_path(keys[0]))
    f = gradc.value_and_grad(tanh_loss)
    again = first_call(f, W, X)  # another Function: the same graph, from the cache
    assert len(lowerings) == 1
    assert again[0] == first[0] and np.array_equal(again[1], first[1])
    report = gradc.explain(f, W, X)  # (its stages and kernels: lowered again when asked for)
    assert len(lowerings) == 2 and "== kernels: " in report and report.memory.arena_bytes > 0
    assert f.last_compiled().program.driver_source in report
    first_call(tanh_loss, np.stack([W, W]), X)  # a shape
    first_call(sin_loss, W, X)  # an op
    assert len(lowerings) == 4
    first_call(scaled((1.0, 2.0, 3.0, 4.0, 5.5)), W, X)
    first_call(scaled((1.0, 2.0, 3.0, 4.0, 5.0)), W, X)  # a constant's value
    first_call(scaled((1.0, 2.0, 3.0, 4.0, -0.0)), W, X)
    first_call(scaled((1.0, 2.0, 3.0, 4.0, 0.0)), W, X)  # (its sign)
    assert len(lowerings) == 8
    value, grad = first_call(scaled((1.0, 2.0, 3.0, 4.0, 0.0)), W, X)
    assert len(lowerings) == 8
    t = np.tanh(X * W)
    np.testing.assert_allclose(grad, X * (1 - t * t) * [1, 2, 3, 4, 0], rtol=1e-12)


def test_the_key_spells_ops_attributes_types_and_the_title():
    def graph(op="tanh", value=2.0, shape=(3,), dtype="float64", name="x"):
        g = Graph()
        x = g.add_input(shape, dtype, name=name)
        y = g.apply(op, (x,))
        g.outputs = [g.apply("multiply", (y, y)),
                     g.apply("const", (), value=value, dtype=np.dtype(dtype))]
        return g

    key = program_cache.graph_key(graph(), "t", "cpu")
    assert key == program_cache.graph_key(graph(), "t", "cpu")
    others = [program_cache.graph_key(graph(op="sin"), "t", "cpu"),
              program_cache.graph_key(graph(value=-2.0), "t", "cpu"),
              program_cache.graph_key(graph(value=2.0000000000000004), "t", "cpu"),
              program_cache.graph_key(graph(shape=(4,)), "t", "cpu"),
              program_cache.graph_key(graph(dtype="float32"), "t", "cpu"),
              program_cache.graph_key(graph(name="y"), "t", "cpu"),
              program_cache.graph_key(graph(), "u", "cpu"),
              program_cache.graph_key(graph(), "t", "cuda")]
    assert len({key, *others}) == 1 + len(others)
    g = graph()
    g.nodes[0].attrs = (("callback", object()),)  # an attribute the key cannot spell
    assert program_cache.graph_key(g, "t", "cpu") is None


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "foreign", "wrong key"])
def test_a_damaged_entry_is_ignored_and_written_again(damage, lowerings, keys):
    def damaged_loss(w, x):
        return np.sum(np.sin(x * w) * np.array([1.0, 2.0, 3.0, 4.0, 5.0]))

    expected = first_call(damaged_loss, W, X)
    entry = entry_path(keys[0])
    with open(entry, "rb") as f:
        good = f.read()
    head, _, body = good.partition(b"\n")
    if damage == "flip":  # a digit of an offset in the layout
        at = body.index(b'"arena_bytes":') + len(b'"arena_bytes":')
        bad = head + b"\n" + body[:at] + bytes([body[at] ^ 1]) + body[at + 1:]
    elif damage == "truncate":
        bad = good[:len(good) // 2]
    elif damage == "empty":
        bad = b""
    elif damage == "foreign":  # another graph's entry, checksum and all, under this name
        first_call(tanh_loss, W, X)
        with open(entry_path(keys[-1]), "rb") as f:
            bad = f.read()
    else:  # a well-formed entry whose key is not its name
        forged = json.loads(body)
        forged["key"] = "0" * 64
        body = json.dumps(forged).encode()
        bad = f"{program_cache.FORMAT} {hashlib.sha256(body).hexdigest()}\n".encode() + body
    with open(entry, "wb") as f:
        f.write(bad)
    n = len(lowerings)
    value, grad = first_call(damaged_loss, W, X)
    assert len(lowerings) == n + 1  # lowered again
    assert value == expected[0] and np.array_equal(grad, expected[1])
    with open(entry, "rb") as f:
        assert f.read() == good  # and written again
    first_call(damaged_loss, W, X)
    assert len(lowerings) == n + 1  # which the next compile takes
