"""The weights of a trained network, read from a checkpoint file: what inference starts from.

A checkpoint (or a model's weights-only file) carries everything needed to use its network: the
parameters, the config that made them (cell, depth, task), the vocabulary of a char-RNN and the
burn-in text ``val/loss_warm`` reads. Nothing else is needed: not the corpus, not the machine
that trained it.

Not here: finding a recorded run's checkpoint in a store (``rnnlab.tracking.run_weights``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnlab.config import Config
from rnnlab.engine import rnn
from rnnlab.errors import UserError
from rnnlab.tasks.charrnn import Vocabulary
from rnnlab.training import checkpoint


@dataclass
class Weights:
    """What sampling needs from a checkpoint: the parameters, the config, the vocabulary."""

    params: rnn.Params
    cfg: Config
    vocab: Vocabulary | None  # None for the adder
    iteration: int
    source: str
    burn_in: np.ndarray | None = None  # the run's warm-up text for val/loss_warm (ids)
    warm_start: np.ndarray | None = None  # the state that burn-in starts from (L, S, 1, H)


def load_weights(path: Path, source: str | None = None) -> Weights:
    """Weights from a checkpoint (or the model's weights file): UserError for anything else."""
    try:
        ck = checkpoint.Checkpoint.read(Path(path))
        if "config" not in ck.meta:
            raise UserError(f"{path} is a checkpoint without weights or config")
        cfg = ck.config()
        names = rnn.param_shapes(1, cfg.hidden_size, 1, rnn.spec_of(cfg))  # which cell, how deep
        if any(k not in ck.params for k in names):
            raise UserError(f"{path} is a checkpoint without weights or config")
    except checkpoint.CheckpointError as e:
        raise UserError(str(e)) from None
    vocab = None
    if cfg.task.name == "charrnn":
        if ck.vocab is None:
            raise UserError(f"{path} is a char-RNN checkpoint without its vocabulary")
        vocab = Vocabulary(ck.vocab)
    params = {k: ck.params[k] for k in names}
    burn_in, start = ck.extra.get("eval/burn_in"), ck.extra.get("eval/warm_start")
    return Weights(params, cfg, vocab, ck.iteration, source or str(path), burn_in, start)
