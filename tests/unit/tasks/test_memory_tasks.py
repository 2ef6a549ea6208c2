"""The long-memory tasks (adding, copy, digits): their generators' layout and statistics, the
held-out sets (fixed, the same for every seed; digits' split stratified), each task's loss written
out by hand against the engine's with the task's own mask, the baselines, and a run continued
from a checkpoint bit for bit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rnnlab.config import ConfigError
from rnnlab.engine import rnn
from rnnlab.sweeps.compose import compose
from rnnlab.tasks import TASKS, CopyTask, DigitsTask, check
from rnnlab.tasks.adding import BASELINE_MSE, adding_sequences
from rnnlab.tasks.copymemory import baseline, copy_sequences
from rnnlab.tasks.digits import IMAGES, load, stratified_split
from rnnlab.training.loop import Trainer

NEW = ("adding", "copy", "digits")


def config(task: str, *overrides: str):
    return compose([f"task={task}", "tracking.enabled=false", *overrides])


# --- the adding problem ---------------------------------------------------------------------------


@pytest.mark.parametrize("T", [2, 3, 50, 51])
def test_adding_marks_one_step_per_half_and_targets_their_sum(T):
    xs, marks, target = adding_sequences(np.random.default_rng(T), 4000, T)
    assert xs.shape == (T, 4000, 2)
    markers = xs[..., 1]
    assert set(np.unique(markers)) <= {0.0, 1.0}
    half = T // 2
    np.testing.assert_array_equal(markers[:half].sum(axis=0), 1)  # one in the first half
    np.testing.assert_array_equal(markers[half:].sum(axis=0), 1)  # one in the second
    np.testing.assert_array_equal(np.argmax(markers[:half], axis=0), marks[0])
    np.testing.assert_array_equal(half + np.argmax(markers[half:], axis=0), marks[1])
    np.testing.assert_array_equal(target, (xs[..., 0] * markers).sum(axis=0))
    assert 0.0 <= xs[..., 0].min() and xs[..., 0].max() < 1.0
    if T >= 50:  # every position of each half is used, uniformly
        for lo, hi, m in ((0, half, marks[0]), (half, T, marks[1])):
            counts = np.bincount(m - lo, minlength=hi - lo)
            assert counts.min() > 0.5 * counts.mean() and counts.max() < 1.5 * counts.mean()


def test_adding_statistics_and_baseline():
    """The sum of two U(0, 1): mean 1, variance 1/6 — the MSE of predicting the mean."""
    _, _, target = adding_sequences(np.random.default_rng(0), 200_000, 20)
    assert abs(target.mean() - 1.0) < 0.005
    assert abs(target.var() - BASELINE_MSE) < 0.002


def test_adding_generator_equals_a_loop_over_sequences():
    """The vectorised draw equals building each sequence by hand from the same numbers."""
    T, n = 9, 7
    xs, marks, target = adding_sequences(np.random.default_rng(3), n, T)
    rng = np.random.default_rng(3)
    values, first, second = (
        rng.random((T, n)),
        rng.integers(0, T // 2, n),
        rng.integers(T // 2, T, n),
    )
    for i in range(n):
        seq = np.zeros((T, 2))
        for t in range(T):
            seq[t, 0] = values[t, i]
            seq[t, 1] = 1.0 if t in (first[i], second[i]) else 0.0
        np.testing.assert_array_equal(xs[:, i], seq)
        assert target[i] == values[first[i], i] + values[second[i], i]


# --- copy -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("T", "S", "A"), [(10, 10, 8), (1, 3, 2), (25, 10, 8)])
def test_copy_sequences_have_the_documented_layout(T, S, A):
    xs, ys = copy_sequences(np.random.default_rng(0), 3000, T, S, A)
    L = T + 2 * S
    assert xs.shape == ys.shape == (L, 3000)
    symbols = xs[:S]
    assert symbols.min() == 1 and symbols.max() == A  # drawn from the alphabet, never blank
    np.testing.assert_array_equal(xs[S : S + T - 1], 0)  # T - 1 blanks
    np.testing.assert_array_equal(xs[S + T - 1], A + 1)  # the delimiter
    np.testing.assert_array_equal(xs[S + T :], 0)  # blanks while recalling
    np.testing.assert_array_equal(ys[: S + T], 0)  # blank targets until the recall
    np.testing.assert_array_equal(ys[S + T :], symbols)  # then the symbols, in order
    counts = np.bincount(symbols.ravel(), minlength=A + 1)[1:]
    assert counts.min() > 0.9 * counts.mean() and counts.max() < 1.1 * counts.mean()


def test_copy_baseline_is_the_memoryless_strategys_loss():
    """Blanks with certainty, then a uniform guess over the alphabet, scored by the task's own
    head and weights: 10·log 8 / (T + 20) nats per step (Arjovsky et al.'s baseline)."""
    cfg = config("copy", "task.length=30", "task.eval_size=50")
    task = CopyTask(cfg, np.random.default_rng(0))
    L = task.steps
    logits = np.full((L, 50, 9), -1e9)
    logits[: L - 10, :, 0] = 0.0  # blank, certain
    logits[L - 10 :, :, 1:] = 0.0  # uniform over the 8 symbols
    assert math.isclose(
        task.weighted_loss(logits, task.eval_ys), 10 * math.log(8) / 50, rel_tol=1e-12
    )
    assert math.isclose(task.baseline, baseline(30), rel_tol=1e-15)


# --- digits ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("held", [10, 360, 1000])
def test_digits_split_is_stratified_fixed_and_disjoint(held):
    images, labels = load()
    train, val = stratified_split(labels, held)
    assert val.size == held and train.size + val.size == IMAGES
    assert np.intersect1d(train, val).size == 0
    share = held * np.bincount(labels) / labels.size  # each class's share of the held-out set
    assert np.all(np.abs(np.bincount(labels[val], minlength=10) - share) <= 1.0)
    again = stratified_split(labels.copy(), held)  # fixed: no dependence on any run's seed
    np.testing.assert_array_equal(again[1], val)


def test_digits_reads_pixels_or_rows_of_the_same_images():
    pixels = DigitsTask(config("digits"), np.random.default_rng(0))
    rows = DigitsTask(config("digits", "task.order=rows", "seed=5"), np.random.default_rng(1))
    assert pixels.eval_xs.shape == (64, 360, 1) and rows.eval_xs.shape == (8, 360, 8)
    np.testing.assert_array_equal(pixels.eval_index, rows.eval_index)  # the seed changes nothing
    images, labels = load()
    i = 17
    img = images[pixels.eval_index[i]]
    np.testing.assert_array_equal(pixels.eval_xs[:, i, 0], img)  # row-major, one per step
    np.testing.assert_array_equal(rows.eval_xs[:, i, :], img.reshape(8, 8))  # a row per step
    assert pixels.eval_labels[i] == labels[pixels.eval_index[i]]
    xs, ys, reset = pixels.next_batch()
    assert xs.shape == (64, 32, 1) and ys.shape == (64, 32) and reset.all()
    assert 0.0 <= xs.min() and xs.max() <= 1.0


# --- the held-out sets and the data stream --------------------------------------------------------


@pytest.mark.parametrize("task", NEW)
def test_held_out_set_is_the_same_for_every_seed(task):
    a = TASKS[task](config(task, "seed=0"), np.random.default_rng(0))
    b = TASKS[task](config(task, "seed=9"), np.random.default_rng(9))
    np.testing.assert_array_equal(a.eval_xs, b.eval_xs)
    assert not np.array_equal(a.next_batch()[0], b.next_batch()[0])  # training data is seeded


@pytest.mark.parametrize("task", NEW)
def test_a_run_continues_bit_for_bit_after_load(task, tmp_path):
    """The data stream lives in the checkpointed rng: a resumed run draws the same batches,
    reaches the same weights, and its evaluation agrees."""
    cfg = config(task, "hidden_size=8", "batch_size=4", "task.length=6", "task.eval_size=40",
                 "cell=lstm")  # fmt: skip
    straight = Trainer(cfg)
    losses = [straight.step()[0] for _ in range(30)]
    first = Trainer(cfg)
    for _ in range(12):
        first.step()
    path = first.save(tmp_path / "ck")
    resumed = Trainer(cfg)
    resumed.load(path)
    assert [resumed.step()[0] for _ in range(18)] == losses[12:]  # exact floats
    assert np.array_equal(resumed.flat, straight.flat)
    assert resumed.evaluate() == straight.evaluate()


# --- each task's loss, by hand -------------------------------------------------------------------


@pytest.mark.parametrize("task", NEW)
def test_hand_computed_loss_equals_the_engines(task):
    """Forward the engine, then score the batch as the task's docs say, by hand: the adding
    problem's squared error at the last step, copy's cross-entropy per step averaged over the
    sequence, digits' cross-entropy at the last step."""
    cfg = config(task, "hidden_size=6", "batch_size=5", "task.length=7", "task.eval_size=40")
    t = TASKS[task](cfg, np.random.default_rng(4))
    params = rnn.init_params(t.input_size, 6, t.output_size, np.random.default_rng(1), "normal",
                             0.5, np.float64, t.spec)[1]  # fmt: skip
    xs, ys, _ = t.next_batch()
    z = rnn.forward(params, xs, rnn.zero_state(t.spec, 5, np.float64), t.spec).logits
    T = z.shape[0]
    by_hand = []
    for b in range(5):
        if task == "adding":
            by_hand.append((z[-1, b, 0] - ys[-1, b, 0]) ** 2)
            continue
        steps = range(T) if task == "copy" else [T - 1]
        nats = [math.log(np.exp(z[s, b]).sum()) - z[s, b, ys[s, b]] for s in steps]
        by_hand.append(sum(nats) / (T if task == "copy" else 1))
    loss, _, _ = rnn.loss_and_grads(params, xs, ys, rnn.zero_state(t.spec, 5, np.float64), t.spec,
                                    t.head, weights=t.weights)  # fmt: skip
    np.testing.assert_allclose(loss, by_hand, rtol=1e-12)
    np.testing.assert_allclose(t.weighted_loss(z, ys), np.mean(by_hand), rtol=1e-12)


# --- bad values are one line ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["task=adding", "task.length=1"], "task.length=1 is not allowed: at least 2"),
        (["task=adding", "task.loss=mse"], "task.loss='mse' is not allowed: squared"),
        (["task=copy", "task.alphabet=1"], "task.alphabet=1 is not allowed: an integer ≥ 2"),
        (["task=copy", "task.copy_symbols=0"], "task.copy_symbols=0 is not allowed"),
        (["task=digits", "task.order=columns"], "task.order='columns' is not allowed"),
        (["task=digits", "task.eval_size=1790"], "task.eval_size=1790 is not allowed: 10 to"),
        (["task=charrnn", "early_stop.solved=true"], "early_stop.solved=True is not allowed"),
        (["task=digits", "objective=val/mse"], "objective='val/mse' is not allowed: for digits"),
    ],
)
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as e:
        check(compose([*overrides, "tracking.enabled=false"]))
    assert message in str(e.value) and "\n" not in str(e.value)
