"""What a reviewer sees, in a real headless Chromium with a fresh profile: a real `mlflow ui` on
a sweep's store opens the address rnnlab printed on the sweep's runs, ranked by the objective
with the swept param beside it; the printed chart addresses of the sweep and of a single job open
on their learning curves, the objective's first; the sweep's report renders at full height.
Screenshots land in $RNNLAB_SCREENSHOTS (default: the test's temporary folder)."""

from __future__ import annotations

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
    """The UI address the sweep's closing block printed (`view:`), on this test's port."""
    (line,) = [ln for ln in stdout.splitlines() if ln.strip().startswith("then http://")]
    return line.split()[-1].replace("http://127.0.0.1:5000", port_url)


# the runs table as the browser drew it: each header's column id, text and horizontal extent,
# the table's own right edge, and each row's cells by column id
HEADERS_JS = """[...document.querySelectorAll('.ag-header-cell[col-id]')].map(h => {
  const r = h.getBoundingClientRect(); return [h.getAttribute('col-id'), h.innerText.trim(),
  r.left, r.right]; })"""
TABLE_RIGHT_JS = "document.querySelector('.ag-root-wrapper').getBoundingClientRect().right"
ROWS_JS = """[...document.querySelectorAll('.ag-center-cols-container [role=row]')].map(r =>
  Object.fromEntries([...r.querySelectorAll('[col-id]')].map(c =>
    [c.getAttribute('col-id'), c.innerText.trim()])))"""
NAMES_JS = """[...document.querySelectorAll('.ag-pinned-left-cols-container [role=row]')]
  .map(r => r.innerText.replace(/\\s+/g, ' '))"""


def test_a_fresh_browser_lands_on_the_sweeps_runs_ranked_by_the_objective(sweep_ui, tmp_path):
    """The `view:` address a sweep prints, opened in a browser profile that has never seen
    MLflow (its assistant panel opens by itself on a first visit and stays open): the runs
    table of the sweep's children, the objective's column first, then the swept param, both
    within the table's visible width, the best run first — no column picked by hand."""
    stdout, url, _, _ = sweep_ui
    address = printed_address(stdout, url)
    assert "compareRunsMode=TABLE" in address and "viewStateShareKey=sweep-" in address
    parent_id = re.search(r"parent run ([0-9a-f]{32})", stdout)[1]
    out = shots_dir(tmp_path)
    b = browser.Browser(1600, 1000)
    try:
        b.open(address)
        b.wait_for("document.querySelectorAll('.ag-center-cols-container [role=row]').length >= 2")
        b.wait_for("document.body.innerText.includes('hidden_size=8')")
        time.sleep(1)
        text = b.text()
        headers, right = b.eval(HEADERS_JS), b.eval(TABLE_RIGHT_JS)
        rows, names = b.eval(ROWS_JS), b.eval(NAMES_JS)
        b.screenshot(out / "mlflow_landing.png")
    finally:
        b.close()
    print(f"{address}\nheaders: {headers}\ntable right edge: {right}\nrows: {rows}\n{names}")
    assert "Traces\n0" not in text and "Usage" not in text  # not the GenAI overview
    shown = {col: (title, left, r) for col, title, left, r in headers}
    objective, swept = "metrics.`val/exact_acc`", "params.`hidden_size`"
    assert shown[objective][0] == "val/exact_acc" and shown[swept][0] == "hidden_size"
    assert shown[objective][2] <= shown[swept][1] + 1 and shown[swept][2] <= right + 1  # visible
    other = [left for col, (_, left, _) in shown.items() if col.startswith(("metrics", "params"))]
    assert shown[objective][1] == min(other)  # the first of the metrics and params
    # the two children (not the parent), each with its objective, the best (highest) first
    assert len(rows) == 2 and all("sweep-" not in n for n in names), names
    values = [float(r[objective]) for r in rows]
    assert values == sorted(values, reverse=True)
    assert sorted(r[swept] for r in rows) == ["4", "8"]
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
    # the objective's curve, then the adder's others (the char-RNN's are hidden: no data)
    assert titles[:4] == ["val/exact_acc", "train/smooth_loss", "val/bit_acc", "train/loss"]
    assert not any(t.startswith(("best/", "diag/", "final/")) for t in titles[:4])
    # the children are charted, each as a run of its own (not the folded parent's one point)
    assert "hidden_size=4" in first and "hidden_size=8" in first and "sweep-" not in first
    assert runs == 2
    # without the view, MLflow's own chart view of the same experiment: alphabetical sections
    plain = charts_address(stdout, url).split("&viewStateShareKey=")[0] + "&workflowType="
    plain += "machine_learning"
    sections, titles, _, _ = open_charts(plain, url, tmp_path / "mlflow_default_charts.png")
    assert sections[:2] == ["baseline", "best"] and titles[0].startswith("baseline/")


def test_a_single_jobs_charts_open_on_its_learning_curves(sweep_ui, tmp_path):
    _, url, _, single = sweep_ui
    run_id = re.search(r"run id ([0-9a-f]{32})", single)[1]
    address = charts_address(single, url)
    assert f"viewStateShareKey=run-{run_id}" in address
    shot = shots_dir(tmp_path) / "mlflow_run_charts.png"
    sections, titles, first, runs = open_charts(address, url, shot)
    assert sections[0] == "Learning curves"
    assert titles[:2] == ["val/exact_acc", "train/smooth_loss"]
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
