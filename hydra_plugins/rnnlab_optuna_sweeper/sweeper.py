"""The sweep loop: ask Optuna for trials, launch them as Hydra jobs, tell Optuna how they ended.

Each batch of ``n_jobs`` trials goes to the configured launcher (basic, joblib, submitit) like
any multirun's jobs, so rnnlab's sweep callback gives the search its MLflow parent run and every
trial a child run. A job learns it is a trial from environment variables (``hydra.job.env_set``)
and joins it through the shared storage to report intermediate values and be pruned; a job that
was pruned has told Optuna itself, the sweeper tells COMPLETE (finite objective) or FAIL.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


class RnnlabOptunaSweeper(Sweeper):
    def __init__(
        self,
        storage: str | None,
        study_name: str,
        n_trials: int,
        n_jobs: int | None,
        sampler: DictConfig,
        pruner: DictConfig,
        params: DictConfig | None,
    ) -> None:
        self.storage, self.study_name = storage, study_name
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.sampler_conf = OmegaConf.to_container(sampler, resolve=True)
        self.pruner_conf = OmegaConf.to_container(pruner, resolve=True)
        self.params = {str(k): str(v) for k, v in (params or {}).items()}
        self.config: DictConfig | None = None
        self.launcher = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from omegaconf import open_dict, read_write

        from rnnlab.sweeps.search import trial_env_keys

        self.hydra_context, self.config = hydra_context, config
        # every job's config is composed from these plus its own overrides: declaring the
        # trial's variables here keeps the storage address out of the launchers' log lines
        with read_write(config.hydra.overrides), open_dict(config.hydra.overrides):
            config.hydra.overrides.hydra = [*config.hydra.overrides.hydra, *trial_env_keys()]
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def batch_size(self) -> int:
        """Trials in flight at once: n_jobs, else what the launcher runs in parallel."""
        if self.n_jobs:
            return self.n_jobs
        launcher = self.config.hydra.launcher
        n = launcher.get("n_jobs") or launcher.get("array_parallelism") or 1
        return (os.cpu_count() or 1) if n < 0 else int(n)  # joblib: -1 = every core

    def sweep(self, arguments: list[str]) -> Any:
        import optuna

        from rnnlab.sweeps import search
        from rnnlab.sweeps.parent_run import continue_parent
        from rnnlab.tracking.job import PARENT_RUN_FILE

        launch_dir = Path(os.getcwd())
        storage = self.storage or search.default_storage(launch_dir)
        # command-line values win over the search file's: `learning_rate=0.1` fixes it
        lines = [f"{k}={v}" for k, v in self.params.items()]
        given = {a.split("=", 1)[0] for a in arguments}
        space, fixed = search.parse_space(
            [line for line in lines if line.split("=", 1)[0] not in given] + arguments
        )
        study = optuna.create_study(
            storage=storage, study_name=self.study_name, direction="minimize", load_if_exists=True
        )
        seed = self.sampler_conf["seed"]
        if seed is not None:  # a restarted search must not replay the first one's random draws
            seed += len(study.trials)
        study.sampler = search.make_sampler(
            self.sampler_conf["name"], seed, self.sampler_conf["n_startup_trials"]
        )
        study.pruner = search.make_pruner(self.pruner_conf)
        study.set_user_attr(search.ATTR_PRUNER, self.pruner_conf)
        if stale := search.fail_stale_trials(study):
            log.warning(f"trials {stale} were left running by a stopped search: marked FAIL")

        # One parent run for the whole study, across restarts.
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir = sweep_dir if sweep_dir.is_absolute() else launch_dir / sweep_dir
        parent = continue_parent(study.user_attrs.get(search.ATTR_PARENT), sweep_dir)
        if parent is not None:
            uri, parent_id = parent
            study.set_user_attr(search.ATTR_PARENT, parent_id)
            self._tag_parent(uri, parent_id, storage, sorted(space))
        elif (sweep_dir / PARENT_RUN_FILE).is_file():
            study.set_user_attr(search.ATTR_PARENT, (sweep_dir / PARENT_RUN_FILE).read_text())

        done = search.finished(study)
        log.info(
            f"study {self.study_name!r} in {storage}: {done} of {self.n_trials} trials done; "
            f"searching {', '.join(f'{k} {d}' for k, d in space.items())}"
        )
        job_idx, returns = 0, []
        while (todo := self.n_trials - search.finished(study)) > 0:
            trials = [study.ask(space) for _ in range(min(self.batch_size(), todo))]
            overrides = [
                fixed
                + [search.as_override(k, v) for k, v in t.params.items()]
                # the storage's id of the trial, which a job needs to join it (no public getter)
                + search.trial_env(storage, self.study_name, t._trial_id)
                for t in trials
            ]
            self.validate_batch_is_legal(overrides)
            batch = self.launcher.launch(overrides, initial_job_idx=job_idx)
            job_idx += len(batch)
            returns.append(batch)
            for trial, ret in zip(trials, batch, strict=True):
                self._tell(study, trial, ret)
        if parent is not None:
            self._tag_parent(uri, parent_id, storage, sorted(space), study)
        return returns

    def _tell(self, study, trial, ret) -> None:
        from hydra.core.utils import JobStatus
        from optuna.trial import TrialState

        from rnnlab.sweeps import search

        value = ret.return_value if ret.status == JobStatus.COMPLETED else math.nan
        if isinstance(value, (int, float)) and math.isfinite(value):
            frozen = study.tell(trial, float(value), skip_if_finished=True)
        else:
            frozen = study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
        search.tag_trial_run(frozen, frozen.state.name)
        task, objective = self.config.task.name, self.config.get("objective")
        log.info(search.trial_line(frozen.number, frozen.state.name, frozen.value, frozen.params,
                                   task, objective))  # fmt: skip

    def _tag_parent(self, uri, parent_id, storage, keys, study=None) -> None:

        from rnnlab.sweeps import search
        from rnnlab.tracking import store

        client = store.client(uri)
        tags = {
            "rnnlab.search": "optuna",  # rnnlab.kind stays "sweep": a search is a sweep
            search.TAG_STUDY: self.study_name,
            "rnnlab.optuna_storage": _without_password(storage),
            "rnnlab.search_params": ",".join(keys),
            "rnnlab.pruner": self.pruner_conf["name"],
        }
        if study is not None:
            tags["rnnlab.trials"] = str(len(study.trials))
            try:
                best = study.best_trial
                tags |= {
                    "rnnlab.best_trial": str(best.number),
                    "rnnlab.best_value": f"{best.value:.6g}",
                }
            except ValueError:  # no COMPLETE trial yet
                pass
        for k, v in tags.items():
            client.set_tag(parent_id, k, v)


def _without_password(url: str) -> str:
    """postgresql://user:secret@host/db → postgresql://user:***@host/db (tags are public)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url
