"""The typed config as Hydra sees it: the schema in Hydra's ConfigStore, and back to dataclasses.

``conf/config.yaml`` extends the schema ``rnnlab_schema`` (``rnnlab.config.Config``), so a
misspelt key or a wrong type fails while Hydra composes the config; ``to_config`` turns the
composed ``DictConfig`` into the real dataclass every layer below reads. This is the only place
the typed config meets Hydra and OmegaConf.

Not here: the fields and their checks (``rnnlab.config``), checking a command line before any
job (``rnnlab.sweeps.preflight``).
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

import rnnlab
from rnnlab.config import Config

# The package's conf/ is a link to the repository's top-level conf/ (a wheel copies it in), so
# the configs are found from any folder, whatever the install.
CONFIG_DIR = str(Path(rnnlab.__file__).resolve().parent / "conf")


def register_configs() -> None:
    """Make the schema available to Hydra as ``rnnlab_schema`` (config.yaml extends it)."""
    ConfigStore.instance().store(name="rnnlab_schema", node=Config)


def to_config(cfg: DictConfig) -> Config:
    """Hydra's composed DictConfig → the real, typed dataclass."""
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


def compose(overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The typed config ``python -m rnnlab.run <overrides>`` would train (no ``-m``): for tests,
    notebooks and benchmarks that call ``train(cfg, tracker)`` themselves."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return to_config(hydra_compose(config_name="config", overrides=list(overrides)))
