"""The MLflow parent run of a multirun, opened and closed by a Hydra callback.

``on_multirun_start`` runs once in the launching process before any job: it creates the store
and the experiment there (parallel jobs opening a fresh SQLite file at once race in MLflow's
schema migration and can corrupt it) and opens the parent run, whose id the jobs read from a file
in the sweep folder (shared by joblib workers and cluster jobs alike), next to the list of swept
keys the children are named after. ``on_multirun_end`` closes it FINISHED when every child
finished, FAILED otherwise, with counts in tags; a child still RUNNING then lost its process and
is closed FAILED (KILLED if the sweep was interrupted).

A parent records where its sweep runs (host, pid: ``store.where_tags``) and how many jobs the
sweep plans (``rnnlab.jobs_planned``), so a sweep whose launching process was killed outright
(SIGKILL, an OOM kill) is recognisable as dead, with the jobs that never opened a run: the
report says so, and the next sweep into the experiment (or ``python -m rnnlab.sync <sweep
folder>``) closes it FAILED with them counted (``close_dead_runs``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from mlflow.entities import Run, RunStatus
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

import rnnlab
from rnnlab import files
from rnnlab.errors import UserError
from rnnlab.sweeps.leaderboard import record_best_on_parent
from rnnlab.tracking import lease, store
from rnnlab.tracking.job import PARENT_RUN_FILE, SWEPT_KEYS_FILE, git_tags
from rnnlab.tracking.store import ensure_experiment, experiment_name
from rnnlab.training.signals import stop_on_signals

# The open parent run of this process, so the CLI can close it KILLED on Ctrl-C.
open_parent: dict[str, str] = {}
TAG_PLANNED = "rnnlab.jobs_planned"  # how many jobs the sweep plans (when rnnlab can tell)
TAG_NEVER_STARTED = "rnnlab.jobs_never_started"  # of those, how many never opened a run


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
        tags = {
            "rnnlab.kind": "sweep",
            "rnnlab.task": str(config.task.name),
            "rnnlab.sweep_overrides": " ".join(overrides),
            "rnnlab.swept_keys": " ".join(swept),
            "rnnlab.sweep_dir": str(sweep_dir),
            "rnnlab.launcher": str(config.hydra.launcher.get("_target_", "")),
            "rnnlab.version": rnnlab.__version__,
            **git_tags(launch_dir),
            **store.where_tags(),  # a sweep killed outright is recognisable as dead
            **lease.creation_tags(lease.me()),
        }
        if (planned := jobs_planned(overrides, config)) is not None:
            tags[TAG_PLANNED] = str(planned)
        try:
            client = store.open_store(uri, create=True)  # under the store's creation lock
            experiment_id = ensure_experiment(client, experiment_name(config))
            run = client.create_run(experiment_id, run_name=f"sweep-{sweep_dir.name}", tags=tags)
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


def jobs_planned(overrides: list[str], config: DictConfig) -> int | None:
    """How many jobs the sweep will launch: the product of the sweep overrides' values (Hydra's
    basic sweeper), an Optuna search's ``n_trials``; None when rnnlab cannot tell."""
    target = str(OmegaConf.select(config, "hydra.sweeper._target_", default=""))
    if target.endswith("RnnlabOptunaSweeper"):
        return int(OmegaConf.select(config, "hydra.sweeper.n_trials", default=0)) or None
    if not target.endswith("BasicSweeper"):
        return None
    n = 1
    for o in OverridesParser.create().parse_overrides(overrides):
        if o.is_sweep_override():
            if not o.is_discrete_sweep():
                return None
            n *= len(list(o.sweep_string_iterator()))
    return n


def never_started(parent: Run, children: list[Run]) -> tuple[int, int] | None:
    """(jobs that never opened a run, jobs planned) of a sweep's parent, when it recorded its
    plan; the children are its runs."""
    planned = parent.data.tags.get(TAG_PLANNED, "")
    if not planned.isdigit():
        return None
    return max(int(planned) - len(children), 0), int(planned)


def close_dead_runs(client: MlflowClient, experiment_ids: list[str], found_by: str) -> list[str]:
    """Close FAILED every run of these experiments left RUNNING by a process that is gone (on
    this host: ``store.is_dead``), a sweep's parent with its children and the jobs that never
    started counted; returns one line per closed run (printed by the caller)."""
    running = store.search_all(client, experiment_ids, "attributes.status = 'RUNNING'")
    dead = [r for r in running if store.is_dead(r)]
    dead.sort(key=lambda r: r.data.tags.get("rnnlab.kind") == "sweep")  # children first
    return [line for r in dead if (line := close_dead(client, r, found_by))]


def close_dead(client: MlflowClient, run: Run, found_by: str) -> str:
    """Close one RUNNING run whose process is gone (see ``close_dead_runs``); its lease is taken
    first, so a resume that got there first is left alone (empty line)."""
    tags, run_id = run.data.tags, run.info.run_id
    where = store.where_text(run)
    uri = client.tracking_uri
    try:
        lease.take(uri, run_id, tags.get(lease.WRITER_TAG), lease.me(), "RUNNING")
    except lease.LeaseLost:
        return ""
    if tags.get("rnnlab.kind") != "sweep":
        error = f"its {where} ended without closing it (found by {found_by})"
        client.set_tag(run_id, "error", error)
        client.set_terminated(run_id, "FAILED")
        return f"run {run_id} ({run.info.run_name}): {error}; resume={run_id} continues it"
    children = store.list_children(client, run_id)
    for child in children:
        if child.info.status == "RUNNING" and store.is_dead(child):
            close_dead(client, child, found_by)
    children = store.list_children(client, run_id)
    error = f"its sweep's {where} is gone (found by {found_by})"
    if (counts := never_started(run, children)) is not None and counts[0]:
        error += f"; {counts[0]} of {counts[1]} jobs never started"
        client.set_tag(run_id, TAG_NEVER_STARTED, str(counts[0]))
    tag_children(client, run_id, children)
    client.set_tag(run_id, "error", error)
    client.set_terminated(run_id, "FAILED")
    return f"sweep {run.info.run_name} (parent run {run_id}): {error}"


def name_dead_runs(client: MlflowClient, experiment_id: str) -> None:
    """The next sweep's check: close this experiment's runs left RUNNING by a process that is
    gone, in one line each."""
    for line in close_dead_runs(client, [experiment_id], "the next sweep's check"):
        print(f"rnnlab: closed {line}", file=sys.stderr)


def tag_children(client: MlflowClient, run_id: str, children: list[Run]) -> dict[str, int]:
    """``rnnlab.children`` and ``rnnlab.children_<status>`` on a parent; returns the counts."""
    counts: dict[str, int] = {}
    for child in children:
        counts[child.info.status] = counts.get(child.info.status, 0) + 1
    for status, n in counts.items():
        client.set_tag(run_id, f"rnnlab.children_{status.lower()}", str(n))
    client.set_tag(run_id, "rnnlab.children", str(len(children)))
    return counts


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
    for child in children:
        if child.info.status == "RUNNING":  # every job has returned: its process died
            # (SIGKILL, OOM, a killed worker) without closing it
            status = "KILLED" if status_if_all_finished == RunStatus.KILLED else "FAILED"
            where = f"process {child.data.tags.get('rnnlab.pid', '?')}"
            client.set_tag(child.info.run_id, "error", f"its {where} ended without closing it")
            client.set_terminated(child.info.run_id, status)
    children = store.list_children(client, parent.info.run_id)
    counts = tag_children(client, run_id, children)
    errors = []
    if bad := len(children) - counts.get("FINISHED", 0):
        errors.append(f"{bad} of {len(children)} child runs did not finish")
    if (unstarted := never_started(parent, children)) is not None and unstarted[0]:
        client.set_tag(run_id, TAG_NEVER_STARTED, str(unstarted[0]))
        errors.append(f"{unstarted[0]} of {unstarted[1]} jobs never started")
    status = status_if_all_finished
    if errors and status == RunStatus.FINISHED:
        status = RunStatus.FAILED
        client.set_tag(run_id, "error", "; ".join(errors))
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
    for key, value in store.where_tags().items():  # where the sweep runs now
        client.set_tag(run_id, key, value)
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


def is_sweep_target(target: str) -> bool:
    """True when ``rnnlab.sync``'s target is a sweep folder (it holds the parent's id)."""
    return (Path(target).expanduser() / PARENT_RUN_FILE).is_file()


def sync_sweep(target: str, tracking_uri: str | None = None, dead: bool = False) -> str:
    """``python -m rnnlab.sync <sweep folder | parent run id>``: send every child's waiting
    journal, then close the parent if its process is gone (with the jobs that never started
    counted). One line per run touched. ``dead``: the user says the sweep's process is gone,
    for a parent this host cannot check (``store.is_dead`` cannot tell); refused (UserError)
    when a process of the sweep that this host can check is alive."""
    from rnnlab.tracking.journal import JOURNAL_FILE, sync

    folder = Path(target).expanduser()
    uri = store.resolve_uri(tracking_uri)
    client = store.open_store(uri)
    ref = (folder / PARENT_RUN_FILE).read_text().strip() if is_sweep_target(target) else target
    parent = store.get_run(client, ref, uri)
    lines = []
    for child in store.list_children(client, parent.info.run_id):
        job_dir = child.data.tags.get("rnnlab.job_dir")
        if job_dir and (Path(job_dir) / JOURNAL_FILE).is_file():
            try:
                lines.append(sync(job_dir, uri))
            except UserError as e:
                lines.append(f"rnnlab: run {child.info.run_id}: {e}")
    parent = client.get_run(parent.info.run_id)
    name = f"sweep {parent.info.run_name} (parent run {parent.info.run_id})"
    if parent.info.status == "RUNNING" and dead:
        alive = [r for r in [parent, *store.list_children(client, parent.info.run_id)]
                 if r.info.status == "RUNNING" and store.is_alive(r)]  # fmt: skip
        if alive:
            tags = alive[0].data.tags
            raise UserError(f"{name}: dead=true, but run {alive[0].info.run_id} of it is "
                            f"RUNNING in process {tags['rnnlab.pid']} on {tags['rnnlab.host']}, "
                            "which is still alive: stop it first")  # fmt: skip
    if parent.info.status == "RUNNING" and (dead or store.is_dead(parent)):
        found_by = "rnnlab.sync dead=true" if dead and not store.is_dead(parent) else "rnnlab.sync"
        line = close_dead(client, parent, found_by)
        lines.append(f"rnnlab: closed {line}" if line else f"rnnlab: {name} is being closed")
    elif parent.info.status == "RUNNING" and not store.is_alive(parent):
        lines.append(f"rnnlab: {name} is RUNNING, and this host cannot tell whether its "
                     f"{store.where_text(parent)} is alive; if it is gone: python -m "
                     f"rnnlab.sync {target} dead=true")  # fmt: skip
    else:
        lines.append(f"rnnlab: {name} is {store.describe_status(parent)}")
    return "\n".join(lines)
