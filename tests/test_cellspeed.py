"""cells.gate_block reads PyTorch's gates whatever order a cell keeps them in internally."""

import numpy as np
import pytest

from rnnlab import cells


def _sig(a):
    return 1.0 / (1.0 + np.exp(-a))


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_gate_block_is_pytorchs_gate(cell):
    rng = np.random.default_rng(0)
    T, B, H, V = 3, 2, 4, 5
    G = (3 if cell == "gru" else 4) * H
    W_ih, W_hh = rng.normal(size=(G, V)), rng.normal(size=(G, H))
    b_ih, b_hh = rng.normal(size=G), rng.normal(size=G)
    x = rng.integers(0, V, (T, B))
    state0 = rng.normal(size=(2 if cell == "lstm" else 1, B, H))
    forward = cells.lstm_forward if cell == "lstm" else cells.gru_forward
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
