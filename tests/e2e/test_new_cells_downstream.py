"""The cells after the classic three downstream of the engine: bit-for-bit resume after SIGINT with
dropout on (both tasks), samples and ``rnnlab.sample``, scoring, the unit viewer, the export (and
docs/cells.md's numpy forward over it), and — slow — the served model and the report over a sweep
of every cell."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.processes import ROOT, run_cli
from helpers.stop_at import StopAt

from rnnlab.config import Config
from rnnlab.engine import rnn
from rnnlab.training import checkpoint
from rnnlab.training.loop import Interrupted, Trainer, train
from rnnlab.training.tracker import MemoryTracker

NEW = ("irnn", "indrnn", "mingru", "minlstm", "lru")
COMPARED = ("train/loss", "train/smooth_loss", "train/grad_norm")
# The char-RNN carries each stream's state through the whole text: a recurrence that can grow
# (the IRNN's Whh = I, an IndRNN's |u| > 1) explodes over it, so these start below 1; Adagrad's
# first step moves every weight by ±learning_rate, too much for the IRNN and the (linear) LRU
LEARNING_RATE = {"irnn": 0.003, "lru": 0.01}


def small_config(task: str, cell: str, kafka_path: Path, iterations: int) -> Config:
    cfg = Config()
    cfg.cell, cfg.layers, cfg.dropout = cell, 2, 0.25
    if task == "adder":
        cfg.task.name, cfg.task.activation, cfg.task.loss = "adder", "sigmoid", "mse"
        cfg.task.init, cfg.task.init_scale = "uniform", 1.0
        cfg.optimizer.name, cfg.optimizer.clip = "adam", None
        cfg.hidden_size, cfg.seq_length, cfg.task.eval_max_pairs = 8, 8, 256
        cfg.learning_rate, cfg.batch_size = 0.01, 4
    else:
        cfg.data.path, cfg.data.val_fraction = str(kafka_path), 0.005  # short evaluations
        cfg.hidden_size, cfg.seq_length, cfg.batch_size = 12, 10, 3
        cfg.learning_rate = LEARNING_RATE.get(cell, 0.1)
        cfg.irnn.identity_scale, cfg.indrnn.magnitude = 0.5, 1.0
    cfg.iterations = iterations
    cfg.log_every, cfg.eval_every, cfg.sample_every, cfg.checkpoint_every = 10, 7, 50, 100
    cfg.sample_length = 20
    return cfg


@pytest.mark.parametrize("task", ["charrnn", "adder"])
@pytest.mark.parametrize("cell", NEW)
def test_sigint_then_resume_is_bitwise_with_dropout(task, cell, kafka_path, tmp_path):
    n, k = 120, 63  # 63: an evaluation step (7 | 63) between log points (10 ∤ 63)
    cfg = small_config(task, cell, kafka_path, n)
    whole = MemoryTracker()
    final_a = train(cfg, whole, tmp_path / "a", show_progress=False)
    first = StopAt(k)
    with pytest.raises(Interrupted) as stopped:
        train(cfg, first, tmp_path / "b", show_progress=False)
    assert stopped.value.iteration == k
    stop_ck = checkpoint.Checkpoint.read(stopped.value.checkpoint_path)
    H = 12 if task == "charrnn" else 8
    assert stop_ck.state["hprev"].shape == (2, 2 if cell == "lru" else 1, cfg.batch_size, H)
    second = MemoryTracker()
    final_b = train(cfg, second, tmp_path / "b", resume_from=stopped.value.checkpoint_path,
                    show_progress=False)  # fmt: skip
    keys = [*COMPARED, *(key for key in whole.history if key.startswith(("val/", "diag/")))]
    for key in keys:  # NaN equal to NaN: a diagnostic with nothing to fit is NaN on both sides
        got = np.array(first.history[key] + second.history[key], dtype=float)
        assert np.array_equal(got, np.array(whole.history[key], dtype=float), equal_nan=True), key
    for key in final_a:
        if "train_seconds" not in key and "chars_per_sec" not in key:
            assert final_a[key] == final_b[key], key
    a, _ = checkpoint.load(tmp_path / "a" / "checkpoints" / f"iter_{n:07d}.npz")
    b, _ = checkpoint.load(tmp_path / "b" / "checkpoints" / f"iter_{n:07d}.npz")
    assert sorted(a) == sorted(b)
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    # the oracle has teeth: training moved the weights
    start = Trainer(cfg)
    W_in = rnn.layer_names(start.spec, 0)[0]
    moved = [k for k in a if k.endswith(W_in)]
    assert moved and not np.array_equal(a[moved[0]], start.params[W_in])


def test_the_indrnn_bound_holds_through_training(kafka_path):
    """|u| ≤ 2^(1/horizon) after every update, even with steps large enough to push it out."""
    cfg = small_config("charrnn", "indrnn", kafka_path, 30)
    cfg.indrnn.horizon, cfg.indrnn.magnitude = 1000, 2.0
    t = Trainer(cfg)
    u_max = 2 ** (1 / 1000)
    for _ in range(30):
        t.step()
        assert max(np.abs(t.params[f"u_l{k}"]).max() for k in range(2)) <= u_max
    assert max(np.abs(t.params[f"u_l{k}"]).max() for k in range(2)) == pytest.approx(u_max)


def test_the_indrnn_horizon_is_a_sequence_tasks_whole_sequence():
    """On the adding problem BPTT runs over whole sequences of task.length steps: the bound's
    horizon, and the top layer's u drawn in [2^(-1/T), 2^(1/T)]."""
    from rnnlab.sweeps.compose import compose

    cfg = compose(["task=adding", "task.length=16", "cell=indrnn", "layers=2",
                   "tracking.enabled=false"])  # fmt: skip
    t = Trainer(cfg)
    u_max = 2 ** (1 / 16)
    assert np.abs(t.params["u_l0"]).max() <= u_max and t.params["u_l0"].min() >= 0
    assert t.params["u_l1"].min() >= 1 / u_max and t.params["u_l1"].max() <= u_max
    assert t.params["u_l1"].max() > 2 ** (1 / 25)  # not the char-RNN's 25-step window


def docs_forward():
    """The numpy reference forward docs/cells.md shows, as a namespace (run as written)."""
    text = (ROOT / "docs" / "cells.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- reference-forward -->\n```python\n(.*?)```", text, re.S)
    assert block, "docs/cells.md has no reference forward"
    space: dict = {}
    exec(compile(block.group(1), "docs/cells.md", "exec"), space)  # noqa: S102
    return space


@pytest.mark.parametrize("cell", NEW)
def test_sample_score_inspect_and_export(cell, kafka_path, tmp_path):
    """A two-layer run of the cell: ``rnnlab.sample`` draws what the trainer's sampler draws,
    scoring its held-out text gives its val/loss, the viewer pages build, and its export read
    back — by docs/cells.md's numpy forward, or PyTorch's RNN equations for the IRNN — scores
    the same text as ``rnnlab.score``."""
    from rnnlab.analysis import viewer
    from rnnlab.inference.export import export
    from rnnlab.inference.generate import generate_text
    from rnnlab.inference.scoring import score_text
    from rnnlab.inference.weights import load_weights

    cfg = small_config("charrnn", cell, kafka_path, 40)
    cfg.eval_every = 40
    final = train(cfg, MemoryTracker(), tmp_path / "c", show_progress=False)
    path = tmp_path / "c" / "checkpoints" / "iter_0000040.npz"
    w = load_weights(path)
    assert rnn.spec_of(w.cfg) == rnn.Spec(cell, 2, 12, "tanh", 0.25)
    t = Trainer(cfg)
    t.load(path)
    ours = t.task.generate(t.params, np.random.default_rng(4), "The", 40, 0.9)
    assert generate_text(w, "The", 40, 0.9, np.random.default_rng(4)) == ours
    r = run_cli([f"checkpoint={path}", "prime=The", "length=40", "temperature=0.9", "seed=4"],
                cwd=tmp_path, module="rnnlab.sample")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.rstrip("\n") == ours

    val_text = w.vocab.decode(t.task.val_data)
    scored = score_text(w, val_text)["nats_per_char"]
    assert scored == pytest.approx(final["final/val_loss"], abs=1e-9)

    analyses = viewer.text_analyses(w.params, rnn.spec_of(w.cfg), w.vocab, val_text[:300])
    page = viewer.text_page(analyses, "units")
    assert len(analyses) == 2 and page.count('class="unit"') >= 2 and "nan" not in page.lower()

    out = export(w, tmp_path / f"{cell}.npz")
    text = val_text[:200]
    want = score_text(w, text)["nats_per_char"]
    with np.load(out) as f:
        files = set(f.files)
        if cell == "irnn":  # torch.nn.RNN(nonlinearity="relu"), PyTorch's documented forward
            assert "metadata" not in files
            got = relu_rnn_nats(f, text, w.vocab)
        else:
            meta = json.loads(str(f["metadata"]))
            assert meta["cell"] == cell and meta["layers"] == 2 and meta["equations"]
            got = docs_forward()["nats_per_char"](out, text)
    assert got == pytest.approx(want, abs=1e-9)


def relu_rnn_nats(f, text, vocab) -> float:
    """torch.nn.RNN(nonlinearity="relu") + Linear over one-hot inputs, from h = 0."""
    ids = [vocab.index[c] for c in text]
    h = [np.zeros(f["rnn.weight_hh_l0"].shape[0]) for _ in range(2)]
    nats = 0.0
    for a, b in zip(ids, ids[1:], strict=False):
        x = np.eye(len(vocab.chars))[a]
        for k in range(2):
            gi = f[f"rnn.weight_ih_l{k}"] @ x + f[f"rnn.bias_ih_l{k}"]
            gh = f[f"rnn.weight_hh_l{k}"] @ h[k] + f[f"rnn.bias_hh_l{k}"]
            h[k] = np.maximum(0, gi + gh)
            x = h[k]
        y = f["fc.weight"] @ x + f["fc.bias"]
        nats += np.logaddexp.reduce(y) - y[b]
    return nats / (len(ids) - 1)


@pytest.mark.parametrize("cell", NEW)
def test_the_adder_view_for_every_cell(cell, kafka_path, tmp_path):
    from rnnlab.analysis import viewer
    from rnnlab.analysis.units import analyse_adder
    from rnnlab.inference.generate import add_bit_by_bit
    from rnnlab.inference.weights import load_weights

    cfg = small_config("adder", cell, kafka_path, 30)
    train(cfg, MemoryTracker(), tmp_path / "d", show_progress=False)
    w = load_weights(tmp_path / "d" / "checkpoints" / "iter_0000030.npz")
    pred, lines = add_bit_by_bit(w, 77, 41)
    assert 0 <= pred < 256 and len(lines) == 10
    a, b = np.arange(20), np.arange(20)[::-1].copy()
    page = viewer.adder_page(analyse_adder(w.params, rnn.spec_of(w.cfg), 8, a, b), "adder")
    assert "carry" in page


# --- slow: one sweep over every cell, served and reported ---------------------------------------

SWEEP = ["-m", "cell=irnn,indrnn,mingru,minlstm,lru", "layers=2", "dropout=0.1", "hidden_size=16",
         "seq_length=16", "learning_rate=0.003", "irnn.identity_scale=0.5", "indrnn.magnitude=1",
         "iterations=150", "eval_every=50",
         "sample_every=150", "checkpoint_every=150", "data.val_fraction=0.01"]  # fmt: skip
REQUEST = {"prime": "Gregor", "length": 30, "temperature": 0.8, "seed": 3}
LOAD_EACH = """
import json, sys
import mlflow, pandas as pd
for uri in sys.argv[2:]:
    model = mlflow.pyfunc.load_model(uri)
    print(json.dumps(model.predict(pd.DataFrame([json.loads(sys.argv[1])]))["text"][0]))
"""


@pytest.fixture(scope="module")
def every_cell_sweep(tmp_path_factory, kafka_path):
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("every_cell")
    store = f"sqlite:///{folder / 'mlflow.db'}"
    r = run_cli([*SWEEP, f"data.path={kafka_path}", f"tracking.uri={store}"], cwd=folder,
                timeout=1200)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("charrnn").experiment_id
    runs = client.search_runs([experiment], "attributes.status = 'FINISHED'")
    runs = {r.data.params["cell"]: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert set(runs) == set(NEW)
    return {"store": store, "folder": folder, "runs": runs}


@pytest.mark.slow
def test_every_cell_is_served_as_rnnlab_sample_draws(every_cell_sweep):
    """Each run's logged MLflow model, loaded in a fresh process, generates the very text
    ``python -m rnnlab.sample`` prints for the same request."""
    s = every_cell_sweep
    uris = [f"runs:/{s['runs'][c].info.run_id}/model" for c in NEW]
    r = subprocess.run([sys.executable, "-c", LOAD_EACH, json.dumps(REQUEST), *uris],
                       cwd=s["folder"], env={**os.environ, "MLFLOW_TRACKING_URI": s["store"]},
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    served = [json.loads(line) for line in r.stdout.strip().splitlines()[-len(NEW) :]]
    for cell, text in zip(NEW, served, strict=True):
        cli = run_cli([f"run_id={s['runs'][cell].info.run_id}", f"tracking_uri={s['store']}",
                       *(f"{k}={v}" for k, v in REQUEST.items())], cwd=s["folder"],
                      module="rnnlab.sample")  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        assert text == cli.stdout.rstrip("\n") and text.startswith("Gregor"), cell


@pytest.mark.slow
def test_the_report_covers_every_cell(every_cell_sweep, tmp_path):
    """The report ranks every cell's runs and draws its diagnostics: the spectrum figure for
    all, gradient flow for all; the diag/ metrics each cell logs are the documented ones."""
    s = every_cell_sweep
    out = tmp_path / "report"
    r = run_cli(["experiment=charrnn", f"out={out}", f"tracking_uri={s['store']}", "log=false"],
                cwd=s["folder"], module="rnnlab.report")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    md = (out / "report.md").read_text(encoding="utf-8")
    for cell in NEW:
        assert re.search(rf"\b{cell}\b", md), cell
    for figure in ("diag_grad_flow.png", "diag_spectrum.png", "diag_saturation.png"):
        assert (out / figure).stat().st_size > 1000, figure
    for cell, run in s["runs"].items():
        m = run.data.metrics
        assert {"diag/grad_decay", "diag/whh_rho", "diag/whh_sigma_max", "diag/grad_decay_l1",
                "diag/whh_rho_l1"} <= set(m), cell  # fmt: skip
        if cell in ("indrnn", "mingru", "minlstm", "lru"):  # diagonal: σ_max = ρ
            assert m["diag/whh_rho"] == m["diag/whh_sigma_max"], cell
        assert ("diag/saturation" in m) is False, cell  # none of them saturates its h
        gates = {"mingru": {"z"}, "minlstm": {"f", "i"}}.get(cell, set())
        assert {k.split("/")[-1] for k in m if k.startswith("diag/saturation/")} == gates, cell
