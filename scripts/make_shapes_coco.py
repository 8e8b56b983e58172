#!/usr/bin/env python
"""Writes a small COCO-format dataset of procedurally drawn shapes, in the folder layout that
``yolox-jax train --data DIR`` reads (annotations/instances_{train,val}.json, train/, val/ as JPEG).

    python scripts/make_shapes_coco.py --out datasets/shapes_dense
    python scripts/make_shapes_coco.py --out datasets/shapes_dense --train 600 --val 100 \
        --size 256 --classes 6 --objects 4 14 --box 0.06 0.3

The defaults make a set unlike the built-in synthetic one: more classes, more and smaller objects
per image (crowded scenes, where label assignment matters most). Nothing is downloaded.
"""
from __future__ import annotations

import argparse
import os
import sys

from yolox_jax.data import SyntheticShapes, write_coco_json


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="dataset folder to create")
    p.add_argument("--train", type=int, default=600, help="training images (600)")
    p.add_argument("--val", type=int, default=100, help="validation images (100)")
    p.add_argument("--size", type=int, default=256, help="image side in pixels (256)")
    p.add_argument("--classes", type=int, default=6, help="shape classes, 1..8 (6)")
    p.add_argument("--objects", type=int, nargs=2, default=(4, 14), help="objects per image (4 14)")
    p.add_argument("--box", type=float, nargs=2, default=(0.06, 0.3),
                   help="box side as a fraction of the image side (0.06 0.3)")
    p.add_argument("--seed", type=int, default=7, help="training set seed; validation uses seed+1")
    args = p.parse_args(argv)
    for split, n, seed in (("train", args.train, args.seed), ("val", args.val, args.seed + 1)):
        src = SyntheticShapes(n, image_size=(args.size, args.size), num_classes=args.classes,
                              seed=seed, objects=tuple(args.objects), size_range=tuple(args.box))
        d = write_coco_json(src, os.path.join(args.out, "annotations", f"instances_{split}.json"),
                            os.path.join(args.out, split), image_format="jpg")
        print(f"{split}: {len(d['images'])} images, {len(d['annotations'])} boxes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
