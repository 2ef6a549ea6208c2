"""Registering a sweep's best run in the MLflow model registry: ``python -m rnnlab.model register``.

The best run is the sweep's child the leaderboard ranks first (``rnnlab.sweeps.leaderboard``:
the lowest final objective among FINISHED children that a search did not prune) among those
with a logged model. Registering is idempotent: a model that already holds that run as a
version gets no second version of it.

Not here: the logged model itself (``rnnlab.tracking.pyfunc``).
"""

from __future__ import annotations

from rnnlab.errors import UserError
from rnnlab.sweeps.leaderboard import best_child, objective_of
from rnnlab.tasks import judged_run
from rnnlab.tracking import store


def best_model_child(client, parent_run_id: str):
    """The sweep's best child with a logged model (``leaderboard.best_child``'s rule);
    UserError when it has none."""
    parent_run_id = store.get_run(client, parent_run_id).info.run_id
    children = store.list_children(client, parent_run_id)
    with_model = [r for r in children if "rnnlab.model_uri" in r.data.tags]
    best = best_child(with_model)
    if best is None:
        finished = sum(r.info.status == "FINISHED" for r in children)
        raise UserError(
            f"run {parent_run_id} has no FINISHED child run with a logged model "
            f"({finished} finished children, {len(with_model)} with a model)"
        )
    return best


def register_best(parent_run_id: str, name: str, tracking_uri: str | None = None):
    """Register the best child run of sweep ``parent_run_id`` as a version of model ``name``;
    returns (ModelVersion, that run, True when the version was created now, False when the
    model already held that run)."""
    import mlflow

    uri = store.resolve_uri(tracking_uri)
    client = store.open_store(uri)
    best = best_model_child(client, parent_run_id)
    run_id = best.info.run_id
    try:
        existing = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except mlflow.exceptions.MlflowException:
        existing = []
    if existing:
        return max(existing, key=lambda v: int(v.version)), best, False
    judged = judged_run(best)
    objective = judged.of_run(best)
    tags = {
        "rnnlab.sweep": parent_run_id,
        "rnnlab.run_id": run_id,
        # the metric the sweep ranked by and its final value, as the leaderboard names them
        "rnnlab.objective": objective,
        "rnnlab.objective_value": f"{judged.shown(objective, objective_of(best)):.6g}",
    }
    if "final/val_loss" in best.data.metrics:  # labelled: the h = 0 number, not the objective
        tags["final/val_loss"] = f"{best.data.metrics['final/val_loss']:.6g}"
    mlflow.set_tracking_uri(uri)
    try:
        version = mlflow.register_model(best.data.tags["rnnlab.model_uri"], name, tags=tags)
    except mlflow.exceptions.MlflowException as e:
        raise UserError(f"MLflow: {str(e).splitlines()[0]}") from None
    return version, best, True
