"""Continue a run from its latest checkpoint: ``python -m rnnlab.run resume=<run_id | path>``.

``resume=<run_id>`` reopens that MLflow run (KILLED, FAILED or FINISHED), downloads its newest
``checkpoints/iter_XXXXXXX.npz`` artifact and trains on in the same run: metrics continue at the
steps after the checkpoint, the status ends FINISHED/KILLED/FAILED again, and tags record each
resume. ``resume=<path.npz>`` starts a new run from that file; its ``resume`` param records it.

The config is the checkpoint's own, with the command line's overrides on top. Overrides that
would change what the checkpoint's arrays mean (the model's shape, the vocabulary, the number of
streams, the optimizer) are refused with one line; ``iterations`` may grow, cadences, tracking
and the like may change. Because a checkpoint holds the whole training state (weights, optimizer
memories, every stream's hidden state and data position, RNG states, interval sums), a run
stopped by SIGINT/SIGTERM — which checkpoints at the iteration it stops — and resumed gives the
same metrics and weights, bit for bit, as a run never stopped.

Not here: the training loop (``rnnlab.train``) and the fresh-run lifecycle (``rnnlab.runs``).
"""

from __future__ import annotations

import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from rnnlab import checkpoint
from rnnlab.checkpoint_checks import check_contents
from rnnlab.config import Config, ConfigError, check, flatten

if TYPE_CHECKING:  # MLflow is imported only when a resume needs it: preflight stays fast
    from mlflow.tracking import MlflowClient

CHECKPOINT_DIR = "checkpoints"  # the artifact folder train() logs checkpoints into
CHECKPOINT_NAME = re.compile(r"^iter_(\d{7})\.npz$")  # never a *.tmp leftover
RUN_ID = re.compile(r"^[0-9a-f]{32}$")

# Keys a resume must not change, and why: the checkpoint's arrays only mean something under them.
# Every other data.* key is frozen too (it changes the text the data pointers index).
FROZEN: dict[str, str] = {
    "task.name": "the task",
    "task.activation": "the model's nonlinearity",
    "task.loss": "the model's output head",
    "hidden_size": "the model's shape",
    "dtype": "the dtype of every array",
    "data.name": "the corpus, hence the vocabulary",
    "data.path": "the corpus, hence the vocabulary",
    "data.url": "the corpus, hence the vocabulary",
    "data.val_fraction": "the training text the data pointers index",
    "batch_size": "the number of streams whose state the checkpoint holds",
    "seq_length": "the window (the adder: the number of bits) the data state assumes",
    "optimizer.name": "the optimizer memories",
    "seed": "the random streams (restored from the checkpoint)",
    "task.init": "the initial weights",
    "task.init_scale": "the initial weights",
    "task.eval_max_pairs": "the evaluation set",
}


class ResumeError(ValueError):
    """A resume (or a checkpoint look-up) cannot go ahead. The message is one line."""


# --- stores and checkpoint artifacts (also used by rnnlab.sample) --------------------------------


@contextmanager
def quiet_artifact_transfers():
    """No MLflow progress bars on stderr (they would garble the CLI's one-line messages)."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def default_uri(uri: str | None, launch_dir: Path | None = None) -> str:
    """``uri``, else $MLFLOW_TRACKING_URI, else SQLite in ``launch_dir`` — as ``rnnlab.run``."""
    from rnnlab.runs import tracking_uri

    cfg = Config()
    cfg.tracking.uri = uri
    return tracking_uri(cfg, launch_dir or Path.cwd())


def open_store(uri: str) -> MlflowClient:
    """A client for ``uri``; a SQLite URI must name an existing file (MLflow would silently
    create an empty store, and every look-up would then say "no such run")."""
    from mlflow.tracking import MlflowClient

    from rnnlab.inputs import check_sqlite_file

    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_absolute():
            path = Path.cwd() / path
        if not path.is_file():
            raise ResumeError(
                f"no MLflow store at {path} (tracking URI {uri}); pass tracking_uri= or set "
                f"MLFLOW_TRACKING_URI"
            )
        try:
            check_sqlite_file(path)  # rnnlab.inputs: random bytes are no store
        except ValueError as e:
            raise ResumeError(str(e)) from None
    return MlflowClient(uri)


def get_run(client: MlflowClient, run_id: str, uri: str):
    """The run, or ResumeError naming the store."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ResumeError(f"no run {run_id!r} in {uri}") from None
    if run.info.lifecycle_stage == "deleted":
        raise ResumeError(f"run {run_id} in {uri} is deleted")
    return run


def latest_checkpoint(client: MlflowClient, run) -> str | None:
    """Artifact path of the run's newest checkpoint (highest iteration), or None."""
    from mlflow.exceptions import MlflowException

    try:
        files = client.list_artifacts(run.info.run_id, CHECKPOINT_DIR)
    except (MlflowException, OSError):
        return None
    names = [Path(f.path).name for f in files if not f.is_dir]
    names = sorted(n for n in names if CHECKPOINT_NAME.match(n))
    return f"{CHECKPOINT_DIR}/{names[-1]}" if names else None


def fetch_checkpoint(client: MlflowClient, run, dest: Path) -> Path:
    """Download the run's newest checkpoint into ``dest``; ResumeError if it has none."""
    artifact = latest_checkpoint(client, run)
    if artifact is None:
        kind = run.data.tags.get("rnnlab.kind")
        hint = "; it is a sweep's parent run, use one of its children" if kind == "sweep" else ""
        raise ResumeError(f"run {run.info.run_id} has no checkpoint artifacts{hint}")
    dest.mkdir(parents=True, exist_ok=True)
    with quiet_artifact_transfers():
        return Path(client.download_artifacts(run.info.run_id, artifact, str(dest)))


def config_from_flat(flat: dict[str, Any]) -> Config:
    """A checkpoint's flattened config → the typed Config (keys rnnlab no longer has are
    dropped, keys it gained take their defaults)."""
    known = flatten(Config())
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        if key not in known:
            continue
        *parents, leaf = key.split(".")
        node = nested
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    merged = OmegaConf.merge(OmegaConf.structured(Config), nested)
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


# --- planning a resume ---------------------------------------------------------------------------


@dataclass
class Plan:
    """What a resume will do, worked out (and checked) before any training."""

    cfg: Config  # the checkpoint's config with the command line's overrides on top
    checkpoint: Path  # a local copy of the checkpoint to load
    iteration: int  # where it continues from
    uri: str
    run_id: str | None = None  # set: continue this run; None: start a new one
    status: str | None = None  # the run's status before this resume
    changed: list[str] = field(default_factory=list)  # "key=value" overrides applied


def overridden_keys(overrides: list[str]) -> list[str]:
    """Flat config keys a Hydra override list sets (a group override sets its whole group)."""
    known = list(flatten(Config()))
    keys: list[str] = []
    for line in overrides:
        key = line.split("=", 1)[0].lstrip("+~")
        if key.startswith("hydra") or "/" in key or key == "resume":
            continue
        if key in known:
            keys.append(key)
        else:  # e.g. optimizer=adam: every optimizer.* value comes from that file
            keys += [k for k in known if k.startswith(key + ".")]
    return list(dict.fromkeys(keys))


def plan(cfg: Config, overrides: list[str], launch_dir: Path, workdir: Path) -> Plan:
    """Check a ``resume=`` command line and fetch its checkpoint; ResumeError if it cannot go.

    ``cfg`` is what Hydra composed from the command line (defaults + overrides); only the keys
    the overrides name are taken from it, everything else from the checkpoint."""
    target = str(cfg.resume)
    uri = default_uri(cfg.tracking.uri, launch_dir)
    run_id = status = None
    if RUN_ID.match(target) and not Path(target).exists():
        client = open_store(uri)
        run = get_run(client, target, uri)
        status = run.info.status
        if status in ("RUNNING", "SCHEDULED"):
            raise ResumeError(
                f"run {target} is {status}: it is still training, or its process died without "
                f"closing it (then mark it: MlflowClient('{uri}').set_terminated('{target}', "
                f"'KILLED'))"
            )
        if "rnnlab.task" not in run.data.tags:
            raise ResumeError(f"run {target} is not an rnnlab training run")
        path = fetch_checkpoint(client, run, workdir)
        run_id = target
    else:
        path = Path(target).expanduser().resolve()
        if not path.is_file():
            raise ResumeError(
                f"resume={target!r} is neither a run id (32 hex digits) nor a checkpoint file"
            )
    try:
        arrays, meta = checkpoint.load(path)
        check_contents(arrays, meta)  # rnnlab.checkpoint_checks: weights, types, shapes
    except (checkpoint.CheckpointError, ValueError) as e:
        raise ResumeError(str(e) if str(e).startswith(str(path)) else f"{path}: {e}") from None
    if "config" not in meta or "state" not in meta:
        raise ResumeError(f"{path} is a checkpoint without its config or training state")
    iteration = int(meta["state"]["iteration"])

    # The checkpoint's config, with the keys the command line names taken from it.
    saved = flatten(config_from_flat(meta["config"]))
    given = flatten(cfg)
    flat = dict(saved)
    keys = overridden_keys(overrides)
    changed = []
    for key in keys:
        fixes = FROZEN.get(key) or ("the training text" if key.startswith("data.") else None)
        if fixes and given.get(key) != saved.get(key):
            raise ResumeError(
                f"{key}={given[key]} cannot change on resume: the checkpoint was trained with "
                f"{key}={saved.get(key)} and it fixes {fixes}; start a new run instead"
            )
        if given[key] != saved[key]:
            changed.append(f"{key}={given[key]}")
        flat[key] = given[key]
    # Where to record is the command line's business, not the checkpoint's.
    flat |= {k: v for k, v in given.items() if k.startswith("tracking.")}
    flat["resume"] = run_id or str(path)
    effective = config_from_flat(flat)
    try:
        check(effective)
    except (ConfigError, ValueError) as e:  # CorpusError and PrimeError are ValueErrors
        raise ResumeError(str(e)) from None
    if effective.iterations <= iteration:
        raise ResumeError(
            f"the checkpoint is at iteration {iteration} and iterations={effective.iterations}; "
            f"ask for more, e.g. iterations={iteration + effective.checkpoint_every}"
        )
    if effective.task.name == "charrnn":
        check_corpus(effective, arrays, run if run_id else None)
    return Plan(effective, path, iteration, uri, run_id, status, changed)


def check_corpus(cfg: Config, arrays: dict, run) -> None:
    """The corpus must still be the one the checkpoint was trained on."""
    from rnnlab import corpus
    from rnnlab.tasks.charrnn import Vocabulary, load_corpus

    text, path = load_corpus(cfg)
    saved = Vocabulary.from_array(arrays["vocab"]).chars if "vocab" in arrays else ""
    if Vocabulary(text).chars != saved:
        raise ResumeError(
            f"the corpus {path} has a different vocabulary ({len(set(text))} characters) than "
            f"the checkpoint ({len(saved)}); resume needs the text it was trained on"
        )
    recorded = run.data.tags.get("rnnlab.dataset_sha256") if run is not None else None
    if recorded and corpus.sha256_of(Path(path)) != recorded:
        raise ResumeError(
            f"the corpus {path} changed since run {run.info.run_id} started (sha256 "
            f"{corpus.sha256_of(Path(path))[:12]}… ≠ {recorded[:12]}…)"
        )


def preflight_resume(
    cfg: Config, overrides: list[str], multirun: bool = False, launch_dir: Path | None = None
) -> None:
    """For ``rnnlab.preflight``: raise ResumeError if this resume cannot go ahead."""
    if multirun:
        raise ResumeError("resume= continues one run: drop -m")
    with tempfile.TemporaryDirectory(prefix="rnnlab-resume-") as tmp:
        plan(cfg, overrides, launch_dir or Path.cwd(), Path(tmp))


# --- running it ----------------------------------------------------------------------------------


def resume_job(cfg: Config, ctx, show_progress: bool = True) -> dict[str, float]:
    """``runs.run_job`` for a config with ``resume`` set; returns the final metrics."""
    from rnnlab import runs

    out_dir = ctx.output_dir or Path(tempfile.mkdtemp(prefix="rnnlab-"))
    p = plan(cfg, ctx.overrides, ctx.launch_dir, out_dir / "resumed_from")
    if p.run_id is None:  # a checkpoint file: a new run, whose `resume` param names the file
        tags = {"rnnlab.resumed_from": str(p.checkpoint), "rnnlab.resumed_from_iteration":
                str(p.iteration)}  # fmt: skip
        ctx = replace(ctx, extra_tags={**ctx.extra_tags, **tags})
        return runs.run_job(p.cfg, ctx, show_progress, resume_from=p.checkpoint)
    return continue_run(p, out_dir, show_progress)


def continue_run(p: Plan, out_dir: Path, show_progress: bool) -> dict[str, float]:
    """Reopen run ``p.run_id`` and train it on from ``p.checkpoint`` (statuses as run_job)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from rnnlab import runs
    from rnnlab.tracking import MlflowTracker

    mlflow.set_tracking_uri(p.uri)
    client = MlflowClient(p.uri)
    runs.end_leaked_runs()
    run_id = p.run_id
    tags = client.get_run(run_id).data.tags
    n = int(tags.get("rnnlab.resumes", "0")) + 1
    note = f"from {p.checkpoint.name} (iteration {p.iteration}) after {p.status}"
    if p.changed:
        note += "; overrides: " + " ".join(p.changed)
    if "error" in tags:
        note += f"; previous error: {tags['error']}"
    # A run that failed (or died) after its last checkpoint logged points past it; those steps
    # are trained, and logged, again. A SIGINT/SIGTERM stop checkpoints where it stops: none.
    logged = [m.step for m in client.get_metric_history(run_id, "train/loss")]
    if logged and max(logged) > p.iteration:
        note += f"; steps {p.iteration + 1}-{max(logged)} were logged before and are logged again"
    with mlflow.start_run(run_id=run_id, tags={"rnnlab.resumes": str(n), f"rnnlab.resume_{n}":
                                                note[:5000]}):  # fmt: skip
        if "error" in tags:  # it described the stop this resume recovers from
            client.delete_tag(run_id, "error")
        client.log_text(run_id, OmegaConf.to_yaml(OmegaConf.structured(p.cfg)),
                        f"config_resume_{n}.yaml")  # fmt: skip
        tracker = MlflowTracker(
            client, run_id, p.cfg.tracking.flush_points, p.cfg.tracking.flush_seconds
        )
        return runs.train_in_run(p.cfg, client, run_id, tracker, out_dir, p.checkpoint,
                                 show_progress)  # fmt: skip
