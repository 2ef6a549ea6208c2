"""The schema of ``hydra.sweeper`` for ``hydra/sweeper=rnnlab_optuna`` (values in conf/search/).

Imported by Hydra's plugin discovery on every start, so it imports neither Optuna nor rnnlab;
no ``from __future__ import annotations``: Hydra loads plugin modules outside sys.modules,
where dataclasses cannot resolve string annotations.
"""

# ruff: noqa: UP045

from dataclasses import dataclass, field
from typing import Any, Optional  # not X | None: see the module docstring

from hydra.core.config_store import ConfigStore


@dataclass
class SamplerConf:
    """How Optuna proposes the next trial."""

    name: str = "tpe"  # tpe | random
    seed: Optional[int] = 0  # a restarted search adds its finished-trial count, so it never replays
    n_startup_trials: int = 6  # tpe: random trials before the model takes over


@dataclass
class PrunerConf:
    """When a trial is stopped early, judged on its intermediate objective at each val/* point."""

    name: str = "successive_halving"  # successive_halving | median | none
    # median: prune when the best value so far is worse than the median of finished trials
    # at the same step, once n_startup_trials have finished and after n_warmup_steps iterations
    n_startup_trials: int = 4
    n_warmup_steps: int = 0
    interval_steps: int = 1
    # successive_halving: rungs at min_resource · reduction_factor^k iterations; only the best
    # 1/reduction_factor of the trials that reached a rung go on
    min_resource: int = 500
    reduction_factor: int = 3
    min_early_stopping_rate: int = 0


@dataclass
class RnnlabOptunaSweeperConf:
    """An Optuna study minimising the task objective; its trials are this multirun's jobs."""

    _target_: str = "hydra_plugins.rnnlab_optuna_sweeper.sweeper.RnnlabOptunaSweeper"
    # Optuna RDB storage; null: sqlite:///<launch dir>/optuna.db (one machine only: on a
    # cluster give a PostgreSQL URL, see docs/cluster.md)
    storage: Optional[str] = None
    study_name: str = "rnnlab"  # the search's identity: the same name continues the same study
    n_trials: int = 20  # finished trials the study should hold; a restart runs only the rest
    n_jobs: Optional[int] = None  # trials launched at once; null: the launcher's n_jobs, else 1
    sampler: SamplerConf = field(default_factory=SamplerConf)
    pruner: PrunerConf = field(default_factory=PrunerConf)
    # key: Hydra sweep syntax, e.g. learning_rate: tag(log, interval(1e-3, 1)),
    # hidden_size: choice(8, 16, 32), seq_length: range(10, 50, 5); a plain value is fixed
    params: dict[str, Any] = field(default_factory=dict)


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="rnnlab_optuna",
    node=RnnlabOptunaSweeperConf,
    provider="rnnlab_optuna_sweeper",
)
