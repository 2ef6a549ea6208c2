"""The schema of ``hydra.launcher`` for ``hydra/launcher=joblib`` (conf/hydra/launcher/joblib.yaml
points the user-facing name here).

Imported by Hydra's plugin discovery on every start: no rnnlab, no ``from __future__``.
``rnnlab.run`` calls ``claim_joblib_name`` before Hydra composes a config.
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


def claim_joblib_name() -> None:
    """Make ``hydra/launcher=joblib`` name hydra_plugins.rnnlab_joblib_launcher.

    hydra-joblib-launcher stores its schema under that name while Hydra scans plugins, in an
    order that depends on sys.path; scanning first and storing ours after makes ours win
    whatever the install. (A conf/hydra/launcher/joblib.yaml would shadow it too, but Hydra
    warns on every start that such a file is "validated against ConfigStore schema".)
    """
    from hydra.core.plugins import Plugins

    Plugins.instance()  # the one scan of this process; it never runs again
    ConfigStore.instance().store(
        group="hydra/launcher", name="joblib", node=RnnlabJoblibLauncherConf, provider="rnnlab"
    )
