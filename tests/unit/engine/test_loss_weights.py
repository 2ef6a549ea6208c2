"""Per-step loss weights in the heads, which every task shares (the adding problem and digits
weigh only their last step, copy every step by 1/T): proven against finite differences for every
head and cell, against losses written out by hand, and against the unweighted heads bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers.gradcheck import FLOOR, REL_TOL, numeric_grad, rel_error

from rnnlab.engine import rnn

HEADS = ("xent", "mse", "bce", "squared")


def make_problem(cell: str, head: str, B: int, seed: int = 0, T: int = 5, H: int = 4):
    """(spec, flat, params, xs, ys, state0, weights): a small float64 problem whose weights
    mask some steps out (0) and scale the rest unevenly."""
    rng = np.random.default_rng([seed, B, HEADS.index(head), len(cell)])
    spec = rnn.Spec(cell, 1, H, "tanh")
    if head == "xent":
        D = O = 6
        xs = rng.integers(0, D, (T, B))
        ys = rng.integers(0, O, (T, B))
    else:
        D, O = 2, 3
        xs = rng.random((T, B, D))
        ys = rng.integers(0, 2, (T, B, O)).astype(np.float64)
        if head == "squared":
            ys = rng.uniform(0.0, 2.0, (T, B, O))  # a real-valued target
    flat, params = rnn.init_params(D, H, O, rng, "normal", 0.5, np.float64, spec)
    flat += rng.normal(0.0, 0.3, flat.shape)
    state0 = rng.uniform(-0.9, 0.9, (1, spec.state_size, B, H))
    weights = rng.uniform(0.2, 2.0, (T, B))
    weights[1] = 0.0  # a masked step
    if B > 1:
        weights[3, 0] = 0.0  # masked in one stream only
    return spec, flat, params, xs, ys, state0, weights


def mean_loss(params, xs, ys, state, spec, head, weights) -> float:
    fwd = rnn.forward(params, xs, state, spec)
    loss, _ = rnn.HEADS[head](fwd.logits, ys, weights)
    return float(loss.mean())


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("head", HEADS)
def test_weighted_gradients_match_finite_differences(head, cell, B):
    """Every parameter and the initial state, under weights that mask and scale steps."""
    spec, flat, params, xs, ys, state0, weights = make_problem(cell, head, B)
    grad_flat, grads = rnn.packed_zeros({k: v.shape for k, v in params.items()}, np.float64)
    loss, _, _ = rnn.loss_and_grads(params, xs, ys, state0, spec, head, grads, weights=weights)
    assert loss.shape == (B,)
    numeric = numeric_grad(lambda: mean_loss(params, xs, ys, state0, spec, head, weights), flat)
    err = rel_error(grad_flat, numeric)
    fwd = rnn.forward(params, xs, state0, spec)
    _, dlogits = rnn.HEADS[head](fwd.logits, ys, weights)
    _, dstate = rnn.backward(params, fwd, dlogits)
    num_state = numeric_grad(lambda: mean_loss(params, xs, ys, state0, spec, head, weights), state0)
    err_state = rel_error(dstate, num_state)
    print(f"{head}/{cell}/B={B}: params {err:.1e}, state {err_state:.1e}")
    assert err < REL_TOL and err_state < REL_TOL
    assert np.mean(np.abs(numeric) > FLOOR) > 0.5  # the check has teeth
    assert rel_error(grad_flat * (1 + 1e-5), numeric) > REL_TOL


@pytest.mark.parametrize("head", HEADS)
def test_hand_computed_loss_equals_the_head(head):
    """Each head's weighted loss, written out step by step, stream by stream."""
    _, _, _, _, ys, _, weights = make_problem("rnn", head, 3)
    T, B = weights.shape
    O = 6 if head == "xent" else 3
    logits = np.random.default_rng(7).normal(0.0, 2.0, (T, B, O))
    expected = np.zeros(B)
    for b in range(B):
        for t in range(T):
            z, y_t = logits[t, b], ys[t, b]
            if head == "xent":
                step = -(z[ys[t, b]] - math.log(sum(math.exp(v) for v in z)))
            elif head == "mse":
                pairs = zip(z, y_t, strict=True)
                step = sum(0.5 * (1 / (1 + math.exp(-v)) - y) ** 2 for v, y in pairs)
            elif head == "bce":
                step = 0.0
                for v, y in zip(z, y_t, strict=True):
                    p = 1 / (1 + math.exp(-v))
                    step -= y * math.log(p) + (1 - y) * math.log(1 - p)
            else:
                step = sum((v - y) ** 2 for v, y in zip(z, y_t, strict=True))
            expected[b] += weights[t, b] * step
    loss, _ = rnn.HEADS[head](logits.copy(), ys, weights)
    np.testing.assert_allclose(loss, expected, rtol=1e-12)


@pytest.mark.parametrize("head", HEADS)
def test_unit_weights_are_the_unweighted_head_bit_for_bit(head):
    spec, _, params, xs, ys, state0, _ = make_problem("rnn", head, 3)
    plain = rnn.loss_and_grads(params, xs, ys, state0, spec, head)
    ones = rnn.loss_and_grads(params, xs, ys, state0, spec, head, weights=np.ones((1, 1)))
    assert np.array_equal(plain[0], ones[0])
    assert all(np.array_equal(plain[1][k], ones[1][k]) for k in params)


@pytest.mark.parametrize("head", HEADS)
def test_a_masked_step_ignores_its_target(head):
    """Changing the targets at steps weighted 0 changes neither the loss nor a gradient."""
    spec, _, params, xs, ys, state0, weights = make_problem("lstm", head, 3)
    other = ys.copy()
    if head == "xent":
        other[1] = (other[1] + 1) % 6
    else:
        other[1] = 1.0 - other[1] if head != "squared" else other[1] + 5.0
    a = rnn.loss_and_grads(params, xs, ys, state0, spec, head, weights=weights)
    b = rnn.loss_and_grads(params, xs, other, state0, spec, head, weights=weights)
    assert np.array_equal(a[0], b[0])
    assert all(np.array_equal(a[1][k], b[1][k]) for k in params)
    unmasked = rnn.loss_and_grads(params, xs, other, state0, spec, head)
    assert not np.allclose(unmasked[0], rnn.loss_and_grads(params, xs, ys, state0, spec, head)[0])


@pytest.mark.parametrize("head", HEADS)
def test_last_step_mask_is_the_last_step_alone(head):
    """Weights (0, …, 0, 1): the loss a task judged at its last step trains on equals the head
    on that step alone (the L_T the diagnostics' gradient flow differentiates)."""
    spec, _, params, xs, ys, state0, _ = make_problem("gru", head, 3)
    T = xs.shape[0]
    last = np.zeros((T, 1))
    last[-1] = 1.0
    fwd = rnn.forward(params, xs, state0, spec)
    masked, _ = rnn.HEADS[head](fwd.logits.copy(), ys, last)
    alone, _ = rnn.HEADS[head](fwd.logits[-1:].copy(), ys[-1:])
    np.testing.assert_allclose(masked, alone, rtol=1e-13)
