"""Checkpoints as plain ``.npz`` files: arrays and strings only, never pickle.

``Checkpoint`` is the one typed structure train, resume, sample and the served model read and
write; ``save``/``load`` are the raw file layer under it (named arrays plus a JSON ``__meta__``).

A checkpoint holds everything a run needs to continue exactly: weights, optimizer memories, the
hidden state of every stream, the data position, iteration, smooth loss, RNG states, the
vocabulary and the config that made it. It is written to a temporary file and renamed into
place, so a crash mid-write never leaves a broken file under the final name.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rnnlab.errors import UserError
from rnnlab.files import atomic_file
from rnnlab.training.checkpoint_checks import check_contents, check_declared_sizes


class CheckpointError(UserError):
    """A file is not a readable rnnlab checkpoint. The message is one line."""


FORMAT = "rnnlab-checkpoint-1"


def save(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
    """Write ``arrays`` plus JSON ``meta`` to ``path`` atomically."""
    payload = {k: np.asarray(v) for k, v in arrays.items()}
    payload["__meta__"] = np.array(json.dumps({"format": FORMAT, **meta}))
    with atomic_file(path) as f:  # rnnlab.files: the old file or the new one, never half
        np.savez(f, **payload)
    return path


def load(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, meta) from a checkpoint; CheckpointError for anything else."""
    if Path(path).is_file() and not zipfile.is_zipfile(path):
        # np.load treats a file that is neither .npz nor .npy as a pickle: say what it really is.
        raise CheckpointError(f"{path} is truncated or not an .npz checkpoint")
    try:
        if Path(path).is_file():
            check_declared_sizes(path)  # rnnlab.training.checkpoint_checks: before numpy allocates
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


# --- the typed structure every reader and writer uses ---------------------------------------------

PARAM, OPTIM, DATA, STATE, EVAL = "param/", "optim/", "data/", "state/", "eval/"


@dataclass
class Checkpoint:
    """One checkpoint, parsed: the only place that knows how its arrays are laid out in the file.

    ``params``, ``optim``, ``data`` and ``state`` are named arrays (any names: a new cell adds
    its own weights, a stacked network its per-layer states ``h0``, ``c0``, ...); ``meta`` is a
    JSON dict (``state``: the loop's TrainState, ``rng``, ``config``: the flat config,
    ``task``), open to new keys. ``vocab`` is the char-RNN's symbols in id order, stored as code
    points so that every character survives, NUL included (numpy's string arrays drop a
    trailing ``\\0``)."""

    params: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)
    optim: dict[str, np.ndarray] = field(default_factory=dict)
    data: dict[str, np.ndarray] = field(default_factory=dict)
    state: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. hprev (L, S, B, H)
    vocab: str | None = None
    # any other named arrays, by their full key: the best weights (best/Wxh, ...) and the
    # warm-validation burn-in text (eval/burn_in) of rnnlab.training.best
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def iteration(self) -> int:
        """The iteration it was taken at (a model's weights file keeps it as ``iteration``)."""
        loop = self.meta.get("state") or {}
        return _as_int(loop.get("iteration", self.meta.get("iteration", 0)), "iteration")

    @property
    def task(self) -> str | None:
        return self.meta.get("task")

    def config(self):
        """The typed ``Config`` that made it (rnnlab.config.Config), or CheckpointError."""
        flat = self.meta.get("config")
        if not isinstance(flat, dict):
            raise CheckpointError("the checkpoint has no config")
        return config_from_flat(flat)

    def weights_only(self) -> Checkpoint:
        """What a model needs to generate: parameters, vocabulary, config (no optimizer
        memories, data positions or RNG states)."""
        meta = {k: self.meta[k] for k in ("config", "task") if k in self.meta}
        meta["iteration"] = self.iteration
        extra = {k: v for k, v in self.extra.items() if k.startswith(EVAL)}  # the burn-in
        return Checkpoint(dict(self.params), meta, vocab=self.vocab, extra=extra)

    def write(self, path: Path) -> Path:
        """Save atomically to ``path`` (see ``save``)."""
        arrays = {PARAM + k: v for k, v in self.params.items()}
        arrays |= {OPTIM + k: v for k, v in self.optim.items()}
        arrays |= {DATA + k: v for k, v in self.data.items()}
        arrays |= {STATE + k: v for k, v in self.state.items()}
        arrays |= self.extra
        if self.vocab is not None:
            arrays["vocab"] = np.array([ord(c) for c in self.vocab], dtype=np.uint32)
        return save(Path(path), arrays, self.meta)

    @classmethod
    def read(cls, path: Path) -> Checkpoint:
        """Parse a checkpoint file; CheckpointError (one line) for anything else. Files of the
        first layout (``hprev`` at the top, the vocabulary as strings) still load."""
        arrays, meta = load(Path(path))
        ck = cls(_prefixed(arrays, PARAM), meta, _prefixed(arrays, OPTIM),
                 _prefixed(arrays, DATA), _prefixed(arrays, STATE))  # fmt: skip
        named = (PARAM, OPTIM, DATA, STATE)
        ck.extra = {k: v for k, v in arrays.items()
                    if not k.startswith(named) and k not in ("vocab", "hprev")}  # fmt: skip
        if "hprev" in arrays:  # the first layout
            ck.state.setdefault("hprev", arrays["hprev"])
        if "vocab" in arrays:
            ck.vocab = _vocabulary(arrays["vocab"], path)
        if not ck.params:
            raise CheckpointError(f"{path} is a checkpoint without weights")
        if not isinstance(meta.get("state", {}), dict):
            raise CheckpointError(f"{path} has unreadable training state in its metadata")
        try:
            ck.iteration  # noqa: B018 — validates the metadata's iteration once, here
            cfg = ck.config() if isinstance(meta.get("config"), dict) else None
            check_contents(ck.params, meta, ck.vocab, cfg)  # types and shapes, every cell
        except (CheckpointError, ValueError) as e:
            raise CheckpointError(f"{path}: {e}") from None
        return ck


def _vocabulary(v: np.ndarray, path: Path) -> str:
    """The symbols a ``vocab`` array holds: code points (V,), or the first layout's str array
    (which had already lost any NUL: numpy pads str arrays with NULs). One line for anything
    else, so a crafted file never reaches the model."""
    if v.ndim != 1:
        raise CheckpointError(f"{path}: the vocabulary has shape {v.shape}, expected one dimension")
    if v.dtype.kind in "iu":
        if v.size and (int(v.min()) < 0 or int(v.max()) > 0x10FFFF):
            raise CheckpointError(f"{path} has a vocabulary that is not code points")
        chars = "".join(chr(int(c)) for c in v)
    elif v.dtype.kind == "U":
        chars = "".join(str(c) for c in v)
    else:
        raise CheckpointError(f"{path}: the vocabulary has dtype {v.dtype}, expected code points")
    if len(set(chars)) != len(chars):
        raise CheckpointError(f"{path}: the vocabulary repeats characters")
    return chars


def _prefixed(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)}


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise CheckpointError(f"its {what} {value!r} is not an integer")
    return int(value)


def config_from_flat(flat: dict[str, Any]):
    """A checkpoint's flattened config → the typed Config (``rnnlab.config.from_flat``: keys
    rnnlab no longer has are dropped, keys it gained take their defaults); CheckpointError for
    a value of the wrong type (a crafted file)."""
    from rnnlab.config import from_flat

    try:
        return from_flat(flat)
    except ValueError as e:
        raise CheckpointError(f"the checkpoint's config is not valid ({e})") from None
