"""TensorFlow Datasets (ArrayRecord) detection data, read without TensorFlow.

``tfds.data_source(name, split=..., data_dir=...)`` gives random access to a prepared dataset
stored as ArrayRecord and decodes features with NumPy/PIL, so nothing here imports TensorFlow.
The dataset must already be prepared in ``data_dir`` (this never downloads).

Expected record layout (that of ``coco/2017`` and ``voc/2007``):
``{"image": uint8 [h, w, 3], "image/id": int (optional), "objects": {"bbox": [n, 4] normalised
(ymin, xmin, ymax, xmax), "label": [n] int, "is_crowd": [n] bool (optional), "is_difficult": [n]
bool (optional)}}``.  tfds' coco labels are already the position among the sorted COCO category ids,
i.e. our class index, and ``category_ids`` maps them back to the official ids for COCOeval.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from yolox_jax.data.sources.base import TrackedSource, SourceStats, make_record
from yolox_jax.errors import UserError

# Official COCO category ids of the 80 classes, in class-index order.
COCO_CATEGORY_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
    31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90,
)


class TfdsSource(TrackedSource):
    """Random-access adapter from a tfds data source to our record layout.

    Args:
      name: tfds dataset name, e.g. ``"coco/2017"`` or ``"voc/2007"``.
      split: tfds split, e.g. ``"train"``, ``"validation"``, ``"train[:1%]"``.
      data_dir: where the prepared dataset lives (tfds' default when None).
      keep_difficult: keep ``is_difficult`` boxes (VOC); they are marked in ``record["difficult"]``.
      class_names: override the names (default: the dataset's ``objects/label`` ClassLabel names).
      data_source: an already-opened object with the tfds layout (``len``, ``[i]``); skips
        ``tfds.data_source`` (used by the tests and for custom ArrayRecord readers).
    """

    def __init__(self, name: str = "coco/2017", split: str = "train", data_dir: str | None = None, *,
                 keep_difficult: bool = True, class_names: Sequence[str] | None = None,
                 data_source=None):
        self.name = name
        self.split = split
        if data_source is None:
            import tensorflow_datasets as tfds  # lazy: only this source needs it

            data_source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
        self._ds = data_source
        if class_names is None:
            info = getattr(data_source, "dataset_info", None)
            try:
                class_names = info.features["objects"]["label"].names
            except (AttributeError, KeyError, TypeError) as e:
                raise UserError(f"TfdsSource({name}): cannot find objects/label class names in the "
                                 f"dataset info; pass class_names=") from e
        self.class_names = list(class_names)
        if name.startswith("coco") and len(self.class_names) == len(COCO_CATEGORY_IDS):
            self.category_ids = list(COCO_CATEGORY_IDS)
        else:
            self.category_ids = list(range(1, len(self.class_names) + 1))
        self.keep_difficult = keep_difficult
        self.stats_tracker = SourceStats(f"TfdsSource({name}, {split})")
        if len(self._ds) == 0:
            raise UserError(f"TfdsSource({name}, split={split!r}): no images")

    def __len__(self) -> int:
        return len(self._ds)


    def _convert(self, index: int, ex: dict[str, Any]) -> dict[str, Any]:
        report = self.stats_tracker.report
        img = np.asarray(ex["image"])
        if img.ndim == 2:
            img = img[:, :, None]
        if img.shape[-1] == 1:
            img = np.repeat(img, 3, axis=-1)
        img = np.ascontiguousarray(img[..., :3], dtype=np.uint8)
        h, w = img.shape[:2]
        objs = ex.get("objects", {})
        bbox = np.asarray(objs.get("bbox", np.zeros((0, 4))), np.float64).reshape(-1, 4)
        label = np.asarray(objs.get("label", np.zeros((0,))), np.int64).reshape(-1)
        n = len(label)
        crowd = np.asarray(objs.get("is_crowd", np.zeros(n, bool)), bool).reshape(-1)
        difficult = np.asarray(objs.get("is_difficult", np.zeros(n, bool)), bool).reshape(-1)
        where = f"{self.name}[{self.split}] index {index}"
        keep = ~crowd
        report("crowd_dropped", int(crowd.sum()), where)
        unknown = (label < 0) | (label >= self.num_classes)
        report("unknown_category_dropped", int((unknown & keep).sum()), where)
        keep &= ~unknown
        if not self.keep_difficult:
            report("difficult_dropped", int((difficult & keep).sum()), where, level=20)
            keep &= ~difficult
        # normalised (ymin, xmin, ymax, xmax) -> pixel xyxy
        xyxy = bbox[:, [1, 0, 3, 2]] * np.array([w, h, w, h], np.float64)
        clipped = np.clip(xyxy, 0, [w, h, w, h])
        report("clipped", int((np.any(clipped != xyxy, axis=1) & keep).sum()), where)
        empty = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
        report("zero_area_dropped", int((empty & keep).sum()), where)
        keep &= ~empty
        if not keep.any():
            report("images_without_boxes", 1, where, level=20)
        image_id = int(ex.get("image/id", index))
        return make_record(img, clipped[keep], label[keep], image_id, (h, w), difficult=difficult[keep])

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        return self._convert(index, self._ds[index])

    def get_annotation(self, index: int) -> dict[str, Any]:
        """Needs the full record (tfds decodes the image along with it)."""
        rec = self[index]
        del rec["image"], rec["image_ok"]
        return rec
