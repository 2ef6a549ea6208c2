"""The memory guard sizes every cell the engine has, not only the classic three: before, each
cell after the LSTM (IRNN, IndRNN, minGRU, minLSTM, LRU) stopped ``python -m rnnlab.run``'s
preflight with a KeyError, so none of them could be run from the command line."""

from __future__ import annotations

import pytest

from rnnlab.engine import rnn
from rnnlab.sweeps.compose import compose
from rnnlab.training import memory


@pytest.mark.parametrize("cell", rnn.CELL_NAMES)
def test_every_cell_gets_an_estimate_that_counts_its_input_projections(cell):
    cfg = compose(["task=copy", "task.length=128", f"cell={cell}", "hidden_size=32"])
    need = memory.check(cfg, have=1 << 40)
    base = memory.estimate(compose(["task=copy", "task.length=128", "cell=rnn",
                                    "hidden_size=32"]))  # fmt: skip
    spec = rnn.spec_of(cfg)
    K = rnn.TYPED[cell].input_rows if cell in rnn.TYPED else rnn.GATES[cell]
    # a window holds, per step, stream and unit: K projections forward and back, S states,
    # the output and its gradient — the vanilla cell's 1, 1 and 2 plus what this cell adds
    T, B, H = 148, 32, 32
    extra = T * B * H * (2 * (K - 1) + spec.state_size - 1) * 8
    print(f"{cell}: K={K}, S={spec.state_size}, window {need.window:,} B")
    assert need.window - base.window == extra
