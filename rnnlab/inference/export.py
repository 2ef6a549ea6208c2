"""A network's weights as an ``.npz`` a reader outside rnnlab can use: ``python -m rnnlab.export``.

    python -m rnnlab.model export run_id=<id> out=kafka_lstm.npz [tracking_uri=<uri>]
    python -m rnnlab.model export checkpoint=outputs/.../iter_0100000.npz out=model.npz

Cells PyTorch has a module for (rnn, gru, lstm, and the IRNN: ``torch.nn.RNN`` with
``nonlinearity="relu"``): the file holds the state dict of ``torch.nn.ModuleDict({"rnn":
RNN|GRU|LSTM(input_size=V, hidden_size=H, num_layers=L), "fc": Linear(H, V)})`` fed one-hot inputs
(the adder: its two bits): ``rnn.weight_ih_l{k}``, ``rnn.weight_hh_l{k}``, ``rnn.bias_ih_l{k}``,
``rnn.bias_hh_l{k}``, ``fc.weight``, ``fc.bias``, plus ``vocab`` (char-RNN runs: the symbols in id
order). The engine already stores W as (out, in) and gates in PyTorch's order, so the export is a
renaming; the vanilla cell's single ``bh`` becomes ``bias_ih`` with ``bias_hh`` zeros. PyTorch's
RNN has only tanh and relu, so a sigmoid vanilla cell (the adder's default) is refused in one line.

The cells PyTorch has no module for (indrnn, mingru, minlstm, lru): the file holds every layer's
parameters as ``layers.{k}.<name>`` (``EXPORTED``), ``fc.weight``, ``fc.bias``, ``vocab``, and
``metadata``: a JSON string with the cell, its sizes and its equations in these names, enough to
run it; docs/cells.md has a ten-line numpy forward over such a file (tested to score a text as
``rnnlab.score`` does). Nothing here needs PyTorch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rnnlab.engine import rnn
from rnnlab.errors import UserError
from rnnlab.files import atomic_file
from rnnlab.inference.weights import Weights

TORCH_CLASS = {"rnn": "RNN", "gru": "GRU", "lstm": "LSTM", "irnn": "RNN"}
FORMAT = "rnnlab-cell/1"

# the cells without a PyTorch module: their equations in the exported names (layer k; x the
# layer's input: one-hot symbols or the layer below's h; σ the logistic function)
EQUATIONS = {
    "indrnn": ["h = relu(W_ih x + b_ih + u * h_prev)"],
    "mingru": [
        "z, c = split(W_ih x + b_ih, 2)",
        "g(v) = v + 0.5 if v >= 0 else σ(v)",
        "h = (1 - σ(z)) * h_prev + σ(z) * g(c)",
    ],
    "minlstm": [
        "f, i, c = split(W_ih x + b_ih, 3)",
        "g(v) = v + 0.5 if v >= 0 else σ(v)",
        "f' = σ(f) / (σ(f) + σ(i)),  i' = 1 - f'",
        "h = f' * h_prev + i' * g(c)",
    ],
    "lru": [
        "λ = exp(-exp(nu_log) + 1j * exp(theta_log))  (complex)",
        "s = λ * s_prev + exp(gamma_log) * ((B_re + 1j * B_im) x)  (the carried complex state)",
        "h = Re((C_re + 1j * C_im) s) + D x  (what the next layer and fc read)",
    ],
}
OUTPUT = "logits = fc.weight h_top + fc.bias; every state starts at 0 (s of the lru too)"


def exported_names(params: rnn.Params, spec: rnn.Spec, k: int) -> dict[str, np.ndarray]:
    """Layer k's parameters under their exported names (``layers.{k}.<name>``), for a cell
    without a PyTorch module; the LRU's W_ih splits into B_re, B_im, D."""
    cell = rnn.TYPED[spec.cell]
    lp = cell.layer(params, k)
    out = {}
    for role, v in lp.items():
        if spec.cell == "lru" and role == "W_ih":
            H = spec.hidden_size
            out |= {"B_re": v[:H], "B_im": v[H : 2 * H], "D": v[2 * H :]}
        else:
            out[role] = v
    return {f"layers.{k}.{name}": v.copy() for name, v in out.items()}


def state_dict(params: rnn.Params, spec: rnn.Spec) -> dict[str, np.ndarray]:
    """The engine's parameters under PyTorch's names (float arrays, copied), or for a cell
    without a PyTorch module under ``layers.{k}.<name>``."""
    if spec.cell in rnn.TYPED:
        out = {}
        for k in range(spec.layers):
            out |= exported_names(params, spec, k)
        out["fc.weight"], out["fc.bias"] = params["Why"].copy(), params["by"].copy()
        return out
    if spec.cell == "rnn" and spec.activation != "tanh":
        raise UserError(
            f"task.activation={spec.activation!r} has no torch.nn.RNN equivalent (tanh or relu)"
        )
    out: dict[str, np.ndarray] = {}
    for k in range(spec.layers):
        W_in, W_rec, b_in, b_rec = rnn.layer_names(spec, k)
        out[f"rnn.weight_ih_l{k}"] = params[W_in].copy()  # (G·H, D_k)
        out[f"rnn.weight_hh_l{k}"] = params[W_rec].copy()  # (G·H, H)
        out[f"rnn.bias_ih_l{k}"] = params[b_in].copy()  # (G·H,)
        # the vanilla cell has one bias: PyTorch adds both, so the other is zero
        out[f"rnn.bias_hh_l{k}"] = (
            params[b_rec].copy() if b_rec is not None else np.zeros_like(params[b_in])
        )
    out["fc.weight"], out["fc.bias"] = params["Why"].copy(), params["by"].copy()
    return out


def metadata(spec: rnn.Spec, arrays: dict[str, np.ndarray], task: str) -> dict:
    """What a reader needs to run a cell without a PyTorch module: sizes, input, equations."""
    first = arrays["layers.0.B_re" if spec.cell == "lru" else "layers.0.W_ih"]  # (·, D)
    return {
        "format": FORMAT,
        "cell": spec.cell,
        "layers": spec.layers,
        "hidden_size": spec.hidden_size,
        "input_size": int(first.shape[1]),
        "output_size": int(arrays["fc.weight"].shape[0]),
        "input": "one-hot symbols, ids as in vocab" if task == "charrnn" else "the adder's 2 bits",
        "equations": EQUATIONS[spec.cell],
        "output": OUTPUT,
    }


def describe(spec: rnn.Spec) -> str:
    """What an export of ``spec`` holds, in a few words (the command's line)."""
    if spec.cell in rnn.TYPED:
        return (
            f"{spec.cell} parameters with their equations in 'metadata' ({spec.layers} layers of "
            f"{spec.hidden_size}; a numpy forward: docs/cells.md)"
        )
    relu = ', nonlinearity="relu"' if spec.cell == "irnn" else ""
    return (
        f"torch.nn.{TORCH_CLASS[spec.cell]}(hidden_size={spec.hidden_size}, "
        f"num_layers={spec.layers}{relu}) + Linear"
    )


def export(weights: Weights, out: Path) -> Path:
    """Write ``weights`` (a ``Weights``) as an ``.npz`` at ``out`` (see the module docstring)."""
    spec = rnn.spec_of(weights.cfg)
    arrays = state_dict(weights.params, spec)  # a refusal raises before any file is written
    if spec.cell in rnn.TYPED:
        meta = metadata(spec, arrays, weights.cfg.task.name)
        arrays["metadata"] = np.array(json.dumps(meta, ensure_ascii=False))
    if weights.vocab is not None:
        arrays["vocab"] = np.array(list(weights.vocab.chars))
    out = Path(out).expanduser()
    with atomic_file(out) as f:  # a kill mid-write leaves the earlier export whole
        np.savez(f, **arrays)
    return out
