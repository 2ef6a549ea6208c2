"""The store layer's rules, in process on real SQLite stores: run-id prefixes, dead runs, the
journal's exactly-once replay, the checkpoint structure, and the signal shield."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from mlflow.entities import Metric, RunStatus

from rnnlab.tracking import store
from rnnlab.tracking.journal import Journal
from rnnlab.training import checkpoint, signals
from rnnlab.training.checkpoint import Checkpoint


@pytest.fixture
def client(tmp_path):
    return store.open_store(f"sqlite:///{tmp_path / 'mlflow.db'}", create=True)


def new_run(client, tags=None) -> str:
    exp = store.ensure_experiment(client, "t")
    return client.create_run(exp, tags=tags or {}).info.run_id


def test_a_missing_sqlite_store_is_one_line_and_never_created(tmp_path):
    with pytest.raises(store.StoreError, match="no MLflow store at"):
        store.open_store(f"sqlite:///{tmp_path / 'none.db'}")
    assert not (tmp_path / "none.db").exists()
    (tmp_path / "junk.db").write_bytes(os.urandom(4096))
    with pytest.raises(store.StoreError, match="is not an SQLite database") as e:
        store.open_store(f"sqlite:///{tmp_path / 'junk.db'}")
    assert "\n" not in str(e.value)


def test_a_run_is_found_by_a_unique_prefix(client):
    ids = [new_run(client) for _ in range(3)]
    assert store.get_run(client, ids[1][:8]).info.run_id == ids[1]
    assert store.get_run(client, ids[2].upper()).info.run_id == ids[2]
    with pytest.raises(store.StoreError, match="unique prefix of ≥ 6"):
        store.get_run(client, ids[0][:5])
    with pytest.raises(store.StoreError, match="no run whose id starts with"):
        store.get_run(
            client, "ffffff" if not any(i.startswith("ffffff") for i in ids) else "000000"
        )
    assert [r.info.run_id for r in store.list_children(client, ids[0])] == []


def test_dead_runs_are_told_from_live_ones(client):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = socket.gethostname()
    dead = new_run(client, {"rnnlab.host": host, "rnnlab.pid": str(gone.pid),
                            "rnnlab.pid_start": "1"})  # fmt: skip
    alive = new_run(client, store.where_tags())
    elsewhere = new_run(client, {**store.where_tags(), "rnnlab.host": host + "-other"})
    reused = new_run(client, {**store.where_tags(), "rnnlab.pid_start": "0"})  # pid reused
    assert store.is_dead(client.get_run(dead)) and store.is_dead(client.get_run(reused))
    assert not store.is_dead(client.get_run(alive))
    assert not store.is_dead(client.get_run(elsewhere))
    client.set_terminated(dead, "KILLED")
    assert not store.is_dead(client.get_run(dead))  # only RUNNING runs can be dead
    assert store.describe_status(client.get_run(reused)).startswith("RUNNING (dead")


def test_a_journal_replays_each_point_once(client, tmp_path):
    run_id = new_run(client)
    client.log_batch(run_id, metrics=[Metric("train/loss", 1.0, 0, s) for s in (10, 20)])
    journal = Journal(tmp_path / "job", run_id, client.tracking_uri)
    # 20 is in the store already (a write that timed out but landed): it is not sent again.
    journal.append({"op": "metrics", "points": [["train/loss", 2.0, 1, s] for s in (20, 30)]})
    files = tmp_path / "texts" / "samples"
    files.mkdir(parents=True)
    (files / "iter_0000030.txt").write_text("ab\0c", encoding="utf-8")
    journal.append({"op": "files", "dir": str(journal.keep_files(tmp_path / "texts"))})
    journal.append({"op": "tag", "key": "error", "value": "store unreachable"})
    journal.append({"op": "end", "status": "FAILED"})
    counts = journal.replay(client)
    assert counts == {"points": 1, "files": 1, "tags": 1, "status": "FAILED"}
    history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "train/loss"))
    assert history == [(10, 1.0), (20, 1.0), (30, 2.0)]
    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags["error"] == "store unreachable"
    assert not journal.pending and list((tmp_path / "job").glob("*.synced.jsonl"))


def test_checkpoint_structure_round_trips_every_character_and_reads_the_first_layout(tmp_path):
    vocab = "\0\n ab☃"
    ck = Checkpoint(
        params={"Wxh": np.ones((3, 6))},
        meta={"state": {"iteration": 7}, "task": "charrnn", "cell_meta": {"layers": 2}},
        optim={"mWxh": np.zeros((3, 6))},
        data={"pointers": np.array([4])},
        state={"h0": np.ones((1, 3)), "c0": np.zeros((1, 3))},  # any named states
        vocab=vocab,
    )
    got = Checkpoint.read(ck.write(tmp_path / "iter_0000007.npz"))
    assert got.vocab == vocab and got.iteration == 7 and set(got.state) == {"h0", "c0"}
    assert got.meta["cell_meta"] == {"layers": 2} and not got.optim["mWxh"].any()
    old = checkpoint.save(tmp_path / "old.npz",
                          {"param/Wxh": np.ones((3, 4)), "hprev": np.ones((1, 3)),
                           "vocab": np.array(list("ab☃"))},
                          {"state": {"iteration": 5}})  # fmt: skip
    got = Checkpoint.read(old)
    assert got.vocab == "ab☃" and got.iteration == 5 and "hprev" in got.state
    bad = checkpoint.save(tmp_path / "bad.npz", {"param/W": np.ones(2)},
                          {"state": {"iteration": "lots"}})  # fmt: skip
    with pytest.raises(checkpoint.CheckpointError, match="not an integer"):
        Checkpoint.read(bad)
    empty = checkpoint.save(tmp_path / "empty.npz", {"x": np.ones(2)}, {"state": {}})
    with pytest.raises(checkpoint.CheckpointError, match="without weights"):
        Checkpoint.read(empty)


def test_no_signal_cuts_a_shielded_block_in_half():
    """Two real SIGINTs inside a shielded block within an interruptible part (an evaluation):
    the block completes, then the second one interrupts. Outside an interruptible part (a
    training step, a checkpoint) a second SIGINT is only recorded: nothing is cut half-way."""
    done = []
    with pytest.raises(KeyboardInterrupt), signals.stop_on_signals() as requested:
        with signals.interruptible(), signals.shielded():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handlers run here, inside the block
            done.append("whole")
    assert done == ["whole"] and requested == []  # cleared when the outer block ended
    with signals.stop_on_signals() as requested:  # the loop, outside its evaluation
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert requested == ["SIGINT", "SIGINT"]
        with signals.interruptible():  # a later interruptible part is not cut by the old one
            time.sleep(0.01)
    with signals.stop_on_signals(hard_interrupt=False) as requested:  # a job closing its run
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert requested == ["SIGINT", "SIGTERM"]


def test_held_raises_a_signal_from_inside_once_the_block_is_done():
    """``signals.held()``: real SIGTERMs inside the block change nothing there; the first is
    raised when the block ends; an enclosing block's earlier request is not raised again, and
    the handler from before is back afterwards."""
    before = signal.getsignal(signal.SIGTERM)
    done = []
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        with signals.held():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handlers run here, inside the block
            done.append("whole")
    assert done == ["whole"] and signal.getsignal(signal.SIGTERM) is before
    with signals.stop_on_signals(hard_interrupt=False) as requested:  # a job that was stopped
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        with signals.held():  # its closing lines: the job's own request is not raised again
            time.sleep(0.01)
        assert requested == ["SIGINT"]


def test_signals_while_a_sweeps_parent_closes_never_leave_it_running(client, tmp_path):
    """Real SIGTERMs, sent from inside ``parent_run.close_parent``'s own database statements (a
    SQLAlchemy event hook picks which, from a seeded generator) while the CLI's handler is
    installed (it raises KeyboardInterrupt): the parent still ends FINISHED with its children
    counted — before, the first such signal left the parent RUNNING."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from rnnlab import run
    from rnnlab.sweeps import parent_run

    exp = store.ensure_experiment(client, "t")
    parent = client.create_run(exp, tags={"rnnlab.kind": "sweep"}).info.run_id
    for seed in (0, 1):
        child = client.create_run(exp, tags={"mlflow.parentRunId": parent}).info.run_id
        client.log_batch(child, metrics=[Metric("objective", 1.0 + seed, 0, 10)])
        client.set_terminated(child, "FINISHED")
    at = sorted(np.random.default_rng(7).choice(12, size=3, replace=False).tolist())
    print("SIGTERM at statements", at)
    statements = []

    def signal_on_some(*_):
        if len(statements) in at:
            os.kill(os.getpid(), signal.SIGTERM)  # delivered here, in this thread's next step
        statements.append(1)

    previous = signal.signal(signal.SIGTERM, run._terminate)
    event.listen(Engine, "before_cursor_execute", signal_on_some)
    try:
        parent_run.open_parent.update(uri=client.tracking_uri, run_id=parent)
        parent_run.close_parent(RunStatus.FINISHED)
    except KeyboardInterrupt as e:  # a failure of this test, not the end of the session
        pytest.fail(f"a signal cut close_parent short at statement {len(statements)}: {e!r}")
    finally:
        event.remove(Engine, "before_cursor_execute", signal_on_some)
        signal.signal(signal.SIGTERM, previous)
        parent_run.open_parent.clear()
    assert len(statements) > max(at)  # every chosen statement ran, so each signal was sent
    closed = client.get_run(parent)
    assert closed.info.status == "FINISHED", closed.info
    assert closed.data.tags["rnnlab.children"] == "2"


def test_resume_run_continues_a_run_inside_this_process(tmp_path):
    """``job.resume_run`` (what a requeued cluster job calls): the same run, on to more
    iterations, each step once; a live RUNNING run is refused."""
    from rnnlab.config import Config
    from rnnlab.tracking import job, resume

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = Config()
    cfg.task.name, cfg.task.activation, cfg.task.loss = "adder", "sigmoid", "mse"
    cfg.task.init, cfg.task.init_scale, cfg.optimizer.name = "uniform", 1.0, "sgd"
    cfg.hidden_size, cfg.seq_length, cfg.task.eval_max_pairs = 8, 8, 64
    cfg.iterations, cfg.log_every, cfg.eval_every, cfg.checkpoint_every = 40, 10, 20, 20
    cfg.sample_every, cfg.tracking.uri, cfg.experiment_name = 20, uri, "t"
    job.run_job(cfg, job.JobContext(output_dir=tmp_path / "a"), show_progress=False)
    client = store.open_store(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    job.resume_run(run.info.run_id[:10], uri, {"iterations": 80}, tmp_path / "b")
    run = client.get_run(run.info.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["rnnlab.resumes"] == "1"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert sorted(steps) == list(range(10, 81, 10))
    client.update_run(run.info.run_id, "RUNNING")  # as if this process were still training it
    client.set_tag(run.info.run_id, "rnnlab.pid", str(os.getpid()))
    client.set_tag(run.info.run_id, "rnnlab.host", socket.gethostname())
    with pytest.raises(resume.ResumeError, match="still alive"):
        job.resume_run(run.info.run_id, uri, {"iterations": 120}, tmp_path / "c")


def test_a_runs_writes_go_through_its_journalled_tracker():
    """The class of "a full disk while logging the model left the run RUNNING": once a run is
    open, its job writes to the store only through its ``MlflowTracker`` (which journals what
    the store refuses), never through a client of its own."""
    import ast

    from helpers.processes import ROOT

    writes = {"set_tag", "delete_tag", "log_batch", "log_text", "log_artifact", "log_artifacts",
              "set_terminated", "log_param", "log_metric", "log_dict", "update_run"}  # fmt: skip
    found = []
    for name in ("job.py", "pyfunc.py"):
        tree = ast.parse((ROOT / "rnnlab" / "tracking" / name).read_text())
        for node in ast.walk(tree):
            f = getattr(node, "func", None)
            if isinstance(f, ast.Attribute) and f.attr in writes:
                owner = f.value.id if isinstance(f.value, ast.Name) else ""
                if owner != "tracker":
                    found.append(f"{name}:{node.lineno} {owner}.{f.attr}")
    assert found == []
