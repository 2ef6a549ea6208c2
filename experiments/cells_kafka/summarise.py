"""cells_kafka: the tables the README quotes, read from the MLflow store the two sweeps wrote.

    python experiments/cells_kafka/summarise.py [tracking_uri=<uri>]

- parameters per model (from ``rnn.param_shapes``, kafka's 62 symbols);
- per configuration, mean ± std over seeds: final and best ``val/bpc``, the iteration of the best,
  final ``train/smooth_loss``;
- the params study's ranking at every evaluation: the last iteration at which the ranking of the
  six configurations' mean ``val/bpc`` changed, and whether each seed ranks them the same way;
- the hidden-100 study's learning claim: ``train/smooth_loss`` at 10,000 iterations per seed, and
  from which iteration on each gated cell stays below the vanilla cell (same seed), plus
  ``h100_smooth_loss.png`` (mean over seeds, shaded min..max);
- the every-cell study (``run.sh every``): the same table and ranking for all eight cells,
  input-only gating (minGRU, minLSTM) against state-dependent gating (GRU, LSTM) seed by seed,
  and ``every/val_bpc.png``.

Writes ``summary.md`` and ``summary.csv`` beside this file (h100, params, b1) and
``every/summary.md``, ``every/summary.csv`` (every), each only for the studies its store holds, and
prints the markdown.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from rnnlab.engine import rnn
from rnnlab.tracking.store import open_store, resolve_uri

HERE = Path(__file__).resolve().parent
VOCAB = 62  # kafka.txt's symbols (the report's runs log the same)
EXPERIMENTS = {"h100": "cells_kafka_h100", "params": "cells_kafka", "b1": "cells_kafka_b1",
               "every": "cells_kafka_all"}  # fmt: skip
COLOURS = {
    "rnn": "tab:blue",
    "gru": "tab:green",
    "lstm": "tab:purple",
    "irnn": "tab:cyan",
    "indrnn": "tab:olive",
    "mingru": "tab:orange",
    "minlstm": "tab:red",
    "lru": "tab:brown",
}
GATING = (("mingru", "gru"), ("minlstm", "lstm"))  # input-only gates against state-dependent ones


def n_params(cell: str, layers: int, hidden: int) -> int:
    spec = rnn.Spec(cell, layers, hidden, "tanh", 0.0)
    shapes = rnn.param_shapes(VOCAB, hidden, VOCAB, spec)
    return int(sum(np.prod(s) for s in shapes.values()))


def pm(values, fmt: str = "{:.3f}") -> str:
    v = pd.Series(values, dtype=float).dropna()
    std = v.std(ddof=1) if len(v) > 1 else 0.0
    return f"{fmt.format(v.mean())} ± {fmt.format(std)}"


def history(client, run_id: str, key: str) -> pd.Series:
    points = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
    return pd.Series([v for _, v in points], index=[s for s, _ in points], name=key)


def load(client, name: str) -> list[dict]:
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'",
                              max_results=1000)  # fmt: skip
    out = []
    for r in runs:
        if r.data.tags.get("mlflow.parentRunId") is None:
            continue  # a sweep's parent
        p = r.data.params
        cell, layers, hidden = p["cell"], int(p["layers"]), int(p["hidden_size"])
        bpc = history(client, r.info.run_id, "val/bpc")
        out.append({
            "cell": cell, "layers": layers, "hidden_size": hidden, "seed": int(p["seed"]),
            "batch_size": int(p["batch_size"]), "iterations": int(p["iterations"]),
            "params": n_params(cell, layers, hidden),
            "final_val_bpc": bpc.iloc[-1], "best_val_bpc": bpc.min(),
            "best_at": int(bpc.idxmin()),
            "final_smooth_loss": r.data.metrics["final/smooth_loss"],
            "wall_time_s": r.data.metrics.get("final/wall_time_s", np.nan),
            "chars_per_sec": r.data.metrics.get("final/chars_per_sec", np.nan),
            "learning_rate": float(p["learning_rate"]),
            "bpc": bpc, "smooth": history(client, r.info.run_id, "train/smooth_loss"),
        })  # fmt: skip
    return sorted(out, key=lambda d: (d["layers"], list(COLOURS).index(d["cell"]), d["seed"]))


def config_table(runs: list[dict]) -> tuple[list[str], pd.DataFrame]:
    df = pd.DataFrame([{k: v for k, v in r.items() if k not in ("bpc", "smooth")} for r in runs])
    lines = ["| cell | layers | hidden | parameters | learning rate | seeds | final val/bpc | "
             "best val/bpc | best at (iteration) | final smooth loss | wall time, s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    keys = ["layers", "cell", "hidden_size", "learning_rate"]
    for (layers, cell, hidden, lr), g in df.groupby(keys, sort=False):
        lines.append(
            f"| {cell} | {layers} | {hidden} | {g['params'].iloc[0]:,} | {lr:g} | {len(g)} | "
            f"{pm(g['final_val_bpc'])} | {pm(g['best_val_bpc'])} | "
            f"{', '.join(f'{v:,}' for v in g['best_at'])} | "
            f"{pm(g['final_smooth_loss'], '{:.2f}')} | {pm(g['wall_time_s'], '{:.0f}')} |"
        )
    return lines, df


def ranking_lines(runs: list[dict]) -> list[str]:
    """When does the ranking of the configurations' mean val/bpc stop changing?"""
    names = sorted({(r["cell"], r["layers"]) for r in runs})
    curves = {n: pd.concat([r["bpc"] for r in runs if (r["cell"], r["layers"]) == n], axis=1)
              for n in names}  # fmt: skip
    steps = sorted(set.intersection(*(set(c.dropna().index) for c in curves.values())))
    label = lambda n: f"{n[0]}-{n[1]}"  # noqa: E731
    lines = []
    for what, view in (("val/bpc", lambda c: c), ("best-so-far val/bpc", lambda c: c.cummin())):
        order = {s: tuple(sorted(names, key=lambda n: view(curves[n]).loc[s].mean()))
                 for s in steps}  # fmt: skip
        changed = [s for s in steps if order[s] != order[steps[-1]]]
        lines += [
            f"- mean {what} ranking at {steps[-1]:,} iterations: "
            + " < ".join(map(label, order[steps[-1]]))
            + (f"; the last evaluation with a different ranking: {max(changed):,}"
               if changed else "; the same ranking at every evaluation"),
        ]  # fmt: skip
    final = tuple(sorted(names, key=lambda n: curves[n].iloc[-1].mean()))
    seeds = sorted({r["seed"] for r in runs})
    best = tuple(sorted(names, key=lambda n: curves[n].min().mean()))
    for seed in seeds:
        for what, key, ref in (("final", "final_val_bpc", final), ("best", "best_val_bpc", best)):
            by = {(r["cell"], r["layers"]): r[key] for r in runs if r["seed"] == seed}
            mine = tuple(sorted(by, key=by.get))
            lines.append(f"- seed {seed}, {what} val/bpc: " + " < ".join(map(label, mine))
                         + (" (the mean's order)" if mine == ref else " (differs)"))  # fmt: skip
    # run by run: does every run of a better configuration beat every run of the next one?
    for a, b in zip(final, final[1:], strict=False):
        worst_a = max(r["final_val_bpc"] for r in runs if (r["cell"], r["layers"]) == a)
        best_b = min(r["final_val_bpc"] for r in runs if (r["cell"], r["layers"]) == b)
        lines.append(f"- {label(a)} worst run {worst_a:.3f} vs {label(b)} best run {best_b:.3f}: "
                     + ("separated" if worst_a < best_b else "overlap"))  # fmt: skip
    return lines


def at_main_rate(runs: list[dict]) -> list[dict]:
    """Each configuration's runs at its learning rate with the most finished seeds (ties: the
    larger rate)."""
    keep = []
    for key in {(r["cell"], r["layers"]) for r in runs}:
        mine = [r for r in runs if (r["cell"], r["layers"]) == key]
        rates = {r["learning_rate"] for r in mine}
        best = max(rates, key=lambda lr: (sum(r["learning_rate"] == lr for r in mine), lr))
        keep += [r for r in mine if r["learning_rate"] == best]
    return sorted(keep, key=lambda d: (d["layers"], list(COLOURS).index(d["cell"]), d["seed"]))


def gating_lines(runs: list[dict]) -> list[str]:
    """Input-only gating (minGRU, minLSTM) against state-dependent gating (GRU, LSTM), seed by
    seed: best and final val/bpc and throughput."""
    lines = ["| seed | cell | best val/bpc | against | best val/bpc | difference | final: cell | "
             "against | chars/s: cell | against |",
             "|---:|---|---:|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for mine, theirs in GATING:
        for seed in sorted({r["seed"] for r in runs}):
            a = next((r for r in runs if r["cell"] == mine and r["seed"] == seed), None)
            b = next((r for r in runs if r["cell"] == theirs and r["seed"] == seed), None)
            if a is None or b is None:
                continue
            lines.append(
                f"| {seed} | {mine} | {a['best_val_bpc']:.3f} | {theirs} | "
                f"{b['best_val_bpc']:.3f} | {a['best_val_bpc'] - b['best_val_bpc']:+.3f} | "
                f"{a['final_val_bpc']:.3f} | {b['final_val_bpc']:.3f} | "
                f"{a['chars_per_sec']:,.0f} | {b['chars_per_sec']:,.0f} |"
            )
    return lines


def claim_lines(runs: list[dict]) -> list[str]:
    """Smooth loss at the end and from which iteration each gated cell stays below vanilla."""
    lines = [
        "| seed | rnn smooth loss | gru | lstm | gru below rnn from | lstm below rnn from |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for seed in sorted({r["seed"] for r in runs}):
        s = {r["cell"]: r["smooth"] for r in runs if r["seed"] == seed and r["layers"] == 1}
        if not all(c in s for c in COLOURS):
            continue
        cross = {}
        for cell in ("gru", "lstm"):
            diff = (s[cell] - s["rnn"]).dropna()
            above = diff.index[diff.to_numpy() >= 0]
            if diff.iloc[-1] >= 0:
                cross[cell] = "never"
            else:
                later = diff.index[diff.index > above.max()] if len(above) else diff.index
                cross[cell] = f"{later.min():,}"
        lines.append(f"| {seed} | {s['rnn'].iloc[-1]:.2f} | {s['gru'].iloc[-1]:.2f} | "
                     f"{s['lstm'].iloc[-1]:.2f} | {cross['gru']} | {cross['lstm']} |")  # fmt: skip
    return lines


def figure(runs: list[dict], out: Path) -> None:
    fig = Figure(figsize=(7.5, 4.0), dpi=100)
    ax = fig.add_subplot()
    for cell, colour in COLOURS.items():
        curves = pd.concat([r["smooth"] for r in runs if r["cell"] == cell], axis=1)
        if curves.empty:
            continue
        ax.plot(curves.index, curves.mean(axis=1), color=colour,
                label=f"{cell} (mean of {curves.shape[1]} seeds)")  # fmt: skip
        ax.fill_between(curves.index, curves.min(axis=1), curves.max(axis=1), color=colour,
                        alpha=0.2, linewidth=0)  # fmt: skip
    ax.set(xlabel="iteration", ylabel="train/smooth_loss (nats per 25 chars)", ylim=(35, 110),
           title="Kafka, hidden 100, B = 1, seed settings (band: min..max of 3 seeds)")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)


def bpc_figure(runs: list[dict], title: str, out: Path) -> None:
    """Mean val/bpc over seeds per configuration (solid: 1 layer, dashed: 2)."""
    fig = Figure(figsize=(7.5, 4.5 if len({r["cell"] for r in runs}) > 3 else 4.0), dpi=100)
    ax = fig.add_subplot()
    for layers, style in ((1, "-"), (2, "--")):
        for cell, colour in COLOURS.items():
            mine = [r["bpc"] for r in runs if r["cell"] == cell and r["layers"] == layers]
            if mine:
                curves = pd.concat(mine, axis=1)
                ax.plot(curves.index, curves.mean(axis=1), style, color=colour,
                        label=f"{cell}, {layers} layer{'s' * (layers > 1)}")  # fmt: skip
    ax.set(xlabel="iteration", ylabel="val/bpc (mean of seeds)", title=title)
    lo = min(r["best_val_bpc"] for r in runs)
    ax.set_ylim(lo - 0.05, lo + 1.5)
    ax.grid(alpha=0.3)
    ax.legend(ncol=2)
    fig.tight_layout()
    fig.savefig(out)


def main(argv: list[str]) -> None:
    args = dict(a.partition("=")[::2] for a in argv)
    client = open_store(resolve_uri(args.get("tracking_uri") or None))
    md, frames = ["# cells_kafka: summary (written by summarise.py)", ""], []
    for study, name in EXPERIMENTS.items():
        runs = load(client, name)
        if not runs:
            continue
        table, df = config_table(runs)
        if study == "every":  # a folder of its own, beside its report
            main_runs = at_main_rate(runs)
            every = ["# cells_kafka, every cell: summary (written by summarise.py)", "",
                     f"Experiment `{name}`, {len(runs)} finished runs (a sweep's failed runs are "
                     "in its report).", "", *table, "",
                     "Ranking (each cell at its learning rate with the most finished seeds):", "",
                     *ranking_lines(main_runs), "", "Input-only against state-dependent gating:",
                     "", *gating_lines(main_runs), ""]  # fmt: skip
            (HERE / "every").mkdir(exist_ok=True)
            bpc_figure(main_runs, "Kafka, every cell, ~36.7k parameters, B = 32: val/bpc",
                       HERE / "every" / "val_bpc.png")  # fmt: skip
            df.assign(study=study).to_csv(HERE / "every" / "summary.csv", index=False,
                                          float_format="%.5g")  # fmt: skip
            (HERE / "every" / "summary.md").write_text("\n".join(every) + "\n")
            print("\n".join(every))
            continue
        frames.append(df.assign(study=study))
        md += [f"## {study} (experiment `{name}`, {len(runs)} runs)", "", *table, ""]
        if study in ("params", "b1"):
            md += ["Ranking:", "", *ranking_lines(runs), ""]
            bpc_figure(runs, f"Kafka, ~36.7k parameters, B = {runs[0]['batch_size']}: val/bpc",
                       HERE / f"{study}_val_bpc.png")  # fmt: skip
        else:
            md += ["Learning claim (smooth loss at the last iteration; 'below from' = the first",
                   "logged iteration after the last one where the gated cell was not below):", "",
                   *claim_lines(runs), ""]  # fmt: skip
            figure(runs, HERE / "h100_smooth_loss.png")
    if frames:
        pd.concat(frames).to_csv(HERE / "summary.csv", index=False, float_format="%.5g")
        (HERE / "summary.md").write_text("\n".join(md) + "\n")
        print("\n".join(md))


if __name__ == "__main__":
    main(sys.argv[1:])
