"""Linear recurrences over a window, h_t = a_t ⊙ h_{t-1} + b_t, step by step or by a scan.

minGRU, minLSTM (a_t = 1 − z_t, or the normalised forget gate f'_t; gates from x_t only) and the
LRU (a_t = λ, complex and the same at every step) are linear in h, so a window's states are a
prefix "sum" under the associative operator (a, b) ∘ (a', b') = (a a', a' b + b'). Three ways
(``METHODS``); the engine's ``scan=true`` is "compiled", ``scan=false`` is "step":

- "step": one step at a time, two numpy calls per step (the papers' sequential mode).
- "compiled": the whole window in one call of a numba kernel (``rnnlab.engine.scan_kernels``),
  one pass over T with the B·H lanes vectorized: on one core the work-optimal scan.
- "blocked": a numpy associative scan, vectorised over T, kept as the numba-free reference and
  measured by the bench (docs/cells.md: numpy's extra whole-window passes cost more than the
  per-step calls they save once B·H is large). The window is cut into C chunks of
  c ≈ √T steps; (1) every chunk runs its own recurrence from zero at once (c − 1 passes, each over
  the j-th step of all chunks, plus the chunks' running products of a), (2) the true state
  entering each chunk is carried across the C chunk ends (C − 1 small steps), (3) every state is
  corrected at once, h = local + (running product) ⊙ (state entering the chunk). About 3c + 2C
  numpy calls instead of 2T, no division (products of |a| ≤ 1 only ever underflow to 0, the right
  limit), equal to the step path to rounding (~1e-15 in float64).

The backward pass of a linear recurrence is another one, run backwards in time: with dh_t the
gradient arriving at h_t from above, the total gradient is G_t = dh_t + conj(a_{t+1}) ⊙ G_{t+1};
then d b_t = G_t, d a_t = G_t ⊙ conj(h_{t-1}) and d h_0 = conj(a_1) ⊙ G_1 (complex values:
gradients as ∂L/∂Re + i ∂L/∂Im). ``backward`` runs it by the same three ways (numpy on
reversed views).

Arrays are time-major, (T, ...) with any trailing shape; a time-invariant ``a`` has the trailing
shape only. Nothing here does I/O, reads config or keeps state between calls (the kernels module
is imported once, on the first compiled scan).

Not here: the cells that build a and b (``rnnlab.engine.mincells``, ``rnnlab.engine.lru``).
"""

from __future__ import annotations

import math

import numpy as np

MIN_SCAN_STEPS = 4  # below this the blocked scan has nothing to save: step by step
METHODS = ("step", "blocked", "compiled")

_kernels = None


def kernels():
    """The numba kernels (``rnnlab.engine.scan_kernels``), imported on the first scan."""
    global _kernels
    if _kernels is None:
        from rnnlab.engine import scan_kernels

        _kernels = scan_kernels
    return _kernels


def method(scan: bool) -> str:
    """The engine's path for ``Spec.scan``: the compiled scan, or numpy step by step."""
    return "compiled" if scan else "step"


def chunk_length(T: int) -> int:
    """Steps per chunk of the blocked scan: ≈ √T balances the c passes of (1) and (3) against
    the C = T / c carries of (2)."""
    return max(1, round(math.sqrt(T)))


def forward(a: np.ndarray, b: np.ndarray, h0: np.ndarray, hs: np.ndarray, how: str) -> None:
    """hs[0] = h0 and hs[t] = a_{t-1} ⊙ hs[t-1] + b_{t-1} for t = 1..T (0-based a, b of the T
    steps), written into ``hs`` (T+1, ...). ``a``: (T, ...) or (...) for the same at every step
    (broadcast against h's trailing shape). ``how``: one of ``METHODS``."""
    if how == "compiled":
        T = b.shape[0]
        N = b[0].size
        out = hs.reshape(T + 1, N)  # a view: hs is C-contiguous
        bb = np.ascontiguousarray(b).reshape(T, N)
        if a.ndim < b.ndim:
            k = kernels().forward_const
            a2 = np.ascontiguousarray(np.broadcast_to(a, b.shape[1:]).reshape(N))
        else:
            k, a2 = kernels().forward, np.ascontiguousarray(a).reshape(T, N)
        k(a2, bb, np.ascontiguousarray(h0).reshape(N), out)
        return
    hs[0] = h0
    x = hs[1:]  # (T, ...): the states after each step
    a0 = a if a.ndim < x.ndim else a[0]
    np.multiply(a0, h0, out=x[0])  # the first step reads the carried state
    np.add(x[0], b[0], out=x[0])
    x[1:] = b[1:]
    _accumulate(x, a if a.ndim < x.ndim else a[1:], how == "blocked")


def backward(a: np.ndarray, G: np.ndarray, how: str) -> np.ndarray:
    """Turn G (T, ...) — the gradient arriving at each state h_1..h_T from above — in place into
    the total gradient of each, G_t = dh_t + conj(a_{t+1}) ⊙ G_{t+1}; return d h_0 = conj(a_1) ⊙
    G_1. ``a`` and ``how`` as in ``forward``."""
    invariant = a.ndim < G.ndim
    if how == "compiled":
        T = G.shape[0]
        N = G[0].size
        work = G if G.flags.c_contiguous else np.ascontiguousarray(G)
        d0 = np.empty(N, dtype=G.dtype)
        if invariant:
            a2 = np.ascontiguousarray(np.broadcast_to(a, G.shape[1:]).reshape(N))
            kernels().backward_const(a2, work.reshape(T, N), d0)
        else:
            kernels().backward(np.ascontiguousarray(a).reshape(T, N), work.reshape(T, N), d0)
        if work is not G:
            G[...] = work
        return d0.reshape(G.shape[1:])
    conj = np.conj if np.iscomplexobj(a) else (lambda v: v)
    # reversed in time, the recurrence reads G'_r = dh'_r + a'_r G'_{r-1} with a'_r = a_{T-r}
    _accumulate(G[::-1], conj(a) if invariant else conj(a[1:][::-1]), how == "blocked")
    return np.multiply(conj(a if invariant else a[0]), G[0])


def _accumulate(x: np.ndarray, m: np.ndarray, blocked: bool) -> None:
    """x[t] += m[t-1] ⊙ x[t-1] for t = 1..T-1, in order (the recurrence in place); m (T-1, ...)
    or (...) for the same multiplier at every step. ``blocked``: by the blocked scan, else one
    step at a time."""
    T = x.shape[0]
    invariant = m.ndim < x.ndim
    if not blocked or T < MIN_SCAN_STEPS:
        tmp = np.empty_like(x[0])
        xs = list(x)  # views made once: indexing in the loop costs as much as the math at B=1
        ms = [m] * (T - 1) if invariant else list(m)
        for t in range(1, T):
            np.multiply(ms[t - 1], xs[t - 1], out=tmp)
            np.add(xs[t], tmp, out=xs[t])
        return
    c = chunk_length(T)
    C = -(-T // c)  # chunks; the last may be short
    # (1) every chunk's recurrence from zero, all chunks at once: step j of chunk k is row k·c+j,
    # so x[j::c] is step j of every chunk (a strided view, no copy). P holds each row's running
    # product of multipliers since the chunk's start, including the one linking it to the
    # previous chunk (the factor its true state gets from the state entering the chunk).
    tmp = np.empty_like(x[:C])
    if invariant:  # the same m every step: the running products are its powers m^(j+1)
        powers = np.empty((c, *m.shape), dtype=np.result_type(m, x))
        powers[0] = m
        for j in range(1, c):
            np.multiply(powers[j - 1], m, out=powers[j])
        powers = powers.reshape(c, *[1] * (x.ndim - 1 - m.ndim), *m.shape)  # against (C, ...)
    else:
        P = np.empty_like(x)
        P[c::c] = m[c - 1 :: c]  # step 0 of chunks 1..C-1: m of the row before
    for j in range(1, c):
        n = x[j::c].shape[0]  # chunks that have a step j (the last one may not)
        step_m = m if invariant else m[j - 1 :: c][:n]
        np.multiply(step_m, x[j - 1 :: c][:n], out=tmp[:n])
        np.add(x[j::c], tmp[:n], out=x[j::c])
        if not invariant and n > 1:
            np.multiply(P[c + j - 1 :: c][: n - 1], m[c + j - 1 :: c][: n - 1], out=P[c + j :: c])
    # (2) the true state at each chunk's end, carried across chunks (C − 1 small steps)
    ends = x[c - 1 :: c]  # (C or C-1, ...): each full chunk's last row
    carry = np.empty((C - 1, *x.shape[1:]), dtype=x.dtype)  # the state entering chunk k+1
    carry[0] = ends[0]  # chunk 0 started from the true state: its end is exact
    last = powers[c - 1] if invariant else None
    for k in range(1, C - 1):
        np.multiply(last if invariant else P[k * c + c - 1], carry[k - 1], out=carry[k])
        np.add(carry[k], ends[k], out=carry[k])
    # (3) every row of chunks 1..C-1 at once: x += P ⊙ (the state entering its chunk)
    full = T // c  # chunks of c rows; rows full·c.. form the short last chunk, if any
    if full > 1:
        rows = x[c : full * c].reshape(full - 1, c, *x.shape[1:])
        factor = powers if invariant else P[c : full * c].reshape(rows.shape)
        fix = np.multiply(factor, carry[: full - 1, None])
        rows += fix
    if full * c < T:
        r = T - full * c
        factor = powers[:r] if invariant else P[full * c :]
        x[full * c :] += factor * carry[full - 1]
