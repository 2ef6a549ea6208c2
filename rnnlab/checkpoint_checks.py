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

PARAMS = ("Wxh", "Whh", "Why", "bh", "by")
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


def check_contents(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Metadata of the right types; the five weights present, consistent, and matching the
    config and vocabulary stored beside them."""
    state = meta.get("state", {})
    if not isinstance(state, dict) or not all(_number(v) for v in state.values()):
        raise ValueError("its metadata 'state' is not a table of numbers")
    if "iteration" in meta and not _number(meta["iteration"]):
        raise ValueError(f"its metadata 'iteration' is {meta['iteration']!r}, not a number")
    config = meta.get("config")
    if config is not None and not isinstance(config, dict):
        raise ValueError("its metadata 'config' is not a table")
    missing = [k for k in PARAMS if f"param/{k}" not in arrays]
    if missing:
        raise ValueError(f"it holds no weights ({', '.join(missing)} missing)")
    p = {k: arrays[f"param/{k}"] for k in PARAMS}
    if any(not np.issubdtype(v.dtype, np.floating) for v in p.values()):
        raise ValueError("its weights are not floating-point arrays")
    if p["Whh"].ndim != 2 or p["Wxh"].ndim != 2 or p["Why"].ndim != 2:
        raise ValueError("its weight matrices are not two-dimensional")
    H, V_in, V_out = p["Whh"].shape[0], p["Wxh"].shape[1], p["Why"].shape[0]
    expected = {"Wxh": (H, V_in), "Whh": (H, H), "Why": (V_out, H), "bh": (H,), "by": (V_out,)}
    for k, shape in expected.items():
        if p[k].shape != shape:
            raise ValueError(f"its {k} has shape {p[k].shape}; the other weights make {shape}")
    if config is not None and "hidden_size" in config and config["hidden_size"] != H:
        raise ValueError(
            f"its config says hidden_size={config['hidden_size']!r} but its weights have {H}"
        )
    if "vocab" in arrays and len(arrays["vocab"]) != V_in:
        raise ValueError(
            f"its vocabulary has {len(arrays['vocab'])} characters but its weights read {V_in}"
        )
