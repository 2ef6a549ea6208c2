"""The adding problem, in Le, Jaitly & Hinton's (2015) form of Hochreiter & Schmidhuber's (1997).

Each sequence has ``task.length`` = T steps of two inputs: a value drawn from U(0, 1) and a
marker that is 1 at exactly two steps, one in each half (the first in [0, T//2), the second in
[T//2, T)) and 0 elsewhere. The target is the sum of the two marked values, read from a linear
output at the last step (squared error; the other steps are weighted 0). The network must keep
the first marked value for up to T steps. A sequence counts as solved when the prediction is
within 0.04 of its target (Hochreiter & Schmidhuber's criterion); predicting the mean, 1, for
every sequence scores the variance of the sum, 1/6: the baseline a model without memory reaches.
"""

from __future__ import annotations

import numpy as np

from rnnlab.config import Config, ConfigError
from rnnlab.engine import rnn
from rnnlab.tasks.judging import Judged
from rnnlab.tasks.sequences import SequenceTask, last_step

TOLERANCE = 0.04  # |prediction - target| below this: the sequence is processed correctly
BASELINE_MSE = 1.0 / 6.0  # Var(X1 + X2) for X ~ U(0, 1): the best constant prediction's MSE
EVAL_SEED = 1997  # the held-out sequences' generator: np.random.default_rng([EVAL_SEED, T])


def adding_sequences(
    rng: np.random.Generator, n: int, T: int, dtype=np.float64
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` sequences of T ≥ 2 steps, drawn at once: inputs (T, n, 2) (value, marker), the
    marked steps (2, n) (one in each half) and the targets (n,), the sum of the marked values."""
    half = T // 2
    values = rng.random((T, n))
    first = rng.integers(0, half, n)
    second = rng.integers(half, T, n)
    cols = np.arange(n)
    xs = np.zeros((T, n, 2), dtype=dtype)
    xs[..., 0] = values
    xs[first, cols, 1] = 1.0
    xs[second, cols, 1] = 1.0
    target = xs[first, cols, 0] + xs[second, cols, 0]  # in the inputs' dtype: what the net sees
    return xs, np.stack([first, second]), target


class AddingTask(SequenceTask):
    """Sum the two marked values of a sequence of T; evaluated on a fixed held-out set."""

    # How its runs are judged (rnnlab.tasks.judging.Judged): by default the held-out MSE; solved
    # once 95% of the held-out sequences are within 0.04 of their target.
    JUDGED = Judged(
        objectives={"val/mse": False, "val/solved_frac": True},
        default="val/mse",
        legacy="val/mse",
        headline=(
            ("final_val_mse", "final val/mse", False),
            ("final_val_solved_frac", "final val/solved_frac", True),
            ("iters_to_solve", "iterations to solve", False),
        ),
        solved=("val/solved_frac", 0.95),
    )

    name = "adding"
    input_size = 2
    output_size = 1
    head = "squared"

    @staticmethod
    def check(cfg: Config) -> None:
        if cfg.task.loss != "squared":
            raise ConfigError("task.loss", cfg.task.loss, "squared (a linear output) for adding")
        if cfg.task.length < 2:
            raise ConfigError("task.length", cfg.task.length, "at least 2 (a marker per half)")

    @staticmethod
    def shape(cfg: Config) -> tuple[int, int, int]:
        """(inputs per step, outputs per step, steps per sequence)."""
        return 2, 1, cfg.task.length

    @staticmethod
    def lag(cfg: Config) -> int:
        """How far back, in steps from the last, an input can decide the target: T − 1 (the
        first marker may sit at step 0)."""
        return cfg.task.length - 1

    @staticmethod
    def fixed_data(cfg: Config) -> tuple[str, bytes, dict[str, str]]:
        """(name, bytes, generator tags) of the held-out set: what a run records as its data."""
        T = cfg.task.length
        xs, _, _ = adding_sequences(np.random.default_rng([EVAL_SEED, T]), cfg.task.eval_size, T)
        tags = {"generator": "rnnlab.tasks.adding", "length": str(T)}
        return f"adding-T{T}-eval{cfg.task.eval_size}", xs.astype("<f8").tobytes(), tags

    def __init__(self, cfg: Config, rng: np.random.Generator):
        super().__init__(cfg, rng, cfg.task.length)
        T = self.steps
        self.weights = last_step(T)
        fixed = np.random.default_rng([EVAL_SEED, T])  # independent of the training seed
        self.eval_xs, self.eval_marks, self.eval_target = adding_sequences(
            fixed, cfg.task.eval_size, T, self.dtype
        )
        N = self.eval_target.size
        self.eval_ys = np.broadcast_to(self.eval_target[None, :, None], (T, N, 1))

    def initial_loss(self) -> float:
        """E[(X1 + X2)²] = 1/6 + 1: the loss of the output 0 an untrained net starts near."""
        return BASELINE_MSE + 1.0

    def next_batch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(xs (T, B, 2), targets (T, B, 1) — the sum at every step, weighted at the last —,
        reset (B,) all true: every sequence starts from a zero state)."""
        xs, _, target = adding_sequences(self.rng, self.batch_size, self.steps, self.dtype)
        ys = np.broadcast_to(target[None, :, None], (self.steps, self.batch_size, 1))
        return xs, ys, np.ones(self.batch_size, dtype=bool)

    def predict(self, params: rnn.Params, xs: np.ndarray, observe=None) -> np.ndarray:
        """The predicted sums (N,) of inputs (T, N, 2): the output at the last step."""
        return self.logits(params, xs, observe)[-1, :, 0]

    def evaluate(self, params: rnn.Params, observe=None) -> dict[str, float]:
        """val/mse over the held-out sequences, val/solved_frac (the share within 0.04 of the
        target) and val/mse_baseline (1/6, the best constant prediction, for the charts)."""
        err = self.predict(params, self.eval_xs, observe) - self.eval_target
        return {
            "val/mse": float(np.mean(err * err)),
            "val/solved_frac": float(np.mean(np.abs(err) < TOLERANCE)),
            "val/mse_baseline": BASELINE_MSE,
        }

    def constant_predictor(self) -> dict[str, float]:
        """val/mse of the best constant prediction (1/6): what a run that learned nothing
        reaches (``rnnlab.training.best.baseline``)."""
        return {"val/mse": BASELINE_MSE}

    def sample(self, params: rnn.Params, rng: np.random.Generator, count: int = 5) -> str:
        """Up to ``count`` wrong and ``count`` right held-out sums, as text."""
        pred = self.predict(params, self.eval_xs)
        err = pred - self.eval_target
        values = self.eval_xs[..., 0]
        lines = []
        right = np.abs(err) < TOLERANCE
        for label, mask in (("wrong", ~right), ("right", right)):
            idx = np.flatnonzero(mask)
            lines.append(f"# {label} (|error| {'≥' if label == 'wrong' else '<'} {TOLERANCE}): "
                         f"{idx.size} of {pred.size}")  # fmt: skip
            for i in rng.permutation(idx)[:count]:
                a, b = (int(t) for t in self.eval_marks[:, i])
                lines.append(
                    f"x[{a}] + x[{b}] = {values[a, i]:.3f} + {values[b, i]:.3f} = "
                    f"{self.eval_target[i]:.3f}  predicted {pred[i]:.3f} (error {err[i]:+.3f})"
                )
        return "\n".join(lines) + "\n"

    def unit_features(self, n: int) -> tuple[np.ndarray, dict[str, np.ndarray], list[str]]:
        """For the viewer: n held-out inputs (T, n, 2), what a unit might track at each step
        {name: (T, n)} and each sequence drawn one character per step (▲ at a marker)."""
        xs = self.eval_xs[:, :n]
        markers = xs[..., 1].astype(np.float64)
        seen = np.cumsum(markers, axis=0)
        features = {
            "a marker has been seen": (seen >= 1).astype(np.float64),
            "markers seen (0, 1, 2)": seen,
            "running sum of the marked values": np.cumsum(markers * xs[..., 0], axis=0),
            "the value read now": xs[..., 0].astype(np.float64),
        }
        text = ["".join("▲" if m else "·" for m in markers[:, i]) for i in range(xs.shape[1])]
        return xs, features, text
