"""What a cell beyond the classic three gives the engine: ``CellType``, and the input projection
every such cell reads.

``rnn``, ``gru`` and ``lstm`` plug into ``rnnlab.engine.rnn`` as (forward, backward) pairs over the
weights (W_in, b_in, W_rec, b_rec). The cells added after them (IndRNN, minGRU, minLSTM, the LRU)
have other recurrent parameters — a vector u, none at all, a complex diagonal λ with its input and
output maps — so each describes itself with a ``CellType``: the shapes of its own parameters, how
to initialise them, and its sequential part. The engine's skeleton stays shared: it projects a
window's inputs at once (``project``: W_ih x + b_ih, a column gather for symbols), stacks the
layers, applies dropout, runs the head, and turns the gradient of the projections into dW_ih,
db_ih and the gradient into the layer below. A cell's ``backward`` returns that projection
gradient and writes its own parameters' gradients.

Layer k's parameters are named ``<role>_l<k>``: ``W_ih_l0``, ``b_ih_l0``, ``u_l0``, ``nu_log_l1``.
A cell's functions see them by role (``{"W_ih": ..., "u": ...}``).

Nothing here does I/O, reads config or keeps state between calls.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

LayerParams = dict[str, np.ndarray]  # one layer's parameters by role


@dataclass(frozen=True)
class CellType:
    """One cell: its parameters per layer and the sequential part of a layer's pass.

    ``forward(lp, proj, state0, scan) -> cells.Layer``: proj (T, B, K·H) the window's input
    projections, state0 (S, B, H); the Layer's ``hs`` (T+1, B, H) is what the layer outputs
    (hs[1:]; what the next layer and the head read), its ``state`` (S, B, H) what is carried.
    ``backward(layer, lp, dh, scan, trace, grads) -> (dproj (T, B, K·H), dstate0 (S, B, H))``:
    dh (T, B, H) the loss gradient at each output from above (may be overwritten); writes the
    gradients of the cell's own parameters into ``grads`` (by role); ``trace`` (T, B, H), when
    given, receives each step's total gradient w.r.t. the recurrent state (``rnn.backward``'s
    ``dh_trace``).
    ``forward1(lp, x, state0) -> cells.Layer``, optional: the scan path at B = 1 through a kernel
    that reads x (T, 1) symbols or (T, 1, D) floats itself (W_ih's columns, as the classic cells'
    B = 1 kernels), skipping ``project``; the same Layer as ``forward``'s scan path, whose
    ``backward`` it shares.
    """

    name: str
    state_size: int  # S: arrays per layer in the carried state (h; the LRU's Re and Im)
    input_rows: int  # K: rows of W_ih per unit, (K·H, D)
    bias: bool  # W_ih x + b_ih (False: W_ih x alone)
    recurrent: str | None  # the role of the recurrent weight diagnostics read (None: none)
    own: Callable[[int], dict[str, tuple]]  # H -> the cell's other parameters' shapes by role
    init: Callable  # (lp, rng, D, H, top: bool, options) -> None: fills lp in place
    forward: Callable
    backward: Callable
    forward1: Callable | None = None

    def names(self, k: int) -> dict[str, str]:
        """Layer k's parameter names by role, in the flat buffer's order."""
        return _names(self, k)

    def shapes(self, k: int, D: int, H: int) -> dict[str, tuple]:
        """Layer k's parameter shapes by name; D its input width."""
        by_role = {"W_ih": (self.input_rows * H, D), "b_ih": (self.input_rows * H,)}
        by_role |= self.own(H)
        return {name: by_role[role] for role, name in self.names(k).items()}

    def layer(self, params: dict[str, np.ndarray], k: int) -> LayerParams:
        """Layer k's parameters (or their gradients) by role."""
        return {role: params[name] for role, name in self.names(k).items()}


@functools.cache
def _names(cell: CellType, k: int) -> dict[str, str]:
    roles = ["W_ih", *(["b_ih"] if cell.bias else []), *cell.own(1)]
    return {role: f"{role}_l{k}" for role in roles}


def project(W: np.ndarray, b: np.ndarray | None, x: np.ndarray) -> np.ndarray:
    """W x_t + b for every step, (T, B, G). x: (T, B) int symbols, read as columns of W (never a
    one-hot matmul), or (T, B, D) floats (one GEMM); W: (G, D); b: (G,) or None."""
    T, B = x.shape[:2]
    G = W.shape[0]
    if x.dtype.kind not in "iu":  # dense inputs: one GEMM
        out = np.matmul(x.reshape(T * B, -1).astype(W.dtype, copy=False), W.T).reshape(T, B, G)
        if b is not None:
            out += b
        return out
    V = W.shape[1]
    if x.min() < 0 or x.max() >= V:
        raise IndexError(f"input symbols must be in [0, {V}); got {x.min()}..{x.max()}")
    if B == 1:  # the window's T columns of W; mode="clip" only because the range is checked
        cols = np.take(W, x[:, 0], axis=1, mode="clip").T  # (T, G)
        out = np.add(cols, b) if b is not None else np.ascontiguousarray(cols)
        return out.reshape(T, 1, G)
    table = W.T + b if b is not None else np.ascontiguousarray(W.T)  # (V, G): row s is W x + b
    return np.take(table, x, axis=0, mode="clip")  # (T, B, G)


# --- elementwise pieces the cells share ---------------------------------------------------------


def sigmoid(z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """σ(z) = ½ tanh(z/2) + ½: one SIMD tanh (numpy's exp + reciprocal cost more), finite for
    every z."""
    out = np.multiply(z, 0.5, out=out)
    np.tanh(out, out=out)
    out *= 0.5
    out += 0.5
    return out


def g(z: np.ndarray) -> np.ndarray:
    """minGRU/minLSTM's g(z) = z + ½ for z ≥ 0, σ(z) below: positive and continuous (the
    log-space form's activation, Feng et al. 2024), as max(z, 0) + σ(min(z, 0))."""
    out = sigmoid(np.minimum(z, 0.0))
    out += np.maximum(z, 0.0)
    return out


def g_grad(gz: np.ndarray) -> np.ndarray:
    """g'(z) written through g(z): 1 where z ≥ 0 (there g ≥ ½), σ(1 − σ) where z < 0 (g < ½)."""
    d = np.subtract(1.0, gz)
    d *= gz
    np.copyto(d, 1.0, where=gz >= 0.5)
    return d
