"""Prediction on images, folders and videos: letterbox, detect in batches, map boxes back, draw,
save.

Inputs are image files, video files and folders (searched one level deep for both, in sorted
order). Every image and video frame is letterboxed to one input size and goes through
``predict_batch`` ``batch_size`` at a time (the last batch padded with blank canvases), so a run
is one compiled program whatever the image sizes. Outputs in ``out_dir``:

- each image, drawn, under its own name;
- each video, drawn, as ``<stem>.mp4`` (mp4v codec, the input's frame rate and size);
- ``detections.json``: a COCO results list with one entry per detection,
  ``{"image_id", "file_name", "frame" (videos only), "category_id", "bbox": [x, y, w, h],
  "score"}``. ``image_id`` numbers the images and frames 0, 1, ... in input order,
  ``file_name`` is the input path as given, ``bbox`` is in original pixels (clipped to the
  image), and ``category_id`` is ``category_ids[class index]`` when ``category_ids`` is given
  (a dataset's COCO category ids, as ``evaluate`` writes them), else the class index.

Two inputs that would write the same output name get ``_1``, ``_2``, ... appended to the stem.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Iterator, NamedTuple

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from yolox_jax.data.sources.base import read_image_rgb
from yolox_jax.data.transforms import PAD_VALUE, letterbox
from yolox_jax.errors import UserError
from yolox_jax.eval.draw import draw_boxes
from yolox_jax.eval.evaluate import predict_batch

IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".avi", ".mkv", ".mov", ".mp4", ".webm")
DETECTIONS_FILE = "detections.json"
DEFAULT_FPS = 25.0  # for a video whose container gives no frame rate


class Frame(NamedTuple):
    """One picture to detect on: an image file (``index`` None) or a video's frame ``index``."""

    path: Path
    index: int | None
    image: np.ndarray  # [h, w, 3] uint8 RGB
    fps: float | None  # the video's frame rate; None for an image


def is_video(path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def list_inputs(paths) -> list[Path]:
    """Image and video files among ``paths``: files as given, folders searched one level deep
    (sorted). A missing path, a file of another kind or a folder with neither is a UserError."""
    known = IMAGE_SUFFIXES + VIDEO_SUFFIXES
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in known)
            if not found:
                raise UserError("no images or videos in this folder", p)
            out.extend(found)
        elif p.is_file():
            if p.suffix.lower() not in known:
                raise UserError(f"not an image or video file (expected {' '.join(known)})", p)
            out.append(p)
        else:
            raise UserError("no such image, video or folder", p)
    return out


def read_frames(path: Path) -> Iterator[Frame]:
    """The image of an image file, or every frame of a video (OpenCV ``VideoCapture``), as RGB.
    An unreadable image or a video with no decodable frame is a UserError."""
    if not is_video(path):
        image = read_image_rgb(str(path))
        if image is None:
            raise UserError("cannot read this image (corrupt or not an image)", path)
        yield Frame(path, None, image, None)
        return
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise UserError("cannot open this video (corrupt or an unsupported format)", path)
        fps = capture.get(cv2.CAP_PROP_FPS) or DEFAULT_FPS
        index = 0
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            yield Frame(path, index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), fps)
            index += 1
        if index == 0:
            raise UserError("cannot read this video (no frame decodes)", path)
    finally:
        capture.release()


def predict_images(model, variables, images, *, input_size, conf_threshold: float,
                   nms_threshold: float, batch_size: int | None = None,
                   class_agnostic: bool = True, max_detections: int = 100):
    """Up to ``batch_size`` RGB images [h_i, w_i, 3] uint8 of any sizes -> per image
    (boxes_xyxy [n, 4] in its original pixels clipped to it, scores [n] descending, classes [n]).

    One ``predict_batch`` call on [batch_size, H, W, 3] (``input_size`` = (H, W); the rows after
    the images are blank canvases), so every call with the same sizes reuses one program.
    """
    batch_size = batch_size or len(images)
    if not 0 < len(images) <= batch_size:
        raise ValueError(f"{len(images)} images for a batch of {batch_size}")
    H, W = int(input_size[0]), int(input_size[1])
    batch = np.full((batch_size, H, W, 3), PAD_VALUE, np.uint8)
    ratios = []
    for i, image in enumerate(images):
        batch[i], r = letterbox(image, (H, W))
        ratios.append(r)
    dets = jax.device_get(predict_batch(model, variables, jnp.asarray(batch),
                                        conf_threshold=conf_threshold, nms_threshold=nms_threshold,
                                        max_detections=max_detections,
                                        class_agnostic=class_agnostic))
    out = []
    for i, (image, r) in enumerate(zip(images, ratios)):
        valid = np.asarray(dets.valid[i])
        h, w = image.shape[:2]
        boxes = np.asarray(dets.boxes_xyxy[i], np.float32)[valid] / np.float32(r)
        boxes = np.clip(boxes, 0, np.array([w, h, w, h], np.float32))
        out.append((boxes, np.asarray(dets.scores[i])[valid], np.asarray(dets.classes[i])[valid]))
    return out


def predict_image(model, variables, image_rgb: np.ndarray, *, input_size, conf_threshold: float,
                  nms_threshold: float, class_agnostic: bool = True, max_detections: int = 100,
                  batch_size: int = 1):
    """One RGB image [h, w, 3] uint8 -> (boxes_xyxy [n, 4] in original pixels, scores [n],
    classes [n]).

    ``batch_size`` > 1 runs it in a padded batch of that size (the program of ``predict_images``
    with that batch size)."""
    return predict_images(model, variables, [image_rgb], input_size=input_size,
                          conf_threshold=conf_threshold, nms_threshold=nms_threshold,
                          batch_size=batch_size, class_agnostic=class_agnostic,
                          max_detections=max_detections)[0]


def coco_results(boxes_xyxy, scores, classes, *, image_id: int, file_name: str,
                 frame: int | None = None, category_ids=None) -> list[dict]:
    """Detections of one picture (boxes [n, 4] xyxy, scores [n], classes [n]) -> the
    ``detections.json`` entries (see the module docstring), plain JSON numbers."""
    out = []
    for box, score, cls in zip(np.asarray(boxes_xyxy, np.float64), scores, classes):
        entry = {"image_id": int(image_id), "file_name": file_name}
        if frame is not None:
            entry["frame"] = int(frame)
        x1, y1, x2, y2 = (round(float(v), 2) for v in box)
        entry.update(category_id=int(category_ids[int(cls)]) if category_ids is not None
                     else int(cls),
                     bbox=[x1, y1, round(x2 - x1, 2), round(y2 - y1, 2)],
                     score=round(float(score), 5))
        out.append(entry)
    return out


def output_paths(inputs, out_dir: Path) -> dict[Path, Path]:
    """Input -> the file it is drawn to: ``<out_dir>/<name>`` for an image, ``<stem>.mp4`` for a
    video; a name already taken gets ``_1``, ``_2``, ... after its stem."""
    taken, out = set(), {}
    for path in inputs:
        name = Path(path.stem + ".mp4") if is_video(path) else Path(path.name)
        target, k = name, 0
        while target.name in taken or target.name == DETECTIONS_FILE:
            k += 1
            target = Path(f"{name.stem}_{k}{name.suffix}")
        taken.add(target.name)
        out[path] = out_dir / target
    return out


def _open_writer(target: Path, fps: float, hw) -> cv2.VideoWriter:
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), fps, (hw[1], hw[0]))
    if not writer.isOpened():
        raise UserError("cannot write a video here (mp4v)", target)
    return writer


def predict_files(model, variables, paths, *, out_dir, input_size, conf_threshold: float = 0.3,
                  nms_threshold: float = 0.45, class_names=None, category_ids=None,
                  class_agnostic: bool = True, batch_size: int = 8, max_detections: int = 100):
    """Detect on every image and video frame of ``paths`` (the official demo's defaults:
    class-agnostic NMS), ``batch_size`` pictures per call; write the drawn images and videos and
    ``detections.json`` to ``out_dir`` (see the module docstring).

    Returns [(drawn file, number of detections in it)], one per input in input order.
    """
    if batch_size < 1:
        raise UserError("the batch size must be at least 1", batch_size)
    inputs = list_inputs(paths)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    targets = output_paths(inputs, out_dir)
    counts = dict.fromkeys(inputs, 0)
    results = []
    frames = (f for path in inputs for f in read_frames(path))
    image_ids = itertools.count()
    writer, writing = None, None
    try:
        while chunk := list(itertools.islice(frames, batch_size)):
            predictions = predict_images(model, variables, [f.image for f in chunk],
                                         input_size=input_size, conf_threshold=conf_threshold,
                                         nms_threshold=nms_threshold, batch_size=batch_size,
                                         class_agnostic=class_agnostic,
                                         max_detections=max_detections)
            for frame, (boxes, scores, classes) in zip(chunk, predictions):
                drawn = cv2.cvtColor(draw_boxes(frame.image, boxes, classes, scores, class_names),
                                     cv2.COLOR_RGB2BGR)
                target = targets[frame.path]
                if frame.index is None:
                    if not cv2.imwrite(str(target), drawn):
                        raise UserError("cannot write an image here", target)
                else:
                    if writing != frame.path:
                        if writer is not None:
                            writer.release()
                        writer = _open_writer(target, frame.fps, drawn.shape[:2])
                        writing = frame.path
                    writer.write(drawn)
                counts[frame.path] += len(scores)
                results.extend(coco_results(boxes, scores, classes, image_id=next(image_ids),
                                            file_name=str(frame.path), frame=frame.index,
                                            category_ids=category_ids))
    finally:
        if writer is not None:
            writer.release()
    with open(out_dir / DETECTIONS_FILE, "w") as f:
        json.dump(results, f)
    return [(str(targets[p]), counts[p]) for p in inputs]
