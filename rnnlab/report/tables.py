"""pandas tables of a selection: one row per run, and ``mean ± std (n)`` over seeds.

Every number in the per-run table is a value read from MLflow (a logged metric's latest value,
or the min/max of its history) — nothing is recomputed from checkpoints or files, so
``runs.csv`` can be checked against the store cell by cell. Columns (task-specific ones only
when a run of that task is selected):

``final_smooth_loss``  ``final/smooth_loss`` (a run that stopped early: last ``train/smooth_loss``)
``best_smooth_loss``   min of ``train/smooth_loss``
``final_val_loss``     ``final/val_loss``; ``best_val_loss``/``best_val_bpc``: min of ``val/*``
``final_val_loss_warm`` ``final/val_loss_warm`` (after the burn-in); ``best_val_loss_warm``: min
``warm_gap``           |final val/loss − val/loss_warm| / the smaller; > 0.25 flags the run
``test_loss``          ``test/loss`` (best weights; only with data.test_fraction > 0)
``stopped_early``      the iteration early stopping stopped at (tag ``rnnlab.stopped_early``)
``flags``              text: "h=0 fragile" when warm_gap > 0.25, "stopped early at N"
``final_val_exact_acc`` ``final/val_exact_acc``; ``best_val_exact_acc``: max of ``val/exact_acc``
``iters_to_100``       first iteration with every evaluation sum right (blank: never)
``final_val_mse``, ``final_val_solved_frac`` (adding), ``final_val_loss``, ``final_val_copy_acc``
                       (copy), ``final_val_acc`` (digits): the task's ``JUDGED.headline`` columns,
                       each ``final/…`` as logged
``iters_to_solve``     first evaluation that met the task's solved criterion (blank: never)
``chars_per_sec``      ``final/chars_per_sec``; ``train_seconds``: ``final/train_seconds``, the
                       training time summed over every process that trained the run (runs
                       older than that metric: ``final/wall_time_s``, the same sum)
``objective``          what sweeps minimise: the final value of the run's ``objective``
                       (an accuracy as 1 − it); ``objective_metric``: which metric that is
``trial``, ``trial_state``, ``pruned_at``  only in a search: the Optuna trial number, its state
                       (COMPLETE | PRUNED | FAIL; a pruned run is FINISHED in MLflow) and the
                       iteration that pruned it (tags ``rnnlab.trial``, ``rnnlab.trial_state``,
                       ``rnnlab.pruned_at``)
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rnnlab.config import Config, flatten
from rnnlab.report.select import NOT_HYPERPARAMETERS, Selection
from rnnlab.sweeps.leaderboard import shown_value
from rnnlab.sweeps.search import TAG_PRUNED_AT, TAG_STATE, TAG_TRIAL
from rnnlab.tasks import judged, judging
from rnnlab.tracking.store import describe_status

# Columns of a search's trials (``rnnlab.sweeps.search.search_trials``), after ``status``.
TRIAL_COLUMNS = ("trial", "trial_state", "pruned_at")

# Per-run metric columns, in display order: (column, task or None for both).
METRIC_COLUMNS = (
    ("objective", None),
    ("final_val_loss", "charrnn"),
    ("final_val_loss_warm", "charrnn"),
    ("warm_gap", "charrnn"),
    ("best_val_loss", "charrnn"),
    ("best_val_loss_warm", "charrnn"),
    ("test_loss", "charrnn"),
    ("best_val_bpc", "charrnn"),
    ("final_val_exact_acc", "adder"),
    ("best_val_exact_acc", "adder"),
    ("iters_to_100", "adder"),
    ("final_val_mse", "adding"),
    ("final_val_solved_frac", "adding"),
    ("final_val_copy_acc", "copy"),
    ("final_val_acc", "digits"),
    ("iters_to_solve", None),
    ("stopped_early", None),
    ("final_smooth_loss", None),
    ("best_smooth_loss", None),
    ("chars_per_sec", None),
    ("train_seconds", None),
)
# Columns shown only when some run has them (older runs have no warm numbers, most no test text).
SHOWN_WHEN_SET = {"final_val_loss_warm", "warm_gap", "best_val_loss_warm", "test_loss",
                  "stopped_early"}  # fmt: skip
FORMATS = {
    "objective": "{:.4f}",
    "final_val_loss": "{:.4f}",
    "best_val_loss": "{:.4f}",
    "best_val_bpc": "{:.4f}",
    "final_val_loss_warm": "{:.4f}",
    "best_val_loss_warm": "{:.4f}",
    "warm_gap": "{:.1%}",
    "test_loss": "{:.4f}",
    "stopped_early": "{:,.0f}",
    "final_val_exact_acc": "{:.4f}",
    "best_val_exact_acc": "{:.4f}",
    "iters_to_100": "{:,.0f}",
    "final_val_mse": "{:.4f}",
    "final_val_solved_frac": "{:.3f}",
    "final_val_copy_acc": "{:.3f}",
    "final_val_acc": "{:.4f}",
    "iters_to_solve": "{:,.0f}",
    "final_smooth_loss": "{:.4f}",
    "best_smooth_loss": "{:.4f}",
    "chars_per_sec": "{:,.0f}",
    "train_seconds": "{:.2f}",
    "value": "{:.4f}",
    "best_so_far": "{:.4f}",
    "pruned_at": "{:,.0f}",
    "trial": "{:.0f}",
}


def fmt(column: str, value) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float | int | np.floating | np.integer) and column in FORMATS:
        return FORMATS[column].format(value)
    return shown_value(str(value))  # a sampled learning rate as 0.03236, not 17 digits


DEFAULTS = flatten(Config())  # what a run that did not log a key ran with


def _param_key(key: str, params: set[str]) -> str | None:
    """An override key → the param it sets (``task=adder`` sets ``task.name``)."""
    for candidate in (key, f"{key}.name"):
        if candidate in params:
            return candidate
    return None


def _is_hyperparameter(key: str) -> bool:
    return not any(key == n or (n.endswith(".") and key.startswith(n)) for n in NOT_HYPERPARAMETERS)


def swept_from_overrides(overrides: str, params: set[str]) -> list[str]:
    """Params a sweep's command line varies (``hidden_size=50,100`` → hidden_size)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(shlex.split(overrides))
    except Exception:  # an unparsable tag: fall back on the params that vary
        return []
    out = []
    for o in parsed:
        if o.is_sweep_override() and (key := _param_key(o.key_or_group, params)):
            if _is_hyperparameter(key) and key not in out:
                out.append(key)
    return out


def swept_parameters(sel: Selection) -> list[str]:
    """The sweep's swept params (its ``rnnlab.swept_keys`` tag — sweep overrides and a search
    sweeper's params — else its command line), then any other param that varies."""
    all_params = [sel.params(r) for r in sel.runs]
    keys = set().union(*(p.keys() for p in all_params))
    tagged = sel.parent.data.tags.get("rnnlab.swept_keys") if sel.parent else None
    if tagged is not None:
        swept = []
        for k in tagged.split():
            key = _param_key(k, keys)
            if key and _is_hyperparameter(key) and key not in swept:
                swept.append(key)
    else:
        swept = swept_from_overrides(sel.sweep_overrides, keys)
    for key in varying(all_params):
        if _is_hyperparameter(key) and key not in swept:
            swept.append(key)
    return swept


def varying(all_params: list[dict]) -> list[str]:
    """The params that differ between runs, sorted. A run that did not log a key (its code
    predates it) ran with the key's default, so ``lru.r_min`` at its default does not split the
    runs of newer code from older runs; a key the schema no longer has reads as None."""
    keys = set().union(*(p.keys() for p in all_params))
    return [key for key in sorted(keys)
            if len({repr(p.get(key, DEFAULTS.get(key))) for p in all_params}) > 1]  # fmt: skip


def _last(points: list[tuple[int, float]]) -> float:
    return points[-1][1] if points else math.nan


def _min(points: list[tuple[int, float]]) -> float:
    return min(v for _, v in points) if points else math.nan


def _max(points: list[tuple[int, float]]) -> float:
    return max(v for _, v in points) if points else math.nan


def run_row(sel: Selection, run, swept: list[str]) -> dict:
    params = sel.params(run)
    m = run.data.metrics
    task = params.get("task.name") or run.data.tags.get("rnnlab.task", "")
    rid = run.info.run_id
    smooth = sel.history(rid, "train/smooth_loss")
    row = {
        "run_id": rid,
        "run_name": run.info.run_name,
        "status": describe_status(run),  # a RUNNING run whose process is gone says so
        "error": run.data.tags.get("error", ""),
        "task": task,
        **{k: params.get(k) for k in swept},
        "seed": params.get("seed"),
        "iterations_done": smooth[-1][0] if smooth else 0,
        "final_smooth_loss": m.get("final/smooth_loss", _last(smooth)),
        "best_smooth_loss": _min(smooth),
        "chars_per_sec": m.get("final/chars_per_sec", math.nan),
        "train_seconds": m.get("final/train_seconds", m.get("final/wall_time_s", math.nan)),
    }
    tags = run.data.tags
    if TAG_TRIAL in tags:  # a search's trial: pruned runs are FINISHED, their state says why
        row["trial"] = int(tags[TAG_TRIAL])
        row["trial_state"] = tags.get(TAG_STATE, "")
        row["pruned_at"] = int(tags[TAG_PRUNED_AT]) if TAG_PRUNED_AT in tags else None
    stopped = tags.get("rnnlab.stopped_early")
    row["stopped_early"] = float(stopped) if stopped else math.nan
    row["flags"] = f"stopped early at {int(stopped):,}" if stopped else ""
    if tags.get("rnnlab.no_better_than_baseline"):  # it learned nothing
        flags = ("no better than a constant predictor", row["flags"])
        row["flags"] = "; ".join(f for f in flags if f)
    if task == "charrnn":
        row["final_val_loss"] = m.get("final/val_loss", math.nan)
        row["final_val_loss_warm"] = m.get("final/val_loss_warm", math.nan)
        gap = judging.disagreement(m, "final/val_")
        row["warm_gap"] = math.nan if gap is None else gap
        if judging.flagged(m, "final/val_"):
            flags = ("h=0 fragile (val/loss vs warm)", row["flags"])
            row["flags"] = "; ".join(f for f in flags if f)
        row["best_val_loss"] = _min(sel.history(rid, "val/loss"))
        row["best_val_loss_warm"] = _min(sel.history(rid, "val/loss_warm"))
        row["best_val_bpc"] = _min(sel.history(rid, "val/bpc"))
        row["test_loss"] = m.get("test/loss", math.nan)
    elif task == "adder":
        row["final_val_exact_acc"] = m.get("final/val_exact_acc", math.nan)
        row["best_val_exact_acc"] = _max(sel.history(rid, "val/exact_acc"))
        row["iters_to_100"] = m.get("iters_to_100", math.nan)
    elif (task_judged := judged(task)) is not None:  # the columns the task leads with
        for column, _, _ in task_judged.headline:
            row[column] = m.get(headline_metric(column), math.nan)
    row["objective"] = run_objective_value(run)
    how = judged(run.data.tags.get("rnnlab.task", run.data.params.get("task.name")))
    row["objective_metric"] = how.of_run(run) if how is not None else ""
    return row


def headline_metric(column: str) -> str:
    """A headline column's metric: ``final_val_mse`` → ``final/val_mse``; ``iters_to_solve``
    is logged under its own name."""
    return column.replace("final_", "final/", 1) if column.startswith("final_") else column


def run_objective_value(run) -> float:
    """The final value of the objective the run minimised (NaN when it has none)."""
    task = judged(run.data.tags.get("rnnlab.task", run.data.params.get("task.name")))
    return task.final(run) if task is not None else math.nan


def baseline_facts(t: Tables) -> list[tuple[str, str]]:
    """A line under the title naming the runs no better than a constant predictor."""
    if "flags" not in t.runs:
        return []
    bad = t.runs[t.runs["flags"].str.contains("no better than a constant predictor")]
    if bad.empty:
        return []
    names = ", ".join(f"{r['run_id'][:8]}" for _, r in bad.head(10).iterrows())
    return [("flag", f"{len(bad)} run(s) no better than a constant predictor on their "
             f"objective (baseline/<objective>): {names}")]  # fmt: skip


def objective_phrase(group: pd.Series) -> str:
    """A configuration's objective as every surface names it, by its metric's key and that
    metric's own values over seeds: ``objective val/loss_warm 1.6728 ± 0.0123 (n=3)``."""
    key, how = group.get("objective_metric", ""), judged(group.get("task"))
    n, runs = int(group["objective_n"]), int(group["runs"])
    count = f"(n={n})" if n == runs else f"(n={n}/{runs})"
    if n == 0:
        return f"objective {key} – {count}".replace("  ", " ")
    mean = group["objective_mean"]
    if how is not None and key in how.objectives:
        mean = how.shown(key, mean)  # an accuracy as itself, not 1 − it
    spread = f" ± {group['objective_std']:.4f}" if n > 1 else ""
    return f"objective {key} {mean:.4f}{spread} {count}".replace("  ", " ")


def warm_flag_facts(t: Tables) -> list[tuple[str, str]]:
    """A line under the title when some run's val/loss (from h = 0) and val/loss_warm differ
    by more than 25%: one such run drags a mean over seeds."""
    if "warm_gap" not in t.runs:
        return []
    bad = t.runs[t.runs["warm_gap"] > judging.DISAGREEMENT]
    if bad.empty:
        return []
    names = ", ".join(f"{r['run_id'][:8]} ({r['warm_gap']:.0%})" for _, r in bad.iterrows())
    return [("flag", f"{len(bad)} run(s) whose val/loss from h = 0 and val/loss_warm differ by "
             f"more than 25%: {names}; compare the two columns")]  # fmt: skip


def objective_fact(t: Tables) -> str:
    """The facts line saying what the runs rank by: each objective metric by its key."""
    parts = []
    for key in dict.fromkeys(k for k in t.runs["objective_metric"] if k):
        task = t.runs.loc[t.runs["objective_metric"] == key, "task"].iloc[0]
        how = judged(task)
        higher = how is not None and how.objectives.get(key, False)
        parts.append(f"{key} ({'higher' if higher else 'lower'} ranks first)")
    what = "; ".join(parts) or "none recorded"
    ties = " Ties: fewer iterations to 100 %." if "iters_to_100" in t.runs else ""
    return f"{what}: the final value of the metric each run's objective key names.{ties}"


def sort_keys(df: pd.DataFrame) -> list[str]:
    """Objective first; ties (e.g. every adder at 100 %) broken by speed, then smooth loss."""
    return [k for k in ("objective", "iters_to_100", "iters_to_solve", "final_smooth_loss")
            if k in df]  # fmt: skip


@dataclass
class Tables:
    runs: pd.DataFrame  # one row per run, ranked; rank 1 = best objective, failures last
    groups: pd.DataFrame  # one row per configuration (runs differing only in seed), ranked
    swept: list[str]  # the swept hyperparameters (seed excluded)
    metrics: list[str]  # the metric columns present, in display order


def build_tables(sel: Selection) -> Tables:
    swept = swept_parameters(sel)
    df = pd.DataFrame([run_row(sel, r, swept) for r in sel.runs])
    metrics = [c for c, _ in METRIC_COLUMNS if c in df]
    metrics = [c for c in metrics if c not in SHOWN_WHEN_SET or df[c].notna().any()]
    trial = [c for c in TRIAL_COLUMNS if c in df]  # none in a grid sweep
    head = ["run_id", "run_name", "status", *trial, "error", "flags", "task", "objective_metric",
            *swept, "seed", "iterations_done"]  # fmt: skip
    df = df[head + metrics]
    for c in ("trial", "pruned_at"):  # whole numbers with blanks (a run not pruned, not a trial)
        if c in df:
            df[c] = df[c].astype("Int64")
    df = df.sort_values(sort_keys(df), na_position="last", kind="stable").reset_index(drop=True)
    df.insert(0, "rank", range(1, len(df) + 1))
    return Tables(df, aggregate(df, swept, metrics), swept, metrics)


def mean_std_n(values: pd.Series, total: int, column: str) -> str:
    """``mean ± std (n=3)``; ``(n=2/3)`` when only 2 of the 3 runs have the value (failures)."""
    v = values.dropna()
    if v.empty:
        return f"– (n=0/{total})"
    n = f"(n={len(v)})" if len(v) == total else f"(n={len(v)}/{total})"
    if len(v) == 1:
        return f"{fmt(column, float(v.iloc[0]))} {n}"
    return f"{fmt(column, float(v.mean()))} ± {fmt(column, float(v.std(ddof=1)))} {n}"


def aggregate(df: pd.DataFrame, swept: list[str], metrics: list[str]) -> pd.DataFrame:
    """One row per configuration: numeric ``<metric>_mean`` / ``_std`` / ``_n`` columns and a
    display column ``<metric>`` holding ``mean ± std (n)``; ranked by mean objective."""
    keys = ["task", *swept]
    rows = []
    for values, g in df.groupby(keys, dropna=False, sort=False):
        values = values if isinstance(values, tuple) else (values,)
        row = dict(zip(keys, values, strict=True))
        row["runs"] = len(g)
        row["failed"] = int((g["status"] != "FINISHED").sum())
        row["seeds"] = ",".join(str(s) for s in sorted(g["seed"].dropna().unique()))
        row["objective_metric"] = " ".join(dict.fromkeys(g["objective_metric"].dropna()))
        for m in metrics:
            row[f"{m}_mean"] = g[m].mean()
            row[f"{m}_std"] = g[m].std(ddof=1)
            row[f"{m}_n"] = int(g[m].notna().sum())
            row[m] = mean_std_n(g[m], len(g), m)
        rows.append(row)
    out = pd.DataFrame(rows)
    order = [f"{k}_mean" for k in sort_keys(df)]
    out = out.sort_values(order, na_position="last", kind="stable").reset_index(drop=True)
    out.insert(0, "rank", range(1, len(out) + 1))
    return out
