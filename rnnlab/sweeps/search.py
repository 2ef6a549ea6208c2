"""Optuna search with pruning: what the ``rnnlab_optuna`` sweeper and its jobs share.

Three parts, each usable without Hydra:

- **the driver's side** (used by ``hydra_plugins.rnnlab_optuna_sweeper``): search spaces written
  in Hydra's sweep syntax → Optuna distributions, the sampler and the pruner from config, the
  study in RDB storage (``sqlite:///<launch dir>/optuna.db`` by default: not mlflow.db).
- **the job's side**: ``trial_tracker`` wraps a job's ``Tracker`` when the sweeper launched the
  job as a trial. At each ``val/*`` point it reports the task objective to the trial and, when the
  pruner says so, raises ``TrialPruned``; ``job.run_job`` ends that run FINISHED with the tag
  ``rnnlab.trial_state=PRUNED``. The trial reaches the job through three environment variables
  set by the sweeper (``hydra.job.env_set``) and the shared storage, so the basic, joblib and
  submitit launchers all work. Optuna never enters the training loop.
- **the report's side**: ``search_trials`` reads one search back from MLflow as a DataFrame.

Not here: the sweep loop itself (the plugin), the parent run (``rnnlab.sweeps.parent_run``).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnlab.config import Config
from rnnlab.tasks import judged, judged_run
from rnnlab.tasks.judging import Judged
from rnnlab.tracking import store
from rnnlab.training.tracker import FinishedEarly, Tracker

if TYPE_CHECKING:  # optuna is imported only by searches, never by a plain run
    import optuna
    import pandas as pd
    from mlflow.tracking import MlflowClient

# What the sweeper tells each trial's job (via hydra.job.env_set).
ENV_STORAGE = "RNNLAB_OPTUNA_STORAGE"
ENV_STUDY = "RNNLAB_OPTUNA_STUDY"
ENV_TRIAL_ID = "RNNLAB_OPTUNA_TRIAL_ID"

# MLflow tags on a trial's child run and on the search's parent run.
TAG_TRIAL = "rnnlab.trial"  # Optuna trial number
TAG_STATE = "rnnlab.trial_state"  # RUNNING | COMPLETE | PRUNED | FAIL
TAG_STUDY = "rnnlab.study"
TAG_PRUNED_AT = "rnnlab.pruned_at"  # iteration of the val/* point that pruned the trial

# Study user attributes.
ATTR_PRUNER = "rnnlab.pruner"  # the pruner's config, so every job builds the same pruner
ATTR_PARENT = "rnnlab.parent_run_id"  # the MLflow parent run that holds every trial
ATTR_RUN_ID = "rnnlab.mlflow_run_id"  # trial attribute: its child run
ATTR_URI = "rnnlab.mlflow_uri"


class TrialPruned(FinishedEarly):
    """The pruner stopped this trial at ``step``; ``metrics["objective"]`` is its last value."""

    def __init__(self, number: int, step: int, value: float):
        message = f"trial {number} pruned at iteration {step} (objective {value:.4g})"
        super().__init__(message, {"objective": value, "pruned_at": float(step)})
        self.number, self.step = number, step


# --- the driver's side --------------------------------------------------------------------------


def default_storage(launch_dir: Path) -> str:
    """The study's home when none is configured: next to mlflow.db, in its own file."""
    return f"sqlite:///{Path(launch_dir).resolve() / 'optuna.db'}"


def parse_space(
    lines: list[str],
) -> tuple[dict[str, optuna.distributions.BaseDistribution], list[str]]:
    """Hydra sweep syntax → ({key: distribution}, fixed override lines).

    ``choice(a, b)`` → categorical; ``range(lo, hi, step)`` → integers lo, lo+step, … < hi;
    ``interval(lo, hi)`` → floats in [lo, hi]; ``tag(log, …)`` samples on a log scale and
    ``tag(int, interval(…))`` draws integers. A plain ``key=value`` is fixed for every trial.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    space: dict[str, Any] = {}
    fixed: list[str] = []
    for o in OverridesParser.create().parse_overrides(lines):
        key = o.get_key_element()
        if not o.is_sweep_override():
            fixed.append(o.input_line)
            continue
        v = o.value()
        log = "log" in v.tags
        if isinstance(v, ChoiceSweep):
            space[key] = CategoricalDistribution(list(o.sweep_iterator()))
        elif isinstance(v, RangeSweep):
            values = list(v.range())
            if all(isinstance(x, int) for x in values) and len(values) > 1:
                space[key] = IntDistribution(values[0], values[-1], step=values[1] - values[0])
            else:
                space[key] = CategoricalDistribution(values)
        elif isinstance(v, IntervalSweep):
            if "int" in v.tags:
                space[key] = IntDistribution(int(v.start), int(v.end), log=log)
            else:
                space[key] = FloatDistribution(float(v.start), float(v.end), log=log)
        else:
            raise ValueError(f"{o.input_line}: cannot search over this (use choice/range/interval)")
    return space, fixed


def as_override(key: str, value: Any) -> str:
    """One trial parameter as a Hydra override line."""
    if isinstance(value, float):
        return f"{key}={value!r}"
    return f"{key}={value}"


def trial_line(
    number: int,
    state: str,
    value: float | None,
    params: Mapping[str, Any],
    task: str,
    objective: str | None,
) -> str:
    """How the search logs a finished trial: ``trial 3: COMPLETE, objective val/loss_warm
    1.7817, learning_rate=0.03236 hidden_size=64`` (the objective by its metric's key)."""
    how = judged(task)
    if value is None or not math.isfinite(value):
        result = ""
    elif how is None:
        result = f", objective {value:.4f}"
    else:
        result = ", " + how.phrase(how.name(objective), value)
    shown = " ".join(f"{k}={f'{v:.4g}' if isinstance(v, float) else v}" for k, v in params.items())
    return f"trial {number}: {state}{result}, {shown}"


def make_sampler(name: str, seed: int | None, n_startup_trials: int) -> optuna.samplers.BaseSampler:
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"hydra.sweeper.sampler.name={name!r} is not allowed: tpe or random")


def make_pruner(spec: Mapping[str, Any]) -> optuna.pruners.BasePruner:
    """The pruner a ``PrunerConf`` (as a dict) describes."""
    import optuna

    name = spec.get("name", "none")
    if name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=spec["n_startup_trials"],
            n_warmup_steps=spec["n_warmup_steps"],
            interval_steps=spec["interval_steps"],
        )
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=spec["min_resource"],
            reduction_factor=spec["reduction_factor"],
            min_early_stopping_rate=spec["min_early_stopping_rate"],
        )
    if name in ("none", None):
        return optuna.pruners.NopPruner()
    raise ValueError(
        f"hydra.sweeper.pruner.name={name!r} is not allowed: successive_halving, median or none"
    )


def finished(study: optuna.Study) -> int:
    """Trials that ended (COMPLETE, PRUNED or FAIL): what ``n_trials`` counts."""
    from optuna.trial import TrialState

    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return len(study.get_trials(deepcopy=False, states=done))


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Mark trials an earlier, stopped driver left RUNNING as FAIL (one driver per study)."""
    from optuna.trial import TrialState

    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
    for t in stale:
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        tag_trial_run(t, "FAIL")
    return [t.number for t in stale]


TRIAL_ENV = (ENV_STORAGE, ENV_STUDY, ENV_TRIAL_ID)


def trial_env_keys() -> list[str]:
    """Hydra overrides that declare the trial's variables in ``hydra.job.env_set`` (empty: not
    a trial), added once to the search's own Hydra overrides so that ``trial_env`` can set
    them as plain ``hydra.*`` overrides, which every launcher leaves out of what it logs."""
    return [f"++hydra.job.env_set.{key}=''" for key in TRIAL_ENV]


def trial_env(storage: str, study_name: str, trial_id: int) -> list[str]:
    """Hydra overrides that hand a trial to its job (hydra.* overrides: not in run names, and
    not in the launchers' log lines once ``trial_env_keys`` declared them)."""
    values = (storage, study_name, trial_id)
    return [f"hydra.job.env_set.{k}='{v}'" for k, v in zip(TRIAL_ENV, values, strict=True)]


def tag_trial_run(trial: optuna.trial.FrozenTrial, state: str) -> None:
    """Set the trial's state on its MLflow child run, if the job got as far as opening one."""

    run_id, uri = trial.user_attrs.get(ATTR_RUN_ID), trial.user_attrs.get(ATTR_URI)
    if run_id and uri:
        store.client(uri).set_tag(run_id, TAG_STATE, state)


# --- the job's side -----------------------------------------------------------------------------


class TrialTracker:
    """Forwards everything to ``inner``; reports the objective at each val/* point to ``trial``."""

    def __init__(
        self,
        inner: Tracker,
        trial: optuna.Trial,
        objective: str,  # one of the task's objectives (its JUDGED)
        last_step: int,
        client: MlflowClient,
        run_id: str,
        task: Judged,
    ):
        self.inner, self.trial, self.last_step = inner, trial, last_step
        self.objective = functools.partial(task.value, objective)
        self.client, self.run_id = client, run_id

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.inner.log_metrics(metrics, step)
        if not any(k.startswith("val/") for k in metrics):
            return
        value = float(self.objective(dict(metrics)))
        self.trial.report(value, step)
        # A trial at its last iteration is complete: nothing left to save by stopping it.
        if step < self.last_step and self.trial.should_prune():
            from optuna.trial import TrialState

            self.inner.flush()
            self.trial.study.tell(self.trial.number, state=TrialState.PRUNED)
            self.client.set_tag(self.run_id, TAG_STATE, "PRUNED")
            self.client.set_tag(self.run_id, TAG_PRUNED_AT, str(step))
            raise TrialPruned(self.trial.number, step, value)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.inner.log_text(text, artifact_file)

    def log_artifact(self, path: Path, artifact_path: str) -> None:
        self.inner.log_artifact(path, artifact_path)

    def flush(self) -> None:
        self.inner.flush()


def trial_tracker(tracker: Tracker, cfg: Config, client: MlflowClient, run_id: str) -> Tracker:
    """``tracker`` itself, or a ``TrialTracker`` when an Optuna search launched this job."""
    trial_id = os.environ.get(ENV_TRIAL_ID)
    if not trial_id:
        return tracker
    import optuna

    storage, study_name = os.environ[ENV_STORAGE], os.environ[ENV_STUDY]
    study = optuna.load_study(study_name=study_name, storage=storage)
    study.pruner = make_pruner(study.user_attrs.get(ATTR_PRUNER, {}))
    # Trial(study, id) is how a process other than the one that asked joins a trial (RDB storage).
    trial = optuna.trial.Trial(study, int(trial_id))
    trial.set_user_attr(ATTR_RUN_ID, run_id)
    trial.set_user_attr(ATTR_URI, client.tracking_uri)
    for k, v in {TAG_TRIAL: str(trial.number), TAG_STUDY: study_name, TAG_STATE: "RUNNING"}.items():
        client.set_tag(run_id, k, v)
    task = judged(cfg.task.name)
    objective = task.name(cfg.objective)
    return TrialTracker(tracker, trial, objective, cfg.iterations, client, run_id, task)


# --- the report's side --------------------------------------------------------------------------


def search_trials(tracking_uri: str, parent_run_id: str) -> pd.DataFrame:
    """The trials of one search (its parent run), one row each, ordered by trial number.

    Columns: ``trial`` (Optuna number), ``state`` (COMPLETE | PRUNED | FAIL | RUNNING),
    ``value`` (final objective; a pruned trial's last intermediate value), ``best_so_far``
    (running minimum over COMPLETE trials), ``iterations`` (the last step trained),
    ``intermediate`` (list of (iteration, objective) at each val/* point), ``run_id``, and one
    ``param.<key>`` column per searched key (listed in the parent's ``rnnlab.search_params``).
    """
    import pandas as pd

    client = store.client(tracking_uri)
    parent = client.get_run(parent_run_id)
    keys = [k for k in parent.data.tags.get("rnnlab.search_params", "").split(",") if k]
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        max_results=50000,
    )
    rows = []
    for run in runs:
        tags, data = run.data.tags, run.data
        if TAG_TRIAL not in tags:
            continue
        task = judged_run(run)
        if task is None:
            continue
        objective_key = task.of_run(run)
        objective = functools.partial(task.value, objective_key)
        by_step: dict[int, dict[str, float]] = {}
        for key in (k for k in data.metrics if k.startswith("val/")):
            for m in client.get_metric_history(run.info.run_id, key):
                by_step.setdefault(m.step, {})[key] = m.value
        intermediate = []
        for step in sorted(by_step):
            try:
                intermediate.append((step, float(objective(by_step[step]))))
            except KeyError:
                continue
        state = tags.get(TAG_STATE, "RUNNING")
        value = (
            intermediate[-1][1] if intermediate and state in ("COMPLETE", "PRUNED") else math.nan
        )
        train_steps = client.get_metric_history(run.info.run_id, "train/loss")
        rows.append(
            {
                "trial": int(tags[TAG_TRIAL]),
                "state": state,
                "value": value,
                "iterations": max((m.step for m in train_steps), default=0),
                "intermediate": intermediate,
                "run_id": run.info.run_id,
                **{f"param.{k}": data.params.get(k) for k in keys},
            }
        )
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df = df.sort_values("trial").reset_index(drop=True)
    for k in keys:  # MLflow keeps params as strings: numbers back to numbers
        try:
            df[f"param.{k}"] = pd.to_numeric(df[f"param.{k}"])
        except (ValueError, TypeError):
            pass
    complete = df["value"].where(df["state"] == "COMPLETE")
    df.insert(3, "best_so_far", complete.cummin().ffill())  # NaN until a trial completes
    df.attrs["objective"] = objective_key  # what "value" is, for the figures' labels
    return df
