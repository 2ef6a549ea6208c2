"""The stop path: a second Ctrl-C still leaves a stop checkpoint, and the resume is bit for bit.

Real SIGINTs the process sends itself: the first as iteration k's train/* point is logged (the
loop will stop after that iteration), the second from inside iteration k's evaluation (which
it cuts short). Before, the second one raised KeyboardInterrupt there and the run ended with no
stop checkpoint: up to ``checkpoint_every`` iterations of training gone. Now the stop
checkpoint is written first, at iteration k, marked as having skipped the evaluation; a resume
runs that evaluation, sample and checkpoint before its next step and then equals a run never
stopped (every train/*, val/* and best/* point, every sample, the final checkpoint's arrays).
A second SIGINT anywhere else (a training step, the checkpoint itself) is only recorded.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from rnnlab.config import Config
from rnnlab.training import best, checkpoint
from rnnlab.training.loop import Interrupted, train
from rnnlab.training.tracker import MemoryTracker


def small_config(kafka_path, n: int) -> Config:
    cfg = Config()
    cfg.data.path, cfg.data.val_fraction = str(kafka_path), 0.01
    cfg.hidden_size, cfg.seq_length, cfg.iterations = 24, 16, n
    cfg.log_every, cfg.eval_every, cfg.sample_every, cfg.checkpoint_every = 10, 20, 40, 100
    cfg.sample_length = 20
    return cfg


class SigintAtLog(MemoryTracker):
    """Sends this process a real SIGINT while iteration ``at``'s train/* point is logged."""

    def __init__(self, at: int):
        super().__init__()
        self.at = at

    def log_metrics(self, metrics, step):
        super().log_metrics(metrics, step)
        if step == self.at and "train/loss" in metrics:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)  # the handler records it here


@pytest.mark.parametrize("second_in", ["evaluation", "step"])
def test_a_second_sigint_still_leaves_a_stop_checkpoint(second_in, kafka_path, tmp_path,
                                                        monkeypatch):  # fmt: skip
    n, k = 200, 120  # 120: a log point and an evaluation (20 | 120), between checkpoints
    cfg = small_config(kafka_path, n)
    whole = MemoryTracker()
    final_a = train(cfg, whole, tmp_path / "a", show_progress=False)

    if second_in == "evaluation":
        original = best.task_metrics

        def second_sigint_inside(trainer, observe=None):
            if trainer.state.iteration == k:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # raised here: the evaluation is cut short
            return original(trainer, observe)

        monkeypatch.setattr(best, "task_metrics", second_sigint_inside)
        first = SigintAtLog(k)
    else:
        first = SigintAtLog(k)
        original_log = first.log_metrics

        def two(metrics, step):
            original_log(metrics, step)
            if step == k and "train/loss" in metrics:  # the second, right after the first
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.01)

        first.log_metrics = two
    with pytest.raises(Interrupted) as stopped:
        train(cfg, first, tmp_path / "b", show_progress=False)
    monkeypatch.undo()
    path = stopped.value.checkpoint_path
    print(f"second SIGINT in the {second_in}: stopped at {stopped.value.iteration}, {path.name}")
    assert stopped.value.iteration == k and path.name == f"iter_{k:07d}.npz"
    skipped = checkpoint.load(path)[1]["state"]["tail_pending"]
    assert skipped is (second_in == "evaluation")
    if second_in == "evaluation":
        assert not any(step == k for step, _ in first.history["val/loss"])  # it was cut short

    second = MemoryTracker()
    final_b = train(cfg, second, tmp_path / "b", resume_from=path, show_progress=False)
    keys = [k for k in whole.history if k.split("/")[0] in ("train", "val", "best")]
    for key in keys:
        got = sorted(set(first.history[key]) | set(second.history[key]))
        assert got == whole.history[key], key
    assert {**first.texts, **second.texts} == whole.texts
    for key in final_a:
        if "train_seconds" not in key and "chars_per_sec" not in key:
            assert final_a[key] == final_b[key], key
    a = checkpoint.load(tmp_path / "a" / "checkpoints" / f"iter_{n:07d}.npz")[0]
    b = checkpoint.load(tmp_path / "b" / "checkpoints" / f"iter_{n:07d}.npz")[0]
    assert sorted(a) == sorted(b) and all(np.array_equal(a[x], b[x]) for x in a)
