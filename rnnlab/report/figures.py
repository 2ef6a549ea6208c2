"""matplotlib figures of a selection, written as small PNGs.

Uses ``matplotlib.figure.Figure`` directly (the Agg canvas, no pyplot state), so it runs
headless, in threads and inside Hydra callbacks. Colour always encodes the first swept
hyperparameter and line style the second, with one legend entry per value, not per run.
A search's figures (``search_figures``) instead colour trials by their Optuna state.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot; the report never opens a window
# Labels carry swept values verbatim (prime='$\x$'): never parse them as mathtext.
matplotlib.rcParams["text.parse_math"] = False

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import ListedColormap, Normalize  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from rnnlab import files  # noqa: E402
from rnnlab.report.select import Selection  # noqa: E402
from rnnlab.report.tables import Tables  # noqa: E402
from rnnlab.tasks import TASKS  # noqa: E402

DPI = 120  # a 7-inch figure is 840 px wide: readable without zooming
# viridis without its last fifth: the yellow-green end is too faint on white for a line or a cell
CMAP = ListedColormap(matplotlib.colormaps["viridis"](np.linspace(0.0, 0.8, 256)), "rnnlab")
CMAP_R = CMAP.reversed()
STYLES = ("-", "--", ":", "-.")
SHORT = {"hidden_size": "H", "learning_rate": "lr", "seq_length": "T", "batch_size": "B"}
# How each Optuna trial state is drawn; FAIL and RUNNING trials have no value.
STATES = {
    "COMPLETE": {"color": "tab:blue", "marker": "o"},
    "PRUNED": {"color": "tab:orange", "marker": "X"},
    "FAIL": {"color": "tab:red", "marker": "v"},
    "RUNNING": {"color": "0.5", "marker": "s"},
}
VAL_CURVES = {
    "charrnn": ("val/loss", "val/loss (nats/char)"),
    "adder": ("val/exact_acc", "val/exact_acc"),
    "adding": ("val/mse", "val/mse"),
    "copy": ("val/loss", "val/loss (nats/step)"),
    "digits": ("val/acc", "val/acc"),
}


@dataclass
class FigureFile:
    name: str  # file name, e.g. "smooth_loss.png"
    title: str
    caption: str
    path: Path


def label(key: str, task: str = "") -> str:
    return "seq_length (bits)" if key == "seq_length" and task == "adder" else key


def run_label(row: pd.Series, swept: list[str]) -> str:
    parts = [f"{SHORT.get(k, k.split('.')[-1])}={row[k]}" for k in swept]
    return " ".join(parts + [f"seed={row['seed']}"])


class Styler:
    """Colour by the first swept parameter's value, line style by the second's; the seed takes
    the first free one of the two, so the runs of one configuration stay apart in the legend."""

    def __init__(self, runs: pd.DataFrame, swept: list[str]):
        self.keys = swept[:2]
        if len(self.keys) < 2 and "seed" in runs and runs["seed"].nunique() > 1:
            self.keys.append("seed")
        self.values = [sorted(runs[k].dropna().unique(), key=_order) for k in self.keys]
        n = len(self.values[0]) if self.keys else 1
        cmap = CMAP
        self.colours = [cmap(i / max(n - 1, 1)) for i in range(n)]

    def style(self, row: pd.Series) -> dict:
        out: dict = {"color": self.colours[0]}
        if self.keys and row[self.keys[0]] in self.values[0]:
            out["color"] = self.colours[self.values[0].index(row[self.keys[0]])]
        if len(self.keys) > 1 and row[self.keys[1]] in self.values[1]:
            out["linestyle"] = STYLES[self.values[1].index(row[self.keys[1]]) % len(STYLES)]
        return out

    def legend(self, ax, task: str) -> None:
        handles = []
        if self.keys:
            handles += [
                Line2D([], [], color=c, label=f"{label(self.keys[0], task)}={v}")
                for v, c in zip(self.values[0], self.colours, strict=True)
            ]
        if len(self.keys) > 1:
            handles += [
                Line2D([], [], color="0.3", linestyle=STYLES[i % len(STYLES)],
                       label=f"{label(self.keys[1], task)}={v}")
                for i, v in enumerate(self.values[1])
            ]  # fmt: skip
        if handles:
            ax.legend(handles=handles, fontsize=7, ncol=1 + len(handles) // 9, framealpha=0.8)


def _order(v):
    return (0, v, "") if isinstance(v, int | float | np.number) else (1, 0, str(v))


def _save(fig: Figure, out_dir: Path, name: str) -> Path:
    path = out_dir / name
    with warnings.catch_warnings():  # a crowded figure keeps its layout; no line for the user
        warnings.filterwarnings("ignore", "Tight layout not applied", UserWarning)
        fig.tight_layout()
    with files.atomic_file(path) as f:  # a kill mid-write leaves the earlier figure whole
        fig.savefig(f, dpi=DPI, format=path.suffix.lstrip(".") or "png")
    return path


def curves(sel: Selection, t: Tables, key: str, ylabel: str, task: str, log_y: bool) -> Figure:
    """Every run's history of ``key`` on one axes."""
    fig = Figure(figsize=(8.5, 4.6))
    ax = fig.add_subplot()
    styler = Styler(t.runs, t.swept)
    lo, hi = math.inf, -math.inf
    for _, row in t.runs[t.runs["task"] == task].iterrows():
        points = sel.history(row["run_id"], key)
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, lw=1.1, alpha=0.85, **styler.style(row))
            lo, hi = min(lo, *values), max(hi, *values)
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    if log_y and lo > 0 and hi / lo > 3:  # a log axis only pays off over a wide range
        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
    ax.grid(alpha=0.3)
    styler.legend(ax, task)
    return fig


def metric_vs_param(runs: pd.DataFrame, swept: list[str], column: str, ylabel: str, task: str):
    """``column`` (mean ± std over runs) against each swept param, one line per value of
    another swept param."""
    fig = Figure(figsize=(3.6 * len(swept), 3.4))
    axes = fig.subplots(1, len(swept), squeeze=False)[0]
    cmap = CMAP
    for ax, p in zip(axes, swept, strict=True):
        other = next((k for k in swept if k != p), None)
        xs_all = sorted(runs[p].dropna().unique(), key=_order)
        numeric = all(isinstance(x, int | float | np.number) for x in xs_all)
        groups = [(None, runs)] if other is None else list(runs.groupby(other, sort=True))
        for i, (ov, g) in enumerate(groups):
            stats = g.groupby(p)[column].agg(["mean", "std", "count"]).reindex(xs_all)
            xs = xs_all if numeric else list(range(len(xs_all)))
            colour = cmap(i / max(len(groups) - 1, 1))
            name = f"{label(other, task)}={ov}" if other else None
            ax.errorbar(xs, stats["mean"], yerr=stats["std"].fillna(0), marker="o", ms=4,
                        capsize=3, color=colour, label=name)  # fmt: skip
        if numeric and min(xs_all) > 0 and max(xs_all) / min(xs_all) >= 8:
            ax.set_xscale("log")
        if numeric:
            ax.set_xticks(xs_all, [f"{x:g}" for x in xs_all])
            ax.minorticks_off()
        else:
            ax.set_xticks(range(len(xs_all)), [str(x) for x in xs_all])
        ax.set_xlabel(label(p, task))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if other:
            ax.legend(fontsize=7)
    return fig


def heatmap(runs: pd.DataFrame, rows: str, cols: str, column: str, title: str, task: str,
            higher_better: bool) -> Figure:  # fmt: skip
    """Mean of ``column`` over seeds for each (rows, cols) cell, annotated."""
    rv = sorted(runs[rows].dropna().unique(), key=_order)
    cv = sorted(runs[cols].dropna().unique(), key=_order)
    cell = runs.groupby([rows, cols])[column]
    mean, count, size = cell.mean(), cell.count(), cell.size()
    grid = np.full((len(rv), len(cv)), np.nan)
    for (r, c), v in mean.items():
        grid[rv.index(r), cv.index(c)] = v
    fig = Figure(figsize=(1.2 * len(cv) + 2.4, 0.7 * len(rv) + 1.6))
    ax = fig.add_subplot()
    cmap = CMAP if higher_better else CMAP_R
    im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, aspect="auto")
    finite = grid[np.isfinite(grid)]
    lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    for i, r in enumerate(rv):
        for j, c in enumerate(cv):
            v = grid[i, j]
            n, total = count.get((r, c), 0), size.get((r, c), 0)
            text = "–" if math.isnan(v) else (f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}")
            if n != total:
                text += f"\n({n}/{total})"
            bright = not math.isnan(v) and hi > lo and (v - lo) / (hi - lo) > 0.5
            bright = bright if higher_better else not bright
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="black" if bright else "white")  # fmt: skip
    ax.set_xticks(range(len(cv)), [f"{c:g}" if isinstance(c, float) else str(c) for c in cv])
    ax.set_yticks(range(len(rv)), [f"{r:g}" if isinstance(r, float) else str(r) for r in rv])
    ax.set_xlabel(label(cols, task))
    ax.set_ylabel(label(rows, task))
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def throughput(sel: Selection, t: Tables) -> Figure:
    """chars/s per run; a run without ``final/chars_per_sec`` shows its mean logged
    ``perf/chars_per_sec`` (hatched)."""
    runs = t.runs
    fig = Figure(figsize=(7, 0.22 * len(runs) + 1.2))
    ax = fig.add_subplot()
    styler = Styler(runs, t.swept)
    for i, (_, row) in enumerate(runs.iterrows()):
        v, hatch = row["chars_per_sec"], None
        if math.isnan(v):
            perf = [x for _, x in sel.history(row["run_id"], "perf/chars_per_sec")]
            v, hatch = (float(np.mean(perf)) if perf else 0.0), "///"
        ax.barh(i, v, color=styler.style(row)["color"], hatch=hatch, edgecolor="0.2", lw=0.3)
    ax.set_yticks(range(len(runs)), [run_label(r, t.swept) for _, r in runs.iterrows()],
                  fontsize=7)  # fmt: skip
    ax.invert_yaxis()  # rank 1 at the top
    ax.set_xlabel("chars/s (adder: bits/s; adding, copy, digits: steps/s)")
    ax.grid(axis="x", alpha=0.3)
    return fig


def _state_points(ax, x, trials: pd.DataFrame, legend: bool = True) -> None:
    """Each trial's value at ``x`` as a point styled by its state; trials without a value
    (FAIL, RUNNING) as markers along the top edge."""
    top = blended_transform_factory(ax.transData, ax.transAxes)
    for state, style in STATES.items():
        mask = (trials["state"] == state).to_numpy()
        if not mask.any():
            continue
        has = mask & trials["value"].notna().to_numpy()
        name = f"{state} ({int(mask.sum())})" if legend else None
        if has.any():
            ax.scatter(np.asarray(x)[has], trials["value"][has], s=30, zorder=3, label=name,
                       **style)  # fmt: skip
            name = None
        if (none := mask & ~has).any():
            ax.scatter(np.asarray(x)[none], np.full(none.sum(), 0.97), transform=top, s=30,
                       zorder=3, clip_on=False, label=name, **style)  # fmt: skip


def best_so_far(trials: pd.DataFrame, ylabel: str) -> Figure:
    """Objective per trial number (points by state) and the running best of COMPLETE trials."""
    fig = Figure(figsize=(7, 3.6))
    ax = fig.add_subplot()
    ax.step(trials["trial"], trials["best_so_far"], where="post", color="black", lw=1.4,
            label="best so far (COMPLETE)")  # fmt: skip
    _state_points(ax, trials["trial"], trials)
    ax.set_xlabel("trial")
    ax.set_ylabel(ylabel)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, framealpha=0.8)
    return fig


def intermediate_curves(trials: pd.DataFrame, ylabel: str) -> Figure:
    """The objective each trial reported at every val/* point: what the pruner compared.
    Colour: trial number; solid COMPLETE, dashed PRUNED (an X where it stopped), dotted FAIL."""
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    norm = Normalize(trials["trial"].min(), max(trials["trial"].max(), trials["trial"].min() + 1))
    cmap = CMAP
    dashes = {"COMPLETE": "-", "PRUNED": "--"}
    for _, row in trials.iterrows():
        if not row["intermediate"]:
            continue
        steps, values = zip(*row["intermediate"], strict=True)
        colour = cmap(norm(row["trial"]))
        ax.plot(steps, values, color=colour, lw=1.1, alpha=0.85,
                linestyle=dashes.get(row["state"], ":"))  # fmt: skip
        if row["state"] == "PRUNED":
            ax.plot(steps[-1], values[-1], color=colour, ms=8, mec="black", mew=0.6,
                    marker=STATES["PRUNED"]["marker"])  # fmt: skip
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    handles = [Line2D([], [], color="0.3", linestyle="-", label="COMPLETE"),
               Line2D([], [], color="0.3", linestyle="--", marker="X", mec="black",
                      label="PRUNED (X: pruned here)"),
               Line2D([], [], color="0.3", linestyle=":", label="FAIL / RUNNING")]  # fmt: skip
    ax.legend(handles=handles, fontsize=7, framealpha=0.8)
    fig.colorbar(ScalarMappable(norm, cmap), ax=ax, label="trial", shrink=0.85)
    return fig


def objective_vs_params(trials: pd.DataFrame, keys: list[str], ylabel: str, task: str):
    """One panel per searched key: each trial's objective against the value it drew (log axis
    for a wide positive range; categories at evenly spaced positions)."""
    fig = Figure(figsize=(3.6 * len(keys), 3.4))
    axes = fig.subplots(1, len(keys), squeeze=False, sharey=True)[0]
    for i, (ax, key) in enumerate(zip(axes, keys, strict=True)):
        col = trials[f"param.{key}"]
        if pd.api.types.is_numeric_dtype(col):
            x = col.to_numpy(dtype=float)
            finite = x[np.isfinite(x)]
            if finite.size and finite.min() > 0 and finite.max() / finite.min() >= 8:
                ax.set_xscale("log")
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
            values = np.unique(finite)
            if len(values) <= 8 and np.all(values == np.round(values)):  # e.g. choice(8, 16)
                ax.set_xticks(values, [f"{v:g}" for v in values])
                ax.minorticks_off()
        else:
            cats = sorted(col.dropna().unique(), key=_order)
            x = np.array([cats.index(v) if v in cats else np.nan for v in col], dtype=float)
            ax.set_xticks(range(len(cats)), [str(c) for c in cats])
        _state_points(ax, x, trials, legend=i == 0)
        ax.set_xlabel(label(key, task))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(ylabel)
    axes[0].legend(fontsize=7, framealpha=0.8)
    return fig


def _unit_scale(col: pd.Series) -> tuple[np.ndarray, list[str]]:
    """A column mapped onto [0, 1] for a parallel axis (log for a wide positive range,
    categories evenly spaced), with tick labels for its ends."""
    if pd.api.types.is_numeric_dtype(col):
        x = col.to_numpy(dtype=float)
        lo, hi = np.nanmin(x), np.nanmax(x)
        if lo > 0 and hi / lo >= 8:
            x, lo_t, hi_t = np.log(x), np.log(lo), np.log(hi)
        else:
            lo_t, hi_t = lo, hi
        span = hi_t - lo_t if hi_t > lo_t else 1.0
        return (x - lo_t) / span, [f"{lo:g}", f"{hi:g}"]
    cats = sorted(col.dropna().unique(), key=_order)
    x = np.array([cats.index(v) if v in cats else np.nan for v in col], dtype=float)
    return x / max(len(cats) - 1, 1), [str(cats[0]), str(cats[-1])]


def parallel_coordinates(trials: pd.DataFrame, keys: list[str], ylabel: str, task: str):
    """One line per trial across the searched parameters and the objective, coloured by the
    objective (darker is better); pruned trials dashed, trials without a value left out."""
    done = trials[trials["value"].notna()].reset_index(drop=True)
    columns = [f"param.{k}" for k in keys] + ["value"]
    scaled = [_unit_scale(done[c]) for c in columns]
    norm = Normalize(done["value"].min(), max(done["value"].max(), done["value"].min() + 1e-9))
    cmap = CMAP  # low objective (better) = dark
    fig = Figure(figsize=(1.9 * len(columns) + 1.5, 3.8))
    ax = fig.add_subplot()
    xs = np.arange(len(columns))
    for i, row in done.iterrows():
        ys = [s[0][i] for s in scaled]
        ax.plot(xs, ys, color=cmap(norm(row["value"])), lw=1.2, alpha=0.85,
                linestyle="--" if row["state"] == "PRUNED" else "-")  # fmt: skip
    for x, (_, ends) in zip(xs, scaled, strict=True):
        ax.axvline(x, color="0.4", lw=0.8)
        ax.text(x, -0.06, ends[0], ha="center", va="top", fontsize=7)
        ax.text(x, 1.06, ends[1], ha="center", va="bottom", fontsize=7)
    ax.set_xticks(xs, [label(k, task) for k in keys] + [ylabel], fontsize=8)
    ax.tick_params(axis="x", pad=14)
    ax.set_yticks([])
    ax.set_ylim(-0.15, 1.15)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    fig.colorbar(ScalarMappable(norm, cmap), ax=ax, label=ylabel, shrink=0.85)
    return fig


def search_figures(trials: pd.DataFrame, keys: list[str], task: str, out_dir: Path):
    """The figures of an Optuna search (``rnnlab.sweeps.search.search_trials``'s table)."""
    judged = TASKS[task].JUDGED if task in TASKS else None  # what the search minimised
    name = trials.attrs.get("objective")
    ylabel = judged.label(name or judged.default) if judged else "objective"
    out: list[FigureFile] = []

    def add(fig: Figure, name: str, title: str, caption: str) -> None:
        out.append(FigureFile(name, title, caption, _save(fig, out_dir, name)))

    pruned = "a pruned trial's value is the last one it reported before it was stopped"
    add(best_so_far(trials, ylabel), "search_best_so_far.png", "Search: best so far",
        f"Objective of every trial in trial order, by state ({pruned}; FAIL along the top "
        "edge), and the best COMPLETE objective so far.")  # fmt: skip
    if trials["intermediate"].map(len).any():
        add(intermediate_curves(trials, ylabel), "search_intermediate.png",
            "Search: intermediate values",
            "The objective each trial reported to the pruner at every evaluation; dashed "
            "lines were pruned at the X.")  # fmt: skip
    keys = [k for k in keys if f"param.{k}" in trials]
    if keys:
        add(objective_vs_params(trials, keys, ylabel, task), "search_params.png",
            "Search: objective vs each searched parameter",
            f"One point per trial at the value the sampler drew ({pruned}).")  # fmt: skip
    if len(keys) >= 2 and trials["value"].notna().sum() >= 2:
        add(parallel_coordinates(trials, keys, ylabel, task), "search_parallel.png",
            "Search: parallel coordinates",
            "Each trial with a value as one line through the values it drew and its objective "
            f"(colour: objective, darker is better; dashed: pruned — {pruned}).")  # fmt: skip
    return out


def make_figures(
    sel: Selection, t: Tables, out_dir: Path, search: bool = False
) -> list[FigureFile]:
    """Write every figure that applies to ``out_dir``; return them in report order. In a
    ``search`` the per-value grid figures are left out: sampled values rarely repeat, and
    ``search_figures`` shows the objective against each parameter instead."""
    out: list[FigureFile] = []

    def add(fig: Figure, name: str, title: str, caption: str) -> None:
        out.append(FigureFile(name, title, caption, _save(fig, out_dir, name)))

    tasks = [task for task in TASKS if (t.runs["task"] == task).any()]
    for task in tasks:
        suffix = f"_{task}" if len(tasks) > 1 else ""
        log_y = task in ("charrnn", "adding")  # losses spanning decades
        add(curves(sel, t, "train/smooth_loss", "train/smooth_loss", task, log_y),
            f"smooth_loss{suffix}.png", "Smoothed training loss",
            "train/smooth_loss of every run (EMA of the window loss, 0.999), coloured by "
            "the first swept parameter, line style by the second.")  # fmt: skip
        key, ylabel = VAL_CURVES[task]
        add(curves(sel, t, key, ylabel, task, task == "adding"), f"val{suffix}.png",
            f"Validation: {key}", f"{key} at every evaluation of every run.")  # fmt: skip
        runs = t.runs[t.runs["task"] == task]
        swept = t.swept
        if len(tasks) > 1:  # a sweep over the task: what varies among this task's runs
            swept = [p for p in swept if p != "task.name" and runs[p].nunique(dropna=True) > 1]
        for column, ylabel, higher in TASKS[task].JUDGED.headline:
            if search or not swept or runs[column].isna().all():
                continue
            add(metric_vs_param(runs, swept, column, ylabel, task),
                f"{column}_vs_params{suffix}.png", f"{ylabel} vs each swept parameter",
                "Mean over seeds, error bars one standard deviation; runs without the value "
                "(failed, or never at 100 %) are left out.")  # fmt: skip
            if len(swept) == 2:
                add(heatmap(runs, swept[0], swept[1], column, ylabel, task, higher),
                    f"{column}_heatmap{suffix}.png", f"{ylabel}: heatmap",
                    "Mean over seeds per cell; (k/n): only k of the n runs have the value.",
                )  # fmt: skip
    add(throughput(sel, t), "throughput.png", "Throughput per run",
        "final/chars_per_sec per run in rank order; hatched: the run stopped early, "
        "mean of its logged perf/chars_per_sec.")  # fmt: skip
    return out
