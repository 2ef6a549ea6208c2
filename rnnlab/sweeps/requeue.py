"""SLURM jobs that are stopped and started again keep one MLflow run.

A SLURM job keeps its job id when it is requeued — by submitit after the preemption/time-limit
signal (``SIGUSR2``, sent ``signal_delay_s`` before the limit or by ``scancel --signal=USR2``),
by ``scontrol requeue``, or by slurmctld after a node failure — so the job id, with the sweep
folder, names the run: every run a SLURM job opens carries ``rnnlab.slurm_job_id``, and a job
that finds a run of its own already in the store continues that run from its newest checkpoint
instead of opening another (``run_or_resume``), through the one resume path ``resume=<run_id>``
takes (``job.resume_job``): the store's write-ahead order means its newest checkpoint is covered
by the points already logged, so the history has no hole, and the resumed tracker skips the
points the store holds (a job killed outright trains them again), so every step of every metric
is in the history once, with the values an uninterrupted run logs (training is deterministic
from a checkpoint). A run with no checkpoint yet trains again from the start, in the same run.
Each restart adds ``rnnlab.requeues`` (the count) and ``rnnlab.requeue_<n>`` (when, where, from
which checkpoint) to the run's tags.

Stopping for a requeue is ``rnnlab.tracking.slurm.on_interrupted``'s (the run's lifecycle calls it,
so it must not import this module).

The launcher side (``record_failed_job``): a job that ended on its node without a result — the
process was killed, the node failed — gets its child run closed FAILED with the job id, state,
node and log tail in ``error``; a job that died before opening a run gets such a child created.

Not here: training, checkpoints, the fresh run's lifecycle (``rnnlab.tracking.job``), the wait loop
(``hydra_plugins.rnnlab_slurm_launcher``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from rnnlab.config import Config
    from rnnlab.tracking.job import JobContext

from rnnlab.tracking.slurm import TAG_JOB, job_tags, restart_count, slurm_job_id, utc_now

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
    """``job.run_job``, except that a requeued SLURM job continues the run it opened before,
    through the same path as ``resume=<run_id>`` (``job.resume_job``): the newest checkpoint,
    which the store's write-ahead order guarantees its points cover, and each step once."""
    from dataclasses import replace

    from rnnlab.tracking import job, store

    job_id = slurm_job_id()
    if job_id is None or not cfg.tracking.enabled or cfg.resume:
        return job.run_job(cfg, ctx, show_progress)
    ctx.extra_tags |= job_tags()
    ctx.tracking_uri = ctx.tracking_uri or store.resolve_uri(cfg.tracking.uri, ctx.launch_dir)
    client = store.open_store(ctx.tracking_uri, create=True)
    earlier = find_job_run(client, store.experiment_name(cfg), job_id, ctx.sweep_dir)
    if earlier is None:
        return job.run_job(cfg, ctx, show_progress)

    def note(p) -> str:  # the rnnlab.requeue_<n> line: when, where, from which checkpoint
        where = (
            f"{p.checkpoint.name} (iteration {p.iteration})"
            if p.checkpoint
            else "the start (no checkpoint yet)"
        )
        return (
            f"{utc_now()}: SLURM job {job_id} restart {restart_count()} on "
            f"{os.environ.get('SLURMD_NODENAME', '?')}, from {where}, after {p.status}"
        )

    again = replace(cfg, resume=earlier.info.run_id)
    return job.resume_job(again, ctx, show_progress, requeued=note)


# --- the launcher's side: a job that died on its node --------------------------------------------


def record_failed_job(
    config: Any, job_id: str, state: str, node: str, overrides: list[str], tail: str
) -> None:
    """Close the child run of SLURM job ``job_id`` FAILED with the job id, its final state and
    the tail of its log in ``error`` (creating the child if the job died before opening it).
    ``config`` is the sweep's composed config."""

    from rnnlab.sweeps import parent_run
    from rnnlab.tracking import store
    from rnnlab.tracking.store import ensure_experiment, experiment_name

    if not parent_run.open_parent:  # tracking off: the launcher's log says it
        return
    uri, parent_id = parent_run.open_parent["uri"], parent_run.open_parent["run_id"]
    client = store.client(uri)
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
