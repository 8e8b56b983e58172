"""ATSS label assignment on anchor points, transcribed from MMYOLO's ``BatchATSSAssigner``
(``mmyolo/models/task_modules/assigners/batch_atss_assigner.py`` and ``utils.py``, commit
8c4d9dc503dc8e327bec8147e8dc97124052f693; YOLOv6's warm-up assigner).

Every anchor point ``p = (grid_xy + 0.5) * stride`` (the anchor centre of ``_simota.py``, and
MMYOLO's ``MlvlPointGenerator(offset=0.5)``) gets a square prior box of side
``prior_size * stride`` centred on it (MMYOLO: ``priors[:, 2:] * 2.5``, i.e. 5 strides). Then,
per gt (all in xyxy):

1. IoU of the gt with every prior box (mmdet ``bbox_overlaps``: union clamped at ``1e-6``);
2. candidates: on each level, the ``topk`` priors whose centres are nearest the gt's centre
   (Euclidean; ``min(topk, level size)`` when a level is smaller);
3. threshold = mean + std (unbiased, torch's default) of the candidates' prior IoUs; positives
   are candidates with prior IoU strictly above it whose point lies strictly inside the gt
   (``min(l, t, r, b) > 1e-9``);
4. an anchor taken by several gts goes to the gt of largest *prior* IoU over all valid gts;
5. soft class target (``Assignment.quality``): the IoU of the *predicted* box with its gt
   (YOLOv6's IoU, as MMYOLO when ``pred_bboxes`` is given); ``matched_iou`` is the same value.

Levels are the runs of equal stride in ``strides`` (anchors flattened level by level, as
``anchor_grid`` lays them out; MMYOLO splits by ``num_level_priors``). With concrete strides
(NumPy, or a concrete jax array) each level's top-k runs on its static slice of the anchors.
Under a trace (e.g. ``anchor_grid`` called inside ``jax.jit``) the level boundaries are not
known at trace time. Then, if ``A`` fits ``anchor_grid``'s default layout (strides 8, 16, 32 on
sides that are multiples of 32: level sizes ``16m, 4m, m``), a ``lax.cond`` checks the strides
on device and takes the static slices when they match; otherwise (and for other layouts) each
gt's anchors are sorted by (level, distance, index) and the first ``topk`` of every level kept.
Same result either way; the sort is ~10x slower (an [B, G, A] sort).

Where it differs from the reference (none of it changes a result of the reference's own inputs):
boxes arrive as cxcywh; padded rows (``gt_mask`` False) may hold junk anywhere and are sanitised
and masked (no anchors, never win a conflict); equal distances in the top-k go to the lower
anchor index (``torch.topk`` leaves the order unspecified), equal IoUs in a conflict to the
lower gt row (torch ``argmax``: first maximum). The class scores and objectness are not used.
"""
from __future__ import annotations

from functools import partial
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from yolox_jax.assign._buckets import DEFAULT_GT_BUCKETS, in_gt_buckets
from yolox_jax.assign._simota import Assignment, top_k_last
from yolox_jax.assign._tal import (IN_GT_EPS, anchor_points, empty_assignment, finish,
                                   iou_yolov6, matched_pair_iou, points_in_gts, prepare_gts,
                                   resolve_picks, select_highest_overlaps)
from yolox_jax.ops.anchors import DEFAULT_STRIDES
from yolox_jax.ops.boxes import cxcywh_to_xyxy

# mmdet ``bbox_overlaps`` eps (BboxOverlaps2D, MMYOLO's default ATSS iou_calculator).
OVERLAP_EPS = 1e-6


def level_bounds(strides) -> Optional[tuple[tuple[int, int], ...]]:
    """``((start, stop), ...)`` of the runs of equal stride, or None when ``strides`` is traced."""
    try:
        st = np.asarray(strides)
    except (TypeError, jax.errors.TracerArrayConversionError):
        return None
    cuts = [0, *(np.flatnonzero(st[1:] != st[:-1]) + 1).tolist(), len(st)]
    return tuple(zip(cuts[:-1], cuts[1:]))


def default_layout(a: int):
    """``(bounds, strides [A])`` of ``anchor_grid``'s layout with the default strides for ``a``
    anchors, or None when no image gives ``a`` anchors. A level of stride s has ``H W / s^2``
    anchors and the sides divide by the largest stride, so ``a`` alone fixes the level sizes."""
    top = max(DEFAULT_STRIDES)
    factors = [(top // s) ** 2 for s in DEFAULT_STRIDES]                  # 16, 4, 1
    if a % sum(factors):
        return None
    sizes = [f * (a // sum(factors)) for f in factors]
    cuts = np.cumsum([0] + sizes).tolist()
    return (tuple(zip(cuts[:-1], cuts[1:])),
            np.repeat(np.asarray(DEFAULT_STRIDES, np.float32), sizes))


def bbox_overlaps(gts, priors, eps: float = OVERLAP_EPS):
    """mmdet ``bbox_overlaps(mode="iou")``: gts [B, G, 4], priors [..., A, 4] xyxy (any shape
    that broadcasts with [B, G, A]: [A, 4], [B, G, A, 4], [B, 1, A, 4]) -> [B, G, A].

    Areas unclipped, intersection sides clipped at 0, union clamped at ``eps`` from below."""
    gx1, gy1, gx2, gy2 = (gts[..., i:i + 1] for i in range(4))          # [B, G, 1]
    px1, py1, px2, py2 = (priors[..., i] for i in range(4))             # [..., A]
    area_g = (gx2 - gx1) * (gy2 - gy1)
    area_p = (px2 - px1) * (py2 - py1)
    ow = jnp.clip(jnp.minimum(gx2, px2) - jnp.maximum(gx1, px1), 0.0)
    oh = jnp.clip(jnp.minimum(gy2, py2) - jnp.maximum(gy1, py1), 0.0)
    overlap = ow * oh
    union = jnp.maximum(area_g + area_p - overlap, jnp.float32(eps))
    return overlap / union


def _candidates_traced(dist, strides, topk: int):
    """Per level the ``topk`` nearest anchors of every gt when the level boundaries are traced
    (dist [B, G, A] -> [B, G, A] bool): sort each gt's anchors by
    (level, distance, index) and keep those whose rank inside their level is below ``topk``.
    Levels are contiguous and numbered in anchor order, so level l occupies the same positions
    [start_l, stop_l) of the sorted row as of the anchor axis."""
    b, g, a = dist.shape
    strides = jnp.asarray(strides)
    change = jnp.concatenate([jnp.zeros((1,), bool), strides[1:] != strides[:-1]])
    level = jnp.cumsum(change, dtype=jnp.int32)                           # [A]
    pos = jnp.arange(a, dtype=jnp.int32)
    start = jax.lax.cummax(jnp.where(change | (pos == 0), pos, 0))        # [A] run start
    shape = (b, g, a)
    _, _, order = jax.lax.sort(
        (jnp.broadcast_to(level, shape), dist, jnp.broadcast_to(pos, shape)),
        dimension=2, is_stable=True, num_keys=2)                          # [B, G, A]
    keep = (pos - jnp.take(start, order)) < topk
    bi, gi = jnp.arange(b)[:, None, None], jnp.arange(g)[None, :, None]
    return jnp.zeros(shape, bool).at[bi, gi, order].set(keep)


def _assign_static(dist, gts, priors, prior_centres, valid, bounds, topk: int):
    """Steps 2-4 when the level slices are static, on the candidates only (as the reference
    gathers them): per level the ``min(topk, size)`` nearest anchors of every gt ([B, G, K]
    indices), their prior IoUs, the threshold, the inside test at their points, and the conflict
    rule at the anchors taken (``resolve_picks``): no [B, G, A] IoU is formed.

    dist [B, G, A]; gts [B, G, 4] xyxy; priors [A, 4]; prior_centres [A, 2]; valid [B, G, 1] ->
    ``(fg [B, A] bool, matched [B, A] int32, candidate [B, A] bool: in the top-k of some valid
    gt)``; the same as ``select_highest_overlaps`` on the dense positives."""
    b, _, a = dist.shape
    idx = jnp.concatenate([top_k_last(-dist[..., lo:hi], min(topk, hi - lo))[1] + lo
                           for lo, hi in bounds], axis=-1)                # [B, G, K]
    cand_iou = bbox_overlaps(gts, priors[idx])                             # [B, G, K]
    n = idx.shape[-1]
    mean = jnp.sum(cand_iou, axis=-1, keepdims=True) / n
    var = jnp.sum(jnp.square(cand_iou - mean), axis=-1, keepdims=True) / (n - 1)
    px, py = prior_centres[idx, 0], prior_centres[idx, 1]                  # [B, G, K]
    x1, y1, x2, y2 = (gts[..., i:i + 1] for i in range(4))
    inside = jnp.minimum(jnp.minimum(px - x1, py - y1), jnp.minimum(x2 - px, y2 - py)) > IN_GT_EPS
    keep = (cand_iou > mean + jnp.sqrt(var)) & inside & valid             # [B, G, K]
    # The conflict rule at the picked anchors, against every gt.
    anchor = idx.reshape(b, -1)                                            # [B, G K]
    fg, matched = resolve_picks(idx, keep, bbox_overlaps(gts, priors[anchor][:, None]),
                                valid[..., 0], a)
    candidate = jnp.zeros((b, a), bool).at[jnp.arange(b)[:, None], anchor].max(
        jnp.broadcast_to(valid, idx.shape).reshape(b, -1))
    return fg, matched, candidate


def _positives_dense(dist, *, overlaps, gts, prior_centres, valid, strides, topk: int):
    """Steps 2-3 when the level boundaries are traced: candidates from the sort of
    ``_candidates_traced``, the threshold over [B, G, A] masks (the conflicts then go through
    ``select_highest_overlaps``)."""
    cand = _candidates_traced(dist, strides, topk)
    n = jnp.sum(cand, axis=-1, keepdims=True, dtype=jnp.int32).astype(jnp.float32)
    mean = jnp.sum(jnp.where(cand, overlaps, 0.0), axis=-1, keepdims=True) / n
    sq_dev = jnp.where(cand, jnp.square(overlaps - mean), 0.0)
    var = jnp.sum(sq_dev, axis=-1, keepdims=True) / (n - 1)
    is_pos = cand & (overlaps > mean + jnp.sqrt(var))
    pos = is_pos & points_in_gts(prior_centres, gts) & valid
    return pos, jnp.any(cand & valid, axis=1)


def atss(pred_boxes, cls_logits, obj_logits, grid_xy, strides, gt_boxes, gt_classes, gt_mask, *,
         topk: int = 9, prior_size: float = 5.0, gt_buckets=DEFAULT_GT_BUCKETS,
         with_max_iou: bool = True) -> Assignment:
    """ATSS assignment of a batch (MMYOLO ``BatchATSSAssigner`` with ``pred_bboxes``).

    Args:
      pred_boxes [B, A, 4] decoded cxcywh (pixels); cls_logits [B, A, C] (only C is used);
      obj_logits [B, A] (unused); grid_xy [A, 2] (x, y index in the level); strides [A]
      (concrete: per-level top-k on static slices; traced: see the module docstring);
      gt_boxes [B, G, 4] cxcywh; gt_classes [B, G] int; gt_mask [B, G] bool (False rows: junk).
      topk: nearest priors per level and gt (MMYOLO default 9).
      prior_size: side of the prior box around each anchor point, in strides (MMYOLO: 5).
      gt_buckets: gt row counts to specialise for (``yolox_jax.assign._buckets``; exact).
      with_max_iou: compute ``Assignment.max_iou`` (only the ``obj_target="max_iou"/"iou"``
        losses use it; MMYOLO's assigner does not compute it): False leaves it None, and no
        [B, G, A] IoU is formed (the targets use the matched pairs' IoU only).

    Returns:
      ``Assignment`` with a leading batch axis: fg_mask, matched_gt, matched_iou, matched_class,
      quality (= matched_iou), max_iou, candidate_mask [B, A]; num_fg [B]; dynamic_k [B, G]
      (anchors each gt ends up with); candidate_mask = in the per-level top-k of some valid gt.
      Computed under ``stop_gradient``; largest arrays [B, G, A].
    """
    sg = jax.lax.stop_gradient
    b, a, num_classes = cls_logits.shape
    g = gt_mask.shape[1]
    if g == 0:
        return empty_assignment(b, a, g, with_max_iou)
    rows = partial(_atss_rows, sg(pred_boxes), cls_logits.shape[-1], grid_xy, strides,
                   topk=topk, prior_size=prior_size, with_max_iou=with_max_iou)
    return in_gt_buckets(rows, sg(gt_boxes), sg(gt_classes), sg(gt_mask), gt_buckets)


def _atss_rows(pred_boxes, num_classes, grid_xy, strides, gt_boxes, gt_classes, gt_mask, *,
               topk, prior_size, with_max_iou=True) -> Assignment:
    """``atss`` on the gt rows given (any count ``g >= 1``): [B, g] gts -> ``Assignment``."""
    sg = jax.lax.stop_gradient
    a = pred_boxes.shape[1]
    gts, classes, gt_mask = prepare_gts(gt_boxes, gt_classes, gt_mask, num_classes)
    valid = gt_mask[:, :, None]                                            # [B, G, 1]

    points = anchor_points(grid_xy, strides)                               # [A, 2]
    half = jnp.asarray(strides, jnp.float32)[:, None] * jnp.float32(prior_size / 2)
    priors = jnp.concatenate([points - half, points + half], axis=-1)      # [A, 4] xyxy
    prior_centres = (priors[:, :2] + priors[:, 2:]) / 2.0                  # as MMYOLO recomputes

    gt_centres = (gts[..., :2] + gts[..., 2:]) / 2.0                       # [B, G, 2]
    dx = gt_centres[..., 0:1] - prior_centres[:, 0]
    dy = gt_centres[..., 1:2] - prior_centres[:, 1]
    dist = jnp.sqrt(dx * dx + dy * dy)                                     # [B, G, A]

    bounds, k = level_bounds(strides), int(topk)
    static = partial(_assign_static, gts=gts, priors=priors, prior_centres=prior_centres,
                     valid=valid, topk=k)

    def dense(d):
        overlaps = bbox_overlaps(gts, priors)                              # [B, G, A]
        pos, cand = _positives_dense(d, overlaps=overlaps, gts=gts, prior_centres=prior_centres,
                                     valid=valid, strides=strides, topk=k)
        return (*select_highest_overlaps(pos, overlaps, gt_mask), cand)

    if bounds is not None:
        fg, matched, candidate = static(dist, bounds=bounds)
    elif default_layout(a) is None:
        fg, matched, candidate = dense(dist)
    else:   # traced strides: the static slices if they are the default layout, else the sort
        bounds, expected = default_layout(a)
        fg, matched, candidate = jax.lax.cond(
            jnp.all(jnp.asarray(strides, jnp.float32) == expected),
            partial(static, bounds=bounds), dense, dist)

    preds = cxcywh_to_xyxy(sg(pred_boxes).astype(jnp.float32))              # [B, A, 4]
    quality = jnp.where(fg, matched_pair_iou(gts, matched, preds), 0.0)
    pred_iou = iou_yolov6(gts, preds) if with_max_iou else None           # [B, G, A]
    return finish(fg, matched, pred_iou, classes, gt_mask, candidate, quality,
                  matched_iou=quality, with_max_iou=with_max_iou)
