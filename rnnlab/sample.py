"""``python -m rnnlab.sample``: text from a char-RNN run, a sum from an adder run, or what a copy
run recalls of the symbols it is given.

Only the checkpoint is needed (its weights, vocabulary and config): not the corpus, not the
machine that trained it. The same ``seed`` gives the same text. Mistakes cost one line on stderr
and exit code 2 (``rnnlab.cli``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from rnnlab import cli
from rnnlab.engine import decode
from rnnlab.errors import UserError
from rnnlab.inference.generate import (
    MIN_TEMPERATURE,
    add_bit_by_bit,
    check_request,
    copy_recall,
    decoding,
    default_prime,
    generate_text,
)
from rnnlab.tracking.run_weights import weights_of

COMMAND = cli.Command(
    name="rnnlab.sample",
    summary="text from a char-RNN run, a sum from an adder run, a copy run's recall",
    keys=cli.WEIGHTS_KEYS
    + (
        cli.Key("prime", "text fed in first (default: the run's prime, else a space)"),
        cli.Key("length", "characters to draw (default: the run's sample_length)", int, minimum=1),
        cli.Key(
            "temperature",
            "logits / T before the softmax; < 1 sharper (default: the run's)",
            float,
            minimum=MIN_TEMPERATURE,
        ),
        cli.Key("seed", "seeds the draws", int, 0, minimum=0),
        cli.Key("top_k", "draw among the k likeliest (0 = all)", int, minimum=0),
        cli.Key(
            "top_p",
            "nucleus: the smallest set with this much mass, in (0, 1]",
            float,
            above=0.0,
            maximum=1.0,
        ),
        cli.Key("greedy", "always the likeliest character", bool),
        cli.Key("beam", "beam search of this width (0 = sampling)", int, minimum=0),
        cli.Key("a", "adder: first operand", int),
        cli.Key("b", "adder: second operand", int),
        cli.Key("symbols", "copy: the symbols to remember, e.g. 3141592653"),
    ),
    examples=(
        'python -m rnnlab.sample run_id=<id> prime="One morning" temperature=0.8 length=500',
        "python -m rnnlab.sample checkpoint=outputs/.../iter_0100000.npz length=100",
        "python -m rnnlab.sample run_id=<id> a=77 b=41          # adder: the sum, bit by bit",
        "python -m rnnlab.sample run_id=<id> top_k=5 top_p=0.9 | greedy=true | beam=8",
        "python -m rnnlab.sample run_id=<id> symbols=3141592653   # copy: what it recalls",
    ),
    details="run_id reads the run's best checkpoint (model_from=best, the run's own setting by "
    "default) or its newest one (model_from=last). Decoding options given here replace the "
    "run's own; the others keep the run's training-time sampling.",
)


def run(args: dict) -> str:
    """What the command prints (UserError for a bad request)."""
    given = {k: args[k] for k in ("top_k", "top_p", "greedy", "beam") if k in args}
    neutral = {"top_k": 0, "top_p": 1.0, "greedy": False, "beam": 0}
    if (bad := decode.problem(**(neutral | given))) is not None:
        raise UserError(f"{bad[0]}={bad[1]} is not allowed: {bad[2]}")
    source = cli.weights_source(args)
    check_request(args.get("length"), args.get("temperature"), args["seed"])  # before a download
    with tempfile.TemporaryDirectory(prefix="rnnlab-sample-") as tmp:
        w = weights_of(Path(tmp), **source)
    a, b = args.get("a"), args.get("b")
    if w.cfg.task.name == "copy" or "symbols" in args:
        if "symbols" not in args:
            raise UserError(f"{w.source} is a copy run: give symbols=<the symbols to remember>")
        return "\n".join(copy_recall(w, args["symbols"]))
    if w.cfg.task.name in ("adding", "digits"):
        raise UserError(f"{w.source} is a run of task {w.cfg.task.name}: nothing to sample; "
                        "its held-out predictions are the run's samples/ artifacts")  # fmt: skip
    if w.cfg.task.name == "adder" or a is not None or b is not None:
        if a is None or b is None:
            raise UserError(f"{w.source} is an adder: give both a=<int> and b=<int>")
        return "\n".join(add_bit_by_bit(w, a, b)[1])
    return generate_text(
        w,
        args["prime"] if "prime" in args else default_prime(w),
        args.get("length", w.cfg.sample_length),
        args.get("temperature", w.cfg.temperature),
        np.random.default_rng(args["seed"]),
        **decoding(w.cfg, given),
    )


def main(argv: list[str] | None = None) -> None:
    cli.main(COMMAND, run, argv)


if __name__ == "__main__":
    main()
