"""What every detection source shares: the record layout, image decoding, and bad-input reporting.

A *source* is a grain ``RandomAccessDataSource`` (``__len__``, ``__getitem__``) whose records are

    {"image": uint8 [h, w, 3] RGB, "boxes_xyxy": float32 [n, 4] original pixels,
     "classes": int32 [n] in 0..C-1, "image_id": int, "orig_hw": (h, w), "image_ok": bool}

plus ``.class_names``, ``.num_classes``, ``.category_ids`` (the id written to COCO-format
ground truth for each class index), ``.stats`` (counters of cleaned-up input) and
``get_annotation(index)`` (the record without its image, cheap: no decoding).

Bad-input rule shared by all file-backed sources: an image file that is missing or cannot be
decoded is served as a blank image filled with 114 (the letterbox pad value) at the annotated
size, with **no boxes** and ``image_ok=False``.  Its ``image_id`` is kept so that evaluation still
sees every image exactly once; training just gets one more negative image.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from typing import Any

import cv2
import numpy as np

log = logging.getLogger("yolox_jax.data")

PAD_VALUE = 114
_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)

# Counter keys (stable: tests and training logs use them) and what they mean for the user.
DESCRIPTIONS = {
    "missing_image": "image files missing; served as blank 114 images without labels",
    "unreadable_image": "image files that cannot be decoded; served as blank 114 images without labels",
    "size_mismatch": "images whose decoded size differs from the annotated size (boxes kept as annotated)",
    "crowd_dropped": "crowd annotations dropped (iscrowd=1, as official)",
    "clipped": "boxes partly outside the image, clipped",
    "zero_area_dropped": "boxes with zero area (after clipping) dropped",
    "unknown_category_dropped": "annotations with an unknown category dropped",
    "unknown_image_dropped": "annotations pointing to an unknown image_id dropped",
    "malformed_dropped": "annotations with a missing or malformed field dropped",
    "images_without_boxes": "images without any box, kept as negatives",
    "missing_annotation": "images whose annotation file is missing or unparsable, skipped",
    "difficult": "boxes marked difficult",
    "difficult_dropped": "boxes marked difficult dropped (keep_difficult=False)",
}


class SourceStats:
    """Counters of cleaned-up input, each kind reported once through logging.

    ``report(kind, n, detail)`` adds ``n`` to the counter and logs a warning the first time the
    kind is seen in this process, naming ``detail`` (a file or field) so the user can find it.
    Later occurrences only count: a dataset with 10^4 crowd boxes must not flood the log.
    """

    def __init__(self, name: str):
        self.name = name
        self.counts: Counter = Counter()
        self._reported: set[str] = set()

    def report(self, kind: str, n: int = 1, detail: str = "", level: int = logging.WARNING):
        if n <= 0:
            return
        self.counts[kind] += n
        if kind not in self._reported:
            self._reported.add(kind)
            log.log(level, "%s: %d %s [%s] (e.g. %s)", self.name, n,
                    DESCRIPTIONS.get(kind, kind), kind, detail)

    def as_dict(self) -> dict[str, int]:
        return dict(self.counts)


class TrackedSource:
    """What the file-backed sources share: ``class_names`` and a ``stats_tracker`` (SourceStats)."""

    class_names: list
    stats_tracker: SourceStats

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def stats(self) -> dict[str, int]:
        """Counters of cleaned-up input (keys in ``DESCRIPTIONS``), this process."""
        return self.stats_tracker.as_dict()


def blank_image(hw) -> np.ndarray:
    """uint8 [h, w, 3] filled with the pad value: the stand-in for an unreadable image."""
    h, w = int(hw[0]), int(hw[1])
    return np.full((max(h, 1), max(w, 1), 3), PAD_VALUE, np.uint8)


def is_complete(data: bytes) -> bool:
    """Whether an encoded JPEG or PNG ends as one must: a JPEG has its end-of-image marker FFD9
    in its last 4 KiB (the marker cannot occur inside compressed data; the slack allows the
    trailers some cameras append), a PNG its IEND chunk at the end. A truncated file fails:
    decoders would fill the missing part with grey and keep going. Other formats pass."""
    if data[:3] == b"\xff\xd8\xff":                      # JPEG
        return b"\xff\xd9" in data[-4096:]
    if data[:8] == b"\x89PNG\r\n\x1a\n":                 # PNG
        return b"IEND" in data[-16:]
    return True


def read_image_rgb(path: str) -> np.ndarray | None:
    """Decodes an image file to uint8 [h, w, 3] RGB, or None if missing, truncated or corrupt.

    A JPEG or PNG that does not end as it must (:func:`is_complete`) is corrupt: OpenCV would
    decode the part that is there and fill the rest with grey. Greyscale and RGBA files come back
    as 3 channels.
    """
    if not os.path.isfile(path):
        return None
    try:
        data = np.fromfile(path, np.uint8)
    except OSError:
        return None
    if data.size == 0 or not is_complete(data.tobytes()):
        return None
    if _IMREAD_RGB is not None:  # OpenCV >= 4.10 decodes straight to RGB: saves a conversion
        img = cv2.imdecode(data, _IMREAD_RGB)
    else:
        img = cv2.imdecode(data, cv2.IMREAD_COLOR)
        img = None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if img is None or img.ndim != 3 or img.shape[0] == 0 or img.shape[1] == 0:
        return None
    return img


def make_record(image, boxes_xyxy, classes, image_id, orig_hw, image_ok=True, **extra) -> dict[str, Any]:
    rec = {
        "image": image,
        "boxes_xyxy": np.asarray(boxes_xyxy, np.float32).reshape(-1, 4),
        "classes": np.asarray(classes, np.int32).reshape(-1),
        "image_id": int(image_id),
        "orig_hw": (int(orig_hw[0]), int(orig_hw[1])),
        "image_ok": bool(image_ok),
    }
    rec.update(extra)
    return rec


def load_file_record(stats: SourceStats, path: str, ann: dict[str, Any]) -> dict[str, Any]:
    """Reads ``path`` and attaches the (already cleaned) annotation ``ann``.

    ``ann`` holds boxes_xyxy, classes, image_id, orig_hw (from the annotation file).  Applies the
    blank-image rule when the file cannot be read.
    """
    img = read_image_rgb(path)
    if img is None:
        stats.report("missing_image" if not os.path.exists(path) else "unreadable_image", 1, path)
        return make_record(blank_image(ann["orig_hw"]), np.zeros((0, 4)), np.zeros((0,)),
                           ann["image_id"], ann["orig_hw"], image_ok=False,
                           **{k: v[:0] for k, v in ann.items() if k == "difficult"})
    if tuple(img.shape[:2]) != tuple(ann["orig_hw"]):
        # The boxes refer to the annotated size; keep them (as the official loader does) but tell
        # the user, because a rotated (EXIF) or re-encoded file would misplace every box.
        stats.report("size_mismatch", 1,
                     f"{path}: file {img.shape[:2]} vs annotated {tuple(ann['orig_hw'])}")
    return make_record(img, **ann)
