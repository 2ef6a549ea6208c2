"""``python -m rnnlab.sync <job folder | run id>``: send what a run could not.

A run whose store was unreachable kept the points, samples, checkpoints, tags and its final
status in a journal in its job folder (``rnnlab_journal.jsonl``, ``rnnlab.tracking.journal``).
Once the store is back, this replays the journal in order — each metric step once, whatever the
store already holds — and marks the run's true status: the one the journal recorded, else (its
process died before closing it) FAILED. A run whose process is still alive replays its journal
itself and is left alone. ``resume=<run_id>`` replays the journal first, too.

Given a sweep's folder (or its parent run's id), it does that for every child with a journal
waiting and closes the parent when the sweep's process is gone (killed outright), with the jobs
that never started counted (``rnnlab.sweeps.parent_run.sync_sweep``). A parent that cannot be
checked here — one of another host, or from before parents recorded where they run — is closed
only with ``dead=true``: the user says its process is gone (refused if any of its processes that
this host can check is alive).
"""

from __future__ import annotations

from pathlib import Path

from rnnlab import cli
from rnnlab.errors import UserError
from rnnlab.sweeps.parent_run import is_sweep_target, sync_sweep
from rnnlab.tracking import store
from rnnlab.tracking.journal import sync

COMMAND = cli.Command(
    name="rnnlab.sync",
    summary="send a run's journal (what it could not send while its store was away); "
    "close a sweep whose process is gone",
    target=cli.Key(
        "job folder | run id", "the run's job folder or id; a sweep's folder or parent run id"
    ),
    keys=(
        cli.Key("tracking_uri", "the store (default: the journal's own, else the usual)"),
        cli.Key(
            "dead",
            "a sweep's process is gone: close its parent even where this host cannot check it "
            "(another host's, or one that recorded no host or pid)",
            bool,
            False,
        ),
    ),
    examples=(
        "python -m rnnlab.sync outputs/charrnn/2026-12-07_10-00-00_4242",
        "python -m rnnlab.sync multirun/2026-12-07_10-00-00_4242            # a whole sweep",
        "python -m rnnlab.sync multirun/2026-12-07_10-00-00_4242 dead=true  # its host unknown",
    ),
)


def run(args: dict) -> str:
    """What the command prints: one line per run it sent or closed."""
    target, uri = args["job folder | run id"], args.get("tracking_uri")
    if is_sweep_target(target) or is_parent_id(target, uri):
        return sync_sweep(target, uri, dead=args["dead"])
    if args["dead"]:
        raise UserError(f"dead=true closes a sweep's parent; {target} is not a sweep's folder "
                        "or parent run id")  # fmt: skip
    return sync(target, uri)


def is_parent_id(target: str, uri: str | None) -> bool:
    """True when ``target`` is the id of a sweep's parent run in the store."""
    if not store.RUN_ID_PREFIX.match(target) or Path(target).exists():
        return False
    try:
        resolved = store.resolve_uri(uri)
        run = store.get_run(store.open_store(resolved), target, resolved)
    except store.StoreError:
        return False
    return run.data.tags.get("rnnlab.kind") == "sweep"


def main(argv: list[str] | None = None) -> None:
    cli.main(COMMAND, run, argv)


if __name__ == "__main__":
    main()
