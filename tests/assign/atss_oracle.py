"""NumPy transcription of MMYOLO's ATSS assigner, the oracle for ``yolox_jax.assign.atss``.

Transcribed from open-mmlab/mmyolo at commit 8c4d9dc503dc8e327bec8147e8dc97124052f693:

* ``mmyolo/models/task_modules/assigners/batch_atss_assigner.py`` (``bbox_center_distance``,
  ``BatchATSSAssigner``: forward, select_topk_candidates, threshold_calculator, get_targets);
* ``mmyolo/models/task_modules/assigners/utils.py`` (``select_candidates_in_gts``,
  ``select_highest_overlaps``, ``yolov6_iou_calculator``; shared with ``tal_oracle.py``);
* its default ``iou_calculator``, mmdet's ``BboxOverlaps2D`` ->
  ``mmdet/structures/bbox/bbox_overlaps.py`` (``bbox_overlaps``, mode "iou", eps 1e-6; read at
  open-mmlab/mmdetection commit 19bceba56284d440278e80cfde1d95460330ccbb).

Same inputs as the reference (xyxy boxes, priors ``(x, y, stride_w, stride_h)`` from
``MlvlPointGenerator(offset=0.5)`` as in ``mmyolo/models/dense_heads/yolov6_head.py``,
``num_level_priors``, gts padded with zero rows at the end and ``pad_bbox_flag``), float32
arithmetic. ``half_size`` is the reference's hard-coded ``2.5`` (prior side 5 strides), a
parameter here to test the ``prior_size`` option. ``torch.topk`` leaves the order of equal
distances open; here the lower index comes first (a stable sort). ``torch.std`` is unbiased.

Besides MMYOLO's four outputs, the result holds internals the tests compare against:
``assigned_gt_idxs`` [B, A], ``pos_mask`` [B, G, A] (after conflicts), ``overlaps`` [B, G, A]
(prior IoUs), ``pred_overlaps`` [B, G, A] (IoU of the predictions), ``is_in_candidate``
[B, G, A] and ``multi_claimed`` [B, A].
"""
import numpy as np
from tal_oracle import (F32, one_hot, select_candidates_in_gts, select_highest_overlaps,
                        topk_indices, yolov6_iou_calculator)


def bbox_overlaps(bboxes1, bboxes2, eps=1e-6):
    """mmdet ``bbox_overlaps(mode="iou", is_aligned=False)``: [M, 4], [N, 4] xyxy -> [M, N]."""
    area1 = (bboxes1[..., 2] - bboxes1[..., 0]) * (bboxes1[..., 3] - bboxes1[..., 1])
    area2 = (bboxes2[..., 2] - bboxes2[..., 0]) * (bboxes2[..., 3] - bboxes2[..., 1])
    lt = np.maximum(bboxes1[..., :, None, :2], bboxes2[..., None, :, :2])
    rb = np.minimum(bboxes1[..., :, None, 2:], bboxes2[..., None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    overlap = wh[..., 0] * wh[..., 1]
    union = area1[..., None] + area2[..., None, :] - overlap
    union = np.maximum(union, F32(eps))
    return (overlap / union).astype(F32)


def bbox_center_distance(bboxes, priors):
    """bboxes [n, 4], priors [A, 4] xyxy -> (distances [n, A], priors_points [A, 2])."""
    bbox_cx = (bboxes[:, 0] + bboxes[:, 2]) / F32(2.0)
    bbox_cy = (bboxes[:, 1] + bboxes[:, 3]) / F32(2.0)
    bbox_points = np.stack((bbox_cx, bbox_cy), axis=1)
    priors_cx = (priors[:, 0] + priors[:, 2]) / F32(2.0)
    priors_cy = (priors[:, 1] + priors[:, 3]) / F32(2.0)
    priors_points = np.stack((priors_cx, priors_cy), axis=1)
    d = bbox_points[:, None, :] - priors_points[None, :, :]
    distances = np.sqrt((d * d).sum(-1))
    return distances.astype(F32), priors_points


class BatchATSSAssigner:
    def __init__(self, num_classes, topk=9, half_size=2.5):
        self.num_classes = num_classes
        self.topk = topk
        self.half_size = half_size

    def __call__(self, pred_bboxes, priors, num_level_priors, gt_labels, gt_bboxes,
                 pad_bbox_flag):
        """pred_bboxes [B, A, 4] xyxy or None, priors [A, 4] (x, y, stride_w, stride_h),
        num_level_priors list, gt_labels [B, G, 1], gt_bboxes [B, G, 4] xyxy,
        pad_bbox_flag [B, G, 1]."""
        priors = priors.astype(F32)
        gt_bboxes, pad_bbox_flag = gt_bboxes.astype(F32), pad_bbox_flag.astype(F32)
        cell_half_size = priors[:, 2:] * F32(self.half_size)
        priors_gen = np.zeros_like(priors)
        priors_gen[:, :2] = priors[:, :2] - cell_half_size
        priors_gen[:, 2:] = priors[:, :2] + cell_half_size
        priors = priors_gen

        batch_size = gt_bboxes.shape[0]
        num_gt, num_priors = gt_bboxes.shape[1], priors.shape[0]
        result = {
            "assigned_labels": np.full((batch_size, num_priors), self.num_classes, np.int64),
            "assigned_bboxes": np.zeros((batch_size, num_priors, 4), F32),
            "assigned_scores": np.zeros((batch_size, num_priors, self.num_classes), F32),
            "fg_mask_pre_prior": np.zeros((batch_size, num_priors), bool),
            "assigned_gt_idxs": np.zeros((batch_size, num_priors), np.int64),
            "pos_mask": np.zeros((batch_size, num_gt, num_priors), F32),
            "overlaps": np.zeros((batch_size, num_gt, num_priors), F32),
            "pred_overlaps": np.zeros((batch_size, num_gt, num_priors), F32),
            "is_in_candidate": np.zeros((batch_size, num_gt, num_priors), F32),
            "multi_claimed": np.zeros((batch_size, num_priors), bool),
        }
        if num_gt == 0:
            return result

        overlaps = bbox_overlaps(gt_bboxes.reshape(-1, 4), priors)
        overlaps = overlaps.reshape(batch_size, -1, num_priors)

        distances, priors_points = bbox_center_distance(gt_bboxes.reshape(-1, 4), priors)
        distances = distances.reshape(batch_size, -1, num_priors)

        is_in_candidate, candidate_idxs = self.select_topk_candidates(
            distances, num_level_priors, pad_bbox_flag)

        overlaps_thr_per_gt, iou_candidates = self.threshold_calculator(
            is_in_candidate, candidate_idxs, overlaps, num_priors, batch_size, num_gt)

        is_pos = np.where(iou_candidates > np.repeat(overlaps_thr_per_gt, num_priors, axis=-1),
                          is_in_candidate, np.zeros_like(is_in_candidate))

        is_in_gts = select_candidates_in_gts(priors_points, gt_bboxes)
        pos_mask = is_pos * is_in_gts * pad_bbox_flag
        multi_claimed = pos_mask.sum(axis=-2) > 1

        gt_idx_pre_prior, fg_mask_pre_prior, pos_mask = select_highest_overlaps(
            pos_mask, overlaps, num_gt)

        assigned_labels, assigned_bboxes, assigned_scores = self.get_targets(
            gt_labels, gt_bboxes, gt_idx_pre_prior, fg_mask_pre_prior, num_priors, batch_size,
            num_gt)

        pred_overlaps = result["pred_overlaps"]
        if pred_bboxes is not None:
            pred_overlaps = yolov6_iou_calculator(gt_bboxes, pred_bboxes.astype(F32))
            ious = (pred_overlaps * pos_mask).max(axis=-2)[..., None]
            assigned_scores = assigned_scores * ious

        result.update(assigned_labels=assigned_labels, assigned_bboxes=assigned_bboxes,
                      assigned_scores=assigned_scores.astype(F32),
                      fg_mask_pre_prior=fg_mask_pre_prior.astype(bool),
                      assigned_gt_idxs=gt_idx_pre_prior, pos_mask=pos_mask, overlaps=overlaps,
                      pred_overlaps=pred_overlaps, is_in_candidate=is_in_candidate,
                      multi_claimed=multi_claimed)
        return result

    def select_topk_candidates(self, distances, num_level_priors, pad_bbox_flag):
        is_in_candidate_list, candidate_idxs = [], []
        start_idx = 0
        pad = np.repeat(pad_bbox_flag, self.topk, axis=-1).astype(bool)
        splits = np.cumsum(num_level_priors)[:-1]
        for distances_per_level, priors_per_level in zip(np.split(distances, splits, axis=-1),
                                                         num_level_priors):
            end_index = start_idx + priors_per_level
            selected_k = min(self.topk, priors_per_level)
            topk_idxs_per_level = topk_indices(distances_per_level, selected_k, largest=False)
            candidate_idxs.append(topk_idxs_per_level + start_idx)
            topk_idxs_per_level = np.where(pad[..., :selected_k], topk_idxs_per_level, 0)
            is_in_candidate = one_hot(topk_idxs_per_level, priors_per_level).sum(axis=-2)
            is_in_candidate = np.where(is_in_candidate > 1, 0, is_in_candidate)
            is_in_candidate_list.append(is_in_candidate.astype(distances.dtype))
            start_idx = end_index
        return (np.concatenate(is_in_candidate_list, axis=-1),
                np.concatenate(candidate_idxs, axis=-1))

    @staticmethod
    def threshold_calculator(is_in_candidate, candidate_idxs, overlaps, num_priors, batch_size,
                             num_gt):
        batch_size_num_gt = batch_size * num_gt
        candidate_overlaps = np.where(is_in_candidate > 0, overlaps, np.zeros_like(overlaps))
        candidate_idxs = candidate_idxs.reshape(batch_size_num_gt, -1)
        assist_indexes = num_priors * np.arange(batch_size_num_gt)[:, None]
        flatten_indexes = candidate_idxs + assist_indexes
        cand = candidate_overlaps.reshape(-1)[flatten_indexes].reshape(batch_size, num_gt, -1)
        overlaps_mean_per_gt = cand.mean(axis=-1, keepdims=True, dtype=F32)
        overlaps_std_per_gt = cand.std(axis=-1, keepdims=True, ddof=1, dtype=F32)
        overlaps_thr_per_gt = overlaps_mean_per_gt + overlaps_std_per_gt
        return overlaps_thr_per_gt, candidate_overlaps

    def get_targets(self, gt_labels, gt_bboxes, assigned_gt_inds, fg_mask_pre_prior, num_priors,
                    batch_size, num_gt):
        batch_index = np.arange(batch_size)[:, None]
        assigned_gt_inds = (assigned_gt_inds + batch_index * num_gt).astype(np.int64)
        assigned_labels = gt_labels.astype(np.int64).flatten()[assigned_gt_inds.flatten()]
        assigned_labels = assigned_labels.reshape(batch_size, num_priors)
        assigned_labels = np.where(fg_mask_pre_prior > 0, assigned_labels, self.num_classes)
        assigned_bboxes = gt_bboxes.reshape(-1, 4)[assigned_gt_inds.flatten()]
        assigned_bboxes = assigned_bboxes.reshape(batch_size, num_priors, 4)
        assigned_scores = one_hot(assigned_labels, self.num_classes + 1).astype(F32)
        assigned_scores = assigned_scores[:, :, :self.num_classes]
        return assigned_labels, assigned_bboxes, assigned_scores
