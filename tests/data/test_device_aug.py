"""Device-side augmentation (``augment_on="device"``) against the host implementation: the same
parameters give the same boxes, boxes stay on the drawn objects, the tiny-box filter and label
padding follow the host rules, and a (seed, position) gives one batch, bitwise."""
import dataclasses

import jax
import numpy as np
import pytest

from yolox_jax.data import device_aug as D
from yolox_jax.data import transforms as T
from yolox_jax.data.mosaic import mixup, mosaic
from yolox_jax.data.pipeline import DeviceAugSample

HW = (64, 64)
M = 8  # max_labels, and boxes per slot
COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 230), (230, 220, 20), (200, 40, 210), (20, 210, 210)]


class _Source:
    """In-memory source: image i is (h, w) background 90 with solid rectangles."""

    def __init__(self, records):
        self.records = records
        self.box_counts = [len(r["classes"]) for r in records]

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        return self.records[i]

    def get_annotation(self, i):
        return self.records[i]


def _record(h, w, boxes, classes):
    img = np.full((h, w, 3), 90, np.uint8)
    for (x1, y1, x2, y2), c in zip(boxes, classes):
        img[y1:y2, x1:x2] = COLOURS[c]
    return {"image": img, "boxes_xyxy": np.asarray(boxes, np.float32).reshape(-1, 4),
            "classes": np.asarray(classes, np.int32), "image_ok": True}


SOURCE = _Source([
    _record(48, 64, [(6, 8, 30, 30), (40, 20, 44, 40)], [0, 1]),          # 4 px wide box
    _record(64, 48, [(10, 10, 40, 50), (2, 2, 3, 20)], [2, 3]),           # 1 px wide: filtered
    _record(40, 60, [(20, 5, 50, 35)], [4]),
    _record(64, 64, [(5, 5, 60, 30), (8, 40, 20, 60), (30, 40, 58, 62)], [5, 0, 1]),
    _record(32, 48, [(4, 4, 40, 28)], [2]),                               # MixUp partner
    _record(48, 64, [(10, 10, 11, 40)], [3]),                             # only a tiny box
    _record(48, 64, [], []),                                              # no boxes
])


def _host():
    return DeviceAugSample(
        source=SOURCE, input_size=HW, seed=0, mosaic_prob=1.0, mixup_prob=1.0, enable_mixup=True,
        degrees=10.0, translate=0.1, mosaic_scale=(0.5, 1.5), mixup_scale=(0.5, 1.5), shear=2.0,
        flip_prob=0.5, hsv_prob=1.0, max_labels=M, annotated=np.flatnonzero(SOURCE.box_counts))


def _sample(used, partner=None, position=0):
    """One DeviceAugSample row for chosen images: ``used`` [index] (no mosaic) or 4 indices."""
    h = _host()
    out = {"tiles": np.zeros((5, *HW, 3), np.uint8), "tile_hw": np.zeros((5, 2), np.int32),
           "tile_boxes": np.zeros((5, M, 4), np.float32), "tile_classes": np.zeros((5, M), np.int32),
           "tile_mask": np.zeros((5, M), bool)}
    for slot, j in enumerate(used):
        h._place(out, slot, j)
    if partner is not None:
        h._place(out, 4, partner)
    return {**out, "use_mosaic": np.bool_(len(used) == 4), "use_mixup": np.bool_(partner is not None),
            "position": np.uint32(position)}


def _batch(*samples):
    return {k: np.stack([s[k] for s in samples]) for k in samples[0]}


class _Fixed:
    """Stands in for the host Generator with parameters drawn on the device."""

    def __init__(self, integers=(), random=(), uniform=None):
        self._integers, self._random, self._uniform = list(integers), list(random), uniform

    def integers(self, lo, hi, size=None):
        if size is not None:
            return np.ones(size, np.int64)
        return self._integers.pop(0)

    def random(self):
        return self._random.pop(0)

    def uniform(self, lo, hi, size=None):
        return self._uniform


def _host_expected(used, partner, p, opts):
    """The host pipeline (mosaic.py, transforms.py) driven with the device's parameters."""
    recs = [SOURCE[j] for j in used]
    pulled = [T.prescale(r["image"], r["boxes_xyxy"], HW) for r in recs]
    classes = [r["classes"] for r in recs]
    if len(used) == 4:
        canvas, boxes, cls = mosaic([q[0] for q in pulled], [q[1] for q in pulled], classes, HW,
                                    tuple(int(v) for v in p["center"]))
        m = np.asarray(p["affine"], np.float64)
        img, boxes = T.warp_affine(canvas, m, HW), T.affine_boxes(boxes, m, HW)
        if partner is not None:
            cp_img, cp_boxes = T.prescale(SOURCE[partner]["image"], SOURCE[partner]["boxes_xyxy"], HW)
            jit = float(p["jit"])
            jh, jw = int(HW[0] * jit), int(HW[1] * jit)
            crop = [int(p["crop"][1])] * (jh > HW[0]) + [int(p["crop"][0])] * (jw > HW[1])
            img, boxes, cls = mixup(img, boxes, cls, cp_img, cp_boxes, SOURCE[partner]["classes"],
                                    jit_factor=jit, flip=bool(p["mixup_flip"]), rng=_Fixed(crop))
    else:
        img, boxes, cls = pulled[0][0], pulled[0][1], classes[0]
    gains = np.asarray(p["hsv"], np.float64)
    uniform = (gains + 0.5 * np.sign(gains)) / np.array(opts.hsv_gains)
    rng = _Fixed(random=[0.0, 0.0 if bool(p["flip"]) else 1.0], uniform=uniform)
    return T.train_transform(img, boxes, cls, rng, HW, max_labels=M, flip_prob=0.5, hsv_prob=1.0)


# The official augmentation, and one without rotation, shear and HSV so that boxes are exact
# rectangles of unchanged colour.
FULL = D.AugmentOptions(input_hw=HW, max_labels=M, mosaic_scale=(0.5, 1.5))
GEOM = dataclasses.replace(FULL, degrees=0.0, shear=0.0, hsv_prob=0.0)


@pytest.fixture(scope="module")
def programs():
    return {o: (D.jit_augment_batch(o), jax.jit(lambda s, p, o=o: D.draw_batch_params(s, p, o)))
            for o in (FULL, GEOM)}


CASES = [  # (used images: 4 = mosaic, 1 = alone; MixUp partner)
    ([0, 1, 2, 3], None),
    ([3, 2, 1, 0], 4),
    ([3, 3, 3, 3], 4),  # 13 boxes for max_labels 8: the largest kept
    ([2], None),
]


@pytest.mark.parametrize("opts", [FULL, GEOM], ids=["official", "no-rotation"])
def test_boxes_equal_the_host_transform_for_the_same_parameters(programs, opts):
    augment, draw = programs[opts]
    truncated = 0
    for step in range(8):
        cases = [CASES[step % 4], CASES[(step + 1) % 4]]
        batch = _batch(*[_sample(u, c, step * 2 + i) for i, (u, c) in enumerate(cases)])
        out = jax.device_get(augment(batch, np.uint32(7)))
        params = jax.device_get(draw(np.uint32(7), batch["position"]))
        for i, (used, partner) in enumerate(cases):
            p = {k: v[i] for k, v in params.items()}
            image, labels, mask, dropped = _host_expected(used, partner, p, opts)
            truncated += dropped > 0
            assert (out["label_mask"][i] == mask).all(), (step, i)
            np.testing.assert_allclose(out["labels"][i], labels, atol=2e-3)
            # Pixels: OpenCV's fixed-point resampling and its HSV rounding move a few by a
            # level or two (more where a hue changes at an edge).
            diff = np.abs(out["images"][i].astype(int) - image)
            assert diff.mean() < 0.3 and (diff > 3).mean() < 0.01, (step, i, diff.mean())
    assert truncated


def test_boxes_stay_on_the_drawn_objects(programs):
    augment, _ = programs[GEOM]
    seen = 0
    for position in range(8):
        batch = _batch(_sample([0, 1, 2, 3], None, 2 * position),
                       _sample([3, 0, 2, 1], None, 2 * position + 1))
        out = jax.device_get(augment(batch, np.uint32(3)))
        for img, labels, mask in zip(out["images"], out["labels"], out["label_mask"]):
            for cls, cx, cy, w, h in labels[mask]:
                x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
                # Inside the box, 1 px in from its edges (bilinear edges), every pixel is the
                # object's colour (a box cut by the image border ends at the border).
                inner = img[int(np.ceil(y1)) + 1:int(np.floor(y2)) - 1,
                            int(np.ceil(x1)) + 1:int(np.floor(x2)) - 1]
                if inner.size:
                    np.testing.assert_array_equal(inner.reshape(-1, 3) - COLOURS[int(cls)], 0)
                    seen += 1
    assert seen > 20


def test_filter_padding_and_fallbacks_follow_the_host_rules(programs):
    augment, draw = programs[FULL]
    # One sample alone (no mosaic): slot 0 with a 4 px and a 24 px box; a 1 px box is dropped.
    batch = _batch(_sample([1], None, 0), _sample([5], None, 1))
    out = jax.device_get(augment(batch, np.uint32(0)))
    params = jax.device_get(draw(np.uint32(0), batch["position"]))
    image, labels, mask, _ = _host_expected([1], None, {k: v[0] for k, v in params.items()}, FULL)
    assert out["label_mask"][0].tolist() == mask.tolist() == [True] + [False] * (M - 1)
    np.testing.assert_allclose(out["labels"][0], labels, atol=1e-4)
    assert out["labels"][0, 0, 0] == 2 and (out["labels"][0, 1:] == 0).all()
    # Only a tiny box: the un-augmented (letterboxed) image and the box unfiltered.
    assert out["label_mask"][1].sum() == 1
    np.testing.assert_allclose(out["labels"][1, 0], [3, 10.5, 25, 1, 30])
    np.testing.assert_array_equal(out["images"][1], batch["tiles"][1, 0])
    # No boxes at all: letterbox only (no HSV, no flip), empty labels.
    batch = _batch(_sample([6], None, 2), _sample([0, 6, 6, 6], None, 3))
    out = jax.device_get(augment(batch, np.uint32(0)))
    np.testing.assert_array_equal(out["images"][0], batch["tiles"][0, 0])
    assert not out["label_mask"][0].any() and (out["labels"][0] == 0).all()


def test_more_boxes_than_max_labels_keep_the_largest_in_input_order():
    n = 12
    classes = np.arange(n, dtype=np.int32)
    rng = np.random.default_rng(0)
    boxes = np.stack([rng.uniform(0, 60, n), rng.uniform(0, 60, n), rng.uniform(1, 30, n),
                      rng.uniform(1, 30, n)], -1).astype(np.float32)
    boxes[3, 2:] = boxes[5, 2:]  # equal areas: the earlier one first
    valid = np.ones(n, bool)
    valid[[1, 7]] = False
    labels, mask = jax.jit(D.pad_labels, static_argnums=3)(classes, boxes, valid, M)
    want, want_mask, dropped = T.pad_labels(classes[valid], boxes[valid], M)
    assert dropped == 2
    np.testing.assert_array_equal(np.asarray(mask), want_mask)
    np.testing.assert_allclose(np.asarray(labels), want)


def test_same_seed_and_step_give_the_same_batch_bitwise(programs):
    augment, _ = programs[FULL]

    def step(s):
        return _batch(_sample([0, 1, 2, 3], 4, 2 * s), _sample([3, 1, 0, 2], 4, 2 * s + 1))

    a = jax.device_get(augment(step(5), np.uint32(1)))
    b = jax.device_get(augment(step(5), np.uint32(1)))
    c = jax.device_get(augment(step(6), np.uint32(1)))
    d = jax.device_get(augment(step(5), np.uint32(2)))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["images"], c["images"])
    assert not np.array_equal(a["images"], d["images"])
    # A row's result depends on its own position only, not on its batch.
    row = jax.device_get(augment(_batch(_sample([3, 1, 0, 2], 4, 11), _sample([0], None, 99)),
                                 np.uint32(1)))
    np.testing.assert_array_equal(row["images"][0], a["images"][1])


def test_hsv_matches_opencv_within_one_level():
    rng = np.random.default_rng(0)
    # 128 px rows: OpenCV 5.1 converts short rows (<= 32 px) another way, rounding.
    img = rng.integers(0, 256, (16, 128, 3), dtype=np.uint8)
    hsv = jax.jit(D.augment_hsv)
    for gains in [(3, -20, 10), (-5, 30, -30), (0, 0, 0)]:
        want = T.augment_hsv(img, np.array(gains, np.int16))
        got = np.asarray(hsv(img, np.array(gains, np.int32)))
        diff = np.abs(got.astype(int) - want)
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01, gains


def test_host_rows_from_the_pipeline_have_fixed_shapes():
    row = _host()(3, 2)
    assert row["tiles"].shape == (5, *HW, 3) and row["tile_boxes"].shape == (5, M, 4)
    assert bool(row["use_mosaic"]) and int(row["position"]) == 3
    # Slot 0 is the letterboxed image itself: what TrainTransform starts from without mosaic.
    want, _ = T.letterbox(T.prescale(SOURCE[2]["image"], SOURCE[2]["boxes_xyxy"], HW)[0], HW)
    np.testing.assert_array_equal(row["tiles"][0], want)


def _tiny_config(augment_on):
    from yolox_jax.config import apply_overrides, load_config

    cfg = load_config(None)
    apply_overrides(cfg, [
        "data.synthetic_train_images=8", "data.synthetic_val_images=0",
        "data.synthetic_image_size=(48,64)", "data.input_size=(64,64)", "data.test_size=(64,64)",
        "data.batch_size=2", f"data.max_labels={M}", "data.num_workers=0", "data.mosaic_prob=1.0",
        "data.enable_mixup=true", f"data.augment_on={augment_on}"])
    return cfg


def test_training_inputs_give_the_step_its_usual_batch_and_resume_exactly():
    """The wiring of ``train/loop.py``: ``train_iterator`` + ``batch_preparer`` give, in device
    mode, batches of the host mode's shapes and dtypes (the same step programs), the same batch
    again when the stream restarts at that step, and host batches in the no-aug phase."""
    from yolox_jax.errors import UserError
    from yolox_jax.train import inputs
    from yolox_jax.train.sharding import make_mesh

    mesh = make_mesh()
    host_cfg, cfg = _tiny_config("host"), _tiny_config("device")
    source, _ = inputs.build_sources(cfg.data)
    shapes = lambda b: {k: (v.shape, v.dtype) for k, v in b.items()}  # noqa: E731
    host = inputs.batch_preparer(host_cfg, mesh)(next(inputs.train_iterator(host_cfg, source, "aug", 2)))

    prepare = inputs.batch_preparer(cfg, mesh)
    it = inputs.train_iterator(cfg, source, "aug", 2)
    batches = [jax.device_get(prepare(next(it))) for _ in range(3)]
    assert shapes(batches[0]) == shapes(jax.device_get(host))
    assert batches[0]["label_mask"].any()
    resumed = jax.device_get(prepare(next(inputs.train_iterator(cfg, source, "aug", 2, start_batch=2))))
    for k in resumed:
        np.testing.assert_array_equal(resumed[k], batches[2][k])
    no_aug = next(inputs.train_iterator(cfg, source, "no_aug", 2))
    assert "images" in no_aug and "tiles" not in no_aug
    assert shapes(jax.device_get(prepare(no_aug))) == shapes(batches[0])

    cfg.data.augment_on = "gpu"
    with pytest.raises(UserError, match="augment_on"):
        inputs.batch_preparer(cfg, mesh)


# ----------------------------------------------------------------------------- data.device_partners=batch

class _Counting:
    """Wraps a source and counts the images read (``source[i]``)."""

    def __init__(self, source):
        self.source, self.reads = source, 0
        self.box_counts = source.box_counts

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        self.reads += 1
        return self.source[i]

    def get_annotation(self, i):
        return self.source.get_annotation(i)


def _own(index, position, use_mixup=True):
    """A one-slot row (``partners="batch"``) of source image ``index``."""
    row = _sample([index], None, position)
    return {**{k: row[k][:1] for k in D._SLOT_KEYS}, "use_mosaic": np.bool_(True),
            "use_mixup": np.bool_(use_mixup), "position": np.uint32(position)}


@pytest.fixture(scope="module")
def gather():
    return jax.jit(D.gather_partners)


def test_gathered_slots_are_the_batch_rows_at_the_drawn_indices(gather):
    batch = _batch(_own(0, 10), _own(6, 11), _own(2, 12))  # row 1 has no boxes
    out = jax.device_get(gather(batch, np.uint32(4)))
    rows = out["partner_rows"]
    assert rows.shape == (3, 5) and (rows[:, 0] == [0, 1, 2]).all()
    assert (rows[:, 1:4] != np.arange(3)[:, None]).all()  # mosaic tiles: other rows
    for k in D._SLOT_KEYS:
        want = np.stack([batch[k][rows[i], 0] for i in range(3)])
        np.testing.assert_array_equal(out[k], want, err_msg=k)
    # The MixUp partner is another row with boxes; row 1 (no boxes) is never one.
    assert (rows[:, 4] != 1).all() and rows[0, 4] == 2 and rows[2, 4] == 0
    assert out["use_mixup"].all() and (out["position"] == batch["position"]).all()
    seen = set()
    for step in range(6):
        b = {**batch, "position": batch["position"] + np.uint32(3 * step)}
        r = jax.device_get(gather(b, np.uint32(4)))["partner_rows"]
        assert (r[:, 4] != 1).all()
        seen.update(map(int, r[:, 1:4].ravel()))
    assert seen == {0, 1, 2}


def test_mixup_needs_a_partner_with_boxes(gather):
    # No row has boxes: no MixUp. Only row 1 has boxes: it is its own partner, the others'.
    none = jax.device_get(gather(_batch(_own(6, 0), _own(6, 1), _own(6, 2)), np.uint32(0)))
    assert not none["use_mixup"].any()
    one = jax.device_get(gather(_batch(_own(6, 0), _own(2, 1), _own(6, 2, use_mixup=False)),
                                np.uint32(0)))
    assert (one["partner_rows"][:, 4] == 1).all()
    # Row 0's mosaic has boxes only if a tile is row 1; row 2 did not draw MixUp.
    assert one["use_mixup"].tolist() == [bool((one["partner_rows"][0, :4] == 1).any()), True, False]
    # A batch of one: the image is its own partner everywhere.
    alone = jax.device_get(jax.jit(D.gather_partners)(_batch(_own(0, 5)), np.uint32(0)))
    assert (alone["partner_rows"] == 0).all() and alone["use_mixup"].all()


def test_batch_partners_are_deterministic_per_seed_and_position():
    augment = D.jit_augment_batch(FULL, partners="batch")

    def step(s):
        return _batch(_own(0, 3 * s), _own(3, 3 * s + 1), _own(2, 3 * s + 2))

    a = jax.device_get(augment(step(5), np.uint32(1)))
    b = jax.device_get(augment(step(5), np.uint32(1)))
    c = jax.device_get(augment(step(6), np.uint32(1)))
    assert a["images"].shape == (3, *HW, 3) and a["labels"].shape == (3, M, 5)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["images"], c["images"])
    with pytest.raises(ValueError, match="partners"):
        D.jit_augment_batch(FULL, partners="global")


def test_host_rows_in_batch_mode_decode_one_image_each():
    source = _Counting(SOURCE)
    sample = dataclasses.replace(_host(), source=source, partners="batch")
    rows = [sample(p, p % len(SOURCE)) for p in range(10)]
    assert source.reads == 10
    assert rows[0]["tiles"].shape == (1, *HW, 3) and rows[0]["tile_boxes"].shape == (1, M, 4)
    want, _ = T.letterbox(T.prescale(SOURCE[2]["image"], SOURCE[2]["boxes_xyxy"], HW)[0], HW)
    np.testing.assert_array_equal(rows[2]["tiles"][0], want)
    assert all(bool(r["use_mosaic"]) for r in rows) and int(rows[3]["position"]) == 3
    # Through the pipeline: one read per row of a batch.
    from yolox_jax.data import train_dataset

    source.reads = 0
    batch = train_dataset(source, input_size=HW, batch_size=3, max_labels=M, augment_on="device",
                          device_partners="batch")[1]
    assert source.reads == 3 and batch["tiles"].shape == (3, 1, *HW, 3)
    # The dataset mode reads 4 or 5 images per sample.
    source.reads = 0
    dataclasses.replace(_host(), source=source)(0, 0)
    assert source.reads >= 4


def test_device_partners_is_checked():
    from yolox_jax.errors import UserError
    from yolox_jax.train import inputs
    from yolox_jax.train.sharding import make_mesh

    cfg = _tiny_config("device")
    cfg.data.device_partners = "global"
    with pytest.raises(UserError, match="data.device_partners"):
        inputs.batch_preparer(cfg, make_mesh())
