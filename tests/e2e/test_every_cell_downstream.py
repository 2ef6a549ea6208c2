"""Every cell downstream of the engine: training both tasks, bit-for-bit resume after SIGINT with
dropout on, samples and ``rnnlab.sample``, the pyfunc model, and refusals of bad values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.processes import run_cli
from helpers.stop_at import StopAt

from rnnlab.config import Config
from rnnlab.engine import rnn
from rnnlab.training import checkpoint
from rnnlab.training.loop import Interrupted, Trainer, train
from rnnlab.training.tracker import MemoryTracker

COMPARED = ("train/loss", "train/smooth_loss", "train/grad_norm")


def small_config(task: str, cell: str, kafka_path: Path, iterations: int) -> Config:
    cfg = Config()
    cfg.cell, cfg.layers, cfg.dropout = cell, 2, 0.25
    if task == "adder":
        cfg.task.name, cfg.task.activation, cfg.task.loss = "adder", "sigmoid", "mse"
        cfg.task.init, cfg.task.init_scale = "uniform", 1.0
        cfg.optimizer.name, cfg.optimizer.clip = "adam", None
        cfg.hidden_size, cfg.seq_length, cfg.task.eval_max_pairs = 8, 8, 256
        cfg.learning_rate, cfg.batch_size = 0.01, 4
    else:
        cfg.data.path, cfg.data.val_fraction = str(kafka_path), 0.005  # short evaluations
        cfg.hidden_size, cfg.seq_length, cfg.batch_size = 12, 10, 3
    cfg.iterations = iterations
    cfg.log_every, cfg.eval_every, cfg.sample_every, cfg.checkpoint_every = 10, 7, 50, 100
    cfg.sample_length = 20
    return cfg


@pytest.mark.parametrize("task", ["charrnn", "adder"])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_sigint_then_resume_is_bitwise_with_dropout(task, cell, kafka_path, tmp_path):
    n, k = 120, 63  # 63: an evaluation step (7 | 63) between log points (10 ∤ 63)
    cfg = small_config(task, cell, kafka_path, n)
    whole = MemoryTracker()
    final_a = train(cfg, whole, tmp_path / "a", show_progress=False)
    first = StopAt(k)
    with pytest.raises(Interrupted) as stopped:
        train(cfg, first, tmp_path / "b", show_progress=False)
    assert stopped.value.iteration == k
    stop_ck = checkpoint.Checkpoint.read(stopped.value.checkpoint_path)
    assert stop_ck.state["hprev"].shape == (
        2,
        2 if cell == "lstm" else 1,
        cfg.batch_size,
        12 if task == "charrnn" else 8,
    )
    assert "dropout" in stop_ck.meta["rng"]
    second = MemoryTracker()
    final_b = train(cfg, second, tmp_path / "b", resume_from=stopped.value.checkpoint_path,
                    show_progress=False)  # fmt: skip
    keys = [*COMPARED, *(key for key in whole.history if key.startswith("val/"))]
    for key in keys:
        assert first.history[key] + second.history[key] == whole.history[key], key
    for key in final_a:
        if "train_seconds" not in key and "chars_per_sec" not in key:
            assert final_a[key] == final_b[key], key
    a, _ = checkpoint.load(tmp_path / "a" / "checkpoints" / f"iter_{n:07d}.npz")
    b, _ = checkpoint.load(tmp_path / "b" / "checkpoints" / f"iter_{n:07d}.npz")
    assert sorted(a) == sorted(b)
    for key in a:
        assert np.array_equal(a[key], b[key]), key


def test_resume_without_the_dropout_stream_differs(kafka_path, tmp_path):
    """The oracle above has teeth: restarting the dropout stream changes the trajectory."""
    cfg = small_config("charrnn", "lstm", kafka_path, 40)
    straight = Trainer(cfg)
    losses = [straight.step()[0] for _ in range(40)]
    first = Trainer(cfg)
    for _ in range(20):
        first.step()
    path = first.save(tmp_path / "ck")
    arrays, meta = checkpoint.load(path)
    meta["rng"].pop("dropout")
    bad = checkpoint.save(tmp_path / "bad.npz", arrays, meta)
    for source, same in ((path, True), (bad, False)):
        resumed = Trainer(cfg)
        resumed.load(source)
        assert ([resumed.step()[0] for _ in range(20)] == losses[20:]) is same


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_dropout_changes_training_but_not_evaluation(cell, kafka_path):
    cfg = small_config("charrnn", cell, kafka_path, 10)
    t = Trainer(cfg)
    spec = t.spec
    assert spec.dropout == 0.25
    # evaluation reads the same weights with dropout off: deterministic
    assert t.evaluate() == t.evaluate()
    cfg0 = small_config("charrnn", cell, kafka_path, 10)
    cfg0.dropout = 0.0
    t0 = Trainer(cfg0)
    assert np.array_equal(t0.flat, t.flat)  # dropout draws from its own stream, not init's
    assert t0.step()[0] != t.step()[0]


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_sample_cli_and_generation_for_gated_cells(cell, kafka_path, tmp_path):
    """rnnlab.sample draws from a gated two-layer checkpoint exactly what the trainer's sampler
    draws with the same seed; the adder's bit-by-bit view works for the cell too."""
    from rnnlab.inference.generate import add_bit_by_bit, generate_text
    from rnnlab.inference.weights import load_weights

    cfg = small_config("charrnn", cell, kafka_path, 30)
    final = train(cfg, MemoryTracker(), tmp_path / "c", show_progress=False)
    assert np.isfinite(final["final/val_loss"])
    path = tmp_path / "c" / "checkpoints" / "iter_0000030.npz"
    w = load_weights(path)
    assert rnn.spec_of(w.cfg) == rnn.Spec(cell, 2, 12, "tanh", 0.25)
    t = Trainer(cfg)
    t.load(path)
    ours = t.task.generate(t.params, np.random.default_rng(4), "The", 40, 0.9)
    assert generate_text(w, "The", 40, 0.9, np.random.default_rng(4)) == ours
    r = run_cli([f"checkpoint={path}", "prime=The", "length=40", "temperature=0.9", "seed=4"],
                cwd=tmp_path, module="rnnlab.sample")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("The") and len(r.stdout.rstrip("\n")) >= 43

    cfg = small_config("adder", cell, kafka_path, 30)
    train(cfg, MemoryTracker(), tmp_path / "d", show_progress=False)
    w = load_weights(tmp_path / "d" / "checkpoints" / "iter_0000030.npz")
    pred, lines = add_bit_by_bit(w, 77, 41)
    assert 0 <= pred < 256 and len(lines) == 10


def test_adder_eval_bits_reports_longer_sums(kafka_path):
    cfg = small_config("adder", "gru", kafka_path, 10)
    cfg.task.eval_bits = 16
    metrics = Trainer(cfg).evaluate()
    assert set(metrics) == {"val/bit_acc", "val/exact_acc", "val/bit_acc_16bit",
                            "val/exact_acc_16bit"}  # fmt: skip
    assert 0.0 <= metrics["val/exact_acc_16bit"] <= 1.0


@pytest.mark.parametrize(
    "override,expected",
    [
        (
            "cell=transformer",
            "cell='transformer' is not allowed: one of rnn, gru, lstm, irnn, "
            "indrnn, mingru, minlstm, lru",
        ),
        ("layers=0", "layers=0 is not allowed: an integer ≥ 1"),
        ("dropout=1.0", "dropout=1.0 is not allowed: a number in [0, 1)"),
        ("dropout=-0.1", "dropout=-0.1 is not allowed: a number in [0, 1)"),
    ],
)
def test_bad_cell_values_cost_one_line(override, expected, tmp_path):
    r = run_cli([override, "tracking.enabled=false"], cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == f"rnnlab: error: {expected}"
    assert not (tmp_path / "mlflow.db").exists()
