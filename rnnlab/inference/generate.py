"""Generating from trained weights: a char-RNN's text, an adder's sum bit by bit, a copy-memory
network's recall of the symbols it is given.

Text is decoded exactly as training-time samples are (``CharTask.generate``: the same rng and
options give the same characters), without needing the corpus. Every bad request is a
``UserError`` naming the value and what is allowed, raised before any work.

Not here: the decoders (``rnnlab.engine.decode``), loading weights (``rnnlab.inference.weights``).
"""

from __future__ import annotations

import math

import numpy as np

from rnnlab.config import Config
from rnnlab.engine import decode, rnn
from rnnlab.errors import UserError
from rnnlab.inference.requests import MIN_TEMPERATURE, deadline_step
from rnnlab.inference.weights import Weights
from rnnlab.tasks.adder import from_bits, to_bits
from rnnlab.tasks.charrnn import PrimeError


def check_request(
    length: int | None = None, temperature: float | None = None, seed: int | None = None
) -> None:
    if length is not None and length < 1:
        raise UserError(f"length={length} is not allowed: an integer ≥ 1")
    if temperature is not None and not (
        math.isfinite(temperature) and temperature >= MIN_TEMPERATURE
    ):
        raise UserError(
            f"temperature={temperature} is not allowed: a finite number ≥ {MIN_TEMPERATURE}"
        )
    if seed is not None and seed < 0:
        raise UserError(f"seed={seed} is not allowed: an integer ≥ 0")


def generate_text(
    w: Weights,
    prime: str,
    length: int,
    temperature: float,
    rng: np.random.Generator,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    beam: int = 0,
    deadline: float | None = None,
) -> str:
    """``prime`` followed by ``length`` decoded characters — what ``CharTask.generate`` draws
    with the same rng and options, without needing the corpus. ``deadline``
    (``time.monotonic()``): decoding stops there with ``RequestTimeout``."""
    if w.vocab is None:
        raise UserError(f"{w.source} is a {w.cfg.task.name} model, not a char-RNN")
    check_request(length=length, temperature=temperature)
    if (bad := decode.problem(top_k, top_p, greedy, beam)) is not None:
        raise UserError(f"{bad[0]}={bad[1]} is not allowed: {bad[2]}")
    if not prime:
        raise UserError("prime must have at least one character")
    try:
        ids = w.vocab.encode(prime, what=f"prime {prime!r}")
    except PrimeError as e:
        raise UserError(str(e)) from None
    spec = rnn.spec_of(w.cfg)
    opts = decode.Options(temperature, top_k, top_p, greedy, beam)
    step = deadline_step(decode.engine_step(w.params, spec), deadline)  # checked every step
    drawn = decode.continue_text(
        step, rnn.zero_state(spec, 1, w.params["Why"].dtype), ids, length, opts, rng
    )
    return prime + w.vocab.decode(drawn)


def default_prime(w: Weights) -> str:
    """The run's own prime, else a space (else the vocabulary's first character)."""
    assert w.vocab is not None
    if w.cfg.prime and all(c in w.vocab.index for c in w.cfg.prime):
        return w.cfg.prime
    return " " if " " in w.vocab.index else w.vocab.chars[0]


def decoding(cfg: Config, given: dict) -> dict:
    """The run's decoding options (its training-time samples') with ``given`` on top; when the
    command line picks a mode (beam, greedy, top_k/top_p) the run's other mode is dropped."""
    run = {"top_k": cfg.top_k, "top_p": cfg.top_p, "greedy": cfg.greedy, "beam": cfg.beam}
    if given:
        run = {"top_k": 0, "top_p": 1.0, "greedy": False, "beam": 0}
    return run | given


def add_bit_by_bit(w: Weights, a: int, b: int) -> tuple[int, list[str]]:
    """The adder's predicted a + b and one line per bit (least significant first)."""
    if w.vocab is not None:
        raise UserError(f"{w.source} is a char-RNN model; a= and b= are for adder runs")
    bits = w.cfg.seq_length
    high = 2 ** (bits - 1)
    for name, v in (("a", a), ("b", b)):
        if not 0 <= v < high:
            raise UserError(
                f"{name}={v} is not allowed: this {bits}-bit adder adds 0 ≤ a, b < {high}"
            )
    ops = np.array([a, b], dtype=np.int64)
    dtype = w.params["Why"].dtype
    spec = rnn.spec_of(w.cfg)
    xs = to_bits(ops, bits)[:, None, :].astype(dtype)  # (bits, 1, 2): one bit of each per step
    h0 = rnn.zero_state(spec, 1, dtype)
    # one short sum: the numpy cells (a kernel's start-up would cost more than it saves)
    z = rnn.forward(w.params, xs, h0, spec, reference=True).logits[:, 0, 0].astype(np.float64)
    p = 1.0 / (1.0 + np.exp(-z))  # P(sum bit = 1), (bits,)
    pred_bits = (z > 0.0).astype(np.int64)  # sigmoid(z) > ½  ⇔  z > 0, as AdderTask.predict
    pred = int(from_bits(pred_bits[:, None])[0])
    true_bits = to_bits(np.array([a + b]), bits)[:, 0]
    lines = [f"{'bit':>3}  a b  P(1)   predicted  true"]
    for t in range(bits):
        mark = "" if pred_bits[t] == true_bits[t] else "  ✗"
        lines.append(
            f"{t:>3}  {int(xs[t, 0, 0])} {int(xs[t, 0, 1])}  {p[t]:.3f}  {pred_bits[t]:>9}"
            f"  {true_bits[t]:>4}{mark}"
        )
    verdict = "right" if pred == a + b else f"wrong, {a} + {b} = {a + b}"
    lines.append(f"{a} + {b} = {pred}   ({pred:0{bits}b}; {verdict})")
    return pred, lines


def copy_recall(w: Weights, symbols: str) -> list[str]:
    """What a copy-memory network recalls after the delimiter, given ``symbols`` to remember
    (as many as it was trained on, from its alphabet): one line per step of the recall."""
    from rnnlab.tasks.copymemory import CopyTask, show

    if w.cfg.task.name != "copy":
        raise UserError(f"{w.source} is a run of task {w.cfg.task.name}; symbols= is for copy runs")
    task = CopyTask(w.cfg, np.random.default_rng(0))
    want = task.parse(symbols)  # (S, 1), UserError for a bad string
    got = task.recall_symbols(w.params, want)[:, 0]
    lines = [f"{task.symbols} symbols, {task.delay} blanks, a delimiter; then the recall:"]
    for k, (a, b) in enumerate(zip(want[:, 0], got, strict=True)):
        mark = "" if a == b else "  ✗"
        lines.append(f"{k:>3}  {show([a])} -> {show([b]) if b else '· (blank)'}{mark}")
    right = int((want[:, 0] == got).sum())
    lines.append(f"{show(want[:, 0])} -> {''.join(show([g]) if g else '·' for g in got)}"
                 f"   ({right}/{task.symbols} right)")  # fmt: skip
    return lines
