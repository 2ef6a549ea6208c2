"""Next-character prediction on a text: Karpathy's min-char-rnn.

The vocabulary is the sorted set of characters, so symbol ids do not depend on the hash seed.
The last ``data.val_fraction`` of the text is held out. Training reads B streams, each a
contiguous slice of the training text walked ``seq_length`` characters at a time with its hidden
state carried across windows (truncated BPTT); a stream that reaches the end of its slice starts
over from its beginning with a zero state. With B = 1 this is exactly the seed's loop.
"""

from __future__ import annotations

import math

import numpy as np

from rnnlab import corpus, rnn
from rnnlab.config import Config, ConfigError


class PrimeError(ValueError):
    """A priming string uses characters the model never saw. The message is one line."""


class Vocabulary:
    """Characters ↔ symbol ids, sorted for reproducibility."""

    def __init__(self, chars: str):
        self.chars = "".join(sorted(set(chars)))
        self.index = {c: i for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str, what: str = "text") -> np.ndarray:
        missing = sorted({c for c in text if c not in self.index})
        if missing:
            shown = ", ".join(repr(c) for c in missing[:10])
            raise PrimeError(f"{what} has characters not in the vocabulary: {shown}")
        return np.array([self.index[c] for c in text], dtype=np.intp)

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids)

    def to_array(self) -> np.ndarray:
        """The characters as Unicode code points, (V,) int32, for a checkpoint. Not a numpy str
        array: those drop trailing NULs, so a corpus with NUL would lose a symbol."""
        return np.array([ord(c) for c in self.chars], dtype=np.int32)

    @classmethod
    def from_array(cls, array: np.ndarray) -> Vocabulary:
        """The vocabulary ``to_array`` wrote, exactly; also reads older checkpoints' str arrays
        (which had already lost any NUL). ValueError, one line, for anything else."""
        array = np.asarray(array)
        if array.ndim != 1:
            raise ValueError(f"the vocabulary has shape {array.shape}, expected one dimension")
        if array.dtype.kind in "iu":
            codes = array.tolist()
            if any(not 0 <= c <= 0x10FFFF for c in codes):
                raise ValueError("the vocabulary holds numbers that are not Unicode code points")
            chars = "".join(map(chr, codes))
        elif array.dtype.kind == "U":
            chars = "".join(str(c) for c in array)
        else:
            raise ValueError(f"the vocabulary has dtype {array.dtype}, expected code points")
        vocab = cls(chars)
        if len(vocab) != len(chars):
            raise ValueError("the vocabulary repeats characters")
        return vocab


def load_corpus(cfg: Config) -> tuple[str, str]:
    """(text, path) for the configured corpus."""
    path = corpus.resolve(cfg.data.name, cfg.data.path, cfg.data.url)
    text = corpus.read_text(path)
    if cfg.data.strip_gutenberg:
        text = corpus.strip_gutenberg(text)
    return text, str(path)


class CharTask:
    """Predict each next character of a text."""

    name = "charrnn"

    @staticmethod
    def check(cfg: Config) -> None:
        if cfg.task.loss != "xent":
            raise ConfigError("task.loss", cfg.task.loss, "xent for the char-RNN")
        text, _ = load_corpus(cfg)
        if len(set(text)) < 2:  # nothing to predict: the loss is 0 from the start
            key = "data.path" if cfg.data.path else "data.name"
            raise ConfigError(
                key,
                getattr(cfg.data, key[5:]),
                f"a text of at least 2 distinct characters (this one has only {text[:1]!r})",
            )
        n_train = len(text) - int(len(text) * cfg.data.val_fraction)
        per_stream = n_train // cfg.batch_size
        if cfg.seq_length + 1 >= per_stream:
            raise ConfigError(
                "seq_length",
                cfg.seq_length,
                f"shorter than the training text per stream ({per_stream} characters with "
                f"batch_size={cfg.batch_size})",
            )
        if cfg.prime:
            try:
                Vocabulary(text).encode(cfg.prime, what="prime")
            except PrimeError as e:
                raise ConfigError("prime", cfg.prime, str(e)) from None
        if len(text) - n_train < 2:
            raise ConfigError(
                "data.val_fraction", cfg.data.val_fraction, "large enough to hold out ≥ 2 chars"
            )

    def __init__(self, cfg: Config, rng: np.random.Generator):
        text, self.path = load_corpus(cfg)
        self.vocab = Vocabulary(text)
        self.input_size = self.output_size = len(self.vocab)
        self.activation, self.head = cfg.task.activation, "xent"
        self.seq_length, self.batch_size = cfg.seq_length, cfg.batch_size
        self.dtype = np.dtype(cfg.dtype)
        data = self.vocab.encode(text)
        n_val = int(len(data) * cfg.data.val_fraction)
        self.train_data, self.val_data = data[: len(data) - n_val], data[len(data) - n_val :]
        # Stream b reads train_data[starts[b] : starts[b] + span].
        self.span = len(self.train_data) // self.batch_size
        self.starts = np.arange(self.batch_size) * self.span
        self.pointers = np.zeros(self.batch_size, dtype=np.int64)
        self.fresh = True  # the first window starts every stream from zero, as the seed's n == 0
        self.prime = cfg.prime or text[0]
        self.sample_length, self.temperature = cfg.sample_length, cfg.temperature
        self.tokens_per_iteration = self.seq_length * self.batch_size

    def initial_loss(self) -> float:
        """-ln(1/V) · seq_length: the loss of a uniform guess, where the smooth loss starts."""
        return -math.log(1.0 / len(self.vocab)) * self.seq_length

    def next_batch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(xs (T, B), targets (T, B), reset (B,)): the next window of every stream."""
        T = self.seq_length
        reset = self.pointers + T + 1 >= self.span  # the seed's `p+seq_length+1 >= len(data)`
        if self.fresh:
            reset[:] = True
            self.fresh = False
        self.pointers[reset] = 0
        idx = (self.starts + self.pointers)[None, :] + np.arange(T)[:, None]  # (T, B)
        self.pointers += T
        return self.train_data[idx], self.train_data[idx + 1], reset

    def evaluate(self, params: rnn.Params, chunk: int = 1000) -> dict[str, float]:
        """val/loss (nats per character) and val/bpc over the whole held-out text, read as one
        stream from a zero state."""
        h = np.zeros((1, params["Whh"].shape[0]), dtype=self.dtype)
        total, count = 0.0, 0
        for start in range(0, len(self.val_data) - 1, chunk):
            xs = self.val_data[start : start + chunk][:, None]
            ys = self.val_data[start + 1 : start + chunk + 1][:, None]
            xs = xs[: len(ys)]
            fwd = rnn.forward(params, xs, h, self.activation)
            h = fwd.hs[-1]
            loss, _ = rnn.softmax_xent(fwd.logits.astype(np.float64), ys)
            total, count = total + float(loss[0]), count + len(ys)
        nats = total / count
        return {"val/loss": nats, "val/bpc": nats / math.log(2.0)}

    @staticmethod
    def objective(metrics: dict[str, float]) -> float:
        """What sweeps minimise: validation nats per character."""
        return metrics["val/loss"]

    def generate(
        self,
        params: rnn.Params,
        rng: np.random.Generator,
        prime: str,
        length: int,
        temperature: float,
    ) -> str:
        """``prime`` followed by ``length`` sampled characters."""
        ids = self.vocab.encode(prime, what=f"prime {prime!r}") if prime else None
        if ids is None or ids.size == 0:
            raise PrimeError("prime must have at least one character")
        h = np.zeros((1, params["Whh"].shape[0]), dtype=self.dtype)
        if ids.size > 1:
            h = rnn.forward(params, ids[:-1, None], h, self.activation).hs[-1]
        drawn = rnn.sample(params, self.activation, h, int(ids[-1]), length, temperature, rng)
        return prime + self.vocab.decode(drawn)

    def sample(self, params: rnn.Params, rng: np.random.Generator) -> str:
        """The periodic sample logged during training."""
        return self.generate(params, rng, self.prime, self.sample_length, self.temperature)

    def data_state(self) -> dict[str, np.ndarray]:
        return {"pointers": self.pointers.copy(), "fresh": np.array(self.fresh)}

    def load_data_state(self, state: dict[str, np.ndarray]) -> None:
        self.pointers[...] = state["pointers"]
        self.fresh = bool(state["fresh"])
