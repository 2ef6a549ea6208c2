"""The report as a self-contained ``report.html`` (PNG figures as data URIs) and ``report.md``.

Every string that comes from a run — names, params, error messages, samples — is escaped:
samples and corpora are arbitrary text and may contain ``<script>``. Nothing here reads MLflow;
it formats what ``tables``, ``figures`` and ``samples`` produced.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field

import pandas as pd

from rnnlab.report import diagnostics as diag_section
from rnnlab.report import memory as memory_section
from rnnlab.report.figures import FigureFile
from rnnlab.report.tables import Tables, fmt, objective_phrase
from rnnlab.tasks import TASKS
from rnnlab.tasks.judging import metric_key


@dataclass
class RunSamples:
    run_id: str
    label: str  # swept params and seed
    status: str
    texts: dict[int, str] = field(default_factory=dict)  # iteration → sample text


@dataclass
class Report:
    """Everything the two renderers show."""

    title: str
    description: str  # how the runs were chosen
    uri: str
    commands: list[tuple[str, str]]  # (what, command line)
    facts: list[tuple[str, str]]  # (label, value) lines under the title
    tables: Tables
    figures: list[FigureFile]
    samples: list[RunSamples]
    sample_iterations: list[int]  # the columns of the samples table ("final" is separate)
    generated: str
    trials: pd.DataFrame | None = None  # a search's trials (rnnlab.sweeps.search.search_trials)
    search_figures: list[FigureFile] = field(default_factory=list)
    diagnostics: diag_section.DiagnosticsSection | None = None  # Flags + Diagnostics sections
    memory: memory_section.MemorySection | None = None  # Memory horizon (task.length swept)


def _swept_label(row: pd.Series, swept: list[str]) -> str:
    return " ".join(f"{k}={fmt(k, row[k])}" for k in swept) or "(single configuration)"


def best_line(t: Tables) -> str:
    """One sentence naming the best configuration by its objective (the metric's key and its
    values over seeds), then its task's other headline metrics, each labelled."""
    if t.groups.empty or pd.isna(t.groups.loc[0, "objective_mean"]):
        return "No run reached a final objective."
    g = t.groups.iloc[0]
    values = [objective_phrase(g)]
    task = TASKS.get(g["task"])
    own = "final_" + metric_key(g["objective_metric"])  # the objective's own column: said
    for column, label, _ in task.JUDGED.headline if task else ():
        if column in g and column != own and g[f"{column}_n"] > 0:
            values.append(f"{label} {g[column]}")
    return f"Best configuration: {_swept_label(g, t.swept)} — {'; '.join(values)}."


def shown_metrics(t: Tables) -> list[str]:
    """The metric columns of the displayed tables: ``objective`` only restates one of them."""
    return [m for m in t.metrics if m != "objective"]


def group_table(t: Tables) -> tuple[list[str], list[list[str]]]:
    headers = key_columns_first(["rank", *t.swept, "runs", "failed", "seeds", *shown_metrics(t)])
    rows = [[fmt(h, r[h]) for h in headers] for _, r in t.groups.iterrows()]
    return headers, rows


def run_status(r: pd.Series) -> str:
    """MLflow's status, except that a pruned trial (FINISHED in MLflow) says PRUNED."""
    if r.get("trial_state") == "PRUNED":
        return "PRUNED" + (f" at {r['pruned_at']:,}" if not pd.isna(r["pruned_at"]) else "")
    return r["status"]


def is_pruned(t: Tables) -> list[bool]:
    if "trial_state" not in t.runs:
        return [False] * len(t.runs)
    return list(t.runs["trial_state"].eq("PRUNED").fillna(False))


def run_table(t: Tables) -> tuple[list[str], list[list[str]]]:
    headers = [
        "rank",
        "run",
        *(["trial"] if "trial" in t.runs else []),
        "status",
        *t.swept,
        "seed",
        *shown_metrics(t),
        "iterations_done",
        "flags",  # rnnlab.report.tables: h=0 fragile, stopped early
        "error",
    ]
    headers = key_columns_first(headers)
    rows = []
    for _, r in t.runs.iterrows():
        cells = {**{h: fmt(h, r[h]) for h in headers if h in r}, "run": r["run_id"][:8],
                 "status": run_status(r)}  # fmt: skip
        rows.append([cells[h] for h in headers])
    return headers, rows


# Columns a reader needs after the ranking and the objective: shown last, so the key ones (rank,
# run, status, the swept values, seed, objective, the headline metrics) are read first.
DETAIL_COLUMNS = ("best_smooth_loss", "final_smooth_loss", "chars_per_sec", "train_seconds",
                  "iterations_done", "error")  # fmt: skip


def key_columns_first(headers: list[str]) -> list[str]:
    """``headers`` with the detail columns moved to the end, in DETAIL_COLUMNS' order."""
    detail = [h for h in DETAIL_COLUMNS if h in headers]
    return [h for h in headers if h not in detail] + detail


def param_cell(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else fmt("", value)


def trial_table(trials: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """One row per Optuna trial, in trial order: the search as the sampler saw it."""
    keys = [c for c in trials if c.startswith("param.")]
    headers = ["trial", "state", "value", "best_so_far", "iterations",
               *(k.removeprefix("param.") for k in keys), "run"]  # fmt: skip
    rows = []
    for _, r in trials.iterrows():
        rows.append([fmt("trial", r["trial"]), r["state"], fmt("value", r["value"]),
                     fmt("best_so_far", r["best_so_far"]), f"{r['iterations']:,}",
                     *(param_cell(r[k]) for k in keys), r["run_id"][:8]])  # fmt: skip
    return headers, rows


SEARCH_NOTE = (
    "value: the trial's final objective; for a PRUNED trial the last value it reported before "
    "the pruner stopped it (its MLflow run is FINISHED, tagged rnnlab.trial_state=PRUNED). "
    "best_so_far: the lowest COMPLETE value up to that trial."
)


# --- HTML -----------------------------------------------------------------------------------------

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1280px; color: #222;
       padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px;
     border-bottom: 1px solid #ddd; padding-bottom: 3px; }
table { border-collapse: collapse; font-size: 12px; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; vertical-align: top; }
th { background: #f3f3f3; white-space: normal; min-width: 3em; } td { white-space: nowrap; }
td.text, th.text { text-align: left; } td.wrap { white-space: normal; min-width: 220px; }
.scroll { overflow-x: auto; max-width: 100%; }
tr.bad td { background: #fdecea; }
tr.pruned td { background: #fff4e0; color: #666; }
code { background: #f3f3f3; padding: 1px 4px; border-radius: 3px; font-size: 12px; }
pre { white-space: pre-wrap; word-break: break-word; margin: 0; font-size: 11px; max-width: 420px; }
pre.grid { white-space: pre; word-break: normal; max-width: none;
           font-family: ui-monospace, "DejaVu Sans Mono", monospace; line-height: 1.35; }
figure { margin: 12px 0; } figcaption { font-size: 12px; color: #555; max-width: 800px; }
img { max-width: 100%; border: 1px solid #eee; }
.facts td { border: none; text-align: left; padding: 1px 10px 1px 0; white-space: normal; }
.facts code { word-break: break-all; }
.best { font-weight: 600; }
"""
TEXT_COLUMNS = {"run", "status", "error", "seeds", "task", "state", "flags"}


def _h(value) -> str:
    return html.escape(str(value), quote=True)


def breakable(name: str) -> str:
    """An escaped column name that may wrap after ``_`` and ``/`` (``final_<wbr>val_<wbr>loss``)."""
    return re.sub(r"([_/])", r"\1<wbr>", _h(name))


def is_grid(text: str) -> bool:
    """Text laid out in columns (the adder's sums, bit strings): keep its lines unwrapped."""
    lines = text.splitlines()
    return bool(lines) and all(len(ln) <= 80 for ln in lines) and " + " in text and "->" in text


def html_table(
    headers: list[str],
    rows: list[list[str]],
    bad: list[bool] | None = None,
    pruned: list[bool] | None = None,
) -> str:
    def cls(h: str) -> str:
        return (
            ' class="text wrap"' if h == "error" else ' class="text"' if h in TEXT_COLUMNS else ""
        )

    head = "".join(f"<th{cls(h)}>{breakable(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        tr = ' class="bad"' if bad and bad[i] else ' class="pruned"' if pruned and pruned[i] else ""
        cells = "".join(f"<td{cls(h)}>{_h(c)}</td>" for h, c in zip(headers, row, strict=True))
        body.append(f"<tr{tr}>{cells}</tr>")
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    return f'<div class="scroll">{table}</div>'


def html_figure(f: FigureFile) -> str:
    data = base64.b64encode(f.path.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{_h(f.title)}" src="data:image/png;base64,{data}">'
        f"<figcaption><b>{_h(f.title)}.</b> {_h(f.caption)}</figcaption></figure>"
    )


def to_html(r: Report) -> str:
    t = r.tables
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_h(r.title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_h(r.title)}</h1>",
        '<table class="facts">'
        + "".join(f"<tr><td>{_h(k)}</td><td>{_h(v)}</td></tr>" for k, v in r.facts)
        + "".join(f"<tr><td>{_h(k)}</td><td><code>{_h(v)}</code></td></tr>" for k, v in r.commands)
        + "</table>",
        f'<p class="best">{_h(best_line(t))}</p>',
    ]
    failed = t.runs[t.runs["status"] != "FINISHED"]
    if not failed.empty:
        parts.append(f"<h2>Runs that did not finish ({len(failed)})</h2><ul>")
        for _, row in failed.iterrows():
            reason = row["error"] or "(no error tag)"
            parts.append(
                f"<li><code>{_h(row['run_id'][:8])}</code> {_h(_swept_label(row, t.swept))} "
                f"seed={_h(row['seed'])}: <b>{_h(row['status'])}</b> — {_h(reason)}</li>"
            )
        parts.append("</ul>")
    if (t.groups["runs"] > 1).any():
        parts.append("<h2>Configurations, mean ± std (n) over seeds</h2>")
        parts.append(html_table(*group_table(t), bad=list(t.groups["failed"] > 0)))
    if r.trials is not None:
        parts.append(f"<h2>Search: {len(r.trials)} Optuna trials</h2>")
        parts.append(f"<p><small>{_h(SEARCH_NOTE)}</small></p>")
        states = r.trials["state"]
        parts.append(html_table(*trial_table(r.trials), bad=list(states.isin(["FAIL"])),
                                pruned=list(states == "PRUNED")))  # fmt: skip
        parts += [html_figure(f) for f in r.search_figures]
    parts.append("<h2>Runs, ranked by the objective</h2>")
    parts.append(html_table(*run_table(t), bad=list(t.runs["status"] != "FINISHED"),
                            pruned=is_pruned(t)))  # fmt: skip
    parts.append("<h2>Figures</h2>")
    parts += [html_figure(f) for f in r.figures]
    parts.append(memory_section.to_html(r.memory, html_figure, html_table))
    if r.diagnostics is not None:
        parts.append(diag_section.to_html(r.diagnostics, html_figure))
    if r.samples:
        parts.append("<h2>Samples</h2>")
        headers = ["run", "status", *[f"iter {i:,}" for i in r.sample_iterations], "final"]
        parts.append(
            '<div class="scroll"><table><thead><tr>'
            + "".join(f'<th class="text">{_h(h)}</th>' for h in headers)
            + "</tr></thead><tbody>"
        )
        for s in r.samples:
            last = max(s.texts) if s.texts else None
            cells = [s.texts.get(i) for i in r.sample_iterations]
            cells.append(s.texts.get(last) if last is not None else None)
            final_head = f"iter {last:,}\n" if last is not None else ""
            row = [f'<td class="text">{_h(s.label)}</td>', f'<td class="text">{_h(s.status)}</td>']
            for k, c in enumerate(cells):
                text = "–" if c is None else (final_head if k == len(cells) - 1 else "") + c
                grid = ' class="grid"' if is_grid(text) else ""
                row.append(f'<td class="text"><pre{grid}>{_h(text)}</pre></td>')
            parts.append(f"<tr>{''.join(row)}</tr>")
        parts.append("</tbody></table></div>")
    parts.append(f"<p><small>Generated {_h(r.generated)} by rnnlab.report from {_h(r.uri)}"
                 "</small></p></body></html>")  # fmt: skip
    return "\n".join(parts)


# --- Markdown -------------------------------------------------------------------------------------


def md_cell(text: str) -> str:
    """Run text inside a table cell: no HTML, no column breaks, one line."""
    text = html.escape(str(text), quote=False).replace("|", "\\|")
    return re.sub(r"\s*\n\s*", " ", text)


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(md_cell(h) for h in headers) + " |"]
    lines.append("|" + "|".join("---" if h in TEXT_COLUMNS else "--:" for h in headers) + "|")
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def md_code(text: str) -> str:
    """A fenced block that no backtick run inside ``text`` can close."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text.rstrip()}\n{fence}"


def md_figure(f: FigureFile) -> list[str]:
    return [
        f"![{md_cell(f.title)}]({f.name})",
        "",
        f"*{md_cell(f.title)}.* {md_cell(f.caption)}",
        "",
    ]


def to_markdown(r: Report) -> str:
    t = r.tables
    out = [f"# {md_cell(r.title)}", ""]
    out += [f"- {md_cell(k)}: {md_cell(v)}" for k, v in r.facts]
    for k, v in r.commands:  # code only on one line: a swept newline would end the list item
        plain = not set("`\n\r") & set(v)
        out.append(f"- {md_cell(k)}: `{v}`" if plain else f"- {md_cell(k)}: {md_cell(v)}")
    out += ["", f"**{md_cell(best_line(t))}**", ""]
    failed = t.runs[t.runs["status"] != "FINISHED"]
    if not failed.empty:
        out += [f"## Runs that did not finish ({len(failed)})", ""]
        for _, row in failed.iterrows():
            reason = row["error"] or "(no error tag)"
            out.append(
                f"- `{row['run_id'][:8]}` {md_cell(_swept_label(row, t.swept))} "
                f"seed={md_cell(row['seed'])}: **{md_cell(row['status'])}** — {md_cell(reason)}"
            )
        out.append("")
    if (t.groups["runs"] > 1).any():
        out += ["## Configurations, mean ± std (n) over seeds", "", md_table(*group_table(t)), ""]
    if r.trials is not None:
        out += [f"## Search: {len(r.trials)} Optuna trials", "", f"*{md_cell(SEARCH_NOTE)}*", ""]
        out += [md_table(*trial_table(r.trials)), ""]
        out += [line for f in r.search_figures for line in md_figure(f)]
    out += ["## Runs, ranked by the objective", "", md_table(*run_table(t)), ""]
    out += ["## Figures", ""]
    out += [line for f in r.figures for line in md_figure(f)]
    out += memory_section.to_markdown(r.memory, md_figure, md_table)
    if r.diagnostics is not None:
        out += diag_section.to_markdown(r.diagnostics, md_figure, md_cell)
    if r.samples:
        out += ["## Samples", ""]
        for s in r.samples:
            out += [f"### {md_cell(s.label)} ({md_cell(s.status)})", ""]
            if not s.texts:
                out += ["(no samples logged)", ""]
            last = max(s.texts) if s.texts else None
            for i in [*r.sample_iterations, last]:
                if i is not None and i in s.texts and (i != last or i not in r.sample_iterations):
                    out += [f"iteration {i:,}{' (final)' if i == last else ''}:", "",
                            md_code(s.texts[i]), ""]  # fmt: skip
    out += [f"*Generated {md_cell(r.generated)} by rnnlab.report from {md_cell(r.uri)}.*", ""]
    return "\n".join(out)
