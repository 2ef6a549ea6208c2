"""The cells after the LSTM in ``python -m rnnlab.bench``: IRNN, IndRNN, minGRU, minLSTM, the LRU.

For each cell, one layer of hidden 100 on the char-RNN (seq 25), elementwise clip + Adagrad, all
cases interleaved in one run (``engine.interleaved``):

- **naive**: the cell written the seed's way (``naive_lossfun``: column vectors, a one-hot input
  matmul, per-step outer products, batch of one) at B = 1 float64 — the thing to beat.
- **engine** at B = 1 float64 and B = 32 float32: ``rnn.loss_and_grads`` + the trainer's update;
  minGRU, minLSTM and the LRU on their scan path (``scan=true``) and, as their own rows, on their
  step path (``scan=false``).
- **bound**: the cell's own GEMM/elementwise bound — the window's unavoidable matrix products (the
  head's three; the IRNN's 2T recurrent (B, H) @ (H, H) products and dWhh; the LRU's output map
  forward, backward and dC) plus, for the diagonal cells, the elementwise floor of their
  recurrence: one compiled multiply-add pass over the window forward and one backward
  (``scan_kernels``; complex for the LRU). What a window would cost if nothing else took time.
- at B = 1 float64 the classic cells too, for the per-character ranking of every cell.
- **the recurrence alone**: h_t = a_t h_{t-1} + b_t forward and its reverse backward over a
  (25, B, 100) window, by each of ``scan.METHODS`` (numpy step by step, the numpy blocked scan,
  the compiled kernels): why ``scan=true`` is the compiled pass.

The ReLU cells and the LRU train with the settings that keep a state carried through the whole
text finite (docs/cells.md): a smaller learning rate, the IRNN's identity scaled to ½, the
IndRNN's |u| ≤ 1. A full run (not ``quick=true``) writes its figures to ``RESULTS`` and renders
them into the benchmarks page between ``<!-- bench:new_cells -->`` markers (``record``). Nothing in
the library imports this module.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rnnlab import files
from rnnlab.bench import engine as classic
from rnnlab.bench.engine import interleaved, paired_ratio
from rnnlab.bench.references import CLIP, HIDDEN, SEQ, stream_windows
from rnnlab.engine import fused, lru, rnn, scan
from rnnlab.engine.cell_api import g, g_grad
from rnnlab.engine.optim import Adagrad, clip_elementwise

REPO = Path(__file__).resolve().parents[2]  # the checkout rnnlab runs from
RESULTS = REPO / "docs" / "benchmarks" / "new_cells.json"  # the last full run's figures
PAGE = REPO / "docs" / "benchmarks.md"
MARKERS = ("<!-- bench:new_cells -->", "<!-- /bench:new_cells -->")
NEW = ("irnn", "indrnn", "mingru", "minlstm", "lru")
SCANNED = ("mingru", "minlstm", "lru")  # with a step-path row of their own
CASES = {"B=1 float64": (1, "float64"), "B=32 float32": (32, "float32")}
# else min-char-rnn's 0.1. The IRNN is timed at 0: the same arithmetic, but its trajectory would
# diverge under Adagrad within a few windows on the carried state (experiments/cells_kafka), and
# the bench times numbers, not NaNs.
LEARNING_RATE = {"irnn": 0.0, "lru": 0.01}
OPTIONS = {"irnn": 0.5, "indrnn": 1.0}  # identity scale; the IndRNN's bound on |u|


def _sig(z):
    return 1.0 / (1.0 + np.exp(-z))


# --- the naive baselines --------------------------------------------------------------------------


def naive_lossfun(cell: str, inputs, targets, state, p: dict):
    """One layer of ``cell`` written the seed's way: inputs/targets lists of symbol ids, the
    state (S, H) (the LRU's Re and Im), ``p`` the engine's parameters of one layer by name.
    Returns (loss, gradients by name (the engine's shapes), the final state (S, H)), the
    gradients *before* clipping."""
    names = rnn.TYPED[cell].names(0) if cell in rnn.TYPED else None
    Why, by = p["Why"], p["by"][:, None]
    V = Why.shape[0]
    xs, hs, ps, keep = {}, {}, {}, {}
    H = Why.shape[1]
    if cell == "lru":
        hs[-1] = (state[0] + 1j * state[1])[:, None]
        W = p[names["W_ih"]]
        Bc = W[:H] + 1j * W[H : 2 * H]
        Dm = W[2 * H :]
        lam = np.exp(-np.exp(p["nu_log_l0"]) + 1j * np.exp(p["theta_log_l0"]))[:, None]
        gam = np.exp(p["gamma_log_l0"])[:, None]
        C = p["C_re_l0"] + 1j * p["C_im_l0"]
    else:
        hs[-1] = state[0][:, None].copy()
    loss = 0.0
    for t in range(len(inputs)):
        xs[t] = np.zeros((V, 1))  # one-hot input
        xs[t][inputs[t]] = 1
        if cell == "irnn":
            pre = np.dot(p["Wxh"], xs[t]) + np.dot(p["Whh"], hs[t - 1]) + p["bh"][:, None]
            hs[t] = np.maximum(0, pre)
            out = hs[t]
        elif cell == "indrnn":
            pre = np.dot(p["W_ih_l0"], xs[t]) + p["b_ih_l0"][:, None]
            hs[t] = np.maximum(0, pre + p["u_l0"][:, None] * hs[t - 1])
            out = hs[t]
        elif cell == "mingru":
            a = np.dot(p["W_ih_l0"], xs[t]) + p["b_ih_l0"][:, None]
            z, ht = _sig(a[:H]), g(a[H:])
            hs[t] = (1 - z) * hs[t - 1] + z * ht
            keep[t], out = (z, ht), hs[t]
        elif cell == "minlstm":
            a = np.dot(p["W_ih_l0"], xs[t]) + p["b_ih_l0"][:, None]
            f, i, ht = _sig(a[:H]), _sig(a[H : 2 * H]), g(a[2 * H :])
            fn = f / (f + i)
            hs[t] = fn * hs[t - 1] + (1 - fn) * ht
            keep[t], out = (f, i, fn, ht), hs[t]
        else:  # lru
            u = np.dot(Bc, xs[t])
            hs[t] = lam * hs[t - 1] + gam * u
            out = np.dot(C, hs[t]).real + np.dot(Dm, xs[t])
            keep[t] = (u, out)
        ys = np.dot(Why, out) + by
        ps[t] = np.exp(ys) / np.sum(np.exp(ys))
        loss += -np.log(ps[t][targets[t], 0])
    d = {k: np.zeros_like(v) for k, v in p.items()}
    dnext = np.zeros_like(hs[-1])
    for t in reversed(range(len(inputs))):
        dy = np.copy(ps[t])
        dy[targets[t]] -= 1
        out = keep[t][1] if cell == "lru" else hs[t]
        d["Why"] += np.dot(dy, out.real.T)
        d["by"] += dy[:, 0]
        dh = np.dot(Why.T, dy)  # into the layer's output
        x, hprev = xs[t], hs[t - 1]
        if cell == "irnn":
            draw = (hs[t] > 0) * (dh + dnext)
            d["Wxh"] += np.dot(draw, x.T)
            d["Whh"] += np.dot(draw, hprev.T)
            d["bh"] += draw[:, 0]
            dnext = np.dot(p["Whh"].T, draw)
        elif cell == "indrnn":
            draw = (hs[t] > 0) * (dh + dnext)
            d["W_ih_l0"] += np.dot(draw, x.T)
            d["b_ih_l0"] += draw[:, 0]
            d["u_l0"] += (draw * hprev)[:, 0]
            dnext = p["u_l0"][:, None] * draw
        elif cell == "mingru":
            z, ht = keep[t]
            dh = dh + dnext
            da = np.vstack([dh * (ht - hprev) * z * (1 - z), dh * z * g_grad(ht)])
            d["W_ih_l0"] += np.dot(da, x.T)
            d["b_ih_l0"] += da[:, 0]
            dnext = dh * (1 - z)
        elif cell == "minlstm":
            f, i, fn, ht = keep[t]
            dh = dh + dnext
            dfn = dh * (hprev - ht) * fn * (1 - fn)
            da = np.vstack([dfn * (1 - f), -dfn * (1 - i), dh * (1 - fn) * g_grad(ht)])
            d["W_ih_l0"] += np.dot(da, x.T)
            d["b_ih_l0"] += da[:, 0]
            dnext = dh * fn
        else:  # lru: gradients of complex values as d/dRe + i d/dIm
            u, _ = keep[t]
            G = np.dot(np.conj(C).T, dh) + dnext  # into the complex state
            d["C_re_l0"] += np.dot(dh, hs[t].real.T)
            d["C_im_l0"] -= np.dot(dh, hs[t].imag.T)
            gu = gam * G
            dW = d[names["W_ih"]]
            dW[:H] += np.dot(gu.real, x.T)
            dW[H : 2 * H] += np.dot(gu.imag, x.T)
            dW[2 * H :] += np.dot(dh, x.T)
            d["gamma_log_l0"] += (gam * (G * np.conj(u)).real)[:, 0]
            ds = np.conj(lam) * G * np.conj(hprev)  # through λ = exp(s)
            d["nu_log_l0"] += (-np.exp(p["nu_log_l0"])[:, None] * ds.real)[:, 0]
            d["theta_log_l0"] += (np.exp(p["theta_log_l0"])[:, None] * ds.imag)[:, 0]
            dnext = np.conj(lam) * G
    last = hs[len(inputs) - 1][:, 0]
    final = np.stack([last.real, last.imag]) if cell == "lru" else last[None]
    return loss, d, final


class NaiveLoop:
    """The seed's training loop around ``naive_lossfun``: clip and Adagrad per matrix."""

    def __init__(self, data: np.ndarray, vocab_size: int, cell: str, seed: int = 0):
        self.cell = cell
        spec = rnn.Spec(cell, 1, HIDDEN)
        rng = np.random.default_rng(seed)
        _, params = rnn.init_params(vocab_size, HIDDEN, vocab_size, rng, "normal", 0.01,
                                    np.float64, spec, OPTIONS.get(cell))  # fmt: skip
        self.p = {k: v.copy() for k, v in params.items()}
        self.mems = [np.zeros_like(v) for v in self.p.values()]
        self.lr = LEARNING_RATE.get(cell, 0.1)
        self.windows = [(x[:, 0].tolist(), y[:, 0].tolist()) for x, y in stream_windows(data, 1)]
        self.i, self.state = 0, np.zeros((spec.state_size, HIDDEN))

    def run(self, n: int) -> int:
        for _ in range(n):
            if self.i == len(self.windows):
                self.i, self.state = 0, np.zeros_like(self.state)
            inputs, targets = self.windows[self.i]
            self.i += 1
            _, d, self.state = naive_lossfun(self.cell, inputs, targets, self.state, self.p)
            for param, dparam, mem in zip(self.p.values(), d.values(), self.mems, strict=True):
                np.clip(dparam, -CLIP, CLIP, out=dparam)  # min-char-rnn's clip and Adagrad
                mem += dparam * dparam
                param += -self.lr * dparam / np.sqrt(mem + 1e-8)
            if self.cell == "indrnn":
                np.clip(self.p["u_l0"], -1.0, 1.0, out=self.p["u_l0"])
        return n * SEQ


# --- the engine -----------------------------------------------------------------------------------


class EngineLoop:
    """``rnnlab.bench.engine.EngineLoop`` for a new cell: its scan or step path, its learning rate
    and init."""

    def __init__(self, data, vocab_size: int, batch_size: int, dtype, cell: str, scan: bool = True):
        rng = np.random.default_rng(0)
        self.spec = rnn.Spec(cell, 1, HIDDEN, scan=scan)
        options = OPTIONS.get(cell)
        self.flat, self.params = rnn.init_params(vocab_size, HIDDEN, vocab_size, rng, "normal",
                                                 0.01, dtype, self.spec, options)  # fmt: skip
        self.grad_flat, self.grads = rnn.packed_zeros(
            {k: v.shape for k, v in self.params.items()}, dtype
        )
        self.optimizer = Adagrad(self.flat.size, dtype, LEARNING_RATE.get(cell, 0.1))
        update = fused.clip_and_update(self.optimizer, CLIP, None)
        constrain = rnn.constraint(self.spec, options)

        def numpy_update(params, grad):
            clip_elementwise(grad, CLIP)
            self.optimizer.step(params, grad)

        def step(params, grad):
            (update or numpy_update)(params, grad)
            if constrain is not None:
                constrain(self.params)

        self.update = step
        self.windows = stream_windows(data, batch_size)
        self.i, self.state = 0, rnn.zero_state(self.spec, batch_size, dtype)

    def run(self, n: int) -> int:
        for _ in range(n):
            if self.i == len(self.windows):
                self.i = 0
                self.state[...] = 0.0
            xs, ys = self.windows[self.i]
            self.i += 1
            _, _, self.state = rnn.loss_and_grads(
                self.params, xs, ys, self.state, self.spec, "xent", self.grads
            )
            self.update(self.flat, self.grad_flat)
        return n * SEQ * self.state.shape[2]


class BoundLoop:
    """The cell's own bound: its unavoidable matrix products and, for a diagonal cell, its
    recurrence as one compiled pass each way, on preallocated arrays."""

    def __init__(self, vocab_size: int, batch_size: int, dtype, cell: str, seed: int = 0):
        rng = np.random.default_rng(seed)
        T, B, H, V = SEQ, batch_size, HIDDEN, vocab_size
        N = T * B
        ct = lru.COMPLEX[np.dtype(dtype)]

        def rand(*shape):
            return rng.uniform(-0.1, 0.1, shape).astype(dtype)

        self.products: list[tuple] = []  # (a, b, out): a @ b into out, once per window
        h_out, dl, Why = rand(N, H), rand(N, V), rand(V, H)
        self.products += [
            (h_out, Why.T, rand(N, V)),
            (dl.T, h_out, rand(V, H)),
            (dl, Why, rand(N, H)),
        ]  # logits, dWhy, dh
        self.steps: list[tuple] = []  # the IRNN's per-step (B, H) @ (H, H), forward and back
        if cell == "irnn":
            W, hs = rand(H, H), rand(T + 1, B, H)
            self.steps = [(hs[t], W, rand(B, H)) for t in range(T)] * 2
            self.products.append((rand(H, N), h_out, rand(H, H)))  # dWhh
        if cell == "lru":
            xv, Cv = rand(N, 2 * H), rand(H, 2 * H)
            self.products.append((xv, Cv.T, rand(N, H)))  # Re(C s), every step at once
            self.products.append((rand(N, H), Cv, rand(N, 2 * H)))  # back into s
            self.products.append((rand(H, N), xv, rand(H, 2 * H)))  # dC
        self.recurrence = None  # (a, b, h0, hs, G): the diagonal cells' floor
        if cell != "irnn":
            kind = ct if cell == "lru" else np.dtype(dtype)
            a = rand(T, B, H).astype(kind)
            self.recurrence = (a, a.copy(), a[0].copy(), np.empty((T + 1, B, H), kind), a.copy())
        self.chars = N

    def run(self, n: int) -> int:
        for _ in range(n):
            for a, b, out in self.steps:
                np.dot(a, b, out)
            for a, b, out in self.products:
                np.matmul(a, b, out=out)
            if self.recurrence is not None:
                a, b, h0, hs, G = self.recurrence
                scan.forward(a, b, h0, hs, "compiled")
                G[...] = b  # the gradient arriving from above (a GEMM writes it in a window)
                scan.backward(a, G, "compiled")
        return n * self.chars


class RecurrenceLoop:
    """The bare recurrence of a minGRU-sized window by one ``scan.METHODS`` way, forward and
    backward, on fixed arrays (a uniform on [0, 1), as 1 − z)."""

    def __init__(self, batch_size: int, dtype, how: str, seed: int = 0):
        rng = np.random.default_rng(seed)
        shape = (SEQ, batch_size, HIDDEN)
        self.a = rng.uniform(0.0, 1.0, shape).astype(dtype)
        self.b = rng.normal(size=shape).astype(dtype)
        self.h0 = np.zeros(shape[1:], dtype=dtype)
        self.hs = np.empty((SEQ + 1, *shape[1:]), dtype=dtype)
        self.G = np.empty(shape, dtype=dtype)
        self.how = how

    def run(self, n: int) -> int:
        for _ in range(n):
            scan.forward(self.a, self.b, self.h0, self.hs, self.how)
            self.G[...] = self.b
            scan.backward(self.a, self.G, self.how)
        return n * self.b.shape[0] * self.b.shape[1]


# --- figures --------------------------------------------------------------------------------------


def figures(data: np.ndarray, vocab_size: int, rounds: int, block: float) -> dict:
    """Every new cell against its naive baseline and its bound at B = 1 float64 and B = 32
    float32, the scan path against the step path, and every cell's B = 1 float64 rate."""
    cases: dict[str, Callable[[int], int]] = {}
    for cell in NEW:
        cases[f"{cell} naive"] = NaiveLoop(data, vocab_size, cell).run
        for name, (B, dtype) in CASES.items():
            cases[f"{cell} {name}"] = EngineLoop(data, vocab_size, B, dtype, cell).run
            cases[f"{cell} bound {name}"] = BoundLoop(vocab_size, B, dtype, cell).run
            if cell in SCANNED:
                step = EngineLoop(data, vocab_size, B, dtype, cell, scan=False)
                cases[f"{cell} step {name}"] = step.run
    for cell in ("rnn", "gru", "lstm"):  # the classic cells at B = 1, for the ranking
        cases[f"{cell} B=1 float64"] = classic.EngineLoop(data, vocab_size, 1, "float64", cell).run
    for name, (B, dtype) in CASES.items():
        for how in scan.METHODS:
            cases[f"recurrence {how} {name}"] = RecurrenceLoop(B, dtype, how).run
    runs = interleaved(cases, rounds, block)

    def rate(case: str) -> float:
        return statistics.median(w for w, _ in runs[case])

    out: dict = {}
    for cell in NEW:
        naive = f"{cell} naive"
        out[cell] = {"naive B=1 float64": rate(naive)}
        for name in CASES:
            case, bound = f"{cell} {name}", f"{cell} bound {name}"
            row = {
                "chars_per_sec": rate(case),
                "cpu_chars_per_sec": statistics.median(c for _, c in runs[case]),
                "vs_naive": paired_ratio(runs[case], runs[naive], 0),
                "bound_chars_per_sec": rate(bound),
                "fraction_of_bound": paired_ratio(runs[case], runs[bound], 0),
                "cpu_fraction_of_bound": paired_ratio(runs[case], runs[bound], 1),
            }
            if cell in SCANNED:
                step = f"{cell} step {name}"
                row |= {
                    "step_chars_per_sec": rate(step),
                    "scan_vs_step": paired_ratio(runs[case], runs[step], 0),
                    "cpu_scan_vs_step": paired_ratio(runs[case], runs[step], 1),
                }
            out[cell][name] = row
    ranking = {c: rate(f"{c} B=1 float64") for c in ("rnn", "gru", "lstm", *NEW)}
    out["ranking B=1 float64"] = dict(sorted(ranking.items(), key=lambda kv: -kv[1]))
    out["recurrence alone"] = {
        name: {
            how: {
                "chars_per_sec": rate(f"recurrence {how} {name}"),
                "vs_step": paired_ratio(
                    runs[f"recurrence {how} {name}"], runs[f"recurrence step {name}"], 0
                ),  # fmt: skip
            }
            for how in scan.METHODS
        }
        for name in CASES
    }
    return out


def targets(figs: dict) -> dict[str, bool]:
    """The scan path beats the step path at both batch sizes; at B = 1 a scanned min cell is
    the fastest cell per character."""
    out = {}
    for cell in ("mingru", "minlstm"):
        for name in CASES:
            out[f"{cell} {name} scan > step"] = figs[cell][name]["scan_vs_step"] > 1.0
    fastest = next(iter(figs["ranking B=1 float64"]))
    out["fastest cell at B=1 float64 is mingru or minlstm"] = fastest in ("mingru", "minlstm")
    return out


def print_figures(figs: dict, file=None, verdicts: bool = True) -> None:
    """The figures as a table; ``verdicts``: and each target met or missed (a full run only)."""
    file = file or sys.stdout  # looked up per call: a test's capture swaps sys.stdout
    print("cells after the LSTM (one layer, hidden 100, seq 25):", file=file)
    print(f"{'cell':<8}{'case':<14}{'chars/s':>10}{'× naive':>9}{'bound':>11}{'of bound':>10}"
          f"{'scan/step':>11}", file=file)  # fmt: skip
    for cell in NEW:
        f = figs[cell]
        print(f"{cell:<8}{'naive B=1 f64':<14}{f['naive B=1 float64']:>10,.0f}", file=file)
        for name in CASES:
            e = f[name]
            ratio = f"{e['scan_vs_step']:>11.2f}" if "scan_vs_step" in e else ""
            print(f"{cell:<8}{name:<14}{e['chars_per_sec']:>10,.0f}{e['vs_naive']:>9.2f}"
                  f"{e['bound_chars_per_sec']:>11,.0f}{e['fraction_of_bound']:>10.0%}{ratio}",
                  file=file)  # fmt: skip
    ranking = ", ".join(f"{c} {r:,.0f}" for c, r in figs["ranking B=1 float64"].items())
    print(f"every cell at B=1 float64 (chars/s, fastest first): {ranking}", file=file)
    for name, ways in figs["recurrence alone"].items():
        shown = ", ".join(f"{how} {w['vs_step']:.2f}×" for how, w in ways.items())
        print(f"the recurrence alone, {name} (forward + backward, × step by step): {shown}",
              file=file)  # fmt: skip
    for what, ok in targets(figs).items() if verdicts else ():
        print(f"target {what}: {'met' if ok else 'MISSED'}", file=file)


# --- the results file and the page ----------------------------------------------------------------


def markdown(run: dict) -> str:
    """The page's tables for one recorded run (``record``'s file)."""
    figs, load = run["figures"], run["load_average"]
    shown_load = " / ".join(f"{x:.1f}" for x in load) if load else "unknown"
    lines = [
        f"Measured {run['date']} on {run['cpu']}, one BLAS thread, load average (1 / 5 / 15 min) "
        f"{shown_load} before; `{run['command']}` ({run['rounds']} interleaved rounds of "
        f"~{run['block_seconds']:g} s blocks; medians). One layer of hidden 100, seq 25: "
        "× naive over the cell's seed-style per-step loop (B = 1 float64), of bound over its own "
        "GEMM/elementwise bound, scan / step over the same cell with `scan=false`.",
        "",
        "| cell | case | chars/s | × naive | bound, chars/s | of bound | scan / step |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for cell in NEW:
        f = figs[cell]
        lines.append(f"| {cell} | naive B=1 float64 | {f['naive B=1 float64']:,.0f} | 1.00 | | | |")
        for name in CASES:
            e = f[name]
            ratio = f"{e['scan_vs_step']:.2f}" if "scan_vs_step" in e else ""
            lines.append(
                f"| {cell} | {name} | {e['chars_per_sec']:,.0f} | {e['vs_naive']:.2f} | "
                f"{e['bound_chars_per_sec']:,.0f} | {e['fraction_of_bound']:.0%} | {ratio} |"
            )
    ranking = ", ".join(f"{c} {r:,.0f}" for c, r in figs["ranking B=1 float64"].items())
    lines += ["", f"Every cell at B = 1 float64, chars/s, fastest first: {ranking}.", ""]
    lines += ["| the recurrence alone (forward + backward) | " + " | ".join(scan.METHODS) + " |",
              "|---|" + "---:|" * len(scan.METHODS)]  # fmt: skip
    for name, ways in figs["recurrence alone"].items():
        ratios = " | ".join(f"{ways[h]['vs_step']:.2f}" for h in scan.METHODS)
        lines.append(f"| {name}, × step by step | {ratios} |")
    lines += ["", "| target | this run |", "|---|---|"]
    lines += [f"| {what} | {'met' if ok else '**missed**'} |" for what, ok in targets(figs).items()]
    return "\n".join(lines)


def record(
    figs: dict,
    command: str,
    date: str,
    cpu: str,
    rounds: int,
    block: float,
    load_before,
    results: Path = RESULTS,
    page: Path = PAGE,
) -> None:
    """Write a full run's figures to ``results`` and render them into ``page``'s block (left as
    it is when the page has no markers)."""  # fmt: skip
    run = {"date": date, "command": command, "cpu": cpu, "rounds": rounds,
           "block_seconds": block, "load_average": load_before, "figures": figs}  # fmt: skip
    results.parent.mkdir(parents=True, exist_ok=True)
    files.write_text(results, json.dumps(run, indent=1, ensure_ascii=False) + "\n")
    render_page(results, page)


def render_page(results: Path = RESULTS, page: Path = PAGE) -> None:
    """Fill ``page``'s ``MARKERS`` block from the results file."""
    if not page.is_file() or not results.is_file():
        return
    text = page.read_text(encoding="utf-8")
    a, b = text.find(MARKERS[0]), text.find(MARKERS[1])
    if a < 0 or b < a:
        return
    run = json.loads(results.read_text(encoding="utf-8"))
    body = markdown(run)
    files.write_text(page, text[: a + len(MARKERS[0])] + "\n" + body + "\n" + text[b:])
