"""memory_horizon: the README's every-cell table, read from the report's ``horizon.csv``.

    python experiments/memory_horizon/table.py [path/to/horizon.csv]

One row per task and cell, in the engine's cell order: the horizon (the largest T solved by 2 of
3 seeds), the largest T where 2 of 3 seeds beat the baseline, and per T the final metric (adding:
``val/mse``, copy: ``val/loss``), mean ± std over the seeds that did not diverge, with the seeds
that solved / ran and how many diverged. Prints markdown; ``tests/unit/test_docs.py`` checks that
the README holds exactly this output.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
CELLS = ("rnn", "gru", "lstm", "irnn", "indrnn", "mingru", "minlstm", "lru")  # rnn.CELL_NAMES
FORMAT = {"adding": "{:.4f}", "copy": "{:.3f}"}
METRIC = {"adding": "val/mse", "copy": "val/loss"}


def _T(value: float) -> str:
    return "none" if pd.isna(value) else f"{value:g}"


def _cell(row: pd.Series, fmt: str) -> str:
    mean, std = row["metric_mean"], row["metric_std"]
    value = "–" if pd.isna(mean) else fmt.format(mean)
    if not pd.isna(mean) and not pd.isna(std):
        value += f" ± {fmt.format(std)}"
    note = f"{row['solved']}/{row['runs']}"
    if row["diverged"]:
        note += f", {int(row['diverged'])} div."
    return f"{value} ({note})"


def table(csv: Path) -> str:
    rows = pd.read_csv(csv)
    Ts = sorted(rows["T"].unique())
    head = ["task", "cell", "horizon (solved 2/3)", "beats baseline up to",
            *[f"T={T}" for T in Ts]]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for task in ("adding", "copy"):
        mine = rows[rows["task"] == task]
        for cell in [c for c in CELLS if c in set(mine["group"])]:
            g = mine[mine["group"] == cell].set_index("T")
            first = g.iloc[0]
            cells = [_cell(g.loc[T], FORMAT[task]) if T in g.index else "" for T in Ts]
            cols = [task, cell, _T(first["horizon"]), _T(first["beats_baseline_up_to"]), *cells]
            lines.append("| " + " | ".join(cols) + " |")
    baseline = rows.groupby(["task", "T"])["baseline"].mean()
    for task in ("adding", "copy"):
        values = ", ".join(f"{baseline[(task, T)]:.4f}" for T in Ts if (task, T) in baseline)
        lines.append("")
        lines.append(f"{task} baseline ({METRIC[task]}) at T = {', '.join(map(str, Ts))}: {values}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "horizon.csv"))
