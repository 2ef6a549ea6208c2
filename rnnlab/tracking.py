"""The small interface the training loop records through, and its two implementations.

The loop only calls ``log_metrics``, ``log_text``, ``log_artifact`` and ``flush``.
``MemoryTracker`` keeps everything in lists (tests, notebooks, the benchmark); ``MlflowTracker``
sends it to one MLflow run, buffering metric points and sending them with ``log_batch``: one
synchronous call per point costs ~9 ms on a local SQLite store, a point inside a batch ~0.09 ms.
Texts (samples) are buffered the same way and go up together with the next batch.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient


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


class MlflowTracker:
    """Records into one MLflow run, batching metric points."""

    def __init__(
        self,
        client: MlflowClient,
        run_id: str,
        flush_points: int = 1000,
        flush_seconds: float = 15.0,
    ):
        self.client, self.run_id = client, run_id
        self.flush_points = min(flush_points, 1000)  # MLflow takes ≤ 1000 metrics per batch
        self.flush_seconds = flush_seconds
        self._buffer: list[Metric] = []
        self._texts: Path | None = None  # a local folder of texts waiting for the next flush
        self._last_flush = time.monotonic()

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        now_ms = int(time.time() * 1000)
        self._buffer.extend(Metric(k, float(v), now_ms, step) for k, v in metrics.items())
        if (
            len(self._buffer) >= self.flush_points
            or time.monotonic() - self._last_flush >= self.flush_seconds
        ):
            self.flush()

    def flush(self) -> None:
        while self._buffer:
            batch, self._buffer = self._buffer[:1000], self._buffer[1000:]
            self.client.log_batch(self.run_id, metrics=batch)
        if self._texts is not None:
            self.client.log_artifacts(self.run_id, str(self._texts))
            shutil.rmtree(self._texts, ignore_errors=True)
            self._texts = None
        self._last_flush = time.monotonic()

    def log_text(self, text: str, artifact_file: str) -> None:
        """Written to a local folder now, uploaded with the next metric batch (and always when
        training ends): one ``client.log_text`` per sample costs ~4-10 ms on a SQLite store."""
        if self._texts is None:
            self._texts = Path(tempfile.mkdtemp(prefix="rnnlab-texts-"))
        path = self._texts / artifact_file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    def log_artifact(self, path: Path, artifact_path: str) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)
