"""Mosaic / MixUp label bookkeeping: boxes land where the pixels were pasted, counts add up."""
import numpy as np
import pytest

from yolox_jax.data.mosaic import mixup, mosaic, mosaic_tile

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]


def _tile(h, w, box, colour):
    img = np.full((h, w, 3), 40, np.uint8)
    x1, y1, x2, y2 = box
    img[y1:y2, x1:x2] = colour
    return img


def test_mosaic_tile_geometry_hand_computed():
    # 64x64 input, centre (40, 50), 64x64 tiles.
    assert mosaic_tile(0, 40, 50, 64, 64, (64, 64)) == ((0, 0, 40, 50), (24, 14, 64, 64))
    assert mosaic_tile(1, 40, 50, 64, 64, (64, 64)) == ((40, 0, 104, 50), (0, 14, 64, 64))
    assert mosaic_tile(2, 40, 50, 64, 64, (64, 64)) == ((0, 50, 40, 114), (24, 0, 64, 64))
    assert mosaic_tile(3, 40, 50, 64, 64, (64, 64)) == ((40, 50, 104, 114), (0, 0, 64, 64))


def test_mosaic_boxes_follow_pixels_and_clip():
    H = W = 64
    box = (10, 10, 30, 30)
    images = [_tile(64, 64, box, c) for c in COLOURS]
    boxes = [np.array([box], np.float32)] * 4
    classes = [np.array([i]) for i in range(4)]
    canvas, out, cls = mosaic(images, boxes, classes, (H, W), (40, 50))
    assert canvas.shape == (128, 128, 3) and len(out) == 4 and cls.tolist() == [0, 1, 2, 3]
    # Tile 0 shifted by (0 - 24, 0 - 14): [10, 10, 30, 30] -> [-14, -4, 6, 16] -> clipped [0, 0, 6, 16].
    np.testing.assert_allclose(out[0], [0, 0, 6, 16])
    np.testing.assert_allclose(out[1], [50, 0, 70, 16])  # shift (40, -14)
    np.testing.assert_allclose(out[2], [0, 60, 6, 80])  # shift (-24, 50)
    np.testing.assert_allclose(out[3], [50, 60, 70, 80])  # shift (40, 50)
    for b, colour in zip(out, COLOURS):
        x1, y1, x2, y2 = b.astype(int)
        assert (canvas[y1:y2, x1:x2] == colour).all()
    assert (canvas[114:] == 114).all() and (canvas[:, 104:] == 114).all()  # unfilled canvas stays 114


def test_mosaic_rescales_large_tiles_and_keeps_all_boxes():
    rng = np.random.default_rng(0)
    H, W = 48, 64
    images, boxes, classes = [], [], []
    for i in range(4):
        h, w = [(96, 128), (48, 64), (30, 40), (60, 60)][i]
        n = i + 1  # 1 + 2 + 3 + 4 = 10 boxes in total
        b = np.stack([rng.uniform(0, w / 2, n), rng.uniform(0, h / 2, n),
                      rng.uniform(w / 2, w, n), rng.uniform(h / 2, h, n)], 1).astype(np.float32)
        images.append(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        boxes.append(b)
        classes.append(np.full(n, i))
    canvas, out, cls = mosaic(images, boxes, classes, (H, W), (70, 40))
    assert len(out) == 10 and np.bincount(cls).tolist() == [1, 2, 3, 4]
    assert (out[:, 0::2] >= 0).all() and (out[:, 0::2] <= 2 * W).all()
    assert (out[:, 1::2] >= 0).all() and (out[:, 1::2] <= 2 * H).all()
    # Tile 0 (96x128) is rescaled by min(48/96, 64/128) = 0.5 before pasting at the top-left of the centre.
    s = 0.5
    pad = (max(70 - 64, 0) - (64 - 64), max(40 - 48, 0) - (48 - 40))  # dst x1 - src x1, dst y1 - src y1
    exp = boxes[0][0] * s + np.array([pad[0], pad[1], pad[0], pad[1]])
    exp[0::2] = exp[0::2].clip(0, 2 * W)
    exp[1::2] = exp[1::2].clip(0, 2 * H)
    np.testing.assert_allclose(out[0], exp, rtol=1e-6)


def test_mixup_flip_no_jitter_hand_computed():
    H = W = 64
    base = np.full((H, W, 3), 100, np.uint8)
    cp = _tile(64, 64, (10, 5, 20, 15), (200, 0, 0))
    img, boxes, cls = mixup(base, np.array([[1, 1, 5, 5]], np.float32), np.array([0]),
                            cp, np.array([[10, 5, 20, 15]], np.float32), np.array([2]),
                            jit_factor=1.0, flip=True, rng=np.random.default_rng(0))
    np.testing.assert_allclose(boxes, [[1, 1, 5, 5], [44, 5, 54, 15]])  # x' = 64 - x
    assert cls.tolist() == [0, 2]
    assert (img[5:15, 44:54] == [150, 50, 50]).all()  # uint8(0.5 * 100 + 0.5 * (200, 0, 0))
    np.testing.assert_array_equal(img[30, 30], [70, 70, 70])  # 0.5 * 100 + 0.5 * 40


def test_mixup_shrink_pads_with_zeros():
    H = W = 64
    base = np.full((H, W, 3), 100, np.uint8)
    cp = _tile(64, 64, (8, 8, 40, 40), (200, 200, 200))
    img, boxes, _ = mixup(base, np.zeros((0, 4), np.float32), np.zeros(0), cp,
                          np.array([[8, 8, 40, 40]], np.float32), np.array([1]),
                          jit_factor=0.5, flip=False, rng=np.random.default_rng(0))
    np.testing.assert_allclose(boxes, [[4, 4, 20, 20]])
    np.testing.assert_array_equal(img[50, 50], [50, 50, 50])  # zero canvas outside the 32x32 paste


@pytest.mark.parametrize("seed", range(4))
def test_mixup_enlarge_random_crop_boxes_on_pixels(seed):
    H, W = 64, 80
    base = np.zeros((H, W, 3), np.uint8)
    cp = np.zeros((48, 60, 3), np.uint8)
    cp[10:30, 20:44] = 250
    img, boxes, _ = mixup(base, np.zeros((0, 4), np.float32), np.zeros(0), cp,
                          np.array([[20, 10, 44, 30]], np.float32), np.array([0]),
                          jit_factor=1.45, flip=bool(seed % 2), rng=np.random.default_rng(seed))
    x1, y1, x2, y2 = boxes[0]
    assert x2 > x1 + 4 and y2 > y1 + 4
    # Two bilinear resizes (x1.33, x1.45) blur the edges by up to 3 px: compare away from them.
    inner = img[int(np.ceil(y1)) + 3:int(y2) - 3, int(np.ceil(x1)) + 3:int(x2) - 3]
    assert inner.size and (inner == 125).all()  # 0.5 * 250 everywhere inside the box
    mask = np.zeros((H, W), bool)
    mask[max(int(y1) - 2, 0):int(np.ceil(y2)) + 2, max(int(x1) - 2, 0):int(np.ceil(x2)) + 2] = True
    assert img[~mask].max() == 0  # and nowhere outside it
