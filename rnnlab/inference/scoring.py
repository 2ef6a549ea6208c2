"""How well trained weights predict a text, in nats and bits per character.

The text is read as one stream, exactly as ``val/loss`` reads the held-out text: every character
but the first is predicted from all before it, from h = 0; ``warm=True`` first reads the run's
burn-in from the state training carried when the checkpoint was written (both stored in it), as
``val/loss_warm`` does. So a run's held-out text scores its ``val/loss`` (``val/loss_warm``) to
rounding.

Not here: reading a text as one stream (``rnnlab.tasks.charrnn``), loading weights
(``rnnlab.inference.weights``).
"""

from __future__ import annotations

import math

import numpy as np

from rnnlab.engine import rnn
from rnnlab.errors import UserError
from rnnlab.inference.weights import Weights
from rnnlab.tasks import charrnn


def score_text(w: Weights, text: str, warm: bool = False, unknown: str = "error") -> dict:
    """{nats_per_char, bits_per_char, chars (predicted), unknown (dropped)} for ``text``."""
    if w.vocab is None:
        raise UserError(f"{w.source} is a model of task {w.cfg.task.name}, not a char-RNN")
    missing = [c for c in text if c not in w.vocab.index]
    if missing and unknown == "error":
        shown = ", ".join(repr(c) for c in sorted(set(missing))[:10])
        raise UserError(
            f"the text has {len(missing)} characters not in the vocabulary ({shown}); "
            "pass unknown=skip to score the rest"
        )
    ids = np.array([w.vocab.index[c] for c in text if c in w.vocab.index], dtype=np.intp)
    if ids.size < 2:
        raise UserError("the text needs at least 2 known characters (the first is not scored)")
    spec = rnn.spec_of(w.cfg)
    h = rnn.zero_state(spec, 1, w.params["Why"].dtype)
    if warm:
        if w.burn_in is None:
            raise UserError(f"{w.source} holds no burn-in text (trained before warm scoring)")
        if w.warm_start is not None:  # the state training carried when it was saved
            h = w.warm_start.astype(h.dtype).reshape(h.shape)  # (1, H) before cells
        h = charrnn.read(w.params, spec, w.burn_in, h)
    total, count = charrnn.stream_loss(w.params, spec, ids, h)
    nats = total / count
    return {
        "nats_per_char": nats,
        "bits_per_char": nats / math.log(2.0),
        "chars": count,
        "unknown": len(missing),
    }
