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

Not here: the training loop (``rnnlab.training.loop``), running the resumed run
(``rnnlab.tracking.job``), the store (``rnnlab.tracking.store``)."""

from __future__ import annotations

import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from rnnlab.config import Config, ConfigError, flatten
from rnnlab.errors import UserError
from rnnlab.tasks import check
from rnnlab.tracking import lease, store
from rnnlab.training import checkpoint

# Keys a resume must not change, and why: the checkpoint's arrays only mean something under them.
# Every other data.* key is frozen too (it changes the text the data pointers index).
FROZEN: dict[str, str] = {
    "task.name": "the task",
    "task.activation": "the model's nonlinearity",
    "task.loss": "the model's output head",
    "hidden_size": "the model's shape",
    "cell": "the model's cell",
    "layers": "the model's shape",
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
    "task.length": "the sequences the data stream draws (adding, copy)",
    "task.order": "how an image is read (digits)",
    "task.eval_size": "the evaluation set",
    "task.alphabet": "the model's input and output symbols (copy)",
    "task.copy_symbols": "the sequences the data stream draws (copy)",
    "objective": "the best checkpoint and early stopping's reference value",
}


class ResumeError(UserError):
    """A resume (or a checkpoint look-up) cannot go ahead. The message is one line."""


# --- planning a resume ---------------------------------------------------------------------------


@dataclass
class Plan:
    """What a resume will do, worked out (and checked) before any training."""

    cfg: Config  # the checkpoint's config with the command line's overrides on top
    checkpoint: Path | None  # a local copy of the checkpoint to load (None: a requeued job's
    # run that has none yet trains again from the start)
    iteration: int  # where it continues from
    uri: str
    run_id: str | None = None  # set: continue this run; None: start a new one
    status: str | None = None  # the run's status before this resume
    changed: list[str] = field(default_factory=list)  # "key=value" overrides applied
    note: str = ""  # one line to show before resuming (e.g. the run's process is gone)


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


def names_a_run(target: str | None) -> bool:
    """True when ``resume=`` names a run (an id or a unique prefix), not a checkpoint file."""
    return (
        bool(target)
        and bool(store.RUN_ID_PREFIX.match(str(target)))
        and not (Path(str(target)).exists())
    )


def refuse_a_live_run(run, uri: str, what: str = "resuming", advice: str = "stop it first") -> str:
    """ResumeError when ``run`` is RUNNING in a process that is alive (or that rnnlab cannot
    check from here); for a RUNNING run whose process is gone, the line to print."""
    status, run_id, tags = run.info.status, run.info.run_id, run.data.tags
    if status not in ("RUNNING", "SCHEDULED"):
        return ""
    where = f"process {tags.get('rnnlab.pid', '?')} on {tags.get('rnnlab.host', '?')}"
    if not store.is_dead(run):
        known = "rnnlab.pid" in tags
        raise ResumeError(
            f"run {run_id} is {status} in {where}, which is still alive: {advice}"
            if known and tags.get("rnnlab.host") == socket.gethostname()
            else f"run {run_id} is {status} and rnnlab cannot tell from here whether "
            f"its process ({where}) is alive; if it is gone, mark the run: "
            f"MlflowClient('{uri}').set_terminated('{run_id}', 'KILLED')"
        )
    return f"run {run_id} was left {status} by {where}, which is gone; {what} it"


@dataclass
class Claim:
    """The lease of a run this process took (``rnnlab.tracking.lease``) before writing to it."""

    run_id: str
    writer: lease.Writer
    read: str | None  # the lease's value before: given back if the resume stops before writing
    status: str  # the run's status before
    note: str = ""  # e.g. the run was left RUNNING by a process that is gone

    def give_back(self, uri: str) -> None:
        lease.give_back(uri, self.run_id, self.writer, self.read, self.status)


def claim(
    target: str,
    uri: str,
    requeued: bool = False,
    what: str = "resuming",
    advice: str = "stop it first",
) -> Claim:
    """Take the lease of run ``target`` (ResumeError, one line, when a live process holds it or
    takes it first). ``requeued``: the process that left the run RUNNING is this cluster job's
    own earlier start, so gone."""
    try:
        client = store.open_store(uri)
        run = store.get_run(client, str(target), uri)
    except store.StoreError as e:
        raise ResumeError(str(e)) from None
    note = "" if requeued else refuse_a_live_run(run, uri, what, advice)
    if "rnnlab.task" not in run.data.tags:
        raise ResumeError(f"run {run.info.run_id} is not an rnnlab training run")
    writer, read = lease.me(), run.data.tags.get(lease.WRITER_TAG)
    try:
        lease.take(uri, run.info.run_id, read, writer, run.info.status)
    except lease.LeaseLost as e:
        raise ResumeError(str(e)) from None
    return Claim(run.info.run_id, writer, read, run.info.status, note)


def plan(
    cfg: Config,
    overrides: list[str],
    uri: str,
    workdir: Path,
    requeued: bool = False,
    claimed: Claim | None = None,
) -> Plan:
    """Check a ``resume=`` command line and fetch its checkpoint; ResumeError if it cannot go.

    ``cfg`` is what Hydra composed from the command line (defaults + overrides); only the keys
    the overrides name are taken from it, everything else from the checkpoint. ``requeued``: a
    requeued cluster job continuing its own run — the process that left it RUNNING is this job's
    earlier start, so gone, and a run without a checkpoint yet trains again from the start.
    ``claimed``: this process holds the run's lease (``claim``), so the run is RUNNING as its own
    and its status before is the claim's."""
    target = str(cfg.resume)
    run_id = status = None
    note = ""
    if names_a_run(target):
        try:
            client = store.open_store(uri)
            run = store.get_run(client, target, uri)
        except store.StoreError as e:
            raise ResumeError(str(e)) from None
        run_id, status = run.info.run_id, run.info.status
        if claimed is not None:
            status, note = claimed.status, claimed.note
        elif not requeued:
            note = refuse_a_live_run(run, uri)
        if "rnnlab.task" not in run.data.tags:
            raise ResumeError(f"run {run_id} is not an rnnlab training run")
        if requeued and not store.checkpoint_artifacts(client, run):
            return Plan(cfg, None, 0, uri, run_id, status)
        try:
            path = store.fetch_checkpoint(client, run, workdir)
        except store.StoreError as e:
            raise ResumeError(str(e)) from None
    else:
        path = Path(target).expanduser().resolve()
        if not path.is_file():
            raise ResumeError(
                f"resume={target!r} is neither a run id (32 hex digits, or a unique prefix of "
                f"≥ 6) nor a checkpoint file"
            )
    try:
        ck = checkpoint.Checkpoint.read(path)
    except checkpoint.CheckpointError as e:
        raise ResumeError(str(e)) from None
    if "config" not in ck.meta or "state" not in ck.meta:
        raise ResumeError(f"{path} is a checkpoint without its config or training state")
    iteration = ck.iteration

    # The checkpoint's config, with the keys the command line names taken from it.
    saved = flatten(config_of(ck))
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
    effective = config_of(flat)
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
        check_corpus(effective, ck, run if run_id else None)
    return Plan(effective, path, iteration, uri, run_id, status, changed, note)


def config_of(source: checkpoint.Checkpoint | dict) -> Config:
    """The typed config of a checkpoint (or of a flat dict); ResumeError if it is not valid."""
    try:
        if isinstance(source, dict):
            return checkpoint.config_from_flat(source)
        return source.config()
    except checkpoint.CheckpointError as e:
        raise ResumeError(str(e)) from None


def check_corpus(cfg: Config, ck: checkpoint.Checkpoint, run) -> None:
    """The corpus must still be the one the checkpoint was trained on."""
    from rnnlab.tasks import corpus
    from rnnlab.tasks.charrnn import Vocabulary, load_corpus

    text, path = load_corpus(cfg)
    saved = ck.vocab or ""
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
    """For ``rnnlab.sweeps.preflight``: raise ResumeError if this resume cannot go ahead."""
    if multirun:
        raise ResumeError("resume= continues one run: drop -m")
    with tempfile.TemporaryDirectory(prefix="rnnlab-resume-") as tmp:
        plan(cfg, overrides, store.resolve_uri(cfg.tracking.uri, launch_dir), Path(tmp))
