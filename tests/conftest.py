"""Shared fixtures: the seed corpus, temporary MLflow stores, and CLI runners."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KAFKA_SHA256 = "836497d1e5a47b1744e68da78822e8af19ddadc565e3a09fde348f300e14ec78"


def find_kafka() -> Path | None:
    for candidate in (ROOT / "data" / "kafka.txt", ROOT.parent / "shared" / "data" / "kafka.txt"):
        if candidate.is_file():
            return candidate
    return None


@pytest.fixture(scope="session")
def kafka_path() -> Path:
    """The seed corpus; CI (RNNLAB_REQUIRE_CORPUS=1) fails rather than skips without it."""
    path = find_kafka()
    if path is None:
        if os.environ.get("RNNLAB_REQUIRE_CORPUS"):
            pytest.fail("kafka.txt not found in data/ or ../shared/data/")
        pytest.skip("kafka.txt not found in data/ or ../shared/data/")
    return path


@pytest.fixture
def no_env_store(monkeypatch):
    """In-process tests name their store themselves: no MLFLOW_TRACKING_URI from the shell, and
    no run left active for the next test."""
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A fresh SQLite MLflow store URI in a temp folder."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def run_cli(
    args: list[str], cwd: Path, module: str = "rnnlab.run", timeout: float = 600, env=None
) -> subprocess.CompletedProcess:
    """Run ``python -m <module> args`` in ``cwd`` the way a user would."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("MLFLOW_TRACKING_URI", None) if "MLFLOW_TRACKING_URI" not in (env or {}) else None
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process_group(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM a server started with ``start_new_session=True`` and its workers; SIGKILL if it
    lingers."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_until_ok(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    """Poll ``url`` until it answers 200; fail with the server's log if it dies or times out."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"server exited: {log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url} never answered: {log.read_text()[-3000:]}"
        time.sleep(0.5)


def server_env() -> dict[str, str]:
    """The environment for an ``mlflow server``/``ui`` a test starts: no inherited tracking URI,
    and no job-execution workers (MLflow 3.x starts seven Huey consumers, ~250 MB each, for
    GenAI jobs rnnlab never submits: on 2 cores they slowed every server test)."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return env | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def start_model_server(model_uri: str, store: str, cwd: Path, log, env=None) -> tuple:
    """``mlflow models serve`` of ``model_uri`` on a free 127.0.0.1 port, in its own process
    group (its workers end with it): (process, base URL). MLflow starts ``uvicorn`` by name
    through a shell, so the interpreter's own bin folder goes first on PATH: the suite run as
    ``/path/to/venv/bin/python -m pytest`` without activating the venv serves too."""
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)
    path = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])
    full_env = {**os.environ, "MLFLOW_TRACKING_URI": store, "PATH": path, **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port), "-m", model_uri],
        cwd=cwd, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    return proc, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory) -> tuple[str, Path]:
    """A real ``mlflow server`` on 127.0.0.1 (SQLite store, its own artifact root) for a test
    module: (url, root folder). Healthy before the tests start, always stopped after them."""
    root = tmp_path_factory.mktemp("server")
    log_path = root / "server.log"
    env = server_env()
    port = free_port()
    with open(log_path, "w") as log:
        # fmt: off
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server",
             "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
             "--artifacts-destination", str(root / "artifacts"),
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        # fmt: on
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_ok(f"{url}/health", proc, log_path)
            yield url, root
        finally:
            stop_process_group(proc)


# Fixtures that train a run through the CLI in a subprocess: a test using one is end-to-end, so
# it belongs to the full suite, not to the quick loop (`-m "not slow"`, under a minute on 2 cores).
END_TO_END_FIXTURES = {"finished_run", "char_run", "empty_run", "adder_run", "model_run"}


# The files that take longest, longest first (seconds on one worker in a full run on 2026-12-02
# at load 3-10; only the order matters). pytest-xdist (`--dist loadfile --no-loadscope-reorder`)
# hands out whole files in collection order: started first, the long ones run beside each other
# and the many short files fill the gaps at the end (that run: 1738 s and 1728 s of tests on the
# two workers). Its default order (most tests first) started the 3-test cluster file last.
LONGEST_FIRST = {
    "test_cells_slow.py": 431, "test_resume.py": 361, "test_cluster.py": 285,
    "test_faults_store.py": 284, "test_faults_parallel.py": 264, "test_sample.py": 190,
    "test_launchers.py": 187, "test_sweeps.py": 178, "test_report.py": 148,
    "test_faults.py": 146, "test_faults_server.py": 128, "test_signals.py": 77,
    "test_review.py": 65, "test_search.py": 63, "test_review_ui.py": 58, "test_serve.py": 56,
    "test_cli.py": 55, "test_report_files.py": 53, "test_report_search.py": 50,
    "test_learning.py": 45, "test_score.py": 45, "test_server.py": 37, "test_bad_input.py": 37,
    "test_diagnostics.py": 34, "test_eval.py": 33, "test_cells_downstream.py": 32,
}  # fmt: skip


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if END_TO_END_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    # Stable: the tests of a file keep their order (module fixtures are built once).
    items.sort(key=lambda item: -LONGEST_FIRST.get(item.path.name, 0))
