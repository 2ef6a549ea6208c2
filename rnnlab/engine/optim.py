"""Optimizers and gradient clipping over one flat parameter vector.

The engine packs every parameter into one contiguous buffer (``rnn.packed_zeros``), so an
update is a handful of numpy calls whatever the number of matrices. Each optimizer updates
``params`` in place from ``grads`` (both flat, same length) and exposes its memories as plain
arrays (``state()`` / ``load_state()``), so checkpoints store them without pickle. Clipping is
separate from the update so the loop can log the norm it saw before clipping.
"""

from __future__ import annotations

import math

import numpy as np


def global_norm(grad: np.ndarray) -> float:
    """sqrt of the sum of squares of every gradient entry."""
    return math.sqrt(float(np.dot(grad, grad)))


def clip_elementwise(grad: np.ndarray, limit: float) -> None:
    """Clamp every entry to [-limit, limit] in place (min-char-rnn's ``np.clip(d, -5, 5)``)."""
    np.clip(grad, -limit, limit, out=grad)


def clip_global_norm(grad: np.ndarray, max_norm: float, norm: float) -> None:
    """Rescale the gradient in place so its global norm is at most ``max_norm``."""
    if norm > max_norm:
        grad *= max_norm / norm


class Optimizer:
    """Base: a learning rate, a step count and named memories the size of the parameters."""

    memory_names: tuple[str, ...] = ()

    def __init__(self, size: int, dtype, learning_rate: float):
        self.learning_rate = learning_rate
        self.steps = 0
        self.memories = {m: np.zeros(size, dtype=dtype) for m in self.memory_names}
        self._tmp = np.zeros(size, dtype=dtype)  # scratch, so a step allocates nothing

    weight_decay = 0.0  # decoupled (AdamW-style): params *= 1 - lr · weight_decay first

    def step(self, params: np.ndarray, grad: np.ndarray) -> None:
        """Apply one update to ``params`` in place."""
        self.steps += 1
        if self.weight_decay:
            params *= 1.0 - self.learning_rate * self.weight_decay
        self._update(params, grad, self._tmp)

    def _update(self, params: np.ndarray, grad: np.ndarray, tmp: np.ndarray) -> None:
        raise NotImplementedError

    def state(self) -> dict[str, np.ndarray]:
        """Memories and step count as arrays (for a checkpoint)."""
        return {**{k: v.copy() for k, v in self.memories.items()}, "steps": np.array(self.steps)}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        for k, mem in self.memories.items():
            mem[...] = state[k]
        self.steps = int(state["steps"])


class SGD(Optimizer):
    """param -= lr · grad (iamtrask's adder: ``synapse += update * alpha``)."""

    def _update(self, params, grad, tmp):
        np.multiply(grad, self.learning_rate, out=tmp)
        params -= tmp


class Adagrad(Optimizer):
    """min-char-rnn's update: mem += g²; param -= lr · g / sqrt(mem + 1e-8)."""

    memory_names = ("mem",)

    def __init__(self, size: int, dtype, learning_rate: float, eps: float = 1e-8):
        super().__init__(size, dtype, learning_rate)
        self.eps = eps

    def _update(self, params, grad, tmp):
        mem = self.memories["mem"]
        np.multiply(grad, grad, out=tmp)
        mem += tmp
        np.add(mem, self.eps, out=tmp)
        np.sqrt(tmp, out=tmp)
        np.divide(grad, tmp, out=tmp)
        tmp *= self.learning_rate
        params -= tmp


class RMSprop(Optimizer):
    """mem = ρ·mem + (1-ρ)·g²; param -= lr · g / (sqrt(mem) + eps)."""

    memory_names = ("mem",)

    def __init__(self, size: int, dtype, learning_rate: float, rho: float = 0.9, eps=1e-8):
        super().__init__(size, dtype, learning_rate)
        self.rho, self.eps = rho, eps

    def _update(self, params, grad, tmp):
        mem = self.memories["mem"]
        mem *= self.rho
        np.multiply(grad, grad, out=tmp)
        tmp *= 1.0 - self.rho
        mem += tmp
        np.sqrt(mem, out=tmp)
        tmp += self.eps
        np.divide(grad, tmp, out=tmp)
        tmp *= self.learning_rate
        params -= tmp


class Adam(Optimizer):
    """Adam with bias correction (Kingma & Ba, 2015)."""

    memory_names = ("m", "v")

    def __init__(self, size, dtype, learning_rate, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__(size, dtype, learning_rate)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps

    def _update(self, params, grad, tmp):
        m, v = self.memories["m"], self.memories["v"]
        m *= self.beta1
        m += (1.0 - self.beta1) * grad
        v *= self.beta2
        np.multiply(grad, grad, out=tmp)
        tmp *= 1.0 - self.beta2
        v += tmp
        # param -= lr · m̂ / (sqrt(v̂) + eps), with m̂ = m / (1-β1^t), v̂ = v / (1-β2^t)
        np.divide(v, 1.0 - self.beta2**self.steps, out=tmp)
        np.sqrt(tmp, out=tmp)
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= self.learning_rate / (1.0 - self.beta1**self.steps)
        params -= tmp


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "adagrad": Adagrad,
    "rmsprop": RMSprop,
    "adam": Adam,
}
