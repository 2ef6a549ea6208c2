"""The long-memory tasks downstream of the loop, with no special case: a run stopped by SIGINT
resumes bit for bit, a tracked run records its held-out set as its dataset and logs its
diagnostics and unit page, ``rnnlab.sample`` recalls a copy run's symbols, ``rnnlab.inspect``
shows an adding run's marker and running-sum units, and the commands that mean nothing for a
task refuse in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.processes import run_cli
from helpers.stop_at import StopAt
from mlflow.tracking import MlflowClient

from rnnlab import inspect, sample, score
from rnnlab.analysis.viewer import sequence_analysis
from rnnlab.inference.weights import load_weights
from rnnlab.sweeps.compose import compose
from rnnlab.tasks import TASKS
from rnnlab.training import checkpoint
from rnnlab.training.loop import Interrupted, train
from rnnlab.training.tracker import MemoryTracker

SMALL = ["hidden_size=8", "batch_size=4", "task.length=6", "task.eval_size=40", "log_every=10",
         "eval_every=7", "sample_every=50", "checkpoint_every=100",
         "tracking.enabled=false"]  # fmt: skip


@pytest.mark.parametrize("task", ["adding", "copy", "digits"])
def test_sigint_then_resume_is_bitwise(task, tmp_path):
    cfg = compose([f"task={task}", "cell=lstm", "iterations=60", *SMALL])
    whole = MemoryTracker()
    final_a = train(cfg, whole, tmp_path / "a", show_progress=False)
    first = StopAt(35)
    with pytest.raises(Interrupted) as stopped:
        train(cfg, first, tmp_path / "b", show_progress=False)
    second = MemoryTracker()
    final_b = train(cfg, second, tmp_path / "b", resume_from=stopped.value.checkpoint_path,
                    show_progress=False)  # fmt: skip
    for key in [k for k in whole.history if k.startswith(("train/", "val/", "diag/grad"))]:
        assert first.history.get(key, []) + second.history[key] == whole.history[key], key
    for key in final_a:
        if "train_seconds" not in key and "chars_per_sec" not in key:
            assert final_a[key] == final_b[key], key
    a, _ = checkpoint.load(tmp_path / "a" / "checkpoints" / "iter_0000060.npz")
    b, _ = checkpoint.load(tmp_path / "b" / "checkpoints" / "iter_0000060.npz")
    assert all((a[k] == b[k]).all() for k in a)


def command(module, argv: list[str], capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a command's ``main`` run in this process."""
    with pytest.raises(SystemExit) as done:
        module.main(argv)
    out = capsys.readouterr()
    return done.value.code, out.out, out.err


@pytest.fixture(scope="module")
def adding_run(tmp_path_factory):
    """(folder, store, run id) of a tracked adding run through the real CLI: a GRU at T = 10,
    stopped once solved."""
    folder = tmp_path_factory.mktemp("adding")
    store = f"sqlite:///{folder / 'mlflow.db'}"
    r = run_cli(["task=adding", "task.length=10", "cell=gru", "iterations=1500",
                 "early_stop.solved=true", "eval_every=100", "sample_every=500",
                 "checkpoint_every=1500", f"tracking.uri={store}"], cwd=folder)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("adding").experiment_id])
    return folder, store, run.info.run_id


@pytest.mark.slow
def test_a_tracked_run_records_its_data_diagnostics_and_page(adding_run, capsys):
    folder, store, run_id = adding_run
    client = MlflowClient(store)
    run = client.get_run(run_id)
    (dataset,) = [d.dataset for d in run.inputs.dataset_inputs]
    assert dataset.name == "adding-T10-eval1000"
    assert run.data.tags["rnnlab.dataset_sha256"].startswith(dataset.digest)
    m = run.data.metrics
    assert m["final/val_mse_baseline"] == pytest.approx(1 / 6)
    print(f"solved at {m.get('iters_to_solve')}: val/solved_frac {m['final/val_solved_frac']}")
    assert m["final/val_solved_frac"] >= 0.95
    assert run.data.tags["rnnlab.stopped_early"] == str(int(m["iters_to_solve"]))
    assert "diag/grad_decay" in m and "diag/saturation/z" in m  # the GRU's gates too
    artifacts = [f.path for f in client.list_artifacts(run_id, "diagnostics")]
    assert artifacts and all(p.endswith(".csv") for p in artifacts)
    local = client.download_artifacts(run_id, "inspect/index.html", str(folder))
    logged = Path(local).read_text(encoding="utf-8")
    for feature in ("a marker has been seen", "running sum of the marked values"):
        assert f"tracks “{feature}”" in logged  # the trained units clear |r| ≥ 0.1
    # the analogue of the adder's carry neuron: units that hold "a marker has been seen" and the
    # running sum, in a network that solved the task (an unsolved vanilla RNN: |r| ≈ 0.5-0.6)
    w = load_weights(max(folder.glob("outputs/**/checkpoints/iter_*.npz")))
    analysis = sequence_analysis(TASKS["adding"](w.cfg, np.random.default_rng(0)), w.params)
    best = {feature: abs(r) for feature, _, r in analysis.feature_table}
    print({k: round(v, 3) for k, v in best.items()})
    assert best["a marker has been seen"] > 0.8 and best["running sum of the marked values"] > 0.8
    # the command writes the page from the run's weights; text= means nothing here
    page = folder / "page.html"
    where = [f"run_id={run_id}", f"tracking_uri={store}"]
    assert command(inspect, [*where, f"out={page}"], capsys)[0] == 0
    assert page.read_text(encoding="utf-8").count('class="unit"') == 4
    code, _, err = command(inspect, [*where, "text=abc"], capsys)
    assert code == 2 and "is a run of task adding: text= and path= are for" in err
    code, _, err = command(sample, where, capsys)
    assert code == 2 and "is a run of task adding: nothing to sample" in err


def test_sample_recalls_a_copy_runs_symbols_and_refuses_in_one_line(tmp_path, capsys):
    cfg = compose(["task=copy", "task.length=4", "task.copy_symbols=3", "iterations=100",
                   "eval_every=50", "hidden_size=16", "tracking.enabled=false"])  # fmt: skip
    train(cfg, MemoryTracker(), tmp_path, show_progress=False)
    where = [f"checkpoint={tmp_path / 'checkpoints' / 'iter_0000100.npz'}"]
    code, out, err = command(sample, [*where, "symbols=312"], capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == "3 symbols, 4 blanks, a delimiter; then the recall:"
    assert lines[-1].startswith("312 -> ") and lines[-1].endswith("/3 right)")
    assert len(lines) == 5  # a line per recalled step between them
    for module, args, message in [
        (sample, ["symbols=3129"], "symbols='3129' is not allowed: 3 symbols from 12345678"),
        (sample, ["symbols=39"], "symbols='39' is not allowed: 3 symbols"),
        (sample, [], "is a copy run: give symbols="),
        (score, ["text=abc"], "is a model of task copy, not a char-RNN"),
        (inspect, ["text=abc"], "is a run of task copy: text= and path= are for"),
    ]:
        code, out, err = command(module, [*where, *args], capsys)
        assert code == 2 and message in err, (args, out, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    code, _, err = command(inspect, [*where, f"out={tmp_path / 'copy.html'}"], capsys)
    assert code == 0, err
    assert "recalling (after the delimiter)" in (tmp_path / "copy.html").read_text("utf-8")
