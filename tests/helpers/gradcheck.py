"""The gradient oracle both engine test files use: central differences and the error measure.

A central difference of a loss of ~10 at eps=1e-5 carries ~1e-10 of absolute rounding noise
(measured: 3e-11 to 4e-9 here), so relative error only means something for gradients well above
that. Below ``FLOOR`` the comparison is absolute: |analytic - numeric| < REL_TOL · FLOOR.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-5  # central-difference step
REL_TOL = 1e-6  # max relative error allowed
FLOOR = 1e-3


def numeric_grad(f, x: np.ndarray) -> np.ndarray:
    """Central differences of the scalar f() w.r.t. every entry of x (perturbed in place)."""
    g = np.zeros_like(x)
    flat = x.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + EPS
        plus = f()
        flat[i] = old - EPS
        minus = f()
        flat[i] = old
        g.reshape(-1)[i] = (plus - minus) / (2 * EPS)
    return g


def rel_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """max |a - n| / max(|a|, |n|, FLOOR): relative, absolute below the floor."""
    scale = np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), FLOOR)
    return float(np.max(np.abs(analytic - numeric) / scale))
