"""The PyTorch export is checked against an independent numpy re-implementation of the equations
PyTorch documents for torch.nn.RNN / GRU / LSTM and Linear (PyTorch itself is not needed): the
exported state dict, fed one-hot inputs, reproduces the run's logits to 1e-10 in float64."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.processes import run_cli

from rnnlab.config import Config
from rnnlab.engine import rnn
from rnnlab.errors import UserError
from rnnlab.inference.export import export, state_dict
from rnnlab.inference.weights import load_weights
from rnnlab.training.loop import train
from rnnlab.training.tracker import MemoryTracker


def sigma(x):
    return 1.0 / (1.0 + np.exp(-x))


def torch_reference(sd: dict, cell: str, layers: int, X: np.ndarray) -> np.ndarray:
    """PyTorch's documented forward, one step and one layer at a time, from a zero state.
    X: (T, D) inputs (one-hot rows for symbols); returns fc(top h_t) for every t, (T, O)."""
    H = sd["rnn.weight_hh_l0"].shape[1]
    h = [np.zeros(H) for _ in range(layers)]
    c = [np.zeros(H) for _ in range(layers)]
    out = []
    for x in X:
        inp = x
        for k in range(layers):
            Wi, Wh = sd[f"rnn.weight_ih_l{k}"], sd[f"rnn.weight_hh_l{k}"]
            bi, bh = sd[f"rnn.bias_ih_l{k}"], sd[f"rnn.bias_hh_l{k}"]
            gi, gh = Wi @ inp + bi, Wh @ h[k] + bh  # x W_ih^T + b_ih,  h W_hh^T + b_hh
            if cell == "rnn":
                h[k] = np.tanh(gi + gh)
            elif cell == "gru":  # W_ih = (W_ir | W_iz | W_in)
                ir, iz, in_ = np.split(gi, 3)
                hr, hz, hn = np.split(gh, 3)
                r, z = sigma(ir + hr), sigma(iz + hz)
                n = np.tanh(in_ + r * hn)
                h[k] = (1 - z) * n + z * h[k]
            else:  # W_ih = (W_ii | W_if | W_ig | W_io)
                ii, if_, ig, io = np.split(gi + gh, 4)
                i, f, g, o = sigma(ii), sigma(if_), np.tanh(ig), sigma(io)
                c[k] = f * c[k] + i * g
                h[k] = o * np.tanh(c[k])
            inp = h[k]
        out.append(sd["fc.weight"] @ inp + sd["fc.bias"])  # y = x A^T + b
    return np.array(out)


def trained(tmp_path: Path, kafka_path: Path, cell: str, layers: int, task: str = "charrnn"):
    cfg = Config()
    cfg.cell, cfg.layers, cfg.dropout, cfg.hidden_size = cell, layers, 0.1, 10
    if task == "adder":
        cfg.task.name, cfg.task.activation, cfg.task.loss = "adder", "tanh", "bce"
        cfg.task.init, cfg.task.init_scale, cfg.seq_length = "uniform", 1.0, 8
        cfg.task.eval_max_pairs = 64
    else:
        cfg.data.path, cfg.data.val_fraction, cfg.seq_length = str(kafka_path), 0.002, 12
    cfg.iterations, cfg.learning_rate = 40, 0.05
    cfg.eval_every = cfg.sample_every = cfg.checkpoint_every = 40
    cfg.sample_length = 10
    train(cfg, MemoryTracker(), tmp_path, show_progress=False)
    return tmp_path / "checkpoints" / "iter_0000040.npz"


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("layers", [1, 2])
def test_export_reproduces_the_runs_logits(cell, layers, tmp_path, kafka_path):
    w = load_weights(trained(tmp_path, kafka_path, cell, layers))
    path = export(w, tmp_path / "model.npz")
    with np.load(path, allow_pickle=False) as npz:
        sd = {k: npz[k] for k in npz.files}
    keys = {f"rnn.{p}_l{k}" for k in range(layers) for p in
            ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}  # fmt: skip
    assert set(sd) == keys | {"fc.weight", "fc.bias", "vocab"}
    assert "".join(sd["vocab"]) == w.vocab.chars
    G = {"rnn": 1, "gru": 3, "lstm": 4}[cell]
    V, H = len(w.vocab), 10
    assert sd["rnn.weight_ih_l0"].shape == (G * H, V) and sd["fc.weight"].shape == (V, H)
    if cell == "rnn":
        assert not sd["rnn.bias_hh_l0"].any() and sd["rnn.bias_ih_l0"].any()
    ids = w.vocab.encode("One morning, as Gregor Samsa was waking up")
    spec = rnn.spec_of(w.cfg)
    ours = rnn.forward(w.params, ids[:, None], rnn.zero_state(spec, 1, np.float64), spec)
    theirs = torch_reference(sd, cell, layers, np.eye(V)[ids])
    err = np.max(np.abs(ours.logits[:, 0] - theirs))
    print(f"{cell} L={layers}: max |logit difference| {err:.1e}")
    assert err < 1e-10
    # the comparison has teeth: rows of weight_hh in another order (a wrong gate order) differ
    wrong = sd | {"rnn.weight_hh_l0": sd["rnn.weight_hh_l0"][::-1]}
    assert np.max(np.abs(torch_reference(wrong, cell, layers, np.eye(V)[ids]) - theirs)) > 1e-6


def test_adder_export_with_dense_inputs(tmp_path, kafka_path):
    w = load_weights(trained(tmp_path, kafka_path, "lstm", 2, task="adder"))
    sd = state_dict(w.params, rnn.spec_of(w.cfg))
    assert "vocab" not in sd and sd["rnn.weight_ih_l0"].shape == (40, 2)
    xs = np.random.default_rng(0).integers(0, 2, (8, 1, 2)).astype(np.float64)
    spec = rnn.spec_of(w.cfg)
    ours = rnn.forward(w.params, xs, rnn.zero_state(spec, 1, np.float64), spec).logits[:, 0]
    assert np.max(np.abs(ours - torch_reference(sd, "lstm", 2, xs[:, 0]))) < 1e-10


def test_sigmoid_vanilla_cell_is_refused():
    spec = rnn.Spec("rnn", 1, 4, "sigmoid")
    _, params = rnn.init_params(2, 4, 1, np.random.default_rng(0), spec=spec)
    with pytest.raises(UserError, match="task.activation='sigmoid' has no torch.nn.RNN"):
        state_dict(params, spec)


def test_export_cli(tmp_path, kafka_path):
    ckpt = trained(tmp_path, kafka_path, "gru", 2)
    r = run_cli(["export", f"checkpoint={ckpt}", f"out={tmp_path / 'm.npz'}"], cwd=tmp_path,
                module="rnnlab.model")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "torch.nn.GRU(hidden_size=10, num_layers=2)" in r.stdout
    assert np.load(tmp_path / "m.npz")["rnn.weight_hh_l1"].shape == (30, 10)
    bad = run_cli(["export", f"checkpoint={ckpt}", "out=m.pt"], cwd=tmp_path, module="rnnlab.model")
    assert bad.returncode == 2
    assert (
        bad.stderr.strip() == "rnnlab: error: out='m.pt' is not allowed: a file name ending in .npz"
    )
