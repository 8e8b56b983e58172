"""Plain NumPy transcription of MMYOLO's ``BatchDynamicSoftLabelAssigner`` (RTMDet's assigner).

Transcribed from open-mmlab/mmyolo @ 8c4d9dc503dc8e327bec8147e8dc97124052f693:

* ``mmyolo/models/task_modules/assigners/batch_dsl_assigner.py``: ``find_inside_points``
  (horizontal boxes), ``get_box_center``, ``BatchDynamicSoftLabelAssigner.forward`` and
  ``.dynamic_k_matching``; constants INF = 1e8, EPS = 1e-7; defaults soft_center_radius=3.0,
  topk=13, iou_weight=3.0.
* the IoU calculator it is configured with (``mmdet.BboxOverlaps2D``, see
  ``configs/rtmdet/rtmdet_l_syncbn_fast_8xb32-300e_coco.py``): open-mmlab/mmdetection
  ``mmdet/models/task_modules/assigners/iou2d_calculator.py`` @ 109936d26405 ->
  ``mmdet/structures/bbox/bbox_overlaps.py`` @ 19bceba56284 (``mode='iou'``, ``eps=1e-6``).
* priors as ``mmyolo/models/dense_heads/rtmdet_head.py`` (``loss_by_feat``) passes them:
  ``(x, y, stride_w, stride_h)`` from ``MlvlPointGenerator(offset=0, with_stride=True)``.

The helpers of ``mmyolo/models/task_modules/assigners/utils.py`` (``select_candidates_in_gts``,
``select_highest_overlaps``, ``yolov6_iou_calculator``) are not used by this assigner.

``class_cost="all_classes"`` is not MMYOLO: it is the soft-label class cost of mmdet's per-image
``DynamicSoftLabelAssigner`` (``mmdet/models/task_modules/assigners/
dynamic_soft_label_assigner.py`` @ 18aa8836295435e2d3a70148c691f4613b093bc5: one-hot label times
IoU, BCE-with-logits times |soft label - sigmoid|^2, summed over classes), built here by brute
force on a [B, A, G, C] array, as mmdet does.

Float32 throughout, like torch. ``torch.sort`` -> stable ``argsort`` (torch's CPU sort is stable);
``torch.min(dim)`` / ``argmax`` -> first index. Loops over images and gts as in the source.

``dsl_reference`` below is the test harness (not MMYOLO): one image at a time, only its valid gts
(so no padding exists for the reference to mishandle), cxcywh in, per-anchor fields out.
"""
from __future__ import annotations

import numpy as np

INF = 100000000
EPS = 1.0e-7
f32 = np.float32


def find_inside_points(boxes, points):
    """boxes [B, G, 4] xyxy, points [A, 2] -> [A, B, G] bool (strictly inside; no eps for
    horizontal boxes)."""
    lt_ = points[:, None, None] - boxes[..., :2]
    rb_ = boxes[..., 2:] - points[:, None, None]
    deltas = np.concatenate([lt_, rb_], axis=-1)
    return deltas.min(axis=-1) > 0


def get_box_center(boxes):
    return (boxes[..., :2] + boxes[..., 2:]) / f32(2.0)


def bbox_overlaps(bboxes1, bboxes2, eps=1e-6):
    """mmdet ``bbox_overlaps(mode='iou', is_aligned=False)``: [B, m, 4], [B, n, 4] -> [B, m, n]."""
    area1 = (bboxes1[..., 2] - bboxes1[..., 0]) * (bboxes1[..., 3] - bboxes1[..., 1])
    area2 = (bboxes2[..., 2] - bboxes2[..., 0]) * (bboxes2[..., 3] - bboxes2[..., 1])
    lt = np.maximum(bboxes1[..., :, None, :2], bboxes2[..., None, :, :2])
    rb = np.minimum(bboxes1[..., :, None, 2:], bboxes2[..., None, :, 2:])
    wh = np.maximum(rb - lt, f32(0))
    overlap = wh[..., 0] * wh[..., 1]
    union = area1[..., None] + area2[..., None, :] - overlap
    union = np.maximum(union, f32(eps))
    return overlap / union


def bce_with_logits(x, t):
    """torch ``binary_cross_entropy_with_logits(reduction='none')`` (no weights)."""
    max_val = np.maximum(-x, f32(0))
    return (f32(1) - t) * x + max_val + np.log(np.exp(-max_val) + np.exp(-x - max_val))


def sigmoid(x):
    return f32(1) / (f32(1) + np.exp(-x))


def batch_dsl_assign(pred_bboxes, pred_scores, priors, gt_labels, gt_bboxes, pad_bbox_flag, *,
                     num_classes, soft_center_radius=3.0, topk=13, iou_weight=3.0,
                     class_cost="gt_class"):
    """``BatchDynamicSoftLabelAssigner.forward``.

    pred_bboxes [B, A, 4] xyxy, pred_scores [B, A, C] logits, priors [A, 4] (x, y, sw, sh),
    gt_labels [B, G, 1], gt_bboxes [B, G, 4] xyxy, pad_bbox_flag [B, G, 1] (valid gts first).
    Returns MMYOLO's dict plus internals under ``_`` keys: ``_fg`` [B, A], ``_matched_gt``
    [B, A] (-1 where not fg), ``_valid_mask`` [B, A], ``_dynamic_ks`` [B, G], ``_cost``
    [B, A, G], ``_ious`` [B, A, G].
    """
    pred_bboxes = np.asarray(pred_bboxes, f32)
    pred_scores = np.asarray(pred_scores, f32)
    priors = np.asarray(priors, f32)
    gt_labels = np.asarray(gt_labels)
    gt_bboxes = np.asarray(gt_bboxes, f32)
    pad_bbox_flag = np.asarray(pad_bbox_flag, f32)
    num_gt = gt_bboxes.shape[1]
    batch_size, num_bboxes, _ = pred_bboxes.shape

    if num_gt == 0 or num_bboxes == 0:
        return {
            "assigned_labels": np.full(pred_scores[..., 0].shape, num_classes, np.int64),
            "assigned_labels_weights": np.ones(pred_scores[..., 0].shape, f32),
            "assigned_bboxes": np.zeros(pred_bboxes.shape, f32),
            "assign_metrics": np.zeros(pred_scores[..., 0].shape, f32),
            "_fg": np.zeros((batch_size, num_bboxes), bool),
            "_matched_gt": np.full((batch_size, num_bboxes), -1, np.int64),
            "_valid_mask": np.zeros((batch_size, num_bboxes), bool),
            "_dynamic_ks": np.zeros((batch_size, num_gt), np.int64),
            "_cost": np.zeros((batch_size, num_bboxes, num_gt), f32),
            "_ious": np.zeros((batch_size, num_bboxes, num_gt), f32),
        }

    prior_center = priors[:, :2]
    is_in_gts = find_inside_points(gt_bboxes, prior_center)            # (A, B, G)
    is_in_gts = is_in_gts * pad_bbox_flag[..., 0][None]
    is_in_gts = is_in_gts.transpose(1, 0, 2)                           # (B, A, G)
    valid_mask = is_in_gts.sum(axis=-1) > 0                            # (B, A)

    gt_center = get_box_center(gt_bboxes)                              # (B, G, 2)
    strides = priors[..., 2]
    diff = priors[None][:, :, None, :2] - gt_center[:, None, :, :]     # (B, A, G, 2)
    distance = np.sqrt((diff ** 2).sum(-1)) / strides[None, :, None]
    distance = distance * valid_mask[..., None]                        # "prevent overflow"
    soft_center_prior = np.power(f32(10), distance - f32(soft_center_radius))

    pairwise_ious = bbox_overlaps(pred_bboxes, gt_bboxes)              # (B, A, G)
    iou_cost = -np.log(pairwise_ious + f32(EPS)) * f32(iou_weight)

    if class_cost == "gt_class":
        # pred_scores[b, :, gt_labels[b, g]] -> (B, A, G)
        pairwise_pred_scores = np.stack(
            [pred_scores[b][:, gt_labels[b, :, 0].astype(np.int64)] for b in range(batch_size)])
        scale_factor = pairwise_ious - sigmoid(pairwise_pred_scores)
        pairwise_cls_cost = bce_with_logits(pairwise_pred_scores, pairwise_ious) \
            * np.abs(scale_factor) ** 2
    elif class_cost == "all_classes":   # mmdet DynamicSoftLabelAssigner, per image
        c = pred_scores.shape[-1]
        onehot = np.eye(c, dtype=f32)[gt_labels[..., 0].astype(np.int64)]       # (B, G, C)
        soft_label = onehot[:, None, :, :] * pairwise_ious[..., None]          # (B, A, G, C)
        scores = np.broadcast_to(pred_scores[:, :, None, :], soft_label.shape)
        scale_factor = soft_label - sigmoid(scores)
        pairwise_cls_cost = (bce_with_logits(scores, soft_label)
                             * np.abs(scale_factor) ** 2).sum(-1)
    else:
        raise ValueError(class_cost)

    cost_matrix = pairwise_cls_cost + iou_cost + soft_center_prior
    cost_matrix = np.where(valid_mask[..., None], cost_matrix, f32(INF)).astype(f32)

    fg, matched_gt, matched_pred_ious, dynamic_ks = dynamic_k_matching(
        cost_matrix, pairwise_ious, pad_bbox_flag, topk)

    assigned_labels = np.full(pred_scores[..., 0].shape, num_classes, np.int64)
    assigned_bboxes = np.zeros(pred_bboxes.shape, f32)
    assign_metrics = np.zeros(pred_scores[..., 0].shape, f32)
    for b in range(batch_size):
        for a in np.nonzero(fg[b])[0]:
            assigned_labels[b, a] = gt_labels[b, matched_gt[b, a], 0]
            assigned_bboxes[b, a] = gt_bboxes[b, matched_gt[b, a]]
            assign_metrics[b, a] = matched_pred_ious[b, a]
    return {
        "assigned_labels": assigned_labels,
        "assigned_labels_weights": np.ones(pred_scores[..., 0].shape, f32),
        "assigned_bboxes": assigned_bboxes,
        "assign_metrics": assign_metrics,
        "_fg": fg, "_matched_gt": matched_gt, "_valid_mask": valid_mask,
        "_dynamic_ks": dynamic_ks, "_cost": cost_matrix, "_ious": pairwise_ious,
    }


def dynamic_k_matching(cost_matrix, pairwise_ious, pad_bbox_flag, topk):
    """``dynamic_k_matching``: cost / ious [B, A, G] -> (fg [B, A], matched gt [B, A] (-1),
    matched iou [B, A], dynamic_ks [B, G])."""
    batch_size, num_bboxes, num_gt = cost_matrix.shape
    matching_matrix = np.zeros(cost_matrix.shape, np.uint8)
    candidate_topk = min(topk, pairwise_ious.shape[1])
    topk_ious = -np.sort(-pairwise_ious, axis=1)[:, :candidate_topk]   # (B, K, G), descending
    dynamic_ks = np.maximum(topk_ious.sum(1).astype(np.int32), 1)     # .int() truncates

    num_gts = pad_bbox_flag.sum((1, 2)).astype(np.int32)
    sorted_indices = np.argsort(cost_matrix, axis=1, kind="stable")
    for b in range(batch_size):
        for gt_idx in range(num_gts[b]):
            topk_ids = sorted_indices[b, :dynamic_ks[b, gt_idx], gt_idx]
            matching_matrix[b, topk_ids, gt_idx] = 1

    prior_match_gt_mask = matching_matrix.sum(2) > 1                    # (B, A)
    for b, a in zip(*np.nonzero(prior_match_gt_mask)):
        cost_argmin = int(np.argmin(cost_matrix[b, a, :]))              # over all G columns
        matching_matrix[b, a, :] = 0
        matching_matrix[b, a, cost_argmin] = 1

    fg = matching_matrix.sum(2) > 0
    matched_ious_all = (matching_matrix * pairwise_ious).sum(2)
    matched_pred_ious = np.where(fg, matched_ious_all, f32(0)).astype(f32)
    matched_gt = np.where(fg, matching_matrix.argmax(2), -1)
    return fg, matched_gt, matched_pred_ious, dynamic_ks


# ----------------------------------------------------------------------------------------------
# Test harness (not MMYOLO).

def _cxcywh_to_xyxy(b):
    b = np.asarray(b, f32)
    return np.concatenate([b[..., :2] - b[..., 2:4] / f32(2), b[..., :2] + b[..., 2:4] / f32(2)],
                          axis=-1)


def dsl_reference(pred_boxes, scores, points, strides, gt_boxes, gt_classes, gt_mask, *,
                  num_classes, keep_outside_picks=False, **options):
    """One image through ``batch_dsl_assign`` (batch of 1, valid gts only, no padding).

    pred_boxes [A, 4] cxcywh, scores [A, C] logits (for YOLOX's joint score pass the logit of
    sqrt(sigmoid(cls) * sigmoid(obj))), points [A, 2] (x, y) pixels, strides [A],
    gt_boxes [G, 4] cxcywh, gt_classes [G], gt_mask [G]. ``keep_outside_picks=False`` keeps only
    the foreground anchors that are candidates (the JAX default; MMYOLO keeps all).
    Returns per-anchor fields keyed like ``Assignment`` plus ``cost`` [G, A] (NaN rows for
    padding) and ``iou`` [G, A]; ``matched_gt`` refers to the caller's rows.
    """
    gt_mask = np.asarray(gt_mask, bool)
    rows = np.nonzero(gt_mask)[0]
    g, a = len(gt_mask), len(pred_boxes)
    strides = np.asarray(strides, f32)
    priors = np.concatenate([np.asarray(points, f32), strides[:, None], strides[:, None]], 1)
    gts = _cxcywh_to_xyxy(np.asarray(gt_boxes, f32)[rows])[None]
    labels = np.asarray(gt_classes)[rows][None, :, None]
    out = batch_dsl_assign(_cxcywh_to_xyxy(pred_boxes)[None], np.asarray(scores, f32)[None],
                           priors, labels, gts, np.ones((1, len(rows), 1), f32),
                           num_classes=num_classes, **options)
    fg = out["_fg"][0]
    valid = out["_valid_mask"][0]
    if not keep_outside_picks:
        fg = fg & valid
    matched = np.where(fg, rows[np.maximum(out["_matched_gt"][0], 0)] if len(rows) else 0, 0)
    k = np.zeros(g, np.int64)
    k[rows] = out["_dynamic_ks"][0]
    cost = np.full((g, a), np.nan, f32)
    cost[rows] = out["_cost"][0].T
    iou = np.zeros((g, a), f32)
    iou[rows] = out["_ious"][0].T
    return {
        "fg_mask": fg,
        "matched_gt": matched,
        "matched_iou": np.where(fg, out["assign_metrics"][0], 0),
        "num_fg": int(fg.sum()),
        "matched_class": np.where(fg, out["assigned_labels"][0], 0),
        "max_iou": iou[rows].max(0) if len(rows) else np.zeros(a, f32),
        "dynamic_k": k,
        "candidate_mask": valid,
        "quality": np.where(fg, out["assign_metrics"][0], 0),
        "cost": cost,
        "iou": iou,
    }
