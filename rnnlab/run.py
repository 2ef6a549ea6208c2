"""``python -m rnnlab.run [overrides]``: train one job, or sweep with ``-m``.

Before Hydra starts any job, every value the command line gives is composed and checked, so a
typo or a bad value costs one line on stderr and exit code 2, not a traceback or a half-recorded
sweep. Only this module knows Hydra; the work happens in ``rnnlab.tracking.job.run_job``.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from hydra_plugins.rnnlab_joblib_launcher.config import claim_joblib_name
from rnnlab.errors import UserError
from rnnlab.quiet import quiet_third_party, survive_closed_output, verbose_requested
from rnnlab.sweeps import launching
from rnnlab.sweeps.compose import CONFIG_DIR, register_configs, to_config
from rnnlab.sweeps.preflight import preflight
from rnnlab.tracking import store
from rnnlab.tracking.ui import default_run_name, run_name
from rnnlab.training.signals import held

if TYPE_CHECKING:
    from rnnlab.config import Config
    from rnnlab.tracking.job import JobContext


register_configs()
claim_joblib_name()  # hydra/launcher=joblib is rnnlab's (hydra_plugins.rnnlab_joblib_launcher)
launching.register()  # ${rnnlab_sweep_id:} in conf/config.yaml (rnnlab.sweeps.launching)


def job_context() -> JobContext:
    from rnnlab.tracking.job import JobContext, read_swept_keys

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    sweep_dir = Path(hc.runtime.cwd, hc.sweep.dir) if multirun else None
    overrides = list(hc.overrides.task)
    return JobContext(
        launch_dir=Path(hc.runtime.cwd),
        output_dir=Path(hc.runtime.output_dir),
        overrides=overrides,
        run_name=run_name(overrides, read_swept_keys(sweep_dir), hc.job.override_dirname),
        sweep_dir=sweep_dir,
        multirun=multirun,
        job_num=hc.job.num if multirun else None,
    )


def summary(
    ctx: JobContext,
    status: str,
    detail: str,
    started: float,
    task: str = "",
    final: dict[str, float] | None = None,
    config: Config | None = None,
) -> None:
    """The line a finished job prints (a sweep prints one per job, with its run id); a single
    job then prints its run id, where to view it, its checkpoints and how to sample and resume
    it. ``final``: a finished job's metrics, whose objective the line names by the metric the
    recorded run minimised (``config``'s when nothing was recorded)."""
    from rnnlab.tasks import judged, judged_run
    from rnnlab.tracking.ui import closing_summary, last_run_closing

    job = f"job {ctx.job_num} " if ctx.job_num is not None else ""
    name = ctx.run_name or "run"
    seconds = time.perf_counter() - started
    with held():  # store reads: a signal now stops the CLI once these lines are out
        uri = ctx.tracking_uri
        closing = last_run_closing(task, ctx.launch_dir, uri) if task and uri else None
        if final is not None:
            if closing is not None:  # a resumed run: its task and objective are the run's
                how = judged_run(closing[0])
                objective = how.of_run(closing[0]) if how else ""
            else:
                how = judged(config.task.name) if config else None
                objective = how.name(config.objective) if how and config else ""
            detail = closing_summary(final, how, objective) + detail
        if ctx.multirun and closing:
            detail += f", run {closing[0].info.run_id}"
        print(f"rnnlab: {job}{name}: {status} in {seconds:.1f} s, {detail}", file=sys.stderr)
        if not ctx.multirun and closing:
            print("\n".join(closing[1]), flush=True)


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Hydra's task function: returns the objective so sweepers can minimise it."""
    # MLflow loads only once the command line is checked
    from rnnlab.sweeps.requeue import run_or_resume
    from rnnlab.sweeps.search import trial_tracker

    started = time.perf_counter()
    quiet_third_party(bool(cfg.get("verbose", False)))  # again: a joblib worker is a new process
    store.not_a_notebook()  # as cli() does (a joblib worker inherits the environment only)
    ctx = job_context()
    ctx.run_name = ctx.run_name or default_run_name(str(cfg.task.name))  # never MLflow's random
    try:  # an exception escaping a job would stop Hydra's basic sweeper after the batch
        config = to_config(cfg)
        # train() pins BLAS to this many threads, so joblib workers do not oversubscribe cores
        ctx.extra_tags["rnnlab.blas_threads"] = str(config.blas_threads)
        ctx.tracker_hook = trial_tracker  # a search's trial reports to Optuna (else: no change)
        final = run_or_resume(config, ctx)  # runs.run_job, or a requeued SLURM job's own run
    except Exception as e:  # the run is already recorded FAILED with its reason
        summary(ctx, "FAILED", f"{type(e).__name__}: {e}", started, cfg.task.name)
        if ctx.multirun:
            return math.inf  # the other jobs of the sweep go on
        sys.exit(1)
    except KeyboardInterrupt as e:  # recorded KILLED; the CLI stops (and closes a sweep)
        summary(ctx, "KILLED", str(e) or "interrupted", started, cfg.task.name)
        raise
    # the objective by its metric's key, the final numbers, an early stop, the warm/zero flag
    summary(ctx, "FINISHED", "", started, cfg.task.name, final, config)
    return final["objective"]


def _terminate(signum, frame) -> None:
    """SIGTERM outside the training loop (which handles it itself) acts as Ctrl-C, so runs and
    the sweep's parent are closed KILLED rather than left RUNNING."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def cli() -> None:
    args = sys.argv[1:]
    try:
        preflight(CONFIG_DIR, "config", args)
    except UserError as e:
        print(f"rnnlab: error: {e}", file=sys.stderr)
        sys.exit(2)
    signal.signal(signal.SIGTERM, _terminate)
    survive_closed_output()  # `| head` must not fail a run: before Hydra makes its log handlers
    quiet_third_party(verbose_requested(args))
    # MLflow's INFO lines (creating tables, migrations) would drown the progress lines. Set
    # before MLflow's first import (it is imported only once the command line is checked);
    # joblib's worker processes inherit it.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    store.lean_mlflow()  # no telemetry thread (store.LEAN_ENV)
    store.not_a_notebook()  # MLflow's notebook probes would import IPython to learn it is not
    from rnnlab.sweeps import parent_run

    try:
        main()
    except KeyboardInterrupt:
        for s in (signal.SIGINT, signal.SIGTERM):  # runs closed: more signals change nothing
            signal.signal(s, signal.SIG_IGN)
        from mlflow.entities import RunStatus

        if parent_run.open_parent:
            parent_run.close_parent(RunStatus.KILLED)
        print("rnnlab: interrupted", file=sys.stderr)
        sys.exit(130)
    except SystemExit as e:  # Hydra reports a crashed launcher this way
        if parent_run.open_parent and e.code not in (0, None):
            from mlflow.entities import RunStatus

            parent_run.close_parent(RunStatus.FAILED)
        raise
    finally:  # whatever else ended the CLI, the sweep's parent is not left RUNNING
        if parent_run.open_parent:
            from mlflow.entities import RunStatus

            parent_run.close_parent(RunStatus.FAILED)


if __name__ == "__main__":
    cli()
