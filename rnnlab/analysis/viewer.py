"""The viewer's HTML: one self-contained page (inline CSS and a few lines of JS, no CDN).

Modelled on the pictures of Karpathy, Johnson & Fei-Fei's "Visualizing and Understanding
Recurrent Networks": a long passage (``DEFAULT_CHARS`` of the held-out text, from a paragraph's
start), each character's background the unit's state after reading it on a light diverging map
(blue below the middle, orange above), dark text over it, and the units chosen by what they track
(``rnnlab.analysis.units``: |r| ≥ ``MIN_R``, else "no unit tracks this"). The map's strongest
colours keep a contrast of ≥ 4.5:1 (WCAG AA) under the text (``TEXT_COLOUR``), so every character
stays legible; the legend is drawn with the same colours.

Every piece of text that came from a corpus, a run or a user goes through ``esc`` — the page
must show ``<script>`` from a text as characters, never run it.
"""

from __future__ import annotations

import html
import re

import numpy as np

from rnnlab.analysis.units import (
    MIN_R,
    AdderAnalysis,
    SequenceAnalysis,
    TextAnalysis,
    analyse_adder,
    analyse_sequences,
    analyse_text,
)
from rnnlab.engine import rnn

DEFAULT_CHARS = 2000  # characters of the held-out text a page shows when given none
TEXT_COLOUR = (17, 17, 17)  # the characters over the coloured backgrounds
WHITE = (255, 255, 255)
# the map's ends (ColorBrewer RdBu's light blue, and a light orange): relative luminance ≈ 0.36
# and 0.37, so #111 over them has a contrast of ≈ 7:1, and every blend toward white more
LOW, HIGH = (103, 169, 207), (239, 138, 98)
LEVELS = 40  # colour steps from −1 to +1 (the exact value is each character's tooltip)

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 72em; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
.text { font-family: ui-monospace, monospace; font-size: 15px; line-height: 1.6;
        color: #111; white-space: pre-wrap; word-break: break-word; border: 1px solid #ccc;
        padding: .6em; }
.unit { margin-bottom: 1.4em; }
.legend { font-family: ui-monospace, monospace; font-size: 14px; color: #111; }
.legend span { display: inline-block; min-width: 3.2em; text-align: center; padding: 2px 0; }
.none { color: #555; }
table { border-collapse: collapse; font-size: 13px; }
td, th { border: 1px solid #ddd; padding: 2px 6px; text-align: left; color: #111; }
td.ctx { font-family: ui-monospace, monospace; white-space: pre; }
.hit { background: #ffd54f; font-weight: bold; }
"""

SCRIPT = """
function show(v) {
  for (const el of document.querySelectorAll('.unit'))
    el.style.display = (v === 'all' || el.dataset.key === v) ? '' : 'none';
}
"""


def esc(s: str) -> str:
    return html.escape(s, quote=True)


def position(value: float, activation: str) -> float:
    """A state on the map's axis [-1, 1] (a sigmoid's (0, 1) stretched onto it)."""
    v = 2.0 * value - 1.0 if activation == "sigmoid" else value
    return float(np.clip(v, -1.0, 1.0))


def rgb(v: float) -> tuple[int, int, int]:
    """The map at v in [-1, 1]: white at 0, blended toward LOW or HIGH by |v|."""
    end = HIGH if v >= 0 else LOW
    return tuple(int(round(w + abs(v) * (e - w))) for w, e in zip(WHITE, end, strict=True))


def level(value: float, activation: str) -> int:
    """Which of the page's LEVELS + 1 colour classes (``.a0`` … ``.a40``) a state gets."""
    return int(round((position(value, activation) + 1.0) / 2.0 * LEVELS))


def level_colour(k: int) -> tuple[int, int, int]:
    return rgb(2.0 * k / LEVELS - 1.0)


def colour(value: float, activation: str) -> str:
    """Activation → background, on the page's map (as its class would draw it)."""
    return "rgb({},{},{})".format(*level_colour(level(value, activation)))


def colour_classes() -> str:
    return "\n".join(
        ".a{}{{background:rgb({},{},{})}}".format(k, *level_colour(k)) for k in range(LEVELS + 1)
    )


def shown_char(c: str) -> str:
    """A character as it appears in a coloured block (newlines visible and kept)."""
    if c == "\n":
        return "↵\n"
    if c == "\t":
        return "→"
    return esc(c)


def coloured(text: str, acts: np.ndarray, activation: str, scale: float = 1.0) -> str:
    """The text, each character on its activation's colour (``acts`` / ``scale``: an unbounded
    layer's values shown against its largest |h|)."""
    spans = (
        f'<span class="a{level(a / scale, activation)}" title="{a:+.3f}">{shown_char(c)}</span>'
        for c, a in zip(text, acts, strict=True)
    )
    return '<div class="text">' + "".join(spans) + "</div>"


def legend(
    activation: str, what: str = "state after reading the character", scale: float = 1.0
) -> str:
    """The map as labelled swatches, drawn with the page's own colours (an unbounded layer's
    labelled in its own units: ``scale`` its largest |h|)."""
    lo, hi = (0.0, 1.0) if activation == "sigmoid" else (-1.0, 1.0)
    values = np.linspace(lo, hi, 9)
    swatches = "".join(
        f'<span class="a{level(v, activation)}">{f"{v * scale:+.2g}".replace("-", "−")}</span>'
        for v in values
    )
    return f'<p class="legend">{esc(what)} ({esc(activation)}): {swatches}</p>'


def contexts_table(contexts) -> str:
    rows = "".join(
        f'<tr><td>{a:+.3f}</td><td class="ctx">{esc(before.replace(chr(10), "↵"))}'
        f'<span class="hit">{esc(c.replace(chr(10), "↵"))}</span></td></tr>'
        for before, c, a in contexts
    )
    head = "<tr><th>activation</th><th>context (the character is marked)</th></tr>"
    return f"<table>{head}{rows}</table>"


def page(title: str, body: str) -> str:
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{STYLE}{colour_classes()}</style><script>{SCRIPT}</script></head>\n<body>\n"
        f"<h1>{esc(title)}</h1>\n{body}\n</body></html>\n"
    )


def default_passage(text: str, chars: int = DEFAULT_CHARS) -> str:
    """About ``chars`` characters of ``text`` read as a passage: from the first paragraph that
    starts within its first ``chars`` characters (else the first sentence), to the end of the
    last sentence that fits."""
    start = text.find("\n\n", 0, chars)
    if start >= 0:
        start += 2
    else:
        found = re.search(r"[.!?][\"”]?\s+", text[:chars])
        start = found.end() if found else 0
    passage = text[start : start + chars]
    ends = [m.end() for m in re.finditer(r"[.!?][\"”]?(?=\s)", passage)]
    if ends and ends[-1] > chars // 2:
        passage = passage[: ends[-1]]
    return passage


def feature_table(x: TextAnalysis) -> str:
    """Every feature: the units that track it (|r| ≥ MIN_R, strongest first), or why none."""
    rows = []
    for f in x.feature_table:
        if not f.present:
            cell = '<span class="none">not in this text (the feature never changes)</span>'
        elif not f.units:
            unit, r = f.strongest
            cell = (f'<span class="none">no unit tracks this (the largest |r| is {abs(r):.2f}, '
                    f"unit {unit})</span>")  # fmt: skip
        else:
            cell = ", ".join(f"unit {u} (r = {r:+.2f})" for u, r in f.units)
        rows.append(f"<tr><td>{esc(f.feature)}</td><td>{esc(f.what)}</td><td>{cell}</td></tr>")
    return (
        "<table><tr><th>feature</th><th>what it is</th>"
        f"<th>units that track it (|r| ≥ {MIN_R})</th></tr>{''.join(rows)}</table>"
    )


def text_page(a: TextAnalysis | list[TextAnalysis], title: str) -> str:
    """Selector, feature table, one coloured block per chosen unit, every unit's top contexts;
    given one analysis per layer (top layer first), the same for each, the selector grouped by
    layer."""
    analyses = a if isinstance(a, list) else [a]
    many = len(analyses) > 1
    first = analyses[0]
    options = ['<option value="all">all units below</option>']
    for x in analyses:
        group = "".join(
            f'<option value="{x.layer}-{k}">unit {u.unit}: {esc(u.why)}</option>'
            for k, u in enumerate(x.units)
        )
        options.append(f'<optgroup label="layer {x.layer}">{group}</optgroup>' if many else group)
    layers = f"{first.layers} layers; " if many else ""
    parts = [
        f"<p>{len(first.text):,} characters read from the zero state; {layers}"
        f"{first.states.shape[1]} units per layer ({esc(first.activation)}). Each character is "
        "coloured by the unit's state after reading it. A unit is said to track a feature when "
        f"its state correlates with the feature with |r| ≥ {MIN_R}; the blocks below show the "
        "strongest tracker of each feature, then the most and least saturated units."
        + (" Layer numbers count from the input; the top layer feeds the output." if many else "")
        + "</p>",
        legend(first.activation, scale=first.scale),
        '<p><label>show <select onchange="show(this.value)">'
        + "".join(options)
        + "</select></label></p>",
    ]
    for x in analyses:
        at = f" (layer {x.layer})" if many else ""
        parts.append(f"<h2>What the units track{at}</h2>" + feature_table(x))
    for x in analyses:
        at = f"layer {x.layer}, " if many else ""
        for k, u in enumerate(x.units):
            parts.append(
                f'<div class="unit" data-key="{x.layer}-{k}"><h2>{at}unit {u.unit} — '
                f"{esc(u.why)}</h2>"
                + coloured(x.text, x.states[:, u.unit], x.activation, x.scale)
                + "<p>top-activating contexts:</p>"
                + contexts_table(u.contexts)
                + "</div>"
            )
    for x in analyses:
        bounded = x.activation in ("sigmoid", "tanh")  # an unbounded h never saturates
        rows = "".join(
            f"<tr><td>{j}</td><td>{f'{x.saturation[j]:.0%}' if bounded else '–'}</td>"
            f"<td>{tracked(x, j)}</td>"
            '<td class="ctx">'
            + " · ".join(
                f"{esc(b[-12:].replace(chr(10), '↵'))}"
                f'<span class="hit">{esc(c.replace(chr(10), "↵"))}</span>'
                for b, c, _ in ctx[:3]
            )
            + "</td></tr>"
            for j, ctx in sorted(x.contexts.items())
        )
        at = f" (layer {x.layer})" if many else ""
        parts.append(
            f"<h2>Every unit{at}: saturation, what it tracks most, top-activating contexts</h2>"
            "<table><tr><th>unit</th><th>saturated</th><th>tracks most</th>"
            f"<th>top 3 contexts</th></tr>{rows}</table>"
        )
    return page(title, "\n".join(parts))


def tracked(x: TextAnalysis, unit: int) -> str:
    if unit not in x.best_feature:
        return '<span class="none">–</span>'
    feature, r = x.best_feature[unit]
    return f"{esc(feature)} (r = {r:+.2f})"


def text_analyses(params: rnn.Params, spec: rnn.Spec, vocab, text: str) -> list:
    """One analysis per layer, the top layer first."""
    layers = spec.layers
    return [analyse_text(params, spec, vocab, text, k) for k in reversed(range(layers))]


def adder_page(a: AdderAnalysis, title: str) -> str:
    """Find the carry neuron: correlations with the true carry, then a few sums bit by bit."""
    order = np.argsort(-np.abs(a.carry_corr), kind="stable")
    corr_rows = "".join(
        f'<tr><td>{j}</td><td style="background:{colour(a.carry_corr[j], "tanh")}">'
        f"{a.carry_corr[j]:+.3f}</td></tr>"
        for j in order
    )
    parts = [
        f"<p>{a.bits}-bit sums, least significant bit first. The carry out of bit t is what the "
        "state after bit t must remember.</p>",
        legend("tanh", "r, and a unit's state (P(1) from 0 to 1 on the same colours)"),
        "<h2>Correlation of each unit with the true carry bit, strongest first</h2>"
        f"<table><tr><th>unit</th><th>r</th></tr>{corr_rows}</table>",
    ]
    for s in a.sums:
        verdict = "right" if s["pred"] == s["true"] else "wrong"
        rows = "".join(
            f"<tr><td>{r['bit']}</td><td>{r['a']}</td><td>{r['b']}</td><td>{r['carry']}</td>"
            f"<td>{r['true']}</td>"
            f'<td style="background:{colour(r["p"], "sigmoid")}">{r["p"]:.3f}</td>'
            f'<td style="background:{colour(r["unit"], "tanh")}">{r["unit"]:+.3f}</td></tr>'
            for r in s["rows"]
        )
        parts.append(
            f'<div class="unit"><h2>{s["a"]} + {s["b"]} = {s["true"]}; predicted {s["pred"]} '
            f"({verdict})</h2><table><tr><th>bit</th><th>a</th><th>b</th><th>carry out</th>"
            f"<th>true bit</th><th>P(1)</th><th>unit {s['unit']}</th></tr>{rows}</table></div>"
        )
    return page(title, "\n".join(parts))


SEQUENCES_SHOWN = 6  # held-out sequences a long-memory task's page reads and colours


def sequence_page(a: SequenceAnalysis, title: str, what: str) -> str:
    """The units most correlated with each feature a task names (the adding problem's analogue
    of the adder's carry neuron), each shown colouring a few sequences step by step, then every
    unit's correlations."""
    T, n, H = a.states.shape
    at = f", layer {a.layer} of {a.layers} (the top one feeds the output)" if a.layers > 1 else ""
    parts = [
        f"<p>{esc(what)} {n} held-out sequences of {T} steps read from the zero state; {H} units"
        f"{esc(at)}. Each step is drawn as one character and coloured by the unit's state after "
        "reading it.</p>",
        legend(a.activation, "state after reading the step"),
        "<h2>Units most correlated with what the task asks the state to hold</h2>"
        f"<table><tr><th>feature</th><th>unit that tracks it (|r| ≥ {MIN_R})</th></tr>"
        + "".join(
            f"<tr><td>{esc(f)}</td><td>unit {u} (r = {r:+.2f})</td></tr>"
            if abs(r) >= MIN_R
            else f'<tr><td>{esc(f)}</td><td><span class="none">no unit tracks this (the '
            f"largest |r| is {abs(r):.2f}, unit {u})</span></td></tr>"
            for f, u, r in a.feature_table
        )
        + "</table>",
    ]
    for feature, unit, r in a.feature_table:
        if abs(r) < MIN_R:  # no block claims a unit that does not track the feature
            continue
        blocks = "".join(coloured(a.text[i], a.states[:, i, unit], a.activation) for i in range(n))
        parts.append(
            f'<div class="unit"><h2>unit {unit} — tracks “{esc(feature)}” '
            f"(r = {r:+.2f})</h2>{blocks}</div>"
        )
    names = [f for f, _, _ in a.feature_table]
    order = np.argsort(-np.max(np.abs([a.correlations[f] for f in names]), axis=0), kind="stable")
    rows = "".join(
        f"<tr><td>{j}</td>"
        + "".join(
            f'<td style="background:{colour(a.correlations[f][j], "tanh")}">'
            f"{a.correlations[f][j]:+.2f}</td>"
            for f in names
        )
        + "</tr>"
        for j in order
    )
    parts.append(
        "<h2>Every unit: correlation with each feature</h2><table><tr><th>unit</th>"
        + "".join(f"<th>{esc(f)}</th>" for f in names)
        + f"</tr>{rows}</table>"
    )
    return page(title, "\n".join(parts))


def sequence_analysis(task, params: rnn.Params) -> SequenceAnalysis:
    """A long-memory task's analysis: its own features on its first held-out sequences."""
    xs, features, text = task.unit_features(SEQUENCES_SHOWN)
    return analyse_sequences(params, task.spec, xs, features, text)


# --- the page a run logs ----------------------------------------------------------------------


def page_for_run(task, params: rnn.Params, title: str = "rnnlab inspect") -> str:
    """The page logged at the end of a run: a passage of its held-out text (char-RNN),
    evaluation sums (adder), or held-out sequences (the tasks that name their own features:
    ``unit_features``)."""
    if hasattr(task, "vocab"):
        text = default_passage(task.vocab.decode(task.val_data[: 2 * DEFAULT_CHARS]))
        return text_page(text_analyses(params, task.spec, task.vocab, text), title)
    if hasattr(task, "unit_features"):
        what = f"Task {task.name}:"
        return sequence_page(sequence_analysis(task, params), title, what)
    rng = np.random.default_rng(0)
    pick = rng.permutation(task.eval_a.size)[:4096]
    analysis = analyse_adder(params, task.spec, task.bits, task.eval_a[pick], task.eval_b[pick])
    return adder_page(analysis, title)


def log_run_page(task, params: rnn.Params, tracker) -> None:
    """At the end of a run: this page as the artifact ``inspect/index.html``, for every cell."""
    tracker.log_text(page_for_run(task, params), "inspect/index.html")
