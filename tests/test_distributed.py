"""`gradc.distributed`: data-parallel training over MPI, checked under `mpiexec -n 2`.

The MPI jobs are scripts in tests/mpi_scripts/, started here with a time bound. Each job pays
the imports and the compiles, so one job (dp_checks.py) makes most of the checks and writes what
it saw to a JSON file; the tests below read it. The ranks share the session's GRADC_CACHE_DIR
(tests/conftest.py), run with one BLAS and one Numba thread each, and are skipped, saying why,
when mpi4py or mpiexec is missing (`pip install -e ".[mpi]"` installs both).
"""
import collections
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import gradc
from gradc.distributed import shard

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SCRIPTS = os.path.join(HERE, "mpi_scripts")
BOUND_S = 240  # no MPI job may take longer; a hang fails the test instead of blocking CI


def find_mpiexec():
    """The mpiexec of this Python's environment (the mpich wheel puts it next to python), or
    the one on PATH."""
    for d in (os.path.dirname(sys.executable), os.path.dirname(os.path.realpath(sys.executable))):
        path = os.path.join(d, "mpiexec")
        if os.access(path, os.X_OK):
            return path
    return shutil.which("mpiexec")


def mpi_missing():
    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed (pip install -e '.[mpi]')"
    if find_mpiexec() is None:
        return "no mpiexec next to this python or on PATH (pip install -e '.[mpi]')"
    return None


needs_mpi = pytest.mark.skipif(mpi_missing() is not None, reason=str(mpi_missing()))


def mpiexec(script, *args, n=2, timeout=BOUND_S):
    """Run tests/mpi_scripts/SCRIPT (or any path) on `n` ranks; (returncode, stdout, stderr,
    seconds). Fails the test if the job outlives `timeout`."""
    exe = find_mpiexec()
    cmd = [exe, "-n", str(n)]
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    if "Open MPI" in version or "OpenRTE" in version:  # MPICH needs neither flag
        cmd += ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    path = script if os.path.isabs(script) else os.path.join(SCRIPTS, script)
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd + [sys.executable, path, *map(str, args)], env=env,
                              capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{os.path.basename(path)} on {n} ranks did not end within {timeout} s "
                    f"(a hang):\nstdout: {e.stdout}\nstderr: {e.stderr}")
    return done.returncode, done.stdout, done.stderr, time.perf_counter() - t0


@pytest.fixture(scope="module")
def checks(tmp_path_factory):
    """dp_checks.py's results, one run for the module: (results, rc, stdout, stderr, s)."""
    out = str(tmp_path_factory.mktemp("mpi") / "dp_checks.json")
    rc, stdout, stderr, seconds = mpiexec("dp_checks.py", out)
    assert os.path.exists(out), f"no results (rc {rc}):\n{stdout}\n{stderr}"
    with open(out) as f:
        return json.load(f), rc, stdout, stderr, seconds


# --- without MPI ---------------------------------------------------------------------------

def test_shard_gives_every_rank_an_equal_contiguous_block():
    x = np.arange(10 * 3).reshape(10, 3)
    y = np.arange(10)
    parts = [shard((x, y), rank=r, size=3) for r in range(3)]
    assert [len(px) for px, _ in parts] == [3, 3, 3]  # the 10th row is dropped
    assert np.array_equal(np.concatenate([py for _, py in parts]), np.arange(9))
    for px, py in parts:
        assert np.shares_memory(px, x) and np.array_equal(px[:, 0] // 3, py)
    assert isinstance(parts[0], tuple)
    assert isinstance(shard([x, y], rank=0, size=2), list)
    assert np.array_equal(shard(y, rank=1, size=2), np.arange(5, 10))
    Batch = collections.namedtuple("Batch", "x y")
    half = shard(Batch(x, y), rank=1, size=2)
    assert type(half) is Batch and np.array_equal(half.y, np.arange(5, 10))


def test_shard_rejects_what_cannot_be_split():
    with pytest.raises(ValueError, match="different lengths"):
        shard((np.zeros(4), np.zeros(5)), rank=0, size=2)
    with pytest.raises(ValueError, match="at least one"):
        shard(np.zeros(2), rank=0, size=3)
    with pytest.raises(ValueError, match="not a rank"):
        shard(np.zeros(4), rank=2, size=2)
    with pytest.raises(ValueError, match="not a rank"):
        shard(np.zeros(4), rank=0.5, size=2)


def test_shard_and_timeout_refuse_what_they_cannot_take():
    from gradc import distributed as dist
    for bad in (dict(rank=True, size=2), dict(rank=0, size=2.0)):
        with pytest.raises(ValueError, match="not a rank"):
            shard(np.zeros(4), **bad)
    for data in ({"x": np.zeros(4)}, np.float64(3.0), [1.0, 2.0], (), np.array(2.0)):
        with pytest.raises(ValueError, match="shard takes an array"):
            shard(data, rank=0, size=2)
    x, labels = shard((np.arange(4), [0, 1, 2, 3]), rank=1, size=2)  # (a list of labels too)
    assert np.array_equal(x, [2, 3]) and labels == [2, 3]
    loss = lambda p, x: np.sum(p * x)  # noqa: E731
    for timeout in (0, -1, float("nan"), "5", True):
        with pytest.raises(gradc.ArgumentError, match="timeout="):
            dist.DataParallelStep(loss, gradc.optim.SGD(0.1), comm=_SelfComm(), timeout=timeout)


def test_optimizer_options_in_another_dict_order_are_one_model():
    """The first step's model check compares the optimizers' options: a decay dict built in
    another key order on another rank (from a set: string hashes differ by process) was a
    ModelMismatchError."""
    a = gradc.optim.AdamW(1e-3, weight_decay={"W": 0.1, "b": {"x": 1.0, "a": 0.0}})
    b = gradc.optim.AdamW(1e-3, weight_decay={"b": {"a": 0.0, "x": 1.0}, "W": 0.1})
    assert repr(a) == repr(b)  # (what the first step's model check compares)
    assert repr(a) != repr(gradc.optim.AdamW(1e-3, weight_decay=0.1))


class _SelfComm:
    """A communicator of one rank, for what is checked before any collective."""

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 1


def test_errors_are_gradc_errors():
    from gradc import distributed as dist
    assert issubclass(dist.ModelMismatchError, gradc.GradcError)
    assert issubclass(dist.RankFailedError, dist.DistributedError)
    assert issubclass(dist.DistributedError, gradc.GradcError)


# --- under mpiexec -n 2 --------------------------------------------------------------------

@needs_mpi
def test_the_update_step_applies_exactly_the_averaged_gradient(checks):
    results = checks[0]
    # the update-only step with SGD(lr=1) gives p - scale*g: bit for bit where the scaling is
    # exact (powers of two: 2, 4, 8... ranks), within one rounding of NumPy's two-step formula
    # otherwise
    ulps = results["update_gradient_exact"]
    assert ulps["1.0"] == 0 and ulps["0.5"] == 0 and ulps["0.3333333333333333"] <= 1.0, ulps
    # one rank: the same trajectory as gradc.train_step (4 ulp of fast-math rounding allowed)
    for name, r in results["one_rank"].items():
        assert r["max_abs_param_diff"] <= 1e-6 and r["max_loss_diff"] <= 1e-6, (name, r)


@needs_mpi
@pytest.mark.parametrize("optimizer", ["sgd_momentum", "adamw_clip"])
def test_two_ranks_on_halves_match_one_process_on_the_whole_batch(checks, optimizer):
    r = checks[0][optimizer]
    assert r["steps"] == 20 and r["compiles"] == 1, r
    assert r["first_loss"] > r["last_loss"], r  # it trains
    assert r["allclose"], r  # rtol 1e-4, atol 1e-5 after 20 steps
    assert r["max_abs_param_diff"] <= 1e-5, r
    assert r["max_loss_diff"] <= 1e-5, r  # the returned loss is the global mean
    assert r["state_allclose"], r  # momentum buffer / Adam moments too


@needs_mpi
@pytest.mark.parametrize("optimizer", ["sgd_momentum", "adamw_clip"])
def test_ranks_stay_bit_identical_after_every_step(checks, optimizer):
    # rank 1 starts from other parameters: the first step broadcasts rank 0's
    assert checks[0][optimizer]["identical_every_step"], checks[0][optimizer]


@needs_mpi
def test_mismatched_models_raise_on_every_rank(checks):
    seen = checks[0]["mismatch"]
    assert len(seen) == 2
    for rank, r in enumerate(seen):
        assert r["raised"] == "ModelMismatchError" and r["is_gradc_error"], (rank, r)
        assert "different models" in r["message"], r
        assert "(20, 16)" in r["message"] and "(20, 17)" in r["message"], r  # both shapes shown
        assert r["message"].startswith("dp_checks.py:"), r  # names the user's line
        assert r["s"] < 30, r


@needs_mpi
def test_a_failing_rank_makes_every_rank_raise_and_nothing_is_updated(checks):
    rank0, rank1 = checks[0]["failing_step"]
    assert rank1["raised"] == "ShapeError" and rank1["at"] == 3, rank1  # its own error
    assert any("failed on rank 1 of 2" in note for note in rank1["notes"]), rank1
    assert rank0["raised"] == "RankFailedError" and rank0["at"] == 3, rank0
    assert "step 3 failed on rank 1 of 2" in rank0["message"], rank0
    assert "ShapeError" in rank0["failures"]["1"] and "(20, 16)" in rank0["failures"]["1"]
    for r in (rank0, rank1):
        assert r["unchanged"] and r["step_count"] == 2, r  # nothing was updated, on any rank
        assert r["steps_done"] == 4 and r["identical_after"], r  # and training went on


@needs_mpi
def test_what_a_fuzzing_round_found(checks):
    """A parameter reshaped on rank 1 alone (the same bytes) made rank 0 update with gradients
    summed across different parameters: now every rank raises, nothing updated; an optimizer
    option given as a function (mask=lambda) was a ModelMismatchError (its repr's address); a
    Python float parameter crashed the process; a program traced again and freed left its
    gradient views under its id, which a new program could take (stale gradients); an empty
    parameter was a CompileError about the gradient region's layout; an option function that
    answered otherwise on another rank passed the first step's check (by its name)."""
    rank0, rank1, single = checks[0]["found"]
    assert rank1["reshaped"]["raised"] == "SignatureError", rank1
    assert "first step's were" in rank1["reshaped"]["message"], rank1
    assert rank0["reshaped"]["raised"] == "RankFailedError", rank0
    for r in (rank0, rank1):
        assert r["reshaped"]["unchanged"] and r["reshaped"]["step_count"] == 1, r
        assert r["function_option"] == {"raised": None}, r
        assert r["rank_dependent_option"]["raised"] == "ModelMismatchError", r
        assert "per parameter leaf" in r["rank_dependent_option"]["message"], r
        assert r["python_float"]["raised"] == "SignatureError", r
        assert "Python float" in r["python_float"]["message"], r
    assert rank0["generators_kept"] == [1, ["NonFiniteError", 1], ["RankFailedError", 1], 2]
    assert rank1["generators_kept"] == [1, ["NonFiniteError", 1], ["KeyboardInterrupt", 1], 2]
    for r in (rank0, rank1):
        assert r["timeout_on_one_rank"] == 2, r
    assert single["changing_global"]["max_abs_diff"] < 1e-6, single
    assert single["changing_global"]["views_kept"] <= 9, single  # (weakly kept: freed ones go)
    assert single["empty_param"] < 1e-6, single  # (a CompileError about the region before)


@needs_mpi
def test_an_exception_outside_the_step_aborts_every_rank(checks):
    results, rc, stdout, stderr, seconds = checks
    assert results["outside"] == {"started": True}  # rank 0 never returned from its step
    assert rc != 0
    assert "gradc.distributed: rank 1 of 2: RuntimeError: rank one's data loader broke" in stderr
    assert seconds < BOUND_S


@needs_mpi
def test_a_rank_left_waiting_aborts_after_the_timeout():
    rc, stdout, stderr, seconds = mpiexec("dp_timeout.py", 1.0, timeout=60)
    assert rc != 0, (stdout, stderr)
    assert "rank 0 finished step 2" in stdout and "rank 0 was not stopped" not in stdout
    assert "rank 0 of 2: step 3: the other ranks did not join the gradient allreduce within 1 s" \
        in stderr, stderr
    assert seconds < 50  # rank 1 would sleep for 60 s: the abort ended it


@needs_mpi
def test_distributed_digits_example_reaches_95_percent():
    example = os.path.join(ROOT, "examples", "digits_mlp_distributed.py")
    rc, stdout, stderr, seconds = mpiexec(example, "--quiet")
    assert rc == 0, (stdout, stderr)
    assert "OK: digits MLP on 2 ranks test_accuracy" in stdout, stdout


def test_train_step_distributed_flag_builds_a_data_parallel_step():
    """`gradc.train_step(..., distributed=True)` is the data-parallel step (one rank here)."""
    pytest.importorskip("mpi4py")
    p = {"w": np.ones(3, np.float32)}
    step = gradc.train_step(lambda p, x: np.mean((x @ p["w"]) ** 2), gradc.optim.SGD(0.1),
                            distributed=True)
    x = np.ones((4, 3), np.float32)
    assert step(p, x) == pytest.approx(9.0)
    assert np.allclose(p["w"], 1.0 - 0.1 * 2 * 3.0)  # d/dw mean((x@w)^2) = 2*(x@w)*x -> 6 each


def test_data_parallel_step_refuses_parameters_that_share_memory():
    """Tied parameters would lose an update (as in gradc.train_step): refused, naming both,
    before the allreduce (one rank here), and nothing changes."""
    pytest.importorskip("mpi4py")
    step = gradc.train_step(lambda p, x: np.mean((x @ p["w"]) ** 2) + np.sum(p["v"]),
                            gradc.optim.SGD(0.1), distributed=True)
    w = np.ones(3, np.float32)
    x = np.ones((4, 3), np.float32)
    for _ in range(2):  # the first step (model check) and a later one
        with pytest.raises(gradc.SignatureError, match=r"p\['w'\] and p\['v'\] share memory"):
            step({"w": w, "v": w}, x)
        np.testing.assert_array_equal(w, 1.0)
        step({"w": np.ones(3, np.float32), "v": np.ones(3, np.float32)}, x)
    assert step.step_count == 2


@needs_mpi
def test_cuda_target_two_ranks_match_one_cpu_process(tmp_path, monkeypatch):
    """target="cuda" (under the simulator): the device forward+backward, the allreduce of its
    host output region, the device update: the same training as one CPU process."""
    monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "1")
    out = str(tmp_path / "dp_cuda.json")
    rc, stdout, stderr, _ = mpiexec("dp_cuda.py", out)
    assert rc == 0 and os.path.exists(out), f"rc {rc}:\n{stdout}\n{stderr[-3000:]}"
    with open(out) as f:
        r = json.load(f)
    assert r["target"] == "CudaCompiled", r
    assert r["losses"][-1] < r["losses"][0] and r["max_diff"] <= 1e-5, r
