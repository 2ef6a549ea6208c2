"""The problems the shared engine learns, picked by ``task.name``.

A task owns its data, how windows are cut into batches, the weight of each step in the loss, its
evaluation and its samples; the engine and the training loop are the same for all of them. The
seeds' two (``charrnn``, ``adder``) and three long-memory tasks with the papers' own criteria
(``adding``, ``copy``, ``digits``; docs/tasks.md).
"""

from rnnlab import config
from rnnlab.config import Config, ConfigError
from rnnlab.tasks.adder import AdderTask
from rnnlab.tasks.adding import AddingTask
from rnnlab.tasks.charrnn import CharTask
from rnnlab.tasks.copymemory import CopyTask
from rnnlab.tasks.digits import DigitsTask
from rnnlab.tasks.judging import Judged, check_objective

TASKS = {
    "charrnn": CharTask,
    "adder": AdderTask,
    "adding": AddingTask,
    "copy": CopyTask,
    "digits": DigitsTask,
}


def check(cfg: Config) -> None:
    """Every value check of a run's config: the task's name, the shared keys
    (``config.check``), the objective, then the task's own; ConfigError on the first bad one."""
    if cfg.task.name not in TASKS:
        raise ConfigError("task.name", cfg.task.name, "one of " + ", ".join(TASKS))
    config.check(cfg)
    check_objective(cfg, TASKS[cfg.task.name].JUDGED)
    TASKS[cfg.task.name].check(cfg)


def judged(task: str | None) -> Judged | None:
    """How runs of ``task`` are judged (its ``JUDGED``), None for a name rnnlab does not know."""
    cls = TASKS.get(task or "")
    return cls.JUDGED if cls is not None else None


def judged_run(run) -> Judged | None:
    """How a recorded MLflow run is judged: by its task (param ``task.name``, tag
    ``rnnlab.task``, the char-RNN for runs that record neither)."""
    task = run.data.params.get("task.name") or run.data.tags.get("rnnlab.task") or "charrnn"
    return judged(task)


def default_objectives() -> str:
    """Each task's default objective, for help texts: ``charrnn val/loss_warm, adder …``."""
    return ", ".join(f"{name} {cls.JUDGED.default}" for name, cls in TASKS.items())


__all__ = [
    "TASKS",
    "AdderTask",
    "AddingTask",
    "CharTask",
    "CopyTask",
    "DigitsTask",
    "check",
    "default_objectives",
    "judged",
    "judged_run",
]
