"""Decoders over characters: sampling (temperature, top-k, nucleus), greedy and beam search.

Every decoder is written against one step of the network,

    step(state, symbols (B,)) -> (logits (B, V), state)

so it works for every cell the engine has: the state is one array whose second-to-last axis is
the batch (B, H today; (L, S, B, H) for stacked and gated cells), which is all beam search needs
to reorder its beams. Plain sampling draws exactly what the seed's ``rnn.sample`` draws with the
same generator; ``top_p = 1`` and ``top_k = 0`` leave the distribution untouched, ``top_k = 1``
picks what ``greedy`` picks, and ``beam = 1`` is greedy. Ties go to the lowest symbol id.

Not here: reading a prime or a checkpoint (``rnnlab.sample``), training (``rnnlab.training.loop``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rnnlab.engine import rnn

State = np.ndarray
Step = Callable[[State, np.ndarray], tuple[np.ndarray, State]]


@dataclass(frozen=True)
class Options:
    """How to choose each next character."""

    temperature: float = 1.0  # logits / temperature before the softmax (sampling only)
    top_k: int = 0  # keep the k likeliest symbols; 0 = all
    top_p: float = 1.0  # keep the smallest set of likeliest symbols with this much mass
    greedy: bool = False  # always the likeliest symbol (no draws)
    beam: int = 0  # beam search of this width: the likeliest continuation; 0 = sample


def problem(top_k, top_p, greedy, beam) -> tuple[str, object, str] | None:
    """(key, value, what is allowed) for the first bad decoding option, else None."""
    if not isinstance(top_k, int) or top_k < 0:
        return "top_k", top_k, "an integer ≥ 0 (0 = off)"
    if not (isinstance(top_p, float | int) and 0.0 < top_p <= 1.0):
        return "top_p", top_p, "a number in (0, 1] (1 = off)"
    if not isinstance(beam, int) or beam < 0:
        return "beam", beam, "an integer ≥ 0 (0 = sampling)"
    if beam and (greedy or top_k or top_p < 1.0):
        return "beam", beam, "alone: beam search is deterministic; drop greedy, top_k and top_p"
    if greedy and (top_k or top_p < 1.0):
        return "greedy", "true", "alone: greedy takes the likeliest symbol; drop top_k and top_p"
    return None


def engine_step(params: rnn.Params, spec: rnn.Spec) -> Step:
    """One step of the engine: the single place decoders call into the network."""
    return rnn.stepper(params, spec)  # (B, V), state (L, S, B, H)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log p over the last axis, in float64."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def distribution(logits: np.ndarray, opts: Options) -> np.ndarray:
    """p (V,) to draw from: softmax(logits / T), cut to top_k, then to the top_p nucleus."""
    p = rnn.softmax(logits.astype(np.float64), opts.temperature)  # float64: sums to 1 for choice
    if opts.top_k and opts.top_k < p.size:
        p[np.argsort(-p, kind="stable")[opts.top_k :]] = 0.0
        p /= p.sum()
    if opts.top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        keep = int(np.searchsorted(np.cumsum(p[order]), opts.top_p)) + 1  # first prefix ≥ top_p
        p[order[keep:]] = 0.0
        p /= p.sum()
    return p


def sample(
    step: Step, state: State, first: int, length: int, opts: Options, rng: np.random.Generator
) -> list[int]:
    """``length`` symbols after ``first`` (read from ``state``), each fed back as the next
    input. Beam search when ``opts.beam``, else greedy or drawn with ``rng``."""
    if opts.beam:
        return beam_search(step, state, first, length, opts.beam)[0]
    out, x = [], first
    for _ in range(length):
        logits, state = step(state, np.array([x]))
        if opts.greedy:
            x = int(np.argmax(log_softmax(logits[0])))
        else:
            p = distribution(logits[0], opts)
            x = int(rng.choice(p.size, p=p))
        out.append(x)
    return out


def beam_search(
    step: Step, state: State, first: int, length: int, width: int
) -> tuple[list[int], float]:
    """The likeliest continuation of ``length`` symbols that beam search of ``width`` finds
    after ``first``, and its log-likelihood (nats)."""
    tokens = np.array([first])  # (b,) each beam's last symbol; one beam to start
    scores = np.zeros(1)  # (b,) log-likelihood of each beam so far
    # each step's (parent beam, symbol) of every beam: the best sequence is read back at the
    # end, so a step costs O(b·V), not a copy of every sequence so far (O(b·t) a step)
    chosen: list[tuple[np.ndarray, np.ndarray]] = []
    for _ in range(length):
        logits, state = step(state, tokens)  # (b, V); state of each beam after its last symbol
        total = (scores[:, None] + log_softmax(logits)).reshape(-1)  # (b·V,) every extension
        best = np.argsort(-total, kind="stable")[:width]
        rows, tokens = np.divmod(best, logits.shape[-1])
        scores = total[best]
        chosen.append((rows, tokens))
        state = np.take(state, rows, axis=-2)  # beams continue from their parents' states
    out, beam = [], 0
    for rows, symbols in reversed(chosen):  # the best beam's symbols, last to first
        out.append(int(symbols[beam]))
        beam = int(rows[beam])
    return out[::-1], float(scores[0])


def continue_text(
    step: Step,
    zero: State,
    prime: np.ndarray,
    length: int,
    opts: Options,
    rng: np.random.Generator,
) -> list[int]:
    """Read ``prime`` (N ≥ 1,) from the zero state ``zero`` and decode ``length`` symbols after
    it: how training-time samples, ``rnnlab.sample`` and the served model all generate."""
    state = zero
    for x in prime[:-1]:  # all but the last: decoding starts from that one
        _, state = step(state, np.array([x]))
    return sample(step, state, int(prime[-1]), length, opts, rng)
