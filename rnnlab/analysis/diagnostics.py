"""Learning diagnostics: how a run learns, measured at every evaluation and logged under ``diag/``.

What is measured, for every cell (``rnn.CELL_NAMES``) and every layer k (layer 0 keeps the plain
names, deeper layers add ``_l{k}``: ``diag/whh_rho_l1``, ``diag/saturation_l1/f``):

- **gradient flow** on a fixed probe window of ``diag_window`` steps: ‖∂L_T/∂h^k_t‖ for every
  state h_t of every layer before the end, where L_T is the loss at the window's last step alone.
  One forward and one backward pass of the engine: its BPTT hands back d L / d h_t at every step
  (``rnn.backward(..., dh_trace=)``), so no private backward pass exists here. Summarised as
  ``diag/grad_decay``, the least-squares slope of log ‖∂L_T/∂h_{T-d}‖ against d: < 0
  vanishing, > 0 exploding. For the LSTM the gradient is w.r.t. h with c held; for the LRU it is
  w.r.t. its carried complex state x (Re and Im together), which is not its output.
- **per parameter**: norm of the gradient the optimizer applied at this step (after clipping),
  the update-to-weight ratio ‖Δθ‖/‖θ‖ of one step of the real optimizer on a copy, and the share
  of entries clipping changed (``diag/clip_frac``).
- **recurrent spectrum**: largest singular value and spectral radius of each layer's recurrent
  matrix; for a gated cell of each (H, H) gate block of W_hh (``diag/whh_<gate>_rho``), and
  ``diag/whh_*`` is the candidate's block (GRU's n, LSTM's g: the one a tanh unit reads). A
  diagonal recurrence's matrix is diag(d), whose spectral radius and largest singular value are
  both max_j |d_j|: IndRNN's d = u, the LRU's d = λ (complex: |λ_j|). minGRU and minLSTM have
  no recurrent weights; their step t multiplies h_{t-1} by diag(a_t) (a = 1 − z, or f'), set by
  the input: ``diag/whh_rho`` is max_j a_{t,j} averaged over the probe window's steps.
- **saturation**: share of (step, unit) activations at |h| > 0.99 (tanh; a gated cell's h too)
  or outside [0.01, 0.99] (sigmoid) on the validation pass from the zero state and, for the
  char-RNN, warm (after the burn-in ``val/loss_warm`` reads, ``rnnlab.tasks.charrnn``'s rule);
  for gated cells per gate (``diag/saturation/<gate>``: σ gates outside [0.01, 0.99], the tanh
  candidate at |x| > 0.99). Only where a cell saturates: the h of ReLU cells (IRNN, IndRNN), of
  minGRU/minLSTM (g is unbounded above) and the LRU's output (linear) have no
  ``diag/saturation``; minGRU's z and minLSTM's f and i gates do.

Everything runs inline in the training process. The saturation counts at an evaluation point
are taken on the evaluation's own validation passes (``Diagnostics.observer``): a pass of its
own would read the held-out text again and cost as much as the evaluation. What is left — a
100-step forward/backward, a few small eigen/singular decompositions and the step metrics — is
a small fraction of the iterations between two evaluations (README: Diagnostics). Nothing here
reads config files; ``Diagnostics`` gets its slice of the run and a tracker.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from rnnlab.engine import cells, rnn

ADDER_SUMS = 512  # evaluation sums the adder's saturation is counted on
SEQUENCE_SAMPLE = 256  # held-out sequences the long-memory tasks' saturation is counted on
SATURATED: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tanh": lambda a: np.abs(a) > 0.99,
    "sigmoid": lambda a: (a < 0.01) | (a > 0.99),
}


# --- the cell interface -----------------------------------------------------------------------


@dataclass(frozen=True)
class CellView:
    """How diagnostics read one cell type of the engine (every cell runs through ``rnn.forward``
    and ``rnn.backward``; a view names what is inside a layer).

    gates: (name, kind) per row block of the layer's recurrent matrix, in the engine's order
    (empty for the vanilla cell); kind in ``SATURATED``; for a ``diagonal`` cell, gates its
    forward pass keeps by name (``Layer.saved``). candidate: the block whose spectrum is
    ``diag/whh_sigma_max`` / ``diag/whh_rho`` (the one feeding the tanh candidate, GRU's n and
    LSTM's g; the vanilla cell's whole Whh); every block also gets ``diag/whh_<gate>_*``.
    h: how the layer's output saturates (a ``SATURATED`` kind; "activation": the vanilla cell's
    own; None: it does not, and has no ``diag/saturation``). diagonal: where a diagonal
    recurrence's d is read ("u": the IndRNN's weight, "lambda": the LRU's eigenvalues, "a": the
    per-step multiplier the forward pass keeps); None: a full matrix. state_slots: which of the
    carried state's S arrays are h (the LRU's Re and Im).
    """

    gates: tuple[tuple[str, str], ...] = ()
    candidate: str | None = None
    h: str | None = "tanh"
    diagonal: str | None = None
    state_slots: tuple[int, ...] = (0,)


CELLS: dict[str, CellView] = {  # keyed as the config's ``cell``
    "rnn": CellView(h="activation"),
    "gru": CellView((("r", "sigmoid"), ("z", "sigmoid"), ("n", "tanh")), "n"),
    "lstm": CellView((("i", "sigmoid"), ("f", "sigmoid"), ("g", "tanh"), ("o", "sigmoid")), "g"),
    "irnn": CellView(h=None),  # relu
    "indrnn": CellView(h=None, diagonal="u"),
    "mingru": CellView((("z", "sigmoid"),), h=None, diagonal="a"),
    "minlstm": CellView((("f", "sigmoid"), ("i", "sigmoid")), h=None, diagonal="a"),
    "lru": CellView(h=None, diagonal="lambda", state_slots=(0, 1)),
}


@dataclass(frozen=True)
class EngineSpec:
    """What the diagnostics need to know about the network besides its weights."""

    activation: str  # the vanilla cell's: tanh | sigmoid
    head: str  # xent | mse | bce
    cell: str = "rnn"  # key of CELLS
    layers: int = 1

    def net(self, params: rnn.Params) -> rnn.Spec:
        """The engine's Spec (no dropout: diagnostics are measured as evaluation runs)."""
        return rnn.Spec(self.cell, self.layers, params["Why"].shape[1], self.activation, 0.0)


def suffix(k: int) -> str:
    """Metric-name suffix of layer k: none for layer 0 (the single-layer names), else _l{k}."""
    return "" if k == 0 else f"_l{k}"


def recurrent(params: rnn.Params, net: rnn.Spec, k: int) -> dict[str, np.ndarray]:
    """Layer k's recurrent matrices by metric stem: "whh" (the candidate block, or Whh) and, for
    a gated cell, "whh_<gate>" for each (H, H) row block of W_hh. Not for diagonal cells
    (``diagonal_radius``)."""
    W = params[rnn.layer_names(net, k)[1]]
    view, H = CELLS[net.cell], net.hidden_size
    if not view.gates:
        return {"whh": W}
    blocks = {f"whh_{g}": W[j * H : (j + 1) * H] for j, (g, _) in enumerate(view.gates)}
    return {"whh": blocks[f"whh_{view.candidate}"], **blocks}


def diagonal_radius(params: rnn.Params, net: rnn.Spec, k: int, layer: cells.Layer) -> float:
    """A diagonal recurrence's spectral radius = largest singular value, max_j |d_j| (``CellView``
    ``diagonal``); for a per-step d_t (minGRU, minLSTM), its mean over the window's steps.
    ``layer``: layer k of a forward pass (the probe window's)."""
    view = CELLS[net.cell]
    if view.diagonal == "a":  # (T, B, H) per step
        a = layer.saved["a"]
        return float(np.abs(a).max(axis=-1).mean())
    if view.diagonal == "lambda":
        lp = rnn.TYPED[net.cell].layer(params, k)
        return float(np.exp(-np.exp(lp["nu_log"].astype(np.float64))).max())  # |λ| = e^(−e^ν)
    return float(np.abs(params[rnn.layer_names(net, k)[1]]).max())


def activations(fwd: rnn.Forward, k: int) -> dict[str, tuple[np.ndarray, str]]:
    """Layer k's named activations (T, B, H) with their kind: "h" where it saturates and, for
    gated cells, each gate (the gates' values after σ / tanh, as the cell's forward pass keeps
    them)."""
    net = fwd.spec
    layer = fwd.layers[k]
    view, H = CELLS[net.cell], net.hidden_size
    out = {}
    if view.h is not None:  # a gated cell's o⊙tanh(c) or blend of tanh candidates: tanh
        out["h"] = (layer.hs[1:], net.activation if view.h == "activation" else view.h)
    for j, (g, kind) in enumerate(view.gates):
        if view.diagonal is not None:  # kept by name
            out[g] = (layer.saved[g], kind)
        else:
            out[g] = (cells.gate_block(layer, j, H).transpose(0, 2, 1), kind)  # PyTorch's gate j
    return out


# --- the measurements (pure functions) ----------------------------------------------------------


def grad_flow(
    params: rnn.Params, spec: EngineSpec, xs: np.ndarray, ys: np.ndarray, state0: np.ndarray
) -> np.ndarray:
    """‖∂L_T/∂h^k_{T-d}‖ for every layer k and d = 1..T: (L, T), index [k, d-1]; L_T the loss at
    the last step of the window alone.

    xs: (T, 1) symbols or (T, 1, D) floats, ys the matching targets, state0: (L, S, 1, H) the
    state before the window (or (1, H) for one vanilla layer). h_{T-d} is the state after step
    T-d (h_0 the initial one); for the LSTM the gradient is w.r.t. h with c held, as the engine's
    state gradient. One forward and one backward pass: the engine's BPTT computes d L_T / d h_t
    at every step anyway and hands it back (``dh_trace``).
    """
    return grad_flows(params, spec, xs, ys, state0)["h"]


def grad_flows(
    params: rnn.Params, spec: EngineSpec, xs: np.ndarray, ys: np.ndarray, state0: np.ndarray
) -> dict[str, np.ndarray]:
    """``grad_flow``'s curves (L, T) under "h" and, for the LSTM, ‖∂L_T/∂c^k_{T-d}‖ under "c"
    (the total gradient reaching the cell state c_t, through h_t and c_{t+1}; d = T: the
    initial c), from the same forward and backward pass (``dc_trace``)."""
    return _grad_flows(params, spec, xs, ys, state0)[0]


def _grad_flows(
    params: rnn.Params, spec: EngineSpec, xs: np.ndarray, ys: np.ndarray, state0: np.ndarray
) -> tuple[dict[str, np.ndarray], rnn.Forward]:
    """``grad_flows`` and the forward pass it ran."""
    net = spec.net(params)
    T = xs.shape[0]
    state0 = state0.reshape(net.layers, net.state_size, 1, -1)
    fwd = rnn.forward(params, xs, state0, net)
    dlogits = np.zeros_like(fwd.logits)  # (T, 1, O): the loss at step T alone
    _, dlogits[-1:] = rnn.HEADS[spec.head](fwd.logits[-1:].copy(), ys[-1:])
    shape = (net.layers, T, 1, net.hidden_size)
    trace = np.empty(shape, dtype=fwd.logits.dtype)
    c_trace = np.empty(shape, dtype=fwd.logits.dtype) if net.cell == "lstm" else None
    _, dstate0 = rnn.backward(params, fwd, dlogits, dh_trace=trace, dc_trace=c_trace)
    out = {}
    h_slots = list(CELLS[net.cell].state_slots)  # the LRU's h: (Re x, Im x)
    for name, tr, s in (("h", trace, h_slots), ("c", c_trace, [1])):
        if tr is None:
            continue
        # tr[k, t] is d L_T / d (layer k's state after 0-based step t); d = T - (t+1)
        norms = np.empty((net.layers, T))
        norms[:, : T - 1] = np.linalg.norm(tr[:, T - 2 :: -1, 0], axis=-1) if T > 1 else 0.0
        d0 = dstate0[:, s, 0].reshape(net.layers, -1)  # d = T: the initial state
        norms[:, T - 1] = np.linalg.norm(d0, axis=-1)
        out[name] = norms
    return out, fwd


def grad_decay(norms: np.ndarray) -> float:
    """Least-squares slope of log ‖∂L_T/∂h_{T-d}‖ against d (per-step log-rate); NaN if < 2
    positive finite values."""
    d = np.arange(1, norms.size + 1, dtype=np.float64)
    ok = np.isfinite(norms) & (norms > 0)
    if np.count_nonzero(ok) < 2:
        return float("nan")
    # the closed form of the degree-1 least-squares fit (np.polyfit's slope, 20x cheaper)
    x, y = d[ok], np.log(norms[ok])
    x = x - x.mean()
    return float(np.dot(x, y) / np.dot(x, x))


def spectrum(matrix: np.ndarray) -> tuple[float, float]:
    """(largest singular value, spectral radius = largest |eigenvalue|) of a square matrix."""
    (sigma_max,), (rho,) = spectra(np.asarray(matrix)[None])
    return float(sigma_max), float(rho)


def spectra(matrices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Largest singular values and spectral radii (n,) of a stack of square matrices (n, H, H):
    two LAPACK calls for every block of every layer instead of two per block."""
    m = np.asarray(matrices, dtype=np.float64)
    sigma_max = np.linalg.svd(m, compute_uv=False)[:, 0]
    rho = np.abs(np.linalg.eigvals(m)).max(axis=-1)
    return sigma_max, rho


BOUNDS = {"tanh": (-0.99, 0.99), "sigmoid": (0.01, 0.99)}  # SATURATED: below lo or above hi


class SaturationCount:
    """Running share of saturated activations per name, over one or more passes."""

    def __init__(self) -> None:
        self.saturated: dict[str, int] = {}  # name -> saturated (step, stream, unit) entries
        self.total: dict[str, int] = {}  # name -> entries seen

    def add(self, activations: Mapping[str, tuple[np.ndarray, str]]) -> None:
        for name, (a, kind) in activations.items():
            lo, hi = BOUNDS[kind]
            # two boolean counts instead of SATURATED's |a| or its or-ed masks: this runs on
            # every activation of every validation pass, so it is kept to two cheap passes
            n = np.count_nonzero(a < lo) + np.count_nonzero(a > hi)
            self.saturated[name] = self.saturated.get(name, 0) + int(n)
            self.total[name] = self.total.get(name, 0) + a.size

    def share(self, name: str) -> float:
        return self.saturated[name] / self.total[name]


def run_states(
    params: rnn.Params,
    net: rnn.Spec,
    xs: np.ndarray,
    state: np.ndarray,
    counts: list[list[SaturationCount]] | None = None,
    chunk: int = 1000,
) -> np.ndarray:
    """Read xs (T, B[, D]) from state (L, S, B, H) in chunks; returns the last state. With
    ``counts`` (one list per layer), the B streams are cut into len(counts[k]) equal groups,
    each counted into its own."""
    for start in range(0, xs.shape[0], chunk):
        fwd = rnn.forward(params, xs[start : start + chunk], state, net)
        for k, layer_counts in enumerate(counts or []):
            per = xs.shape[1] // len(layer_counts)
            acts = activations(fwd, k)
            for j, count in enumerate(layer_counts):
                count.add(
                    {n: (a[:, j * per : (j + 1) * per], kind) for n, (a, kind) in acts.items()}
                )
        state = fwd.state
    return state


@dataclass
class Probe:
    """The fixed data every evaluation's diagnostics read (the same for the whole run)."""

    window_xs: np.ndarray  # (W, 1) symbols or (W, 1, D): the gradient-flow window
    window_ys: np.ndarray
    val_xs: np.ndarray  # (T, B[, D]) the validation pass, read from the zero state
    burn_xs: np.ndarray | None = None  # (K, B) warm-up before the warm pass; None: no warm pass
    # Which streams of the evaluation's own pass are val_xs (sorted indices, in the order the
    # evaluation feeds its streams, over all its forward calls); None: all of them (char-RNN).
    val_streams: np.ndarray | None = None


def heavy_metrics(
    params: rnn.Params,
    spec: EngineSpec,
    probe: Probe,
    observed: dict[str, list[SaturationCount]] | None = None,
) -> tuple[dict[str, float], np.ndarray]:
    """The snapshot diagnostics: (metrics, gradient-flow curves (L, W)). Layer k's metrics carry
    ``suffix(k)``. ``observed``: saturation counts per pass ("" zero-state, "_warm") and layer,
    already taken on the evaluation's own validation pass; without them, the passes run here."""
    out, curves = probe_metrics(params, spec, probe)
    counts = observed or saturation_passes(params, spec.net(params), probe)
    return out | saturation_metrics(counts), curves


def probe_metrics(
    params: rnn.Params, spec: EngineSpec, probe: Probe
) -> tuple[dict[str, float], np.ndarray]:
    """The weights' part of the snapshot: gradient flow on the probe window and the recurrent
    spectra, (metrics, curves (L, W))."""
    out, flows = _probe(params, spec, probe)
    return out, flows["h"]


def _probe(
    params: rnn.Params, spec: EngineSpec, probe: Probe
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """``probe_metrics`` with every curve ``grad_flows`` gives (the LSTM's c too)."""
    net = spec.net(params)
    dtype = params["Why"].dtype
    out: dict[str, float] = {}
    flows, fwd = _grad_flows(
        params, spec, probe.window_xs, probe.window_ys, rnn.zero_state(net, 1, dtype)
    )
    blocks: dict[str, np.ndarray] = {}  # metric stem with its layer suffix -> (H, H) block
    diagonal = CELLS[net.cell].diagonal is not None
    for k in range(net.layers):
        s = suffix(k)
        for state, c in flows.items():
            at = "" if state == "h" else f"_{state}"  # the LSTM's c: diag/grad_decay_c
            out[f"diag/grad_decay{at}{s}"] = grad_decay(c[k])
            out[f"diag/grad_flow_last{at}{s}"] = float(c[k, -1])  # what reaches the start
        if diagonal:  # diag(d): σ_max = ρ = max |d_j|
            rho = diagonal_radius(params, net, k, fwd.layers[k])
            out[f"diag/whh_sigma_max{s}"] = out[f"diag/whh_rho{s}"] = rho
        else:
            blocks |= {f"{name}{{}}{s}": m for name, m in recurrent(params, net, k).items()}
    # every layer's blocks in one stack (the candidate's "whh" block twice for gated cells)
    stacked = spectra(np.stack(list(blocks.values()))) if blocks else ((), ())
    for name, sigma, rho in zip(blocks, *stacked, strict=True):
        out[f"diag/{name.format('_sigma_max')}"] = float(sigma)
        out[f"diag/{name.format('_rho')}"] = float(rho)
    return out, flows


def saturation_metrics(counts: dict[str, list[SaturationCount]]) -> dict[str, float]:
    """``diag/saturation*`` from counts per pass ("" zero-state, "_warm") and layer."""
    out: dict[str, float] = {}
    for label, layers in counts.items():
        for k, count in enumerate(layers):
            if "h" in count.saturated:  # cells whose h saturates
                out[f"diag/saturation{label}{suffix(k)}"] = count.share("h")
            for name in count.saturated:
                if name != "h":  # gates of a gated cell
                    out[f"diag/saturation{label}{suffix(k)}/{name}"] = count.share(name)
    return out


def saturation_passes(
    params: rnn.Params, net: rnn.Spec, probe: Probe
) -> dict[str, list[SaturationCount]]:
    """Saturation counts of the validation pass from the zero state ("") and, with a burn-in,
    warm ("_warm"), per layer."""
    dtype = params["Why"].dtype
    B = probe.val_xs.shape[1]
    starts = {"": rnn.zero_state(net, B, dtype)}
    if probe.burn_xs is not None:
        starts["_warm"] = run_states(
            params, net, probe.burn_xs, rnn.zero_state(net, probe.burn_xs.shape[1], dtype)
        )
    # Both passes in one batch (zero-state streams, then warm ones): a step costs about the same
    # at B = 2 as at B = 1, so the warm pass comes almost free.
    counts = [[SaturationCount() for _ in starts] for _ in range(net.layers)]
    xs = np.concatenate([probe.val_xs] * len(starts), axis=1)
    run_states(params, net, xs, np.concatenate(list(starts.values()), axis=2), counts)
    return {label: [c[j] for c in counts] for j, label in enumerate(starts)}


def step_metrics(
    params: rnn.Params,
    applied: rnn.Params,
    optimizer,
    flat: np.ndarray,
    grad_flat: np.ndarray,
    clip: float | None,
    clip_norm: float | None,
    grad_norm: float,
) -> dict[str, float]:
    """Gradient norms, update ratios and clip shares of the step just taken.

    ``applied``: the gradient views the optimizer used (after clipping); ``flat``/``grad_flat``
    the buffers behind ``params``/``applied``, each parameter's entries in ``params``' order
    (``rnn.packed_zeros``' layout), which the segment sums below rely on. The update is one
    step of a copy of ``optimizer`` on a copy of the weights with that gradient, so the real
    optimizer's rule is what is measured.
    """
    out: dict[str, float] = {}
    trial = copy.deepcopy(optimizer)
    after = flat.copy()
    trial.step(after, grad_flat.copy())
    delta = np.subtract(after, flat, out=after)
    # Every parameter's norms at once: segment sums over the flat buffers (params' views are
    # laid out in order), three reductions instead of three per parameter.
    names = list(params)
    starts = np.cumsum([0] + [params[n].size for n in names[:-1]])
    sizes = np.array([params[n].size for n in names])
    assert int(sizes.sum()) == flat.size == grad_flat.size, "params are not packed in flat"
    g_norm = np.sqrt(np.add.reduceat(np.square(grad_flat), starts))
    w_norm = np.sqrt(np.add.reduceat(np.square(flat), starts))
    u_norm = np.sqrt(np.add.reduceat(np.square(delta), starts))
    norm_scaled = clip_norm is not None and grad_norm > clip_norm  # every entry rescaled
    if norm_scaled:
        clipped = sizes
    elif clip:
        clipped = np.add.reduceat((np.abs(grad_flat) >= clip).astype(np.int64), starts)
    else:
        clipped = np.zeros(len(names), dtype=np.int64)
    for j, name in enumerate(names):
        w, u = float(w_norm[j]), float(u_norm[j])
        out[f"diag/grad_norm/{name}"] = float(g_norm[j])
        out[f"diag/update_ratio/{name}"] = u / w if w > 0 else float("inf") if u > 0 else 0.0
        out[f"diag/clip_frac/{name}"] = int(clipped[j]) / int(sizes[j])
    clipped_total = int(clipped.sum())
    out["diag/clip_frac"] = clipped_total / flat.size
    return out


def curve_csv(curves: np.ndarray, c_curves: np.ndarray | None = None) -> str:
    """The gradient-flow artifact: one row per distance d from the loss step; a column per
    layer (``grad_norm`` for layer 0, ``grad_norm_l{k}`` above it), then for the LSTM's cell
    state the same as ``grad_norm_c[_l{k}]``."""
    curves = np.atleast_2d(curves)  # (L, T)
    L, T = curves.shape
    names = [f"grad_norm{suffix(k)}" for k in range(L)]
    if c_curves is not None:
        names += [f"grad_norm_c{suffix(k)}" for k in range(L)]
        curves = np.concatenate([curves, np.atleast_2d(c_curves)])
    head = ",".join(["steps_back", "t", *names])
    row = "%d,%d" + ",%.9g" * len(names)  # one format per row: written at every evaluation
    d = np.arange(1, T + 1)
    cols = [d.tolist(), (T - d).tolist(), *curves.tolist()]
    return head + "\n" + "\n".join(row % r for r in zip(*cols, strict=True)) + "\n"


# --- probes for the tasks -------------------------------------------------------------------


def char_probe(task, window: int) -> Probe:
    """Probe window: the first ``window`` + 1 held-out characters (wrapping if shorter)."""
    val = task.val_data
    idx = np.arange(window + 1) % len(val)
    seq = val[idx]
    burn = task.burn_in  # the burn-in val/loss_warm reads (rnnlab.tasks.charrnn's rule)
    return Probe(
        window_xs=seq[:-1, None],
        window_ys=seq[1:, None],
        val_xs=val[:-1, None],
        burn_xs=burn[:, None] if burn.size else None,
    )


def adder_probe(task, window: int) -> Probe:
    """Probe window: one fixed ``window``-bit sum; validation pass: ``ADDER_SUMS`` of the task's
    evaluation sums (a fixed sample)."""
    rng = np.random.default_rng([2024, window])
    a_bits = rng.integers(0, 2, window)
    b_bits = rng.integers(0, 2, window)
    a_bits[-1] = b_bits[-1] = 0  # operands below 2^(window-1), so the sum fits, as the task's
    carry, s_bits = 0, np.zeros(window, dtype=np.int64)
    for t in range(window):  # least significant first
        total = a_bits[t] + b_bits[t] + carry
        s_bits[t], carry = total & 1, total >> 1
    xs = np.stack([a_bits, b_bits], axis=-1)[:, None, :].astype(task.dtype)  # (W, 1, 2)
    ys = s_bits[:, None, None].astype(task.dtype)  # (W, 1, 1)
    # Saturation is counted on a fixed sample of the evaluation sums: counting all 16,384 costs
    # more than the rest of a diagnostics point. At an evaluation the sample is picked out of
    # the evaluation's own forward pass (val_streams); val_xs is the same sums for a pass of
    # their own (a diagnostics point that is not an evaluation).
    pick = np.random.default_rng([2024, task.bits]).permutation(task.eval_a.size)[:ADDER_SUMS]
    pick = np.sort(pick)
    val_xs, _ = task.encode(task.eval_a[pick], task.eval_b[pick])  # (bits, N, 2)
    return Probe(window_xs=xs, window_ys=ys, val_xs=val_xs, burn_xs=None, val_streams=pick)


def sequence_probe(task, window: int) -> Probe:
    """The long-memory tasks (adding, copy, digits): the probe window is the first held-out
    sequence, at the task's own length (``window`` is not used): L_T is then the loss where the
    task judges it, and d runs back to the sequence's start, every distance the task asks the
    state to carry. Validation pass: a fixed sample of ``SEQUENCE_SAMPLE`` held-out sequences,
    picked out of the evaluation's own pass (val_streams)."""
    xs, ys = task.eval_xs, task.eval_ys  # (T, N[, D]), (T, N[, O])
    N = xs.shape[1]
    pick = np.sort(np.random.default_rng([2024, N]).permutation(N)[:SEQUENCE_SAMPLE])
    return Probe(window_xs=xs[:, :1], window_ys=ys[:, :1], val_xs=xs[:, pick], val_streams=pick)


PROBES = {
    "charrnn": char_probe,
    "adder": adder_probe,
    "adding": sequence_probe,
    "copy": sequence_probe,
    "digits": sequence_probe,
}


# --- the hook the training loop calls -----------------------------------------------------------


@dataclass
class Diagnostics:
    """Called by the training loop at its diagnostics points; logs through ``tracker``.

    Everything runs inline. At a point that is also an evaluation, ``observer`` hands the
    evaluation a callback that counts saturation on its validation passes (the diagnostics'
    own pass would read the same text again, costing as much as the evaluation).
    """

    spec: EngineSpec
    probe: Probe
    tracker: object
    every: int
    clip: float | None = None
    clip_norm: float | None = None
    trainer: object = None  # the run's Trainer (weights, gradients, optimizer) for ``observer``
    _observed: tuple[int, dict[str, list[SaturationCount]]] | None = None
    _early: tuple[int, dict[str, float], str] | None = None  # a point's snapshot (``_snapshot``)

    def due(self, iteration: int, last: int) -> bool:
        return iteration % self.every == 0 or iteration == last

    def observer(self, iteration: int, last: int) -> Callable | None:
        """For the evaluation at ``iteration``: observe(label, fwd) counting each forward
        record's activations into this point's saturation (None when not a diagnostics point)."""
        if not self.due(iteration, last):
            return None
        if self.trainer is not None:
            # Everything but the saturation now, before the evaluation: weights, gradients and
            # optimizer do not change during it, and the evaluation's large arrays would leave
            # this small work a cold cache (the same point after an adder's evaluation costs
            # ~25% more).
            self._early = (iteration, *self._snapshot(self.trainer))
        counts: dict[str, list[SaturationCount]] = {}
        self._observed = (iteration, counts)
        picked = self.probe.val_streams
        seen: dict[str, int] = {}  # label -> streams of the evaluation's earlier forward calls

        def observe(label: str, fwd: rnn.Forward) -> None:
            layers = counts.setdefault(label, [SaturationCount() for _ in fwd.layers])
            streams = None
            if picked is not None:  # only the probe's streams of this call's batch
                lo = seen.get(label, 0)
                hi = seen[label] = lo + fwd.logits.shape[1]
                streams = picked[(picked >= lo) & (picked < hi)] - lo
                if streams.size == 0:
                    return
            for k, count in enumerate(layers):
                acts = activations(fwd, k)
                if streams is not None:
                    # np.take: half the time of fancy indexing on a (T, B, H) view
                    acts = {n: (np.take(a, streams, axis=1), kind) for n, (a, kind) in acts.items()}
                count.add(acts)

        return observe

    def _snapshot(self, trainer) -> tuple[dict[str, float], str]:
        """A point's metrics but its saturation, and its curve file's text. The clip shares
        are those of a step whose norm was not rescaled; ``record`` knows the step's norm."""
        metrics = step_metrics(
            trainer.params,
            trainer.grads,
            trainer.optimizer,
            trainer.flat,
            trainer.grad_flat,
            self.clip,
            self.clip_norm,
            0.0,
        )
        probe, flows = _probe(trainer.params, self.spec, self.probe)
        return metrics | probe, curve_csv(flows["h"], flows.get("c"))

    def record(self, trainer, iteration: int, grad_norm: float) -> None:
        """Log this point's step-bound and snapshot metrics (one call into the tracker's
        buffer) and its gradient-flow curve."""
        observed = None
        if self._observed is not None and self._observed[0] == iteration and self._observed[1]:
            observed = self._observed[1]
        early, self._observed, self._early = self._early, None, None
        if early is not None and early[0] == iteration:
            metrics, text = early[1], early[2]
        else:  # a point without an evaluation (diag_every off the evaluation cadence)
            metrics, text = self._snapshot(trainer)
        if self.clip_norm is not None and grad_norm > self.clip_norm:  # every entry rescaled
            metrics |= {k: 1.0 for k in metrics if k.startswith("diag/clip_frac")}
        net = self.spec.net(trainer.params)
        counts = observed or saturation_passes(trainer.params, net, self.probe)
        self.tracker.log_metrics(metrics | saturation_metrics(counts), step=iteration)
        self.tracker.log_text(text, f"diagnostics/grad_flow_iter_{iteration:07d}.csv")


def start(cfg, trainer, tracker) -> Diagnostics | None:
    """The run's diagnostics per ``cfg`` (None when ``diagnostics=false``)."""
    if not cfg.diagnostics:
        return None
    task = trainer.task
    return Diagnostics(
        spec=EngineSpec(task.activation, task.head, cfg.cell, cfg.layers),
        probe=PROBES[cfg.task.name](task, cfg.diag_window),
        tracker=tracker,
        every=cfg.diag_every or cfg.eval_every,
        clip=cfg.optimizer.clip,
        clip_norm=cfg.optimizer.clip_norm,
        trainer=trainer,
    )
