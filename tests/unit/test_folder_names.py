"""Folders named after what a user typed always land inside their parent folder.

A sweep job's folder is named after its overrides (``conf/config.yaml``: ``hydra.sweep.subdir``
through ``${rnnlab_folder:…}``) and a report's after its sweep or experiment
(``rnnlab.files.inside``). Before, ``data.path=../x.txt`` put job folders outside the sweep's
folder — an identical second sweep reused them and overwrote their checkpoints — and an
experiment named ``..`` made the report write into the launch folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.processes import ROOT, run_cli

from rnnlab.files import NAME_BYTES, inside, safe_name

HOSTILE = ["..", ".", "...", "../../x.txt", "data.path=../x.txt,seed=1", "/etc/passwd",
           "a/../../b", "..\\..\\c", "x\0y", "line\nbreak", "‮rtl‮", "名前/..",
           "data.path=" + "long/" * 200, "", "_", "-rf"]  # fmt: skip


@pytest.mark.parametrize("text", HOSTILE)
def test_a_name_is_one_folder_inside_its_parent(text, tmp_path):
    name = safe_name(text)
    assert name not in (".", "..") and "/" not in name and "\\" not in name and "\0" not in name
    assert "\n" not in name and 0 < len(name.encode()) <= NAME_BYTES
    folder = inside(tmp_path, text)
    assert folder.resolve().parent == tmp_path.resolve()


def test_long_names_stay_apart_and_plain_ones_readable():
    a, b = "data.path=" + "x" * 400 + "a", "data.path=" + "x" * 400 + "b"
    assert safe_name(a) != safe_name(b)
    assert safe_name("hidden_size=50,seed=1") == "hidden_size=50,seed=1"


def test_job_folders_are_named_through_the_sanitiser():
    config = (ROOT / "conf" / "config.yaml").read_text()
    assert "subdir: ${hydra.job.num}_${rnnlab_folder:${hydra.job.override_dirname}}" in config


@pytest.mark.slow
def test_two_identical_sweeps_over_parent_paths_keep_their_job_folders_apart(tmp_path):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    for name in ("x.txt", "y.txt"):
        (tmp_path / "a" / name).write_text("abcdefghij " * 400)
    args = ["-m", "data.path=../x.txt,../y.txt", "iterations=3", "hidden_size=4",
            "seq_length=5", "experiment_name=.."]  # fmt: skip
    for _ in range(2):
        done = run_cli(args, work)
        assert done.returncode == 0, done.stderr[-3000:]
    sweeps = sorted((work / "multirun").iterdir())
    assert len(sweeps) == 2
    for sweep in sweeps:
        jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
        print(sweep.name, jobs)
        assert jobs == [
            "0_data.path=.._x.txt,hidden_size=4,iterations=3,seq_length=5",
            "1_data.path=.._y.txt,hidden_size=4,iterations=3,seq_length=5",
        ]
        for job in jobs:
            assert list((sweep / job / "checkpoints").glob("iter_*.npz"))
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b", "x.txt", "y.txt"]
    reports = sorted(p.name for p in (work / "reports").iterdir())
    assert all(Path(work / "reports" / r).is_dir() for r in reports) and ".." not in reports
