"""What a run skips at start, and that it records the same for it: a new SQLite store copied from
the cached empty store MLflow migrated once, the model's requirements checked without mapping
every installed package, no telemetry client, no IPython import in a command's process."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys

import pytest

from rnnlab.tracking import store


def schema(db) -> dict[str, list[str]]:
    """Every table, index and trigger of a SQLite file with its SQL's lines sorted: alembic's
    batch migrations rebuild tables with their constraints in set order, so two stores MLflow
    migrated may list them in another order."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT type, name, sql FROM sqlite_master").fetchall()
    finally:
        con.close()
    return {f"{t} {n}": sorted(re.split(r",\s*\n", sql or "")) for t, n, sql in rows}


def test_a_new_store_is_a_copy_of_the_schema_mlflow_migrated_once(tmp_path, monkeypatch):
    """The first new store builds the cache with MLflow's own migrations; every later one is a
    copy of it, with the same schema as a store MLflow creates itself, the newest revision,
    and its own Default experiment."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("RNNLAB_CACHE_DIR", str(tmp_path / "cache"))
    template = store.empty_store_path()
    assert not template.exists()
    first = tmp_path / "a" / "mlflow.db"
    store.open_store(f"sqlite:///{first}", create=True)
    assert store.is_empty_store(template, store.schema_head())  # nothing of `a` in it
    built = template.stat().st_mtime_ns
    second = tmp_path / "b" / "mlflow.db"
    client = store.open_store(f"sqlite:///{second}", create=True)
    assert template.stat().st_mtime_ns == built  # copied, not built again
    by_mlflow = tmp_path / "c" / "mlflow.db"
    by_mlflow.parent.mkdir()
    MlflowClient(f"sqlite:///{by_mlflow}").search_experiments()  # MLflow's own migrations
    assert schema(second) == schema(by_mlflow)
    assert [e.name for e in client.search_experiments()] == ["Default"]
    eid = store.ensure_experiment(client, "charrnn")
    run = client.create_run(eid)
    client.log_param(run.info.run_id, "hidden_size", "100")
    assert client.get_run(run.info.run_id).data.params == {"hidden_size": "100"}


@pytest.mark.parametrize("damage", ["not a database", "a folder"])
def test_a_cache_it_cannot_use_costs_only_time(tmp_path, monkeypatch, damage):
    """A cached empty store that is damaged, or a cache path that is no file: MLflow creates
    the new store itself, whole."""
    monkeypatch.setenv("RNNLAB_CACHE_DIR", str(tmp_path / "cache"))
    template = store.empty_store_path()
    template.parent.mkdir(parents=True)
    if damage == "a folder":
        template.mkdir()
    else:
        template.write_bytes(b"SQLite format 3\x00" + b"\x07" * 2000)
    db = tmp_path / "s" / "mlflow.db"
    client = store.open_store(f"sqlite:///{db}", create=True)
    assert [e.name for e in client.search_experiments()] == ["Default"]
    assert not list(db.parent.glob(".*.tmp"))
    if damage == "not a database":  # rebuilt in place from MLflow's migrations
        assert store.is_empty_store(template, store.schema_head())


def test_the_models_requirements_are_checked_without_mapping_every_package(monkeypatch):
    """Inside ``requirements_checked_alone`` MLflow still finds a requirement this environment
    does not meet, and none among the model's own; it never scans every installed package,
    and its map is left unbuilt afterwards."""
    import importlib_metadata
    from mlflow.utils import requirements_utils as ru

    from rnnlab.tracking.pyfunc import requirements, requirements_checked_alone

    def scan():
        raise AssertionError("every installed distribution scanned")

    monkeypatch.setattr(importlib_metadata, "packages_distributions", scan)
    monkeypatch.setattr(ru, "_MODULES_TO_PACKAGES", None)
    monkeypatch.setattr(ru, "_PACKAGES_TO_MODULES", None)
    with requirements_checked_alone():
        assert [ru._check_requirement_satisfied(r) for r in requirements()] == [None] * 4
        wrong = ru._check_requirement_satisfied("numpy==0.0.1")
        assert wrong is not None and wrong.package_name == "numpy"
    assert ru._MODULES_TO_PACKAGES is None and ru._PACKAGES_TO_MODULES is None


def test_a_commands_process_skips_telemetry_and_ipython():
    """``lean_mlflow`` turns MLflow's telemetry off unless the user set it; ``not_a_notebook``
    keeps MLflow's notebook probes from importing IPython, and the run's tags still resolve."""
    code = (
        "import sys\n"
        "from rnnlab.tracking import store\n"
        "store.lean_mlflow(); store.not_a_notebook()\n"
        "from mlflow.telemetry import get_telemetry_client\n"
        "from mlflow.tracking.context import registry\n"
        "tags = registry.resolve_tags({'a': 'b'})\n"
        "print(get_telemetry_client(), 'IPython' in sys.modules and sys.modules['IPython'],\n"
        "      sorted(k for k in tags if k in ('a', 'mlflow.user', 'mlflow.source.type')))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_DISABLE_TELEMETRY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True, timeout=120).stdout.split("\n")[-2]  # fmt: skip
    assert out == "None None ['a', 'mlflow.source.type', 'mlflow.user']"
    env["MLFLOW_DISABLE_TELEMETRY"] = "false"  # the user's setting wins
    code = "from rnnlab.tracking import store; import os; store.lean_mlflow(); " \
           "print(os.environ['MLFLOW_DISABLE_TELEMETRY'])"  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True, timeout=60).stdout.strip()  # fmt: skip
    assert out == "false"
