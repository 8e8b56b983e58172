"""Detection data sources: random access (grain RandomAccessDataSource), one record per image."""
from yolox_jax.data.sources.base import DESCRIPTIONS, PAD_VALUE, SourceStats
from yolox_jax.data.sources.coco import CocoSource, to_coco_dict, write_coco_json
from yolox_jax.data.sources.synthetic import SHAPES, SyntheticShapes
from yolox_jax.data.sources.tfds_source import COCO_CATEGORY_IDS, TfdsSource
from yolox_jax.data.sources.voc import VOC_CLASSES, VocSource

__all__ = [
    "COCO_CATEGORY_IDS", "CocoSource", "DESCRIPTIONS", "PAD_VALUE", "SHAPES", "SourceStats",
    "SyntheticShapes", "TfdsSource", "VOC_CLASSES", "VocSource", "to_coco_dict", "write_coco_json",
]
