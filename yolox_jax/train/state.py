"""Train state and the official optimizer (docs/official-behaviour.md §4)."""
from __future__ import annotations

from typing import Any, Callable

import flax
import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """Everything a train step reads and writes; a pytree of arrays only.

    ``ema_params``/``ema_batch_stats`` are the official ModelEMA (BN statistics are averaged too).
    ``step`` counts optimizer updates done so far (the next step runs with lr(step)).
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    ema_params: Any
    ema_batch_stats: Any


def decay_mask(params):
    """True for conv/linear weights (leaves named ``kernel``): the official pg1 gets weight decay,
    BN scales and all biases (pg0, pg2) do not."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) == "kernel", params)


def make_optimizer(lr_fn: Callable | None = None, *, momentum: float = 0.9,
                   weight_decay: float = 5e-4):
    """SGD, Nesterov momentum, coupled L2 on kernels only, per-step lr: equal to the official
    ``torch.optim.SGD(nesterov=True)`` with its three parameter groups.

    ``lr_fn(step)``: the schedule, traced into the step program. ``None``: the optimizer stops
    at the update direction and the train step scales it by a learning rate passed in at run
    time (``train_step(..., lr=...)``), so the compiled program does not depend on the schedule
    (the trainer's way: a changed schedule or ``--minutes`` reuses compiled programs).
    """
    direction = [optax.add_decayed_weights(weight_decay, mask=decay_mask),
                 optax.trace(decay=momentum, nesterov=True)]
    if lr_fn is None:
        return optax.chain(*direction)
    return optax.chain(*direction, optax.scale_by_learning_rate(lr_fn))


def create_train_state(variables, tx) -> TrainState:
    """Fresh state from model variables ``{"params", "batch_stats"}``; EMA starts as a copy."""
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    copy = lambda t: jax.tree_util.tree_map(jnp.array, t)  # noqa: E731 - distinct buffers (donation)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=batch_stats,
        opt_state=tx.init(params),
        ema_params=copy(params),
        ema_batch_stats=copy(batch_stats),
    )


def ema_update(ema_tree, new_tree, decay):
    """ema = d·ema + (1 − d)·new for every floating leaf."""
    return jax.tree_util.tree_map(lambda e, n: decay * e + (1.0 - decay) * n, ema_tree, new_tree)


def eval_variables(state: TrainState, use_ema: bool = True) -> dict:
    """The variables to evaluate or export: the EMA model by default, as the official trainer."""
    if use_ema:
        return {"params": state.ema_params, "batch_stats": state.ema_batch_stats}
    return {"params": state.params, "batch_stats": state.batch_stats}


def load_matching(target: dict, source: dict) -> tuple[dict, list[str]]:
    """Copy every leaf of ``source`` whose path and shape match ``target`` (fine-tuning).

    Returns the merged tree and a list of human-readable reasons for what was skipped (shape
    mismatch such as ``cls_preds`` with another class count, or paths absent from one side).
    """
    flat_t = flax.traverse_util.flatten_dict(flax.core.unfreeze(target), sep="/")
    flat_s = flax.traverse_util.flatten_dict(flax.core.unfreeze(source), sep="/")
    merged, skipped = {}, []
    for key, value in flat_t.items():
        src = flat_s.get(key)
        if src is None:
            skipped.append(f"{key}: not in the checkpoint, kept at initialisation")
            merged[key] = value
        elif tuple(src.shape) != tuple(value.shape):
            skipped.append(f"{key}: checkpoint shape {tuple(src.shape)} != model {tuple(value.shape)}")
            merged[key] = value
        else:
            merged[key] = jnp.asarray(src, dtype=value.dtype)
    for key in flat_s:
        if key not in flat_t:
            skipped.append(f"{key}: in the checkpoint but not in the model, ignored")
    return flax.traverse_util.unflatten_dict(merged, sep="/"), skipped
