"""Task-aligned label assignment (TAL): TOOD's assigner in the batch form of YOLOv6, YOLOv8 and
PP-YOLOE, transcribed from MMYOLO's ``BatchTaskAlignedAssigner``
(``mmyolo/models/task_modules/assigners/batch_task_aligned_assigner.py`` and ``utils.py``, commit
8c4d9dc503dc8e327bec8147e8dc97124052f693).

For every (gt, anchor) pair, with ``s`` the predicted score of the gt's class and ``IoU`` that of
the predicted box (YOLOv6's IoU: xyxy, sides clipped at 0, ``+1e-9`` in the union):

1. alignment metric ``t = s**alpha * IoU**beta``;
2. each gt takes the ``topk`` anchors of largest ``t`` whose anchor point lies strictly inside it
   (``min(l, t, r, b) > 1e-9``);
3. an anchor taken by several gts goes to the gt of largest IoU over *all* valid gts (it may be
   one that did not take it, as in the reference);
4. soft class target (``Assignment.quality``): ``t * IoU_max(g) / (t_max(g) + eps)``, where
   ``IoU_max(g)`` and ``t_max(g)`` are the largest IoU and metric over the final positives of g.

The anchor point of anchor ``a`` is ``(grid_xy[a] + 0.5) * strides[a]``: the anchor centre of
``geometry_margins`` in ``_simota.py`` and the point MMYOLO's heads generate
(``MlvlPointGenerator(offset=0.5)``).

Where it differs from the reference (none of it changes a result of the reference's own inputs):

* score: ``score="cls"`` is ``sigmoid(cls_logits)``, MMYOLO's ``pred_scores``; ``"joint"`` is
  YOLOX's ``sqrt(sigmoid(cls) * sigmoid(obj))`` (SimOTA's score). Only the score of each gt's
  class is gathered ([B, A, G]); no [B, G, A, C] array exists.
* boxes arrive as cxcywh and are converted to xyxy (``cxcy -/+ wh / 2``).
* padding: MMYOLO pads with zero boxes at the end; here rows with ``gt_mask`` False may hold
  anything anywhere: they are sanitised (``sanitize_gts``), take no anchor, cannot win a
  conflict, and count for nothing.
* ties: equal metrics in the top-k go to the lower anchor index (``lax.top_k``; ``torch.topk``
  leaves the order unspecified); equal IoUs in a conflict go to the lower gt row (``argmax``'s
  first maximum, as torch documents it). A NaN metric (a NaN prediction or logit) ranks above
  every number, whatever its sign bit.
* ``use_ciou`` (YOLOv8's CIoU overlaps) is not implemented.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from yolox_jax.assign._buckets import DEFAULT_GT_BUCKETS, in_gt_buckets
from yolox_jax.assign._simota import Assignment, _total_order_key, sanitize_gts, top_k_last
from yolox_jax.ops.boxes import cxcywh_to_xyxy

# ``select_candidates_in_gts`` and ``yolov6_iou_calculator`` eps (MMYOLO utils.py).
IN_GT_EPS = 1e-9
IOU_EPS = 1e-9
SCORES = ("cls", "joint")


def anchor_points(grid_xy, strides):
    """Pixel point of every anchor, ``(grid_xy + 0.5) * stride``: [A, 2], [A] -> [A, 2] f32."""
    s = jnp.asarray(strides, jnp.float32)
    return (jnp.asarray(grid_xy, jnp.float32) + 0.5) * s[:, None]


def pair_iou(gts, boxes, eps: float = IOU_EPS):
    """MMYOLO's ``yolov6_iou_calculator`` for broadcast pairs: ``[..., 4]``, ``[..., 4]`` xyxy ->
    IoU ``[...]`` of the broadcast shape.

    overlap = prod(clip(min(x2y2) - max(x1y1), 0)); areas with sides clipped at 0;
    IoU = overlap / (area_g + area_a - overlap + eps). Written per coordinate, so the largest
    intermediate has the output's shape."""
    gx1, gy1, gx2, gy2 = (gts[..., i] for i in range(4))
    bx1, by1, bx2, by2 = (boxes[..., i] for i in range(4))
    ow = jnp.clip(jnp.minimum(gx2, bx2) - jnp.maximum(gx1, bx1), 0.0)
    oh = jnp.clip(jnp.minimum(gy2, by2) - jnp.maximum(gy1, by1), 0.0)
    overlap = ow * oh
    area_g = jnp.clip(gx2 - gx1, 0.0) * jnp.clip(gy2 - gy1, 0.0)
    area_b = jnp.clip(bx2 - bx1, 0.0) * jnp.clip(by2 - by1, 0.0)
    return overlap / (area_g + area_b - overlap + eps)


def iou_yolov6(gts, boxes, eps: float = IOU_EPS):
    """MMYOLO's ``yolov6_iou_calculator``: [B, G, 4], [B, A, 4] xyxy -> IoU [B, G, A]."""
    return pair_iou(gts[:, :, None, :], boxes[:, None, :, :], eps)


def points_in_gts(points, gts, eps: float = IN_GT_EPS):
    """MMYOLO's ``select_candidates_in_gts``: points [A, 2], gts [B, G, 4] xyxy -> [B, G, A] bool,
    True where ``min(px - x1, py - y1, x2 - px, y2 - py) > eps``."""
    return point_inside(points[None, None], gts[:, :, None, :], eps)


def point_inside(points, gts, eps: float = IN_GT_EPS):
    """``points_in_gts`` for broadcast pairs: points ``[..., 2]``, gts ``[..., 4]`` xyxy ->
    ``[...]`` bool."""
    gx1, gy1, gx2, gy2 = (gts[..., i] for i in range(4))
    px, py = points[..., 0], points[..., 1]
    # min(margins) > eps, as four comparisons (equal for every input: a NaN margin fails both).
    return (px - gx1 > eps) & (py - gy1 > eps) & (gx2 - px > eps) & (gy2 - py > eps)


def valid_max(overlaps, gt_mask):
    """Largest overlap of every anchor over the valid gts: [B, G, A], [B, G] -> [B, A]
    (NaN if one is NaN, -inf without valid gts), as ``jnp.max`` of the masked array.

    Reduced as int32 keys of the IEEE total order (NaN mapped above everything), a reduction XLA
    fuses with the masking; a float max would go to a library kernel that first stores the
    masked [B, G, A] array."""
    top = jnp.int32(np.iinfo(np.int32).max)
    none = _total_order_key(jnp.float32(-jnp.inf))
    key = jnp.where(jnp.isnan(overlaps), top, _total_order_key(overlaps))
    key = jnp.max(jnp.where(gt_mask[:, :, None], key, none), axis=1)
    return jnp.where(key == top, jnp.nan,
                     jax.lax.bitcast_convert_type(_total_order_key(key), jnp.float32))


def best_valid_row(overlaps, gt_mask):
    """Per column, the first valid gt row of largest overlap (a NaN counts as the largest, as in
    torch's ``argmax``): [B, G, N], [B, G] -> [B, N] int32 (0 without valid rows). Two plain
    reductions over the gt axis, no variadic argmax."""
    g = overlaps.shape[1]
    rows = jax.lax.broadcasted_iota(jnp.int32, overlaps.shape, 1)
    top = valid_max(overlaps, gt_mask)
    top = jnp.where(jnp.isnan(top), jnp.inf, top)[:, None, :]              # [B, 1, N]
    key = jnp.where(gt_mask[:, :, None],
                    jnp.where(jnp.isnan(overlaps), jnp.inf, overlaps), -jnp.inf)
    return jnp.min(jnp.where(key == top, rows, g), axis=1)


def select_highest_overlaps(pos, overlaps, gt_mask):
    """MMYOLO's ``select_highest_overlaps``: one gt per anchor.

    pos [B, G, A] bool (pairs taken), overlaps [B, G, A], gt_mask [B, G] ->
    ``(fg [B, A] bool, matched [B, A] int32)``. An anchor taken by one gt keeps it; one taken by
    several goes to ``argmax_g overlaps`` over all valid gts (first maximum; a NaN overlap counts
    as the largest, as in torch's ``argmax``); ``matched`` is 0 where not fg.

    Four reductions over the gt axis, none variadic: the first and the last taker (several
    takers when they differ), the largest overlap and the first row that reaches it."""
    g = pos.shape[1]
    rows = jax.lax.broadcasted_iota(jnp.int32, pos.shape, 1)
    first = jnp.min(jnp.where(pos, rows, g), axis=1)                       # [B, A]; g: none
    last = jnp.max(jnp.where(pos, rows, -1), axis=1)
    best = best_valid_row(overlaps, gt_mask)
    fg = first < g
    matched = jnp.where(last > first, best, first)
    return fg, jnp.where(fg, matched, 0).astype(jnp.int32)


def first_takers(picks, keep, num_anchors: int):
    """The lowest gt row that takes each anchor: picks [B, G, K] int32 (no repeats within a
    row), keep [B, G, K] or [B, G K] bool -> [B, A] int32 (G where no row takes it)."""
    b, g, k = picks.shape
    row = jnp.repeat(jnp.arange(g, dtype=jnp.int32), k)                   # [G K]
    taken = jnp.where(keep.reshape(b, g * k), row, g)
    return jnp.full((b, num_anchors), g, jnp.int32).at[
        jnp.arange(b)[:, None], picks.reshape(b, g * k)].min(taken)


def resolve_picks(picks, keep, overlaps, gt_mask, num_anchors: int):
    """``select_highest_overlaps`` on the anchors the gts picked, given as indices.

    picks [B, G, K] int32: the anchors each gt row considered (no repeats within a row);
    keep [B, G, K] bool: which of them it takes; overlaps [B, G, G * K]: the overlap of every gt
    with the anchor of each pick (picks flattened row-major); gt_mask [B, G]. Returns
    ``(fg [B, A] bool, matched [B, A] int32)`` equal to ``select_highest_overlaps`` of the dense
    [B, G, A] positives and overlaps, from scatters of the G * K picks and a reduction over
    [B, G, G * K] instead of four passes over [B, G, A]."""
    b, g, k = picks.shape
    anchor = picks.reshape(b, g * k)
    keep = keep.reshape(b, g * k)
    row = jnp.repeat(jnp.arange(g, dtype=jnp.int32), k)                   # [G K]
    bi = jnp.arange(b)[:, None]
    first = first_takers(picks, keep, num_anchors)
    last = jnp.full((b, num_anchors), -1, jnp.int32).at[bi, anchor].max(jnp.where(keep, row, -1))
    best_pick = best_valid_row(overlaps, gt_mask)                          # [B, G K]
    best = jnp.zeros((b, num_anchors), jnp.int32).at[bi, anchor].max(best_pick)  # one per anchor
    fg = first < g
    return fg, jnp.where(fg, jnp.where(last > first, best, first), 0).astype(jnp.int32)


def matched_pair_iou(gts, matched, preds):
    """IoU of every prediction with its matched gt: gts [B, G, 4] xyxy, matched [B, A] int,
    preds [B, A, 4] xyxy -> [B, A] (``pair_iou``, element for element what ``iou_yolov6`` gives
    for those pairs)."""
    return pair_iou(jnp.take_along_axis(gts, matched[..., None], axis=1), preds)


def prepare_gts(gt_boxes, gt_classes, gt_mask, num_classes: int):
    """Sanitised gts: ``(xyxy [B, G, 4] f32, classes [B, G] int32, mask [B, G] bool)``."""
    gt_mask = jnp.asarray(gt_mask).astype(bool)
    boxes, classes = jax.vmap(sanitize_gts, in_axes=(0, 0, 0, None))(
        gt_boxes, gt_classes, gt_mask, num_classes)
    return cxcywh_to_xyxy(boxes), classes, gt_mask


def gather_rows(x, matched):
    """x [B, G, A], matched [B, A] -> x[b, matched[b, a], a]: [B, A]."""
    return jnp.take_along_axis(x, matched[:, None, :], axis=1, mode="clip")[:, 0]


def finish(fg, matched, pred_iou, classes, gt_mask, candidate, quality, matched_iou=None,
           with_max_iou: bool = True, dynamic_k=None):
    """Assemble a batched ``Assignment`` from the resolved matching.

    fg, matched [B, A]; pred_iou [B, G, A] IoU of the predictions with every gt (may be None
    when ``matched_iou`` is given and ``with_max_iou`` is False); classes, gt_mask [B, G];
    candidate [B, A] bool; quality [B, A] (already 0 where not fg); matched_iou [B, A]: the IoU
    with the matched gt, 0 where not fg (None: read from pred_iou). ``with_max_iou=False``
    leaves ``max_iou`` None (no pass over [B, G, A]). dynamic_k [B, G]: the positives of every
    gt when the caller has counted them (None: counted here)."""
    b, g = gt_mask.shape
    if matched_iou is None:
        matched_iou = jnp.where(fg, gather_rows(pred_iou, matched), 0.0)
    matched_class = jnp.where(fg, jnp.take_along_axis(classes, matched, axis=1, mode="clip"), 0)
    rows = jnp.arange(b)[:, None]
    if dynamic_k is None:
        dynamic_k = jnp.zeros((b, g), jnp.int32).at[rows, matched].add(fg.astype(jnp.int32))
    max_iou = (jnp.maximum(valid_max(pred_iou, gt_mask), 0.0)              # 0 without gts
               if with_max_iou else None)
    return Assignment(
        fg_mask=fg,
        matched_gt=matched,
        matched_iou=matched_iou,
        num_fg=jnp.sum(fg, axis=1, dtype=jnp.int32),
        matched_class=matched_class.astype(jnp.int32),
        max_iou=max_iou,
        dynamic_k=dynamic_k,
        candidate_mask=candidate,
        quality=quality,
        weight=None,
    )


def empty_assignment(b: int, a: int, g: int, with_max_iou: bool = True) -> Assignment:
    """Everything background (MMYOLO's ``num_gt == 0`` early return), batched."""
    zf, zi = jnp.zeros((b, a), jnp.float32), jnp.zeros((b, a), jnp.int32)
    zb = jnp.zeros((b, a), bool)
    return Assignment(fg_mask=zb, matched_gt=zi, matched_iou=zf, num_fg=jnp.zeros((b,), jnp.int32),
                      matched_class=zi, max_iou=zf if with_max_iou else None,
                      dynamic_k=jnp.zeros((b, g), jnp.int32),
                      candidate_mask=zb, quality=zf, weight=None)


def power(x, p):
    """``x ** p`` for the metric's exponents: a whole exponent in [0, 16] (TAL's 1 and 6) as a
    product of squares (``lax.integer_pow``: a few multiplies, where XLA:CPU's ``pow`` costs
    about six times an ``exp`` per element; within a few ulp of ``pow``), any other with
    ``jnp.power``."""
    if isinstance(p, (int, float)) and float(p).is_integer() and 0 <= p <= 16:
        return jax.lax.integer_pow(x, int(p))
    return jnp.power(x, jnp.asarray(p, jnp.float32))


def tal(pred_boxes, cls_logits, obj_logits, grid_xy, strides, gt_boxes, gt_classes, gt_mask, *,
        topk: int = 13, alpha: float = 1.0, beta: float = 6.0, eps: float = 1e-7,
        score: str = "cls", gt_buckets=DEFAULT_GT_BUCKETS,
        with_max_iou: bool = True) -> Assignment:
    """Task-aligned assignment of a batch (MMYOLO ``BatchTaskAlignedAssigner``).

    Args:
      pred_boxes [B, A, 4] decoded cxcywh (pixels); cls_logits [B, A, C]; obj_logits [B, A];
      grid_xy [A, 2] (x, y index in the level); strides [A] (NumPy or traced);
      gt_boxes [B, G, 4] cxcywh; gt_classes [B, G] int; gt_mask [B, G] bool (False rows: junk).
      topk: anchors taken per gt (MMYOLO default 13). alpha, beta: exponents of the score and
        the IoU in the metric (1, 6). eps: in the quality normalisation (MMYOLO's default 1e-7;
        YOLOv8's config uses 1e-9).
      score: "cls" (sigmoid(cls), the reference) or "joint" (sqrt(sigmoid(cls) * sigmoid(obj))).
      gt_buckets: gt row counts to specialise for (``yolox_jax.assign._buckets``; exact):
        the work is done on the fewest rows that hold the batch's largest gt count.
      with_max_iou: compute ``Assignment.max_iou`` (the largest IoU of every anchor over all
        gts, which only the ``obj_target="max_iou"/"iou"`` losses use and MMYOLO's assigner
        does not compute: one more pass over [B, G, A]); False leaves the field None.

    Returns:
      ``Assignment`` with a leading batch axis: fg_mask, matched_gt, matched_iou, matched_class,
      quality, max_iou, candidate_mask [B, A]; num_fg [B]; dynamic_k [B, G] (anchors each gt
      ends up with); candidate_mask = anchor point inside some valid gt. IoUs are the YOLOv6
      IoU of the predicted box. Computed under ``stop_gradient``; largest arrays [B, A, G] (the
      metric, stored once), [B, G, G * topk] (the picks' overlaps) and, with ``with_max_iou``,
      [B, G, A].
    """
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    sg = jax.lax.stop_gradient
    b, a, _ = cls_logits.shape
    g = gt_mask.shape[1]
    if g == 0:
        return empty_assignment(b, a, g, with_max_iou)
    rows = partial(_tal_rows, sg(pred_boxes), sg(cls_logits), sg(obj_logits), grid_xy, strides,
                   topk=topk, alpha=alpha, beta=beta, eps=eps, score=score,
                   with_max_iou=with_max_iou)
    return in_gt_buckets(rows, sg(gt_boxes), sg(gt_classes), sg(gt_mask), gt_buckets)


def _tal_rows(pred_boxes, cls_logits, obj_logits, grid_xy, strides, gt_boxes, gt_classes, gt_mask,
              *, topk, alpha, beta, eps, score, with_max_iou=True) -> Assignment:
    """``tal`` on the gt rows given (any count ``g >= 1``): [B, g] gts -> ``Assignment``."""
    sg = jax.lax.stop_gradient
    b, a, num_classes = cls_logits.shape
    g = gt_mask.shape[1]
    gts, classes, gt_mask = prepare_gts(sg(gt_boxes), sg(gt_classes), sg(gt_mask), num_classes)
    valid = gt_mask[:, :, None]                                            # [B, G, 1]
    preds = cxcywh_to_xyxy(sg(pred_boxes).astype(jnp.float32))             # [B, A, 4]

    points = anchor_points(grid_xy, strides)                               # [A, 2]
    logits = sg(cls_logits).astype(jnp.float32)
    obj = sg(obj_logits).astype(jnp.float32)
    k = min(int(topk), a)

    # Each gt's top-k metrics among the anchors inside it (others compete with metric 0). The
    # metric is laid out [B, A, G]: every anchor reads its row of class logits once, where a
    # [B, G, A] layout reads them at a stride of C or transposes them first. It is stored once;
    # the top-k's block maxima and its second level read it.
    s = jax.nn.sigmoid(jnp.take_along_axis(logits, classes[:, None, :], axis=2, mode="clip"))
    if score == "joint":
        s = jnp.sqrt(s * jax.nn.sigmoid(obj)[:, :, None])
    iou = pair_iou(gts[:, None, :, :], preds[:, :, None, :])                # [B, A, G]
    inside = point_inside(points[None, :, None, :], gts[:, None, :, :]) & gt_mask[:, None, :]
    metric = power(s, alpha) * power(iou, beta)
    # Every NaN as +NaN, which ranks above every number (a product's NaN sign depends on the
    # compiled code; torch's topk ranks any NaN first).
    metric = jnp.where(jnp.isnan(metric), jnp.float32(jnp.nan), metric)
    align = jnp.where(inside, metric, 0.0)                                  # [B, A, G]
    bi, gi = jnp.arange(b)[:, None, None], jnp.arange(g)[None, :, None]
    _, idx = top_k_last(align, k, at=lambda i: align[bi, i, gi], columns=True)   # [B, G, K]
    keep = point_inside(points[idx], gts[:, :, None, :]) & valid           # [B, G, K]
    picked = preds[bi, idx].reshape(b, 1, -1, 4)                           # [B, 1, G K, 4]
    iou_at_picks = pair_iou(gts[:, :, None, :], picked)                    # [B, G, G K]
    fg, matched = resolve_picks(idx, keep, iou_at_picks, gt_mask, a)

    # Every final positive is one of the G K picks: its IoU and metric with the matched gt and
    # its quality are computed there and scattered into [B, A] (a pick repeated in several rows
    # carries the same values, as they depend on the anchor only).
    bj = jnp.arange(b)[:, None]
    anchor = idx.reshape(b, g * k)                                         # [B, G K]
    fg_p, m_p = fg[bj, anchor], matched[bj, anchor]
    iou_p = jnp.where(fg_p, pair_iou(gts[bj, m_p], preds[bj, anchor]), 0.0)
    s_p = jax.nn.sigmoid(logits[bj, anchor, classes[bj, m_p]])
    if score == "joint":
        s_p = jnp.sqrt(s_p * jax.nn.sigmoid(obj[bj, anchor]))
    align_p = jnp.where(fg_p, power(s_p, alpha) * power(iou_p, beta), 0.0)
    # Normalised metric: per gt, the max metric and max IoU over its final positives (scatters
    # propagate a NaN, as the reference's amax does; non-positive picks add 0 to row 0).
    pos_align = jnp.zeros((b, g), jnp.float32).at[bj, m_p].max(align_p)    # [B, G]
    pos_iou = jnp.zeros((b, g), jnp.float32).at[bj, m_p].max(iou_p)
    quality_p = jnp.where(
        fg_p, align_p * pos_iou[bj, m_p] / (pos_align[bj, m_p] + jnp.float32(eps)), 0.0)
    quality = jnp.zeros((b, a), jnp.float32).at[bj, anchor].set(quality_p)
    iou_m = jnp.zeros((b, a), jnp.float32).at[bj, anchor].set(iou_p)
    # Anchors per gt: each positive counted once, at the pick of its first taking row.
    row = jnp.repeat(jnp.arange(g, dtype=jnp.int32), k)[None, :]
    first = first_takers(idx, keep, a)
    once = fg_p & keep.reshape(b, g * k) & (row == first[bj, anchor])
    count = jnp.zeros((b, g), jnp.int32).at[bj, m_p].add(once.astype(jnp.int32))   # [B, G]

    candidate = jnp.any(inside, axis=2)
    pred_iou = iou_yolov6(gts, preds) if with_max_iou else None              # [B, G, A]
    return finish(fg, matched, pred_iou, classes, gt_mask, candidate, quality, matched_iou=iou_m,
                  with_max_iou=with_max_iou, dynamic_k=count)
