"""The report's *Diagnostics* section and *Flags* list, from the ``diag/`` metrics runs logged.

Figures: gradient flow at each run's first and last evaluation (the ``diagnostics/`` curve
artifacts), saturation and spectral radius over training, update ratios over training. Flags:
runs whose gradients explode, whose units saturate, whose zero-state and warm validation
disagree, or whose update ratio leaves ``UPDATE_RATIO_RANGE`` — each rule is one function of a
run's metric histories (``flags_of``), so it is tested without a store. Reads only the tracker.
"""

from __future__ import annotations

import csv
import html
import io
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure
from mlflow.exceptions import MlflowException

from rnnlab.report.figures import FigureFile, Styler, _save, run_label
from rnnlab.report.select import Selection
from rnnlab.report.tables import Tables

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
    """(kind, detail) for every rule a run breaks, judged at its last evaluation."""
    out = []
    if (p := _last(histories.get("diag/grad_decay", []))) and p[1] > GRAD_DECAY_LIMIT:
        out.append(("exploding gradients", f"grad_decay {p[1]:+.3f}/step at iteration {p[0]:,}"))
    for key in ("diag/saturation", "diag/saturation_warm"):
        if (p := _last(histories.get(key, []))) and p[1] > SATURATION_LIMIT:
            out.append(
                ("saturating units", f"{key.split('/')[-1]} {p[1]:.0%} at iteration {p[0]:,}")
            )
            break
    zero, warm = _last(histories.get("val/loss", [])), _last(histories.get("val/loss_warm", []))
    if zero and warm and abs(zero[1] - warm[1]) > WARM_GAP_NATS:
        out.append(("zero vs warm", f"val/loss {zero[1]:.3f} from h=0, {warm[1]:.3f} warm"))
    sz, sw = (
        _last(histories.get("diag/saturation", [])),
        _last(histories.get("diag/saturation_warm", [])),
    )
    if sz and sw and abs(sz[1] - sw[1]) > WARM_GAP_SATURATION:
        out.append(("zero vs warm", f"saturation {sz[1]:.0%} from h=0, {sw[1]:.0%} warm"))
    lo, hi = UPDATE_RATIO_RANGE
    for key in sorted(histories):
        name = key.removeprefix("diag/update_ratio/")
        if key.startswith("diag/update_ratio/W") and (p := _last(histories[key])):
            if not lo <= p[1] <= hi:
                out.append(("update ratio", f"{name} {p[1]:.1e} at iteration {p[0]:,} "
                            f"(outside {lo:g}…{hi:g})"))  # fmt: skip
    return out


def _histories(sel: Selection, run) -> dict[str, list[tuple[int, float]]]:
    rid = run.info.run_id
    keys = [*KEYS, *(k for k in run.data.metrics if k.startswith("diag/update_ratio/"))]
    return {k: sel.history(rid, k) for k in keys if k in run.data.metrics}


def grad_flow_curves(sel: Selection, run_id: str) -> dict[int, list[tuple[int, float]]]:
    """{iteration: [(steps back, ‖∂L_T/∂h‖)]} for the first and last logged curve."""
    try:
        files = sel.client.list_artifacts(run_id, "diagnostics")
    except (MlflowException, OSError):
        return {}
    found = {
        int(m.group(1)): f.path for f in files if (m := re.search(r"iter_(\d+)\.csv$", f.path))
    }
    out = {}
    for it in sorted({min(found), max(found)} if found else set()):
        with tempfile.TemporaryDirectory() as tmp:
            local = sel.client.download_artifacts(run_id, found[it], tmp)
            rows = list(csv.DictReader(io.StringIO(Path(local).read_text(encoding="utf-8"))))
        out[it] = [(int(r["steps_back"]), float(r["grad_norm"])) for r in rows]
    return out


def _grad_flow_figure(sel: Selection, t: Tables, runs) -> Figure:
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    styler = Styler(t.runs, t.swept)
    for _, row in runs.iterrows():
        curves = grad_flow_curves(sel, row["run_id"])
        for k, (_, points) in enumerate(sorted(curves.items())):
            d, g = zip(*[(d, g) for d, g in points if g > 0], strict=True) if points else ((), ())
            first = k == 0 and len(curves) > 1
            ax.plot(d, g, lw=1.2, alpha=0.85, **styler.style(row) | {"linestyle": ":" if first
                    else "-"})  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("steps back from the loss, d")
    ax.set_ylabel("‖∂L_T / ∂h_(T−d)‖")
    ax.grid(alpha=0.3)
    styler.legend(ax, str(runs["task"].iloc[0]))
    return fig


# the gated cells' names of the vanilla cell's first-layer matrices (PyTorch's)
GATED_NAMES = {"diag/update_ratio/Whh": "diag/update_ratio/W_hh_l0",
               "diag/update_ratio/Wxh": "diag/update_ratio/W_ih_l0"}  # fmt: skip


def _over_training(
    sel: Selection,
    t: Tables,
    runs,
    solid: str,
    dashed: str | None,
    ylabel: str,
    log_y: bool = False,
    band: tuple[float, float] | None = None,
) -> Figure:
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    styler = Styler(t.runs, t.swept)
    for _, row in runs.iterrows():
        for key, ls in ((solid, "-"), (dashed, "--")):
            if key and (
                points := sel.history(row["run_id"], key)
                or sel.history(row["run_id"], GATED_NAMES.get(key, key))
            ):
                steps, values = zip(*points, strict=True)
                ax.plot(steps, values, lw=1.2, alpha=0.85, **styler.style(row) | {"linestyle": ls})
    if band:
        ax.axhspan(*band, color="tab:green", alpha=0.08, lw=0)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    styler.legend(ax, str(runs["task"].iloc[0]))
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

    tasks = [task for task in ("charrnn", "adder") if (t.runs["task"] == task).any()]
    for task in tasks:
        runs = t.runs[t.runs["task"] == task]
        s = f"_{task}" if len(tasks) > 1 else ""
        add(_grad_flow_figure(sel, t, runs), f"diag_grad_flow{s}.png",
            "Gradient flow, first and last evaluation",
            "‖∂L_T/∂h_{T−d}‖ on the fixed probe window (L_T: the loss at its last step) against "
            "the distance d: dotted at the first evaluation, solid at the last. A falling line "
            "is a vanishing gradient; its slope is diag/grad_decay.")  # fmt: skip
        add(_over_training(sel, t, runs, "diag/saturation", "diag/saturation_warm",
                           "share of activations saturated"),
            f"diag_saturation{s}.png", "Saturation over training",
            "Share of (step, unit) hidden activations at |h| > 0.99 (tanh) or outside "
            "[0.01, 0.99] (sigmoid) on the validation pass: solid from h = 0, "
            "dashed warm.")  # fmt: skip
        add(_over_training(sel, t, runs, "diag/whh_rho", "diag/whh_sigma_max",
                           "spectral radius / σ_max of Whh"),
            f"diag_spectrum{s}.png", "Recurrent spectrum over training",
            "Solid: spectral radius of Whh (largest |eigenvalue|); dashed: its largest "
            "singular value. Gated cells: the candidate's block of W_hh (GRU's n, LSTM's g); "
            "layer 0.")  # fmt: skip
        add(_over_training(sel, t, runs, "diag/update_ratio/Whh", "diag/update_ratio/Wxh",
                           "update ratio ‖Δθ‖/‖θ‖", log_y=True, band=UPDATE_RATIO_RANGE),
            f"diag_update_ratio{s}.png", "Update-to-weight ratio over training",
            "One optimizer step's ‖Δθ‖/‖θ‖: solid Whh, dashed Wxh (gated cells: W_hh_l0, "
            "W_ih_l0); shaded: the "
            f"{UPDATE_RATIO_RANGE[0]:g}…{UPDATE_RATIO_RANGE[1]:g} band the flags use.")  # fmt: skip
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
