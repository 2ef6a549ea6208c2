"""Warm and zero-state validation, the objective, best checkpoints, early stopping, test split.

In process and seeded: each test trains a small char-RNN on kafka (or on a constructed text)
with a MemoryTracker, then checks the numbers against an independent reading (rnnlab.score on
the held-out text written to a file, the evaluation history, the decision rule of early
stopping replayed over it).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from rnnlab import cli, score
from rnnlab.config import Config, ConfigError
from rnnlab.tasks import charrnn, check, judging
from rnnlab.tasks.charrnn import CharTask, load_corpus
from rnnlab.tracking import ui
from rnnlab.training import best, checkpoint
from rnnlab.training.loop import Trainer, train
from rnnlab.training.tracker import MemoryTracker


def small(kafka_path: Path, iterations: int = 120, **changes) -> Config:
    cfg = Config()
    cfg.data.path = str(kafka_path)
    cfg.hidden_size, cfg.seq_length, cfg.iterations = 24, 16, iterations
    cfg.log_every, cfg.eval_every, cfg.sample_every, cfg.checkpoint_every = 10, 20, 1000, 1000
    cfg.sample_length, cfg.eval_burn_in = 20, 300
    cfg.tracking.enabled = False
    for key, value in changes.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = getattr(node, p)
        setattr(node, leaf, value)
    check(cfg)
    return cfg


def held_out(cfg: Config, tmp_path: Path, which: str = "val") -> Path:
    """The run's held-out (or test) text as a file, cut the way CharTask cuts it."""
    text, _ = load_corpus(cfg)
    n_val, n_test = int(len(text) * cfg.data.val_fraction), int(len(text) * cfg.data.test_fraction)
    n_train = len(text) - n_val - n_test
    part = text[n_train : n_train + n_val] if which == "val" else text[n_train + n_val :]
    path = tmp_path / f"{which}.txt"
    path.write_bytes(part.encode("utf-8"))  # bytes: no newline translation
    return path


def scored(ckpt: Path, path: Path, warm: bool = False) -> dict:
    args = [f"checkpoint={ckpt}", f"path={path}", "json=true", f"warm={str(warm).lower()}"]
    return json.loads(cli.call(score.COMMAND, score.run, args))


@pytest.fixture(scope="module")
def default_run(kafka_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = small(kafka_path, iterations=160)
    tracker = MemoryTracker()
    final = train(cfg, tracker, out, show_progress=False)
    return cfg, tracker, final, out


def test_score_equals_val_loss_and_val_loss_warm(default_run, tmp_path):
    cfg, tracker, final, out = default_run
    path = held_out(cfg, tmp_path)
    last = checkpoint.latest(out / "checkpoints")
    cold, warm = scored(last, path), scored(last, path, warm=True)
    print(final["final/val_loss"], cold, final["final/val_loss_warm"], warm)
    assert abs(cold["nats_per_char"] - final["final/val_loss"]) < 1e-9
    assert abs(warm["nats_per_char"] - final["final/val_loss_warm"]) < 1e-9
    assert cold["chars"] == len(path.read_text(encoding="utf-8")) - 1
    # the one-line form, as the issue shows it
    line = cli.call(score.COMMAND, score.run, [f"checkpoint={last}", f"path={path}"])
    assert line == (
        f"{path}: {cold['nats_per_char']:.4f} nats/char, {cold['bits_per_char']:.4f} bits/char "
        f"over {cold['chars']:,} characters (0 unknown)"
    )


def test_best_checkpoint_and_best_metrics_match_the_history(default_run, tmp_path):
    cfg, tracker, final, out = default_run
    h = tracker.history
    warm = h["val/loss_warm"]
    assert [s for s, _ in warm] == list(range(20, 161, 20))
    running = [min(v for _, v in warm[: i + 1]) for i in range(len(warm))]
    assert [v for _, v in h["best/val_loss_warm"]] == running
    best_step = min(warm, key=lambda p: p[1])[0]
    assert h["best/iteration"][-1][1] == best_step
    assert final["best/iteration"] == best_step
    assert final["best/val_loss_warm"] == min(v for _, v in warm)
    # best.npz holds the weights that scored it
    best_file = out / "checkpoints" / best.BEST_FILE
    _, meta = checkpoint.load(best_file)
    assert meta["state"]["iteration"] == best_step
    got = scored(best_file, held_out(cfg, tmp_path), warm=True)["nats_per_char"]
    assert abs(got - dict(warm)[best_step]) < 1e-9
    assert final["objective"] == final["final/val_loss_warm"]  # the char-RNN's default


def saturating(tmp_path: Path, kafka_path: Path) -> tuple[Config, Path]:
    """A text and weights where h = 0 falls into a latched, saturated state the network never
    leaves; only the training text's first character unlatches it. So training carries a free
    state, while the held-out text and the burn-in (the end of the training text) have no Z:
    read from h = 0 they latch, as the kafka seed does."""
    text = "Z" + "abc" * 2000
    corpus = tmp_path / "latch.txt"
    corpus.write_text(text, encoding="utf-8")
    cfg = small(kafka_path, iterations=1, **{"data.path": str(corpus), "data.val_fraction": 0.1})
    cfg.hidden_size, cfg.eval_every, cfg.log_every, cfg.eval_burn_in = 4, 1, 1, 100
    cfg.optimizer.name, cfg.learning_rate, cfg.optimizer.clip = "sgd", 1e-12, None
    trainer = Trainer(cfg)
    p, idx = trainer.params, trainer.task.vocab.index
    for v in p.values():
        v[...] = 0.0
    p["Whh"][0, 0] = 10.0  # unit 0 latches at ±1
    p["bh"][0] = 0.5  # from h = 0 it latches at +1 ...
    p["Wxh"][0, idx["Z"]] = -30.0  # ... unless it reads a Z, which latches it at -1
    p["Why"][idx["a"], 0] = p["by"][idx["a"]] = 4.0  # at +1: always "a" (wrong 2 in 3); -1: even
    ckpt = trainer.save(tmp_path / "constructed")
    return cfg, ckpt


def test_a_network_saturated_from_h0_is_flagged(tmp_path, kafka_path):
    cfg, ckpt = saturating(tmp_path, kafka_path)
    final = train(cfg, MemoryTracker(), tmp_path / "out", resume_from=ckpt, show_progress=False)
    cold, warm = final["final/val_loss"], final["final/val_loss_warm"]
    print(f"val/loss {cold:.4f}  val/loss_warm {warm:.4f}")
    assert cold > 4.0 and warm < 1.5  # latched: ~(2/3)·8 nats; unlatched: uniform, ln 4
    # a burn-in read from h = 0 would have latched too: the carried state is what matters
    trainer = Trainer(cfg)
    trainer.load(checkpoint.latest(tmp_path / "out" / "checkpoints"))
    t = trainer.task
    from_zero = charrnn.char_metrics(trainer.params, trainer.spec, t.val_data, t.burn_in)
    assert from_zero["val/loss_warm"] > 4.0
    assert not judging.flagged(from_zero)
    assert judging.flagged(final, "final/val_")
    note = ui.closing_note(final)
    assert "FLAG" in note and "val/loss_warm" in note
    # an ordinary kafka run is not flagged
    ordinary = train(small(kafka_path, iterations=20), None, tmp_path / "o2", show_progress=False)
    assert "FLAG" not in ui.closing_note(ordinary)


def replay_early_stop(values: list[float], patience: int, min_delta: float) -> int | None:
    """The index of the evaluation at which early stopping must stop, from its definition."""
    reference, stale = math.inf, 0
    for i, v in enumerate(values):
        if v < reference - min_delta:
            reference, stale = v, 0
        else:
            stale += 1
        if patience and stale >= patience:
            return i
    return None


def test_early_stopping_stops_a_stalled_run(kafka_path, tmp_path):
    cfg = small(kafka_path, iterations=400, **{"early_stop.patience": 2,
                                               "early_stop.min_delta": 1e-3})  # fmt: skip
    cfg.optimizer.name, cfg.learning_rate = "sgd", 1e-9  # nothing learns: validation stalls
    tracker = MemoryTracker()
    final = train(cfg, tracker, tmp_path, show_progress=False)
    assert final["stopped_early"] == 60  # evaluations at 20 (the reference), 40, 60: stop
    assert tracker.history["val/loss_warm"][-1][0] == 60
    assert checkpoint.latest(tmp_path / "checkpoints").name == "iter_0000060.npz"
    for key in ("final/val_loss", "final/val_loss_warm", "final/smooth_loss", "best/iteration"):
        assert key in final
    assert "stopped early at iteration 60" in ui.closing_note(final)


def test_early_stopping_never_stops_a_run_that_improves(kafka_path, tmp_path):
    cfg = small(kafka_path, iterations=200, **{"early_stop.patience": 1})
    tracker = MemoryTracker()
    final = train(cfg, tracker, tmp_path, show_progress=False)
    values = [v for _, v in tracker.history["val/loss_warm"]]
    print(values)
    stop = replay_early_stop(values, 1, 0.0)
    if stop is None or stop == len(values) - 1:  # improved until the end: runs to the end
        assert "stopped_early" not in final and len(values) == 10
    else:
        assert final["stopped_early"] == 20 * (stop + 1)
    # a run forced to improve (the decision rule alone) never stops
    assert replay_early_stop([5.0 - 0.1 * i for i in range(50)], 1, 0.05) is None
    assert replay_early_stop([5.0, 4.0, 4.0, 4.0], 2, 0.0) == 3


def test_best_tracker_follows_the_rule(kafka_path):
    cfg = small(kafka_path, **{"early_stop.patience": 3, "early_stop.min_delta": 0.1})
    params = {"w": np.zeros(2)}
    tracker = best.BestTracker(cfg, params, CharTask.JUDGED)
    values = [3.0, 2.95, 2.7, 2.65, 2.62, 2.61, 2.5]
    stops = []
    for i, v in enumerate(values):
        params["w"][...] = v
        tracker.observe({"val/loss_warm": v}, params, i)
        stops.append(tracker.should_stop())
    # improvements ≥ 0.1: 3.0 (ref), 2.7 (ref); then 2.65, 2.62, 2.61 are < 0.1 better: stop at 5
    assert stops.index(True) == replay_early_stop(values, 3, 0.1) == 5
    assert tracker.value == 2.5 and tracker.iteration == 6 and tracker.params["w"][0] == 2.5


def test_test_split_is_scored_once_from_the_best_weights(kafka_path, tmp_path):
    cfg = small(kafka_path, iterations=60, **{"data.test_fraction": 0.02})
    tracker = MemoryTracker()
    final = train(cfg, tracker, tmp_path, show_progress=False)
    assert [s for s, _ in tracker.history["test/loss"]] == [60]
    got = scored(tmp_path / "checkpoints" / best.BEST_FILE, held_out(cfg, tmp_path, "test"))
    assert abs(got["nats_per_char"] - final["test/loss"]) < 1e-9
    assert final["test/bpc"] == pytest.approx(final["test/loss"] / math.log(2), rel=1e-12)
    # the held-out text moved before the test text; test_fraction=0 keeps the seed's cut
    assert "test/loss" not in train(small(kafka_path, iterations=20), None, tmp_path / "b",
                                    show_progress=False)  # fmt: skip


@pytest.mark.parametrize(
    "key,value",
    [("objective", "val/exact_acc"), ("objective", "loss"), ("eval_burn_in", -1),
     ("model_from", "first"), ("early_stop.patience", -1), ("data.test_fraction", 0.95),
     ("top_p", 0.0), ("beam", -2)],
)  # fmt: skip
def test_bad_values_name_the_key(kafka_path, key, value):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        small(kafka_path, **{key: value})


def test_model_checkpoint_picks_best_or_last(default_run):
    cfg, _, _, out = default_run
    folder = out / "checkpoints"
    assert best.model_checkpoint(cfg, folder).name == best.BEST_FILE
    cfg_last = small(Path(cfg.data.path), model_from="last")
    assert best.model_checkpoint(cfg_last, folder) == checkpoint.latest(folder)


@pytest.mark.slow
def test_a_sweep_on_val_loss_warm_reports_both_numbers_with_mean_std(tmp_path, kafka_path):
    from helpers.processes import run_cli

    done = run_cli(["-m", f"data.path={kafka_path}", "seed=0,1", "objective=val/loss_warm",
                    "hidden_size=16", "seq_length=10", "iterations=150", "eval_every=50",
                    "log_every=50", "sample_every=150", "checkpoint_every=1000",
                    "eval_burn_in=200"], tmp_path, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = next(tmp_path.glob("multirun/**/report/report.md"), None) or next(
        tmp_path.rglob("report.md")
    )
    md = report.read_text(encoding="utf-8")
    header = next(ln for ln in md.splitlines() if ln.startswith("| rank") and "seeds" in ln)
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert "final_val_loss" in cells and "final_val_loss_warm" in cells
    row = md.splitlines()[md.splitlines().index(header) + 2]
    values = [c.strip() for c in row.strip("|").split("|")]
    cold, warm = values[cells.index("final_val_loss")], values[cells.index("final_val_loss_warm")]
    print(header, row, sep="\n")
    assert re.fullmatch(r"\d\.\d{4} ± \d\.\d{4} \(n=2\)", cold)
    assert re.fullmatch(r"\d\.\d{4} ± \d\.\d{4} \(n=2\)", warm)
    runs = report.with_name("runs.csv").read_text(encoding="utf-8").splitlines()
    head = runs[0].split(",")
    for line in runs[1:]:
        r = dict(zip(head, line.split(","), strict=False))
        assert r["objective"] == r["final_val_loss_warm"]  # what the sweep minimised
