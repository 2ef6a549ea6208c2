"""At most one writer per run: two resumes of one run released together, exactly one trains.

``job.resume_run`` (what ``resume=<run_id>`` and a requeued cluster job run) called twice at the
same instant — two threads of one process, and two processes, released by a barrier, with a
seeded jitter of up to 5 ms (printed) — for 10 rounds, on a SQLite store and on PostgreSQL (the
local cluster's ``postgres``, started here as its ``python -m rnnlab.cluster up`` does). In every
round exactly one trains; the other ends in one line naming the live writer; the store holds each
(key, step) once and ``rnnlab.resumes`` counts the resumes that trained. Before the lease, both
trained in 3 of 3 rounds (85 duplicated points, ``rnnlab.resumes`` 3 after 4 resumes).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from rnnlab.config import Config
from rnnlab.errors import UserError

pytestmark = pytest.mark.slow

# Each round asks for STEP more iterations: ~2 s of training here, so the resume that loses
# still finds the winner training under load, however slow its own start.
ROUNDS, STEP = 10, 100


def adder_config(uri: str) -> Config:
    cfg = Config()
    cfg.task.name, cfg.task.activation, cfg.task.loss = "adder", "sigmoid", "mse"
    cfg.task.init, cfg.task.init_scale, cfg.optimizer.name = "uniform", 1.0, "sgd"
    cfg.hidden_size, cfg.batch_size, cfg.seq_length, cfg.task.eval_max_pairs = 256, 64, 8, 64
    cfg.iterations, cfg.log_every, cfg.eval_every, cfg.checkpoint_every = STEP, 10, 50, 50
    cfg.sample_every, cfg.tracking.uri, cfg.experiment_name = 50, uri, "race"
    cfg.diagnostics = False
    return cfg


def base_run(uri: str, folder: Path) -> str:
    from rnnlab.tracking import job

    job.run_job(adder_config(uri), job.JobContext(output_dir=folder), show_progress=False)
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("race").experiment_id])
    return run.info.run_id


def resume_once(run_id: str, uri: str, iterations: int, out: str, barrier, jitter: float):
    """One resume: ("trained", final objective) or ("refused", its one line)."""
    from rnnlab.tracking import job

    barrier.wait()
    time.sleep(jitter)
    try:
        final = job.resume_run(run_id, uri, {"iterations": iterations}, Path(out))
        return "trained", final["objective"]
    except UserError as e:
        return "refused", str(e)


def _in_process(run_id, uri, iterations, out, barrier, jitter, queue) -> None:
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    queue.put(resume_once(run_id, uri, iterations, out, barrier, jitter))


def duplicated_points(uri: str, run_id: str) -> list:
    client = MlflowClient(uri)
    dup = []
    for key in client.get_run(run_id).data.metrics:
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        dup += [(key, s) for s in set(steps) if steps.count(s) > 1]
    return dup


def race(uri: str, root: Path, how: str, seed: int) -> None:
    rng = random.Random(seed)
    run_id = base_run(uri, root / "base")
    client = MlflowClient(uri)
    for round_ in range(ROUNDS):
        iterations = STEP * (round_ + 2)
        jitter = [rng.uniform(0.0, 0.005) for _ in range(2)]
        outs = [str(root / f"r{round_}_{i}") for i in range(2)]
        if how == "threads":
            barrier = threading.Barrier(2)
            results: list = [None, None]

            def one(i, iterations, out, jitter, barrier=barrier, results=results) -> None:
                results[i] = resume_once(run_id, uri, iterations, out, barrier, jitter)

            threads = [threading.Thread(target=one, args=(i, iterations, outs[i], jitter[i]))
                       for i in range(2)]  # fmt: skip
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=300)
        else:
            context = multiprocessing.get_context("spawn")
            barrier, queue = context.Barrier(2), context.Queue()
            procs = [context.Process(target=_in_process, args=(run_id, uri, iterations, outs[i],
                                                                 barrier, jitter[i], queue))
                     for i in range(2)]  # fmt: skip
            try:
                for p in procs:
                    p.start()
                results = [queue.get(timeout=300) for _ in procs]
            finally:
                for p in procs:
                    p.join(timeout=60)
                    if p.is_alive():
                        p.kill()
                        p.join()
        kinds = sorted(r[0] for r in results)
        refused = [r[1] for r in results if r[0] == "refused"]
        print(f"{how} round {round_}: jitter (ms) {[round(j * 1000, 2) for j in jitter]}: "
              f"{[r[0] for r in results]}; {refused}")  # fmt: skip
        assert kinds == ["refused", "trained"], results
        (line,) = refused
        assert "\n" not in line and socket.gethostname() in line and "process " in line, line
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags["rnnlab.resumes"] == str(round_ + 1)
        assert not duplicated_points(uri, run_id)
        steps = sorted(m.step for m in client.get_metric_history(run_id, "train/loss"))
        assert steps == list(range(10, iterations + 1, 10))


@pytest.mark.parametrize("how", ["threads", "processes"])
def test_two_resumes_released_together_on_sqlite(how, tmp_path, no_env_store, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a new experiment's artifacts land under the cwd's mlruns/
    race(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path, how, seed=2212)


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL 15 server of its own (rnnlab.cluster's start_postgres), database mlflow."""
    from rnnlab import cluster

    if (reason := cluster.available()) is not None:
        if os.environ.get("RNNLAB_REQUIRE_CLUSTER"):
            pytest.fail(f"RNNLAB_REQUIRE_CLUSTER=1 but no PostgreSQL: {reason}")
        pytest.skip(f"no local PostgreSQL: {reason}")
    root = Path(tempfile.mkdtemp(prefix="rnnlab-lease-pg-"))  # the postgres user must enter it
    root.chmod(0o711)
    for sub in ("pids", "logs"):
        (root / sub).mkdir()
    c = cluster.Cluster(root, postgres_port=cluster.free_port())
    try:
        cluster.start_postgres(c)
        yield c
    finally:
        pid = cluster.read_pid(c.pid_file("postgres"))
        if pid:
            import signal

            cluster.stop_pid(pid, signal.SIGINT, 20)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("how", ["threads", "processes"])
def test_two_resumes_released_together_on_postgresql(how, postgres, tmp_path, no_env_store,
                                                    monkeypatch):  # fmt: skip
    monkeypatch.chdir(tmp_path)  # a new experiment's artifacts land under the cwd's mlruns/
    from rnnlab import cluster

    database = f"race_{how}"
    out = cluster.subprocess.run(
        [str(cluster.POSTGRES_BIN / "createdb"), "-h", "127.0.0.1", "-p",
         str(postgres.postgres_port), "-U", "rnnlab", database], capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    race(postgres.database_url(database), tmp_path, how, seed=2213)
