"""The README's tour, command by command, as a newcomer types it — in cheap variants (a few
hundred iterations, a small network) so the README cannot drift from the code. The commands are
read from the README itself (the block between ``<!-- tour`` and ``<!-- /tour -->``)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys

import pytest
from helpers.processes import (
    ROOT,
    free_port,
    run_cli,
    server_env,
    stop_process_group,
    wait_until_ok,
)

# what makes a training command cheap; a key the command sets itself keeps its value, except
# iterations, which a resume must raise past the first run's
CHEAP = {"iterations": "300", "log_every": "50", "eval_every": "100", "sample_every": "100",
         "checkpoint_every": "100", "hidden_size": "16"}  # fmt: skip


def tour() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- tour[^>]*-->\s*```bash\n(.*?)```", text, re.S)
    assert block, "the README has no tour block"
    return [line.split("  #")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def cheap(argv: list[str]) -> list[str]:
    """A training command with the cheap keys it does not set itself."""
    given = {a.split("=", 1)[0] for a in argv if "=" in a}
    out = [a if not a.startswith("iterations=") else "iterations=600" for a in argv]
    return out + [f"{k}={v}" for k, v in CHEAP.items() if k not in given]


@pytest.mark.slow
def test_every_tour_command_runs(tmp_path, kafka_path):
    commands = tour()
    assert len(commands) >= 8
    (tmp_path / "data").mkdir()
    shutil.copy(kafka_path, tmp_path / "data" / "kafka.txt")  # what `path=data/kafka.txt` reads
    run_id = None
    for command in commands:
        argv = shlex.split(command.replace("<run id>", run_id or "<run id>"))
        print("$", shlex.join(argv))
        if argv[:2] == ["mlflow", "ui"]:
            port = free_port()
            log = open(tmp_path / "ui.log", "w")  # noqa: SIM115 — closed below
            proc = subprocess.Popen(
                [sys.executable, "-m", "mlflow", *argv[1:], "--host", "127.0.0.1",
                 "--port", str(port)],
                cwd=tmp_path, env=server_env(), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
            try:
                wait_until_ok(f"http://127.0.0.1:{port}/health", proc, tmp_path / "ui.log")
            finally:
                stop_process_group(proc)
                log.close()
            continue
        assert argv[:2] == ["python", "-m"], command
        module, args = argv[2], argv[3:]
        if module == "rnnlab.run":
            args = cheap(args)
        done = run_cli(args, cwd=tmp_path, module=module, timeout=600)
        assert done.returncode == 0, (command, done.stderr[-3000:])
        if module == "rnnlab.run" and run_id is None:
            run_id = re.search(r"rnnlab: run id ([0-9a-f]{32})", done.stdout).group(1)
        if "-m" in args:  # a sweep closes with its leaderboard and report
            assert "rnnlab: report: " in done.stdout and "rank  objective" in done.stdout
    assert (tmp_path / "inspect.html").is_file()
    assert run_id is not None
