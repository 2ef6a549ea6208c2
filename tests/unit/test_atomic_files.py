"""Every file rnnlab writes for a user is the old file or the new one, never a broken one.

- The class, statically: no module writes a file except through ``rnnlab.files`` (``files.
  write_text``/``write_bytes``, or a writer inside ``with atomic_file(...)``); the few
  exceptions are listed with their reason.
- The mechanism, for real: a process writing a large file through ``atomic_file`` is SIGKILLed
  at seeded moments; the target then holds exactly the old bytes or exactly the new ones.
"""

from __future__ import annotations

import ast
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.processes import ROOT

from rnnlab import files

# Writes that are not a user's file, or are atomic by another route, and why.
ALLOWED = {
    "rnnlab/files.py": "the helper itself",
    "rnnlab/cluster.py": "the local cluster's own daemon state (configs, keys, pid files)",
    "rnnlab/tasks/corpus.py": "a download goes to <name>.part, renamed into place when whole",
    "rnnlab/tracking/journal.py": "the append-only journal: each line fsynced, a cut last line "
    "is skipped on replay",
    "rnnlab/tracking/store_log.py": "an append-only log of store errors, read by people",
}
WRITERS = {"write_text", "write_bytes", "savez", "savez_compressed", "save", "savefig", "to_csv",
           "to_json", "to_parquet", "dump"}  # fmt: skip


def _inside_atomic(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.With):
            for item in node.items:
                call = item.context_expr
                if isinstance(call, ast.Call):
                    f = call.func
                    name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
                    if name == "atomic_file":
                        return True
    return False


def unguarded_writes(path: Path, label: str) -> list[str]:
    tree = ast.parse(path.read_text())
    parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Name) and f.id == "open":
            mode = node.args[1] if len(node.args) > 1 else None
            mode = next((k.value for k in node.keywords if k.arg == "mode"), mode)
            text = mode.value if isinstance(mode, ast.Constant) else "r"
            if any(c in str(text) for c in "wax+"):
                found.append(f"{label}:{node.lineno} open(..., {text!r})")
        elif isinstance(f, ast.Attribute) and f.attr in WRITERS:
            via_helper = isinstance(f.value, ast.Name) and f.value.id == "files"
            target = node.args or [k for k in node.keywords if k.arg == "path_or_buf"]
            if f.attr == "to_csv" and not target:
                continue  # DataFrame.to_csv() with no target returns the text
            if f.attr == "dump" and not (isinstance(f.value, ast.Name) and f.value.id == "json"):
                continue
            if f.attr == "save" and not (isinstance(f.value, ast.Name) and f.value.id == "np"):
                continue
            if not via_helper and not _inside_atomic(node, parents):
                found.append(f"{label}:{node.lineno} .{f.attr}(...)")
    return found


def test_every_file_rnnlab_writes_goes_through_the_atomic_helper():
    problems = []
    for path in sorted((ROOT / "rnnlab").rglob("*.py")):
        label = str(path.relative_to(ROOT))
        if label not in ALLOWED:
            problems += unguarded_writes(path, label)
    assert not problems, "write these through rnnlab.files:\n" + "\n".join(problems)


def test_the_static_check_finds_a_direct_write(tmp_path):
    bad = tmp_path / "probe.py"
    bad.write_text(
        "import numpy as np\ndef f(p, a):\n    np.savez(p, a=a)\n    p.write_text('x')\n"
    )
    assert len(unguarded_writes(bad, "probe.py")) == 2


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = files.write_text(tmp_path / "report.md", "old")
    with pytest.raises(RuntimeError), files.atomic_file(target, "w") as f:
        f.write("half of the new")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]
    assert oct(target.stat().st_mode & 0o777) != oct(0o600)  # a user's mode, not mkstemp's


WRITER = """
import os, sys, time
from rnnlab.files import atomic_file
path, fill = sys.argv[1], sys.argv[2].encode()
print("ready", flush=True)
with atomic_file(path) as f:
    for i in range(400):  # 400 × 64 KiB, synced as it goes: the write takes a while
        f.write(fill * 65536)
        f.flush()
        if i % 40 == 0:
            os.fsync(f.fileno())
"""


def write_in_child(target: Path, fill: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target), fill], env=env,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_sigkill_at_seeded_moments_leaves_the_old_or_the_new_file(tmp_path):
    rng = random.Random(20261207)
    target = tmp_path / "export.npz"
    old, new = b"o" * (400 * 65536), b"n" * (400 * 65536)
    proc = write_in_child(target, "n")
    started = time.perf_counter()
    proc.wait()
    seconds = time.perf_counter() - started  # how long one whole write takes here
    assert target.read_bytes() == new
    outcomes = []
    for round_ in range(10):
        target.write_bytes(old)
        delay = rng.uniform(0.0, 1.2 * seconds)
        proc = write_in_child(target, "n")
        try:
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
        data = target.read_bytes()
        state = "old" if data == old else "new" if data == new else "BROKEN"
        outcomes.append(state)
        print(f"round {round_}: SIGKILL {delay * 1000:.0f} ms into a {seconds * 1000:.0f} ms "
              f"write: {state}")  # fmt: skip
        assert state != "BROKEN", f"{len(data)} bytes"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "export.npz"]
    assert all(n.startswith(".export.npz.") and n.endswith(".tmp") for n in leftovers)
