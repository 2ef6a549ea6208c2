"""``python -m rnnlab.report out=<folder>`` writes only its own files into a folder that may
already hold the user's: nothing it did not write in that run is deleted or changed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from helpers.processes import run_cli


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_the_report_never_deletes_what_it_did_not_write(tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = run_cli(["task=adder", "iterations=200", "log_every=50", f"tracking.uri={store}",
                    "experiment_name=mine"], cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "my figures"
    out.mkdir()
    theirs = {"plot.png": b"\x89PNG not ours", "trials.csv": b"a,b\n1,2\n", "notes.txt": b"keep"}
    for name, data in theirs.items():
        (out / name).write_bytes(data)
    before = {name: digest(out / name) for name in theirs}

    args = ["experiment=mine", f"tracking_uri={store}", f"out={out}"]
    for attempt in range(2):  # regenerating into the same folder changes nothing of theirs
        report = run_cli(args, cwd=tmp_path, module="rnnlab.report")
        assert report.returncode == 0, report.stderr[-3000:]
        assert {name: digest(out / name) for name in theirs} == before, attempt
    assert (out / "report.html").is_file() and (out / "runs.csv").is_file()
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "plot.png" not in html  # the report shows only the figures it wrote
    assert len(list(out.glob("*.png"))) > 1  # its own figures are there too


@pytest.mark.slow
def test_swept_text_with_dollars_and_newlines_keeps_the_report_whole(tmp_path):
    """``prime='$\\x$'`` made matplotlib parse the figure labels as mathtext and fail; a value
    with a newline split report.md's sweep-command line."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a $ \\ x b\n" * 400, encoding="utf-8")
    args = ["-m", f"data.path={corpus}", "prime='$\\x$','a\nb'", "iterations=40",
            "log_every=20", "eval_every=20", "sample_every=40", "seq_length=8",
            "checkpoint_every=1000", "hidden_size=8"]  # fmt: skip
    done = run_cli(args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "report failed" not in done.stderr, done.stderr
    (line,) = [ln for ln in done.stdout.splitlines() if ln.startswith("rnnlab: report:")]
    out = tmp_path / line.split("rnnlab: report:", 1)[1].strip()
    md = (out.parent / "report.md").read_text(encoding="utf-8")
    (command,) = [ln for ln in md.splitlines() if ln.startswith("- sweep command:")]
    assert "$\\x$" in command and "a b" in command  # the newline folded, on one line
    assert len(list(out.parent.glob("*.png"))) >= 2
