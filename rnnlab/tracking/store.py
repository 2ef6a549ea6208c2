"""The tracking store: the one place that resolves its URI, opens it, finds runs and keeps the
local journal of what could not be sent to it.

Everything else in rnnlab asks this module for a client, a run, a sweep's children or a run's
checkpoint. Invariants enforced here:

- *Safe store creation:* a SQLite store is opened (and, when new, created and migrated) under a
  file lock beside the database, so any number of processes may start at once on an empty
  folder and none ever sees, or leaves, a half-migrated schema. A new store is a copy of the
  empty store MLflow's migrations built once per MLflow version on this machine
  (``copy_empty_store``), renamed into place whole.
- *Bounded server calls:* one call to an HTTP tracking server gives up after about
  about 21 s (``HTTP_ENV``; MLflow's default retries block ~4 minutes); what a run then could not
  send goes to its ``Journal``, an append-only file in its job folder, replayed by ``python -m
  rnnlab.sync`` (or the next ``resume=``) exactly once.
- *A dead run is recognisable:* a run records where it runs (host, pid and that process's
  start time); ``is_dead`` tells a RUNNING run whose process is gone from one still training.

Not here: a job's lifecycle and statuses (``rnnlab.tracking.job``), the buffering of points
(``rnnlab.tracking.mlflow_tracker``).
"""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnlab.errors import UserError
from rnnlab.tracking import mlflow_view
from rnnlab.tracking.names import check_sqlite_file

if TYPE_CHECKING:  # MLflow loads only when a store is opened: preflight and --help stay fast
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

CHECKPOINT_DIR = "checkpoints"  # the artifact folder train() logs checkpoints into
CHECKPOINT_NAME = re.compile(r"^iter_(\d{7})\.npz$")  # never a *.tmp leftover
RUN_ID = re.compile(r"^[0-9a-f]{32}$")
RUN_ID_PREFIX = re.compile(r"^[0-9a-f]{6,32}$")
# One HTTP call: 1 retry, backoff factor 1, 10 s timeout — about 21 s at worst (MLflow: 7 retries,
# backoff factor 2 and a 120 s timeout, ~4 minutes). A user's own settings win.
HTTP_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


# What MLflow need not do in rnnlab's processes, set before MLflow's first import (a user's own
# setting wins; joblib's workers inherit it): no usage-telemetry client, whose thread starts
# in every process that imports MLflow and calls out over HTTP.
LEAN_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true"}


class StoreError(UserError):
    """The store, or a run in it, cannot be used as asked. The message is one line."""


# --- where the store is --------------------------------------------------------------------------


def resolve_uri(uri: str | None = None, launch_dir: Path | None = None) -> str:
    """The one rule for where runs are recorded: ``uri`` (``tracking.uri``, ``tracking_uri=``),
    else $MLFLOW_TRACKING_URI, else ``sqlite:///<launch_dir>/mlflow.db``; a relative SQLite path
    is made absolute against ``launch_dir`` (default: the current folder), so every job of a
    sweep shares one store whatever its working directory."""
    launch_dir = Path(launch_dir or Path.cwd()).resolve()
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return f"sqlite:///{launch_dir / 'mlflow.db'}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):  # a relative file
        return f"sqlite:///{launch_dir / uri.removeprefix('sqlite:///')}"
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a SQLite URI, else None."""
    if not uri.startswith("sqlite:///"):
        return None
    path = Path(uri.removeprefix("sqlite:///"))
    return path if path.is_absolute() else Path.cwd() / path


def bound_http_calls() -> None:
    """Make one call to a tracking server give up within about 21 s (see HTTP_ENV); skip what
    MLflow need not do here (``lean_mlflow``)."""
    for key, value in HTTP_ENV.items():
        os.environ.setdefault(key, value)
    lean_mlflow()


def lean_mlflow() -> None:
    """Set ``LEAN_ENV`` in this process (and its children) unless the user set them: call it
    before MLflow is first imported, as the telemetry switch is read then."""
    for key, value in LEAN_ENV.items():
        os.environ.setdefault(key, value)


def not_a_notebook() -> None:
    """For a command's own process (never a library caller's): when IPython is not imported
    yet, this process is no IPython or Jupyter session, so make ``import IPython`` fail as if
    it were not installed. MLflow's run and model tags ask the notebook context providers, which
    import IPython (~0.3 s of CPU) only to find that no notebook is running."""
    sys.modules.setdefault("IPython", None)  # type: ignore[arg-type]


# --- experiments ----------------------------------------------------------------------------------
# The training kind. MLflow 3.17/3.18 ignore it for the landing page (a hard-coded flag makes
# the page follow ``ui.ML_WORKFLOW``'s switch); set anyway, for the UIs that read it.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def artifact_location(uri: str) -> str | None:
    """Where a new experiment of store ``uri`` keeps its artifacts: ``mlruns/`` beside a SQLite
    file; None (MLflow's choice) for a server, which has its own artifact root."""
    db = sqlite_path(uri)
    return (db.resolve().parent / "mlruns").as_uri() if db is not None else None


def tag_experiment_kind(client, experiment) -> None:
    """Mark ``experiment`` (an MLflow Experiment) as training runs and give it rnnlab's chart
    view of all its runs (``rnnlab.tracking.mlflow_view``), unless already so."""
    if experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    mlflow_view.write_view(client, experiment, mlflow_view.EXPERIMENT_KEY, mlflow_view.view_state())


def new_experiment_options(uri: str) -> dict:
    """``create_experiment`` keywords for store ``uri``: the training kind, rnnlab's chart view,
    artifacts beside a SQLite file."""
    options: dict = {
        "tags": {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, **mlflow_view.experiment_view_tags()}
    }
    if (location := artifact_location(uri)) is not None:
        options["artifact_location"] = location
    return options


# --- opening it ----------------------------------------------------------------------------------


@contextmanager
def creation_lock(uri: str) -> Iterator[None]:
    """Hold ``<db>.lock`` while a SQLite store is opened (nothing to lock for a server)."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=600):
        yield


def open_store(uri: str, create: bool = False) -> MlflowClient:
    """A client for ``uri`` whose schema is complete. ``create=False``: a SQLite URI must name an
    existing file (MLflow would silently create an empty store, and every look-up would then
    say "no such run"). The first call on a SQLite store migrates it under ``creation_lock``."""
    from mlflow.tracking import MlflowClient

    bound_http_calls()
    path = sqlite_path(uri)
    if path is not None and not create and not path.is_file():
        raise StoreError(
            f"no MLflow store at {path} (tracking URI {uri}); pass tracking_uri= or set "
            f"MLFLOW_TRACKING_URI"
        )
    if path is None:
        return MlflowClient(uri)
    if path.is_file():
        try:
            check_sqlite_file(
                path
            )  # rnnlab.tracking.names: random bytes are no store, say so plainly
        except ValueError as e:
            raise StoreError(str(e)) from None
    try:
        with creation_lock(uri):
            if not path.is_file():  # a new store: a copy of the migrated schema, when cached
                copy_empty_store(path)
            client = MlflowClient(uri)  # builds the store: creates or migrates its tables
            client.search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001 — e.g. a file that is not a database
        raise StoreError(f"cannot open the MLflow store {uri}: {first_line(e)[:300]}") from None
    return client


# --- a new SQLite store: MLflow's migrations once per MLflow version, then a copy ---------------
# MLflow creates a SQLite store by running every schema migration since its first (~60 alembic
# scripts, ~1.5 s of CPU); the schema they end at is the same for every new store of one MLflow
# version. So the first new store on a machine also leaves an empty, fully migrated database in
# the cache folder, and each later new store starts as a copy of it; MLflow then opens it as it
# opens any store (it checks the schema is its newest, creates the Default experiment).


def cache_dir() -> Path:
    """Where rnnlab keeps what it builds once per machine: $RNNLAB_CACHE_DIR, else
    $XDG_CACHE_HOME/rnnlab, else ~/.cache/rnnlab."""
    if env := os.environ.get("RNNLAB_CACHE_DIR"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rnnlab"


def empty_store_path() -> Path:
    """The cached empty store of the installed MLflow version."""
    from mlflow.version import VERSION

    return cache_dir() / f"mlflow-{VERSION}-empty.db"


def schema_head() -> str:
    """The newest schema revision of the installed MLflow (its migration scripts' head)."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    return _get_latest_schema_revision()


def is_empty_store(path: Path, head: str) -> bool:
    """True when ``path`` is a SQLite database at schema revision ``head`` holding no
    experiment: a store MLflow migrated and nothing used."""
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            revision = con.execute("SELECT version_num FROM alembic_version").fetchall()
            experiments = con.execute("SELECT COUNT(*) FROM experiments").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return False
    return revision == [(head,)] and experiments == 0


def build_empty_store(dest: Path) -> None:
    """Run MLflow's own table creation and migrations on a new database at ``dest``: what
    MLflow does for a new SQLite store, without the Default experiment (whose artifact folder
    belongs to each store). Written beside ``dest`` and renamed into place."""
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp}")
    try:
        _initialize_tables(engine)
    finally:
        engine.dispose()
    os.replace(tmp, dest)


def copy_empty_store(path: Path) -> bool:
    """Create the new SQLite store ``path`` as a copy of the cached empty store (building that
    first when this MLflow version has none yet). False, leaving ``path`` absent, when the cache
    cannot be used: MLflow then creates the store itself, as it always could."""
    import shutil

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        head = schema_head()
        template = empty_store_path()
        if not is_empty_store(template, head):
            build_empty_store(template)
            if not is_empty_store(template, head):
                return False
        shutil.copyfile(template, tmp)
        os.replace(tmp, path)  # whole or absent: other processes wait on the creation lock
        return True
    except Exception:  # noqa: BLE001 — a cache we cannot read or write costs only time
        tmp.unlink(missing_ok=True)
        return False


def client(uri: str) -> MlflowClient:
    """A client for a store known to exist (a run or sweep already recorded in it): no checks,
    no migration. Calls to a server are bounded (``bound_http_calls``)."""
    from mlflow.tracking import MlflowClient

    bound_http_calls()
    return MlflowClient(uri)


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def experiment_name(cfg: Any) -> str:
    """``experiment_name``, else one experiment per task."""
    return cfg.experiment_name or cfg.task.name


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """The id of experiment ``name``, created if missing (tolerating a parallel creator)."""
    import mlflow

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise StoreError(
                f"experiment {name!r} is deleted in {client.tracking_uri}; restore it "
                f"(mlflow experiments restore --experiment-id {exp.experiment_id}) or pick "
                f"another experiment_name"
            )
        tag_experiment_kind(client, exp)  # MLflow then opens it on its training runs
        return exp.experiment_id
    try:
        return client.create_experiment(name, **new_experiment_options(client.tracking_uri))
    except mlflow.exceptions.MlflowException:
        return client.get_experiment_by_name(name).experiment_id


# --- runs ----------------------------------------------------------------------------------------


def _all_runs(client: MlflowClient, filter_string: str = "") -> Iterator[Run]:
    from mlflow.entities import ViewType

    ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    yield from search_all(client, ids, filter_string)


def search_all(
    client: MlflowClient, experiment_ids: list[str], filter_string: str = ""
) -> Iterator[Run]:
    """Every run matching ``filter_string``, oldest first, a page of 1000 at a time."""
    token = None
    while True:
        page = client.search_runs(
            experiment_ids,
            filter_string=filter_string,
            max_results=1000,
            order_by=["attributes.start_time ASC"],
            page_token=token,
        )
        yield from page
        token = page.token
        if not token:
            return


def get_run(client: MlflowClient, ref: str, uri: str | None = None) -> Run:
    """The run whose id is ``ref`` or starts with it (at least 6 hex digits, unique); else
    StoreError in one line (an ambiguous prefix lists the runs it matches)."""
    from mlflow.exceptions import MlflowException

    uri = uri or client.tracking_uri
    ref = ref.strip().lower()
    if not RUN_ID_PREFIX.match(ref):
        raise StoreError(f"{ref!r} is not a run id (32 hex digits, or a unique prefix of ≥ 6)")
    if RUN_ID.match(ref):
        try:
            run = client.get_run(ref)
        except MlflowException:
            raise StoreError(f"no run {ref!r} in {uri}") from None
    else:
        matches = [r for r in _all_runs(client) if r.info.run_id.startswith(ref)]
        if not matches:
            raise StoreError(f"no run whose id starts with {ref!r} in {uri}")
        if len(matches) > 1:
            shown = ", ".join(f"{r.info.run_id} ({r.info.run_name})" for r in matches[:10])
            more = f" and {len(matches) - 10} more" if len(matches) > 10 else ""
            raise StoreError(f"{ref!r} is the start of {len(matches)} run ids: {shown}{more}")
        run = matches[0]
    if run.info.lifecycle_stage == "deleted":
        raise StoreError(f"run {run.info.run_id} in {uri} is deleted")
    return run


def list_children(client: MlflowClient, parent_run_id: str, filter_string: str = "") -> list[Run]:
    """Every child run of ``parent_run_id`` (in any experiment: ``experiment_name`` may be
    swept), paged, oldest first."""
    clause = f"tags.`mlflow.parentRunId` = '{parent_run_id}'"
    return list(_all_runs(client, f"{clause} and {filter_string}" if filter_string else clause))


# --- where a run runs, and dead runs -------------------------------------------------------------


def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), so a reused pid is told
    apart from the process that opened a run; None where /proc is missing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def where_tags() -> dict[str, str]:
    """Tags that say where this process runs: host, pid, its start time."""
    pid = os.getpid()
    tags = {
        "rnnlab.host": socket.gethostname(),
        "rnnlab.pid": str(pid),
        "rnnlab.started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if (start := _process_start(pid)) is not None:
        tags["rnnlab.pid_start"] = start
    return tags


def is_dead(run: Run) -> bool:
    """True for a RUNNING run whose process, on this host, is gone. A run of another host (or
    one that never recorded where it runs) cannot be checked here: False."""
    if run.info.status not in ("RUNNING", "SCHEDULED"):
        return False
    tags = run.data.tags
    if tags.get("rnnlab.host") != socket.gethostname() or "rnnlab.pid" not in tags:
        return False
    pid = int(tags["rnnlab.pid"])
    start = _process_start(pid)
    if start is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return "rnnlab.pid_start" in tags  # alive, but /proc cannot say it is the same one
    return "rnnlab.pid_start" in tags and start != tags["rnnlab.pid_start"]


def is_alive(run: Run) -> bool:
    """True for a RUNNING run whose recorded process, on this host, is alive (the same one:
    its start time matches). Another host's run, or one that recorded no pid: False."""
    tags = run.data.tags
    if run.info.status not in ("RUNNING", "SCHEDULED") or "rnnlab.pid" not in tags:
        return False
    return tags.get("rnnlab.host") == socket.gethostname() and not is_dead(run)


def where_text(run: Run) -> str:
    """Where a run's process ran, in words: "process 4242 on vm", or that it was not recorded."""
    tags = run.data.tags
    if "rnnlab.pid" not in tags:
        return "process (it recorded no host or pid)"
    return f"process {tags['rnnlab.pid']} on {tags.get('rnnlab.host', '?')}"


def describe_status(run: Run) -> str:
    """The run's status, with RUNNING told apart: "RUNNING (dead: its process is gone)"."""
    return f"{run.info.status} (dead: its process is gone)" if is_dead(run) else run.info.status


# --- checkpoints in the store --------------------------------------------------------------------


def checkpoint_artifacts(client: MlflowClient, run: Run) -> list[str]:
    """Artifact paths of the run's checkpoints, oldest first."""
    from mlflow.exceptions import MlflowException

    try:
        files = client.list_artifacts(run.info.run_id, CHECKPOINT_DIR)
    except (MlflowException, OSError):
        return []
    names = [Path(f.path).name for f in files if not f.is_dir]
    return [f"{CHECKPOINT_DIR}/{n}" for n in sorted(n for n in names if CHECKPOINT_NAME.match(n))]


def fetch_checkpoint(client: MlflowClient, run: Run, dest: Path) -> Path:
    """Download the run's newest checkpoint that reads whole into ``dest``: a process killed
    while uploading can leave the newest copy cut short, and then the one before it is used.
    StoreError if it has none."""
    from rnnlab.training.checkpoint import Checkpoint, CheckpointError

    found = checkpoint_artifacts(client, run)
    if not found:
        kind = run.data.tags.get("rnnlab.kind")
        hint = "; it is a sweep's parent run, use one of its children" if kind == "sweep" else ""
        raise StoreError(f"run {run.info.run_id} has no checkpoint artifacts{hint}")
    dest.mkdir(parents=True, exist_ok=True)
    problem = ""
    for artifact in reversed(found):
        with quiet_artifact_transfers():
            path = Path(client.download_artifacts(run.info.run_id, artifact, str(dest)))
        try:
            Checkpoint.read(path)
            return path
        except CheckpointError as e:
            problem = problem or named(e, path, f"run {run.info.run_id}'s {artifact}")
    raise StoreError(f"run {run.info.run_id} has no readable checkpoint ({problem})")


def named(error: BaseException, path: Path, name: str) -> str:
    """``error``'s message with the local copy ``path`` called by the run's own file ``name``
    (a temporary path means nothing to the reader)."""
    text = str(error)
    if str(path) in text:
        return text.replace(str(path), name)
    return f"{name}: {text}"


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


# --- what a run already holds (exactly once) -----------------------------------------------------


def logged_steps(client: MlflowClient, run_id: str) -> dict[str, int]:
    """{metric key: the last step the store holds}: a resumed run (or a replayed journal) sends
    only later points, so each step is logged once."""
    run = client.get_run(run_id)
    last = {}
    for key in run.data.metrics:
        history = client.get_metric_history(run_id, key)
        if history:
            last[key] = max(m.step for m in history)
    return last


def logged_files(client: MlflowClient, run_id: str, folder: str) -> set[str]:
    """Artifact paths already in ``folder`` of the run (e.g. ``samples``)."""
    from mlflow.exceptions import MlflowException

    try:
        return {f.path for f in client.list_artifacts(run_id, folder) if not f.is_dir}
    except (MlflowException, OSError):
        return set()
