"""One job's MLflow run: open it, record what made it, train, and close it with the right status.

MLflow itself ends a run FAILED on any exception inside ``with start_run()`` and leaves a
SIGTERM'd run RUNNING. rnnlab's statuses: FINISHED on success; FAILED with an ``error`` tag on
an exception (divergence included); KILLED, after a final checkpoint, on SIGINT or SIGTERM.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
from mlflow.entities import Param, RunStatus
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

import rnnlab
from rnnlab import corpus
from rnnlab.config import Config, flatten
from rnnlab.tracking import MlflowTracker, Tracker
from rnnlab.train import Interrupted, train

PARENT_RUN_FILE = ".rnnlab_parent_run_id"


@dataclass
class JobContext:
    """Where and how a job was launched (filled from Hydra by ``run.py``; plain for tests)."""

    launch_dir: Path = field(default_factory=Path.cwd)
    output_dir: Path | None = None
    overrides: list[str] = field(default_factory=list)
    run_name: str | None = None
    sweep_dir: Path | None = None  # set for the jobs of a multirun
    multirun: bool = False


def tracking_uri(cfg: Config, launch_dir: Path) -> str:
    """tracking.uri, else $MLFLOW_TRACKING_URI, else SQLite in the launch directory (absolute,
    so every job of a sweep shares one store whatever its working directory)."""
    if cfg.tracking.uri:
        return cfg.tracking.uri
    if env := os.environ.get("MLFLOW_TRACKING_URI"):
        return env
    return f"sqlite:///{Path(launch_dir).resolve() / 'mlflow.db'}"


def experiment_name(cfg: Config) -> str:
    return cfg.experiment_name or cfg.task.name


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """The id of experiment ``name``, created if missing (tolerating a parallel creator)."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name)
    except mlflow.exceptions.MlflowException:
        return client.get_experiment_by_name(name).experiment_id


def git_tags(cwd: Path) -> dict[str, str]:
    """Commit and dirty flag of the rnnlab checkout, when it is one."""
    repo = Path(rnnlab.__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"mlflow.source.git.commit": commit, "rnnlab.git_dirty": str(dirty).lower()}


def end_leaked_runs() -> None:
    """A joblib worker process may still hold a run from an earlier job that died: close it."""
    while (run := mlflow.active_run()) is not None:
        mlflow.end_run(RunStatus.to_string(RunStatus.FAILED))
        print(f"rnnlab: closed leaked run {run.info.run_id}", file=sys.stderr)


def record_inputs(client: MlflowClient, run_id: str, cfg: Config, ctx: JobContext) -> None:
    """Params, the resolved config and the dataset: what made this run."""
    params = [Param(k, str(v)) for k, v in flatten(cfg).items()]
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=params[i : i + 100])
    client.log_text(run_id, OmegaConf.to_yaml(OmegaConf.structured(cfg)), "config.yaml")
    if cfg.task.name == "charrnn":
        path = corpus.resolve(cfg.data.name, cfg.data.path, cfg.data.url)
        digest = corpus.sha256_of(path)
        name = Path(cfg.data.path).stem if cfg.data.path else cfg.data.name
        dataset = mlflow.data.from_numpy(
            np.zeros(1), source=str(path.resolve()), name=name, digest=digest[:36]
        )
        mlflow.log_input(dataset, context="training", tags={"sha256": digest})
        client.set_tag(run_id, "rnnlab.dataset_sha256", digest)


def run_job(cfg: Config, ctx: JobContext, show_progress: bool = True) -> dict[str, float]:
    """Train ``cfg`` inside an MLflow run; returns the final metrics (with ``objective``)."""
    uri = tracking_uri(cfg, ctx.launch_dir)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiment_id = ensure_experiment(client, experiment_name(cfg))
    end_leaked_runs()
    parent_id = read_parent_run_id(ctx.sweep_dir)
    tags = {
        "rnnlab.task": cfg.task.name,
        "rnnlab.version": rnnlab.__version__,
        "rnnlab.overrides": " ".join(ctx.overrides),
        **git_tags(ctx.launch_dir),
    }
    if ctx.sweep_dir is not None:
        tags["rnnlab.sweep_dir"] = str(ctx.sweep_dir)
    out_dir = ctx.output_dir or Path(tempfile.mkdtemp(prefix="rnnlab-"))
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=ctx.run_name,
        parent_run_id=parent_id,
        tags=tags,
    ) as run:
        run_id = run.info.run_id
        tracker: Tracker = MlflowTracker(
            client, run_id, cfg.tracking.flush_points, cfg.tracking.flush_seconds
        )
        try:
            record_inputs(client, run_id, cfg, ctx)
            return train(cfg, tracker, out_dir, show_progress=show_progress)
        except Interrupted as e:
            client.set_tag(run_id, "error", f"interrupted: {e}")
            mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
            raise
        except KeyboardInterrupt:  # a second Ctrl-C: no time for a checkpoint
            client.set_tag(run_id, "error", "interrupted twice; no final checkpoint")
            mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
            raise
        except Exception as e:
            client.set_tag(run_id, "error", f"{type(e).__name__}: {e}"[:5000])
            raise  # start_run's context ends the run FAILED


def read_parent_run_id(sweep_dir: Path | None) -> str | None:
    if sweep_dir is None:
        return None
    marker = Path(sweep_dir) / PARENT_RUN_FILE
    return marker.read_text().strip() if marker.is_file() else None
