"""The same records through a real ``mlflow server`` on 127.0.0.1 (``tracking.uri=http://…``):
what a team or a cluster uses instead of a local SQLite file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import run_cli
from mlflow.tracking import MlflowClient

ADDER = ["task=adder", "iterations=200", "log_every=50"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``mlflow server`` on a SQLite store and a free port, healthy before the tests start and
    always stopped after them (its whole process group: it runs uvicorn workers)."""
    root = tmp_path_factory.mktemp("server")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    log = open(root / "server.log", "w")
    # fmt: off
    proc = subprocess.Popen(
        ["mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
         "--artifacts-destination", str(root / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    # fmt: on
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (root / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "mlflow server never became healthy"
            time.sleep(0.5)
        yield url, root
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


@pytest.mark.slow
def test_single_run_and_sweep_record_through_the_server(server, tmp_path):
    url, root = server
    single = run_cli([*ADDER, f"tracking.uri={url}", "experiment_name=served"], cwd=tmp_path)
    assert single.returncode == 0, single.stderr[-3000:]
    sweep = run_cli(["-m", "hidden_size=8,16", *ADDER, f"tracking.uri={url}",
                     "experiment_name=served"], cwd=tmp_path)  # fmt: skip
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    # nothing was written locally: the server holds the store and the artifacts
    assert not list(tmp_path.rglob("mlflow.db")) and not (tmp_path / "mlruns").exists()

    client = MlflowClient(url)
    runs = client.search_runs([client.get_experiment_by_name("served").experiment_id])
    by_name = {r.info.run_name: r for r in runs}
    (parent,) = [r for r in runs if r.data.tags.get("rnnlab.kind") == "sweep"]
    assert parent.info.status == "FINISHED" and parent.data.tags["rnnlab.children"] == "2"
    assert {"hidden_size=8", "hidden_size=16", "iterations=200,log_every=50,task=adder"} <= set(
        by_name
    )
    for name in ("hidden_size=8", "hidden_size=16"):
        assert by_name[name].data.tags["mlflow.parentRunId"] == parent.info.run_id
    for run in (r for r in runs if r is not parent):
        assert run.info.status == "FINISHED"
        run_id = run.info.run_id
        assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == [
            50,
            100,
            150,
            200,
        ]
        assert [m.step for m in client.get_metric_history(run_id, "val/exact_acc")] == [100, 200]
        assert run.data.params["task.name"] == "adder"
        assert {a.path for a in client.list_artifacts(run_id, "checkpoints")} == {
            "checkpoints/iter_0000200.npz"
        }
        assert len(run.inputs.dataset_inputs) == 1
    # the artifacts really are on the server's side
    assert len(list(Path(root, "artifacts").rglob("iter_0000200.npz"))) == 3
