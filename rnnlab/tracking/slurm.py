"""What a job learns from SLURM about itself, and stopping a run for a requeue.

Stopping for a requeue (``on_interrupted``, called where a stopped run would be closed KILLED):
the loop finished its iteration and wrote a stop checkpoint; the run stays RUNNING with
``rnnlab.stopped_<n>`` saying why, and the job hands over to submitit (SIGUSR2: it re-submits the
launcher's callable through ``checkpoint()`` and calls ``scontrol requeue``, at most
``max_num_timeout`` times after time limits) or just exits (SIGTERM from a requeue already under
way). A SIGTERM that is not a requeue (``scancel``) ends the run KILLED as anywhere else.
Continuing the run when the job starts again is ``rnnlab.sweeps.requeue``'s.

Imports nothing of rnnlab's at module level (``rnnlab.training.signals`` inside a function): the
run's lifecycle (``rnnlab.tracking.job``) calls it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from rnnlab.training.loop import Interrupted

TAG_JOB = "rnnlab.slurm_job_id"
TAG_NODE = "rnnlab.slurm_node"


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def slurm_job_id(env: Mapping[str, str] = os.environ) -> str | None:
    """This process's SLURM job as squeue names it (``<array job>_<task>`` for array jobs, as
    submitit does), or None outside SLURM."""
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or None


def restart_count(env: Mapping[str, str] = os.environ) -> int:
    """How many times SLURM restarted this job before this start (0 the first time)."""
    return int(env.get("SLURM_RESTART_COUNT") or 0)


def job_tags() -> dict[str, str]:
    job = slurm_job_id()
    if job is None:
        return {}
    return {TAG_JOB: job, TAG_NODE: os.environ.get("SLURMD_NODENAME", "")}


def being_requeued() -> bool:
    """Whether slurmctld has already counted one more restart of this job than it had at this
    start: a SIGTERM then comes from ``scontrol requeue`` (or preemption), not ``scancel``."""
    job = slurm_job_id()  # an array's task by name: the array's id would list every task
    if not job:
        return False
    try:
        out = subprocess.run(
            ["scontrol", "-o", "show", "job", job], capture_output=True, text=True, timeout=20
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
    return int(fields.get("Restarts", "0") or 0) > restart_count()


def keep_running(client: MlflowClient, run_id: str, why: str) -> None:
    """Leave the active run without closing it: RUNNING, with the reason in a tag."""
    import mlflow

    tags = client.get_run(run_id).data.tags
    n = sum(1 for k in tags if k.startswith("rnnlab.stopped_")) + 1
    client.set_tag(run_id, f"rnnlab.stopped_{n}", f"{utc_now()}: {why}"[:5000])
    mlflow.end_run()  # pops it from MLflow's active-run stack (and marks it FINISHED)...
    client.update_run(run_id, status="RUNNING")  # ...which it is not: it is waiting in the queue


def on_interrupted(e: Interrupted, client: MlflowClient, run_id: str) -> None:
    """Where a stopped run would be closed KILLED: in a SLURM job being requeued, keep it
    RUNNING and exit for the requeue (never returns); otherwise return and let it close."""
    job = slurm_job_id()
    if job is None:
        return
    where = f"{e.signal_name} at iteration {e.iteration}, " + (
        f"stop checkpoint {e.checkpoint_path.name}"
        if e.checkpoint_path is not None  # None: stopped while its run was being opened
        else "before its first checkpoint"
    )
    if e.signal_name == "SIGUSR2":
        from rnnlab.training.signals import outer_handler

        # the job holds SIGUSR2 itself while it runs: the handler to hand over to is the one
        # from before (submitit's)
        handler = outer_handler(signal.SIGUSR2)
        if not callable(handler):  # not a submitit job: nothing will requeue it
            return
        from submitit.core.utils import UncompletedJobError

        keep_running(client, run_id, f"SLURM job {job} preempted or at its time limit: {where}")
        try:  # re-submits the launcher's callable, runs scontrol requeue, sys.exit()s
            handler(signal.SIGUSR2, None)
        except UncompletedJobError as refused:  # e.g. timed out more than max_num_timeout
            client.set_tag(run_id, "error", f"not requeued: {refused}"[:5000])
            client.set_terminated(run_id, "KILLED")
            raise SystemExit(1) from None
        raise SystemExit(0)
    if e.signal_name == "SIGTERM" and being_requeued():
        keep_running(client, run_id, f"SLURM job {job} requeued (scontrol requeue): {where}")
        raise SystemExit(0)
