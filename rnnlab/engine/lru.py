"""The Linear Recurrent Unit (Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks for
Long Sequences"), one layer at a time; its complex arithmetic stays inside this module.

    λ = exp(−exp(ν) + i·exp(θ))      γ = exp(γ_log), initially √(1 − |λ|²)          (H,) each
    x_t = λ ⊙ x_{t-1} + γ ⊙ (B x_in_t)       complex state, B = B_re + i·B_im (H, D)
    y_t = Re(C x_t) + D x_in_t               C = C_re + i·C_im (H, H), D (H, D)

|λ| = exp(−exp(ν)) < 1 for every ν: stable by construction. The recurrence is diagonal and linear,
so a window runs step by step or by a scan (``rnnlab.engine.scan``); the state dimension is the
layer's hidden size. B and D are the rows of one input projection W_ih = [B_re; B_im; D] (3H, D),
no bias (the paper's); the layer outputs y (what the next layer and the head read) and carries x,
as (Re x, Im x): the carried state is (2, B, H). Note that the paper puts an MLP/GLU and a skip
after every LRU; here the stacked layers are LRUs alone, so the network is linear up to the head.

Initialisation (the paper's appendix): |λ|² uniform on [r_min², r_max²] (the ring), arg λ uniform
on [0, max_phase]; γ_log = log √(1 − |λ|²); B_re, B_im ~ N(0, 1/(2D)); C_re, C_im ~ N(0, 1/H).
The paper's D is diagonal N(0, 1) because its inputs and outputs have the same width; layer 0
here reads V symbols, so D is dense, N(0, 1/D).

Gradients of complex quantities are ∂L/∂Re + i ∂L/∂Im; for w = f(z) holomorphic the gradient
reaching z is conj(f'(z)) times w's.

Nothing here does I/O, reads config or keeps state between calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rnnlab.engine import cells, scan
from rnnlab.engine.cell_api import CellType

COMPLEX = {np.dtype(np.float64): np.complex128, np.dtype(np.float32): np.complex64}


@dataclass
class LRUConfig:
    """The LRU's initialisation (``cell=lru`` only): the ring of eigenvalues."""

    r_min: float = 0.0  # smallest |λ| at init (the paper's long-range tasks: 0.9)
    r_max: float = 1.0  # largest |λ| at init (excluded; long-range tasks: 0.999)
    max_phase: float = 2 * math.pi  # arg λ uniform on [0, max_phase] (some tasks: π/10)


def _own(H: int) -> dict[str, tuple]:
    return {"nu_log": (H,), "theta_log": (H,), "gamma_log": (H,), "C_re": (H, H), "C_im": (H, H)}


def _init(lp, rng: np.random.Generator, D: int, H: int, top: bool, options=None) -> None:
    o = options or LRUConfig()
    tiny = 1e-12  # keeps the logs finite at the ends of [0, 1)
    u1, u2 = (np.clip(rng.random(H), tiny, 1.0 - tiny) for _ in range(2))
    r2 = u1 * (o.r_max**2 - o.r_min**2) + o.r_min**2  # |λ|²
    lp["nu_log"][...] = np.log(-0.5 * np.log(r2))
    lp["theta_log"][...] = np.log(o.max_phase * u2)
    lp["gamma_log"][...] = np.log(np.sqrt(1.0 - r2))
    W = lp["W_ih"]  # [B_re; B_im; D]
    W[: 2 * H] = rng.standard_normal((2 * H, D)) / math.sqrt(2 * D)
    lp["C_re"][...] = rng.standard_normal((H, H)) / math.sqrt(H)
    lp["C_im"][...] = rng.standard_normal((H, H)) / math.sqrt(H)
    W[2 * H :] = rng.standard_normal((H, D)) / math.sqrt(D)


def eigenvalues(lp) -> np.ndarray:
    """λ (H,), complex: exp(−exp(ν) + i exp(θ))."""
    nu, theta = lp["nu_log"], lp["theta_log"]
    lam = np.empty(nu.shape, dtype=COMPLEX[nu.dtype])
    lam.real, lam.imag = -np.exp(nu), np.exp(theta)
    return np.exp(lam)


def _output_map(lp) -> np.ndarray:
    """C as real (H, 2H) with columns interleaved (C_re, −C_im): Re(C x) is this matrix times
    x viewed as interleaved (Re, Im) pairs, one GEMM."""
    C_re = lp["C_re"]
    H = C_re.shape[0]
    Cv = np.empty((H, 2 * H), dtype=C_re.dtype)
    Cv[:, 0::2] = C_re
    np.negative(lp["C_im"], out=Cv[:, 1::2])
    return Cv


def forward(lp, proj: np.ndarray, state0: np.ndarray, use_scan: bool) -> cells.Layer:
    """One LRU layer over a window: proj (T, B, 3H) = [B_re x; B_im x; D x], state0 (2, B, H) =
    (Re x_0, Im x_0). The Layer's hs are the outputs y (hs[0] = Re(C x_0))."""
    T, B, G = proj.shape
    H = G // 3
    ct = COMPLEX[proj.dtype]
    lam, gamma = eigenvalues(lp), np.exp(lp["gamma_log"])
    u = np.empty((T, B, H), dtype=ct)  # B x_in, complex
    u.real, u.imag = proj[..., :H], proj[..., H : 2 * H]
    b = np.multiply(u, gamma)
    x0 = np.empty((B, H), dtype=ct)
    x0.real, x0.imag = state0[0], state0[1]
    xs = np.empty((T + 1, B, H), dtype=ct)
    scan.forward(lam, b, x0, xs, scan.method(use_scan))
    Cv = _output_map(lp)
    xv = xs.view(proj.dtype).reshape((T + 1) * B, 2 * H)  # (Re, Im) interleaved
    hs = np.matmul(xv, Cv.T).reshape(T + 1, B, H)  # Re(C x_t)
    hs[1:] += proj[..., 2 * H :]  # + D x_in
    state = np.stack([xs[-1].real, xs[-1].imag])
    saved = {"xs": xs, "u": u, "lam": lam, "gamma": gamma, "Cv": Cv}
    return cells.Layer(hs=hs, state=state, saved=saved)


def backward(layer: cells.Layer, lp, dy: np.ndarray, use_scan: bool, trace, grads):
    """BPTT through one LRU layer: dy (T, B, H) the gradient at each output y_t. Returns (d proj
    (T, B, 3H), d state0 (2, B, H)); writes d ν, d θ, d γ_log, d C_re, d C_im into ``grads``.
    ``trace`` receives |d loss / d x_t| per unit: the complex state's gradient, whose norm over
    the units is that of (Re, Im) together."""
    s = layer.saved
    xs, u, lam, gamma, Cv = s["xs"], s["u"], s["lam"], s["gamma"], s["Cv"]
    T, B, H = dy.shape
    N = T * B
    dt = dy.dtype
    dproj = np.empty((T, B, 3 * H), dtype=dt)
    dproj[..., 2 * H :] = dy  # D x_in
    dy2 = dy.reshape(N, H)
    # into x_t from y_t: ∂y/∂Re x = C_re, ∂y/∂Im x = −C_im, i.e. dy @ Cv interleaved (Re, Im)
    G = np.matmul(dy2, Cv).view(xs.dtype).reshape(T, B, H)
    dx0 = scan.backward(lam, G, scan.method(use_scan))  # G becomes each step's total gradient
    if trace is not None:
        np.abs(G, out=trace)
    xv = xs[1:].view(dt).reshape(N, 2 * H)
    dCv = np.matmul(dy2.T, xv)  # (H, 2H)
    grads["C_re"][...] = dCv[:, 0::2]
    np.negative(dCv[:, 1::2], out=grads["C_im"])
    gu = np.multiply(G, gamma)  # into B x_in (γ real)
    dproj[..., :H], dproj[..., H : 2 * H] = gu.real, gu.imag
    # γ: Σ Re(G conj(u)); γ_log: γ times that
    pairs = (N, H, 2)
    dgamma = np.einsum("nhc,nhc->h", G.view(dt).reshape(pairs), u.view(dt).reshape(pairs))
    np.multiply(dgamma, gamma, out=grads["gamma_log"])
    # λ: Σ G_t conj(x_{t-1}); then through λ = exp(s), s = −exp(ν) + i exp(θ)
    dlam = np.einsum("tbh,tbh->h", G, np.conj(xs[:-1]))
    ds = np.conj(lam) * dlam
    np.multiply(-np.exp(lp["nu_log"]), ds.real, out=grads["nu_log"])
    np.multiply(np.exp(lp["theta_log"]), ds.imag, out=grads["theta_log"])
    return dproj, np.stack([dx0.real, dx0.imag])


CELL = CellType(
    name="lru",
    state_size=2,
    input_rows=3,
    bias=False,
    recurrent=None,
    own=_own,
    init=_init,
    forward=forward,
    backward=backward,
)
