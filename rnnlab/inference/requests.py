"""What a generation request may ask: the type and the limit of every decoding knob, checked
before any work, and the deadline its decoding stops at.

A request is a list of rows (``prime``, ``length``, ``temperature``, ``seed``, ``top_k``,
``top_p``, ``greedy``, ``beam``; only ``prime`` required). Every value is checked as it arrived
— before anything converts it, so ``length=1.5`` is refused, not truncated to 1, and
``length=1e30`` is refused, not wrapped to a negative integer — and against ``Limits``: rows,
prime characters, length, beam width, and the work of the whole request, Σ max(beam, 1) ×
(length + prime) × vocabulary (the symbols scored per step, per beam). Anything else is a
``RequestError`` naming the field, its value and what is allowed.

A request also has a time: ``Limits.timeout_seconds`` (a served model takes its server's
request timeout). Decoding checks the deadline at every step (``deadline_step``) and stops with
``RequestTimeout``: no work outlives its request.

Not here: decoding (``rnnlab.engine.decode``, ``rnnlab.inference.generate``), the served
model's HTTP side (``rnnlab.tracking.pyfunc``).
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, fields, replace
from typing import Any

from rnnlab.errors import UserError

MIN_TEMPERATURE = 1e-3  # logits over a temperature below this can overflow to inf
MAX_SEED = 2**63 - 1
MAX_TOP_K = 2**31 - 1  # any k ≥ the vocabulary keeps every symbol


@dataclass(frozen=True)
class Limits:
    """What one request may ask for (each settable, see ``rnnlab.tracking.pyfunc``)."""

    max_rows: int = 4  # rows in one request
    max_prime: int = 10_000  # characters of a prime
    max_length: int = 5_000  # characters generated per row
    max_beam: int = 16  # beam width
    # Σ over rows of max(beam, 1) × (length + prime characters) × vocabulary: the symbols a
    # request scores (two rows of beam 16 × length 5,000 over 62 symbols: tests/e2e/
    # test_served_model_limits.py prints what such a request takes)
    max_work: int = 10_000_000
    timeout_seconds: float | None = None  # decoding stops after this long (None: never)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def with_values(self, values: dict[str, Any]) -> Limits:
        """These limits with ``values`` (strings from the environment or a model config) on
        top; ValueError (one line) for a value that is not a positive number of its kind."""
        changed = {}
        for name, given in values.items():
            if given is None:
                continue
            kind = float if name == "timeout_seconds" else int
            try:
                value = kind(str(given).strip())
            except ValueError:
                value = 0
            exact = kind is float or str(given).strip() == str(value)
            if value <= 0 or not exact or (kind is float and not math.isfinite(value)):
                what = "a number > 0" if kind is float else "an integer ≥ 1"
                raise ValueError(f"serving limit {name}={given!r} is not allowed: {what}")
            changed[name] = value
        return replace(self, **changed)


class RequestError(UserError):
    """A request asks for something not allowed. The message is one line naming the field."""


class RequestTimeout(RuntimeError):
    """A request's time ran out while decoding: its work stopped there."""


@dataclass(frozen=True)
class Request:
    """One checked row."""

    prime: str
    length: int
    temperature: float
    seed: int
    top_k: int = 0
    top_p: float = 1.0
    greedy: bool = False
    beam: int = 0


FIELDS = tuple(f.name for f in fields(Request))


class NonFinite:
    """A JSON constant that is no number (``NaN``, ``Infinity``), kept to name it in a refusal."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:40] + "…")
    return repr(value) if not isinstance(value, numbers.Number) else f"{value!r}".strip("'")


def _integer(name: str, value: Any, lo: int, hi: int, limit: str | None = None) -> int:
    """An integer as it arrived: an int, or a float holding an integer exactly (JSON and
    DataFrames turn 7 into 7.0), within [lo, hi]."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if isinstance(value, numbers.Real) and not isinstance(value, bool | numbers.Integral):
        ok = math.isfinite(value) and float(value).is_integer()
    if ok and lo <= int(value) <= hi:
        return int(value)
    if ok and int(value) > hi and limit is not None:
        raise RequestError(f"{name}={_shown(value)} is over the limit {limit}={hi}")
    raise RequestError(f"{name}={_shown(value)} is not allowed: an integer from {lo} to {hi}")


def _number(name: str, value: Any, ok, allowed: str) -> float:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if math.isfinite(value) and ok(float(value)):
            return float(value)
    raise RequestError(f"{name}={_shown(value)} is not allowed: {allowed}")


def _boolean(name: str, value: Any) -> bool:
    if isinstance(value, bool) or (isinstance(value, numbers.Integral) and value in (0, 1)):
        return bool(value)
    try:  # numpy's bool_
        import numpy as np

        if isinstance(value, np.bool_):
            return bool(value)
    except ImportError:  # pragma: no cover
        pass
    raise RequestError(f"{name}={_shown(value)} is not allowed: true or false")


def check_rows(
    rows: list[dict[str, Any]], limits: Limits, vocabulary: int, defaults: dict[str, Any]
) -> list[Request]:
    """Every row checked (RequestError naming the first bad field), missing fields from
    ``defaults``; then the request's work against ``limits.max_work``."""
    if len(rows) > limits.max_rows:
        raise RequestError(
            f"{len(rows)} rows in one request is over the limit max_rows={limits.max_rows}"
        )
    out, work = [], 0
    for row in rows:
        if not isinstance(row, dict):
            raise RequestError(f"a row is {_shown(row)}: each row is an object of fields")
        for key in row:
            if key not in FIELDS:
                raise RequestError(f"{key!r} is not a field: one of {', '.join(FIELDS)}")
        given = {k: v for k, v in row.items() if not _missing(v) or isinstance(v, NonFinite)}
        prime = given.get("prime")
        if not isinstance(prime, str) or not prime:
            raise RequestError(f"prime={_shown(prime)} is not allowed: text of ≥ 1 character")
        if len(prime) > limits.max_prime:
            raise RequestError(
                f"a prime of {len(prime)} characters is over the limit max_prime={limits.max_prime}"
            )
        v = {**defaults, **given}
        request = Request(
            prime=prime,
            length=_integer("length", v["length"], 1, limits.max_length, "max_length"),
            temperature=_number(
                "temperature",
                v["temperature"],
                lambda t: t >= MIN_TEMPERATURE,
                f"a finite number ≥ {MIN_TEMPERATURE}",
            ),  # fmt: skip
            seed=_integer("seed", v["seed"], 0, MAX_SEED),
            top_k=_integer("top_k", v.get("top_k", 0), 0, MAX_TOP_K),
            top_p=_number(
                "top_p",
                v.get("top_p", 1.0),
                lambda p: 0.0 < p <= 1.0,
                "a number in (0, 1] (1 = off)",
            ),  # fmt: skip
            greedy=_boolean("greedy", v.get("greedy", False)),
            beam=_integer("beam", v.get("beam", 0), 0, limits.max_beam, "max_beam"),
        )
        out.append(request)
        work += max(request.beam, 1) * (request.length + len(prime)) * vocabulary
    if work > limits.max_work:
        raise RequestError(
            f"the request's work, Σ max(beam, 1) × (length + prime) × vocabulary = {work:,} "
            f"is over the limit max_work={limits.max_work:,}"
        )
    return out


def deadline_step(step, deadline: float | None):
    """``step`` (a decoder's network step) that raises RequestTimeout once ``deadline``
    (``time.monotonic()``) has passed: decoding stops within one step of its time."""
    if deadline is None:
        return step

    def timed(state, symbols):
        if time.monotonic() > deadline:
            raise RequestTimeout("the request's time ran out while decoding; its work stopped")
        return step(state, symbols)

    return timed
