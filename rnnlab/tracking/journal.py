"""The journal of a run whose store was away: what it could not send, kept in its job folder.

While the store refuses writes, the run's tracker appends every write it could not make to an
append-only JSON-lines file in the job folder (``rnnlab_journal.jsonl``), in order, and keeps
training. Once the store is back the journal is replayed — by the run itself at its next flush,
by ``resume=<run_id>``, or by ``python -m rnnlab.sync`` — each metric step once, whatever the
store already holds, and the run gets its true status.

Not here: buffering and the decision to journal (``rnnlab.tracking.mlflow_tracker``), the store
(``rnnlab.tracking.store``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnlab.errors import UserError
from rnnlab.tracking import store
from rnnlab.tracking.store import logged_steps, quiet_artifact_transfers

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

JOURNAL_FILE = "rnnlab_journal.jsonl"


class Journal:
    """An append-only JSON-lines file of store writes that could not be made, in their order.

    Each line is one operation: ``metrics`` (points as [key, value, timestamp, step]),
    ``params`` ([key, value] pairs), ``files`` (a local folder to upload into the run's artifact
    root), ``artifact`` (a local file and its artifact folder), ``tag``, ``delete_tag``, ``end``
    (the run's status). Files it names are kept
    in the job folder until the journal is replayed; a replayed journal is renamed
    ``*.synced.jsonl``, so replaying twice sends nothing twice."""

    def __init__(self, folder: Path, run_id: str, uri: str):
        self.folder, self.run_id, self.uri = Path(folder), run_id, uri
        self.path = self.folder / JOURNAL_FILE

    @property
    def pending(self) -> bool:
        return self.path.is_file()

    def append(self, op: dict[str, Any]) -> None:
        new = not self.path.is_file()
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            if new:
                f.write(json.dumps({"op": "run", "run_id": self.run_id, "uri": self.uri}) + "\n")
            f.write(json.dumps(op, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def keep_files(self, folder: Path) -> Path:
        """Move a folder of files to upload into the job folder, where it outlives the process."""
        dest = self.folder / "rnnlab_journal_files" / f"{time.time_ns()}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(folder), dest)
        return dest

    def operations(self) -> list[dict[str, Any]]:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        ops = []
        for line in lines:
            try:
                ops.append(json.loads(line))
            except ValueError:  # a line cut short by a kill: everything before it is whole
                break
        return ops

    def replay(self, client: MlflowClient) -> dict[str, int]:
        """Send every operation to the store in order, skipping metric points it already holds;
        returns counts. Raises whatever the store raises (then nothing is marked replayed)."""
        from mlflow.entities import Metric, Param

        ops = self.operations()
        last = logged_steps(client, self.run_id)
        counts = {"points": 0, "files": 0, "tags": 0}
        for op in ops:
            kind = op["op"]
            if kind == "metrics":
                points = [Metric(k, v, ts, s) for k, v, ts, s in op["points"]
                          if s > last.get(k, -1)]  # fmt: skip
                for i in range(0, len(points), 1000):
                    client.log_batch(self.run_id, metrics=points[i : i + 1000])
                for p in points:
                    last[p.key] = max(last.get(p.key, -1), p.step)
                counts["points"] += len(points)
            elif kind == "files" and Path(op["dir"]).is_dir():
                with quiet_artifact_transfers():
                    client.log_artifacts(self.run_id, op["dir"])
                counts["files"] += sum(1 for p in Path(op["dir"]).rglob("*") if p.is_file())
            elif kind == "artifact" and Path(op["path"]).is_file():
                with quiet_artifact_transfers():
                    client.log_artifact(self.run_id, op["path"], op.get("artifact_path"))
                counts["files"] += 1
            elif kind == "tag":
                client.set_tag(self.run_id, op["key"], op["value"])
                counts["tags"] += 1
            elif kind == "delete_tag":
                if op["key"] in client.get_run(self.run_id).data.tags:
                    client.delete_tag(self.run_id, op["key"])
            elif kind == "params":
                params = [Param(k, v) for k, v in op["params"]]
                for i in range(0, len(params), 100):
                    client.log_batch(self.run_id, params=params[i : i + 100])
            elif kind == "end":
                counts["status"] = op["status"]  # type: ignore[assignment]
        done = self.path.with_name(f"rnnlab_journal.{time.time_ns()}.synced.jsonl")
        os.replace(self.path, done)
        shutil.rmtree(self.folder / "rnnlab_journal_files", ignore_errors=True)
        if "status" in counts:  # last: a closed run's lease may be taken again at once
            client.set_terminated(self.run_id, counts["status"])
        return counts


def find_journal(target: str, tracking_uri: str | None) -> store.Journal:
    """The journal of a job folder, or of the run ``target`` names (via its ``rnnlab.job_dir``)."""
    folder = Path(target).expanduser()
    if folder.is_dir():
        path = folder / JOURNAL_FILE
        if not path.is_file():
            raise UserError(f"no journal in {folder} ({JOURNAL_FILE}): nothing to send")
        header = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
        uri = tracking_uri or header["uri"]
        return Journal(folder, header["run_id"], uri)
    if not store.RUN_ID_PREFIX.match(target):
        raise UserError(f"{target!r} is neither a job folder nor a run id")
    uri = store.resolve_uri(tracking_uri)
    run = store.get_run(store.open_store(uri), target, uri)
    job_dir = run.data.tags.get("rnnlab.job_dir")
    if not job_dir or not (Path(job_dir) / JOURNAL_FILE).is_file():
        raise UserError(f"run {run.info.run_id} has no journal waiting ({job_dir or 'no job dir'})")
    return Journal(Path(job_dir), run.info.run_id, uri)


def sync(target: str, tracking_uri: str | None = None) -> str:
    """Replay the journal ``target`` names; returns the line the CLI prints. Two at once send
    nothing twice: each first takes the run's lease (``rnnlab.tracking.lease``)."""
    from rnnlab.tracking import resume

    journal = find_journal(target, tracking_uri)
    try:
        client = store.open_store(journal.uri)
        run = store.get_run(client, journal.run_id, journal.uri)
    except store.StoreError:
        raise
    except Exception as e:  # noqa: BLE001 — the server is still away
        why = store.first_line(e)
        raise UserError(f"the store {journal.uri} is still unreachable: {why}") from None
    advice = "it writes the run, and sends its journal, itself: let it end"
    claimed = resume.claim(run.info.run_id, journal.uri, what="syncing", advice=advice)
    if not journal.pending:  # another rnnlab.sync held the lease first and sent it
        claimed.give_back(journal.uri)
        return f"rnnlab: run {run.info.run_id}: nothing to send, its journal was sent already"
    try:
        counts = journal.replay(client)
    except Exception as e:  # noqa: BLE001 — nothing is marked replayed; run it again later
        claimed.give_back(journal.uri)
        why = store.first_line(e)
        raise UserError(f"the store {journal.uri} refused the replay: {why}") from None
    status = counts.get("status")
    if status is None and claimed.status in ("RUNNING", "SCHEDULED"):
        status = "FAILED"
        why = "its process ended without closing it; rnnlab.sync sent its journal"
        client.set_tag(run.info.run_id, "error", why)
    status = status or claimed.status
    client.set_terminated(run.info.run_id, status)
    return (
        f"rnnlab: synced run {run.info.run_id}: {counts['points']} metric points, "
        f"{counts['files']} files, {counts['tags']} tags; status {status}"
    )
