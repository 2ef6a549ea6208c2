"""The suite's own cost table: measured by ``--store-durations``, rendered, never typed."""

from __future__ import annotations

from helpers import suite_times

FAKE = {
    "files": {
        "tests/e2e/a.py": {"seconds": 30.0, "cpu_seconds": 10.0},
        "tests/unit/b.py": {"seconds": 5.0, "cpu_seconds": 40.0},
        **{f"tests/unit/c{i}.py": {"seconds": 1.0, "cpu_seconds": 1.0} for i in range(20)},
    },
    "session": {"date": "2026-12-07T20:00:00+00:00", "commit": "abc1234", "machine": "x86_64, 2",
                "selection": "-m 'not slow'", "tests": 99, "wall_seconds": 61.0,
                "load_before": [0.5, 0.4, 0.3], "load_after": [1.9, 1.0, 0.6]},
}  # fmt: skip


def test_the_table_ranks_files_by_cpu_and_sums_the_rest():
    text = suite_times.markdown(FAKE)
    rows = [ln for ln in text.splitlines() if ln.startswith("| `")]
    assert rows[0].startswith("| `tests/unit/b.py` | 5.0 | 40.0 |")
    assert rows[1].startswith("| `tests/e2e/a.py` | 30.0 | 10.0 |")
    assert len(rows) == suite_times.SHOWN
    assert "| 7 other files | 7.0 | 7.0 |" in text
    assert "`python -m pytest -m 'not slow'`: 99 tests in 61 s wall, 70 s CPU" in text
    assert "0.5 / 0.4 / 0.3 before and 1.9 / 1.0 / 0.6 after" in text


def test_render_replaces_only_the_block(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(f"intro\n{suite_times.MARKERS[0]}\nold\n{suite_times.MARKERS[1]}\nend\n")
    suite_times.render_page(FAKE, page)
    text = page.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{suite_times.MARKERS[1]}\nend\n")
    assert "old" not in text and "`tests/unit/b.py`" in text


def test_the_testing_page_shows_the_recorded_durations():
    results = suite_times.read()
    page = suite_times.PAGE.read_text()
    a, b = (page.index(m) for m in suite_times.MARKERS)
    block = page[a + len(suite_times.MARKERS[0]) : b].strip()
    if "session" not in results:  # durations.json from before CPU was recorded: no table yet
        assert block == ""
    else:
        assert block == suite_times.markdown(results)
