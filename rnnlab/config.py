"""Typed configuration: the dataclasses every run's config is made of, and the value checks.

YAML in ``conf/`` holds values; these dataclasses hold types and a one-line meaning per field
(Hydra validates the YAML against them: ``rnnlab.sweeps.compose``), so a misspelt key or a wrong
type fails while the config is composed, before any work. ``check(cfg)`` then checks values
(ranges, known names) and raises ``ConfigError`` naming the key, the bad value and what is
allowed. Each component gets its slice (``cfg.optimizer``, ``cfg.schedule`` ...). Plain
dataclasses: nothing here imports Hydra or OmegaConf, so every layer may read a ``Config``.

Not here: composing YAML and the command line (``rnnlab.sweeps.compose``), the task-specific
checks (``rnnlab.tasks``).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from rnnlab.engine import decode
from rnnlab.engine.indrnn import IndRNNConfig
from rnnlab.engine.irnn import IRNNConfig
from rnnlab.engine.lru import LRUConfig
from rnnlab.engine.optim import OPTIMIZERS
from rnnlab.engine.rnn import ACTIVATIONS, CELL_NAMES, HEADS
from rnnlab.engine.schedule import SCHEDULES, ScheduleConfig
from rnnlab.errors import UserError


class ConfigError(UserError):
    """A user-supplied value is not allowed. The message is one line, shown as is."""

    def __init__(self, key: str, value: Any, allowed: str):
        super().__init__(f"{key}={value!r} is not allowed: {allowed}")
        self.key, self.value, self.allowed = key, value, allowed


@dataclass
class TaskConfig:
    """What the shared RNN learns; the files in conf/task/ set these per task."""

    name: str = "charrnn"  # registry key: charrnn | adder | adding | copy | digits
    activation: str = "tanh"  # hidden nonlinearity: tanh | sigmoid
    # output head: xent (softmax over symbols) | mse | bce (sigmoid bits) | squared (linear output)
    loss: str = "xent"
    init: str = (
        "normal"  # weight init: normal = N(0, init_scale²) | uniform = U[-init_scale, init_scale)
    )
    init_scale: float = 0.01  # spread of the initial weights (biases start at 0)
    eval_max_pairs: int = (
        16384  # adder: full operand grid up to this many pairs, else a fixed sample
    )
    eval_bits: int | None = None  # adder: evaluate on sums of this many bits; null = seq_length
    length: int = 50  # adding: steps per sequence (T); copy: blank steps before the recall (T)
    order: str = "pixels"  # digits: pixels (one per step, T = 64) | rows (8 per step, T = 8)
    # adding, copy: held-out sequences (a fixed draw, the same for every seed); digits: held-out
    # images (a fixed stratified split of the 1,797)
    eval_size: int = 1000
    alphabet: int = 8  # copy: symbols the sequence to remember is drawn from
    copy_symbols: int = 10  # copy: symbols to remember, then recall after the delimiter


@dataclass
class OptimizerConfig:
    """Update rule and gradient clipping; the files in conf/optimizer/ set these."""

    name: str = "adagrad"  # sgd | adagrad | rmsprop | adam
    clip: float | None = 5.0  # clamp each gradient entry to [-clip, clip]; null = off
    clip_norm: float | None = None  # rescale so the global gradient norm is ≤ clip_norm; null = off
    eps: float = 1e-8  # added inside/outside the square root of adaptive methods
    rho: float = 0.9  # rmsprop: decay of the squared-gradient average
    beta1: float = 0.9  # adam: decay of the first moment
    beta2: float = 0.999  # adam: decay of the second moment
    weight_decay: float = 0.0  # decoupled (AdamW-style): param -= lr · weight_decay · param


@dataclass
class DataConfig:
    """Which text the char-RNN reads (the adder makes its own data)."""

    name: str = "kafka"  # corpus name: data/<name>.txt, or downloaded if rnnlab knows its source
    path: str | None = None  # any UTF-8 text file; wins over name
    url: str | None = None  # where to download data/<name>.txt from when it is missing
    val_fraction: float = 0.1  # the last fraction of the text held out for val/loss
    test_fraction: float = 0.0  # cut after val for test/loss (scored once, best weights); 0 = none
    strip_gutenberg: bool = True  # drop a Project Gutenberg header/footer (the licence) if present


@dataclass
class EarlyStopConfig:
    """Stop when the objective stops improving (evaluated every eval_every iterations)."""

    patience: int = 0  # evaluations without an improvement of at least min_delta; 0 = off
    min_delta: float = 0.0  # the smallest decrease of the objective that counts as improving
    # stop at the first evaluation that meets the task's "solved" criterion (adding:
    # val/solved_frac ≥ 0.95, copy: val/copy_acc ≥ 0.95; rnnlab.tasks.judging.Judged.solved)
    solved: bool = False


@dataclass
class TrackingConfig:
    """Where and how often runs are recorded in MLflow."""

    uri: str | None = None  # null: $MLFLOW_TRACKING_URI, else sqlite:///<launch dir>/mlflow.db
    enabled: bool = True  # false: train without recording anything (benchmarks, notebooks)
    flush_points: int = 1000  # send buffered metric points once this many are waiting
    flush_seconds: float = 15.0  # ... or once the oldest has waited this long
    # a store refusing writes this long stops the run (stop checkpoint; the rest is journaled)
    retry_seconds: float = 60.0


@dataclass
class Config:
    """One training run. Top-level keys are the ones sweeps vary."""

    task: TaskConfig = field(default_factory=TaskConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    early_stop: EarlyStopConfig = field(default_factory=EarlyStopConfig)

    irnn: IRNNConfig = field(default_factory=IRNNConfig)  # cell=irnn's initialisation
    indrnn: IndRNNConfig = field(default_factory=IndRNNConfig)  # cell=indrnn's bound on |u|
    lru: LRUConfig = field(default_factory=LRUConfig)  # cell=lru's ring of eigenvalues

    # recurrent cell: rnn (min-char-rnn's) | gru | lstm (PyTorch's equations) | irnn | indrnn |
    # mingru | minlstm | lru (their papers' equations; docs/cells.md)
    cell: str = "rnn"
    scan: bool = True  # mingru, minlstm, lru: the window's recurrence by a scan (false: per step)
    layers: int = 1  # stacked recurrent layers; layer k > 0 reads layer k-1's h
    dropout: float = 0.0  # inverted dropout on each layer's output while training, in [0, 1)
    hidden_size: int = 100  # units per recurrent layer
    seq_length: int = 25  # char-RNN: BPTT window in characters; adder: bits (others: task.*)
    learning_rate: float = 0.1  # optimizer step size
    seed: int = 0  # seeds weights, data order and samples (separate streams)
    iterations: int = 100_000  # parameter updates to run
    batch_size: int = 1  # independent streams per update (B); 1 is the seeds' algorithm
    dtype: str = "float64"  # float64 | float32
    # BLAS threads for this run's matrix products (0: the library's default). The matrices are
    # small, so more threads mostly wait on each other: 2 threads ran 8-23x slower here.
    blas_threads: int = 1
    experiment_name: str | None = None  # MLflow experiment; null: the task name

    log_every: int = 100  # iterations between train/* and perf/* points and progress lines
    eval_every: int = 1000  # iterations between val/* evaluations
    sample_every: int = 1000  # iterations between logged samples
    sample_length: int = 200  # characters per char-RNN sample
    temperature: float = 1.0  # sampling temperature (< 1 sharper, > 1 flatter)
    prime: str = ""  # text fed to the model before sampling; "" = the corpus's first character
    checkpoint_every: int = 10_000  # iterations between checkpoints (one more at the end)
    divergence_factor: float = (
        10.0  # stop as diverged when a window's loss exceeds this × its start
    )
    resume: str | None = None  # a run id or checkpoint path to continue from
    # What sweeps, searches, the best checkpoint and early stopping minimise; null = the task's
    # default (char-RNN: val/loss_warm, adder: val/exact_acc maximised, adding: val/mse, copy:
    # val/loss, digits: val/acc maximised); rnnlab/tasks/judging.py.
    objective: str | None = None
    eval_burn_in: int = 1000  # char-RNN: training characters read before val/loss_warm's text
    model_from: str = "best"  # best | last: the weights the logged model, sample and score use
    top_k: int = 0  # training-time samples: draw among the k likeliest characters; 0 = all
    top_p: float = 1.0  # training-time samples: nucleus, the smallest set with this much mass
    greedy: bool = False  # training-time samples: always the likeliest character
    beam: int = 0  # training-time samples: beam search of this width; 0 = sampling
    diagnostics: bool = True  # gradient flow, spectra, saturation, update ratios under diag/
    diag_every: int | None = None  # iterations between diagnostics; null: eval_every
    diag_window: int = 100  # steps of the fixed probe window the gradient flow is measured on
    verbose: bool = False  # every progress line and every third-party warning (rnnlab.quiet)


def flatten_dict(node: dict, prefix: str = "") -> dict[str, Any]:
    """{"task": {"name": "charrnn"}} → {"task.name": "charrnn"}."""
    out: dict[str, Any] = {}
    for k, v in node.items():
        if isinstance(v, dict):
            out |= flatten_dict(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def flatten(cfg: Config) -> dict[str, Any]:
    """{"task.name": "charrnn", "hidden_size": 100, ...} — the shape MLflow params take."""
    return flatten_dict(dataclasses.asdict(cfg))


def to_yaml(cfg: Config) -> str:
    """The whole config as YAML, in the schema's order (what a run records as config.yaml)."""
    import yaml

    return yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False, allow_unicode=True)


def field_types(cls: type = None, prefix: str = "") -> dict[str, Any]:
    """{"task.name": str, "diag_every": int | None, ...}: every flat key's annotation."""
    cls = cls or Config
    out: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            out |= field_types(hint, f"{prefix}{f.name}.")
        else:
            out[f"{prefix}{f.name}"] = hint
    return out


def _typed(key: str, value: Any, hint: Any) -> Any:
    """``value`` if it has the type ``hint`` allows (an int is a float too); else ValueError."""
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in args:
        return None
    for kind in args:
        if kind is bool and isinstance(value, bool):
            return value
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if kind is str and isinstance(value, str):
            return value
    shown = " | ".join(getattr(a, "__name__", str(a)) for a in args)
    raise ValueError(f"{key}={value!r} is not of type {shown}")


def from_flat(flat: dict[str, Any]) -> Config:
    """A flat dict (a checkpoint's config, MLflow-style keys) → the typed Config. Keys rnnlab no
    longer has are dropped, keys it gained take their defaults; ValueError (one line) for a value
    of the wrong type."""
    cfg = Config()
    types_of = field_types()
    for key, value in flat.items():
        if key not in types_of:
            continue
        *parents, leaf = key.split(".")
        node = cfg
        for name in parents:
            node = getattr(node, name)
        setattr(node, leaf, _typed(key, value, types_of[key]))
    return cfg


# --- value checks ---------------------------------------------------------------------------------

DTYPES = ("float64", "float32")


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(key, value, allowed)


def _positive_int(cfg: Config, key: str) -> None:
    value = cfg
    for part in key.split("."):
        value = getattr(value, part)
    _require(value >= 1, key, value, "an integer ≥ 1")


def _positive_finite(key: str, value: float | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    _require(
        value is not None and math.isfinite(value) and value > 0,
        key,
        value,
        "a finite number > 0" + (" (or null for off)" if allow_none else ""),
    )


def check(cfg: Config) -> None:
    """Check every value that composition cannot, except the task's (``rnnlab.tasks.check``
    calls this, then the objective and the task's own); raise ConfigError on the first bad one."""
    _require(cfg.cell in CELL_NAMES, "cell", cfg.cell, "one of " + ", ".join(CELL_NAMES))
    _require(0.0 <= cfg.dropout < 1.0, "dropout", cfg.dropout, "a number in [0, 1)")
    _check_cells(cfg)
    for key in ("layers", "hidden_size", "seq_length", "iterations", "batch_size", "log_every",
                "eval_every", "sample_every", "sample_length", "checkpoint_every",
                "task.eval_max_pairs", "tracking.flush_points", "task.length", "task.eval_size",
                "task.copy_symbols"):  # fmt: skip
        _positive_int(cfg, key)
    _require(cfg.task.alphabet >= 2, "task.alphabet", cfg.task.alphabet, "an integer ≥ 2")
    _require(cfg.task.order in ("pixels", "rows"), "task.order", cfg.task.order, "pixels or rows")
    _require(cfg.diag_every is None or cfg.diag_every >= 1, "diag_every", cfg.diag_every,
             "an integer ≥ 1 or null (the evaluation cadence)")  # fmt: skip
    _require(cfg.diag_window >= 2, "diag_window", cfg.diag_window, "an integer ≥ 2")
    _require(cfg.blas_threads >= 0, "blas_threads", cfg.blas_threads, "an integer ≥ 0")
    _require(cfg.seed >= 0, "seed", cfg.seed, "an integer ≥ 0")  # numpy's SeedSequence
    _positive_finite("learning_rate", cfg.learning_rate)
    _positive_finite("temperature", cfg.temperature)
    _positive_finite("task.init_scale", cfg.task.init_scale)
    _positive_finite("divergence_factor", cfg.divergence_factor)
    _positive_finite("tracking.flush_seconds", cfg.tracking.flush_seconds)
    _positive_finite("optimizer.clip", cfg.optimizer.clip, allow_none=True)
    _positive_finite("optimizer.clip_norm", cfg.optimizer.clip_norm, allow_none=True)
    _positive_finite("optimizer.eps", cfg.optimizer.eps)
    for key in ("rho", "beta1", "beta2"):
        value = getattr(cfg.optimizer, key)
        _require(0.0 <= value < 1.0, f"optimizer.{key}", value, "a number in [0, 1)")
    _require(cfg.dtype in DTYPES, "dtype", cfg.dtype, "one of " + ", ".join(DTYPES))
    _require(
        cfg.optimizer.name in OPTIMIZERS,
        "optimizer.name",
        cfg.optimizer.name,
        "one of " + ", ".join(OPTIMIZERS),
    )
    _require(
        cfg.task.activation in ACTIVATIONS,
        "task.activation",
        cfg.task.activation,
        "one of " + ", ".join(ACTIVATIONS),
    )
    _require(cfg.task.loss in HEADS, "task.loss", cfg.task.loss, "one of " + ", ".join(HEADS))
    _require(
        cfg.task.init in ("normal", "uniform"), "task.init", cfg.task.init, "normal or uniform"
    )
    _require(
        0.0 < cfg.data.val_fraction < 1.0,
        "data.val_fraction",
        cfg.data.val_fraction,
        "a number between 0 and 1 (exclusive)",
    )
    _check_evaluation(cfg)
    _check_schedule(cfg)
    bad = decode.problem(cfg.top_k, cfg.top_p, cfg.greedy, cfg.beam)
    if bad is not None:
        raise ConfigError(*bad)
    # task.name, the objective and the task's own checks: rnnlab.tasks.check (the tasks import
    # this module)


def _check_cells(cfg: Config) -> None:
    """irnn.*, indrnn.* and lru.* (checked whatever the cell, so a sweep fails before any run)."""
    _positive_finite("irnn.identity_scale", cfg.irnn.identity_scale)
    h = cfg.indrnn.horizon
    _require(h is None or h >= 1, "indrnn.horizon", h, "an integer ≥ 1 or null (BPTT's window)")
    m = cfg.indrnn.magnitude
    _require(math.isfinite(m) and m >= 1.0, "indrnn.magnitude", m, "a finite number ≥ 1")
    o = cfg.lru
    _require(0.0 <= o.r_min < 1.0, "lru.r_min", o.r_min, "a number in [0, 1)")
    _require(o.r_min < o.r_max <= 1.0, "lru.r_max", o.r_max, f"a number in (r_min={o.r_min:g}, 1]")
    _positive_finite("lru.max_phase", o.max_phase)


def _check_evaluation(cfg: Config) -> None:
    """eval_burn_in, model_from, early_stop.* and data.test_fraction."""
    _require(cfg.eval_burn_in >= 0, "eval_burn_in", cfg.eval_burn_in, "an integer ≥ 0")
    _require(cfg.model_from in ("best", "last"), "model_from", cfg.model_from, "best or last")
    stop = cfg.early_stop
    _require(stop.patience >= 0, "early_stop.patience", stop.patience, "an integer ≥ 0")
    _require(math.isfinite(stop.min_delta) and stop.min_delta >= 0, "early_stop.min_delta",
             stop.min_delta, "a number ≥ 0")  # fmt: skip
    test, val = cfg.data.test_fraction, cfg.data.val_fraction
    allowed = f"a number ≥ 0 with val_fraction + test_fraction < 1 (val_fraction={val})"
    _require(0.0 <= test < 1.0 and test + val < 1.0, "data.test_fraction", test, allowed)


def _check_schedule(cfg: Config) -> None:
    """schedule.* (the formulas: rnnlab.engine.schedule) and optimizer.weight_decay."""
    c = cfg.schedule
    _require(c.name in SCHEDULES, "schedule.name", c.name, "one of " + ", ".join(SCHEDULES))
    _require(c.step_size >= 1, "schedule.step_size", c.step_size, "an integer ≥ 1")
    _require(c.warmup >= 0, "schedule.warmup", c.warmup, "an integer ≥ 0")
    _require(c.plateau_patience >= 1, "schedule.plateau_patience", c.plateau_patience,
             "an integer ≥ 1")  # fmt: skip
    for key in ("gamma", "decay_rate", "plateau_factor"):
        v = getattr(c, key)
        _require(math.isfinite(v) and 0.0 < v <= 1.0, f"schedule.{key}", v, "a number in (0, 1]")
    _require(math.isfinite(c.min_lr) and 0.0 <= c.min_lr <= cfg.learning_rate, "schedule.min_lr",
             c.min_lr, f"a number in [0, learning_rate={cfg.learning_rate:g}]")  # fmt: skip
    wd = cfg.optimizer.weight_decay
    _require(math.isfinite(wd) and wd >= 0.0, "optimizer.weight_decay", wd, "a finite number ≥ 0")
