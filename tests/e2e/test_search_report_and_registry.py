"""The report of an Optuna search (trials, pruned runs, search figures), and registering a
sweep's best run (``python -m rnnlab.model register``).

The slow tests run a real search and a real grid through ``python -m rnnlab.run -m`` in a temp
folder (SQLite store) and check the report against MLflow read directly.
"""

from __future__ import annotations

import base64
import math

import numpy as np
import pandas as pd
import pytest
from helpers.processes import run_cli
from helpers.report import TINY, Page, decode_png, make_corpus, parent_of, read_csv, report_dir
from mlflow.tracking import MlflowClient

from rnnlab.report.figures import search_figures
from rnnlab.sweeps import search
from rnnlab.tasks import CharTask
from rnnlab.tasks.judging import metric_key

# The quick adder search of e2e/test_optuna_search.py: 6-bit sums, ≤ 1200 iterations, val every 100,
# successive halving from iteration 100, so some of its trials are pruned.
ADDER_SEARCH = ["+search=adder", "seq_length=6", "iterations=1200", "eval_every=100",
                "sample_every=1200", "checkpoint_every=1200",
                "hydra.sweeper.pruner.min_resource=100", "hydra.sweeper.n_trials=6"]  # fmt: skip
SEARCH_PNGS = {
    "search_best_so_far.png",
    "search_intermediate.png",
    "search_params.png",
    "search_parallel.png",
}

# --- fast -----------------------------------------------------------------------------------------


def test_search_figures_draw_failed_trials_and_categorical_params(tmp_path):
    """A FAIL trial (no value, no intermediate values) and a string-valued choice still draw."""
    trials = pd.DataFrame(
        {
            "trial": [0, 1, 2],
            "state": ["COMPLETE", "PRUNED", "FAIL"],
            "value": [0.5, 0.9, math.nan],
            "best_so_far": [0.5, 0.5, 0.5],
            "iterations": [1000, 200, 0],
            "intermediate": [[(100, 0.9), (1000, 0.5)], [(100, 0.95), (200, 0.9)], []],
            "run_id": ["a", "b", "c"],
            "param.learning_rate": [0.01, 0.5, 2.0],
            "param.optimizer.name": ["adam", "sgd", "adam"],
        }
    )
    figs = search_figures(trials, ["learning_rate", "optimizer.name"], "adder", tmp_path)
    assert {f.name for f in figs} == SEARCH_PNGS
    for f in figs:
        decode_png(f.path.read_bytes())


# --- slow: a real search --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adder_search(tmp_path_factory):
    """A 6-trial adder search; the callback writes its report. → (folder, report dir, uri, id)"""
    tmp = tmp_path_factory.mktemp("report_search")
    done = run_cli(["-m", *ADDER_SEARCH], tmp, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = report_dir(done, tmp)
    client, parent_id = parent_of(tmp)
    return tmp, out, client, parent_id


def trial_runs(client: MlflowClient, parent_id: str) -> dict[int, object]:
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exps, f"tags.`mlflow.parentRunId` = '{parent_id}'")
    return {int(r.data.tags[search.TAG_TRIAL]): r for r in runs}


@pytest.mark.slow
def test_trials_csv_equals_search_trials_and_mlflow(adder_search):
    tmp, out, client, parent_id = adder_search
    assert client.get_run(parent_id).data.tags["rnnlab.search"] == "optuna"
    got = pd.read_csv(out / "trials.csv")
    want = search.search_trials(client.tracking_uri, parent_id).drop(columns="intermediate")
    pd.testing.assert_frame_equal(got, want, check_dtype=False)  # CSV floats round-trip (repr)

    runs = trial_runs(client, parent_id)
    assert list(got["trial"]) == sorted(runs) == list(range(6))
    for _, row in got.iterrows():
        run = runs[row["trial"]]
        assert row["run_id"] == run.info.run_id
        assert row["state"] == run.data.tags[search.TAG_STATE]
        assert row["param.hidden_size"] == int(run.data.params["hidden_size"])
        assert row["param.learning_rate"] == float(run.data.params["learning_rate"])
        if row["state"] == "COMPLETE":  # adder objective: 1 − final exact accuracy
            assert row["value"] == 1 - run.data.metrics["final/val_exact_acc"]
    states = set(got["state"])
    assert {"COMPLETE", "PRUNED"} <= states, states
    best = got["best_so_far"].to_numpy()
    assert np.all(np.diff(best[~np.isnan(best)]) <= 0)  # monotone non-increasing
    complete = got.loc[got["state"] == "COMPLETE", "value"]
    assert best[-1] == complete.min()
    tags = client.get_run(parent_id).data.tags
    assert float(tags["rnnlab.best_value"]) == pytest.approx(best[-1], abs=1e-6)


@pytest.mark.slow
def test_pruned_trials_are_marked_in_the_runs_table(adder_search):
    tmp, out, client, parent_id = adder_search
    runs = {r.info.run_id: r for r in trial_runs(client, parent_id).values()}
    rows = read_csv(out / "runs.csv")
    assert {r["run_id"] for r in rows} == set(runs)
    pruned = []
    for row in rows:
        tags = runs[row["run_id"]].data.tags
        assert row["status"] == runs[row["run_id"]].info.status == "FINISHED"  # as MLflow says
        assert row["trial"] == tags[search.TAG_TRIAL]
        assert row["trial_state"] == tags[search.TAG_STATE]
        assert row["pruned_at"] == tags.get(search.TAG_PRUNED_AT, "")
        if row["trial_state"] == "PRUNED":
            pruned.append(f"PRUNED at {int(row['pruned_at']):,}")
    assert pruned
    md = (out / "report.md").read_text(encoding="utf-8")
    runs_md = md.split("## Runs, ranked by the objective", 1)[1].split("## Figures", 1)[0]
    assert runs_md.count("| PRUNED at ") == len(pruned)
    assert runs_md.count("| FINISHED |") == len(rows) - len(pruned)
    html = (out / "report.html").read_text(encoding="utf-8")
    runs_html = html.split("Runs, ranked by the objective", 1)[1].split("<h2>Figures", 1)[0]
    assert runs_html.count('<tr class="pruned">') == len(pruned)
    for text in pruned:
        assert f'<td class="text">{text}</td>' in runs_html
    # pruning is a decision, not a failure: no "did not finish" list
    assert "Runs that did not finish" not in html


@pytest.mark.slow
def test_search_report_has_trials_table_and_figures_that_decode(adder_search):
    tmp, out, client, parent_id = adder_search
    names = {p.name for p in out.glob("*.png")}
    assert SEARCH_PNGS <= names
    assert not any("heatmap" in n or "_vs_params" in n for n in names)  # grid-only figures
    for p in out.glob("*.png"):
        decode_png(p.read_bytes())
    page = Page()
    page.feed((out / "report.html").read_text(encoding="utf-8"))
    page.close()
    assert len(page.images) == len(names)
    for src in page.images:
        decode_png(base64.b64decode(src.split(",", 1)[1]))
    text = "".join(page.text)
    trials = pd.read_csv(out / "trials.csv")
    assert f"Search: {len(trials)} Optuna trials" in text
    assert "Optuna study adder-lr-hidden, 6 trials" in text
    md = (out / "report.md").read_text(encoding="utf-8")
    for name in SEARCH_PNGS:
        assert f"]({name})" in md
    table = md.split("## Search: 6 Optuna trials", 1)[1].split("![", 1)[0]
    for _, r in trials.iterrows():
        assert f"| {r['trial']} | {r['state']} | {r['value']:.4f} |" in table
    # the report logged to the parent run carries trials.csv too
    logged = {f.path.split("/")[-1] for f in client.list_artifacts(parent_id, "report")}
    assert {"trials.csv", *SEARCH_PNGS} <= logged


@pytest.mark.slow
def test_register_refuses_a_sweep_without_a_char_rnn_model(adder_search):
    tmp, out, client, parent_id = adder_search
    done = run_cli(["register", f"sweep={parent_id}", "name=adder"], tmp, module="rnnlab.model")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"rnnlab: error: run {parent_id} has no FINISHED child run with a logged model "
        "(6 finished children, 0 with a model)"
    ]


# --- slow: the model registry ---------------------------------------------------------------------


@pytest.mark.slow
def test_every_surface_names_the_objective_by_one_key_and_register_adds_it_once(
    tmp_path, kafka_path
):
    """The jobs' summary lines, the leaderboard, the report, the registry and the help texts
    all name a char-RNN sweep's objective by the same key, ``Judged.default``, with the same
    value; registering the sweep's best run twice adds one version."""
    key = CharTask.JUDGED.default  # what a char-RNN sweep minimises unless told otherwise
    final_key = "final/" + metric_key(key)
    corpus = make_corpus(tmp_path / "corpus.txt")
    done = run_cli(["-m", f"data.path={corpus}", "hidden_size=8,16", *TINY], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    client, parent_id = parent_of(tmp_path)
    exps = [e.experiment_id for e in client.search_experiments()]
    kids = client.search_runs(exps, f"tags.`mlflow.parentRunId` = '{parent_id}'")
    assert len(kids) == 2 and all("rnnlab.model_uri" in r.data.tags for r in kids)
    best = min(kids, key=lambda r: r.data.metrics[final_key])  # the objective
    objective = best.data.metrics[final_key]
    print(done.stderr[-1500:], done.stdout, sep="\n")

    # each job's summary line: the objective by its key and value, then labelled numbers
    for kid in kids:
        (line,) = [ln for ln in done.stderr.splitlines() if kid.info.run_id in ln]
        value = kid.data.metrics[final_key]
        assert "FINISHED in " in line and f", objective {key} {value:.4f}, " in line, line
        assert f"final/val_loss {kid.data.metrics['final/val_loss']:.4f}" in line
    # the leaderboard: its objective column names the key; the first row is the best run
    (header,) = [ln for ln in done.stdout.splitlines() if ln.strip().startswith("rank")]
    assert f"objective {key} (mean ± std)" in header
    first = next(ln for ln in done.stdout.splitlines() if ln.strip().startswith("1 "))
    assert f" {objective:.4f} (n=1) " in first and best.info.run_id in first
    # the report: its headline and facts name the key; runs.csv says which metric each run's is
    md = (report_dir(done, tmp_path) / "report.md").read_text(encoding="utf-8")
    (headline,) = [ln for ln in md.splitlines() if ln.startswith("**Best configuration")]
    assert f"— objective {key} {objective:.4f} (n=1); final val/loss" in headline
    assert f"- objective: {key} (lower ranks first)" in md
    rows = read_csv(report_dir(done, tmp_path) / "runs.csv")
    assert {r["objective_metric"] for r in rows} == {key}
    # the help texts name each task's default
    for module in ("rnnlab.report", "rnnlab.model"):
        helped = run_cli(["--help"], tmp_path, module=module)
        assert helped.returncode == 0 and f"charrnn {key}" in helped.stdout, helped.stdout
        assert "final/val_loss" not in helped.stdout

    # the registry: the same phrase, once
    for what in ("registered", "already registered:"):  # a second time adds no version
        reg = run_cli(["register", f"sweep={parent_id}", "name=tiny-charrnn"], tmp_path,
                      module="rnnlab.model")  # fmt: skip
        assert reg.returncode == 0, reg.stderr[-3000:]
        assert reg.stdout.strip().splitlines() == [
            f"{what} tiny-charrnn version 1: run {best.info.run_id} "
            f"(objective {key} {objective:.4f})"
        ]
    assert len(client.search_model_versions("name = 'tiny-charrnn'")) == 1
    mv = client.get_model_version("tiny-charrnn", "1")
    assert mv.run_id == best.info.run_id
    assert mv.source == best.data.tags["rnnlab.model_uri"] or best.info.run_id in mv.source
    assert mv.tags["rnnlab.sweep"] == parent_id
    assert mv.tags["rnnlab.objective"] == key
    assert float(mv.tags["rnnlab.objective_value"]) == pytest.approx(objective, rel=1e-5)
