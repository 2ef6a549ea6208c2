"""The main job before and after the compiled B = 1 window loops: wall and CPU time of the whole
``python -m rnnlab.run`` process, old and new side by side in one sitting, and whether they learn
the same.

    python experiments/main_job_speed/run.py [before=eb3e7d1] [before_path=DIR] [pairs=2]
        [seeds=1,2,3,4] [iterations=100000] [results=FILE] [page=FILE]
    python experiments/main_job_speed/run.py render=true     # re-render the page block only

*Before* is a checkout of ``before`` (a git worktree this script makes under the system's temp
folder and removes at the end, or ``before_path``, an existing checkout); *after* is the checkout
this script lives in. Each run is the main job exactly as the README documents it — ``python -m
rnnlab.run`` with the defaults (min-char-rnn on kafka, 100,000 iterations, B = 1 float64) — in a
fresh temporary folder of its own (a fresh ``mlflow.db``), BLAS, OpenMP and numba pinned to one
thread (``OPENBLAS_CORETYPE`` left as the machine sets it). Before any timing, one short untimed
run per checkout loads or compiles its kernels' on-disk cache, as a user's second run finds it.

Then ``pairs`` pairs at seed 0, the order alternating (before first, then after first, …) so a
neighbour's load hits both alike, each process's wall time and CPU time (user + system, its
children included) recorded, and its ``final/smooth_loss`` and ``val/loss_warm`` (the last
evaluation's, the objective) read back from its store. Before each main job the same command runs
with ``iterations=1``: what a run costs besides training (imports, the store, the end-of-run
sample, page and report), so the CPU of the training steps and their evaluations can be told
apart from it. Then the new main job at each of
``seeds``: the seed spread of those two figures. Over 100,000 Adagrad steps the kernels' and the
numpy cells' float rounding diverge chaotically, so "the same learning" means the old and the new
seed-0 figures lie within that spread, not that they are equal.

Writes ``results`` (default ``results.json`` beside this file: date, both commits, the machine,
the load averages before and after, every run) and renders ``markdown(results)`` into ``page``'s
``<!-- bench:main_job -->`` block (default ``docs/benchmarks.md``). Every figure on the page is
computed from that file here; ``tests/unit/test_main_job_speed.py`` checks the rendering and that
the committed page is the committed file's. Timings are never asserted by a test.

Not here: the engine's per-cell rates (``python -m rnnlab.bench``).
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]  # the "after" checkout
sys.path.insert(0, str(REPO))  # rnnlab from this checkout, as `python experiments/...` runs it

from rnnlab import cli, files  # noqa: E402
from rnnlab.errors import UserError  # noqa: E402

RESULTS = HERE / "results.json"
PAGE = REPO / "docs" / "benchmarks.md"
MARKERS = ("<!-- bench:main_job -->", "<!-- /bench:main_job -->")
BEFORE = "eb3e7d1"  # main just before the compiled B = 1 window loops landed
SEED = 0  # the main job's default seed
FIGURES = ("final/smooth_loss", "val/loss_warm")
TARGET = 2.5  # the main job at least this many times faster, end to end
# one thread for every library that could start more (OPENBLAS_CORETYPE, which picks the
# kernels and so the rounding, stays as the machine sets it)
PINNED = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
          "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS",
          "NUMBA_NUM_THREADS")}  # fmt: skip
WARMUP_ITERATIONS = 200

COMMAND = cli.Command(
    name="experiments/main_job_speed/run.py",
    summary="the main job's wall and CPU time before and after, and its seed spread",
    keys=(
        cli.Key("before", "the commit timed as 'before'", str, BEFORE),
        cli.Key("before_path", "an existing checkout to time as 'before' (default: a worktree)"),
        cli.Key("pairs", "before/after pairs at seed 0, order alternating", int, 2, minimum=1),
        cli.Key(
            "seeds", "the other seeds the new main job runs at, comma-separated", str, "1,2,3,4"
        ),  # fmt: skip
        cli.Key(
            "iterations", "the main job's iterations (default: its own, 100,000)", int, minimum=1
        ),  # fmt: skip
        cli.Key("results", "the results file to write", str, str(RESULTS)),
        cli.Key("page", "the docs page whose block to render", str, str(PAGE)),
        cli.Key("render", "only re-render the page from the results file", bool, False),
    ),
    examples=(
        "python experiments/main_job_speed/run.py",
        "python experiments/main_job_speed/run.py pairs=3 seeds=1,2,3,4,5,6",
        "python experiments/main_job_speed/run.py render=true",
    ),
)


# --- where, when ----------------------------------------------------------------------------------


def git(checkout: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(checkout), *args], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip


def commit_of(checkout: Path) -> dict:
    """The checkout's commit, full and short, and whether its library differs from it."""
    return {
        "commit": git(checkout, "rev-parse", "HEAD"),
        "short": git(checkout, "rev-parse", "--short", "HEAD"),
        "subject": git(checkout, "log", "-1", "--format=%s"),
        # the newest commit that changed the library: what the runs actually ran
        "library_commit": git(checkout, "log", "-1", "--format=%h", "--", "rnnlab"),
        "library_changed": bool(git(checkout, "status", "--porcelain", "--", "rnnlab")),
    }


def machine() -> dict:
    from rnnlab.bench import history

    return history.machine_info()


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --- one run --------------------------------------------------------------------------------------


def child_env(checkout: Path) -> dict[str, str]:
    env = {**os.environ, **PINNED, "PYTHONPATH": str(checkout)}
    env.pop("MLFLOW_TRACKING_URI", None)  # each run's own store in its folder
    env.pop("RNNLAB_DATA_DIR", None)
    return env


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> dict:
    """Run ``argv`` in ``cwd``: its wall time and CPU time (user + system of the process and the
    children it waited for), exit code, and its output kept in ``cwd``."""
    with open(cwd / "stdout.txt", "w") as out, open(cwd / "stderr.txt", "w") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=err,
                                start_new_session=True)  # fmt: skip
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # Ctrl-C: nothing this script started outlives it
            os.killpg(proc.pid, 9)
            proc.wait()
            raise
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"wall_seconds": wall, "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "user_seconds": usage.ru_utime, "system_seconds": usage.ru_stime,
            "max_rss_mb": usage.ru_maxrss / 1024, "returncode": proc.returncode}  # fmt: skip


def figures_of(folder: Path) -> dict[str, float]:
    """The main job's figures as its store holds them (its one run's latest values)."""
    from rnnlab.tracking import store

    client = store.open_store(f"sqlite:///{folder / 'mlflow.db'}")
    ids = [e.experiment_id for e in client.search_experiments()]
    (run,) = list(store.search_all(client, ids))
    m = run.data.metrics
    out = {k: m[k] for k in (*FIGURES, "final/chars_per_sec") if k in m}
    # the training loop's own time (wall), by the name each version logs it under
    for key in ("final/train_seconds", "final/wall_time_s"):
        if key in m:
            out["train_seconds"] = m[key]
    return out | {
        "run_id": run.info.run_id, "status": run.info.status}  # fmt: skip


def main_job(checkout: Path, version: str, seed: int, iterations: int | None, scratch: Path,
             label: str) -> dict:  # fmt: skip
    """One ``python -m rnnlab.run`` from ``checkout`` in a fresh folder: timed, then read."""
    folder = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=scratch))
    (folder / "data").mkdir()
    shutil.copy(REPO / "data" / "kafka.txt", folder / "data" / "kafka.txt")
    args = [] if seed == SEED else [f"seed={seed}"]
    args += [] if iterations is None else [f"iterations={iterations}"]
    at_start = load()
    t = timed([sys.executable, "-m", "rnnlab.run", *args], folder, child_env(checkout))
    run = {"version": version, "seed": seed, "args": args, "load_at_start": at_start, **t}
    closing = [ln for ln in (folder / "stderr.txt").read_text().splitlines()
               if ln.startswith("rnnlab: ") and "FINISHED" in ln]  # fmt: skip
    run["closing_line"] = closing[-1] if closing else None
    if t["returncode"] != 0:
        tail = (folder / "stderr.txt").read_text()[-2000:]
        raise RuntimeError(f"{version} main job failed ({t['returncode']}) in {folder}:\n{tail}")
    run |= figures_of(folder)
    shutil.rmtree(folder, ignore_errors=True)
    print(
        f"  {label}: {version} seed {seed}: wall {run['wall_seconds']:.1f} s, CPU "
        f"{run['cpu_seconds']:.1f} s, final/smooth_loss {run['final/smooth_loss']:.4f}, "
        f"val/loss_warm {run['val/loss_warm']:.4f} (load {at_start[0]:.1f})",
        flush=True,
    )
    return run


# --- the sitting ----------------------------------------------------------------------------------


def before_checkout(args: dict, scratch: Path) -> tuple[Path, bool]:
    """(the 'before' checkout, whether this script made it), its corpus in place."""
    if "before_path" in args:
        path = Path(args["before_path"]).resolve()
        if not (path / "rnnlab" / "run.py").is_file():
            raise UserError(f"before_path={args['before_path']!r} is not an rnnlab checkout")
        made = False
    else:
        path = scratch / f"before-{args['before']}"
        try:
            git(REPO, "worktree", "add", "--detach", str(path), args["before"])
        except subprocess.CalledProcessError as e:
            raise UserError(f"before={args['before']!r}: {e.stderr.strip()}") from None
        made = True
    kafka = path / "data" / "kafka.txt"  # a run reads the checkout's data/ first
    if not kafka.is_file():
        kafka.parent.mkdir(exist_ok=True)
        shutil.copy(REPO / "data" / "kafka.txt", kafka)
    return path, made


def measure(args: dict, argv: list[str]) -> dict:
    seeds = [int(s) for s in args["seeds"].split(",") if s.strip()]
    if SEED in seeds or len(seeds) < 2:
        raise UserError(f"seeds={args['seeds']!r}: give at least two seeds other than {SEED}")
    if not (REPO / "data" / "kafka.txt").is_file():
        raise UserError(f"no corpus at {REPO / 'data' / 'kafka.txt'}")
    iterations = args.get("iterations")
    scratch = Path(tempfile.mkdtemp(prefix="rnnlab-main-job-"))
    old, made = before_checkout(args, scratch)
    checkouts = {"before": old, "after": REPO}
    try:
        results = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": "python experiments/main_job_speed/run.py " + shlex.join(argv),
            "machine": machine(),
            "pinned": PINNED,
            "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
            "before": commit_of(old),
            "after": commit_of(REPO),
            "load_average": {"before": load()},
            "iterations": iterations,
            "runs": [],
        }
        print(
            f"before {results['before']['short']}, after {results['after']['short']}, "
            f"load {results['load_average']['before']}",
            flush=True,
        )
        for version, checkout in checkouts.items():  # untimed: each checkout's kernel cache
            folder = Path(tempfile.mkdtemp(prefix=f"warmup-{version}-", dir=scratch))
            t = timed([sys.executable, "-m", "rnnlab.run", f"iterations={WARMUP_ITERATIONS}"],
                      folder, child_env(checkout))  # fmt: skip
            if t["returncode"] != 0:
                tail = (folder / "stderr.txt").read_text()[-2000:]
                raise RuntimeError(f"{version} warm-up failed in {folder}:\n{tail}")
            print(f"  warm-up {version}: {t['wall_seconds']:.1f} s", flush=True)
        for pair in range(1, args["pairs"] + 1):
            order = ["before", "after"] if pair % 2 else ["after", "before"]
            for version in order:
                # what the job costs besides training: the same command for one iteration
                run = main_job(checkouts[version], version, SEED, 1, scratch, f"startup{pair}")
                results["runs"].append({"kind": "startup", "pair": pair} | run)
                run = main_job(checkouts[version], version, SEED, iterations, scratch,
                               f"pair{pair}")  # fmt: skip
                results["runs"].append({"kind": "pair", "pair": pair} | run)
        for seed in seeds:
            run = main_job(REPO, "after", seed, iterations, scratch, f"seed{seed}")
            results["runs"].append({"kind": "seed"} | run)
        results["load_average"]["after"] = load()
    finally:
        if made:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)],
                           capture_output=True)  # fmt: skip
        shutil.rmtree(scratch, ignore_errors=True)
    return results


# --- what the file says ---------------------------------------------------------------------------


def summarise(results: dict) -> dict:
    """The figures the page states, every one computed from the file's runs."""
    runs = results["runs"]
    pairs = sorted({r["pair"] for r in runs if r["kind"] == "pair"})

    def of(pair: int, version: str) -> dict:
        return next(r for r in runs if r["kind"] == "pair" and r["pair"] == pair
                    and r["version"] == version)  # fmt: skip

    wall = [of(p, "before")["wall_seconds"] / of(p, "after")["wall_seconds"] for p in pairs]
    cpu = [of(p, "before")["cpu_seconds"] / of(p, "after")["cpu_seconds"] for p in pairs]
    seeds = [r for r in runs if r["kind"] == "seed"]
    out: dict = {}
    started = {(r["pair"], r["version"]): r["cpu_seconds"] for r in runs if r["kind"] == "startup"}
    if started:  # CPU besides training (one iteration's job), and the rest of the job

        def rest(p: int, v: str) -> float:
            return of(p, v)["cpu_seconds"] - started[p, v]

        out["startup_cpu"] = {v: statistics.median(started[p, v] for p in pairs)
                              for v in ("before", "after")}  # fmt: skip
        out["rest_cpu"] = {v: statistics.median(rest(p, v) for p in pairs)
                           for v in ("before", "after")}  # fmt: skip
        out["rest_cpu_ratio"] = statistics.median(rest(p, "before") / rest(p, "after")
                                                  for p in pairs)  # fmt: skip
    out |= {
        "pairs": len(pairs),
        "wall_ratio": statistics.median(wall),
        "wall_ratios": wall,
        "cpu_ratio": statistics.median(cpu),
        "cpu_ratios": cpu,
        "seeds": [r["seed"] for r in seeds],
        "figures": {},
    }
    for fig in FIGURES:
        values = [r[fig] for r in seeds]
        mean, sd = statistics.mean(values), statistics.stdev(values)
        lo, hi = mean - 2 * sd, mean + 2 * sd
        at_seed = {v: sorted({of(p, v)[fig] for p in pairs}) for v in ("before", "after")}
        out["figures"][fig] = {
            "mean": mean, "sd": sd, "min": min(values), "max": max(values),
            "interval": [lo, hi],
            "before": at_seed["before"], "after": at_seed["after"],
            "within": {v: all(lo <= x <= hi for x in xs) for v, xs in at_seed.items()},
            "in_min_max": {v: all(min(values) <= x <= max(values) for x in xs)
                           for v, xs in at_seed.items()},
            "difference_in_sd": abs(at_seed["after"][0] - at_seed["before"][0]) / sd
            if sd > 0 else math.inf,
        }  # fmt: skip
    return out


def _load(xs) -> str:
    return " / ".join(f"{x:.1f}" for x in xs) if xs else "unknown"


def markdown(results: dict) -> str:
    """The page's block for one results file."""
    s = summarise(results)
    b, a, m = results["before"], results["after"], results["machine"]
    la = results["load_average"]
    runs = results["runs"]
    iters = f"{results['iterations']:,} iterations" if results.get("iterations") else "defaults"
    lines = [
        f"Measured {results['date']} on {m['cpu']} ({m['logical_cpus']} logical CPUs), "
        f"one BLAS/OpenMP/numba thread per process, load average (1 / 5 / 15 min) "
        f"{_load(la['before'])} before and {_load(la.get('after'))} after; "
        f"`{results['command'].strip()}`. Before: `{b['short']}` ({b['subject']}); after: "
        f"`{a['short']}`, whose library (`rnnlab/`) is commit `{a['library_commit']}`'s"
        f"{' with local changes' if a['library_changed'] else ''}. Each run is "
        f"`python -m rnnlab.run` ({iters}) in a fresh folder with a fresh store; pairs at seed "
        f"{SEED} alternate their order.",
        "",
        "| run | seed | wall, s | CPU, s | load at start | final/smooth_loss | val/loss_warm |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        name = "after, seed" if r["kind"] == "seed" else f"pair {r['pair']}, {r['version']}"
        name += ", `iterations=1`" if r["kind"] == "startup" else ""
        lines.append(f"| {name} | {r['seed']} | {r['wall_seconds']:.1f} | {r['cpu_seconds']:.1f} "
                     f"| {r['load_at_start'][0]:.1f} | {r['final/smooth_loss']:.4f} | "
                     f"{r['val/loss_warm']:.4f} |")  # fmt: skip
    verdict = "met" if s["wall_ratio"] >= TARGET else "**missed**"
    cpu_verdict = "met" if s["cpu_ratio"] >= TARGET else "**missed**"
    ratios = ", ".join(f"{x:.2f}" for x in s["wall_ratios"])
    cpu_ratios = ", ".join(f"{x:.2f}" for x in s["cpu_ratios"])
    lines += [
        "",
        f"**Before / after, median of {s['pairs']} pairs:** wall time {s['wall_ratio']:.2f}× "
        f"(pairs: {ratios}), CPU time {s['cpu_ratio']:.2f}× (pairs: {cpu_ratios}); the target "
        f"≥ {TARGET}× is {verdict} on wall time and {cpu_verdict} on CPU time. On a shared "
        "machine the CPU ratio is the fairer one: a neighbour's load stretches wall time, not "
        "the CPU a process uses.",
        "",
    ]
    if "startup_cpu" in s:
        st, rest = s["startup_cpu"], s["rest_cpu"]
        lines += [
            f"**Where the time goes** (CPU, medians over pairs): the same command with "
            f"`iterations=1` — imports, the store, one evaluation, the end-of-run sample, page and "
            f"report — costs {st['before']:.1f} s before and {st['after']:.1f} s after; the rest "
            f"of the job (its training steps and their evaluations) {rest['before']:.1f} s "
            f"before and {rest['after']:.1f} s after, {s['rest_cpu_ratio']:.2f}× faster.",
            "",
        ]
    lines += [
        f"**Seed spread** of the new main job over seeds {', '.join(map(str, s['seeds']))} "
        f"(not seed {SEED}, so the two seed-{SEED} runs are tested against it, not part of it). "
        f"The interval is mean ± 2 sd: with {len(s['seeds'])} seeds, a run from the same "
        "distribution falls outside their min–max with probability "
        f"2/{len(s['seeds']) + 1}, which would reject identical learning too often.",
        "",
        f"| figure | mean ± sd | min–max | mean ± 2 sd | before, seed {SEED} | after, seed {SEED} "
        "| \\|after − before\\| in sd | within mean ± 2 sd |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for fig, f in s["figures"].items():
        lo, hi = f["interval"]
        both = "/".join(f"{x:.4f}" for x in f["before"]), "/".join(f"{x:.4f}" for x in f["after"])
        within = ("both" if all(f["within"].values()) else
                  ", ".join(v for v, ok in f["within"].items() if ok) or "**neither**")  # fmt: skip
        lines.append(f"| {fig} | {f['mean']:.4f} ± {f['sd']:.4f} | {f['min']:.4f}–{f['max']:.4f} "
                     f"| {lo:.4f}–{hi:.4f} | {both[0]} | {both[1]} | "
                     f"{f['difference_in_sd']:.2f} | {within} |")  # fmt: skip
    return "\n".join(lines)


def render_page(results: Path, page: Path) -> None:
    """Fill ``page``'s ``MARKERS`` block from the results file."""
    text = page.read_text(encoding="utf-8")
    a, b = text.find(MARKERS[0]), text.find(MARKERS[1])
    if a < 0 or b < a:
        raise UserError(f"{page} has no {MARKERS[0]} … {MARKERS[1]} block to fill")
    body = markdown(json.loads(results.read_text(encoding="utf-8")))
    files.write_text(page, text[: a + len(MARKERS[0])] + "\n" + body + "\n" + text[b:])


def run(args: dict, argv: list[str]) -> str:
    results_path, page = Path(args["results"]), Path(args["page"])
    if not args["render"]:
        results = measure(args, argv)
        files.write_text(results_path, json.dumps(results, indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {results_path}")
    render_page(results_path, page)
    s = summarise(json.loads(results_path.read_text(encoding="utf-8")))
    return (f"rendered {page}: wall {s['wall_ratio']:.2f}×, CPU {s['cpu_ratio']:.2f}× "
            f"(median of {s['pairs']} pairs)")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    cli.main(COMMAND, lambda args: run(args, argv), argv)


if __name__ == "__main__":
    main()
