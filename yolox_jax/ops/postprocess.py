"""Detections from decoded head outputs: score threshold + (Soft-)NMS, batched and jittable.

Same selection as the official ``postprocess`` (docs/official-behaviour.md §2): one label per box (the
best class), score = objectness * best class probability, keep if score >= conf_threshold, then
class-aware (torchvision ``batched_nms``) or class-agnostic NMS on that score. Differences, all
forced by static shapes: at most ``max_detections`` rows per image (the best ones; COCO
evaluation reads at most 100 anyway), padding rows carry ``valid=False``, and an image with no
survivors gives an all-invalid row set instead of ``None``.
"""
from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp

from yolox_jax.ops.boxes import cxcywh_to_xyxy
from yolox_jax.nms import first_argmax, nms_core


@flax.struct.dataclass
class Detections:
    """Post-processed detections, K = max_detections rows per image, sorted by score.

    boxes_xyxy [B, K, 4] network-input pixels; scores [B, K] = obj * class_conf, after the
    Soft-NMS decay when a soft method is used; classes [B, K] int32 (contiguous 0..C-1);
    valid [B, K] bool; obj [B, K] objectness; class_conf [B, K] best class probability.
    Padding rows (valid False) hold zeros and class -1.
    """

    boxes_xyxy: jax.Array
    scores: jax.Array
    classes: jax.Array
    valid: jax.Array
    obj: jax.Array
    class_conf: jax.Array


@functools.partial(jax.jit, static_argnames=("conf_threshold", "nms_threshold", "class_agnostic",
                                             "max_detections", "method", "sigma"))
def _postprocess(decoded, conf_threshold, nms_threshold, class_agnostic, max_detections, method,
                 sigma):
    boxes = cxcywh_to_xyxy(decoded[..., :4])
    obj = decoded[..., 4]
    cls = decoded[..., 5:]
    class_conf = jnp.max(cls, axis=-1)
    scores = obj * class_conf
    # Class-aware NMS gets the whole decoded rows, not labels: the best class (first index
    # among exact ties, like jnp.argmax) is then computed only for the boxes NMS visits. A
    # full argmax over [B, A, C] (or even a copy of the class slice) cost more than the NMS.
    class_src = jnp.zeros(scores.shape + (1,), jnp.int32) if class_agnostic else decoded
    idx, out_scores, valid = nms_core(
        boxes, scores, class_src, nms_threshold, max_output=max_detections,
        score_threshold=conf_threshold, method=method, sigma=sigma, class_start=5)

    safe = jnp.maximum(idx, 0)

    def take(x):
        rows = jnp.take_along_axis(x, safe.reshape(safe.shape + (1,) * (x.ndim - 2)), axis=1)
        mask = valid.reshape(valid.shape + (1,) * (x.ndim - 2))
        return jnp.where(mask, rows, jnp.zeros((), x.dtype))

    return Detections(
        boxes_xyxy=take(boxes),
        scores=jnp.where(valid, out_scores, 0.0),
        classes=jnp.where(valid, first_argmax(take(decoded)[..., 5:]), -1),
        valid=valid,
        obj=take(obj),
        class_conf=take(class_conf),
    )


def postprocess(decoded, *, conf_threshold, nms_threshold, class_agnostic=False,
                max_detections=100, method="hard", sigma=0.5) -> Detections:
    """decoded [B, A, 5 + C] (cx, cy, w, h, sigmoid obj, sigmoid cls...) -> Detections (K rows).

    conf_threshold: keep boxes with obj * class_conf >= this (also the Soft-NMS drop threshold).
    nms_threshold: IoU threshold (hard: suppress where IoU > it; linear / adaptive-sigma variant: decay
    where IoU > it). method "hard" | "linear" | "gaussian"; sigma float or "mean" (adaptive-sigma variant,
    see yolox_jax.nms). Thresholds are static (Python floats): each distinct value compiles
    once. Works under an outer jit as well.
    """
    return _postprocess(decoded, float(conf_threshold), float(nms_threshold),
                        bool(class_agnostic), int(max_detections), method,
                        sigma if isinstance(sigma, str) else float(sigma))
