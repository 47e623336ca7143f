"""The `gradc` command line: compile, explain (--dot), check, help and error messages.

Commands run in-process through `gradc.cli.main(argv)` (the console script calls the same
function); one test runs the real `python -m gradc.cli` to check the exit status end to end.
"""
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from gradc import cli
from gradc.ops import registry
from gradc.ops.registry import ELEMENTWISE, OpDef, register

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BAD_OP = "cli_test_bad_square"


@pytest.fixture
def bad_op():
    """A test-only op with a deliberately wrong VJP (d(x*x)/dx is 2x; this says 3x), registered
    for one test only (tests/ops checks that every registered op is covered)."""
    register(OpDef(BAD_OP, ELEMENTWISE, infer=lambda inputs: (inputs[0].shape, inputs[0].dtype),
                   ref=lambda x: x * x, vjp=lambda n, g: [g * 3.0 * n.inputs[0]],
                   scalar=lambda m, dt, a: f"{a} * {a}"))
    try:
        yield BAD_OP
    finally:
        registry._OPS.pop(BAD_OP, None)


def write(tmp_path, name, source):
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return str(path)


def run_cli(capsys, *argv):
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def line_of(path, text):
    with open(path) as f:
        return next(i for i, line in enumerate(f, 1) if text in line)


SMALL = """
import numpy as np
from gradc.aot import Spec


def loss(params, x):
    h = np.tanh(x @ params["w"])
    return np.mean(h * h)


def args():
    return {"w": Spec((3, 2))}, Spec((4, 3))


def too_few():
    return ({"w": Spec((3, 2))},)


def raises():
    raise RuntimeError("no data here")


def bad_shapes():
    return {"w": Spec((5, 2))}, Spec((4, 3))


def uses_fft(params, x):
    return np.sum(np.fft.fft(x @ params["w"]).real)


not_a_function = 3
"""


@pytest.fixture
def small(tmp_path):
    return write(tmp_path, "cli_small.py", SMALL)


# --- help ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [[], ["compile"], ["explain"], ["check"]])
def test_help_for_every_command(command, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(command + ["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: gradc")
    if command:
        assert "--example MODULE.py:ARGS_FN" in out and "--debug" in out
    else:
        assert "compile" in out and "explain" in out and "check" in out


# --- errors: exit status 2 and one line, no traceback -----------------------------------------

@pytest.mark.parametrize("command", ["compile", "explain", "check"])
@pytest.mark.parametrize("case, expected", [
    ("missing_file", "gradc: error: no such file: {d}/nope.py"),
    ("missing_file_here", "gradc: error: no such file: nope.py"),  # (not module `py` of `nope`)
    ("missing_function", "gradc: error: {d}/cli_small.py has no function 'nope'"),
    ("not_callable", "gradc: error: {d}/cli_small.py:not_a_function is a int, not a function"),
    ("example_raises", "gradc: error: the example function {d}/cli_small.py:raises raised "
                       "RuntimeError: no data here"),
    ("wrong_arguments", "gradc: error: {d}/cli_small.py:loss cannot take the 1 example argument "
                        "from {d}/cli_small.py:too_few: missing a required argument: 'x'"),
])
def test_error_messages(command, case, expected, small, tmp_path, capsys):
    d = os.path.dirname(small)
    target, example = f"{small}:loss", f"{small}:args"
    if case == "missing_file":
        target = f"{d}/nope.py:loss"
    elif case == "missing_file_here":
        target = "nope.py:loss"
    elif case == "missing_function":
        target = f"{small}:nope"
    elif case == "not_callable":
        target = f"{small}:not_a_function"
    elif case == "example_raises":
        example = f"{small}:raises"
    elif case == "wrong_arguments":
        example = f"{small}:too_few"
    argv = [command, target, "--example", example]
    if command == "compile":
        argv += ["-o", tmp_path / "out.py"]
    status, out, err = run_cli(capsys, *argv)
    assert status == 2
    assert err == expected.format(d=d) + "\n"
    assert not (tmp_path / "out.py").exists()


def test_an_output_path_that_is_a_directory_is_an_error_with_no_stray_file(small, tmp_path,
                                                                           capsys):
    """`-o DIR` raised a raw IsADirectoryError after compiling and left DIR.tmp behind."""
    folder = tmp_path / "out"
    folder.mkdir()
    status, out, err = run_cli(capsys, "compile", f"{small}:loss", "--example",
                               f"{small}:args", "-o", folder)
    assert status == 2 and "is a directory" in err and "step.py" in err
    assert not (tmp_path / "out.tmp").exists() and not os.listdir(folder)


def test_gradc_errors_name_the_users_line(small, tmp_path, capsys):
    status, _, err = run_cli(capsys, "compile", f"{small}:loss", "--example",
                             f"{small}:bad_shapes", "-o", tmp_path / "out.py")
    assert status == 2 and err.count("\n") == 1
    assert err.startswith(f"gradc: error: ShapeError: cli_small.py:{line_of(small, 'np.tanh')}:")
    status, _, err = run_cli(capsys, "check", f"{small}:uses_fft", "--example", f"{small}:args")
    assert status == 2 and err.count("\n") == 1
    assert f"cli_small.py:{line_of(small, 'np.fft.fft')}: np.fft.fft is not supported" in err


def test_a_loss_returning_more_is_told_what_the_cli_can_do(tmp_path, capsys):
    """The library's advice (has_aux=True) is no option of `gradc compile` (fuzz41b)."""
    path = write(tmp_path, "cli_aux.py", """
        import numpy as np
        def loss(w, x):
            r = x @ w
            return np.mean(r * r), r
        def args():
            return np.ones(3), np.ones((2, 3))
        """)
    status, _, err = run_cli(capsys, "compile", f"{path}:loss", "--example", f"{path}:args",
                             "-o", tmp_path / "out.py")
    assert status == 2 and err.count("\n") == 1
    assert "returns one scalar" in err and "--jit module" in err and "has_aux" not in err


def test_a_store_outside_the_arguments_is_refused_in_a_module_the_cli_imports(tmp_path, capsys):
    """fuzz44d: `m.cache = h` of an object of the user's module: the CLI imports it as
    gradc_user_<name>, which the walk took for gradc's own module, so nothing of it was walked:
    the written module silently never set m.cache (refused as the library refuses it)."""
    path = write(tmp_path, "cli_store.py", """
        import numpy as np
        class Model:
            cache = None
        m = Model()
        def f(x):
            h = np.tanh(x)
            m.cache = h
            return np.sum(h)
        def args():
            return (np.ones((3, 2)),)
        """)
    status, _, err = run_cli(capsys, "compile", f"{path}:f", "--example", f"{path}:args",
                             "--jit", "-o", tmp_path / "out.py")
    assert status == 2 and "stored traced values outside its arguments (`m.cache`" in err
    assert not (tmp_path / "out.py").exists()


def test_debug_shows_the_traceback(small, capsys):
    with pytest.raises(cli.CliError, match="raised RuntimeError"):
        cli.main(["check", f"{small}:loss", "--example", f"{small}:raises", "--debug"])


def test_bad_options(small, tmp_path, capsys):
    status, _, err = run_cli(capsys, "compile", f"{small}:loss", "--example", f"{small}:args",
                             "--lr", "0.1", "-o", tmp_path / "o.py")
    assert status == 2 and "go with --train" in err
    with pytest.raises(SystemExit) as e:  # argparse: usage and the error, status 2
        cli.main(["compile", f"{small}:loss", "--example", f"{small}:args"])
    assert e.value.code == 2 and "-o/--output" in capsys.readouterr().err
    source = open(small).read()  # (-o onto the module itself overwrote the user's source)
    status, _, err = run_cli(capsys, "compile", f"{small}:loss", "--example", f"{small}:args",
                             "-o", small)
    assert status == 2 and "the module it compiles from" in err and open(small).read() == source
    status, _, err = run_cli(capsys, "compile", f"{small}:loss", "--example", f"{small}:args",
                             "--train", "adam", "--momentum", "0.9", "-o", tmp_path / "o.py")
    assert status == 2 and "--momentum goes with" in err
    status, _, err = run_cli(capsys, "compile", f"{small}:loss", "--example", f"{small}:args",
                             "--jit", "--argnums", "1", "-o", tmp_path / "o.py")
    assert status == 2 and "--argnums goes with a gradient" in err  # (it was accepted)


def test_console_entry_point_exit_status(small, tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-m", "gradc.cli", "check", f"{small}:loss",
                           "--example", f"{small}:raises"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("gradc: error: the example function") and "Traceback" not in \
        proc.stderr


# --- compile -----------------------------------------------------------------------------------

def test_compile_writes_a_module(small, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, out, _ = run_cli(capsys, "compile", "cli_small.py:loss", "--example",
                             "cli_small.py:args", "--train", "adam", "--lr", "0.01", "-o",
                             "small_step.py")
    assert status == 0 and out == "gradc: wrote small_step.py\n"
    text = (tmp_path / "small_step.py").read_text()
    assert text.startswith("# Generated by gradc")
    assert "#   gradc compile cli_small.py:loss --example cli_small.py:args --train adam --lr 0.01" \
        in text
    assert "Adam(lr=0.01" in text and "from small_step import loss" in text
    status, _, _ = run_cli(capsys, "compile", f"{small}:loss", "--example", f"{small}:args",
                           "--grad", "-q", "-o", "small_grad.py")
    assert status == 0 and "grads = loss(params, x)" in (tmp_path / "small_grad.py").read_text()


# --- explain --dot -----------------------------------------------------------------------------

def test_explain_and_dot(small, tmp_path, capsys):
    dot = tmp_path / "ir.dot"
    status, out, _ = run_cli(capsys, "explain", f"{small}:loss", "--example", f"{small}:args",
                             "--dot", dot)
    assert status == 0
    assert "== kernels:" in out and "== memory plan" in out
    text = dot.read_text()
    assert text.startswith("digraph gradc {") and text.rstrip().endswith("}")
    assert "subgraph cluster_k0 {" in text and 'label="k0: ' in text
    assert "= tanh\\nf32[4,2]\\ncli_small.py:" in text
    assert '"params[\'w\']\\nf32[3,2]"' in text and "-> out0;" in text
    assert text.count("{") == text.count("}")


# --- check -------------------------------------------------------------------------------------

MANY_OPS = """
import numpy as np
import gradc
from gradc.aot import Spec


def loss(p, img, idx, labels):
    x = p["x"]
    a = np.tanh(x @ p["w"]) + np.exp(-x[:, :2] ** 2).sum(axis=1, keepdims=True)
    b = np.log1p(np.abs(a)) * np.sqrt(np.square(a) + 1.0) - np.expm1(a * 0.1)
    c = gradc.nn.sigmoid(b) / (1.0 + np.cos(b) ** 2) + np.sin(b) * np.reciprocal(2.0 + a)
    d = np.maximum(c, 0.1 * c) + np.minimum(a, b) - np.clip(b, -0.5, 0.5)
    e = np.where(a > 0, d, -d) ** 3 * 0.1 + gradc.nn.softplus(d) - gradc.nn.log_sigmoid(c)
    f = np.concatenate([e, e.T @ e * 0.1], axis=0).reshape(-1, 2).transpose()
    g = gradc.nn.softmax(f, axis=-1) * gradc.nn.log_softmax(f, axis=0)
    h = gradc.nn.logsumexp(g, axis=1) + np.max(g, axis=1) + np.min(f, axis=1) + g[:, ::2].mean(1)
    emb = gradc.nn.embedding(p["table"], idx)
    ln = gradc.nn.layer_norm(emb, p["gamma"], p["beta"])
    conv = gradc.nn.conv2d(img, p["k"], p["kb"], padding=1)
    pooled = gradc.nn.max_pool2d(conv, 2) + gradc.nn.avg_pool2d(np.tanh(conv), 2, stride=1,
                                                               padding=0)[:, :, :2, :2]
    logits = gradc.nn.flatten(pooled) @ p["dense"] + np.stack([ln.sum(0), ln.mean(0)])[:, :3]
    k = gradc.nn.relu(c) + np.floor(a) * 0.1 + np.sign(b) * 0.01 + np.remainder(a, 0.7)
    bm = np.stack([emb, emb * 2.0]) @ np.stack([p["table"][:3], p["table"][3:]])
    return (gradc.nn.cross_entropy(logits, labels) + np.sum(h) ** 2 * 0.01 + np.sum(k)
            + np.mean(bm)
            + gradc.nn.mse(p["x"], np.ones_like(p["x"])) + np.sum(gradc.nn.gelu(ln)) / x.size)


def args():
    rng = np.random.default_rng(1)
    p = {"x": Spec((3, 4), np.float64), "w": Spec((4, 2), np.float64), "table": Spec((6, 3)),
         "gamma": Spec((3,)), "beta": Spec((3,)), "k": Spec((2, 1, 3, 3)), "kb": Spec((2,)),
         "dense": Spec((8, 3))}
    return p, Spec((2, 1, 4, 4)), rng.integers(0, 6, 5), np.array([0, 2])


def bad(p, x):
    y = np.tanh(x @ p["w"])
    z = bad_square(y)  # the wrong VJP
    return np.sum(z * 2.0)


def bad_args():
    return {"w": Spec((3, 2))}, Spec((4, 3))


from gradc.trace import traced


@traced
def bad_square(y):
    return y.graph.apply("%s", (y,))
""" % BAD_OP


def test_check_passes_on_many_ops(tmp_path, capsys):
    path = write(tmp_path, "cli_many_ops.py", MANY_OPS)
    status, out, err = run_cli(capsys, "check", f"{path}:loss", "--example", f"{path}:args",
                               "--verbose")
    assert status == 0, out + err
    assert out.rstrip().endswith("OK: every checked VJP agrees with finite differences")
    checked = {line.split()[1] for line in out.splitlines()[1:] if line.startswith("  OK")}
    for op in ("matmul", "tanh", "exp", "log1p", "sqrt", "sigmoid", "divide", "cos", "sin",
               "reciprocal", "maximum", "minimum", "where", "power", "softplus", "log_sigmoid",
               "concatenate", "reshape", "transpose", "slice", "softmax", "log_softmax",
               "logsumexp", "max", "min", "sum", "take", "unfold", "take_along_axis",
               "broadcast_to", "expm1", "abs", "square", "subtract", "negative", "add",
               "multiply", "astype", "relu", "bmm", "remainder"):
        assert op in checked, f"{op} was not checked: {sorted(checked)}"


def test_check_names_the_op_and_line_of_a_wrong_vjp(bad_op, tmp_path, capsys):
    path = write(tmp_path, "cli_bad_vjp.py", MANY_OPS)
    line = line_of(path, "z = bad_square(y)")
    status, out, _ = run_cli(capsys, "check", f"{path}:bad", "--example", f"{path}:bad_args")
    assert status == 1
    assert f"FAIL  {BAD_OP}" in out
    last = out.rstrip().splitlines()[-1]
    assert last.startswith(f"FAILED: the first op whose gradient disagrees is '{BAD_OP}' at "
                           f"cli_bad_vjp.py:{line}: z = bad_square(y)  # the wrong VJP")
    assert "finite differences" in last


def test_check_api():
    from gradc.check import check

    def f(p, x):
        return np.sum(np.tanh(x @ p["w"]) ** 2)

    report = check(f, {"w": np.ones((3, 2))}, np.arange(6.0).reshape(2, 3) / 10)
    assert report.ok and report.first_failure is None
    assert report.counts()["ok"] == len(report.checks) >= 3


def test_compile_prints_gradcs_warnings_as_notes_naming_the_users_line(tmp_path, capsys):
    """A ConstantArrayWarning during `gradc compile` (an array read from a global, compiled in)
    prints as one `gradc: warning:` line whose message names the module's line, not Python's
    warning that points at the command's own script."""
    module = write(tmp_path, "globals_model.py", """
        import numpy as np
        W = np.linspace(0.0, 1.0, 12).reshape(3, 4)


        def loss(x):
            return np.sum(np.tanh(x @ W))


        def args():
            return (np.ones((2, 3)),)
        """)
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # (as outside pytest, which records warnings)
        status, out, err = run_cli(capsys, "compile", f"{module}:loss", "--example",
                                   f"{module}:args", "-q", "-o", tmp_path / "out.py")
    assert status == 0, err
    notes = [line for line in err.splitlines() if line.startswith("gradc: warning: ")]
    assert len(notes) == 1 and "ConstantArrayWarning" in notes[0], err
    assert f"globals_model.py:{line_of(module, 'def loss')}" in notes[0] and "`W`" in notes[0]
    assert "cli.py" not in err and "bin/gradc" not in err


def test_a_model_inside_a_package_imports_relatively(tmp_path, monkeypatch):
    """A model file in a package (`from .layers import dense`) failed to import ('attempted
    relative import with no known parent package'): it is imported as the package's module,
    by its path or as pkg.module:NAME."""
    package = tmp_path / "netpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "layers.py").write_text("import numpy as np\n\n\ndef dense(w, x):\n"
                                       "    return np.tanh(x @ w)\n")
    (package / "model.py").write_text(textwrap.dedent("""
        import numpy as np
        from .layers import dense


        def loss(w, x):
            return np.sum(dense(w, x) ** 2)


        def args():
            return np.full((3, 2), 0.1), np.ones((4, 3))
        """))
    monkeypatch.chdir(tmp_path)
    for target, example in (("netpkg/model.py:loss", "netpkg/model.py:args"),
                            ("netpkg.model:loss", "netpkg.model:args")):
        out = tmp_path / "out.py"
        assert cli.main(["compile", target, "--example", example, "-q", "-o", str(out)]) == 0
        assert "def loss" not in out.read_text() and "loss = ValueAndGrad()" in out.read_text()
        out.unlink()
