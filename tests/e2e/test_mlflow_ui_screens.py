"""What a reviewer sees, in a real headless Chromium: a real `mlflow ui` on a sweep's store opens
the address rnnlab printed on the training runs, the expanded sweep shows the parent (carrying
its best child's metrics) and its children, the printed chart addresses of the sweep and of a
single job open on their learning curves, and the sweep's report renders at full height.
Screenshots land in $RNNLAB_SCREENSHOTS (default: the test's temporary folder)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import browser
from helpers.processes import free_port, server_env, stop_process_group, wait_until_ok

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not browser.available(), reason="chromium is not installed"),
]


def shots_dir(tmp_path: Path) -> Path:
    out = Path(os.environ.get("RNNLAB_SCREENSHOTS") or tmp_path / "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def sweep_ui(tmp_path_factory):
    """A two-job adder sweep and a single adder job, then `mlflow ui` on their store:
    (sweep stdout, ui url, folder, single job's stdout)."""
    root = tmp_path_factory.mktemp("ui")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run(
        [sys.executable, "-m", "rnnlab.run", "-m", "task=adder", "iterations=400", "log_every=20",
         "eval_every=100", "hidden_size=4,8"],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    single = subprocess.run(
        [sys.executable, "-m", "rnnlab.run", "task=adder", "iterations=200", "log_every=20",
         "eval_every=100"],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]
    port = free_port()
    log_path = root / "ui.log"
    with open(log_path, "w") as log:
        # fmt: off
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri",
             f"sqlite:///{root / 'mlflow.db'}", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            cwd=root, env=server_env(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        # fmt: on
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_ok(f"{url}/health", proc, log_path)
            yield done.stdout, url, root, single.stdout
        finally:
            stop_process_group(proc)


def printed_address(stdout: str, port_url: str) -> str:
    """The UI address the sweep's closing block printed, on this test's port."""
    (line,) = [ln for ln in stdout.splitlines() if ln.strip().startswith("then http://")]
    return line.split()[-1].replace("http://127.0.0.1:5000", port_url)


def test_the_printed_address_opens_the_training_runs_and_the_expanded_sweep(sweep_ui, tmp_path):
    stdout, url, _, _ = sweep_ui
    address = printed_address(stdout, url)  # the parent run's page
    experiment_page = address.split("/runs/")[0] + "?" + address.split("?")[1]
    parent_id = re.search(r"parent run ([0-9a-f]{32})", stdout)[1]
    out = shots_dir(tmp_path)
    b = browser.Browser(1700, 900)
    try:
        b.open(experiment_page)
        b.wait_for("document.body.innerText.includes('sweep-')")
        text = b.text()
        assert "Training runs" in text or "\nRuns\n" in text
        assert "Traces\n0" not in text and "Usage" not in text  # not the GenAI overview
        b.screenshot(out / "mlflow_landing.png")

        # choose the columns a reviewer would (what the column picker stores), close the
        # assistant panel, then expand the sweep's row with its own button
        key = 'MLflowLocalStorage-1.1-ExperimentPage-["1"]-ReactComponentState'
        state = json.loads(b.eval(f"localStorage.getItem({key!r})") or "{}")
        columns = ["objective", "val/exact_acc", "train/smooth_loss"]
        state["selectedColumns"] = [f"metrics.`{c}`" for c in columns] + ["params.`hidden_size`"]
        b.eval(f"localStorage.setItem({key!r}, {json.dumps(json.dumps(state))});"
               "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false')")  # fmt: skip
        b.call("Page.reload", session=True)
        b.wait_for("document.body.innerText.includes('sweep-')")
        b.wait_for("document.body.innerText.includes('objective')")
        time.sleep(1)
        b.eval(
            "[...document.querySelectorAll('[role=gridcell] button')]"
            ".find(x => x.closest('[col-id]').getAttribute('col-id').includes('Run Name')).click()"
        )
        b.wait_for("document.body.innerText.includes('hidden_size=4')")
        b.wait_for("document.body.innerText.includes('hidden_size=8')")
        time.sleep(1)
        rows = b.eval(
            "[...document.querySelectorAll('.ag-center-cols-container [role=row]')]"
            ".map(r => r.innerText.replace(/\\s+/g, ' '))"
        )
        b.screenshot(out / "mlflow_sweep_expanded.png")
    finally:
        b.close()
    print("\n".join(rows), f"\nscreenshots: {out}")
    assert len(rows) == 4, rows  # the single job, the parent and its two children
    # every row, the parent's included, shows an objective/accuracy number
    assert all(re.search(r"\d\.\d{3}", r) for r in rows), rows
    assert parent_id


CARD = "[data-testid=experiment-view-compare-runs-card]"  # one chart card of the chart view
CARD_TITLES = f"[...document.querySelectorAll('{CARD} h4')]"
SECTION = "[data-testid=experiment-view-compare-runs-section-header]"
SECTIONS = f"[...document.querySelectorAll('{SECTION}')]"


def open_charts(address: str, url: str, shot: Path) -> tuple[list[str], list[str], str, int]:
    """Open a printed chart address in a fresh browser (the assistant panel closed, as a
    reviewer would): (section names, chart titles, the first chart's text, how many runs)."""
    b = browser.Browser(1700, 1000)
    try:
        b.open(address)
        b.wait_for(f"{CARD_TITLES}.length >= 3")
        # the assistant panel opens on a browser's first visit: close it, load the address anew
        b.eval("localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false')")
        b.open("about:blank")
        b.wait_for("location.href === 'about:blank'")
        b.open(address)
        b.wait_for(f"{CARD_TITLES}.length >= 3")
        time.sleep(3)  # the charts draw their lines after the metric histories arrive
        sections = b.eval(f"{SECTIONS}.map(h => h.innerText.split('\\n')[0].trim())")
        titles = b.eval(f"{CARD_TITLES}.map(h => h.innerText.trim())")
        first = b.eval(f"document.querySelector('{CARD}').innerText")
        runs = re.search(r"(\d+) matching runs?", b.text())[1]  # the runs the view lists
        b.screenshot(shot)
    finally:
        b.close()
    print(f"{address}\nsections: {sections}\ncharts: {titles}\nruns: {runs}\nfirst chart:\n{first}")
    return sections, titles, first, int(runs)


def charts_address(stdout: str, port_url: str) -> str:
    """The `charts:` address a closing block printed, on this test's port."""
    (line,) = [ln for ln in stdout.splitlines() if ln.strip().startswith("charts:")]
    return line.split()[-1].replace("http://127.0.0.1:5000", port_url)


def test_the_sweep_charts_open_on_the_childrens_learning_curves(sweep_ui, tmp_path):
    """MLflow's own order would start with best/, diag/ and final/ (alphabetical sections); the
    printed address opens the sweep's view: its children, learning curves first."""
    stdout, url, _, _ = sweep_ui
    shot = shots_dir(tmp_path) / "mlflow_sweep_charts.png"
    sections, titles, first, runs = open_charts(charts_address(stdout, url), url, shot)
    assert sections[0] == "Learning curves"
    assert sections[1:3] == ["train", "val"]  # then the prefixes in rnnlab's order
    # the adder's curves (the char-RNN's val/loss and val/bpc charts are hidden: no data)
    assert titles[:4] == ["train/smooth_loss", "val/exact_acc", "val/bit_acc", "train/loss"]
    assert not any(t.startswith(("best/", "diag/", "final/")) for t in titles[:4])
    # the children are charted, each as a run of its own (not the folded parent's one point)
    assert "hidden_size=4" in first and "hidden_size=8" in first and "sweep-" not in first
    assert runs == 2
    # without the view, MLflow's own chart view of the same experiment: alphabetical sections
    plain = charts_address(stdout, url).split("&viewStateShareKey=")[0] + "&workflowType="
    plain += "machine_learning"
    sections, titles, _, _ = open_charts(plain, url, tmp_path / "mlflow_default_charts.png")
    assert sections[0] == "best" and titles[0].startswith("best/")


def test_a_single_jobs_charts_open_on_its_learning_curves(sweep_ui, tmp_path):
    _, url, _, single = sweep_ui
    run_id = re.search(r"run id ([0-9a-f]{32})", single)[1]
    address = charts_address(single, url)
    assert f"viewStateShareKey=run-{run_id}" in address
    shot = shots_dir(tmp_path) / "mlflow_run_charts.png"
    sections, titles, first, runs = open_charts(address, url, shot)
    assert sections[0] == "Learning curves"
    assert titles[:2] == ["train/smooth_loss", "val/exact_acc"]
    assert runs == 1 and "task=adder" in first  # that run alone


def test_the_report_renders_at_full_height(sweep_ui, tmp_path):
    stdout, _, root, _ = sweep_ui
    (line,) = [ln for ln in stdout.splitlines() if ln.startswith("rnnlab: report: ")]
    report = root / line.removeprefix("rnnlab: report: ").strip()
    out = shots_dir(tmp_path)
    b = browser.Browser(1400, 900)
    try:
        b.open(report.resolve().as_uri())
        b.wait_for("document.readyState === 'complete'")
        b.wait_for("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
        height = b.eval("document.documentElement.scrollHeight")
        # the runs table fits the page: nothing wider than the window
        too_wide = b.eval(
            "[...document.querySelectorAll('table')].filter(t => t.getBoundingClientRect().right"
            " > document.documentElement.clientWidth + 1).length"
        )
        shot = b.screenshot(out / "report_full.png", full_height=True)
    finally:
        b.close()
    print(f"report {report}: {height} px high; screenshot {shot}")
    assert height > 900 and shot.stat().st_size > 50_000
    assert too_wide == 0
