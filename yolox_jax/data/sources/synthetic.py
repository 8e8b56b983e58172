"""SyntheticShapes: a procedurally drawn detection dataset that needs no download.

Each image is a low-saturation background (flat, gradient or blotchy) with 1–6 saturated filled
shapes.  The class is the shape, and each class also has its own hue band, so a small detector
learns it in minutes on a CPU; sizes, aspect ratios, positions, brightness and partial overlaps
vary so that it is not trivial.  Everything is a pure function of ``(seed, index)``: the same
index always gives the same picture, whatever process or order asks for it.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from yolox_jax.data.sources.base import make_record

# Shape name and OpenCV hue (0..180) of each class, in class-index order.
SHAPES = ("rectangle", "ellipse", "triangle", "diamond", "cross", "star", "hexagon", "trapezoid")
HUES = (0, 60, 120, 25, 150, 90, 165, 40)


def _shape_polygon(kind: str, x1: int, y1: int, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """int32 [k, 2] polygon (x, y) whose extent is the box [x1, x1+w-1] x [y1, y1+h-1]."""
    x2, y2 = x1 + w - 1, y1 + h - 1
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    if kind == "rectangle":
        pts = [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
    elif kind == "ellipse":
        pts = cv2.ellipse2Poly((int(round(cx)), int(round(cy))), (max(1, (w - 1) // 2), max(1, (h - 1) // 2)),
                               0, 0, 360, 5)
    elif kind == "triangle":
        apex_x = x1 + rng.uniform(0.2, 0.8) * (w - 1)
        pts = [(apex_x, y1), (x2, y2), (x1, y2)]
        if rng.random() < 0.5:  # apex down
            pts = [(apex_x, y2), (x2, y1), (x1, y1)]
    elif kind == "diamond":
        pts = [(cx, y1), (x2, cy), (cx, y2), (x1, cy)]
    elif kind == "cross":
        tx, ty = (w - 1) / 6, (h - 1) / 6
        pts = [(cx - tx, y1), (cx + tx, y1), (cx + tx, cy - ty), (x2, cy - ty), (x2, cy + ty), (cx + tx, cy + ty),
               (cx + tx, y2), (cx - tx, y2), (cx - tx, cy + ty), (x1, cy + ty), (x1, cy - ty), (cx - tx, cy - ty)]
    elif kind == "star":
        ang = -np.pi / 2 + np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        u, v = rad * np.cos(ang), rad * np.sin(ang)
        # Stretch the unit star so that its extent is exactly the box.
        u = (u - u.min()) / (u.max() - u.min())
        v = (v - v.min()) / (v.max() - v.min())
        pts = np.stack([x1 + u * (w - 1), y1 + v * (h - 1)], 1)
    elif kind == "hexagon":
        pts = [(x1 + (w - 1) / 4, y1), (x2 - (w - 1) / 4, y1), (x2, cy), (x2 - (w - 1) / 4, y2),
               (x1 + (w - 1) / 4, y2), (x1, cy)]
    elif kind == "trapezoid":
        pts = [(x1 + (w - 1) / 4, y1), (x2 - (w - 1) / 4, y1), (x2, y2), (x1, y2)]
    else:
        raise ValueError(kind)
    return np.round(np.asarray(pts, np.float64)).astype(np.int32).reshape(-1, 2)


def _iou_and_cover(box, boxes):
    """IoU of ``box`` [4] with ``boxes`` [k, 4] and the fraction of each of ``boxes`` it covers."""
    if len(boxes) == 0:
        return np.zeros(0), np.zeros(0)
    b = np.asarray(boxes, np.float64)
    iw = np.maximum(np.minimum(box[2], b[:, 2]) - np.maximum(box[0], b[:, 0]), 0)
    ih = np.maximum(np.minimum(box[3], b[:, 3]) - np.maximum(box[1], b[:, 1]), 0)
    inter = iw * ih
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    area = (box[2] - box[0]) * (box[3] - box[1])
    return inter / (area + area_b - inter), inter / area_b


class SyntheticShapes:
    """Random-access source of procedurally drawn shapes (see module docstring).

    Args:
      num_images: dataset length.
      image_size: (h, w) of every image.
      num_classes: 1..8 (rectangle, ellipse, triangle, diamond, cross, star, hexagon, trapezoid).
      seed: picks the dataset; ``(seed, index)`` determines each image.
      objects: (min, max) number of shapes per image.
      size_range: (min, max) box side as a fraction of min(h, w); small shapes are kept >= 12 px
        so that they survive down-scaling in mosaic.
      max_overlap: largest IoU between two shapes, and largest fraction of a shape hidden by one
        drawn later — keeps every box mostly visible.
    """

    def __init__(self, num_images: int, image_size=(192, 256), num_classes: int = 3, seed: int = 0, *,
                 objects=(1, 6), size_range=(0.15, 0.5), max_overlap: float = 0.3):
        if not 1 <= num_classes <= len(SHAPES):
            raise ValueError(f"num_classes must be in 1..{len(SHAPES)}, got {num_classes}")
        if num_images <= 0:
            raise ValueError(f"num_images must be positive, got {num_images}")
        if objects[0] < 0 or objects[1] < objects[0]:
            raise ValueError(f"objects must be (min, max) with 0 <= min <= max, got {objects}")
        self.num_images = int(num_images)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.seed = int(seed)
        self.objects = (int(objects[0]), int(objects[1]))
        self.size_range = (float(size_range[0]), float(size_range[1]))
        self.max_overlap = float(max_overlap)
        self.class_names = list(SHAPES[:num_classes])
        self.category_ids = list(range(1, num_classes + 1))
        self.stats: dict[str, int] = {}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return self.num_images

    def _layout(self, index: int):
        """Boxes [n, 4] xyxy (pixel-exact extent of the drawn polygon), classes [n], polygons."""
        h, w = self.image_size
        rng = np.random.default_rng([self.seed, index, 0])
        n_target = int(rng.integers(self.objects[0], self.objects[1] + 1))
        side = min(h, w)
        boxes, classes, polys = [], [], []
        for _ in range(n_target):
            for _attempt in range(20):
                s = rng.uniform(*self.size_range) * side
                aspect = np.exp(rng.uniform(np.log(0.6), np.log(1.7)))
                bw = min(max(int(round(s * np.sqrt(aspect))), 12), w)
                bh = min(max(int(round(s / np.sqrt(aspect))), 12), h)
                x1 = int(rng.integers(0, w - bw + 1))
                y1 = int(rng.integers(0, h - bh + 1))
                cls = int(rng.integers(0, self.num_classes))
                poly = _shape_polygon(SHAPES[cls], x1, y1, bw, bh, rng)
                box = np.array([poly[:, 0].min(), poly[:, 1].min(), poly[:, 0].max() + 1, poly[:, 1].max() + 1],
                               np.float32)
                iou, cover = _iou_and_cover(box, boxes)
                if np.all(iou <= self.max_overlap) and np.all(cover <= self.max_overlap):
                    boxes.append(box)
                    classes.append(cls)
                    polys.append(poly)
                    break
        return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes, np.int32), polys

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        h, w = self.image_size
        hue = rng.uniform(0, 180)
        sat = rng.uniform(0, 60)  # low saturation: the shapes' colour stands out
        kind = rng.integers(0, 3)
        if kind == 0:  # flat
            val = np.full((h, w), rng.uniform(30, 230), np.float32)
        elif kind == 1:  # linear gradient in a random direction
            a = rng.uniform(0, 2 * np.pi)
            t = (np.cos(a) * np.arange(w, dtype=np.float32) / w)[None, :] + \
                (np.sin(a) * np.arange(h, dtype=np.float32) / h)[:, None]
            t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
            v0, v1 = rng.uniform(30, 230, 2)
            val = v0 + (v1 - v0) * t
        else:  # blotches: upsampled low-resolution noise
            small = rng.uniform(30, 230, (int(rng.integers(2, 6)), int(rng.integers(2, 6)))).astype(np.float32)
            val = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        hsv = cv2.merge([np.full((h, w), int(hue), np.uint8), np.full((h, w), int(sat), np.uint8),
                         np.clip(val, 0, 255).astype(np.uint8)])
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)

    def get_annotation(self, index: int) -> dict[str, Any]:
        boxes, classes, _ = self._layout(int(index))
        return {"boxes_xyxy": boxes, "classes": classes, "image_id": int(index), "orig_hw": self.image_size}

    @property
    def box_counts(self) -> np.ndarray:
        return np.asarray([len(self._layout(i)[1]) for i in range(len(self))], np.int64)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        boxes, classes, polys = self._layout(index)
        rng = np.random.default_rng([self.seed, index, 1])
        img = self._background(rng)
        for cls, poly in zip(classes, polys):
            hsv = np.array([[[(HUES[cls] + rng.uniform(-7, 7)) % 180, rng.uniform(160, 255),
                              rng.uniform(150, 255)]]], np.float64)
            rgb = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0]
            cv2.fillPoly(img, [poly], tuple(int(c) for c in rgb), lineType=cv2.LINE_8)
        # Mild luminance noise (one plane for all channels: cheap) so that flat regions are not
        # perfectly flat.
        noise = rng.integers(-5, 6, (*img.shape[:2], 1), dtype=np.int16)
        img = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
        return make_record(img, boxes, classes, index, self.image_size)

    def __repr__(self) -> str:
        return (f"SyntheticShapes({self.num_images}, image_size={self.image_size}, "
                f"num_classes={self.num_classes}, seed={self.seed})")
