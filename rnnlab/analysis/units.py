"""What the hidden units of a trained network track: the analysis behind ``rnnlab.inspect``.

Pure numpy on a network's weights and a text (or sums, or sequences): states, features of the
input, correlations, saturation, top-activating contexts; for the adder the carry each state must
hold, for the long-memory tasks what each task says a state might track (the adding problem:
whether a marker has been seen, the running sum). No I/O; ``rnnlab.analysis.viewer`` turns the
result into a page.

A unit *tracks* a feature when its state after each step correlates with the feature's value
there with |r| ≥ ``MIN_R``; below that nothing is claimed ("no unit tracks this"). A text's
features are a registry, ``TEXT_FEATURES``: ``@text_feature(name, what)`` adds one (a function of
the text giving one number per character, for what is true once that character has been read);
a task that is not text names its own (``unit_features`` on the task class).

Not here: the page (``rnnlab.analysis.viewer``), learning diagnostics
(``rnnlab.analysis.diagnostics``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from rnnlab.analysis.diagnostics import CELLS, SATURATED
from rnnlab.engine import rnn

TOP_CONTEXTS = 5
CONTEXT_BEFORE = 30
VOWELS = set("aeiouAEIOUäöüÄÖÜéèàâêîôûÉÈÀ")
MIN_R = 0.1  # |r| below this: a unit is not said to track a feature
TRACKERS_SHOWN = 3  # units listed per feature, strongest first


# --- features of a text -----------------------------------------------------------------------

TextFeature = Callable[[str], np.ndarray]  # text (N characters) → (N,) floats
TEXT_FEATURES: dict[str, tuple[str, TextFeature]] = {}  # name → (what it measures, values)


def text_feature(name: str, what: str) -> Callable[[TextFeature], TextFeature]:
    """Register ``fn(text) -> (N,)`` as feature ``name`` of every char-RNN page (a decorator);
    ``what``: one line for the page's feature table."""

    def register(fn: TextFeature) -> TextFeature:
        TEXT_FEATURES[name] = (what, fn)
        return fn

    return register


def _chars(text: str) -> np.ndarray:
    return np.array(list(text)) if text else np.array([], dtype=str)


def _running(text: str, step: Callable[[str, float], float]) -> np.ndarray:
    """(N,): a count carried from character to character, ``value = step(char, value)``."""
    out, value = np.zeros(len(text)), 0.0
    for i, c in enumerate(text):
        value = step(c, value)
        out[i] = value
    return out


@text_feature("inside quotes", "1 between an opening and a closing quotation mark")
def inside_quotes(text: str) -> np.ndarray:
    def step(c: str, inside: float) -> float:
        if c in "“„":
            return 1.0
        if c == "”":
            return 0.0
        return 1.0 - inside if c == '"' else inside

    return _running(text, step)


@text_feature("inside brackets", "how many ( [ { are open")
def inside_brackets(text: str) -> np.ndarray:
    def step(c: str, depth: float) -> float:
        if c in "([{":
            return depth + 1
        return max(depth - 1, 0.0) if c in ")]}" else depth

    return _running(text, step)


@text_feature("position in line", "characters since the last line break")
def position_in_line(text: str) -> np.ndarray:
    return _running(text, lambda c, col: 0.0 if c == "\n" else col + 1)


@text_feature("position in word", "letters read of the current word (0 between words)")
def position_in_word(text: str) -> np.ndarray:
    return _running(text, lambda c, k: k + 1 if c.isalpha() or (c == "'" and k) else 0.0)


@text_feature("words into the sentence", "words begun since the last . ! or ?")
def words_into_sentence(text: str) -> np.ndarray:
    out, words, prev = np.zeros(len(text)), 0, " "
    for i, c in enumerate(text):
        if c in ".!?":
            words = 0
        elif c.isalpha() and not (prev.isalpha() or prev == "'"):
            words += 1
        out[i] = words
        prev = c
    return out


@text_feature("after a space", "the character is a space")
def after_a_space(text: str) -> np.ndarray:
    return (_chars(text) == " ").astype(float)


@text_feature("end of a sentence", "the character is . ! or ?")
def end_of_sentence(text: str) -> np.ndarray:
    return np.isin(_chars(text), list(".!?")).astype(float)


@text_feature("comma or semicolon", "the character is , ; or :")
def comma(text: str) -> np.ndarray:
    return np.isin(_chars(text), list(",;:")).astype(float)


@text_feature("capital letter", "the character is an upper-case letter")
def capital_letter(text: str) -> np.ndarray:
    return np.array([c.isupper() for c in text], dtype=float)


@text_feature("vowel", "the character is a vowel")
def vowel(text: str) -> np.ndarray:
    return np.array([c in VOWELS for c in text], dtype=float)


def text_features(text: str) -> dict[str, np.ndarray]:
    """Every registered feature of ``text``: name → (N,) floats."""
    return {name: fn(text) for name, (_, fn) in TEXT_FEATURES.items()}


def correlations(values: np.ndarray, states: np.ndarray) -> np.ndarray:
    """Pearson correlation of a feature (N,) with every unit of states (N, H): (H,); 0 where
    either is constant."""
    v = values - values.mean()
    s = states - states.mean(axis=0)
    denom = np.sqrt((v * v).sum() * (s * s).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (v @ s) / denom
    return np.where(denom > 0, r, 0.0)


def trackers(r: np.ndarray, k: int = TRACKERS_SHOWN) -> list[tuple[int, float]]:
    """The units (of r (H,)) that track a feature, |r| ≥ MIN_R, strongest first, at most k."""
    order = np.argsort(-np.abs(r), kind="stable")[:k]
    return [(int(j), float(r[j])) for j in order if abs(r[j]) >= MIN_R]


@dataclass
class FeatureRow:
    """One feature of the page's table: which units track it, if any."""

    feature: str
    what: str
    units: list[tuple[int, float]]  # (unit, r) with |r| ≥ MIN_R, strongest first
    strongest: tuple[int, float]  # the largest |r| of any unit, tracked or not
    present: bool = True  # False: constant in this text (e.g. no quotation mark in it)
    r: np.ndarray | None = None  # (H,) every unit's correlation (None when not present)


@dataclass
class UnitView:
    """One coloured block of the page."""

    unit: int
    why: str  # e.g. "tracks “inside quotes” (r = +0.61)"
    contexts: list[tuple[str, str, float]] = field(default_factory=list)  # (before, char, act)
    tracks: list[tuple[str, float]] = field(default_factory=list)  # (feature, r), |r| ≥ MIN_R


@dataclass
class TextAnalysis:
    text: str
    states: np.ndarray  # (N, H): the state after reading each character
    activation: str  # tanh | sigmoid | unbounded: how activations map onto colours
    units: list[UnitView]
    feature_table: list[FeatureRow]
    saturation: np.ndarray  # (H,) share of characters at which each unit is saturated
    contexts: dict[int, list[tuple[str, str, float]]]  # every unit's top contexts
    layer: int = 0  # which layer's h
    layers: int = 1  # of how many
    scale: float = 1.0  # |h| shown at full colour: 1, or an unbounded layer's largest |h|
    best_feature: dict[int, tuple[str, float]] = field(default_factory=dict)  # unit → tracked


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


def feature_rows(text: str, states: np.ndarray) -> list[FeatureRow]:
    """Every registered feature of ``text`` against every unit of states (N, H), strongest
    tracked feature first; features the text never varies last."""
    rows = []
    for name, (what, fn) in TEXT_FEATURES.items():
        values = np.asarray(fn(text), dtype=np.float64)
        if values.size == 0 or np.ptp(values) == 0:
            rows.append(FeatureRow(name, what, [], (0, 0.0), present=False))
            continue
        r = correlations(values, states)
        j = int(np.argmax(np.abs(r)))
        rows.append(FeatureRow(name, what, trackers(r), (j, float(r[j])), r=r))
    return sorted(rows, key=lambda f: (not f.present, -abs(f.strongest[1])))


def analyse_text(
    params: rnn.Params, spec: rnn.Spec, vocab, text: str, layer: int = -1
) -> TextAnalysis:
    """Read ``text`` from the zero state and pick the units worth showing, of ``layer`` (default
    the top one, which the output layer reads): each feature's strongest tracker (one block per
    unit, listing every feature it is the strongest tracker of), then the most and least
    saturated units."""
    ids = vocab.encode(text, what="text")  # PrimeError (a UserError) for unknown characters
    every, activation = hidden_states(params, spec, ids[:, None])
    layer = layer % len(every)
    states = every[layer][:, 0]  # (N, H)
    H = states.shape[1]
    if activation in SATURATED:
        saturation = SATURATED[activation](states).mean(axis=0)  # (H,)
    else:  # h does not saturate
        saturation = np.zeros(H)
    table = feature_rows(text, states)
    tracks: dict[int, list[tuple[str, float]]] = {}
    for row in table:
        if row.units:
            unit, r = row.units[0]
            tracks.setdefault(unit, []).append((row.feature, r))
    units = [
        UnitView(j, "tracks " + ", ".join(f"“{f}” (r = {r:+.2f})" for f, r in claims), [], claims)
        for j, claims in tracks.items()
    ]  # in the table's order: the strongest tracker first
    order = np.argsort(-saturation, kind="stable")
    for j in order[:2]:
        units.append(UnitView(int(j), f"most saturated ({saturation[j]:.0%} of characters)"))
    for j in order[::-1][:2]:
        units.append(UnitView(int(j), f"least saturated ({saturation[j]:.0%} of characters)"))
    contexts = {j: top_contexts(text, states[:, j]) for j in range(H)}
    for u in units:
        u.contexts = contexts[u.unit]
    scale = 1.0 if activation in SATURATED else float(np.abs(states).max()) or 1.0
    best: dict[int, tuple[str, float]] = {}  # each unit's most correlated feature, if tracked
    for row in table:
        for unit in np.flatnonzero(np.abs(row.r) >= MIN_R) if row.r is not None else ():
            r = float(row.r[unit])
            if int(unit) not in best or abs(r) > abs(best[int(unit)][1]):
                best[int(unit)] = (row.feature, r)
    return TextAnalysis(
        text,
        states,
        activation,
        units,
        table,
        saturation,
        contexts,
        layer,
        len(every),
        scale,
        best,
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
