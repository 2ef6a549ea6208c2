"""What the fault tests share: seeded timings, runs started and watched, exactly-once checks."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from rnnlab.config import Config
from rnnlab.training.loop import train
from rnnlab.training.tracker import MemoryTracker

SEED = 20261201


COMPARED = ("train/loss", "train/smooth_loss", "train/grad_norm", "val/loss", "val/bpc")


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}


def start(args: list[str], cwd: Path, log: Path, module: str = "rnnlab.run") -> subprocess.Popen:
    """``python -m module args`` in its own session, its signal handlers its own."""
    with open(log, "a") as f:
        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=cwd,
            env=env(),
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def char_args(kafka: Path, iterations: int, **extra) -> list[str]:
    args = {
        "data.path": str(kafka), "data.val_fraction": 0.01, "hidden_size": 16,
        "seq_length": 10, "iterations": iterations, "log_every": 10, "eval_every": 50,
        "sample_every": 50, "sample_length": 20, "checkpoint_every": 50,
        "tracking.flush_points": 40, "experiment_name": "faults",
    } | extra  # fmt: skip
    return [f"{k}={v}" for k, v in args.items()]


def reference(kafka: Path, iterations: int, every: int = 50, log_every: int = 10) -> MemoryTracker:
    """The same run as ``char_args(kafka, iterations)`` with evaluations, samples and
    checkpoints every ``every`` iterations, never interrupted, in this process."""
    cfg = Config()
    cfg.data.path, cfg.data.val_fraction = str(kafka), 0.01
    cfg.hidden_size, cfg.seq_length, cfg.iterations = 16, 10, iterations
    cfg.log_every, cfg.eval_every, cfg.sample_every, cfg.checkpoint_every = (
        log_every,
        every,
        every,
        every,
    )
    cfg.sample_length = 20
    tracker = MemoryTracker()
    train(cfg, tracker, show_progress=False)
    return tracker


def ro(db: Path):
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True)


def count_checkpoints(cwd: Path) -> int:
    # mlruns/<run id>/artifacts/… (MLflow 3) or mlruns/<experiment>/<run id>/artifacts/… (2.x)
    return len(list((cwd / "mlruns").glob("**/artifacts/checkpoints/iter_*.npz")))


def wait_for(
    predicate, proc: subprocess.Popen | None, timeout: float, what: str, log: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        tail = log.read_text()[-3000:] if log is not None else ""
        assert proc is None or proc.poll() is None, f"the process ended before {what}: {tail}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def the_run(client: MlflowClient):
    (run,) = client.search_runs([client.get_experiment_by_name("faults").experiment_id])
    return run


def assert_exactly_once(db: Path, run_id: str) -> None:
    with ro(db) as con:
        dup = con.execute(
            "SELECT key, step, COUNT(*) FROM metrics WHERE run_uuid = ? GROUP BY key, step "
            "HAVING COUNT(*) > 1 LIMIT 5",
            (run_id,),
        ).fetchall()
    assert not dup, f"points logged more than once: {dup}"


def steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))
