"""Box utilities on plain arrays. Boxes are ``cx, cy, w, h`` unless the name says ``xyxy``."""
from __future__ import annotations

import jax.numpy as jnp


def cxcywh_to_xyxy(boxes):
    """[..., 4] cxcywh -> [..., 4] x1y1x2y2."""
    cxcy, wh = boxes[..., :2], boxes[..., 2:4]
    return jnp.concatenate([cxcy - wh / 2, cxcy + wh / 2], axis=-1)


def xyxy_to_cxcywh(boxes):
    """[..., 4] x1y1x2y2 -> [..., 4] cxcywh."""
    x1y1, x2y2 = boxes[..., :2], boxes[..., 2:4]
    return jnp.concatenate([(x1y1 + x2y2) / 2, x2y2 - x1y1], axis=-1)


def pairwise_iou_cxcywh(a, b):
    """IoU of every box in ``a`` [N, 4] with every box in ``b`` [M, 4], both cxcywh -> [N, M].

    Same arithmetic as the official ``bboxes_iou(xyxy=False)``: intersection is zero unless the
    top-left corner is strictly before the bottom-right one, and there is no epsilon in the
    denominator (so two zero-area boxes give NaN, as in the official code).
    """
    a = a[:, None, :]
    b = b[None, :, :]
    tl = jnp.maximum(a[..., :2] - a[..., 2:4] / 2, b[..., :2] - b[..., 2:4] / 2)
    br = jnp.minimum(a[..., :2] + a[..., 2:4] / 2, b[..., :2] + b[..., 2:4] / 2)
    area_a = a[..., 2] * a[..., 3]
    area_b = b[..., 2] * b[..., 3]
    inside = jnp.all(tl < br, axis=-1)
    area_i = jnp.prod(br - tl, axis=-1) * inside
    return area_i / (area_a + area_b - area_i)


def pairwise_iou_xyxy(a, b, eps: float = 0.0):
    """IoU of every box in ``a`` [N, 4] with every box in ``b`` [M, 4], both xyxy -> [N, M].

    torchvision ``box_iou`` semantics: intersection width/height clamped at zero.
    """
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = jnp.maximum(a[:, None, :2], b[None, :, :2])
    rb = jnp.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = jnp.clip(rb - lt, 0.0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[:, None] + area_b[None, :] - inter + eps)
