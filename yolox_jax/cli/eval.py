"""COCO AP of a checkpoint on the config's validation data.

    yolox-jax eval --ckpt outputs/synthetic
    yolox-jax eval -n yolox-s --ckpt yolox_s.pth data.val_ann=... data.val_images=...
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from yolox_jax.cli import common

HELP = "COCO AP of a checkpoint on the config's validation data"


def add_arguments(p):
    common.add_config_arguments(p)
    p.add_argument("-c", "--ckpt", required=True, help="our run/checkpoint folder or an official .pth")
    p.add_argument("--conf", type=float, default=None)
    p.add_argument("--nms", type=float, default=None)
    p.add_argument("--raw", action="store_true", help="evaluate the raw weights instead of the EMA")


def run(args) -> int:
    common.tune()
    cfg = common.load(args)
    from yolox_jax.errors import UserError
    from yolox_jax.eval.evaluate import evaluate
    from yolox_jax.train.inputs import build_sources, build_val_source
    from yolox_jax.train.loop import check_same_categories, model_from_config

    # The training data only where it is at hand, for the categories the model was trained on
    # (evaluating needs only the validation data: COCO's instances_train2017.json may be absent).
    if cfg.data.source != "coco" or Path(cfg.data.train_ann).is_file():
        train, val = build_sources(cfg.data)
    else:
        train, val = None, build_val_source(cfg.data)
    if val is None:
        raise UserError("the config has no validation data", "data.val_ann / data.val_split")
    if train is not None:
        check_same_categories(train, val)
    model = model_from_config(cfg)
    variables = common.load_variables(args.ckpt, model, cfg.model.name, cfg.model.num_classes,
                                      use_ema=not args.raw)
    res = evaluate(model, variables, val, input_size=tuple(cfg.data.test_size),
                   batch_size=cfg.eval.batch_size,
                   conf_threshold=args.conf if args.conf is not None else cfg.eval.conf_threshold,
                   nms_threshold=args.nms if args.nms is not None else cfg.eval.nms_threshold,
                   max_detections=cfg.eval.max_detections)
    print(json.dumps({k: v for k, v in res.items() if isinstance(v, (int, float))}, indent=2))
    sys.stdout.flush()
    return 0
