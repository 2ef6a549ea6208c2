"""Review experience: closing lines, names, the leaderboard, the experiment kind, artifacts beside
the store, quiet progress, and output that survives a closed pipe. Real SQLite stores, real
processes and pipes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from rnnlab import quiet
from rnnlab.sweeps import leaderboard
from rnnlab.sweeps.compose import CONFIG_DIR, register_configs, to_config
from rnnlab.tracking import store as stores
from rnnlab.tracking import ui
from rnnlab.tracking.job import JobContext, run_job
from rnnlab.tracking.store import ensure_experiment
from rnnlab.training.progress import LINES, Progress

RUN_ID = re.compile(r"\b[0-9a-f]{32}\b")


@pytest.fixture(autouse=True)
def _no_env_store(no_env_store):
    """conftest.no_env_store for every test here."""


def test_a_job_without_overrides_is_named_after_its_task_and_time():
    assert re.fullmatch(r"charrnn-\d{8}-\d{6}", ui.default_run_name("charrnn"))


def test_closing_lines_name_the_run_the_ui_and_the_commands(tmp_path):
    rid = "a" * 32
    default = f"sqlite:///{tmp_path / 'mlflow.db'}"
    lines = ui.closing_lines(default, "3", rid, "charrnn", "FINISHED", tmp_path)
    text = "\n".join(lines)
    assert lines[0] == f"rnnlab: run id {rid} (FINISHED)"
    assert f"mlflow ui --backend-store-uri {default}" in text
    assert f"http://127.0.0.1:5000/#/experiments/3/runs/{rid}?workflowType=machine_learning" in text
    assert f"python -m rnnlab.sample run_id={rid} length=300" in text
    assert f"python -m rnnlab.run resume={rid} iterations=<more>" in text
    # another store: the commands say which; a server: its own address, no `mlflow ui`
    other = ui.closing_lines(default, "3", rid, "adder", "KILLED", tmp_path / "elsewhere")
    assert f"run_id={rid} tracking_uri={default} a=77 b=41" in "\n".join(other)
    assert f"resume={rid} tracking.uri={default}\n" in "\n".join(other) + "\n"
    served = ui.closing_lines("http://h:5000", "3", rid, "adder", "FAILED", tmp_path)
    assert served[1].split()[-1].startswith(f"http://h:5000/#/experiments/3/runs/{rid}?")
    assert "mlflow ui" not in "\n".join(served)


def test_experiments_are_training_kind_with_artifacts_beside_the_store(tmp_path, monkeypatch):
    """A run recorded from a folder that is not the store's writes nothing into that folder
    (MLflow's default artifact root is ./mlruns in the cwd), and its experiment opens on its
    training runs; an experiment made elsewhere gets the tag when rnnlab uses it."""
    cwd, store_dir = tmp_path / "cwd", tmp_path / "store"
    cwd.mkdir(), store_dir.mkdir()
    monkeypatch.chdir(cwd)
    uri = f"sqlite:///{store_dir / 'mlflow.db'}"
    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = to_config(compose("config", ["task=adder", "iterations=100", f"tracking.uri={uri}"]))
    run_job(cfg, JobContext(launch_dir=cwd, output_dir=tmp_path / "out"), show_progress=False)
    assert list(cwd.iterdir()) == []
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("adder")
    assert exp.tags[stores.EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert exp.artifact_location == (store_dir / "mlruns").as_uri()
    (run,) = client.search_runs([exp.experiment_id])
    assert any((store_dir / "mlruns").rglob("config.yaml"))
    assert run.info.artifact_uri.startswith((store_dir / "mlruns").as_uri())

    made_by_hand = client.create_experiment("by-hand")
    assert stores.EXPERIMENT_KIND_TAG not in client.get_experiment(made_by_hand).tags
    assert ensure_experiment(client, "by-hand") == made_by_hand
    kind = client.get_experiment(made_by_hand).tags[stores.EXPERIMENT_KIND_TAG]
    assert kind == "custom_model_development"


def fake_sweep(client: MlflowClient, objectives: dict[tuple[str, str], float], fail: int = 0):
    """A parent with children recorded as a sweep's (the real store, real runs): hidden_size ×
    seed → final val/loss; ``fail`` more children FAILED."""
    exp = client.create_experiment("sweep")
    parent = client.create_run(
        exp, tags={"rnnlab.kind": "sweep", "rnnlab.swept_keys": "hidden_size seed"}
    )
    pid = parent.info.run_id
    for (hidden, seed), loss in objectives.items():
        child = client.create_run(exp, tags={"mlflow.parentRunId": pid, "rnnlab.task": "charrnn"})
        params = [Param("hidden_size", hidden), Param("seed", seed), Param("iterations", "500")]
        metrics = [Metric("val/loss", loss, 0, 500), Metric("final/val_loss", loss, 0, 500)]
        client.log_batch(child.info.run_id, metrics=metrics, params=params)
        client.set_terminated(child.info.run_id, "FINISHED")
    for _ in range(fail):
        child = client.create_run(exp, tags={"mlflow.parentRunId": pid, "rnnlab.task": "charrnn"})
        client.log_batch(child.info.run_id, params=[Param("hidden_size", "32")])
        client.set_terminated(child.info.run_id, "FAILED")
    return pid


def test_leaderboard_ranks_configurations_by_mean_over_seeds(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    # hidden 16 has the single best run (1.0) but the worse mean (2.0); hidden 8 wins on mean
    losses = {("16", "0"): 1.0, ("16", "1"): 3.0, ("8", "0"): 1.5, ("8", "1"): 1.7}
    pid = fake_sweep(client, losses, fail=1)
    lines = leaderboard.sweep_closing_lines(uri, pid, "reports/x/report.html")
    print("\n".join(lines))
    assert f"parent run {pid}" in lines[0] and "5 runs, 1 did not finish" in lines[0]
    header, first, second, third = lines[1:5]
    assert header.split()[:2] == ["rank", "objective"] and "hidden_size" in header
    assert first.split()[:5] == ["1", "1.6000", "±", "0.1414", "(n=2)"] and " 8 " in first
    assert second.split()[:5] == ["2", "2.0000", "±", "1.4142", "(n=2)"] and " 16 " in second
    assert third.split()[:2] == ["3", "–"]  # the failed configuration ranks last
    assert "  report:  reports/x/report.html" in lines
    # the view: the children's table, led by the objective and the swept keys, best first
    (view,) = [ln for ln in lines if "compareRunsMode=TABLE" in ln]
    assert f"#/experiments/1/runs?compareRunsMode=TABLE&viewStateShareKey=sweep-{pid}&" in view
    state = json.loads(client.get_experiment("1").tags[f"mlflow.sharedViewState.sweep-{pid}"])
    assert state["selectedColumns"][:3] == ["metrics.`val/loss`", "params.`hidden_size`",
                                            "params.`seed`"]  # fmt: skip
    assert state["orderByKey"] == "metrics.`val/loss`" and state["orderByAsc"] is True

    children = client.search_runs(["1"], f"tags.mlflow.parentRunId = '{pid}'")
    leaderboard.record_best_on_parent(client, pid, children)
    parent = client.get_run(pid)
    assert parent.data.metrics["objective"] == 1.0  # the best child, not the best mean
    assert parent.data.metrics["val/loss"] == 1.0
    assert parent.data.params["hidden_size"] == "16" and parent.data.params["seed"] == "0"
    best = min(children, key=lambda r: r.data.metrics.get("val/loss", 9))
    assert parent.data.tags[leaderboard.TAG_BEST_RUN] == best.info.run_id
    history = client.get_metric_history(pid, "val/loss")
    assert [m.step for m in history] == [500]  # where the child's curves end


def test_progress_prints_at_most_twenty_lines_outside_a_terminal(capsys):
    for verbose, expected in ((False, LINES), (True, 1000)):
        p = Progress(100_000, 0, "charrnn", verbose=verbose)
        for it in range(100, 100_001, 100):
            p.update(it, 40.0, 1e5)
        p.close()
        err = capsys.readouterr().err.splitlines()
        assert len(err) == expected
        assert err[-1].startswith("charrnn iter 100000/100000")


def test_quiet_drops_only_known_third_party_warnings():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet.quiet_third_party(verbose=False)
        warnings.warn(
            "The ``noload`` loader strategy is deprecated and will be removed",
            DeprecationWarning,
            stacklevel=2,
        )
        warnings.warn(
            "starlette.middleware.wsgi is deprecated and will be removed",
            DeprecationWarning,
            stacklevel=2,
        )
        warnings.warn("rnnlab: something of our own", UserWarning, stacklevel=2)
    assert [str(w.message) for w in seen] == ["rnnlab: something of our own"]
    assert quiet.verbose_requested(["x=1", "verbose=true"])
    assert not quiet.verbose_requested(["x=1"])


def test_writes_to_a_closed_pipe_are_dropped():
    """A real pipe whose reader has gone: the wrapped stream neither raises nor blocks."""
    code = (
        "import sys; from rnnlab.quiet import survive_closed_output; survive_closed_output()\n"
        "for i in range(20000): print('x' * 80)\n"
        "sys.stderr.write('survived\\n')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    proc.stdout.close()  # the reader goes away at once, like `| head -0`
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert err == "survived\n"


def sweep_children(cwd: Path):
    client = MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    exp = client.get_experiment_by_name("adder")
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("rnnlab.kind") == "sweep"]
    return parent, [r for r in runs if r is not parent and r.info.run_id != parent.info.run_id]


@pytest.mark.slow
def test_a_sweep_piped_into_head_closes_every_run(tmp_path):
    """`python -m rnnlab.run -m … | head -0`: the children FINISH and the parent is closed."""
    cmd = (f"{sys.executable} -m rnnlab.run -m task=adder iterations=300 log_every=10 "
           "hidden_size=4,8 | head -0")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run(cmd, shell=True, cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300, executable="/bin/bash")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "BrokenPipeError" not in done.stderr
    parent, children = sweep_children(tmp_path)
    assert sorted(c.info.status for c in children) == ["FINISHED", "FINISHED"]
    assert parent.info.status == "FINISHED"


@pytest.mark.slow
def test_a_sweep_ends_with_its_leaderboard_and_a_single_job_with_its_run_id(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "rnnlab.run", "-m", "task=adder", "iterations=300",
         "hidden_size=4,8"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    print(done.stdout)
    parent, children = sweep_children(tmp_path)
    out = done.stdout
    assert f"2 runs, 0 did not finish, parent run {parent.info.run_id}" in out
    for c in children:
        assert c.info.run_id in out  # each configuration's best run, in full
    assert "  report:  reports/" in out
    assert parent.data.metrics["objective"] == min(
        1 - c.data.metrics["val/exact_acc"] for c in children
    )

    single = subprocess.run(
        [sys.executable, "-m", "rnnlab.run", "task=adder", "iterations=100"], cwd=tmp_path,
        capture_output=True, text=True, timeout=300,
        env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]
    (rid,) = set(RUN_ID.findall(single.stdout))
    run = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(rid)
    assert re.fullmatch(r"adder-\d{8}-\d{6}|iterations=100,task=adder", run.info.run_name)
    assert f"python -m rnnlab.sample run_id={rid} a=77 b=41" in single.stdout


def test_report_figures_tell_seeds_apart_and_avoid_the_faint_end():
    import pandas as pd
    from matplotlib.colors import to_rgb

    from rnnlab.report.figures import CMAP, Styler

    runs = pd.DataFrame({"hidden_size": [8, 8, 8], "seed": [0, 1, 2]})
    styler = Styler(runs, ["hidden_size"])
    styles = [styler.style(r) for _, r in runs.iterrows()]
    assert len({s["linestyle"] for s in styles}) == 3  # one configuration, three seeds apart
    alone = Styler(runs, [])  # nothing swept: the seed takes the colour
    assert len({alone.style(r)["color"] for _, r in runs.iterrows()}) == 3
    # the brightest colour is still dark enough to see on white (viridis' end is not)
    assert sum(to_rgb(CMAP(1.0))) / 3 < 0.65
