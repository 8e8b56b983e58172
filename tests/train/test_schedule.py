"""The lr schedule, EMA decay and optimizer agree with the official formulas (§4)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolox_jax.train.schedule import ema_decay, yolox_warm_cos_lr
from yolox_jax.train.state import decay_mask, make_optimizer


def official_lr(t, lr, E, total_epochs, warmup_epochs=5, no_aug_epochs=15, min_lr_ratio=0.05):
    """Plain transcription of the reference's yoloxwarmcos (one scalar at a time)."""
    W, N, T = warmup_epochs * E, no_aug_epochs * E, total_epochs * E
    min_lr = min_lr_ratio * lr
    if t <= W:
        return lr * (t / W) ** 2
    if t >= T - N:
        return min_lr
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * (t - W) / (T - W - N)))


@pytest.mark.parametrize("t", [0, 1, 500, 9245, 9246, 100_000, 300 * 1849 - 15 * 1849 - 1,
                               300 * 1849 - 15 * 1849, 300 * 1849 - 1])
def test_lr_matches_official_formula_coco_s(t):
    lr_fn = yolox_warm_cos_lr(0.01, 1849, 300)
    assert float(lr_fn(t)) == pytest.approx(official_lr(t, 0.01, 1849, 300), rel=1e-5, abs=1e-9)


def test_lr_is_zero_at_start_peak_after_warmup_and_flat_tail():
    lr_fn = yolox_warm_cos_lr(0.02, 10, 20, warmup_epochs=2, no_aug_epochs=3)
    assert float(lr_fn(0)) == 0.0
    assert float(lr_fn(20)) == pytest.approx(0.02)
    tail = [float(lr_fn(t)) for t in range(170, 200)]
    assert np.allclose(tail, 0.02 * 0.05)


@pytest.mark.parametrize("u", [1, 2, 100, 2000, 20000])
def test_ema_decay_matches_official(u):
    assert float(ema_decay(u)) == pytest.approx(0.9998 * (1 - math.exp(-u / 2000)), rel=1e-6)


def test_decay_mask_selects_kernels_only():
    params = {"conv": {"kernel": jnp.ones((3, 3, 1, 2))}, "bn": {"scale": jnp.ones(2), "bias": jnp.ones(2)},
              "pred": {"kernel": jnp.ones((1, 1, 2, 3)), "bias": jnp.ones(3)}}
    mask = decay_mask(params)
    assert mask == {"conv": {"kernel": True}, "bn": {"scale": False, "bias": False},
                    "pred": {"kernel": True, "bias": False}}


@pytest.mark.parametrize("runtime_lr", [False, True])
def test_optimizer_equals_torch_sgd_nesterov_with_param_groups(runtime_lr):
    """NumPy transcription of torch.optim.SGD(momentum=0.9, nesterov=True, dampening=0) with
    weight decay 5e-4 on kernels only, run for a few steps with a changing lr; the schedule
    inside the optimizer, or the run-time lr the trainer passes (make_optimizer() gives the
    direction, train_step scales it by -lr)."""
    rng = np.random.default_rng(0)
    params = {"conv": {"kernel": rng.normal(size=(3, 3, 2, 4)).astype(np.float32)},
              "bn": {"scale": rng.normal(size=(4,)).astype(np.float32),
                     "bias": rng.normal(size=(4,)).astype(np.float32)}}
    lrs = [0.0, 0.01, 0.02, 0.015, 0.005]
    tx = make_optimizer(None if runtime_lr else (lambda step: jnp.asarray(lrs)[step]),
                        momentum=0.9, weight_decay=5e-4)
    state = tx.init(params)
    p_jax = jax.tree_util.tree_map(jnp.asarray, params)
    p_np = jax.tree_util.tree_map(np.array, params)
    buf = jax.tree_util.tree_map(np.zeros_like, params)
    for step, lr in enumerate(lrs):
        grads = jax.tree_util.tree_map(lambda x: rng.normal(size=x.shape).astype(np.float32), params)
        upd, state = tx.update(jax.tree_util.tree_map(jnp.asarray, grads), state, p_jax)
        if runtime_lr:
            upd = jax.tree_util.tree_map(lambda u: -np.float32(lr) * u, upd)
        p_jax = jax.tree_util.tree_map(lambda p, u: p + u, p_jax, upd)
        for path in (("conv", "kernel"), ("bn", "scale"), ("bn", "bias")):
            g = grads[path[0]][path[1]].copy()
            p = p_np[path[0]][path[1]]
            if path[1] == "kernel":
                g = g + 5e-4 * p
            b = buf[path[0]][path[1]]
            b[...] = g if step == 0 else 0.9 * b + g
            p -= lr * (g + 0.9 * b)
    for a, b in zip(jax.tree_util.tree_leaves(p_jax), jax.tree_util.tree_leaves(p_np)):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-6, atol=1e-7)


def test_host_schedule_equals_traced_schedule():
    """The trainer evaluates the schedule on the host (xp=numpy) and passes the lr in."""
    kw = dict(warmup_epochs=2, no_aug_epochs=3)
    traced = yolox_warm_cos_lr(0.02, 10, 20, **kw)
    host = yolox_warm_cos_lr(0.02, 10, 20, xp=np, **kw)
    for t in range(0, 200, 3):
        assert float(host(t)) == pytest.approx(float(traced(t)), rel=1e-6, abs=1e-10)
        assert np.asarray(host(t)).dtype == np.float32


@pytest.mark.parametrize("seconds, per_epoch, expect", [
    (0.1, 64, dict(max_epoch=7, warmup_epochs=1, no_aug_epochs=1, steps_per_epoch=0)),   # 510 steps
    (0.01, 64, dict(max_epoch=79, warmup_epochs=1, no_aug_epochs=4, steps_per_epoch=0)),
    (1.0, 1849, dict(max_epoch=2, warmup_epochs=1, no_aug_epochs=0, steps_per_epoch=25)),
])
def test_fit_schedule_fills_the_budget(seconds, per_epoch, expect):
    """train.max_minutes=1: 85 % of 60 s in steps, whole epochs, official proportions."""
    from yolox_jax.config import Config
    from yolox_jax.train.loop import Plan, fit_schedule

    cfg = Config()
    cfg.train.max_minutes = 1.0
    plan = Plan(global_batch=16, steps_per_epoch=per_epoch, total_steps=per_epoch * 300,
                no_aug_start_epoch=284, base_lr=0.01)
    assert fit_schedule(cfg, plan, seconds) == expect
