"""Smaller bad inputs, each refused in one line naming the value and what is
allowed, before any work: in-process calls of the CLIs' checking functions (the quick loop),
and the real CLI where exit code 2 and "no traceback" are the point (slow)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers.processes import run_cli
from mlflow.tracking import MlflowClient

from rnnlab import cli, model, sample
from rnnlab.errors import UserError
from rnnlab.inference.weights import load_weights
from rnnlab.report import __main__ as report
from rnnlab.sweeps.compose import CONFIG_DIR
from rnnlab.sweeps.preflight import preflight
from rnnlab.tracking.names import check_model_name

ADDER = ["task=adder", "iterations=10"]


def refused(args: list[str]) -> str:
    with pytest.raises(UserError) as e:  # the CLI prints either, exits 2
        preflight(CONFIG_DIR, "config", args)
    message = str(e.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "args, named",
    [
        (["seed=-1"], "seed=-1 is not allowed: an integer ≥ 0"),
        ([f"experiment_name={'x' * 600}"], "(600 characters) is not allowed: at most 256"),
        (
            ["hidden_size=1000000"],
            "cell=rnn layers=1 hidden_size=1000000 batch_size=1, 8 steps per window needs about",
        ),
    ],
)
def test_a_bad_run_value_is_one_line(args, named, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert named in refused([*ADDER, *args, "tracking.enabled=false"])


def test_memory_is_estimated_from_the_run_and_refused_only_past_what_is_available(monkeypatch):
    from rnnlab.config import Config
    from rnnlab.training import memory

    cfg = Config()
    cfg.hidden_size, cfg.seq_length, cfg.batch_size = 100, 25, 1
    corpus = memory.Corpus(chars=100_000, width=1, vocab=65)
    small = memory.estimate(cfg, corpus)
    # Adagrad and diagnostics: θ, ∇θ, the memory, the best weights, a checkpoint's copy of the
    # memory, the diagnostics' trial step (θ, ∇θ, memory): 8 copies of 23,165 float64
    P = 100 * 65 + 100 * 100 + 65 * 100 + 100 + 65
    assert small.parameters == 8 * P * 8
    assert small.corpus == 100_000 * 9 + 100_000 * 16  # the text, its ids, one chunk encoding
    cfg.cell, cfg.layers, cfg.hidden_size = "lstm", 4, 8000  # was sized as one vanilla layer
    big = memory.estimate(cfg, corpus)
    assert big.parameters > 8 * (4 * 4 * 8000 * 8000) * 8  # 8 copies of 4 W_hh blocks alone
    with pytest.raises(UserError, match="needs about .* GB of memory"):
        memory.check(cfg, corpus, have=64 * 10**9)
    memory.check(Config(), corpus, have=64 * 10**9)
    preflight(CONFIG_DIR, "config", [*ADDER, "hidden_size=64", "tracking.enabled=false"])


def test_a_one_character_corpus_is_refused_not_diverging(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("a" * 500)
    monkeypatch.chdir(tmp_path)
    message = refused(["data.path=a.txt", "iterations=10", "tracking.enabled=false"])
    assert message == (
        "data.path='a.txt' is not allowed: a text of at least 2 distinct characters "
        "(this one has only 'a')"
    )


def test_hydra_interpolations_in_an_override_resolve_as_in_a_run(tmp_path, monkeypatch):
    (tmp_path / "corpus.txt").write_text("the cat sat on the mat " * 200)
    monkeypatch.chdir(tmp_path)
    preflight(CONFIG_DIR, "config", ["data.path=${hydra:runtime.cwd}/corpus.txt",
                                     "iterations=10", "tracking.enabled=false"])  # fmt: skip


def test_a_deleted_experiment_is_named_with_how_to_restore_it(tmp_path, monkeypatch):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(store)
    client.delete_experiment(client.create_experiment("gone"))
    monkeypatch.chdir(tmp_path)
    message = refused([*ADDER, "experiment_name=gone", f"tracking.uri={store}"])
    assert message.startswith("experiment_name='gone' is a deleted experiment in ")
    assert "mlflow experiments restore --experiment-id" in message


@pytest.mark.parametrize(
    "arg, named",
    [
        ("temperature=1e-320", "temperature=1e-320 is not allowed: a finite number ≥ 0.001"),
        ("seed=-1", "seed=-1 is not allowed: an integer ≥ 0"),
    ],
)
def test_sample_refuses_before_opening_anything(arg, named, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as e:
        cli.call(sample.COMMAND, sample.run, ["run_id=0123", arg])
    assert str(e.value) == named
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("name", ["bad/name", "", "a:b", "x" * 257, "tab\there"])
def test_a_model_name_mlflow_cannot_address_is_refused(name):
    with pytest.raises(ValueError, match="is not allowed: 1 to 256 characters without /"):
        check_model_name(name)
    check_model_name("kafka-charrnn v2.1")


def test_register_with_a_bad_name_is_one_line_before_the_store_is_opened(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="name='bad/name' is not allowed") as e:
        cli.call(model.COMMAND, model.run, ["register", "sweep=0123456789ab", "name=bad/name"])
    assert len(str(e.value).splitlines()) == 1
    assert not (tmp_path / "mlflow.db").exists()


def random_store(folder: Path) -> str:
    folder.mkdir(exist_ok=True)
    (folder / "mlflow.db").write_bytes(os.urandom(4096))
    return f"sqlite:///{folder / 'mlflow.db'}"


def test_random_bytes_as_the_store_are_one_line_in_report_and_sample(tmp_path, capsys):
    uri = random_store(tmp_path)
    before = (tmp_path / "mlflow.db").read_bytes()
    with pytest.raises(UserError) as e:
        cli.call(report.COMMAND, report.run, [f"tracking_uri={uri}"])
    assert (
        str(e.value)
        == f"{tmp_path / 'mlflow.db'} is not an SQLite database, so not an MLflow store"
    )
    with pytest.raises(UserError, match="is not an SQLite database"):
        cli.call(sample.COMMAND, sample.run, ["run_id=0123", f"tracking_uri={uri}"])
    assert (tmp_path / "mlflow.db").read_bytes() == before  # nothing recorded is touched


@pytest.mark.slow
@pytest.mark.parametrize(
    "module, args",
    [
        ("rnnlab.sample", ["run_id=0123", "temperature=1e-320"]),
        ("rnnlab.sample", ["run_id=0123", "seed=-1"]),
        ("rnnlab.model", ["register", "sweep=0123", "name=bad/name"]),
        ("rnnlab.report", ["tracking_uri=sqlite:///junk/mlflow.db"]),
        ("rnnlab.sample", ["run_id=0123", "tracking_uri=sqlite:///junk/mlflow.db"]),
        ("rnnlab.run", ["task=adder", "hidden_size=1000000"]),
        ("rnnlab.run", ["task=adder", f"experiment_name={'x' * 600}"]),
    ],
)
def test_the_cli_exits_2_with_one_line(module, args, tmp_path):
    random_store(tmp_path / "junk")
    done = run_cli(args, cwd=tmp_path, module=module)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "mlflow.db").exists()  # no run, no store


# --- crafted checkpoints: refused in one line before a run is opened -------------------------


def adder_checkpoint(folder: Path) -> Path:
    from rnnlab.config import Config
    from rnnlab.training.loop import Trainer

    cfg = Config()
    cfg.task.name, cfg.hidden_size, cfg.seq_length = "adder", 8, 8
    return Trainer(cfg).save(folder)


def crafted(kind: str, folder: Path) -> Path:
    """A copy of a real checkpoint with one thing wrong."""
    import io
    import json
    import zipfile

    import numpy as np

    from rnnlab.training import checkpoint

    good = adder_checkpoint(folder)
    arrays, meta = checkpoint.load(good)
    out = folder / f"{kind}.npz"
    if kind == "no_weights":
        arrays = {k: v for k, v in arrays.items() if not k.startswith("param/")}
    elif kind == "text_iteration":
        meta = json.loads(json.dumps(meta))
        meta["state"]["iteration"] = "lots"
    elif kind == "config_disagrees":
        meta = json.loads(json.dumps(meta))
        meta["config"]["hidden_size"] = 10**7
    if kind != "huge_shape":
        return checkpoint.save(out, arrays, meta)
    header = io.BytesIO()  # a .npy that declares 10^12 float64s and holds 16 bytes
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)}
    )
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info.filename, header.getvalue() + b"\0" * 16 if
                         info.filename == "param/Whh.npy" else data)  # fmt: skip
    return out


CRAFTED = {
    "no_weights": "is a checkpoint without weights",
    "text_iteration": "its iteration 'lots' is not an integer",
    "config_disagrees": "its Wxh has shape (8, 2); its config (cell=rnn, hidden_size=10000000) "
    "makes (10000000, 2)",
    "huge_shape": "member param/Whh.npy declares shape (1000000000000,) of float64",
}


@pytest.mark.parametrize("kind", CRAFTED)
def test_a_crafted_checkpoint_is_one_line_in_sample_and_resume(kind, tmp_path, monkeypatch):
    path = crafted(kind, tmp_path)
    with pytest.raises(UserError) as e:
        load_weights(path)
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)
    assert CRAFTED[kind] in str(e.value)  # checkpoint.Checkpoint.read: one wording everywhere
    monkeypatch.chdir(tmp_path)
    message = refused([f"resume={path}", "iterations=20"])
    assert CRAFTED[kind] in message
    assert not (tmp_path / "mlflow.db").exists()  # refused before any store or run


@pytest.mark.slow
def test_resume_from_a_checkpoint_without_weights_opens_no_run(tmp_path):
    path = crafted("no_weights", tmp_path)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(store).search_experiments()  # an existing store, which must stay empty
    done = run_cli([f"resume={path}", "iterations=20", f"tracking.uri={store}"], cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert CRAFTED["no_weights"] in done.stderr
    client = MlflowClient(store)
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []
