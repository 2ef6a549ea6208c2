"""The main job's before/after page block (experiments/main_job_speed/run.py): every figure it
states is computed from the results file — the ratios over pairs, the seed spread and whether the
seed-0 runs lie within it — and the committed page is the committed file's rendering. No timing
is asserted: the file's runs are made up."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from rnnlab.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "experiments" / "main_job_speed" / "run.py"


@pytest.fixture(scope="module")
def speed():
    spec = importlib.util.spec_from_file_location("main_job_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(kind, version, seed, wall, cpu, smooth, warm, pair=None) -> dict:
    r = {"kind": kind, "version": version, "seed": seed, "wall_seconds": wall,
         "cpu_seconds": cpu, "load_at_start": [1.0, 1.0, 1.0], "final/smooth_loss": smooth,
         "val/loss_warm": warm}  # fmt: skip
    return r | ({"pair": pair} if pair else {})


def fake_results() -> dict:
    commit = {"commit": "a" * 40, "short": "aaaaaaa", "subject": "before", "library_changed": False,
              "library_commit": "aaaaaaa"}  # fmt: skip
    return {
        "date": "2026-12-07T20:00:00+00:00",
        "command": "python experiments/main_job_speed/run.py",
        "machine": {"cpu": "CPU A", "logical_cpus": 2},
        "before": commit,
        "after": commit | {"short": "bbbbbbb", "library_commit": "bbbbbbb"},
        "load_average": {"before": [1.0, 1.5, 2.0], "after": [1.2, 1.4, 1.9]},
        "iterations": None,
        "runs": [
            run("startup", "before", 0, 14.0, 10.0, 99.0, 3.0, pair=1),
            run("pair", "before", 0, 120.0, 110.0, 36.0, 1.62, pair=1),
            run("startup", "after", 0, 12.0, 8.0, 99.0, 3.0, pair=1),
            run("pair", "after", 0, 40.0, 36.0, 36.5, 1.64, pair=1),
            run("startup", "after", 0, 12.0, 9.0, 99.0, 3.0, pair=2),
            run("pair", "after", 0, 50.0, 37.0, 36.5, 1.64, pair=2),
            run("startup", "before", 0, 14.0, 11.0, 99.0, 3.0, pair=2),
            run("pair", "before", 0, 110.0, 115.0, 36.0, 1.62, pair=2),
            # seeds: smooth 35, 36, 37, 38 (mean 36.5, sd 1.29); warm 1.60, 1.62, 1.64, 1.66
            *(run("seed", "after", s, 40.0, 36.0, 34.0 + s, 1.58 + 0.02 * s) for s in (1, 2, 3, 4)),
        ],
    }


def test_the_ratios_are_medians_over_pairs_and_the_spread_is_over_the_other_seeds(speed):
    s = speed.summarise(fake_results())
    assert s["wall_ratios"] == [3.0, 2.2] and s["wall_ratio"] == pytest.approx(2.6)
    assert s["cpu_ratio"] == pytest.approx((110 / 36 + 115 / 37) / 2)
    smooth = s["figures"]["final/smooth_loss"]
    assert smooth["mean"] == pytest.approx(36.5) and (smooth["min"], smooth["max"]) == (35, 38)
    assert smooth["sd"] == pytest.approx(1.2910, abs=1e-4)
    assert smooth["before"] == [36.0] and smooth["after"] == [36.5]  # both pairs' runs agree
    assert smooth["within"] == {"before": True, "after": True}
    assert smooth["difference_in_sd"] == pytest.approx(0.5 / 1.2910, abs=1e-4)
    # besides start-up (the same job for one iteration): 100 and 104 s before, 28 and 28 after
    assert s["startup_cpu"] == {"before": 10.5, "after": 8.5}
    assert s["rest_cpu"] == {"before": 102.0, "after": 28.0}
    assert s["rest_cpu_ratio"] == pytest.approx((100 / 28 + 104 / 28) / 2)


def test_a_run_outside_mean_plus_two_sd_is_said_to_be(speed):
    results = fake_results()
    for r in results["runs"]:
        if r["kind"] == "pair" and r["version"] == "before":
            r["val/loss_warm"] = 1.90  # seeds' 1.63 ± 2 × 0.026: far outside
    s = speed.summarise(results)
    assert s["figures"]["val/loss_warm"]["within"] == {"before": False, "after": True}
    page = speed.markdown(results)
    assert (
        "| val/loss_warm | 1.6300 ± 0.0258 | 1.6000–1.6600 | 1.5784–1.6816 | 1.9000 | 1.6400 |"
        in page
    )
    assert page.rstrip().endswith("| after |")


def test_the_block_states_the_files_figures(speed, tmp_path):
    results = tmp_path / "results.json"
    results.write_text(json.dumps(fake_results()))
    page = tmp_path / "page.md"
    page.write_text(
        "# Benchmarks\nprose\n<!-- bench:main_job -->\nstale\n<!-- /bench:main_job -->\nend\n"
    )
    speed.render_page(results, page)
    text = page.read_text()
    assert (
        "stale" not in text and text.startswith("# Benchmarks\nprose\n") and text.endswith("end\n")
    )
    assert "wall time 2.60× (pairs: 3.00, 2.20), CPU time 3.08×" in text
    assert "the target ≥ 2.5× is met on wall time and met on CPU time" in text
    assert "load average (1 / 5 / 15 min) 1.0 / 1.5 / 2.0 before and 1.2 / 1.4 / 1.9 after" in text
    assert "| pair 2, before | 0 | 110.0 | 115.0 | 1.0 | 36.0000 | 1.6200 |" in text
    assert "| pair 1, after, `iterations=1` | 0 | 12.0 | 8.0 |" in text
    assert "costs 10.5 s before and 8.5 s after" in text
    assert "102.0 s before and 28.0 s after, 3.64× faster" in text
    assert "| final/smooth_loss | 36.5000 ± 1.2910 | 35.0000–38.0000 | 33.9180–39.0820 |" in text
    before = text
    speed.render_page(results, page)
    assert page.read_text() == before  # rendering twice changes nothing
    page.write_text("# no block\n")
    with pytest.raises(UserError, match="bench:main_job"):
        speed.render_page(results, page)


def test_the_docs_page_is_the_committed_results_files_rendering(speed):
    """docs/benchmarks.md's main-job block is what `run.py render=true` makes of
    experiments/main_job_speed/results.json: a typed figure or an unrendered file fails here."""
    text = speed.PAGE.read_text(encoding="utf-8")
    a, b = text.index(speed.MARKERS[0]), text.index(speed.MARKERS[1])
    block = text[a + len(speed.MARKERS[0]) : b].strip("\n")
    assert block == speed.markdown(json.loads(speed.RESULTS.read_text(encoding="utf-8")))
