"""A sweep's answer: its configurations ranked by the objective, over seeds.

Two readers: the terminal, where a sweep closes with the leaderboard, its parent run id, its report
and how many children did not finish; and the MLflow UI, where the parent run carries the best
child's metrics and config, so the folded sweep row and the chart view show the sweep, and the
sweep's own chart view (``rnnlab.tracking.mlflow_view``) lines its children's learning curves up.
Read only from the store: the children's latest metrics and their params.

Not here: opening and closing the parent (``rnnlab.sweeps.parent_run``), the full report
(``rnnlab.report``)."""

from __future__ import annotations

import math
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rnnlab.sweeps.search import TAG_STATE
from rnnlab.tasks import judged
from rnnlab.tasks.judging import Judged
from rnnlab.tracking import mlflow_view, store
from rnnlab.tracking.ui import charts_address, param_keys, ranking_of, ui_lines
from rnnlab.training.signals import held

TOP = 5  # configurations shown in the terminal
TAG_BEST_RUN = "rnnlab.best_run_id"  # on the parent: the child its metrics and params are from


def objective_of(run) -> float:
    """The final value of the objective a child minimised, as its task judges it
    (``rnnlab.tasks.judging.Judged.final``; nan when it has none)."""
    task = judged(run.data.tags.get("rnnlab.task") or run.data.params.get("task.name", ""))
    return float(task.final(run)) if task is not None else math.nan


def objective_phrase(run) -> str:
    """``objective val/loss_warm 1.7817``: the run's objective by its key and final value."""
    task = judged(run.data.tags.get("rnnlab.task") or run.data.params.get("task.name", ""))
    if task is None:
        return f"objective {objective_of(run):.4f}"
    return task.phrase(task.of_run(run), objective_of(run))


def counted(run) -> bool:
    """A child whose objective ranks: FINISHED and not pruned early by a search."""
    return run.info.status == "FINISHED" and run.data.tags.get(TAG_STATE) != "PRUNED"


def shown_value(value: str) -> str:
    """A param as a person reads it: ``0.032356447211578494`` → ``0.03236``; others unchanged."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    if number.is_integer() or not math.isfinite(number) or len(value) <= 8:
        return value
    return f"{number:.4g}"


@dataclass
class Setting:
    """One configuration of the sweep: its swept values and the children that ran it."""

    values: dict[str, str]
    objectives: list[float] = field(default_factory=list)  # minimised (an accuracy: 1 − it)
    best_run_id: str = ""
    best: float = math.inf
    judged: Judged | None = None  # how its runs are judged, and
    key: str = ""  # the metric they minimised (e.g. val/loss_warm)

    def mean(self) -> float:
        return statistics.fmean(self.objectives) if self.objectives else math.inf

    def cell(self) -> str:
        """``1.6370 ± 0.0123 (n=3)``: the objective metric's own values (an accuracy as itself)."""
        n = len(self.objectives)
        if n == 0:
            return "–"
        mean = self.judged.shown(self.key, self.mean()) if self.judged else self.mean()
        if n == 1:
            return f"{mean:.4f} (n=1)"
        return f"{mean:.4f} ± {statistics.stdev(self.objectives):.4f} (n={n})"


def rank(children: list, swept: list[str]) -> list[Setting]:
    """Configurations (children sharing every swept value but the seed), best mean first."""
    keys = [k for k in swept if k != "seed"]
    configs: dict[tuple, Setting] = {}
    for run in children:
        params = run.data.params  # a config group swept by name (task=a,b) logs <group>.name
        values = {k: params.get(k, params.get(f"{k}.name", "")) for k in keys}
        c = configs.setdefault(tuple(values.values()), Setting(values))
        obj = objective_of(run)
        if counted(run) and not math.isnan(obj):
            c.objectives.append(obj)
            if c.judged is None:
                c.judged = judged(run.data.tags.get("rnnlab.task")
                                  or run.data.params.get("task.name", ""))  # fmt: skip
                c.key = c.judged.of_run(run) if c.judged else ""
            if obj < c.best:
                c.best, c.best_run_id = obj, run.info.run_id
    # a sweep over the task ranks each objective's configurations together: their values are
    # not comparable across metrics
    return sorted(configs.values(), key=lambda c: (c.key or "\uffff", c.mean()))


def objective_header(configs: list[Setting]) -> str:
    """The leaderboard's objective column: ``objective val/loss_warm (mean ± std)``; with
    configurations minimising different metrics, each row names its own."""
    names = {c.key for c in configs if c.key}
    return f"objective {names.pop()} (mean ± std)" if len(names) == 1 else "objective (mean ± std)"


def best_child(children: list):
    """The counted child with the lowest objective, or None."""
    scored = [(objective_of(r), r) for r in children if counted(r)]
    scored = [(o, r) for o, r in scored if not math.isnan(o)]
    return min(scored, key=lambda p: p[0])[1] if scored else None


def record_best_on_parent(client, parent_id: str, children: list) -> None:
    """Copy the best child's latest metrics (and ``objective``) and its params to the parent, and
    give the sweep its chart view (``rnnlab.tracking.mlflow_view``). Never raises: the parent must
    still be closed after it."""
    from mlflow.entities import Metric, Param

    if children:
        try:
            ranking = sweep_ranking(client.get_run(parent_id), children)
        except Exception:  # the store is away: the view without its ranking, if at all
            ranking = None
        mlflow_view.write_sweep_view(client, children[0].info.experiment_id, parent_id, ranking)
    best = best_child(children)
    if best is None:
        return
    step = int(best.data.params.get("iterations", 0) or 0)  # where the child's curves end
    metrics = {**best.data.metrics, "objective": objective_of(best)}
    params = list(best.data.params.items())
    try:
        client.log_batch(
            parent_id, metrics=[Metric(k, float(v), 0, step) for k, v in metrics.items()]
        )
        client.set_tag(parent_id, TAG_BEST_RUN, best.info.run_id)
        for i in range(0, len(params), 100):
            client.log_batch(parent_id, params=[Param(k, v) for k, v in params[i : i + 100]])
    except Exception as e:  # e.g. a resumed search's parent already holds other params
        print(
            f"rnnlab: parent run {parent_id}: best child's params not copied: {e}"[:300],
            file=sys.stderr,
        )


def sweep_ranking(parent, children: list) -> mlflow_view.Ranking | None:
    """How the sweep's view ranks its children: by the objective the first counted child
    minimised, with the swept params (the seed included: each row is a run) after it."""
    counted_ones = [r for r in children if counted(r)] or children
    if not counted_ones:
        return None
    swept = parent.data.tags.get("rnnlab.swept_keys", "").split()
    params = set().union(*(r.data.params for r in children))
    return ranking_of(counted_ones[0], param_keys(swept, params))


def leaderboard_lines(
    parent, children: list, uri: str, report: str | None, view_key: str | None = None
) -> list[str]:
    """The sweep's closing block for the terminal (with the address of chart view
    ``view_key``, when given)."""
    swept = parent.data.tags.get("rnnlab.swept_keys", "").split()
    configs = rank(children, swept)
    bad = sum(1 for r in children if r.info.status != "FINISHED")
    name = parent.info.run_name or parent.info.run_id
    lines = [
        f"rnnlab: sweep {name}: {len(children)} runs, {bad} did not finish, "
        f"parent run {parent.info.run_id}"
    ]
    keys = list(configs[0].values) if configs else []
    mixed = len({c.key for c in configs if c.key}) > 1  # e.g. a sweep over objective=…
    header = ["rank", objective_header(configs), *keys, "best run"]
    rows = [
        [str(i), (f"{c.key} " if mixed and c.key else "") + c.cell(),
         *map(shown_value, c.values.values()), c.best_run_id or "–"]
        for i, c in enumerate(configs[:TOP], 1)
    ]  # fmt: skip
    widths = [max(len(r[j]) for r in [header, *rows]) for j in range(len(header))]
    for r in [header, *rows]:
        lines.append("  " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    if len(configs) > TOP:
        lines.append(f"  … {len(configs) - TOP} more configurations in the report")
    lines.append(f"  report:  {report}" if report else "  report:  not written")
    # the children's table, ranked as above (the parent's own page without a view)
    view, *then = ui_lines(uri, parent.info.experiment_id, parent.info.run_id, view_key)
    lines += [f"  view:    {view}"] + [f"           {t}" for t in then]
    if view_key:
        lines.append(f"  charts:  {charts_address(uri, parent.info.experiment_id, view_key)}")
    return lines


def sweep_closing_lines(uri: str, parent_id: str, report: str | None) -> list[str]:
    """``leaderboard_lines`` of sweep ``parent_id``, read from the store ``uri``."""

    client = store.client(uri)
    parent = client.get_run(parent_id)
    children = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
        max_results=50000,
    )
    key = None
    ranking = sweep_ranking(parent, children)
    if children and mlflow_view.write_sweep_view(
        client, parent.info.experiment_id, parent_id, ranking
    ):
        key = mlflow_view.view_key_for_sweep(parent_id)
    return leaderboard_lines(parent, children, uri, report, key)


def print_sweep_closing(config, report) -> None:
    """Print the closing block of the multirun ``config`` (a Hydra config) ends; one line on
    stderr instead when the store cannot be read."""
    from rnnlab.tracking.job import PARENT_RUN_FILE

    launch_dir = Path(os.getcwd())
    sweep_dir = Path(config.hydra.sweep.dir)
    marker = (sweep_dir if sweep_dir.is_absolute() else launch_dir / sweep_dir) / PARENT_RUN_FILE
    if not marker.is_file():
        return  # tracking off: no parent run
    with held():  # store reads: a signal meanwhile stops the CLI once the block is out
        try:
            uri = store.resolve_uri(config.tracking.uri, launch_dir)
            lines = sweep_closing_lines(uri, marker.read_text().strip(), report and str(report))
        except Exception as e:
            print(f"rnnlab: no leaderboard: {type(e).__name__}: {e}"[:300], file=sys.stderr)
            return
        print("\n".join(lines), flush=True)
