"""Resume: a run stopped by SIGINT and resumed equals one never stopped, bit for bit.

The in-process tests stop the loop at an exact iteration between two log points (a real SIGINT
the process sends itself while an evaluation is being logged), so the interval sums, hidden
states, data pointers and RNG states must all line up. The CLI tests do what a user does: start
``python -m rnnlab.run``, send SIGINT from outside once the run is a quarter done, resume with
``resume=<run_id>`` into the same MLflow run, and compare everything against an uninterrupted run.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.processes import run_cli
from helpers.stop_at import StopAt
from mlflow.tracking import MlflowClient

from rnnlab.config import Config
from rnnlab.sweeps.compose import CONFIG_DIR
from rnnlab.sweeps.preflight import UserError, preflight
from rnnlab.tracking.store import checkpoint_artifacts
from rnnlab.training import checkpoint
from rnnlab.training.loop import Interrupted, train
from rnnlab.training.tracker import MemoryTracker

COMPARED = ("train/loss", "train/smooth_loss", "train/grad_norm")


def small_config(task: str, batch_size: int, kafka_path: Path, iterations: int) -> Config:
    cfg = Config()
    if task == "adder":
        cfg.task.name, cfg.task.activation, cfg.task.loss = "adder", "sigmoid", "mse"
        cfg.task.init, cfg.task.init_scale = "uniform", 1.0
        cfg.optimizer.name, cfg.optimizer.clip = "sgd", None
        cfg.hidden_size, cfg.seq_length, cfg.task.eval_max_pairs = 16, 8, 1024
    else:
        cfg.data.path, cfg.data.val_fraction = str(kafka_path), 0.01  # short evaluations
        cfg.hidden_size, cfg.seq_length = 24, 16
    cfg.batch_size, cfg.iterations = batch_size, iterations
    cfg.log_every, cfg.eval_every, cfg.sample_every, cfg.checkpoint_every = 10, 7, 50, 100
    cfg.sample_length = 20
    return cfg


def checkpoint_arrays(path: Path) -> dict[str, np.ndarray]:
    arrays, _ = checkpoint.load(path)
    return arrays


def assert_same_arrays(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


@pytest.mark.parametrize(
    "task,batch_size", [("charrnn", 1), ("charrnn", 4), ("adder", 1), ("adder", 8)]
)
def test_sigint_mid_interval_then_resume_is_bitwise(task, batch_size, kafka_path, tmp_path):
    n, k = 300, 147  # 147: an evaluation step (7 | 147) between log points (10 ∤ 147)
    cfg = small_config(task, batch_size, kafka_path, n)
    whole = MemoryTracker()
    final_a = train(cfg, whole, tmp_path / "a", show_progress=False)

    first = StopAt(k)
    with pytest.raises(Interrupted) as stopped:
        train(cfg, first, tmp_path / "b", show_progress=False)
    assert stopped.value.iteration == k
    assert stopped.value.checkpoint_path == tmp_path / "b" / "checkpoints" / f"iter_{k:07d}.npz"
    state = checkpoint.load(stopped.value.checkpoint_path)[1]["state"]
    assert state["interval_count"] == k % cfg.log_every  # the unfinished log window is carried
    second = MemoryTracker()
    final_b = train(
        cfg, second, tmp_path / "b", resume_from=stopped.value.checkpoint_path, show_progress=False
    )

    keys = [*COMPARED, *(key for key in whole.history if key.startswith("val/"))]
    for key in keys:
        assert first.history[key] + second.history[key] == whole.history[key], key
    assert first.history["train/loss"][-1][0] == 140 and second.history["train/loss"][0][0] == 150
    for key in final_a:
        if "train_seconds" not in key and "chars_per_sec" not in key:
            assert final_a[key] == final_b[key], key
    assert_same_arrays(
        checkpoint_arrays(tmp_path / "a" / "checkpoints" / f"iter_{n:07d}.npz"),
        checkpoint_arrays(tmp_path / "b" / "checkpoints" / f"iter_{n:07d}.npz"),
    )


def test_training_seconds_add_up_across_a_resume_and_skip_the_pause(kafka_path, tmp_path):
    """``perf/train_seconds`` and ``final/train_seconds`` count training time only: a resume
    adds its own to what the checkpoint carries, and the pause between the two processes (which
    MLflow's Duration includes) is not in them."""
    import time

    cfg = small_config("adder", 1, kafka_path, 300)
    first = StopAt(147)
    with pytest.raises(Interrupted) as stopped:
        train(cfg, first, tmp_path, show_progress=False)
    carried = checkpoint.load(stopped.value.checkpoint_path)[1]["state"]["elapsed"]
    pause = 1.5
    time.sleep(pause)
    second, started = MemoryTracker(), time.perf_counter()
    final = train(cfg, second, tmp_path, resume_from=stopped.value.checkpoint_path,
                  show_progress=False)  # fmt: skip
    this_process = time.perf_counter() - started
    total = final["final/train_seconds"]
    print(f"carried {carried:.3f} s, resumed process {this_process:.3f} s, total {total:.3f} s")
    assert 0 < carried < total <= carried + this_process  # time since the first start: fails
    points = [
        v for _, v in first.history["perf/train_seconds"] + second.history["perf/train_seconds"]
    ]
    assert points == sorted(points) and second.history["perf/train_seconds"][0][1] > carried


def test_resume_checks_its_own_oracle(kafka_path, tmp_path):
    """The comparison above can fail: resuming with a fresh optimizer memory (what "resume"
    means in char-rnn) or with the data pointer at 0 changes the trajectory."""
    cfg = small_config("charrnn", 1, kafka_path, 200)
    whole = MemoryTracker()
    train(cfg, whole, tmp_path / "a", show_progress=False)
    with pytest.raises(Interrupted) as stopped:
        train(cfg, StopAt(77), tmp_path / "b", show_progress=False)
    path = stopped.value.checkpoint_path
    for broken in ("optim/", "data/pointers"):
        arrays, meta = checkpoint.load(path)
        key = next(k for k in arrays if k.startswith(broken) and k != "optim/steps")
        arrays[key] = np.zeros_like(arrays[key])
        bad = checkpoint.save(tmp_path / f"bad_{key.replace('/', '_')}.npz", arrays, meta)
        resumed = MemoryTracker()
        train(cfg, resumed, tmp_path / "c", resume_from=bad, show_progress=False)
        assert resumed.history["train/loss"][-1] != whole.history["train/loss"][-1], broken


# --- the CLI: real processes, a real SIGINT, real SQLite stores ----------------------------------


def cli_args(task: str, batch_size: int, store: str, n: int, experiment: str) -> list[str]:
    common = [
        f"iterations={n}",
        f"batch_size={batch_size}",
        "log_every=10",
        "eval_every=250",
        "sample_every=1000",
        "checkpoint_every=1000",
        f"tracking.uri={store}",
        f"experiment_name={experiment}",
        "tracking.flush_points=200",
    ]
    if task == "adder":
        return ["task=adder", "task.eval_max_pairs=1024", *common]
    return [
        "hidden_size=24",
        "seq_length=16",
        "sample_length=20",
        "data.val_fraction=0.01",
        *common,
    ]


def only_run(client: MlflowClient, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    (run,) = client.search_runs([exp.experiment_id])
    return run


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def final_checkpoint(client: MlflowClient, run_id: str, n: int, dest: Path) -> dict:
    path = client.download_artifacts(run_id, f"checkpoints/iter_{n:07d}.npz", str(dest))
    return checkpoint_arrays(Path(path))


def start_and_interrupt(args: list[str], cwd: Path, after: int) -> tuple[int, str]:
    """Run the CLI, send SIGINT once its progress passes iteration ``after``; (exit code,
    stderr)."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnnlab.run", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            m = re.search(r" iter (\d+)/", line)
            if m and int(m.group(1)) >= after:
                proc.send_signal(signal.SIGINT)
                break
        rest = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, "".join(lines) + (rest or "")


def cli_resume_case(task, batch_size, store, tmp_path) -> dict:
    n = 4000
    client = MlflowClient(store)
    a = run_cli(cli_args(task, batch_size, store, n, "A"), cwd=tmp_path)
    assert a.returncode == 0, a.stderr[-2000:]

    code, err = start_and_interrupt(cli_args(task, batch_size, store, n, "B"), tmp_path, n // 4)
    assert code == 130, err[-2000:]
    killed = only_run(client, "B")
    assert killed.info.status == "KILLED"
    k = int(re.search(r"at iteration (\d+)", killed.data.tags["error"]).group(1))
    assert n // 4 <= k < n
    ckpts = [f.path for f in client.list_artifacts(killed.info.run_id, "checkpoints")]
    assert f"checkpoints/iter_{k:07d}.npz" in ckpts  # written at the kill point: nothing lost

    r = run_cli([f"resume={killed.info.run_id}", f"tracking.uri={store}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    run_a, run_b = only_run(client, "A"), only_run(client, "B")  # B: still one run
    assert run_b.info.run_id == killed.info.run_id and run_b.info.status == "FINISHED"
    assert "error" not in run_b.data.tags and run_b.data.tags["rnnlab.resumes"] == "1"
    assert f"iteration {k}) after KILLED" in run_b.data.tags["rnnlab.resume_1"]

    keys = [*COMPARED, *(key for key in run_a.data.metrics if key.startswith("val/"))]
    keys += [key for key in run_a.data.metrics if key.startswith("final/val")]
    assert len(keys) >= 5
    for key in keys:
        hist_b = history(client, run_b.info.run_id, key)
        assert len({s for s, _ in hist_b}) == len(hist_b), f"{key}: a step logged twice"
        assert hist_b == history(client, run_a.info.run_id, key), key
    assert_same_arrays(
        final_checkpoint(client, run_a.info.run_id, n, tmp_path / "a"),
        final_checkpoint(client, run_b.info.run_id, n, tmp_path / "b"),
    )
    return {"k": k, "run": run_b}


@pytest.mark.slow  # end to end: two CLI processes and a signal
def test_cli_sigint_then_resume_same_run_charrnn_b1(store, tmp_path):
    case = cli_resume_case("charrnn", 1, store, tmp_path)
    # A char-RNN run that finishes after a resume still ends with its model.
    assert case["run"].data.tags["rnnlab.model_uri"].startswith("models:/")


@pytest.mark.slow
@pytest.mark.parametrize("task,batch_size", [("charrnn", 4), ("adder", 1), ("adder", 8)])
def test_cli_sigint_then_resume_same_run(task, batch_size, store, tmp_path):
    cli_resume_case(task, batch_size, store, tmp_path)


# --- a finished run, checkpoint paths, refusals --------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A small char-RNN run, FINISHED at 600 iterations with checkpoints at 300 and 600."""
    folder = tmp_path_factory.mktemp("finished")
    store = f"sqlite:///{folder / 'mlflow.db'}"
    args = ["hidden_size=24", "seq_length=16", "iterations=600", "log_every=10",
            "eval_every=100", "sample_every=300", "checkpoint_every=300", "sample_length=20",
            f"tracking.uri={store}"]  # fmt: skip
    r = run_cli(args, cwd=folder)
    assert r.returncode == 0, r.stderr[-2000:]
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("charrnn").experiment_id])
    return {"folder": folder, "store": store, "run_id": run.info.run_id, "client": client}


def test_extend_a_finished_run_in_place(finished_run, tmp_path):
    client, run_id, store = finished_run["client"], finished_run["run_id"], finished_run["store"]
    before = history(client, run_id, "train/loss")
    r = run_cli([f"resume={run_id}", "iterations=900", f"tracking.uri={store}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    after = history(client, run_id, "train/loss")
    assert after[: len(before)] == before and [s for s, _ in after] == list(range(10, 901, 10))
    assert run.data.params["iterations"] == "600"  # MLflow params never change ...
    assert "iterations=900" in run.data.tags["rnnlab.resume_1"]  # ... the resume says why
    text = client.download_artifacts(run_id, "config_resume_1.yaml", str(tmp_path))
    assert "iterations: 900" in Path(text).read_text()
    assert checkpoint_artifacts(client, run)[-1] == "checkpoints/iter_0000900.npz"


def test_resume_from_a_checkpoint_file_starts_a_new_run(finished_run, tmp_path):
    client, run_id, store = finished_run["client"], finished_run["run_id"], finished_run["store"]
    src = Path(client.download_artifacts(run_id, "checkpoints/iter_0000300.npz", str(tmp_path)))
    r = run_cli(
        [f"resume={src}", "iterations=600", f"tracking.uri={store}", "experiment_name=from_file"],
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    new = only_run(client, "from_file")
    assert new.info.run_id != run_id and new.info.status == "FINISHED"
    assert new.data.params["resume"] == str(src)
    assert new.data.tags["rnnlab.resumed_from"] == str(src)
    assert new.data.tags["rnnlab.resumed_from_iteration"] == "300"
    # It continues exactly where the original run was at iteration 300.
    original = [p for p in history(client, run_id, "train/loss") if 300 < p[0] <= 600]
    assert history(client, new.info.run_id, "train/loss") == original


@pytest.mark.parametrize(
    "override,expected",
    [
        ("hidden_size=32", "hidden_size=32 cannot change on resume"),
        ("task=adder", "task.name=adder cannot change on resume"),
        ("dtype=float32", "dtype=float32 cannot change on resume"),
        ("batch_size=2", "batch_size=2 cannot change on resume"),
        ("optimizer=adam", "optimizer.name=adam cannot change on resume"),
        ("data.val_fraction=0.2", "data.val_fraction=0.2 cannot change on resume"),
        ("iterations=300", "the checkpoint is at iteration"),
    ],
)
def test_resume_refuses_what_would_change_the_model(finished_run, override, expected):
    args = [f"resume={finished_run['run_id']}", override, f"tracking.uri={finished_run['store']}"]
    with pytest.raises(UserError, match=re.escape(expected)) as e:
        preflight(CONFIG_DIR, "config", args)
    assert "\n" not in str(e.value)


def test_resume_refusals_on_the_command_line(finished_run, tmp_path):
    store = finished_run["store"]
    for args, expected in (
        ([f"resume={finished_run['run_id']}", "hidden_size=32"], "hidden_size=32 cannot change"),
        (["resume=0123456789abcdef0123456789abcdef"], "no run '0123456789abcdef"),
        ([f"resume={tmp_path / 'nope.npz'}"], "neither a run id"),
        (["-m", f"resume={finished_run['run_id']}"], "drop -m"),
    ):
        r = run_cli([*args, f"tracking.uri={store}"], cwd=tmp_path)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("rnnlab: error: ") and expected in lines[0]


def test_a_changed_corpus_is_refused(kafka_path, tmp_path):
    """Same data.path, different text: the checkpoint's vocabulary no longer fits."""
    text = tmp_path / "corpus.txt"
    shutil.copy(kafka_path, text)
    cfg = small_config("charrnn", 1, text, 20)
    train(cfg, MemoryTracker(), tmp_path / "run", show_progress=False)
    edited = text.read_text(encoding="utf-8").replace("Gregor", "Gregör")  # in the story itself
    text.write_text(edited, encoding="utf-8")
    ckpt = tmp_path / "run" / "checkpoints" / "iter_0000020.npz"
    with pytest.raises(UserError, match="different vocabulary") as e:
        preflight(CONFIG_DIR, "config", [f"resume={ckpt}", "iterations=40"])
    assert "\n" not in str(e.value)


# --- broken, interrupted and hostile checkpoint files --------------------------------------------

CRASH_BETWEEN_WRITE_AND_RENAME = """
import os, signal, sys
from pathlib import Path
import numpy as np
from rnnlab.training import checkpoint
folder = Path(sys.argv[1])
checkpoint.save(folder / "iter_0000100.npz", {"w": np.ones(3)}, {"state": {"iteration": 100}})
def crash(src, dst):  # the process dies after the temp file is written, before the rename
    os.kill(os.getpid(), signal.SIGKILL)
os.replace = crash
checkpoint.save(folder / "iter_0000200.npz", {"w": np.full(3, 2.0)}, {"state": {"iteration": 200}})
"""


def test_a_write_killed_before_its_rename_is_never_the_latest(tmp_path):
    r = subprocess.run(
        [sys.executable, "-c", CRASH_BETWEEN_WRITE_AND_RENAME, str(tmp_path)], timeout=120
    )
    assert r.returncode == -signal.SIGKILL
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names[1:] == ["iter_0000100.npz"], names
    assert names[0].startswith(".iter_0000200.npz.") and names[0].endswith(".tmp"), names
    assert checkpoint.latest(tmp_path) == tmp_path / "iter_0000100.npz"
    assert checkpoint.load(checkpoint.latest(tmp_path))[1]["state"]["iteration"] == 100


def test_a_tmp_artifact_is_never_picked_from_a_run(finished_run, tmp_path):
    client, run_id = finished_run["client"], finished_run["run_id"]
    leftover = tmp_path / "iter_9999999.npz.tmp"
    leftover.write_bytes(b"half a checkpoint")
    client.log_artifact(run_id, str(leftover), "checkpoints")
    latest = checkpoint_artifacts(client, client.get_run(run_id))[-1]
    assert latest is not None and not latest.endswith(".tmp")


def test_a_truncated_checkpoint_gives_one_line(finished_run, tmp_path):
    client, run_id = finished_run["client"], finished_run["run_id"]
    good = Path(client.download_artifacts(run_id, "checkpoints/iter_0000300.npz", str(tmp_path)))
    cut = tmp_path / "iter_0000300_cut.npz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(checkpoint.CheckpointError) as e:
        checkpoint.load(cut)
    assert "truncated" in str(e.value) and "\n" not in str(e.value)
    for args, module in (
        ([f"resume={cut}"], "rnnlab.run"),
        ([f"checkpoint={cut}"], "rnnlab.sample"),
    ):
        r = run_cli(args, cwd=tmp_path, module=module)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and "truncated" in lines[0], r.stderr


class Planted:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def hostile_checkpoint(path: Path, marker: Path) -> Path:
    meta = np.array('{"format": "rnnlab-checkpoint-1", "config": {}, "state": {}}')
    with open(path, "wb") as f:
        np.savez(f, __meta__=meta, **{"param/Wxh": np.array([Planted(marker)], dtype=object)})
    return path


def test_a_pickle_bearing_checkpoint_is_rejected_not_executed(finished_run, tmp_path):
    client, store = finished_run["client"], finished_run["store"]
    marker = tmp_path / "pwned"
    evil = hostile_checkpoint(tmp_path / "iter_0000900.npz", marker)
    # A killed run whose newest checkpoint artifact is the hostile file.
    exp = client.get_experiment_by_name("charrnn").experiment_id
    run_id = client.create_run(exp, tags={"rnnlab.task": "charrnn"}).info.run_id
    client.set_terminated(run_id, "KILLED")

    with pytest.raises(checkpoint.CheckpointError, match="pickled objects"):
        checkpoint.load(evil)
    client.log_artifact(run_id, str(evil), "checkpoints")
    cases = [
        ([f"resume={run_id}", "iterations=5000", f"tracking.uri={store}"], "rnnlab.run"),
        ([f"resume={evil}", f"tracking.uri={store}"], "rnnlab.run"),
        ([f"checkpoint={evil}"], "rnnlab.sample"),
        ([f"run_id={run_id}", f"tracking_uri={store}"], "rnnlab.sample"),
    ]
    for args, module in cases:
        r = run_cli(args, cwd=tmp_path, module=module)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, r.stderr
        assert "pickled objects; refusing to load it" in lines[0]
    assert not marker.exists()

    # The oracle: the file really is hostile, as np.load(allow_pickle=True) shows.
    with np.load(evil, allow_pickle=True) as npz:
        npz["param/Wxh"]
    assert marker.exists()
