"""The seeds' algorithms written the seeds' way: what the engine is measured and tested against.

min-char-rnn's ``lossFun`` (column vectors, a one-hot input matmul, per-step outer products,
batch of one), its clip-and-Adagrad update, and the same for one GRU or LSTM layer with
PyTorch's equations. Kept on purpose as the thing to beat (``python -m rnnlab.bench``) and as
independent oracles for the engine's tests; nothing in the library imports them.
"""

from __future__ import annotations

import numpy as np

from rnnlab.engine import rnn

HIDDEN, SEQ, LR, CLIP = 100, 25, 0.1, 5.0  # min-char-rnn's settings


def naive_lossfun(inputs, targets, hprev, Wxh, Whh, Why, bh, by):
    """min-char-rnn's lossFun, unchanged in substance: inputs/targets are lists of symbol ids,
    hprev is (H, 1), biases are column vectors. Returns (loss, dWxh, dWhh, dWhy, dbh, dby, h),
    gradients *before* clipping."""
    vocab_size = Wxh.shape[1]
    xs, hs, ys, ps = {}, {}, {}, {}
    hs[-1] = np.copy(hprev)
    loss = 0.0
    for t in range(len(inputs)):
        xs[t] = np.zeros((vocab_size, 1))  # one-hot input
        xs[t][inputs[t]] = 1
        hs[t] = np.tanh(np.dot(Wxh, xs[t]) + np.dot(Whh, hs[t - 1]) + bh)
        ys[t] = np.dot(Why, hs[t]) + by  # unnormalised log probabilities
        ps[t] = np.exp(ys[t]) / np.sum(np.exp(ys[t]))
        loss += -np.log(ps[t][targets[t], 0])
    dWxh, dWhh, dWhy = np.zeros_like(Wxh), np.zeros_like(Whh), np.zeros_like(Why)
    dbh, dby = np.zeros_like(bh), np.zeros_like(by)
    dhnext = np.zeros_like(hs[0])
    for t in reversed(range(len(inputs))):
        dy = np.copy(ps[t])
        dy[targets[t]] -= 1  # softmax + cross-entropy gradient
        dWhy += np.dot(dy, hs[t].T)
        dby += dy
        dh = np.dot(Why.T, dy) + dhnext  # into h
        dhraw = (1 - hs[t] * hs[t]) * dh  # through tanh
        dbh += dhraw
        dWxh += np.dot(dhraw, xs[t].T)
        dWhh += np.dot(dhraw, hs[t - 1].T)
        dhnext = np.dot(Whh.T, dhraw)
    return loss, dWxh, dWhh, dWhy, dbh, dby, hs[len(inputs) - 1]


def stream_windows(data: np.ndarray, batch_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """One pass of (xs, ys), each (T, B), over ``data`` split into B consecutive streams, the way
    ``CharTask`` reads it."""
    span = (len(data) - 1) // batch_size
    starts = np.arange(batch_size) * span
    out = []
    for p in range(0, span - SEQ, SEQ):
        idx = (starts + p)[None, :] + np.arange(SEQ)[:, None]  # (T, B)
        out.append((data[idx], data[idx + 1]))
    return out


def naive_clip_adagrad(params: list, dparams: list, mems: list) -> None:
    """min-char-rnn's update, matrix by matrix: clip each gradient, then Adagrad in place."""
    for dparam in dparams:
        np.clip(dparam, -CLIP, CLIP, out=dparam)
    for param, dparam, mem in zip(params, dparams, mems, strict=True):
        mem += dparam * dparam
        param += -LR * dparam / np.sqrt(mem + 1e-8)


class NaiveLoop:
    """The seed's training loop: ``naive_lossfun``, ``np.clip`` per matrix, Adagrad per matrix."""

    def __init__(self, data: np.ndarray, vocab_size: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        H, V = HIDDEN, vocab_size
        self.params = [rng.standard_normal(s) * 0.01 for s in ((H, V), (H, H), (V, H))]
        self.params += [np.zeros((H, 1)), np.zeros((V, 1))]
        self.mems = [np.zeros_like(p) for p in self.params]
        self.windows = [
            (xs[:, 0].tolist(), ys[:, 0].tolist()) for xs, ys in stream_windows(data, 1)
        ]
        self.i, self.hprev = 0, np.zeros((H, 1))

    def run(self, n: int) -> int:
        for _ in range(n):
            if self.i == len(self.windows):
                self.i, self.hprev = 0, np.zeros_like(self.hprev)
            inputs, targets = self.windows[self.i]
            self.i += 1
            loss, *dparams, self.hprev = naive_lossfun(inputs, targets, self.hprev, *self.params)
            naive_clip_adagrad(self.params, dparams, self.mems)
        return n * SEQ


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def naive_cell_lossfun(cell, inputs, targets, hprev, cprev, Wih, Whh, bih, bhh, Why, by):
    """A GRU or LSTM lossFun written the seed's way: column vectors, one-hot input matmul,
    per-step outer products, batch of one, PyTorch's equations. Returns (loss, [dWih, dWhh,
    dbih, dbhh, dWhy, dby], h, c), gradients *before* clipping (c is None for the GRU)."""
    V, H = Wih.shape[1], Whh.shape[1]
    xs, hs, cs, gs, ps = {}, {-1: np.copy(hprev)}, {-1: np.copy(cprev)}, {}, {}
    loss = 0.0
    for t in range(len(inputs)):
        xs[t] = np.zeros((V, 1))  # one-hot input
        xs[t][inputs[t]] = 1
        gi, gh = np.dot(Wih, xs[t]) + bih, np.dot(Whh, hs[t - 1]) + bhh  # (G·H, 1) each
        if cell == "lstm":
            a = gi + gh
            i, f, g, o = (
                _sig(a[:H]),
                _sig(a[H : 2 * H]),
                np.tanh(a[2 * H : 3 * H]),
                _sig(a[3 * H :]),
            )
            cs[t] = f * cs[t - 1] + i * g
            hs[t] = o * np.tanh(cs[t])
            gs[t] = (i, f, g, o)
        else:
            r, z = _sig(gi[:H] + gh[:H]), _sig(gi[H : 2 * H] + gh[H : 2 * H])
            n = np.tanh(gi[2 * H :] + r * gh[2 * H :])
            hs[t] = (1 - z) * n + z * hs[t - 1]
            gs[t] = (r, z, n, gh[2 * H :])
        ys = np.dot(Why, hs[t]) + by
        ps[t] = np.exp(ys) / np.sum(np.exp(ys))
        loss += -np.log(ps[t][targets[t], 0])
    dWih, dWhh, dbih, dbhh = (np.zeros_like(w) for w in (Wih, Whh, bih, bhh))
    dWhy, dby = np.zeros_like(Why), np.zeros_like(by)
    dhnext, dcnext = np.zeros_like(hprev), np.zeros_like(cprev)
    for t in reversed(range(len(inputs))):
        dy = np.copy(ps[t])
        dy[targets[t]] -= 1
        dWhy += np.dot(dy, hs[t].T)
        dby += dy
        dh = np.dot(Why.T, dy) + dhnext
        if cell == "lstm":
            i, f, g, o = gs[t]
            tc = np.tanh(cs[t])
            dc = dh * o * (1 - tc * tc) + dcnext
            da = np.vstack([dc * g * i * (1 - i), dc * cs[t - 1] * f * (1 - f),
                            dc * i * (1 - g * g), dh * tc * o * (1 - o)])  # fmt: skip
            dgi = dgh = da
            dcnext = dc * f
            dhnext = np.dot(Whh.T, dgh)
        else:
            r, z, n, hn = gs[t]
            dn = dh * (1 - z) * (1 - n * n)
            dz = dh * (hs[t - 1] - n) * z * (1 - z)
            dr = dn * hn * r * (1 - r)
            dgi = np.vstack([dr, dz, dn])
            dgh = np.vstack([dr, dz, dn * r])
            dhnext = np.dot(Whh.T, dgh) + dh * z
        dWih += np.dot(dgi, xs[t].T)
        dWhh += np.dot(dgh, hs[t - 1].T)
        dbih += dgi
        dbhh += dgh
    last = len(inputs) - 1
    return loss, [dWih, dWhh, dbih, dbhh, dWhy, dby], hs[last], cs.get(last)


class NaiveCellLoop:
    """The seed's training loop around ``naive_cell_lossfun``: clip and Adagrad per matrix."""

    def __init__(self, data: np.ndarray, vocab_size: int, cell: str, seed: int = 0):
        rng = np.random.default_rng(seed)
        H, V, G = HIDDEN, vocab_size, rnn.GATES[cell] * HIDDEN
        k = 1 / np.sqrt(H)
        self.cell = cell
        self.params = [rng.uniform(-k, k, s) for s in ((G, V), (G, H), (G, 1), (G, 1))]
        self.params += [rng.standard_normal((V, H)) * 0.01, np.zeros((V, 1))]
        self.mems = [np.zeros_like(p) for p in self.params]
        self.windows = [
            (xs[:, 0].tolist(), ys[:, 0].tolist()) for xs, ys in stream_windows(data, 1)
        ]
        self.i, self.h, self.c = 0, np.zeros((H, 1)), np.zeros((H, 1))

    def run(self, n: int) -> int:
        for _ in range(n):
            if self.i == len(self.windows):
                self.i, self.h, self.c = 0, np.zeros_like(self.h), np.zeros_like(self.c)
            inputs, targets = self.windows[self.i]
            self.i += 1
            _, dparams, self.h, c = naive_cell_lossfun(
                self.cell, inputs, targets, self.h, self.c, *self.params
            )
            self.c = c if c is not None else self.c
            naive_clip_adagrad(self.params, dparams, self.mems)
        return n * SEQ


def seed_sample(params, spec, h, first: int, length: int, temperature: float, rng) -> list[int]:
    """min-char-rnn's ``sample``: feed each drawn symbol back, one engine step at a time, and
    draw the next from the softmax with ``rng.choice``. h: the state before ``first`` is read,
    (L, S, 1, H). Returns the drawn symbols (not ``first``): what decoders must reproduce."""
    out, x = [], first
    for _ in range(length):
        logits, h = rnn.step(params, spec, h, np.array([x]))
        # float64 so the probabilities sum to 1 closely enough for Generator.choice
        p = rnn.softmax(logits[0].astype(np.float64), temperature)
        x = int(rng.choice(p.size, p=p))
        out.append(x)
    return out
