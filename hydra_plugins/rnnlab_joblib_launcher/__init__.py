"""``hydra/launcher=joblib``: parallel sweep jobs on this machine that survive signals and
dying workers.

The hydra-joblib-launcher runs jobs in a pool of loky workers. A pool breaks as a whole: a
worker killed by the kernel (SIGKILL, OOM) aborts every job and the sweep with a
``TerminatedWorkerError`` traceback, and Ctrl-C makes joblib kill the workers before they can
write their stop checkpoint. This launcher keeps the same command and keys but starts **one
process per job** (at most ``n_jobs`` at once), each in its own session, so:

- a signal to the sweep reaches every job exactly once: the launcher forwards SIGTERM to each
  running job (Ctrl-C on a terminal reaches only the launcher, never a job twice), waits for
  each to write its stop checkpoint and end KILLED, starts no new job, and stops the sweep;
- a job whose process dies only ends its own run FAILED, with an ``error`` tag naming the
  signal, and the sweep goes on with the remaining jobs;
- a job whose launcher dies (killed outright, so nothing could be forwarded) stops by itself,
  with its stop checkpoint, KILLED: no worker outlives its sweep.

``config`` holds the schema, ``launcher`` the loop; the per-job work is Hydra's joblib
``execute_job``, unchanged, so each job sees the config a joblib worker would.
"""
