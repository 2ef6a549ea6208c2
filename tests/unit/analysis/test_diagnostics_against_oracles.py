"""rnnlab.analysis.diagnostics against independent oracles: finite differences, numpy.linalg,
counts."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from helpers.processes import run_cli
from mlflow.tracking import MlflowClient

from rnnlab.analysis import diagnostics as D
from rnnlab.config import Config, ConfigError, DataConfig, TrackingConfig, check
from rnnlab.engine import rnn
from rnnlab.engine.optim import Adagrad, clip_elementwise
from rnnlab.report import diagnostics as report_diag
from rnnlab.training.loop import train
from rnnlab.training.tracker import MemoryTracker


def small_case(activation: str, head: str, seed: int = 0):
    """T = 7 steps, H = 5, symbols (V = 6) for xent, two dense bits for mse/bce."""
    rng = np.random.default_rng(seed)
    T, H = 7, 5
    if head == "xent":
        V = 6
        _, params = rnn.init_params(V, H, V, rng, "normal", 0.8)
        xs = rng.integers(0, V, (T, 1))
        ys = rng.integers(0, V, (T, 1))
    else:
        _, params = rnn.init_params(2, H, 1, rng, "uniform", 1.0)
        xs = rng.integers(0, 2, (T, 1, 2)).astype(np.float64)
        ys = rng.integers(0, 2, (T, 1, 1)).astype(np.float64)
    params["bh"][...] = rng.standard_normal(H) * 0.3
    h0 = rng.standard_normal((1, H)) * 0.5
    return params, xs, ys, h0


def sub_network(params, net: rnn.Spec, lo: int, hi: int):
    """Layers lo..hi-1 of ``net`` as a network of their own (reading layer lo's input), with the
    head: (Spec, params)."""
    sub = rnn.Spec(net.cell, hi - lo, net.hidden_size, net.activation)
    out = {"Why": params["Why"], "by": params["by"]}
    for j in range(lo, hi):
        for a, b in zip(rnn.layer_names(net, j), rnn.layer_names(sub, j - lo), strict=True):
            if a is not None:
                out[b] = params[a]
    return sub, out


def perturbed_last_loss(params, net, head, xs, ys, state0, k, t, delta):
    """L_T with layer k's h after 0-based step t (t = -1: its initial h) moved by delta (H,),
    every later computation redone — layer k's own future and every layer above it — from
    layer-sized pieces of the engine's forward pass: an oracle that never runs a backward."""
    T = xs.shape[0]
    fwd = rnn.forward(params, xs, state0, net)
    X = xs if k == 0 else fwd.layers[k - 1].hs[1:]  # what layer k reads, (T, 1, ·)
    netk, pk = sub_network(params, net, k, k + 1)
    if t < 0:
        st = state0[k : k + 1].copy()
    else:
        st = rnn.forward(pk, X[: t + 1], state0[k : k + 1], netk).state.copy()
    st[0, 0] += delta  # h moved, the LSTM's c held
    Y = fwd.layers[k].hs[1:].copy()  # layer k's outputs (T, 1, H)
    if t >= 0:
        Y[t] = st[0, 0]
    if t + 1 < T:
        Y[t + 1 :] = rnn.forward(pk, X[t + 1 :], st, netk).layers[0].hs[1:]
    if k + 1 < net.layers:
        netu, pu = sub_network(params, net, k + 1, net.layers)
        logits = rnn.forward(pu, Y, state0[k + 1 :], netu).logits
    else:
        logits = Y @ params["Why"].T + params["by"]
    loss, _ = rnn.HEADS[head](logits[-1:].copy(), ys[-1:])
    return float(loss[0])


def fd_grad_flow(params, net, head, xs, ys, state0, eps=1e-5):
    """‖∂L_T/∂h^k_{T-d}‖ by central differences, (L, T) as grad_flow's."""
    T, H = xs.shape[0], net.hidden_size
    out = np.zeros((net.layers, T))
    for k in range(net.layers):
        for d in range(1, T + 1):
            t = T - 1 - d  # the 0-based step whose output is h_{T-d}; -1: the initial state
            g = np.zeros(H)
            for j in range(H):
                e = np.zeros(H)
                e[j] = eps
                up = perturbed_last_loss(params, net, head, xs, ys, state0, k, t, e)
                down = perturbed_last_loss(params, net, head, xs, ys, state0, k, t, -e)
                g[j] = (up - down) / (2 * eps)
            out[k, d - 1] = np.linalg.norm(g)
    return out


def gated_case(cell: str, layers: int, head: str = "xent", seed: int = 0):
    """T = 6 steps, H = 5, V = 6 symbols, PyTorch's init scaled up (so gradients are not tiny),
    a non-zero initial state (L, S, 1, H)."""
    rng = np.random.default_rng(seed)
    net = rnn.Spec(cell, layers, 5, "tanh")
    V, T = 6, 6
    _, params = rnn.init_params(V, 5, V, rng, "normal", 0.8, spec=net)
    for name in params:
        if name not in ("Why", "by"):
            params[name] *= 2.5
    xs = rng.integers(0, V, (T, 1))
    ys = rng.integers(0, V, (T, 1))
    state0 = rng.standard_normal((layers, net.state_size, 1, 5)) * 0.5
    return net, params, xs, ys, state0


@pytest.mark.parametrize(
    "activation,head", [("tanh", "xent"), ("sigmoid", "xent"), ("sigmoid", "bce"), ("tanh", "mse")]
)
def test_grad_flow_equals_finite_differences(activation, head):
    params, xs, ys, h0 = small_case(activation, head)
    net = rnn.Spec("rnn", 1, 5, activation)
    curve = D.grad_flow(params, D.EngineSpec(activation, head), xs, ys, h0)
    fd = fd_grad_flow(params, net, head, xs, ys, h0.reshape(1, 1, 1, -1))
    worst = float(np.max(np.abs(curve - fd) / fd))
    print(f"{activation}/{head}: worst relative error {worst:.2e}")
    assert worst < 1e-6


@pytest.mark.parametrize(
    "cell,layers", [("gru", 1), ("lstm", 1), ("rnn", 2), ("gru", 2), ("lstm", 2)]
)
def test_grad_flow_of_every_cell_and_layer_equals_finite_differences(cell, layers):
    net, params, xs, ys, state0 = gated_case(cell, layers)
    curves = D.grad_flow(params, D.EngineSpec("tanh", "xent", cell, layers), xs, ys, state0)
    fd = fd_grad_flow(params, net, "xent", xs, ys, state0)
    assert curves.shape == (layers, xs.shape[0]) and np.all(fd > 1e-8)
    worst = float(np.max(np.abs(curves - fd) / fd))
    print(f"{cell} × {layers}: worst relative error {worst:.2e}")
    assert worst < 1e-6


def lstm_last_loss_c_moved(params, net, xs, ys, state0, k, t, delta) -> float:
    """L_T of an LSTM from PyTorch's equations in plain numpy, with layer k's cell state after
    0-based step t moved by delta before h_t is computed from it (t = -1: the initial c): the
    oracle for ∂L_T/∂c_t, the gradient reaching c_t through h_t and c_{t+1}."""
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    H = net.hidden_size
    x = np.eye(params["W_ih_l0"].shape[1])[xs[:, 0]]  # (T, V) one-hot
    for j in range(net.layers):
        W_ih, W_hh, b_ih, b_hh = (params[n] for n in rnn.layer_names(net, j))
        h, c = state0[j, 0, 0].copy(), state0[j, 1, 0].copy()
        if j == k and t < 0:
            c = c + delta
        out = []
        for s in range(len(x)):
            a = W_ih @ x[s] + b_ih + W_hh @ h + b_hh  # gates i f g o
            i, f, g, o = sig(a[:H]), sig(a[H : 2 * H]), np.tanh(a[2 * H : 3 * H]), sig(a[3 * H :])
            c = f * c + i * g
            if j == k and s == t:
                c = c + delta
            h = o * np.tanh(c)
            out.append(h)
        x = np.stack(out)
    logits = (x[-1] @ params["Why"].T + params["by"])[None, None]  # (1, 1, V)
    loss, _ = rnn.HEADS["xent"](logits, ys[-1:])
    return float(loss[0])


@pytest.mark.parametrize("layers", [1, 2])
def test_lstm_cell_state_flow_equals_finite_differences(layers):
    """The LSTM's second curve, ‖∂L_T/∂c_{T-d}‖, equals central differences of an independent
    plain-numpy LSTM (1e-6 relative), and its h curve is grad_flow's."""
    net, params, xs, ys, state0 = gated_case("lstm", layers)
    spec = D.EngineSpec("tanh", "xent", "lstm", layers)
    flows = D.grad_flows(params, spec, xs, ys, state0)
    np.testing.assert_array_equal(flows["h"], D.grad_flow(params, spec, xs, ys, state0))
    T, H, eps = xs.shape[0], net.hidden_size, 1e-5
    fd = np.zeros((layers, T))
    for k in range(layers):
        for d in range(1, T + 1):
            g = np.zeros(H)
            for j in range(H):
                e = np.zeros(H)
                e[j] = eps
                up = lstm_last_loss_c_moved(params, net, xs, ys, state0, k, T - 1 - d, e)
                down = lstm_last_loss_c_moved(params, net, xs, ys, state0, k, T - 1 - d, -e)
                g[j] = (up - down) / (2 * eps)
            fd[k, d - 1] = np.linalg.norm(g)
    assert np.all(fd > 1e-8)
    worst = float(np.max(np.abs(flows["c"] - fd) / fd))
    print(f"lstm × {layers}, c: worst relative error {worst:.2e}")
    assert worst < 1e-6
    _, gru, gxs, gys, gstate0 = gated_case("gru", 1)  # no cell state, no second curve
    assert list(D.grad_flows(gru, D.EngineSpec("tanh", "xent", "gru"), gxs, gys, gstate0)) == ["h"]


def test_dh_trace_leaves_the_gradients_unchanged():
    """The engine's optional per-step trace changes nothing else, bit for bit, for every cell."""
    for cell in ("rnn", "gru", "lstm"):
        net, params, xs, ys, state0 = gated_case(cell, 2)
        runs = []
        for trace in (None, np.empty((2, xs.shape[0], 1, 5))):
            fwd = rnn.forward(params, xs, state0, net)
            _, dlogits = rnn.HEADS["xent"](fwd.logits.copy(), ys)
            grads, dstate = rnn.backward(params, fwd, dlogits, dh_trace=trace)
            runs.append((grads, dstate))
        for name in params:
            np.testing.assert_array_equal(runs[0][0][name], runs[1][0][name])
        np.testing.assert_array_equal(runs[0][1], runs[1][1])


def test_grad_decay_is_the_fitted_log_rate():
    d = np.arange(1, 51)
    assert D.grad_decay(3.0 * np.exp(-0.2 * d)) == pytest.approx(-0.2, rel=1e-12)
    assert D.grad_decay(np.exp(0.05 * d)) == pytest.approx(0.05, rel=1e-12)
    assert np.isnan(D.grad_decay(np.zeros(5)))


def test_spectrum_equals_numpy_linalg():
    rng = np.random.default_rng(3)
    m = rng.standard_normal((40, 40)) * 0.3
    sigma, rho = D.spectrum(m)
    assert sigma == pytest.approx(np.linalg.svd(m, compute_uv=False).max(), rel=1e-12)
    assert sigma == pytest.approx(np.linalg.norm(m, 2), rel=1e-12)
    assert rho == pytest.approx(np.abs(np.linalg.eigvals(m)).max(), rel=1e-12)
    # a rotation: every singular value and |eigenvalue| is 1, though the eigenvalues are complex
    c, s = np.cos(0.3), np.sin(0.3)
    assert D.spectrum(np.array([[c, -s], [s, c]])) == pytest.approx((1.0, 1.0), rel=1e-12)


def test_saturation_share_equals_direct_count():
    rng = np.random.default_rng(4)
    a = np.tanh(rng.standard_normal((50, 3, 8)) * 3)  # (T, B, H)
    g = 1 / (1 + np.exp(-rng.standard_normal((50, 3, 8)) * 6))
    count = D.SaturationCount()
    count.add({"h": (a[:20], "tanh"), "gate": (g[:20], "sigmoid")})
    count.add({"h": (a[20:], "tanh"), "gate": (g[20:], "sigmoid")})
    n_h = sum(1 for v in a.ravel() if abs(v) > 0.99)
    n_g = sum(1 for v in g.ravel() if v < 0.01 or v > 0.99)
    assert 0 < n_h < a.size and 0 < n_g < g.size
    assert count.share("h") == n_h / a.size
    assert count.share("gate") == n_g / g.size


def test_saturation_pass_counts_the_validation_states():
    """heavy_metrics' saturation = a direct count over the states of the same forward pass."""
    rng = np.random.default_rng(5)
    _, params = rnn.init_params(6, 8, 6, rng, "normal", 2.0)
    val = rng.integers(0, 6, (300, 1))
    probe = D.Probe(window_xs=val[:10], window_ys=val[1:11], val_xs=val, burn_xs=val[:50])
    metrics, _ = D.heavy_metrics(params, D.EngineSpec("tanh", "xent"), probe)
    spec = rnn.Spec(hidden_size=8)
    zero = rnn.zero_state(spec, 1, np.float64)
    hs = rnn.forward(params, val, zero, spec).hs[1:]
    assert metrics["diag/saturation"] == np.mean(np.abs(hs) > 0.99)
    h_warm = rnn.forward(params, val[:50], zero, spec).state
    hs_warm = rnn.forward(params, val, h_warm, spec).hs[1:]
    assert metrics["diag/saturation_warm"] == np.mean(np.abs(hs_warm) > 0.99)
    assert 0 < metrics["diag/saturation"] < 1
    sigma, rho = D.spectrum(params["Whh"])
    assert metrics["diag/whh_sigma_max"] == sigma and metrics["diag/whh_rho"] == rho


def test_step_metrics_clip_share_and_update_ratio():
    rng = np.random.default_rng(6)
    shapes = rnn.param_shapes(6, 8, 6)
    flat, params = rnn.packed_zeros(shapes, np.float64)
    flat[...] = rng.standard_normal(flat.size)
    grad_flat, grads = rnn.packed_zeros(shapes, np.float64)
    grad_flat[...] = rng.standard_normal(grad_flat.size) * 4
    raw = grad_flat.copy()
    clip_elementwise(grad_flat, 5.0)
    opt = Adagrad(flat.size, np.float64, 0.1)
    opt.step(flat.copy(), grad_flat.copy())  # some history in the memory
    before = copy.deepcopy(opt.state())
    m = D.step_metrics(params, grads, opt, flat, grad_flat, 5.0, None, 0.0)
    assert m["diag/clip_frac"] == np.count_nonzero(np.abs(raw) > 5.0) / raw.size
    assert 0 < m["diag/clip_frac"] < 1
    off = 0
    for name, p in params.items():
        n = p.size
        assert m[f"diag/clip_frac/{name}"] == np.mean(np.abs(raw[off : off + n]) > 5.0)
        # Adagrad's step by hand: lr g / sqrt(mem + g² + eps)
        g = grad_flat[off : off + n]
        step = 0.1 * g / np.sqrt(before["mem"][off : off + n] + g * g + 1e-8)
        ratio = np.linalg.norm(step) / np.linalg.norm(p)
        assert m[f"diag/update_ratio/{name}"] == pytest.approx(ratio, rel=1e-12)
        assert m[f"diag/grad_norm/{name}"] == pytest.approx(np.linalg.norm(g), rel=1e-12)
        off += n
    np.testing.assert_array_equal(opt.state()["mem"], before["mem"])  # the real one untouched
    # global-norm clipping rescales every entry: all of them count as clipped
    m = D.step_metrics(params, grads, opt, flat, grad_flat, None, 1.0, 10.0)
    assert m["diag/clip_frac"] == 1.0
    m = D.step_metrics(params, grads, opt, flat, grad_flat, None, 1.0, 0.5)
    assert m["diag/clip_frac"] == 0.0


# --- the report's Flags ---------------------------------------------------------------------------


def test_flag_rules_at_the_last_evaluation():
    healthy = {
        "diag/grad_decay": [(100, 0.3), (200, -0.2)],  # exploded early, not at the end
        "diag/saturation": [(200, 0.2)],
        "diag/saturation_warm": [(200, 0.25)],
        "val/loss": [(200, 2.0)],
        "val/loss_warm": [(200, 1.95)],
        "diag/update_ratio/Whh": [(200, 1e-3)],
        "diag/update_ratio/bh": [(200, 5.0)],  # biases are not judged
    }
    assert report_diag.flags_of(healthy) == []
    sick = healthy | {
        "diag/grad_decay": [(200, 0.01)],
        "diag/saturation": [(200, 0.9)],
        "val/loss_warm": [(200, 1.5)],
        "diag/update_ratio/Wxh": [(200, 3e-5)],
        "diag/update_ratio/Why": [(200, 0.5)],
    }
    kinds = [k for k, _ in report_diag.flags_of(sick)]
    assert kinds == ["exploding gradients", "saturating units", "zero vs warm", "zero vs warm",
                     "update ratio", "update ratio"]  # fmt: skip


def test_flag_rules_judge_every_layer():
    """A deeper layer that saturates or explodes is flagged, named by its layer."""
    healthy = {
        "diag/grad_decay": [(200, -0.2)],
        "diag/grad_decay_l1": [(200, -0.1)],
        "diag/saturation": [(200, 0.1)],
        "diag/saturation_l1": [(200, 0.2)],
        "diag/saturation_warm_l1": [(200, 0.25)],
    }
    assert report_diag.flags_of(healthy) == []
    sick = healthy | {"diag/grad_decay_l1": [(200, 0.02)], "diag/saturation_warm_l1": [(200, 0.8)]}
    assert report_diag.flags_of(sick) == [
        ("exploding gradients", "grad_decay +0.020/step at iteration 200 (layer 1)"),
        ("saturating units", "saturation_warm 80% at iteration 200 (layer 1)"),
        ("zero vs warm", "saturation 20% from h=0, 80% warm (layer 1)"),
    ]


@pytest.mark.slow  # two tracked runs on a fresh MLflow store (~25 s on the loaded machine)
def test_report_figures_have_a_panel_per_layer(tmp_path):
    """A two-layer GRU run and a one-layer LSTM run in one store: every Diagnostics figure has
    a panel per layer; layer 1's panel draws the two-layer run's ``_l1`` metrics and curve (and
    nothing of the one-layer run), layer 0's both runs' plain ones, and the LSTM's cell-state
    curve as a second (dashed) one."""
    from rnnlab.report.select import select
    from rnnlab.report.tables import build_tables
    from rnnlab.tracking.job import JobContext, run_job

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ids = {}
    for layers, cell in ((2, "gru"), (1, "lstm")):
        cfg = tiny_config(tmp_path, cell=cell, layers=layers, iterations=40)
        cfg.tracking = TrackingConfig(uri=uri)
        cfg.experiment_name = "diag-layers"
        run_job(cfg, JobContext(launch_dir=tmp_path, output_dir=tmp_path / f"l{layers}"),
                show_progress=False)  # fmt: skip
    sel = select(uri, experiment="diag-layers")
    t = build_tables(sel)
    for run in sel.runs:
        ids[report_diag.layers_of(run)] = run.info.run_id
    assert sorted(ids) == [1, 2]
    runs = t.runs
    fig = report_diag._over_training(sel, t, runs, "diag/saturation", "diag/saturation_warm",
                                     "saturation", layers=2)  # fmt: skip
    top, bottom = fig.axes[1], fig.axes[0]
    assert len(fig.axes) == 2 and top.get_title().startswith("layer 1")
    assert len(bottom.lines) == 4 and len(top.lines) == 2  # zero and warm: both runs / one
    drawn = sorted(tuple(line.get_ydata()) for line in top.lines)
    expected = sorted(tuple(v for _, v in sel.history(ids[2], f"diag/saturation{s}_l1"))
                      for s in ("", "_warm"))  # fmt: skip
    assert drawn == expected
    ratio = report_diag._over_training(sel, t, runs, "diag/update_ratio/Whh", None, "ratio",
                                       log_y=True, layers=2)  # fmt: skip
    (line,) = ratio.axes[1].lines  # the GRU's W_hh_l1
    assert list(line.get_ydata()) == [
        v for _, v in sel.history(ids[2], "diag/update_ratio/W_hh_l1")
    ]
    flow = report_diag._grad_flow_figure(sel, t, runs, layers=2)
    last = report_diag.grad_flow_curves(sel, ids[2], layer=1)
    assert sorted(last) == [20, 40] and len(flow.axes[1].lines) == 2
    assert list(flow.axes[1].lines[-1].get_ydata()) == [g for _, g in last[40] if g > 0]
    # layer 0: the GRU's first and last h curves, the LSTM's too, and its c at the last one
    styles = sorted(line.get_linestyle() for line in flow.axes[0].lines)
    assert styles == sorted([":", "-", ":", "-", "--"])
    (dashed,) = [line for line in flow.axes[0].lines if line.get_linestyle() == "--"]
    c = report_diag.grad_flow_curves(sel, ids[1], state="c")
    assert sorted(c) == [20, 40] and report_diag.grad_flow_curves(sel, ids[2], state="c") == {}
    assert list(dashed.get_ydata()) == [g for _, g in c[40] if g > 0]
    (tmp_path / "report").mkdir()
    section = report_diag.build(sel, t, tmp_path / "report")
    assert len(section.figures) == 4
    assert all("One panel per layer" in f.caption for f in section.figures)


@pytest.mark.slow
def test_report_flags_the_saturating_run_and_not_the_healthy_one(tmp_path, kafka_path):
    """A real sweep: init_scale=1.0 (N(0, 1) weights: Whh's spectral radius ≈ √H) saturates;
    the seed's init_scale=0.01 does not. The Hydra callback writes the report."""
    r = run_cli(
        ["-m", "task.init_scale=0.01,1.0", "iterations=600", "hidden_size=32", "eval_every=200",
         "sample_every=600", "checkpoint_every=600", f"data.path={kafka_path}"],
        tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = {
        run.data.params["task.init_scale"]: run
        for run in client.search_runs([e.experiment_id for e in client.search_experiments()])
        if "task.init_scale" in run.data.params and "mlflow.parentRunId" in run.data.tags
    }  # the children: the sweep's parent run carries the base config's params too
    sick, healthy = runs["1.0"], runs["0.01"]
    assert sick.data.metrics["diag/saturation"] > 0.5 > healthy.data.metrics["diag/saturation"]
    arts = [f.path for f in client.list_artifacts(healthy.info.run_id, "diagnostics")]
    assert arts == [f"diagnostics/grad_flow_iter_{i:07d}.csv" for i in (200, 400, 600)]
    assert [f.path for f in client.list_artifacts(sick.info.run_id, "inspect")] == [
        "inspect/index.html"
    ]
    for key in ("diag/grad_decay", "diag/whh_rho", "diag/update_ratio/Whh", "diag/clip_frac"):
        assert [m.step for m in client.get_metric_history(healthy.info.run_id, key)] == [
            200,
            400,
            600,
        ], key
    md = next((tmp_path / "reports").glob("*/report.md")).read_text(encoding="utf-8")
    flags = md.split("## Flags")[1].split("## Diagnostics")[0]
    print(flags)
    rows = [line for line in flags.splitlines() if line.startswith("| `")]
    assert rows and all(sick.info.run_id[:8] in line for line in rows)
    assert any("saturating units" in line for line in rows)
    assert healthy.info.run_id[:8] not in flags
    html = next((tmp_path / "reports").glob("*/report.html")).read_text(encoding="utf-8")
    assert "<h2>Diagnostics</h2>" in html and html.count('alt="Gradient flow') == 1


# --- the training hook and its worker -------------------------------------------------------------


def tiny_config(tmp_path, **overrides) -> Config:
    text = ("One morning, when Gregor Samsa woke from troubled dreams, he found himself "
            "transformed in his bed into a horrible vermin. ") * 40  # fmt: skip
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(text, encoding="utf-8")
    cfg = Config(data=DataConfig(path=str(corpus)), tracking=TrackingConfig(enabled=False))
    for k, v in {"iterations": 60, "hidden_size": 12, "eval_every": 20, "log_every": 20,
                 "sample_every": 60, "checkpoint_every": 60, "diag_window": 30,
                 **overrides}.items():  # fmt: skip
        setattr(cfg, k, v)
    return cfg


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_a_run_logs_the_diagnostics_and_shares_the_validation_pass(tmp_path, cell):
    """Saturation counted on the evaluation's own passes equals the diagnostics' own pass over
    the same text (run here on the run's final weights), and every point has its curve."""
    tracker = MemoryTracker()
    cfg = tiny_config(tmp_path, cell=cell)
    train(cfg, tracker, tmp_path / cell, show_progress=False)
    keys = sorted(k for k in tracker.history if k.startswith("diag/"))
    for name in ("grad_decay", "whh_rho", "whh_sigma_max", "saturation", "saturation_warm",
                 "clip_frac", "update_ratio/Why", "clip_frac/Why"):  # fmt: skip
        assert f"diag/{name}" in keys
        assert [s for s, _ in tracker.history[f"diag/{name}"]] == [20, 40, 60]
    curves = sorted(f for f in tracker.texts if f.startswith("diagnostics/"))
    assert curves == [f"diagnostics/grad_flow_iter_{i:07d}.csv" for i in (20, 40, 60)]
    rows = tracker.texts[curves[0]].splitlines()
    head = "steps_back,t,grad_norm" + (",grad_norm_c" if cell == "lstm" else "")
    assert rows[0] == head and len(rows) == 31 and rows[1].startswith("1,29,")
    assert ("diag/grad_decay_c" in keys) == (cell == "lstm")
    assert "inspect/index.html" in tracker.texts
    # the last point's saturation, recomputed by the diagnostics' own pass on the final weights
    from rnnlab.training.loop import Trainer

    trainer = Trainer(cfg)
    final = np.load(next((tmp_path / cell).rglob("*0000060*.npz")))
    for name, p in trainer.params.items():
        p[...] = final[f"param/{name}"]
    spec = D.EngineSpec(trainer.task.activation, "xent", cell)
    probe = D.char_probe(trainer.task, cfg.diag_window)
    own, _ = D.heavy_metrics(trainer.params, spec, probe)
    for k, v in own.items():
        assert tracker.history[k][-1][1] == pytest.approx(v, rel=1e-9, abs=1e-12), k


def test_the_adder_counts_saturation_on_its_evaluation_pass():
    """At an evaluation the adder's saturation is counted on the probe's 512 sums picked out of
    the evaluation's own forward calls (two here: 20,000 sums in chunks of 16,384): the same
    entries, and the same share, as the probe's own pass over those sums."""
    from rnnlab.sweeps.compose import compose
    from rnnlab.training.loop import Trainer

    over = ["tracking.enabled=false", "seq_length=10", "task.eval_max_pairs=20000",
            "task.init_scale=4.0", "iterations=100"]  # fmt: skip
    cfg = compose(["task=adder", *over])
    trainer = Trainer(cfg)
    diag = D.start(cfg, trainer, MemoryTracker())
    picked = diag.probe.val_streams
    assert picked.size == D.ADDER_SUMS and picked.max() >= 16384  # both chunks hold some
    trainer.evaluate(diag.observer(100, 100))
    seen = diag._observed[1][""][0]
    own = D.saturation_passes(trainer.params, diag.spec.net(trainer.params), diag.probe)[""][0]
    assert seen.total == own.total == {"h": D.ADDER_SUMS * 10 * cfg.hidden_size}
    assert 0.05 < own.share("h") < 0.95
    assert seen.share("h") == pytest.approx(own.share("h"), abs=1e-4)


@pytest.mark.parametrize("clip_norm,share", [(1e-6, 1.0), (1e6, 0.0)])
def test_a_rescaled_step_counts_every_entry_clipped(tmp_path, clip_norm, share):
    """The clip shares are taken before the evaluation, the step's norm is known only after
    it: a step whose global norm was rescaled still counts every entry, one that was not none."""
    cfg = tiny_config(tmp_path, iterations=40)
    cfg.optimizer.clip, cfg.optimizer.clip_norm = None, clip_norm
    tracker = MemoryTracker()
    train(cfg, tracker, tmp_path / "run", show_progress=False)
    assert tracker.history["diag/clip_frac"] == [(20, share), (40, share)]
    assert tracker.history["diag/clip_frac/Whh"] == [(20, share), (40, share)]


def test_diagnostics_off_logs_nothing_and_training_is_unchanged(tmp_path):
    on, off = MemoryTracker(), MemoryTracker()
    train(tiny_config(tmp_path, diag_every=30), on, tmp_path / "on", show_progress=False)
    train(tiny_config(tmp_path, diagnostics=False), off, tmp_path / "off", show_progress=False)
    assert not [k for k in off.history if k.startswith("diag/")]
    assert not [f for f in off.texts if f.startswith(("diagnostics/", "inspect/"))]
    assert [s for s, _ in on.history["diag/whh_rho"]] == [30, 60]
    assert on.history["train/smooth_loss"] == off.history["train/smooth_loss"]  # no side effect
    assert on.history["val/loss"] == off.history["val/loss"]


def test_bad_diagnostics_settings_are_one_line(tmp_path):
    for key, value, allowed in (("diag_every", 0, "null"), ("diag_window", 1, "≥ 2")):
        with pytest.raises(ConfigError, match=allowed):
            check(tiny_config(tmp_path, **{key: value}))


def naive_gates(params, net: rnn.Spec, xs: np.ndarray, state0: np.ndarray) -> list[dict]:
    """Every layer's h and gates (T, B, H) from PyTorch's documented equations, one step at a
    time in plain numpy (symbols read as one-hot vectors): the oracle for the saturation counts."""
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    H = net.hidden_size
    V = params[rnn.layer_names(net, 0)[0]].shape[1]
    x = np.eye(V)[xs]  # (T, B, V)
    out = []
    for k in range(net.layers):
        W_ih, W_hh, b_ih, b_hh = (params[n] for n in rnn.layer_names(net, k))
        h = state0[k, 0].copy()
        c = state0[k, 1].copy() if net.cell == "lstm" else None
        rec: dict[str, list] = {}
        for t in range(x.shape[0]):
            gi = x[t] @ W_ih.T + b_ih  # (B, G·H)
            gh = h @ W_hh.T + b_hh
            if net.cell == "gru":
                r = sig(gi[:, :H] + gh[:, :H])
                z = sig(gi[:, H : 2 * H] + gh[:, H : 2 * H])
                n = np.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
                h = (1 - z) * n + z * h
                gates = {"r": r, "z": z, "n": n}
            else:
                a = gi + gh
                i, f, o = sig(a[:, :H]), sig(a[:, H : 2 * H]), sig(a[:, 3 * H :])
                g = np.tanh(a[:, 2 * H : 3 * H])
                c = f * c + i * g
                h = o * np.tanh(c)
                gates = {"i": i, "f": f, "g": g, "o": o}
            for name, v in {"h": h, **gates}.items():
                rec.setdefault(name, []).append(v)
        out.append({name: np.stack(v) for name, v in rec.items()})
        x = out[-1]["h"]
    return out


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_gated_saturation_and_spectra_equal_direct_counts_and_numpy(cell):
    """Two layers of a gated cell with large weights: per-layer, per-gate saturation from zero
    and warm equals a count over the gates of PyTorch's equations; every W_hh block's spectrum
    equals numpy.linalg's on that block."""
    rng = np.random.default_rng(8)
    net = rnn.Spec(cell, 2, 8, "tanh")
    _, params = rnn.init_params(6, 8, 6, rng, "normal", 1.0, spec=net)
    for name in params:
        params[name] *= 6.0  # U(±6/√8): gates well into saturation, not all of them
    val = rng.integers(0, 6, (200, 1))
    burn = val[:40]
    probe = D.Probe(window_xs=val[:10], window_ys=val[1:11], val_xs=val, burn_xs=burn)
    m, curves = D.heavy_metrics(params, D.EngineSpec("tanh", "xent", cell, 2), probe)
    assert curves.shape == (2, 10)
    zero = rnn.zero_state(net, 1, np.float64)
    cold = naive_gates(params, net, val, zero)
    warm_state = rnn.forward(params, burn, zero, net).state
    warm = naive_gates(params, net, val, warm_state)
    gates = [g for g, _ in D.CELLS[cell].gates]
    for k, s in enumerate(("", "_l1")):
        for label, acts in (("", cold[k]), ("_warm", warm[k])):
            assert m[f"diag/saturation{label}{s}"] == pytest.approx(
                np.mean(np.abs(acts["h"]) > 0.99), abs=1e-12
            )
            for g, kind in D.CELLS[cell].gates:
                a = acts[g]
                sat = np.abs(a) > 0.99 if kind == "tanh" else (a < 0.01) | (a > 0.99)
                assert m[f"diag/saturation{label}{s}/{g}"] == pytest.approx(
                    np.mean(sat), abs=1e-12
                ), (k, label, g)
        assert 0 < max(m[f"diag/saturation{s}/{g}"] for g in gates) < 1
        W = params[f"W_hh_l{k}"]
        for j, g in enumerate(gates):
            block = W[j * 8 : (j + 1) * 8]
            assert m[f"diag/whh_{g}_sigma_max{s}"] == pytest.approx(
                np.linalg.svd(block, compute_uv=False)[0], rel=1e-12
            )
            assert m[f"diag/whh_{g}_rho{s}"] == pytest.approx(
                np.abs(np.linalg.eigvals(block)).max(), rel=1e-12
            )
        cand = D.CELLS[cell].candidate
        assert m[f"diag/whh_rho{s}"] == m[f"diag/whh_{cand}_rho{s}"]
        assert np.isfinite(m[f"diag/grad_decay{s}"])


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_a_healthy_gated_run_logs_every_layer_and_is_not_flagged(tmp_path, cell):
    tracker = MemoryTracker()
    cfg = tiny_config(tmp_path, cell=cell, layers=2)
    train(cfg, tracker, tmp_path / cell, show_progress=False)
    h = tracker.history
    gates = [g for g, _ in D.CELLS[cell].gates]
    for s in ("", "_l1"):
        for key in ("grad_decay", "whh_rho", "whh_sigma_max", "saturation", "saturation_warm",
                    *(f"saturation{s and ''}/{g}" for g in gates)):  # fmt: skip
            name = f"diag/{key}{s}" if "/" not in key else f"diag/{key.replace('/', s + '/')}"
            assert [i for i, _ in h[name]] == [20, 40, 60], name
    assert report_diag.flags_of(h) == [], report_diag.flags_of(h)
    rows = tracker.texts["diagnostics/grad_flow_iter_0000060.csv"].splitlines()
    c = ",grad_norm_c,grad_norm_c_l1" if cell == "lstm" else ""
    assert rows[0] == "steps_back,t,grad_norm,grad_norm_l1" + c and len(rows) == 31
    assert "inspect/index.html" in tracker.texts
