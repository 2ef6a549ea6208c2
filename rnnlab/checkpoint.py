"""Checkpoints as plain ``.npz`` files: arrays and strings only, never pickle.

A checkpoint holds everything a run needs to continue exactly: weights, optimizer memories, the
hidden state of every stream, the data position, iteration, smooth loss, RNG states, the
vocabulary and the config that made it. It is written to a temporary file and renamed into
place, so a crash mid-write never leaves a broken file under the final name.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from rnnlab.checkpoint_checks import check_declared_sizes


class CheckpointError(ValueError):
    """A file is not a readable rnnlab checkpoint. The message is one line."""


FORMAT = "rnnlab-checkpoint-1"


def save(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
    """Write ``arrays`` plus JSON ``meta`` to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    payload = {k: np.asarray(v) for k, v in arrays.items()}
    payload["__meta__"] = np.array(json.dumps({"format": FORMAT, **meta}))
    with open(tmp, "wb") as f:
        np.savez(f, **payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, meta) from a checkpoint; CheckpointError for anything else."""
    if Path(path).is_file() and not zipfile.is_zipfile(path):
        # np.load treats a file that is neither .npz nor .npy as a pickle: say what it really is.
        raise CheckpointError(f"{path} is truncated or not an .npz checkpoint")
    try:
        if Path(path).is_file():
            check_declared_sizes(path)  # rnnlab.checkpoint_checks: before numpy allocates
    except (ValueError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path} is not a valid checkpoint: {e}") from None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise CheckpointError(f"{path} holds pickled objects; refusing to load it") from None
        raise CheckpointError(f"{path} is not a valid checkpoint ({e})") from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise CheckpointError(f"{path} is truncated or not an .npz checkpoint ({e})") from None
    if "__meta__" not in arrays:
        raise CheckpointError(f"{path} is an .npz file but not an rnnlab checkpoint")
    try:
        meta = json.loads(str(arrays.pop("__meta__")))
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} has unreadable metadata; not an rnnlab checkpoint")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} has format {meta.get('format')!r}, expected {FORMAT}")
    return arrays, meta


def latest(folder: Path) -> Path | None:
    """The newest complete checkpoint in ``folder`` (``*.tmp`` leftovers are never picked)."""
    files = sorted(folder.glob("iter_*.npz"))
    return files[-1] if files else None
