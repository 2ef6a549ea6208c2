"""Binary addition, bit by bit: iamtrask's sigmoid RNN demo.

Each example adds two operands drawn uniformly from [0, 2^(bits-1)), so the sum fits in ``bits``
bits. Bits are fed least significant first, two inputs per step (one bit of each operand); the
target at step t is bit t of the sum. The carry is what the hidden state must learn to hold.
``bits`` is the config's ``seq_length`` (8 by default).
"""

from __future__ import annotations

import numpy as np

from rnnlab.config import Config, ConfigError
from rnnlab.engine import rnn
from rnnlab.tasks.judging import Judged


def to_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """Integers (N,) → their bits, least significant first: (bits, N) of 0/1."""
    return (values[None, :] >> np.arange(bits)[:, None]) & 1


def from_bits(bits: np.ndarray) -> np.ndarray:
    """(bits, N) of 0/1, least significant first → integers (N,)."""
    return (bits.astype(np.int64) << np.arange(bits.shape[0])[:, None]).sum(axis=0)


class AdderTask:
    """Learn a + b from their bits; evaluated on a fixed set of operand pairs."""

    # How its runs are judged (rnnlab.tasks.judging.Judged): by default the share of evaluation sums
    # still wrong (1 − val/exact_acc); its evaluation sums start from h = 0 by definition, so
    # there is no warm variant.
    JUDGED = Judged(
        objectives={"val/exact_acc": True, "val/bit_acc": True},
        default="val/exact_acc",
        legacy="val/exact_acc",
        headline=(
            ("final_val_exact_acc", "final val/exact_acc", True),
            ("iters_to_100", "iterations to 100 % exact", False),
        ),
    )

    name = "adder"
    input_size = 2
    output_size = 1
    weights = None  # every bit weighs the same in the loss

    @staticmethod
    def check(cfg: Config) -> None:
        if cfg.seq_length > 62:
            raise ConfigError("seq_length", cfg.seq_length, "at most 62 bits for the adder")
        if cfg.task.eval_bits is not None and not 1 <= cfg.task.eval_bits <= 62:
            raise ConfigError("task.eval_bits", cfg.task.eval_bits, "null or 1..62 bits")
        if cfg.task.loss not in ("mse", "bce"):
            raise ConfigError("task.loss", cfg.task.loss, "mse or bce for the adder")

    @staticmethod
    def shape(cfg: Config) -> tuple[int, int, int]:
        """(inputs per step, outputs per step, steps per example): a bit of each, a sum bit."""
        return 2, 1, cfg.seq_length

    @staticmethod
    def fixed_data(cfg: Config) -> tuple[str, bytes, dict[str, str]]:
        """(name, bytes, generator tags) of the fixed evaluation sums: what a run records as
        its data (its training sums are drawn fresh every step)."""
        task = AdderTask(cfg, np.random.default_rng(0))
        data = np.stack([task.eval_a, task.eval_b]).astype("<i8").tobytes()
        tags = {"generator": "rnnlab.tasks.adder", "bits": str(task.bits)}
        return f"adder-{task.bits}bit-eval", data, tags

    def __init__(self, cfg: Config, rng: np.random.Generator):
        self.bits = cfg.seq_length
        self.batch_size = cfg.batch_size
        self.activation, self.head = cfg.task.activation, cfg.task.loss
        self.spec = rnn.spec_of(cfg)
        self.dtype = np.dtype(cfg.dtype)
        self.high = 2 ** (self.bits - 1)  # operands are < high, so a + b < 2^bits
        self.rng = rng
        self.eval_a, self.eval_b = self._eval_pairs(cfg.task.eval_max_pairs)
        # sums of more bits than trained on: does the learned carry circuit generalise?
        self.eval_bits = cfg.task.eval_bits or self.bits
        self.long_a, self.long_b = self._eval_pairs(cfg.task.eval_max_pairs, self.eval_bits)
        self.tokens_per_iteration = self.bits * self.batch_size

    def _eval_pairs(self, max_pairs: int, bits: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Every operand pair of ``bits``-bit sums (default: the trained length) when there are
        at most ``max_pairs``, else a fixed sample of distinct pairs. The sample depends only on
        ``bits``, so runs with different seeds are judged on the same sums."""
        bits = bits or self.bits
        high = 2 ** (bits - 1)
        if high**2 <= max_pairs:
            a, b = np.divmod(np.arange(high**2, dtype=np.int64), high)
            return a, b
        fixed = np.random.default_rng([2024, bits])  # independent of the training seed
        pairs = np.empty((0, 2), dtype=np.int64)
        while len(pairs) < max_pairs:  # draw, drop repeats, top up
            drawn = fixed.integers(0, high, (2 * max_pairs, 2), dtype=np.int64)
            pairs = np.unique(np.concatenate([pairs, drawn]), axis=0)
        pairs = fixed.permutation(pairs)[:max_pairs]
        return pairs[:, 0], pairs[:, 1]

    def constant_predictor(self) -> dict[str, float]:
        """The val/* metrics of a constant predictor — every bit its most frequent value over
        the evaluation sums — what a run that learned nothing reaches."""
        bits = to_bits(self.eval_a + self.eval_b, self.bits)  # (bits, N)
        right = bits == (bits.mean(axis=1, keepdims=True) > 0.5)
        return {"val/bit_acc": float(right.mean()), "val/exact_acc": float(right.all(0).mean())}

    def initial_loss(self) -> float:
        """The loss of predicting ½ for every bit: where the smooth loss starts."""
        return self.bits * (0.125 if self.head == "mse" else float(np.log(2.0)))

    def encode(
        self, a: np.ndarray, b: np.ndarray, bits: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Operands (N,) → inputs (bits, N, 2) and targets (bits, N, 1)."""
        bits = bits or self.bits
        xs = np.stack([to_bits(a, bits), to_bits(b, bits)], axis=-1).astype(self.dtype)
        ys = to_bits(a + b, bits)[..., None].astype(self.dtype)
        return xs, ys

    def next_batch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A fresh batch of sums; every stream starts from a zero state."""
        a, b = self.rng.integers(0, self.high, (2, self.batch_size))
        xs, ys = self.encode(a, b)
        return xs, ys, np.ones(self.batch_size, dtype=bool)

    def predict(
        self,
        params: rnn.Params,
        a: np.ndarray,
        b: np.ndarray,
        bits: int | None = None,
        observe=None,
    ) -> np.ndarray:
        """Predicted ``bits``-bit sums (N,) for operand arrays (N,). ``observe("", fwd)``, when
        given, sees each forward record (the diagnostics count saturation on it)."""
        out = []
        for start in range(0, a.size, 16384):  # chunks keep (bits, N, H) small
            xs, _ = self.encode(a[start : start + 16384], b[start : start + 16384], bits)
            h0 = rnn.zero_state(self.spec, xs.shape[1], self.dtype)
            fwd = rnn.forward(params, xs, h0, self.spec)
            if observe is not None:
                observe("", fwd)
            logits = fwd.logits[..., 0]
            out.append(from_bits(logits > 0.0))  # sigmoid(z) > ½  ⇔  z > 0
        return np.concatenate(out)

    def evaluate(self, params: rnn.Params, observe=None) -> dict[str, float]:
        """val/bit_acc: share of sum bits right; val/exact_acc: share of sums entirely right; with
        ``task.eval_bits`` > seq_length, the same for sums of that many bits (``…_16bit``).
        ``observe``: see ``predict`` (the trained-length sums only)."""
        metrics = self.accuracy(params, self.bits, self.eval_a, self.eval_b, observe)
        if self.eval_bits != self.bits:  # val/exact_acc_16bit, ...: longer sums than trained on
            longer = self.accuracy(params, self.eval_bits, self.long_a, self.long_b)
            metrics |= {f"{k}_{self.eval_bits}bit": v for k, v in longer.items()}
        return metrics

    def accuracy(
        self, params: rnn.Params, bits: int, a: np.ndarray, b: np.ndarray, observe=None
    ) -> dict[str, float]:
        """val/bit_acc and val/exact_acc of ``bits``-bit sums a + b."""
        pred = self.predict(params, a, b, bits, observe)
        true = a + b
        bit_ok = to_bits(pred, bits) == to_bits(true, bits)
        return {"val/bit_acc": float(bit_ok.mean()), "val/exact_acc": float((pred == true).mean())}

    def sample(self, params: rnn.Params, rng: np.random.Generator, count: int = 10) -> str:
        """Up to ``count`` wrong and ``count`` right sums from the evaluation set, as text."""
        pred = self.predict(params, self.eval_a, self.eval_b)
        true = self.eval_a + self.eval_b
        width = len(str(2**self.bits))
        lines = []
        for label, mask in (("wrong", pred != true), ("right", pred == true)):
            idx = np.flatnonzero(mask)
            lines.append(f"# {label}: {idx.size} of {pred.size}")
            for i in rng.permutation(idx)[:count]:
                a, b, p, t = (int(v) for v in (self.eval_a[i], self.eval_b[i], pred[i], true[i]))
                lines.append(
                    f"{a:>{width}} + {b:>{width}} = {t:>{width}}  predicted {p:>{width}}"
                    f"   {a:0{self.bits}b} + {b:0{self.bits}b} -> {p:0{self.bits}b}"
                )
        return "\n".join(lines) + "\n"

    # The adder keeps no position in its data: each batch is freshly drawn from ``rng``.
    def data_state(self) -> dict[str, np.ndarray]:
        return {}

    def load_data_state(self, state: dict[str, np.ndarray]) -> None:
        pass
