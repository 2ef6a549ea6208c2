"""The cells after the classic three (IRNN, IndRNN, minGRU, minLSTM, the LRU) are proven as the
classic cells are: finite differences for every parameter and the carried state (every cell ×
layers {1, 2} × every head × B {1, 3}, float64, dropout fixed by its mask), a batch equal to its
streams run one by one, the decoders' step equal to the window; and, new here, against an
independent implementation of each paper's equations written below (not the engine's code path),
and the scan path of the linear cells against their step path."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.gradcheck import FLOOR, REL_TOL, numeric_grad, rel_error

from rnnlab.engine import indrnn, lru, rnn, scan

HEADS = ("xent", "mse", "bce")
CELLS = ("irnn", "indrnn", "mingru", "minlstm", "lru")
LINEAR = ("mingru", "minlstm", "lru")  # trained step by step or by a scan
RELU = ("irnn", "indrnn")


def make_problem(cell, layers, head, B, seed=0, T=5, H=4, dropout=0.0, scan_path=True):
    """A small float64 problem on random weights (not the init): (spec, flat, params, xs, ys,
    state0) with a non-zero state."""
    rng = np.random.default_rng([seed, layers, B, CELLS.index(cell), HEADS.index(head), T])
    activation = "tanh" if head == "xent" else "sigmoid"
    spec = rnn.Spec(cell, layers, H, activation, dropout, scan_path)
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
    if cell in RELU:  # units mostly on, as a ReLU state is, and not growing without bound:
        state0 = np.abs(state0)  # the check then sees most weights, away from FD's noise
        flat *= 0.5
        for k in range(layers):
            params[rnn.layer_names(spec, k)[2]] += 0.5
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
    """Every parameter and the initial state of every layer, with dropout on (fixed masks); the
    linear cells on their scan path at B = 3 and their step path at B = 1."""
    spec, flat, params, xs, ys, state0 = make_problem(
        cell, layers, head, B, dropout=0.3, scan_path=B > 1
    )
    T = xs.shape[0]
    masks = rnn.dropout_masks(spec, T, B, np.float64, np.random.default_rng(5))
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
    assert np.mean(np.abs(numeric) > FLOOR) > 0.4
    grad_flat = next(iter(grads.values())).base
    assert rel_error(grad_flat * (1 + 1e-5), numeric) > REL_TOL


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers", [1, 2])
def test_batch_equals_separate_passes(cell, layers):
    """B streams at once = B passes of one stream: logits, final state, state gradient and
    (mean over streams of) the weight gradients, to 1e-10."""
    B, head = 4, "xent"
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
        np.testing.assert_allclose(db / B, dstate[:, :, sl], rtol=1e-10, atol=1e-12)
        for k in params:
            mean_grads[k] += gb[k] / B
    for k in params:
        np.testing.assert_allclose(grads[k], mean_grads[k], rtol=1e-10, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("cell", CELLS)
def test_step_is_the_window_one_step_at_a_time(cell):
    """rnn.step (the decoders' primitive) chained over a window = one forward over it."""
    spec, _, params, xs, _, state0 = make_problem(cell, 2, "xent", 3, T=9)
    fwd = rnn.forward(params, xs, state0, spec)
    state = state0
    for t in range(xs.shape[0]):
        logits, state = rnn.step(params, spec, state, xs[t])
        np.testing.assert_allclose(logits, fwd.logits[t], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(state, fwd.state, rtol=1e-12, atol=1e-13)


# --- the scan ----------------------------------------------------------------------------------


def naive_recurrence(a, b, h0):
    """h_t = a_t h_{t-1} + b_t, one step at a time (a (T, ...) or (...) for every step)."""
    h, out = h0, [h0]
    for t in range(b.shape[0]):
        h = (a if a.ndim < b.ndim else a[t]) * h + b[t]
        out.append(h)
    return np.array(out)


def naive_reverse(a, dh):
    """G_t = dh_t + conj(a_{t+1}) G_{t+1} backwards, and conj(a_1) G_1."""
    T = dh.shape[0]
    G = np.array(dh, copy=True)
    ac = np.conj(a)
    for t in range(T - 2, -1, -1):
        G[t] = G[t] + (ac if a.ndim < dh.ndim else ac[t + 1]) * G[t + 1]
    return G, (ac if a.ndim < dh.ndim else ac[0]) * G[0]


@pytest.mark.parametrize("T", [1, 2, 3, 4, 5, 7, 9, 16, 23, 25, 40, 200])
@pytest.mark.parametrize("kind", ["real", "complex constant", "real constant"])
def test_scan_equals_a_plain_loop_forward_and_backward(T, kind):
    """scan.forward/backward by every method (numpy step by step, the numpy blocked scan, the
    compiled kernels) = a plain Python loop over the recurrence, to 1e-12, for window lengths
    with and without a short last chunk, time-varying and constant a, real and complex."""
    rng = np.random.default_rng(T)
    shape = (T, 3, 5)
    if kind == "real":
        a = rng.uniform(0.0, 1.0, shape)
    elif kind == "real constant":
        a = rng.uniform(-1.0, 1.0, shape[1:])
    else:  # the LRU's λ: |λ| < 1, the same every step
        a = rng.uniform(0.0, 1.0, shape[2:]) * np.exp(1j * rng.uniform(0, 2 * np.pi, shape[2:]))
    cplx = np.iscomplexobj(a)
    b = rng.normal(size=shape) + (1j * rng.normal(size=shape) if cplx else 0.0)
    h0 = rng.normal(size=shape[1:]) + (1j * rng.normal(size=shape[1:]) if cplx else 0.0)
    dh = rng.normal(size=shape) + (1j * rng.normal(size=shape) if cplx else 0.0)
    want = naive_recurrence(a, b, h0)
    want_G, want_d0 = naive_reverse(a, dh)
    for how in scan.METHODS:
        hs = np.empty((T + 1, *shape[1:]), dtype=b.dtype)
        scan.forward(a, b, h0, hs, how)
        np.testing.assert_allclose(hs, want, rtol=1e-12, atol=1e-12)
        G = dh.copy()
        d0 = scan.backward(a, G, how)
        np.testing.assert_allclose(G, want_G, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(d0, want_d0, rtol=1e-12, atol=1e-12)


def test_scan_is_finite_where_a_underflows():
    """Multipliers of exactly 0 or ~1e-300 (a gate fully open) neither divide by zero nor lose
    the state: the scan has no division, products only ever underflow to 0."""
    T = 50
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, (T, 2, 4))
    a[10:30] = 1e-300
    a[35, 0] = 0.0
    b = rng.normal(size=(T, 2, 4))
    for how in ("blocked", "compiled"):
        hs = np.empty((T + 1, 2, 4))
        scan.forward(a, b, np.ones((2, 4)), hs, how)
        assert np.all(np.isfinite(hs))
        np.testing.assert_allclose(hs, naive_recurrence(a, b, np.ones((2, 4))), rtol=1e-12)


@pytest.mark.parametrize("cell", LINEAR)
@pytest.mark.parametrize("T", [1, 2, 25, 200])
@pytest.mark.parametrize("B", [1, 3])
def test_scan_path_equals_step_path_float64(cell, T, B):
    """scan=true and scan=false: the same losses, gradients, final state and state gradient to
    1e-10 over windows of 1, 2, 25 and 200 steps, from a carried (non-zero) state and then
    carrying each path's own final state into a second window; one stream (minGRU's and
    minLSTM's B = 1 kernels) and several."""
    H, V = 6, 7
    rng = np.random.default_rng(T)
    xs = rng.integers(0, V, (2, T, B))
    ys = rng.integers(0, V, (2, T, B))
    out = {}
    for use_scan in (True, False):
        spec = rnn.Spec(cell, 2, H, "tanh", 0.0, use_scan)
        _, params = rnn.init_params(V, H, V, np.random.default_rng(1), "normal", 0.5,
                                    np.float64, spec)  # fmt: skip
        state = np.random.default_rng(2).normal(size=(2, spec.state_size, B, H))
        got = []
        for w in range(2):  # the second window starts from the first one's final state
            fwd = rnn.forward(params, xs[w], state, spec)
            loss, dlogits = rnn.softmax_xent(fwd.logits.copy(), ys[w])
            grads, dstate = rnn.backward(params, fwd, dlogits)
            got.append((loss, {k: v.copy() for k, v in grads.items()}, fwd.state, dstate))
            state = fwd.state
        out[use_scan] = got
    for (loss_s, g_s, st_s, ds_s), (loss_p, g_p, st_p, ds_p) in zip(*out.values(), strict=True):
        np.testing.assert_allclose(loss_s, loss_p, rtol=1e-10, atol=0)
        np.testing.assert_allclose(st_s, st_p, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(ds_s, ds_p, rtol=1e-10, atol=1e-10)
        for k in g_s:
            np.testing.assert_allclose(g_s[k], g_p[k], rtol=1e-10, atol=1e-10, err_msg=k)


MIN_CELLS = ("mingru", "minlstm")  # a B = 1 kernel of their own on the scan path (forward1)


def _two_windows(spec, params, xs, ys, state, reference, masks=None):
    """Two windows, the second from the first's final state: per window (loss, every gradient,
    the final state, the initial state's gradient, d loss / d h_t of every layer and step)."""
    got = []
    for w in range(2):
        fwd = rnn.forward(params, xs[w], state, spec, masks=masks, reference=reference)
        loss, dlogits = rnn.softmax_xent(fwd.logits.copy(), ys[w])
        T, B = xs[w].shape[:2]
        trace = np.zeros((spec.layers, T, B, spec.hidden_size))
        grads, dstate = rnn.backward(params, fwd, dlogits, dh_trace=trace)
        got.append((loss, {k: v.copy() for k, v in grads.items()}, fwd.state, dstate, trace))
        state = fwd.state
    return got


@pytest.mark.parametrize("cell", MIN_CELLS)
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("dense", [False, True], ids=["symbols", "dense"])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_one_stream_kernels_equal_the_numpy_step_path(cell, layers, dense, dropout):
    """At B = 1 the scan path runs the cell's own B = 1 kernels (``forward1``: W_ih's columns
    read in the kernel, no projection pass; the backward on (T, ·) rows; the compiled scatter of
    dW_ih and the compiled update's inputs): the same loss, every gradient, the carried state,
    its gradient and every step's d loss / d h_t as the numpy step path (``reference=True``) to
    1e-10 in float64, over two windows carried one into the other, symbols and dense inputs."""
    H, V, D, T = 7, 9, 3, 25
    rng = np.random.default_rng([layers, int(dense), int(10 * dropout)])
    spec = rnn.Spec(cell, layers, H, "tanh", dropout, True)
    assert rnn.TYPED[cell].forward1 is not None
    _, params = rnn.init_params(D if dense else V, H, V, rng, "normal", 0.5, np.float64, spec)
    for v in params.values():  # weights away from the init, every bias non-zero
        v += rng.normal(0.0, 0.3, v.shape)
    xs = rng.random((2, T, 1, D)) if dense else rng.integers(0, V, (2, T, 1))
    ys = rng.integers(0, V, (2, T, 1))
    state = rng.normal(size=(layers, 1, 1, H))
    masks = rnn.dropout_masks(spec, T, 1, np.float64, rng) if dropout else None
    kernels = _two_windows(spec, params, xs, ys, state, False, masks)
    numpy_step = _two_windows(spec, params, xs, ys, state, True, masks)
    for got, want in zip(kernels, numpy_step, strict=True):
        for i, what in [(0, "loss"), (2, "state"), (3, "d state0"), (4, "dh trace")]:
            np.testing.assert_allclose(got[i], want[i], rtol=1e-10, atol=1e-10, err_msg=what)
        for k in got[1]:
            np.testing.assert_allclose(got[1][k], want[1][k], rtol=1e-10, atol=1e-10, err_msg=k)


@pytest.mark.parametrize("cell", MIN_CELLS)
@pytest.mark.parametrize("dense", [False, True], ids=["symbols", "dense"])
def test_forward1_is_the_scan_forward_of_the_projections(cell, dense):
    """``forward1`` (inputs read by the kernel) gives the scan forward's Layer on the engine's
    projections W_ih x + b_ih: outputs, carried state and every saved array the backward reads,
    equal to 1e-12."""
    from rnnlab.engine.cell_api import project

    H, V, D, T = 6, 8, 3, 25
    rng = np.random.default_rng(5)
    c = rnn.TYPED[cell]
    spec = rnn.Spec(cell, 1, H)
    _, params = rnn.init_params(D if dense else V, H, V, rng, "normal", 0.5, np.float64, spec)
    lp = c.layer(params, 0)
    x = rng.random((T, 1, D)) if dense else rng.integers(0, V, (T, 1))
    state0 = rng.normal(size=(1, 1, H))
    got = c.forward1(lp, x, state0)
    want = c.forward(lp, project(lp["W_ih"], lp["b_ih"], x), state0, True)
    np.testing.assert_allclose(got.hs, want.hs, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got.state, want.state, rtol=1e-12, atol=1e-12)
    assert got.saved.keys() == want.saved.keys()
    for k in got.saved:
        assert got.saved[k].shape == want.saved[k].shape == (T, 1, H)
        np.testing.assert_allclose(got.saved[k], want.saved[k], rtol=1e-12, atol=1e-12, err_msg=k)
    with pytest.raises(IndexError, match="input symbols"):
        c.forward1(lp, np.full((T, 1), 10**6), state0)  # the kernels do not check bounds


@pytest.mark.parametrize("cell", LINEAR)
@pytest.mark.parametrize("B", [1, 4])
def test_scan_path_equals_step_path_float32(cell, B):
    """In float32 the two paths agree to float32 rounding (the scan reassociates the sums)."""
    H, V, T = 16, 9, 25
    rng = np.random.default_rng(0)
    xs, ys = rng.integers(0, V, (T, B)), rng.integers(0, V, (T, B))
    out = {}
    for use_scan in (True, False):
        spec = rnn.Spec(cell, 2, H, "tanh", 0.0, use_scan)
        _, params = rnn.init_params(V, H, V, np.random.default_rng(1), "normal", 0.5,
                                    np.float32, spec)  # fmt: skip
        state = np.random.default_rng(2).normal(size=(2, spec.state_size, B, H)).astype(np.float32)
        loss, grads, final = rnn.loss_and_grads(params, xs, ys, state, spec, "xent")
        out[use_scan] = (loss, {k: v.copy() for k, v in grads.items()}, final)
    (ls, gs, fs), (lp, gp, fp) = out[True], out[False]
    assert ls.dtype == np.float32 and fs.dtype == np.float32
    np.testing.assert_allclose(ls, lp, rtol=1e-5)
    np.testing.assert_allclose(fs, fp, rtol=1e-4, atol=1e-5)
    for k in gs:
        scale = np.abs(gp[k]).max()
        np.testing.assert_allclose(gs[k], gp[k], rtol=0, atol=1e-4 * scale, err_msg=k)


# --- the papers' equations, written independently -------------------------------------------


def sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def g_log_space(z):
    """Feng et al.'s g: z + 0.5 for z ≥ 0, σ(z) below."""
    return np.where(z >= 0, z + 0.5, sig(z))


def paper_layer_step(cell, p, k, x, state):
    """One step of layer k from the papers' equations: (output, new state (S, H)). p: the
    engine's parameters by name, read here by their meaning only."""
    s = f"_l{k}"
    if cell == "irnn":
        W, U, b = (
            p["Wxh" + ("" if k == 0 else s)],
            p["Whh" + ("" if k == 0 else s)],
            p["bh" + ("" if k == 0 else s)],
        )
        h = np.maximum(0.0, W @ x + U @ state[0] + b)
        return h, h[None]
    if cell == "indrnn":
        h = np.maximum(0.0, p["W_ih" + s] @ x + p["b_ih" + s] + p["u" + s] * state[0])
        return h, h[None]
    if cell == "mingru":
        W, b = p["W_ih" + s], p["b_ih" + s]
        H = W.shape[0] // 2
        z = sig(W[:H] @ x + b[:H])
        h_tilde = g_log_space(W[H:] @ x + b[H:])
        h = (1 - z) * state[0] + z * h_tilde
        return h, h[None]
    if cell == "minlstm":
        W, b = p["W_ih" + s], p["b_ih" + s]
        H = W.shape[0] // 3
        f = sig(W[:H] @ x + b[:H])
        i = sig(W[H : 2 * H] @ x + b[H : 2 * H])
        h_tilde = g_log_space(W[2 * H :] @ x + b[2 * H :])
        f_prime, i_prime = f / (f + i), i / (f + i)
        h = f_prime * state[0] + i_prime * h_tilde
        return h, h[None]
    # LRU (Orvieto et al., appendix): Λ = exp(−exp(ν) + i exp(θ)), B_norm = B ⊙ exp(γ_log)
    W = p["W_ih" + s]
    H = W.shape[0] // 3
    Lam = np.exp(-np.exp(p["nu_log" + s]) + 1j * np.exp(p["theta_log" + s]))
    B_norm = (W[:H] + 1j * W[H : 2 * H]) * np.exp(p["gamma_log" + s])[:, None]
    C = p["C_re" + s] + 1j * p["C_im" + s]
    x_state = Lam * (state[0] + 1j * state[1]) + B_norm @ x
    y = (C @ x_state).real + W[2 * H :] @ x
    return y, np.stack([x_state.real, x_state.imag])


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("inputs", ["symbols", "dense"])
def test_forward_matches_the_papers_equations(cell, inputs):
    """The engine's logits and final state = the papers' equations run one step, one layer and
    one stream at a time (one-hot vectors for symbols), on random weights and a random carried
    state, two layers, to 1e-10."""
    head = "xent" if inputs == "symbols" else "bce"
    spec, _, params, xs, _, state0 = make_problem(cell, 2, head, 3, T=12, H=5)
    fwd = rnn.forward(params, xs, state0, spec)
    D = params[rnn.layer_names(spec, 0)[0]].shape[1]
    for b in range(xs.shape[1]):
        state = [state0[k, :, b] for k in range(2)]
        for t in range(xs.shape[0]):
            x = np.eye(D)[xs[t, b]] if inputs == "symbols" else xs[t, b]
            for k in range(2):
                x, state[k] = paper_layer_step(cell, params, k, x, state[k])
            logits = params["Why"] @ x + params["by"]
            np.testing.assert_allclose(fwd.logits[t, b], logits, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(fwd.state[:, :, b], np.stack(state), rtol=1e-10, atol=1e-12)


# --- initialisation and constraints --------------------------------------------------------------


def test_irnn_starts_from_the_identity():
    spec = rnn.Spec("irnn", 2, 32)
    _, p = rnn.init_params(10, 32, 10, np.random.default_rng(0), "normal", 0.01, np.float64,
                           spec, 0.5)  # fmt: skip
    for k in range(2):
        W_in, W_rec, b_in, _ = rnn.layer_names(spec, k)
        assert np.array_equal(p[W_rec], 0.5 * np.eye(32)) and not p[b_in].any()
        assert p[W_in].std() == pytest.approx(0.001, rel=0.15)
    assert p["Why"].std() == pytest.approx(0.01, rel=0.1)  # task.init selects the head's


def test_indrnn_init_and_bound():
    """u in [0, γ^(1/T)] below the top layer, [γ^(-1/T), γ^(1/T)] in it; the constraint clips
    |u| back into the bound and touches nothing else."""
    u_max = indrnn.IndRNNConfig(horizon=100).u_max(25)
    assert u_max == pytest.approx(2 ** (1 / 100))
    spec = rnn.Spec("indrnn", 2, 500)
    flat, p = rnn.init_params(10, 500, 10, np.random.default_rng(0), "normal", 0.01, np.float64,
                              spec, u_max)  # fmt: skip
    assert 0 <= p["u_l0"].min() < 0.1 and u_max > p["u_l0"].max() > 0.95
    assert p["u_l1"].min() >= 1 / u_max and p["u_l1"].max() <= u_max
    clip = rnn.constraint(spec, u_max)
    assert rnn.constraint(rnn.Spec("mingru", 2, 5), None) is None
    flat[...] = np.random.default_rng(1).normal(0, 3, flat.shape)
    before = flat.copy()
    clip(p)
    for name in p:
        if name.startswith("u_"):
            assert np.abs(p[name]).max() == pytest.approx(u_max)
            assert np.array_equal(p[name], np.clip(before_view(before, p, name), -u_max, u_max))
        else:
            assert np.array_equal(p[name], before_view(before, p, name)), name


def before_view(before, params, name):
    """``name``'s entries in a copy of the flat buffer behind ``params``."""
    base = next(iter(params.values())).base
    offset = params[name].__array_interface__["data"][0] - base.__array_interface__["data"][0]
    start = offset // base.itemsize
    return before[start : start + params[name].size].reshape(params[name].shape)


def test_lru_ring_initialisation():
    """|λ|² uniform on [r_min², r_max²], arg λ in [0, max_phase], γ = √(1 − |λ|²)."""
    opts = lru.LRUConfig(r_min=0.4, r_max=0.9, max_phase=np.pi / 10)
    spec = rnn.Spec("lru", 1, 4000)
    _, p = rnn.init_params(3, 4000, 3, np.random.default_rng(0), "normal", 0.01, np.float64,
                           spec, opts)  # fmt: skip
    lam = lru.eigenvalues(rnn.TYPED["lru"].layer(p, 0))
    r2 = np.abs(lam) ** 2
    assert 0.16 <= r2.min() < 0.17 and 0.80 < r2.max() <= 0.81
    assert abs(np.mean(r2) - (0.16 + 0.81) / 2) < 0.01  # uniform in |λ|²
    assert np.angle(lam).min() >= 0 and np.angle(lam).max() <= np.pi / 10
    np.testing.assert_allclose(np.exp(p["gamma_log_l0"]), np.sqrt(1 - r2), rtol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_the_benchmarks_naive_cell_is_the_engines_math(cell):
    """bench.new_cells.naive_lossfun (the per-step baseline) computes the engine's loss,
    gradients and state, so the benchmark compares like with like."""
    from rnnlab.bench.new_cells import naive_lossfun

    spec, _, params, xs, ys, state0 = make_problem(cell, 1, "xent", 1, T=7)
    loss, grads, state = rnn.loss_and_grads(params, xs, ys, state0, spec, "xent")
    nloss, dparams, final = naive_lossfun(cell, list(xs[:, 0]), list(ys[:, 0]), state0[0, :, 0],
                                          params)  # fmt: skip
    assert nloss == pytest.approx(loss[0], rel=1e-12)
    for name, d in dparams.items():
        np.testing.assert_allclose(d, grads[name], rtol=1e-9, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(final, state[0, :, 0], rtol=1e-12)


@pytest.mark.parametrize("cell", LINEAR)
def test_the_reference_path_is_the_step_path(cell):
    """``reference=True`` (the numpy cells: what decoding and the kernels' tests run) is the
    step path, whatever ``Spec.scan`` says: the same losses and states bit for bit, the same
    gradients but for the order the input weights' sums are taken in (the numpy scatter)."""
    spec, _, params, xs, ys, state0 = make_problem(cell, 2, "xent", 3, T=9)
    step = rnn.Spec(cell, 2, spec.hidden_size, "tanh", 0.0, False)
    ref = rnn.loss_and_grads(params, xs, ys, state0, spec, "xent", reference=True)
    plain = rnn.loss_and_grads(params, xs, ys, state0, step, "xent")
    assert np.array_equal(ref[0], plain[0]) and np.array_equal(ref[2], plain[2])
    for k in params:
        np.testing.assert_allclose(ref[1][k], plain[1][k], rtol=1e-13, atol=1e-15, err_msg=k)
