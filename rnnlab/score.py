"""``python -m rnnlab.score``: how well a trained char-RNN predicts a text, in nats and bits.

    python -m rnnlab.score run_id=<id> path=chapter3.txt
    python -m rnnlab.score checkpoint=outputs/.../best.npz text="One morning" json=true
    python -m rnnlab.score run_id=<id> path=held_out.txt warm=true unknown=skip model_from=last

The text is read as one stream, exactly as ``val/loss`` reads the held-out text: every character
but the first is predicted from all before it, from h = 0; ``warm=true`` first reads the run's
burn-in (the last ``eval_burn_in`` training characters) from the state training carried when the
checkpoint was written (both stored in it), as ``val/loss_warm`` does. So the held-out text of a
run scores its ``val/loss`` (``val/loss_warm``) to rounding. Characters outside the vocabulary:
``unknown=error`` (default) names them; ``unknown=skip`` drops them before scoring and counts
them. Prints one line,

    <name>: 1.9550 nats/char, 2.8205 bits/char over 11,856 characters (0 unknown)

or with ``json=true`` an object with ``nats_per_char``, ``bits_per_char``, ``chars``,
``unknown``. Mistakes cost one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np

from rnnlab import evaluate, quiet, sample
from rnnlab.engine import rnn
from rnnlab.sample import SampleError, Weights, boolean, model_from, resolve_weights

KEYS = {
    "run_id": "an MLflow run id",
    "checkpoint": "a checkpoint .npz file",
    "tracking_uri": "where run_id lives",
    "path": "a UTF-8 text file to score",
    "text": "a text to score",
    "warm": "true: read the run's burn-in first",
    "json": "true: print a JSON object",
    "unknown": "error | skip",
    "model_from": "best | last (run_id only)",
}
USAGE = (
    "usage: python -m rnnlab.score (run_id=<id> | checkpoint=<path>) (path=<file> | "
    'text="…") [warm=true] [json=true] [unknown=error|skip] [model_from=best|last] '
    "[tracking_uri=<uri>]"
)


def score_text(w: Weights, text: str, warm: bool = False, unknown: str = "error") -> dict:
    """{nats_per_char, bits_per_char, chars (predicted), unknown (dropped)} for ``text``."""
    if w.vocab is None:
        raise SampleError(f"{w.source} is a model of task {w.cfg.task.name}, not a char-RNN")
    missing = [c for c in text if c not in w.vocab.index]
    if missing and unknown == "error":
        shown = ", ".join(repr(c) for c in sorted(set(missing))[:10])
        raise SampleError(
            f"the text has {len(missing)} characters not in the vocabulary ({shown}); "
            "pass unknown=skip to score the rest"
        )
    ids = np.array([w.vocab.index[c] for c in text if c in w.vocab.index], dtype=np.intp)
    if ids.size < 2:
        raise SampleError("the text needs at least 2 known characters (the first is not scored)")
    spec = rnn.spec_of(w.cfg)
    h = evaluate.zero_state(w.params, spec)
    if warm:
        if w.burn_in is None:
            raise SampleError(f"{w.source} holds no burn-in text (trained before warm scoring)")
        if w.warm_start is not None:  # the state training carried when it was saved
            h = w.warm_start.astype(h.dtype).reshape(h.shape)  # (1, H) before cells
        h = evaluate.read(w.params, spec, w.burn_in, h)
    total, count = evaluate.stream_loss(w.params, spec, ids, h)
    nats = total / count
    return {
        "nats_per_char": nats,
        "bits_per_char": nats / math.log(2.0),
        "chars": count,
        "unknown": len(missing),
    }


def parse_args(argv: list[str]) -> dict[str, str]:
    args = sample.parse_args(argv, KEYS)  # the key=value rules rnnlab.sample has, score's keys
    if ("path" in args) == ("text" in args):
        raise SampleError('give exactly one of path=<file> or text="…"')
    if args.get("unknown", "error") not in ("error", "skip"):
        raise SampleError(f"unknown={args['unknown']!r} is not allowed: error or skip")
    return args


def read_text(path: str) -> str:
    p = Path(path).expanduser()
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SampleError(f"path={path!r} is not a readable file") from None
    except UnicodeDecodeError as e:
        raise SampleError(f"path={path!r} is not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise SampleError(f"cannot read path={path!r}: {e.strerror}") from None


def main(argv: list[str]) -> str:
    """What the CLI prints, or SampleError."""
    args = parse_args(argv)
    warm, as_json = boolean(args, "warm"), boolean(args, "json")
    model_from(args)
    text = read_text(args["path"]) if "path" in args else args["text"]  # before any download
    name = args["path"] if "path" in args else "text"
    with tempfile.TemporaryDirectory(prefix="rnnlab-score-") as tmp:
        w = resolve_weights(args, Path(tmp))
    result = score_text(w, text, warm, args.get("unknown", "error"))
    if as_json:
        return json.dumps(result)
    return (
        f"{name}: {result['nats_per_char']:.4f} nats/char, {result['bits_per_char']:.4f} "
        f"bits/char over {result['chars']:,} characters ({result['unknown']:,} unknown)"
    )


def cli() -> None:
    quiet.key_value_cli(main, USAGE + "\n\n" + __doc__.split("\n\n", 1)[1].strip(), SampleError)


if __name__ == "__main__":
    cli()
