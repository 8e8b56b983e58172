"""Input pipeline: sources, official YOLOX augmentations, grain loaders, multiscale resizing.

Batches are numpy dicts; images uint8 RGB NHWC in 0..255, labels (cls, cx, cy, w, h) in input
pixels padded to ``max_labels`` with a bool mask (see docs in ``pipeline.py``).
"""
from yolox_jax.data.device_aug import AugmentOptions, augment_batch, gather_partners, jit_augment_batch
from yolox_jax.data.mosaic import mixup, mosaic, mosaic_center, mosaic_tile
from yolox_jax.data.multiscale import multiscale_sizes, random_multiscale_size, rescale_batch, resize_batch
from yolox_jax.data.pipeline import (
    DeviceAugSample,
    Loader,
    PipelineStats,
    eval_dataset,
    eval_loader,
    train_dataset,
    train_loader,
)
from yolox_jax.data.sources import (
    COCO_CATEGORY_IDS,
    VOC_CLASSES,
    CocoSource,
    SyntheticShapes,
    TfdsSource,
    VocSource,
    to_coco_dict,
    write_coco_json,
)
from yolox_jax.data.transforms import (
    affine_boxes,
    affine_matrix,
    augment_hsv,
    compose_affine,
    hflip,
    hsv_gains,
    letterbox,
    pad_labels,
    prescale,
    random_affine,
    train_transform,
    val_transform,
    warp_affine,
)

__all__ = [
    "AugmentOptions", "COCO_CATEGORY_IDS", "CocoSource", "DeviceAugSample", "Loader",
    "PipelineStats", "SyntheticShapes", "TfdsSource", "VOC_CLASSES", "VocSource", "affine_boxes",
    "affine_matrix", "augment_batch", "augment_hsv", "compose_affine", "eval_dataset",
    "eval_loader", "gather_partners", "hflip", "hsv_gains", "jit_augment_batch", "letterbox",
    "mixup", "mosaic", "mosaic_center", "mosaic_tile", "multiscale_sizes", "pad_labels", "prescale",
    "random_affine", "random_multiscale_size", "rescale_batch", "resize_batch", "to_coco_dict",
    "train_dataset", "train_loader", "train_transform", "val_transform", "warp_affine",
    "write_coco_json",
]
