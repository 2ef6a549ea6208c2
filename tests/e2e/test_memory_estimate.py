"""The memory guard's estimate holds against real runs, and refuses what cannot fit — from the
command line and from a sweeper — in one line, before a run is opened.

``rnnlab.training.memory.estimate`` against the peak RSS (``wait4``'s ``ru_maxrss``) of real
``python -m rnnlab.run`` processes, tracked by MLflow as a user's are: vanilla, GRU and LSTM ×
1 and 2 layers × two corpora (Kafka, 118,561 characters, and 170 copies of it, 20 M). The runs
are 2 iterations with a short held-out text, so they cost seconds, while their parameters,
activations and corpus are what a long run holds. Before, the estimate sized a one-layer
vanilla RNN whatever the config (an LSTM of 4 × 8,000 units was put at 2.1 GB against ~57 GB
for four copies of its parameters) and never counted the corpus (a 200 MB corpus peaked at
3.6 GB).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.processes import run_cli

from rnnlab.sweeps.compose import compose
from rnnlab.tasks import corpus as corpus_files
from rnnlab.tasks.charrnn import load_corpus
from rnnlab.training import memory

pytestmark = pytest.mark.slow

QUICK = ["iterations=2", "eval_burn_in=100", "diag_window=20", "sample_length=50"]
# units per layer: the parameters a visible share of the peak, each run a few seconds
HIDDEN = {"rnn": 768, "gru": 384, "lstm": 320}
HELD_OUT = {"small": 0.0025, "large": 0.000015}  # ~300 held-out characters either way


@pytest.fixture(scope="module")
def corpora(tmp_path_factory, kafka_path) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("corpora")
    text = corpus_files.strip_gutenberg(kafka_path.read_text(encoding="utf-8"))
    (folder / "small.txt").write_text(text, encoding="utf-8")
    (folder / "large.txt").write_text(text * 170, encoding="utf-8")
    return {"small": folder / "small.txt", "large": folder / "large.txt"}


# Measured from a small parent: a child's ru_maxrss counts the pages it held between fork and
# exec, so a run forked straight from a pytest worker that has grown to 1 GB reports 1 GB.
MEASURE = """
import os, subprocess, sys
proc = subprocess.Popen([sys.executable, "-m", "rnnlab.run", *sys.argv[1:]],
                        stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss * 1024)  # KiB on Linux
"""


def peak_rss(args: list[str], cwd: Path) -> int:
    """Run ``python -m rnnlab.run args`` to its end; its peak resident set, in bytes."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run([sys.executable, "-c", MEASURE, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    code, peak = (int(x) for x in done.stdout.split())
    assert code == 0, done.stderr[-2000:]
    return peak


@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_the_estimate_is_within_30_percent_of_the_measured_peak(cell, layers, size, corpora,
                                                                tmp_path_factory):  # fmt: skip
    args = [f"data.path={corpora[size]}", f"data.val_fraction={HELD_OUT[size]}", *QUICK,
            f"cell={cell}", f"layers={layers}", f"hidden_size={HIDDEN[cell]}"]  # fmt: skip
    cfg = compose(args)
    need = memory.estimate(cfg, memory.Corpus.of(load_corpus(cfg)[0]))
    measured = peak_rss(args, tmp_path_factory.getbasetemp())  # one store for all of them
    ratio = need.total / measured
    print(f"{cell} × {layers} layers × {size} corpus: estimate {need.total / 1e6:.0f} MB "
          f"(libraries {need.libraries / 1e6:.0f}, parameters {need.parameters / 1e6:.0f}, "
          f"window {need.window / 1e6:.0f}, evaluation {need.evaluation / 1e6:.0f}, corpus "
          f"{need.corpus / 1e6:.0f}); measured peak {measured / 1e6:.0f} MB; "
          f"ratio {ratio:.3f}")  # fmt: skip
    assert 0.7 <= ratio <= 1.3


def test_the_libraries_part_is_what_a_16_unit_run_peaks_at(corpora, tmp_path):
    """``memory.LIBRARIES`` (tracked) is the peak of a run whose arrays are negligible."""
    args = [f"data.path={corpora['small']}", f"data.val_fraction={HELD_OUT['small']}", *QUICK,
            "hidden_size=16"]  # fmt: skip
    measured = peak_rss(args, tmp_path)
    print(f"a 16-unit run peaks at {measured / 1e6:.0f} MB; LIBRARIES['tracked'] = "
          f"{memory.LIBRARIES['tracked'] / 1e6:.0f} MB")  # fmt: skip
    assert 0.8 <= memory.LIBRARIES["tracked"] / measured <= 1.2


def test_a_run_over_the_available_memory_is_refused_before_a_run_is_opened(tmp_path):
    done = run_cli(["cell=lstm", "layers=4", "hidden_size=8000"], tmp_path)
    print(done.stderr)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "cell=lstm layers=4 hidden_size=8000" in done.stderr
    assert "of memory (most of it parameters)" in done.stderr
    assert not (tmp_path / "mlflow.db").exists()  # no run, no store


def test_a_sweepers_proposal_over_the_available_memory_opens_no_run(tmp_path):
    """An Optuna trial proposing millions of units from an interval (the CLI's preflight cannot
    list an interval's values, so it never sees them): the job refuses it in one line before
    opening a run, the trial ends FAIL, and the sweep ends normally."""
    import optuna

    done = run_cli(
        ["-m", "+search=adder", "hydra.sweeper.n_trials=2", "hydra.sweeper.pruner.name=none",
         "hidden_size=tag(int, interval(2000000, 3000000))", "learning_rate=0.5",
         "iterations=100", "eval_every=50"],
        tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    refused = [ln for ln in done.stderr.splitlines() if "needs about" in ln]
    print("\n".join(refused))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    trials = optuna.load_study(study_name="adder-lr-hidden", storage=storage).trials
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]
    assert len(refused) == 2
    for trial, line in zip(trials, refused, strict=True):
        assert f"hidden_size={trial.params['hidden_size']} " in line and "TB of memory" in line
    with sqlite3.connect(f"file:{tmp_path / 'mlflow.db'}?mode=ro", uri=True) as con:
        children = con.execute("SELECT COUNT(*) FROM tags WHERE key = 'mlflow.parentRunId'")
        assert children.fetchone()[0] == 0  # no run was opened for either
