"""hydra-submitit-launcher's ``SlurmLauncher`` with a wait loop that survives what nodes do.

The upstream launcher returns ``[job.results()[0] for job in jobs]``: submitit learns that a job
ended from ``sacct``, so where accounting is off a job killed on its node is waited for forever,
and where it is on, the first such job raises and stops the whole sweep. Here the launcher asks
``squeue`` for its jobs' states instead. A job that wrote its result is done; a job that sits in
a final state (FAILED, OUT_OF_MEMORY, NODE_FAIL, …) or left the queue without a result for
``failure_grace_s`` seconds (a requeued job comes back to PENDING within that time) has failed:
its child run is closed FAILED with the SLURM job id and its log's tail
(``rnnlab.sweeps.requeue.record_failed_job``) and it counts as a failed job (objective inf), so the
sweep goes on. Requeued jobs, by ``scontrol requeue`` or submitit's own ``checkpoint()``, keep
their job id and are simply waited for. Ctrl-C cancels the jobs it is waiting for.
"""

from __future__ import annotations

import logging
import math
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import OmegaConf

log = logging.getLogger(__name__)

ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_FED",
          "REQUEUE_HOLD", "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT"}  # fmt: skip


def queue_states(job_ids: Sequence[str]) -> dict[str, tuple[str, str]] | None:
    """{job id: (state, node)} of the jobs slurmctld still knows (array tasks one by one), or
    None when squeue itself failed (then nothing is concluded)."""
    main_ids = sorted({j.split("_")[0] for j in job_ids})
    argv = ["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T|%N", "-j", ",".join(main_ids)]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 and "Invalid job id" not in out.stderr:
        return None
    states = {}
    for line in out.stdout.splitlines():
        job_id, state, node = (line.split("|") + ["", ""])[:3]
        states[job_id.strip()] = (state.strip(), node.strip())
    return states


def log_tail(job, chars: int = 1500) -> str:
    """The end of a job's stderr and stdout (submitit's log files)."""
    parts = []
    for path in (job.paths.stderr, job.paths.stdout):
        try:
            text = Path(path).read_text(errors="replace")
        except OSError:
            continue
        if text.strip():
            parts.append(f"[{Path(path).name}] …{text[-chars:]}")
    return "\n".join(parts) or "(no log written)"


class RnnlabSlurmLauncher(SlurmLauncher):
    def __init__(self, **params: Any) -> None:
        self.failure_grace_s = float(params.pop("failure_grace_s", 15.0))
        self.poll_s = float(params.pop("poll_s", 1.0))
        super().__init__(**params)

    def executor(self):
        """A submitit AutoExecutor with this launcher's parameters (as upstream's ``launch``)."""
        import submitit

        specific_init_keys = {"max_num_timeout"}
        init = {"folder": self.params["submitit_folder"]}
        init |= {f"slurm_{k}": v for k, v in self.params.items() if k in specific_init_keys}
        executor = submitit.AutoExecutor(cluster="slurm", **init)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        skip = specific_init_keys | {"submitit_folder"}
        executor.update_parameters(
            **{
                (k if k in base else f"slurm_{k}"): v
                for k, v in self.params.items()
                if k not in skip
            }
        )
        return executor

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        assert self.config is not None and job_overrides
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(f"SLURM sweep output dir : {sweep_dir}")
        job_params = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            job_params.append(
                (
                    list(overrides),
                    "hydra.sweep.dir",
                    idx,
                    f"job_id_for_{idx}",
                    Singleton.get_state(),
                )
            )
        jobs = self.executor().map_array(self, *zip(*job_params, strict=True))
        log.info(f"submitted SLURM jobs {', '.join(j.job_id for j in jobs)}")
        try:
            outcomes = self.wait(jobs)
        except KeyboardInterrupt:
            unfinished = [j.job_id for j in jobs if not j.paths.result_pickle.exists()]
            if unfinished:
                subprocess.run(["scancel", *unfinished], capture_output=True)
                log.warning(f"interrupted: cancelled SLURM jobs {', '.join(unfinished)}")
            raise
        results = []
        for job, (overrides, *_), (state, node) in zip(jobs, job_params, outcomes, strict=True):
            if state == "result":
                results.append(job.results()[0])
                continue
            self.record_failure(job, overrides, state, node)
            results.append(JobReturn(overrides=overrides, status=JobStatus.COMPLETED,
                                     _return_value=math.inf))  # fmt: skip
        return results

    def wait(self, jobs) -> list[tuple[str, str]]:
        """Poll until every job wrote its result or failed; per job ("result", node) or its
        final (state, node)."""
        outcome: dict[str, tuple[str, str]] = {}
        final_since: dict[str, float] = {}
        last_seen: dict[str, tuple[str, str]] = {}
        while len(outcome) < len(jobs):
            states = queue_states([j.job_id for j in jobs if j.job_id not in outcome])
            now = time.monotonic()
            for job in jobs:
                if job.job_id in outcome:
                    continue
                if job.paths.result_pickle.exists():
                    outcome[job.job_id] = ("result", last_seen.get(job.job_id, ("", ""))[1])
                    continue
                if states is None:
                    continue
                state, node = states.get(job.job_id, ("GONE", ""))
                if state in ACTIVE:
                    last_seen[job.job_id] = (state, node)
                    final_since.pop(job.job_id, None)
                    continue
                since = final_since.setdefault(job.job_id, now)
                if now - since >= self.failure_grace_s:
                    if state == "GONE":  # purged from slurmctld: its last state then
                        state = f"gone from the queue (last {last_seen.get(job.job_id, ('?',))[0]})"
                    outcome[job.job_id] = (state, node or last_seen.get(job.job_id, ("", ""))[1])
            if len(outcome) < len(jobs):
                time.sleep(self.poll_s)
        return [outcome[j.job_id] for j in jobs]

    def record_failure(self, job, overrides: list[str], state: str, node: str) -> None:
        from rnnlab.sweeps.requeue import record_failed_job

        tail = log_tail(job)
        log.error(f"SLURM job {job.job_id} ended {state} without a result")
        record_failed_job(self.config, job.job_id, state, node, overrides, tail)
