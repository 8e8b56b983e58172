"""Pictures of label assignments: which anchors each assigner makes foreground, per FPN level.

Pure functions of NumPy arrays (PIL for drawing), no JAX: the command ``yolox-jax assign-vis``
(yolox_jax/cli/assign_vis.py) computes the assignments and calls ``assignment_grid``.

The picture of one image is a grid: a title line, a column header per FPN level (``stride 8``,
...), then for every assigner a header line (its name, its foreground count, the foreground count
of each gt in that gt's colour) above one cell per level. A cell is the image (scaled by an
integer factor) with

* every valid gt box outlined in its own colour (``gt_colour(k)``),
* the candidate anchors of that level as faint grey dots (3x3 pixels blended with the image),
* the foreground anchors of that level as filled dots in the colour of their matched gt, at the
  anchor centre ``(grid_xy + 0.5) * stride``; with a ``quality`` (soft target) the dot's radius
  grows with the anchor's quality relative to the image's largest.

Nothing is drawn at anchors that are neither foreground nor candidates.
"""
from __future__ import annotations

import colorsys
from typing import Mapping, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Layout in output pixels (see ``grid_size``).
GAP = 4               # between cells and around the grid
TITLE_H = 18          # the title line
COLUMN_H = 16         # the "stride s" column headers
ROW_HEADER_H = 16     # each assigner's header line
BACKGROUND = (32, 32, 32)
TEXT = (235, 235, 235)
CANDIDATE = (150, 150, 150)
CANDIDATE_ALPHA = 0.45   # faint: blended with the image
DOT_RADIUS = (1, 3)      # (min, max) radius in output pixels of a foreground dot


def gt_colour(k: int) -> tuple[int, int, int]:
    """A saturated colour for gt row ``k``: golden-ratio steps around the hue circle, so
    neighbouring rows differ strongly; deterministic."""
    h = (k * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.9, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def level_ranges(grid_xy: np.ndarray, strides: np.ndarray) -> list[tuple[int, int, int]]:
    """(start, end, stride) of each FPN level in the flattened anchor axis (anchors come level by
    level, see ``yolox_jax.anchor_grid``)."""
    strides = np.asarray(strides)
    out, start = [], 0
    for i in range(1, len(strides) + 1):
        if i == len(strides) or strides[i] != strides[start]:
            out.append((start, i, int(strides[start])))
            start = i
    return out


def anchor_centres(grid_xy: np.ndarray, strides: np.ndarray) -> np.ndarray:
    """[A, 2] (x, y) anchor centres in input pixels: ``(grid_xy + 0.5) * stride``."""
    return (np.asarray(grid_xy, np.float64) + 0.5) * np.asarray(strides, np.float64)[:, None]


def auto_scale(image_hw: Sequence[int], target: int = 320) -> int:
    """An integer upscale so that the shorter image side is at least ``target`` pixels (1 for
    images already that large)."""
    return max(1, int(np.ceil(target / max(1, min(image_hw)))))


def grid_size(image_hw: Sequence[int], num_rows: int, num_cols: int, scale: int) -> tuple[int, int]:
    """(width, height) of ``assignment_grid``'s picture."""
    ch, cw = int(image_hw[0]) * scale, int(image_hw[1]) * scale
    width = num_cols * cw + (num_cols + 1) * GAP
    height = TITLE_H + COLUMN_H + num_rows * (ROW_HEADER_H + ch + GAP) + GAP
    return width, height


def fg_counts(fg_mask: np.ndarray, matched_gt: np.ndarray, num_gts: int) -> np.ndarray:
    """[G] number of foreground anchors matched to each gt row."""
    fg = np.asarray(fg_mask, bool)
    return np.bincount(np.asarray(matched_gt)[fg].astype(np.int64), minlength=num_gts)[:num_gts]


def _font():
    try:
        return ImageFont.load_default(size=11)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def draw_cell(image: np.ndarray, gt_boxes: np.ndarray, gt_mask: np.ndarray, centres: np.ndarray,
              fg_mask: np.ndarray, matched_gt: np.ndarray, candidate_mask: Optional[np.ndarray] = None,
              quality: Optional[np.ndarray] = None, scale: int = 1) -> Image.Image:
    """One cell: ``image`` [H, W, 3] uint8 scaled by ``scale`` (nearest), gts and the anchors given.

    gt_boxes [G, 4] cxcywh input pixels, gt_mask [G] bool; centres [N, 2] (x, y) input pixels of
    the anchors to draw (one level), with fg_mask [N], matched_gt [N], candidate_mask [N] or None,
    quality [N] or None. An anchor at input pixel (x, y) is drawn around output pixel
    (floor(x * scale), floor(y * scale)).
    """
    img = np.asarray(image, np.uint8)
    if scale != 1:
        img = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
    img = img.copy()
    h, w = img.shape[:2]
    centres = np.asarray(centres, np.float64)
    px = np.floor(centres * scale).astype(np.int64)
    inside = (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)
    fg = np.asarray(fg_mask, bool)
    if candidate_mask is not None:
        cand = np.asarray(candidate_mask, bool) & ~fg & inside
        for dy in (-1, 0, 1):   # a 3x3 patch, blended: faint but visible
            for dx in (-1, 0, 1):
                ys = np.clip(px[cand, 1] + dy, 0, h - 1)
                xs = np.clip(px[cand, 0] + dx, 0, w - 1)
                blend = (1 - CANDIDATE_ALPHA) * img[ys, xs] + CANDIDATE_ALPHA * np.asarray(CANDIDATE)
                img[ys, xs] = np.round(blend).astype(np.uint8)
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    gt_mask = np.asarray(gt_mask, bool)
    for k, box in enumerate(np.asarray(gt_boxes, np.float64)):
        if not gt_mask[k]:
            continue
        cx, cy, bw, bh = box * scale
        draw.rectangle([cx - bw / 2, cy - bh / 2, cx + bw / 2 - 1, cy + bh / 2 - 1],
                       outline=gt_colour(k), width=1)
    qmax = None
    if quality is not None and fg.any():
        qmax = float(np.max(np.asarray(quality)[fg]))
    lo, hi = DOT_RADIUS
    for i in np.flatnonzero(fg & inside):
        r = hi
        if qmax is not None and qmax > 0:
            r = lo + (hi - lo) * max(0.0, float(quality[i])) / qmax
        x, y = int(px[i, 0]), int(px[i, 1])
        colour = gt_colour(int(matched_gt[i]))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colour, outline=(0, 0, 0) if r >= 2 else None)
        draw.point((x, y), fill=colour)  # the centre pixel is the gt's colour whatever the radius
    return pil


def assignment_grid(image: np.ndarray, gt_boxes: np.ndarray, gt_mask: np.ndarray,
                    grid_xy: np.ndarray, strides: np.ndarray,
                    assignments: Mapping[str, Mapping[str, Optional[np.ndarray]]],
                    title: str = "", scale: Optional[int] = None) -> Image.Image:
    """The picture of one image: one row per assigner (in ``assignments``' order), one column per
    FPN level. ``assignments[name]`` holds this image's ``fg_mask``, ``matched_gt`` [A] and
    optionally ``candidate_mask``, ``quality`` [A] (NumPy, no batch axis)."""
    image = np.asarray(image, np.uint8)
    scale = auto_scale(image.shape[:2]) if scale is None else int(scale)
    levels = level_ranges(grid_xy, strides)
    centres = anchor_centres(grid_xy, strides)
    gt_mask = np.asarray(gt_mask, bool)
    ch, cw = image.shape[0] * scale, image.shape[1] * scale
    width, height = grid_size(image.shape[:2], len(assignments), len(levels), scale)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = _font()
    draw.text((GAP, 2), title, fill=TEXT, font=font)
    for j, (_, _, s) in enumerate(levels):
        draw.text((GAP + j * (cw + GAP), TITLE_H + 2), f"stride {s}", fill=TEXT, font=font)
    valid = np.flatnonzero(gt_mask)
    for row, (name, a) in enumerate(assignments.items()):
        top = TITLE_H + COLUMN_H + row * (ROW_HEADER_H + ch + GAP)
        fg = np.asarray(a["fg_mask"], bool)
        matched = np.asarray(a["matched_gt"])
        counts = fg_counts(fg, matched, len(gt_mask))
        x = GAP
        head = f"{name}: {int(fg.sum())} fg  |"
        draw.text((x, top + 2), head, fill=TEXT, font=font)
        x += int(draw.textlength(head, font=font)) + 6
        for k in valid:
            part = f"g{k}:{int(counts[k])}"
            draw.text((x, top + 2), part, fill=gt_colour(int(k)), font=font)
            x += int(draw.textlength(part, font=font)) + 6
        for j, (start, end, _) in enumerate(levels):
            sl = slice(start, end)
            cand = a.get("candidate_mask")
            qual = a.get("quality")
            cell = draw_cell(image, gt_boxes, gt_mask, centres[sl], fg[sl], matched[sl],
                             None if cand is None else np.asarray(cand)[sl],
                             None if qual is None else np.asarray(qual)[sl], scale)
            canvas.paste(cell, (GAP + j * (cw + GAP), top + ROW_HEADER_H))
    return canvas


def parse_boxes(text: str) -> np.ndarray:
    """``"cls,cx,cy,w,h;cls,cx,cy,w,h"`` -> float32 [N, 5]; a ValueError says what is wrong."""
    rows = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        values = [v.strip() for v in part.split(",")]
        if len(values) != 5:
            raise ValueError(f"a box is cls,cx,cy,w,h (5 numbers), got {part!r}")
        try:
            row = [float(v) for v in values]
        except ValueError:
            raise ValueError(f"not a number in box {part!r}") from None
        if row[0] < 0 or row[0] != int(row[0]) or row[3] <= 0 or row[4] <= 0:
            raise ValueError(f"box {part!r}: cls must be a whole number >= 0 and w, h positive")
        rows.append(row)
    if not rows:
        raise ValueError("no boxes given")
    return np.asarray(rows, np.float32)
