"""The benchmark runs end to end: ``python -m rnnlab.bench quick=true json=…`` in a subprocess
writes every figure the README's table is made of. Timings on a shared machine are noise at this
size, so nothing here asserts a speed; the figures only have to be there and be positive."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers.processes import run_cli

ENGINE_CASES = ("B=1 float64", "B=1 float32", "B=32 float32", "B=128 float32")
ENGINE_FIELDS = (
    "chars_per_sec",
    "cpu_chars_per_sec",
    "vs_naive",
    "cpu_vs_naive",
    "gemm_bound_chars_per_sec",
    "gemm_bound_cpu_chars_per_sec",
    "fraction_of_gemm_bound",
    "cpu_fraction_of_gemm_bound",
)
TRACKING_FIELDS = ("mlflow_seconds", "off_seconds", "overhead_pct", "fixed_seconds",
                   "per_iteration_pct", "default_run_overhead_pct")  # fmt: skip


def positive(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


@pytest.mark.slow  # end to end: the benchmark CLI in a subprocess
def test_quick_bench_writes_every_figure(kafka_path: Path, tmp_path: Path):
    out = tmp_path / "bench.json"
    result = run_cli(
        ["quick=true", f"corpus={kafka_path}", f"json={out}"],
        cwd=tmp_path,
        module="rnnlab.bench",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "B=32 float32" in result.stdout and "tracking (wall)" in result.stdout
    figures = json.loads(out.read_text())

    assert figures["quick"] is True
    assert figures["date"][:4].isdigit()
    machine = figures["machine"]
    assert machine["cpu"] and machine["numpy"] and machine["logical_cpus"] >= 1
    assert machine["blas"] and all("internal_api" in lib for lib in machine["blas"])
    assert figures["settings"]["vocab_size"] > 1 and figures["settings"]["blas_threads"] == 1

    engine = figures["engine"]
    assert positive(engine["naive B=1 float64"]["chars_per_sec"])
    for case in ENGINE_CASES:
        for field in ENGINE_FIELDS:
            assert positive(engine[case][field]), (case, field, engine[case][field])

    tracking = figures["tracking"]
    assert tracking["iterations"] >= 1 and tracking["rounds"] >= 1
    for clock in ("wall", "cpu"):
        for field in TRACKING_FIELDS:
            value = tracking[clock][field]
            assert isinstance(value, float) and math.isfinite(value), (clock, field, value)
        assert positive(tracking[clock]["mlflow_seconds"])
        assert positive(tracking[clock]["off_seconds"])
    # issue 12's floor: the adder's points of the metrics the issue names, recorded alone
    floor = figures["diagnostics_adder_floor"]
    assert floor["points"] == 100 and floor["window"] == 100  # every 100 of 10,000 iterations
    assert len(floor["issue_metrics"]) == 15 and "diag/grad_decay" in floor["issue_metrics"]
    assert "diag/clip_frac" in floor["issue_metrics"]
    assert not [n for n in floor["issue_metrics"] if n.startswith("diag/clip_frac/")]
    for field in ("record_seconds", "probe_seconds", "record_pct", "probe_pct", "floor_pct"):
        assert positive(floor[field]), (field, floor[field])
    assert "diagnostics floor (adder" in result.stdout
    assert set(figures["targets"]) >= {"B=1 float64 >= 3x naive", "B=32 float32 >= 20x naive"}
    assert all(isinstance(v, bool) for v in figures["targets"].values())


def test_a_corpus_it_cannot_read_is_one_line_and_exit_2(tmp_path: Path):
    """No timing starts and no traceback: the missing file is named on one line."""
    missing = tmp_path / "no-such-corpus.txt"
    result = run_cli([f"corpus={missing}", "quick=true"], cwd=tmp_path, module="rnnlab.bench")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"rnnlab: error: cannot read corpus {missing}: No such file or directory"
    ]
    assert "Traceback" not in result.stderr and result.stdout == ""
