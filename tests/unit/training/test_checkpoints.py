"""Checkpoints: plain .npz round trips, a run that continues bit for bit, and one-line refusals
of anything else (truncated, foreign, pickle-bearing) that never unpickle what they refuse."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from rnnlab.config import Config, DataConfig, OptimizerConfig, TaskConfig
from rnnlab.training import checkpoint
from rnnlab.training.checkpoint import CheckpointError
from rnnlab.training.loop import Trainer


def sample_checkpoint(path: Path) -> tuple[dict, dict]:
    arrays = {
        "param/Wxh": np.arange(12, dtype=np.float64).reshape(3, 4) / 7,
        "param/bh": np.array([1e-300, -0.0, np.pi], dtype=np.float32),
        "optim/steps": np.array(42),
        "data/pointers": np.array([0, 25, 50], dtype=np.int64),
        "vocab": np.array(list("\n ab☃")),
    }
    meta = {"state": {"iteration": 42, "smooth_loss": 83.2}, "task": "charrnn"}
    checkpoint.save(path, arrays, meta)
    return arrays, meta


def one_line_error(path: Path) -> str:
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_save_load_round_trip_is_exact(tmp_path):
    path = tmp_path / "ck" / "iter_0000042.npz"
    arrays, meta = sample_checkpoint(path)
    got_arrays, got_meta = checkpoint.load(path)
    assert set(got_arrays) == set(arrays)
    for k, v in arrays.items():
        assert got_arrays[k].dtype == v.dtype and np.array_equal(got_arrays[k], v), k
    assert got_meta == {"format": checkpoint.FORMAT, **meta}
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no .tmp left
    # It is an ordinary .npz: numpy reads it without pickle.
    with np.load(path, allow_pickle=False) as npz:
        assert json.loads(str(npz["__meta__"]))["state"]["iteration"] == 42


def test_truncated_file_is_refused(tmp_path):
    path = tmp_path / "iter_0000042.npz"
    sample_checkpoint(path)
    data = path.read_bytes()
    for keep in (len(data) // 2, 10, 0):
        path.write_bytes(data[:keep])
        msg = one_line_error(path)
        assert "truncated or not an .npz" in msg or "not a valid checkpoint" in msg


def test_missing_and_foreign_files_are_refused(tmp_path):
    assert "no checkpoint at" in one_line_error(tmp_path / "nothing.npz")
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.ones(3))
    assert "not an rnnlab checkpoint" in one_line_error(foreign)
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    assert "truncated or not an .npz" in one_line_error(text)
    bad_meta = tmp_path / "bad_meta.npz"
    np.savez(bad_meta, __meta__=np.array("{not json"))
    assert "unreadable metadata" in one_line_error(bad_meta)
    other = tmp_path / "other_format.npz"
    np.savez(other, __meta__=np.array(json.dumps({"format": "something-else"})))
    assert "'something-else'" in one_line_error(other)


def _payload(path: str) -> None:
    Path(path).write_text("unpickled!")


class Bomb:
    """Unpickling this object writes a marker file: proof that pickle ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (_payload, (self.marker,))


def test_pickle_bearing_npz_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "marker.txt"
    for name, extra in [("bare", {}), ("with_meta", {"__meta__": json.dumps({"format": "x"})})]:
        path = tmp_path / f"{name}.npz"
        meta = {k: np.array(v) for k, v in extra.items()}
        np.savez(path, x=np.array([{"a": 1}], dtype=object), bomb=np.array([Bomb(marker)]), **meta)
        msg = one_line_error(path)
        assert "pickled objects; refusing to load it" in msg
        assert not marker.exists()
    raw = tmp_path / "iter_0000001.npz"  # a bare pickle stream under a checkpoint's name
    raw.write_bytes(pickle.dumps(Bomb(marker)))
    assert "not an .npz checkpoint" in one_line_error(raw)
    assert not marker.exists()
    # The payload is live: loading it the unsafe way would have run it.
    with np.load(tmp_path / "bare.npz", allow_pickle=True) as npz:
        npz["bomb"]
    assert marker.read_text() == "unpickled!"


def test_checkpoint_zip_holds_no_pickle(tmp_path):
    path = tmp_path / "iter_0000001.npz"
    sample_checkpoint(path)
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            header = z.read(name)[:128]  # every member is a plain .npy, none of dtype object
            assert header.startswith(b"\x93NUMPY") and b"'|O'" not in header, name


def test_latest_ignores_tmp_leftovers(tmp_path):
    assert checkpoint.latest(tmp_path) is None
    sample_checkpoint(tmp_path / "iter_0000100.npz")
    sample_checkpoint(tmp_path / "iter_0001000.npz")
    (tmp_path / "iter_0002000.npz.tmp").write_bytes(b"half a checkpoint")  # a crash mid-write
    (tmp_path / "iter_0003000.npz.tmp").write_bytes(b"")
    assert checkpoint.latest(tmp_path) == tmp_path / "iter_0001000.npz"


# --- a run continues bit for bit from its checkpoint ----------------------------------------------


def small_config(task: str, text_path: Path) -> Config:
    if task == "adder":
        t = TaskConfig(name="adder", activation="sigmoid", loss="mse", init="uniform", init_scale=1)
        return Config(task=t, optimizer=OptimizerConfig(name="adam", clip=None), hidden_size=8,
                      seq_length=8, batch_size=4, learning_rate=0.01, seed=3)  # fmt: skip
    return Config(data=DataConfig(name="file", path=str(text_path)), hidden_size=12,
                  seq_length=9, batch_size=3, seed=5, dtype="float32")  # fmt: skip


@pytest.mark.parametrize("task", ["charrnn", "adder"])
def test_trainer_continues_identically_after_load(tmp_path, task):
    text_path = tmp_path / "text.txt"
    text_path.write_text("".join(np.random.default_rng(0).choice(list("abcde \n"), 3000)))
    cfg = small_config(task, text_path)

    straight = Trainer(cfg)
    losses = [straight.step()[0] for _ in range(150)]  # passes a stream wrap for the char task

    first = Trainer(cfg)
    for _ in range(60):
        first.step()
    path = first.save(tmp_path / "ck")
    assert path.name == "iter_0000060.npz"
    resumed = Trainer(cfg)
    resumed.load(path)
    assert resumed.state == first.state
    resumed_losses = [resumed.step()[0] for _ in range(90)]

    assert resumed_losses == losses[60:]  # exact floats
    assert np.array_equal(resumed.flat, straight.flat)
    assert np.array_equal(resumed.h, straight.h)
    assert resumed.state.smooth_loss == straight.state.smooth_loss
    # The sample stream continues too.
    assert resumed.sample_rng.random() == straight.sample_rng.random()


def test_load_refuses_a_checkpoint_of_another_shape(tmp_path):
    text_path = tmp_path / "text.txt"
    text_path.write_text("abcde fghij\n" * 100)
    cfg = small_config("charrnn", text_path)
    path = Trainer(cfg).save(tmp_path / "ck")
    cfg.hidden_size = 13
    with pytest.raises(CheckpointError, match=r"Wxh has shape \(12, 12\), this config makes"):
        Trainer(cfg).load(path)
