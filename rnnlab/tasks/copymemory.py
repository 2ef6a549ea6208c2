"""The copy memory task of Arjovsky, Shah & Bengio (2016).

A sequence of T + 2S steps (S = ``task.copy_symbols``, 10; T = ``task.length``): S symbols drawn
uniformly from an alphabet of A (``task.alphabet``, 8), then T − 1 blanks, a delimiter, and S more
blanks during which the network must output the S symbols in order; everywhere else the target
is the blank. Inputs are symbol ids (0 blank, 1…A the symbols, A + 1 the delimiter), outputs
A + 1 classes (0 blank, 1…A). The loss is the cross-entropy of every step, weighted 1/(T + 2S) so
that it reads in nats per step, as the paper reports it. A network without memory does best by
predicting blanks and then guessing uniformly: S·log A / (T + 2S), the baseline.
"""

from __future__ import annotations

import math

import numpy as np

from rnnlab.config import Config, ConfigError
from rnnlab.engine import rnn
from rnnlab.errors import UserError
from rnnlab.tasks.judging import Judged
from rnnlab.tasks.sequences import SequenceTask

EVAL_SEED = 2016  # the held-out sequences' generator: np.random.default_rng([EVAL_SEED, T, S, A])
SHOWN = "123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"  # symbol k as SHOWN[k-1]


def copy_sequences(
    rng: np.random.Generator, n: int, T: int, S: int, A: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sequences drawn at once: inputs (T + 2S, n) and targets (T + 2S, n), symbol ids."""
    symbols = rng.integers(1, A + 1, (S, n))
    xs = np.zeros((T + 2 * S, n), dtype=np.intp)
    xs[:S] = symbols
    xs[S + T - 1] = A + 1  # the delimiter: recall from the next step on
    ys = np.zeros_like(xs)
    ys[S + T :] = symbols
    return xs, ys


def baseline(T: int, S: int = 10, A: int = 8) -> float:
    """The memoryless strategy's loss in nats per step: S·log A / (T + 2S)."""
    return S * math.log(A) / (T + 2 * S)


def show(ids) -> str:
    """Symbol ids 1…A as characters (1…9, then letters)."""
    return "".join(SHOWN[i - 1] if 1 <= i <= len(SHOWN) else "?" for i in ids)


class CopyTask(SequenceTask):
    """Remember S symbols over T blanks and recall them after a delimiter."""

    # How its runs are judged (rnnlab.tasks.judging.Judged): by default the held-out loss in nats
    # per step; solved once 95% of the recalled symbols are right.
    JUDGED = Judged(
        objectives={"val/loss": False, "val/copy_acc": True},
        default="val/loss",
        legacy="val/loss",
        headline=(
            ("final_val_loss", "final val/loss (nats/step)", False),
            ("final_val_copy_acc", "final val/copy_acc", True),
            ("iters_to_solve", "iterations to solve", False),
        ),
        solved=("val/copy_acc", 0.95),
    )

    name = "copy"
    head = "xent"

    @staticmethod
    def check(cfg: Config) -> None:
        if cfg.task.loss != "xent":
            raise ConfigError("task.loss", cfg.task.loss, "xent for copy")

    @staticmethod
    def shape(cfg: Config) -> tuple[int, int, int]:
        """(inputs per step, outputs per step, steps per sequence)."""
        t = cfg.task
        return t.alphabet + 2, t.alphabet + 1, t.length + 2 * t.copy_symbols

    @staticmethod
    def lag(cfg: Config) -> int:
        """How far back, in steps from the last, an input decides a target: T + S (the last
        symbol, at step S − 1, is recalled at the last step, T + 2S − 1)."""
        return cfg.task.length + cfg.task.copy_symbols

    @staticmethod
    def fixed_data(cfg: Config) -> tuple[str, bytes, dict[str, str]]:
        """(name, bytes, generator tags) of the held-out set: what a run records as its data."""
        t = cfg.task
        rng = np.random.default_rng([EVAL_SEED, t.length, t.copy_symbols, t.alphabet])
        xs, _ = copy_sequences(rng, t.eval_size, t.length, t.copy_symbols, t.alphabet)
        tags = {"generator": "rnnlab.tasks.copymemory", "length": str(t.length),
                "copy_symbols": str(t.copy_symbols), "alphabet": str(t.alphabet)}  # fmt: skip
        name = f"copy-T{t.length}-S{t.copy_symbols}-A{t.alphabet}-eval{t.eval_size}"
        return name, xs.astype("<i8").tobytes(), tags

    def __init__(self, cfg: Config, rng: np.random.Generator):
        t = cfg.task
        self.delay, self.symbols, self.alphabet = t.length, t.copy_symbols, t.alphabet
        super().__init__(cfg, rng, t.length + 2 * t.copy_symbols)
        self.input_size, self.output_size = t.alphabet + 2, t.alphabet + 1
        self.weights = np.full((self.steps, 1), 1.0 / self.steps)  # the sum is nats per step
        self.recall = slice(self.steps - self.symbols, self.steps)  # the steps judged by copy_acc
        fixed = np.random.default_rng([EVAL_SEED, t.length, t.copy_symbols, t.alphabet])
        self.eval_xs, self.eval_ys = copy_sequences(fixed, t.eval_size, *self._sizes())
        self.baseline = baseline(*self._sizes())

    def _sizes(self) -> tuple[int, int, int]:
        return self.delay, self.symbols, self.alphabet

    def constant_predictor(self) -> dict[str, float]:
        """val/loss of the memoryless strategy: what a run that learned nothing reaches
        (``rnnlab.training.best.baseline``)."""
        return {"val/loss": self.baseline}

    def initial_loss(self) -> float:
        """log(A + 1) nats per step: a uniform guess over the outputs, where the loss starts."""
        return math.log(self.alphabet + 1)

    def next_batch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(xs (T + 2S, B), targets (T + 2S, B), reset (B,) all true)."""
        xs, ys = copy_sequences(self.rng, self.batch_size, *self._sizes())
        return xs, ys, np.ones(self.batch_size, dtype=bool)

    def evaluate(self, params: rnn.Params, observe=None) -> dict[str, float]:
        """val/loss (nats per step over the held-out sequences), val/copy_acc (share of the
        recalled symbols right) and val/loss_baseline (the memoryless strategy's loss)."""
        logits = self.logits(params, self.eval_xs, observe)
        recalled = logits[self.recall].argmax(axis=-1)  # (S, N)
        return {
            "val/loss": self.weighted_loss(logits, self.eval_ys),
            "val/copy_acc": float(np.mean(recalled == self.eval_ys[self.recall])),
            "val/loss_baseline": self.baseline,
        }

    def recall_symbols(self, params: rnn.Params, symbols: np.ndarray) -> np.ndarray:
        """What the network outputs after the delimiter (S, n) for symbols (S, n) to remember:
        the likeliest class at each recall step (0 is a blank)."""
        n = symbols.shape[1]
        xs = np.zeros((self.steps, n), dtype=np.intp)
        xs[: self.symbols] = symbols
        xs[self.symbols + self.delay - 1] = self.alphabet + 1
        return self.logits(params, xs)[self.recall].argmax(axis=-1)

    def parse(self, text: str) -> np.ndarray:
        """``"31415926…"`` (or ``"3,1,4,…"``) → symbol ids (S, 1); UserError for anything else."""
        parts = text.replace(",", " ").split()
        chars = parts if len(parts) > 1 else list(text.strip())
        index = {c: k + 1 for k, c in enumerate(SHOWN[: self.alphabet])}
        ids = [index.get(c, int(c) if c.isdigit() and 1 <= int(c) <= self.alphabet else 0)
               for c in chars]  # fmt: skip
        if len(ids) != self.symbols or 0 in ids:
            raise UserError(
                f"symbols={text!r} is not allowed: {self.symbols} symbols from "
                f"{show(range(1, self.alphabet + 1))} (this run's alphabet), e.g. "
                f"{show((np.arange(self.symbols) % self.alphabet) + 1)}"
            )
        return np.array(ids, dtype=np.intp)[:, None]

    def sample(self, params: rnn.Params, rng: np.random.Generator, count: int = 5) -> str:
        """``count`` held-out sequences: the symbols to remember and what the network recalled."""
        pick = np.sort(rng.permutation(self.eval_xs.shape[1])[:count])
        want = self.eval_xs[: self.symbols, pick]
        got = self.recall_symbols(params, want)
        lines = [f"# {self.symbols} symbols, {self.delay} blanks, then recall (· = a blank)"]
        for j in range(pick.size):
            right = int((got[:, j] == want[:, j]).sum())
            recalled = "".join(show([g]) if g else "·" for g in got[:, j])
            lines.append(f"{show(want[:, j])} -> {recalled}  ({right}/{self.symbols})")
        return "\n".join(lines) + "\n"

    def unit_features(self, n: int) -> tuple[np.ndarray, dict[str, np.ndarray], list[str]]:
        """For the viewer: n held-out inputs (T + 2S, n), what a unit might track at each step
        {name: (T + 2S, n)} and each sequence one character per step (· blank, | delimiter)."""
        xs = self.eval_xs[:, :n]
        t = np.broadcast_to(np.arange(self.steps, dtype=np.float64)[:, None], xs.shape)
        S, T = self.symbols, self.delay
        features = {
            "reading the symbols": (t < S).astype(np.float64),
            "waiting (between the symbols and the delimiter)": ((t >= S) & (t < S + T)) * 1.0,
            "recalling (after the delimiter)": (t >= S + T).astype(np.float64),
            "steps since the start": t.copy(),
        }
        names = {0: "·", self.alphabet + 1: "|"}
        text = ["".join(names.get(int(s)) or show([int(s)]) for s in xs[:, i]) for i in range(n)]
        return xs, features, text
