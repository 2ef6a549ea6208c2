"""A sweep whose main process is killed outright (SIGKILL, an OOM kill) at seeded moments.

- No orphans: the joblib workers notice their launcher is gone and stop by themselves, each
  with its stop checkpoint, KILLED; no worker is alive 10 s after the kill.
- A dead parent is recognisable: the next ``rnnlab.report`` says "RUNNING (dead: its process
  is gone)" and how many jobs never started; the next sweep into the experiment, or
  ``python -m rnnlab.sync <sweep folder>``, closes it FAILED with them counted, and nothing is
  left RUNNING.

Before: the workers trained on (parent PID 1) for their whole run, the parent stayed RUNNING
with no host or pid to tell it was dead, and the jobs that never started were recorded nowhere.
Kill moments come from a seeded generator and are printed.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.processes import TEST_TAG, run_cli, tagged_pids
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

RNG = random.Random(20261207)
LONG = ["iterations=1000000", "hidden_size=16", "log_every=10", "eval_every=100000",
        "sample_every=100000", "checkpoint_every=100000", "tracking.flush_points=4",
        "experiment_name=dead"]  # fmt: skip


def runs_with_metrics(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return len(con.execute("SELECT DISTINCT run_uuid FROM metrics").fetchall())
    except sqlite3.Error:
        return 0


def start_sweep(cwd: Path, args: list[str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    with open(cwd / "sweep.log", "w") as log:
        return subprocess.Popen([sys.executable, "-m", "rnnlab.run", "-m", *args], cwd=cwd,
                                env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip


def kill_the_launcher_when(cwd: Path, proc: subprocess.Popen, logged: int, wait: float) -> None:
    deadline = time.monotonic() + 300
    while runs_with_metrics(cwd / "mlflow.db") < logged:
        assert proc.poll() is None, (cwd / "sweep.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "the sweep never got going"
        time.sleep(0.2)
    time.sleep(wait)
    os.kill(proc.pid, signal.SIGKILL)  # the main process only: nothing can be forwarded
    proc.wait()


def alive_workers() -> list[int]:
    """This test's processes still alive (all that is left once the launcher is dead)."""
    alive = []
    for pid in tagged_pids(os.environ[TEST_TAG]):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def the_parent(client: MlflowClient):
    exp = client.get_experiment_by_name("dead")
    (parent,) = client.search_runs([exp.experiment_id], "tags.`rnnlab.kind` = 'sweep'")
    return parent


@pytest.mark.parametrize("then", ["next sweep", "rnnlab.sync"])
def test_sigkill_of_a_joblib_sweep_leaves_no_worker_and_a_parent_named_dead(then, tmp_path,
                                                                           kafka_path):  # fmt: skip
    wait = RNG.uniform(0.0, 2.0)
    print(f"{then}: SIGKILL to the launcher {wait:.3f} s after both workers logged")
    proc = start_sweep(tmp_path, ["seed=0,1,2,3", "hydra/launcher=joblib",
                                  "hydra.launcher.n_jobs=2", *LONG])  # fmt: skip
    kill_the_launcher_when(tmp_path, proc, 2, wait)
    killed_at = time.monotonic()
    while alive_workers() and time.monotonic() - killed_at < 10:
        time.sleep(0.2)
    left = alive_workers()
    print(f"workers alive {time.monotonic() - killed_at:.1f} s after the kill: {left}")
    assert not left, (tmp_path / "sweep.log").read_text()[-3000:]

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = the_parent(client)
    assert parent.info.status == "RUNNING"
    assert parent.data.tags["rnnlab.jobs_planned"] == "4"
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(children) == 2  # seeds 2 and 3 never started
    for child in children:  # each worker stopped itself with its checkpoint
        assert child.info.status == "KILLED", child.data.tags.get("error")
        stopped_at = int(child.data.tags["error"].rsplit(" ", 1)[1])
        saved = [a.path for a in client.list_artifacts(child.info.run_id, "checkpoints")]
        assert saved == [f"checkpoints/iter_{stopped_at:07d}.npz"]

    report = run_cli(["log=false", "out=rep"], tmp_path, module="rnnlab.report")
    assert report.returncode == 0, report.stderr[-2000:]
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "RUNNING (dead: its process is gone); 2 of 4 jobs never started" in text

    if then == "next sweep":
        done = run_cli(["-m", "seed=0", "iterations=20", "hidden_size=8",
                        "experiment_name=dead"], tmp_path)  # fmt: skip
    else:
        sweep_dir = Path(parent.data.tags["rnnlab.sweep_dir"])
        done = run_cli([str(sweep_dir)], tmp_path, module="rnnlab.sync")
    assert done.returncode == 0, done.stderr[-3000:]
    closing = [ln for ln in (done.stderr + done.stdout).splitlines()
               if ln.startswith("rnnlab: closed sweep")]  # fmt: skip
    print(closing)
    assert len(closing) == 1 and "2 of 4 jobs never started" in closing[0], done.stderr[-2000:]
    parent = client.get_run(parent.info.run_id)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["rnnlab.jobs_never_started"] == "2"
    assert parent.data.tags["rnnlab.children_killed"] == "2"
    exp = client.get_experiment_by_name("dead")
    assert not client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")


def test_sigkill_of_a_sequential_sweep_leaves_nothing_running_after_the_next_sweep(
    tmp_path, kafka_path
):
    """The basic launcher runs its jobs in the main process: killed, the running child and the
    parent are both left RUNNING by a dead process; the next sweep closes both."""
    wait = RNG.uniform(0.0, 1.0)
    print(f"SIGKILL to a sequential sweep {wait:.3f} s after its first job logged")
    proc = start_sweep(tmp_path, ["seed=0,1,2", *LONG])
    kill_the_launcher_when(tmp_path, proc, 1, wait)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = the_parent(client)
    exp = parent.info.experiment_id
    assert len(client.search_runs([exp], "attributes.status = 'RUNNING'")) == 2

    report = run_cli(["log=false", "out=rep"], tmp_path, module="rnnlab.report")
    assert report.returncode == 0, report.stderr[-2000:]
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "RUNNING (dead: its process is gone); 2 of 3 jobs never started" in text

    done = run_cli(["-m", "seed=0", "iterations=20", "hidden_size=8", "experiment_name=dead"],
                   tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("rnnlab: closed ")]
    print(lines)
    assert len(lines) == 2 and "2 of 3 jobs never started" in lines[1], done.stderr[-2000:]
    assert not client.search_runs([exp], "attributes.status = 'RUNNING'")
    parent = client.get_run(parent.info.run_id)
    assert parent.info.status == "FAILED" and parent.data.tags["rnnlab.children_failed"] == "1"


def test_a_parent_that_recorded_no_host_is_closed_only_with_dead_true(tmp_path, kafka_path):
    """A parent from before parents recorded where they run (no host, no pid) cannot be checked:
    ``rnnlab.sync`` leaves it RUNNING and names ``dead=true``, which closes it FAILED; with
    ``dead=true``, a parent whose recorded process is alive on this host is refused in one
    line."""
    from rnnlab.tracking import store

    done = run_cli(["-m", "seed=0", "iterations=20", "hidden_size=8", "experiment_name=dead"],
                   tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = the_parent(client)
    run_id, sweep_dir = parent.info.run_id, parent.data.tags["rnnlab.sweep_dir"]
    client.update_run(run_id, status="RUNNING")  # what a sweep killed outright leaves
    for key in ("rnnlab.host", "rnnlab.pid", "rnnlab.pid_start", "rnnlab.started_at"):
        client.delete_tag(run_id, key)  # ... and a parent from before it recorded them

    done = run_cli([sweep_dir], tmp_path, module="rnnlab.sync")
    print(done.stdout, done.stderr)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{sweep_dir} dead=true" in done.stdout and "recorded no host or pid" in done.stdout
    assert client.get_run(run_id).info.status == "RUNNING"

    for key, value in store.where_tags().items():  # this test's own, live process
        client.set_tag(run_id, key, value)
    done = run_cli([sweep_dir, "dead=true"], tmp_path, module="rnnlab.sync")
    print(done.stderr)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"process {os.getpid()}" in done.stderr and "still alive: stop it first" in done.stderr
    assert client.get_run(run_id).info.status == "RUNNING"

    for key in ("rnnlab.host", "rnnlab.pid", "rnnlab.pid_start", "rnnlab.started_at"):
        client.delete_tag(run_id, key)
    done = run_cli([sweep_dir, "dead=true"], tmp_path, module="rnnlab.sync")
    print(done.stdout)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "rnnlab: closed sweep" in done.stdout and "found by rnnlab.sync dead=true" in done.stdout
    parent = client.get_run(run_id)
    assert parent.info.status == "FAILED" and parent.data.tags["rnnlab.children_finished"] == "1"
    assert "recorded no host or pid" in parent.data.tags["error"]
    exp = client.get_experiment_by_name("dead")
    assert not client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")
