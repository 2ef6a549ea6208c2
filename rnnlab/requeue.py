"""SLURM jobs that are stopped and started again keep one MLflow run.

A SLURM job keeps its job id when it is requeued — by submitit after the preemption/time-limit
signal (``SIGUSR2``, sent ``signal_delay_s`` before the limit or by ``scancel --signal=USR2``),
by ``scontrol requeue``, or by slurmctld after a node failure — so the job id, with the sweep
folder, names the run: every run a SLURM job opens carries ``rnnlab.slurm_job_id``, and a job
that finds a run of its own already in the store continues that run from its newest checkpoint
instead of opening another (``run_or_resume``) — its newest checkpoint the store's points cover,
so the history has no hole. Points the run logged past that checkpoint (a job killed outright
trains them again) are not logged twice: every step of every metric is in
the history once, with the values an uninterrupted run logs (training is deterministic from a
checkpoint). Each restart adds ``rnnlab.requeues`` (the count) and ``rnnlab.requeue_<n>`` (when,
where, from which checkpoint) to the run's tags.

Stopping for a requeue is ``rnnlab.slurm.on_interrupted``'s (the run's lifecycle calls it, so it
must not import this module).

The launcher side (``record_failed_job``): a job that ended on its node without a result — the
process was killed, the node failed — gets its child run closed FAILED with the job id, state,
node and log tail in ``error``; a job that died before opening a run gets such a child created.

Not here: training, checkpoints, the fresh run's lifecycle (``rnnlab.job``), the wait loop
(``hydra_plugins.rnnlab_slurm_launcher``).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from rnnlab.config import Config
    from rnnlab.job import JobContext

from rnnlab.slurm import TAG_JOB, job_tags, restart_count, slurm_job_id, utc_now

TAG_REQUEUES = "rnnlab.requeues"


# --- the job's side: finding and continuing its run ----------------------------------------------


def find_job_run(client: MlflowClient, experiment: str, job_id: str, sweep_dir: Path | None):
    """The run this SLURM job opened before it was requeued, or None."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    filters = [f"tags.`{TAG_JOB}` = '{job_id}'"]
    if sweep_dir is not None:  # job ids repeat across clusters (and local cluster restarts)
        filters.append(f"tags.`rnnlab.sweep_dir` = '{sweep_dir}'")
    runs = client.search_runs([exp.experiment_id], " and ".join(filters), max_results=2)
    return runs[0] if runs else None


def run_or_resume(cfg: Config, ctx: JobContext, show_progress: bool = True) -> dict[str, float]:
    """``job.run_job``, except that a requeued SLURM job continues the run it opened before."""
    from mlflow.tracking import MlflowClient

    from rnnlab.job import run_job
    from rnnlab.store import experiment_name, tracking_uri

    job = slurm_job_id()
    if job is None or not cfg.tracking.enabled or cfg.resume:
        return run_job(cfg, ctx, show_progress)
    ctx.extra_tags |= job_tags()
    uri = tracking_uri(cfg, ctx.launch_dir)
    client = MlflowClient(uri)
    earlier = find_job_run(client, experiment_name(cfg), job, ctx.sweep_dir)
    if earlier is None:
        return run_job(cfg, ctx, show_progress)
    return continue_job_run(cfg, ctx, client, uri, earlier, show_progress)


def logged_steps(client: MlflowClient, run) -> dict[str, int]:
    """{metric key: the last step it was logged at} for a run."""
    return {
        key: max(m.step for m in client.get_metric_history(run.info.run_id, key))
        for key in run.data.metrics
    }


class SkipLogged:
    """A tracker that drops metric points at steps the run already holds: a run continued from
    a checkpoint older than its last logged point trains those steps again (with the same
    values) and must not log them twice."""

    def __init__(self, tracker, last_step: dict[str, int]):
        self.tracker, self.last_step = tracker, last_step

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        fresh = {k: v for k, v in metrics.items() if step > self.last_step.get(k, -1)}
        if fresh:
            self.tracker.log_metrics(fresh, step)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.tracker.log_text(text, artifact_file)

    def log_artifact(self, path: Path, artifact_path: str) -> None:
        self.tracker.log_artifact(path, artifact_path)

    def flush(self) -> None:
        self.tracker.flush()


def covered_checkpoint(
    client: MlflowClient, run_id: str, last_step: int, dest: Path
) -> Path | None:
    """A local copy of the run's newest checkpoint at or before ``last_step``, the last step the
    store holds every metric's points for (None: start over). The tracker buffers points for up to
    ``flush_seconds``, so a process killed outright may have uploaded checkpoints past its last
    flushed points; continuing from one of those would leave a hole in the history."""
    from rnnlab.store import CHECKPOINT_DIR, CHECKPOINT_NAME, quiet_artifact_transfers

    names = [Path(a.path).name for a in client.list_artifacts(run_id, CHECKPOINT_DIR)]
    steps = {int(m.group(1)): n for n in names if (m := CHECKPOINT_NAME.match(n))}
    usable = [i for i in steps if i <= last_step]
    if not usable:
        return None
    dest.mkdir(parents=True, exist_ok=True)
    with quiet_artifact_transfers():
        path = client.download_artifacts(
            run_id, f"{CHECKPOINT_DIR}/{steps[max(usable)]}", str(dest)
        )
    return Path(path)


def continue_job_run(
    cfg: Config, ctx: JobContext, client: MlflowClient, uri: str, run, show_progress: bool
) -> dict[str, float]:
    """Reopen ``run`` (RUNNING again) and train it on from its newest checkpoint, or from the
    start if it has none; statuses as ``job.run_job``."""
    import mlflow

    from rnnlab import checkpoint
    from rnnlab.job import end_leaked_runs, train_in_run
    from rnnlab.search import trial_tracker
    from rnnlab.tracking import MlflowTracker

    run_id = run.info.run_id
    out_dir = ctx.output_dir or Path(tempfile.mkdtemp(prefix="rnnlab-"))
    last = logged_steps(client, run)
    # min: one batch of points may hold a step's train/* but not yet its val/* points
    ckpt = covered_checkpoint(client, run_id, min(last.values(), default=0), out_dir)
    start = int(checkpoint.load(ckpt)[1]["state"]["iteration"]) if ckpt else 0
    n = int(run.data.tags.get(TAG_REQUEUES, "0")) + 1
    where = f"{ckpt.name} (iteration {start})" if ckpt else "the start (no checkpoint yet)"
    note = (
        f"{utc_now()}: SLURM job {slurm_job_id()} restart {restart_count()} on "
        f"{os.environ.get('SLURMD_NODENAME', '?')}, from {where}, after {run.info.status}"
    )
    print(f"rnnlab: requeued: continuing run {run_id} {note}", file=sys.stderr)
    mlflow.set_tracking_uri(uri)
    end_leaked_runs()
    tags = {TAG_REQUEUES: str(n), f"rnnlab.requeue_{n}": note}
    with mlflow.start_run(run_id=run_id, tags=tags):
        if "error" in run.data.tags:  # it described the stop this restart recovers from
            client.delete_tag(run_id, "error")
        tracker = MlflowTracker(
            client, run_id, cfg.tracking.flush_points, cfg.tracking.flush_seconds
        )
        tracker = trial_tracker(SkipLogged(tracker, last), cfg, client, run_id)
        return train_in_run(cfg, client, run_id, tracker, out_dir, ckpt, show_progress)


# --- the launcher's side: a job that died on its node --------------------------------------------


def record_failed_job(
    config: Any, job_id: str, state: str, node: str, overrides: list[str], tail: str
) -> None:
    """Close the child run of SLURM job ``job_id`` FAILED with the job id, its final state and
    the tail of its log in ``error`` (creating the child if the job died before opening it).
    ``config`` is the sweep's composed config."""
    from mlflow.tracking import MlflowClient

    from rnnlab import sweep
    from rnnlab.store import ensure_experiment, experiment_name

    if not sweep.open_parent:  # tracking off: the launcher's log says it
        return
    uri, parent_id = sweep.open_parent["uri"], sweep.open_parent["run_id"]
    client = MlflowClient(uri)
    error = f"SLURM job {job_id} ended {state} on {node or '?'} without a result. Log tail:\n{tail}"
    run = find_job_run(client, experiment_name(config), job_id, None)
    if run is None or run.data.tags.get("mlflow.parentRunId") != parent_id:
        swept = client.get_run(parent_id).data.tags.get("rnnlab.swept_keys", "").split()
        name = ",".join(o for o in overrides if o.split("=", 1)[0].lstrip("+~") in swept) or None
        run = client.create_run(
            ensure_experiment(client, experiment_name(config)),
            run_name=name,
            tags={
                "mlflow.parentRunId": parent_id,
                "rnnlab.task": str(config.task.name),
                "rnnlab.overrides": " ".join(overrides),
                TAG_JOB: job_id,
            },
        )
    client.set_tag(run.info.run_id, "error", error[-5000:])
    client.set_terminated(run.info.run_id, "FAILED")
