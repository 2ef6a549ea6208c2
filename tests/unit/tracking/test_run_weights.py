"""A run's weights when its files are damaged: every command that reads a run's checkpoint
(sample, score, inspect, export) falls back from a corrupted ``best.npz`` to the newest intact
checkpoint, as ``resume=`` does, says so in one line, and names the run's file, never this
process's temporary copy of it. Before, they refused, naming a temporary path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rnnlab.config import Config
from rnnlab.errors import UserError
from rnnlab.tracking import job, store
from rnnlab.tracking.run_weights import weights_of


@pytest.fixture(scope="module")
def run(tmp_path_factory, kafka_path):
    folder = tmp_path_factory.mktemp("weights")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    cfg = Config()
    cfg.data.path, cfg.data.val_fraction = str(kafka_path), 0.01
    cfg.hidden_size, cfg.seq_length, cfg.iterations = 12, 10, 60
    cfg.log_every, cfg.eval_every, cfg.sample_every, cfg.checkpoint_every = 10, 20, 60, 20
    cfg.tracking.uri, cfg.experiment_name, cfg.diagnostics = uri, "w", False
    job.run_job(cfg, job.JobContext(output_dir=folder / "job"), show_progress=False)
    client = store.open_store(uri)
    (r,) = client.search_runs([client.get_experiment_by_name("w").experiment_id])
    artifacts = Path(r.info.artifact_uri.removeprefix("file://")) / "checkpoints"
    return uri, r.info.run_id, artifacts


def cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.fixture(autouse=True)
def _no_env_store(no_env_store):
    """conftest.no_env_store for every test here."""


def test_a_corrupted_best_falls_back_to_the_newest_intact_checkpoint(run, tmp_path, capsys):
    from rnnlab import export, sample, score

    uri, run_id, artifacts = run
    cut(artifacts / "best.npz")
    w = weights_of(tmp_path / "a", run_id=run_id, tracking_uri=uri)
    line = capsys.readouterr().err.strip()
    print(line)
    assert line.startswith(f"rnnlab: run {run_id}'s checkpoints/best.npz is truncated")
    assert line.endswith("; using its newest intact checkpoint") and str(tmp_path) not in line
    assert w.iteration == 60 and w.source == f"run {run_id}'s checkpoints/iter_0000060.npz"
    args = [f"run_id={run_id}", f"tracking_uri={uri}"]

    def command(module, *more):  # what ``python -m <module> args…`` runs, in this process
        return module.run(module.COMMAND.parse([*args, *more]))

    assert command(sample, "prime=The", "length=20").startswith("The")
    assert "nats/char" in command(score, "text=The end of it.", "unknown=skip")
    command(export, f"out={tmp_path / 'model.npz'}")
    assert set(np.load(tmp_path / "model.npz")) >= {"fc.weight", "vocab"}


def test_with_no_intact_checkpoint_the_message_names_the_runs_files(run, tmp_path, capsys):
    uri, run_id, artifacts = run
    for path in sorted(artifacts.glob("*.npz")):
        cut(path)
    with pytest.raises(UserError) as e:
        weights_of(tmp_path / "b", run_id=run_id, tracking_uri=uri)
    print(e.value)
    assert str(e.value).startswith(f"run {run_id} has no readable checkpoint (run {run_id}'s ")
    assert str(tmp_path) not in str(e.value) and "\n" not in str(e.value)
