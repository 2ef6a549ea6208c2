"""``python -m rnnlab.report [key=value ...]``: (re)generate the comparison report.

Keys (all optional; with none, the latest sweep in the store):
  sweep=<parent run id>|latest   the runs of one sweep
  experiment=<name>              every run of an experiment (with sweep=latest: its latest sweep)
  filter="<mlflow filter>"       e.g. filter="params.hidden_size = '100'"; ANDed with a sweep
  tracking_uri=<uri>             default: $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db
  out=<folder>                   default: reports/<sweep name>
  samples_at=1000,5000           iterations whose samples are shown beside the final one
  log=true|false                 log the report to the sweep's parent run (default true)
  register=<model name>          then register the sweep's best char-RNN run (lowest
                                 final/val_loss, with a logged model) as a new version of
                                 this model in the MLflow model registry of the same store
A bad argument, or a sweep with nothing to register, costs one line on stderr and exit code 2.
"""

from __future__ import annotations

import sys

from rnnlab import quiet
from rnnlab.report.build import generate
from rnnlab.report.select import SelectionError, default_tracking_uri
from rnnlab.tracking.names import check_model_name

KEYS = ("sweep", "experiment", "filter", "tracking_uri", "out", "samples_at", "log", "register")


class UsageError(ValueError):
    """A command-line mistake, described in one line."""


def parse(args: list[str]) -> dict:
    """``["sweep=abc", "samples_at=1000,5000"]`` → keyword arguments of ``generate`` (plus
    ``register``: a model name or None)."""
    raw: dict[str, str] = {}
    for arg in args:
        key, eq, value = arg.partition("=")
        if not eq:
            raise UsageError(f"{arg!r} is not key=value (keys: {', '.join(KEYS)})")
        if key not in KEYS:
            raise UsageError(f"{key} is not a report option; one of {', '.join(KEYS)}")
        raw[key] = value
    kwargs: dict = {
        "uri": raw.get("tracking_uri") or default_tracking_uri(),
        "sweep": raw.get("sweep") or None,
        "experiment": raw.get("experiment") or None,
        "filter_string": raw.get("filter", ""),
        "out": raw.get("out") or None,
    }
    if "samples_at" in raw:
        try:
            kwargs["samples_at"] = [int(v) for v in raw["samples_at"].split(",") if v.strip()]
        except ValueError:
            raise UsageError(
                f"samples_at={raw['samples_at']!r} is not allowed: comma-separated iterations"
            ) from None
        if any(i < 1 for i in kwargs["samples_at"]):
            raise UsageError(f"samples_at={raw['samples_at']!r} is not allowed: iterations ≥ 1")
    if "log" in raw:
        if raw["log"].lower() not in ("true", "false"):
            raise UsageError(f"log={raw['log']!r} is not allowed: true or false")
        kwargs["log_to_parent"] = raw["log"].lower() == "true"
    kwargs["register"] = raw.get("register") or None
    if "register" in raw and not kwargs["register"]:
        raise UsageError("register= needs a model name, e.g. register=kafka-charrnn")
    if kwargs["register"]:
        try:
            check_model_name(kwargs["register"])
        except ValueError as e:
            raise UsageError(str(e).replace("name=", "register=", 1)) from None
    if kwargs["register"] and not kwargs["sweep"] and (kwargs["experiment"] or raw.get("filter")):
        raise UsageError("register= registers a sweep's best run: select a sweep (sweep=<id>)")
    return kwargs


def register(parent_run_id: str, name: str, uri: str) -> str:
    """Register the sweep's best run; the one line to print."""
    from mlflow.exceptions import MlflowException

    from rnnlab.model import RegistryError, register_best

    try:
        v = register_best(parent_run_id, name, uri)
    except MlflowException as e:
        raise RegistryError(f"MLflow: {str(e).splitlines()[0]}") from None
    run_id = v.tags.get("rnnlab.run_id", v.run_id)
    return f"rnnlab: registered {v.name} version {v.version}: run {run_id}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if argv is None:  # the command line, not a test calling main()
        quiet.survive_closed_output()
        quiet.quiet_third_party(quiet.verbose_requested([]))
    if any(a in ("-h", "--help", "help") for a in args):
        print(__doc__)
        return 0
    try:
        kwargs = parse(args)
        name = kwargs.pop("register")
        path, sel = generate(**kwargs)
    except (UsageError, SelectionError) as e:
        print(f"rnnlab.report: error: {e}", file=sys.stderr)
        return 2
    print(f"rnnlab: report: {path}")
    if name is None:
        return 0
    from rnnlab.model import RegistryError  # mlflow.pyfunc: only when registering

    try:
        if sel.parent is None:
            raise RegistryError("register= needs a sweep; the selection is not one")
        print(register(sel.parent.info.run_id, name, kwargs["uri"]))
    except RegistryError as e:
        print(f"rnnlab.report: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
