"""Per-image transforms against hand-computed expectations (docs/official-behaviour.md §5.2–5.4)."""
import math

import cv2
import numpy as np
import pytest

from yolox_jax.data import transforms as T


def _canvas(h, w, value=0):
    return np.full((h, w, 3), value, np.uint8)


def test_letterbox_top_left_pad_and_ratio():
    img = np.random.default_rng(0).integers(0, 255, (50, 100, 3), dtype=np.uint8)
    out, r = T.letterbox(img, (64, 64))
    assert r == pytest.approx(0.64)  # min(64/50, 64/100)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    expected = cv2.resize(img, (64, 32), interpolation=cv2.INTER_LINEAR)  # (int(100*.64), int(50*.64))
    np.testing.assert_array_equal(out[:32], expected)
    assert (out[32:] == 114).all()
    # A box follows as box * r with no offset (padding is bottom/right only).
    box = np.array([10.0, 20.0, 30.0, 40.0])
    np.testing.assert_allclose(box * r, [6.4, 12.8, 19.2, 25.6])


def test_letterbox_upscales_and_floors_sizes():
    out, r = T.letterbox(_canvas(30, 45, 7), (64, 96))
    assert r == pytest.approx(min(64 / 30, 96 / 45))
    h, w = int(30 * r), int(45 * r)
    assert (out[:h, :w] == 7).all() and (out[h:] == 114).all() and (out[:, w:] == 114).all()


def test_hflip_known_box_and_pixels():
    img = _canvas(40, 100)
    img[20:60, 10:30] = 255  # box [10, 20, 30, 60] (rows beyond 40 are cut, fine)
    boxes = np.array([[10, 20, 30, 60]], np.float32)
    out, fb = T.hflip(img, boxes)
    np.testing.assert_array_equal(fb, [[70, 20, 90, 60]])  # x1' = W - x2, x2' = W - x1
    assert (out[20:40, 70:90] == 255).all() and out[20:40, :70].max() == 0 and out[20:40, 90:].max() == 0


def test_hsv_zero_gains_identity_and_dtype():
    img = np.random.default_rng(1).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    out = T.augment_hsv(img, [0, 0, 0])
    np.testing.assert_array_equal(out, img)
    out = T.augment_hsv(img, [3, -20, 25])
    assert out.shape == img.shape and out.dtype == np.uint8


def test_hsv_uses_rgb_order_and_opencv_hue_range():
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255  # pure red in RGB: OpenCV hue 0
    out = T.augment_hsv(red, [60, 0, 0])  # +60 of 180 = +120 degrees: green
    np.testing.assert_array_equal(out[0, 0], [0, 255, 0])
    out = T.augment_hsv(red, [-60, 0, 0])  # wraps mod 180 -> 120 -> blue
    np.testing.assert_array_equal(out[0, 0], [0, 0, 255])
    out = T.augment_hsv(red, [0, 0, -255])  # V clipped at 0
    np.testing.assert_array_equal(out[0, 0], [0, 0, 0])


def test_hsv_gains_distribution():
    rng = np.random.default_rng(0)
    g = np.stack([T.hsv_gains(rng) for _ in range(2000)])
    assert g.dtype == np.int16
    assert np.abs(g[:, 0]).max() <= 5 and np.abs(g[:, 1:]).max() <= 30
    assert 0.4 < (g[:, 1] == 0).mean() < 0.6  # zeroed with prob 0.5 (+ truncation of |x| < 1)


def test_affine_fixed_matrix_rotation_about_origin():
    # 90 degrees, scale 1: R = [[0, 1, 0], [-1, 0, 0]] -> x' = y, y' = -x; then translate y by 100.
    m = T.compose_affine(90.0, 1.0, 0.0, 0.0, 0.0, 100.0)
    np.testing.assert_allclose(m, [[0, 1, 0], [-1, 0, 100]], atol=1e-12)
    np.testing.assert_allclose(m[:, :2], cv2.getRotationMatrix2D((0, 0), 90.0, 1.0)[:, :2], atol=1e-12)
    boxes = np.array([[10, 20, 30, 60]], np.float32)
    out = T.affine_boxes(boxes, m, (128, 128))
    np.testing.assert_allclose(out, [[20, 70, 60, 90]], atol=1e-5)
    img = _canvas(128, 128)
    img[20:60, 10:30] = 200
    warped = T.warp_affine(img, m, (128, 128))
    assert (warped[72:88, 22:58] == 200).all()  # interior of the moved box
    assert warped[127, 0].tolist() == [114, 114, 114]  # maps from x = -27: outside -> border 114


def test_affine_scale_shear_and_clipping():
    s, shx, shy, tx, ty = 2.0, 0.1, 0.05, 3.0, -4.0
    m = T.compose_affine(0.0, s, shx, shy, tx, ty)
    # R = [[2, 0, 0], [0, 2, 0]]; M[0] = R[0] + shy * R[1]; M[1] = R[1] + shx * R[0]
    np.testing.assert_allclose(m, [[2, 2 * shy, tx], [2 * shx, 2, ty]])
    boxes = np.array([[10, 10, 20, 30]], np.float32)
    out = T.affine_boxes(boxes, m, (40, 50))  # target H=40, W=50
    xs = [2 * x + 2 * shy * y + tx for x in (10, 20) for y in (10, 30)]
    ys = [2 * shx * x + 2 * y + ty for x in (10, 20) for y in (10, 30)]
    expect = [max(min(xs), 0), max(min(ys), 0), min(max(xs), 50), min(max(ys), 40)]
    np.testing.assert_allclose(out[0], expect, rtol=1e-6)
    assert out[0, 3] == 40  # clipped to H


def test_affine_matrix_draw_order_and_ranges():
    rng = np.random.default_rng(5)
    m = T.affine_matrix(rng, (100, 200), degrees=10, translate=0.1, scales=(0.5, 1.5), shear=2.0)
    rng = np.random.default_rng(5)
    angle, scale = rng.uniform(-10, 10), rng.uniform(0.5, 1.5)
    shx, shy = math.tan(math.radians(rng.uniform(-2, 2))), math.tan(math.radians(rng.uniform(-2, 2)))
    tx, ty = rng.uniform(-0.1, 0.1) * 200, rng.uniform(-0.1, 0.1) * 100
    np.testing.assert_allclose(m, T.compose_affine(angle, scale, shx, shy, tx, ty))


def test_pad_labels_keeps_largest_and_counts():
    cls = np.arange(5, dtype=np.int32)
    boxes = np.array([[10, 10, w, w] for w in (3, 9, 1, 7, 5)], np.float32)
    labels, mask, dropped = T.pad_labels(cls, boxes, 3)
    assert dropped == 2 and mask.tolist() == [True, True, True]
    assert labels[:, 0].tolist() == [1, 3, 4]  # the three largest, input order kept
    labels, mask, dropped = T.pad_labels(cls[:2], boxes[:2], 4)
    assert dropped == 0 and mask.tolist() == [True, True, False, False] and (labels[2:] == 0).all()


def test_train_transform_no_aug_exact_labels():
    img = _canvas(50, 100, 30)
    boxes = np.array([[10, 20, 30, 40]], np.float32)
    out, labels, mask, dropped = T.train_transform(img, boxes, np.array([2]), np.random.default_rng(0), (64, 64),
                                                   max_labels=4, flip_prob=0.0, hsv_prob=0.0)
    np.testing.assert_array_equal(out, T.letterbox(img, (64, 64))[0])
    np.testing.assert_allclose(labels[0], [2, 20 * 0.64, 30 * 0.64, 20 * 0.64, 20 * 0.64], rtol=1e-6)
    assert mask.tolist() == [True, False, False, False] and dropped == 0


def test_train_transform_flip_applies_to_labels():
    img = _canvas(64, 64)
    boxes = np.array([[4, 8, 20, 40]], np.float32)
    _, labels, _, _ = T.train_transform(img, boxes, np.array([0]), np.random.default_rng(0), (64, 64),
                                        flip_prob=1.0, hsv_prob=0.0)
    np.testing.assert_allclose(labels[0], [0, 64 - 12, 24, 16, 32])


def test_train_transform_tiny_filter_and_fallback():
    img = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    rng = np.random.default_rng(0)
    # One good box, one 0.5 px wide: only the good one survives min(w, h) > 1.
    boxes = np.array([[4, 4, 30, 30], [40, 40, 40.5, 60]], np.float32)
    _, labels, mask, _ = T.train_transform(img, boxes, np.array([0, 1]), rng, (64, 64), hsv_prob=1.0, flip_prob=0.0)
    assert mask.sum() == 1 and labels[0, 0] == 0
    # All boxes tiny: fall back to the un-augmented image (no HSV, no flip) and its unfiltered boxes.
    tiny = np.array([[40, 40, 40.5, 60]], np.float32)
    out, labels, mask, _ = T.train_transform(img, tiny, np.array([1]), rng, (64, 64), hsv_prob=1.0, flip_prob=1.0)
    np.testing.assert_array_equal(out, img)
    np.testing.assert_allclose(labels[0], [1, 40.25, 50, 0.5, 20])
    assert mask.sum() == 1


def test_train_transform_empty_is_letterbox_only():
    img = _canvas(32, 64, 9)
    out, labels, mask, dropped = T.train_transform(img, np.zeros((0, 4)), np.zeros(0), np.random.default_rng(0),
                                                   (64, 64), max_labels=5)
    np.testing.assert_array_equal(out, T.letterbox(img, (64, 64))[0])
    assert labels.shape == (5, 5) and not mask.any() and dropped == 0


def test_prescale_matches_official_load_resize():
    img = _canvas(375, 500, 1)
    out, boxes = T.prescale(img, np.array([[0, 0, 100, 100]], np.float32), (640, 640))
    assert out.shape == (480, 640, 3)  # r = 1.28
    np.testing.assert_allclose(boxes, [[0, 0, 128, 128]])


@pytest.mark.parametrize("gains", [(5, 30, 30), (-5, -30, -30), (3, 0, -17), (0, 29, 0)])
def test_hsv_equals_official_int16_arithmetic(gains):
    img = np.random.default_rng(3).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    g = np.asarray(gains, np.int16)
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.int16)
    hsv[..., 0] = (hsv[..., 0] + g[0]) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] + g[1], 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] + g[2], 0, 255)
    np.testing.assert_array_equal(T.augment_hsv(img, g), cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB))
