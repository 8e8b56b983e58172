"""Prediction on image files: letterbox, detect, map boxes back, draw, save."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from yolox_jax.data.sources.base import read_image_rgb
from yolox_jax.data.transforms import letterbox
from yolox_jax.eval.draw import draw_boxes
from yolox_jax.eval.evaluate import predict_batch

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def list_images(paths) -> list[Path]:
    """Image files among ``paths`` (files, or folders searched one level deep)."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"no such image or folder: {p}")
    return out


def predict_image(model, variables, image_rgb: np.ndarray, *, input_size, conf_threshold: float,
                  nms_threshold: float, class_agnostic: bool = True, max_detections: int = 100):
    """One RGB image [h, w, 3] uint8 -> (boxes_xyxy [n, 4] in original pixels, scores [n], classes [n])."""
    padded, r = letterbox(image_rgb, input_size)
    dets = jax.device_get(predict_batch(model, variables, jnp.asarray(padded[None]),
                                        conf_threshold=conf_threshold, nms_threshold=nms_threshold,
                                        max_detections=max_detections, class_agnostic=class_agnostic))
    valid = np.asarray(dets.valid[0])
    return (np.asarray(dets.boxes_xyxy[0])[valid] / r, np.asarray(dets.scores[0])[valid],
            np.asarray(dets.classes[0])[valid])


def predict_files(model, variables, paths, *, out_dir, input_size, conf_threshold: float = 0.3,
                  nms_threshold: float = 0.45, class_names=None, class_agnostic: bool = True):
    """Detect on every image (the official demo's defaults: class-agnostic NMS) and write
    ``<out_dir>/<name>`` with the boxes drawn. Returns [(written path, number of detections)]."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for path in list_images(paths):
        image = read_image_rgb(str(path))
        if image is None:
            raise ValueError(f"cannot read image {path} (missing or corrupt)")
        boxes, scores, classes = predict_image(model, variables, image, input_size=input_size,
                                               conf_threshold=conf_threshold,
                                               nms_threshold=nms_threshold,
                                               class_agnostic=class_agnostic)
        drawn = draw_boxes(image, boxes, classes, scores, class_names)
        target = Path(out_dir) / path.name
        cv2.imwrite(str(target), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
        written.append((str(target), len(scores)))
    return written
