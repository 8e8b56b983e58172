"""Export a trained model for inference without this package's model code (docs/export.md).

    yolox-jax export --ckpt outputs/synthetic                       # jax.export, CPU, any batch
    yolox-jax export -n yolox-s --ckpt yolox_s.pth --platforms cpu,cuda,tpu --postprocess
    yolox-jax export -n yolox-s --ckpt yolox_s.pth --format onnx --out yolox_s.onnx
    yolox-jax export --ckpt outputs/synthetic data.test_size=(320,320)

The input is images [B, H, W, 3] float32, letterboxed to the config's data.test_size, RGB,
0..255; the output the decoded predictions [B, A, 5 + C] or, with --postprocess, fixed-size
boxes_xyxy / scores / classes / valid arrays (NMS as in `yolox-jax eval`). Run a jax artifact
with yolox_jax.exported.run_exported (JAX only), an ONNX file with onnxruntime.
"""
from __future__ import annotations

from pathlib import Path

from yolox_jax.cli import common

HELP = "export a checkpoint as a jax.export artifact or an ONNX model"

_SUFFIX = {"jax": ".jaxexport", "onnx": ".onnx"}


def add_arguments(p):
    common.add_config_arguments(p, data=False)
    p.add_argument("-c", "--ckpt", required=True, help="our run/checkpoint folder or an official .pth")
    p.add_argument("--format", choices=("jax", "onnx"), default="jax",
                   help="jax: a serialized jax.export artifact (default); onnx: an ONNX model")
    p.add_argument("--platforms", default=None,
                   help="jax format: comma-separated platforms the artifact runs on, of cpu, "
                        "cuda, rocm, tpu (default cpu)")
    p.add_argument("--batch", default=None,
                   help='an int or "dynamic" (any batch); default dynamic for jax, 1 for onnx')
    p.add_argument("--postprocess", action="store_true",
                   help="include the score threshold and NMS (jax format only with jax2onnx 0.17)")
    p.add_argument("--conf", type=float, default=0.01, help="score threshold with --postprocess")
    p.add_argument("--nms", type=float, default=0.65, help="NMS IoU threshold with --postprocess")
    p.add_argument("--max-det", type=int, default=100,
                   help="detections per image with --postprocess")
    p.add_argument("--out", default=None,
                   help="file to write (default outputs/export/<model><.jaxexport|.onnx>)")


def parse_batch(text, fmt: str):
    """``--batch``: None -> the format's default; "dynamic"; or a positive int."""
    from yolox_jax.errors import UserError

    if text is None:
        return "dynamic" if fmt == "jax" else 1
    if text.strip().lower() == "dynamic":
        return "dynamic"
    try:
        batch = int(text)
    except ValueError:
        batch = 0
    if batch < 1:
        raise UserError(f'batch must be a positive int or "dynamic", not {text!r}', "--batch")
    return batch


def export_model_from_config(cfg):
    """The config's model with XLA's convolution in every layer (portable to any platform),
    else as ``yolox_jax.train.loop.model_from_config`` builds it."""
    import jax.numpy as jnp

    from yolox_jax import build_model

    overrides = {k: getattr(cfg.model, k) for k in ("depth", "width", "act")
                 if getattr(cfg.model, k) is not None}
    if cfg.train.compute_dtype == "bfloat16":
        overrides["dtype"] = jnp.bfloat16
    return build_model(cfg.model.name, num_classes=cfg.model.num_classes, conv="xla", **overrides)


def run(args) -> int:
    from yolox_jax import export
    from yolox_jax.exported import save_exported
    from yolox_jax.errors import UserError

    cfg = common.load(args)
    batch = parse_batch(args.batch, args.format)
    if args.format == "onnx" and args.platforms:
        raise UserError("--platforms applies to --format jax (ONNX runtimes pick their own)",
                        "--platforms")
    try:
        input_size = export.check_input_size(cfg.data.test_size)
    except UserError as err:
        raise UserError(err.what, "data.test_size") from None
    out = Path(args.out or Path("outputs") / "export" / (cfg.model.name + _SUFFIX[args.format]))
    model = export_model_from_config(cfg)
    variables = common.load_variables(args.ckpt, model, cfg.model.name, cfg.model.num_classes)
    options = dict(postprocess=args.postprocess, conf_threshold=args.conf,
                   nms_threshold=args.nms, max_detections=args.max_det)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.format == "jax":
        exported = export.export_model(model, variables, input_size=input_size,
                                       platforms=args.platforms or "cpu", batch=batch, **options)
        save_exported(exported, out)
        signature = export.describe(exported)
        where = f"{out} (jax.export for {', '.join(exported.platforms)})"
    else:
        export.export_onnx(model, variables, out, input_size=input_size, batch=batch, **options)
        signature = export.describe_onnx(out)
        where = f"{out} (ONNX)"
    print(f"wrote {where}")
    print(signature)
    return 0
