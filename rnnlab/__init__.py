"""rnnlab: a research harness for small recurrent networks in numpy.

Only the commands run with ``python -m``: any other module (``python -m rnnlab``, ``python -m
rnnlab.config``, ``python -m rnnlab.training.loop`` …) would import, do nothing and exit 0 —
a command that seems to succeed and writes nothing. Python imports this package before it runs
a module of it, so the check lives here: one line naming the commands, exit code 2.
"""

import sys

__version__ = "0.1.0"

# What ``python -m`` may run (each has a __main__ block or __main__.py; tests/unit/
# test_commands.py checks the list against the source).
COMMANDS = (
    "rnnlab.run", "rnnlab.sample", "rnnlab.score", "rnnlab.inspect", "rnnlab.export",
    "rnnlab.model", "rnnlab.sync", "rnnlab.report", "rnnlab.bench", "rnnlab.bench.sweeps",
    "rnnlab.cluster",
)  # fmt: skip


def module_being_run(argv: list[str] | None = None) -> str | None:
    """The module ``python -m <name>`` is about to run, while Python imports its package (it
    sets ``sys.argv[0]`` to ``-m`` until the module is found); None otherwise."""
    if argv is None:
        if sys.argv[:1] != ["-m"]:
            return None
        argv = list(getattr(sys, "orig_argv", []))
    for i, arg in enumerate(argv[1:], start=1):
        if arg == "-m":
            return argv[i + 1] if i + 1 < len(argv) else None
        if arg.startswith("-m"):
            return arg[2:]
    return None


def refusal(name: str | None) -> str | None:
    """The one line for ``python -m name`` when ``name`` is an rnnlab module but no command."""
    if name is None or not (name == "rnnlab" or name.startswith("rnnlab.")) or name in COMMANDS:
        return None
    shown = ", ".join(f"python -m {c}" for c in COMMANDS)
    return f"rnnlab: error: python -m {name} is not a command; the commands: {shown}"


if (_line := refusal(module_being_run())) is not None:
    print(_line, file=sys.stderr)
    raise SystemExit(2)
