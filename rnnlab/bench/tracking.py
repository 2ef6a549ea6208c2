"""What MLflow tracking costs a char-RNN run, for ``python -m rnnlab.bench``: the same run through
``rnnlab.tracking.job.run_job`` (real MLflow, a fresh SQLite store, the default cadences) against
``train()`` with a ``MemoryTracker``, interleaved, in this process.

A pair at ``iterations`` and a pair at 1 iteration: the 1-iteration pair is what a run pays once
(creating the run, params, config, dataset, the final uploads and model); the rest of the
difference grows with the run, and the two give a default-length (100,000-iteration) run's
share. The store and experiment are created before timing, as a sweep creates them once.

Not here: the engine's rates (``rnnlab.bench.engine``), diagnostics (``rnnlab.bench.diagnostics``).
"""

from __future__ import annotations

import itertools
import statistics
import sys
import time
from pathlib import Path

TRACKING_TARGET_PCT = 5.0  # a tracked run's wall time over an untracked one's, default run
DEFAULT_ITERATIONS = 100_000  # the char-RNN's default run length
CADENCES = ("log_every", "eval_every", "sample_every", "checkpoint_every")  # defaults, untouched


def tracking_figures(corpus_path: Path, iterations: int, rounds: int, workdir: Path) -> dict:
    """Wall and CPU time of a char-RNN run through ``run_job`` (MLflow on a fresh SQLite store)
    vs ``train()`` with a MemoryTracker, at ``iterations`` and at 1 iteration, interleaved.

    The 1-iteration pair measures what a run pays once (creating the run, params, config,
    dataset, the final uploads and model); the rest of the difference grows with the run. The
    store and experiment are created before timing, as a sweep creates them once for its jobs.
    """

    from rnnlab.config import Config, DataConfig, TrackingConfig
    from rnnlab.tracking.job import JobContext, run_job
    from rnnlab.tracking.store import ensure_experiment
    from rnnlab.training.loop import train
    from rnnlab.training.tracker import MemoryTracker

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    from rnnlab.tracking import store

    ensure_experiment(store.client(uri), "rnnlab-bench")
    jobs = itertools.count()

    def run(tracked: bool, n: int) -> None:
        cfg = Config(
            data=DataConfig(path=str(corpus_path)),
            tracking=TrackingConfig(uri=uri, enabled=tracked),
            iterations=n,
            experiment_name="rnnlab-bench",
        )
        out = workdir / f"job{next(jobs)}"
        if tracked:
            run_job(cfg, JobContext(launch_dir=workdir, output_dir=out), show_progress=False)
        else:
            train(cfg, MemoryTracker(), out, show_progress=False)

    cases = [("mlflow", iterations), ("off", iterations), ("mlflow", 1), ("off", 1)]
    for tracked in (True, False):  # warm up: first-use imports and caches are not overhead
        run(tracked, 20)
    wall: dict = {c: [] for c in cases}
    cpu: dict = {c: [] for c in cases}
    for r in range(rounds):
        for case in cases[r % 4 :] + cases[: r % 4]:
            w, c = time.perf_counter(), time.process_time()  # process: MLflow's threads too
            run(case[0] == "mlflow", case[1])
            wall[case].append(time.perf_counter() - w)
            cpu[case].append(time.process_time() - c)

    def split(t: dict) -> dict:
        on, off = (
            statistics.median(t[("mlflow", iterations)]),
            statistics.median(t[("off", iterations)]),
        )
        on1, off1 = statistics.median(t[("mlflow", 1)]), statistics.median(t[("off", 1)])
        fixed = on1 - off1
        growing = (on - off - fixed) / off
        # A default-length run: the untracked time scaled to DEFAULT_ITERATIONS, same costs.
        off_default = off1 + (off - off1) * DEFAULT_ITERATIONS / iterations
        return {
            "mlflow_seconds": on,
            "off_seconds": off,
            "overhead_pct": 100.0 * (on / off - 1.0),
            "fixed_seconds": fixed,
            "per_iteration_pct": 100.0 * growing,
            "default_run_overhead_pct": 100.0 * (fixed / off_default + growing),
        }

    return {
        "iterations": iterations,
        "rounds": rounds,
        "default_iterations": DEFAULT_ITERATIONS,
        "wall": split(wall),
        "cpu": split(cpu),
        "cadences": {k: getattr(Config(), k) for k in CADENCES},
        "samples": {
            "wall": {f"{mode} {n}": v for (mode, n), v in wall.items()},
            "cpu": {f"{mode} {n}": v for (mode, n), v in cpu.items()},
        },
    }


def print_tracking(t: dict, file=None) -> None:
    file = file or sys.stdout  # looked up per call: a test's capture swaps sys.stdout
    for clock in ("wall", "cpu"):
        c = t[clock]
        print(
            f"tracking ({clock}): {t['iterations']} iterations, "
            f"MLflow {c['mlflow_seconds']:.2f} s vs off {c['off_seconds']:.2f} s: "
            f"{c['overhead_pct']:+.1f}% = "
            f"{c['fixed_seconds']:.2f} s once per run + {c['per_iteration_pct']:+.1f}% growing "
            f"with the run; a {t['default_iterations']:,}-iteration run: "
            f"{c['default_run_overhead_pct']:+.1f}%",
            file=file,
        )
