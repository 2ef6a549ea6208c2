"""At most one writer per run: a lease in the store, taken by compare-and-set.

Every process that writes into a run that already exists — ``resume=<run_id>``, a requeued
cluster job, ``python -m rnnlab.sync`` — first takes the run's lease: the tag ``rnnlab.writer``
names the process that may write (``<host> <pid> <pid start> <token>``; the token tells apart
two takers in one process). A new run is created holding it. Taking it is one transaction in
the store's own database: the tag moves from the value the taker read to its own only if it
still holds that value (``UPDATE … WHERE value = :read``, or ``INSERT … ON CONFLICT DO
NOTHING`` for a run that never had one) and the run still has the status the taker read (two
reads of a run are not one snapshot: the status and the tag must be compared together), and in
the same transaction the run becomes RUNNING and records where it now runs (``rnnlab.host``,
``rnnlab.pid``, ``rnnlab.pid_start``). Of two takers released at the same instant, exactly one
statement changes a row; the other changes none and stops with one line naming the writer
that won.

Why the database and not a lock file: the store is what every taker shares — on a cluster they
run on different machines, with no common file system for a lock to be trusted on; a row update
is atomic on SQLite (a writer holds the database's write lock) and on PostgreSQL (READ
COMMITTED: the second UPDATE waits for the first to commit, then re-reads the row and no longer
matches), and it needs nothing beyond the store. MLflow's client has no compare-and-set, so this
is the one place rnnlab writes SQL to MLflow's ``tags`` and ``runs`` tables (columns stable
across MLflow 2 and 3).

An ``http://`` tracking server exposes only MLflow's REST API, which cannot compare and set:
there the taker sets the tag, waits ``SETTLE_SECONDS`` and reads it back, and goes ahead only if
its own value is still there. That narrows the race to takers more than ``SETTLE_SECONDS`` apart
between their read and their write, but cannot close it; a cluster that needs the guarantee
points ``tracking.uri`` at the database itself (``postgresql://…``).

Not here: whether a RUNNING run's process is alive (``store.is_dead``), what a resume checks
(``rnnlab.tracking.resume``).
"""

from __future__ import annotations

import secrets
import socket
import time
from dataclasses import dataclass

from rnnlab.tracking import store

WRITER_TAG = "rnnlab.writer"
SETTLE_SECONDS = 1.0  # an http:// store: how long a taker waits before reading its tag back
SQL_SCHEMES = ("sqlite:", "postgresql", "mysql", "mssql")  # SQLAlchemy stores MLflow opens


@dataclass(frozen=True)
class Writer:
    """The process a lease names."""

    host: str
    pid: int
    pid_start: str  # the kernel's start time of pid ("?" where /proc is missing)
    token: str

    def encode(self) -> str:
        return f"{self.host} {self.pid} {self.pid_start} {self.token}"

    @classmethod
    def decode(cls, value: str | None) -> Writer | None:
        parts = (value or "").split()
        if len(parts) != 4 or not parts[1].isdigit():
            return None
        return cls(parts[0], int(parts[1]), parts[2], parts[3])

    def alive(self) -> bool | None:
        """True/False for a process of this host; None for another host (cannot tell)."""
        if self.host != socket.gethostname():
            return None
        start = store._process_start(self.pid)
        if start is None:
            return False if not _exists(self.pid) else self.pid_start == "?"
        return start == self.pid_start

    def __str__(self) -> str:
        return f"process {self.pid} on {self.host}"


def _exists(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def me() -> Writer:
    """This process, with a fresh token (each take is its own writer)."""
    where = store.where_tags()
    return Writer(
        where["rnnlab.host"],
        int(where["rnnlab.pid"]),
        where.get("rnnlab.pid_start", "?"),
        secrets.token_hex(6),
    )


def creation_tags(writer: Writer) -> dict[str, str]:
    """Tags a new run is created with: it holds its own lease."""
    return {WRITER_TAG: writer.encode()}


class LeaseLost(store.StoreError):
    """Another process took the run's lease first. The message is one line naming it."""


def take(
    uri: str,
    run_id: str,
    read: str | None,
    writer: Writer,
    read_status: str,
    status: str = "RUNNING",
) -> None:
    """Move run ``run_id``'s lease from ``read`` (the ``rnnlab.writer`` value the caller read,
    None for a run without one) to ``writer`` and mark the run ``status`` where it now runs — all
    or nothing, and only while the run still has ``read_status``. LeaseLost (one line naming
    the winner) when either changed since the caller read them."""
    if uri.startswith(SQL_SCHEMES):
        won = _take_sql(uri, run_id, read, read_status, writer.encode(), store.where_tags(), status)
    else:
        won = _take_rest(uri, run_id, read, read_status, writer.encode(), status)
    if not won:
        holder = Writer.decode(store.client(uri).get_run(run_id).data.tags.get(WRITER_TAG))
        raise LeaseLost(
            f"run {run_id} was taken by {holder or 'another process'} a moment ago (another "
            f"resume or rnnlab.sync); it writes the run now: let it end, or stop it"
        )


def give_back(uri: str, run_id: str, writer: Writer, read: str | None, status: str) -> None:
    """Undo ``take`` when the taker stops before writing anything (its resume was refused):
    the lease returns to ``read`` and the run to ``status``, if ``writer`` still holds it."""
    if uri.startswith(SQL_SCHEMES):
        from sqlalchemy import text

        with _engine(uri).begin() as con:
            if read is None:
                changed = con.execute(
                    text("DELETE FROM tags WHERE key = :k AND run_uuid = :r AND value = :mine"),
                    {"k": WRITER_TAG, "r": run_id, "mine": writer.encode()},
                ).rowcount
            else:
                changed = con.execute(
                    text("UPDATE tags SET value = :old WHERE key = :k AND run_uuid = :r "
                         "AND value = :mine"),
                    {"k": WRITER_TAG, "r": run_id, "mine": writer.encode(), "old": read},
                ).rowcount  # fmt: skip
            if changed:
                con.execute(
                    text("UPDATE runs SET status = :s WHERE run_uuid = :r"),
                    {"s": status, "r": run_id},
                )
        return
    client = store.client(uri)
    if client.get_run(run_id).data.tags.get(WRITER_TAG) == writer.encode():
        if read is None:
            client.delete_tag(run_id, WRITER_TAG)
        else:
            client.set_tag(run_id, WRITER_TAG, read)
        client.update_run(run_id, status=status)


def _engine(uri: str):
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    args = {"timeout": 120} if uri.startswith("sqlite:") else {}  # wait out other writers
    return create_engine(uri, poolclass=NullPool, connect_args=args)


def _take_sql(
    uri: str, run_id: str, read: str | None, read_status: str, mine: str, where: dict, status: str
) -> bool:
    from sqlalchemy import text

    upsert = text(
        "INSERT INTO tags (key, value, run_uuid) VALUES (:k, :v, :r) "
        "ON CONFLICT (key, run_uuid) DO UPDATE SET value = excluded.value"
    )
    same_status = "(SELECT status FROM runs WHERE run_uuid = :r) = :s"
    values = {"k": WRITER_TAG, "v": mine, "r": run_id, "s": read_status, "read": read}
    with _engine(uri).begin() as con:  # one transaction: lease, status and where, or nothing
        if read is None:
            moved = con.execute(
                text("INSERT INTO tags (key, value, run_uuid) SELECT :k, :v, :r WHERE "
                     f"{same_status} ON CONFLICT (key, run_uuid) DO NOTHING"), values,
            ).rowcount  # fmt: skip
        else:
            moved = con.execute(
                text("UPDATE tags SET value = :v WHERE key = :k AND run_uuid = :r "
                     f"AND value = :read AND {same_status}"), values,
            ).rowcount  # fmt: skip
        if moved != 1:
            return False
        for key, value in where.items():
            con.execute(upsert, {"k": key, "v": value, "r": run_id})
        con.execute(
            text("UPDATE runs SET status = :s, end_time = NULL WHERE run_uuid = :r"),
            {"s": status, "r": run_id},
        )
    return True


def _take_rest(
    uri: str, run_id: str, read: str | None, read_status: str, mine: str, status: str
) -> bool:
    """Set, settle, read back (see the module: narrows the race, cannot close it)."""
    client = store.client(uri)
    run = client.get_run(run_id)
    if run.data.tags.get(WRITER_TAG) != read or run.info.status != read_status:
        return False
    client.set_tag(run_id, WRITER_TAG, mine)
    time.sleep(SETTLE_SECONDS)
    if client.get_run(run_id).data.tags.get(WRITER_TAG) != mine:
        return False
    for key, value in store.where_tags().items():
        client.set_tag(run_id, key, value)
    client.update_run(run_id, status=status)
    return True
