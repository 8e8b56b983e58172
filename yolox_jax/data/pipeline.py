"""Training and evaluation input pipelines on grain.

Shape of the training pipeline (a ``grain.MapDataset`` until the last step, so global batch
``i`` is a pure function of ``(seed, i)``, whatever the number of hosts and workers):

    range(N) -> shuffle(seed), reshuffled every epoch -> repeat(num_epochs)   (the global stream)
             -> host s of S, local batch B: rows s*B .. s*B+B-1 of every global batch of S*B
             -> TrainSample: Mosaic / affine / MixUp / TrainTransform, with a Generator seeded
                by (seed, global position in the stream)
             -> batch(B) -> to_iter_dataset -> [mp_prefetch(num_workers)] -> stats collection

With ``augment_on="device"`` the TrainSample step is DeviceAugSample: decode and pre-scale the
images a sample combines (with ``device_partners="batch"`` its own image only); the
augmentation itself runs on the accelerator (``device_aug``).

Because every sample's randomness depends only on its position in the stream and batching
happens before the worker split, batches are identical for any ``num_workers`` (workers each
compute whole batches, ``i::num_workers``).  The iterator is a grain ``DatasetIterator``:
``it.get_state()`` / ``it.set_state(state)`` (a small JSON-able dict) or, with orbax,
``grain.checkpoint.CheckpointSave(it)`` / ``grain.checkpoint.CheckpointRestore(it)`` inside an
``ocp.args.Composite`` — restore into an iterator built with the same arguments (source, seed,
batch size, shard and worker count).  Because batch ``i`` depends only on the arguments and ``i``,
``loader.iter_from(i)`` resumes from a step count alone, even with another worker count.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter
from typing import Any, Sequence

import grain
import numpy as np

from yolox_jax.data import transforms as T
from yolox_jax.data.mosaic import mixup, mosaic, mosaic_center

log = logging.getLogger("yolox_jax.data")

_MIXUP_PARTNER_TRIES = 50


def _has_boxes_index(source) -> np.ndarray | None:
    """Indices of images with >= 1 box, if the source can tell without decoding images."""
    counts = getattr(source, "box_counts", None)
    if counts is None:
        return None
    return np.flatnonzero(np.asarray(counts) > 0)


@dataclasses.dataclass
class TrainSample:
    """grain map_with_index transform: stream position + source index -> one training sample.

    Output: {"images": uint8 [H, W, 3], "labels": float32 [M, 5], "label_mask": bool [M],
    "_dropped_labels": int32 (boxes cut by max_labels), "_bad_images": int32 (unreadable images
    used)}; the underscore fields are removed in the main process by ``PipelineStats``.
    """

    source: Any
    input_size: tuple[int, int]
    seed: int
    mosaic_prob: float
    mixup_prob: float
    enable_mixup: bool
    degrees: float
    translate: float
    mosaic_scale: Any
    mixup_scale: Sequence[float]
    shear: float
    flip_prob: float
    hsv_prob: float
    max_labels: int
    annotated: np.ndarray | None  # indices with boxes, for MixUp partners

    def _pull(self, index: int):
        """Official pull_item: the record pre-scaled to fit input_size."""
        rec = self.source[int(index)]
        img, boxes = T.prescale(rec["image"], rec["boxes_xyxy"], self.input_size)
        return img, boxes, rec["classes"], int(not rec.get("image_ok", True))

    def _mixup_partner(self, rng: np.random.Generator) -> int | None:
        if self.annotated is not None:
            if len(self.annotated) == 0:
                return None
            return int(self.annotated[rng.integers(0, len(self.annotated))])
        # No cheap box counts (e.g. tfds): rejection sampling, as the official loop does, bounded.
        for _ in range(_MIXUP_PARTNER_TRIES):
            j = int(rng.integers(0, len(self.source)))
            if len(self.source.get_annotation(j)["classes"]):
                return j
        return None

    def __call__(self, position: int, index) -> dict[str, np.ndarray]:
        # 0: the one global stream (every host reads the same one).
        rng = np.random.default_rng([self.seed, 0, int(position)])
        bad, bad_index = 0, -1
        if self.mosaic_prob > 0 and rng.random() < self.mosaic_prob:
            center = mosaic_center(rng, self.input_size)
            others = rng.integers(0, len(self.source), 3)
            used = [int(index), *map(int, others)]
            tiles = [self._pull(j) for j in used]
            bad += sum(t[3] for t in tiles)
            bad_index = next((j for j, t in zip(used, tiles) if t[3]), -1)
            canvas, boxes, classes = mosaic(
                [t[0] for t in tiles], [t[1] for t in tiles], [t[2] for t in tiles], self.input_size, center)
            img, boxes = T.random_affine(canvas, boxes, rng, self.input_size, degrees=self.degrees,
                                         translate=self.translate, scales=self.mosaic_scale, shear=self.shear)
            if self.enable_mixup and len(boxes) and rng.random() < self.mixup_prob:
                jit = rng.uniform(*self.mixup_scale)
                flip = rng.uniform(0, 1) > 0.5
                j = self._mixup_partner(rng)
                if j is not None:
                    cp_img, cp_boxes, cp_classes, cp_bad = self._pull(j)
                    bad += cp_bad
                    bad_index = j if cp_bad and bad_index < 0 else bad_index
                    img, boxes, classes = mixup(img, boxes, classes, cp_img, cp_boxes, cp_classes,
                                                           jit_factor=jit, flip=flip, rng=rng)
        else:
            img, boxes, classes, bad = self._pull(int(index))
            bad_index = int(index) if bad else -1
        image, labels, mask, dropped = T.train_transform(
            img, boxes, classes, rng, self.input_size, max_labels=self.max_labels,
            flip_prob=self.flip_prob, hsv_prob=self.hsv_prob)
        return {"images": image, "labels": labels, "label_mask": mask,
                "_dropped_labels": np.int32(dropped), "_bad_images": np.int32(bad),
                "_index": np.int32(index), "_bad_index": np.int32(bad_index)}


@dataclasses.dataclass
class DeviceAugSample(TrainSample):
    """The host half of ``augment_on="device"``: stream position + source index -> the images a
    sample combines, decoded and pre-scaled, for ``yolox_jax.data.device_aug.augment_batch``.

    The host draws, from the same per-position Generator as ``TrainSample``, whether Mosaic and
    MixUp apply and which images they use (it has to decode them); everything else is drawn on
    the device. Every slot is resized as the official mosaic / letterbox do and put top-left on
    an [H, W, 3] canvas (slot 0 and the MixUp partner on 114, the letterbox). The fields are
    those of ``TrainSample``; the geometric and colour ones are read by the device side.

    Output (module docstring of ``device_aug``; K = max_labels boxes per slot, more keep the
    largest and count as dropped): {"tiles": uint8 [5, H, W, 3], "tile_hw": int32 [5, 2],
    "tile_boxes": float32 [5, K, 4], "tile_classes": int32 [5, K], "tile_mask": bool [5, K],
    "use_mosaic": bool, "use_mixup": bool, "position": uint32, and the underscore fields of
    ``TrainSample``}.

    ``partners="batch"`` (``data.device_partners``): only the sample's own image is decoded; the
    output has one slot (``tiles`` [1, H, W, 3], ...) and the device takes the partners from
    the other rows of the batch (``device_aug.gather_partners``). ``use_mixup`` then says that
    MixUp was drawn; the device applies it only if the mosaic and a partner have boxes.
    """

    partners: str = "dataset"

    def __call__(self, position: int, index) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, 0, int(position)])
        H, W = self.input_size
        K = self.max_labels
        slots = 1 if self.partners == "batch" else 5
        out = {"tiles": np.zeros((slots, H, W, 3), np.uint8),
               "tile_hw": np.zeros((slots, 2), np.int32),
               "tile_boxes": np.zeros((slots, K, 4), np.float32),
               "tile_classes": np.zeros((slots, K), np.int32),
               "tile_mask": np.zeros((slots, K), bool)}
        use_mosaic = self.mosaic_prob > 0 and rng.random() < self.mosaic_prob
        if self.partners == "batch":
            use_mixup = use_mosaic and self.enable_mixup and rng.random() < self.mixup_prob
            bad, dropped = self._place(out, 0, int(index))
            return {**out, "use_mosaic": np.bool_(use_mosaic), "use_mixup": np.bool_(use_mixup),
                    "position": np.uint32(position), "_dropped_labels": np.int32(dropped),
                    "_bad_images": np.int32(bad), "_index": np.int32(index),
                    "_bad_index": np.int32(index if bad else -1)}
        used = [int(index)]
        if use_mosaic:
            used += [int(j) for j in rng.integers(0, len(self.source), 3)]
        bad, bad_index, dropped, n_boxes = 0, -1, 0, 0
        for slot, j in enumerate(used):
            b, d = self._place(out, slot, j)
            bad += b
            bad_index = j if b and bad_index < 0 else bad_index
            dropped += d
            n_boxes += int(out["tile_mask"][slot].sum())
        use_mixup = False
        if use_mosaic and self.enable_mixup and n_boxes and rng.random() < self.mixup_prob:
            j = self._mixup_partner(rng)
            if j is not None:
                use_mixup = True
                b, d = self._place(out, 4, j)
                bad += b
                bad_index = j if b and bad_index < 0 else bad_index
                dropped += d
        return {**out, "use_mosaic": np.bool_(use_mosaic), "use_mixup": np.bool_(use_mixup),
                "position": np.uint32(position), "_dropped_labels": np.int32(dropped),
                "_bad_images": np.int32(bad), "_index": np.int32(index),
                "_bad_index": np.int32(bad_index)}

    def _place(self, out: dict, slot: int, index: int) -> tuple[int, int]:
        """Decode + pre-scale source ``index`` into ``slot``: the official load-time resize, then
        the resize by min(H/h, W/w) that mosaic and letterbox apply (usually none).
        -> (unreadable image?, boxes dropped over K)."""
        img, boxes, classes, bad = self._pull(index)
        H, W = self.input_size
        r = T.letterbox_ratio(img.shape[:2], (H, W))
        img = T.resize_by(img, r)[:H, :W]
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4) * np.float32(r)
        classes = np.asarray(classes, np.int32).reshape(-1)
        h, w = img.shape[:2]
        tile = out["tiles"][slot]
        tile[:h, :w] = img
        if slot in (0, 4):
            tile[h:] = T.PAD_VALUE
            tile[:h, w:] = T.PAD_VALUE
        out["tile_hw"][slot] = (h, w)
        K = self.max_labels
        dropped = max(0, len(boxes) - K)
        if dropped:
            area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            keep = np.sort(np.argsort(-area, kind="stable")[:K])
            boxes, classes = boxes[keep], classes[keep]
        n = len(boxes)
        out["tile_boxes"][slot, :n] = boxes
        out["tile_classes"][slot, :n] = classes
        out["tile_mask"][slot, :n] = True
        return bad, dropped


class PipelineStats:
    """Counters gathered in the main process from the batches it hands out.

    Keys: ``batches``, ``images``, ``truncated_images`` (images with more than max_labels boxes;
    the largest were kept), ``dropped_labels``, ``bad_images`` (unreadable/missing files that were
    served blank; a mosaic counts each of its tiles).  Each kind is logged once, when first seen,
    and :meth:`summary` gives the totals with example files (the training loop logs it every
    epoch and at the end of the run). Counts restart at zero when an iterator is restored from a
    checkpoint. One object may serve several loaders (the two phases of a run).
    """

    def __init__(self, name: str, source=None, max_labels: int | None = None):
        self.name = name
        self.source = source
        self.max_labels = max_labels
        self.counts: Counter = Counter()
        self.examples: dict[str, list[str]] = {}
        self._reported: set[str] = set()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        dropped = batch.pop("_dropped_labels", None)
        bad = batch.pop("_bad_images", None)
        index = batch.pop("_index", None)
        bad_index = batch.pop("_bad_index", None)
        self.counts["batches"] += 1
        self.counts["images"] += int(batch["images" if "images" in batch else "tiles"].shape[0])
        if dropped is not None and dropped.any():
            self.counts["truncated_images"] += int((dropped > 0).sum())
            self.counts["dropped_labels"] += int(dropped.sum())
            if index is not None:
                self._example("truncated_images", index[dropped > 0])
            self._report_once("truncated_images", "images had more boxes than "
                              f"max_labels={self.max_labels}; kept the largest"
                              if self.max_labels else "images had more boxes than max_labels; "
                              "kept the largest")
        if bad is not None and bad.any():
            self.counts["bad_images"] += int(bad.sum())
            if bad_index is not None:
                self._example("bad_images", bad_index[bad_index >= 0])
            self._report_once("bad_images", "unreadable or missing image files served as blank 114 images")
        return batch

    def _example(self, kind: str, indices):
        names = self.examples.setdefault(kind, [])
        for i in np.asarray(indices).reshape(-1)[:3]:
            name = describe_index(self.source, int(i))
            if len(names) < 3 and name not in names:
                names.append(name)

    def _report_once(self, kind: str, what: str):
        if kind not in self._reported:
            self._reported.add(kind)
            example = f"; e.g. {self.examples[kind][0]}" if self.examples.get(kind) else ""
            log.warning("%s: %s (%d so far%s)", self.name, what, self.counts[kind], example)

    def as_dict(self) -> dict[str, int]:
        return dict(self.counts)

    def summary(self, since: dict[str, int] | None = None) -> str | None:
        """One line of data problems counted since ``since`` (an earlier :meth:`as_dict`), with
        example files; None when there were none."""
        since = since or {}
        delta = {k: v - since.get(k, 0) for k, v in self.counts.items()}
        parts = []
        if delta.get("bad_images", 0) > 0:
            parts.append(f"{delta['bad_images']} unreadable or missing images served blank "
                         f"without boxes{self._examples('bad_images')}")
        if delta.get("truncated_images", 0) > 0:
            limit = f"max_labels={self.max_labels}" if self.max_labels else "max_labels"
            parts.append(f"{delta['truncated_images']} images with more boxes than {limit} "
                         f"({delta.get('dropped_labels', 0)} smallest boxes left out; raise "
                         f"data.max_labels to keep them){self._examples('truncated_images')}")
        if not parts:
            return None
        return f"{delta.get('images', 0)} images: " + "; ".join(parts)

    def _examples(self, kind: str) -> str:
        names = self.examples.get(kind)
        return f" (e.g. {', '.join(names)})" if names else ""


def describe_index(source, index: int) -> str:
    """The file behind a source index where the source can tell, else ``index <i>``."""
    if hasattr(source, "image_path"):
        try:
            return str(source.image_path(index))
        except (IndexError, KeyError, TypeError):
            pass
    names = getattr(source, "file_names", None)
    if names is not None and 0 <= index < len(names):
        return str(names[index])
    return f"index {index}"


def _ensure_absl_flags_parsed():
    """grain's worker startup reads absl flags (--grain_*); outside ``absl.app.run`` (pytest,
    notebooks, plain scripts) they are unparsed and reading them raises.  Marking them parsed keeps
    every flag at its default; under absl.app this is a no-op."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


class Loader:
    """An iterable of numpy batch dicts; ``iter(loader)`` is a checkpointable grain DatasetIterator.

    Attributes: ``dataset`` (the grain IterDataset), ``batches`` (the grain MapDataset of batches
    before prefetching: random access, ``loader.batches[i]`` — handy for debugging), ``stats``
    (counters, see PipelineStats), ``source``.  ``len(loader)`` = batches per epoch (train) or in
    total (eval).
    """

    def __init__(self, batches: grain.MapDataset, *, num_workers: int, stats: PipelineStats,
                 source, length: int, read_threads: int = 1, prefetch: int = 2):
        self.batches = batches
        self.source = source
        self.num_workers = num_workers
        self._stats = stats
        self._length = length
        self._read_threads = read_threads
        self._prefetch = prefetch
        self.dataset = self._iter_dataset(batches)

    def _iter_dataset(self, batches: grain.MapDataset) -> grain.IterDataset:
        ds = batches.to_iter_dataset(grain.ReadOptions(num_threads=self._read_threads,
                                                       prefetch_buffer_size=self._prefetch))
        if self.num_workers > 0:
            _ensure_absl_flags_parsed()
            ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.num_workers,
                                                             per_worker_buffer_size=self._prefetch))
        return ds.map(self._stats)

    def __iter__(self) -> grain.DatasetIterator:
        return iter(self.dataset)

    def iter_from(self, batch_index: int) -> grain.DatasetIterator:
        """Iterator whose first batch is batch ``batch_index`` of the stream.

        Batch i depends only on (arguments, i), so this resumes exactly from a step count alone —
        also with a different ``num_workers``, which grain's own iterator state does not allow.
        """
        return iter(self._iter_dataset(self.batches[int(batch_index):]))

    def __len__(self) -> int:
        return self._length

    @property
    def stats(self) -> dict[str, int]:
        return {**self._stats.as_dict(), **{f"source/{k}": v for k, v in getattr(self.source, "stats", {}).items()}}


def _check_input_size(input_size) -> tuple[int, int]:
    H, W = int(input_size[0]), int(input_size[1])
    if H <= 0 or W <= 0:
        raise ValueError(f"input_size must be positive, got {input_size}")
    return H, W


def train_dataset(source, *, input_size=(640, 640), batch_size: int, seed: int = 0,
                  mosaic_prob: float = 1.0, mixup_prob: float = 1.0, enable_mixup: bool = True,
                  degrees: float = 10.0, translate: float = 0.1, mosaic_scale=(0.1, 2.0),
                  mixup_scale=(0.5, 1.5), shear: float = 2.0, flip_prob: float = 0.5, hsv_prob: float = 1.0,
                  max_labels: int = 120, shard_index: int = 0, shard_count: int = 1,
                  num_epochs: int | None = None, drop_remainder: bool = True,
                  augment_on: str = "host", device_partners: str = "dataset") -> grain.MapDataset:
    """grain.MapDataset of training batches (random access: ``ds[i]`` is batch i).

    Batch: {"images": uint8 [B, H, W, 3] RGB, "labels": float32 [B, M, 5] (cls, cx, cy, w, h) in
    input pixels, "label_mask": bool [B, M], "_dropped_labels": int32 [B], "_bad_images": int32 [B]}
    (the underscore keys are consumed by ``train_loader``'s stats).  Defaults are the official
    yolox_base ones; the no-aug phase is ``mosaic_prob=0, enable_mixup=False`` (flip and HSV
    stay on, as in the official TrainTransform).  ``shard_index/shard_count`` (e.g.
    ``jax.process_index()/jax.process_count()``): batch i of the global stream holds stream
    positions ``i*G .. i*G + G-1`` (``G = batch_size * shard_count``, the global batch) and host
    s materialises rows ``s*batch_size ..`` of it; every sample's randomness is keyed by its
    global position, so the global batches are the same for any number of hosts (and workers).
    Mosaic/MixUp partners are drawn from the whole source (``device_partners="batch"``: from the
    batch, on the device).
    ``num_epochs=None`` repeats forever (batches run across epoch boundaries, like the official
    InfiniteSampler).
    ``augment_on="device"``: rows are ``DeviceAugSample`` outputs (decoded, pre-scaled images
    and boxes, to be augmented on the device by ``device_aug.augment_batch``); the
    augmentation arguments then only matter there. ``device_partners="batch"`` (device mode
    only): rows hold the sample's own image only, and the device takes Mosaic / MixUp partners
    from the other rows of the batch (``device_aug.gather_partners``).
    """
    H, W = _check_input_size(input_size)
    if augment_on not in ("host", "device"):
        raise ValueError(f"augment_on must be 'host' or 'device', got {augment_on!r}")
    if device_partners not in ("dataset", "batch"):
        raise ValueError(f"device_partners must be 'dataset' or 'batch', got {device_partners!r}")
    n = len(source)
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index {shard_index} not in [0, {shard_count})")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    global_batch = batch_size * shard_count
    if n // global_batch == 0 and shard_count > 1:
        raise ValueError(f"{n} images give no global batch of {global_batch}")
    # One global stream, reshuffled every epoch: every image is used once per epoch.
    stream = grain.MapDataset.range(n).shuffle(
        seed=int(np.random.SeedSequence([seed, 1]).generate_state(1)[0]))
    stream = stream.repeat(num_epochs)
    from_batch = augment_on == "device" and device_partners == "batch"
    fields = dict(
        source=source, input_size=(H, W), seed=int(seed),
        mosaic_prob=float(mosaic_prob), mixup_prob=float(mixup_prob), enable_mixup=bool(enable_mixup),
        degrees=float(degrees), translate=float(translate), mosaic_scale=mosaic_scale,
        mixup_scale=tuple(mixup_scale), shear=float(shear), flip_prob=float(flip_prob),
        hsv_prob=float(hsv_prob), max_labels=int(max_labels),
        annotated=(_has_boxes_index(source)
                   if (enable_mixup and mosaic_prob > 0 and not from_batch) else None))
    if augment_on == "device":
        sample = DeviceAugSample(**fields, partners=device_partners)
    else:
        sample = TrainSample(**fields)
    if shard_count == 1:
        ds = stream.map_with_index(sample)
    else:
        # Equal length on every host (whole global batches) so that they stay in lock-step.
        rows = len(stream) // global_batch * batch_size
        ds = grain.MapDataset.range(rows).map(
            _HostRow(stream, sample, global_batch, batch_size, int(shard_index)))
    return ds.batch(batch_size, drop_remainder=drop_remainder)


@dataclasses.dataclass
class _HostRow:
    """Row k of host ``host``'s stream -> the sample at global stream position
    ``(k // batch) * global_batch + host * batch + k % batch``."""

    stream: Any
    sample: TrainSample
    global_batch: int
    batch: int
    host: int

    def __call__(self, k):
        k = int(k)
        position = (k // self.batch) * self.global_batch + self.host * self.batch + k % self.batch
        return self.sample(position, self.stream[position])


def train_loader(source, *, input_size=(640, 640), batch_size: int, seed: int = 0, num_workers: int = 0,
                 read_threads: int = 1, prefetch: int = 2, stats: PipelineStats | None = None,
                 **kwargs) -> Loader:
    """``train_dataset`` + worker processes + stats; see the module docstring for checkpointing.

    ``iter(loader)`` yields {"images": uint8 [B, H, W, 3], "labels": float32 [B, M, 5],
    "label_mask": bool [B, M]}.  ``num_workers=0`` computes batches in this process
    (``read_threads`` threads); ``num_workers>0`` uses grain worker processes, each with
    ``read_threads`` threads and ``prefetch`` batches of buffer. ``stats``: the counters to
    add to (default: new ones).
    """
    batches = train_dataset(source, input_size=input_size, batch_size=batch_size, seed=seed, **kwargs)
    shard_count = kwargs.get("shard_count", 1)
    per_epoch = len(source) // (batch_size * shard_count)
    if not kwargs.get("drop_remainder", True) and shard_count == 1:
        per_epoch = math.ceil(len(source) / batch_size)
    stats = stats if stats is not None else PipelineStats(
        "train_loader", source, kwargs.get("max_labels", 120))
    return Loader(batches, num_workers=num_workers, stats=stats, source=source,
                  length=per_epoch, read_threads=read_threads, prefetch=prefetch)


@dataclasses.dataclass
class EvalSample:
    """Slot j of this shard's padded eval stream -> letterboxed image + bookkeeping."""

    source: Any
    input_size: tuple[int, int]
    indices: np.ndarray  # source indices of this shard, in order

    def __call__(self, slot: int) -> dict[str, np.ndarray]:
        H, W = self.input_size
        if slot >= len(self.indices):  # padding to a full last batch
            return {"images": np.full((H, W, 3), T.PAD_VALUE, np.uint8), "image_id": np.int64(-1),
                    "scale": np.float32(1.0), "orig_hw": np.zeros(2, np.int32), "valid": np.bool_(False),
                    "_bad_images": np.int32(0)}
        rec = self.source[int(self.indices[slot])]
        img, r = T.val_transform(rec["image"], (H, W))
        return {"images": img, "image_id": np.int64(rec["image_id"]), "scale": np.float32(r),
                "orig_hw": np.asarray(rec["orig_hw"], np.int32), "valid": np.bool_(True),
                "_bad_images": np.int32(not rec.get("image_ok", True))}


def eval_dataset(source, *, input_size, batch_size: int, shard_index: int = 0, shard_count: int = 1) -> grain.MapDataset:
    """grain.MapDataset of eval batches, deterministic order, last batch padded.

    Shard s gets source indices s, s + shard_count, ... (every image exactly once across shards);
    every shard has the same number of batches, ceil(ceil(N / shard_count) / B), so that hosts
    stay in lock-step; padding rows have ``valid=False`` and ``image_id=-1``.
    """
    H, W = _check_input_size(input_size)
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index {shard_index} not in [0, {shard_count})")
    n = len(source)
    indices = np.arange(shard_index, n, shard_count)
    num_batches = math.ceil(math.ceil(n / shard_count) / batch_size)
    ds = grain.MapDataset.range(num_batches * batch_size).map(EvalSample(source, (H, W), indices))
    return ds.batch(batch_size, drop_remainder=True)


def eval_loader(source, *, input_size, batch_size: int, num_workers: int = 0, shard_index: int = 0,
                shard_count: int = 1, read_threads: int = 1, prefetch: int = 2) -> Loader:
    """Yields {"images": uint8 [B, H, W, 3] letterboxed, "image_id": int64 [B], "scale": float32 [B]
    (letterbox r: original box = network box / scale), "orig_hw": int32 [B, 2], "valid": bool [B]}.
    """
    batches = eval_dataset(source, input_size=input_size, batch_size=batch_size,
                           shard_index=shard_index, shard_count=shard_count)
    return Loader(batches, num_workers=num_workers, stats=PipelineStats("eval_loader"), source=source,
                  length=len(batches), read_threads=read_threads, prefetch=prefetch)
