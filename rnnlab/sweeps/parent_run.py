"""The MLflow parent run of a multirun, opened and closed by a Hydra callback.

``on_multirun_start`` runs once in the launching process before any job: it creates the store
and the experiment there (parallel jobs opening a fresh SQLite file at once race in MLflow's
schema migration and can corrupt it) and opens the parent run, whose id the jobs read from a file
in the sweep folder (shared by joblib workers and cluster jobs alike), next to the list of swept
keys the children are named after. ``on_multirun_end`` closes it FINISHED when every child
finished, FAILED otherwise, with counts in tags; a child still RUNNING then lost its process and
is closed FAILED (KILLED if the sweep was interrupted).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

import rnnlab
from rnnlab import files
from rnnlab.sweeps.leaderboard import record_best_on_parent
from rnnlab.tracking import store
from rnnlab.tracking.job import PARENT_RUN_FILE, SWEPT_KEYS_FILE, git_tags
from rnnlab.tracking.store import ensure_experiment, experiment_name
from rnnlab.training.signals import stop_on_signals

# The open parent run of this process, so the CLI can close it KILLED on Ctrl-C.
open_parent: dict[str, str] = {}


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        if not OmegaConf.select(config, "tracking.enabled", default=True):
            return  # tracking off: no store, no parent run, no id file
        # Read the few keys needed straight from the composed config: preflight has checked it,
        # and an exception here would only be a warning from Hydra while the jobs start anyway.
        launch_dir = Path(os.getcwd())
        uri = store.resolve_uri(config.tracking.uri, launch_dir)
        sweep_dir = Path(config.hydra.sweep.dir)  # resolves ${now:...} once; jobs reuse it
        if not sweep_dir.is_absolute():
            sweep_dir = launch_dir / sweep_dir
        overrides = list(config.hydra.overrides.task)
        swept = swept_keys(overrides, config)
        try:
            client = store.open_store(uri, create=True)  # under the store's creation lock
            experiment_id = ensure_experiment(client, experiment_name(config))
            run = client.create_run(
                experiment_id,
                run_name=f"sweep-{sweep_dir.name}",
                tags={
                    "rnnlab.kind": "sweep",
                    "rnnlab.task": str(config.task.name),
                    "rnnlab.sweep_overrides": " ".join(overrides),
                    "rnnlab.swept_keys": " ".join(swept),
                    "rnnlab.sweep_dir": str(sweep_dir),
                    "rnnlab.launcher": str(config.hydra.launcher.get("_target_", "")),
                    "rnnlab.version": rnnlab.__version__,
                    **git_tags(launch_dir),
                },
            )
        except Exception as e:  # SystemExit passes Hydra's callback guard: no job starts
            print(f"rnnlab: error: cannot open the MLflow store {uri}: {e}", file=sys.stderr)
            raise SystemExit(1) from None
        name_dead_runs(client, experiment_id)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        files.write_text(sweep_dir / SWEPT_KEYS_FILE, "".join(f"{k}\n" for k in swept))
        files.write_text(sweep_dir / PARENT_RUN_FILE, run.info.run_id)  # jobs read it whole
        open_parent.update(uri=uri, run_id=run.info.run_id)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if not open_parent:
            return
        close_parent(RunStatus.FINISHED)


def name_dead_runs(client: MlflowClient, experiment_id: str) -> None:
    """One line naming the experiment's runs left RUNNING by a process that is gone."""
    running = store.search_all(client, [experiment_id], "attributes.status = 'RUNNING'")
    dead = [r.info.run_id for r in running if store.is_dead(r)]
    if dead:
        shown = " ".join(dead[:5]) + (f" and {len(dead) - 5} more" if len(dead) > 5 else "")
        line = (f"rnnlab: {len(dead)} run(s) of this experiment were left RUNNING by a process "
                f"that is gone: {shown} (resume=<run_id> continues one)")  # fmt: skip
        print(line, file=sys.stderr)


def close_parent(status_if_all_finished: int) -> None:
    """End the open parent run: FINISHED only if every child finished, else FAILED/KILLED.
    No signal stops it half-way (a parent popped from ``open_parent`` but never ended would
    stay RUNNING): one that arrives meanwhile is only recorded."""
    with stop_on_signals(hard_interrupt=False):
        _close_parent(status_if_all_finished)


def _close_parent(status_if_all_finished: int) -> None:
    uri, run_id = open_parent.pop("uri"), open_parent.pop("run_id")
    client = store.client(uri)
    parent = client.get_run(run_id)
    children = store.list_children(client, parent.info.run_id)
    counts: dict[str, int] = {}
    for child in children:
        status = child.info.status
        if status == "RUNNING":  # every job has returned: its process died (SIGKILL, OOM, a
            # killed worker) without closing it
            status = "KILLED" if status_if_all_finished == RunStatus.KILLED else "FAILED"
            where = f"process {child.data.tags.get('rnnlab.pid', '?')}"
            client.set_tag(child.info.run_id, "error", f"its {where} ended without closing it")
            client.set_terminated(child.info.run_id, status)
        counts[status] = counts.get(status, 0) + 1
    for status, n in counts.items():
        client.set_tag(run_id, f"rnnlab.children_{status.lower()}", str(n))
    client.set_tag(run_id, "rnnlab.children", str(len(children)))
    bad = len(children) - counts.get("FINISHED", 0)
    status = status_if_all_finished
    if bad and status == RunStatus.FINISHED:
        status = RunStatus.FAILED
        client.set_tag(run_id, "error", f"{bad} of {len(children)} child runs did not finish")
    record_best_on_parent(client, run_id, children)  # the folded sweep row shows its best
    client.set_terminated(run_id, RunStatus.to_string(status))


def continue_parent(run_id: str | None, sweep_dir: Path) -> tuple[str, str] | None:
    """Make ``run_id``, an earlier parent (a resumed Optuna search's), this multirun's parent
    again instead of the run ``on_multirun_start`` just opened, which is deleted. Returns
    (tracking uri, parent run id) of the open parent, or None when no parent is open."""
    if not open_parent:
        return None
    uri, new_id = open_parent["uri"], open_parent["run_id"]
    if not run_id or run_id == new_id:
        return uri, new_id
    client = store.client(uri)
    try:
        old = client.get_run(run_id)
    except Exception:  # the earlier parent lives in another store, or is gone
        return uri, new_id
    if old.info.lifecycle_stage != "active":
        return uri, new_id
    client.update_run(run_id, status="RUNNING")
    client.delete_run(new_id)
    files.write_text(sweep_dir / PARENT_RUN_FILE, run_id)
    open_parent["run_id"] = run_id
    return uri, run_id


def swept_keys(overrides: list[str], config: DictConfig) -> list[str]:
    """The keys a multirun varies: sweep overrides (``a=1,2``, ``range(...)``) and the
    sweeper's own ``params``, so child runs can be named after just those."""
    keys: list[str] = []
    for o in OverridesParser.create().parse_overrides(overrides):
        if o.is_sweep_override():
            keys.append(o.key_or_group)
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
    keys += [str(k) for k in params if str(k) not in keys]
    return keys
