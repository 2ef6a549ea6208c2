"""How a task's runs are judged: the objective, and the warm/zero flag of a char-RNN run.

``objective`` (config) names the metric sweeps, searches, the best checkpoint, plateau and early
stopping minimise: one of those its task declares (``Judged``: each task's ``JUDGED``). Every
surface that ranks or summarises runs (the best checkpoint, searches, the report, leaderboards,
the model registry, benchmarks) reads it from here; nothing else recomputes an objective. Every
surface that names it for a reader (closing lines, leaderboards, the report's headline, the
registry, help texts) says which metric it is and that metric's value (``Judged.phrase``):
``objective val/loss_warm 1.7817``, never a bare number.

A char-RNN run scores its held-out text from h = 0 (``val/loss``) and from the state training
carried (``val/loss_warm``, ``rnnlab.tasks.charrnn``): both predict the same characters, so
they differ only by where the state starts, and a run where they differ by more than
``DISAGREEMENT`` is flagged.

Not here: the scoring itself (``rnnlab.tasks.charrnn``), the best weights of a run
(``rnnlab.training.best``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rnnlab.config import Config, ConfigError

DISAGREEMENT = 0.25  # flag a run whose val/loss and val/loss_warm differ by more than this


@dataclass(frozen=True)
class Judged:
    """How a task's runs are judged, declared once by the task (``TASKS[name].JUDGED``) and read
    by everything that ranks or summarises runs (training's best checkpoint and early stopping,
    searches, the report, leaderboards, benchmarks, the model registry). This module resolves
    the ``objective`` config key against it; nothing else recomputes an objective."""

    objectives: dict[str, bool]  # the val/* metrics ``objective`` may name → maximised?
    default: str  # the objective when ``objective`` is null
    legacy: str  # what runs recorded before the ``objective`` key minimised (no such param)
    # (runs.csv column, axis label, higher is better): what tables, figures and closing lines
    # lead with
    headline: tuple[tuple[str, str, bool], ...]
    # (val/* metric, threshold): a run is solved once that metric reaches the threshold (or
    # more); ``iters_to_solve`` records the first such evaluation, ``early_stop.solved`` stops
    # there. None: the task has no such criterion.
    solved: tuple[str, float] | None = None

    def is_solved(self, metrics: dict[str, float]) -> bool:
        """True when these evaluation metrics meet the solved criterion."""
        if self.solved is None:
            return False
        name, threshold = self.solved
        return metrics.get(name, float("-inf")) >= threshold

    def name(self, objective: str | None) -> str:
        """The metric a run with ``objective`` (the config key) minimises."""
        return objective or self.default

    def value(self, name: str, metrics: dict[str, float]) -> float:
        """The number to minimise, from one evaluation's metrics (KeyError if it lacks it);
        maximised metrics are minimised as 1 − value."""
        value = metrics[name]
        return 1.0 - value if self.objectives[name] else value

    def of_run(self, run) -> str:
        """The objective a recorded MLflow run minimised: its ``objective`` param, the default
        when that is null, the legacy objective when the run predates the key."""
        if "objective" not in run.data.params:
            return self.legacy
        name = run.data.params["objective"]
        return name if name in self.objectives else self.default

    def final(self, run) -> float:
        """The final value of the objective a recorded run minimised (NaN when it has none)."""
        name = self.of_run(run)
        final = {name: run.data.metrics.get("final/" + metric_key(name), math.nan)}
        return self.value(name, final)

    def shown(self, name: str, objective: float) -> float:
        """The objective metric's own value from the number minimised (``value``'s inverse): an
        accuracy is shown as itself, not as 1 − it."""
        return 1.0 - objective if self.objectives[name] else objective

    def phrase(self, name: str, objective: float) -> str:
        """How every surface names a run's objective, by its metric's key and that metric's own
        value: ``objective val/loss_warm 1.7817``, ``objective val/exact_acc 0.9990``."""
        return f"objective {name} {self.shown(name, objective):.4f}"

    def label(self, run_or_name) -> str:
        """An axis label for the objective: ``objective: 1 − val/exact_acc``."""
        name = run_or_name if isinstance(run_or_name, str) else self.of_run(run_or_name)
        return f"objective: {'1 − ' if self.objectives[name] else ''}{name}"


def metric_key(name: str) -> str:
    """``val/loss_warm`` → ``val_loss_warm``: the suffix of final/… and best/… metrics."""
    return name.replace("/", "_")


def check_objective(cfg: Config, judged: Judged) -> None:
    """ConfigError when ``objective`` is not one of the task's (``judged``), or when
    ``early_stop.solved`` asks for a criterion the task does not have."""
    if cfg.objective is not None and cfg.objective not in judged.objectives:
        allowed = ", ".join(judged.objectives)
        raise ConfigError("objective", cfg.objective, f"for {cfg.task.name}: {allowed}")
    if cfg.early_stop.solved and judged.solved is None:
        raise ConfigError("early_stop.solved", True,
                          f"false for {cfg.task.name}: it has no solved criterion")  # fmt: skip


def disagreement(metrics: dict[str, float], prefix: str = "val/") -> float | None:
    """|zero − warm| / min(zero, warm) of the loss, or None when either is missing."""
    cold, warm = metrics.get(prefix + "loss"), metrics.get(prefix + "loss_warm")
    if cold is None or warm is None or min(cold, warm) <= 0:
        return None
    return abs(cold - warm) / min(cold, warm)


def flagged(metrics: dict[str, float], prefix: str = "val/") -> bool:
    d = disagreement(metrics, prefix)
    return d is not None and d > DISAGREEMENT
