"""``MlflowTracker``: the training loop's ``Tracker`` for one MLflow run.

It buffers metric points and sends them with ``log_batch``: one synchronous call per point costs
~9 ms on a local SQLite store, a point inside a batch ~0.09 ms. Texts (samples) are buffered the
same way and go up together with the next batch.

Not here: the interface (``rnnlab.training.tracker``), the store and its journal
(``rnnlab.tracking.store``).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from rnnlab import files
from rnnlab.tracking.journal import Journal
from rnnlab.tracking.store import first_line, quiet_artifact_transfers
from rnnlab.tracking.store_log import StoreLog
from rnnlab.training.signals import request_stop, shielded

# What a store write raises when the store is away or busy: MLflow's own errors, and the
# connection errors of an HTTP client (requests' exceptions are OSErrors).
STORE_ERRORS = (MlflowException, OSError)


@dataclass
class Outage:
    """The store refusing writes, from the first failed call until one succeeds again."""

    began: datetime
    calls: int = 0  # failed calls
    points: int = 0  # metric points that waited meanwhile, in the buffer or the journal
    error: str = ""  # the latest failure's first line


class MlflowTracker:
    """Records into one MLflow run, batching metric points.

    Invariants, each enforced here and nowhere else:

    - *Write-ahead order:* ``log_artifact`` (a checkpoint of iteration k) first flushes every
      point and text handed over before it, so the store never holds a checkpoint without the
      points that lead up to it, and resuming from any checkpoint leaves no gap.
    - *Exactly once:* ``logged`` (the last step the store holds per key, read when a run is
      resumed) and ``logged_texts`` make a resumed run skip what the store already has.
    - *Points leave the buffer only once the store (or the journal) holds them,* and every store
      write runs under ``signals.shielded()``, so no signal can cut a flush in half.
    - *Nothing lost when the store is unreachable:* a write that fails goes to the run's
      ``Journal`` (and so does every later one, to keep their order) while training goes on;
      each flush tries to replay it. After ``retry_seconds`` of failures the tracker asks the
      loop to stop (``signals.request_stop``), as SIGTERM would: a stop checkpoint, then the
      journal waits for ``python -m rnnlab.sync``.
    - *One line per outage:* the store's own error logs go to ``<job folder>/rnnlab_store.log``
      (``StoreLog``) for the run's life; when the store takes writes again the terminal gets one
      line: when the outage began and ended, how many calls failed, how many points waited.
    - *Every write of a run goes through here* (params, tags, texts, checkpoints, the status),
      so every one of them is journalled when the store refuses it.
    """

    def __init__(
        self,
        client: MlflowClient,
        run_id: str,
        flush_points: int = 1000,
        flush_seconds: float = 15.0,
        journal: Journal | None = None,
        retry_seconds: float = 60.0,
        logged: Mapping[str, int] | None = None,
        logged_texts: set[str] | None = None,
    ):
        self.client, self.run_id = client, run_id
        self.flush_points = min(flush_points, 1000)  # MLflow takes ≤ 1000 metrics per batch
        self.flush_seconds = flush_seconds
        self.journal, self.retry_seconds = journal, retry_seconds
        self.logged = dict(logged or {})
        self.logged_texts = set(logged_texts or ())
        self._buffer: list[Metric] = []
        self._texts: Path | None = None  # a local folder of texts waiting for the next flush
        self._last_flush = time.monotonic()
        self.failing_since: float | None = None  # when the store first refused a write
        self.unreachable: str | None = None  # set once the retry budget is spent: why
        self.outage: Outage | None = None  # the store's current refusal, while it lasts
        self.journal_error: str | None = None  # the journal itself could not be written: why
        self.store_log = StoreLog(journal.folder).open() if journal is not None else None

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        now_ms = int(time.time() * 1000)
        self._buffer.extend(
            Metric(k, float(v), now_ms, step)
            for k, v in metrics.items()
            if step > self.logged.get(k, -1)  # exactly once: the store has it already
        )
        if (
            len(self._buffer) >= self.flush_points
            or time.monotonic() - self._last_flush >= self.flush_seconds
        ):
            self.flush()

    def flush(self) -> None:
        with shielded():
            if self._store_ready():
                try:
                    while self._buffer:
                        self.client.log_batch(self.run_id, metrics=self._buffer[:1000])
                        if self.outage is not None:  # these waited for the store
                            self.outage.points += len(self._buffer[:1000])
                        del self._buffer[:1000]  # only now: the store holds them
                    if self._texts is not None:
                        with quiet_artifact_transfers():
                            self.client.log_artifacts(self.run_id, str(self._texts))
                        shutil.rmtree(self._texts, ignore_errors=True)
                        self._texts = None
                    self._recovered()
                except STORE_ERRORS as e:
                    self._failed(e)
            if not self._store_ready():
                self._journal_buffer()
        self._last_flush = time.monotonic()

    def log_text(self, text: str, artifact_file: str) -> None:
        """Written to a local folder now, uploaded with the next metric batch (and always when
        training ends): one ``client.log_text`` per sample costs ~4-10 ms on a SQLite store."""
        if artifact_file in self.logged_texts:  # exactly once
            return
        if self._texts is None:
            self._texts = Path(tempfile.mkdtemp(prefix="rnnlab-texts-"))
        files.write_text(self._texts / artifact_file, text)

    def log_artifact(self, path: Path, artifact_path: str) -> None:
        self.flush()  # write-ahead: everything before this checkpoint is in the store first
        with shielded():
            if self._store_ready():
                try:
                    with quiet_artifact_transfers():
                        self.client.log_artifact(self.run_id, str(path), artifact_path)
                    return
                except STORE_ERRORS as e:
                    self._failed(e)
            op = {"op": "artifact", "path": str(Path(path).resolve())}
            self._journal({**op, "artifact_path": artifact_path})

    def log_params(self, params: Mapping[str, str]) -> None:
        """The run's params (what made it), in order with everything else."""
        from mlflow.entities import Param

        self.flush()
        items = [[k, str(v)] for k, v in params.items()]
        with shielded():
            if self._store_ready():
                try:
                    for i in range(0, len(items), 100):
                        chunk = [Param(k, v) for k, v in items[i : i + 100]]
                        self.client.log_batch(self.run_id, params=chunk)
                    return
                except STORE_ERRORS as e:
                    self._failed(e)
            self._journal({"op": "params", "params": items})

    def set_tag(self, key: str, value: str) -> None:
        """A tag, in order with the points (through the journal when the store is away)."""
        self.flush()
        with shielded():
            if self._store_ready():
                try:
                    self.client.set_tag(self.run_id, key, value)
                    return
                except STORE_ERRORS as e:
                    self._failed(e)
            self._journal({"op": "tag", "key": key, "value": value})

    def delete_tag(self, key: str) -> None:
        """Remove a tag (e.g. the ``error`` a resume recovers from), in order with the rest."""
        self.flush()
        with shielded():
            if self._store_ready():
                try:
                    self.client.delete_tag(self.run_id, key)
                    return
                except STORE_ERRORS as e:
                    self._failed(e)
            self._journal({"op": "delete_tag", "key": key})

    def end(self, status: str) -> bool:
        """Close the run with ``status`` after a last flush; False if it went to the journal."""
        self.flush()
        try:
            with shielded():
                if self._store_ready():
                    try:
                        self.client.set_terminated(self.run_id, status)
                        return True
                    except STORE_ERRORS as e:
                        self._failed(e)
                self._journal({"op": "end", "status": status})
                return False
        finally:
            if self.store_log is not None:
                self.store_log.close()

    @property
    def waiting(self) -> bool:
        """True while the journal holds writes the store has not taken."""
        return self.journal is not None and self.journal.pending

    # --- the store away -------------------------------------------------------------------------

    def _store_ready(self) -> bool:
        """True when writes may go straight to the store: no journal waits (else replay it
        first, so the order holds)."""
        if self.journal is None or not self.journal.pending:
            return True
        if self.unreachable:
            return False
        try:
            self.journal.replay(self.client)
        except STORE_ERRORS as e:
            self._failed(e)
            return False
        self._recovered()
        return True

    def _failed(self, error: BaseException) -> None:
        if self.journal is None:
            raise error
        now = time.monotonic()
        self.failing_since = self.failing_since or now
        self.outage = self.outage or Outage(datetime.now().astimezone())
        self.outage.calls += 1
        self.outage.error = first_line(error)[:200]
        if self.store_log is not None:
            self.store_log.note(
                f"a store write failed: {type(error).__name__}: {first_line(error)}"
            )
        if now - self.failing_since >= self.retry_seconds and not self.unreachable:
            self.unreachable = (
                f"the tracking store {self.client.tracking_uri} has refused every write for "
                f"{now - self.failing_since:.0f} s ({first_line(error)[:200]})"
            )
            request_stop("store unreachable")

    def _recovered(self) -> None:
        """The store took a write: an outage, if there was one, ends with its one line."""
        self.failing_since = None
        if self.outage is None:
            return
        o, self.outage = self.outage, None
        ended = datetime.now().astimezone()
        where = f"; details in {self.store_log.path}" if self.store_log is not None else ""
        line = (f"rnnlab: the tracking store refused writes from {o.began:%H:%M:%S} to "
                f"{ended:%H:%M:%S} ({(ended - o.began).total_seconds():.0f} s, {o.calls} failed "
                f"calls: {o.error}); {o.points} points waited and are in the store now"
                f"{where}")  # fmt: skip
        print(line, file=sys.stderr, flush=True)

    def _journal(self, op: dict) -> None:
        assert self.journal is not None
        try:
            self.journal.append(op)
        except OSError as e:  # e.g. the disk is full: neither the store nor the journal takes it
            if self.journal_error is None:
                self.journal_error = f"{type(e).__name__}: {e}"
                line = (
                    f"rnnlab: cannot write the journal {self.journal.path} "
                    f"({e.strerror or e}): what the store refuses from now on is lost"
                )
                print(line, file=sys.stderr)

    def _journal_buffer(self) -> None:
        if self._buffer:
            points = [[m.key, m.value, m.timestamp, m.step] for m in self._buffer]
            self._journal({"op": "metrics", "points": points})
            if self.outage is not None:
                self.outage.points += len(points)
            self._buffer.clear()
        if self._texts is not None:
            self._journal({"op": "files", "dir": str(self.journal.keep_files(self._texts))})
            self._texts = None
