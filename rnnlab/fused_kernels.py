"""The numba kernels of ``rnnlab.fused``: one compiled loop per window for a gated layer's
forward pass and one for its backward pass, at B > 1.

Each kernel runs the T steps of a window itself: the step's recurrent product by ``np.dot``
(numba calls SciPy's BLAS, ``scipy.linalg.cython_blas``) into a preallocated (B, K·H) buffer,
then every elementwise op of the step in one loop over (B, H), writing the arrays the backward
pass and the engine need. The numpy cells (``rnnlab.cells``) spend ~450-500 small numpy calls
per window on the same work, half of each call being fixed overhead; here a step is one BLAS
call and one loop.

Per-gate arrays are batch-major (T, B, K·H), C-contiguous: step t's gates ``a[t]`` are one
(B, K·H) block, which is what the step's product writes (forward) and reads (backward), and a
window's ``a.reshape(T·B, K·H)`` is what the engine's weight-gradient GEMMs read. The input
pre-activations are read as rows of a table, ``table[rows[t, b]]``: for symbols the (V, K·H)
table W_ih^T + b and the symbols themselves (the gather happens inside the step loop, no
window-wide pass), for dense inputs their (T·B, K·H) projections and the row numbers. The σ
gates' rows of the weights and inputs come halved (σ(a) = ½ tanh(a/2) + ½, as the numpy
cells), so every gate is one tanh.

Each step's elementwise work is one call of a row function per stream, on 1-D views (B calls
per step): written inline in the step loop over (B, H), LLVM vectorized the same arithmetic
4-6x less well (measured: a GRU window's elementwise 670 µs inline, 180 µs as row calls).

tanh: exact (libm's ``math.tanh``) in float64, so float64 results stay within a few ulp of the
numpy cells; in float32 a rational approximation (``fast_tanh``) that LLVM vectorizes, where
the scalar libm call does not (measured: a GRU step's elementwise 6 µs against 43-172 µs).

This module imports numba: ``rnnlab.fused`` imports it only when a gated layer first runs at
B > 1. Compiled code is cached on disk (``cache=True``, under ``__pycache__``).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba.extending import overload

_JIT = {"cache": True, "fastmath": True, "error_model": "numpy", "nogil": True}
_TANH_CLAMP = 7.90531110763549805  # beyond it float32 tanh(x) rounds to ±1

# Eigen's float32 tanh (``ptanh_float``): an odd polynomial of degree 13 over an even one of
# degree 6, on x clamped to ±7.9053; coefficients from highest to lowest power of x².
_TANH_P = (
    -2.76076847742355e-16,
    2.00018790482477e-13,
    -8.60467152213735e-11,
    5.12229709037114e-08,
    1.48572235717979e-05,
    6.37261928875436e-04,
    4.89352455891786e-03,
)
_TANH_Q = (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03)


def fast_tanh(x):
    """tanh(x) in the kernels: exact in float64, the rational approximation in float32 (a
    stub for numba; its implementations are the overloads below)."""
    raise NotImplementedError("fast_tanh runs only inside numba-compiled code")


def _ptanh32(x):
    f32 = np.float32
    x = min(max(x, f32(-_TANH_CLAMP)), f32(_TANH_CLAMP))
    x2 = x * x
    p = f32(_TANH_P[0])
    p = p * x2 + f32(_TANH_P[1])
    p = p * x2 + f32(_TANH_P[2])
    p = p * x2 + f32(_TANH_P[3])
    p = p * x2 + f32(_TANH_P[4])
    p = p * x2 + f32(_TANH_P[5])
    p = p * x2 + f32(_TANH_P[6])
    p = p * x
    q = f32(_TANH_Q[0])
    q = q * x2 + f32(_TANH_Q[1])
    q = q * x2 + f32(_TANH_Q[2])
    q = q * x2 + f32(_TANH_Q[3])
    return p / q


def _tanh64(x):
    return math.tanh(x)


@overload(fast_tanh, inline="always", jit_options={"fastmath": True})
def _fast_tanh_impl(x):
    if isinstance(x, numba.types.Float) and x.bitwidth == 32:
        return _ptanh32
    return _tanh64


@numba.njit(**_JIT)
def tanh_array(x, out):
    """out = fast_tanh(x), elementwise over 1-D arrays (for tests of the approximation)."""
    for i in range(x.shape[0]):
        out[i] = fast_tanh(x[i])


# --- GRU ----------------------------------------------------------------------------------------


@numba.njit(**_JIT)
def _gru_forward_row(x, g, b_hn, h_prev, gates, hn, h):
    """One stream's step: x (3H,) W_ih x + b, g (3H,) W_hh h_{t-1} (r, z halved), b_hn (H,),
    h_prev (H,) → gates (3H,) r z n, hn (H,) W_hn h_{t-1} + b_hn, h (H,)."""
    H = h.shape[0]
    half = h.dtype.type(0.5)
    for j in range(H):
        r = half * fast_tanh(x[j] + g[j]) + half  # σ = ½ tanh(·/2) + ½
        z = half * fast_tanh(x[H + j] + g[H + j]) + half
        hn_ = g[2 * H + j] + b_hn[j]
        n = fast_tanh(x[2 * H + j] + r * hn_)
        gates[j] = r
        gates[H + j] = z
        gates[2 * H + j] = n
        hn[j] = hn_
        h[j] = n + z * (h_prev[j] - n)  # (1 − z) n + z h_{t-1}


@numba.njit(**_JIT)
def gru_forward(table, rows, WT, b_hn, hs, acts, hn, g):
    """table (R, 3H) input pre-activations W_ih x + b (r, z columns halved), step t of stream
    b reading row rows[t, b] (T, B); WT (H, 3H): W_hh^T, r and z columns halved; b_hn (H,);
    hs (T+1, B, H) with hs[0] set, gets every h_t; acts (T, B, 3H) gets the gates r z n;
    hn (T, B, H) gets W_hn h_{t-1} + b_hn; g (B, 3H) scratch."""
    T, B, _ = hn.shape
    for t in range(T):
        np.dot(hs[t], WT, g)  # (B, 3H) = W_hh h_{t-1}, r and z halved
        for b in range(B):
            _gru_forward_row(table[rows[t, b]], g[b], b_hn, hs[t, b], acts[t, b], hn[t, b],
                             hs[t + 1, b])  # fmt: skip


@numba.njit(**_JIT)
def _gru_backward_row(gates, hn, h_prev, dh, dhnext, dproj, drec):
    """One stream's step back: gates (3H,) r z n, hn (H,), h_prev (H,); dh (H,) the gradient at
    h_t from its output, += dhnext (H,) from the future; → dproj, drec (3H,), and dhnext (H,)
    the direct part z ⊙ dh (the product through W_hh is added by the caller)."""
    H = dh.shape[0]
    one = dh.dtype.type(1.0)
    for j in range(H):
        r, z, n = gates[j], gates[H + j], gates[2 * H + j]
        d = dh[j] + dhnext[j]  # into h_t: its output + the future
        dh[j] = d
        dnp = d * ((one - n * n) * (one - z))  # n pre-activation
        dz = d * (((one - z) * z) * (h_prev[j] - n))  # z pre-activation
        dr = dnp * (((one - r) * r) * hn[j])  # r pre-activation
        drec[j] = dr
        drec[H + j] = dz
        drec[2 * H + j] = dnp * r  # W_hn h + b_hn
        dproj[j] = dr
        dproj[H + j] = dz
        dproj[2 * H + j] = dnp
        dhnext[j] = d * z  # directly through z ⊙ h_{t-1}


@numba.njit(**_JIT)
def gru_backward(acts, hn, hs, W, dh, dproj, drec, dhnext, back):
    """acts (T, B, 3H) the gates r z n, hn (T, B, H), hs (T+1, B, H) as gru_forward left them;
    W (3H, H) W_hh; dh (T, B, H) loss gradient at each h_t, turned in place into d loss / d h_t
    (its output + the future); writes dproj, drec (T, B, 3H) the gradients w.r.t. the input
    and recurrent pre-activations and dhnext (B, H) w.r.t. h_0 (zero on entry); back (B, H)
    scratch."""
    T, B, H = dh.shape
    for t in range(T - 1, -1, -1):
        for b in range(B):
            _gru_backward_row(acts[t, b], hn[t, b], hs[t, b], dh[t, b], dhnext[b], dproj[t, b],
                              drec[t, b])  # fmt: skip
        np.dot(drec[t], W, back)  # (B, H): through the gates, Σ_gates (B, H) @ (H, H)
        dhnext += back


# --- LSTM ---------------------------------------------------------------------------------------


@numba.njit(**_JIT)
def _lstm_forward_row(x, g, c_prev, gates, c, tc, h):
    """One stream's step: x (4H,) W_ih x + b_ih + b_hh and g (4H,) W_hh h_{t-1}, both in the
    internal order o i f g (σ halved), c_prev (H,) → gates (4H,), c, tanh(c), h (H,)."""
    H = h.shape[0]
    half = h.dtype.type(0.5)
    for j in range(H):
        o = half * fast_tanh(x[j] + g[j]) + half
        i = half * fast_tanh(x[H + j] + g[H + j]) + half
        f = half * fast_tanh(x[2 * H + j] + g[2 * H + j]) + half
        gg = fast_tanh(x[3 * H + j] + g[3 * H + j])
        cj = f * c_prev[j] + i * gg  # c_t = f ⊙ c_{t-1} + i ⊙ g
        tcj = fast_tanh(cj)
        gates[j] = o
        gates[H + j] = i
        gates[2 * H + j] = f
        gates[3 * H + j] = gg
        c[j] = cj
        tc[j] = tcj
        h[j] = o * tcj  # h_t = o ⊙ tanh(c_t)


@numba.njit(**_JIT)
def lstm_forward(table, rows, WT, hs, cs, acts, tc, g):
    """table (R, 4H) input pre-activations W_ih x + b_ih + b_hh in the internal gate order
    o i f g (σ columns halved), step t of stream b reading row rows[t, b]; WT (H, 4H): W_hh^T
    in that order, σ columns halved; hs, cs (T+1, B, H) with hs[0], cs[0] set, get every h_t,
    c_t; acts (T, B, 4H) gets the gates o i f g; tc (T, B, H) gets tanh(c_t); g (B, 4H)
    scratch."""
    T, B, _ = tc.shape
    for t in range(T):
        np.dot(hs[t], WT, g)  # (B, 4H) = W_hh h_{t-1}, σ rows halved
        for b in range(B):
            _lstm_forward_row(table[rows[t, b]], g[b], cs[t, b], acts[t, b], cs[t + 1, b],
                              tc[t, b], hs[t + 1, b])  # fmt: skip


@numba.njit(**_JIT)
def _lstm_backward_row(gates, tc, c_prev, dh, dhnext, dcnext, dG, dc_out):
    """One stream's step back: gates (4H,) o i f g, tc (H,) tanh(c_t), c_prev (H,); dh (H,) the
    gradient at h_t from its output, += dhnext (H,) from the future; dcnext (H,) the gradient at
    c_t from c_{t+1}, replaced by the one at c_{t-1} → dG (4H,) in PyTorch's order i f g o and
    dc_out (H,) d loss / d c_t."""
    H = dh.shape[0]
    one = dh.dtype.type(1.0)
    for j in range(H):
        o, i, f, g = gates[j], gates[H + j], gates[2 * H + j], gates[3 * H + j]
        tcj = tc[j]
        d = dh[j] + dhnext[j]  # into h_t: its output + the future
        dh[j] = d
        dc = d * (o * (one - tcj * tcj)) + dcnext[j]  # into c_t: through h_t and c_{t+1}
        dc_out[j] = dc
        dG[j] = dc * (((one - i) * i) * g)
        dG[H + j] = dc * (((one - f) * f) * c_prev[j])
        dG[2 * H + j] = dc * ((one - g * g) * i)
        dG[3 * H + j] = d * (((one - o) * o) * tcj)
        dcnext[j] = dc * f  # into c_{t-1}


@numba.njit(**_JIT)
def lstm_backward(acts, cs, tc, W, dh, dG, dhnext, dcnext, c_trace):
    """acts (T, B, 4H) the gates o i f g, cs (T+1, B, H), tc (T, B, H) as lstm_forward left
    them; W (4H, H) W_hh in PyTorch's order; dh (T, B, H) loss gradient at each h_t, turned in
    place into d loss / d h_t; writes dG (T, B, 4H) the gate pre-activations' gradients in
    PyTorch's order i f g o, dhnext, dcnext (B, H) w.r.t. h_0, c_0 (zero on entry), and
    c_trace (T, B, H) d loss / d c_t."""
    T, B, _ = dh.shape
    for t in range(T - 1, -1, -1):
        for b in range(B):
            _lstm_backward_row(acts[t, b], tc[t, b], cs[t, b], dh[t, b], dhnext[b], dcnext[b],
                               dG[t, b], c_trace[t, b])  # fmt: skip
        np.dot(dG[t], W, dhnext)  # into h_{t-1}: Σ_gates (B, H) @ (H, H)


# --- the input weights' gradient ----------------------------------------------------------------


@numba.njit(**_JIT)
def scatter_rows(sym, d, dWT):
    """dWT[s] = the sum of the rows d[n] (N, G) whose input symbol sym[n] (N,) was s; dWT
    (V, G), zeroed first. In the order of n: deterministic."""
    dWT[:] = 0.0
    for n in range(sym.shape[0]):
        _add_row(d[n], dWT[sym[n]])


@numba.njit(**_JIT)
def _add_row(src, dst):
    for c in range(src.shape[0]):
        dst[c] += src[c]
