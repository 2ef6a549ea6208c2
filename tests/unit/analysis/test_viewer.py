"""The hidden-state viewer: the page a run logs, the CLI, escaping, and a real headless Chromium."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers.processes import ROOT, run_cli
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from rnnlab.analysis import units
from rnnlab.config import Config
from rnnlab.engine import rnn
from rnnlab.inference.weights import load_weights
from rnnlab.sweeps.compose import register_configs, to_config
from rnnlab.training.loop import train
from rnnlab.training.tracker import MemoryTracker

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HOSTILE = '<img src=x onerror="alert(1)"> <script>alert("x")</script> & "quoted" '


def compose_config(overrides: list[str]) -> Config:
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return to_config(compose(config_name="config", overrides=overrides))


def hostile_corpus(tmp: Path, kafka_path: Path) -> Path:
    """30,000 characters of Kafka with the hostile line three times in the held-out end."""
    text = kafka_path.read_text(encoding="utf-8")[:30000]
    corpus = tmp / "corpus.txt"
    corpus.write_text(text[:28000] + ("\n" + HOSTILE) * 3 + text[28000:], encoding="utf-8")
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


def test_run_logs_a_self_contained_escaped_page(char_run):
    tracker, _ = char_run
    page = tracker.texts["inspect/index.html"]
    block = page.split('<div class="text">')[1].split("</div>")[0]
    shown = "".join(re.findall(r'<span style="[^"]*" title="[^"]*">(.*?)</span>', block, re.S))
    assert HOSTILE.strip() in html.unescape(shown).replace("↵", "")  # every character, in order
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in shown
    # no tag from the text survives unescaped; the page's own single script is the selector
    assert "<img" not in page
    assert page.count("<script>") == 1 and 'alert("x")' not in page
    assert "http://" not in page and "https://" not in page  # nothing fetched: works offline
    assert page.count('class="unit"') == 10  # 6 features + 2 most + 2 least saturated
    assert "most correlated with “after a space”" in page


def test_features_and_correlations_are_direct_counts():
    text = 'He said "Yes." Then\nshe'
    f = units.text_features(text)
    assert f["inside quotes"].tolist() == [c for c in [0] * 8 + [1] * 5 + [0] * 10]
    assert f["position in line"][text.index("\n")] == 0 and f["position in line"][-1] == 3
    assert f["after a full stop"].sum() == 1 and f["capital letter"].sum() == 3
    rng = np.random.default_rng(0)
    v, s = rng.standard_normal(50), rng.standard_normal((50, 4))
    r = units.correlations(v, s)
    np.testing.assert_allclose(r, [np.corrcoef(v, s[:, j])[0, 1] for j in range(4)], rtol=1e-12)
    assert units.correlations(np.ones(50), s).tolist() == [0.0] * 4


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
    _, tmp = char_run
    ckpt = next((tmp / "out" / "checkpoints").glob("iter_*.npz"))
    out = tmp / "page.html"
    r = run_cli(
        [f"checkpoint={ckpt}", 'text=He said "<b>no</b>".', f"out={out}"], tmp, "rnnlab.inspect"
    )
    assert r.returncode == 0, r.stderr
    page = out.read_text(encoding="utf-8")
    assert "<b>" not in page and "&lt;" in page
    for args, message in [
        ([f"checkpoint={ckpt}", "text=\u2603\u2603"], "not in the vocabulary"),
        ([f"checkpoint={ckpt}"], 'needs text="…"'),
        ([f"checkpoint={ckpt}", "colour=red"], "colour is not a key of rnnlab.inspect"),
        ([f"checkpoint={tmp / 'missing.npz'}", "text=ab"], "missing.npz"),
    ]:
        r = run_cli(args, tmp, "rnnlab.inspect")
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr


def coloured_pixels(png: Path) -> tuple[int, int]:
    """(reddish, bluish) pixel counts of a screenshot."""
    from PIL import Image

    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return int(((r - g > 60) & (r - b > 60)).sum()), int(((b - r > 60) & (b - g > 60)).sum())


def screenshot(html_file: Path, png: Path, profile: Path) -> None:
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--user-data-dir={profile}", "--window-size=1200,1400", f"--screenshot={png}",
         html_file.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip


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
    assert (
        page.count('<div class="unit" data-key="1-')
        == page.count('<div class="unit" data-key="0-')
        > 0
    )
    block = page.split('<div class="text">')[1].split("</div>")[0]
    shown = "".join(re.findall(r'<span style="[^"]*" title="[^"]*">(.*?)</span>', block, re.S))
    assert HOSTILE.strip() in html.unescape(shown).replace("↵", "")
    assert "<img" not in page and page.count("<script>") == 1


@pytest.mark.slow
@pytest.mark.parametrize("run", ["char_run", "lstm_run"])
def test_page_shows_coloured_text_in_headless_chromium(run, tmp_path, request):
    if CHROMIUM is None:
        if os.environ.get("RNNLAB_REQUIRE_BROWSER"):
            pytest.fail("chromium not found (RNNLAB_REQUIRE_BROWSER is set)")
        pytest.skip("chromium not installed (apt-get install chromium)")
    tracker, _ = request.getfixturevalue(run)
    page = tracker.texts["inspect/index.html"]
    # the control: the same page with the characters' colours taken away
    plain = page.replace('<span style="background:rgb(', '<span data-off="rgb(')
    counts = {}
    for name, content in (("page", page), ("plain", plain)):
        f = tmp_path / f"{name}.html"
        f.write_text(content, encoding="utf-8")
        screenshot(f, tmp_path / f"{name}.png", tmp_path / f"profile-{name}")
        counts[name] = coloured_pixels(tmp_path / f"{name}.png")
    print("reddish, bluish pixels:", counts)
    red, blue = counts["page"]
    assert red > 5000 and blue > 5000  # two colours, over whole lines of text
    assert sum(counts["plain"]) < 2000  # without the characters' colours: the legend only
    # the escaped tags really are shown as text, not parsed (the page's DOM has no <img>)
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile-dom'}", "--dump-dom",
         (tmp_path / "page.html").as_uri()],
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    assert "<img" not in dom and "onerror" in dom
