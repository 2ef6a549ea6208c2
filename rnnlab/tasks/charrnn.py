"""Next-character prediction on a text: Karpathy's min-char-rnn.

The vocabulary is the sorted set of characters, so symbol ids do not depend on the hash seed.
The last ``data.val_fraction`` of the text is held out (followed by ``data.test_fraction`` for
the test text, when > 0). Training reads B streams, each a
contiguous slice of the training text walked ``seq_length`` characters at a time with its hidden
state carried across windows (truncated BPTT); a stream that reaches the end of its slice starts
over from its beginning with a zero state. With B = 1 this is exactly the seed's loop.
"""

from __future__ import annotations

import math

import numpy as np

from rnnlab.config import Config, ConfigError
from rnnlab.engine import decode, rnn
from rnnlab.errors import UserError
from rnnlab.tasks import corpus
from rnnlab.tasks.judging import Judged


class PrimeError(UserError):
    """A priming string uses characters the model never saw. The message is one line."""


ENCODE_CHUNK = 1 << 20  # characters encoded at a time


class Vocabulary:
    """Characters ↔ symbol ids, sorted for reproducibility."""

    def __init__(self, chars: str):
        self.chars = "".join(sorted(set(chars)))
        self.index = {c: i for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str, what: str = "text") -> np.ndarray:
        """The symbol ids of ``text`` (N,), a chunk of code points at a time through a lookup
        table: a corpus costs its ids and a chunk, not a Python list of N ints (8 more bytes a
        character, and minutes for hundreds of MB)."""
        codes = np.frombuffer(self.chars.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        table = np.full(int(codes.max()) + 2, -1, dtype=np.int32)  # code point → id; last: -1
        table[codes] = np.arange(len(codes), dtype=np.int32)
        ids = np.empty(len(text), dtype=np.intp)
        missing: set[str] = set()
        for start in range(0, len(text), ENCODE_CHUNK):
            piece = text[start : start + ENCODE_CHUNK]
            cps = np.frombuffer(piece.encode("utf-32-le", "surrogatepass"), dtype="<u4")
            found = table[np.minimum(cps, table.size - 1)]  # beyond the table: unknown
            if (found < 0).any():
                missing |= {piece[i] for i in np.flatnonzero(found < 0)}
            ids[start : start + len(piece)] = found
        if missing:
            shown = ", ".join(repr(c) for c in sorted(missing)[:10])
            raise PrimeError(f"{what} has characters not in the vocabulary: {shown}")
        return ids

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids)


def load_corpus(cfg: Config) -> tuple[str, str]:
    """(text, path) for the configured corpus."""
    path = corpus.resolve(cfg.data.name, cfg.data.path, cfg.data.url)
    text = corpus.read_text(path)
    if cfg.data.strip_gutenberg:
        text = corpus.strip_gutenberg(text)
    return text, str(path)


def split_sizes(n: int, cfg: Config) -> tuple[int, int, int]:
    """(train, val, test) characters of an n-character corpus: the held-out text follows the
    training text, the test text (``data.test_fraction``) comes last."""
    n_val, n_test = int(n * cfg.data.val_fraction), int(n * cfg.data.test_fraction)
    return n - n_val - n_test, n_val, n_test


def held_out_text(cfg: Config) -> str:
    """The held-out text of a run with config ``cfg``: what ``val/loss`` reads."""
    text, _ = load_corpus(cfg)
    n_train, n_val, _ = split_sizes(len(text), cfg)
    return text[n_train : n_train + n_val]


# --- reading a text as one stream ---------------------------------------------------------------
# A held-out text is scored as one stream: every character but the first is predicted from all
# before it, the hidden state carried across chunks. ``val/loss`` starts that stream from h = 0;
# ``val/loss_warm`` starts from the state training carries (stream 0's, at the evaluation) and
# first reads a burn-in (the last ``eval_burn_in`` characters of the training text, which the
# held-out text follows), so its state is one the network produces itself. A burn-in from h = 0
# is not enough: the kafka seed that scores 7.56 from h = 0 still scores 7.56 after 1,000
# characters read from h = 0 (the burn-in falls into the same saturation), and 2.0 from the
# carried state.


def _zero_state(params: rnn.Params, spec: rnn.Spec) -> np.ndarray:
    """The all-zero state of one stream, (L, S, 1, H), in the weights' dtype."""
    return rnn.zero_state(spec, 1, params["Why"].dtype)


CHUNK = 1000  # characters per forward call when scoring (bounds the (T, 1, V) logits)


def _logits_and_state(
    params: rnn.Params, spec: rnn.Spec, xs: np.ndarray, h: np.ndarray, observe=None
):
    """(logits (T, 1, V), state after xs) — the one call into the engine's forward.
    ``observe(fwd)``, when given, sees each forward record (the diagnostics count saturation
    on the validation pass itself instead of reading the text again)."""
    fwd = rnn.forward(params, xs, h, spec)
    if observe is not None:
        observe(fwd)
    return fwd.logits, fwd.state


def read(params: rnn.Params, spec: rnn.Spec, ids: np.ndarray, h: np.ndarray) -> np.ndarray:
    """The state after reading ``ids`` (N,) from ``h``, chunk by chunk."""
    for start in range(0, len(ids), CHUNK):  # the state only: no head (logits=False)
        h = rnn.forward(params, ids[start : start + CHUNK, None], h, spec, logits=False).state
    return h


def stream_loss(
    params: rnn.Params, spec: rnn.Spec, ids: np.ndarray, h: np.ndarray, observe=None
) -> tuple[float, int]:
    """(total nats, characters predicted) for ids[1:] given everything before, read as one
    stream from state ``h``; logits in float64 whatever the model's dtype."""
    total, count = 0.0, 0
    for start in range(0, len(ids) - 1, CHUNK):
        xs = ids[start : start + CHUNK][:, None]  # (T, 1)
        ys = ids[start + 1 : start + CHUNK + 1][:, None]
        xs = xs[: len(ys)]
        logits, h = _logits_and_state(params, spec, xs, h, observe)
        loss, _ = rnn.softmax_xent(logits.astype(np.float64, copy=False), ys)  # overwrites them
        total, count = total + float(loss[0]), count + len(ys)
    return total, count


def burn_in_text(train_data: np.ndarray, eval_burn_in: int) -> np.ndarray:
    """The burn-in ``val/loss_warm`` (and the diagnostics' warm pass) read before the held-out
    text: the last ``eval_burn_in`` characters of the training text (which the val text follows)."""
    return train_data[max(0, len(train_data) - eval_burn_in) :]


def char_metrics(
    params: rnn.Params,
    spec: rnn.Spec,
    ids: np.ndarray,
    burn_in: np.ndarray | None,
    prefix: str = "val",
    warm_start: np.ndarray | None = None,
    observe=None,
) -> dict[str, float]:
    """``<prefix>/loss`` and ``/bpc`` from h = 0; with a burn-in, ``/loss_warm`` and
    ``/bpc_warm`` from the state after reading it from ``warm_start`` (None: h = 0). Nats and
    bits per character. ``observe(label, fwd)`` sees the forward records of both passes over
    the held-out text (label "" and "_warm")."""
    seen = {k: (lambda fwd, k=k: observe(k, fwd)) if observe else None for k in ("", "_warm")}
    total, count = stream_loss(params, spec, ids, _zero_state(params, spec), seen[""])
    nats = total / count
    out = {f"{prefix}/loss": nats, f"{prefix}/bpc": nats / math.log(2.0)}
    if burn_in is not None:
        start = _zero_state(params, spec) if warm_start is None else warm_start
        warm = read(params, spec, burn_in, start)
        total, count = stream_loss(params, spec, ids, warm, seen["_warm"])
        out[f"{prefix}/loss_warm"] = total / count
        out[f"{prefix}/bpc_warm"] = total / count / math.log(2.0)
    return out


class CharTask:
    """Predict each next character of a text."""

    # How its runs are judged (rnnlab.tasks.judging.Judged). The default objective is warm: see the
    # README, "Which validation number"; runs recorded before the ``objective`` key used val/loss.
    JUDGED = Judged(
        objectives={
            "val/loss": False,
            "val/loss_warm": False,
            "val/bpc": False,
            "val/bpc_warm": False,
        },  # fmt: skip
        default="val/loss_warm",
        legacy="val/loss",
        headline=(("final_val_loss", "final val/loss (nats/char)", False),),
    )

    name = "charrnn"
    weights = None  # every character weighs the same in the loss

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
        n_test = int(len(text) * cfg.data.test_fraction)
        n_train = len(text) - int(len(text) * cfg.data.val_fraction) - n_test
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
        if len(text) - n_train - n_test < 2:
            raise ConfigError(
                "data.val_fraction", cfg.data.val_fraction, "large enough to hold out ≥ 2 chars"
            )
        if cfg.data.test_fraction > 0 and n_test < 2:
            raise ConfigError(
                "data.test_fraction", cfg.data.test_fraction, "0, or large enough for ≥ 2 chars"
            )

    def __init__(self, cfg: Config, rng: np.random.Generator):
        text, self.path = load_corpus(cfg)
        self.vocab = Vocabulary(text)
        self.input_size = self.output_size = len(self.vocab)
        self.activation, self.head = cfg.task.activation, "xent"
        self.spec = rnn.spec_of(cfg)
        self.seq_length, self.batch_size = cfg.seq_length, cfg.batch_size
        self.dtype = np.dtype(cfg.dtype)
        data = self.vocab.encode(text)
        n_train, n_val, n_test = split_sizes(len(data), cfg)
        self.train_data, self.val_data = data[:n_train], data[n_train : n_train + n_val]
        self.test_data = data[n_train + n_val :] if n_test else None
        # val/loss_warm reads these last training characters first (the val text follows them)
        self.burn_in = burn_in_text(self.train_data, cfg.eval_burn_in)
        # Stream b reads train_data[starts[b] : starts[b] + span].
        self.span = len(self.train_data) // self.batch_size
        self.starts = np.arange(self.batch_size) * self.span
        self.pointers = np.zeros(self.batch_size, dtype=np.int64)
        self._steps = np.arange(self.seq_length + 1)[:, None]  # (T+1, 1) offsets of a window
        self.fresh = True  # the first window starts every stream from zero, as the seed's n == 0
        self.prime = cfg.prime or text[0]
        self.sample_length, self.temperature = cfg.sample_length, cfg.temperature
        self.decoding = decode.Options(cfg.temperature, cfg.top_k, cfg.top_p, cfg.greedy, cfg.beam)
        self.tokens_per_iteration = self.seq_length * self.batch_size

    def constant_predictor(self) -> dict[str, float]:
        """The val/* metrics of a constant predictor — every next character from the training
        text's character frequencies (add-one), whatever came before — what a run that learned
        nothing beats. Nats (and bits) per held-out character, as ``val/loss`` counts them."""
        counts = np.bincount(self.train_data, minlength=len(self.vocab)) + 1.0
        nats = float(-np.log(counts / counts.sum())[self.val_data[1:]].mean())
        bits = nats / math.log(2.0)
        return {"val/loss": nats, "val/loss_warm": nats, "val/bpc": bits, "val/bpc_warm": bits}

    def initial_loss(self) -> float:
        """-ln(1/V) · seq_length: the loss of a uniform guess, where the smooth loss starts."""
        return -math.log(1.0 / len(self.vocab)) * self.seq_length

    def next_batch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(xs (T, B), targets (T, B), reset (B,)): the next window of every stream."""
        T = self.seq_length
        if self.batch_size == 1:  # the same window as below, sliced: a quarter of its numpy calls
            p = int(self.pointers[0])
            reset = self.fresh or p + (T + 1) >= self.span
            self.fresh = False
            p = 0 if reset else p
            self.pointers[0] = p + T
            window = self.train_data[p : p + T + 1, None].copy()  # (T+1, 1); starts[0] is 0
            return window[:-1], window[1:], np.array([reset])
        reset = self.pointers + (T + 1) >= self.span  # the seed's `p+seq_length+1 >= len(data)`
        if self.fresh:
            reset[:] = True
            self.fresh = False
        if reset.any():
            self.pointers[reset] = 0
        # one gather of T+1 characters per stream: the inputs and, one later, the targets
        window = self.train_data[self._steps + (self.starts + self.pointers)]  # (T+1, B)
        self.pointers += T
        return window[:-1], window[1:], reset

    def evaluate(
        self, params: rnn.Params, observe=None, warm_start: np.ndarray | None = None
    ) -> dict[str, float]:
        """val/loss and val/bpc over the whole held-out text read as one stream from a zero
        state; val/loss_warm and val/bpc_warm from ``warm_start`` (L, S, 1, H) (a state training
        carried; None: h = 0) after reading the burn-in. ``observe``: see
        ``char_metrics``."""
        return char_metrics(
            params, self.spec, self.val_data, self.burn_in, "val", warm_start, observe
        )

    def test_metrics(self, params: rnn.Params) -> dict[str, float]:
        """test/loss and test/bpc (from h = 0) when there is a test text."""
        if self.test_data is None:
            return {}
        return char_metrics(params, self.spec, self.test_data, None, "test")

    def generate(
        self,
        params: rnn.Params,
        rng: np.random.Generator,
        prime: str,
        length: int,
        temperature: float,
    ) -> str:
        """``prime`` followed by ``length`` characters decoded with the run's options."""
        ids = self.vocab.encode(prime, what=f"prime {prime!r}") if prime else None
        if ids is None or ids.size == 0:
            raise PrimeError("prime must have at least one character")
        opts = decode.Options(temperature, *[getattr(self.decoding, k) for k in
                                             ("top_k", "top_p", "greedy", "beam")])  # fmt: skip
        step = decode.engine_step(params, self.spec)
        zero = _zero_state(params, self.spec)
        drawn = decode.continue_text(step, zero, ids, length, opts, rng)
        return prime + self.vocab.decode(drawn)

    def sample(self, params: rnn.Params, rng: np.random.Generator) -> str:
        """The periodic sample logged during training."""
        return self.generate(params, rng, self.prime, self.sample_length, self.temperature)

    def data_state(self) -> dict[str, np.ndarray]:
        return {"pointers": self.pointers.copy(), "fresh": np.array(self.fresh)}

    def load_data_state(self, state: dict[str, np.ndarray]) -> None:
        self.pointers[...] = state["pointers"]
        self.fresh = bool(state["fresh"])
