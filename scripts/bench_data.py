"""Input-pipeline throughput: ``python scripts/benchmark.py data [--workers 1 2 4] [--write /tmp/bench_data.md]``.

Builds a COCO-format folder of synthetic 480x640 JPEGs (so JPEG decode is part of the cost, as
with real COCO), then measures images/s of
  * the full training pipeline (Mosaic + random affine + MixUp + HSV + flip) at 640x640,
    for each worker count (0 = in-process),
  * the no-mosaic path (pre-scale + HSV + flip + letterbox: the last-15-epochs phase),
  * the eval path (decode + letterbox).
The first batches (worker start-up) are excluded.  Output: Markdown table rows with the machine
and date, ready for docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import datetime
import os
import tempfile
import time

from bench_common import machine


def _measure(loader, warmup: int, batches: int) -> float:
    """images/s over ``batches`` batches after ``warmup`` batches."""
    it = iter(loader)
    try:
        for _ in range(warmup):
            next(it)
        t0 = time.perf_counter()
        n = 0
        for _ in range(batches):
            n += next(it)["images"].shape[0]
        return n / (time.perf_counter() - t0)
    finally:
        if hasattr(it, "close"):
            it.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--batches", type=int, default=12, help="timed batches per configuration")
    p.add_argument("--warmup", type=int, default=2, help="untimed batches (include worker start-up)")
    p.add_argument("--num-images", type=int, default=96, help="distinct JPEGs in the temp dataset")
    p.add_argument("--input-size", type=int, default=640)
    p.add_argument("--data-dir", help="reuse/create the JPEG dataset here instead of a temp folder")
    p.add_argument("--write", metavar="MD", help="also write the table to this Markdown file")
    args = p.parse_args(argv)

    from yolox_jax.data import CocoSource, SyntheticShapes, eval_loader, train_loader, write_coco_json

    tmp = None
    root = args.data_dir
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_data_")
        root = tmp.name
    ann = os.path.join(root, "instances.json")
    img_dir = os.path.join(root, "images")
    if not os.path.exists(ann):
        t0 = time.perf_counter()
        write_coco_json(SyntheticShapes(args.num_images, image_size=(480, 640), num_classes=3, seed=0),
                        ann, image_dir=img_dir, image_format="jpg", jpeg_quality=90)
        print(f"# wrote {args.num_images} 480x640 JPEGs in {time.perf_counter() - t0:.1f}s to {root}")
    source = CocoSource(ann, img_dir)
    size = (args.input_size, args.input_size)
    common = dict(input_size=size, batch_size=args.batch_size, seed=0)

    load_start = os.getloadavg()[0]
    rows = []
    for w in args.workers:
        ips = _measure(train_loader(source, num_workers=w, **common), args.warmup, args.batches)
        rows.append((f"train Mosaic+MixUp {size[0]}x{size[1]}", w, ips))
        print(f"| {rows[-1][0]} | {w} | {ips:.1f} |", flush=True)
    for w in args.workers:
        ips = _measure(train_loader(source, num_workers=w, mosaic_prob=0.0, enable_mixup=False, **common),
                       args.warmup, args.batches)
        rows.append((f"train no-aug (letterbox+HSV+flip) {size[0]}x{size[1]}", w, ips))
        print(f"| {rows[-1][0]} | {w} | {ips:.1f} |", flush=True)
    for w in args.workers:
        ips = _measure(eval_loader(source, input_size=size, batch_size=args.batch_size, num_workers=w),
                       args.warmup, min(args.batches, args.num_images // args.batch_size - args.warmup))
        rows.append((f"eval letterbox {size[0]}x{size[1]}", w, ips))
        print(f"| {rows[-1][0]} | {w} | {ips:.1f} |", flush=True)

    header = [
        "## Data pipeline throughput",
        "",
        f"Machine: {machine()}  ",
        f"Measured {datetime.datetime.now().isoformat(timespec='minutes')}; source: {args.num_images} synthetic "
        f"480x640 JPEGs in a COCO folder (decode included), batch {args.batch_size}, "
        f"{args.batches} timed batches after {args.warmup} warm-up batches.  ",
        f"Load average (1 min) at start / end: {load_start:.1f} / {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} CPUs (a busy machine makes these figures a lower bound).  ",
        "Rerun: `python scripts/benchmark.py data --workers 1 2 4 --write /tmp/bench_data.md`",
        "",
        "Workers are grain processes (`train_loader(num_workers=...)`), each computing whole batches; "
        "`train Mosaic+MixUp` = official default augmentation (mosaic_prob 1, mixup_prob 1, "
        "mosaic_scale (0.1, 2)); `no-aug` = the last-15-epochs phase; `eval` = `eval_loader`.",
        "",
        "| pipeline | workers | images/s |",
        "|---|---|---|",
    ]
    table = "\n".join(header + [f"| {name} | {w} | {ips:.1f} |" for name, w, ips in rows]) + "\n"
    print(table)
    if args.write:
        with open(args.write, "w") as f:
            f.write(table)
    if tmp is not None:
        tmp.cleanup()
    return 0
