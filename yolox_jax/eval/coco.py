"""COCO box evaluation with pycocotools, as the official COCOEvaluator does it.

docs/official-behaviour.md §6: boxes are mapped back to the original image by dividing by the letterbox
scale (no offset: the padding is bottom/right; no clipping), converted to xywh, labelled with the
dataset's category id, scored with obj * class_conf, and evaluated with ``COCOeval(..., "bbox")``.
AP@[.5:.95] and AP@.5 are ``stats[0]`` and ``stats[1]``; per-class AP is the mean of
``precision[:, :, k, area=all, maxDets=100]`` over entries > -1. No detections gives zeros
(the official returns (0, 0) instead of calling pycocotools, which cannot load an empty result).
"""
from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Mapping, Sequence

import numpy as np

STAT_NAMES = (
    "AP50_95", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
    "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large",
)


def _field(dets, name):
    if isinstance(dets, Mapping):
        return np.asarray(dets[name])
    return np.asarray(getattr(dets, name))


def detections_to_coco(dets, image_ids: Sequence[int], scales: Sequence[float],
                       class_ids: Sequence[int]) -> list[dict]:
    """Detections of a batch -> COCO result dicts (official back-mapping).

    dets: ``Detections`` (or a mapping with the same keys) as NumPy arrays, fields
      boxes_xyxy [B, K, 4] in network-input pixels, scores [B, K], classes [B, K] int
      (contiguous 0..C-1), valid [B, K] bool.
    image_ids [B]: COCO image id of each row; scales [B]: letterbox scale
      ``min(input_h / orig_h, input_w / orig_w)``; class_ids [C]: COCO category id of each
      contiguous class.
    Returns ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score", "segmentation": []}]``
    with plain Python numbers (JSON-ready), valid rows only.
    """
    boxes = _field(dets, "boxes_xyxy").astype(np.float64)
    scores = _field(dets, "scores")
    classes = _field(dets, "classes")
    valid = _field(dets, "valid").astype(bool)
    scales = np.asarray(scales, np.float64).reshape(-1)
    if not (len(image_ids) == len(scales) == boxes.shape[0]):
        raise ValueError(f"batch of {boxes.shape[0]} detections but {len(image_ids)} image ids "
                         f"and {len(scales)} scales")
    class_ids = list(class_ids)
    results = []
    for b, image_id in enumerate(image_ids):
        xyxy = boxes[b][valid[b]] / scales[b]
        xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
        for box, score, cls in zip(xywh, scores[b][valid[b]], classes[b][valid[b]]):
            results.append({
                "image_id": int(image_id),
                "category_id": int(class_ids[int(cls)]),
                "bbox": [float(v) for v in box],
                "score": float(score),
                "segmentation": [],
            })
    return results


def _as_coco(coco_gt):
    from pycocotools.coco import COCO

    if isinstance(coco_gt, COCO):
        return coco_gt
    if not isinstance(coco_gt, Mapping):
        raise TypeError("coco_gt must be a pycocotools COCO object or a COCO-format dict")
    gt = COCO()
    gt.dataset = copy.deepcopy(dict(coco_gt))
    gt.dataset.setdefault("info", {})
    gt.dataset.setdefault("licenses", [])
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def coco_evaluate(coco_gt, results: Sequence[Mapping], *, image_ids=None,
                  quiet: bool = True) -> dict:
    """Box AP of ``results`` (as from :func:`detections_to_coco`) against ``coco_gt``.

    coco_gt: a pycocotools ``COCO`` or a COCO-format dict (images, annotations, categories).
    image_ids: evaluate only these images (default: every image of coco_gt, as the official
    evaluator does). quiet: swallow pycocotools' prints; the summary text is returned anyway.

    Returns a dict: ``AP50_95``, ``AP50`` (floats), ``stats`` (the 12 COCOeval numbers, in
    ``STAT_NAMES`` order, also as keys ``AP75`` ... ``AR_large``), ``per_class_AP`` and
    ``per_class_AP50`` ({category_id: AP}; NaN for a category without ground truth),
    ``category_names`` ({category_id: name}) and ``summary`` (pycocotools' printed table).
    With no results every number is 0.0 and ``summary`` says so. Otherwise the numbers are
    pycocotools' own, including its -1 for an area range without ground truth.
    """
    from pycocotools.cocoeval import COCOeval

    gt = _as_coco(coco_gt)
    cat_ids = sorted(gt.getCatIds())
    names = {c: gt.cats[c].get("name", str(c)) for c in cat_ids}
    results = list(results)
    if not results:
        out = {name: 0.0 for name in STAT_NAMES}
        out.update(stats=[0.0] * len(STAT_NAMES), per_class_AP={c: 0.0 for c in cat_ids},
                   per_class_AP50={c: 0.0 for c in cat_ids}, category_names=names,
                   summary="no detections")
        return out

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf) if quiet else contextlib.nullcontext():
        dt = gt.loadRes(copy.deepcopy(results))
        ev = COCOeval(gt, dt, "bbox")
        if image_ids is not None:
            ev.params.imgIds = [int(i) for i in image_ids]
        ev.evaluate()
        ev.accumulate()
        summary_buf = io.StringIO()
        with contextlib.redirect_stdout(summary_buf):
            ev.summarize()
    summary = summary_buf.getvalue()
    if not quiet:
        print(summary, end="")

    stats = [float(x) for x in ev.stats]
    # precision: [T iou thresholds, R recall points, K categories, A areas, M maxDets];
    # -1 marks "no ground truth" entries.
    precision = ev.eval["precision"]
    k_index = {c: k for k, c in enumerate(ev.params.catIds)}

    def class_ap(c, t=slice(None)):
        p = precision[t, :, k_index[c], 0, -1]
        p = p[p > -1]
        return float(np.mean(p)) if p.size else float("nan")

    out = dict(zip(STAT_NAMES, stats))
    out.update(
        stats=stats,
        per_class_AP={c: class_ap(c) for c in cat_ids},
        per_class_AP50={c: class_ap(c, 0) for c in cat_ids},
        category_names=names,
        summary=summary,
    )
    return out
