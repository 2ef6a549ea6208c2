"""The gated cells, one layer at a time: GRU and LSTM recurrences and their BPTT, in numpy.

Equations, gate orders and weight layouts are PyTorch's (``torch.nn.GRU`` / ``torch.nn.LSTM``),
so exported weights mean the same thing there. For a layer with input x_t (D,) and state h (H,):

    LSTM  gates i, f, g, o:  [i f g o] = W_ih x_t + b_ih + W_hh h + b_hh      W_ih (4H, D)
          i, f, o = σ(·), g = tanh(·);  c' = f ⊙ c + i ⊙ g;  h' = o ⊙ tanh(c')
    GRU   gates r, z, n:     r, z = σ(W_i· x_t + b_i· + W_h· h + b_h·)   for r and z,   W_ih (3H, D)
          n = tanh(W_in x_t + b_in + r ⊙ (W_hn h + b_hn));  h' = (1 − z) ⊙ n + z ⊙ h

The engine (``rnnlab.rnn``) owns the skeleton every cell shares: the input projection of a whole
window at once (a column gather for symbols, one GEMM for dense inputs), the stacking of layers,
dropout, the output head and every weight gradient that is a big GEMM. A cell here only runs the
sequential part: given the projected inputs ``W_ih x + b_ih`` of every step, the forward loop;
given the loss gradient arriving at each output h_t, the backward loop, returning the gradients
w.r.t. the projected inputs, w.r.t. the recurrent pre-activations ``W_hh h + b_hh`` (from which the
engine makes dW_hh and db_hh), and w.r.t. the initial state. Arrays are time-major (T, B, ·).

Nothing here does I/O, reads config or keeps state between calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def sigmoid(z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """1 / (1 + e^-z), optionally in place."""
    # e^-z overflows to inf for very negative z and 1/(1+inf) = 0 is the right limit, so the
    # overflow warning is noise, not an error.
    out = np.negative(z, out=out)
    with np.errstate(over="ignore"):
        np.exp(out, out=out)
    out += 1.0
    return np.reciprocal(out, out=out)


def project(W: np.ndarray, b: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """out = W x_t + b for every step. x: (T, B) int symbols, read as columns of W (never a
    one-hot matmul), or (T, B, D) floats (one GEMM); W: (G, D) or (G, V); out: (T, B, G)."""
    if x.dtype.kind in "iu":  # integer symbols
        V = W.shape[1]
        if x.min() < 0 or x.max() >= V:
            raise IndexError(f"input symbols must be in [0, {V}); got {x.min()}..{x.max()}")
        # Row s of (W.T + b) is W x + b for the one-hot x of s: the window is one row gather.
        # mode="clip" only because the range is checked above: the default mode copies
        # through a buffer, which costs as much as the gather itself.
        np.take(W.T + b, x, axis=0, out=out, mode="clip")  # (T, B, G)
    else:
        np.matmul(x.astype(W.dtype, copy=False), W.T, out=out)
        out += b


@dataclass
class Layer:
    """What one layer's backward pass needs from its forward pass."""

    hs: np.ndarray  # (T+1, B, H); hs[0] the initial h, hs[t+1] the output of step t
    state: np.ndarray  # (S, B, H) the final state (h, and c for the LSTM)
    saved: dict[str, np.ndarray] = field(default_factory=dict)  # cell-specific activations


# Inside a gated layer the arrays are unit-major, (T, G·H, B): each gate of a step is then one
# contiguous (H, B) block, one GEMM W_hh (G·H, H) @ h (H, B) gives every gate, and every
# elementwise call runs on contiguous memory (numpy's strided loops are 5-15x slower at B=32).
# The layer hands the engine batch-major (T, B, ·) arrays, transposed once per window.


def _unit_major(a: np.ndarray) -> np.ndarray:
    """(T, B, K) → a contiguous (T, K, B) copy."""
    return np.ascontiguousarray(a.transpose(0, 2, 1))


def _half_rows(rows: int, spans: list[tuple[int, int]], dtype) -> np.ndarray:
    """A (rows, 1) column of ones with ½ on the rows of the σ gates."""
    col = np.ones((rows, 1), dtype=dtype)
    for lo, hi in spans:
        col[lo:hi] = 0.5
    return col


def _batch_major(a: np.ndarray) -> np.ndarray:
    """(T, K, B) → a contiguous (T, B, K) copy."""
    return np.ascontiguousarray(a.transpose(0, 2, 1))


# --- LSTM ---------------------------------------------------------------------------------------


def lstm_forward(W_ih, b_ih, W_hh, b_hh, x, state0, activation=None) -> Layer:
    """One LSTM layer over a window. x: (T, B) or (T, B, D); state0: (2, B, H) = (h0, c0)."""
    T, B = x.shape[:2]
    H = W_hh.shape[1]
    dt = W_hh.dtype
    # σ(a) = ½ + ½ tanh(a/2): with the rows of the σ gates (i, f, o) halved in advance, one
    # tanh per step gives every gate (numpy's float32 tanh is SIMD; exp + reciprocal cost 3x).
    half = _half_rows(4 * H, [(0, 2 * H), (3 * H, 4 * H)], dt)  # (4H, 1)
    proj = np.empty((T, B, 4 * H), dtype=dt)
    # both biases add to every step's pre-activation: fold b_hh in once
    project(W_ih * half, (b_ih + b_hh) * half[:, 0], x, proj)
    acts = _unit_major(proj)  # (T, 4H, B) pre-activations, then the gates i f g o
    W_half = W_hh * half
    hs = np.empty((T + 1, H, B), dtype=dt)
    cs = np.empty((T + 1, H, B), dtype=dt)
    tc = np.empty((T, H, B), dtype=dt)  # tanh(c_t), kept for the backward pass
    hs[0], cs[0] = state0[0].T, state0[1].T
    z = np.empty((4 * H, B), dtype=dt)  # this step's pre-activations
    ig = np.empty((H, B), dtype=dt)
    # per-step views made once: indexing inside the loop costs as much as the math at B=1
    a, h, c, tcs = list(acts), list(hs), list(cs), list(tc)
    i, f, g, o = (list(acts[:, k * H : (k + 1) * H]) for k in range(4))
    sig_if, sig_o = list(acts[:, : 2 * H]), list(acts[:, 3 * H :])
    for t in range(T):
        np.dot(W_half, h[t], z)  # (4H, B) = W_hh h_{t-1}, σ rows halved
        np.add(z, a[t], z)  # + W_ih x_t + b_ih + b_hh
        np.tanh(z, a[t])  # g = tanh(·); i, f, o: tanh(·/2) ...
        np.multiply(sig_if[t], 0.5, sig_if[t])  # ... → σ(·) = ½ tanh(·/2) + ½
        np.add(sig_if[t], 0.5, sig_if[t])
        np.multiply(sig_o[t], 0.5, sig_o[t])
        np.add(sig_o[t], 0.5, sig_o[t])
        np.multiply(f[t], c[t], c[t + 1])  # c_t = f ⊙ c_{t-1} + i ⊙ g
        np.multiply(i[t], g[t], ig)
        np.add(c[t + 1], ig, c[t + 1])
        np.tanh(c[t + 1], tcs[t])
        np.multiply(o[t], tcs[t], h[t + 1])  # h_t = o ⊙ tanh(c_t)
    state = np.stack([hs[-1].T, cs[-1].T])  # (2, B, H)
    return Layer(
        hs=_batch_major(hs), state=state, saved={"acts": acts, "hs": hs, "cs": cs, "tc": tc}
    )


def lstm_backward(layer: Layer, W_hh: np.ndarray, dh: np.ndarray, activation=None, trace=None):
    """BPTT through one LSTM layer. dh: (T, B, H) loss gradient at each output h_t from above.
    Returns (d gates (T, B, 4H) — the same for the input and the recurrent pre-activations —
    that again, and d state0 (2, B, H)). ``trace`` (T, B, H), when given, receives d loss / d h_t
    (its output + the future, c_t held) of every step."""
    acts, cs, tc = layer.saved["acts"], layer.saved["cs"], layer.saved["tc"]
    T, B, H = dh.shape
    dt = acts.dtype
    dhT = _unit_major(dh)  # (T, H, B)
    i, f, g, o = (acts[:, k * H : (k + 1) * H] for k in range(4))  # (T, H, B) each
    # Everything that does not depend on the backward recurrence, for the whole window at once:
    # d gate pre-activation = (d c_t or d h_t) ⊙ K, with σ' = σ(1 − σ), tanh' = 1 − tanh².
    K = np.empty((T, 4 * H, B), dtype=dt)
    np.multiply(g, i * (1.0 - i), out=K[:, :H])  # i: d c_t ⊙ g ⊙ σ'
    np.multiply(cs[:-1], f * (1.0 - f), out=K[:, H : 2 * H])  # f: d c_t ⊙ c_{t-1} ⊙ σ'
    np.multiply(i, 1.0 - g * g, out=K[:, 2 * H : 3 * H])  # g: d c_t ⊙ i ⊙ tanh'
    np.multiply(tc, o * (1.0 - o), out=K[:, 3 * H :])  # o: d h_t ⊙ tanh(c_t) ⊙ σ'
    o_dc = o * (1.0 - tc * tc)  # (T, H, B): d c_t / d h_t through h = o ⊙ tanh(c)
    dG = np.empty((T, 4 * H, B), dtype=dt)
    WhhT = np.ascontiguousarray(W_hh.T)  # (H, 4H)
    dhnext = np.zeros((H, B), dtype=dt)  # gradient arriving at h_t from step t+1
    dcnext = np.zeros((H, B), dtype=dt)  # ... and at c_t
    dc = np.empty((H, B), dtype=dt)
    dhs, ods, fs, dGs = list(dhT), list(o_dc), list(f), list(dG)
    Kifg = list(K[:, : 3 * H].reshape(T, 3, H, B))
    dGifg = list(dG[:, : 3 * H].reshape(T, 3, H, B))
    Ko, dGo = list(K[:, 3 * H :]), list(dG[:, 3 * H :])
    for t in reversed(range(T)):
        np.add(dhs[t], dhnext, dhs[t])  # into h_t: its output + the future
        np.multiply(dhs[t], ods[t], dc)  # into c_t: through h_t ...
        np.add(dc, dcnext, dc)  # ... + through c_{t+1}
        np.multiply(dc, Kifg[t], dGifg[t])  # (3, H, B): i, f, g pre-activations
        np.multiply(dhs[t], Ko[t], dGo[t])  # o pre-activation
        np.multiply(dc, fs[t], dcnext)  # into c_{t-1}
        np.dot(WhhT, dGs[t], dhnext)  # into h_{t-1}: (H, 4H) @ (4H, B)
    if trace is not None:
        trace[...] = dhT.transpose(0, 2, 1)  # dhT now holds each step's whole d loss / d h_t
    dgates = _batch_major(dG)  # (T, B, 4H)
    return dgates, dgates, np.stack([dhnext.T, dcnext.T])


# --- GRU ----------------------------------------------------------------------------------------


def gru_forward(W_ih, b_ih, W_hh, b_hh, x, state0, activation=None) -> Layer:
    """One GRU layer over a window. x: (T, B) or (T, B, D); state0: (1, B, H)."""
    T, B = x.shape[:2]
    H = W_hh.shape[1]
    dt = W_hh.dtype
    b = b_ih.copy()
    b[: 2 * H] += b_hh[: 2 * H]  # b_hr, b_hz add outside r ⊙ (...): fold them in once
    # σ(a) = ½ + ½ tanh(a/2), as in lstm_forward: the r and z rows are halved in advance
    half = _half_rows(3 * H, [(0, 2 * H)], dt)  # (3H, 1)
    proj = np.empty((T, B, 3 * H), dtype=dt)
    project(W_ih * half, b * half[:, 0], x, proj)
    W_half = W_hh * half
    acts = _unit_major(proj)  # (T, 3H, B): W_ih x + b, then the gates r z n
    hh = np.empty((T, 3 * H, B), dtype=dt)  # W_hh h_{t-1} (halved r, z; + b_hn in the n part)
    hs = np.empty((T + 1, H, B), dtype=dt)
    hs[0] = state0[0].T
    b_hn = b_hh[2 * H :, None]  # (H, 1)
    tmp = np.empty((H, B), dtype=dt)
    # per-step views made once
    h, hhs = list(hs), list(hh)
    rz, n = list(acts[:, : 2 * H]), list(acts[:, 2 * H :])
    r, z = list(acts[:, :H]), list(acts[:, H : 2 * H])
    hrz, hn = list(hh[:, : 2 * H]), list(hh[:, 2 * H :])
    for t in range(T):
        np.dot(W_half, h[t], hhs[t])  # (3H, B) = W_hh h_{t-1}, r and z rows halved
        np.add(hn[t], b_hn, hn[t])  # W_hn h + b_hn: kept, r multiplies it
        np.add(rz[t], hrz[t], rz[t])
        np.tanh(rz[t], rz[t])  # r, z = σ(·) = ½ tanh(·/2) + ½
        np.multiply(rz[t], 0.5, rz[t])
        np.add(rz[t], 0.5, rz[t])
        np.multiply(r[t], hn[t], tmp)
        np.add(n[t], tmp, n[t])
        np.tanh(n[t], n[t])  # n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
        np.subtract(h[t], n[t], tmp)  # h_t = n + z ⊙ (h_{t-1} − n) = (1 − z) ⊙ n + z ⊙ h_{t-1}
        np.multiply(z[t], tmp, tmp)
        np.add(n[t], tmp, h[t + 1])
    return Layer(
        hs=_batch_major(hs), state=hs[-1].T[None].copy(), saved={"acts": acts, "hh": hh, "hs": hs}
    )


def gru_backward(layer: Layer, W_hh: np.ndarray, dh: np.ndarray, activation=None, trace=None):
    """BPTT through one GRU layer. dh: (T, B, H) loss gradient at each output h_t from above.
    Returns (d input pre-activations (T, B, 3H), d recurrent pre-activations W_hh h + b_hh
    (T, B, 3H), d state0 (1, B, H)). ``trace`` (T, B, H), when given, receives d loss / d h_t
    (its output + the future) of every step."""
    acts, hh, hs = layer.saved["acts"], layer.saved["hh"], layer.saved["hs"]
    T, B, H = dh.shape
    dt = acts.dtype
    dhT = _unit_major(dh)  # (T, H, B)
    r, z, n = acts[:, :H], acts[:, H : 2 * H], acts[:, 2 * H :]
    hn = hh[:, 2 * H :]  # W_hn h + b_hn
    # The parts that do not depend on the backward recurrence, for the whole window at once:
    A = (1.0 - z) * (1.0 - n * n)  # d n-pre-activation / d h_t
    Kz = (hs[:-1] - n) * z * (1.0 - z)  # d z-pre-activation / d h_t
    Kr = hn * r * (1.0 - r)  # d r-pre-activation / d n-pre-activation
    dhh = np.empty((T, 3 * H, B), dtype=dt)  # d (W_hh h + b_hh), gates r z n
    dproj = np.empty((T, 3 * H, B), dtype=dt)  # d (W_ih x + b_ih): r, z as above, n its own
    WhhT = np.ascontiguousarray(W_hh.T)  # (H, 3H)
    dhnext = np.zeros((H, B), dtype=dt)
    tmp = np.empty((H, B), dtype=dt)
    dhs, As, Kzs, Krs = list(dhT), list(A), list(Kz), list(Kr)
    rs, zs, dnps = list(r), list(z), list(dproj[:, 2 * H :])
    dr, dz, dn = list(dhh[:, :H]), list(dhh[:, H : 2 * H]), list(dhh[:, 2 * H :])
    dhhs = list(dhh)
    for t in reversed(range(T)):
        np.add(dhs[t], dhnext, dhs[t])  # into h_t: its output + the future
        np.multiply(dhs[t], As[t], dnps[t])  # n pre-activation
        np.multiply(dhs[t], Kzs[t], dz[t])  # z pre-activation
        np.multiply(dnps[t], Krs[t], dr[t])  # r pre-activation
        np.multiply(dnps[t], rs[t], dn[t])  # W_hn h + b_hn
        np.dot(WhhT, dhhs[t], dhnext)  # into h_{t-1} through the gates: (H, 3H) @ (3H, B)
        np.multiply(dhs[t], zs[t], tmp)  # ... and directly through z ⊙ h_{t-1}
        np.add(dhnext, tmp, dhnext)
    dproj[:, : 2 * H] = dhh[:, : 2 * H]
    if trace is not None:
        trace[...] = dhT.transpose(0, 2, 1)  # dhT now holds each step's whole d loss / d h_t
    return _batch_major(dproj), _batch_major(dhh), dhnext.T[None].copy()
