"""A network's weights as a PyTorch state dict in an ``.npz``: ``python -m rnnlab.export``.

    python -m rnnlab.model export run_id=<id> out=kafka_lstm.npz [tracking_uri=<uri>]
    python -m rnnlab.model export checkpoint=outputs/.../iter_0100000.npz out=model.npz

The file holds the state dict of ``torch.nn.ModuleDict({"rnn": RNN|GRU|LSTM(input_size=V,
hidden_size=H, num_layers=L), "fc": Linear(H, V)})`` fed one-hot inputs (the adder: its two bits):
``rnn.weight_ih_l{k}``, ``rnn.weight_hh_l{k}``, ``rnn.bias_ih_l{k}``, ``rnn.bias_hh_l{k}``,
``fc.weight``, ``fc.bias``, plus ``vocab`` (char-RNN runs: the symbols in id order). The engine
already stores W as (out, in) and gates in PyTorch's order, so the export is a renaming; the
vanilla cell's single ``bh`` becomes ``bias_ih`` with ``bias_hh`` zeros. PyTorch's RNN has only
tanh and relu, so a sigmoid vanilla cell (the adder's default) is refused in one line. Nothing
here needs PyTorch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rnnlab.engine import rnn
from rnnlab.errors import UserError
from rnnlab.files import atomic_file
from rnnlab.inference.weights import Weights

TORCH_CLASS = {"rnn": "RNN", "gru": "GRU", "lstm": "LSTM"}


def state_dict(params: rnn.Params, spec: rnn.Spec) -> dict[str, np.ndarray]:
    """The engine's parameters under PyTorch's names (float arrays, copied)."""
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


def export(weights: Weights, out: Path) -> Path:
    """Write ``weights`` (a ``Weights``) as a state-dict ``.npz`` at ``out``."""
    arrays = state_dict(weights.params, rnn.spec_of(weights.cfg))
    if weights.vocab is not None:
        arrays["vocab"] = np.array(list(weights.vocab.chars))
    out = Path(out).expanduser()
    with atomic_file(out) as f:  # a kill mid-write leaves the earlier export whole
        np.savez(f, **arrays)
    return out
