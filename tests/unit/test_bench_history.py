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
