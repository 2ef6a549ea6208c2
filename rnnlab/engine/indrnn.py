"""IndRNN (Li et al. 2018, "Independently Recurrent Neural Network"), one layer at a time.

    h_t = relu(W_ih x_t + b_ih + u ⊙ h_{t-1})            W_ih (H, D), u (H,), b_ih (H,)

Each unit's recurrence is one weight u_j: the recurrent matrix is diag(u), whose spectral radius
(and largest singular value) is max |u_j|. Over a horizon of T steps the gradient through a unit
scales by at most |u_j|^T (times relu's 0/1), so the paper bounds |u_j| ≤ γ^(1/T) for a gradient
that grows at most γ-fold over T steps (its reference code: γ = 2); ``IndRNNConfig`` picks T
(default: the BPTT window) and γ, ``constrain`` clips u into the bound after every update, and
``init`` draws u as the reference code does: U(0, γ^(1/T)) below the top layer, U(γ^(-1/T),
γ^(1/T)) in the top one (long memory where the head reads). W_ih is nn.Linear's U(±1/√D),
b_ih = 0.

relu is not linear, so a window runs step by step (three numpy calls a step, BPTT three more).

Nothing here does I/O, reads config or keeps state between calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rnnlab.engine import cells
from rnnlab.engine.cell_api import CellType


@dataclass
class IndRNNConfig:
    """IndRNN's recurrent-weight bound (``cell=indrnn`` only)."""

    horizon: int | None = None  # T of |u| ≤ magnitude^(1/T); null: BPTT's window (seq_length,
    # or a sequence task's whole sequence)
    # γ: how much a gradient may grow over the horizon (the paper's 2); 1: |u| ≤ 1, so a state
    # carried from window to window (the char-RNN's) can never grow
    magnitude: float = 2.0

    def u_max(self, window: int) -> float:
        """The bound γ^(1/T) on |u|, T = horizon or else ``window``."""
        return self.magnitude ** (1.0 / (self.horizon or window))


def _own(H: int) -> dict[str, tuple]:
    return {"u": (H,)}


DEFAULT_WINDOW = 25  # the char-RNN's seq_length: the horizon when nothing else is given


def _init(lp, rng: np.random.Generator, D: int, H: int, top: bool, u_max: float | None) -> None:
    """W_ih U(±1/√D), b_ih 0, u as the reference code (module docstring); ``u_max``: the bound
    (None: ``IndRNNConfig()``'s for ``DEFAULT_WINDOW`` steps)."""
    u_max = u_max or IndRNNConfig().u_max(DEFAULT_WINDOW)
    bound = 1.0 / math.sqrt(D)
    lp["W_ih"][...] = rng.uniform(-bound, bound, lp["W_ih"].shape)
    lp["b_ih"][...] = 0.0
    lo = 1.0 / u_max if top else 0.0  # γ^(-1/T) in the top layer
    lp["u"][...] = rng.uniform(lo, u_max, H)


def constrain(u: np.ndarray, u_max: float) -> None:
    """Clip u into [-u_max, u_max] in place (after every update)."""
    np.clip(u, -u_max, u_max, out=u)


def forward(lp, proj: np.ndarray, state0: np.ndarray, use_scan: bool = False) -> cells.Layer:
    """One IndRNN layer over a window: proj (T, B, H) = W_ih x + b_ih, state0 (1, B, H)."""
    T, B, H = proj.shape
    u = lp["u"]
    hs = np.empty((T + 1, B, H), dtype=proj.dtype)
    hs[0] = state0[0]
    hs[1:] = proj
    h = list(hs)  # views made once: indexing inside the loop costs as much as the math at B=1
    tmp = np.empty((B, H), dtype=proj.dtype)
    for t in range(T):
        np.multiply(u, h[t], tmp)
        np.add(h[t + 1], tmp, h[t + 1])  # h[t+1] held W_ih x_t + b_ih
        np.maximum(h[t + 1], 0.0, out=h[t + 1])
    return cells.Layer(hs=hs, state=hs[-1][None].copy())


def backward(layer: cells.Layer, lp, dh: np.ndarray, use_scan: bool, trace, grads):
    """BPTT through one IndRNN layer; returns (d proj = d pre-activations (T, B, H), d state0
    (1, B, H)) and writes d u into ``grads``."""
    hs, u = layer.hs, lp["u"]
    T, B, H = dh.shape
    on = (hs[1:] > 0).astype(dh.dtype)  # relu'(z_t) written through h_t
    dz = dh  # turned in place into d loss / d z_t
    dhs = list(dz) if trace is None else list(trace)
    dzs, ons = list(dz), list(on)
    dhnext = np.zeros((B, H), dtype=dh.dtype)  # gradient reaching h_t from step t+1
    for t in reversed(range(T)):
        np.add(dzs[t], dhnext, dhs[t])  # into h_t: its output + the future
        np.multiply(dhs[t], ons[t], dzs[t])  # through relu
        np.multiply(u, dzs[t], dhnext)  # into h_{t-1}
    # d u = Σ over steps and streams of d z_t ⊙ h_{t-1}
    np.einsum("tbh,tbh->h", dz, hs[:-1], out=grads["u"])
    return dz, dhnext[None]


CELL = CellType(
    name="indrnn",
    state_size=1,
    input_rows=1,
    bias=True,
    recurrent="u",
    own=_own,
    init=_init,
    forward=forward,
    backward=backward,
)
