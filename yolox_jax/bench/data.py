"""Input-pipeline throughput: the ``data_*`` workloads of ``yolox-jax bench``, and
``python scripts/benchmark.py data [--workers 1 2 4] [--write /tmp/bench_data.md]``.

Builds a COCO-format folder of synthetic 480x640 JPEGs (so JPEG decode is part of the cost, as
with real COCO), then measures images/s of
  * the full training pipeline (Mosaic + random affine + MixUp + HSV + flip) at 640x640,
    for each worker count (0 = in-process),
  * the no-mosaic path (pre-scale + HSV + flip + letterbox: the last-15-epochs phase),
  * the eval path (decode + letterbox),
  * the host part of ``data.augment_on=device`` (decode + pre-scale of the 4 mosaic tiles and
    the MixUp partner; with ``data.device_partners=batch``, of the image itself only), and the
    jitted device augmentation of such batches on JAX's default device
    (``device_augment_seconds``).
The first batches (worker start-up) are excluded.  Output: Markdown table rows with the machine
and date, ready for docs/benchmarks.md.  (The ``yolox-jax bench`` suite keeps its three data
workloads; the device mode is measured here.)
"""
from __future__ import annotations

import argparse
import atexit
import datetime
import os
import shutil
import tempfile
import time

from yolox_jax.bench.common import machine, skipped


def jpeg_source(root, num_images: int, image_hw: tuple[int, int]):
    """A COCO-format folder of ``num_images`` synthetic JPEGs under ``root`` (written unless
    there), as a ``CocoSource``; returns ``(source, wrote)``."""
    from yolox_jax.data import CocoSource, SyntheticShapes, write_coco_json

    ann = os.path.join(root, "instances.json")
    img_dir = os.path.join(root, "images")
    wrote = not os.path.exists(ann)
    if wrote:
        write_coco_json(SyntheticShapes(num_images, image_size=tuple(image_hw), num_classes=3,
                                        seed=0),
                        ann, image_dir=img_dir, image_format="jpg", jpeg_quality=90)
    return CocoSource(ann, img_dir), wrote


def _measure(loader, warmup: int, batches: int) -> tuple[float, float]:
    """(images/s, CPU ms per image) over ``batches`` batches after ``warmup`` batches. The CPU
    time is this process's, all threads (what one image costs the host's cores, whatever else
    runs on them); it counts the work only with ``num_workers=0`` (in-process)."""
    it = iter(loader)
    try:
        for _ in range(warmup):
            next(it)
        t0, c0 = time.perf_counter(), time.process_time()
        n = 0
        for _ in range(batches):
            batch = next(it)
            n += batch["images" if "images" in batch else "tiles"].shape[0]
        return n / (time.perf_counter() - t0), 1e3 * (time.process_time() - c0) / n
    finally:
        if hasattr(it, "close"):
            it.close()


def device_augment_seconds(source, input_size, batch_size: int, repeats: int = 5) -> dict:
    """The jitted ``device_aug.augment_batch`` on a batch from the device-mode loader, on JAX's
    default device: {"compile_s", "median_s" (per batch), "ms_per_image", "device"}."""
    import jax
    import numpy as np

    from yolox_jax.bench.common import time_calls
    from yolox_jax.data import train_loader
    from yolox_jax.data.device_aug import AugmentOptions, jit_augment_batch

    it = iter(train_loader(source, input_size=input_size, batch_size=batch_size, seed=0,
                           augment_on="device"))
    try:
        host = next(it)
    finally:
        if hasattr(it, "close"):
            it.close()
    batch = jax.device_put(host)
    fn = jit_augment_batch(AugmentOptions(input_hw=tuple(input_size)))
    t0 = time.perf_counter()
    compiled = fn.lower(batch, np.uint32(0)).compile()
    compile_s = time.perf_counter() - t0
    times = time_calls(lambda: jax.block_until_ready(compiled(batch, np.uint32(0))), warmup=1,
                       repeat=repeats)
    median = float(np.median(times))
    return {"compile_s": compile_s, "median_s": median, "ms_per_image": 1e3 * median / batch_size,
            "device": str(jax.devices()[0].device_kind)}


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

    from yolox_jax.data import eval_loader, train_loader

    tmp = None
    root = args.data_dir
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_data_")
        root = tmp.name
    t0 = time.perf_counter()
    source, wrote = jpeg_source(root, args.num_images, (480, 640))
    if wrote:
        print(f"# wrote {args.num_images} 480x640 JPEGs in {time.perf_counter() - t0:.1f}s to {root}")
    size = (args.input_size, args.input_size)
    common = dict(input_size=size, batch_size=args.batch_size, seed=0)

    load_start = os.getloadavg()[0]
    rows = []
    for w in args.workers:
        ips = _measure(train_loader(source, num_workers=w, **common), args.warmup, args.batches)
        rows.append((f"train Mosaic+MixUp {size[0]}x{size[1]}", w, ips))
        print(_row(*rows[-1]), flush=True)
    for w in args.workers:
        ips = _measure(train_loader(source, num_workers=w, mosaic_prob=0.0, enable_mixup=False, **common),
                       args.warmup, args.batches)
        rows.append((f"train no-aug (letterbox+HSV+flip) {size[0]}x{size[1]}", w, ips))
        print(_row(*rows[-1]), flush=True)
    for w in args.workers:
        ips = _measure(train_loader(source, num_workers=w, augment_on="device", **common),
                       args.warmup, args.batches)
        rows.append((f"train augment_on=device, host part (decode + pre-scale) {size[0]}x{size[1]}",
                     w, ips))
        print(_row(*rows[-1]), flush=True)
    for w in args.workers:
        ips = _measure(train_loader(source, num_workers=w, augment_on="device",
                                    device_partners="batch", **common),
                       args.warmup, args.batches)
        rows.append((f"train augment_on=device device_partners=batch, host part (decode + "
                     f"pre-scale 1 image) {size[0]}x{size[1]}", w, ips))
        print(_row(*rows[-1]), flush=True)
    for w in args.workers:
        ips = _measure(eval_loader(source, input_size=size, batch_size=args.batch_size, num_workers=w),
                       args.warmup, min(args.batches, args.num_images // args.batch_size - args.warmup))
        rows.append((f"eval letterbox {size[0]}x{size[1]}", w, ips))
        print(_row(*rows[-1]), flush=True)

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
        "mosaic_scale (0.1, 2)); `no-aug` = the last-15-epochs phase; `eval` = `eval_loader`; "
        "`augment_on=device` = what the host still does in that mode (`device_partners=batch`: "
        "one image per sample, partners taken on the device from the batch). CPU ms / image: this "
        "process's CPU time (all threads), in-process runs (workers 0) only.",
        "",
        "| pipeline | workers | images/s | CPU ms / image |",
        "|---|---|---|---|",
    ]
    dev = device_augment_seconds(source, size, args.batch_size)
    device_line = (f"Device augmentation (`device_aug.augment_batch`, jitted) on {dev['device']}: "
                   f"{1e3 * dev['median_s']:.1f} ms per batch of {args.batch_size} "
                   f"({dev['ms_per_image']:.2f} ms per image), compiled in {dev['compile_s']:.1f} s.")
    print(device_line)
    table = "\n".join(header + [_row(*r) for r in rows]
                      + ["", device_line]) + "\n"
    print(table)
    if args.write:
        with open(args.write, "w") as f:
            f.write(table)
    if tmp is not None:
        tmp.cleanup()
    return 0


def _row(name, workers, measured) -> str:
    ips, cpu_ms = measured
    return f"| {name} | {workers} | {ips:.1f} | {f'{cpu_ms:.1f}' if workers == 0 else '-'} |"


PIPELINES = (("mosaic", "data: train Mosaic+MixUp"), ("noaug", "data: train no-aug"),
             ("eval", "data: eval letterbox"))


def workload(s) -> dict:
    """``data_mosaic``, ``data_noaug`` and ``data_eval``: images/s of the training pipeline
    (official default augmentation: Mosaic, random affine, MixUp, HSV, flip), its no-augmentation
    phase and the eval pipeline, at the benchmark's input size and batch, on synthetic JPEGs of
    3/4 that size (decoding included), with ``s.data_workers`` worker processes (0: in this
    process). Host-side NumPy/OpenCV: no JAX program, so no jit/eager figures."""
    from yolox_jax.data import eval_loader, train_loader

    h, w = s.hw
    batches = max(s.repeats, 2)
    warmup = max(s.warmup, 1)
    num_images = max(16, s.batch * (warmup + batches + 1))
    common = dict(input_size=tuple(s.hw), batch_size=s.batch, seed=0, num_workers=s.data_workers)
    out = {}
    # Removed at exit, not here: a loader's read-ahead threads may still be opening files after
    # its iterator is closed.
    root = tempfile.mkdtemp(prefix="bench_data_")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    image_hw = (max(32, h * 3 // 4), w)
    source, _ = jpeg_source(root, num_images, image_hw)
    loaders = {
        "mosaic": lambda: train_loader(source, **common),
        "noaug": lambda: train_loader(source, mosaic_prob=0.0, enable_mixup=False, **common),
        "eval": lambda: eval_loader(source, input_size=tuple(s.hw), batch_size=s.batch,
                                    num_workers=s.data_workers),
    }
    na = skipped("not applicable: host-side NumPy/OpenCV pipeline, no JAX program")
    for key, label in PIPELINES:
        n = batches if key != "eval" else min(batches, num_images // s.batch - warmup)
        ips, _ = _measure(loaders[key](), warmup, n)
        out[f"data_{key}"] = {
            "label": label, "unit": "batch", "size": list(s.hw), "batch": s.batch,
            "host": {"images_per_s": ips, "workers": s.data_workers, "batches": n,
                     "warmup": warmup, "images": num_images, "image_hw": list(image_hw)},
            "jit": na, "eager": na,
            "torch": skipped("no reference: the official PyTorch loader is not measured")}
    return out
