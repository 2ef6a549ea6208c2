"""The same records through a real ``mlflow server`` on 127.0.0.1 (``tracking.uri=http://…``):
what a team or a cluster uses instead of a local SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.processes import run_cli
from mlflow.tracking import MlflowClient

ADDER = ["task=adder", "iterations=200", "log_every=50"]


@pytest.mark.slow
def test_single_run_and_sweep_record_through_the_server(mlflow_server, tmp_path):
    url, root = mlflow_server
    single = run_cli([*ADDER, f"tracking.uri={url}", "experiment_name=served"], cwd=tmp_path)
    assert single.returncode == 0, single.stderr[-3000:]
    sweep = run_cli(["-m", "hidden_size=8,16", *ADDER, f"tracking.uri={url}",
                     "experiment_name=served"], cwd=tmp_path)  # fmt: skip
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    # nothing was written locally: the server holds the store and the artifacts
    assert not list(tmp_path.rglob("mlflow.db")) and not (tmp_path / "mlruns").exists()

    client = MlflowClient(url)
    runs = client.search_runs([client.get_experiment_by_name("served").experiment_id])
    by_name = {r.info.run_name: r for r in runs}
    (parent,) = [r for r in runs if r.data.tags.get("rnnlab.kind") == "sweep"]
    assert parent.info.status == "FINISHED" and parent.data.tags["rnnlab.children"] == "2"
    assert {"hidden_size=8", "hidden_size=16", "iterations=200,log_every=50,task=adder"} <= set(
        by_name
    )
    for name in ("hidden_size=8", "hidden_size=16"):
        assert by_name[name].data.tags["mlflow.parentRunId"] == parent.info.run_id
    for run in (r for r in runs if r is not parent):
        assert run.info.status == "FINISHED"
        run_id = run.info.run_id
        assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == [
            50,
            100,
            150,
            200,
        ]
        assert [m.step for m in client.get_metric_history(run_id, "val/exact_acc")] == [100, 200]
        assert run.data.params["task.name"] == "adder"
        assert {a.path for a in client.list_artifacts(run_id, "checkpoints")} == {
            "checkpoints/iter_0000200.npz",
            "checkpoints/best.npz",  # rnnlab.training.best: the best objective's weights
        }
        assert len(run.inputs.dataset_inputs) == 1
    # the artifacts really are on the server's side
    assert len(list(Path(root, "artifacts").rglob("iter_0000200.npz"))) == 3
