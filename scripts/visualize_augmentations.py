#!/usr/bin/env python
"""Writes a PNG grid of augmented training samples with their boxes and class names drawn.

    python scripts/visualize_augmentations.py --out /tmp/aug.png              # SyntheticShapes
    python scripts/visualize_augmentations.py --coco-ann ann.json --coco-images imgs/ --out aug.png
    python scripts/visualize_augmentations.py --no-aug --out noaug.png       # last-15-epochs phase

Use it to check by eye that labels sit on the objects after Mosaic / affine / MixUp / flip.
"""
from __future__ import annotations

import argparse
import sys

import cv2
import numpy as np

from yolox_jax.data import CocoSource, SyntheticShapes, train_dataset
from yolox_jax.eval.draw import draw_boxes

def draw(image: np.ndarray, labels: np.ndarray, mask: np.ndarray, names) -> np.ndarray:
    """image [H, W, 3] RGB, labels [M, 5] (cls, cx, cy, w, h), mask [M] -> annotated copy (RGB)."""
    rows = labels[mask]
    boxes = np.concatenate([rows[:, 1:3] - rows[:, 3:5] / 2, rows[:, 1:3] + rows[:, 3:5] / 2], axis=1)
    return draw_boxes(image, boxes, rows[:, 0].astype(int), None, names)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="augmentations.png")
    p.add_argument("--coco-ann", help="COCO-format JSON (default: SyntheticShapes)")
    p.add_argument("--coco-images", help="image folder for --coco-ann")
    p.add_argument("--num", type=int, default=12, help="number of samples")
    p.add_argument("--cols", type=int, default=4)
    p.add_argument("--input-size", type=int, nargs=2, default=(416, 416), metavar=("H", "W"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-aug", action="store_true", help="mosaic and mixup off (flip/HSV stay)")
    p.add_argument("--no-mixup", action="store_true")
    p.add_argument("--mosaic-scale", type=float, nargs=2, default=(0.5, 1.5))
    args = p.parse_args(argv)

    if args.coco_ann:
        if not args.coco_images:
            p.error("--coco-images is required with --coco-ann")
        source = CocoSource(args.coco_ann, args.coco_images)
    else:
        source = SyntheticShapes(64, image_size=(192, 256), num_classes=3, seed=args.seed)
    ds = train_dataset(source, input_size=tuple(args.input_size), batch_size=args.num, seed=args.seed,
                       mosaic_prob=0.0 if args.no_aug else 1.0,
                       enable_mixup=not (args.no_aug or args.no_mixup),
                       mosaic_scale=tuple(args.mosaic_scale))
    batch = ds[0]
    tiles = [draw(batch["images"][i], batch["labels"][i], batch["label_mask"][i], source.class_names)
             for i in range(args.num)]
    while len(tiles) % args.cols:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i:i + args.cols], 1) for i in range(0, len(tiles), args.cols)]
    grid = np.concatenate(rows, 0)
    if not cv2.imwrite(args.out, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
        print(f"could not write {args.out}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {args.num} samples, {int(batch['label_mask'].sum())} boxes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
