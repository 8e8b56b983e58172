"""Drawing boxes on images (predictions and augmented samples)."""
from __future__ import annotations

import cv2
import numpy as np

PALETTE = [(255, 255, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255), (255, 128, 0), (0, 255, 0),
           (255, 80, 80), (80, 160, 255)]


def draw_boxes(image: np.ndarray, boxes_xyxy: np.ndarray, classes: np.ndarray, scores=None,
               names=None) -> np.ndarray:
    """image [H, W, 3] uint8 RGB, boxes [N, 4] xyxy pixels, classes [N], scores [N] or None ->
    annotated copy: a black-outlined box and a ``name score`` label per row."""
    img = np.ascontiguousarray(image.copy())
    for i, (box, c) in enumerate(zip(np.asarray(boxes_xyxy), np.asarray(classes))):
        c = int(c)
        colour = PALETTE[c % len(PALETTE)]
        p1 = (int(round(box[0])), int(round(box[1])))
        p2 = (int(round(box[2])), int(round(box[3])))
        cv2.rectangle(img, p1, p2, (0, 0, 0), 3)
        cv2.rectangle(img, p1, p2, colour, 1)
        text = names[c] if names is not None and 0 <= c < len(names) else str(c)
        if scores is not None:
            text = f"{text} {float(scores[i]):.2f}"
        org = (p1[0] + 2, max(p1[1] - 3, 10))
        cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)
    return img
