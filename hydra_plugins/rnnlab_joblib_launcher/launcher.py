"""The launch loop: one spawned process per job, at most ``n_jobs`` at once (see the package
docstring for why not a pool).

Invariant, enforced here: the launcher is the only process a signal to the sweep reaches (each
job runs in its own session), and it passes each job exactly one SIGTERM per signal it gets, so
a job always stops through its training loop's checkpointing path, never half-way.

Imported by Hydra's plugin discovery on every start: only standard-library and Hydra imports at
the top; rnnlab loads when a sweep launches. No ``from __future__ import annotations``: Hydra
loads plugin modules outside sys.modules, where dataclasses cannot resolve string annotations.
"""

import logging
import math
import multiprocessing
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

log = logging.getLogger(__name__)

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


WATCH_SECONDS = 0.5  # how often a job checks that its launcher is still there


def stop_when_orphaned(launcher_pid: int, idx: int) -> None:
    """A daemon thread of the job's process: once the launcher is gone — killed outright, so it
    could forward nothing — the job's parent changes (to init or a subreaper), and the job
    SIGTERMs itself: its training loop writes a stop checkpoint and ends the run KILLED, as
    for any SIGTERM. No worker outlives its sweep, whatever killed the launcher."""
    import threading

    def watch() -> None:
        while os.getppid() == launcher_pid:
            time.sleep(WATCH_SECONDS)
        print(f"rnnlab: job {idx}: the sweep's process {launcher_pid} is gone; stopping with "
              f"a checkpoint", file=sys.stderr, flush=True)  # fmt: skip
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="rnnlab-orphan-watch", daemon=True).start()


def job_process(payload: bytes, conn: Connection, launcher_pid: int, idx: int) -> None:
    """The body of one job's process: run Hydra's joblib ``execute_job`` and send back
    ("done", JobReturn) or ("interrupted", message)."""
    import pickle

    import cloudpickle

    os.setsid()  # Ctrl-C on the terminal reaches the launcher only; it forwards one SIGTERM
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)  # until the training loop installs its own
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # blocked by the launcher at start
    stop_when_orphaned(launcher_pid, idx)
    try:
        from hydra_plugins.hydra_joblib_launcher._core import execute_job

        ret = execute_job(*cloudpickle.loads(payload))
        try:
            message = cloudpickle.dumps(("done", ret))
        except Exception:  # an exception that cannot cross processes: keep its text
            ret.return_value = RuntimeError(
                f"{type(ret._return_value).__name__}: {ret._return_value}"
            )
            message = cloudpickle.dumps(("done", ret))
    except KeyboardInterrupt as e:
        message = pickle.dumps(("interrupted", str(e) or "interrupted"))
    try:
        conn.send_bytes(message)
    except OSError:  # the launcher is gone; the run is recorded all the same
        pass


@dataclass
class RunningJob:
    idx: int
    overrides: Sequence[str]
    process: Any  # multiprocessing.Process
    conn: Connection
    started: float


def no_result(job: RunningJob) -> JobReturn:
    """What a job that ended without a value gives the sweeper: an infinite objective, as
    ``rnnlab.run.main`` returns for a failed job, so a sweeper never sees an exception."""
    return JobReturn(
        overrides=list(job.overrides), status=JobStatus.COMPLETED, _return_value=math.inf
    )


def death_reason(exitcode: int | None) -> str:
    """What ended a job's process without an answer, in words."""
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (out of memory, or kill -9)" if -exitcode == signal.SIGKILL else ""
        return f"its worker process was killed by {name}{hint}"
    return f"its worker process exited with code {exitcode} without a result"


class RnnlabJoblibLauncher(Launcher):
    def __init__(self, n_jobs: int = -1, **ignored: Any) -> None:
        self.n_jobs = int(n_jobs) if n_jobs and int(n_jobs) > 0 else (os.cpu_count() or 1)
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config, self.task_function, self.hydra_context = config, task_function, hydra_context

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        import cloudpickle

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(f"rnnlab joblib launcher: {len(job_overrides)} jobs, {self.n_jobs} at once")
        for i, overrides in enumerate(job_overrides):
            log.info(f"\t#{initial_job_idx + i} : {' '.join(filter_overrides(overrides))}")

        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked locks
        singleton_state = Singleton.get_state()
        pending = deque(enumerate(job_overrides, start=initial_job_idx))
        running: dict[Connection, RunningJob] = {}
        results: dict[int, JobReturn] = {}
        interrupt: str | None = None

        def start(idx: int, overrides: Sequence[str]) -> None:
            payload = cloudpickle.dumps(
                (idx, overrides, self.hydra_context, self.config, self.task_function,
                 singleton_state)
            )  # fmt: skip
            ours, theirs = context.Pipe(duplex=False)
            process = context.Process(
                target=job_process, args=(payload, theirs, os.getpid(), idx), daemon=False
            )
            # Blocked across the start, so a signal arriving now is neither lost nor delivered
            # to a job that has not left the terminal's process group yet.
            signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            try:
                process.start()
                theirs.close()  # our end then sees EOF when the job's process dies
                running[ours] = RunningJob(idx, overrides, process, ours, time.perf_counter())
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

        def collect(job: RunningJob) -> None:
            """The job's answer, or a FAILED record when its process died without one."""
            nonlocal interrupt
            try:
                kind, value = cloudpickle.loads(job.conn.recv_bytes())
            except (EOFError, OSError):
                kind, value = "died", None
            job.process.join()
            job.conn.close()
            del running[job.conn]
            if kind == "done":
                results[job.idx] = value
            elif kind == "interrupted":
                interrupt = interrupt or value
                results[job.idx] = no_result(job)
            else:
                reason = death_reason(job.process.exitcode)
                self._record_death(sweep_dir, job, reason)
                results[job.idx] = no_result(job)

        def stop_all() -> None:
            for job in running.values():
                if job.process.is_alive():
                    os.kill(job.process.pid, signal.SIGTERM)

        try:
            while pending or running:
                while pending and len(running) < self.n_jobs:
                    start(*pending.popleft())
                for conn in wait(list(running)):
                    collect(running[conn])
                if interrupt is not None:
                    stop_all()  # a job was interrupted on its own: the sweep stops, as in order
                    break
        except KeyboardInterrupt as e:
            interrupt = str(e) or "interrupted"
            stop_all()
        if interrupt is not None:
            # each job writes its stop checkpoint and closes its run KILLED; then the sweep stops
            while running:
                try:
                    for conn in wait(list(running)):
                        collect(running[conn])
                except KeyboardInterrupt:
                    stop_all()  # another signal: passed on, the jobs decide what it means
            raise KeyboardInterrupt(interrupt)
        return [results[i] for i in sorted(results)]

    def _record_death(self, sweep_dir: Path, job: RunningJob, reason: str) -> None:
        """One line on stderr and the job's run FAILED with ``reason`` as its error tag."""
        from rnnlab.sweeps.launching import fail_dead_job
        from rnnlab.tracking.job import read_swept_keys
        from rnnlab.tracking.ui import run_name

        name = run_name(list(job.overrides), read_swept_keys(sweep_dir), "") or "run"
        seconds = time.perf_counter() - job.started
        try:
            recorded = fail_dead_job(sweep_dir, job.idx, reason)
        except Exception as e:  # the store is unreachable: the sweep's end closes the run
            recorded = f"(not recorded: {type(e).__name__})"
        line = f"rnnlab: job {job.idx} {name}: FAILED in {seconds:.1f} s, {reason} {recorded}"
        print(line.rstrip(), file=sys.stderr)
