"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?"), one layer at a time.

Both drop the gates' dependence on h, so the recurrence is linear in h and a window trains either
step by step or by a scan over it (``rnnlab.engine.scan``; ``scan`` in ``Spec``). For a layer
with input x_t and the log-space form's activation g(z) = z + ½ (z ≥ 0), σ(z) (z < 0):

    minGRU   z_t = σ(W_z x_t + b_z)     h̃_t = g(W_h x_t + b_h)
             h_t = (1 − z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t                       W_ih = [W_z; W_h] (2H, D)
    minLSTM  f_t = σ(W_f x_t + b_f)     i_t = σ(W_i x_t + b_i)     h̃_t = g(W_h x_t + b_h)
             f'_t = f_t / (f_t + i_t)   i'_t = i_t / (f_t + i_t)
             h_t = f'_t ⊙ h_{t-1} + i'_t ⊙ h̃_t                       W_ih = [W_f; W_i; W_h] (3H, D)

i.e. h_t = a_t ⊙ h_{t-1} + b_t with a_t = 1 − z_t (f'_t) and b_t = z_t ⊙ h̃_t (i'_t ⊙ h̃_t).
No recurrent weights: the gradient reaching h_{t-1} from h_t is a_t ⊙ (its gradient). Two paths,
equal to 1e-10 in float64:

- ``scan=True``: nothing depends on h but the linear recurrence, so the layer's whole window is
  one compiled pass each way (``scan_kernels.mingru_forward`` ...: every step's gates and the
  scan of the recurrence forward; the reverse scan and every gate's gradient backward). At B = 1
  (``mingru_forward1`` ...) the forward kernel reads each step's column of W_ih itself, as the
  classic cells' B = 1 kernels do (``rnnlab.engine.fused``): no projection pass before it.
- ``scan=False``: the papers' sequential mode in numpy: the gates for the whole window at once,
  then the recurrence one step at a time (``rnnlab.engine.scan``, two numpy calls per step). Weights
start as PyTorch's ``nn.Linear``: U(±1/√D), D the layer's input width.

Nothing here does I/O, reads config or keeps state between calls.
"""

from __future__ import annotations

import math

import numpy as np

from rnnlab.engine import cells, fused, scan
from rnnlab.engine.cell_api import CellType, g, g_grad, sigmoid


def _contiguous(a: np.ndarray) -> np.ndarray:
    """What a kernel writes for ``a``: a itself when C-contiguous, else a copy (``_copy_back``)."""
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _consts(a: np.ndarray) -> np.ndarray:
    """(0, ½, 1) in a's dtype, for the kernels (``scan_kernels``)."""
    return np.array([0.0, 0.5, 1.0], dtype=a.dtype)


def _copy_back(work: np.ndarray, a: np.ndarray) -> None:
    if work is not a:
        a[...] = work


def _no_params(H: int) -> dict[str, tuple]:
    return {}


def _init(lp, rng: np.random.Generator, D: int, H: int, top: bool, options=None) -> None:
    """nn.Linear's default: weights and biases U(±1/√D)."""
    bound = 1.0 / math.sqrt(D)
    for v in lp.values():
        v[...] = rng.uniform(-bound, bound, v.shape)


# --- minGRU -------------------------------------------------------------------------------------


def _buffers(T: int, B: int, H: int, dt, n: int) -> list[np.ndarray]:
    return [np.empty((T, B, H), dtype=dt) for _ in range(n)]


def mingru_forward(lp, proj: np.ndarray, state0: np.ndarray, use_scan: bool) -> cells.Layer:
    """One minGRU layer over a window: proj (T, B, 2H) = W_ih x + b_ih, state0 (1, B, H)."""
    T, B, G = proj.shape
    H = G // 2
    if use_scan:  # the window in one compiled pass
        hs = np.empty((T + 1, B, H), dtype=proj.dtype)
        hs[0] = state0[0]
        z, a, ht = _buffers(T, B, H, proj.dtype, 3)
        scan.kernels().mingru_forward(np.ascontiguousarray(proj), hs, z, a, ht, _consts(proj))
        return cells.Layer(hs=hs, state=hs[-1][None].copy(), saved={"z": z, "ht": ht, "a": a})
    z = sigmoid(proj[..., :H])  # (T, B, H) update gate
    ht = g(proj[..., H:])  # (T, B, H) candidate
    a = np.subtract(1.0, z)  # what h_{t-1} keeps
    b = np.multiply(z, ht)
    hs = np.empty((T + 1, B, H), dtype=proj.dtype)
    scan.forward(a, b, state0[0], hs, "step")
    return cells.Layer(hs=hs, state=hs[-1][None].copy(), saved={"z": z, "ht": ht, "a": a})


def mingru_forward1(lp, x: np.ndarray, state0: np.ndarray) -> cells.Layer:
    """The scan path of one minGRU layer at B = 1, its inputs read by the kernel: x (T, 1) int
    symbols (W_ih's columns) or (T, 1, D) floats (their projections, one GEMM), state0 (1, 1, H).
    What ``mingru_forward`` gives for proj = W_ih x + b_ih."""
    W = lp["W_ih"]
    Wx, rows = fused.one_stream_inputs(W, x)
    T, H = rows.shape[0], W.shape[0] // 2
    hs = np.empty((T + 1, 1, H), dtype=W.dtype)
    hs[0] = state0[0]
    z, a, ht = np.empty((3, T, 1, H), dtype=W.dtype)
    scan.kernels().mingru_forward1(
        Wx, rows, lp["b_ih"], hs.reshape(T + 1, H), z.reshape(T, H), a.reshape(T, H),
        ht.reshape(T, H),
    )  # fmt: skip
    return cells.Layer(hs=hs, state=hs[-1][None].copy(), saved={"z": z, "ht": ht, "a": a})


def mingru_backward(layer: cells.Layer, lp, dh: np.ndarray, use_scan: bool, trace, grads):
    """BPTT through one minGRU layer; returns (d proj (T, B, 2H), d state0 (1, B, H))."""
    z, ht, a = layer.saved["z"], layer.saved["ht"], layer.saved["a"]
    T, B, H = dh.shape
    G = cells.backward_buffer(dh, trace)  # becomes each step's total gradient d loss / d h_t
    dproj = np.empty((T, B, 2 * H), dtype=dh.dtype)
    if use_scan and B == 1:  # one stream: the window in one compiled pass on (T, ·) rows
        dh0 = np.empty((1, H), dtype=dh.dtype)
        work = _contiguous(G)
        scan.kernels().mingru_backward1(
            z.reshape(T, H), a.reshape(T, H), ht.reshape(T, H), layer.hs.reshape(T + 1, H),
            work.reshape(T, H), dproj.reshape(T, 2 * H), dh0.reshape(H),
        )  # fmt: skip
        _copy_back(work, G)
        return dproj, dh0[None]
    if use_scan:  # the window in one compiled pass
        dh0 = np.empty((B, H), dtype=dh.dtype)
        work = _contiguous(G)
        scan.kernels().mingru_backward(z, a, ht, layer.hs, work, dproj, dh0, _consts(dh))
        _copy_back(work, G)
        return dproj, dh0[None]
    dh0 = scan.backward(a, G, "step")
    # d z_t = G ⊙ (h̃_t − h_{t-1}) (z enters as z h̃ and as 1 − z), through σ' = z (1 − z)
    dz = np.subtract(ht, layer.hs[:-1], out=dproj[..., :H])
    dz *= G
    dz *= z
    dz *= a
    # d h̃_t = G ⊙ z_t, through g'
    dht = np.multiply(G, z, out=dproj[..., H:])
    dht *= g_grad(ht)
    return dproj, dh0[None]


MINGRU = CellType(
    name="mingru",
    state_size=1,
    input_rows=2,
    bias=True,
    recurrent=None,
    own=_no_params,
    init=_init,
    forward=mingru_forward,
    backward=mingru_backward,
    forward1=mingru_forward1,
)


# --- minLSTM ------------------------------------------------------------------------------------


def minlstm_forward(lp, proj: np.ndarray, state0: np.ndarray, use_scan: bool) -> cells.Layer:
    """One minLSTM layer over a window: proj (T, B, 3H) = W_ih x + b_ih, state0 (1, B, H)."""
    T, B, G = proj.shape
    H = G // 3
    if use_scan:  # the window in one compiled pass
        hs = np.empty((T + 1, B, H), dtype=proj.dtype)
        hs[0] = state0[0]
        f, i, fn, ht = _buffers(T, B, H, proj.dtype, 4)
        scan.kernels().minlstm_forward(np.ascontiguousarray(proj), hs, f, i, fn, ht, _consts(proj))
        saved = {"f": f, "i": i, "a": fn, "ht": ht}
        return cells.Layer(hs=hs, state=hs[-1][None].copy(), saved=saved)
    f = sigmoid(proj[..., :H])  # (T, B, H) forget gate
    i = sigmoid(proj[..., H : 2 * H])  # input gate
    ht = g(proj[..., 2 * H :])  # candidate
    fn = np.add(f, i)
    np.divide(f, fn, out=fn)  # f' = f / (f + i): what h_{t-1} keeps
    b = np.subtract(1.0, fn)  # i' = 1 − f'
    b *= ht
    hs = np.empty((T + 1, B, H), dtype=proj.dtype)
    scan.forward(fn, b, state0[0], hs, "step")
    saved = {"f": f, "i": i, "a": fn, "ht": ht}  # a: the recurrence's multiplier, f'
    return cells.Layer(hs=hs, state=hs[-1][None].copy(), saved=saved)


def minlstm_forward1(lp, x: np.ndarray, state0: np.ndarray) -> cells.Layer:
    """The scan path of one minLSTM layer at B = 1, its inputs read by the kernel (as
    ``mingru_forward1``). What ``minlstm_forward`` gives for proj = W_ih x + b_ih."""
    W = lp["W_ih"]
    Wx, rows = fused.one_stream_inputs(W, x)
    T, H = rows.shape[0], W.shape[0] // 3
    hs = np.empty((T + 1, 1, H), dtype=W.dtype)
    hs[0] = state0[0]
    f, i, fn, ht = np.empty((4, T, 1, H), dtype=W.dtype)
    scan.kernels().minlstm_forward1(
        Wx, rows, lp["b_ih"], hs.reshape(T + 1, H), f.reshape(T, H), i.reshape(T, H),
        fn.reshape(T, H), ht.reshape(T, H),
    )  # fmt: skip
    saved = {"f": f, "i": i, "a": fn, "ht": ht}
    return cells.Layer(hs=hs, state=hs[-1][None].copy(), saved=saved)


def minlstm_backward(layer: cells.Layer, lp, dh: np.ndarray, use_scan: bool, trace, grads):
    """BPTT through one minLSTM layer; returns (d proj (T, B, 3H), d state0 (1, B, H))."""
    f, i, fn, ht = (layer.saved[k] for k in ("f", "i", "a", "ht"))
    T, B, H = dh.shape
    G = cells.backward_buffer(dh, trace)
    dproj = np.empty((T, B, 3 * H), dtype=dh.dtype)
    if use_scan and B == 1:  # one stream: the window in one compiled pass on (T, ·) rows
        dh0 = np.empty((1, H), dtype=dh.dtype)
        work = _contiguous(G)
        scan.kernels().minlstm_backward1(
            f.reshape(T, H), i.reshape(T, H), fn.reshape(T, H), ht.reshape(T, H),
            layer.hs.reshape(T + 1, H), work.reshape(T, H), dproj.reshape(T, 3 * H),
            dh0.reshape(H),
        )  # fmt: skip
        _copy_back(work, G)
        return dproj, dh0[None]
    if use_scan:  # the window in one compiled pass
        dh0 = np.empty((B, H), dtype=dh.dtype)
        work = _contiguous(G)
        scan.kernels().minlstm_backward(f, i, fn, ht, layer.hs, work, dproj, dh0, _consts(dh))
        _copy_back(work, G)
        return dproj, dh0[None]
    dh0 = scan.backward(fn, G, "step")
    # d f'_t = G ⊙ (h_{t-1} − h̃_t) (f' enters as f' h and as (1 − f') h̃); with s = f + i,
    # ∂f'/∂f = i/s² and ∂f'/∂i = −f/s², i.e. f' i' / f and −f' i' / i; then σ' = σ (1 − σ)
    dfn = np.subtract(layer.hs[:-1], ht)
    dfn *= G
    dfn *= fn
    dfn *= np.subtract(1.0, fn)  # d f' ⊙ f' i'
    df = np.subtract(1.0, f, out=dproj[..., :H])
    df *= dfn  # (1 − f) d f' f' i'
    di = np.subtract(i, 1.0, out=dproj[..., H : 2 * H])
    di *= dfn  # −(1 − i) d f' f' i'
    # d h̃_t = G ⊙ i'_t, through g'
    dht = np.subtract(1.0, fn, out=dproj[..., 2 * H :])
    dht *= G
    dht *= g_grad(ht)
    return dproj, dh0[None]


MINLSTM = CellType(
    name="minlstm",
    state_size=1,
    input_rows=3,
    bias=True,
    recurrent=None,
    own=_no_params,
    init=_init,
    forward=minlstm_forward,
    backward=minlstm_backward,
    forward1=minlstm_forward1,
)
