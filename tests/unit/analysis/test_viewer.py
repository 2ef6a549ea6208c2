"""The hidden-state viewer: the page a run logs, the CLI, escaping, and a real headless Chromium."""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import browser
from helpers.processes import ROOT, run_cli
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from rnnlab.analysis import units, viewer
from rnnlab.config import Config
from rnnlab.engine import rnn
from rnnlab.inference.weights import load_weights
from rnnlab.sweeps.compose import register_configs, to_config
from rnnlab.training.loop import train
from rnnlab.training.tracker import MemoryTracker

HOSTILE = '<img src=x onerror="alert(1)"> <script>alert("x")</script> & "quoted" '


def compose_config(overrides: list[str]) -> Config:
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return to_config(compose(config_name="config", overrides=overrides))


def hostile_corpus(tmp: Path, kafka_path: Path) -> Path:
    """30,000 characters of Kafka with the hostile line three times in the held-out end, at the
    start of the paragraph the viewer's passage starts with."""
    text = kafka_path.read_text(encoding="utf-8")[:30000]
    corpus = tmp / "corpus.txt"
    cut = text.index("\n\n", 28000) + 2
    corpus.write_text(text[:cut] + (HOSTILE + "\n") * 3 + text[cut:], encoding="utf-8")
    return corpus


@pytest.fixture(scope="module")
def char_run(tmp_path_factory, kafka_path):
    """A short char-RNN run on Kafka with a hostile line in its held-out text."""
    tmp = tmp_path_factory.mktemp("inspect")
    corpus = hostile_corpus(tmp, kafka_path)
    cfg = compose_config(
        [
            f"data.path={corpus}",
            "data.strip_gutenberg=false",
            "iterations=600",
            "hidden_size=32",
            "eval_every=300",
            "sample_every=600",
            "checkpoint_every=600",
            "tracking.enabled=false",
        ]
    )
    tracker = MemoryTracker()
    train(cfg, tracker, out_dir=tmp / "out", show_progress=False)
    return tracker, tmp


SPAN = r'<span class="a\d+" title="[^"]*">(.*?)</span>'  # one coloured character


def test_run_logs_a_self_contained_escaped_page(char_run):
    tracker, _ = char_run
    page = tracker.texts["inspect/index.html"]
    block = page.split('<div class="text">')[1].split("</div>")[0]
    shown = "".join(re.findall(SPAN, block, re.S))
    assert HOSTILE.strip() in html.unescape(shown).replace("↵", "")  # every character, in order
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in shown
    # no tag from the text survives unescaped; the page's own single script is the selector
    assert "<img" not in page
    assert page.count("<script>") == 1 and 'alert("x")' not in page
    assert "http://" not in page and "https://" not in page  # nothing fetched: works offline
    # a passage of the held-out text, from a paragraph's start, about DEFAULT_CHARS long
    text = html.unescape(shown).replace("↵", "")
    assert viewer.DEFAULT_CHARS // 2 <= len(text) <= viewer.DEFAULT_CHARS
    assert f"<p>{len(text):,} characters read from the zero state" in page
    # a block per unit that tracks a feature, then 2 most and 2 least saturated
    claims = re.findall(
        r'<div class="unit" data-key="[^"]*"><h2>unit \d+ — tracks (.*?)</h2>', page
    )
    assert page.count('class="unit"') == len(claims) + 4
    for claim in claims:
        for r in re.findall(r"\(r = ([+-][0-9.]+)\)", claim):
            assert abs(float(r)) >= units.MIN_R, claim


def test_features_and_correlations_are_direct_counts():
    text = 'He said "Yes." Then\nshe (a cat) ran'
    f = units.text_features(text)
    assert f["inside quotes"].tolist() == [0] * 8 + [1] * 5 + [0] * (len(text) - 13)
    assert f["position in line"][text.index("\n")] == 0 and f["position in line"][-1] == 15
    assert f["end of a sentence"].sum() == 1 and f["capital letter"].sum() == 3
    assert f["inside brackets"][text.index("(")] == 1 and f["inside brackets"][-1] == 0
    assert f["inside brackets"].sum() == len("(a cat")
    assert f["position in word"][: text.index(" ")].tolist() == [1, 2]
    words = f["words into the sentence"]
    assert words[text.index("said")] == 2 and words[text.index("Then")] == 1
    rng = np.random.default_rng(0)
    v, s = rng.standard_normal(50), rng.standard_normal((50, 4))
    r = units.correlations(v, s)
    np.testing.assert_allclose(r, [np.corrcoef(v, s[:, j])[0, 1] for j in range(4)], rtol=1e-12)
    assert units.correlations(np.ones(50), s).tolist() == [0.0] * 4


def test_only_units_with_r_of_at_least_a_tenth_are_said_to_track_a_feature():
    """A unit made of the feature plus noise tracks it; one whose |r| is under MIN_R is named
    only as "no unit tracks this"; a feature the text never varies is "not in this text"."""
    text = "a b c d e f g h i j k l m n o p " * 20  # spaces every other character, no quotes
    space = (np.array(list(text)) == " ").astype(float)
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((len(text), 3))
    states = np.stack([space + 0.3 * noise[:, 0], noise[:, 1], noise[:, 2]], axis=1)
    rows = {row.feature: row for row in units.feature_rows(text, states)}
    assert rows["after a space"].units[0][0] == 0 and rows["after a space"].units[0][1] > 0.8
    assert all(abs(r) >= units.MIN_R for row in rows.values() for _, r in row.units)
    assert not rows["inside quotes"].present and rows["inside quotes"].units == []
    weak = states.copy()
    weak[:, 0] = noise[:, 0] + 0.05 * space  # |r| ≈ 0.03: nothing tracks spaces
    row = next(r for r in units.feature_rows(text, weak) if r.feature == "after a space")
    assert row.units == [] and abs(row.strongest[1]) < units.MIN_R
    assert units.trackers(np.array([0.05, -0.5, 0.2, 0.09])) == [(1, -0.5), (2, 0.2)]


def test_the_default_passage_starts_a_paragraph_and_ends_a_sentence():
    text = "ing the end of a line. Then more.\n\nA new paragraph. " + "Words go on. " * 300
    passage = viewer.default_passage(text, 1000)
    assert passage.startswith("A new paragraph.") and passage.endswith(".")
    assert 500 < len(passage) <= 1000
    assert viewer.default_passage("no sentence ends here", 10) == "no sentence ends here"[:10]


def test_every_colour_of_the_map_keeps_dark_text_legible():
    """WCAG AA (4.5:1) for the page's text colour over each of its background colours."""
    worst = min(contrast(viewer.TEXT_COLOUR, viewer.level_colour(k))
                for k in range(viewer.LEVELS + 1))  # fmt: skip
    print(f"lowest contrast over the map: {worst:.2f}:1")
    assert worst >= 4.5
    assert viewer.level(-1.0, "tanh") == 0 and viewer.level(1.0, "tanh") == viewer.LEVELS
    assert viewer.level(0.5, "sigmoid") == viewer.LEVELS // 2 and viewer.rgb(0.0) == (255,) * 3


def luminance(rgb) -> float:
    """WCAG 2's relative luminance of an sRGB colour (0-255 channels)."""
    lin = [c / 255 / 12.92 if c / 255 <= 0.04045 else ((c / 255 + 0.055) / 1.055) ** 2.4
           for c in rgb[:3]]  # fmt: skip
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a, b) -> float:
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def test_adder_page_finds_the_carry_neuron(tmp_path):
    cfg = compose_config(["task=adder", "iterations=6000", "eval_every=2000", "diag_every=6000"])
    tracker = MemoryTracker()
    train(cfg, tracker, out_dir=tmp_path, show_progress=False)
    assert tracker.history["val/exact_acc"][-1][1] == 1.0
    page = tracker.texts["inspect/index.html"]
    assert "Correlation of each unit with the true carry bit" in page
    assert page.count('class="unit"') == 6 and "(right)" in page
    w = load_weights(next((tmp_path / "checkpoints").glob("iter_0006000.npz")))
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 128, (2, 2000))
    analysis = units.analyse_adder(w.params, rnn.spec_of(w.cfg), 8, a, b)
    best = float(np.abs(analysis.carry_corr).max())
    print(f"carry neuron: |r| = {best:.3f}")
    assert best > 0.8  # a unit that learned to hold the carry
    carry = units.carries(np.array([3, 1]), np.array([1, 1]), 4)
    assert carry[:, 0].tolist() == [1, 1, 0, 0] and carry[:, 1].tolist() == [1, 0, 0, 0]


def test_cli_writes_the_page_and_refuses_bad_input(char_run):
    tracker, tmp = char_run
    ckpt = next((tmp / "out" / "checkpoints").glob("iter_*.npz"))
    out = tmp / "page.html"
    r = run_cli(
        [f"checkpoint={ckpt}", 'text=He said "<b>no</b>".', f"out={out}"], tmp, "rnnlab.inspect"
    )
    assert r.returncode == 0, r.stderr
    page = out.read_text(encoding="utf-8")
    assert "<b>" not in page and "&lt;" in page
    # no text: the passage of the run's held-out text its own page shows
    r = run_cli([f"checkpoint={ckpt}", f"out={out}"], tmp, "rnnlab.inspect")
    assert r.returncode == 0, r.stderr

    def passage(page: str) -> str:
        block = page.split('<div class="text">')[1].split("</div>")[0]
        return html.unescape("".join(re.findall(SPAN, block, re.S)))

    shown = passage(out.read_text(encoding="utf-8"))
    assert shown == passage(tracker.texts["inspect/index.html"]) and shown.startswith(HOSTILE)
    corpus = tmp / "corpus.txt"
    corpus.rename(tmp / "elsewhere.txt")  # the run's corpus gone: say so, ask for a text
    try:
        r = run_cli([f"checkpoint={ckpt}"], tmp, "rnnlab.inspect")
    finally:
        (tmp / "elsewhere.txt").rename(corpus)
    assert r.returncode == 2 and "give text= or path=" in r.stderr, r.stderr
    for args, message in [
        ([f"checkpoint={ckpt}", "text=\u2603\u2603"], "not in the vocabulary"),
        ([f"checkpoint={ckpt}", "colour=red"], "colour is not a key of rnnlab.inspect"),
        ([f"checkpoint={tmp / 'missing.npz'}", "text=ab"], "missing.npz"),
    ]:
        r = run_cli(args, tmp, "rnnlab.inspect")
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory, kafka_path):
    """A short two-layer LSTM char-RNN run on Kafka with the same hostile held-out line."""
    tmp = tmp_path_factory.mktemp("inspect-lstm")
    corpus = hostile_corpus(tmp, kafka_path)
    cfg = compose_config(
        [f"data.path={corpus}", "data.strip_gutenberg=false", "cell=lstm", "layers=2",
         "iterations=300", "hidden_size=24", "eval_every=300", "sample_every=300",
         "checkpoint_every=300", "tracking.enabled=false"]
    )  # fmt: skip
    tracker = MemoryTracker()
    train(cfg, tracker, out_dir=tmp / "out", show_progress=False)
    return tracker, tmp


def test_an_lstm_run_logs_a_page_per_layer(lstm_run):
    tracker, _ = lstm_run
    page = tracker.texts["inspect/index.html"]
    assert "2 layers" in page and page.index('<optgroup label="layer 1">') < page.index(
        '<optgroup label="layer 0">'
    )  # the top layer first
    # each layer: its trackers, then its 2 most and 2 least saturated units
    assert page.count('<div class="unit" data-key="1-') >= 4
    assert page.count('<div class="unit" data-key="0-') >= 4
    block = page.split('<div class="text">')[1].split("</div>")[0]
    shown = "".join(re.findall(SPAN, block, re.S))
    assert HOSTILE.strip() in html.unescape(shown).replace("↵", "")
    assert "<img" not in page and page.count("<script>") == 1


@pytest.mark.slow
@pytest.mark.skipif(not browser.available(), reason="chromium is not installed")
@pytest.mark.parametrize("run", ["char_run", "lstm_run"])
def test_every_coloured_character_is_legible_and_every_claim_holds_in_chromium(
    run, tmp_path, request
):
    """The logged page in a real headless Chromium: every coloured character (and legend
    swatch and table cell) has a text contrast of at least 4.5:1 (WCAG AA), no unit with
    |r| < 0.1 is said to track a feature, and the text's tags are shown, never parsed."""
    tracker, _ = request.getfixturevalue(run)
    page = tracker.texts["inspect/index.html"]
    f = tmp_path / "page.html"
    f.write_text(page, encoding="utf-8")
    out = Path(os.environ.get("RNNLAB_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    b = browser.Browser(1300, 1000)
    try:
        b.open(f.as_uri())
        b.wait_for("document.readyState === 'complete'")
        measured = b.eval(browser.CONTRAST_JS)
        claims = b.eval(browser.CLAIMS_JS)
        images = b.eval("document.querySelectorAll('img').length")
        shown = b.eval("document.querySelector('.text').innerText")
        b.screenshot(out / f"viewer_{run}.png")
    finally:
        b.close()
    print(f"{measured['n']} coloured elements, lowest contrast {measured['worst']:.2f}:1 "
          f"({measured['example']}); r of every claim: {claims}")  # fmt: skip
    characters = sum(len(x) for x in re.findall(r'<div class="text">(.*?)</div>', page, re.S))
    assert measured["n"] >= page.count('<span class="a') > 0 and characters
    assert measured["worst"] >= 4.5
    assert claims and all(abs(r) >= units.MIN_R for r in claims), claims
    assert images == 0 and HOSTILE.strip() in shown.replace("↵", "")  # shown as text
