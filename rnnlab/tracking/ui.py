"""What a person sees of a run once it ends, and where MLflow files it.

A finished job's summary line names its objective by metric key and value
(``objective val/loss_warm 1.7817``) and its other final numbers by their keys; it closes with
its full run id, where to look at it in the MLflow UI (its run page and its chart view with the
learning curves first, ``rnnlab.tracking.mlflow_view``), its local checkpoints folder and the
commands that sample and resume it; a job without overrides is named after its task and start
time (not MLflow's random ``grandiose-whale-90``). Experiments rnnlab creates or uses carry the
training kind's tag and rnnlab's chart view, and keep their artifacts beside the SQLite store
(MLflow's default is ``./mlruns`` in whatever folder the process runs in).

Not here: a sweep's closing block (``rnnlab.sweeps.leaderboard``), the run's life
(``rnnlab.tracking.job``)."""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Any

from rnnlab.tasks.judging import Judged, disagreement, flagged, metric_key
from rnnlab.tracking import mlflow_view, store
from rnnlab.training.best import no_better_than_baseline

UI_ADDRESS = "http://127.0.0.1:5000"  # where `mlflow ui` listens by default
# MLflow 3.17's UI also keeps a browser-wide GenAI/Model-training switch (GenAI at first) that
# outranks the experiment's kind on a fresh browser; the addresses rnnlab prints set it.
ML_WORKFLOW = "workflowType=machine_learning"


def override_key(override: str) -> str:
    """``+task.init=uniform`` → ``task.init``."""
    return override.split("=", 1)[0].lstrip("+~")


def run_name(overrides: list[str], swept: list[str], fallback: str) -> str | None:
    """A child is named after the values its sweep varies (``hidden_size=50``); other runs after
    all their overrides; None lets MLflow pick a name."""
    chosen = [o for o in overrides if override_key(o) in swept]
    return ",".join(chosen) or fallback or None


def default_run_name(task: str, now: float | None = None) -> str:
    """A job with no overrides: ``charrnn-20261201-213005`` (task and local start time)."""
    return f"{task}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}"


def ui_lines(
    uri: str, experiment_id: str, run_id: str | None = None, view_key: str | None = None
) -> list[str]:
    """How to open experiment ``experiment_id`` in the MLflow UI: one of its runs' page, or the
    runs table of view ``view_key`` (``rnnlab.tracking.mlflow_view``: the objective and the
    params that tell the runs apart as its first columns, the best run first)."""
    if view_key is not None:
        page = f"{mlflow_view.page(experiment_id, view_key, 'TABLE')}&{ML_WORKFLOW}"
    else:
        page = f"#/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "")
        page += f"?{ML_WORKFLOW}"
    if uri.startswith(("http://", "https://")):
        return [f"{uri.rstrip('/')}/{page}"]
    return [
        f"mlflow ui --backend-store-uri {shlex.quote(uri)}",
        f"then {UI_ADDRESS}/{page}",
    ]


def charts_address(uri: str, experiment_id: str, key: str) -> str:
    """The address of chart view ``key`` (``rnnlab.tracking.mlflow_view``) of experiment
    ``experiment_id``: learning curves first."""
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else UI_ADDRESS
    return f"{base}/{mlflow_view.page(experiment_id, key)}&{ML_WORKFLOW}"


def param_keys(keys, params) -> tuple[str, ...]:
    """Override keys (``task``, ``hidden_size``) → the params they set (``task.name``, …);
    keys a run has no param for are left out."""
    out = []
    for key in keys:
        for candidate in (key, f"{key}.name"):
            if candidate in params and candidate not in out:
                out.append(candidate)
                break
    return tuple(out)


def ranking_of(run, params: tuple[str, ...] = ()) -> mlflow_view.Ranking | None:
    """How a view of ``run`` (or of its sweep, showing ``params``) ranks runs: by the objective
    the run minimised, as its task judges it."""
    from rnnlab.tasks import judged_run

    how = judged_run(run)
    if how is None:
        return None
    objective = how.of_run(run)
    return mlflow_view.Ranking(objective, how.objectives.get(objective, False), params)


def is_default_store(uri: str, launch_dir: Path) -> bool:
    """True when ``uri`` is the store a command started in ``launch_dir`` picks by itself."""
    db = store.sqlite_path(uri)
    return db is not None and db.resolve() == (Path(launch_dir) / "mlflow.db").resolve()


def closing_lines(
    uri: str,
    experiment_id: str,
    run_id: str,
    task: str,
    status: str,
    launch_dir: Path,
    view_key: str | None = None,
    checkpoints: Path | None = None,
) -> list[str]:
    """The lines a single job ends with: id, UI address (and that of chart view ``view_key``,
    when given), its local checkpoints folder (when given), and commands to sample and
    resume."""
    default = is_default_store(uri, launch_dir)
    store_for_sample = "" if default else f" tracking_uri={shlex.quote(uri)}"
    store_for_run = "" if default else f" tracking.uri={shlex.quote(uri)}"
    sample = f"python -m rnnlab.sample run_id={run_id}{store_for_sample}"
    sample += " a=77 b=41" if task == "adder" else " length=300"
    resume = f"python -m rnnlab.run resume={run_id}{store_for_run}"
    if status == "FINISHED":
        resume += " iterations=<more>"
    view, *then = ui_lines(uri, experiment_id, run_id)
    lines = [f"rnnlab: run id {run_id} ({status})", f"  view:    {view}"]
    lines += [f"           {t}" for t in then]
    if view_key:
        lines.append(f"  charts:  {charts_address(uri, experiment_id, view_key)}")
    if checkpoints is not None:
        lines.append(f"  checkpoints: {shown_path(checkpoints, launch_dir)}")
    lines += [f"  sample:  {sample}", f"  resume:  {resume}"]
    return lines


def shown_path(path: Path, launch_dir: Path) -> str:
    """``path`` relative to the launch folder when it lies inside it, else absolute."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path(launch_dir).resolve()))
    except ValueError:
        return str(path)


def last_run_closing(task: str, launch_dir: Path, uri: str) -> tuple[Any, list[str]] | None:
    """(the MLflow run, its ``closing_lines``) of the run this process opened last in store
    ``uri``, if any. A run that is not a sweep's child gets its own chart view first
    (``rnnlab.tracking.mlflow_view``)."""
    import mlflow

    try:
        run = mlflow.last_active_run()
    except Exception:  # the store is unreachable: the summary line already said how it ended
        return None
    if run is None:
        return None
    i = run.info
    key = None
    if "mlflow.parentRunId" not in run.data.tags:  # a sweep's children share the sweep's view
        given = run.data.tags.get("rnnlab.overrides", "").split()
        keys = [override_key(o) for o in given if "=" in o]  # the keys this job set
        ranking = ranking_of(run, param_keys(keys, run.data.params))
        try:
            if mlflow_view.write_run_view(store.client(uri), i.experiment_id, i.run_id, ranking):
                key = mlflow_view.view_key_for_run(i.run_id)
        except Exception:  # no view, no charts: line; the run is recorded all the same
            pass
    job_dir = run.data.tags.get("rnnlab.job_dir")
    checkpoints = Path(job_dir) / "checkpoints" if job_dir else None
    lines = closing_lines(
        uri, i.experiment_id, i.run_id, task, i.status, launch_dir, key, checkpoints
    )
    return run, lines


# What a finished job's summary line shows after its objective, by metric key, and how.
SUMMARY_KEYS = (
    ("final/val_loss", "{:.4f}"),  # the h = 0 number, labelled: not the default objective
    ("final/val_exact_acc", "{:.4f}"),
    ("iters_to_100", "{:,.0f}"),
    ("iters_to_solve", "{:,.0f}"),  # a long-memory task's solved criterion first met
    ("final/smooth_loss", "{:.4g}"),
    ("final/chars_per_sec", "{:,.0f}"),
)


def closing_summary(final: dict[str, float], judged: Judged | None, objective: str) -> str:
    """What a finished job's summary line says of its result: the objective by its metric's key
    and value (``objective val/loss_warm 1.7817``, ``Judged.phrase``), then the other final
    numbers by their own keys, an early stop and the warm/zero flag."""
    if judged is not None and objective in judged.objectives:
        parts = [judged.phrase(objective, final["objective"])]
    else:
        parts = [f"objective {final['objective']:.4f}"]
    own = "final/" + metric_key(objective)  # the objective's own final value: said already
    for key, form in SUMMARY_KEYS:
        if key in final and key != own:
            parts.append(f"{key} {form.format(final[key])}")
    return ", ".join(parts) + closing_note(final)


def closing_note(final: dict[str, float]) -> str:
    """What the run's closing line adds: the warm/zero flag, an early stop, and a run no
    better than a constant predictor."""
    note = ""
    if no_better_than_baseline(final):
        note += (f", no better than a constant predictor (objective {final['objective']:.4f} "
                 f"≥ {final['baseline_objective']:.4f}): it learned nothing")  # fmt: skip
    if "stopped_early" in final:
        note += f", stopped early at iteration {int(final['stopped_early']):,}"
    if flagged(final, "final/val_"):
        note += (
            f", FLAG: val/loss {final['final/val_loss']:.4f} (from h = 0) and val/loss_warm "
            f"{final['final/val_loss_warm']:.4f} differ by "
            f"{100 * disagreement(final, 'final/val_'):.0f}%"
        )
    return note
