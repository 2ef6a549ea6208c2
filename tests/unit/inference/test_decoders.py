"""Decoders: top-k, nucleus, greedy and beam search, against each other and the seed's sampler.

The network is a small char-RNN trained briefly on kafka (peaked enough that beam search has
something to find); every decoder goes through ``decode.engine_step``, as training-time samples,
``rnnlab.sample`` and the served model do, so the same seed gives the same text in all three.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rnnlab import cli, sample
from rnnlab.bench.references import seed_sample
from rnnlab.config import Config
from rnnlab.engine import decode, rnn
from rnnlab.errors import UserError
from rnnlab.inference.generate import generate_text
from rnnlab.inference.weights import load_weights
from rnnlab.tasks import check
from rnnlab.tracking.pyfunc import CharRNNModel
from rnnlab.training import checkpoint
from rnnlab.training.loop import Trainer, train


@pytest.fixture(scope="module")
def trained(kafka_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("decode")
    cfg = Config()
    cfg.data.path, cfg.data.val_fraction = str(kafka_path), 0.01
    cfg.hidden_size, cfg.seq_length, cfg.iterations = 32, 16, 300
    cfg.eval_every = cfg.sample_every = cfg.checkpoint_every = 300
    cfg.tracking.enabled, cfg.eval_burn_in = False, 100
    check(cfg)
    train(cfg, None, out, show_progress=False)
    path = checkpoint.latest(out / "checkpoints")
    return load_weights(path), path, cfg


def step_of(w):
    return decode.engine_step(w.params, rnn.spec_of(w.cfg))


def first_state(w, prime: str):
    ids = w.vocab.encode(prime)
    state = rnn.zero_state(rnn.spec_of(w.cfg), 1, w.params["Why"].dtype)
    for x in ids[:-1]:
        _, state = step_of(w)(state, np.array([x]))
    return state, int(ids[-1])


def test_plain_and_top_p_1_equal_the_seed_sampler(trained):
    w, _, _ = trained
    state, first = first_state(w, "Gregor")
    spec = rnn.spec_of(w.cfg)
    seed_way = seed_sample(w.params, spec, state, first, 80, 0.9, np.random.default_rng(3))
    for opts in (decode.Options(0.9), decode.Options(0.9, top_p=1.0), decode.Options(0.9, 0)):
        got = decode.sample(step_of(w), state, first, 80, opts, np.random.default_rng(3))
        assert got == seed_way


def test_top_k_1_and_beam_1_equal_greedy(trained):
    w, _, _ = trained
    for prime in ("One morning", "Gregor", "the ", "a"):
        state, first = first_state(w, prime)
        greedy = decode.sample(step_of(w), state, first, 60, decode.Options(greedy=True), None)
        top1 = decode.sample(step_of(w), state, first, 60, decode.Options(top_k=1),
                             np.random.default_rng(0))  # fmt: skip
        beam1, _ = decode.beam_search(step_of(w), state, first, 60, 1)
        assert top1 == greedy == beam1
        assert len(set(greedy)) > 1  # not a degenerate constant


def test_top_k_and_top_p_only_draw_from_their_sets(trained):
    w, _, _ = trained
    state, first = first_state(w, "Gregor")
    logits, _ = step_of(w)(state, np.array([first]))
    p = rnn.softmax(logits[0].astype(np.float64))
    order = np.argsort(-p, kind="stable")
    k = decode.distribution(logits[0], decode.Options(top_k=3))
    assert set(np.flatnonzero(k)) == set(order[:3]) and k.sum() == pytest.approx(1.0)
    nucleus = decode.distribution(logits[0], decode.Options(top_p=0.5))
    kept = np.flatnonzero(nucleus)
    n = len(kept)
    assert set(kept) == set(order[:n])
    assert p[order[: n - 1]].sum() < 0.5 <= p[order[:n]].sum()  # the smallest such set


def log_likelihood(step, state, first: int, ids: list[int]) -> float:
    """log P(ids | first, state) in nats, one engine step at a time."""
    total, x = 0.0, first
    for y in ids:
        logits, state = step(state, np.array([x]))
        total += float(decode.log_softmax(logits[0])[y])
        x = y
    return total


def test_beam_search_is_at_least_as_likely_as_greedy_on_95_of_100_primes(trained, kafka_path):
    w, _, _ = trained
    text = kafka_path.read_text(encoding="utf-8")
    rng = np.random.default_rng(11)
    starts = rng.integers(0, len(text) - 20, 100)
    wins = 0
    for s in starts:
        prime = "".join(c for c in text[s : s + 12] if c in w.vocab.index) or "a"
        state, first = first_state(w, prime)
        greedy = decode.sample(step_of(w), state, first, 20, decode.Options(greedy=True), None)
        beam, score = decode.beam_search(step_of(w), state, first, 20, 4)
        ll_greedy = log_likelihood(step_of(w), state, first, greedy)
        assert log_likelihood(step_of(w), state, first, beam) == pytest.approx(score)
        wins += score >= ll_greedy - 1e-9
    print(f"beam ≥ greedy on {wins} of 100 primes")
    assert wins >= 95


def test_same_seed_same_text_everywhere(trained, tmp_path):
    """Training-time samples (CharTask.generate), rnnlab.sample and the served model agree."""
    w, path, cfg = trained
    task = Trainer(cfg).task
    served = CharRNNModel()
    served.weights = w
    for opts in ({"top_k": 5}, {"top_p": 0.8}, {"greedy": True}, {"beam": 3}, {}):
        full = {"top_k": 0, "top_p": 1.0, "greedy": False, "beam": 0} | opts
        task.decoding = decode.Options(0.8, **full)
        in_training = task.generate(w.params, np.random.default_rng(7), "Gregor", 40, 0.8)
        api = generate_text(w, "Gregor", 40, 0.8, np.random.default_rng(7), **full)
        cli_args = [f"{k}={str(v).lower()}" for k, v in opts.items()]
        argv = [f"checkpoint={path}", "prime=Gregor", "length=40", "temperature=0.8", "seed=7"]
        command = cli.call(sample.COMMAND, sample.run, [*argv, *cli_args])
        row = {"prime": "Gregor", "length": 40, "temperature": 0.8, "seed": 7, **opts}
        model = served.predict(None, pd.DataFrame([row]))["text"][0]
        assert in_training == api == command == model, opts


@pytest.mark.parametrize(
    "args,message",
    [(["beam=2", "greedy=true"], "beam=2"), (["top_p=0"], "top_p=0.0"), (["top_k=-1"], "top_k"),
     (["greedy=maybe"], "greedy='maybe'"), (["greedy=true", "top_k=3"], "greedy=true")],
)  # fmt: skip
def test_bad_decoding_options_are_one_line(trained, args, message):
    _, path, _ = trained
    with pytest.raises(UserError, match=message):
        cli.call(sample.COMMAND, sample.run, [f"checkpoint={path}", *args])


def test_beam_reorders_stacked_states():
    """A state whose batch axis is second to last, as (L, S, B, H) for stacked cells."""
    V, H = 5, 3
    rng = np.random.default_rng(0)
    W = rng.standard_normal((V, H))
    E = rng.standard_normal((V, H))

    def step(state, symbols):  # state (2, 1, B, H): a toy two-layer recurrence
        h = np.tanh(state + E[symbols][None, None])
        return h[-1, 0] @ W.T, h

    beam, score = decode.beam_search(step, np.zeros((2, 1, 1, H)), 0, 6, 3)
    assert len(beam) == 6
    assert log_likelihood(step, np.zeros((2, 1, 1, H)), 0, beam) == pytest.approx(score)


def test_prime_reading_matches_the_engine(trained):
    """Reading a prime step by step gives the state one forward call over it gives: bit for
    bit through the numpy cells (what a decoder's steps run), to float rounding through the
    compiled kernels (what a whole window runs)."""
    w, _, _ = trained
    ids = w.vocab.encode("One morning, as Gregor")
    by_step, _ = first_state(w, "One morning, as Gregor")
    spec = rnn.spec_of(w.cfg)
    h0 = rnn.zero_state(spec, 1, w.params["Why"].dtype)
    whole = rnn.forward(w.params, ids[:-1, None], h0, spec, reference=True).state  # (L, S, 1, H)
    np.testing.assert_array_equal(by_step, whole)
    kernels = rnn.forward(w.params, ids[:-1, None], h0, spec).state
    np.testing.assert_allclose(kernels, whole, rtol=0, atol=1e-12)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
@pytest.mark.parametrize("batch", [1, 3])  # a sample, a beam
def test_the_decoders_step_gives_rnn_steps_bits(activation, batch):
    """``decode.engine_step`` for one vanilla layer (what every char-RNN sample goes through)
    makes its shared arrays once: each step's logits and state are still rnn.step's, bit for
    bit, over 200 steps fed back their own likeliest symbols; another network is rnn.step."""
    rng = np.random.default_rng(3)
    spec = rnn.Spec("rnn", 1, 16, activation)
    _, params = rnn.init_params(11, 16, 11, rng, "normal", 0.8, np.float64, spec)
    fast = decode.engine_step(params, spec)
    state = want_state = 0.5 * rng.normal(size=(1, 1, batch, 16))
    x = rng.integers(0, 11, batch)
    for _ in range(200):
        logits, state = fast(state, x)
        want_logits, want_state = rnn.step(params, spec, want_state, x)
        assert np.array_equal(logits, want_logits) and np.array_equal(state, want_state)
        assert logits.shape == (batch, 11) and state.shape == (1, 1, batch, 16)
        x = logits.argmax(axis=1)
    with pytest.raises(IndexError, match="must be in"):
        fast(state, np.full(batch, 11))
    lstm = rnn.Spec("lstm", 2, 16)
    _, p2 = rnn.init_params(11, 16, 11, rng, "normal", 0.8, np.float64, lstm)
    s2 = rnn.zero_state(lstm, batch, np.float64)
    got, want = decode.engine_step(p2, lstm)(s2, x), rnn.step(p2, lstm, s2, x)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
