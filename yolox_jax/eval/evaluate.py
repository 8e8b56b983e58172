"""COCO evaluation of a model on a data source (docs/official-behaviour.md §6)."""
from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np

from yolox_jax.ops.anchors import decode
from yolox_jax.ops.postprocess import postprocess

log = logging.getLogger(__name__)


@functools.partial(jax.jit, static_argnames=("model", "conf_threshold", "nms_threshold",
                                             "max_detections", "class_agnostic"))
def predict_batch(model, variables, images, *, conf_threshold: float, nms_threshold: float,
                  max_detections: int = 100, class_agnostic: bool = False):
    """images [B, H, W, 3] uint8/float RGB -> Detections (boxes in input pixels)."""
    images = images.astype(jnp.float32)
    raw = model.apply(variables, images, train=False)
    decoded = decode(raw.astype(jnp.float32), tuple(images.shape[1:3]))
    return postprocess(decoded, conf_threshold=conf_threshold, nms_threshold=nms_threshold,
                       class_agnostic=class_agnostic, max_detections=max_detections)


def evaluate(model, variables, source, *, input_size, batch_size: int = 32,
             conf_threshold: float = 0.01, nms_threshold: float = 0.65, max_detections: int = 100,
             num_workers: int = 0) -> dict:
    """AP of ``variables`` on ``source`` with the official settings (conf 0.01, NMS 0.65,
    class-aware, letterbox at ``input_size``); returns the pycocotools summary as a dict with
    ``AP50_95`` and ``AP50``.

    Runs on this process's first device over the whole source (on multi-host runs, call it from
    every process or from process 0 only; the loop calls it on every process, each on all data).
    """
    from yolox_jax.data import eval_loader, to_coco_dict
    from yolox_jax.eval.coco import coco_evaluate, detections_to_coco

    variables = _on_first_device(variables)
    results = []
    loader = eval_loader(source, input_size=tuple(input_size), batch_size=batch_size,
                         num_workers=num_workers)
    class_ids = getattr(source, "category_ids", None) or list(range(source.num_classes))
    for batch in loader:
        dets = jax.device_get(predict_batch(model, variables, jnp.asarray(batch["images"]),
                                            conf_threshold=conf_threshold,
                                            nms_threshold=nms_threshold,
                                            max_detections=max_detections))
        valid = np.asarray(batch["valid"])
        results.extend(detections_to_coco(
            jax.tree_util.tree_map(lambda x: np.asarray(x)[valid], dets),
            np.asarray(batch["image_id"])[valid], np.asarray(batch["scale"])[valid], class_ids))
    return coco_evaluate(to_coco_dict(source), results)


def _on_first_device(variables):
    return jax.device_put(jax.device_get(variables), jax.local_devices()[0])


def lower_evaluation(model, variables, *, input_size, batch_size: int = 32,
                     conf_threshold: float = 0.01, nms_threshold: float = 0.65,
                     max_detections: int = 100):
    """:func:`evaluate`'s program lowered for ``variables`` (arrays or ``jax.ShapeDtypeStruct``)
    and batches of ``batch_size`` images at ``input_size`` (every batch has that padded shape);
    ``.compile()`` it ahead of the first evaluation and :func:`evaluate` finds it compiled."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    variables = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), variables)
    images = jax.ShapeDtypeStruct((batch_size, *(int(v) for v in input_size), 3), jnp.uint8)
    return predict_batch.lower(model, variables, images, conf_threshold=conf_threshold,
                               nms_threshold=nms_threshold, max_detections=max_detections)
