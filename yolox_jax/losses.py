"""The YOLOX training loss (docs/official-behaviour.md §3.4), batched with static shapes.

Assignment (SimOTA by default; any assigner of ``yolox_jax.assign.registry`` by name) runs on the
whole batch under ``stop_gradient``; the losses are masked sums over all anchors divided by the
batch foreground count, so there is no Python loop over images and no data-dependent shape.

Soft targets: an assigner may return ``quality`` (the class target at the matched class, in place
of YOLOX's IoU) and ``weight`` (a per-anchor foreground weight: it multiplies the box, class and L1
terms, replaces the 1 of the binary objectness target, and the normaliser becomes the sum of the
weights). A differentiable assigner (``ota_soft``) keeps the gradient of those two (``ota_soft``
itself gives ``weight`` none unless ``weight_grad=True``).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Union

import jax
import jax.numpy as jnp

from yolox_jax.ops.anchors import DEFAULT_STRIDES, anchor_grid, decode_boxes
from yolox_jax.assign import registry
from yolox_jax.assign._simota import sanitize_gts

REG_WEIGHT = 5.0


def bce_with_logits(logits, targets):
    """Elementwise binary cross-entropy on logits (the numerically stable form)."""
    return jnp.maximum(logits, 0.0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def iou_loss(pred, target, loss_type: str = "iou"):
    """Official ``IOUloss`` per box pair: [..., 4] cxcywh x2 -> [...].

    "iou": ``1 - iou**2`` with ``iou = inter / (union + 1e-16)``, intersection counted only when
    the top-left corner is strictly before the bottom-right one. "giou": ``1 - clip(giou, -1, 1)``.
    """
    p_tl, p_br = pred[..., :2] - pred[..., 2:4] / 2, pred[..., :2] + pred[..., 2:4] / 2
    t_tl, t_br = target[..., :2] - target[..., 2:4] / 2, target[..., :2] + target[..., 2:4] / 2
    tl, br = jnp.maximum(p_tl, t_tl), jnp.minimum(p_br, t_br)
    area_p = pred[..., 2] * pred[..., 3]
    area_t = target[..., 2] * target[..., 3]
    inside = jnp.all(tl < br, axis=-1).astype(pred.dtype)
    area_i = jnp.prod(br - tl, axis=-1) * inside
    area_u = area_p + area_t - area_i
    iou = area_i / (area_u + 1e-16)
    if loss_type == "iou":
        return 1.0 - iou ** 2
    if loss_type == "giou":
        c_tl, c_br = jnp.minimum(p_tl, t_tl), jnp.maximum(p_br, t_br)
        area_c = jnp.prod(c_br - c_tl, axis=-1)
        giou = iou - (area_c - area_u) / jnp.maximum(area_c, 1e-16)
        return 1.0 - jnp.clip(giou, -1.0, 1.0)
    raise ValueError(f"iou_loss_type must be 'iou' or 'giou', got {loss_type!r}")


def yolox_loss(raw, labels, label_mask, image_hw, *, use_l1: bool = False,
               obj_target: str = "binary", iou_loss_type: str = "iou",
               assigner: Union[str, Callable[..., Any], None] = None,
               assign_fn: Optional[Callable[..., Any]] = None,
               assign_kwargs: Optional[Mapping[str, Any]] = None,
               strides=DEFAULT_STRIDES) -> dict:
    """YOLOX loss of a batch, equal to the official ``YOLOXHead.get_losses``.

    Args:
      raw: [B, A, 5 + C] train-mode head output (tx, ty, tw, th, obj logit, class logits).
      labels: [B, M, 5] rows (cls, cx, cy, w, h) in input pixels.
      label_mask: [B, M] bool, valid label rows (padding rows may hold anything).
      image_hw: static (H, W) of the network input.
      use_l1: add the L1 loss on raw (tx, ty, tw, th) (official: last 15 epochs); a Python bool
        or a traced bool scalar (so one compiled step serves both training phases).
      obj_target: "binary" (official: 1 for fg, 0 else), "max_iou" (fg 1, negatives get their max
        IoU with any gt, a common variant), or "iou" (fg get their matched IoU,
        negatives their max IoU). IoU targets carry no gradient.
      iou_loss_type: "iou" (official, 1 - iou^2) or "giou".
      assigner: a batched assigner: a name of ``yolox_jax.assign.registry`` ("simota",
        "ota", "ota_soft", "tal", "atss", "dsl", a registered name, "module:function") or a
        callable with the registry's signature. Default None: "simota" (``simota_batch``:
        SimOTA, equal to ``jax.vmap(simota)``, with gt buckets and anchor compaction).
      assign_fn: instead, a per-image assigner with the ``simota`` signature returning an
        ``Assignment``; it is vmapped over the batch.
      assign_kwargs: keyword options passed to the assigner unchanged (e.g.
        ``{"topk_iou": 20}`` or ``{"gt_buckets": (8, 32, 64)}`` for SimOTA).
      strides: anchor strides.

    Returns:
      dict of scalars: total_loss, iou_loss (already x5), l1_loss, conf_loss, cls_loss, num_fg
      (= max(total fg, 1) / max(total gts, 1), as the official code logs it).
    """
    assign_kwargs = dict(assign_kwargs or {})
    raw = raw.astype(jnp.float32)
    num_classes = raw.shape[-1] - 5
    grid_xy, stride_arr = anchor_grid(tuple(image_hw), strides)
    if raw.shape[1] != grid_xy.shape[0]:
        raise ValueError(f"raw has {raw.shape[1]} anchors, image {tuple(image_hw)} gives {grid_xy.shape[0]}")

    label_mask = label_mask.astype(bool)
    gt_boxes, gt_classes = jax.vmap(sanitize_gts, in_axes=(0, 0, 0, None))(
        labels[..., 1:5], jnp.where(label_mask, labels[..., 0], 0.0).astype(jnp.int32),
        label_mask, num_classes)
    pred_boxes = decode_boxes(raw[..., :4], grid_xy, stride_arr)              # [B, A, 4]
    obj_logits, cls_logits = raw[..., 4], raw[..., 5:]

    def assign_one(boxes, cls, obj, gtb, gtc, gtm):
        out = assign_fn(boxes, cls, obj, grid_xy, stride_arr, gtb, gtc, gtm, **assign_kwargs)
        return out[0] if isinstance(out, tuple) and not hasattr(out, "fg_mask") else out

    sg = jax.lax.stop_gradient
    differentiable = False
    if assign_fn is not None:
        asg = jax.vmap(assign_one)(sg(pred_boxes), sg(cls_logits), sg(obj_logits), gt_boxes,
                                   gt_classes, label_mask)
    else:
        name = "simota" if assigner is None else assigner
        fn = registry.get_assigner(name) if isinstance(name, str) else name
        differentiable = (registry.is_differentiable(name) if isinstance(name, str)
                          else bool(getattr(fn, "differentiable", False)))
        assign_kwargs = registry.loss_assign_kwargs(fn, assign_kwargs, obj_target)
        inputs = (pred_boxes, cls_logits, obj_logits) if differentiable else \
            (sg(pred_boxes), sg(cls_logits), sg(obj_logits))
        asg = fn(*inputs, grid_xy, stride_arr, gt_boxes, gt_classes, label_mask, **assign_kwargs)
    soft = {"quality": asg.quality, "weight": asg.weight} if differentiable else {}
    asg = jax.tree_util.tree_map(jax.lax.stop_gradient, asg)._replace(**soft)
    fg = asg.fg_mask                                                            # [B, A]
    weight = asg.weight                                                         # None or [B, A]

    def fg_sum(x):
        """Sum of ``x`` [B, A] over the foreground (weighted when the assigner gives weights)."""
        return jnp.sum(jnp.where(fg, x if weight is None else weight * x, 0.0))

    fg_f = fg.astype(jnp.float32) if weight is None else jnp.where(fg, weight, 0.0)
    num_fg = jnp.maximum(jnp.sum(sg(fg_f)), 1.0)
    num_gts = jnp.maximum(jnp.sum(label_mask.astype(jnp.float32)), 1.0)

    reg_target = jnp.take_along_axis(gt_boxes, asg.matched_gt[..., None], axis=1)  # [B, A, 4]
    loss_iou = fg_sum(iou_loss(pred_boxes, reg_target, iou_loss_type)) / num_fg

    if obj_target == "binary":
        obj_t = fg_f
    elif obj_target == "max_iou":
        obj_t = jnp.where(fg, 1.0, asg.max_iou)
    elif obj_target == "iou":
        obj_t = jnp.where(fg, asg.matched_iou, asg.max_iou)
    else:
        raise ValueError(f"obj_target must be 'binary', 'max_iou' or 'iou', got {obj_target!r}")
    loss_obj = jnp.sum(bce_with_logits(obj_logits, obj_t)) / num_fg

    quality = asg.matched_iou if asg.quality is None else asg.quality
    cls_t = jax.nn.one_hot(asg.matched_class, num_classes) * quality[..., None]
    cls_per_anchor = jnp.sum(bce_with_logits(cls_logits, cls_t), axis=-1)
    loss_cls = fg_sum(cls_per_anchor) / num_fg

    # use_l1 may be a traced bool (one compiled train step for both phases) or a Python bool.
    if not (isinstance(use_l1, bool) and not use_l1):
        s = stride_arr[:, None]
        l1_t = jnp.concatenate([reg_target[..., :2] / s - grid_xy,
                                jnp.log(reg_target[..., 2:4] / s + 1e-8)], axis=-1)
        # Zero the target off the foreground so a degenerate gt cannot put NaN into the gradient.
        l1_t = jax.lax.stop_gradient(jnp.where(fg[..., None], l1_t, 0.0))
        l1 = jnp.sum(jnp.abs(raw[..., :4] - l1_t), axis=-1)
        loss_l1 = fg_sum(l1) / num_fg
        loss_l1 = jnp.where(jnp.asarray(use_l1), loss_l1, 0.0)
    else:
        loss_l1 = jnp.zeros((), jnp.float32)

    iou_term = REG_WEIGHT * loss_iou
    total = iou_term + loss_obj + loss_cls + loss_l1
    return {"total_loss": total, "iou_loss": iou_term, "l1_loss": loss_l1, "conf_loss": loss_obj,
            "cls_loss": loss_cls, "num_fg": num_fg / num_gts}
