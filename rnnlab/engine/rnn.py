"""The shared recurrent network: forward pass, output heads and BPTT, as pure numpy functions.

One engine serves every task and every cell. The vanilla recurrence (min-char-rnn's) is

    h_t = act(Wxh x_t + Whh h_{t-1} + bh)        y_t = Why h_t + by

with ``act`` tanh (char-RNN) or sigmoid (adder); the gated cells (GRU, LSTM, PyTorch's equations)
live in ``rnnlab.engine.cells``. This module holds the skeleton they all share: the input projection
of a window at once, ``Spec.layers`` stacked layers (layer k > 0 reads layer k-1's h), inverted
dropout on each layer's output, the output head on the top layer (its loss weighted per step:
a task judged at its last step masks the others out), and BPTT with every weight gradient a big
GEMM. Inputs arrive either as integer symbols, looked up as columns of ``Wxh`` (never
a one-hot matmul), or as dense float vectors (the adder's two bits per step). Arrays are time-major
and batch-second: ``xs`` is (T, B) or (T, B, D); the carried state is (L, S, B, H) — h (and the
LSTM's c) of every layer. Weights keep min-char-rnn's orientation (``Wxh`` is (H, D)) and names;
one vanilla layer without dropout is bit for bit min-char-rnn's ``lossFun``.

The cells after those (docs/cells.md): the IRNN is the vanilla layer with ReLU and Whh = I at init
(Le et al. 2015); IndRNN, minGRU, minLSTM and the LRU live in their own modules, each described by
a ``cell_api.CellType`` (its own parameters, init and sequential part) and run through the same
skeleton; the LRU carries (Re x, Im x) as its state.

Nothing here does I/O, reads config or keeps state between calls.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from rnnlab.engine import cell_api, cells, fused, indrnn, irnn, lru, mincells

Params = dict[str, np.ndarray]
PARAM_NAMES = ("Wxh", "Whh", "Why", "bh", "by")


_sigmoid = cells.sigmoid  # 1 / (1 + e^-z), optionally in place
# activation -> (function(z, out), derivative written in terms of the output h): the vanilla cell's
ACTIVATIONS = cells.ACTIVATIONS

# the cells described by a CellType (cell_api): their own parameters and sequential part
TYPED: dict[str, cell_api.CellType] = {
    c.name: c for c in (indrnn.CELL, mincells.MINGRU, mincells.MINLSTM, lru.CELL)
}
VANILLA = ("rnn", "irnn")  # min-char-rnn's weights and names, the vanilla layer functions
CELL_NAMES = ("rnn", "gru", "lstm", "irnn", *TYPED)
GATES = {"rnn": 1, "gru": 3, "lstm": 4, "irnn": 1}  # rows of W_hh per hidden unit


@dataclass(frozen=True)
class Spec:
    """What a network is, besides its sizes in and out: the cell, the depth, the width."""

    cell: str = "rnn"  # one of CELL_NAMES (docs/cells.md)
    layers: int = 1  # stacked layers; layer k > 0 reads layer k-1's h
    hidden_size: int = 100  # units per layer
    activation: str = "tanh"  # the vanilla cell's nonlinearity (gated cells use σ and tanh)
    dropout: float = 0.0  # inverted dropout on each layer's output, training only
    scan: bool = True  # mingru, minlstm, lru: the window's recurrence by a scan (else per step)

    @property
    def state_size(self) -> int:
        """S: arrays per layer in the carried state, h (and c for the LSTM; Re, Im for the
        LRU)."""
        if self.cell in TYPED:
            return TYPED[self.cell].state_size
        return 2 if self.cell == "lstm" else 1


def spec_of(cfg) -> Spec:
    """The Spec a Config describes."""
    return Spec(cfg.cell, cfg.layers, cfg.hidden_size, cfg.task.activation, cfg.dropout, cfg.scan)


def cell_options(cfg, window: int):
    """What a Config says about its cell's initialisation and constraint, in the engine's terms
    (``init_params``' and ``constraint``'s ``options``): the IRNN's identity scale, the IndRNN's
    bound on |u| (``window``: the steps BPTT runs over, the bound's horizon unless
    ``indrnn.horizon`` sets one), the LRU's ring; None for the other cells."""
    if cfg.cell == "irnn":
        return cfg.irnn.identity_scale
    if cfg.cell == "indrnn":
        return cfg.indrnn.u_max(window)
    if cfg.cell == "lru":
        return cfg.lru
    return None


def constraint(spec: Spec, options=None) -> Callable[[Params], None] | None:
    """What to do to the parameters after every update: the IndRNN clips |u| ≤ its bound
    (``options``, as ``cell_options`` gives it); None for every other cell."""
    if spec.cell != "indrnn":
        return None
    u_max = options or indrnn.IndRNNConfig().u_max(indrnn.DEFAULT_WINDOW)
    names = [TYPED["indrnn"].names(k)["u"] for k in range(spec.layers)]

    def clip(params: Params) -> None:
        for name in names:
            indrnn.constrain(params[name], u_max)

    return clip


def zero_state(spec: Spec, batch: int, dtype) -> np.ndarray:
    """The all-zero carried state, (L, S, B, H): h (and c) of every layer and stream."""
    return np.zeros((spec.layers, spec.state_size, batch, spec.hidden_size), dtype=dtype)


def layer_names(spec: Spec, k: int) -> tuple[str, str, str, str | None]:
    """Names of layer k's (input weight, recurrent weight, input bias, recurrent bias)."""
    return _layer_names(spec.cell, k)


@functools.cache
def _layer_names(cell: str, k: int) -> tuple[str, str | None, str | None, str | None]:
    if cell in VANILLA:  # min-char-rnn's names, one bias; deeper layers get a suffix
        s = "" if k == 0 else f"_l{k}"
        return f"Wxh{s}", f"Whh{s}", f"bh{s}", None
    if cell in TYPED:  # W_ih_l{k}, the recurrent weight if the cell has one, b_ih_l{k} if any
        c = TYPED[cell]
        names = c.names(k)
        return names["W_ih"], names.get(c.recurrent), names.get("b_ih"), None
    return f"W_ih_l{k}", f"W_hh_l{k}", f"b_ih_l{k}", f"b_hh_l{k}"  # PyTorch's


def param_shapes(
    input_size: int, hidden_size: int, output_size: int, spec: Spec | None = None
) -> dict[str, tuple]:
    """Shapes of every parameter, in min-char-rnn's (= PyTorch's) orientation: W is (out, in).
    The order is the flat buffer's; one vanilla layer keeps today's Wxh, Whh, Why, bh, by."""
    spec = spec or Spec(hidden_size=hidden_size)
    H = hidden_size
    ins = [input_size] + [H] * (spec.layers - 1)
    shapes: dict[str, tuple] = {}
    if spec.cell in TYPED:
        for k, D in enumerate(ins):
            shapes |= TYPED[spec.cell].shapes(k, D, H)
        shapes["Why"] = (output_size, H)
    elif spec.cell in VANILLA:
        for k, D in enumerate(ins):
            W_in, W_rec, _, _ = layer_names(spec, k)
            shapes |= {W_in: (H, D), W_rec: (H, H)}
        shapes["Why"] = (output_size, H)
        shapes |= {layer_names(spec, k)[2]: (H,) for k in range(spec.layers)}
    else:
        G = GATES[spec.cell] * H
        for k, D in enumerate(ins):
            W_in, W_rec, b_in, b_rec = layer_names(spec, k)
            shapes |= {W_in: (G, D), W_rec: (G, H), b_in: (G,), b_rec: (G,)}
        shapes["Why"] = (output_size, H)
    shapes["by"] = (output_size,)
    return shapes


def packed_zeros(shapes: dict[str, tuple], dtype) -> tuple[np.ndarray, Params]:
    """One flat zero buffer and named views into it.

    Parameters, gradients and optimizer memories all live in such buffers, so an optimizer step
    or a clip is a few numpy calls over one vector instead of a few per matrix.
    """
    flat = np.zeros(sum(int(np.prod(s)) for s in shapes.values()), dtype=dtype)
    views, offset = {}, 0
    for name, shape in shapes.items():
        size = int(np.prod(shape))
        views[name] = flat[offset : offset + size].reshape(shape)
        offset += size
    return flat, views


def init_params(
    input_size: int,
    hidden_size: int,
    output_size: int,
    rng: np.random.Generator,
    init: str = "normal",
    scale: float = 0.01,
    dtype: str | np.dtype = np.float64,
    spec: Spec | None = None,
    options=None,
) -> tuple[np.ndarray, Params]:
    """Fresh weights as (flat buffer, named views). ``normal``: N(0, scale²) as min-char-rnn;
    ``uniform``: U[-scale, scale) as iamtrask's adder (scale 1); vanilla biases start at zero.
    Gated layers initialise as PyTorch does, every weight and bias U(-1/√H, 1/√H); the IRNN and
    the CellType cells as their papers (docs/cells.md; ``options``: ``cell_options``); ``init``
    then selects the output layer's Why."""
    spec = spec or Spec(hidden_size=hidden_size)
    shapes = param_shapes(input_size, hidden_size, output_size, spec)
    flat, params = packed_zeros(shapes, dtype)

    def draw(shape):
        if init == "normal":
            return rng.standard_normal(shape) * scale
        if init == "uniform":
            return (2.0 * rng.random(shape) - 1.0) * scale
        raise ValueError(f"unknown init {init!r}; allowed: normal, uniform")

    ins = [input_size] + [hidden_size] * (spec.layers - 1)
    if spec.cell == "irnn":  # Le et al.: Whh = I (scaled), bh = 0, Wxh ~ N(0, 0.001²)
        for k in range(spec.layers):
            W_in, W_rec, b_in, _ = layer_names(spec, k)
            irnn.init(params[W_in], params[W_rec], params[b_in], rng, options)
        params["Why"][...] = draw(params["Why"].shape)
    elif spec.cell in TYPED:
        c = TYPED[spec.cell]
        for k, D in enumerate(ins):
            c.init(c.layer(params, k), rng, D, hidden_size, k == spec.layers - 1, options)
        params["Why"][...] = draw(params["Why"].shape)
    elif spec.cell == "rnn":
        # Wxh, Whh, Why first, in this order: one layer draws exactly today's numbers
        names = ["Wxh", "Whh", "Why"]
        names += [n for k in range(1, spec.layers) for n in layer_names(spec, k)[:2]]
        for name in names:
            params[name][...] = draw(params[name].shape)
    else:
        bound = 1.0 / math.sqrt(hidden_size)
        for k in range(spec.layers):
            for name in layer_names(spec, k):
                params[name][...] = rng.uniform(-bound, bound, params[name].shape)
        params["Why"][...] = draw(params["Why"].shape)
    return flat, params


@dataclass
class Forward:
    """What the backward pass needs from the forward pass."""

    xs: np.ndarray  # (T, B) int symbols or (T, B, D) float inputs
    hs: np.ndarray  # (T+1, B, H) the top layer's h; hs[0] its initial h, hs[t+1] after step t
    logits: np.ndarray | None  # (T, B, O); None when the head ran elsewhere (loss_and_grads)
    activation: str
    spec: Spec | None = None
    layers: list = field(default_factory=list)  # per layer: cells.Layer
    inputs: list = field(default_factory=list)  # per layer: what it read, (T, B) or (T, B, D)
    top: np.ndarray | None = None  # (T, B, H) what the head read (top h after dropout)
    masks: list | None = None  # per layer (T, B, H) dropout masks, None when off
    state: np.ndarray | None = None  # (L, S, B, H) final state
    reference: bool = False  # the gated layers ran the numpy cells (REFERENCE_CELLS)


def _irnn_layer_forward(Wxh, bh, Whh, b_rec, x, state0, activation=None) -> cells.Layer:
    """One IRNN layer: the vanilla layer with relu, whatever the task's activation."""
    return cells.rnn_forward(Wxh, bh, Whh, b_rec, x, state0, "relu")


def _irnn_layer_backward(layer: cells.Layer, Whh, dz, activation=None, trace=None):
    return cells.rnn_backward(layer, Whh, dz, "relu", trace)


# cell -> (one layer's forward, its backward); the skeleton in forward/backward is shared. Every
# classic cell runs through compiled window loops (rnnlab.engine.fused) at B = 1, the gated cells
# at B > 1 too; the vanilla cell at B > 1 is the numpy cell (BLAS-bound there already), as is the
# IRNN at every B. The CellType cells (TYPED) are not here: their layers run through their own
# forward and backward (scan kernels or per-step numpy; minGRU's and minLSTM's scan at B = 1
# through kernels that read W_ih's columns themselves, their CellType's ``forward1``).
CELLS: dict[str, tuple[Callable, Callable]] = {
    "rnn": (fused.rnn_forward, fused.rnn_backward),
    "irnn": (_irnn_layer_forward, _irnn_layer_backward),
    "gru": (fused.gru_forward, fused.gru_backward),
    "lstm": (fused.lstm_forward, fused.lstm_backward),
}
# the numpy cells at every B: the reference the kernels are tested against (``reference=True``)
REFERENCE_CELLS: dict[str, tuple[Callable, Callable]] = {
    "rnn": (cells.rnn_forward, cells.rnn_backward),
    "irnn": (_irnn_layer_forward, _irnn_layer_backward),
    "gru": (cells.gru_forward, cells.gru_backward),
    "lstm": (cells.lstm_forward, cells.lstm_backward),
}


def dropout_masks(spec: Spec, T: int, B: int, dtype, rng: np.random.Generator) -> list:
    """Inverted dropout masks, one (T, B, H) per layer: 0 with probability p, else 1/(1-p)."""
    keep = 1.0 - spec.dropout
    return [
        (rng.random((T, B, spec.hidden_size)) < keep).astype(dtype) / keep
        for _ in range(spec.layers)
    ]


def forward(
    params: Params,
    xs: np.ndarray,
    hprev: np.ndarray,
    spec: Spec,
    masks: list | None = None,
    dropout_rng: np.random.Generator | None = None,
    reference: bool = False,
    logits: bool = True,
) -> Forward:
    """Run the network over a window. xs: (T, B) ints or (T, B, D) floats; hprev: the state
    (L, S, B, H) (``zero_state`` makes one). Dropout applies
    when given ``masks`` or, with spec.dropout > 0, a ``dropout_rng`` to draw them from.
    ``reference``: gated layers through the numpy cells at every B (the kernels' reference).
    ``logits=False``: the head's logits are left to the caller (``Forward.logits`` is None)."""
    state0 = hprev  # (L, S, B, H)
    T, B = xs.shape[:2]
    dtype = params["Why"].dtype
    if masks is None and spec.dropout > 0.0 and dropout_rng is not None:
        masks = dropout_masks(spec, T, B, dtype, dropout_rng)
    typed = TYPED.get(spec.cell)
    layer_forward, _ = (REFERENCE_CELLS if reference else CELLS).get(spec.cell, (None, None))
    x, layers, inputs = xs, [], []
    for k in range(spec.layers):
        W_in, W_rec, b_in, b_rec = layer_names(spec, k)
        inputs.append(x)
        if typed is not None:  # the window's projections here, the cell's sequential part there
            lp = typed.layer(params, k)
            use_scan = spec.scan and not reference  # reference: the step path, at every B
            if use_scan and B == 1 and typed.forward1 is not None:  # its kernel reads x itself
                layer = typed.forward1(lp, x, state0[k])
            else:
                proj = cell_api.project(lp["W_ih"], lp.get("b_ih"), x)  # (T, B, K·H)
                layer = typed.forward(lp, proj, state0[k], use_scan)
        else:
            layer = layer_forward(
                params[W_in], params[b_in], params[W_rec], params.get(b_rec), x, state0[k],
                spec.activation,
            )  # fmt: skip
        layers.append(layer)
        x = layer.hs[1:]  # (T, B, H) this layer's outputs
        if masks is not None:
            x = x * masks[k]  # inverted dropout on what the next layer (or the head) reads
    out = None
    if logits:
        Why, by = params["Why"], params["by"]
        out = np.matmul(x.reshape(T * B, -1), Why.T).reshape(T, B, -1)  # (T, B, O)
        out += by
    # (L, S, B, H): every layer's final state (one layer: a view of its own, no copy)
    state = layers[0].state[None] if spec.layers == 1 else np.stack([s.state for s in layers])
    return Forward(
        xs=xs,
        hs=layers[-1].hs,
        logits=out,
        activation=spec.activation,
        spec=spec,
        layers=layers,
        inputs=inputs,
        top=x,
        masks=masks,
        state=state,
        reference=reference,
    )


def backward(
    params: Params,
    fwd: Forward,
    dlogits: np.ndarray,
    grads: Params | None = None,
    dh_trace: np.ndarray | None = None,
    dc_trace: np.ndarray | None = None,
) -> tuple[Params, np.ndarray]:
    """Backpropagation through time over the window, through every layer.

    dlogits: (T, B, O), the loss gradient w.r.t. the logits (overwritten). Writes the parameter
    gradients into ``grads`` (same keys and shapes as ``params``; allocated when None) and returns
    them with the gradient w.r.t. the initial state, (L, S, B, H). ``dh_trace`` (L, T, B, H), when
    given, receives d loss / d h_t of every layer and step (h_t the layer's output of step t, before
    dropout; d loss / d h_0 is the returned state gradient): what BPTT computes anyway. ``dc_trace``
    (L, T, B, H), LSTM only, the same for its cell state c_t (through h_t and c_{t+1})."""
    T, B, H = fwd.top.shape
    N = T * B
    if grads is None:
        grads = packed_zeros({k: v.shape for k, v in params.items()}, fwd.top.dtype)[1]
    dl = dlogits.reshape(N, -1)  # (N, O)
    # Bias gradients are column sums, done as GEMVs with a ones vector: numpy's column-wise
    # reduction over (N, O) is ~5x slower at B=32.
    ones = np.ones(N, dtype=fwd.top.dtype)
    np.matmul(dl.T, fwd.top.reshape(N, H), out=grads["Why"])  # (O, H)
    np.matmul(ones, dl, out=grads["by"])  # (O,) = sum over the N rows
    dh = np.matmul(dl, params["Why"]).reshape(T, B, H)  # each output's gradient into the top h_t
    return backward_from_top(params, fwd, dh, grads, dh_trace, dc_trace, ones)


def backward_from_top(
    params: Params,
    fwd: Forward,
    dh: np.ndarray,
    grads: Params,
    dh_trace: np.ndarray | None = None,
    dc_trace: np.ndarray | None = None,
    ones: np.ndarray | None = None,
) -> tuple[Params, np.ndarray]:
    """``backward`` below the head: dh (T, B, H) the loss gradient w.r.t. what the head read
    (``Forward.top``; overwritten), the head's own gradients already in ``grads``. Returns what
    ``backward`` does. ``ones``: a (T·B,) vector of ones, when the caller has one."""
    spec = fwd.spec
    typed = TYPED.get(spec.cell)
    _, layer_backward = (REFERENCE_CELLS if fwd.reference else CELLS).get(spec.cell, (None, None))
    T, B, H = dh.shape
    N = T * B
    dtype = dh.dtype
    if ones is None:
        ones = np.ones(N, dtype=dtype)
    dstates = [None] * spec.layers
    # where the layers ran through the kernels (engine.fused), and for the CellType cells at every
    # B, dW_ih is scattered (and b_ih summed) compiled too; the numpy cells keep the numpy scatter
    kernels = (fused.compiled(spec.cell, B) or typed is not None) and not fwd.reference
    for k in reversed(range(spec.layers)):
        W_in, W_rec, b_in, b_rec = layer_names(spec, k)
        layer, x = fwd.layers[k], fwd.inputs[k]
        if fwd.masks is not None:
            dh *= fwd.masks[k]  # through the dropout on this layer's output
        # d input pre-activations (N, G), d recurrent pre-activations (N, G), d initial state
        trace = None if dh_trace is None else dh_trace[k]
        if typed is not None:  # its own parameters' gradients written by the cell
            scan = spec.scan and not fwd.reference  # as the forward ran
            dproj, dstates[k] = typed.backward(
                layer, typed.layer(params, k), dh, scan, trace, typed.layer(grads, k)
            )
            drec = None
        else:
            more = {} if dc_trace is None else {"c_trace": dc_trace[k]}  # the LSTM's dL/dc_t
            dproj, drec, dstates[k] = layer_backward(
                layer, params[W_rec], dh, spec.activation, trace, **more
            )
            if dproj.ndim == 4 and B > 1:  # a gated cell's (T, K, B, H), gate-major in memory
                dh = _gate_major_grads(params, grads, spec, k, x, layer.hs, dproj, drec, ones)
                continue
        dprojf = dproj.reshape(N, -1)  # (N, G): batch-major (a gated cell's at B = 1 too)
        if drec is not None:
            drecf = dprojf if drec is dproj else drec.reshape(N, -1)
            np.matmul(drecf.T, layer.hs[:-1].reshape(N, H), out=grads[W_rec])  # (G, H)
        if b_rec is not None:
            np.matmul(ones, drecf, out=grads[b_rec])  # (G,)
        # the LRU's projection has no bias: its sum goes to a scratch array
        db_in = grads[b_in] if b_in is not None else np.empty(dprojf.shape[1], dtype=dtype)
        if kernels and x.dtype.kind in "iu":  # the compiled scatter sums b_in on its way
            fused.scatter_columns(x.reshape(N), dprojf, grads[W_in], db_in)
        elif x.dtype.kind in "iu":  # integer symbols
            if b_in is not None:
                np.matmul(ones, dprojf, out=db_in)  # (G,) = sum over the N rows
            _scatter_columns(x.reshape(N), dprojf, grads[W_in])
        else:
            if b_in is not None:
                np.matmul(ones, dprojf, out=db_in)
            np.matmul(dprojf.T, x.reshape(N, -1).astype(dtype, copy=False), out=grads[W_in])
        if k > 0:  # into the layer below's outputs
            dh = np.matmul(dprojf, params[W_in]).reshape(T, B, H)
    return grads, dstates[0][None] if spec.layers == 1 else np.stack(dstates)


def _gate_major_grads(params, grads, spec, k, x, hs, dproj, drec, ones):
    """Layer k's weight and bias gradients from a gated cell's gate gradients dproj (input
    pre-activations) and drec (recurrent ones), each (T, K, B, H) with gate-major memory: each
    gate's (N, H) rows are contiguous, so every product is one batched GEMM over the gates.
    Returns the gradient into the layer's input (T, B, D) when k > 0, else None."""
    W_in, W_rec, b_in, b_rec = layer_names(spec, k)
    T, K, B, H = dproj.shape
    N = T * B
    dp = dproj.transpose(1, 0, 2, 3).reshape(K, N, H)  # views: (K, N, H) per gate
    dr = drec.transpose(1, 0, 2, 3).reshape(K, N, H)
    h_in = hs[:-1].reshape(N, H)
    # one GEMM per gate, batched: (K, H, N) @ (N, H) is dW_hh by gate
    np.matmul(dr.transpose(0, 2, 1), h_in, out=grads[W_rec].reshape(K, H, H))
    np.matmul(ones, dr, out=grads[b_rec].reshape(K, H))  # (K, H) = sum over the N rows
    np.matmul(ones, dp, out=grads[b_in].reshape(K, H))
    D = params[W_in].shape[1]
    dW_in = grads[W_in].reshape(K, H, D)
    if x.dtype.kind in "iu":  # integer symbols
        _scatter_gate_columns(x.reshape(N), dp, dW_in)
    else:
        xf = x.reshape(N, -1).astype(dp.dtype, copy=False)
        np.matmul(dp.transpose(0, 2, 1), xf, out=dW_in)
    if k == 0:
        return None
    # into the layer below's outputs: Σ over the gates of (N, H) @ (H, D)
    return np.matmul(dp, params[W_in].reshape(K, H, D)).sum(axis=0).reshape(T, B, D)


def _symbol_runs(sym: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The steps sorted by input symbol: (order (N,), the sorted symbols (N,), starts (S,) — the
    first sorted position of each of the S distinct symbols)."""
    order = np.argsort(sym, kind="stable")
    sorted_sym = sym[order]
    run_start = np.empty(sym.shape[0], dtype=bool)
    run_start[0] = True
    np.not_equal(sorted_sym[1:], sorted_sym[:-1], out=run_start[1:])
    return order, sorted_sym, np.flatnonzero(run_start)


def _scatter_gate_columns(sym: np.ndarray, dz: np.ndarray, dW: np.ndarray) -> None:
    """dW[k, :, s] = sum of dz[k, n] over the steps n whose input symbol was s; 0 for unseen s.
    sym: (N,) ints, dz: (K, N, H) per gate, dW: (K, H, V), written in place. The steps sorted
    by symbol, each run of equal symbols summed (one reduce per distinct symbol over
    contiguous rows: ~2x faster than ``np.add.reduceat`` over these shapes)."""
    N = sym.shape[0]
    order, sorted_sym, starts = _symbol_runs(sym)
    K, _, H = dz.shape
    dzs = dz.transpose(1, 0, 2)[order]  # (N, K, H): the steps' rows, sorted by symbol
    sums = np.empty((starts.size, K, H), dtype=dz.dtype)  # (S, K, H)
    bounds = starts.tolist() + [N]
    for i in range(starts.size):
        np.add.reduce(dzs[bounds[i] : bounds[i + 1]], axis=0, out=sums[i])
    dW.fill(0.0)
    dW[:, :, sorted_sym[starts]] = sums.transpose(1, 2, 0)


def _scatter_columns(sym: np.ndarray, dz: np.ndarray, dWxh: np.ndarray) -> None:
    """dWxh[:, s] = sum of dz[n] over the steps n whose input symbol was s; 0 for unseen s.

    sym: (N,) ints, dz: (N, H), dWxh: (H, V), written in place. Two exact ways, each the faster
    one on its side of N ≈ 200 (B = 1 windows on one side, batches on the other).
    """
    N, H = dz.shape
    if N < 200:
        # Scatter-add every (symbol, unit) entry into the flat (V, H) transpose: a 1-D
        # ``np.add.at``, which numpy runs on a fast path (its 2-D form is ~10x slower).
        dWxhT = np.zeros((dWxh.shape[1], H), dtype=dz.dtype)  # (V, H)
        at = sym.astype(np.intp)[:, None] * H + np.arange(H)  # (N, H) flat index into dWxhT
        np.add.at(dWxhT.reshape(-1), at.reshape(-1), dz.reshape(-1))
        dWxh[...] = dWxhT.T
        return
    # Sort the steps by symbol and sum each run of equal symbols.
    order, sorted_sym, starts = _symbol_runs(sym)
    dWxh.fill(0.0)
    dWxh[:, sorted_sym[starts]] = np.add.reduceat(dz[order], starts, axis=0).T  # (H, K)


# --- output heads -------------------------------------------------------------------------------
# Each takes logits (T, B, O), targets and optional per-step weights, and returns the loss of each
# stream summed over the window (B,) and d(mean over streams of that loss)/dlogits (T, B, O).
# ``weights`` (anything that broadcasts to (T, B)) scales each step's loss: 0 masks a step out
# (a task judged at its last step alone), 1/T makes the sum a per-step mean. None is every weight
# 1, and is bit for bit the unweighted head (x · 1.0 is exact).


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Softmax over the last axis, shifted by the max for stability."""
    z = logits / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


@functools.cache
def _unshifted_limit(dtype: np.dtype, V: int) -> float:
    """Largest |logit| for which e^z over V symbols is safe unshifted (see softmax_xent)."""
    return 0.5 * math.log(float(np.finfo(dtype).max) / V)


def step_weights(weights, T: int, B: int, dtype) -> np.ndarray | None:
    """Per-step weights as a (T, B) array of ``dtype`` (None stays None)."""
    if weights is None:
        return None
    return np.broadcast_to(np.asarray(weights, dtype=dtype), (T, B))


def softmax_xent(
    logits: np.ndarray, targets: np.ndarray, weights=None
) -> tuple[np.ndarray, np.ndarray]:
    """Cross-entropy of the next symbol. targets: (T, B) ints. Overwrites logits (when they are
    contiguous, as ``forward`` makes them; otherwise works on a copy)."""
    T, B, V = logits.shape
    N = T * B
    w = step_weights(weights, T, B, logits.dtype)
    z = np.ascontiguousarray(logits.reshape(N, V))  # (N, V); flat indexing below needs C order
    # Softmax is unchanged by a shift of each row. Shifting by the row max keeps e^z finite,
    # but a max along rows of 80 is slow in numpy (a third of this head at B=32) and only
    # needed when some |z| is large: below ½ log(dtype max / V), every e^z and each row's sum
    # are finite and far from underflow, so the unshifted softmax (the seed's) is as exact.
    if max(z.max(), -z.min()) > _unshifted_limit(z.dtype, V):
        z -= z.max(axis=1, keepdims=True)
    at_target = np.arange(N) * V + targets.reshape(N)  # (N,) flat index of each target's logit
    z_target = z.reshape(-1)[at_target]  # (N,) logit of each target (1-D gather: faster)
    e = np.exp(z, out=z)
    total = np.matmul(e, np.ones(V, dtype=e.dtype))  # (N,) row sums (a GEMV: faster than sum)
    # -log p_target = log Σ e^z - z_target, summed over the window per stream.
    per_step = (np.log(total) - z_target).reshape(T, B)
    loss = (per_step if w is None else per_step * w).sum(axis=0)  # (B,)
    # d/dlogits of the mean over streams: w (p - onehot(target)) / B, with p = e / total.
    scale = np.reciprocal(total, out=total)
    scale *= 1.0 / B
    if w is None:
        e *= scale[:, None]
        e.reshape(-1)[at_target] -= 1.0 / B
    else:
        wf = w.reshape(N)  # (N,) each row's weight
        scale *= wf
        e *= scale[:, None]
        e.reshape(-1)[at_target] -= wf / B
    return loss, e.reshape(T, B, V)  # logits' own memory unless they were not contiguous


def sigmoid_mse(
    logits: np.ndarray, targets: np.ndarray, weights=None
) -> tuple[np.ndarray, np.ndarray]:
    """½ squared error of sigmoid outputs, as iamtrask's adder. targets: (T, B, O) in {0, 1}."""
    T, B = logits.shape[:2]
    w = step_weights(weights, T, B, logits.dtype)
    out = _sigmoid(logits)
    err = out - targets
    per_step = 0.5 * (err * err).sum(axis=2)  # (T, B)
    loss = (per_step if w is None else per_step * w).sum(axis=0)  # (B,)
    dlogits = err * out * (1.0 - out) / B
    return loss, dlogits if w is None else dlogits * w[..., None]


def sigmoid_bce(
    logits: np.ndarray, targets: np.ndarray, weights=None
) -> tuple[np.ndarray, np.ndarray]:
    """Binary cross-entropy of sigmoid outputs. targets: (T, B, O) in {0, 1}."""
    T, B = logits.shape[:2]
    w = step_weights(weights, T, B, logits.dtype)
    # log(1 + e^z) - t z, written to stay finite for large |z|.
    per_step = (np.logaddexp(0.0, logits) - targets * logits).sum(axis=2)  # (T, B)
    loss = (per_step if w is None else per_step * w).sum(axis=0)  # (B,)
    dlogits = (_sigmoid(logits) - targets) / B
    return loss, dlogits if w is None else dlogits * w[..., None]


def linear_squared(
    logits: np.ndarray, targets: np.ndarray, weights=None
) -> tuple[np.ndarray, np.ndarray]:
    """Squared error of linear outputs (a real-valued target: the adding problem's sum).
    targets: (T, B, O) floats. At one weighted step with O = 1 the mean over streams is the MSE."""
    T, B = logits.shape[:2]
    w = step_weights(weights, T, B, logits.dtype)
    err = logits - targets  # (T, B, O)
    per_step = (err * err).sum(axis=2)  # (T, B)
    loss = (per_step if w is None else per_step * w).sum(axis=0)  # (B,)
    dlogits = err * (2.0 / B)
    return loss, dlogits if w is None else dlogits * w[..., None]


HEADS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "xent": softmax_xent,
    "mse": sigmoid_mse,
    "bce": sigmoid_bce,
    "squared": linear_squared,
}


def loss_and_grads(
    params: Params,
    xs: np.ndarray,
    targets: np.ndarray,
    hprev: np.ndarray,
    spec: Spec,
    head: str,
    grads: Params | None = None,
    dropout_rng: np.random.Generator | None = None,
    reference: bool = False,
    weights=None,
) -> tuple[np.ndarray, Params, np.ndarray]:
    """One window of truncated BPTT.

    Returns the loss of each stream summed over the window (B,), each step's loss scaled by
    ``weights`` (broadcast to (T, B); None: all 1, see the heads), the gradients of the mean of
    those losses (written into ``grads`` when given), and the last state to carry into the next
    window, (L, S, B, H). ``reference``: as forward.
    """
    B = xs.shape[1]
    if head == "xent" and weights is None and not reference and fused.compiled_head(spec.cell, B):
        # one stream through the kernels: the head, its loss and its products in one call
        Why = params["Why"]
        if grads is None:
            grads = packed_zeros({k: v.shape for k, v in params.items()}, Why.dtype)[1]
        limit = _unshifted_limit(Why.dtype, Why.shape[0])
        if (
            (spec.cell, spec.layers, spec.activation) == ("rnn", 1, "tanh")
            and xs.ndim == 2
            and (spec.dropout == 0.0 or dropout_rng is None)
        ):  # min-char-rnn's network: the whole window in one call
            loss, state = fused.rnn_window1(params, xs, targets, hprev, grads, limit)
            return loss, grads, state
        fwd = forward(params, xs, hprev, spec, dropout_rng=dropout_rng, logits=False)
        loss, dh = fused.xent_head1(Why, params["by"], fwd.top, targets, grads["Why"],
                                    grads["by"], limit)  # fmt: skip
        grads, _ = backward_from_top(params, fwd, dh, grads)
        return loss, grads, fwd.state
    fwd = forward(params, xs, hprev, spec, dropout_rng=dropout_rng, reference=reference)
    loss, dlogits = HEADS[head](fwd.logits, targets, weights)
    grads, _ = backward(params, fwd, dlogits, grads)
    return loss, grads, fwd.state


def step(
    params: Params, spec: Spec, state: np.ndarray, symbols: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One step, for decoders: symbols (B,) ints or (B, D) floats, state (L, S, B, H) →
    (logits (B, O), the next state). No dropout. Through the numpy cells: at T = 1 a kernel's
    per-call cost buys nothing, and a process that only decodes (sampling, the served model)
    then never imports numba."""
    fwd = forward(params, np.asarray(symbols)[None], state, spec, reference=True)
    return fwd.logits[0], fwd.state


def stepper(params: Params, spec: Spec) -> Callable[[np.ndarray, np.ndarray], tuple]:
    """``step(params, spec, ·, ·)`` for a decode over fixed weights. One vanilla layer reading
    symbols (the char-RNN's network) takes a shorter way with the same bits: what every step
    shares — W_hh's transposed copy and the symbols' table W_xh^T + b_h, which the numpy cell
    makes per call — is made once, and the window skeleton is skipped; each step then runs the
    numpy cell's own operations on the same operands (tested equal to ``step``, bit for bit).
    Every other network (and dense inputs) goes through ``step``. The weights must not change
    while it is in use."""
    if spec.cell != "rnn" or spec.layers != 1:
        return lambda state, symbols: step(params, spec, state, symbols)
    Wxh, Why, by = params["Wxh"], params["Why"], params["by"]
    H, V = Wxh.shape
    table = Wxh.T + params["bh"]  # (V, H): row s is W_xh x + b_h for the one-hot x of s
    WhhT = np.ascontiguousarray(params["Whh"].T)
    act, _ = cells._VANILLA_ACTIVATIONS[spec.activation]  # the numpy cell's

    def one(state: np.ndarray, symbols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(symbols)
        if x.dtype.kind not in "iu" or x.ndim != 1:
            return step(params, spec, state, symbols)
        if x.min() < 0 or x.max() >= V:  # as cells.project
            raise IndexError(f"input symbols must be in [0, {V}); got {x.min()}..{x.max()}")
        B = x.shape[0]
        hs = np.empty((2, B, H), dtype=Wxh.dtype)  # cells.rnn_forward's arrays, T = 1
        hs[0] = state[0, 0]
        np.take(table, x, axis=0, out=hs[1], mode="clip")
        z = np.empty_like(hs[0])
        np.dot(hs[0], WhhT, z)
        np.add(z, hs[1], z)
        act(z, hs[1])
        logits = np.matmul(hs[1:].reshape(B, -1), Why.T)  # (B, O), as forward's head
        logits += by
        return logits, hs[-1][None][None]  # (1, 1, B, H)

    return one
