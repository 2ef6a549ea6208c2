"""The best evaluation of a run: its weights, early stopping, and which weights become the model.

At every evaluation the loop hands the task's metrics here: the objective (as the task judges
it, ``rnnlab.tasks.judging``) feeds the plateau schedule, a new best keeps its weights
(``checkpoints/best.npz``, logged as an artifact) and early stopping counts evaluations without
an improvement (or, with ``early_stop.solved``, stops at the first evaluation that meets the
task's solved criterion). ``model_checkpoint`` says which checkpoint a run's model is made from
(``model_from=best|last``).

Not here: the loop (``rnnlab.training.loop``), the metrics themselves (each task's
``evaluate``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from rnnlab.config import Config
from rnnlab.engine import rnn
from rnnlab.tasks.judging import Judged, metric_key
from rnnlab.training import checkpoint

BEST_FILE = "best.npz"  # checkpoints/best.npz: the weights of the best evaluation so far


class BestTracker:
    """The best objective over a run's evaluations, the weights that reached it, and how many
    evaluations in a row have failed to improve on it by ``early_stop.min_delta``."""

    def __init__(self, cfg: Config, params: rnn.Params, judged: Judged):
        self.judged = judged
        self.name = judged.name(cfg.objective)
        self.patience, self.min_delta = cfg.early_stop.patience, cfg.early_stop.min_delta
        self.value = math.inf  # the best objective so far (lower is better)
        self.metric = math.nan  # ... as the metric itself (an accuracy for the adder)
        self.iteration = -1
        self.params = {k: v.copy() for k, v in params.items()}  # the weights that reached it
        self.reference = math.inf  # what early stopping must beat by min_delta
        self.stale = 0  # evaluations in a row that did not
        self.stopped_at: int | None = None

    def observe(self, metrics: dict[str, float], params: rnn.Params, iteration: int) -> bool:
        """Record one evaluation; True when it is a new best (strictly lower objective)."""
        value = self.objective(metrics)
        if value < self.reference - self.min_delta:
            self.reference, self.stale = value, 0
        else:
            self.stale += 1
        if value < self.value:
            self.value, self.metric, self.iteration = value, metrics[self.name], iteration
            for k, v in params.items():
                self.params[k][...] = v
            return True
        return False

    def objective(self, metrics: dict[str, float]) -> float:
        """The objective of one evaluation's metrics (lower is better)."""
        return self.judged.value(self.name, metrics)

    def should_stop(self) -> bool:
        return self.patience > 0 and self.stale >= self.patience

    def metrics(self) -> dict[str, float]:
        """``best/<objective>`` and ``best/iteration``."""
        return {f"best/{metric_key(self.name)}": self.metric, "best/iteration": self.iteration}

    def state(self) -> dict:
        return {"value": self.value, "metric": self.metric, "iteration": self.iteration,
                "reference": self.reference, "stale": self.stale}  # fmt: skip

    def arrays(self) -> dict[str, np.ndarray]:
        return {f"best/{k}": v for k, v in self.params.items()}

    def load(self, arrays: dict[str, np.ndarray], state: dict | None) -> None:
        if not state:  # a checkpoint from before best tracking: start tracking from here
            return
        self.value, self.metric = state["value"], state["metric"]
        self.iteration = state["iteration"]
        self.reference, self.stale = state["reference"], state["stale"]
        for k, v in self.params.items():
            if f"best/{k}" in arrays:
                v[...] = arrays[f"best/{k}"]


def warm_start(trainer) -> np.ndarray:
    """Where val/loss_warm's burn-in starts: stream 0's carried state of every layer (and the
    LSTM's c), (L, S, 1, H)."""
    return trainer.carry[..., :1, :].copy()


def task_metrics(trainer, observe=None) -> dict[str, float]:
    """The task's val/* metrics; the char-RNN's warm numbers start from the carried state.
    ``observe``: see ``char_metrics`` (the diagnostics count saturation on these passes)."""
    if getattr(trainer.task, "burn_in", None) is not None:
        return trainer.task.evaluate(trainer.params, observe, warm_start(trainer))
    return trainer.task.evaluate(trainer.params, observe)


def extra_arrays(trainer) -> dict[str, np.ndarray]:
    """What a checkpoint adds for evaluation: the best weights, the burn-in text and the state
    it starts from (so ``rnnlab.score warm=true`` gives this checkpoint's val/loss_warm)."""
    arrays = trainer.best.arrays()
    burn_in = getattr(trainer.task, "burn_in", None)
    if burn_in is not None:
        arrays["eval/burn_in"] = burn_in
        arrays["eval/warm_start"] = warm_start(trainer)
    return arrays


def after_evaluation(trainer, metrics: dict[str, float], ckpt_dir: Path, tracker) -> bool:
    """At each evaluation: feed plateau, keep the best weights (``checkpoints/best.npz``, logged
    as an artifact), log ``best/*``; True when early stopping says stop."""
    it = trainer.state.iteration
    value = trainer.best.objective(metrics)
    trainer.schedule.observe(value)
    if trainer.best.observe(metrics, trainer.params, it):
        write_best(trainer, ckpt_dir, tracker)
    tracker.log_metrics(trainer.best.metrics(), step=it)
    solved = trainer.cfg.early_stop.solved and trainer.best.judged.is_solved(metrics)
    if (trainer.best.should_stop() or solved) and it < trainer.cfg.iterations:  # at the end:
        trainer.best.stopped_at = it  # not early
        return True
    return False


def write_best(trainer, ckpt_dir: Path, tracker) -> Path:
    """``checkpoints/best.npz``: the trainer's checkpoint with the best weights as its params
    (at an improvement they are the current ones), logged as an artifact."""
    ck = trainer.to_checkpoint()
    ck.params = dict(trainer.best.params)
    path = ck.write(Path(ckpt_dir) / BEST_FILE)
    tracker.log_artifact(path, "checkpoints")
    return path


def finish(trainer, ckpt_dir: Path, tracker) -> dict[str, float]:
    """Once at the end: make sure best.npz exists here (a resumed run in a new folder that never
    improved has none yet), then ``test/*`` from the best weights when the task has a test text."""
    if trainer.best.iteration >= 0 and not (Path(ckpt_dir) / BEST_FILE).is_file():
        write_best(trainer, ckpt_dir, tracker)
    return final_metrics(trainer)


def baseline(trainer) -> dict[str, float]:
    """``baseline/<objective>`` — what a constant predictor scores on the run's objective metric
    (the task's ``constant_predictor()``) — and ``baseline_objective``, the same as an objective
    (lower is better); empty for a task or objective without one."""
    of_task = getattr(trainer.task, "constant_predictor", None)
    metrics, name = (of_task() if of_task is not None else {}), trainer.best.name
    if name not in metrics:
        return {}
    return {f"baseline/{metric_key(name)}": metrics[name],
            "baseline_objective": trainer.best.judged.value(name, metrics)}  # fmt: skip


def no_better_than_baseline(final: dict[str, float]) -> bool:
    """True for a run whose final objective is no better than a constant predictor's."""
    return "baseline_objective" in final and final["objective"] >= final["baseline_objective"]


def final_metrics(trainer) -> dict[str, float]:
    """Once at the end: ``test/*`` from the best weights (when the task has a test text)."""
    test = getattr(trainer.task, "test_metrics", None)
    return test(trainer.best.params) if test is not None else {}


def model_checkpoint(cfg: Config, ckpt_dir: Path) -> Path | None:
    """The checkpoint whose weights become the run's model: best.npz (model_from=best, when it
    exists) or the newest iter_*.npz."""
    best = Path(ckpt_dir) / BEST_FILE
    if cfg.model_from == "best" and best.is_file():
        return best
    return checkpoint.latest(Path(ckpt_dir))
