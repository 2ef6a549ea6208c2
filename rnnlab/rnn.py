"""The shared recurrent network: forward pass, output heads and BPTT, as pure numpy functions.

One engine serves both tasks. The hidden recurrence is

    h_t = act(Wxh x_t + Whh h_{t-1} + bh)        y_t = Why h_t + by

with ``act`` tanh (char-RNN) or sigmoid (adder). Inputs arrive either as integer symbols, looked
up as columns of ``Wxh`` (never a one-hot matmul), or as dense float vectors (the adder's two bits
per step). Arrays are time-major and batch-second: ``xs`` is (T, B) or (T, B, D), hidden states
are (B, H). Weights keep min-char-rnn's orientation (``Wxh`` is (H, D)) and names.

Nothing here does I/O, reads config or keeps state between calls.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Params = dict[str, np.ndarray]
PARAM_NAMES = ("Wxh", "Whh", "Why", "bh", "by")


def _sigmoid(z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """1 / (1 + e^-z), optionally in place."""
    # e^-z overflows to inf for very negative z and 1/(1+inf) = 0 is the right limit, so the
    # overflow warning is noise, not an error.
    out = np.negative(z, out=out)
    with np.errstate(over="ignore"):
        np.exp(out, out=out)
    out += 1.0
    return np.reciprocal(out, out=out)


def _tanh_grad(h: np.ndarray) -> np.ndarray:
    """tanh'(z) written through h = tanh(z): 1 - h²."""
    d = np.multiply(h, h)
    return np.subtract(1.0, d, out=d)  # in place: one temporary, not two


def _sigmoid_grad(h: np.ndarray) -> np.ndarray:
    """sigmoid'(z) written through h = sigmoid(z): h (1 - h)."""
    d = np.subtract(1.0, h)
    return np.multiply(d, h, out=d)


# activation -> (function(z, out), derivative written in terms of the output h)
ACTIVATIONS: dict[str, tuple[Callable, Callable]] = {
    "tanh": (np.tanh, _tanh_grad),
    "sigmoid": (_sigmoid, _sigmoid_grad),
}


def param_shapes(input_size: int, hidden_size: int, output_size: int) -> dict[str, tuple]:
    """Shapes of the five parameters, in min-char-rnn's orientation."""
    return {
        "Wxh": (hidden_size, input_size),
        "Whh": (hidden_size, hidden_size),
        "Why": (output_size, hidden_size),
        "bh": (hidden_size,),
        "by": (output_size,),
    }


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
) -> tuple[np.ndarray, Params]:
    """Fresh weights as (flat buffer, named views). ``normal``: N(0, scale²) as min-char-rnn;
    ``uniform``: U[-scale, scale) as iamtrask's adder (scale 1). Biases start at zero."""
    flat, params = packed_zeros(param_shapes(input_size, hidden_size, output_size), dtype)
    for name in ("Wxh", "Whh", "Why"):
        shape = params[name].shape
        if init == "normal":
            params[name][...] = rng.standard_normal(shape) * scale
        elif init == "uniform":
            params[name][...] = (2.0 * rng.random(shape) - 1.0) * scale
        else:
            raise ValueError(f"unknown init {init!r}; allowed: normal, uniform")
    return flat, params


@dataclass
class Forward:
    """What the backward pass needs from the forward pass."""

    xs: np.ndarray  # (T, B) int symbols or (T, B, D) float inputs
    hs: np.ndarray  # (T+1, B, H); hs[0] is hprev, hs[t+1] the state after step t
    logits: np.ndarray  # (T, B, O)
    activation: str


def forward(params: Params, xs: np.ndarray, hprev: np.ndarray, activation: str) -> Forward:
    """Run the recurrence over a window. xs: (T, B) ints or (T, B, D) floats; hprev: (B, H)."""
    act, _ = ACTIVATIONS[activation]
    Wxh, Whh, Why, bh, by = (params[k] for k in PARAM_NAMES)
    T, B = xs.shape[:2]
    hs = np.empty((T + 1, B, Whh.shape[0]), dtype=Wxh.dtype)
    hs[0] = hprev
    # Input projections plus bh for every step at once, written into hs[1:]; the loop then adds
    # the recurrent term in place. For symbols, row s of (Wxh.T + bh) is Wxh x + bh for the
    # one-hot x of s, so the whole window is one row gather of a (V, H) table.
    if xs.dtype.kind in "iu":  # integer symbols
        V = Wxh.shape[1]
        if xs.min() < 0 or xs.max() >= V:
            raise IndexError(f"input symbols must be in [0, {V}); got {xs.min()}..{xs.max()}")
        # mode="clip" only because the range is checked above: the default mode copies
        # through a buffer, which costs as much as the gather itself.
        np.take(Wxh.T + bh, xs, axis=0, out=hs[1:], mode="clip")  # (T, B, H)
    else:
        np.matmul(xs.astype(Wxh.dtype, copy=False), Wxh.T, out=hs[1:])
        hs[1:] += bh
    WhhT = np.ascontiguousarray(Whh.T)  # contiguous rows make each step's small GEMM faster
    z = np.empty_like(hs[0])  # (B, H) pre-activation, reused every step
    h = list(hs)  # views made once: indexing inside the loop costs as much as the math at B=1
    for t in range(T):
        # The sequential part: one (B, H) @ (H, H) product and the nonlinearity per step,
        # three numpy calls writing into existing buffers (positional ``out``: fewer checks).
        np.dot(h[t], WhhT, z)
        np.add(z, h[t + 1], z)  # h[t+1] holds Wxh x_t + bh until overwritten
        act(z, h[t + 1])
    logits = np.matmul(hs[1:].reshape(T * B, -1), Why.T).reshape(T, B, -1)  # (T, B, O)
    logits += by
    return Forward(xs=xs, hs=hs, logits=logits, activation=activation)


def backward(
    params: Params, fwd: Forward, dlogits: np.ndarray, grads: Params | None = None
) -> tuple[Params, np.ndarray]:
    """Backpropagation through time over the window.

    dlogits: (T, B, O), the loss gradient w.r.t. the logits (overwritten). Writes the parameter
    gradients into ``grads`` (same keys and shapes as ``params``; allocated when None) and
    returns them with dh0 (B, H), the gradient w.r.t. hprev.
    """
    _, dact = ACTIVATIONS[fwd.activation]
    Whh, Why = params["Whh"], params["Why"]
    hs, xs = fwd.hs, fwd.xs
    T, B, H = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    N = T * B
    if grads is None:
        grads = packed_zeros({k: v.shape for k, v in params.items()}, hs.dtype)[1]
    dl = dlogits.reshape(N, -1)  # (N, O)
    h_out = hs[1:].reshape(N, H)  # states that fed the outputs
    h_in = hs[:-1].reshape(N, H)  # states that fed the recurrence

    # Bias gradients are column sums, done as GEMVs with a ones vector: numpy's column-wise
    # reduction over (N, O) is ~5x slower at B=32.
    ones = np.ones(N, dtype=hs.dtype)
    np.matmul(dl.T, h_out, out=grads["Why"])  # (O, H)
    np.matmul(ones, dl, out=grads["by"])  # (O,) = sum over the N rows
    dz = np.matmul(dl, Why).reshape(T, B, H)  # each output's gradient into its h_t; dz in place
    dhdz = dact(hs[1:])  # (T, B, H): act'(z_t) written through h_t
    dhnext = np.zeros((B, H), dtype=hs.dtype)  # gradient arriving at h_t from step t+1
    dzs, dhdzs = list(dz), list(dhdz)  # per-step views, made once
    for t in reversed(range(T)):
        np.add(dzs[t], dhnext, dzs[t])  # backprop into h_t: its output + the future
        np.multiply(dzs[t], dhdzs[t], dzs[t])  # through the nonlinearity: d loss / d z_t
        np.dot(dzs[t], Whh, dhnext)  # into h_{t-1}

    dzf = dz.reshape(N, H)
    np.matmul(dzf.T, h_in, out=grads["Whh"])  # (H, H)
    np.matmul(ones, dzf, out=grads["bh"])  # (H,) = sum over the N rows
    if xs.dtype.kind in "iu":  # integer symbols
        _scatter_columns(xs.reshape(N), dzf, grads["Wxh"])
    else:
        np.matmul(dzf.T, xs.reshape(N, -1).astype(hs.dtype, copy=False), out=grads["Wxh"])
    return grads, dhnext


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
    order = np.argsort(sym, kind="stable")
    sorted_sym = sym[order]
    run_start = np.empty(N, dtype=bool)
    run_start[0] = True
    np.not_equal(sorted_sym[1:], sorted_sym[:-1], out=run_start[1:])
    starts = np.flatnonzero(run_start)  # (K,) first sorted position of each distinct symbol
    dWxh.fill(0.0)
    dWxh[:, sorted_sym[starts]] = np.add.reduceat(dz[order], starts, axis=0).T  # (H, K)


# --- output heads -------------------------------------------------------------------------------
# Each takes logits (T, B, O) and targets, and returns the loss of each stream summed over the
# window (B,) and d(mean over streams of that loss)/dlogits (T, B, O).


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


def softmax_xent(logits: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cross-entropy of the next symbol. targets: (T, B) ints. Overwrites logits (when they are
    contiguous, as ``forward`` makes them; otherwise works on a copy)."""
    T, B, V = logits.shape
    N = T * B
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
    loss = (np.log(total) - z_target).reshape(T, B).sum(axis=0)  # (B,)
    # d/dlogits of the mean over streams: (p - onehot(target)) / B, with p = e / total.
    scale = np.reciprocal(total, out=total)
    scale *= 1.0 / B
    e *= scale[:, None]
    e.reshape(-1)[at_target] -= 1.0 / B
    return loss, e.reshape(T, B, V)  # logits' own memory unless they were not contiguous


def sigmoid_mse(logits: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """½ squared error of sigmoid outputs, as iamtrask's adder. targets: (T, B, O) in {0, 1}."""
    out = _sigmoid(logits)
    err = out - targets
    loss = 0.5 * (err * err).sum(axis=(0, 2))  # (B,)
    return loss, err * out * (1.0 - out) / logits.shape[1]


def sigmoid_bce(logits: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Binary cross-entropy of sigmoid outputs. targets: (T, B, O) in {0, 1}."""
    # log(1 + e^z) - t z, written to stay finite for large |z|.
    per_bit = np.logaddexp(0.0, logits) - targets * logits
    loss = per_bit.sum(axis=(0, 2))  # (B,)
    return loss, (_sigmoid(logits) - targets) / logits.shape[1]


HEADS: dict[str, Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]] = {
    "xent": softmax_xent,
    "mse": sigmoid_mse,
    "bce": sigmoid_bce,
}


def loss_and_grads(
    params: Params,
    xs: np.ndarray,
    targets: np.ndarray,
    hprev: np.ndarray,
    activation: str,
    head: str,
    grads: Params | None = None,
) -> tuple[np.ndarray, Params, np.ndarray]:
    """One window of truncated BPTT.

    Returns the loss of each stream summed over the window (B,), the gradients of the mean of
    those losses (written into ``grads`` when given), and the last hidden state (B, H) to carry
    into the next window.
    """
    fwd = forward(params, xs, hprev, activation)
    loss, dlogits = HEADS[head](fwd.logits, targets)
    grads, _ = backward(params, fwd, dlogits, grads)
    return loss, grads, fwd.hs[-1].copy()


def sample(
    params: Params,
    activation: str,
    h: np.ndarray,
    first: int,
    length: int,
    temperature: float,
    rng: np.random.Generator,
) -> list[int]:
    """Draw ``length`` symbols, feeding each back as the next input. h: (1, H), the state
    before ``first`` is read. Returns the drawn symbols (not ``first``)."""
    out, x = [], first
    for _ in range(length):
        fwd = forward(params, np.array([[x]]), h, activation)
        h = fwd.hs[-1]
        # float64 so the probabilities sum to 1 closely enough for Generator.choice
        p = softmax(fwd.logits[0, 0].astype(np.float64), temperature)
        x = int(rng.choice(p.size, p=p))
        out.append(x)
    return out
