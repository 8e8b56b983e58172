"""``yolox-jax`` command line: train, eval, predict.

    yolox-jax train                                   # embedded default: synthetic shapes, CPU
    yolox-jax train -f configs/yolox_s.py data.batch_size=128 train.max_epoch=100
    yolox-jax train -n yolox-s --resume               # continue outputs/yolox-s exactly
    yolox-jax eval -n yolox-s --ckpt outputs/yolox-s
    yolox-jax predict -f configs/synthetic.py --ckpt outputs/synthetic image.png

Overrides are ``section.key=value`` pairs; an unknown key is an error.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def _config_arg(p: argparse.ArgumentParser):
    g = p.add_mutually_exclusive_group()
    g.add_argument("-f", "--config", help="config file (a .py with get_config()) or a name in configs/")
    g.add_argument("-n", "--name", help="official variant, e.g. yolox-s (loads configs/yolox_s.py)")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides")


def _load(args):
    from yolox_jax.config import load_config

    source = args.config or args.name
    return load_config(source, args.overrides)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="yolox-jax", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train (default: the synthetic-shapes demo on CPU)")
    _config_arg(t)
    t.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    t.add_argument("-c", "--ckpt", help="initialise from an official .pth or one of our runs")
    t.add_argument("--devices", type=int, default=0,
                   help="on CPU, simulate this many devices (sets XLA_FLAGS before JAX starts)")

    e = sub.add_parser("eval", help="COCO AP of a checkpoint on the config's validation data")
    _config_arg(e)
    e.add_argument("-c", "--ckpt", required=True, help="our run/checkpoint folder or an official .pth")
    e.add_argument("--conf", type=float, default=None)
    e.add_argument("--nms", type=float, default=None)
    e.add_argument("--raw", action="store_true", help="evaluate the raw weights instead of the EMA")

    pr = sub.add_parser("predict", help="detect objects in images and save them with boxes drawn")
    _config_arg(pr)
    pr.add_argument("-c", "--ckpt", required=True)
    pr.add_argument("--path", nargs="+", required=True, help="image files or folders")
    pr.add_argument("--conf", type=float, default=0.3)
    pr.add_argument("--nms", type=float, default=0.45)
    pr.add_argument("--out", default="outputs/predictions")
    return p


def load_variables(ckpt: str, model_name: str, num_classes: int, use_ema: bool = True):
    """Variables from an official ``.pth`` or from one of our checkpoint folders."""
    if Path(ckpt).suffix in (".pth", ".pt"):
        from yolox_jax.convert import load_torch_checkpoint

        return load_torch_checkpoint(ckpt, model_name, num_classes)
    from yolox_jax.train.checkpoint import read_variables

    return read_variables(ckpt, use_ema=use_ema)[0]


def _enable_compilation_cache():
    """Persist compiled XLA programs (``$JAX_COMPILATION_CACHE_DIR`` or ~/.cache/yolox_jax/xla):
    a second run of the same config skips minutes of compilation on CPU."""
    import os

    import jax

    path = os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "yolox_jax", "xla")
    jax.config.update("jax_compilation_cache_dir", path)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every file operation at INFO
    if args.command == "train" and args.devices:
        import os

        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + f" --xla_force_host_platform_device_count={args.devices}")
    # Before any JAX backend starts: on a CPU host, tune malloc and XLA:CPU for training (a
    # no-op where JAX runs on a GPU or TPU).
    from yolox_jax.cpu import tune_process

    tune_process()
    _enable_compilation_cache()
    try:
        cfg = _load(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"yolox-jax: {err}", file=sys.stderr)
        return 2

    if args.command == "train":
        from yolox_jax.cpu import precompile
        from yolox_jax.train.loop import train
        from yolox_jax.train.sharding import maybe_initialize_distributed

        if args.resume:
            cfg.run.resume = True
        if args.ckpt:
            cfg.run.init_from = args.ckpt
        r = cfg.run
        maybe_initialize_distributed(r.distributed, r.coordinator_address, r.num_processes,
                                     r.process_id)          # before anything starts a backend
        if precompile.wanted(cfg):
            precompile.precompile_in_child(cfg)
        out = train(cfg)
        summary = {"step": out["step"], "run_dir": out["run_dir"],
                   "train": {k: round(float(v), 5) for k, v in out["train"].items()},
                   "eval": {k: v for k, v in out["eval"].items() if isinstance(v, (int, float))}}
        print(json.dumps(summary, indent=2))
        return 0

    from yolox_jax.train.loop import model_from_config

    model = model_from_config(cfg)
    variables = load_variables(args.ckpt, cfg.model.name, cfg.model.num_classes,
                               use_ema=not getattr(args, "raw", False))
    if args.command == "eval":
        from yolox_jax.eval.evaluate import evaluate
        from yolox_jax.train.inputs import build_sources

        _, val = build_sources(cfg.data)
        if val is None:
            print("yolox-jax: the config has no validation data (data.val_ann / val_split)", file=sys.stderr)
            return 2
        res = evaluate(model, variables, val, input_size=tuple(cfg.data.test_size),
                       batch_size=cfg.eval.batch_size,
                       conf_threshold=args.conf if args.conf is not None else cfg.eval.conf_threshold,
                       nms_threshold=args.nms if args.nms is not None else cfg.eval.nms_threshold,
                       max_detections=cfg.eval.max_detections)
        print(json.dumps({k: v for k, v in res.items() if isinstance(v, (int, float))}, indent=2))
        return 0

    if args.command == "predict":
        from yolox_jax.eval.predict import predict_files

        class_names = None
        try:
            from yolox_jax.train.inputs import build_sources

            class_names = build_sources(cfg.data)[0].class_names
        except Exception:  # noqa: BLE001 - names are cosmetic; the data may not be present here
            pass
        written = predict_files(model, variables, args.path, out_dir=args.out,
                                input_size=tuple(cfg.data.test_size), conf_threshold=args.conf,
                                nms_threshold=args.nms, class_names=class_names)
        for path, n in written:
            print(f"{path}: {n} detections")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
