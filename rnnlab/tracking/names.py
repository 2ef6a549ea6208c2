"""Checks of what a user names outside the Hydra config: a store file, a registered-model name,
an experiment name. Each returns nothing or raises ``ValueError`` with one line naming the value
and what is allowed; the CLIs print it and exit 2 before any work. No MLflow import here: these
run before MLflow would touch (and perhaps create or migrate) anything.
"""

from __future__ import annotations

import re
from pathlib import Path

SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file
MAX_NAME = 256  # MLflow's experiments.name and registered_models.name columns are VARCHAR(256)
MODEL_NAME = re.compile(r"[^/:%\\?#\x00-\x1f]+")  # MLflow refuses these in a model's name/URI


def check_sqlite_file(path: Path) -> None:
    """A file given as a SQLite MLflow store must be a SQLite database (random bytes made
    MLflow print a SQLAlchemy traceback)."""
    try:
        with open(path, "rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except OSError as e:
        raise ValueError(f"cannot read the MLflow store {path}: {e.strerror}") from None
    if header and header != SQLITE_HEADER:  # an empty file is a store MLflow has yet to create
        raise ValueError(f"{path} is not an SQLite database, so not an MLflow store")


def check_model_name(name: str) -> None:
    """A registered-model name MLflow can store and address as ``models:/<name>/<version>``."""
    if not name or len(name) > MAX_NAME or not MODEL_NAME.fullmatch(name):
        raise ValueError(
            f"name={name!r} is not allowed: 1 to {MAX_NAME} characters without / : % \\ ? # "
            "or control characters, e.g. kafka-charrnn"
        )


def check_experiment_name(name: str | None) -> None:
    """An experiment name MLflow can store (``None``: one experiment per task)."""
    if name is not None and len(name) > MAX_NAME:
        raise ValueError(
            f"experiment_name={name[:20]!r}… ({len(name)} characters) is not allowed: at most "
            f"{MAX_NAME} characters"
        )
