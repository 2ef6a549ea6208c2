"""``python -m rnnlab.score``: bad arguments cost one line, and a recorded run's held-out text
scores exactly the val/loss (and val/loss_warm) MLflow holds for it.

The slow test does what a user does: train with ``python -m rnnlab.run`` into a SQLite store,
write the held-out text to a file, score it with ``run_id=`` from the command line.
"""

from __future__ import annotations

import json
import re

import pytest
from helpers.processes import run_cli
from mlflow.tracking import MlflowClient

from rnnlab import cli, score
from rnnlab.errors import UserError


@pytest.mark.parametrize(
    "args,message",
    [
        (["path=x.txt"], "exactly one of run_id"),
        (["checkpoint=a.npz"], "exactly one of path"),
        (["checkpoint=a.npz", "path=x", "text=y"], "exactly one of path"),
        (["checkpoint=a.npz", "text=y", "unknown=drop"], "unknown='drop'"),
        (["checkpoint=a.npz", "text=y", "warm=yes"], "warm='yes'"),
        (["checkpoint=a.npz", "text=y", "colour=red"], "colour is not a key of rnnlab.score"),
        (["checkpoint=a.npz", "path=/no/such/file.txt"], "not a readable file"),
        (["checkpoint=/no/such.npz", "text=abc"], "no checkpoint at"),
    ],
)
def test_bad_arguments_are_one_line(args, message):
    with pytest.raises(UserError, match=re.escape(message)):
        cli.call(score.COMMAND, score.run, args)


def test_cli_exits_2_with_one_line(tmp_path):
    done = run_cli(["checkpoint=/no/such.npz", "text=abc"], tmp_path, module="rnnlab.score")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    assert done.stderr.startswith("rnnlab: error: no checkpoint at")


@pytest.mark.slow
def test_a_recorded_run_scores_its_own_val_loss(tmp_path, kafka_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [f"data.path={kafka_path}", "hidden_size=24", "seq_length=16", "iterations=300",
            "eval_every=50", "log_every=50", "sample_every=300", "checkpoint_every=300",
            "eval_burn_in=500", "data.test_fraction=0.02", "early_stop.patience=2",
            "top_k=5", f"tracking.uri={store}"]  # fmt: skip
    done = run_cli(args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    closing = [ln for ln in done.stderr.splitlines() if "FINISHED" in ln]
    assert len(closing) == 1 and "objective" in closing[0]
    client = MlflowClient(store)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    m, rid = run.data.metrics, run.info.run_id
    assert {"val/loss_warm", "val/bpc_warm", "test/loss", "test/bpc", "best/iteration",
            "best/val_loss_warm", "train/lr"} <= set(m)  # fmt: skip
    if "rnnlab.stopped_early" in run.data.tags:
        assert (
            f"stopped early at iteration {int(run.data.tags['rnnlab.stopped_early']):,}"
            in (closing[0])
        )
    # the held-out text, cut as CharTask cuts it (val_fraction 0.1, then the test tail)
    text = kafka_path.read_text(encoding="utf-8")
    from rnnlab.tasks.corpus import strip_gutenberg

    text = strip_gutenberg(text)
    n_val, n_test = int(len(text) * 0.1), int(len(text) * 0.02)
    val = tmp_path / "val.txt"
    val.write_bytes(text[len(text) - n_val - n_test : len(text) - n_test].encode("utf-8"))

    def cli(*extra: str) -> dict:
        out = run_cli([f"run_id={rid}", f"path={val}", f"tracking_uri={store}", "json=true",
                       *extra], tmp_path, module="rnnlab.score")  # fmt: skip
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    last = cli("model_from=last")
    assert abs(last["nats_per_char"] - m["final/val_loss"]) < 1e-9
    assert (
        abs(cli("model_from=last", "warm=true")["nats_per_char"] - m["final/val_loss_warm"]) < 1e-9
    )
    best_it = int(m["best/iteration"])
    warm_hist = {p.step: p.value for p in client.get_metric_history(rid, "val/loss_warm")}
    assert abs(cli("warm=true")["nats_per_char"] - warm_hist[best_it]) < 1e-9  # best by default
    line = run_cli([f"run_id={rid}", f"path={val}", f"tracking_uri={store}"], tmp_path,
                   module="rnnlab.score").stdout.strip()  # fmt: skip
    assert re.fullmatch(
        rf"{re.escape(str(val))}: \d\.\d{{4}} nats/char, \d\.\d{{4}} bits/char over "
        rf"{last['chars']:,} characters \(0 unknown\)",
        line,
    ), line
