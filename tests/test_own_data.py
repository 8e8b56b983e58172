"""``yolox-jax train --data DIR``: a COCO-format or VOC folder is recognised, classes and class
count come from the data, defaults are fitted to its size, and training runs on it."""
import json
import logging

import cv2
import numpy as np
import pytest

from yolox_jax.cli import main
from yolox_jax.data.discover import config_for_data, find_dataset, fitted_defaults
from yolox_jax.errors import UserError


def write_coco_folder(root, n_train=12, n_val=4, size=(64, 80), names=("cat", "dog")):
    """The official tutorial's layout: annotations/instances_{train,val}.json, train/, val/
    (no val without ``n_val``); every image holds one bright rectangle of class
    (index % len(names))."""
    rng = np.random.default_rng(0)
    (root / "annotations").mkdir(parents=True)
    cats = [{"id": 10 + k, "name": n} for k, n in enumerate(names)]
    for split, n in (("train", n_train), ("val", n_val)):
        if not n:
            continue
        (root / split).mkdir()
        images, anns = [], []
        for i in range(n):
            h, w = size
            img = np.full((h, w, 3), 40, np.uint8)
            bw, bh = rng.integers(12, 30, 2)
            x, y = rng.integers(0, w - bw), rng.integers(0, h - bh)
            img[y:y + bh, x:x + bw] = 220
            cv2.imwrite(str(root / split / f"{i:03d}.jpg"), img)
            images.append({"id": i + 1, "file_name": f"{i:03d}.jpg", "width": w, "height": h})
            anns.append({"id": i + 1, "image_id": i + 1, "category_id": cats[i % len(cats)]["id"],
                         "bbox": [int(x), int(y), int(bw), int(bh)], "area": int(bw * bh),
                         "iscrowd": 0})
        (root / "annotations" / f"instances_{split}.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root


def write_voc_folder(root, names=("cat", "dog", "cat")):
    base = root / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (base / sub).mkdir(parents=True)
    ids = []
    for i, name in enumerate(names):
        ids.append(f"{i:06d}")
        cv2.imwrite(str(base / "JPEGImages" / f"{ids[-1]}.jpg"), np.zeros((50, 60, 3), np.uint8))
        (base / "Annotations" / f"{ids[-1]}.xml").write_text(
            f"<annotation><size><width>60</width><height>50</height></size><object><name>{name}"
            "</name><difficult>0</difficult><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>30</xmax>"
            "<ymax>30</ymax></bndbox></object></annotation>")
    (base / "ImageSets/Main/trainval.txt").write_text("\n".join(ids[:2]))
    (base / "ImageSets/Main/test.txt").write_text(ids[2])
    return root


def test_coco_folder_is_recognised(tmp_path):
    ds = find_dataset(str(write_coco_folder(tmp_path / "d")))
    assert (ds.format, ds.class_names, ds.num_train, ds.num_val) == ("coco", ["cat", "dog"], 12, 4)
    assert ds.train_images.endswith("train") and ds.val_images.endswith("val")
    assert ds.median_long_side == 80


def test_voc_folder_is_recognised_with_its_own_classes(tmp_path):
    ds = find_dataset(str(write_voc_folder(tmp_path / "v")))
    assert (ds.format, ds.class_names, ds.voc_years) == ("voc", ["cat", "dog"], ["2007"])
    assert (ds.voc_train_split, ds.voc_val_split, ds.num_train, ds.num_val) == ("trainval", "test", 2, 1)
    cfg = config_for_data(str(tmp_path / "v"))
    from yolox_jax.train.inputs import build_sources

    train, val = build_sources(cfg.data)
    assert train.class_names == ["cat", "dog"] and len(train) == 2 and len(val) == 1
    assert cfg.model.num_classes == 2


def test_defaults_follow_the_dataset_size():
    from yolox_jax.data.discover import Dataset

    small = fitted_defaults(Dataset("coco", "x", ["a"], 56, 10, 500), on_cpu=True, model_given=False)
    big = fitted_defaults(Dataset("coco", "x", ["a"] * 80, 118_000, 5000, 640), on_cpu=False,
                          model_given=False)
    assert small["data.input_size"] == (416, 416) and big["data.input_size"] == (640, 640)
    assert small["data.batch_size"] == 8 and big["data.batch_size"] == 64
    assert small["data.num_workers"] == 0 and not small["data.enable_mixup"]
    assert big["data.enable_mixup"] and big["data.multiscale_range"] == 5
    assert big["train.max_epoch"] == 30 and small["train.max_epoch"] == 300
    assert (small["model.name"], big["model.name"]) == ("yolox-tiny", "yolox-s")


def test_data_chosen_values_are_logged_and_base_config_kept(tmp_path, caplog):
    from yolox_jax.config import load_config

    root = write_coco_folder(tmp_path / "d")
    with caplog.at_level(logging.INFO, logger="yolox_jax"):
        cfg = config_for_data(str(root), base=load_config("yolox-nano"))
    assert cfg.model.name == "yolox-nano" and cfg.model.num_classes == 2
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "2 classes (cat, dog)" in text and "data.batch_size=" in text


def test_unusable_folders_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no such dataset folder"):
        find_dataset(str(tmp_path / "absent"))
    with pytest.raises(UserError, match="not a COCO-format"):
        find_dataset(str(tmp_path))
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_train.json").write_text("{oops")
    with pytest.raises(UserError, match="not a readable JSON.*instances_train.json"):
        find_dataset(str(tmp_path))


@pytest.mark.slow
def test_train_on_a_coco_folder_from_the_command_line(tmp_path, capsys, caplog):
    """--data trains on a COCO-format folder; --minutes times the step and fits the epochs to
    the budget (recorded in the run's config, so that a resumed run keeps them); --resume on a
    folder with no checkpoint starts a new run with a warning; an unreadable image is reported
    each epoch. The model, sizes and batch are those of tests/train/test_resume.py: one compiled
    train step serves both."""
    root = write_coco_folder(tmp_path / "shapes", n_train=16, n_val=0, size=(96, 128),
                             names=("a", "b", "c"))
    (root / "train" / "005.jpg").write_bytes(b"not a JPEG")
    rc = main(["train", "--data", str(root), "--resume", "--minutes", "0.1", "model.width=0.125",
               "data.input_size=(96,128)", "data.test_size=(96,128)", "data.batch_size=4",
               "data.max_labels=16", f"run.output_dir={tmp_path}", "run.tensorboard=false"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    # --resume where there is nothing to resume starts a new run, and says so.
    assert (f"--resume: no checkpoint in {tmp_path / 'shapes-yolox-tiny' / 'checkpoints'}"
            in caplog.text)
    # The unreadable image is reported for every epoch, over all of the epoch's 16 images.
    epoch_lines = [r.getMessage() for r in caplog.records if " data: " in r.getMessage()
                   and r.getMessage().startswith("epoch ")]
    assert epoch_lines and all(" data: 16 images: " in m and "005.jpg" in m
                               for m in epoch_lines), epoch_lines
    saved = json.loads((tmp_path / "shapes-yolox-tiny" / "config.json").read_text())
    assert saved["model"]["num_classes"] == 3 and saved["data"]["source"] == "coco"
    assert saved["data"]["val_ann"] == ""
    t = saved["train"]
    assert t["max_minutes"] == 0.1 and t["max_epoch"] >= 2
    steps_per_epoch = t["steps_per_epoch"] or 16 // 4          # 16 images, batch 4
    assert summary["step"] == t["max_epoch"] * steps_per_epoch
    assert np.isfinite(summary["train"]["total_loss"]) and summary["eval"] == {}
    assert summary["run_dir"].endswith("shapes-yolox-tiny")
