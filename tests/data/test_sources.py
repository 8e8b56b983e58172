"""Sources: COCO cleaning and bad input, COCO round trip, VOC, tfds adapter, SyntheticShapes."""
import json
import logging
import os

import cv2
import numpy as np
import pytest

from yolox_jax.data import CocoSource, SyntheticShapes, TfdsSource, VocSource, to_coco_dict, write_coco_json
from yolox_jax.data.sources.base import SourceStats


def _write_img(path, h, w, value=90):
    img = np.full((h, w, 3), value, np.uint8)
    assert cv2.imwrite(str(path), img)


def _messy_coco(tmp_path):
    """A COCO-format folder with one of each bad-input case."""
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    _write_img(img_dir / "good.png", 40, 100)
    _write_img(img_dir / "negative.png", 30, 30)
    (img_dir / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    images = [
        {"id": 1, "file_name": "good.png", "width": 100, "height": 40},
        {"id": 2, "file_name": "negative.png", "width": 30, "height": 30},
        {"id": 3, "file_name": "missing.png", "width": 50, "height": 20},
        {"id": 4, "file_name": "corrupt.jpg", "width": 60, "height": 60},
    ]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 5, 20, 10], "area": 200, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [90, 10, 30, 20], "area": 600, "iscrowd": 0},  # past W
        {"id": 3, "image_id": 1, "category_id": 3, "bbox": [5, 5, 0, 10], "area": 0, "iscrowd": 0},  # zero area
        {"id": 4, "image_id": 1, "category_id": 3, "bbox": [5, 5, 10, 10], "area": 100, "iscrowd": 1},  # crowd
        {"id": 5, "image_id": 1, "category_id": 99, "bbox": [5, 5, 10, 10], "area": 100, "iscrowd": 0},  # unknown
        {"id": 6, "image_id": 3, "category_id": 7, "bbox": [1, 1, 10, 10], "area": 100, "iscrowd": 0},
        {"id": 7, "image_id": 4, "category_id": 7, "bbox": [1, 1, 10, 10], "area": 100, "iscrowd": 0},
        {"id": 8, "image_id": 4, "category_id": 3, "bbox": [-10, 2, 30, 8], "area": 240, "iscrowd": 0},  # left
    ]
    cats = [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}]
    ann_file = tmp_path / "ann.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return ann_file, img_dir


def test_coco_cleaning_counts_and_records(tmp_path, caplog):
    ann_file, img_dir = _messy_coco(tmp_path)
    with caplog.at_level(logging.INFO, logger="yolox_jax.data"):
        src = CocoSource(str(ann_file), str(img_dir))
    assert len(src) == 4 and src.class_names == ["three", "seven"] and src.num_classes == 2
    assert src.category_ids == [3, 7]  # class index = position in sorted category ids
    st = src.stats
    assert st["crowd_dropped"] == 1 and st["unknown_category_dropped"] == 1 and st["zero_area_dropped"] == 1
    assert st["clipped"] == 2 and st["images_without_boxes"] == 1 and st["missing_image"] == 1
    # Reported once each, naming the field / file.
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("crowd_dropped" in m for m in msgs) == 1
    assert any("missing.png" in m for m in msgs) and any("category_id=99" in m for m in msgs)

    good = src[0]
    assert good["image"].shape == (40, 100, 3) and good["image"].dtype == np.uint8 and good["image_ok"]
    assert good["image_id"] == 1 and good["orig_hw"] == (40, 100)
    np.testing.assert_allclose(good["boxes_xyxy"], [[10, 5, 30, 15], [90, 10, 100, 30]])  # 2nd clipped at W
    assert good["classes"].tolist() == [1, 0]
    neg = src[1]
    assert len(neg["classes"]) == 0 and neg["image_ok"]  # kept as a negative
    # Left overflow follows the official rule: x1 = max(0, x) = 0, x2 = min(W, x1 + w) = 30.
    np.testing.assert_allclose(src.get_annotation(3)["boxes_xyxy"][1], [0, 2, 30, 10])


def test_coco_missing_and_corrupt_images_served_blank(tmp_path, caplog):
    ann_file, img_dir = _messy_coco(tmp_path)
    src = CocoSource(str(ann_file), str(img_dir))
    with caplog.at_level(logging.WARNING, logger="yolox_jax.data"):
        missing = src[2]
        corrupt = src[3]
        src[3]
    for rec, hw in ((missing, (20, 50)), (corrupt, (60, 60))):
        assert not rec["image_ok"] and rec["image"].shape == (*hw, 3) and (rec["image"] == 114).all()
        assert rec["boxes_xyxy"].shape == (0, 4) and rec["classes"].shape == (0,)
    assert missing["image_id"] == 3 and corrupt["image_id"] == 4
    assert src.stats["unreadable_image"] == 2
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("corrupt.jpg" in m for m in msgs) == 1  # reported once, counted twice


def test_bad_images_do_not_stop_the_pipeline(tmp_path):
    from yolox_jax.data import eval_loader, train_loader

    ann_file, img_dir = _messy_coco(tmp_path)
    src = CocoSource(str(ann_file), str(img_dir))
    loader = train_loader(src, input_size=(64, 64), batch_size=4, seed=0, num_epochs=2, max_labels=8)
    batches = list(loader)
    assert len(batches) == 2 and batches[0]["images"].shape == (4, 64, 64, 3)
    assert loader.stats["bad_images"] > 0 and loader.stats["source/missing_image"] == 1
    ev = list(eval_loader(src, input_size=(64, 64), batch_size=3))
    ids = np.concatenate([b["image_id"][b["valid"]] for b in ev])
    assert sorted(ids.tolist()) == [1, 2, 3, 4]


def _drop(key):
    return lambda d: d.pop(key)


@pytest.mark.parametrize("edit_json, edit_files, match", [
    (None, lambda p: os.remove(p / "ann.json"), "annotation file not found"),
    (None, lambda p: os.rename(p / "images", p / "elsewhere"), "image directory not found"),
    (_drop("categories"), None, "'categories'"),
    (_drop("annotations"), None, "'annotations'"),
    (lambda d: d.update(images=[]), None, "no images"),
    (lambda d: d["images"][0].pop("height"), None, r"images\[0\].*height"),
    (None, lambda p: (p / "ann.json").write_text("{not json"), "not valid JSON"),
])
def test_coco_wrong_dataset_fails_at_construction(tmp_path, edit_json, edit_files, match):
    ann_file, img_dir = _messy_coco(tmp_path)
    if edit_json is not None:
        data = json.loads(ann_file.read_text())
        edit_json(data)
        ann_file.write_text(json.dumps(data))
    if edit_files is not None:
        edit_files(tmp_path)
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        CocoSource(str(ann_file), str(img_dir))


def test_source_stats_report_once(caplog):
    st = SourceStats("x")
    with caplog.at_level(logging.WARNING, logger="yolox_jax.data"):
        st.report("clipped", 2, "a.json: annotations[3]")
        st.report("clipped", 3, "a.json: annotations[9]")
    assert st.as_dict() == {"clipped": 5} and len(caplog.records) == 1


def test_coco_round_trip_of_synthetic(tmp_path):
    syn = SyntheticShapes(6, image_size=(64, 96), num_classes=3, seed=3)
    d = write_coco_json(syn, str(tmp_path / "gt.json"), image_dir=str(tmp_path / "img"))
    assert len(d["images"]) == 6 and min(a["id"] for a in d["annotations"]) == 1
    back = CocoSource(str(tmp_path / "gt.json"), str(tmp_path / "img"))
    assert back.class_names == syn.class_names and back.category_ids == syn.category_ids
    assert back.stats.get("clipped", 0) == 0 and back.stats.get("zero_area_dropped", 0) == 0
    for i in range(6):
        a, b = syn[i], back[i]
        np.testing.assert_allclose(a["boxes_xyxy"], b["boxes_xyxy"], atol=1e-4)
        np.testing.assert_array_equal(a["classes"], b["classes"])
        np.testing.assert_array_equal(a["image"], b["image"])  # PNG is lossless and RGB order survives
        assert a["image_id"] == b["image_id"] and a["orig_hw"] == b["orig_hw"]
    # pycocotools accepts the ground truth as is.
    from pycocotools.coco import COCO

    gt = COCO(str(tmp_path / "gt.json"))
    assert len(gt.getImgIds()) == 6


def test_synthetic_deterministic_and_boxes_on_shapes():
    a, b = SyntheticShapes(20, seed=1), SyntheticShapes(20, seed=1)
    for i in (0, 7, 19):
        np.testing.assert_array_equal(a[i]["image"], b[i]["image"])
        np.testing.assert_array_equal(a[i]["boxes_xyxy"], a.get_annotation(i)["boxes_xyxy"])
    assert not np.array_equal(a[0]["image"], SyntheticShapes(20, seed=2)[0]["image"])
    counts = a.box_counts
    assert counts.min() >= 1 and counts.max() <= 6
    for i in range(20):
        rec = a[i]
        h, w = rec["orig_hw"]
        bx = rec["boxes_xyxy"]
        assert (bx[:, 0] >= 0).all() and (bx[:, 2] <= w).all() and (bx[:, 1] >= 0).all() and (bx[:, 3] <= h).all()
        assert (np.minimum(bx[:, 2] - bx[:, 0], bx[:, 3] - bx[:, 1]) >= 12).all()
        # Shapes are saturated, backgrounds are not: the box centre region is mostly saturated pixels
        # unless a later shape covers it.
        sat = cv2.cvtColor(rec["image"], cv2.COLOR_RGB2HSV)[..., 1]
        x1, y1, x2, y2 = bx[-1].astype(int)  # the last-drawn shape is never occluded
        cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
        assert sat[cy - 2:cy + 3, cx - 2:cx + 3].mean() > 100


def _voc_tree(tmp_path):
    base = tmp_path / "VOCdevkit" / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (base / sub).mkdir(parents=True)
    (base / "ImageSets/Main/trainval.txt").write_text("000001\n000002\n000003\n")

    def xml(objs, w=80, h=60):
        body = "".join(
            f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
            f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for n, d, b in objs)
        return f"<annotation><size><width>{w}</width><height>{h}</height><depth>3</depth></size>{body}</annotation>"

    (base / "Annotations/000001.xml").write_text(xml([("dog", 0, (1, 1, 40, 30)), ("person", 1, (41, 5, 90, 60)),
                                                      ("unicorn", 0, (1, 1, 5, 5))]))
    (base / "Annotations/000002.xml").write_text(xml([]))
    (base / "Annotations/000003.xml").write_text("<annotation><size>")  # broken XML
    _write_img(base / "JPEGImages/000001.jpg", 60, 80)
    _write_img(base / "JPEGImages/000002.jpg", 60, 80)
    return tmp_path / "VOCdevkit"


def test_voc_source(tmp_path):
    root = _voc_tree(tmp_path)
    src = VocSource(str(root), split="trainval", years=("2007",))
    assert len(src) == 2 and src.num_classes == 20
    r = src[0]
    assert r["image"].shape == (60, 80, 3) and r["orig_hw"] == (60, 80)
    # 1-based inclusive VOC pixels -> [xmin - 1, xmax); the second box is clipped at W = 80.
    np.testing.assert_allclose(r["boxes_xyxy"], [[0, 0, 40, 30], [40, 4, 80, 60]])
    assert r["classes"].tolist() == [11, 14] and r["difficult"].tolist() == [False, True]
    st = src.stats
    assert st["unknown_category_dropped"] == 1 and st["missing_annotation"] == 1
    assert st["images_without_boxes"] == 1 and st["clipped"] == 1 and st["difficult"] == 1
    gt = to_coco_dict(src)
    assert [a["iscrowd"] for a in gt["annotations"]] == [0, 1]  # difficult -> ignored by COCOeval
    no_diff = VocSource(str(root), years="2007", keep_difficult=False)
    assert no_diff[0]["classes"].tolist() == [11] and no_diff.stats["difficult_dropped"] == 1
    with pytest.raises(FileNotFoundError, match="test.txt"):
        VocSource(str(root), split="test", years=("2007",))


class _FakeTfdsRecords:
    """Records laid out like tfds coco/2017 (objects/bbox normalised ymin, xmin, ymax, xmax)."""

    def __init__(self):
        img = np.zeros((50, 100, 3), np.uint8)
        self.rows = [
            {"image": img, "image/id": 42, "objects": {
                "bbox": np.array([[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 0.2, 0.2], [0.5, 0.5, 0.5, 0.9]], np.float32),
                "label": np.array([3, 1, 2]), "is_crowd": np.array([False, True, False])}},
            {"image": img[..., :1], "image/id": 43, "objects": {"bbox": np.zeros((0, 4)), "label": np.zeros(0)}},
        ]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def test_tfds_adapter_on_tfds_layout():
    src = TfdsSource("coco/2017", "validation", data_source=_FakeTfdsRecords(), class_names=list("abcd"))
    r = src[0]
    assert r["image_id"] == 42 and r["orig_hw"] == (50, 100)
    np.testing.assert_allclose(r["boxes_xyxy"], [[20, 5, 60, 25]], rtol=1e-6)  # crowd and zero-height dropped
    assert r["classes"].tolist() == [3]
    assert src.stats["crowd_dropped"] == 1 and src.stats["zero_area_dropped"] == 1
    assert src[1]["image"].shape == (50, 100, 3)  # greyscale expanded
    assert src.category_ids == [1, 2, 3, 4]


def test_tfds_source_reads_a_real_arrayrecord_dataset(tmp_path):
    """Builds a 3-image dataset with tfds' own builder (no TensorFlow needed when images are given as
    encoded PNG bytes) and reads it back through ``tfds.data_source``."""
    tfds = pytest.importorskip("tensorflow_datasets")

    class YoloxJaxTinyDet(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
                "image/id": np.int64,
                "objects": tfds.features.Sequence({
                    "bbox": tfds.features.BBoxFeature(),
                    "label": tfds.features.ClassLabel(names=["circle", "square"]),
                    "is_crowd": np.bool_,
                })}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i in range(3):
                img = np.full((20, 40, 3), 50 * i, np.uint8)
                yield i, {"image": cv2.imencode(".png", img)[1].tobytes(), "image/id": 100 + i,
                          "objects": {"bbox": np.array([[0.1, 0.25, 0.5, 0.75]], np.float32),
                                      "label": [i % 2], "is_crowd": [False]}}

    YoloxJaxTinyDet(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    src = TfdsSource("yolox_jax_tiny_det", split="train", data_dir=str(tmp_path))
    assert len(src) == 3 and src.class_names == ["circle", "square"]
    recs = sorted((src[i] for i in range(3)), key=lambda r: r["image_id"])
    assert [r["image_id"] for r in recs] == [100, 101, 102]
    np.testing.assert_allclose(recs[1]["boxes_xyxy"], [[10, 2, 30, 10]], rtol=1e-6)
    assert recs[1]["classes"].tolist() == [1] and (recs[2]["image"] == 100).all()


def test_coco_ground_truth_keeps_crowd_for_cocoeval(tmp_path):
    ann_file, img_dir = _messy_coco(tmp_path)
    data = json.loads(ann_file.read_text())
    data["annotations"].append({"image_id": 1, "category_id": 3, "bbox": [1, 2, 3]})  # malformed
    data["annotations"].append({"image_id": 2, "category_id": 3, "bbox": [1, 2, 3, 4]})  # no id/area/iscrowd
    ann_file.write_text(json.dumps(data))
    src = CocoSource(str(ann_file), str(img_dir))
    gt = to_coco_dict(src)
    assert len(gt["annotations"]) == 9 and any(a["iscrowd"] for a in gt["annotations"])
    last = gt["annotations"][-1]
    assert last["id"] == 9 and last["area"] == 12 and last["iscrowd"] == 0
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = gt
    coco.createIndex()
    assert len(coco.getAnnIds(iscrowd=True)) == 1


def test_truncated_jpeg_is_corrupt_and_contributes_no_boxes(tmp_path, caplog):
    """A JPEG cut in half decodes in OpenCV as a grey-filled image; here it is counted as
    unreadable, named, and served blank without its boxes. The intact file still reads."""
    from yolox_jax.data.sources.base import is_complete, read_image_rgb

    rng = np.random.default_rng(0)
    photo = rng.integers(0, 255, (120, 160, 3)).astype(np.uint8)
    assert cv2.imwrite(str(tmp_path / "whole.jpg"), photo)
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    # The premise: OpenCV alone returns an image for the cut file.
    assert cv2.imread(str(tmp_path / "cut.jpg")) is not None
    assert is_complete(data) and not is_complete(data[: len(data) // 2])
    assert read_image_rgb(str(tmp_path / "whole.jpg")).shape == (120, 160, 3)
    assert read_image_rgb(str(tmp_path / "cut.jpg")) is None

    images = [{"id": i + 1, "file_name": f, "width": 160, "height": 120}
              for i, f in enumerate(["whole.jpg", "cut.jpg"])]
    anns = [{"id": k + 1, "image_id": i, "category_id": 1, "bbox": [10, 10, 30, 30], "area": 900,
             "iscrowd": 0} for k, i in enumerate([1, 2, 2])]
    ann_file = tmp_path / "ann.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": anns,
                                    "categories": [{"id": 1, "name": "thing"}]}))
    src = CocoSource(str(ann_file), str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="yolox_jax.data"):
        whole, cut = src[0], src[1]
    assert whole["image_ok"] and len(whole["classes"]) == 1
    assert not cut["image_ok"] and cut["boxes_xyxy"].shape == (0, 4) and (cut["image"] == 114).all()
    assert src.stats["unreadable_image"] == 1
    assert any("cut.jpg" in r.getMessage() for r in caplog.records)


def test_data_problems_are_totalled_with_example_files_and_the_limit(tmp_path):
    """What the training loop logs every epoch and at the end: totals since a mark, the files
    behind them, and the max_labels limit that truncated labels."""
    from yolox_jax.data import PipelineStats, train_loader

    ann_file, img_dir = _messy_coco(tmp_path)
    src = CocoSource(str(ann_file), str(img_dir))
    stats = PipelineStats("train data", src, max_labels=1)
    loader = train_loader(src, input_size=(64, 64), batch_size=4, seed=0, num_epochs=2,
                          max_labels=1, mosaic_prob=0.0, enable_mixup=False, stats=stats)
    assert loader.stats is not None
    it = iter(loader)
    next(it)
    first = stats.as_dict()
    # One epoch = each of the 4 images once: missing.png and corrupt.jpg are served blank, and
    # good.png (2 boxes) is cut to max_labels=1.
    assert first["bad_images"] == 2 and first["truncated_images"] == 1
    line = stats.summary()
    assert "2 unreadable or missing images" in line and "missing.png" in line and "corrupt.jpg" in line
    assert "max_labels=1" in line and "1 smallest boxes left out" in line and "good.png" in line
    next(it)
    assert stats.summary(since=first).startswith("4 images:")
    assert stats.summary(since=stats.as_dict()) is None
