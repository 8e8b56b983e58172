"""Detect objects in images, folders and videos; write them with boxes drawn, and every
detection to <out>/detections.json (COCO results format).

    yolox-jax predict --ckpt outputs/synthetic --path image.png
    yolox-jax predict --ckpt outputs/synthetic --path photos/ clip.mp4 --batch 8
    yolox-jax predict -n yolox-s --ckpt yolox_s.pth --path photos/ --conf 0.4 --out outputs/s
    yolox-jax predict --ckpt outputs/synthetic --path photos/ data.test_size=320,320

--path takes image files (.jpg .png ...), video files (.mp4 .avi .mov .mkv .webm) and folders
of both (one level deep, sorted). Images are written under their own names, videos as
<stem>.mp4 (same frame rate and size). Every picture is letterboxed to the config's
data.test_size and detected --batch at a time. Class names, and the category ids written to
detections.json, come from the config's data when it is present (COCO category ids for COCO
data, as eval writes them); otherwise labels and category ids are the class index.
"""
from __future__ import annotations

from yolox_jax.cli import common

HELP = "detect objects in images, folders and videos; save them drawn and as COCO JSON"


def add_arguments(p):
    common.add_config_arguments(p)
    p.add_argument("-c", "--ckpt", required=True, help="our run/checkpoint folder or an official .pth")
    p.add_argument("--path", nargs="+", required=True, metavar="PATH",
                   help="image files, video files or folders of them")
    p.add_argument("--conf", type=float, default=0.3, help="score threshold (default 0.3)")
    p.add_argument("--nms", type=float, default=0.45, help="NMS IoU threshold (default 0.45)")
    p.add_argument("--batch", type=int, default=8,
                   help="pictures per forward pass (default 8); one compiled program for all")
    p.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--out", default="outputs/predictions",
                   help="output folder (default outputs/predictions)")


def data_classes(d):
    """(class names, COCO category ids) of the config's data ``d``, or (None, None) when the
    data is not on this machine. Reads only the annotations (the validation ones when given)."""
    try:
        if d.source == "coco":
            from yolox_jax.data.sources.coco import CocoSource

            ann, images = (d.val_ann, d.val_images) if d.val_ann else (d.train_ann, d.train_images)
            source = CocoSource(ann, images, check_files=False)
        else:
            from yolox_jax.train.inputs import build_sources

            source = build_sources(d)[0]
    except (OSError, ValueError, ImportError, KeyError):
        return None, None
    return list(source.class_names), list(getattr(source, "category_ids", None) or []) or None


def run(args) -> int:
    common.tune()
    cfg = common.load(args)
    from yolox_jax.errors import UserError
    from yolox_jax.eval.predict import DETECTIONS_FILE, list_inputs, predict_files
    from yolox_jax.train.loop import model_from_config

    if args.batch < 1:
        raise UserError("--batch must be at least 1", args.batch)
    list_inputs(args.path)  # a wrong path fails here, before the model loads
    model = model_from_config(cfg)
    variables = common.load_variables(args.ckpt, model, cfg.model.name, cfg.model.num_classes,
                                      use_ema=not args.raw)
    names, category_ids = data_classes(cfg.data)
    if names is not None and len(names) != cfg.model.num_classes:
        names, category_ids = None, None
    written = predict_files(model, variables, args.path, out_dir=args.out,
                            input_size=tuple(cfg.data.test_size), conf_threshold=args.conf,
                            nms_threshold=args.nms, class_names=names,
                            category_ids=category_ids, batch_size=args.batch,
                            max_detections=cfg.eval.max_detections)
    for path, n in written:
        print(f"{path}: {n} detections")
    print(f"{args.out}/{DETECTIONS_FILE}: all detections (COCO results format)")
    return 0
