"""How every rnnlab command but ``rnnlab.run`` reads its arguments: ``key=value``, as Hydra does.

    python -m rnnlab.<command> [verb] [target] key=value ...

One convention for all of them, the one ``python -m rnnlab.run`` already speaks (Hydra's
``key=value``), so a person learns one way to talk to rnnlab and no argument library is needed
for a flat list of typed keys. A command declares its keys once (``Key``: name, type, default,
what is allowed, one line of help); ``parse`` turns ``argv`` into typed values, and ``main``
runs the command around them:

- ``--help`` (or ``-h``) prints every key with its default and exits 0;
- an unknown key, a value of the wrong type or out of range, a missing required key: one line
  ``rnnlab: error: ...`` naming the key and what is allowed, exit code 2, before any work;
- any ``UserError`` the command raises later (a run that does not exist, a checkpoint that is
  not one) the same way; a closed pipe (``| head``) ends the output, never in a traceback.

Not here: the training command's Hydra configuration (``rnnlab.sweeps.compose``), what is kept
off the screen (``rnnlab.quiet``).
"""

from __future__ import annotations

import difflib
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rnnlab.errors import UserError
from rnnlab.quiet import quiet_third_party, survive_closed_output, verbose_requested

REQUIRED = object()  # a Key default: the command cannot run without it


@dataclass(frozen=True)
class Key:
    """One ``key=value`` argument: its type, default and what is allowed."""

    name: str
    help: str
    kind: type = str  # str | int | float | bool
    default: Any = None  # None: not set (the command decides); REQUIRED: must be given
    choices: tuple[str, ...] = ()
    minimum: float | None = None  # numbers: the smallest allowed value
    maximum: float | None = None
    above: float | None = None  # numbers: strictly greater than this

    def allowed(self) -> str:
        """What a value may be, in words: ``an integer ≥ 1``, ``best or last``."""
        if self.choices:
            return " or ".join(self.choices) if len(self.choices) < 3 else (
                "one of " + ", ".join(self.choices))  # fmt: skip
        kind = {int: "an integer", float: "a finite number", bool: "true or false"}.get(
            self.kind, "a string"
        )
        limits = []
        if self.minimum is not None:
            limits.append(f"≥ {self.minimum:g}")
        if self.above is not None:
            limits.append(f"> {self.above:g}")
        if self.maximum is not None:
            limits.append(f"≤ {self.maximum:g}")
        return kind + (" " + " and ".join(limits) if limits else "")

    def convert(self, text: str) -> Any:
        """The typed value of ``text``; UserError naming the key and what is allowed."""
        bad = UserError(f"{self.name}={text!r} is not allowed: {self.allowed()}")
        # a number out of range is shown as the number, as rnnlab.config's messages do
        out_of_range = lambda v: UserError(f"{self.name}={v!r} is not allowed: {self.allowed()}")
        if self.kind is bool:
            if text.lower() not in ("true", "false"):
                raise bad
            return text.lower() == "true"
        if self.kind is int:
            try:
                value: Any = int(text)
            except ValueError:
                raise bad from None
        elif self.kind is float:
            try:
                value = float(text)
            except ValueError:
                raise bad from None
            if not math.isfinite(value):
                raise bad
        else:
            value = text
        if self.choices and value not in self.choices:
            raise bad
        if self.kind in (int, float):
            if self.minimum is not None and value < self.minimum:
                raise out_of_range(value)
            if self.maximum is not None and value > self.maximum:
                raise out_of_range(value)
            if self.above is not None and value <= self.above:
                raise out_of_range(value)
        return value

    def shown_default(self) -> str:
        if self.default is REQUIRED:
            return "required"
        if self.default is None:
            return "unset"
        if isinstance(self.default, bool):
            return str(self.default).lower()
        return str(self.default)


@dataclass(frozen=True)
class Command:
    """A command's name, what it does, its keys (and verbs, each with keys of its own)."""

    name: str  # e.g. rnnlab.sample
    summary: str  # one line
    keys: tuple[Key, ...] = ()
    examples: tuple[str, ...] = ()
    details: str = ""  # a paragraph or two for --help
    target: Key | None = None  # one bare argument (``rnnlab.sync <job folder | run id>``)
    verbs: dict[str, Command] = field(default_factory=dict)  # e.g. model register
    # verbs that are another command under a second name: verb → that command's module
    # (``rnnlab.model export`` is ``rnnlab.export``), run as if it had been called itself
    aliases: dict[str, str] = field(default_factory=dict)

    def key(self, name: str) -> Key | None:
        return next((k for k in self.keys if k.name == name), None)

    def help(self) -> str:
        """What ``--help`` prints: usage, examples, every key with its default."""
        lines = [f"python -m {self.name}: {self.summary}", ""]
        if self.verbs:
            verbs = "|".join([*self.verbs, *self.aliases])
            lines.append(f"usage: python -m {self.name} {{{verbs}}} key=value ...")
            for verb, sub in self.verbs.items():
                lines += ["", f"{verb}: {sub.summary}"] + _key_lines(sub)
            for verb, module in self.aliases.items():
                lines += ["", f"{verb}: python -m {module} (see its --help)"]
        else:
            target = f" <{self.target.name}>" if self.target else ""
            lines.append(f"usage: python -m {self.name}{target} key=value ...")
            lines += _key_lines(self)
        if self.examples:
            lines += ["", "examples:"] + [f"  {e}" for e in self.examples]
        if self.details:
            lines += ["", self.details.strip()]
        return "\n".join(lines)

    def parse(self, argv: Sequence[str]) -> dict[str, Any]:
        """``argv`` → {key: typed value} (defaults filled in, unset keys absent; ``verb`` and
        the target under their names). UserError (one line) for anything not allowed."""
        argv = list(argv)
        if self.verbs:
            if not argv or argv[0] not in self.verbs:
                given = repr(argv[0]) if argv else "nothing"
                raise UserError(
                    f"{self.name}: {given} is not a verb: one of "
                    f"{', '.join([*self.verbs, *self.aliases])} (--help lists their keys)"
                )
            verb = argv.pop(0)
            return {"verb": verb, **self.verbs[verb].parse(argv)}
        out: dict[str, Any] = {}
        for arg in argv:
            name, eq, text = arg.partition("=")
            if not eq:
                if self.target is not None and self.target.name not in out:
                    out[self.target.name] = self.target.convert(arg)
                    continue
                raise UserError(f"{arg!r} is not key=value; {self._known()}")
            key = self.key(name)
            if key is None:
                close = difflib.get_close_matches(name, [k.name for k in self.keys], n=1)
                hint = f"did you mean {close[0]}?" if close else self._known()
                raise UserError(f"{name} is not a key of {self.name}; {hint}")
            if name in out:
                raise UserError(f"{name}= is given twice")
            out[name] = key.convert(text)
        for key in self.keys:
            if key.name in out:
                continue
            if key.default is REQUIRED:
                raise UserError(f"{key.name}= is required: {key.help}")
            if key.default is not None:
                out[key.name] = key.default
        if self.target is not None and self.target.name not in out:
            raise UserError(f"{self.name} needs <{self.target.name}>: {self.target.help}")
        return out

    def _known(self) -> str:
        return "keys: " + ", ".join(k.name + "=" for k in self.keys)


def _key_lines(command: Command) -> list[str]:
    keys = ([command.target] if command.target else []) + list(command.keys)
    if not keys:
        return []
    width = max(len(k.name) for k in keys) + 1
    lines = []
    for k in keys:
        name = f"<{k.name}>" if k is command.target else f"{k.name}="
        lines.append(f"  {name:<{width + 2}} {k.help} (default: {k.shown_default()})")
    return lines


# How every command that uses a trained network (sample, score, inspect, export) names it.
WEIGHTS_KEYS = (
    Key("run_id", "an MLflow run id (or a unique prefix of ≥ 6 hex digits)"),
    Key("checkpoint", "a checkpoint .npz file instead of a run"),
    Key("tracking_uri", "the store run_id lives in ($MLFLOW_TRACKING_URI, else ./mlflow.db)"),
    Key(
        "model_from",
        "a run's best or newest checkpoint (unset: the run's own model_from)",
        choices=("best", "last"),
    ),  # fmt: skip
)


def weights_source(args: dict[str, Any]) -> dict[str, Any]:
    """The ``WEIGHTS_KEYS`` ``args`` holds, as keywords of
    ``rnnlab.tracking.run_weights.weights_of``; UserError unless exactly one of run_id= and
    checkpoint= is given."""
    exactly_one(args, "run_id", "checkpoint")
    return {k.name: args.get(k.name) for k in WEIGHTS_KEYS}


def exactly_one(args: dict[str, Any], *names: str) -> str:
    """The one of ``names`` that ``args`` holds; UserError when none or several are given."""
    given = [n for n in names if n in args]
    if len(given) != 1:
        options = " or ".join(f"{n}=" for n in names)
        raise UserError(f"give exactly one of {options}")
    return given[0]


def call(command: Command, run: Callable[[dict[str, Any]], Any], argv: Sequence[str]) -> Any:
    """``run(command.parse(argv))`` in this process, UserError propagating: what ``main`` does
    without printing or exiting (tests and notebooks call commands this way)."""
    return run(command.parse(argv))


def main(command: Command, run: Callable[[dict[str, Any]], str | None], argv=None) -> None:
    """Run ``command``: parse ``argv`` (default sys.argv[1:]), call ``run(args)`` and print what
    it returns; exit 0, or 2 with one line for a ``UserError`` (see the module)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in command.aliases:
        import importlib

        return importlib.import_module(command.aliases[argv[0]]).main(argv[1:])
    survive_closed_output()  # `| head` ends the output, not in a traceback
    quiet_third_party(verbose_requested([]))  # $RNNLAB_VERBOSE; e.g. no 50-file download bar
    if any(a in ("-h", "--help") for a in argv):
        print(command.help())
        sys.exit(0)
    try:
        out = run(command.parse(argv))
    except UserError as e:
        print(f"rnnlab: error: {e}", file=sys.stderr)
        sys.exit(2)
    if out:
        print(out, flush=True)
    sys.exit(0)
