"""NumPy transcription of MMYOLO's task-aligned assigner, the oracle for ``yolox_jax.assign.tal``.

Transcribed from open-mmlab/mmyolo at commit 8c4d9dc503dc8e327bec8147e8dc97124052f693:

* ``mmyolo/models/task_modules/assigners/batch_task_aligned_assigner.py``
  (``BatchTaskAlignedAssigner``: forward, get_pos_mask, get_box_metrics,
  select_topk_candidates, get_targets);
* ``mmyolo/models/task_modules/assigners/utils.py`` (``select_candidates_in_gts``,
  ``select_highest_overlaps``, ``yolov6_iou_calculator``).

Same inputs as the reference (xyxy boxes, post-sigmoid ``pred_scores``, priors ``(x, y, stride_w,
stride_h)``, gts padded with zero rows at the end and ``pad_bbox_flag``), float32 arithmetic,
one function per method. The one choice the reference leaves open: ``torch.topk`` does not
specify the order of equal values; here they go to the lower index (a stable sort).
``torch.argmax``'s first-maximum rule is numpy's too.

Besides MMYOLO's four outputs, the result holds internals the tests compare against:
``assigned_gt_idxs`` [B, A] (``gt_idx_pre_prior``), ``pos_mask`` [B, G, A] (after conflicts),
``overlaps`` [B, G, A] (IoU of the predictions), ``is_in_gts`` [B, G, A] and
``multi_claimed`` [B, A] (anchors taken by several gts before the conflicts were resolved).
``use_ciou`` is not transcribed.
"""
import numpy as np

F32 = np.float32


def one_hot(idx, n):
    return np.eye(n, dtype=np.int64)[idx]


def select_candidates_in_gts(priors_points, gt_bboxes, eps=1e-9):
    """priors_points [A, 2], gt_bboxes [B, G, 4] -> [B, G, A] float (1 inside)."""
    lt = gt_bboxes[:, :, None, 0:2]
    rb = gt_bboxes[:, :, None, 2:4]
    pts = priors_points[None, None]
    deltas = np.concatenate([pts - lt, rb - pts], axis=-1)                   # [B, G, A, 4]
    return (deltas.min(axis=-1) > F32(eps)).astype(F32)


def select_highest_overlaps(pos_mask, overlaps, num_gt):
    """pos_mask, overlaps [B, G, A] -> (gt_idx_pre_prior [B, A], fg_mask_pre_prior [B, A],
    pos_mask [B, G, A])."""
    fg_mask_pre_prior = pos_mask.sum(axis=-2)
    if fg_mask_pre_prior.max() > 1:
        mask_multi_gts = np.repeat(fg_mask_pre_prior[:, None, :] > 1, num_gt, axis=1)
        index = overlaps.argmax(axis=1)                                      # first maximum
        is_max_overlaps = one_hot(index, num_gt).transpose(0, 2, 1).astype(overlaps.dtype)
        pos_mask = np.where(mask_multi_gts, is_max_overlaps, pos_mask)
        fg_mask_pre_prior = pos_mask.sum(axis=-2)
    gt_idx_pre_prior = pos_mask.argmax(axis=-2)
    return gt_idx_pre_prior, fg_mask_pre_prior, pos_mask


def yolov6_iou_calculator(bbox1, bbox2, eps=1e-9):
    """bbox1 [B, M1, 4], bbox2 [B, M2, 4] xyxy -> IoU [B, M1, M2]."""
    bbox1 = bbox1[:, :, None, :]
    bbox2 = bbox2[:, None, :, :]
    b1_x1y1, b1_x2y2 = bbox1[..., 0:2], bbox1[..., 2:4]
    b2_x1y1, b2_x2y2 = bbox2[..., 0:2], bbox2[..., 2:4]
    wh = np.clip(np.minimum(b1_x2y2, b2_x2y2) - np.maximum(b1_x1y1, b2_x1y1), 0, None)
    overlap = wh[..., 0] * wh[..., 1]
    a1 = np.clip(b1_x2y2 - b1_x1y1, 0, None)
    a2 = np.clip(b2_x2y2 - b2_x1y1, 0, None)
    union = a1[..., 0] * a1[..., 1] + a2[..., 0] * a2[..., 1] - overlap + F32(eps)
    return (overlap / union).astype(F32)


def topk_indices(x, k, largest=True):
    """``torch.topk(x, k, dim=-1, largest)[1]`` with equal values in index order."""
    order = np.argsort(-x if largest else x, axis=-1, kind="stable")
    return order[..., :k]


class BatchTaskAlignedAssigner:
    def __init__(self, num_classes, topk=13, alpha=1.0, beta=6.0, eps=1e-7):
        self.num_classes = num_classes
        self.topk = topk
        self.alpha = alpha
        self.beta = beta
        self.eps = eps

    def __call__(self, pred_bboxes, pred_scores, priors, gt_labels, gt_bboxes, pad_bbox_flag):
        """pred_bboxes [B, A, 4] xyxy, pred_scores [B, A, C], priors [A, 4] (or [A, 2]),
        gt_labels [B, G, 1], gt_bboxes [B, G, 4] xyxy, pad_bbox_flag [B, G, 1]."""
        pred_bboxes, pred_scores = pred_bboxes.astype(F32), pred_scores.astype(F32)
        gt_bboxes, pad_bbox_flag = gt_bboxes.astype(F32), pad_bbox_flag.astype(F32)
        priors = priors[:, :2].astype(F32)
        batch_size, num_priors = pred_scores.shape[:2]
        num_gt = gt_bboxes.shape[1]

        result = {
            "assigned_labels": np.full((batch_size, num_priors), self.num_classes, np.int64),
            "assigned_bboxes": np.zeros((batch_size, num_priors, 4), F32),
            "assigned_scores": np.zeros((batch_size, num_priors, self.num_classes), F32),
            "fg_mask_pre_prior": np.zeros((batch_size, num_priors), bool),
            "assigned_gt_idxs": np.zeros((batch_size, num_priors), np.int64),
            "pos_mask": np.zeros((batch_size, num_gt, num_priors), F32),
            "overlaps": np.zeros((batch_size, num_gt, num_priors), F32),
            "is_in_gts": np.zeros((batch_size, num_gt, num_priors), F32),
            "multi_claimed": np.zeros((batch_size, num_priors), bool),
        }
        if num_gt == 0:
            return result

        pos_mask, alignment_metrics, overlaps, is_in_gts = self.get_pos_mask(
            pred_bboxes, pred_scores, priors, gt_labels, gt_bboxes, pad_bbox_flag, batch_size,
            num_gt)
        multi_claimed = pos_mask.sum(axis=-2) > 1

        assigned_gt_idxs, fg_mask_pre_prior, pos_mask = select_highest_overlaps(
            pos_mask, overlaps, num_gt)

        assigned_labels, assigned_bboxes, assigned_scores = self.get_targets(
            gt_labels, gt_bboxes, assigned_gt_idxs, fg_mask_pre_prior, batch_size, num_gt)

        # normalize
        alignment_metrics = alignment_metrics * pos_mask
        pos_align_metrics = alignment_metrics.max(axis=-1, keepdims=True)
        pos_overlaps = (overlaps * pos_mask).max(axis=-1, keepdims=True)
        norm_align_metric = (alignment_metrics * pos_overlaps
                             / (pos_align_metrics + F32(self.eps))).max(axis=-2)[..., None]
        assigned_scores = assigned_scores * norm_align_metric

        result.update(assigned_labels=assigned_labels, assigned_bboxes=assigned_bboxes,
                      assigned_scores=assigned_scores.astype(F32),
                      fg_mask_pre_prior=fg_mask_pre_prior.astype(bool),
                      assigned_gt_idxs=assigned_gt_idxs, pos_mask=pos_mask, overlaps=overlaps,
                      is_in_gts=is_in_gts, multi_claimed=multi_claimed)
        return result

    def get_pos_mask(self, pred_bboxes, pred_scores, priors, gt_labels, gt_bboxes, pad_bbox_flag,
                     batch_size, num_gt):
        alignment_metrics, overlaps = self.get_box_metrics(
            pred_bboxes, pred_scores, gt_labels, gt_bboxes, batch_size, num_gt)
        is_in_gts = select_candidates_in_gts(priors, gt_bboxes)
        topk_metric = self.select_topk_candidates(
            alignment_metrics * is_in_gts,
            topk_mask=np.repeat(pad_bbox_flag, self.topk, axis=-1).astype(bool))
        pos_mask = topk_metric * is_in_gts * pad_bbox_flag
        return pos_mask, alignment_metrics, overlaps, is_in_gts

    def get_box_metrics(self, pred_bboxes, pred_scores, gt_labels, gt_bboxes, batch_size,
                        num_gt):
        pred_scores = pred_scores.transpose(0, 2, 1)                          # [B, C, A]
        labels = gt_labels.astype(np.int64)[..., 0]                           # [B, G]
        bbox_scores = np.stack([pred_scores[b, labels[b]] for b in range(batch_size)])
        overlaps = yolov6_iou_calculator(gt_bboxes, pred_bboxes)
        alignment_metrics = (np.power(bbox_scores, F32(self.alpha))
                             * np.power(overlaps, F32(self.beta)))
        return alignment_metrics.astype(F32), overlaps

    def select_topk_candidates(self, alignment_gt_metrics, using_largest_topk=True,
                               topk_mask=None):
        num_priors = alignment_gt_metrics.shape[-1]
        topk_idxs = topk_indices(alignment_gt_metrics, self.topk, using_largest_topk)
        if topk_mask is None:
            topk_metrics = np.take_along_axis(alignment_gt_metrics, topk_idxs, axis=-1)
            topk_mask = np.repeat(topk_metrics.max(axis=-1, keepdims=True) > self.eps,
                                  self.topk, axis=-1)
        topk_idxs = np.where(topk_mask, topk_idxs, 0)
        is_in_topk = one_hot(topk_idxs, num_priors).sum(axis=-2)
        is_in_topk = np.where(is_in_topk > 1, 0, is_in_topk)
        return is_in_topk.astype(alignment_gt_metrics.dtype)

    def get_targets(self, gt_labels, gt_bboxes, assigned_gt_idxs, fg_mask_pre_prior, batch_size,
                    num_gt):
        batch_ind = np.arange(batch_size)[:, None]
        flat_idxs = assigned_gt_idxs + batch_ind * num_gt
        assigned_labels = gt_labels.astype(np.int64).flatten()[flat_idxs]
        assigned_bboxes = gt_bboxes.reshape(-1, 4)[flat_idxs]
        assigned_labels[assigned_labels < 0] = 0
        assigned_scores = one_hot(assigned_labels, self.num_classes)
        force = np.repeat(fg_mask_pre_prior[:, :, None], self.num_classes, axis=-1)
        assigned_scores = np.where(force > 0, assigned_scores, 0).astype(F32)
        return assigned_labels, assigned_bboxes, assigned_scores
