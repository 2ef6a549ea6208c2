"""The compiled cells (rnnlab.engine.fused) compute what the numpy cells compute: every output,
gradient, carried state and trace, for every cell, one stream and several, one and two layers, both
dtypes, with and without dropout; their tanh stays within its stated error; they are the engine's
default path wherever ``fused.compiled`` says, and a process that runs no window through them never
imports numba."""

import subprocess
import sys

import numpy as np
import pytest

from rnnlab.engine import cells, fused, rnn

T, B, H, V = 6, 4, 8, 11
# float64: the kernels' tanh is within 3 ulp of numpy's, so a window agrees to ~1e-15; float32:
# the rational tanh (|error| ≤ 3e-7) and float32 sums, ≤ 9e-7 measured, relative to each array's
# largest entry
TOLERANCE = {np.float64: 1e-12, np.float32: 2e-5}


def _close(got, want, dtype, what):
    scale = max(float(np.abs(want).max()), 1e-30)
    err = float(np.abs(np.asarray(got, np.float64) - want).max()) / scale
    assert err <= TOLERANCE[dtype], f"{what}: relative error {err:.2e}"


def _window(cell, layers, dtype, dropout, dense, seed=0, B=B, activation="tanh"):
    rng = np.random.default_rng(seed)
    spec = rnn.Spec(cell, layers, H, activation, dropout=dropout)
    D = 3 if dense else V
    _, params = rnn.init_params(D, H, V, rng, "normal", 0.5, dtype, spec)
    if dense:  # the adder's kind of input: floats, one GEMM, no column lookup
        xs = rng.integers(0, 2, (T, B, D)).astype(dtype)
        ys = rng.integers(0, 2, (T, B, V)).astype(dtype)
    else:
        xs, ys = rng.integers(0, V, (T, B)), rng.integers(0, V, (T, B))
    state0 = (0.5 * rng.normal(size=(layers, spec.state_size, B, H))).astype(dtype)
    masks = rnn.dropout_masks(spec, T, B, dtype, rng) if dropout else None
    return spec, params, xs, ys, state0, masks


def _run(spec, params, xs, ys, state0, masks, head, reference):
    fwd = rnn.forward(params, xs, state0, spec, masks=masks, reference=reference)
    logits = fwd.logits.copy()
    loss, dlogits = rnn.HEADS[head](fwd.logits, ys)
    dt = logits.dtype
    T, B = xs.shape[:2]
    dh_trace = np.zeros((spec.layers, T, B, H), dt)
    dc_trace = np.zeros((spec.layers, T, B, H), dt) if spec.cell == "lstm" else None
    grads, dstate = rnn.backward(params, fwd, dlogits, dh_trace=dh_trace, dc_trace=dc_trace)
    return fwd, logits, loss, grads, dstate, dh_trace, dc_trace


def _compare(ref, got, cell, layers, dtype):
    for what, a, b in [
        ("logits", got[1], ref[1]),
        ("loss", got[2], ref[2]),
        ("state", got[0].state, ref[0].state),
        ("d state0", got[4], ref[4]),
        ("dh_trace", got[5], ref[5]),
    ] + ([("dc_trace", got[6], ref[6])] if cell == "lstm" else []):
        _close(a, b, dtype, what)
    for name in ref[3]:
        _close(got[3][name], ref[3][name], dtype, name)
    for k in range(layers):  # what the diagnostics read: every layer's h, PyTorch's gates
        _close(got[0].layers[k].hs, ref[0].layers[k].hs, dtype, f"h of layer {k}")
        for j in range(rnn.GATES[cell] if cell != "rnn" else 0):
            want = cells.gate_block(ref[0].layers[k], j, H)
            _close(cells.gate_block(got[0].layers[k], j, H), want, dtype, f"gate {j}")


KEPT_BY_NUMPY = {"gru": "hh", "lstm": "tc"}  # what only the numpy gated cells keep


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("batch", [1, B])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_fused_equals_the_numpy_cells(cell, batch, layers, dtype, dropout):
    window = _window(cell, layers, dtype, dropout, dense=False, B=batch)
    ref = _run(*window, "xent", reference=True)
    got = _run(*window, "xent", reference=False)
    if cell in KEPT_BY_NUMPY:  # the gated layers ran the kernels
        assert KEPT_BY_NUMPY[cell] not in got[0].layers[0].saved
    _compare(ref, got, cell, layers, dtype)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("batch", [1, B])
def test_fused_equals_the_numpy_cells_on_dense_inputs(cell, batch):
    """The adder's float inputs (one GEMM for the projection), its bce head and, for the
    vanilla cell, its sigmoid."""
    activation = "sigmoid" if cell == "rnn" else "tanh"
    window = _window(cell, 2, np.float64, 0.0, dense=True, B=batch, activation=activation)
    ref, got = _run(*window, "bce", reference=True), _run(*window, "bce", reference=False)
    _compare(ref, got, cell, 2, np.float64)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_a_carried_state_stays_equal_over_many_windows(cell):
    """One stream carried through 40 windows (the training loop's truncated BPTT): the kernels'
    state stays within float rounding of the numpy cells' (the recurrence does not amplify the
    last bits over a thousand steps at these weights)."""
    spec, params, *_ = _window(cell, 1, np.float64, 0.0, dense=False, B=1)
    rng = np.random.default_rng(5)
    states = {ref: rnn.zero_state(spec, 1, np.float64) for ref in (True, False)}
    for _ in range(40):
        xs = rng.integers(0, V, (25, 1))
        for ref in states:
            states[ref] = rnn.forward(params, xs, states[ref], spec, reference=ref).state
    _close(states[False], states[True], np.float64, "state after 1,000 steps")


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("batch", [1, B])
def test_kernels_are_deterministic_and_leave_the_inputs_alone(cell, batch):
    """Bit for bit the same on a second run (what resume relies on); non-contiguous traces are
    written through a copy."""
    spec, params, xs, ys, state0, masks = _window(cell, 2, np.float32, 0.3, False, B=batch)
    before = {k: v.copy() for k, v in params.items()}
    runs = []
    for _ in range(2):
        fwd = rnn.forward(params, xs, state0, spec, masks=masks)
        _, dlogits = rnn.softmax_xent(fwd.logits, ys)
        trace = np.zeros((H, batch, T, 2), np.float32).T  # (2, T, B, H), not C-contiguous
        grads, dstate = rnn.backward(params, fwd, dlogits, dh_trace=trace)
        runs.append(
            (fwd.state.copy(), dstate, trace.copy(), {k: v.copy() for k, v in grads.items()})
        )
    (s1, d1, t1, g1), (s2, d2, t2, g2) = runs
    assert np.array_equal(s1, s2) and np.array_equal(d1, d2) and np.array_equal(t1, t2)
    assert all(np.array_equal(g1[k], g2[k]) for k in g1)
    assert np.abs(t1).max() > 0  # the trace was written back
    assert all(np.array_equal(before[k], params[k]) for k in params)


def test_tanh_error_bound():
    """float32: |fast_tanh - tanh| ≤ 3.1e-7 over a dense grid of [-20, 20] (Eigen's rational
    approximation; numpy's float32 tanh is within 6e-8); float64: within 4 ulp of numpy's
    tanh, including tiny and saturated arguments."""
    k = fused.kernels()
    grid = np.linspace(-20.0, 20.0, 4_000_001)
    x32 = grid.astype(np.float32)
    out32 = np.empty_like(x32)
    k.tanh_array(x32, out32)
    err32 = np.abs(out32 - np.tanh(x32.astype(np.float64)))
    assert err32.max() <= 3.1e-7
    assert err32.max() > 1e-8  # it is the approximation, not numpy's tanh
    tiny = np.geomspace(1e-300, 1e-2, 20_001)
    x64 = np.concatenate([grid, tiny, -tiny, [0.0, 19.0, 25.0, 700.0, -700.0]])
    out64 = np.empty_like(x64)
    k.tanh_array(x64, out64)
    want = np.tanh(x64)
    ulps = np.abs(out64 - want) / np.spacing(np.abs(want))
    assert ulps.max() <= 4.0


def test_numba_only_when_a_window_runs_through_a_kernel():
    """Importing the engine, running the vanilla cell at B > 1 (the numpy cell) and decoding
    (``rnn.step``: sampling, the served model) never import numba; the first window through a
    kernel does (here: the vanilla cell at B = 1), and the
    kernels' BLAS (SciPy's) inherits the caller's one-thread pin although it was loaded after
    the pin."""
    code = """
import sys
import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits
from rnnlab.engine import rnn
rng = np.random.default_rng(0)
def window(cell, B):
    spec = rnn.Spec(cell, 1, 8)
    _, p = rnn.init_params(5, 8, 5, rng, "normal", 0.1, np.float32, spec)
    xs = rng.integers(0, 5, (4, B))
    rnn.loss_and_grads(p, xs, xs, rnn.zero_state(spec, B, np.float32), spec, "xent")
with threadpool_limits(limits=1, user_api="blas"):
    window("rnn", 32)
    for cell in ("rnn", "gru", "lstm"):  # decoding, one step at a time: the numpy cells
        spec = rnn.Spec(cell, 2, 8)
        _, p = rnn.init_params(5, 8, 5, rng, "normal", 0.1, np.float32, spec)
        rnn.step(p, spec, rnn.zero_state(spec, 1, np.float32), np.array([3]))
    assert "numba" not in sys.modules, "numba imported without a window through a kernel"
    window("rnn", 1)
    assert "numba" in sys.modules
    threads = {lib["filepath"]: lib["num_threads"] for lib in threadpool_info()}
    assert len(threads) >= 2 and set(threads.values()) == {1}, threads
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_the_kernels_are_the_default_path_where_compiled_says(cell):
    """B = 1 runs the kernels for every cell, B > 1 for the gated cells; the vanilla cell at
    B > 1 is the numpy cell; ``reference=True`` is the numpy cells everywhere."""
    assert fused.compiled(cell, 1) and fused.compiled(cell, B) == (cell != "rnn")
    assert not fused.compiled("a cell without kernels", 1)
    assert rnn.CELLS[cell] != rnn.REFERENCE_CELLS[cell]
    if cell == "rnn":
        assert rnn.REFERENCE_CELLS[cell] == (cells.rnn_forward, cells.rnn_backward)
        return
    spec, params, xs, ys, state0, _ = _window(cell, 1, np.float64, 0.0, dense=False)
    for batch in (1, B):
        got = rnn.forward(params, xs[:, :batch], state0[:, :, :batch], spec)
        ref = rnn.forward(params, xs[:, :batch], state0[:, :, :batch], spec, reference=True)
        assert KEPT_BY_NUMPY[cell] not in got.layers[0].saved
        assert KEPT_BY_NUMPY[cell] in ref.layers[0].saved


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_clip_and_adagrad_in_one_pass_give_the_numpy_bits(dtype):
    """fused.clip_and_update = optim.clip_elementwise + Adagrad.step, bit for bit: entries far
    beyond the clip, a NaN (kept, as np.clip keeps it), a learning rate changed between steps
    (a schedule), the optimizer's memory and step count."""
    from rnnlab.engine.optim import Adagrad, clip_elementwise

    rng = np.random.default_rng(3)
    n = 5003  # not a multiple of any vector width
    params0 = rng.normal(size=n).astype(dtype)
    grad0 = (4.0 * rng.normal(size=n)).astype(dtype)
    grad0[::97], grad0[1::89], grad0[5] = 50.0, -7.5, np.nan
    numpy_opt, fused_opt = Adagrad(n, dtype, 0.1), Adagrad(n, dtype, 0.1)
    update = fused.clip_and_update(fused_opt, 5.0, None)
    p_numpy, p_fused = params0.copy(), params0.copy()
    for step, lr in enumerate([0.1, 0.05, 0.0123]):
        numpy_opt.learning_rate = fused_opt.learning_rate = lr
        g_numpy, g_fused = grad0 * (step + 1), grad0 * (step + 1)
        clip_elementwise(g_numpy, 5.0)
        numpy_opt.step(p_numpy, g_numpy)
        update(p_fused, g_fused)
        mems = fused_opt.memories["mem"], numpy_opt.memories["mem"]
        pairs = [(p_fused, p_numpy, "params"), (g_fused, g_numpy, "grad"), (*mems, "mem")]
        for got, want, what in pairs:
            assert np.array_equal(got, want, equal_nan=True), f"{what} at step {step}"
        assert np.isnan(p_fused[5]) and np.abs(g_fused[np.isfinite(g_fused)]).max() == 5.0
    assert fused_opt.steps == numpy_opt.steps == 3


def test_the_compiled_update_wherever_the_step_is_clip_and_adagrad():
    """Elementwise clip + Adagrad without weight decay: the compiled pass, whatever the cell and
    batch size (it reads the flat buffers only); another optimizer, weight decay, no clip or a
    norm clip: the numpy update (None)."""
    from rnnlab.engine.optim import SGD, Adagrad, Adam

    adagrad = Adagrad(10, np.float32, 0.1)
    assert fused.clip_and_update(adagrad, 5.0, None) is not None
    decayed = Adagrad(10, np.float32, 0.1)
    decayed.weight_decay = 0.01
    for opt, clip, clip_norm in [
        (SGD(10, np.float32, 0.1), 5.0, None),
        (Adam(10, np.float32, 0.1), 5.0, None),
        (decayed, 5.0, None),
        (adagrad, None, None),
        (adagrad, 5.0, 1.0),
    ]:
        assert fused.clip_and_update(opt, clip, clip_norm) is None


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_the_evaluation_through_the_kernels_gives_the_numpy_cells_numbers(cell):
    """val/loss and val/loss_warm (the char-RNN's evaluation: a held-out text of several chunks
    read as one stream, from zero and after a burn-in from a carried state) equal what the numpy
    cells give, chunk by chunk through the same head, to float rounding."""
    from rnnlab.tasks import charrnn

    rng = np.random.default_rng(11)
    spec = rnn.Spec(cell, 2, H)
    _, params = rnn.init_params(V, H, V, rng, "normal", 0.5, np.float64, spec)
    ids = rng.integers(0, V, 2 * charrnn.CHUNK + 37)  # three chunks, the last one short
    burn_in = rng.integers(0, V, 300)
    warm_start = 0.5 * rng.normal(size=(2, spec.state_size, 1, H))
    got = charrnn.char_metrics(params, spec, ids, burn_in, "val", warm_start)

    def numpy_stream(h):  # stream_loss through the numpy cells
        total = 0.0
        for start in range(0, len(ids) - 1, charrnn.CHUNK):
            xs = ids[start : start + charrnn.CHUNK][:, None]
            ys = ids[start + 1 : start + charrnn.CHUNK + 1][:, None]
            fwd = rnn.forward(params, xs[: len(ys)], h, spec, reference=True)
            total += float(rnn.softmax_xent(fwd.logits, ys)[0][0])
            h = fwd.state
        return total / (len(ids) - 1)

    warm = rnn.forward(params, burn_in[:, None], warm_start, spec, reference=True).state
    want = {"val/loss": numpy_stream(rnn.zero_state(spec, 1, np.float64)),
            "val/loss_warm": numpy_stream(warm)}  # fmt: skip
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=1e-12, abs=0), name
    assert got["val/loss"] != got["val/loss_warm"]  # two different passes
