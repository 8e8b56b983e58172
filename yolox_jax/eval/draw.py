"""Drawing boxes on images (predictions and augmented samples).

Each box is a black-outlined rectangle in its class colour; its label (``name score``) is text
in one colour, black or white by the class colour's brightness, on a filled rectangle of the
class colour: above the box, or inside it when the box touches the top edge, moved left to stay
in the image.
"""
from __future__ import annotations

import cv2
import numpy as np

PALETTE = [(255, 255, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255), (255, 128, 0), (0, 255, 0),
           (255, 80, 80), (80, 160, 255)]
FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.4
PAD = 2  # pixels around the text inside its background


def text_colour(colour) -> tuple[int, int, int]:
    """Black on a bright RGB ``colour`` (luma above 128), white on a dark one."""
    r, g, b = colour
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 128 else (255, 255, 255)


def label_rect(text: str, box_xyxy, image_hw) -> tuple[int, int, int, int]:
    """Pixel bounds (x0, y0, x1, y1), inclusive, of the background of ``text`` for a box
    [x1, y1, x2, y2] in an image of (H, W): above the box when it fits, else inside its top;
    shifted left (then clipped) to stay in the image."""
    (tw, th), baseline = cv2.getTextSize(text, FONT, FONT_SCALE, 1)
    w, h = tw + 2 * PAD, th + baseline + 2 * PAD
    H, W = image_hw
    bx, by = int(round(box_xyxy[0])), int(round(box_xyxy[1]))
    x0 = max(min(bx, W - w), 0)
    y0 = by - h if by - h >= 0 else max(by, 0)
    y0 = max(min(y0, H - h), 0)
    return x0, y0, min(x0 + w, W) - 1, min(y0 + h, H) - 1


def draw_label(img: np.ndarray, text: str, box_xyxy, colour) -> None:
    """Draw ``text`` for a box into ``img`` [H, W, 3] uint8 RGB, in place (see ``label_rect``)."""
    x0, y0, x1, y1 = label_rect(text, box_xyxy, img.shape[:2])
    cv2.rectangle(img, (x0, y0), (x1, y1), colour, -1)
    (_, th), _ = cv2.getTextSize(text, FONT, FONT_SCALE, 1)
    cv2.putText(img, text, (x0 + PAD, y0 + PAD + th), FONT, FONT_SCALE, text_colour(colour), 1,
                cv2.LINE_AA)


def draw_boxes(image: np.ndarray, boxes_xyxy: np.ndarray, classes: np.ndarray, scores=None,
               names=None) -> np.ndarray:
    """image [H, W, 3] uint8 RGB, boxes [N, 4] xyxy pixels, classes [N], scores [N] or None ->
    annotated copy: every box first (black outline, class colour), then every label
    (``name score``, or the class index without ``names``) over them."""
    img = np.ascontiguousarray(image.copy())
    boxes = np.asarray(boxes_xyxy)
    classes = np.asarray(classes).astype(int)
    for box, c in zip(boxes, classes):
        p1 = (int(round(box[0])), int(round(box[1])))
        p2 = (int(round(box[2])), int(round(box[3])))
        cv2.rectangle(img, p1, p2, (0, 0, 0), 3)
        cv2.rectangle(img, p1, p2, PALETTE[c % len(PALETTE)], 1)
    for i, (box, c) in enumerate(zip(boxes, classes)):
        text = names[c] if names is not None and 0 <= c < len(names) else str(c)
        if scores is not None:
            text = f"{text} {float(scores[i]):.2f}"
        draw_label(img, text, box, PALETTE[c % len(PALETTE)])
    return img
