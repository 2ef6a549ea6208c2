"""Sweeps on other launchers: joblib on this machine's cores, submitit_local through a real
``mlflow server`` (the path SLURM jobs take), and the SLURM config itself."""

from __future__ import annotations

import optuna
import pytest
from helpers.processes import run_cli
from mlflow.tracking import MlflowClient

from rnnlab.sweeps import search

QUICK_ADDER = [
    "task=adder",
    "seq_length=4",
    "iterations=300",
    "eval_every=100",
    "sample_every=300",
    "checkpoint_every=300",
]


def children(uri: str) -> list:
    client = MlflowClient(uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, filter_string="tags.mlflow.parentRunId != ''", max_results=1000)


# The joblib launcher's grid sweep (every job FINISHED under one parent, one BLAS thread each,
# on a fresh store) is test_sweeps.py's test_joblib_sweep_of_8_on_a_fresh_store_loses_nothing.


@pytest.mark.slow
def test_a_search_prunes_across_joblib_worker_processes(tmp_path):
    """Trials run in loky workers, join the study through optuna.db, and report to it."""
    proc = run_cli(
        [
            "-m",
            "+search=adder",
            *QUICK_ADDER[1:],
            "hydra.sweeper.n_trials=4",
            "hydra.sweeper.pruner.min_resource=100",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    st = optuna.load_study(study_name="adder-lr-hidden", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert len(st.trials) == 4
    assert all(t.intermediate_values for t in st.trials)  # each worker reported to its trial
    runs = children(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert sorted(int(r.data.tags[search.TAG_TRIAL]) for r in runs) == [0, 1, 2, 3]
    assert {r.data.tags[search.TAG_TRIAL]: r.data.tags[search.TAG_STATE] for r in runs} == {
        str(t.number): t.state.name for t in st.trials
    }


@pytest.mark.slow
def test_submitit_local_sweep_records_through_a_tracking_server(tmp_path, mlflow_server):
    url, server_root = mlflow_server
    work = tmp_path / "work"
    work.mkdir()
    proc = run_cli(
        [
            "-m",
            *QUICK_ADDER,
            "seed=0,1,2,3",
            "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=10",
            f"tracking.uri={url}",
        ],
        cwd=work,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (work / "mlflow.db").exists()  # everything went to the server
    runs = children(url)
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 4
    assert sorted(r.data.params["seed"] for r in runs) == ["0", "1", "2", "3"]
    parents = {r.data.tags["mlflow.parentRunId"] for r in runs}
    assert len(parents) == 1
    client = MlflowClient(url)
    parent = client.get_run(parents.pop())
    assert parent.info.status == "FINISHED"
    assert "submitit" in parent.data.tags["rnnlab.launcher"].lower()
    assert all(r.data.metrics["final/val_exact_acc"] >= 0 for r in runs)
    # artifacts went through the server to its artifact root, not into the work folder
    assert client.list_artifacts(runs[0].info.run_id, "checkpoints")
    assert (server_root / "artifacts").is_dir() and not (work / "mlartifacts").exists()


def test_slurm_config_composes_for_submitit_slurm(tmp_path):
    proc = run_cli(
        ["+cluster=slurm", "--cfg", "hydra", "-p", "hydra.launcher"],
        cwd=tmp_path,
        env={"MLFLOW_TRACKING_URI": "http://tracking.example:5000"},
    )
    assert proc.returncode == 0, proc.stderr
    import yaml

    launcher = yaml.safe_load(proc.stdout)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert launcher["cpus_per_task"] == 1
    assert any("OMP_NUM_THREADS" in line for line in launcher["setup"])
