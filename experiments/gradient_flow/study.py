"""How far back does each cell carry gradient, and does training change it?

    python experiments/gradient_flow/study.py [--iterations 10000] [--seeds 0 1 2] [--window 150]
        [--cells gru lstm]     # only these cells; the others' rows are kept from the files

For each cell the engine has (the vanilla cell with tanh and with sigmoid, GRU, LSTM) and seed:
‖∂L_T/∂h_{T-d}‖ on the fixed probe window (the first ``window`` held-out characters of kafka,
from h = 0) at initialisation and after training with the char-RNN defaults, through
``rnnlab.analysis.diagnostics`` — the same numbers a run logs. Writes curves.csv, summary.csv,
grad_flow.png and prints the summary table (README.md holds the conclusions).
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from rnnlab.analysis import diagnostics
from rnnlab.config import Config, DataConfig, TrackingConfig
from rnnlab.tasks.corpus import resolve
from rnnlab.training.loop import Trainer, train
from rnnlab.training.tracker import MemoryTracker

HERE = Path(__file__).resolve().parent
CELLS = {  # study name -> (cfg.cell, cfg.task.activation; the gated cells use σ and tanh)
    "vanilla tanh": ("rnn", "tanh"),
    "vanilla sigmoid": ("rnn", "sigmoid"),
    "gru": ("gru", "tanh"),
    "lstm": ("lstm", "tanh"),
}
COLOURS = {"vanilla tanh": "tab:blue", "vanilla sigmoid": "tab:orange", "gru": "tab:green",
           "lstm": "tab:purple"}  # fmt: skip


def config(cell: str, seed: int, iterations: int, window: int) -> Config:
    cfg = Config(
        data=DataConfig(path=str(resolve("kafka"))), tracking=TrackingConfig(enabled=False)
    )
    cfg.cell, cfg.task.activation = CELLS[cell]
    cfg.seed, cfg.iterations, cfg.diag_window = seed, iterations, window
    cfg.diag_every = iterations  # the trained curve: one diagnostics point, at the end
    cfg.eval_every = iterations  # only the final val/loss is reported
    cfg.sample_every = cfg.checkpoint_every = iterations
    return cfg


def horizon(curve: np.ndarray, drop: float = 1e-3) -> int:
    """The first distance d at which the gradient is below ``drop`` × its value at d = 1
    (len + 1 when it never is): how far back a loss still reaches."""
    below = np.flatnonzero(curve < drop * curve[0])
    return int(below[0]) + 1 if below.size else curve.size + 1


def measure(cell: str, seed: int, iterations: int, window: int, out: Path) -> list[dict]:
    cfg = config(cell, seed, iterations, window)
    rows = []
    trainer = Trainer(cfg)  # the same init train() starts from (same seed streams)
    probe = diagnostics.PROBES["charrnn"](trainer.task, window)
    spec = diagnostics.EngineSpec(trainer.task.activation, "xent", cfg.cell)
    metrics, curves = diagnostics.heavy_metrics(trainer.params, spec, probe)
    curve = curves[0]  # one layer
    rows.append({"stage": "init", "iteration": 0, "metrics": metrics, "curve": curve})
    tracker = MemoryTracker()
    final = train(cfg, tracker, out / f"{cell.replace(' ', '_')}_{seed}", show_progress=False)
    text = tracker.texts[f"diagnostics/grad_flow_iter_{iterations:07d}.csv"]
    trained = np.array([float(r["grad_norm"]) for r in csv.DictReader(text.splitlines())])
    m = {k: v[-1][1] for k, v in tracker.history.items() if k.startswith("diag/")}
    m["val/loss"] = final["final/val_loss"]
    rows.append({"stage": "trained", "iteration": iterations, "metrics": m, "curve": trained})
    return rows


def plot(out: Path, iterations: int) -> None:
    """grad_flow.png from curves.csv: the whole window (log scale), and the first 40 steps
    normalised by d = 1 with the 1e-3 line the horizon is read at."""
    curves: dict[tuple[str, str, str], list[float]] = {}
    with open(out / "curves.csv") as f:
        for r in csv.DictReader(f):
            curves.setdefault((r["cell"], r["seed"], r["stage"]), []).append(float(r["grad_norm"]))
    fig = Figure(figsize=(11, 4.2))
    whole, near = fig.subplots(1, 2)
    seen = set()
    for (cell, _, stage), g in curves.items():
        g = np.array(g)
        d = np.arange(1, g.size + 1)
        style = {
            "color": COLOURS[cell],
            "linestyle": ":" if stage == "init" else "-",
            "lw": 1.3,
            "alpha": 0.8,
            "label": None if (cell, stage) in seen else f"{cell}, {stage}",
        }
        seen.add((cell, stage))
        whole.plot(d[g > 0], g[g > 0], **style)
        near.plot(d[:40], g[:40] / g[0], **style | {"label": None})
    whole.set_ylabel("‖∂L_T / ∂h_(T−d)‖")
    near.set_ylabel("relative to d = 1")
    near.axhline(1e-3, color="0.4", lw=0.8)
    for ax, title in ((whole, "the whole probe window"), (near, "the first 40 steps")):
        ax.set_yscale("log")
        ax.set_xlabel("steps back from the loss, d")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    whole.legend(fontsize=8)
    fig.suptitle(
        f"kafka probe window, seeds as lines; trained: {iterations:,} iterations", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(out / "grad_flow.png", dpi=90)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--iterations", type=int, default=10_000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--window", type=int, default=150)
    p.add_argument("--out", type=Path, default=HERE)
    p.add_argument("--cells", nargs="+", choices=list(CELLS), default=list(CELLS))
    p.add_argument("--replot", action="store_true", help="only redraw from curves.csv")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        plot(args.out, args.iterations)
        return
    started = time.perf_counter()
    results = []  # (cell, seed, row)
    for cell in args.cells:
        for seed in args.seeds:
            for row in measure(cell, seed, args.iterations, args.window, Path("/tmp/gf-study")):
                results.append((cell, seed, row))
                print(f"{cell:16} seed {seed} {row['stage']:8} grad_decay "
                      f"{row['metrics']['diag/grad_decay']:+.4f}", flush=True)  # fmt: skip

    kept_curves, kept_summary = [], []  # the other cells' rows, from an earlier run
    if set(args.cells) != set(CELLS) and (args.out / "summary.csv").exists():
        with open(args.out / "curves.csv") as f:
            kept_curves = [r for r in csv.DictReader(f) if r["cell"] not in args.cells]
        with open(args.out / "summary.csv") as f:
            kept_summary = [r for r in csv.DictReader(f) if r["cell"] not in args.cells]
    with open(args.out / "curves.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["cell", "seed", "stage", "iteration", "steps_back", "grad_norm"])
        for r in kept_curves:
            w.writerow(r.values())
        for cell, seed, row in results:
            for d, g in enumerate(row["curve"], start=1):
                w.writerow([cell, seed, row["stage"], row["iteration"], d, f"{g:.9g}"])

    summary = []
    for cell in args.cells:
        for stage in ("init", "trained"):
            rs = [r for c, _, r in results if c == cell and r["stage"] == stage]

            def ms(values, fmt=".4f"):
                if len(values) == 1:
                    return f"{values[0]:{fmt}}"
                return f"{statistics.mean(values):{fmt}} ± {statistics.stdev(values):{fmt}}"

            def get(key, rs=rs):
                return [r["metrics"].get(key, math.nan) for r in rs]

            summary.append({
                "cell": cell, "stage": stage, "seeds": len(rs),
                "grad_decay": ms(get("diag/grad_decay")),
                "horizon_1e-3": ms([float(horizon(r["curve"])) for r in rs], ".1f"),
                "norm_d1": ms([float(r["curve"][0]) for r in rs], ".3g"),
                "norm_dmax": ms([float(r["curve"][-1]) for r in rs], ".3g"),
                "whh_rho": ms(get("diag/whh_rho"), ".3f"),
                "saturation": ms(get("diag/saturation"), ".3f"),
                "gate_saturation": ", ".join(
                    f"{g} {statistics.mean(get(f'diag/saturation/{g}')):.2f}"
                    for g, _ in diagnostics.CELLS[CELLS[cell][0]].gates
                ),
                "val_loss": ms(get("val/loss"), ".3f") if stage == "trained" else "",
            })  # fmt: skip
    order, fields = list(CELLS), list(summary[0])  # this run's columns (older rows: blanks)
    summary = sorted(kept_summary + summary, key=lambda r: order.index(r["cell"]))
    summary = [{k: r.get(k, "") for k in fields} for r in summary]
    with open(args.out / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(summary)
    print("| " + " | ".join(summary[0]) + " |")
    print("|" + "---|" * len(summary[0]))
    for s in summary:
        print("| " + " | ".join(str(v) for v in s.values()) + " |")

    plot(args.out, args.iterations)
    print(f"done in {time.perf_counter() - started:.0f} s; command: python "
          f"experiments/gradient_flow/study.py {' '.join(sys.argv[1:])}")  # fmt: skip


if __name__ == "__main__":
    main()
