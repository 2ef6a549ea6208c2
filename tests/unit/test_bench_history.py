"""The benchmark's results file and its docs page: the page's figures are the file's rendering
(never typed), a regression shows up as a line, and only full runs are judged."""

from __future__ import annotations

import json

import pytest

from rnnlab.bench import __main__ as bench
from rnnlab.bench import history
from rnnlab.errors import UserError

PAGE = """# Benchmarks
prose stays
<!-- bench:latest -->
stale
<!-- /bench:latest -->
more prose
<!-- bench:history -->
<!-- /bench:history -->
"""


def test_the_docs_page_is_the_results_files_rendering():
    """docs/benchmarks.md's generated blocks are exactly what `python -m rnnlab.bench
    render=true` makes of docs/benchmarks/history.jsonl: a figure typed by hand, or a results
    line committed without re-rendering, fails here."""
    page = history.PAGE.read_text(encoding="utf-8")
    assert history.render(page, history.read(history.HISTORY)) == page


def results(of_bound: float, overhead: float, quick: bool = False, cpu: str = "CPU A") -> dict:
    """A bench's results as ``measure`` builds them, for one cell and the diagnostics."""
    case = {"chars_per_sec": 9e4, "vs_naive": 5.0, "fraction_of_gemm_bound": of_bound,
            "vs_numpy_cells": 2.0}  # fmt: skip
    return {
        "date": "2026-12-07T10:00:00+00:00",
        "command": "python -m rnnlab.bench",
        "quick": quick,
        "machine": {"cpu": cpu, "logical_cpus": 2},
        "settings": {"rounds": 7, "block_seconds": 0.5, "vocab_size": 62},
        "engine": {
            "gru": {
                "naive B=1 float64": {"chars_per_sec": 1e4},
                "B=1 float64": case,
                "B=32 float32": case,
            }
        },  # fmt: skip
        "diagnostics": {"adder": {"wall": {"overhead_pct": overhead}}},
    }


def test_a_line_holds_every_figure_and_the_targets_and_only_a_full_run_is_judged():
    full = history.record(results(0.55, 2.0), [1.0, 1.0, 1.0], full=True)
    assert full["figures"]["gru B=1 float64 of bound"] == 0.55
    assert full["figures"]["gru B=1 float64 × naive"] == 5.0
    assert full["figures"]["diagnostics overhead % (adder)"] == 2.0
    targets = {t["figure"]: (t["op"], t["bound"]) for t in full["targets"]}
    assert targets["gru B=1 float64 of bound"] == (">=", 0.5)
    assert targets["gru B=32 float32 of bound"] == (">=", 0.6)
    assert targets["diagnostics overhead % (adder)"] == ("<=", 3.0)
    assert full["met"]["gru B=1 float64 of bound"] is True
    assert full["met"]["gru B=32 float32 of bound"] is False  # 55% < 60%
    assert full["load_average"]["before"] == [1.0, 1.0, 1.0] and full["commit"]
    quick = history.record(results(0.1, 50.0, quick=True), None, full=False)
    assert "met" not in quick and quick["targets"]  # recorded, never judged


def test_the_page_shows_the_latest_full_run_and_one_line_per_full_run(tmp_path):
    path = tmp_path / "history.jsonl"
    lines = [
        history.record(results(0.40, 1.0), [2.0, 2.0, 2.0], full=True),
        history.record(results(0.58, 1.5), [1.0, 1.0, 1.0], full=True),
        history.record(results(0.99, 0.0, quick=True), [9.0, 9.0, 9.0], full=False),
        history.record(results(0.62, 4.0), [1.5, 1.0, 1.0], full=True),
    ]
    for i, line in enumerate(lines):
        line["date"] = f"2026-12-0{i + 1}T10:00:00+00:00"
        history.append(path, line)
    assert [json.loads(s)["quick"] for s in path.read_text().splitlines()] == [
        False, False, True, False
    ]  # fmt: skip
    page = history.render(PAGE, history.read(path))
    assert "prose stays" in page and "more prose" in page and "stale" not in page
    latest = page.split("<!-- bench:latest -->")[1].split("<!-- /bench:latest -->")[0]
    assert "2026-12-04T10:00:00+00:00" in latest  # the last full run, not the quick one
    # judged on the median of the last three full runs: 40%, 58%, 62% -> 58% met; the
    # diagnostics' 1.0, 1.5, 4.0 -> +1.5% met although the latest run alone missed it
    assert "| gru B=1 float64 of bound ≥ 50% | 62% | 58% (3) | met |" in latest
    assert "| diagnostics overhead % (adder) ≤ 3.0% | +4.0% | +1.5% (3) | met |" in latest
    assert "| gru B=32 float32 of bound ≥ 60% | 62% | 58% (3) | **missed** |" in latest
    rows = page.split("<!-- bench:history -->")[1].split("<!-- /bench:history -->")[0]
    dated = [r for r in rows.splitlines() if r.startswith("| 2026")]
    assert [r[2:12] for r in dated] == ["2026-12-04", "2026-12-02", "2026-12-01"]  # newest first
    assert "99%" not in rows  # a quick run is not a line of the history
    assert history.render(page, history.read(path)) == page  # rendering twice changes nothing


def test_another_machines_runs_are_not_in_the_median():
    runs = [history.record(results(0.9, 0.0, cpu="fast"), None, full=True),
            history.record(results(0.45, 0.0), None, full=True)]  # fmt: skip
    target = {"figure": "gru B=1 float64 of bound", "op": ">=", "bound": 0.5}
    assert history.judged(runs, target) == (0.45, 1)


def test_a_page_without_its_blocks_is_one_line():
    with pytest.raises(UserError, match="no <!-- bench:latest -->"):
        history.render("# just prose\n", [])


def test_verdicts_only_from_runs_long_enough():
    defaults = {"quick": False}
    assert bench.full_run(defaults, bench.settings_of(defaults)) == (True, "")
    quick = {"quick": True}
    assert bench.full_run(quick, bench.settings_of(quick))[0] is False
    short = {"quick": False, "rounds": 2, "diag_rounds": 1}
    full, why = bench.full_run(short, bench.settings_of(short))
    assert not full and "rounds=2 < 5" in why and "diag_rounds=1 < 3" in why


IMPORTTIME = """import time: self [us] | cumulative | imported package
import time:      1200 |       1200 |   _io
import time:    300000 |     300000 |       mlflow.entities
import time:    500000 |     800000 |     mlflow
import time:     90000 |      90000 |   numba.core
import time:     40000 |     130000 | numba
some other line a run printed
"""


def run_startup(existing_cpu: float, fresh_cpu: float) -> dict:
    """A start-up section as ``rnnlab.bench.run_startup.figures`` returns it."""
    from rnnlab.bench.run_startup import CASES, import_breakdown

    cases = {"existing": existing_cpu, "fresh": fresh_cpu, "fresh, no cache": fresh_cpu + 1.5}
    assert set(cases) == set(CASES)
    return {
        "command": "python -m rnnlab.run iterations=1",
        "rounds": 3,
        **{case: {"cpu_seconds": cpu, "wall_seconds": cpu + 0.5} for case, cpu in cases.items()},
        "mlflow_imports_cpu_seconds": 2.1,
        "importtime": import_breakdown(IMPORTTIME),
    }


def test_an_import_time_breakdown_sums_self_time_by_package():
    from rnnlab.bench.run_startup import import_breakdown

    got = import_breakdown(IMPORTTIME)
    assert got["packages"] == [["mlflow", 0.8], ["numba", 0.13], ["_io", 0.0012]]
    assert got["total_seconds"] == pytest.approx(0.9312)


def test_the_start_up_figures_are_recorded_judged_and_rendered(tmp_path):
    """Each case's CPU and wall seconds and MLflow's import floor are figures; the existing and
    fresh stores' CPU have targets (≤ 2.5 s, ≤ 3.5 s); the page shows them and the top of the
    import-time breakdown."""
    r = results(0.55, 2.0) | {"run_startup": run_startup(2.4, 3.9)}
    line = history.record(r, [1.0, 1.0, 1.0], full=True)
    f = line["figures"]
    assert f["run start-up, existing store (s CPU)"] == 2.4
    assert f["run start-up, fresh store (s wall)"] == 4.4
    assert f["run start-up, fresh, no cache store (s CPU)"] == 5.4
    assert f["MLflow's imports alone (s CPU)"] == 2.1
    assert line["met"]["run start-up, existing store (s CPU)"] is True
    assert line["met"]["run start-up, fresh store (s CPU)"] is False  # 3.9 > 3.5
    path = tmp_path / "history.jsonl"
    history.append(path, line)
    only = history.record({**r, "engine": {}, "diagnostics": {}}, None, full=True)
    history.append(path, only | {"date": "2026-12-08T10:00:00+00:00"})  # the section alone
    page = history.render(PAGE + "<!-- bench:run_startup -->\n<!-- /bench:run_startup -->\n",
                          history.read(path))  # fmt: skip
    latest = page.split("<!-- /bench:latest -->")[0]
    assert "2026-12-07T10:00:00+00:00" in latest  # a start-up-only run is not the latest run
    block = page.split("<!-- bench:run_startup -->")[1]
    assert "2026-12-08T10:00:00+00:00" in block
    assert "| an existing store | 2.40 s | 2.90 s |" in block
    assert "| run start-up, existing store (s CPU) ≤ 2.50 s | 2.40 s | 2.40 s (2) | met |" in block
    assert "| run start-up, fresh store (s CPU) ≤ 3.50 s | 3.90 s | 3.90 s (2) | **missed** |" in (
        block
    )
    assert "| 2.10 s | |" in block  # MLflow's imports alone
    assert "0.93 s in all" in block and "| mlflow | 0.800 |\n| numba | 0.130 |" in block
    assert history.render(page, history.read(path)) == page  # rendering twice changes nothing
    assert history.render(PAGE, history.read(path))  # a page without the block: still rendered
