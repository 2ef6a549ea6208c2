"""``python -m rnnlab.inspect``: which hidden units track what — one self-contained HTML page.

    python -m rnnlab.inspect run_id=<id> text="One morning, as Gregor" out=inspect.html
    python -m rnnlab.inspect run_id=<id> path=chapter.txt
    python -m rnnlab.inspect checkpoint=outputs/.../iter_0100000.npz      # adder or char-RNN

A char-RNN run reads the text from the zero state; the page colours it character by character
by one unit's activation (red > 0 > blue) — of every layer, the top one first, for every cell —
for the units most correlated with simple features
(inside quotes, position in the line, after a space, after a full stop, capital, vowel) and the
most and least saturated units, each with its top-activating contexts. An adder run gets each
unit's correlation with the true carry bit and the bit-by-bit predictions of a few sums. The
same page is logged as the artifact ``inspect/index.html`` at the end of every run (without
``text=``: the first ``DEFAULT_CHARS`` held-out characters). The analysis here is pure numpy;
``rnnlab.analysis.viewer`` writes the page. Mistakes cost one line on stderr and exit code 2.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from rnnlab.analysis import viewer
from rnnlab.analysis.units import InspectError, analyse_adder
from rnnlab.engine import rnn
from rnnlab.quiet import key_value_cli
from rnnlab.sample import SampleError, parse_args, resolve_weights

MAX_CHARS = 20_000  # a page beyond this is too heavy for a browser to colour per character


KEYS = {
    "run_id": "an MLflow run id",
    "checkpoint": "a checkpoint .npz file",
    "tracking_uri": "where run_id lives",
    "text": "text to read",
    "path": "a UTF-8 file to read",
    "out": "where the page goes (default inspect.html)",
}
USAGE = (
    "usage: python -m rnnlab.inspect (run_id=<id> | checkpoint=<path>) [tracking_uri=<uri>] "
    '[text="…" | path=<file>] [out=<file.html>]'
)


def main(argv: list[str]) -> Path:
    """Write the page; return its path (or raise InspectError)."""
    try:  # key=value among KEYS, exactly one of run_id= and checkpoint= (as rnnlab.sample)
        args = parse_args(argv, KEYS)
    except SampleError as e:
        raise InspectError(str(e)) from None
    if "text" in args and "path" in args:
        raise InspectError('give at most one of text="…" or path=<file>')
    text = args.get("text")
    if "path" in args:
        try:
            text = Path(args["path"]).expanduser().read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InspectError(f"path={args['path']!r} cannot be read as UTF-8: {e}") from None
    if text is not None and not 2 <= len(text) <= MAX_CHARS:
        raise InspectError(f"the text has {len(text)} characters: allowed 2 to {MAX_CHARS}")
    out = Path(args.get("out", "inspect.html"))
    try:
        with tempfile.TemporaryDirectory(prefix="rnnlab-inspect-") as tmp:
            w = resolve_weights(args, Path(tmp))
    except SampleError as e:
        raise InspectError(str(e)) from None
    title = f"rnnlab inspect: {w.source}, iteration {w.iteration}"
    if w.vocab is None:  # an adder
        if text is not None:
            raise InspectError(f"{w.source} is an adder: text= and path= are for char-RNN runs")
        bits = w.cfg.seq_length
        rng = np.random.default_rng(0)
        a, b = rng.integers(0, 2 ** (bits - 1), (2, 4096))
        page = viewer.adder_page(analyse_adder(w.params, rnn.spec_of(w.cfg), bits, a, b), title)
    else:
        if text is None:
            raise InspectError('a char-RNN run needs text="…" or path=<file> to read')
        analyses = viewer.text_analyses(w.params, rnn.spec_of(w.cfg), w.vocab, text)
        page = viewer.text_page(analyses, title)
    out.write_text(page, encoding="utf-8")
    return out


def cli() -> None:
    help_text = USAGE + "\n\n" + __doc__.split("\n\n")[1]
    key_value_cli(lambda argv: f"wrote {main(argv)}", help_text, InspectError)


if __name__ == "__main__":
    cli()
