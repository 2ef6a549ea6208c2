"""A store that refuses writes for a while, and a disk that fills while the model is logged.

- The SQLite store made immutable (``chattr +i``) for 20 s at a seeded moment of a run: the run
  goes on, the terminal gets one line for the outage (when it began and ended, the failed
  calls, the points that waited), MLflow's and SQLAlchemy's tracebacks go to
  ``<job folder>/rnnlab_store.log``, and the store ends with every point once and the run
  FINISHED. Before: up to 22,757 lines and 700 tracebacks on the terminal.
- The store's disk full (a 2.5 MB tmpfs) while the run logs its model: the run ends FINISHED,
  exit 0, with one line saying the model could not be logged and why; the reason goes through
  the journalled tracker (tag ``rnnlab.model_error``), and what the full disk refused waits in
  the journal with one line naming ``rnnlab.sync``. Before: FAILED, exit 1, 1,437 lines with 39
  tracebacks, and the store left saying RUNNING.

Both need root (``chattr``, ``mount``) and skip, naming why, without it.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.faults import assert_exactly_once, steps
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

RNG = random.Random(20261207)


def needs_root(*programs: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (chattr +i, mount -t tmpfs)")
    for program in programs:
        if shutil.which(program) is None:
            pytest.skip(f"needs {program}")


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    out = open(cwd / "stderr.txt", "w")
    return subprocess.Popen([sys.executable, "-m", "rnnlab.run", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=out)  # fmt: skip


def points(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return con.execute("SELECT COUNT(*) FROM metrics").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_a_store_refusing_writes_for_20_s_is_one_line_and_loses_nothing(tmp_path, kafka_path):
    needs_root("chattr")
    probe = tmp_path / "probe"
    probe.touch()
    if subprocess.run(["chattr", "+i", str(probe)], capture_output=True).returncode != 0:
        pytest.skip("this file system has no immutable flag")
    subprocess.run(["chattr", "-i", str(probe)], check=True)
    args = [f"data.path={kafka_path}", "data.val_fraction=0.01", "hidden_size=16",
            "iterations=60000", "log_every=10", "eval_every=5000", "sample_every=5000",
            "checkpoint_every=5000", "tracking.flush_points=50", "tracking.flush_seconds=1",
            "experiment_name=refusals"]  # fmt: skip
    proc = start(args, tmp_path)
    db = tmp_path / "mlflow.db"
    try:
        deadline = time.monotonic() + 300
        while points(db) < 100:
            assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.2)
        wait = RNG.uniform(0.5, 3.0)
        print(f"store immutable for 20 s from {wait:.2f} s after the first 100 points")
        time.sleep(wait)
        subprocess.run(["chattr", "+i", str(db)], check=True)
        try:
            time.sleep(20)
        finally:
            subprocess.run(["chattr", "-i", str(db)], check=True)
        assert proc.wait(timeout=900) == 0, (tmp_path / "stderr.txt").read_text()[-3000:]
    finally:
        subprocess.run(["chattr", "-i", str(db)], capture_output=True)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = (tmp_path / "stderr.txt").read_text()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    print("\n".join(lines))
    assert "Traceback" not in err
    outage = [ln for ln in lines if ln.startswith("rnnlab: the tracking store refused writes")]
    assert len(outage) == 1, lines
    waited = int(outage[0].split("); ")[1].split()[0])
    assert waited > 0 and "points waited and are in the store now; details in " in outage[0]
    ours = [ln for ln in lines if not ln.startswith("charrnn iter ")]  # not the progress lines
    assert len(ours) <= 4, ours  # the outage, the closing line, where to look
    log = Path(outage[0].rsplit("details in ", 1)[1])
    assert "Traceback" in log.read_text()  # the detail is kept, in the job folder
    client = MlflowClient(f"sqlite:///{db}")
    (run,) = client.search_runs([client.get_experiment_by_name("refusals").experiment_id])
    assert run.info.status == "FINISHED"
    assert_exactly_once(db, run.info.run_id)
    assert steps(client, run.info.run_id, "train/loss") == list(range(10, 60001, 10))


@pytest.fixture
def small_disk(tmp_path):
    """``<tmp_path>/store`` on a 2.5 MB tmpfs: room for a short run's store and checkpoints, not
    for its model as well (whose files include rnnlab's code)."""
    needs_root("mount", "umount")
    target = tmp_path / "store"
    target.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2560k", "tmpfs", str(target)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def test_a_full_disk_while_logging_the_model_never_fails_the_run(small_disk, tmp_path,
                                                                  kafka_path):  # fmt: skip
    """The store and its artifacts on one small disk that the model's files fill: the run
    ends FINISHED, exit 0; what the full disk refused (the model's tags, the status) goes
    through the tracker to the journal in the job folder, with one line saying how to send it;
    freed, ``rnnlab.sync`` completes the record."""
    uri = f"sqlite:///{small_disk / 'mlflow.db'}"
    args = [f"data.path={kafka_path}", "data.val_fraction=0.01", "hidden_size=16",
            "iterations=200", "eval_every=100", "checkpoint_every=100", f"tracking.uri={uri}",
            "experiment_name=fulldisk"]  # fmt: skip
    proc = start(args, tmp_path)
    code = proc.wait(timeout=600)
    err = (tmp_path / "stderr.txt").read_text()
    print(err)
    assert code == 0, err[-3000:]
    assert "Traceback" not in err and len(err.splitlines()) <= 8
    refused = [ln for ln in err.splitlines() if ln.startswith("rnnlab: could not log the model")]
    full = ("No space left on device", "database or disk is full")
    assert len(refused) == 1 and any(f in refused[0] for f in full), refused
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("fulldisk").experiment_id])
    waiting = [ln for ln in err.splitlines() if "python -m rnnlab.sync" in ln]
    print(f"status {run.info.status}; {len(waiting)} line(s) naming rnnlab.sync")
    if run.info.status != "FINISHED":  # the store refused the closing writes: they wait
        assert run.info.status == "RUNNING" and len(waiting) == 1
        subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
        job_dir = waiting[0].rsplit(" ", 1)[1]
        done = subprocess.run([sys.executable, "-m", "rnnlab.sync", job_dir], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        run = client.get_run(run.info.run_id)
    assert run.info.status == "FINISHED"
    assert any(f in run.data.tags["rnnlab.model_error"] for f in full)
    assert "rnnlab.model_uri" not in run.data.tags
    assert_exactly_once(small_disk / "mlflow.db", run.info.run_id)
