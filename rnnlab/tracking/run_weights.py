"""The weights of a recorded run: its best or newest checkpoint, fetched from the store.

``run_id=`` (or a unique prefix) reads the run's ``checkpoints/best.npz`` (``model_from=best``,
the run's own setting by default) or its newest intact ``iter_*.npz`` (``model_from=last``) from
the tracking store; ``checkpoint=`` reads a file. What every command that uses a trained network
(sample, score, inspect, export) starts from.

Not here: the checkpoint format (``rnnlab.training.checkpoint``), what weights hold
(``rnnlab.inference.weights``).
"""

from __future__ import annotations

from pathlib import Path

from rnnlab.errors import UserError
from rnnlab.inference.weights import Weights, load_weights
from rnnlab.tracking import store
from rnnlab.training.best import BEST_FILE


def fetch_weights(client, run, dest: Path, which: str | None) -> Path:
    """The run's ``checkpoints/best.npz`` (which = best; None: the run's ``model_from``
    param, best when absent) when it has one that reads whole, else its newest intact
    checkpoint — as ``resume=`` falls back (``store.fetch_checkpoint``), with a line saying so."""
    import sys

    from rnnlab.training.checkpoint import Checkpoint, CheckpointError

    which = which or run.data.params.get("model_from", "best")
    if which == "best":
        listed = client.list_artifacts(run.info.run_id, store.CHECKPOINT_DIR)
        names = {Path(f.path).name for f in listed}
        if BEST_FILE in names:
            dest.mkdir(parents=True, exist_ok=True)
            artifact = f"{store.CHECKPOINT_DIR}/{BEST_FILE}"
            with store.quiet_artifact_transfers():
                path = Path(client.download_artifacts(run.info.run_id, artifact, str(dest)))
            try:
                Checkpoint.read(path)
                return path
            except CheckpointError as e:
                why = store.named(e, path, f"run {run.info.run_id}'s {artifact}")
                print(f"rnnlab: {why}; using its newest intact checkpoint", file=sys.stderr)
    return store.fetch_checkpoint(client, run, dest)


def weights_of(
    workdir: Path,
    run_id: str | None = None,
    checkpoint: str | None = None,
    tracking_uri: str | None = None,
    model_from: str | None = None,
) -> Weights:
    """Weights from ``checkpoint`` (a file), or from run ``run_id``'s best or newest checkpoint
    (fetched into ``workdir``). UserError (one line) when neither can be read."""
    if (checkpoint is None) == (run_id is None):
        raise UserError("give exactly one of run_id= or checkpoint=")
    if checkpoint is not None:
        return load_weights(Path(checkpoint).expanduser())
    uri = store.resolve_uri(tracking_uri)
    client = store.open_store(uri)
    run = store.get_run(client, run_id, uri)
    path = fetch_weights(client, run, workdir, model_from)
    source = f"run {run.info.run_id}'s {store.CHECKPOINT_DIR}/{Path(path).name}"
    try:
        return load_weights(path, source=source)
    except UserError as e:  # name the run's file, not this process's temporary copy of it
        raise UserError(store.named(e, path, source)) from None
