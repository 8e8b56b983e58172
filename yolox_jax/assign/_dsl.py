"""Dynamic soft label assignment (DSL, RTMDet's assigner) with static shapes.

Reference: MMYOLO ``BatchDynamicSoftLabelAssigner``
(``mmyolo/models/task_modules/assigners/batch_dsl_assigner.py``, open-mmlab/mmyolo @ 8c4d9dc5)
with ``mmdet.BboxOverlaps2D`` IoUs. Per image, with points ``p_a`` (anchor centres) and gts ``g``:

* candidates: anchors whose point lies strictly inside some valid gt box;
* cost[g, a] = cls + iou_weight * -log(IoU + 1e-7) + 10 ** (|p_a - centre_g| / stride_a - r),
  and 1e8 (MMYOLO's INF) for every gt at non-candidate anchors; the class cost is
  ``BCE_logits(x, IoU) * (IoU - sigmoid(x)) ** 2`` on the logit ``x`` of the gt's class only;
* dynamic k_g = max(1, int(sum of the ``topk`` largest IoUs of gt g over *all* anchors));
* gt g takes its k_g lowest-cost anchors (a sort of the whole column, INF anchors included);
  an anchor taken by several gts goes to ``argmin_g cost[g, a]`` over all gts;
* the soft label (``assign_metrics``) of a foreground anchor is the IoU with its gt.

Static shapes: gts padded to ``G`` and masked; every intermediate has G x A elements or fewer
(the class cost gathers one logit per gt and anchor, never ``[G, A, C]``); ``dsl`` lays the cost
and the IoUs out anchor-major, [A, G], so that each anchor reads its own row of class logits.
The per-gt sort becomes one top-k with the static bound ``topk`` (k_g <= topk since IoUs are
<= 1), ties to the lower anchor index (a stable sort, what torch's CPU sort does), NaN costs
last; conflicts are an argmin over the ``G * topk`` picked columns (over all ``A`` anchors when
``G * topk >= A``). The top-k down the anchor axis is XLA's plain-or-blocked ``top_k_last`` of
``_simota``; the batch runs on the gt rows it needs (``in_gt_buckets``), and its cost matrix is
computed once, in a ``lax.cond`` branch of its own (see ``dsl``); there is no anchor compaction.

Differences from the reference (options keep the reference reachable):

* points are ``(grid_xy + center_offset) * stride``: ``center_offset=0.5`` is YOLOX's anchor
  point (default); RTMDet's ``MlvlPointGenerator(offset=0)`` is ``center_offset=0.0``;
* ``score="joint"`` scores with YOLOX's ``sqrt(sigmoid(cls) * sigmoid(obj))`` (the logit of that
  probability in the reference formula, evaluated in log space); ``"cls"`` is the reference;
* ``class_cost="all_classes"``: the class cost of mmdet's per-image ``DynamicSoftLabelAssigner``,
  the same term summed over all classes with soft label IoU at the gt class and 0 elsewhere,
  computed as a per-anchor sum over classes of the zero-label term plus a per-gt correction;
* rounding: the centre prior ``10 ** y`` is computed as ``exp(y ln 10)`` (relative difference
  about ``|y| * 1e-7``, largest for the far anchors whose costs no pick reaches), and the
  sigmoid and the two softplus terms of the class cost share one ``exp`` and one ``log1p``;
* padding: MMYOLO pads gts with zero boxes that still enter the conflict ``argmin`` (so a padded
  gt can take a contested anchor); here padded rows take part in nothing;
* ``keep_outside_picks=False`` (default): MMYOLO's sort includes the INF non-candidates, so a gt
  whose k exceeds its lower-cost anchors takes non-candidate anchors, lowest index first (the
  image's top-left anchors for a gt with no anchor point inside any gt). Those picks are
  dropped here (the foreground is the reference's restricted to candidates);
  ``True`` reproduces the reference.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from yolox_jax.assign._buckets import DEFAULT_GT_BUCKETS, in_gt_buckets
from yolox_jax.assign._simota import Assignment, first_argmin, sanitize_gts, top_k_last
from yolox_jax.assign._tal import valid_max
from yolox_jax.ops.boxes import cxcywh_to_xyxy

INF = 100000000.0      # cost of non-candidate anchors (MMYOLO's INF)
EPS = 1.0e-7           # in -log(IoU + EPS)
IOU_EPS = 1e-6         # mmdet bbox_overlaps: union clamped at this
SCORES = ("cls", "joint")
CLASS_COSTS = ("gt_class", "all_classes")


def pair_overlaps(gt_xyxy, pred_xyxy, eps: float = IOU_EPS):
    """mmdet ``bbox_overlaps(pred, gt, mode='iou')`` for broadcast pairs: ``[..., 4]`` gts,
    ``[..., 4]`` predictions, xyxy -> IoU ``[...]``. Intersection sides clamped at 0, union
    clamped at ``eps``, areas unclamped."""
    area_p = (pred_xyxy[..., 2] - pred_xyxy[..., 0]) * (pred_xyxy[..., 3] - pred_xyxy[..., 1])
    area_g = (gt_xyxy[..., 2] - gt_xyxy[..., 0]) * (gt_xyxy[..., 3] - gt_xyxy[..., 1])
    w = jnp.maximum(jnp.minimum(pred_xyxy[..., 2], gt_xyxy[..., 2])
                    - jnp.maximum(pred_xyxy[..., 0], gt_xyxy[..., 0]), 0.0)
    h = jnp.maximum(jnp.minimum(pred_xyxy[..., 3], gt_xyxy[..., 3])
                    - jnp.maximum(pred_xyxy[..., 1], gt_xyxy[..., 1]), 0.0)
    overlap = w * h
    union = jnp.maximum(area_p + area_g - overlap, eps)
    return overlap / union


def _prob_terms(x, obj, score: str):
    """Score probability and its two BCE logs: ``(p, -log p, -log(1 - p))``, all shaped like ``x``.

    score="cls": p = sigmoid(x). "joint": p = sqrt(sigmoid(x) * sigmoid(obj)), with
    1 - p = (1 - q) / (1 + p), q = p**2, 1 - q = sigmoid(-x) + sigmoid(x) * sigmoid(-obj), so
    neither log loses precision near p = 0 or 1. ``obj`` broadcasts against ``x``.
    """
    if score == "cls":
        # One exp and one log1p for all three: with e = exp(-|x|), softplus(+-x) =
        # max(+-x, 0) + log1p(e) and sigmoid(x) = 1 / (1 + e) (x >= 0) or e / (1 + e).
        e = jnp.exp(-jnp.abs(x))
        tail = jnp.log1p(e)
        p = jnp.where(x >= 0, 1.0, e) / (1.0 + e)
        return p, jnp.maximum(-x, 0.0) + tail, jnp.maximum(x, 0.0) + tail
    nlog_q = jax.nn.softplus(-x) + jax.nn.softplus(-obj)
    p = jnp.exp(-0.5 * nlog_q)
    log_1mq = jnp.logaddexp(-jax.nn.softplus(x), -jax.nn.softplus(-x) - jax.nn.softplus(obj))
    return p, 0.5 * nlog_q, jnp.log1p(p) - log_1mq


def soft_label_cls_cost(cls_logits, obj_logits, classes, iou, *, score: str = "cls",
                        class_cost: str = "gt_class", anchor_major: bool = False):
    """Soft-label class cost [G, A] ([A, G] anchor-major) from one gathered logit per gt and
    anchor, never ``[G, A, C]``.

    cls_logits [A, C], obj_logits [A], classes [G] int32 (in range), iou [G, A] (the soft label).
    ``anchor_major``: iou and the result are [A, G] (each anchor gathers its gts' logits from
    its own row of class logits).
    With ``t`` the soft label and ``p`` the score, one class contributes
    ``f(p, t) = BCE(p, t) * (t - p)**2``; BCE(p, t) = t * -log p + (1 - t) * -log(1 - p)
    (= torch's ``binary_cross_entropy_with_logits`` on the logit of p).

    * "gt_class" (MMYOLO): ``f(p[y_g, a], iou[g, a])``.
    * "all_classes" (mmdet): ``sum_c f(p[c, a], t_c)`` with t_y = iou, t_c = 0 else
      = ``sum_c f(p[c, a], 0) - f(p[y_g, a], 0) + f(p[y_g, a], iou[g, a])``, where
      ``f(p, 0) = -log(1 - p) * p**2``: an [A, C] -> [A] reduction plus [G, A] terms.
    """
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    if class_cost not in CLASS_COSTS:
        raise ValueError(f"class_cost must be one of {CLASS_COSTS}, got {class_cost!r}")
    x = cls_logits.astype(jnp.float32)
    obj = obj_logits.astype(jnp.float32)
    if anchor_major:
        # [A, G]: a gather along each anchor's row with the indices spelled out per anchor
        # (a size-1 anchor axis in the indices becomes one strided column per gt on XLA:CPU).
        cols = jnp.broadcast_to(jnp.clip(classes, 0, x.shape[1] - 1)[None, :],
                                (x.shape[0], classes.shape[0]))
        x_y = jnp.take_along_axis(x, cols, axis=1)
        per_anchor = lambda v: v[:, None]  # noqa: E731
    else:
        x_y = jnp.take(x.T, classes, axis=0, mode="clip")                      # [G, A]
        per_anchor = lambda v: v[None, :]  # noqa: E731
    p, nlogp, nlog1mp = _prob_terms(x_y, per_anchor(obj), score)
    cost = (iou * nlogp + (1.0 - iou) * nlog1mp) * jnp.square(iou - p)
    if class_cost == "all_classes":
        p_all, _, nlog1mp_all = _prob_terms(x, obj[:, None], score)           # [A, C]
        neg_sum = jnp.sum(nlog1mp_all * jnp.square(p_all), axis=-1)           # [A]
        cost = cost + (per_anchor(neg_sum) - nlog1mp * jnp.square(p))
    return cost


def dsl_cost(pred_boxes, cls_logits, obj_logits, points, strides, boxes, classes, gt_mask, *,
             soft_center_radius: float = 3.0, iou_weight: float = 3.0, score: str = "cls",
             class_cost: str = "gt_class", anchor_major: bool = False):
    """Cost matrix of one image.

    pred_boxes [A, 4] cxcywh, cls_logits [A, C], obj_logits [A], points [A, 2] (x, y) pixels,
    strides [A], boxes [G, 4] sanitized cxcywh, classes [G] int32 in range, gt_mask [G] bool.
    Returns ``(cost [G, A], iou [G, A], candidate [A] bool)``: ``cost`` is INF at non-candidate
    anchors; rows of padded gts hold finite values that the caller must mask.
    ``anchor_major``: cost and iou are [A, G] (the layout ``dsl`` computes them in: each anchor
    reads its row of class logits once).
    """
    gt_xyxy = cxcywh_to_xyxy(boxes)
    pred_xyxy = cxcywh_to_xyxy(pred_boxes.astype(jnp.float32))
    if anchor_major:
        gts, per_anchor = gt_xyxy[None, :, :], (lambda v: v[:, None])  # noqa: E731
        iou = pair_overlaps(gts, pred_xyxy[:, None, :])                          # [A, G]
    else:
        gts, per_anchor = gt_xyxy[:, None, :], (lambda v: v[None, :])  # noqa: E731
        iou = pair_overlaps(gts, pred_xyxy[None, :, :])                          # [G, A]
    gt_axis = 1 if anchor_major else 0
    px, py = per_anchor(points[:, 0]), per_anchor(points[:, 1])
    inside = ((px - gts[..., 0] > 0.0) & (py - gts[..., 1] > 0.0)          # min(margins) > 0
              & (gts[..., 2] - px > 0.0) & (gts[..., 3] - py > 0.0))
    valid = gt_mask[None, :] if anchor_major else gt_mask[:, None]
    candidate = jnp.any(inside & valid, axis=gt_axis)                            # [A]

    centre_x = (gts[..., 0] + gts[..., 2]) / 2.0
    centre_y = (gts[..., 1] + gts[..., 3]) / 2.0
    dx, dy = px - centre_x, py - centre_y
    dist = jnp.sqrt(dx * dx + dy * dy) / per_anchor(strides)
    dist = jnp.where(per_anchor(candidate), dist, 0.0)
    # 10 ** y as exp(y ln 10): on XLA:CPU, pow costs about six times exp per element.
    center_prior = jnp.exp((dist - jnp.float32(soft_center_radius)) * jnp.float32(np.log(10.0)))

    iou_cost = -jnp.log(iou + EPS) * jnp.float32(iou_weight)
    cls_cost = soft_label_cls_cost(cls_logits, obj_logits, classes, iou, score=score,
                                   class_cost=class_cost, anchor_major=anchor_major)
    cost = cls_cost + iou_cost + center_prior
    return jnp.where(per_anchor(candidate), cost, jnp.float32(INF)), iou, candidate


def _first_valid_argmin(cost, gt_mask):
    """First row index of the minimum over the valid rows: [G, N], [G] -> [N] int32 (torch's
    ``min(dim)``: the first of equal values, inf == inf counts as equal, and a NaN is the
    minimum, so the first valid NaN row wins). Padded rows count as +inf."""
    return first_argmin(jnp.where(gt_mask[:, None], cost, jnp.inf), axis=0)


def _dsl_one(cost, iou, candidate, classes, gt_mask, *, topk: int,
             keep_outside_picks: bool, with_max_iou: bool = True) -> Assignment:
    """One image from its anchor-major ``dsl_cost`` (cost, iou [A, G], candidate [A]), classes and
    gt_mask [G]: the per-image ``Assignment``."""
    a, g = cost.shape
    kmax = min(int(topk), a)
    gi = jnp.arange(g)[:, None]

    # Dynamic k from the top IoUs of each gt over all anchors (not only the candidates).
    top_iou, _ = top_k_last(iou, kmax, columns=True, at=lambda i: iou[i, gi])   # [G, K]
    k = jnp.maximum(jnp.sum(top_iou, axis=1).astype(jnp.int32), 1)
    k = jnp.where(gt_mask, jnp.minimum(k, kmax), 0)

    # The k lowest costs of each row (a stable ascending sort of the column, INF included).
    # A NaN cost ranks last (-NaN, whatever the sign the compiled code gave it), as in torch's
    # ascending topk.
    neg = lambda c: jnp.where(jnp.isnan(c), -jnp.float32(jnp.nan), -c)  # noqa: E731
    _, idx = top_k_last(neg(cost), kmax, columns=True, at=lambda i: neg(cost[i, gi]))  # [G, K]
    take = jnp.arange(kmax)[None, :] < k[:, None]
    flat = idx.reshape(-1)
    dest = jnp.where(take.reshape(-1), flat, a)                                 # a = dropped
    rows = jnp.broadcast_to(jnp.arange(g, dtype=jnp.int32)[:, None], idx.shape).reshape(-1)
    count = jnp.zeros((a,), jnp.int32).at[dest].add(1, mode="drop")
    sole = jnp.zeros((a,), jnp.int32).at[dest].max(rows, mode="drop")

    # Contested anchors: first argmin of the cost over the valid gts (padded rows never win),
    # over the G * K picked columns only while that is fewer than A (it stays O(G x A)).
    if g * kmax < a:
        best_of_pick = _first_valid_argmin(jnp.take(cost, flat, axis=0, mode="clip").T, gt_mask)
        best = jnp.zeros((a,), jnp.int32).at[dest].max(best_of_pick, mode="drop")
    else:
        best = _first_valid_argmin(cost.T, gt_mask)

    fg = count > 0
    if not keep_outside_picks:
        fg = fg & candidate
    matched = jnp.where(fg, jnp.where(count > 1, best, sole), 0).astype(jnp.int32)
    matched_iou = jnp.where(
        fg, jnp.take_along_axis(iou, matched[:, None], axis=1, mode="clip")[:, 0], 0.0)
    max_iou = (jnp.maximum(valid_max(iou.T[None], gt_mask[None])[0], 0.0)       # 0 without gts
               if with_max_iou else None)
    matched_class = jnp.where(fg, jnp.take(classes, matched, mode="clip"), 0)
    return Assignment(
        fg_mask=fg,
        matched_gt=matched,
        matched_iou=matched_iou,
        num_fg=jnp.sum(fg).astype(jnp.int32),
        matched_class=matched_class.astype(jnp.int32),
        max_iou=max_iou,
        dynamic_k=k.astype(jnp.int32),
        candidate_mask=candidate,
        quality=matched_iou,
        weight=None,
    )


def dsl(pred_boxes, cls_logits, obj_logits, grid_xy, strides, gt_boxes, gt_classes, gt_mask, *,
        soft_center_radius: float = 3.0, topk: int = 13, iou_weight: float = 3.0,
        center_offset: float = 0.5, score: str = "cls", class_cost: str = "gt_class",
        keep_outside_picks: bool = False, gt_buckets=DEFAULT_GT_BUCKETS,
        with_max_iou: bool = True) -> Assignment:
    """RTMDet's dynamic soft label assignment for a batch (see the module docstring).

    Args:
      pred_boxes [B, A, 4] decoded cxcywh (pixels), cls_logits [B, A, C], obj_logits [B, A]
        (used by ``score="joint"`` only), grid_xy [A, 2] (x, y index of each anchor cell in its
        level), strides [A], gt_boxes [B, G, 4] cxcywh, gt_classes [B, G] int,
        gt_mask [B, G] bool (False rows may hold anything: NaN, 1e30, negative sizes).
      soft_center_radius: r in the centre prior ``10 ** (dist / stride - r)`` (MMYOLO 3.0).
      topk: number of largest IoUs summed for dynamic k (MMYOLO 13).
      iou_weight: weight of ``-log(IoU + 1e-7)`` (MMYOLO 3.0).
      center_offset: anchor point ``(grid_xy + center_offset) * stride``; 0.5 is YOLOX's point,
        RTMDet (MMYOLO's priors) uses 0.0.
      score: "cls" (the reference: sigmoid of the class logits) or "joint" (YOLOX's
        ``sqrt(sigmoid(cls) * sigmoid(obj))``).
      class_cost: "gt_class" (MMYOLO: the gt's class only) or "all_classes" (mmdet: summed over
        classes with a soft one-hot label).
      keep_outside_picks: keep MMYOLO's picks of non-candidate (INF-cost) anchors.
      gt_buckets: gt row counts to specialise for (``yolox_jax.assign._buckets``; exact).
      with_max_iou: compute ``Assignment.max_iou`` (only the ``obj_target="max_iou"/"iou"``
        losses use it; MMYOLO's assigner does not compute it); False leaves it None.

    Returns:
      ``Assignment`` with a leading batch axis: fg_mask [B, A], matched_gt [B, A] (0 where not
      fg), matched_iou [B, A], num_fg [B], matched_class [B, A], max_iou [B, A] (over valid
      gts, 0 without), dynamic_k [B, G] (0 for padded rows), candidate_mask [B, A] (anchor point
      inside some valid gt), quality [B, A] (= matched_iou, the soft label at the matched
      class), weight None. Computed under ``stop_gradient``.
    """
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    if class_cost not in CLASS_COSTS:
        raise ValueError(f"class_cost must be one of {CLASS_COSTS}, got {class_cost!r}")
    if int(topk) < 1:
        raise ValueError(f"topk must be >= 1, got {topk!r}")
    sg = jax.lax.stop_gradient
    pred_boxes = sg(pred_boxes).astype(jnp.float32)
    cls_logits, obj_logits = sg(cls_logits), sg(obj_logits)
    gt_mask = sg(gt_mask).astype(bool)
    num_classes = cls_logits.shape[-1]
    boxes, classes = jax.vmap(sanitize_gts, in_axes=(0, 0, 0, None))(
        sg(gt_boxes), sg(gt_classes), gt_mask, num_classes)
    strides = jnp.asarray(strides, jnp.float32)
    points = (jnp.asarray(grid_xy, jnp.float32) + jnp.float32(center_offset)) * strides[:, None]
    costs = jax.vmap(partial(dsl_cost, soft_center_radius=float(soft_center_radius),
                             iou_weight=float(iou_weight), score=score, class_cost=class_cost,
                             anchor_major=True),
                     in_axes=(0, 0, 0, None, None, 0, 0, 0))
    resolve = jax.vmap(partial(_dsl_one, topk=int(topk),
                               keep_outside_picks=bool(keep_outside_picks),
                               with_max_iou=bool(with_max_iou)))

    def core(bx, cs, mk):
        # The cost is computed in a branch of its own so that it is stored once: its top-k and
        # the conflict rule read it, where XLA:CPU would otherwise store each of its
        # transcendental terms and recompute the rest in every reader. Without valid gts the
        # branch is skipped: every row is masked and nothing reads the cost.
        b, g = mk.shape
        a = pred_boxes.shape[1]
        cost, iou, cand = jax.lax.cond(
            jnp.any(mk),
            lambda: costs(pred_boxes, cls_logits, obj_logits, points, strides, bx, cs, mk),
            lambda: (jnp.full((b, a, g), INF, jnp.float32), jnp.zeros((b, a, g), jnp.float32),
                     jnp.zeros((b, a), bool)))
        return resolve(cost, iou, cand, cs, mk)

    return in_gt_buckets(core, boxes, classes, gt_mask, gt_buckets)
