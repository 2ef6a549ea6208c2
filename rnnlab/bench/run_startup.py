"""What starting a run costs, for ``python -m rnnlab.bench``: ``python -m rnnlab.run iterations=1``
as whole processes, the CPU time (user + system of the process and every child it waited for)
and the wall time a user pays before and around one training step.

In a temporary folder: one untimed run first (it creates the store and loads the compiled
kernels' cache, as any run after a user's first finds them), then ``rounds`` rounds of three
runs each: on the *existing* store of that folder; on a *fresh* store (a new folder, as a
user's first run in a project: the cached empty store copied, ``rnnlab.tracking.store``); and
on a fresh store with an empty cache (a new MLflow version's first store on a machine: its
migrations run). Figures are medians over rounds. Then one more run on the existing store under
``python -X importtime``: what its imports cost, summed by top-level package (self time, so
each module counts once) — and, beside it, a process that only imports the parts of MLflow a
run uses (``mlflow``, its SQL store, ``mlflow.pyfunc``): the floor no change to rnnlab moves.

Not here: what the kernels' first window costs a process (``rnnlab.bench.engine``'s
``startup_figures``, the bench's ``startup=`` section), tracking's share of a long run
(``rnnlab.bench.tracking``).
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from rnnlab.bench.diagnostics import load_average, timed_process

COMMAND = ("-m", "rnnlab.run", "iterations=1")
EXISTING_TARGET = 2.5  # s of CPU on a store an earlier run created
FRESH_TARGET = 3.5  # s of CPU on a new store
CASES = ("existing", "fresh", "fresh, no cache")
TOP = 12  # packages shown from the import-time breakdown
MLFLOW_PARTS = "import mlflow, mlflow.store.tracking.sqlalchemy_store, mlflow.pyfunc"
IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def child_env(cache: Path | None = None) -> dict:
    """The environment of a timed run: this checkout's rnnlab, the store in its folder (no
    MLFLOW_TRACKING_URI), ``cache`` as rnnlab's cache folder when given."""
    root = str(Path(__file__).resolve().parents[2])
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    if cache is not None:
        env["RNNLAB_CACHE_DIR"] = str(cache)
    return env


def import_breakdown(stderr: str) -> dict:
    """``-X importtime``'s lines summed: {"total_seconds", "packages": [[name, seconds], ...]}
    (self time by top-level package, heaviest first)."""
    by_package: Counter = Counter()
    for line in stderr.splitlines():
        if m := IMPORT_LINE.match(line):
            by_package[m.group(4).split(".")[0]] += int(m.group(1)) / 1e6
    ranked = [[name, round(s, 4)] for name, s in by_package.most_common()]
    return {"total_seconds": round(sum(by_package.values()), 4), "packages": ranked}


def importtime(folder: Path) -> dict:
    """The import-time breakdown of one run on the store in ``folder``."""
    command = [sys.executable, "-X", "importtime", *COMMAND]
    proc = subprocess.run(command, cwd=folder, env=child_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{proc.stderr[-2000:]}")
    return import_breakdown(proc.stderr)


def figures(rounds: int, workdir: Path) -> dict:
    """Median CPU and wall seconds of ``python -m rnnlab.run iterations=1`` per case (see the
    module), the import-time breakdown and MLflow's import floor, with the load averages."""
    load_before = load_average()
    existing = workdir / "existing"
    existing.mkdir(parents=True)
    command = [sys.executable, *COMMAND]
    timed_process(command, existing, child_env())  # untimed: the store, the kernels' cache
    samples: dict = {case: {"cpu": [], "wall": []} for case in CASES}
    for r in range(rounds):
        for case in CASES:
            folder = existing
            env = child_env()
            if case != "existing":
                folder = workdir / f"{case.replace(', ', '_').replace(' ', '_')}_{r}"
                folder.mkdir()
            if case == "fresh, no cache":
                env = child_env(Path(tempfile.mkdtemp(prefix="cache-", dir=workdir)))
            wall, cpu = timed_process(command, folder, env)
            samples[case]["cpu"].append(cpu)
            samples[case]["wall"].append(wall)
    floor = timed_process([sys.executable, "-c", MLFLOW_PARTS], workdir, child_env())
    return {
        "command": "python " + " ".join(COMMAND),
        "rounds": rounds,
        **{
            case: {
                "cpu_seconds": statistics.median(samples[case]["cpu"]),
                "wall_seconds": statistics.median(samples[case]["wall"]),
                "samples": samples[case],
            }
            for case in CASES
        },
        "mlflow_imports_cpu_seconds": floor[1],
        "importtime": importtime(existing),
        "load_average": {"before": load_before, "after": load_average()},
    }


def print_figures(f: dict) -> None:
    load = f["load_average"]
    print(f"run start-up: `{f['command']}` as whole processes, medians of {f['rounds']} "
          f"round(s); load {load['before']} before, {load['after']} after")  # fmt: skip
    print("| store | CPU s (user+sys, with children) | wall s | target |")
    print("|---|---|---|---|")
    targets = {"existing": EXISTING_TARGET, "fresh": FRESH_TARGET}
    for case in CASES:
        bound = f"≤ {targets[case]:g} s" if case in targets else "–"
        print(f"| {case} | {f[case]['cpu_seconds']:.2f} | {f[case]['wall_seconds']:.2f} "
              f"| {bound} |")  # fmt: skip
    print(f"MLflow's imports alone ({MLFLOW_PARTS}): "
          f"{f['mlflow_imports_cpu_seconds']:.2f} s CPU")  # fmt: skip
    imports = f["importtime"]
    print(f"imports of one run on the existing store (-X importtime, self time by package): "
          f"{imports['total_seconds']:.2f} s in all")  # fmt: skip
    for name, seconds in imports["packages"][:TOP]:
        print(f"  {seconds:6.3f} s  {name}")
