"""The start-up section of the benchmark end to end: ``python -m rnnlab.bench`` with only
``run_startup`` on starts real ``python -m rnnlab.run iterations=1`` processes on an existing, a
fresh and an uncached fresh store, prints each one's CPU and wall seconds, MLflow's import floor
and the top of the import-time breakdown, and records them. Only the output's shape is checked:
timings on a shared machine are noise."""

from __future__ import annotations

import json
import math
import re

import pytest
from helpers.processes import run_cli

from rnnlab.bench.run_startup import CASES, TOP

PAGE = "\n".join(f"<!-- {m}bench:{b} -->" for b in ("latest", "history") for m in ("", "/"))
OFF = ["engine=false", "startup=false", "new_cells=false", "tracking=false", "diagnostics=false"]


def positive(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


@pytest.mark.slow  # end to end: the bench in a subprocess and the runs it starts
def test_the_start_up_section_prints_and_records_every_case(tmp_path):
    out, results, page = tmp_path / "bench.json", tmp_path / "history.jsonl", tmp_path / "b.md"
    page.write_text(PAGE)
    result = run_cli(
        ["quick=true", *OFF, f"json={out}", f"history={results}", f"page={page}"],
        cwd=tmp_path,
        module="rnnlab.bench",
        timeout=900,
    )
    print(result.stdout)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(s.startswith("run start-up: `python -m rnnlab.run iterations=1`") for s in lines)
    for case in CASES:  # | store | CPU s | wall s | target |
        (row,) = [s for s in lines if s.startswith(f"| {case} |")]
        cpu, wall = (float(x) for x in row.split("|")[2:4])
        assert cpu > 0 and wall > 0
    assert any(re.match(r"MLflow's imports alone \(.*\): \d+\.\d\d s CPU", s) for s in lines)
    top = [s for s in lines if re.match(r"^ +\d+\.\d{3} s  \S+$", s)]
    assert len(top) == TOP and any(s.endswith(" mlflow") for s in top)

    figures = json.loads(out.read_text())["run_startup"]
    assert figures["rounds"] == 1
    for case in CASES:
        assert positive(figures[case]["cpu_seconds"]) and positive(figures[case]["wall_seconds"])
    assert positive(figures["mlflow_imports_cpu_seconds"])
    packages = dict(figures["importtime"]["packages"])
    assert {"mlflow", "rnnlab", "numpy"} <= set(packages)
    (line,) = [json.loads(s) for s in results.read_text().splitlines()]
    assert (
        line["figures"]["run start-up, existing store (s CPU)"]
        == (figures["existing"]["cpu_seconds"])
    )
    assert (
        line["run_startup_imports"]["packages"][0][1]
        >= line["run_startup_imports"]["packages"][-1][1]
    )
    assert "met" not in line  # a quick run is recorded, never judged
