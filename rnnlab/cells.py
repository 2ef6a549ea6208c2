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


def _gate_inputs(W: np.ndarray, b: np.ndarray, rows: list, x: np.ndarray) -> np.ndarray:
    """The input pre-activations W x_t + b of a window, unit-major (T, G, B), with W's and b's
    rows arranged by ``_gate_rows(·, rows)``."""
    W, b = _gate_rows(W, rows), _gate_rows(b, rows)
    T, B = x.shape[:2]
    if B == 1 and x.dtype.kind in "iu":
        # One stream: gather the T columns of W, (G, T), and add b while transposing; 3-5x
        # faster than ``project``'s (V, G) table at this size.
        V = W.shape[1]
        if x.min() < 0 or x.max() >= V:
            raise IndexError(f"input symbols must be in [0, {V}); got {x.min()}..{x.max()}")
        acts = np.empty((T, W.shape[0], 1), dtype=W.dtype)
        np.add(np.take(W, x[:, 0], axis=1, mode="clip").T, b, out=acts[:, :, 0])
        return acts
    proj = np.empty((T, B, W.shape[0]), dtype=W.dtype)
    project(W, b, x, proj)
    return _unit_major(proj)


@dataclass
class Layer:
    """What one layer's backward pass needs from its forward pass."""

    hs: np.ndarray  # (T+1, B, H); hs[0] the initial h, hs[t+1] the output of step t
    state: np.ndarray  # (S, B, H) the final state (h, and c for the LSTM)
    saved: dict[str, np.ndarray] = field(default_factory=dict)  # cell-specific activations
    # where PyTorch's gate j sits among saved["acts"]'s (T, G·H, B) row blocks (None: in order)
    gate_order: tuple[int, ...] | None = None


def gate_block(layer: Layer, j: int, H: int) -> np.ndarray:
    """PyTorch's gate j (LSTM i f g o, GRU r z n) after its σ / tanh, as the forward pass kept
    it: a (T, H, B) view of ``layer.saved["acts"]`` (the LSTM keeps its gates in another order
    internally; read them through this)."""
    k = j if layer.gate_order is None else layer.gate_order[j]
    return layer.saved["acts"][:, k * H : (k + 1) * H]


# Inside a gated layer the arrays are unit-major, (T, G·H, B): each gate of a step is then one
# contiguous (H, B) block, one GEMM W_hh (G·H, H) @ h (H, B) gives every gate, and every
# elementwise call runs on contiguous memory (numpy's strided loops are 5-15x slower at B=32).
# The layer hands the engine batch-major (T, B, ·) arrays, transposed once per window.


def _unit_major(a: np.ndarray) -> np.ndarray:
    """(T, B, K) → a contiguous (T, K, B) copy."""
    return np.ascontiguousarray(a.transpose(0, 2, 1))


def _gate_rows(a: np.ndarray, blocks: list[tuple[int, int, float]], out=None) -> np.ndarray:
    """A copy of ``a`` (rows = gate units) made of the row blocks ``(lo, hi, scale)`` in that
    order, each times its scale: the σ gates' rows halved (σ(a) = ½ + ½ tanh(a/2)), and for the
    LSTM the gates reordered. Block copies and scalar products: a (G, 1) broadcast multiply
    costs ~4x as much. ``out``: where to write it (default: a new array)."""
    out = np.empty_like(a) if out is None else out
    at = 0
    for lo, hi, scale in blocks:
        if scale == 1.0:
            out[at : at + hi - lo] = a[lo:hi]
        else:
            np.multiply(a[lo:hi], scale, out=out[at : at + hi - lo])
        at += hi - lo
    return out


def _batch_major(a: np.ndarray) -> np.ndarray:
    """(T, K, B) → a contiguous (T, B, K) copy."""
    return np.ascontiguousarray(a.transpose(0, 2, 1))


# --- LSTM ---------------------------------------------------------------------------------------


# Inside a layer the LSTM's gates run in the order o, i, f, g (PyTorch's is i, f, g, o): then the
# σ gates (o, i, f) are one contiguous block, fixed up by two calls per step instead of four, and
# the gates whose gradient goes through c (i, f, g) are another. The rows are permuted once per
# window on the way in (weights) and out (the gate gradients); the engine sees PyTorch's order.
def _lstm_rows(H: int, sigma_scale: float) -> list[tuple[int, int, float]]:
    """Row blocks taking PyTorch's gate order i f g o to the internal o i f g."""
    return [(3 * H, 4 * H, sigma_scale), (0, 2 * H, sigma_scale), (2 * H, 3 * H, 1.0)]


def lstm_forward(W_ih, b_ih, W_hh, b_hh, x, state0, activation=None) -> Layer:
    """One LSTM layer over a window. x: (T, B) or (T, B, D); state0: (2, B, H) = (h0, c0)."""
    T, B = x.shape[:2]
    H = W_hh.shape[1]
    dt = W_hh.dtype
    # σ(a) = ½ + ½ tanh(a/2): with the rows of the σ gates (o, i, f) halved in advance, one
    # tanh per step gives every gate (numpy's float32 tanh is SIMD; exp + reciprocal cost 3x).
    rows = _lstm_rows(H, 0.5)
    # both biases add to every step's pre-activation: fold b_hh in once
    acts = _gate_inputs(W_ih, b_ih + b_hh, rows, x)  # (T, 4H, B), then the gates o i f g
    W_half = _gate_rows(W_hh, rows)
    hs = np.empty((T + 1, H, B), dtype=dt)
    cs = np.empty((T + 1, H, B), dtype=dt)
    tc = np.empty((T, H, B), dtype=dt)  # tanh(c_t), kept for the backward pass
    hs[0], cs[0] = state0[0].T, state0[1].T
    z = np.empty((4 * H, B), dtype=dt)  # this step's pre-activations
    ig = np.empty((H, B), dtype=dt)
    # per-step views made once: indexing inside the loop costs as much as the math at B=1
    a, h, c, tcs = list(acts), list(hs), list(cs), list(tc)
    o, i, f, g = (list(acts[:, k * H : (k + 1) * H]) for k in range(4))
    sig = list(acts[:, : 3 * H])
    for t in range(T):
        np.dot(W_half, h[t], z)  # (4H, B) = W_hh h_{t-1}, σ rows halved
        np.add(z, a[t], z)  # + W_ih x_t + b_ih + b_hh
        np.tanh(z, a[t])  # g = tanh(·); o, i, f: tanh(·/2) ...
        np.multiply(sig[t], 0.5, sig[t])  # ... → σ(·) = ½ tanh(·/2) + ½
        np.add(sig[t], 0.5, sig[t])
        np.multiply(f[t], c[t], c[t + 1])  # c_t = f ⊙ c_{t-1} + i ⊙ g
        np.multiply(i[t], g[t], ig)
        np.add(c[t + 1], ig, c[t + 1])
        np.tanh(c[t + 1], tcs[t])
        np.multiply(o[t], tcs[t], h[t + 1])  # h_t = o ⊙ tanh(c_t)
    state = np.stack([hs[-1].T, cs[-1].T])  # (2, B, H)
    return Layer(
        hs=_batch_major(hs),
        state=state,
        saved={"acts": acts, "hs": hs, "cs": cs, "tc": tc},
        gate_order=(1, 2, 3, 0),  # i f g o among the internal o i f g
    )


def lstm_backward(
    layer: Layer, W_hh: np.ndarray, dh: np.ndarray, activation=None, trace=None, c_trace=None
):
    """BPTT through one LSTM layer. dh: (T, B, H) loss gradient at each output h_t from above.
    Returns (d gates (T, B, 4H) — the same for the input and the recurrent pre-activations —
    that again, and d state0 (2, B, H)). ``trace`` (T, B, H), when given, receives d loss / d h_t
    (its output + the future, c_t held) of every step; ``c_trace`` d loss / d c_t (through h_t
    and c_{t+1})."""
    acts, cs, tc = layer.saved["acts"], layer.saved["cs"], layer.saved["tc"]
    T, B, H = dh.shape
    dt = acts.dtype
    dhT = _unit_major(dh)  # (T, H, B)
    o, i, f, g = (acts[:, k * H : (k + 1) * H] for k in range(4))  # (T, H, B) each
    # Everything that does not depend on the backward recurrence, for the whole window at once:
    # d gate pre-activation = (d h_t or d c_t) ⊙ K, with σ' = σ(1 − σ), tanh' = 1 − tanh².
    K = np.empty((T, 4 * H, B), dtype=dt)
    np.subtract(1.0, acts[:, : 3 * H], out=K[:, : 3 * H])  # σ' of o, i, f in one pass ...
    K[:, : 3 * H] *= acts[:, : 3 * H]
    K[:, :H] *= tc  # o: d h_t ⊙ tanh(c_t) ⊙ σ'
    K[:, H : 2 * H] *= g  # i: d c_t ⊙ g ⊙ σ'
    K[:, 2 * H : 3 * H] *= cs[:-1]  # f: d c_t ⊙ c_{t-1} ⊙ σ'
    Kg = np.multiply(g, g, out=K[:, 3 * H :])
    np.subtract(1.0, Kg, out=Kg)
    Kg *= i  # g: d c_t ⊙ i ⊙ tanh'
    o_dc = np.multiply(tc, tc)  # (T, H, B): d c_t / d h_t through h = o ⊙ tanh(c)
    np.subtract(1.0, o_dc, out=o_dc)
    o_dc *= o
    dG = np.empty((T, 4 * H, B), dtype=dt)  # d gate pre-activations, o i f g
    WhhT = np.ascontiguousarray(_gate_rows(W_hh, _lstm_rows(H, 1.0)).T)  # (H, 4H): o i f g
    dhnext = np.zeros((H, B), dtype=dt)  # gradient arriving at h_t from step t+1
    dcnext = np.zeros((H, B), dtype=dt)  # ... and at c_t
    dc = np.empty((H, B), dtype=dt)
    dcs = None if c_trace is None else np.empty((T, H, B), dtype=dt)  # each step's d c_t
    dhs, ods, fs, dGs = list(dhT), list(o_dc), list(f), list(dG)
    Kifg = list(K[:, H:].reshape(T, 3, H, B))
    dGifg = list(dG[:, H:].reshape(T, 3, H, B))
    Ko, dGo = list(K[:, :H]), list(dG[:, :H])
    for t in reversed(range(T)):
        np.add(dhs[t], dhnext, dhs[t])  # into h_t: its output + the future
        np.multiply(dhs[t], ods[t], dc)  # into c_t: through h_t ...
        np.add(dc, dcnext, dc)  # ... + through c_{t+1}
        if dcs is not None:
            dcs[t] = dc
        np.multiply(dc, Kifg[t], dGifg[t])  # (3, H, B): i, f, g pre-activations
        np.multiply(dhs[t], Ko[t], dGo[t])  # o pre-activation
        np.multiply(dc, fs[t], dcnext)  # into c_{t-1}
        np.dot(WhhT, dGs[t], dhnext)  # into h_{t-1}: (H, 4H) @ (4H, B)
    if trace is not None:
        trace[...] = dhT.transpose(0, 2, 1)  # dhT now holds each step's whole d loss / d h_t
    if dcs is not None:
        c_trace[...] = dcs.transpose(0, 2, 1)
    # back to PyTorch's order i f g o while transposing to (T, B, 4H): the same one pass
    dgates = np.empty((T, B, 4 * H), dtype=dt)
    dgates[:, :, : 3 * H] = dG[:, H:].transpose(0, 2, 1)
    dgates[:, :, 3 * H :] = dG[:, :H].transpose(0, 2, 1)
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
    rows = [(0, 2 * H, 0.5), (2 * H, 3 * H, 1.0)]
    acts = _gate_inputs(W_ih, b, rows, x)  # (T, 3H, B): W_ih x + b, then the gates r z n
    # b_hn sits inside r ⊙ (W_hn h + b_hn): it rides in the recurrent GEMM as one more column
    # of W_hh against a constant 1 below each h (one call per step fewer)
    W_half = np.zeros((3 * H, H + 1), dtype=dt)
    _gate_rows(W_hh, rows, out=W_half[:, :H])
    W_half[2 * H :, H] = b_hh[2 * H :]
    hh = np.empty((T, 3 * H, B), dtype=dt)  # W_hh h_{t-1} (halved r, z; + b_hn in the n part)
    hs1 = np.empty((T + 1, H + 1, B), dtype=dt)  # every h_t with a row of ones below
    hs1[:, H] = 1.0
    hs = hs1[:, :H]  # (T+1, H, B) views
    hs[0] = state0[0].T
    hmn = np.empty((T, H, B), dtype=dt)  # h_{t-1} − n_t, kept: the backward pass needs it
    tmp = np.empty((H, B), dtype=dt)
    # per-step views made once
    h1, h, hhs, hmns = list(hs1), list(hs), list(hh), list(hmn)
    rz, n = list(acts[:, : 2 * H]), list(acts[:, 2 * H :])
    r, z = list(acts[:, :H]), list(acts[:, H : 2 * H])
    hrz, hn = list(hh[:, : 2 * H]), list(hh[:, 2 * H :])
    for t in range(T):
        np.dot(W_half, h1[t], hhs[t])  # (3H, B) = W_hh h_{t-1} (r, z halved) + (0, 0, b_hn)
        np.add(rz[t], hrz[t], rz[t])
        np.tanh(rz[t], rz[t])  # r, z = σ(·) = ½ tanh(·/2) + ½
        np.multiply(rz[t], 0.5, rz[t])
        np.add(rz[t], 0.5, rz[t])
        np.multiply(r[t], hn[t], tmp)
        np.add(n[t], tmp, n[t])
        np.tanh(n[t], n[t])  # n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
        np.subtract(h[t], n[t], hmns[t])  # h_t = n + z ⊙ (h_{t-1} − n) = (1 − z) n + z h_{t-1}
        np.multiply(z[t], hmns[t], tmp)
        np.add(n[t], tmp, h[t + 1])
    return Layer(
        hs=_batch_major(hs), state=hs[-1].T[None].copy(), saved={"acts": acts, "hh": hh, "hmn": hmn}
    )


def gru_backward(layer: Layer, W_hh: np.ndarray, dh: np.ndarray, activation=None, trace=None):
    """BPTT through one GRU layer. dh: (T, B, H) loss gradient at each output h_t from above.
    Returns (d input pre-activations (T, B, 3H), d recurrent pre-activations W_hh h + b_hh
    (T, B, 3H), d state0 (1, B, H)). ``trace`` (T, B, H), when given, receives d loss / d h_t
    (its output + the future) of every step."""
    acts, hh, hmn = layer.saved["acts"], layer.saved["hh"], layer.saved["hmn"]
    T, B, H = dh.shape
    dt = acts.dtype
    dhT = _unit_major(dh)  # (T, H, B)
    r, z, n = acts[:, :H], acts[:, H : 2 * H], acts[:, 2 * H :]
    hn = hh[:, 2 * H :]  # W_hn h + b_hn
    # The parts that do not depend on the backward recurrence, for the whole window at once:
    # (in place, one temporary each: at B=32 every extra pass over (T, H, B) costs ~30 µs)
    A = np.multiply(n, n)
    np.subtract(1.0, A, out=A)
    A *= 1.0 - z  # d n-pre-activation / d h_t = (1 − z)(1 − n²)
    zz = np.subtract(1.0, z)
    zz *= z  # σ'(z) = z (1 − z)
    Kz = np.multiply(hmn, zz, out=zz)  # d z-pre-activation / d h_t: (h_{t-1} − n) σ'(z)
    Kr = np.subtract(1.0, r)
    Kr *= r
    Kr *= hn  # d r-pre-activation / d n-pre-activation
    dhh = np.empty((T, 3 * H, B), dtype=dt)  # d (W_hh h + b_hh), gates r z n
    dnp = np.empty((T, H, B), dtype=dt)  # d (W_in x + b_in); its r, z parts are dhh's
    WhhT = np.ascontiguousarray(W_hh.T)  # (H, 3H)
    dhnext = np.zeros((H, B), dtype=dt)
    tmp = np.empty((H, B), dtype=dt)
    dhs, As, Kzs, Krs = list(dhT), list(A), list(Kz), list(Kr)
    rs, zs, dnps = list(r), list(z), list(dnp)
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
    if trace is not None:
        trace[...] = dhT.transpose(0, 2, 1)  # dhT now holds each step's whole d loss / d h_t
    # The input and recurrent gradients share their r and z parts: transpose dhh once, copy it
    # (contiguous, cheap) and transpose only the n part again (a transposing copy costs ~10x a
    # contiguous one at B=32).
    drec = _batch_major(dhh)  # (T, B, 3H)
    dproj = drec.copy()
    dproj[:, :, 2 * H :] = dnp.transpose(0, 2, 1)
    return dproj, drec, dhnext.T[None].copy()
