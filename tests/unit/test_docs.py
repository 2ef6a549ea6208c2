"""The manual: a README that is its first page, and a docs site that builds without a broken link.

- The README's first lines under the title are exactly the two set-up commands (main job, tests),
  and it stays a manual: ≤ 300 lines, every local link resolves.
- The project speaks of itself alone: no issue numbers, "the brief" or "the owner" in the README,
  the docs or the code's docstrings.
- ``mkdocs build --strict`` passes: a broken link or a page missing from the site fails it.
"""

from __future__ import annotations

import re
import subprocess
import sys

from helpers.processes import ROOT

README = ROOT / "README.md"
HISTORY = re.compile(r"\bissues? ?#?\d+\b|\bthe brief\b|\bthe owner\b", re.IGNORECASE)


def test_readme_opens_with_the_two_set_up_commands():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "# rnnlab"
    body = [line for line in lines[1:] if line.strip()]
    assert body[0] == "```bash" and body[3] == "```"
    main_job, tests = body[1], body[2]
    assert main_job.startswith("pip install") and "python -m rnnlab.run" in main_job
    assert tests.startswith("pip install") and tests.split("&&")[1].split("#")[0].strip() == (
        "python -m pytest"
    )
    # .ci/run calls the same test command
    assert "\npython -m pytest\n" in (ROOT / ".ci" / "run").read_text()


def test_readme_is_a_manual_page_whose_links_resolve():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 300
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if "://" in target:
            continue
        assert (ROOT / target).exists(), target


def test_no_project_history_in_the_docs_or_docstrings():
    files = [README, *sorted((ROOT / "docs").glob("*.md"))]
    files += sorted((ROOT / "rnnlab").rglob("*.py")) + sorted((ROOT / "experiments").rglob("*.md"))
    found = [
        f"{p.relative_to(ROOT)}: {m.group(0)}"
        for p in files
        for m in HISTORY.finditer(p.read_text(encoding="utf-8"))
    ]
    assert found == []


def test_the_docs_site_builds_strictly(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
         str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
        capture_output=True, text=True, timeout=300, env={"NO_MKDOCS_2_WARNING": "1",
                                                          "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "architecture" / "index.html").is_file()


def test_the_memory_horizon_readme_quotes_its_table_from_horizon_csv():
    """The every-cell table in experiments/memory_horizon/README.md is what table.py prints
    from the report's horizon.csv beside it, to the character: never typed by hand."""
    folder = ROOT / "experiments" / "memory_horizon"
    done = subprocess.run([sys.executable, str(folder / "table.py")], capture_output=True,
                          text=True, check=True)  # fmt: skip
    assert done.stdout.strip() in (folder / "README.md").read_text(encoding="utf-8")
