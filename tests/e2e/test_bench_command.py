"""The benchmark runs end to end: ``python -m rnnlab.bench quick=true …`` in a subprocess says what
it measures, prints every figure and no verdict, reports the run's vocabulary, and appends one
line to its results file (and re-renders the page). Timings on a shared machine are noise at
this size, so nothing here asserts a speed; the figures only have to be there and be positive."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers.processes import run_cli

from rnnlab.bench.engine import ROWS
from rnnlab.tasks import corpus

ENGINE_FIELDS = ("chars_per_sec", "cpu_chars_per_sec", "gemm_bound_chars_per_sec",
                 "fraction_of_gemm_bound", "cpu_fraction_of_gemm_bound")  # fmt: skip
TRACKING_FIELDS = ("mlflow_seconds", "off_seconds", "overhead_pct", "fixed_seconds",
                   "per_iteration_pct", "default_run_overhead_pct")  # fmt: skip
PAGE = "\n".join(f"<!-- {m}bench:{b} -->" for b in ("latest", "history") for m in ("", "/"))


def positive(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


@pytest.mark.slow  # end to end: the benchmark CLI in a subprocess, and the runs it starts
def test_quick_bench_prints_figures_without_verdicts_and_records_them(kafka_path, tmp_path):
    out, results, page = tmp_path / "bench.json", tmp_path / "history.jsonl", tmp_path / "b.md"
    page.write_text(PAGE)
    result = run_cli(
        ["quick=true", f"corpus={kafka_path}", f"json={out}", f"history={results}",
         f"page={page}", "run_startup=false"],  # its own test: test_run_startup_bench.py
        cwd=tmp_path,
        module="rnnlab.bench",
        timeout=900,
    )  # fmt: skip
    print(result.stdout)
    assert result.returncode == 0, result.stderr
    stdout = result.stdout

    # what it measures, the run's own vocabulary, and no verdict on a run this short
    vocab = len(set(corpus.strip_gutenberg(corpus.read_text(kafka_path))))
    assert vocab < len(set(corpus.read_text(kafka_path)))  # the licence adds symbols
    assert f"vocabulary {vocab} (the run's" in stdout
    assert "chars/s of the char-RNN training step" in stdout and "of bound: over" in stdout
    assert "no verdicts: a quick run" in stdout
    assert "MISSED" not in stdout and " met" not in stdout and "target " not in stdout
    for cell, cases in ROWS.items():
        for case in cases:
            assert f"{cell:<6}{case:<15}" in stdout
    assert "tracking (wall)" in stdout and "diagnostics (adder, iterations=200" in stdout

    figures = json.loads(out.read_text())
    assert figures["quick"] is True and figures["full"] is False and figures["met"] == {}
    assert figures["settings"]["vocab_size"] == vocab
    machine = figures["machine"]
    assert machine["cpu"] and machine["numpy"] and machine["logical_cpus"] >= 1
    assert machine["blas"] and all("internal_api" in lib for lib in machine["blas"])
    for cell, cases in ROWS.items():
        assert positive(figures["engine"][cell]["naive B=1 float64"]["chars_per_sec"])
        for case in cases:
            got = figures["engine"][cell][case]
            for field in ENGINE_FIELDS + ("vs_naive",):
                assert positive(got[field]), (cell, case, field, got)
            if case.startswith("B=1 "):  # every cell's kernels run at B = 1: timed against
                assert positive(got["vs_numpy_cells"])  # the numpy cells
    for clock in ("wall", "cpu"):
        for field in TRACKING_FIELDS:
            assert math.isfinite(figures["tracking"][clock][field]), (clock, field)
    for task in ("charrnn", "adder"):
        d = figures["diagnostics"][task]
        assert d["iterations"] == 200 and d["rounds"] == 1
        assert positive(d["wall"]["on_seconds"]) and positive(d["cpu"]["off_seconds"])

    # one line in the results file: when, which commit, which machine, the load, each figure
    (line,) = [json.loads(s) for s in results.read_text().splitlines()]
    assert line["date"] == figures["date"] and line["commit"] and line["machine"] == machine
    assert len(line["load_average"]["before"]) == 3 and len(line["load_average"]["after"]) == 3
    assert line["quick"] is True and line["full"] is False and "met" not in line
    assert (
        line["figures"]["rnn B=1 float64 of bound"]
        == (figures["engine"]["rnn"]["B=1 float64"]["fraction_of_gemm_bound"])
    )
    assert "diagnostics overhead % (adder)" in line["figures"]
    assert {t["figure"] for t in line["targets"]} <= set(line["figures"])
    assert f"recorded in {results}" in stdout
    assert "No full run recorded yet" in page.read_text()  # re-rendered: a quick run is no line


def test_a_corpus_it_cannot_read_is_one_line_and_exit_2(tmp_path: Path):
    """No timing starts and no traceback: the missing file is named on one line."""
    missing = tmp_path / "no-such-corpus.txt"
    result = run_cli(
        [f"corpus={missing}", "quick=true", f"history={tmp_path / 'h.jsonl'}"],
        cwd=tmp_path,
        module="rnnlab.bench",
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"rnnlab: error: cannot read corpus {missing}: No such file or directory"
    ]
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not (tmp_path / "h.jsonl").exists()  # nothing recorded


def test_an_unknown_cell_is_one_line_and_exit_2(tmp_path: Path):
    result = run_cli(
        ["cells=rnn,grue", f"history={tmp_path / 'h.jsonl'}"], cwd=tmp_path, module="rnnlab.bench"
    )
    assert result.returncode == 2, result.stderr
    assert "cells='rnn,grue': no rows for grue" in result.stderr
    assert result.stdout == ""
