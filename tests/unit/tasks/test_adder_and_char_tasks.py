"""The two tasks: the adder's bit encoding and evaluation set, the char task's vocabulary,
split, stream pointers, validation metric and sampling."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from rnnlab.config import Config, ConfigError, DataConfig, TaskConfig
from rnnlab.engine import rnn
from rnnlab.tasks import TASKS, AdderTask, AddingTask, CharTask, CopyTask, DigitsTask
from rnnlab.tasks.adder import from_bits, to_bits
from rnnlab.tasks.charrnn import PrimeError, Vocabulary

# --- adder ----------------------------------------------------------------------------------------


def adder_config(**kw) -> Config:
    task = TaskConfig(name="adder", activation="sigmoid", loss="mse", init="uniform")
    task.init_scale = 1.0
    for k in [k for k in kw if k.startswith("task_")]:
        setattr(task, k.removeprefix("task_"), kw.pop(k))
    return Config(**{"task": task, "hidden_size": 3, "seq_length": 8, **kw})


def test_bits_round_trip_lsb_first():
    values = np.arange(256)
    bits = to_bits(values, 8)  # (bits, N)
    assert bits.shape == (8, 256)
    np.testing.assert_array_equal(bits[:, 1], [1, 0, 0, 0, 0, 0, 0, 0])  # LSB first
    np.testing.assert_array_equal(bits[:, 6], [0, 1, 1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(bits[:, 128], [0, 0, 0, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(from_bits(bits), values)
    big = np.array([0, 1, 2**40 + 12345, 2**61 - 1], dtype=np.int64)
    np.testing.assert_array_equal(from_bits(to_bits(big, 62)), big)


def test_adder_batches_encode_sums_two_bits_per_step():
    task = AdderTask(adder_config(batch_size=64), np.random.default_rng(0))
    seen = []
    for _ in range(50):
        xs, ys, reset = task.next_batch()
        assert xs.shape == (8, 64, 2) and ys.shape == (8, 64, 1) and xs.dtype == np.float64
        assert reset.all()  # every sum starts from a zero state
        a, b = from_bits(xs[..., 0]), from_bits(xs[..., 1])
        np.testing.assert_array_equal(from_bits(ys[..., 0]), a + b)
        seen.append(np.concatenate([a, b]))
    seen = np.concatenate(seen)
    assert seen.min() == 0 and seen.max() == 127  # operands uniform in [0, 2^(bits-1))
    assert abs(seen.mean() - 63.5) < 2.0
    # The data stream is the rng's: same rng seed, same batches.
    again = AdderTask(adder_config(batch_size=64), np.random.default_rng(0))
    first = AdderTask(adder_config(batch_size=64), np.random.default_rng(0)).next_batch()
    np.testing.assert_array_equal(again.next_batch()[0], first[0])


def test_adder_evaluation_set_is_the_full_grid_at_8_bits():
    task = AdderTask(adder_config(), np.random.default_rng(0))
    assert task.eval_a.size == 16384
    pairs = set(zip(task.eval_a.tolist(), task.eval_b.tolist(), strict=True))
    assert pairs == {(a, b) for a in range(128) for b in range(128)}


def test_adder_evaluation_set_beyond_max_pairs_is_a_fixed_sample():
    cfg = adder_config(seq_length=10, task_eval_max_pairs=16384)
    one = AdderTask(cfg, np.random.default_rng(0))
    two = AdderTask(cfg, np.random.default_rng(99))  # a different data stream: same set
    assert one.eval_a.size == 16384 and one.high == 512
    np.testing.assert_array_equal(one.eval_a, two.eval_a)
    np.testing.assert_array_equal(one.eval_b, two.eval_b)
    assert one.eval_a.min() >= 0 and max(one.eval_a.max(), one.eval_b.max()) < 512
    assert len(set(zip(one.eval_a.tolist(), one.eval_b.tolist(), strict=True))) > 15000
    # An 8-bit grid larger than eval_max_pairs is sampled too.
    small = AdderTask(adder_config(task_eval_max_pairs=1000), np.random.default_rng(0))
    assert small.eval_a.size == 1000


def hand_built_adder(carry: bool = True) -> rnn.Params:
    """A sigmoid RNN that adds exactly: with n = a_t + b_t + carry_in, hidden units fire for
    n ≥ 1, n ≥ 2 (the carry out) and n ≥ 3; the sum bit is [n≥1] - [n≥2] + [n≥3]."""
    K = 20.0
    _, p = rnn.packed_zeros(rnn.param_shapes(2, 3, 1), np.float64)
    p["Wxh"][...] = K
    if carry:
        p["Whh"][:, 1] = K  # every unit sees the previous carry
    p["bh"][...] = -K * np.array([0.5, 1.5, 2.5])
    p["Why"][...] = K * np.array([[1.0, -1.0, 1.0]])
    p["by"][...] = -0.5 * K
    return p


def test_adder_evaluation_counts_exact_and_bit_accuracy():
    task = AdderTask(adder_config(), np.random.default_rng(0))
    assert task.evaluate(hand_built_adder()) == {"val/bit_acc": 1.0, "val/exact_acc": 1.0}
    assert AdderTask.JUDGED.value("val/exact_acc", {"val/exact_acc": 1.0}) == 0.0

    # Without the carry it computes a XOR b: right exactly when no bit position carries,
    # i.e. a & b == 0, which holds for 3^7 of the 128² pairs.
    a, b = np.divmod(np.arange(16384), 128)
    wrong_bits = np.array([bin((x ^ y) ^ (x + y)).count("1") for x, y in zip(a, b, strict=True)])
    metrics = task.evaluate(hand_built_adder(carry=False))
    assert metrics["val/exact_acc"] == 3**7 / 16384
    assert metrics["val/bit_acc"] == pytest.approx(1 - wrong_bits.sum() / (16384 * 8), abs=1e-15)
    text = task.sample(hand_built_adder(carry=False), np.random.default_rng(0))
    assert f"# wrong: {16384 - 3**7} of 16384" in text


@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_adder_initial_loss_is_the_loss_of_guessing_half(loss):
    task = AdderTask(adder_config(task_loss=loss, batch_size=4), np.random.default_rng(0))
    _, zeros = rnn.packed_zeros(rnn.param_shapes(2, 3, 1), np.float64)
    xs, ys, _ = task.next_batch()
    spec = rnn.Spec(hidden_size=3, activation="sigmoid")
    window_loss, _, _ = rnn.loss_and_grads(zeros, xs, ys, rnn.zero_state(spec, 4, np.float64), spec,
                                           loss)  # fmt: skip
    np.testing.assert_allclose(window_loss, task.initial_loss(), rtol=1e-14)
    assert task.initial_loss() == pytest.approx(1.0 if loss == "mse" else 8 * math.log(2))


# --- char-RNN -------------------------------------------------------------------------------------

ALPHABET = list("abcdefghij klmnop.,\nÄéß")


@pytest.fixture
def text_file(tmp_path):
    rng = np.random.default_rng(7)
    text = "".join(rng.choice(ALPHABET, 20_000))
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    return path, text


def char_config(path, val_fraction: float = 0.1, **kw) -> Config:
    data = DataConfig(name="file", path=str(path), val_fraction=val_fraction)
    return Config(data=data, hidden_size=8, **kw)


def test_vocabulary_sorted_and_split_holds_out_last_tenth(text_file):
    path, text = text_file
    task = CharTask(char_config(path), np.random.default_rng(0))
    assert task.vocab.chars == "".join(sorted(set(ALPHABET)))
    assert task.input_size == task.output_size == len(ALPHABET)
    n_val = int(len(text) * 0.1)
    assert len(task.val_data) == n_val == 2000
    assert task.vocab.decode(task.train_data) == text[:-n_val]
    assert task.vocab.decode(task.val_data) == text[-n_val:]
    assert task.initial_loss() == pytest.approx(-math.log(1 / len(ALPHABET)) * 25)


def test_vocabulary_is_independent_of_pythonhashseed(text_file):
    path, _ = text_file
    code = (
        "import sys; from rnnlab.tasks.charrnn import Vocabulary; "
        "t = open(sys.argv[1], encoding='utf-8').read(); v = Vocabulary(t); "
        "print(repr(v.chars), v.encode(t[:200]).tolist(), sep=';'); print(repr(''.join(set(t))))"
    )
    outs = []
    for hashseed in ("0", "1", "4242"):
        env = {"PYTHONHASHSEED": hashseed, "PATH": "/usr/bin:/bin"}
        done = subprocess.run(
            [sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env
        )
        assert done.returncode == 0, done.stderr
        outs.append(done.stdout.splitlines())
    vocab_and_ids = {o[0] for o in outs}
    assert len(vocab_and_ids) == 1  # identical vocabulary and symbol ids in every process
    assert len({o[1] for o in outs}) > 1  # ... although set order did change with the hash seed


def test_stream_pointers_at_b1_follow_the_seed_rule(text_file):
    path, _ = text_file
    T = 25
    task = CharTask(char_config(path, seq_length=T), np.random.default_rng(0))
    data = task.train_data
    p, resets = 0, 0
    for n in range(2000):  # 2000 × 25 characters: more than two passes over 18,000
        # min-char-rnn: if p+seq_length+1 >= len(data) or n == 0: hprev = 0; p = 0
        seed_reset = p + T + 1 >= len(data) or n == 0
        if seed_reset:
            p = 0
        xs, ys, reset = task.next_batch()
        assert reset.tolist() == [seed_reset], n
        np.testing.assert_array_equal(xs[:, 0], data[p : p + T])
        np.testing.assert_array_equal(ys[:, 0], data[p + 1 : p + T + 1])
        p += T
        resets += seed_reset
    assert resets == 3


def test_streams_cover_contiguous_slices(text_file):
    path, _ = text_file
    B, T = 3, 7
    task = CharTask(char_config(path, seq_length=T, batch_size=B), np.random.default_rng(0))
    data, span = task.train_data, len(task.train_data) // B
    assert span == 6000
    read = [[] for _ in range(B)]
    for n in range(2 * (span // T) + 5):
        xs, ys, reset = task.next_batch()
        assert xs.shape == ys.shape == (T, B)
        if n > 0 and reset.any():
            assert reset.all()  # equal slices: all streams wrap together
            break
        for b in range(B):
            read[b].append((xs[:, b], ys[:, b]))
    else:
        pytest.fail("streams never wrapped")
    for b in range(B):
        xs_b = np.concatenate([x for x, _ in read[b]])
        ys_b = np.concatenate([y for _, y in read[b]])
        start = b * span
        # stream b reads its own slice from the start, contiguously, with targets one ahead,
        # and wraps as late as the seed rule allows without leaving the slice
        np.testing.assert_array_equal(xs_b, data[start : start + len(xs_b)])
        np.testing.assert_array_equal(ys_b, data[start + 1 : start + 1 + len(ys_b)])
        assert len(xs_b) + T + 1 >= span > len(xs_b) + 1
    assert xs[:, 0].tolist() == data[:T].tolist()  # after the wrap, back to the slice start


def test_val_loss_is_whole_held_out_text_and_bpc_is_loss_over_ln2(text_file):
    path, _ = text_file
    task = CharTask(char_config(path), np.random.default_rng(0))
    V = len(task.vocab)
    _, params = rnn.init_params(V, 8, V, np.random.default_rng(1), "normal", 0.5)
    metrics = task.evaluate(params)
    assert metrics["val/bpc"] == metrics["val/loss"] / math.log(2.0)
    # One forward over the whole 2,000-character held-out text from a zero state (the task
    # reads it in chunks of 1,000 carrying h): same mean nats per character.
    xs, ys = task.val_data[:-1, None], task.val_data[1:, None]
    spec = rnn.Spec(hidden_size=8)
    fwd = rnn.forward(params, xs, rnn.zero_state(spec, 1, np.float64), spec)
    loss, _ = rnn.softmax_xent(fwd.logits, ys)
    assert metrics["val/loss"] == pytest.approx(loss[0] / len(ys), rel=1e-12)
    # A model that knows nothing scores ln V nats (log2 V bits) per character.
    _, zeros = rnn.packed_zeros(rnn.param_shapes(V, 8, V), np.float64)
    blank = task.evaluate(zeros)
    assert blank["val/loss"] == pytest.approx(math.log(V), rel=1e-12)
    assert blank["val/bpc"] == pytest.approx(math.log2(V), rel=1e-12)


def test_sampling_is_deterministic_per_seed(text_file):
    path, _ = text_file
    task = CharTask(char_config(path), np.random.default_rng(0))
    V = len(task.vocab)
    _, params = rnn.init_params(V, 8, V, np.random.default_rng(1), "normal", 0.5)

    def gen(seed, temperature=1.0, prime="ab"):
        return task.generate(params, np.random.default_rng(seed), prime, 300, temperature)

    one = gen(5)
    assert one == gen(5)
    assert one != gen(6)
    assert one.startswith("ab") and len(one) == 302 and set(one) <= set(ALPHABET)
    # Near zero temperature the draw is the argmax: the rng no longer matters.
    assert gen(5, temperature=1e-4) == gen(6, temperature=1e-4)


def test_prime_outside_vocabulary_names_the_character(text_file, tmp_path):
    path, _ = text_file
    task = CharTask(char_config(path), np.random.default_rng(0))
    V = len(task.vocab)
    _, params = rnn.init_params(V, 8, V, np.random.default_rng(1))
    with pytest.raises(PrimeError) as err:
        task.generate(params, np.random.default_rng(0), "ab☃cZ", 10, 1.0)
    msg = str(err.value)
    assert "'☃'" in msg and "'Z'" in msg and "\n" not in msg
    with pytest.raises(PrimeError, match="at least one character"):
        task.generate(params, np.random.default_rng(0), "", 10, 1.0)
    # The config check turns it into a ConfigError before any training.
    with pytest.raises(ConfigError) as err:
        CharTask.check(char_config(path, prime="a☃"))
    assert "'☃'" in str(err.value) and "\n" not in str(err.value)
    assert Vocabulary("ba").encode("ab").tolist() == [0, 1]


def test_char_config_check_rejects_text_too_short_for_the_window(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text("hello world!", encoding="utf-8")  # 12 characters: 9 train, 3 held out
    # The seed's rule needs p + seq_length + 1 < len(data) at p = 0, else it resets forever.
    with pytest.raises(ConfigError, match=r"seq_length=8 is not allowed: shorter than"):
        CharTask.check(char_config(path, 0.25, seq_length=8))
    CharTask.check(char_config(path, 0.25, seq_length=7))  # fits: no error
    task = CharTask(char_config(path, 0.25, seq_length=7), np.random.default_rng(0))
    assert [bool(task.next_batch()[2][0]) for _ in range(3)] == [True, True, True]
    # Holding out fewer than 2 characters leaves nothing to validate on.
    with pytest.raises(ConfigError, match=r"data.val_fraction=0.1 is not allowed"):
        CharTask.check(char_config(path, 0.1, seq_length=7))


def test_registry():
    assert TASKS == {"charrnn": CharTask, "adder": AdderTask, "adding": AddingTask,
                     "copy": CopyTask, "digits": DigitsTask}  # fmt: skip
