"""The gated cells and stacked layers are proven as the vanilla engine is: against finite
differences (every parameter and the carried state, every cell × layers {1, 2} × every head ×
B {1, 3}, float64, non-zero initial (h, c), dropout fixed by its mask), against themselves (a batch
of B streams equals B separate passes) and, for one vanilla layer, against today's engine bit for
bit.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers.gradcheck import FLOOR, REL_TOL, numeric_grad, rel_error

from rnnlab.engine import rnn

HEADS = ("xent", "mse", "bce")
CELLS = ("rnn", "gru", "lstm")


def make_problem(cell, layers, head, B, seed=0, T=5, H=4, dropout=0.0):
    """A small float64 problem: (spec, flat, params, xs, ys, state0) with a non-zero state."""
    rng = np.random.default_rng([seed, layers, B, CELLS.index(cell), HEADS.index(head)])
    activation = "tanh" if head == "xent" else "sigmoid"
    spec = rnn.Spec(cell, layers, H, activation, dropout)
    if head == "xent":
        V = 6
        D, O = V, V
        xs = rng.integers(0, V - 1, (T, B))  # symbol V-1 never appears: its column gets 0
        ys = rng.integers(0, V, (T, B))
    else:
        D, O = 2, 3
        xs = rng.random((T, B, D))
        ys = rng.integers(0, 2, (T, B, O)).astype(np.float64)
    flat, params = rnn.init_params(D, H, O, rng, "normal", 0.5, np.float64, spec)
    flat += rng.normal(0.0, 0.3, flat.shape)  # every bias non-zero, weights away from init
    state0 = rng.uniform(-0.9, 0.9, (layers, spec.state_size, B, H))
    if cell == "rnn" and activation == "sigmoid":
        state0 = np.abs(state0)  # in the activation's range
    return spec, flat, params, xs, ys, state0


def mean_loss(params, xs, ys, state, spec, head, masks) -> float:
    fwd = rnn.forward(params, xs, state, spec, masks=masks)
    loss, _ = rnn.HEADS[head](fwd.logits, ys)
    return float(loss.mean())


GRAD_CASES = [
    (cell, layers, head, B) for cell in CELLS for layers in (1, 2) for head in HEADS for B in (1, 3)
]


@pytest.mark.parametrize(("cell", "layers", "head", "B"), GRAD_CASES)
def test_gradients_match_finite_differences(cell, layers, head, B):
    """Every parameter and the initial (h, c) of every layer, with dropout on (fixed masks)."""
    spec, flat, params, xs, ys, state0 = make_problem(cell, layers, head, B, dropout=0.3)
    T = xs.shape[0]
    masks = rnn.dropout_masks(spec, T, B, np.float64, np.random.default_rng(5))
    assert any((m == 0).any() for m in masks) and all(
        set(np.unique(m)) <= {0, 1 / 0.7} for m in masks
    )
    fwd = rnn.forward(params, xs, state0, spec, masks=masks)
    _, dlogits = rnn.HEADS[head](fwd.logits.copy(), ys)
    grads, dstate = rnn.backward(params, fwd, dlogits)
    assert dstate.shape == state0.shape == (layers, spec.state_size, B, spec.hidden_size)

    def f():
        return mean_loss(params, xs, ys, state0, spec, head, masks)

    numeric = numeric_grad(f, flat)
    num_views = rnn.packed_zeros({k: v.shape for k, v in params.items()}, np.float64)[1]
    next(iter(num_views.values())).base[...] = numeric
    errors = {k: rel_error(grads[k], num_views[k]) for k in params}
    errors["state0"] = rel_error(dstate, numeric_grad(f, state0))
    print(
        f"{cell}/L={layers}/{head}/B={B}: " + ", ".join(f"{k} {e:.1e}" for k, e in errors.items())
    )
    assert max(errors.values()) < REL_TOL, errors
    # The check has teeth: most entries are above the floor, and a 1e-5 relative error is caught.
    assert np.mean(np.abs(numeric) > FLOOR) > 0.5
    grad_flat = next(iter(grads.values())).base
    assert rel_error(grad_flat * (1 + 1e-5), numeric) > REL_TOL
    if head == "xent":  # an input symbol never seen gets an exactly zero column
        W_in = rnn.layer_names(spec, 0)[0]
        assert np.all(grads[W_in][:, -1] == 0.0) and np.all(num_views[W_in][:, -1] == 0.0)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("head", ["xent", "bce"])
def test_batch_equals_separate_passes(cell, layers, head):
    """B streams at once = B passes of one stream: logits, final state, state gradient and
    (mean over streams of) the weight gradients, to 1e-10."""
    B = 4
    spec, _, params, xs, ys, state0 = make_problem(cell, layers, head, B, T=7)
    loss, grads, state = rnn.loss_and_grads(params, xs, ys, state0, spec, head)
    fwd = rnn.forward(params, xs, state0, spec)
    _, dstate = rnn.backward(params, fwd, rnn.HEADS[head](fwd.logits.copy(), ys)[1])
    mean_grads = {k: np.zeros_like(v) for k, v in params.items()}
    for b in range(B):
        sl = slice(b, b + 1)
        lb, gb, sb = rnn.loss_and_grads(params, xs[:, sl], ys[:, sl], state0[:, :, sl], spec, head)
        fb = rnn.forward(params, xs[:, sl], state0[:, :, sl], spec)
        _, db = rnn.backward(params, fb, rnn.HEADS[head](fb.logits.copy(), ys[:, sl])[1])
        np.testing.assert_allclose(lb, loss[sl], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(sb, state[:, :, sl], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(fb.logits, fwd.logits[:, sl], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(db / B, dstate[:, :, sl], rtol=1e-10, atol=1e-12)
        for k in params:
            mean_grads[k] += gb[k] / B
    for k in params:
        np.testing.assert_allclose(grads[k], mean_grads[k], rtol=1e-10, atol=1e-12, err_msg=k)


def test_one_vanilla_layer_keeps_min_char_rnns_parameters_in_order():
    """The flat buffer of one vanilla layer is min-char-rnn's Wxh, Whh, Why, bh, by."""
    _, _, params, _, _, _ = make_problem("rnn", 1, "xent", 3)
    assert tuple(params) == rnn.PARAM_NAMES


@pytest.mark.parametrize("cell", CELLS)
def test_step_is_the_window_one_step_at_a_time(cell):
    """rnn.step (the decoders' primitive) chained over a window = one forward over it."""
    spec, _, params, xs, _, state0 = make_problem(cell, 2, "xent", 3)
    fwd = rnn.forward(params, xs, state0, spec)
    state = state0
    for t in range(xs.shape[0]):
        logits, state = rnn.step(params, spec, state, xs[t])
        np.testing.assert_allclose(logits, fwd.logits[t], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(state, fwd.state, rtol=1e-12, atol=1e-14)


def test_dropout_is_inverted_and_only_with_an_rng_or_masks():
    spec, _, params, xs, _, state0 = make_problem("lstm", 2, "xent", 3, dropout=0.5)
    plain = rnn.forward(params, xs, state0, spec)  # evaluation: no rng, no masks → no dropout
    off = rnn.forward(params, xs, state0, rnn.Spec("lstm", 2, 4, "tanh", 0.0))
    assert plain.masks is None and np.array_equal(plain.logits, off.logits)
    masks = rnn.dropout_masks(spec, 20000, 1, np.float64, np.random.default_rng(0))
    kept = np.mean([m.mean() for m in masks])
    assert abs(kept - 1.0) < 0.02  # E[mask] = 1: inverted dropout keeps the expected activation
    dropped = rnn.forward(params, xs, state0, spec, dropout_rng=np.random.default_rng(1))
    assert dropped.masks is not None and not np.allclose(dropped.logits, plain.logits)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_gated_init_is_pytorchs_uniform(cell):
    spec = rnn.Spec(cell, 2, 64)
    _, params = rnn.init_params(10, 64, 10, np.random.default_rng(0), "normal", 0.01,
                                np.float64, spec)  # fmt: skip
    bound = 1 / 8
    for k in range(2):
        for name in rnn.layer_names(spec, k):
            v = params[name]
            assert v.min() >= -bound and v.max() <= bound and v.max() > 0.9 * bound, name
    assert params["Why"].std() == pytest.approx(0.01, rel=0.1)  # task.init selects the head's


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_the_benchmarks_naive_cell_is_the_engines_math(cell):
    """bench.naive_cell_lossfun (the per-step baseline) computes the engine's loss, gradients
    and state, so the benchmark compares like with like."""
    from rnnlab.bench.references import naive_cell_lossfun

    spec, _, params, xs, ys, state0 = make_problem(cell, 1, "xent", 1)
    loss, grads, state = rnn.loss_and_grads(params, xs, ys, state0, spec, "xent")
    names = rnn.layer_names(spec, 0)
    weights = [params[names[0]], params[names[1]], params[names[2]][:, None],
               params[names[3]][:, None], params["Why"], params["by"][:, None]]  # fmt: skip
    h0 = state0[0, 0, 0][:, None]
    c0 = state0[0, 1, 0][:, None] if cell == "lstm" else np.zeros_like(h0)
    nloss, dparams, h, c = naive_cell_lossfun(
        cell, list(xs[:, 0]), list(ys[:, 0]), h0, c0, *weights
    )
    assert nloss == pytest.approx(loss[0], rel=1e-12)
    for name, d in zip([*names, "Why", "by"], dparams, strict=True):
        np.testing.assert_allclose(d.reshape(grads[name].shape), grads[name], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(h[:, 0], state[0, 0, 0], rtol=1e-12)
    if cell == "lstm":
        np.testing.assert_allclose(c[:, 0], state[0, 1, 0], rtol=1e-12)
