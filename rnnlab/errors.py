"""The one kind of error a person is shown as is: ``UserError``, a mistake in one line.

Every command prints a ``UserError`` as ``rnnlab: error: <message>`` and exits with code 2,
before any work (``rnnlab.cli``). The layers raise it, or a subclass naming what was wrong
(``ConfigError``, ``CheckpointError``, ``StoreError`` ...), with a message that names the value
and what is allowed; anything else escaping a command is a bug, shown with its traceback.
"""


class UserError(ValueError):
    """A user's mistake, described in one line that names the value and what is allowed."""
