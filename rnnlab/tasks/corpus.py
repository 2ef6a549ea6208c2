"""Find a text corpus by name or path, downloading a known one when it is missing.

Resolution order: ``data.path`` if given → ``data/<name>.txt`` → download from ``data.url``
(or rnnlab's known source for that name) into ``data/<name>.txt``. Downloaded files are
git-ignored: the project never ships book text. Every failure is a ``CorpusError`` whose message
is one line saying what to do.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from rnnlab.errors import UserError

# Corpora rnnlab knows how to fetch. Project Gutenberg asks robots to use its cache URLs.
KNOWN_SOURCES = {
    "kafka": "https://www.gutenberg.org/cache/epub/5200/pg5200.txt",  # Metamorphosis, eBook 5200
}


class CorpusError(UserError):
    """The corpus cannot be found, fetched or read. The message is one line."""


def data_dir() -> Path:
    """``$RNNLAB_DATA_DIR``, else the project's ``data/`` folder, else ``./data``."""
    if env := os.environ.get("RNNLAB_DATA_DIR"):
        return Path(env)
    project_data = Path(__file__).resolve().parents[2] / "data"  # rnnlab/tasks/ → the checkout
    return project_data if project_data.is_dir() else Path.cwd() / "data"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def download(url: str, dest: Path, timeout: float = 30.0) -> Path:
    """Fetch ``url`` to ``dest`` atomically (a partial download never looks like a corpus)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            tmp.write_bytes(response.read())
    except (urllib.error.URLError, OSError, ValueError) as e:
        tmp.unlink(missing_ok=True)
        reason = getattr(e, "reason", e)
        raise CorpusError(
            f"could not download {url} ({reason}); put a UTF-8 text file at {dest} "
            f"or point data.path at one"
        ) from None
    os.replace(tmp, dest)
    return dest


def resolve(name: str, path: str | None = None, url: str | None = None) -> Path:
    """The file for a corpus, downloading it if rnnlab knows where from."""
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise CorpusError(f"data.path={path!r} is not a readable file")
        return p
    local = data_dir() / f"{name}.txt"
    if local.is_file():
        return local
    source = url or KNOWN_SOURCES.get(name)
    if source is None:
        known = ", ".join(sorted(KNOWN_SOURCES))
        raise CorpusError(
            f"data.name={name!r}: no file at {local} and no source to download it from "
            f"(known: {known}); put a UTF-8 text file there, set data.url, or set data.path"
        )
    return download(source, local)


def read_text(path: Path, min_chars: int = 2) -> str:
    """The whole file as text; one-line errors for unreadable, non-UTF-8, empty or tiny files."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CorpusError(f"cannot read corpus {path}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(
            f"corpus {path} is not UTF-8 text (byte {e.start}: {raw[e.start : e.start + 1]!r})"
        ) from None
    if not text:
        raise CorpusError(f"corpus {path} is empty")
    if len(text) < min_chars:
        raise CorpusError(f"corpus {path} has {len(text)} characters; need at least {min_chars}")
    return text


# Project Gutenberg files wrap the book in a licence header and footer. Left in, the footer is the
# held-out tail of the text (13.8% of kafka.txt), so val/loss would measure licence prose.
_GUTENBERG_START = re.compile(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG.*$", re.I | re.M)
_GUTENBERG_END = re.compile(
    r"^\s*(\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project Gutenberg)",
    re.I | re.M,
)


def strip_gutenberg(text: str) -> str:
    """The book without Project Gutenberg's header and footer; other texts unchanged."""
    start, end = _GUTENBERG_START.search(text), None
    if start:
        text = text[start.end() :]
    if end := _GUTENBERG_END.search(text):
        text = text[: end.start()]
    if not (start or end):
        return text
    return text.strip("\n") + "\n"  # the blank lines around the markers belong to neither
