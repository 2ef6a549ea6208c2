"""``python -m rnnlab.model register|export``: a sweep's best run into the model registry, or
a run's weights out as a PyTorch state dict (the same as ``python -m rnnlab.export``).

Every char-RNN run already is an MLflow model (``runs:/<run_id>/model``, see
``rnnlab.tracking.pyfunc``); ``register`` makes the sweep's best one (the leaderboard's first,
with a logged model) a version of a registered model, once. Mistakes cost one line on stderr
and exit code 2.
"""

from __future__ import annotations

from rnnlab import cli
from rnnlab.errors import UserError
from rnnlab.tasks import default_objectives
from rnnlab.tracking.names import check_model_name

# Models logged before rnnlab's layers load their class from here (their model_code.py says
# ``from rnnlab.model import CharRNNModel``) when this rnnlab is the one imported.
from rnnlab.tracking.pyfunc import CharRNNModel  # noqa: F401

REGISTER = cli.Command(
    name="rnnlab.model register",
    summary="register a sweep's best run (with a logged model) as a version of a model",
    keys=(
        cli.Key("sweep", "the sweep's parent run id", default=cli.REQUIRED),
        cli.Key("name", "the registered model's name, e.g. kafka-charrnn", default=cli.REQUIRED),
        cli.Key("tracking_uri", "the store ($MLFLOW_TRACKING_URI, else ./mlflow.db)"),
    ),
)
COMMAND = cli.Command(
    name="rnnlab.model",
    summary="a sweep's best run into the model registry, or a run's weights for PyTorch",
    verbs={"register": REGISTER},
    aliases={"export": "rnnlab.export"},
    examples=(
        "python -m rnnlab.model register sweep=<parent_run_id> name=kafka-charrnn",
        "python -m rnnlab.model export run_id=<id> out=kafka_lstm.npz",
    ),
    details=(
        "register picks the leaderboard's first run: the lowest final objective, the metric each "
        f"run's objective key names ({default_objectives()} by default; an accuracy ranks "
        "highest first)."
    ),
)


def register(args: dict) -> str:
    """Register the sweep's best run; the line to print."""
    from rnnlab.sweeps.leaderboard import objective_phrase
    from rnnlab.sweeps.registry import register_best

    try:
        check_model_name(args["name"])  # before the store is opened
    except ValueError as e:
        raise UserError(str(e)) from None
    version, best, new = register_best(args["sweep"], args["name"], args.get("tracking_uri"))
    what = "registered" if new else "already registered:"
    return (
        f"{what} {version.name} version {version.version}: run {best.info.run_id} "
        f"({objective_phrase(best)})"  # as the leaderboard names it
    )


def run(args: dict) -> str:
    args.pop("verb")  # register: the one verb of its own
    return register(args)


def main(argv: list[str] | None = None) -> None:
    cli.main(COMMAND, run, argv)


if __name__ == "__main__":
    main()
