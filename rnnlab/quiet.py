"""What rnnlab's command lines keep off the screen, and what they never let fail a run.

Quiet: known-harmless messages of the libraries underneath (deprecations inside MLflow's own
imports, Optuna's note on every pruned trial, MLflow's per-file download bars) are dropped in
rnnlab's CLIs only, never rnnlab's own warnings; ``verbose=true`` keeps them all.

Unbreakable output: a reader that goes away (``| head``) must not turn a finished training run
into a FAILED one. Once a stream's reader is gone its writes are dropped instead of raising
``BrokenPipeError`` in the middle of a job.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import warnings

# Regexes (matched at the start) of third-party warnings seen on every run, harmless to it.
HARMLESS_WARNINGS = (
    r".*noload.* is deprecated",  # SQLAlchemy, inside MLflow's SQL store (its mappers)
    r"starlette\.middleware\.wsgi is deprecated",  # Starlette, inside MLflow's server
)
OPTUNA_SKIPPED = "Skipped telling trial"  # Optuna, once per trial the sweeper tells twice


def verbose_requested(args: list[str]) -> bool:
    """True when the command line says ``verbose=true`` (or 1/yes), or $RNNLAB_VERBOSE is set
    (for CLIs without a ``verbose`` key: ``rnnlab.sample``, ``rnnlab.report``)."""
    on = ("true", "1", "yes")
    if os.environ.get("RNNLAB_VERBOSE", "").lower() in on:
        return True
    return any(a.lower() in tuple(f"verbose={v}" for v in on) for a in args)


class _DropMessage(logging.Filter):
    """Drops log records whose message starts with ``prefix``."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


_OPTUNA_FILTER = _DropMessage(OPTUNA_SKIPPED)


def quiet_third_party(verbose: bool) -> None:
    """Silence the known-harmless third-party messages in this process, unless ``verbose``.
    Idempotent: every job calls it too, since joblib's workers are fresh processes."""
    if verbose:
        return
    for message in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message)  # a repeated filter is not added twice
    logging.getLogger("optuna.study._tell").addFilter(_OPTUNA_FILTER)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # workers inherit it


class _SurvivingStream:
    """A text stream whose writes stop silently once its reader has gone away."""

    def __init__(self, stream):
        self._stream = stream
        self._closed_pipe = False

    def write(self, text: str) -> int:
        written = self._guarded(self._stream.write, text)
        return len(text) if written is None else written

    def flush(self) -> None:
        self._guarded(self._stream.flush)

    def _guarded(self, call, *args):
        """``call(*args)`` while the reader is there; None once it has gone (a closed pipe)."""
        if self._closed_pipe:
            return None
        try:
            return call(*args)
        except (BrokenPipeError, ValueError):
            self._gone()
        except OSError as e:
            if e.errno != errno.EPIPE:
                raise
            self._gone()
        return None

    def _gone(self) -> None:
        self._closed_pipe = True
        try:  # further writes at exit (the interpreter flushes stdout) must not raise either
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def survive_closed_output() -> None:
    """Make stdout and stderr drop writes once their reader is gone (call before any logging
    handler is made, so Hydra's handlers write through the wrappers)."""
    if not isinstance(sys.stdout, _SurvivingStream):
        sys.stdout = _SurvivingStream(sys.stdout)
    if not isinstance(sys.stderr, _SurvivingStream):
        sys.stderr = _SurvivingStream(sys.stderr)


def key_value_cli(main, help_text: str, user_error: type[Exception]) -> None:
    """What every ``key=value`` CLI of rnnlab (sample, score) does around its ``main(argv)``:
    help on ``-h`` (exit 2 with none), quiet third-party output, a closed pipe that ends the
    output without a traceback, and one line with exit 2 for a user mistake."""
    argv = sys.argv[1:]
    survive_closed_output()  # `| head` ends the output, not in a traceback
    quiet_third_party(verbose_requested([]))  # no 50-file download bar
    if not argv or argv[0] in ("-h", "--help"):
        print(help_text)
        sys.exit(0 if argv else 2)
    try:
        out = main(argv)
    except user_error as e:
        print(f"rnnlab: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(out)
