"""``python -m rnnlab.report [key=value ...]``: (re)generate the comparison report.

With no key, the latest sweep in the store. Writes ``report.html``, ``report.md``, the figures
and ``runs.csv`` into one folder and logs it to the sweep's parent run. Mistakes cost one line
on stderr and exit code 2.
"""

from __future__ import annotations

from rnnlab import cli
from rnnlab.errors import UserError
from rnnlab.tasks import default_objectives

COMMAND = cli.Command(
    name="rnnlab.report",
    summary="the comparison report of a sweep, an experiment or a filter of runs",
    keys=(
        cli.Key("sweep", "a sweep's parent run id, or latest (the default with no other key)"),
        cli.Key("experiment", "every run of an experiment (with sweep=latest: its latest sweep)"),
        cli.Key("filter", "an MLflow filter, e.g. \"params.hidden_size = '100'\"; ANDed"),
        cli.Key("tracking_uri", "the store ($MLFLOW_TRACKING_URI, else ./mlflow.db)"),
        cli.Key("out", "the report's folder (default: reports/<sweep name>)"),
        cli.Key(
            "samples_at", "iterations whose samples are shown beside the final one, e.g. 1000,5000"
        ),  # fmt: skip
        cli.Key("log", "log the report to the sweep's parent run", bool, True),
    ),
    examples=(
        "python -m rnnlab.report",
        "python -m rnnlab.report sweep=<parent run id> out=reports/lr",
        "python -m rnnlab.report experiment=charrnn filter=\"params.cell = 'lstm'\"",
    ),
    details=(
        "Runs rank by their objective: the final value of the metric each run's objective key "
        f"names ({default_objectives()} by default; an accuracy ranks highest first). To "
        "register a sweep's best run: python -m rnnlab.model register sweep=<id> name=<n>"
    ),
)


def samples_at(text: str) -> list[int]:
    """``"1000,5000"`` → [1000, 5000]; UserError for anything else."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(i < 1 for i in values):
        raise UserError(
            f"samples_at={text!r} is not allowed: comma-separated iterations ≥ 1, e.g. 1000,5000"
        )
    return values


def run(args: dict) -> str:
    """Write the report; the line to print."""
    from rnnlab.report.build import generate
    from rnnlab.tracking import store

    kwargs = {
        "uri": store.resolve_uri(args.get("tracking_uri")),
        "sweep": args.get("sweep") or None,
        "experiment": args.get("experiment") or None,
        "filter_string": args.get("filter", ""),
        "out": args.get("out") or None,
        "log_to_parent": args["log"],
    }
    if "samples_at" in args:
        kwargs["samples_at"] = samples_at(args["samples_at"])
    path, _ = generate(**kwargs)
    return f"rnnlab: report: {path}"


def main(argv: list[str] | None = None) -> None:
    cli.main(COMMAND, run, argv)


if __name__ == "__main__":
    main()
