"""What each test file costs, measured by the suite itself (``python -m pytest --store-durations``):
wall seconds (setup, call and teardown, summed over the file's tests) and CPU seconds (the worker's
own and its waited-for children's — the CLI runs, servers and sweeps a test starts), written to
``tests/durations.json`` and rendered into the table of ``docs/testing.md``, never typed."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DURATIONS = ROOT / "tests" / "durations.json"
PAGE = ROOT / "docs" / "testing.md"
MARKERS = ("<!-- suite:files -->", "<!-- /suite:files -->")
SHOWN = 15  # files in the page's table, most CPU first


def cpu_seconds() -> float:
    """User + system CPU of this process and of every child it has waited for."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                             capture_output=True, timeout=10)  # fmt: skip
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def seconds_of(entry) -> float:
    """A file's wall seconds from durations.json (a plain number in files written before CPU
    was measured)."""
    return float(entry["seconds"] if isinstance(entry, dict) else entry)


def read() -> dict:
    return json.loads(DURATIONS.read_text()) if DURATIONS.is_file() else {}


def files() -> dict:
    """Each file's entry (a plain {file: seconds} in files written before CPU was measured)."""
    data = read()
    return data.get("files", data)


def record(measured: dict[str, dict[str, float]], session: dict) -> dict:
    """The results: every file's wall and CPU seconds (longest first, the order files start in)
    and the session's own figures. Files this session did not run keep their earlier figures."""
    earlier = files()
    merged = {**{k: v for k, v in earlier.items() if isinstance(v, dict)}, **measured}
    ordered = sorted(merged.items(), key=lambda kv: -kv[1]["seconds"])
    return {
        "files": {k: {x: round(v, 1) for x, v in figs.items()} for k, figs in ordered},
        "session": session,
    }


def session_figures(started: float, load_before: list[float], tests: int, selection: str) -> dict:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs",
        "selection": selection,
        "tests": tests,
        "wall_seconds": round(time.monotonic() - started, 1),
        "load_before": load_before,
        "load_after": load_average(),
    }


def markdown(results: dict) -> str:
    s, files = results["session"], results["files"]
    cpu = sum(f.get("cpu_seconds", 0.0) for f in files.values())
    command = " ".join(["python -m pytest", s["selection"]]).strip()
    lines = [
        f"Measured {s['date']} at commit `{s['commit']}` ({s['machine']}), "
        f"`{command}`: {s['tests']} tests in {s['wall_seconds']:,.0f} s "
        f"wall, {cpu:,.0f} s CPU over all files; load average (1 / 5 / 15 min) "
        + " / ".join(f"{x:.1f}" for x in s["load_before"])
        + " before and "
        + " / ".join(f"{x:.1f}" for x in s["load_after"])
        + " after.",
        "",
        "| file | wall s | CPU s |",
        "|---|---:|---:|",
    ]
    by_cpu = sorted(files.items(), key=lambda kv: -kv[1].get("cpu_seconds", 0.0))
    for name, figs in by_cpu[:SHOWN]:
        lines.append(f"| `{name}` | {figs['seconds']:,.1f} | {figs.get('cpu_seconds', 0):,.1f} |")
    rest = by_cpu[SHOWN:]
    if rest:
        wall = sum(f["seconds"] for _, f in rest)
        c = sum(f.get("cpu_seconds", 0.0) for _, f in rest)
        lines.append(f"| {len(rest)} other files | {wall:,.1f} | {c:,.1f} |")
    return "\n".join(lines)


def render_page(results: dict, page: Path = PAGE) -> None:
    """Fill the page's ``MARKERS`` block (left as it is when the page has none)."""
    if not page.is_file():
        return
    text = page.read_text(encoding="utf-8")
    a, b = text.find(MARKERS[0]), text.find(MARKERS[1])
    if a < 0 or b < a:
        return
    body = markdown(results)
    page.write_text(text[: a + len(MARKERS[0])] + "\n" + body + "\n" + text[b:], encoding="utf-8")


def write(results: dict) -> None:
    DURATIONS.write_text(json.dumps(results, indent=1) + "\n")
    render_page(results)
