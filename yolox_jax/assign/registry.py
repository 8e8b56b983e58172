"""Assigners by name: the built-ins, ``module:function`` paths and ones registered at run time.

Every assigner has one signature, batched over images with ground truths padded to a fixed ``G``
and masked::

    assigner(pred_boxes, cls_logits, obj_logits, grid_xy, strides,
             gt_boxes, gt_classes, gt_mask, **options) -> Assignment

    pred_boxes [B, A, 4] decoded cxcywh (pixels), cls_logits [B, A, C], obj_logits [B, A],
    grid_xy [A, 2] (x, y index of each anchor in its level), strides [A],
    gt_boxes [B, G, 4] cxcywh, gt_classes [B, G] int, gt_mask [B, G] bool (False rows: junk).

It returns an ``Assignment`` with a leading batch axis: ``fg_mask``, ``matched_gt``,
``matched_iou``, ``num_fg`` and ``matched_class`` always; ``quality`` (the soft class target) and
``weight`` (per-anchor loss weight) when the method has them; ``max_iou`` where the loss's
``obj_target`` needs it (an assigner with a ``with_max_iou`` keyword gets ``with_max_iou=False``
from the loss under the default binary target, and may then leave ``max_iou`` None). It must be
a pure function of arrays, jit-able with static shapes, and keep memory O(G x A) (never a
[G, A, C] array). The loss calls it under ``stop_gradient`` unless
the assigner is differentiable (``is_differentiable``: registered so, or a ``module:function``
whose function has ``differentiable = True``).
"""
from __future__ import annotations

import importlib
import inspect
from typing import Callable

from yolox_jax.errors import UserError

# Built-ins load on first use (OTA needs ott-jax, seconds to import).
_BUILTIN = {
    "simota": "yolox_jax.assign._simota:simota_batch",
    "ota": "yolox_jax.assign._ota_batch:ota_batch",
    "ota_soft": "yolox_jax.assign._ota_batch:ota_soft_batch",
    "tal": "yolox_jax.assign._tal:tal",
    "atss": "yolox_jax.assign._atss:atss",
    "dsl": "yolox_jax.assign._dsl:dsl",
}
_REGISTERED: dict[str, Callable] = {}
# Assigners whose targets carry gradients into the predictions (the loss does not stop them).
_DIFFERENTIABLE = {"ota_soft"}


def register(name: str, fn: Callable, *, differentiable: bool = False) -> None:
    """Make ``fn`` (the signature above) available as ``train.assigner=name``.

    ``differentiable``: the loss lets gradients flow through the assignment's ``quality`` and
    ``weight`` into the predictions instead of stopping them."""
    if not callable(fn):
        raise TypeError(f"assigner {name!r} must be callable, got {type(fn).__name__}")
    _REGISTERED[name] = fn
    (_DIFFERENTIABLE.add if differentiable else _DIFFERENTIABLE.discard)(name)


def assigner_names() -> list[str]:
    """Names ``get_assigner`` accepts (besides ``module:function`` paths)."""
    return sorted(set(_BUILTIN) | set(_REGISTERED))


def is_differentiable(name: str) -> bool:
    """Whether the loss lets gradients through ``name``'s ``quality`` and ``weight``: the
    built-in ``ota_soft``, a name registered with ``differentiable=True``, or a
    ``module:function`` path whose function has the attribute ``differentiable = True``."""
    if name in _DIFFERENTIABLE:
        return True
    if name in _REGISTERED or name in _BUILTIN or ":" not in name:
        return False
    return bool(getattr(get_assigner(name), "differentiable", False))


def takes_keyword(fn: Callable, keyword: str) -> bool:
    """Whether ``fn`` (a function or ``functools.partial``) names ``keyword`` among its
    parameters (a bare ``**kwargs`` does not count)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    p = params.get(keyword)
    return p is not None and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)


def loss_assign_kwargs(fn: Callable, options: dict, obj_target: str = "binary") -> dict:
    """``options`` as the loss passes them to ``fn``: with ``with_max_iou`` set (unless given)
    where ``fn`` takes that keyword, True only for the objectness targets that read
    ``Assignment.max_iou``."""
    options = dict(options)
    if takes_keyword(fn, "with_max_iou"):
        options.setdefault("with_max_iou", obj_target != "binary")
    return options


def _load(path: str, name: str) -> Callable:
    module, _, attr = path.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise UserError(f"cannot load assigner {path!r}: {err}", "train.assigner") from None
    if not callable(fn):
        raise UserError(f"{path!r} is not callable", "train.assigner")
    return fn


def get_assigner(name: str) -> Callable:
    """The assigner called ``name``: registered, built-in, or a ``module:function`` path."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name in _BUILTIN:
        return _load(_BUILTIN[name], name)
    if ":" in name:
        return _load(name, name)
    raise UserError(f"unknown assigner {name!r}; known: {', '.join(assigner_names())}, or "
                    "module:function", "train.assigner")
