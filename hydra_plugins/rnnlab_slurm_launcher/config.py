"""The schema of ``hydra.launcher`` for ``hydra/launcher=rnnlab_slurm``.

Imported by Hydra's plugin discovery on every start: no submitit, no rnnlab, and no
``from __future__ import annotations`` (Hydra loads plugin modules outside sys.modules, where
dataclasses cannot resolve string annotations).
"""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf


@dataclass
class RnnlabSlurmConf(SlurmQueueConf):
    """Everything of ``submitit_slurm`` (sbatch resources, signal_delay_s, max_num_timeout),
    plus how long a job may sit in a final state without a result before it counts as failed:
    a job killed on its node and requeued (node failure, ``scontrol requeue``) passes through a
    final state on its way back to PENDING."""

    _target_: str = "hydra_plugins.rnnlab_slurm_launcher.launcher.RnnlabSlurmLauncher"
    failure_grace_s: float = 15.0
    poll_s: float = 1.0  # seconds between two squeue calls while jobs run


ConfigStore.instance().store(
    group="hydra/launcher", name="rnnlab_slurm", node=RnnlabSlurmConf, provider="rnnlab"
)
