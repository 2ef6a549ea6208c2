"""Every char-RNN run as an MLflow model, and registering a sweep's best run.

At the end of training a char-RNN run logs ``model``: an MLflow pyfunc whose one artifact is a
weights-only ``.npz`` (parameters, vocabulary, config; read with ``allow_pickle=False``) and whose
code is rnnlab itself (``code_paths``), so the model generates exactly as ``rnnlab.sample``. It is
logged as a "model from code" (``rnnlab/model_code.py``): nothing in it is pickled.
Signature: ``prime`` (str), ``length`` (long), ``temperature`` (double), ``seed`` (long),
``top_k`` (long), ``top_p`` (double), ``greedy`` (boolean), ``beam`` (long) → ``text`` (str);
only ``prime`` is required. The weights are the run's best checkpoint (``model_from=best``) or
its last one (``model_from=last``).

    mlflow.pyfunc.load_model("runs:/<run_id>/model").predict(pd.DataFrame([{"prime": "One"}]))
    mlflow models serve --env-manager local -h 127.0.0.1 -p 5001 -m runs:/<run_id>/model
    python -m rnnlab.model register sweep=<parent_run_id> name=kafka-charrnn
"""

from __future__ import annotations

import sys
import tempfile
import time
import warnings
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd

import rnnlab
from rnnlab.resume import quiet_artifact_transfers

MODEL_NAME = "model"  # runs:/<run_id>/model
DEFAULTS = {"length": 200, "temperature": 1.0, "seed": 0}
DECODING = {"top_k": (int, 0), "top_p": (float, 1.0), "greedy": (bool, False), "beam": (int, 0)}


class CharRNNModel(mlflow.pyfunc.PythonModel):
    """Generates text from a char-RNN's weights; one output row per input row."""

    def load_context(self, context) -> None:
        from rnnlab.sample import load_weights

        self.weights = load_weights(Path(context.artifacts["weights"]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from mlflow.exceptions import INVALID_PARAMETER_VALUE, MlflowException

        from rnnlab.sample import SampleError, generate_text

        texts = []
        for row in model_input.to_dict("records"):
            opts = {k: row.get(k) for k in DEFAULTS}
            opts = {k: DEFAULTS[k] if v is None or v != v else v for k, v in opts.items()}
            dec = {k: row.get(k) for k in DECODING}
            dec = {k: DECODING[k][1] if v is None or v != v else DECODING[k][0](v)
                   for k, v in dec.items()}  # fmt: skip
            try:
                texts.append(
                    generate_text(
                        self.weights,
                        str(row.get("prime") or ""),
                        int(opts["length"]),
                        float(opts["temperature"]),
                        np.random.default_rng(int(opts["seed"])),
                        **dec,
                    )
                )
            except SampleError as e:
                raise MlflowException(str(e), error_code=INVALID_PARAMETER_VALUE) from None
        return pd.DataFrame({"text": texts})


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    inputs = Schema(
        [
            ColSpec("string", "prime"),
            ColSpec("long", "length", required=False),
            ColSpec("double", "temperature", required=False),
            ColSpec("long", "seed", required=False),
            ColSpec("long", "top_k", required=False),
            ColSpec("double", "top_p", required=False),
            ColSpec("boolean", "greedy", required=False),
            ColSpec("long", "beam", required=False),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec("string", "text")]))


def write_weights(checkpoint_path: Path, dest: Path) -> Path:
    """The parts of a checkpoint a model needs (no optimizer memories, no data state)."""
    from rnnlab import checkpoint

    arrays, meta = checkpoint.load(checkpoint_path)
    keep = {k: v for k, v in arrays.items() if k.startswith(("param/", "eval/")) or k == "vocab"}
    slim = {k: meta[k] for k in ("config", "task") if k in meta}
    slim["iteration"] = meta.get("state", {}).get("iteration", 0)
    return checkpoint.save(dest, keep, slim)


def log_model(checkpoint_path: Path) -> mlflow.models.model.ModelInfo:
    """Log a char-RNN checkpoint as the active run's pyfunc ``model``."""
    with tempfile.TemporaryDirectory(prefix="rnnlab-model-") as tmp:
        weights = write_weights(Path(checkpoint_path), Path(tmp) / "weights.npz")
        with warnings.catch_warnings(), quiet_artifact_transfers():
            warnings.simplefilter("ignore", UserWarning)  # "no input example": costs a predict
            return mlflow.pyfunc.log_model(
                name=MODEL_NAME,
                python_model=str(Path(__file__).with_name("model_code.py")),
                artifacts={"weights": str(weights)},
                code_paths=[str(Path(rnnlab.__file__).resolve().parent)],
                signature=signature(),
                # Explicit requirements: inferring them would load the model in a subprocess.
                pip_requirements=[
                    f"mlflow=={mlflow.__version__}",
                    f"numpy=={np.__version__}",
                    f"pandas=={pd.__version__}",
                    "hydra-core>=1.3.2,<1.4",
                ],
            )


def log_run_model(cfg, client, run_id: str, out_dir: Path) -> None:
    """End-of-training hook for ``runs.run_job``: a char-RNN run logs its model. A failure here
    never fails the trained run: it is recorded in the tag ``rnnlab.model_error`` instead."""
    if cfg.task.name != "charrnn":
        return
    from rnnlab.evaluate import model_checkpoint

    started = time.perf_counter()
    try:
        path = model_checkpoint(cfg, Path(out_dir) / "checkpoints")  # model_from=best|last
        if path is None:
            raise FileNotFoundError(f"no checkpoint in {out_dir}/checkpoints")
        info = log_model(path)
        client.set_tag(run_id, "rnnlab.model_uri", info.model_uri)
        client.set_tag(run_id, "rnnlab.model_log_seconds", f"{time.perf_counter() - started:.2f}")
    except Exception as e:  # noqa: BLE001 — the weights are safe in the checkpoint artifacts
        client.set_tag(run_id, "rnnlab.model_error", f"{type(e).__name__}: {e}"[:5000])
        print(f"rnnlab: could not log the model: {type(e).__name__}: {e}", file=sys.stderr)


# --- the model registry --------------------------------------------------------------------------


class RegistryError(ValueError):
    """The best run of a sweep cannot be registered. The message is one line."""


def best_child(client, parent_run_id: str):
    """The FINISHED char-RNN child of a sweep with the lowest final/val_loss that has a model."""
    from mlflow.exceptions import MlflowException

    try:
        parent = client.get_run(parent_run_id)
    except MlflowException:
        raise RegistryError(f"no run {parent_run_id!r} in {client.tracking_uri}") from None
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' "
        "and attributes.status = 'FINISHED'",
        max_results=50000,
    )
    candidates = [
        r
        for r in children
        if r.data.tags.get("rnnlab.task") == "charrnn"
        and "final/val_loss" in r.data.metrics
        and "rnnlab.model_uri" in r.data.tags
    ]
    if not candidates:
        raise RegistryError(
            f"run {parent_run_id} has no FINISHED char-RNN child run with a logged model "
            f"({len(children)} finished children)"
        )
    return min(candidates, key=lambda r: r.data.metrics["final/val_loss"])


def register_best(parent_run_id: str, name: str, tracking_uri: str | None = None):
    """Register the best child run of sweep ``parent_run_id`` (lowest final/val_loss) as a new
    version of registered model ``name``; returns the ModelVersion."""
    from mlflow.tracking import MlflowClient

    from rnnlab.resume import ResumeError, default_uri, open_store

    uri = default_uri(tracking_uri)
    try:
        client: MlflowClient = open_store(uri)
    except ResumeError as e:
        raise RegistryError(str(e)) from None
    best = best_child(client, parent_run_id)
    mlflow.set_tracking_uri(uri)
    version = mlflow.register_model(
        best.data.tags["rnnlab.model_uri"],
        name,
        tags={
            "rnnlab.sweep": parent_run_id,
            "rnnlab.run_id": best.info.run_id,
            "final/val_loss": f"{best.data.metrics['final/val_loss']:.6g}",
        },
    )
    return version


USAGE = (
    "usage: python -m rnnlab.model register sweep=<parent_run_id> name=<model name> "
    "[tracking_uri=<uri>]"
)


def cli() -> None:
    argv = sys.argv[1:]
    if len(argv) < 1 or argv[0] != "register":
        print(USAGE, file=sys.stderr)
        sys.exit(2)
    args = dict(a.partition("=")[::2] for a in argv[1:])
    unknown = set(args) - {"sweep", "name", "tracking_uri"}
    if unknown or not args.get("sweep") or not args.get("name"):
        print(USAGE, file=sys.stderr)
        sys.exit(2)
    try:
        v = register_best(args["sweep"], args["name"], args.get("tracking_uri") or None)
    except RegistryError as e:
        print(f"rnnlab: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"registered {v.name} version {v.version}: run {v.tags.get('rnnlab.run_id', v.run_id)} "
          f"(final/val_loss {v.tags.get('final/val_loss')})")  # fmt: skip


if __name__ == "__main__":
    cli()
