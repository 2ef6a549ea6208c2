"""``python -m rnnlab.bench``: how fast the engine trains, measured side by side in one run.

Three figures, all on one core (BLAS pinned to one thread with threadpoolctl):

1. **Engine throughput**: characters per second of the char-RNN training step (``loss_and_grads``
   + elementwise clip + Adagrad; hidden 100, seq 25, the corpus's vocabulary) at B=1 float64,
   B=1 float32, B=32 float32 and B=128 float32, against the **naive baseline** below.
2. **GEMM bound**: the same rate if a window cost only the matrix products it cannot avoid — the
   2T per-step (B, H) @ (H, H) products of the forward and backward recurrences and the four big
   (TB, ·) products (logits, their gradient into the states, dWhy, dWhh) — so the engine's
   throughput reads as a fraction of what BLAS allows for this shape.
3. **Tracking overhead**: the same short char-RNN run through ``rnnlab.tracking.job.run_job`` (real
   MLflow, fresh SQLite store, default cadences) against ``train()`` with a ``MemoryTracker``.

Every case runs in blocks of about ``--seconds``, the cases interleaved round after round, so a
neighbour's load hits them all alike. Reported: the median over rounds of chars/s (wall clock),
the same from this thread's CPU time (less sensitive to a busy machine), and ratios taken within
each round, then the median.

The baseline is the seed's algorithm written the seed's way — column vectors, a one-hot input
matmul and per-step outer products, batch of one — kept here on purpose as the thing to beat.
"""

from __future__ import annotations

import itertools
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rnnlab.bench.references import (
    CLIP,
    HIDDEN,
    LR,
    SEQ,
    NaiveCellLoop,
    NaiveLoop,
    stream_windows,
)
from rnnlab.engine import fused, rnn
from rnnlab.engine.optim import Adagrad, clip_elementwise

ENGINE_CASES = {  # name -> (batch size, dtype)
    "B=1 float64": (1, "float64"),
    "B=1 float32": (1, "float32"),
    "B=32 float32": (32, "float32"),
    "B=128 float32": (128, "float32"),
}
NAIVE = "naive B=1 float64"
TARGETS = {"B=1 float64": 3.0, "B=32 float32": 20.0}  # × naive
TRACKING_TARGET_PCT = 5.0  # a tracked run's wall time over an untracked one's
DEFAULT_ITERATIONS = 100_000  # the char-RNN's default run length
CADENCES = ("log_every", "eval_every", "sample_every", "checkpoint_every")  # defaults, untouched


# --- the loops being timed ----------------------------------------------------------------------
# Each has ``run(n)``: train on the next n windows, return the characters consumed. Windows are
# cut before timing, so only the training step is measured.


class EngineLoop:
    """The engine's step on B streams: ``rnn.loss_and_grads``, elementwise clip, Adagrad."""

    def __init__(self, data: np.ndarray, vocab_size: int, batch_size: int, dtype, seed: int = 0):
        rng = np.random.default_rng(seed)
        V = vocab_size
        self.flat, self.params = rnn.init_params(V, HIDDEN, V, rng, "normal", 0.01, dtype)
        self.grad_flat, self.grads = rnn.packed_zeros(
            {k: v.shape for k, v in self.params.items()}, dtype
        )
        self.optimizer = Adagrad(self.flat.size, dtype, LR)
        self.windows = stream_windows(data, batch_size)
        self.spec = rnn.Spec(hidden_size=HIDDEN)  # min-char-rnn's: one tanh layer
        self.i, self.h = 0, rnn.zero_state(self.spec, batch_size, dtype)  # (1, 1, B, H)

    def run(self, n: int) -> int:
        for _ in range(n):
            if self.i == len(self.windows):
                self.i = 0
                self.h[...] = 0.0
            xs, ys = self.windows[self.i]
            self.i += 1
            _, _, self.h = rnn.loss_and_grads(
                self.params, xs, ys, self.h, self.spec, "xent", self.grads
            )
            clip_elementwise(self.grad_flat, CLIP)
            self.optimizer.step(self.flat, self.grad_flat)
        return n * SEQ * self.h.shape[2]


class GemmLoop:
    """Only the matrix products of one window, on preallocated arrays of the engine's shapes and
    layouts: what a window would cost if everything else were free. ``gates``: G rows of W_hh
    per hidden unit (1 vanilla, 3 GRU, 4 LSTM), so the recurrent products are (B, H) @ (H, G·H)
    forward, (B, G·H) @ (G·H, H) backward and dW_hh is (G·H, N) @ (N, H)."""

    def __init__(self, vocab_size: int, batch_size: int, dtype, seed: int = 0, gates: int = 1):
        rng = np.random.default_rng(seed)
        T, B, H, V, N = SEQ, batch_size, HIDDEN, vocab_size, SEQ * batch_size
        G = gates * H

        def rand(*shape):
            return rng.uniform(-0.1, 0.1, shape).astype(dtype)

        self.Whh, self.Why = rand(G, H), rand(V, H)
        self.WhhT = np.ascontiguousarray(self.Whh.T)
        self.hs, self.dz, self.dgates = rand(T + 1, B, H), rand(N, H), rand(N, G)
        self.dl, self.logits = rand(N, V), rand(N, V)
        self.dWhy, self.dWhh = rand(V, H), rand(G, H)
        self.z, self.dh = rand(B, G), rand(B, H)
        self.chars = N

    def run(self, n: int) -> int:
        T, N = SEQ, self.chars
        hs, dz, dg = self.hs, self.dz, self.dgates
        h_out, h_in = hs[1:].reshape(N, -1), hs[:-1].reshape(N, -1)
        h, dgs = list(hs), list(dg.reshape(T, -1, dg.shape[1]))
        for _ in range(n):
            for t in range(T):  # forward recurrence
                np.dot(h[t], self.WhhT, self.z)
            np.matmul(h_out, self.Why.T, out=self.logits)  # logits
            np.matmul(self.dl.T, h_out, out=self.dWhy)  # dWhy
            np.matmul(self.dl, self.Why, out=dz)  # outputs' gradient into the states
            for t in reversed(range(T)):  # backward recurrence
                np.dot(dgs[t], self.Whh, self.dh)
            np.matmul(dg.T, h_in, out=self.dWhh)  # dWhh
        return n * N


# --- gated cells: the naive baseline and the engine's step -------------------------------------


class CellEngineLoop:
    """The engine's step for one layer of ``cell`` on B streams, as ``EngineLoop``; the default
    training path (at B > 1 the compiled kernels), or with ``reference`` the numpy cells."""

    def __init__(
        self, data, vocab_size: int, batch_size: int, dtype, cell: str, seed: int = 0,
        reference: bool = False,
    ):  # fmt: skip
        rng = np.random.default_rng(seed)
        self.reference = reference
        V = vocab_size
        self.spec = rnn.Spec(cell, 1, HIDDEN)
        self.flat, self.params = rnn.init_params(
            V, HIDDEN, V, rng, "normal", 0.01, dtype, self.spec
        )
        self.grad_flat, self.grads = rnn.packed_zeros(
            {k: v.shape for k, v in self.params.items()}, dtype
        )
        self.optimizer = Adagrad(self.flat.size, dtype, LR)
        # the trainer's update: at B > 1 clip + Adagrad in one compiled pass (rnnlab.engine.fused)
        update = (
            None
            if reference
            else fused.clip_and_update(self.spec, batch_size, self.optimizer, CLIP, None)
        )
        self.update = update or self._numpy_update
        self.windows = stream_windows(data, batch_size)
        self.i, self.state = 0, rnn.zero_state(self.spec, batch_size, dtype)

    def _numpy_update(self, params: np.ndarray, grad: np.ndarray) -> None:
        clip_elementwise(grad, CLIP)
        self.optimizer.step(params, grad)

    def run(self, n: int) -> int:
        for _ in range(n):
            if self.i == len(self.windows):
                self.i = 0
                self.state[...] = 0.0
            xs, ys = self.windows[self.i]
            self.i += 1
            _, _, self.state = rnn.loss_and_grads(
                self.params, xs, ys, self.state, self.spec, "xent", self.grads,
                reference=self.reference,
            )  # fmt: skip
            self.update(self.flat, self.grad_flat)
        return n * SEQ * self.state.shape[2]


# --- timing -------------------------------------------------------------------------------------


def interleaved(
    cases: dict[str, Callable[[int], int]], rounds: int, block_seconds: float
) -> dict[str, list[tuple[float, float]]]:
    """(wall chars/s, CPU chars/s) of every case in each round; cases take turns within a round,
    starting one place later each round, in blocks sized to about ``block_seconds``."""
    sizes = {}
    for name, run in cases.items():  # warm up, then size the blocks
        n, elapsed = 1, 0.0
        run(1)
        while elapsed < block_seconds / 4:
            n *= 2
            start = time.perf_counter()
            run(n)
            elapsed = time.perf_counter() - start
        sizes[name] = max(1, round(n * block_seconds / elapsed))
    names = list(cases)
    out: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            wall, cpu = time.perf_counter(), time.thread_time()
            chars = cases[name](sizes[name])
            wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
            out[name].append((chars / wall, chars / max(cpu, 1e-9)))
    return out


def paired_ratio(a: list[tuple[float, float]], b: list[tuple[float, float]], i: int) -> float:
    """Median over rounds of a/b, each round's figures compared with each other."""
    return statistics.median(x[i] / y[i] for x, y in zip(a, b, strict=True))


def engine_figures(data: np.ndarray, vocab_size: int, rounds: int, block: float) -> dict:
    cases: dict[str, Callable[[int], int]] = {NAIVE: NaiveLoop(data, vocab_size).run}
    for name, (B, dtype) in ENGINE_CASES.items():
        cases[name] = EngineLoop(data, vocab_size, B, dtype).run
        cases[f"gemm {name}"] = GemmLoop(vocab_size, B, dtype).run
    runs = interleaved(cases, rounds, block)

    def summary(name: str) -> dict:
        return {
            "chars_per_sec": statistics.median(w for w, _ in runs[name]),
            "cpu_chars_per_sec": statistics.median(c for _, c in runs[name]),
            "rounds": [{"wall": w, "cpu": c} for w, c in runs[name]],
        }

    out = {NAIVE: summary(NAIVE)}
    for name in ENGINE_CASES:
        gemm = f"gemm {name}"
        out[name] = summary(name) | {
            "vs_naive": paired_ratio(runs[name], runs[NAIVE], 0),
            "cpu_vs_naive": paired_ratio(runs[name], runs[NAIVE], 1),
            "gemm_bound_chars_per_sec": statistics.median(w for w, _ in runs[gemm]),
            "gemm_bound_cpu_chars_per_sec": statistics.median(c for _, c in runs[gemm]),
            "fraction_of_gemm_bound": paired_ratio(runs[name], runs[gemm], 0),
            "cpu_fraction_of_gemm_bound": paired_ratio(runs[name], runs[gemm], 1),
        }
    return out


GATED = ("gru", "lstm")
CELL_CASES = {"B=1 float64": (1, "float64"), "B=32 float32": (32, "float32")}
CELL_TARGETS = {"B=1 float64": ("vs_naive", 2.5), "B=32 float32": ("fraction_of_gemm_bound", 0.6)}
KERNEL_CASE = "B=32 float32"  # also timed with the numpy cells (reference=True): the kernels' A/B


def cell_figures(data: np.ndarray, vocab_size: int, rounds: int, block: float) -> dict:
    """Per gated cell: the engine at B=1 float64 and B=32 float32 against that cell's GEMM bound
    and its naive per-step implementation (B=1 float64), all cases interleaved in one run; at
    B=32 float32 the engine (its default path, the compiled kernels) also against the numpy
    cells."""
    cases: dict[str, Callable[[int], int]] = {}
    for cell in GATED:
        cases[f"{cell} naive"] = NaiveCellLoop(data, vocab_size, cell).run
        for name, (B, dtype) in CELL_CASES.items():
            cases[f"{cell} {name}"] = CellEngineLoop(data, vocab_size, B, dtype, cell).run
            gates = rnn.GATES[cell]
            cases[f"{cell} gemm {name}"] = GemmLoop(vocab_size, B, dtype, gates=gates).run
        B, dtype = CELL_CASES[KERNEL_CASE]
        numpy_cells = CellEngineLoop(data, vocab_size, B, dtype, cell, reference=True)
        cases[f"{cell} numpy cells {KERNEL_CASE}"] = numpy_cells.run
    runs = interleaved(cases, rounds, block)
    out: dict = {}
    for cell in GATED:
        naive = f"{cell} naive"
        out[cell] = {"naive B=1 float64": statistics.median(w for w, _ in runs[naive])}
        for name in CELL_CASES:
            case, gemm = f"{cell} {name}", f"{cell} gemm {name}"
            out[cell][name] = {
                "chars_per_sec": statistics.median(w for w, _ in runs[case]),
                "cpu_chars_per_sec": statistics.median(c for _, c in runs[case]),
                "vs_naive": paired_ratio(runs[case], runs[naive], 0),
                "gemm_bound_chars_per_sec": statistics.median(w for w, _ in runs[gemm]),
                "fraction_of_gemm_bound": paired_ratio(runs[case], runs[gemm], 0),
                "cpu_fraction_of_gemm_bound": paired_ratio(runs[case], runs[gemm], 1),
            }
        numpy_cells = runs[f"{cell} numpy cells {KERNEL_CASE}"]
        out[cell][KERNEL_CASE] |= {
            "numpy_cells_chars_per_sec": statistics.median(w for w, _ in numpy_cells),
            "vs_numpy_cells": paired_ratio(runs[f"{cell} {KERNEL_CASE}"], numpy_cells, 0),
            "numpy_cells_fraction_of_gemm_bound": paired_ratio(
                numpy_cells, runs[f"{cell} gemm {KERNEL_CASE}"], 0
            ),
        }
    return out


def print_cells(cells: dict, file=None) -> None:
    file = file or sys.stdout  # looked up per call: a test's capture swaps sys.stdout
    print("gated cells (one layer, hidden 100, seq 25):", file=file)
    head = f"{'cell':<6}{'case':<14}{'chars/s':>10}{'× naive':>9}{'GEMM bound':>12}{'of bound':>10}"
    print(head, file=file)
    for cell, figs in cells.items():
        print(f"{cell:<6}{'naive B=1 f64':<14}{figs['naive B=1 float64']:>10,.0f}", file=file)
        for name in CELL_CASES:
            e = figs[name]
            print(
                f"{cell:<6}{name:<14}{e['chars_per_sec']:>10,.0f}{e['vs_naive']:>9.2f}"
                f"{e['gemm_bound_chars_per_sec']:>12,.0f}{e['fraction_of_gemm_bound']:>10.0%}",
                file=file,
            )
    for cell, figs in cells.items():
        e = figs[KERNEL_CASE]
        if "vs_numpy_cells" in e:
            print(
                f"{cell} {KERNEL_CASE}: compiled kernels {e['vs_numpy_cells']:.2f}× the numpy "
                f"cells ({e['numpy_cells_chars_per_sec']:,.0f} chars/s, "
                f"{e['numpy_cells_fraction_of_gemm_bound']:.0%} of bound), interleaved",
                file=file,
            )
    for cell in cells:
        for name, (field, target) in CELL_TARGETS.items():
            got = cells[cell][name][field]
            what = "× naive" if field == "vs_naive" else "of the GEMM bound"
            verdict = "ok" if got >= target else "MISSED"
            shown = f"{got:.2f}×" if field == "vs_naive" else f"{got:.0%}"
            print(f"target {cell} {name} ≥ {target:g} {what}: {shown} {verdict}", file=file)


def tracking_figures(corpus_path: Path, iterations: int, rounds: int, workdir: Path) -> dict:
    """Wall and CPU time of a char-RNN run through ``run_job`` (MLflow on a fresh SQLite store)
    vs ``train()`` with a MemoryTracker, at ``iterations`` and at 1 iteration, interleaved.

    The 1-iteration pair measures what a run pays once (creating the run, params, config,
    dataset, the final uploads and model); the rest of the difference grows with the run. The
    store and experiment are created before timing, as a sweep creates them once for its jobs.
    """

    from rnnlab.config import Config, DataConfig, TrackingConfig
    from rnnlab.tracking.job import JobContext, run_job
    from rnnlab.tracking.store import ensure_experiment
    from rnnlab.training.loop import train
    from rnnlab.training.tracker import MemoryTracker

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    from rnnlab.tracking import store

    ensure_experiment(store.client(uri), "rnnlab-bench")
    jobs = itertools.count()

    def run(tracked: bool, n: int) -> None:
        cfg = Config(
            data=DataConfig(path=str(corpus_path)),
            tracking=TrackingConfig(uri=uri, enabled=tracked),
            iterations=n,
            experiment_name="rnnlab-bench",
        )
        out = workdir / f"job{next(jobs)}"
        if tracked:
            run_job(cfg, JobContext(launch_dir=workdir, output_dir=out), show_progress=False)
        else:
            train(cfg, MemoryTracker(), out, show_progress=False)

    cases = [("mlflow", iterations), ("off", iterations), ("mlflow", 1), ("off", 1)]
    for tracked in (True, False):  # warm up: first-use imports and caches are not overhead
        run(tracked, 20)
    wall: dict = {c: [] for c in cases}
    cpu: dict = {c: [] for c in cases}
    for r in range(rounds):
        for case in cases[r % 4 :] + cases[: r % 4]:
            w, c = time.perf_counter(), time.process_time()  # process: MLflow's threads too
            run(case[0] == "mlflow", case[1])
            wall[case].append(time.perf_counter() - w)
            cpu[case].append(time.process_time() - c)

    def split(t: dict) -> dict:
        on, off = (
            statistics.median(t[("mlflow", iterations)]),
            statistics.median(t[("off", iterations)]),
        )
        on1, off1 = statistics.median(t[("mlflow", 1)]), statistics.median(t[("off", 1)])
        fixed = on1 - off1
        growing = (on - off - fixed) / off
        # A default-length run: the untracked time scaled to DEFAULT_ITERATIONS, same costs.
        off_default = off1 + (off - off1) * DEFAULT_ITERATIONS / iterations
        return {
            "mlflow_seconds": on,
            "off_seconds": off,
            "overhead_pct": 100.0 * (on / off - 1.0),
            "fixed_seconds": fixed,
            "per_iteration_pct": 100.0 * growing,
            "default_run_overhead_pct": 100.0 * (fixed / off_default + growing),
        }

    return {
        "iterations": iterations,
        "rounds": rounds,
        "default_iterations": DEFAULT_ITERATIONS,
        "wall": split(wall),
        "cpu": split(cpu),
        "cadences": {k: getattr(Config(), k) for k in CADENCES},
        "samples": {
            "wall": {f"{mode} {n}": v for (mode, n), v in wall.items()},
            "cpu": {f"{mode} {n}": v for (mode, n), v in cpu.items()},
        },
    }


# --- the machine --------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(malloc_tuned: bool) -> dict:
    from threadpoolctl import threadpool_info

    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": [
            {k: v for k, v in lib.items() if k != "filepath"}
            for lib in threadpool_info()
            if lib.get("user_api") == "blas"
        ],
        "env": {
            k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ
        },
        "malloc_tuned": malloc_tuned,
    }


# --- report -------------------------------------------------------------------------------------


def print_report(results: dict, file=None) -> None:
    file = file or sys.stdout  # looked up per call: a test's capture swaps sys.stdout
    eng = results["engine"]
    naive = eng[NAIVE]["chars_per_sec"]
    print(
        f"rnnlab.bench {results['date']}  {results['machine']['cpu']}, one BLAS thread", file=file
    )
    print(
        f"char-RNN hidden {HIDDEN}, seq {SEQ}, vocab {results['settings']['vocab_size']}; "
        f"medians of {results['settings']['rounds']} interleaved rounds",
        file=file,
    )
    columns = (
        ("chars/s", 10),
        ("× naive", 9),
        ("CPU × naive", 13),
        ("GEMM bound", 12),
        ("of bound", 10),
    )
    print(f"{'case':<20}" + "".join(f"{name:>{width}}" for name, width in columns), file=file)
    print(f"{NAIVE:<20}{naive:>10,.0f}{1.0:>9.2f}{1.0:>13.2f}", file=file)
    for name in ENGINE_CASES:
        e = eng[name]
        print(
            f"{name:<20}{e['chars_per_sec']:>10,.0f}{e['vs_naive']:>9.2f}{e['cpu_vs_naive']:>13.2f}"
            f"{e['gemm_bound_chars_per_sec']:>12,.0f}{e['fraction_of_gemm_bound']:>10.0%}",
            file=file,
        )
    for name, target in TARGETS.items():
        got = eng[name]["vs_naive"]
        verdict = "ok" if got >= target else "MISSED"
        print(f"target {name} ≥ {target:g}× naive: {got:.2f}× {verdict}", file=file)
    if "tracking" in results:
        t = results["tracking"]
        for clock in ("wall", "cpu"):
            c = t[clock]
            print(
                f"tracking ({clock}): {t['iterations']} iterations, "
                f"MLflow {c['mlflow_seconds']:.2f} s vs off {c['off_seconds']:.2f} s: "
                f"{c['overhead_pct']:+.1f}% = "
                f"{c['fixed_seconds']:.2f} s once per run + {c['per_iteration_pct']:+.1f}% growing "
                f"with the run; a {t['default_iterations']:,}-iteration run: "
                f"{c['default_run_overhead_pct']:+.1f}%",
                file=file,
            )
