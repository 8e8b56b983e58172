"""OTA over a batch, as a hard assigner (``ota``) and as a differentiable one (``ota_soft``).

``ota_batch``: ``jax.vmap`` of :func:`yolox_jax.assign.ota` (Sinkhorn plan, each anchor to the
supplier with the largest share of it, background meaning negative); the plan is dropped and the
result carries no gradient, like every hard assigner.

``ota_soft_batch``: the entropic plan itself is the target. Each anchor's unit of demand is split
by the plan between the gts and the background; with ``m(a)`` the gt holding the largest share of
anchor ``a``:

* ``weight[a] = sum_g plan[g, a]``: the anchor's foreground share, in [0, 1]. The loss weighs the
  anchor's box, class and L1 terms by it and uses it as the objectness target.
* ``quality[a] = plan[m(a), a] * IoU(pred_a, gt_m(a))``: the class target at ``m(a)``'s class
  (YOLOX's IoU-aware target, scaled by the share of the anchor that gt holds).
* ``fg_mask``: anchors whose foreground share is at least ``min_share``.

Gradients: the plan is a differentiable function of the cost (``num_iters`` unrolled log-domain
Sinkhorn iterations, ott-jax), and the cost of the class logits, the objectness logits and the
predicted boxes (through the IoU term). The loss registers this assigner as differentiable, so
``d loss / d raw`` has two parts: the usual one with the targets held fixed, and the one through
``weight`` and ``quality`` into the plan, the cost and back to the same predictions. The IoU
factor of ``quality``, the dynamic-k supplies and the hard choices (``fg_mask``, ``m(a)``) carry
no gradient. ``epsilon`` (entropic regularisation, in cost units) and ``num_iters`` set how soft
the plan is and how many iterations are differentiated.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from yolox_jax.assign._ota import ota
from yolox_jax.assign._simota import Assignment, sanitize_gts
from yolox_jax.ops.boxes import pairwise_iou_cxcywh


def _per_image(fn, grid_xy, strides, options):
    return jax.vmap(lambda pb, cl, ob, gb, gc, gm: fn(pb, cl, ob, grid_xy, strides, gb, gc, gm,
                                                      **options))


def ota_batch(pred_boxes, cls_logits, obj_logits, grid_xy, strides, gt_boxes, gt_classes, gt_mask,
              **options) -> Assignment:
    """OTA for a batch: [B, ...] inputs as in ``yolox_jax.assign.registry``; ``options`` as
    ``yolox_jax.assign.ota`` (num_iters, epsilon, iou_weight, center_radius, candidate_rule,
    center_prior, topk_iou, k_rounding). Returns the hard ``Assignment`` [B, ...]."""
    sg = jax.lax.stop_gradient
    out = _per_image(lambda *xs, **o: ota(*xs, **o)[0], grid_xy, strides, options)(
        sg(pred_boxes), sg(cls_logits), sg(obj_logits), gt_boxes, gt_classes, gt_mask)
    return jax.tree_util.tree_map(sg, out)


def _soft_one(pred_boxes, cls_logits, obj_logits, grid_xy, strides, gt_boxes, gt_classes, gt_mask,
              *, min_share: float = 0.1, **options) -> Assignment:
    hard, plan = ota(pred_boxes, cls_logits, obj_logits, grid_xy, strides, gt_boxes, gt_classes,
                     gt_mask, **options)
    g = gt_mask.shape[0]
    gt_plan = jnp.where(gt_mask[:, None], plan[:g], 0.0)                   # [G, A]
    share = jnp.clip(jnp.sum(gt_plan, axis=0), 0.0, 1.0)                   # [A]
    fg = jax.lax.stop_gradient(share) >= min_share
    owner = jnp.argmax(jax.lax.stop_gradient(gt_plan), axis=0).astype(jnp.int32)
    matched = jnp.where(fg, owner, 0)
    boxes, classes = sanitize_gts(jax.lax.stop_gradient(gt_boxes), gt_classes, gt_mask,
                                  cls_logits.shape[-1])
    iou = jax.lax.stop_gradient(jnp.where(gt_mask[:, None], pairwise_iou_cxcywh(
        boxes, pred_boxes.astype(jnp.float32)), 0.0))                      # [G, A]
    matched_iou = jnp.where(fg, jnp.take_along_axis(iou, matched[None], axis=0)[0], 0.0)
    held = jnp.take_along_axis(gt_plan, matched[None], axis=0)[0]          # plan[m(a), a]
    counts = jnp.zeros((g,), jnp.int32).at[matched].add(fg.astype(jnp.int32))
    return Assignment(
        fg_mask=fg, matched_gt=matched, matched_iou=matched_iou,
        num_fg=jnp.sum(fg).astype(jnp.int32),
        matched_class=jnp.where(fg, classes[matched], 0).astype(jnp.int32),
        max_iou=hard.max_iou, dynamic_k=counts, candidate_mask=hard.candidate_mask,
        quality=jnp.where(fg, held * matched_iou, 0.0),
        weight=jnp.where(fg, share, 0.0))


def ota_soft_batch(pred_boxes, cls_logits, obj_logits, grid_xy, strides, gt_boxes, gt_classes,
                   gt_mask, **options) -> Assignment:
    """Differentiable OTA for a batch (module docstring): [B, ...] inputs as in
    ``yolox_jax.assign.registry``; ``options`` as ``yolox_jax.assign.ota`` plus ``min_share``
    (default 0.1). ``quality`` and ``weight`` [B, A] carry gradients into the predictions;
    ``dynamic_k`` holds the number of foreground anchors of each gt."""
    return _per_image(_soft_one, grid_xy, strides, options)(
        pred_boxes, cls_logits, obj_logits, gt_boxes, gt_classes, gt_mask)
