"""Every cell's window loop through compiled kernels: the same math, layouts and results as
``rnnlab.engine.cells`` (the numpy reference), a window's sequential loop run by numba.

``rnn_forward`` / ``rnn_backward`` / ``gru_forward`` / ``gru_backward`` / ``lstm_forward`` /
``lstm_backward`` take and return what their namesakes in ``rnnlab.engine.cells`` do, so the
engine's skeleton (input projection, layers, dropout, head, the weight gradients in
``rnn.backward``) and everything reading a ``cells.Layer`` (``cells.gate_block``, the diagnostics)
are unchanged. Where the kernels run (``compiled``): every cell at B = 1, where the numpy cells
spend most of a window in per-call overhead (one small GEMV and a few elementwise calls per
step); the gated cells at B > 1 too. The vanilla cell at B > 1 stays the numpy cell: three calls
per step around a (B, H) @ (H, H) product are already near its bound. Where they run at B = 1, a
training window's softmax cross-entropy head is compiled too (``xent_head1``: the logits, the
loss, d loss / d logits and the head's gradients in one call instead of ~15 numpy calls).

The gated kernels keep per-gate arrays batch-major (T, B, K·H) instead of the numpy cells'
gate-major memory: each step's gates are one (B, K·H) block for the step's product, and the gate
gradients come back as (T, B, G), which the engine reads as (T·B, G) rows — one GEMM for dW_hh, the
``scatter_columns`` below for dW_ih. (At B = 1 that is the numpy cells' own step-major layout.)
``Layer.saved["acts"]`` is still a (T, K, B, H) view (what ``cells.gate_block`` reads); a
backward pass must be given the same path's forward (the GRU keeps ``hn`` (T, B, H), W_hn
h + b_hn, instead of the numpy cell's ``hh`` and ``hmn``).

Results: float64 within ~1e-15 of the numpy cells (a vectorized tanh within 3 ulp of numpy's,
the same operations in the same order; fastmath only fuses multiply-adds, no reassociation).
float32 uses a rational approximation of tanh (``fused_kernels.fast_tanh``, |error| ≤ 3e-7,
tested over a dense grid), so it agrees with the numpy cells to ~1e-6 relative after a window.
Deterministic: the same inputs give the same bits on every run.

numba is imported on a process's first window through a kernel: ~0.2 s CPU plus loading the
cached kernels (``cache=True``, under ``__pycache__``; compiling them the first time costs a
cold process more, see docs/benchmarks.md). A process that trains nothing (every CLI start
before its first window, the report) never pays for it.
"""

from __future__ import annotations

import functools

import numpy as np

from rnnlab.engine import cells

_kernels = None


def kernels():
    """The numba kernels module, imported (and its BLAS pinned like the caller's) on first use."""
    global _kernels
    if _kernels is None:
        _kernels = _load_kernels()
    return _kernels


def _load_kernels():
    """Import rnnlab.engine.fused_kernels. The kernels' ``np.dot`` runs SciPy's BLAS, a library
    numpy does not use: a ``threadpool_limits`` entered before it was loaded (``train()`` pins BLAS
    to ``blas_threads``, the bench to 1) does not reach it, and OpenBLAS's default of one thread per
    core made small products 20x slower on this shared machine. So the libraries this import loads
    get the smallest thread count of those already loaded."""
    from threadpoolctl import ThreadpoolController

    before = {lib.filepath: lib.num_threads for lib in ThreadpoolController().lib_controllers}
    import scipy.linalg.cython_blas  # noqa: F401  (what numba's np.dot calls)

    from rnnlab.engine import fused_kernels

    if before:
        for lib in ThreadpoolController().lib_controllers:
            if lib.filepath not in before:
                lib.set_num_threads(min(before.values()))
    return fused_kernels


@functools.cache
def _row_map(blocks: tuple, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """``cells._gate_rows``'s row blocks ``(lo, hi, scale)`` as (rows (G,), scale (G,))."""
    rows = np.concatenate([np.arange(lo, hi) for lo, hi, _ in blocks]).astype(np.intp)
    scale = np.concatenate([np.full(hi - lo, sc) for lo, hi, sc in blocks]).astype(dtype)
    return rows, scale


def _transposed(W: np.ndarray, blocks: tuple, part: slice = slice(None)) -> np.ndarray:
    """(W's rows arranged by ``cells._gate_rows(·, blocks)``)[part].T, C-contiguous: (D, G').
    (numpy's copies beat ``gather_transposed`` here: 14 against 20 µs for a GRU's W_hh.)"""
    return np.ascontiguousarray(cells._gate_rows(W, list(blocks))[part].T)


def _input_rows(W_ih, b, blocks: tuple, x) -> tuple[np.ndarray, np.ndarray]:
    """The kernels' (table, rows): step t of stream b reads its input pre-activations
    W_ih x + b, with W_ih's and b's rows arranged by ``cells._gate_rows(·, blocks)``, as
    table[rows[t, b]]. Symbols (T, B): the (V, G) table W^T + b, the symbols as rows (a gather
    inside the step loop, no window-wide pass); dense (T, B, D): the (T·B, G) projections (one
    GEMM) and the row numbers."""
    T, B = x.shape[:2]
    if x.dtype.kind in "iu":
        V = W_ih.shape[1]
        if x.min() < 0 or x.max() >= V:
            raise IndexError(f"input symbols must be in [0, {V}); got {x.min()}..{x.max()}")
        rows, scale = _row_map(blocks, W_ih.dtype)
        table = np.empty((V, rows.size), dtype=W_ih.dtype)  # row s: W x + b for the one-hot s
        kernels().gather_transposed(W_ih, rows, scale, b[rows] * scale, table)
        return table, np.ascontiguousarray(x, dtype=np.intp)
    W, bb = cells._gate_rows(W_ih, blocks), cells._gate_rows(b, blocks)
    table = np.matmul(x.reshape(T * B, -1).astype(W.dtype, copy=False), W.T)  # (N, G)
    table += bb
    return table, np.arange(T * B, dtype=np.intp).reshape(T, B)


def _per_gate(a: np.ndarray, K: int) -> np.ndarray:
    """(T, K, B, H) view of batch-major (T, B, K·H) gates: what ``cells.gate_block`` reads."""
    T, B, G = a.shape
    return a.reshape(T, B, K, G // K).transpose(0, 2, 1, 3)


def _writable(a: np.ndarray, shape: tuple) -> np.ndarray:
    """What a kernel writes for ``a``: a itself when it is C-contiguous, else a contiguous copy
    (copy it back afterwards). The shape is checked here: the kernels do not check bounds."""
    if a.shape != shape:
        raise ValueError(f"expected shape {shape}, got {a.shape}")
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _batch_major(a: np.ndarray) -> np.ndarray:
    """The (T, B, K·H) memory under a ``_per_gate`` view."""
    T, K, B, H = a.shape
    return a.transpose(0, 2, 1, 3).reshape(T, B, K * H)  # a view: the memory is this order


SCATTER_INTO_COLUMNS = 48  # below this many steps (measured), scatter into dW's columns directly


def scatter_columns(sym: np.ndarray, dz: np.ndarray, dW: np.ndarray, db: np.ndarray) -> None:
    """dW[:, s] = sum of dz[n] over the steps n whose input symbol was s (0 for unseen s) and
    db = the sum of every dz[n]. sym: (N,) ints, dz: (N, G), dW: (G, V), db (G,), written in
    place (``rnn._scatter_columns`` and the bias's GEMV, in one compiled pass over the rows)."""
    V, G = dW.shape[1], dz.shape[1]
    sym, dz = np.ascontiguousarray(sym, dtype=np.intp), np.ascontiguousarray(dz)
    if sym.shape[0] < SCATTER_INTO_COLUMNS and dW.flags.c_contiguous and db.flags.c_contiguous:
        kernels().scatter_columns(sym, dz, dW, db)
        return
    dWT, total = np.empty((V, G), dtype=dz.dtype), np.empty(G, dtype=dz.dtype)
    kernels().scatter_rows(sym, dz, dWT, total)
    dW[...] = dWT.T
    db[...] = total


KERNEL_CELLS = ("rnn", "gru", "lstm")  # the cells with compiled window loops


def compiled(cell: str, batch_size: int) -> bool:
    """Whether ``cell``'s layers run through the kernels here at this batch size (the engine's
    default path; ``reference=True`` runs the numpy cells regardless)."""
    return cell in KERNEL_CELLS and (batch_size == 1 or cell != "rnn")


def compiled_head(cell: str, batch_size: int) -> bool:
    """Whether a training window's softmax cross-entropy head runs through ``xent_head1`` (the
    engine's default path, unweighted): at B = 1, for every cell (the head reads only the top
    layer's h). There the numpy head is ~15 calls around three small GEMMs, half of its time."""
    return batch_size == 1


def xent_head1(
    Why: np.ndarray, by: np.ndarray, top: np.ndarray, targets: np.ndarray,
    dWhy: np.ndarray, dby: np.ndarray, limit: float,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``rnn.softmax_xent`` of one stream's logits Why h_t + by and the head's part of
    ``rnn.backward``, in one compiled call: top (T, 1, H) what the head reads, targets (T, 1)
    ints; ``limit`` the largest |logit| the softmax takes unshifted (``rnn.softmax_xent``'s).
    Writes dWhy (O, H) and dby (O,); returns (the window's loss (1,), d loss / d top
    (T, 1, H)). Equal to the numpy head to float rounding (tested)."""
    T, _, H = top.shape
    V = Why.shape[0]
    tg = np.ascontiguousarray(targets.reshape(T), dtype=np.intp)
    k = kernels()
    if not k.rows_in_range(tg, V):
        raise IndexError(f"targets must be in [0, {V}); got {targets.min()}..{targets.max()}")
    dt = top.dtype
    z, dh = np.empty((T, V), dtype=dt), np.empty((T, 1, H), dtype=dt)
    loss = k.xent_head1(np.ascontiguousarray(top).reshape(T, H), Why, by, tg, dt.type(limit), z,
                        dWhy, dby, dh.reshape(T, H))  # fmt: skip
    return np.full(1, loss, dtype=dt), dh


def rnn_window1(
    params: dict, xs: np.ndarray, targets: np.ndarray, state0: np.ndarray, grads: dict,
    limit: float,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``rnn.loss_and_grads`` of one vanilla tanh layer (min-char-rnn's network), one stream, int
    symbols, the softmax cross-entropy head unweighted, no dropout: the whole window in one
    compiled call (``rnn_forward1``, ``xent_head1``, ``rnn_backward1``, dW_hh and the scatter in
    sequence), without the engine's per-window Python. xs, targets (T, 1) ints, state0 (1, 1, 1,
    H); writes every gradient into ``grads``; returns (the loss (1,), the last state (1, 1, 1, H)).
    ``limit``: as ``xent_head1``. Equal to the engine's path to float rounding (tested)."""
    T, H = xs.shape[0], params["Whh"].shape[0]
    Wxh = params["Wxh"]
    loss, hs = kernels().rnn_window1(
        Wxh, np.ascontiguousarray(xs.reshape(T), dtype=np.intp), params["bh"], params["Whh"],
        params["Why"], params["by"], np.ascontiguousarray(targets.reshape(T), dtype=np.intp),
        Wxh.dtype.type(limit), state0.reshape(H), grads["Wxh"], grads["Whh"], grads["bh"],
        grads["Why"], grads["by"],
    )  # fmt: skip
    return loss, hs[-1].reshape(1, 1, 1, H)


def clip_and_update(optimizer, clip, clip_norm):
    """For a training step with elementwise clipping and Adagrad (min-char-rnn's update, the
    char-RNN's default): a function ``update(params, grad)`` doing ``optim.clip_elementwise``
    then ``optimizer.step`` in one compiled pass over the flat buffers, with the same bits
    (tested); None for every other step, which keeps the numpy calls. It reads the flat buffers
    only, so every cell and batch size takes it: ~80 µs → ~20 µs for a GRU's 62,680 float32
    parameters, ~3% of its B=32 window; at B = 1 float64 a window's numpy clip and update cost
    about as much as a vanilla window's steps. (A process that trains this way imports numba on
    its first update, if no window through a kernel did before.)"""
    from rnnlab.engine.optim import Adagrad

    if (
        type(optimizer) is not Adagrad
        or optimizer.weight_decay
        or clip is None
        or clip_norm is not None
    ):
        return None
    mem = optimizer.memories["mem"]
    dt = mem.dtype.type
    limit, eps = dt(clip), dt(optimizer.eps)

    def update(params: np.ndarray, grad: np.ndarray) -> None:
        optimizer.steps += 1
        lr = dt(optimizer.learning_rate)  # read per step: a schedule sets it
        kernels().clip_adagrad(params, grad, mem, limit, lr, eps)

    return update


# --- one stream (B = 1) --------------------------------------------------------------------------


def one_stream_inputs(W: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The B = 1 kernels' (Wx, rows): step t's input pre-activation is Wx[:, rows[t]] + b. x:
    (T, 1) int symbols, read as columns of W (G, V) itself, or (T, 1, D) floats, whose (T, G)
    projection (one GEMM) is read through its transpose."""
    T = x.shape[0]
    if x.dtype.kind in "iu":
        rows = np.ascontiguousarray(x[:, 0], dtype=np.intp)
        if not kernels().rows_in_range(rows, W.shape[1]):
            V = W.shape[1]
            raise IndexError(f"input symbols must be in [0, {V}); got {x.min()}..{x.max()}")
        return W, rows
    proj = np.matmul(x.reshape(T, -1).astype(W.dtype, copy=False), W.T)  # (T, G)
    return proj.T, np.arange(T, dtype=np.intp)


def _one_stream_states(state0: np.ndarray, T: int, H: int, dt) -> np.ndarray:
    """(S, T+1, 1, H): each of the S state arrays of one stream over a window, step 0 set from
    state0 (S, 1, H)."""
    states = np.empty((state0.shape[0], T + 1, 1, H), dtype=dt)
    states[:, 0] = state0
    return states


# --- vanilla ------------------------------------------------------------------------------------


def rnn_forward(Wxh, bh, Whh, b_rec, x, state0, activation) -> cells.Layer:
    """cells.rnn_forward, through the kernel at B = 1."""
    T, B = x.shape[:2]
    if B > 1:
        return cells.rnn_forward(Wxh, bh, Whh, b_rec, x, state0, activation)
    H = Whh.shape[0]
    dt = Wxh.dtype
    (hs,) = _one_stream_states(state0, T, H, dt)
    kernels().rnn_forward1(
        *one_stream_inputs(Wxh, x), bh, np.ascontiguousarray(Whh), hs.reshape(T + 1, H),
        np.empty(H, dt), activation == "tanh",
    )  # fmt: skip
    return cells.Layer(hs=hs, state=hs[-1][None])


def rnn_backward(layer: cells.Layer, Whh: np.ndarray, dz: np.ndarray, activation, trace=None):
    """cells.rnn_backward, through the kernel at B = 1 (given this module's forward)."""
    T, B, H = dz.shape
    if B > 1:
        return cells.rnn_backward(layer, Whh, dz, activation, trace)
    work = _writable(dz, (T, 1, H))
    out = work if trace is None else _writable(trace, (T, 1, H))
    dhnext = np.zeros((1, 1, H), dtype=dz.dtype)
    kernels().rnn_backward1(
        layer.hs.reshape(T + 1, H), np.ascontiguousarray(Whh), work.reshape(T, H),
        trace is not None, out.reshape(T, H), dhnext.reshape(H), activation == "tanh",
    )  # fmt: skip
    if work is not dz:
        dz[...] = work
    if trace is not None and out is not trace:
        trace[...] = out
    return dz, dz, dhnext


# --- GRU ----------------------------------------------------------------------------------------


def gru_forward(W_ih, b_ih, W_hh, b_hh, x, state0, activation=None) -> cells.Layer:
    """cells.gru_forward, through the kernels."""
    T, B = x.shape[:2]
    H = W_hh.shape[1]
    dt = W_hh.dtype
    b = b_ih.copy()
    b[: 2 * H] += b_hh[: 2 * H]  # b_hr, b_hz add outside r ⊙ (...): fold them in once
    if B == 1:
        (hs,) = _one_stream_states(state0, T, H, dt)
        acts, hn = np.empty((T, 1, 3 * H), dtype=dt), np.empty((T, 1, H), dtype=dt)
        kernels().gru_forward1(
            *one_stream_inputs(W_ih, x), b, np.ascontiguousarray(W_hh), b_hh[2 * H :].copy(),
            hs.reshape(T + 1, H), acts.reshape(T, 3 * H), hn.reshape(T, H), np.empty(3 * H, dt),
        )  # fmt: skip
        saved = {"acts": _per_gate(acts, 3), "hn": hn}
        return cells.Layer(hs=hs, state=hs[-1][None].copy(), saved=saved)
    blocks = ((0, 2 * H, 0.5), (2 * H, 3 * H, 1.0))  # σ(a) = ½ + ½ tanh(a/2): r, z rows halved
    table, rows = _input_rows(W_ih, b, blocks, x)
    WT = _transposed(W_hh, blocks)  # (H, 3H)
    hs = np.empty((T + 1, B, H), dtype=dt)
    hs[0] = state0[0]
    acts = np.empty((T, B, 3 * H), dtype=dt)  # the gates r z n
    hn = np.empty((T, B, H), dtype=dt)  # W_hn h_{t-1} + b_hn
    g = np.empty((B, 3 * H), dtype=dt)
    b_hn = b_hh[2 * H :].copy()
    kernels().gru_forward(table, rows, WT, b_hn, hs, acts, hn, g)
    saved = {"acts": _per_gate(acts, 3), "hn": hn}
    return cells.Layer(hs=hs, state=hs[-1][None].copy(), saved=saved)


def gru_backward(layer: cells.Layer, W_hh: np.ndarray, dh: np.ndarray, activation=None, trace=None):
    """cells.gru_backward, through the kernel (given this module's forward); the gradients come
    back batch-major, (T, B, 3H) each."""
    T, B, H = dh.shape
    dt = dh.dtype
    dh = cells.backward_buffer(dh, trace)
    dproj, drec = np.empty((T, B, 3 * H), dtype=dt), np.empty((T, B, 3 * H), dtype=dt)
    dhnext = np.zeros((B, H), dtype=dt)
    acts = _batch_major(layer.saved["acts"])
    work = _writable(dh, (T, B, H))
    kernels().gru_backward(
        acts, layer.saved["hn"], layer.hs, np.ascontiguousarray(W_hh),
        work, trace is not None, dproj, drec, dhnext, np.empty((B, H), dtype=dt),
    )  # fmt: skip
    if work is not dh:
        dh[...] = work
    return dproj, drec, dhnext[None]


# --- LSTM ---------------------------------------------------------------------------------------


def lstm_forward(W_ih, b_ih, W_hh, b_hh, x, state0, activation=None) -> cells.Layer:
    """cells.lstm_forward, through the kernels."""
    T, B = x.shape[:2]
    H = W_hh.shape[1]
    dt = W_hh.dtype
    if B == 1:
        (hs, cs), acts = _one_stream_states(state0, T, H, dt), np.empty((T, 1, 4 * H), dtype=dt)
        kernels().lstm_forward1(
            *one_stream_inputs(W_ih, x), b_ih + b_hh, np.ascontiguousarray(W_hh),
            hs.reshape(T + 1, H), cs.reshape(T + 1, H), acts.reshape(T, 4 * H),
            np.empty(4 * H, dt),
        )  # fmt: skip
        return cells.Layer(
            hs=hs,
            state=np.stack([hs[-1], cs[-1]]),  # (2, 1, H)
            saved={"acts": _per_gate(acts, 4), "cs": cs},  # o i f g, as the kernels at B > 1
            gate_order=(1, 2, 3, 0),
        )
    blocks = tuple(cells._lstm_rows(H, 0.5))  # the internal gate order o i f g, σ rows halved
    table, rows = _input_rows(W_ih, b_ih + b_hh, blocks, x)
    # W_hh^T's o i and f g columns (σ halved), (H, 2H) each
    WT_oi, WT_fg = (
        _transposed(W_hh, blocks, slice(0, 2 * H)),
        _transposed(W_hh, blocks, slice(2 * H, None)),
    )
    hs = np.empty((T + 1, B, H), dtype=dt)
    cs = np.empty((T + 1, B, H), dtype=dt)
    hs[0], cs[0] = state0[0], state0[1]
    acts = np.empty((T, B, 4 * H), dtype=dt)  # the gates o i f g
    g_oi, g_fg = np.empty((B, 2 * H), dtype=dt), np.empty((B, 2 * H), dtype=dt)
    kernels().lstm_forward(table, rows, WT_oi, WT_fg, hs, cs, acts, g_oi, g_fg)
    return cells.Layer(
        hs=hs,
        state=np.stack([hs[-1], cs[-1]]),  # (2, B, H)
        saved={"acts": _per_gate(acts, 4), "cs": cs},  # no tanh(c_t): the backward recomputes it
        gate_order=(1, 2, 3, 0),  # i f g o among the internal o i f g
    )


def lstm_backward(
    layer: cells.Layer, W_hh: np.ndarray, dh: np.ndarray, activation=None, trace=None, c_trace=None
):
    """cells.lstm_backward, through the kernel; the gate gradients come back batch-major,
    (T, B, 4H) in PyTorch's order i f g o."""
    T, B, H = dh.shape
    dt = dh.dtype
    dh = cells.backward_buffer(dh, trace)
    dG = np.empty((T, B, 4 * H), dtype=dt)
    dhnext, dcnext = np.zeros((B, H), dtype=dt), np.zeros((B, H), dtype=dt)
    keep = trace is not None or c_trace is not None  # write the traces, or neither
    if c_trace is not None:
        c_out = _writable(c_trace, (T, B, H))
    else:  # the kernel writes all of it when keep (one trace asked for), none of it otherwise
        c_out = np.empty((T, B, H if keep else 1), dtype=dt)
    acts = _batch_major(layer.saved["acts"])
    work = _writable(dh, (T, B, H))
    if B == 1:
        kernels().lstm_backward1(
            acts.reshape(T, 4 * H), layer.saved["cs"].reshape(T + 1, H),
            np.ascontiguousarray(W_hh), work.reshape(T, H), keep, dG.reshape(T, 4 * H),
            dhnext.reshape(H), dcnext.reshape(H), c_out.reshape(T, -1),
        )  # fmt: skip
    else:
        W_if, W_go = np.ascontiguousarray(W_hh[: 2 * H]), np.ascontiguousarray(W_hh[2 * H :])
        kernels().lstm_backward(
            acts, layer.saved["cs"], W_if, W_go, work, keep, dG, dhnext, dcnext, c_out,
            np.empty((B, 2 * H), dtype=dt), np.empty((B, 2 * H), dtype=dt),
            np.empty((B, H), dtype=dt),
        )  # fmt: skip
    if work is not dh:
        dh[...] = work
    if c_trace is not None and c_out is not c_trace:
        c_trace[...] = c_out
    return dG, dG, np.stack([dhnext, dcnext])
