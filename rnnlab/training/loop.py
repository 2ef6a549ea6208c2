"""The training loop shared by every task: ``train(cfg, tracker)`` → final metrics.

It reads top to bottom as one loop: batch → forward/backward → clip and update → log →
evaluate → sample → checkpoint → stop. Everything a run needs to continue bit for bit lives in
a ``TrainState`` that checkpoints save and load. The stop path writes its checkpoint first: a
second Ctrl-C may cut an evaluation short (it changes no training state), never a step or a
checkpoint, and a resume from such a stop runs the skipped evaluation before its next step.
Hydra and MLflow stay outside: the loop gets a typed ``Config`` and a ``Tracker``, so a test or
a notebook can call it directly.
"""

from __future__ import annotations

import ctypes
import math
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rnnlab.analysis import diagnostics, viewer
from rnnlab.config import Config, flatten
from rnnlab.engine import fused, rnn
from rnnlab.engine.optim import (
    OPTIMIZERS,
    Optimizer,
    clip_elementwise,
    clip_global_norm,
    global_norm,
)
from rnnlab.engine.schedule import Schedule
from rnnlab.tasks import TASKS
from rnnlab.training import best, checkpoint
from rnnlab.training.progress import Progress
from rnnlab.training.signals import interruptible, shielded, stop_on_signals
from rnnlab.training.tracker import MemoryTracker, Tracker


def keep_freed_memory() -> bool:
    """Let glibc's malloc reuse freed memory instead of giving it back to the kernel.

    Every window allocates a few arrays of 0.1-1 MB (logits, their gradient, the states'
    gradient). glibc may serve blocks that large with fresh mmap() pages, or trim them off the
    heap, when they are freed, so the next window pays the page faults again: 40% of the time at
    B=128 on this machine. Raising the mmap and trim thresholds keeps such blocks in the heap for
    the next window. Process-wide, so it is applied when training (or the benchmark) starts,
    never on import; a no-op returning False where the C library is not glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
    served_from_heap = mallopt(M_MMAP_THRESHOLD, 32 << 20)  # glibc's maximum: 32 MiB
    kept = mallopt(M_TRIM_THRESHOLD, 1 << 30)  # return the heap top only beyond 1 GiB free
    return bool(served_from_heap and kept)


class DivergenceError(RuntimeError):
    """The loss became non-finite or exploded; the run stops at once."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; the loop stopped after a whole iteration and checkpointed."""

    def __init__(self, signal_name: str, iteration: int, checkpoint_path: Path | None):
        super().__init__(f"{signal_name} at iteration {iteration}")
        self.signal_name, self.iteration, self.checkpoint_path = (
            signal_name,
            iteration,
            checkpoint_path,
        )

    def __reduce__(self):  # crosses process boundaries (a parallel sweep's workers) intact
        return type(self), (self.signal_name, self.iteration, self.checkpoint_path)


@dataclass
class TrainState:
    """Everything that changes while training, besides the arrays in params/optimizer/task."""

    iteration: int = 0
    smooth_loss: float = 0.0
    iters_to_100: int = -1  # adder: first evaluation with val/exact_acc = 1.0 (-1: not yet)
    iters_to_solve: int = -1  # first evaluation meeting the task's JUDGED.solved (-1: not yet)
    interval_loss: float = 0.0  # sum of window losses since the last log point
    interval_count: int = 0
    elapsed: float = 0.0  # training seconds before this process (resumed runs)
    # a stop checkpoint taken before this iteration's evaluation, diagnostics, sample and
    # scheduled checkpoint (a second Ctrl-C cut the evaluation short): a resume runs them first,
    # with the step's gradient (saved beside it) and its norm before clipping
    tail_pending: bool = False
    tail_grad_norm: float = 0.0


def make_optimizer(cfg: Config, size: int, dtype) -> Optimizer:
    o = cfg.optimizer
    extra = {
        "sgd": {},
        "adagrad": {"eps": o.eps},
        "rmsprop": {"rho": o.rho, "eps": o.eps},
        "adam": {"beta1": o.beta1, "beta2": o.beta2, "eps": o.eps},
    }[o.name]
    optimizer = OPTIMIZERS[o.name](size, dtype, cfg.learning_rate, **extra)
    optimizer.weight_decay = o.weight_decay  # decoupled, AdamW-style (0: the seeds' update)
    return optimizer


class Trainer:
    """Owns the model, optimizer, task and state of one run."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.dtype = np.dtype(cfg.dtype)
        # Separate streams, so e.g. sampling more often never changes the training trajectory.
        # (spawn(4)'s first three children are spawn(3)'s: adding dropout moved no stream)
        init_seq, data_seq, sample_seq, dropout_seq = np.random.SeedSequence(cfg.seed).spawn(4)
        self.data_rng = np.random.default_rng(data_seq)
        self.sample_rng = np.random.default_rng(sample_seq)
        self.dropout_rng = np.random.default_rng(dropout_seq)
        self.spec = rnn.spec_of(cfg)
        self.task = TASKS[cfg.task.name](cfg, self.data_rng)
        t = self.task
        # the cell's init and constraint; BPTT's window: a sequence task's whole sequence
        options = rnn.cell_options(cfg, getattr(t, "steps", cfg.seq_length))
        self.flat, self.params = rnn.init_params(
            t.input_size,
            cfg.hidden_size,
            t.output_size,
            np.random.default_rng(init_seq),
            cfg.task.init,
            cfg.task.init_scale,
            self.dtype,
            self.spec,
            options,
        )
        # after every update (the IndRNN's bound on |u|; None for the other cells)
        self.constrain = rnn.constraint(self.spec, options)
        self.grad_flat, self.grads = rnn.packed_zeros(
            {k: v.shape for k, v in self.params.items()}, self.dtype
        )
        self.optimizer = make_optimizer(cfg, self.flat.size, self.dtype)
        # elementwise clip + Adagrad, any cell: both in one compiled pass (else None)
        o = cfg.optimizer
        self.clip_and_update = fused.clip_and_update(self.optimizer, o.clip, o.clip_norm)
        # the carried state of every stream: h (and the LSTM's c) of every layer, (L, S, B, H)
        self.carry = rnn.zero_state(self.spec, cfg.batch_size, self.dtype)
        self.state = TrainState(smooth_loss=t.initial_loss())
        # a window loss above this means the run diverged (checked every iteration: computed once)
        self.divergence_limit = cfg.divergence_factor * t.initial_loss()
        self.schedule = Schedule(cfg.schedule, cfg.learning_rate, cfg.iterations)
        # the best objective (as the task judges it), its weights, patience
        self.best = best.BestTracker(cfg, self.params, t.JUDGED)

    @property
    def h(self) -> np.ndarray:
        """The top layer's hidden state of every stream, (B, H)."""
        return self.carry[-1, 0]

    # --- checkpoints ------------------------------------------------------------------------------

    def to_checkpoint(self) -> checkpoint.Checkpoint:
        vocab, s = getattr(self.task, "vocab", None), self.state
        meta = {
            "state": asdict(self.state),
            "rng": {
                "data": self.data_rng.bit_generator.state,
                "sample": self.sample_rng.bit_generator.state,
                "dropout": self.dropout_rng.bit_generator.state,
            },
            "config": flatten(self.cfg),
            "task": self.cfg.task.name,
            "schedule": self.schedule.state(),
            "best": self.best.state(),
        }
        return checkpoint.Checkpoint(
            params=dict(self.params),
            meta=meta,
            optim=self.optimizer.state(),
            data=self.task.data_state(),
            # (L, S, B, H); a stop before the evaluation also keeps the step's gradient, which
            # that evaluation's diagnostics read
            state={"hprev": self.carry} | ({"grad": self.grad_flat} if s.tail_pending else {}),
            vocab=vocab.chars if vocab is not None else None,
            extra=best.extra_arrays(self),  # best weights, burn-in text
        )

    def save(self, folder: Path) -> Path:
        return self.to_checkpoint().write(folder / f"iter_{self.state.iteration:07d}.npz")

    def load(self, path: Path) -> None:
        """Continue from a checkpoint written by ``save`` (shapes must match this config)."""
        ck = checkpoint.Checkpoint.read(path)
        for k, v in self.params.items():
            if k not in ck.params:  # another cell or depth
                raise checkpoint.CheckpointError(
                    f"{path}: has no {k}; this config (cell={self.spec.cell}, "
                    f"layers={self.spec.layers}) needs it"
                )
            if ck.params[k].shape != v.shape:
                raise checkpoint.CheckpointError(
                    f"{path}: {k} has shape {ck.params[k].shape}, this config makes {v.shape}"
                )
            v[...] = ck.params[k]
        self.optimizer.load_state(ck.optim)
        self.task.load_data_state(ck.data)
        self.carry[...] = ck.state["hprev"].reshape(self.carry.shape)  # (B, H) before cells
        self.state = TrainState(**ck.meta["state"])
        if self.state.tail_pending and "grad" in ck.state:
            self.grad_flat[...] = ck.state["grad"]  # the step whose evaluation is replayed
        self.data_rng.bit_generator.state = ck.meta["rng"]["data"]
        self.sample_rng.bit_generator.state = ck.meta["rng"]["sample"]
        if "dropout" in ck.meta["rng"]:
            self.dropout_rng.bit_generator.state = ck.meta["rng"]["dropout"]
        self.schedule.load_state(ck.meta.get("schedule"))
        self.best.load(ck.extra, ck.meta.get("best"))

    # --- one iteration ----------------------------------------------------------------------------

    def step(self) -> tuple[float, float]:
        """One update. Returns (mean window loss over streams, gradient norm before clipping)."""
        cfg, task = self.cfg, self.task
        xs, ys, reset = task.next_batch()
        if reset.any():  # streams that start over forget their state (every layer)
            self.carry[:, :, reset] = 0.0
        dropout_rng = self.dropout_rng if self.spec.dropout > 0.0 else None
        loss, _, self.carry = rnn.loss_and_grads(
            self.params, xs, ys, self.carry, self.spec, task.head, self.grads, dropout_rng,
            weights=task.weights,  # each step's weight in the loss: the task's (None: all 1)
        )  # fmt: skip
        # the mean over streams (np.mean's own calls cost more; one stream's is its loss, exactly)
        window_loss = float(loss[0]) if loss.shape[0] == 1 else float(loss.sum()) / loss.shape[0]
        if not math.isfinite(window_loss) or window_loss > self.divergence_limit:
            raise DivergenceError(
                f"loss diverged to {window_loss:.4g} at iteration {self.state.iteration + 1} "
                f"(learning_rate={cfg.learning_rate:g})"
            )
        norm = global_norm(self.grad_flat)
        if not math.isfinite(norm):
            raise DivergenceError(
                f"gradient norm is {norm} at iteration {self.state.iteration + 1} "
                f"(learning_rate={cfg.learning_rate:g})"
            )
        self.optimizer.learning_rate = self.schedule.lr(self.state.iteration)
        if self.clip_and_update is not None:
            self.clip_and_update(self.flat, self.grad_flat)
        else:
            if cfg.optimizer.clip is not None:
                clip_elementwise(self.grad_flat, cfg.optimizer.clip)
            if cfg.optimizer.clip_norm is not None:
                clip_global_norm(self.grad_flat, cfg.optimizer.clip_norm, norm)
            self.optimizer.step(self.flat, self.grad_flat)
        if self.constrain is not None:
            self.constrain(self.params)
        s = self.state
        s.iteration += 1
        s.smooth_loss = 0.999 * s.smooth_loss + 0.001 * window_loss
        s.interval_loss += window_loss
        s.interval_count += 1
        return window_loss, norm

    def evaluate(self, observe=None) -> dict[str, float]:
        with interruptible():  # changes nothing: a second Ctrl-C may drop it (the stop path)
            metrics = best.task_metrics(self, observe)  # the task's val/*, warm from the carry
        if "val/exact_acc" in metrics and metrics["val/exact_acc"] == 1.0:
            if self.state.iters_to_100 < 0:
                self.state.iters_to_100 = self.state.iteration
        if self.state.iters_to_solve < 0 and self.task.JUDGED.is_solved(metrics):
            self.state.iters_to_solve = self.state.iteration
        return metrics


def blas_limit(threads: int):
    """Limit BLAS to ``threads`` threads for a block (0: leave the library's default)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads, user_api="blas") if threads else nullcontext()


def train(
    cfg: Config,
    tracker: Tracker | None = None,
    out_dir: Path | None = None,
    resume_from: Path | None = None,
    show_progress: bool = True,
) -> dict[str, float]:
    """Train per ``cfg``, recording through ``tracker``; return the final metrics, including
    ``objective`` (what sweeps minimise). Checkpoints go to ``out_dir/checkpoints``."""
    keep_freed_memory()  # page faults cost up to 40% of a window otherwise (see its docstring)
    tracker = tracker if tracker is not None else MemoryTracker()
    out_dir = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="rnnlab-"))
    ckpt_dir = out_dir / "checkpoints"
    trainer = Trainer(cfg)
    if resume_from is not None:
        trainer.load(resume_from)
    task, s = trainer.task, trainer.state
    progress = Progress(cfg.iterations, s.iteration, cfg.task.name, show_progress, cfg.verbose)

    started, start_iter, elapsed_before = time.perf_counter(), s.iteration, s.elapsed

    def checkpoint_now() -> Path:
        s.elapsed = elapsed_before + time.perf_counter() - started
        with shielded():  # a second Ctrl-C waits until the checkpoint is written and sent
            path = trainer.save(ckpt_dir)
            tracker.log_artifact(path, "checkpoints")
        return path

    last_log_time, last_log_iter = started, s.iteration
    val: dict[str, float] = {}
    diag = diagnostics.start(cfg, trainer, tracker)  # None when diagnostics=false

    def stop(name: str, it: int, skipped_grad_norm: float | None = None):
        """The stop path: the stop checkpoint first (shielded: no signal cuts it), then out.
        ``skipped_grad_norm``: the evaluation was cut short; the checkpoint says so (with the
        step's gradient norm) and a resume runs iteration ``it``'s evaluation, diagnostics,
        sample and checkpoint before its next step."""
        s.tail_pending = skipped_grad_norm is not None
        s.tail_grad_norm = skipped_grad_norm or 0.0
        raise Interrupted(name, it, checkpoint_now())

    def tail(it: int, grad_norm: float, stop_requested: list[str]) -> bool:
        """After iteration ``it``'s update: evaluate, diagnostics, sample, checkpoint, as due.
        Returns True when early stopping says stop."""
        nonlocal val
        stop_early = False
        # evaluate
        if it % cfg.eval_every == 0 or it == cfg.iterations:
            observer = diag and diag.observer(it, cfg.iterations)
            try:
                val = trainer.evaluate(observer)
            except KeyboardInterrupt:  # a second Ctrl-C: skip the evaluation, checkpoint now
                stop(stop_requested[0] if stop_requested else "SIGINT", it, grad_norm)
            tracker.log_metrics(val, step=it)
            stop_early = best.after_evaluation(trainer, val, ckpt_dir, tracker)

        # diagnostics (analysis.diagnostics; saturation counted on the evaluation's pass)
        if diag is not None and diag.due(it, cfg.iterations):
            diag.record(trainer, it, grad_norm)

        # sample
        if it % cfg.sample_every == 0 or it == cfg.iterations or stop_early:
            text = task.sample(trainer.params, trainer.sample_rng)
            tracker.log_text(text, f"samples/iter_{it:07d}.txt")

        # checkpoint
        if it % cfg.checkpoint_every == 0 or it == cfg.iterations or stop_early:
            checkpoint_now()
        return stop_early

    try:
        with blas_limit(cfg.blas_threads), stop_on_signals() as stop_requested:
            stop_early = False
            if s.tail_pending:  # the stop that made this checkpoint skipped these: run them now
                s.tail_pending = False
                stop_early = tail(s.iteration, s.tail_grad_norm, stop_requested)
                if stop_requested:
                    stop(stop_requested[0], s.iteration)
            while not stop_early and s.iteration < cfg.iterations:
                # forward/backward and update
                _, grad_norm = trainer.step()
                it = s.iteration

                # log
                if it % cfg.log_every == 0:
                    now = time.perf_counter()
                    cps = (it - last_log_iter) * task.tokens_per_iteration / (now - last_log_time)
                    last_log_time, last_log_iter = now, it
                    tracker.log_metrics(
                        {
                            "train/loss": s.interval_loss / s.interval_count,
                            "train/smooth_loss": s.smooth_loss,
                            "train/grad_norm": grad_norm,
                            "perf/chars_per_sec": cps,
                            # training seconds of every process that trained this run so far
                            # (a resume adds its own to the checkpoint's): not MLflow's
                            # Duration, which is wall time since the run first started
                            "perf/train_seconds": elapsed_before + now - started,
                            "train/lr": trainer.optimizer.learning_rate,
                        },
                        step=it,
                    )
                    s.interval_loss, s.interval_count = 0.0, 0
                    progress.update(it, s.smooth_loss, cps)

                # evaluate, diagnostics, sample, checkpoint
                stop_early = tail(it, grad_norm, stop_requested)

                # stop (FINISHED on early stopping, with every final metric below)
                if stop_requested:
                    stop(stop_requested[0], it)
        if diag is not None:
            viewer.log_run_page(task, trainer.params, tracker)  # inspect/index.html
    finally:
        progress.close()
        tracker.flush()

    this_process = time.perf_counter() - started
    final = {
        "final/smooth_loss": s.smooth_loss,
        "final/train_seconds": elapsed_before + this_process,
        "final/chars_per_sec": (s.iteration - start_iter)
        * task.tokens_per_iteration
        / max(this_process, 1e-9),
    }
    final |= {"final/" + k.replace("/", "_"): v for k, v in val.items()}
    if s.iters_to_100 > 0:
        final["iters_to_100"] = float(s.iters_to_100)
    if s.iters_to_solve > 0:
        final["iters_to_solve"] = float(s.iters_to_solve)
    final |= best.finish(trainer, ckpt_dir, tracker)  # test/* from the best weights
    final |= best.baseline(trainer)  # what a constant predictor scores: did the run learn?
    tracker.log_metrics({k: v for k, v in final.items() if k != "baseline_objective"},
                        step=s.iteration)  # fmt: skip
    tracker.flush()
    final |= trainer.best.metrics()  # logged at the last evaluation already
    final["objective"] = trainer.best.objective(val)
    if trainer.best.stopped_at is not None:
        final["stopped_early"] = float(trainer.best.stopped_at)
    return final
