"""The compiled softmax cross-entropy head of one stream (``fused.xent_head1``, what a B = 1
training window through the kernels uses) and the whole-window kernel of one vanilla tanh layer
(``fused.rnn_window1``, min-char-rnn's network: one layer, no dropout) compute what the numpy head,
the numpy cells and ``rnn.backward`` compute: the loss, every gradient and the carried state of a
whole window, for each kernel cell, one and two layers, both dtypes, with and without dropout; also
where logits are large enough that the softmax shifts them; its exp stays within its stated error;
a symbol out of range is an error, not a read past the weights or the logits."""

import numba
import numpy as np
import pytest

from rnnlab.engine import fused, rnn

T, H, V = 25, 8, 11
# as test_compiled_cells_equal_numpy: float64 ~1e-15 (the sums run in another order), float32 the
# kernels' rational tanh; relative to each array's largest entry
TOLERANCE = {np.float64: 1e-12, np.float32: 2e-5}


def _close(got, want, dtype, what):
    scale = max(float(np.abs(want).max()), 1e-30)
    err = float(np.abs(np.asarray(got, np.float64) - want).max()) / scale
    assert err <= TOLERANCE[dtype], f"{what}: relative error {err:.2e}"


def _window(cell, layers, dtype, dropout, scale=0.5, seed=0):
    rng = np.random.default_rng(seed)
    spec = rnn.Spec(cell, layers, H, "tanh", dropout=dropout)
    _, params = rnn.init_params(V, H, V, rng, "normal", scale, dtype, spec)
    xs, ys = rng.integers(0, V, (T, 1)), rng.integers(0, V, (T, 1))
    state0 = (0.5 * rng.normal(size=(layers, spec.state_size, 1, H))).astype(dtype)
    return spec, params, xs, ys, state0


def _loss_and_grads(spec, params, xs, ys, state0, reference, dropout_seed=7):
    rng = np.random.default_rng(dropout_seed)  # the same masks on both paths
    loss, grads, state = rnn.loss_and_grads(
        params, xs, ys, state0, spec, "xent", dropout_rng=rng, reference=reference
    )
    return loss, {k: v.copy() for k, v in grads.items()}, state.copy()


@pytest.mark.parametrize("cell", rnn.CELL_NAMES)
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_a_window_through_the_compiled_head_equals_the_numpy_one(cell, layers, dtype, dropout):
    assert fused.compiled_head(cell, 1)  # the engine's default path at B = 1 for every cell
    window = _window(cell, layers, dtype, dropout)
    ref = _loss_and_grads(*window, reference=True)
    got = _loss_and_grads(*window, reference=False)
    assert got[0].shape == (1,) and got[0].dtype == dtype
    _close(got[0], ref[0], dtype, "loss")
    _close(got[2], ref[2], dtype, "carried state")
    assert set(got[1]) == set(ref[1])
    for name in ref[1]:
        _close(got[1][name], ref[1][name], dtype, f"d {name}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_head_equals_the_numpy_head_where_it_shifts_the_logits(dtype):
    """Logits beyond ½ log(dtype max / V): both heads shift each row by its max."""
    rng = np.random.default_rng(1)
    top = np.tanh(rng.normal(size=(T, 1, H))).astype(dtype)
    Why = (rng.normal(size=(V, H)) * {np.float64: 400.0, np.float32: 40.0}[dtype]).astype(dtype)
    by = rng.normal(size=V).astype(dtype)
    ys = rng.integers(0, V, (T, 1))
    limit = rnn._unshifted_limit(np.dtype(dtype), V)
    logits = (top[:, 0] @ Why.T + by)[:, None]
    assert np.abs(logits).max() > limit  # the shifted branch
    want_loss, want_dl = rnn.softmax_xent(logits.copy(), ys)
    dWhy, dby = np.empty_like(Why), np.empty_like(by)
    loss, dh = fused.xent_head1(Why, by, top, ys, dWhy, dby, limit)
    _close(loss, want_loss, dtype, "loss")
    _close(dWhy, want_dl[:, 0].T @ top[:, 0], dtype, "dWhy")
    _close(dby, want_dl[:, 0].sum(axis=0), dtype, "dby")
    _close(dh[:, 0], want_dl[:, 0] @ Why, dtype, "dh")


@pytest.mark.parametrize("cell", ["rnn", "gru"])  # the whole-window kernel, the head alone
@pytest.mark.parametrize("wrong", ["xs", "ys"])
def test_a_symbol_out_of_range_is_an_error(cell, wrong):
    spec, params, xs, ys, state0 = _window(cell, 1, np.float64, 0.0)
    (xs if wrong == "xs" else ys)[3, 0] = V
    with pytest.raises(IndexError, match="must be in"):
        rnn.loss_and_grads(params, xs, ys, state0, spec, "xent")


def test_exp_error_bound():
    """exp64 within 2 ulp of numpy's exp over [-708, 709] (a dense grid and typical softmax
    arguments), 0 below it, finite above."""
    exp64 = fused.kernels().exp64

    @numba.njit
    def apply(x, out):
        for i in range(x.shape[0]):
            out[i] = exp64(x[i])

    rng = np.random.default_rng(0)
    x = np.concatenate([np.linspace(-708.0, 709.0, 1_000_001), 5.0 * rng.normal(size=100_000)])
    got = np.empty_like(x)
    apply(x, got)
    want = np.exp(x)
    ulps = np.abs(got - want) / (want * np.finfo(np.float64).eps)
    assert ulps.max() <= 2.0, f"{ulps.max():.2f} ulp at x = {x[ulps.argmax()]}"
    below, above = np.array([-708.5, -745.0, -1e6]), np.array([709.5, 1e6])
    out_below, out_above = np.empty(3), np.empty(2)
    apply(below, out_below)
    apply(above, out_above)
    assert (out_below == 0.0).all() and np.isfinite(out_above).all()
