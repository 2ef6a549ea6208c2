"""``python -m rnnlab.bench [key=value ...]``: how fast rnnlab trains, measured side by side in one
run, recorded in the results file the docs' benchmark page is rendered from.

Its sections, each its own module: the engine's rates per cell against the seed's loop, the GEMM
bound and the numpy cells (``rnnlab.bench.engine``); what MLflow tracking costs a char-RNN run
(``rnnlab.bench.tracking``); what diagnostics cost each task's default run, as whole
``python -m rnnlab.run`` processes (``rnnlab.bench.diagnostics``); what starting a run costs,
``python -m rnnlab.run iterations=1`` on an existing and a fresh store
(``rnnlab.bench.run_startup``). Every run appends its figures
to the results file and re-renders the page (``rnnlab.bench.history``). Targets are judged only
on a run long enough to support them: never on ``quick=true``, whose figures are rough.
Timings are never asserted by a test.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from rnnlab import cli, files
from rnnlab.bench import diagnostics, engine, history, new_cells, run_startup, tracking
from rnnlab.bench.references import HIDDEN, SEQ
from rnnlab.errors import UserError

# what a run must have done for its verdicts to count
FULL = {"rounds": 5, "block_seconds": 0.25, "tracking_iterations": 10_000, "diag_rounds": 3,
        "run_startup_rounds": 3}  # fmt: skip
QUICK = {"rounds": 2, "block_seconds": 0.03, "tracking_iterations": 200, "diag_rounds": 1,
         "diag_iterations": 200, "run_startup_rounds": 1}  # fmt: skip

COMMAND = cli.Command(
    name="rnnlab.bench",
    summary="how fast rnnlab trains, measured side by side in one run and recorded",
    keys=(
        cli.Key("quick", "a fast smoke run: rough figures, no verdicts", bool, False),
        cli.Key("corpus", "any UTF-8 text (default: the kafka corpus)"),
        cli.Key("cells", "the cells whose engine rates to time, comma-separated (default: all)"),
        cli.Key("engine", "the engine's rates per cell", bool, True),
        cli.Key("startup", "what a fresh process pays for the kernels (cold, warm)", bool, True),
        cli.Key("new_cells", "IRNN, IndRNN, minGRU, minLSTM, LRU (scan and step)", bool, True),
        cli.Key("tracking", "the MLflow tracking overhead", bool, True),
        cli.Key("diagnostics", "diagnostics on against off, whole processes", bool, True),
        cli.Key(
            "run_startup",
            "CPU and wall of `python -m rnnlab.run iterations=1` (existing and fresh store)",
            bool,
            True,
        ),  # fmt: skip
        cli.Key(
            "run_startup_rounds",
            "rounds of the start-up runs (default 3; quick 1)",
            int,
            minimum=1,
        ),  # fmt: skip
        cli.Key(
            "rounds",
            "interleaved rounds of the engine's cases (default 7; quick 2)",
            int,
            minimum=1,
        ),  # fmt: skip
        cli.Key("seconds", "seconds per timed block (default 0.5; quick 0.03)", float, above=0.0),
        cli.Key(
            "tracking_iterations", "iterations of the tracked run (default 10000)", int, minimum=1
        ),  # fmt: skip
        cli.Key(
            "diag_rounds",
            "on/off pairs of whole runs per task (default 3; quick 1)",
            int,
            minimum=1,
        ),  # fmt: skip
        cli.Key("diag_tasks", "the tasks whose diagnostics to time, comma-separated (default all)"),
        cli.Key("json", "write every figure to this file too"),
        cli.Key(
            "history",
            "the results file to append to (default: docs/benchmarks/"
            "history.jsonl in this checkout)",
        ),  # fmt: skip
        cli.Key(
            "page",
            "the docs page to re-render from it (default: docs/benchmarks.md "
            "with the default history)",
        ),  # fmt: skip
        cli.Key(
            "render", "only re-render the page from the results file, measure nothing", bool, False
        ),  # fmt: skip
    ),
    examples=(
        "python -m rnnlab.bench",
        "python -m rnnlab.bench quick=true",
        "python -m rnnlab.bench cells=rnn tracking=false diagnostics=false",
        "python -m rnnlab.bench render=true",
        "python -m rnnlab.bench engine=false startup=false new_cells=false tracking=false "
        "diagnostics=false",
    ),
)


def settings_of(args: dict) -> dict:
    """Rounds, block length, run lengths: the defaults (or a quick run's), as ``args`` set."""
    quick = args["quick"]
    return {
        "rounds": args.get("rounds") or (QUICK["rounds"] if quick else 7),
        "block_seconds": args.get("seconds") or (QUICK["block_seconds"] if quick else 0.5),
        "tracking_iterations": args.get("tracking_iterations")
        or (QUICK["tracking_iterations"] if quick else 10_000),
        "tracking_rounds": 1 if quick else 4,
        "diag_rounds": args.get("diag_rounds") or (QUICK["diag_rounds"] if quick else 3),
        "diag_iterations": QUICK["diag_iterations"] if quick else None,  # None: the defaults
        "run_startup_rounds": args.get("run_startup_rounds")
        or (QUICK["run_startup_rounds"] if quick else 3),
    }


def full_run(args: dict, s: dict) -> tuple[bool, str]:
    """(whether the run is long enough to judge its targets, why not)."""
    if args["quick"]:
        return False, "a quick run"
    short = [f"{k}={s[k]} < {v}" for k, v in FULL.items() if s[k] < v]
    return (False, "too short to judge: " + ", ".join(short)) if short else (True, "")


def the_corpus(args: dict) -> tuple[Path, str]:
    """(path, the text a char-RNN run trains on: the corpus as ``data.path`` reads it, a Project
    Gutenberg header and footer stripped). One line and exit 2 when it cannot be read."""
    from rnnlab.config import DataConfig
    from rnnlab.tasks import corpus

    path = Path(args["corpus"]) if "corpus" in args else corpus.resolve("kafka")
    text = corpus.read_text(path)
    if DataConfig().strip_gutenberg:  # as charrnn.load_corpus reads it for a run
        text = corpus.strip_gutenberg(text)
    return path, text


def what_it_measures(results: dict, s: dict, full: bool, why: str) -> str:
    m, st = results["machine"], results["settings"]
    load = history.load_average()
    lines = [
        f"rnnlab.bench {results['date']}  commit {history.commit()}  "
        f"{history.machine_name(m)}, one BLAS thread, load {history._load(load)}",
        f"engine: chars/s of the char-RNN training step (forward, xent, BPTT, clip + Adagrad) "
        f"on one layer of hidden {HIDDEN}, windows of {SEQ}, vocabulary {st['vocab_size']} "
        f"(the run's: {Path(st['corpus']).name} as data.path reads it); medians of "
        f"{s['rounds']} interleaved rounds of ~{s['block_seconds']:g} s blocks. × naive: over "
        "the seed's per-step loop; of bound: over the window's matrix products alone; × numpy "
        "cells: over the same step through the numpy cells.",
    ]
    if not full:
        lines.append(f"no verdicts: {why}; figures only (a full `python -m rnnlab.bench` "
                     "judges the targets)")  # fmt: skip
    return "\n".join(lines)


def measure(args: dict, argv: list[str]) -> dict:
    """Every figure ``args`` asks for: printed, recorded, returned."""
    s = settings_of(args)
    full, why = full_run(args, s)
    cells = args["cells"].split(",") if "cells" in args else list(engine.ROWS)
    unknown = [c for c in cells if c not in engine.ROWS]
    if unknown:
        raise UserError(f"cells={args['cells']!r}: no rows for {', '.join(unknown)}; "
                        f"cells with rows: {', '.join(engine.ROWS)}")  # fmt: skip
    tasks = args["diag_tasks"].split(",") if "diag_tasks" in args else list(diagnostics.TASKS)
    if [t for t in tasks if t not in diagnostics.TASKS]:
        allowed = ", ".join(diagnostics.TASKS)
        raise UserError(f"diag_tasks={args['diag_tasks']!r} is not allowed: some of {allowed}")
    default_history = "history" not in args
    history_path = Path(args.get("history") or history.HISTORY)
    page = Path(args["page"]) if "page" in args else (history.PAGE if default_history else None)
    if args["render"]:
        if page is None:
            raise UserError("render=true with history= needs page= too")
        history.render_page(history_path, page)
        print(f"rendered {page} from {history_path}")
        return {}

    # MLflow's INFO lines (creating tables, migrations) would interleave with the report: set
    # before mlflow is first imported.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    from threadpoolctl import threadpool_limits

    from rnnlab.tasks.charrnn import Vocabulary
    from rnnlab.training.loop import keep_freed_memory

    load_before = history.load_average()
    malloc_tuned = keep_freed_memory()  # as train() does
    corpus_path, text = the_corpus(args)  # a corpus it cannot read: one line, before any timing
    vocab = Vocabulary(text)
    data = vocab.encode(text)
    results: dict = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m rnnlab.bench " + shlex.join(argv),
        "quick": args["quick"],
        "machine": history.machine_info() | {"malloc_tuned": malloc_tuned},
        "settings": {
            "corpus": str(corpus_path),
            "vocab_size": len(vocab),
            "hidden_size": HIDDEN,
            "seq_length": SEQ,
            "blas_threads": 1,
            **s,
        },  # fmt: skip
    }
    print(what_it_measures(results, s, full, why), flush=True)
    with threadpool_limits(limits=1, user_api="blas"):
        if args["engine"]:
            results["engine"] = engine.engine_figures(
                data, len(vocab), s["rounds"], s["block_seconds"], cells
            )
            engine.print_engine(results["engine"])
        if args["startup"]:
            results["startup"] = engine.startup_figures()
            engine.print_startup(results["startup"])
        if args["new_cells"]:  # their own results file and page block (rnnlab.bench.new_cells)
            results["new_cells"] = new_cells.figures(
                data, len(vocab), s["rounds"], s["block_seconds"]
            )
            new_cells.print_figures(results["new_cells"], verdicts=full)
            if full:
                new_cells.record(results["new_cells"], results["command"], results["date"],
                                 results["machine"]["cpu"], s["rounds"], s["block_seconds"],
                                 load_before)  # fmt: skip
        if args["tracking"]:
            workdir = Path(tempfile.mkdtemp(prefix="rnnlab-bench-"))
            try:
                results["tracking"] = tracking.tracking_figures(
                    corpus_path, s["tracking_iterations"], s["tracking_rounds"], workdir
                )
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            tracking.print_tracking(results["tracking"])
    if args["diagnostics"]:  # whole processes, each pinning its own BLAS
        with tempfile.TemporaryDirectory(prefix="rnnlab-bench-") as tmp:
            results["diagnostics"] = diagnostics.all_figures(
                s["diag_rounds"], Path(tmp), s["diag_iterations"],
                corpus_path if "corpus" in args else None, tasks,
            )  # fmt: skip
        diagnostics.print_diagnostics(results["diagnostics"])
    if args["run_startup"]:  # whole processes, after the rest: nothing else runs beside them
        with tempfile.TemporaryDirectory(prefix="rnnlab-bench-") as tmp:
            results["run_startup"] = run_startup.figures(s["run_startup_rounds"], Path(tmp))
        run_startup.print_figures(results["run_startup"])

    line = history.record(results, load_before, full)
    results |= {"full": full, "targets": line["targets"], "met": line.get("met", {})}
    if full:
        for t in line["targets"]:
            value = line["figures"][t["figure"]]
            verdict = "met" if line["met"][t["figure"]] else "MISSED"
            print(f"target {history.shown_target(t)}: {history.shown(t['figure'], value)} "
                  f"{verdict}")  # fmt: skip
    history.append(history_path, line)
    print(f"recorded in {history_path}")
    if page is not None and page.is_file():
        history.render_page(history_path, page)
        print(f"rendered {page}")
    if "json" in args:
        files.write_text(Path(args["json"]), json.dumps(results, indent=2) + "\n")
    return results


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    cli.main(COMMAND, lambda args: measure(args, argv) and None, argv)


if __name__ == "__main__":
    main()
