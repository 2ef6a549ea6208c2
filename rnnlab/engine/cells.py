"""The recurrent cells in numpy, one layer at a time: the vanilla, GRU and LSTM recurrences and
their BPTT — the reference every compiled kernel (``rnnlab.engine.fused``) is tested against.

The vanilla cell is min-char-rnn's, ``h' = act(W_xh x_t + W_hh h + b_h)`` with act tanh or σ. The
gated cells' equations, gate orders and weight layouts are PyTorch's (``torch.nn.GRU`` /
``torch.nn.LSTM``), so exported weights mean the same thing there. For a layer with input x_t (D,)
and state h (H,):

    LSTM  gates i, f, g, o:  [i f g o] = W_ih x_t + b_ih + W_hh h + b_hh      W_ih (4H, D)
          i, f, o = σ(·), g = tanh(·);  c' = f ⊙ c + i ⊙ g;  h' = o ⊙ tanh(c')
    GRU   gates r, z, n:     r, z = σ(W_i· x_t + b_i· + W_h· h + b_h·)   for r and z,   W_ih (3H, D)
          n = tanh(W_in x_t + b_in + r ⊙ (W_hn h + b_hn));  h' = (1 − z) ⊙ n + z ⊙ h

The engine (``rnnlab.engine.rnn``) owns the skeleton every cell shares: the input projection of a
whole window at once (a column gather for symbols, one GEMM for dense inputs), the stacking of
layers, dropout, the output head and every weight gradient that is a big GEMM. A cell here only runs
the sequential part: given the projected inputs ``W_ih x + b_ih`` of every step, the forward loop;
given the loss gradient arriving at each output h_t, the backward loop, returning the gradients
w.r.t. the projected inputs, w.r.t. the recurrent pre-activations ``W_hh h + b_hh`` (from which the
engine makes dW_hh and db_hh), and w.r.t. the initial state. Arrays are time-major (T, B, ·);
per-gate arrays (T, K, B, H), K gates (see ``_steps``).

Nothing here does I/O, reads config or keeps state between calls. Not here: the compiled kernels
(``rnnlab.engine.fused``), the skeleton and the heads (``rnnlab.engine.rnn``).
"""

from __future__ import annotations

from collections.abc import Callable
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


def _tanh_grad(h: np.ndarray) -> np.ndarray:
    """tanh'(z) written through h = tanh(z): 1 - h²."""
    d = np.multiply(h, h)
    return np.subtract(1.0, d, out=d)  # in place: one temporary, not two


def _sigmoid_grad(h: np.ndarray) -> np.ndarray:
    """sigmoid'(z) written through h = sigmoid(z): h (1 - h)."""
    d = np.subtract(1.0, h)
    return np.multiply(d, h, out=d)


def _relu(z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return np.maximum(z, 0.0, out=out)


def _relu_grad(h: np.ndarray) -> np.ndarray:
    """relu'(z) written through h = relu(z): 1 where h > 0."""
    return (h > 0.0).astype(h.dtype)


# the vanilla cell's activation -> (function(z, out), derivative written in terms of the output h)
ACTIVATIONS: dict[str, tuple[Callable, Callable]] = {
    "tanh": (np.tanh, _tanh_grad),
    "sigmoid": (sigmoid, _sigmoid_grad),
}
_VANILLA_ACTIVATIONS = ACTIVATIONS | {"relu": (_relu, _relu_grad)}  # relu: the IRNN's only


@dataclass
class Layer:
    """What one layer's backward pass needs from its forward pass."""

    hs: np.ndarray  # (T+1, B, H); hs[0] the initial h, hs[t+1] the output of step t
    state: np.ndarray  # (S, B, H) the final state (h, and c for the LSTM)
    saved: dict[str, np.ndarray] = field(default_factory=dict)  # cell-specific activations
    # where PyTorch's gate j sits among saved["acts"]'s (T, K, B, H) gates (None: in order)
    gate_order: tuple[int, ...] | None = None


def gate_block(layer: Layer, j: int, H: int) -> np.ndarray:
    """PyTorch's gate j (LSTM i f g o, GRU r z n) after its σ / tanh, as the forward pass kept
    it: a (T, H, B) view of ``layer.saved["acts"]`` (the LSTM keeps its gates in another order
    internally; read them through this)."""
    k = j if layer.gate_order is None else layer.gate_order[j]
    return layer.saved["acts"][:, k].transpose(0, 2, 1)  # (T, K, B, H), see ``_steps``


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


# A gated layer keeps a window's per-gate arrays as (T, K, B, H) — step, gate, stream, unit: each
# step's gate is one contiguous (B, H) block, the state h_t (B, H) is the engine's own layout
# (no transposes in or out), and every elementwise call runs on contiguous memory. In memory
# the array is gate-major (K, T, B, H) when B > 1: one batched matmul computes every gate's
# (B, H) @ (H, H) product into it, and the engine reads each gate's (T·B, H) rows for its
# weight gradients as one GEMM per gate. At B = 1 it is step-major (T, K, 1, H): each step's gates
# are then one (K·H,) vector and one GEMV computes them all, and the window is (T, K·H) rows,
# the engine's batch-major layout. Either way ``a[t]`` is step t's (K, B, H) and ``a[:, k]``
# gate k's (T, B, H).


def backward_buffer(dh: np.ndarray, trace: np.ndarray | None) -> np.ndarray:
    """The (T, B, H) array a gated backward pass adds each step's future gradient into:
    ``trace`` when given (a copy of dh, which then holds each step's whole d loss / d h_t),
    else dh itself (overwritten)."""
    if trace is None:
        return dh
    trace[...] = dh
    return trace


def _steps(T: int, K: int, B: int, H: int, dt) -> np.ndarray:
    """An uninitialised (T, K, B, H) array, gate-major in memory when B > 1 (see above)."""
    if B == 1:
        return np.empty((T, K, 1, H), dtype=dt)
    return np.empty((K, T, B, H), dtype=dt).transpose(1, 0, 2, 3)


def _step_inputs(W: np.ndarray, b: np.ndarray, rows: list, x: np.ndarray, K: int) -> np.ndarray:
    """The input pre-activations W x_t + b of a window as (T, K, B, H) (``_steps``), with W's
    and b's rows arranged by ``_gate_rows(·, rows)``. x: (T, B) int symbols, read as columns
    of W, or (T, B, D) floats (one GEMM)."""
    W, b = _gate_rows(W, rows), _gate_rows(b, rows)
    T, B = x.shape[:2]
    G = W.shape[0]
    H = G // K
    acts = _steps(T, K, B, H, W.dtype)
    if x.dtype.kind not in "iu":  # dense inputs: one GEMM, then each gate's block in place
        proj = np.matmul(x.reshape(T * B, -1).astype(W.dtype, copy=False), W.T)  # (N, G)
        proj += b
        acts[...] = proj.reshape(T, B, K, H).transpose(0, 2, 1, 3)
        return acts
    V = W.shape[1]
    if x.min() < 0 or x.max() >= V:
        raise IndexError(f"input symbols must be in [0, {V}); got {x.min()}..{x.max()}")
    if B == 1:
        # One stream: gather the T columns of W, (G, T), and add b while transposing; 3-5x
        # faster than a table at this size.
        np.add(np.take(W, x[:, 0], axis=1, mode="clip").T, b, out=acts.reshape(T, G))
        return acts
    # The table (K, V, H): row (k, s) is gate k of W x + b for the one-hot x of s; the window
    # is one row gather into the gate-major memory (K, T, B, H). mode="clip" only because the
    # range is checked above: the default mode copies through a buffer.
    table = np.empty((K, V, H), dtype=W.dtype)
    np.add(W.reshape(K, H, V).transpose(0, 2, 1), b.reshape(K, 1, H), out=table)
    at = x + (np.arange(K) * V)[:, None, None]  # (K, T, B) rows of the (K·V, H) table
    np.take(table.reshape(K * V, H), at, axis=0, out=acts.transpose(1, 0, 2, 3), mode="clip")
    return acts


def _recurrent_views(W: np.ndarray, hs: np.ndarray, out: list) -> tuple:
    """The product that writes W h_{t-1} into out[t] and, per step t, its arguments: W (K·H, H),
    hs (T+1, B, H), out T arrays (K, B, H), contiguous at B = 1. At B = 1 one GEMV
    (K·H, H) @ (H,) by ``np.dot`` (less overhead per call than ``np.matmul``); else a batched
    (B, H) @ (K, H, H) over the gates."""
    T, (K, B, H) = len(out), out[0].shape
    if B == 1:
        return np.dot, [(W, hs[t, 0], out[t].reshape(K * H)) for t in range(T)]
    WT = np.ascontiguousarray(W.reshape(K, H, H).transpose(0, 2, 1))  # (K, H, H): W_k^T
    return np.matmul, [(hs[t], WT, out[t]) for t in range(T)]


def _recurrent_back_views(W: np.ndarray, dgates: np.ndarray, dh: np.ndarray) -> tuple:
    """The product taking the gate gradients dgates[t] (K, B, H) back through W (K·H, H) into
    h_{t-1}, per step t its arguments, and the per-gate parts it writes (None when it writes
    their sum into dh (B, H) itself: at B = 1, one GEMV (H, K·H) @ (K·H,))."""
    T, K, B, H = dgates.shape
    if B == 1:
        WT = np.ascontiguousarray(W.T)  # (H, K·H): contiguous rows make the GEMV faster
        return np.dot, [(WT, dgates[t].reshape(K * H), dh[0]) for t in range(T)], None
    parts = np.empty((K, B, H), dtype=dh.dtype)
    W3 = W.reshape(K, H, H)
    return np.matmul, [(dgates[t], W3, parts) for t in range(T)], parts


# --- vanilla -------------------------------------------------------------------------------------


def rnn_forward(Wxh, bh, Whh, b_rec, x, state0, activation) -> Layer:
    """One vanilla layer over a window: h_t = act(Wxh x_t + Whh h_{t-1} + bh). x: (T, B) or
    (T, B, D); state0: (1, B, H); ``b_rec`` unused (the vanilla cell has one bias). ``activation``
    tanh or sigmoid, or relu for the IRNN."""
    act, _ = _VANILLA_ACTIVATIONS[activation]
    T, B = x.shape[:2]
    hs = np.empty((T + 1, B, Whh.shape[0]), dtype=Wxh.dtype)
    hs[0] = state0[0]
    # Input projections plus bh for every step at once, written into hs[1:]; the loop then adds
    # the recurrent term in place.
    project(Wxh, bh, x, hs[1:])
    WhhT = np.ascontiguousarray(Whh.T)  # contiguous rows make each step's small GEMM faster
    z = np.empty_like(hs[0])  # (B, H) pre-activation, reused every step
    h = list(hs)  # views made once: indexing inside the loop costs as much as the math at B=1
    for t in range(T):
        # The sequential part: one (B, H) @ (H, H) product and the nonlinearity per step,
        # three numpy calls writing into existing buffers (positional ``out``: fewer checks).
        np.dot(h[t], WhhT, z)
        np.add(z, h[t + 1], z)  # h[t+1] holds Wxh x_t + bh until overwritten
        act(z, h[t + 1])
    return Layer(hs=hs, state=hs[-1][None])


def rnn_backward(layer: Layer, Whh, dz, activation, trace=None):
    """BPTT through one vanilla layer. dz: (T, B, H) gradient at each output h_t from above,
    turned in place into d loss / d z_t. Returns (dz, dz, dh0 (1, B, H)). ``trace`` (T, B, H),
    when given, receives d loss / d h_t (its output + the future) of every step."""
    _, dact = _VANILLA_ACTIVATIONS[activation]
    hs = layer.hs
    T, B, H = dz.shape
    dhdz = dact(hs[1:])  # (T, B, H): act'(z_t) written through h_t
    dhnext = np.zeros((B, H), dtype=hs.dtype)  # gradient arriving at h_t from step t+1
    dzs, dhdzs = list(dz), list(dhdz)  # per-step views, made once
    dhs = dzs if trace is None else list(trace)  # without a trace: in place, as before
    for t in reversed(range(T)):
        np.add(dzs[t], dhnext, dhs[t])  # backprop into h_t: its output + the future
        np.multiply(dhs[t], dhdzs[t], dzs[t])  # through the nonlinearity: d loss / d z_t
        np.dot(dzs[t], Whh, dhnext)  # into h_{t-1}
    return dz, dz, dhnext[None]


# --- LSTM ---------------------------------------------------------------------------------------


# Inside a layer the LSTM's gates run in the order o, i, f, g (PyTorch's is i, f, g, o): then the
# σ gates (o, i, f) are one contiguous block, fixed up by two calls per step instead of four, and
# the gates whose gradient goes through c (i, f, g) are another. The weights' rows are permuted
# once per window on the way in; the gate gradients are written in PyTorch's order (i f g is a
# block there too), which the engine and W_hh's rows use.
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
    acts = _step_inputs(W_ih, b_ih + b_hh, rows, x, 4)  # (T, 4, B, H), then the gates o i f g
    W = _gate_rows(W_hh, rows)  # (4H, H), σ rows halved, o i f g
    hs = np.empty((T + 1, B, H), dtype=dt)
    cs = np.empty((T + 1, B, H), dtype=dt)
    tc = np.empty((T, B, H), dtype=dt)  # tanh(c_t), kept for the backward pass
    hs[0], cs[0] = state0[0], state0[1]
    z = np.empty((4, B, H), dtype=dt)  # this step's W_hh h_{t-1}
    ig = np.empty((B, H), dtype=dt)
    half = np.array(0.5, dtype=dt)  # a 0-d array: a Python float costs a conversion per call
    # per-step views made once: indexing inside the loop costs as much as the math at B=1
    a, h, c, tcs = list(acts), list(hs), list(cs), list(tc)
    o, i, f, g = (list(acts[:, k]) for k in range(4))
    sig = list(acts[:, :3])
    product, mm = _recurrent_views(W, hs, [z] * T)
    for t in range(T):
        product(*mm[t])  # (4, B, H) = W_hh h_{t-1}, σ rows halved
        np.add(z, a[t], z)  # + W_ih x_t + b_ih + b_hh
        np.tanh(z, a[t])  # g = tanh(·); o, i, f: tanh(·/2) ...
        np.multiply(sig[t], half, sig[t])  # ... → σ(·) = ½ tanh(·/2) + ½
        np.add(sig[t], half, sig[t])
        np.multiply(f[t], c[t], c[t + 1])  # c_t = f ⊙ c_{t-1} + i ⊙ g
        np.multiply(i[t], g[t], ig)
        np.add(c[t + 1], ig, c[t + 1])
        np.tanh(c[t + 1], tcs[t])
        np.multiply(o[t], tcs[t], h[t + 1])  # h_t = o ⊙ tanh(c_t)
    return Layer(
        hs=hs,
        state=np.stack([hs[-1], cs[-1]]),  # (2, B, H)
        saved={"acts": acts, "cs": cs, "tc": tc},
        gate_order=(1, 2, 3, 0),  # i f g o among the internal o i f g
    )


def lstm_backward(
    layer: Layer, W_hh: np.ndarray, dh: np.ndarray, activation=None, trace=None, c_trace=None
):
    """BPTT through one LSTM layer. dh: (T, B, H) loss gradient at each output h_t from above
    (overwritten). Returns (d gates (T, 4, B, H) in PyTorch's order i f g o — the same for the
    input and the recurrent pre-activations — that again, and d state0 (2, B, H)). ``trace``
    (T, B, H), when given, receives d loss / d h_t (its output + the future, c_t held) of
    every step; ``c_trace`` (T, B, H) d loss / d c_t (through h_t and c_{t+1})."""
    acts, cs, tc = layer.saved["acts"], layer.saved["cs"], layer.saved["tc"]
    T, B, H = dh.shape
    dt = acts.dtype
    dh = backward_buffer(dh, trace)
    o, i, f, g = (acts[:, k] for k in range(4))  # (T, B, H) each
    # Everything that does not depend on the backward recurrence, for the whole window at once:
    # d gate pre-activation = (d h_t or d c_t) ⊙ K, with σ' = σ(1 − σ), tanh' = 1 − tanh².
    K = _steps(T, 4, B, H, dt)  # o i f g, as acts
    np.subtract(1.0, acts[:, :3], out=K[:, :3])  # σ' of o, i, f in one pass ...
    K[:, :3] *= acts[:, :3]
    K[:, 0] *= tc  # o: d h_t ⊙ tanh(c_t) ⊙ σ'
    K[:, 1] *= g  # i: d c_t ⊙ g ⊙ σ'
    K[:, 2] *= cs[:-1]  # f: d c_t ⊙ c_{t-1} ⊙ σ'
    Kg = np.multiply(g, g, out=K[:, 3])
    np.subtract(1.0, Kg, out=Kg)
    Kg *= i  # g: d c_t ⊙ i ⊙ tanh'
    o_dc = np.multiply(tc, tc)  # (T, B, H): d c_t / d h_t through h = o ⊙ tanh(c)
    np.subtract(1.0, o_dc, out=o_dc)
    o_dc *= o
    # d gate pre-activations in PyTorch's order i f g o (what the engine and W_hh's rows use):
    # i f g is then one block, as in K, and o the last
    dG = _steps(T, 4, B, H, dt)
    dhnext = np.zeros((B, H), dtype=dt)  # gradient arriving at h_t from step t+1
    dcnext = np.zeros((B, H), dtype=dt)  # ... and at c_t
    dc = np.empty((B, H), dtype=dt)
    dhs, ods, fs = list(dh), list(o_dc), list(f)
    Kifg, Ko = list(K[:, 1:]), list(K[:, 0])
    dGifg, dGo = list(dG[:, :3]), list(dG[:, 3])
    product, mm, parts = _recurrent_back_views(W_hh, dG, dhnext)
    for t in reversed(range(T)):
        np.add(dhs[t], dhnext, dhs[t])  # into h_t: its output + the future
        np.multiply(dhs[t], ods[t], dc)  # into c_t: through h_t ...
        np.add(dc, dcnext, dc)  # ... + through c_{t+1}
        if c_trace is not None:
            c_trace[t] = dc
        np.multiply(dc, Kifg[t], dGifg[t])  # (3, B, H): i, f, g pre-activations
        np.multiply(dhs[t], Ko[t], dGo[t])  # o pre-activation
        np.multiply(dc, fs[t], dcnext)  # into c_{t-1}
        product(*mm[t])  # into h_{t-1}: Σ_gates (B, H) @ (H, H)
        if parts is not None:  # B > 1: the gates' products, one per gate, summed
            np.add(parts[0], parts[1], dhnext)
            np.add(dhnext, parts[2], dhnext)
            np.add(dhnext, parts[3], dhnext)
    return dG, dG, np.stack([dhnext, dcnext])


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
    acts = _step_inputs(W_ih, b, rows, x, 3)  # (T, 3, B, H): W_ih x + b, then the gates r z n
    W = _gate_rows(W_hh, rows)  # (3H, H), r and z rows halved
    b_hn = np.broadcast_to(b_hh[2 * H :], (B, H)).copy()  # (B, H): a broadcast add is slower
    hh = _steps(T, 3, B, H, dt)  # (T, 3, B, H) W_hh h_{t-1} (halved r, z; + b_hn in the n part)
    hs = np.empty((T + 1, B, H), dtype=dt)
    hs[0] = state0[0]
    hmn = np.empty((T, B, H), dtype=dt)  # h_{t-1} − n_t, kept: the backward pass needs it
    tmp = np.empty((B, H), dtype=dt)
    half = np.array(0.5, dtype=dt)  # a 0-d array: a Python float costs a conversion per call
    # per-step views made once: indexing inside the loop costs as much as the math at B=1
    h, hmns = list(hs), list(hmn)
    product, mm = _recurrent_views(W, hs, list(hh))
    rz, n = list(acts[:, :2]), list(acts[:, 2])
    r, z = list(acts[:, 0]), list(acts[:, 1])
    hrz, hn = list(hh[:, :2]), list(hh[:, 2])
    for t in range(T):
        product(*mm[t])  # (3, B, H) = W_hh h_{t-1}, r and z rows halved
        np.add(rz[t], hrz[t], rz[t])
        np.tanh(rz[t], rz[t])  # r, z = σ(·) = ½ tanh(·/2) + ½
        np.multiply(rz[t], half, rz[t])
        np.add(rz[t], half, rz[t])
        np.add(hn[t], b_hn, hn[t])  # W_hn h + b_hn
        np.multiply(r[t], hn[t], tmp)
        np.add(n[t], tmp, n[t])
        np.tanh(n[t], n[t])  # n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
        np.subtract(h[t], n[t], hmns[t])  # h_t = n + z ⊙ (h_{t-1} − n) = (1 − z) n + z h_{t-1}
        np.multiply(z[t], hmns[t], tmp)
        np.add(n[t], tmp, h[t + 1])
    return Layer(hs=hs, state=hs[-1][None].copy(), saved={"acts": acts, "hh": hh, "hmn": hmn})


def gru_backward(layer: Layer, W_hh: np.ndarray, dh: np.ndarray, activation=None, trace=None):
    """BPTT through one GRU layer. dh: (T, B, H) loss gradient at each output h_t from above
    (overwritten). Returns (d input pre-activations, d recurrent pre-activations W_hh h + b_hh,
    both (T, 3, B, H) by gate r z n; d state0 (1, B, H)). ``trace`` (T, B, H), when given,
    receives d loss / d h_t (its output + the future) of every step."""
    acts, hh, hmn = layer.saved["acts"], layer.saved["hh"], layer.saved["hmn"]
    T, B, H = dh.shape
    dt = acts.dtype
    dh = backward_buffer(dh, trace)
    r, z, n = acts[:, 0], acts[:, 1], acts[:, 2]  # (T, B, H) each
    hn = hh[:, 2]  # W_hn h + b_hn
    # The parts that do not depend on the backward recurrence, for the whole window at once
    # (in place, few temporaries: at B=32 every extra pass over (T, B, H) costs ~10-30 µs):
    A = np.multiply(n, n)
    np.subtract(1.0, A, out=A)
    omz = np.subtract(1.0, z)
    A *= omz  # d n-pre-activation / d h_t = (1 − z)(1 − n²)
    omz *= z  # σ'(z) = z (1 − z)
    Kz = np.multiply(omz, hmn, out=omz)  # d z-pre-activation / d h_t: (h_{t-1} − n) σ'(z)
    Kr = np.subtract(1.0, r)
    Kr *= r
    Kr *= hn  # d r-pre-activation / d n-pre-activation
    drec = _steps(T, 3, B, H, dt)  # d (W_hh h + b_hh), gates r z n
    dproj = _steps(T, 3, B, H, dt)  # d (W_ih x + b_ih): r and z as drec's, n its own
    dhnext = np.zeros((B, H), dtype=dt)
    tmp = np.empty((B, H), dtype=dt)
    dhs, As, Kzs, Krs = list(dh), list(A), list(Kz), list(Kr)
    rs, zs = list(r), list(z)
    dr, dz, dn, dnp = list(drec[:, 0]), list(drec[:, 1]), list(drec[:, 2]), list(dproj[:, 2])
    product, mm, parts = _recurrent_back_views(W_hh, drec, dhnext)
    for t in reversed(range(T)):
        np.add(dhs[t], dhnext, dhs[t])  # into h_t: its output + the future
        np.multiply(dhs[t], As[t], dnp[t])  # n pre-activation
        np.multiply(dhs[t], Kzs[t], dz[t])  # z pre-activation
        np.multiply(dnp[t], Krs[t], dr[t])  # r pre-activation
        np.multiply(dnp[t], rs[t], dn[t])  # W_hn h + b_hn
        product(*mm[t])  # into h_{t-1} through the gates: Σ_gates (B, H) @ (H, H)
        if parts is not None:  # B > 1: the gates' products, one per gate, summed
            np.add(parts[0], parts[1], dhnext)
            np.add(dhnext, parts[2], dhnext)
        np.multiply(dhs[t], zs[t], tmp)  # ... and directly through z ⊙ h_{t-1}
        np.add(dhnext, tmp, dhnext)
    dproj[:, :2] = drec[:, :2]  # the input and recurrent gradients share their r and z parts
    return dproj, drec, dhnext[None]
