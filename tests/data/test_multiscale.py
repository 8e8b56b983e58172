"""Multiscale sizes and the on-device batch resize (docs/official-behaviour.md §4)."""
import cv2
import jax
import numpy as np
import pytest

from yolox_jax.data import multiscale_sizes, random_multiscale_size, resize_batch


def test_sizes_official_ranges():
    sizes = multiscale_sizes((640, 640), 5)
    assert sizes[0] == (480, 480) and sizes[-1] == (800, 800) and len(sizes) == 11
    assert multiscale_sizes((640, 640), 0) == [(640, 640)]
    assert multiscale_sizes((416, 416), 5) == [(32 * s, 32 * s) for s in range(8, 19)]
    # Non-square: width = 32 * int(size * W / H).
    assert multiscale_sizes((480, 640), 1) == [(448, 32 * int(14 * 640 / 480)), (480, 640), (512, 32 * int(16 * 640 / 480))]
    assert random_multiscale_size(np.random.default_rng(0), (640, 640)) in sizes


@pytest.mark.parametrize("new_hw", [(48, 40), (80, 96)])
def test_resize_batch_matches_half_pixel_bilinear_and_scales_labels(new_hw):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    labels = np.zeros((2, 4, 5), np.float32)
    labels[:, 0] = [1, 32, 16, 8, 4]
    out, lab = jax.jit(resize_batch, static_argnums=2)(images, labels, new_hw)
    assert out.shape == (2, *new_hw, 3)
    # cv2 INTER_LINEAR = half-pixel centres, 2-tap, no antialias (same as torch align_corners=False)
    # for scale factors in (0.5, 2).
    ref = cv2.resize(images[0], (new_hw[1], new_hw[0]), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(np.asarray(out[0]), ref, atol=0.05)
    sy, sx = new_hw[0] / 64, new_hw[1] / 64
    np.testing.assert_allclose(np.asarray(lab[:, 0]), [[1, 32 * sx, 16 * sy, 8 * sx, 4 * sy]] * 2, rtol=1e-6)
    assert (np.asarray(lab[:, 1:]) == 0).all()


def test_resize_batch_accepts_uint8_and_same_size():
    images = np.zeros((1, 32, 32, 3), np.uint8)
    out, lab = resize_batch(images, np.ones((1, 2, 5), np.float32), (32, 32))
    assert out.dtype == np.float32 and np.asarray(lab).tolist() == np.ones((1, 2, 5)).tolist()
