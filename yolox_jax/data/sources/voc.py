"""Pascal VOC (XML annotations) as a detection source.

Layout: ``<root>/VOC<year>/{Annotations/<id>.xml, JPEGImages/<id>.jpg, ImageSets/Main/<split>.txt}``
(``root`` is the ``VOCdevkit`` folder).  Class index = position in ``VOC_CLASSES`` (the usual
alphabetical order, as in the official voc_classes.py).

Coordinates: VOC pixels are 1-based and inclusive, so a box covering pixels xmin..xmax is
``[xmin - 1, xmax)`` in our 0-based continuous convention: x1 = xmin - 1, x2 = xmax (same for y).
(The official loader subtracts 1 from all four, making boxes one pixel smaller.)

``difficult``: kept by default (``keep_difficult=True``, as the official AnnotationTransform does
for training); records carry a ``difficult`` bool [n] so that evaluation can ignore them —
``to_coco_dict`` writes them as ``iscrowd=1``, which COCOeval ignores like VOC ignores difficult.
With ``keep_difficult=False`` they are dropped and counted.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import Any, Sequence

import numpy as np

from yolox_jax.data.sources.base import TrackedSource, SourceStats, load_file_record
from yolox_jax.errors import UserError

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)


class VocSource(TrackedSource):
    """Random-access Pascal VOC source.

    Args:
      root: the VOCdevkit folder (holding VOC2007/, VOC2012/ ...).
      split: image-set name in ImageSets/Main (train, val, trainval, test).
      years: which VOC<year> folders to concatenate, in order.
      keep_difficult: keep boxes flagged difficult (default, as official training).
    """

    def __init__(self, root: str, split: str = "trainval", years: Sequence[str] = ("2007", "2012"), *,
                 keep_difficult: bool = True, class_names: Sequence[str] = VOC_CLASSES):
        self.root = str(root)
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"VOC root not found: {self.root}")
        if isinstance(years, (str, int)):
            years = (str(years),)
        self.class_names = list(class_names)
        self.category_ids = list(range(1, len(self.class_names) + 1))
        cls_index = {n: i for i, n in enumerate(self.class_names)}
        self.stats_tracker = SourceStats(f"VocSource({os.path.basename(self.root)}, {split})")
        report = self.stats_tracker.report

        self.file_names: list[str] = []  # absolute image paths
        self.names: list[str] = []  # "VOC2007/000005"
        self._anns: list[dict[str, Any]] = []
        for year in years:
            base = os.path.join(self.root, f"VOC{year}")
            list_file = os.path.join(base, "ImageSets", "Main", f"{split}.txt")
            if not os.path.isfile(list_file):
                raise FileNotFoundError(f"VOC image-set file not found: {list_file}")
            with open(list_file) as f:
                ids = [line.split()[0] for line in f if line.strip()]
            for img_id in ids:
                xml_path = os.path.join(base, "Annotations", f"{img_id}.xml")
                try:
                    tree = ET.parse(xml_path).getroot()
                    size = tree.find("size")
                    h = int(float(size.find("height").text))
                    w = int(float(size.find("width").text))
                except (OSError, ET.ParseError, AttributeError, TypeError, ValueError) as e:
                    report("missing_annotation", 1, f"{xml_path}: {e!r}")
                    continue
                boxes, classes, difficult = [], [], []
                for obj in tree.iter("object"):
                    name = (obj.findtext("name") or "").strip()
                    if name not in cls_index:
                        report("unknown_category_dropped", 1, f"{xml_path}: name={name!r}")
                        continue
                    diff = int(float(obj.findtext("difficult") or 0)) == 1
                    if diff and not keep_difficult:
                        report("difficult_dropped", 1, xml_path, level=20)
                        continue
                    try:
                        bb = obj.find("bndbox")
                        xmin, ymin, xmax, ymax = (float(bb.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
                    except (AttributeError, TypeError, ValueError) as e:
                        report("malformed_dropped", 1, f"{xml_path}: bndbox {e!r}")
                        continue
                    x1, y1, x2, y2 = xmin - 1, ymin - 1, xmax, ymax
                    c = (max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2))
                    if c[2] <= c[0] or c[3] <= c[1]:
                        report("zero_area_dropped", 1, f"{xml_path}: {(xmin, ymin, xmax, ymax)}")
                        continue
                    if c != (x1, y1, x2, y2):
                        report("clipped", 1, f"{xml_path}: {(xmin, ymin, xmax, ymax)} in {w}x{h}")
                    boxes.append(c)
                    classes.append(cls_index[name])
                    difficult.append(diff)
                if not boxes:
                    report("images_without_boxes", 1, xml_path, level=20)
                self.file_names.append(os.path.join(base, "JPEGImages", f"{img_id}.jpg"))
                self.names.append(f"VOC{year}/{img_id}")
                self._anns.append({
                    "boxes_xyxy": np.asarray(boxes, np.float32).reshape(-1, 4),
                    "classes": np.asarray(classes, np.int32),
                    "image_id": len(self._anns),
                    "orig_hw": (h, w),
                    "difficult": np.asarray(difficult, bool),
                })
        if not self._anns:
            raise UserError(f"VOC: no images for split {split!r}, years {tuple(years)} under {self.root}")
        self.box_counts = np.asarray([len(a["classes"]) for a in self._anns], np.int64)
        n_diff = int(sum(a["difficult"].sum() for a in self._anns))
        if n_diff:
            report("difficult", n_diff, "kept; marked in record['difficult']", level=20)

    def __len__(self) -> int:
        return len(self._anns)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        return load_file_record(self.stats_tracker, self.file_names[index], self._anns[index])

    def get_annotation(self, index: int) -> dict[str, Any]:
        return dict(self._anns[int(index)])

