"""``python -m rnnlab.bench [key=value ...]``: how fast the engine trains, side by side in one run.

See ``rnnlab.bench.engine`` for what is measured and how. Timings are never asserted by a
test; this command prints them as ratios measured in the same run.
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
from rnnlab.bench import diagnostics
from rnnlab.bench.engine import (
    CELL_TARGETS,
    HIDDEN,
    SEQ,
    TARGETS,
    TRACKING_TARGET_PCT,
    cell_figures,
    engine_figures,
    machine_info,
    print_cells,
    print_report,
    tracking_figures,
)
from rnnlab.tasks import corpus

COMMAND = cli.Command(
    name="rnnlab.bench",
    summary="how fast the engine trains, measured side by side in one run",
    keys=(
        cli.Key("corpus", "any UTF-8 text (default: the kafka corpus)"),
        cli.Key("json", "write every figure to this file"),
        cli.Key("quick", "a fast smoke run (figures are rough)", bool, False),
        cli.Key("rounds", "interleaved rounds (default 7; quick 2)", int, minimum=1),
        cli.Key("seconds", "seconds per timed block (default 0.5)", float, above=0.0),
        cli.Key(
            "tracking_iterations", "iterations of the tracked run (default 10000)", int, minimum=1
        ),
        cli.Key("tracking", "the MLflow tracking comparison", bool, True),
        cli.Key("cells", "the GRU/LSTM figures", bool, True),
        cli.Key("cells_only", "only the GRU/LSTM figures (and the machine's)", bool, False),
        cli.Key("diagnostics", "diagnostics on against off", bool, True),
    ),  # fmt: skip
    examples=("python -m rnnlab.bench", "python -m rnnlab.bench quick=true json=bench.json"),
)


def measure(args: dict, argv: list[str]) -> dict:
    """Every figure ``args`` asks for, printed and returned."""
    rounds = args.get("rounds") or (2 if args["quick"] else 7)
    block = args.get("seconds") or (0.03 if args["quick"] else 0.5)
    track_iters = args.get("tracking_iterations") or (200 if args["quick"] else 10_000)
    track_rounds = 1 if args["quick"] else 4

    # MLflow's INFO lines (creating tables, migrations) would interleave with the report: set
    # before mlflow is first imported (by rnnlab.training.loop).
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    from threadpoolctl import threadpool_limits

    from rnnlab.tasks.charrnn import Vocabulary
    from rnnlab.training.loop import keep_freed_memory

    malloc_tuned = keep_freed_memory()  # as train() does
    # a missing or unreadable corpus is a CorpusError: one line, exit 2, before any timing
    corpus_path = Path(args["corpus"]) if "corpus" in args else corpus.resolve("kafka")
    text = corpus.read_text(corpus_path)
    vocab = Vocabulary(text)
    data = vocab.encode(text)

    results: dict = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m rnnlab.bench " + shlex.join(argv),
        "quick": args["quick"],
        "machine": machine_info(malloc_tuned),
        "settings": {
            "corpus": str(corpus_path),
            "vocab_size": len(vocab),
            "hidden_size": HIDDEN,
            "seq_length": SEQ,
            "rounds": rounds,
            "block_seconds": block,
            "blas_threads": 1,
        },
    }
    with threadpool_limits(limits=1, user_api="blas"):
        if not args["cells_only"]:
            results["engine"] = engine_figures(data, len(vocab), rounds, block)
        if args["cells"]:
            results["cells"] = cell_figures(data, len(vocab), rounds, block)
        if args["tracking"] and not args["cells_only"]:
            workdir = Path(tempfile.mkdtemp(prefix="rnnlab-bench-"))
            try:
                results["tracking"] = tracking_figures(
                    corpus_path, track_iters, track_rounds, workdir
                )
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
        if args["diagnostics"]:  # rnnlab.bench.diagnostics: on vs off, interleaved
            with tempfile.TemporaryDirectory(prefix="rnnlab-bench-") as tmp:
                results |= diagnostics.all_figures(  # char-RNN and adder
                    corpus_path, track_iters, track_rounds, Path(tmp)
                )
    results["targets"] = {
        f"{name} >= {target:g}x naive": results["engine"][name]["vs_naive"] >= target
        for name, target in TARGETS.items()
        if "engine" in results
    }
    for cell, figs in results.get("cells", {}).items():
        for name, (field, target) in CELL_TARGETS.items():
            results["targets"][f"{cell} {name} {field} >= {target:g}"] = figs[name][field] >= target
    if "tracking" in results:
        wall = results["tracking"]["wall"]
        results["targets"][f"tracking overhead <= {TRACKING_TARGET_PCT:g}% (short run)"] = (
            wall["overhead_pct"] <= TRACKING_TARGET_PCT
        )
        results["targets"][f"tracking overhead <= {TRACKING_TARGET_PCT:g}% (default run)"] = (
            wall["default_run_overhead_pct"] <= TRACKING_TARGET_PCT
        )
    results["targets"] |= diagnostics.targets(results)
    if "engine" in results:
        print_report(results)
    if "cells" in results:
        print_cells(results["cells"])
    diagnostics.print_all(results)
    if "json" in args:
        files.write_text(Path(args["json"]), json.dumps(results, indent=2) + "\n")
    return results


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    cli.main(COMMAND, lambda args: measure(args, argv) and None, argv)


if __name__ == "__main__":
    main()
