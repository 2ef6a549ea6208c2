"""``generate``: select → tables → figures → samples → report.html, report.md, runs.csv.

A sweep whose parent is tagged ``rnnlab.search=optuna`` also gets its trials
(``rnnlab.sweeps.search.search_trials``): ``trials.csv``, a trials table and the search figures."""

from __future__ import annotations

import shlex
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from rnnlab import files
from rnnlab.report import diagnostics as diag_section
from rnnlab.report import memory as memory_section
from rnnlab.report.figures import make_figures, search_figures
from rnnlab.report.render import Report, RunSamples, to_html, to_markdown
from rnnlab.report.select import Selection, select
from rnnlab.report.tables import (
    Tables,
    baseline_facts,
    build_tables,
    objective_fact,
    warm_flag_facts,
)

ADDER_SAMPLE_LINES = 4  # per section (wrong / right) of an adder sample


def trim_adder_sample(text: str) -> str:
    """Keep each ``# wrong``/``# right`` header and its first few example sums."""
    out, kept = [], 0
    for line in text.splitlines():
        if line.startswith("#"):
            out.append(line)
            kept = 0
        elif kept < ADDER_SAMPLE_LINES:
            out.append(line)
            kept += 1
    return "\n".join(out)


def collect_samples(sel: Selection, t: Tables, at: list[int]) -> list[RunSamples]:
    """Each run's final sample and those at iterations ``at`` (rank order)."""
    out = []
    for _, row in t.runs.iterrows():
        files = sel.sample_files(row["run_id"])
        wanted = {i for i in at if i in files}
        if files:
            wanted.add(max(files))
        texts = {}
        for i in sorted(wanted):
            text = sel.read_text(row["run_id"], files[i])
            texts[i] = trim_adder_sample(text) if row["task"] == "adder" else text
        label = " ".join([*(f"{k}={row[k]}" for k in t.swept), f"seed={row['seed']}"])
        out.append(RunSamples(row["run_id"], label, row["status"], texts))
    return out


def search_of(sel: Selection) -> tuple[pd.DataFrame, list[str]] | None:
    """(trials, searched keys) when the selection is an Optuna search with trials, else None."""
    if sel.parent is None or sel.parent.data.tags.get("rnnlab.search") != "optuna":
        return None
    from rnnlab.sweeps.search import search_trials

    trials = search_trials(sel.uri, sel.parent.info.run_id)
    keys = [k for k in sel.parent.data.tags.get("rnnlab.search_params", "").split(",") if k]
    return (trials, keys) if not trials.empty else None


def search_fact(sel: Selection, trials: pd.DataFrame) -> str:
    """One line: study, trial counts by state, pruner, best trial."""
    tags = sel.parent.data.tags
    states = trials["state"].value_counts()
    line = f"Optuna study {tags.get('rnnlab.study', '?')}, {len(trials)} trials ("
    line += ", ".join(f"{n} {s}" for s, n in states.items()) + ")"
    line += f", pruner {tags.get('rnnlab.pruner', '?')}"
    complete = trials[trials["state"] == "COMPLETE"]
    if not complete.empty:
        best = complete.loc[complete["value"].idxmin()]
        line += f"; best trial {best['trial']}: {best['value']:.4g}"
    done, longest = int(trials["iterations"].sum()), int(trials["iterations"].max())
    return line + (f"; iterations trained {done:,} ({len(trials) * longest:,} if every trial had "
                   f"run {longest:,})")  # fmt: skip


def sweep_status(sel: Selection) -> str:
    """The parent's status, told apart when its process is gone, and the jobs that never
    started: "RUNNING (dead: its process is gone); 2 of 4 jobs never started"."""
    from rnnlab.sweeps.parent_run import never_started
    from rnnlab.tracking import store

    line = store.describe_status(sel.parent)
    children = store.list_children(sel.client, sel.parent.info.run_id)
    if (counts := never_started(sel.parent, children)) is not None and counts[0]:
        line += f"; {counts[0]} of {counts[1]} jobs never started"
    return line


def generate(
    uri: str,
    sweep: str | None = None,
    experiment: str | None = None,
    filter_string: str = "",
    out: Path | str | None = None,
    samples_at: list[int] | None = None,
    log_to_parent: bool = True,
) -> tuple[Path, Selection]:
    """Write the report of the selected runs; return ``report.html``'s path and the selection
    (the CLI registers its sweep's best run). With a sweep selected (and ``log_to_parent``), the
    folder is also logged to its parent run."""
    sel = select(uri, sweep, experiment, filter_string)
    out_dir = Path(out) if out is not None else files.inside("reports", sel.name)
    # The folder may be the user's: the report overwrites only the files it writes now and
    # deletes nothing (report.html names only this run's figures; an older one's stay unread).
    out_dir.mkdir(parents=True, exist_ok=True)

    t = build_tables(sel)
    files.write_text(out_dir / "runs.csv", t.runs.to_csv(index=False))
    search = search_of(sel)
    figures = make_figures(sel, t, out_dir, search=search is not None)
    trials, trial_figures = None, []
    if search is not None:
        trials, keys = search
        table = trials.drop(columns="intermediate").to_csv(index=False)
        files.write_text(out_dir / "trials.csv", table)
        task = str(t.runs["task"].iloc[0])
        trial_figures = search_figures(trials, keys, task, out_dir)
    samples = collect_samples(sel, t, samples_at or [])
    diagnostics = diag_section.build(sel, t, out_dir)  # Flags + Diagnostics (diag/ metrics)
    memory = memory_section.build(sel, t, out_dir)  # Memory horizon: adding/copy over task.length

    commands = []
    if sel.parent is not None:
        overrides = sel.sweep_overrides
        commands.append(("sweep command", f"python -m rnnlab.run -m {overrides}".strip()))
        commands.append(("regenerate", f"python -m rnnlab.report sweep={sel.parent.info.run_id}"))
    else:
        args = [f"experiment={experiment}"] if experiment else []
        args += [f"filter={filter_string}"] if filter_string else []
        commands.append(("regenerate", "python -m rnnlab.report " + shlex.join(args)))
    statuses = t.runs["status"].value_counts()
    facts = [
        ("selection", sel.description),
        ("tracking URI", uri),
        ("tasks", ", ".join(sorted(t.runs["task"].unique()))),
        ("swept", ", ".join(t.swept) or "nothing"),
        ("runs", f"{len(t.runs)} (" + ", ".join(f"{n} {s}" for s, n in statuses.items()) + ")"),
    ]
    if sel.parent is not None:
        facts.append(("sweep status", sweep_status(sel)))
        if launcher := sel.parent.data.tags.get("rnnlab.launcher"):  # not in sweep_overrides
            facts.append(("launcher", launcher))
    if trials is not None:
        facts.append(("search", search_fact(sel, trials)))
    facts.append(("objective", objective_fact(t)))
    facts += warm_flag_facts(t)  # rnnlab.report.tables: runs whose val/loss and warm disagree
    facts += baseline_facts(t)  # runs that learned nothing
    report = Report(
        title=f"rnnlab report: {sel.name}",
        description=sel.description,
        uri=uri,
        commands=commands,
        facts=facts,
        tables=t,
        figures=figures,
        samples=samples,
        sample_iterations=sorted(samples_at or []),
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        trials=trials,
        search_figures=trial_figures,
        diagnostics=diagnostics,
        memory=memory,
    )
    files.write_text(out_dir / "report.md", to_markdown(report))
    html_path = files.write_text(out_dir / "report.html", to_html(report))
    if sel.parent is not None and log_to_parent:
        sel.client.log_artifacts(sel.parent.info.run_id, str(out_dir), "report")
    return html_path, sel
