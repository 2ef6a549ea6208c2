"""Fault injection, store creation: 8 processes at once on a fresh SQLite store, 5 times.

Split from ``test_faults.py`` (same helpers) so that pytest-xdist, which keeps a file on one
worker, can run it beside the other fault tests: it is the suite's longest single test.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from helpers.faults import SEED, ro, start
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

# the 5, each on a fresh store: 21.9–23.5 s each on the 2-core machine at load 0.7
REPETITIONS = 5


def test_eight_processes_at_once_on_a_fresh_store(tmp_path):
    """Safe store creation and unique sweeps: 8 processes — 5 single runs and 3 two-job sweeps,
    mixed — started together (seeded offsets, printed) in an empty folder all finish, every run
    FINISHED (3 parents with 2 children each), and the store passes SQLite's integrity check
    with no half-done migration left; ``REPETITIONS`` times, each on a fresh store."""
    args = ["task=adder", "iterations=60", "log_every=20", "eval_every=60", "sample_every=60",
            "experiment_name=faults"]  # fmt: skip
    rng = np.random.default_rng(SEED + 8)
    for rep in range(REPETITIONS):
        root = tmp_path / f"rep{rep}"
        root.mkdir()
        sweeps = set(rng.choice(8, size=3, replace=False).tolist())  # which processes sweep
        offsets = rng.uniform(0.0, 0.3, size=8)
        print(f"repetition {rep}: sweeps at {sorted(sweeps)}, start offsets (s)",
              np.round(offsets, 3).tolist())  # fmt: skip
        began, procs = time.monotonic(), []
        for i in np.argsort(offsets):
            time.sleep(max(0.0, began + offsets[i] - time.monotonic()))
            job = ["-m", f"seed={i},{i + 8}"] if i in sweeps else [f"seed={i}"]
            procs.append((i, start([*job, *args], root, root / f"log{i}.txt")))
        codes = {i: p.wait(timeout=300) for i, p in procs}
        print(f"repetition {rep}: all ended after {time.monotonic() - began:.1f} s")
        logs = {i: (root / f"log{i}.txt").read_text()[-1500:] for i in codes if codes[i]}
        assert set(codes.values()) == {0}, logs
        db = root / "mlflow.db"
        with ro(db) as con:
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            query = "SELECT name FROM sqlite_master WHERE type='table'"
            tables = [r[0] for r in con.execute(query)]
        assert not [t for t in tables if t.startswith("_alembic_tmp")]
        client = MlflowClient(f"sqlite:///{db}")
        runs = client.search_runs([client.get_experiment_by_name("faults").experiment_id])
        assert sorted(r.info.status for r in runs) == ["FINISHED"] * (5 + 3 * 3)
        parents = {r.info.run_id for r in runs if r.data.tags.get("rnnlab.kind") == "sweep"}
        assert len(parents) == 3  # unique sweeps: one parent each, even in the same second
        children = [r.data.tags.get("mlflow.parentRunId") for r in runs]
        assert sorted(c for c in children if c) == sorted([*parents] * 2)
