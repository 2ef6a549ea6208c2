"""How rnnlab's multiruns launch: a folder of its own for every sweep, and what is recorded when a
job's process dies without closing its run.

A worker killed by the kernel (SIGKILL, an OOM kill) cannot close its own MLflow run, so the
launcher, which saw the process end, closes it: FAILED, with an ``error`` tag saying how the
process ended. Only that job's run is touched; the sweep goes on.
"""

from __future__ import annotations

from pathlib import Path


def register() -> None:
    """Everything ``rnnlab.run`` needs from this module before Hydra composes a config."""
    register_sweep_id()
    register_folder_name()


def register_folder_name() -> None:
    """``${rnnlab_folder:...}`` in conf/config.yaml: a job's folder named after its overrides
    through ``rnnlab.files.safe_name``, so ``data.path=../x.txt`` can never put it outside its
    sweep's folder (a second, identical sweep then reused it and overwrote its checkpoints)."""
    from omegaconf import OmegaConf

    from rnnlab.files import safe_name

    if not OmegaConf.has_resolver("rnnlab_folder"):
        OmegaConf.register_new_resolver(
            "rnnlab_folder", lambda text="": safe_name(str(text), "job")
        )


def sweep_id() -> str:
    """This launching process's id, for ``hydra.sweep.dir``: two sweeps started in the same
    second run in two processes, so each gets its own folder and parent run."""
    import os

    return str(os.getpid())


def register_sweep_id() -> None:
    """``${rnnlab_sweep_id:}`` in conf/config.yaml. Cached like ``${now:}``: resolved once in the
    launching process, and job configs copy that cache, so every job sees the same folder."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("rnnlab_sweep_id"):
        OmegaConf.register_new_resolver("rnnlab_sweep_id", sweep_id, use_cache=True)


def fail_dead_job(sweep_dir: Path, job_num: int, reason: str) -> str:
    """Close job ``job_num``'s run of this sweep FAILED with ``error=reason`` if it is still
    RUNNING; returns a few words on what was recorded (empty when the sweep tracks nothing)."""
    from mlflow.entities import RunStatus

    from rnnlab.sweeps import parent_run
    from rnnlab.tracking import store
    from rnnlab.tracking.job import read_parent_run_id

    parent_id = read_parent_run_id(sweep_dir)
    uri = parent_run.open_parent.get("uri")
    if parent_id is None or uri is None:
        return ""
    client = store.client(uri)
    parent = client.get_run(parent_id)
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_id}' "
        f"and tags.`rnnlab.job_num` = '{job_num}'",
    )
    open_runs = [r for r in runs if r.info.status == "RUNNING"]
    for run in open_runs:
        client.set_tag(run.info.run_id, "error", reason)
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FAILED))
    if not open_runs:
        return "(no run had been opened yet)" if not runs else ""
    return f"(run {open_runs[0].info.run_id} closed FAILED)"
