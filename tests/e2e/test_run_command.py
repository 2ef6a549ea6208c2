"""``python -m rnnlab.run`` as a user types it, in temp folders: bad values cost one line and
exit code 2 before any run exists; a good command records one run in ./mlflow.db."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.processes import run_cli
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


# Runs each case as ``python -m rnnlab.run <args>`` does, in a process forked from one that has
# already imported what rnnlab.run imports (Hydra, OmegaConf, rnnlab's config and checks): 25
# cold interpreter starts cost ~0.5 s of CPU each, the quick loop's largest item. The child
# executes rnnlab/run.py as __main__ in its own folder with its own stdout/stderr files, and
# its exit status is the process's; one case also runs cold and must give the same bytes.
FORKED_CLI = r"""
import json, os, runpy, sys, traceback
import hydra, omegaconf, rnnlab.config, rnnlab.quiet
import rnnlab.sweeps.launching, rnnlab.sweeps.preflight, rnnlab.tracking.ui
cases, out = json.loads(sys.argv[1]), sys.argv[2]
for i, (cwd, args) in enumerate(cases):
    pid = os.fork()
    if pid == 0:
        os.chdir(cwd)
        for fd, name in ((1, "stdout"), (2, "stderr")):
            os.dup2(os.open(f"{out}/{i}.{name}", os.O_WRONLY | os.O_CREAT, 0o644), fd)
        sys.argv = ["rnnlab.run", *args]
        code = 0
        try:
            runpy.run_module("rnnlab.run", run_name="__main__", alter_sys=True)
        except SystemExit as e:  # what the interpreter does with it at exit
            code = e.code if isinstance(e.code, int) or e.code is None else 1
            if not isinstance(e.code, int) and e.code is not None:
                print(e.code, file=sys.stderr)
        except BaseException:  # an uncaught exception: the traceback, status 1
            traceback.print_exc()
            code = 1
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(code or 0)
    _, status = os.waitpid(pid, 0)
    with open(f"{out}/{i}.code", "w") as f:
        f.write(str(os.waitstatus_to_exitcode(status)))
"""


@pytest.fixture(scope="module")
def bad_results(tmp_path_factory, kafka_path):
    """Every bad command line, each in its own empty folder (see FORKED_CLI)."""
    root = tmp_path_factory.mktemp("bad")
    files = {"missing": root / "nope.txt", "latin1": root / "latin1.txt", "empty": root / "e.txt"}
    files["latin1"].write_bytes("Käfer".encode("latin-1"))
    files["empty"].write_bytes(b"")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    cases = []
    for i, arg in enumerate(BAD_VALUES):
        (root / f"case{i}").mkdir()
        args = arg.format(**files).split()
        cases.append((str(root / f"case{i}"), ["-m", *args] if "," in arg else args))
    out = root / "out"
    out.mkdir()
    p = subprocess.run([sys.executable, "-c", FORKED_CLI, json.dumps(cases), str(out)],
                       env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert p.returncode == 0 and p.stdout == p.stderr == "", p.stderr[-3000:]
    results = {}
    for i, arg in enumerate(BAD_VALUES):
        code = int((out / f"{i}.code").read_text())
        stdout, stderr = ((out / f"{i}.{n}").read_text() for n in ("stdout", "stderr"))
        results[arg] = (code, stdout, stderr, Path(cases[i][0]))
    (root / "cold").mkdir()
    cold = subprocess.run([sys.executable, "-m", "rnnlab.run", "hidden_size=0"], cwd=root / "cold",
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert (cold.returncode, cold.stdout, cold.stderr) == results["hidden_size=0"][:3]
    assert list((root / "cold").iterdir()) == []
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
