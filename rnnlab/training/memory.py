"""How much memory a run needs at its peak, from what the engine will build — and the guard that
refuses a run that cannot fit, before anything is allocated or recorded.

The estimate reads the same ``rnn.Spec`` the engine trains (cell, layers, hidden size) and the
same parameter shapes (``rnn.param_shapes``), the optimizer's memories, the batch, and the
corpus as it will be held (its characters as text and as symbol ids). Its parts, largest
arrays counted the way the code holds them at once during training:

- **libraries**: the interpreter with numpy, Hydra and (tracked) MLflow loaded, plus numba and
  SciPy where a gated layer runs compiled (B > 1) — measured on this machine, see
  ``LIBRARIES``;
- **parameters**: P numbers for the weights, their gradient, the optimizer's memories, the
  best weights so far, a checkpoint's copy of the memories, and, with diagnostics on, the
  trial step's weights, gradient and memories;
- **window**: one training window's activations, T·B per layer of every gate and state, forward
  and backward, plus the logits, probabilities and their gradient, T·B·V each;
- **evaluation**: one chunk of the held-out text (``charrnn.CHUNK`` steps at B = 1);
- **corpus** (char-RNN): its text (1, 2 or 4 bytes a character, by its widest character) and
  its symbol ids (8 bytes a character), plus one chunk being encoded.

``tests/e2e/test_memory_estimate.py`` holds it within ±30% of the peak RSS of real runs
(vanilla, GRU, LSTM × 1 and 2 layers × two corpus sizes). ``check`` compares it with what this
process may still allocate (MemAvailable, or a smaller cgroup limit) and raises a one-line
``UserError``; the CLI's preflight and every job before it opens a run (a sweeper's proposal
included) call it.

Not here: the engine's arrays themselves (``rnnlab.engine.rnn``), the CLI (``rnnlab.sweeps.
preflight``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rnnlab.config import Config
from rnnlab.engine import rnn
from rnnlab.engine.optim import OPTIMIZERS
from rnnlab.errors import UserError

MB = 1_000_000
# The process before any array of the run: Python with numpy, Hydra, the rnnlab modules, and
# with tracking MLflow, SQLAlchemy and pandas; numba and SciPy's BLAS where gated layers run
# compiled. Measured as the peak RSS of 2-iteration runs of a 16-unit network (2026-12-07,
# this machine; tests/e2e/test_memory_estimate.py prints today's).
LIBRARIES = {"untracked": 205 * MB, "tracked": 300 * MB, "compiled": 110 * MB}
ENCODE_CHUNK = 1 << 20  # rnnlab.tasks.charrnn.ENCODE_CHUNK: characters encoded at a time
EVAL_CHUNK = 1000  # rnnlab.tasks.charrnn.CHUNK: steps per forward call when scoring


@dataclass(frozen=True)
class Corpus:
    """What the estimate needs of a char-RNN's text."""

    chars: int  # characters after Gutenberg stripping
    width: int  # bytes per character in memory: 1, 2 or 4 (its widest character)
    vocab: int  # distinct characters

    @classmethod
    def of(cls, text: str) -> Corpus:
        widest = max(map(ord, set(text))) if text else 0
        width = 1 if widest < 256 else 2 if widest < 65536 else 4
        return cls(len(text), width, len(set(text)))


@dataclass(frozen=True)
class Estimate:
    """Bytes a run needs at its peak, by part."""

    libraries: int
    parameters: int
    window: int
    evaluation: int
    corpus: int

    @property
    def total(self) -> int:
        return self.libraries + self.parameters + self.window + self.evaluation + self.corpus

    def largest(self) -> str:
        parts = {"parameters": self.parameters, "window activations": self.window,
                 "corpus": self.corpus, "evaluation": self.evaluation}  # fmt: skip
        return max(parts, key=parts.__getitem__)


def sizes(cfg: Config, corpus: Corpus | None) -> tuple[int, int, int]:
    """(inputs, outputs, steps per window) of the network: the char-RNN's vocabulary twice and
    ``seq_length``; a task that makes its own data knows its shape (``shape``)."""
    if cfg.task.name == "charrnn":
        assert corpus is not None, "a char-RNN's estimate needs its corpus"
        return corpus.vocab, corpus.vocab, cfg.seq_length
    from rnnlab.tasks import TASKS

    return TASKS[cfg.task.name].shape(cfg)


def estimate(cfg: Config, corpus: Corpus | None = None) -> Estimate:
    """The run ``cfg`` describes at its peak (``corpus``: the char-RNN's text, see ``Corpus``)."""
    spec = rnn.spec_of(cfg)
    inputs, outputs, steps = sizes(cfg, corpus)
    itemsize = 4 if cfg.dtype == "float32" else 8
    P = sum(
        math.prod(s) for s in rnn.param_shapes(inputs, spec.hidden_size, outputs, spec).values()
    )
    memories = len(OPTIMIZERS[cfg.optimizer.name].memory_names)
    # θ, ∇θ, memories, best weights, a checkpoint's copy of the memories; diagnostics' trial
    # step: a copy of θ and of ∇θ, and its own memories
    copies = 3 + 2 * memories + ((2 + memories) if cfg.diagnostics else 0)
    H, L, T, B = spec.hidden_size, spec.layers, steps, cfg.batch_size
    # K: input projections per unit (rows of W_hh per unit for the classic cells; a
    # CellType's input_rows for the cells after them: their gates read x_t only)
    K = rnn.TYPED[spec.cell].input_rows if spec.cell in rnn.TYPED else rnn.GATES[spec.cell]
    S = spec.state_size
    forward = L * H * (K + S + 1)  # a step's forward record: gates, states, the output
    # a training window: its forward record, the backward pass's gate and state gradients,
    # the logits, probabilities and their gradient
    window = T * B * (forward + L * H * (K + 1) + 3 * outputs)
    evaluation = EVAL_CHUNK * (forward + 3 * outputs)  # one chunk's record, one pass at a time
    library = LIBRARIES["tracked" if cfg.tracking.enabled else "untracked"]
    if spec.cell != "rnn" and cfg.batch_size > 1:
        library += LIBRARIES["compiled"]
    text = 0
    if corpus is not None:  # the text, its ids, one chunk's code points and ids being encoded
        text = corpus.chars * (corpus.width + 8) + min(corpus.chars, ENCODE_CHUNK) * 16
    return Estimate(
        libraries=library,
        parameters=copies * P * itemsize,
        window=window * itemsize,
        evaluation=evaluation * itemsize,
        corpus=text,
    )


def available() -> int | None:
    """Bytes this process may still allocate: MemAvailable, or a smaller cgroup limit."""
    found = []
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    try:
        limit = open("/sys/fs/cgroup/memory.max").read().strip()
        if limit.isdigit():
            found.append(int(limit))
    except OSError:
        pass
    return min(found) if found else None


def readable(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"


def check(cfg: Config, corpus: Corpus | None = None, have: int | None = None) -> Estimate:
    """Refuse (UserError, one line) a run whose estimated peak exceeds ``have`` (default: what
    this process may still allocate); returns the estimate. A char-RNN's corpus is read when
    not given."""
    if corpus is None and cfg.task.name == "charrnn":
        from rnnlab.tasks.charrnn import load_corpus

        corpus = Corpus.of(load_corpus(cfg)[0])
    need = estimate(cfg, corpus)
    have = available() if have is None else have
    if have is not None and need.total > have:
        what = f"cell={cfg.cell} layers={cfg.layers} hidden_size={cfg.hidden_size}"
        what += f" batch_size={cfg.batch_size}, {sizes(cfg, corpus)[2]} steps per window"
        if corpus is not None:
            what += f", a corpus of {corpus.chars:,} characters"
        raise UserError(
            f"{what} needs about {readable(need.total)} of memory (most of it "
            f"{need.largest()}); {readable(have)} is available"
        )
    return need
