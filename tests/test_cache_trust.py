"""Which disk cache gradc trusts (gradc/codegen/modules.py). A cache directory that someone else
could write into is refused (every directory from the root down must be the user's and writable
by no one else; a sticky shared directory may hold one), and so is one that cannot be written (a
regular file, an uncreatable path, a read-only directory, a full disk). gradc then caches in a
private temporary directory, or in memory, gives the right answer, and warns once
(gradc.CacheWarning). An AOT module imports from a read-only folder by a user with no writable
home.

Most cases run in this process, each with its own cache root, with the generated modules already
loaded set aside (so that the test's loads happen, in its cache). The refused ones all fall back
to this process's one temporary cache, so only the first of them compiles. Cases that need
permissions to apply (as root: a child process with no capabilities) or a file-size limit run
in a child process.
"""
import glob
import json
import os
import pickle
import pwd
import shutil
import stat
import subprocess
import time
import sys
import textwrap
import warnings

import numpy as np
import pytest

import gradc
from gradc import cli
from gradc.codegen import modules

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
W = np.linspace(-1.0, 1.0, 5)
X = np.linspace(0.0, 2.0, 5)

MODEL = '''
import numpy as np


def loss(w, x):
    return np.sum(np.tanh(x * w))


def args():
    return np.linspace(-1.0, 1.0, 5), np.linspace(0.0, 2.0, 5)
'''


def loss(w, x):  # MODEL's, for this process
    return np.sum(np.tanh(x * w))


def check_answer(value, grad):
    t = np.tanh(X * W)
    np.testing.assert_allclose(value, np.sum(t), rtol=1e-12)
    np.testing.assert_allclose(grad, X * (1 - t * t), rtol=1e-12)


def set_aside_generated_modules():
    saved = {n: m for n, m in sys.modules.items() if n.startswith("gradc_")}
    for name in saved:
        del sys.modules[name]
    return saved


@pytest.fixture
def fresh_modules():
    """No generated module loaded yet (this process's are put back afterwards)."""
    saved = set_aside_generated_modules()
    yield
    set_aside_generated_modules()
    sys.modules.update(saved)


@pytest.fixture(autouse=True)
def numba_route(monkeypatch):
    """The kernels here go through Numba, whose files these cases are about (the direct route's
    library files are checked in tests/test_direct_kernels.py)."""
    monkeypatch.setenv("GRADC_KERNELS", "numba")


def compute(monkeypatch, root):
    """value_and_grad of `loss` with the cache at `root`, checked; the CacheWarnings it gave."""
    monkeypatch.setenv("GRADC_CACHE_DIR", str(root))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value, grad = gradc.value_and_grad(loss, copy=True)(W, X)
    check_answer(value, grad)
    found = [w for w in caught if issubclass(w.category, gradc.CacheWarning)]
    for w in found:
        assert w.filename == __file__  # at the user's line
    return found


def modules_folder(root):
    (folder,) = glob.glob(os.path.join(str(root), "*", "modules"))
    return folder


def nobody():
    try:
        return pwd.getpwnam("nobody").pw_uid
    except KeyError:
        pytest.skip("no user 'nobody'")


def chown_tree(path, uid):
    for top, dirs, files in os.walk(path):
        for name in [top] + [os.path.join(top, f) for f in dirs + files]:
            os.lchown(name, uid, -1)


needs_root = pytest.mark.skipif(os.getuid() != 0,
                                reason="making files another user owns needs root")


# --- a private cache is used; one others can write into is not -----------------------------------

def test_a_private_cache_through_the_users_own_link_is_used(tmp_path, monkeypatch,
                                                            fresh_modules):
    real = tmp_path / "real"
    link = tmp_path / "link"
    real.mkdir(mode=0o700)
    link.symlink_to(real)
    assert compute(monkeypatch, link) == []
    folder = modules_folder(real)
    for path in (real, os.path.dirname(folder), folder, os.path.join(folder, "__pycache__")):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700, path
    names = [os.path.basename(p)[:-3] for p in glob.glob(os.path.join(folder, "gradc_*.py"))]
    assert names and all(n in sys.modules for n in names)
    assert glob.glob(os.path.join(folder, "*.sha256"))  # Numba's files, recorded
    assert not glob.glob(os.path.join(folder, "__pycache__", "*.pyc"))  # no bytecode is kept


@pytest.mark.parametrize("level, mode, who", [
    ("root", 0o777, "its group and others"),
    ("root", 0o775, "its group"),
    ("tag", 0o757, "others"),
])
def test_a_cache_others_can_write_into_is_refused(tmp_path, monkeypatch, fresh_modules, level,
                                                  mode, who):
    root = tmp_path / "shared"
    root.mkdir(mode=0o700)
    shared = root if level == "root" else root / modules.cache_tag()
    shared.mkdir(exist_ok=True)
    os.chmod(shared, mode)
    (w,) = compute(monkeypatch, root)
    message = str(w.message)
    assert f"{shared} is writable by {who} (mode {mode:o})" in message
    assert "It caches in " in message and "GRADC_CACHE_DIR" in message
    assert os.listdir(shared) == []  # nothing written into it


def test_a_sticky_shared_directory_may_hold_the_users_private_cache(tmp_path, monkeypatch,
                                                                     fresh_modules):
    shared = tmp_path / "tmp"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # like /tmp: GRADC_CACHE_DIR=/tmp
    assert compute(monkeypatch, shared) == []
    assert glob.glob(os.path.join(modules_folder(shared), "gradc_*.py"))


class Planted:
    """What another user would plant as a Numba index: a pickle that runs code when loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@needs_root
@pytest.mark.parametrize("level", ["root", "modules"])
def test_a_cache_another_user_owns_is_refused_and_nothing_in_it_runs(tmp_path, monkeypatch,
                                                                    fresh_modules, level):
    uid = nobody()
    own = tmp_path / "own"
    assert compute(monkeypatch, own) == []
    theirs = tmp_path / "theirs"  # the same files, every Numba index a pickle that runs code
    shutil.copytree(own, theirs)
    marker = tmp_path / "planted code ran"
    indexes = glob.glob(os.path.join(modules_folder(theirs), "__pycache__", "*.nbi"))
    assert indexes
    for index in indexes:
        with open(index, "wb") as f:
            pickle.dump(Planted(str(marker)), f)
    with open(indexes[0], "rb") as f:
        pickle.load(f)  # (it is live)
    os.rmdir(marker)
    foreign = theirs if level == "root" else modules_folder(theirs)
    chown_tree(foreign, uid)

    set_aside_generated_modules()
    (w,) = compute(monkeypatch, theirs)
    assert f"{foreign} is owned by nobody, not by you (root)" in str(w.message)
    assert not marker.exists()


@needs_root
def test_links_and_sticky_directories_of_another_user_are_refused(tmp_path, monkeypatch,
                                                                  fresh_modules):
    uid = nobody()
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    os.lchown(link, uid, -1)
    (w,) = compute(monkeypatch, link)
    assert f"{link} is a symbolic link owned by nobody, not by you (root)" in str(w.message)
    assert os.listdir(real) == []

    sticky = tmp_path / "sticky"  # its owner may delete what others put in it
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    os.chown(sticky, uid, -1)
    set_aside_generated_modules()
    (w,) = compute(monkeypatch, sticky)
    assert f"{sticky} is owned by nobody, not by you (root)" in str(w.message)
    assert os.listdir(sticky) == []


# --- a cache that cannot be written --------------------------------------------------------------

@pytest.mark.parametrize("where", ["a regular file", "below a regular file"])
def test_a_cache_path_that_is_no_directory_falls_back_with_one_warning(tmp_path, monkeypatch,
                                                                       fresh_modules, where):
    file = tmp_path / "file"
    file.write_text("not a cache")
    root = file if where == "a regular file" else file / "cache"
    (w,) = compute(monkeypatch, root)
    message = str(w.message)
    assert str(root) in message and "It caches in " in message
    assert ("is not a directory" if root == file else "Not a directory") in message
    assert file.read_text() == "not a cache"


def unprivileged():
    """A command prefix under which file permissions apply to the child: none needed unless
    root; as root, every capability dropped (setpriv), so uid 0 no longer overrides them."""
    if os.getuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("as root, needs setpriv to run a child that permissions apply to")
    return [setpriv, "--bounding-set=-all", "--inh-caps=-all", "--"]


CHILD = textwrap.dedent('''
    import json, os, sys, warnings
    import numpy as np
    import gradc
    from test_model import loss, args
    probe = os.path.join(sys.argv[1], "probe")
    try:  # the folder the test made read-only must be so for this process
        open(probe, "w").close()
        os.unlink(probe)
        writable = True
    except OSError:
        writable = False
    if sys.argv[2] == "file-size-limit":  # writes past 8 KiB fail, as on a full disk
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE,
                           (8192, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value, grad = gradc.value_and_grad(loss)(*args())
    print(json.dumps({"value": float(value), "grad": grad.tolist(), "writable": writable,
                      "warnings": [str(w.message) for w in caught
                                   if issubclass(w.category, gradc.CacheWarning)]}))
''')


def run_child(tmp_path, prefix, env, folder, mode=""):
    (tmp_path / "test_model.py").write_text(MODEL)
    (tmp_path / "child.py").write_text(CHILD)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, str(tmp_path)]), **env)
    proc = subprocess.run([*prefix, sys.executable, str(tmp_path / "child.py"), str(folder), mode],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    check_answer(out["value"], np.array(out["grad"]))
    return out


def test_a_read_only_cache_falls_back_with_one_warning(tmp_path):
    prefix = unprivileged()
    root = tmp_path / "read-only"
    root.mkdir()
    os.chmod(root, 0o555)
    out = run_child(tmp_path, prefix, {"GRADC_CACHE_DIR": str(root)}, root)
    assert not out["writable"]
    (message,) = out["warnings"]
    assert f"{root}: " in message and "Permission denied" in message
    assert "It caches in " in message
    assert os.listdir(root) == []


def test_a_disk_that_fills_mid_write_falls_back_to_memory_with_one_warning(tmp_path):
    root = tmp_path / "cache"
    out = run_child(tmp_path, [], {"GRADC_CACHE_DIR": str(root)}, tmp_path, "file-size-limit")
    (message,) = out["warnings"]
    assert f"{root}: " in message and "File too large" in message
    assert "It keeps compiled code in memory instead" in message
    # what it left behind (Numba's index with no data, no checksums) is not trusted next time
    out = run_child(tmp_path, [], {"GRADC_CACHE_DIR": str(root)}, tmp_path)
    assert out["warnings"] == []


# --- an ahead-of-time module ---------------------------------------------------------------------

def test_an_aot_module_imports_from_a_read_only_folder_with_no_writable_home(tmp_path):
    prefix = unprivileged()
    (tmp_path / "test_model.py").write_text(MODEL)
    folder = tmp_path / "aot"
    spec = str(tmp_path / "test_model.py")
    assert cli.main(["compile", f"{spec}:loss", "--example", f"{spec}:args",
                     "--value-and-grad", "-q", "-o", str(folder / "loss_vg.py")]) == 0
    home = tmp_path / "home"
    home.mkdir()
    for path in (folder, home):
        os.chmod(path, 0o555)
    child = textwrap.dedent('''
        import json, sys
        import numpy as np
        import loss_vg
        value, grad = loss_vg.loss(np.linspace(-1.0, 1.0, 5), np.linspace(0.0, 2.0, 5))
        assert "gradc" not in sys.modules
        print(json.dumps({"value": float(value), "grad": grad.tolist()}))
    ''')
    env = {k: v for k, v in os.environ.items()
           if k not in ("XDG_CACHE_HOME", "NUMBA_CACHE_DIR")}
    env.update(HOME=str(home), PYTHONPATH=str(folder))
    proc = subprocess.run([*prefix, sys.executable, "-c", child], cwd=str(home), env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    check_answer(out["value"], np.array(out["grad"]))
    assert os.listdir(folder) == ["loss_vg.py"] and os.listdir(home) == []


def test_version_directories_unused_for_a_month_are_deleted(tmp_path):
    """Each gradc/Numba/NumPy/Python version (and runtime edit) caches in a directory of its own,
    which nothing loads once the version changed: one unused for GRADC_CACHE_DAYS (30) days goes
    when the cache is next opened; the one in use, recent ones and what is not gradc's stay."""
    from gradc.codegen import modules
    root = tmp_path / "cache"
    root.mkdir(mode=0o700)
    month_ago = time.time() - 31 * 86400
    old, recent = root / "gradc0_0_9-numba0_60_0-old", root / "gradc0_1_0-numba0_68_1-recent"
    other, stray = root / "notes", root / "gradc-numba-a-file"
    for folder in (old, recent, other):
        (folder / "modules").mkdir(parents=True)
        (folder / "modules" / "gradc_k.py").write_text("x = 1\n")
    stray.write_text("")
    for path in (old, other, stray):
        os.utime(path, (month_ago, month_ago))
    current = os.path.dirname(modules._prepare(str(root)))
    assert not old.exists()
    assert recent.exists() and other.exists() and stray.exists() and os.path.isdir(current)
    assert os.stat(current).st_mtime > month_ago + 86400  # (marked used)
