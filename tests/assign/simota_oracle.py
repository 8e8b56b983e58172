"""Plain NumPy SimOTA oracle, written from docs/official-behaviour.md §3.1-3.3 with explicit loops.

Independent of the JAX implementation: it works on the variable-size problem (only the valid gts,
only the candidate anchors, as the official code does), materialises the full [G, N, C] class
cost, and uses loops over gts and anchors for the matching. Float32 throughout, like the official
code. Options mirror ``yolox_jax.assign._simota.simota``.
"""
from __future__ import annotations

import numpy as np


def _bce(p, y):
    """torch.nn.functional.binary_cross_entropy, elementwise, logs clamped at -100."""
    return -(y * np.maximum(np.log(p), -100.0) + (1 - y) * np.maximum(np.log(1 - p), -100.0))


def _iou(gt, pred):
    """IoU of one gt cxcywh [4] with preds [N, 4] (no epsilon, strict-overlap test)."""
    tl = np.maximum(gt[:2] - gt[2:] / 2, pred[:, :2] - pred[:, 2:] / 2)
    br = np.minimum(gt[:2] + gt[2:] / 2, pred[:, :2] + pred[:, 2:] / 2)
    inter = np.prod(br - tl, axis=1) * np.all(tl < br, axis=1)
    return inter / (gt[2] * gt[3] + pred[:, 2] * pred[:, 3] - inter)


def simota_numpy(pred_boxes, cls_logits, obj_logits, grid_xy, strides, gt_boxes, gt_classes, *,
                 center_radius=None, candidate_rule="center", soft_center_prior=None,
                 topk_iou=10, k_rounding="floor"):
    """Returns (fg_mask [A] bool, matched_gt [A] int (-1 where not fg), matched_iou [A])."""
    f32 = np.float32
    pred_boxes = np.asarray(pred_boxes, f32)
    gt_boxes = np.asarray(gt_boxes, f32).reshape(-1, 4)
    strides = np.asarray(strides, f32)
    grid_xy = np.asarray(grid_xy, f32)
    num_anchors, num_gt = pred_boxes.shape[0], gt_boxes.shape[0]
    fg = np.zeros(num_anchors, bool)
    matched = np.full(num_anchors, -1, np.int64)
    matched_iou = np.zeros(num_anchors, f32)
    if num_gt == 0:
        return fg, matched, matched_iou
    if center_radius is None:
        center_radius = 1.5 if candidate_rule == "center" else 2.5
    radius = f32(center_radius)

    # Geometry, gt by gt.
    ax = (grid_xy[:, 0] + f32(0.5)) * strides
    ay = (grid_xy[:, 1] + f32(0.5)) * strides
    in_center = np.zeros((num_gt, num_anchors), bool)
    in_box = np.zeros((num_gt, num_anchors), bool)
    for g in range(num_gt):
        cx, cy, w, h = gt_boxes[g]
        d = strides * radius
        in_center[g] = np.minimum.reduce([ax - (cx - d), ay - (cy - d), (cx + d) - ax, (cy + d) - ay]) > 0
        in_box[g] = np.minimum.reduce([ax - (cx - f32(0.5) * w), ay - (cy - f32(0.5) * h),
                                       (cx + f32(0.5) * w) - ax, (cy + f32(0.5) * h) - ay]) > 0
    if candidate_rule == "center":
        region, any_region, penalty = in_center, in_center, 1e6
    else:
        region, any_region, penalty = in_box & in_center, in_box | in_center, 1e5
    if soft_center_prior is not None:
        cand = np.arange(num_anchors)
        penalty = soft_center_prior
    else:
        cand = np.nonzero(any_region.any(axis=0))[0]
    n = len(cand)
    if n == 0:
        return fg, matched, matched_iou

    ious = np.stack([_iou(gt_boxes[g], pred_boxes[cand]) for g in range(num_gt)]).astype(f32)
    p = np.sqrt((1 / (1 + np.exp(-cls_logits[cand].astype(f32))))
                * (1 / (1 + np.exp(-obj_logits[cand].astype(f32))))[:, None]).astype(f32)
    onehot = np.eye(cls_logits.shape[1], dtype=f32)[np.asarray(gt_classes, np.int64)]
    cls_cost = _bce(p[None, :, :], onehot[:, None, :]).sum(-1)           # [G, N, C] -> [G, N]
    cost = (cls_cost + f32(3.0) * -np.log(ious + f32(1e-8))
            + f32(penalty) * (~region[:, cand]).astype(f32)).astype(f32)

    n_top = min(topk_iou, n)
    matching = np.zeros((num_gt, n), bool)
    for g in range(num_gt):
        total = np.sort(ious[g])[::-1][:n_top].sum(dtype=f32)
        k = int(total) if k_rounding == "floor" else int(np.round(total))
        k = max(1, k)
        for j in np.argsort(cost[g], kind="stable")[:k]:
            matching[g, j] = True
    for j in range(n):
        picked = np.nonzero(matching[:, j])[0]
        if len(picked) == 0:
            continue
        g = picked[0] if len(picked) == 1 else int(np.argmin(cost[:, j]))
        a = cand[j]
        fg[a], matched[a], matched_iou[a] = True, g, ious[g, j]
    return fg, matched, matched_iou
