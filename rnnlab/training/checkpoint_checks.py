"""What a checkpoint file must hold before anything trusts it: checked by ``checkpoint.load``.

A crafted or damaged ``.npz`` can declare an array far larger than the bytes it holds (numpy
would try to allocate it all), carry metadata of the wrong types, lack its weights, or have
weights whose shapes disagree with each other or with the config that claims to have made them.
Each is a ``ValueError`` with one line here, so a resume is refused before it opens a run and
``rnnlab.sample`` before it draws anything.
"""

from __future__ import annotations

import numbers
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def check_declared_sizes(path: Path) -> None:
    """Every member's declared shape × dtype fits in the bytes the member holds (read from the
    .npy headers only: nothing is allocated)."""
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            with z.open(info) as f:
                try:
                    version = np.lib.format.read_magic(f)
                    read = HEADER_READERS.get(version)
                    if read is None:  # 3.0: only for non-Latin-1 field names, never ours
                        continue
                    shape, _, dtype = read(f)
                except (ValueError, OSError, EOFError) as e:
                    message = f"member {info.filename} has no readable header ({e})"
                    raise ValueError(message) from None
            declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if declared > info.file_size:
                raise ValueError(
                    f"member {info.filename} declares shape {shape} of {dtype} ({declared:,} "
                    f"bytes) but holds {info.file_size:,} bytes"
                )


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_contents(params: dict[str, np.ndarray], meta: dict[str, Any], vocab, cfg) -> None:
    """Metadata of the right types; the weights of the cell and depth ``cfg`` describes (the
    typed Config that made them, or None when the file carries none) present, floating-point,
    of the shapes that config makes, and reading as many symbols as the vocabulary holds."""
    from rnnlab.engine import rnn  # pure numpy: no cycle, and no cost for the size check above

    state = meta.get("state", {})
    if not isinstance(state, dict) or not all(
        _number(v) or isinstance(v, bool) for v in state.values()
    ):
        raise ValueError("its metadata 'state' is not a table of numbers")
    if "iteration" in meta and not _number(meta["iteration"]):
        raise ValueError(f"its metadata 'iteration' is {meta['iteration']!r}, not a number")
    if any(not np.issubdtype(v.dtype, np.floating) for v in params.values()):
        raise ValueError("its weights are not floating-point arrays")
    if cfg is None:
        return
    spec = rnn.spec_of(cfg)
    first_input = rnn.layer_names(spec, 0)[0]  # Wxh, or W_ih_l0 for a gated cell
    missing = [k for k in ("Why", first_input) if k not in params or params[k].ndim != 2]
    if missing:
        raise ValueError(f"it holds no usable weights ({', '.join(missing)} missing)")
    V_in, V_out = params[first_input].shape[1], params["Why"].shape[0]
    for k, shape in rnn.param_shapes(V_in, cfg.hidden_size, V_out, spec).items():
        if k not in params:
            raise ValueError(f"it holds no {k} (cell={spec.cell}, layers={spec.layers})")
        if params[k].shape != tuple(shape):
            raise ValueError(
                f"its {k} has shape {params[k].shape}; its config (cell={spec.cell}, "
                f"hidden_size={cfg.hidden_size}) makes {tuple(shape)}"
            )
    if vocab is not None and len(vocab) != V_in:
        raise ValueError(f"its vocabulary has {len(vocab)} characters but its weights read {V_in}")
