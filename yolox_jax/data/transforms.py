"""Per-image transforms with the official YOLOX semantics (docs/official-behaviour.md §5.2–5.4).

Pure functions over numpy arrays.  Images are uint8 [h, w, 3] **RGB**; boxes are float32 [n, 4]
``x1, y1, x2, y2`` in pixels of the image they come with; classes int32 [n].  Randomness comes in
through an explicit ``np.random.Generator`` (or as already-drawn parameters, so that tests can pin
them).
"""
from __future__ import annotations

import math

import cv2
import numpy as np

PAD_VALUE = 114


# ----------------------------------------------------------------------------- resizing / letterbox

def resize_by(image: np.ndarray, r: float) -> np.ndarray:
    """[h, w, 3] -> [int(h*r), int(w*r), 3], bilinear (cv2.INTER_LINEAR), floor sizes as official."""
    h, w = image.shape[:2]
    new_w, new_h = int(w * r), int(h * r)
    if (new_h, new_w) == (h, w):
        return image
    return cv2.resize(image, (max(new_w, 1), max(new_h, 1)), interpolation=cv2.INTER_LINEAR)


def letterbox_ratio(hw, input_hw) -> float:
    """r = min(H / h, W / w): the scale that fits an (h, w) image into (H, W)."""
    return min(input_hw[0] / hw[0], input_hw[1] / hw[1])


def letterbox(image: np.ndarray, input_hw) -> tuple[np.ndarray, float]:
    """Official ``preproc``: resize by r = min(H/h, W/w), paste top-left on a 114 canvas.

    image [h, w, 3] uint8 -> ([H, W, 3] uint8, r).  Boxes follow as ``boxes * r`` (no offset,
    because padding is only bottom/right).
    """
    H, W = int(input_hw[0]), int(input_hw[1])
    r = letterbox_ratio(image.shape[:2], (H, W))
    resized = resize_by(image, r)
    out = np.full((H, W, 3), PAD_VALUE, np.uint8)
    rh, rw = min(resized.shape[0], H), min(resized.shape[1], W)
    out[:rh, :rw] = resized[:rh, :rw]
    return out, r


def prescale(image: np.ndarray, boxes: np.ndarray, input_hw) -> tuple[np.ndarray, np.ndarray]:
    """The official dataset's load-time resize (COCODataset.load_resized_img, §5.1).

    image [h, w, 3] -> [int(h*r), int(w*r), 3] with r = min(H/h, W/w); boxes [n, 4] * r.
    Mosaic and the no-mosaic path both start from this, as in the official pull_item.
    """
    r = letterbox_ratio(image.shape[:2], input_hw)
    return resize_by(image, r), (boxes * np.float32(r)).astype(np.float32)


# ----------------------------------------------------------------------------- photometric

def hsv_gains(rng: np.random.Generator, hgain: float = 5, sgain: float = 30, vgain: float = 30) -> np.ndarray:
    """int16 [3] (dh, ds, dv): U(-1, 1) * gain, each zeroed with prob 0.5, truncated to int."""
    gains = rng.uniform(-1, 1, 3) * np.array([hgain, sgain, vgain])
    gains *= rng.integers(0, 2, 3)
    return gains.astype(np.int16)


def augment_hsv(image: np.ndarray, gains) -> np.ndarray:
    """Shifts OpenCV 8-bit HSV (H in [0, 180)): H wraps mod 180, S and V clip to [0, 255].

    image [h, w, 3] uint8 RGB -> same shape/dtype, new array.  Zero gains return the input
    unchanged: the official code still does the lossy 8-bit HSV round trip in that case, which only
    adds rounding noise.
    """
    gains = np.asarray(gains, np.int16)
    if not gains.any():
        return image.copy()
    # Per-channel lookup tables give exactly the int16 arithmetic of the official code, ~3x faster.
    x = np.arange(256, dtype=np.int16)
    lut = np.stack([(x + gains[0]) % 180,  # only 0..179 occur as input hue
                    np.clip(x + gains[1], 0, 255),
                    np.clip(x + gains[2], 0, 255)], -1).astype(np.uint8)[:, None, :]  # [256, 1, 3]
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    return cv2.cvtColor(cv2.LUT(hsv, lut), cv2.COLOR_HSV2RGB)


# ----------------------------------------------------------------------------- geometric

def hflip(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right: x1' = W - x2, x2' = W - x1.  image [h, w, 3], boxes [n, 4] xyxy."""
    w = image.shape[1]
    out = boxes.copy()
    out[:, 0] = w - boxes[:, 2]
    out[:, 2] = w - boxes[:, 0]
    return np.ascontiguousarray(image[:, ::-1]), out


def affine_matrix(rng: np.random.Generator, target_hw, *, degrees: float = 10.0, translate: float = 0.1,
                  scales=(0.1, 2.0), shear: float = 2.0) -> np.ndarray:
    """float64 [2, 3]: random rotation+scale about the origin, shear, translation (§5.2).

    Draw order: angle ~ U(-degrees, degrees), scale ~ U(scales) (or U(1-s, 1+s) for a float),
    shear_x, shear_y ~ tan(U(-shear, shear) deg), tx ~ U(-t, t) * W, ty ~ U(-t, t) * H.
    R = cv2.getRotationMatrix2D((0, 0), angle, scale) = [[a, b, 0], [-b, a, 0]];
    M[0] = R[0] + shear_y * R[1], M[1] = R[1] + shear_x * R[0], M[:, 2] = (tx, ty).
    """
    H, W = target_hw
    angle = rng.uniform(-degrees, degrees)
    if np.isscalar(scales):
        scale = rng.uniform(1 - scales, 1 + scales)
    else:
        scale = rng.uniform(scales[0], scales[1])
    if scale <= 0:
        raise ValueError(f"affine scale must be positive, got {scale} from {scales}")
    shear_x = math.tan(math.radians(rng.uniform(-shear, shear)))
    shear_y = math.tan(math.radians(rng.uniform(-shear, shear)))
    tx = rng.uniform(-translate, translate) * W
    ty = rng.uniform(-translate, translate) * H
    return compose_affine(angle, scale, shear_x, shear_y, tx, ty)


def compose_affine(angle_deg: float, scale: float, shear_x: float, shear_y: float, tx: float, ty: float) -> np.ndarray:
    """The official matrix from already-drawn parameters (see ``affine_matrix``); float64 [2, 3]."""
    a = scale * math.cos(math.radians(angle_deg))
    b = scale * math.sin(math.radians(angle_deg))
    r0 = np.array([a, b, 0.0])
    r1 = np.array([-b, a, 0.0])
    m = np.stack([r0 + shear_y * r1, r1 + shear_x * r0])
    m[:, 2] = (tx, ty)
    return m


def warp_affine(image: np.ndarray, m: np.ndarray, target_hw) -> np.ndarray:
    """cv2.warpAffine of [h, w, 3] into [H, W, 3] (bilinear, outside = 114)."""
    H, W = int(target_hw[0]), int(target_hw[1])
    return cv2.warpAffine(image, m, dsize=(W, H), borderValue=(PAD_VALUE,) * 3)


def affine_boxes(boxes: np.ndarray, m: np.ndarray, target_hw) -> np.ndarray:
    """[n, 4] xyxy -> [n, 4]: transform the 4 corners, take min/max, clip to [0, W] x [0, H].

    No area filter (degenerate boxes survive until the tiny-box filter in ``train_transform``).
    """
    H, W = target_hw
    if len(boxes) == 0:
        return boxes.reshape(0, 4).astype(np.float32)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    corners = np.stack([np.stack([x1, y1], -1), np.stack([x2, y2], -1),
                        np.stack([x1, y2], -1), np.stack([x2, y1], -1)], 1).astype(np.float64)  # [n, 4, 2]
    pts = corners @ m[:, :2].T + m[:, 2]
    out = np.concatenate([pts.min(1), pts.max(1)], -1)
    out[:, 0::2] = out[:, 0::2].clip(0, W)
    out[:, 1::2] = out[:, 1::2].clip(0, H)
    return out.astype(np.float32)


def random_affine(image, boxes, rng, target_hw, *, degrees=10.0, translate=0.1, scales=(0.1, 2.0), shear=2.0):
    """image [h, w, 3] (the 2H x 2W mosaic canvas) -> ([H, W, 3], boxes [n, 4] clipped)."""
    m = affine_matrix(rng, target_hw, degrees=degrees, translate=translate, scales=scales, shear=shear)
    return warp_affine(image, m, target_hw), affine_boxes(boxes, m, target_hw)


# ----------------------------------------------------------------------------- labels

def xyxy_to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    out = np.empty_like(boxes)
    out[:, 0] = (boxes[:, 0] + boxes[:, 2]) * 0.5
    out[:, 1] = (boxes[:, 1] + boxes[:, 3]) * 0.5
    out[:, 2] = boxes[:, 2] - boxes[:, 0]
    out[:, 3] = boxes[:, 3] - boxes[:, 1]
    return out


def pad_labels(classes: np.ndarray, boxes_cxcywh: np.ndarray, max_labels: int):
    """-> (labels float32 [M, 5] rows (cls, cx, cy, w, h), mask bool [M], number of boxes dropped).

    More than ``max_labels`` boxes: keep the largest (by w*h) rather than the official "first
    120", so crowded images lose their smallest, least reliable boxes; kept rows stay in input
    order.
    """
    n = len(classes)
    dropped = max(0, n - max_labels)
    if dropped:
        area = boxes_cxcywh[:, 2] * boxes_cxcywh[:, 3]
        keep = np.sort(np.argsort(-area, kind="stable")[:max_labels])
        classes, boxes_cxcywh = classes[keep], boxes_cxcywh[keep]
        n = max_labels
    labels = np.zeros((max_labels, 5), np.float32)
    labels[:n, 0] = classes
    labels[:n, 1:] = boxes_cxcywh
    mask = np.zeros((max_labels,), bool)
    mask[:n] = True
    return labels, mask, dropped


def train_transform(image: np.ndarray, boxes: np.ndarray, classes: np.ndarray, rng: np.random.Generator,
                    input_hw, *, max_labels: int = 120, flip_prob: float = 0.5, hsv_prob: float = 1.0):
    """Official TrainTransform (§5.3): HSV, flip, letterbox, tiny-box filter, pad.

    image [h, w, 3] uint8 RGB, boxes [n, 4] xyxy, classes [n] ->
    (image [H, W, 3] uint8, labels float32 [M, 5] (cls, cx, cy, w, h) input px, mask bool [M],
    number of boxes dropped by the max_labels cap).
    No boxes: letterbox only.  If the filter ``min(w, h) > 1`` removes every box, fall back to
    the un-augmented image (no HSV/flip) and all its boxes, unfiltered (official behaviour).
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    classes = np.asarray(classes, np.int32).reshape(-1)
    if len(boxes) == 0:
        out, _ = letterbox(image, input_hw)
        return (out, np.zeros((max_labels, 5), np.float32), np.zeros((max_labels,), bool), 0)
    aug = image
    if rng.random() < hsv_prob:
        aug = augment_hsv(aug, hsv_gains(rng))
    aug_boxes = boxes
    if rng.random() < flip_prob:
        aug, aug_boxes = hflip(aug, boxes)
    out, r = letterbox(aug, input_hw)
    cxcywh = xyxy_to_cxcywh(aug_boxes) * np.float32(r)
    keep = np.minimum(cxcywh[:, 2], cxcywh[:, 3]) > 1
    if keep.any():
        return (out, *pad_labels(classes[keep], cxcywh[keep], max_labels))
    out, r = letterbox(image, input_hw)
    return (out, *pad_labels(classes, xyxy_to_cxcywh(boxes) * np.float32(r), max_labels))


def val_transform(image: np.ndarray, input_hw) -> tuple[np.ndarray, float]:
    """Official ValTransform (non-legacy): letterbox only.  -> ([H, W, 3] uint8, r)."""
    return letterbox(image, input_hw)
