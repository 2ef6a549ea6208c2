"""Fault injection: real processes, real signals, a real ``mlflow server`` killed and restarted.

Every timing is drawn from a seeded generator and printed (``pytest -s`` shows it), so a failure can
be replayed. What each test proves is the invariant named in its docstring; they are stated where
they are enforced (``rnnlab.tracking.mlflow_tracker``, ``rnnlab.training.signals``,
``rnnlab.tracking.store``, ``rnnlab.tracking.job``)."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.faults import (
    COMPARED,
    SEED,
    assert_exactly_once,
    char_args,
    count_checkpoints,
    reference,
    ro,
    start,
    steps,
    the_run,
    wait_for,
)
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow


def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(tmp_path, kafka_path):
    """Write-ahead + exactly once: a chain of 10 SIGKILLs at random moments (each resumed by
    ``resume=<run_id>``, which also accepts a RUNNING run whose process is gone) ends FINISHED
    with every step once and the same values and samples as a run never killed."""
    # The compiled window trains this tiny network at ~50k iterations/s: each kill may land up to
    # 0.6 s (~30k iterations) after a checkpoint, so the run must outlast ten of those
    n, every, log_every = 400_000, 2000, 1000
    rng = np.random.default_rng(SEED)
    delays = rng.uniform(0.0, 0.6, size=10)
    print("SIGKILL delays after a new checkpoint (s):", np.round(delays, 3).tolist())
    db, log = tmp_path / "mlflow.db", tmp_path / "log.txt"
    args = char_args(kafka_path, n, eval_every=every, sample_every=every, checkpoint_every=every,
                     log_every=log_every)  # fmt: skip
    proc = start(args, tmp_path, log)
    run_id = None
    for i, delay in enumerate(delays):
        before = count_checkpoints(tmp_path)
        wait_for(lambda b=before: count_checkpoints(tmp_path) > b, proc, 180, "a checkpoint", log)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if run_id is None:
            run_id = the_run(MlflowClient(f"sqlite:///{db}")).info.run_id
        prefix = run_id[:8] if i % 2 else run_id  # a unique prefix works as well as the id
        proc = start([f"resume={prefix}"], tmp_path, log)
    assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    assert "which is gone; resuming it" in log.read_text()

    client = MlflowClient(f"sqlite:///{db}")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED", log.read_text()[-3000:]
    assert int(run.data.tags["rnnlab.resumes"]) == 10
    assert_exactly_once(db, run_id)
    ref = reference(kafka_path, n, every, log_every)
    for key in COMPARED:
        got = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        assert got == ref.history[key], key
    samples = {f.path for f in client.list_artifacts(run_id, "samples")}
    assert samples == {p for p in ref.texts if p.startswith("samples/")}  # not diagnostics/
    for path in sorted(samples)[:: max(1, len(samples) // 5)]:
        local = client.download_artifacts(run_id, path, str(tmp_path / "dl"))
        assert Path(local).read_text(encoding="utf-8") == ref.texts[path], path


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_two_signals_in_quick_succession_end_killed_with_every_point(sig, tmp_path, kafka_path):
    """A stop always checkpoints: two signals 10-200 ms apart (four pairs, in parallel, on runs
    that spend most of their time evaluating, so the second one often lands in an evaluation)
    end each run KILLED with its stop checkpoint at the iteration it names and every point up
    to it in the store, each once. Before, a second Ctrl-C inside the loop interrupted at once
    and left no stop checkpoint."""
    rng = np.random.default_rng([SEED, sig])
    gaps = rng.uniform([0.010, 0.030, 0.050, 0.100], [0.030, 0.050, 0.100, 0.200])
    waits = rng.uniform(0.0, 1.0, size=4)
    print(f"{sig.name}: gaps (ms)", np.round(gaps * 1000).tolist(), "after (s)", waits.tolist())
    procs = []
    for i in range(4):
        cwd = tmp_path / f"r{i}"
        cwd.mkdir()
        args = char_args(kafka_path, 10**6, checkpoint_every=10**6, eval_every=20,
                         sample_every=10**6, **{"tracking.flush_points": 5,
                                                "data.val_fraction": 0.2})  # fmt: skip
        procs.append((cwd, start(args, cwd, cwd / "log.txt")))
    try:
        for (cwd, proc), gap, wait in zip(procs, gaps, waits, strict=True):
            db = cwd / "mlflow.db"

            def has_points(db=db) -> bool:
                try:
                    with ro(db) as con:
                        return bool(con.execute("SELECT 1 FROM metrics LIMIT 1").fetchone())
                except sqlite3.Error:
                    return False

            wait_for(has_points, proc, 180, "the first points")
            time.sleep(wait)
            os.killpg(proc.pid, sig)
            time.sleep(gap)
            os.killpg(proc.pid, sig)
        for cwd, proc in procs:
            assert proc.wait(timeout=120) == 130, (cwd / "log.txt").read_text()[-3000:]
    finally:
        for _, proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    for cwd, _ in procs:
        out = (cwd / "log.txt").read_text()
        assert "Traceback" not in out, out[-3000:]
        client = MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
        run = the_run(client)
        assert run.info.status == "KILLED", out[-2000:]
        error = run.data.tags["error"]
        assert error.startswith(f"interrupted: {sig.name} at iteration "), error
        stopped_at = int(error.rsplit(" ", 1)[1])
        saved = [f.path for f in client.list_artifacts(run.info.run_id, "checkpoints")]
        print(f"{cwd.name}: {error}; {saved}")
        assert f"checkpoints/iter_{stopped_at:07d}.npz" in saved  # the stop checkpoint, always
        logged = steps(client, run.info.run_id, "train/loss")
        assert logged == list(range(10, stopped_at // 10 * 10 + 1, 10))
        assert_exactly_once(cwd / "mlflow.db", run.info.run_id)


def test_a_requeue_signal_is_handed_to_the_handler_from_before_the_job():
    """Inside a job rnnlab holds SIGUSR2 itself; a requeue must still reach the handler that
    was there before (submitit's), not rnnlab's own, which would only record the signal."""
    from rnnlab.training.signals import outer_handler, stop_on_signals

    def submitits(signum, frame):  # stands for submitit's checkpoint-and-requeue handler
        raise AssertionError("never called here")

    before = signal.signal(signal.SIGUSR2, submitits)
    try:
        with stop_on_signals(hard_interrupt=False):
            assert signal.getsignal(signal.SIGUSR2) is not submitits
            assert outer_handler(signal.SIGUSR2) is submitits
            with stop_on_signals():  # nested blocks see the same outer handler
                assert outer_handler(signal.SIGUSR2) is submitits
        assert signal.getsignal(signal.SIGUSR2) is submitits
    finally:
        signal.signal(signal.SIGUSR2, before)
