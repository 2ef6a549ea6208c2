"""The IRNN (Le, Jaitly & Hinton 2015, "A Simple Way to Initialize Recurrent Networks of Rectified
Linear Units"): the vanilla cell with ReLU, its recurrent matrix starting as the identity.

    h_t = relu(Wxh x_t + Whh h_{t-1} + bh)        Whh = s·I, bh = 0, Wxh ~ N(0, 0.001²) at init

With Whh = I and no bias a unit passes its value on unchanged until an input moves it, so at the
start every error derivative flows back through time unchanged (ReLU's slope is 1 where a unit is
on). The paper trains with gradient clipping and scales the identity down (s < 1) for tasks with
short dependencies, to forget faster. The layer itself is the engine's vanilla layer
(``cells.rnn_forward`` with relu): same weights, names and export (``torch.nn.RNN`` with
``nonlinearity="relu"``); only the initialisation is this module's.

Nothing here does I/O, reads config or keeps state between calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INPUT_STD = 0.001  # Le et al.'s input weights, N(0, 0.001²)


@dataclass
class IRNNConfig:
    """The IRNN's initialisation (``cell=irnn`` only)."""

    identity_scale: float = 1.0  # Whh = identity_scale · I at init (the paper: 1; < 1 forgets)


def init(Wxh: np.ndarray, Whh: np.ndarray, bh: np.ndarray, rng, scale: float | None) -> None:
    """One layer's weights in place: Wxh ~ N(0, 0.001²), Whh = scale · I, bh = 0."""
    Wxh[...] = rng.standard_normal(Wxh.shape) * INPUT_STD
    Whh[...] = np.eye(Whh.shape[0]) * (1.0 if scale is None else scale)
    bh[...] = 0.0
