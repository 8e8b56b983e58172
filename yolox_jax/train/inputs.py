"""From a DataConfig to data sources and the checkpointable train iterator of each phase."""
from __future__ import annotations

import jax
import numpy as np

from yolox_jax import data as data_lib
from yolox_jax.config import DataConfig
from yolox_jax.data import device_aug
from yolox_jax.errors import UserError


def build_sources(d: DataConfig):
    """(train source, validation source or None) for ``data.source``. The last result is kept
    (keyed by the data config), so checking the data before a run does not read it twice."""
    import dataclasses
    import json

    key = json.dumps(dataclasses.asdict(d), sort_keys=True, default=list)
    if _last_sources and _last_sources[0] == key:
        return _last_sources[1]
    sources = _build_sources(d)
    _last_sources[:] = [key, sources]
    return sources


_last_sources: list = []


def _build_sources(d: DataConfig):
    return _split_source(d, "train"), _split_source(d, "val")


def build_val_source(d: DataConfig):
    """The validation source alone (None when the config has none): evaluation does not need
    the training data (for COCO, ``instances_train2017.json`` need not be there)."""
    return _split_source(d, "val")


def _split_source(d: DataConfig, split: str):
    """The source of ``split`` ("train" or "val"); None for a validation split the config does
    not name."""
    if d.source not in ("synthetic", "coco", "voc", "tfds"):
        raise UserError(f"data.source={d.source!r}: expected synthetic, coco, voc or tfds")
    train = split == "train"
    if d.source == "synthetic":
        count = d.synthetic_train_images if train else d.synthetic_val_images
        if not (train or count):
            return None
        return data_lib.SyntheticShapes(count, image_size=tuple(d.synthetic_image_size),
                                        seed=d.synthetic_seed + (0 if train else 1_000_003))
    if d.source == "coco":
        ann, images = (d.train_ann, d.train_images) if train else (d.val_ann, d.val_images)
        return data_lib.CocoSource(ann, images) if train or ann else None
    name = d.train_split if train else d.val_split
    if not (train or name):
        return None
    if d.source == "voc":
        years = tuple(y.strip() for y in d.voc_years.split(",") if y.strip())
        kw = {"years": years}
        if d.class_names:
            kw["class_names"] = [c.strip() for c in d.class_names.split(",")]
        return data_lib.VocSource(d.root, split=name, **kw)
    return data_lib.TfdsSource(d.tfds_name, split=name, data_dir=d.root or None)


def multiscale_choices(d: DataConfig) -> list[tuple[int, int]]:
    """Sizes for multiscale training ([] = single scale). ``random_size`` (lo, hi) in units of 32
    takes precedence over ``multiscale_range`` as in the official Exp."""
    h, w = d.input_size
    if d.random_size:
        lo, hi = d.random_size
        return [(32 * s, 32 * int(s * w / h)) for s in range(int(lo), int(hi) + 1)]
    if d.multiscale_range <= 0:
        return []
    return [tuple(s) for s in data_lib.multiscale_sizes(tuple(d.input_size), d.multiscale_range)]


def train_iterator(cfg, source, phase: str, local_batch: int, start_batch: int = 0,
                   stats=None):
    """A checkpointable iterator over this process's shard; ``phase`` "aug" or "no_aug".

    Both phases read the same shuffled stream (same seed); ``start_batch`` is where it starts, so
    the no-aug phase continues the stream at the step where it begins. ``stats``: a
    ``yolox_jax.data.PipelineStats`` that counts the data problems of the batches served.
    """
    d = cfg.data
    aug = phase == "aug"
    loader = data_lib.train_loader(
        source, input_size=tuple(d.input_size), batch_size=local_batch,
        seed=cfg.train.seed,
        mosaic_prob=d.mosaic_prob if aug else 0.0, mixup_prob=d.mixup_prob,
        enable_mixup=d.enable_mixup and aug, degrees=d.degrees, translate=d.translate,
        mosaic_scale=tuple(d.mosaic_scale), mixup_scale=tuple(d.mixup_scale), shear=d.shear,
        flip_prob=d.flip_prob, hsv_prob=d.hsv_prob, max_labels=d.max_labels,
        num_workers=d.num_workers, shard_index=jax.process_index(),
        shard_count=jax.process_count(), stats=stats,
        augment_on=_augment_on(d) if aug else "host", device_partners=_device_partners(d))
    return loader.iter_from(start_batch) if start_batch else iter(loader)


def _augment_on(d: DataConfig) -> str:
    if d.augment_on not in ("host", "device"):
        raise UserError(f"is {d.augment_on!r}; expected host or device", "data.augment_on")
    return d.augment_on


def _device_partners(d: DataConfig) -> str:
    if d.device_partners not in ("dataset", "batch"):
        raise UserError(f"is {d.device_partners!r}; expected dataset or batch", "data.device_partners")
    return d.device_partners


def batch_preparer(cfg, mesh):
    """``prepare(host_batch) -> batch``: the per-process numpy batch as global arrays sharded
    over the mesh, the batch ``train_step`` takes.

    With ``data.augment_on="device"`` a batch of the Mosaic phase (decoded, pre-scaled images:
    ``yolox_jax.data.DeviceAugSample``) is augmented on the device by one jitted program
    (``device_aug.augment_batch``), keyed by ``train.seed`` and each row's stream position, so
    step s gets the same batch on any mesh, host count or resume. It is a program of its own
    rather than part of the train step: the step's programs (one per multiscale size, compiled
    ahead) stay the same for both settings and both phases, and the augmentation compiles once,
    at ``data.input_size``. With ``data.device_partners="batch"`` the rows hold one image each
    and the program first takes every row's Mosaic / MixUp partners from the other rows of its
    process's batch (``device_aug.gather_partners``). Other batches are only sharded."""
    from yolox_jax.train.sharding import shard_batch

    partners = _device_partners(cfg.data)
    if _augment_on(cfg.data) == "host":
        return lambda host_batch: shard_batch(host_batch, mesh)
    augment = device_aug.jit_augment_batch(device_aug.options_from_config(cfg.data), mesh,
                                           partners=partners)
    seed = np.uint32(cfg.train.seed)

    def prepare(host_batch):
        batch = shard_batch(host_batch, mesh)
        return augment(batch, seed) if "tiles" in batch else batch
    return prepare
