"""What the long-memory tasks (adding, copy, digits) share: fixed held-out sequences read from
h = 0, training batches drawn fresh from the task's random stream, a loss weighted per step.

Each sequence is read from the zero state, so nothing carries across batches: the data state a
checkpoint keeps is the task's random stream itself (the loop checkpoints it), and a resumed run
draws the same batches bit for bit. The held-out sequences come from a generator of their own,
seeded by the task's shape only, so runs with different seeds are judged on the same data.

Not here: the tasks' own layouts and metrics (``rnnlab.tasks.adding``, ``copymemory``,
``digits``), the heads and their weights (``rnnlab.engine.rnn``).
"""

from __future__ import annotations

import numpy as np

from rnnlab.config import Config
from rnnlab.engine import rnn
from rnnlab.tasks.judging import Judged

# States (steps × sequences × units) per forward call when reading the held-out sequences: bounds
# the gated cells' caches (an LSTM keeps ~6 numbers per unit and step) to ~100 MB
EVAL_ELEMENTS = 2_000_000


def last_step(T: int) -> np.ndarray:
    """Per-step loss weights (T, 1) that keep only the last step: a sequence judged at its end."""
    w = np.zeros((T, 1))
    w[-1] = 1.0
    return w


class SequenceTask:
    """The shared part of a task whose examples are whole sequences of ``steps`` steps."""

    name: str
    JUDGED: Judged
    input_size: int
    output_size: int
    head: str  # a key of rnnlab.engine.rnn.HEADS
    steps: int  # T: every sequence's length
    weights: np.ndarray  # (T, 1) each step's weight in the loss, shared by every stream
    eval_xs: np.ndarray  # (T, N) symbols or (T, N, D) floats: the held-out inputs
    eval_ys: np.ndarray  # (T, N) or (T, N, O): their targets

    def __init__(self, cfg: Config, rng: np.random.Generator, steps: int):
        self.spec = rnn.spec_of(cfg)
        self.dtype = np.dtype(cfg.dtype)
        self.batch_size = cfg.batch_size
        self.activation = cfg.task.activation
        self.rng = rng  # the run's data stream: every training batch is drawn from it
        self.steps = steps
        self.tokens_per_iteration = steps * cfg.batch_size  # steps/s stand in for chars/s

    def logits(self, params: rnn.Params, xs: np.ndarray, observe=None) -> np.ndarray:
        """Logits (T, N, O) as float64 for inputs ``xs`` (T, N[, D]), every sequence read from
        h = 0, in chunks of sequences. ``observe("", fwd)``, when given, sees each forward
        record (the diagnostics count saturation on the evaluation's own pass)."""
        T, N = xs.shape[:2]
        dtype = params["Why"].dtype
        chunk = max(1, EVAL_ELEMENTS // (T * self.spec.hidden_size * self.spec.layers))
        out = np.empty((T, N, params["Why"].shape[0]))
        for start in range(0, N, chunk):
            x = xs[:, start : start + chunk]
            fwd = rnn.forward(params, x, rnn.zero_state(self.spec, x.shape[1], dtype), self.spec)
            if observe is not None:
                observe("", fwd)
            out[:, start : start + chunk] = fwd.logits
        return out

    def weighted_loss(self, logits: np.ndarray, ys: np.ndarray) -> float:
        """The training loss on held-out sequences: the head's weighted loss, mean over them."""
        loss, _ = rnn.HEADS[self.head](logits.copy(), ys, self.weights)
        return float(loss.mean())

    # Each batch is drawn fresh from ``rng``, whose state the checkpoint holds: no position to keep.
    def data_state(self) -> dict[str, np.ndarray]:
        return {}

    def load_data_state(self, state: dict[str, np.ndarray]) -> None:
        pass
