"""The writer lease is a compare-and-set: of takers released together, exactly one wins.

Real threads on a real SQLite store, released by a barrier, 10 rounds with seeded jitter
(printed): in every round exactly one ``lease.take`` succeeds, the store then names that one as
the run's writer and its process as where the run runs, and the others get one line naming it.
``give_back`` returns the lease and the status only to what the taker read. (The same race
through whole resumes, in processes, and on PostgreSQL: tests/e2e/test_one_writer_per_run.py.)
"""

from __future__ import annotations

import random
import threading

import pytest
from mlflow.tracking import MlflowClient

from rnnlab.tracking import lease, store


@pytest.fixture
def run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = store.open_store(uri, create=True)
    exp = store.ensure_experiment(client, "lease")
    run_id = client.create_run(exp).info.run_id
    client.set_terminated(run_id, "KILLED")
    return uri, run_id


def race(uri: str, run_id: str, takers: int, jitter: list[float]) -> list:
    barrier = threading.Barrier(takers)
    read = MlflowClient(uri).get_run(run_id).data.tags.get(lease.WRITER_TAG)
    results: list = [None] * takers

    def take(i: int) -> None:
        writer = lease.me()
        barrier.wait()
        threading.Event().wait(jitter[i])
        try:
            lease.take(uri, run_id, read, writer, "KILLED")
            results[i] = writer
        except lease.LeaseLost as e:
            results[i] = str(e)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(takers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


def test_takers_released_together_have_exactly_one_winner(run):
    uri, run_id = run
    client = MlflowClient(uri)
    rng = random.Random(21)
    for round_ in range(10):
        jitter = [rng.uniform(0.0, 0.005) for _ in range(6)]
        print(f"round {round_}: jitter (ms) {[round(j * 1000, 2) for j in jitter]}")
        results = race(uri, run_id, 6, jitter)
        winners = [r for r in results if isinstance(r, lease.Writer)]
        assert len(winners) == 1, results
        (winner,) = winners
        after = client.get_run(run_id)
        assert after.data.tags[lease.WRITER_TAG] == winner.encode()
        assert after.info.status == "RUNNING" and after.data.tags["rnnlab.pid"] == str(winner.pid)
        for lost in (r for r in results if isinstance(r, str)):
            assert lost.startswith(f"run {run_id} was taken by {winner}"), lost
            assert "\n" not in lost
        client.set_terminated(run_id, "KILLED")  # the winner's resume ends


def test_giving_back_restores_only_what_the_taker_read(run):
    uri, run_id = run
    client = MlflowClient(uri)
    first = lease.me()
    lease.take(uri, run_id, None, first, "KILLED")  # a run from before the lease: no tag yet
    lease.give_back(uri, run_id, first, None, "KILLED")
    after = client.get_run(run_id)
    assert lease.WRITER_TAG not in after.data.tags and after.info.status == "KILLED"
    lease.take(uri, run_id, None, first, "KILLED")
    second = lease.me()
    lease.take(uri, run_id, first.encode(), second, "RUNNING")  # the first one's process ended
    lease.give_back(uri, run_id, first, None, "KILLED")  # not its lease any more: no change
    after = client.get_run(run_id)
    assert after.data.tags[lease.WRITER_TAG] == second.encode()
    assert after.info.status == "RUNNING"
    with pytest.raises(lease.LeaseLost, match=f"taken by process {second.pid}"):
        lease.take(uri, run_id, first.encode(), lease.me(), "RUNNING")  # read before it moved
    with pytest.raises(lease.LeaseLost):  # the tag it read, but not the status: no
        lease.take(uri, run_id, second.encode(), lease.me(), "KILLED")


def test_a_writer_is_alive_only_while_its_process_is():
    me = lease.me()
    assert me.alive() is True
    assert lease.Writer.decode(me.encode()) == me
    gone = lease.Writer(me.host, me.pid, "0", "x")  # this pid, another start time: reused
    assert gone.alive() is False
    assert lease.Writer("elsewhere", 1, "1", "x").alive() is None  # another host: cannot tell
    assert lease.Writer.decode("not a writer") is None


def test_two_syncs_at_once_send_each_point_once_and_the_other_says_so_in_one_line(run, tmp_path):
    """Two ``rnnlab.sync`` of one job folder released together (threads, a barrier, 5 rounds):
    one sends the journal, the other says in one line that there was nothing left to send or
    that the first holds the run — never "No such file" — and each point is in the store once."""
    from rnnlab.errors import UserError
    from rnnlab.tracking.journal import Journal, sync

    uri, run_id = run
    client = MlflowClient(uri)
    folder = tmp_path / "job"
    client.set_tag(run_id, "rnnlab.job_dir", str(folder))
    client.set_tag(run_id, "rnnlab.task", "charrnn")
    rng = random.Random(22)
    for round_ in range(5):
        journal = Journal(folder, run_id, uri)
        points = [["train/loss", 1.0 / (s + 1), 0, s] for s in range(round_ * 10, round_ * 10 + 10)]
        journal.append({"op": "metrics", "points": points})
        journal.append({"op": "end", "status": "KILLED"})
        barrier, results = threading.Barrier(2), [None, None]
        jitter = [rng.uniform(0.0, 0.005) for _ in range(2)]

        def one(i: int, barrier=barrier, results=results, jitter=jitter) -> None:
            barrier.wait()
            threading.Event().wait(jitter[i])
            try:
                results[i] = sync(str(folder))
            except UserError as e:
                results[i] = f"refused: {e}"

        threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        print(f"round {round_}: {results}")
        synced = [r for r in results if r.startswith(f"rnnlab: synced run {run_id}: 10 metric")]
        assert len(synced) == 1, results
        (other,) = [r for r in results if r not in synced]
        assert "No such file" not in other and "\n" not in other
        named = ("taken by process", "which is still alive: it writes the run")
        assert "nothing to send" in other or any(n in other for n in named), other
        steps = [m.step for m in client.get_metric_history(run_id, "train/loss")]
        assert sorted(steps) == list(range(round_ * 10 + 10)), steps
        assert client.get_run(run_id).info.status == "KILLED"
