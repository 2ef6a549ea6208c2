"""SIGKILL while ``export``, ``report`` or ``inspect`` writes: the target is the old file or the
new one, never a broken one.

Each command runs as a user runs it, over a file it wrote before; the test watches the target's
folder and, at the first change it sees (a temporary file appears, or the target itself
changes), waits a seeded delay and SIGKILLs the process. Then every file the command writes
must read whole. Before, ``np.savez`` wrote the export onto its final name: 3 of 4 kills left an
unloadable file and one shrank a good earlier export to 0 bytes.
"""

from __future__ import annotations

import csv
import io
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.processes import run_cli
from PIL import Image

pytestmark = pytest.mark.slow

RNG = random.Random(20261207)
ROUNDS = 6


@pytest.fixture(scope="module")
def trained(tmp_path_factory, kafka_path):
    """A char-RNN run whose files are large enough to take a while to write (an export of ~20
    MB), in a store with a sweep to report on."""
    folder = tmp_path_factory.mktemp("kill")
    done = run_cli(["-m", f"data.path={kafka_path}", "data.val_fraction=0.01", "hidden_size=1500",
                    "seq_length=10", "iterations=2", "seed=0,1", "experiment_name=k"],
                   folder, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("k").experiment_id])
    (run, _) = [r for r in runs if r.data.tags.get("rnnlab.kind") != "sweep"]
    return folder, run.info.run_id


def state(folder: Path) -> dict:
    return {e.name: (e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(folder)}


def kill_while_writing(args: list[str], module: str, cwd: Path, folder: Path) -> str:
    """Start ``python -m module args``; at the first change in ``folder``, wait a seeded delay
    and SIGKILL it. Returns what happened, for the printed log."""
    before = state(folder)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while state(folder) == before and proc.poll() is None:
            assert time.monotonic() < deadline, "the command never wrote"
            time.sleep(0.001)
        delay = RNG.uniform(0.0, 0.05)
        time.sleep(delay)
        if proc.poll() is not None:
            return f"finished before the kill ({delay * 1000:.0f} ms)"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return f"SIGKILL {delay * 1000:.0f} ms after its first write"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def whole_npz(path: Path, reference: dict) -> None:
    with np.load(path, allow_pickle=False) as npz:
        got = {k: npz[k] for k in npz.files}
    assert sorted(got) == sorted(reference)
    assert all(np.array_equal(got[k], reference[k]) for k in got)


def test_export_is_old_or_new_after_sigkill(trained, tmp_path):
    folder, run_id = trained
    out = tmp_path / "out"
    out.mkdir()
    store = f"tracking_uri=sqlite:///{folder}/mlflow.db"
    args = [f"run_id={run_id}", f"out={out / 'model.npz'}", store]
    done = run_cli(args, folder, module="rnnlab.export")
    assert done.returncode == 0, done.stderr
    with np.load(out / "model.npz") as npz:
        reference = {k: npz[k] for k in npz.files}
    print(f"export of {(out / 'model.npz').stat().st_size / 1e6:.1f} MB")
    for round_ in range(ROUNDS):
        what = kill_while_writing(args, "rnnlab.export", folder, out)
        print(f"export round {round_}: {what}")
        whole_npz(out / "model.npz", reference)


def test_inspect_page_is_old_or_new_after_sigkill(trained, tmp_path):
    folder, run_id = trained
    out = tmp_path / "out"
    out.mkdir()
    page = out / "inspect.html"
    args = [
        f"run_id={run_id}",
        f"out={page}",
        f"tracking_uri=sqlite:///{folder}/mlflow.db",
        "text=" + "One morning, as Gregor Samsa was waking up from anxious dreams " * 300,
    ]
    done = run_cli(args, folder, module="rnnlab.inspect")
    assert done.returncode == 0, done.stderr
    for round_ in range(ROUNDS):
        what = kill_while_writing(args, "rnnlab.inspect", folder, out)
        print(f"inspect round {round_}: {what}")
        html = page.read_text(encoding="utf-8")
        assert html.lower().startswith("<!doctype html>") and html.endswith("</body></html>\n")


def test_report_files_are_old_or_new_after_sigkill(trained):
    folder, _ = trained
    out = folder / "reports" / "killed"
    args = ["out=reports/killed", "log=false"]
    done = run_cli(args, folder, module="rnnlab.report")
    assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in out.iterdir())
    for round_ in range(ROUNDS):
        what = kill_while_writing(args, "rnnlab.report", folder, out)
        print(f"report round {round_}: {what}")
        assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == names
        html = (out / "report.html").read_text(encoding="utf-8")
        assert html.rstrip().endswith("</html>")
        assert (out / "report.md").read_text(encoding="utf-8").strip()
        rows = list(csv.DictReader(io.StringIO((out / "runs.csv").read_text(encoding="utf-8"))))
        assert len(rows) == 2
        for png in out.glob("*.png"):
            Image.open(png).load()  # decodes whole, or raises
