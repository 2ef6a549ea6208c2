"""The memory-horizon study: its rules (how many seeds make a T solved, where the gradient has
faded), and the study file run for real through ``python -m rnnlab.run -m +study=…``, shrunk on
the command line, whose report's Memory horizon section must agree with runs.csv and MLflow."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers.report import parent_of, read_csv, report_dir, sweep
from PIL import Image

from rnnlab.report.memory import TaskHorizon, faded_at, horizon_of, needed, summarise, tables


def test_two_thirds_of_the_seeds_make_a_t_solved():
    assert [needed(2 / 3, n) for n in (1, 2, 3, 4, 5, 6)] == [1, 2, 2, 3, 4, 4]
    rows = pd.DataFrame({"T": [10, 20, 40, 80], "runs": [3, 3, 3, 3], "solved": [3, 2, 1, 2]})
    assert horizon_of(rows) == 80.0  # the largest T solved, even past a T that was not
    rows["solved"] = [1, 1, 0, 0]
    assert horizon_of(rows) is None
    rows["beat"] = [3, 3, 2, 0]
    assert horizon_of(rows, "beat") == 40.0


def test_a_diverged_run_counts_as_not_solved_and_is_named_beside_the_mean():
    nan = float("nan")
    runs = pd.DataFrame({
        "group": ["irnn"] * 3, "T": [64] * 3, "seed": [0, 1, 2], "metric": [0.12, nan, nan],
        "solved_metric": [0.3, nan, nan], "baseline": [1 / 6, nan, nan],
        "solved": [False] * 3, "beat": [True, False, False], "iters": [nan] * 3,
        "diverged": [False, True, True],
    })  # fmt: skip
    rows = summarise(runs)
    assert rows[["runs", "solved", "beat", "diverged"]].iloc[0].tolist() == [3, 0, 1, 2]
    assert rows["metric_mean"].iloc[0] == 0.12  # over the one run that did not diverge
    th = TaskHorizon("adding", "val/mse", ("val/solved_frac", 0.95), rows, {"irnn": None},
                     {"irnn": None}, {"irnn": None}, {"irnn": 64})  # fmt: skip
    (_, _, metric_rows) = tables(th)[1]
    assert metric_rows == [["irnn", "0.1200 (0/3, 2 diverged)"]]


def test_the_gradient_fades_where_it_first_drops_below_a_thousandth():
    d = np.arange(1, 8, dtype=float)
    assert faded_at(np.stack([d, [1, 0.1, 0.01, 2e-3, 9e-4, 1e-2, 1e-5]])) == 5
    assert faded_at(np.stack([d, [1, 0.1, np.nan, 1, 1, 1, 1]])) == 3  # an underflow counts
    assert faded_at(np.stack([d, np.ones(7)])) is None
    assert faded_at(None) is None


@pytest.mark.slow
def test_the_study_file_runs_and_its_report_agrees_with_the_runs(tmp_path):
    done = sweep(tmp_path, ["+study=memory_horizon", "task=adding", "task.length=4,8",
                            "cell=gru", "iterations=200", "eval_every=50",
                            "task.eval_size=100"])  # fmt: skip
    out = report_dir(done, tmp_path)
    client, parent = parent_of(tmp_path)
    swept = client.get_run(parent).data.tags["rnnlab.swept_keys"].split()
    assert set(swept) == {"task", "task.length", "cell", "seed"}  # the file's grid, and ours
    runs = read_csv(out / "runs.csv")
    assert len(runs) == 6 and {r["task"] for r in runs} == {"adding"}
    horizon = read_csv(out / "horizon.csv")
    assert [(r["group"], r["T"], r["runs"]) for r in horizon] == [
        ("gru", "4", "3"),
        ("gru", "8", "3"),
    ]
    for row in horizon:  # the solved counts are the runs that logged iters_to_solve
        mine = [r for r in runs if r["task.length"] == row["T"]]
        assert int(row["solved"]) == sum(r["iters_to_solve"] != "" for r in mine)
        mse = [float(r["final_val_mse"]) for r in mine]
        assert float(row["metric_mean"]) == pytest.approx(np.mean(mse), rel=1e-12)
        assert float(row["baseline"]) == pytest.approx(1 / 6)
    solved = {int(r["T"]) for r in horizon if int(r["solved"]) >= 2}
    expected = str(float(max(solved))) if solved else ""
    assert {r["horizon"] for r in horizon} == {expected}
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "## Memory horizon" in md and "### adding: horizon and gradient" in md
    for name in ("horizon_adding.png", "horizon_iters_adding.png", "horizon_grad_flow_adding.png"):
        assert f"]({name})" in md
        Image.open(out / name).verify()  # a real PNG
    print(md[md.index("## Memory horizon") : md.index("![Memory horizon")])
