"""Where a run's store errors go: a log file in its job folder, not the terminal.

While a store refuses writes, MLflow and SQLAlchemy log every failed call with its traceback
(a 20-second outage printed thousands of lines). During a run those records go to
``<job folder>/rnnlab_store.log`` instead, with one line per failure rnnlab saw; the terminal
gets one line per outage from the run's tracker (when it began and ended, how many points
waited). The file is created only when something is written to it.

Not here: deciding what a failure means (``rnnlab.tracking.mlflow_tracker``).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

LOG_FILE = "rnnlab_store.log"
# The loggers that speak for a store while it fails: MLflow's SQL store and REST client,
# SQLAlchemy, and the HTTP connection pool's retries.
LOGGERS = ("mlflow.store", "mlflow.utils.rest_utils", "sqlalchemy", "urllib3")


_open = {"count": 0, "propagate": {}}  # open StoreLogs in this process; loggers' settings before


class StoreLog:
    """Diverts ``LOGGERS`` to ``<folder>/rnnlab_store.log`` between ``open`` and ``close``."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOG_FILE
        self._handler: logging.Handler | None = None

    def open(self) -> StoreLog:
        if self._handler is not None:
            return self
        self._handler = logging.FileHandler(self.path, encoding="utf-8", delay=True)
        form = "%(asctime)s %(levelname)s %(name)s: %(message)s"
        self._handler.setFormatter(logging.Formatter(form))
        self._handler.setLevel(logging.WARNING)
        if _open["count"] == 0:
            _open["propagate"] = {n: logging.getLogger(n).propagate for n in LOGGERS}
        _open["count"] += 1
        for name in LOGGERS:
            logger = logging.getLogger(name)
            logger.addHandler(self._handler)
            logger.propagate = False
        return self

    def note(self, line: str) -> None:
        """One line of rnnlab's own, e.g. a failed call's first line."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"{stamp} rnnlab: {line}\n")

    def close(self) -> None:
        if self._handler is None:
            return
        _open["count"] -= 1
        for name in LOGGERS:
            logger = logging.getLogger(name)
            logger.removeHandler(self._handler)
            if _open["count"] == 0:
                logger.propagate = _open["propagate"].get(name, True)
        self._handler.close()
        self._handler = None
