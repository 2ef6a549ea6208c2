"""``python -m rnnlab.run`` as a user types it, in temp folders: bad values cost one line and
exit code 2 before any run exists; a good command records one run in ./mlflow.db."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import run_cli
from mlflow.tracking import MlflowClient

# (extra overrides, key the one-line message must name). Each is also run inside a sweep (-m).
BAD_VALUES = {
    "hidden_size=0": "hidden_size",
    "hidden_size=-3": "hidden_size",
    "hidden_size=abc": "hidden_size",
    "seq_length=0": "seq_length",
    "seq_length=200000": "seq_length",  # char-RNN: not shorter than the training text
    "learning_rate=0": "learning_rate",
    "learning_rate=-0.1": "learning_rate",
    "learning_rate=inf": "learning_rate",
    "learning_rate=nan": "learning_rate",
    "batch_size=0": "batch_size",
    "iterations=0": "iterations",
    "temperature=0": "temperature",
    "dtype=float16": "dtype",
    "optimizer=adagrd": "optimizer",
    "optimizer.name=lbfgs": "optimizer.name",
    "task=parity": "task",
    "data.path={missing}": "data.path",
    "data.path={latin1}": "data.path",
    "data.path={empty}": "data.path",
    "data=file": "data.path",
    "data.name=nosuchbook": "data.name",
    "hiden_size=10": "hiden_size",
    "+foo=1": "foo",
    "~hidden_size": "hidden_size",
    "hidden_size=50,0": "hidden_size",  # a sweep is checked value by value, before any job
}


@pytest.fixture(scope="module")
def bad_results(tmp_path_factory, kafka_path):
    """Every bad command line, run as real subprocesses (four at a time: each costs an
    interpreter start), each in its own empty folder."""
    root = tmp_path_factory.mktemp("bad")
    files = {"missing": root / "nope.txt", "latin1": root / "latin1.txt", "empty": root / "e.txt"}
    files["latin1"].write_bytes("Käfer".encode("latin-1"))
    files["empty"].write_bytes(b"")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}

    def run(i: int, arg: str):
        cwd = root / f"case{i}"
        cwd.mkdir()
        args = arg.format(**files).split()
        args = ["-m", *args] if "," in arg else args
        p = subprocess.run([sys.executable, "-m", "rnnlab.run", *args], cwd=cwd, env=env,
                           capture_output=True, text=True, timeout=300)  # fmt: skip
        return arg, (p.returncode, p.stdout, p.stderr, cwd)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(pool.map(run, range(len(BAD_VALUES)), BAD_VALUES))
    return results


@pytest.mark.parametrize("arg", list(BAD_VALUES))
def test_bad_value_is_one_line_exit_2_and_no_run(arg, bad_results):
    code, out, err, cwd = bad_results[arg]
    lines = err.splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("rnnlab: error: ")
    assert BAD_VALUES[arg] in lines[0]
    # nothing was started: no store (so no run, RUNNING or otherwise), no output folders
    assert sorted(p.name for p in cwd.iterdir()) == []


def test_bad_value_messages_say_what_is_allowed(bad_results):
    assert "an integer ≥ 1" in bad_results["hidden_size=0"][2]
    assert "a finite number > 0" in bad_results["learning_rate=nan"][2]
    assert "float64, float32" in bad_results["dtype=float16"][2]
    assert "adagrad, adam, rmsprop, sgd" in bad_results["optimizer=adagrd"][2]
    assert "did you mean hidden_size?" in bad_results["hiden_size=10"][2]
    assert "not UTF-8" in bad_results["data.path={latin1}"][2]
    assert "shorter than the training text" in bad_results["seq_length=200000"][2]


def test_cfg_job_shows_the_resolved_config_from_any_folder(tmp_path):
    result = run_cli(["--cfg", "job", "task=adder", "hidden_size=7"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "hidden_size: 7" in result.stdout
    assert "name: adder" in result.stdout and "name: sgd" in result.stdout
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_single_run_records_into_the_launch_folders_store(tmp_path):
    """One job, launched from a folder that is not the checkout: FINISHED run in ./mlflow.db,
    named after its overrides, with a summary line on stderr and no MLflow chatter."""
    result = run_cli(["task=adder", "iterations=200", "log_every=50"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "UserWarning" not in result.stderr and "INFO mlflow" not in result.stderr
    lines = result.stderr.splitlines()
    progress = [line for line in lines if line.startswith("adder iter ")]
    assert len(progress) == 4  # not a terminal: one line per log_every
    assert lines[-1].startswith("rnnlab: iterations=200,log_every=50,task=adder: FINISHED in ")
    assert "objective" in lines[-1]
    assert list(tmp_path.rglob("mlflow.db")) == [tmp_path / "mlflow.db"]  # not per job folder
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("adder")  # one experiment per task
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "iterations=200,log_every=50,task=adder"
    assert run.data.params["hidden_size"] == "16" and run.data.params["optimizer.name"] == "sgd"
    assert "mlflow.parentRunId" not in run.data.tags
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert steps == [50, 100, 150, 200]
    assert 0.0 <= run.data.metrics["final/val_exact_acc"] <= 1.0


@pytest.mark.slow
def test_failed_single_run_exits_1_with_one_reason(tmp_path, kafka_path):
    args = ["learning_rate=1e6", "iterations=60", "hidden_size=16", "experiment_name=div"]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "FAILED" in result.stderr.splitlines()[-1]
    assert "DivergenceError: loss diverged" in result.stderr.splitlines()[-1]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("div").experiment_id])
    assert run.info.status == "FAILED" and "diverged" in run.data.tags["error"]


def test_command_names_the_package_configs_not_the_cwd(tmp_path):
    """A conf/ folder in the launch directory does not hijack the command."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text("hidden_size: 3\n")
    result = run_cli(["--cfg", "job"], cwd=tmp_path)
    assert result.returncode == 0 and "hidden_size: 100" in result.stdout
