"""Mosaic and MixUp with the official YOLOX semantics (docs/official-behaviour.md §5.2).

Pure functions over numpy arrays: images uint8 [h, w, 3] RGB, boxes float32 [n, 4] xyxy pixels of
their image, classes int32 [n].  The random choices (centre, jitter, flip, crop offset) are
arguments or drawn from an explicit Generator, so tests can pin them.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from yolox_jax.data.transforms import PAD_VALUE, letterbox_ratio, resize_by


def mosaic_center(rng: np.random.Generator, input_hw) -> tuple[int, int]:
    """(xc, yc) = (int(U(0.5W, 1.5W)), int(U(0.5H, 1.5H))): where the 4 tiles meet."""
    H, W = input_hw
    yc = int(rng.uniform(0.5 * H, 1.5 * H))
    xc = int(rng.uniform(0.5 * W, 1.5 * W))
    return xc, yc


def mosaic_tile(i: int, xc: int, yc: int, w: int, h: int, input_hw):
    """Where tile ``i`` (0 TL, 1 TR, 2 BL, 3 BR) of size (h, w) goes on the 2H x 2W canvas.

    Returns (canvas x1, y1, x2, y2), (tile x1, y1, x2, y2): the tile touches the centre with the
    corner opposite its name and is cropped to the canvas.
    """
    H, W = input_hw
    if i == 0:
        dst = (max(xc - w, 0), max(yc - h, 0), xc, yc)
        src = (w - (dst[2] - dst[0]), h - (dst[3] - dst[1]), w, h)
    elif i == 1:
        dst = (xc, max(yc - h, 0), min(xc + w, 2 * W), yc)
        src = (0, h - (dst[3] - dst[1]), min(w, dst[2] - dst[0]), h)
    elif i == 2:
        dst = (max(xc - w, 0), yc, xc, min(2 * H, yc + h))
        src = (w - (dst[2] - dst[0]), 0, w, min(dst[3] - dst[1], h))
    elif i == 3:
        dst = (xc, yc, min(xc + w, 2 * W), min(2 * H, yc + h))
        src = (0, 0, min(w, dst[2] - dst[0]), min(dst[3] - dst[1], h))
    else:
        raise ValueError(f"mosaic tile index must be 0..3, got {i}")
    return dst, src


def mosaic(images: Sequence[np.ndarray], boxes: Sequence[np.ndarray], classes: Sequence[np.ndarray],
           input_hw, center_xy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pastes 4 images around ``center_xy`` on a 114-filled [2H, 2W, 3] canvas.

    Each image is first resized by min(H/h, W/w) (≈1 for pre-scaled images).  Boxes are shifted
    with their tile and clipped to [0, 2W] x [0, 2H] — no filtering here (official).
    Returns (canvas [2H, 2W, 3] uint8, boxes [sum n, 4], classes [sum n]).
    """
    H, W = int(input_hw[0]), int(input_hw[1])
    xc, yc = center_xy
    canvas = np.full((2 * H, 2 * W, 3), PAD_VALUE, np.uint8)
    all_boxes, all_classes = [], []
    for i, (img, b, c) in enumerate(zip(images, boxes, classes)):
        scale = letterbox_ratio(img.shape[:2], (H, W))
        img = resize_by(img, scale)
        h, w = img.shape[:2]
        (dx1, dy1, dx2, dy2), (sx1, sy1, sx2, sy2) = mosaic_tile(i, xc, yc, w, h, (H, W))
        canvas[dy1:dy2, dx1:dx2] = img[sy1:sy2, sx1:sx2]
        pad_x, pad_y = dx1 - sx1, dy1 - sy1
        b = np.asarray(b, np.float32).reshape(-1, 4) * np.float32(scale)
        all_boxes.append(b + np.array([pad_x, pad_y, pad_x, pad_y], np.float32))
        all_classes.append(np.asarray(c, np.int32).reshape(-1))
    out_boxes = np.concatenate(all_boxes, 0)
    out_boxes[:, 0::2] = out_boxes[:, 0::2].clip(0, 2 * W)
    out_boxes[:, 1::2] = out_boxes[:, 1::2].clip(0, 2 * H)
    return canvas, out_boxes, np.concatenate(all_classes, 0)


def mixup(image: np.ndarray, boxes: np.ndarray, classes: np.ndarray,
          cp_image: np.ndarray, cp_boxes: np.ndarray, cp_classes: np.ndarray,
          *, jit_factor: float, flip: bool, rng: np.random.Generator):
    """Official MixUp: blend a letterboxed, jittered, maybe flipped second image 50/50 into ``image``.

    image [H, W, 3] (the mosaic+affine output), cp_image [h, w, 3] with its own boxes/classes.
    The second image is letterboxed to (H, W), resized by ``jit_factor`` (bilinear), flipped, put
    on a **zero**-filled canvas of size max(jittered, target) and, if larger than the target,
    cropped at a random offset ``integers(0, size - target)`` (``rng`` is used only then).
    Its boxes are scaled, clipped to the jittered image, flipped, shifted, clipped to [0, W]x[0, H].
    Returns (uint8(0.5 * image + 0.5 * cp) [H, W, 3], boxes [n + m, 4], classes [n + m]).
    """
    H, W = image.shape[:2]
    r = letterbox_ratio(cp_image.shape[:2], (H, W))
    resized = resize_by(cp_image, r)
    cp = np.full((H, W, 3), PAD_VALUE, np.uint8)
    cp[:resized.shape[0], :resized.shape[1]] = resized[:H, :W]
    jh, jw = int(H * jit_factor), int(W * jit_factor)
    cp = cv2.resize(cp, (jw, jh), interpolation=cv2.INTER_LINEAR)
    r *= jit_factor
    if flip:
        cp = cp[:, ::-1]
    canvas = np.zeros((max(jh, H), max(jw, W), 3), np.uint8)
    canvas[:jh, :jw] = cp
    y_off = int(rng.integers(0, canvas.shape[0] - H)) if canvas.shape[0] > H else 0
    x_off = int(rng.integers(0, canvas.shape[1] - W)) if canvas.shape[1] > W else 0
    cropped = canvas[y_off:y_off + H, x_off:x_off + W]

    b = np.asarray(cp_boxes, np.float32).reshape(-1, 4) * np.float32(r)
    b[:, 0::2] = b[:, 0::2].clip(0, jw)
    b[:, 1::2] = b[:, 1::2].clip(0, jh)
    if flip:
        b[:, [0, 2]] = jw - b[:, [2, 0]]
    b[:, 0::2] = (b[:, 0::2] - x_off).clip(0, W)
    b[:, 1::2] = (b[:, 1::2] - y_off).clip(0, H)
    # uint8(0.5 a + 0.5 b) == floor((a + b) / 2) for integers: same result without float images.
    blended = ((image.astype(np.uint16) + cropped) >> 1).astype(np.uint8)
    return (blended, np.concatenate([np.asarray(boxes, np.float32).reshape(-1, 4), b], 0),
            np.concatenate([np.asarray(classes, np.int32).reshape(-1), np.asarray(cp_classes, np.int32).reshape(-1)]))
