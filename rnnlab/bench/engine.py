"""How fast the engine trains, per cell: the figures ``python -m rnnlab.bench`` prints first.

For every cell and case in ``ROWS`` (a case is a batch size and a dtype), on one core (BLAS
pinned to one thread with threadpoolctl), characters per second of the char-RNN training step —
``rnn.loss_and_grads`` (forward, xent head, BPTT) and the trainer's update (elementwise clip and
Adagrad, compiled where the trainer compiles it) on one layer of hidden 100, windows of 25, the
run's vocabulary — against three yardsticks timed in the same run:

1. **naive**: the seed's algorithm written the seed's way (``rnnlab.bench.references``: column
   vectors, a one-hot input matmul and per-step outer products, batch of one), at B = 1 float64;
   the thing to beat. ``× naive`` is the engine's rate over it.
2. **GEMM bound**: the rate if a window cost only the matrix products it cannot avoid — the 2T
   per-step (B, H) @ (H, G·H) products of the forward and backward recurrences and the four big
   (TB, ·) products (logits, their gradient into the states, dW_hy, dW_hh) — so the engine's rate
   reads as a fraction of what BLAS allows for this cell and shape (``of bound``).
3. **numpy cells**: where the compiled kernels run (``engine.fused.compiled``), the same step
   through the numpy cells (``reference=True``): what the kernels buy.

Every case runs in blocks of about ``seconds``, the cases of one cell interleaved round after
round (each round starting one place later), so a neighbour's load hits them all alike. Reported:
the median over rounds of chars/s (wall clock), the same from this thread's CPU time, and ratios
taken within each round, then the median.

Not here: the tracking and diagnostics overheads (``rnnlab.bench.tracking``,
``rnnlab.bench.diagnostics``), the results file and the docs page (``rnnlab.bench.history``).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
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

CASES = {  # name -> (batch size, dtype)
    "B=1 float64": (1, "float64"),
    "B=1 float32": (1, "float32"),
    "B=32 float32": (32, "float32"),
    "B=128 float32": (128, "float32"),
}

# What the bench times for each cell: case -> the targets that case must meet (figure -> the
# least it may be). A new cell adds its rows here (and, if it has one, its seed-style loop to
# NAIVE); a case without targets is timed and shown, never judged.
ROWS: dict[str, dict[str, dict[str, float]]] = {
    "rnn": {
        "B=1 float64": {"vs_naive": 3.0, "fraction_of_gemm_bound": 0.5},
        "B=1 float32": {},
        "B=32 float32": {"vs_naive": 20.0, "fraction_of_gemm_bound": 0.6},
        "B=128 float32": {},
    },
    "gru": {
        "B=1 float64": {"vs_naive": 2.5, "fraction_of_gemm_bound": 0.5},
        "B=32 float32": {"fraction_of_gemm_bound": 0.6},
    },
    "lstm": {
        "B=1 float64": {"vs_naive": 2.5, "fraction_of_gemm_bound": 0.5},
        "B=32 float32": {"fraction_of_gemm_bound": 0.6},
    },
}
# cell -> its seed-style loop (B = 1 float64), the baseline of ``× naive``
NAIVE: dict[str, Callable[[np.ndarray, int], object]] = {
    "rnn": lambda data, V: NaiveLoop(data, V),
    "gru": lambda data, V: NaiveCellLoop(data, V, "gru"),
    "lstm": lambda data, V: NaiveCellLoop(data, V, "lstm"),
}
NAIVE_CASE = "naive B=1 float64"


# --- the loops being timed ----------------------------------------------------------------------
# Each has ``run(n)``: train on the next n windows, return the characters consumed. Windows are
# cut before timing, so only the training step is measured.


class EngineLoop:
    """The trainer's step for one layer of ``cell`` on B streams: ``rnn.loss_and_grads`` and the
    trainer's update (clip + Adagrad in one compiled pass where ``fused.clip_and_update`` gives
    one, else the numpy calls); with ``reference`` the numpy cells and the numpy update."""

    def __init__(
        self, data, vocab_size: int, batch_size: int, dtype, cell: str = "rnn", seed: int = 0,
        reference: bool = False,
    ):  # fmt: skip
        rng = np.random.default_rng(seed)
        self.reference = reference
        V = vocab_size
        self.spec = rnn.Spec(cell, 1, HIDDEN)  # the vanilla cell: min-char-rnn's tanh layer
        self.flat, self.params = rnn.init_params(
            V, HIDDEN, V, rng, "normal", 0.01, dtype, self.spec
        )
        self.grad_flat, self.grads = rnn.packed_zeros(
            {k: v.shape for k, v in self.params.items()}, dtype
        )
        self.optimizer = Adagrad(self.flat.size, dtype, LR)
        update = None if reference else fused.clip_and_update(self.optimizer, CLIP, None)
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


# --- timing -------------------------------------------------------------------------------------


def interleaved(
    cases: dict[str, Callable[[int], int]], rounds: int, block_seconds: float
) -> dict[str, list[tuple[float, float]]]:
    """(wall chars/s, CPU chars/s) of every case in each round; cases take turns within a round,
    starting one place later each round, in blocks sized to about ``block_seconds``."""
    sizes = {}
    for name, run in cases.items():  # warm up (first calls, compiled kernels), then size
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


def cell_figures(cell: str, data: np.ndarray, vocab_size: int, rounds: int, block: float) -> dict:
    """Every case of ``ROWS[cell]``, its GEMM bound, the numpy cells where the kernels run and
    the cell's naive loop, all interleaved in one run: {case: figures, NAIVE_CASE: chars/s}."""
    cases: dict[str, Callable[[int], int]] = {}
    if cell in NAIVE:
        cases[NAIVE_CASE] = NAIVE[cell](data, vocab_size).run
    gates = rnn.GATES[cell]
    for name in ROWS[cell]:
        B, dtype = CASES[name]
        cases[name] = EngineLoop(data, vocab_size, B, dtype, cell).run
        cases[f"gemm {name}"] = GemmLoop(vocab_size, B, dtype, gates=gates).run
        if fused.compiled(cell, B):
            numpy_cells = EngineLoop(data, vocab_size, B, dtype, cell, reference=True)
            cases[f"numpy cells {name}"] = numpy_cells.run
    runs = interleaved(cases, rounds, block)

    def median(name: str, i: int = 0) -> float:
        return statistics.median(r[i] for r in runs[name])

    out: dict = {}
    if NAIVE_CASE in runs:
        out[NAIVE_CASE] = {"chars_per_sec": median(NAIVE_CASE)}
    for name in ROWS[cell]:
        gemm, numpy_cells = f"gemm {name}", f"numpy cells {name}"
        figs = {
            "chars_per_sec": median(name),
            "cpu_chars_per_sec": median(name, 1),
            "gemm_bound_chars_per_sec": median(gemm),
            "fraction_of_gemm_bound": paired_ratio(runs[name], runs[gemm], 0),
            "cpu_fraction_of_gemm_bound": paired_ratio(runs[name], runs[gemm], 1),
        }
        if NAIVE_CASE in runs:
            figs["vs_naive"] = paired_ratio(runs[name], runs[NAIVE_CASE], 0)
            figs["cpu_vs_naive"] = paired_ratio(runs[name], runs[NAIVE_CASE], 1)
        if numpy_cells in runs:
            figs["numpy_cells_chars_per_sec"] = median(numpy_cells)
            figs["vs_numpy_cells"] = paired_ratio(runs[name], runs[numpy_cells], 0)
        out[name] = figs
    return out


def engine_figures(
    data: np.ndarray, vocab_size: int, rounds: int, block: float, cells=None
) -> dict[str, dict]:
    """``cell_figures`` of every cell in ``cells`` (default: all of ``ROWS``), one after the
    other: {cell: figures}."""
    return {cell: cell_figures(cell, data, vocab_size, rounds, block) for cell in cells or ROWS}


# --- what a process pays for the kernels --------------------------------------------------------

# One B = 1 float64 vanilla window and its update (a char-RNN run's first step) in a fresh
# process, through the kernels or the numpy cells: the first window's CPU time, and how many of
# the kernels numba compiled or loaded from its cache.
_FIRST_WINDOW = """
import json, sys, time
import numpy as np
from threadpoolctl import threadpool_limits
from rnnlab.engine import fused, rnn
from rnnlab.engine.optim import Adagrad, clip_elementwise
reference = sys.argv[1] == "numpy"
spec = rnn.Spec()
flat, params = rnn.init_params(62, 100, 62, np.random.default_rng(0), dtype=np.float64)
grad = np.zeros_like(flat)
grads = rnn.packed_zeros({k: v.shape for k, v in params.items()}, np.float64)[1]
xs = np.random.default_rng(1).integers(0, 62, (25, 1))
with threadpool_limits(limits=1, user_api="blas"):
    started = time.process_time()
    rnn.loss_and_grads(params, xs, xs, rnn.zero_state(spec, 1, np.float64), spec, "xent", grads,
                       reference=reference)
    opt = Adagrad(flat.size, np.float64, 0.1)
    update = None if reference else fused.clip_and_update(opt, 5.0, None)
    update(flat, grad) if update else (clip_elementwise(grad, 5.0), opt.step(flat, grad))
    cpu = time.process_time() - started
k = sys.modules.get("rnnlab.engine.fused_kernels")
stats = [getattr(k, n).stats for n in dir(k) if hasattr(getattr(k, n), "stats")] if k else []
print(json.dumps({"first_window_cpu_seconds": cpu,
                  "compiled": sum(sum(s.cache_misses.values()) for s in stats),
                  "loaded": sum(sum(s.cache_hits.values()) for s in stats)}))
"""


def first_window(path: str, cache_dir: Path | None) -> dict:
    """A fresh process's first B = 1 vanilla window and update through ``path`` ("kernels" or
    "numpy"), with numba's cache in ``cache_dir`` (None: the package's own)."""
    env = dict(os.environ)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = str(cache_dir)
    out = subprocess.run([sys.executable, "-c", _FIRST_WINDOW, path], env=env,
                         capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout)


def startup_figures() -> dict:
    """What a process pays for the kernels on its first window, over the numpy cells' first
    window: cold (numba compiles them: an empty cache) and warm (loads them from the cache)."""
    with tempfile.TemporaryDirectory(prefix="rnnlab-numba-") as cache:
        cold = first_window("kernels", Path(cache))
        warm = first_window("kernels", Path(cache))
    numpy_cells = first_window("numpy", None)
    base = numpy_cells["first_window_cpu_seconds"]
    return {
        "cold": cold,
        "warm": warm,
        "numpy_cells": numpy_cells,
        "cold_extra_cpu_seconds": cold["first_window_cpu_seconds"] - base,
        "warm_extra_cpu_seconds": warm["first_window_cpu_seconds"] - base,
    }


def print_startup(s: dict, file=None) -> None:
    file = file or sys.stdout
    print(
        f"kernels' first window (a fresh process, vanilla B=1 float64): "
        f"+{s['cold_extra_cpu_seconds']:.2f} s CPU cold (compiling {s['cold']['compiled']}), "
        f"+{s['warm_extra_cpu_seconds']:.2f} s warm (loading {s['warm']['loaded']} from the "
        f"cache), over the numpy cells' first window",
        file=file,
    )


# --- report -------------------------------------------------------------------------------------


def print_engine(engine: dict[str, dict], file=None) -> None:
    """One row per cell and case (the verdicts, for a full run, are printed with the others')."""
    file = file or sys.stdout  # looked up per call: a test's capture swaps sys.stdout
    columns = (("chars/s", 10), ("× naive", 9), ("GEMM bound", 12), ("of bound", 10),
               ("× numpy cells", 15))  # fmt: skip
    print(f"{'cell':<6}{'case':<15}" + "".join(f"{n:>{w}}" for n, w in columns), file=file)
    for cell, figs in engine.items():
        if NAIVE_CASE in figs:
            naive = figs[NAIVE_CASE]["chars_per_sec"]
            print(f"{cell:<6}{'naive B=1 f64':<15}{naive:>10,.0f}{1.0:>9.2f}", file=file)
        for case in ROWS[cell]:
            e = figs[case]
            cells = (
                f"{e['chars_per_sec']:>10,.0f}",
                f"{e['vs_naive']:>9.2f}" if "vs_naive" in e else " " * 9,
                f"{e['gemm_bound_chars_per_sec']:>12,.0f}",
                f"{e['fraction_of_gemm_bound']:>10.0%}",
                f"{e['vs_numpy_cells']:>15.2f}" if "vs_numpy_cells" in e else "",
            )
            print(f"{cell:<6}{case:<15}" + "".join(cells), file=file)
