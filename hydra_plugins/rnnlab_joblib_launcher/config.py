"""The schema of ``hydra.launcher`` for ``hydra/launcher=joblib`` (conf/hydra/launcher/joblib.yaml
points the user-facing name here).

Imported by Hydra's plugin discovery on every start: no rnnlab, no ``from __future__``.
"""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf


@dataclass
class RnnlabJoblibLauncherConf(JobLibLauncherConf):
    """joblib's keys, so every existing command composes; only ``n_jobs`` is used (-1: every
    core). A job is one process: joblib's batching, memmapping and backend keys do not apply."""

    _target_: str = "hydra_plugins.rnnlab_joblib_launcher.launcher.RnnlabJoblibLauncher"


ConfigStore.instance().store(
    group="hydra/launcher",
    name="rnnlab_joblib",
    node=RnnlabJoblibLauncherConf,
    provider="rnnlab",
)
