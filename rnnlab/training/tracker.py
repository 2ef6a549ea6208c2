"""The small interface the training loop records through, and the in-memory implementation.

The loop only calls ``log_metrics``, ``log_text``, ``log_artifact`` and ``flush``; it never
imports MLflow. ``MemoryTracker`` keeps everything in lists (tests, notebooks, the benchmark).

Not here: the MLflow implementation (``rnnlab.tracking.mlflow_tracker``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol


class FinishedEarly(Exception):  # noqa: N818 — a way to end, not an error
    """Raised by a tracker to end training early as a finished run, not a failed one (a search's
    pruner stopping its trial): ``metrics`` is what the run returns."""

    def __init__(self, message: str, metrics: dict[str, float]):
        super().__init__(message)
        self.metrics = metrics


class Tracker(Protocol):
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str) -> None: ...
    def flush(self) -> None: ...


class MemoryTracker:
    """Records in memory: ``history[key]`` is a list of (step, value)."""

    def __init__(self) -> None:
        self.history: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self.texts: dict[str, str] = {}
        self.artifacts: list[tuple[Path, str]] = []

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for k, v in metrics.items():
            self.history[k].append((step, float(v)))

    def log_text(self, text: str, artifact_file: str) -> None:
        self.texts[artifact_file] = text

    def log_artifact(self, path: Path, artifact_path: str) -> None:
        self.artifacts.append((Path(path), artifact_path))

    def flush(self) -> None:
        pass
