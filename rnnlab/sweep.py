"""The MLflow parent run of a multirun, opened and closed by a Hydra callback.

``on_multirun_start`` runs once in the launching process before any job: it creates the store
and the experiment there (parallel jobs opening a fresh SQLite file at once race in MLflow's
schema migration and can corrupt it) and opens the parent run, whose id the jobs read from a file
in the sweep folder (shared by joblib workers and cluster jobs alike). ``on_multirun_end`` closes
it FINISHED when every child finished, FAILED otherwise, with counts in tags.
"""

from __future__ import annotations

import os
from pathlib import Path

from hydra.experimental.callback import Callback
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from rnnlab.runs import PARENT_RUN_FILE, ensure_experiment, experiment_name, tracking_uri

# The open parent run of this process, so the CLI can close it KILLED on Ctrl-C.
open_parent: dict[str, str] = {}


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from rnnlab.config import Config

        cfg = OmegaConf.to_object(
            OmegaConf.merge(
                OmegaConf.structured(Config),
                OmegaConf.masked_copy(config, [k for k in config if k != "hydra"]),
            )
        )
        launch_dir = Path(os.getcwd())
        uri = tracking_uri(cfg, launch_dir)
        client = MlflowClient(uri)
        experiment_id = ensure_experiment(client, experiment_name(cfg))
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_absolute():
            sweep_dir = launch_dir / sweep_dir
        overrides = list(config.hydra.overrides.task)
        run = client.create_run(
            experiment_id,
            run_name=f"sweep-{sweep_dir.name}",
            tags={
                "rnnlab.kind": "sweep",
                "rnnlab.task": cfg.task.name,
                "rnnlab.sweep_overrides": " ".join(overrides),
                "rnnlab.sweep_dir": str(sweep_dir),
                "rnnlab.launcher": str(config.hydra.launcher.get("_target_", "")),
            },
        )
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / PARENT_RUN_FILE).write_text(run.info.run_id)
        open_parent.update(uri=uri, run_id=run.info.run_id)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if not open_parent:
            return
        close_parent(RunStatus.FINISHED)


def close_parent(status_if_all_finished: int) -> None:
    """End the open parent run: FINISHED only if every child finished, else FAILED/KILLED."""
    uri, run_id = open_parent.pop("uri"), open_parent.pop("run_id")
    client = MlflowClient(uri)
    parent = client.get_run(run_id)
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{run_id}'",
        max_results=50000,
    )
    counts: dict[str, int] = {}
    for child in children:
        counts[child.info.status] = counts.get(child.info.status, 0) + 1
    for status, n in counts.items():
        client.set_tag(run_id, f"rnnlab.children_{status.lower()}", str(n))
    client.set_tag(run_id, "rnnlab.children", str(len(children)))
    bad = len(children) - counts.get("FINISHED", 0)
    status = status_if_all_finished
    if bad and status == RunStatus.FINISHED:
        status = RunStatus.FAILED
        client.set_tag(run_id, "error", f"{bad} of {len(children)} child runs did not finish")
    client.set_terminated(run_id, RunStatus.to_string(status))
