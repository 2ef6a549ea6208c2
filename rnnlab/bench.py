"""``python -m rnnlab.bench``: how fast the engine trains, measured side by side in one run.

The baseline is the seed's algorithm written the seed's way — column vectors, a one-hot input
matmul and per-step outer products, batch of one — kept here on purpose as the thing to beat.
"""

from __future__ import annotations

import numpy as np


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
