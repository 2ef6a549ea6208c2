"""Old import path of the job lifecycle, kept so code written against it still imports.

Everything here lives in ``rnnlab.job`` (a job's life and statuses) and ``rnnlab.store``
(tracking URI, experiments); import it from there.
"""

from rnnlab.job import (  # noqa: F401
    PARENT_RUN_FILE,
    SWEPT_KEYS_FILE,
    JobContext,
    git_tags,
    read_parent_run_id,
    read_swept_keys,
    record_inputs,
    run_job,
)
from rnnlab.store import ensure_experiment, experiment_name, tracking_uri  # noqa: F401
