"""Fault injection, the tracking server: a real ``mlflow server`` killed for 20 s mid-run, then
for good (and ``rnnlab.sync`` completes the run once it is back).

Split from ``test_faults.py`` (same helpers) so that pytest-xdist, which keeps a file on one
worker, can run these beside the other fault tests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.faults import char_args, env, ro, start, the_run, wait_for
from helpers.processes import free_port, server_env, stop_process_group, wait_until_ok
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow


def start_server(root: Path, port: int) -> subprocess.Popen:
    log = open(root / "server.log", "a")  # noqa: SIM115 — the server outlives this call
    # fmt: off
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server",
         "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
         "--artifacts-destination", str(root / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=root, env=server_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    # fmt: on
    wait_until_ok(f"http://127.0.0.1:{port}/health", proc, root / "server.log")
    return proc


def server_points(root: Path) -> list[int]:
    with ro(root / "server.db") as con:
        return [r[0] for r in con.execute("SELECT step FROM metrics WHERE key = 'train/loss'")]


def test_server_away_for_20_s_loses_nothing(tmp_path, kafka_path):
    """Nothing lost when the store is unreachable: the server is killed for 20 s mid-run; the
    run journals and trains on, replays when it is back, and every point reaches it once."""
    port = free_port()
    server = start_server(tmp_path, port)
    url = f"http://127.0.0.1:{port}"
    args = char_args(kafka_path, 10**6, checkpoint_every=200, eval_every=10**6,
                     sample_every=10**6, **{"tracking.uri": url, "tracking.flush_seconds": 0.5,
                     "tracking.retry_seconds": 900, "hydra.run.dir": "job"})  # fmt: skip
    proc = start(args, tmp_path, tmp_path / "log.txt")
    try:
        wait_for(
            lambda: len(server_points(tmp_path)) > 0, proc, 180, "points", tmp_path / "log.txt"
        )
        stop_process_group(server)
        time.sleep(20)
        assert proc.poll() is None, (tmp_path / "log.txt").read_text()[-2000:]
        assert (tmp_path / "job" / "rnnlab_journal.jsonl").is_file()
        server = start_server(tmp_path, port)
        wait_for(lambda: not (tmp_path / "job" / "rnnlab_journal.jsonl").exists(), proc, 120,
                 "the journal's replay", tmp_path / "log.txt")  # fmt: skip
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=120) == 130, (tmp_path / "log.txt").read_text()[-2000:]
        client = MlflowClient(url)
        run = the_run(client)
        assert run.info.status == "KILLED"
        last = max(int(f.path[-11:-4]) for f in client.list_artifacts(run.info.run_id,
                                                                        "checkpoints"))  # fmt: skip
        logged = sorted(server_points(tmp_path))
        assert logged[: last // 10] == list(range(10, last + 1, 10))
        assert len(logged) == len(set(logged))  # each once
    finally:
        stop_process_group(proc)
        stop_process_group(server)


def test_server_gone_for_good_stops_the_run_and_sync_completes_it(tmp_path, kafka_path):
    """The run stops within its retry budget with one clear line and a stop checkpoint; once
    the server is back, ``rnnlab.sync <job folder>`` sends the rest and marks the status."""
    port = free_port()
    server = start_server(tmp_path, port)
    url = f"http://127.0.0.1:{port}"
    budget = 5.0
    args = char_args(kafka_path, 10**6, checkpoint_every=200, eval_every=10**6,
                     sample_every=10**6, **{"tracking.uri": url, "tracking.flush_seconds": 0.5,
                     "tracking.retry_seconds": budget, "hydra.run.dir": "job"})  # fmt: skip
    log = tmp_path / "log.txt"
    proc = start(args, tmp_path, log)
    try:
        wait_for(
            lambda: len(server_points(tmp_path)) > 0, proc, 180, "points", tmp_path / "log.txt"
        )
        stop_process_group(server)
        killed_at = time.monotonic()
        code = proc.wait(timeout=120)
        took = time.monotonic() - killed_at
        print(f"the run stopped {took:.1f} s after the server (budget {budget} s)")
        out = log.read_text()
        assert code == 1, out[-2000:]
        lines = [x for x in out.splitlines() if "refused every write" in x]
        assert len(lines) == 1 and "rnnlab.sync" in lines[0] and "Traceback" not in out
        assert took < budget + 40
        server = start_server(tmp_path, port)
        done = subprocess.run([sys.executable, "-m", "rnnlab.sync", str(tmp_path / "job")],
                              cwd=tmp_path, env=env(), capture_output=True, text=True,
                              timeout=180)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "synced run" in done.stdout and "status FAILED" in done.stdout
        client = MlflowClient(url)
        run = the_run(client)
        assert run.info.status == "FAILED" and "store unreachable" in run.data.tags["error"]
        last = max(int(f.path[-11:-4]) for f in client.list_artifacts(run.info.run_id,
                                                                        "checkpoints"))  # fmt: skip
        logged = sorted(server_points(tmp_path))
        assert logged == list(range(10, logged[-1] + 1, 10)) and logged[-1] >= last // 10 * 10
        again = subprocess.run([sys.executable, "-m", "rnnlab.sync", str(tmp_path / "job")],
                               cwd=tmp_path, env=env(), capture_output=True, text=True)  # fmt: skip
        assert again.returncode == 2 and "nothing to send" in again.stderr
    finally:
        stop_process_group(proc)
        stop_process_group(server)
