"""The first screens a reviewer sees in the MLflow UI: the runs ranked by the objective, and the
learning curves.

MLflow 3.17/3.18 files a metric's chart under the key's prefix up to the last "/" and sorts those
sections alphabetically (keys without "/" and system metrics last), so an rnnlab run shows
``best/``, ``diag/`` and ``final/`` before ``train/`` and ``val/``; no server setting changes that.
Its experiment page, however, loads a *shared view* when the address carries
``viewStateShareKey=<key>``: the page's UI state as JSON in the experiment tag
``mlflow.sharedViewState.<key>`` (MLflow's own "Share" button writes the same tag, compressed).
rnnlab writes such views with a first section "Learning curves" (the charts of
``LEARNING_CURVES``, in that order) and the prefixes' sections after it in ``SECTION_ORDER``,
marked as reordered so MLflow keeps that order, files every metric it finds into its section and
appends sections it did not know at the end. A view also holds the runs table's columns: given
a ``Ranking``, the objective's metric (its curve also leads the charts) and the params that tell
the runs apart come first (``selectedColumns``, ``columnOrder``, ``columnWidths``), the best run
first; in its chart view MLflow lists runs by name only, so the table (``page(..., "TABLE")``)
is the address that shows them. Three views: one per experiment (key ``rnnlab``), one per sweep
(its children only) and one per single job (that run only), the newest ``KEEP_VIEWS`` of the
last two kinds kept; a view's runs are chosen by its search filter, because MLflow ignores a
view when the address has its own filter.

Not here: a run's own page (MLflow keeps its chart layout per run in the browser only, sorted as
above); the addresses printed around these views (``rnnlab.tracking.ui``,
``rnnlab.sweeps.leaderboard``)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

TAG_PREFIX = "mlflow.sharedViewState."  # MLflow's experiment tag prefix for shared views
EXPERIMENT_KEY = "rnnlab"
# The headline curves of both tasks: a chart whose metric no shown run has is hidden
# (hideEmptyCharts), so an adder experiment shows train/smooth_loss, val/exact_acc, ...
LEARNING_CURVES = (
    "train/smooth_loss",
    "val/loss",
    "val/bpc",
    "val/exact_acc",
    "val/loss_warm",
    "val/bit_acc",
    "train/loss",
)
# Sections after the learning curves, by name (MLflow's: the key's prefix; "Model metrics" holds
# keys without a "/" such as objective and iters_to_100). Sections not listed come last.
SECTION_ORDER = (
    "train",
    "val",
    "test",
    "best",
    "Model metrics",
    "final",
    "baseline",
    "perf",
    "diag",
    "diag/grad_norm",
    "diag/update_ratio",
    "diag/clip_frac",
    "System metrics",
)
CURVES_SECTION = "Learning curves"
KEEP_VIEWS = 20  # the newest sweep views and single-job views an experiment keeps (each)
STAMP = "rnnlabWritten"  # when a view was written (MLflow ignores fields it does not know)


def view_key_for_sweep(parent_id: str) -> str:
    return f"sweep-{parent_id}"


def view_key_for_run(run_id: str) -> str:
    return f"run-{run_id}"


def _line_chart(uuid: str, metric: str, section: str) -> dict:
    """A line chart card as MLflow 3.17 serialises one (RunsChartsLineCardConfig's fields)."""
    return {
        "uuid": uuid,
        "type": "LINE",
        "runsCountToCompare": 10,
        "metricSectionId": section,
        "deleted": False,
        "isGenerated": False,  # not MLflow's own: it never retypes or moves it
        "metricKey": metric,
        "selectedMetricKeys": [metric],
        "lineSmoothness": 0,
        "xAxisScaleType": "linear",
        "scaleType": "linear",
        "range": {},
        "xAxisKey": "step",
        "selectedXAxisMetricKey": "",
        "yAxisKey": "metric",
        "yAxisExpressions": [],
        "ignoreOutliers": False,
        "useGlobalXaxisKey": True,
        "useGlobalLineSmoothing": True,
    }


@dataclass(frozen=True)
class Ranking:
    """What a view's runs table leads with and sorts by: the objective's metric (as every
    rnnlab surface names it, ``rnnlab.tasks.judging``), then the params that tell its runs
    apart (a sweep's swept keys, a job's overrides)."""

    objective: str  # e.g. val/loss_warm
    maximise: bool = False  # an accuracy: the best run first means highest first
    params: tuple[str, ...] = ()  # param keys as MLflow holds them, e.g. hidden_size, task.name


TABLE_AFTER = ("train/smooth_loss", "perf/train_seconds")  # columns after the ranking's
OBJECTIVE_WIDTH = 170  # px: the objective's full value (MLflow cuts a column at ~100 px)


def metric_column(key: str) -> str:
    return f"metrics.`{key}`"


def param_column(key: str) -> str:
    return f"params.`{key}`"


def view_state(
    search_filter: str = "", show_all_runs: bool = False, ranking: Ranking | None = None
) -> dict:
    """The experiment page's UI state (and search facets) of an rnnlab view: learning curves
    first (the objective's own curve first, given a ``ranking``), and a runs table that leads
    with the objective and the ranking's params, best run first. ``search_filter``: the runs
    shown (MLflow's search syntax; all top-level runs if empty); ``show_all_runs``: chart every
    run listed, not only the first 10."""
    curves_id = "rnnlab-curves"
    sections = [{"uuid": curves_id, "name": CURVES_SECTION, "display": True, "isReordered": True}]
    sections += [
        {"uuid": f"rnnlab-{i}", "name": name, "display": True, "isReordered": False}
        for i, name in enumerate(SECTION_ORDER)
    ]
    curves = list(LEARNING_CURVES)
    if ranking is not None:  # its curve leads, then the others in their order
        curves = [ranking.objective] + [m for m in curves if m != ranking.objective]
    charts = [_line_chart(f"rnnlab-curve-{i}", m, curves_id) for i, m in enumerate(curves)]
    state: dict = {
        "compareRunCharts": charts,
        "compareRunSections": sections,
        "isAccordionReordered": True,  # keep the section order above
        "hideEmptyCharts": True,
        "searchFilter": search_filter,
    }
    if search_filter:
        # MLflow nests matching children under their parent (folded: its charts would show the
        # parent's one point) unless the runs are filtered *and* sorted by something else than
        # the start time: by name, a sweep's children are rows of their own, in config order.
        state |= {"orderByKey": "tags.`mlflow.runName`", "orderByAsc": True}
    if ranking is not None:
        lead = [metric_column(ranking.objective), *map(param_column, ranking.params)]
        after = [metric_column(m) for m in TABLE_AFTER if m != ranking.objective]
        state |= {
            "selectedColumns": list(dict.fromkeys(lead + after)),
            "columnOrder": list(dict.fromkeys(lead)),
            "columnWidths": {metric_column(ranking.objective): OBJECTIVE_WIDTH},
            # the best run first: also not the start time, so children stay rows of their own
            "orderByKey": metric_column(ranking.objective),
            "orderByAsc": not ranking.maximise,
        }
    if show_all_runs:
        state["runsHiddenMode"] = "SHOW_ALL"
    return state


def view_tag(state: dict) -> str:
    """The tag value: plain JSON, which MLflow's UI parses after trying its compressed form."""
    return json.dumps(state, separators=(",", ":"), sort_keys=True)


def experiment_view_tags() -> dict[str, str]:
    """The tags an rnnlab experiment carries for its view of all runs."""
    return {TAG_PREFIX + EXPERIMENT_KEY: view_tag(view_state())}


def write_view(client, experiment, key: str, state: dict) -> bool:
    """Set view ``key`` on ``experiment`` (an MLflow Experiment) unless it already holds
    ``state``; True when the experiment has the view afterwards. Never raises: a run's result
    does not depend on how the UI draws it."""
    value = view_tag(state)
    if experiment.tags.get(TAG_PREFIX + key) == value:
        return True
    try:
        client.set_experiment_tag(experiment.experiment_id, TAG_PREFIX + key, value)
    except Exception:
        return False
    return True


def _write_kept_view(client, experiment_id: str, key: str, state: dict, kind: str) -> bool:
    """``write_view`` for a sweep's or a run's view, stamped with the time it was written; the
    oldest views of the same ``kind`` beyond ``KEEP_VIEWS`` are deleted. The UI fetches every
    experiment tag with every page (a view is ~4 kB), so their number stays bounded."""
    try:
        experiment = client.get_experiment(experiment_id)
    except Exception:
        return False
    old = experiment.tags.get(TAG_PREFIX + key)
    if old is not None and _unstamped(old) == state:
        return True
    if not write_view(client, experiment, key, state | {STAMP: time.time()}):
        return False
    views = {k: _stamp(v) for k, v in experiment.tags.items() if k.startswith(TAG_PREFIX + kind)}
    views[TAG_PREFIX + key] = math.inf  # the view just written, whatever the clocks say
    for tag in sorted(views, key=views.__getitem__)[:-KEEP_VIEWS]:
        try:
            client.delete_experiment_tag(experiment_id, tag)
        except Exception:
            pass  # a parallel writer deleted it first
    return True


def _unstamped(value: str) -> dict | None:
    try:
        state = json.loads(value)
    except ValueError:
        return None
    state.pop(STAMP, None)
    return state


def _stamp(value: str) -> float:
    try:
        return float(json.loads(value).get(STAMP, 0.0))
    except (ValueError, TypeError, AttributeError):
        return 0.0


def write_sweep_view(
    client, experiment_id: str, parent_id: str, ranking: Ranking | None = None
) -> bool:
    """The view of sweep ``parent_id``: its children's curves side by side, and their table
    ranked by ``ranking``."""
    state = view_state(f"tags.mlflow.parentRunId = '{parent_id}'", True, ranking)
    return _write_kept_view(client, experiment_id, view_key_for_sweep(parent_id), state, "sweep-")


def write_run_view(client, experiment_id: str, run_id: str, ranking: Ranking | None = None) -> bool:
    """The view of run ``run_id`` alone."""
    state = view_state(f"attributes.run_id = '{run_id}'", ranking=ranking)
    return _write_kept_view(client, experiment_id, view_key_for_run(run_id), state, "run-")


def page(experiment_id: str, key: str, mode: str = "CHART") -> str:
    """The experiment page's address part that opens view ``key`` in the chart view (``mode``
    TABLE: the runs table) — on the runs tab itself: ``#/experiments/<id>`` redirects there and
    drops the parameters."""
    return f"#/experiments/{experiment_id}/runs?compareRunsMode={mode}&viewStateShareKey={key}"
