"""The report's *Memory horizon* section: how far back each cell learns, and whether that is
where its gradient has faded.

It applies to the runs of a task with a solved criterion (``Judged.solved``: adding, copy) at
two or more ``task.length`` values. Runs are grouped by what else the sweep varies (the cell,
in the memory-horizon study) and, per group and T:

- the final objective metric (adding: ``val/mse``, copy: ``val/loss``) mean ± std over seeds,
  beside the task's baseline as each run logged it (``val/<metric>_baseline``);
- how many seeds solved it (``iters_to_solve`` logged: the run met the criterion at some
  evaluation) and the iterations that took, mean ± std over the seeds that did; how many
  diverged (stopped FAILED with a DivergenceError: they did not solve, and have no final
  metric to average);
- the **horizon**: the largest T solved in at least two thirds of the seeds (2 of 3); beside
  it the largest T at which as many seeds beat the baseline (final metric ≤ ``BEATEN`` × the
  baseline): a network that beats it remembers something, one at it remembers nothing;
- the gradient flow at the first evaluation of the group's runs at its longest T (the curves
  every run logs under ``diagnostics/``; the LSTM's cell state c, the others' h), normalised by
  its value at d = 1: how much of the loss's
  gradient reaches d steps back — in particular back to the horizon's lag, the distance at which
  an input decides the last step's target (the task's ``lag``: T − 1 for adding, T + 10 for
  copy) — and the distance where it falls below ``FADED`` of it.

Figures: the metric and the solved metric against T (baseline and threshold drawn), iterations
to solve against T, the gradient-flow curves with each group's horizon marked. ``horizon.csv``
holds the table. Reads only the tracker.

Not here: the runs' diagnostics themselves (``rnnlab.analysis.diagnostics``), the study's sweep
(``conf/study/memory_horizon.yaml``).
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from rnnlab import files
from rnnlab.config import from_flat
from rnnlab.report.diagnostics import grad_flow_layers
from rnnlab.report.figures import CMAP, FigureFile, _order, _save
from rnnlab.report.select import Selection
from rnnlab.report.tables import Tables
from rnnlab.tasks import TASKS
from rnnlab.tasks.judging import metric_key

SOLVED_SHARE = 2 / 3  # a T counts as solved by a group when this share of its seeds solved it
BEATEN = 0.9  # a run beats the baseline when its final metric is at most this share of it
FLOOR = 1e-24  # the gradient-flow figure's lowest value: far below FADED, the curves are gone
FADED = 1e-3  # the gradient has faded at d once ‖∂L_T/∂h_{T−d}‖ < FADED · ‖∂L_T/∂h_{T−1}‖
FIXED = ("task.name", "task.length", "seed")  # what a group's runs may differ in


@dataclass
class TaskHorizon:
    """One task's numbers: a row per (group, T) and a horizon per group."""

    task: str
    metric: str  # the objective metric shown, e.g. val/mse
    solved: tuple[str, float]  # (metric, threshold): the task's criterion
    rows: pd.DataFrame  # group, T, runs, solved, metric_mean/std, ..., iters_mean/std, baseline
    horizons: dict[str, float | None]  # group -> largest T solved by SOLVED_SHARE of its seeds
    beaten: dict[str, float | None]  # group -> largest T where as many beat the baseline
    lags: dict[str, int | None]  # group -> the task's lag at its horizon (TASKS[task].lag)
    longest: dict[str, int]  # group -> the largest T it ran
    grad: dict[str, np.ndarray] = field(default_factory=dict)  # group -> (d, ratio) (2, W)
    faded: dict[str, int | None] = field(default_factory=dict)  # group -> d where ratio < FADED
    grad_last: dict[str, np.ndarray] = field(default_factory=dict)  # the same, last evaluation
    faded_last: dict[str, int | None] = field(default_factory=dict)


@dataclass
class MemorySection:
    tasks: list[TaskHorizon] = field(default_factory=list)
    figures: list[FigureFile] = field(default_factory=list)


def needed(share: float, n: int) -> int:
    """Seeds of n that must solve a T for the group to count it solved (2 of 3)."""
    return max(1, math.ceil(share * n - 1e-9))


def group_keys(sel: Selection, t: Tables, task: str) -> list[str]:
    """The cell, then the swept keys that vary between the runs of ``task`` besides the length
    and the seed: a key that varies only because the task does (task.loss) does not split a
    task's runs."""
    params = [sel.params(r) for r in sel.runs]
    mine = [p for p in params if p.get("task.name") == task]
    varying = [k for k in t.swept if k not in (*FIXED, "cell")
               and len({repr(p.get(k)) for p in mine}) > 1]  # fmt: skip
    return ["cell", *varying]


def group_label(params: dict, keys: list[str]) -> str:
    if len(keys) == 1:
        return str(params.get(keys[0]))
    return " ".join(f"{k.split('.')[-1]}={params.get(k)}" for k in keys)


def collect(sel: Selection, t: Tables) -> pd.DataFrame:
    """One row per run of a task with a solved criterion: its group, T, seed, final metrics."""
    rows, keys = [], {}
    for run in sel.runs:
        p = sel.params(run)
        task = p.get("task.name") or run.data.tags.get("rnnlab.task", "")
        judged = TASKS[task].JUDGED if task in TASKS else None
        if judged is None or judged.solved is None or p.get("task.length") is None:
            continue
        if task not in keys:
            keys[task] = group_keys(sel, t, task)
        m = run.data.metrics
        metric, solved = judged.default, judged.solved[0]
        rows.append({
            "task": task,
            "group": group_label(p, keys[task]),
            "T": int(p["task.length"]),
            "seed": p.get("seed"),
            "run_id": run.info.run_id,
            "status": run.info.status,
            # a run stopped as diverged did not solve: counted, its metrics are not averaged
            "diverged": run.info.status == "FAILED"
            and run.data.tags.get("error", "").startswith("DivergenceError"),
            "metric": m.get(f"final/{metric_key(metric)}", math.nan),
            "solved_metric": m.get(f"final/{metric_key(solved)}", math.nan),
            "baseline": m.get(f"final/{metric_key(metric)}_baseline", math.nan),
            "solved": "iters_to_solve" in m,
            "beat": m.get(f"final/{metric_key(metric)}", math.inf)
            <= BEATEN * m.get(f"final/{metric_key(metric)}_baseline", -math.inf),
            "iters": m.get("iters_to_solve", math.nan),
        })  # fmt: skip
    return pd.DataFrame(rows)


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (group, T): runs, solved, diverged, mean/std of the metrics (over the runs
    that logged them: not the diverged) and iterations to solve."""
    out = []
    for (group, T), g in runs.groupby(["group", "T"], sort=True):
        out.append({
            "group": group, "T": T, "runs": len(g), "solved": int(g["solved"].sum()),
            "diverged": int(g["diverged"].sum()),
            "beat": int(g["beat"].sum()),
            "metric_mean": g["metric"].mean(), "metric_std": g["metric"].std(ddof=1),
            "solved_metric_mean": g["solved_metric"].mean(),
            "solved_metric_std": g["solved_metric"].std(ddof=1),
            "iters_mean": g["iters"].mean(), "iters_std": g["iters"].std(ddof=1),
            "baseline": g["baseline"].mean(),
        })  # fmt: skip
    return pd.DataFrame(out)


def horizon_of(rows: pd.DataFrame, column: str = "solved") -> float | None:
    """The largest T that at least SOLVED_SHARE of the seeds solved (``column="beat"``: beat
    the baseline) (None: none did)."""
    ok = rows[rows[column] >= rows["runs"].map(lambda n: needed(SOLVED_SHARE, n))]
    return float(ok["T"].max()) if not ok.empty else None


def lag_at(task: str, params: dict, T: float | None) -> int | None:
    """The task's lag (``TASKS[task].lag``) at length T, its other keys as in ``params``."""
    if T is None or not hasattr(TASKS[task], "lag"):
        return None
    cfg = from_flat({k: v for k, v in params.items() if k.startswith("task.")})
    cfg.task.length = int(T)
    return int(TASKS[task].lag(cfg))


def flow_curve(sel: Selection, run_ids: list[str], last: bool = False) -> np.ndarray | None:
    """(d, ratio) (2, W): the top layer's gradient flow at the first (``last``: the last)
    evaluation, each run's
    normalised by its d = 1 value, geometric mean over the runs (curves that underflow to 0
    are left out at those d). For the LSTM the curve of its cell state c, where it keeps its
    memory (‖∂L_T/∂c_(T−d)‖, through h and c); every other cell's h."""
    logs = []
    for rid in run_ids:
        flows = grad_flow_layers(sel, rid)
        layers = flows["c"] or flows["h"]
        if not layers or not layers[-1]:
            continue
        pick = max if last else min
        points = layers[-1][pick(layers[-1])]  # {iteration: [(d, g)]}: the first or last one
        d = np.array([p[0] for p in points])
        g = np.array([p[1] for p in points], dtype=np.float64)
        if g[0] <= 0:
            continue
        with np.errstate(divide="ignore"):
            logs.append((d, np.log10(g / g[0])))
    if not logs:
        return None
    width = min(len(d) for d, _ in logs)
    stack = np.array([lg[:width] for _, lg in logs])
    stack[~np.isfinite(stack)] = np.nan
    with np.errstate(all="ignore"):
        mean = np.nanmean(stack, axis=0) if np.isfinite(stack).any() else stack[0]
    return np.stack([logs[0][0][:width].astype(np.float64), 10.0**mean])


def faded_at(curve: np.ndarray | None) -> int | None:
    """The first d where the normalised gradient falls below FADED (None: never in the window)."""
    if curve is None:
        return None
    below = np.flatnonzero(~(curve[1] >= FADED))  # NaN (underflow) counts as faded
    return int(curve[0, below[0]]) if below.size else None


def build(sel: Selection, t: Tables, out_dir: Path) -> MemorySection | None:
    """The section (figures written to ``out_dir``, the table to ``horizon.csv``), or None when
    no task with a solved criterion ran at two lengths or more."""
    runs = collect(sel, t)
    if runs.empty:
        return None
    section = MemorySection()
    order = sorted(runs["group"].unique(), key=_order)
    colours = {g: CMAP(i / max(len(order) - 1, 1)) for i, g in enumerate(order)}
    tables = []
    for task in sorted(runs["task"].unique(), key=list(TASKS).index):
        mine = runs[runs["task"] == task]
        if mine["T"].nunique() < 2:
            continue
        judged = TASKS[task].JUDGED
        rows = summarise(mine)
        th = TaskHorizon(task, judged.default, judged.solved, rows, {}, {}, {}, {})
        some_run = sel.params(next(r for r in sel.runs if r.info.run_id == mine["run_id"].iloc[0]))
        for group, g in rows.groupby("group"):
            th.horizons[group] = horizon_of(g)
            th.beaten[group] = horizon_of(g, "beat")
            th.lags[group] = lag_at(task, some_run, th.horizons[group])
            th.longest[group] = int(g["T"].max())
            at_longest = mine[(mine["group"] == group) & (mine["T"] == th.longest[group])]
            ids = list(at_longest["run_id"])
            th.grad[group], th.grad_last[group] = flow_curve(sel, ids), flow_curve(sel, ids, True)
            th.faded[group] = faded_at(th.grad[group])
            th.faded_last[group] = faded_at(th.grad_last[group])
        section.tasks.append(th)
        rows = rows.assign(task=task, horizon=rows["group"].map(th.horizons),
                           beats_baseline_up_to=rows["group"].map(th.beaten),
                           gradient_faded_at=rows["group"].map(th.faded),
                           gradient_faded_at_last=rows["group"].map(th.faded_last))  # fmt: skip
        tables.append(rows)
        add = _adder(section, out_dir)
        add(_metric_figure(th, colours), f"horizon_{task}.png",
            f"Memory horizon: {task}, final {th.metric} and {th.solved[0]} against T",
            f"Mean ± std over seeds per T; left: final {th.metric} with the task's baseline "
            f"(dashed, as the runs logged it); right: final {th.solved[0]} with the solved "
            f"threshold {th.solved[1]:g} (dashed). The horizon is the largest T that "
            f"{needed(SOLVED_SHARE, 3)} of 3 seeds solved.")  # fmt: skip
        add(_iters_figure(th, colours), f"horizon_iters_{task}.png",
            f"Memory horizon: {task}, iterations to solve against T",
            "Mean ± std over the seeds that met the solved criterion (k/n: how many did); "
            "a T no seed solved has no point.")  # fmt: skip
        if any(c is not None for c in th.grad.values()):
            add(_grad_figure(th, colours), f"horizon_grad_flow_{task}.png",
                f"Memory horizon: {task}, gradient flow at the first and last evaluation",
                "‖∂L_T/∂h_(T−d)‖ / ‖∂L_T/∂h_(T−1)‖ (the LSTM: its cell state c) of each group's "
                "runs at its longest T (geometric mean over seeds): solid at the first "
                "evaluation, dashed at the last (a run stopped once solved: where it solved); "
                "dotted verticals: the lag "
                "at each group's horizon (how far back an input decides the last target there); "
                f"grey: {FADED:g}, where the gradient counts as faded."
                )  # fmt: skip
    if not section.tasks:
        return None
    files.write_text(out_dir / "horizon.csv", pd.concat(tables).to_csv(index=False))
    return section


def _adder(section: MemorySection, out_dir: Path):
    def add(fig: Figure, name: str, title: str, caption: str) -> None:
        section.figures.append(FigureFile(name, title, caption, _save(fig, out_dir, name)))

    return add


def _log_x(ax, Ts) -> None:
    ax.set_xscale("log")
    ax.set_xticks(Ts, [f"{T:g}" for T in Ts])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("T (task.length)")
    ax.grid(alpha=0.3)


def _metric_figure(th: TaskHorizon, colours: dict) -> Figure:
    fig = Figure(figsize=(10, 3.8))
    left, right = fig.subplots(1, 2)
    Ts = sorted(th.rows["T"].unique())
    for group, g in th.rows.groupby("group"):
        g = g.sort_values("T")
        c = colours[group]
        left.errorbar(g["T"], g["metric_mean"], yerr=g["metric_std"].fillna(0), marker="o", ms=4,
                      capsize=3, color=c, label=group)  # fmt: skip
        right.errorbar(g["T"], g["solved_metric_mean"], yerr=g["solved_metric_std"].fillna(0),
                       marker="o", ms=4, capsize=3, color=c, label=group)  # fmt: skip
    base = th.rows.groupby("T")["baseline"].mean().reindex(Ts)
    if base.notna().any():
        left.plot(Ts, base.to_numpy(), "k--", lw=1.2, label="baseline")
    right.axhline(th.solved[1], color="k", ls="--", lw=1.2, label="solved")
    values = pd.concat([th.rows["metric_mean"], base]).dropna()
    if (values > 0).all() and values.max() / values.min() > 10:  # a log axis over decades
        left.set_yscale("log")
        left.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        left.yaxis.set_minor_formatter(NullFormatter())
    for ax, name in ((left, th.metric), (right, th.solved[0])):
        _log_x(ax, Ts)
        ax.set_ylabel(f"final {name}")
    left.legend(fontsize=7, framealpha=0.8)
    return fig


def _iters_figure(th: TaskHorizon, colours: dict) -> Figure:
    fig = Figure(figsize=(7, 3.8))
    ax = fig.add_subplot()
    Ts = sorted(th.rows["T"].unique())
    for group, g in th.rows.groupby("group"):
        g = g[g["solved"] > 0].sort_values("T")
        if g.empty:
            continue
        ax.errorbar(g["T"], g["iters_mean"], yerr=g["iters_std"].fillna(0), marker="o", ms=4,
                    capsize=3, color=colours[group], label=group)  # fmt: skip
        for _, r in g.iterrows():
            ax.annotate(f"{r['solved']}/{r['runs']}", (r["T"], r["iters_mean"]), fontsize=6,
                        textcoords="offset points", xytext=(3, 3))  # fmt: skip
    _log_x(ax, Ts)
    ax.set_ylabel("iterations to solve")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, framealpha=0.8)
    return fig


def _grad_figure(th: TaskHorizon, colours: dict) -> Figure:
    fig = Figure(figsize=(7, 3.8))
    ax = fig.add_subplot()
    for group, curve in th.grad.items():
        c = colours[group]
        for k, (points, style) in enumerate(((curve, "-"), (th.grad_last.get(group), "--"))):
            if points is None:
                continue
            ok = np.isfinite(points[1]) & (points[1] > 0)
            name = f"{group} (T = {th.longest[group]})" if k == 0 else None
            ax.plot(points[0, ok], points[1, ok], color=c, lw=1.3, ls=style, label=name)
        if th.lags.get(group):
            ax.axvline(th.lags[group], color=c, ls=":", lw=1.4)
    ax.axhline(FADED, color="0.6", lw=0.8)
    ax.plot([], [], color="0.3", ls="-", label="first evaluation")
    ax.plot([], [], color="0.3", ls="--", label="last evaluation")
    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    ax.set_ylim(max(lo, FLOOR), max(hi, 2.0))  # below FLOOR every curve is simply gone
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0e}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("steps back from the loss, d")
    ax.set_ylabel("‖∂L_T/∂h_(T−d)‖ (LSTM: c) ÷ value at d = 1")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, framealpha=0.8)
    return fig


# --- tables -----------------------------------------------------------------------------------


def _pm(mean: float, std: float, fmt: str) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return fmt.format(mean)
    return f"{fmt.format(mean)} ± {fmt.format(std)}"


def horizon_text(th: TaskHorizon, group: str, h: float | None = None) -> str:
    h = th.horizons.get(group) if h is None else h
    if h is None:
        return f"none (shortest tried: {th.rows['T'].min():g})"
    return f"≥ {h:g} (the longest tried)" if h >= th.longest[group] else f"{h:g}"


def tables(th: TaskHorizon) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, headers, rows) of the task's three tables: the horizon with the gradient beside
    it, the final metric per T (k/n solved), the iterations to solve per T."""
    Ts = sorted(th.rows["T"].unique())
    groups = sorted(th.horizons, key=_order)
    metric_fmt = "{:.4f}" if th.metric.endswith("mse") else "{:.3f}"
    out = []
    head = ["group", "horizon T (solved)", f"beats the baseline (≤ {BEATEN:g}×) up to T",
            "lag d at the horizon", "gradient left at d (÷ d = 1; LSTM: c), first → last "
            "evaluation", f"d where it falls below {FADED:g}, first → last"]  # fmt: skip
    rows = []

    def left_at(curve, lag) -> str:
        if curve is None or lag is None or lag > curve[0, -1]:
            return "–"
        return f"{curve[1, int(np.searchsorted(curve[0], lag))]:.1e}"

    def fades(curve, d) -> str:
        return str(d) if d else f"beyond {int(curve[0, -1])}" if curve is not None else "–"

    for g in groups:
        first, last, lag = th.grad.get(g), th.grad_last.get(g), th.lags.get(g)
        beat = horizon_text(th, g, th.beaten.get(g)) if th.beaten.get(g) else "none"
        fade = f"{fades(first, th.faded.get(g))} → {fades(last, th.faded_last.get(g))}"
        rows.append([g, horizon_text(th, g), beat, str(lag) if lag else "–",
                     f"{left_at(first, lag)} → {left_at(last, lag)}", fade])  # fmt: skip
    out.append((f"{th.task}: horizon and gradient", head, rows))
    head = ["group", *[f"T={T:g}" for T in Ts]]
    rows = []
    for g in groups:
        cells = []
        for T in Ts:
            r = th.rows[(th.rows["group"] == g) & (th.rows["T"] == T)]
            if r.empty:
                cells.append("")
                continue
            r = r.iloc[0]
            diverged = f", {r['diverged']} diverged" if r["diverged"] else ""
            cells.append(f"{_pm(r['metric_mean'], r['metric_std'], metric_fmt)} "
                         f"({r['solved']}/{r['runs']}{diverged})")  # fmt: skip
        rows.append([g, *cells])
    out.append((f"{th.task}: final {th.metric}, mean ± std over the seeds that did not diverge "
                f"(seeds solved / seeds)", head, rows))  # fmt: skip
    rows = []
    for g in groups:
        cells = []
        for T in Ts:
            r = th.rows[(th.rows["group"] == g) & (th.rows["T"] == T)]
            if r.empty or r.iloc[0]["solved"] == 0:
                cells.append("–")
                continue
            r = r.iloc[0]
            cells.append(f"{_pm(r['iters_mean'], r['iters_std'], '{:,.0f}')} ({r['solved']})")
        rows.append([g, *cells])
    out.append((f"{th.task}: iterations to solve, mean ± std (seeds that solved)", head, rows))
    return out


def note(th: TaskHorizon) -> str:
    name, threshold = th.solved
    return (f"Solved: {name} ≥ {threshold:g} at some evaluation. Horizon: the largest T solved "
            f"by at least {needed(SOLVED_SHARE, 3)} of 3 seeds (two thirds of any other count); "
            f"the same rule for beating the baseline (final {th.metric} ≤ {BEATEN:g} × "
            f"{th.metric}_baseline, as the runs logged it). Lag: how far back an input decides "
            "the last step's target at the horizon.")  # fmt: skip


def to_html(s: MemorySection | None, figure_html, html_table) -> str:
    if s is None:
        return ""
    e = html.escape
    parts = ["<h2>Memory horizon</h2>"]
    for th in s.tasks:
        parts.append(f"<p><small>{e(note(th))}</small></p>")
        for title, head, rows in tables(th):
            parts.append(f"<h3>{e(title)}</h3>")
            parts.append(html_table(head, rows))
    parts += [figure_html(f) for f in s.figures]
    return "\n".join(parts)


def to_markdown(s: MemorySection | None, md_figure, md_table) -> list[str]:
    if s is None:
        return []
    out = ["## Memory horizon", ""]
    for th in s.tasks:
        out += [f"*{note(th)}*", ""]
        for title, head, rows in tables(th):
            out += [f"### {title}", "", md_table(head, rows), ""]
    out += [line for f in s.figures for line in md_figure(f)]
    return out
