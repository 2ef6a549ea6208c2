"""The cells' speed-minded internals read and write what the engine's math says: gate_block reads
PyTorch's gates whatever order and layout a cell (numpy or compiled) keeps them in; the
gate-major scatter and the batched trace match their one-stream references."""

import numpy as np
import pytest

from rnnlab.engine import cells, fused, rnn


def _sig(a):
    return 1.0 / (1.0 + np.exp(-a))


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("engine", [cells, fused])  # the numpy cells and the compiled ones
def test_gate_block_is_pytorchs_gate(cell, engine):
    rng = np.random.default_rng(0)
    T, B, H, V = 3, 2, 4, 5
    G = (3 if cell == "gru" else 4) * H
    W_ih, W_hh = rng.normal(size=(G, V)), rng.normal(size=(G, H))
    b_ih, b_hh = rng.normal(size=G), rng.normal(size=G)
    x = rng.integers(0, V, (T, B))
    state0 = rng.normal(size=(2 if cell == "lstm" else 1, B, H))
    forward = engine.lstm_forward if cell == "lstm" else engine.gru_forward
    layer = forward(W_ih, b_ih, W_hh, b_hh, x, state0)
    h, c = state0[0].copy(), state0[-1].copy()
    for t in range(T):
        gi, gh = W_ih[:, x[t]].T + b_ih, h @ W_hh.T + b_hh  # (B, G)
        if cell == "lstm":
            a = gi + gh
            gates = [_sig(a[:, :H]), _sig(a[:, H : 2 * H]), np.tanh(a[:, 2 * H : 3 * H])]
            gates.append(_sig(a[:, 3 * H :]))
            c = gates[1] * c + gates[0] * gates[2]
            h = gates[3] * np.tanh(c)
        else:
            r, z = _sig(gi[:, :H] + gh[:, :H]), _sig(gi[:, H : 2 * H] + gh[:, H : 2 * H])
            n = np.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
            gates = [r, z, n]
            h = (1 - z) * n + z * h
        for j, want in enumerate(gates):
            np.testing.assert_allclose(cells.gate_block(layer, j, H)[t].T, want, atol=1e-12)
        np.testing.assert_allclose(layer.hs[t + 1], h, atol=1e-12)


def test_scatter_gate_columns_is_a_per_symbol_sum():
    """The gate-major dW_ih scatter sums each symbol's rows and leaves unseen symbols at zero."""
    rng = np.random.default_rng(3)
    K, N, H, V = 3, 57, 4, 9
    sym = rng.integers(0, V - 2, N)  # the last two symbols never occur
    dz = rng.normal(size=(K, N, H))
    want = np.zeros((K, H, V))
    for n in range(N):
        want[:, :, sym[n]] += dz[:, n]
    got = np.full((K, H, V), np.nan)
    rnn._scatter_gate_columns(sym, dz, got)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert (got[:, :, V - 2 :] == 0.0).all()


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_batched_trace_equals_each_streams_own(cell):
    """d loss / d h_t handed back through dh_trace: B streams at once (gate-major memory inside
    the cell) equal each stream alone (step-major), layer by layer."""
    rng = np.random.default_rng(4)
    T, B, H, V = 5, 3, 4, 6
    spec = rnn.Spec(cell, 2, H)
    _, params = rnn.init_params(V, H, V, rng, "normal", 0.5, np.float64, spec)
    xs, ys = rng.integers(0, V, (T, B)), rng.integers(0, V, (T, B))
    state0 = rng.normal(size=(2, spec.state_size, B, H))

    def trace_of(x, y, s):
        fwd = rnn.forward(params, x, s, spec)
        _, dlogits = rnn.softmax_xent(fwd.logits, y)
        trace = np.empty((2, T, x.shape[1], H))
        rnn.backward(params, fwd, dlogits * x.shape[1], dh_trace=trace)  # per-stream loss
        return trace

    together = trace_of(xs, ys, state0)
    for b in range(B):
        alone = trace_of(xs[:, b : b + 1], ys[:, b : b + 1], state0[:, :, b : b + 1])
        np.testing.assert_allclose(together[:, :, b : b + 1], alone, rtol=1e-10, atol=1e-12)
