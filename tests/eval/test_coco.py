"""yolox_jax.eval.coco on a tiny hand-made COCO dataset."""
import math

import numpy as np
import pytest

from yolox_jax.eval.coco import STAT_NAMES, coco_evaluate, detections_to_coco

CLASS_IDS = [1, 5, 9]  # contiguous class c -> COCO category id


def tiny_gt():
    images = [{"id": 10, "width": 200, "height": 100}, {"id": 20, "width": 120, "height": 160}]
    boxes = {  # image id -> [(category id, x, y, w, h)]
        10: [(1, 10, 10, 50, 40), (5, 100, 20, 60, 70), (1, 120, 5, 30, 30)],
        20: [(9, 20, 30, 60, 80), (5, 5, 100, 40, 50)],
    }
    anns = []
    for image_id, rows in boxes.items():
        for cat, x, y, w, h in rows:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat,
                         "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
    cats = [{"id": c, "name": f"c{c}"} for c in CLASS_IDS]
    return {"images": images, "annotations": anns, "categories": cats}


def detections_from_gt(gt, scales, shift=0.0, k=5):
    """Network-input-pixel Detections (NumPy dict) that reproduce the ground truth."""
    ids = [im["id"] for im in gt["images"]]
    boxes = np.zeros((len(ids), k, 4), np.float32)
    scores = np.zeros((len(ids), k), np.float32)
    classes = np.full((len(ids), k), -1, np.int32)
    valid = np.zeros((len(ids), k), bool)
    for b, image_id in enumerate(ids):
        rows = [a for a in gt["annotations"] if a["image_id"] == image_id]
        for j, a in enumerate(rows):
            x, y, w, h = a["bbox"]
            boxes[b, j] = np.array([x + shift * w, y, x + w + shift * w, y + h]) * scales[b]
            scores[b, j] = 0.9 - 0.1 * j
            classes[b, j] = CLASS_IDS.index(a["category_id"])
            valid[b, j] = True
    return {"boxes_xyxy": boxes, "scores": scores, "classes": classes, "valid": valid}, ids


def test_detections_to_coco_back_maps_boxes():
    dets = {"boxes_xyxy": np.array([[[20, 40, 60, 100], [0, 0, 1, 1]]], np.float32),
            "scores": np.array([[0.5, 0.1]], np.float32),
            "classes": np.array([[2, 0]], np.int32),
            "valid": np.array([[True, False]])}
    res = detections_to_coco(dets, [7], [2.0], CLASS_IDS)
    assert res == [{"image_id": 7, "category_id": 9, "bbox": [10.0, 20.0, 20.0, 30.0],
                    "score": pytest.approx(0.5), "segmentation": []}]


def test_perfect_detections_give_ap_one():
    gt = tiny_gt()
    scales = [1.6, 0.5]
    dets, ids = detections_from_gt(gt, scales)
    out = coco_evaluate(gt, detections_to_coco(dets, ids, scales, CLASS_IDS))
    assert out["AP50_95"] == pytest.approx(1.0) and out["AP50"] == pytest.approx(1.0)
    assert len(out["stats"]) == 12 and out["stats"][0] == out["AP50_95"]
    assert set(out["per_class_AP"]) == set(CLASS_IDS)
    assert all(v == pytest.approx(1.0) for v in out["per_class_AP"].values())
    assert "Average Precision" in out["summary"]


def test_shifted_boxes_lower_ap():
    gt = tiny_gt()
    scales = [1.0, 1.0]
    perfect = coco_evaluate(gt, detections_to_coco(*detections_from_gt(gt, scales), scales,
                                                   CLASS_IDS))
    dets, ids = detections_from_gt(gt, scales, shift=0.2)  # IoU 0.8/1.2 = 0.667 per box
    shifted = coco_evaluate(gt, detections_to_coco(dets, ids, scales, CLASS_IDS))
    assert shifted["AP50"] == pytest.approx(1.0)  # still matches at IoU 0.5
    assert 0.0 < shifted["AP50_95"] < perfect["AP50_95"]
    dets, ids = detections_from_gt(gt, scales, shift=0.6)  # IoU 0.25: no match at all
    assert coco_evaluate(gt, detections_to_coco(dets, ids, scales, CLASS_IDS))["AP50"] == 0.0


def test_no_detections_give_zeros_and_accepts_coco_object():
    from pycocotools.coco import COCO

    gt = tiny_gt()
    coco = COCO()
    coco.dataset = gt
    coco.createIndex()
    out = coco_evaluate(coco, [])
    assert out["AP50_95"] == 0.0 and out["AP50"] == 0.0 and out["stats"] == [0.0] * 12
    assert all(out[name] == 0.0 for name in STAT_NAMES)
    empty = {"boxes_xyxy": np.zeros((2, 3, 4)), "scores": np.zeros((2, 3)),
             "classes": np.full((2, 3), -1), "valid": np.zeros((2, 3), bool)}
    assert detections_to_coco(empty, [10, 20], [1.0, 1.0], CLASS_IDS) == []


def test_per_class_ap_nan_for_class_without_ground_truth():
    gt = tiny_gt()
    gt["categories"].append({"id": 42, "name": "unused"})
    dets, ids = detections_from_gt(gt, [1.0, 1.0])
    out = coco_evaluate(gt, detections_to_coco(dets, ids, [1.0, 1.0], CLASS_IDS))
    assert math.isnan(out["per_class_AP"][42]) and out["per_class_AP"][1] == pytest.approx(1.0)


def test_accepts_detections_dataclass():
    from yolox_jax.ops.postprocess import Detections

    gt = tiny_gt()
    d, ids = detections_from_gt(gt, [1.0, 1.0])
    dets = Detections(obj=d["scores"], class_conf=np.ones_like(d["scores"]), **d)
    out = coco_evaluate(gt, detections_to_coco(dets, ids, [1.0, 1.0], CLASS_IDS))
    assert out["AP50_95"] == pytest.approx(1.0)
