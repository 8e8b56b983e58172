"""Per-image PyTorch references of the OTA, TAL, ATSS and DSL assigners, for the assignment
benchmark (``yolox_jax/bench/assign.py``; SimOTA's is ``TORCH_LOOP`` there).

Each one is written the way its reference implementation is, so that the benchmark times that
style of code against the batched, jitted JAX assigner: one image at a time with only that
image's valid gts (no padding), variable shapes, ``torch.topk`` / ``torch.sort``, boolean
indexing, Python loops where the reference has them, under ``torch.no_grad()``. The semantics
are those of the NumPy transcriptions the JAX assigners are tested against
(``tests/assign/*_oracle.py``):

* ``ota``: the official OTA assigner (github.com/Megvii-BaseDetection/OTA @ 2c85b4d,
  ``FCOS.get_ground_truth`` with ``SinkhornDistance``): in-box (by 0.01) and within 2.5 strides
  of the centre; the [G, A, C] sigmoid focal class cost (alpha 0.25, gamma 2) on the class
  logits, against the one-hot gt class, and against zeros for the background row; ``1.5 *
  -log(IoU)``; ``1e6`` outside the region; ``k = max(1, int(sum of the top-20 in-region
  IoUs))``; supplies ``[k_1 .. k_G, A - sum k]``, demands 1; log-domain Sinkhorn from ``u = v =
  1``, eps 0.1, 50 iterations, no stopping test; each plan row divided by its maximum, then the
  first maximum per anchor (the last row: background). Compared with ``ota(cost="ota")``.
  Anchor points are YOLOX's cell centres ``(grid + 0.5) * stride``, the IoU is computed from
  xyxy corners (as ``ota_oracle.py``).
* ``tal``: MMYOLO's ``BatchTaskAlignedAssigner`` (open-mmlab/mmyolo @ 8c4d9dc) for one image:
  ``sigmoid(cls)`` scores, YOLOv6 IoU, metric ``s * IoU**6``, top-13 per gt among the anchor
  points inside it, conflicts to the gt of largest IoU (``select_highest_overlaps``), the
  normalised metric as the soft target. Compared with ``tal`` (registry defaults:
  ``score="cls"``).
* ``atss``: MMYOLO's ``BatchATSSAssigner`` with ``pred_bboxes``: prior boxes of 5 strides
  around each point, mmdet ``bbox_overlaps``, the 9 nearest priors per level and gt (per-level
  ``torch.topk``), threshold mean + unbiased std of their IoUs, point inside the gt, conflicts to
  the largest prior IoU; the predicted boxes' IoU as the soft target. Compared with ``atss``.
* ``dsl``: MMYOLO's ``BatchDynamicSoftLabelAssigner`` (RTMDet): points strictly inside a gt are
  candidates; cost = soft-label BCE of the gt class's logit times ``(IoU - p)**2`` +
  ``3 * -log(IoU + 1e-7)`` + ``10 ** (distance / stride - 3)``, 1e8 elsewhere; ``k`` from the
  top-13 IoUs over all anchors; ``torch.sort`` of the cost, a Python loop over gts, conflicts to
  the lowest cost. Points are YOLOX's ``(grid + 0.5) * stride`` and the foreground is kept to
  candidate anchors: the ``dsl`` defaults (``center_offset=0.5``, ``keep_outside_picks=False``).

Run as a script in an interpreter with torch (``yolox_jax`` need not be installed there)::

    python assign_torch.py inputs.npz REPEAT THREADS NAMES

``inputs.npz`` holds the arrays of ``yolox_jax.bench.assign.make_inputs`` (pred [B, A, 4]
cxcywh, cls [B, A, C], obj [B, A], grid_xy [A, 2], strides [A], gt_boxes [B, G, 4] cxcywh,
gt_classes [B, G], gt_mask [B, G]); NAMES is a comma-separated subset of :data:`JAX_OPTIONS`.
Each assigner runs once to warm up (its result is kept), then ``REPEAT`` timed times over the
batch. The script saves ``inputs.npz.fg.npy``, owner [len(NAMES), B, A] int32 (-1: background,
else the matched gt's row in the padded inputs), and prints one JSON line: ``results`` (per
name: ``seconds``, the median over the batch), ``torch``, ``threads``, ``maxrss_mb``.

Importing this module needs no torch: the torch side binds ``torch`` only when run as a script.
:func:`run_reference` and :func:`agreement` are the JAX side's helpers.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

if __name__ == "__main__":       # the torch side (the JAX side imports this module without it)
    import torch
    import torch.nn.functional as F

SCRIPT = Path(__file__)

# JAX assigner options that reproduce each reference (applied to the registry's assigner); ``{}``:
# the registry defaults (TAL's default score is already "cls", DSL's point offset 0.5 and
# candidate-only foreground are what the references here use).
JAX_OPTIONS = {"ota": {"cost": "ota"}, "tal": {}, "atss": {}, "dsl": {}}

IMPLS = {
    "ota": "official OTA FCOS.get_ground_truth + SinkhornDistance (Megvii-BaseDetection/OTA "
           "2c85b4d), per image",
    "tal": "MMYOLO BatchTaskAlignedAssigner (8c4d9dc), per image",
    "atss": "MMYOLO BatchATSSAssigner (8c4d9dc), per image",
    "dsl": "MMYOLO BatchDynamicSoftLabelAssigner (8c4d9dc), per image",
}

INF = 100000000.0            # MMYOLO's INF (DSL)


# ------------------------------------------------------------------------------ JAX side helpers


def run_reference(python, name: str, inputs: dict, repeat: int, threads: int = 0) -> dict:
    """Run the reference ``name`` on ``inputs`` (``make_inputs`` arrays) in the interpreter
    ``python``; returns ``seconds`` (median over the batch), ``maxrss_mb``, ``torch``,
    ``threads`` and ``owner`` [B, A] (-1 background, else the gt row). Raises RuntimeError when
    the script fails."""
    from yolox_jax.bench.common import run_script

    if name not in JAX_OPTIONS:
        raise ValueError(f"no PyTorch reference of {name!r}; known: {', '.join(JAX_OPTIONS)}")
    tr = run_script(python, SCRIPT.read_text(), inputs, repeat, threads, name)
    return {"seconds": tr["results"][name]["seconds"], "maxrss_mb": tr["maxrss_mb"],
            "torch": tr["torch"], "threads": tr["threads"], "owner": tr["fg"][0]}


def agreement(fg_or_owner, assignment) -> dict:
    """Agreement of a reference's result with a batched JAX ``Assignment`` on the same inputs.

    ``fg_or_owner``: bool fg [B, A] (SimOTA's loop) or int owner [B, A] (-1 background).
    Returns ``same_fg``, ``fg_mismatch`` (anchors whose fg flag differs) and, with an owner,
    ``same_matched`` (the matched gt of every anchor fg on both sides is the same row) and
    ``matched_mismatch``."""
    ref = np.asarray(fg_or_owner)
    fg = np.asarray(assignment.fg_mask)
    ref_fg = ref if ref.dtype == bool else ref >= 0
    out = {"same_fg": bool((ref_fg == fg).all()), "fg_mismatch": int((ref_fg != fg).sum())}
    if ref.dtype != bool:
        both = ref_fg & fg
        diff = int((ref[both] != np.asarray(assignment.matched_gt)[both]).sum())
        out.update(same_matched=diff == 0 and out["same_fg"], matched_mismatch=diff)
    return out


# ------------------------------------------------------------------------------ the torch side


def _xyxy(boxes):
    """[N, 4] cxcywh -> xyxy."""
    return torch.cat([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], dim=1)


def _background(num_anchors):
    return (torch.zeros(num_anchors, dtype=torch.bool),
            torch.zeros(num_anchors, dtype=torch.long))


def _inside(points, gts, margin):
    """[G, A] bool: point strictly inside the xyxy gt by more than ``margin`` on every side."""
    deltas = torch.cat([points[None] - gts[:, None, :2], gts[:, None, 2:] - points[None]], dim=-1)
    return deltas.min(dim=-1).values > margin


def _yolov6_iou(gts, boxes, eps=1e-9):
    """MMYOLO ``yolov6_iou_calculator`` for one image: [G, 4], [A, 4] xyxy -> [G, A]."""
    g, b = gts[:, None], boxes[None]
    wh = (torch.min(g[..., 2:], b[..., 2:]) - torch.max(g[..., :2], b[..., :2])).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    wh_g = (g[..., 2:] - g[..., :2]).clamp(min=0)
    wh_b = (b[..., 2:] - b[..., :2]).clamp(min=0)
    union = wh_g[..., 0] * wh_g[..., 1] + wh_b[..., 0] * wh_b[..., 1] - overlap + eps
    return overlap / union


def _mmdet_overlaps(boxes1, boxes2, eps=1e-6):
    """mmdet ``bbox_overlaps(mode="iou")``: [M, 4], [N, 4] xyxy -> [M, N]."""
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    union = torch.max(area1[:, None] + area2[None, :] - overlap, overlap.new_tensor(eps))
    return overlap / union


def _targets(fg, gt_idx, gts, labels, num_classes, soft):
    """The per-anchor targets the references assemble after the matching (matched class, box,
    and the one-hot class target scaled by ``soft`` [A]); computed for the timing only."""
    assigned_labels = torch.where(fg, labels.long()[gt_idx], torch.full_like(gt_idx, num_classes))
    assigned_boxes = gts[gt_idx]
    scores = F.one_hot(assigned_labels, num_classes + 1)[:, :num_classes].float()
    return assigned_labels, assigned_boxes, scores * soft.unsqueeze(-1)


def _one_gt_per_anchor(pos, overlaps):
    """MMYOLO ``select_highest_overlaps`` for one image: pos [G, A] float (0/1), overlaps
    [G, A] -> (fg [A] bool, gt index [A], resolved pos [G, A])."""
    num_gt = pos.shape[0]
    count = pos.sum(dim=0)
    if count.max() > 1:
        multi = (count > 1).unsqueeze(0).expand(num_gt, -1)
        best = overlaps.argmax(dim=0)
        is_best = F.one_hot(best, num_gt).permute(1, 0).to(overlaps.dtype)
        pos = torch.where(multi, is_best, pos)
        count = pos.sum(dim=0)
    return count > 0, pos.argmax(dim=0), pos


# OTA ----------------------------------------------------------------------------------------


def _sigmoid_focal(logits, targets, alpha, gamma):
    """fvcore-style sigmoid focal loss, elementwise."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * ((1 - p_t) ** gamma)
    return (alpha * targets + (1 - alpha) * (1 - targets)) * loss


def _sinkhorn(mu, nu, cost, eps, iters):
    """Log-domain Sinkhorn as the official ``SinkhornDistance``: potentials from ones, the
    column update first, a fixed number of iterations; returns the plan."""
    u, v = torch.ones_like(mu), torch.ones_like(nu)

    def log_kernel(u, v):
        return (-cost + u.unsqueeze(-1) + v.unsqueeze(-2)) / eps

    for _ in range(iters):
        v = eps * (torch.log(nu + 1e-8) - torch.logsumexp(log_kernel(u, v).transpose(-2, -1),
                                                          dim=-1)) + v
        u = eps * (torch.log(mu + 1e-8) - torch.logsumexp(log_kernel(u, v), dim=-1)) + u
    return torch.exp(log_kernel(u, v))


def ota_one(pred, cls_logits, gts, labels, anchors, *, radius=2.5, margin=0.01, alpha=0.25,
            gamma=2.0, reg_weight=1.5, top_candidates=20, eps=0.1, iters=50):
    """Official OTA for one image: pred [A, 4] cxcywh, cls_logits [A, C], gts [G, 4] xyxy,
    labels [G]. Returns (fg [A] bool, matched gt index [A])."""
    points, strides = anchors["points"], anchors["strides"]
    num_gt, num_anchors = gts.shape[0], pred.shape[0]
    if num_gt == 0:
        return _background(num_anchors)
    num_classes = cls_logits.shape[1]

    # In the box (by the margin) and within ``radius`` strides of its centre, clipped to the box.
    in_box = _inside(points, gts, margin)
    centers = (gts[:, :2] + gts[:, 2:]) / 2
    r = (strides * radius)[None, :, None]
    center_boxes = torch.cat([torch.max(centers[:, None] - r, gts[:, None, :2]),
                              torch.min(centers[:, None] + r, gts[:, None, 2:])], dim=-1)
    center_deltas = torch.cat([points[None] - center_boxes[..., :2],
                               center_boxes[..., 2:] - points[None]], dim=-1)
    in_region = in_box & (center_deltas.min(dim=-1).values > 0)

    # The [G, A, C] class cost, as the official code builds it.
    shape = (num_gt, num_anchors, num_classes)
    onehot = F.one_hot(labels.long(), num_classes).float()
    loss_cls = _sigmoid_focal(cls_logits.unsqueeze(0).expand(shape),
                              onehot.unsqueeze(1).expand(shape), alpha, gamma).sum(dim=-1)
    loss_cls_bg = _sigmoid_focal(cls_logits, torch.zeros_like(cls_logits), alpha,
                                 gamma).sum(dim=-1)

    # IoU and the IoU cost, -log(max(IoU, eps)).
    boxes = _xyxy(pred)[None]
    t = gts[:, None]
    area_b = (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)
    area_t = (t[..., 2] - t[..., 0]).clamp(min=0) * (t[..., 3] - t[..., 1]).clamp(min=0)
    w = (torch.min(boxes[..., 2], t[..., 2]) - torch.max(boxes[..., 0], t[..., 0])).clamp(min=0)
    h = (torch.min(boxes[..., 3], t[..., 3]) - torch.max(boxes[..., 1], t[..., 1])).clamp(min=0)
    inter = w * h
    f32_eps = torch.finfo(torch.float32).eps
    ious = inter / (area_t + area_b - inter).clamp(min=f32_eps)
    loss_delta = -torch.log(ious.clamp(min=f32_eps))

    loss = loss_cls + reg_weight * loss_delta + 1e6 * (1 - in_region.float())

    # Dynamic k and the marginals.
    topk_ious, _ = torch.topk(ious * in_region.float(), min(top_candidates, num_anchors), dim=1)
    mu = ious.new_ones(num_gt + 1)
    mu[:-1] = torch.clamp(topk_ious.sum(1).int(), min=1).float()
    mu[-1] = num_anchors - mu[:-1].sum()
    nu = ious.new_ones(num_anchors)
    cost = torch.cat([loss, loss_cls_bg.unsqueeze(0)], dim=0)

    pi = _sinkhorn(mu, nu, cost, eps, iters)
    pi = pi / pi.max(dim=1).values.unsqueeze(1)
    _, owner = torch.max(pi, dim=0)
    fg = owner != num_gt
    matched = torch.where(fg, owner, torch.zeros_like(owner))
    matched_iou = torch.where(fg, ious.gather(0, matched[None])[0], torch.zeros_like(ious[0]))
    _targets(fg, matched, gts, labels, num_classes, matched_iou)
    return fg, matched


# TAL ----------------------------------------------------------------------------------------


def tal_one(pred, cls_logits, gts, labels, anchors, *, topk=13, alpha=1.0, beta=6.0,
            eps=1e-7):
    """MMYOLO's task-aligned assignment for one image (shapes as ``ota_one``)."""
    num_gt, num_anchors = gts.shape[0], pred.shape[0]
    if num_gt == 0:
        return _background(num_anchors)
    boxes = _xyxy(pred)
    scores = cls_logits.sigmoid()                                       # MMYOLO's pred_scores
    bbox_scores = scores.permute(1, 0)[labels.long()]                   # [G, A]
    overlaps = _yolov6_iou(gts, boxes)
    metrics = bbox_scores.pow(alpha) * overlaps.pow(beta)
    in_gts = _inside(anchors["points"], gts, 1e-9).float()

    _, topk_idxs = torch.topk(metrics * in_gts, min(topk, num_anchors), dim=-1, largest=True)
    in_topk = torch.zeros_like(metrics).scatter_(1, topk_idxs, 1.0)
    pos = in_topk * in_gts
    fg, gt_idx, pos = _one_gt_per_anchor(pos, overlaps)

    # The soft class target (normalised metric), as the reference computes it.
    metrics = metrics * pos
    pos_metrics = metrics.max(dim=-1, keepdim=True).values
    pos_overlaps = (overlaps * pos).max(dim=-1, keepdim=True).values
    quality = (metrics * pos_overlaps / (pos_metrics + eps)).max(dim=0).values
    _targets(fg, gt_idx, gts, labels, cls_logits.shape[1], quality)
    return fg, torch.where(fg, gt_idx, torch.zeros_like(gt_idx))


# ATSS ---------------------------------------------------------------------------------------


def atss_one(pred, cls_logits, gts, labels, anchors, *, topk=9, half_size=2.5):
    """MMYOLO's ATSS assignment for one image (shapes as ``ota_one``; scores unused)."""
    points, strides = anchors["points"], anchors["strides"]
    num_gt, num_anchors = gts.shape[0], pred.shape[0]
    if num_gt == 0:
        return _background(num_anchors)
    half = strides[:, None] * half_size
    priors = torch.cat([points - half, points + half], dim=1)
    overlaps = _mmdet_overlaps(gts, priors)                             # [G, A]

    gt_points = torch.stack([(gts[:, 0] + gts[:, 2]) / 2, (gts[:, 1] + gts[:, 3]) / 2], dim=1)
    prior_points = torch.stack([(priors[:, 0] + priors[:, 2]) / 2,
                                (priors[:, 1] + priors[:, 3]) / 2], dim=1)
    distances = (gt_points[:, None] - prior_points[None]).pow(2).sum(-1).sqrt()

    # The nearest ``topk`` priors of every level.
    in_candidate, candidate_idxs, start = [], [], 0
    for dist_level, size in zip(torch.split(distances, anchors["levels"], dim=-1),
                                anchors["levels"]):
        _, idx = torch.topk(dist_level, min(topk, size), dim=-1, largest=False)
        candidate_idxs.append(idx + start)
        in_candidate.append(torch.zeros_like(dist_level).scatter_(1, idx, 1.0))
        start += size
    in_candidate = torch.cat(in_candidate, dim=-1)
    candidate_idxs = torch.cat(candidate_idxs, dim=-1)

    # Threshold: mean + std of the candidates' IoUs.
    candidate_overlaps = torch.where(in_candidate > 0, overlaps, torch.zeros_like(overlaps))
    picked = candidate_overlaps.gather(1, candidate_idxs)
    threshold = picked.mean(dim=-1, keepdim=True) + picked.std(dim=-1, keepdim=True)
    is_pos = torch.where(candidate_overlaps > threshold, in_candidate,
                         torch.zeros_like(in_candidate))

    pos = is_pos * _inside(prior_points, gts, 1e-9).float()
    fg, gt_idx, pos = _one_gt_per_anchor(pos, overlaps)

    # The soft class target: IoU of the predicted box with its gt.
    pred_overlaps = _yolov6_iou(gts, _xyxy(pred))
    quality = (pred_overlaps * pos).max(dim=0).values
    _targets(fg, gt_idx, gts, labels, cls_logits.shape[1], quality)
    return fg, torch.where(fg, gt_idx, torch.zeros_like(gt_idx))


# DSL ----------------------------------------------------------------------------------------


def dsl_one(pred, cls_logits, gts, labels, anchors, *, soft_center_radius=3.0, topk=13,
            iou_weight=3.0, keep_outside_picks=False):
    """MMYOLO's dynamic soft label assignment for one image (shapes as ``ota_one``)."""
    points, strides = anchors["points"], anchors["strides"]
    num_gt, num_anchors = gts.shape[0], pred.shape[0]
    if num_gt == 0:
        return _background(num_anchors)
    boxes = _xyxy(pred)
    # MMYOLO's layout: [A, G].
    deltas = torch.cat([points[:, None] - gts[None, :, :2], gts[None, :, 2:] - points[:, None]],
                       dim=-1)
    valid = (deltas.min(dim=-1).values > 0).sum(dim=-1) > 0             # [A]

    gt_centers = (gts[:, :2] + gts[:, 2:]) / 2
    distance = (points[:, None] - gt_centers[None]).pow(2).sum(-1).sqrt() / strides[:, None]
    distance = distance * valid.unsqueeze(-1)
    soft_center_prior = torch.pow(10, distance - soft_center_radius)

    ious = _mmdet_overlaps(boxes, gts)                                  # [A, G]
    iou_cost = -torch.log(ious + 1e-7) * iou_weight

    pair_scores = cls_logits[:, labels.long()]                           # [A, G]
    scale = ious - pair_scores.sigmoid()
    cls_cost = F.binary_cross_entropy_with_logits(pair_scores, ious, reduction="none") \
        * scale.abs().pow(2)

    cost = cls_cost + iou_cost + soft_center_prior
    cost[~valid, :] = INF

    # Dynamic k matching.
    matching = torch.zeros_like(cost, dtype=torch.uint8)
    top_ious, _ = torch.topk(ious, min(topk, num_anchors), dim=0)
    dynamic_ks = torch.clamp(top_ious.sum(0).int(), min=1)
    _, order = torch.sort(cost, dim=0)
    for g in range(num_gt):
        matching[order[:dynamic_ks[g], g], g] = 1
    multi = matching.sum(1) > 1
    if multi.sum() > 0:
        _, best = torch.min(cost[multi, :], dim=1)
        matching[multi, :] *= 0
        matching[multi, best] = 1
    fg = matching.sum(1) > 0
    matched = matching.argmax(1)
    if not keep_outside_picks:
        fg = fg & valid                   # the JAX default: foreground among candidates only
    matched = torch.where(fg, matched, torch.zeros_like(matched))
    metrics = torch.where(fg, ious.gather(1, matched[:, None])[:, 0], torch.zeros_like(ious[:, 0]))
    _targets(fg, matched, gts, labels, cls_logits.shape[1], metrics)
    return fg, matched


ASSIGNERS = {"ota": ota_one, "tal": tal_one, "atss": atss_one, "dsl": dsl_one}


# ------------------------------------------------------------------------------ the script


def _peak_rss_mb():
    """VmHWM of this process (ru_maxrss would include the parent's: it survives exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(path, repeat, threads, names):
    if threads:
        torch.set_num_threads(threads)
    d = np.load(path)
    t = {k: torch.from_numpy(d[k]) for k in d.files}
    strides = t["strides"].float()
    anchors = {"points": (t["grid_xy"].float() + 0.5) * strides[:, None], "strides": strides,
               "levels": torch.unique_consecutive(strides, return_counts=True)[1].tolist()}
    pred, cls, gt_boxes = t["pred"].float(), t["cls"].float(), t["gt_boxes"].float()
    gt_classes, gt_mask = t["gt_classes"], t["gt_mask"].bool()
    batch, num_anchors = pred.shape[:2]
    results, owners = {}, []
    for name in names:
        one = ASSIGNERS[name]

        def run():
            out = []
            with torch.no_grad():
                for i in range(batch):
                    keep = gt_mask[i]
                    out.append(one(pred[i], cls[i], _xyxy(gt_boxes[i][keep]),
                                   gt_classes[i][keep], anchors))
            return out

        out = run()                                                     # warm-up
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        times.sort()
        results[name] = {"seconds": times[len(times) // 2] if times else float("nan")}
        owner = np.full((batch, num_anchors), -1, np.int32)
        for i, (fg, matched) in enumerate(out):
            rows = np.flatnonzero(gt_mask[i].numpy())
            fg = fg.numpy()
            owner[i, fg] = rows[matched.numpy()[fg]]
        owners.append(owner)
    np.save(path + ".fg.npy", np.stack(owners))
    print(json.dumps({"results": results, "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "maxrss_mb": _peak_rss_mb()}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(","))
