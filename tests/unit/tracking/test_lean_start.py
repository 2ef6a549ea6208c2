"""What a run skips at start, and that it records the same for it: the model's requirements
checked without mapping every installed package, no telemetry client, no IPython import in a
command's process."""

from __future__ import annotations

import os
import subprocess
import sys


def test_the_models_requirements_are_checked_without_mapping_every_package(monkeypatch):
    """Inside ``requirements_checked_alone`` MLflow still finds a requirement this environment
    does not meet, and none among the model's own; it never scans every installed package,
    and its map is left unbuilt afterwards."""
    import importlib_metadata
    from mlflow.utils import requirements_utils as ru

    from rnnlab.tracking.pyfunc import requirements, requirements_checked_alone

    def scan():
        raise AssertionError("every installed distribution scanned")

    monkeypatch.setattr(importlib_metadata, "packages_distributions", scan)
    monkeypatch.setattr(ru, "_MODULES_TO_PACKAGES", None)
    monkeypatch.setattr(ru, "_PACKAGES_TO_MODULES", None)
    with requirements_checked_alone():
        assert [ru._check_requirement_satisfied(r) for r in requirements()] == [None] * 4
        wrong = ru._check_requirement_satisfied("numpy==0.0.1")
        assert wrong is not None and wrong.package_name == "numpy"
    assert ru._MODULES_TO_PACKAGES is None and ru._PACKAGES_TO_MODULES is None


def test_a_commands_process_skips_telemetry_and_ipython():
    """``lean_mlflow`` turns MLflow's telemetry off unless the user set it; ``not_a_notebook``
    keeps MLflow's notebook probes from importing IPython, and the run's tags still resolve."""
    code = (
        "import sys\n"
        "from rnnlab.tracking import store\n"
        "store.lean_mlflow(); store.not_a_notebook()\n"
        "from mlflow.telemetry import get_telemetry_client\n"
        "from mlflow.tracking.context import registry\n"
        "tags = registry.resolve_tags({'a': 'b'})\n"
        "print(get_telemetry_client(), 'IPython' in sys.modules and sys.modules['IPython'],\n"
        "      sorted(k for k in tags if k in ('a', 'mlflow.user', 'mlflow.source.type')))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_DISABLE_TELEMETRY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True, timeout=120).stdout.split("\n")[-2]  # fmt: skip
    assert out == "None None ['a', 'mlflow.source.type', 'mlflow.user']"
    env["MLFLOW_DISABLE_TELEMETRY"] = "false"  # the user's setting wins
    code = "from rnnlab.tracking import store; import os; store.lean_mlflow(); " \
           "print(os.environ['MLFLOW_DISABLE_TELEMETRY'])"  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True, timeout=60).stdout.strip()  # fmt: skip
    assert out == "false"
