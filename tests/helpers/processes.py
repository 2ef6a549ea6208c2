"""Real processes the way a user starts them: the CLI, servers on free ports, and stopping them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout


KAFKA_SHA256 = "836497d1e5a47b1744e68da78822e8af19ddadc565e3a09fde348f300e14ec78"


def find_kafka() -> Path | None:
    for candidate in (ROOT / "data" / "kafka.txt", ROOT.parent / "shared" / "data" / "kafka.txt"):
        if candidate.is_file():
            return candidate
    return None


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


def start_model_server(
    model_uri: str, store: str, cwd: Path, log, env=None, timeout: int | None = None
) -> tuple:
    """``mlflow models serve`` of ``model_uri`` on a free 127.0.0.1 port, in its own process
    group (its workers end with it): (process, base URL). MLflow starts ``uvicorn`` by name
    through a shell, so the interpreter's own bin folder goes first on PATH: the suite run as
    ``/path/to/venv/bin/python -m pytest`` without activating the venv serves too. ``timeout``:
    its request timeout in seconds (``-t``)."""
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)
    path = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])
    full_env = {**os.environ, "MLFLOW_TRACKING_URI": store, "PATH": path, **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port), "-m", model_uri,
         *(["-t", str(timeout)] if timeout else [])],
        cwd=cwd, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    return proc, f"http://127.0.0.1:{port}"


# Every process a test starts inherits this variable (set per test by tests/conftest.py), so what
# a test leaves behind is found and stopped at its end, even a process that left its session
# and lost its parent (a sweep's worker whose launcher was killed is re-parented to init).
TEST_TAG = "RNNLAB_TEST_PROCESS_TAG"


def tagged_pids(tag: str) -> list[int]:
    """Live processes whose environment carries ``TEST_TAG=tag`` (never this process)."""
    needle = b"\0" + f"{TEST_TAG}={tag}".encode() + b"\0"
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                if needle in b"\0" + f.read() + b"\0":
                    found.append(int(entry.name))
        except OSError:
            continue
    return sorted(found)


def kill_tagged(tag: str) -> list[int]:
    """SIGKILL every live process carrying ``tag``; returns their pids (zombies excluded)."""
    pids = [p for p in tagged_pids(tag) if not _zombie(p)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
