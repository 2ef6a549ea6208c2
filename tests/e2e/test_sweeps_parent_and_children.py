"""Multiruns through the real CLI: one parent run and a child per job, in one store created
before any job; a failing job fails alone; parallel joblib workers on a fresh store lose
nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.processes import run_cli
from mlflow.tracking import MlflowClient

from rnnlab.config import Config, flatten

ADDER = ["task=adder", "iterations=200", "log_every=50"]  # eval_every=100 (the adder's)
CHAR = ["iterations=60", "log_every=10", "eval_every=20", "sample_every=30",
        "checkpoint_every=50", "hidden_size=16"]  # fmt: skip


def sweep_runs(store: str, experiment: str):
    """(parent, children by name) of the only sweep in ``experiment``."""
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("rnnlab.kind") == "sweep"]
    children = {r.info.run_name: r for r in runs if r is not parent}
    for child in children.values():
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    return parent, children


def steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, key)]


@pytest.mark.slow
def test_grid_sweep_gives_a_parent_and_a_child_per_job(tmp_path):
    args = ["-m", "hidden_size=8,16", "learning_rate=0.05,0.1", *ADDER]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    # one summary line per finished job
    summaries = [line for line in result.stderr.splitlines() if ": FINISHED in " in line]
    assert len(summaries) == 4
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert list(tmp_path.rglob("mlflow.db")) == [tmp_path / "mlflow.db"]
    parent, children = sweep_runs(store, "adder")
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name.startswith("sweep-")
    assert parent.data.tags["rnnlab.sweep_overrides"] == " ".join(args[1:])
    assert parent.data.tags["rnnlab.swept_keys"] == "hidden_size learning_rate"
    assert parent.data.tags["rnnlab.children"] == "4"
    assert parent.data.tags["rnnlab.children_finished"] == "4"
    # children are named after the swept values only; all overrides are a tag
    assert sorted(children) == [
        f"hidden_size={h},learning_rate={lr}" for h in (16, 8) for lr in (0.05, 0.1)
    ]
    client = MlflowClient(store)
    known = set(flatten(Config()))
    sweep_dir = parent.data.tags["rnnlab.sweep_dir"]
    assert (Path(sweep_dir) / ".rnnlab_parent_run_id").read_text() == parent.info.run_id
    for name, child in children.items():
        h, lr = (kv.split("=")[1] for kv in name.split(","))
        assert child.info.status == "FINISHED"
        assert set(child.data.params) == known
        assert child.data.params["hidden_size"] == h
        assert child.data.params["learning_rate"] == lr
        assert child.data.tags["rnnlab.overrides"] == f"hidden_size={h} learning_rate={lr} " + (
            " ".join(ADDER)
        )
        assert child.data.tags["rnnlab.sweep_dir"] == sweep_dir  # ${now:} resolved once
        run_id = child.info.run_id
        assert steps(client, run_id, "train/loss") == [50, 100, 150, 200]
        assert steps(client, run_id, "val/exact_acc") == [100, 200]
        assert steps(client, run_id, "final/val_exact_acc") == [200]
        artifacts = {a.path for a in client.list_artifacts(run_id, "checkpoints")}
        assert artifacts == {"checkpoints/iter_0000200.npz", "checkpoints/best.npz"}
        assert {a.path for a in client.list_artifacts(run_id, "samples")} == {
            "samples/iter_0000200.txt"
        }


@pytest.mark.slow
def test_a_diverging_job_fails_alone_and_the_parent_says_so(tmp_path, kafka_path):
    """learning_rate=1e6 blows the char-RNN's loss past 10× its start at the 2nd step (the
    adder's squared error on sigmoid outputs is bounded, so it saturates without diverging)."""
    result = run_cli(["-m", "learning_rate=0.1,1e6,0.05", *CHAR], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    assert len([line for line in lines if ": FINISHED in " in line]) == 2
    (failed,) = [line for line in lines if ": FAILED in " in line]
    assert "learning_rate=1000000.0" in failed and "DivergenceError" in failed  # Hydra's spelling
    assert "Traceback" not in result.stderr
    parent, children = sweep_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "charrnn")
    assert {n: c.info.status for n, c in children.items()} == {
        "learning_rate=0.1": "FINISHED",
        "learning_rate=1000000.0": "FAILED",
        "learning_rate=0.05": "FINISHED",  # the job after the failure still ran
    }
    error = children["learning_rate=1000000.0"].data.tags["error"]
    assert error.startswith("DivergenceError: loss diverged to ")
    assert error.endswith("at iteration 2 (learning_rate=1e+06)")
    assert parent.info.status == "FAILED"
    assert parent.data.tags["error"] == "1 of 3 child runs did not finish"
    assert parent.data.tags["rnnlab.children_failed"] == "1"


@pytest.mark.slow
def test_joblib_sweep_of_8_on_a_fresh_store_loses_nothing(tmp_path):
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
            "seed=0,1,2,3,4,5,6,7", *ADDER]  # fmt: skip
    assert not (tmp_path / "mlflow.db").exists()
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "rror" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if ": FINISHED in " in line]) == 8
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent, children = sweep_runs(store, "adder")
    assert sorted(children) == [f"seed={s}" for s in range(8)]
    assert parent.info.status == "FINISHED" and parent.data.tags["rnnlab.children"] == "8"
    assert "joblib" in parent.data.tags["rnnlab.launcher"]
    client = MlflowClient(store)
    blas = "1"  # blas_threads default: one per job
    # every job found the parent's sweep folder and id, though it ran in a loky worker
    assert {c.data.tags["rnnlab.sweep_dir"] for c in children.values()} == {
        parent.data.tags["rnnlab.sweep_dir"]
    }
    for child in children.values():
        assert child.info.status == "FINISHED"
        assert child.data.tags["rnnlab.blas_threads"] == blas  # no oversubscribed cores
        for key in ("train/loss", "train/smooth_loss", "train/grad_norm", "perf/chars_per_sec"):
            assert steps(client, child.info.run_id, key) == [50, 100, 150, 200], key
        for key in ("val/bit_acc", "val/exact_acc"):
            assert steps(client, child.info.run_id, key) == [100, 200], key


@pytest.mark.slow
def test_a_sweep_over_the_task_is_one_sweep_ranked_per_objective(tmp_path):
    # Hydra resolves the sweep folder per job: a folder named after ${task.name} split this
    # sweep in two, the second job found no parent run and the report counted one run
    args = ["-m", "task=adder,charrnn", "iterations=2", "eval_every=1", "hidden_size=8"]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (folder,) = (tmp_path / "multirun").iterdir()
    assert sorted(p.name.split("_", 1)[1] for p in folder.iterdir() if p.is_dir()) == [
        "eval_every=1,hidden_size=8,iterations=2,task=adder",
        "eval_every=1,hidden_size=8,iterations=2,task=charrnn",
    ]
    printed = result.stdout + result.stderr
    assert "2 runs, 0 did not finish" in printed
    assert "Warning" not in printed
    board = [ln.split() for ln in printed.splitlines() if ln.strip()[:1] in ("1", "2")]
    assert [(row[1], row[4]) for row in board] == [
        ("val/exact_acc", "adder"), ("val/loss_warm", "charrnn")
    ]  # fmt: skip
    (report,) = (tmp_path / "reports").glob("*/report.md")
    text = report.read_text()
    assert "adder" in text and "charrnn" in text
