"""``python -m rnnlab.sync <job folder | run id>``: send what a run could not.

A run whose store was unreachable kept the points, samples, checkpoints, tags and its final
status in a journal in its job folder (``rnnlab_journal.jsonl``, ``rnnlab.tracking.journal``).
Once the store is back, this replays the journal in order — each metric step once, whatever the
store already holds — and marks the run's true status: the one the journal recorded, else (its
process died before closing it) FAILED. A run whose process is still alive replays its journal
itself and is left alone. ``resume=<run_id>`` replays the journal first, too.
"""

from __future__ import annotations

from rnnlab import cli
from rnnlab.tracking.journal import sync

COMMAND = cli.Command(
    name="rnnlab.sync",
    summary="send a run's journal (what it could not send while its store was away)",
    target=cli.Key("job folder | run id", "the run's job folder, or its run id"),
    keys=(cli.Key("tracking_uri", "the store (default: the journal's own, else the usual)"),),
    examples=("python -m rnnlab.sync outputs/charrnn/2026-12-07_10-00-00",),
)


def main(argv: list[str] | None = None) -> None:
    cli.main(COMMAND, lambda a: sync(a["job folder | run id"], a.get("tracking_uri")), argv)


if __name__ == "__main__":
    main()
