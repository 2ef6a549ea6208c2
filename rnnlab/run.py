"""``python -m rnnlab.run [overrides]``: train one job, or sweep with ``-m``.

Before Hydra starts any job, every value the command line gives is composed and checked, so a
typo or a bad value costs one line on stderr and exit code 2, not a traceback or a half-recorded
sweep. Only this module knows Hydra; the work happens in ``rnnlab.runs.run_job``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from rnnlab.config import ConfigError, register_configs, to_config
from rnnlab.preflight import UserError, preflight
from rnnlab.runs import JobContext, run_job

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")

register_configs()


def job_context() -> JobContext:
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    return JobContext(
        launch_dir=Path(hc.runtime.cwd),
        output_dir=Path(hc.runtime.output_dir),
        overrides=list(hc.overrides.task),
        run_name=hc.job.override_dirname or None,
        sweep_dir=Path(hc.runtime.cwd, hc.sweep.dir) if multirun else None,
        multirun=multirun,
    )


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Hydra's task function: returns the objective so sweepers can minimise it."""
    ctx = job_context()
    config = to_config(cfg)
    try:
        final = run_job(config, ctx)
    except Exception as e:  # the run is already recorded FAILED with its reason
        print(f"rnnlab: run failed: {type(e).__name__}: {e}", file=sys.stderr)
        if ctx.multirun:
            return math.inf  # the other jobs of the sweep go on
        sys.exit(1)
    name = ctx.run_name or config.task.name
    print(f"rnnlab: {name}: objective {final['objective']:.4f}", file=sys.stderr)
    return final["objective"]


def cli() -> None:
    args = sys.argv[1:]
    try:
        preflight(CONFIG_DIR, "config", args)
    except (UserError, ConfigError) as e:
        print(f"rnnlab: error: {e}", file=sys.stderr)
        sys.exit(2)
    try:
        main()
    except KeyboardInterrupt:
        from mlflow.entities import RunStatus

        from rnnlab.sweep import close_parent, open_parent

        if open_parent:
            close_parent(RunStatus.KILLED)
        print("rnnlab: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    cli()
