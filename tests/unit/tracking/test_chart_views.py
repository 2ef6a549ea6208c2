"""rnnlab's chart views in the MLflow UI (rnnlab.tracking.mlflow_view): what the tags hold and which
addresses print them, on a real SQLite store with a real job. What a browser then draws is
tests/e2e/test_mlflow_ui_screens.py."""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_EXPERIMENT_TAG_VAL_LENGTH

from rnnlab.sweeps import leaderboard
from rnnlab.sweeps.compose import CONFIG_DIR, register_configs, to_config
from rnnlab.tracking import mlflow_view, ui
from rnnlab.tracking.job import JobContext, run_job


@pytest.fixture(autouse=True)
def _no_env_store(no_env_store):
    """conftest.no_env_store for every test here."""


def mlflow_section(key: str) -> str:
    """The chart section MLflow 3.17 files ``key`` under (RunsChartsCardConfig's rule)."""
    prefix = key.rsplit("/", 1)[0] if "/" in key else ""
    return {"": "Model metrics", "system": "System metrics"}.get(prefix, prefix)


def test_a_view_starts_with_the_learning_curves_and_fits_a_tag():
    state = mlflow_view.view_state()
    sections = state["compareRunSections"]
    assert sections[0]["name"] == "Learning curves" and state["isAccordionReordered"] is True
    assert [s["name"] for s in sections[1:3]] == ["train", "val"]
    assert [s["name"] for s in sections].index("final") > [s["name"] for s in sections].index("val")
    charts = state["compareRunCharts"]
    assert [c["metricKey"] for c in charts] == list(mlflow_view.LEARNING_CURVES)
    assert {c["metricSectionId"] for c in charts} == {sections[0]["uuid"]}
    assert all(c["type"] == "LINE" and not c["isGenerated"] for c in charts)
    assert len({s["uuid"] for s in sections}) == len(sections)
    value = mlflow_view.view_tag(mlflow_view.view_state("tags.mlflow.parentRunId = 'x'", True))
    assert json.loads(value)["runsHiddenMode"] == "SHOW_ALL"
    assert len(value) < MAX_EXPERIMENT_TAG_VAL_LENGTH
    # a filtered view sorts by name: MLflow would nest (fold) children sorted by start time
    assert json.loads(value)["orderByKey"] == "tags.`mlflow.runName`"


def test_a_ranked_view_leads_with_the_objective_in_its_curves_and_its_table():
    """A sweep's or a job's view: the objective's curve first, and a runs table whose first
    columns are the objective and the params that tell the runs apart, the best run first
    (an accuracy: highest first)."""
    ranking = mlflow_view.Ranking("val/exact_acc", True, ("hidden_size", "seed"))
    state = mlflow_view.view_state("tags.mlflow.parentRunId = 'x'", True, ranking)
    curves = [c["metricKey"] for c in state["compareRunCharts"]]
    assert curves[0] == "val/exact_acc" and sorted(curves) == sorted(mlflow_view.LEARNING_CURVES)
    lead = ["metrics.`val/exact_acc`", "params.`hidden_size`", "params.`seed`"]
    assert state["selectedColumns"] == [*lead, "metrics.`train/smooth_loss`",
                                        "metrics.`perf/train_seconds`"]  # fmt: skip
    assert state["columnOrder"] == lead
    assert state["orderByKey"] == "metrics.`val/exact_acc`" and state["orderByAsc"] is False
    assert len(mlflow_view.view_tag(state)) < MAX_EXPERIMENT_TAG_VAL_LENGTH
    # an override key names the param it sets; a key a run has no param for is left out
    assert ui.param_keys(["task", "hidden_size", "nothing"], {"task.name", "hidden_size"}) == (
        "task.name", "hidden_size")  # fmt: skip


@pytest.mark.slow  # a real job (~5 s on a loaded 2-core machine)
def test_jobs_and_sweeps_get_their_views_and_print_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = to_config(compose("config", ["task=adder", "iterations=60", "eval_every=30"]))
    run_job(cfg, JobContext(launch_dir=tmp_path, output_dir=tmp_path / "out"), show_progress=False)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("adder")
    assert mlflow_view.TAG_PREFIX + "rnnlab" in exp.tags  # the experiment's view of all its runs
    (run,) = client.search_runs([exp.experiment_id])
    # every section rnnlab's metrics land in has its place: none is appended after the rest
    order = [s["name"] for s in mlflow_view.view_state()["compareRunSections"]]
    missing = {mlflow_section(k) for k in run.data.metrics} - set(order)
    assert not missing, missing

    # the single job's closing lines: its own view, the run alone
    closed, lines = ui.last_run_closing("adder", tmp_path, uri)
    rid = closed.info.run_id
    (charts,) = [ln for ln in lines if ln.startswith("  charts:  ")]
    assert charts.endswith(
        f"/#/experiments/{exp.experiment_id}/runs?compareRunsMode=CHART"
        f"&viewStateShareKey=run-{rid}&workflowType=machine_learning"
    )
    tags = client.get_experiment(exp.experiment_id).tags
    view = json.loads(tags[f"{mlflow_view.TAG_PREFIX}run-{rid}"])
    assert view["searchFilter"] == f"attributes.run_id = '{rid}'"
    assert client.search_runs([exp.experiment_id], view["searchFilter"])[0].info.run_id == rid

    # a sweep: its view shows its children (the filter finds exactly them)
    parent = client.create_run(exp.experiment_id, tags={"rnnlab.swept_keys": "hidden_size"})
    pid = parent.info.run_id
    kids = []
    for h in ("4", "8"):
        kid = client.create_run(exp.experiment_id, tags={"mlflow.parentRunId": pid})
        client.log_batch(
            kid.info.run_id,
            metrics=[Metric("val/exact_acc", 0.5, 0, 10)],
            params=[Param("hidden_size", h)],
        )
        client.set_terminated(kid.info.run_id, "FINISHED")
        kids.append(kid.info.run_id)
    lines = leaderboard.sweep_closing_lines(uri, pid, None)
    (charts,) = [ln for ln in lines if ln.startswith("  charts:  ")]
    assert f"viewStateShareKey=sweep-{pid}&" in charts
    tag = client.get_experiment(exp.experiment_id).tags[f"{mlflow_view.TAG_PREFIX}sweep-{pid}"]
    found = client.search_runs([exp.experiment_id], json.loads(tag)["searchFilter"])
    assert sorted(r.info.run_id for r in found) == sorted(kids)

    # every page of the UI fetches all experiment tags: only the newest views of each kind stay
    monkeypatch.setattr(mlflow_view, "KEEP_VIEWS", 3)
    ids = [f"{i:032x}" for i in range(4)]
    for i in ids:
        assert mlflow_view.write_run_view(client, exp.experiment_id, i)
    assert mlflow_view.write_run_view(client, exp.experiment_id, ids[-1])  # unchanged: kept
    tags = client.get_experiment(exp.experiment_id).tags
    views = sorted(k.removeprefix(mlflow_view.TAG_PREFIX) for k in tags if "sharedViewState" in k)
    assert views == ["rnnlab", *[f"run-{i}" for i in ids[1:]], f"sweep-{pid}"]  # not run-{rid}


def test_a_served_store_prints_the_servers_address():
    address = ui.charts_address("http://h:5000/", "7", "rnnlab")
    assert address == (
        "http://h:5000/#/experiments/7/runs?compareRunsMode=CHART&viewStateShareKey=rnnlab"
        "&workflowType=machine_learning"
    )
