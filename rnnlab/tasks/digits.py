"""scikit-learn's 8×8 handwritten digits read a pixel (or a row) per step, classified at the end.

The 1,797 images ship inside scikit-learn (``sklearn.datasets.load_digits``: no download). Pixels
(0…16) are scaled to [0, 1] and read one per step in row-major order (``task.order=pixels``,
T = 64, the small cousin of Le et al.'s pixel-by-pixel MNIST) or one row of 8 per step
(``rows``, T = 8). The label is predicted at the last step (cross-entropy there, the other steps
weighted 0). ``task.eval_size`` images are held out by a fixed stratified split: every class
contributes its share (±1), the same images for every seed.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from rnnlab.config import Config, ConfigError
from rnnlab.engine import rnn
from rnnlab.tasks.judging import Judged
from rnnlab.tasks.sequences import SequenceTask, last_step

CLASSES = 10
IMAGES = 1797  # load_digits' images
SPLIT_SEED = 8  # the held-out split's generator: np.random.default_rng(SPLIT_SEED)
INK = " .:-=+*#%@"  # a step's mean pixel drawn as one character, light to dark


@functools.cache
def load() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 64) in [0, 1], labels (1797,)), read once per process."""
    from sklearn.datasets import load_digits  # imported here: ~0.5 s that other tasks skip

    digits = load_digits()
    images, labels = digits.data / 16.0, digits.target.astype(np.intp)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def stratified_split(labels: np.ndarray, held: int, seed: int = SPLIT_SEED):
    """(train indices, held-out indices), sorted: a fixed random order within each class, and the
    ``held`` images earliest in their class's order (by rank / class size) held out, so every
    class gives its share ±1."""
    n = labels.size
    order = np.random.default_rng(seed).permutation(n)
    lab = labels[order]
    by_class = np.argsort(lab, kind="stable")  # the random order kept within each class
    starts = np.searchsorted(lab[by_class], np.arange(CLASSES))
    rank = np.empty(n)
    rank[by_class] = np.arange(n) - starts[lab[by_class]]  # position within its class
    position = (rank + 0.5) / np.bincount(labels, minlength=CLASSES)[lab]  # in (0, 1)
    take = np.argsort(position, kind="stable")[:held]
    held_idx = np.sort(order[take])
    return np.setdiff1d(np.arange(n), held_idx), held_idx


def as_sequences(images: np.ndarray, order: str) -> np.ndarray:
    """Images (N, 64) → steps (T, N, D): (64, N, 1) pixel by pixel, (8, N, 8) row by row."""
    if order == "rows":
        return np.ascontiguousarray(images.reshape(-1, 8, 8).transpose(1, 0, 2))
    return np.ascontiguousarray(images.T[:, :, None])


class DigitsTask(SequenceTask):
    """Classify a handwritten digit read as a sequence of pixels or rows."""

    # How its runs are judged (rnnlab.tasks.judging.Judged): by default the held-out accuracy.
    JUDGED = Judged(
        objectives={"val/acc": True, "val/loss": False},
        default="val/acc",
        legacy="val/acc",
        headline=(("final_val_acc", "final val/acc", True),),
    )

    name = "digits"
    output_size = CLASSES
    head = "xent"

    @staticmethod
    def check(cfg: Config) -> None:
        if cfg.task.loss != "xent":
            raise ConfigError("task.loss", cfg.task.loss, "xent for digits")
        if not CLASSES <= cfg.task.eval_size <= IMAGES - CLASSES:
            raise ConfigError("task.eval_size", cfg.task.eval_size,
                              f"{CLASSES} to {IMAGES - CLASSES} held-out images for digits "
                              "(every class held out and trained on)")  # fmt: skip

    @staticmethod
    def shape(cfg: Config) -> tuple[int, int, int]:
        """(inputs per step, outputs per step, steps per sequence)."""
        return (8, CLASSES, 8) if cfg.task.order == "rows" else (1, CLASSES, 64)

    @staticmethod
    def fixed_data(cfg: Config) -> tuple[str, bytes, dict[str, str]]:
        """(name, bytes, source tags): the images, labels and which are held out."""
        images, labels = load()
        _, held = stratified_split(labels, cfg.task.eval_size)
        data = images.astype("<f8").tobytes() + labels.astype("<i8").tobytes()
        tags = {"source": "sklearn.datasets.load_digits", "order": cfg.task.order}
        return f"sklearn-digits-eval{cfg.task.eval_size}", data + held.astype("<i8").tobytes(), tags

    def __init__(self, cfg: Config, rng: np.random.Generator):
        self.order = cfg.task.order
        self.input_size, _, steps = self.shape(cfg)
        super().__init__(cfg, rng, steps)
        self.weights = last_step(steps)
        images, labels = load()
        train, held = stratified_split(labels, cfg.task.eval_size)
        seqs = as_sequences(images, self.order).astype(self.dtype)  # (T, 1797, D)
        self.train_xs, self.train_labels = seqs[:, train], labels[train]
        self.eval_xs, self.eval_labels = seqs[:, held], labels[held]
        self.eval_index = held  # which of load_digits' images
        self.eval_ys = np.broadcast_to(self.eval_labels, (steps, held.size))

    def initial_loss(self) -> float:
        """log 10: a uniform guess over the classes, where the smooth loss starts."""
        return math.log(CLASSES)

    def next_batch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """B training images drawn with replacement: (xs (T, B, D), labels at every step (T, B)
        — weighted at the last —, reset (B,) all true)."""
        pick = self.rng.integers(0, self.train_labels.size, self.batch_size)
        ys = np.broadcast_to(self.train_labels[pick], (self.steps, self.batch_size))
        return self.train_xs[:, pick], ys, np.ones(self.batch_size, dtype=bool)

    def evaluate(self, params: rnn.Params, observe=None) -> dict[str, float]:
        """val/acc (share of held-out images classified right) and val/loss (their
        cross-entropy at the last step, nats)."""
        logits = self.logits(params, self.eval_xs, observe)
        return {
            "val/acc": float(np.mean(logits[-1].argmax(axis=-1) == self.eval_labels)),
            "val/loss": self.weighted_loss(logits, self.eval_ys),
        }

    def sample(self, params: rnn.Params, rng: np.random.Generator, count: int = 5) -> str:
        """How many held-out images are wrong, and up to ``count`` of them drawn as 8×8 text."""
        z = self.logits(params, self.eval_xs)[-1]
        pred = z.argmax(axis=-1)
        p = rnn.softmax(z)
        wrong = np.flatnonzero(pred != self.eval_labels)
        lines = [f"# wrong: {wrong.size} of {pred.size} held-out images"]
        images, _ = load()
        for i in np.sort(rng.permutation(wrong)[:count]):
            lines.append(f"image {self.eval_index[i]}: a {self.eval_labels[i]} read as "
                         f"{pred[i]} (p = {p[i, pred[i]]:.2f})")  # fmt: skip
            pixels = images[self.eval_index[i]].reshape(8, 8)
            lines += ["  " + "".join(INK[min(int(v * 10), 9)] * 2 for v in row) for row in pixels]
        return "\n".join(lines) + "\n"

    def unit_features(self, n: int) -> tuple[np.ndarray, dict[str, np.ndarray], list[str]]:
        """For the viewer: n held-out inputs (T, n, D), what a unit might track at each step
        {name: (T, n)} and each image one character per step (darker: more ink)."""
        xs = self.eval_xs[:, :n]
        now = xs.mean(axis=-1).astype(np.float64)  # (T, n) the ink read at this step
        t = np.broadcast_to(np.arange(self.steps, dtype=np.float64)[:, None], now.shape)
        features = {
            "the ink read now": now,
            "ink read so far": np.cumsum(now, axis=0),
            "steps since the start": t.copy(),
        }
        text = ["".join(INK[min(int(v * 10), 9)] for v in now[:, i]) for i in range(now.shape[1])]
        return xs, features, text
