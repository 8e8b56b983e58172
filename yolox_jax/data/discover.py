"""``yolox-jax train --data DIR``: recognise a dataset folder and fit a config to it.

Recognised layouts (the first that matches):

* COCO format, as in the official YOLOX tutorial::

      DIR/annotations/*train*.json  DIR/annotations/*val*.json   (instances_train2017.json, ...)
      DIR/<images of each JSON>/    (train2017/, val2017/, images/, or DIR itself)

  The image folder of a JSON is the first of ``DIR/<json stem without "instances_">``,
  ``DIR/<train|val>``, ``DIR/images/<...>``, ``DIR/images``, ``DIR`` that holds its first
  files. Without a ``val`` JSON the run trains without evaluation.
* Pascal VOC: ``DIR/VOC<year>/{Annotations,JPEGImages,ImageSets/Main}`` (a VOCdevkit folder);
  training on ``trainval`` (else ``train``), validation on ``test`` (else ``val``); class names
  from the XML files (in the Pascal VOC order when they are Pascal classes, else sorted).

The defaults fitted to the data (model, input size, batch, workers, augmentation, epochs) are
returned with the config and printed by the command line, so the user sees what was chosen.
"""
from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from yolox_jax.config import Config
from yolox_jax.errors import UserError


@dataclass
class Dataset:
    """What was found in a dataset folder."""

    format: str                      # "coco" | "voc"
    root: str
    class_names: list
    num_train: int
    num_val: int
    median_long_side: int            # of the training images, from the annotations
    train_ann: str = ""
    train_images: str = ""
    val_ann: str = ""
    val_images: str = ""
    voc_years: list = field(default_factory=list)
    voc_train_split: str = ""
    voc_val_split: str = ""


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"not a readable JSON file: {err}", path) from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                             for k in ("images", "annotations", "categories")):
        raise UserError("not a COCO-format annotation file (needs lists images, annotations, "
                        "categories)", path)
    return data


def _image_dir(root: Path, ann: Path, data: dict) -> Path:
    stem = ann.stem.removeprefix("instances_")
    split = "val" if "val" in stem else "train"
    candidates = [root / stem, root / split, root / "images" / stem, root / "images" / split,
                  root / "images", root]
    names = [im.get("file_name", "") for im in data["images"][:3]]
    for folder in candidates:
        if folder.is_dir() and names and all((folder / n).is_file() for n in names):
            return folder
    raise UserError(f"no image folder holds {names[0] if names else 'its images'} (looked in "
                    + ", ".join(str(c.relative_to(root)) or "." for c in candidates) + ")", ann)


def _median_long_side(images: list) -> int:
    sides = sorted(max(int(im.get("width", 0)), int(im.get("height", 0))) for im in images)
    return sides[len(sides) // 2] if sides else 0


def find_coco(root: Path) -> Dataset | None:
    ann_dir = root / "annotations"
    jsons = sorted(ann_dir.glob("*.json")) if ann_dir.is_dir() else []
    if not jsons:
        return None
    train = [j for j in jsons if "train" in j.stem]
    val = [j for j in jsons if "val" in j.stem]
    if not train:
        if len(jsons) > 1:
            raise UserError("several annotation JSONs and none named *train*: rename the "
                            "training one", ann_dir)
        train = jsons
    if len(train) > 1 or len(val) > 1:
        raise UserError("more than one *train* or *val* annotation JSON: keep one of each "
                        f"({', '.join(j.name for j in train + val)})", ann_dir)
    tdata = _read_json(train[0])
    if not tdata["images"]:
        raise UserError("no images listed", train[0])
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in tdata["categories"]}
    ds = Dataset("coco", str(root), [names[i] for i in sorted(names)], len(tdata["images"]), 0,
                 _median_long_side(tdata["images"]), str(train[0]),
                 str(_image_dir(root, train[0], tdata)))
    if val:
        vdata = _read_json(val[0])
        ds.val_ann, ds.val_images = str(val[0]), str(_image_dir(root, val[0], vdata))
        ds.num_val = len(vdata["images"])
    return ds


def find_voc(root: Path) -> Dataset | None:
    from yolox_jax.data.sources.voc import VOC_CLASSES

    years = sorted(p.name[3:] for p in root.glob("VOC*") if (p / "Annotations").is_dir())
    if not years:
        return None

    def ids(split):
        out = []
        for y in years:
            f = root / f"VOC{y}" / "ImageSets" / "Main" / f"{split}.txt"
            if not f.is_file():
                return None
            out += [(y, line.split()[0]) for line in f.read_text().splitlines() if line.strip()]
        return out

    train_split = "trainval" if ids("trainval") else "train"
    train_ids = ids(train_split)
    if not train_ids:
        raise UserError("a VOC folder needs ImageSets/Main/trainval.txt or train.txt in every "
                        f"VOC<year> folder (years {', '.join(years)})", root)
    val_split = "test" if ids("test") else ("val" if ids("val") else "")
    names, sides = set(), []
    for y, i in train_ids:
        xml = root / f"VOC{y}" / "Annotations" / f"{i}.xml"
        try:
            tree = ET.parse(xml).getroot()
        except (OSError, ET.ParseError):
            continue          # counted and reported by the source when training starts
        names |= {(o.findtext("name") or "").strip() for o in tree.iter("object")}
        size = tree.find("size")
        if size is not None:
            sides.append(max(int(float(size.findtext("width") or 0)),
                             int(float(size.findtext("height") or 0))))
    names.discard("")
    classes = [c for c in VOC_CLASSES if c in names] if names <= set(VOC_CLASSES) else sorted(names)
    sides.sort()
    return Dataset("voc", str(root), classes, len(train_ids),
                   len(ids(val_split) or []) if val_split else 0,
                   sides[len(sides) // 2] if sides else 0, voc_years=years,
                   voc_train_split=train_split, voc_val_split=val_split)


def find_dataset(path: str) -> Dataset:
    root = Path(path)
    if not root.is_dir():
        raise UserError("no such dataset folder", path)
    ds = find_coco(root) or find_voc(root)
    if ds is None:
        raise UserError("not a COCO-format (annotations/*.json) or VOC (VOC<year>/Annotations) "
                        "dataset folder", path)
    return ds


def fitted_defaults(ds: Dataset, *, on_cpu: bool, model_given: bool) -> dict[str, object]:
    """``section.key -> value`` defaults for a dataset of this size and image size.

    * input size: the median long side rounded to a multiple of 32, within [320, 640]
      (within [256, 416] on a CPU, where every pixel costs);
    * batch: 64 on an accelerator, 16 on a CPU, at most a quarter of the training set;
    * workers: none under 500 images (a worker process costs more than it gives), else up to 8;
    * augmentation: Mosaic always (it multiplies a small set), MixUp and multiscale only from
      5,000 images on an accelerator, milder Mosaic scales under 1,000 images;
    * epochs: about 3,000 steps, between 30 and 300 epochs; warm-up, no-aug phase and
      evaluation interval scaled as in the official 300-epoch recipe (5, 15, 10 epochs).
    """
    lo, hi = (256, 416) if on_cpu else (320, 640)
    side = min(max(32 * round((ds.median_long_side or 640) / 32), lo), hi)
    batch = 16 if on_cpu else 64
    batch = max(2, min(batch, 2 ** int(math.log2(max(ds.num_train // 4, 2)))))
    steps_per_epoch = max(ds.num_train // batch, 1)
    epochs = min(max(math.ceil(3000 / steps_per_epoch), 30), 300)
    large = ds.num_train >= 5000 and not on_cpu
    out = {
        "data.input_size": (side, side), "data.test_size": (side, side),
        "data.batch_size": batch,
        "data.num_workers": 0 if ds.num_train < 500 else min(8, max(1, (os.cpu_count() or 2) - 1)),
        "data.enable_mixup": large, "data.multiscale_range": 5 if large else 0,
        "data.mosaic_scale": (0.1, 2.0) if ds.num_train >= 1000 else (0.5, 1.5),
        "train.max_epoch": epochs,
        "train.warmup_epochs": max(1, round(epochs * 5 / 300)),
        "train.no_aug_epochs": max(1, round(epochs * 15 / 300)),
        "eval.interval": max(1, round(epochs * 10 / 300), -(-epochs // 10)),
        "eval.batch_size": batch,
    }
    if not model_given:
        out["model.name"] = "yolox-tiny" if on_cpu else "yolox-s"
    return out


def config_for_data(path: str, base: Config | None = None) -> Config:
    """A config for the dataset folder ``path``: ``base`` (default: the official recipe) with the
    data keys, class count and the size-fitted defaults set; what was chosen is logged."""
    import logging

    from yolox_jax.config import set_value
    from yolox_jax.cpu.process import will_run_on_cpu

    ds = find_dataset(path)
    cfg = base if base is not None else Config()
    chosen = fitted_defaults(ds, on_cpu=will_run_on_cpu(), model_given=base is not None)
    name = Path(path).resolve().name
    chosen |= {"data.source": ds.format, "model.num_classes": len(ds.class_names),
               "run.experiment": f"{name}-{(chosen.get('model.name') or cfg.model.name)}"}
    if ds.format == "coco":
        chosen |= {"data.train_ann": ds.train_ann, "data.train_images": ds.train_images,
                   "data.val_ann": ds.val_ann, "data.val_images": ds.val_images}
    else:
        chosen |= {"data.root": ds.root, "data.voc_years": ",".join(ds.voc_years),
                   "data.class_names": ",".join(ds.class_names),
                   "data.train_split": ds.voc_train_split, "data.val_split": ds.voc_val_split}
    for key, value in chosen.items():
        set_value(cfg, key, value)
    logging.getLogger("yolox_jax").info(
        "--data %s: %s format, %d classes (%s), %d training / %d validation images; chose %s",
        path, ds.format, len(ds.class_names), ", ".join(ds.class_names[:10])
        + (" ..." if len(ds.class_names) > 10 else ""), ds.num_train, ds.num_val,
        ", ".join(f"{k}={v}" for k, v in chosen.items() if not k.startswith(("data.train_",
                                                                           "data.val_", "data.root"))))
    return cfg
