"""What the hidden units of a trained network track: the analysis behind ``rnnlab.inspect``.

Pure numpy on a network's weights and a text (or sums, or sequences): states, simple features of
the input, correlations, saturation, top-activating contexts; for the adder the carry each state
must hold, for the long-memory tasks what each task says a state might track (the adding
problem: whether a marker has been seen, the running sum). No I/O; ``rnnlab.analysis.viewer``
turns the result into a page.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rnnlab.analysis.diagnostics import CELLS, SATURATED
from rnnlab.engine import rnn

TOP_CONTEXTS = 5
CONTEXT_BEFORE = 30
VOWELS = set("aeiouAEIOUäöüÄÖÜéèàâêîôûÉÈÀ")


# --- features of a text -----------------------------------------------------------------------


def text_features(text: str) -> dict[str, np.ndarray]:
    """Per character (N,) floats: what a unit might track at that character."""
    n = len(text)
    quote = np.zeros(n)
    pos = np.zeros(n)
    inside, col = False, 0
    for i, c in enumerate(text):
        if c == "“":
            inside = True
        elif c == "”":
            inside = False
        elif c == '"':
            inside = not inside
        quote[i] = inside
        col = 0 if c == "\n" else col + 1
        pos[i] = col
    chars = np.array(list(text)) if n else np.array([], dtype=str)
    return {
        "inside quotes": quote,
        "position in line": pos,
        "after a space": (chars == " ").astype(float),
        "after a full stop": (chars == ".").astype(float),
        "capital letter": np.array([c.isupper() for c in text], dtype=float),
        "vowel": np.array([c in VOWELS for c in text], dtype=float),
    }


def correlations(values: np.ndarray, states: np.ndarray) -> np.ndarray:
    """Pearson correlation of a feature (N,) with every unit of states (N, H): (H,); 0 where
    either is constant."""
    v = values - values.mean()
    s = states - states.mean(axis=0)
    denom = np.sqrt((v * v).sum() * (s * s).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (v @ s) / denom
    return np.where(denom > 0, r, 0.0)


@dataclass
class UnitView:
    """One coloured block of the page."""

    unit: int
    why: str  # e.g. "most correlated with inside quotes (r = +0.61)"
    contexts: list[tuple[str, str, float]] = field(default_factory=list)  # (before, char, act)


@dataclass
class TextAnalysis:
    text: str
    states: np.ndarray  # (N, H): the state after reading each character
    activation: str  # tanh | sigmoid | unbounded: how activations map onto colours
    units: list[UnitView]
    feature_table: list[tuple[str, int, float]]  # (feature, best unit, r)
    saturation: np.ndarray  # (H,) share of characters at which each unit is saturated
    contexts: dict[int, list[tuple[str, str, float]]]  # every unit's top contexts
    layer: int = 0  # which layer's h
    layers: int = 1  # of how many
    scale: float = 1.0  # |h| shown at full colour: 1, or an unbounded layer's largest |h|


def top_contexts(text: str, acts: np.ndarray, k: int = TOP_CONTEXTS):
    """The k characters where a unit (acts (N,)) is highest, each with what came before."""
    out = []
    for i in np.argsort(-acts, kind="stable")[:k]:
        i = int(i)
        out.append((text[max(0, i - CONTEXT_BEFORE) : i], text[i], float(acts[i])))
    return out


def hidden_states(
    params: rnn.Params, spec: rnn.Spec, xs: np.ndarray
) -> tuple[list[np.ndarray], str]:
    """Every layer's h (T, B, H), float64, read from the zero state, and how h is bounded
    ("tanh" or "sigmoid": the vanilla cell's activation; a gated cell's h = o⊙tanh(c) or a
    blend of tanh candidates lies in (-1, 1); "unbounded": ReLU cells, minGRU/minLSTM, the
    LRU's output)."""
    state = rnn.zero_state(spec, xs.shape[1], params["Why"].dtype)
    fwd = rnn.forward(params, xs, state, spec)
    kind = CELLS[spec.cell].h or "unbounded"
    kind = spec.activation if kind == "activation" else kind
    return [layer.hs[1:].astype(np.float64) for layer in fwd.layers], kind


def analyse_text(
    params: rnn.Params, spec: rnn.Spec, vocab, text: str, layer: int = -1
) -> TextAnalysis:
    """Read ``text`` from the zero state and pick the units worth showing, of ``layer`` (default
    the top one, which the output layer reads)."""
    ids = vocab.encode(text, what="text")  # PrimeError (a UserError) for unknown characters
    every, activation = hidden_states(params, spec, ids[:, None])
    layer = layer % len(every)
    states = every[layer][:, 0]  # (N, H)
    H = states.shape[1]
    if activation in SATURATED:
        saturation = SATURATED[activation](states).mean(axis=0)  # (H,)
    else:  # h does not saturate
        saturation = np.zeros(H)
    units: list[UnitView] = []
    table = []
    for name, values in text_features(text).items():
        r = correlations(values, states)
        best = int(np.argmax(np.abs(r)))
        table.append((name, best, float(r[best])))
        units.append(UnitView(best, f"most correlated with “{name}” (r = {r[best]:+.2f})"))
    order = np.argsort(-saturation, kind="stable")
    for j in order[:2]:
        units.append(UnitView(int(j), f"most saturated ({saturation[j]:.0%} of characters)"))
    for j in order[::-1][:2]:
        units.append(UnitView(int(j), f"least saturated ({saturation[j]:.0%} of characters)"))
    contexts = {j: top_contexts(text, states[:, j]) for j in range(H)}
    for u in units:
        u.contexts = contexts[u.unit]
    scale = 1.0 if activation in SATURATED else float(np.abs(states).max()) or 1.0
    return TextAnalysis(
        text, states, activation, units, table, saturation, contexts, layer, len(every), scale
    )


# --- the adder ----------------------------------------------------------------------------------


@dataclass
class AdderAnalysis:
    bits: int
    carry_corr: np.ndarray  # (H,) correlation of each unit with the true carry out of each bit
    sums: list[dict]  # per example: a, b, true, predicted, rows per bit


def carries(a: np.ndarray, b: np.ndarray, bits: int) -> np.ndarray:
    """The true carry out of each bit (bits, N), least significant first."""
    c = np.zeros(a.shape, dtype=np.int64)
    out = np.zeros((bits,) + a.shape, dtype=np.int64)
    for t in range(bits):
        total = ((a >> t) & 1) + ((b >> t) & 1) + c
        c = total >> 1
        out[t] = c
    return out


def analyse_adder(
    params: rnn.Params,
    spec: rnn.Spec,
    bits: int,
    a: np.ndarray,
    b: np.ndarray,
    shown: int = 6,
) -> AdderAnalysis:
    """Find the carry neuron (of the top layer) on the sums a + b (N,), and show the first
    ``shown`` bit by bit."""
    from rnnlab.tasks.adder import from_bits, to_bits

    dtype = params["Why"].dtype
    xs = np.stack([to_bits(a, bits), to_bits(b, bits)], axis=-1).astype(dtype)  # (bits, N, 2)
    fwd = rnn.forward(params, xs, rnn.zero_state(spec, a.size, dtype), spec)
    states = fwd.hs[1:].astype(np.float64)  # (bits, N, H): the top layer after reading bit t
    carry = carries(a, b, bits)  # (bits, N): what the state after bit t must remember
    corr = correlations(carry.reshape(-1).astype(float), states.reshape(-1, states.shape[-1]))
    z = fwd.logits[..., 0].astype(np.float64)  # (bits, N)
    p = 1.0 / (1.0 + np.exp(-z))
    pred = from_bits(z > 0.0)
    true_bits = to_bits(a + b, bits)
    best = int(np.argmax(np.abs(corr)))
    sums = []
    for i in range(min(shown, a.size)):
        rows = [
            {
                "bit": t,
                "a": int((a[i] >> t) & 1),
                "b": int((b[i] >> t) & 1),
                "true": int(true_bits[t, i]),
                "p": float(p[t, i]),
                "carry": int(carry[t, i]),
                "unit": float(states[t, i, best]),
            }
            for t in range(bits)
        ]
        sums.append(
            {"a": int(a[i]), "b": int(b[i]), "true": int(a[i] + b[i]), "pred": int(pred[i])}
            | {"rows": rows, "unit": best}
        )
    return AdderAnalysis(bits, corr, sums)


# --- the long-memory tasks (adding, copy, digits) -----------------------------------------------


@dataclass
class SequenceAnalysis:
    """Which unit tracks each feature a task names, on a few of its held-out sequences."""

    text: list[str]  # each sequence drawn one character per step
    states: np.ndarray  # (T, n, H): the layer's h after each step
    activation: str  # tanh | sigmoid: how activations map onto colours
    feature_table: list[tuple[str, int, float]]  # (feature, best unit, r)
    correlations: dict[str, np.ndarray]  # feature -> (H,) r of every unit
    layer: int = 0
    layers: int = 1


def analyse_sequences(
    params: rnn.Params,
    spec: rnn.Spec,
    xs: np.ndarray,
    features: dict[str, np.ndarray],
    text: list[str],
    layer: int = -1,
) -> SequenceAnalysis:
    """Read sequences xs (T, n[, D]) from the zero state; for each feature (T, n) the unit of
    ``layer`` (default the top one) whose state correlates with it most, over every step."""
    every, activation = hidden_states(params, spec, xs)
    layer = layer % len(every)
    states = every[layer]  # (T, n, H)
    flat = states.reshape(-1, states.shape[-1])
    table, corr = [], {}
    for name, values in features.items():
        r = correlations(np.asarray(values, dtype=np.float64).reshape(-1), flat)
        best = int(np.argmax(np.abs(r)))
        table.append((name, best, float(r[best])))
        corr[name] = r
    return SequenceAnalysis(text, states, activation, table, corr, layer, len(every))
