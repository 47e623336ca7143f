"""Ahead-of-time modules (`gradc compile`, gradc/aot.py): reproducible, standalone, and
bit-identical to gradc's own value_and_grad / grad / jit / train_step.

Numba compiles every kernel again for a generated module (~0.3 s each), so the models are small
and one subprocess runs everything that must run without gradc.
"""
import importlib.util
import os
import shlex
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import gradc
from gradc import aot, cli

from _threads import errors_in_threads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNELS = os.path.join(ROOT, "kernels")
sys.path.insert(0, os.path.join(ROOT, "examples"))


def makefile_kernel_commands():
    """The `gradc compile` lines of the Makefile's `kernels` target, as argv lists."""
    with open(os.path.join(ROOT, "Makefile"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    start = lines.index("kernels:")
    commands = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        argv = shlex.split(line.strip())
        assert argv[0] == "$(GRADC)", line
        commands.append(argv[1:])
    return commands


def load_module(path, name):
    """Import a generated file under its own name (in sys.modules, so Numba's cache works)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# --- reproducibility ---------------------------------------------------------------------------

def test_regenerating_kernels_gives_identical_files(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    commands = makefile_kernel_commands()
    assert len(commands) >= 3
    made = []
    for argv in commands:
        out = argv[argv.index("-o") + 1]
        assert out.startswith("kernels/")
        argv[argv.index("-o") + 1] = str(tmp_path / os.path.basename(out))
        assert cli.main(argv) == 0
        made.append(os.path.basename(out))
    committed = sorted(f for f in os.listdir(KERNELS) if f.endswith(".py"))
    assert sorted(made) == committed, "kernels/ holds files the Makefile does not make"
    for name in made:
        with open(tmp_path / name, "rb") as f:
            new = f.read()
        with open(os.path.join(KERNELS, name), "rb") as f:
            old = f.read()
        assert new == old, f"kernels/{name} is stale: run `make kernels` and commit it"
        text = new.decode("utf-8")
        assert ROOT not in text and str(tmp_path) not in text  # no absolute paths
        assert imported_roots(text) <= ALLOWED_IMPORTS, name


ALLOWED_IMPORTS = {"numpy", "numba", "llvmlite", "base64", "math", "sys", "threading", "weakref",
                   "contextlib", "ctypes", "glob", "os", "re", "types"}


def imported_roots(text):
    import ast
    roots = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            roots.add(node.module.split(".")[0])
    return roots


def test_kernels_cover_the_examples():
    names = {f for f in os.listdir(KERNELS) if f.endswith(".py")}
    for expected in ("linear_regression_vg.py", "digits_mlp_adam.py", "digits_cnn_adam.py"):
        assert expected in names
    with open(os.path.join(KERNELS, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    for name in names:
        assert name in readme, f"kernels/README.md does not describe {name}"


def test_header_says_what_was_compiled():
    path = os.path.join(KERNELS, "digits_mlp_adam.py")
    with open(path, encoding="utf-8") as f:
        head = f.read(4000)
    with open(os.path.join(ROOT, "examples", "digits_mlp.py"), "rb") as f:
        import hashlib
        digest = hashlib.sha256(f.read()).hexdigest()
    assert f"gradc {gradc.__version__}" in head
    assert f"examples/digits_mlp.py (sha256 {digest})" in head
    assert f"Calling convention version {aot.CALLING_CONVENTION}" in head
    assert "train_step of `loss`" in head and "Adam(lr=0.003" in head
    assert "params = {'W1': float32[64,128]" in head  # the pytree layout
    assert "y = int64[32]" in head


# --- a model with a bit of everything, run without gradc ---------------------------------------

MODEL = '''
import numpy as np
import gradc


def model(params, x, labels, opts):
    h = np.tanh(x @ params["W"] + params["b"])
    logits = h @ params["layers"][0] * opts[1] + np.array([0.5, -1.0, 2.0], np.float32)
    big = np.sum(np.exp(-params["big"] * params["big"])) * 1e-5   # parallel loop kernel
    return gradc.nn.cross_entropy(logits, labels) + big


def small(params, x, labels, opts):
    h = np.tanh(x @ params["W"] + params["b"])
    return gradc.nn.cross_entropy(h @ params["layers"][0] * opts[1], labels)


def forward(params, x, labels, opts):
    h = np.tanh(x @ params["W"] + params["b"])
    return {"h": h, "m": np.mean(h, axis=0)}, np.sum(h) * 2.0, opts[0]


def args():
    rng = np.random.default_rng(0)
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)
    params = {"W": f32(5, 4), "b": f32(4), "layers": [f32(4, 3)], "big": f32(512, 256)}
    return params, f32(6, 5), np.array([0, 2, 1, 1, 0, 2]), ("static", 1.5)
'''

CHILD = r'''
import importlib.abc, os, sys
ROOT = sys.argv[1]
class NoGradc(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "gradc" or name.startswith("gradc."):
            raise ImportError("gradc must not be imported by a generated module")
sys.meta_path.insert(0, NoGradc())  # before any finder, an editable install's too
# and no folder the gradc package is in (not every path with "gradc" in its name: the generated
# modules come from a folder named like a virtual environment, gradc-env)
sys.path[:] = [p for p in sys.path if p not in ("", ".", ROOT)
               and not os.path.exists(os.path.join(p, "gradc", "__init__.py"))]
import numpy as np
import model_vg, model_grad, model_jit
data = np.load(sys.argv[2], allow_pickle=False)
params = {"W": data["W"], "b": data["b"], "layers": [data["L0"]], "big": data["big"]}
args = (params, data["x"], data["labels"], ("static", 1.5))
out = {}
value, grads = model_vg.model(*args)
out["vg_value"] = value
for k in ("W", "b", "big"):
    out["vg_" + k] = grads[k]
out["vg_L0"] = grads["layers"][0]
g_params, g_x = model_grad.small(*args)
out["g_W"], out["g_x"] = g_params["W"], g_x
(d, s, st) = model_jit.forward(*args)
out["j_h"], out["j_m"], out["j_s"] = d["h"], d["m"], s
assert st == "static"
# non-contiguous inputs are copied, as gradc does
value2, _ = model_vg.model(params, np.asfortranarray(data["x"]), data["labels"], ("static", 1.5))
out["vg_value_fortran"] = value2
mapped = np.memmap(os.path.join(os.getcwd(), "x.dat"), dtype=data["x"].dtype, mode="w+",
                   shape=data["x"].shape)  # (an ndarray subclass whose arithmetic is NumPy's)
mapped[:] = data["x"]
out["vg_value_memmap"] = model_vg.model(params, mapped, data["labels"], ("static", 1.5))[0]
errors = []
for bad in [(params, data["x"][:, :4], data["labels"], ("static", 1.5)),
            (params, data["x"].astype(np.float64), data["labels"], ("static", 1.5)),
            ({"W": data["W"]}, data["x"], data["labels"], ("static", 1.5)),
            (params, data["x"], data["labels"], ("static", 2.5)),
            (params, data["x"], data["labels"]),
            (params, data["x"].astype(">f4"), data["labels"], ("static", 1.5)),
            (params, np.ma.MaskedArray(data["x"], mask=data["x"] > 0), data["labels"],
             ("static", 1.5))]:
    try:
        model_vg.model(*bad)
    except (TypeError, ValueError) as e:
        errors.append(f"{type(e).__name__}: {e}")
out["errors"] = np.array(errors)
assert "gradc" not in sys.modules and not any(m.startswith("gradc") for m in sys.modules)
np.savez(sys.argv[3], **out)
'''


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("aot_model")
    (d / "aot_model.py").write_text(MODEL)
    fun = cli.load_attr(str(d / "aot_model.py") + ":model", "FUNC")
    forward = cli.load_attr(str(d / "aot_model.py") + ":forward", "FUNC")
    small = cli.load_attr(str(d / "aot_model.py") + ":small", "FUNC")
    args = cli.load_attr(str(d / "aot_model.py") + ":args", "ARGS")()
    return d, fun, forward, small, args


def test_generated_module_runs_without_gradc_and_matches(model, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADC_PARALLEL_MIN_ITERATIONS", str(1 << 17))  # (the parallel path, pinned)
    d, fun, forward, small, args = model
    site = tmp_path / "gradc-env" / "site-packages"  # on the child's path: gradc in its name
    aot.compile_module(fun, args, str(site / "model_vg.py"))
    aot.compile_module(small, args, str(site / "model_grad.py"), mode="grad", argnums=(0, 1))
    aot.compile_module(forward, args, str(site / "model_jit.py"), mode="jit")
    source = (site / "model_vg.py").read_text()
    assert "for _c in range(16):" in source and "CONSTANTS = [\n    (" in source  # chunks, a constant
    params, x, labels, _ = args
    np.savez(tmp_path / "in.npz", W=params["W"], b=params["b"], L0=params["layers"][0],
             big=params["big"], x=x, labels=labels)
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    env = dict(os.environ, PYTHONPATH=str(site), NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    proc = subprocess.run([sys.executable, str(child), ROOT,
                           str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = np.load(tmp_path / "out.npz")

    value, grads = gradc.value_and_grad(fun)(*args)
    assert same_bits(out["vg_value"], value) and same_bits(out["vg_value_fortran"], value)
    assert same_bits(out["vg_value_memmap"], value)
    for k in ("W", "b", "big"):
        assert same_bits(out["vg_" + k], grads[k]), k
    assert same_bits(out["vg_L0"], grads["layers"][0])
    g_params, g_x = gradc.grad(small, argnums=(0, 1))(*args)
    assert same_bits(out["g_W"], g_params["W"]) and same_bits(out["g_x"], g_x)
    d_, s, _ = gradc.jit(forward)(*args)
    assert same_bits(out["j_h"], d_["h"]) and same_bits(out["j_m"], d_["m"])
    assert same_bits(out["j_s"], s)

    errors = list(out["errors"])
    assert len(errors) == 7
    assert "ValueError: x must be float32[6, 5], got float32[6, 4]" in errors[0]
    assert "ValueError: x must be float32[6, 5], got float64[6, 5]" in errors[1]
    assert "TypeError: params must be a dict with keys ['W', 'b', 'layers', 'big']" in errors[2]
    assert "TypeError: opts[1] was compiled as the static value 1.5; got 2.5" in errors[3]
    assert "TypeError: model() takes 4 arguments (params, x, labels, opts), got 3" in errors[4]
    assert "ValueError: x is float32 in non-native byte order ('>f4')" in errors[5]
    assert "TypeError: x is a MaskedArray, a subclass of np.ndarray" in errors[6]  # (mask ignored)


def test_module_documents_its_calling_convention(model, tmp_path):
    _, fun, _, _, args = model
    source = aot.generate(fun, args, module_name="model_vg")
    doc = source.split('"""')[1]
    assert "value, grads = model(params, x, labels, opts)" in doc
    assert "params = {'W': float32[5,4], 'b': float32[4], 'layers': [float32[4,3]], " \
           "'big': float32[512,256]}" in doc  # (the example's own order)
    assert "opts = ('static', 1.5)" in doc
    assert "2   params['layers'][0]" in doc and "5   labels" in doc
    # every kernel line that computes carries its op; the driver carries the user's lines
    assert "# tanh" in source and "# exp" in source
    assert 'h = np.tanh(x @ params["W"] + params["b"])' in source.split("def run(")[1]


def test_compiling_is_deterministic_and_refuses_what_it_cannot_write(model):
    _, fun, _, _, args = model
    assert aot.generate(fun, args) == aot.generate(fun, args)

    def run(p):  # a name the generated module uses itself
        return np.sum(p * p)

    with pytest.raises(aot.AotError, match="rename the function"):
        aot.generate(run, (np.ones(3, np.float32),))

    def fmaximum(p):  # (bound by a tuple assignment, `f32, f64, fmaximum = ...`: fuzz42c)
        return np.sum(p * p)
    with pytest.raises(aot.AotError, match="rename the function"):
        aot.generate(fmaximum, (np.ones(3, np.float32),))
    from gradc.aot_text import top_level_names
    assert sorted(top_level_names(textwrap.dedent("""
        f32, (f64, i64) = 1, (2, 3)
        if True:
            take = 1
        else:
            from x import rows_sum
        try:
            import numpy as np
        except ImportError:
            fallback: int = 0
        for k in range(2):
            pass
        def f():
            hidden = 1
        """))) == ["f", "f32", "f64", "fallback", "i64", "k", "np", "rows_sum", "take"]
    with pytest.raises(aot.AotError, match="lambda"):
        aot.generate(lambda p: np.sum(p), (np.ones(3, np.float32),))

    def obj_static(p, o):
        return np.sum(p)

    with pytest.raises(aot.AotError, match="static"):
        aot.generate(obj_static, (np.ones(3, np.float32), frozenset({1})))


def scaled_tanh(s, x, k):
    return np.sum(np.tanh(s * x)) * k


def test_python_float_in_a_differentiated_argument(tmp_path):
    """A Python float at argnums is traced, as in gradc: the module takes a Python float there
    (any value) and returns its gradient as a float; 0-d gradients are 0-d arrays."""
    x = np.linspace(-1.0, 1.0, 4).astype(np.float32)
    args = (0.5, x, 2.0)
    aot.compile_module(scaled_tanh, args, str(tmp_path / "scaled_vg.py"), argnums=(0, 1))
    mod = load_module(str(tmp_path / "scaled_vg.py"), "scaled_vg")
    vg = gradc.value_and_grad(scaled_tanh, argnums=(0, 1))
    for s in (0.5, -1.25):
        value, (g_s, g_x) = mod.scaled_tanh(s, x, 2.0)
        ref_value, (ref_s, ref_x) = vg(s, x, 2.0)
        assert type(g_s) is float and g_s == ref_s
        assert same_bits(value, ref_value) and same_bits(g_x, ref_x)
    with pytest.raises(TypeError, match=r"s must be a Python float, got float64"):
        mod.scaled_tanh(np.float64(0.5), x, 2.0)
    with pytest.raises(TypeError, match="compiled as the static value 2.0; got 2"):
        mod.scaled_tanh(0.5, x, 2)  # (an int is not the float it was compiled with)
    aot.compile_module(cube, ({"a": np.array(2.0)},), str(tmp_path / "cube.py"), mode="grad")
    grads = load_module(str(tmp_path / "cube.py"), "cube").cube({"a": np.array(2.0)})
    assert type(grads["a"]) is np.ndarray and grads["a"].shape == () and grads["a"] == 12.0


def cube(p):
    return p["a"] ** 3


def scaled_by_mode(x, scale, mode="tanh", eps=1e-5):
    y = x * scale + eps
    return np.sum(np.tanh(y) if mode == "tanh" else y)


def test_a_module_takes_the_defaults_it_was_compiled_with_by_name(tmp_path):
    """fuzz47d: `mod.f(x, s, mode="tanh")` of a module compiled without `mode` (so with its
    default) was "f() has no argument 'mode'"; it is the compiled value, and another is
    refused with the reason."""
    x = np.linspace(-1.0, 1.0, 4)
    aot.compile_module(scaled_by_mode, (x, 2.0), str(tmp_path / "by_mode.py"), mode="jit")
    mod = load_module(str(tmp_path / "by_mode.py"), "by_mode")
    want = gradc.jit(scaled_by_mode)(x, 2.0)
    assert same_bits(mod.scaled_by_mode(x, 2.0, mode="tanh", eps=1e-5), want)
    with pytest.raises(TypeError, match=r"compiled with mode='tanh', its default; got 'identity'"):
        mod.scaled_by_mode(x, 2.0, mode="identity")


def test_spec_placeholders():
    s = aot.Spec((2, 3), np.int64)
    assert s == aot.Spec([2, 3], "int64") and repr(s) == "Spec((2, 3), int64)"
    a = aot.materialize(({"w": aot.Spec(4)}, s))
    assert a[0]["w"].dtype == np.float32 and a[0]["w"].shape == (4,)
    assert a[1].dtype == np.int64 and not a[1].any()
    assert same_bits(aot.materialize(aot.Spec(4)), aot.materialize(aot.Spec(4)))


# --- training steps ------------------------------------------------------------------------------

def test_train_module_matches_gradc_train_step_for_50_steps(tmp_path):
    import digits_mlp as dm
    from sklearn.datasets import load_digits
    path = tmp_path / "digits_mlp_adam_copy.py"
    with open(os.path.join(KERNELS, "digits_mlp_adam.py"), "rb") as f:
        path.write_bytes(f.read())
    mod = load_module(str(path), "digits_mlp_adam_copy")
    assert "gradc" not in getattr(mod, "__dict__")

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    p_aot = dm.init_params(0)
    p_ref = {k: v.copy() for k, v in p_aot.items()}
    opt = gradc.optim.Adam(lr=3e-3)
    ref = gradc.train_step(dm.loss, opt)
    step = mod.loss
    rng = np.random.default_rng(0)
    for i in range(50):
        idx = rng.choice(len(x), 32, replace=False)
        if i % 10 == 0:  # a schedule: the learning rate changes without recompiling
            step.lr = opt.lr = 3e-3 * 0.5 * (1 + np.cos(np.pi * i / 50))
        loss_aot = step(p_aot, x[idx], y[idx])  # a plain loop, no gradc
        loss_ref = ref(p_ref, x[idx], y[idx])
        assert type(loss_aot) is float and loss_aot == loss_ref, i
    for k in p_ref:
        assert same_bits(p_aot[k], p_ref[k]), k
    state, ref_state = step.state_dict(), ref.state_dict()
    assert state["step"] == ref_state["step"] == 50
    names = list(p_ref)  # the module's state is in flat order (the dict's own)
    for slot in ("exp_avg", "exp_avg_sq"):
        for k, a in zip(names, state["state"][slot]):
            assert same_bits(a, ref_state["state"][slot][k])
    # each loads the other's state (the module's flat lists, gradc's trees), checked first
    ref.load_state_dict(state)
    step.load_state_dict(ref_state)
    for slot in ("exp_avg", "exp_avg_sq"):
        for k, a in zip(names, step.state_dict()["state"][slot]):
            assert same_bits(a, ref.state_dict()["state"][slot][k])
    # gradc's state keyed in another order (as a file may give it back): the state is per key
    step.load_state_dict({"step": 50, "state": {slot: dict(reversed(list(tree.items())))
                                                for slot, tree in ref_state["state"].items()}})
    for slot in ("exp_avg", "exp_avg_sq"):
        for k, a in zip(names, step.state_dict()["state"][slot]):
            assert same_bits(a, ref_state["state"][slot][k])
    with pytest.raises(TypeError, match="exp_avg"):  # (a tree of other keys)
        step.load_state_dict({"step": 1, "state": {s: {"W1": p_ref["W1"]}
                                                   for s in ("exp_avg", "exp_avg_sq")}})
    good = step.state_dict()
    halves = {"state": {"exp_avg": good["state"]["exp_avg"]}}  # (Adam's state, half of it)
    doubled = {s: [a.astype(np.float64) for a in v] for s, v in good["state"].items()}
    for bad, error, words in [(dict(good, step=-1), TypeError, "int >= 0"),
                              (dict(good, step=2.5), TypeError, "int >= 0"),
                              (dict(halves, step=1), ValueError, "whole"),
                              (dict(good, state=doubled), ValueError, "float64")]:
        with pytest.raises(error, match=words):  # (gradc.train_step refuses each alike)
            step.load_state_dict(bad)
    assert step.step_count == 50
    # a state begun at step 40 (its Adam counts from there) into both: the same steps
    begun = dict(step.state_dict(), start=40)
    step.load_state_dict(begun)
    ref.load_state_dict(begun)
    for i in range(3):
        idx = rng.choice(len(x), 32, replace=False)
        assert step(p_aot, x[idx], y[idx]) == ref(p_ref, x[idx], y[idx]), i
    assert step.state_dict()["start"] == ref.state_dict()["start"] == 40
    for k in p_ref:
        assert same_bits(p_aot[k], p_ref[k]), k
    with pytest.raises(TypeError, match="start"):
        step.load_state_dict(dict(begun, start=60))
    step.load_state_dict(good)
    assert step.step_count == 50 and "start" not in step.state_dict()

    with pytest.raises(ValueError, match="learning rate"):  # (as gradc.optim: not ascent)
        step.lr = -1.0
    for bad_lr in (np.array(0.1), "0.1", True):  # (as gradc.optim's opt.lr: a number; fuzz41b)
        with pytest.raises(TypeError, match="give a number"):
            step.lr = bad_lr
    step.lr = np.float32(0.5)
    assert type(step.lr) is float and step.lr == np.float32(0.5)
    step.lr = opt.lr

    with pytest.raises(ValueError, match="x must be float32"):
        step(p_aot, x[:31], y[:31])
    with pytest.raises(TypeError, match="in place"):
        step({k: np.asfortranarray(v) if v.ndim == 2 else v for k, v in p_aot.items()},
             x[:32], y[:32])
    assert step.step_count == 50  # failed calls change nothing


def test_momentum_step_with_clipping_matches_gradc(tmp_path):
    import linear_regression as lr
    x, y = lr.make_data(n=16)
    params = {"w": np.zeros((3, 1), np.float32), "b": np.zeros(1, np.float32)}
    opt = aot.make_optimizer("momentum", lr=0.05)
    aot.compile_module(lr.loss, (params, x, y), str(tmp_path / "lr_momentum.py"), mode="train",
                       optimizer=opt, clip_norm=1.0, check_finite=True)
    mod = load_module(str(tmp_path / "lr_momentum.py"), "lr_momentum")
    ref = gradc.train_step(lr.loss, aot.make_optimizer("momentum", lr=0.05), clip_norm=1.0,
                           check_finite=True)
    p_ref = {k: v.copy() for k, v in params.items()}
    for _ in range(5):
        assert mod.loss(params, x, y) == ref(p_ref, x, y)
    assert all(same_bits(params[k], p_ref[k]) for k in params)
    bad = x.copy()
    bad[0, 0] = np.nan
    before = {k: v.copy() for k, v in params.items()}
    with pytest.raises(FloatingPointError, match="left unchanged"):
        mod.loss(params, bad, y)
    assert all(same_bits(params[k], before[k]) for k in params) and mod.loss.step_count == 5
    fresh = mod.TrainStep(lr=0.1)
    assert fresh.lr == 0.1 and fresh.step_count == 0 and mod.loss.lr == 0.05
    for bad_lr in (-1.0, float("nan")):  # (taken unchecked: training climbed the loss)
        with pytest.raises(ValueError, match="learning rate must be a number >= 0"):
            mod.TrainStep(lr=bad_lr)
    fresh.load_state_dict({"step": 3, "state": {}})  # (plain SGD's: momentum starts afresh)
    state = fresh.state_dict()
    assert state["start"] == 3 and not state["state"]["momentum_buffer"][0].any()
    swapped = {"b": params["b"], "w": params["w"]}  # (another key order: refused by name)
    with pytest.raises(TypeError, match=r"keys \['w', 'b'\], in that order"):
        mod.loss(swapped, x, y)
    text = textwrap.dedent(open(tmp_path / "lr_momentum.py").read())
    assert "copied from gradc.optim.SGD.scalars" in text


def test_train_module_takes_a_loss_of_shape_one(tmp_path):
    """A loss of size 1 is the scalar it holds (README); the module's step raised NumPy's
    TypeError after its kernels had updated the parameters."""
    def loss(p, x):
        return ((x @ p["w"]) ** 2).sum(keepdims=True)  # (shape (1, 1))

    params, x = {"w": np.ones((3, 1))}, np.ones((2, 3))
    aot.compile_module(loss, (params, x), str(tmp_path / "loss_11.py"), mode="train",
                       optimizer=aot.make_optimizer("sgd", lr=0.1))
    mod = load_module(str(tmp_path / "loss_11.py"), "loss_11")
    ref, p_ref = gradc.train_step(loss, gradc.optim.SGD(lr=0.1)), {"w": params["w"].copy()}
    for _ in range(2):
        assert mod.loss(params, x) == ref(p_ref, x)
    assert same_bits(params["w"], p_ref["w"]) and mod.loss.step_count == 2


# --- aliasing: inputs overlapping what the kernels write ----------------------------------------

def kernels_module(tmp_path, name):
    """A copy of kernels/NAME.py, imported under its own name."""
    path = tmp_path / f"{name}_copy.py"
    with open(os.path.join(KERNELS, f"{name}.py"), "rb") as f:
        path.write_bytes(f.read())
    return load_module(str(path), f"{name}_copy")


def test_module_fed_its_own_gradient_views_matches_gradc_on_copies(tmp_path):
    import linear_regression as lr
    mod = kernels_module(tmp_path, "linear_regression_vg")
    x, y = lr.make_data()
    params = {"w": np.full((3, 1), 0.5, np.float32), "b": np.ones(1, np.float32)}
    ref = gradc.value_and_grad(lr.loss, copy=True)
    _, grads = mod.loss(params, x, y)
    for _ in range(3):  # the gradients (views of the module's arena) as the next parameters
        expected = ref({k: v.copy() for k, v in grads.items()}, x, y)
        value, grads = mod.loss(grads, x, y)
        assert same_bits(value, expected[0])
        assert all(same_bits(grads[k], expected[1][k]) for k in grads)


def test_train_module_reads_a_batch_overlapping_a_parameter_from_a_copy(tmp_path):
    import linear_regression as lr
    mod = kernels_module(tmp_path, "linear_regression_sgd")
    x0, y = lr.make_data()
    buf = x0.copy()  # w lives in the first three numbers of the batch x
    params = {"w": buf.reshape(-1)[:3].reshape(3, 1), "b": np.ones(1, np.float32)}
    p_ref = {k: v.copy() for k, v in params.items()}
    ref = gradc.train_step(lr.loss, aot.make_optimizer("sgd", lr=0.1))
    for i in range(3):
        expected = ref(p_ref, buf.copy(), y)  # (before the step writes w into buf)
        assert mod.loss(params, buf, y) == expected, i
        assert all(same_bits(params[k], p_ref[k]) for k in params), i


@pytest.mark.parametrize("layout", ["same memory", "overlapping slices"])
def test_train_module_refuses_parameters_that_share_memory(tmp_path, layout):
    import linear_regression as lr
    mod = kernels_module(tmp_path, "linear_regression_sgd")
    x, y = lr.make_data()
    buf = np.ones(4, np.float32)
    w = buf[:3].reshape(3, 1)
    b = buf[:1] if layout == "same memory" else buf[2:3]
    with pytest.raises(ValueError, match=r"parameters params\['w'\] and params\['b'\] share memory"):
        mod.loss({"w": w, "b": b}, x, y)
    assert same_bits(buf, np.ones(4, np.float32)) and mod.loss.step_count == 0


# --- the runtime a module runs is gradc/standalone/, copied verbatim ---------------------------

def test_modules_hold_gradc_standalone_code_verbatim():
    """The code that runs a generated module's program (argument checks, the arena, the
    callables, a train step's state) is gradc/standalone/'s, copied as it is: the kernels/
    modules (CPU) and a CUDA module (generated without a GPU) hold each piece exactly once."""
    from gradc import standalone
    from gradc.standalone import callables, calls, device, host, numba_cache, train_step

    def read(name):
        with open(os.path.join(KERNELS, name), encoding="utf-8") as f:
            return f.read()

    def holds(text, modules, absent):
        for module in modules:
            assert text.count(standalone.source(module)) == 1, module.__name__
        for module in absent:
            assert standalone.source(module) not in text, module.__name__

    step_cpu = read("linear_regression_sgd.py")
    holds(step_cpu, [numba_cache, calls, host, train_step], [device, callables])
    holds(read("linear_regression_vg.py"), [numba_cache, calls, host, callables], [device, train_step])

    def loss(w, x):
        return np.sum(np.tanh(x @ w))

    example = (np.ones((3, 2), np.float32), np.ones((4, 3), np.float32))
    step_cuda = aot.generate(loss, example, mode="train", optimizer=gradc.optim.SGD(lr=0.1),
                             target="cuda")
    holds(step_cuda, [calls, device, train_step], [host, numba_cache, callables])
    vg_cuda = aot.generate(loss, example, target="cuda")
    holds(vg_cuda, [calls, device, callables], [host, train_step])


def test_no_runtime_code_is_written_as_strings():
    """The AOT writers hold no Python code in string literals (a `def` or `class` line) but the
    program itself (the CPU driver `run`, the CUDA `launches` list, generated from the plan):
    what else a module runs comes from gradc/standalone/ (the test above) or gradc's own code."""
    import ast
    import re
    for name in ("aot.py", "aot_cuda.py", "aot_text.py"):
        with open(os.path.join(ROOT, "gradc", name), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        strings = [n.value for n in ast.walk(tree)
                   if isinstance(n, ast.Constant) and isinstance(n.value, str)]
        code = [s for s in strings if re.search(r"^\s*(def|class) (?!launches\b)\w+.*:\s*$", s, re.M)]
        assert not code, f"gradc/{name} writes code as a string: {code[0][:80]!r}"


def erf_model(x):
    import scipy.special as sp
    return np.sum(sp.erf(x) * sp.gammaln(x + 2.0))


def test_special_functions_are_copied_where_a_kernel_calls_one(tmp_path, monkeypatch):
    """A module whose kernels call scipy.special's functions carries gradc's scalar code for
    them (and gives gradc's bits); the others do not carry it."""
    x = np.linspace(0.1, 2.0, 7)
    path = tmp_path / "erf_vg.py"
    aot.compile_module(erf_model, (x,), str(path))
    banner = "special functions, copied from gradc/codegen/special_math.py"
    assert banner in path.read_text()
    with open(os.path.join(KERNELS, "linear_regression_vg.py")) as f:
        assert banner not in f.read()
    monkeypatch.syspath_prepend(str(tmp_path))
    import erf_vg
    value, grad = erf_vg.erf_model(x)
    want_value, want_grad = gradc.value_and_grad(erf_model)(x)
    assert same_bits(value, want_value) and same_bits(grad, want_grad)


def keyed(p, x, fill):
    return np.sum(np.exp(np.where(x > 0, x * p[1], fill)))


def test_what_a_fuzzing_round_of_the_modules_found(tmp_path):
    """Dict keys 1.0 or True were taken for a module compiled with 1 (gradc traces another
    signature: a silent wrong program); each call handed out the same gradient views (a
    caller's reshape of one reached the next call's); a static -inf was refused; a callable
    named like a builtin the runtime calls (`next`) compiled and then failed; writers of one
    path at once raced on one temporary file."""
    x = np.linspace(-1.0, 1.0, 4)
    args = ({1: np.array(2.0)}, x, -np.inf)
    path = str(tmp_path / "keyed_vg.py")
    aot.compile_module(keyed, args, path)
    mod = load_module(path, "keyed_vg")
    value, grads = mod.keyed(*args)
    ref_value, ref_grads = gradc.value_and_grad(keyed)(*args)
    assert same_bits(value, ref_value) and same_bits(grads[1], ref_grads[1])
    for key in (1.0, True):
        with pytest.raises(TypeError, match="must be a dict with keys"):
            mod.keyed({key: np.array(2.0)}, x, -np.inf)
    with pytest.raises(TypeError, match="static value -inf; got inf"):
        mod.keyed(args[0], x, np.inf)
    # keywords, as gradc's API takes them
    by_name = mod.keyed(args[0], fill=-np.inf, x=x)
    assert same_bits(by_name[0], value) and same_bits(by_name[1][1], grads[1])
    with pytest.raises(TypeError, match="missing fill"):
        mod.keyed(args[0], x=x)
    with pytest.raises(TypeError, match="has no argument 'y'"):
        mod.keyed(args[0], x, -np.inf, y=x)
    with pytest.raises(aot.AotError, match="whole numbers >= 0"):
        aot.Spec((-1, 2))
    first = mod.keyed(*args)[1][1]
    first.shape = (1,)
    first.flags.writeable = False
    again = mod.keyed(*args)[1][1]
    assert again is not first and again.shape == () and again.flags.writeable
    def shadowing(x):
        return np.sum(x * x)

    shadowing.__name__ = "next"
    with pytest.raises(aot.AotError, match="a builtin its code calls"):
        aot.compile_module(shadowing, (x,), str(tmp_path / "next.py"))
    errors = errors_in_threads(lambda: aot.compile_module(keyed, args,
                                                         str(tmp_path / "shared.py")))
    assert errors == [] and not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    assert load_module(str(tmp_path / "shared.py"), "shared").keyed(*args)[0] == value
