"""What diagnostics cost a run, for ``python -m rnnlab.bench``: the wall time of the whole
``python -m rnnlab.run task=<task>`` process with ``diagnostics=true`` against
``diagnostics=false``, at the task's default settings (its own ``diag_every``), as a user meets it.

Each task runs in a folder of its own with its own SQLite store. One untimed run first creates the
store and loads the compiled kernels' cache, as any run after a user's first finds them; then
``rounds`` pairs, on and off in turn (the order alternating between rounds), each process timed
from start to exit: wall clock, and its CPU time (user + system, from the operating system's
accounting of the finished child). The figure is the median over rounds of each pair's on ÷ off;
the medians of each side are shown beside it. A short run (``quick=true``: a few hundred
iterations, one round) is dominated by starting the process and says little about a default
run: it is printed as a figure, never judged.

Not here: the diagnostics themselves (``rnnlab.analysis.diagnostics``), the engine's rates
(``rnnlab.bench.engine``).
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

DIAG_TARGET_PCT = 3.0  # a default run's wall time with diagnostics over without
TASKS = ("charrnn", "adder")
CLOCKS = ("wall", "cpu")


def load_average() -> list[float] | None:
    """The machine's 1/5/15-minute load averages now (None where unknown)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def defaults(task: str, overrides=()) -> dict:
    """The run length and diagnostics cadence ``python -m rnnlab.run task=<task> <overrides>``
    composes."""
    from rnnlab.sweeps.compose import compose

    cfg = compose([f"task={task}", *overrides])
    return {"iterations": cfg.iterations, "diag_every": cfg.diag_every or cfg.eval_every}


def timed_process(command: list[str], cwd: Path, env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process and what it waited for) of one run of
    ``command``; RuntimeError with the end of its output when it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def process_figures(
    task: str,
    rounds: int,
    workdir: Path,
    overrides: list[str] | tuple[str, ...] = (),
    warm_up: bool = True,
) -> dict:
    """On vs off for whole ``python -m rnnlab.run task=<task> <overrides>`` processes in
    ``workdir/<task>``, interleaved (see the module); ``warm_up``: one untimed run first (else
    only the store is created first)."""
    folder = workdir / task
    folder.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    base = [sys.executable, "-m", "rnnlab.run", f"task={task}", f"tracking.uri={uri}", *overrides]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}

    def run(on: bool) -> tuple[float, float]:
        return timed_process([*base, f"diagnostics={str(on).lower()}"], folder, env)

    load_before = load_average()
    if warm_up:  # the store made and the kernels' cache loaded, as a second run finds them
        run(False)
    else:  # the store at least (its migrations are not part of a run)
        from rnnlab.tracking.store import open_store

        open_store(uri, create=True)
    samples: dict = {clock: {"on": [], "off": []} for clock in CLOCKS}
    for r in range(rounds):
        for on in (True, False) if r % 2 == 0 else (False, True):
            wall, cpu = run(on)
            side = "on" if on else "off"
            samples["wall"][side].append(wall)
            samples["cpu"][side].append(cpu)

    def summary(s: dict) -> dict:
        ratio = statistics.median(a / b for a, b in zip(s["on"], s["off"], strict=True))
        return {
            "on_seconds": statistics.median(s["on"]),
            "off_seconds": statistics.median(s["off"]),
            "ratio": ratio,
            "overhead_pct": 100.0 * (ratio - 1.0),
        }

    return {
        "task": task,
        "command": "python -m rnnlab.run " + " ".join([f"task={task}", *overrides]),
        "rounds": rounds,
        "overrides": list(overrides),
        **defaults(task, overrides),
        "load_average": {"before": load_before, "after": load_average()},
        **{clock: summary(samples[clock]) for clock in CLOCKS},
        "samples": samples,
    }


def all_figures(
    rounds: int,
    workdir: Path,
    iterations: int | None = None,
    corpus: Path | None = None,
    tasks=TASKS,
) -> dict[str, dict]:
    """{task: figures} for each of ``tasks``; ``iterations`` shortens the runs (a quick run: no
    untimed run first), ``corpus`` is the char-RNN's text (default: the kafka corpus)."""
    out = {}
    for task in tasks:
        overrides = [f"iterations={iterations}"] if iterations else []
        if corpus is not None and task == "charrnn":
            overrides.append(f"data.path={corpus}")
        out[task] = process_figures(task, rounds, workdir, overrides, warm_up=not iterations)
    return out


def print_diagnostics(figures: dict[str, dict], file=None) -> None:
    file = file or sys.stdout  # looked up per call: a test's capture swaps sys.stdout
    for task, d in figures.items():
        load = d["load_average"]["before"]
        shown = f", load {load[0]:.1f}" if load else ""
        iters = "iterations=" + str(d["iterations"]) if d["overrides"] else "default settings"
        print(
            f"diagnostics ({task}, {iters}, diag_every={d['diag_every']}, whole process, "
            f"{d['rounds']} round{'s' if d['rounds'] != 1 else ''}{shown}): wall on "
            f"{d['wall']['on_seconds']:.1f} s vs off {d['wall']['off_seconds']:.1f} s, "
            f"{d['wall']['overhead_pct']:+.1f}%; CPU {d['cpu']['on_seconds']:.1f} s vs "
            f"{d['cpu']['off_seconds']:.1f} s, {d['cpu']['overhead_pct']:+.1f}%",
            file=file,
        )
