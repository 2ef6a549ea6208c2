"""One job's MLflow run: open it, record what made it, train, and close it with the right status.

MLflow itself ends a run FAILED on any exception inside ``with start_run()`` and leaves a
SIGTERM'd run RUNNING. rnnlab's statuses: FINISHED on success; FAILED with an ``error`` tag on
an exception (divergence included); KILLED, after a final checkpoint, on SIGINT or SIGTERM.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import get_registered_sources
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Param, RunStatus
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

import rnnlab
from rnnlab import corpus
from rnnlab.config import Config, check, flatten
from rnnlab.model import log_run_model
from rnnlab.search import TrialPruned, trial_tracker
from rnnlab.tracking import MlflowTracker, Tracker
from rnnlab.train import Interrupted, train

PARENT_RUN_FILE = ".rnnlab_parent_run_id"  # the sweep's parent run id, written by rnnlab.sweep
SWEPT_KEYS_FILE = ".rnnlab_swept_keys"  # the keys a sweep varies, one a line: child run names


@dataclass
class JobContext:
    """Where and how a job was launched (filled from Hydra by ``run.py``; plain for tests)."""

    launch_dir: Path = field(default_factory=Path.cwd)
    output_dir: Path | None = None
    overrides: list[str] = field(default_factory=list)  # every override of this job
    run_name: str | None = None  # None: MLflow picks a name
    sweep_dir: Path | None = None  # set for the jobs of a multirun
    multirun: bool = False
    job_num: int | None = None  # the job's index in its sweep
    extra_tags: dict[str, str] = field(default_factory=dict)


def tracking_uri(cfg: Any, launch_dir: Path) -> str:
    """tracking.uri, else $MLFLOW_TRACKING_URI, else SQLite in the launch directory (absolute,
    so every job of a sweep shares one store whatever its working directory). ``cfg`` is a
    ``Config`` or a composed DictConfig."""
    uri = cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return f"sqlite:///{Path(launch_dir).resolve() / 'mlflow.db'}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):  # a relative file
        return f"sqlite:///{Path(launch_dir).resolve() / uri.removeprefix('sqlite:///')}"
    return uri


def experiment_name(cfg: Any) -> str:
    """``experiment_name``, else one experiment per task."""
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


def _file_source(path: Path) -> DatasetSource:
    """A local-file dataset source, named explicitly: ``mlflow.data.from_numpy(source=str)``
    asks a registry that holds two local-file sources and warns that the string is ambiguous."""
    uri = path.resolve().as_uri()
    for source in get_registered_sources():
        if source.__name__ == "LocalArtifactDatasetSource":
            return source(uri)
    return CodeDatasetSource(tags={"uri": uri})  # never in MLflow 3.x; keeps a record anyway


def dataset_of(cfg: Config) -> tuple[MetaDataset, str]:
    """(dataset, sha256) of what this run learns from: the corpus file for the char-RNN, the
    fixed evaluation sums for the adder (its training sums are drawn fresh every step)."""
    if cfg.task.name == "charrnn":
        path = corpus.resolve(cfg.data.name, cfg.data.path, cfg.data.url)
        digest = corpus.sha256_of(path)
        name = Path(cfg.data.path).stem if cfg.data.path else cfg.data.name
        return MetaDataset(_file_source(path), name=name, digest=digest[:36]), digest
    from rnnlab.tasks.adder import AdderTask

    task = AdderTask(cfg, np.random.default_rng(0))  # only its fixed evaluation pairs are used
    digest = hashlib.sha256(
        np.stack([task.eval_a, task.eval_b]).astype("<i8").tobytes()
    ).hexdigest()
    source = CodeDatasetSource(tags={"generator": "rnnlab.tasks.adder", "bits": str(task.bits)})
    name = f"adder-{task.bits}bit-eval"
    return MetaDataset(source, name=name, digest=digest[:36]), digest


def record_inputs(client: MlflowClient, run_id: str, cfg: Config) -> None:
    """Params, the resolved config and the dataset: what made this run."""
    params = [Param(k, str(v)) for k, v in flatten(cfg).items()]
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=params[i : i + 100])
    client.log_text(run_id, OmegaConf.to_yaml(OmegaConf.structured(cfg)), "config.yaml")
    dataset, digest = dataset_of(cfg)
    log_dataset(dataset, digest)
    client.set_tag(run_id, "rnnlab.dataset_sha256", digest)


def log_dataset(dataset, digest: str, attempts: int = 3) -> None:
    """``mlflow.log_input`` for the active run. MLflow creates an experiment's dataset row on
    first use without a lock, so two jobs of a parallel sweep logging the same new dataset can
    collide on its UNIQUE key; the loser retries and finds the row the winner created."""
    for attempt in range(attempts):
        try:
            mlflow.log_input(dataset, context="training", tags={"sha256": digest})
            return
        except mlflow.exceptions.MlflowException as e:
            # SQLite's message, then PostgreSQL's (a cluster's store)
            duplicate = "UNIQUE constraint failed: datasets" in str(e) or "duplicate key" in str(e)
            if not duplicate or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def run_tags(cfg: Config, ctx: JobContext) -> dict[str, str]:
    """What launched this run: code version, overrides, sweep."""
    tags = {
        "rnnlab.task": cfg.task.name,
        "rnnlab.version": rnnlab.__version__,
        "rnnlab.overrides": " ".join(ctx.overrides),
        **git_tags(ctx.launch_dir),
        **ctx.extra_tags,
    }
    if ctx.sweep_dir is not None:
        tags["rnnlab.sweep_dir"] = str(ctx.sweep_dir)
    if ctx.job_num is not None:
        tags["rnnlab.job_num"] = str(ctx.job_num)
    return tags


def run_job(
    cfg: Config, ctx: JobContext, show_progress: bool = True, resume_from: Path | None = None
) -> dict[str, float]:
    """Train ``cfg`` inside an MLflow run; returns the final metrics (with ``objective``).
    ``resume_from``: a checkpoint file to continue from (``rnnlab.resume`` sets it)."""
    if cfg.resume and resume_from is None:  # resume=<run id | checkpoint>: rnnlab.resume
        from rnnlab.resume import resume_job

        return resume_job(cfg, ctx, show_progress)
    out_dir = ctx.output_dir or Path(tempfile.mkdtemp(prefix="rnnlab-"))
    if not cfg.tracking.enabled:
        check(cfg)
        return train(cfg, None, out_dir, resume_from=resume_from, show_progress=show_progress)
    uri = tracking_uri(cfg, ctx.launch_dir)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiment_id = ensure_experiment(client, experiment_name(cfg))
    end_leaked_runs()
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=ctx.run_name,
        parent_run_id=read_parent_run_id(ctx.sweep_dir),
        tags=run_tags(cfg, ctx),
    ) as run:
        run_id = run.info.run_id
        tracker: Tracker = MlflowTracker(
            client, run_id, cfg.tracking.flush_points, cfg.tracking.flush_seconds
        )
        tracker = trial_tracker(tracker, cfg, client, run_id)  # reports to Optuna in a search

        def before_training() -> None:
            check(cfg)  # values a sweeper proposes never went through the CLI's preflight
            record_inputs(client, run_id, cfg)

        return train_in_run(
            cfg, client, run_id, tracker, out_dir, resume_from, show_progress, before_training
        )


def train_in_run(
    cfg: Config,
    client: MlflowClient,
    run_id: str,
    tracker: Tracker,
    out_dir: Path,
    resume_from: Path | None,
    show_progress: bool,
    before_training: Callable[[], None] | None = None,
) -> dict[str, float]:
    """Train inside the active MLflow run ``run_id`` and leave it with rnnlab's status: the
    caller's ``with mlflow.start_run`` ends it FINISHED, or FAILED on the re-raised exception
    (with an ``error`` tag); KILLED is set here, after the loop's final checkpoint."""
    try:
        if before_training is not None:
            before_training()
        final = train(cfg, tracker, out_dir, resume_from=resume_from, show_progress=show_progress)
        log_run_model(cfg, client, run_id, out_dir)  # rnnlab.model: a char-RNN run's pyfunc
        return final
    except TrialPruned as e:  # the search stopped this trial early: done, not failed
        return e.metrics
    except Interrupted as e:
        from rnnlab.slurm import on_interrupted

        on_interrupted(e, client, run_id)  # a SLURM job being requeued stays RUNNING and exits
        client.set_tag(run_id, "error", f"interrupted: {e}")
        mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
        raise
    except KeyboardInterrupt:  # outside the loop, or a second Ctrl-C: no checkpoint
        client.set_tag(run_id, "error", "interrupted before a final checkpoint")
        mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
        raise
    except Exception as e:
        client.set_tag(run_id, "error", f"{type(e).__name__}: {e}"[:5000])
        raise


def read_parent_run_id(sweep_dir: Path | None) -> str | None:
    """The parent run a sweep's callback opened, if this job belongs to one."""
    if sweep_dir is None:
        return None
    marker = Path(sweep_dir) / PARENT_RUN_FILE
    return marker.read_text().strip() if marker.is_file() else None


def read_swept_keys(sweep_dir: Path | None) -> list[str]:
    """The keys the sweep varies (empty outside a sweep, or when none is recorded)."""
    if sweep_dir is None:
        return []
    marker = Path(sweep_dir) / SWEPT_KEYS_FILE
    return marker.read_text().split() if marker.is_file() else []
