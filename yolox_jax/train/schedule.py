"""Learning-rate and EMA-decay schedules of the official recipe (docs/official-behaviour.md §4)."""
from __future__ import annotations

import jax.numpy as jnp


def yolox_warm_cos_lr(lr: float, iters_per_epoch: int, total_epochs: int, *, warmup_epochs: float = 5,
                      no_aug_epochs: float = 15, min_lr_ratio: float = 0.05, warmup_lr: float = 0.0,
                      xp=jnp):
    """The official ``yoloxwarmcos`` schedule as a function of the step t (0-based).

    W = warmup_epochs·E, N = no_aug_epochs·E, T = total_epochs·E, min_lr = ratio·lr:
    t <= W: (lr - warmup_lr)·(t/W)² + warmup_lr; t >= T - N: min_lr;
    else min_lr + ½(lr - min_lr)(1 + cos(π (t - W)/(T - W - N))).
    Step t of the official trainer runs with f(t) (its optimizer starts at lr 0 = f(0)).
    ``xp=numpy`` evaluates it on the host in float32 (the trainer's run-time learning rate).
    """
    warmup = float(warmup_epochs * iters_per_epoch)
    no_aug = float(no_aug_epochs * iters_per_epoch)
    total = float(total_epochs * iters_per_epoch)
    min_lr = lr * min_lr_ratio

    def schedule(step):
        f32 = xp.float32
        t = xp.asarray(step, f32)
        warm = f32(lr - warmup_lr) * xp.square(t / f32(max(warmup, 1.0))) + f32(warmup_lr)
        span = f32(max(total - warmup - no_aug, 1.0))
        cos = f32(min_lr) + f32(0.5 * (lr - min_lr)) * (f32(1.0) + xp.cos(f32(xp.pi) * (t - f32(warmup)) / span))
        out = xp.where(t >= f32(total - no_aug), f32(min_lr), cos)
        return xp.where(t <= f32(warmup), warm, out)

    return schedule


def ema_decay(updates, decay: float = 0.9998, ramp: float = 2000.0):
    """Official ModelEMA decay d(u) = decay·(1 − exp(−u/ramp)); u counts updates including this one."""
    # -expm1 keeps full float32 precision for the tiny decays of the first updates.
    return decay * -jnp.expm1(-jnp.asarray(updates, jnp.float32) / ramp)
