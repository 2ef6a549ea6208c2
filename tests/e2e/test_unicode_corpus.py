"""Any UTF-8 text is a corpus, every character of it: NUL, control characters, combining marks,
characters outside the BMP. Each survives the checkpoint's vocabulary, resume, sampling and the
served model, through the real CLI and a real SQLite store."""

from __future__ import annotations

import random
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from helpers.processes import run_cli
from mlflow.tracking import MlflowClient

from rnnlab.inference.generate import generate_text
from rnnlab.inference.weights import load_weights
from rnnlab.tasks.charrnn import CharTask, Vocabulary
from rnnlab.training import checkpoint

# NUL first: a numpy str array loses it (trailing NULs are its padding)
ODD = ["\0", "\x01", "\t", "\r", "\n", " ", "a", "b", "é", "e\u0301", "Ω", "中", "\u200b",
       "\U0001f642", "\U0010fffd", "\x7f", "\ufeff"]  # fmt: skip


def odd_text(n: int = 6000, seed: int = 9) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(ODD) for _ in range(n))


def test_a_vocabulary_round_trips_through_a_checkpoint_exactly(tmp_path):
    vocab = Vocabulary(odd_text())
    assert "\0" in vocab.chars
    ck = checkpoint.Checkpoint(params={"Why": np.zeros((1, 1))}, meta={}, vocab=vocab.chars)
    path = ck.write(tmp_path / "v.npz")
    assert checkpoint.load(path)[0]["vocab"].dtype.kind in "iu"  # code points, not a str array
    assert checkpoint.Checkpoint.read(path).vocab == vocab.chars


@pytest.mark.parametrize(
    "array, message",
    [
        (np.array([97, 97]), "repeats"),
        (np.array([-1, 97]), "code points"),
        (np.array([0x110000]), "code points"),
        (np.array([[97]]), "one dimension"),
        (np.array([0.5]), "dtype"),
    ],
)
def test_a_crafted_vocabulary_is_refused_in_one_line(array, message, tmp_path):
    path = checkpoint.save(tmp_path / "v.npz", {"param/Why": np.zeros((1, 1)), "vocab": array}, {})
    with pytest.raises(checkpoint.CheckpointError, match=message):
        checkpoint.Checkpoint.read(path)


@pytest.mark.slow
def test_nul_and_any_unicode_survive_train_resume_sample_and_serving(tmp_path):
    text = odd_text()
    corpus = tmp_path / "odd.txt"
    corpus.write_bytes(text.encode("utf-8"))
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [f"data.path={corpus}", "hidden_size=16", "seq_length=10", "eval_every=100",
            "sample_every=100", "checkpoint_every=100", "data.val_fraction=0.05",
            f"tracking.uri={store}", "experiment_name=odd"]  # fmt: skip
    first = run_cli([*args, "iterations=100"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("odd").experiment_id])
    run_id = run.info.run_id

    # the checkpoint's vocabulary is the corpus's, NUL included
    ckpt = Path(client.download_artifacts(run_id, "checkpoints/iter_0000100.npz", str(tmp_path)))
    assert checkpoint.Checkpoint.read(ckpt).vocab == Vocabulary(text).chars

    # resume accepts the same corpus and continues the same run
    again = run_cli([f"resume={run_id}", "iterations=200", f"tracking.uri={store}"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert client.get_run(run_id).info.status == "FINISHED"

    # sampling from the checkpoint draws exactly what the training sampler draws
    w = load_weights(ckpt)
    cfg = w.cfg
    task = CharTask(cfg, np.random.default_rng(0))
    expected = task.generate(w.params, np.random.default_rng(5), "\0中", 2000, 1.0)
    assert generate_text(w, "\0中", 2000, 1.0, np.random.default_rng(5)) == expected
    assert set(expected) <= set(text)

    out = run_cli([f"run_id={run_id}", f"tracking_uri={store}", "length=2000", "seed=3"],
                  cwd=tmp_path, module="rnnlab.sample")  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr

    # the served model (the pyfunc mlflow models serve loads) speaks the same characters
    mlflow.set_tracking_uri(store)
    model = mlflow.pyfunc.load_model(client.get_run(run_id).data.tags["rnnlab.model_uri"])
    served = model.predict(pd.DataFrame([{"prime": "\0\U0001f642", "length": 500, "seed": 1}]))
    sampled = served["text"][0]
    assert sampled.startswith("\0\U0001f642") and len(sampled) == 502
    assert set(sampled) <= set(text)
