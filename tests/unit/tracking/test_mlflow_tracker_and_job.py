"""Tracking in-process: the buffered MLflow tracker, and ``run_job``'s statuses, params, tags,
dataset input and artifacts, read back from a real SQLite store through ``MlflowClient``."""

from __future__ import annotations

import warnings
from pathlib import Path

import mlflow
import pytest
from hydra import compose, initialize_config_dir
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from rnnlab.config import Config, flatten
from rnnlab.inference.requests import Limits
from rnnlab.sweeps import parent_run
from rnnlab.sweeps.compose import CONFIG_DIR, register_configs, to_config
from rnnlab.tracking.job import JobContext, run_job
from rnnlab.tracking.mlflow_tracker import MlflowTracker
from rnnlab.tracking.ui import run_name
from rnnlab.training.loop import DivergenceError

CHAR_TINY = ["iterations=60", "log_every=10", "eval_every=20", "sample_every=30",
             "checkpoint_every=50", "hidden_size=16"]  # fmt: skip
ADDER_TINY = ["task=adder", "iterations=200"]


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory) -> str:
    """One SQLite store for this module (creating one costs seconds of schema migrations);
    each test records into an experiment of its own."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


@pytest.fixture
def store(shared_store, request) -> str:
    request.node.experiment = request.node.name.replace("[", "-").rstrip("]")
    return shared_store


def make_config(overrides: list[str], store: str, experiment: str) -> Config:
    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        extra = [f"tracking.uri={store}", f"experiment_name={experiment}"]
        return to_config(compose("config", overrides=[*overrides, *extra]))


@pytest.fixture(autouse=True)
def _no_env_store(no_env_store):
    """conftest.no_env_store for every test here."""


def only_run(client: MlflowClient, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    (run,) = client.search_runs([exp.experiment_id])
    return run


def history(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, key)]


# --- the buffered tracker ------------------------------------------------------------------------


class CountingClient:
    """Records log_batch calls instead of sending them."""

    def __init__(self):
        self.batches: list[int] = []

    def log_batch(self, run_id, metrics=(), params=(), tags=()):
        self.batches.append(len(metrics))


def test_tracker_buffers_points_and_sends_them_in_batches():
    client = CountingClient()
    tracker = MlflowTracker(client, "run", flush_points=10, flush_seconds=3600)
    for step in range(4):
        tracker.log_metrics({"a": 1.0, "b": 2.0}, step)  # 8 points: below the threshold
    assert client.batches == []
    tracker.log_metrics({"a": 1.0, "b": 2.0}, 4)  # 10 points: one batch
    assert client.batches == [10]
    tracker.log_metrics({"a": 1.0}, 5)
    tracker.flush()
    assert client.batches == [10, 1]
    tracker.flush()  # nothing waiting: no call
    assert client.batches == [10, 1]


def test_tracker_flushes_after_flush_seconds_and_splits_at_mlflow_limit():
    client = CountingClient()
    tracker = MlflowTracker(client, "run", flush_points=5000, flush_seconds=0.0)
    tracker.log_metrics({"a": 1.0}, 0)  # the oldest point has waited ≥ 0 s
    assert client.batches == [1]
    tracker = MlflowTracker(client, "run", flush_points=5000, flush_seconds=3600)
    assert tracker.flush_points == 1000  # MLflow takes at most 1000 metrics per log_batch
    for step in range(2500):
        tracker._buffer.append(mlflow.entities.Metric("a", 1.0, 0, step))
    tracker.flush()
    assert client.batches[1:] == [1000, 1000, 500]


# --- run_job against a real store ----------------------------------------------------------------


def test_charrnn_run_records_everything(store, kafka_path, tmp_path, request):
    cfg = make_config(CHAR_TINY, store, request.node.experiment)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # e.g. MLflow's "ambiguous dataset source"
        final = run_job(cfg, JobContext(launch_dir=tmp_path, output_dir=tmp_path / "out",
                                        overrides=CHAR_TINY), show_progress=False)  # fmt: skip
    assert final["objective"] == pytest.approx(final["final/val_loss_warm"])  # the default
    client = MlflowClient(store)
    run = only_run(client, request.node.experiment)
    assert run.info.status == "FINISHED"
    # params: the flattened resolved config, every key, and the served model's limits (MLflow
    # logs a pyfunc's model_config as params; None: the environment's or rnnlab.model.LIMITS)
    served = {name: "None" for name in Limits.names()}
    assert run.data.params == {k: str(v) for k, v in flatten(cfg).items()} | served
    tags = run.data.tags
    assert tags["rnnlab.task"] == "charrnn" and tags["rnnlab.version"]
    assert tags["rnnlab.overrides"] == " ".join(CHAR_TINY)
    assert len(tags["mlflow.source.git.commit"]) == 40 and tags["rnnlab.git_dirty"] in (
        "true",
        "false",
    )
    (inp,) = run.inputs.dataset_inputs
    assert inp.dataset.name == "kafka"
    input_tags = {t.key: t.value for t in inp.tags}
    assert input_tags["sha256"] == tags["rnnlab.dataset_sha256"]
    assert (
        input_tags["sha256"] == "836497d1e5a47b1744e68da78822e8af19ddadc565e3a09fde348f300e14ec78"
    )
    # metric histories of the configured cadence
    for key in ("train/loss", "train/smooth_loss", "train/grad_norm", "perf/chars_per_sec",
                "perf/train_seconds", "train/lr"):  # fmt: skip
        assert history(client, run.info.run_id, key) == [10, 20, 30, 40, 50, 60], key
    for key in ("val/loss", "val/bpc", "val/loss_warm", "val/bpc_warm", "best/val_loss_warm",
                "best/iteration"):  # fmt: skip
        assert history(client, run.info.run_id, key) == [20, 40, 60], key
    for key in ("final/val_loss", "final/val_bpc", "final/train_seconds", "final/smooth_loss"):
        assert history(client, run.info.run_id, key) == [60], key
    assert "val/exact_acc" not in run.data.metrics
    # artifacts
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "samples", "checkpoints"} <= files
    samples = {a.path for a in client.list_artifacts(run.info.run_id, "samples")}
    assert samples == {"samples/iter_0000030.txt", "samples/iter_0000060.txt"}
    ckpts = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
    assert ckpts == {"checkpoints/iter_0000050.npz", "checkpoints/iter_0000060.npz",
                     "checkpoints/best.npz"}  # fmt: skip
    text = Path(
        mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path="samples/iter_0000060.txt", tracking_uri=store
        )
    ).read_text()
    assert len(text) == 1 + 200  # the prime, then sample_length characters


def test_adder_run_records_its_own_metrics_and_dataset(store, tmp_path, request):
    cfg = make_config(ADDER_TINY, store, request.node.experiment)
    run_job(cfg, JobContext(launch_dir=tmp_path, output_dir=tmp_path / "out"), show_progress=False)
    client = MlflowClient(store)
    run = only_run(client, request.node.experiment)
    assert run.info.status == "FINISHED"
    for key in ("val/bit_acc", "val/exact_acc"):
        assert history(client, run.info.run_id, key) == [100, 200]
    assert "val/loss" not in run.data.metrics
    (inp,) = run.inputs.dataset_inputs
    assert inp.dataset.name == "adder-8bit-eval"
    assert {t.key: t.value for t in inp.tags}["sha256"] == run.data.tags["rnnlab.dataset_sha256"]
    examples = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/samples/iter_0000200.txt")
    assert examples.startswith("# wrong: ") and "predicted" in examples


def test_divergence_ends_the_run_failed_with_a_reason(store, kafka_path, tmp_path, request):
    cfg = make_config([*CHAR_TINY, "learning_rate=1e6"], store, request.node.experiment)
    with pytest.raises(DivergenceError):
        run_job(cfg, JobContext(launch_dir=tmp_path), show_progress=False)
    run = only_run(MlflowClient(store), request.node.experiment)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"].startswith("DivergenceError: loss diverged")
    assert mlflow.active_run() is None


def test_tracking_disabled_records_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = make_config([*ADDER_TINY, "tracking.enabled=false"], f"sqlite:///{tmp_path}/x.db", "x")
    final = run_job(cfg, JobContext(launch_dir=tmp_path), show_progress=False)
    assert 0.0 <= final["objective"] <= 1.0
    assert not (tmp_path / "x.db").exists() and not (tmp_path / "mlflow.db").exists()


def test_a_leaked_run_in_the_same_process_is_closed(store, tmp_path, request):
    mlflow.set_tracking_uri(store)
    leaked = mlflow.start_run()  # as a job that died in a joblib worker would leave it
    cfg = make_config(ADDER_TINY, store, request.node.experiment)
    run_job(cfg, JobContext(launch_dir=tmp_path), show_progress=False)
    client = MlflowClient(store)
    assert client.get_run(leaked.info.run_id).info.status == "FAILED"


def test_parent_closes_failed_and_closes_children_left_running(store, request):
    client = MlflowClient(store)
    exp = client.create_experiment(request.node.experiment)
    parent = client.create_run(exp)
    ok = client.create_run(exp, tags={"mlflow.parentRunId": parent.info.run_id})
    client.set_terminated(ok.info.run_id, "FINISHED")
    dead = client.create_run(exp, tags={"mlflow.parentRunId": parent.info.run_id})  # SIGKILLed
    parent_run.open_parent.update(uri=store, run_id=parent.info.run_id)
    parent_run.close_parent(RunStatus.FINISHED)
    assert not parent_run.open_parent
    p = client.get_run(parent.info.run_id)
    assert p.info.status == "FAILED"
    assert p.data.tags["error"] == "1 of 2 child runs did not finish"
    assert p.data.tags["rnnlab.children_finished"] == "1"
    assert p.data.tags["rnnlab.children_failed"] == "1"
    assert client.get_run(dead.info.run_id).info.status == "FAILED"


def test_child_run_names_show_only_the_swept_values():
    overrides = ["hidden_size=50", "task=adder", "iterations=300", "+task.init=uniform"]
    assert run_name(overrides, ["hidden_size"], "x") == "hidden_size=50"
    assert run_name(overrides, ["hidden_size", "task.init"], "x") == (
        "hidden_size=50,+task.init=uniform"
    )
    assert run_name(overrides, [], "hidden_size=50,iterations=300") == (
        "hidden_size=50,iterations=300"
    )
    assert run_name([], [], "") is None
