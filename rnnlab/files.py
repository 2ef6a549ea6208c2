"""Writing a file a user keeps: the old file or the new one, never a broken one.

Every file rnnlab writes for a user — checkpoints, exports, the report's files, inspect pages,
sampled text — goes through ``atomic_file``: the bytes go to a temporary file in the target's
own folder (same filesystem, so the rename is atomic), are flushed and ``fsync``ed, and only
then replace the target with ``os.replace``; the folder is ``fsync``ed so the rename survives a
power cut. A process killed at any moment (SIGKILL, OOM, a full disk) leaves either the file
that was there before or the complete new one, plus at most a hidden ``.<name>.*.tmp`` beside
it, which no reader picks up.

The folders rnnlab names after what a user typed (a sweep job's overrides, a report's sweep
or experiment) go through ``safe_name``: always one folder inside its parent, never ``..`` or a
path, whatever the overrides hold.

Not here: what goes into the files (each writer), uploads to the tracking store (MLflow's).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

TMP_SUFFIX = ".tmp"


@contextmanager
def atomic_file(path: Path | str, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Yield a file open for writing; on a clean exit it replaces ``path`` whole (see the
    module). On an exception the target is untouched and the temporary file removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, mode, encoding=encoding, newline="" if "b" not in mode else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a user's file gets the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def write_bytes(path: Path | str, data: bytes) -> Path:
    """``path`` holds ``data`` whole, atomically."""
    with atomic_file(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_text(path: Path | str, text: str, encoding: str = "utf-8") -> Path:
    """``path`` holds ``text`` whole, atomically."""
    with atomic_file(path, "w", encoding=encoding) as f:
        f.write(text)
    return Path(path)


def _umask() -> int:
    """The process's umask without changing it (``os.umask`` would, for every thread)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. a platform without directory descriptors
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- names of the folders rnnlab makes ----------------------------------------------------------

NAME_BYTES = 200  # a file name may hold 255 bytes; room for a suffix
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+@-]+")


def safe_name(text: str, fallback: str = "run") -> str:
    """One folder name for ``text`` (an override list, a sweep's or experiment's name): path
    separators, control and other characters become ``_``, a name of only dots gets a ``_``
    before it, and a long one is cut to ``NAME_BYTES`` with a hash of the whole, so it is never
    ``..``, never a path, never too long, and two different texts stay two names."""
    name = _UNSAFE.sub("_", text).strip("_") or fallback
    if set(name) <= {"."}:
        name = "_" + name
    if len(name.encode()) > NAME_BYTES:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        name = name[: NAME_BYTES - 13] + "_" + digest
    return name


def inside(parent: Path | str, name: str) -> Path:
    """``parent / safe_name(name)``: always a folder directly inside ``parent``."""
    path = Path(parent) / safe_name(name)
    assert path.resolve().parent == Path(parent).resolve(), path
    return path
