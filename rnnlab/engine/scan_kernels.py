"""The numba kernels of ``rnnlab.engine.scan``: a window's linear recurrence in one call.

h_t = a_t ⊙ h_{t-1} + b_t over (T, N) arrays (N = B·H lanes, C-contiguous), forward, and its
reverse G_t += conj(a_{t+1}) ⊙ G_{t+1} backward. Each kernel is one pass over the window: the
outer loop over t, the inner loop over the N lanes (independent, contiguous: LLVM vectorizes it).
On one core this is the work-optimal scan of the associative operator (a, b) ∘ (a', b') = (a a',
a' b + b'): a parallel scan's log-depth tree does more work and only pays on parallel hardware;
what the scan removes here is numpy's two calls per step. Real (float32/64) and complex
(complex64/128, the LRU's) arrays, ``a`` per step (T, N) or the same every step (N,).

fastmath only contracts multiply-adds (no reassociation): the kernels agree with the numpy step
loop to an ulp per step (the minGRU/minLSTM layers' σ through ``fused_kernels.fast_tanh``: within
3 ulp of numpy's tanh in float64, |error| ≤ 3e-7 in float32). This module imports numba:
``rnnlab.engine.scan`` imports it on the first scan. Compiled code is cached on disk
(``cache=True``, under ``__pycache__``).
"""

from __future__ import annotations

import numba
import numpy as np

from rnnlab.engine.fused_kernels import _column, fast_tanh

# error_model="numpy": a division by zero gives inf instead of raising, which lets LLVM vectorize
# the minLSTM's f / (f + i) (the check would stop it: 3.5x slower measured)
_JIT = {"cache": True, "fastmath": {"nnan", "ninf", "nsz", "arcp", "contract"},
        "error_model": "numpy", "nogil": True}  # fmt: skip


@numba.njit(**_JIT)
def _fma_row(a, x, b, out):
    """out = a ⊙ x + b over 1-D rows (a row function: LLVM vectorizes it, where the same loop
    written inline in a kernel's step loop vectorized 4-6x less well; see fused_kernels)."""
    for j in range(out.shape[0]):
        out[j] = a[j] * x[j] + b[j]


@numba.njit(**_JIT)
def _fma_conj_row(a, x, out):
    """out += conj(a) ⊙ x over 1-D rows."""
    for j in range(out.shape[0]):
        out[j] += np.conj(a[j]) * x[j]


@numba.njit(**_JIT)
def forward(a, b, h0, out):
    """out[0] = h0, out[t+1] = a[t] ⊙ out[t] + b[t]: a, b (T, N), h0 (N,), out (T+1, N)."""
    out[0] = h0
    for t in range(b.shape[0]):
        _fma_row(a[t], out[t], b[t], out[t + 1])


@numba.njit(**_JIT)
def forward_const(a, b, h0, out):
    """``forward`` with the same a (N,) at every step."""
    out[0] = h0
    for t in range(b.shape[0]):
        _fma_row(a, out[t], b[t], out[t + 1])


@numba.njit(**_JIT)
def backward(a, G, d0):
    """G (T, N) in place: G[t] += conj(a[t+1]) ⊙ G[t+1] from t = T-2 down; d0 (N,) = conj(a[0])
    ⊙ G[0]. a (T, N)."""
    for t in range(G.shape[0] - 2, -1, -1):
        _fma_conj_row(a[t + 1], G[t + 1], G[t])
    d0[:] = 0
    _fma_conj_row(a[0], G[0], d0)


@numba.njit(**_JIT)
def backward_const(a, G, d0):
    """``backward`` with the same a (N,) at every step."""
    for t in range(G.shape[0] - 2, -1, -1):
        _fma_conj_row(a, G[t + 1], G[t])
    d0[:] = 0
    _fma_conj_row(a, G[0], d0)


# --- minGRU and minLSTM: a layer's window in one pass each way ---------------------------------
# Their gates read x_t only, so with the scan a layer's window needs no numpy call per step at
# all: these kernels compute every step's gates and the recurrence in one pass forward, and the
# reverse recurrence with every gate's gradient in one pass backward (``rnnlab.engine.mincells``
# documents the equations; σ(v) = ½ + ½ tanh(v/2) with the engine's vectorizable tanh).


@numba.njit(**_JIT)
def _sigmoid(v, half):
    return half + half * fast_tanh(half * v)


@numba.njit(**_JIT)
def _g(v, half, zero):
    """g(v) = v + ½ for v ≥ 0, σ(v) below, branch-free: max(v, 0) + σ(min(v, 0))."""
    return max(v, zero) + _sigmoid(min(v, zero), half)


@numba.njit(**_JIT)
def _g_grad(gv, half, one):
    """g'(v) written through g(v): 1 where g ≥ ½ (v ≥ 0), σ(1 − σ) below."""
    return one if gv >= half else gv * (one - gv)


# ``c`` holds (0, ½, 1) in the arrays' dtype: float64 literals would turn float32 math into float64.
# Each step's work is a row function per stream, as above.


@numba.njit(**_JIT)
def _mingru_row(p, hp, hn, z, a, ht, zero, half, one):
    H = hn.shape[0]
    for j in range(H):
        zj = _sigmoid(p[j], half)
        gj = _g(p[H + j], half, zero)
        z[j], a[j], ht[j] = zj, one - zj, gj
        hn[j] = hp[j] + zj * (gj - hp[j])


@numba.njit(**_JIT)
def mingru_forward(proj, hs, z, a, ht, c):
    """proj (T, B, 2H) = W_ih x + b_ih (z rows, then h̃ rows); hs (T+1, B, H) with hs[0] the
    carried state → hs[1:], and the gates z, a = 1 − z, h̃ (T, B, H)."""
    T, B = proj.shape[:2]
    for t in range(T):
        for b in range(B):
            _mingru_row(proj[t, b], hs[t, b], hs[t + 1, b], z[t, b], a[t, b], ht[t, b],
                        c[0], c[1], c[2])  # fmt: skip


@numba.njit(**_JIT)
def _mingru_back_row(g, hp, z, ht, d, half, one):
    H = g.shape[0]
    for j in range(H):
        zj = z[j]
        d[j] = g[j] * (ht[j] - hp[j]) * zj * (one - zj)
        d[H + j] = g[j] * zj * _g_grad(ht[j], half, one)


@numba.njit(**_JIT)
def mingru_backward(z, a, ht, hs, G, dproj, dh0, c):
    """G (T, B, H): the gradient at each h_t from above, turned in place into each step's total
    gradient; dproj (T, B, 2H) the gradients of the z and h̃ pre-activations; dh0 (B, H)."""
    T, B = G.shape[:2]
    for t in range(T - 1, -1, -1):
        for b in range(B):
            if t < T - 1:
                _fma_conj_row(a[t + 1, b], G[t + 1, b], G[t, b])
            _mingru_back_row(G[t, b], hs[t, b], z[t, b], ht[t, b], dproj[t, b], c[1], c[2])
    for b in range(B):
        dh0[b] = 0
        _fma_conj_row(a[0, b], G[0, b], dh0[b])


@numba.njit(**_JIT)
def _minlstm_row(p, hp, hn, f, i, fn, ht, zero, half, one):
    H = hn.shape[0]
    for j in range(H):
        fj = _sigmoid(p[j], half)
        ij = _sigmoid(p[H + j], half)
        gj = _g(p[2 * H + j], half, zero)
        nj = fj / (fj + ij)
        f[j], i[j], fn[j], ht[j] = fj, ij, nj, gj
        hn[j] = nj * hp[j] + (one - nj) * gj


@numba.njit(**_JIT)
def minlstm_forward(proj, hs, f, i, fn, ht, c):
    """proj (T, B, 3H) (f, i, h̃ rows); hs (T+1, B, H) with hs[0] the carried state → hs[1:],
    and f, i, f' = f / (f + i), h̃ (T, B, H)."""
    T, B = proj.shape[:2]
    for t in range(T):
        for b in range(B):
            _minlstm_row(proj[t, b], hs[t, b], hs[t + 1, b], f[t, b], i[t, b], fn[t, b], ht[t, b],
                         c[0], c[1], c[2])  # fmt: skip


@numba.njit(**_JIT)
def _minlstm_back_row(g, hp, f, i, fn, ht, d, half, one):
    H = g.shape[0]
    for j in range(H):
        nj = fn[j]
        dfn = g[j] * (hp[j] - ht[j]) * nj * (one - nj)  # d f' ⊙ f' i'
        d[j] = dfn * (one - f[j])
        d[H + j] = -dfn * (one - i[j])
        d[2 * H + j] = g[j] * (one - nj) * _g_grad(ht[j], half, one)


@numba.njit(**_JIT)
def minlstm_backward(f, i, fn, ht, hs, G, dproj, dh0, c):
    """As ``mingru_backward``: dproj (T, B, 3H) the f, i and h̃ pre-activations' gradients."""
    T, B = G.shape[:2]
    for t in range(T - 1, -1, -1):
        for b in range(B):
            if t < T - 1:
                _fma_conj_row(fn[t + 1, b], G[t + 1, b], G[t, b])
            _minlstm_back_row(G[t, b], hs[t, b], f[t, b], i[t, b], fn[t, b], ht[t, b],
                              dproj[t, b], c[1], c[2])  # fmt: skip
    for b in range(B):
        dh0[b] = 0
        _fma_conj_row(fn[0, b], G[0, b], dh0[b])


# --- one stream (B = 1): the inputs read as columns, as ``fused_kernels``' B = 1 kernels --------
# At B = 1 a window's per-call cost is most of it: these read step t's pre-activations straight
# from W_ih's column of the step's symbol (+ b_ih; for dense inputs from the transposed (K·H, T)
# projections), so no projection pass precedes them, and take their constants from the arrays'
# dtype. The row functions are the ones above: the same arithmetic in the same order.


@numba.njit(**_JIT)
def mingru_forward1(Wx, rows, b, hs, z, a, ht):
    """One stream's minGRU window: Wx[:, rows[t]] + b (2H,) step t's z and h̃ pre-activations;
    hs (T+1, H) with hs[0] the carried state → hs[1:], and z, a = 1 − z, h̃ (T, H)."""
    T, H = z.shape
    dt = hs.dtype.type
    zero, half, one = dt(0.0), dt(0.5), dt(1.0)
    p = np.empty(2 * H, dtype=hs.dtype)
    for t in range(T):
        _column(Wx, rows[t], b, p)
        _mingru_row(p, hs[t], hs[t + 1], z[t], a[t], ht[t], zero, half, one)


@numba.njit(**_JIT)
def mingru_backward1(z, a, ht, hs, G, dproj, dh0):
    """``mingru_backward`` for one stream: z, a, h̃, G (T, H), hs (T+1, H), dproj (T, 2H),
    dh0 (H,)."""
    T = G.shape[0]
    dt = G.dtype.type
    half, one = dt(0.5), dt(1.0)
    for t in range(T - 1, -1, -1):
        if t < T - 1:
            _fma_conj_row(a[t + 1], G[t + 1], G[t])
        _mingru_back_row(G[t], hs[t], z[t], ht[t], dproj[t], half, one)
    dh0[:] = 0
    _fma_conj_row(a[0], G[0], dh0)


@numba.njit(**_JIT)
def minlstm_forward1(Wx, rows, b, hs, f, i, fn, ht):
    """One stream's minLSTM window: Wx[:, rows[t]] + b (3H,) step t's f, i and h̃
    pre-activations; hs (T+1, H) → hs[1:], and f, i, f' = f / (f + i), h̃ (T, H)."""
    T, H = f.shape
    dt = hs.dtype.type
    zero, half, one = dt(0.0), dt(0.5), dt(1.0)
    p = np.empty(3 * H, dtype=hs.dtype)
    for t in range(T):
        _column(Wx, rows[t], b, p)
        _minlstm_row(p, hs[t], hs[t + 1], f[t], i[t], fn[t], ht[t], zero, half, one)


@numba.njit(**_JIT)
def minlstm_backward1(f, i, fn, ht, hs, G, dproj, dh0):
    """``minlstm_backward`` for one stream: f, i, f', h̃, G (T, H), hs (T+1, H), dproj (T, 3H),
    dh0 (H,)."""
    T = G.shape[0]
    dt = G.dtype.type
    half, one = dt(0.5), dt(1.0)
    for t in range(T - 1, -1, -1):
        if t < T - 1:
            _fma_conj_row(fn[t + 1], G[t + 1], G[t])
        _minlstm_back_row(G[t], hs[t], f[t], i[t], fn[t], ht[t], dproj[t], half, one)
    dh0[:] = 0
    _fma_conj_row(fn[0], G[0], dh0)
