"""The numba kernels of ``rnnlab.engine.fused``: one compiled loop per window for a gated layer's
forward pass and one for its backward pass, at B > 1.

Each kernel runs the T steps of a window itself: the step's recurrent product by ``np.dot``
(numba calls SciPy's BLAS, ``scipy.linalg.cython_blas``) into a preallocated (B, K·H) buffer,
then every elementwise op of the step in one loop over (B, H), writing the arrays the backward
pass and the engine need. The numpy cells (``rnnlab.engine.cells``) spend ~450-500 small numpy calls
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

tanh (``fast_tanh``): libm's ``math.tanh`` is a scalar call LLVM cannot vectorize (a GRU
step's elementwise took 43-172 µs with it, 6 µs vectorized), so both dtypes use formulas that
vectorize. float32: Eigen's rational approximation (|error| ≤ 3e-7). float64: tanh(|x|) =
E / (E + 2) with E = expm1(2|x|) from a Cody-Waite reduction 2|x| = k ln 2 + r and a degree-13
Taylor polynomial of expm1(r) (within 3 ulp of numpy's tanh over a dense grid of [-25, 25] and
tiny arguments), so float64 results stay within ~1e-15 of the numpy cells. fastmath leaves out
reassociation (it would undo the reduction's split of ln 2) and approximate functions.

This module imports numba: ``rnnlab.engine.fused`` imports it only when a gated layer first runs at
B > 1. Compiled code is cached on disk (``cache=True``, under ``__pycache__``).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba.extending import intrinsic, overload

# fastmath without "reassoc" and "afn": the loops vectorize without them (no reductions), and
# reassociation would fold the float64 tanh's two-part ln 2 back into one.
_FASTMATH = {"nnan", "ninf", "nsz", "arcp", "contract"}
_JIT = {"cache": True, "fastmath": _FASTMATH, "error_model": "numpy", "nogil": True}
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


_LN2_HI, _LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10  # fdlibm's split
_INV_LN2 = 1.44269504088896338700e00
_EXPM1_C = tuple(1.0 / math.factorial(i) for i in range(2, 14))  # 1/2! .. 1/13!


def _tanh64(x):
    a = min(abs(x), 20.0)  # tanh(20) rounds to 1
    y = a + a
    k = np.int64(y * _INV_LN2 + 0.5)  # y = k ln 2 + r, |r| ≤ ln 2 / 2
    kf = np.float64(k)
    r = (y - kf * _LN2_HI) - kf * _LN2_LO
    c = _EXPM1_C
    p = c[11]
    p = p * r + c[10]
    p = p * r + c[9]
    p = p * r + c[8]
    p = p * r + c[7]
    p = p * r + c[6]
    p = p * r + c[5]
    p = p * r + c[4]
    p = p * r + c[3]
    p = p * r + c[2]
    p = p * r + c[1]
    p = p * r + c[0]
    p = r + r * (r * p)  # expm1(r): the Taylor series to r^13/13! (error < 2e-17 relative)
    s = np.float64(np.int64(1) << k)  # 2^k
    E = s * p + (s - 1.0)  # expm1(y) = 2^k (1 + expm1(r)) - 1
    t = E / (E + 2.0)
    return t if x >= 0 else -t


_EXP_LOW, _EXP_HIGH = -708.0, 709.0  # e^x is a normal float64 between (below: 0 here)


@intrinsic
def _as_float64(typingctx, bits):
    """The float64 whose IEEE bits are the int64 ``bits`` (a bitcast LLVM vectorizes)."""
    sig = numba.types.float64(numba.types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(numba.types.float64))

    return sig, codegen


@numba.njit(fastmath=_FASTMATH, inline="always")
def exp64(x):
    """e^x in float64, a formula LLVM vectorizes (libm's ``exp`` is a scalar call): the
    reduction x = k ln 2 + r of ``_tanh64``, its Taylor polynomial of expm1(r), and 2^k built
    from its bits; within 2 ulp of numpy's exp for x in [-708, 709], 0 below (where e^x
    < 3.4e-308), e^709 above."""
    a = min(max(x, _EXP_LOW), _EXP_HIGH)
    k = math.floor(a * _INV_LN2 + 0.5)  # a = k ln 2 + r, |r| ≤ ln 2 / 2, k in [-1021, 1023]
    r = (a - k * _LN2_HI) - k * _LN2_LO
    c = _EXPM1_C
    p = c[11]
    p = p * r + c[10]
    p = p * r + c[9]
    p = p * r + c[8]
    p = p * r + c[7]
    p = p * r + c[6]
    p = p * r + c[5]
    p = p * r + c[4]
    p = p * r + c[3]
    p = p * r + c[2]
    p = p * r + c[1]
    p = p * r + c[0]
    p = r + r * (r * p)  # expm1(r)
    s = _as_float64((np.int64(k) + 1023) << 52)  # 2^k
    e = s + s * p
    return e if x >= _EXP_LOW else 0.0


@overload(fast_tanh, jit_options={"fastmath": _FASTMATH})
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
            _gru_forward_row(
                table[rows[t, b]], g[b], b_hn, hs[t, b], acts[t, b], hn[t, b], hs[t + 1, b]
            )


@numba.njit(**_JIT)
def _gru_backward_row(gates, hn, h_prev, dh, dhnext, dproj, drec, keep_dh):
    """One stream's step back: gates (3H,) r z n, hn (H,), h_prev (H,); dh (H,) the gradient at
    h_t from its output, += dhnext (H,) from the future (written back when keep_dh); →
    dproj, drec (3H,), and dhnext (H,) the direct part z ⊙ dh (the product through W_hh is
    added by the caller)."""
    H = dh.shape[0]
    one = dh.dtype.type(1.0)
    for j in range(H):
        r, z, n = gates[j], gates[H + j], gates[2 * H + j]
        d = dh[j] + dhnext[j]  # into h_t: its output + the future
        if keep_dh:
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
def gru_backward(acts, hn, hs, W, dh, keep_dh, dproj, drec, dhnext, back):
    """acts (T, B, 3H) the gates r z n, hn (T, B, H), hs (T+1, B, H) as gru_forward left them;
    W (3H, H) W_hh; dh (T, B, H) loss gradient at each h_t, turned in place into d loss / d h_t
    (its output + the future) when keep_dh (else left as it is: memory traffic is most of
    this loop's cost); writes dproj, drec (T, B, 3H) the gradients w.r.t. the input
    and recurrent pre-activations and dhnext (B, H) w.r.t. h_0 (zero on entry); back (B, H)
    scratch."""
    T, B, H = dh.shape
    for t in range(T - 1, -1, -1):
        for b in range(B):
            _gru_backward_row(
                acts[t, b],
                hn[t, b],
                hs[t, b],
                dh[t, b],
                dhnext[b],
                dproj[t, b],
                drec[t, b],
                keep_dh,
            )
        np.dot(drec[t], W, back)  # (B, H): through the gates, Σ_gates (B, H) @ (H, H)
        dhnext += back


# --- LSTM ---------------------------------------------------------------------------------------


@numba.njit(**_JIT)
def _lstm_forward_row(x, g_oi, g_fg, c_prev, gates, c, h):
    """One stream's step: x (4H,) W_ih x + b_ih + b_hh in the internal order o i f g, g_oi,
    g_fg (2H,) W_hh h_{t-1}'s o i and f g parts (σ halved), c_prev (H,) → gates (4H,), c,
    h (H,)."""
    H = h.shape[0]
    half = h.dtype.type(0.5)
    for j in range(H):
        o = half * fast_tanh(x[j] + g_oi[j]) + half
        i = half * fast_tanh(x[H + j] + g_oi[H + j]) + half
        f = half * fast_tanh(x[2 * H + j] + g_fg[j]) + half
        gg = fast_tanh(x[3 * H + j] + g_fg[H + j])
        cj = f * c_prev[j] + i * gg  # c_t = f ⊙ c_{t-1} + i ⊙ g
        tcj = fast_tanh(cj)
        gates[j] = o
        gates[H + j] = i
        gates[2 * H + j] = f
        gates[3 * H + j] = gg
        c[j] = cj
        h[j] = o * tcj  # h_t = o ⊙ tanh(c_t)


@numba.njit(**_JIT)
def lstm_forward(table, rows, WT_oi, WT_fg, hs, cs, acts, g_oi, g_fg):
    """table (R, 4H) input pre-activations W_ih x + b_ih + b_hh in the internal gate order
    o i f g (σ columns halved), step t of stream b reading row rows[t, b]; WT_oi, WT_fg (H, 2H):
    W_hh^T's o i and f g columns, σ columns halved; hs, cs (T+1, B, H) with hs[0], cs[0] set,
    get every h_t, c_t; acts (T, B, 4H) gets the gates o i f g; g_oi, g_fg (B, 2H) scratch.
    tanh(c_t) is not kept: the backward pass recomputes it (cheaper than the memory traffic).
    The step's product is two (B, H) @ (H, 2H): OpenBLAS took 31 µs for one (32, 100) @
    (100, 400) and 2 × 9 µs for the halves (measured; the GRU's 300 columns gain nothing)."""
    T, B, _ = acts.shape
    for t in range(T):
        np.dot(hs[t], WT_oi, g_oi)  # (B, 2H) = W_hh h_{t-1}, o and i rows, halved
        np.dot(hs[t], WT_fg, g_fg)  # f (halved) and g
        for b in range(B):
            _lstm_forward_row(
                table[rows[t, b]],
                g_oi[b],
                g_fg[b],
                cs[t, b],
                acts[t, b],
                cs[t + 1, b],
                hs[t + 1, b],
            )


@numba.njit(**_JIT)
def _lstm_backward_row(gates, c, c_prev, dh, dhnext, dcnext, dG, d_if, d_go, dc_out, keep):
    """One stream's step back: gates (4H,) o i f g, c (H,) c_t, c_prev (H,); dh (H,) the
    gradient at h_t from its output, += dhnext (H,) from the future; dcnext (H,) the gradient at
    c_t from c_{t+1}, replaced by the one at c_{t-1} → dG (4H,) in PyTorch's order i f g o, and
    its halves again in d_if, d_go (2H,) (contiguous operands for the step's two products);
    when keep, d loss / d h_t back into dh and d loss / d c_t into dc_out (H,)."""
    H = dh.shape[0]
    one = dh.dtype.type(1.0)
    for j in range(H):
        o, i, f, g = gates[j], gates[H + j], gates[2 * H + j], gates[3 * H + j]
        tcj = fast_tanh(c[j])  # as the forward pass computed it
        d = dh[j] + dhnext[j]  # into h_t: its output + the future
        dc = d * (o * (one - tcj * tcj)) + dcnext[j]  # into c_t: through h_t and c_{t+1}
        if keep:
            dh[j] = d
            dc_out[j] = dc
        di = dc * (((one - i) * i) * g)
        df = dc * (((one - f) * f) * c_prev[j])
        dg = dc * ((one - g * g) * i)
        do = d * (((one - o) * o) * tcj)
        dG[j] = di
        dG[H + j] = df
        dG[2 * H + j] = dg
        dG[3 * H + j] = do
        d_if[j] = di
        d_if[H + j] = df
        d_go[j] = dg
        d_go[H + j] = do
        dcnext[j] = dc * f  # into c_{t-1}


@numba.njit(**_JIT)
def lstm_backward(acts, cs, W_if, W_go, dh, keep, dG, dhnext, dcnext, c_trace, d_if, d_go, back):
    """acts (T, B, 4H) the gates o i f g, cs (T+1, B, H) as lstm_forward left them; W_if, W_go
    (2H, H) W_hh's rows i f and g o (PyTorch's order); dh (T, B, H) loss gradient at each h_t;
    writes dG (T, B, 4H) the gate pre-activations' gradients in PyTorch's order i f g o, dhnext,
    dcnext (B, H) w.r.t. h_0, c_0 (zero on entry), and, when keep, d loss / d h_t into dh and
    d loss / d c_t into c_trace (T, B, H) (else neither is written: memory traffic is most of
    this loop's cost); d_if, d_go (B, 2H) and back (B, H) scratch. The step's product is two
    (B, 2H) @ (2H, H), as in lstm_forward (34 µs for one (32, 400) @ (400, 100), 2 × 10 µs)."""
    T, B, _ = dh.shape
    for t in range(T - 1, -1, -1):
        for b in range(B):
            _lstm_backward_row(
                acts[t, b],
                cs[t + 1, b],
                cs[t, b],
                dh[t, b],
                dhnext[b],
                dcnext[b],
                dG[t, b],
                d_if[b],
                d_go[b],
                c_trace[t, b],
                keep,
            )
        np.dot(d_if, W_if, dhnext)  # into h_{t-1}: Σ_gates (B, H) @ (H, H)
        np.dot(d_go, W_go, back)
        dhnext += back


# --- one stream (B = 1) --------------------------------------------------------------------------
# At B = 1 a step's product is a GEMV on the weights as the engine keeps them (PyTorch's rows, W
# (G, H)): no transposed or row-permuted copy per window, which at this size costs as much as the
# window's steps. The σ gates are halved after the product instead of before: ½(a + W h) is the
# numpy cells' ½a + (½W) h bit for bit (halving is exact). The input pre-activations are read
# inside the step loop as columns: step t's is Wx[:, rows[t]] + b — for symbols Wx is W_ih
# (G, V) and rows the symbols (no window-wide gather), for dense inputs Wx is the (G, T)
# transpose of their projections and rows 0..T-1. The GRU's backward pass is ``gru_backward``
# above (its (1, ·) products are GEMVs at B = 1).


@numba.njit(**_JIT)
def rows_in_range(rows, R):
    """Whether every rows[t] is a column of an (·, R) array (the kernels do not check bounds)."""
    for t in range(rows.shape[0]):
        if rows[t] < 0 or rows[t] >= R:
            return False
    return True


@numba.njit(**_JIT)
def _column(Wx, s, b, x):
    """x = Wx[:, s] + b: a step's input pre-activations, gathered (a strided read for W_ih's
    columns) into contiguous memory first, so the step's elementwise loop vectorizes."""
    for j in range(x.shape[0]):
        x[j] = Wx[j, s] + b[j]


@numba.njit(**_JIT)
def rnn_forward1(Wx, rows, b, W, hs, z, tanh):
    """One stream's vanilla window: Wx[:, rows[t]] + b (H,) the input pre-activation of step t;
    W (H, H) W_hh; hs (T+1, H) with hs[0] the initial h gets h_t = act(W_hh h_{t-1} + W_xh x_t +
    b_h), act tanh when ``tanh``, else σ = ½ tanh(·/2) + ½; z (H,) scratch."""
    T, H = hs.shape[0] - 1, hs.shape[1]
    half = hs.dtype.type(0.5)
    x = np.empty(H, dtype=hs.dtype)
    for t in range(T):
        np.dot(W, hs[t], z)  # (H,) = W_hh h_{t-1}
        _column(Wx, rows[t], b, x)
        h = hs[t + 1]
        if tanh:
            for j in range(H):
                h[j] = fast_tanh(z[j] + x[j])
        else:
            for j in range(H):
                h[j] = half * fast_tanh(half * (z[j] + x[j])) + half


@numba.njit(**_JIT)
def rnn_backward1(hs, W, dz, keep, trace, dhnext, tanh):
    """hs (T+1, H) as rnn_forward1 left them; W (H, H) W_hh; dz (T, H) the loss gradient at each
    h_t from above, turned in place into d loss / d z_t; when ``keep``, trace (T, H) receives
    d loss / d h_t (its output + the future); dhnext (H,) zero on entry, → d loss / d h_0."""
    T, H = dz.shape
    one = dz.dtype.type(1.0)
    for t in range(T - 1, -1, -1):
        d_t, h, tr = dz[t], hs[t + 1], trace[t]
        for j in range(H):
            d = d_t[j] + dhnext[j]  # into h_t: its output + the future
            if keep:
                tr[j] = d
            hj = h[j]
            if tanh:
                d_t[j] = d * (one - hj * hj)  # through the nonlinearity: d loss / d z_t
            else:
                d_t[j] = d * ((one - hj) * hj)
        np.dot(d_t, W, dhnext)  # into h_{t-1}: (H,) @ (H, H)


@numba.njit(**_JIT)
def gru_forward1(Wx, rows, b, W, b_hn, hs, acts, hn, g):
    """One stream's GRU window: Wx[:, rows[t]] + b (3H,) step t's W_ih x_t + b_ih (+ b_hr, b_hz
    on the r and z rows), PyTorch's order r z n; W (3H, H) W_hh; b_hn (H,); hs (T+1, H) with
    hs[0] set gets every h_t; acts (T, 3H) gets the gates r z n; hn (T, H) gets W_hn h_{t-1} +
    b_hn; g (3H,) scratch."""
    T, H = hn.shape
    x = np.empty(3 * H, dtype=hs.dtype)
    for t in range(T):
        np.dot(W, hs[t], g)  # (3H,) = W_hh h_{t-1}
        _column(Wx, rows[t], b, x)
        _gru_forward_row1(x, g, b_hn, hs[t], acts[t], hn[t], hs[t + 1])


@numba.njit(**_JIT)
def _gru_forward_row1(x, g, b_hn, h_prev, gates, hn, h):
    """gru_forward1's step after its product: x, g (3H,) the step's input and recurrent
    pre-activations (not halved) → gates (3H,) r z n, hn (H,), h (H,). A function of its own:
    inline in the step loop LLVM vectorized it less well (as ``_gru_forward_row``)."""
    H = h.shape[0]
    half = h.dtype.type(0.5)
    for j in range(H):
        r = half * fast_tanh(half * (x[j] + g[j])) + half  # σ = ½ tanh(·/2) + ½
        z = half * fast_tanh(half * (x[H + j] + g[H + j])) + half
        hn_ = g[2 * H + j] + b_hn[j]
        n = fast_tanh(x[2 * H + j] + r * hn_)
        gates[j] = r
        gates[H + j] = z
        gates[2 * H + j] = n
        hn[j] = hn_
        h[j] = n + z * (h_prev[j] - n)  # (1 − z) n + z h_{t-1}


@numba.njit(**_JIT)
def lstm_forward1(Wx, rows, b, W, hs, cs, acts, g):
    """One stream's LSTM window: Wx[:, rows[t]] + b (4H,) step t's W_ih x_t + b_ih + b_hh in
    PyTorch's order i f g o; W (4H, H) W_hh; hs, cs (T+1, H) with hs[0], cs[0] set get every
    h_t, c_t; acts (T, 4H) gets the gates in the kernels' internal order o i f g (as
    ``lstm_forward``); g (4H,) scratch."""
    T, H = hs.shape[0] - 1, hs.shape[1]
    x = np.empty(4 * H, dtype=hs.dtype)
    for t in range(T):
        np.dot(W, hs[t], g)  # (4H,) = W_hh h_{t-1}, i f g o
        _column(Wx, rows[t], b, x)
        _lstm_forward_row1(x, g, cs[t], acts[t], cs[t + 1], hs[t + 1])


@numba.njit(**_JIT)
def _lstm_forward_row1(x, g, c_prev, gates, c, h):
    """lstm_forward1's step after its product: x, g (4H,) the step's input and recurrent
    pre-activations in PyTorch's order (not halved), c_prev (H,) → gates (4H,) o i f g, c, h
    (H,). A function of its own, as ``_gru_forward_row1``."""
    H = h.shape[0]
    half = h.dtype.type(0.5)
    for j in range(H):
        i = half * fast_tanh(half * (x[j] + g[j])) + half
        f = half * fast_tanh(half * (x[H + j] + g[H + j])) + half
        gg = fast_tanh(x[2 * H + j] + g[2 * H + j])
        o = half * fast_tanh(half * (x[3 * H + j] + g[3 * H + j])) + half
        cj = f * c_prev[j] + i * gg  # c_t = f ⊙ c_{t-1} + i ⊙ g
        gates[j] = o
        gates[H + j] = i
        gates[2 * H + j] = f
        gates[3 * H + j] = gg
        c[j] = cj
        h[j] = o * fast_tanh(cj)  # h_t = o ⊙ tanh(c_t)


@numba.njit(**_JIT)
def lstm_backward1(acts, cs, W, dh, keep, dG, dhnext, dcnext, c_trace):
    """One stream's LSTM window back: acts (T, 4H) the gates o i f g, cs (T+1, H) as
    lstm_forward1 left them; W (4H, H) W_hh; dh (T, H) loss gradient at each h_t; writes dG
    (T, 4H) the gate pre-activations' gradients in PyTorch's order i f g o, dhnext, dcnext (H,)
    w.r.t. h_0, c_0 (zero on entry), and, when keep, d loss / d h_t into dh and d loss / d c_t
    into c_trace (T, H). One GEMV per step, (4H,) @ (4H, H): at B = 1 the two halves
    ``lstm_backward`` splits the product into cost more than one."""
    T = dh.shape[0]
    for t in range(T - 1, -1, -1):
        _lstm_backward_row1(acts[t], cs[t + 1], cs[t], dh[t], dhnext, dcnext, dG[t], c_trace[t],
                            keep)  # fmt: skip
        np.dot(dG[t], W, dhnext)  # into h_{t-1}: Σ_gates (H,) @ (H, H)


@numba.njit(**_JIT)
def _lstm_backward_row1(gates, c, c_prev, dh, dhnext, dcnext, dg, dc_out, keep):
    """lstm_backward1's step before its product: as ``_lstm_backward_row`` with dG (4H,) in
    PyTorch's order i f g o and no copies of its halves."""
    H = dh.shape[0]
    one = dh.dtype.type(1.0)
    for j in range(H):
        o, i, f, g = gates[j], gates[H + j], gates[2 * H + j], gates[3 * H + j]
        tcj = fast_tanh(c[j])  # as the forward pass computed it
        d = dh[j] + dhnext[j]  # into h_t: its output + the future
        dc = d * (o * (one - tcj * tcj)) + dcnext[j]  # into c_t: through h_t and c_{t+1}
        if keep:
            dh[j] = d
            dc_out[j] = dc
        dg[j] = dc * (((one - i) * i) * g)
        dg[H + j] = dc * (((one - f) * f) * c_prev[j])
        dg[2 * H + j] = dc * ((one - g * g) * i)
        dg[3 * H + j] = d * (((one - o) * o) * tcj)
        dcnext[j] = dc * f  # into c_{t-1}


# --- the softmax cross-entropy head of one stream -------------------------------------------------


@numba.njit(**_JIT)
def xent_head1(top, Why, by, targets, limit, z, dWhy, dby, dh):
    """``rnn.softmax_xent`` of one stream and the head's products of ``rnn.backward``, in one
    call: top (T, H) what the head reads, Why (V, H), by (V,), targets (T,) ints; z (T, V)
    receives the logits Why h_t + by, then d loss / d logits; dWhy (V, H), dby (V,) and dh
    (T, H), d loss / d top, are written. Returns the window's loss. As the numpy head, each
    row is shifted by its max only when some |logit| exceeds ``limit`` (else e^z is finite
    unshifted); the sums run in another order, so the results agree to float rounding."""
    T, V = z.shape
    np.dot(top, Why.T, z)  # (T, V) = top Why^T
    big = 0.0
    for t in range(T):
        row = z[t]
        for v in range(V):
            row[v] += by[v]
            big = max(big, abs(row[v]))
    loss = 0.0
    dby[:] = 0.0
    for t in range(T):
        row = z[t]
        m = row.max() if big > limit else row.dtype.type(0.0)
        k = targets[t]
        z_target = row[k] - m
        for v in range(V):
            row[v] = exp64(row[v] - m)  # vectorized: the sum is a loop of its own
        total = 0.0
        for v in range(V):
            total += row[v]
        loss += np.log(total) - z_target  # -log p_target = log Σ e^z - z_target
        scale = 1.0 / total
        for v in range(V):
            row[v] *= scale  # p = e^z / Σ e^z
        row[k] -= 1.0  # - onehot(target)
        for v in range(V):
            dby[v] += row[v]
    np.dot(z.T, top, dWhy)  # (V, H)
    np.dot(z, Why, dh)  # (T, H): into each top h_t
    return loss


# --- a whole window of one vanilla layer, one stream ---------------------------------------------


@numba.njit(**_JIT)
def rnn_window1(Wxh, rows, bh, Whh, Why, by, targets, limit, h0, dWxh, dWhh, dbh, dWhy, dby):
    """One vanilla tanh layer's training window of one stream, in one call: ``rnn_forward1``,
    ``xent_head1``, ``rnn_backward1`` and the weight gradients of ``rnn.backward``. rows (T,)
    the input symbols (columns of Wxh), targets (T,), h0 (H,) the initial h; every gradient
    written. Returns (the window's loss (1,), hs (T+1, H): h0 and each step's h)."""
    T, H, V = rows.shape[0], Whh.shape[0], Why.shape[0]
    for t in range(T):  # the kernels do not check bounds
        if rows[t] < 0 or rows[t] >= Wxh.shape[1] or targets[t] < 0 or targets[t] >= V:
            raise IndexError("input symbols and targets must be in [0, V)")
    dt = h0.dtype
    hs, top = np.empty((T + 1, H), dtype=dt), np.empty((T, H), dtype=dt)
    z, dz, dhnext = np.empty((T, V), dtype=dt), np.empty((T, H), dtype=dt), np.zeros(H, dtype=dt)
    hs[0] = h0
    rnn_forward1(Wxh, rows, bh, Whh, hs, dhnext, True)  # dhnext as the step's scratch
    for t in range(T):  # the head's input, contiguous (np.dot reads whole arrays)
        for j in range(H):
            top[t, j] = hs[t + 1, j]
    loss = np.empty(1, dtype=dt)
    loss[0] = xent_head1(top, Why, by, targets, limit, z, dWhy, dby, dz)
    dhnext[:] = 0.0
    rnn_backward1(hs, Whh, dz, False, dz, dhnext, True)  # dz: d loss / d h_t → d loss / d z_t
    for t in range(T):  # h_{t-1}, the recurrent product's input (top's memory is free again)
        for j in range(H):
            top[t, j] = hs[t, j]
    np.dot(dz.T, top, dWhh)  # (H, H) = Σ_t dz_t h_{t-1}^T
    scatter_columns(rows, dz, dWxh, dbh)  # dWxh's columns by input symbol, dbh = Σ_t dz_t
    return loss, hs


# --- the input weights' gradient ----------------------------------------------------------------


@numba.njit(**_JIT)
def scatter_rows(sym, d, dWT, db):
    """dWT[s] = the sum of the rows d[n] (N, G) whose input symbol sym[n] (N,) was s, dWT
    (V, G), and db (G,) the sum of all rows, both zeroed first. In the order of n:
    deterministic."""
    dWT[:] = 0.0
    db[:] = 0.0
    for n in range(sym.shape[0]):
        _add_row(d[n], dWT[sym[n]], db)


@numba.njit(**_JIT)
def scatter_columns(sym, d, dW, db):
    """dW[:, s] = the sum of the rows d[n] (N, G) whose input symbol sym[n] (N,) was s, dW
    (G, V), and db (G,) the sum of all rows, both zeroed first; in the order of n, as
    ``scatter_rows``. Straight into dW's columns: for a window of few steps cheaper than
    ``scatter_rows`` and a transposed copy (a B = 1 window, N = 25)."""
    dW[:] = 0.0
    db[:] = 0.0
    for n in range(sym.shape[0]):
        s, row = sym[n], d[n]
        for c in range(row.shape[0]):
            dW[c, s] += row[c]
            db[c] += row[c]


@numba.njit(**_JIT)
def _add_row(src, dst, total):
    for c in range(src.shape[0]):
        dst[c] += src[c]
        total[c] += src[c]


# --- the weights as the kernels read them -------------------------------------------------------


@numba.njit(**_JIT)
def gather_transposed(src, rows, scale, add, out):
    """out[c, i] = src[rows[i], c] · scale[i] + add[i]: src (R, C), rows, scale, add (G,),
    out (C, G). The input weights' rows picked (the LSTM's gate order), σ rows halved,
    transposed and the bias added in one pass: the symbols' table (19 against 24 µs with numpy's
    copy per row block and transposed add, for a GRU's (300, 80) W_ih)."""
    for c in range(src.shape[1]):
        for i in range(rows.shape[0]):
            out[c, i] = src[rows[i], c] * scale[i] + add[i]


# --- the update ---------------------------------------------------------------------------------

# IEEE arithmetic only: the same operations in the same order as ``optim.clip_elementwise`` then
# ``optim.Adagrad._update`` give the same bits (no contraction into fused multiply-adds).
_EXACT = {"cache": True, "error_model": "numpy", "nogil": True}


@numba.njit(**_EXACT)
def clip_adagrad(params, grad, mem, limit, lr, eps):
    """In one pass over the flat buffers (all of one dtype, as ``limit``, ``lr``, ``eps``):
    grad = clip(grad, ±limit) (NaN stays NaN, as ``np.clip``); mem += grad²;
    params -= grad / sqrt(mem + eps) · lr."""
    for i in range(params.shape[0]):
        g = grad[i]
        if g > limit:
            g = limit
        elif g < -limit:
            g = -limit
        grad[i] = g
        m = mem[i] + g * g
        mem[i] = m
        params[i] -= (g / np.sqrt(m + eps)) * lr
