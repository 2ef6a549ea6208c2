"""CPU per training window of the main job's settings, in-process, for two checkouts side by side:
what the main job's training steps and evaluations cost, without its start-up.

    python experiments/main_job_speed/window_cpu.py before=/path/to/checkout [after=DIR]
        [iterations=5000] [blocks=5]

Each block is a fresh process per checkout (the order alternating, so a neighbour's load hits
both alike; BLAS, OpenMP and numba pinned to one thread): ``train()`` of the default config
(min-char-rnn on kafka, B = 1 float64, evaluations, samples, diagnostics, checkpoints as the
main job has them every 1,000 / 10,000 iterations) with a ``MemoryTracker``, after a short
untimed run that loads the kernels: the CPU time (``time.process_time``) of a run of 1,000 +
``iterations`` iterations less that of a run of 1,000, over ``iterations`` — the windows with their
share of the evaluations and samples, without what every run pays once (building the task, the
last evaluation, the run's page).
Prints each block's µs per window, the medians and the load averages before and after.
Nothing is written; no test asserts a timing.

Not here: the whole process, start-up included (``run.py`` beside this file).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from rnnlab import cli  # noqa: E402
from rnnlab.errors import UserError  # noqa: E402

PINNED = {k: "1" for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                           "NUMBA_NUM_THREADS")}  # fmt: skip
CHILD = """
import sys, time
from rnnlab.sweeps.compose import compose
from rnnlab.training.loop import train
from rnnlab.training.tracker import MemoryTracker
base = [f"data.path={sys.argv[1]}", "tracking.enabled=false"]
train(compose(base + ["iterations=100"]), MemoryTracker(), show_progress=False)
for n in (int(sys.argv[2]), int(sys.argv[3])):
    started = time.process_time()
    train(compose(base + [f"iterations={n}"]), MemoryTracker(), show_progress=False)
    print(time.process_time() - started)
"""
SHORT = 1000  # the short run: what a run costs besides its windows is in both

COMMAND = cli.Command(
    name="experiments/main_job_speed/window_cpu.py",
    summary="CPU µs per training window of the main job's settings, two checkouts interleaved",
    keys=(
        cli.Key("before", "the checkout timed as 'before'", str, cli.REQUIRED),
        cli.Key("after", "the checkout timed as 'after'", str, str(REPO)),
        cli.Key(
            "iterations",
            "iterations timed per block (a multiple of 1,000)",
            int,
            5000,
            minimum=1000,
        ),  # fmt: skip
        cli.Key("blocks", "blocks per checkout, order alternating", int, 5, minimum=1),
        cli.Key("data", "the corpus", str, str(REPO / "data" / "kafka.txt")),
    ),
    examples=("python experiments/main_job_speed/window_cpu.py before=/work/main",),
)


def block(checkout: str, data: str, iterations: int) -> float:
    """µs of CPU per window: (run of SHORT + iterations) − (run of SHORT), over iterations."""
    env = {**os.environ, **PINNED, "PYTHONPATH": checkout}
    argv = [sys.executable, "-c", CHILD, data, str(SHORT), str(SHORT + iterations)]
    out = subprocess.run(argv, cwd=checkout, env=env, capture_output=True, text=True,
                         check=True).stdout.split()  # fmt: skip
    return (float(out[-1]) - float(out[-2])) / iterations * 1e6


def run(args: dict) -> str:
    trees = {"before": str(Path(args["before"]).resolve()), "after": str(Path(args["after"]))}
    data = str(Path(args["data"]).resolve())
    if not Path(data).is_file():
        raise UserError(f"data={data}: no such file")
    lines = [f"load before: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}"]
    times: dict[str, list[float]] = {k: [] for k in trees}
    for b in range(args["blocks"]):
        for name in list(trees) if b % 2 == 0 else list(reversed(trees)):
            times[name].append(block(trees[name], data, args["iterations"]))
            lines.append(f"block {b + 1} {name}: {times[name][-1]:.1f} µs/window")
    lines.append(f"load after: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")
    med = {k: statistics.median(v) for k, v in times.items()}
    lines += [f"median {k}: {v:.1f} µs/window" for k, v in med.items()]
    lines.append(f"before / after: {med['before'] / med['after']:.2f}×")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    cli.main(COMMAND, run, argv)


if __name__ == "__main__":
    main()
