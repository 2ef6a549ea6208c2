"""Ctrl-C and SIGTERM to a running ``python -m rnnlab.run``: the loop finishes its iteration,
writes a final checkpoint, and the run ends KILLED (MLflow alone would say FAILED for Ctrl-C and
leave a SIGTERM'd run RUNNING)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

# Long enough never to end by itself; metrics reach the store from the first log point.
LONG_RUN = ["iterations=1000000", "hidden_size=16", "log_every=10", "eval_every=100000",
            "sample_every=100000", "checkpoint_every=100000", "tracking.flush_points=4",
            "experiment_name=signals"]  # fmt: skip


def wait_for_metric(db: Path, proc: subprocess.Popen, timeout: float = 120.0) -> str:
    """The id of the run whose first train/loss point reached the store. Read-only SQL: an
    MlflowClient would create and migrate the file itself, racing the run that is creating it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it was signalled"
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
                row = con.execute(
                    "SELECT run_uuid FROM metrics WHERE key = 'train/loss' LIMIT 1"
                ).fetchone()
            if row:
                return row[0]
        except sqlite3.Error:  # no file or no tables yet
            pass
        time.sleep(0.3)
    raise AssertionError("no metric appeared")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_signal_ends_the_run_killed_with_a_final_checkpoint(sig, tmp_path, kafka_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with open(tmp_path / "stderr.txt", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "rnnlab.run", *LONG_RUN], cwd=tmp_path,
                                env=env, stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip
        try:
            run_id = wait_for_metric(tmp_path / "mlflow.db", proc)
            proc.send_signal(sig)
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stderr = (tmp_path / "stderr.txt").read_text()
    assert code == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.splitlines()[-1] == "rnnlab: interrupted"
    assert "KILLED" in stderr.splitlines()[-2]
    client = MlflowClient(store)
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["error"].startswith(f"interrupted: {sig.name} at iteration ")
    stopped_at = int(run.data.tags["error"].rsplit(" ", 1)[1])
    ckpts = [a.path for a in client.list_artifacts(run_id, "checkpoints")]
    assert ckpts == [f"checkpoints/iter_{stopped_at:07d}.npz"]
    # the metrics logged before the signal were flushed, up to the last whole log point
    steps = [m.step for m in client.get_metric_history(run_id, "train/loss")]
    assert steps == list(range(10, stopped_at // 10 * 10 + 1, 10))
    local = Path(run.info.artifact_uri.removeprefix("file://")) / ckpts[0]
    assert local.stat().st_size > 0


@pytest.mark.slow
def test_sigterm_to_a_sweep_closes_the_child_and_the_parent_killed(tmp_path, kafka_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with open(tmp_path / "stderr.txt", "w") as err:
        args = [sys.executable, "-m", "rnnlab.run", "-m", "seed=0,1", *LONG_RUN]
        proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_for_metric(tmp_path / "mlflow.db", proc)
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert code == 130, (tmp_path / "stderr.txt").read_text()[-3000:]
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("signals").experiment_id])
    by_kind = {r.data.tags.get("rnnlab.kind", "child"): r for r in runs}
    assert len(runs) == 2  # the sweep stopped: seed=1 never started
    parent, child = by_kind["sweep"], by_kind["child"]
    assert child.info.run_name == "seed=0" and child.info.status == "KILLED"
    assert [a.path for a in client.list_artifacts(child.info.run_id, "checkpoints")]
    assert parent.info.status == "KILLED"
    assert parent.data.tags["rnnlab.children_killed"] == "1"
