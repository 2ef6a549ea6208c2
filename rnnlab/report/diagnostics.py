"""The report's *Diagnostics* section and *Flags* list, from the ``diag/`` metrics runs logged.

Figures: gradient flow at each run's first and last evaluation (the ``diagnostics/`` curve
artifacts), saturation and spectral radius over training, update ratios over training — one
panel per layer when a run has several (layer k's metrics carry ``_l{k}``). Flags:
runs whose gradients explode, whose units saturate, whose zero-state and warm validation
disagree, or whose update ratio leaves ``UPDATE_RATIO_RANGE`` — each rule is one function of a
run's metric histories (``flags_of``), so it is tested without a store. Reads only the tracker.
"""

from __future__ import annotations

import csv
import html
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullFormatter
from mlflow.exceptions import MlflowException

from rnnlab.report.figures import CMAP, FigureFile, _order, _save, label, run_label
from rnnlab.report.select import Selection
from rnnlab.report.tables import Tables
from rnnlab.tasks import TASKS

SATURATION_LIMIT = 0.5  # more than half of the validation activations saturated
WARM_GAP_NATS = 0.1  # |val/loss - val/loss_warm| beyond this: the zero state misleads
WARM_GAP_SATURATION = 0.1  # or saturation from zero vs warm differing by this share
GRAD_DECAY_LIMIT = 0.0  # per-step log-rate above this: gradients grow going back in time
UPDATE_RATIO_RANGE = (1e-4, 1e-1)  # ‖Δθ‖/‖θ‖ of a weight matrix per step (biases not judged)
KEYS = ("diag/grad_decay", "diag/saturation", "diag/saturation_warm", "diag/whh_rho",
        "diag/whh_sigma_max", "val/loss", "val/loss_warm")  # fmt: skip


@dataclass
class Flag:
    run_id: str
    run: str  # label: swept params and seed
    kind: str  # exploding gradients | saturating units | zero vs warm | update ratio
    detail: str


@dataclass
class DiagnosticsSection:
    figures: list[FigureFile] = field(default_factory=list)
    flags: list[Flag] = field(default_factory=list)
    runs_with_diagnostics: int = 0


def _last(points):
    return points[-1] if points else None


def flags_of(histories: dict[str, list[tuple[int, float]]]) -> list[tuple[str, str]]:
    """(kind, detail) for every rule a run breaks, judged at its last evaluation; the gradient
    and saturation rules for every layer (layer k's metrics carry ``_l{k}``)."""
    out = []
    deep = [int(m.group(1)) for k in histories if (m := re.fullmatch(r"diag/grad_decay_l(\d+)", k))]
    layers = 1 + max(deep, default=0)
    at = [f" (layer {k})" if layers > 1 else "" for k in range(layers)]
    for k in range(layers):
        key = f"diag/grad_decay{layer_suffix(k)}"
        if (p := _last(histories.get(key, []))) and p[1] > GRAD_DECAY_LIMIT:
            out.append(("exploding gradients",
                        f"grad_decay {p[1]:+.3f}/step at iteration {p[0]:,}{at[k]}"))  # fmt: skip
    for k in range(layers):
        for key in (f"diag/saturation{layer_suffix(k)}", f"diag/saturation_warm{layer_suffix(k)}"):
            if (p := _last(histories.get(key, []))) and p[1] > SATURATION_LIMIT:
                name = key.split("/")[-1].removesuffix(layer_suffix(k))
                out.append(("saturating units", f"{name} {p[1]:.0%} at iteration {p[0]:,}{at[k]}"))
                break
    zero, warm = _last(histories.get("val/loss", [])), _last(histories.get("val/loss_warm", []))
    if zero and warm and abs(zero[1] - warm[1]) > WARM_GAP_NATS:
        out.append(("zero vs warm", f"val/loss {zero[1]:.3f} from h=0, {warm[1]:.3f} warm"))
    for k in range(layers):
        sz, sw = (
            _last(histories.get(f"diag/saturation{layer_suffix(k)}", [])),
            _last(histories.get(f"diag/saturation_warm{layer_suffix(k)}", [])),
        )
        if sz and sw and abs(sz[1] - sw[1]) > WARM_GAP_SATURATION:
            out.append(("zero vs warm",
                        f"saturation {sz[1]:.0%} from h=0, {sw[1]:.0%} warm{at[k]}"))  # fmt: skip
    lo, hi = UPDATE_RATIO_RANGE
    for key in sorted(histories):
        name = key.removeprefix("diag/update_ratio/")
        if key.startswith("diag/update_ratio/W") and (p := _last(histories[key])):
            if not lo <= p[1] <= hi:
                out.append(("update ratio", f"{name} {p[1]:.1e} at iteration {p[0]:,} "
                            f"(outside {lo:g}…{hi:g})"))  # fmt: skip
    return out


def layer_suffix(k: int) -> str:
    """Metric-name suffix of layer k (rnnlab.analysis.diagnostics.suffix): none for layer 0, else
    _l{k}."""
    return "" if k == 0 else f"_l{k}"


def layers_of(run) -> int:
    """How many layers a run logged diagnostics for (1 + the deepest k with diag/whh_rho_l{k})."""
    k = 1
    while f"diag/whh_rho_l{k}" in run.data.metrics:
        k += 1
    return k


def layer_keys(key: str, k: int) -> tuple[str, ...]:
    """The names ``key`` (a layer-0 name) has at layer k, the vanilla cell's first: a metric
    suffix, or for an update ratio the layer's own matrix (Whh_l1; a gated cell's W_hh_l1)."""
    gated = {"diag/update_ratio/Whh": "W_hh", "diag/update_ratio/Wxh": "W_ih"}
    if key in gated:
        return f"{key}{layer_suffix(k)}", f"diag/update_ratio/{gated[key]}_l{k}"
    return (f"{key}{layer_suffix(k)}",)


def _histories(sel: Selection, run) -> dict[str, list[tuple[int, float]]]:
    rid = run.info.run_id
    deeper = [f"{k}{layer_suffix(j)}" for j in range(1, layers_of(run)) for k in KEYS]
    keys = [*KEYS, *deeper, *(k for k in run.data.metrics if k.startswith("diag/update_ratio/"))]
    return {k: sel.history(rid, k) for k in keys if k in run.data.metrics}


def grad_flow_layers(sel: Selection, run_id: str) -> dict[str, list[dict]]:
    """{"h": per layer {iteration: [(steps back, ‖∂L_T/∂h‖)]}, "c": the same for the LSTM's
    cell state (empty for other cells)} for the first and last logged curve, each curve file
    read once (a column per layer and state)."""
    try:
        files = sel.client.list_artifacts(run_id, "diagnostics")
    except (MlflowException, OSError):
        return {"h": [], "c": []}
    found = {
        int(m.group(1)): f.path for f in files if (m := re.search(r"iter_(\d+)\.csv$", f.path))
    }
    out: dict[str, list[dict]] = {"h": [], "c": []}
    for it in sorted({min(found), max(found)} if found else set()):
        rows = list(csv.DictReader(io.StringIO(sel.read_text(run_id, found[it]))))
        for state, stem in (("h", "grad_norm"), ("c", "grad_norm_c")):
            k = 0
            while rows and f"{stem}{layer_suffix(k)}" in rows[0]:
                column = f"{stem}{layer_suffix(k)}"
                if k == len(out[state]):
                    out[state].append({})
                out[state][k][it] = [(int(r["steps_back"]), float(r[column])) for r in rows]
                k += 1
    return out


def grad_flow_curves(
    sel: Selection, run_id: str, layer: int = 0, state: str = "h"
) -> dict[int, list[tuple[int, float]]]:
    """{iteration: [(steps back, ‖∂L_T/∂h‖)]} of ``layer`` for the first and last logged curve
    (empty for a layer the run does not have); ``state="c"``: the LSTM's cell state."""
    layers = grad_flow_layers(sel, run_id)[state]
    return layers[layer] if layer < len(layers) else {}


class RunColours:
    """The diagnostics figures' own styling: line styles say what a curve is (first or last
    evaluation, zero or warm, ρ or σ_max, the LSTM's c), so a run's colour alone stands for its
    configuration — the combination of the first two swept values (the report's ``Styler``
    spends line style on the second, which these figures need), seeds sharing a colour."""

    def __init__(self, runs, swept: list[str], task: str):
        self.keys, self.task = list(swept[:2]), task
        combos = {tuple(row[k] for k in self.keys) for _, row in runs.iterrows()}
        order = sorted(combos, key=lambda c: tuple(_order(v) for v in c))
        self.colours = {c: CMAP(i / max(len(order) - 1, 1)) for i, c in enumerate(order)}

    def style(self, row) -> dict:
        return {"color": self.colours.get(tuple(row[k] for k in self.keys), CMAP(0.0))}

    def legend(self, ax, styles: list[tuple[str, str]]) -> None:
        """A colour per configuration, then what each line style means."""
        handles = [
            Line2D([], [], color=c, label=" ".join(
                f"{label(k, self.task)}={v}" for k, v in zip(self.keys, combo, strict=True)))
            for combo, c in self.colours.items()
        ] if self.keys else []  # fmt: skip
        handles += [Line2D([], [], color="0.3", linestyle=ls, label=text) for ls, text in styles]
        ax.legend(handles=handles, fontsize=7, ncol=1 + len(handles) // 9, framealpha=0.8)


def log_axis(ax) -> None:
    """A log y axis labelled 1e-04 … as plain text (the report turns mathtext off, which
    would leave matplotlib's log labels as raw ``$\\mathdefault{10^{-4}}$``)."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0e}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def layer_panels(layers: int) -> tuple[Figure, list]:
    """A figure with one panel per layer side by side, sharing the y axis (one panel: the
    single-layer figure as before)."""
    fig = Figure(figsize=(7 if layers == 1 else 4.6 * layers, 4))
    axes = fig.subplots(1, layers, sharey=True, squeeze=False)[0]
    return fig, list(axes)


def _title_layers(axes: list) -> None:
    """Name each panel's layer when there are several (counting from the input)."""
    if len(axes) > 1:
        for k, ax in enumerate(axes):
            top = " (top: feeds the output)" if k == len(axes) - 1 else ""
            ax.set_title(f"layer {k}{top}", fontsize=9)


def _grad_flow_figure(sel: Selection, t: Tables, runs, layers: int = 1) -> Figure:
    fig, axes = layer_panels(layers)
    styler = RunColours(runs, t.swept, str(runs["task"].iloc[0]))
    with_c = False
    for _, row in runs.iterrows():
        flows = grad_flow_layers(sel, row["run_id"])
        for ax, curves in zip(axes, flows["h"], strict=False):
            for k, (_, points) in enumerate(sorted(curves.items())):
                pos = [(d, g) for d, g in points if g > 0]
                d, g = zip(*pos, strict=True) if pos else ((), ())
                first = k == 0 and len(curves) > 1
                ax.plot(d, g, lw=1.2, alpha=0.85, **styler.style(row) | {"linestyle": ":" if first
                        else "-"})  # fmt: skip
        for ax, curves in zip(axes, flows["c"], strict=False):  # the LSTM's c, last evaluation
            if curves:
                with_c = True
                pos = [(d, g) for d, g in curves[max(curves)] if g > 0]
                d, g = zip(*pos, strict=True) if pos else ((), ())
                ax.plot(d, g, lw=1.2, alpha=0.85, **styler.style(row) | {"linestyle": "--"})
    for ax in axes:
        log_axis(ax)
        ax.set_xlabel("steps back from the loss, d")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("‖∂L_T / ∂h_(T−d)‖")
    _title_layers(axes)
    styles = [(":", "h, first evaluation"), ("-", "h, last evaluation")]
    styler.legend(axes[0], styles + ([("--", "LSTM's c, last evaluation")] if with_c else []))
    return fig


def _over_training(
    sel: Selection,
    t: Tables,
    runs,
    solid: str,
    dashed: str | None,
    ylabel: str,
    log_y: bool = False,
    band: tuple[float, float] | None = None,
    layers: int = 1,
    meaning: tuple[str, str] = ("", ""),
) -> Figure:
    """``solid`` and ``dashed`` (layer-0 metric names) over training, a panel per layer;
    ``meaning``: the legend's words for the two line styles."""
    fig, axes = layer_panels(layers)
    styler = RunColours(runs, t.swept, str(runs["task"].iloc[0]))
    for _, row in runs.iterrows():
        for layer, ax in enumerate(axes):
            for key, ls in ((solid, "-"), (dashed, "--")):
                if not key:
                    continue
                names = layer_keys(key, layer)
                points = next((p for n in names if (p := sel.history(row["run_id"], n))), [])
                if points:
                    steps, values = zip(*points, strict=True)
                    style = styler.style(row) | {"linestyle": ls}
                    ax.plot(steps, values, lw=1.2, alpha=0.85, **style)
    for ax in axes:
        if band:
            ax.axhspan(*band, color="tab:green", alpha=0.08, lw=0)
        if log_y:
            log_axis(ax)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(ylabel)
    _title_layers(axes)
    styler.legend(axes[0], [(ls, m) for ls, m in zip(("-", "--"), meaning, strict=True) if m])
    return fig


def build(sel: Selection, t: Tables, out_dir: Path) -> DiagnosticsSection:
    """Figures (written to ``out_dir``) and flags for the runs that logged ``diag/`` metrics."""
    section = DiagnosticsSection()
    by_id = {r.info.run_id: r for r in sel.runs}
    for _, row in t.runs.iterrows():
        run = by_id[row["run_id"]]
        if not any(k.startswith("diag/") for k in run.data.metrics):
            continue
        section.runs_with_diagnostics += 1
        label = run_label(row, t.swept)
        for kind, detail in flags_of(_histories(sel, run)):
            section.flags.append(Flag(row["run_id"], label, kind, detail))
    if not section.runs_with_diagnostics:
        return section

    def add(fig: Figure, name: str, title: str, caption: str) -> None:
        section.figures.append(FigureFile(name, title, caption, _save(fig, out_dir, name)))

    tasks = [task for task in TASKS if (t.runs["task"] == task).any()]
    for task in tasks:
        runs = t.runs[t.runs["task"] == task]
        s = f"_{task}" if len(tasks) > 1 else ""
        n = max(layers_of(by_id[rid]) for rid in runs["run_id"])  # a panel per layer
        per = " One panel per layer (layer 0 reads the input)." if n > 1 else ""
        add(_grad_flow_figure(sel, t, runs, n), f"diag_grad_flow{s}.png",
            "Gradient flow, first and last evaluation",
            "‖∂L_T/∂h_{T−d}‖ on the fixed probe window (L_T: the loss at its last step) against "
            "the distance d: dotted at the first evaluation, solid at the last. A falling line "
            "is a vanishing gradient; its slope is diag/grad_decay. LSTM runs: dashed, "
            "‖∂L_T/∂c_{T−d}‖ of the cell state at the last evaluation (diag/grad_decay_c)."
            f"{per}")  # fmt: skip
        add(_over_training(sel, t, runs, "diag/saturation", "diag/saturation_warm",
                           "share of activations saturated", layers=n,
                           meaning=("from h = 0", "warm")),
            f"diag_saturation{s}.png", "Saturation over training",
            "Share of (step, unit) hidden activations at |h| > 0.99 (tanh) or outside "
            "[0.01, 0.99] (sigmoid) on the validation pass: solid from h = 0, "
            f"dashed warm.{per}")  # fmt: skip
        add(_over_training(sel, t, runs, "diag/whh_rho", "diag/whh_sigma_max",
                           "spectral radius / σ_max of Whh", layers=n,
                           meaning=("spectral radius ρ", "largest singular value σ_max")),
            f"diag_spectrum{s}.png", "Recurrent spectrum over training",
            "Solid: spectral radius of Whh (largest |eigenvalue|); dashed: its largest "
            "singular value. Gated cells: the candidate's block of W_hh (GRU's n, LSTM's g)."
            f"{per}")  # fmt: skip
        add(_over_training(sel, t, runs, "diag/update_ratio/Whh", "diag/update_ratio/Wxh",
                           "update ratio ‖Δθ‖/‖θ‖", log_y=True, band=UPDATE_RATIO_RANGE,
                           layers=n, meaning=("Whh (W_hh)", "Wxh (W_ih)")),
            f"diag_update_ratio{s}.png", "Update-to-weight ratio over training",
            "One optimizer step's ‖Δθ‖/‖θ‖: solid Whh, dashed Wxh (gated cells: W_hh_l{k}, "
            "W_ih_l{k}); shaded: the "
            f"{UPDATE_RATIO_RANGE[0]:g}…{UPDATE_RATIO_RANGE[1]:g} band the flags use."
            f"{per}")  # fmt: skip
    return section


RULES = (
    f"Flagged at a run's last evaluation: exploding gradients (diag/grad_decay > "
    f"{GRAD_DECAY_LIMIT:g}), saturating units (saturation > {SATURATION_LIMIT:.0%}), zero vs "
    f"warm (|val/loss − val/loss_warm| > {WARM_GAP_NATS:g} nats or saturation differing by > "
    f"{WARM_GAP_SATURATION:.0%}), update ratio of a weight matrix outside "
    f"{UPDATE_RATIO_RANGE[0]:g}…{UPDATE_RATIO_RANGE[1]:g}."
)


def to_html(s: DiagnosticsSection, figure_html) -> str:
    """The section as HTML; ``figure_html`` renders one FigureFile (the report's own)."""
    if not s.runs_with_diagnostics:
        return ""
    e = html.escape
    parts = [f"<h2>Flags ({len(s.flags)})</h2>", f"<p><small>{e(RULES)}</small></p>"]
    if s.flags:
        rows = "".join(
            f'<tr><td class="text"><code>{e(f.run_id[:8])}</code> {e(f.run)}</td>'
            f'<td class="text">{e(f.kind)}</td><td class="text">{e(f.detail)}</td></tr>'
            for f in s.flags
        )
        parts.append('<div class="scroll"><table><thead><tr><th class="text">run</th>'
                     '<th class="text">flag</th><th class="text">detail</th></tr></thead>'
                     f"<tbody>{rows}</tbody></table></div>")  # fmt: skip
    else:
        parts.append(f"<p>No run flagged ({s.runs_with_diagnostics} with diagnostics).</p>")
    parts.append("<h2>Diagnostics</h2>")
    parts += [figure_html(f) for f in s.figures]
    return "\n".join(parts)


def to_markdown(s: DiagnosticsSection, md_figure, md_cell) -> list[str]:
    """The section as Markdown lines (the report's figure and cell helpers passed in)."""
    if not s.runs_with_diagnostics:
        return []
    out = [f"## Flags ({len(s.flags)})", "", f"*{md_cell(RULES)}*", ""]
    if s.flags:
        out += ["| run | flag | detail |", "|---|---|---|"]
        out += [f"| `{f.run_id[:8]}` {md_cell(f.run)} | {md_cell(f.kind)} | {md_cell(f.detail)} |"
                for f in s.flags]  # fmt: skip
    else:
        out.append(f"No run flagged ({s.runs_with_diagnostics} with diagnostics).")
    out += ["", "## Diagnostics", ""]
    out += [line for f in s.figures for line in md_figure(f)]
    return out
