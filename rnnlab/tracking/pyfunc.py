"""Every char-RNN run as an MLflow model (a pyfunc) that generates as ``rnnlab.sample`` does.

At the end of training a char-RNN run logs ``model``: an MLflow pyfunc whose one artifact is a
weights-only ``.npz`` (parameters, vocabulary, config; read with ``allow_pickle=False``) and whose
code is rnnlab itself (``code_paths``), so the model generates exactly as ``rnnlab.sample``. It is
logged as a "model from code" (``rnnlab/tracking/model_code.py``): nothing in it is pickled.
Signature: ``prime`` (str), ``length`` (long), ``temperature`` (double), ``seed`` (long),
``top_k`` (long), ``top_p`` (double), ``greedy`` (boolean), ``beam`` (long) → ``text`` (str);
only ``prime`` is required. The weights are the run's best checkpoint (``model_from=best``) or
its last one (``model_from=last``).

A served request is bounded before any work (``rnnlab.inference.requests``): the type and
limit of every decoding knob — rows, prime, length, beam, and the request's work Σ max(beam, 1)
× (length + prime) × vocabulary — are checked as the values arrived, before anything converts
them; anything else is an HTTP 400 naming the field. Set the limits with the environment
variables ``RNNLAB_SERVE_MAX_LENGTH`` (… ``_MAX_PRIME``, ``_MAX_ROWS``, ``_MAX_BEAM``,
``_MAX_WORK``) of ``mlflow models serve``, or ``load_model(uri, model_config={"max_length":
...})``.

A request's work stops when its time is up. ``mlflow models serve -t T`` (the variable
``MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT``, 60 s by default) answers 504 after T seconds, but its
timeout only abandons the request's coroutine (``asyncio.wait_for`` in
``mlflow.pyfunc.scoring_server.init``): ``predict`` runs in a worker thread
(``asyncio.to_thread``), which nothing can cancel. So the model takes the same T as its own
deadline, counted from when the request arrived, and checks it at every decoding step
(``requests.deadline_step``). Inside the scoring server (``load_context`` sees its model-path
variable), ``install_request_guard`` wraps two of its functions: ``init``, to stamp each
request's arrival (a middleware; the stamp reaches the worker thread in its context), and
``invocations``, to refuse before MLflow parses anything a body over what the limits allow,
JSON nested too deep for Python's parser (a 500 otherwise), non-finite numbers (``NaN``:
pandas would make them "missing") and any bad field.

    mlflow.pyfunc.load_model("runs:/<run_id>/model").predict(pd.DataFrame([{"prime": "One"}]))
    mlflow models serve --env-manager local -h 127.0.0.1 -p 5001 -m runs:/<run_id>/model
"""

from __future__ import annotations

import contextvars
import json
import os
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd

import rnnlab
from rnnlab.inference.requests import Limits, NonFinite, RequestError, RequestTimeout, check_rows
from rnnlab.tracking.store import quiet_artifact_transfers

MODEL_NAME = "model"  # runs:/<run_id>/model

DEFAULTS = {"length": 200, "temperature": 1.0, "seed": 0}
LIMITS = Limits()
TIMEOUT_ENV = "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"  # mlflow models serve -t sets it
ARRIVED: contextvars.ContextVar[float | None] = contextvars.ContextVar("arrived", default=None)


def serving_limits(model_config: dict | None = None) -> Limits:
    """``LIMITS``, overridden by ``RNNLAB_SERVE_<NAME>`` in the environment, then by the
    pyfunc's ``model_config``; inside ``mlflow models serve`` the timeout is the server's.
    ValueError (one line) for a limit that is not a positive number."""
    given: dict = {}
    if os.environ.get(TIMEOUT_ENV):
        given["timeout_seconds"] = os.environ[TIMEOUT_ENV]
    for name in Limits.names():
        if (value := os.environ.get(f"RNNLAB_SERVE_{name.upper()}")) is not None:
            given[name] = value
    given |= {k: v for k, v in (model_config or {}).items() if v is not None}
    return LIMITS.with_values(given)


def _bad_request(message: str):
    from mlflow.exceptions import INVALID_PARAMETER_VALUE, MlflowException

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


class CharRNNModel(mlflow.pyfunc.PythonModel):
    """Generates text from a char-RNN's weights; one output row per input row."""

    def load_context(self, context) -> None:
        from rnnlab.inference.weights import load_weights

        self.weights = load_weights(Path(context.artifacts["weights"]))
        self.limits = serving_limits(getattr(context, "model_config", None))
        install_request_guard(self)

    def check(self, rows: list[dict]) -> list:
        """The rows as checked requests (RequestError naming the first bad field)."""
        assert self.weights.vocab is not None
        limits = getattr(self, "limits", LIMITS)
        return check_rows(rows, limits, len(self.weights.vocab), DEFAULTS)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import DEADLINE_EXCEEDED

        from rnnlab.errors import UserError
        from rnnlab.inference.generate import generate_text

        limits = getattr(self, "limits", LIMITS)
        started = ARRIVED.get() or time.monotonic()  # the server stamps a request's arrival
        deadline = started + limits.timeout_seconds if limits.timeout_seconds else None
        try:
            if len(model_input) > limits.max_rows:  # before converting a single row
                raise RequestError(f"{len(model_input)} rows in one request is over the limit "
                                   f"max_rows={limits.max_rows}")  # fmt: skip
            requests = self.check(model_input.to_dict("records"))
            texts = [
                generate_text(self.weights, r.prime, r.length, r.temperature,
                              np.random.default_rng(r.seed), r.top_k, r.top_p, r.greedy,
                              r.beam, deadline=deadline)
                for r in requests
            ]  # fmt: skip
        except UserError as e:
            raise _bad_request(str(e)) from None
        except RequestTimeout as e:
            raise MlflowException(str(e), error_code=DEADLINE_EXCEEDED) from None
        return pd.DataFrame({"text": texts})


# --- inside mlflow models serve: refuse before MLflow parses, stamp arrivals ---------------------


def max_body(limits: Limits) -> int:
    """The largest body a request within ``limits`` can need: every row with a prime of
    ``max_prime`` characters, each escaped at worst (``\\uXXXX\\uXXXX``: 12 bytes), plus
    room for the other fields."""
    return limits.max_rows * (limits.max_prime * 12 + 4096) + 4096


def raw_rows(payload) -> list | None:
    """The rows of a JSON request in MLflow's formats (``dataframe_records``,
    ``dataframe_split``, ``instances``, ``inputs``), as they arrived; None for another shape
    (MLflow answers those itself)."""
    if not isinstance(payload, dict):
        return None
    if isinstance(records := payload.get("dataframe_records"), list):
        return records
    if isinstance(split := payload.get("dataframe_split"), dict):
        columns, data = split.get("columns"), split.get("data")
        if isinstance(columns, list) and isinstance(data, list):
            if not all(isinstance(row, list) and len(row) == len(columns) for row in data):
                raise RequestError("dataframe_split: every row of data needs one value a column")
            return [dict(zip(columns, row, strict=True)) for row in data]
    for key in ("instances", "inputs"):
        value = payload.get(key)
        if isinstance(value, list) and all(isinstance(r, dict) for r in value):
            return value
        if isinstance(value, dict):  # columns of values
            columns = {k: v if isinstance(v, list) else [v] for k, v in value.items()}
            sizes = {len(v) for v in columns.values()}
            if len(sizes) != 1:
                raise RequestError(f"{key}: every field needs the same number of values")
            n = sizes.pop()
            return [{k: v[i] for k, v in columns.items()} for i in range(n)]
    return None


def check_raw(model: CharRNNModel, data: bytes | str, content_type: str | None) -> None:
    """RequestError (→ 400) for a request no limit allows, before MLflow reads it: its size,
    then (JSON) its nesting, non-finite numbers, and every field of every row."""
    limits = getattr(model, "limits", LIMITS)
    if len(data) > (allowed := max_body(limits)):
        raise RequestError(
            f"the request's {len(data):,} bytes are over what the limits max_rows="
            f"{limits.max_rows} and max_prime={limits.max_prime} allow ({allowed:,} bytes)"
        )
    if not (content_type or "").startswith("application/json"):
        return
    try:
        payload = json.loads(data, parse_constant=NonFinite)
    except RecursionError:
        raise RequestError("the request's JSON is nested deeper than any request needs") from None
    except ValueError:
        return  # MLflow says what is wrong with it
    rows = raw_rows(payload)
    if rows is not None:
        model.check(rows)


def install_request_guard(model: CharRNNModel) -> None:
    """Inside ``mlflow models serve`` (its model-path variable is set and its scoring server
    loaded), wrap the server's ``invocations`` and ``init`` (see the module); elsewhere a
    no-op. Wrapped once per process."""
    server = sys.modules.get("mlflow.pyfunc.scoring_server")
    if server is None or getattr(server, "_SERVER_MODEL_PATH", None) not in os.environ:
        return
    if getattr(server.invocations, "rnnlab_guard", False):
        return
    invocations, init = server.invocations, server.init

    def guarded(data, content_type, pyfunc_model, input_schema):
        try:
            check_raw(model, data, content_type)
        except RequestError as e:
            raise _bad_request(str(e)) from None
        return invocations(data, content_type, pyfunc_model, input_schema)

    def init_stamping(pyfunc_model):
        app = init(pyfunc_model)

        @app.middleware("http")
        async def stamp_arrival(request, call_next):  # outermost: before the timeout starts
            ARRIVED.set(time.monotonic())
            return await call_next(request)

        return app

    guarded.rnnlab_guard = True  # type: ignore[attr-defined]
    server.invocations, server.init = guarded, init_stamping


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


def requirements() -> list[str]:
    """The model's pip requirements, named: inferring them would load the model in a
    subprocess."""
    return [
        f"mlflow=={mlflow.__version__}",
        f"numpy=={np.__version__}",
        f"pandas=={pd.__version__}",
        "hydra-core>=1.3.2,<1.4",
    ]


# The module each requirement's package installs (what MLflow's map says of them)
REQUIREMENT_MODULES = {"mlflow": ["mlflow"], "numpy": ["numpy"], "pandas": ["pandas"],
                       "hydra": ["hydra-core"]}  # fmt: skip


@contextmanager
def requirements_checked_alone():
    """While MLflow checks the model's requirements against this environment (a warning for a
    package missing or at another version), let it map only their modules to packages: it
    builds the map of every installed distribution's every module first
    (``importlib_metadata.packages_distributions``, ~0.8 s of CPU with ~200 distributions),
    and the model names four. The check itself is unchanged; MLflow's map is left unbuilt for
    anything later."""
    from mlflow.utils import requirements_utils

    if requirements_utils._MODULES_TO_PACKAGES is not None:  # already built: nothing to save
        yield
        return
    requirements_utils._MODULES_TO_PACKAGES = {k: list(v) for k, v in REQUIREMENT_MODULES.items()}
    try:
        yield
    finally:
        requirements_utils._MODULES_TO_PACKAGES = None
        requirements_utils._PACKAGES_TO_MODULES = None


def log_model(checkpoint_path: Path) -> mlflow.models.model.ModelInfo:
    """Log a char-RNN checkpoint as the active run's pyfunc ``model``."""
    with tempfile.TemporaryDirectory(prefix="rnnlab-model-") as tmp:
        weights = write_weights(Path(checkpoint_path), Path(tmp) / "weights.npz")
        with warnings.catch_warnings(), quiet_artifact_transfers(), requirements_checked_alone():
            warnings.simplefilter("ignore", UserWarning)  # "no input example": costs a predict
            return mlflow.pyfunc.log_model(
                name=MODEL_NAME,
                python_model=str(Path(__file__).with_name("model_code.py")),
                artifacts={"weights": str(weights)},
                code_paths=[str(Path(rnnlab.__file__).resolve().parent)],
                signature=signature(),
                # the keys load_model(model_config=...) may set; None: the environment or LIMITS
                model_config={name: None for name in Limits.names()},
                pip_requirements=requirements(),
            )


def log_run_model(cfg, tracker, out_dir: Path) -> None:
    """End-of-training hook for ``job.run_job``: a char-RNN run logs its model. A failure here
    never fails the trained run: it is recorded in the tag ``rnnlab.model_error`` instead, and
    every tag goes through the run's tracker (journalled when the store refuses it)."""
    if cfg.task.name != "charrnn":
        return
    from rnnlab.training.best import model_checkpoint

    started = time.perf_counter()
    try:
        path = model_checkpoint(cfg, Path(out_dir) / "checkpoints")  # model_from=best|last
        if path is None:
            raise FileNotFoundError(f"no checkpoint in {out_dir}/checkpoints")
        if tracker.waiting:  # the store refuses writes: the model's files would not land
            raise OSError(f"the store refuses writes; the weights are in {path}")
        tracker.flush()
        info = log_model(path)
        tracker.set_tag("rnnlab.model_uri", info.model_uri)
        tracker.set_tag("rnnlab.model_log_seconds", f"{time.perf_counter() - started:.2f}")
    except Exception as e:  # noqa: BLE001 — the weights are safe in the checkpoints
        why = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        tracker.set_tag("rnnlab.model_error", f"{type(e).__name__}: {e}"[:5000])
        print(f"rnnlab: could not log the model ({why[:300]}); the run goes on", file=sys.stderr)
