"""``python -m rnnlab.sync <job folder | run id> [tracking_uri=<uri>]``: send what a run could not.

A run whose store was unreachable kept the points, samples, checkpoints, tags and its final
status in a journal in its job folder (``rnnlab_journal.jsonl``, see ``store.Journal``). Once
the store is back, this replays the journal in order — each metric step once, whatever the store
already holds — and marks the run's true status: the one the journal recorded, else (its process
died before closing it) FAILED. A run whose process is still alive replays its journal itself
and is left alone. ``resume=<run_id>`` replays the journal first, too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rnnlab.tracking import store

USAGE = "usage: python -m rnnlab.sync <job folder | run id> [tracking_uri=<uri>]"


class SyncError(ValueError):
    """Nothing can be synced as asked. The message is one line."""


def find_journal(target: str, tracking_uri: str | None) -> store.Journal:
    """The journal of a job folder, or of the run ``target`` names (via its ``rnnlab.job_dir``)."""
    folder = Path(target).expanduser()
    if folder.is_dir():
        path = folder / store.JOURNAL_FILE
        if not path.is_file():
            raise SyncError(f"no journal in {folder} ({store.JOURNAL_FILE}): nothing to send")
        header = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
        uri = tracking_uri or header["uri"]
        return store.Journal(folder, header["run_id"], uri)
    if not store.RUN_ID_PREFIX.match(target):
        raise SyncError(f"{target!r} is neither a job folder nor a run id")
    uri = store.default_uri(tracking_uri)
    try:
        run = store.get_run(store.open_store(uri), target, uri)
    except store.StoreError as e:
        raise SyncError(str(e)) from None
    job_dir = run.data.tags.get("rnnlab.job_dir")
    if not job_dir or not (Path(job_dir) / store.JOURNAL_FILE).is_file():
        raise SyncError(f"run {run.info.run_id} has no journal waiting ({job_dir or 'no job dir'})")
    return store.Journal(Path(job_dir), run.info.run_id, uri)


def sync(target: str, tracking_uri: str | None = None) -> str:
    """Replay the journal ``target`` names; returns the line the CLI prints."""
    journal = find_journal(target, tracking_uri)
    try:
        client = store.open_store(journal.uri)
        run = store.get_run(client, journal.run_id, journal.uri)
    except store.StoreError as e:
        raise SyncError(str(e)) from None
    except Exception as e:  # noqa: BLE001 — the server is still away
        why = store.first_line(e)
        raise SyncError(f"the store {journal.uri} is still unreachable: {why}") from None
    if run.info.status == "RUNNING" and not store.is_dead(run):
        raise SyncError(
            f"run {run.info.run_id} is still running (process {run.data.tags.get('rnnlab.pid')}"
            f"); it replays its journal itself"
        )
    try:
        counts = journal.replay(client)
    except Exception as e:  # noqa: BLE001 — nothing is marked replayed; run it again later
        why = store.first_line(e)
        raise SyncError(f"the store {journal.uri} refused the replay: {why}") from None
    status = counts.get("status")
    if status is None and client.get_run(run.info.run_id).info.status == "RUNNING":
        status = "FAILED"
        why = "its process ended without closing it; rnnlab.sync sent its journal"
        client.set_tag(run.info.run_id, "error", why)
        client.set_terminated(run.info.run_id, status)
    status = status or client.get_run(run.info.run_id).info.status
    return (
        f"rnnlab: synced run {run.info.run_id}: {counts['points']} metric points, "
        f"{counts['files']} files, {counts['tags']} tags; status {status}"
    )


def cli() -> None:
    argv = sys.argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE + "\n\n" + __doc__.split("\n\n", 1)[1].strip())
        sys.exit(0 if argv else 2)
    target, rest = argv[0], argv[1:]
    uri = None
    for arg in rest:
        key, sep, value = arg.partition("=")
        if key != "tracking_uri" or not sep or not value:
            print(f"rnnlab: error: {arg!r} is not allowed: only tracking_uri=<uri>",
                  file=sys.stderr)  # fmt: skip
            sys.exit(2)
        uri = value
    try:
        print(sync(target, uri))
    except SyncError as e:
        print(f"rnnlab: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli()
