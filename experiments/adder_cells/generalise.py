"""adder_cells: per cell, iters_to_100 (mean ± std over seeds) and the exact accuracy of every
run's final weights on 8-, 16- and 32-bit sums (trained at 8), read from the MLflow store.

    python experiments/adder_cells/generalise.py experiment=adder_cells [tracking_uri=<uri>]

Writes ``results.md`` and ``results.csv`` beside this file and prints the table.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from rnnlab.sample import load_weights
from rnnlab.tasks.adder import AdderTask
from rnnlab.tracking.store import default_uri, fetch_checkpoint, open_store

BITS = (8, 16, 32)
HERE = Path(__file__).resolve().parent


def mean_std(values: pd.Series, fmt: str = "{:.3f}") -> str:
    v = values.dropna()
    if v.empty:
        return "—"
    return f"{fmt.format(v.mean())} ± {fmt.format(v.std(ddof=1) if len(v) > 1 else 0.0)}"


def main(argv: list[str]) -> None:
    args = dict(a.partition("=")[::2] for a in argv)
    client = open_store(default_uri(args.get("tracking_uri") or None))
    exp = client.get_experiment_by_name(args.get("experiment", "adder_cells"))
    runs = client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'",
                              max_results=1000)  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs:
            if run.data.tags.get("mlflow.parentRunId") is None:
                continue  # a sweep's parent
            w = load_weights(fetch_checkpoint(client, run, Path(tmp) / run.info.run_id))
            task = AdderTask(w.cfg, np.random.default_rng(0))
            row = {"cell": w.cfg.cell, "seed": w.cfg.seed, "iterations": w.iteration,
                   "eval_every": w.cfg.eval_every,
                   "iters_to_100": run.data.metrics.get("iters_to_100", np.nan)}  # fmt: skip
            for bits in BITS:
                a, b = task._eval_pairs(w.cfg.task.eval_max_pairs, bits)
                row[f"exact_{bits}"] = task.accuracy(w.params, bits, a, b)["val/exact_acc"]
            rows.append(row)
    df = pd.DataFrame(rows).sort_values(["cell", "seed"])
    df.to_csv(HERE / "results.csv", index=False)
    lines = ["| cell | runs | reached 100 % (8 bits) | iters_to_100 | exact 8 bits | "
             "exact 16 bits | exact 32 bits |", "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for cell, g in df.groupby("cell", sort=False):
        reached = int(g["iters_to_100"].notna().sum())
        lines.append(
            f"| {cell} | {len(g)} | {reached} of {len(g)} | "
            f"{mean_std(g['iters_to_100'], '{:,.0f}')} | {mean_std(g['exact_8'])} | "
            f"{mean_std(g['exact_16'])} | {mean_std(g['exact_32'])} |"
        )
    per_run = "\n".join(
        ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
        + ["| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in r) + " |"
           for r in df.itertuples(index=False)]
    )  # fmt: skip
    text = "\n".join(lines) + "\n"
    (HERE / "results.md").write_text(text + "\nPer run:\n\n" + per_run + "\n")
    print(text)
    print(df.to_string(index=False))


if __name__ == "__main__":
    main(sys.argv[1:])
