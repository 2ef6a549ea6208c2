"""The diagnostics' cost, for ``python -m rnnlab.bench``: the default char-RNN run with
``diagnostics=true`` vs ``false``, interleaved, at ``iterations`` and at 1 iteration.

The 1-iteration pair is what a run pays once (the first and last diagnostics point, the
inspect page); the rest grows with the run. Wall time is the target; everything runs in the
training process, so its CPU time is shown beside it (on a loaded machine, the steadier one).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

DIAG_TARGET_PCT = 3.0  # issue 12: at default cadences
DEFAULT_ITERATIONS = 100_000


def diagnostics_figures(
    corpus_path: Path, iterations: int, rounds: int, workdir: Path, cell: str = "rnn"
) -> dict:
    """On vs off, interleaved, for the default run of ``cell``."""
    from rnnlab.config import Config, DataConfig, TrackingConfig
    from rnnlab.tracking import MemoryTracker
    from rnnlab.train import train

    def run(on: bool, n: int) -> None:
        cfg = Config(
            data=DataConfig(path=str(corpus_path)),
            tracking=TrackingConfig(enabled=False),
            iterations=n,
            diagnostics=on,
        )
        cfg.cell = cell
        train(cfg, MemoryTracker(), workdir / "out", show_progress=False)

    cases = [("on", iterations), ("off", iterations), ("on", 1), ("off", 1)]
    for on in (True, False):  # warm up imports and caches
        run(on, 20)
    clocks = ("wall", "cpu")
    t: dict = {clock: {c: [] for c in cases} for clock in clocks}
    for r in range(rounds):
        for case in cases[r % 4 :] + cases[: r % 4]:
            w, c = time.perf_counter(), time.process_time()
            run(case[0] == "on", case[1])
            w, c = time.perf_counter() - w, time.process_time() - c
            t["wall"][case].append(w)
            t["cpu"][case].append(c)

    def split(s: dict) -> dict:
        on, off = (
            statistics.median(s[("on", iterations)]),
            statistics.median(s[("off", iterations)]),
        )
        on1, off1 = statistics.median(s[("on", 1)]), statistics.median(s[("off", 1)])
        fixed = on1 - off1
        growing = (on - off - fixed) / off
        off_default = off1 + (off - off1) * DEFAULT_ITERATIONS / iterations
        return {
            "on_seconds": on,
            "off_seconds": off,
            "ratio": on / off,
            "fixed_seconds": fixed,
            "per_iteration_pct": 100.0 * growing,
            "default_run_ratio": 1.0 + fixed / off_default + growing,
        }

    return {
        "cell": cell,
        "iterations": iterations,
        "rounds": rounds,
        "default_iterations": DEFAULT_ITERATIONS,
        **{clock: split(t[clock]) for clock in clocks},
        "samples": {clock: {f"{m} {n}": v for (m, n), v in t[clock].items()} for clock in clocks},
    }


def print_diagnostics(d: dict, file=None) -> None:
    file = file or sys.stdout  # looked up per call: a test's capture swaps sys.stdout
    for clock in ("wall", "cpu"):
        c = d[clock]
        print(
            f"diagnostics ({clock}, {d.get('cell', 'rnn')}): {d['iterations']} iterations, "
            f"on {c['on_seconds']:.2f} s vs "
            f"off {c['off_seconds']:.2f} s: ratio {c['ratio']:.3f} = {c['fixed_seconds']:.2f} s "
            f"once per run + {c['per_iteration_pct']:+.1f}% growing; a "
            f"{d['default_iterations']:,}-iteration run: ratio {c['default_run_ratio']:.3f}",
            file=file,
        )
    verdict = "ok" if d["wall"]["default_run_ratio"] <= 1 + DIAG_TARGET_PCT / 100 else "MISSED"
    print(
        f"target diagnostics overhead ≤ {DIAG_TARGET_PCT:g}% (wall, default run): "
        f"{100 * (d['wall']['default_run_ratio'] - 1):+.1f}% {verdict}",
        file=file,
    )
