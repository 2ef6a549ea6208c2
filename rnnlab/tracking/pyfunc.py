"""Every char-RNN run as an MLflow model (a pyfunc) that generates as ``rnnlab.sample`` does.

At the end of training a char-RNN run logs ``model``: an MLflow pyfunc whose one artifact is a
weights-only ``.npz`` (parameters, vocabulary, config; read with ``allow_pickle=False``) and whose
code is rnnlab itself (``code_paths``), so the model generates exactly as ``rnnlab.sample``. It is
logged as a "model from code" (``rnnlab/tracking/model_code.py``): nothing in it is pickled.
Signature: ``prime`` (str), ``length`` (long), ``temperature`` (double), ``seed`` (long),
``top_k`` (long), ``top_p`` (double), ``greedy`` (boolean), ``beam`` (long) → ``text`` (str);
only ``prime`` is required. The weights are the run's best checkpoint (``model_from=best``) or
its last one (``model_from=last``).

A served request is bounded before any work: ``length`` ≤ ``max_length``, ``prime`` ≤
``max_prime`` characters, at most ``max_rows`` rows (``LIMITS``; set them with the environment
variables ``RNNLAB_SERVE_MAX_LENGTH`` / ``_MAX_PRIME`` / ``_MAX_ROWS`` of ``mlflow models serve``,
or ``load_model(uri, model_config={"max_length": ...})``). Anything over is an HTTP 400 naming the
limit: unbounded, one request could hold a worker for hours or take gigabytes.

    mlflow.pyfunc.load_model("runs:/<run_id>/model").predict(pd.DataFrame([{"prime": "One"}]))
    mlflow models serve --env-manager local -h 127.0.0.1 -p 5001 -m runs:/<run_id>/model
"""

from __future__ import annotations

import os
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
from rnnlab.tracking.store import quiet_artifact_transfers

MODEL_NAME = "model"  # runs:/<run_id>/model


DEFAULTS = {"length": 200, "temperature": 1.0, "seed": 0}


# Measured on this machine: sampling costs 0.1-0.6 ms a character (hidden 100-256, idle to
# loaded), reading a prime 0.1 ms and 3 KB a character; so a request at these limits takes about
# a second (a few under load) and well under 100 MB.
LIMITS = {"max_length": 5000, "max_prime": 10000, "max_rows": 4}


def serving_limits(model_config: dict | None = None) -> dict[str, int]:
    """``LIMITS``, overridden by ``RNNLAB_SERVE_<NAME>`` in the environment, then by the
    pyfunc's ``model_config``. ValueError (one line) for a limit that is not an integer ≥ 1."""
    limits = dict(LIMITS)
    for name in LIMITS:
        given = (model_config or {}).get(name)  # None: not set when loading
        if given is None:
            given = os.environ.get(f"RNNLAB_SERVE_{name.upper()}")
        if given is None:
            continue
        try:
            limits[name] = int(given)
        except (TypeError, ValueError):
            limits[name] = 0
        if limits[name] < 1 or str(given).strip() != str(limits[name]):
            raise ValueError(f"serving limit {name}={given!r} is not allowed: an integer ≥ 1")
    return limits


def check_limits(rows: list[dict], limits: dict[str, int]) -> None:
    """Refuse a whole request over a limit before generating anything (ValueError naming it)."""
    if len(rows) > limits["max_rows"]:
        raise ValueError(
            f"{len(rows)} rows in one request is over the limit max_rows={limits['max_rows']}"
        )
    for row in rows:
        length = row.get("length")
        if length is not None and length == length and length > limits["max_length"]:
            raise ValueError(f"length={length} is over the limit max_length={limits['max_length']}")
        prime = str(row.get("prime") or "")
        if len(prime) > limits["max_prime"]:
            raise ValueError(
                f"a prime of {len(prime)} characters is over the limit "
                f"max_prime={limits['max_prime']}"
            )


DECODING = {"top_k": (int, 0), "top_p": (float, 1.0), "greedy": (bool, False), "beam": (int, 0)}


class CharRNNModel(mlflow.pyfunc.PythonModel):
    """Generates text from a char-RNN's weights; one output row per input row."""

    def load_context(self, context) -> None:
        from rnnlab.inference.weights import load_weights

        self.weights = load_weights(Path(context.artifacts["weights"]))
        self.limits = serving_limits(getattr(context, "model_config", None))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from mlflow.exceptions import INVALID_PARAMETER_VALUE, MlflowException

        from rnnlab.errors import UserError
        from rnnlab.inference.generate import check_request, generate_text

        texts = []
        rows = model_input.to_dict("records")
        try:
            check_limits(rows, getattr(self, "limits", LIMITS))
        except ValueError as e:
            raise MlflowException(str(e), error_code=INVALID_PARAMETER_VALUE) from None
        for row in rows:
            opts = {k: row.get(k) for k in DEFAULTS}
            opts = {k: DEFAULTS[k] if v is None or v != v else v for k, v in opts.items()}
            dec = {k: row.get(k) for k in DECODING}
            dec = {k: DECODING[k][1] if v is None or v != v else DECODING[k][0](v)
                   for k, v in dec.items()}  # fmt: skip
            try:
                check_request(seed=int(opts["seed"]))
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
            except UserError as e:
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
    from rnnlab.training.checkpoint import Checkpoint

    return Checkpoint.read(checkpoint_path).weights_only().write(dest)


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
                # the keys load_model(model_config=...) may set; None: the environment or LIMITS
                model_config={name: None for name in LIMITS},
                # Explicit requirements: inferring them would load the model in a subprocess.
                pip_requirements=[
                    f"mlflow=={mlflow.__version__}",
                    f"numpy=={np.__version__}",
                    f"pandas=={pd.__version__}",
                    "hydra-core>=1.3.2,<1.4",
                ],
            )


def log_run_model(cfg, client, run_id: str, out_dir: Path) -> None:
    """End-of-training hook for ``job.run_job``: a char-RNN run logs its model. A failure here
    never fails the trained run: it is recorded in the tag ``rnnlab.model_error`` instead."""
    if cfg.task.name != "charrnn":
        return
    from rnnlab.training.best import model_checkpoint

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
