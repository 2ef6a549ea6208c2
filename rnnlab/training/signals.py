"""SIGINT and SIGTERM as stop requests, and the shield under which a store write completes.

Invariants, enforced here:

- *Signals never drop data:* while a ``shielded()`` block runs — every write of the tracker to
  the store is one — no signal raises anything. Together with the tracker's rule that points
  leave its buffer only after the store accepted them, any sequence of SIGINT/SIGTERM leaves
  every point the loop handed over either in the store or still in the buffer for the job's
  closing flush.
- *A stop always checkpoints:* a signal never raises in the middle of training's state changes.
  The first SIGINT or SIGTERM is a request the training loop honours after a whole iteration
  (it then writes its stop checkpoint); a second SIGINT raises ``KeyboardInterrupt`` only inside
  an ``interruptible()`` block — the evaluation, which changes no training state, so the loop
  can skip the rest of it and still write its stop checkpoint at once. Anywhere else (a step,
  the checkpoint itself, a job closing its run) more signals are only recorded; after the run
  is closed, ``held()`` raises them once the store calls in flight are done.

Signal handlers are process-wide, so the state here is too (one ``_Stop``). Not here: what a
stop means for a run's status (``rnnlab.tracking.job``), the loop's stop path
(``rnnlab.training.loop``).
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field

# SIGUSR2: SLURM's (submitit's) warning before a time limit or preemption (rnnlab.sweeps.requeue)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)


@dataclass
class _Stop:
    requests: list[str] = field(default_factory=list)  # signal names (or reasons), in order
    installed: int = 0  # nesting depth of stop_on_signals blocks
    hard: int = 0  # nesting depth of blocks whose interruptible() parts a second SIGINT stops
    interruptible: int = 0  # nesting depth of interruptible() blocks
    shield: int = 0  # nesting depth of shielded() blocks
    pending_interrupt: bool = False  # a second SIGINT that arrived inside a shield
    outer: dict = field(default_factory=dict)  # signal → the handler stop_on_signals replaced


_stop = _Stop()


def _handler(signum, frame) -> None:
    repeated = bool(_stop.requests)
    _stop.requests.append(signal.Signals(signum).name)
    if repeated and signum == signal.SIGINT and _stop.hard and _stop.interruptible:
        if _stop.shield:
            _stop.pending_interrupt = True
        else:
            raise KeyboardInterrupt


@contextmanager
def stop_on_signals(hard_interrupt: bool = True):
    """Yield the list of stop requests (empty until a signal or ``request_stop``). Nested
    blocks share one list; ``hard_interrupt``: a second SIGINT inside an ``interruptible()``
    part of the block raises ``KeyboardInterrupt``."""
    main = threading.current_thread() is threading.main_thread()
    previous = {}
    if main and _stop.installed == 0:
        previous = {s: signal.signal(s, _handler) for s in STOP_SIGNALS}
        _stop.outer = dict(previous)
    _stop.installed += 1
    _stop.hard += hard_interrupt
    try:
        yield _stop.requests
    finally:
        _stop.hard -= hard_interrupt
        _stop.installed -= 1
        if _stop.installed == 0:
            for s, h in previous.items():
                signal.signal(s, h)
            _stop.requests.clear()
            _stop.pending_interrupt = False
            _stop.outer = {}


@contextmanager
def held():
    """Hold SIGINT/SIGTERM over store calls that follow a closed run (its closing lines, a
    sweep's parent being closed): a signal meanwhile is recorded, and raised as
    ``KeyboardInterrupt`` once the block is done — never inside a database call, where
    SQLAlchemy would log the interrupted cursor's traceback and the block would stop half-way.
    Only a signal that arrives inside the block is raised; an enclosing block's requests are
    its own."""
    with stop_on_signals(hard_interrupt=False) as requests:
        before = len(requests)
        yield
        late = requests[before:]
    if late:
        raise KeyboardInterrupt(late[0])


def outer_handler(signum: int):
    """The handler of ``signum`` from before the outermost ``stop_on_signals`` block (e.g.
    submitit's SIGUSR2 handler, which requeues the job): inside the block the process-wide
    handler is this module's own, so ``signal.getsignal`` would return that."""
    return _stop.outer.get(signum, signal.getsignal(signum))


def request_stop(reason: str) -> None:
    """Ask the loop to stop as a signal would (e.g. the store has been unreachable too long)."""
    _stop.requests.append(reason)


def stop_requested() -> str | None:
    """The first stop request of the current job, if any."""
    return _stop.requests[0] if _stop.requests else None


@contextmanager
def interruptible():
    """A part of the loop a second SIGINT may cut short (``KeyboardInterrupt``): work whose
    result can be dropped without leaving training's state half-changed (an evaluation)."""
    _stop.interruptible += 1
    try:
        yield
    finally:
        _stop.interruptible -= 1


@contextmanager
def shielded():
    """Run a block that no signal may cut in half (see the module's invariant)."""
    _stop.shield += 1
    try:
        yield
    finally:
        _stop.shield -= 1
        if _stop.shield == 0 and _stop.pending_interrupt:
            _stop.pending_interrupt = False
            if _stop.hard and _stop.interruptible:
                raise KeyboardInterrupt
