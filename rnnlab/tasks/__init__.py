"""The two problems the shared engine learns, picked by ``task.name``.

A task owns its data, how windows are cut into batches, its evaluation and its samples; the
engine and the training loop are the same for both.
"""

from rnnlab import config, decode, evaluate, schedule
from rnnlab.config import Config, ConfigError
from rnnlab.tasks.adder import AdderTask
from rnnlab.tasks.charrnn import CharTask

TASKS = {"charrnn": CharTask, "adder": AdderTask}


def check(cfg: Config) -> None:
    """Every value check of a run's config: the task's name, the shared keys
    (``config.check``), then the task's own; ConfigError on the first bad one."""
    if cfg.task.name not in TASKS:
        raise ConfigError("task.name", cfg.task.name, "one of " + ", ".join(TASKS))
    config.check(cfg)
    schedule.check(cfg)
    evaluate.check(cfg)
    decode.check(cfg.top_k, cfg.top_p, cfg.greedy, cfg.beam, what="")
    TASKS[cfg.task.name].check(cfg)


__all__ = ["TASKS", "AdderTask", "CharTask", "check"]
