"""Shared fixtures: the seed corpus, temporary MLflow stores, and CLI runners."""

from __future__ import annotations

import os
import subprocess
import sys
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
