"""What a run is judged by: held-out scoring from a zero and a warm state, the objective, the
best checkpoint and early stopping.

A held-out text is scored as one stream (``stream_loss``): every character but the first is
predicted from all before it, the hidden state carried across chunks. ``val/loss`` starts that
stream from h = 0; ``val/loss_warm`` starts from the state training carries (stream 0's, at the
evaluation) and first reads a burn-in (the last ``eval_burn_in`` characters of the training
text, which the held-out text follows), so its state is one the network produces itself. A
burn-in from h = 0 is not enough: the kafka seed that scores 7.56 from h = 0 still scores 7.56
after 1,000 characters read from h = 0 (the burn-in falls into the same saturation), and 2.0
from the carried state. Both numbers predict the same characters, so they differ only by where
the state starts; when they differ by more than ``DISAGREEMENT`` the run is flagged.

``objective`` (config) names the metric sweeps, searches, the best checkpoint, plateau and
early stopping minimise, one of those its task declares (``Judged``: each task's ``JUDGED``).
Not here: the training loop (``rnnlab.training.loop``), the tasks' data (``rnnlab.tasks``), MLflow
(``rnnlab.score`` and ``rnnlab.sample`` fetch weights).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnlab.config import Config, ConfigError
from rnnlab.engine import rnn
from rnnlab.training import checkpoint

CHUNK = 1000  # characters per forward call when scoring (bounds the (T, 1, V) logits)
DISAGREEMENT = 0.25  # flag a run whose val/loss and val/loss_warm differ by more than this
BEST_FILE = "best.npz"  # checkpoints/best.npz: the weights of the best evaluation so far


@dataclass(frozen=True)
class Judged:
    """How a task's runs are judged, declared once by the task (``TASKS[name].JUDGED``) and read
    by everything that ranks or summarises runs (training's best checkpoint and early stopping,
    searches, the report, leaderboards, benchmarks, the model registry). This module resolves
    the ``objective`` config key against it; nothing else recomputes an objective."""

    objectives: dict[str, bool]  # the val/* metrics ``objective`` may name → maximised?
    default: str  # the objective when ``objective`` is null
    legacy: str  # what runs recorded before the ``objective`` key minimised (no such param)
    # (runs.csv column, axis label, higher is better): what tables, figures and closing lines
    # lead with
    headline: tuple[tuple[str, str, bool], ...]

    def name(self, objective: str | None) -> str:
        """The metric a run with ``objective`` (the config key) minimises."""
        return objective or self.default

    def value(self, name: str, metrics: dict[str, float]) -> float:
        """The number to minimise, from one evaluation's metrics (KeyError if it lacks it);
        maximised metrics are minimised as 1 − value."""
        value = metrics[name]
        return 1.0 - value if self.objectives[name] else value

    def of_run(self, run) -> str:
        """The objective a recorded MLflow run minimised: its ``objective`` param, the default
        when that is null, the legacy objective when the run predates the key."""
        if "objective" not in run.data.params:
            return self.legacy
        name = run.data.params["objective"]
        return name if name in self.objectives else self.default

    def final(self, run) -> float:
        """The final value of the objective a recorded run minimised (NaN when it has none)."""
        name = self.of_run(run)
        final = {name: run.data.metrics.get("final/" + metric_key(name), math.nan)}
        return self.value(name, final)

    def label(self, run_or_name) -> str:
        """An axis label for the objective: ``objective: 1 − val/exact_acc``."""
        name = run_or_name if isinstance(run_or_name, str) else self.of_run(run_or_name)
        return f"objective: {'1 − ' if self.objectives[name] else ''}{name}"


def metric_key(name: str) -> str:
    """``val/loss_warm`` → ``val_loss_warm``: the suffix of final/… and best/… metrics."""
    return name.replace("/", "_")


def check(cfg: Config, judged: Judged) -> None:
    """ConfigError for the first bad objective (``judged``: the task's), eval_burn_in,
    model_from, early_stop.* or data.test_fraction value."""
    task = cfg.task.name
    if cfg.objective is not None:
        allowed = list(judged.objectives)
        if cfg.objective not in allowed:
            raise ConfigError("objective", cfg.objective, f"for {task}: {', '.join(allowed)}")
    if cfg.eval_burn_in < 0:
        raise ConfigError("eval_burn_in", cfg.eval_burn_in, "an integer ≥ 0")
    if cfg.model_from not in ("best", "last"):
        raise ConfigError("model_from", cfg.model_from, "best or last")
    if cfg.early_stop.patience < 0:
        raise ConfigError("early_stop.patience", cfg.early_stop.patience, "an integer ≥ 0")
    if not (math.isfinite(cfg.early_stop.min_delta) and cfg.early_stop.min_delta >= 0):
        raise ConfigError("early_stop.min_delta", cfg.early_stop.min_delta, "a number ≥ 0")
    test, val = cfg.data.test_fraction, cfg.data.val_fraction
    if not (0.0 <= test < 1.0 and test + val < 1.0):
        raise ConfigError(
            "data.test_fraction", test, f"a number ≥ 0 with val_fraction + test_fraction < 1 "
            f"(val_fraction={val})"
        )  # fmt: skip


# --- scoring a stream ----------------------------------------------------------------------------


def zero_state(params: rnn.Params, spec: rnn.Spec | str, batch: int = 1) -> np.ndarray:
    """The all-zero state of ``batch`` streams: (L, S, B, H), h (and c) of every layer."""
    return rnn.zero_state(rnn.as_spec(spec, params), batch, params["Why"].dtype)


def run(params: rnn.Params, spec: rnn.Spec | str, xs: np.ndarray, h: np.ndarray, observe=None):
    """(logits (T, 1, V), state after xs) — the one call into the engine's forward.
    ``observe(fwd)``, when given, sees each forward record (the diagnostics count saturation
    on the validation pass itself instead of reading the text again)."""
    fwd = rnn.forward(params, xs, h, spec)
    if observe is not None:
        observe(fwd)
    return fwd.logits, fwd.carry


def read(params: rnn.Params, spec: rnn.Spec | str, ids: np.ndarray, h: np.ndarray) -> np.ndarray:
    """The state after reading ``ids`` (N,) from ``h``, chunk by chunk."""
    for start in range(0, len(ids), CHUNK):
        _, h = run(params, spec, ids[start : start + CHUNK, None], h)
    return h


def stream_loss(
    params: rnn.Params, spec: rnn.Spec | str, ids: np.ndarray, h: np.ndarray, observe=None
) -> tuple[float, int]:
    """(total nats, characters predicted) for ids[1:] given everything before, read as one
    stream from state ``h``; logits in float64 whatever the model's dtype."""
    total, count = 0.0, 0
    for start in range(0, len(ids) - 1, CHUNK):
        xs = ids[start : start + CHUNK][:, None]  # (T, 1)
        ys = ids[start + 1 : start + CHUNK + 1][:, None]
        xs = xs[: len(ys)]
        logits, h = run(params, spec, xs, h, observe)
        loss, _ = rnn.softmax_xent(logits.astype(np.float64), ys)
        total, count = total + float(loss[0]), count + len(ys)
    return total, count


def burn_in_text(train_data: np.ndarray, eval_burn_in: int) -> np.ndarray:
    """The burn-in ``val/loss_warm`` (and the diagnostics' warm pass) read before the held-out
    text: the last ``eval_burn_in`` characters of the training text (which the val text follows)."""
    return train_data[max(0, len(train_data) - eval_burn_in) :]


def char_metrics(
    params: rnn.Params,
    spec: rnn.Spec | str,
    ids: np.ndarray,
    burn_in: np.ndarray | None,
    prefix: str = "val",
    warm_start: np.ndarray | None = None,
    observe=None,
) -> dict[str, float]:
    """``<prefix>/loss`` and ``/bpc`` from h = 0; with a burn-in, ``/loss_warm`` and
    ``/bpc_warm`` from the state after reading it from ``warm_start`` (None: h = 0). Nats and
    bits per character. ``observe(label, fwd)`` sees the forward records of both passes over
    the held-out text (label "" and "_warm")."""
    seen = {k: (lambda fwd, k=k: observe(k, fwd)) if observe else None for k in ("", "_warm")}
    total, count = stream_loss(params, spec, ids, zero_state(params, spec), seen[""])
    nats = total / count
    out = {f"{prefix}/loss": nats, f"{prefix}/bpc": nats / math.log(2.0)}
    if burn_in is not None:
        start = zero_state(params, spec) if warm_start is None else warm_start
        warm = read(params, spec, burn_in, start)
        total, count = stream_loss(params, spec, ids, warm, seen["_warm"])
        out[f"{prefix}/loss_warm"] = total / count
        out[f"{prefix}/bpc_warm"] = total / count / math.log(2.0)
    return out


# --- flags ---------------------------------------------------------------------------------------


def disagreement(metrics: dict[str, float], prefix: str = "val/") -> float | None:
    """|zero − warm| / min(zero, warm) of the loss, or None when either is missing."""
    cold, warm = metrics.get(prefix + "loss"), metrics.get(prefix + "loss_warm")
    if cold is None or warm is None or min(cold, warm) <= 0:
        return None
    return abs(cold - warm) / min(cold, warm)


def flagged(metrics: dict[str, float], prefix: str = "val/") -> bool:
    d = disagreement(metrics, prefix)
    return d is not None and d > DISAGREEMENT


def closing_note(final: dict[str, float]) -> str:
    """What the run's closing line adds: the warm/zero flag and an early stop."""
    note = ""
    if "stopped_early" in final:
        note += f", stopped early at iteration {int(final['stopped_early']):,}"
    if flagged(final, "final/val_"):
        note += (
            f", FLAG: val/loss {final['final/val_loss']:.4f} (from h = 0) and val/loss_warm "
            f"{final['final/val_loss_warm']:.4f} differ by "
            f"{100 * disagreement(final, 'final/val_'):.0f}%"
        )
    return note


def tag_run(client, run_id: str, final: dict[str, float]) -> None:
    """After training: the tags ``rnnlab.stopped_early`` (the iteration) and
    ``rnnlab.warm_flag`` (the relative disagreement) when they apply."""
    if "stopped_early" in final:
        client.set_tag(run_id, "rnnlab.stopped_early", str(int(final["stopped_early"])))
    if flagged(final, "final/val_"):
        client.set_tag(run_id, "rnnlab.warm_flag", f"{disagreement(final, 'final/val_'):.4f}")


# --- the best evaluation and early stopping ------------------------------------------------------


class BestTracker:
    """The best objective over a run's evaluations, the weights that reached it, and how many
    evaluations in a row have failed to improve on it by ``early_stop.min_delta``."""

    def __init__(self, cfg: Config, params: rnn.Params, judged: Judged):
        self.judged = judged
        self.name = judged.name(cfg.objective)
        self.patience, self.min_delta = cfg.early_stop.patience, cfg.early_stop.min_delta
        self.value = math.inf  # the best objective so far (lower is better)
        self.metric = math.nan  # ... as the metric itself (an accuracy for the adder)
        self.iteration = -1
        self.params = {k: v.copy() for k, v in params.items()}  # the weights that reached it
        self.reference = math.inf  # what early stopping must beat by min_delta
        self.stale = 0  # evaluations in a row that did not
        self.stopped_at: int | None = None

    def observe(self, metrics: dict[str, float], params: rnn.Params, iteration: int) -> bool:
        """Record one evaluation; True when it is a new best (strictly lower objective)."""
        value = self.objective(metrics)
        if value < self.reference - self.min_delta:
            self.reference, self.stale = value, 0
        else:
            self.stale += 1
        if value < self.value:
            self.value, self.metric, self.iteration = value, metrics[self.name], iteration
            for k, v in params.items():
                self.params[k][...] = v
            return True
        return False

    def objective(self, metrics: dict[str, float]) -> float:
        """The objective of one evaluation's metrics (lower is better)."""
        return self.judged.value(self.name, metrics)

    def should_stop(self) -> bool:
        return self.patience > 0 and self.stale >= self.patience

    def metrics(self) -> dict[str, float]:
        """``best/<objective>`` and ``best/iteration``."""
        return {f"best/{metric_key(self.name)}": self.metric, "best/iteration": self.iteration}

    def state(self) -> dict:
        return {"value": self.value, "metric": self.metric, "iteration": self.iteration,
                "reference": self.reference, "stale": self.stale}  # fmt: skip

    def arrays(self) -> dict[str, np.ndarray]:
        return {f"best/{k}": v for k, v in self.params.items()}

    def load(self, arrays: dict[str, np.ndarray], state: dict | None) -> None:
        if not state:  # a checkpoint from before best tracking: start tracking from here
            return
        self.value, self.metric = state["value"], state["metric"]
        self.iteration = state["iteration"]
        self.reference, self.stale = state["reference"], state["stale"]
        for k, v in self.params.items():
            if f"best/{k}" in arrays:
                v[...] = arrays[f"best/{k}"]


def warm_start(trainer) -> np.ndarray:
    """Where val/loss_warm's burn-in starts: stream 0's carried state of every layer (and the
    LSTM's c), (L, S, 1, H)."""
    return trainer.carry[..., :1, :].copy()


def task_metrics(trainer, observe=None) -> dict[str, float]:
    """The task's val/* metrics; the char-RNN's warm numbers start from the carried state.
    ``observe``: see ``char_metrics`` (the diagnostics count saturation on these passes)."""
    if getattr(trainer.task, "burn_in", None) is not None:
        return trainer.task.evaluate(trainer.params, observe, warm_start(trainer))
    return trainer.task.evaluate(trainer.params, observe)


def extra_arrays(trainer) -> dict[str, np.ndarray]:
    """What a checkpoint adds for evaluation: the best weights, the burn-in text and the state
    it starts from (so ``rnnlab.score warm=true`` gives this checkpoint's val/loss_warm)."""
    arrays = trainer.best.arrays()
    burn_in = getattr(trainer.task, "burn_in", None)
    if burn_in is not None:
        arrays["eval/burn_in"] = burn_in
        arrays["eval/warm_start"] = warm_start(trainer)
    return arrays


def after_evaluation(trainer, metrics: dict[str, float], ckpt_dir: Path, tracker) -> bool:
    """At each evaluation: feed plateau, keep the best weights (``checkpoints/best.npz``, logged
    as an artifact), log ``best/*``; True when early stopping says stop."""
    it = trainer.state.iteration
    value = trainer.best.objective(metrics)
    trainer.schedule.observe(value)
    if trainer.best.observe(metrics, trainer.params, it):
        write_best(trainer, ckpt_dir, tracker)
    tracker.log_metrics(trainer.best.metrics(), step=it)
    if trainer.best.should_stop() and it < trainer.cfg.iterations:  # at the end: not early
        trainer.best.stopped_at = it
        return True
    return False


def write_best(trainer, ckpt_dir: Path, tracker) -> Path:
    """``checkpoints/best.npz``: the trainer's checkpoint with the best weights as its params
    (at an improvement they are the current ones), logged as an artifact."""
    ck = trainer.to_checkpoint()
    ck.params = dict(trainer.best.params)
    path = ck.write(Path(ckpt_dir) / BEST_FILE)
    tracker.log_artifact(path, "checkpoints")
    return path


def finish(trainer, ckpt_dir: Path, tracker) -> dict[str, float]:
    """Once at the end: make sure best.npz exists here (a resumed run in a new folder that never
    improved has none yet), then ``test/*`` from the best weights when the task has a test text."""
    if trainer.best.iteration >= 0 and not (Path(ckpt_dir) / BEST_FILE).is_file():
        write_best(trainer, ckpt_dir, tracker)
    return final_metrics(trainer)


def final_metrics(trainer) -> dict[str, float]:
    """Once at the end: ``test/*`` from the best weights (when the task has a test text)."""
    test = getattr(trainer.task, "test_metrics", None)
    return test(trainer.best.params) if test is not None else {}


def model_checkpoint(cfg: Config, ckpt_dir: Path) -> Path | None:
    """The checkpoint whose weights become the run's model: best.npz (model_from=best, when it
    exists) or the newest iter_*.npz."""
    best = Path(ckpt_dir) / BEST_FILE
    if cfg.model_from == "best" and best.is_file():
        return best
    return checkpoint.latest(Path(ckpt_dir))
