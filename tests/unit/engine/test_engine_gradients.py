"""The engine is proven three ways: against finite differences (every parameter, every head,
both activations, B = 1 and B > 1, float64), against itself (a batch of B streams equals B
separate passes) and against the seed (min-char-rnn's lossFun, kept as ``bench.naive_lossfun``).
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers.gradcheck import FLOOR, REL_TOL, numeric_grad, rel_error

from rnnlab.bench.references import naive_lossfun
from rnnlab.engine import rnn


def make_problem(head: str, activation: str, B: int, seed: int = 0, T: int = 6, H: int = 5):
    """Small float64 problem: params (flat, views), inputs, targets, a non-zero hprev
    (1, 1, B, H) and the one-layer vanilla Spec."""
    rng = np.random.default_rng(seed)
    if head == "xent":
        V = 7
        D, O = V, V
        xs = rng.integers(0, V - 1, (T, B))  # symbol V-1 never appears: its Wxh column gets 0
        ys = rng.integers(0, V, (T, B))
    else:
        D, O = 2, 3
        xs = rng.random((T, B, D))  # dense float inputs (the adder feeds two bits per step)
        ys = rng.integers(0, 2, (T, B, O)).astype(np.float64)
    flat, params = rnn.init_params(D, H, O, rng, "normal", 0.5, np.float64)
    flat += rng.normal(0.0, 0.1, flat.shape)  # non-zero biases too
    lo = 0.0 if activation == "sigmoid" else -0.9  # hprev in the activation's range
    hprev = rng.uniform(lo, 0.9, (1, 1, B, H))
    return flat, params, xs, ys, hprev, rnn.Spec(hidden_size=H, activation=activation)


def mean_loss(params, xs, ys, hprev, spec, head) -> float:
    """The quantity loss_and_grads differentiates: the mean over streams of the window loss."""
    fwd = rnn.forward(params, xs, hprev, spec)
    loss, _ = rnn.HEADS[head](fwd.logits, ys)
    return float(loss.mean())


CASES = [
    (head, activation, B)
    for head in ("xent", "mse", "bce", "squared")
    for activation in ("tanh", "sigmoid")
    for B in (1, 3)
]


@pytest.mark.parametrize(("head", "activation", "B"), CASES)
def test_gradients_match_finite_differences(head, activation, B):
    flat, params, xs, ys, hprev, spec = make_problem(head, activation, B)
    grad_flat, grads = rnn.packed_zeros({k: v.shape for k, v in params.items()}, np.float64)
    loss, _, _ = rnn.loss_and_grads(params, xs, ys, hprev, spec, head, grads)
    assert loss.shape == (B,)

    numeric = numeric_grad(lambda: mean_loss(params, xs, ys, hprev, spec, head), flat)
    _, num_views = rnn.packed_zeros({k: v.shape for k, v in params.items()}, np.float64)
    num_flat = next(iter(num_views.values())).base
    num_flat[...] = numeric
    errors = {k: rel_error(grads[k], num_views[k]) for k in rnn.PARAM_NAMES}
    print(f"{head}/{activation}/B={B}: " + ", ".join(f"{k} {e:.1e}" for k, e in errors.items()))
    assert max(errors.values()) < REL_TOL, errors
    # The check has teeth: most entries are far above the floor, and a gradient 1e-5 off is caught.
    assert np.mean(np.abs(numeric) > FLOOR) > 0.75
    assert rel_error(grad_flat * (1 + 1e-5), numeric) > REL_TOL
    if head == "xent":
        # A symbol that never appears as input gets an exactly zero column, numerically too.
        assert np.all(grads["Wxh"][:, -1] == 0.0)
        assert np.all(num_views["Wxh"][:, -1] == 0.0)


@pytest.mark.parametrize(("head", "activation", "B"), CASES)
def test_gradient_wrt_hprev_matches_finite_differences(head, activation, B):
    _, params, xs, ys, hprev, spec = make_problem(head, activation, B, seed=1)
    fwd = rnn.forward(params, xs, hprev, spec)
    _, dlogits = rnn.HEADS[head](fwd.logits, ys)
    _, dh0 = rnn.backward(params, fwd, dlogits)
    assert dh0.shape == hprev.shape
    numeric = numeric_grad(lambda: mean_loss(params, xs, ys, hprev, spec, head), hprev)
    err = rel_error(dh0, numeric)
    print(f"hprev {head}/{activation}/B={B}: {err:.1e}")
    assert err < REL_TOL
    assert np.mean(np.abs(numeric) > FLOOR) > 0.75


def test_float32_gradients_agree_with_float64():
    """float32 runs the same math: gradients agree with float64 to single precision."""
    flat, params, xs, ys, hprev, spec = make_problem("xent", "tanh", 4, T=25, H=20)
    g64 = rnn.loss_and_grads(params, xs, ys, hprev, spec, "xent")[1]
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    loss32, g32, h32 = rnn.loss_and_grads(p32, xs, ys, hprev.astype(np.float32), spec, "xent")
    assert h32.dtype == np.float32 and all(g.dtype == np.float32 for g in g32.values())
    for k in rnn.PARAM_NAMES:
        scale = np.abs(g64[k]).max()
        assert np.abs(g32[k] - g64[k]).max() < 1e-4 * scale, k


# --- batching is exact ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "activation"), [("xent", "tanh"), ("mse", "sigmoid"), ("bce", "tanh")]
)
def test_batch_equals_mean_of_separate_streams(head, activation):
    B = 5
    _, params, xs, ys, hprev, spec = make_problem(head, activation, B, seed=2, T=12, H=8)
    loss, grads, h = rnn.loss_and_grads(params, xs, ys, hprev, spec, head)
    mean_grads = {k: np.zeros_like(v) for k, v in params.items()}
    for b in range(B):
        loss_b, grads_b, h_b = rnn.loss_and_grads(
            params, xs[:, b : b + 1], ys[:, b : b + 1], hprev[:, :, b : b + 1], spec, head
        )
        np.testing.assert_allclose(loss[b], loss_b[0], rtol=1e-10, atol=0)
        np.testing.assert_allclose(h[:, :, b], h_b[:, :, 0], rtol=1e-10, atol=1e-12)
        for k in rnn.PARAM_NAMES:
            mean_grads[k] += grads_b[k] / B
    for k in rnn.PARAM_NAMES:
        scale = np.abs(mean_grads[k]).max()
        assert scale > 1e-3  # not trivially zero
        assert np.abs(grads[k] - mean_grads[k]).max() <= 1e-10 * scale, k


# --- the engine at B = 1 is the seed --------------------------------------------------------------


@pytest.mark.parametrize("scale", [0.01, 0.3])
def test_engine_equals_min_char_rnn_lossfun(scale):
    """Same window, same weights: same loss, same gradients (before clipping), same final h."""
    rng = np.random.default_rng(3)
    V, H, T = 30, 50, 25
    _, params = rnn.init_params(V, H, V, rng, "normal", scale, np.float64)
    params["bh"][...] = rng.normal(0, scale, H)
    params["by"][...] = rng.normal(0, scale, V)
    data = rng.integers(0, V, T + 1)
    inputs, targets = list(data[:-1]), list(data[1:])
    hprev = np.tanh(rng.normal(0, 1, (H, 1)))

    loss, dWxh, dWhh, dWhy, dbh, dby, h = naive_lossfun(
        inputs,
        targets,
        hprev,
        params["Wxh"],
        params["Whh"],
        params["Why"],
        params["bh"][:, None],
        params["by"][:, None],
    )
    e_loss, e_grads, e_h = rnn.loss_and_grads(
        params,
        data[:-1, None],
        data[1:, None],
        hprev.T[None, None],
        rnn.Spec(hidden_size=H),
        "xent",
    )
    naive = {"Wxh": dWxh, "Whh": dWhh, "Why": dWhy, "bh": dbh[:, 0], "by": dby[:, 0]}
    assert abs(e_loss[0] - loss) <= 1e-10 * abs(loss)
    np.testing.assert_allclose(e_h[0, 0, 0], h[:, 0], rtol=1e-10, atol=1e-14)
    for k in rnn.PARAM_NAMES:
        scale_k = np.abs(naive[k]).max()
        assert np.abs(e_grads[k] - naive[k]).max() <= 1e-10 * scale_k, k


def test_truncated_bptt_carries_state_like_one_long_forward():
    """Two windows with hprev carried give the same states and losses as one long window."""
    _, params, xs, ys, hprev, spec = make_problem("xent", "tanh", 2, seed=4, T=10)
    loss_all, _, h_all = rnn.loss_and_grads(params, xs, ys, hprev, spec, "xent")
    loss_a, _, h_mid = rnn.loss_and_grads(params, xs[:4], ys[:4], hprev, spec, "xent")
    loss_b, _, h_end = rnn.loss_and_grads(params, xs[4:], ys[4:], h_mid, spec, "xent")
    np.testing.assert_allclose(loss_a + loss_b, loss_all, rtol=1e-12)
    np.testing.assert_allclose(h_end, h_all, rtol=1e-12)


def test_packed_views_share_one_buffer():
    flat, params = rnn.init_params(3, 4, 5, np.random.default_rng(0), "uniform", 1.0)
    assert flat.size == 4 * 3 + 4 * 4 + 5 * 4 + 4 + 5
    assert {k: v.shape for k, v in params.items()} == rnn.param_shapes(3, 4, 5)
    flat[:] = 7.0
    assert all(np.all(v == 7.0) for v in params.values())


def test_init_follows_the_seeds():
    rng = np.random.default_rng(0)
    _, p = rnn.init_params(80, 100, 80, rng, "normal", 0.01)
    w = np.concatenate([p[k].ravel() for k in ("Wxh", "Whh", "Why")])
    assert abs(w.std() - 0.01) < 3e-4 and abs(w.mean()) < 3e-4
    assert np.all(p["bh"] == 0) and np.all(p["by"] == 0)
    _, p = rnn.init_params(2, 16, 1, rng, "uniform", 1.0)
    w = np.concatenate([p[k].ravel() for k in ("Wxh", "Whh", "Why")])
    assert w.min() >= -1.0 and w.max() < 1.0 and w.min() < -0.8 and w.max() > 0.8
    with pytest.raises(ValueError, match="unknown init 'xavier'"):
        rnn.init_params(2, 3, 1, rng, "xavier")


def test_both_scatter_paths_of_dWxh_equal_a_loop():
    """dWxh is a scatter-add over input symbols, done two ways either side of N = 200 rows:
    both must equal the plain per-step accumulation."""
    rng = np.random.default_rng(3)
    H, V = 6, 9
    for N in (25, 199, 200, 800):
        sym = rng.integers(0, V - 2, N)  # two symbols never appear: their columns stay 0
        dz = rng.standard_normal((N, H))
        expected = np.zeros((H, V))
        for n in range(N):
            expected[:, sym[n]] += dz[n]
        got = np.full((H, V), np.nan)  # every entry must be written, seen or not
        rnn._scatter_columns(sym, dz, got)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_xent_is_exact_for_huge_logits(dtype):
    """Past the unshifted limit the head shifts each row by its max: still finite and equal to
    the textbook log-softmax (computed in float64 with the shift)."""
    rng = np.random.default_rng(4)
    T, B, V = 4, 3, 5
    logits = (rng.standard_normal((T, B, V)) * 300.0).astype(dtype)  # e^300 overflows float32/64
    targets = rng.integers(0, V, (T, B))
    z = logits.astype(np.float64)
    logp = z - z.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    expected_loss = -np.take_along_axis(logp, targets[..., None], -1)[..., 0].sum(0)
    expected_grad = np.exp(logp)
    np.put_along_axis(expected_grad, targets[..., None], 0.0, -1)
    expected_grad += np.where(np.arange(V) == targets[..., None], np.exp(logp) - 1.0, 0.0)
    loss, dlogits = rnn.softmax_xent(logits.copy(), targets)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(dlogits))
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(loss, expected_loss, rtol=tol)
    np.testing.assert_allclose(dlogits, expected_grad / B, rtol=tol, atol=tol)


def test_out_of_range_symbols_are_refused():
    """The input gather runs unchecked for speed (mode="clip"), so range is checked first:
    a bad symbol must raise, never silently read a neighbouring column."""
    rng = np.random.default_rng(5)
    _, params = rnn.init_params(4, 3, 4, rng)
    spec = rnn.Spec(hidden_size=3)
    h = rnn.zero_state(spec, 1, np.float64)
    for bad in (4, -1):
        with pytest.raises(IndexError, match="input symbols must be in"):
            rnn.forward(params, np.array([[0], [bad]]), h, spec)
