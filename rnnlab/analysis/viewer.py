"""The viewer's HTML: one self-contained page (inline CSS and a few lines of JS, no CDN).

Every piece of text that came from a corpus, a run or a user goes through ``esc`` — the page
must show ``<script>`` from a text as characters, never run it.
"""

from __future__ import annotations

import html

import numpy as np

from rnnlab.analysis.units import (
    AdderAnalysis,
    SequenceAnalysis,
    TextAnalysis,
    analyse_adder,
    analyse_sequences,
    analyse_text,
)
from rnnlab.engine import rnn

DEFAULT_CHARS = 2000  # characters of the held-out text shown at the end of a run

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 70em; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
.text { font-family: ui-monospace, monospace; font-size: 15px; line-height: 1.5;
        white-space: pre-wrap; word-break: break-all; border: 1px solid #ccc; padding: .6em; }
.unit { margin-bottom: 1.4em; }
.legend span { padding: 0 .5em; font-family: monospace; }
table { border-collapse: collapse; font-size: 13px; }
td, th { border: 1px solid #ddd; padding: 2px 6px; text-align: left; }
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


def colour(value: float, activation: str) -> str:
    """Activation → background: blue for low, white at the middle, red for high."""
    v = 2.0 * value - 1.0 if activation == "sigmoid" else value  # onto [-1, 1]
    v = float(np.clip(v, -1.0, 1.0))
    fade = int(round(255 * (1.0 - abs(v))))
    return f"rgb(255,{fade},{fade})" if v >= 0 else f"rgb({fade},{fade},255)"


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
        f'<span style="background:{colour(a / scale, activation)}" title="{a:+.3f}">'
        f"{shown_char(c)}</span>"
        for c, a in zip(text, acts, strict=True)
    )
    return '<div class="text">' + "".join(spans) + "</div>"


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
        f"<style>{STYLE}</style><script>{SCRIPT}</script></head>\n<body>\n<h1>{esc(title)}</h1>\n"
        f"{body}\n</body></html>\n"
    )


def text_page(a: TextAnalysis | list[TextAnalysis], title: str) -> str:
    """Selector, feature table, one coloured block per chosen unit, every unit's top contexts;
    given one analysis per layer (top layer first), the same for each, the selector grouped by
    layer."""
    analyses = a if isinstance(a, list) else [a]
    many = len(analyses) > 1
    first = analyses[0]
    lo, hi = ("0", "1") if first.activation == "sigmoid" else ("−1", "+1")
    if first.activation not in ("sigmoid", "tanh"):  # unbounded: each layer's own largest |h|
        lo, hi = "−max |h|", "+max |h|"
    options = ['<option value="all">all units below</option>']
    for x in analyses:
        group = "".join(
            f'<option value="{x.layer}-{k}">unit {u.unit}: {esc(u.why)}</option>'
            for k, u in enumerate(x.units)
        )
        options.append(f'<optgroup label="layer {x.layer}">{group}</optgroup>' if many else group)
    layers = f"{first.layers} layers; " if many else ""
    parts = [
        f"<p>{len(first.text)} characters read from the zero state; {layers}"
        f"{first.states.shape[1]} units per layer ({esc(first.activation)}). Each character is "
        "coloured by the unit's state after reading it."
        + (" Layer numbers count from the input; the top layer feeds the output." if many else "")
        + "</p>",
        f'<p class="legend">colour: <span style="background:{colour(-1, "tanh")}">{lo}</span>'
        f'<span style="background:#fff">middle</span>'
        f'<span style="background:{colour(1, "tanh")}">{hi}</span></p>',
        '<p><label>show <select onchange="show(this.value)">'
        + "".join(options)
        + "</select></label></p>",
    ]
    for x in analyses:
        at = f" (layer {x.layer})" if many else ""
        parts.append(
            f"<h2>Units most correlated with simple features{at}</h2><table><tr><th>feature</th>"
            "<th>unit</th><th>r</th></tr>"
            + "".join(
                f"<tr><td>{esc(f)}</td><td>{u}</td><td>{r:+.3f}</td></tr>"
                for f, u, r in x.feature_table
            )
            + "</table>"
        )
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
            f"<h2>Every unit{at}: saturation and top-activating contexts</h2>"
            f"<table><tr><th>unit</th><th>saturated</th><th>top 3 contexts</th></tr>{rows}</table>"
        )
    return page(title, "\n".join(parts))


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
        "<h2>Correlation of each unit with the true carry bit</h2>"
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
    lo, hi = ("0", "1") if a.activation == "sigmoid" else ("−1", "+1")
    T, n, H = a.states.shape
    at = f", layer {a.layer} of {a.layers} (the top one feeds the output)" if a.layers > 1 else ""
    parts = [
        f"<p>{esc(what)} {n} held-out sequences of {T} steps read from the zero state; {H} units"
        f"{esc(at)}. Each step is drawn as one character and coloured by the unit's state after "
        "reading it.</p>",
        f'<p class="legend">colour: <span style="background:{colour(-1, "tanh")}">{lo}</span>'
        f'<span style="background:#fff">middle</span>'
        f'<span style="background:{colour(1, "tanh")}">{hi}</span></p>',
        "<h2>Units most correlated with what the task asks the state to hold</h2>"
        "<table><tr><th>feature</th><th>unit</th><th>r</th></tr>"
        + "".join(
            f"<tr><td>{esc(f)}</td><td>{u}</td><td>{r:+.3f}</td></tr>"
            for f, u, r in a.feature_table
        )
        + "</table>",
    ]
    for feature, unit, r in a.feature_table:
        blocks = "".join(coloured(a.text[i], a.states[:, i, unit], a.activation) for i in range(n))
        parts.append(
            f'<div class="unit"><h2>unit {unit} — most correlated with “{esc(feature)}” '
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
    """The page logged at the end of a run: held-out text (char-RNN), evaluation sums (adder),
    or held-out sequences (the tasks that name their own features: ``unit_features``)."""
    if hasattr(task, "vocab"):
        text = task.vocab.decode(task.val_data[:DEFAULT_CHARS])
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
