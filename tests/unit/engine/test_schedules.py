"""Learning-rate schedules and decoupled weight decay.

Each schedule's logged ``train/lr`` is checked against its formula written out again here (not
by calling rnnlab.engine.schedule), at every log point; plateau's drops are replayed from the logged
evaluation history. Resuming mid-schedule from a checkpoint gives the same rates, weights and
metrics, bit for bit, as the run never stopped.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from rnnlab.config import Config, ConfigError
from rnnlab.engine.optim import OPTIMIZERS
from rnnlab.tasks import check
from rnnlab.training import checkpoint
from rnnlab.training.loop import train
from rnnlab.training.tracker import MemoryTracker

LR, T = 0.1, 120


def small(kafka_path: Path, name: str, **schedule) -> Config:
    cfg = Config()
    cfg.data.path, cfg.data.val_fraction = str(kafka_path), 0.01
    cfg.hidden_size, cfg.seq_length, cfg.iterations, cfg.learning_rate = 16, 16, T, LR
    cfg.log_every, cfg.eval_every, cfg.sample_every, cfg.checkpoint_every = 5, 10, 1000, 60
    cfg.sample_length, cfg.eval_burn_in = 10, 100
    cfg.tracking.enabled = False
    cfg.schedule.name = name
    for k, v in schedule.items():
        setattr(cfg.schedule, k, v)
    check(cfg)
    return cfg


def expected(name: str, t: int, drops: int = 0, warmup: int = 0) -> float:
    """The rate of update t (0-based) with the fields used in ``CASES``."""
    if name == "constant":
        r = LR
    elif name == "step":  # step_size 25, gamma 0.5, min_lr 0.02
        r = max(0.02, LR * 0.5 ** (t // 25))
    elif name == "exponential":  # step_size 10, decay_rate 0.9
        r = LR * 0.9 ** (t / 10)
    elif name == "cosine":  # min_lr 0.01, over T - warmup
        r = (
            0.01
            + (LR - 0.01) * (1 + math.cos(math.pi * min(1, max(0, t - warmup) / (T - warmup)))) / 2
        )
    else:  # plateau, factor 0.5
        r = LR * 0.5**drops
    if warmup and t < warmup:
        r *= (t + 1) / warmup
    return r


CASES = {
    "constant": {},
    "step": {"step_size": 25, "gamma": 0.5, "min_lr": 0.02},
    "exponential": {"step_size": 10, "decay_rate": 0.9},
    "cosine": {"min_lr": 0.01, "warmup": 20},
    "plateau": {"plateau_patience": 1, "plateau_factor": 0.5},
}


@pytest.mark.parametrize("name", list(CASES))
def test_logged_lr_equals_the_formula_at_every_log_point(kafka_path, tmp_path, name):
    cfg = small(kafka_path, name, **CASES[name])
    tracker = MemoryTracker()
    train(cfg, tracker, tmp_path, show_progress=False)
    logged = tracker.history["train/lr"]
    assert [s for s, _ in logged] == list(range(5, T + 1, 5))
    warm = tracker.history["val/loss_warm"]  # the objective, at every 10th iteration
    for step, lr in logged:
        # iteration `step` was made by update t = step - 1; plateau counts the evaluations
        # strictly before it (an evaluation at `step` comes after that update)
        drops, best, stale = 0, math.inf, 0
        for s, v in warm:
            if s >= step:
                break
            if v < best:
                best, stale = v, 0
            else:
                stale += 1
                if stale >= 1:
                    drops, stale = drops + 1, 0
        want = expected(name, step - 1, drops, CASES[name].get("warmup", 0))
        assert lr == pytest.approx(want, rel=1e-12, abs=1e-15), (step, lr, want)
    if name == "plateau":
        assert len({lr for _, lr in logged}) > 1, "no plateau drop happened: test is vacuous"
    if name == "constant":
        assert {lr for _, lr in logged} == {LR}


@pytest.mark.parametrize("name", ["cosine", "plateau", "step"])
def test_resume_mid_schedule_is_bit_for_bit(kafka_path, tmp_path, name):
    cfg = small(kafka_path, name, **CASES[name])
    cfg.optimizer.weight_decay = 0.01
    whole = MemoryTracker()
    train(cfg, whole, tmp_path / "whole", show_progress=False)
    first = tmp_path / "whole" / "checkpoints" / "iter_0000060.npz"
    resumed = MemoryTracker()
    train(cfg, resumed, tmp_path / "resumed", resume_from=first, show_progress=False)
    for key in ("train/lr", "train/loss", "val/loss", "val/loss_warm", "best/val_loss_warm"):
        tail = [p for p in whole.history[key] if p[0] > 60]
        assert resumed.history[key] == tail, key
    a, _ = checkpoint.load(tmp_path / "whole" / "checkpoints" / f"iter_{T:07d}.npz")
    b, _ = checkpoint.load(tmp_path / "resumed" / "checkpoints" / f"iter_{T:07d}.npz")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_weight_decay_is_decoupled(name):
    """With decay wd: params·(1 − lr·wd), then the optimizer's own update, unchanged."""
    rng = np.random.default_rng(0)
    p0, g = rng.standard_normal(50), rng.standard_normal(50)
    plain2 = OPTIMIZERS[name](50, np.float64, 0.05)
    q = p0.copy()
    d = OPTIMIZERS[name](50, np.float64, 0.05)
    d.weight_decay = 0.1
    r = p0.copy()
    for _ in range(3):
        before = q.copy()
        plain2.step(q, g)
        delta = q - before  # the plain update
        want = r * (1 - 0.05 * 0.1) + delta
        d.step(r, g)
        np.testing.assert_allclose(r, want, rtol=1e-12, atol=1e-14)


def test_weight_decay_pulls_the_weights_toward_zero(kafka_path, tmp_path):
    norms = {}
    for wd in (0.0, 0.5):
        cfg = small(kafka_path, "constant")
        cfg.optimizer.weight_decay = wd
        train(cfg, None, tmp_path / str(wd), show_progress=False)
        arrays, _ = checkpoint.load(tmp_path / str(wd) / "checkpoints" / f"iter_{T:07d}.npz")
        norms[wd] = float(np.linalg.norm(arrays["param/Whh"]))
    print(norms)
    assert norms[0.5] < 0.8 * norms[0.0]


@pytest.mark.parametrize(
    "key,value",
    [("name", "linear"), ("step_size", 0), ("gamma", 1.5), ("warmup", -1), ("min_lr", 0.5),
     ("plateau_patience", 0), ("plateau_factor", 0.0)],
)  # fmt: skip
def test_bad_schedule_values_name_the_key(kafka_path, key, value):
    cfg = small(kafka_path, "constant")
    setattr(cfg.schedule, key, value)
    with pytest.raises(ConfigError, match=rf"schedule\.{key}="):
        check(cfg)
    cfg = small(kafka_path, "constant")
    cfg.optimizer.weight_decay = -1.0
    with pytest.raises(ConfigError, match=r"optimizer\.weight_decay="):
        check(cfg)
