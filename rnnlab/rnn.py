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


# activation -> (function(z, out), derivative written in terms of the output h)
ACTIVATIONS: dict[str, tuple[Callable, Callable]] = {
    "tanh": (np.tanh, lambda h: 1.0 - h * h),
    "sigmoid": (_sigmoid, lambda h: h * (1.0 - h)),
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
    # Input projections for every step at once: a row gather for symbols, one GEMM for dense
    # inputs. They are written into hs[1:] and the loop adds the recurrent term in place.
    if np.issubdtype(xs.dtype, np.integer):
        np.take(np.ascontiguousarray(Wxh.T), xs, axis=0, out=hs[1:])  # (T, B, H)
    else:
        np.matmul(xs.astype(Wxh.dtype, copy=False), Wxh.T, out=hs[1:])
    hs[1:] += bh
    WhhT = np.ascontiguousarray(Whh.T)  # contiguous rows make each step's small GEMM faster
    rec = np.empty_like(hprev, dtype=Wxh.dtype)
    h = list(hs)  # views made once: indexing inside the loop costs as much as the math at B=1
    for t in range(T):
        # The sequential part: one (B, H) @ (H, H) product and the nonlinearity per step.
        np.dot(h[t], WhhT, out=rec)
        np.add(rec, h[t + 1], out=rec)  # h[t+1] holds Wxh x_t + bh until overwritten
        act(rec, out=h[t + 1])
    logits = (hs[1:].reshape(T * B, -1) @ Why.T).reshape(T, B, -1)  # (T, B, O)
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

    np.matmul(dl.T, h_out, out=grads["Why"])  # (O, H)
    np.sum(dl, axis=0, out=grads["by"])  # (O,)
    dz = (dl @ Why).reshape(T, B, H)  # what each output sends back to its state, then dz in place
    dhdz = dact(hs[1:])  # (T, B, H): act'(z_t) written through h_t
    dhnext = np.zeros((B, H), dtype=hs.dtype)  # gradient arriving at h_t from step t+1
    dzs, dhdzs = list(dz), list(dhdz)  # per-step views, made once
    for t in reversed(range(T)):
        np.add(dzs[t], dhnext, out=dzs[t])  # backprop into h_t: its output + the future
        np.multiply(dzs[t], dhdzs[t], out=dzs[t])  # through the nonlinearity: d loss / d z_t
        np.dot(dzs[t], Whh, out=dhnext)  # into h_{t-1}

    dzf = dz.reshape(N, H)
    np.matmul(dzf.T, h_in, out=grads["Whh"])  # (H, H)
    np.sum(dzf, axis=0, out=grads["bh"])  # (H,)
    if np.issubdtype(xs.dtype, np.integer):
        # dWxh[:, s] = sum of dz over the steps whose input was s: sort by symbol, sum each run.
        sym = xs.reshape(N)
        order = np.argsort(sym, kind="stable")
        sorted_sym = sym[order]
        run_start = np.empty(N, dtype=bool)
        run_start[0] = True
        np.not_equal(sorted_sym[1:], sorted_sym[:-1], out=run_start[1:])
        starts = np.flatnonzero(run_start)
        grads["Wxh"].fill(0.0)
        grads["Wxh"][:, sorted_sym[starts]] = np.add.reduceat(dzf[order], starts, axis=0).T
    else:
        np.matmul(dzf.T, xs.reshape(N, -1).astype(hs.dtype, copy=False), out=grads["Wxh"])
    return grads, dhnext


# --- output heads -------------------------------------------------------------------------------
# Each takes logits (T, B, O) and targets, and returns the loss of each stream summed over the
# window (B,) and d(mean over streams of that loss)/dlogits (T, B, O).


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Softmax over the last axis, shifted by the max for stability."""
    z = logits / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def softmax_xent(logits: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cross-entropy of the next symbol. targets: (T, B) ints. Overwrites logits."""
    T, B, V = logits.shape
    p = logits.reshape(T * B, V)
    p -= p.max(axis=1, keepdims=True)  # shift for stability
    np.exp(p, out=p)
    p /= p.sum(axis=1, keepdims=True)  # softmax probabilities
    rows, cols = np.arange(T * B), targets.reshape(T * B)
    loss = -np.log(p[rows, cols]).reshape(T, B).sum(axis=0)  # (B,)
    p[rows, cols] -= 1.0  # d/dlogits = p - onehot(target)
    p /= B  # the gradient is of the mean over streams
    return loss, logits


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
