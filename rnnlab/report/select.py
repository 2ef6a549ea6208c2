"""Choose the runs a report covers and read them from MLflow, params cast back to their types.

A selection is a sweep (its parent run's children), an experiment, or an MLflow filter string.
Everything here reads the tracking store only: no config files, no sweep folders. Sweep parent
runs are recognised by their ``rnnlab.kind=sweep`` tag and never appear as rows themselves.
"""

from __future__ import annotations

import re
import tempfile
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import Run, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from rnnlab.config import field_types
from rnnlab.errors import UserError
from rnnlab.tracking import store

# Metric histories the report reads, besides each run's latest values.
HISTORY_KEYS = ("train/smooth_loss", "val/loss", "val/bpc", "val/exact_acc", "perf/chars_per_sec")
# Params that differ between runs without being hyperparameters.
NOT_HYPERPARAMETERS = ("seed", "experiment_name", "resume", "tracking.", "verbose")


class SelectionError(UserError):
    """Nothing to report on, or the selection names something the store lacks. One line."""


PARAM_TYPES: dict[str, Any] = field_types()


def cast_param(key: str, text: str) -> Any:
    """An MLflow param string → the value the config held (``"None"`` → None for optionals).

    Keys the schema does not know (older or newer runs) are guessed: int, float, else str."""
    hint = PARAM_TYPES.get(key)
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if text == "None" and (hint is None or type(None) in args):
        return None
    kinds = [a for a in args if a is not type(None)]
    kind = kinds[0] if kinds else None
    if kind is bool:
        return text == "True"
    if kind in (int, float):
        return kind(text)
    if kind is str:
        return text
    for guess in (int, float):
        try:
            return guess(text)
        except ValueError:
            pass
    return text


@dataclass
class Selection:
    """The runs of one report and where they came from."""

    client: MlflowClient
    uri: str
    name: str  # report name: the sweep's run name, the experiment name, or "filter-…"
    description: str  # one line: how the runs were chosen
    runs: list[Run]
    parent: Run | None = None  # the sweep's parent run, when a sweep was selected
    histories: dict[str, dict[str, list[tuple[int, float]]]] = field(default_factory=dict)

    @property
    def sweep_overrides(self) -> str:
        return self.parent.data.tags.get("rnnlab.sweep_overrides", "") if self.parent else ""

    def params(self, run: Run) -> dict[str, Any]:
        return {k: cast_param(k, v) for k, v in run.data.params.items()}

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """[(step, value)] of one metric, read once from MLflow and kept."""
        per_run = self.histories.setdefault(run_id, {})
        if key not in per_run:
            points = self.client.get_metric_history(run_id, key)
            per_run[key] = sorted((m.step, m.value) for m in points)
        return per_run[key]

    def sample_files(self, run_id: str) -> dict[int, str]:
        """{iteration: artifact path} of the run's logged samples."""
        try:
            files = self.client.list_artifacts(run_id, "samples")
        except (MlflowException, OSError):
            return {}
        out = {}
        for f in files:
            if m := re.search(r"iter_(\d+)\.txt$", f.path):
                out[int(m.group(1))] = f.path
        return out

    def read_text(self, run_id: str, path: str) -> str:
        with tempfile.TemporaryDirectory() as tmp, store.quiet_artifact_transfers():
            local = self.client.download_artifacts(run_id, path, tmp)
            return Path(local).read_text(encoding="utf-8", errors="replace")


def _all_experiment_ids(client: MlflowClient) -> list[str]:
    return [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]


def _search(client: MlflowClient, experiment_ids: list[str], filter_string: str) -> list[Run]:
    return list(store.search_all(client, experiment_ids, filter_string))


def _is_sweep_parent(run: Run) -> bool:
    return run.data.tags.get("rnnlab.kind") == "sweep"


def latest_sweep(client: MlflowClient, experiment_ids: list[str]) -> Run:
    found = client.search_runs(
        experiment_ids,
        filter_string="tags.`rnnlab.kind` = 'sweep'",
        max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    if not found:
        raise SelectionError("no sweep in this store (run `python -m rnnlab.run -m ...` first)")
    return found[0]


def select(
    uri: str,
    sweep: str | None = None,
    experiment: str | None = None,
    filter_string: str = "",
) -> Selection:
    """Pick the runs: ``sweep`` (a parent run id or "latest"), else every run of ``experiment``
    and/or matching ``filter_string``; with none of them, the latest sweep."""
    try:
        client = store.open_store(uri)
    except store.StoreError as e:
        raise SelectionError(str(e)) from None
    try:
        experiment_ids = _all_experiment_ids(client)
        if experiment is not None:
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                raise SelectionError(f"no experiment named {experiment!r} in {uri}")
            experiment_ids = [exp.experiment_id]
        if sweep is None and experiment is None and not filter_string:
            sweep = "latest"

        parent = None
        if sweep is not None:
            if sweep == "latest":
                parent = latest_sweep(client, experiment_ids)
            else:
                try:
                    parent = store.get_run(client, sweep, uri)
                except store.StoreError as e:
                    raise SelectionError(str(e)) from None
                if not _is_sweep_parent(parent):
                    raise SelectionError(f"run {sweep} is not a sweep (no tag rnnlab.kind=sweep)")
            # Children may sit in other experiments when experiment_name is swept.
            clauses = [f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"]
            experiment_ids = _all_experiment_ids(client)
            name = parent.info.run_name or parent.info.run_id
            description = f"sweep {name} (parent run {parent.info.run_id})"
        else:
            clauses = []
            name = experiment or "filter"
            description = f"experiment {experiment}" if experiment else "all experiments"
        if filter_string:
            clauses.append(filter_string)
            description += f", filter {filter_string!r}"
            if sweep is None and experiment is None:
                name = "filter-" + re.sub(r"[^A-Za-z0-9._-]+", "_", filter_string)[:60]
        runs = _search(client, experiment_ids, " and ".join(clauses))
    except MlflowException as e:
        raise SelectionError(f"MLflow: {str(e).splitlines()[0]}") from None
    runs = [r for r in runs if not _is_sweep_parent(r)]
    if not runs:
        raise SelectionError(f"no runs in {description}")
    return Selection(client, uri, name, description, runs, parent)
