"""``python -m rnnlab.sample``: deterministic text from any run, the adder bit by bit, one-line
errors — all through the real CLI against real SQLite stores."""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers.processes import run_cli
from mlflow.tracking import MlflowClient

from rnnlab.inference.generate import generate_text
from rnnlab.inference.weights import load_weights
from rnnlab.tasks.adder import AdderTask
from rnnlab.tasks.charrnn import CharTask


def train_run(folder: Path, args: list[str], experiment: str) -> tuple[str, str]:
    """(store, run_id) of a finished CLI run."""
    store = f"sqlite:///{folder / 'mlflow.db'}"
    r = run_cli([*args, f"tracking.uri={store}", f"experiment_name={experiment}"], cwd=folder)
    assert r.returncode == 0, r.stderr[-2000:]
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return store, run.info.run_id


@pytest.fixture(scope="module")
def char_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("char")
    store, run_id = train_run(
        folder,
        [
            "hidden_size=32",
            "iterations=1000",
            "eval_every=500",
            "sample_every=500",
            "checkpoint_every=500",
            "data.val_fraction=0.02",
        ],  # fmt: skip
        "char",
    )
    ckpt = MlflowClient(store).download_artifacts(
        run_id, "checkpoints/iter_0001000.npz", str(folder)
    )
    return {"store": store, "run_id": run_id, "checkpoint": Path(ckpt), "folder": folder}


def sample_cli(args: list[str], cwd: Path, env=None):
    return run_cli(args, cwd=cwd, module="rnnlab.sample", env=env)


def test_same_seed_same_text_as_the_training_sampler(char_run, tmp_path):
    args = [f"run_id={char_run['run_id']}", f"tracking_uri={char_run['store']}",
            "prime=One morning", "temperature=0.8", "length=120"]  # fmt: skip
    first, again, other = (sample_cli([*args, f"seed={s}"], tmp_path) for s in (1, 1, 2))
    assert first.returncode == 0, first.stderr
    text = first.stdout.removesuffix("\n")
    assert text.startswith("One morning") and len(text) == len("One morning") + 120
    assert again.stdout == first.stdout and other.stdout != first.stdout

    # The same draws as the sampler training uses (CharTask.generate), with the same rng.
    w = load_weights(char_run["checkpoint"])
    task = CharTask(w.cfg, np.random.default_rng(0))
    expected = task.generate(w.params, np.random.default_rng(1), "One morning", 120, 0.8)
    assert generate_text(w, "One morning", 120, 0.8, np.random.default_rng(1)) == expected
    assert text == expected


def test_samples_where_the_model_was_never_trained(char_run, tmp_path):
    """Only the checkpoint travels: no corpus (RNNLAB_DATA_DIR points at an empty folder, and
    fetching kafka offline would fail), another folder, the store named three ways."""
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "no_data").mkdir(parents=True)
    copy = shutil.copy(char_run["checkpoint"], elsewhere / "model.npz")
    env = {"RNNLAB_DATA_DIR": str(elsewhere / "no_data")}
    opts = ["prime=The", "length=60", "seed=3"]
    by_file = sample_cli([f"checkpoint={copy}", *opts], elsewhere, env)
    by_arg = sample_cli(
        [f"run_id={char_run['run_id']}", f"tracking_uri={char_run['store']}", *opts],
        elsewhere,
        env,
    )
    by_env = sample_cli(
        [f"run_id={char_run['run_id']}", *opts],
        elsewhere,
        {**env, "MLFLOW_TRACKING_URI": char_run["store"]},
    )
    shutil.copy(char_run["folder"] / "mlflow.db", elsewhere / "mlflow.db")  # the default: ./
    by_default = sample_cli([f"run_id={char_run['run_id']}", *opts], elsewhere, env)
    for r in (by_file, by_arg, by_env, by_default):
        assert r.returncode == 0, r.stderr
        assert r.stdout == by_file.stdout and r.stdout.startswith("The")


@pytest.fixture(scope="module")
def empty_run(char_run):
    client = MlflowClient(char_run["store"])
    exp = client.get_experiment_by_name("char").experiment_id
    run = client.create_run(exp, tags={"rnnlab.task": "charrnn"})
    client.set_terminated(run.info.run_id, "FAILED")
    return run.info.run_id


@pytest.mark.parametrize(
    "args,expected",
    [
        (["run_id=0123456789abcdef0123456789abcdef"], "no run '0123456789abcdef0123456789abcdef'"),
        (["run_id={empty}"], "has no checkpoint artifacts"),
        (["run_id={run}", "prime=Ωmega ☃"], "not in the vocabulary: 'Ω', '☃'"),
        (["run_id={run}", "temperature=0"], "temperature=0.0 is not allowed"),
        (["run_id={run}", "temperature=-1"], "temperature=-1.0 is not allowed"),
        (["run_id={run}", "length=0"], "length=0 is not allowed"),
        (["run_id={run}", "length=ten"], "length='ten' is not allowed: an integer ≥ 1"),
        (["run_id={run}", "a=3", "b=4"], "a= and b= are for adder runs"),
        (["run_id={run}", "primer=x"], "primer is not a key of rnnlab.sample; did you mean prime?"),
        (["prime=x"], "give exactly one of run_id= or checkpoint="),
        (["checkpoint=/nonexistent/iter_0000001.npz"], "no checkpoint at /nonexistent"),
    ],
)
def test_mistakes_cost_one_line_and_exit_2(char_run, empty_run, tmp_path, args, expected):
    args = [a.format(run=char_run["run_id"], empty=empty_run) for a in args]
    if any(a.startswith("run_id=") for a in args):
        args.append(f"tracking_uri={char_run['store']}")
    r = sample_cli(args, tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and r.stdout == "", r.stderr
    assert len(lines) == 1 and lines[0].startswith("rnnlab: error: "), r.stderr
    assert expected in lines[0]


def test_a_missing_store_is_named_not_created(tmp_path):
    r = sample_cli(["run_id=0123456789abcdef0123456789abcdef"], tmp_path)
    assert r.returncode == 2 and "no MLflow store at" in r.stderr
    assert not (tmp_path / "mlflow.db").exists()


@pytest.fixture(scope="module")
def adder_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("adder")
    store, run_id = train_run(folder, ["task=adder", "eval_every=1000"], "adder")
    ckpt = MlflowClient(store).download_artifacts(
        run_id, "checkpoints/iter_0010000.npz", str(folder)
    )
    return {"store": store, "run_id": run_id, "checkpoint": Path(ckpt)}


def test_adder_prints_the_sum_bit_by_bit(adder_run, tmp_path):
    r = sample_cli(
        [f"run_id={adder_run['run_id']}", f"tracking_uri={adder_run['store']}", "a=77", "b=41"],
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    bit_lines = [line.split() for line in lines[1:-1]]
    assert [int(b[0]) for b in bit_lines] == list(range(8))  # LSB first, one line per bit
    assert [(int(b[1]), int(b[2])) for b in bit_lines] == [
        ((77 >> t) & 1, (41 >> t) & 1) for t in range(8)
    ]
    assert lines[-1] == "77 + 41 = 118   (01110110; right)"  # the seed's adder learns it by 10k
    # The CLI's answer is the task's own prediction from the same checkpoint.
    w = load_weights(adder_run["checkpoint"])
    task = AdderTask(w.cfg, np.random.default_rng(0))
    assert int(task.predict(w.params, np.array([77]), np.array([41]))[0]) == 118


def test_adder_operands_out_of_range(adder_run, tmp_path):
    r = sample_cli(
        [f"run_id={adder_run['run_id']}", f"tracking_uri={adder_run['store']}", "a=200", "b=1"],
        tmp_path,
    )
    assert r.returncode == 2 and r.stderr.strip() == (
        "rnnlab: error: a=200 is not allowed: this 8-bit adder adds 0 ≤ a, b < 128"
    )


def words_in_corpus(text: str, corpus: str) -> float:
    known = set(re.findall(r"[a-z]+", corpus.lower()))
    words = re.findall(r"[a-z]+", text.lower())
    return sum(w in known for w in words) / max(len(words), 1)


@pytest.mark.slow
def test_kafka_at_10k_iterations_samples_english_like_text(kafka_path, tmp_path):
    store, run_id = train_run(tmp_path, ["iterations=10000", f"data.path={kafka_path}"], "kafka")
    r = sample_cli(
        [
            f"run_id={run_id}",
            f"tracking_uri={store}",
            "prime=One morning",
            "temperature=0.5",
            "length=500",
            "seed=1",
        ],  # fmt: skip
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    corpus = kafka_path.read_text(encoding="utf-8")
    generated = r.stdout[len("One morning") :]
    share = words_in_corpus(generated, corpus)
    # Oracle: characters drawn at random from the same vocabulary score far lower.
    rng = random.Random(1)
    chars = sorted(set(corpus))
    noise = words_in_corpus("".join(rng.choice(chars) for _ in range(500)), corpus)
    print(f"\nwords in the corpus: sample {share:.0%}, random characters {noise:.0%}\n{r.stdout}")
    assert share > 0.5 and noise < 0.35
