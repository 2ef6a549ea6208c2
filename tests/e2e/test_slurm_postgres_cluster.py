"""The cluster path for real: a one-node SLURM cluster, PostgreSQL and an ``mlflow server`` on it,
started by ``python -m rnnlab.cluster up`` (the commands of docs/cluster.md), real ``sbatch`` jobs
through hydra-submitit-launcher, real preemption signals, requeues and SIGKILLs.

Skipped (with the reason) where slurm-wlm/munge/postgresql are not installed or not root; CI
sets RNNLAB_REQUIRE_CLUSTER=1, and then they fail instead. The tests share one cluster and run
in file order: the first sweep's runs are the uninterrupted references of the second's.
"""

from __future__ import annotations

import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from rnnlab import cluster as local_cluster
from rnnlab.sweeps.requeue import TAG_REQUEUES
from rnnlab.tracking.slurm import TAG_JOB

pytestmark = pytest.mark.slow

# Long enough (several seconds of training) to be signalled between two checkpoints.
ADDER = [
    "task=adder",
    "seq_length=8",
    "hidden_size=16",
    "iterations=12000",
    "log_every=200",
    "eval_every=2000",
    "sample_every=12000",
    "checkpoint_every=2000",
]
HISTORY_KEYS = (
    "train/loss",
    "train/smooth_loss",
    "train/grad_norm",
    "val/exact_acc",
    "val/bit_acc",
)


def cli(args: list[str], cwd: Path, env: dict, timeout: float = 400, module="rnnlab.run"):
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


@pytest.fixture(scope="module")
def cluster():
    """(state folder, environment of ``eval "$(python -m rnnlab.cluster env)"``)."""
    if os.environ.get("RNNLAB_CLUSTER_DIR"):  # a cluster already up: use it, leave it up
        state = Path(os.environ["RNNLAB_CLUSTER_DIR"]).resolve()
        c = local_cluster.Cluster.load(state)
        assert len(local_cluster.running(c)) == len(local_cluster.DAEMONS), "cluster not up"
        root = Path(tempfile.mkdtemp(prefix="rnnlab-cluster-work-"))
        yield root, {**os.environ, **c.env()}
        shutil.rmtree(root, ignore_errors=True)
        return
    reason = local_cluster.available()
    if reason:
        if os.environ.get("RNNLAB_REQUIRE_CLUSTER"):
            pytest.fail(f"RNNLAB_REQUIRE_CLUSTER=1 but no local cluster: {reason}")
        pytest.skip(f"no local SLURM/PostgreSQL cluster: {reason}")
    # not under pytest's tmp folder (mode 0700): PostgreSQL runs as the postgres user
    root = Path(tempfile.mkdtemp(prefix="rnnlab-cluster-"))
    root.chmod(0o711)
    started = time.monotonic()
    base = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    up = cli(["up", f"dir={root / 'state'}"], root, base, 300, "rnnlab.cluster")
    print(f"cluster up in {time.monotonic() - started:.1f} s")
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        exports = cli(["env", f"dir={root / 'state'}"], root, base, 60, "rnnlab.cluster")
        env = dict(base)
        for line in exports.stdout.splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = shlex.split(value)[0]
        yield root, env
    finally:
        down = cli(["down", f"dir={root / 'state'}"], root, base, 120, "rnnlab.cluster")
        left = local_cluster.leftover_processes(root)
        stepd = subprocess.run(["pgrep", "-a", "slurmstepd"], capture_output=True, text=True)
        shutil.rmtree(root, ignore_errors=True)
        assert down.returncode == 0, down.stderr
        assert not left, left
        assert not stepd.stdout.strip(), f"job step daemons left: {stepd.stdout}"


def runs_of(uri: str, parent_id: str) -> list:
    client = MlflowClient(uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, f"tags.mlflow.parentRunId = '{parent_id}'", max_results=100)


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def parent_of(proc: subprocess.CompletedProcess, uri: str) -> str:
    client = MlflowClient(uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    parents = client.search_runs(exps, "tags.`rnnlab.kind` = 'sweep'", order_by=["start_time DESC"])
    return parents[0].info.run_id


REFERENCE: dict[str, str] = {}  # seed → run id of the uninterrupted sweep's child


def test_a_sweep_runs_as_sbatch_jobs_into_postgresql_and_the_server(cluster):
    root, env = cluster
    work = root / "sweep"
    work.mkdir()
    uri = env["MLFLOW_TRACKING_URI"]
    proc = cli(["-m", "+cluster=slurm", *ADDER, "seed=0,1,2,3"], work, env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "submitted SLURM jobs" in proc.stdout  # Hydra logs to stdout
    parent_id = parent_of(proc, uri)
    client = MlflowClient(uri)
    parent = client.get_run(parent_id)
    errors = [r.data.tags.get("error", "")[-1500:] for r in runs_of(uri, parent_id)]
    assert parent.info.status == "FINISHED", errors
    assert parent.data.tags["rnnlab.children_finished"] == "4"
    assert "Slurm" in parent.data.tags["rnnlab.launcher"]
    children = runs_of(uri, parent_id)
    assert sorted(r.info.status for r in children) == ["FINISHED"] * 4
    assert sorted(r.data.params["seed"] for r in children) == ["0", "1", "2", "3"]
    # four real SLURM jobs of one array, each recorded in its run
    job_ids = sorted(r.data.tags[TAG_JOB] for r in children)
    assert len(set(job_ids)) == 4 and len({j.split("_")[0] for j in job_ids}) == 1
    REFERENCE.update({r.data.params["seed"]: r.info.run_id for r in children})
    # the store is PostgreSQL behind the server; artifacts went through it to its root
    assert not (work / "mlflow.db").exists() and not (work / "mlruns").exists()
    ckpts = client.list_artifacts(children[0].info.run_id, "checkpoints")
    assert ckpts
    state = Path(env["RNNLAB_CLUSTER_DIR"])
    assert list((state / "mlflow" / "artifacts").rglob("iter_0012000.npz"))
    assert (state / "postgres" / "data" / "PG_VERSION").is_file()
    # the report regenerates from that store
    report = cli([f"sweep={parent_id}", "out=again", "log=false"], work, env, 300, "rnnlab.report")
    assert report.returncode == 0, report.stderr[-3000:]
    html = (work / "again" / "report.html").read_text()
    assert all(f"seed={s}" in html for s in "0123"), html[:2000]


def numeric_id(job: str, env: dict) -> str:
    """The job id SLURM gave array task ``<array>_<task>`` itself."""
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%A"], env=env, capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    return out.split()[0]


def test_preempted_requeued_and_killed_jobs_resume_their_runs_and_a_dead_one_fails_visibly(
    cluster,
):
    """Job 0 gets submitit's preemption signal (USR2), job 1 is requeued by scontrol, job 2 is
    SIGKILLed and requeued, job 3 is SIGKILLed for good (a node's OOM killer)."""
    if len(REFERENCE) != 4:
        pytest.skip("needs the uninterrupted sweep of the test before")
    root, env = cluster
    work = root / "requeue"
    work.mkdir()
    uri = env["MLFLOW_TRACKING_URI"]
    client = MlflowClient(uri)
    rng = random.Random(14)
    # after which checkpoint each job is hit: drawn from a seeded generator, printed
    hit_after = {task: rng.choice([2000, 4000]) for task in range(4)}
    print(f"signal after checkpoint iteration: {hit_after}")
    sweep = subprocess.Popen(
        [sys.executable, "-m", "rnnlab.run", "-m", "+cluster=slurm", *ADDER, "seed=0,1,2,3",
         "hydra.launcher.failure_grace_s=20", "tracking.flush_seconds=1"],
        cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    actions = {
        0: lambda j: ["scancel", "--signal=USR2", f"{j}.0"],
        1: lambda j: ["scontrol", "requeue", j],
        2: lambda j: [
            "sh",
            "-c",
            f"scancel --signal=KILL {j}.0 && sleep 0.3 && scontrol requeue {j}",
        ],
        3: lambda j: ["scancel", "--signal=KILL", f"{j}.0"],
    }
    done: dict[int, str] = {}
    deadline = time.monotonic() + 240
    while len(done) < 4 and sweep.poll() is None and time.monotonic() < deadline:
        exps = [e.experiment_id for e in client.search_experiments()]
        for run in client.search_runs(exps, f"tags.`rnnlab.sweep_dir` LIKE '{work}%'"):
            job = run.data.tags.get(TAG_JOB)
            task = int(job.split("_")[1]) if job else None
            if task is None or task in done or run.info.status != "RUNNING":
                continue
            names = [
                Path(a.path).name for a in client.list_artifacts(run.info.run_id, "checkpoints")
            ]
            if f"iter_{hit_after[task]:07d}.npz" in names:
                # signals go to the job's step (<task's own job id>.0): a job-level signal is
                # refused while the job is being requeued, and scancel then retries it for half
                # a minute, into the restarted job
                argv = actions[task](numeric_id(job, env))
                subprocess.run(argv, env=env, check=True, timeout=30)
                done[task] = job
                print(f"{time.monotonic():.1f}: task {task} ({job}) hit: {argv}")
        time.sleep(0.3)
    out, _ = sweep.communicate(timeout=300)
    assert len(done) == 4, f"jobs not hit in time: {done}\n{out[-4000:]}"
    parent_id = parent_of(sweep, uri)
    children = {int(r.data.tags[TAG_JOB].split("_")[1]): r for r in runs_of(uri, parent_id)}
    assert sorted(children) == [0, 1, 2, 3], out[-4000:]

    # the dead job: FAILED with its SLURM job id and log tail; the parent says 1 of 4
    dead = children[3]
    assert dead.info.status == "FAILED"
    assert f"SLURM job {done[3]}" in dead.data.tags["error"]
    assert "Log tail" in dead.data.tags["error"]
    parent = client.get_run(parent_id)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["error"] == "1 of 4 child runs did not finish"
    assert parent.data.tags["rnnlab.children_failed"] == "1"

    # the others: one run each, requeued once, FINISHED, histories equal to uninterrupted runs
    for task in (0, 1, 2):
        run = children[task]
        tags = run.data.tags
        assert run.info.status == "FINISHED", (task, tags.get("error"), out[-3000:])
        assert tags[TAG_REQUEUES] == "1", tags
        assert (
            "restart 1" in tags["rnnlab.requeue_1"] and "Z: SLURM job" in tags["rnnlab.requeue_1"]
        )
        reference = REFERENCE[run.data.params["seed"]]
        for key in HISTORY_KEYS:
            got, want = history(client, run.info.run_id, key), history(client, reference, key)
            assert got == want, (task, key, got[:5], want[:5])
            assert len({s for s, _ in got}) == len(got)  # each step once
    # a graceful stop wrote a stop checkpoint and said why; a SIGKILL resumed from the last one
    assert "SIGUSR2" in children[0].data.tags["rnnlab.stopped_1"]
    assert "scontrol requeue" in children[1].data.tags["rnnlab.stopped_1"]
    assert "rnnlab.stopped_1" not in children[2].data.tags
    assert "from iter_" in children[2].data.tags["rnnlab.requeue_1"]  # its last covered one
    assert "after RUNNING" in children[2].data.tags["rnnlab.requeue_1"]


def test_a_search_through_slurm_prunes_across_jobs_and_continues_after_ctrl_c(cluster):
    root, env = cluster
    work = root / "search"
    work.mkdir()
    storage = env["RNNLAB_OPTUNA_STORAGE"]
    args = [
        "-m", "+cluster=slurm", "+search=adder", "seq_length=4", "iterations=1500",
        "eval_every=100", "log_every=100", "hydra.sweeper.n_trials=6", "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.pruner.min_resource=300", f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=cluster-search",
    ]  # fmt: skip
    first = subprocess.Popen(
        [sys.executable, "-m", "rnnlab.run", *args], cwd=work, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    study = None
    deadline = time.monotonic() + 200
    while time.monotonic() < deadline and first.poll() is None:
        try:
            study = optuna.load_study(study_name="cluster-search", storage=storage)
            if len([t for t in study.trials if t.state.is_finished()]) >= 2:
                break
        except KeyError:  # not created yet
            pass
        time.sleep(0.5)
    first.send_signal(signal.SIGINT)  # Ctrl-C of the sweeper
    out1, _ = first.communicate(timeout=120)
    assert first.returncode == 130, out1[-3000:]
    study = optuna.load_study(study_name="cluster-search", storage=storage)
    before = {t.number: t.state.name for t in study.trials}
    print(f"after Ctrl-C: {before}")
    assert sum(s in ("COMPLETE", "PRUNED") for s in before.values()) >= 2

    again = cli(args, work, env)
    assert again.returncode == 0, again.stderr[-4000:]
    study = optuna.load_study(study_name="cluster-search", storage=storage)
    trials = study.trials
    print({t.number: (t.state.name, t.params) for t in trials})
    finished = [t for t in trials if t.state.is_finished()]
    assert len(finished) >= 6 and all(t.state.name != "RUNNING" for t in trials)
    for number, state in before.items():  # the first run's trials are kept as they were
        if state in ("COMPLETE", "PRUNED"):
            assert study.trials[number].state.name == state
    # two trials in flight at once: their runs overlap in time
    runs = [t for t in trials if t.datetime_complete and t.intermediate_values]
    overlaps = [
        (a.number, b.number) for a in runs for b in runs
        if a.number < b.number and a.datetime_start < b.datetime_complete
        and b.datetime_start < a.datetime_complete
    ]  # fmt: skip
    assert overlaps, "no two trials ran at the same time"
    # pruning across jobs: a job read the other jobs' values from PostgreSQL and stopped
    assert any(t.state.name == "PRUNED" for t in trials), [t.state.name for t in trials]
    assert all(t.intermediate_values for t in finished if t.state.name != "FAIL")
