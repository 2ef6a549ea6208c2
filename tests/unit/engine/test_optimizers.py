"""Optimizers against the formulas they claim (min-char-rnn's Adagrad, plain SGD, textbook
RMSprop and Adam) over several steps, clipping, and a state round trip that continues exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rnnlab.engine import optim


def gradients(n_steps: int, size: int = 40, seed: int = 0) -> list[np.ndarray]:
    """A few gradients of mixed scale, including exact zeros (Adagrad's eps matters there)."""
    rng = np.random.default_rng(seed)
    gs = [rng.normal(0, 1, size) * rng.choice([1e-3, 1.0, 10.0], size) for _ in range(n_steps)]
    gs[0][:3] = 0.0
    return gs


def run(opt: optim.Optimizer, p0: np.ndarray, gs: list[np.ndarray]) -> np.ndarray:
    p = p0.copy()
    for g in gs:
        opt.step(p, g.copy())
    return p


def test_sgd_is_param_minus_lr_grad():
    gs, p0 = gradients(5), np.linspace(-1, 1, 40)
    p = run(optim.SGD(40, np.float64, 0.1), p0, gs)
    expected = p0.copy()
    for g in gs:
        expected = expected - 0.1 * g
    np.testing.assert_allclose(p, expected, rtol=1e-14, atol=1e-15)


def test_adagrad_is_min_char_rnn_update():
    """min-char-rnn: ``mem += dparam * dparam; param += -lr * dparam / np.sqrt(mem + 1e-8)``,
    applied per matrix; the flat vector must give exactly the same numbers."""
    rng = np.random.default_rng(1)
    shapes = {"Wxh": (4, 3), "Whh": (4, 4), "Why": (3, 4), "bh": (4, 1), "by": (3, 1)}
    seed_params = {k: rng.normal(0, 0.01, s) for k, s in shapes.items()}
    seed_mems = {k: np.zeros(s) for k, s in shapes.items()}
    flat = np.concatenate([v.ravel() for v in seed_params.values()])
    opt = optim.Adagrad(flat.size, np.float64, 0.1)
    for step in range(6):
        dparams = {k: rng.normal(0, 2.0, s) for k, s in shapes.items()}
        for dparam in dparams.values():
            np.clip(dparam, -5, 5, out=dparam)
        for k in shapes:  # the seed's loop, verbatim
            param, dparam, mem = seed_params[k], dparams[k], seed_mems[k]
            mem += dparam * dparam
            param += -0.1 * dparam / np.sqrt(mem + 1e-8)
        grad = np.concatenate([v.ravel() for v in dparams.values()])
        opt.step(flat, grad)
        seed_flat = np.concatenate([v.ravel() for v in seed_params.values()])
        np.testing.assert_allclose(flat, seed_flat, rtol=1e-14, atol=1e-15, err_msg=f"step {step}")
    np.testing.assert_allclose(
        opt.memories["mem"], np.concatenate([v.ravel() for v in seed_mems.values()]), rtol=1e-15
    )


def test_rmsprop_reference():
    gs, p0 = gradients(6), np.linspace(-1, 1, 40)
    lr, rho, eps = 0.01, 0.9, 1e-8
    p = run(optim.RMSprop(40, np.float64, lr, rho=rho, eps=eps), p0, gs)
    ref, mem = p0.copy(), np.zeros(40)
    for g in gs:
        mem = rho * mem + (1 - rho) * g**2
        ref = ref - lr * g / (np.sqrt(mem) + eps)
    np.testing.assert_allclose(p, ref, rtol=1e-13, atol=1e-15)
    assert not np.allclose(p, p0)


def test_adam_reference():
    gs, p0 = gradients(7), np.linspace(-1, 1, 40)
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    opt = optim.Adam(40, np.float64, lr, beta1=b1, beta2=b2, eps=eps)
    p = run(opt, p0, gs)
    ref, m, v = p0.copy(), np.zeros(40), np.zeros(40)
    for t, g in enumerate(gs, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        ref = ref - lr * m_hat / (np.sqrt(v_hat) + eps)
    np.testing.assert_allclose(p, ref, rtol=1e-13, atol=1e-15)
    assert opt.steps == 7
    # Adam's first step moves every parameter with a non-zero gradient by ≈ lr (bias-corrected).
    first = run(optim.Adam(40, np.float64, lr), p0, gs[:1])
    moved = np.abs(first - p0)[gs[0] != 0]
    np.testing.assert_allclose(moved, lr, rtol=1e-4)


@pytest.mark.parametrize("name", list(optim.OPTIMIZERS))
def test_state_round_trip_continues_identically(name):
    gs, p0 = gradients(10, seed=3), np.linspace(-1, 1, 40)
    a = optim.OPTIMIZERS[name](40, np.float64, 0.05)
    p_a = run(a, p0, gs)  # ten uninterrupted steps

    b = optim.OPTIMIZERS[name](40, np.float64, 0.05)
    p_b = run(b, p0, gs[:4])
    state = b.state()
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in state.values())
    c = optim.OPTIMIZERS[name](40, np.float64, 0.05)  # a fresh one, as after a restart
    c.load_state({k: v.copy() for k, v in state.items()})
    assert c.steps == 4
    p_c = run(c, p_b, gs[4:])
    assert np.array_equal(p_c, p_a)  # bit for bit
    # state() is a copy: stepping on does not change what a checkpoint already took.
    before = {k: v.copy() for k, v in state.items()}
    b.step(p_b, gs[4].copy())
    assert all(np.array_equal(state[k], before[k]) for k in state)


def test_float32_optimizers_stay_float32():
    p = np.ones(10, dtype=np.float32)
    for name, cls in optim.OPTIMIZERS.items():
        opt = cls(10, np.float32, 0.1)
        opt.step(p, np.full(10, 0.5, dtype=np.float32))
        assert p.dtype == np.float32, name
        assert all(m.dtype == np.float32 for m in opt.memories.values()), name


def test_clipping_and_norm():
    g = np.array([3.0, -4.0, 12.0, -0.5])
    assert optim.global_norm(g) == pytest.approx(math.sqrt(9 + 16 + 144 + 0.25), rel=1e-15)

    e = g.copy()
    optim.clip_elementwise(e, 5.0)
    np.testing.assert_array_equal(e, [3.0, -4.0, 5.0, -0.5])  # np.clip(d, -5, 5) as the seed

    n = g.copy()
    norm = optim.global_norm(n)
    optim.clip_global_norm(n, 2.0, norm)
    assert optim.global_norm(n) == pytest.approx(2.0, rel=1e-14)
    np.testing.assert_allclose(n / g, 2.0 / norm, rtol=1e-14)  # direction kept

    small = g.copy()
    optim.clip_global_norm(small, 100.0, optim.global_norm(small))  # under the limit: untouched
    np.testing.assert_array_equal(small, g)
