"""The diagnostics' cost, for ``python -m rnnlab.bench``: each task's default run (the config
``python -m rnnlab.run task=<task>`` composes) with ``diagnostics=true`` vs ``false``,
interleaved, at ``iterations`` and at 1 iteration.

The 1-iteration pair is what a run pays once (the last diagnostics point, the inspect page);
the rest grows with the run. A default-length run's ratio is estimated from the two, as the
tracking overhead is, taking the growing part from the median of each round's on ÷ off. A
short run (CI's ``--quick``: 200 iterations, one round) is dominated by the fixed part, so its
own ratio says little about a default run: it is printed only beside the estimate. Both clocks
are shown: wall time is the target; everything runs in the training process, so its CPU time
is the steadier figure on a loaded machine. Every run of a case has the same config and seed
(the same data, the same work), cases rotate between rounds, figures are medians over rounds.

Last, the adder's floor (``floor_figures``): what its default run's diagnostics cost at the
least — the points of the metrics the issue names, recorded through MLflow alone, and the
probe window's forward/backward and the recurrent spectrum alone — as shares of the same runs
with diagnostics off.
"""

from __future__ import annotations

import itertools
import statistics
import sys
import time
from pathlib import Path

DIAG_TARGET_PCT = 3.0  # at default cadences
TASKS = ("charrnn", "adder")


def compose(task: str, overrides: list[str]):
    """The typed config ``python -m rnnlab.run task=<task> <overrides>`` would run."""
    from rnnlab.sweeps.compose import compose as compose_config

    return compose_config([f"task={task}", *overrides])


def diagnostics_figures(
    corpus_path: Path,
    iterations: int,
    rounds: int,
    workdir: Path,
    cell: str = "rnn",
    task: str = "charrnn",
    mlflow: bool = False,
) -> dict:
    """On vs off, interleaved, for the default run of ``task`` with ``cell``: ``train()`` with a
    MemoryTracker, or with ``mlflow`` the whole job on a fresh SQLite store (``run_job``, as
    ``python -m rnnlab.run`` records it: every diagnostics point goes through MLflow too)."""
    from rnnlab.tracking.job import JobContext, run_job
    from rnnlab.training.loop import train
    from rnnlab.training.tracker import MemoryTracker

    if mlflow:
        from rnnlab.tracking.store import ensure_experiment, open_store

        uri = f"sqlite:///{workdir / 'mlflow.db'}"
        ensure_experiment(open_store(uri, create=True), "rnnlab-bench")
        track = [f"tracking.uri={uri}", "experiment_name=rnnlab-bench"]
    else:
        track = ["tracking.enabled=false"]
    base = [f"cell={cell}", *track, f"data.path={corpus_path}"]
    default_iterations = compose(task, base).iterations
    jobs = itertools.count()
    cfgs = {
        (on, n): compose(task, [*base, f"iterations={n}", f"diagnostics={str(on).lower()}"])
        for on in (True, False)
        for n in (iterations, 1, 20)
    }

    def run(on: bool, n: int) -> None:
        if mlflow:
            ctx = JobContext(launch_dir=workdir, output_dir=workdir / f"job{next(jobs)}")
            run_job(cfgs[(on, n)], ctx, show_progress=False)
        else:
            train(cfgs[(on, n)], MemoryTracker(), workdir / "out", show_progress=False)

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
        on_runs, off_runs = s[("on", iterations)], s[("off", iterations)]
        on, off = statistics.median(on_runs), statistics.median(off_runs)
        # Each round's on ÷ off, the two runs minutes apart at most: the load the machine's
        # other users put on it drifts less within a round than across the whole bench.
        paired = statistics.median(a / b for a, b in zip(on_runs, off_runs, strict=True))
        on1, off1 = statistics.median(s[("on", 1)]), statistics.median(s[("off", 1)])
        fixed = on1 - off1
        growing = paired - 1.0 - fixed / off  # the part of the overhead that grows with the run
        off_default = off1 + (off - off1) * default_iterations / iterations
        return {
            "on_seconds": on,
            "off_seconds": off,
            "ratio": on / off,
            "paired_ratio": paired,
            "fixed_seconds": fixed,
            "per_iteration_pct": 100.0 * growing,
            "default_run_ratio": 1.0 + fixed / off_default + growing,
            "off_default_seconds": off_default,
        }

    return {
        "task": task,
        "cell": cell,
        "tracker": "mlflow" if mlflow else "memory",
        "iterations": iterations,
        "rounds": rounds,
        "default_iterations": default_iterations,
        "load_average": load_average(),
        **{clock: split(t[clock]) for clock in clocks},
        "samples": {clock: {f"{m} {n}": v for (m, n), v in t[clock].items()} for clock in clocks},
    }


# The per-point metrics a diagnostics point must record (a gated cell adds its per-gate saturation):
# everything else a point logs (``clip_frac/<param>``, ``grad_flow_last``, the gate blocks'
# spectra) is rnnlab's own addition.
ISSUE_METRICS = ("diag/grad_decay", "diag/clip_frac", "diag/whh_sigma_max", "diag/whh_rho",
                 "diag/saturation", "diag/saturation_warm")  # fmt: skip
ISSUE_PREFIXES = ("diag/grad_norm/", "diag/update_ratio/")


def issue_metrics(names) -> list[str]:
    """The names among ``names`` that the issue asks every diagnostics point for."""
    return [n for n in names if n in ISSUE_METRICS or n.startswith(ISSUE_PREFIXES)]


def floor_figures(corpus_path: Path, workdir: Path, off: dict, repeats: int = 3) -> dict:
    """What a default adder run's diagnostics cost at the least, whatever the code around them:
    (1) recording the points the issue asks for by name through MLflow alone — a fresh SQLite
    store, the same batches of ≤ 1000 that ``MlflowTracker`` sends, nothing computed — and
    (2) the probe alone, hot: the window's forward and backward (``diag_window`` steps at
    B = 1) and the recurrent spectrum, both of which the issue asks for. Each as a share of
    the default run's off time (``off``: the tracked and untracked figures'
    ``off_default_seconds``). Medians over ``repeats``."""
    from mlflow.entities import Metric

    from rnnlab.analysis import diagnostics
    from rnnlab.tracking.store import ensure_experiment, open_store
    from rnnlab.training.loop import Trainer
    from rnnlab.training.tracker import MemoryTracker

    cfg = compose("adder", ["tracking.enabled=false", f"data.path={corpus_path}"])
    trainer = Trainer(cfg)
    tracker = MemoryTracker()
    diag = diagnostics.start(cfg, trainer, tracker)
    diag.record(trainer, 0, 0.0)  # one point: the names a point logs
    names = issue_metrics(tracker.history)
    last = cfg.iterations
    points = sum(diag.due(i, last) for i in range(1, last + 1))  # the loop's: 1..iterations

    client = open_store(f"sqlite:///{workdir / 'floor.db'}", create=True)
    experiment = ensure_experiment(client, "rnnlab-bench-floor")
    record = []
    for _ in range(repeats):
        run_id = client.create_run(experiment).info.run_id
        now = int(time.time() * 1000)
        batch = [Metric(name, 0.5, now, step) for step in range(points) for name in names]
        started = time.perf_counter()
        for i in range(0, len(batch), 1000):
            client.log_batch(run_id, metrics=batch[i : i + 1000])
        record.append(time.perf_counter() - started)
        client.set_terminated(run_id)

    def probe() -> None:
        diagnostics.probe_metrics(trainer.params, diag.spec, diag.probe)

    probe()  # warm
    per_probe = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(20):
            probe()
        per_probe.append((time.perf_counter() - started) / 20)
    record_s = statistics.median(record)
    probe_s = statistics.median(per_probe) * points
    return {
        "task": "adder",
        "points": points,
        "window": cfg.diag_window,
        "issue_metrics": names,
        "record_seconds": record_s,
        "probe_seconds": probe_s,
        "record_pct": 100.0 * record_s / off["mlflow"],
        "probe_pct": 100.0 * probe_s / off["memory"],
        "floor_pct": 100.0 * (record_s + probe_s) / off["mlflow"],
        "load_average": load_average(),
    }


def load_average() -> list[float] | None:
    """The machine's 1/5/15-minute load averages when the figures were taken (None if unknown)."""
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return None


def all_figures(corpus_path: Path, iterations: int, rounds: int, workdir: Path) -> dict:
    """Every task's default run: {"diagnostics": char-RNN, "diagnostics_adder": adder}, and the
    adder's tracked by MLflow ("diagnostics_adder_mlflow"): its 100 points of ~21 metrics are
    3x the run's other metric points, and MLflow's store pays per point."""
    out = {
        key(task): diagnostics_figures(corpus_path, iterations, rounds, workdir, task=task)
        for task in TASKS
    }
    tracked = diagnostics_figures(
        corpus_path, iterations, rounds, workdir, task="adder", mlflow=True
    )
    off = {
        "memory": out[key("adder")]["wall"]["off_default_seconds"],
        "mlflow": tracked["wall"]["off_default_seconds"],
    }
    floor = floor_figures(corpus_path, workdir, off)
    return out | {key("adder", True): tracked, "diagnostics_adder_floor": floor}


def key(task: str, mlflow: bool = False) -> str:
    """The results key of a task's figures ("diagnostics" is the char-RNN's, as before)."""
    name = "diagnostics" if task == "charrnn" else f"diagnostics_{task}"
    return f"{name}_mlflow" if mlflow else name


def met(d: dict) -> bool:
    """The target: a default run's wall-clock ratio at most 1 + 3%."""
    return d["wall"]["default_run_ratio"] <= 1 + DIAG_TARGET_PCT / 100


def targets(results: dict) -> dict[str, bool]:
    """The bench's target entries for every task measured."""
    return {
        f"diagnostics overhead <= {DIAG_TARGET_PCT:g}% ({t}{', mlflow' if m else ''}, default run)":
        met(results[key(t, m)])
        for t in TASKS
        for m in (False, True)
        if key(t, m) in results
    }  # fmt: skip


def print_diagnostics(d: dict, file=None) -> None:
    file = file or sys.stdout  # looked up per call: a test's capture swaps sys.stdout
    task, cell = d.get("task", "charrnn"), d.get("cell", "rnn")
    if d.get("tracker") == "mlflow":
        cell += ", MLflow"
    load = d.get("load_average")
    shown = f", load {load[0]:.1f}" if load else ""
    for clock in ("wall", "cpu"):
        c = d[clock]
        print(
            f"diagnostics ({clock}, {task}, {cell}): a {d['default_iterations']:,}-iteration "
            f"(default) run: ratio {c['default_run_ratio']:.3f}, estimated from "
            f"{d['iterations']} iterations, on {c['on_seconds']:.2f} s vs off "
            f"{c['off_seconds']:.2f} s (medians: ratio {c['ratio']:.3f}; median of the rounds' "
            f"ratios {c['paired_ratio']:.3f} = {c['fixed_seconds']:.2f} s once per run + "
            f"{c['per_iteration_pct']:+.1f}% growing; {d['rounds']} "
            f"round{'s' if d['rounds'] != 1 else ''}{shown})",
            file=file,
        )
    verdict = "ok" if met(d) else "MISSED"
    print(
        f"target diagnostics overhead ≤ {DIAG_TARGET_PCT:g}% ({task}"
        f"{', MLflow' if d.get('tracker') == 'mlflow' else ''}, wall, default run): "
        f"{100 * (d['wall']['default_run_ratio'] - 1):+.1f}% {verdict}",
        file=file,
    )


def print_floor(f: dict, file=None) -> None:
    file = file or sys.stdout
    load = f.get("load_average")
    shown = f", load {load[0]:.1f}" if load else ""
    print(
        f"diagnostics floor (adder, default run, {f['points']} points of the "
        f"{len(f['issue_metrics'])} metrics the issue names): recording them through MLflow "
        f"alone {f['record_seconds']:.2f} s = +{f['record_pct']:.1f}% of the tracked off run; "
        f"the probe's {f['window']}-step forward/backward and spectrum alone "
        f"{f['probe_seconds']:.2f} s = "
        f"+{f['probe_pct']:.1f}% of the untracked one; together +{f['floor_pct']:.1f}% of a "
        f"tracked run before anything else is computed (target {DIAG_TARGET_PCT:g}%{shown})",
        file=file,
    )


def print_all(results: dict, file=None) -> None:
    for task in TASKS:
        for m in (False, True):
            if key(task, m) in results:
                print_diagnostics(results[key(task, m)], file)
    if "diagnostics_adder_floor" in results:
        print_floor(results["diagnostics_adder_floor"], file)
