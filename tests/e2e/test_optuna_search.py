"""Optuna search (``hydra/sweeper=rnnlab_optuna``): spaces, pruning through the tracker, MLflow
child runs tagged with their trial, a persistent study that an interrupted search continues."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import optuna
import pytest
from helpers.processes import ROOT, run_cli
from mlflow.tracking import MlflowClient
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from rnnlab.config import Config, TaskConfig
from rnnlab.sweeps import search
from rnnlab.training.loop import train
from rnnlab.training.tracker import MemoryTracker

# A small, quick adder search: 6-bit sums, ≤ 1200 iterations, val every 100.
ADDER = [
    "+search=adder",
    "seq_length=6",
    "iterations=1200",
    "eval_every=100",
    "sample_every=1200",
    "checkpoint_every=1200",
    "hydra.sweeper.pruner.min_resource=100",
]


def children(uri: str) -> list:
    client = MlflowClient(uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, filter_string="tags.mlflow.parentRunId != ''", max_results=1000)


def study(tmp: Path, name: str = "adder-lr-hidden") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp / 'optuna.db'}")


def test_parse_space_maps_hydra_sweep_syntax_to_optuna():
    space, fixed = search.parse_space(
        [
            "learning_rate=tag(log, interval(0.001, 1.0))",
            "hidden_size=choice(8, 16, 32)",
            "seq_length=range(10, 50, 10)",
            "task.init_scale=tag(int, interval(1, 4))",
            "iterations=500",
        ]
    )
    assert space["learning_rate"] == FloatDistribution(0.001, 1.0, log=True)
    assert space["hidden_size"] == CategoricalDistribution([8, 16, 32])
    assert space["seq_length"] == IntDistribution(10, 40, step=10)
    assert space["task.init_scale"] == IntDistribution(1, 4)
    assert fixed == ["iterations=500"]


class TagRecorder:
    """Stands in for MlflowClient in the unit test: records set_tag calls."""

    tracking_uri = "memory:"

    def __init__(self):
        self.tags: dict[str, str] = {}

    def set_tag(self, run_id, key, value):
        self.tags[key] = value


def test_trial_tracker_reports_the_objective_and_prunes(tmp_path, monkeypatch):
    """The loop reports 1 − val/exact_acc at each evaluation; a pruner that stops anything above
    0.5 stops the trial at its first evaluation; the trial is PRUNED in storage, the run tagged."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    st = optuna.create_study(storage=storage, study_name="t", direction="minimize")
    st.set_user_attr(search.ATTR_PRUNER, {"name": "none"})
    trial = st.ask()
    monkeypatch.setenv(search.ENV_STORAGE, storage)
    monkeypatch.setenv(search.ENV_STUDY, "t")
    monkeypatch.setenv(search.ENV_TRIAL_ID, str(trial._trial_id))
    cfg = Config(
        task=TaskConfig(
            name="adder", activation="sigmoid", loss="mse", init="uniform", init_scale=1.0
        ),
        hidden_size=8,
        seq_length=4,
        iterations=2000,
        eval_every=200,
        log_every=100,
        learning_rate=0.5,
    )
    cfg.optimizer.name, cfg.optimizer.clip = "sgd", None
    memory, client = MemoryTracker(), TagRecorder()

    # no pruning: the trial sees every evaluation
    tracker = search.trial_tracker(memory, cfg, client, "run-1")
    assert isinstance(tracker, search.TrialTracker)
    train(cfg, tracker, tmp_path / "a", show_progress=False)
    reported = st.trials[0].intermediate_values
    assert sorted(reported) == list(range(200, 2001, 200))
    exact = dict(memory.history["val/exact_acc"])
    assert all(reported[s] == pytest.approx(1 - exact[s]) for s in reported)
    assert min(reported.values()) < 0.5  # 4-bit sums are learnt in 2000 iterations
    assert client.tags[search.TAG_TRIAL] == "0"

    # prune anything worse than 0.5 → stops at the first evaluation (1 − 0 = 1.0)
    trial2 = st.ask()
    monkeypatch.setenv(search.ENV_TRIAL_ID, str(trial2._trial_id))
    st.set_user_attr(search.ATTR_PRUNER, {"name": "none"})
    tracker = search.trial_tracker(MemoryTracker(), cfg, client, "run-2")
    tracker.trial.study.pruner = optuna.pruners.ThresholdPruner(upper=0.5)
    with pytest.raises(search.TrialPruned) as e:
        train(cfg, tracker, tmp_path / "b", show_progress=False)
    assert e.value.step == 200 and e.value.metrics["objective"] > 0.5
    assert st.trials[1].state == TrialState.PRUNED
    assert client.tags[search.TAG_STATE] == "PRUNED" and client.tags[search.TAG_PRUNED_AT] == "200"


def test_without_a_search_the_tracker_is_untouched(monkeypatch):
    monkeypatch.delenv(search.ENV_TRIAL_ID, raising=False)
    memory = MemoryTracker()
    assert search.trial_tracker(memory, Config(), TagRecorder(), "r") is memory


def test_a_bad_value_in_a_searched_choice_fails_before_any_job(tmp_path):
    proc = run_cli(["-m", *ADDER, "hidden_size=choice(8,0)"], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "hidden_size=0" in proc.stderr
    assert not (tmp_path / "optuna.db").exists()


@pytest.mark.slow
def test_search_prunes_and_records_every_trial_under_one_parent(tmp_path):
    proc = run_cli(["-m", *ADDER, "hydra.sweeper.n_trials=8"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    st = study(tmp_path)
    states = {t.number: t.state.name for t in st.trials}
    assert sorted(states) == list(range(8))
    assert "PRUNED" in states.values() and "COMPLETE" in states.values()
    assert st.best_value < 0.5  # the search found settings that learn 6-bit addition

    runs = children(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert len(runs) == 8
    assert len({r.data.tags["mlflow.parentRunId"] for r in runs}) == 1
    by_trial = {int(r.data.tags[search.TAG_TRIAL]): r for r in runs}
    assert {n: r.data.tags[search.TAG_STATE] for n, r in by_trial.items()} == states
    for n, r in by_trial.items():
        assert r.info.status == "FINISHED"  # pruned is a decision, not a failure
        assert float(r.data.params["learning_rate"]) == pytest.approx(
            st.trials[n].params["learning_rate"]
        )
        if states[n] == "PRUNED":
            assert "final/val_exact_acc" not in r.data.metrics
            assert int(r.data.tags[search.TAG_PRUNED_AT]) < 1200

    # pruning saved iterations: the table the report reads says so
    parent_id = runs[0].data.tags["mlflow.parentRunId"]
    df = search.search_trials(f"sqlite:///{tmp_path / 'mlflow.db'}", parent_id)
    assert list(df["trial"]) == list(range(8))
    assert list(df["state"]) == [states[n] for n in range(8)]
    assert df["iterations"].sum() < 0.8 * 8 * 1200
    assert (df.loc[df["state"] == "PRUNED", "iterations"] < 1200).all()
    complete = df[df["state"] == "COMPLETE"]
    assert list(complete["value"]) == pytest.approx([st.trials[n].value for n in complete["trial"]])
    assert df["best_so_far"].iloc[-1] == pytest.approx(st.best_value)
    assert set(df.columns) >= {"param.learning_rate", "param.hidden_size", "intermediate"}
    parent = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["rnnlab.best_value"] == f"{st.best_value:.6g}"


def third_trial_training(db: Path) -> bool:
    """Two trials finished and the third has its MLflow run — read with plain read-only
    sqlite3: opening the study with Optuna while the sweeper creates it would race the sweeper
    in the storage's schema migration."""
    if not db.exists():
        return False
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            rows = con.execute(
                "SELECT t.number FROM trials t JOIN trial_user_attributes a "
                "ON a.trial_id = t.trial_id WHERE a.key = ?",
                (search.ATTR_RUN_ID,),
            ).fetchall()
    except sqlite3.Error:  # the sweeper is still creating the tables
        return False
    return 2 in {number for (number,) in rows}


@pytest.mark.slow
def test_an_interrupted_search_continues_the_same_study(tmp_path):
    """Ctrl-C during trial ≥ 2; the same command again: the study grows from where it stopped,
    trial numbers never repeat, the interrupted trial is FAIL, and every trial sits under the
    first search's parent run."""
    args = [
        "-m",
        *ADDER,
        "hydra.sweeper.n_trials=5",
        "hydra.sweeper.pruner.name=none",
        "iterations=3000",
    ]  # long enough trials to be interrupted in the middle of one
    env = {k: v for k, v in __import__("os").environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnnlab.run", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    db = tmp_path / "optuna.db"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not third_trial_training(db):
        time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out[-3000:]
    first = study(tmp_path).trials
    assert 2 <= len([t for t in first if t.state == TrialState.COMPLETE]) < 5

    proc2 = run_cli(args, cwd=tmp_path)
    assert proc2.returncode == 0, proc2.stderr[-3000:]
    trials = study(tmp_path).trials
    numbers = [t.number for t in trials]
    assert numbers == list(range(len(trials))) and len(trials) > len(first)
    assert [t.params for t in trials[: len(first)]] == [t.params for t in first]
    assert sum(t.state == TrialState.FAIL for t in trials) == 1  # the one Ctrl-C stopped
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 4
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(params)) == len(params)  # the restarted sampler did not replay the first

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = children(uri)
    assert len({r.data.tags["mlflow.parentRunId"] for r in runs}) == 1
    assert sorted(int(r.data.tags[search.TAG_TRIAL]) for r in runs) == numbers
    killed = [r for r in runs if r.info.status == "KILLED"]
    assert len(killed) == 1 and killed[0].data.tags[search.TAG_STATE] == "FAIL"
    client = MlflowClient(uri)
    parents = client.search_runs(
        [runs[0].info.experiment_id], filter_string="tags.`rnnlab.kind` = 'sweep'"
    )
    assert [p.info.run_id for p in parents] == [runs[0].data.tags["mlflow.parentRunId"]]


def test_search_configs_compose(tmp_path):
    """Every file in conf/search/ composes and names a search space the sweeper can parse.
    Composed in this process (a CLI start with the sweeper costs ~2.4 s of CPU); the first file
    also through ``python -m rnnlab.run --cfg hydra``, which must print the same sweeper."""
    import yaml
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from rnnlab.sweeps.compose import CONFIG_DIR, register_configs

    register_configs()
    paths = sorted((ROOT / "conf" / "search").glob("*.yaml"))
    assert len(paths) >= 3
    for i, path in enumerate(paths):
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose("config", [f"+search={path.stem}"], return_hydra_config=True)
        sweeper = OmegaConf.to_container(cfg.hydra.sweeper)
        assert "rnnlab_optuna_sweeper" in sweeper["_target_"]
        if i == 0:
            args = [f"+search={path.stem}", "--cfg", "hydra", "-p", "hydra.sweeper"]
            proc = run_cli(args, cwd=tmp_path)
            assert proc.returncode == 0, proc.stderr
            assert yaml.safe_load(proc.stdout) == sweeper
        params = sweeper["params"]
        space, _ = search.parse_space([f"{k}={v}" for k, v in params.items()])
        assert "learning_rate" in space and space["learning_rate"].log
