"""COCO-format detection data (COCO itself and the usual custom-dataset format).

``CocoSource(ann_file, image_dir)`` reads one ``instances_*.json``-style file and serves records
(see ``sources/base.py``).  Cleaning follows the official COCODataset (docs/official-behaviour.md §5.1):
crowd annotations dropped; ``x1 = max(0, x)``, ``y1 = max(0, y)``, ``x2 = min(W, x1 + max(0, w))``,
``y2 = min(H, y1 + max(0, h))`` — note x2 is measured from the *clipped* x1, so a box sticking out
on the left is shifted, not cut (official quirk, kept for parity); class index = position of the
category id among the sorted category ids; images without annotations are kept.
One deliberate difference: a box with zero width or height after clipping is dropped (the official
test ``x2 >= x1`` keeps it and it only goes away at the tiny-box filter).

``to_coco_dict(source)`` / ``write_coco_json(source, path, image_dir=None)`` go the other way:
ground truth of any source in COCO format for pycocotools, optionally with the images written
out so that ``CocoSource`` can read the dataset back.
"""
from __future__ import annotations

import json
import os
from typing import Any

import cv2
import numpy as np

from yolox_jax.data.sources.base import (
    TrackedSource,
    SourceStats,
    blank_image,
    load_file_record,
    make_record,
)
from yolox_jax.errors import UserError

_REQUIRED_TOP = ("images", "annotations", "categories")
_REQUIRED_IMAGE = ("id", "file_name", "width", "height")


def _load_json(ann_file: str) -> dict:
    if not os.path.isfile(ann_file):
        raise FileNotFoundError(f"COCO annotation file not found: {ann_file}")
    try:
        with open(ann_file) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"COCO annotation file {ann_file} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise UserError(f"COCO annotation file {ann_file}: top level must be an object")
    for key in _REQUIRED_TOP:
        if key not in data or not isinstance(data[key], list):
            raise UserError(f"COCO annotation file {ann_file}: missing required list {key!r}")
    return data


def _clean_box(bbox, width: float, height: float):
    """Official §5.1 cleaning of one COCO ``[x, y, w, h]``; returns (x1, y1, x2, y2), clipped?"""
    x, y, w, h = (float(v) for v in bbox)
    x1 = max(0.0, x)
    y1 = max(0.0, y)
    x2 = min(width, x1 + max(0.0, w))
    y2 = min(height, y1 + max(0.0, h))
    clipped = (x1, y1, x2, y2) != (x, y, x + w, y + h)
    return (x1, y1, x2, y2), clipped


class CocoSource(TrackedSource):
    """Random-access COCO-format source.

    Args:
      ann_file: COCO-format JSON (``images``, ``annotations``, ``categories`` required).
      image_dir: folder that ``images[i].file_name`` is relative to.
      check_files: stat every image file at construction so missing files are reported once,
        up front (cheap: one ``stat`` per image).
    """

    def __init__(self, ann_file: str, image_dir: str, *, check_files: bool = True):
        self.ann_file = str(ann_file)
        self.image_dir = str(image_dir)
        data = _load_json(self.ann_file)
        if not os.path.isdir(self.image_dir):
            raise FileNotFoundError(f"COCO image directory not found: {self.image_dir}")
        self.stats_tracker = SourceStats(f"CocoSource({os.path.basename(self.ann_file)})")
        report = self.stats_tracker.report

        cats = data["categories"]
        if not cats:
            raise UserError(f"{self.ann_file}: 'categories' is empty")
        try:
            cat_ids = sorted(int(c["id"]) for c in cats)
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{self.ann_file}: every category needs an integer 'id' ({e})") from e
        names = {int(c["id"]): str(c.get("name", c["id"])) for c in cats}
        self.category_ids = cat_ids
        self.class_names = [names[i] for i in cat_ids]
        cat_to_class = {cid: k for k, cid in enumerate(cat_ids)}

        images = data["images"]
        if not images:
            raise UserError(f"{self.ann_file}: 'images' is empty: no images to load")
        self.image_ids: list[int] = []
        self.file_names: list[str] = []
        hw = []
        index_of: dict[int, int] = {}
        for k, im in enumerate(images):
            missing = [key for key in _REQUIRED_IMAGE if key not in im]
            if missing:
                raise UserError(f"{self.ann_file}: images[{k}] lacks required key(s) {missing}")
            iid = int(im["id"])
            if iid in index_of:
                raise UserError(f"{self.ann_file}: duplicate image id {iid} (images[{k}])")
            index_of[iid] = k
            self.image_ids.append(iid)
            self.file_names.append(str(im["file_name"]))
            hw.append((int(im["height"]), int(im["width"])))
        self.orig_hw = np.asarray(hw, np.int32).reshape(-1, 2)

        boxes: list[list] = [[] for _ in images]
        classes: list[list] = [[] for _ in images]
        for k, ann in enumerate(data["annotations"]):
            try:
                iid = int(ann["image_id"])
                cid = int(ann["category_id"])
                bbox = [float(v) for v in ann["bbox"]]
                if len(bbox) != 4 or not np.all(np.isfinite(bbox)):
                    raise ValueError("bbox must be 4 finite numbers")
                area = float(ann.get("area", 1.0))
            except (KeyError, TypeError, ValueError) as e:
                report("malformed_dropped", 1, f"{self.ann_file}: annotations[{k}]: {e!r}")
                continue
            if ann.get("iscrowd", 0):
                report("crowd_dropped", 1, f"annotations[{k}] id={ann.get('id')}")
                continue
            if iid not in index_of:
                report("unknown_image_dropped", 1, f"annotations[{k}] image_id={iid}")
                continue
            if cid not in cat_to_class:
                report("unknown_category_dropped", 1, f"annotations[{k}] category_id={cid}")
                continue
            i = index_of[iid]
            h, w = hw[i]
            (x1, y1, x2, y2), clipped = _clean_box(bbox, w, h)
            if x2 <= x1 or y2 <= y1 or area <= 0:
                report("zero_area_dropped", 1, f"annotations[{k}] bbox={bbox} in {w}x{h}")
                continue
            if clipped:
                report("clipped", 1, f"annotations[{k}] bbox={bbox} in {w}x{h}")
            boxes[i].append((x1, y1, x2, y2))
            classes[i].append(cat_to_class[cid])
        self._boxes = [np.asarray(b, np.float32).reshape(-1, 4) for b in boxes]
        self._classes = [np.asarray(c, np.int32).reshape(-1) for c in classes]
        self.box_counts = np.asarray([len(c) for c in classes], np.int64)
        n_neg = int((self.box_counts == 0).sum())
        if n_neg:
            report("images_without_boxes", n_neg,
                   self.file_names[int(np.argmin(self.box_counts))], level=20)

        self._missing = set()
        if check_files:
            for i, fn in enumerate(self.file_names):
                if not os.path.isfile(os.path.join(self.image_dir, fn)):
                    self._missing.add(i)
            if self._missing:
                first = self.file_names[min(self._missing)]
                report("missing_image", len(self._missing), os.path.join(self.image_dir, first))

    # The grain RandomAccessDataSource protocol.
    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        ann = self.get_annotation(index)
        if index in self._missing:  # already reported at construction
            return make_record(blank_image(ann["orig_hw"]), np.zeros((0, 4)), np.zeros((0,)),
                               ann["image_id"], ann["orig_hw"], image_ok=False)
        return load_file_record(self.stats_tracker, self.image_path(index), ann)

    def image_path(self, index: int) -> str:
        return os.path.join(self.image_dir, self.file_names[index])

    def get_annotation(self, index: int) -> dict[str, Any]:
        """The record without its image: boxes_xyxy, classes, image_id, orig_hw (no file access)."""
        return {"boxes_xyxy": self._boxes[index], "classes": self._classes[index],
                "image_id": self.image_ids[index], "orig_hw": tuple(int(v) for v in self.orig_hw[index])}


    def ground_truth(self) -> dict[str, Any]:
        """The annotation file as COCOeval should see it: the *original* annotations, crowd regions
        included (COCOeval ignores detections on them, as the official evaluator does), unclipped.
        Only repairs what would crash pycocotools: annotations without a 4-number bbox or an
        integer image/category id are dropped, and missing ``id``/``area``/``iscrowd`` are filled.
        """
        data = _load_json(self.ann_file)
        anns, used = [], {a.get("id") for a in data["annotations"] if isinstance(a, dict)}
        next_id = max([i for i in used if isinstance(i, int)] + [0]) + 1
        for a in data["annotations"]:
            try:
                bbox = [float(v) for v in a["bbox"]]
                int(a["image_id"]), int(a["category_id"])
                if len(bbox) != 4:
                    continue
            except (KeyError, TypeError, ValueError):
                continue
            a = dict(a, bbox=bbox)
            if not isinstance(a.get("id"), int) or a["id"] <= 0:
                a["id"], next_id = next_id, next_id + 1
            a.setdefault("area", bbox[2] * bbox[3])
            a.setdefault("iscrowd", 0)
            anns.append(a)
        data["annotations"] = anns
        return data

    def __repr__(self) -> str:
        return (f"CocoSource({self.ann_file!r}, {self.image_dir!r}: {len(self)} images, "
                f"{int(self.box_counts.sum())} boxes, {self.num_classes} classes)")


def to_coco_dict(source, *, file_names: list[str] | None = None) -> dict[str, Any]:
    """COCO-format ground truth of ``source`` (for pycocotools' ``COCO`` / ``COCOeval``).

    Category ids come from ``source.category_ids`` (1..C when the source has none); annotation ids
    start at 1 because COCOeval treats id 0 as "unmatched".  Boxes marked ``difficult`` (VOC) are
    written with ``iscrowd=1`` so that COCOeval ignores detections matched to them, as VOC does.
    Uses ``source.get_annotation`` when available, so no image is decoded.  A ``CocoSource``
    returns its original annotation file (``CocoSource.ground_truth()``: crowd regions kept, as the
    official evaluator uses them) unless ``file_names`` is given.
    """
    if file_names is None and hasattr(source, "ground_truth"):
        return source.ground_truth()
    cat_ids = list(getattr(source, "category_ids", range(1, source.num_classes + 1)))
    categories = [{"id": int(cid), "name": name, "supercategory": "none"}
                  for cid, name in zip(cat_ids, source.class_names)]
    images, annotations = [], []
    getter = getattr(source, "get_annotation", None)
    for i in range(len(source)):
        rec = getter(i) if getter is not None else source[i]
        h, w = rec["orig_hw"]
        if file_names is not None:
            fn = file_names[i]
        elif hasattr(source, "file_names"):
            fn = source.file_names[i]
        else:
            fn = f"{int(rec['image_id']):012d}.png"
        images.append({"id": int(rec["image_id"]), "file_name": fn, "width": int(w), "height": int(h)})
        difficult = rec.get("difficult", np.zeros(len(rec["classes"]), bool))
        for box, cls, diff in zip(rec["boxes_xyxy"], rec["classes"], difficult):
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append({
                "id": len(annotations) + 1, "image_id": int(rec["image_id"]),
                "category_id": int(cat_ids[int(cls)]), "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": (x2 - x1) * (y2 - y1), "iscrowd": int(bool(diff)),
            })
    return {"info": {"description": f"ground truth exported by yolox_jax from {type(source).__name__}"},
            "images": images, "annotations": annotations, "categories": categories}


def write_coco_json(source, path: str, image_dir: str | None = None, *, image_format: str = "png",
                    jpeg_quality: int = 95) -> dict[str, Any]:
    """Writes ``to_coco_dict(source)`` to ``path``; returns the dict.

    With ``image_dir``, also writes every image there as ``<image_id:012d>.<image_format>``
    (png: lossless, so ``CocoSource(path, image_dir)`` reproduces the source exactly; jpg: smaller,
    realistic decode cost for benchmarks) and the JSON's file names point at them.
    """
    file_names = None
    if image_dir is not None:
        os.makedirs(image_dir, exist_ok=True)
        ext = image_format.lower().lstrip(".")
        params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if ext in ("jpg", "jpeg") else []
        file_names = []
        for i in range(len(source)):
            rec = source[i]
            fn = f"{int(rec['image_id']):012d}.{ext}"
            if not cv2.imwrite(os.path.join(image_dir, fn),
                               cv2.cvtColor(rec["image"], cv2.COLOR_RGB2BGR), params):
                raise OSError(f"could not write {os.path.join(image_dir, fn)}")
            file_names.append(fn)
    d = to_coco_dict(source, file_names=file_names)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(d, f)
    return d
