"""A job's life as one MLflow run: open it, record what made it, train, close it with a status.

This is the only module that maps what happened to a run's status:

- FINISHED: training completed (a search's pruned trial included: it is done, not failed);
- KILLED: SIGINT or SIGTERM, any number of them — the loop's stop checkpoint (or, after a
  second Ctrl-C, the one before it) and every point up to it are in the store;
- FAILED: an exception (divergence included), with an ``error`` tag; also a run whose store
  stayed unreachable beyond ``tracking.retry_seconds`` (its journal holds the rest).

A job holds SIGINT/SIGTERM for its whole life (``signals.stop_on_signals``), so a signal while
the run is being opened or closed is recorded, never a half-closed run. Every run records where
it runs (``store.where_tags``) and its job folder, so a dead run is recognisable and its journal
can be found. ``resume_run`` continues a run from its newest checkpoint inside the calling
process (``resume=<run_id>`` and a requeued cluster job both use it).

Not here: the training loop (``rnnlab.training.loop``), planning and checking a resume
(``rnnlab.tracking.resume``), the store itself (``rnnlab.tracking.store``).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import mlflow
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import get_registered_sources
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

import rnnlab
from rnnlab.config import Config, flatten, to_yaml
from rnnlab.tasks import TASKS, check, corpus
from rnnlab.tasks.judging import disagreement, flagged
from rnnlab.tracking import lease, resume, store
from rnnlab.tracking.journal import Journal
from rnnlab.tracking.mlflow_tracker import STORE_ERRORS, MlflowTracker
from rnnlab.tracking.pyfunc import log_run_model
from rnnlab.training import memory
from rnnlab.training.best import no_better_than_baseline
from rnnlab.training.checkpoint import latest
from rnnlab.training.loop import Interrupted, train
from rnnlab.training.signals import stop_on_signals, stop_requested
from rnnlab.training.tracker import FinishedEarly, Tracker

PARENT_RUN_FILE = (
    ".rnnlab_parent_run_id"  # the sweep's parent run id, written by rnnlab.sweeps.parent_run
)
SWEPT_KEYS_FILE = ".rnnlab_swept_keys"  # the keys a sweep varies, one a line: child run names


class StoreUnreachable(RuntimeError):
    """The store refused every write for longer than the retry budget; the run stopped with a
    checkpoint and its journal holds what was not sent. The message is one line."""


@dataclass
class JobContext:
    """Where and how a job was launched (filled from Hydra by ``run.py``; plain for tests)."""

    launch_dir: Path = field(default_factory=Path.cwd)
    output_dir: Path | None = None
    overrides: list[str] = field(default_factory=list)  # every override of this job
    run_name: str | None = None  # None: MLflow picks a name
    sweep_dir: Path | None = None  # set for the jobs of a multirun
    multirun: bool = False
    tracking_uri: str | None = None  # resolved once (rnnlab.tracking.store.resolve_uri)
    # wraps the run's tracker (a search's trial reports to Optuna: rnnlab.sweeps.search)
    tracker_hook: Callable[[Tracker, Config, MlflowClient, str], Tracker] | None = None
    job_num: int | None = None  # the job's index in its sweep
    extra_tags: dict[str, str] = field(default_factory=dict)


# --- what launched the run, and what it learns from ----------------------------------------------


def git_tags(cwd: Path) -> dict[str, str]:
    """Commit and dirty flag of the rnnlab checkout, when it is one."""
    repo = Path(rnnlab.__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"mlflow.source.git.commit": commit, "rnnlab.git_dirty": str(dirty).lower()}


def run_tags(cfg: Config, ctx: JobContext, out_dir: Path) -> dict[str, str]:
    """What launched this run (code version, overrides, sweep) and where it runs."""
    tags = {
        "rnnlab.task": cfg.task.name,
        "rnnlab.version": rnnlab.__version__,
        "rnnlab.overrides": " ".join(ctx.overrides),
        "rnnlab.job_dir": str(Path(out_dir).resolve()),
        **store.where_tags(),
        **git_tags(ctx.launch_dir),
        **ctx.extra_tags,
    }
    if ctx.sweep_dir is not None:
        tags["rnnlab.sweep_dir"] = str(ctx.sweep_dir)
    if ctx.job_num is not None:
        tags["rnnlab.job_num"] = str(ctx.job_num)
    return tags


def read_parent_run_id(sweep_dir: Path | None) -> str | None:
    """The parent run a sweep's callback opened, if this job belongs to one."""
    if sweep_dir is None:
        return None
    marker = Path(sweep_dir) / PARENT_RUN_FILE
    return marker.read_text().strip() if marker.is_file() else None


def read_swept_keys(sweep_dir: Path | None) -> list[str]:
    """The keys the sweep varies (empty outside a sweep, or when none is recorded)."""
    if sweep_dir is None:
        return []
    marker = Path(sweep_dir) / SWEPT_KEYS_FILE
    return marker.read_text().split() if marker.is_file() else []


def _file_source(path: Path) -> DatasetSource:
    """A local-file dataset source, named explicitly: ``mlflow.data.from_numpy(source=str)``
    asks a registry that holds two local-file sources and warns that the string is ambiguous."""
    uri = path.resolve().as_uri()
    for source in get_registered_sources():
        if source.__name__ == "LocalArtifactDatasetSource":
            return source(uri)
    return CodeDatasetSource(tags={"uri": uri})  # never in MLflow 3.x; keeps a record anyway


def dataset_of(cfg: Config) -> tuple[MetaDataset, str]:
    """(dataset, sha256) of what this run learns from: the corpus file for the char-RNN; for a
    task that makes its own data, what its ``fixed_data`` names (the adder's evaluation sums, the
    adding and copy problems' held-out sequences, digits' images and split): training examples
    are drawn fresh every step."""
    if cfg.task.name == "charrnn":
        path = corpus.resolve(cfg.data.name, cfg.data.path, cfg.data.url)
        digest = corpus.sha256_of(path)
        name = Path(cfg.data.path).stem if cfg.data.path else cfg.data.name
        return MetaDataset(_file_source(path), name=name, digest=digest[:36]), digest
    name, data, tags = TASKS[cfg.task.name].fixed_data(cfg)
    digest = hashlib.sha256(data).hexdigest()
    return MetaDataset(CodeDatasetSource(tags=tags), name=name, digest=digest[:36]), digest


def record_inputs(tracker: MlflowTracker, cfg: Config) -> None:
    """Params, the resolved config and the dataset: what made this run (through the tracker,
    so a store that refuses them has them journalled)."""
    tracker.log_params({k: str(v) for k, v in flatten(cfg).items()})
    tracker.log_text(to_yaml(cfg), "config.yaml")
    dataset, digest = dataset_of(cfg)
    try:
        log_dataset(dataset, digest)
    except STORE_ERRORS as e:  # the dataset entry is MLflow's own; the digest is journalled
        tracker.set_tag("rnnlab.dataset_error", f"{type(e).__name__}: {e}"[:5000])
    tracker.set_tag("rnnlab.dataset_sha256", digest)


def log_dataset(dataset, digest: str, attempts: int = 3) -> None:
    """``mlflow.log_input`` for the active run. MLflow creates an experiment's dataset row on
    first use without a lock, so two jobs of a parallel sweep logging the same new dataset can
    collide on its UNIQUE key; the loser retries and finds the row the winner created."""
    for attempt in range(attempts):
        try:
            mlflow.log_input(dataset, context="training", tags={"sha256": digest})
            return
        except mlflow.exceptions.MlflowException as e:
            # SQLite's message, then PostgreSQL's (a cluster's store)
            duplicate = "UNIQUE constraint failed: datasets" in str(e) or "duplicate key" in str(e)
            if not duplicate or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def end_leaked_runs() -> None:
    """A joblib worker process may still hold a run from an earlier job that died: close it."""
    while (run := mlflow.active_run()) is not None:
        try:
            mlflow.end_run(RunStatus.to_string(RunStatus.FAILED))
        except Exception:  # noqa: BLE001 — its store is away; forget it in this process
            mlflow.tracking.fluent._active_run_stack.get().pop()
        print(f"rnnlab: closed leaked run {run.info.run_id}", file=sys.stderr)


TAG_BASELINE = "rnnlab.no_better_than_baseline"  # objective ≥ a constant predictor's


def tag_run(tracker: MlflowTracker, final: dict[str, float]) -> None:
    """After training: the tags ``rnnlab.stopped_early`` (the iteration), ``rnnlab.warm_flag``
    (the relative disagreement) and ``rnnlab.no_better_than_baseline`` when they apply."""
    if "stopped_early" in final:
        tracker.set_tag("rnnlab.stopped_early", str(int(final["stopped_early"])))
    if flagged(final, "final/val_"):
        tracker.set_tag("rnnlab.warm_flag", f"{disagreement(final, 'final/val_'):.4f}")
    if no_better_than_baseline(final):  # it learned nothing: the report flags it
        line = f"objective {final['objective']:.6g} ≥ {final['baseline_objective']:.6g}"
        tracker.set_tag(TAG_BASELINE, line)


# --- a job ---------------------------------------------------------------------------------------


def make_tracker(
    cfg: Config, client: MlflowClient, run_id: str, out_dir: Path, resumed: bool = False
) -> MlflowTracker:
    """The run's tracker, with its journal in the job folder; a resumed run's knows what the
    store already holds (exactly once)."""
    logged = store.logged_steps(client, run_id) if resumed else None
    texts = store.logged_files(client, run_id, "samples") if resumed else None
    return MlflowTracker(
        client,
        run_id,
        cfg.tracking.flush_points,
        cfg.tracking.flush_seconds,
        journal=Journal(out_dir, run_id, client.tracking_uri),
        retry_seconds=cfg.tracking.retry_seconds,
        logged=logged,
        logged_texts=texts,
    )


def hooked(ctx: JobContext, tracker: Tracker, cfg: Config, client: MlflowClient, run_id: str):
    """The tracker training records through: ``ctx.tracker_hook``'s wrapper, else ``tracker``."""
    return ctx.tracker_hook(tracker, cfg, client, run_id) if ctx.tracker_hook else tracker


def run_job(
    cfg: Config, ctx: JobContext, show_progress: bool = True, resume_from: Path | None = None
) -> dict[str, float]:
    """Train ``cfg`` inside an MLflow run; returns the final metrics (with ``objective``).
    ``resume_from``: a checkpoint file to start a new run from (``resume=<path>`` sets it)."""
    if cfg.resume and resume_from is None:  # resume=<run id | checkpoint>
        return resume_job(cfg, ctx, show_progress)
    out_dir = ctx.output_dir or Path(tempfile.mkdtemp(prefix="rnnlab-"))
    # A sweeper's proposal never went through the CLI's preflight: a run that cannot fit in
    # memory is refused here, in one line, before a run is opened
    memory.check(cfg)
    if not cfg.tracking.enabled:
        check(cfg)
        return train(cfg, None, out_dir, resume_from=resume_from, show_progress=show_progress)
    uri = ctx.tracking_uri = ctx.tracking_uri or store.resolve_uri(cfg.tracking.uri, ctx.launch_dir)
    with stop_on_signals(hard_interrupt=False):
        client = store.open_store(uri, create=True)
        mlflow.set_tracking_uri(uri)
        experiment_id = store.ensure_experiment(client, store.experiment_name(cfg))
        end_leaked_runs()
        run = mlflow.start_run(
            experiment_id=experiment_id,
            run_name=ctx.run_name,
            parent_run_id=read_parent_run_id(ctx.sweep_dir),
            tags=run_tags(cfg, ctx, out_dir) | lease.creation_tags(lease.me()),  # its writer
        )
        run_id = run.info.run_id
        tracker = make_tracker(cfg, client, run_id, out_dir)
        tracked = hooked(ctx, tracker, cfg, client, run_id)  # a search's trial reports to Optuna

        def before_training() -> None:
            check(cfg)  # values a sweeper proposes never went through the CLI's preflight
            record_inputs(tracker, cfg)

        return _train_and_close(
            cfg, client, run_id, tracker, tracked, out_dir, resume_from, show_progress,
            before_training,
        )  # fmt: skip


def resume_job(
    cfg: Config,
    ctx: JobContext,
    show_progress: bool = True,
    requeued: Callable[[resume.Plan], str] | None = None,
) -> dict[str, float]:
    """``run_job`` for a config with ``resume`` set; returns the final metrics. ``requeued``: a
    requeued cluster job continuing its own run (``rnnlab.sweeps.requeue``); it gives the line for
    the run's ``rnnlab.requeue_<n>`` tag, counted in ``rnnlab.requeues`` (not
    ``rnnlab.resumes``)."""
    out_dir = ctx.output_dir or Path(tempfile.mkdtemp(prefix="rnnlab-"))
    uri = ctx.tracking_uri = ctx.tracking_uri or store.resolve_uri(cfg.tracking.uri, ctx.launch_dir)
    claimed = None
    if resume.names_a_run(cfg.resume):  # at most one writer: take the run's lease first
        claimed = resume.claim(str(cfg.resume), uri, requeued is not None)
    try:
        if claimed is not None:
            replay_journal(claimed.run_id, uri)
        where = out_dir / "resumed_from"
        p = resume.plan(cfg, ctx.overrides, uri, where, requeued is not None, claimed)
        memory.check(p.cfg)  # the checkpoint's network on this machine
    except BaseException:  # refused before writing anything: the run is as it was
        if claimed is not None:
            claimed.give_back(uri)
        raise
    if requeued is not None:
        note = requeued(p)
        print(f"rnnlab: requeued: continuing run {p.run_id} {note}", file=sys.stderr)
        return continue_run(p, ctx, out_dir, show_progress, kind="requeue", note=note)
    if p.run_id is None:  # a checkpoint file: a new run, whose `resume` param names the file
        tags = {"rnnlab.resumed_from": str(p.checkpoint), "rnnlab.resumed_from_iteration":
                str(p.iteration)}  # fmt: skip
        ctx = replace(ctx, extra_tags={**ctx.extra_tags, **tags})
        return run_job(p.cfg, ctx, show_progress, resume_from=p.checkpoint)
    if p.note:
        print(f"rnnlab: {p.note}", file=sys.stderr)
    return continue_run(p, ctx, out_dir, show_progress)


def resume_run(
    run_id: str,
    tracking_uri: str | None = None,
    changes: dict[str, Any] | None = None,
    output_dir: Path | None = None,
    show_progress: bool = False,
) -> dict[str, float]:
    """Continue run ``run_id`` from its newest checkpoint inside this process, in the same run
    (what a requeued cluster job calls; no Hydra needed). ``changes``: flat config keys to
    override, as ``resume=<run_id> key=value`` would (``{"iterations": 200000}``). Returns the
    final metrics; ResumeError (one line) when it cannot go ahead, like the command line."""
    cfg = Config()
    cfg.resume, cfg.tracking.uri = run_id, tracking_uri
    overrides = [f"resume={run_id}"]
    for key, value in (changes or {}).items():
        *parents, leaf = key.split(".")
        node = cfg
        for name in parents:
            node = getattr(node, name)
        if not hasattr(node, leaf):
            raise resume.ResumeError(f"{key} is not a config key")
        setattr(node, leaf, value)
        overrides.append(f"{key}={value}")
    ctx = JobContext(output_dir=output_dir, overrides=overrides)
    return resume_job(cfg, ctx, show_progress)


def replay_journal(run_id: str, uri: str) -> dict[str, int] | None:
    """A resume first sends what the run's journal holds (see ``rnnlab.sync``); the caller
    holds the run's lease."""
    client = store.open_store(uri)
    run = client.get_run(run_id)
    job_dir = run.data.tags.get("rnnlab.job_dir")
    if not job_dir:
        return None
    journal = Journal(Path(job_dir), run.info.run_id, uri)
    if not journal.pending:
        return None
    counts = journal.replay(client)
    print(f"rnnlab: replayed the journal of run {run.info.run_id}: {counts}", file=sys.stderr)
    return counts


def continue_run(
    p: resume.Plan,
    ctx: JobContext,
    out_dir: Path,
    show_progress: bool,
    kind: str = "resume",
    note: str | None = None,
) -> dict[str, float]:
    """Reopen run ``p.run_id`` and train it on from ``p.checkpoint`` (from the start if None),
    logging each step once (statuses as run_job). ``kind`` names the counting tags
    (``rnnlab.<kind>s``, ``rnnlab.<kind>_<n>``); ``note``: that tag's line."""
    with stop_on_signals(hard_interrupt=False):
        mlflow.set_tracking_uri(p.uri)
        client = store.open_store(p.uri)
        end_leaked_runs()
        run_id = p.run_id
        run = client.get_run(run_id)
        tags = run.data.tags
        n = int(tags.get(f"rnnlab.{kind}s", "0")) + 1
        start = f"{p.checkpoint.name} (iteration {p.iteration})" if p.checkpoint else "the start"
        note = note or f"from {start} after {p.status}"
        if p.changed:
            note += "; overrides: " + " ".join(p.changed)
        if "error" in tags:
            note += f"; previous error: {tags['error']}"
        tracker = make_tracker(p.cfg, client, run_id, out_dir, resumed=True)
        if tracker.logged and max(tracker.logged.values()) > p.iteration:
            note += (f"; steps {p.iteration + 1}-{max(tracker.logged.values())} were logged "
                     f"before and are not logged again")  # fmt: skip
        # Where it runs now: this process, this job folder.
        moved = {**store.where_tags(), "rnnlab.job_dir": str(Path(out_dir).resolve())}
        mlflow.start_run(run_id=run_id, tags={f"rnnlab.{kind}s": str(n), f"rnnlab.{kind}_{n}":
                                              note[:5000], **moved})  # fmt: skip
        if "error" in tags:  # it described the stop this resume recovers from
            tracker.delete_tag("error")
        tracker.log_text(to_yaml(p.cfg), f"config_{kind}_{n}.yaml")
        tracked = hooked(ctx, tracker, p.cfg, client, run_id)  # a requeued search trial

        def before_training() -> None:  # a job killed before its inputs were recorded
            if not run.data.params:
                record_inputs(tracker, p.cfg)

        return _train_and_close(
            p.cfg, client, run_id, tracker, tracked, out_dir, p.checkpoint, show_progress,
            before_training,
        )  # fmt: skip


def _train_and_close(
    cfg: Config,
    client: MlflowClient,
    run_id: str,
    tracker: MlflowTracker,
    tracked,
    out_dir: Path,
    resume_from: Path | None,
    show_progress: bool,
    before_training: Callable[[], None] | None = None,
) -> dict[str, float]:
    """Train inside the open run ``run_id`` and close it with its status (see the module)."""
    try:
        if before_training is not None:
            before_training()
        if (name := stop_requested()) is not None:  # a signal while the run was being opened
            raise Interrupted(name, 0, None)
        final = train(cfg, tracked, out_dir, resume_from=resume_from, show_progress=show_progress)
        if tracker.unreachable:  # training ended on its own while the store was away
            line = f"{tracker.unreachable}; once it is back: python -m rnnlab.sync {out_dir}"
            _close(tracker, RunStatus.FINISHED)  # the journal holds it, and the status
            raise StoreUnreachable(line)
        tag_run(tracker, final)  # rnnlab.stopped_early, rnnlab.warm_flag
        log_run_model(cfg, tracker, out_dir)  # rnnlab.model: a char-RNN run's pyfunc
        _close(tracker, RunStatus.FINISHED)
        if tracker.waiting:  # the store refused some writes; the journal holds them, in order
            print(f"rnnlab: {waiting_line(tracker, out_dir)}", file=sys.stderr)
        return final
    except FinishedEarly as e:  # e.g. a search pruned this trial: done, not failed
        _close(tracker, RunStatus.FINISHED)
        return e.metrics
    except Interrupted as e:
        if tracker.unreachable:
            where = f"stopped at iteration {e.iteration}"
            if e.checkpoint_path is not None:
                where += f" with checkpoint {e.checkpoint_path}"
            line = (f"{tracker.unreachable}; {where}; once it is back: "
                    f"python -m rnnlab.sync {out_dir}")  # fmt: skip
            _close(tracker, RunStatus.FAILED, f"store unreachable: {line}")
            raise StoreUnreachable(line) from None
        from rnnlab.tracking.slurm import on_interrupted

        on_interrupted(e, client, run_id)  # a SLURM job being requeued stays RUNNING and exits
        _close(tracker, RunStatus.KILLED, f"interrupted: {e}")
        raise
    except KeyboardInterrupt:  # not from the loop's stop path (which always checkpoints)
        last = latest(Path(out_dir) / "checkpoints")
        why = f"interrupted at once; last checkpoint {last.name}" if last else "interrupted"
        _close(tracker, RunStatus.KILLED, why if last else "interrupted before a checkpoint")
        raise
    except Exception as e:
        _close(tracker, RunStatus.FAILED, f"{type(e).__name__}: {e}"[:5000])
        raise


def waiting_line(tracker: MlflowTracker, out_dir: Path) -> str:
    """What a run that ended with writes in its journal says: the outage, and how to send them."""
    outage = tracker.outage
    since = f" since {outage.began:%H:%M:%S} ({outage.error})" if outage is not None else ""
    return (f"the tracking store has refused writes{since}: the rest of this run, its status "
            f"included, waits in {tracker.journal.path}; once the store takes writes again: "
            f"python -m rnnlab.sync {out_dir}")  # fmt: skip


def _close(tracker: MlflowTracker, status: int, error: str | None = None) -> None:
    """Flush, tag, end the run with ``status`` (through the journal if the store is away), and
    let go of MLflow's active run in this process."""
    name = RunStatus.to_string(status)
    with stop_on_signals(hard_interrupt=False):  # nothing cuts the close short
        if error is not None:
            tracker.set_tag("error", error)
        sent = tracker.end(name)
        try:
            if sent:
                mlflow.end_run(name)
            else:
                raise OSError("store away")
        except Exception:  # noqa: BLE001 — the journal holds the status; forget the run here
            stack = mlflow.tracking.fluent._active_run_stack.get()
            if stack:
                stack.pop()
