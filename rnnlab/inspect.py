"""``python -m rnnlab.inspect``: which hidden units track what — one self-contained HTML page.

A char-RNN run reads the text (by default ~2,000 characters of its own held-out text, from a
paragraph's start) from the zero state; the page colours it character by character
by one unit's activation — of every layer, the top one first, for every cell — for the units
that track features of the text (|r| ≥ 0.1) and the most and least saturated units, each
with its top-activating contexts. An adder run gets each unit's correlation with the true carry
bit and the bit-by-bit predictions of a few sums; an adding, copy or digits run the units most
correlated with what its task asks the state to hold (the adding problem: whether a marker has
been seen, the running sum), each colouring a few held-out sequences step by step. The same page
is logged as the artifact ``inspect/index.html`` at the end of every run. The analysis is
``rnnlab.analysis.units``, the page ``rnnlab.analysis.viewer``. Mistakes cost one line on stderr
and exit code 2.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from rnnlab import cli, files
from rnnlab.analysis import viewer
from rnnlab.analysis.units import analyse_adder
from rnnlab.engine import rnn
from rnnlab.errors import UserError
from rnnlab.tasks import TASKS
from rnnlab.tracking.run_weights import weights_of

MAX_CHARS = 20_000  # a page beyond this is too heavy for a browser to colour per character

COMMAND = cli.Command(
    name="rnnlab.inspect",
    summary="which hidden units track what: one self-contained HTML page",
    keys=cli.WEIGHTS_KEYS
    + (
        cli.Key(
            "text",
            f"text to read (char-RNN; 2 to {MAX_CHARS:,} characters; default: "
            f"~{viewer.DEFAULT_CHARS:,} characters of the run's held-out text)",
        ),
        cli.Key("path", "a UTF-8 file to read instead of text="),
        cli.Key("out", "where the page goes", default="inspect.html"),
    ),
    examples=(
        "python -m rnnlab.inspect run_id=<id>      # a passage of the run's held-out text",
        'python -m rnnlab.inspect run_id=<id> text="One morning, as Gregor" out=inspect.html',
        "python -m rnnlab.inspect run_id=<id> path=chapter.txt",
        "python -m rnnlab.inspect checkpoint=outputs/.../iter_0100000.npz      # an adder",
    ),
)


def held_out_passage(w) -> str:
    """The start of the held-out text of the run ``w`` came from (its corpus, read again); a
    UserError when that corpus is not here."""
    from rnnlab.tasks.charrnn import held_out_text

    try:
        text = held_out_text(w.cfg)
    except UserError as e:
        raise UserError(f"its held-out text cannot be read ({e}); give text= or path=") from None
    return text[: 2 * viewer.DEFAULT_CHARS]


def write_page(args: dict) -> Path:
    """Write the page ``args`` ask for; return its path (UserError for a bad request)."""
    source = cli.weights_source(args)
    if "text" in args and "path" in args:
        raise UserError('give at most one of text="…" or path=<file>')
    text = args.get("text")
    if "path" in args:
        try:
            text = Path(args["path"]).expanduser().read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"path={args['path']!r} cannot be read as UTF-8: {e}") from None
    if text is not None and not 2 <= len(text) <= MAX_CHARS:
        raise UserError(f"the text has {len(text)} characters: allowed 2 to {MAX_CHARS}")
    out = Path(args["out"])
    with tempfile.TemporaryDirectory(prefix="rnnlab-inspect-") as tmp:
        w = weights_of(Path(tmp), **source)
    title = f"rnnlab inspect: {w.source}, iteration {w.iteration}"
    task = w.cfg.task.name
    if w.vocab is None and text is not None:
        raise UserError(f"{w.source} is a run of task {task}: text= and path= are for char-RNN")
    if task == "adder":
        bits = w.cfg.seq_length
        a, b = np.random.default_rng(0).integers(0, 2 ** (bits - 1), (2, 4096))
        page = viewer.adder_page(analyse_adder(w.params, rnn.spec_of(w.cfg), bits, a, b), title)
    elif w.vocab is None:  # a task that makes its own held-out sequences: the page a run logs
        page = viewer.page_for_run(TASKS[task](w.cfg, np.random.default_rng(0)), w.params, title)
    else:
        if text is None:  # the run's own held-out text, as the page it logged
            text = viewer.default_passage(held_out_passage(w))
        analyses = viewer.text_analyses(w.params, rnn.spec_of(w.cfg), w.vocab, text)
        page = viewer.text_page(analyses, title)
    files.write_text(out, page)  # the old page or the new one, never half
    return out


def main(argv: list[str] | None = None) -> None:
    cli.main(COMMAND, lambda args: f"wrote {write_page(args)}", argv)


if __name__ == "__main__":
    main()
