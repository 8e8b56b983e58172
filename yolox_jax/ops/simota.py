"""SimOTA label assignment with static shapes (YOLOX_REFERENCE.md §3.1-3.3).

One image per call; ``jax.vmap`` it over a batch. Ground truths are padded to a fixed ``G`` and
masked, anchors are the full grid ``A``: every intermediate is ``[G, A]`` or smaller, never
``[G, A, C]`` (the class cost is a per-anchor sum plus a gather of one class per gt).

The data-dependent steps of the official implementation map to fixed-shape equivalents:

* "candidate anchors" (a boolean index into the anchors) -> a mask ``[A]``; non-candidates get an
  infinite cost and a zero IoU, so they can neither be picked nor count towards dynamic k;
* ``torch.topk(cost[g], k_g, largest=False)`` with a per-gt ``k_g`` -> one ``lax.top_k`` with the
  static upper bound ``topk_iou`` on every row, keeping the first ``k_g`` columns. ``lax.top_k``
  breaks ties by the lower anchor index, which is a deterministic version of what torch does;
* conflict resolution -> ``argmin`` of the cost over all (valid) gts, as in the official code.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from yolox_jax.ops.boxes import pairwise_iou_cxcywh

# Cost added to pairs outside the geometry constraint; values of the official code versions.
PENALTY_CENTER = 1e6       # candidate_rule="center" (YOLOX 0.3.0 after PR #1589)
PENALTY_BOX_OR_CENTER = 1e5  # candidate_rule="box_or_center" (legacy, and mmdetection)
DEFAULT_RADIUS = {"center": 1.5, "box_or_center": 2.5}
# A valid-looking box for padded gt rows: keeps junk (NaN, 1e30) out of every arithmetic path.
_SAFE_BOX = (0.0, 0.0, 1.0, 1.0)


class Assignment(NamedTuple):
    """Result of a label assignment for one image (add a leading batch axis under vmap).

    fg_mask [A] bool: foreground (positive) anchors.
    matched_gt [A] int32: gt row of each anchor (meaningful where ``fg_mask``; 0 elsewhere).
    matched_iou [A] float32: IoU of the prediction with its matched gt, 0 where not fg.
    num_fg int32 []: number of foreground anchors.
    matched_class [A] int32: class of the matched gt (0 where not fg).
    max_iou [A] float32: max IoU of each prediction with any valid gt (0 without gts); the
        objectness target for negatives in the ``obj_target="max_iou"`` loss variant.
    dynamic_k [G] int32: number of anchors each gt asked for (0 for padded rows).
    candidate_mask [A] bool: anchors that took part in the assignment (geometry candidates).
    """

    fg_mask: jax.Array
    matched_gt: jax.Array
    matched_iou: jax.Array
    num_fg: jax.Array
    matched_class: jax.Array
    max_iou: jax.Array
    dynamic_k: jax.Array
    candidate_mask: jax.Array


def sanitize_gts(gt_boxes, gt_classes, gt_mask, num_classes: int):
    """Replace padded gt rows by a harmless box and class 0 so junk never reaches arithmetic.

    gt_boxes [G, 4] cxcywh, gt_classes [G], gt_mask [G] bool -> (boxes [G, 4] f32, classes [G] i32).
    """
    gt_mask = gt_mask.astype(bool)
    boxes = jnp.where(gt_mask[:, None], gt_boxes.astype(jnp.float32),
                      jnp.asarray(_SAFE_BOX, jnp.float32))
    classes = jnp.where(gt_mask, gt_classes, 0).astype(jnp.int32)
    # Out-of-range class ids on valid rows would silently gather garbage: clip like one_hot would fail.
    classes = jnp.clip(classes, 0, num_classes - 1)
    return boxes, classes


def geometry(grid_xy, strides, gt_boxes, *, candidate_rule: str, center_radius: float):
    """Geometry relation of every (gt, anchor) pair.

    Returns ``(in_region [G, A] bool, any_region [G, A] bool)``: ``in_region`` is the pair test that
    escapes the penalty, ``any_region`` the per-pair test whose union over gts makes an anchor a
    candidate. For "center" both are the centre test (|anchor - gt centre| < r * s on both axes,
    strict); for "box_or_center" ``in_region`` = in_box AND in_centre, ``any_region`` = in_box OR
    in_centre (legacy rule). The subtraction order mirrors the official float32 arithmetic
    (edges first, then anchor - edge), so boundary anchors fall on the same side.
    """
    strides = strides.astype(jnp.float32)
    ax = ((grid_xy[:, 0] + 0.5) * strides)[None, :]
    ay = ((grid_xy[:, 1] + 0.5) * strides)[None, :]
    cx, cy = gt_boxes[:, 0:1], gt_boxes[:, 1:2]
    dist = (strides * center_radius)[None, :]
    in_center = jnp.minimum(jnp.minimum(ax - (cx - dist), ay - (cy - dist)),
                            jnp.minimum((cx + dist) - ax, (cy + dist) - ay)) > 0.0
    if candidate_rule == "center":
        return in_center, in_center
    if candidate_rule == "box_or_center":
        hw, hh = 0.5 * gt_boxes[:, 2:3], 0.5 * gt_boxes[:, 3:4]
        in_box = jnp.minimum(jnp.minimum(ax - (cx - hw), ay - (cy - hh)),
                             jnp.minimum((cx + hw) - ax, (cy + hh) - ay)) > 0.0
        return in_box & in_center, in_box | in_center
    raise ValueError(f"candidate_rule must be 'center' or 'box_or_center', got {candidate_rule!r}")


def pairwise_cls_cost(cls_logits, obj_logits, gt_classes):
    """Official SimOTA class cost ``sum_c BCE(sqrt(sig(cls) * sig(obj)), onehot(gt))`` -> [G, A].

    cls_logits [A, C], obj_logits [A], gt_classes [G] int32. The sum over classes splits into a
    per-anchor term with all-zero targets plus a correction for the one positive class, so only
    [A, C] and [G, A] arrays exist. Logs are clamped at -100 like ``F.binary_cross_entropy``, and
    ``log(1 - p)`` is taken literally (not log1p) as torch does, in float32.
    """
    p = jnp.sqrt(jax.nn.sigmoid(cls_logits.astype(jnp.float32))
                 * jax.nn.sigmoid(obj_logits.astype(jnp.float32))[:, None])
    log_p = jnp.maximum(jnp.log(p), -100.0)
    log_1mp = jnp.maximum(jnp.log(1.0 - p), -100.0)
    neg_sum = -jnp.sum(log_1mp, axis=-1)                    # [A]: cost if every target were 0
    log_p_y = jnp.take(log_p, gt_classes, axis=1).T         # [G, A]
    log_1mp_y = jnp.take(log_1mp, gt_classes, axis=1).T     # [G, A]
    return neg_sum[None, :] + log_1mp_y - log_p_y


def dynamic_k(iou_cand, gt_mask, *, topk_iou: int = 10, k_rounding: str = "floor"):
    """k_g = max(1, floor|round(sum of the top-``topk_iou`` candidate IoUs of gt g)); 0 for padding.

    iou_cand [G, A] IoUs with non-candidates zeroed (so fewer than ``topk_iou`` candidates adds
    zeros, the same as the official ``min(10, n_candidates)``). Returns [G] int32.
    """
    k_top = min(int(topk_iou), iou_cand.shape[1])
    top_ious, _ = jax.lax.top_k(iou_cand, k_top)  # descending, as torch.topk returns them
    total = jnp.sum(top_ious, axis=1)
    if k_rounding == "floor":
        k = jnp.floor(total)
    elif k_rounding == "round":
        k = jnp.round(total)
    else:
        raise ValueError(f"k_rounding must be 'floor' or 'round', got {k_rounding!r}")
    return jnp.where(gt_mask, jnp.maximum(k.astype(jnp.int32), 1), 0)


def select_lowest_cost(cost, k, max_k: int):
    """Per gt row, mark its ``k[g]`` lowest-cost anchors (``k <= max_k``); inf costs never count.

    cost [G, A] float32 (inf = forbidden), k [G] int32 -> matching [G, A] bool. Ties go to the
    lower anchor index (``lax.top_k`` order).
    """
    g, a = cost.shape
    max_k = min(int(max_k), a)
    neg_top, idx = jax.lax.top_k(-cost, max_k)                          # [G, K]
    take = (jnp.arange(max_k)[None, :] < k[:, None]) & jnp.isfinite(neg_top)
    rows = jnp.broadcast_to(jnp.arange(g)[:, None], idx.shape)
    return jnp.zeros((g, a), bool).at[rows, idx].max(take)


def resolve_conflicts(matching, cost):
    """One gt per anchor: anchors chosen by several gts go to ``argmin_g cost[g, a]`` over all gts.

    matching [G, A] bool, cost [G, A] -> (fg_mask [A] bool, matched_gt [A] int32).
    """
    count = jnp.sum(matching, axis=0)
    sole = jnp.argmax(matching, axis=0)
    best = jnp.argmin(cost, axis=0)
    matched = jnp.where(count > 1, best, sole).astype(jnp.int32)
    fg = count > 0
    return fg, jnp.where(fg, matched, 0)


def simota(pred_boxes, cls_logits, obj_logits, grid_xy, strides, gt_boxes, gt_classes, gt_mask,
           *, center_radius: Optional[float] = None, candidate_rule: str = "center",
           soft_center_prior: Optional[float] = None, topk_iou: int = 10,
           k_rounding: str = "floor", iou_weight: float = 3.0) -> Assignment:
    """SimOTA for one image, equal to the official YOLOX SimOTA with the default options.

    Args:
      pred_boxes: [A, 4] decoded cxcywh predictions (pixels).
      cls_logits: [A, C] class logits. obj_logits: [A] objectness logits.
      grid_xy: [A, 2] (x index, y index) of each anchor in its level. strides: [A].
      gt_boxes: [G, 4] cxcywh. gt_classes: [G] int. gt_mask: [G] bool (False rows may hold junk).
      center_radius: half-size of the centre region in strides; default 1.5 for "center",
        2.5 for "box_or_center" (the values of the respective official versions).
      candidate_rule: "center" (official since Jan 2023): candidates are anchors in the centre
        region of any gt, pairs outside the gt's own region cost +1e6. "box_or_center" (legacy
        YOLOX / mmdetection): candidates are anchors inside any gt box OR centre region, pairs
        that are not (in box AND in centre) cost +1e5.
      soft_center_prior: None (official) or a float c: no anchor is excluded; every anchor is a
        candidate (also for the dynamic-k IoU sum) and pairs outside the region pay c instead of
        the hard penalty (the "centre prior" cost of OTA / the seed article).
      topk_iou: number of largest candidate IoUs summed for dynamic k (official 10, seed 20).
      k_rounding: "floor" (official ``int()`` truncation) or "round" (nearest, half to even).
      iou_weight: weight of ``-log(IoU + 1e-8)`` in the cost (official 3.0).

    Returns:
      ``Assignment``; everything is computed under ``stop_gradient``.
    """
    if center_radius is None:
        center_radius = DEFAULT_RADIUS.get(candidate_rule, 1.5)
    sg = jax.lax.stop_gradient
    pred_boxes, cls_logits, obj_logits = sg(pred_boxes), sg(cls_logits), sg(obj_logits)
    gt_mask = sg(gt_mask).astype(bool)
    num_classes = cls_logits.shape[-1]
    boxes, classes = sanitize_gts(sg(gt_boxes), sg(gt_classes), gt_mask, num_classes)

    in_region, any_region = geometry(grid_xy, strides, boxes, candidate_rule=candidate_rule,
                                     center_radius=center_radius)
    in_region &= gt_mask[:, None]
    any_region &= gt_mask[:, None]
    if soft_center_prior is None:
        candidate = jnp.any(any_region, axis=0)                      # [A]
        penalty = PENALTY_CENTER if candidate_rule == "center" else PENALTY_BOX_OR_CENTER
    else:
        candidate = jnp.full(any_region.shape[1:], jnp.any(gt_mask))
        penalty = float(soft_center_prior)

    iou = pairwise_iou_cxcywh(boxes, pred_boxes.astype(jnp.float32))   # [G, A]
    iou = jnp.where(gt_mask[:, None], iou, 0.0)
    pair_ok = gt_mask[:, None] & candidate[None, :]
    iou_cand = jnp.where(pair_ok, iou, 0.0)

    cost = (pairwise_cls_cost(cls_logits, obj_logits, classes)
            + iou_weight * -jnp.log(iou + 1e-8)
            + penalty * (~in_region).astype(jnp.float32))
    cost = jnp.where(pair_ok, cost, jnp.inf)

    k = dynamic_k(iou_cand, gt_mask, topk_iou=topk_iou, k_rounding=k_rounding)
    matching = select_lowest_cost(cost, k, topk_iou)
    fg, matched = resolve_conflicts(matching, cost)

    matched_iou = jnp.where(fg, jnp.take_along_axis(iou, matched[None, :], axis=0)[0], 0.0)
    matched_class = jnp.where(fg, classes[matched], 0)
    return Assignment(
        fg_mask=fg,
        matched_gt=matched,
        matched_iou=matched_iou,
        num_fg=jnp.sum(fg).astype(jnp.int32),
        matched_class=matched_class.astype(jnp.int32),
        max_iou=jnp.max(iou, axis=0, initial=0.0),
        dynamic_k=k,
        candidate_mask=candidate,
    )
