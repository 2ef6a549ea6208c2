"""Shared fixtures: the seed corpus, temporary MLflow stores, and CLI runners."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
from helpers import suite_times
from helpers.processes import (
    TEST_TAG,
    find_kafka,
    free_port,
    kill_tagged,
    server_env,
    stop_process_group,
    wait_until_ok,
)


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test(monkeypatch):
    """Whatever a test starts carries its tag (``helpers.processes.TEST_TAG``); anything still
    alive when the test ends — it failed before its own clean-up, or a worker lost its parent —
    is killed here. Module-scoped servers start before this and carry no tag."""
    tag = uuid.uuid4().hex
    monkeypatch.setenv(TEST_TAG, tag)
    yield
    if left := kill_tagged(tag):
        print(f"killed {len(left)} process(es) the test left running: {left}")


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


# The order files start in. pytest-xdist (``--dist loadfile --no-loadscope-reorder``) hands out
# whole files in collection order, so the longest start first and run beside each other while
# the many short files fill the gaps at the end; its default order (most tests first) started
# the long few-test files last and left one worker busy for minutes. Each file's seconds are
# measured, not typed: ``python -m pytest --store-durations`` writes them, with each file's CPU
# seconds, to durations.json and renders the table in docs/testing.md (helpers.suite_times).
_measured: dict[str, dict[str, float]] = defaultdict(lambda: {"seconds": 0.0, "cpu_seconds": 0.0})
_session: dict = {}


def pytest_addoption(parser) -> None:
    parser.addoption(
        "--store-durations",
        action="store_true",
        help="write each test file's wall and CPU seconds to tests/durations.json (the order "
        "files start in) and the table in docs/testing.md",
    )


def pytest_sessionstart(session) -> None:
    _session.update(started=time.monotonic(), load=suite_times.load_average())


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if END_TO_END_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    files = suite_times.files()
    # Stable: the tests of a file keep their order (module fixtures are built once).
    items.sort(key=lambda item: -suite_times.seconds_of(files.get(item.nodeid.split("::")[0], 0)))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item) -> None:
    item._cpu_start = suite_times.cpu_seconds()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if call.when == "teardown" and hasattr(item, "_cpu_start"):  # module fixtures' teardown too
        cpu = suite_times.cpu_seconds() - item._cpu_start
        outcome.get_result().user_properties.append(("cpu_seconds", cpu))


def pytest_runtest_logreport(report) -> None:
    figs = _measured[report.nodeid.split("::")[0]]
    figs["seconds"] += report.duration  # setup, call and teardown
    figs["cpu_seconds"] += sum(v for k, v in report.user_properties if k == "cpu_seconds")


def pytest_sessionfinish(session, exitstatus) -> None:
    if not session.config.getoption("--store-durations") or hasattr(session.config, "workerinput"):
        return  # only the controller, which hears every worker's reports, writes the file
    selection = shlex.join(session.config.invocation_params.args)
    figures = suite_times.session_figures(
        _session["started"], _session["load"], session.testscollected, selection
    )
    suite_times.write(suite_times.record(dict(_measured), figures))
