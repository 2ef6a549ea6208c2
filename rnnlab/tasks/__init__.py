"""The two problems the shared engine learns, picked by ``task.name``.

A task owns its data, how windows are cut into batches, its evaluation and its samples; the
engine and the training loop are the same for both.
"""

from rnnlab.tasks.adder import AdderTask
from rnnlab.tasks.charrnn import CharTask

TASKS = {"charrnn": CharTask, "adder": AdderTask}

__all__ = ["TASKS", "AdderTask", "CharTask"]
