"""``python -m rnnlab.bench.sweeps [what=parallel|search|all]``: what parallel and searched
sweeps buy.

- ``parallel``: the same 8-job sweep run one job at a time (the basic launcher) and on
  ``hydra/launcher=joblib hydra.launcher.n_jobs=2``, side by side; prints both wall times and
  the speedup.
- ``search``: a grid of 12 jobs over learning rate × hidden size × BPTT window on a shortened
  char-RNN, then a 12-trial Optuna search with pruning over the same ranges; prints each one's
  best objective (the final value of what it minimised, as the task judges it) and total
  training iterations.

Every measurement is a real ``python -m rnnlab.run -m ...`` in a fresh temporary folder with its
own MLflow store (and Optuna study), so it includes everything a user pays: process start,
tracking, evaluation. The numbers in the README's "Search and scale" section come from here.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rnnlab import cli
from rnnlab.errors import UserError

# ~12 s of training per job: joblib's worker start-up (each worker imports rnnlab, Hydra and
# MLflow, ~3 s) is paid once per worker, so jobs of 2-3 s gain little from it.
PARALLEL_JOBS = [
    "task=adder",
    "seed=0,1,2,3,4,5,6,7",
    "iterations=100000",
    "eval_every=5000",
    "checkpoint_every=100000",
    "sample_every=100000",
]

# A shortened char-RNN: 3000 iterations, val/loss every 300.
CHARRNN_SHORT = [
    "iterations=3000",
    "eval_every=300",
    "log_every=100",
    "sample_every=3000",
    "checkpoint_every=3000",
]
GRID = ["learning_rate=0.03,0.1,0.3", "hidden_size=32,128", "seq_length=10,40"]  # 3·2·2 = 12
SEARCH = [
    "hydra/sweeper=rnnlab_optuna",
    "hydra.sweeper.study_name=bench",
    "hydra.sweeper.n_trials=12",
    "hydra.sweeper.sampler.n_startup_trials=4",
    "hydra.sweeper.pruner.name=successive_halving",
    "hydra.sweeper.pruner.min_resource=1000",  # one rung: the best third of trials go on
    "hydra.sweeper.pruner.reduction_factor=3",
    "learning_rate=tag(log,interval(0.03,0.3))",
    "hidden_size=choice(32,128)",
    "seq_length=range(10,41,5)",
]


def run_sweep(args: list[str], cwd: Path) -> float:
    """Run one multirun in ``cwd``; return its wall time in seconds."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "rnnlab.run", "-m", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"bench_sweep: {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return seconds


def sweep_children(cwd: Path) -> list[dict]:
    """Each child run of the one sweep in ``cwd``'s store: status, trial state, objective and
    the iterations it trained (its last train/loss step)."""

    from rnnlab.tasks import judged_run
    from rnnlab.tracking import store

    client = store.client(f"sqlite:///{cwd / 'mlflow.db'}")
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string="tags.mlflow.parentRunId != ''",
        max_results=50000,
    )
    out = []
    for run in runs:
        tags = run.data.tags
        task = judged_run(run)  # pruned or failed: no final metrics, NaN
        objective = task.final(run) if task is not None else math.nan
        steps = client.get_metric_history(run.info.run_id, "train/loss")
        out.append(
            {
                "status": run.info.status,
                "state": tags.get("rnnlab.trial_state", "-"),
                "objective": objective,
                "iterations": max((s.step for s in steps), default=0),
            }
        )
    return out


def bench_parallel() -> dict[str, float]:
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        sequential = run_sweep(PARALLEL_JOBS, Path(a))
        parallel = run_sweep(
            [*PARALLEL_JOBS, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], Path(b)
        )
        done = [
            len([c for c in sweep_children(Path(d)) if c["status"] == "FINISHED"]) for d in (a, b)
        ]
    print(f"8-job adder sweep ({' '.join(PARALLEL_JOBS)}), FINISHED children {done}")
    print("| launcher | wall time |")
    print("|---|---|")
    print(f"| basic (one job at a time) | {sequential:.1f} s |")
    print(f"| joblib, n_jobs=2 | {parallel:.1f} s |")
    print(
        f"speedup: {sequential / parallel:.2f}× on {os.cpu_count()} cores "
        f"(1-min load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after: "
        "other processes on the machine take cores from both)"
    )
    return {"sequential_s": sequential, "parallel_s": parallel, "speedup": sequential / parallel}


def summarise(cwd: Path, seconds: float) -> dict:
    children = sweep_children(cwd)
    states: dict[str, int] = {}
    for c in children:
        states[c["state"]] = states.get(c["state"], 0) + 1
    return {
        "jobs": len(children),
        "best": min(c["objective"] for c in children if not math.isnan(c["objective"])),
        "iterations": sum(c["iterations"] for c in children),
        "seconds": seconds,
        "states": states,
    }


def bench_search(seeds: list[int]) -> dict[str, dict]:
    """The grid once, then the search once per sampler seed (each in a fresh folder)."""
    results = {}
    with tempfile.TemporaryDirectory() as d:
        results["grid"] = summarise(Path(d), run_sweep([*CHARRNN_SHORT, *GRID], Path(d)))
    for seed in seeds:
        with tempfile.TemporaryDirectory() as d:
            args = [*CHARRNN_SHORT, *SEARCH, f"hydra.sweeper.sampler.seed={seed}"]
            results[f"search, sampler seed {seed}"] = summarise(Path(d), run_sweep(args, Path(d)))
    g = results["grid"]
    print(f"shortened char-RNN ({' '.join(CHARRNN_SHORT)})")
    print(
        "| sweep | jobs | best val/loss (vs grid) | total iterations (vs grid) | wall time "
        "| trials |"
    )
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        states = ", ".join(f"{n} {k}" for k, n in sorted(r["states"].items()) if k != "-")
        print(
            f"| {name} | {r['jobs']} | {r['best']:.4f} ({r['best'] / g['best']:.3f}×) | "
            f"{r['iterations']:,} ({r['iterations'] / g['iterations']:.2f}×) | "
            f"{r['seconds']:.0f} s | {states or 'all run to the end'} |"
        )
    return results


COMMAND = cli.Command(
    name="rnnlab.bench.sweeps",
    summary="what parallel and searched sweeps buy, measured with real sweeps",
    keys=(
        cli.Key("what", "which measurement", choices=("parallel", "search", "all"), default="all"),
        cli.Key("seeds", "sampler seeds of the searches, comma-separated", default="0,1,2"),
    ),
)


def run(args: dict) -> None:
    try:
        seeds = [int(s) for s in args["seeds"].split(",")]
    except ValueError:
        raise UserError(f"seeds={args['seeds']!r} is not allowed: integers, e.g. 0,1,2") from None
    if args["what"] in ("search", "all"):
        bench_search(seeds)
    if args["what"] in ("parallel", "all"):
        bench_parallel()


def main(argv: list[str] | None = None) -> None:
    cli.main(COMMAND, run, argv)


if __name__ == "__main__":
    main()
