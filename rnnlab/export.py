"""``python -m rnnlab.export``: a run's weights as a PyTorch state dict in an ``.npz``.

The file holds the state dict of ``torch.nn.ModuleDict({"rnn": RNN|GRU|LSTM(...), "fc":
Linear(H, V)})`` fed one-hot inputs, or for a cell PyTorch has no module for its parameters and
equations (docs/cells.md); see ``rnnlab.inference.export`` for the layout. Nothing here
needs PyTorch. Also ``python -m rnnlab.model export ...``. Mistakes cost one line on stderr and
exit code 2.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from rnnlab import cli
from rnnlab.engine import rnn
from rnnlab.errors import UserError
from rnnlab.inference.export import describe, export
from rnnlab.tracking.run_weights import weights_of

COMMAND = cli.Command(
    name="rnnlab.export",
    summary="a run's weights as a PyTorch state dict, or a cell's parameters and equations (.npz)",
    keys=cli.WEIGHTS_KEYS
    + (cli.Key("out", "the file to write, ending in .npz", default=cli.REQUIRED),),
    examples=(
        "python -m rnnlab.export run_id=<id> out=kafka_lstm.npz",
        "python -m rnnlab.export checkpoint=outputs/.../iter_0100000.npz out=model.npz",
    ),
)


def run(args: dict) -> str:
    """Export the weights ``args`` name; the line to print (UserError for a bad request)."""
    source = cli.weights_source(args)
    if not args["out"].endswith(".npz"):
        raise UserError(f"out={args['out']!r} is not allowed: a file name ending in .npz")
    with tempfile.TemporaryDirectory(prefix="rnnlab-export-") as tmp:
        w = weights_of(Path(tmp), **source)
        path = export(w, Path(args["out"]))
    return f"wrote {path}: {describe(rnn.spec_of(w.cfg))}, from {w.source}"


def main(argv: list[str] | None = None) -> None:
    cli.main(COMMAND, run, argv)


if __name__ == "__main__":
    main()
