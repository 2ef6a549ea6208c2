"""A tracker that interrupts its own training run for real, at a chosen evaluation."""

from __future__ import annotations

import os
import signal

from rnnlab.training.tracker import MemoryTracker


class StopAt(MemoryTracker):
    """Sends this process a real SIGINT while step ``at``'s evaluation is being logged."""

    def __init__(self, at: int):
        super().__init__()
        self.at = at

    def log_metrics(self, metrics, step):
        super().log_metrics(metrics, step)
        if step == self.at and any(k.startswith("val/") for k in metrics):
            os.kill(os.getpid(), signal.SIGINT)
