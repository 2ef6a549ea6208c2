"""A Hydra callback that writes the report at the end of every multirun.

Registered in ``conf/config.yaml`` *before* ``mlflow_sweep``: Hydra calls ``on_multirun_end``
in reverse order, so the parent run is already closed (status and child counts set) when the
report reads it. A report failure never fails the sweep: it costs one line on stderr.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from rnnlab.sweeps.leaderboard import print_sweep_closing


class ReportCallback(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        path = None
        try:
            path = self.generate(config)
        except Exception as e:  # the sweep's runs are recorded; the report can be redone
            print(f"rnnlab: report failed: {type(e).__name__}: {e}", file=sys.stderr)
        if path is not None:
            print(f"rnnlab: report: {path}")
        print_sweep_closing(
            config, path
        )  # rnnlab.sweeps.leaderboard: ranks, parent id, what failed

    @staticmethod
    def generate(config: DictConfig) -> Path | None:
        from rnnlab.report.build import generate
        from rnnlab.tracking import store
        from rnnlab.tracking.job import PARENT_RUN_FILE

        launch_dir = Path(os.getcwd())
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir = sweep_dir if sweep_dir.is_absolute() else launch_dir / sweep_dir
        marker = sweep_dir / PARENT_RUN_FILE
        if not marker.is_file():
            return None  # no parent run was opened (tracking off, or another sweep callback)
        # reports/<sweep run name>/ in the launch directory (the current one)
        uri = store.resolve_uri(config.tracking.uri, launch_dir)
        return generate(uri, sweep=marker.read_text().strip())[0]
