"""The benchmark's results file and the docs page rendered from it.

Every ``python -m rnnlab.bench`` run appends one JSON line to the results file (default: the
checkout's ``docs/benchmarks/history.jsonl``, committed): when, which commit, which machine, the
load averages before and after, how long it ran its cases, and each figure by name (the engine's
rates and ratios per cell and case, the tracking and diagnostics overheads). The targets are
recorded with every line; whether a run met them is judged only for a run long enough to
support it (``full``), never for ``quick=true``.

``render`` rewrites the generated blocks of ``docs/benchmarks.md`` from the file — the latest full
run in detail, each target against the median of the last three full runs on that machine, and
one line per full run since the file began; the start-up section's latest full run in a block of
its own, with what its imports cost by package — so a regression shows up as a line, and no figure
on the page is typed by hand (``tests/unit/test_bench_history.py`` checks the page is the file's
rendering).

Not here: taking the figures (``rnnlab.bench.engine``, ``.tracking``, ``.diagnostics``).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from pathlib import Path

import numpy as np

from rnnlab import files
from rnnlab.errors import UserError

REPO = Path(__file__).resolve().parents[2]  # the checkout rnnlab runs from
HISTORY = REPO / "docs" / "benchmarks" / "history.jsonl"
PAGE = REPO / "docs" / "benchmarks.md"
BLOCKS = ("latest", "history")  # <!-- bench:NAME --> ... <!-- /bench:NAME --> on the page
LAST = 3  # a target is judged on the median of this many latest full runs
TOP = 12  # packages of the start-up's import-time breakdown the page shows

# the engine's figures as recorded: results field -> its short name
ENGINE_FIGURES = {
    "chars_per_sec": "chars/s",
    "vs_naive": "× naive",
    "fraction_of_gemm_bound": "of bound",
    "vs_numpy_cells": "× numpy cells",
}
TRACKING = "tracking overhead % (a 100k-iteration run)"
STARTUP = "kernels' first window, {} (s CPU)"  # cold | warm
RUN_STARTUP = "run start-up, {} store (s {})"  # existing | fresh | fresh, no cache; CPU | wall
RUN_STARTUP_FLOOR = "MLflow's imports alone (s CPU)"


def diagnostics_name(task: str) -> str:
    return f"diagnostics overhead % ({task})"


# --- where, when, what ----------------------------------------------------------------------------


def commit() -> str:
    """The checkout's commit, with ``+changes`` when the library's files differ from it."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "rnnlab"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+changes" if dirty else "")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """The CPU, core count, Python, numpy and the BLAS libraries loaded."""
    from threadpoolctl import threadpool_info

    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": [
            {k: v for k, v in lib.items() if k != "filepath"}
            for lib in threadpool_info()
            if lib.get("user_api") == "blas"
        ],
    }


def machine_name(machine: dict) -> str:
    """How a run's machine is shown and compared: CPU model and logical CPUs."""
    return f"{machine['cpu']} ({machine['logical_cpus']} logical CPUs)"


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# --- figures and targets --------------------------------------------------------------------------


def figures_of(results: dict) -> dict[str, float]:
    """Every headline figure of a bench's results, by name."""
    out: dict[str, float] = {}
    for cell, figs in results.get("engine", {}).items():
        for case, f in figs.items():
            for field, short in ENGINE_FIGURES.items():
                if isinstance(f, dict) and field in f:
                    out[f"{cell} {case} {short}"] = f[field]
    if "startup" in results:
        for how in ("cold", "warm"):
            out[STARTUP.format(how)] = results["startup"][f"{how}_extra_cpu_seconds"]
    if "tracking" in results:
        out[TRACKING] = results["tracking"]["wall"]["default_run_overhead_pct"]
    if "run_startup" in results:
        from rnnlab.bench.run_startup import CASES

        for case in CASES:
            for clock in ("CPU", "wall"):
                key = f"{clock.lower()}_seconds"
                out[RUN_STARTUP.format(case, clock)] = results["run_startup"][case][key]
        out[RUN_STARTUP_FLOOR] = results["run_startup"]["mlflow_imports_cpu_seconds"]
    for task, d in results.get("diagnostics", {}).items():
        out[diagnostics_name(task)] = d["wall"]["overhead_pct"]
    return out


def targets_of(results: dict) -> list[dict]:
    """The targets for the figures a bench took: [{figure, op (">=" or "<="), bound}]."""
    from rnnlab.bench.diagnostics import DIAG_TARGET_PCT
    from rnnlab.bench.engine import ROWS
    from rnnlab.bench.run_startup import EXISTING_TARGET, FRESH_TARGET
    from rnnlab.bench.tracking import TRACKING_TARGET_PCT

    out = []
    for cell in results.get("engine", {}):
        for case, wanted in ROWS[cell].items():
            for field, least in wanted.items():
                out.append({"figure": f"{cell} {case} {ENGINE_FIGURES[field]}", "op": ">=",
                            "bound": least})  # fmt: skip
    if "tracking" in results:
        out.append({"figure": TRACKING, "op": "<=", "bound": TRACKING_TARGET_PCT})
    for task in results.get("diagnostics", {}):
        out.append({"figure": diagnostics_name(task), "op": "<=", "bound": DIAG_TARGET_PCT})
    if "run_startup" in results:
        for case, bound in (("existing", EXISTING_TARGET), ("fresh", FRESH_TARGET)):
            out.append({"figure": RUN_STARTUP.format(case, "CPU"), "op": "<=", "bound": bound})
    return out


def met(target: dict, value: float) -> bool:
    return value >= target["bound"] if target["op"] == ">=" else value <= target["bound"]


def shown(figure: str, value: float) -> str:
    """A figure as the page and the terminal show it."""
    if figure.endswith("of bound"):
        return f"{value:.0%}"
    if figure.endswith("chars/s"):
        return f"{value:,.0f}"
    if "%" in figure:
        return f"{value:+.1f}%"
    if figure.endswith(("(s CPU)", "(s wall)")):
        return f"{value:.2f} s"
    return f"{value:.2f}×"


def shown_target(target: dict) -> str:
    op = "≥" if target["op"] == ">=" else "≤"
    return f"{target['figure']} {op} {shown(target['figure'], target['bound']).lstrip('+')}"


def record(results: dict, load_before, full: bool) -> dict:
    """The results file's line for one bench run."""
    line = {
        "date": results["date"],
        "commit": commit(),
        "command": results["command"],
        "machine": results["machine"],
        "load_average": {"before": load_before, "after": load_average()},
        "quick": results["quick"],
        "full": full,
        "settings": results["settings"],
        "figures": figures_of(results),
        "targets": targets_of(results),
    }
    if "run_startup" in results:  # what its imports cost, by package (the page shows the top)
        line["run_startup_imports"] = results["run_startup"]["importtime"]
    if full:
        line["met"] = {t["figure"]: met(t, line["figures"][t["figure"]]) for t in line["targets"]}
    return line


def append(path: Path, line: dict) -> None:
    """Add ``line`` to the results file: the whole file rewritten atomically (it is small), so a
    run killed while writing leaves the old file or the new, never a cut line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    files.write_text(path, old + json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n")


def read(path: Path) -> list[dict]:
    """Every line of the results file, oldest first (none when it does not exist yet)."""
    if not path.is_file():
        return []
    return [json.loads(s) for s in path.read_text(encoding="utf-8").splitlines() if s.strip()]


# --- the page -------------------------------------------------------------------------------------


def judged(runs: list[dict], target: dict) -> tuple[float | None, int]:
    """(median of the target's figure over the last ``LAST`` full runs on the latest full run's
    machine, how many runs that is)."""
    full = [r for r in runs if r.get("full")]
    if not full:
        return None, 0
    here = machine_name(full[-1]["machine"])
    name = target["figure"]
    same = [r for r in full if machine_name(r["machine"]) == here and name in r["figures"]]
    values = [r["figures"][name] for r in same][-LAST:]
    return (statistics.median(values) if values else None), len(values)


def _load(load) -> str:
    return " / ".join(f"{x:.1f}" for x in load) if load else "unknown"


def start_up_only(run: dict) -> bool:
    """A run of the start-up section alone: its own block shows it, not the latest run's."""
    return all(n.startswith("run start-up") or n == RUN_STARTUP_FLOOR for n in run["figures"])


def render_latest(runs: list[dict]) -> str:
    full = [r for r in runs if r.get("full") and not start_up_only(r)]
    if not full:
        return "_No full run recorded yet: `python -m rnnlab.bench` records one._"
    r = full[-1]
    f = r["figures"]
    lines = [
        f"Latest full run: {r['date']}, commit `{r['commit']}`, {machine_name(r['machine'])}, "
        f"load average (1 / 5 / 15 min) {_load(r['load_average']['before'])} before and "
        f"{_load(r['load_average']['after'])} after; `{r['command']}` "
        f"({r['settings']['rounds']} rounds of ~{r['settings']['block_seconds']:g} s blocks, "
        f"vocabulary {r['settings']['vocab_size']}).",
        "",
        "| cell | case | chars/s | × naive | of bound | × numpy cells |",
        "|---|---|---|---|---|---|",
    ]
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for name, value in f.items():
        for short in ENGINE_FIGURES.values():
            if name.endswith(" " + short) and not name.startswith(("tracking", "diagnostics")):
                cell, case = name[: -len(short) - 1].split(" ", 1)
                rows.setdefault((cell, case), {})[short] = value
    for (cell, case), v in rows.items():
        cols = [shown(s, v[s]) if s in v else "–" for s in ENGINE_FIGURES.values()]
        lines.append(f"| {cell} | {case} | " + " | ".join(cols) + " |")
    others = [n for n in f if n == TRACKING or n.startswith(("diagnostics", "kernels'"))]
    if others:
        lines += ["", "| figure | this run |", "|---|---|"]
        lines += [f"| {n} | {shown(n, f[n])} |" for n in others]
    lines += ["", "| target | this run | median of the last full runs (n) | verdict |",
              "|---|---|---|---|"]  # fmt: skip
    for t in r["targets"]:
        value = f.get(t["figure"])
        median, n = judged(runs, t)
        verdict = "–" if median is None else ("met" if met(t, median) else "**missed**")
        this = shown(t["figure"], value) if value is not None else "–"
        med = f"{shown(t['figure'], median)} ({n})" if median is not None else "–"
        lines.append(f"| {shown_target(t)} | {this} | {med} | {verdict} |")
    return "\n".join(lines)


def render_history(runs: list[dict]) -> str:
    full = [r for r in runs if r.get("full")]
    if not full:
        return "_No full run recorded yet._"
    figures: list[str] = []
    for r in full:  # every target figure ever recorded, in the order they first appeared
        for t in r["targets"]:
            if t["figure"] not in figures:
                figures.append(t["figure"])
    lines = [
        "| date | commit | machine | load | " + " | ".join(figures) + " |",
        "|---" * (4 + len(figures)) + "|",
    ]
    for r in reversed(full):
        load = r["load_average"]["before"]
        head = [r["date"][:16].replace("T", " "), f"`{r['commit']}`", r["machine"]["cpu"],
                f"{load[0]:.1f}" if load else "–"]  # fmt: skip
        cols = [shown(n, r["figures"][n]) if n in r["figures"] else "–" for n in figures]
        lines.append("| " + " | ".join(head + cols) + " |")
    return "\n".join(lines)


def render_run_startup(runs: list[dict]) -> str:
    """The latest full run's start-up figures: each store's CPU and wall seconds, MLflow's
    import floor, the targets against the median of the last full runs, and what its imports
    cost by package."""
    full = [r for r in runs if r.get("full") and RUN_STARTUP.format("existing", "CPU")
            in r["figures"]]  # fmt: skip
    if not full:
        return "_No full run of the start-up section recorded yet._"
    r = full[-1]
    f = r["figures"]
    from rnnlab.bench.run_startup import CASES

    lines = [
        f"Latest: {r['date']}, commit `{r['commit']}`, {machine_name(r['machine'])}, load "
        f"average (1 / 5 / 15 min) {_load(r['load_average']['before'])} before and "
        f"{_load(r['load_average']['after'])} after; `{r['command']}` (medians of "
        f"{r['settings'].get('run_startup_rounds', '?')} rounds).",
        "",
        "| `python -m rnnlab.run iterations=1` on | CPU (user + sys, with children) | wall |",
        "|---|---|---|",
    ]
    rows = {"existing": "an existing store", "fresh": "a fresh store",
            "fresh, no cache": "a fresh store, no cached empty store"}  # fmt: skip
    for case in CASES:
        cpu, wall = (f.get(RUN_STARTUP.format(case, c)) for c in ("CPU", "wall"))
        if cpu is not None:
            lines.append(f"| {rows.get(case, case)} | {cpu:.2f} s | {wall:.2f} s |")
    if RUN_STARTUP_FLOOR in f:
        lines.append(f"| (a process importing only MLflow, its SQL store and pyfunc) | "
                     f"{f[RUN_STARTUP_FLOOR]:.2f} s | |")  # fmt: skip
    lines += ["", "| target | this run | median of the last full runs (n) | verdict |",
              "|---|---|---|---|"]  # fmt: skip
    for t in r["targets"]:
        if not t["figure"].startswith("run start-up"):
            continue
        median, n = judged(runs, t)
        verdict = "met" if met(t, median) else "**missed**"
        lines.append(f"| {shown_target(t)} | {shown(t['figure'], f[t['figure']])} | "
                     f"{shown(t['figure'], median)} ({n}) | {verdict} |")  # fmt: skip
    if imports := r.get("run_startup_imports"):
        lines += ["", f"Its imports, one run on an existing store (`python -X importtime`: each "
                  f"module's own time, wall clock, summed by top-level package; "
                  f"{imports['total_seconds']:.2f} s in all, the heaviest {TOP}):", "",
                  "| package | s |", "|---|---|"]  # fmt: skip
        lines += [f"| {name} | {seconds:.3f} |" for name, seconds in imports["packages"][:TOP]]
    return "\n".join(lines)


RENDERERS = {"latest": render_latest, "history": render_history, "run_startup": render_run_startup}
OPTIONAL = ("run_startup",)  # rendered where the page has its markers


def render(page: str, runs: list[dict]) -> str:
    """``page`` with each generated block replaced by its rendering of ``runs``; UserError when
    the page lacks a block's markers."""
    for name in BLOCKS + OPTIONAL:
        start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
        a, b = page.find(start), page.find(end)
        if name in OPTIONAL and a < 0:
            continue
        if a < 0 or b < a:
            raise UserError(f"the benchmark page has no {start} … {end} block to fill")
        page = page[: a + len(start)] + "\n" + RENDERERS[name](runs) + "\n" + page[b:]
    return page


def render_page(history: Path, page: Path) -> None:
    """Rewrite ``page``'s generated blocks from the results file ``history``."""
    if not page.is_file():
        raise UserError(f"no benchmark page at {page}")
    files.write_text(page, render(page.read_text(encoding="utf-8"), read(history)))
