"""A served model refuses what would hold a worker for hours or take gigabytes: ``length``,
``prime`` and the rows of one request are capped by configurable limits, refused with an HTTP 400
naming the limit, before any generation."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import mlflow
import pandas as pd
import pytest
from helpers.processes import run_cli, start_model_server, stop_process_group, wait_until_ok
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from rnnlab.tracking.pyfunc import LIMITS, check_limits, serving_limits

SMALL = ["hidden_size=24", "seq_length=16", "eval_every=300", "sample_every=300",
         "checkpoint_every=300", "data.val_fraction=0.02", "iterations=300"]  # fmt: skip
HUGE_PRIME = "the " * 500_000  # 2 MB: read whole, it took 2.9 GB


def test_limits_come_from_the_environment_then_the_model_config(monkeypatch):
    assert serving_limits() == LIMITS
    monkeypatch.setenv("RNNLAB_SERVE_MAX_LENGTH", "50")
    assert serving_limits()["max_length"] == 50
    assert serving_limits({"max_length": 7})["max_length"] == 7
    for bad in ("0", "-3", "1e9", "many"):
        monkeypatch.setenv("RNNLAB_SERVE_MAX_PRIME", bad)
        with pytest.raises(ValueError, match=f"max_prime={bad!r} is not allowed"):
            serving_limits()


@pytest.mark.parametrize(
    "rows, named",
    [
        ([{"prime": "a", "length": 10**9}], "length=1000000000 is over the limit max_length=5000"),
        (
            [{"prime": HUGE_PRIME}],
            "a prime of 2000000 characters is over the limit max_prime=10000",
        ),  # noqa: E501
        ([{"prime": "a"}] * 5, "5 rows in one request is over the limit max_rows=4"),
    ],
)
def test_each_limit_is_named(rows, named):
    with pytest.raises(ValueError) as e:
        check_limits(rows, LIMITS)
    assert str(e.value) == named
    check_limits([{"prime": "a" * 10000, "length": 5000}] * 4, LIMITS)  # at the limits: served


@pytest.fixture(scope="module")
def model_uri(tmp_path_factory):
    folder = tmp_path_factory.mktemp("limits")
    store = f"sqlite:///{folder / 'mlflow.db'}"
    r = run_cli([*SMALL, f"tracking.uri={store}"], cwd=folder)
    assert r.returncode == 0, r.stderr[-2000:]
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("charrnn").experiment_id])
    return store, f"runs:/{run.info.run_id}/model"


@pytest.mark.slow
def test_the_pyfunc_refuses_at_once_and_takes_a_model_config(model_uri):
    store, uri = model_uri
    mlflow.set_tracking_uri(store)
    model = mlflow.pyfunc.load_model(uri)
    started = time.perf_counter()
    with pytest.raises(MlflowException, match="over the limit max_length=5000"):
        model.predict(pd.DataFrame([{"prime": "One", "length": 10**9}]))
    with pytest.raises(MlflowException, match="over the limit max_prime=10000"):
        model.predict(pd.DataFrame([{"prime": HUGE_PRIME}]))
    seconds = time.perf_counter() - started
    print(f"two refusals in {seconds:.3f} s")
    assert seconds < 5
    small = mlflow.pyfunc.load_model(uri, model_config={"max_length": 20})
    assert len(small.predict(pd.DataFrame([{"prime": "One", "length": 20}]))["text"][0]) == 23
    with pytest.raises(MlflowException, match="length=21 is over the limit max_length=20"):
        small.predict(pd.DataFrame([{"prime": "One", "length": 21}]))


def post(url: str, payload: dict) -> tuple[int, dict, float]:
    body = json.dumps(payload).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read()), time.perf_counter() - started
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}"), time.perf_counter() - started


@pytest.mark.slow
def test_mlflow_models_serve_answers_400_naming_the_limit(model_uri, tmp_path):
    store, uri = model_uri
    log = open(tmp_path / "serve.log", "w")
    env = {"RNNLAB_SERVE_MAX_LENGTH": "100"}
    server, base = start_model_server(uri, store, tmp_path, log, env)
    try:
        wait_until_ok(f"{base}/ping", server, tmp_path / "serve.log")
        url = f"{base}/invocations"
        status, body, seconds = post(url, {"dataframe_records": [{"prime": "O", "length": 10**9}]})
        print(f"length=10**9: HTTP {status} in {seconds:.3f} s")
        assert status == 400
        assert "length=1000000000 is over the limit max_length=100" in body["message"]
        assert seconds < 5
        status, body, seconds = post(url, {"dataframe_records": [{"prime": HUGE_PRIME}]})
        print(f"2 MB prime: HTTP {status} in {seconds:.3f} s")
        assert status == 400 and "over the limit max_prime=10000" in body["message"]
        status, body, _ = post(url, {"dataframe_records": [{"prime": "One"}] * 5})
        assert status == 400 and "max_rows=4" in body["message"]
        status, body, seconds = post(url, {"dataframe_records": [{"prime": "One", "length": 100}]})
        print(f"length=100: HTTP {status} in {seconds:.3f} s")
        assert status == 200 and len(body["predictions"][0]["text"]) == 103
    finally:
        stop_process_group(server, timeout=30)
        log.close()
