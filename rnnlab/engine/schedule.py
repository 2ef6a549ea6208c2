"""Learning-rate schedules: the rate of every update as a formula of the iteration.

``t`` counts the updates done before this one (the update that makes iteration t + 1). With
base rate ``lr``, warm-up ``W``, ``T = iterations`` and floor ``min_lr``:

    constant      lr
    step          max(min_lr, lr · gamma^⌊t / step_size⌋)
    exponential   max(min_lr, lr · decay_rate^(t / step_size))
    cosine        min_lr + (lr - min_lr) · ½ (1 + cos(π · clip((t - W) / (T - W), 0, 1)))
    plateau       max(min_lr, lr · plateau_factor^drops); a drop after plateau_patience
                  evaluations in a row without a new best objective
    warm-up       every schedule × (t + 1) / W while t < W

``constant`` without warm-up returns ``lr`` itself, so the seeds' runs are unchanged bit for bit.
The only state (plateau's counters) travels in checkpoints through ``state()``/``load_state()``. Not
here: the optimizers (``rnnlab.engine.optim``), what the objective is (``rnnlab.tasks.judging``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class ScheduleConfig:
    """How the learning rate moves (the formulas above); the files in conf/schedule/ set these."""

    name: str = "constant"  # constant | step | exponential | cosine | plateau
    step_size: int = 10_000  # step: iterations between drops; exponential: iterations per decay
    gamma: float = 0.5  # step: factor applied every step_size iterations
    decay_rate: float = 0.95  # exponential: factor per step_size iterations (applied smoothly)
    min_lr: float = 0.0  # floor of step/exponential/plateau, end point of cosine
    warmup: int = 0  # iterations of linear warm-up from lr/warmup to the schedule's rate
    plateau_patience: int = 2  # plateau: evaluations without a new best objective before a drop
    plateau_factor: float = 0.5  # plateau: factor applied at each drop


def _constant(c: ScheduleConfig, lr: float, t: int, total: int, drops: int) -> float:
    return lr


def _step(c: ScheduleConfig, lr: float, t: int, total: int, drops: int) -> float:
    return max(c.min_lr, lr * c.gamma ** (t // c.step_size))


def _exponential(c: ScheduleConfig, lr: float, t: int, total: int, drops: int) -> float:
    return max(c.min_lr, lr * c.decay_rate ** (t / c.step_size))


def _cosine(c: ScheduleConfig, lr: float, t: int, total: int, drops: int) -> float:
    progress = min(1.0, max(0.0, (t - c.warmup) / max(1, total - c.warmup)))
    return c.min_lr + (lr - c.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _plateau(c: ScheduleConfig, lr: float, t: int, total: int, drops: int) -> float:
    return max(c.min_lr, lr * c.plateau_factor**drops)


# schedule.name -> rate(config, base rate, t, iterations, plateau drops so far)
SCHEDULES: dict[str, Callable[[ScheduleConfig, float, int, int, int], float]] = {
    "constant": _constant,
    "step": _step,
    "exponential": _exponential,
    "cosine": _cosine,
    "plateau": _plateau,
}


def rate(c: ScheduleConfig, lr: float, t: int, total: int, drops: int = 0) -> float:
    """The learning rate of update t (0-based), warm-up included."""
    r = SCHEDULES[c.name](c, lr, t, total, drops)
    if c.warmup and t < c.warmup:
        r *= (t + 1) / c.warmup
    return r


class Schedule:
    """The rate for each update of one run; ``observe`` feeds plateau the objective."""

    def __init__(self, cfg: ScheduleConfig, learning_rate: float, iterations: int):
        self.cfg, self.learning_rate, self.iterations = cfg, learning_rate, iterations
        self.drops = 0  # plateau: drops so far
        self.best = math.inf  # plateau: best objective seen
        self.stale = 0  # plateau: evaluations in a row without a new best

    def lr(self, t: int) -> float:
        return rate(self.cfg, self.learning_rate, t, self.iterations, self.drops)

    def observe(self, objective: float) -> None:
        """An evaluation's objective (lower is better): plateau counts and drops."""
        if self.cfg.name != "plateau":
            return
        if objective < self.best:
            self.best, self.stale = objective, 0
            return
        self.stale += 1
        if self.stale >= self.cfg.plateau_patience:
            self.drops, self.stale = self.drops + 1, 0

    def state(self) -> dict:
        return {"drops": self.drops, "best": self.best, "stale": self.stale}

    def load_state(self, state: dict | None) -> None:
        if state:  # checkpoints from before schedules: the defaults are right
            self.drops, self.best, self.stale = state["drops"], state["best"], state["stale"]
