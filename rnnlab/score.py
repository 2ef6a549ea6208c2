"""``python -m rnnlab.score``: how well a trained char-RNN predicts a text, in nats and bits.

The text is read as one stream, exactly as ``val/loss`` reads the held-out text (see
``rnnlab.inference.scoring``), so a run's held-out text scores its ``val/loss`` (``warm=true``:
``val/loss_warm``) to rounding. Prints one line,

    <name>: 1.9550 nats/char, 2.8205 bits/char over 11,856 characters (0 unknown)

or with ``json=true`` an object with ``nats_per_char``, ``bits_per_char``, ``chars``,
``unknown``. Mistakes cost one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from rnnlab import cli
from rnnlab.errors import UserError
from rnnlab.inference.scoring import score_text
from rnnlab.tracking.run_weights import weights_of

COMMAND = cli.Command(
    name="rnnlab.score",
    summary="how well a trained char-RNN predicts a text, in nats and bits per character",
    keys=cli.WEIGHTS_KEYS
    + (
        cli.Key("path", "a UTF-8 text file to score"),
        cli.Key("text", "a text to score"),
        cli.Key(
            "warm", "first read the run's burn-in from the state training carried", bool, False
        ),
        cli.Key("json", "print a JSON object", bool, False),
        cli.Key(
            "unknown",
            "characters outside the vocabulary: name them, or drop and count",
            choices=("error", "skip"),
            default="error",
        ),
    ),
    examples=(
        "python -m rnnlab.score run_id=<id> path=chapter3.txt",
        'python -m rnnlab.score checkpoint=outputs/.../best.npz text="One morning" json=true',
        "python -m rnnlab.score run_id=<id> path=held_out.txt warm=true unknown=skip",
    ),
)


def read_text(path: str) -> str:
    p = Path(path).expanduser()
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"path={path!r} is not a readable file") from None
    except UnicodeDecodeError as e:
        raise UserError(f"path={path!r} is not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise UserError(f"cannot read path={path!r}: {e.strerror}") from None


def run(args: dict) -> str:
    """What the command prints (UserError for a bad request)."""
    source = cli.weights_source(args)
    which = cli.exactly_one(args, "path", "text")
    text = read_text(args["path"]) if which == "path" else args["text"]  # before any download
    with tempfile.TemporaryDirectory(prefix="rnnlab-score-") as tmp:
        w = weights_of(Path(tmp), **source)
    result = score_text(w, text, args["warm"], args["unknown"])
    if args["json"]:
        return json.dumps(result)
    name = args["path"] if which == "path" else "text"
    return (
        f"{name}: {result['nats_per_char']:.4f} nats/char, {result['bits_per_char']:.4f} "
        f"bits/char over {result['chars']:,} characters ({result['unknown']:,} unknown)"
    )


def main(argv: list[str] | None = None) -> None:
    cli.main(COMMAND, run, argv)


if __name__ == "__main__":
    main()
