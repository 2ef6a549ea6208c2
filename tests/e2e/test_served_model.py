"""Every char-RNN run is an MLflow model: loaded in a fresh process, served over HTTP on
127.0.0.1 by ``mlflow models serve``, and a sweep's best run registered — all generating the very
text ``python -m rnnlab.sample`` prints for the same request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers.processes import run_cli, start_model_server, stop_process_group, wait_until_ok
from mlflow.tracking import MlflowClient

REQUEST = {"prime": "One morning", "length": 80, "temperature": 0.8, "seed": 1}
SMALL = ["hidden_size=24", "seq_length=16", "eval_every=300", "sample_every=300",
         "checkpoint_every=300", "data.val_fraction=0.02"]  # fmt: skip


@pytest.fixture(scope="module")
def model_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("served")
    store = f"sqlite:///{folder / 'mlflow.db'}"
    r = run_cli([*SMALL, "iterations=600", f"tracking.uri={store}"], cwd=folder)
    assert r.returncode == 0, r.stderr[-2000:]
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("charrnn").experiment_id])
    sample = run_cli(
        [
            f"run_id={run.info.run_id}",
            f"tracking_uri={store}",
            *(f"{k}={v}" for k, v in REQUEST.items()),
        ],  # fmt: skip
        cwd=folder,
        module="rnnlab.sample",
    )
    assert sample.returncode == 0, sample.stderr
    return {"store": store, "run": run, "folder": folder, "text": sample.stdout.rstrip("\n")}


def test_the_run_logged_its_model_cheaply(model_run):
    tags = model_run["run"].data.tags
    assert "rnnlab.model_error" not in tags
    assert tags["rnnlab.model_uri"].startswith("models:/m-")
    seconds = float(tags["rnnlab.model_log_seconds"])
    print(f"\nlogging the model took {seconds:.2f} s")
    assert seconds < 10


LOAD_AND_PREDICT = """
import json, sys
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
print(model.metadata.get_input_schema().input_names())
out = model.predict(pd.DataFrame([json.loads(sys.argv[2])]))
print(json.dumps({"columns": list(out.columns), "text": out["text"][0]}))
"""


def test_pyfunc_load_model_in_a_fresh_process(model_run, tmp_path):
    uri = f"runs:/{model_run['run'].info.run_id}/model"
    r = subprocess.run(
        [sys.executable, "-c", LOAD_AND_PREDICT, uri, json.dumps(REQUEST)],
        cwd=tmp_path,
        env={**os.environ, "MLFLOW_TRACKING_URI": model_run["store"]},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    names, result = r.stdout.strip().splitlines()[-2:]
    assert names == "['prime', 'length', 'temperature', 'seed', 'top_k', 'top_p', 'greedy', 'beam']"
    out = json.loads(result)
    assert out["columns"] == ["text"] and out["text"] == model_run["text"]


DECODE_EACH = """
import json, sys
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
for row in json.loads(sys.argv[2]):
    print(json.dumps(model.predict(pd.DataFrame([row]))["text"][0]))
"""


def test_served_decoding_columns_give_rnnlab_samples_text(model_run, tmp_path):
    """top_k, top_p, greedy and beam as optional columns: the text rnnlab.sample prints."""
    uri = f"runs:/{model_run['run'].info.run_id}/model"
    rows = [{**REQUEST, "top_k": 5}, {**REQUEST, "top_p": 0.7}, {**REQUEST, "greedy": True},
            {**REQUEST, "beam": 3}]  # fmt: skip
    r = subprocess.run(
        [sys.executable, "-c", DECODE_EACH, uri, json.dumps(rows)],
        cwd=tmp_path,
        env={**os.environ, "MLFLOW_TRACKING_URI": model_run["store"]},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    served = [json.loads(line) for line in r.stdout.strip().splitlines()[-len(rows) :]]
    for row, text in zip(rows, served, strict=True):
        cli = run_cli(
            [
                f"run_id={model_run['run'].info.run_id}",
                f"tracking_uri={model_run['store']}",
                *(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in row.items()),
            ],  # fmt: skip
            cwd=model_run["folder"],
            module="rnnlab.sample",
        )
        assert cli.returncode == 0, cli.stderr
        assert text == cli.stdout.rstrip("\n"), row
    assert len(set(served)) >= 3  # the modes decode differently (greedy may equal beam here)


def post(url: str, payload: dict) -> tuple[int, dict]:
    body = json.dumps(payload).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@pytest.mark.slow
def test_mlflow_models_serve_returns_text(model_run, tmp_path):
    log = open(tmp_path / "serve.log", "w")
    model = f"runs:/{model_run['run'].info.run_id}/model"
    server, base = start_model_server(model, model_run["store"], tmp_path, log)
    try:
        wait_until_ok(f"{base}/ping", server, tmp_path / "serve.log")
        url = f"{base}/invocations"
        status, body = post(url, {"dataframe_records": [REQUEST]})
        assert status == 200, body
        assert body["predictions"] == [{"text": model_run["text"]}]
        # Only prime is required; a prime outside the vocabulary is a 400 naming the characters.
        status, body = post(url, {"dataframe_records": [{"prime": "Gregor"}]})
        assert status == 200 and body["predictions"][0]["text"].startswith("Gregor")
        status, body = post(url, {"dataframe_records": [{"prime": "Ω"}]})
        assert status == 400 and "not in the vocabulary: 'Ω'" in body["message"]
    finally:
        stop_process_group(server, timeout=30)
        log.close()


@pytest.mark.slow
def test_register_a_sweeps_best_run(tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    r = run_cli(
        [
            "-m",
            *SMALL,
            "hidden_size=8,32",  # after SMALL's hidden_size, which it replaces
            "iterations=300",
            f"tracking.uri={store}",
            "experiment_name=sweep",
        ],  # fmt: skip
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("sweep").experiment_id])
    (parent,) = [run for run in runs if run.data.tags.get("rnnlab.kind") == "sweep"]
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId")]
    assert len(children) == 2
    best = min(children, key=lambda run: run.data.metrics["final/val_loss_warm"])  # the objective

    r = run_cli(
        ["register", f"sweep={parent.info.run_id}", "name=kafka-best", f"tracking_uri={store}"],
        cwd=tmp_path,
        module="rnnlab.model",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"registered kafka-best version 1: run {best.info.run_id}" in r.stdout
    (version,) = client.search_model_versions("name = 'kafka-best'")
    assert version.tags["rnnlab.run_id"] == best.info.run_id
    assert version.tags["rnnlab.sweep"] == parent.info.run_id

    r = run_cli(
        ["register", f"sweep={best.info.run_id}", "name=x", f"tracking_uri={store}"],
        cwd=tmp_path,
        module="rnnlab.model",
    )
    assert r.returncode == 2 and "has no FINISHED child run with a logged model" in r.stderr


def test_model_files_hold_no_pickle(model_run, tmp_path):
    """The logged model is code + a weights .npz: no pickled python_model, and the weights load
    with allow_pickle=False."""
    import mlflow

    mlflow.set_tracking_uri(model_run["store"])
    local = Path(
        mlflow.artifacts.download_artifacts(
            f"runs:/{model_run['run'].info.run_id}/model", dst_path=str(tmp_path)
        )
    )
    files = [p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()]
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".cloudpickle"))], files
    (weights,) = [local / f for f in files if f.endswith("weights.npz")]
    from rnnlab.training import checkpoint

    arrays, meta = checkpoint.load(weights)
    weights = {f"param/{k}" for k in ("Wxh", "Whh", "Why", "bh", "by")}
    # the burn-in text and the state it starts from: rnnlab.score warm=true on the model's weights
    assert set(arrays) == weights | {"vocab", "eval/burn_in", "eval/warm_start"}
    assert not any(k.startswith("optim/") for k in arrays) and meta["iteration"] == 600
