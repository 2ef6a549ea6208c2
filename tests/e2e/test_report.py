"""The comparison report (rnnlab.report), end to end on real sweeps.

The slow tests launch real sweeps through ``python -m rnnlab.run -m`` (tiny iteration counts, a
real SQLite store in a temp folder) and check the report the Hydra callback wrote against values
read back from MLflow directly — not against the report's own code paths.
"""

from __future__ import annotations

import base64
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers.processes import run_cli
from helpers.report import (
    TINY,
    XSS,
    Page,
    children,
    close,
    decode_png,
    make_corpus,
    parent_of,
    read_csv,
    report_dir,
    sweep,
)
from PIL import Image

from rnnlab import cli
from rnnlab.errors import UserError
from rnnlab.report import __main__ as report
from rnnlab.report.render import md_code
from rnnlab.report.select import cast_param
from rnnlab.report.tables import mean_std_n, swept_from_overrides, varying

# --- fast: the pieces ---------------------------------------------------------------------------


def test_params_are_cast_back_to_their_config_types():
    assert cast_param("hidden_size", "100") == 100 and isinstance(cast_param("seed", "3"), int)
    assert cast_param("learning_rate", "0.1") == 0.1
    assert cast_param("optimizer.clip", "None") is None  # float | None
    assert cast_param("optimizer.clip", "5.0") == 5.0
    assert cast_param("tracking.enabled", "False") is False
    assert cast_param("prime", "None") == "None"  # a plain str field keeps the text
    assert cast_param("task.name", "adder") == "adder"
    assert cast_param("not.in.schema", "7") == 7 and cast_param("not.in.schema", "x") == "x"


def test_mean_std_n_format():
    import pandas as pd

    assert mean_std_n(pd.Series([1.0, 2.0, 3.0]), 3, "final_val_loss") == "2.0000 ± 1.0000 (n=3)"
    assert mean_std_n(pd.Series([1.5, math.nan]), 2, "final_val_loss") == "1.5000 (n=1/2)"
    assert mean_std_n(pd.Series([math.nan]), 1, "iters_to_100") == "– (n=0/1)"


def test_swept_parameters_come_from_the_sweep_overrides():
    params = {"hidden_size", "learning_rate", "seed", "task.name", "iterations"}
    got = swept_from_overrides("task=adder,charrnn hidden_size=8,16 seed=0,1 iterations=5", params)
    assert got == ["task.name", "hidden_size"]  # seed is what gets averaged, not a parameter


def test_a_key_older_runs_did_not_log_varies_only_away_from_its_default():
    """Runs of code from before ``lru.r_min`` and ``dropout`` existed beside newer runs: the
    key at its default splits nothing (before: every cell's group was labelled
    ``cell=gru … r_min=None`` beside ``cell=lru … r_min=0.0``); away from it, it does."""
    old = {"cell": "gru", "seed": 0}
    new = {"cell": "lru", "seed": 0, "lru.r_min": 0.0, "indrnn.horizon": None, "dropout": 0.5}
    assert varying([old, new]) == ["cell", "dropout"]
    assert varying([old, {**new, "lru.r_min": 0.9}]) == ["cell", "dropout", "lru.r_min"]
    assert varying([{"gone.key": 1}, {}]) == ["gone.key"]  # not in the schema: None


def test_markdown_fence_cannot_be_closed_by_the_sample():
    block = md_code("a ``` b ```` c")
    assert block.startswith("`````text\n") and block.endswith("\n`````")


@pytest.mark.parametrize(
    "args, message",
    [
        (["hidden_size=3"], "hidden_size is not a key of rnnlab.report"),
        (["sweep"], "not key=value"),
        (["samples_at=10,x"], "samples_at"),
        (["samples_at=0"], "≥ 1"),
        (["log=maybe"], "true or false"),
    ],
)
def test_bad_arguments_are_one_line(args, message):
    with pytest.raises(UserError, match=message):
        cli.call(report.COMMAND, report.run, args)


def test_cli_errors_exit_2_without_traceback(tmp_path):
    missing = run_cli(["tracking_uri=sqlite:///" + str(tmp_path / "none.db")], tmp_path,
                      module="rnnlab.report")  # fmt: skip
    bad = run_cli(["colour=red"], tmp_path, module="rnnlab.report")
    for done in (missing, bad):
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    assert "no MLflow store" in missing.stderr
    assert not (tmp_path / "none.db").exists()  # the report never creates a store


# --- slow: real sweeps --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def charrnn_sweep(tmp_path_factory, kafka_path):
    """2 × 2 configurations × 2 seeds of the char-RNN, every sample starting with <script>."""
    tmp = tmp_path_factory.mktemp("report_sweep")
    corpus = make_corpus(tmp / "corpus.txt")
    done = sweep(tmp, [f"data.path={corpus}", f"prime='{XSS}'", "hidden_size=8,16",
                       "learning_rate=0.05,0.1", "seed=0,1", *TINY])  # fmt: skip
    return tmp, report_dir(done, tmp)


@pytest.fixture(scope="module")
def failing_sweep(tmp_path_factory, kafka_path):
    """Three learning rates; 1e4 diverges at once, so exactly one child run FAILS."""
    tmp = tmp_path_factory.mktemp("report_fail")
    corpus = make_corpus(tmp / "corpus.txt")
    done = sweep(tmp, [f"data.path={corpus}", "hidden_size=8", "learning_rate=0.05,0.1,10000",
                       *TINY])  # fmt: skip
    return tmp, report_dir(done, tmp)


@pytest.mark.slow
def test_every_number_in_runs_csv_equals_mlflow(charrnn_sweep):
    tmp, out = charrnn_sweep
    client, parent_id = parent_of(tmp)
    runs = {r.info.run_id: r for r in children(client, parent_id)}
    rows = read_csv(out / "runs.csv")
    assert len(rows) == len(runs) == 8
    assert {r["run_id"] for r in rows} == set(runs)
    for row in rows:
        run = runs[row["run_id"]]
        m, p = run.data.metrics, run.data.params
        hist = {k: [x.value for x in client.get_metric_history(run.info.run_id, k)]
                for k in ("train/smooth_loss", "val/loss", "val/bpc")}  # fmt: skip
        assert row["status"] == run.info.status == "FINISHED"
        assert int(row["hidden_size"]) == int(p["hidden_size"])
        assert float(row["learning_rate"]) == float(p["learning_rate"])
        assert int(row["seed"]) == int(p["seed"])
        assert close(row["final_val_loss"], m["final/val_loss"])
        assert close(row["objective"], m["final/val_loss_warm"])  # the char-RNN's default
        assert close(row["final_val_loss_warm"], m["final/val_loss_warm"])
        assert close(row["best_val_loss"], min(hist["val/loss"]))
        assert close(row["best_val_bpc"], min(hist["val/bpc"]))
        assert close(row["final_smooth_loss"], m["final/smooth_loss"])
        assert close(row["best_smooth_loss"], min(hist["train/smooth_loss"]))
        assert close(row["chars_per_sec"], m["final/chars_per_sec"])
        assert close(row["train_seconds"], m["final/train_seconds"])
        assert int(row["iterations_done"]) == 200
    # ranked by the objective, best first
    objectives = [float(r["objective"]) for r in rows]
    assert objectives == sorted(objectives)
    assert [int(r["rank"]) for r in rows] == list(range(1, 9))


@pytest.mark.slow
def test_seeds_are_aggregated_as_mean_std_n(charrnn_sweep):
    tmp, out = charrnn_sweep
    md = (out / "report.md").read_text(encoding="utf-8")
    rows = read_csv(out / "runs.csv")
    assert "swept: hidden_size, learning_rate" in md
    # the configuration hidden_size=16, learning_rate=0.1 over seeds 0 and 1
    values = [float(r["final_val_loss"]) for r in rows
              if r["hidden_size"] == "16" and r["learning_rate"] == "0.1"]  # fmt: skip
    assert len(values) == 2
    expected = f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f} (n=2)"
    line = next(ln for ln in md.splitlines() if ln.startswith("| ") and "| 16 | 0.1 | 2 |" in ln)
    assert expected in line


@pytest.mark.slow
def test_html_is_self_contained_escaped_and_pngs_decode(charrnn_sweep):
    tmp, out = charrnn_sweep
    page = Page()
    page.feed((out / "report.html").read_text(encoding="utf-8"))
    page.close()
    pngs = sorted(out.glob("*.png"))
    names = {p.name for p in pngs}
    assert {"smooth_loss.png", "val.png", "throughput.png", "final_val_loss_heatmap.png",
            "final_val_loss_vs_params.png"} <= names  # fmt: skip
    for p in pngs:
        decode_png(p.read_bytes())
    # every figure embedded as a data URI (nothing fetched from disk or network)
    assert len(page.images) == len(pngs)
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        decode_png(base64.b64decode(src.split(",", 1)[1]))
    # the sample's markup is text on the page, never a tag
    assert "script" not in page.tags
    text = "".join(page.text)
    assert XSS in text
    assert "samples" in text.lower() and "Runs, ranked by the objective" in text
    # report.md: figures referenced as files next to it, the sample verbatim in a code block
    md = (out / "report.md").read_text(encoding="utf-8")
    for p in pngs:
        assert f"]({p.name})" in md
    assert f"```text\n{XSS}" in md


@pytest.mark.slow
def test_report_is_logged_to_the_parent_run(charrnn_sweep):
    tmp, out = charrnn_sweep
    client, parent_id = parent_of(tmp)
    logged = {Path(f.path).name for f in client.list_artifacts(parent_id, "report")}
    assert {"report.html", "report.md", "runs.csv"} | {p.name for p in out.glob("*.png")} <= logged
    assert out.parent.name == "reports" and out.name == client.get_run(parent_id).info.run_name


@pytest.mark.slow
def test_cli_regenerates_with_selection_and_samples(charrnn_sweep, tmp_path):
    tmp, _ = charrnn_sweep
    client, parent_id = parent_of(tmp)
    out = tmp_path / "again"
    done = run_cli([f"sweep={parent_id}", f"out={out}", "samples_at=100", "log=false"], tmp,
                   module="rnnlab.report")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"rnnlab: report: {out / 'report.html'}"
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "iter 100" in html  # the chosen iteration's samples sit beside the final ones
    # by experiment and filter: only the matching runs
    selection = ["experiment=charrnn", "filter=params.hidden_size = '16'", f"out={tmp_path / 'f'}"]
    flt = run_cli(selection, tmp, module="rnnlab.report")
    assert flt.returncode == 0, flt.stderr
    rows = read_csv(tmp_path / "f" / "runs.csv")
    assert len(rows) == 4
    assert {client.get_run(r["run_id"]).data.params["hidden_size"] for r in rows} == {"16"}
    assert "hidden_size" not in rows[0] and "learning_rate" in rows[0]  # only what varies here
    assert not any(r["run_name"].startswith("sweep-") for r in rows)
    unknown = run_cli(["sweep=0123abc"], tmp, module="rnnlab.report")
    assert unknown.returncode == 2 and "no run whose id starts with '0123abc'" in unknown.stderr


@pytest.mark.slow
def test_a_failed_run_is_listed_with_its_reason_and_the_rest_ranked(failing_sweep):
    tmp, out = failing_sweep
    client, parent_id = parent_of(tmp)
    failed = [r for r in children(client, parent_id) if r.info.status == "FAILED"]
    assert len(failed) == 1
    reason = failed[0].data.tags["error"]
    assert reason.startswith("DivergenceError")
    rows = read_csv(out / "runs.csv")
    assert [r["status"] for r in rows] == ["FINISHED", "FINISHED", "FAILED"]
    assert rows[-1]["error"] == reason and rows[-1]["final_val_loss"] == ""
    assert float(rows[0]["objective"]) <= float(rows[1]["objective"])
    page = Page()
    page.feed((out / "report.html").read_text(encoding="utf-8"))
    text = "".join(page.text)
    assert "Runs that did not finish (1)" in text and reason in text
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "**FAILED**" in md and "sweep status: FAILED" in md


@pytest.mark.slow
def test_adder_report_has_iterations_to_100(tmp_path):
    """3- and 4-bit adders reach 100 %; iters_to_100 and exact accuracy match MLflow."""
    done = sweep(tmp_path, ["task=adder", "seq_length=3,4", "hidden_size=8", "seed=0,1",
                            "learning_rate=1.0", "iterations=3000", "eval_every=50"])  # fmt: skip
    out = report_dir(done, tmp_path)
    client, parent_id = parent_of(tmp_path)
    runs = {r.info.run_id: r for r in children(client, parent_id)}
    rows = read_csv(out / "runs.csv")
    assert len(rows) == 4
    for row in rows:
        m = runs[row["run_id"]].data.metrics
        assert close(row["final_val_exact_acc"], m["final/val_exact_acc"])
        assert close(row["iters_to_100"], m.get("iters_to_100"))
    assert any(r["iters_to_100"] for r in rows), "no adder reached 100 %: the sweep is too short"
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "iters_to_100_vs_params.png" in md and "# wrong:" in md


CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium)")
def test_headless_browser_screenshot_shows_the_report(charrnn_sweep, tmp_path):
    """What a person sees: Chromium renders report.html to a PNG that is big and not blank."""
    _, out = charrnn_sweep
    shot = tmp_path / "shot.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--screenshot={shot}", "--window-size=1280,2000", (out / "report.html").as_uri()],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert shot.is_file() and shot.stat().st_size > 50_000
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (2000, 1280)
    assert pixels.std() > 20  # text, tables and figures, not a blank page
    # the figures rendered: many distinct grey levels, not just text on white
    assert len(np.unique(pixels.astype(int))) > 64
