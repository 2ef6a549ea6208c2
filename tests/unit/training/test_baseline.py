"""A run that learned nothing says so: its objective against a constant predictor's.

An adder at ``learning_rate=100`` saturates and ends FINISHED at chance with gradient norm 0;
before, nothing in its closing line said so. Each task's ``constant_predictor()`` — the adder:
every bit its most frequent value over the evaluation sums; the char-RNN: every character from
the training text's frequencies — is checked against an independent count, and the closing line
(and the tag the report flags, ``rnnlab.no_better_than_baseline``) names a run no better.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from rnnlab.sweeps.compose import compose
from rnnlab.tasks.adder import AdderTask
from rnnlab.tasks.charrnn import CharTask
from rnnlab.tracking.ui import closing_note
from rnnlab.training.loop import train


def test_the_adders_baseline_is_the_majority_bit_per_position():
    task = AdderTask(compose(["task=adder"]), np.random.default_rng(0))
    sums = [int(a + b) for a, b in zip(task.eval_a, task.eval_b, strict=True)]
    majority = [Counter((s >> t) & 1 for s in sums).most_common(1)[0][0] for t in range(8)]
    guess = sum(bit << t for t, bit in enumerate(majority))
    bits_right = sum(((s >> t) & 1) == majority[t] for s in sums for t in range(8))
    base = task.constant_predictor()
    assert base["val/exact_acc"] == sum(s == guess for s in sums) / len(sums)
    assert math.isclose(base["val/bit_acc"], bits_right / (8 * len(sums)), rel_tol=1e-12)


def test_the_char_rnns_baseline_is_the_training_texts_unigram(kafka_path):
    cfg = compose([f"data.path={kafka_path}"])
    task = CharTask(cfg, np.random.default_rng(0))
    chars = task.vocab.chars
    counts = Counter(chars[i] for i in task.train_data)
    total = len(task.train_data) + len(chars)  # add-one
    held_out = [chars[i] for i in task.val_data[1:]]
    nats = -sum(math.log((counts[c] + 1) / total) for c in held_out) / len(held_out)
    assert math.isclose(task.constant_predictor()["val/loss"], nats, rel_tol=1e-9)
    assert nats < math.log(len(chars))  # the unigram beats a uniform guess


def test_a_run_that_learned_nothing_says_so_and_one_that_learned_does_not():
    saturated = train(compose(["task=adder", "learning_rate=100", "iterations=300",
                               "tracking.enabled=false"]), show_progress=False)  # fmt: skip
    note = closing_note(saturated)
    print(note)
    assert "no better than a constant predictor" in note
    assert saturated["baseline/val_exact_acc"] >= saturated["final/val_exact_acc"]
    learning = train(compose(["task=adder", "iterations=300", "tracking.enabled=false"]),
                     show_progress=False)  # fmt: skip
    assert "constant predictor" not in closing_note(learning)


def test_every_task_that_knows_its_constant_predictor_is_judged_against_it():
    """The long-memory tasks state theirs (the adding problem's best constant, 1/6; the copy
    task's memoryless strategy); a 20-iteration run of each is flagged, none crashes."""
    for task in ("adding", "copy"):
        final = train(compose([f"task={task}", "iterations=20", "tracking.enabled=false"]),
                      show_progress=False)  # fmt: skip
        assert "baseline_objective" in final, task
        print(task, final["objective"], final["baseline_objective"], closing_note(final))
