"""The pure train step ``(state, batch) -> (state, metrics)``."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from yolox_jax.data.multiscale import resize_batch
from yolox_jax.losses import yolox_loss
from yolox_jax.train.state import TrainState, ema_update
from yolox_jax.train.schedule import ema_decay


# optax >= 0.2.6 has optax.tree.norm (global_norm is deprecated there).
_global_norm = getattr(getattr(optax, "tree", None), "norm", None) or optax.global_norm


def train_step(state: TrainState, batch: dict, *, model, tx, lr_fn: Callable | None = None,
               lr=None, size: tuple[int, int] | None = None, use_l1: bool = False,
               ema: bool = True, ema_decay_max: float = 0.9998, ema_ramp: float = 2000.0,
               loss_kwargs: dict | None = None):
    """One SGD step on a batch.

    batch: ``images`` [B, H, W, 3] uint8/float RGB 0..255, ``labels`` [B, M, 5] (cls, cx, cy, w, h)
    in pixels of (H, W), ``label_mask`` [B, M] bool. ``size`` (static) resizes the batch on device
    first (multiscale training). A step whose loss or gradients are not finite leaves the state
    unchanged and reports ``nonfinite = 1`` so the loop can stop with the offending batch.

    The learning rate: either ``tx`` applies it (``make_optimizer(lr_fn)``; ``lr_fn`` gives the
    metric), or ``tx`` stops at the direction (``make_optimizer()``) and ``lr`` (a float32
    scalar, a run-time value) scales it here.
    """
    if (lr is None) == (lr_fn is None):
        raise ValueError("give exactly one of lr_fn (schedule inside tx) and lr (run-time value)")
    images = batch["images"].astype(jnp.float32)
    labels = batch["labels"].astype(jnp.float32)
    if size is not None and tuple(size) != tuple(images.shape[1:3]):
        images, labels = resize_batch(images, labels, tuple(size))
    image_hw = tuple(images.shape[1:3])

    def loss_fn(params):
        raw, updates = model.apply({"params": params, "batch_stats": state.batch_stats}, images,
                                   train=True, mutable=["batch_stats"])
        losses = yolox_loss(raw.astype(jnp.float32), labels, batch["label_mask"], image_hw,
                            use_l1=use_l1, **(loss_kwargs or {}))
        return losses["total_loss"], (losses, updates["batch_stats"])

    grads, (losses, new_batch_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
    updates, new_opt_state = tx.update(grads, state.opt_state, state.params)
    if lr is not None:
        lr = jnp.asarray(lr, jnp.float32)
        updates = jax.tree_util.tree_map(lambda u: (-lr * u).astype(u.dtype), updates)
    new_params = optax.apply_updates(state.params, updates)

    new_step = state.step + 1
    if ema:
        d = ema_decay(new_step, ema_decay_max, ema_ramp)
        new_ema_params = ema_update(state.ema_params, new_params, d)
        new_ema_stats = ema_update(state.ema_batch_stats, new_batch_stats, d)
    else:
        new_ema_params, new_ema_stats = new_params, new_batch_stats

    # One scalar (the global norm) tells whether any gradient is non-finite; a per-leaf
    # all(isfinite) feeding the select below makes XLA:CPU compile ~5x longer.
    grad_norm = _global_norm(grads)
    finite = jnp.isfinite(losses["total_loss"]) & jnp.isfinite(grad_norm)
    candidate = TrainState(step=new_step, params=new_params, batch_stats=new_batch_stats,
                           opt_state=new_opt_state, ema_params=new_ema_params,
                           ema_batch_stats=new_ema_stats)
    new_state = jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), candidate, state)
    metrics = {k: v.astype(jnp.float32) for k, v in losses.items()}
    metrics["lr"] = jnp.asarray(lr_fn(state.step) if lr is None else lr, jnp.float32)
    metrics["grad_norm"] = grad_norm
    metrics["nonfinite"] = jnp.logical_not(finite).astype(jnp.int32)
    return new_state, metrics


def bind_train_step(*, model, tx, lr_fn=None, ema=True, ema_decay_max=0.9998, ema_ramp=2000.0,
                    loss_kwargs=None):
    """``train_step`` with the static pieces bound; remaining args ``(state, batch, size, use_l1)``,
    plus ``lr`` (a run-time scalar) when ``lr_fn`` is None."""
    if lr_fn is not None:
        def step(state, batch, size=None, use_l1=False):
            return train_step(state, batch, model=model, tx=tx, lr_fn=lr_fn, size=size,
                              use_l1=use_l1, ema=ema, ema_decay_max=ema_decay_max,
                              ema_ramp=ema_ramp, loss_kwargs=loss_kwargs)
        return step

    def step(state, batch, size=None, use_l1=False, lr=0.0):  # noqa: F811 - one program name
        return train_step(state, batch, model=model, tx=tx, lr=lr, size=size, use_l1=use_l1,
                          ema=ema, ema_decay_max=ema_decay_max, ema_ramp=ema_ramp,
                          loss_kwargs=loss_kwargs)
    return step
